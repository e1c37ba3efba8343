//! One extended mining channel with an SV2 pool, without I/O: pool messages in, work and
//! share verdicts out (sv2-spec 05 §5.3.4, §5.3.11–§5.3.21).
//!
//! The connection task ([`super`]) feeds it the channel's messages and the proxy's shares;
//! it turns them into what the SV1 side of the proxy understands:
//! - `extranonce_prefix` / `extranonce_size` become the session's `extranonce1` /
//!   `extranonce2_size`, so the per-miner split of `pool_link::extranonce` applies unchanged;
//! - a future `NewExtendedMiningJob` plus the `SetNewPrevHash` naming it become a clean
//!   [`UpstreamJob`]; a non-future job on the current prevhash becomes a non-clean one;
//! - each share gets the next sequence number and waits in order until the pool answers:
//!   `SubmitShares.Success` acknowledges every pending share up to `last_sequence_number`
//!   (pools batch acknowledgements), `SubmitShares.Error` rejects exactly one.
//!
//! Invariants: every share handed to [`Channel::submit`] comes back exactly once as a
//! [`Verdict`] (from `submit` itself, an answer, [`Channel::expire`] or
//! [`Channel::fail_all`]); pending shares and future jobs are bounded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashshift_protocol::share::{ExtendedJob, Target};
use hashshift_protocol::sv1::{ErrorCode, StratumError};
use hashshift_protocol::sv2::constants::error_code::submit_shares as code;
use hashshift_protocol::sv2::{
    B032, NewExtendedMiningJob, OpenExtendedMiningChannelSuccess, SetNewPrevHash,
    SubmitSharesError, SubmitSharesExtended, SubmitSharesSuccess, UpdateChannel,
};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::pool_link::work::{UpstreamJob, WorkState, next_session};
use crate::upstream::connection::REQUESTED_VERSION_MASK;
use crate::upstream::sent::{PoolShare, SentShares};

/// Future jobs kept while waiting for their `SetNewPrevHash` (pools send one or two).
const MAX_FUTURE_JOBS: usize = 16;
/// Shares waiting for the pool's verdict on one channel; beyond this a share is lost at once
/// rather than growing memory for a pool that stopped answering.
pub const MAX_PENDING: usize = 65_536;
/// The announced hash rate is corrected when the miners' estimate is off by more than this
/// factor either way: pools derive the channel's target from it, and estimates are noisy.
const HASHRATE_TOLERANCE: f64 = 1.3;
/// Shortest time between two `UpdateChannel`s, so the pool's own vardiff can settle.
const UPDATE_CHANNEL_EVERY: Duration = Duration::from_secs(10);

/// A share's final outcome, to be sent through its oneshot by the caller.
#[derive(Debug)]
pub struct Verdict {
    /// Where it goes.
    pub reply: oneshot::Sender<SubmitOutcome>,
    /// What the pool said (or why it never will).
    pub outcome: SubmitOutcome,
    /// The pool difficulty of the share, for the accepted-work counters.
    pub difficulty: f64,
    /// Whether the share was a block.
    pub block: bool,
    /// When the share was sent (for the submit-latency histogram).
    pub sent: Instant,
}

#[derive(Debug)]
struct Pending {
    seq: u32,
    reply: oneshot::Sender<SubmitOutcome>,
    difficulty: f64,
    block: bool,
    sent: Instant,
}

/// The chain tip from the last `SetNewPrevHash`.
#[derive(Clone, Copy, Debug)]
struct Tip {
    prev_hash: [u8; 32],
    nbits: u32,
}

/// State of one open extended channel.
#[derive(Debug)]
pub struct Channel {
    channel_id: u32,
    group_channel_id: u32,
    session: u64,
    extranonce_prefix: Bytes,
    extranonce_size: usize,
    target: Target,
    version_rolling: bool,
    tip: Option<Tip>,
    future_jobs: VecDeque<NewExtendedMiningJob>,
    current: Option<Arc<UpstreamJob>>,
    next_seq: u32,
    pending: VecDeque<Pending>,
    /// Shares sent on this channel, so none goes up twice (the pool keys duplicates by
    /// channel and job; a reconnect opens a new channel).
    sent: SentShares,
    /// Hash rate last announced to the pool, and when.
    announced: f32,
    announced_at: Instant,
    /// Whether `announced` is a guess (no miner estimate when the channel opened): the first
    /// estimate then replaces it at once.
    guessed: bool,
}

