//! VNish web API (firmware 1.2.x / 1.3.x on Antminers, port 80): stop and start mining, read
//! its state.
//!
//! - `POST /api/v1/unlock` with `{"pw":..}` → `{"token":..}`; privileged calls send it as
//!   `Authorization: Bearer <token>` (the firmware's OpenAPI names the scheme `bearerAuth`,
//!   JWT). 403 (wrong password; the body is `{"unlock_timeout":..}`) or 401 on unlock →
//!   [`FirmwareError::LoginRefused`]; 429 (too many attempts: the firmware locks unlocking for
//!   a while) → retryable [`FirmwareError::Rejected`].
//! - `POST /api/v1/mining/stop` / `start` → 200 with an empty body. A 401 means the token
//!   expired (tokens die with a firmware restart): unlock once more and retry, then
//!   [`FirmwareError::SessionExpired`]. Errors come as `{"err": ".."}`, e.g. HTTP 500
//!   `CGMiner err: Cgminer error failed-to-activate-pause-mode` from a miner that cannot
//!   stop now, or that is already stopped.
//! - `GET /api/v1/summary` (no token needed; one is sent after a 401 only) →
//!   `miner.miner_status.miner_state` (`mining`, `initializing`, `starting`, `auto-tuning`,
//!   `restarting`, `shutting-down`, `stopped`, `failure`), `miner.power_consumption` (watts,
//!   the firmware's estimate) and `miner.hr_realtime` (GH/s on SHA-256 machines, the unit
//!   `GET /api/v1/info` calls `hr_measure`).
//!
//! # Why stop/start and not pause/resume
//! VNish has both. `stop` ends mining: the summary then reads `miner_state = "stopped"`, the
//! hashboards are powered down and `power_consumption` falls to the control board's, so the
//! sleep can be confirmed from the firmware's own words. `pause` only idles the chips inside a
//! running cgminer so that `resume` is quick; the firmware's state enum has no "paused" value,
//! so nothing in the summary tells a paused rig from a mining one, and its boards stay
//! energised. A drain hands the rig's power to someone else, so it must use the command whose
//! effect is a measured power drop: stop/start. Waking is therefore a cold start of the boards
//! (VNish reports `initializing` / `starting` for a minute or more), which the arbiter's
//! staggered wake already assumes.
//!
//! # Idempotence
//! A stop on a stopped miner (or a start on a mining one) may answer HTTP 500 rather than
//! 200. On a 5xx from stop/start, the adapter reads the summary: if the rig is already where
//! the command would take it, the command is a success; otherwise the 5xx is returned as a
//! retryable [`FirmwareError::Rejected`]. A reply that cannot be read is never taken as
//! "asleep": it is [`FirmwareError::Malformed`], and a `failure` state reads as
//! [`RigState::Unknown`].
//!
//! Each call unlocks afresh (no token cache: no state shared between tasks), over
//! [`crate::http_client`] like the Braiins OS+ adapter: one request per connection, bounded by
//! the client's [`Timeouts`](super::Timeouts) and [`FirmwareClient::max_reply_bytes`].

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::braiins::{json, login_token};
use super::{Endpoint, FirmwareClient, FirmwareError, RigState, RigStatus};
use crate::http_client::Response;

const UNLOCK: &str = "/api/v1/unlock";
const SUMMARY: &str = "/api/v1/summary";

/// The two mining commands this adapter sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mining {
    /// `POST /api/v1/mining/stop`: boards powered down, state `stopped`.
    Stop,
    /// `POST /api/v1/mining/start`: boards re-initialised, then `mining`.
    Start,
}

impl Mining {
    /// The command's path.
    pub fn path(self) -> &'static str {
        match self {
            Mining::Stop => "/api/v1/mining/stop",
            Mining::Start => "/api/v1/mining/start",
        }
    }

    /// Whether a rig in `state` is already where this command takes it (so a refused command
    /// changes nothing that matters).
    fn done(self, state: RigState) -> bool {
        match self {
            Mining::Stop => state == RigState::Sleeping,
            Mining::Start => matches!(state, RigState::Mining | RigState::Waking),
        }
    }
}

