//! One SV2 mining channel (sv2-spec 05 §5.2, §5.3): its extranonce on the upstream session,
//! its jobs, share validation, vardiff and the batch of acknowledgements not yet sent.
//!
//! Sans-IO: methods take the upstream [`WorkState`] and push the messages to send into an
//! outbox; the connection state ([`super::state`]) owns the channels, its task the socket.
//!
//! Each channel is one "miner" for the [`PoolManager`](crate::upstream::manager::PoolManager):
//! it has its own extranonce slot on an upstream connection, so channels never search the same
//! space and the manager can move them one by one.
//!
//! - **Standard channels** (header-only mining, what SV2 ASIC firmware opens): the channel's
//!   whole extranonce is fixed (the miner's slot, zero-padded to the pool's extranonce2 size),
//!   so the proxy builds the full coinbase per upstream job and sends the merkle root in
//!   `NewMiningJob`.
//! - **Extended channels**: `extranonce_prefix` is the miner's extranonce1 (pool extranonce1 ‖
//!   slot ‖ padding) and the miner rolls `extranonce_size` bytes; jobs are the upstream's
//!   coinbase halves and merkle path (`NewExtendedMiningJob`).
//!
//! Job order follows SRI: a job on a new previous hash goes out as a future job followed by
//! `SetNewPrevHash` with the same job id; later jobs on the same previous hash are sent active
//! (`min_ntime` set). A difficulty change sends `SetTarget` and re-issues the current job
//! under a new id, so every job is judged at the target in force when it was sent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use hashshift_protocol::share::target::difficulty_for_hashrate;
use hashshift_protocol::share::{
    Rejection, ShareValidator, Submission, SubmittedVersion, Target, ValidatorConfig,
};
use hashshift_protocol::sv2::constants::error_code::{open_mining_channel, update_channel};
use hashshift_protocol::sv2::{
    B032, Message, SetExtranoncePrefix, SetTarget, SubmitSharesSuccess, U256,
};
use tokio::sync::oneshot;

use crate::downstream::vardiff::{Vardiff, VardiffSettings};
use crate::pool_link::Assignment;
use crate::pool_link::extranonce::MinerExtranonce;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::pool_link::work::{UpstreamJob, WorkState};
use crate::telemetry::RejectReason;

mod jobs;

pub use jobs::GroupJob;

/// Jobs a channel may still submit to (older ones are stale).
const JOBS_KEPT: usize = 8;

/// Which kind of channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// Header-only mining: the proxy sends merkle roots.
    Standard,
    /// The miner rolls an extranonce inside the coinbase.
    Extended,
}

/// Settings every channel of a listener shares.
#[derive(Clone, Copy, Debug)]
pub struct ChannelSettings {
    /// Vardiff bounds and rate.
    pub vardiff: VardiffSettings,
    /// Starting difficulty (before the miner's nominal hashrate is taken into account).
    pub initial_difficulty: f64,
}

/// A channel's extranonce on its current upstream session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelExtranonce {
    /// `extranonce_prefix` as the miner sees it: pool extranonce1 ‖ slot ‖ padding.
    pub prefix: Vec<u8>,
    /// What precedes the miner's bytes in the pool's extranonce2 (slot ‖ padding).
    pub upstream_prefix: Vec<u8>,
    /// Bytes the miner rolls (0 on standard channels).
    pub size: usize,
}

/// Rollable extranonce bytes an extended channel gets unless it asks for more: 2^32
/// coinbases per job, each with the whole nonce and version-rolling space, is more than any
/// device or translator behind one channel can exhaust.
pub const EXTENDED_EXTRANONCE_BYTES: usize = 4;