impl Channel {
    /// The channel the pool granted, in a fresh upstream session, opened announcing
    /// `announced` h/s at `now` (`guessed`: not from a measurement).
    pub fn open(
        granted: &OpenExtendedMiningChannelSuccess,
        announced: f32,
        guessed: bool,
        now: Instant,
    ) -> Channel {
        Channel {
            channel_id: granted.channel_id,
            group_channel_id: granted.group_channel_id,
            session: next_session(),
            extranonce_prefix: Bytes::copy_from_slice(granted.extranonce_prefix.as_bytes()),
            extranonce_size: usize::from(granted.extranonce_size),
            target: Target::from_le_bytes(granted.target),
            version_rolling: true,
            tip: None,
            future_jobs: VecDeque::new(),
            current: None,
            next_seq: 0,
            pending: VecDeque::new(),
            sent: SentShares::new(),
            announced,
            announced_at: now,
            guessed,
        }
    }

    /// An `UpdateChannel` announcing `estimate` (the miners' hashrate, h/s) when it is off
    /// from what the pool was told by more than [`HASHRATE_TOLERANCE`], at most once every
    /// [`UPDATE_CHANNEL_EVERY`] (at once when the channel opened on a guess). No estimate (0)
    /// keeps the announcement.
    pub fn hashrate_update(&mut self, estimate: f64, now: Instant) -> Option<UpdateChannel> {
        if !estimate.is_finite() || estimate <= 0.0 {
            return None;
        }
        if !self.guessed && now.saturating_duration_since(self.announced_at) < UPDATE_CHANNEL_EVERY
        {
            return None;
        }
        let ratio = estimate / f64::from(self.announced);
        if (1.0 / HASHRATE_TOLERANCE..=HASHRATE_TOLERANCE).contains(&ratio) {
            return None;
        }
        // f32 holds any real hashrate (up to 3.4e38 h/s) to 7 digits.
        self.announced = estimate as f32;
        self.announced_at = now;
        self.guessed = false;
        Some(UpdateChannel {
            channel_id: self.channel_id,
            nominal_hash_rate: self.announced,
            maximum_target: Target::MAX.to_le_bytes(),
        })
    }

    /// The pool's channel id.
    pub fn id(&self) -> u32 {
        self.channel_id
    }

    /// Whether a message addressed to `channel_id` is for this channel (directly or through
    /// its group).
    pub fn addresses(&self, channel_id: u32) -> bool {
        channel_id == self.channel_id || channel_id == self.group_channel_id
    }

    /// Shares waiting for the pool's verdict.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether miners can be given work.
    pub fn has_job(&self) -> bool {
        self.current.is_some()
    }

    /// What miners on this connection see now.
    pub fn work_state(&self) -> WorkState {
        WorkState {
            session: self.session,
            extranonce1: self.extranonce_prefix.clone(),
            extranonce2_size: self.extranonce_size,
            difficulty: self.target.to_difficulty(),
            target: self.target,
            // SV2 has no mask negotiation: a job either allows the BIP320 bits or not.
            version_mask: if self.version_rolling {
                REQUESTED_VERSION_MASK
            } else {
                0
            },
            job: self.current.clone(),
        }
    }

    /// `SetTarget`. Returns whether the current work changed.
    ///
    /// The spec applies a new target to future jobs only, but SRI's pool checks every share
    /// against the channel's latest target. So a harder target is applied to the current job
    /// at once (re-issued, not clean: a share that would fail it is not sent up to be
    /// rejected), and an easier one from the next job on (a pool that follows the spec would
    /// reject shares below the current job's target).
    pub fn set_target(&mut self, target: [u8; 32], now: Instant) -> bool {
        let target = Target::from_le_bytes(target);
        self.target = target;
        let Some(old) = self.current.as_ref() else {
            return false;
        };
        if target >= old.pool_target {
            return false;
        }
        let job = UpstreamJob::new(
            (*old.job).clone(),
            old.pool_job_id.clone(),
            false,
            self.session,
            now,
            target,
        );
        self.current = Some(Arc::new(job));
        true
    }

