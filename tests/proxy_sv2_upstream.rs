//! The proxy with a Stratum V2 pool, over real sockets on 127.0.0.1: SV1 test miners →
//! hashshift → the embedded test pool in SV2 mode (Noise, extended channel), which validates
//! every share with its own hashing.

mod support;

use std::time::Duration;

use anyhow::{Result, bail};
use hashshift_protocol::noise::AuthorityKeypair;
use hashshift_protocol::sv1::{ClientRequest, ServerNotification};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::{TestPool, TestPoolConfig, reason};
use support::logs::Logs;
use support::miner::{Miner, within};
use support::sv2_site::{DIFF, sv1_pool, sv2_pool};

fn config(urls: &[String]) -> Result<Config> {
    let mut text = String::from("[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n");
    for (priority, url) in urls.iter().enumerate() {
        text += &format!(
            "[[upstream]]\nurl = \"{url}\"\nuser = \"farm\"\npriority = {priority}\nweight = 1\n"
        );
    }
    text +=
        &format!("[vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n");
    Ok(Config::from_toml(&text)?)
}

async fn start(config: &Config) -> Result<Proxy> {
    let fast = ManagerSettings {
        no_work_timeout: Duration::from_secs(30),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    };
    Ok(Proxy::start_with(config, fast).await?)
}

