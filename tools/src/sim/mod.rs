//! Simulated SV1 mining rigs that speak Stratum V1 like real firmware and really hash.
//!
//! A [`RigHandle`] is two halves: an async connection task (one per rig, one span per
//! connection) that runs the SV1 client state machine, and a blocking hashing thread
//! ([`hasher`]) that computes real sha256d headers with
//! [`PreparedJob`](hashshift_protocol::share::PreparedJob), throttled to
//! [`RigConfig::hashrate`], and hands every header that meets the share target back to be
//! submitted. They share work through a `watch` (latest job and target win) and shares
//! through a bounded channel.
//!
//! Firmware behaviour modelled ([`Firmware`]):
//! - message order at connect: Antminer `configure → subscribe → authorize`, Whatsminer
//!   `subscribe → authorize → configure`, Basic `subscribe → authorize` (no version rolling);
//!   then optionally `mining.extranonce.subscribe` and `mining.suggest_difficulty`;
//! - `mining.set_difficulty` and `mining.set_extranonce` take effect with the next
//!   `mining.notify` (the pool sends them before the job they apply to); `clean_jobs`
//!   abandons the current job and drops its unsent shares;
//! - `mining.set_version_mask` changes the mask for the next job;
//! - `client.reconnect` closes and reconnects to the given host:port (or the same address)
//!   after its `wait`, if [`RigConfig::reconnect`] is set; a dropped connection is retried
//!   with exponential backoff under the same flag.
//!
//! Rigs are a test and lab tool: they only ever connect to loopback addresses, including
//! where a `client.reconnect` points (anything else is ignored with a warning).

pub mod hasher;
mod rig;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

pub use rig::{Rig, RigHandle};

/// How a rig's firmware opens a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Firmware {
    /// Bitmain style: `mining.configure` (version-rolling mask `1fffe000`, and
    /// `minimum-difficulty` when a suggested difficulty is set) before `mining.subscribe`.
    Antminer,
    /// MicroBT style: `mining.subscribe`, `mining.authorize`, then `mining.configure`.
    Whatsminer,
    /// No `mining.configure` at all, hence no version rolling.
    Basic,
}

impl Firmware {
    /// The user agent sent in `mining.subscribe`.
    pub fn user_agent(self) -> &'static str {
        match self {
            Firmware::Antminer => "bmminer/2.0.0",
            Firmware::Whatsminer => "whatsminer/v1.1",
            Firmware::Basic => "cpuminer/2.5.1",
        }
    }
}

/// The version-rolling mask firmware asks for (BIP320's general-purpose bits).
pub const FIRMWARE_VERSION_MASK: u32 = 0x1fff_e000;

/// One rig's settings.
#[derive(Clone, Debug)]
pub struct RigConfig {
    /// Pool (or proxy) address; must be a loopback address.
    pub pool: SocketAddr,
    /// Worker name for `mining.authorize` and every submit.
    pub worker: String,
    /// Password for `mining.authorize`.
    pub password: String,
    /// Session-opening behaviour.
    pub firmware: Firmware,
    /// Hashes per second the rig throttles itself to (it may be slower if the CPU is).
    pub hashrate: f64,
    /// Send `mining.extranonce.subscribe` (and then honour `mining.set_extranonce`).
    pub extranonce_subscribe: bool,
    /// Send `mining.suggest_difficulty` with this value (Antminer also puts it into
    /// `mining.configure` as `minimum-difficulty`).
    pub suggest_difficulty: Option<f64>,
    /// Reconnect with backoff after a drop, and obey `client.reconnect`.
    pub reconnect: bool,
}

impl RigConfig {
    /// A Basic rig at `hashrate` H/s for `pool` with reconnects on.
    pub fn new(pool: SocketAddr, worker: impl Into<String>, hashrate: f64) -> Self {
        RigConfig {
            pool,
            worker: worker.into(),
            password: "x".to_owned(),
            firmware: Firmware::Basic,
            hashrate,
            extranonce_subscribe: false,
            suggest_difficulty: None,
            reconnect: true,
        }
    }
}

/// A snapshot of a rig's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RigStats {
    /// Shares the pool accepted.
    pub accepted: u64,
    /// Shares the pool rejected.
    pub rejected: u64,
    /// Rejections by Stratum error code (20 when the pool answered `false` without one).
    pub rejected_by_code: BTreeMap<i64, u64>,
    /// Sum of the difficulties of accepted shares.
    pub accepted_difficulty: f64,
    /// Difficulty of the job being worked on.
    pub difficulty: f64,
    /// Whether a connection is currently open.
    pub connected: bool,
    /// Connections opened so far.
    pub connects: u64,
    /// Connections that ended (dropped, refused after connect or reconnected).
    pub disconnects: u64,
    /// Headers hashed.
    pub hashes: u64,
    /// When the last `mining.notify` was applied.
    pub last_job: Option<Instant>,
    /// Version-rolling mask in force (`None`: not rolling).
    pub version_mask: Option<u32>,
    /// Extranonce1 in use.
    pub extranonce1: Vec<u8>,
}
