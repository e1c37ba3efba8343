//! Braiins OS+ REST API (≥ 25.07, port 80): pause and resume mining, read its state.
//!
//! - `POST /api/v1/auth/login` with `{"username":..,"password":..}` → `{"token":..}`; the token
//!   goes as-is in the `Authorization` header of later requests. 401/403 on login →
//!   [`FirmwareError::LoginRefused`].
//! - `PUT /api/v1/actions/pause` / `resume` → 2xx. A 401 means the token expired: log in once
//!   more, then [`FirmwareError::SessionExpired`].
//! - `GET /api/v1/miner/details` → `status` (1 not started, 2 normal, 3 paused, 4 suspended,
//!   5 restricted); `GET /api/v1/miner/stats` → `power_stats.approximated_consumption.watt`,
//!   `miner_stats.real_hashrate.last_5s.gigahash_per_second`.
//!
//! Each call logs in afresh (one more small request) instead of caching tokens: no state
//! shared between tasks, and no stale-token bookkeeping across thousands of rigs. HTTP is
//! [`crate::http_client`]: one request per connection, bounded by the client's [`Timeouts`]
//! and [`FirmwareClient::max_reply_bytes`].
//!
//! [`Timeouts`]: super::Timeouts

use std::net::SocketAddr;

use bytes::Bytes;
use hyper::Method;
use hyper::header::{AUTHORIZATION, HeaderName};
use serde_json::Value;

use super::{Endpoint, FirmwareClient, FirmwareError, RigState, RigStatus};
use crate::http_client::{self, HttpError, Limits, Response};

/// The two mining actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `PUT /api/v1/actions/pause`.
    Pause,
    /// `PUT /api/v1/actions/resume`.
    Resume,
}

impl Action {
    fn path(self) -> &'static str {
        match self {
            Action::Pause => "/api/v1/actions/pause",
            Action::Resume => "/api/v1/actions/resume",
        }
    }
}

/// Braiins OS+ `MinerStatus` plus hashrate → [`RigState`]:
/// 2 (normal) and hashing → `Mining`, 2 not hashing yet or 1 (not started) → `Waking`,
/// 3 (paused) / 4 (suspended) → `Sleeping` once hashrate is zero, `Stopping` before;
/// anything else → `Unknown`.
pub fn derive_state(status: Option<u64>, hashrate_ths: Option<f64>) -> RigState {
    let hashing = hashrate_ths.is_some_and(|h| h > 0.0);
    match status {
        Some(2) if hashing => RigState::Mining,
        Some(1) | Some(2) => RigState::Waking,
        Some(3) | Some(4) if hashing => RigState::Stopping,
        Some(3) | Some(4) => RigState::Sleeping,
        _ => RigState::Unknown,
    }
}

/// Braiins reports errors as {"message": ".."}.
const ERROR_KEYS: &[&str] = &["message"];

fn short(body: &[u8]) -> String {
    error_text(body, ERROR_KEYS)
}

fn rejected(endpoint: &Endpoint, command: &str, resp: &Response) -> FirmwareError {
    rejected_with(endpoint, command, resp, ERROR_KEYS)
}

/// The firmware's own words from an error body (its first 200 bytes): the first of `keys`
/// holding text, trimmed; else the raw text. Shared with the VNish adapter, whose bodies say
/// `{"err": ..}`.
pub(super) fn error_text(body: &[u8], keys: &[&str]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            keys.iter().find_map(|k| {
                v.get(*k)
                    .and_then(Value::as_str)
                    .map(|s| s.trim().to_owned())
            })
        })
        .unwrap_or_else(|| text.into_owned())
}

/// An HTTP status the firmware refused with, in its own words (`keys` as for
/// [`error_text`]); retryable as the status says.
pub(super) fn rejected_with(
    endpoint: &Endpoint,
    command: &str,
    resp: &Response,
    keys: &[&str],
) -> FirmwareError {
    FirmwareError::Rejected {
        addr: endpoint.addr,
        command: command.to_owned(),
        detail: format!("HTTP {}: {}", resp.status, error_text(&resp.body, keys)),
        retryable: crate::error::Retry::for_http_status(resp.status).is_retryable(),
    }
}

/// [`HttpError`] → [`FirmwareError`], keeping the step and the retry semantics (shared with
/// the VNish and Antminer adapters).
pub(super) fn firmware_error(addr: SocketAddr, command: String, e: HttpError) -> FirmwareError {
    match e {
        HttpError::Connect(source) => FirmwareError::Connect { addr, source },
        HttpError::Timeout { step, after } => FirmwareError::Timeout { addr, step, after },
        HttpError::Io(source) => FirmwareError::Io {
            addr,
            command,
            source,
        },
        HttpError::TooLarge { limit, .. } => FirmwareError::Malformed {
            addr,
            command,
            detail: format!("reply larger than {limit} bytes"),
        },
        other => FirmwareError::Malformed {
            addr,
            command,
            detail: other.to_string(),
        },
    }
}

