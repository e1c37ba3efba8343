//! LuxOS: sleep and wake through `curtail` on the cgminer-style API (TCP 4028).
//!
//! Privileged commands need a session: `logon` returns `SESSION[0].SessionID`; the command then
//! takes `"<sid>,<args>"` as its parameter; `logoff` with `"<sid>"` ends it. LuxOS allows one
//! session at a time and expires it after a minute idle, so:
//! - `logon` refused because a session is active → [`FirmwareError::SessionBusy`] (another tool
//!   holds it; we do not borrow it through `session`, see the module docs of `firmware`);
//! - a command refused for an invalid/expired session → log on again once, then
//!   [`FirmwareError::SessionExpired`];
//! - we always log off after the command (best effort: a failed logoff only means the session
//!   expires by itself within a minute).
//!
//! `curtail` refused with "already in sleep mode" / "already active" counts as success: sleep
//! and wake are idempotent for the drain logic, which re-sends them after restarts.
//!
//! Status comes from three read-only commands (no session): `config` (`CurtailMode`: `None`
//! or `Sleep`), `power` (`POWER[0].Watts`, an integer; `PSU:false` means LuxOS estimates it
//! rather than reading the PSU) and `summary` (`SUMMARY[0]["GHS 5s"]`, a number in GH/s, as
//! cgminer's field name says and as pyasic reads it); see [`derive_state`] for how they combine.
//!
//! Replies as real machines send them (S19k Pro and S19j Pro captures, Luxor's documented
//! `logon`/`session`/`curtail` replies) are in `tools/fixtures/firmware/luxos/`; the tests
//! below read them. `logon` answers `Code 316 "Session created"` with `SESSION[0].SessionID`,
//! or, while another tool holds the session, `STATUS:"E"`, `Code 402 "Another session is
//! active"` with no `SESSION` at all (as Luxor's own tooling checks); `curtail` answers
//! `Code 335 "Curtailment command sent"` with `CURTAIL[0].Action`.

use serde_json::Value;

use super::cgminer::{self, Status};
use super::{Endpoint, FirmwareClient, FirmwareError, RigState, RigStatus};

/// The two `curtail` arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curtail {
    /// `curtail <sid>,sleep`: hashboards off, the control board stays up.
    Sleep,
    /// `curtail <sid>,wakeup`: boards on again; ramps like a reboot.
    Wakeup,
}

impl Curtail {
    fn arg(self) -> &'static str {
        match self {
            Curtail::Sleep => "sleep",
            Curtail::Wakeup => "wakeup",
        }
    }
}

/// How LuxOS refused a command, read from its message (LuxOS reports session problems as
/// `STATUS:"E"` replies whose codes vary across versions; the messages are stable in meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another session is active (on `logon`).
    SessionBusy,
    /// The session id is unknown or expired (on a privileged command).
    SessionInvalid,
    /// The rig is already in the requested state ("already in sleep mode", "already active").
    AlreadyThere,
    /// Anything else.
    Other,
}

/// Classify an `E` status message.
pub fn classify_refusal(msg: &str) -> Refusal {
    let m = msg.to_ascii_lowercase();
    // "already ... active" is about the rig only when it does not name a session: a session
    // message such as "Session already active" must never read as "the rig is already there"
    // (that would take a refused curtail for a done one).
    if m.contains("already")
        && !m.contains("session")
        && (m.contains("sleep") || m.contains("active") || m.contains("awake"))
    {
        Refusal::AlreadyThere
    } else if m.contains("session")
        && (m.contains("in use")
            || m.contains("active")
            || m.contains("already")
            || m.contains("busy")
            || m.contains("another"))
    {
        Refusal::SessionBusy
    } else if (m.contains("session") || m.contains("sid"))
        && (m.contains("invalid")
            || m.contains("expired")
            || m.contains("not found")
            || m.contains("unknown")
            || m.contains("no session"))
    {
        Refusal::SessionInvalid
    } else {
        Refusal::Other
    }
}

