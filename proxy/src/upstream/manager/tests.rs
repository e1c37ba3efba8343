//! The manager's reports over a large fleet, and how long they hold its lock.

use std::net::SocketAddr;

use super::*;

/// A manager with two (unreachable) pools and `n` registered miners, as sessions would
/// leave them.
fn fleet(n: u64) -> Arc<PoolManager> {
    let config = Config::from_toml(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:9\"\nuser = \"farm\"\n\
         [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:9\"\nuser = \"backup\"\n",
    )
    .expect("config");
    let manager = PoolManager::start(
        &config,
        ManagerSettings::from_config(&config),
        CancellationToken::new(),
        TaskTracker::new(),
    );
    {
        let mut inner = manager.lock();
        for id in 0..n {
            let peer = SocketAddr::from(([10, 0, (id >> 8) as u8, id as u8], 4028));
            let shared = Arc::new(MinerShared::new(id, peer));
            shared.set_worker(&format!("rig{id}"));
            let (control, _mailbox) = crate::pool_link::mailbox::mailbox();
            let pool = usize::try_from(id % 2).unwrap_or(0);
            inner.miners.insert(
                id,
                MinerEntry {
                    pool,
                    conn: 0,
                    slot: 0,
                    control,
                    shared,
                    credited: 0.0,
                    hashrate: 1e12,
                    joined: Instant::now(),
                },
            );
        }
    }
    manager
}

#[tokio::test]
async fn reports_have_every_miner_once_whatever_the_count() {
    for n in [0, 1, 255, 256, 257, 512, 1000] {
        let ids: Vec<ConnId> = fleet(n)
            .miner_reports()
            .iter()
            .map(|r| r.shared.id)
            .collect();
        assert_eq!(ids, (0..n).collect::<Vec<_>>(), "{n} miners");
    }
}

/// Median, 99th percentile and longest, as one line.
fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    format!(
        "median {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Not a timed assertion: prints the longest time building the rig inventory holds the
/// manager's lock with 10 000 miners (`cargo test --release --lib inventory_lock_hold --
/// --nocapture`). Each `report_chunk` call is one hold of the lock. The inventory itself,
/// built outside the lock, is timed in `control::inventory`'s tests.
#[tokio::test]
async fn inventory_lock_hold_with_10k_miners() {
    let manager = fleet(10_000);
    let mut chunks = Vec::new();
    let mut whole_copy = Vec::new();
    let mut urls = Vec::new();
    let mut pools = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let mut reports = Vec::new();
        let mut after = None;
        loop {
            let t = Instant::now();
            let next = manager.report_chunk(after, &mut reports);
            chunks.push(t.elapsed());
            match next {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        whole_copy.push(started.elapsed());
        assert_eq!(reports.len(), 10_000);
        let t = Instant::now();
        let _ = manager.pool_urls();
        urls.push(t.elapsed());
        let t = Instant::now();
        let p = manager.pools();
        pools.push(t.elapsed());
        assert_eq!(p.iter().map(|p| p.miners).sum::<usize>(), 10_000);
    }
    println!(
        "miner_reports: one lock hold ({REPORT_CHUNK} miners): {}",
        spread(chunks)
    );
    println!(
        "miner_reports: whole copy, lock released between holds: {}",
        spread(whole_copy)
    );
    println!("pool_urls: one lock hold: {}", spread(urls));
    println!(
        "pools (metrics, /api/pools): one lock hold: {}",
        spread(pools)
    );
    // For comparison, not changed here: the health tick holds the lock over every miner.
    let mut ticks = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        manager.tick(Instant::now(), 0.25);
        ticks.push(t.elapsed());
    }
    println!("health tick: one lock hold: {}", spread(ticks));
}
