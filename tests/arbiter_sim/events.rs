//! The simulated site's events: each one dispatched to the arbiter, the arbiter's outputs carried\nout on the simulated rigs and GPU cluster, and the invariants checked after every step.

use super::*;

impl Sim {
    pub(super) fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Firmware {
                rig,
                seq,
                confirmation,
            } => {
                if self.seq[rig] != seq {
                    return; // superseded by a newer command
                }
                let id = self.ids[rig].clone();
                self.arbiter
                    .handle_confirmation(self.now, &id, confirmation.into())
                    .expect("known");
                // A failed command: the integrator polls the rig's status a minute later and
                // finds it unchanged.
                if confirmation == ConfirmationKey::Failed {
                    let unchanged = if self.last_was_sleep[rig] {
                        ConfirmationKey::Awake
                    } else {
                        ConfirmationKey::Asleep
                    };
                    let ev = Ev::Firmware {
                        rig,
                        seq,
                        confirmation: unchanged,
                    };
                    self.at(Duration::from_secs(60), ev);
                }
            }
            Ev::GpuChange => {
                // A random walk over whole DGX nodes, sometimes jumping to idle or full.
                let nodes = self.gpu_wanted.0 / GPU_NODE_W;
                let nodes = match self.rng.random_range(0..10) {
                    0 => 0,
                    1 => GPU_NODES,
                    _ => {
                        let step = self.rng.random_range(0..=8);
                        if self.rng.random_bool(0.5) {
                            (nodes + step).min(GPU_NODES)
                        } else {
                            nodes.saturating_sub(step)
                        }
                    }
                };
                let wanted = Watts(nodes * GPU_NODE_W);
                // Grant latency is measured outside curtailments (during one the GPU side may
                // not get what it wants at all).
                let curtailed = self.arbiter.snapshot().curtailment.is_some();
                if wanted > self.gpu_wanted && !curtailed {
                    self.gpu_want_since = Some(self.now);
                }
                self.gpu_wanted = wanted;
                self.report_gpu();
                let next = self.exp(Duration::from_secs(20 * 60));
                self.at(next, Ev::GpuChange);
            }
            Ev::GpuReport => self.report_gpu(),
            Ev::GridEvent => {
                self.curtail_id += 1;
                self.figures.curtailments += 1;
                self.gpu_want_since = None;
                let cap = Watts::from_kw(self.rng.random_range(250.0..950.0));
                let duration = self.secs(10 * 60, 120 * 60);
                let until = Some(self.now + duration);
                let c = Curtailment {
                    cap,
                    until,
                    source: "grid".into(),
                };
                let before = self.arbiter.snapshot();
                if self.shedding.take().is_some() {
                    self.figures.shed95_unfinished += 1;
                }
                self.arbiter.handle_curtailment(self.now, c);
                let budget = self.arbiter.snapshot().budget;
                let load = before.mining + before.gpu_granted;
                self.shedding_full = None;
                if load > budget {
                    self.shedding = Some((self.now, load - budget, budget));
                    self.shedding_full = Some((self.now, budget));
                }
                if self.rng.random_bool(0.3) {
                    let early = duration.mul_f64(self.rng.random_range(0.2..0.9));
                    self.at(
                        early,
                        Ev::GridClear {
                            id: self.curtail_id,
                        },
                    );
                }
                let next = self.exp(Duration::from_secs(2 * 3600));
                self.at(next, Ev::GridEvent);
            }
            Ev::GridClear { id } => {
                if id == self.curtail_id {
                    if self.shedding.take().is_some() {
                        self.figures.shed95_unfinished += 1;
                    }
                    self.shedding_full = None;
                    self.arbiter.handle_curtailment_cleared(self.now);
                }
            }
        }
    }

    /// The GPU scheduler runs what its budget allows.
    pub(super) fn report_gpu(&mut self) {
        let in_use = self.gpu_wanted.min(self.arbiter.gpu_granted());
        let demand = GpuDemand {
            wanted: self.gpu_wanted,
            in_use,
        };
        self.arbiter.handle_gpu_demand(self.now, demand);
    }

    /// Carries out the arbiter's actions (scheduling firmware answers), then checks the
    /// invariants.
    pub(super) fn drain_outputs(&mut self, grant_before: Watts) {
        self.figures.inputs += 1;
        let mut woke = false;
        let mut asked_shed = false;
        let mut grant_changed = false;
        while let Some(action) = self.arbiter.poll_action() {
            match action {
                Action::Sleep { rig, .. } => {
                    self.figures.sleeps += 1;
                    self.command(&rig, true);
                }
                Action::Wake { rig, .. } => {
                    self.figures.wakes += 1;
                    woke = true;
                    self.wake_times.push_back(self.now);
                    self.command(&rig, false);
                }
                Action::SetGpuBudget { budget, .. } => {
                    self.figures.gpu_budget_changes += 1;
                    self.figures.max_gpu_granted = self.figures.max_gpu_granted.max(budget);
                    grant_changed = true;
                }
                Action::AskGpuShed { .. } => {
                    self.figures.gpu_shed_requests += 1;
                    asked_shed = true;
                }
                Action::Escalate { rig, state, .. } => {
                    self.figures.escalations += 1;
                    // The integrator power-cycles an unconfirmed sleep through the PDU; half
                    // the time that works and is confirmed (outlet current) 10 s later.
                    if state == RigState::Draining && self.fw.random_bool(0.5) {
                        if let Some(i) = self.ids.iter().position(|id| *id == rig) {
                            let seq = self.seq[i];
                            let confirmation = ConfirmationKey::Asleep;
                            self.at(
                                Duration::from_secs(10),
                                Ev::Firmware {
                                    rig: i,
                                    seq,
                                    confirmation,
                                },
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        while self.arbiter.poll_event().is_some() {}
        if grant_changed {
            // Jobs start/stop a few seconds after the budget moves (Slurm: ~3 s).
            let delay = self.fw_secs(1, 4);
            self.at(delay, Ev::GpuReport);
        }
        self.check(grant_before, woke, asked_shed);
    }

    /// Schedules the firmware's answer to a sleep (`true`) or wake command.
    pub(super) fn command(&mut self, rig: &RigId, sleep: bool) {
        let Some(i) = self.ids.iter().position(|id| id == rig) else {
            return;
        };
        self.seq[i] += 1;
        let reversed = self.last_was_sleep[i] != sleep;
        if reversed && self.last_command_at[i].is_some_and(|t| self.now < t + FLAP_WINDOW) {
            if sleep {
                self.figures.redrains += 1;
            } else {
                self.figures.rewakes += 1;
            }
        }
        self.last_command_at[i] = Some(self.now);
        self.last_was_sleep[i] = sleep;
        let seq = self.seq[i];
        let roll: f64 = self.fw.random_range(0.0..1.0);
        let sc = self.scenario;
        if self.silent[i] || roll < sc.silent_commands {
            self.figures.never_confirmed += 1;
            return; // never answers
        }
        let (delay, confirmation) = if roll < sc.silent_commands + sc.failed_commands {
            (self.fw_secs(1, 10), ConfirmationKey::Failed)
        } else if sleep && sc.field_delays {
            // The firmware command (LuxOS logon/curtail/logoff, 1-3 s) and the boards
            // stopping (0-7 s), then `quiet_secs` (10 s) without a share; sometimes a slow
            // API or retries; rarely another tool holds the LuxOS session (it expires
            // after 1 min idle).
            let tail: f64 = self.fw.random_range(0.0..1.0);
            let delay = if tail < 0.90 {
                self.fw_secs(11, 20)
            } else if tail < 0.98 {
                self.fw_secs(20, 45)
            } else {
                self.fw_secs(45, 75)
            };
            (delay, ConfirmationKey::Asleep)
        } else if sleep {
            (self.fw_secs(2, 60), ConfirmationKey::Asleep)
        } else {
            // A wake ramps like a reboot.
            (self.fw_secs(60, 300), ConfirmationKey::Awake)
        };
        self.at(
            delay,
            Ev::Firmware {
                rig: i,
                seq,
                confirmation,
            },
        );
    }

    pub(super) fn check(&mut self, grant_before: Watts, woke: bool, asked_shed: bool) {
        let snap = self.arbiter.snapshot();
        let grant = snap.gpu_granted;
        let load = snap.mining + grant;
        let f = &mut self.figures;
        if woke && load > snap.budget {
            f.cap_violations += 1;
        }
        if grant > grant_before && load > snap.budget {
            f.cap_violations += 1;
            f.bbm_violations += 1;
        }
        let sheddable: Watts = self
            .arbiter
            .rigs()
            .filter(|r| matches!(r.state, RigState::Mining | RigState::Waking))
            .map(|r| r.info.power)
            .sum();
        if asked_shed && sheddable > Watts::ZERO {
            f.shed_order_violations += 1;
        }
        let window = self.settings.resume_interval;
        while self
            .wake_times
            .front()
            .is_some_and(|&t| t + window <= self.now)
        {
            self.wake_times.pop_front();
        }
        if self.wake_times.len() > self.settings.resume_batch as usize {
            f.stagger_violations += 1;
        }
        for r in self.arbiter.rigs() {
            if r.deadline.is_some_and(|d| d <= self.now) && !r.escalated {
                f.escalation_violations += 1;
            }
        }
        if let Some((since, need, budget)) = self.shedding {
            // Budget changed under us (a new curtailment) is handled where it happens.
            if budget == snap.budget && load <= budget + Watts(need.0 / 20) {
                f.shed95.push(self.now - since);
                self.shedding = None;
            }
        }
        if let Some((since, budget)) = self.shedding_full {
            if budget == snap.budget && load <= budget {
                f.shed100.push(self.now - since);
                self.shedding_full = None;
            }
        }
        match (load > snap.budget, self.over_since) {
            (true, None) => self.over_since = Some(self.now),
            (false, Some(since)) => {
                f.shed_latencies.push(self.now - since);
                self.over_since = None;
            }
            (false, None) => {
                let u = load.0 as f64 / snap.budget.0.max(1) as f64;
                f.max_utilisation = f.max_utilisation.max(u);
            }
            (true, Some(_)) => {}
        }
        if let Some(since) = self.gpu_want_since {
            if snap.gpu_pending == Watts::ZERO
                && snap.gpu_granted >= self.gpu_wanted.min(snap.budget)
            {
                f.grant_latencies.push(self.now - since);
                self.gpu_want_since = None;
            }
        }
    }
}
