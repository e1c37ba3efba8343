//! The shares an upstream connection has sent, remembered by what the pool sees, so that no
//! share reaches a pool twice.
//!
//! Miners' validators already refuse a share they have taken before on the same upstream
//! job, whatever downstream job id it comes under. This is the last check, at the one place
//! every share to a pool passes: it also covers shares that reach the same pool job from
//! different miner sessions (a prefix slot handed to a new session, a channel moved away and
//! back, SV2 group channels) and the same pool job re-published as a new
//! [`UpstreamJob`](super::work::UpstreamJob) (an SV2 `SetTarget`, an SV1 pool re-sending a
//! job id).
//!
//! The key is the pool's view of a share: the pool job (its extranonce1 or channel
//! `extranonce_prefix`, and the pool's job id) and the header fields a submit carries (the
//! full extranonce2 as sent, ntime, nonce, version). Keys are 64-bit SipHash values under a
//! per-connection random key, so a miner cannot aim collisions at another's shares.
//!
//! Memory bound: at most [`MAX_JOBS`] pool jobs, each with at most [`MAX_SHARES_PER_JOB`]
//! keys (~16 bytes each with the table's overhead): about 32 MiB for a connection that would
//! send 2^17 shares on each of 16 jobs, a few kilobytes for one at a pool's usual rate of a
//! share every few seconds. A job that falls out of the window is remembered (by key, at most
//! [`MAX_FORGOTTEN`]) so its late shares are refused as stale instead of being sent again.
//! Sans-IO: no clock, no lock; the connection task owns it.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};

use hashshift_protocol::sv1::{ErrorCode, StratumError};

use super::connection::SubmitOutcome;

/// Pool jobs whose shares are remembered; the job that got its first share longest ago goes
/// first. Miners keep 8 downstream jobs, so a share for a job 16 pool jobs old is stale.
pub const MAX_JOBS: usize = 16;
/// Shares remembered per pool job. A pool's vardiff keeps a connection far below this (it
/// aims at a share every few seconds); a job that reaches it refuses further shares rather
/// than send some unrecorded.
pub const MAX_SHARES_PER_JOB: usize = 1 << 17;
/// Pool jobs dropped from the window that are still recognised (their shares are stale).
pub const MAX_FORGOTTEN: usize = 64;

/// What the pool sees of one share.
#[derive(Clone, Copy, Debug)]
pub struct PoolShare<'a> {
    /// The connection's extranonce1 (SV2: the channel's `extranonce_prefix`) for the job.
    pub extranonce1: &'a [u8],
    /// The pool's job id.
    pub job_id: &'a str,
    /// The full extranonce2 as sent (proxy prefix, padding, the miner's part).
    pub extranonce2: &'a [u8],
    /// Header time.
    pub ntime: u32,
    /// Header nonce.
    pub nonce: u32,
    /// Header version as the pool rebuilds it.
    pub version: u32,
}

/// Whether a share may go up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Never sent: it is now recorded, send it.
    First,
    /// Already sent to this pool job: answer "duplicate", do not send.
    Duplicate,
    /// Its job fell out of the window: answer "stale", do not send.
    Forgotten,
    /// Its job has [`MAX_SHARES_PER_JOB`] shares: refuse, do not send.
    Full,
}

impl Check {
    /// The answer for a share that must not go up (`None`: send it). The miner sees the
    /// standard SV1 code (its SV2 form for SV2 miners: `duplicate-share`, `stale-share`).
    pub fn refusal(self) -> Option<SubmitOutcome> {
        let error = match self {
            Check::First => return None,
            Check::Duplicate => StratumError::new(ErrorCode::DuplicateShare),
            Check::Forgotten => StratumError::new(ErrorCode::JobNotFound),
            Check::Full => StratumError::with_message(ErrorCode::Other, "too many shares for job"),
        };
        Some(SubmitOutcome::Rejected(error))
    }
}

#[derive(Debug)]
struct JobShares {
    job: u64,
    keys: HashSet<u64>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct SentShares {
    hasher: RandomState,
    /// Oldest first.
    jobs: VecDeque<JobShares>,
    forgotten: VecDeque<u64>,
}

impl SentShares {
    /// An empty record with a fresh random key.
    pub fn new() -> Self {
        SentShares::default()
    }

