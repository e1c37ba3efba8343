//! A fake stock Antminer rig: the web API on HTTP/1.1 with Digest auth, the miner-mode config
//! and the stats, answering with replies captured from real machines.
//!
//! Routes (all behind HTTP Digest, realm "antMiner Configuration", MD5, `qop=auth`; a request
//! without a valid answer gets 401 and a fresh challenge, `stale=true` when only its nonce had
//! expired):
//! - `GET /cgi-bin/get_miner_conf.cgi`: the config, from the captured X19 reply
//!   (`x19-get_miner_conf.json`), with the two leading newlines the CGI prints;
//!   `bitmain-work-mode` follows the last accepted write.
//! - `POST /cgi-bin/set_miner_conf.cgi`: a JSON config like the stock web page posts. It is
//!   checked (pools ≤ 3 of url/user/pass strings, a known mode); a bad one gets the firmware's
//!   `{"stats":"error",...}`, a good one is stored (pools included: a write without pools
//!   leaves the rig with none, as on a real rig), the mode is applied to the simulated rig and
//!   the miner process "restarts" for [`FakeAntminerConfig::restart`].
//! - `GET /cgi-bin/stats.cgi` / `summary.cgi`: the captured S19Pro+ stats and S19j summary,
//!   with only `rate_5s` (GH/s), `miner-mode` and, when [`FakeAntminerConfig::power_in_stats`]
//!   is on, a Hiveon-style `chain_power` patched in from the simulated rig. During a restart
//!   they answer as [`AntminerRestartReply`] says.
//!
//! HTTP is `hyper`'s server, one request per connection, like the other fakes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
use super::{Counters, Server};
use hashshift_proxy::firmware::antminer::{Mode, digest};
use hashshift_proxy::firmware::{Credentials, Endpoint, FirmwareKind};

/// The Digest realm of stock Antminer web servers.
pub const ANTMINER_REALM: &str = "antMiner Configuration";

const STATS_TEMPLATE: &str = include_str!("../../fixtures/firmware/antminer/s19proplus-stats.json");
const SUMMARY_TEMPLATE: &str = include_str!("../../fixtures/firmware/antminer/s19j-summary.json");
const CONF_TEMPLATE: &str =
    include_str!("../../fixtures/firmware/antminer/x19-get_miner_conf.json");
const SET_OK: &str = include_str!("../../fixtures/firmware/antminer/set_miner_conf-ok.json");
const SET_ERROR: &str = include_str!("../../fixtures/firmware/antminer/set_miner_conf-error.json");

/// Live nonces remembered (older ones turn stale).
const MAX_NONCES: usize = 256;

/// How the stats answer while the miner process restarts after a config write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AntminerRestartReply {
    /// HTTP 503 (the web server up, the CGI failing).
    Unavailable,
    /// HTTP 200 with an empty body (the CGI could not reach the miner and printed nothing).
    Empty,
}

/// How a [`FakeAntminer`] behaves.
#[derive(Clone, Debug)]
pub struct FakeAntminerConfig {
    /// The simulated rig.
    pub profile: RigProfile,
    /// Accepted Digest login (stock default root/root).
    pub credentials: Credentials,
    /// How long the miner process restarts after an accepted config write.
    pub restart: Duration,
    /// What the stats answer during that restart.
    pub restart_reply: AntminerRestartReply,
    /// Report `chain_power` ("3250 W") in the stats, as Hiveon and newer stock firmware do.
    /// Off by default: the captured stock S19Pro+ stats have no power field.
    pub power_in_stats: bool,
}

impl Default for FakeAntminerConfig {
    fn default() -> Self {
        FakeAntminerConfig {
            profile: RigProfile::default(),
            credentials: Credentials::new("root", "root"),
            restart: Duration::from_millis(300),
            restart_reply: AntminerRestartReply::Unavailable,
            power_in_stats: false,
        }
    }
}

