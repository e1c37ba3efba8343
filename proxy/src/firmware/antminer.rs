//! Stock Antminer (and Hiveon-style) web API, port 80: sleep and wake through the miner-mode
//! setting, state from the stats.
//!
//! - Every request carries HTTP Digest auth ([`digest`]: MD5, `qop=auth`, realm
//!   "antMiner Configuration"). The first request of a call is sent bare to get a challenge;
//!   later requests of the same call answer that challenge with a growing `nc`. A 401 with
//!   `stale=true` (the nonce expired) is answered once more with the new nonce; a 401 after
//!   answering a fresh challenge is [`FirmwareError::LoginRefused`] (not retryable).
//! - `GET /cgi-bin/get_miner_conf.cgi` → the whole config (pools, fan, frequency level and
//!   `bitmain-work-mode`: "0" normal, "1" sleep, "2" high, "3" low power; newer firmware
//!   also `miner-mode`).
//! - Sleep / wake = read-modify-write: `POST /cgi-bin/set_miner_conf.cgi` with the config the
//!   stock web page itself posts — `bitmain-fan-ctrl`, `bitmain-fan-pwm`, `freq-level`,
//!   `pools` (url/user/pass) taken unchanged from the config just read, and the mode as an
//!   integer under both `miner-mode` and `bitmain-work-mode` ([`set_payload`]). Posting only
//!   the mode would make the firmware rewrite its config without the pools. The reply is
//!   `{"stats":"success","code":"M000",...}` or `{"stats":"error","msg":...}`. The firmware
//!   then restarts its miner process: for a few seconds stats come back refused, 5xx or
//!   empty, which are retryable errors here, never "asleep".
//! - Idempotent: a rig already in the wanted mode is not written to (sleep: mode 1; wake: any
//!   mode but 1, so a rig a site keeps in low-power mode stays there; a rig we woke from
//!   sleep comes back in normal mode, since a stateless call cannot know the mode it had).
//!   This is also what makes a retry safe: a write that timed out (some firmware replies only
//!   once its miner restarted; asic-rs allows it 30 s) may have been applied, and the next
//!   call reads the mode before writing again.
//! - `GET /cgi-bin/stats.cgi` (`summary.cgi` on firmware without it) → `STATS[0].rate_5s` in
//!   `rate_unit` (GH/s on SHA-256 rigs; H/s, MH/s, TH/s elsewhere) and power where the
//!   firmware reports it (`chain_power` "3250 W", `power`, `Power`, `watt`; stock S19-era
//!   firmware does not: `None`).
//!
//! Facts from pyasic (`AntminerModernWebAPI`, `MiningModeConfig.as_am_modern`), asic-rs
//! (`antminer` v2020 / v2023_07 backends: both mode keys, the `stats == "success"` check) and
//! foreman-apps (a captured S19 config and the exact body its power-mode action posts); the
//! replies the tests parse are in `tools/fixtures/firmware/antminer/` with their sources.
//!
//! Each call opens its own connections (one request each, [`crate::http_client`]) and keeps
//! its Digest state on its stack: nothing is shared between rigs or calls.
//!
//! Not covered: pre-2020 firmware that posts `_ant_*` form fields instead of JSON (S9/S17
//! era) — such a rig answers the JSON post with an error, reported as
//! [`FirmwareError::Rejected`].

pub mod digest;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderName};
use serde_json::{Map, Value};

use super::braiins::firmware_error;
use super::{Endpoint, FirmwareClient, FirmwareError, RigState, RigStatus};
use crate::http_client::{self, Limits, Response};

/// `GET` the whole miner config.
pub const GET_CONF: &str = "/cgi-bin/get_miner_conf.cgi";
/// `POST` a whole miner config.
pub const SET_CONF: &str = "/cgi-bin/set_miner_conf.cgi";
/// `GET` the miner statistics.
pub const STATS: &str = "/cgi-bin/stats.cgi";
/// `GET` the miner summary (fallback for firmware without `stats.cgi`).
pub const SUMMARY: &str = "/cgi-bin/summary.cgi";

/// Below this hashrate (TH/s) a rig counts as not hashing: a sleeping rig reports exactly 0.
pub const HASHING_THRESHOLD_THS: f64 = 0.01;

/// Requests one call may send: bare, answered, and once more after a stale nonce, for each of
/// at most three paths — a bound on what a confused server can make us do.
const MAX_SENDS_PER_REQUEST: usize = 3;

/// The miner modes of the config (`miner-mode` / `bitmain-work-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// 0: normal.
    Normal,
    /// 1: sleep (hash boards off, control board and fans idle).
    Sleep,
    /// 2: high performance (some models).
    High,
    /// 3: low power.
    Low,
}

