//! The test pool's configuration ([`TestPoolConfig`]) and its checks.

use std::net::SocketAddr;
use std::time::Duration;

use hashshift_protocol::sv1::{MAX_EXTRANONCE_LEN, MAX_MERKLE_BRANCH};

use super::job;

/// Largest extranonce1 this pool hands out.
const MAX_EXTRANONCE1_LEN: usize = 16;

/// Configuration of a [`TestPool`].
#[derive(Debug, Clone)]
pub struct TestPoolConfig {
    /// Address to listen on (default `127.0.0.1:0`: an ephemeral port).
    pub listen: SocketAddr,
    /// Share difficulty sent with `mining.set_difficulty` (values below 1 allowed).
    pub difficulty: f64,
    /// Extranonce1 length in bytes (1..=16, default 4); unique per connection.
    pub extranonce1_len: usize,
    /// Extranonce2 size in bytes (1..=32, default 8).
    pub extranonce2_size: usize,
    /// Version bits offered for rolling in `mining.configure` (default `0x1fffe000`).
    pub version_mask: u32,
    /// A new non-clean job this often (default 30 s).
    pub job_interval: Duration,
    /// A new prevhash (clean job) this often (default 600 s).
    pub block_interval: Duration,
    /// Merkle branch length (random txids; default 12, at most 32).
    pub merkle_branch_len: usize,
    /// Network difficulty: the job's nBits is derived from it, and shares meeting it are
    /// blocks (default 1e15, far above anything a test reaches).
    pub network_difficulty: f64,
    /// Name for logs, stats and the coinbase tag, e.g. `"pool-a"`.
    pub name: String,
    /// How long a connection may accept none of our data (its send queue stays full, or a
    /// write makes no progress) before it is dropped as "not reading" (default 10 s).
    pub send_timeout: Duration,
    /// Extra P2WPKH outputs in every coinbase, 31 bytes each (default 0; at most 50 000): a
    /// big but valid coinbase, as a pool paying its miners in it sends.
    pub coinbase_extra_outputs: usize,
    /// How `mining.configure` is answered (default [`ConfigureAnswer::Grant`]).
    pub configure: ConfigureAnswer,
}

/// How the pool answers `mining.configure`: as BIP310 says, or as the pools that never
/// implemented it do. With anything but [`ConfigureAnswer::Grant`], a submit carrying
/// `version_bits` on a connection without rolling is refused (error 20, reason `malformed`),
/// as a pool that knows only 5-parameter submits would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConfigureAnswer {
    /// BIP310: version rolling granted as `requested & version_mask`.
    #[default]
    Grant,
    /// An error reply (`Unknown method`), as a pool without `mining.configure` sends.
    Error,
    /// A result without the `version-rolling` key (other extensions answered as usual).
    WithoutVersionRolling,
    /// No answer at all.
    Ignore,
}

impl Default for TestPoolConfig {
    fn default() -> Self {
        TestPoolConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            difficulty: 1.0,
            extranonce1_len: 4,
            extranonce2_size: 8,
            version_mask: 0x1fff_e000,
            job_interval: Duration::from_secs(30),
            block_interval: Duration::from_secs(600),
            merkle_branch_len: 12,
            network_difficulty: 1e15,
            name: "testpool".to_owned(),
            send_timeout: Duration::from_secs(10),
            coinbase_extra_outputs: 0,
            configure: ConfigureAnswer::Grant,
        }
    }
}

impl TestPoolConfig {
    /// Defaults for [`TestPool::start_sv2`]: like SRI's pool, a 4-byte extranonce prefix and
    /// 16 rollable extranonce bytes per channel.
    pub fn sv2() -> Self {
        TestPoolConfig {
            extranonce2_size: 16,
            ..TestPoolConfig::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if !(self.difficulty.is_finite() && self.difficulty > 0.0) {
            return Err(format!("difficulty {} must be positive", self.difficulty));
        }
        if !(1..=MAX_EXTRANONCE1_LEN).contains(&self.extranonce1_len) {
            return Err(format!("extranonce1_len must be 1..={MAX_EXTRANONCE1_LEN}"));
        }
        if !(1..=MAX_EXTRANONCE_LEN).contains(&self.extranonce2_size) {
            return Err(format!("extranonce2_size must be 1..={MAX_EXTRANONCE_LEN}"));
        }
        if self.job_interval.is_zero() || self.block_interval.is_zero() {
            return Err("job_interval and block_interval must be positive".to_owned());
        }
        if self.send_timeout.is_zero() {
            return Err("send_timeout must be positive".to_owned());
        }
        if self.coinbase_extra_outputs > job::MAX_EXTRA_OUTPUTS {
            return Err(format!(
                "coinbase_extra_outputs must be at most {}",
                job::MAX_EXTRA_OUTPUTS
            ));
        }
        if self.merkle_branch_len > MAX_MERKLE_BRANCH {
            return Err(format!(
                "merkle_branch_len must be at most {MAX_MERKLE_BRANCH}"
            ));
        }
        Ok(())
    }
}
