//! The proxy's configuration: `config.example.toml` mapped onto typed structs.
//!
//! Every struct denies unknown keys, so a typo is an error that names the key instead of a
//! silently ignored setting. [`Config::from_toml`] parses and then [`Config::validate`]s once;
//! the rest of the proxy can rely on the invariants listed on each field.

pub mod limits;
mod metrics;
mod site;
mod url;

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use metrics::Metrics;
pub use site::{Cidr, Power, Rig, RigGroup, glob_match};
pub use url::{PoolUrl, UpstreamProtocol};

/// Why a configuration could not be used. The message always names the offending key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A value of the right type that makes no sense.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `upstream[1].weight`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`Config::redacted`] puts in place of a secret.
pub const REDACTED: &str = "<redacted>";

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners miners connect to. At least one.
    pub downstream: Vec<Downstream>,
    /// Pools, in failover order by `priority`, split by `weight`. At least one.
    pub upstream: Vec<Upstream>,
    /// Per-miner variable difficulty.
    #[serde(default)]
    pub vardiff: Vardiff,
    /// How miners are packed onto upstream connections.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Limits that protect the proxy from misbehaving peers.
    #[serde(default)]
    pub limits: Limits,
    /// Pool health and failover timing.
    #[serde(default)]
    pub failover: Failover,
    /// The admin socket (`hashshift ctl`). Absent: no control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Admin>,
    /// The HTTP API (grid curtailment signal, GPU requests, status). Needs `[admin]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
    /// The Prometheus endpoint. Absent: no metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// The site's power budget. Absent: no power control (rigs are only listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<Power>,
    /// Groups of rigs: model, efficiency, management API, membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rig_group: Vec<RigGroup>,
    /// Per-rig overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rig: Vec<Rig>,
    /// The GPU scheduler power is handed to (`kind = "slurm" | "webhook" | "command"`).
    /// Absent: GPU demand arrives through the admin socket (`ctl gpu-request`) and grants are
    /// only recorded in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_scheduler: Option<crate::gpu::GpuSchedulerConfig>,
}

/// The HTTP API.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    /// Address to listen on (keep it on a management network).
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token that changes (`POST`) need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Or a file holding it (e.g. a Docker secret); surrounding whitespace is ignored.
    /// Neither (or an empty token): changes are refused, reads still work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
}

/// The admin socket and where the control plane keeps its durable state.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Path of the Unix socket (created with mode 0660; a stale one is replaced).
    pub socket: std::path::PathBuf,
    /// UIDs besides the proxy's own that may use the socket (the kernel reports each
    /// client's UID; others get one error line).
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Directory for the audit log and the persisted power state (drained rigs, grants,
    /// curtailment), so a restart never re-energises rigs by itself. Required with `[power]`.
    /// Absent: the audit log is kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<std::path::PathBuf>,
}

/// Pool health and failover timing. Every key is optional (defaults below).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    /// A pool that sends no new job for this long is treated as down (pools normally send
    /// one every 30–60 s).
    pub no_work_timeout_secs: f64,
    /// A recovered higher-priority pool gets miners back after being healthy this long.
    pub failback_after_secs: f64,
    /// How often the weighted split may move one miner between pools of equal priority.
    pub rebalance_every_secs: f64,
    /// Connecting to a pool (TCP, and for SV2 the Noise handshake and channel setup) may take
    /// this long before the attempt counts as failed.
    pub pool_connect_timeout_secs: f64,
    /// A share sent to a pool that has not been answered within this is answered to the miner
    /// as lost (SV2 pools may batch acknowledgements; keep it well above their batch delay).
    pub pool_submit_timeout_secs: f64,
    /// A write to a pool that has not completed within this marks the pool down: its queued
    /// shares are answered at once and its miners fail over.
    pub pool_write_timeout_secs: f64,
    /// Longest wait between reconnection attempts to a pool that is down (backoff doubles
    /// from 1 s up to this).
    pub pool_max_backoff_secs: f64,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            no_work_timeout_secs: 120.0,
            failback_after_secs: 30.0,
            rebalance_every_secs: 10.0,
            pool_connect_timeout_secs: 10.0,
            pool_submit_timeout_secs: 30.0,
            pool_write_timeout_secs: 5.0,
            pool_max_backoff_secs: 30.0,
        }
    }
}

