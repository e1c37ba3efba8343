//! What the controller learns about rigs besides their firmware's word: registry findings
//! (identity conflicts, refused workers), a sleep confirmed only once the shares stop too,
//! shares that show a rig counted asleep draws after all, the first answer of a rig's
//! management API, and after `--reset-power-state` the rigs whose state is found out.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Controller, SHARE_FLOW};
use crate::control::arbiter::{Confirmation, Observed, Operator, OperatorCommand, RigId, RigState};
use crate::control::audit::AuditEvent;
use crate::control::power::ops;
use crate::control::power::rigs::{Refusal, SyncReport};
use crate::error::Classify;
use crate::time::{since_epoch, unix_ms};

impl Controller {
    /// Audits what a registry sync found: identity conflicts and refused workers.
    pub(super) fn report(&mut self, report: SyncReport) {
        for (rig, from, conn) in report.conflicts {
            self.identity.conflicts.fetch_add(1, Relaxed);
            let home = self
                .registry
                .rigs
                .get(&rig)
                .and_then(|e| e.home)
                .map_or_else(|| "?".to_owned(), |h| h.to_string());
            warn!(rig = %rig, %from, %home, "identity conflict: a connection from another address uses a known rig's worker name");
            self.audit.record(AuditEvent::now(
                "registry",
                "identity-conflict",
                format!(
                    "{} claimed from {from} (connection {conn}); the rig is at {home}",
                    rig.0
                ),
                Some(format!(
                    "the rig stays bound to {home}; the connection counts as {}@{} (unverified)",
                    rig.0,
                    from.ip()
                )),
            ));
        }
        for (worker, from, why) in report.refused {
            let (counter, detail) = match why {
                Refusal::PerAddress => (
                    &self.identity.refused_per_address,
                    format!(
                        "{from} holds max_rigs_per_address unverified rigs: {worker} counts in overflow@{}",
                        from.ip()
                    ),
                ),
                Refusal::MaxRigs => (
                    &self.identity.refused_max_rigs,
                    format!(
                        "the inventory holds {} rigs (MAX_RIGS): {worker} from {from} is not counted",
                        crate::control::arbiter::MAX_RIGS
                    ),
                ),
            };
            counter.fetch_add(1, Relaxed);
            warn!(%worker, %from, reason = why.label(), "rig cap reached");
            self.audit
                .record(AuditEvent::now("registry", "rig-cap", detail, None));
        }
    }

    /// The firmware says the rig sleeps: it counts as asleep once its shares stopped too.
    pub(super) fn confirm_quiet(&mut self, rig: &RigId) {
        let Some(entry) = self.registry.rigs.get(rig) else {
            return;
        };
        // Quiet means no share for `quiet` since the sleep command too: a rig with no share
        // yet (it has not connected, or not since a restart) is not quiet just for that.
        let last = entry.live_last_share_unix_ms();
        let mut wait = Duration::ZERO;
        if last > 0 {
            let age = Duration::from_millis(unix_ms().saturating_sub(last));
            wait = self.quiet.saturating_sub(age);
        }
        if let Some(commanded) = self.sleep_commanded.get(rig) {
            wait = wait.max(self.quiet.saturating_sub(commanded.elapsed()));
        }
        // After a PDU cut, quiet counts from the cut: shares sent before it prove nothing.
        if let Some(cut) = entry.cut_at {
            wait = wait.max(self.quiet.saturating_sub(cut.elapsed()));
        }
        if !wait.is_zero() {
            self.ops.push(ops::quiet_check(rig.clone(), wait));
            return;
        }
        // Asleep: stop giving it work (it has stopped asking anyway).
        for conn in &entry.conns {
            self.manager.kick(*conn);
        }
        if let Some(t) = self.sleep_commanded.remove(rig) {
            self.drain_to_confirmed.observe_duration(t.elapsed());
        }
        self.asleep_at.insert(rig.clone(), unix_ms());
        self.confirm(rig, Confirmation::Asleep);
    }

