//! Protocol-faithful fakes of the firmware APIs, for tests and `hashshift demo`.
//!
//! Each fake is a real server on `127.0.0.1:0` in this process, speaking the firmware's wire
//! protocol (not a mock of our adapter), over a simulated rig ([`RigModel`]) whose power and
//! hashrate follow the commands with configurable delays:
//! - [`FakeLuxos`]: the LuxOS 4028 JSON API — one request per connection, `logon` sessions that
//!   expire when idle, "session in use" while another session holds the rig, `curtail`,
//!   `config`/`power`/`summary`/`stats`/`session`/`logoff`, replies with cgminer's quirks (trailing NUL,
//!   `inf`/`nan`, `}{`).
//! - [`FakeBraiins`]: the Braiins OS+ REST API — token login, `actions/pause`/`resume`,
//!   `miner/details`/`miner/stats`, chunked and Content-Length bodies.
//! - [`FakeAntminer`]: the stock Antminer web API — HTTP Digest enforced on the wire,
//!   `get_miner_conf`/`set_miner_conf` with the miner process restarting after a write,
//!   `stats`/`summary`.
//! - [`FakeWhatsminer`]: the Whatsminer API v2 on 4028 — `get_token`, AES-256-ECB encrypted
//!   `power_off`/`power_on`, `summary`/`status`, write access that can be switched off.
//! - [`FakeVnish`]: the VNish web API — `unlock` bearer tokens, `mining/stop`/`start`,
//!   `summary`.
//!
//! Every fake answers with replies captured from real machines ([`fixtures`]), patching only
//! the fields that follow the simulated rig (state, power, hashrate, session ids).
//!
//! Both expose their state to tests ([`FakeLuxos::snapshot`], command counters) and fault
//! switches: [`Faults::silent`] (accept, read, never answer), [`Faults::malformed`] (broken
//! replies), [`Faults::stuck`] (commands acknowledged, rig unchanged), and on the LuxOS fake
//! [`Faults::reset`] (connections reset), [`Faults::lie_asleep`] (reports sleep while the rig
//! hashes) and [`Faults::lie_watts`] (reports a made-up wattage). Every reply a fault altered
//! is counted ([`Faults::hits`]), so a test can prove its fault really happened. All are off by
//! default. They stop when dropped or on `shutdown()`.
//!
//! Each fake keeps its state behind one `std::sync::Mutex`, never held across an `.await`:
//! the fakes are per-rig, so there is no contention between rigs.

/// The accessors every fake has, over its `addr`, `shared` (state with `rig` and `counters`)
/// and `server` fields: `addr`, `snapshot`, `phase`, `counters`, `set_silent`,
/// `set_malformed`, `set_stuck` and `shutdown`; `reset` adds `set_reset`, `fault_hits` adds
/// `fault_hits` (for the fakes that count their faults' hits). `$counted` says what the
/// counters count.
macro_rules! fake_accessors {
    ($fake:ident, $counted:literal $(, $extra:ident)*) => {
        impl $fake {
            /// The API's address.
            pub fn addr(&self) -> SocketAddr {
                self.addr
            }

            /// The simulated rig now.
            pub fn snapshot(&self) -> RigSnapshot {
                self.shared.lock().rig.snapshot(Instant::now())
            }

            /// The simulated rig's phase now.
            pub fn phase(&self) -> FakePhase {
                self.snapshot().phase
            }

            #[doc = concat!("Requests received so far, ", $counted, ".")]
            pub fn counters(&self) -> Counters {
                self.shared.lock().counters.clone()
            }

            /// Hang: read requests, never answer.
            pub fn set_silent(&self, on: bool) {
                self.shared.faults.set_silent(on);
            }

            /// Answer requests with truncated JSON.
            pub fn set_malformed(&self, on: bool) {
                self.shared.faults.set_malformed(on);
            }

            /// Acknowledge sleep/wake commands but leave the rig as it is (tests confirmation
            /// deadlines).
            pub fn set_stuck(&self, on: bool) {
                self.shared.faults.set_stuck(on);
            }

            /// Stop serving and wait for open connections to end.
            pub async fn shutdown(&self) {
                self.server.shutdown().await;
            }
        }
        $(fake_accessors!(@ $fake $extra);)*
    };
    (@ $fake:ident reset) => {
        impl $fake {
            /// Reset every connection after reading its request, without answering.
            pub fn set_reset(&self, on: bool) {
                self.shared.faults.set_reset(on);
            }
        }
    };
    (@ $fake:ident fault_hits) => {
        impl $fake {
            /// Replies a fault altered or withheld so far.
            pub fn fault_hits(&self) -> u64 {
                self.shared.faults.hits()
            }
        }
    };
}

mod antminer;
mod braiins;
pub mod fixtures;
mod luxos;
mod rig;
mod vnish;
mod whatsminer;

