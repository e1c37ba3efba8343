//! A GPU shed carried through: when the arbiter cuts the GPU grant below what the GPU side
//! uses (`Action::AskGpuShed`), the site is over its cap until the scheduler gives the power
//! back. [`ShedTracker`] follows that up, sans-IO (time comes in as `now`, calls go out as
//! [`ShedStep::Send`]): it re-sends the shed with exponential backoff until the GPU side is
//! at or below the grant, or the grant rises so that it no longer needs to be.
//!
//! Invariants:
//! - At most one shed is followed at a time; a new `AskGpuShed` merges into it (its grant is
//!   the new, lower one; it keeps its start, so its deadline does not move away).
//! - At most one call is in flight; a merge during a call sends again as soon as it returns.
//! - "Done" means the scheduler says so: with polled demand (Slurm) a demand report whose
//!   drawing power is at or below the grant; without it (webhook, command hook, admin socket:
//!   the GPU side reports demand through `gpu-request`, which carries no in-use figure) the
//!   scheduler's acknowledgement of the shed call, which hands the duty to shed to it.
//! - Past its deadline a shed is escalated once ([`ShedStep::Overdue`]) and retried on at
//!   the longest backoff: the site stays over its cap until the GPU side sheds.

use std::time::Duration;

use tokio::time::Instant;

use crate::control::arbiter::Watts;

/// The first wait after a failed attempt; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the controller must do or record.
#[derive(Debug, Clone, PartialEq)]
pub enum ShedStep {
    /// Call the scheduler's shed for `kw` (attempt `attempt`, from 1).
    Send {
        /// Power to give back, in kW.
        kw: f64,
        /// Why the arbiter asked (audit log).
        reason: String,
        /// This call's number, from 1.
        attempt: u32,
    },
    /// The shed took effect.
    Done {
        /// Shed calls it took.
        attempts: u32,
        /// Time from the arbiter's ask to the shed taking effect.
        took: Duration,
        /// How we know (`"scheduler reports in use <= grant"`, `"acknowledged"`).
        how: &'static str,
    },
    /// The grant rose to what the GPU side uses: nothing left to shed.
    NoLongerNeeded {
        /// The grant now.
        grant: Watts,
        /// Shed calls made before it was no longer needed.
        attempts: u32,
    },
    /// The shed is past its deadline (recorded once per shed).
    Overdue {
        /// Power still to shed.
        outstanding: Watts,
        /// What the GPU side reports in use.
        in_use: Watts,
        /// The grant it must get under.
        grant: Watts,
        /// Shed calls made so far.
        attempts: u32,
        /// Time since the arbiter asked.
        age: Duration,
        /// The last call's error, if the last call failed.
        last_error: Option<String>,
    },
}

/// One shed in progress.
#[derive(Debug, Clone)]
pub struct Shed {
    /// What the GPU side uses: its last report, or (without reports) the grant before the cut.
    pub in_use: Watts,
    /// The grant in force, which it must come down to.
    pub grant: Watts,
    /// Why (the arbiter's reason).
    pub reason: String,
    /// When the first request for it was made.
    pub started: Instant,
    /// Calls made so far.
    pub attempts: u32,
    /// When the next call may go out.
    pub next_try: Instant,
    /// The wait after the next failure.
    backoff: Duration,
    /// A call is out.
    in_flight: bool,
    /// It grew while a call was out: that call's success does not cover it.
    grew_in_flight: bool,
    /// Escalated already.
    pub overdue: bool,
    /// The last call's error.
    pub last_error: Option<String>,
}

impl Shed {
    /// What is still to shed.
    pub fn outstanding(&self) -> Watts {
        self.in_use - self.grant
    }
}

/// What the operator view and metrics show of GPU sheds.
#[derive(Debug, Clone, Default)]
pub struct ShedStatus {
    /// The shed in progress: when it started, and what is still to shed.
    pub current: Option<(Instant, Watts)>,
    /// Sheds escalated since start.
    pub overdue_total: u64,
    /// Shed calls made since start (retries included).
    pub calls_total: u64,
}

/// A GPU draw this little above its reachable grant is rounding (kW figures), not a shed.
pub const OVER_GRANT_SLACK: Watts = Watts(100);

/// Follows GPU sheds up. See the module doc.
#[derive(Debug)]
pub struct ShedTracker {
    deadline: Duration,
    /// After a successful call with polled demand, how long to wait for reports that reflect
    /// it before sending again (re-sending on a stale report would shed more jobs than needed).
    settle: Duration,
    current: Option<Shed>,
    overdue_total: u64,
    calls_total: u64,
}

impl ShedTracker {
    /// A tracker escalating sheds older than `deadline`; `settle` is how long a demand report
    /// takes to reflect a successful shed (two demand polls).
    pub fn new(deadline: Duration, settle: Duration) -> Self {
        Self {
            deadline,
            settle,
            current: None,
            overdue_total: 0,
            calls_total: 0,
        }
    }

    /// The shed in progress.
    pub fn current(&self) -> Option<&Shed> {
        self.current.as_ref()
    }

    /// For the operator view and metrics.
    pub fn status(&self) -> ShedStatus {
        ShedStatus {
            current: self.current.as_ref().map(|s| (s.started, s.outstanding())),
            overdue_total: self.overdue_total,
            calls_total: self.calls_total,
        }
    }