    /// A rig counted asleep whose shares are accepted again is drawing: its firmware lied or
    /// someone woke it. It counts as mining again at once (a pinned rig is told to sleep
    /// again), and the audit log says so.
    pub(super) fn shares_while_asleep(&mut self) {
        let mut woke = Vec::new();
        self.asleep_at.retain(|id, at| {
            if self.arbiter.rig(id).map(|v| v.state) != Some(RigState::Asleep) {
                return false;
            }
            match self.registry.rigs.get(id) {
                Some(e) if e.live_last_share_unix_ms() > *at => {
                    woke.push((id.clone(), e.live_last_share_unix_ms() - *at));
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
        let now = Instant::now();
        for (id, after_ms) in woke {
            let Some(entry) = self.registry.rigs.get(&id) else {
                continue;
            };
            warn!(rig = %id, after_ms, "shares accepted from a rig counted asleep: counting it as mining");
            self.audit.record(AuditEvent::now(
                "registry",
                "shares-while-asleep",
                format!("{} ({} ms after it was confirmed asleep)", id.0, after_ms),
                Some("counted as drawing again".into()),
            ));
            let info = self.registry.info(entry, now);
            if let Err(e) = self
                .arbiter
                .handle_rig(since_epoch(), info, Observed::Mining)
            {
                warn!(rig = %id, error = %e, side = %e.side(), retry = %e.retry(), "rig not taken by the arbiter");
            }
        }
    }

    /// A rig's management API answered: audited the first time (it holds budget from now).
    pub(super) fn answered(&mut self, rig: &RigId) {
        if self.registry.answered(rig) {
            let at = self
                .registry
                .rigs
                .get(rig)
                .and_then(|e| e.control.as_ref())
                .map(|c| c.describe())
                .unwrap_or_default();
            info!(rig = %rig, api = %at, "rig verified: its management API answered");
            self.audit.record(AuditEvent::now(
                "registry",
                "rig-verified",
                format!("{} ({at})", rig.0),
                None,
            ));
        }
    }

    /// After a reset: a rig not yet confirmed whose firmware now says which it is. Found
    /// asleep, it is pinned first (which also repeats the sleep command, harmless to a
    /// sleeping rig), so the confirmation that follows can never let the plan wake it.
    pub(super) fn settle_after_reset(&mut self, rig: &RigId, observed: Option<Observed>) {
        let Some(unconfirmed) = &mut self.unconfirmed else {
            return;
        };
        if observed.is_none() || !unconfirmed.remove(rig) {
            return;
        }
        if observed == Some(Observed::Asleep) {
            let pin = Operator {
                who: "reset-power-state".to_owned(),
                why: "found asleep after the power state was reset: resume it by hand".to_owned(),
            };
            let command = OperatorCommand::DrainRig { rig: rig.clone() };
            if let Err(e) = self.arbiter.handle_operator(since_epoch(), pin, command) {
                warn!(rig = %rig, error = %e, side = %e.side(), retry = %e.retry(), "could not pin a rig found asleep");
            }
        }
    }

    /// After a reset: rigs not yet confirmed whose shares are being accepted mine.
    pub(super) fn confirm_by_shares(&mut self) {
        let Some(unconfirmed) = &mut self.unconfirmed else {
            return;
        };
        let now_ms = unix_ms();
        let flowing: Vec<RigId> = unconfirmed
            .iter()
            .filter(|id| {
                self.registry.rigs.get(*id).is_some_and(|e| {
                    e.last_share_unix_ms > 0
                        && u128::from(now_ms.saturating_sub(e.last_share_unix_ms))
                            < SHARE_FLOW.as_millis()
                })
            })
            .cloned()
            .collect();
        let now = Instant::now();
        for id in flowing {
            unconfirmed.remove(&id);
            if let Some(entry) = self.registry.rigs.get(&id) {
                let info = self.registry.info(entry, now);
                if let Err(e) = self
                    .arbiter
                    .handle_rig(since_epoch(), info, Observed::Mining)
                {
                    warn!(rig = %id, error = %e, side = %e.side(), retry = %e.retry(), "rig not taken by the arbiter");
                }
            }
        }
    }
}
