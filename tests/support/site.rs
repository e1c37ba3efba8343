//! A test site: one embedded test pool and the proxy in front of it, both on 127.0.0.1:0,
//! with a fixed share difficulty so honest miners find shares quickly and every share they
//! find goes up to the pool.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};

/// Share difficulty at the pool and the proxy: about 430 hashes a share, cheap even in debug
/// builds on busy cores. Vardiff is pinned to it (min = max), so the proxy's target is the
/// pool's and every valid share goes upstream.
pub const DIFF: f64 = 1e-7;

/// A test pool at [`DIFF`].
pub async fn pool(name: &str) -> Result<TestPool> {
    pool_at(name, DIFF).await
}

/// An SV1 test pool named `name` at share `difficulty`, otherwise as configured by default.
pub async fn pool_at(name: &str, difficulty: f64) -> Result<TestPool> {
    Ok(TestPool::start(TestPoolConfig {
        difficulty,
        name: name.into(),
        ..TestPoolConfig::default()
    })
    .await?)
}

/// The `[limits]` table (every key is required in it).
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub handshake_timeout_secs: u64,
    pub write_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 16 * 1024,
            max_connections: 100_000,
            handshake_timeout_secs: 30,
            write_timeout_secs: 10,
        }
    }
}

/// A proxy configuration in TOML: one SV1 listener on 127.0.0.1:0, `pool` as the only
/// upstream (user `farm`), difficulty pinned at [`DIFF`], and `limits`.
pub fn config_text(pool: SocketAddr, limits: &Limits) -> String {
    format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum+tcp://{pool}\"\nuser = \"farm\"\n\
         [vardiff]\ninitial = {DIFF:e}\nmin = {DIFF:e}\nmax = {DIFF:e}\nshares_per_minute = 600.0\n\
         [limits]\nmax_line_bytes = {}\nsend_queue = 64\nmax_connections = {}\n\
         handshake_timeout_secs = {}\nwrite_timeout_secs = {}\n",
        limits.max_line_bytes,
        limits.max_connections,
        limits.handshake_timeout_secs,
        limits.write_timeout_secs,
    )
}

/// The proxy in this process, in front of `pool`.
pub async fn proxy(pool: &TestPool, limits: &Limits) -> Result<Proxy> {
    let config = Config::from_toml(&config_text(pool.addr(), limits))?;
    let settings = ManagerSettings {
        no_work_timeout: Duration::from_secs(30),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    };
    Ok(Proxy::start_with(&config, settings).await?)
}