    /// Checks `share` and records it if it may go up. Call it only for shares that will be
    /// sent now: a share refused for any other reason must not be recorded.
    pub fn check(&mut self, share: &PoolShare<'_>) -> Check {
        let job = self.hasher.hash_one((share.extranonce1, share.job_id));
        let key =
            self.hasher
                .hash_one((share.extranonce2, share.ntime, share.nonce, share.version));
        // Newest first: shares are nearly always for the latest job.
        let slot = match self.jobs.iter().rposition(|j| j.job == job) {
            Some(i) => i,
            None if self.forgotten.contains(&job) => return Check::Forgotten,
            None => {
                if self.jobs.len() >= MAX_JOBS
                    && let Some(old) = self.jobs.pop_front()
                {
                    if self.forgotten.len() >= MAX_FORGOTTEN {
                        self.forgotten.pop_front();
                    }
                    self.forgotten.push_back(old.job);
                }
                self.jobs.push_back(JobShares {
                    job,
                    keys: HashSet::new(),
                });
                self.jobs.len() - 1
            }
        };
        let Some(set) = self.jobs.get_mut(slot) else {
            return Check::Full; // unreachable: `slot` indexes `jobs`
        };
        if set.keys.contains(&key) {
            Check::Duplicate
        } else if set.keys.len() >= MAX_SHARES_PER_JOB {
            Check::Full
        } else {
            set.keys.insert(key);
            Check::First
        }
    }

    /// Shares remembered (for tests and memory monitoring).
    pub fn remembered(&self) -> usize {
        self.jobs.iter().map(|j| j.keys.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share<'a>(job: &'a str, extranonce2: &'a [u8], nonce: u32) -> PoolShare<'a> {
        PoolShare {
            extranonce1: &[0xaa, 0xbb],
            job_id: job,
            extranonce2,
            ntime: 1_700_000_000,
            nonce,
            version: 0x2000_0000,
        }
    }

    #[test]
    fn a_share_goes_up_once_per_pool_job() {
        let mut sent = SentShares::new();
        assert_eq!(sent.check(&share("j1", &[0, 1, 0, 0], 7)), Check::First);
        assert_eq!(sent.check(&share("j1", &[0, 1, 0, 0], 7)), Check::Duplicate);
        // Another miner slot, nonce, ntime, version or job: a different share.
        assert_eq!(sent.check(&share("j1", &[0, 2, 0, 0], 7)), Check::First);
        assert_eq!(sent.check(&share("j1", &[0, 1, 0, 0], 8)), Check::First);
        let mut later = share("j1", &[0, 1, 0, 0], 7);
        later.ntime += 1;
        assert_eq!(sent.check(&later), Check::First);
        let mut rolled = share("j1", &[0, 1, 0, 0], 7);
        rolled.version |= 0x2000;
        assert_eq!(sent.check(&rolled), Check::First);
        assert_eq!(sent.check(&share("j2", &[0, 1, 0, 0], 7)), Check::First);
        // A new upstream session (another extranonce1) is another job for the pool.
        let mut other_session = share("j1", &[0, 1, 0, 0], 7);
        other_session.extranonce1 = &[0xcc];
        assert_eq!(sent.check(&other_session), Check::First);
        assert_eq!(sent.remembered(), 7);
    }

    #[test]
    fn old_jobs_are_forgotten_within_bounds_and_their_shares_refused() {
        let mut sent = SentShares::new();
        let ids: Vec<String> = (0..MAX_JOBS + MAX_FORGOTTEN + 1)
            .map(|i| format!("job{i}"))
            .collect();
        for id in &ids[..=MAX_JOBS] {
            assert_eq!(sent.check(&share(id, &[1], 1)), Check::First);
        }
        assert_eq!(sent.jobs.len(), MAX_JOBS);
        assert_eq!(sent.remembered(), MAX_JOBS);
        // The first job's set is gone, but it is known: its shares are stale, never re-sent.
        assert_eq!(sent.check(&share(&ids[0], &[1], 1)), Check::Forgotten);
        assert_eq!(sent.check(&share(&ids[0], &[1], 2)), Check::Forgotten);
        for id in &ids[MAX_JOBS + 1..] {
            sent.check(&share(id, &[1], 1));
        }
        assert!(sent.forgotten.len() <= MAX_FORGOTTEN);
        assert!(sent.jobs.len() <= MAX_JOBS);
    }

    #[test]
    fn a_full_job_refuses_new_shares_but_still_knows_duplicates() {
        let mut sent = SentShares::new();
        for nonce in 0..MAX_SHARES_PER_JOB {
            let nonce = u32::try_from(nonce).unwrap();
            assert_eq!(sent.check(&share("j", &[1], nonce)), Check::First);
        }
        let over = u32::try_from(MAX_SHARES_PER_JOB).unwrap();
        assert_eq!(sent.check(&share("j", &[1], over)), Check::Full);
        assert_eq!(sent.check(&share("j", &[1], 0)), Check::Duplicate);
        assert_eq!(sent.check(&share("k", &[1], 0)), Check::First);
    }
}
