//! A fake LuxOS rig: the 4028 JSON API with logon sessions and `curtail`.
//!
//! Protocol as LuxOS serves it: one JSON request per connection, one reply terminated by a NUL
//! byte, then close. Sessions: `logon` opens the rig's single session (refused with LuxOS's
//! `Code 402 "Another session is active"` while one is live), privileged commands take
//! `"<sid>,<args>"`, a session idle for `session_ttl` expires ("Invalid session id"), `logoff
//! <sid>` ends it. `curtail <sid>,sleep|wakeup` drives the [`RigModel`]; a redundant one is
//! refused with "Miner is already in sleep mode" / "Miner is already active".
//!
//! Every reply is a reply from a real machine or from Luxor's docs, taken from
//! `tools/fixtures/firmware/luxos/` (sources in its `sources.toml`) and patched only where the
//! simulated rig differs: `CurtailMode` in `config`, `Watts` in `power`, the `GHS` rates in
//! `summary` and `stats`, and the session ids. The other fields (model, pools, temperatures,
//! STATUS codes and messages) are the machine's own: `config`/`power`/`summary`/`stats` are an
//! Antminer S19k Pro's, `logon`/`session`/`curtail` Luxor's documented examples.
//!
//! Quirks (on by default, [`FakeLuxosConfig::quirks`]): the trailing NUL always; with quirks on,
//! bare `inf`/`nan` for the ratios in `summary` while the rig does not hash (cgminer prints
//! divisions by zero that way) and bmminer's `}{` between the objects of `stats`. The LuxOS
//! captures show neither; they are there so the end-to-end tests cross the shared cgminer
//! parser's repairs too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
use super::{Counters, Server};
use hashshift_proxy::firmware::{Credentials, Endpoint, FirmwareKind};

/// The captured replies the fake answers with (see the module docs).
mod capture {
    macro_rules! fixture {
        ($file:literal) => {
            include_str!(concat!("../../fixtures/firmware/luxos/", $file))
        };
    }
    pub const CONFIG: &str = fixture!("s19kpro-config.json");
    pub const POWER: &str = fixture!("s19kpro-power.json");
    pub const SUMMARY: &str = fixture!("s19kpro-summary.json");
    pub const STATS: &str = fixture!("s19kpro-stats.json");
    pub const LOGON: &str = fixture!("docs-logon.json");
    pub const SESSION: &str = fixture!("docs-session-none.json");
    pub const CURTAIL_SLEEP: &str = fixture!("docs-curtail-sleep.json");
    pub const CURTAIL_WAKEUP: &str = fixture!("docs-curtail-wakeup.json");
    pub const SESSION_BUSY: &str = fixture!("logon-session-busy.json");
    pub const INVALID_SESSION: &str = fixture!("curtail-invalid-session.json");
    pub const ALREADY_SLEEPING: &str = fixture!("curtail-already-sleeping.json");
    pub const ALREADY_ACTIVE: &str = fixture!("curtail-already-active.json");
}

