//! The control plane behind the admin socket: answers requests from the proxy's live state
//! and records every action in the audit log.
//!
//! In a cluster (`[cluster]`), operators may ask any instance: every command but the two about
//! the instance asked (`pools`, `cluster`) goes to the power leader through the
//! [`ClusterLink`], which carries it out and records it once, naming the instance that
//! received it; the instance asked records nothing. When no leader can be reached, a change
//! is refused with the reason and nothing moves; a read (`rigs`, `rig`, `power`, `events`) is
//! answered from this instance's own view, marked `"degraded"` with the reason, so the NOC
//! keeps its eyes during an election or an etcd outage.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;

use super::admin::protocol::Target;
use super::admin::protocol::{Command, Request, Response};
use super::admin::server::{Caller, Handler};
use super::arbiter::{GroupId, Operator, OperatorCommand, RigId, Watts};
use super::audit::{AuditEvent, AuditLog};
use super::cluster_link::ClusterLink;
use super::inventory::{self, RigView};
use super::limits;
use super::power::{PowerHandle, PowerSlot};
use crate::pool_link::report::Fleet;
use crate::time::unix_ms;

/// What the admin socket talks to.
pub struct ControlPlane {
    manager: Arc<dyn Fleet>,
    audit: Arc<AuditLog>,
    power: PowerSlot,
    cluster: Option<Arc<dyn ClusterLink>>,
}

impl ControlPlane {
    /// A control plane over the proxy's pool manager (a single instance's, or the whole
    /// site's in a cluster), with power control where it runs, and the cluster if any.
    pub fn new(
        manager: Arc<dyn Fleet>,
        audit: Arc<AuditLog>,
        power: PowerSlot,
        cluster: Option<Arc<dyn ClusterLink>>,
    ) -> Arc<Self> {
        Arc::new(ControlPlane {
            manager,
            audit,
            power,
            cluster,
        })
    }

    /// Power control, when it runs on this instance (configured, and in a cluster: leading).
    pub fn power(&self) -> Option<PowerHandle> {
        self.power.get()
    }

    /// Where power control is found (metrics follow it across leadership changes).
    pub fn power_slot(&self) -> &PowerSlot {
        &self.power
    }

    /// The cluster, when `[cluster]` is configured.
    pub fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.as_ref()
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Every rig now.
    pub fn rigs(&self) -> Vec<RigView> {
        let view = self.power().map(|p| p.view());
        inventory::rigs(
            &self.manager.miner_reports(),
            &self.manager.pool_urls(),
            view.as_deref(),
            unix_ms(),
        )
    }

    /// Every field is range-checked before anything acts on it, for the admin socket and the
    /// HTTP API alike: a refusal moves no power and records no action. (Without power control
    /// here, kW figures are checked against the site cap by the leader that answers.)
    fn check(&self, request: Request) -> Result<Request, String> {
        let site_cap_kw = self.power().map(|p| p.view().snapshot.site_cap.kw());
        limits::check_request(request, site_cap_kw, unix_ms() / 1000)
    }

    async fn answer(&self, request: Request, caller: Caller) -> Response {
        let request = match self.check(request) {
            Ok(r) => r,
            Err(e) => return Response::error(e),
        };
        let Some(cluster) = self
            .cluster
            .as_ref()
            .filter(|_| !request.command.is_local())
        else {
            return self.answer_checked(request, caller).await;
        };
        match cluster.forward(&request, &caller.to_string()).await {
            // This instance leads: answer here.
            None => self.answer_checked(request, caller).await,
            Some(refused) if refused.unreached && request.command.is_read() => {
                let why = refused.error.clone().unwrap_or_default();
                let local = self.answer_checked(request, caller).await;
                if local.ok {
                    Response {
                        degraded: Some(format!(
                            "answered by this instance alone ({why}); the site's view may differ"
                        )),
                        ..local
                    }
                } else {
                    refused
                }
            }
            Some(answer) => Response {
                unreached: false,
                ..answer
            },
        }
    }

    /// Answers `request` on this instance, never forwarding it: the power leader's side of a
    /// request another instance forwarded (`caller` then names both the operator and that
    /// instance, [`super::admin::server::Origin::Forwarded`]). Range-checks it first.
    pub async fn answer_here(&self, request: Request, caller: Caller) -> Response {
        match self.check(request) {
            Ok(r) => self.answer_checked(r, caller).await,
            Err(e) => Response::error(e),
        }
    }

    async fn answer_checked(&self, request: Request, caller: Caller) -> Response {
        match request.command {
            Command::Rigs => Response::ok(json!(self.rigs())),
            Command::Rig { id } => match self.rigs().into_iter().find(|r| r.id == id) {
                Some(r) => Response::ok(json!(r)),
                None => Response::error(format!("no rig {id:?}")),
            },
            Command::Pools => {
                let pools: Vec<_> = self
                    .manager
                    .pools()
                    .into_iter()
                    .map(|p| {
                        json!({
                            "pool": p.pool, "url": p.url, "priority": p.priority,
                            "weight": p.weight, "active": p.active, "up": p.up,
                            "connections": p.connections, "miners": p.miners,
                            "accepted": p.shares.accepted, "rejected": p.shares.rejected,
                            "lost": p.shares.lost,
                            "accepted_difficulty": p.shares.accepted_difficulty,
                        })
                    })
                    .collect();
                Response::ok(json!(pools))
            }
            Command::Events { limit } => {
                Response::ok(json!(self.audit.recent(limit.unwrap_or(100))))
            }
            Command::Kick { id } => {
                let Some(rig) = self.rigs().into_iter().find(|r| r.id == id) else {
                    return Response::error(format!("no rig {id:?}"));
                };
                if !rig.conn.is_some_and(|c| self.manager.kick(c)) {
                    return Response::error(format!("rig {id:?} is not connected"));
                }
                self.audit.record(AuditEvent::now(
                    caller.to_string(),
                    "kick",
                    format!(
                        "{id} ({})",
                        rig.address
                            .map_or_else(|| "?".to_owned(), |a| a.to_string())
                    ),
                    None,
                ));
                Response::ok(json!({"kicked": id}))
            }
            Command::Cluster => match &self.cluster {
                Some(cluster) => Response::ok(cluster.status().await),
                None => Response::error("not clustered (no [cluster] section): a single instance"),
            },
            command => {
                let Some(power) = self.power() else {
                    if self.cluster.is_some() {
                        return Response::error(
                            "power control runs on the power leader, and this instance does not lead now",
                        );
                    }
                    return Response::error("power control is not configured (no [power] section)");
                };
                self.power_command(&power, command, caller).await
            }
        }
    }

