//! A fake VNish rig: the web API (HTTP/1.1, JSON) with password unlock and mining stop/start.
//!
//! Routes: `POST /api/v1/unlock` (`{"pw"}` → `{"token"}`, 403 `{"unlock_timeout":null}` on a
//! wrong password), `POST /api/v1/mining/stop` and `/start` (`Authorization: Bearer <token>`;
//! 401 without a valid one; 200 with an empty body; a stop while already stopping or stopped,
//! or a start while already mining or starting, answers 500 with the firmware's
//! `{"err":"CGMiner err: ..."}` as real rigs do) and `GET /api/v1/summary` (public unless
//! [`FakeVnish::set_summary_locked`]: state, power and hashrate). Unknown routes: 404.
//!
//! Replies are the ones captured from real rigs (`tools/fixtures/firmware/vnish/`, see its
//! `sources.toml`) used as templates: the summary is an Antminer S19j Pro's on VNish
//! 1.2.0-rc3 with only `miner_status.miner_state`, the hashrates (`hr_realtime`,
//! `hr_average` in GH/s, `instant_hashrate`, `average_hashrate` in TH/s) and the power
//! (`power_consumption`, `power_usage`) patched to the simulated rig; the unlock reply gets a
//! fresh token; error replies are the captured ones as they are. Phases read as VNish states:
//! mining → `mining`, stopping → `shutting-down`, asleep → `stopped`, waking → `starting`.
//!
//! HTTP is `hyper`'s server (one request per connection, no keep-alive) like the Braiins OS+
//! fake; the request head and body must arrive within [`READ_TIMEOUT`](super::READ_TIMEOUT), a body over 16 KiB is
//! refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::braiins::{Body, reply, template};
use super::rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
use super::{Counters, Server, Tokens};
use hashshift_proxy::firmware::{Credentials, Endpoint, FirmwareKind};

static SUMMARY: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/vnish/s19jpro-summary-mining.json"
    ))
});
static UNLOCK: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/vnish/s19-unlock.json"
    ))
});
static WRONG_PASSWORD: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/vnish/unlock-wrong-password.json"
    ))
});
static STOP_REFUSED: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/vnish/s19-stop-error.json"
    ))
});
static START_REFUSED: LazyLock<Value> = LazyLock::new(|| {
    template(include_str!(
        "../../fixtures/firmware/vnish/s19-start-error.json"
    ))
});
static BUSY: LazyLock<Value> =
    LazyLock::new(|| template(include_str!("../../fixtures/firmware/vnish/busy-500.json")));

/// How a [`FakeVnish`] behaves.
#[derive(Clone, Debug)]
pub struct FakeVnishConfig {
    /// The simulated rig.
    pub profile: RigProfile,
    /// Accepted password (VNish has no user name; `user` is ignored).
    pub credentials: Credentials,
}

impl Default for FakeVnishConfig {
    /// The captured S19j Pro: 54.5 TH/s at 2,631 W; 18 W stopped.
    fn default() -> Self {
        FakeVnishConfig {
            profile: RigProfile {
                hashrate_ths: 54.5,
                mining_power_w: 2631.0,
                sleep_power_w: 18.0,
                ..RigProfile::default()
            },
            credentials: Credentials::new("", "admin"),
        }
    }
}

struct Inner {
    rig: RigModel,
    tokens: Tokens,
    busy: bool,
    summary_locked: bool,
    counters: Counters,
}

type Shared = super::Shared<FakeVnishConfig, Inner>;

/// A fake VNish rig listening on `127.0.0.1:<ephemeral>`.
pub struct FakeVnish {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
}

impl FakeVnish {
    /// Start a fake with this config.
    pub async fn start(config: FakeVnishConfig) -> std::io::Result<FakeVnish> {
        let state = Inner {
            rig: RigModel::new(config.profile),
            tokens: Tokens::default(),
            busy: false,
            summary_locked: false,
            counters: Counters::default(),
        };
        let (addr, shared, server) = super::listen(config, state, serve).await?;
        Ok(FakeVnish {
            addr,
            shared,
            server,
        })
    }