impl Mode {
    /// The integer the firmware stores.
    pub fn code(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::Sleep => 1,
            Mode::High => 2,
            Mode::Low => 3,
        }
    }

    /// Reads a mode written as an integer or a string of one ("1" and 1 both occur).
    pub fn from_value(v: &Value) -> Option<Mode> {
        let n = match v {
            Value::Number(n) => n.as_u64()?,
            Value::String(s) => s.trim().parse::<u64>().ok()?,
            _ => return None,
        };
        match n {
            0 => Some(Mode::Normal),
            1 => Some(Mode::Sleep),
            2 => Some(Mode::High),
            3 => Some(Mode::Low),
            _ => None,
        }
    }
}

/// The mode in a `get_miner_conf` reply: `miner-mode` if present, else `bitmain-work-mode`.
pub fn config_mode(conf: &Value) -> Option<Mode> {
    conf.get("miner-mode")
        .or_else(|| conf.get("bitmain-work-mode"))
        .and_then(Mode::from_value)
}

/// The body to post to `set_miner_conf.cgi` to put a rig whose config is `conf` into `mode`:
/// the fields the stock web page posts, copied with their types from `conf`, and the mode as
/// an integer under both keys (firmware generations read one or the other). `None` when
/// `conf` is not an object or has no pools: posting that would erase the rig's pools.
pub fn set_payload(conf: &Value, mode: Mode) -> Option<Value> {
    let conf = conf.as_object()?;
    let pools = conf.get("pools").filter(|p| p.is_array())?;
    let mut out = Map::new();
    out.insert("pools".into(), pools.clone());
    let copy = |out: &mut Map<String, Value>, key: &str, from: &[&str], default: Value| {
        let v = from.iter().find_map(|k| conf.get(*k)).cloned();
        out.insert(key.to_owned(), v.unwrap_or(default));
    };
    copy(
        &mut out,
        "bitmain-fan-ctrl",
        &["bitmain-fan-ctrl"],
        false.into(),
    );
    copy(
        &mut out,
        "bitmain-fan-pwm",
        &["bitmain-fan-pwm"],
        "100".into(),
    );
    copy(
        &mut out,
        "freq-level",
        &["freq-level", "bitmain-freq-level"],
        "100".into(),
    );
    out.insert("miner-mode".into(), mode.code().into());
    out.insert("bitmain-work-mode".into(), mode.code().into());
    Some(Value::Object(out))
}

/// A hashrate in `unit` (as the firmware's `rate_unit` spells it) in TH/s; `None` for a unit
/// we do not know (never guess a factor of 1000).
pub fn to_ths(value: f64, unit: Option<&str>) -> Option<f64> {
    let unit = unit.map(|u| u.trim().trim_end_matches("/s").trim_end_matches("/S"));
    // Divide rather than multiply by 1e-3 etc.: exact for the common GH/s round numbers.
    let ths = match unit.map(str::to_ascii_uppercase).as_deref() {
        // Firmware without `rate_unit` (2020-era S19) reports GH/s.
        None | Some("GH") => value / 1e3,
        Some("H") => value / 1e12,
        Some("KH") => value / 1e9,
        Some("MH") => value / 1e6,
        Some("TH") => value,
        Some("PH") => value * 1e3,
        _ => return None,
    };
    Some(ths).filter(|v| v.is_finite() && *v >= 0.0)
}

/// Watts from a `chain_power`-style value: a number, or a string like "3250 W".
fn watts(v: &Value) -> Option<f64> {
    let w = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.split_whitespace().next()?.parse::<f64>().ok()?,
        _ => return None,
    };
    Some(w).filter(|w| w.is_finite() && *w >= 0.0 && *w < 1e6)
}

/// What a `stats.cgi` or `summary.cgi` reply says: hashrate (TH/s) and power (W).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// 5 s hashrate in TH/s; `None` when absent or in an unknown unit.
    pub hashrate_ths: Option<f64>,
    /// Power in watts, where the firmware reports it.
    pub power_w: Option<f64>,
}

