//! Version rolling (BIP310) and extranonce space through the proxy, end to end over 127.0.0.1:
//! test miners → hashshift → embedded test pools that validate every share themselves.
//!
//! The mask matrix: a pool granting less than a miner asks for, a pool without (or refusing)
//! `mining.configure`, a miner asking for `ffffffff`, and a pool changing its mask mid-session.
//! In every case a share rolling a bit the pool did not grant must be refused by the proxy
//! itself (the pool's reject count stays 0), and shares within the grant must be accepted by
//! the pool. Then pools with 8-, 4- and 2-byte extranonce2: miners get what is left after the
//! proxy's prefix, and a pool leaving too little is refused clearly and the next pool used.

mod support;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use hashshift_protocol::sv1::{
    ClientRequest, Configure, ConfigureResult, ExtensionResult, Notify, ServerNotification,
};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::{ConfigureAnswer, TestPool, TestPoolConfig};
use support::logs::Logs;
use support::miner::{Miner, within};

/// Share difficulty everywhere: ~4,300 hashes a share, quick in debug builds.
const DIFF: f64 = 1e-6;
/// The BIP320 bits the proxy asks pools for.
const BIP320: u32 = 0x1fff_e000;

fn pool_config(name: &str) -> TestPoolConfig {
    TestPoolConfig {
        difficulty: DIFF,
        name: name.into(),
        ..TestPoolConfig::default()
    }
}

async fn pool_with_mask(name: &str, version_mask: u32) -> Result<TestPool> {
    Ok(TestPool::start(TestPoolConfig {
        version_mask,
        ..pool_config(name)
    })
    .await?)
}

/// A proxy in front of `pools` (priority in list order), with `extra` TOML appended.
async fn proxy(pools: &[&TestPool], extra: &str) -> Result<Proxy> {
    let mut text = String::from("[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n");
    for (priority, p) in pools.iter().enumerate() {
        text += &format!(
            "[[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\npriority = {priority}\n",
            p.addr()
        );
    }
    text +=
        &format!("[vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n");
    text += extra;
    let config = Config::from_toml(&text)?;
    let settings = ManagerSettings {
        no_work_timeout: Duration::from_secs(30),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    };
    Ok(Proxy::start_with(&config, settings).await?)
}

/// `mining.configure` asking for version rolling with `mask` (`None`: no mask parameter,
/// which BIP310 reads as `ffffffff`).
async fn configure(m: &mut Miner, mask: Option<u32>) -> Result<ConfigureResult> {
    let r = m
        .call(ClientRequest::Configure(Configure {
            extensions: vec!["version-rolling".into()],
            version_rolling_mask: mask,
            version_rolling_min_bit_count: Some(2),
            ..Configure::default()
        }))
        .await?;
    Ok(r.configure_result()?)
}

/// A miner on the proxy that asked for `mask`: the mask it was granted (BIP310: rolling
/// accepted), and its first job.
async fn rolling_miner(
    proxy: &Proxy,
    worker: &str,
    mask: Option<u32>,
) -> Result<(Miner, u32, Notify)> {
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let result = configure(&mut m, mask).await?;
    assert_eq!(
        result.version_rolling,
        Some(ExtensionResult::Accepted),
        "{result:?}"
    );
    let granted = result
        .version_rolling_mask
        .context("BIP310: the mask is required")?;
    let (_, job) = m.handshake(worker, None).await?;
    Ok((m, granted, job))
}

/// The pool's rejects so far (all reasons).
fn pool_rejects(pool: &TestPool) -> u64 {
    pool.stats().rejected_total()
}

