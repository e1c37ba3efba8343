//! Rig management through the firmware's own API: put a rig to sleep, wake it, read its state.
//!
//! Stratum has no "pause": a rig only stops drawing power when its firmware is told to sleep
//! (or its PDU outlet is switched off). A drain is therefore: [`FirmwareClient::sleep`], then
//! poll [`FirmwareClient::status`] until it reports [`RigState::Sleeping`] with low power, and
//! later [`FirmwareClient::wake`]. This module speaks five firmware APIs:
//!
//! | [`FirmwareKind`] | protocol | sleep / wake | status |
//! |---|---|---|---|
//! | `luxos` | cgminer-style JSON over TCP (port 4028), one request per connection, logon session | `logon` → `curtail <sid>,sleep` / `curtail <sid>,wakeup` → `logoff` | `config` (`CurtailMode`), `power` (`Watts`), `summary` (`GHS 5s`) |
//! | `braiins` | Braiins OS+ REST (port 80, HTTP/1.1, JSON) | `POST /api/v1/auth/login` → token; `PUT /api/v1/actions/pause` / `resume` | `GET /api/v1/miner/details` (`status`), `GET /api/v1/miner/stats` (power, hashrate) |
//! | `antminer` | stock Antminer web API (port 80, HTTP Digest) | `get_miner_conf.cgi` → `set_miner_conf.cgi` with `miner-mode` 1 (sleep) / 0 (normal), the rest of the config as read | mode from `get_miner_conf.cgi`; `stats.cgi` (hashrate, power where reported), `summary.cgi` |
//! | `whatsminer` | Whatsminer API v2 (TCP 4028, cgminer-style JSON) | `get_token` → md5-crypt sign; AES-256-ECB encrypted `power_off` / `power_on` | `status` (`mineroff`), `summary` (`Power`, `MHS 5s`) |
//! | `vnish` | VNish web API (port 80, JSON) | `POST /api/v1/unlock` → bearer token; `POST /api/v1/mining/stop` / `start` | `GET /api/v1/summary` (`miner_state`, `power_consumption`, `hr_realtime`) |
//!
//! Protocol-faithful in-process fakes of each, answering with replies captured from real
//! machines (`tools/fixtures/firmware/`), for tests and `hashshift demo`, live in the tooling
//! crate (`hashshift_tools::fake_firmware`); the adapters' unit tests parse the same captures.
//!
//! # Invariants
//! - Every network step is bounded: connect and each request have a timeout
//!   ([`Timeouts`]), every reply is read into a buffer capped at
//!   [`FirmwareClient::max_reply_bytes`]. A rig that never answers costs at most
//!   `connect + request` per step.
//! - Nothing a rig sends can panic the proxy: replies are parsed into typed results or a
//!   [`FirmwareError::Malformed`].
//! - No shared mutable state: a [`FirmwareClient`] is a few numbers, cloned freely; each call
//!   opens its own connections, so a thousand rigs drain concurrently with no lock between them.
//! - Sessions are never hijacked: a LuxOS session held by another tool is reported as
//!   [`FirmwareError::SessionBusy`] (retry later), never borrowed through the `session`
//!   command, and the sessions we open are logged off again (best effort) so we do not lock
//!   the rig for others for a minute.
//!
//! # Why not `asic-rs`
//! The issue asks to build on the 256 Foundation's `asic-rs` crate where it is sound. We
//! evaluated versions 0.6.2 and 0.8.6 (the newest at the time) and do not use it:
//! - **Ports are fixed.** The LuxOS client is hard-wired to port 4028 and the Braiins REST
//!   client to port 80; the constructors taking a port are `pub(super)` (test-only). We cannot
//!   point it at a rig behind port forwarding, nor at our fakes on ephemeral `127.0.0.1` ports.
//! - **Unbounded reads.** Its cgminer reply reader appends to a `String` until a NUL, a newline
//!   or EOF, with only a 5 s timeout: a hostile or broken peer can make it buffer as much as it
//!   sends in 5 s.
//! - **Session handling.** Privileged LuxOS commands first ask `session` and reuse whatever
//!   session is open — another operator's — and never log off, leaving the rig locked to other
//!   tools until the session expires. A drain tool for a NOC must not do either.
//! - **Errors.** Everything is `anyhow`; "session in use", "login refused", "timed out" and
//!   "the rig said no" are not distinguishable, so no retry policy can be built on them (0.6
//!   even turns a failed pause into `Ok(false)`).
//! - **Weight.** With only the `luxminer` and `braiins` features it resolves to 196 (0.6.2)
//!   or 216 (0.8.6) crates — reqwest 0.13 with rustls on aws-lc-rs (a C build) among them —
//!   against the few hundred lines the two protocols need here. It does build with our
//!   toolchain; a cold debug build of 0.8.6 with those two features took 4 min 41 s on our
//!   2-core machine (niced, shared with other builds).
//!
//! What we took from it are facts, checked against its fixtures: LuxOS reports its curtail
//! state as `CurtailMode` in `config`, refuses a redundant curtail with "Miner is already in
//! sleep mode" / "Miner is already active" (which we treat as success: sleep and wake are
//! idempotent for us), and Braiins OS+ reports `status` 2 = normal, 3 = paused in
//! `miner/details` and power as `power_stats.approximated_consumption.watt` in `miner/stats`.
//!
//! # HTTP for Braiins: `hyper`, not reqwest
//! Firmware web APIs are plain HTTP on the LAN (no TLS), one small JSON request at a time.
//! The Braiins adapter uses the proxy's one HTTP client, [`crate::http_client`] (hyper's
//! HTTP/1.1 connection API, one request per connection, bounded connect, request and reply
//! size); hyper is in the tree anyway for the proxy's HTTP server. reqwest would add a
//! connection pool, tower and a TLS stack we do not need.