/// Command the rig to sleep: `mining/stop`.
pub async fn sleep(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    command(client, endpoint, Mining::Stop).await
}

/// Command the rig to wake: `mining/start`.
pub async fn wake(client: &FirmwareClient, endpoint: &Endpoint) -> Result<(), FirmwareError> {
    command(client, endpoint, Mining::Start).await
}

/// Read the rig's state, power and hashrate from `GET /api/v1/summary`.
pub async fn status(
    client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    let command = format!("GET {SUMMARY}");
    let mut resp = send(client, endpoint, Method::GET, SUMMARY, None, Bytes::new()).await?;
    if resp.status == 401 {
        // Summary is public on the firmware versions we know; a site that locked it down
        // wants the token.
        let mut token = unlock(client, endpoint).await?;
        resp = authed(client, endpoint, Method::GET, SUMMARY, &mut token).await?;
    }
    if !(200..=299).contains(&resp.status) {
        return Err(rejected(endpoint, &command, &resp));
    }
    let v = json(endpoint, &command, &resp.body)?;
    status_from_summary(&v).ok_or_else(|| FirmwareError::Malformed {
        addr: endpoint.addr,
        command,
        detail: "no `miner` object in the summary".into(),
    })
}

/// Stop or start mining; idempotent (see the module docs).
pub async fn command(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    what: Mining,
) -> Result<(), FirmwareError> {
    let mut token = unlock(client, endpoint).await?;
    let resp = authed(client, endpoint, Method::POST, what.path(), &mut token).await?;
    match resp.status {
        200..=299 => Ok(()),
        500..=599 => {
            let refused = rejected(endpoint, &format!("POST {}", what.path()), &resp);
            // Already there? Then the refusal is the firmware saying so.
            match status(client, endpoint).await {
                Ok(s) if what.done(s.state) => Ok(()),
                _ => Err(refused),
            }
        }
        _ => Err(rejected(endpoint, &format!("POST {}", what.path()), &resp)),
    }
}

/// The firmware's error text: `{"err": ".."}` (or `{"message": ..}`), else the raw body,
/// at most 200 bytes of it.
/// VNish reports errors as {"err": ..} (some versions {"message": ..}).
const ERROR_KEYS: &[&str] = &["err", "message"];

fn short(body: &[u8]) -> String {
    super::braiins::error_text(body, ERROR_KEYS)
}

fn rejected(endpoint: &Endpoint, command: &str, resp: &Response) -> FirmwareError {
    super::braiins::rejected_with(endpoint, command, resp, ERROR_KEYS)
}