/// One request to the rig's API, with this `Authorization` value if there is one (Braiins
/// OS+ takes the bare token; shared with the VNish adapter, which sends `Bearer <token>`).
pub(super) async fn send(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Bytes,
) -> Result<Response, FirmwareError> {
    let command = format!("{method} {path}");
    let host = endpoint.addr.to_string();
    let auth: Vec<(HeaderName, &str)> = authorization
        .map(|t| (AUTHORIZATION, t))
        .into_iter()
        .collect();
    let req = http_client::Request {
        method,
        host: &host,
        path,
        headers: &auth,
        body,
    };
    let limits = Limits {
        connect_timeout: client.timeouts.connect,
        request_timeout: client.timeouts.request,
        max_body: client.max_reply_bytes,
    };
    http_client::request(endpoint.addr, req, limits)
        .await
        .map_err(|e| firmware_error(endpoint.addr, command, e))
}

/// A reply body as JSON, or [`FirmwareError::Malformed`] (shared with the VNish adapter).
pub(super) fn json(
    endpoint: &Endpoint,
    command: &str,
    body: &[u8],
) -> Result<Value, FirmwareError> {
    serde_json::from_slice(body).map_err(|e| FirmwareError::Malformed {
        addr: endpoint.addr,
        command: command.to_owned(),
        detail: format!("not JSON: {e}"),
    })
}

async fn login(client: &FirmwareClient, endpoint: &Endpoint) -> Result<String, FirmwareError> {
    let body = serde_json::json!({
        "username": endpoint.credentials.user,
        "password": endpoint.credentials.password(),
    })
    .to_string();
    let path = "/api/v1/auth/login";
    let resp = send(client, endpoint, Method::POST, path, None, body.into()).await?;
    match resp.status {
        200..=299 => {}
        401 | 403 => {
            return Err(FirmwareError::LoginRefused {
                addr: endpoint.addr,
                detail: format!("HTTP {}: {}", resp.status, short(&resp.body)),
            });
        }
        _ => return Err(rejected(endpoint, "POST /api/v1/auth/login", &resp)),
    }
    let v = json(endpoint, "POST /api/v1/auth/login", &resp.body)?;
    match login_token(&v) {
        Some(t) => Ok(t.to_owned()),
        None => Err(FirmwareError::Malformed {
            addr: endpoint.addr,
            command: "POST /api/v1/auth/login".into(),
            detail: "no usable token".into(),
        }),
    }
}

