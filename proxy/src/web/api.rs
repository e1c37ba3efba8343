//! `/api`: the control plane over HTTP, for the grid operator's signal and for automation.
//!
//! | route | body | what |
//! |---|---|---|
//! | `GET /api/power` | | the power picture (as `ctl power`) |
//! | `GET /api/rigs` | | every rig (as `ctl rigs`) |
//! | `GET /api/pools` | | pools: state, miners, shares (as `ctl pools`) |
//! | `GET /api/events?limit=N` | | the audit log |
//! | `GET /api/power/history` | | the power chart: samples of mining, GPU and cap (kW) for the last hours |
//! | `GET /api/cluster` | | instances, the power leader, lease age, etcd health (as `ctl cluster`; `[cluster]` only) |
//! | `POST /api/drain` | `{"rig":..}` or `{"group":..}`, `"reason"` | drain rigs (as `ctl drain`) |
//! | `POST /api/resume` | `{"rig":..}` or `{"group":..}`, `"reason"` | resume them (as `ctl resume`) |
//! | `POST /api/curtail` | `{"kw":N,"until_unix":T}` or `{"kw":N,"minutes":M}`, `"reason"` | grid curtailment |
//! | `POST /api/curtail/clear` | `{"reason":..}` (optional) | end it |
//! | `POST /api/gpu-request` | `{"kw":N,"reason":..}` | GPU power wanted now |
//!
//! Answers are the admin socket's (`{"ok":true,"result":..}` / `{"ok":false,"error":..}`) with
//! HTTP 200, 400 (refused), 401 (no or wrong token) or 403 (no token configured). Every field
//! is range-checked as on the admin socket ([`crate::control::limits`]): e.g. `kw` within 10×
//! the site cap, a curtailment ending within 7 days, names ≤ 128 bytes, reasons ≤ 1024.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use crate::control::admin::protocol::{Command, Request, Response, Target};
use crate::control::admin::server::{Caller, Handler, Origin};
use crate::control::history::{KEEP, PowerSample, SAMPLE_EVERY};
use crate::control::limits;
use crate::time::unix_ms;

/// The routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/power", get(power))
        .route("/api/rigs", get(rigs))
        .route("/api/pools", get(pools))
        .route("/api/events", get(events))
        .route("/api/power/history", get(power_history))
        .route("/api/cluster", get(cluster))
        .route("/api/drain", post(drain))
        .route("/api/resume", post(resume))
        .route("/api/curtail", post(curtail))
        .route("/api/curtail/clear", post(curtail_clear))
        .route("/api/gpu-request", post(gpu_request))
}

type Answer = (StatusCode, Json<Response>);

async fn run(state: &AppState, peer: SocketAddr, command: Command, by: Option<String>) -> Answer {
    let caller = Caller {
        origin: Origin::Http { peer },
        claimed: by.clone(),
    };
    let r = state.plane.handle(Request { command, by }, caller).await;
    let status = if r.ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (status, Json(r))
}

/// Checks the bearer token (in constant time).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Answer> {
    let Some(token) = &state.token else {
        return Err((
            StatusCode::FORBIDDEN,
            Json(Response::error("changes over HTTP need [http] token_env")),
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(Response::error("missing or wrong bearer token")),
        ))
    }
}

