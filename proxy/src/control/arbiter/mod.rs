//! The power arbiter: a sans-IO state machine deciding which rigs sleep or wake and how much
//! power the GPU cluster is granted, under one site cap.
//!
//! No sockets, no clock, no RNG (quinn-proto style): every input is a `handle_*` call taking
//! `now` (a [`Duration`] on a clock the caller chooses; the integrator passes wall-clock time
//! since the Unix epoch so persisted deadlines stay meaningful across a restart); outputs are
//! [`Action`]s ([`Arbiter::poll_action`]) and [`AuditEvent`]s ([`Arbiter::poll_event`]); the
//! caller calls [`Arbiter::handle_timeout`] at [`Arbiter::poll_timeout`]. The caller must poll
//! actions after every input. `now` going backwards is treated as the last `now` seen.
//!
//! # Invariants (enforced by construction, checked by the tests)
//! Let *budget* = effective cap − headroom, where the effective cap is the site cap or the
//! curtailment cap if lower; *drawing* = the power of every rig **not confirmed asleep**
//! (mining, draining, waking, fault and unknown all count); *grant* = the GPU budget in force.
//! 1. The arbiter never raises `drawing + grant` above the budget: a `Wake` is sent only if the
//!    rig's power fits (`drawing + grant + rig ≤ budget`), and the grant grows only if
//!    `drawing + new grant ≤ budget`. Only outside events (a cap cut, a rig waking or growing
//!    on its own, a rig appearing) can put the site over, and then the arbiter sheds at once.
//! 2. Break before make: since draining rigs count as drawing, the grant grows only into power
//!    freed by rigs *confirmed* asleep (or budget nobody uses). The other way too: a cut grant
//!    frees power for mining only once the scheduler has applied it
//!    ([`Arbiter::handle_gpu_budget_applied`]); until then a wake counts the GPU side at the
//!    higher of the grant and the budget it may still hold. When the budget falls, mining
//!    is shed first (`Sleep` to enough rigs); the grant is cut at once, with `AskGpuShed`,
//!    only by what the rigs the arbiter cannot shed (waking or unconfirmed ones excluded from
//!    draining, fault, unknown, late, escalated) leave uncovered.
//! 3. Drain order: rigs a firmware sleeps first, then rigs only a PDU cut stops (the last
//!    resort), rigs nothing controls last ([`ControlPath`]); within each, lowest group
//!    priority first, then highest J/TH (least efficient), then highest power, then id; a
//!    rig counted at 0 W frees nothing and is never drained automatically. Only as many
//!    rigs as needed (the last one may overshoot by less than its own power); when the site
//!    is over its budget (a cap cut, a rig appearing), as many as cover the shortfall × (1 +
//!    `drain_margin`), so a few rigs that never answer leave none of it uncovered. Resume
//!    is the reverse order and needs `hysteresis` spare on top of the rig, so a rig is not
//!    drained again by a small demand rise right after it woke. Drain and resume measure the same expected draw (sheddable + fixed, late rigs
//!    included), so the margin given back by a resume is never drained again by itself.
//! 4. Resume is staggered: at most `resume_batch` `Wake`s in any `resume_interval`, and only
//!    while the budget left after what the GPU side is owed covers them. GPU demand falling
//!    shrinks the grant at once, which frees power back to mining.
//! 5. A rig that never confirms counts as drawing forever (until confirmed) and is escalated
//!    once (`Escalate`) after `confirm_deadline`; a failed command escalates at once. From
//!    then on it is treated as a load the arbiter cannot shed, so others are drained instead.
//!    A sleep not confirmed within `replace_after` (shorter) makes the rig *late*: planned
//!    the same way (a replacement is drained at once, or the GPU side is cut if no rig is
//!    left to drain), still counted as drawing, and still escalated at `confirm_deadline`.
//!    `poll_timeout` includes the points where draining rigs turn late.
//!    Escalated is not given up: a rig in fault, or escalated with its command unconfirmed,
//!    whose firmware answers a status poll that it mines ([`Arbiter::status_news`]) is
//!    confirmed mining, so the plan commands it again (a pinned rig at once, any rig while
//!    the site is over). Without that, firmware that stalled once leaves the site over its
//!    budget until a person acts, though the rig answers again.
//! 6. Restart safety: [`Arbiter::persist`]/[`Arbiter::restore`] keep rig states, pins, the
//!    grant, the demand and the curtailment. Rigs with a command in flight come back
//!    `Unknown` (drawing). The restored plan is the pre-restart plan, so nothing wakes unless
//!    it calls for it, and the first wake waits one `resume_interval` (time for the integrator
//!    to confirm rig states and GPU demand). Pinned rigs are never woken by the arbiter, and a
//!    rig found asleep without a sleep command from us (a new rig observed asleep, a mining rig
//!    confirmed asleep: relay trip, another tool) is pinned.
//!
//! The target grant is `min(max(wanted, in_use), budget − unsheddable)`: the GPU side has
//! priority over mining (mining is the interruptible load).