/// A captured reply as JSON. The fixtures are checked by this module's tests, so a broken one
/// fails there; here it degrades to an empty object rather than a panic in a server task.
fn template(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

/// `reply[section][index][key] = value`, when that object exists.
fn patch(reply: &mut Value, section: &str, index: usize, key: &str, value: Value) {
    if let Some(obj) = reply
        .get_mut(section)
        .and_then(|s| s.get_mut(index))
        .and_then(Value::as_object_mut)
    {
        obj.insert(key.to_owned(), value);
    }
}

/// Every `GHS ...` rate of `reply[section][index]` set to `ghs` (the averages too: the
/// simulated rig has one rate at a time).
fn patch_rates(reply: &mut Value, section: &str, index: usize, ghs: f64) {
    if let Some(obj) = reply
        .get_mut(section)
        .and_then(|s| s.get_mut(index))
        .and_then(Value::as_object_mut)
    {
        for (key, value) in obj.iter_mut() {
            if key.starts_with("GHS ") {
                *value = json!(ghs);
            }
        }
    }
}

/// A captured reply with its session id replaced.
fn with_session(text: &str, id: &str) -> String {
    let mut reply = template(text);
    patch(&mut reply, "SESSION", 0, "SessionID", json!(id));
    reply.to_string()
}

/// How a [`FakeLuxos`] behaves.
#[derive(Clone, Debug)]
pub struct FakeLuxosConfig {
    /// The simulated rig.
    pub profile: RigProfile,
    /// A session idle this long expires (LuxOS: 1 minute).
    pub session_ttl: Duration,
    /// Emit cgminer's JSON quirks (trailing NUL always; `inf`/`nan` and `}{` with this on).
    pub quirks: bool,
}

impl Default for FakeLuxosConfig {
    fn default() -> Self {
        FakeLuxosConfig {
            profile: RigProfile::default(),
            session_ttl: Duration::from_secs(60),
            quirks: true,
        }
    }
}

struct Session {
    id: String,
    last_used: Instant,
    /// Answer "Invalid session id" on first use (simulates expiry between logon and command).
    doomed: bool,
}

struct Inner {
    rig: RigModel,
    session: Option<Session>,
    next_sid: u64,
    doom_next: u32,
    counters: Counters,
}

type Shared = super::Shared<FakeLuxosConfig, Inner>;

/// A fake LuxOS rig listening on `127.0.0.1:<ephemeral>`.
pub struct FakeLuxos {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Server,
}

impl FakeLuxos {
    /// Start a fake with this config.
    pub async fn start(config: FakeLuxosConfig) -> std::io::Result<FakeLuxos> {
        let state = Inner {
            rig: RigModel::new(config.profile),
            session: None,
            next_sid: 1,
            doom_next: 0,
            counters: Counters::default(),
        };
        let (addr, shared, server) = super::listen(config, state, serve).await?;
        Ok(FakeLuxos {
            addr,
            shared,
            server,
        })
    }

    /// An [`Endpoint`] for this rig (LuxOS `logon` needs no credentials).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(FirmwareKind::Luxos, self.addr, Credentials::default())
    }

    /// Whether a live (unexpired) session is open.
    pub fn session_active(&self) -> bool {
        let ttl = self.shared.config.session_ttl;
        let mut inner = self.shared.lock();
        expire(&mut inner, Instant::now(), ttl);
        inner.session.is_some()
    }

    /// Open a session as another tool would, so our adapter meets "session in use". It expires
    /// after `session_ttl` idle like any other. Returns its id.
    pub fn hold_session(&self) -> String {
        new_session(&mut self.shared.lock(), Instant::now())
    }

    /// The next `n` sessions handed out expire before their first use.
    pub fn expire_next_sessions(&self, n: u32) {
        self.shared.lock().doom_next = n;
    }

    /// Report the rig asleep in `config`, `power` and `summary` whatever it really does (the
    /// simulated rig, [`FakeLuxos::phase`], keeps its real state).
    pub fn set_lie_asleep(&self, on: bool) {
        self.shared.faults.set_lie_asleep(on);
    }

    /// Report this wattage in `power` instead of the real draw (`None`: the truth).
    pub fn set_lie_watts(&self, watts: Option<u64>) {
        self.shared.faults.set_lie_watts(watts);
    }
}

fake_accessors!(FakeLuxos, "by command", reset, fault_hits);

fn expire(inner: &mut Inner, now: Instant, ttl: Duration) {
    if inner
        .session
        .as_ref()
        .is_some_and(|s| now.duration_since(s.last_used) >= ttl)
    {
        inner.session = None;
    }
}

fn new_session(inner: &mut Inner, now: Instant) -> String {
    let id = format!(
        "{:08x}",
        inner.next_sid.wrapping_mul(0x9e37_79b9) & 0xffff_ffff
    );
    inner.next_sid += 1;
    let doomed = inner.doom_next > 0;
    inner.doom_next = inner.doom_next.saturating_sub(1);
    inner.session = Some(Session {
        id: id.clone(),
        last_used: now,
        doomed,
    });
    id
}

async fn serve(stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let malformed = b"{\"STATUS\":[{\"STATUS\":\"S\",\"Msg\":\"Summ";
    super::serve_json_once(stream, &shared, &cancel, malformed, |request| {
        Some(answer(&shared, request))
    })
    .await;
}

fn status_obj(letter: &str, code: u32, msg: &str) -> Value {
    let when = hashshift_proxy::time::unix_secs();
    json!([{ "STATUS": letter, "When": when, "Code": code, "Msg": msg, "Description": "LUXminer fake" }])
}

