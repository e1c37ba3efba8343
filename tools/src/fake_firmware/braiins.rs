//! A fake Braiins OS+ rig: the REST API (HTTP/1.1, JSON) with token login and pause/resume.
//!
//! Routes: `POST /api/v1/auth/login` (`{"username","password"}` → `{"token","timeout_s"}`, 401
//! on bad credentials), `PUT /api/v1/actions/pause` and `/resume` (token in `Authorization`;
//! 401 without a valid one; idempotent like the real API), `GET /api/v1/miner/details`
//! (`status`: 2 normal, 3 paused, 1 not started while waking) and `GET /api/v1/miner/stats`
//! (power and hashrate). Replies close the connection; GETs use chunked encoding.
//!
//! Replies are the ones captured from an Antminer S19 XP on Braiins OS+ 25.07
//! (`tools/fixtures/firmware/braiins/`, see its `sources.toml`) used as templates: only the
//! fields that follow the simulated rig are patched (`status` in `miner/details`; every
//! `real_hashrate` window and `approximated_consumption.watt` in `miner/stats`; the token in
//! the login reply). A refused login answers the `login-refused.json` body.
//!
//! HTTP is `hyper`'s server (one request per connection, no keep-alive); this file holds only
//! the routes. The request head must arrive within [`READ_TIMEOUT`](super::READ_TIMEOUT), the body too, and a body
//! over 16 KiB is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::StatusCode;
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
use super::{Counters, Server, Tokens};
use hashshift_proxy::firmware::{Credentials, Endpoint, FirmwareKind};

/// A captured reply, parsed once. The files are checked JSON (the adapter's unit tests parse
/// them too); should one ever be broken, the fake answers `null` and those tests say why.
/// Shared with the VNish fake.
pub(super) fn template(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

static DETAILS: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/braiins/s19xp-25.07-miner-details.json"
    ))
});
static STATS: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/braiins/s19xp-25.07-miner-stats.json"
    ))
});
static LOGIN: LazyLock<Value> =
    LazyLock::new(|| template(include_str!("../../fixtures/firmware/braiins/login.json")));
static LOGIN_REFUSED: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/braiins/login-refused.json"
    ))
});

/// How a [`FakeBraiins`] behaves.
#[derive(Clone, Debug)]
pub struct FakeBraiinsConfig {
    /// The simulated rig.
    pub profile: RigProfile,
    /// Accepted login.
    pub credentials: Credentials,
}

impl Default for FakeBraiinsConfig {
    fn default() -> Self {
        FakeBraiinsConfig {
            profile: RigProfile {
                hashrate_ths: 140.0,
                mining_power_w: 3010.0,
                sleep_power_w: 15.0,
                ..RigProfile::default()
            },
            credentials: Credentials::new("root", "root"),
        }
    }
}

struct Inner {
    rig: RigModel,
    tokens: Tokens,
    counters: Counters,
}

type Shared = super::Shared<FakeBraiinsConfig, Inner>;

/// A fake Braiins OS+ rig listening on `127.0.0.1:<ephemeral>`.
pub struct FakeBraiins {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
}

impl FakeBraiins {
    /// Start a fake with this config.
    pub async fn start(config: FakeBraiinsConfig) -> std::io::Result<FakeBraiins> {
        let state = Inner {
            rig: RigModel::new(config.profile),
            tokens: Tokens::default(),
            counters: Counters::default(),
        };
        let (addr, shared, server) = super::listen(config, state, serve).await?;
        Ok(FakeBraiins {
            addr,
            shared,
            server,
        })
    }

    /// An [`Endpoint`] for this rig with the credentials it accepts.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(
            FirmwareKind::Braiins,
            self.addr,
            self.shared.config.credentials.clone(),
        )
    }

    /// Invalidate every token handed out so far (as a firmware restart does).
    pub fn expire_tokens(&self) {
        self.shared.lock().tokens.live.clear();
    }

    /// The next `n` tokens handed out are refused on first use.
    pub fn expire_next_tokens(&self, n: u32) {
        self.shared.lock().tokens.doom_next = n;
    }
}

fake_accessors!(FakeBraiins, "by `METHOD path`");

/// A reply body: `Content-Length` or chunked.
pub(super) type Body = BoxBody<Bytes, Infallible>;

async fn serve(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    super::serve_http(stream, move |req| {
        handle(req, shared.clone(), cancel.clone())
    })
    .await;
}

