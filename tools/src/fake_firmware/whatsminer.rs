//! A fake Whatsminer: the btminer API v2 on TCP 4028, with its tokens and encrypted commands.
//!
//! Protocol as btminer serves it: one JSON request per connection, one reply terminated by a
//! NUL byte, then close. Read commands in plaintext (`{"command":"summary"}`, `"cmd"` also
//! accepted): `get_token`, `status`, `summary`. Writes only encrypted: `{"enc":1,"data":..}`,
//! AES-256-ECB under SHA-256 of md5-crypt(admin password, salt), carrying `cmd` and a `token`
//! sign that must match a token handed out by `get_token` within `token_ttl`; the reply is
//! `{"enc":"<base64>"}`. `power_off` / `power_on` drive the [`RigModel`].
//!
//! Replies are the captured ones in `tools/fixtures/firmware/whatsminer/` used as templates:
//! only `When`, the token fields, `mineroff`/`btmineroff`, `Power`/`Power_RT` and the hashrates
//! follow the simulated rig. Errors: write access off → "can't access write cmd" (Code 45),
//! bad or expired token → "check token err" (Code 135), more than 32 live tokens → Code 136.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
use super::{Counters, MAX_REQUEST, Server};
use hashshift_proxy::firmware::whatsminer::crypto::{self, TokenKeys};
use hashshift_proxy::firmware::{Credentials, Endpoint, FirmwareKind};

/// Most live tokens btminer hands one client (API v2 document: 32 per IP).
const MAX_TOKENS: usize = 32;

/// The fixed salt btminer derives the admin key with.
const SALT: &str = "BQ5hoXV9";

const FIXTURES_M20S_SUMMARY: &str =
    include_str!("../../fixtures/firmware/whatsminer/m20s-summary.json");
const FIXTURES_M20S_STATUS: &str =
    include_str!("../../fixtures/firmware/whatsminer/m20s-status.json");
const FIXTURES_M30S_SUMMARY: &str =
    include_str!("../../fixtures/firmware/whatsminer/m30s-summary.json");
const FIXTURES_M30S_STATUS: &str =
    include_str!("../../fixtures/firmware/whatsminer/m30s-status.json");
const FIXTURES_GET_TOKEN: &str = include_str!("../../fixtures/firmware/whatsminer/get-token.json");
const FIXTURES_OK: &str = include_str!("../../fixtures/firmware/whatsminer/command-ok.json");
const FIXTURES_WRITE_OFF: &str =
    include_str!("../../fixtures/firmware/whatsminer/error-write-disabled.json");
const FIXTURES_TOKEN_ERR: &str =
    include_str!("../../fixtures/firmware/whatsminer/error-token.json");

/// Which captured machine the fake answers as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhatsminerModel {
    /// M20S: older firmware (`btmineroff` in `status`, `MHS 5s` in `summary`).
    M20s,
    /// M30S: newer firmware (`mineroff` in `status`, `HS RT` only in `summary`).
    M30s,
}

/// How a [`FakeWhatsminer`] behaves.
#[derive(Clone, Debug)]
pub struct FakeWhatsminerConfig {
    /// The simulated rig.
    pub profile: RigProfile,
    /// Which captured replies to answer with.
    pub model: WhatsminerModel,
    /// The admin password (the adapter must be given the same one).
    pub password: String,
    /// Whether API write access is enabled (changeable with [`FakeWhatsminer::set_write_access`]).
    pub write_access: bool,
    /// A token older than this is refused (btminer: 30 minutes).
    pub token_ttl: Duration,
    /// Send the refusal of a bad token encrypted (`{"enc":..}`) instead of in plaintext; which
    /// one btminer does is not published, and the adapter reads both.
    pub encrypted_errors: bool,
    /// While the hashboards are off, close `summary` connections without an answer (btminer's
    /// cgminer side stopped); `status` still answers.
    pub summary_down_when_off: bool,
}

impl Default for FakeWhatsminerConfig {
    fn default() -> Self {
        FakeWhatsminerConfig {
            profile: RigProfile::default(),
            model: WhatsminerModel::M30s,
            password: "hashshift".to_owned(),
            write_access: true,
            token_ttl: Duration::from_secs(30 * 60),
            encrypted_errors: false,
            summary_down_when_off: false,
        }
    }
}