mod operator;
mod outputs;
mod persist;
mod plan;
mod types;
mod view;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use outputs::{Action, AuditEvent, Event, Reason};
pub use persist::PersistedState;
pub use types::{
    ArbiterError, Confirmation, ControlPath, Curtailment, GpuDemand, GroupId, Observed, Operator,
    OperatorCommand, RigId, RigInfo, RigState, Settings, Watts,
};
pub use view::{PowerSnapshot, RigCounts, RigView};

/// Most rigs the inventory holds (bounds memory and the cost of a replan).
pub const MAX_RIGS: usize = 100_000;
/// Most audit events kept unpolled; older ones are dropped and counted (`EventsDropped`).
pub const MAX_PENDING_EVENTS: usize = 65_536;

/// One rig's record.
#[derive(Debug, Clone)]
pub(crate) struct Rig {
    pub(crate) info: RigInfo,
    pub(crate) state: RigState,
    pub(crate) pin: Option<Operator>,
    /// When the pending command (or the unknown state) times out.
    pub(crate) deadline: Option<Duration>,
    /// Escalated for the current command already.
    pub(crate) escalated: bool,
    /// While draining: when it turns late (`replace_after` after the sleep), until then.
    pub(crate) replace_at: Option<Duration>,
    /// Draining and past `replace_after`: planned as a load a sleep cannot shed, so a
    /// replacement is drained. Not persisted (a restored rig is `Unknown`, fixed anyway).
    pub(crate) late: bool,
}

impl Rig {
    /// Counts as drawing its power.
    pub(crate) fn drawing(&self) -> bool {
        self.state != RigState::Asleep
    }

    /// Draining, not escalated yet, but past `replace_after`: a replacement is drained.
    pub(crate) fn is_late(&self) -> bool {
        self.late && self.state == RigState::Draining && !self.escalated
    }
}

/// The power arbiter. See the module doc for its rules.
#[derive(Debug)]
pub struct Arbiter {
    pub(crate) settings: Settings,
    pub(crate) rigs: BTreeMap<RigId, Rig>,
    pub(crate) granted: Watts,
    /// The most the GPU side may still hold: the budget the scheduler last applied (or, after
    /// a call that failed, the higher of that and the one attempted). Not persisted.
    pub(crate) gpu_held: Watts,
    pub(crate) demand: GpuDemand,
    pub(crate) curtailment: Option<Curtailment>,
    /// Times of the recent `Wake`s (at most `resume_batch`), for the stagger window.
    pub(crate) recent_wakes: VecDeque<Duration>,
    /// When a throttled resume may go on (set while rigs wait for a stagger slot).
    pub(crate) resume_at: Option<Duration>,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) events: VecDeque<AuditEvent>,
    pub(crate) dropped_events: u64,
    pub(crate) now: Duration,
}

impl Arbiter {
    /// A new arbiter with no rigs, no GPU demand and no grant.
    pub fn new(settings: Settings, now: Duration) -> Result<Arbiter, ArbiterError> {
        settings.validate()?;
        Ok(Arbiter {
            settings,
            rigs: BTreeMap::new(),
            granted: Watts::ZERO,
            gpu_held: Watts::ZERO,
            demand: GpuDemand::default(),
            curtailment: None,
            recent_wakes: VecDeque::new(),
            resume_at: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            dropped_events: 0,
            now,
        })
    }

    // ---- getters ------------------------------------------------------------------------

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The GPU grant in force.
    pub fn gpu_granted(&self) -> Watts {
        self.granted
    }

