//! The election, and a leader's term.
//!
//! Each instance holds one etcd lease (TTL `lease_ttl_secs`), renewed every third of it: its
//! presence (`instances/<me>`, its inventory) and, when it wins, its leadership (the `leader`
//! key is attached to it). Instances that do not lead read the leader key every
//! [`FOLLOW_EVERY`]; when it is gone (its lease expired or was revoked) they campaign with a
//! transaction that puts the key only if it does not exist, so exactly one wins.
//!
//! A term: read the plan from etcd, start power control on it with fenced ports
//! ([`super::fenced`]) and a plan sink whose writes are fenced transactions, and hand it to
//! the control plane. The term ends when the lease is lost (etcd said so, or no keep-alive was
//! answered before the fence's deadline), when a fenced write is refused (another instance
//! leads), or at shutdown. At its end the role changes first (every fenced call fails from
//! that instant), then power control is stopped. A graceful shutdown revokes the lease so
//! another instance takes over at once instead of after the TTL.
//!
//! What is never done: start power control without the plan (a plan that cannot be read or
//! parsed ends the term: no one commands rigs until an operator repairs it), or act on a
//! leader record this instance cannot parse as "no leader" (it waits for the key to go).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use super::etcd::{LeaseId, Write};
use super::fenced::Gate;
use super::node::Node;
use super::{InstanceRecord, LeaderRecord, Role};
use crate::config::Config;
use crate::control::audit::{AuditEvent, AuditLog};
use crate::control::power::persist::{PlanFile, PlanSink, Storage};
use crate::control::power::ports::{GpuControl, OutletFactory};
use crate::control::power::rigs::ControlFactory;
use crate::control::power::{self, PowerSlot};
use crate::pool_link::report::Fleet;
use crate::supervisor::Supervisor;
use crate::time::unix_ms;

/// How often an instance that does not lead reads the leader key.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// Longest wait between attempts to reach etcd.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a term's tasks get to stop.
const TERM_STOP: Duration = Duration::from_secs(5);

/// The fence's margin for a lease of `ttl`: a quarter of it, at most one second (the time a
/// command may take to reach its rig after the check).
pub fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 4).min(Duration::from_secs(1))
}

/// What a term needs to run power control.
pub struct Leading {
    /// The whole configuration.
    pub config: Arc<Config>,
    /// The whole site's miners (this instance's and the others').
    pub fleet: Arc<dyn Fleet>,
    /// This instance's audit log.
    pub audit: Arc<AuditLog>,
    /// Rigs' firmware controls (fenced here).
    pub factory: ControlFactory,
    /// PDU outlets (fenced here).
    pub outlets: Option<OutletFactory>,
    /// The GPU scheduler (fenced here).
    pub gpu: Arc<dyn GpuControl>,
    /// Where the control plane finds power control while this instance leads.
    pub slot: PowerSlot,
    /// Runs the term's critical tasks.
    pub supervisor: Supervisor,
    /// This instance's HTTP API address, for its presence record.
    pub http: Option<String>,
}