pub mod antminer;
pub mod braiins;
pub mod cgminer;
pub mod luxos;
pub mod vnish;
pub mod whatsminer;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Classify, Retry, Side};

/// Which management API a rig speaks. Lowercase in config (`kind = "luxos"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FirmwareKind {
    /// LuxOS: cgminer-style JSON API on TCP 4028 with logon sessions; sleep via `curtail`.
    Luxos,
    /// Braiins OS+ (≥ 25.07) REST API on port 80: token login, `actions/pause` / `resume`.
    Braiins,
    /// Stock Antminer (and Hiveon) web API on port 80: HTTP Digest; sleep and wake through the
    /// `miner-mode` setting of the whole miner config (read-modify-write).
    Antminer,
    /// Whatsminer API v2 on TCP 4028: token from `get_token`, AES-256-ECB encrypted
    /// `power_off` / `power_on`.
    Whatsminer,
    /// VNish web API on port 80: `unlock` token; `mining/stop` / `start` (or pause / resume).
    Vnish,
}

impl FirmwareKind {
    /// The port the firmware listens on by default (4028 for LuxOS, 80 for Braiins OS+).
    pub fn default_port(self) -> u16 {
        match self {
            FirmwareKind::Luxos | FirmwareKind::Whatsminer => 4028,
            FirmwareKind::Braiins | FirmwareKind::Antminer | FirmwareKind::Vnish => 80,
        }
    }

    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareKind::Luxos => "luxos",
            FirmwareKind::Braiins => "braiins",
            FirmwareKind::Antminer => "antminer",
            FirmwareKind::Whatsminer => "whatsminer",
            FirmwareKind::Vnish => "vnish",
        }
    }
}

impl fmt::Display for FirmwareKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Login for a firmware API. `Debug` never prints the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name (Braiins OS+: usually `root`). LuxOS `logon` takes none.
    pub user: String,
    password: String,
}

impl Credentials {
    /// Credentials with this user and password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The password, for the adapters that send it. Kept behind a method so it is not
    /// printed by accident (`Debug` redacts it).
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where and how to reach one rig's management API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The firmware's API.
    pub kind: FirmwareKind,
    /// Address of the management API (IP and port).
    pub addr: SocketAddr,
    /// Login, where the firmware needs one.
    pub credentials: Credentials,
}

impl Endpoint {
    /// An endpoint for `kind` at `addr`.
    pub fn new(kind: FirmwareKind, addr: SocketAddr, credentials: Credentials) -> Self {
        Endpoint {
            kind,
            addr,
            credentials,
        }
    }
}