async fn power(State(s): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Answer {
    run(&s, peer, Command::Power, None).await
}

async fn rigs(State(s): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Answer {
    run(&s, peer, Command::Rigs, None).await
}

async fn pools(State(s): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Answer {
    run(&s, peer, Command::Pools, None).await
}

async fn cluster(State(s): State<AppState>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Answer {
    run(&s, peer, Command::Cluster, None).await
}

/// The recorded samples, then one for now (so a chart has a point even right after start).
async fn power_history(State(s): State<AppState>) -> Answer {
    let Some(power) = s.plane.power() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(Response::error(
                "power control is not configured (no [power] section)",
            )),
        );
    };
    let mut samples = power.history().samples();
    let now = PowerSample::of(&power.view().snapshot, unix_ms());
    if samples.last().is_none_or(|l| l.at_unix_ms < now.at_unix_ms) {
        samples.push(now);
    }
    let result = serde_json::json!({
        "every_secs": SAMPLE_EVERY.as_secs(),
        "keep_secs": KEEP.as_secs(),
        "samples": samples,
    });
    (StatusCode::OK, Json(Response::ok(result)))
}

/// A drain or resume from the NOC page or automation: one rig or one group.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    #[serde(default)]
    rig: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// Parses a [`TargetBody`] into its target, reason and operator name, or the 400 message.
fn target_of(body: &[u8]) -> Result<(Target, Option<String>, Option<String>), String> {
    let b: TargetBody = parse_body(body)?;
    let target = match (b.rig, b.group) {
        (Some(r), None) if !r.is_empty() => Target::Rig(r),
        (None, Some(g)) if !g.is_empty() => Target::Group(g),
        _ => return Err("give one of \"rig\" or \"group\"".to_owned()),
    };
    Ok((target, b.reason, b.by))
}

/// The POST routes, whose JSON bodies [`request_from_body`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyRoute {
    /// `POST /api/drain`.
    Drain,
    /// `POST /api/resume`.
    Resume,
    /// `POST /api/curtail`.
    Curtail,
    /// `POST /api/curtail/clear`.
    CurtailClear,
    /// `POST /api/gpu-request`.
    GpuRequest,
}

/// Reads the body of a POST route into the control request it stands for: the API's parsing
/// entry point (the handlers check the token, call this, and hand the request to the control
/// plane, which range-checks it with [`limits::check_request`]). `now_unix` turns a
/// curtailment's `minutes` into its end.
///
/// # Errors
/// The message of the 400 answer: a malformed body, a missing or ambiguous field, or
/// `minutes` out of range.
pub fn request_from_body(route: BodyRoute, body: &[u8], now_unix: u64) -> Result<Request, String> {
    let (command, by) = match route {
        BodyRoute::Drain => {
            let (target, reason, by) = target_of(body)?;
            (Command::Drain { target, reason }, by)
        }
        BodyRoute::Resume => {
            let (target, reason, by) = target_of(body)?;
            (Command::Resume { target, reason }, by)
        }
        BodyRoute::Curtail => {
            let b: CurtailBody = parse_body(body)?;
            // `until_unix` is range-checked with the rest of the command by the control plane.
            let until_unix = match (b.until_unix, b.minutes) {
                (Some(t), None) => t,
                (None, Some(m)) => limits::minutes_to_until(m, now_unix)?,
                _ => return Err("give one of until_unix or minutes".to_owned()),
            };
            let command = Command::Curtail {
                kw: b.kw,
                until_unix,
                reason: b.reason,
            };
            (command, b.by.or(Some("grid-signal".to_owned())))
        }
        BodyRoute::CurtailClear => {
            // The body is optional.
            let b = if body.iter().all(u8::is_ascii_whitespace) {
                ReasonBody::default()
            } else {
                parse_body::<ReasonBody>(body)?
            };
            let by = b.by.or(Some("grid-signal".to_owned()));
            (Command::CurtailClear { reason: b.reason }, by)
        }
        BodyRoute::GpuRequest => {
            let b: GpuBody = parse_body(body)?;
            let command = Command::GpuRequest {
                kw: b.kw,
                reason: b.reason,
            };
            (command, b.by)
        }
    };
    Ok(Request { command, by })
}

/// A POST route: the token, then the body, then the control plane.
async fn post_body(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    route: BodyRoute,
    body: &[u8],
) -> Answer {
    if let Err(e) = authorize(state, headers) {
        return e;
    }
    match request_from_body(route, body, unix_ms() / 1000) {
        Ok(Request { command, by }) => run(state, peer, command, by).await,
        Err(e) => bad_request(e),
    }
}

async fn drain(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    post_body(&s, peer, &headers, BodyRoute::Drain, &body).await
}

async fn resume(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    post_body(&s, peer, &headers, BodyRoute::Resume, &body).await
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn events(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>,
) -> Answer {
    // A malformed query (`limit=-1`, `limit=99999999999999999999`) gets the JSON answer too.
    let limit = match q {
        Ok(Query(q)) => q.limit,
        Err(e) => return bad_request(format!("bad query: {e}")),
    };
    run(&s, peer, Command::Events { limit }, None).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CurtailBody {
    kw: f64,
    #[serde(default)]
    until_unix: Option<u64>,
    #[serde(default)]
    minutes: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// A 400 answer with `error`.
fn bad_request(error: String) -> Answer {
    (StatusCode::BAD_REQUEST, Json(Response::error(error)))
}

/// Parses a JSON body; a malformed one is a 400 with the `{"ok":false,..}` answer (axum's own
/// `Json` rejection would be plain text, and 422 for a wrong type).
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad body: {e}"))
}

async fn curtail(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    post_body(&s, peer, &headers, BodyRoute::Curtail, &body).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

async fn curtail_clear(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    post_body(&s, peer, &headers, BodyRoute::CurtailClear, &body).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuBody {
    kw: f64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

async fn gpu_request(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Answer {
    post_body(&s, peer, &headers, BodyRoute::GpuRequest, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn bodies_read_as_documented() {
        let read = |route, body: &str| request_from_body(route, body.as_bytes(), NOW);
        assert_eq!(
            read(BodyRoute::Curtail, r#"{"kw":800,"minutes":90}"#),
            Ok(Request {
                command: Command::Curtail {
                    kw: 800.0,
                    until_unix: NOW + 90 * 60,
                    reason: None
                },
                by: Some("grid-signal".into()),
            })
        );
        assert_eq!(
            read(
                BodyRoute::Drain,
                r#"{"group":"hall-a","reason":"GPU job","by":"noc"}"#
            ),
            Ok(Request {
                command: Command::Drain {
                    target: Target::Group("hall-a".into()),
                    reason: Some("GPU job".into())
                },
                by: Some("noc".into()),
            })
        );
        assert_eq!(
            read(BodyRoute::CurtailClear, " \n").map(|r| r.command),
            Ok(Command::CurtailClear { reason: None })
        );
        for (route, bad) in [
            (BodyRoute::Drain, "{}"),
            (BodyRoute::Resume, r#"{"rig":"a","group":"b"}"#),
            (BodyRoute::Resume, r#"{"rig":""}"#),
            (BodyRoute::Curtail, r#"{"kw":1,"until_unix":1,"minutes":1}"#),
            (BodyRoute::Curtail, r#"{"kw":1}"#),
            (BodyRoute::Curtail, r#"{"kw":1,"minutes":1e9}"#),
            (BodyRoute::GpuRequest, r#"{"kw":"lots"}"#),
            (BodyRoute::GpuRequest, r#"{"kw":1,"extra":1}"#),
        ] {
            assert!(read(route, bad).is_err(), "{route:?} {bad}");
        }
    }
}