/// A listener for miners.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Downstream {
    /// Wire protocol spoken on this listener.
    pub protocol: DownstreamProtocol,
    /// Address to listen on, e.g. `0.0.0.0:3333`.
    pub listen: SocketAddr,
    /// SV2 only, required there: the authority key file (written by `hashshift keygen`) whose
    /// key signs the Noise certificate of the proxy's static key. Miners pin its public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_key_file: Option<std::path::PathBuf>,
    /// SV2 only: how long each Noise certificate is valid, from the handshake on (seconds,
    /// 60 to 10 years).
    #[serde(default = "default_cert_validity_secs")]
    pub cert_validity_secs: u32,
    /// SV2 only: largest frame payload accepted from a miner, checked before buffering it
    /// (bytes, 1024 to 16 MiB). Miner messages are small: the largest, `SetupConnection`,
    /// is about 1.3 KB.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// SV2 only: most mining channels one connection may open.
    #[serde(default = "default_max_channels")]
    pub max_channels_per_connection: usize,
}

impl Downstream {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("downstream[{i}].{k}");
        match self.protocol {
            DownstreamProtocol::Sv1 => {
                if self.authority_key_file.is_some() {
                    return Err(invalid(
                        key("authority_key_file"),
                        "only SV2 listeners use an authority key",
                    ));
                }
            }
            DownstreamProtocol::Sv2 => {
                if self.authority_key_file.is_none() {
                    return Err(invalid(
                        key("authority_key_file"),
                        "required for protocol = \"sv2\" (create one with `hashshift keygen --out FILE`)",
                    ));
                }
            }
        }
        if !(60..=315_360_000).contains(&self.cert_validity_secs) {
            return Err(invalid(
                key("cert_validity_secs"),
                "must be 60 to 315360000 (10 years)",
            ));
        }
        if !(1024..=(1 << 24)).contains(&self.max_frame_bytes) {
            return Err(invalid(key("max_frame_bytes"), "must be 1024 to 16777216"));
        }
        if !(1..=65_536).contains(&self.max_channels_per_connection) {
            return Err(invalid(
                key("max_channels_per_connection"),
                "must be 1 to 65536",
            ));
        }
        Ok(())
    }
}

fn default_cert_validity_secs() -> u32 {
    86_400
}

fn default_max_frame_bytes() -> usize {
    16_384
}

fn default_max_channels() -> usize {
    64
}

/// Wire protocol of a downstream listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DownstreamProtocol {
    /// Stratum V1 (JSON lines).
    Sv1,
    /// Stratum V2 (binary frames inside Noise NX), Mining protocol, standard and extended
    /// channels.
    Sv2,
}

/// A pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `stratum+tcp://HOST:PORT` or `stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY` (see
    /// [`PoolUrl`]).
    pub url: PoolUrl,
    /// Pool account (and, with `worker_identity = "fixed"`, the worker every share is sent as).
    pub user: String,
    /// Pool password; most pools ignore it.
    #[serde(default = "default_password")]
    pub password: String,
    /// Failover order: the lowest value is the primary. Pools with equal priority share the
    /// work by `weight`.
    #[serde(default)]
    pub priority: u32,
    /// Share of hashrate among pools of the same priority (relative, e.g. 70 and 30).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_password() -> String {
    "x".to_owned()
}

fn default_weight() -> u32 {
    1
}

/// Variable difficulty settings. Difficulties are SV1 pool difficulties (1 = 2^32 hashes per
/// share); values below 1 are valid, for lab and test rigs. Every key is optional.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Vardiff {
    /// Difficulty a new miner starts at (before any `suggest_difficulty`).
    pub initial: f64,
    /// Lowest difficulty ever assigned.
    pub min: f64,
    /// Highest difficulty ever assigned.
    pub max: f64,
    /// Share rate vardiff steers each miner toward.
    pub shares_per_minute: f64,
}

impl Default for Vardiff {
    fn default() -> Self {
        Vardiff {
            initial: 1024.0,
            min: 1.0,
            max: 1e12,
            shares_per_minute: 20.0,
        }
    }
}

/// How miners share upstream connections. Every key is optional.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregation {
    /// Bytes of the pool's extranonce2 the proxy keeps as a per-miner prefix; the miner rolls
    /// the rest. 2 bytes = up to 65,536 miners per connection.
    pub proxy_extranonce2_bytes: u8,
    /// Most miners on one upstream connection; another connection opens when all are full.
    pub max_miners_per_upstream: u32,
    /// Which worker name goes upstream on shares.
    pub worker_identity: WorkerIdentity,
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation {
            proxy_extranonce2_bytes: 2,
            max_miners_per_upstream: 1024,
            worker_identity: WorkerIdentity::Passthrough,
        }
    }
}