/// What the firmware says the rig is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RigState {
    /// Hashing (the firmware is not curtailed and reports hashrate).
    Mining,
    /// Sleep was commanded and acknowledged but the rig still hashes (LuxOS takes a few
    /// seconds; Braiins OS+ winds its boards down). Not yet safe to hand its power away.
    Stopping,
    /// Asleep: curtailed and no hashrate. Its power is only the control board's.
    Sleeping,
    /// Not curtailed but not hashing yet: booting or ramping after a wake (like a reboot,
    /// minutes on real rigs), or stopped for a reason the firmware does not tell.
    Waking,
    /// The firmware reported something this adapter does not know how to read.
    Unknown,
}

/// A rig's state as read from its firmware.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RigStatus {
    /// What the rig is doing.
    pub state: RigState,
    /// Power at the wall as the firmware estimates it, in watts (can be off by 5–20%).
    pub power_w: Option<f64>,
    /// Current hashrate (5 s average where the firmware has one), in TH/s.
    pub hashrate_ths: Option<f64>,
}

/// Bounds on each network step. One call makes a few requests (LuxOS sleep: `logon`,
/// `curtail`, `logoff`, twice when the session expired; Braiins: login and the action, again
/// after a refused token), so a call is bounded by a small multiple of `connect + request`;
/// callers wanting one deadline per rig wrap the call in `tokio::time::timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// One request on an open connection: write it and read the whole reply.
    pub request: Duration,
}

impl Default for Timeouts {
    /// 3 s to connect, 5 s per request: rigs on a busy LAN answer within a second, and a
    /// LuxOS `curtail` replies only once the command is accepted.
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            request: Duration::from_secs(5),
        }
    }
}

/// How long LuxOS keeps an idle session: a session another tool left open is gone by then.
pub const LUXOS_SESSION_IDLE: Duration = Duration::from_secs(60);

/// Why a firmware call failed. Each variant says whether trying again later makes sense
/// ([`Classify::retry`], [`FirmwareError::is_retryable`]); the side is always
/// [`Side::Firmware`]: even a refused login is fixed on the rig or in its credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// The TCP connection could not be made (rig down, wrong address, refused). Retryable.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The rig's management address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A step did not finish in time (`step` names it: "connect", "request"). Retryable.
    #[error("{addr}: {step} timed out after {after:?}")]
    Timeout {
        /// The rig's management address.
        addr: SocketAddr,
        /// Which step timed out.
        step: &'static str,
        /// The bound that was hit.
        after: Duration,
    },
    /// The connection broke mid-exchange (reset, closed before a full reply). Retryable.
    #[error("{addr}: connection failed during {command}: {source}")]
    Io {
        /// The rig's management address.
        addr: SocketAddr,
        /// The command being sent.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The firmware refused our login (wrong credentials, API write access disabled). Not
    /// retryable: an operator must fix the credentials or the rig's settings.
    #[error("{addr}: login refused: {detail}")]
    LoginRefused {
        /// The rig's management address.
        addr: SocketAddr,
        /// What the firmware said.
        detail: String,
    },
    /// Another tool holds the rig's only session (LuxOS allows one at a time; it expires after
    /// a minute idle). Retryable later.
    #[error("{addr}: session busy (another tool is logged on): {detail}")]
    SessionBusy {
        /// The rig's management address.
        addr: SocketAddr,
        /// What the firmware said.
        detail: String,
    },
    /// Our session or token expired again right after a fresh login. Retryable.
    #[error("{addr}: session expired: {detail}")]
    SessionExpired {
        /// The rig's management address.
        addr: SocketAddr,
        /// What the firmware said.
        detail: String,
    },
    /// The reply could not be read (not JSON even after the cgminer quirks are repaired, too
    /// large, a missing field, a broken HTTP framing). Retryable: rigs mid-reboot send
    /// garbage, but a rig that always does needs an operator.
    #[error("{addr}: malformed reply to {command}: {detail}")]
    Malformed {
        /// The rig's management address.
        addr: SocketAddr,
        /// The command whose reply was bad.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// The firmware understood and refused the command (cgminer `STATUS:"E"`, HTTP 4xx/5xx).
    /// `retryable` is true for transient refusals (HTTP 5xx, 429, 503).
    #[error("{addr}: {command} rejected: {detail}")]
    Rejected {
        /// The rig's management address.
        addr: SocketAddr,
        /// The refused command.
        command: String,
        /// What the firmware said.
        detail: String,
        /// Whether the same command may succeed later.
        retryable: bool,
    },
}

impl FirmwareError {
    /// Whether trying the same call again later can succeed without an operator.
    pub fn is_retryable(&self) -> bool {
        self.retry().is_retryable()
    }
}

impl Classify for FirmwareError {
    fn side(&self) -> Side {
        Side::Firmware
    }

    fn retry(&self) -> Retry {
        match self {
            FirmwareError::Connect { .. }
            | FirmwareError::Timeout { .. }
            | FirmwareError::Io { .. }
            | FirmwareError::SessionExpired { .. }
            | FirmwareError::Malformed { .. } => Retry::Yes,
            // The other tool's session expires by itself once it stops using it.
            FirmwareError::SessionBusy { .. } => Retry::After(LUXOS_SESSION_IDLE),
            FirmwareError::LoginRefused { .. } => Retry::No,
            FirmwareError::Rejected { retryable, .. } => Retry::from_bool(*retryable),
        }
    }
}

/// Talks to rigs' firmware. Cheap to clone, no shared state: use one from many tasks at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareClient {
    /// Bounds on each network step.
    pub timeouts: Timeouts,
    /// The largest reply read from a rig; a longer one is [`FirmwareError::Malformed`].
    pub max_reply_bytes: usize,
}

