//! Every direction at once, over 127.0.0.1: SV1 and SV2 miners behind one proxy, in front of
//! SV2 and SV1 test pools that validate every share with their own hashing. Covers what the
//! one-protocol suites do not: SV2 miners aggregated onto an SV2 pool connection next to SV1
//! miners, SV2 miners failing over from an SV2 pool to an SV1 one and back, and a weighted
//! split across pools of both kinds.

mod support;

use std::time::Duration;

use anyhow::Result;
use hashshift_protocol::share::BIP320_VERSION_BITS;
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::TestPool;
use support::miner::{Miner, within};
use support::sv2_miner::{OpenedChannel, Received, Sv2Miner};
use support::sv2_site::{DIFF, KeyFile, pool_accepts, sv1_pool, sv2_pool};

const SECOND: Duration = Duration::from_secs(1);

/// The proxy with an SV1 listener (`listen_addrs()[0]`) and an SV2 one (`[1]`), in front of
/// `pools` as (pool, priority, weight).
struct Site {
    proxy: Proxy,
    key: KeyFile,
}

impl Site {
    async fn start(pools: &[(&TestPool, u32, u32)], rebalance_every: Duration) -> Result<Site> {
        let key = KeyFile::new()?;
        let mut text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\nauthority_key_file = {:?}\n",
            key.path.display().to_string()
        );
        for (pool, priority, weight) in pools {
            text += &format!(
                "[[upstream]]\nurl = \"{}\"\nuser = \"farm\"\npriority = {priority}\nweight = {weight}\n",
                pool.url()
            );
        }
        text += &format!(
            "[vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n"
        );
        let proxy = Proxy::start_with(
            &Config::from_toml(&text)?,
            ManagerSettings {
                no_work_timeout: Duration::from_secs(30),
                failback_after: Duration::from_millis(500),
                rebalance_every,
            },
        )
        .await?;
        // SV1 pools answer at once, SV2 ones after a handshake: wait for every pool, and for
        // the first tier to be in use, so no miner lands on a backup meanwhile.
        within("every pool up", async {
            while !proxy
                .pools()
                .iter()
                .all(|p| p.up && (p.priority > 0 || p.active))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
        Ok(Site { proxy, key })
    }

    async fn sv2_miner(&self) -> Result<Sv2Miner> {
        Sv2Miner::connect(self.proxy.listen_addrs()[1], self.key.public.to_bytes()).await
    }

    async fn sv1_miner(&self) -> Result<Miner> {
        Miner::connect(self.proxy.listen_addrs()[0]).await
    }
}

/// Waits for the channel's next future job (its first, or after a move) and gets one share
/// on it accepted.
async fn mine_next_job(m: &mut Sv2Miner, ch: &OpenedChannel, seed: u32) -> Result<()> {
    let job = m.next_future_job(ch.id).await?;
    m.mine(&job, ch, seed).await
}

/// The channel's new extranonce prefix after a move between pools.
async fn moved(m: &mut Sv2Miner, ch: &mut OpenedChannel) -> Result<()> {
    let id = ch.id;
    ch.prefix = m
        .expect("SetExtranoncePrefix", |r| match r {
            Received::SetExtranoncePrefix { channel_id, prefix } if *channel_id == id => {
                Some(prefix.clone())
            }
            _ => None,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn sv1_and_sv2_miners_share_one_sv2_pool_connection() -> Result<()> {
    let a = sv2_pool("a", BIP320_VERSION_BITS).await?;
    let site = Site::start(&[(&a, 0, 1)], SECOND).await?;
    let mut sv1 = site.sv1_miner().await?;
    let (_, job) = sv1.handshake("farm.sv1", None).await?;
    let mut m = site.sv2_miner().await?;
    m.setup(0).await?;
    let std = m.open_channel(1, "farm.std", false).await?;
    mine_next_job(&mut m, &std, 1).await?;
    let ext = m.open_channel(2, "farm.ext", true).await?;
    mine_next_job(&mut m, &ext, 2).await?;
    for seed in 0..2 {
        let share = sv1.find_share(&job, seed, None);
        assert_eq!(sv1.submit(&share, "farm.sv1").await?, Ok(()));
    }
    pool_accepts(&a, 4).await?;
    let stats = a.stats();
    assert_eq!(stats.accepted, 4, "valid by the SV2 pool's own hashing");
    assert_eq!(stats.rejected_total(), 0);
    assert_eq!(
        stats.connections, 1,
        "three miners, two protocols, one extended channel upstream"
    );
    site.proxy.shutdown(Duration::from_secs(2)).await;
    a.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sv2_miners_fail_over_from_an_sv2_pool_to_an_sv1_pool_and_back() -> Result<()> {
    let a = sv2_pool("a", BIP320_VERSION_BITS).await?;
    let b = sv1_pool("b").await?;
    let site = Site::start(&[(&a, 0, 1), (&b, 1, 1)], SECOND).await?;
    let mut m = site.sv2_miner().await?;
    m.setup(0).await?;
    let mut std = m.open_channel(1, "std", false).await?;
    mine_next_job(&mut m, &std, 1).await?;
    let mut ext = m.open_channel(2, "ext", true).await?;
    mine_next_job(&mut m, &ext, 2).await?;
    pool_accepts(&a, 2).await?;

    a.kill().await;
    for (ch, seed) in [(&mut std, 3), (&mut ext, 4)] {
        moved(&mut m, ch).await?;
        mine_next_job(&mut m, ch, seed).await?;
    }
    pool_accepts(&b, 2).await?;
    let stats = b.stats();
    assert_eq!(
        (stats.workers["std"].accepted, stats.workers["ext"].accepted),
        (1, 1),
        "both channels on the SV1 backup, under their own names"
    );

    a.revive().await?;
    for (ch, seed) in [(&mut std, 5), (&mut ext, 6)] {
        moved(&mut m, ch).await?;
        mine_next_job(&mut m, ch, seed).await?;
    }
    pool_accepts(&a, 4).await?;
    assert_eq!(a.stats().rejected_total() + b.stats().rejected_total(), 0);
    site.proxy.shutdown(Duration::from_secs(2)).await;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn weighted_split_spreads_sv2_channels_over_sv2_and_sv1_pools() -> Result<()> {
    let a = sv2_pool("a", BIP320_VERSION_BITS).await?;
    let b = sv1_pool("b").await?;
    // New channels are placed by weight; no rebalancing afterwards, so no channel moves
    // while the test mines (moves have their own tests).
    let site = Site::start(&[(&a, 0, 1), (&b, 0, 1)], Duration::from_secs(3600)).await?;
    let mut m = site.sv2_miner().await?;
    // A miner that takes group jobs: its channels sit on different pools, so each must still
    // get jobs of its own pool, never a group job that would be wrong for half of them.
    m.setup(0).await?;
    let mut channels = Vec::new();
    for i in 0..4 {
        channels.push(m.open_channel(i + 1, &format!("rig{i}"), false).await?);
    }
    for (seed, ch) in channels.iter().enumerate() {
        mine_next_job(&mut m, ch, seed as u32).await?;
    }
    within("the pools accepting the shares", async {
        while a.stats().accepted + b.stats().accepted < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let (on_a, on_b) = (a.stats().accepted, b.stats().accepted);
    assert_eq!(
        (on_a, on_b),
        (2, 2),
        "equal weights, four new channels: two each"
    );
    // New work on each pool reaches only its own channels.
    a.new_job(true);
    b.new_job(true);
    for (seed, ch) in channels.iter().enumerate() {
        mine_next_job(&mut m, ch, 10 + seed as u32).await?;
    }
    within("the second round accepted", async {
        while a.stats().accepted + b.stats().accepted < 8 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    assert_eq!(a.stats().rejected_total() + b.stats().rejected_total(), 0);
    site.proxy.shutdown(Duration::from_secs(2)).await;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