impl ChannelExtranonce {
    /// Fits a channel that rolls `size` bytes onto a miner slot's `layout` (whose slot takes
    /// `prefix_bytes` of the pool's extranonce2). The miner's part may be smaller or larger
    /// than the layout's own (capped for SV1 firmware), down to 0 and up to everything after
    /// the slot: only zero padding moves between prefix and miner part. `None` if it does not
    /// fit, or if the prefix would exceed 32 bytes (`B0_32`).
    pub fn fit(layout: &MinerExtranonce, prefix_bytes: usize, size: usize) -> Option<Self> {
        let pool_extranonce2 = layout.upstream_prefix.len() + layout.extranonce2_size;
        let keep = pool_extranonce2.checked_sub(size)?;
        if keep < prefix_bytes.clamp(1, 4) {
            return None;
        }
        let pool_extranonce1 = layout
            .extranonce1
            .len()
            .checked_sub(layout.upstream_prefix.len())?;
        let mut upstream_prefix = layout.upstream_prefix.clone();
        upstream_prefix.resize(keep, 0);
        let mut prefix = layout.extranonce1.get(..pool_extranonce1)?.to_vec();
        prefix.extend_from_slice(&upstream_prefix);
        (prefix.len() <= 32).then_some(ChannelExtranonce {
            prefix,
            upstream_prefix,
            size,
        })
    }
}

/// The new upstream session leaves no room for the channel's extranonce: the channel must
/// be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no room for the channel's extranonce on the new upstream session")]
pub struct ExtranonceUnavailable;

/// What became of a share.
#[derive(Debug)]
pub enum ShareResult {
    /// Refused by the proxy's own validation: answer `SubmitShares.Error`.
    Rejected(Rejection),
    /// Valid, below the pool's target: acknowledged by the proxy (already counted).
    Accepted,
    /// Valid and meets the pool's target: goes up; the answer waits for the pool's verdict.
    Upstream {
        /// The share for the pool connection.
        submit: UpstreamSubmit,
        /// Where the verdict arrives.
        verdict: oneshot::Receiver<SubmitOutcome>,
        /// Difficulty to credit if the pool accepts.
        credited: f64,
    },
}

/// A share as an SV2 miner states it (standard or extended).
#[derive(Clone, Copy, Debug)]
pub struct SubmittedShare<'a> {
    /// Sequence number, echoed in the answer.
    pub sequence_number: u32,
    /// Job id on this channel.
    pub job_id: u32,
    /// Header nonce.
    pub nonce: u32,
    /// Header time.
    pub ntime: u32,
    /// Full header version.
    pub version: u32,
    /// The miner's extranonce (empty on standard channels).
    pub extranonce: &'a [u8],
}

/// Acknowledgements not yet sent (`SubmitShares.Success` may cover many shares).
#[derive(Debug, Default)]
struct Batch {
    count: u32,
    last_sequence_number: u32,
    difficulty_sum: f64,
}

/// See the module docs.
pub struct Channel {
    /// Channel id on the connection.
    pub id: u32,
    /// Standard or extended.
    pub kind: ChannelKind,
    /// The miner's `user_identity`, the worker name shares go up under.
    pub worker: Arc<str>,
    /// The manager's record for this channel.
    pub shared: Arc<MinerShared>,
    /// Where the channel's shares go.
    pub assignment: Assignment,
    /// Bumped on every reassignment; work from an older connection is ignored.
    pub generation: u64,
    /// Upstream session the extranonce belongs to (0: must be recomputed).
    session: u64,
    extranonce: ChannelExtranonce,
    validator: ShareValidator,
    vardiff: Vardiff,
    /// Lowest difficulty the miner takes (from its `max_target`).
    floor: f64,
    sent_difficulty: f64,
    version_mask: u32,
    jobs: VecDeque<(u32, Arc<UpstreamJob>)>,
    last_upstream: Option<Arc<UpstreamJob>>,
    prev_hash: Option<[u8; 32]>,
    batch: Batch,
}

/// The difficulty a channel is given: vardiff's, but never above the pool's difficulty for
/// `job` (above it every share would go up, and the pool would credit each at its own lower
/// difficulty: the miner's work under-counted), and never below the miner's floor.
fn capped(vardiff: f64, job: Option<&UpstreamJob>, floor: f64) -> f64 {
    let d = match job.map(|j| j.pool_difficulty) {
        Some(pool) if pool.is_finite() && pool > 0.0 => vardiff.min(pool),
        _ => vardiff,
    };
    d.max(floor)
}

/// The difficulty a miner's `max_target` allows at least (its floor).
fn floor_of(max_target: &U256) -> f64 {
    Target::from_le_bytes(*max_target).to_difficulty()
}