pub use antminer::{ANTMINER_REALM, AntminerRestartReply, FakeAntminer, FakeAntminerConfig};
pub use braiins::{FakeBraiins, FakeBraiinsConfig};
pub use luxos::{FakeLuxos, FakeLuxosConfig};
pub use rig::{FakePhase, RigModel, RigProfile, RigSnapshot};
pub use vnish::{FakeVnish, FakeVnishConfig};
pub use whatsminer::{FakeWhatsminer, FakeWhatsminerConfig, WhatsminerModel};

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most connections a fake serves at once; more wait in the accept queue (a fake is one rig,
/// and a real rig's API serves a handful).
const MAX_CONNECTIONS: usize = 64;

/// How long a fake waits for a complete request before dropping the connection.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request (HTTP body, or 4028 JSON request) a fake reads.
const MAX_REQUEST: usize = 16 * 1024;

/// Fault switches shared by the fakes (set from tests at any time).
#[derive(Debug)]
pub struct Faults {
    silent: AtomicBool,
    malformed: AtomicBool,
    stuck: AtomicBool,
    reset: AtomicBool,
    lie_asleep: AtomicBool,
    /// Watts to report instead of the real figure; `u64::MAX` is off.
    lie_watts: AtomicU64,
    hits: AtomicU64,
}

/// `lie_watts` when off.
const NO_LIE: u64 = u64::MAX;

impl Default for Faults {
    fn default() -> Self {
        Faults {
            silent: AtomicBool::new(false),
            malformed: AtomicBool::new(false),
            stuck: AtomicBool::new(false),
            reset: AtomicBool::new(false),
            lie_asleep: AtomicBool::new(false),
            lie_watts: AtomicU64::new(NO_LIE),
            hits: AtomicU64::new(0),
        }
    }
}

impl Faults {
    /// Accept connections and read requests but never answer (a hung rig).
    pub fn silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    /// Answer with broken replies (truncated JSON).
    pub fn malformed(&self) -> bool {
        self.malformed.load(Ordering::Relaxed)
    }

    /// Acknowledge sleep/wake commands but leave the rig as it is (a firmware that lies, a
    /// rig fed around its control board): what a confirmation deadline must catch.
    pub fn stuck(&self) -> bool {
        self.stuck.load(Ordering::Relaxed)
    }

    /// Reset every connection (RST) after reading the request, without answering.
    pub fn reset(&self) -> bool {
        self.reset.load(Ordering::Relaxed)
    }

    /// Report the rig asleep (sleep mode, control-board watts, no hashrate) whatever it does:
    /// a firmware whose status lies while the boards keep hashing.
    pub fn lie_asleep(&self) -> bool {
        self.lie_asleep.load(Ordering::Relaxed)
    }

    /// The wattage to report instead of the rig's real draw, if set.
    pub fn lie_watts(&self) -> Option<u64> {
        Some(self.lie_watts.load(Ordering::Relaxed)).filter(|w| *w != NO_LIE)
    }

    /// Replies a fault altered (or withheld) so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    fn set_reset(&self, on: bool) {
        self.reset.store(on, Ordering::Relaxed);
    }

    fn set_lie_asleep(&self, on: bool) {
        self.lie_asleep.store(on, Ordering::Relaxed);
    }

    fn set_lie_watts(&self, watts: Option<u64>) {
        let w = watts.map_or(NO_LIE, |w| w.min(NO_LIE - 1));
        self.lie_watts.store(w, Ordering::Relaxed);
    }

    fn set_stuck(&self, on: bool) {
        self.stuck.store(on, Ordering::Relaxed);
    }

    fn set_silent(&self, on: bool) {
        self.silent.store(on, Ordering::Relaxed);
    }

    fn set_malformed(&self, on: bool) {
        self.malformed.store(on, Ordering::Relaxed);
    }
}

/// Counts of commands a fake received, by command name (LuxOS command or `METHOD path`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<String, u64>);

impl Counters {
    /// How many times `command` was received.
    pub fn get(&self, command: &str) -> u64 {
        self.0.get(command).copied().unwrap_or(0)
    }

    fn bump(&mut self, command: &str) {
        // Bounded: only names the fake knows are counted individually.
        *self.0.entry(command.to_owned()).or_insert(0) += 1;
    }

    /// All counts.
    pub fn all(&self) -> &BTreeMap<String, u64> {
        &self.0
    }
}

/// Tokens remembered at once by [`Tokens`] (past that all are forgotten: clients log in again).
const MAX_TOKENS: usize = 1024;

/// The login tokens an HTTP fake hands out and accepts (Braiins OS+, VNish). The next
/// `doom_next` handed out are never remembered, so they are refused on first use.
#[derive(Default)]
struct Tokens {
    live: HashSet<String>,
    /// Tokens handed out so far (the next one's seed).
    issued: u64,
    doom_next: u32,
}

