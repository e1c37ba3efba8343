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
//! or `Sleep`), `power` (`POWER[0].Watts`) and `summary` (`SUMMARY[0]["GHS 5s"]`); see
//! [`derive_state`] for how they combine.

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
    if m.contains("already") && (m.contains("sleep") || m.contains("active") || m.contains("awake"))
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

    #[test]
    fn replies() {
        use serde_json::json;
        let logon = |sid: Value| json!({"SESSION": [{"SessionID": sid}]});
        assert_eq!(session_id(&logon(json!("1a2b"))), Some("1a2b"));
        for bad in [
            json!(""),
            json!("a,curtail"),
            json!("x".repeat(129)),
            json!(7),
        ] {
            assert_eq!(session_id(&logon(bad.clone())), None, "{bad}");
        }
        let config = json!({"CONFIG": [{"CurtailMode": "None"}]});
        let power = json!({"POWER": [{"Watts": 3250}]});
        let summary = cgminer::parse_reply(b"{\"SUMMARY\":[{\"GHS 5s\":\"95000\"}]}\0").unwrap();
        let s = status_from_replies(&config, &power, &summary);
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Mining, Some(3250.0), Some(95.0))
        );
        let s = status_from_replies(
            &json!({}),
            &json!([]),
            &json!({"SUMMARY": [{"GHS 5s": null}]}),
        );
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Unknown, None, None)
        );
    }
}
