//! Whatsminer (MicroBT btminer) API v2: sleep and wake through the encrypted `power_off` /
//! `power_on` commands on TCP 4028.
//!
//! The API is cgminer-style JSON, one request per connection, but btminer's own commands answer
//! in a flat shape, `{"STATUS":"S","When":..,"Code":131,"Msg":..,"Description":""}` (the
//! cgminer commands such as `summary` keep the `STATUS:[{..}]` array); [`reply_status`] reads
//! both. Privileged ("writable") commands go like this:
//! 1. `{"command":"get_token"}` → `Msg: {time, salt, newsalt}` (Code 134);
//! 2. the keys derive from the admin password ([`crypto::TokenKeys`]);
//! 3. `{"cmd":"power_off","respbefore":"true","token":<sign>}` is AES-256-ECB encrypted,
//!    zero-padded, base64'd and sent as `{"enc":1,"data":"<base64>"}`;
//! 4. the reply is `{"enc":"<base64>"}` (decrypted the same way) or, for some refusals, a
//!    plaintext status.
//!
//! Refusals ([`classify_refusal`]):
//! - write access off ("can't access write cmd", Code 45 permission denied) →
//!   [`FirmwareError::LoginRefused`] saying [`WRITE_ACCESS_HINT`]: an operator must act;
//! - token refused (Code 135 "check token err"; tokens live 30 minutes) → a new token once; a
//!   fresh token refused again means the admin password is wrong → `LoginRefused`;
//! - too many tokens (Code 136: one client IP holds at most 32) → retryable `Rejected`;
//! - "already" on/off → success: sleep and wake are idempotent.
//!
//! Status reads `status` (`Msg.mineroff`, or `Msg.btmineroff` on older firmware: the
//! firmware's own word on whether the hashboards are powered off) and `summary` (`Power` in
//! watts, `MHS 5s` or `HS RT` in MH/s). With the boards off btminer's `summary` may fail; the
//! rig is then reported asleep only because `status` says so, never because of an error.

pub mod crypto;

use std::net::SocketAddr;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cgminer;
use super::{Endpoint, FirmwareClient, FirmwareError, RigState, RigStatus};
use crypto::TokenKeys;

/// What an operator must do when the firmware refuses privileged commands.
pub const WRITE_ACCESS_HINT: &str =
    "enable API write access in the Whatsminer tool (WhatsMinerTool) and change the admin password";

/// The password btminer ships with; the API refuses writes until it is changed.
pub const FACTORY_PASSWORD: &str = "admin";

/// Codes of the Whatsminer API v2 (from MicroBT's API document).
pub mod code {
    /// Invalid API command or data.
    pub const INVALID_COMMAND: i64 = 14;
    /// Invalid JSON message.
    pub const INVALID_JSON: i64 = 23;
    /// Permission denied (write access off).
    pub const PERMISSION_DENIED: i64 = 45;
    /// Command OK.
    pub const OK: i64 = 131;
    /// Command error.
    pub const COMMAND_ERROR: i64 = 132;
    /// Token handed out.
    pub const TOKEN_OK: i64 = 134;
    /// The token did not check (expired, or derived from a wrong password).
    pub const TOKEN_ERROR: i64 = 135;
    /// This client holds too many tokens.
    pub const TOKEN_OVER_MAX: i64 = 136;
    /// The `data` was not base64.
    pub const BASE64_ERROR: i64 = 137;
}

/// The status part of a reply, flat (btminer) or in a `STATUS` array (cgminer commands).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplyStatus {
    /// `S`, `I`, `W`, `E` or `F`.
    pub letter: String,
    /// `Code`, when numeric.
    pub code: Option<i64>,
    /// `Msg` when it is text ("" otherwise; btminer puts objects there on success).
    pub msg: String,
}

impl ReplyStatus {
    /// `E` or `F`: refused.
    pub fn is_error(&self) -> bool {
        matches!(self.letter.as_str(), "E" | "F")
    }
}

/// Read the status of a reply in either shape; `None` when it has none.
pub fn reply_status(reply: &Value) -> Option<ReplyStatus> {
    let (letter, entry) = match reply.get("STATUS")? {
        Value::String(s) => (s.clone(), reply),
        Value::Array(a) => {
            let e = a.first()?;
            (e.get("STATUS")?.as_str()?.to_owned(), e)
        }
        _ => return None,
    };
    Some(ReplyStatus {
        letter,
        code: entry.get("Code").and_then(Value::as_i64),
        msg: entry
            .get("Msg")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    })
}