/// Reads a `stats.cgi` (`STATS[0]`) or `summary.cgi` (`SUMMARY[0]`) reply. `Err` says why it
/// is not a usable reply (the miner process restarting answers with `STATUS` "E" or an empty
/// list).
pub fn figures(reply: &Value) -> Result<Figures, String> {
    if let Some(status) = reply.pointer("/STATUS/STATUS").and_then(Value::as_str)
        && status != "S"
    {
        let msg = reply
            .pointer("/STATUS/Msg")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(format!("STATUS {status:.8}: {msg:.100}"));
    }
    let row = ["STATS", "SUMMARY"]
        .iter()
        .find_map(|k| reply.get(*k).and_then(Value::as_array))
        .ok_or("no STATS or SUMMARY list")?
        .first()
        .ok_or("empty STATS/SUMMARY list (miner process not running?)")?;
    let unit = row.get("rate_unit").and_then(Value::as_str);
    let rate = row
        .get("rate_5s")
        .or_else(|| row.get("GHS 5s"))
        .and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        });
    let hashrate_ths = rate.and_then(|r| to_ths(r, unit));
    let power_w = ["chain_power", "power", "Power", "watt"]
        .iter()
        .find_map(|k| row.get(*k).and_then(watts));
    Ok(Figures {
        hashrate_ths,
        power_w,
    })
}

/// Mode and hashrate → [`RigState`]: sleep and not hashing → `Sleeping`, sleep and still
/// hashing → `Stopping`, any other mode hashing → `Mining`, not hashing → `Waking` (the miner
/// restarts after every config write and ramps like a reboot); unknown mode or hashrate →
/// `Unknown`.
pub fn derive_state(mode: Option<Mode>, hashrate_ths: Option<f64>) -> RigState {
    let Some(h) = hashrate_ths else {
        return RigState::Unknown;
    };
    let hashing = h >= HASHING_THRESHOLD_THS;
    match mode {
        Some(Mode::Sleep) if hashing => RigState::Stopping,
        Some(Mode::Sleep) => RigState::Sleeping,
        Some(_) if hashing => RigState::Mining,
        Some(_) => RigState::Waking,
        None => RigState::Unknown,
    }
}

/// The Digest state of one call: the challenge being answered and its nonce count.
#[derive(Debug, Default)]
struct Session {
    challenge: Option<digest::Challenge>,
    nc: u32,
}

fn cnonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn short(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// One request with Digest auth, answering a new challenge as the module doc says. Returns
/// the 2xx reply; any other status is an error of the right class.
async fn request(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    session: &mut Session,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response, FirmwareError> {
    let addr = endpoint.addr;
    let command = format!("{method} {path}");
    let host = addr.to_string();
    let limits = Limits {
        connect_timeout: client.timeouts.connect,
        request_timeout: client.timeouts.request,
        max_body: client.max_reply_bytes,
    };
    let creds = &endpoint.credentials;
    // Whether the challenge we hold came from the reply just before (so a 401 now means the
    // answer itself was refused), and whether a stale nonce was already retried.
    let mut fresh = false;
    let mut stale_retried = false;
    for _ in 0..MAX_SENDS_PER_REQUEST {
        let auth = session.challenge.as_ref().map(|ch| {
            session.nc = session.nc.saturating_add(1);
            digest::authorization(
                ch,
                &creds.user,
                creds.password(),
                method.as_str(),
                path,
                session.nc,
                &cnonce(),
            )
        });
        let headers: Vec<(HeaderName, &str)> = auth
            .as_deref()
            .map(|a| (AUTHORIZATION, a))
            .into_iter()
            .collect();
        let req = http_client::Request {
            method: method.clone(),
            host: &host,
            path,
            headers: &headers,
            body: body.clone(),
        };
        let resp = http_client::request(addr, req, limits)
            .await
            .map_err(|e| firmware_error(addr, command.clone(), e))?;
        match resp.status {
            200..=299 => return Ok(resp),
            401 => {
                let challenge = match digest::find_challenge(&resp.www_authenticate) {
                    Ok(c) => c,
                    Err(digest::DigestError::Unsupported(what)) => {
                        return Err(FirmwareError::Rejected {
                            addr,
                            command,
                            detail: format!("HTTP 401 asks for {what}, which we do not speak"),
                            retryable: false,
                        });
                    }
                    Err(e) => {
                        return Err(FirmwareError::Malformed {
                            addr,
                            command,
                            detail: format!("HTTP 401 without a usable Digest challenge: {e}"),
                        });
                    }
                };
                // Answering the challenge of the reply just before was refused: the
                // password is wrong, unless only the nonce expired meanwhile (once).
                if auth.is_some() && fresh {
                    if !challenge.stale {
                        return Err(FirmwareError::LoginRefused {
                            addr,
                            detail: format!(
                                "{command}: Digest answer refused for user {:?} (realm {:?})",
                                creds.user, challenge.realm
                            ),
                        });
                    }
                    if stale_retried {
                        return Err(FirmwareError::SessionExpired {
                            addr,
                            detail: format!("{command}: nonce stale again right after a fresh one"),
                        });
                    }
                    stale_retried = true;
                }
                session.challenge = Some(challenge);
                session.nc = 0;
                fresh = true;
            }
            403 => {
                return Err(FirmwareError::LoginRefused {
                    addr,
                    detail: format!("{command}: HTTP 403: {}", short(&resp.body)),
                });
            }
            status => {
                return Err(FirmwareError::Rejected {
                    addr,
                    command,
                    detail: format!("HTTP {status}: {}", short(&resp.body)),
                    retryable: crate::error::Retry::for_http_status(status).is_retryable(),
                });
            }
        }
    }
    // Unreachable in practice (every path of the third send returns); a typed error is
    // cheaper than a panic path.
    Err(FirmwareError::SessionExpired {
        addr,
        detail: format!("{command}: too many Digest rounds"),
    })
}

fn json(endpoint: &Endpoint, command: &str, body: &[u8]) -> Result<Value, FirmwareError> {
    // The CGIs print a couple of newlines before the JSON; serde skips whitespace.
    serde_json::from_slice(body).map_err(|e| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: command.to_owned(),
        detail: if body.iter().all(u8::is_ascii_whitespace) {
            "empty reply (miner process restarting?)".to_owned()
        } else {
            format!("not JSON: {e}")
        },
    })
}

async fn get_json(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    session: &mut Session,
    path: &str,
) -> Result<Value, FirmwareError> {
    let resp = request(client, endpoint, session, Method::GET, path, Bytes::new()).await?;
    json(endpoint, &format!("GET {path}"), &resp.body)
}

async fn read_conf(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    session: &mut Session,
) -> Result<(Value, Mode), FirmwareError> {
    let conf = get_json(client, endpoint, session, GET_CONF).await?;
    let mode = config_mode(&conf).ok_or_else(|| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: format!("GET {GET_CONF}"),
        detail: "no readable miner-mode or bitmain-work-mode".into(),
    })?;
    Ok((conf, mode))
}

