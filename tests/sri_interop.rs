//! Interop with the Stratum Reference Implementation's own binaries (SRI: `mining_device`,
//! `translator_sv2`, `pool_sv2`), each spawned as a child process next to hashshift running
//! in-process on 127.0.0.1:
//!
//! - a. SRI `mining_device` (SV2 CPU miner, standard channel) → hashshift SV2 downstream →
//!   our SV1 test pool, which validates every share with its own hashing;
//! - b. an SV1 test miner → SRI `translator_sv2` → hashshift SV2 downstream → test pool;
//! - c. an SV1 test miner → hashshift SV2 upstream → SRI `pool_sv2`, fed by our test template
//!   provider (`support::template_provider`).
//!
//! The SRI tests are `#[ignore]`: the binaries take minutes to build. Run them with
//! `scripts/sri-interop.sh`, or `cargo test --test sri_interop -- --ignored
//! --test-threads=1 --nocapture` with the binaries in `$SRI_BIN` (default `/work/sri/bin`).
//! Each child's stdout/stderr goes to a log file in a temporary directory; a failing test
//! prints the tail of every log (set `SRI_KEEP_LOGS=1` to keep them after a pass). Ports SRI must listen on are picked by binding
//! 127.0.0.1:0 and releasing the port just before the child binds it.

