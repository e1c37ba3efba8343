//! The controller's GPU side beyond the arbiter: the shed follow-up's steps carried out and
//! audited, a shed asked when the GPU side draws more than it can ever be granted, and the
//! task that applies the arbiter's budget to the scheduler (latest value wins, failures
//! retried).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Controller, GPU_CALL_MARGIN};
use crate::control::arbiter::Watts;
use crate::control::audit::{AuditEvent, AuditLog};
use crate::control::power::ops;
use crate::control::power::ports::{GpuControl, PortError};
use crate::control::power::shed::ShedStep;
use crate::error::{Classify, Retry, Side};

impl Controller {
    /// The GPU side draws more than the arbiter can ever grant it (a restart in the middle of a
    /// shed, which is not persisted; jobs started beyond their budget): shed the excess. Only
    /// beyond the target grant, which already counts what draining mining will free, so jobs
    /// that mining can make room for are not requeued.
    pub(super) fn shed_if_over(&mut self, now: tokio::time::Instant, drawing: Watts) {
        let snap = self.arbiter.snapshot();
        let reachable = snap.gpu_granted + snap.gpu_pending;
        let Some(excess) = self.shed.handle_over_grant(now, drawing, reachable) else {
            return;
        };
        warn!(
            drawing_kw = drawing.kw(),
            reachable_kw = reachable.kw(),
            "GPU side draws above what it can be granted: asking it to shed"
        );
        self.audit.record(AuditEvent::now(
            "gpu",
            "over-grant",
            format!(
                "the scheduler reports {:.1} kW drawn; at most {:.1} kW can be granted",
                drawing.kw(),
                reachable.kw()
            ),
            Some(format!("asking it to shed {:.1} kW", excess.kw())),
        ));
    }

    /// Carries out and records one step of the GPU shed follow-up.
    pub(super) fn on_shed_step(&mut self, step: ShedStep) {
        match step {
            ShedStep::Send {
                kw,
                reason,
                attempt,
            } => {
                if attempt > 1 {
                    info!(kw, attempt, "GPU shed sent again");
                }
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-request",
                    format!("{kw:.1} kW, attempt {attempt}"),
                    Some(reason.clone()),
                ));
                let bound = self.gpu.call_bound().saturating_add(GPU_CALL_MARGIN);
                self.ops
                    .push(ops::shed(self.gpu.clone(), kw, reason, bound));
            }
            ShedStep::Done {
                attempts,
                took,
                how,
            } => {
                info!(
                    attempts,
                    took_secs = took.as_secs_f64(),
                    how,
                    "GPU shed done"
                );
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-complete",
                    format!("after {attempts} attempts in {:.1} s", took.as_secs_f64()),
                    Some(how.to_owned()),
                ));
            }
            ShedStep::NoLongerNeeded { grant, attempts } => {
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-cancelled",
                    format!(
                        "grant back to {:.1} kW after {attempts} attempts",
                        grant.kw()
                    ),
                    Some("the GPU side's use fits the grant again".into()),
                ));
            }
            ShedStep::Overdue {
                outstanding,
                in_use,
                grant,
                attempts,
                age,
                last_error,
            } => {
                warn!(
                    outstanding_kw = outstanding.kw(),
                    in_use_kw = in_use.kw(),
                    grant_kw = grant.kw(),
                    attempts,
                    age_secs = age.as_secs_f64(),
                    gpu = %self.gpu.describe(),
                    "GPU shed overdue: the site is over its cap until the GPU side sheds; needs a person"
                );
                let error = last_error.map_or_else(String::new, |e| format!("; last error: {e}"));
                self.audit.record(AuditEvent::now(
                    "gpu",
                    "shed-overdue",
                    format!(
                        "{:.1} kW still to shed: in use {:.1} kW, grant {:.1} kW, {attempts} attempts in {:.0} s{error}",
                        outstanding.kw(),
                        in_use.kw(),
                        grant.kw(),
                        age.as_secs_f64()
                    ),
                    Some(format!(
                        "the site is over its cap until the GPU side sheds: stop, requeue or suspend \
                         GPU jobs worth {:.1} kW by hand on {} (or fix it so it answers); \
                         hashshift keeps retrying every {} s",
                        outstanding.kw(),
                        self.gpu.describe(),
                        crate::control::power::shed::MAX_BACKOFF.as_secs()
                    )),
                ));
            }
        }
    }
}

/// Applies the GPU budget the arbiter decided, latest value wins, retrying failures. Each
/// call is bounded by the adapter itself ([`GpuControl::call_bound`]; a margin on top only
/// catches an adapter that would not stop).
///
/// `held` tells the controller the most the GPU side may hold: the budget applied, or after a
/// call that failed or timed out (its outcome unknown), the higher of that and the one tried.
pub(in crate::control::power) async fn apply_budgets(
    gpu: Arc<dyn GpuControl>,
    mut budget: watch::Receiver<Option<f64>>,
    held: watch::Sender<Option<f64>>,
    audit: Arc<AuditLog>,
    shutdown: CancellationToken,
) {
    let mut applied: Option<f64> = None;
    loop {
        let target = *budget.borrow_and_update();
        if let Some(kw) = target.filter(|kw| Some(*kw) != applied) {
            let bound = gpu.call_bound().saturating_add(GPU_CALL_MARGIN);
            let result = tokio::time::timeout(bound, gpu.set_budget_kw(kw))
                .await
                .unwrap_or_else(|_| {
                    Err(PortError::new(
                        Side::Scheduler,
                        Retry::Yes,
                        format!("no answer within {bound:?}"),
                    ))
                });
            match result {
                Ok(()) => {
                    info!(kw, gpu = %gpu.describe(), "GPU budget set");
                    audit.record(AuditEvent::now(
                        "gpu",
                        "budget-applied",
                        format!("{kw:.1} kW"),
                        None,
                    ));
                    applied = Some(kw);
                    held.send_replace(Some(kw));
                }
                Err(e) => {
                    warn!(
                        kw,
                        error = %e,
                        side = %e.side(),
                        retry = %e.retry(),
                        "GPU budget not applied; retrying in 1 s"
                    );
                    let before = (*held.borrow()).unwrap_or(kw);
                    held.send_replace(Some(before.max(kw)));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = budget.changed() => if changed.is_err() { return },
        }
    }
}