    /// `SetExtranoncePrefix`: a new upstream session (miners get a new extranonce1). The
    /// current job is re-issued under the new session so miners keep working; shares of the
    /// old session are refused locally as stale.
    pub fn set_extranonce_prefix(&mut self, prefix: &[u8], now: Instant) {
        self.session = next_session();
        self.extranonce_prefix = Bytes::copy_from_slice(prefix);
        if let Some(old) = self.current.take() {
            let job = UpstreamJob::new(
                (*old.job).clone(),
                old.pool_job_id.clone(),
                true,
                self.session,
                now,
                old.pool_target,
            );
            self.current = Some(Arc::new(job));
        }
    }

    /// `NewExtendedMiningJob`. Returns whether the current work changed.
    pub fn on_new_job(&mut self, job: NewExtendedMiningJob, now: Instant) -> bool {
        let Some(min_ntime) = job.min_ntime else {
            // A future job: wait for the SetNewPrevHash that names it.
            if self.future_jobs.len() >= MAX_FUTURE_JOBS {
                self.future_jobs.pop_front();
            }
            self.future_jobs.retain(|j| j.job_id != job.job_id);
            self.future_jobs.push_back(job);
            return false;
        };
        let Some(tip) = self.tip else {
            debug!(
                job_id = job.job_id,
                "job before any SetNewPrevHash, ignored"
            );
            return false;
        };
        self.activate(job, tip, min_ntime, false, now);
        true
    }

    /// `SetNewPrevHash`: activates the future job it names as a clean job. Returns whether
    /// the current work changed (it always does: without the named job, miners get no work
    /// until the next job, since the old prevhash is stale).
    pub fn on_prev_hash(&mut self, p: &SetNewPrevHash, now: Instant) -> bool {
        let tip = Tip {
            prev_hash: p.prev_hash,
            nbits: p.nbits,
        };
        self.tip = Some(tip);
        let pos = self.future_jobs.iter().position(|j| j.job_id == p.job_id);
        match pos.and_then(|i| self.future_jobs.remove(i)) {
            Some(job) => self.activate(job, tip, p.min_ntime, true, now),
            None => {
                warn!(
                    job_id = p.job_id,
                    "SetNewPrevHash for a job we never got; waiting for the next job"
                );
                self.current = None;
            }
        }
        // Future jobs announced before this tip may be activated by a later SetNewPrevHash;
        // they stay (bounded).
        true
    }

    fn activate(
        &mut self,
        j: NewExtendedMiningJob,
        tip: Tip,
        ntime: u32,
        clean: bool,
        now: Instant,
    ) {
        self.version_rolling = j.version_rolling_allowed;
        let job = ExtendedJob {
            version: j.version,
            prev_hash: tip.prev_hash,
            coinbase_prefix: j.coinbase_tx_prefix.into_vec(),
            coinbase_suffix: j.coinbase_tx_suffix.into_vec(),
            merkle_branch: j.merkle_path.into_vec(),
            nbits: tip.nbits,
            ntime,
        };
        let job = UpstreamJob::new(
            job,
            j.job_id.to_string(),
            clean,
            self.session,
            now,
            self.target,
        );
        debug!(pool_job = j.job_id, job = job.id, clean, "new job");
        self.current = Some(Arc::new(job));
    }

