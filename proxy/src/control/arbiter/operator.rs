//! Operator commands: drains that pin rigs (a pinned rig is never woken by the arbiter) and
//! resumes that unpin them, by rig, by group or by an amount of power taken in drain order.

use std::time::Duration;

use super::Arbiter;
use super::outputs::{Event, Reason};
use super::types::{ArbiterError, Operator, OperatorCommand, RigId, RigState, Watts};

impl Arbiter {
    /// A manual operator action. Returns the rigs it pinned or unpinned (already-pinned or
    /// already-unpinned rigs are not listed). Errors change nothing.
    pub fn handle_operator(
        &mut self,
        now: Duration,
        by: Operator,
        command: OperatorCommand,
    ) -> Result<Vec<RigId>, ArbiterError> {
        let now = self.tick(now);
        let rigs = self.operator_rigs(&command)?;
        let reason = Reason::Operator {
            who: by.who.clone(),
            why: by.why.clone(),
        };
        let pin = matches!(
            command,
            OperatorCommand::DrainRig { .. }
                | OperatorCommand::DrainGroup { .. }
                | OperatorCommand::DrainPower { .. }
        );
        let mut touched = Vec::new();
        for id in rigs {
            let Some(rig) = self.rigs.get_mut(&id) else {
                continue;
            };
            if pin {
                if rig.pin.is_none() {
                    rig.pin = Some(by.clone());
                    touched.push(id.clone());
                }
                // Any state but asleep/draining: the operator asked explicitly, so even a rig in
                // fault or unknown state is told to sleep.
                if !matches!(rig.state, RigState::Asleep | RigState::Draining) {
                    self.command_sleep(now, &id, reason.clone());
                }
            } else if rig.pin.take().is_some() {
                touched.push(id);
            }
        }
        self.event(
            now,
            Event::Operator {
                by,
                command,
                rigs: touched.clone(),
            },
        );
        self.replan(now);
        Ok(touched)
    }

    /// The rigs an operator command applies to.
    fn operator_rigs(&self, command: &OperatorCommand) -> Result<Vec<RigId>, ArbiterError> {
        match command {
            OperatorCommand::DrainRig { rig } | OperatorCommand::ResumeRig { rig } => {
                if self.rigs.contains_key(rig) {
                    Ok(vec![rig.clone()])
                } else {
                    Err(ArbiterError::UnknownRig(rig.clone()))
                }
            }
            OperatorCommand::DrainGroup { group } | OperatorCommand::ResumeGroup { group } => {
                let rigs: Vec<RigId> = self
                    .rigs
                    .values()
                    .filter(|r| &r.info.group == group)
                    .map(|r| r.info.id.clone())
                    .collect();
                if rigs.is_empty() {
                    Err(ArbiterError::UnknownGroup(group.clone()))
                } else {
                    Ok(rigs)
                }
            }
            OperatorCommand::DrainPower { amount } => {
                let mut picked = Vec::new();
                let mut sum = Watts::ZERO;
                for id in self.drain_order() {
                    if sum >= *amount {
                        break;
                    }
                    if let Some(rig) = self.rigs.get(&id) {
                        sum = sum + rig.info.power;
                    }
                    picked.push(id);
                }
                Ok(picked)
            }
        }
    }
}
