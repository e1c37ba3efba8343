//! Sans-IO share validation for one miner or channel.
//!
//! [`ShareValidator`] is a `&mut self` state machine with no clock: the caller feeds it jobs
//! ([`ShareValidator::add_job`]), target changes and submissions, and gets back either an
//! [`AcceptedShare`] or a typed [`Rejection`]. Anything time-like is relative to the job's
//! ntime.
//!
//! Invariants and policies:
//! - **Jobs** are kept by `u32` id, at most [`ValidatorConfig::max_jobs`]; a clean job
//!   retires all others, and the oldest is retired when the window is full. Retired ids are
//!   remembered (bounded) so their shares are reported as *stale* rather than *unknown*.
//!   SV2 future jobs are the caller's business: add a job when its `SetNewPrevHash` makes it
//!   active (usually with `clean = true`).
//! - **Targets (vardiff)**: each job records the miner target in force when it was added,
//!   and its shares are judged and credited at that target. [`ShareValidator::set_miner_target`]
//!   therefore affects jobs added afterwards; send a new job after changing difficulty (as
//!   SV1 pools do after `mining.set_difficulty`). The upstream target is only reported
//!   (`meets_upstream`) and applies immediately. A share that meets the network target is
//!   always accepted, whatever the miner target: a block is never thrown away.
//! - **Version rolling** (BIP310/BIP320): SV1 miners send the rolled bits, which must lie in
//!   the mask, and the final version is `(job.version & !mask) | (bits & mask)`; SV2 miners
//!   send the full version, which must satisfy `(version & !mask) == (job.version & !mask)`.
//! - **ntime** must be in `[job.ntime, job.ntime + ntime_window]` (default 7200 s, SRI's rule).
//! - **Duplicates** are found by a 64-bit key of the header hash, per *work*, in a set of at
//!   most [`ValidatorConfig::max_shares_per_job`] entries. A job added with
//!   [`ShareValidator::add_job`] is its own work; jobs added with
//!   [`ShareValidator::add_job_for_work`] under the same work key share one set, so a job
//!   re-issued under a new id (after a difficulty change) cannot take the same share twice.
//!   The header hash covers everything the pool checks (extranonce via the merkle root,
//!   ntime, nonce, version), so within one work an equal key means an equal submission. A set
//!   is freed when the last active job of its work retires; there are at most `max_jobs` sets,
//!   so memory is bounded by `max_jobs × max_shares_per_job × ~16 bytes` per validator.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::hash::sha256d_80;
use super::job::{Job, PreparedJob};
use super::rejection::Rejection;
use super::target::{Target, TargetError, hash_difficulty};

/// Limits and negotiated parameters of one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Jobs kept active at once; adding one more retires the oldest. At least 1.
    pub max_jobs: usize,
    /// Retired job ids remembered to answer "stale" instead of "unknown".
    pub max_retired_job_ids: usize,
    /// Accepted shares remembered per job for duplicate detection (memory bound).
    pub max_shares_per_job: usize,
    /// Seconds after the job's ntime that a share's ntime may be.
    pub ntime_window: u32,
    /// Version-rolling mask negotiated with the miner (0 = no rolling).
    pub version_rolling_mask: u32,
    /// Extranonce (SV1 extranonce2) length the miner must submit on extended jobs.
    pub extranonce_size: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            max_jobs: 16,
            max_retired_job_ids: 64,
            max_shares_per_job: 8192,
            ntime_window: 7200,
            version_rolling_mask: 0,
            extranonce_size: 4,
        }
    }
}

/// How a share states its block version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmittedVersion {
    /// No version given (SV1 without version rolling): the job's version.
    Job,
    /// SV1 BIP310 `version_bits`: only bits inside the mask may be set.
    RolledBits(u32),
    /// SV2 full version: must equal the job's version outside the mask.
    Full(u32),
}