impl Default for FirmwareClient {
    fn default() -> Self {
        FirmwareClient::new(Timeouts::default())
    }
}

impl FirmwareClient {
    /// Replies larger than this are refused (a LuxOS `stats` reply is ~10 KiB; Braiins OS+
    /// `miner/stats` ~2 KiB).
    pub const DEFAULT_MAX_REPLY_BYTES: usize = 256 * 1024;

    /// A client with these timeouts and the default reply bound.
    pub fn new(timeouts: Timeouts) -> Self {
        FirmwareClient {
            timeouts,
            max_reply_bytes: Self::DEFAULT_MAX_REPLY_BYTES,
        }
    }

    /// Command the rig to sleep. `Ok` means the firmware accepted the command (or was already
    /// asleep), not that power has dropped: confirm with [`FirmwareClient::status`].
    pub async fn sleep(&self, endpoint: &Endpoint) -> Result<(), FirmwareError> {
        match endpoint.kind {
            FirmwareKind::Luxos => luxos::curtail(self, endpoint, luxos::Curtail::Sleep).await,
            FirmwareKind::Braiins => braiins::action(self, endpoint, braiins::Action::Pause).await,
            FirmwareKind::Antminer => antminer::sleep(self, endpoint).await,
            FirmwareKind::Whatsminer => whatsminer::sleep(self, endpoint).await,
            FirmwareKind::Vnish => vnish::sleep(self, endpoint).await,
        }
    }

    /// Command the rig to wake. `Ok` means the firmware accepted the command (or was already
    /// awake); hashing resumes after the firmware's ramp (minutes on real rigs).
    pub async fn wake(&self, endpoint: &Endpoint) -> Result<(), FirmwareError> {
        match endpoint.kind {
            FirmwareKind::Luxos => luxos::curtail(self, endpoint, luxos::Curtail::Wakeup).await,
            FirmwareKind::Braiins => braiins::action(self, endpoint, braiins::Action::Resume).await,
            FirmwareKind::Antminer => antminer::wake(self, endpoint).await,
            FirmwareKind::Whatsminer => whatsminer::wake(self, endpoint).await,
            FirmwareKind::Vnish => vnish::wake(self, endpoint).await,
        }
    }

    /// Read what the rig is doing, its power and hashrate.
    pub async fn status(&self, endpoint: &Endpoint) -> Result<RigStatus, FirmwareError> {
        match endpoint.kind {
            FirmwareKind::Luxos => luxos::status(self, endpoint).await,
            FirmwareKind::Braiins => braiins::status(self, endpoint).await,
            FirmwareKind::Antminer => antminer::status(self, endpoint).await,
            FirmwareKind::Whatsminer => whatsminer::status(self, endpoint).await,
            FirmwareKind::Vnish => vnish::status(self, endpoint).await,
        }
    }
}