/// One request, with the bearer token if there is one.
async fn send(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<Response, FirmwareError> {
    let bearer = token.map(|t| format!("Bearer {t}"));
    super::braiins::send(client, endpoint, method, path, bearer.as_deref(), body).await
}

async fn unlock(client: &FirmwareClient, endpoint: &Endpoint) -> Result<String, FirmwareError> {
    let command = format!("POST {UNLOCK}");
    let body = serde_json::json!({ "pw": endpoint.credentials.password() }).to_string();
    let resp = send(client, endpoint, Method::POST, UNLOCK, None, body.into()).await?;
    match resp.status {
        200..=299 => {}
        401 | 403 => {
            return Err(FirmwareError::LoginRefused {
                addr: endpoint.addr,
                detail: format!(
                    "HTTP {}: wrong password ({})",
                    resp.status,
                    short(&resp.body)
                ),
            });
        }
        _ => return Err(rejected(endpoint, &command, &resp)),
    }
    let v = json(endpoint, &command, &resp.body)?;
    match login_token(&v) {
        Some(t) => Ok(t.to_owned()),
        None => Err(FirmwareError::Malformed {
            addr: endpoint.addr,
            command,
            detail: "no usable `token` in the unlock reply".into(),
        }),
    }
}

/// An authenticated request, unlocking again once if the token is refused (401). Any other
/// status is returned for the caller to judge.
async fn authed(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    token: &mut String,
) -> Result<Response, FirmwareError> {
    let resp = send(
        client,
        endpoint,
        method.clone(),
        path,
        Some(token),
        Bytes::new(),
    )
    .await?;
    if resp.status != 401 {
        return Ok(resp);
    }
    *token = unlock(client, endpoint).await?;
    let resp = send(
        client,
        endpoint,
        method.clone(),
        path,
        Some(token),
        Bytes::new(),
    )
    .await?;
    if resp.status == 401 {
        return Err(FirmwareError::SessionExpired {
            addr: endpoint.addr,
            detail: format!("{method} {path}: token refused right after unlock"),
        });
    }
    Ok(resp)
}

/// VNish `miner_state` plus hashrate → [`RigState`]:
/// - `mining`, `auto-tuning`, `initializing`, `starting`, `restarting`: `Mining` while it
///   hashes, `Waking` before;
/// - `shutting-down` → `Stopping`; `stopped` → `Sleeping` once the hashrate is zero (or not
///   reported), `Stopping` before;
/// - `failure` (the firmware gave up: configuration, boards, temperature) and anything else →
///   `Unknown`: never taken as asleep.
pub fn derive_state(miner_state: Option<&str>, hashrate_ths: Option<f64>) -> RigState {
    let hashing = hashrate_ths.is_some_and(|h| h > 0.0);
    match miner_state {
        Some("mining" | "auto-tuning" | "initializing" | "starting" | "restarting") => {
            if hashing {
                RigState::Mining
            } else {
                RigState::Waking
            }
        }
        Some("shutting-down") => RigState::Stopping,
        Some("stopped") if hashing => RigState::Stopping,
        Some("stopped") => RigState::Sleeping,
        _ => RigState::Unknown,
    }
}

/// Reads a `GET /api/v1/summary` reply into a [`RigStatus`]: the parsing half of [`status`].
/// `None` when the reply is not an object with a `miner` member (not a summary at all);
/// `"miner": null` (the mining process not up) reads as [`RigState::Unknown`]. Missing,
/// non-numeric, negative or non-finite figures read as unknown. Power is
/// `power_consumption`; firmware too old to have it reported watts as `power_usage` (newer
/// ones reuse that name for J/TH, so it is read only when `power_consumption` is absent).
pub fn status_from_summary(summary: &Value) -> Option<RigStatus> {
    let miner = summary.as_object()?.get("miner")?;
    let figure = |key: &str| {
        miner
            .get(key)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite() && *x >= 0.0)
    };
    let power_w = if miner.get("power_consumption").is_some() {
        figure("power_consumption")
    } else {
        figure("power_usage")
    };
    let hashrate_ths = figure("hr_realtime").map(|ghs| ghs / 1000.0);
    let state = derive_state(
        miner
            .pointer("/miner_status/miner_state")
            .and_then(Value::as_str),
        hashrate_ths,
    );
    Some(RigStatus {
        state,
        power_w,
        hashrate_ths,
    })
}