#[path = "sri_interop/chain.rs"]
mod chain;
#[path = "sri_interop/harness.rs"]
mod harness;
#[path = "sri_interop/monitor.rs"]
mod monitor;
#[path = "sri_interop/pool.rs"]
mod pool;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use harness::{FLOW, Harness, connect_when_listening, free_port, until};
use hashshift_protocol::noise::{Initiator, NoiseCodec};
use hashshift_protocol::sv1::{ClientRequest, Notify, ServerNotification, Subscribe};
use hashshift_protocol::sv2::types::{Reader, Sv2Decode, Sv2Encode};
use hashshift_protocol::sv2::{B064K, Message, Protocol, SetupConnection, Str0255};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::honest::{Honest, stop_all};
use support::miner::Miner;
use support::template_provider::{TemplateProvider, TpConfig, msg_type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use pool::{POOL_SIGNATURE, SriPool};

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
    let Some(mut h) = Harness::new("mining-device", &["mining_device"]).await? else {
        return Ok(());
    };
    let r = tokio::time::timeout(FLOW, mining_device_flow(&mut h)).await;
    h.finish(r).await
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
    // The proxy acknowledges in batches (up to 100 ms): let the last verdicts reach SRI.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = pool.stats();
    let up = proxy.pools()[0].shares;
    let log = &h.procs[md];
    let (ok, errors) = (
        log.count("Received SubmitSharesSuccess"),
        log.count("Received SubmitSharesError"),
    );
    eprintln!(
        "[a] mining_device: first pool-accepted share {:.1} s after spawn; pool accepted {} \
         (worker sri-md {}), rejected {}; proxy pool counters {up:?}; mining_device saw {ok} \
         SubmitShares.Success, {errors} SubmitShares.Error",
        first.as_secs_f64(),
        stats.accepted,
        worker(&pool),
        stats.rejected_total(),
    );
    assert_eq!(
        stats.rejected_total(),
        0,
        "the pool refused none: {stats:?}"
    );
    assert!(up.accepted >= 3 && up.rejected == 0, "{up:?}");
    assert!(
        ok >= 1,
        "mining_device got SubmitShares.Success from the proxy"
    );
    assert_eq!(
        errors, 0,
        "the proxy refused none of mining_device's shares"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
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
    let Some(mut h) = Harness::new("translator", &["translator_sv2"]).await? else {
        return Ok(());
    };
    let r = tokio::time::timeout(FLOW, translator_flow(&mut h)).await;
    h.finish(r).await
}

async fn translator_flow(h: &mut Harness) -> Result<()> {
    let bin = h.bin("translator_sv2")?;
    let pool = TestPool::start(TestPoolConfig {
        difficulty: TP_DIFF,
        name: "a".into(),
        ..TestPoolConfig::default()
    })
    .await?;
    let (proxy, authority) = sv2_proxy(h, &pool, TP_DIFF, 600.0).await?;
    let up = proxy.listen_addrs()[0];
    let sv1_port = free_port()?;
    // min_individual_miner_hashrate 10 kH/s at 60 shares a minute: SV1 difficulty ~2.3e-6,
    // above the pool's, so every share the miner finds is a pool share too.
    let config = h.write(
        "tproxy.toml",
        &format!(
            "downstream_address = \"127.0.0.1\"\ndownstream_port = {sv1_port}\n\
             max_supported_version = 2\nmin_supported_version = 2\n\
             downstream_extranonce2_size = 4\nverify_payout = false\naggregate_channels = true\n\
             supported_extensions = []\n\
             [downstream_difficulty_config]\nmin_individual_miner_hashrate = 10000.0\n\
             shares_per_minute = 60.0\nenable_vardiff = true\njob_keepalive_interval_secs = 60\n\
             [[upstreams]]\naddress = \"127.0.0.1\"\nport = {}\nauthority_pubkey = \"{authority}\"\n\
             user_identity = \"sri-tproxy\"\n",
            up.port()
        ),
    )?;
    let started = Instant::now();
    let config = config.display().to_string();
    h.spawn("translator_sv2", &bin, &["-c", &config])?;
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
    assert!(up.accepted >= 4, "{up:?}");
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
    let Some(mut h) = Harness::new("pool", &["pool_sv2"]).await? else {
        return Ok(());
    };
    let r = tokio::time::timeout(FLOW, pool_flow(&mut h)).await;
    h.finish(r).await
}

/// Our template provider, pool_sv2 set up with it, and hashshift (SV1 listener) with
/// pool_sv2 as its SV2 pool, channel open.
async fn sri_pool_and_proxy(h: &mut Harness, tp: &TemplateProvider) -> Result<(Proxy, SriPool)> {
    let pool = SriPool::start(h, tp).await?;
    // Not probed with a bare connect (pool_sv2 would log a failed handshake): the proxy
    // retries until pool_sv2 accepts.
    let text = format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum2+tcp://{}/{}\"\nuser = \"hashshift-interop\"\n\
         [vardiff]\ninitial = 1e-6\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n",
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

async fn pool_flow(h: &mut Harness) -> Result<()> {
    let tp = TemplateProvider::start(TpConfig::default()).await?;
    let started = Instant::now();
    let (proxy, pool) = sri_pool_and_proxy(h, &tp).await?;
    let pool_proc = pool.proc;
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
    let reports = stop_all(miners).await?;
    let up = proxy.pools()[0].shares;
    let mut counted = pool.monitor.snapshot().await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while counted.accepted() < up.accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counted = pool.monitor.snapshot().await?;
    }
    eprintln!("[c] pool_sv2's own count: {counted:?}");
    assert_eq!(
        (counted.accepted(), counted.rejected()),
        (up.accepted, 0),
        "pool_sv2 counted what it acknowledged to the proxy"
    );
    let log = &h.procs[pool_proc];
    eprintln!(
        "[c] pool_sv2: channel up and first job at the miner {:.1} s after spawn; first share \
         accepted by pool_sv2 {:.1} s after the miners started; proxy pool counters {up:?}; \
         miners {reports:?}; pool_sv2 logged {} UpdateChannel, {} SubmitSharesSuccess, {} \
         SubmitSharesError",
        channel_up.as_secs_f64(),
        first.as_secs_f64(),
        log.count("UpdateChannel("),
        log.count("SubmitSharesSuccess("),
        log.count("SubmitSharesError"),
    );
    assert_eq!(up.rejected, 0, "{up:?}");
    assert!(
        log.count("UpdateChannel(") >= 1,
        "the proxy announced its miners' hashrate"
    );
    assert!(
        log.count("SubmitSharesSuccess(") >= 3,
        "pool_sv2 itself logs the shares as accepted"
    );
    assert_eq!(log.count("SubmitSharesError"), 0);
    assert!(tp.stats().solutions.is_empty(), "shares are not blocks");
    proxy.shutdown(Duration::from_secs(2)).await;
    tp.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_through_the_sv2_upstream_reaches_the_template_provider() -> Result<()> {
    let Some(mut h) = Harness::new("block", &["pool_sv2"]).await? else {
        return Ok(());
    };
    let r = tokio::time::timeout(FLOW, block_flow(&mut h)).await;
    h.finish(r).await
}

/// Regtest nBits (0x207fffff: about every other hash is a block): the proxy forwards the
/// first share as a block candidate although pool_sv2's channel target is far harder, and
/// pool_sv2 must find the block valid by its own hashing to send `SubmitSolution` to our TP.
async fn block_flow(h: &mut Harness) -> Result<()> {
    let tp = TemplateProvider::start(TpConfig {
        nbits: 0x207f_ffff,
        template_every: None,
        ..TpConfig::default()
    })
    .await?;
    let (proxy, pool) = sri_pool_and_proxy(h, &tp).await?;
    let pool_proc = pool.proc;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let job = sv1_start(&mut m, "rig1").await?;
    assert_eq!(job.nbits, 0x207f_ffff);
    let share = m.find_share(&job, 1, None);
    let mined = Instant::now();
    assert_eq!(
        m.submit(&share, "rig1").await?,
        Ok(()),
        "pool_sv2 took the block"
    );
    until(
        h,
        "SubmitSolution at the TP",
        Duration::from_secs(10),
        || !tp.stats().solutions.is_empty(),
    )
    .await?;
    let solution = tp.stats().solutions[0].clone();
    let up = proxy.pools()[0].shares;
    eprintln!(
        "[c2] block: SubmitSolution at the TP {:.0} ms after the miner's submit; proxy pool \
         counters {up:?}; pool_sv2 logged {} \"Block Found\"",
        mined.elapsed().as_secs_f64() * 1e3,
        h.procs[pool_proc].count("Block Found"),
    );
    assert!(h.procs[pool_proc].count("Block Found") >= 1);
    assert_eq!(solution.header_nonce, share.nonce);
    assert_eq!(solution.header_timestamp, share.ntime);
    assert!(
        contains(&solution.coinbase_tx, POOL_SIGNATURE.as_bytes()),
        "the solution's coinbase is pool_sv2's"
    );
    assert!(
        contains(&solution.coinbase_tx, &share.extranonce2),
        "and carries the miner's extranonce2"
    );
    assert!(up.accepted >= 1, "{up:?}");
    assert!(up.blocks >= 1, "the pool accepted a block: {up:?}");
    proxy.shutdown(Duration::from_secs(2)).await;
    tp.shutdown().await;
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
        let f = wire.next().await.context("closed")??;
        assert_eq!(f.header.msg_type, msg_type::SET_NEW_PREV_HASH);
        let mut r = Reader::new(&f.payload);
        assert_eq!(u64::decode(&mut r)?, template_id);
        // Then non-future templates on the timer.
        let f = wire.next().await.context("closed")??;
        assert_eq!(f.header.msg_type, msg_type::NEW_TEMPLATE);
        let mut r = Reader::new(&f.payload);
        assert!(u64::decode(&mut r)? > template_id);
        assert!(!bool::decode(&mut r)?, "not future");
        // A solution is recorded.
        let mut p = bytes::BytesMut::new();
        template_id.encode(&mut p);
        0x2000_0000u32.encode(&mut p);
        1u32.encode(&mut p);
        7u32.encode(&mut p);
        B064K::try_from(vec![1u8, 2, 3])?.encode(&mut p);
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
        assert_eq!(s.solutions[0].coinbase_tx, vec![1, 2, 3]);
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        tp.shutdown().await;
        Ok(())
    })
    .await
    .context("template provider self-test timed out")?
}