/// One share as the miner submitted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submission<'a> {
    /// Job id (the SV1 layer maps its string ids onto `u32`).
    pub job_id: u32,
    /// SV1 extranonce2 / SV2 `extranonce` (ignored for standard jobs). The extranonce prefix
    /// (SV1 extranonce1) is per channel and held by the validator.
    pub extranonce: &'a [u8],
    /// Header time.
    pub ntime: u32,
    /// Header nonce.
    pub nonce: u32,
    /// Block version.
    pub version: SubmittedVersion,
}

/// What an accepted share achieved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AcceptedShare {
    /// sha256d of the header, internal byte order (reverse it for display).
    pub hash: [u8; 32],
    /// The 80-byte header (for block submission and logs).
    pub header: [u8; 80],
    /// Difficulty the hash achieved (for "best share").
    pub difficulty: f64,
    /// Difficulty credited to the miner: that of the target in force when the job was sent.
    pub credited_difficulty: f64,
    /// Whether the hash meets the current upstream (pool) target.
    pub meets_upstream: bool,
    /// Whether the hash meets the network target: a block was found.
    pub is_block: bool,
}

/// Errors adding a job. The job came from the pool: drop that job (and log); the miner
/// connection is unaffected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The job's nBits is not a valid target.
    #[error("invalid nbits: {0}")]
    InvalidNbits(#[from] TargetError),
}

/// A hasher that passes a 64-bit key through unchanged: keys are already uniform (they are
/// bytes of a SHA-256 output), so hashing them again would only cost time.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ShareKeySet = HashSet<u64, BuildHasherDefault<PassThroughHasher>>;

/// Which duplicate set a job's shares are recorded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// The job's own set ([`ShareValidator::add_job`]); the number is the validator's serial.
    Own(u64),
    /// Shared by every job added under this work key.
    Work(u64),
}

/// An active job with its target.
#[derive(Debug)]
struct JobSlot {
    id: u32,
    prepared: PreparedJob,
    target: Target,
    credited_difficulty: f64,
    scope: Scope,
}

/// The keys of shares accepted for one work (one job, or all issues of one upstream job).
#[derive(Debug)]
struct SeenSet {
    scope: Scope,
    keys: ShareKeySet,
}

/// Share validator for one miner / channel. See the module docs for the rules.
#[derive(Debug)]
pub struct ShareValidator {
    config: ValidatorConfig,
    extranonce_prefix: Vec<u8>,
    miner_target: Target,
    upstream_target: Target,
    /// Active jobs, oldest first.
    jobs: VecDeque<JobSlot>,
    /// Recently retired job ids, oldest first.
    retired: VecDeque<u32>,
    /// Duplicate sets of the active jobs' works: at most one per active job.
    seen: Vec<SeenSet>,
    /// Next serial for [`Scope::Own`].
    next_own: u64,
}