async fn handle(
    req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<hyper::Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let Some(body) = super::read_body(body).await else {
        return Ok(reply(
            400,
            json!({ "message": "bad body" }).to_string(),
            false,
        ));
    };
    if shared.faults.silent() {
        // Hang until the fake shuts down (its server drops this connection then).
        cancel.cancelled().await;
    }
    if shared.faults.malformed() {
        // A captured reply cut short, as a rig rebooting mid-reply sends.
        let whole = DETAILS.to_string();
        let cut = whole.get(..whole.len() / 2).unwrap_or("{").to_owned();
        return Ok(reply(200, cut, false));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let route = format!("{} {path}", parts.method);
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (status, body, chunked) = answer(&shared, &route, authorization, &body);
    Ok(reply(status, body.to_string(), chunked))
}

/// A JSON reply; `chunked` sends the body in two chunks (as embedded web servers do for
/// generated replies), to exercise the client's de-chunking. Shared with the VNish fake.
pub(super) fn reply(status: u16, body: impl Into<Bytes>, chunked: bool) -> hyper::Response<Body> {
    let bytes: Bytes = body.into();
    let body = if chunked {
        let (a, b) = bytes.split_at(bytes.len() / 2);
        let frames = [a, b]
            .into_iter()
            .filter(|part| !part.is_empty())
            .map(|part| Ok(Frame::data(bytes.slice_ref(part))));
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = frames.collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed()
    } else {
        Full::new(bytes).boxed()
    };
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn unauthorized() -> (u16, Value, bool) {
    (401, json!({ "message": "Unauthorized" }), false)
}

/// Status, JSON body and whether to chunk it, for `route` (`METHOD path`).
fn answer(
    shared: &Shared,
    route: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, Value, bool) {
    let now = Instant::now();
    let mut inner = shared.lock();
    let known = matches!(
        route,
        "POST /api/v1/auth/login"
            | "PUT /api/v1/actions/pause"
            | "PUT /api/v1/actions/resume"
            | "GET /api/v1/miner/details"
            | "GET /api/v1/miner/stats"
    );
    inner.counters.bump(if known { route } else { "<other>" });
    if route == "POST /api/v1/auth/login" {
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return (400, json!({ "message": "invalid JSON" }), false);
        };
        let creds = &shared.config.credentials;
        if body.get("username").and_then(Value::as_str) != Some(creds.user.as_str())
            || body.get("password").and_then(Value::as_str) != Some(creds.password())
        {
            return (401, LOGIN_REFUSED.clone(), false);
        }
        let token = inner.tokens.issue("tok", 16);
        let mut body = LOGIN.clone();
        body["token"] = json!(token);
        return (200, body, false);
    }
    if !known {
        return (404, json!({ "message": "Not found" }), false);
    }
    if !inner.tokens.accepts(authorization) {
        return unauthorized();
    }
    match route {
        "PUT /api/v1/actions/pause" => {
            if !shared.faults.stuck() {
                inner.rig.sleep(now);
            }
            (200, json!({}), false)
        }
        "PUT /api/v1/actions/resume" => {
            if !shared.faults.stuck() {
                inner.rig.wake(now);
            }
            (200, json!({}), false)
        }
        "GET /api/v1/miner/details" => {
            let snap = inner.rig.snapshot(now);
            let status = match snap.phase {
                FakePhase::Mining => 2,
                FakePhase::Stopping | FakePhase::Sleeping => 3,
                FakePhase::Waking => 1,
            };
            let mut body = DETAILS.clone();
            body["status"] = json!(status);
            (200, body, true)
        }
        _ => {
            let snap = inner.rig.snapshot(now);
            (200, stats(snap), true)
        }
    }
}

/// The captured `miner/stats` reply with the simulated rig's hashrate in every
/// `real_hashrate` window and its power.
fn stats(snap: RigSnapshot) -> Value {
    let ghs = snap.hashrate_ths * 1000.0;
    let mut body = STATS.clone();
    if let Some(windows) = body
        .pointer_mut("/miner_stats/real_hashrate")
        .and_then(Value::as_object_mut)
    {
        for window in windows.values_mut() {
            window["gigahash_per_second"] = json!(ghs);
        }
    }
    body["power_stats"]["approximated_consumption"]["watt"] = json!(snap.power_w.round() as i64);
    body
}
