//! The embedded test pool over real sockets on 127.0.0.1: a tiny SV1 miner configures,
//! subscribes, authorizes, searches real nonces at a tiny difficulty and submits them; the
//! pool must accept exactly the valid ones, reject the rest with the right code, and count
//! everything.

mod support;

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

use hashshift_protocol::sv1::{
    ClientMessage, ClientRequest, Configure, Id, ServerMessage, ServerNotification, Subscribe,
};
use hashshift_tools::testpool::{TestPool, TestPoolConfig, job_tag, reason};
use support::miner::{Miner, Share, within};

/// Share difficulty for tests: 2^32 × 1e-6 ≈ 4300 hashes per share on average. A debug build
/// does about 100k sha256d per second, so 1e-4 (430k hashes) would take seconds per share.
const DIFF: f64 = 1e-6;
fn config() -> TestPoolConfig {
    TestPoolConfig {
        difficulty: DIFF,
        name: "pool-t".into(),
        ..TestPoolConfig::default()
    }
}

#[tokio::test]
async fn valid_share_is_accepted_and_credited() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (granted, job) = m.handshake("alice", Some(0xffff_ffff)).await?;
    assert_eq!(granted, 0x1fff_e000, "requested & pool mask");
    assert_eq!((m.extranonce1.len(), m.extranonce2_size), (4, 8));
    assert_eq!(m.difficulty, DIFF);
    assert_eq!(job.version, 0x2000_0000);
    assert_eq!(job.merkle_branch.len(), 12);

    let share = m.find_share(&job, 1, Some(0x0000_6000));
    assert_eq!(m.submit(&share, "alice").await?, Ok(()));

    let stats = pool.stats();
    assert_eq!((stats.accepted, stats.rejected_total()), (1, 0));
    assert_eq!(stats.accepted_difficulty, DIFF);
    assert_eq!((stats.connections, stats.connects_total), (1, 1));
    let alice = &stats.workers["alice"];
    assert_eq!((alice.accepted, alice.rejected), (1, 0));
    assert!(alice.last_share.is_some());
    assert_eq!(stats.blocks, 0);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rejections_carry_their_sv1_codes() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, job) = m.handshake("w", Some(0x1fff_e000)).await?;

    assert_eq!(
        m.submit(&m.bad_share(&job), "w").await?,
        Err(23),
        "low difficulty"
    );
    let good = m.find_share(&job, 2, None);
    assert_eq!(m.submit(&good, "w").await?, Ok(()));
    assert_eq!(m.submit(&good, "w").await?, Err(22), "duplicate");
    let unknown = Share {
        job_id: "abcdef".into(),
        ..good.clone()
    };
    assert_eq!(m.submit(&unknown, "w").await?, Err(21), "unknown job");
    let junk_id = Share {
        job_id: "not-a-job".into(),
        ..good.clone()
    };
    assert_eq!(
        m.submit(&junk_id, "w").await?,
        Err(21),
        "unparseable job id"
    );
    let outside = Share {
        version_bits: Some(0x8000_0000),
        ..good.clone()
    };
    assert_eq!(
        m.submit(&outside, "w").await?,
        Err(20),
        "version bits outside mask"
    );
    assert_eq!(
        m.submit(&good, "nobody").await?,
        Err(24),
        "unauthorized worker"
    );
    let short = Share {
        extranonce2: vec![0; 3],
        ..good.clone()
    };
    assert_eq!(m.submit(&short, "w").await?, Err(20), "extranonce2 size");

    // A clean job makes the old one stale.
    let before_clean = m.find_share(&job, 3, None);
    pool.new_job(true);
    let clean = m.next_job().await?;
    assert!(clean.clean_jobs);
    assert_ne!(clean.prev_hash, job.prev_hash);
    assert_eq!(m.submit(&before_clean, "w").await?, Err(21), "stale");

    // Unknown methods get error 20 and the connection stays usable.
    let r = m
        .call(ClientRequest::Unknown {
            method: "mining.get_transactions".into(),
            params: serde_json::json!([]),
        })
        .await?;
    assert_eq!(r.error.map(|e| e.code), Some(20));
    assert_eq!(m.submit(&m.find_share(&clean, 4, None), "w").await?, Ok(()));

    // Submitting before subscribing: 25.
    let mut early = Miner::connect(pool.addr()).await?;
    early.extranonce2_size = 8;
    assert_eq!(early.submit(&good, "w").await?, Err(25));

    let stats = pool.stats();
    assert_eq!(stats.accepted, 2);
    let expect = [
        (reason::LOW_DIFFICULTY, 1),
        (reason::DUPLICATE, 1),
        (reason::UNKNOWN_JOB, 2),
        (reason::VERSION_BITS, 1),
        (reason::UNAUTHORIZED, 1),
        (reason::EXTRANONCE_SIZE, 1),
        (reason::STALE, 1),
        (reason::NOT_SUBSCRIBED, 1),
    ];
    for (why, n) in expect {
        assert_eq!(stats.rejected_for(why), n, "{why}");
    }
    assert_eq!(stats.rejected_total(), 9);
    assert_eq!(
        stats.workers["w"].rejected, 7,
        "unauthorized/unsubscribed not credited"
    );
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn two_workers_on_one_connection_are_credited_separately() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, job) = m.handshake("acct.rig1", None).await?;
    assert!(m.authorize("acct.rig2").await?);
    for seed in 0..2 {
        let s = m.find_share(&job, 10 + seed, None);
        assert_eq!(m.submit(&s, "acct.rig1").await?, Ok(()));
    }
    let s = m.find_share(&job, 20, None);
    assert_eq!(m.submit(&s, "acct.rig2").await?, Ok(()));
    assert_eq!(m.submit(&s, "acct.rig2").await?, Err(22));
    let stats = pool.stats();
    assert_eq!(stats.workers.len(), 2);
    assert_eq!(stats.workers["acct.rig1"].accepted, 2);
    assert_eq!(
        (
            stats.workers["acct.rig2"].accepted,
            stats.workers["acct.rig2"].rejected
        ),
        (1, 1)
    );
    assert_eq!(stats.accepted_difficulty, 3.0 * DIFF);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn kill_closes_connections_and_revive_listens_on_the_same_address() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let addr = pool.addr();
    let mut a = Miner::connect(addr).await?;
    let mut b = Miner::connect(addr).await?;
    a.handshake("a", None).await?;
    b.call(ClientRequest::Subscribe(Subscribe::default()))
        .await?;

    pool.kill().await;
    for m in [&mut a, &mut b] {
        let end = within("EOF after kill", async {
            loop {
                if m.recv().await?.is_none() {
                    return Ok::<_, anyhow::Error>(());
                }
            }
        })
        .await;
        end??;
    }
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens");
    assert_eq!(pool.stats().connections, 0);

    pool.revive().await?;
    assert_eq!(pool.addr(), addr);
    let mut c = Miner::connect(addr).await?;
    let (_, job) = c.handshake("c", None).await?;
    assert_eq!(c.submit(&c.find_share(&job, 1, None), "c").await?, Ok(()));
    let stats = pool.stats();
    assert_eq!((stats.connections, stats.connects_total), (1, 3));
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stall_stops_jobs_until_resumed() -> Result<()> {
    let interval = Duration::from_millis(150);
    let pool = TestPool::start(TestPoolConfig {
        job_interval: interval,
        ..config()
    })
    .await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, first) = m.handshake("w", None).await?;
    let periodic = m.next_job().await?;
    assert!(!periodic.clean_jobs, "periodic jobs keep the block");
    assert_eq!(periodic.prev_hash, first.prev_hash);
    assert!(periodic.ntime >= first.ntime);

    pool.stall(true);
    // Let anything already published arrive, then expect silence for 4 intervals.
    tokio::time::sleep(interval).await;
    while tokio::time::timeout(Duration::from_millis(50), m.next_note())
        .await
        .is_ok()
    {}
    let quiet = tokio::time::timeout(interval * 4, m.next_note()).await;
    assert!(quiet.is_err(), "no job while stalled: {quiet:?}");
    // The connection is still usable while stalled.
    assert_eq!(
        m.submit(&m.find_share(&periodic, 5, None), "w").await?,
        Ok(())
    );

    pool.stall(false);
    let resumed = m.next_job().await?;
    assert!(job_tag(&resumed.coinb1) > job_tag(&periodic.coinb1));
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn set_difficulty_precedes_the_next_job_and_old_jobs_keep_theirs() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, old_job) = m.handshake("w", None).await?;
    let old_share = m.find_share(&old_job, 1, None);

    pool.set_difficulty(2.0 * DIFF);
    match m.next_note().await? {
        ServerNotification::SetDifficulty(d) => assert_eq!(d, 2.0 * DIFF),
        other => panic!("expected set_difficulty first, got {other:?}"),
    }
    m.difficulty = 2.0 * DIFF;
    let job = match m.next_note().await? {
        ServerNotification::Notify(n) => n,
        other => panic!("expected notify, got {other:?}"),
    };
    assert!(!job.clean_jobs);

    // The old job's share is judged and credited at the old difficulty.
    assert_eq!(m.submit(&old_share, "w").await?, Ok(()));
    assert_eq!(m.submit(&m.find_share(&job, 2, None), "w").await?, Ok(()));
    assert_eq!(pool.stats().accepted_difficulty, 3.0 * DIFF);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn job_tag_round_trips_through_notify() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, first) = m.handshake("w", None).await?;
    let tag = job_tag(&first.coinb1).context("tagged")?;
    assert_eq!(tag, pool.current_job_tag());
    pool.new_job(false);
    let next = m.next_job().await?;
    let next_tag = job_tag(&next.coinb1).context("tagged")?;
    assert_eq!(next_tag, tag + 1);
    let sent = pool.job_sent_at(next_tag).context("send time")?;
    assert!(sent >= pool.job_sent_at(tag).context("first send time")?);
    assert!(sent <= std::time::Instant::now());
    assert_eq!(pool.job_sent_at(next_tag + 100), None);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn version_mask_changes_reach_only_rolling_connections() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut rolling = Miner::connect(pool.addr()).await?;
    let mut plain = Miner::connect(pool.addr()).await?;
    let (granted, _) = rolling.handshake("r", Some(0x0fff_e000)).await?;
    assert_eq!(granted, 0x0fff_e000);
    plain.handshake("p", None).await?;

    pool.set_version_mask(0x00ff_e000);
    match rolling.next_note().await? {
        ServerNotification::SetVersionMask(mask) => assert_eq!(mask, 0x00ff_e000),
        other => panic!("expected set_version_mask, got {other:?}"),
    }
    let silent = tokio::time::timeout(Duration::from_millis(300), plain.next_note()).await;
    assert!(
        silent.is_err(),
        "no mask for a non-rolling miner: {silent:?}"
    );
    // A new job under the new mask: bits outside it are refused.
    pool.new_job(false);
    let job = rolling.next_job().await?;
    let outside = rolling.find_share(&job, 1, Some(0x0f00_0000));
    assert_eq!(rolling.submit(&outside, "r").await?, Err(20));
    let inside = rolling.find_share(&job, 2, Some(0x0000_e000));
    assert_eq!(rolling.submit(&inside, "r").await?, Ok(()));
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_share_meeting_the_network_target_is_a_block() -> Result<()> {
    let pool = TestPool::start(TestPoolConfig {
        network_difficulty: DIFF,
        difficulty: DIFF / 4.0,
        ..config()
    })
    .await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, job) = m.handshake("lucky", None).await?;
    m.difficulty = DIFF; // search at the network difficulty
    let block = m.find_share(&job, 1, None);
    assert_eq!(m.submit(&block, "lucky").await?, Ok(()));
    let stats = pool.stats();
    assert_eq!((stats.accepted, stats.blocks), (1, 1));
    assert_eq!(
        stats.accepted_difficulty,
        DIFF / 4.0,
        "credited at share difficulty"
    );
    // The chain moves on: a clean job on a new prevhash.
    let next = m.next_job().await?;
    assert!(next.clean_jobs);
    assert_ne!(next.prev_hash, job.prev_hash);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_miner_that_does_not_read_is_dropped() -> Result<()> {
    let pool = TestPool::start(TestPoolConfig {
        send_timeout: Duration::from_millis(500),
        ..config()
    })
    .await?;
    let mut m = Miner::connect(pool.addr()).await?;
    m.handshake("w", None).await?;
    // Pipeline cheap-to-answer submits and never read the answers: once the socket buffers
    // and the pool's send queue are full, the pool must drop us rather than wait.
    let mut line = BytesMut::new();
    for i in 0..1000u64 {
        m.codec.encode(
            ClientMessage::Request {
                id: Id::from(i),
                request: ClientRequest::Unknown {
                    method: "mining.ping".into(),
                    params: serde_json::json!([]),
                },
            },
            &mut line,
        )?;
    }
    let started = std::time::Instant::now();
    let mut sent = 0usize;
    let dropped = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if m.stream.write_all(&line).await.is_err() {
                return;
            }
            sent += line.len();
        }
    })
    .await;
    assert!(
        dropped.is_ok(),
        "still connected after sending {sent} bytes"
    );
    eprintln!("dropped after {sent} bytes in {:?}", started.elapsed());
    within("connection count", async {
        while pool.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_burst_of_pipelined_requests_is_answered_in_full() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    m.handshake("w", None).await?;
    // Far more answers than the send queue holds, in one write: a reading peer is slowed
    // down, not dropped.
    let n = 3000u64;
    let mut burst = BytesMut::new();
    for i in 0..n {
        let request = ClientRequest::Unknown {
            method: "mining.ping".into(),
            params: serde_json::json!([]),
        };
        m.codec.encode(
            ClientMessage::Request {
                id: Id::from(1_000_000 + i),
                request,
            },
            &mut burst,
        )?;
    }
    m.stream.write_all(&burst).await?;
    let mut answered = 0;
    within("burst answers", async {
        while answered < n {
            match m.recv().await?.context("dropped during the burst")? {
                ServerMessage::Response(r) => {
                    assert_eq!(r.id.as_u64(), Some(1_000_000 + answered));
                    answered += 1;
                }
                ServerMessage::Notification { .. } => {}
            }
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    assert_eq!(pool.stats().connections, 1);
    pool.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn minimum_and_suggested_difficulty_raise_the_floor_only() -> Result<()> {
    let pool = TestPool::start(config()).await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let r = m
        .call(ClientRequest::Configure(Configure {
            extensions: vec!["minimum-difficulty".into(), "subscribe-extranonce".into()],
            minimum_difficulty: Some(4.0 * DIFF),
            ..Configure::default()
        }))
        .await?
        .configure_result()?;
    assert_eq!(r.negotiated_mask(), None, "rolling not requested");
    let sub = m
        .call(ClientRequest::Subscribe(Subscribe::default()))
        .await?
        .subscribe_result()?;
    (m.extranonce1, m.extranonce2_size) = (sub.extranonce1, sub.extranonce2_size);
    assert!(m.authorize("w").await?);
    let job = m.next_job().await?;
    assert_eq!(
        m.difficulty,
        4.0 * DIFF,
        "the miner's minimum wins over the pool's"
    );
    // A suggestion below the floor changes nothing; one above it applies from the next job.
    let r = m.call(ClientRequest::SuggestDifficulty(DIFF / 2.0)).await?;
    assert!(r.as_bool()?);
    pool.new_job(false);
    let same = m.next_note().await?;
    assert!(matches!(same, ServerNotification::Notify(_)), "{same:?}");
    m.call(ClientRequest::SuggestDifficulty(8.0 * DIFF)).await?;
    pool.new_job(false);
    let next = m.next_job().await?;
    assert_eq!(m.difficulty, 8.0 * DIFF);
    assert_eq!(m.submit(&m.find_share(&next, 1, None), "w").await?, Ok(()));
    m.difficulty = 4.0 * DIFF;
    assert_eq!(m.submit(&m.find_share(&job, 2, None), "w").await?, Ok(()));
    assert_eq!(pool.stats().accepted_difficulty, 12.0 * DIFF);
    pool.shutdown().await;
    Ok(())
}