/// [`FirmwareClient::sleep`] with default timeouts.
pub async fn sleep(endpoint: &Endpoint) -> Result<(), FirmwareError> {
    FirmwareClient::default().sleep(endpoint).await
}

/// [`FirmwareClient::wake`] with default timeouts.
pub async fn wake(endpoint: &Endpoint) -> Result<(), FirmwareError> {
    FirmwareClient::default().wake(endpoint).await
}

/// [`FirmwareClient::status`] with default timeouts.
pub async fn status(endpoint: &Endpoint) -> Result<RigStatus, FirmwareError> {
    FirmwareClient::default().status(endpoint).await
}

/// Connect with the client's connect timeout, mapping failures to [`FirmwareError`].
async fn connect(
    client: &FirmwareClient,
    addr: SocketAddr,
) -> Result<tokio::net::TcpStream, FirmwareError> {
    match tokio::time::timeout(
        client.timeouts.connect,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(stream)) => {
            // Small request/response exchanges: do not wait for Nagle.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(FirmwareError::Connect { addr, source }),
        Err(_) => Err(FirmwareError::Timeout {
            addr,
            step: "connect",
            after: client.timeouts.connect,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_redacts_password() {
        let c = Credentials::new("root", "hunter2");
        let shown = format!("{c:?}");
        assert!(shown.contains("root"));
        assert!(!shown.contains("hunter2"));
        let ep = Endpoint::new(
            FirmwareKind::Braiins,
            "127.0.0.1:80".parse().unwrap(),
            c.clone(),
        );
        assert!(!format!("{ep:?}").contains("hunter2"));
        assert_eq!(c.password(), "hunter2");
    }

    #[test]
    fn kind_names_are_lowercase_in_config() {
        #[derive(Deserialize)]
        struct Cfg {
            kind: FirmwareKind,
        }
        let c: Cfg = toml::from_str("kind = \"luxos\"").unwrap();
        assert_eq!(c.kind, FirmwareKind::Luxos);
        let c: Cfg = toml::from_str("kind = \"braiins\"").unwrap();
        assert_eq!(c.kind, FirmwareKind::Braiins);
        assert!(toml::from_str::<Cfg>("kind = \"LuxOS\"").is_err());
        assert_eq!(
            serde_json::to_string(&RigState::Sleeping).unwrap(),
            "\"sleeping\""
        );
    }

    #[test]
    fn every_error_is_the_firmware_side_with_its_retry_hint() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let detail = String::new;
        let cases = [
            (FirmwareError::Connect { addr, source: io() }, Retry::Yes),
            (
                FirmwareError::Timeout {
                    addr,
                    step: "request",
                    after: Duration::from_secs(5),
                },
                Retry::Yes,
            ),
            (
                FirmwareError::Io {
                    addr,
                    command: "x".into(),
                    source: io(),
                },
                Retry::Yes,
            ),
            (
                FirmwareError::LoginRefused {
                    addr,
                    detail: detail(),
                },
                Retry::No,
            ),
            (
                FirmwareError::SessionBusy {
                    addr,
                    detail: detail(),
                },
                Retry::After(LUXOS_SESSION_IDLE),
            ),
            (
                FirmwareError::SessionExpired {
                    addr,
                    detail: detail(),
                },
                Retry::Yes,
            ),
            (
                FirmwareError::Malformed {
                    addr,
                    command: "x".into(),
                    detail: detail(),
                },
                Retry::Yes,
            ),
            (
                FirmwareError::Rejected {
                    addr,
                    command: "x".into(),
                    detail: detail(),
                    retryable: true,
                },
                Retry::Yes,
            ),
        ];
        for (e, retry) in cases {
            assert_eq!(e.side(), Side::Firmware, "{e}");
            assert_eq!(e.retry(), retry, "{e}");
            assert_eq!(e.is_retryable(), retry.is_retryable(), "{e}");
        }
    }

    #[test]
    fn retryability() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(
            FirmwareError::SessionBusy {
                addr,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(
            !FirmwareError::LoginRefused {
                addr,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(
            !FirmwareError::Rejected {
                addr,
                command: "x".into(),
                detail: String::new(),
                retryable: false
            }
            .is_retryable()
        );
    }
}
