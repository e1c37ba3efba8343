//! Two instances on a private etcd (started here on loopback ports): A publishes, B sees,
//! B (leading) kicks one of A's miners, A's lease goes and its miners with it.

use super::super::*;
use crate::cluster::testing::TestEtcd;
use crate::cluster::{LeaderRecord, Role};
use tokio_util::sync::CancellationToken;

/// A node with a fresh lease (TTL 10 s).
async fn node(etcd: &TestEtcd, instance: &str) -> Arc<Node> {
    let node = etcd.node("inv-test", instance, 10).await;
    let (lease, _) = node.etcd.grant(Duration::from_secs(10)).await.unwrap();
    node.set_lease(lease);
    node
}

/// A local fleet of fixed miners that records kicks.
#[derive(Default)]
struct FakeFleet {
    miners: Vec<MinerReport>,
    kicked: Mutex<Vec<ConnId>>,
}

impl Fleet for FakeFleet {
    fn miner_reports(&self) -> Vec<MinerReport> {
        self.miners.clone()
    }
    fn pools(&self) -> Vec<PoolSnapshot> {
        Vec::new()
    }
    fn pool_urls(&self) -> Vec<String> {
        Vec::new()
    }
    fn kick(&self, id: ConnId) -> bool {
        self.kicked.lock().unwrap().push(id);
        self.miners.iter().any(|m| m.shared.id == id)
    }
}

fn miner(id: ConnId, worker: &str, last_share: u64) -> MinerReport {
    let s = MinerShared::new(id, format!("127.0.0.{id}:4028").parse().unwrap());
    s.set_worker(worker);
    s.set_pool(0);
    s.difficulty.set(1024.0);
    s.set_last_share_unix_ms(last_share);
    MinerReport {
        shared: Arc::new(s),
        pool: 0,
        hashrate: 1.4e14,
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_orders_and_expiry_over_a_real_etcd() {
    let Some(etcd) = TestEtcd::start() else {
        return;
    };
    let a = node(&etcd, "a").await;
    let b = node(&etcd, "b").await;
    let shares = crate::time::unix_ms() - 5_000;
    let a_local = Arc::new(FakeFleet {
        miners: vec![
            miner(1, "acct.rig1", shares),
            miner(2, "acct.rig2", shares + 1),
        ],
        ..FakeFleet::default()
    });
    let fa = ClusterFleet::new(a.clone(), a_local.clone());
    let fb = ClusterFleet::new(b.clone(), Arc::new(FakeFleet::default()));
    let stop = CancellationToken::new();
    let ta = tokio::spawn(run(fa.clone(), stop.clone()));
    let tb = tokio::spawn(run(fb.clone(), stop.clone()));

    // B sees A's miners, with their worker, address and last share.
    until("B sees A's miners", Duration::from_secs(5), || {
        fb.miner_reports().len() == 2
    })
    .await;
    let mut seen = fb.miner_reports();
    seen.sort_by_key(|r| r.shared.worker());
    for (r, (conn, worker, last)) in seen
        .iter()
        .zip([(1, "acct.rig1", shares), (2, "acct.rig2", shares + 1)])
    {
        assert_eq!(r.shared.id, remote_conn_id("a", conn));
        assert_eq!(r.shared.worker().as_deref(), Some(worker));
        assert_eq!(r.shared.last_share_unix_ms(), last);
        assert_eq!(
            r.shared.peer,
            format!("127.0.0.{conn}:4028").parse().unwrap()
        );
        assert_eq!(r.shared.difficulty.get(), 1024.0);
    }
    assert_eq!(fb.remote_instances(), vec![("a".to_owned(), 2)]);
    until("A sees B's empty list", Duration::from_secs(3), || {
        fa.remote_instances() == [("b".to_owned(), 0)]
    })
    .await;
    assert_eq!(fa.published_writes(), 1, "nothing changed: one write");
    assert!(fb.pool_urls().is_empty() && fb.pools().is_empty());

    // B does not lead: its kick is refused by etcd, A kicks nothing.
    assert!(fb.kick(seen[0].shared.id));
    until("a refused kick", Duration::from_secs(3), || {
        fb.orders_refused() == 1
    })
    .await;
    assert_eq!(fb.orders_sent(), 0);
    assert!(!fb.kick(remote_conn_id("a", 99)), "an unknown remote conn");

    // B leads: its kick reaches A's local fleet and the order is deleted.
    let record = LeaderRecord {
        instance: "b".into(),
        lease: b.lease(),
        since_unix_ms: crate::time::unix_ms(),
    };
    assert!(
        b.etcd
            .campaign(b.lease(), serde_json::to_vec(&record).unwrap())
            .await
            .unwrap()
    );
    b.set_role(Role::Leader { record });
    assert!(fb.kick(seen[1].shared.id));
    until("A kicks", Duration::from_secs(3), || {
        a_local.kicked.lock().unwrap().as_slice() == [2]
    })
    .await;
    assert_eq!((fb.orders_sent(), fa.orders_executed()), (1, 1));
    let orders = b.keys().orders("a");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !b.etcd.get_prefix(&orders).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the order was not deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stale order (a leader's from long ago) is deleted without acting.
    let stale = serde_json::to_vec(&Order {
        conn: 1,
        at_unix_ms: crate::time::unix_ms() - ORDER_MAX_AGE_MS - 1_000,
    })
    .unwrap();
    b.etcd
        .put(&format!("{orders}stale"), stale, b.lease())
        .await
        .unwrap();
    until("the stale order dropped", Duration::from_secs(3), || {
        fa.orders_dropped() == 1
    })
    .await;
    assert_eq!(a_local.kicked.lock().unwrap().as_slice(), [2]);

    // A's lease goes: its miners leave B's view within a second.
    a.etcd.revoke(a.lease()).await;
    let took = until("A's miners vanish", Duration::from_secs(1), || {
        fb.miner_reports().is_empty()
    })
    .await;
    println!("inventory: a revoked instance's miners left the view in {took:?}");
    assert!(fb.remote_instances().is_empty());

    // A new lease: A publishes again at once, though nothing changed.
    let (lease, _) = a.etcd.grant(Duration::from_secs(10)).await.unwrap();
    a.set_lease(lease);
    until("A republished", Duration::from_secs(2), || {
        fb.miner_reports().len() == 2
    })
    .await;
    assert_eq!(fa.published_writes(), 2);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), async {
        ta.await.unwrap();
        tb.await.unwrap();
    })
    .await
    .expect("run returns at shutdown");
}