/// Reads a login reply: its `token`, or `None` when there is no usable one. The token becomes
/// a header value, so one that is empty, longer than 4096 bytes or has anything but printable
/// ASCII is refused.
pub fn login_token(reply: &Value) -> Option<&str> {
    reply
        .get("token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 4096 && t.bytes().all(|b| b.is_ascii_graphic()))
}

/// An authenticated request, logging in again once if the token is refused.
async fn authed(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    token: &mut String,
) -> Result<Response, FirmwareError> {
    let command = format!("{method} {path}");
    for attempt in 0..2 {
        let resp = send(
            client,
            endpoint,
            method.clone(),
            path,
            Some(token),
            Bytes::new(),
        )
        .await?;
        match resp.status {
            200..=299 => return Ok(resp),
            401 if attempt == 0 => *token = login(client, endpoint).await?,
            401 => {
                return Err(FirmwareError::SessionExpired {
                    addr: endpoint.addr,
                    detail: format!("{command}: token refused right after login"),
                });
            }
            _ => return Err(rejected(endpoint, &command, &resp)),
        }
    }
    // Unreachable in practice (the loop returns on its second pass); a typed error is
    // cheaper than a panic path.
    Err(FirmwareError::SessionExpired {
        addr: endpoint.addr,
        detail: command,
    })
}

/// Pause or resume mining.
pub async fn action(
    client: &FirmwareClient,
    endpoint: &Endpoint,
    action: Action,
) -> Result<(), FirmwareError> {
    let mut token = login(client, endpoint).await?;
    authed(client, endpoint, Method::PUT, action.path(), &mut token).await?;
    Ok(())
}

/// State, power and hashrate from `miner/details` and `miner/stats`.
pub async fn status(
    client: &FirmwareClient,
    endpoint: &Endpoint,
) -> Result<RigStatus, FirmwareError> {
    let mut token = login(client, endpoint).await?;
    let details_path = "/api/v1/miner/details";
    let stats_path = "/api/v1/miner/stats";
    let details = authed(client, endpoint, Method::GET, details_path, &mut token).await?;
    let details = json(endpoint, details_path, &details.body)?;
    let stats = authed(client, endpoint, Method::GET, stats_path, &mut token).await?;
    let stats = json(endpoint, stats_path, &stats.body)?;
    Ok(status_from_replies(&details, &stats))
}

/// Reads the JSON replies to `miner/details` and `miner/stats` into a [`RigStatus`]: the
/// parsing half of [`status`]. Missing, non-numeric or non-finite fields read as unknown.
pub fn status_from_replies(details: &Value, stats: &Value) -> RigStatus {
    let finite = |v: Option<&Value>| v.and_then(Value::as_f64).filter(|x| x.is_finite());
    let power_w = finite(stats.pointer("/power_stats/approximated_consumption/watt"));
    let hashrate_ths =
        finite(stats.pointer("/miner_stats/real_hashrate/last_5s/gigahash_per_second"))
            .map(|ghs| ghs / 1000.0);
    let state = derive_state(details.get("status").and_then(Value::as_u64), hashrate_ths);
    RigStatus {
        state,
        power_w,
        hashrate_ths,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(derive_state(Some(2), Some(140.0)), RigState::Mining);
        assert_eq!(derive_state(Some(2), Some(0.0)), RigState::Waking);
        assert_eq!(derive_state(Some(1), None), RigState::Waking);
        assert_eq!(derive_state(Some(3), Some(0.0)), RigState::Sleeping);
        assert_eq!(derive_state(Some(4), None), RigState::Sleeping);
        assert_eq!(derive_state(Some(3), Some(50.0)), RigState::Stopping);
        assert_eq!(derive_state(Some(5), Some(0.0)), RigState::Unknown);
        assert_eq!(derive_state(None, Some(1.0)), RigState::Unknown);
    }

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    /// Replies captured from real machines (see tools/fixtures/firmware/braiins/sources.toml).
    #[test]
    fn captured_replies() {
        let cases = [
            (
                include_str!(
                    "../../../tools/fixtures/firmware/braiins/s19xp-25.07-miner-details.json"
                ),
                include_str!(
                    "../../../tools/fixtures/firmware/braiins/s19xp-25.07-miner-stats.json"
                ),
                3137.0,
                141.463_565_400_720_63,
            ),
            (
                include_str!(
                    "../../../tools/fixtures/firmware/braiins/s21pro-26.04-miner-details.json"
                ),
                include_str!(
                    "../../../tools/fixtures/firmware/braiins/s21pro-26.04-miner-stats.json"
                ),
                3480.0,
                248.186_677_200_024_98,
            ),
        ];
        for (details, stats, watts, ths) in cases {
            let s = status_from_replies(&fixture(details), &fixture(stats));
            assert_eq!(s.state, RigState::Mining);
            assert_eq!(s.power_w, Some(watts));
            let h = s.hashrate_ths.unwrap();
            assert!((h - ths).abs() < 1e-9, "{h} vs {ths}");
        }
        let login = fixture(include_str!(
            "../../../tools/fixtures/firmware/braiins/login.json"
        ));
        assert_eq!(login_token(&login), Some("PLACEHOLDERtoken0001"));
        let refused = include_bytes!("../../../tools/fixtures/firmware/braiins/login-refused.json");
        assert_eq!(
            login_token(&fixture(std::str::from_utf8(refused).unwrap())),
            None
        );
        assert_eq!(short(refused), "Invalid credentials");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(short(br#"{"message":"bad password"}"#), "bad password");
        assert_eq!(short(b"oops"), "oops");
        assert_eq!(short(&[0xff; 300]).chars().count(), 200);
    }

    #[test]
    fn replies() {
        use serde_json::json;
        assert_eq!(login_token(&json!({"token": "abc123"})), Some("abc123"));
        for bad in [
            json!(""),
            json!("a b"),
            json!("a\r\nX-Evil: 1"),
            json!("x".repeat(4097)),
        ] {
            assert_eq!(login_token(&json!({ "token": bad })), None, "{bad}");
        }
        // No paused rig was published: a captured reply with the paused figures put in.
        let mut details = fixture(include_str!(
            "../../../tools/fixtures/firmware/braiins/s19xp-25.07-miner-details.json"
        ));
        details["status"] = json!(3);
        let mut stats = fixture(include_str!(
            "../../../tools/fixtures/firmware/braiins/s19xp-25.07-miner-stats.json"
        ));
        stats["miner_stats"]["real_hashrate"]["last_5s"]["gigahash_per_second"] = json!(0.0);
        stats["power_stats"]["approximated_consumption"]["watt"] = json!(95);
        let s = status_from_replies(&details, &stats);
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Sleeping, Some(95.0), Some(0.0))
        );
        let s = status_from_replies(&json!(null), &json!({"power_stats": "x"}));
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Unknown, None, None)
        );
    }
}
