//! A sleep the firmware did not carry out, escalated to the rig's PDU outlet: the outlet is
//! switched off and confirmed off ([`RigControl::cut`](crate::control::power::ports::RigControl::cut)),
//! then the rig goes through the normal confirmation (no share for `quiet_secs`, connections
//! kicked), so it counts as asleep only once its shares stopped too and the GPU grant grows
//! only then.
//!
//! Only a rig that was told to sleep is ever cut (`Draining`, or `Fault` after a failed
//! sleep): a failed wake or a rig in an unknown state is a person's call, not ours. A failed
//! cut is audited and warned; the rig stays escalated and counted as drawing.

use std::time::Instant;

use tracing::{info, warn};

use super::{CUT_BOUND, Controller};
use crate::control::arbiter::{RigId, RigState};
use crate::control::audit::AuditEvent;
use crate::control::power::ops;
use crate::control::power::ports::PortError;
use crate::error::Classify;

impl Controller {
    /// The arbiter escalated `rig` (its command failed or went unconfirmed) in `state`.
    pub(super) fn escalate(&mut self, rig: RigId, state: RigState) {
        let control = self.registry.rigs.get(&rig).and_then(|e| e.control.clone());
        let was_sleep = match state {
            RigState::Draining => true,
            RigState::Fault => self.told_to_sleep.contains(&rig),
            _ => false,
        };
        let control = match control {
            Some(c) if was_sleep && c.path().has_pdu() => c,
            Some(c) => {
                warn!(rig = %rig, ?state, control = %c.describe(), "rig did not confirm: needs a person");
                return;
            }
            None => {
                warn!(rig = %rig, ?state, "rig did not confirm: needs a person (nothing controls it)");
                return;
            }
        };
        if !self.cutting.insert(rig.clone()) {
            return;
        }
        warn!(rig = %rig, ?state, control = %control.describe(), "rig did not confirm its sleep: cutting its PDU outlet");
        self.audit.record(AuditEvent::now(
            "pdu",
            "pdu-cut",
            format!("{} started ({})", rig.0, control.describe()),
            Some(format!("sleep not confirmed ({state:?})")),
        ));
        self.ops.push(ops::cut(rig, control, CUT_BOUND));
    }

    /// A PDU cut finished.
    pub(super) fn on_cut(&mut self, rig: RigId, result: Result<(), PortError>) {
        self.cutting.remove(&rig);
        match result {
            Ok(()) => {
                self.pdu_cuts.done = self.pdu_cuts.done.saturating_add(1);
                if let Some(e) = self.registry.rigs.get_mut(&rig) {
                    e.cut_at = Some(Instant::now());
                }
                info!(rig = %rig, "PDU outlet cut and confirmed off");
                self.audit.record(AuditEvent::now(
                    "pdu",
                    "pdu-cut",
                    format!("{} done", rig.0),
                    Some("outlet reads off; asleep once no share came for quiet_secs".into()),
                ));
                // Woken or removed meanwhile (an operator resumed it): nothing to confirm.
                let state = self.arbiter.rig(&rig).map(|v| v.state);
                if matches!(state, Some(RigState::Draining | RigState::Fault)) {
                    self.confirm_quiet(&rig);
                }
            }
            Err(e) => {
                self.pdu_cuts.failed = self.pdu_cuts.failed.saturating_add(1);
                warn!(rig = %rig, error = %e, side = %e.side(), retry = %e.retry(), "PDU cut failed: the rig still draws (needs a person)");
                self.audit.record(AuditEvent::now(
                    "pdu",
                    "pdu-cut",
                    format!("{} failed", rig.0),
                    Some(e.to_string()),
                ));
            }
        }
    }
}