    async fn power_command(
        &self,
        power: &PowerHandle,
        command: Command,
        caller: Caller,
    ) -> Response {
        let operator = |why: &Option<String>| Operator {
            who: caller.to_string(),
            why: why.clone().unwrap_or_else(|| "no reason given".to_owned()),
        };
        let record = |what: &str, detail: String, why: &Option<String>| {
            self.audit.record(AuditEvent::now(
                caller.to_string(),
                what,
                detail,
                why.clone(),
            ));
        };
        let result = match command {
            Command::Drain { target, reason } => {
                let command = match &target {
                    Target::Rig(r) => OperatorCommand::DrainRig {
                        rig: RigId(r.clone()),
                    },
                    Target::Group(g) => OperatorCommand::DrainGroup {
                        group: GroupId(g.clone()),
                    },
                    Target::Kw(kw) => OperatorCommand::DrainPower {
                        amount: Watts::from_kw(*kw),
                    },
                    Target::All => return Response::error("drain takes a rig, --group or --kw"),
                };
                record("drain", format!("{target:?}"), &reason);
                power
                    .operator(command, operator(&reason))
                    .await
                    .map(|rigs| json!({"accepted": true, "rigs": rigs}))
            }
            Command::Resume { target, reason } => {
                record("resume", format!("{target:?}"), &reason);
                let done = match &target {
                    Target::Rig(r) => {
                        power
                            .operator(
                                OperatorCommand::ResumeRig {
                                    rig: RigId(r.clone()),
                                },
                                operator(&reason),
                            )
                            .await
                    }
                    Target::Group(g) => {
                        power
                            .operator(
                                OperatorCommand::ResumeGroup {
                                    group: GroupId(g.clone()),
                                },
                                operator(&reason),
                            )
                            .await
                    }
                    Target::All => power.resume_all(operator(&reason)).await,
                    Target::Kw(_) => {
                        return Response::error("resume takes a rig, --group or --all");
                    }
                };
                done.map(|rigs| json!({"accepted": true, "rigs": rigs}))
            }
            Command::Power => power.fresh_view().await.map(|v| {
                let mut j = power_json(&v.snapshot);
                if let (Some(map), Ok(identity)) =
                    (j.as_object_mut(), serde_json::to_value(power.identity()))
                {
                    map.insert("identity".to_owned(), identity);
                }
                j
            }),
            Command::Curtail {
                kw,
                until_unix,
                reason,
            } => {
                record("curtail", format!("{kw:.1} kW until {until_unix}"), &reason);
                power
                    .curtail(kw, until_unix, caller.to_string())
                    .await
                    .map(|()| json!({"accepted": true}))
            }
            Command::CurtailClear { reason } => {
                record("curtail-clear", String::new(), &reason);
                power
                    .curtail_clear()
                    .await
                    .map(|()| json!({"accepted": true}))
            }
            Command::Forget { id, reason } => {
                record("forget", id.clone(), &reason);
                power
                    .forget(RigId(id), operator(&reason))
                    .await
                    .map(|rigs| json!({"forgotten": rigs}))
            }
            Command::GpuRequest { kw, reason } => {
                record("gpu-request", format!("{kw:.1} kW"), &reason);
                power
                    .gpu_request(kw)
                    .await
                    .map(|()| json!({"accepted": true}))
            }
            _ => return Response::error("unexpected command"),
        };
        match result {
            Ok(v) => Response::ok(v),
            Err(e) => Response::error(e.to_string()),
        }
    }
}

/// `ctl power`, in kW.
fn power_json(s: &super::arbiter::PowerSnapshot) -> serde_json::Value {
    json!({
        "site_cap_kw": s.site_cap.kw(),
        "effective_cap_kw": s.effective_cap.kw(),
        "headroom_kw": s.headroom.kw(),
        "budget_kw": s.budget.kw(),
        "mining_kw": s.mining.kw(),
        "draining_kw": s.draining.kw(),
        "asleep_kw": s.asleep.kw(),
        "gpu_granted_kw": s.gpu_granted.kw(),
        "gpu_wanted_kw": s.gpu_wanted.kw(),
        "gpu_in_use_kw": s.gpu_in_use.kw(),
        "gpu_pending_kw": s.gpu_pending.kw(),
        "free_kw": s.budget.kw() - s.mining.kw() - s.gpu_granted.kw(),
        "curtailment": s.curtailment.as_ref().map(|c| json!({
            "cap_kw": c.cap.kw(),
            "until_unix": c.until.map(|u| u.as_secs()),
            "source": c.source,
        })),
        "rigs": s.rigs,
    })
}

impl Handler for ControlPlane {
    fn handle(
        &self,
        request: Request,
        caller: Caller,
    ) -> Pin<Box<dyn Future<Output = Response> + Send + '_>> {
        Box::pin(self.answer(request, caller))
    }
}
