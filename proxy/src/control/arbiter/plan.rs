//! The power plan: after every input the arbiter recomputes what the site owes the GPU side
//! and what mining may use, then queues the actions that move towards it. One pass, in this
//! order (see the module doc of [`super`] for the rules it enforces):
//! 1. expire: end a curtailment whose time is up, escalate overdue rigs, mark rigs late to
//!    confirm a sleep (past `replace_after`);
//! 2. GPU demand fell: shrink the grant at once to what the GPU side wants/uses;
//! 3. cap cut: if the loads the arbiter cannot shed plus the grant exceed the budget, cut the
//!    grant now and ask the GPU side to shed the difference (mining is covered by step 4);
//! 4. drain: `Sleep` rigs in drain order until the expected draw plus the target grant fits
//!    (over the budget: with `drain_margin` on top); a draining rig past `replace_after` is
//!    expected to keep drawing, so a replacement is drained for it;
//! 5. grow: raise the grant up to the target, but only into power not drawn (break before make);
//! 6. resume: `Wake` asleep, unpinned rigs in resume order while they fit, staggered.

use std::cmp::{Ordering, max, min};
use std::time::Duration;

use super::outputs::{Action, Event, Reason};
use super::types::{RigId, RigState, Watts};
use super::{Arbiter, Rig};

/// Power sums over the rigs, by how the plan can act on them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    /// Every rig not confirmed asleep (invariant 1's "mining").
    pub(crate) drawing: Watts,
    /// Rigs a `Sleep` can shed: mining or waking.
    pub(crate) sheddable: Watts,
    /// Rigs expected to keep drawing that a `Sleep` cannot help with now: fault, unknown,
    /// draining rigs past `replace_after` (late: replaced) or past their deadline
    /// (escalated).
    pub(crate) fixed: Watts,
}

impl Arbiter {
    /// `min(site cap, curtailment cap)`.
    pub(crate) fn effective_cap(&self) -> Watts {
        match &self.curtailment {
            Some(c) => min(self.settings.site_cap, c.cap),
            None => self.settings.site_cap,
        }
    }

    /// Effective cap minus headroom.
    pub(crate) fn budget(&self) -> Watts {
        self.effective_cap() - self.settings.headroom
    }