/// How btminer refused a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// API write access is off (or the password is still the factory one).
    WriteDisabled,
    /// The token did not check: expired, or from a wrong password.
    TokenInvalid,
    /// Transient: too many tokens, busy, not ready.
    Busy,
    /// Already in the requested state.
    AlreadyThere,
    /// Anything else.
    Other,
}

/// Classify a refusal by its code and message (messages vary across firmware versions, so
/// both are read).
pub fn classify_refusal(code: Option<i64>, msg: &str) -> Refusal {
    let m = msg.to_ascii_lowercase();
    if m.contains("already") {
        Refusal::AlreadyThere
    } else if code == Some(code::PERMISSION_DENIED)
        || m.contains("write cmd")
        || m.contains("permission denied")
        || m.contains("not permitted")
    {
        Refusal::WriteDisabled
    } else if code == Some(code::TOKEN_ERROR) || (m.contains("token") && !m.contains("max")) {
        Refusal::TokenInvalid
    } else if code == Some(code::TOKEN_OVER_MAX)
        || m.contains("over max")
        || m.contains("busy")
        || m.contains("not ready")
        || m.contains("try again")
    {
        Refusal::Busy
    } else {
        Refusal::Other
    }
}

/// The `get_token` fields, checked: short printable ASCII without `$` (they go into md5-crypt
/// salts and a string we hash).
pub fn token_fields(reply: &Value) -> Option<(&str, &str, &str)> {
    let msg = reply.get("Msg")?;
    let field = |k: &str| {
        msg.get(k).and_then(Value::as_str).filter(|s| {
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'$')
        })
    };
    Some((field("time")?, field("salt")?, field("newsalt")?))
}

/// `"true"`/`"false"` (or a JSON bool) in `status`'s `Msg.mineroff` / `Msg.btmineroff`.
pub fn miner_off(status: &Value) -> Option<bool> {
    let msg = status.get("Msg")?;
    let v = msg.get("mineroff").or_else(|| msg.get("btmineroff"))?;
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Combine the firmware's power-off flag and the hashrate into a [`RigState`], as for LuxOS:
/// off and not hashing → `Sleeping`, off but hashing → `Stopping`, on and hashing → `Mining`,
/// on and not hashing → `Waking`; no flag → `Unknown`.
pub fn derive_state(mineroff: Option<bool>, hashrate_ths: Option<f64>) -> RigState {
    let hashing = hashrate_ths.is_some_and(|h| h > 0.0);
    match (mineroff, hashing) {
        (Some(true), false) => RigState::Sleeping,
        (Some(true), true) => RigState::Stopping,
        (Some(false), true) => RigState::Mining,
        (Some(false), false) => RigState::Waking,
        (None, _) => RigState::Unknown,
    }
}

/// Reads the replies to `status` and `summary` into a [`RigStatus`] (the parsing half of
/// [`status`]). `summary` is `None` when it could not be read; a missing or malformed field
/// reads as unknown, never as an error. Hashrate: `MHS 5s`, else `HS RT` (MH/s) → TH/s.
/// Power: `Power`, else `Power_RT` (W).
pub fn status_from_replies(status: &Value, summary: Option<&Value>) -> RigStatus {
    let mineroff = miner_off(status);
    let entry = summary
        .and_then(|s| s.get("SUMMARY"))
        .and_then(|s| s.get(0));
    let field = |k: &str| cgminer::number(entry.and_then(|e| e.get(k)));
    let hashrate_ths = field("MHS 5s")
        .or_else(|| field("HS RT"))
        .map(|mhs| mhs / 1e6);
    let power_w = field("Power").or_else(|| field("Power_RT"));
    let mut state = derive_state(mineroff, hashrate_ths);
    // Boards off and no summary: the firmware's own flag says asleep; there is no hashrate to
    // contradict it.
    if mineroff == Some(true) && summary.is_none() {
        state = RigState::Sleeping;
    }
    RigStatus {
        state,
        power_w,
        hashrate_ths,
    }
}

fn malformed(addr: SocketAddr, command: &str, detail: impl Into<String>) -> FirmwareError {
    FirmwareError::Malformed {
        addr,
        command: command.to_owned(),
        detail: detail.into(),
    }
}

/// One request on a fresh connection; the raw reply, read until NUL or EOF and capped at
/// `client.max_reply_bytes`; every step bounded by `client.timeouts`.
async fn exchange(
    client: &FirmwareClient,
    addr: SocketAddr,
    command: &str,
    line: &[u8],
) -> Result<Vec<u8>, FirmwareError> {
    let mut stream = super::connect(client, addr).await?;
    let max = client.max_reply_bytes;
    let work = async {
        stream.write_all(line).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(4096.min(max));
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Some(buf));
            }
            if buf.len().saturating_add(n) > max {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            if chunk[..n].contains(&0) {
                return Ok(Some(buf));
            }
        }
    };
    match tokio::time::timeout(client.timeouts.request, work).await {
        Ok(Ok(Some(raw))) => Ok(raw),
        Ok(Ok(None)) => Err(malformed(
            addr,
            command,
            format!("reply larger than {max} bytes"),
        )),
        Ok(Err(source)) => Err(FirmwareError::Io {
            addr,
            command: command.to_owned(),
            source,
        }),
        Err(_) => Err(FirmwareError::Timeout {
            addr,
            step: "request",
            after: client.timeouts.request,
        }),
    }
}