struct Inner {
    rig: RigModel,
    conf: Value,
    nonces: VecDeque<String>,
    next_nonce: u64,
    doom_next: u32,
    restart_until: Option<Instant>,
    counters: Counters,
}

type Shared = super::Shared<FakeAntminerConfig, Inner>;

/// A fake stock Antminer listening on `127.0.0.1:<ephemeral>`.
pub struct FakeAntminer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
}

impl FakeAntminer {
    /// Start a fake with this config.
    pub async fn start(config: FakeAntminerConfig) -> std::io::Result<FakeAntminer> {
        let conf = serde_json::from_str(CONF_TEMPLATE).map_err(std::io::Error::other)?;
        let state = Inner {
            rig: RigModel::new(config.profile),
            conf,
            nonces: VecDeque::new(),
            next_nonce: 1,
            doom_next: 0,
            restart_until: None,
            counters: Counters::default(),
        };
        let (addr, shared, server) = super::listen(config, state, serve).await?;
        Ok(FakeAntminer {
            addr,
            shared,
            server,
        })
    }

    /// An [`Endpoint`] for this rig with the credentials it accepts.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(
            FirmwareKind::Antminer,
            self.addr,
            self.shared.config.credentials.clone(),
        )
    }

    /// The stored miner config (what `get_miner_conf.cgi` answers).
    pub fn miner_conf(&self) -> Value {
        self.shared.lock().conf.clone()
    }

    /// Whether the miner process is restarting after a config write.
    pub fn restarting(&self) -> bool {
        let inner = self.shared.lock();
        inner.restart_until.is_some_and(|t| Instant::now() < t)
    }

    /// Forget every nonce handed out: the next answer to one gets 401 `stale=true`.
    pub fn expire_nonces(&self) {
        self.shared.lock().nonces.clear();
    }

    /// The next `n` nonces handed out are stale on first use.
    pub fn expire_next_nonces(&self, n: u32) {
        self.shared.lock().doom_next = n;
    }
}

fake_accessors!(
    FakeAntminer,
    "by `METHOD path` (`401` counts challenges sent)",
    fault_hits
);

async fn serve(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    super::serve_http(stream, move |req| {
        handle(req, shared.clone(), cancel.clone())
    })
    .await;
}

type Reply = hyper::Response<Full<Bytes>>;

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let mut resp = hyper::Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

