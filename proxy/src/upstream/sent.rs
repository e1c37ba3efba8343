//! The shares an upstream connection has sent, remembered by what the pool sees, so that no
//! share reaches a pool twice.
//!
//! Miners' validators already refuse a share they have taken before on the same upstream
//! job, whatever downstream job id it comes under. This is the last check, at the one place
//! every share to a pool passes: it also covers shares that reach the same pool job from
//! different miner sessions (a prefix slot handed to a new session, a channel moved away and
//! back, SV2 group channels) and the same pool job re-published as a new
//! [`UpstreamJob`](crate::pool_link::work::UpstreamJob) (an SV2 `SetTarget`, an SV1 pool re-sending a
//! job id).
//!
//! The key is the pool's view of a share: the pool job (its extranonce1 or channel
//! `extranonce_prefix`, and the pool's job id) and the header fields a submit carries (the
//! full extranonce2 as sent, ntime, nonce, version). Keys are 64-bit SipHash values under a
//! per-connection random key, so a miner cannot aim collisions at another's shares.
//!
//! Memory bound: at most [`MAX_KEYS`] share keys per connection (~16 bytes each with the
//! table's overhead, so about 32 MiB), over at most [`MAX_JOBS`] pool jobs. When the budget is
//! spent, the pool jobs that got their first share longest ago are dropped; their ids are
//! remembered (at most [`MAX_FORGOTTEN`]) so that late shares for them are refused as stale
//! rather than sent again. For scale: every miner's validator may hold 8 jobs × 8,192 keys,
//! 32 times this budget per connection of 1,024 miners; and a pool's vardiff keeps a
//! connection at a share every few seconds, a few kilobytes here.
//! Sans-IO: no clock, no lock; the connection task owns it.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};

use hashshift_protocol::sv1::{ErrorCode, StratumError};

use super::connection::rolled_version;
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};

/// Pool jobs whose shares are remembered; the job that got its first share longest ago goes
/// first. Miners keep 8 downstream jobs, so a share for a job 16 pool jobs old is stale.
pub const MAX_JOBS: usize = 16;
/// Share keys remembered per connection, over all its jobs. Two million: more than half an
/// hour of one pool job at a thousand forwarded shares a second.
pub const MAX_KEYS: usize = 1 << 21;
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

impl<'a> PoolShare<'a> {
    /// `share` as the pool sees it on a connection (SV2: a channel) with `extranonce1`, where
    /// version rolling within `mask` was negotiated: the version is the job's with the
    /// share's rolled bits.
    pub fn of(share: &'a UpstreamSubmit, extranonce1: &'a [u8], mask: u32) -> Self {
        PoolShare {
            extranonce1,
            job_id: &share.job.pool_job_id,
            extranonce2: &share.extranonce2,
            ntime: share.ntime,
            nonce: share.nonce,
            version: rolled_version(share.job.job.version, share.version_bits, mask),
        }
    }
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
    /// Its job is the oldest remembered and the budget ([`MAX_KEYS`]) is spent: refuse, do
    /// not send (never send a share unrecorded).
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
#[derive(Debug)]
pub struct SentShares {
    hasher: RandomState,
    /// Oldest first.
    jobs: VecDeque<JobShares>,
    forgotten: VecDeque<u64>,
    /// Keys held over all jobs.
    keys: usize,
    max_jobs: usize,
    max_keys: usize,
}

impl Default for SentShares {
    fn default() -> Self {
        SentShares::with_limits(MAX_JOBS, MAX_KEYS)
    }
}

impl SentShares {
    /// An empty record with a fresh random key and the default limits.
    pub fn new() -> Self {
        SentShares::default()
    }

    /// An empty record with other limits (at least one job).
    pub fn with_limits(max_jobs: usize, max_keys: usize) -> Self {
        SentShares {
            hasher: RandomState::new(),
            jobs: VecDeque::new(),
            forgotten: VecDeque::new(),
            keys: 0,
            max_jobs: max_jobs.max(1),
            max_keys,
        }
    }

    /// Checks `share` and records it if it may go up. Call it only for shares that will be
    /// sent now: a share refused for any other reason must not be recorded.
    pub fn check(&mut self, share: &PoolShare<'_>) -> Check {
        let job = self.hasher.hash_one((share.extranonce1, share.job_id));
        let key =
            self.hasher
                .hash_one((share.extranonce2, share.ntime, share.nonce, share.version));
        // Newest first: shares are nearly always for the latest job.
        let mut slot = match self.jobs.iter().rposition(|j| j.job == job) {
            Some(i) => i,
            None if self.forgotten.contains(&job) => return Check::Forgotten,
            None => {
                if self.jobs.len() >= self.max_jobs {
                    self.forget_oldest();
                }
                self.jobs.push_back(JobShares {
                    job,
                    keys: HashSet::new(),
                });
                self.jobs.len() - 1
            }
        };
        if self.jobs.get(slot).is_some_and(|j| j.keys.contains(&key)) {
            return Check::Duplicate;
        }
        // Make room: older jobs go first; the share's own job never does.
        while self.keys >= self.max_keys {
            if slot == 0 {
                return Check::Full;
            }
            self.forget_oldest();
            slot -= 1;
        }
        match self.jobs.get_mut(slot) {
            Some(j) => {
                j.keys.insert(key);
                self.keys += 1;
                Check::First
            }
            None => Check::Full, // unreachable: `slot` indexes `jobs`
        }
    }

    fn forget_oldest(&mut self) {
        let Some(old) = self.jobs.pop_front() else {
            return;
        };
        self.keys = self.keys.saturating_sub(old.keys.len());
        if self.forgotten.len() >= MAX_FORGOTTEN {
            self.forgotten.pop_front();
        }
        self.forgotten.push_back(old.job);
    }

    /// Shares remembered (for tests and memory monitoring).
    pub fn remembered(&self) -> usize {
        self.keys
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
    fn the_key_budget_drops_the_oldest_jobs_first_and_never_the_shares_own() {
        let mut sent = SentShares::with_limits(MAX_JOBS, 4);
        for nonce in 0..3 {
            assert_eq!(sent.check(&share("old", &[1], nonce)), Check::First);
        }
        assert_eq!(sent.check(&share("new", &[1], 0)), Check::First);
        assert_eq!(sent.remembered(), 4);
        // The budget is spent: the oldest job goes, its shares are refused from now on.
        assert_eq!(sent.check(&share("new", &[1], 1)), Check::First);
        assert_eq!(sent.remembered(), 2);
        assert_eq!(sent.check(&share("old", &[1], 0)), Check::Forgotten);
        assert_eq!(sent.check(&share("old", &[1], 9)), Check::Forgotten);
        // One job alone with the whole budget refuses new shares, still knows duplicates.
        sent.check(&share("new", &[1], 2));
        sent.check(&share("new", &[1], 3));
        assert_eq!(sent.check(&share("new", &[1], 4)), Check::Full);
        assert_eq!(sent.check(&share("new", &[1], 0)), Check::Duplicate);
        assert_eq!(sent.remembered(), 4);
        // A newer job still gets in: the full one is dropped for it.
        assert_eq!(sent.check(&share("newer", &[1], 0)), Check::First);
        assert_eq!(sent.check(&share("new", &[1], 0)), Check::Forgotten);
        assert_eq!(sent.remembered(), 1);
    }
}