fn error(code: u32, msg: &str) -> String {
    json!({ "STATUS": status_obj("E", code, msg), "id": 1 }).to_string()
}

fn answer(shared: &Shared, request: &Value) -> String {
    let Some(command) = request.get("command").and_then(Value::as_str) else {
        return error(23, "Invalid JSON");
    };
    let parameter = request
        .get("parameter")
        .and_then(Value::as_str)
        .unwrap_or("");
    let now = Instant::now();
    let mut inner = shared.lock();
    let known = matches!(
        command,
        "logon" | "logoff" | "session" | "curtail" | "config" | "power" | "summary" | "stats"
    );
    inner.counters.bump(if known { command } else { "<other>" });
    expire(&mut inner, now, shared.config.session_ttl);
    match command {
        "logon" => {
            if inner.session.is_some() {
                return template(capture::SESSION_BUSY).to_string();
            }
            let id = new_session(&mut inner, now);
            with_session(capture::LOGON, &id)
        }
        "session" => {
            let id = inner.session.as_ref().map_or("", |s| s.id.as_str());
            with_session(capture::SESSION, id)
        }
        "logoff" | "curtail" => {
            let (sid, arg) = parameter.split_once(',').unwrap_or((parameter, ""));
            match inner.session.as_mut() {
                Some(s) if s.id == sid && !s.doomed => s.last_used = now,
                Some(s) if s.id == sid => {
                    inner.session = None;
                    return template(capture::INVALID_SESSION).to_string();
                }
                _ => return template(capture::INVALID_SESSION).to_string(),
            }
            if command == "logoff" {
                inner.session = None;
                return json!({ "STATUS": status_obj("S", 308, "Logoff"), "id": 1 }).to_string();
            }
            let stuck = shared.faults.stuck();
            let accepted = match arg {
                "sleep" => stuck || inner.rig.sleep(now),
                "wakeup" => stuck || inner.rig.wake(now),
                _ => return error(14, "Invalid curtail mode"),
            };
            let reply = match (accepted, arg) {
                (true, "sleep") => capture::CURTAIL_SLEEP,
                (true, _) => capture::CURTAIL_WAKEUP,
                (false, "sleep") => capture::ALREADY_SLEEPING,
                (false, _) => capture::ALREADY_ACTIVE,
            };
            template(reply).to_string()
        }
        "config" => {
            let snap = reported(shared, inner.rig.snapshot(now));
            let mode = match snap.phase {
                FakePhase::Stopping | FakePhase::Sleeping => "Sleep",
                FakePhase::Mining | FakePhase::Waking => "None",
            };
            let mut reply = template(capture::CONFIG);
            patch(&mut reply, "CONFIG", 0, "CurtailMode", json!(mode));
            reply.to_string()
        }
        "power" => {
            let snap = reported(shared, inner.rig.snapshot(now));
            let mut reply = template(capture::POWER);
            // LuxOS reports whole watts.
            patch(
                &mut reply,
                "POWER",
                0,
                "Watts",
                json!(snap.power_w.round() as i64),
            );
            reply.to_string()
        }
        "summary" => summary(
            reported(shared, inner.rig.snapshot(now)),
            shared.config.quirks,
        ),
        "stats" => stats(
            reported(shared, inner.rig.snapshot(now)),
            shared.config.quirks,
        ),
        _ => error(14, "Invalid command"),
    }
}

/// The snapshot as the firmware reports it: the truth unless a lying fault is on.
fn reported(shared: &Shared, mut snap: RigSnapshot) -> RigSnapshot {
    if shared.faults.lie_asleep() {
        shared.faults.hit();
        snap = RigSnapshot {
            phase: FakePhase::Sleeping,
            power_w: shared.config.profile.sleep_power_w,
            hashrate_ths: 0.0,
        };
    }
    if let Some(w) = shared.faults.lie_watts() {
        shared.faults.hit();
        snap.power_w = w as f64;
    }
    snap
}

/// Marks a value for a bare non-finite number, written after serialisation.
const INF_MARK: &str = "@INF@";
const NAN_MARK: &str = "@NAN@";