#[tokio::test]
async fn shares_reach_the_sv2_pool_and_pass_its_own_validation() -> Result<()> {
    let a = sv2_pool("a", 0x1fff_e000).await?;
    assert!(a.url().starts_with("stratum2+tcp://127.0.0.1:"));
    let proxy = start(&config(&[a.url()])?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (granted, job) = m.handshake("farm.rig1", Some(0x1fff_e000)).await?;
    assert_eq!(granted, 0x1fff_e000, "BIP320 bits: the pool allows rolling");
    assert_eq!(
        m.extranonce2_size, 8,
        "16 pool bytes, but SV1 miners get at most 8"
    );
    assert_eq!(
        m.extranonce1.len(),
        4 + 8,
        "pool prefix + the proxy's 2-byte prefix and padding"
    );
    for seed in 0..3 {
        let share = m.find_share(&job, seed, Some(0x0000_2000 * (seed as u32 + 1)));
        assert_eq!(m.submit(&share, "farm.rig1").await?, Ok(()), "share {seed}");
    }
    // A non-future job on the same block, then a new block (future job + SetNewPrevHash).
    for clean in [false, true] {
        a.new_job(clean);
        let job = m.next_job().await?;
        assert_eq!(job.clean_jobs, clean);
        let share = m.find_share(&job, 9, None);
        assert_eq!(
            m.submit(&share, "farm.rig1").await?,
            Ok(()),
            "clean={clean}"
        );
    }
    let stats = a.stats();
    assert_eq!(stats.accepted, 5, "valid by the pool's own hashing");
    assert_eq!(stats.rejected_total(), 0);
    assert_eq!(
        stats.workers["farm"].accepted, 5,
        "SV2 has no per-share worker: shares go up under the channel's user"
    );
    assert_eq!(stats.connections, 1);
    let pools = proxy.pools();
    assert!(pools[0].up && pools[0].active, "{pools:?}");
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn an_upstream_reject_is_relayed_with_the_pools_code() -> Result<()> {
    // The pool lets only 3 version bits roll; the proxy grants miners all BIP320 bits (SV2
    // has no mask negotiation), so a share rolling bit 20 is valid at the proxy and refused
    // by the pool.
    let a = sv2_pool("a", 0x0000_e000).await?;
    let proxy = start(&config(&[a.url()])?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, job) = m.handshake("w", Some(0x1fff_e000)).await?;
    let share = m.find_share(&job, 1, Some(0x0010_0000));
    let r = m.call(share.request("w")).await?;
    let Some(e) = r.error else {
        bail!("the pool's reject was not relayed: {r:?}")
    };
    assert_eq!(e.code, 20);
    assert!(
        e.message.contains("invalid-non-rollable-version-bit"),
        "the pool's own code reaches the miner: {}",
        e.message
    );
    assert_eq!(a.stats().rejected_for(reason::VERSION_BITS), 1);
    // The channel stays usable.
    let ok = m.find_share(&job, 2, Some(0x0000_4000));
    assert_eq!(m.submit(&ok, "w").await?, Ok(()));
    assert_eq!(a.stats().accepted, 1);
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

// A current-thread runtime: every task runs on this thread, under the thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_wrong_authority_key_keeps_the_pool_down_and_says_why() -> Result<()> {
    let (logs, _guard) = Logs::capture_warnings();

    let a = sv2_pool("a", 0x1fff_e000).await?;
    let impostor = AuthorityKeypair::generate(&mut rand::rng()).public_key();
    let url = format!("stratum2+tcp://{}/{impostor}", a.addr());
    let proxy = start(&config(&[url])?).await?;
    within("a handshake attempt", async {
        while a.stats().connects_total == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    within("the error in the log", async {
        while !logs.text().contains("pool failed Noise authentication") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let text = logs.text();
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        text.contains(&impostor.to_string()),
        "names the pinned key: {text}"
    );
    assert!(
        text.contains("BadSignature") || text.contains("signature"),
        "{text}"
    );
    let pools = proxy.pools();
    assert!(!pools[0].up, "never up with an unverified pool: {pools:?}");
    assert_eq!(a.stats().accepted, 0);
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn failover_from_an_sv2_primary_to_an_sv1_backup_and_back() -> Result<()> {
    let a = sv2_pool("a", 0x1fff_e000).await?;
    let b = sv1_pool("b").await?;
    let proxy = start(&config(&[a.url(), b.url()])?).await?;
    // The backup answers first (no handshake); start on the primary.
    within("the SV2 primary up", async {
        while !proxy.pools()[0].active {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, job) = m.handshake("rig", None).await?;
    assert!(
        m.call(ClientRequest::ExtranonceSubscribe)
            .await?
            .as_bool()?
    );
    assert_eq!(m.submit(&m.find_share(&job, 1, None), "rig").await?, Ok(()));
    assert_eq!(a.stats().accepted, 1);

    // Moves to a new pool's work: its extranonce, then a clean job.
    async fn follow(m: &mut Miner) -> Result<hashshift_protocol::sv1::Notify> {
        let mut got_extranonce = false;
        within("work from the other pool", async {
            loop {
                match m.next_note().await? {
                    ServerNotification::SetExtranonce(e) => {
                        m.extranonce1 = e.extranonce1;
                        m.extranonce2_size = e.extranonce2_size;
                        got_extranonce = true;
                    }
                    ServerNotification::SetDifficulty(d) => m.difficulty = d,
                    ServerNotification::Notify(n) if got_extranonce => return Ok(n),
                    _ => {}
                }
            }
        })
        .await?
    }

    a.kill().await;
    let job_b = follow(&mut m).await?;
    assert!(job_b.clean_jobs);
    assert_eq!(
        m.submit(&m.find_share(&job_b, 2, None), "rig").await?,
        Ok(())
    );
    assert_eq!(b.stats().workers["rig"].accepted, 1, "on the SV1 backup");

    a.revive().await?;
    let job_a = follow(&mut m).await?;
    assert_eq!(
        m.submit(&m.find_share(&job_a, 3, None), "rig").await?,
        Ok(())
    );
    assert_eq!(
        a.stats().accepted,
        2,
        "back on the SV2 primary, new channel"
    );
    let pools = proxy.pools();
    if !pools[0].active {
        bail!("primary not active after failback: {pools:?}");
    }
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[test]
fn a_bad_authority_key_is_a_config_error_naming_the_key() {
    let bad = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH7X";
    let e = match config(&[format!("stratum2+tcp://127.0.0.1:1/{bad}")]) {
        Ok(_) => panic!("accepted a bad key"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(bad), "{e}");
    assert!(e.contains("authority public key"), "{e}");
    assert!(
        config(&["stratum2+tcp://127.0.0.1:1".into()]).is_err(),
        "a key is required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_announces_the_hashrate_its_miners_really_have() -> Result<()> {
    use hashshift_proxy::upstream::router::HASHES_PER_DIFFICULTY;
    use support::honest::{Honest, stop_all};

    let a = sv2_pool("a", 0x1fff_e000).await?;
    let proxy = start(&config(&[a.url()])?).await?;
    within("the channel opening", async {
        while !proxy.pools()[0].up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    assert_eq!(
        a.stats().announced_hashrate,
        100e12,
        "no miner yet: one ASIC's worth"
    );
    let started = std::time::Instant::now();
    let miners = Honest::start_many(proxy.listen_addrs()[0], "farm.rig", 3).await?;
    // At most one update every 10 s, once the estimates exist.
    tokio::time::timeout(Duration::from_secs(30), async {
        while a.stats().channel_updates == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no UpdateChannel within 30 s"))?;
    // What the miners really did, as the pool credited it (every share meets the pool's
    // difficulty here), against what the proxy announced.
    let real =
        a.stats().accepted_difficulty * HASHES_PER_DIFFICULTY / started.elapsed().as_secs_f64();
    let announced = f64::from(a.stats().announced_hashrate);
    assert!(
        announced > real / 2.0 && announced < real * 2.0,
        "announced {announced:.3e} h/s, miners did {real:.3e} h/s"
    );
    assert_eq!(a.stats().rejected_total(), 0);
    stop_all(miners).await?;
    proxy.shutdown(Duration::from_secs(2)).await;
    a.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_reconnect_is_followed_only_to_a_host_with_the_same_authority() -> Result<()> {
    let authority = AuthorityKeypair::generate(&mut rand::rng());
    let node = |name: &str| TestPoolConfig {
        difficulty: DIFF,
        name: name.into(),
        ..TestPoolConfig::sv2()
    };
    let a = TestPool::start_sv2_node(node("a"), authority.clone()).await?;
    let a2 = TestPool::start_sv2_node(node("a2"), authority).await?;
    let impostor = sv2_pool("impostor", 0x1fff_e000).await?;
    let proxy = start(&config(&[a.url()])?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    m.handshake("rig", None).await?;
    assert!(
        m.call(ClientRequest::ExtranonceSubscribe)
            .await?
            .as_bool()?
    );
    async fn connected(pool: &TestPool, n: usize) -> Result<()> {
        within("the proxy's connection", async {
            while pool.stats().connections != n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
    connected(&a, 1).await?;

    // Another node of the same pool: followed, and it proves the pinned authority.
    a.redirect(a2.addr());
    connected(&a2, 1).await?;
    connected(&a, 0).await?;
    // The new session's extranonce, then its work.
    let mut moved = false;
    let job = within("work from the new node", async {
        loop {
            match m.next_note().await? {
                ServerNotification::SetExtranonce(e) => {
                    m.extranonce1 = e.extranonce1;
                    m.extranonce2_size = e.extranonce2_size;
                    moved = true;
                }
                ServerNotification::Notify(n) if moved => return Ok::<_, anyhow::Error>(n),
                _ => {}
            }
        }
    })
    .await??;
    assert_eq!(m.submit(&m.find_share(&job, 1, None), "rig").await?, Ok(()));
    assert_eq!(a2.stats().accepted, 1);

    // A host signed by another authority: refused, back to the configured address.
    a2.redirect(impostor.addr());
    connected(&a, 1).await?;
    let tried = impostor.stats();
    assert_eq!(tried.connects_total, 1, "the redirect was tried once");
    assert_eq!(
        tried.announced_hashrate, 0.0,
        "no channel opened: the Noise handshake failed on our side"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// Issue 12 with an SV2 pool: a share resubmitted under the job id a lower
/// `mining.suggest_difficulty` re-issued is a duplicate and never reaches the pool.
#[tokio::test]
async fn a_share_resubmitted_under_a_reissued_job_id_never_reaches_the_sv2_pool() -> Result<()> {
    let a = sv2_pool("a", 0x1fff_e000).await?;
    let proxy = start(&config(&[a.url()])?).await?;
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, first) = m.handshake("farm.dup", Some(0x1fff_e000)).await?;
    let share = m.find_share(&first, 1, Some(0x4000));
    assert_eq!(m.submit(&share, "farm.dup").await?, Ok(()));
    let r = m.call(ClientRequest::SuggestDifficulty(DIFF / 4.0)).await?;
    assert!(r.as_bool()?);
    let second = m.next_job().await?;
    assert_ne!(second.job_id, first.job_id, "re-issued under a new id");
    let again = support::miner::Share {
        job_id: second.job_id.clone(),
        ..share
    };
    assert_eq!(m.submit(&again, "farm.dup").await?, Err(22));
    let stats = a.stats();
    assert_eq!(stats.accepted, 1, "the pool got the share once");
    assert_eq!(stats.rejected_for(reason::DUPLICATE), 0);
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
