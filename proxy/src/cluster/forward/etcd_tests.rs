//! Forwarding against a real etcd ([`crate::cluster::testing`]: skipped without an `etcd`
//! binary unless `HASHSHIFT_ETCD=1`, where it fails): two nodes (`p1` leads, `p2` follows),
//! each with its control plane.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::cluster::testing::TestEtcd;
use crate::control::admin::protocol::Command;
use crate::control::admin::server::Handler;
use crate::control::audit::AuditLog;
use crate::control::power::PowerSlot;
use crate::pool_link::ConnId;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::report::{Fleet, MinerReport, PoolSnapshot};

/// A node of `instance` with a lease of its own (a follower until told otherwise).
async fn node(etcd: &TestEtcd, instance: &str) -> Arc<Node> {
    let node = etcd.node("hall-a", instance, 10).await;
    let (lease, _) = node.etcd.grant(Duration::from_secs(10)).await.unwrap();
    node.set_lease(lease);
    node
}

/// One connected rig, `rig-1`; counts kicks.
struct OneRig {
    miner: Arc<MinerShared>,
    kicks: AtomicUsize,
}

impl Fleet for OneRig {
    fn miner_reports(&self) -> Vec<MinerReport> {
        vec![MinerReport {
            shared: self.miner.clone(),
            pool: 0,
            hashrate: 100e12,
        }]
    }

    fn pools(&self) -> Vec<PoolSnapshot> {
        Vec::new()
    }

    fn pool_urls(&self) -> Vec<String> {
        Vec::new()
    }

    fn kick(&self, _id: ConnId) -> bool {
        self.kicks.fetch_add(1, Ordering::SeqCst);
        true
    }
}

/// No miners at all (the follower: its rigs are elsewhere).
struct NoRigs;

impl Fleet for NoRigs {
    fn miner_reports(&self) -> Vec<MinerReport> {
        Vec::new()
    }
    fn pools(&self) -> Vec<PoolSnapshot> {
        Vec::new()
    }
    fn pool_urls(&self) -> Vec<String> {
        Vec::new()
    }
    fn kick(&self, _id: ConnId) -> bool {
        false
    }
}

fn alice() -> Caller {
    Caller {
        origin: Origin::Socket {
            uid: 1000,
            pid: None,
        },
        claimed: Some("alice".into()),
    }
}

