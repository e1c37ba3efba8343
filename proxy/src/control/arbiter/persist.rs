//! Restart safety: what the arbiter persists (serde) and how it is rebuilt from it.
//!
//! Kept: every rig (figures, state, pin), the GPU grant and demand, the curtailment. Not kept:
//! queued actions and events (the integrator carries out and logs those before persisting),
//! confirmation deadlines (a command in flight across a restart has an unknown outcome).
//!
//! On restore, rigs that were draining, waking, faulty or unknown come back `Unknown`: they
//! count as drawing and are escalated if not confirmed within the deadline. Asleep rigs stay
//! asleep with their pins. The first automatic wake waits one `resume_interval`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::outputs::Event;
use super::types::{
    ArbiterError, Curtailment, GpuDemand, Operator, RigInfo, RigState, Settings, Watts,
};
use super::{Arbiter, MAX_RIGS, Rig};

/// The current format version.
const VERSION: u32 = 1;

/// The arbiter's durable state. Serialize it (e.g. JSON) after every batch of actions has been
/// carried out; feed it to [`Arbiter::restore`] at startup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedState {
    version: u32,
    saved_at: Duration,
    rigs: Vec<PersistedRig>,
    granted: Watts,
    demand: GpuDemand,
    curtailment: Option<Curtailment>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PersistedRig {
    info: RigInfo,
    state: RigState,
    pin: Option<Operator>,
}

impl PersistedState {
    /// What of `arbiter` survives a restart, stamped with its `now`.
    pub(super) fn capture(arbiter: &Arbiter) -> PersistedState {
        PersistedState {
            version: VERSION,
            saved_at: arbiter.now,
            rigs: arbiter
                .rigs
                .values()
                .map(|r| PersistedRig {
                    info: r.info.clone(),
                    state: r.state,
                    pin: r.pin.clone(),
                })
                .collect(),
            granted: arbiter.granted,
            demand: arbiter.demand,
            curtailment: arbiter.curtailment.clone(),
        }
    }

    /// The GPU grant that was in force.
    pub fn granted(&self) -> Watts {
        self.granted
    }

    /// How many rigs it holds.
    pub fn rig_count(&self) -> usize {
        self.rigs.len()
    }
}

/// Rebuilds an arbiter from `state` under `settings` (see the module doc of the arbiter, rule 6).
pub(super) fn restore(
    settings: Settings,
    state: PersistedState,
    now: Duration,
) -> Result<Arbiter, ArbiterError> {
    if state.version != VERSION {
        return Err(ArbiterError::UnsupportedVersion(state.version));
    }
    if state.rigs.len() > MAX_RIGS {
        return Err(ArbiterError::TooManyRigs(MAX_RIGS));
    }
    let mut arbiter = Arbiter::new(settings, now)?;
    // The command in flight may have been a wake: give it the longer of the two deadlines.
    let deadline = now.saturating_add(
        arbiter
            .settings
            .confirm_deadline
            .max(arbiter.settings.wake_deadline),
    );
    for r in state.rigs {
        let (rig_state, rig_deadline) = match r.state {
            RigState::Asleep => (RigState::Asleep, None),
            // Last known mining: still mining unless something (a relay) stopped it, which a
            // confirmation will tell; it counts as drawing either way.
            RigState::Mining => (RigState::Mining, None),
            RigState::Draining | RigState::Waking | RigState::Fault | RigState::Unknown => {
                (RigState::Unknown, Some(deadline))
            }
        };
        let rig = Rig {
            info: r.info,
            state: rig_state,
            pin: r.pin,
            deadline: rig_deadline,
            escalated: false,
            replace_at: None,
            late: false,
        };
        arbiter.rigs.insert(rig.info.id.clone(), rig);
    }
    arbiter.granted = state.granted;
    // The restored grant is applied again at once; until the scheduler says so, assume it.
    arbiter.gpu_held = state.granted;
    arbiter.demand = state.demand;
    arbiter.curtailment = state.curtailment;
    // A full stagger window "just used": no wake before one interval has passed, whatever
    // the plan says, so the integrator can confirm states and demand first.
    for _ in 0..arbiter.settings.resume_batch.min(MAX_RIGS as u32) {
        arbiter.recent_wakes.push_back(now);
    }
    let rigs = arbiter.rigs.len();
    arbiter.event(
        now,
        Event::Restored {
            rigs,
            granted: state.granted,
        },
    );
    arbiter.replan(now);
    Ok(arbiter)
}