/// The S19k Pro's `summary` at the simulated rig's rate. With quirks on and no hashrate, the
/// ratios cgminer divides by the rate are written as bare `inf`/`nan`.
fn summary(snap: RigSnapshot, quirks: bool) -> String {
    let ghs = snap.hashrate_ths * 1000.0;
    let mut reply = template(capture::SUMMARY);
    patch_rates(&mut reply, "SUMMARY", 0, ghs);
    if quirks && ghs <= 0.0 {
        patch(&mut reply, "SUMMARY", 0, "Work Utility", json!(INF_MARK));
        patch(
            &mut reply,
            "SUMMARY",
            0,
            "Device Hardware%",
            json!(NAN_MARK),
        );
    }
    reply
        .to_string()
        .replace(&format!("\"{INF_MARK}\""), "inf")
        .replace(&format!("\"{NAN_MARK}\""), "nan")
}

/// The S19k Pro's `stats` at the simulated rig's rate; with quirks on, bmminer's missing comma
/// between the version object and the device object.
fn stats(snap: RigSnapshot, quirks: bool) -> String {
    let mut reply = template(capture::STATS);
    patch_rates(&mut reply, "STATS", 1, snap.hashrate_ths * 1000.0);
    let text = reply.to_string();
    if quirks {
        // The first `},{` in the STATS array is the one between its two objects.
        match text
            .find("\"STATS\":[")
            .and_then(|at| text[at..].find("},{").map(|rel| at + rel))
        {
            Some(at) => format!("{}}}{{{}", &text[..at], &text[at + 3..]),
            None => text,
        }
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One request over the wire, the reply as it came (NUL stripped), or the I/O error.
    async fn ask(addr: SocketAddr, command: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(json!({ "command": command }).to_string().as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf)
            .trim_end_matches('\0')
            .to_owned())
    }

    fn field(reply: &str, section: &str, key: &str) -> Value {
        let v: Value = serde_json::from_str(reply).unwrap_or_default();
        v[section][0][key].clone()
    }

    /// One request with a parameter, the reply parsed as the adapter parses it.
    async fn ask_with(addr: SocketAddr, command: &str, parameter: &str) -> std::io::Result<Value> {
        let mut s = TcpStream::connect(addr).await?;
        let req = json!({ "command": command, "parameter": parameter });
        s.write_all(req.to_string().as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        assert_eq!(buf.last(), Some(&0), "{command}: NUL-terminated");
        hashshift_proxy::firmware::cgminer::parse_reply(&buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// The captured reply with the patched fields removed, for comparison.
    fn without(mut v: Value, section: &str, index: usize, keys: &[&str]) -> Value {
        if let Some(obj) = v[section][index].as_object_mut() {
            obj.retain(|k, _| !keys.contains(&k.as_str()) && !k.starts_with("GHS "));
        }
        v
    }

    #[test]
    fn every_template_is_json() {
        for text in [
            capture::CONFIG,
            capture::POWER,
            capture::SUMMARY,
            capture::STATS,
            capture::LOGON,
            capture::SESSION,
            capture::CURTAIL_SLEEP,
            capture::CURTAIL_WAKEUP,
            capture::SESSION_BUSY,
            capture::INVALID_SESSION,
            capture::ALREADY_SLEEPING,
            capture::ALREADY_ACTIVE,
        ] {
            let v: Value = serde_json::from_str(text).expect("a fixture that is JSON");
            assert!(v["STATUS"][0]["STATUS"].is_string(), "{text}");
        }
    }

    /// The fake's replies are the captures, changed only in the fields that follow the rig.
    #[tokio::test]
    async fn answers_are_the_captures_patched() -> std::io::Result<()> {
        let fake = FakeLuxos::start(FakeLuxosConfig {
            profile: RigProfile {
                sleep_delay: Duration::ZERO,
                ..RigProfile::default()
            },
            ..FakeLuxosConfig::default()
        })
        .await?;
        let addr = fake.addr();

        let config = ask_with(addr, "config", "").await?;
        assert_eq!(config["CONFIG"][0]["CurtailMode"], "None");
        assert_eq!(
            without(config, "CONFIG", 0, &["CurtailMode"]),
            without(template(capture::CONFIG), "CONFIG", 0, &["CurtailMode"])
        );
        let power = ask_with(addr, "power", "").await?;
        assert_eq!(power["POWER"][0]["Watts"], 3250);
        assert_eq!(
            without(power, "POWER", 0, &["Watts"]),
            without(template(capture::POWER), "POWER", 0, &["Watts"])
        );
        let summary = ask_with(addr, "summary", "").await?;
        assert_eq!(summary["SUMMARY"][0]["GHS 5s"], 95000.0);
        assert_eq!(
            without(summary, "SUMMARY", 0, &[]),
            without(template(capture::SUMMARY), "SUMMARY", 0, &[])
        );
        // stats crosses bmminer's `}{` and still reads as the capture's two objects.
        let stats = ask_with(addr, "stats", "").await?;
        assert_eq!(stats["STATS"].as_array().map(Vec::len), Some(2));
        assert_eq!(stats["STATS"][1]["GHS 5s"], 95000.0);

        // Sessions and curtail: Luxor's codes and messages, our ids.
        let logon = ask_with(addr, "logon", "").await?;
        assert_eq!(logon["STATUS"][0]["Code"], 316);
        let sid = logon["SESSION"][0]["SessionID"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        assert!(!sid.is_empty() && sid != "yJN2nlj1");
        assert_eq!(
            ask_with(addr, "session", "").await?["SESSION"][0]["SessionID"],
            sid
        );
        let busy = ask_with(addr, "logon", "").await?;
        assert_eq!(
            (&busy["STATUS"][0]["Code"], &busy["STATUS"][0]["Msg"]),
            (&json!(402), &json!("Another session is active"))
        );
        let slept = ask_with(addr, "curtail", &format!("{sid},sleep")).await?;
        assert_eq!(slept["CURTAIL"][0]["Action"], "sleep mode");
        let again = ask_with(addr, "curtail", &format!("{sid},sleep")).await?;
        assert_eq!(again["STATUS"][0]["Msg"], "Miner is already in sleep mode");
        let expired = ask_with(addr, "curtail", "nope,wakeup").await?;
        assert_eq!(expired["STATUS"][0]["Msg"], "Invalid session id");

        // Asleep: no hashrate, so the quirky ratios are bare inf/nan, read as null.
        assert_eq!(fake.phase(), FakePhase::Sleeping);
        let summary = ask_with(addr, "summary", "").await?;
        assert_eq!(summary["SUMMARY"][0]["GHS 5s"], 0.0);
        assert!(summary["SUMMARY"][0]["Work Utility"].is_null());
        let config = ask_with(addr, "config", "").await?;
        assert_eq!(config["CONFIG"][0]["CurtailMode"], "Sleep");
        fake.shutdown().await;
        Ok(())
    }

    #[tokio::test]
    async fn lying_faults_change_the_replies_not_the_rig_and_are_counted() -> std::io::Result<()> {
        let fake = FakeLuxos::start(FakeLuxosConfig::default()).await?;
        let addr = fake.addr();
        // Off by default: the truth, no hits.
        assert_eq!(
            field(&ask(addr, "config").await?, "CONFIG", "CurtailMode"),
            "None"
        );
        assert_eq!(field(&ask(addr, "power").await?, "POWER", "Watts"), 3250);
        assert_eq!(fake.fault_hits(), 0);

        fake.set_lie_asleep(true);
        assert_eq!(
            field(&ask(addr, "config").await?, "CONFIG", "CurtailMode"),
            "Sleep"
        );
        assert_eq!(field(&ask(addr, "power").await?, "POWER", "Watts"), 20);
        assert_eq!(
            fake.phase(),
            FakePhase::Mining,
            "the rig itself still hashes"
        );
        fake.set_lie_asleep(false);

        fake.set_lie_watts(Some(1));
        assert_eq!(field(&ask(addr, "power").await?, "POWER", "Watts"), 1);
        assert_eq!(
            field(&ask(addr, "config").await?, "CONFIG", "CurtailMode"),
            "None"
        );
        fake.set_lie_watts(None);
        assert_eq!(field(&ask(addr, "power").await?, "POWER", "Watts"), 3250);
        let hits = fake.fault_hits();
        assert_eq!(hits, 4);

        fake.set_reset(true);
        match ask(addr, "power").await {
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            Ok(reply) => panic!("answered through a reset: {reply:?}"),
        }
        assert_eq!(fake.fault_hits(), hits + 1);
        fake.set_reset(false);
        assert_eq!(field(&ask(addr, "power").await?, "POWER", "Watts"), 3250);
        fake.shutdown().await;
        Ok(())
    }
}