    /// The arbiter cut the grant to `grant` and asks the GPU side to shed `amount`.
    pub fn handle_ask(&mut self, now: Instant, amount: Watts, grant: Watts, reason: String) {
        if amount == Watts::ZERO {
            return;
        }
        // Without a report, the GPU side uses what it was granted before the cut.
        let before = grant + amount;
        match &mut self.current {
            Some(s) => {
                s.in_use = s.in_use.max(before);
                s.grant = grant;
                s.reason = reason;
                s.backoff = FIRST_BACKOFF;
                s.next_try = now;
                s.grew_in_flight = s.in_flight;
            }
            None => {
                self.current = Some(Shed {
                    in_use: before,
                    grant,
                    reason,
                    started: now,
                    attempts: 0,
                    next_try: now,
                    backoff: FIRST_BACKOFF,
                    in_flight: false,
                    grew_in_flight: false,
                    overdue: false,
                    last_error: None,
                });
            }
        }
    }

    /// The grant in force changed (a budget action). A grant at or above what the GPU side
    /// uses ends the shed.
    pub fn handle_grant(&mut self, grant: Watts) -> Option<ShedStep> {
        let s = self.current.as_mut()?;
        s.grant = grant;
        if s.in_use <= grant {
            let attempts = s.attempts;
            self.current = None;
            return Some(ShedStep::NoLongerNeeded { grant, attempts });
        }
        None
    }

    /// The scheduler reports `drawing`, and the most the arbiter can grant is `reachable` (the
    /// grant plus what is pending: it already counts what draining mining will free). With no
    /// shed in progress, a draw beyond that (a restart in the middle of a shed, which is not
    /// persisted; jobs started beyond their budget) starts one for the excess; returns it.
    /// Less than [`OVER_GRANT_SLACK`] over is rounding, not a reason to requeue a job.
    pub fn handle_over_grant(
        &mut self,
        now: Instant,
        drawing: Watts,
        reachable: Watts,
    ) -> Option<Watts> {
        if self.current.is_some() {
            return None;
        }
        let excess = drawing.saturating_sub(reachable);
        if excess <= OVER_GRANT_SLACK {
            return None;
        }
        self.handle_ask(now, excess, reachable, "over-grant".into());
        Some(excess)
    }

    /// The scheduler reported what its running work draws (polled demand).
    pub fn handle_in_use(&mut self, now: Instant, drawing: Watts) -> Option<ShedStep> {
        let s = self.current.as_mut()?;
        s.in_use = drawing;
        if drawing <= s.grant {
            return self.finish(now, "the scheduler reports in use <= grant");
        }
        None
    }

    /// A shed call returned. `polled` says whether the scheduler reports its own demand (then
    /// only a report ends the shed; otherwise its acknowledgement does).
    pub fn handle_result(
        &mut self,
        now: Instant,
        result: Result<(), String>,
        polled: bool,
    ) -> Option<ShedStep> {
        let s = self.current.as_mut()?;
        s.in_flight = false;
        let grew = std::mem::take(&mut s.grew_in_flight);
        match result {
            Ok(()) if grew => s.next_try = now,
            Ok(()) if !polled => {
                return self.finish(now, "the scheduler acknowledged the shed");
            }
            Ok(()) => {
                s.last_error = None;
                s.next_try = now + s.backoff.max(self.settle);
                s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                s.last_error = Some(e);
                s.next_try = if grew { now } else { now + s.backoff };
                s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
            }
        }
        None
    }

    /// What is due at `now`: an escalation, and/or the next call.
    pub fn poll(&mut self, now: Instant) -> Vec<ShedStep> {
        let mut out = Vec::new();
        let Some(s) = self.current.as_mut() else {
            return out;
        };
        let age = now.saturating_duration_since(s.started);
        if !s.overdue && age >= self.deadline {
            s.overdue = true;
            // From now on, retry at the longest backoff: the person paged does the rest.
            s.backoff = MAX_BACKOFF;
            self.overdue_total = self.overdue_total.saturating_add(1);
            out.push(ShedStep::Overdue {
                outstanding: s.outstanding(),
                in_use: s.in_use,
                grant: s.grant,
                attempts: s.attempts,
                age,
                last_error: s.last_error.clone(),
            });
        }
        if !s.in_flight && now >= s.next_try {
            s.in_flight = true;
            s.attempts = s.attempts.saturating_add(1);
            self.calls_total = self.calls_total.saturating_add(1);
            out.push(ShedStep::Send {
                kw: s.outstanding().kw(),
                reason: s.reason.clone(),
                attempt: s.attempts,
            });
        }
        out
    }

    /// When [`Self::poll`] next has something to do (the controller's timer).
    pub fn poll_at(&self) -> Option<Instant> {
        let s = self.current.as_ref()?;
        let escalate = (!s.overdue).then(|| s.started + self.deadline);
        let send = (!s.in_flight).then_some(s.next_try);
        match (escalate, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn finish(&mut self, now: Instant, how: &'static str) -> Option<ShedStep> {
        let s = self.current.take()?;
        Some(ShedStep::Done {
            attempts: s.attempts,
            took: now.saturating_duration_since(s.started),
            how,
        })
    }
}

#[cfg(test)]
mod tests;