#[tokio::test]
async fn a_narrower_pool_mask_is_what_miners_get_and_the_proxy_enforces() -> Result<()> {
    let pool = pool_with_mask("narrow", 0x00ff_e000).await?;
    let proxy = proxy(&[&pool], "").await?;
    let (mut m, granted, job) = rolling_miner(&proxy, "farm.a", Some(BIP320)).await?;
    assert_eq!(granted, 0x00ff_e000, "BIP310: requested & the pool's grant");

    // Bit 28 was asked for but not granted: the share is otherwise valid, yet refused here.
    let outside = m.find_share(&job, 1, Some(0x1000_0000));
    assert_eq!(
        m.submit(&outside, "farm.a").await?,
        Err(20),
        "outside the mask"
    );
    for (seed, bits) in [(2, 0x0000_2000), (3, 0x0080_0000), (4, 0x00ff_e000)] {
        let share = m.find_share(&job, seed, Some(bits));
        assert_eq!(m.submit(&share, "farm.a").await?, Ok(()), "bits {bits:08x}");
    }
    let stats = pool.stats();
    assert_eq!(
        stats.accepted, 3,
        "every share within the grant reached the pool"
    );
    assert_eq!(
        stats.rejected_total(),
        0,
        "the pool never saw the bad share"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

#[tokio::test]
async fn a_pool_without_version_rolling_means_false_for_miners() -> Result<()> {
    for answer in [
        ConfigureAnswer::Error,
        ConfigureAnswer::WithoutVersionRolling,
        ConfigureAnswer::Ignore,
    ] {
        let pool = TestPool::start(TestPoolConfig {
            configure: answer,
            ..pool_config("no-rolling")
        })
        .await?;
        let proxy = proxy(&[&pool], "").await?;
        let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
        let result = configure(&mut m, Some(BIP320)).await?;
        // BIP310: every requested extension has an answer; `false` = not supported.
        assert_eq!(
            result.version_rolling,
            Some(ExtensionResult::Rejected),
            "{answer:?}: {result:?}"
        );
        assert_eq!(result.negotiated_mask(), None, "{answer:?}");
        assert_eq!(result.version_rolling_mask.unwrap_or(0), 0, "{answer:?}");
        let (_, job) = m.handshake("farm.b", None).await?;

        let rolled = m.find_share(&job, 1, Some(0x0000_2000));
        assert_eq!(
            m.submit(&rolled, "farm.b").await?,
            Err(20),
            "{answer:?}: rolled"
        );
        let plain = m.find_share(&job, 2, None);
        assert_eq!(
            m.submit(&plain, "farm.b").await?,
            Ok(()),
            "{answer:?}: plain"
        );
        // Firmware that sends the 6th parameter anyway (zero bits): the pool, which knows
        // only 5-parameter submits, must not get it.
        let zero_bits = m.find_share(&job, 3, Some(0));
        assert_eq!(
            m.submit(&zero_bits, "farm.b").await?,
            Ok(()),
            "{answer:?}: zero bits"
        );
        let stats = pool.stats();
        assert_eq!(stats.accepted, 2, "{answer:?}");
        assert_eq!(
            stats.rejected_total(),
            0,
            "{answer:?}: {:?}",
            stats.rejected
        );
        proxy.shutdown(Duration::from_secs(2)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_miner_asking_for_every_bit_gets_only_what_the_pool_granted() -> Result<()> {
    // A pool willing to grant anything: the proxy asks for the BIP320 bits only.
    let generous = pool_with_mask("generous", 0xffff_ffff).await?;
    let proxy_a = proxy(&[&generous], "").await?;
    let (mut m, granted, job) = rolling_miner(&proxy_a, "farm.c", Some(0xffff_ffff)).await?;
    assert_eq!(granted, BIP320);
    let (_, no_mask, _) = rolling_miner(&proxy_a, "farm.d", None).await?;
    assert_eq!(no_mask, BIP320, "no mask parameter = ffffffff (BIP310)");
    let low_bit = m.find_share(&job, 1, Some(0x0000_0001));
    assert_eq!(m.submit(&low_bit, "farm.c").await?, Err(20), "not granted");
    let ok = m.find_share(&job, 2, Some(0x1fff_e000));
    assert_eq!(m.submit(&ok, "farm.c").await?, Ok(()));
    assert_eq!(pool_rejects(&generous), 0);
    proxy_a.shutdown(Duration::from_secs(2)).await;

    let narrow = pool_with_mask("narrow", 0x00ff_e000).await?;
    let proxy_b = proxy(&[&narrow], "").await?;
    let (mut m, granted, job) = rolling_miner(&proxy_b, "farm.e", Some(0xffff_ffff)).await?;
    assert_eq!(granted, 0x00ff_e000, "never a bit the pool did not grant");
    let not_granted = m.find_share(&job, 3, Some(0x0100_0000));
    assert_eq!(m.submit(&not_granted, "farm.e").await?, Err(20));
    let ok = m.find_share(&job, 4, Some(0x00ff_e000));
    assert_eq!(m.submit(&ok, "farm.e").await?, Ok(()));
    let stats = narrow.stats();
    assert_eq!((stats.accepted, stats.rejected_total()), (1, 0));
    proxy_b.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// The next notification, which must be `mining.set_version_mask`.
async fn expect_mask(m: &mut Miner) -> Result<u32> {
    match m.next_note().await? {
        ServerNotification::SetVersionMask(mask) => Ok(mask),
        other => bail!("expected mining.set_version_mask, got {other:?}"),
    }
}

#[tokio::test]
async fn a_mid_session_mask_change_reaches_miners_and_their_validators() -> Result<()> {
    let pool = pool_with_mask("changing", BIP320).await?;
    let proxy = proxy(&[&pool], "").await?;
    let (mut m, granted, job) = rolling_miner(&proxy, "farm.f", Some(BIP320)).await?;
    assert_eq!(granted, BIP320);
    // A miner rolling only two low bits: unaffected by the change below.
    let (mut small, small_granted, _) = rolling_miner(&proxy, "farm.g", Some(0x0000_6000)).await?;
    assert_eq!(small_granted, 0x0000_6000);
    let bit28 = m.find_share(&job, 1, Some(0x1000_0000));
    assert_eq!(
        m.submit(&bit28, "farm.f").await?,
        Ok(()),
        "granted at first"
    );

    // Narrower: bits 24..28 go away.
    pool.set_version_mask(0x00ff_e000);
    assert_eq!(expect_mask(&mut m).await?, 0x00ff_e000);
    let removed = m.find_share(&job, 2, Some(0x1000_0000));
    assert_eq!(
        m.submit(&removed, "farm.f").await?,
        Err(20),
        "bit just removed"
    );
    let kept = m.find_share(&job, 3, Some(0x0000_2000));
    assert_eq!(m.submit(&kept, "farm.f").await?, Ok(()));
    pool.new_job(false);
    match within("small miner's next message", small.next_note()).await?? {
        ServerNotification::Notify(_) => {}
        other => bail!("the small miner's grant did not change, yet it got {other:?}"),
    }
    let job = m.next_job().await?;

    // Wider again, back to what the pool granted at first (BIP310: any time).
    pool.set_version_mask(BIP320);
    assert_eq!(
        expect_mask(&mut m).await?,
        BIP320,
        "widening reaches miners too"
    );
    let back = m.find_share(&job, 4, Some(0x1000_0000));
    assert_eq!(
        m.submit(&back, "farm.f").await?,
        Ok(()),
        "the validator widened too"
    );

    let stats = pool.stats();
    assert_eq!(stats.accepted, 3);
    assert_eq!(stats.rejected_total(), 0, "{:?}", stats.rejected);
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

async fn extranonce_pool(name: &str, extranonce2_size: usize) -> Result<TestPool> {
    Ok(TestPool::start(TestPoolConfig {
        extranonce2_size,
        ..pool_config(name)
    })
    .await?)
}

#[tokio::test]
async fn miners_get_what_is_left_of_8_and_4_byte_pool_extranonce2() -> Result<()> {
    for (size, left) in [(8, 6), (4, 2)] {
        let pool = extranonce_pool("en2", size).await?;
        let proxy = proxy(&[&pool], "[aggregation]\nproxy_extranonce2_bytes = 2\n").await?;
        let mut miners = Vec::new();
        for i in 0..2 {
            let (m, _, job) = rolling_miner(&proxy, &format!("farm.{i}"), Some(BIP320)).await?;
            assert_eq!(
                m.extranonce1.len(),
                4 + 2,
                "pool extranonce1 + the proxy's prefix"
            );
            assert_eq!(m.extranonce2_size, left, "{size}-byte pool");
            miners.push((m, job));
        }
        assert_ne!(
            miners[0].0.extranonce1, miners[1].0.extranonce1,
            "disjoint spaces"
        );
        for (i, (m, job)) in miners.iter_mut().enumerate() {
            let share = m.find_share(job, 5, Some(0x0000_2000));
            assert_eq!(m.submit(&share, &format!("farm.{i}")).await?, Ok(()));
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.accepted, stats.rejected_total()),
            (2, 0),
            "{size}-byte pool"
        );
        proxy.shutdown(Duration::from_secs(2)).await;
    }
    Ok(())
}

// A current-thread runtime: every task runs on this thread, under the thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_2_byte_pool_is_refused_clearly_and_the_next_pool_used() -> Result<()> {
    let (logs, _guard) = Logs::capture_warnings();

    let tight = extranonce_pool("tight", 2).await?;
    let roomy = extranonce_pool("roomy", 8).await?;
    let proxy = proxy(&[&tight, &roomy], "").await?;
    let (mut m, _, job) = rolling_miner(&proxy, "farm.h", Some(BIP320)).await?;
    assert_eq!(
        m.extranonce2_size, 6,
        "the backup pool's 8 bytes minus the prefix"
    );
    let share = m.find_share(&job, 1, Some(0x0000_2000));
    assert_eq!(m.submit(&share, "farm.h").await?, Ok(()));
    assert_eq!(roomy.stats().accepted, 1);
    assert_eq!(tight.stats().accepted + tight.stats().rejected_total(), 0);

    let pools = proxy.pools();
    assert!(!pools[0].up, "the 2-byte pool counts as down");
    assert_eq!((pools[0].miners, pools[1].miners), (0, 1));
    within("the refusal in the log", async {
        while !logs.text().contains("extranonce2 is 2 bytes") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .with_context(|| format!("no clear refusal in the log: {}", logs.text()))?;
    let text = logs.text();
    let url = format!("stratum+tcp://{}", tight.addr());
    let line = text
        .lines()
        .find(|l| l.contains("extranonce2 is 2 bytes"))
        .context("the refusal line")?;
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains(&url), "names the pool: {line}");
    assert!(
        line.contains("keeps 2") && line.contains("leaves 0"),
        "{line}"
    );
    assert!(!text.contains("panic"), "{text}");
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

/// The `version_rolling_allowed` flag of the next extended job on `channel`.
async fn next_extended_job_rolling(
    m: &mut support::sv2_miner::Sv2Miner,
    channel: u32,
) -> Result<bool> {
    m.expect("an extended job", |r| match r {
        support::sv2_miner::Received::NewExtendedJob {
            channel_id,
            version_rolling_allowed,
            ..
        } if *channel_id == channel => Some(*version_rolling_allowed),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn sv2_extended_jobs_allow_rolling_only_while_the_pool_grants_every_bip320_bit() -> Result<()>
{
    let pool = pool_with_mask("sv2-miners", BIP320).await?;
    let key = support::sv2_site::KeyFile::new()?;
    let extra = format!(
        "[[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n",
        key.path.display().to_string()
    );
    let proxy = proxy(&[&pool], &extra).await?;
    let sv2_addr = proxy.listen_addrs()[1];
    let mut m = support::sv2_miner::Sv2Miner::connect(sv2_addr, key.public.to_bytes()).await?;
    m.setup(0).await?;
    let ch = m.open_channel(1, "farm.sv2", true).await?;
    assert!(
        next_extended_job_rolling(&mut m, ch.id).await?,
        "BIP320 granted"
    );

    // SV2 has no mask: a narrower pool mask means "keep the job's version".
    pool.set_version_mask(0x00ff_e000);
    pool.new_job(false);
    assert!(
        !next_extended_job_rolling(&mut m, ch.id).await?,
        "narrower than BIP320"
    );
    pool.set_version_mask(BIP320);
    pool.new_job(false);
    assert!(
        next_extended_job_rolling(&mut m, ch.id).await?,
        "granted again"
    );
    assert_eq!(pool_rejects(&pool), 0);
    proxy.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