async fn handle(
    req: hyper::Request<Incoming>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> Result<Reply, Infallible> {
    let (parts, body) = req.into_parts();
    let Some(body) = super::read_body(body).await else {
        return Ok(reply(400, "bad body"));
    };
    if shared.faults.silent() {
        shared.faults.hit();
        cancel.cancelled().await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let authorization = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Ok(answer(
        &shared,
        parts.method.as_str(),
        path,
        authorization,
        &body,
    ))
}

/// Checks the Digest answer: `Ok` when valid, else the challenge's `stale` flag.
fn check_auth(
    shared: &Shared,
    inner: &Inner,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<(), bool> {
    let creds = authorization
        .and_then(digest::parse_authorization)
        .ok_or(false)?;
    let want = &shared.config.credentials;
    if creds.username != want.user || creds.realm != ANTMINER_REALM || creds.uri != path {
        return Err(false);
    }
    let expected = digest::expected_response(&creds, want.password(), method).ok_or(false)?;
    if expected != creds.response {
        return Err(false);
    }
    // A right answer to a nonce we no longer hold: stale, answer the new one.
    if !inner.nonces.contains(&creds.nonce) {
        return Err(true);
    }
    Ok(())
}

fn challenge(inner: &mut Inner, stale: bool) -> Reply {
    let nonce = format!(
        "{:016x}{:08x}",
        inner.next_nonce.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        rand::random::<u32>()
    );
    inner.next_nonce += 1;
    if inner.doom_next > 0 {
        inner.doom_next -= 1;
    } else {
        if inner.nonces.len() >= MAX_NONCES {
            inner.nonces.pop_front();
        }
        inner.nonces.push_back(nonce.clone());
    }
    inner.counters.bump("401");
    let mut value = format!(
        "Digest realm=\"{ANTMINER_REALM}\", charset=\"UTF-8\", algorithm=MD5, nonce=\"{nonce}\", qop=\"auth\""
    );
    if stale {
        value.push_str(", stale=true");
    }
    let mut resp = reply(
        401,
        "<html><head><title>401 Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>",
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    resp
}

fn answer(
    shared: &Shared,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Reply {
    use hashshift_proxy::firmware::antminer::{GET_CONF, SET_CONF, STATS, SUMMARY};
    let now = Instant::now();
    let mut inner = shared.lock();
    let route = format!("{method} {path}");
    let known = [
        format!("GET {GET_CONF}"),
        format!("POST {SET_CONF}"),
        format!("GET {STATS}"),
        format!("GET {SUMMARY}"),
    ]
    .contains(&route);
    inner
        .counters
        .bump(if known { route.as_str() } else { "<other>" });
    if let Err(stale) = check_auth(shared, &inner, method, path, authorization) {
        return challenge(&mut inner, stale);
    }
    if !known {
        return reply(404, "404 Not Found");
    }
    if shared.faults.malformed() {
        shared.faults.hit();
        return reply(200, "{\"STATS\": [{\"rate_5s\": 12");
    }
    let restarting = inner.restart_until.is_some_and(|t| now < t);
    if route == format!("GET {GET_CONF}") {
        let text = serde_json::to_string_pretty(&inner.conf).unwrap_or_default();
        return reply(200, format!("\n\n{text}\n"));
    }
    if route == format!("POST {SET_CONF}") {
        let Some((conf, mode)) = accept_conf(&inner.conf, body) else {
            return reply(200, SET_ERROR);
        };
        inner.conf = conf;
        if !shared.faults.stuck() {
            match mode {
                Mode::Sleep => inner.rig.sleep(now),
                _ => inner.rig.wake(now),
            };
        }
        inner.restart_until = Some(now + shared.config.restart);
        return reply(200, SET_OK);
    }
    if restarting {
        return match shared.config.restart_reply {
            AntminerRestartReply::Unavailable => reply(503, "503 Service Unavailable"),
            AntminerRestartReply::Empty => reply(200, ""),
        };
    }
    let snap = inner.rig.snapshot(now);
    let mode = hashshift_proxy::firmware::antminer::config_mode(&inner.conf);
    let (template, list) = if route == format!("GET {STATS}") {
        (STATS_TEMPLATE, "STATS")
    } else {
        (SUMMARY_TEMPLATE, "SUMMARY")
    };
    let mut v: Value = serde_json::from_str(template).unwrap_or(Value::Null);
    if let Some(row) = v
        .get_mut(list)
        .and_then(|l| l.get_mut(0))
        .and_then(Value::as_object_mut)
    {
        let ghs = (snap.hashrate_ths * 1000.0 * 100.0).round() / 100.0;
        row.insert("rate_5s".into(), json!(ghs));
        if let (Some(m), Some(slot)) = (mode, row.get_mut("miner-mode")) {
            *slot = json!(m.code());
        }
        if shared.config.power_in_stats {
            let w = format!("{} W", snap.power_w.round() as i64);
            row.insert("chain_power".into(), json!(w));
        }
    }
    reply(200, v.to_string())
}

/// Checks a posted config like the firmware does and merges it into `current`: the new
/// stored config and its mode, or `None` (the firmware's error reply).
fn accept_conf(current: &Value, body: &[u8]) -> Option<(Value, Mode)> {
    let posted: Value = serde_json::from_slice(body).ok()?;
    let posted = posted.as_object()?;
    let mode = posted
        .get("miner-mode")
        .or_else(|| posted.get("bitmain-work-mode"))
        .and_then(Mode::from_value)?;
    let pools = match posted.get("pools") {
        None => Vec::new(),
        Some(p) => {
            let pools = p.as_array()?;
            if pools.len() > 3 {
                return None;
            }
            for pool in pools {
                for key in ["url", "user", "pass"] {
                    pool.get(key)?.as_str()?;
                }
            }
            pools.clone()
        }
    };
    let mut conf = current.clone();
    let obj = conf.as_object_mut()?;
    obj.insert("pools".into(), Value::Array(pools));
    if let Some(v) = posted.get("bitmain-fan-ctrl") {
        obj.insert("bitmain-fan-ctrl".into(), Value::Bool(v.as_bool()?));
    }
    if let Some(v) = posted.get("bitmain-fan-pwm") {
        obj.insert(
            "bitmain-fan-pwm".into(),
            Value::String(v.as_str()?.to_owned()),
        );
    }
    if let Some(v) = posted.get("freq-level") {
        obj.insert(
            "bitmain-freq-level".into(),
            Value::String(v.as_str()?.to_owned()),
        );
    }
    // Stored as the firmware stores it: a string.
    obj.insert(
        "bitmain-work-mode".into(),
        Value::String(mode.code().to_string()),
    );
    Some((conf, mode))
}

#[cfg(test)]
mod tests {
    //! The real adapter (`FirmwareClient` with `FirmwareKind::Antminer`) against this fake
    //! over 127.0.0.1.

    use super::*;
    use hashshift_proxy::firmware::{FirmwareClient, FirmwareError, RigState, RigStatus, Timeouts};
    use hashshift_proxy::http_client;

    fn client() -> FirmwareClient {
        FirmwareClient::new(Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(2),
        })
    }

    fn quick() -> FakeAntminerConfig {
        FakeAntminerConfig {
            profile: RigProfile {
                sleep_delay: Duration::from_millis(150),
                wake_delay: Duration::from_millis(300),
                ..RigProfile::default()
            },
            restart: Duration::from_millis(200),
            ..FakeAntminerConfig::default()
        }
    }

    /// Polls status until `want`, tolerating retryable errors (the restart window); ~5 s.
    async fn wait_for(c: &FirmwareClient, ep: &Endpoint, want: RigState) -> RigStatus {
        let mut last = None;
        for _ in 0..100 {
            match c.status(ep).await {
                Ok(s) if s.state == want => return s,
                Ok(s) => last = Some(format!("{s:?}")),
                Err(e) if e.is_retryable() => last = Some(e.to_string()),
                Err(e) => panic!("non-retryable error while waiting for {want:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never reached {want:?}; last {last:?}")
    }

    #[tokio::test]
    async fn sleep_confirm_wake_and_idempotence() {
        let fake = FakeAntminer::start(quick()).await.expect("start");
        let (c, ep) = (client(), fake.endpoint());
        let pools_before = fake.miner_conf()["pools"].clone();
        let s = c.status(&ep).await.expect("status");
        assert_eq!(s.state, RigState::Mining);
        assert_eq!(s.hashrate_ths, Some(95.0));
        assert_eq!(s.power_w, None, "stock stats have no power");

        c.sleep(&ep).await.expect("sleep");
        assert_eq!(fake.counters().get("POST /cgi-bin/set_miner_conf.cgi"), 1);
        assert_eq!(fake.miner_conf()["pools"], pools_before, "pools kept");
        assert_eq!(fake.miner_conf()["bitmain-work-mode"], "1");
        let s = wait_for(&c, &ep, RigState::Sleeping).await;
        assert_eq!(s.hashrate_ths, Some(0.0));
        assert_eq!(fake.phase(), FakePhase::Sleeping);

        // Already asleep: success without a write.
        c.sleep(&ep).await.expect("sleep again");
        assert_eq!(fake.counters().get("POST /cgi-bin/set_miner_conf.cgi"), 1);

        c.wake(&ep).await.expect("wake");
        assert_eq!(fake.miner_conf()["bitmain-work-mode"], "0");
        wait_for(&c, &ep, RigState::Mining).await;
        c.wake(&ep).await.expect("wake again");
        assert_eq!(fake.counters().get("POST /cgi-bin/set_miner_conf.cgi"), 2);
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn stopping_is_reported_while_the_boards_still_hash() {
        let fake = FakeAntminer::start(FakeAntminerConfig {
            profile: RigProfile {
                sleep_delay: Duration::from_secs(30),
                ..RigProfile::default()
            },
            restart: Duration::ZERO,
            power_in_stats: true,
            ..FakeAntminerConfig::default()
        })
        .await
        .expect("start");
        let (c, ep) = (client(), fake.endpoint());
        c.sleep(&ep).await.expect("sleep");
        let s = c.status(&ep).await.expect("status");
        assert_eq!(s.state, RigState::Stopping);
        assert_eq!(s.power_w, Some(3250.0), "Hiveon-style chain_power read");
    }

    #[tokio::test]
    async fn restart_window_is_retryable_never_asleep() {
        for restart_reply in [
            AntminerRestartReply::Unavailable,
            AntminerRestartReply::Empty,
        ] {
            let fake = FakeAntminer::start(FakeAntminerConfig {
                restart: Duration::from_secs(30),
                restart_reply,
                ..quick()
            })
            .await
            .expect("start");
            let (c, ep) = (client(), fake.endpoint());
            c.sleep(&ep).await.expect("sleep");
            assert!(fake.restarting());
            let e = c.status(&ep).await.expect_err("restarting");
            assert!(e.is_retryable(), "{restart_reply:?}: {e}");
            assert!(
                matches!(
                    e,
                    FirmwareError::Rejected { .. } | FirmwareError::Malformed { .. }
                ),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn stale_nonces_are_answered_once() {
        let fake = FakeAntminer::start(quick()).await.expect("start");
        let (c, ep) = (client(), fake.endpoint());
        // The first nonce handed out is stale on use: one more round, then success.
        fake.expire_next_nonces(1);
        c.status(&ep).await.expect("status after one stale nonce");
        assert_eq!(fake.counters().get("401"), 2);
        // Stale twice in a row after a fresh challenge: session expired, retryable.
        fake.expire_next_nonces(2);
        let e = c.status(&ep).await.expect_err("stale twice");
        assert!(
            matches!(e, FirmwareError::SessionExpired { .. }) && e.is_retryable(),
            "{e}"
        );
        // Nonces forgotten between calls do not matter: each call starts from a challenge.
        fake.expire_nonces();
        c.status(&ep).await.expect("status after expiry");
    }

    #[tokio::test]
    async fn wrong_password_is_login_refused() {
        let fake = FakeAntminer::start(quick()).await.expect("start");
        let mut ep = fake.endpoint();
        ep.credentials = Credentials::new("root", "not-root");
        let e = client().sleep(&ep).await.expect_err("refused");
        assert!(matches!(e, FirmwareError::LoginRefused { .. }), "{e}");
        assert!(!e.is_retryable());
        assert_eq!(fake.counters().get("POST /cgi-bin/set_miner_conf.cgi"), 0);
        assert_eq!(fake.phase(), FakePhase::Mining);
    }

    #[tokio::test]
    async fn silent_malformed_and_stuck() {
        let fake = FakeAntminer::start(quick()).await.expect("start");
        let ep = fake.endpoint();
        let c = FirmwareClient::new(Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(300),
        });
        fake.set_silent(true);
        let e = c.status(&ep).await.expect_err("silent");
        assert!(matches!(e, FirmwareError::Timeout { .. }), "{e}");
        fake.set_silent(false);

        fake.set_malformed(true);
        let e = c.status(&ep).await.expect_err("malformed");
        assert!(matches!(e, FirmwareError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("not JSON"), "{e}");
        fake.set_malformed(false);
        assert!(fake.fault_hits() >= 2);

        fake.set_stuck(true);
        c.sleep(&ep).await.expect("acknowledged");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let s = c.status(&ep).await.expect("status");
        assert_eq!(s.state, RigState::Stopping, "mode says sleep, boards hash");
        assert_eq!(fake.phase(), FakePhase::Mining);
    }

    /// One GET of the config with this `Authorization`, over the proxy's HTTP client.
    async fn raw_get(addr: SocketAddr, auth: Option<&str>) -> http_client::Response {
        let headers: Vec<(hyper::header::HeaderName, &str)> =
            auth.map(|a| (AUTHORIZATION, a)).into_iter().collect();
        let req = http_client::Request {
            method: hyper::Method::GET,
            host: "antminer",
            path: CONF_PATH,
            headers: &headers,
            body: Bytes::new(),
        };
        let limits = http_client::Limits {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            max_body: 64 * 1024,
        };
        http_client::request(addr, req, limits)
            .await
            .expect("exchange")
    }

    const CONF_PATH: &str = "/cgi-bin/get_miner_conf.cgi";

    #[tokio::test]
    async fn digest_is_enforced_on_the_wire() {
        let fake = FakeAntminer::start(quick()).await.expect("start");
        let bare = raw_get(fake.addr(), None).await;
        assert_eq!(bare.status, 401);
        let ch = digest::find_challenge(&bare.www_authenticate).expect("challenge");
        assert_eq!(ch.realm, ANTMINER_REALM);
        assert!(ch.qop_auth && !ch.stale);
        // A wrong response to a live nonce is refused without `stale`.
        let bad = digest::authorization(&ch, "root", "nope", "GET", CONF_PATH, 1, "c");
        let r = raw_get(fake.addr(), Some(&bad)).await;
        assert_eq!(r.status, 401);
        let again = digest::find_challenge(&r.www_authenticate).expect("challenge");
        assert!(!again.stale);
        // An answer for another path is refused too.
        let other = digest::authorization(&ch, "root", "root", "GET", "/cgi-bin/x.cgi", 1, "c");
        assert_eq!(raw_get(fake.addr(), Some(&other)).await.status, 401);
        // The right one is accepted; the config comes with the CGI's leading newlines.
        let good = digest::authorization(&ch, "root", "root", "GET", CONF_PATH, 1, "c");
        let r = raw_get(fake.addr(), Some(&good)).await;
        assert_eq!(r.status, 200);
        assert!(r.body.starts_with(b"\n\n{"));
        // Once its nonce is forgotten, the same right answer is stale.
        fake.expire_nonces();
        let r = raw_get(fake.addr(), Some(&good)).await;
        assert_eq!(r.status, 401);
        assert!(
            digest::find_challenge(&r.www_authenticate)
                .expect("ch")
                .stale
        );
    }

    #[test]
    fn posted_configs_are_checked_like_the_firmware() {
        let current: Value = serde_json::from_str(CONF_TEMPLATE).expect("template");
        let ok = json!({"pools": [{"url": "u", "user": "w", "pass": "x"}], "miner-mode": 1,
                        "bitmain-fan-ctrl": false, "bitmain-fan-pwm": "100", "freq-level": "100"});
        let (conf, mode) = accept_conf(&current, ok.to_string().as_bytes()).expect("accepted");
        assert_eq!(mode, Mode::Sleep);
        assert_eq!(conf["bitmain-work-mode"], "1");
        assert_eq!(conf["pools"].as_array().map(Vec::len), Some(1));
        // Mode only: accepted, and the pools are gone, as on a real rig.
        let (conf, _) = accept_conf(&current, br#"{"miner-mode": 0}"#).expect("accepted");
        assert_eq!(conf["pools"], json!([]));
        for bad in [
            &br#"{"pools": []}"#[..],
            br#"{"miner-mode": 7}"#,
            br#"{"miner-mode": 1, "pools": [{"url": 1}]}"#,
            br#"{"miner-mode": 1, "bitmain-fan-ctrl": "no"}"#,
            b"not json",
            b"[]",
        ] {
            assert!(
                accept_conf(&current, bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