    /// One rig.
    pub fn rig(&self, id: &RigId) -> Option<RigView> {
        self.rigs.get(id).map(view)
    }

    /// All rigs, by id.
    pub fn rigs(&self) -> impl Iterator<Item = RigView> + '_ {
        self.rigs.values().map(view)
    }

    /// What a status poll's answer about `rig` tells the plan: `Some` when the firmware's
    /// settled state is news to apply with [`Arbiter::handle_rig`], `None` when it is not (a
    /// rig the arbiter does not know, a state it already has, or a command in flight whose
    /// deadline has not passed: a draining rig may still report mining for a moment).
    ///
    /// Mining is news for a rig counted asleep or unknown, and for one the arbiter gave up on
    /// (fault, or escalated while draining or waking): its firmware answers again and the
    /// rig draws, so it is confirmed mining and the plan may command it again (rule 5).
    /// Asleep is news only for a rig counted mining or unknown: a sleep that failed or was
    /// never confirmed is confirmed by the controller's quiet check (shares stopped too),
    /// never by the firmware's word alone.
    pub fn status_news(&self, rig: &RigId, reported: Observed) -> Option<Observed> {
        let rig = self.rigs.get(rig)?;
        let news = match (reported, rig.state) {
            (Observed::Asleep, RigState::Mining | RigState::Unknown) => true,
            (Observed::Mining, RigState::Asleep | RigState::Unknown | RigState::Fault) => true,
            (Observed::Mining, RigState::Draining | RigState::Waking) => rig.escalated,
            _ => false,
        };
        news.then_some(reported)
    }

    /// The power picture for operators.
    pub fn snapshot(&self) -> PowerSnapshot {
        let mut counts = RigCounts::default();
        let (mut mining, mut draining, mut asleep) = (Watts::ZERO, Watts::ZERO, Watts::ZERO);
        for rig in self.rigs.values() {
            match rig.state {
                RigState::Mining => counts.mining += 1,
                RigState::Draining => {
                    counts.draining += 1;
                    draining = draining + rig.info.power;
                }
                RigState::Asleep => counts.asleep += 1,
                RigState::Waking => counts.waking += 1,
                RigState::Fault => counts.fault += 1,
                RigState::Unknown => counts.unknown += 1,
            }
            if rig.pin.is_some() {
                counts.pinned += 1;
            }
            if rig.escalated {
                counts.escalated += 1;
            }
            if rig.drawing() {
                mining = mining + rig.info.power;
            } else {
                asleep = asleep + rig.info.power;
            }
        }
        let target = self.target_grant();
        PowerSnapshot {
            at: self.now,
            site_cap: self.settings.site_cap,
            effective_cap: self.effective_cap(),
            headroom: self.settings.headroom,
            budget: self.budget(),
            mining,
            draining,
            asleep,
            gpu_granted: self.granted,
            gpu_wanted: self.demand.wanted,
            gpu_in_use: self.demand.in_use,
            gpu_pending: target - self.granted,
            curtailment: self.curtailment.clone(),
            rigs: counts,
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next audit event (log it durably).
    pub fn poll_event(&mut self) -> Option<AuditEvent> {
        if self.dropped_events > 0 {
            let count = std::mem::take(&mut self.dropped_events);
            return Some(AuditEvent {
                at: self.now,
                event: Event::EventsDropped { count },
            });
        }
        self.events.pop_front()
    }

    /// When [`Arbiter::handle_timeout`] must be called next (a confirmation deadline, a
    /// draining rig becoming late, the end of a curtailment, a stagger slot), if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let deadlines = self
            .rigs
            .values()
            .filter(|r| !r.escalated)
            .filter_map(|r| r.deadline);
        let replace = self
            .rigs
            .values()
            .filter(|r| r.state == RigState::Draining && !r.escalated)
            .filter_map(|r| r.replace_at);
        let until = self.curtailment.as_ref().and_then(|c| c.until);
        deadlines
            .chain(replace)
            .chain(until)
            .chain(self.resume_at)
            .min()
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Time passed: escalates overdue rigs, ends a curtailment whose time is up, goes on with
    /// a staggered resume.
    pub fn handle_timeout(&mut self, now: Duration) {
        let now = self.tick(now);
        self.replan(now);
    }

    /// A rig appeared (or its figures changed: same id). A new rig starts in the observed
    /// state; for a known rig, an `Observed::Mining`/`Asleep` counts as a confirmation and
    /// `Unknown` keeps its state. Only its figures are updated otherwise.
    pub fn handle_rig(
        &mut self,
        now: Duration,
        info: RigInfo,
        observed: Observed,
    ) -> Result<(), ArbiterError> {
        let now = self.tick(now);
        let id = info.id.clone();
        if let Some(rig) = self.rigs.get_mut(&id) {
            rig.info = info;
            match observed {
                Observed::Mining => self.apply_confirmation(now, &id, Confirmation::Awake),
                Observed::Asleep => self.apply_confirmation(now, &id, Confirmation::Asleep),
                Observed::Unknown => {}
            }
        } else {
            if self.rigs.len() >= MAX_RIGS {
                return Err(ArbiterError::TooManyRigs(MAX_RIGS));
            }
            let (state, deadline, pin) = match observed {
                Observed::Mining => (RigState::Mining, None, None),
                // Not put to sleep by us: never re-energise it on our own.
                Observed::Asleep => (RigState::Asleep, None, Some(found_asleep_pin())),
                Observed::Unknown => (
                    RigState::Unknown,
                    Some(now.saturating_add(self.settings.confirm_deadline)),
                    None,
                ),
            };
            self.event(
                now,
                Event::RigAdded {
                    info: info.clone(),
                    state,
                },
            );
            if pin.is_some() {
                self.event(now, Event::PinnedAsleep { rig: id.clone() });
            }
            self.rigs.insert(
                id,
                Rig {
                    info,
                    state,
                    pin,
                    deadline,
                    escalated: false,
                    replace_at: None,
                    late: false,
                },
            );
        }
        self.replan(now);
        Ok(())
    }

    /// A rig left the inventory for good (decommissioned, removed from the config): its power
    /// no longer counts. Not for a mere Stratum disconnect: a disconnected miner may still
    /// draw power (it fails over to a backup pool).
    pub fn handle_rig_removed(&mut self, now: Duration, rig: &RigId) -> Result<(), ArbiterError> {
        let now = self.tick(now);
        if self.rigs.remove(rig).is_none() {
            return Err(ArbiterError::UnknownRig(rig.clone()));
        }
        self.event(now, Event::RigRemoved { rig: rig.clone() });
        self.replan(now);
        Ok(())
    }

    /// The firmware side confirmed a rig's state (or reported its command failed).
    pub fn handle_confirmation(
        &mut self,
        now: Duration,
        rig: &RigId,
        confirmation: Confirmation,
    ) -> Result<(), ArbiterError> {
        let now = self.tick(now);
        if !self.rigs.contains_key(rig) {
            return Err(ArbiterError::UnknownRig(rig.clone()));
        }
        self.apply_confirmation(now, rig, confirmation);
        self.replan(now);
        Ok(())
    }

    /// The scheduler holds this budget now (applied; or, after a call that failed, the most it
    /// may hold). Wakes wait until it is within what the plan leaves them.
    pub fn handle_gpu_budget_applied(&mut self, now: Duration, held: Watts) {
        let now = self.tick(now);
        self.gpu_held = held;
        self.replan(now);
    }

    /// What the GPU side may be using: the higher of the grant and the budget it may hold.
    pub(crate) fn gpu_side(&self) -> Watts {
        std::cmp::max(self.granted, self.gpu_held)
    }

    /// The GPU side's demand changed.
    pub fn handle_gpu_demand(&mut self, now: Duration, demand: GpuDemand) {
        let now = self.tick(now);
        if demand != self.demand {
            self.demand = demand;
            self.event(now, Event::GpuDemand { demand });
        }
        self.replan(now);
    }

    /// A grid curtailment starts (or replaces the one in force).
    pub fn handle_curtailment(&mut self, now: Duration, curtailment: Curtailment) {
        let now = self.tick(now);
        self.event(
            now,
            Event::CurtailmentSet {
                curtailment: curtailment.clone(),
            },
        );
        self.curtailment = Some(curtailment);
        self.replan(now);
    }

    /// The curtailment is cleared early (no-op without one).
    pub fn handle_curtailment_cleared(&mut self, now: Duration) {
        let now = self.tick(now);
        if self.curtailment.take().is_some() {
            self.event(now, Event::CurtailmentEnded { early: true });
        }
        self.replan(now);
    }

    /// New settings (cap, headroom, stagger, deadline, hysteresis).
    pub fn handle_settings(
        &mut self,
        now: Duration,
        settings: Settings,
    ) -> Result<(), ArbiterError> {
        let now = self.tick(now);
        settings.validate()?;
        self.event(
            now,
            Event::SettingsChanged {
                settings: settings.clone(),
            },
        );
        self.settings = settings;
        self.replan(now);
        Ok(())
    }

    // ---- persistence --------------------------------------------------------------------

    /// The state to persist (serde) so a restarted proxy resumes the same plan.
    pub fn persist(&self) -> PersistedState {
        PersistedState::capture(self)
    }

    /// Rebuilds an arbiter from a persisted state (see the module doc, rule 6).
    pub fn restore(
        settings: Settings,
        state: PersistedState,
        now: Duration,
    ) -> Result<Arbiter, ArbiterError> {
        persist::restore(settings, state, now)
    }

    // ---- internals ----------------------------------------------------------------------

    /// Monotonic `now`.
    pub(crate) fn tick(&mut self, now: Duration) -> Duration {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    pub(crate) fn event(&mut self, at: Duration, event: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
            self.dropped_events += 1;
        }
        self.events.push_back(AuditEvent { at, event });
    }

    pub(crate) fn action(&mut self, at: Duration, action: Action) {
        self.event(
            at,
            Event::Action {
                action: action.clone(),
            },
        );
        self.actions.push_back(action);
    }

    /// Applies a confirmation to a known rig (no replan).
    fn apply_confirmation(&mut self, now: Duration, id: &RigId, confirmation: Confirmation) {
        let Some(rig) = self.rigs.get_mut(id) else {
            return;
        };
        let from = rig.state;
        let mut escalate = false;
        let mut pinned_asleep = false;
        match confirmation {
            Confirmation::Asleep => {
                // A rig we believed hashing fell asleep without our command (relay trip,
                // another tool): pin it, so it is never re-energised on our own. From waking,
                // fault or unknown, our own command history explains it (a wake that did not
                // take, a sleep whose reply was lost, a command in flight across a restart).
                if from == RigState::Mining && rig.pin.is_none() {
                    rig.pin = Some(found_asleep_pin());
                    pinned_asleep = true;
                }
                rig.state = RigState::Asleep;
                rig.deadline = None;
                rig.escalated = false;
                rig.replace_at = None;
                rig.late = false;
            }
            Confirmation::Awake => {
                rig.state = RigState::Mining;
                rig.deadline = None;
                rig.escalated = false;
                rig.replace_at = None;
                rig.late = false;
            }
            Confirmation::CommandFailed => {
                rig.state = RigState::Fault;
                rig.deadline = None;
                rig.replace_at = None;
                rig.late = false;
                escalate = !rig.escalated;
                rig.escalated = true;
            }
        }
        let to = rig.state;
        self.event(
            now,
            Event::Confirmed {
                rig: id.clone(),
                confirmation,
                from,
                to,
            },
        );
        if pinned_asleep {
            self.event(now, Event::PinnedAsleep { rig: id.clone() });
        }
        if escalate {
            let action = Action::Escalate {
                rig: id.clone(),
                state: from,
                reason: Reason::CommandFailed,
            };
            self.action(now, action);
        }
        // A pinned rig confirmed awake (woken by hand or rebooted): the operator still wants it
        // asleep.
        if to == RigState::Mining && self.rigs.get(id).is_some_and(|r| r.pin.is_some()) {
            let reason = match self.rigs.get(id).and_then(|r| r.pin.clone()) {
                Some(op) => Reason::Operator {
                    who: op.who,
                    why: op.why,
                },
                None => Reason::OverCap,
            };
            self.command_sleep(now, id, reason);
        }
    }
}

fn view(rig: &Rig) -> RigView {
    RigView {
        info: rig.info.clone(),
        state: rig.state,
        pinned: rig.pin.clone(),
        escalated: rig.escalated,
        deadline: rig.deadline,
    }
}

fn found_asleep_pin() -> Operator {
    Operator {
        who: "arbiter".to_owned(),
        why: "found asleep without a sleep command from us (relay trip or another tool)".to_owned(),
    }
}