impl Tokens {
    /// A new token, `prefix` then `width` hex digits, remembered unless doomed.
    fn issue(&mut self, prefix: &str, width: usize) -> String {
        self.issued = self.issued.wrapping_add(1);
        let seed = self.issued.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let token = format!("{prefix}{seed:0width$x}");
        if self.doom_next > 0 {
            self.doom_next -= 1;
        } else {
            if self.live.len() >= MAX_TOKENS {
                self.live.clear();
            }
            self.live.insert(token.clone());
        }
        token
    }

    /// Whether `token` is one handed out and still remembered.
    fn accepts(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| self.live.contains(t))
    }
}

/// What a fake's connection tasks share: its config, its state under one std mutex (never held
/// across an `.await`) and its fault switches.
struct Shared<C, S> {
    config: C,
    inner: Mutex<S>,
    faults: Faults,
}

impl<C, S> Shared<C, S> {
    fn lock(&self) -> MutexGuard<'_, S> {
        // A panic elsewhere while holding the lock leaves plain data: keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Binds `127.0.0.1:0` and serves it with `serve` over state shared by its connections: the
/// address, the shared state and the server, for a fake's `start`.
async fn listen<C, S, F, Fut>(
    config: C,
    state: S,
    serve: F,
) -> std::io::Result<(SocketAddr, Arc<Shared<C, S>>, Server)>
where
    C: Send + Sync + 'static,
    S: Send + 'static,
    F: Fn(TcpStream, Arc<Shared<C, S>>, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        inner: Mutex::new(state),
        faults: Faults::default(),
    });
    let s = shared.clone();
    let server = Server::spawn(listener, move |stream, cancel| {
        serve(stream, s.clone(), cancel)
    });
    Ok((addr, shared, server))
}

/// The accept loop and task bookkeeping every fake shares.
struct Server {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Server {
    /// Serve `listener` until cancelled, one task per connection running `handle`.
    fn spawn<F, Fut>(listener: TcpListener, handle: F) -> Server
    where
        F: Fn(TcpStream, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let (c, t) = (cancel.clone(), tracker.clone());
        tracker.spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    () = c.cancelled() => return,
                    r = listener.accept() => r,
                };
                match accepted {
                    Ok((stream, _)) => {
                        let conn = handle(stream, c.clone());
                        let c = c.clone();
                        t.spawn(async move {
                            tokio::select! {
                                () = c.cancelled() => {}
                                () = conn => {}
                            }
                            drop(permit);
                        });
                    }
                    // Out of descriptors and the like: back off instead of spinning.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        tracker.close();
        Server { cancel, tracker }
    }

    async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves one connection of an HTTP fake with `hyper`'s server: one request, no keep-alive,
/// the request head within [`READ_TIMEOUT`]. Errors (a client that sent garbage or went away)
/// only end this connection.
async fn serve_http<F, Fut, B>(stream: TcpStream, handle: F)
where
    F: Fn(hyper::Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<hyper::Response<B>, Infallible>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service_fn(handle))
        .await;
}

/// An HTTP request's body, whole within [`READ_TIMEOUT`] and at most [`MAX_REQUEST`] bytes;
/// `None` when it is not.
async fn read_body(body: Incoming) -> Option<Bytes> {
    match tokio::time::timeout(READ_TIMEOUT, Limited::new(body, MAX_REQUEST).collect()).await {
        Ok(Ok(body)) => Some(body.to_bytes()),
        _ => None,
    }
}

/// One exchange of a 4028 JSON API fake (LuxOS, Whatsminer): read one JSON request within
/// [`READ_TIMEOUT`], apply the faults (`silent` hangs, `reset` closes with RST, `malformed`
/// sends `malformed` as the reply), else send `answer`'s reply with a trailing NUL, then
/// close. `answer` returning `None` closes without a reply.
async fn serve_json_once<C, S>(
    mut stream: TcpStream,
    shared: &Shared<C, S>,
    cancel: &CancellationToken,
    malformed: &[u8],
    answer: impl FnOnce(&Value) -> Option<String>,
) {
    let request = match tokio::time::timeout(READ_TIMEOUT, read_json_request(&mut stream)).await {
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
        malformed.to_vec()
    } else {
        let Some(reply) = answer(&request) else {
            return;
        };
        let mut r = reply.into_bytes();
        r.push(0);
        r
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

/// Reads until the buffer holds one complete JSON value (the client does not close its side);
/// a request that is not JSON reads as `null` (the fakes answer it with an error status).
async fn read_json_request(stream: &mut TcpStream) -> Option<Value> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_REQUEST {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => return Some(v),
            Err(e) if e.is_eof() => continue,
            Err(_) => return Some(Value::Null),
        }
    }
}
