//! The control plane behind the admin socket: answers requests from the proxy's live state
//! and records every action in the audit log.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;

use super::admin::protocol::{Command, Request, Response};
use super::admin::server::{Caller, Handler};
use super::audit::{AuditEvent, AuditLog, unix_ms};
use super::inventory::{self, RigView};
use crate::upstream::manager::PoolManager;

/// What the admin socket talks to.
pub struct ControlPlane {
    manager: Arc<PoolManager>,
    audit: Arc<AuditLog>,
}

impl ControlPlane {
    /// A control plane over the proxy's pool manager.
    pub fn new(manager: Arc<PoolManager>, audit: Arc<AuditLog>) -> Arc<Self> {
        Arc::new(ControlPlane { manager, audit })
    }

    /// The audit log.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Every rig now.
    pub fn rigs(&self) -> Vec<RigView> {
        inventory::rigs(
            &self.manager.miner_reports(),
            &self.manager.pools(),
            unix_ms(),
        )
    }

    async fn answer(&self, request: Request, caller: Caller) -> Response {
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
                if !self.manager.kick(rig.conn) {
                    return Response::error(format!("rig {id:?} disconnected meanwhile"));
                }
                self.audit.record(AuditEvent::now(
                    caller.to_string(),
                    "kick",
                    format!("{id} ({})", rig.address),
                    None,
                ));
                Response::ok(json!({"kicked": id}))
            }
            Command::Drain { .. }
            | Command::Resume { .. }
            | Command::Power
            | Command::Curtail { .. }
            | Command::CurtailClear { .. }
            | Command::GpuRequest { .. } => {
                Response::error("power control is not configured (no [power] section)")
            }
        }
    }
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