/// Combine `CurtailMode`, hashrate and power into a [`RigState`]:
/// - curtailed (`Sleep`) and no hashrate → `Sleeping`; curtailed but hashing → `Stopping`;
/// - not curtailed (`None`) and hashing → `Mining`; not curtailed and no hashrate → `Waking`
///   (LuxOS does not say "ramping"; a rig that stays there past its deadline is a fault for the
///   caller to report);
/// - any other `CurtailMode`, or none at all → `Unknown`.
///
/// `None` is in every published capture (S19k Pro, S19j Pro); the asleep value `Sleep` is not
/// (no project publishes a sleeping machine's `config`; integrations compare against `None`
/// or `"sleep"`). Matching is case-insensitive, and a value we do not know is `Unknown`, so a
/// rig is never taken for asleep on a word we have not seen.
pub fn derive_state(curtail_mode: Option<&str>, hashrate_ths: Option<f64>) -> RigState {
    let hashing = hashrate_ths.is_some_and(|h| h > 0.0);
    match curtail_mode.map(str::to_ascii_lowercase).as_deref() {
        Some("sleep") => {
            if hashing {
                RigState::Stopping
            } else {
                RigState::Sleeping
            }
        }
        Some("none") => {
            if hashing {
                RigState::Mining
            } else {
                RigState::Waking
            }
        }
        _ => RigState::Unknown,
    }
}

/// `curtail sleep|wakeup` inside a logon session.
pub async fn curtail(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    what: Curtail,
) -> Result<(), FirmwareError> {
    let addr = endpoint.addr;
    // Two attempts: the second only after the first session turned out expired.
    let mut last_detail = String::new();
    for _ in 0..2 {
        let sid = logon(client, endpoint).await?;
        let param = format!("{sid},{}", what.arg());
        let result = cgminer::request(client, addr, "curtail", Some(&param)).await;
        // Log off whatever happened, so the rig is free for other tools at once. Its result
        // does not matter: an unlogged session expires by itself.
        let _ = cgminer::request(client, addr, "logoff", Some(&sid)).await;
        let (_, status) = result?;
        if !status.is_error() {
            return Ok(());
        }
        match classify_refusal(&status.msg) {
            Refusal::AlreadyThere => return Ok(()),
            Refusal::SessionInvalid => {
                last_detail = status.msg;
                continue;
            }
            Refusal::SessionBusy => {
                return Err(FirmwareError::SessionBusy {
                    addr,
                    detail: status.msg,
                });
            }
            Refusal::Other => return Err(rejected(endpoint, "curtail", status)),
        }
    }
    Err(FirmwareError::SessionExpired {
        addr,
        detail: last_detail,
    })
}

async fn logon(client: &FirmwareClient, endpoint: &Endpoint) -> Result<String, FirmwareError> {
    let addr = endpoint.addr;
    let (reply, status) = cgminer::request(client, addr, "logon", None).await?;
    if status.is_error() {
        return Err(match classify_refusal(&status.msg) {
            Refusal::SessionBusy => FirmwareError::SessionBusy {
                addr,
                detail: status.msg,
            },
            _ => FirmwareError::LoginRefused {
                addr,
                detail: status.msg,
            },
        });
    }
    match session_id(&reply) {
        Some(sid) => Ok(sid.to_owned()),
        None => Err(FirmwareError::Malformed {
            addr,
            command: "logon".into(),
            detail: "no usable SESSION[0].SessionID".into(),
        }),
    }
}

/// Reads a `logon` reply: `SESSION[0].SessionID`, or `None` when there is no usable one.
/// The id goes into a comma-separated parameter, so one that is empty, longer than 128 bytes
/// or contains a comma is refused (a rig is not trusted to send a sane id).
pub fn session_id(reply: &Value) -> Option<&str> {
    reply
        .get("SESSION")
        .and_then(|s| s.get(0))
        .and_then(|s| s.get("SessionID"))
        .and_then(Value::as_str)
        .filter(|sid| !sid.is_empty() && sid.len() <= 128 && !sid.contains(','))
}

fn rejected(endpoint: &Endpoint, command: &str, status: Status) -> FirmwareError {
    FirmwareError::Rejected {
        addr: endpoint.addr,
        command: command.to_owned(),
        detail: status.msg,
        retryable: false,
    }
}

