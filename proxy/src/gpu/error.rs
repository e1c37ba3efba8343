//! Why a GPU scheduler adapter failed, and for each failure which side it is and whether
//! the same call can pass later ([`crate::error::Classify`]).

use std::time::Duration;

use crate::error::{Classify, Retry, Side};

/// Errors from the GPU scheduler adapters. Each says which side failed: the local
/// subprocess/tool, the remote endpoint, or our own input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// A kW figure that is negative, NaN or infinite (our caller's bug; nothing was sent).
    #[error("invalid power figure {kw} kW (must be finite and >= 0)")]
    InvalidKw {
        /// The figure refused.
        kw: f64,
    },
    /// The configuration is unusable (e.g. a Slurm name with characters scontrol would parse).
    #[error("invalid GPU scheduler configuration: {0}")]
    Config(String),
    /// The program could not be started (not installed, not executable).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program's path or name.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// I/O with a running subprocess failed.
    #[error("I/O with {program}: {source}")]
    Io {
        /// The program's path or name.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The program or request did not finish in time (the subprocess was killed).
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The program or request that timed out.
        what: String,
        /// The bound that was hit.
        after: Duration,
    },
    /// The program printed more than we accept.
    #[error("{program} printed more than {limit} bytes")]
    OutputTooLarge {
        /// The program's path or name.
        program: String,
        /// The bound, in bytes.
        limit: usize,
    },
    /// The program exited unsuccessfully; `stderr` is its (truncated) message.
    #[error("{program} exited with {code:?}: {stderr}")]
    Exit {
        /// The program's path or name.
        program: String,
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// What it printed on stderr, truncated.
        stderr: String,
    },
    /// The program's output does not have the shape we parse (never guessed around).
    #[error("unexpected output from {what}: {detail}")]
    Parse {
        /// Whose output (`"squeue --json"`, `"scontrol show license"`).
        what: &'static str,
        /// What did not match.
        detail: String,
    },
    /// Slurm does not know the configured license.
    #[error("Slurm has no license named {0} (scontrol show license)")]
    NoSuchLicense(String),
    /// The webhook URL is not a plain `http://host[:port]/path` URL.
    #[error("unsupported webhook URL {url}: {detail}")]
    Url {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The webhook could not be reached or answered garbage, after every attempt.
    #[error("webhook {url}: {detail} (after {attempts} attempts)")]
    Http {
        /// The webhook URL.
        url: String,
        /// The last attempt's failure.
        detail: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The webhook answered a non-2xx status; `attempts` made (4xx other than 408/429 is not
    /// retried).
    #[error("webhook {url} answered HTTP {status} (after {attempts} attempts)")]
    HttpStatus {
        /// The webhook URL.
        url: String,
        /// The last status answered.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// This adapter does not take demand reports (Slurm reads its own queue).
    #[error("the {0} adapter does not take demand reports")]
    Unsupported(&'static str),
}

/// Which side each failure is and whether the call may pass later. A program that cannot be
/// found, a configured name Slurm does not know, or output we cannot parse will fail the same
/// way until someone acts; the controller still retries sheds by policy (the site must get
/// under its cap) and pages a person when one is overdue.
impl Classify for GpuError {
    fn side(&self) -> Side {
        match self {
            GpuError::InvalidKw { .. } | GpuError::Unsupported(_) => Side::Internal,
            GpuError::Config(_)
            | GpuError::Spawn { .. }
            | GpuError::NoSuchLicense(_)
            | GpuError::Url { .. } => Side::Operator,
            GpuError::Io { .. }
            | GpuError::Timeout { .. }
            | GpuError::OutputTooLarge { .. }
            | GpuError::Exit { .. }
            | GpuError::Parse { .. }
            | GpuError::Http { .. }
            | GpuError::HttpStatus { .. } => Side::Scheduler,
        }
    }

    fn retry(&self) -> Retry {
        match self {
            GpuError::Io { .. }
            | GpuError::Timeout { .. }
            | GpuError::Exit { .. }
            | GpuError::Http { .. } => Retry::Yes,
            GpuError::HttpStatus { status, .. } => Retry::for_http_status(*status),
            GpuError::InvalidKw { .. }
            | GpuError::Config(_)
            | GpuError::Spawn { .. }
            | GpuError::OutputTooLarge { .. }
            | GpuError::Parse { .. }
            | GpuError::NoSuchLicense(_)
            | GpuError::Url { .. }
            | GpuError::Unsupported(_) => Retry::No,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_side_and_retry_hint() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let s = String::new;
        let cases = [
            (GpuError::InvalidKw { kw: -1.0 }, Side::Internal, Retry::No),
            (GpuError::Unsupported("slurm"), Side::Internal, Retry::No),
            (GpuError::Config(s()), Side::Operator, Retry::No),
            (
                GpuError::Spawn {
                    program: s(),
                    source: io(),
                },
                Side::Operator,
                Retry::No,
            ),
            (GpuError::NoSuchLicense(s()), Side::Operator, Retry::No),
            (
                GpuError::Url {
                    url: s(),
                    detail: s(),
                },
                Side::Operator,
                Retry::No,
            ),
            (
                GpuError::Io {
                    program: s(),
                    source: io(),
                },
                Side::Scheduler,
                Retry::Yes,
            ),
            (
                GpuError::Timeout {
                    what: s(),
                    after: Duration::from_secs(1),
                },
                Side::Scheduler,
                Retry::Yes,
            ),
            (
                GpuError::OutputTooLarge {
                    program: s(),
                    limit: 1,
                },
                Side::Scheduler,
                Retry::No,
            ),
            (
                GpuError::Exit {
                    program: s(),
                    code: Some(1),
                    stderr: s(),
                },
                Side::Scheduler,
                Retry::Yes,
            ),
            (
                GpuError::Parse {
                    what: "squeue",
                    detail: s(),
                },
                Side::Scheduler,
                Retry::No,
            ),
            (
                GpuError::Http {
                    url: s(),
                    detail: s(),
                    attempts: 3,
                },
                Side::Scheduler,
                Retry::Yes,
            ),
            (
                GpuError::HttpStatus {
                    url: s(),
                    status: 503,
                    attempts: 3,
                },
                Side::Scheduler,
                Retry::Yes,
            ),
            (
                GpuError::HttpStatus {
                    url: s(),
                    status: 403,
                    attempts: 1,
                },
                Side::Scheduler,
                Retry::No,
            ),
        ];
        for (e, side, retry) in cases {
            assert_eq!((e.side(), e.retry()), (side, retry), "{e}");
        }
    }
}