    /// An [`Endpoint`] for this rig with the password it accepts.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(
            FirmwareKind::Vnish,
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

    /// Answer every request with HTTP 500 and the firmware's `{"err":..}` body (a rig
    /// restarting its web service, or overloaded).
    pub fn set_busy(&self, on: bool) {
        self.shared.lock().busy = on;
    }

    /// Require the token for `GET /api/v1/summary` too (401 without one), as a site that
    /// restricted its API may.
    pub fn set_summary_locked(&self, on: bool) {
        self.shared.lock().summary_locked = on;
    }
}

fake_accessors!(FakeVnish, "by `METHOD path` (`<other>` for unknown routes)");

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
        return Ok(reply(400, json!({ "err": "bad body" }).to_string(), false));
    };
    if shared.faults.silent() {
        shared.faults.hit();
        // Hang until the fake shuts down (its server drops this connection then).
        cancel.cancelled().await;
    }
    if shared.faults.malformed() {
        shared.faults.hit();
        // A captured reply cut short, as a rig rebooting mid-reply sends.
        let whole = SUMMARY.to_string();
        let cut = whole.get(..whole.len() / 2).unwrap_or("{").to_owned();
        return Ok(reply(200, cut, false));
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let route = format!("{} {path}", parts.method);
    let bearer = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let (status, body, chunked) = answer(&shared, &route, bearer, &body);
    let body = match body {
        Some(v) => v.to_string(),
        None => String::new(),
    };
    Ok(reply(status, body, chunked))
}