impl ShareValidator {
    /// A validator for a channel with `extranonce_prefix` (SV1 extranonce1) and an initial
    /// miner target. The upstream target starts equal to the miner target.
    pub fn new(config: ValidatorConfig, extranonce_prefix: Vec<u8>, miner_target: Target) -> Self {
        let config = ValidatorConfig {
            max_jobs: config.max_jobs.max(1),
            ..config
        };
        ShareValidator {
            config,
            extranonce_prefix,
            miner_target,
            upstream_target: miner_target,
            jobs: VecDeque::new(),
            retired: VecDeque::new(),
            seen: Vec::new(),
            next_own: 0,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// The miner target applied to jobs added from now on.
    pub fn miner_target(&self) -> Target {
        self.miner_target
    }

    /// The upstream (pool) target.
    pub fn upstream_target(&self) -> Target {
        self.upstream_target
    }

    /// The channel's extranonce prefix.
    pub fn extranonce_prefix(&self) -> &[u8] {
        &self.extranonce_prefix
    }

    /// Number of active jobs.
    pub fn active_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Total share keys held for duplicate detection (for memory monitoring).
    pub fn remembered_shares(&self) -> usize {
        self.seen.iter().map(|s| s.keys.len()).sum()
    }

    /// Sets the miner target (vardiff) for jobs added from now on; shares of earlier jobs
    /// keep the target those jobs were sent with.
    pub fn set_miner_target(&mut self, target: Target) {
        self.miner_target = target;
    }

    /// Sets the upstream target; applies to the next share.
    pub fn set_upstream_target(&mut self, target: Target) {
        self.upstream_target = target;
    }

    /// Sets the version-rolling mask (BIP310 `mining.configure` result).
    pub fn set_version_rolling_mask(&mut self, mask: u32) {
        self.config.version_rolling_mask = mask;
    }

    /// Sets the expected extranonce size.
    pub fn set_extranonce_size(&mut self, size: usize) {
        self.config.extranonce_size = size;
    }

    /// Replaces the extranonce prefix (SV2 `SetExtranoncePrefix`) and recomputes the
    /// midstates of active jobs.
    pub fn set_extranonce_prefix(&mut self, prefix: Vec<u8>) {
        for slot in &mut self.jobs {
            slot.prepared.set_extranonce_prefix(&prefix);
        }
        self.extranonce_prefix = prefix;
    }

    /// Adds a job at the current miner target, with a duplicate set of its own. With `clean`,
    /// every other job is retired (their shares become stale). Re-using an active id replaces
    /// that job.
    pub fn add_job(&mut self, job_id: u32, job: Job, clean: bool) -> Result<(), JobError> {
        let scope = Scope::Own(self.next_own);
        self.next_own = self.next_own.wrapping_add(1);
        self.insert_job(job_id, job, clean, scope)
    }

    /// Adds a job like [`ShareValidator::add_job`], sharing its duplicate set with every
    /// active job of the same `work` key: the caller's name for the upstream job it issues
    /// (pool, upstream session and pool job id), so that a share already taken under one
    /// downstream id is a duplicate under any other id of the same upstream job.
    pub fn add_job_for_work(
        &mut self,
        job_id: u32,
        job: Job,
        clean: bool,
        work: u64,
    ) -> Result<(), JobError> {
        self.insert_job(job_id, job, clean, Scope::Work(work))
    }

    fn insert_job(
        &mut self,
        job_id: u32,
        job: Job,
        clean: bool,
        scope: Scope,
    ) -> Result<(), JobError> {
        let prepared = PreparedJob::new(job, &self.extranonce_prefix)?;
        if clean {
            // Keep a set this job will share (a clean re-issue of the same work).
            self.retire_all_keeping(Some(scope));
        } else if let Some(pos) = self.jobs.iter().position(|j| j.id == job_id)
            && let Some(old) = self.jobs.remove(pos)
        {
            self.release_scope(old.scope, Some(scope));
        }
        while self.jobs.len() >= self.config.max_jobs {
            if let Some(old) = self.jobs.pop_front() {
                self.remember_retired(old.id);
                self.release_scope(old.scope, Some(scope));
            }
        }
        self.retired.retain(|id| *id != job_id);
        if !self.seen.iter().any(|s| s.scope == scope) {
            self.seen.reserve_exact(1);
            self.seen.push(SeenSet {
                scope,
                keys: ShareKeySet::default(),
            });
        }
        // Grow one slot at a time: a slot is ~270 bytes and an idle miner holds few jobs, so
        // doubling growth would cost every connection up to a kilobyte it never uses.
        self.jobs.reserve_exact(1);
        self.jobs.push_back(JobSlot {
            id: job_id,
            prepared,
            target: self.miner_target,
            credited_difficulty: self.miner_target.to_difficulty(),
            scope,
        });
        Ok(())
    }

    /// Retires every active job (e.g. on a new block with no job yet): their shares become
    /// stale and their duplicate sets are freed.
    pub fn retire_all(&mut self) {
        self.retire_all_keeping(None);
    }

    fn retire_all_keeping(&mut self, keep: Option<Scope>) {
        while let Some(old) = self.jobs.pop_front() {
            self.remember_retired(old.id);
        }
        self.seen.retain(|s| Some(s.scope) == keep);
    }

    /// Frees `scope`'s set once no active job uses it (unless it is `keep`, about to be used).
    fn release_scope(&mut self, scope: Scope, keep: Option<Scope>) {
        if Some(scope) == keep || self.jobs.iter().any(|j| j.scope == scope) {
            return;
        }
        self.seen.retain(|s| s.scope != scope);
    }

    fn remember_retired(&mut self, id: u32) {
        if self.config.max_retired_job_ids == 0 {
            return;
        }
        while self.retired.len() >= self.config.max_retired_job_ids {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
    }

    /// Validates one share. On success the share is remembered for duplicate detection.
    pub fn validate(&mut self, share: &Submission<'_>) -> Result<AcceptedShare, Rejection> {
        let mask = self.config.version_rolling_mask;
        let window = self.config.ntime_window;
        let expected_extranonce = self.config.extranonce_size;
        let max_shares = self.config.max_shares_per_job;
        let upstream = self.upstream_target;

        // Newest first: shares are nearly always for the latest job.
        let Some(slot) = self.jobs.iter().rev().find(|j| j.id == share.job_id) else {
            return Err(if self.retired.contains(&share.job_id) {
                Rejection::StaleJob {
                    job_id: share.job_id,
                }
            } else {
                Rejection::UnknownJob {
                    job_id: share.job_id,
                }
            });
        };
        let job = slot.prepared.job();

        if matches!(job, Job::Extended(_)) && share.extranonce.len() != expected_extranonce {
            return Err(Rejection::WrongExtranonceSize {
                expected: expected_extranonce,
                got: share.extranonce.len(),
            });
        }

        let min = job.ntime();
        let max = min.saturating_add(window);
        if share.ntime < min || share.ntime > max {
            return Err(Rejection::NtimeOutOfRange {
                ntime: share.ntime,
                min,
                max,
            });
        }

        let job_version = job.version();
        let version = match share.version {
            SubmittedVersion::Job => job_version,
            SubmittedVersion::RolledBits(bits) => {
                if bits & !mask != 0 {
                    return Err(Rejection::VersionBitsOutsideMask {
                        version: bits,
                        mask,
                    });
                }
                (job_version & !mask) | bits
            }
            SubmittedVersion::Full(v) => {
                if (v ^ job_version) & !mask != 0 {
                    return Err(Rejection::VersionBitsOutsideMask { version: v, mask });
                }
                v
            }
        };

        let header = slot
            .prepared
            .header(share.extranonce, share.ntime, share.nonce, version);
        let hash = sha256d_80(&header);

        let is_block = slot.prepared.network_target().is_met_by(&hash);
        if !is_block && !slot.target.is_met_by(&hash) {
            return Err(Rejection::LowDifficulty {
                achieved: hash_difficulty(&hash),
                required: slot.credited_difficulty,
            });
        }

        let scope = slot.scope;
        let credited_difficulty = slot.credited_difficulty;
        // Every active job's scope has a set (added with the job, freed after it).
        let Some(seen) = self.seen.iter_mut().find(|s| s.scope == scope) else {
            return Err(Rejection::TooManyShares);
        };
        let key = share_key(&hash);
        if seen.keys.contains(&key) {
            return Err(Rejection::Duplicate);
        }
        if seen.keys.len() >= max_shares {
            return Err(Rejection::TooManyShares);
        }
        seen.keys.insert(key);

        Ok(AcceptedShare {
            hash,
            header,
            difficulty: hash_difficulty(&hash),
            credited_difficulty,
            meets_upstream: upstream.is_met_by(&hash),
            is_block,
        })
    }
}

/// The duplicate-detection key: the hash's 8 least significant bytes, which stay uniformly
/// random however much work the share shows (the zeros are at the other end).
fn share_key(hash: &[u8; 32]) -> u64 {
    let mut low = [0u8; 8];
    low.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(low)
}
