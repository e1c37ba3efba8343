//! SRI's pool_sv2 as a child process, fed by our template provider
//! (`support::template_provider`), with its monitoring API on (what the pool itself counted:
//! [`PoolMonitor`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use hashshift_protocol::noise::{AuthorityKeypair, AuthorityPublicKey};

use super::harness::{Harness, free_port, until};
use super::monitor::PoolMonitor;
use super::support::template_provider::TemplateProvider;

/// pool_sv2's signature, found in every coinbase it builds.
pub const POOL_SIGNATURE: &str = "hashshift-interop";

/// A running pool_sv2.
pub struct SriPool {
    /// Where it listens for SV2 mining connections (Noise).
    pub addr: SocketAddr,
    /// Its authority public key (base58check), for clients' configs.
    pub authority: AuthorityPublicKey,
    /// Its monitoring API (refreshed every second).
    pub monitor: PoolMonitor,
    /// Its index in `Harness::procs`.
    pub proc: usize,
}

impl SriPool {
    /// Starts pool_sv2 (binary `pool_sv2`, which the flow must need) on `tp`, and waits until
    /// it has set up with the TP and received a tip (`SetNewPrevHash`). Its channels' share
    /// rate is 600 a minute and it acknowledges every share (`share_batch_size = 1`).
    pub async fn start(h: &mut Harness, tp: &TemplateProvider) -> Result<SriPool> {
        let bin = h.bin("pool_sv2")?;
        let authority = AuthorityKeypair::generate(&mut rand::rng());
        let (port, monitoring) = (free_port()?, free_port()?);
        let config = h.write(
            "pool.toml",
            &format!(
                "authority_public_key = \"{}\"\nauthority_secret_key = \"{}\"\n\
                 cert_validity_sec = 3600\nlisten_address = \"127.0.0.1:{port}\"\n\
                 coinbase_reward_script = \"addr(tb1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u96w3p8)\"\n\
                 server_id = 1\npool_signature = \"{POOL_SIGNATURE}\"\n\
                 shares_per_minute = 600.0\nshare_batch_size = 1\n\
                 monitoring_address = \"127.0.0.1:{monitoring}\"\n\
                 monitoring_cache_refresh_secs = 1\n\
                 [template_provider_type.Sv2Tp]\naddress = \"{}\"\npublic_key = \"{}\"\n",
                authority.public_key(),
                authority.secret_key().to_base58check(),
                tp.addr(),
                tp.authority_public_key(),
            ),
        )?;
        let config = config.display().to_string();
        let proc = h.spawn("pool_sv2", &bin, &["-c", &config])?;
        until(
            h,
            "pool_sv2 set up with the template provider",
            Duration::from_secs(20),
            || {
                let s = tp.stats();
                s.setups >= 1 && s.prev_hashes >= 1
            },
        )
        .await?;
        anyhow::ensure!(
            tp.stats().constraints.is_some(),
            "pool_sv2 sent CoinbaseOutputConstraints: {:?}",
            tp.stats()
        );
        Ok(SriPool {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            authority: authority.public_key(),
            monitor: PoolMonitor {
                addr: SocketAddr::from(([127, 0, 0, 1], monitoring)),
            },
            proc,
        })
    }
}
