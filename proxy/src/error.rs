//! Which side caused an error, and whether trying again makes sense.
//!
//! The proxy sits between parties it does not control: miners, pools, rig firmware, the GPU
//! scheduler and the operator who wrote the config and types `hashshift ctl`. When something
//! fails, the first two questions of whoever is paged are "whose fault is it?" and "will it
//! go away by itself?". Each error type of the proxy answers both through [`Classify`]:
//! [`Classify::side`] names the party whose action or state caused the failure (where to look
//! first), [`Classify::retry`] says whether the same call can succeed later without anyone
//! changing anything.
//!
//! The answers are facts about the error, not a policy: a caller may still retry what
//! [`Retry::No`] marks (the power controller keeps asking the GPU side to shed, because the
//! site must get under its cap, and a person is paged meanwhile), but it never needs to parse
//! a message to decide. Log them as fields next to the error:
//! `warn!(error = %e, side = %e.side(), retry = %e.retry(), "...")`.

use std::fmt;
use std::time::Duration;

/// The party whose action or state caused a failure: where someone should look first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Side {
    /// A miner connected to the proxy (downstream): bad input, a dropped connection.
    Miner,
    /// An upstream pool: unreachable, refused us, broke its protocol, stopped reading.
    Pool,
    /// A rig's management API (LuxOS, Braiins OS+): down, busy, refused or malformed.
    Firmware,
    /// The GPU scheduler (Slurm, a webhook receiver, a command hook) or the tool that reaches it.
    Scheduler,
    /// What an operator set or asked for: the config, the state directory, a `ctl` command.
    Operator,
    /// The proxy itself: a bug or a shutdown in progress.
    Internal,
}

impl Side {
    /// The lowercase name logged as the `side` field (`"firmware"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Miner => "miner",
            Side::Pool => "pool",
            Side::Firmware => "firmware",
            Side::Scheduler => "scheduler",
            Side::Operator => "operator",
            Side::Internal => "internal",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the same call can succeed if made again, with nobody changing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A transient failure (timeout, reset, overload): trying again may succeed.
    Yes,
    /// It fails the same way until someone fixes something (credentials, config, input).
    No,
    /// Trying again makes sense, but not before this long: the peer holds something that
    /// expires (a LuxOS session times out after a minute idle).
    After(Duration),
}

impl Retry {
    /// From a yes/no answer.
    pub const fn from_bool(retryable: bool) -> Retry {
        if retryable { Retry::Yes } else { Retry::No }
    }

    /// Whether a retry makes sense at all (now or after a wait).
    pub const fn is_retryable(self) -> bool {
        !matches!(self, Retry::No)
    }

    /// The retry hint for an HTTP status the peer answered: server errors, 408 (request
    /// timeout) and 429 (too many requests) pass; any other 4xx is a refusal that repeats.
    /// Only meaningful for a status that is a failure (not 2xx).
    pub const fn for_http_status(status: u16) -> Retry {
        Retry::from_bool(status >= 500 || status == 408 || status == 429)
    }
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retry::Yes => f.write_str("yes"),
            Retry::No => f.write_str("no"),
            Retry::After(d) => write!(f, "after {d:?}"),
        }
    }
}

/// An error that knows which side caused it and whether a retry makes sense. Implemented by
/// the proxy's error enums; see the module documentation for how to log it.
pub trait Classify {
    /// The party whose action or state caused the failure.
    fn side(&self) -> Side;
    /// Whether the same call can succeed later without anyone changing anything.
    fn retry(&self) -> Retry;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_hints() {
        assert!(Retry::Yes.is_retryable());
        assert!(Retry::After(Duration::from_secs(60)).is_retryable());
        assert!(!Retry::No.is_retryable());
        assert_eq!(Retry::from_bool(true), Retry::Yes);
        assert_eq!(Retry::from_bool(false), Retry::No);
    }

    #[test]
    fn http_statuses() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert_eq!(Retry::for_http_status(status), Retry::Yes, "{status}");
        }
        for status in [400, 401, 403, 404, 405, 409, 413, 422, 301] {
            assert_eq!(Retry::for_http_status(status), Retry::No, "{status}");
        }
    }

    #[test]
    fn display_is_the_log_field() {
        assert_eq!(Side::Firmware.to_string(), "firmware");
        assert_eq!(Side::Scheduler.to_string(), "scheduler");
        assert_eq!(Retry::No.to_string(), "no");
        assert_eq!(
            Retry::After(Duration::from_secs(60)).to_string(),
            "after 60s"
        );
    }
}