/// Reads the config, and writes it back with `mode` unless the rig is already there.
async fn set_mode(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    want: Mode,
) -> Result<(), FirmwareError> {
    let mut session = Session::default();
    let (conf, mode) = read_conf(client, endpoint, &mut session).await?;
    let already = match want {
        Mode::Sleep => mode == Mode::Sleep,
        _ => mode != Mode::Sleep,
    };
    if already {
        return Ok(());
    }
    let command = format!("POST {SET_CONF}");
    let payload = set_payload(&conf, want).ok_or_else(|| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: format!("GET {GET_CONF}"),
        detail: "config has no pools list: refusing to write a config that would erase them".into(),
    })?;
    let resp = request(
        client,
        endpoint,
        &mut session,
        Method::POST,
        SET_CONF,
        payload.to_string().into(),
    )
    .await?;
    // Some firmware answers the write with an empty or plain-text body: 2xx is acceptance;
    // only an explicit error is a refusal. `status` confirms what happened either way.
    if let Ok(reply) = serde_json::from_slice::<Value>(&resp.body)
        && let Some(stats) = reply.get("stats").and_then(Value::as_str)
        && stats != "success"
    {
        let msg = reply.get("msg").and_then(Value::as_str).unwrap_or("");
        let code = reply.get("code").and_then(Value::as_str).unwrap_or("");
        return Err(FirmwareError::Rejected {
            addr: endpoint.addr,
            command,
            detail: format!("{stats:.20} {code:.10}: {msg:.100}"),
            retryable: false,
        });
    }
    Ok(())
}

/// Command the rig to sleep (`miner-mode` 1). `Ok` when the firmware accepted the new config
/// or was already asleep.
pub async fn sleep(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    set_mode(client, endpoint, Mode::Sleep).await
}

/// Command the rig to wake (`miner-mode` 0). `Ok` when the firmware accepted the new config
/// or was not asleep.
pub async fn wake(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    set_mode(client, endpoint, Mode::Normal).await
}

/// Read the rig's state (mode from the config, hashrate and power from the stats).
pub async fn status(
    client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    let mut session = Session::default();
    let (_, mode) = read_conf(client, endpoint, &mut session).await?;
    let (path, reply) = match get_json(client, endpoint, &mut session, STATS).await {
        Ok(v) => (STATS, v),
        // Firmware without stats.cgi: the summary has the same rate fields.
        Err(FirmwareError::Rejected { detail, .. }) if detail.starts_with("HTTP 404") => (
            SUMMARY,
            get_json(client, endpoint, &mut session, SUMMARY).await?,
        ),
        Err(e) => return Err(e),
    };
    let figures = figures(&reply).map_err(|detail| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: format!("GET {path}"),
        detail,
    })?;
    Ok(RigStatus {
        state: derive_state(Some(mode), figures.hashrate_ths),
        power_w: figures.power_w,
        hashrate_ths: figures.hashrate_ths,
    })
}

#[cfg(test)]
mod tests;