fn ask(command: Command) -> Request {
    Request {
        command,
        by: Some("alice".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reaches_the_leader_and_a_deposed_leader_writes_nothing() {
    let Some(etcd) = TestEtcd::start() else {
        return;
    };
    // p1 leads: the leader key under its lease, its fence open.
    let p1 = etcd.node("hall-a", "p1", 10).await;
    TestEtcd::lead(&p1).await;
    let Role::Leader { record } = p1.role() else {
        panic!("p1 leads");
    };
    let p2 = node(&etcd, "p2").await;
    p2.set_role(Role::Follower {
        leader: Some(record.clone()),
    });
    // Their presence records (leader.rs writes them in the proxy), and a malformed one.
    for n in [&p1, &p2] {
        let r = InstanceRecord {
            instance: n.keys().instance().to_owned(),
            version: "0.1.0".into(),
            started_unix_ms: unix_ms(),
            http: None,
            power_config: None,
        };
        let value = serde_json::to_vec(&r).unwrap();
        n.etcd
            .put(&n.keys().my_instance(), value, n.lease())
            .await
            .unwrap();
    }
    let junk = format!("{}p3", p2.keys().instances());
    p2.etcd
        .put(&junk, b"{not json".to_vec(), p2.lease())
        .await
        .unwrap();

    let miner = Arc::new(MinerShared::new(
        7,
        "127.0.0.1:40000".parse::<SocketAddr>().unwrap(),
    ));
    miner.set_worker("rig-1");
    let fleet = Arc::new(OneRig {
        miner,
        kicks: AtomicUsize::new(0),
    });
    let (audit1, audit2) = (AuditLog::in_memory(), AuditLog::in_memory());
    let link1: Arc<dyn ClusterLink> = Forwarder::new(p1.clone());
    let link2: Arc<dyn ClusterLink> = Forwarder::with_deadline(p2.clone(), Duration::from_secs(2));
    let plane1 = ControlPlane::new(
        fleet.clone(),
        audit1.clone(),
        PowerSlot::default(),
        Some(link1),
    );
    let plane2 = ControlPlane::new(
        Arc::new(NoRigs),
        audit2.clone(),
        PowerSlot::default(),
        Some(link2.clone()),
    );
    let shutdown = CancellationToken::new();
    let serving = [
        tokio::spawn(serve(p1.clone(), plane1.clone(), shutdown.clone())),
        tokio::spawn(serve(p2.clone(), plane2.clone(), shutdown.clone())),
    ];

    // A read on the follower shows the leader's site (the follower has no rigs of its own).
    let r = plane2.handle(ask(Command::Rigs), alice()).await;
    assert!(r.ok && r.degraded.is_none(), "{r:?}");
    assert_eq!(r.result.unwrap()[0]["id"], "rig-1");

    // A change on the follower is carried out once, by the leader, audited once there.
    let r = plane2
        .handle(ask(Command::Kick { id: "rig-1".into() }), alice())
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(fleet.kicks.load(Ordering::SeqCst), 1);
    let events = audit1.recent(100);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].who, "alice (uid 1000) via p2");
    assert_eq!(events[0].what, "kick");
    assert!(
        audit2.recent(100).is_empty(),
        "the follower records nothing"
    );
    // Nothing is left behind in etcd.
    assert!(nothing_under(&p2, &p2.keys().requests()).await);
    assert!(nothing_under(&p2, &p2.keys().replies()).await);

    // On the leader itself nothing is forwarded.
    let r = plane1
        .handle(ask(Command::Kick { id: "rig-1".into() }), alice())
        .await;
    assert!(r.ok, "{r:?}");
    assert_eq!(audit1.recent(100)[1].who, "alice (uid 1000)");

    // `cluster` is answered by the instance asked, in the documented shape.
    let s = plane2.handle(ask(Command::Cluster), alice()).await;
    assert!(s.ok, "{s:?}");
    let s = s.result.unwrap();
    assert_eq!(s["site"], "hall-a");
    assert_eq!(s["instance"], "p2");
    assert_eq!(s["role"], "follower");
    assert_eq!(s["leader"]["instance"], "p1");
    assert_eq!(s["leader"]["lease"], p1.lease());
    assert_eq!(s["lease"], p2.lease());
    assert!(s["lease_age_ms"].as_u64().is_some());
    assert_eq!(s["fence_remaining_ms"], 0);
    assert_eq!(s["etcd"]["healthy"], true, "{s}");
    assert_eq!(s["etcd"]["endpoints"][0], etcd.url.as_str());
    assert!(
        s["etcd"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with('3'))
    );
    assert!(s["etcd"]["db_size"].as_i64().is_some_and(|d| d > 0));
    assert_eq!(
        s["instances"].as_array().map(|a| a
            .iter()
            .map(|i| (i["instance"].clone(), i["leader"].clone()))
            .collect::<Vec<_>>()),
        Some(vec![
            (json!("p1"), json!(true)),
            (json!("p2"), json!(false))
        ]),
        "{s}"
    );
    assert!(s["etcd_writes"].as_u64().is_some_and(|w| w >= 4));
    let s1 = link_status(&plane1).await;
    assert_eq!(s1["role"], "leader");
    assert!(s1["fence_remaining_ms"].as_u64().is_some_and(|ms| ms > 0));
    // The metrics' figures, read without waiting on etcd.
    let g = link2.gauges();
    assert!(
        !g.leader && g.lease_remaining_secs == 0.0 && g.etcd_writes >= 3,
        "{g:?}"
    );
    assert_eq!(g.instances, 2, "the status read counted them");
    let g = plane1.cluster().unwrap().gauges();
    assert!(g.leader && g.lease_remaining_secs > 0.0, "{g:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        plane1.cluster().unwrap().gauges().instances,
        2,
        "read in the background"
    );

    // Latency of one forwarded request (a read: nothing to undo).
    let mut took = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = plane2
            .handle(ask(Command::Events { limit: Some(1) }), alice())
            .await;
        took.push(t.elapsed());
        assert!(r.ok && r.degraded.is_none(), "{r:?}");
    }
    took.sort();
    eprintln!(
        "forwarded request latency over 20: p50 {:?}, max {:?}",
        took[10], took[19]
    );
    assert!(took[10] < Duration::from_secs(1));

    // No leader known: a change is refused at once, with the reason; nothing moves.
    p2.set_role(Role::Follower { leader: None });
    let r = plane2
        .handle(ask(Command::Kick { id: "rig-1".into() }), alice())
        .await;
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some("no power leader: election under way, retry in a few seconds; nothing was changed")
    );
    assert_eq!(fleet.kicks.load(Ordering::SeqCst), 2);
    // A read is answered from this instance's view, marked degraded.
    let r = plane2.handle(ask(Command::Rigs), alice()).await;
    assert!(r.ok, "{r:?}");
    assert!(r.degraded.is_some_and(|d| d.contains("no power leader")));
    assert_eq!(r.result.unwrap(), json!([]));

    // The leader's lease is revoked (as when it expires): the follower, not told yet, queues
    // a change; the deposed leader (its fence not yet closed) writes no reply, and the
    // follower gives up with the clear error.
    shutdown.cancel();
    for s in serving {
        s.await.unwrap();
    }
    p1.etcd.revoke(p1.lease()).await;
    p2.set_role(Role::Follower {
        leader: Some(record),
    });
    let mut server = Server {
        node: p1.clone(),
        plane: plane1.clone(),
        answered: Answered::default(),
    };
    let asking = tokio::spawn({
        let plane2 = plane2.clone();
        async move {
            plane2
                .handle(ask(Command::Kick { id: "rig-1".into() }), alice())
                .await
        }
    });
    let queued = Instant::now();
    let round = loop {
        let round = server.round().await.unwrap();
        if round != Round::default() {
            break round;
        }
        assert!(
            queued.elapsed() < Duration::from_secs(2),
            "request never queued"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        round,
        Round {
            refused: 1,
            ..Round::default()
        }
    );
    assert!(nothing_under(&p1, &p1.keys().replies()).await);
    let r = asking.await.unwrap();
    assert!(!r.ok);
    assert_eq!(
        r.error.as_deref(),
        Some(
            "the power leader p1 did not answer within 2 s; the change may still be carried \
             out: check `ctl events`"
        )
    );
    assert!(
        audit2.recent(100).is_empty(),
        "the follower still records nothing"
    );
    // The follower withdrew its request.
    assert!(nothing_under(&p2, &p2.keys().requests()).await);
}

/// Whether `node`'s etcd holds no key under `prefix`.
async fn nothing_under(node: &Node, prefix: &str) -> bool {
    node.etcd.get_prefix(prefix).await.unwrap().is_empty()
}

async fn link_status(plane: &ControlPlane) -> Value {
    plane.cluster().expect("clustered").status().await
}
