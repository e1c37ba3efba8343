//! The proxy end to end on Stratum V1, over real sockets on 127.0.0.1: test miners → hashshift
//! → embedded test pools that validate every share with their own hashing.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hashshift_protocol::sv1::{ClientRequest, ServerNotification};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::TestPool;
use support::miner::{Miner, within};

/// Share difficulty everywhere: ~4,300 hashes a share, quick in debug builds.
const DIFF: f64 = 1e-6;

async fn pool(name: &str) -> Result<TestPool> {
    support::site::pool_at(name, DIFF).await
}

fn config(pools: &[(&TestPool, u32, u32)], extra: &str) -> Result<Config> {
    let mut text = String::from("[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n");
    for (p, priority, weight) in pools {
        text += &format!(
            "[[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\npriority = {priority}\nweight = {weight}\n",
            p.addr()
        );
    }
    text +=
        &format!("[vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n");
    text += extra;
    Ok(Config::from_toml(&text)?)
}

fn fast() -> ManagerSettings {
    ManagerSettings {
        no_work_timeout: Duration::from_secs(30),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    }
}

async fn start(config: &Config) -> Result<Proxy> {
    Ok(Proxy::start_with(config, fast()).await?)
}

#[tokio::test]
async fn shares_flow_to_the_pool_under_the_miners_worker_name() -> Result<()> {
    let a = pool("a").await?;
    let proxy = start(&config(&[(&a, 0, 1)], "")?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (granted, job) = m.handshake("farm.rig1", Some(0x1fff_e000)).await?;
    assert_eq!(granted, 0x1fff_e000);
    assert_eq!(
        m.extranonce1.len(),
        4 + 2,
        "pool extranonce1 + the proxy's 2-byte prefix"
    );
    assert_eq!(m.extranonce2_size, 8 - 2);
    for seed in 0..3 {
        let share = m.find_share(&job, seed, Some(0x0000_2000 * (seed as u32 + 1)));
        assert_eq!(m.submit(&share, "farm.rig1").await?, Ok(()), "share {seed}");
    }
    let stats = a.stats();
    assert_eq!(
        stats.accepted, 3,
        "every share met the pool's difficulty and was valid there"
    );
    assert_eq!(
        stats.workers["farm.rig1"].accepted, 3,
        "passthrough worker name"
    );
    assert_eq!(stats.connections, 1);
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn each_reject_reason_gets_its_sv1_error() -> Result<()> {
    let a = pool("a").await?;
    let proxy = start(&config(&[(&a, 0, 1)], "")?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, job) = m.handshake("w", Some(0x1fff_e000)).await?;

    let good = m.find_share(&job, 7, None);
    assert_eq!(m.submit(&good, "w").await?, Ok(()));
    assert_eq!(m.submit(&good, "w").await?, Err(22), "duplicate");
    assert_eq!(
        m.submit(&m.bad_share(&job), "w").await?,
        Err(23),
        "low difficulty"
    );
    let mut unknown = good.clone();
    unknown.job_id = "ffffff".into();
    assert_eq!(m.submit(&unknown, "w").await?, Err(21), "unknown job");
    let mut outside = m.find_share(&job, 8, None);
    outside.version_bits = Some(0x0000_0001);
    assert_eq!(
        m.submit(&outside, "w").await?,
        Err(20),
        "version bits outside the mask"
    );
    let mut short = good.clone();
    short.extranonce2.pop();
    assert_eq!(
        m.submit(&short, "w").await?,
        Err(20),
        "wrong extranonce2 size"
    );
    let mut late_ntime = m.find_share(&job, 9, None);
    late_ntime.ntime = job.ntime + 3 * 3600;
    assert_eq!(
        m.submit(&late_ntime, "w").await?,
        Err(20),
        "ntime out of range"
    );
    assert_eq!(
        m.submit(&m.find_share(&job, 10, None), "intruder").await?,
        Err(24),
        "unauthorized worker"
    );

    assert_eq!(
        a.stats().accepted,
        1,
        "only the valid share reached the pool"
    );
    assert_eq!(
        a.stats().rejected_total(),
        0,
        "the proxy filtered every invalid share"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn failover_moves_miners_without_disconnecting_subscribers() -> Result<()> {
    let a = pool("a").await?;
    let b = pool("b").await?;
    let proxy = start(&config(&[(&a, 0, 1), (&b, 1, 1)], "")?).await?;
    let addr = proxy.listen_addrs()[0];

    let mut mover = Miner::connect(addr).await?;
    let (_, job) = mover.handshake("mover", None).await?;
    assert!(
        mover
            .call(ClientRequest::ExtranonceSubscribe)
            .await?
            .as_bool()?
    );
    let share = mover.find_share(&job, 1, None);
    assert_eq!(mover.submit(&share, "mover").await?, Ok(()));
    let mut plain = Miner::connect(addr).await?;
    plain.handshake("plain", None).await?;
    assert_eq!(a.stats().accepted, 1);

    a.kill().await;
    // The subscriber gets the standby pool's extranonce and work on the same connection.
    let mut got_extranonce = false;
    let job_b = within("work from pool b", async {
        loop {
            match mover.next_note().await? {
                ServerNotification::SetExtranonce(e) => {
                    mover.extranonce1 = e.extranonce1;
                    mover.extranonce2_size = e.extranonce2_size;
                    got_extranonce = true;
                }
                ServerNotification::SetDifficulty(d) => mover.difficulty = d,
                ServerNotification::Notify(n) if got_extranonce => {
                    return Ok::<_, anyhow::Error>(n);
                }
                _ => {}
            }
        }
    })
    .await??;
    assert!(job_b.clean_jobs);
    let share = mover.find_share(&job_b, 2, None);
    assert_eq!(mover.submit(&share, "mover").await?, Ok(()));
    assert_eq!(
        b.stats().workers["mover"].accepted,
        1,
        "the share landed on the standby pool"
    );

    // The miner that cannot take a new extranonce is asked to reconnect (to the proxy).
    let reconnect = within("client.reconnect", async {
        loop {
            if let ServerNotification::Reconnect(r) = plain.next_note().await? {
                return Ok::<_, anyhow::Error>(r);
            }
        }
    })
    .await??;
    assert_eq!(reconnect.host, None, "reconnect to the proxy itself");

    // Failback once the primary is healthy again.
    a.revive().await?;
    within("failback", async {
        loop {
            if let ServerNotification::SetExtranonce(_) = mover.next_note().await? {
                return Ok::<_, anyhow::Error>(());
            }
        }
    })
    .await??;
    let pools = proxy.pools();
    if !pools[0].active {
        bail!("primary not active after failback: {pools:?}");
    }
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn aggregation_opens_a_second_connection_when_the_first_is_full() -> Result<()> {
    let a = pool("a").await?;
    let extra = "[aggregation]\nproxy_extranonce2_bytes = 2\nmax_miners_per_upstream = 150\nworker_identity = \"fixed\"\n";
    let proxy = start(&config(&[(&a, 0, 1)], extra)?).await?;
    let addr = proxy.listen_addrs()[0];
    let mut miners = Vec::new();
    for i in 0..200 {
        let mut m = Miner::connect(addr).await?;
        m.handshake(&format!("rig{i}"), None)
            .await
            .with_context(|| format!("miner {i}"))?;
        miners.push(m);
    }
    let mut prefixes: Vec<Vec<u8>> = miners.iter().map(|m| m.extranonce1.clone()).collect();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(
        prefixes.len(),
        200,
        "every miner searches its own extranonce space"
    );
    assert_eq!(
        a.stats().connections,
        2,
        "200 miners over 2 upstream connections"
    );
    // The last miner, on the second connection, mines for real.
    a.new_job(false);
    let last = miners.last_mut().context("miners")?;
    let job = last.next_job().await?;
    let share = last.find_share(&job, 3, None);
    assert_eq!(last.submit(&share, "rig199").await?, Ok(()));
    assert_eq!(
        a.stats().workers["farm"].accepted,
        1,
        "fixed identity: shares go up as the pool user"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn a_miner_is_never_given_more_than_the_pools_difficulty() -> Result<()> {
    let a = pool("a").await?;
    // Vardiff would start the miner at 1000× the pool's difficulty.
    let text = format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
         [vardiff]\ninitial = {}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 6.0\n",
        a.addr(),
        DIFF * 1000.0
    );
    let proxy = start(&Config::from_toml(&text)?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, job) = m.handshake("farm.capped", None).await?;
    assert_eq!(
        m.difficulty, DIFF,
        "capped at the pool's difficulty, so the pool credits every share at its true worth"
    );
    let share = m.find_share(&job, 7, None);
    assert_eq!(m.submit(&share, "farm.capped").await?, Ok(()));
    assert_eq!(a.stats().accepted, 1);
    Ok(())
}

/// Issue 12: a lower `mining.suggest_difficulty` re-issues the pool's job under a new id; the
/// same share under that id is a duplicate for the pool, so it must not go up again, and
/// below the pool's target it must not be credited again either.
#[tokio::test]
async fn a_share_resubmitted_under_a_reissued_job_id_is_a_duplicate_and_never_reaches_the_pool()
-> Result<()> {
    use hashshift_protocol::share::Target;
    use hashshift_proxy::telemetry::RejectReason;
    const DUPLICATE: Result<(), i64> = Err(22);

    let a = pool("a").await?;
    let proxy = start(&config(&[(&a, 0, 1)], "")?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, first) = m.handshake("farm.dup", Some(0x1fff_e000)).await?;
    assert_eq!(m.difficulty, DIFF);
    let share = m.find_share(&first, 1, Some(0x2000));
    assert_eq!(m.submit(&share, "farm.dup").await?, Ok(()));
    assert_eq!(m.submit(&share, "farm.dup").await?, DUPLICATE, "same id");

    // A lower difficulty: set_difficulty, then the same pool job under a new id.
    let r = m.call(ClientRequest::SuggestDifficulty(DIFF / 4.0)).await?;
    assert!(r.as_bool()?);
    let second = m.next_job().await?;
    assert_eq!(m.difficulty, DIFF / 4.0);
    assert_ne!(second.job_id, first.job_id, "re-issued under a new id");
    assert_eq!(
        (second.coinb1.clone(), second.ntime),
        (first.coinb1.clone(), first.ntime),
        "the same pool job"
    );
    let again = support::miner::Share {
        job_id: second.job_id.clone(),
        ..share.clone()
    };
    assert_eq!(m.submit(&again, "farm.dup").await?, DUPLICATE);

    // Below the pool's target: credited by the proxy once, then a duplicate under the next id.
    let pool_target = Target::from_difficulty(DIFF)?;
    let low = (100..)
        .map(|seed| m.find_share(&second, seed, None))
        .find(|s| !pool_target.is_met_by(&m.share_hash(&second, s)))
        .context("a share below the pool's target")?;
    assert_eq!(m.submit(&low, "farm.dup").await?, Ok(()));
    let r = m
        .call(ClientRequest::SuggestDifficulty(DIFF / 16.0))
        .await?;
    assert!(r.as_bool()?);
    let third = m.next_job().await?;
    assert_ne!(third.job_id, second.job_id);
    let low_again = support::miner::Share {
        job_id: third.job_id.clone(),
        ..low.clone()
    };
    assert_eq!(m.submit(&low_again, "farm.dup").await?, DUPLICATE);
    // And the first share once more, under the third id.
    let share_again = support::miner::Share {
        job_id: third.job_id.clone(),
        ..share
    };
    assert_eq!(m.submit(&share_again, "farm.dup").await?, DUPLICATE);

    let stats = a.stats();
    assert_eq!(stats.accepted, 1, "the pool got the share once");
    assert_eq!(stats.rejected_total(), 0, "no duplicate reached the pool");
    let miners = proxy.instruments().sv1.shares.snapshot();
    assert_eq!(miners.accepted, 2, "each share credited once");
    assert_eq!(
        proxy
            .instruments()
            .sv1
            .shares
            .reasons
            .get(RejectReason::Duplicate),
        4
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// A miner that reconnects into the same extranonce slot (the only one on the connection)
/// and re-sends a share it sent before the reconnect: its new session has never seen the
/// share, but the pool has, so the proxy answers "duplicate" and does not send it.
#[tokio::test]
async fn a_share_resent_after_the_miner_reconnects_into_the_same_slot_never_reaches_the_pool()
-> Result<()> {
    let a = pool("a").await?;
    let extra = "[aggregation]\nproxy_extranonce2_bytes = 2\nmax_miners_per_upstream = 1\nworker_identity = \"passthrough\"\n";
    let proxy = start(&config(&[(&a, 0, 1)], extra)?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, job) = m.handshake("farm.again", None).await?;
    let share = m.find_share(&job, 5, None);
    assert_eq!(m.submit(&share, "farm.again").await?, Ok(()));
    let extranonce1 = m.extranonce1.clone();
    drop(m);
    within("the slot to be freed", async {
        while proxy.pools()[0].miners > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, again) = m.handshake("farm.again", None).await?;
    assert_eq!(
        m.extranonce1, extranonce1,
        "the same slot on the same connection"
    );
    assert_eq!(again.job_id, job.job_id, "the same job");
    assert_eq!(m.submit(&share, "farm.again").await?, Err(22));
    let stats = a.stats();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.rejected_total(), 0, "no duplicate reached the pool");
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