    /// Turns a share into `SubmitSharesExtended` and remembers it until the pool answers,
    /// or returns its verdict at once when it cannot go up.
    pub fn submit(
        &mut self,
        share: UpstreamSubmit,
        now: Instant,
    ) -> Result<SubmitSharesExtended, Verdict> {
        let lost = |share: UpstreamSubmit, why: &'static str| Verdict {
            reply: share.reply,
            outcome: SubmitOutcome::Lost(why),
            difficulty: share.difficulty,
            block: share.block,
            sent: now,
        };
        if share.job.session != self.session {
            // The job's extranonce prefix belongs to an earlier session: stale for the pool.
            return Err(lost(share, "job from a previous pool session"));
        }
        let Ok(job_id) = share.job.pool_job_id.parse::<u32>() else {
            return Err(lost(share, "job is not from this SV2 pool"));
        };
        if self.pending.len() >= MAX_PENDING {
            return Err(lost(share, "pool is not answering shares"));
        }
        let Ok(extranonce) = B032::try_from(share.extranonce2.as_slice()) else {
            return Err(lost(share, "extranonce longer than 32 bytes"));
        };
        // SV2 submits the full version; SV1 miners send only the rolled bits.
        let pool_share = PoolShare::of(&share, &self.extranonce_prefix, REQUESTED_VERSION_MASK);
        let version = pool_share.version;
        let seen = self.sent.check(&pool_share);
        if let Some(outcome) = seen.refusal() {
            debug!(?seen, job_id, "share not sent to the pool");
            return Err(Verdict {
                reply: share.reply,
                outcome,
                difficulty: share.difficulty,
                block: share.block,
                sent: now,
            });
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.pending.push_back(Pending {
            seq,
            reply: share.reply,
            difficulty: share.difficulty,
            block: share.block,
            sent: now,
        });
        Ok(SubmitSharesExtended {
            channel_id: self.channel_id,
            sequence_number: seq,
            job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version,
            extranonce,
        })
    }

    /// `SubmitShares.Success`: every pending share up to `last_sequence_number` is accepted
    /// (errors for any of them came first, pools answer in order).
    pub fn on_success(&mut self, s: &SubmitSharesSuccess) -> Vec<Verdict> {
        let mut out = Vec::new();
        while let Some(p) = self.pending.front() {
            // Sequence numbers wrap: "up to" is a wrapping comparison.
            if (s.last_sequence_number.wrapping_sub(p.seq) as i32) < 0 {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                out.push(Verdict {
                    reply: p.reply,
                    outcome: SubmitOutcome::Accepted,
                    difficulty: p.difficulty,
                    block: p.block,
                    sent: p.sent,
                });
            }
        }
        if out.len() != s.new_submits_accepted_count as usize {
            debug!(
                acknowledged = out.len(),
                count = s.new_submits_accepted_count,
                "pool's accepted count differs from the shares it covers"
            );
        }
        out
    }

    /// `SubmitShares.Error`: the share with that sequence number is rejected.
    pub fn on_error(&mut self, e: &SubmitSharesError) -> Option<Verdict> {
        let pos = self.pending.iter().position(|p| p.seq == e.sequence_number);
        let Some(p) = pos.and_then(|i| self.pending.remove(i)) else {
            debug!(
                seq = e.sequence_number,
                "error for a share we are not waiting for"
            );
            return None;
        };
        Some(Verdict {
            reply: p.reply,
            outcome: SubmitOutcome::Rejected(stratum_error(&e.error_code.to_string_lossy())),
            difficulty: p.difficulty,
            block: p.block,
            sent: p.sent,
        })
    }

    /// Shares the pool has not answered within `timeout` are lost.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Verdict> {
        let mut out = Vec::new();
        while let Some(p) = self.pending.front() {
            if now.saturating_duration_since(p.sent) <= timeout {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                out.push(Verdict {
                    reply: p.reply,
                    outcome: SubmitOutcome::Lost("pool did not answer"),
                    difficulty: p.difficulty,
                    block: p.block,
                    sent: p.sent,
                });
            }
        }
        out
    }

    /// Every pending share is lost (the connection ended).
    pub fn fail_all(&mut self, why: &'static str) -> Vec<Verdict> {
        self.pending
            .drain(..)
            .map(|p| Verdict {
                reply: p.reply,
                outcome: SubmitOutcome::Lost(why),
                difficulty: p.difficulty,
                block: p.block,
                sent: p.sent,
            })
            .collect()
    }
}

/// The SV1 error an SV1 miner gets for an SV2 `SubmitShares.Error` code: the conventional
/// stratum code for the reason, and the pool's own code string in the message.
pub fn stratum_error(sv2_code: &str) -> StratumError {
    let kind = match sv2_code {
        code::STALE_SHARE | code::INVALID_JOB_ID => ErrorCode::JobNotFound,
        code::DUPLICATE_SHARE => ErrorCode::DuplicateShare,
        code::DIFFICULTY_TOO_LOW => ErrorCode::LowDifficulty,
        _ => ErrorCode::Other,
    };
    // The code comes from the pool: keep it printable and short.
    let shown: String = sv2_code
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    StratumError::with_message(kind, format!("{} (pool: {shown})", kind.message()))
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