/// A read-only command whose reply must be a success.
async fn read(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    command: &str,
) -> Result<Value, FirmwareError> {
    let (reply, status) = cgminer::request(client, endpoint.addr, command, None).await?;
    if status.is_error() {
        return Err(rejected(endpoint, command, status));
    }
    Ok(reply)
}

/// State, power and hashrate from `config`, `power` and `summary`.
pub async fn status(
    client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    // Three independent read-only requests, each on its own connection: in parallel.
    let (config, power, summary) = tokio::try_join!(
        read(client, endpoint, "config"),
        read(client, endpoint, "power"),
        read(client, endpoint, "summary"),
    )?;
    Ok(status_from_replies(&config, &power, &summary))
}

/// Reads the replies to `config`, `power` and `summary` (parsed by [`cgminer::parse_reply`])
/// into a [`RigStatus`]: the parsing half of [`status`]. Missing or malformed fields read as
/// unknown, never as an error.
pub fn status_from_replies(config: &Value, power: &Value, summary: &Value) -> RigStatus {
    let curtail_mode = config
        .get("CONFIG")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("CurtailMode"))
        .and_then(Value::as_str);
    let power_w = cgminer::number(
        power
            .get("POWER")
            .and_then(|p| p.get(0))
            .and_then(|p| p.get("Watts")),
    );
    let hashrate_ths = cgminer::number(
        summary
            .get("SUMMARY")
            .and_then(|s| s.get(0))
            .and_then(|s| s.get("GHS 5s")),
    )
    .map(|ghs| ghs / 1000.0);
    RigStatus {
        state: derive_state(curtail_mode, hashrate_ths),
        power_w,
        hashrate_ths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        assert_eq!(
            classify_refusal("Miner is already in sleep mode"),
            Refusal::AlreadyThere
        );
        assert_eq!(
            classify_refusal("Miner is already active"),
            Refusal::AlreadyThere
        );
        assert_eq!(
            classify_refusal("Another session is active"),
            Refusal::SessionBusy
        );
        assert_eq!(
            classify_refusal("Session already in use"),
            Refusal::SessionBusy
        );
        assert_eq!(
            classify_refusal("Invalid session id"),
            Refusal::SessionInvalid
        );
        assert_eq!(classify_refusal("Session expired"), Refusal::SessionInvalid);
        // A session message never reads as "the rig is already there".
        assert_eq!(
            classify_refusal("Session already active"),
            Refusal::SessionBusy
        );
        assert_eq!(classify_refusal("Invalid command"), Refusal::Other);
    }

    #[test]
    fn states() {
        assert_eq!(derive_state(Some("None"), Some(95.0)), RigState::Mining);
        assert_eq!(derive_state(Some("None"), Some(0.0)), RigState::Waking);
        assert_eq!(derive_state(Some("None"), None), RigState::Waking);
        assert_eq!(derive_state(Some("Sleep"), Some(0.0)), RigState::Sleeping);
        assert_eq!(derive_state(Some("Sleep"), None), RigState::Sleeping);
        assert_eq!(derive_state(Some("Sleep"), Some(90.0)), RigState::Stopping);
        assert_eq!(
            derive_state(Some("Hibernate"), Some(0.0)),
            RigState::Unknown
        );
        assert_eq!(derive_state(None, Some(95.0)), RigState::Unknown);
    }

    /// A reply from `tools/fixtures/firmware/luxos/`, parsed as the adapter parses the wire.
    macro_rules! lux {
        ($file:literal) => {
            cgminer::parse_reply(include_bytes!(concat!(
                "../../../tools/fixtures/firmware/luxos/",
                $file
            )))
            .unwrap()
        };
    }

    /// The status of a rig from its own `config`, `power` and `summary` replies.
    fn from_fixtures(config: &Value, power: &Value, summary: &Value) -> (RigState, f64, f64) {
        for reply in [config, power, summary] {
            assert!(!cgminer::check_status(reply).unwrap().is_error());
        }
        let s = status_from_replies(config, power, summary);
        (s.state, s.power_w.unwrap(), s.hashrate_ths.unwrap())
    }

    #[test]
    fn status_of_real_machines() {
        // S19k Pro on a -12 profile: 59,756.06 GH/s in summary is 59.76 TH/s, 1,051 W.
        let (state, watts, ths) = from_fixtures(
            &lux!("s19kpro-config.json"),
            &lux!("s19kpro-power.json"),
            &lux!("s19kpro-summary.json"),
        );
        assert_eq!(state, RigState::Mining);
        assert_eq!(watts, 1051.0);
        assert!((ths - 59.75606).abs() < 1e-9, "{ths}");

        // S19j Pro with one board on 145 MHz: 9,051.39 GH/s, 398 W.
        let (state, watts, ths) = from_fixtures(
            &lux!("s19jpro-config.json"),
            &lux!("s19jpro-power.json"),
            &lux!("s19jpro-summary.json"),
        );
        assert_eq!(state, RigState::Mining);
        assert_eq!(watts, 398.0);
        assert!((ths - 9.05139).abs() < 1e-9, "{ths}");

        // The unit check: `stats` of the same S19k Pro says rate_unit GH and its GHS 5s is the
        // summary's; its per-chain rates are strings and add up to the same figure.
        let stats = lux!("s19kpro-stats.json");
        let chains = &stats["STATS"][1];
        assert_eq!(chains["rate_unit"], "GH");
        assert_eq!(
            chains["GHS 5s"],
            lux!("s19kpro-summary.json")["SUMMARY"][0]["GHS 5s"]
        );
        let sum: f64 = (1..=4)
            .map(|i| cgminer::number(chains.get(format!("chain_rate{i}"))).unwrap())
            .sum();
        assert!((sum / 1000.0 - 56.917).abs() < 0.1, "{sum}");
    }

    #[test]
    fn session_replies() {
        assert_eq!(session_id(&lux!("docs-logon.json")), Some("yJN2nlj1"));
        // `session` with none open: an empty id, which is no id.
        assert_eq!(session_id(&lux!("docs-session-none.json")), None);
        // Another tool holds the session: an error with no SESSION section.
        let busy = lux!("logon-session-busy.json");
        let status = cgminer::check_status(&busy).unwrap();
        assert!(status.is_error());
        assert_eq!(session_id(&busy), None);
        assert_eq!(classify_refusal(&status.msg), Refusal::SessionBusy);
        let expired = cgminer::check_status(&lux!("curtail-invalid-session.json")).unwrap();
        assert_eq!(classify_refusal(&expired.msg), Refusal::SessionInvalid);

        // Ids a rig is not trusted with.
        use serde_json::json;
        let logon = |sid: Value| json!({"SESSION": [{"SessionID": sid}]});
        for bad in [
            json!(""),
            json!("a,curtail"),
            json!("x".repeat(129)),
            json!(7),
        ] {
            assert_eq!(session_id(&logon(bad.clone())), None, "{bad}");
        }
    }

    #[test]
    fn curtail_replies() {
        for (file, action) in [
            (lux!("docs-curtail-sleep.json"), "sleep mode"),
            (lux!("docs-curtail-wakeup.json"), "wake up"),
        ] {
            let status = cgminer::check_status(&file).unwrap();
            assert!(!status.is_error(), "{}", status.msg);
            assert_eq!(file["CURTAIL"][0]["Action"], action);
        }
        for file in [
            lux!("curtail-already-sleeping.json"),
            lux!("curtail-already-active.json"),
        ] {
            let status = cgminer::check_status(&file).unwrap();
            assert!(status.is_error());
            assert_eq!(classify_refusal(&status.msg), Refusal::AlreadyThere);
        }
    }

    #[test]
    fn missing_or_broken_fields_read_as_unknown() {
        use serde_json::json;
        let s = status_from_replies(
            &json!({}),
            &json!([]),
            &json!({"SUMMARY": [{"GHS 5s": null}]}),
        );
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Unknown, None, None)
        );
        // A summary whose rate is a string (bmminer style) still reads, in GH/s.
        let summary = cgminer::parse_reply(b"{\"SUMMARY\":[{\"GHS 5s\":\"95000\"}]}\0").unwrap();
        let s = status_from_replies(
            &lux!("s19kpro-config.json"),
            &lux!("s19kpro-power.json"),
            &summary,
        );
        assert_eq!(s.hashrate_ths, Some(95.0));
    }
}