/// Runs the election for this instance until `shutdown`.
pub async fn run(node: Arc<Node>, leading: Leading, shutdown: CancellationToken) {
    let ttl = Duration::from_secs(node.config.lease_ttl_secs);
    let gate = Gate::new(node.clone());
    let started_unix_ms = unix_ms();
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let sent = Instant::now();
        let lease = match node.etcd.grant(ttl).await {
            Ok((lease, granted)) => {
                node.fence.renewed(sent, granted);
                lease
            }
            Err(e) => {
                warn!(error = %e, "cluster: cannot get a lease from etcd; power control holds");
                node.set_role(Role::Unreachable {
                    error: e.to_string(),
                });
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        info!(lease, "cluster: lease granted");
        let presence = InstanceRecord {
            instance: node.keys().instance().to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_unix_ms,
            http: leading.http.clone(),
        };
        let lost = CancellationToken::new();
        let keeper = tokio::spawn(keep_alive(
            node.clone(),
            lease,
            ttl,
            lost.clone(),
            shutdown.clone(),
        ));
        let presence = serde_json::to_vec(&presence).unwrap_or_default();
        if claim_name(&node, lease, presence, &lost, &shutdown).await {
            // From here this instance's records (its inventory) may be written under it.
            node.set_lease(lease);
            follow_and_lead(&node, lease, &leading, &gate, &lost, &shutdown).await;
        }
        lost.cancel();
        let _ = keeper.await;
        node.fence.close();
        node.set_lease(0);
        if shutdown.is_cancelled() {
            // Hand over at once: the others need not wait for the TTL.
            node.etcd.revoke(lease).await;
            info!(lease, "cluster: lease revoked at shutdown");
        } else {
            node.set_role(Role::Follower { leader: None });
        }
    }
}

/// Claims this instance's name: its presence record is created only if no live lease holds
/// it. A second instance configured with the same name would otherwise overwrite the first's
/// inventory; a restart after a crash waits at most the TTL for its old lease to expire.
/// Returns false if `lost` or `shutdown` came first.
async fn claim_name(
    node: &Node,
    lease: LeaseId,
    presence: Vec<u8>,
    lost: &CancellationToken,
    shutdown: &CancellationToken,
) -> bool {
    let key = node.keys().my_instance();
    let mut warned = false;
    loop {
        match node.etcd.create(&key, presence.clone(), lease).await {
            Ok(true) => return true,
            Ok(false) if !warned => {
                warned = true;
                warn!(
                    instance = node.keys().instance(),
                    "cluster: another live instance holds this instance name (a previous run \
                     whose lease has not expired yet, or a second instance configured with the \
                     same name): waiting for it to go"
                );
                node.set_role(Role::Unreachable {
                    error: format!(
                        "instance name {:?} held by another live lease",
                        node.keys().instance()
                    ),
                });
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cluster: cannot publish this instance's presence"),
        }
        tokio::select! {
            () = lost.cancelled() => return false,
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

/// Renews `lease` every third of `ttl` until it is lost (then cancels `lost`). While etcd
/// does not answer, it keeps trying until the fence's deadline passes: then the lease counts
/// as lost here, whatever etcd may still think.
async fn keep_alive(
    node: Arc<Node>,
    lease: LeaseId,
    ttl: Duration,
    lost: CancellationToken,
    shutdown: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    let mut last_error: Option<String> = None;
    loop {
        let pause = if last_error.is_some() {
            Duration::from_millis(200)
        } else {
            every
        };
        tokio::select! {
            () = lost.cancelled() => return,
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        match node.etcd.keep_alive(lease).await {
            Ok(Some((sent, ttl))) => {
                node.fence.renewed(sent, ttl);
                if last_error.take().is_some() {
                    info!(lease, "cluster: etcd answers again");
                }
            }
            Ok(None) => {
                warn!(lease, "cluster: lease expired");
                lost.cancel();
                return;
            }
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    warn!(lease, error = %e, "cluster: keep-alive failed");
                }
                last_error = Some(e.clone());
                if node.fence.remaining().is_zero() {
                    warn!(lease, "cluster: lease not renewed in time: counted as lost");
                    node.set_role(Role::Unreachable { error: e });
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// Follows the leader, campaigns when there is none, and leads when this instance wins,
/// until `lost` or `shutdown`.
async fn follow_and_lead(
    node: &Arc<Node>,
    lease: LeaseId,
    leading: &Leading,
    gate: &Gate,
    lost: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let mut last_error: Option<String> = None;
    while !lost.is_cancelled() && !shutdown.is_cancelled() {
        let won = match node.etcd.get(&node.keys().leader()).await {
            Err(e) => {
                let e = e.to_string();
                if last_error.as_deref() != Some(&e) {
                    warn!(error = %e, "cluster: cannot read the leader key");
                }
                last_error = Some(e.clone());
                node.set_role(Role::Unreachable { error: e });
                None
            }
            Ok(Some(entry)) if entry.lease == lease => parse_leader(&entry.value),
            Ok(Some(entry)) => {
                last_error = None;
                // A record we cannot read still means someone leads: wait for the key to go.
                node.set_role(Role::Follower {
                    leader: parse_leader(&entry.value),
                });
                None
            }
            Ok(None) => {
                last_error = None;
                let record = LeaderRecord {
                    instance: node.keys().instance().to_owned(),
                    lease,
                    since_unix_ms: unix_ms(),
                };
                let value = serde_json::to_vec(&record).unwrap_or_default();
                match node.etcd.campaign(lease, value).await {
                    Ok(true) => Some(record),
                    Ok(false) => None,
                    Err(e) => {
                        warn!(error = %e, "cluster: campaign failed");
                        None
                    }
                }
            }
        };
        if let Some(record) = won {
            lead(node, lease, record, leading, gate, lost, shutdown).await;
            continue;
        }
        tokio::select! {
            () = lost.cancelled() => return,
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

fn parse_leader(value: &[u8]) -> Option<LeaderRecord> {
    serde_json::from_slice(value).ok()
}

/// One term: power control runs here until the lease is lost, a fenced write is refused,
/// or shutdown.
async fn lead(
    node: &Arc<Node>,
    lease: LeaseId,
    record: LeaderRecord,
    leading: &Leading,
    gate: &Gate,
    lost: &CancellationToken,
    shutdown: &CancellationToken,
) {
    let audit = &leading.audit;
    let instance = node.keys().instance().to_owned();
    let restored = match read_plan(node).await {
        Ok(plan) => plan,
        Err(problem) => {
            error!(%problem, "cluster: won the election but cannot read the plan; not leading");
            audit.record(AuditEvent::now(
                format!("cluster {instance}"),
                "leader-refused",
                problem,
                Some("no power control without the stored plan: repair or remove it".into()),
            ));
            resign(node, lease).await;
            tokio::select! {
                () = lost.cancelled() => {}
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(MAX_BACKOFF) => {}
            }
            return;
        }
    };
    node.set_role(Role::Leader {
        record: record.clone(),
    });
    let rigs = restored.as_ref().map_or(0, |p| p.plan.rig_count());
    info!(lease, rigs, "cluster: this instance leads");
    audit.record(AuditEvent::now(
        format!("cluster {instance}"),
        "leader-elected",
        format!("lease {lease:x}, plan with {rigs} rigs"),
        Some(if restored.is_some() {
            "continues from the stored plan".into()
        } else {
            "no plan stored (a new site, or etcd's data lost): every rig starts unknown until confirmed, GPU grant 0".into()
        }),
    ));
    let term = shutdown.child_token();
    let tracker = TaskTracker::new();
    let (sink, plans) = EtcdPlanSink::new();
    let refused = CancellationToken::new();
    tracker.spawn(write_plans(
        node.clone(),
        lease,
        plans,
        term.clone(),
        refused.clone(),
    ));
    let started = power::start(
        &leading.config,
        leading.fleet.clone(),
        audit.clone(),
        gate.rigs(leading.factory.clone()),
        leading.outlets.clone().map(|o| gate.outlets(o)),
        gate.gpu(leading.gpu.clone()),
        term.clone(),
        &tracker,
        Storage::Sink {
            restored,
            sink: Arc::new(sink),
        },
        &leading.supervisor,
    );
    let why = match started {
        Ok(handle) => {
            leading.slot.set(handle);
            tokio::select! {
                () = lost.cancelled() => "lease lost",
                () = refused.cancelled() => "a plan write was refused: another instance leads",
                () = shutdown.cancelled() => "shutdown",
            }
        }
        Err(e) => {
            error!(error = %e, "cluster: cannot start power control on the stored plan");
            audit.record(AuditEvent::now(
                format!("cluster {instance}"),
                "leader-refused",
                e.to_string(),
                Some("no power control without the stored plan: repair or remove it".into()),
            ));
            "power control could not start"
        }
    };
    // Fenced calls fail from this instant; then power control stops.
    node.set_role(Role::Follower { leader: None });
    leading.slot.set(None);
    term.cancel();
    tracker.close();
    if tokio::time::timeout(TERM_STOP, tracker.wait())
        .await
        .is_err()
    {
        warn!("cluster: power control did not stop within {TERM_STOP:?}");
    }
    warn!(reason = why, "cluster: this instance no longer leads");
    audit.record(AuditEvent::now(
        format!("cluster {instance}"),
        "leader-term-ended",
        format!("lease {lease:x}"),
        Some(why.to_owned()),
    ));
    if why == "power control could not start" {
        resign(node, lease).await;
        tokio::select! {
            () = lost.cancelled() => {}
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(MAX_BACKOFF) => {}
        }
    }
}

/// The stored plan: `Ok(None)` when there is none, an error when it cannot be read or parsed.
async fn read_plan(node: &Node) -> Result<Option<PlanFile>, String> {
    let entry = node
        .etcd
        .get(&node.keys().plan())
        .await
        .map_err(|e| format!("cannot read the plan: {e}"))?;
    let Some(entry) = entry else {
        return Ok(None);
    };
    serde_json::from_slice(&entry.value)
        .map(Some)
        .map_err(|e| format!("cannot parse the plan at {}: {e}", entry.key))
}

/// Gives up leadership (deletes the leader key, fenced so it deletes only our own).
async fn resign(node: &Node, lease: LeaseId) {
    let key = node.keys().leader();
    if let Err(e) = node.etcd.fenced(lease, vec![Write::Delete { key }]).await {
        warn!(error = %e, "cluster: cannot resign");
    }
    node.set_role(Role::Follower { leader: None });
}

/// The leader's plan sink: the controller hands it each new plan, latest wins; a task writes
/// them to etcd in fenced transactions.
pub struct EtcdPlanSink {
    tx: watch::Sender<Option<String>>,
}

impl EtcdPlanSink {
    fn new() -> (Self, watch::Receiver<Option<String>>) {
        let (tx, rx) = watch::channel(None);
        (EtcdPlanSink { tx }, rx)
    }
}

impl PlanSink for EtcdPlanSink {
    fn save(&self, plan: String) -> Result<(), String> {
        self.tx.send_replace(Some(plan));
        Ok(())
    }
}

/// Writes each new plan (latest wins) in a fenced transaction; a refusal means another
/// instance leads: `refused` is cancelled and nothing more is written. At the term's end the
/// last plan handed over is still written, if this instance still leads.
async fn write_plans(
    node: Arc<Node>,
    lease: LeaseId,
    mut plans: watch::Receiver<Option<String>>,
    term: CancellationToken,
    refused: CancellationToken,
) {
    let key = node.keys().plan();
    loop {
        let ending = tokio::select! {
            changed = plans.changed() => changed.is_err(),
            () = term.cancelled() => true,
        };
        let mut tries = 0u32;
        // Write the newest plan; after a failure, the newest again (it may have changed).
        loop {
            // (The guard must not live across the write's await.)
            let newest = plans.borrow_and_update().clone();
            let Some(plan) = newest else { break };
            let write = vec![Write::Put {
                key: key.clone(),
                value: plan.into_bytes(),
                leased: false,
            }];
            match node.etcd.fenced(lease, write).await {
                Ok(true) => break,
                Ok(false) => {
                    warn!(
                        lease,
                        "cluster: plan write refused: this instance no longer leads"
                    );
                    refused.cancel();
                    return;
                }
                Err(e) => {
                    tries += 1;
                    warn!(error = %e, tries, "cluster: plan write failed; retrying");
                    if ending || tries >= 50 {
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        () = term.cancelled() => {}
                    }
                }
            }
        }
        if ending {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
mod etcd_tests {
    use super::*;
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

#[cfg(test)]
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