/// Reads an unlock reply: its token, or `None` (the same checks as Braiins OS+ tokens: they
/// become a header value).
pub fn unlock_token(reply: &Value) -> Option<&str> {
    login_token(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    #[test]
    fn s19j_pro_mining_summary() {
        let v = fixture(include_str!(
            "../../../tools/fixtures/firmware/vnish/s19jpro-summary-mining.json"
        ));
        let s = status_from_summary(&v).unwrap();
        assert_eq!(s.state, RigState::Mining);
        assert_eq!(s.power_w, Some(2631.0));
        let ths = s.hashrate_ths.unwrap();
        assert!((ths - 54.478543).abs() < 1e-9, "{ths}");
    }

    #[test]
    fn s19_failure_summary_is_unknown_never_asleep() {
        let v = fixture(include_str!(
            "../../../tools/fixtures/firmware/vnish/s19-summary-failure.json"
        ));
        let s = status_from_summary(&v).unwrap();
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Unknown, Some(0.0), Some(0.0))
        );
    }

    #[test]
    fn unlock_and_error_replies() {
        let v = fixture(include_str!(
            "../../../tools/fixtures/firmware/vnish/s19-unlock.json"
        ));
        assert_eq!(unlock_token(&v), Some("PLACEHOLDERtokenPLACEHOLDERtoken"));
        let wrong =
            include_str!("../../../tools/fixtures/firmware/vnish/unlock-wrong-password.json");
        assert_eq!(unlock_token(&fixture(wrong)), None);
        assert_eq!(short(wrong.as_bytes()), wrong);
        let stop = include_str!("../../../tools/fixtures/firmware/vnish/s19-stop-error.json");
        assert_eq!(
            short(stop.as_bytes()),
            "CGMiner err: Cgminer error failed-to-activate-pause-mode"
        );
        let start = include_str!("../../../tools/fixtures/firmware/vnish/s19-start-error.json");
        assert_eq!(
            short(start.as_bytes()),
            "CGMiner err: Cgminer error failed-to-activate-resume-mode"
        );
        let busy = include_str!("../../../tools/fixtures/firmware/vnish/busy-500.json");
        assert_eq!(short(busy.as_bytes()), "Internal Server Error");
        assert_eq!(status_from_summary(&fixture(busy)), None);
    }

    #[test]
    fn states() {
        assert_eq!(derive_state(Some("mining"), Some(95.0)), RigState::Mining);
        assert_eq!(derive_state(Some("mining"), Some(0.0)), RigState::Waking);
        assert_eq!(derive_state(Some("starting"), None), RigState::Waking);
        assert_eq!(derive_state(Some("initializing"), None), RigState::Waking);
        assert_eq!(
            derive_state(Some("auto-tuning"), Some(50.0)),
            RigState::Mining
        );
        assert_eq!(
            derive_state(Some("shutting-down"), None),
            RigState::Stopping
        );
        assert_eq!(derive_state(Some("stopped"), Some(3.0)), RigState::Stopping);
        assert_eq!(derive_state(Some("stopped"), Some(0.0)), RigState::Sleeping);
        assert_eq!(derive_state(Some("stopped"), None), RigState::Sleeping);
        assert_eq!(derive_state(Some("failure"), Some(0.0)), RigState::Unknown);
        assert_eq!(derive_state(Some("paused"), Some(0.0)), RigState::Unknown);
        assert_eq!(derive_state(None, Some(0.0)), RigState::Unknown);
    }

    #[test]
    fn odd_summaries() {
        use serde_json::json;
        let s = status_from_summary(&json!({"miner": null})).unwrap();
        assert_eq!((s.state, s.power_w), (RigState::Unknown, None));
        assert_eq!(status_from_summary(&json!([1, 2])), None);
        assert_eq!(status_from_summary(&json!({"system": {}})), None);
        // Old firmware: watts only as power_usage. New firmware: power_usage is J/TH.
        let old =
            json!({"miner": {"power_usage": 3100, "miner_status": {"miner_state": "stopped"}}});
        let s = status_from_summary(&old).unwrap();
        assert_eq!((s.state, s.power_w), (RigState::Sleeping, Some(3100.0)));
        let new = json!({"miner": {"power_consumption": 3250, "power_usage": 29.5}});
        assert_eq!(status_from_summary(&new).unwrap().power_w, Some(3250.0));
        let bad = json!({"miner": {"power_consumption": -1, "hr_realtime": "x",
            "miner_status": {"miner_state": 7}}});
        let s = status_from_summary(&bad).unwrap();
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Unknown, None, None)
        );
        assert_eq!(Mining::Stop.path(), "/api/v1/mining/stop");
        assert!(Mining::Start.done(RigState::Waking));
        assert!(!Mining::Stop.done(RigState::Stopping));
    }
}
