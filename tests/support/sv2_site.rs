//! An SV2 test site: the embedded SV1 test pool, a fresh authority key and the proxy with an
//! SV2 listener in front of it, for tests that drive SV2 miners (`sv2_miner`) through it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use hashshift_protocol::noise::AuthorityPublicKey;
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};

use super::miner::within;
use super::sv2_miner::{MiningJob, REQUIRES_STANDARD_JOBS, Received, Sv2Miner};

/// Share difficulty of the pool and the proxy's vardiff: ~4,300 hashes a share.
pub const DIFF: f64 = 1e-6;

/// An SV1 test pool at [`DIFF`].
pub async fn sv1_pool(name: &str) -> Result<TestPool> {
    super::site::pool_at(name, DIFF).await
}

/// An SV2 test pool at [`DIFF`] that grants version rolling within `version_mask`.
pub async fn sv2_pool(name: &str, version_mask: u32) -> Result<TestPool> {
    Ok(TestPool::start_sv2(TestPoolConfig {
        difficulty: DIFF,
        name: name.into(),
        version_mask,
        ..TestPoolConfig::sv2()
    })
    .await?)
}

/// A fresh authority key file, removed on drop.
pub struct KeyFile {
    pub path: PathBuf,
    pub public: AuthorityPublicKey,
}

impl KeyFile {
    pub fn new() -> Result<KeyFile> {
        let path = std::env::temp_dir().join(format!(
            "hashshift-sv2-test-{}-{}.key",
            std::process::id(),
            rand::random::<u64>()
        ));
        let public = hashshift_proxy::keyfile::generate(&path)?;
        Ok(KeyFile { path, public })
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct Setup {
    pub pool: TestPool,
    pub proxy: Proxy,
    pub key: KeyFile,
}

impl Setup {
    pub async fn start(extra: &str) -> Result<Setup> {
        Self::start_with(&[], extra).await
    }

    /// Pool "a" (priority 0) and the given standby pools (priorities 1, 2, ...).
    pub async fn start_with(standby: &[&TestPool], extra: &str) -> Result<Setup> {
        let pool = sv1_pool("a").await?;
        let key = KeyFile::new()?;
        let mut upstreams = format!(
            "[[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n",
            pool.addr()
        );
        for (i, p) in standby.iter().enumerate() {
            upstreams += &format!(
                "[[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\npriority = {}\n",
                p.addr(),
                i + 1
            );
        }
        let text = format!(
            "[[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n\
             {upstreams}\
             [vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n{extra}",
            key.path.display().to_string(),
        );
        let config = Config::from_toml(&text)?;
        let proxy = Proxy::start_with(
            &config,
            ManagerSettings {
                no_work_timeout: Duration::from_secs(30),
                failback_after: Duration::from_millis(500),
                rebalance_every: Duration::from_secs(1),
            },
        )
        .await?;
        Ok(Setup { pool, proxy, key })
    }

    pub async fn miner(&self) -> Result<Sv2Miner> {
        Sv2Miner::connect(self.proxy.listen_addrs()[0], self.key.public.to_bytes()).await
    }

    pub async fn stop(self) {
        self.proxy.shutdown(Duration::from_secs(2)).await;
        self.pool.shutdown().await;
    }
}

/// Waits (bounded) until the pool has accepted `n` shares.
pub async fn pool_accepts(pool: &TestPool, n: u64) -> Result<()> {
    within("pool accepting the shares", async {
        while pool.stats().accepted < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A miner on a standard channel that has its first job: the bystander that hostile
/// connections must leave unharmed.
pub struct GoodMiner {
    m: Sv2Miner,
    channel: u32,
    target: [u8; 32],
    job: MiningJob,
}

impl GoodMiner {
    /// Sets up (standard jobs), opens channel 1 as "good" and reads its first job, each
    /// message expected in that order.
    pub async fn open(s: &Setup) -> Result<GoodMiner> {
        let mut m = s.miner().await?;
        m.setup(REQUIRES_STANDARD_JOBS).await?;
        m.open_standard(1, "good", 0.0).await?;
        let (channel, target) = match m.recv().await? {
            Some(Received::OpenStandardSuccess {
                channel_id, target, ..
            }) => (channel_id, target),
            other => bail!("expected OpenStandardMiningChannel.Success, got {other:?}"),
        };
        let job = m.first_job(channel).await?;
        Ok(GoodMiner {
            m,
            channel,
            target,
            job,
        })
    }

    /// Submits a share for the first job (found from `seed`) and asserts it accepted.
    pub async fn share_accepted(&mut self, seed: u32) -> Result<()> {
        let job = &self.job;
        let share = job.find(&[], Vec::new(), job.version, &self.target, seed, false);
        let seq = self.m.submit(self.channel, &share, false).await?;
        assert_eq!(self.m.verdict(self.channel, seq).await?, Ok(()));
        Ok(())
    }
}
