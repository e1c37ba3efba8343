//! A fake LuxOS rig: the 4028 JSON API with logon sessions and `curtail`.
//!
//! Protocol as LuxOS serves it: one JSON request per connection, one reply terminated by a NUL
//! byte, then close. Sessions: `logon` opens the rig's single session (refused with "Another
//! session is active" while one is live), privileged commands take `"<sid>,<args>"`, a session
//! idle for `session_ttl` expires ("Invalid session id"), `logoff <sid>` ends it. `curtail
//! <sid>,sleep|wakeup` drives the [`RigModel`]; a redundant one is refused with LuxOS's own
//! "Miner is already in sleep mode" / "Miner is already active".
//!
//! Quirks (on by default, [`FakeLuxosConfig::quirks`]): the trailing NUL, `inf`/`nan` in
//! `summary` while asleep (cgminer prints divisions by zero), and the `}{` of bmminer's arrays
//! in `summary`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
use super::{Counters, READ_TIMEOUT, Server};
use hashshift_proxy::firmware::{Credentials, Endpoint, FirmwareKind};

/// Largest request the fake reads.
const MAX_REQUEST: usize = 16 * 1024;

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

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// An [`Endpoint`] for this rig (LuxOS `logon` needs no credentials).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::new(FirmwareKind::Luxos, self.addr, Credentials::default())
    }

    /// The simulated rig now.
    pub fn snapshot(&self) -> RigSnapshot {
        self.shared.lock().rig.snapshot(Instant::now())
    }

    /// The simulated rig's phase now.
    pub fn phase(&self) -> FakePhase {
        self.snapshot().phase
    }

    /// Commands received so far.
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters.clone()
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

    /// Hang: read requests, never answer.
    pub fn set_silent(&self, on: bool) {
        self.shared.faults.set_silent(on);
    }

    /// Answer every request with truncated JSON.
    pub fn set_malformed(&self, on: bool) {
        self.shared.faults.set_malformed(on);
    }

    /// Reset every connection after reading its request, without answering.
    pub fn set_reset(&self, on: bool) {
        self.shared.faults.set_reset(on);
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

    /// Replies a fault altered or withheld so far.
    pub fn fault_hits(&self) -> u64 {
        self.shared.faults.hits()
    }

    /// Acknowledge sleep/wake but leave the rig as it is (tests confirmation deadlines).
    pub fn set_stuck(&self, on: bool) {
        self.shared.faults.set_stuck(on);
    }

    /// Stop serving and wait for open connections to end.
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

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

async fn serve(mut stream: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut buf = Vec::with_capacity(256);
    let request =
        match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream, &mut buf)).await {
            Ok(Some(v)) => v,
            _ => return,
        };
    if shared.faults.silent() {
        shared.faults.hit();
        cancel.cancelled().await;
        return;
    }
    if shared.faults.reset() {
        shared.faults.hit();
        // A zero linger makes the close a reset (RST), as a crashing API server's does. Tokio
        // deprecates it because a non-zero linger blocks the thread on drop; zero never does.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
        return;
    }
    let reply = if shared.faults.malformed() {
        shared.faults.hit();
        b"{\"STATUS\":[{\"STATUS\":\"S\",\"Msg\":\"Summ".to_vec()
    } else {
        let mut r = answer(&shared, &request).into_bytes();
        r.push(0);
        r
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// Read until the buffer holds one complete JSON value (the client does not close its side).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Value> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = buf.strip_suffix(b"\n").unwrap_or(buf);
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => return Some(v),
            Err(e) if e.is_eof() => continue,
            // Not JSON: answer as LuxOS does, with an error status.
            Err(_) => return Some(Value::Null),
        }
    }
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
        "logon" | "logoff" | "session" | "curtail" | "config" | "power" | "summary"
    );
    inner.counters.bump(if known { command } else { "<other>" });
    expire(&mut inner, now, shared.config.session_ttl);
    match command {
        "logon" => {
            if inner.session.is_some() {
                return error(306, "Another session is active");
            }
            let id = new_session(&mut inner, now);
            json!({
                "STATUS": status_obj("S", 305, "Logon"),
                "SESSION": [{ "SessionID": id }],
                "id": 1
            })
            .to_string()
        }
        "session" => {
            let id = inner.session.as_ref().map_or("", |s| s.id.as_str());
            json!({
                "STATUS": status_obj("S", 307, "Session"),
                "SESSION": [{ "SessionID": id }],
                "id": 1
            })
            .to_string()
        }
        "logoff" | "curtail" => {
            let (sid, arg) = parameter.split_once(',').unwrap_or((parameter, ""));
            match inner.session.as_mut() {
                Some(s) if s.id == sid && !s.doomed => s.last_used = now,
                Some(s) if s.id == sid => {
                    inner.session = None;
                    return error(304, "Invalid session id");
                }
                _ => return error(304, "Invalid session id"),
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
            match (accepted, arg) {
                (true, _) => {
                    json!({ "STATUS": status_obj("S", 340, "Curtail"), "id": 1 }).to_string()
                }
                (false, "sleep") => error(341, "Miner is already in sleep mode"),
                (false, _) => error(341, "Miner is already active"),
            }
        }
        "config" => {
            let snap = reported(shared, inner.rig.snapshot(now));
            let mode = match snap.phase {
                FakePhase::Stopping | FakePhase::Sleeping => "Sleep",
                FakePhase::Mining | FakePhase::Waking => "None",
            };
            json!({
                "STATUS": status_obj("S", 33, "LUXminer config"),
                "CONFIG": [{
                    "CurtailMode": mode,
                    "IsPowerSupplyOn": true,
                    "Model": "Antminer S19 (fake)",
                    "OS": "LuxOS",
                    "SystemStatus": "Normal"
                }],
                "id": 1
            })
            .to_string()
        }
        "power" => {
            let snap = reported(shared, inner.rig.snapshot(now));
            json!({
                "STATUS": status_obj("S", 311, "Power usage"),
                "POWER": [{ "PSU": false, "Watts": snap.power_w.round() as i64 }],
                "id": 1
            })
            .to_string()
        }
        "summary" => summary(
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

fn summary(snap: RigSnapshot, quirks: bool) -> String {
    let ghs = snap.hashrate_ths * 1000.0;
    let main = json!({
        "GHS 5s": ghs,
        "GHS av": ghs,
        "Accepted": 1483,
        "Elapsed": 3453,
        // Replaced by a bare inf/nan below when the rig is idle and quirks are on.
        "Work Utility": if ghs > 0.0 { json!(11.5) } else { json!("@NONFINITE@") },
        "Device Hardware%": if ghs > 0.0 { json!(0.0) } else { json!("@NAN@") },
    });
    let extra = json!({ "Pool Rejected%": 0.0773 });
    let sep = if quirks { "" } else { "," };
    let text = format!(
        "{{\"STATUS\":{},\"SUMMARY\":[{main}{sep}{extra}],\"id\":1}}",
        status_obj("S", 11, "Summary")
    );
    if quirks {
        text.replace("\"@NONFINITE@\"", "inf")
            .replace("\"@NAN@\"", "nan")
    } else {
        text.replace("\"@NONFINITE@\"", "0")
            .replace("\"@NAN@\"", "0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
