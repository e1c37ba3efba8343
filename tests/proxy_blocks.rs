//! A block found through the proxy goes upstream at once, over 127.0.0.1.
//!
//! As on regtest, the network target is easier than the pool's share target, and the proxy
//! gives its miners an easier target still: miner difficulty < network difficulty < pool
//! difficulty. An SV1 miner and an SV2 miner (standard channel, SRI's crates) behind one
//! proxy each submit a share that meets the network target but not the pool's. Each must
//! reach the pool before the miner sends anything else (the pool counts it while the miner
//! still waits for its verdict), be accepted there as a block, and be counted once by the
//! proxy, in `pools()` and in `hashshift_pool_blocks_found_total`, agreeing with the pool.
//! A last block meets the pool's target as well (every share that does is a block here) and
//! is counted once.
//! An ordinary share (miner target only) is answered by the proxy and never reaches the
//! pool, for contrast. Both upstream kinds are covered: the SV1 test pool and the test pool
//! in SV2 mode (the proxy's extended-channel upstream path).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hashshift_protocol::share::Target;
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::metrics::{scrape_text, series};
use support::miner::{Miner, within};
use support::sv2_miner::Sv2Miner;
use support::sv2_site::KeyFile;

/// The proxy's fixed share difficulty for its miners: ~4,300 hashes a share.
const MINER_DIFF: f64 = 1e-6;
/// The network's difficulty: a block every ~43,000 hashes.
const NETWORK_DIFF: f64 = 1e-5;
/// The pool's share difficulty, above the network's as on regtest.
const POOL_DIFF: f64 = 1e-4;

fn pool_config(name: &str, base: TestPoolConfig) -> TestPoolConfig {
    TestPoolConfig {
        name: name.into(),
        difficulty: POOL_DIFF,
        network_difficulty: NETWORK_DIFF,
        // No job changes but the ones a block causes.
        job_interval: Duration::from_secs(600),
        block_interval: Duration::from_secs(600),
        ..base
    }
}

/// The proxy with an SV1 listener (`listen_addrs()[0]`), an SV2 one (`[1]`) and metrics, in
/// front of one pool.
struct Site {
    proxy: Proxy,
    key: KeyFile,
    pool: TestPool,
}