struct Token {
    sign: String,
    issued: Instant,
    /// Refused on first use (simulates expiry between `get_token` and the command).
    doomed: bool,
}

struct Inner {
    rig: RigModel,
    tokens: Vec<Token>,
    next: u64,
    doom_next: u32,
    write_access: bool,
    summary_down: bool,
    counters: Counters,
}

type Shared = super::Shared<FakeWhatsminerConfig, Inner>;

/// A fake Whatsminer listening on `127.0.0.1:<ephemeral>`.
pub struct FakeWhatsminer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
}

impl FakeWhatsminer {
    /// Start a fake with this config.
    pub async fn start(config: FakeWhatsminerConfig) -> std::io::Result<FakeWhatsminer> {
        let state = Inner {
            rig: RigModel::new(config.profile),
            tokens: Vec::new(),
            next: 1,
            doom_next: 0,
            write_access: config.write_access,
            summary_down: false,
            counters: Counters::default(),
        };
        let (addr, shared, server) = super::listen(config, state, serve).await?;
        Ok(FakeWhatsminer {
            addr,
            shared,
            server,
        })
    }

    /// An [`Endpoint`] for this rig with its admin password.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(
            FirmwareKind::Whatsminer,
            self.addr,
            Credentials::new("admin", self.shared.config.password.clone()),
        )
    }

    /// Enable or disable API write access (as in WhatsMinerTool).
    pub fn set_write_access(&self, on: bool) {
        self.shared.lock().write_access = on;
    }

    /// Expire every token handed out so far, and the next one handed out before its first use
    /// (a token that lapses between `get_token` and the command).
    pub fn expire_tokens(&self) {
        let mut inner = self.shared.lock();
        inner.tokens.clear();
        inner.doom_next = 1;
    }

    /// The next `n` tokens handed out are refused on first use.
    pub fn expire_next_tokens(&self, n: u32) {
        self.shared.lock().doom_next = n;
    }

    /// Close every `summary` connection without an answer, whatever the rig does (`status`
    /// still answers).
    pub fn set_summary_down(&self, on: bool) {
        self.shared.lock().summary_down = on;
    }
}

fake_accessors!(
    FakeWhatsminer,
    "by command (`get_token`, `status`, `summary`, `power_off`, `power_on`, `<other>`; encrypted commands counted by their `cmd` once decrypted)",
    reset,
    fault_hits
);

async fn serve(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let malformed = b"{\"STATUS\":\"S\",\"When\":1594179080,\"Code\":13";
    super::serve_json_once(stream, &shared, &cancel, malformed, |request| {
        (!summary_down(&shared, request)).then(|| answer(&shared, request))
    })
    .await;
}

/// A `summary` request while the boards are off and `summary_down_when_off` is set.
fn summary_down(shared: &Shared, request: &Value) -> bool {
    let command = request
        .get("command")
        .or_else(|| request.get("cmd"))
        .and_then(Value::as_str);
    if command != Some("summary") {
        return false;
    }
    let mut inner = shared.lock();
    let phase = inner.rig.snapshot(Instant::now()).phase;
    let off = shared.config.summary_down_when_off && phase == FakePhase::Sleeping;
    if off || inner.summary_down {
        inner.counters.bump("summary");
        true
    } else {
        false
    }
}

fn template(text: &str) -> Value {
    // The fixtures are checked in and parsed by tests: a broken one is a bug here.
    serde_json::from_str(text).expect("whatsminer fixture is JSON")
}

fn now_secs() -> u64 {
    hashshift_proxy::time::unix_secs()
}

/// A flat btminer reply from a template, with a fresh `When`.
fn flat(text: &str) -> Value {
    let mut v = template(text);
    v["When"] = json!(now_secs());
    v
}

fn error(code: u32, msg: &str) -> String {
    json!({ "STATUS": "E", "When": now_secs(), "Code": code, "Msg": msg, "Description": "" })
        .to_string()
}