/// Status, JSON body (`None`: empty, as VNish answers a successful command) and whether to
/// chunk it, for `route` (`METHOD path`).
fn answer(
    shared: &Shared,
    route: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> (u16, Option<Value>, bool) {
    let now = Instant::now();
    let mut inner = shared.lock();
    let known = matches!(
        route,
        "POST /api/v1/unlock"
            | "POST /api/v1/mining/stop"
            | "POST /api/v1/mining/start"
            | "GET /api/v1/summary"
    );
    inner.counters.bump(if known { route } else { "<other>" });
    if inner.busy {
        return (500, Some(BUSY.clone()), false);
    }
    if !known {
        return (404, Some(json!({ "err": "Not found" })), false);
    }
    match route {
        "POST /api/v1/unlock" => {
            let Ok(body) = serde_json::from_slice::<Value>(body) else {
                return (400, Some(json!({ "err": "invalid JSON" })), false);
            };
            if body.get("pw").and_then(Value::as_str) != Some(shared.config.credentials.password())
            {
                return (403, Some(WRONG_PASSWORD.clone()), false);
            }
            // 32 characters like the firmware's tokens.
            let token = inner.tokens.issue("vn", 30);
            let mut reply = UNLOCK.clone();
            reply["token"] = json!(token);
            (200, Some(reply), false)
        }
        "GET /api/v1/summary" => {
            let allowed = inner.tokens.accepts(bearer);
            if inner.summary_locked && !allowed {
                return (401, None, false);
            }
            let snap = inner.rig.snapshot(now);
            (200, Some(summary(snap)), true)
        }
        command => {
            if !inner.tokens.accepts(bearer) {
                return (401, None, false);
            }
            let stop = command == "POST /api/v1/mining/stop";
            if shared.faults.stuck() {
                shared.faults.hit();
                return (200, None, false);
            }
            let changed = if stop {
                inner.rig.sleep(now)
            } else {
                inner.rig.wake(now)
            };
            match (changed, stop) {
                (true, _) => (200, None, false),
                (false, true) => (500, Some(STOP_REFUSED.clone()), false),
                (false, false) => (500, Some(START_REFUSED.clone()), false),
            }
        }
    }
}

/// The captured summary with the simulated rig's state, hashrate and power.
fn summary(snap: RigSnapshot) -> Value {
    let state = match snap.phase {
        FakePhase::Mining => "mining",
        FakePhase::Stopping => "shutting-down",
        FakePhase::Sleeping => "stopped",
        FakePhase::Waking => "starting",
    };
    let ghs = snap.hashrate_ths * 1000.0;
    let watts = snap.power_w.round() as i64;
    let mut body = SUMMARY.clone();
    if let Some(miner) = body.get_mut("miner").and_then(Value::as_object_mut) {
        if let Some(status) = miner.get_mut("miner_status").and_then(Value::as_object_mut) {
            status.insert("miner_state".into(), json!(state));
        }
        for (key, value) in [
            ("hr_realtime", json!(ghs)),
            ("hr_average", json!(ghs)),
            ("instant_hashrate", json!(snap.hashrate_ths)),
            ("average_hashrate", json!(snap.hashrate_ths)),
            ("power_consumption", json!(watts)),
            ("power_usage", json!(watts)),
        ] {
            miner.insert(key.into(), value);
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hashshift_proxy::firmware::{FirmwareClient, FirmwareError, RigState, RigStatus, Timeouts};

    use super::*;

    fn quick() -> FakeVnishConfig {
        FakeVnishConfig {
            profile: RigProfile {
                sleep_delay: Duration::from_millis(200),
                wake_delay: Duration::from_millis(300),
                ..FakeVnishConfig::default().profile
            },
            ..FakeVnishConfig::default()
        }
    }

    fn client() -> FirmwareClient {
        FirmwareClient::new(Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(2),
        })
    }

    /// Polls status until it reads `want`, for at most 5 s.
    async fn wait_for(
        c: &FirmwareClient,
        ep: &Endpoint,
        want: RigState,
    ) -> Result<RigStatus, FirmwareError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = c.status(ep).await?;
            if s.state == want {
                return Ok(s);
            }
            assert!(Instant::now() < deadline, "never reached {want:?}: {s:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Runs a test future with an overall bound, so a hang fails instead of blocking CI.
    async fn bounded<F: std::future::Future<Output = Result<(), FirmwareError>>>(
        f: F,
    ) -> Result<(), FirmwareError> {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test took over 20 s")
    }

    #[tokio::test]
    async fn stop_confirm_and_start() -> Result<(), FirmwareError> {
        bounded(async {
            let fake = FakeVnish::start(quick()).await.expect("fake starts");
            let (c, ep) = (client(), fake.endpoint());
            let s = c.status(&ep).await?;
            assert_eq!(
                (s.state, s.power_w, s.hashrate_ths),
                (RigState::Mining, Some(2631.0), Some(54.5))
            );

            let t0 = Instant::now();
            c.sleep(&ep).await?;
            assert_eq!(c.status(&ep).await?.state, RigState::Stopping);
            let s = wait_for(&c, &ep, RigState::Sleeping).await?;
            assert!(t0.elapsed() >= Duration::from_millis(200));
            assert_eq!((s.power_w, s.hashrate_ths), (Some(18.0), Some(0.0)));
            // Stopping a stopped rig: the firmware answers 500, the adapter sees it is done.
            c.sleep(&ep).await?;

            c.wake(&ep).await?;
            assert_eq!(c.status(&ep).await?.state, RigState::Waking);
            c.wake(&ep).await?;
            wait_for(&c, &ep, RigState::Mining).await?;
            let n = fake.counters();
            assert_eq!(n.get("POST /api/v1/mining/stop"), 2);
            assert_eq!(n.get("POST /api/v1/mining/start"), 2);
            assert_eq!(n.get("POST /api/v1/unlock"), 4);
            assert_eq!(n.get("<other>"), 0);
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn expired_tokens_are_renewed_once_then_reported() -> Result<(), FirmwareError> {
        bounded(async {
            let fake = FakeVnish::start(quick()).await.expect("fake starts");
            let (c, ep) = (client(), fake.endpoint());
            fake.expire_tokens();
            fake.expire_next_tokens(1);
            c.sleep(&ep).await?;
            assert_eq!(fake.counters().get("POST /api/v1/unlock"), 2);
            assert_eq!(fake.phase(), FakePhase::Stopping);

            fake.expire_next_tokens(2);
            let err = c.wake(&ep).await.expect_err("both tokens refused");
            assert!(matches!(err, FirmwareError::SessionExpired { .. }), "{err}");
            assert!(err.is_retryable());
            assert_eq!(fake.phase(), FakePhase::Stopping);
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn wrong_password_is_refused_for_good() -> Result<(), FirmwareError> {
        bounded(async {
            let fake = FakeVnish::start(quick()).await.expect("fake starts");
            let c = client();
            let mut wrong = fake.endpoint();
            wrong.credentials = Credentials::new("", "nope");
            for result in [c.sleep(&wrong).await, c.wake(&wrong).await] {
                let err = result.expect_err("bad password");
                assert!(matches!(err, FirmwareError::LoginRefused { .. }), "{err}");
                assert!(!err.is_retryable());
            }
            assert_eq!(fake.phase(), FakePhase::Mining);
            // The summary needs no password...
            assert_eq!(c.status(&wrong).await?.state, RigState::Mining);
            // ...unless the site locked it: then the adapter unlocks, and a wrong password
            // is refused there too.
            fake.set_summary_locked(true);
            let err = c.status(&wrong).await.expect_err("locked summary");
            assert!(matches!(err, FirmwareError::LoginRefused { .. }), "{err}");
            let before = fake.counters().get("POST /api/v1/unlock");
            let s = c.status(&fake.endpoint()).await?;
            assert_eq!((s.state, s.power_w), (RigState::Mining, Some(2631.0)));
            assert_eq!(fake.counters().get("POST /api/v1/unlock"), before + 1);
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn malformed_busy_and_stuck_rigs_are_never_asleep() -> Result<(), FirmwareError> {
        bounded(async {
            let fake = FakeVnish::start(quick()).await.expect("fake starts");
            let (c, ep) = (client(), fake.endpoint());

            fake.set_malformed(true);
            for err in [
                c.status(&ep).await.expect_err("malformed summary"),
                c.sleep(&ep).await.expect_err("malformed unlock"),
            ] {
                assert!(matches!(err, FirmwareError::Malformed { .. }), "{err}");
                assert!(err.is_retryable());
            }
            fake.set_malformed(false);
            assert_eq!(fake.phase(), FakePhase::Mining);

            fake.set_busy(true);
            for err in [
                c.status(&ep).await.expect_err("busy summary"),
                c.sleep(&ep).await.expect_err("busy unlock"),
            ] {
                assert!(
                    matches!(
                        err,
                        FirmwareError::Rejected {
                            retryable: true,
                            ..
                        }
                    ),
                    "{err}"
                );
            }
            fake.set_busy(false);

            fake.set_stuck(true);
            c.sleep(&ep).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(c.status(&ep).await?.state, RigState::Mining);
            Ok(())
        })
        .await
    }

    #[tokio::test]
    async fn a_silent_rig_times_out_within_bounds() -> Result<(), FirmwareError> {
        bounded(async {
            let fake = FakeVnish::start(quick()).await.expect("fake starts");
            let c = FirmwareClient::new(Timeouts {
                connect: Duration::from_millis(500),
                request: Duration::from_millis(300),
            });
            fake.set_silent(true);
            let ep = fake.endpoint();
            for step in 0..2 {
                let started = Instant::now();
                let result = if step == 0 {
                    c.sleep(&ep).await
                } else {
                    c.status(&ep).await.map(|_| ())
                };
                let err = result.expect_err("silent rig");
                assert!(
                    matches!(
                        err,
                        FirmwareError::Timeout {
                            step: "request",
                            ..
                        }
                    ),
                    "{err}"
                );
                assert!(err.is_retryable());
                assert!(started.elapsed() < Duration::from_secs(5));
            }
            fake.shutdown().await;
            Ok(())
        })
        .await
    }
}