/// Which worker name the pool sees on each share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerIdentity {
    /// Each miner's own worker name.
    Passthrough,
    /// The upstream's `user` for every share.
    Fixed,
}

/// Defensive limits on peers, and the proxy's own timings towards miners. Every key is
/// optional (defaults below).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest SV1 line accepted from a miner, in bytes.
    pub max_line_bytes: usize,
    /// Messages that may wait for one miner (counted as 2 KiB each: its send buffer is capped
    /// at `send_queue × 2 KiB`, and never below what one job of the current pool needs); a
    /// miner that lets more pile up is not reading and is dropped.
    pub send_queue: usize,
    /// Most simultaneous miner connections.
    pub max_connections: usize,
    /// Most simultaneous miner connections from one address. Generous by default: a site's
    /// NAT can put hundreds of rigs behind one address.
    pub max_connections_per_address: usize,
    /// Seconds a new connection may take to subscribe and authorize.
    pub handshake_timeout_secs: u64,
    /// Seconds an authorized miner may send nothing at all before it is disconnected.
    pub idle_timeout_secs: u64,
    /// Seconds a write to a miner may take before the miner counts as not reading and is
    /// dropped (it must never hold up the others).
    pub write_timeout_secs: u64,
    /// Seconds a closing miner session still waits for the pool's verdicts on shares it
    /// already sent upstream, to relay them.
    pub drain_grace_secs: u64,
    /// Seconds a graceful stop (SIGTERM) lets sessions drain before they are aborted.
    pub shutdown_grace_secs: u64,
    /// SV2 miners: most shares acknowledged by one `SubmitShares.Success`.
    pub sv2_ack_batch: u32,
    /// HTTP API and metrics servers: most simultaneous connections (each server); further
    /// connections wait in the kernel's backlog.
    pub http_max_connections: usize,
    /// HTTP API and metrics servers: seconds a client may take to send a request's headers.
    pub http_header_timeout_secs: u64,
    /// HTTP API and metrics servers: seconds a connection may move no byte in either
    /// direction in the middle of a request (a stalled body, a client that stops reading).
    /// A kept-alive connection waiting for its next request is closed after the shorter of
    /// this and `http_header_timeout_secs`.
    pub http_idle_timeout_secs: u64,
    /// HTTP API: largest request body accepted, in bytes.
    pub http_max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 16 * 1024,
            send_queue: 64,
            max_connections: 100_000,
            max_connections_per_address: 512,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            write_timeout_secs: 10,
            drain_grace_secs: 5,
            shutdown_grace_secs: 10,
            sv2_ack_batch: 32,
            http_max_connections: 128,
            http_header_timeout_secs: 10,
            http_idle_timeout_secs: 60,
            http_max_body_bytes: 16 * 1024,
        }
    }
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text)
    }

    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with every secret replaced by [`REDACTED`], for printing
    /// (`check-config`) and logs: pool passwords other than the conventional `x`, the
    /// webhook's `authorization` header, and the command scheduler's environment values.
    /// Secrets that are read from the environment or files (firmware passwords, the HTTP
    /// token) are not in the config at all; their variable and file names are kept.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        for up in &mut c.upstream {
            if !up.password.is_empty() && up.password != default_password() {
                up.password = REDACTED.to_owned();
            }
        }
        if let Some(g) = &mut c.gpu_scheduler {
            g.redact_secrets(REDACTED);
        }
        c
    }

    /// Checks the invariants the rest of the proxy relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.downstream.is_empty() {
            return Err(invalid(
                "downstream",
                "at least one [[downstream]] listener is required",
            ));
        }
        if self.upstream.is_empty() {
            return Err(invalid(
                "upstream",
                "at least one [[upstream]] pool is required",
            ));
        }
        for (i, d) in self.downstream.iter().enumerate() {
            d.validate(i)?;
        }
        for (i, up) in self.upstream.iter().enumerate() {
            if up.weight == 0 {
                return Err(invalid(
                    format!("upstream[{i}].weight"),
                    "must be at least 1",
                ));
            }
            if up.user.is_empty() {
                return Err(invalid(format!("upstream[{i}].user"), "must not be empty"));
            }
        }
        let v = &self.vardiff;
        for (key, value) in [
            ("initial", v.initial),
            ("min", v.min),
            ("max", v.max),
            ("shares_per_minute", v.shares_per_minute),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    format!("vardiff.{key}"),
                    format!("must be a positive number, got {value}"),
                ));
            }
        }
        if v.min > v.max {
            return Err(invalid(
                "vardiff.min",
                format!("{} is above vardiff.max {}", v.min, v.max),
            ));
        }
        if !(v.min..=v.max).contains(&v.initial) {
            return Err(invalid(
                "vardiff.initial",
                format!(
                    "{} is outside [min, max] = [{}, {}]",
                    v.initial, v.min, v.max
                ),
            ));
        }
        let a = &self.aggregation;
        if !(1..=4).contains(&a.proxy_extranonce2_bytes) {
            return Err(invalid(
                "aggregation.proxy_extranonce2_bytes",
                "must be 1 to 4",
            ));
        }
        let capacity = 1u64 << (8 * u32::from(a.proxy_extranonce2_bytes));
        if a.max_miners_per_upstream == 0 || u64::from(a.max_miners_per_upstream) > capacity {
            return Err(invalid(
                "aggregation.max_miners_per_upstream",
                format!("must be 1 to {capacity} (256^proxy_extranonce2_bytes)"),
            ));
        }
        let f = &self.failover;
        for (key, value) in [
            ("no_work_timeout_secs", f.no_work_timeout_secs),
            ("failback_after_secs", f.failback_after_secs),
            ("rebalance_every_secs", f.rebalance_every_secs),
            ("pool_connect_timeout_secs", f.pool_connect_timeout_secs),
            ("pool_submit_timeout_secs", f.pool_submit_timeout_secs),
            ("pool_write_timeout_secs", f.pool_write_timeout_secs),
            ("pool_max_backoff_secs", f.pool_max_backoff_secs),
        ] {
            if !(value.is_finite() && value > 0.0 && value < 86_400.0) {
                return Err(invalid(
                    format!("failover.{key}"),
                    "must be between 0 and 86400 seconds",
                ));
            }
        }
        let l = &self.limits;
        if !(512..=(1 << 24)).contains(&l.max_line_bytes) {
            return Err(invalid("limits.max_line_bytes", "must be 512 to 16777216"));
        }
        for (key, value, max) in [
            ("send_queue", l.send_queue, 1 << 20),
            ("max_connections", l.max_connections, 10_000_000),
            (
                "max_connections_per_address",
                l.max_connections_per_address,
                10_000_000,
            ),
            ("http_max_connections", l.http_max_connections, 65_536),
            ("http_max_body_bytes", l.http_max_body_bytes, 1 << 24),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(
                    format!("limits.{key}"),
                    format!("must be 1 to {max}"),
                ));
            }
        }
        if !(1..=65_536).contains(&l.sv2_ack_batch) {
            return Err(invalid("limits.sv2_ack_batch", "must be 1 to 65536"));
        }
        for (key, value) in [
            ("handshake_timeout_secs", l.handshake_timeout_secs),
            ("idle_timeout_secs", l.idle_timeout_secs),
            ("write_timeout_secs", l.write_timeout_secs),
            ("drain_grace_secs", l.drain_grace_secs),
            ("shutdown_grace_secs", l.shutdown_grace_secs),
            ("http_header_timeout_secs", l.http_header_timeout_secs),
            ("http_idle_timeout_secs", l.http_idle_timeout_secs),
        ] {
            // Bounded: each becomes `Instant + Duration` per connection.
            if !(1..=86_400).contains(&value) {
                return Err(invalid(
                    format!("limits.{key}"),
                    "must be 1 to 86400 seconds",
                ));
            }
        }
        site::validate(self.power.as_ref(), &self.rig_group, &self.rig)?;
        if let Some(g) = &self.gpu_scheduler {
            g.validate()
                .map_err(|e| invalid("gpu_scheduler", e.to_string()))?;
        }
        if let Some(m) = &self.metrics {
            m.validate()?;
        }
        if self.http.is_some() && self.admin.is_none() {
            return Err(invalid(
                "http",
                "needs [admin] (the control plane it serves)",
            ));
        }
        // Fail closed: without a state directory a restart would forget which rigs were put
        // to sleep, the curtailment and the GPU grant.
        if self.power.is_some() && self.admin.as_ref().is_none_or(|a| a.state_dir.is_none()) {
            return Err(invalid(
                "admin.state_dir",
                "required with [power] (it keeps drained rigs, the curtailment and the GPU grant across restarts)",
            ));
        }
        Ok(())
    }
}