fn keys_for(password: &str) -> TokenKeys {
    // Only the AES key matters here; it depends on the password and the fixed salt.
    TokenKeys::derive(password, "0", SALT, "x")
}

fn answer(shared: &Shared, request: &Value) -> String {
    if request.get("enc").is_some() {
        return privileged(shared, request);
    }
    let command = request
        .get("command")
        .or_else(|| request.get("cmd"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let now = Instant::now();
    let mut inner = shared.lock();
    let known = matches!(command, "get_token" | "status" | "summary");
    inner.counters.bump(if known { command } else { "<other>" });
    let model = shared.config.model;
    match command {
        "get_token" => {
            let ttl = shared.config.token_ttl;
            inner.tokens.retain(|t| now.duration_since(t.issued) < ttl);
            if inner.tokens.len() >= MAX_TOKENS {
                return error(136, "token over max times");
            }
            let n = inner.next;
            inner.next += 1;
            let time = format!("{:04}", (now_secs().wrapping_add(n)) % 10_000);
            let newsalt = format!("{:08x}", n.wrapping_mul(0x9e37_79b9) & 0xffff_ffff);
            let keys = TokenKeys::derive(&shared.config.password, &time, SALT, &newsalt);
            let doomed = inner.doom_next > 0;
            inner.doom_next = inner.doom_next.saturating_sub(1);
            inner.tokens.push(Token {
                sign: keys.sign,
                issued: now,
                doomed,
            });
            let mut v = flat(FIXTURES_GET_TOKEN);
            v["Msg"] = json!({ "time": time, "salt": SALT, "newsalt": newsalt });
            v.to_string()
        }
        "status" => {
            let snap = inner.rig.snapshot(now);
            let off = matches!(snap.phase, FakePhase::Stopping | FakePhase::Sleeping);
            let (text, key) = match model {
                WhatsminerModel::M20s => (FIXTURES_M20S_STATUS, "btmineroff"),
                WhatsminerModel::M30s => (FIXTURES_M30S_STATUS, "mineroff"),
            };
            let mut v = flat(text);
            v["Msg"][key] = json!(if off { "true" } else { "false" });
            v.to_string()
        }
        "summary" => {
            let snap = inner.rig.snapshot(now);
            let text = match model {
                WhatsminerModel::M20s => FIXTURES_M20S_SUMMARY,
                WhatsminerModel::M30s => FIXTURES_M30S_SUMMARY,
            };
            let mut v = template(text);
            v["STATUS"][0]["When"] = json!(now_secs());
            let mhs = snap.hashrate_ths * 1e6;
            let watts = snap.power_w.round() as i64;
            if let Some(s) = v.get_mut("SUMMARY").and_then(|s| s.get_mut(0)) {
                for key in ["MHS 5s", "MHS 1m", "MHS 5m", "MHS 15m", "HS RT"] {
                    if s.get(key).is_some() {
                        s[key] = json!(mhs);
                    }
                }
                for key in ["Power", "Power_RT"] {
                    if s.get(key).is_some() {
                        s[key] = json!(watts);
                    }
                }
            }
            v.to_string()
        }
        _ => error(14, "invalid cmd"),
    }
}

/// An encrypted command: decrypt, check write access and token, act, answer encrypted.
fn privileged(shared: &Shared, request: &Value) -> String {
    let keys = keys_for(&shared.config.password);
    let Some(data) = request.get("data").and_then(Value::as_str) else {
        return error(23, "invalid JSON message");
    };
    let now = Instant::now();
    let mut inner = shared.lock();
    if !inner.write_access {
        inner.counters.bump("<refused>");
        return flat(FIXTURES_WRITE_OFF).to_string();
    }
    let Ok(plain) = crypto::decrypt(&keys.aes_key, data, MAX_REQUEST) else {
        return error(137, "base64 decode error");
    };
    // A wrong password decrypts to garbage.
    let Ok(cmd) = serde_json::from_slice::<Value>(&plain) else {
        return error(23, "invalid JSON message");
    };
    let name = cmd.get("cmd").and_then(Value::as_str).unwrap_or("");
    let known = matches!(name, "power_off" | "power_on");
    inner.counters.bump(if known { name } else { "<other>" });
    let sign = cmd.get("token").and_then(Value::as_str).unwrap_or("");
    let ttl = shared.config.token_ttl;
    let pos = inner
        .tokens
        .iter()
        .position(|t| t.sign == sign && now.duration_since(t.issued) < ttl);
    let refuse = |inner: &mut Inner, i: Option<usize>| {
        if let Some(i) = i {
            inner.tokens.remove(i);
        }
        let text = flat(FIXTURES_TOKEN_ERR).to_string();
        if shared.config.encrypted_errors {
            json!({ "enc": crypto::encrypt(&keys.aes_key, text.as_bytes()) }).to_string()
        } else {
            text
        }
    };
    match pos {
        Some(i) if !inner.tokens[i].doomed => {}
        Some(i) => return refuse(&mut inner, Some(i)),
        None => return refuse(&mut inner, None),
    }
    let stuck = shared.faults.stuck();
    match name {
        "power_off" => {
            if !stuck {
                inner.rig.sleep(now);
            }
        }
        "power_on" => {
            if !stuck {
                inner.rig.wake(now);
            }
        }
        _ => return error(14, "invalid cmd"),
    }
    let ok = flat(FIXTURES_OK).to_string();
    json!({ "enc": crypto::encrypt(&keys.aes_key, ok.as_bytes()) }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashshift_proxy::firmware::{FirmwareClient, FirmwareError, RigState, Timeouts};

    fn profile() -> RigProfile {
        RigProfile {
            sleep_delay: Duration::from_millis(200),
            wake_delay: Duration::from_millis(300),
            ..RigProfile::default()
        }
    }

    fn client() -> FirmwareClient {
        FirmwareClient::new(Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_millis(500),
        })
    }

    async fn fake(model: WhatsminerModel) -> FakeWhatsminer {
        FakeWhatsminer::start(FakeWhatsminerConfig {
            profile: profile(),
            model,
            ..FakeWhatsminerConfig::default()
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn sleep_and_wake_over_the_encrypted_api_on_both_models() {
        for model in [WhatsminerModel::M20s, WhatsminerModel::M30s] {
            let f = fake(model).await;
            let (c, ep) = (client(), f.endpoint());
            let s = c.status(&ep).await.unwrap();
            assert_eq!(s.state, RigState::Mining, "{model:?}");
            assert_eq!(s.power_w, Some(3250.0));
            assert!((s.hashrate_ths.unwrap() - 95.0).abs() < 1e-6);

            c.sleep(&ep).await.unwrap();
            assert_eq!(f.phase(), FakePhase::Stopping);
            assert_eq!(c.status(&ep).await.unwrap().state, RigState::Stopping);
            tokio::time::sleep(Duration::from_millis(250)).await;
            let s = c.status(&ep).await.unwrap();
            assert_eq!(
                (s.state, s.power_w, s.hashrate_ths),
                (RigState::Sleeping, Some(20.0), Some(0.0)),
                "{model:?}"
            );
            // Idempotent.
            c.sleep(&ep).await.unwrap();
            assert_eq!(f.phase(), FakePhase::Sleeping);

            c.wake(&ep).await.unwrap();
            assert_eq!(c.status(&ep).await.unwrap().state, RigState::Waking);
            tokio::time::sleep(Duration::from_millis(350)).await;
            assert_eq!(c.status(&ep).await.unwrap().state, RigState::Mining);
            c.wake(&ep).await.unwrap();
            let n = f.counters();
            assert_eq!((n.get("power_off"), n.get("power_on")), (2, 2));
            assert_eq!(n.get("get_token"), 4);
            f.shutdown().await;
        }
    }

    #[tokio::test]
    async fn asleep_only_on_the_firmware_word_when_summary_is_down() {
        let f = FakeWhatsminer::start(FakeWhatsminerConfig {
            profile: RigProfile {
                sleep_delay: Duration::ZERO,
                ..profile()
            },
            model: WhatsminerModel::M20s,
            summary_down_when_off: true,
            ..FakeWhatsminerConfig::default()
        })
        .await
        .unwrap();
        let (c, ep) = (client(), f.endpoint());
        c.sleep(&ep).await.unwrap();
        let s = c.status(&ep).await.unwrap();
        assert_eq!(
            (s.state, s.power_w, s.hashrate_ths),
            (RigState::Sleeping, None, None)
        );
        assert!(f.counters().get("summary") >= 1);
        // Summary failing while the firmware says the boards are on: an error, not asleep.
        c.wake(&ep).await.unwrap();
        f.set_summary_down(true);
        let err = c.status(&ep).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        f.set_summary_down(false);
        assert_ne!(c.status(&ep).await.unwrap().state, RigState::Sleeping);
        f.shutdown().await;
    }

    #[tokio::test]
    async fn write_access_off_is_a_clear_operator_error() {
        let f = fake(WhatsminerModel::M30s).await;
        f.set_write_access(false);
        let err = client().sleep(&f.endpoint()).await.unwrap_err();
        assert!(matches!(err, FirmwareError::LoginRefused { .. }), "{err}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("WhatsMinerTool"), "{text}");
        assert!(text.contains("change the admin password"), "{text}");
        assert_eq!(f.phase(), FakePhase::Mining);
        f.set_write_access(true);
        client().sleep(&f.endpoint()).await.unwrap();
        assert_eq!(f.phase(), FakePhase::Stopping);
        f.shutdown().await;
    }

    #[tokio::test]
    async fn expired_token_is_renewed_once_transparently() {
        for encrypted_errors in [false, true] {
            expired_token_case(encrypted_errors).await;
        }
    }

    async fn expired_token_case(encrypted_errors: bool) {
        let f = FakeWhatsminer::start(FakeWhatsminerConfig {
            profile: profile(),
            encrypted_errors,
            ..FakeWhatsminerConfig::default()
        })
        .await
        .unwrap();
        f.expire_tokens();
        client().sleep(&f.endpoint()).await.unwrap();
        assert_eq!(f.phase(), FakePhase::Stopping);
        assert_eq!(f.counters().get("get_token"), 2);
        assert_eq!(f.counters().get("power_off"), 2);
        // Refused again with a fresh token: not a loop, an operator error.
        f.expire_next_tokens(2);
        let err = client().wake(&f.endpoint()).await.unwrap_err();
        assert!(matches!(err, FirmwareError::LoginRefused { .. }), "{err}");
        assert_eq!(f.counters().get("get_token"), 4);
        f.shutdown().await;
    }

    #[tokio::test]
    async fn wrong_password_is_refused_not_retried_forever() {
        let f = fake(WhatsminerModel::M20s).await;
        let mut ep = f.endpoint();
        ep.credentials = Credentials::new("admin", "wrong");
        let err = client().sleep(&ep).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("admin password"), "{err}");
        assert_eq!(f.phase(), FakePhase::Mining);
        f.shutdown().await;
    }

    #[tokio::test]
    async fn faults_map_to_typed_errors() {
        let f = fake(WhatsminerModel::M30s).await;
        let (c, ep) = (client(), f.endpoint());
        f.set_malformed(true);
        let err = c.status(&ep).await.unwrap_err();
        assert!(matches!(err, FirmwareError::Malformed { .. }), "{err}");
        let err = c.sleep(&ep).await.unwrap_err();
        assert!(matches!(err, FirmwareError::Malformed { .. }), "{err}");
        f.set_malformed(false);

        f.set_silent(true);
        let started = std::time::Instant::now();
        let err = c.status(&ep).await.unwrap_err();
        assert!(matches!(err, FirmwareError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        f.set_silent(false);

        f.set_reset(true);
        let err = c.sleep(&ep).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(
            matches!(
                err,
                FirmwareError::Io { .. } | FirmwareError::Malformed { .. }
            ),
            "{err}"
        );
        f.set_reset(false);

        f.set_stuck(true);
        c.sleep(&ep).await.unwrap();
        assert_eq!(f.phase(), FakePhase::Mining);
        assert_eq!(c.status(&ep).await.unwrap().state, RigState::Mining);
        assert!(f.fault_hits() >= 4);
        f.shutdown().await;
    }
}
