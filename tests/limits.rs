//! `[limits]` against one host trying to take every slot, end to end over 127.0.0.1: the
//! per-address connection cap. Every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hashshift::config::Config;
use hashshift::protocol::sv1::ServerMessage;
use hashshift::proxy::Proxy;
use hashshift::testpool::TestPool;
use hashshift::upstream::manager::ManagerSettings;

use support::miner::Miner;
use support::site::{self, Limits};
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