/// A plaintext read command: its parsed reply and status.
async fn read(
    client: &FirmwareClient,
    addr: SocketAddr,
    command: &str,
) -> Result<(Value, ReplyStatus), FirmwareError> {
    let line = json!({ "command": command }).to_string();
    let raw = exchange(client, addr, command, line.as_bytes()).await?;
    let value = cgminer::parse_reply(&raw).map_err(|e| malformed(addr, command, e))?;
    let status =
        reply_status(&value).ok_or_else(|| malformed(addr, command, "no STATUS in the reply"))?;
    Ok((value, status))
}

fn login_refused(addr: SocketAddr, s: &ReplyStatus) -> FirmwareError {
    let code = s.code.map_or(String::new(), |c| format!(" (code {c})"));
    FirmwareError::LoginRefused {
        addr,
        detail: format!("{}{code}: {WRITE_ACCESS_HINT}", s.msg),
    }
}

/// `get_token` and the keys it gives with the endpoint's password (the factory `admin` when
/// none is configured; the firmware then refuses writes, which is reported as such).
async fn token(client: &FirmwareClient, endpoint: &Endpoint) -> Result<TokenKeys, FirmwareError> {
    let addr = endpoint.addr;
    let (reply, status) = read(client, addr, "get_token").await?;
    if status.is_error() {
        return Err(match classify_refusal(status.code, &status.msg) {
            Refusal::Busy => FirmwareError::Rejected {
                addr,
                command: "get_token".into(),
                detail: status.msg,
                retryable: true,
            },
            _ => login_refused(addr, &status),
        });
    }
    let (time, salt, newsalt) = token_fields(&reply)
        .ok_or_else(|| malformed(addr, "get_token", "no usable Msg.time/salt/newsalt"))?;
    let password = match endpoint.credentials.password() {
        "" => FACTORY_PASSWORD,
        p => p,
    };
    Ok(TokenKeys::derive(password, time, salt, newsalt))
}

/// Send one privileged command (`cmd` plus string `args`) with a fresh token; re-token once
/// when the token is refused. `Ok` when the firmware accepted it or was already there.
pub async fn privileged(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    cmd: &str,
    args: &[(&str, &str)],
) -> Result<(), FirmwareError> {
    let addr = endpoint.addr;
    let mut last = None;
    for _ in 0..2 {
        let keys = token(client, endpoint).await?;
        let mut body = json!({ "cmd": cmd });
        for (k, v) in args {
            body[*k] = Value::String((*v).to_owned());
        }
        body["token"] = Value::String(keys.sign.clone());
        let data = crypto::encrypt(&keys.aes_key, body.to_string().as_bytes());
        let line = json!({ "enc": 1, "data": data }).to_string();
        let raw = exchange(client, addr, cmd, line.as_bytes()).await?;
        let outer = cgminer::parse_reply(&raw).map_err(|e| malformed(addr, cmd, e))?;
        let reply = match outer.get("enc") {
            Some(Value::String(enc)) => {
                let plain = crypto::decrypt(&keys.aes_key, enc, client.max_reply_bytes)
                    .map_err(|e| malformed(addr, cmd, e))?;
                cgminer::parse_reply(&plain)
                    .map_err(|e| malformed(addr, cmd, format!("decrypted reply: {e}")))?
            }
            _ => outer,
        };
        let status =
            reply_status(&reply).ok_or_else(|| malformed(addr, cmd, "no STATUS in the reply"))?;
        if !status.is_error() {
            return Ok(());
        }
        match classify_refusal(status.code, &status.msg) {
            Refusal::AlreadyThere => return Ok(()),
            Refusal::TokenInvalid => {
                last = Some(status);
                continue;
            }
            Refusal::WriteDisabled => return Err(login_refused(addr, &status)),
            Refusal::Busy => {
                return Err(FirmwareError::Rejected {
                    addr,
                    command: cmd.to_owned(),
                    detail: status.msg,
                    retryable: true,
                });
            }
            Refusal::Other => {
                let hint = match status.code {
                    Some(code::INVALID_JSON | code::BASE64_ERROR) => {
                        " (the miner could not decrypt the command: check the admin password)"
                    }
                    _ => "",
                };
                return Err(FirmwareError::Rejected {
                    addr,
                    command: cmd.to_owned(),
                    detail: format!("{}{hint}", status.msg),
                    retryable: false,
                });
            }
        }
    }
    // A token fresh from get_token refused too: it was derived from a wrong password.
    let msg = last.map_or(String::new(), |s| s.msg);
    Err(FirmwareError::LoginRefused {
        addr,
        detail: format!(
            "{msg}: a fresh token was refused; check the admin password ({WRITE_ACCESS_HINT})"
        ),
    })
}

