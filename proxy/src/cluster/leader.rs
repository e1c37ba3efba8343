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
/// Largest plan written to etcd: the client reads at most 4 MiB in one answer (tonic's
/// default), and a plan that cannot be read back would leave the next leader without one.
/// ~16,000 rigs at ~250 bytes each (etcd itself must also take it: `--max-request-bytes`).
pub const MAX_PLAN_BYTES: usize = 3_800_000;
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
            power_config: Some(super::power_digest(&leading.config)),
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
    check_configs(node, leading).await;
    let term = shutdown.child_token();
    let tracker = TaskTracker::new();
    let (sink, plans) = EtcdPlanSink::new();
    let refused = CancellationToken::new();
    tracker.spawn(write_plans(
        node.clone(),
        lease,
        plans,
        (term.clone(), refused.clone()),
        audit.clone(),
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
    // Fenced calls fail from this instant; then power control stops: its term first, and
    // only then its handle is dropped (the last handle gone closes the controller's request
    // channel, and a controller that ends before its term would be a failure).
    node.set_role(Role::Follower { leader: None });
    term.cancel();
    leading.slot.set(None);
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

/// Audits every instance whose power sections differ from the leader's (by digest): it
/// would lead the site differently if it took over. Not fatal: the leader's own config rules
/// while it leads, and the operator is told which instance to fix.
async fn check_configs(node: &Node, leading: &Leading) {
    let mine = super::power_digest(&leading.config);
    let prefix = node.keys().instances();
    let Ok(records) = node.etcd.get_prefix(&prefix).await else {
        return;
    };
    let differ: Vec<String> = records
        .iter()
        .filter_map(|e| serde_json::from_slice::<InstanceRecord>(&e.value).ok())
        .filter(|r| r.power_config.as_deref().is_some_and(|d| d != mine))
        .map(|r| format!("{} ({})", r.instance, r.power_config.unwrap_or_default()))
        .collect();
    if differ.is_empty() {
        return;
    }
    warn!(instances = ?differ, leader = %mine, "cluster: instances with different power sections");
    leading.audit.record(AuditEvent::now(
        format!("cluster {}", node.keys().instance()),
        "config-mismatch",
        format!("leader {mine}; differ: {}", differ.join(", ")),
        Some("every instance needs the same [power], [[rig_group]], [[rig]], [[pdu]], [gpu_scheduler]: any may lead".into()),
    ));
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
    (term, refused): (CancellationToken, CancellationToken),
    audit: Arc<AuditLog>,
) {
    let key = node.keys().plan();
    let mut too_large_told = false;
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
            if plan.len() > MAX_PLAN_BYTES {
                // Keep the last plan that fits: a successor can read it, and its rigs confirm
                // their state again. Said loudly, once per term.
                error!(
                    bytes = plan.len(),
                    max = MAX_PLAN_BYTES,
                    "cluster: plan too large for etcd; not written"
                );
                if !std::mem::replace(&mut too_large_told, true) {
                    audit.record(AuditEvent::now(
                        format!("cluster {}", node.keys().instance()),
                        "plan-too-large",
                        format!("{} bytes, at most {MAX_PLAN_BYTES}", plan.len()),
                        Some(
                            "split the site into several [cluster] sites (docs/cluster.md)".into(),
                        ),
                    ));
                }
                break;
            }
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
                    // At the term's end one attempt is all: the next leader reads what was
                    // written last, and a deposed leader must not keep calling etcd.
                    if ending || term.is_cancelled() || tries >= 50 {
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
mod tests;
