//! The election and a term: pure parts, then against a private etcd, and the plan's size.

mod unit {
    use super::super::*;

    #[test]
    fn the_margin_is_a_quarter_of_the_ttl_at_most_a_second() {
        assert_eq!(
            fence_margin(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(fence_margin(Duration::from_secs(6)), Duration::from_secs(1));
        assert_eq!(
            fence_margin(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_leader_record_that_is_not_ours_is_read_but_never_trusted_blindly() {
        let r = LeaderRecord {
            instance: "p1".into(),
            lease: 7,
            since_unix_ms: 1,
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse_leader(&bytes), Some(r));
        assert_eq!(parse_leader(b"{not json"), None);
        assert_eq!(parse_leader(&[0xff; 64]), None);
    }
}

mod with_etcd {
    use super::super::*;
    use crate::cluster::testing::TestEtcd;
    use crate::control::power::adapters;

    fn plan_write(key: &str, v: &str) -> Vec<Write> {
        vec![Write::Put {
            key: key.into(),
            value: v.as_bytes().to_vec(),
            leased: false,
        }]
    }

    #[tokio::test]
    async fn only_the_lease_that_holds_the_leader_key_can_write_the_plan() {
        let Some(etcd) = TestEtcd::start() else {
            return;
        };
        let a = etcd.node("s", "a", 2).await;
        let b = etcd.node("s", "b", 2).await;
        let lease_a = TestEtcd::lead(&a).await;
        let plan = a.keys().plan();
        assert!(
            a.etcd
                .fenced(lease_a, plan_write(&plan, "a1"))
                .await
                .unwrap()
        );
        // A non-leader's lease passes nothing.
        let (lease_b, _) = b.etcd.grant(Duration::from_secs(2)).await.unwrap();
        assert!(
            !b.etcd
                .fenced(lease_b, plan_write(&plan, "b0"))
                .await
                .unwrap()
        );
        // A's lease ends: its key goes, B wins, and A can never write again.
        a.etcd.revoke(lease_a).await;
        b.set_lease(lease_b);
        assert!(b.etcd.campaign(lease_b, b"{}".to_vec()).await.unwrap());
        assert!(
            b.etcd
                .fenced(lease_b, plan_write(&plan, "b1"))
                .await
                .unwrap()
        );
        assert!(
            !a.etcd
                .fenced(lease_a, plan_write(&plan, "a2"))
                .await
                .unwrap()
        );
        let stored = a.etcd.get(&plan).await.unwrap().unwrap();
        assert_eq!(stored.value, b"b1");
    }

    fn config(etcd: &TestEtcd, instance: &str, dir: &std::path::Path) -> Arc<Config> {
        let toml = format!(
            r#"
[[downstream]]
listen = "127.0.0.1:0"
protocol = "sv1"
[[upstream]]
url = "stratum+tcp://127.0.0.1:1"
user = "u"
[admin]
socket = "{dir}/admin.sock"
state_dir = "{dir}"
[power]
site_cap_kw = 100
[cluster]
etcd = ["{url}"]
site = "s"
instance = "{instance}"
lease_ttl_secs = 2
"#,
            dir = dir.display(),
            url = etcd.url
        );
        Arc::new(Config::from_toml(&toml).unwrap())
    }

    struct NoMiners;
    impl Fleet for NoMiners {
        fn miner_reports(&self) -> Vec<crate::pool_link::report::MinerReport> {
            Vec::new()
        }
        fn pools(&self) -> Vec<crate::pool_link::report::PoolSnapshot> {
            Vec::new()
        }
        fn pool_urls(&self) -> Vec<String> {
            Vec::new()
        }
        fn kick(&self, _: crate::pool_link::ConnId) -> bool {
            false
        }
    }

    fn leading(config: Arc<Config>, slot: PowerSlot, audit: Arc<AuditLog>) -> Leading {
        Leading {
            config,
            fleet: Arc::new(NoMiners),
            audit,
            factory: adapters::firmware_factory(),
            outlets: None,
            gpu: Arc::new(adapters::SocketOnly),
            slot,
            supervisor: Supervisor::new(None),
            http: None,
        }
    }

    async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while !f() {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn one_instance_leads_and_a_graceful_stop_hands_over_at_once() {
        let Some(etcd) = TestEtcd::start() else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("hashshift-lead-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (etcd.node("s", "a", 2).await, etcd.node("s", "b", 2).await);
        let (slot_a, slot_b) = (PowerSlot::default(), PowerSlot::default());
        let (audit_a, audit_b) = (AuditLog::in_memory(), AuditLog::in_memory());
        let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
        let run_a = tokio::spawn(run(
            a.clone(),
            leading(config(&etcd, "a", &dir), slot_a.clone(), audit_a.clone()),
            stop_a.clone(),
        ));
        until("a leads", Duration::from_secs(10), || a.is_leader()).await;
        tokio::spawn(run(
            b.clone(),
            leading(config(&etcd, "b", &dir), slot_b.clone(), audit_b.clone()),
            stop_b.clone(),
        ));
        until("b follows a", Duration::from_secs(10), || {
            b.role().leader_name() == Some("a")
        })
        .await;
        assert!(slot_a.get().is_some() && slot_b.get().is_none());
        // The first leader wrote the (empty) plan.
        let mut plan = None;
        for _ in 0..100 {
            plan = a.etcd.get(&a.keys().plan()).await.unwrap();
            if plan.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let plan: PlanFile = serde_json::from_slice(&plan.expect("a plan").value).unwrap();
        assert_eq!(plan.plan.rig_count(), 0);
        // A graceful stop revokes the lease: b leads well before the 2 s TTL would pass.
        let t = Instant::now();
        stop_a.cancel();
        run_a.await.unwrap();
        assert!(!a.is_leader() && slot_a.get().is_none());
        until("b leads", Duration::from_secs(2), || b.is_leader()).await;
        let handover = t.elapsed();
        assert!(handover < Duration::from_secs(1), "{handover:?}");
        until("b's power control", Duration::from_secs(5), || {
            slot_b.get().is_some()
        })
        .await;
        let events: Vec<String> = audit_b.recent(10).iter().map(|e| e.what.clone()).collect();
        assert!(events.contains(&"leader-elected".to_owned()), "{events:?}");
        stop_b.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_second_instance_with_the_same_name_waits_and_never_leads() {
        let Some(etcd) = TestEtcd::start() else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("hashshift-dup-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (first, second) = (etcd.node("s", "a", 2).await, etcd.node("s", "a", 2).await);
        let stop = CancellationToken::new();
        let slot = PowerSlot::default();
        tokio::spawn(run(
            first.clone(),
            leading(
                config(&etcd, "a", &dir),
                slot.clone(),
                AuditLog::in_memory(),
            ),
            stop.clone(),
        ));
        until("the first leads", Duration::from_secs(10), || {
            first.is_leader()
        })
        .await;
        let slot2 = PowerSlot::default();
        tokio::spawn(run(
            second.clone(),
            leading(
                config(&etcd, "a", &dir),
                slot2.clone(),
                AuditLog::in_memory(),
            ),
            stop.clone(),
        ));
        until("the second sees the clash", Duration::from_secs(5), || {
            matches!(second.role(), Role::Unreachable { error } if error.contains("held by another live lease"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(first.is_leader() && !second.is_leader());
        assert_eq!(
            second.lease(),
            0,
            "the second publishes nothing under a lease"
        );
        assert!(slot2.get().is_none());
        stop.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

mod plan_size {
    use std::time::Duration;

    use crate::control::arbiter::{Arbiter, GroupId, Observed, RigId, RigInfo, Settings, Watts};

    /// The plan is one etcd value, and etcd refuses a request over `--max-request-bytes`
    /// (1.5 MiB by default): docs/cluster.md sizes it from this figure.
    #[test]
    fn a_plan_costs_under_four_hundred_bytes_per_rig() {
        let rigs = 1_000u64;
        let mut a = Arbiter::new(Settings::new(Watts(rigs * 3_500 + 1)), Duration::ZERO).unwrap();
        for i in 0..rigs {
            let info = RigInfo {
                id: RigId(format!(
                    "hall-a.row-{:02}.rack-{:02}.s19xp-{i:05}",
                    i / 100,
                    i % 100
                )),
                group: GroupId(format!("s19xp-{}", i % 10)),
                priority: 0,
                power: Watts(3_010 + i % 50),
                efficiency: Some(21.5),
                path: Default::default(),
            };
            a.handle_rig(Duration::ZERO, info, Observed::Mining)
                .unwrap();
        }
        let bytes = serde_json::to_vec(&a.persist()).unwrap().len() as u64;
        let per_rig = bytes / rigs;
        println!("plan: {bytes} bytes for {rigs} rigs, {per_rig} bytes per rig");
        assert!((50..=400).contains(&per_rig), "{per_rig} bytes per rig");
    }
}