impl Site {
    async fn start(pool: TestPool) -> Result<Site> {
        let key = KeyFile::new()?;
        let text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n\
             [[upstream]]\nurl = \"{}\"\nuser = \"farm\"\n\
             [vardiff]\ninitial = {MINER_DIFF}\nmin = {MINER_DIFF}\nmax = {MINER_DIFF}\nshares_per_minute = 600.0\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n",
            key.path.display().to_string(),
            pool.url()
        );
        let proxy = Proxy::start(&Config::from_toml(&text)?).await?;
        within("the pool up", async {
            while !proxy.pools()[0].up {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await?;
        Ok(Site { proxy, key, pool })
    }

    /// The proxy's block count for the pool, from `pools()` and from `/metrics`; asserts they
    /// agree with each other and with the pool's own count, and that nothing was refused.
    async fn blocks_agree(&self, expected: u64) -> Result<()> {
        let snapshot = self.proxy.pools().remove(0);
        let metrics = self.proxy.metrics_addr().context("no metrics listener")?;
        let s = series(&scrape_text(metrics).await?);
        let labels = format!("pool=\"0\",url=\"{}\"", snapshot.url);
        let metric = |name: &str| {
            s.get(&format!("{name}{{{labels}}}"))
                .copied()
                .with_context(|| format!("no series {name}{{{labels}}}"))
        };
        let stats = self.pool.stats();
        assert_eq!(stats.blocks, expected, "the pool's count: {stats:?}");
        assert_eq!(snapshot.shares.blocks, expected, "pools(): {snapshot:?}");
        assert_eq!(
            metric("hashshift_pool_blocks_found_total")?,
            expected as f64
        );
        // Only blocks went up: ordinary shares stayed at the proxy.
        assert_eq!(
            stats.accepted, expected,
            "nothing else or twice at the pool"
        );
        assert_eq!(snapshot.shares.accepted, expected);
        assert_eq!(
            metric("hashshift_pool_shares_accepted_total")?,
            expected as f64
        );
        assert_eq!(stats.rejected_total(), 0, "{stats:?}");
        assert_eq!((snapshot.shares.rejected, snapshot.shares.lost), (0, 0));
        Ok(())
    }
}

/// Polls the pool (no sleeping: each turn only yields) until it has counted `blocks` blocks;
/// returns how long that took.
async fn pool_counts_block(pool: &TestPool, blocks: u64, since: Instant) -> Result<Duration> {
    within("the block counted by the pool", async {
        while pool.stats().blocks < blocks {
            tokio::task::yield_now().await;
        }
    })
    .await?;
    Ok(since.elapsed())
}

/// Whether `hash` is a block that the pool's own share target would not let through.
fn block_below_pool_target(nbits: u32) -> impl Fn(&[u8; 32]) -> bool {
    let network = Target::from_compact(nbits).expect("the job's nbits");
    let pool = Target::from_difficulty(POOL_DIFF).expect("pool difficulty");
    move |hash| network.is_met_by(hash) && !pool.is_met_by(hash)
}

/// Whether `hash` is an ordinary share: the miner's target, not the network's.
fn ordinary_share(nbits: u32) -> impl Fn(&[u8; 32]) -> bool {
    let network = Target::from_compact(nbits).expect("the job's nbits");
    let miner = Target::from_difficulty(MINER_DIFF).expect("miner difficulty");
    move |hash| miner.is_met_by(hash) && !network.is_met_by(hash)
}

/// Asserts that the pool credited one more share to `worker` (and none to anyone else).
fn credited(pool: &TestPool, worker: &str, expected: &mut BTreeMap<String, u64>) {
    *expected.entry(worker.to_owned()).or_default() += 1;
    let got: BTreeMap<String, u64> = pool
        .stats()
        .workers
        .into_iter()
        .map(|(w, s)| (w, s.accepted))
        .collect();
    assert_eq!(&got, expected, "the pool's credit by worker");
}

/// The whole scenario against one pool; `upstream_worker` maps a miner's name to the name
/// the pool credits (SV2 pools credit the proxy's channel user).
async fn blocks_reach_the_pool_at_once(
    pool: TestPool,
    upstream_worker: fn(&str) -> &str,
) -> Result<()> {
    let kind = if pool.url().starts_with("stratum2") {
        "SV2"
    } else {
        "SV1"
    };
    let site = Site::start(pool).await?;
    let mut expected = BTreeMap::new();
    let mut sv1 = Miner::connect(site.proxy.listen_addrs()[0]).await?;
    let (_, job) = sv1.handshake("farm.sv1", None).await?;
    assert_eq!(sv1.difficulty, MINER_DIFF, "the proxy's own difficulty");
    let mut sv2 =
        Sv2Miner::connect(site.proxy.listen_addrs()[1], site.key.public.to_bytes()).await?;
    sv2.setup(0).await?;
    let ch = sv2.open_channel(1, "farm.sv2", false).await?;
    assert_eq!(
        ch.target,
        Target::from_difficulty(MINER_DIFF)?.to_le_bytes()
    );
    let sv2_job = sv2.next_future_job(ch.id).await?;
    assert_eq!(sv2_job.nbits, job.nbits, "one network target for both");
    assert_eq!(
        Target::from_compact(job.nbits)?.to_compact(),
        Target::from_difficulty(NETWORK_DIFF)?.to_compact(),
        "the pool's nBits is the network difficulty"
    );

    // SV1: an ordinary share is answered by the proxy and stays there.
    let share = sv1.search_by(&job, 1, None, ordinary_share(job.nbits));
    assert_eq!(sv1.submit(&share, "farm.sv1").await?, Ok(()));
    site.blocks_agree(0).await?;

    // SV1: a block below the pool's share target reaches the pool before anything else.
    let share = sv1.search_by(&job, 2, None, block_below_pool_target(job.nbits));
    let sent = Instant::now();
    let id = sv1.send(share.request("farm.sv1")).await?;
    let took = pool_counts_block(&site.pool, 1, sent).await?;
    eprintln!("{kind} pool, SV1 miner's block: submit -> counted by the pool in {took:?}");
    credited(&site.pool, upstream_worker("farm.sv1"), &mut expected);
    let verdict = sv1.response(id).await?;
    assert!(verdict.as_bool()?, "the pool's verdict: {verdict:?}");
    site.blocks_agree(1).await?;

    // The chain moved on: a clean job for the SV1 miner, a new prevhash for the SV2 one.
    let next = sv1.next_job().await?;
    assert!(next.clean_jobs && next.prev_hash != job.prev_hash);
    let job = sv2.next_future_job(ch.id).await?;
    assert_ne!(
        job.prev_hash, sv2_job.prev_hash,
        "the SV2 miner is on the new block"
    );
    assert_eq!(job.prev_hash, next.prev_hash, "the same block for both");

    // SV2: an ordinary share stays at the proxy; a block below the pool's target goes up.
    let share = job.find_by(
        &ch.prefix,
        Vec::new(),
        job.version,
        1,
        ordinary_share(job.nbits),
    );
    let seq = sv2.submit(ch.id, &share, false).await?;
    assert_eq!(sv2.verdict(ch.id, seq).await?, Ok(()));
    site.blocks_agree(1).await?;
    let share = job.find_by(
        &ch.prefix,
        Vec::new(),
        job.version,
        2,
        block_below_pool_target(job.nbits),
    );
    let sent = Instant::now();
    let seq = sv2.submit(ch.id, &share, false).await?;
    let took = pool_counts_block(&site.pool, 2, sent).await?;
    eprintln!("{kind} pool, SV2 miner's block: submit -> counted by the pool in {took:?}");
    credited(&site.pool, upstream_worker("farm.sv2"), &mut expected);
    assert_eq!(sv2.verdict(ch.id, seq).await?, Ok(()), "the pool's verdict");
    site.blocks_agree(2).await?;

    // SV1 again, on the block after: a block that meets the pool's share target too (as on
    // mainnet, where every block does) goes up and is counted once, not as a share and a block.
    let job = loop {
        let n = sv1.next_job().await?;
        if n.clean_jobs && n.prev_hash != next.prev_hash {
            break n;
        }
    };
    let pool_target = Target::from_difficulty(POOL_DIFF)?;
    let share = sv1.search_by(&job, 3, None, |hash| pool_target.is_met_by(hash));
    let sent = Instant::now();
    let id = sv1.send(share.request("farm.sv1")).await?;
    let took = pool_counts_block(&site.pool, 3, sent).await?;
    eprintln!("{kind} pool, SV1 miner's block at the pool's target: counted in {took:?}");
    credited(&site.pool, upstream_worker("farm.sv1"), &mut expected);
    assert!(sv1.response(id).await?.as_bool()?, "the pool's verdict");
    site.blocks_agree(3).await?;

    site.proxy.shutdown(Duration::from_secs(2)).await;
    site.pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn blocks_of_sv1_and_sv2_miners_reach_an_sv1_pool_at_once() -> Result<()> {
    let pool = TestPool::start(pool_config("a", TestPoolConfig::default())).await?;
    blocks_reach_the_pool_at_once(pool, |miner| miner).await
}

#[tokio::test]
async fn blocks_of_sv1_and_sv2_miners_reach_an_sv2_pool_at_once() -> Result<()> {
    let pool = TestPool::start_sv2(pool_config("a", TestPoolConfig::sv2())).await?;
    blocks_reach_the_pool_at_once(pool, |_| "farm").await
}
