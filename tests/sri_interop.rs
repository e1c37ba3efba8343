//! Interop with the Stratum Reference Implementation's own binaries (SRI: `mining_device`,
//! `translator_sv2`, `pool_sv2`), each spawned as a child process next to hashshift running
//! in-process on 127.0.0.1:
//!
//! - a. SRI `mining_device` (SV2 CPU miner, standard channel) → hashshift SV2 downstream →
//!   our SV1 test pool, which validates every share with its own hashing;
//! - b. an SV1 test miner → SRI `translator_sv2` → hashshift SV2 downstream → test pool;
//! - c. an SV1 test miner → hashshift SV2 upstream → SRI `pool_sv2`, fed by our test template
//!   provider (`support::template_provider`); c2 and c3: a block found by an SV1 miner, and by
//!   an SV2 miner (`support::sv2_miner`, standard channel) on hashshift's SV2 downstream, goes
//!   through pool_sv2 to the template provider as `SubmitSolution`;
//! - d. SV1 and SV2 miners → hashshift SV1 upstream → SRI `translator_sv2` → `pool_sv2`, with
//!   failover to our test pool and back (`sri_interop/chain.rs`); d2: a block that way;
//! - e. a fleet of SV1 miners → hashshift SV2 upstream → `pool_sv2`, through new templates and
//!   new blocks: pool_sv2 refuses nothing but tip-change stales, and counts what it
//!   acknowledged.
//!
//! Assertions are on outcomes we observe ourselves: verdicts the miners received, the test
//! pool's counts, the proxy's counters (its API and Prometheus endpoint), pool_sv2's
//! monitoring API (`sri_interop/monitor.rs`) and what our template provider received, a block
//! header rebuilt from its own records. SRI's log lines change between releases: they are
//! printed as supplementary evidence, never asserted on.
//!
//! The binaries take minutes to build: `scripts/sri-install.sh` installs them, and a flow
//! whose binary is missing passes saying it skipped, unless `HASHSHIFT_SRI=1` (then it fails;
//! see `sri_interop/harness.rs`). `scripts/sri-interop.sh` runs them as CI does.
//! Each child's stdout/stderr goes to a log file in a temporary directory; a failing test
//! prints the tail of every log (set `SRI_KEEP_LOGS=1` to keep them after a pass). Ports SRI
//! must listen on are picked by binding 127.0.0.1:0 and releasing the port just before the
//! child binds it.