impl Channel {
    /// Opens a channel on `work` (ready) of `assignment`. `min_extranonce_size` is ignored for
    /// standard channels. Errors are `OpenMiningChannel.Error` codes.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        id: u32,
        kind: ChannelKind,
        worker: Arc<str>,
        shared: Arc<MinerShared>,
        assignment: Assignment,
        work: &WorkState,
        settings: &ChannelSettings,
        nominal_hash_rate: f32,
        max_target: &U256,
        min_extranonce_size: u16,
        now: Instant,
    ) -> Result<Channel, &'static str> {
        let layout = MinerExtranonce::new(
            &work.extranonce1,
            work.extranonce2_size,
            assignment.prefix_bytes,
            assignment.slot,
        )
        .ok_or(open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED)?;
        let size = match kind {
            ChannelKind::Standard => 0,
            ChannelKind::Extended => {
                // What the miner asked for, or a few bytes if it asked for less: the smaller
                // the channel's rollable part, the more pools it still fits after a failover
                // (its size cannot change, SetExtranoncePrefix only moves the prefix).
                let room = (layout.upstream_prefix.len() + layout.extranonce2_size)
                    .saturating_sub(assignment.prefix_bytes.clamp(1, 4));
                usize::from(min_extranonce_size).max(EXTENDED_EXTRANONCE_BYTES.min(room))
            }
        };
        let extranonce = ChannelExtranonce::fit(&layout, assignment.prefix_bytes, size)
            .ok_or(open_mining_channel::MIN_EXTRANONCE_SIZE_TOO_LARGE)?;
        let floor = floor_of(max_target);
        if floor > settings.vardiff.max {
            return Err(open_mining_channel::MAX_TARGET_OUT_OF_RANGE);
        }
        if !(nominal_hash_rate.is_finite() && nominal_hash_rate >= 0.0) {
            return Err(open_mining_channel::INVALID_NOMINAL_HASHRATE);
        }
        let mut vardiff = Vardiff::new(settings.vardiff, settings.initial_difficulty, now);
        vardiff.set_floor(floor, now);
        if nominal_hash_rate > 0.0 {
            vardiff.suggest(
                Self::difficulty_for(settings.vardiff, nominal_hash_rate),
                now,
            );
        }
        let difficulty = capped(vardiff.difficulty(), work.job.as_deref(), floor);
        let validator = ShareValidator::new(
            ValidatorConfig {
                max_jobs: JOBS_KEPT,
                version_rolling_mask: work.version_mask,
                extranonce_size: size,
                ..ValidatorConfig::default()
            },
            extranonce.prefix.clone(),
            Target::from_difficulty(difficulty).unwrap_or(Target::DIFF1),
        );
        shared.difficulty.set(difficulty);
        Ok(Channel {
            id,
            kind,
            worker,
            shared,
            assignment,
            generation: 0,
            session: work.session,
            extranonce,
            validator,
            vardiff,
            floor,
            sent_difficulty: difficulty,
            version_mask: work.version_mask,
            jobs: VecDeque::new(),
            last_upstream: None,
            prev_hash: None,
            batch: Batch::default(),
        })
    }

    fn difficulty_for(settings: VardiffSettings, hashrate: f32) -> f64 {
        difficulty_for_hashrate(f64::from(hashrate), 60.0 / settings.shares_per_minute)
    }

    /// The target in force (sent in `Open*Success` and `SetTarget`).
    pub fn target(&self) -> U256 {
        self.validator.miner_target().to_le_bytes()
    }

    /// The channel's extranonce on its current session.
    pub fn extranonce(&self) -> &ChannelExtranonce {
        &self.extranonce
    }

    /// Brings the channel up to date with its connection's work: a new extranonce after a
    /// session change (`SetExtranoncePrefix`), the version mask. Returns the job the channel
    /// has not been given yet, for the caller to send on the channel ([`Channel::send_job`])
    /// or to its group ([`Channel::join_group_job`]).
    pub fn on_work(
        &mut self,
        work: &WorkState,
        out: &mut Vec<Message>,
    ) -> Result<Option<Arc<UpstreamJob>>, ExtranonceUnavailable> {
        if work.session != self.session {
            if !work.is_ready() {
                return Ok(None); // not subscribed upstream yet: wait
            }
            self.change_session(work, out)?;
        }
        if work.version_mask != self.version_mask {
            self.version_mask = work.version_mask;
            self.validator.set_version_rolling_mask(work.version_mask);
        }
        let Some(job) = work.job.clone() else {
            return Ok(None);
        };
        if self
            .last_upstream
            .as_ref()
            .is_some_and(|j| Arc::ptr_eq(j, &job))
        {
            return Ok(None);
        }
        Ok(Some(job))
    }

    /// The upstream session the channel's extranonce belongs to.
    pub fn session(&self) -> u64 {
        self.session
    }

    fn change_session(
        &mut self,
        work: &WorkState,
        out: &mut Vec<Message>,
    ) -> Result<(), ExtranonceUnavailable> {
        let a = &self.assignment;
        let layout = MinerExtranonce::new(
            &work.extranonce1,
            work.extranonce2_size,
            a.prefix_bytes,
            a.slot,
        )
        .ok_or(ExtranonceUnavailable)?;
        let extranonce = ChannelExtranonce::fit(&layout, a.prefix_bytes, self.extranonce.size)
            .ok_or(ExtranonceUnavailable)?;
        let prefix =
            B032::try_from(extranonce.prefix.as_slice()).map_err(|_| ExtranonceUnavailable)?;
        self.validator
            .set_extranonce_prefix(extranonce.prefix.clone());
        self.validator.retire_all();
        self.jobs.clear();
        self.last_upstream = None;
        self.prev_hash = None;
        self.extranonce = extranonce;
        self.session = work.session;
        out.push(Message::SetExtranoncePrefix(SetExtranoncePrefix {
            channel_id: self.id,
            extranonce_prefix: prefix,
        }));
        Ok(())
    }

    /// Moves the channel to another upstream connection: the next work it sees recomputes
    /// the extranonce (and announces it with `SetExtranoncePrefix`).
    pub fn reassign(&mut self, assignment: Assignment) {
        self.shared.set_pool(assignment.pool);
        self.assignment = assignment;
        self.session = 0;
        self.generation += 1;
    }

    pub(super) fn send_target_if_changed(
        &mut self,
        job: Option<&UpstreamJob>,
        out: &mut Vec<Message>,
    ) {
        let d = capped(self.vardiff.difficulty(), job, self.floor);
        if d == self.sent_difficulty {
            return;
        }
        self.sent_difficulty = d;
        self.shared.difficulty.set(d);
        self.validator
            .set_miner_target(Target::from_difficulty(d).unwrap_or(Target::DIFF1));
        out.push(Message::SetTarget(SetTarget {
            channel_id: self.id,
            maximum_target: self.target(),
        }));
    }

    /// A new difficulty: `SetTarget` and the current job re-issued (not clean, so shares in
    /// flight on the previous issue still count).
    fn retarget(&mut self, out: &mut Vec<Message>) {
        let d = capped(
            self.vardiff.difficulty(),
            self.last_upstream.as_deref(),
            self.floor,
        );
        if d == self.sent_difficulty {
            return;
        }
        match self.last_upstream.clone() {
            Some(job) => self.send_job(&job, false, out),
            None => self.send_target_if_changed(None, out),
        }
    }

    /// Periodic vardiff check.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Message>) {
        if self.vardiff.poll(now).is_some() {
            self.retarget(out);
        }
    }

    /// `UpdateChannel`: a new nominal hashrate (suggests a difficulty) and maximum target
    /// (a difficulty floor). Errors are `UpdateChannel.Error` codes.
    pub fn update(
        &mut self,
        nominal_hash_rate: f32,
        maximum_target: &U256,
        settings: &ChannelSettings,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Result<(), &'static str> {
        if !(nominal_hash_rate.is_finite() && nominal_hash_rate >= 0.0) {
            return Err(update_channel::INVALID_NOMINAL_HASHRATE);
        }
        let floor = floor_of(maximum_target);
        if floor > settings.vardiff.max {
            return Err(update_channel::MAX_TARGET_OUT_OF_RANGE);
        }
        self.floor = floor;
        self.vardiff.set_floor(floor, now);
        if nominal_hash_rate > 0.0 {
            self.vardiff.suggest(
                Self::difficulty_for(settings.vardiff, nominal_hash_rate),
                now,
            );
        }
        self.retarget(out);
        Ok(())
    }

    /// Validates a share; on success it is either acknowledged here or prepared for the pool.
    pub fn submit(&mut self, share: &SubmittedShare<'_>) -> ShareResult {
        let submission = Submission {
            job_id: share.job_id,
            extranonce: share.extranonce,
            ntime: share.ntime,
            nonce: share.nonce,
            version: SubmittedVersion::Full(share.version),
        };
        let accepted = match self.validator.validate(&submission) {
            Ok(a) => a,
            Err(r) => {
                self.shared.counters.reject(RejectReason::from(&r));
                return ShareResult::Rejected(r);
            }
        };
        let credited = accepted.credited_difficulty;
        let upstream = self
            .jobs
            .iter()
            .find(|(id, _)| *id == share.job_id)
            .map(|(_, j)| j.clone())
            .filter(|j| accepted.is_block || j.pool_target.is_met_by(&accepted.hash));
        let Some(job) = upstream else {
            self.accept(share.sequence_number, credited);
            return ShareResult::Accepted;
        };
        if accepted.is_block {
            let mut shown = accepted.hash;
            shown.reverse();
            tracing::info!(hash = %hex::encode(shown), pool_job = %job.pool_job_id, "BLOCK FOUND");
            self.shared.counters.block();
        }
        let mut extranonce2 = self.extranonce.upstream_prefix.clone();
        if self.kind == ChannelKind::Extended {
            extranonce2.extend_from_slice(share.extranonce);
        }
        let (reply, verdict) = oneshot::channel();
        let submit = UpstreamSubmit {
            worker: self.worker.clone(),
            difficulty: job.pool_difficulty,
            block: accepted.is_block,
            job,
            extranonce2,
            ntime: share.ntime,
            nonce: share.nonce,
            version_bits: (self.version_mask != 0).then_some(share.version & self.version_mask),
            reply,
        };
        ShareResult::Upstream {
            submit,
            verdict,
            credited,
        }
    }

    /// Counts an accepted share and adds it to the acknowledgement batch.
    pub fn accept(&mut self, sequence_number: u32, credited: f64) {
        // The last-share time is stamped by the connection task (a wall-clock read).
        self.shared.counters.accept(credited);
        self.vardiff.on_share(credited);
        self.batch.count += 1;
        self.batch.last_sequence_number = sequence_number;
        self.batch.difficulty_sum += credited;
    }

    /// Acknowledgements waiting in the batch.
    pub fn batched(&self) -> u32 {
        self.batch.count
    }

    /// Takes the batch as one `SubmitShares.Success`, if it holds any share.
    /// `new_shares_sum` is the sum of the shares' difficulties, truncated as SRI does.
    pub fn take_batch(&mut self) -> Option<Message> {
        if self.batch.count == 0 {
            return None;
        }
        let b = std::mem::take(&mut self.batch);
        Some(Message::SubmitSharesSuccess(SubmitSharesSuccess {
            channel_id: self.id,
            last_sequence_number: b.last_sequence_number,
            new_submits_accepted_count: b.count,
            new_shares_sum: b.difficulty_sum as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extranonce_fits_any_size_up_to_the_room_after_the_slot() {
        // Pool: extranonce1 aabb, extranonce2 8 bytes; proxy slot 2 bytes (0x0102).
        let layout = MinerExtranonce::new(&[0xaa, 0xbb], 8, 2, 0x0102).unwrap();
        let std = ChannelExtranonce::fit(&layout, 2, 0).unwrap();
        assert_eq!(std.prefix, [0xaa, 0xbb, 1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(std.upstream_prefix, [1, 2, 0, 0, 0, 0, 0, 0]);
        let ext = ChannelExtranonce::fit(&layout, 2, 6).unwrap();
        assert_eq!(ext.prefix, [0xaa, 0xbb, 1, 2]);
        assert_eq!(ext.upstream_prefix, [1, 2]);
        assert_eq!(ChannelExtranonce::fit(&layout, 2, 7), None, "slot kept");
        // A pool with a wide extranonce2: the layout caps the miner at 8, a channel may take more.
        let wide = MinerExtranonce::new(&[0xaa], 16, 2, 7).unwrap();
        let big = ChannelExtranonce::fit(&wide, 2, 12).unwrap();
        assert_eq!(big.prefix, [0xaa, 0, 7, 0, 0]);
        assert_eq!(big.upstream_prefix.len() + big.size, 16);
    }
}
