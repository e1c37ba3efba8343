//! Why a power request did not go through ([`PowerError`]) and why power control did not
//! start ([`StartError`]), each with its side and retry hint ([`crate::error::Classify`]).

use std::path::PathBuf;

use crate::control::arbiter::ArbiterError;
use crate::error::{Classify, Retry, Side};

/// Why a request did not go through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PowerError {
    /// The controller has stopped (shutdown).
    #[error("power control is shutting down")]
    Stopped,
    /// The arbiter refused it.
    #[error("{0}")]
    Refused(String),
}

impl Classify for PowerError {
    fn side(&self) -> Side {
        match self {
            PowerError::Stopped => Side::Internal,
            PowerError::Refused(_) => Side::Operator,
        }
    }

    fn retry(&self) -> Retry {
        Retry::No
    }
}

/// Why power control did not start. Each stops `hashshift run` (fail closed: a plan that
/// cannot be read is never silently replaced by a fresh one).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `[power]` without `[admin] state_dir` (the config check refuses it too).
    #[error("[power] needs [admin] state_dir (where the power plan is kept across restarts)")]
    NoStateDir,
    /// The persisted plan exists but cannot be used; it was left as it was.
    #[error(
        "power state {path}: {problem}; the file was left as it was: fix it, or start once with \
         `hashshift run --reset-power-state` to move it aside and start with every rig unknown"
    )]
    BadState {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// `--reset-power-state` could not move the plan aside.
    #[error("power state {path}: cannot move it aside to {aside}: {source}")]
    Reset {
        /// The file.
        path: PathBuf,
        /// Where it was to go.
        aside: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The arbiter refused the settings.
    #[error(transparent)]
    Arbiter(#[from] ArbiterError),
}

/// Each needs an operator (the config, the state file, the state directory's permissions):
/// starting again unchanged fails the same way.
impl Classify for StartError {
    fn side(&self) -> Side {
        match self {
            StartError::Arbiter(e) => e.side(),
            StartError::NoStateDir | StartError::BadState { .. } | StartError::Reset { .. } => {
                Side::Operator
            }
        }
    }

    fn retry(&self) -> Retry {
        Retry::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::arbiter::{GroupId, RigId};

    #[test]
    fn control_errors_name_their_side_and_are_not_retried() {
        let cases: [(&dyn Classify, Side); 9] = [
            (&ArbiterError::UnknownRig(RigId("r".into())), Side::Operator),
            (
                &ArbiterError::UnknownGroup(GroupId("g".into())),
                Side::Operator,
            ),
            (&ArbiterError::InvalidSettings("x"), Side::Operator),
            (&ArbiterError::UnsupportedVersion(9), Side::Operator),
            (&ArbiterError::TooManyRigs(1), Side::Miner),
            (&PowerError::Stopped, Side::Internal),
            (&PowerError::Refused("no".into()), Side::Operator),
            (&StartError::NoStateDir, Side::Operator),
            (
                &StartError::Arbiter(ArbiterError::TooManyRigs(1)),
                Side::Miner,
            ),
        ];
        for (i, (e, side)) in cases.into_iter().enumerate() {
            assert_eq!(e.side(), side, "case {i}");
            assert_eq!(e.retry(), Retry::No, "case {i}");
        }
    }
}
