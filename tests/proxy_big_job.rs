//! A pool job with a big coinbase (issue 12, item 3): SV1 test miners → hashshift → a test
//! pool whose coinbase pays 7 000 extra outputs (~217 KB, a ~435 KB `mining.notify` line),
//! with the default `[limits] send_queue` (a 128 KiB send buffer per miner). Every miner
//! must get every such job and have shares on them accepted by the pool, job after job.
//!
//! SV2 miners on standard channels get such jobs too (a `NewMiningJob` carries the merkle
//! root, whatever the coinbase size): one is checked alongside the SV1 miners. Extended and
//! group channels cannot get them at all: an extended job carries the coinbase prefix and
//! suffix as `B0_64K` fields (sv2-spec 05 §5.3.16); the proxy skips such a job for them with
//! a warning.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hashshift_protocol::sv1::{ClientCodec, Notify};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::miner::Miner;
use support::sv2_miner::{MiningJob, REQUIRES_STANDARD_JOBS, Received, Sv2Miner};
use support::sv2_site::KeyFile;

/// Share difficulty (pool and miners): a few hashes a share. The coinbase is hashed once per
/// share, and at ~217 KB that is the slow part in a debug build.
const DIFF: f64 = 1e-9;
/// Extra coinbase outputs, 31 bytes each: the coinbase is over 200 KiB.
const EXTRA_OUTPUTS: usize = 7_000;
const MINERS: usize = 3;
/// Big jobs each miner must get after its first, with shares accepted on each.
const JOBS: usize = 3;
const SHARES_PER_JOB: usize = 2;
/// Bound on the whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

fn config(pool: &TestPool, key: &KeyFile) -> Result<Config> {
    // `[limits]` left at its defaults: that is where a miner's send buffer is 128 KiB.
    let text = format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n\
         [[upstream]]\nurl = \"{}\"\nuser = \"farm\"\n\
         [vardiff]\ninitial = {DIFF}\nmin = {DIFF}\nmax = {DIFF}\nshares_per_minute = 60.0\n",
        key.path.display().to_string(),
        pool.url()
    );
    Ok(Config::from_toml(&text)?)
}

fn coinbase_len(job: &Notify) -> usize {
    job.coinb1.len() + job.coinb2.len()
}

/// One miner: handshake, then `JOBS` new jobs with `SHARES_PER_JOB` shares accepted on each.
async fn mine(proxy_addr: std::net::SocketAddr, worker: String) -> Result<usize> {
    let mut m = Miner::connect(proxy_addr).await?;
    // A real miner's line limit is its own business; this one takes any job.
    m.codec = ClientCodec::with_max_line_len(4 << 20);
    let (_, mut job) = m
        .handshake(&worker, None)
        .await
        .with_context(|| format!("{worker}: handshake (the first job is big)"))?;
    let mut accepted = 0;
    let mut seed = 0u64;
    for n in 0..=JOBS {
        ensure!(
            coinbase_len(&job) >= 200 * 1024,
            "{worker}: job {n} has a {} byte coinbase",
            coinbase_len(&job)
        );
        for _ in 0..SHARES_PER_JOB {
            let share = m.find_share(&job, seed, None);
            seed += 1;
            let r = m
                .submit(&share, &worker)
                .await
                .with_context(|| format!("{worker}: submit on job {n}"))?;
            ensure!(
                r == Ok(()),
                "{worker}: share on job {n} not accepted: {r:?}"
            );
            accepted += 1;
        }
        if n < JOBS {
            job = m
                .next_job()
                .await
                .with_context(|| format!("{worker}: waiting for big job {}", n + 1))?;
        }
    }
    Ok(accepted)
}

/// One SV2 miner on a standard channel: `JOBS` new jobs after the first, a share accepted on
/// each. Returns the shares accepted.
async fn mine_sv2(proxy_addr: std::net::SocketAddr, key: [u8; 32]) -> Result<usize> {
    let mut m = Sv2Miner::connect(proxy_addr, key).await?;
    ensure!(
        matches!(
            m.setup(REQUIRES_STANDARD_JOBS).await?,
            Received::SetupSuccess { .. }
        ),
        "sv2: setup refused"
    );
    let ch = m.open_channel(1, "farm.sv2", false).await?;
    let mut job = m.first_job(ch.id).await.context("sv2: first (big) job")?;
    let mut accepted = 0;
    for n in 0..=JOBS {
        let seed = u32::try_from(n)?;
        let share = job.find(&[], Vec::new(), job.version, &ch.target, seed, false);
        let seq = m.submit(ch.id, &share, false).await?;
        match m.verdict(ch.id, seq).await? {
            Ok(()) => accepted += 1,
            Err(code) => anyhow::bail!("sv2: share on job {n} rejected: {code}"),
        }
        if n < JOBS {
            // Same block (no new prevhash): a non-future job, mined at its min_ntime.
            let current = job.job_id;
            let (job_id, version, merkle_root, ntime) = m
                .expect("the next job", |r| match r {
                    Received::NewMiningJob {
                        channel_id,
                        job_id,
                        min_ntime: Some(ntime),
                        version,
                        merkle_root,
                    } if *channel_id == ch.id && *job_id != current => {
                        Some((*job_id, *version, *merkle_root, *ntime))
                    }
                    _ => None,
                })
                .await?;
            job = MiningJob {
                job_id,
                version,
                merkle_root: Some(merkle_root),
                ntime,
                ..job
            };
        }
    }
    Ok(accepted)
}

async fn big_jobs_reach_every_miner() -> Result<()> {
    let pool = TestPool::start(TestPoolConfig {
        difficulty: DIFF,
        name: "big".into(),
        job_interval: Duration::from_millis(700),
        coinbase_extra_outputs: EXTRA_OUTPUTS,
        ..TestPoolConfig::default()
    })
    .await?;
    let key = KeyFile::new()?;
    let proxy = Proxy::start(&config(&pool, &key)?).await?;
    let addr = proxy.listen_addrs()[0];
    let miners: Vec<_> = (0..MINERS)
        .map(|i| tokio::spawn(mine(addr, format!("farm.rig{i}"))))
        .collect();
    let sv2 = tokio::spawn(mine_sv2(proxy.listen_addrs()[1], key.public.to_bytes()));
    let mut total = 0;
    for m in miners {
        total += m.await??;
    }
    total += sv2.await??;
    let want = (MINERS * (JOBS + 1) * SHARES_PER_JOB + JOBS + 1) as u64;
    // The proxy may answer a miner before the pool's verdict is in: give the pool a moment.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while pool.stats().accepted < want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let stats = pool.stats();
    eprintln!(
        "big job: {MINERS} SV1 miners and one SV2 miner, {total} shares accepted by the proxy; pool accepted {}, rejected {:?}",
        stats.accepted, stats.rejected
    );
    ensure!(
        stats.accepted >= want,
        "the pool accepted only {} shares",
        stats.accepted
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_200_kib_coinbase_reaches_every_miner() -> Result<()> {
    tokio::time::timeout(TEST_LIMIT, big_jobs_reach_every_miner())
        .await
        .context("test timed out")?
}