/// Command the rig to sleep: `power_off` (answer first, then power the hashboards down).
pub async fn sleep(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    privileged(client, endpoint, "power_off", &[("respbefore", "true")]).await
}

/// Command the rig to wake: `power_on`.
pub async fn wake(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    privileged(client, endpoint, "power_on", &[]).await
}

/// Read the rig's state (`status`), power and hashrate (`summary`).
pub async fn status(
    client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    let addr = endpoint.addr;
    let (st, summary) = tokio::join!(read(client, addr, "status"), read(client, addr, "summary"));
    let (st, st_status) = st?;
    // An `E` to `status` (firmware without it) leaves the state unknown.
    let st = if st_status.is_error() {
        Value::Null
    } else {
        st
    };
    let summary = match summary {
        Ok((v, s)) if !s.is_error() => Some(v),
        // The boards are off by the firmware's own word: a summary it cannot give is expected.
        Ok(_) | Err(_) if miner_off(&st) == Some(true) => None,
        Ok((_, s)) => {
            return Err(FirmwareError::Rejected {
                addr,
                command: "summary".into(),
                detail: s.msg,
                retryable: true,
            });
        }
        Err(e) => return Err(e),
    };
    Ok(status_from_replies(&st, summary.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIX: &str = "../../../tools/fixtures/firmware/whatsminer/";
    const M20S_SUMMARY: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/m20s-summary.json");
    const M20S_STATUS: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/m20s-status.json");
    const M30S_SUMMARY: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/m30s-summary.json");
    const M30S_STATUS: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/m30s-status.json");
    const GET_TOKEN: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/get-token.json");
    const OK: &str = include_str!("../../../tools/fixtures/firmware/whatsminer/command-ok.json");
    const WRITE_OFF: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/error-write-disabled.json");
    const TOKEN_ERR: &str =
        include_str!("../../../tools/fixtures/firmware/whatsminer/error-token.json");

    fn parse(s: &str) -> Value {
        // As the miner sends it: with its trailing NUL.
        let mut raw = s.as_bytes().to_vec();
        raw.push(0);
        cgminer::parse_reply(&raw).unwrap()
    }

    #[test]
    fn captured_summaries_and_statuses() {
        assert!(!FIX.is_empty());
        let s = status_from_replies(&parse(M20S_STATUS), Some(&parse(M20S_SUMMARY)));
        assert_eq!(s.state, RigState::Mining);
        assert_eq!(s.power_w, Some(3417.0));
        // MHS 5s 70668114.52 MH/s.
        assert!((s.hashrate_ths.unwrap() - 70.668).abs() < 0.01, "{s:?}");
        let s = status_from_replies(&parse(M30S_STATUS), Some(&parse(M30S_SUMMARY)));
        assert_eq!(s.state, RigState::Mining);
        assert_eq!(s.power_w, Some(3200.0));
        // No MHS 5s here: HS RT 124500000 MH/s.
        assert!((s.hashrate_ths.unwrap() - 124.5).abs() < 0.01, "{s:?}");
        assert_eq!(miner_off(&parse(M20S_STATUS)), Some(false));
        assert_eq!(miner_off(&parse(M30S_STATUS)), Some(false));
        let summary = parse(M30S_SUMMARY);
        let st = reply_status(&summary).unwrap();
        assert_eq!((st.letter.as_str(), st.code), ("S", Some(11)));
    }

    #[test]
    fn powered_off_reads_asleep_only_on_the_firmware_word() {
        let off = json!({"STATUS":"S","Code":131,"Msg":{"mineroff":"true"}});
        let old_off = json!({"STATUS":"S","Code":131,"Msg":{"btmineroff":"true"}});
        let mut summary = parse(M30S_SUMMARY);
        summary["SUMMARY"][0]["HS RT"] = json!(0.0);
        summary["SUMMARY"][0]["Power"] = json!(18);
        let s = status_from_replies(&off, Some(&summary));
        assert_eq!((s.state, s.power_w), (RigState::Sleeping, Some(18.0)));
        assert_eq!(
            status_from_replies(&old_off, None).state,
            RigState::Sleeping
        );
        // Still hashing after power_off: stopping, not asleep.
        let s = status_from_replies(&off, Some(&parse(M30S_SUMMARY)));
        assert_eq!(s.state, RigState::Stopping);
        // No flag at all: unknown, whatever the hashrate.
        assert_eq!(
            status_from_replies(&Value::Null, Some(&summary)).state,
            RigState::Unknown
        );
        assert_eq!(
            status_from_replies(&Value::Null, None).state,
            RigState::Unknown
        );
        // On, no hashrate: waking.
        let on = parse(M30S_STATUS);
        assert_eq!(
            status_from_replies(&on, Some(&summary)).state,
            RigState::Waking
        );
        assert_eq!(miner_off(&json!({"Msg":{"mineroff":"maybe"}})), None);
    }

    #[test]
    fn token_and_replies() {
        let t = parse(GET_TOKEN);
        assert_eq!(token_fields(&t), Some(("1080", "BQ5hoXV9", "F3bAakno")));
        assert_eq!(reply_status(&t).unwrap().code, Some(code::TOKEN_OK));
        for bad in [
            json!({"Msg":{"time":"1","salt":"a$b","newsalt":"c"}}),
            json!({"Msg":{"time":"1","salt":"","newsalt":"c"}}),
            json!({"Msg":{"time":1,"salt":"a","newsalt":"c"}}),
            json!({"Msg":"x"}),
        ] {
            assert_eq!(token_fields(&bad), None, "{bad}");
        }
        let ok = reply_status(&parse(OK)).unwrap();
        assert!(!ok.is_error());
        assert_eq!(ok.code, Some(code::OK));
        let off = reply_status(&parse(WRITE_OFF)).unwrap();
        assert!(off.is_error());
        assert_eq!(classify_refusal(off.code, &off.msg), Refusal::WriteDisabled);
        let tok = reply_status(&parse(TOKEN_ERR)).unwrap();
        assert_eq!(classify_refusal(tok.code, &tok.msg), Refusal::TokenInvalid);
        assert_eq!(reply_status(&json!({"x":1})), None);
        assert_eq!(reply_status(&json!({"STATUS":[]})), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            classify_refusal(None, "can't access write cmd"),
            Refusal::WriteDisabled
        );
        assert_eq!(
            classify_refusal(Some(45), "Permission denied"),
            Refusal::WriteDisabled
        );
        assert_eq!(
            classify_refusal(Some(135), "check token err"),
            Refusal::TokenInvalid
        );
        assert_eq!(
            classify_refusal(None, "token is expired"),
            Refusal::TokenInvalid
        );
        assert_eq!(
            classify_refusal(Some(136), "token over max times"),
            Refusal::Busy
        );
        assert_eq!(
            classify_refusal(None, "miner is already power off"),
            Refusal::AlreadyThere
        );
        assert_eq!(classify_refusal(None, "over max connect"), Refusal::Busy);
        assert_eq!(classify_refusal(Some(14), "invalid cmd"), Refusal::Other);
    }

    #[test]
    fn write_access_error_names_the_fix() {
        let addr: SocketAddr = "127.0.0.1:4028".parse().unwrap();
        let e = login_refused(addr, &reply_status(&parse(WRITE_OFF)).unwrap());
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("WhatsMinerTool") && text.contains("admin password"),
            "{text}"
        );
        assert!(text.contains("can't access write cmd"), "{text}");
    }
}