    /// The site's power by kind, from every rig's state (see [`Totals`]).
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for rig in self.rigs.values() {
            let p = rig.info.power;
            if rig.drawing() {
                t.drawing = t.drawing + p;
            }
            match rig.state {
                RigState::Mining | RigState::Waking => t.sheddable = t.sheddable + p,
                RigState::Fault | RigState::Unknown => t.fixed = t.fixed + p,
                RigState::Draining if rig.escalated => t.fixed = t.fixed + p,
                RigState::Draining if rig.is_late() => t.fixed = t.fixed + p,
                RigState::Draining | RigState::Asleep => {}
            }
        }
        t
    }

    /// What the GPU side is owed: what it wants (never below what it uses), within what the
    /// budget leaves after the loads the arbiter cannot shed.
    pub(crate) fn target_grant(&self) -> Watts {
        let want = max(self.demand.wanted, self.demand.in_use);
        min(want, self.budget() - self.totals().fixed)
    }

    /// The reason for shedding when the site is over its budget.
    fn cap_reason(&self) -> Reason {
        match &self.curtailment {
            Some(c) if c.cap < self.settings.site_cap => Reason::Curtailment,
            _ => Reason::OverCap,
        }
    }

    /// One planning pass (see the module doc).
    pub(crate) fn replan(&mut self, now: Duration) {
        self.expire(now);
        let budget = self.budget();
        let want = max(self.demand.wanted, self.demand.in_use);

        if self.granted > want {
            self.set_grant(now, want, Reason::GpuDemandFell);
        }

        let t = self.totals();
        let room = budget - t.fixed;
        if self.granted > room {
            let shed = self.granted - room;
            let reason = self.cap_reason();
            self.set_grant(now, room, reason.clone());
            self.action(
                now,
                Action::AskGpuShed {
                    amount: shed,
                    reason,
                },
            );
        }

        let target = min(want, room);
        let expected = t.sheddable + t.fixed;
        let need = (expected + target) - budget;
        if need > Watts::ZERO {
            let over = expected + self.granted > budget;
            // Over the budget, a shed must land fast (>= 95% within 60 s): drain a margin so
            // a few rigs that never answer leave nothing uncovered. A GPU demand rise waits
            // for its power anyway, and a margin there would only churn rigs.
            let need = if over {
                with_margin(need, self.settings.drain_margin)
            } else {
                need
            };
            let reason = if over {
                self.cap_reason()
            } else {
                Reason::GpuDemand
            };
            self.drain(now, need, reason);
        }

        if self.granted < target {
            // Sleeps do not change `drawing` (draining rigs still count): break before make.
            let free = budget - t.drawing;
            let grant = min(target, free);
            if grant > self.granted {
                self.set_grant(now, grant, Reason::PowerAvailable);
            }
        }

        self.resume(now, budget, target);
    }

    /// Ends a curtailment whose time is up; escalates rigs past their deadline (once).
    fn expire(&mut self, now: Duration) {
        if self
            .curtailment
            .as_ref()
            .and_then(|c| c.until)
            .is_some_and(|u| u <= now)
        {
            self.curtailment = None;
            self.event(now, Event::CurtailmentEnded { early: false });
        }
        let overdue: Vec<(RigId, RigState)> = self
            .rigs
            .values()
            .filter(|r| !r.escalated && r.deadline.is_some_and(|d| d <= now))
            .map(|r| (r.info.id.clone(), r.state))
            .collect();
        for (id, state) in overdue {
            if let Some(rig) = self.rigs.get_mut(&id) {
                rig.escalated = true;
            }
            let action = Action::Escalate {
                rig: id,
                state,
                reason: Reason::NoConfirmation,
            };
            self.action(now, action);
        }
        // Sleeps not confirmed within `replace_after` (and not escalated just now): from now
        // on planned as loads a sleep cannot shed, so this pass drains replacements.
        let late: Vec<RigId> = self
            .rigs
            .values()
            .filter(|r| r.state == RigState::Draining && !r.escalated)
            .filter(|r| r.replace_at.is_some_and(|t| t <= now))
            .map(|r| r.info.id.clone())
            .collect();
        for id in late {
            if let Some(rig) = self.rigs.get_mut(&id) {
                rig.late = true;
                rig.replace_at = None;
            }
            let after = self.settings.replace_after;
            self.event(now, Event::ConfirmationLate { rig: id, after });
        }
    }

    fn set_grant(&mut self, now: Duration, grant: Watts, reason: Reason) {
        if grant != self.granted {
            self.granted = grant;
            self.action(
                now,
                Action::SetGpuBudget {
                    budget: grant,
                    reason,
                },
            );
        }
    }

    /// `Sleep`s rigs in drain order until at least `need` is being shed.
    fn drain(&mut self, now: Duration, need: Watts, reason: Reason) {
        let mut shed = Watts::ZERO;
        for id in self.drain_order() {
            if shed >= need {
                break;
            }
            if let Some(rig) = self.rigs.get(&id) {
                shed = shed + rig.info.power;
            }
            self.command_sleep(now, &id, reason.clone());
        }
    }

    /// Rigs a `Sleep` can shed (mining, waking), first to drain first: lowest priority, then
    /// highest J/TH (unknown = fleet average), then highest power, then id.
    pub(crate) fn drain_order(&self) -> Vec<RigId> {
        let avg = self.average_efficiency();
        let mut rigs: Vec<&Rig> = self
            .rigs
            .values()
            .filter(|r| matches!(r.state, RigState::Mining | RigState::Waking))
            // A rig counted at 0 W (an unverified worker that has proved no hashrate) frees
            // nothing asleep: commanding it would only fail and escalate (it has no API).
            .filter(|r| r.info.power > Watts::ZERO)
            .collect();
        rigs.sort_by(|a, b| drain_cmp(a, b, avg));
        rigs.into_iter().map(|r| r.info.id.clone()).collect()
    }

    /// Wakes asleep, unpinned rigs in resume order (the reverse of drain order) while each
    /// fits both the budget left after what the GPU side is owed (plus hysteresis) and the
    /// strict cap, at most `resume_batch` per `resume_interval`.
    fn resume(&mut self, now: Duration, budget: Watts, target: Watts) {
        self.resume_at = None;
        let t = self.totals();
        let mut expected = t.sheddable + t.fixed;
        let mut drawing = t.drawing;
        let hysteresis = self.settings.hysteresis;
        // The GPU side counts at what it is owed, or more while a cut is not applied yet.
        let gpu = max(target, self.gpu_side());
        if expected + gpu + hysteresis >= budget {
            return;
        }
        let avg = self.average_efficiency();
        let mut asleep: Vec<&Rig> = self
            .rigs
            .values()
            .filter(|r| r.state == RigState::Asleep && r.pin.is_none())
            .collect();
        if asleep.is_empty() {
            return;
        }
        asleep.sort_by(|a, b| drain_cmp(b, a, avg));
        let order: Vec<(RigId, Watts)> = asleep
            .into_iter()
            .map(|r| (r.info.id.clone(), r.info.power))
            .collect();

        let window = self.settings.resume_interval;
        while self
            .recent_wakes
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            self.recent_wakes.pop_front();
        }
        for (id, power) in order {
            if expected + gpu + power + hysteresis > budget {
                continue;
            }
            if drawing + self.gpu_side() + power > budget {
                continue;
            }
            if self.recent_wakes.len() >= self.settings.resume_batch as usize {
                self.resume_at = self.recent_wakes.front().map(|&t| t.saturating_add(window));
                break;
            }
            self.command_wake(now, &id);
            self.recent_wakes.push_back(now);
            expected = expected + power;
            drawing = drawing + power;
        }
    }

    /// The mean of the known efficiencies (J/TH), for ranking rigs whose efficiency is not
    /// known; 0 when none is known (then all rank equal on efficiency).
    fn average_efficiency(&self) -> f64 {
        let (sum, n) = self
            .rigs
            .values()
            .filter_map(|r| known_efficiency(r.info.efficiency))
            .fold((0.0, 0usize), |(s, n), e| (s + e, n + 1));
        if n == 0 { 0.0 } else { sum / n as f64 }
    }

    /// Tells a rig to sleep: it turns draining, with its confirmation deadline and the point
    /// where it turns late, and the `Sleep` action is queued.
    pub(crate) fn command_sleep(&mut self, now: Duration, id: &RigId, reason: Reason) {
        let deadline = now.saturating_add(self.settings.confirm_deadline);
        let replace_at = now.saturating_add(self.settings.replace_after);
        if let Some(rig) = self.rigs.get_mut(id) {
            rig.state = RigState::Draining;
            rig.deadline = Some(deadline);
            rig.escalated = false;
            rig.replace_at = Some(replace_at);
            rig.late = false;
            self.action(
                now,
                Action::Sleep {
                    rig: id.clone(),
                    reason,
                },
            );
        }
    }

    fn command_wake(&mut self, now: Duration, id: &RigId) {
        let deadline = now.saturating_add(self.settings.wake_deadline);
        if let Some(rig) = self.rigs.get_mut(id) {
            rig.state = RigState::Waking;
            rig.deadline = Some(deadline);
            rig.escalated = false;
            rig.replace_at = None;
            rig.late = false;
            self.action(
                now,
                Action::Wake {
                    rig: id.clone(),
                    reason: Reason::PowerAvailable,
                },
            );
        }
    }
}

/// `need × (1 + margin)`, saturating (`margin` is validated to `[0, 1]`).
fn with_margin(need: Watts, margin: f64) -> Watts {
    // f64 → u64 `as` saturates (and maps NaN to 0), so no overflow here.
    let extra = (need.0 as f64 * margin).round() as u64;
    Watts(need.0.saturating_add(extra))
}

fn known_efficiency(e: Option<f64>) -> Option<f64> {
    e.filter(|e| e.is_finite() && *e >= 0.0)
}

/// Drain order: `Less` = drained first.
fn drain_cmp(a: &Rig, b: &Rig, avg: f64) -> Ordering {
    let ea = known_efficiency(a.info.efficiency).unwrap_or(avg);
    let eb = known_efficiency(b.info.efficiency).unwrap_or(avg);
    // A hard power cut is the last resort, and a rig nothing controls frees nothing: the
    // control path ranks before priority and efficiency.
    a.info
        .path
        .drain_class()
        .cmp(&b.info.path.drain_class())
        .then(a.info.priority.cmp(&b.info.priority))
        .then(eb.total_cmp(&ea))
        .then(b.info.power.cmp(&a.info.power))
        .then(a.info.id.cmp(&b.info.id))
}