#[path = "sri_interop/chain.rs"]
mod chain;
#[path = "sri_interop/harness.rs"]
mod harness;
#[path = "sri_interop/monitor.rs"]
mod monitor;
#[path = "sri_interop/pool.rs"]
mod pool;
mod support;
#[path = "sri_interop/translator.rs"]
mod translator;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use harness::{Harness, connect_when_listening, free_port, until};
use hashshift_protocol::noise::{Initiator, NoiseCodec};
use hashshift_protocol::share::Target;
use hashshift_protocol::share::hash::{sha256d, sha256d_80};
use hashshift_protocol::share::job::build_header;
use hashshift_protocol::share::merkle::merkle_root;
use hashshift_protocol::sv1::{ClientRequest, Notify, ServerNotification, Subscribe};
use hashshift_protocol::sv2::types::{Reader, Sv2Decode, Sv2Encode};
use hashshift_protocol::sv2::{
    B064K, B0255, Message, Protocol, Seq0255, SetupConnection, Str0255, U256,
};
use hashshift_proxy::config::Config;
use hashshift_proxy::pool_link::miner::MinerShared;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_proxy::upstream::sv2::DEFAULT_NOMINAL_HASH_RATE;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::honest::{Honest, stop_all};
use support::miner::Miner;
use support::sv2_miner::{REQUIRES_STANDARD_JOBS, Received, Sv2Miner};
use support::template_provider::{
    Solution, TemplateProvider, TpConfig, TpStats, msg_type, without_witness,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use pool::{POOL_SIGNATURE, SriPool};
use translator::Translator;

fn fast_manager() -> ManagerSettings {
    ManagerSettings {
        no_work_timeout: Duration::from_secs(60),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    }
}

/// hashshift with an SV2 listener (authority key in the harness dir) in front of `pool`.
async fn sv2_proxy(
    h: &Harness,
    pool: &TestPool,
    difficulty: f64,
    spm: f64,
) -> Result<(Proxy, String)> {
    let key_path = h.dir.join("authority.key");
    let public = hashshift_proxy::keyfile::generate(&key_path)?;
    let text = format!(
        "[[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n\
         [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
         [vardiff]\ninitial = {difficulty:e}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = {spm:.1}\n",
        key_path.display().to_string(),
        pool.addr(),
    );
    let proxy = Proxy::start_with(&Config::from_toml(&text)?, fast_manager()).await?;
    Ok((proxy, public.to_string()))
}

/// SV1 subscribe + authorize, then the first difficulty and job in whatever order the
/// server sends them (the translator and the proxy differ).
async fn sv1_start(m: &mut Miner, worker: &str) -> Result<Notify> {
    let sub = m
        .call(ClientRequest::Subscribe(Subscribe::default()))
        .await?
        .subscribe_result()?;
    m.extranonce1 = sub.extranonce1;
    m.extranonce2_size = sub.extranonce2_size;
    if !m.authorize(worker).await? {
        bail!("authorize refused");
    }
    let mut job = None;
    while job.is_none() || m.difficulty == 0.0 {
        match m.next_note().await? {
            ServerNotification::SetDifficulty(d) => m.difficulty = d,
            ServerNotification::Notify(n) => job = Some(n),
            _ => {}
        }
    }
    job.context("a job")
}

// ---------------------------------------------------------------------------------------
// a. SRI mining_device → hashshift SV2 downstream → SV1 test pool
// ---------------------------------------------------------------------------------------

/// The test pool's difficulty for `mining_device`: ~4.3 M hashes a share, about a share a
/// second from one core of a release-built CPU miner.
const MD_POOL_DIFF: f64 = 1e-3;

#[tokio::test]
async fn sri_mining_device_mines_through_the_sv2_downstream() -> Result<()> {
    harness::run("mining-device", &["mining_device"], mining_device_flow).await
}

async fn mining_device_flow(h: &mut Harness) -> Result<()> {
    let bin = h.bin("mining_device")?;
    let pool = TestPool::start(TestPoolConfig {
        difficulty: MD_POOL_DIFF,
        name: "a".into(),
        ..TestPoolConfig::default()
    })
    .await?;
    let (proxy, authority) = sv2_proxy(h, &pool, MD_POOL_DIFF, 60.0).await?;
    let addr = proxy.listen_addrs()[0].to_string();
    let started = Instant::now();
    let md = h.spawn(
        "mining_device",
        &bin,
        &[
            "--address-pool",
            &addr,
            "--pubkey-pool",
            &authority,
            "--id-user",
            "sri-md",
            "--cores",
            "1",
        ],
    )?;
    let worker = |pool: &TestPool| pool.stats().workers.get("sri-md").map_or(0, |w| w.accepted);
    until(
        h,
        "a first share of mining_device accepted by the pool",
        Duration::from_secs(60),
        || worker(&pool) >= 1,
    )
    .await?;
    let first = started.elapsed();
    until(
        h,
        "3 shares of mining_device accepted by the pool",
        Duration::from_secs(40),
        || worker(&pool) >= 3,
    )
    .await?;
    // mining_device's channel as the proxy keeps it: the proxy's own verdicts on its shares.
    let channel = miner_record(&proxy, "sri-md")?;
    let (manager, instruments) = (proxy.manager().clone(), proxy.instruments().clone());
    // Shutting the proxy down closes mining_device's connection once the verdicts of its
    // shares in flight are relayed, then the pool connection: from here on the counts on both
    // sides are final and can be compared exactly.
    proxy.shutdown(Duration::from_secs(2)).await;
    let own = channel.counters.snapshot();
    let sv2 = instruments.sv2.shares.snapshot();
    let up = manager.pools()[0].shares;
    let stats = pool.stats();
    let log = &h.procs[md];
    eprintln!(
        "[a] mining_device: first pool-accepted share {:.1} s after spawn; proxy's verdicts on \
         its channel {own:?}; proxy's pool counters {up:?}; test pool accepted {} (worker \
         sri-md {}), rejected {}; mining_device logged {} SubmitShares.Success, {} \
         SubmitShares.Error",
        first.as_secs_f64(),
        stats.accepted,
        worker(&pool),
        stats.rejected_total(),
        log.count("Received SubmitSharesSuccess"),
        log.count("Received SubmitSharesError"),
    );
    assert_eq!(
        (own.rejected, own.lost),
        (0, 0),
        "the proxy refused none of mining_device's shares: {own:?}"
    );
    assert_eq!(
        (sv2.accepted, sv2.rejected, sv2.lost),
        (own.accepted, 0, 0),
        "mining_device's channel is the proxy's only SV2 miner"
    );
    assert_eq!(
        (up.rejected, up.lost),
        (0, 0),
        "every share the proxy forwarded got the pool's verdict, and it was yes: {up:?}"
    );
    assert!(
        up.accepted >= 3 && up.accepted <= own.accepted,
        "the proxy forwards shares it accepted (those under the pool's difficulty stay \
         behind): forwarded {up:?}, accepted {own:?}"
    );
    assert_eq!(
        (stats.accepted, worker(&pool), stats.rejected_total()),
        (up.accepted, up.accepted, 0),
        "the pool accepted, under mining_device's worker name, exactly the shares the proxy \
         counts as accepted by it, and refused none: {stats:?}"
    );
    pool.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// b. SV1 miner → SRI translator_sv2 → hashshift SV2 downstream → SV1 test pool
// ---------------------------------------------------------------------------------------

/// Pool and proxy difficulty for the translator flow: quick to hash in debug builds.
const TP_DIFF: f64 = 1e-6;

#[tokio::test]
async fn sri_translator_uses_the_sv2_downstream_as_its_pool() -> Result<()> {
    harness::run("translator", &["translator_sv2"], translator_flow).await
}

async fn translator_flow(h: &mut Harness) -> Result<()> {
    let pool = TestPool::start(TestPoolConfig {
        difficulty: TP_DIFF,
        name: "a".into(),
        ..TestPoolConfig::default()
    })
    .await?;
    let (proxy, authority) = sv2_proxy(h, &pool, TP_DIFF, 600.0).await?;
    let up = proxy.listen_addrs()[0];
    let sv1_port = free_port()?;
    // The translator's SV1 difficulty (~2.3e-6) is above the pool's, so every share the miner
    // finds is a pool share too.
    let started = Instant::now();
    Translator {
        sv1_port,
        upstream: up,
        authority,
        extranonce2_size: 4,
        vardiff: true,
    }
    .spawn(h, "translator_sv2")?;
    let sv1: SocketAddr = format!("127.0.0.1:{sv1_port}").parse()?;
    let mut m = Miner::from_stream(connect_when_listening(h, sv1, Duration::from_secs(30)).await?);
    let job = sv1_start(&mut m, "rig1").await?;
    for seed in 0..3 {
        let share = m.find_share(&job, seed, None);
        let verdict = m.submit(&share, "rig1").await?;
        assert_eq!(verdict, Ok(()), "the translator accepted share {seed}");
    }
    until(
        h,
        "3 translated shares accepted by the pool",
        Duration::from_secs(20),
        || pool.stats().accepted >= 3,
    )
    .await?;
    let first = started.elapsed();
    // A new block at the pool: the proxy's future job + SetNewPrevHash go through the
    // translator, which hands the miner a clean job; its share is accepted too.
    pool.new_job(true);
    let next = loop {
        let n = m.next_job().await?;
        if n.clean_jobs && n.prev_hash != job.prev_hash {
            break n;
        }
    };
    let share = m.find_share(&next, 9, None);
    assert_eq!(
        m.submit(&share, "rig1").await?,
        Ok(()),
        "share on the new block"
    );
    until(
        h,
        "the share on the new block accepted by the pool",
        Duration::from_secs(20),
        || pool.stats().accepted >= 4,
    )
    .await?;
    // The pool counts a share when it answers, the proxy when the answer arrives.
    until(
        h,
        "the proxy counting the pool's verdicts",
        Duration::from_secs(5),
        || proxy.pools()[0].shares.accepted >= pool.stats().accepted,
    )
    .await?;
    let stats = pool.stats();
    let up = proxy.pools()[0].shares;
    eprintln!(
        "[b] translator_sv2: 3 shares accepted by the pool {:.1} s after spawn (SV1 difficulty \
         {:e}), 1 more on a new block; pool {:?} rejected {}; proxy pool counters {up:?}",
        first.as_secs_f64(),
        m.difficulty,
        stats.workers,
        stats.rejected_total(),
    );
    assert_eq!(stats.rejected_total(), 0, "{stats:?}");
    assert!(
        stats.workers.keys().any(|w| w.starts_with("sri-tproxy")),
        "the translator's user_identity goes up as the worker: {:?}",
        stats.workers
    );
    assert_eq!(
        (up.accepted, up.rejected, up.lost),
        (stats.accepted, 0, 0),
        "the proxy's count of the pool's verdicts is the pool's own"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    pool.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// c. SV1 miner → hashshift SV2 upstream → SRI pool_sv2 ← our template provider
// ---------------------------------------------------------------------------------------

// Multi-threaded: the honest miners search nonces in `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv2_upstream_mines_into_sri_pool() -> Result<()> {
    harness::run("pool", &["pool_sv2"], pool_flow).await
}

/// hashshift's miners' side for [`sri_pool_and_proxy`]: an SV1 listener.
const SV1_DOWNSTREAM: &str = "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n";

/// Our template provider, pool_sv2 set up with it, and hashshift (`downstream`: its
/// `[[downstream]]` tables; Prometheus endpoint on) with pool_sv2 as its SV2 pool, channel
/// open.
async fn sri_pool_and_proxy(
    h: &mut Harness,
    tp: &TemplateProvider,
    downstream: &str,
) -> Result<(Proxy, SriPool)> {
    let pool = SriPool::start(h, tp).await?;
    // Not probed with a bare connect (pool_sv2 would log a failed handshake): the proxy
    // retries until pool_sv2 accepts.
    let text = format!(
        "{downstream}[[upstream]]\nurl = \"stratum2+tcp://{}/{}\"\nuser = \"hashshift-interop\"\n\
         [vardiff]\ninitial = 1e-6\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        pool.addr, pool.authority,
    );
    let proxy = Proxy::start_with(&Config::from_toml(&text)?, fast_manager()).await?;
    until(
        h,
        "hashshift's channel with pool_sv2 up",
        Duration::from_secs(20),
        || proxy.pools()[0].up,
    )
    .await?;
    Ok((proxy, pool))
}

/// The one channel pool_sv2 reports (hashshift opens one per pool connection).
fn only_channel(s: &monitor::Snapshot) -> Result<monitor::Channel> {
    match &s.channels[..] {
        [c] => Ok(c.clone()),
        other => bail!(
            "pool_sv2 reports {} channels, not 1: {other:?}",
            other.len()
        ),
    }
}

async fn pool_flow(h: &mut Harness) -> Result<()> {
    let tp = TemplateProvider::start(TpConfig::default()).await?;
    let started = Instant::now();
    let (proxy, pool) = sri_pool_and_proxy(h, &tp, SV1_DOWNSTREAM).await?;
    let pool_proc = pool.proc;
    // The channel as pool_sv2 opened it: no miner yet, so at the hashrate the proxy guesses.
    let opened = only_channel(
        &pool
            .monitor
            .until(
                "the proxy's channel in pool_sv2's monitoring",
                Duration::from_secs(10),
                |s| !s.channels.is_empty(),
            )
            .await?,
    )?;
    assert!(opened.extended, "an extended channel: {opened:?}");
    assert_eq!(
        opened.nominal_hashrate, DEFAULT_NOMINAL_HASH_RATE,
        "opened at the proxy's default hashrate: {opened:?}"
    );
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let job = sv1_start(&mut m, "rig1").await?;
    let channel_up = started.elapsed();
    // The job is pool_sv2's, built on our template: its coinbase carries the BIP34 height
    // our TP announced and the pool's signature.
    let height = 840_001u32.to_le_bytes();
    assert!(
        contains(&job.coinb1, &[0x03, height[0], height[1], height[2]]),
        "BIP34 height of the TP's template in coinb1: {}",
        hex::encode(&job.coinb1)
    );
    assert!(
        contains(&job.coinb1, POOL_SIGNATURE.as_bytes()),
        "pool_sv2's signature in the coinbase: {}",
        hex::encode(&job.coinb1)
    );
    assert_eq!(
        job.merkle_branch.len(),
        2,
        "the template's two fake transactions make the merkle path"
    );

    // A new block at the TP reaches the miner as a clean job on the new height.
    tp.new_block();
    let height = 840_002u32.to_le_bytes();
    let next = loop {
        let n = m.next_job().await?;
        if n.clean_jobs && contains(&n.coinb1, &[0x03, height[0], height[1], height[2]]) {
            break n;
        }
    };
    assert_ne!(next.prev_hash, job.prev_hash);

    drop(m);

    // The channel opened at DEFAULT_NOMINAL_HASH_RATE (one ASIC), so pool_sv2's target is
    // out of a CPU's reach at first: the miners' shares are accepted by the proxy at their
    // own difficulty until it announces their measured hashrate (UpdateChannel) and pool_sv2
    // answers with an easier SetTarget; from then on shares reach pool_sv2.
    let mining = Instant::now();
    let miners = Honest::start_many(proxy.listen_addrs()[0], "rig", 2).await?;
    until(
        h,
        "pool_sv2 accepting a first share",
        Duration::from_secs(60),
        || proxy.pools()[0].shares.accepted >= 1,
    )
    .await?;
    let first = mining.elapsed();
    until(
        h,
        "pool_sv2 accepting 3 shares",
        Duration::from_secs(30),
        || proxy.pools()[0].shares.accepted >= 3,
    )
    .await?;
    // The miners' hashrate as the proxy measures it (from the difficulty they got accepted),
    // and the channel as pool_sv2 now records it.
    let measured: f64 = proxy
        .manager()
        .miner_reports()
        .iter()
        .filter(|r| r.pool == 0)
        .map(|r| r.hashrate)
        .sum();
    let updated = only_channel(
        &pool
            .monitor
            .until(
                "pool_sv2 recording the hashrate the proxy announced",
                Duration::from_secs(5),
                |s| {
                    s.channels
                        .iter()
                        .any(|c| c.nominal_hashrate != opened.nominal_hashrate)
                },
            )
            .await?,
    )?;
    let reports = stop_all(miners).await?;
    // Every share is answered by now (the miners wait for each verdict); pool_sv2's
    // monitoring catches up within its refresh period.
    let up = proxy.pools()[0].shares;
    let counted = pool
        .monitor
        .until(
            "pool_sv2's monitoring counting the shares it acknowledged",
            Duration::from_secs(5),
            |s| s.accepted() >= up.accepted,
        )
        .await?;
    let log = &h.procs[pool_proc];
    eprintln!(
        "[c] pool_sv2: channel up and first job at the miner {:.1} s after spawn; first share \
         accepted by pool_sv2 {:.1} s after the miners started; channel opened at {:e} h/s, \
         target {}; after the update {:e} h/s (the proxy measures {measured:e} h/s), target {}; \
         proxy pool counters {up:?}; pool_sv2's own count {counted:?}; miners {reports:?}; \
         pool_sv2 logged {} UpdateChannel, {} SubmitSharesSuccess, {} SubmitSharesError",
        channel_up.as_secs_f64(),
        first.as_secs_f64(),
        opened.nominal_hashrate,
        opened.target_hex,
        updated.nominal_hashrate,
        updated.target_hex,
        log.count("UpdateChannel("),
        log.count("SubmitSharesSuccess("),
        log.count("SubmitSharesError"),
    );
    let ratio = f64::from(updated.nominal_hashrate) / measured;
    assert!(
        (1.0 / 3.0..=3.0).contains(&ratio),
        "pool_sv2 records the channel at the miners' hashrate the proxy measured ({measured:e} \
         h/s), not at {:e} h/s",
        updated.nominal_hashrate
    );
    assert!(
        updated.target()? > opened.target()?,
        "pool_sv2 eased the channel's target: {} at opening, {} now",
        opened.target_hex,
        updated.target_hex
    );
    let channel = only_channel(&counted)?;
    assert_eq!(
        (u64::from(channel.shares_accepted), channel.shares_rejected),
        (up.accepted, 0),
        "pool_sv2 counted on the channel what it acknowledged to the proxy, and refused none"
    );
    assert_eq!((up.rejected, up.lost), (0, 0), "{up:?}");
    assert!(tp.stats().solutions.is_empty(), "shares are not blocks");
    proxy.shutdown(Duration::from_secs(2)).await;
    tp.shutdown().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// e. A fleet through new templates and new blocks into pool_sv2
// ---------------------------------------------------------------------------------------

/// Honest SV1 miners in flow e.
const FLEET: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_mines_into_sri_pool_through_new_templates_and_blocks() -> Result<()> {
    harness::run("fleet", &["pool_sv2"], fleet_flow).await
}

/// What a pool operator checks before pointing a farm at a proxy: many miners on one channel,
/// a new template every second and two new blocks while they mine, and still no share
/// pool_sv2 refuses but a tip-change stale (a share on a replaced job is answered by the
/// proxy, not sent up), pool_sv2's count equal to what it acknowledged, nothing lost, every
/// miner paid.
async fn fleet_flow(h: &mut Harness) -> Result<()> {
    let tp = TemplateProvider::start(TpConfig {
        template_every: Some(Duration::from_secs(1)),
        ..TpConfig::default()
    })
    .await?;
    let (proxy, pool) = sri_pool_and_proxy(h, &tp, SV1_DOWNSTREAM).await?;
    let miners = Honest::start_many(proxy.listen_addrs()[0], "fleet", FLEET).await?;
    until(
        h,
        "pool_sv2 accepting the fleet's shares",
        Duration::from_secs(60),
        || proxy.pools()[0].shares.accepted >= 3,
    )
    .await?;
    let mining = Instant::now();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        h.ensure_alive()?;
        tp.new_block();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reports = stop_all(miners).await?;
    let mined = mining.elapsed();
    let up = proxy.pools()[0].shares;
    let counted = pool
        .monitor
        .until(
            "pool_sv2's monitoring counting the shares it acknowledged",
            Duration::from_secs(5),
            |s| s.accepted() >= up.accepted,
        )
        .await?;
    let channel = only_channel(&counted)?;
    let stats = tp.stats();
    let stale: u64 = reports.iter().map(|r| r.stale).sum();
    eprintln!(
        "[e] {FLEET} miners for {:.1} s through {} templates and 2 new blocks: pool_sv2 \
         accepted {} (proxy counted {up:?}), rejected {} {:?}; miners' own verdicts: {:?} \
         accepted, {stale} answered stale by the proxy",
        mined.as_secs_f64(),
        stats.templates,
        channel.shares_accepted,
        channel.shares_rejected,
        channel.shares_rejected_by_reason,
        reports.iter().map(|r| r.accepted).collect::<Vec<_>>(),
    );
    // The one refusal a proxy cannot always avoid: a share sent up in the milliseconds before
    // pool_sv2's SetNewPrevHash arrives is stale by then. Any other reason (duplicate, low
    // difficulty, unknown job, bad extranonce) would be the proxy's fault.
    assert!(
        channel
            .shares_rejected_by_reason
            .keys()
            .all(|reason| reason == "stale-share"),
        "pool_sv2 refused nothing but tip-change stales: {channel:?}"
    );
    assert_eq!(
        (u64::from(channel.shares_rejected), up.lost),
        (up.rejected, 0),
        "the proxy saw pool_sv2's refusals as pool_sv2 counted them, and lost nothing"
    );
    assert_eq!(
        u64::from(channel.shares_accepted),
        up.accepted,
        "pool_sv2 counted what it acknowledged"
    );
    assert!(
        reports.iter().all(|r| r.accepted >= 1),
        "every miner had shares accepted: {reports:?}"
    );
    assert!(
        stats.prev_hashes >= 3,
        "two new blocks reached pool_sv2: {stats:?}"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    tp.shutdown().await;
    Ok(())
}

/// Regtest's nBits: about every other hash is a block.
const REGTEST_NBITS: u32 = 0x207f_ffff;

/// Our TP on a regtest-difficulty chain that changes only when told.
async fn regtest_tp() -> Result<TemplateProvider> {
    TemplateProvider::start(TpConfig {
        nbits: REGTEST_NBITS,
        template_every: None,
        ..TpConfig::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_through_the_sv2_upstream_reaches_the_template_provider() -> Result<()> {
    harness::run("block", &["pool_sv2"], block_flow).await
}

/// Waits for the first `SubmitSolution` at our TP; returns how long after `mined` it came.
async fn solution_at_tp(
    h: &mut Harness,
    tp: &TemplateProvider,
    mined: Instant,
) -> Result<Duration> {
    until(
        h,
        "SubmitSolution at the TP",
        Duration::from_secs(10),
        || !tp.stats().solutions.is_empty(),
    )
    .await?;
    Ok(mined.elapsed())
}

/// The solution's header fields are the miner's share's.
fn header_fields_are(solution: &Solution, version: u32, ntime: u32, nonce: u32) -> Result<()> {
    let got = (
        solution.version,
        solution.header_timestamp,
        solution.header_nonce,
    );
    ensure!(
        got == (version, ntime, nonce),
        "SubmitSolution's (version, ntime, nonce) {got:x?} are not the miner's share's {:x?}",
        (version, ntime, nonce)
    );
    Ok(())
}

/// Regtest nBits: the proxy forwards the first share as a block candidate although pool_sv2's
/// channel target is far harder, and pool_sv2 must find the block valid by its own hashing
/// to send `SubmitSolution` to our TP.
async fn block_flow(h: &mut Harness) -> Result<()> {
    let tp = regtest_tp().await?;
    let (proxy, pool) = sri_pool_and_proxy(h, &tp, SV1_DOWNSTREAM).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    // The miner rolls version bits (BIP320), as ASICs do: the block's version is the job's
    // with the miner's bits.
    let (mask, job) = m.handshake("rig1", Some(0x1fff_e000)).await?;
    let rolled = mask & 0x0000_6000;
    assert_ne!(rolled, 0, "version rolling granted: mask {mask:#x}");
    assert_eq!(job.nbits, REGTEST_NBITS);
    let share = m.find_share(&job, 1, Some(rolled));
    let mined = Instant::now();
    assert_eq!(
        m.submit(&share, "rig1").await?,
        Ok(()),
        "pool_sv2 took the block"
    );
    let answered = mined.elapsed();
    let latency = solution_at_tp(h, &tp, mined).await?;
    // The block as the miner hashed it: its coinbase (non-witness, as SV1 builds it) and
    // header.
    let coinbase = [
        &job.coinb1[..],
        &m.extranonce1,
        &share.extranonce2,
        &job.coinb2,
    ]
    .concat();
    let root = merkle_root(&sha256d(&coinbase), &job.merkle_branch);
    let header = build_header(
        job.version | rolled,
        &job.prev_hash,
        &root,
        share.ntime,
        job.nbits,
        share.nonce,
    );
    let sent = tp.stats();
    let solution = &sent.solutions[0];
    let miners_channel = miner_record(&proxy, "rig1")?;
    eprintln!(
        "[c2] block (SV1 miner): verdict at the miner {:.0} ms and SubmitSolution at the TP \
         {:.0} ms after its submit; proxy pool counters {:?}; pool_sv2 logged {} \"Block Found\"",
        answered.as_secs_f64() * 1e3,
        latency.as_secs_f64() * 1e3,
        proxy.pools()[0].shares,
        h.procs[pool.proc].count("Block Found"),
    );
    // Version with the miner's rolled bits.
    header_fields_are(solution, job.version | rolled, share.ntime, share.nonce)?;
    assert_eq!(
        hex::encode(without_witness(&solution.coinbase_tx)?),
        hex::encode(&coinbase),
        "the solution's coinbase, witness left out, is the one the miner hashed"
    );
    assert!(
        contains(&solution.coinbase_tx, POOL_SIGNATURE.as_bytes()),
        "the solution's coinbase is pool_sv2's"
    );
    assert!(
        contains(&solution.coinbase_tx, &share.extranonce2),
        "and carries the miner's extranonce2"
    );
    check_block(&sent, solution, &header)?;
    one_block_everywhere(&proxy, &pool, &miners_channel).await?;
    proxy.shutdown(Duration::from_secs(2)).await;
    tp.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_sv2_miners_block_goes_through_both_sv2_sides_to_the_template_provider() -> Result<()> {
    harness::run("sv2-block", &["pool_sv2"], sv2_block_flow).await
}

/// An SV2 miner (SRI's crates, standard channel) on hashshift's SV2 listener, hashshift's SV2
/// upstream to pool_sv2, regtest nBits: the miner's first share is a block, far below
/// pool_sv2's channel target, and goes up at once; pool_sv2 submits it to our TP.
async fn sv2_block_flow(h: &mut Harness) -> Result<()> {
    let tp = regtest_tp().await?;
    let key_path = h.dir.join("authority.key");
    let authority = hashshift_proxy::keyfile::generate(&key_path)?;
    let downstream = format!(
        "[[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n",
        key_path.display().to_string()
    );
    let (proxy, pool) = sri_pool_and_proxy(h, &tp, &downstream).await?;
    let mut miner = Sv2Miner::connect(proxy.listen_addrs()[0], authority.to_bytes()).await?;
    let setup = miner.setup(REQUIRES_STANDARD_JOBS).await?;
    anyhow::ensure!(
        matches!(setup, Received::SetupSuccess { .. }),
        "SetupConnection: {setup:?}"
    );
    let ch = miner.open_channel(1, "sv2-rig", false).await?;
    let job = miner.first_job(ch.id).await?;
    let root = job
        .merkle_root
        .context("a standard job carries its merkle root")?;
    assert_eq!(job.nbits, REGTEST_NBITS);
    let share = job.find(&ch.prefix, Vec::new(), job.version, &ch.target, 1, false);
    let mined = Instant::now();
    let seq = miner.submit(ch.id, &share, false).await?;
    assert_eq!(
        miner.verdict(ch.id, seq).await?,
        Ok(()),
        "pool_sv2 took the block"
    );
    let answered = mined.elapsed();
    let latency = solution_at_tp(h, &tp, mined).await?;
    let header = build_header(
        share.version,
        &job.prev_hash,
        &root,
        share.ntime,
        job.nbits,
        share.nonce,
    );
    let sent = tp.stats();
    let solution = &sent.solutions[0];
    let miners_channel = miner_record(&proxy, "sv2-rig")?;
    eprintln!(
        "[c3] block (SV2 miner, standard channel): verdict at the miner {:.0} ms and \
         SubmitSolution at the TP {:.0} ms after its submit; channel extranonce {}; proxy pool \
         counters {:?}",
        answered.as_secs_f64() * 1e3,
        latency.as_secs_f64() * 1e3,
        hex::encode(&ch.prefix),
        proxy.pools()[0].shares,
    );
    header_fields_are(solution, share.version, share.ntime, share.nonce)?;
    assert!(
        contains(&solution.coinbase_tx, POOL_SIGNATURE.as_bytes()),
        "the solution's coinbase is pool_sv2's"
    );
    assert!(
        !ch.prefix.is_empty() && contains(&solution.coinbase_tx, &ch.prefix),
        "and carries the extranonce the proxy gave the miner's channel ({})",
        hex::encode(&ch.prefix)
    );
    check_block(&sent, solution, &header)?;
    one_block_everywhere(&proxy, &pool, &miners_channel).await?;
    proxy.shutdown(Duration::from_secs(2)).await;
    tp.shutdown().await;
    Ok(())
}

/// The proxy's record of the miner (SV1 connection or SV2 channel) authorized as `worker`.
fn miner_record(proxy: &Proxy, worker: &str) -> Result<Arc<MinerShared>> {
    proxy
        .manager()
        .miners()
        .into_iter()
        .find(|m| m.worker().as_deref() == Some(worker))
        .with_context(|| format!("the proxy has no miner {worker}"))
}

/// The TP's side of a block: the header rebuilt from what the TP sent (the template's tip and
/// merkle path) and the solution (its coinbase's txid, version, time and nonce) is, byte for
/// byte, the header the miner hashed (`mined`), and its hash meets the template's nBits.
fn check_block(tp: &TpStats, solution: &Solution, mined: &[u8; 80]) -> Result<()> {
    let template = tp
        .template_of(solution)
        .context("the solution names a template the TP sent")?;
    let header = tp.header_of(solution)?;
    assert_eq!(
        hex::encode(header),
        hex::encode(mined),
        "the header rebuilt from the TP's template {template:?} and the solution is the \
         miner's"
    );
    let hash = sha256d_80(&header);
    let target = Target::from_compact(template.nbits)
        .map_err(|e| anyhow::anyhow!("nBits {:#x}: {e:?}", template.nbits))?;
    assert!(
        target.is_met_by(&hash),
        "the block's hash {} meets nBits {:#x}",
        hex::encode(hash),
        template.nbits
    );
    Ok(())
}

/// After one block: pool_sv2 counts it on the proxy's channel, and the proxy counts it once
/// on the miner's record, on the pool (its API) and in its Prometheus series.
async fn one_block_everywhere(proxy: &Proxy, pool: &SriPool, miner: &MinerShared) -> Result<()> {
    let counted = pool
        .monitor
        .until("pool_sv2 counting the block", Duration::from_secs(5), |s| {
            s.blocks() >= 1
        })
        .await?;
    let channel = only_channel(&counted)?;
    let up = &proxy.pools()[0];
    let metrics = proxy.metrics_addr().context("no metrics listener")?;
    let series = support::metrics::series(&support::metrics::scrape_text(metrics).await?);
    let key = format!(
        "hashshift_pool_blocks_found_total{{pool=\"0\",url=\"{}\"}}",
        up.url
    );
    eprintln!(
        "pool_sv2's channel {channel:?}; the proxy's pool {:?}; {key} = {:?}",
        up.shares,
        series.get(&key)
    );
    assert_eq!(
        (channel.blocks_found, channel.shares_rejected),
        (1, 0),
        "pool_sv2 found one block on the channel"
    );
    assert_eq!(
        (
            miner.counters.snapshot().blocks,
            up.shares.blocks,
            series.get(&key).copied()
        ),
        (1, 1, Some(1.0)),
        "the proxy counts the block once: on the miner, on the pool, in {key}"
    );
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// The template provider itself (no SRI binary needed: runs in the default suite)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn template_provider_serves_templates_and_records_solutions() -> Result<()> {
    tokio::time::timeout(Duration::from_secs(20), async {
        let tp = TemplateProvider::start(TpConfig {
            template_every: Some(Duration::from_millis(200)),
            ..TpConfig::default()
        })
        .await?;
        let mut stream = TcpStream::connect(tp.addr()).await?;
        let mut initiator = Initiator::new(Some(tp.authority_public_key()), &mut rand::rng());
        stream.write_all(&initiator.step_0()?).await?;
        let mut reply = [0u8; hashshift_protocol::noise::RESPONDER_MESSAGE_LEN];
        stream.read_exact(&mut reply).await?;
        let now = hashshift_proxy::time::unix_secs_u32();
        let (transport, _) = initiator.step_2(&reply, now)?;
        let mut wire = Framed::new(stream, NoiseCodec::new(transport));
        wire.send(
            Message::from(SetupConnection {
                protocol: Protocol::TemplateDistribution,
                min_version: 2,
                max_version: 2,
                flags: 0,
                endpoint_host: Str0255::try_from("127.0.0.1")?,
                endpoint_port: tp.addr().port(),
                vendor: Str0255::default(),
                hardware_version: Str0255::default(),
                firmware: Str0255::default(),
                device_id: Str0255::default(),
            })
            .to_frame(),
        )
        .await?;
        let f = wire.next().await.context("closed")??;
        assert!(matches!(
            Message::from_frame(&f)?,
            Message::SetupConnectionSuccess(_)
        ));
        let mut p = bytes::BytesMut::new();
        100u32.encode(&mut p);
        4u16.encode(&mut p);
        wire.send(
            hashshift_protocol::sv2::Frame::new(
                0,
                false,
                msg_type::COINBASE_OUTPUT_CONSTRAINTS,
                p.freeze(),
            )
            .context("frame")?,
        )
        .await?;
        // A future template, then the SetNewPrevHash activating it.
        let f = wire.next().await.context("closed")??;
        assert_eq!(f.header.msg_type, msg_type::NEW_TEMPLATE);
        let mut r = Reader::new(&f.payload);
        let template_id = u64::decode(&mut r)?;
        assert!(bool::decode(&mut r)?, "future");
        let version = u32::decode(&mut r)?;
        let _coinbase_tx_version = u32::decode(&mut r)?;
        let coinbase_prefix = B0255::decode(&mut r)?.into_vec();
        let sequence = u32::decode(&mut r)?;
        let value = u64::decode(&mut r)?;
        let _outputs_count = u32::decode(&mut r)?;
        let _outputs = B064K::decode(&mut r)?;
        let _locktime = u32::decode(&mut r)?;
        let merkle_path = Seq0255::<U256>::decode(&mut r)?.into_vec();
        r.finish()?;
        let f = wire.next().await.context("closed")??;
        assert_eq!(f.header.msg_type, msg_type::SET_NEW_PREV_HASH);
        let mut r = Reader::new(&f.payload);
        assert_eq!(u64::decode(&mut r)?, template_id);
        let prev_hash = U256::decode(&mut r)?;
        let _header_timestamp = u32::decode(&mut r)?;
        let nbits = u32::decode(&mut r)?;
        // Recorded as sent.
        let sent = tp.stats().sent;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            (
                sent[0].conn,
                sent[0].template_id,
                sent[0].future,
                sent[0].version
            ),
            (1, template_id, true, version)
        );
        assert_eq!(
            (&sent[0].coinbase_prefix, &sent[0].merkle_path),
            (&coinbase_prefix, &merkle_path)
        );
        assert_eq!((sent[0].prev_hash, sent[0].nbits), (prev_hash, nbits));
        // Then non-future templates on the timer.
        let f = wire.next().await.context("closed")??;
        assert_eq!(f.header.msg_type, msg_type::NEW_TEMPLATE);
        let mut r = Reader::new(&f.payload);
        assert!(u64::decode(&mut r)? > template_id);
        assert!(!bool::decode(&mut r)?, "not future");
        // A solution is recorded, and its header rebuilt from the TP's records: its coinbase
        // in segwit serialization (as pool_sv2 sends it), the txid from the legacy one.
        let script_sig = [&coinbase_prefix[..], b"hashshift self-test"].concat();
        let input = [
            &[1u8][..],
            &[0; 32],
            &[0xff; 4],
            &[script_sig.len() as u8],
            &script_sig,
            &sequence.to_le_bytes(),
        ]
        .concat();
        let output = [&[1u8][..], &value.to_le_bytes(), &[1, 0x51]].concat();
        let legacy = [&2u32.to_le_bytes()[..], &input, &output, &[0; 4]].concat();
        let witness = [&[1u8, 32][..], &[0; 32]].concat();
        let segwit = [
            &2u32.to_le_bytes()[..],
            &[0, 1],
            &input,
            &output,
            &witness,
            &[0; 4],
        ]
        .concat();
        let mut p = bytes::BytesMut::new();
        template_id.encode(&mut p);
        0x2000_0000u32.encode(&mut p);
        1u32.encode(&mut p);
        7u32.encode(&mut p);
        B064K::try_from(segwit.clone())?.encode(&mut p);
        wire.send(
            hashshift_protocol::sv2::Frame::new(0, false, msg_type::SUBMIT_SOLUTION, p.freeze())
                .context("frame")?,
        )
        .await?;
        let start = Instant::now();
        while tp.stats().solutions.is_empty() {
            if start.elapsed() > Duration::from_secs(5) {
                bail!("solution not recorded: {:?}", tp.stats());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = tp.stats();
        assert_eq!(s.constraints, Some((100, 4)));
        assert_eq!(s.solutions[0].header_nonce, 7);
        assert_eq!(s.solutions[0].coinbase_tx, segwit);
        assert_eq!(without_witness(&segwit)?, legacy);
        assert_eq!(without_witness(&legacy)?, legacy);
        assert!(without_witness(&segwit[..segwit.len() - 1]).is_err());
        let root = merkle_root(&sha256d(&legacy), &merkle_path);
        assert_eq!(
            s.header_of(&s.solutions[0])?,
            build_header(0x2000_0000, &prev_hash, &root, 1, nbits, 7)
        );
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        tp.shutdown().await;
        Ok(())
    })
    .await
    .context("template provider self-test timed out")?
}
