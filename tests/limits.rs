//! `[limits]` against one host trying to take every slot, end to end over 127.0.0.1: the
//! per-address connection cap and the idle timeout for authorized miners (SV1 and SV2).
//! Every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use hashshift::config::Config;
use hashshift::protocol::sv1::ServerMessage;
use hashshift::proxy::Proxy;
use hashshift::testpool::TestPool;
use hashshift::upstream::manager::ManagerSettings;

use support::miner::Miner;
use support::site::{self, Limits};
use support::sv2_miner::Received;
use support::sv2_site::Setup;
use support::wire::alive;

/// A test pool and an SV1 proxy in front of it with `extra` appended to its `[limits]` table
/// (and any tables after it).
async fn start(name: &str, extra: &str) -> Result<(TestPool, Proxy)> {
    let pool = site::pool(name).await?;
    let text = site::config_text(pool.addr(), &Limits::default()) + extra;
    let config = Config::from_toml(&text)?;
    let settings = ManagerSettings {
        no_work_timeout: Duration::from_secs(30),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    };
    let proxy = Proxy::start_with(&config, settings).await?;
    Ok((pool, proxy))
}

async fn stop(pool: TestPool, proxy: Proxy) {
    proxy.shutdown(Duration::from_secs(2)).await;
    pool.shutdown().await;
}

/// Whether the peer closes `m` within `wait` (reading and dropping whatever comes first).
async fn closes_within(m: &mut Miner, wait: Duration) -> Result<bool> {
    let read_to_end = async {
        loop {
            match m.recv().await? {
                None => return Ok::<_, anyhow::Error>(()),
                Some(ServerMessage::Response(_) | ServerMessage::Notification { .. }) => {}
            }
        }
    };
    match tokio::time::timeout(wait, read_to_end).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_cap_and_a_freed_place_is_taken_again() -> Result<()> {
    let (pool, proxy) = start("per-address", "max_connections_per_address = 3\n").await?;
    let addr = proxy.listen_addrs()[0];
    let mut three = Vec::new();
    for i in 0..3 {
        let mut m = Miner::connect(addr).await?;
        m.handshake(&format!("rig{i}"), None).await?;
        three.push(m);
    }
    // The fourth from 127.0.0.1 is closed at once, before it says anything.
    let mut fourth = Miner::connect(addr).await?;
    ensure!(
        closes_within(&mut fourth, Duration::from_secs(2)).await?,
        "a fourth connection from one address was kept"
    );
    for m in &mut three {
        alive(m).await?;
    }
    // One leaves; its place is free again once the proxy has seen it go.
    drop(three.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut m = Miner::connect(addr).await?;
        if !closes_within(&mut m, Duration::from_millis(300)).await? {
            m.handshake("rig-again", None).await?;
            break;
        }
        ensure!(Instant::now() < deadline, "the freed place was never given out");
    }
    for m in &mut three {
        alive(m).await?;
    }
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_sv1_miner_that_sends_nothing_is_dropped_after_the_idle_timeout()
-> Result<()> {
    let (pool, proxy) = start("idle-sv1", "idle_timeout_secs = 1\n").await?;
    let addr = proxy.listen_addrs()[0];
    let mut quiet = Miner::connect(addr).await?;
    let mut talking = Miner::connect(addr).await?;
    quiet.handshake("quiet", None).await?;
    talking.handshake("talking", None).await?;
    let silent_from = Instant::now();
    let talker = tokio::spawn(async move {
        // A request every 300 ms for 3 s: never a second of silence.
        for _ in 0..10 {
            alive(&mut talking).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        alive(&mut talking).await?;
        Ok::<_, anyhow::Error>(talking)
    });
    ensure!(
        closes_within(&mut quiet, Duration::from_secs(4)).await?,
        "a miner silent for 4 s with idle_timeout_secs = 1 was kept"
    );
    let after = silent_from.elapsed();
    ensure!(
        after >= Duration::from_millis(900),
        "dropped after {after:?}: before the idle timeout"
    );
    let talking = talker.await??;
    drop(talking);
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv2_connection_that_sends_nothing_is_dropped_after_the_idle_timeout() -> Result<()> {
    let s = Setup::start("[limits]\nidle_timeout_secs = 1\n").await?;
    let mut quiet = s.miner().await?;
    let mut talking = s.miner().await?;
    for (m, user) in [(&mut quiet, "farm.quiet"), (&mut talking, "farm.talking")] {
        ensure!(matches!(m.setup(0).await?, Received::SetupSuccess { .. }));
        m.open_channel(1, user, true).await?;
    }
    let silent_from = Instant::now();
    let talker = tokio::spawn(async move {
        for _ in 0..10 {
            talking.update_channel(2, 1e9, [0xff; 32]).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok::<_, anyhow::Error>(talking)
    });
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while quiet.recv().await?.is_some() {}
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match closed {
        Ok(r) => r?,
        Err(_) => bail!("an SV2 miner silent for 5 s with idle_timeout_secs = 1 was kept"),
    }
    let after = silent_from.elapsed();
    ensure!(
        after >= Duration::from_millis(900),
        "dropped after {after:?}: before the idle timeout"
    );
    let mut talking = talker.await??;
    // Still connected: it gets the proxy's answer to one more request.
    talking.update_channel(99, 1e9, [0xff; 32]).await?;
    talking
        .expect("UpdateChannel.Error for an unknown channel", |r| {
            matches!(r, Received::UpdateChannelError { .. }).then_some(())
        })
        .await?;
    s.stop().await;
    Ok(())
}
