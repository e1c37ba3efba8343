//! How a channel is given jobs: on the channel itself (`NewMiningJob` for standard channels,
//! `NewExtendedMiningJob` for extended ones), or as a member of its connection's group
//! channel, where one `NewExtendedMiningJob` (and `SetNewPrevHash`) on the group id serves
//! every channel of the connection on the same upstream job (sv2-spec 05 §5.2.3: a device
//! that did not set `REQUIRES_STANDARD_JOBS` computes a standard channel's merkle root from
//! the coinbase and its own `extranonce_prefix`). SRI's pool sends group jobs the same way.
//!
//! Either way the channel registers the job in its validator under the id the miner will
//! submit, and remembers it (`jobs`, `last_upstream`, `prev_hash`).

use std::sync::Arc;

use hashshift_protocol::share::hash::sha256d;
use hashshift_protocol::share::merkle::merkle_root;
use hashshift_protocol::share::{Job, StandardJob};
use hashshift_protocol::sv2::{
    B064K, Message, NewExtendedMiningJob, NewMiningJob, Seq0255, SetNewPrevHash,
};
use tracing::warn;

use super::{Channel, ChannelKind, JOBS_KEPT};
use crate::pool_link::work::{UpstreamJob, next_job_id};
use hashshift_protocol::share::allows_bip320_rolling;

/// `NewExtendedMiningJob` for `up` on `channel_id` (a channel or a group), or `None` when the
/// upstream job does not fit SV2's field sizes.
fn extended_job_message(
    channel_id: u32,
    job_id: u32,
    up: &UpstreamJob,
    min_ntime: Option<u32>,
    version_rolling: bool,
) -> Option<Message> {
    let ext = &up.job;
    let (Ok(path), Ok(prefix), Ok(suffix)) = (
        Seq0255::try_from(ext.merkle_branch.clone()),
        B064K::try_from(ext.coinbase_prefix.clone()),
        B064K::try_from(ext.coinbase_suffix.clone()),
    ) else {
        warn!(
            channel_id,
            "upstream job does not fit an SV2 extended job; not sent"
        );
        return None;
    };
    Some(Message::NewExtendedMiningJob(NewExtendedMiningJob {
        channel_id,
        job_id,
        min_ntime,
        version: ext.version,
        version_rolling_allowed: version_rolling,
        merkle_path: path,
        coinbase_tx_prefix: prefix,
        coinbase_tx_suffix: suffix,
    }))
}

/// `SetNewPrevHash` activating `job_id` on `channel_id`.
fn prev_hash_message(channel_id: u32, job_id: u32, up: &UpstreamJob) -> Message {
    Message::SetNewPrevHash(SetNewPrevHash {
        channel_id,
        job_id,
        prev_hash: up.job.prev_hash,
        min_ntime: up.job.ntime,
        nbits: up.job.nbits,
    })
}

/// A job for a whole group, built by [`GroupJob::new`] and joined by its member channels.
pub struct GroupJob {
    /// The upstream job.
    pub up: Arc<UpstreamJob>,
    /// The id every member registers it under.
    pub job_id: u32,
    /// Whether it is a future job (the members' previous hash differs).
    pub future: bool,
}

impl GroupJob {
    /// A group job for `up`, future or not as `leader` (the channel whose work brought it)
    /// would have it.
    pub fn new(up: Arc<UpstreamJob>, leader: &Channel) -> GroupJob {
        GroupJob {
            future: leader.is_future(&up),
            up,
            job_id: next_job_id(),
        }
    }

    /// The group's messages, to follow the members' `SetTarget`s.
    pub fn messages(&self, group_channel_id: u32, version_rolling: bool) -> Vec<Message> {
        let min_ntime = (!self.future).then_some(self.up.job.ntime);
        let Some(job) = extended_job_message(
            group_channel_id,
            self.job_id,
            &self.up,
            min_ntime,
            version_rolling,
        ) else {
            return Vec::new();
        };
        let mut out = vec![job];
        if self.future {
            out.push(prev_hash_message(group_channel_id, self.job_id, &self.up));
        }
        out
    }
}

impl Channel {
    /// Whether `up` would be a future job for this channel (a previous hash it has not seen).
    pub fn is_future(&self, up: &UpstreamJob) -> bool {
        self.prev_hash != Some(up.job.prev_hash)
    }

    /// Whether this channel can take `group`'s job now: its connection's current work (the
    /// version mask brought up to date) is that very job, in the channel's session, and the
    /// channel agrees on future-ness. The leader is ready by construction.
    pub fn ready_for(&mut self, group: &GroupJob) -> bool {
        let current = self.assignment.conn.work.borrow().clone();
        if current.session != self.session {
            return false; // a SetExtranoncePrefix is due first
        }
        // Same session: `on_work` only syncs the version mask and writes no message.
        let mut none = Vec::new();
        match self.on_work(&current, &mut none) {
            Ok(Some(job)) => Arc::ptr_eq(&job, &group.up) && self.is_future(&job) == group.future,
            _ => false,
        }
    }

    /// Takes `group`'s job as a member: `SetTarget` into `out` if the difficulty changed, and
    /// the job registered under the group's id. The group's messages follow. Returns false
    /// when the job cannot be validated (then the channel is given nothing).
    pub fn join_group_job(&mut self, group: &GroupJob, out: &mut Vec<Message>) -> bool {
        self.send_target_if_changed(Some(&group.up), out);
        let clean = group.future || group.up.clean;
        self.register(&group.up, group.job_id, clean)
    }

    /// Sends `up` on this channel under a fresh id: future job + `SetNewPrevHash` on a new
    /// previous hash, an active job otherwise; `SetTarget` first if the difficulty changed.
    pub fn send_job(&mut self, up: &Arc<UpstreamJob>, clean: bool, out: &mut Vec<Message>) {
        self.send_target_if_changed(Some(up), out);
        let job_id = next_job_id();
        let future = self.is_future(up);
        let min_ntime = (!future).then_some(up.job.ntime);
        let message = match self.kind {
            ChannelKind::Standard => Some(Message::NewMiningJob(NewMiningJob {
                channel_id: self.id,
                job_id,
                min_ntime,
                version: up.job.version,
                merkle_root: self.standard_merkle_root(up),
            })),
            ChannelKind::Extended => {
                let rolling = allows_bip320_rolling(self.version_mask);
                extended_job_message(self.id, job_id, up, min_ntime, rolling)
            }
        };
        let Some(message) = message else { return };
        if !self.register(up, job_id, future || clean) {
            return;
        }
        out.push(message);
        if future {
            out.push(prev_hash_message(self.id, job_id, up));
        }
    }

    /// The merkle root of `up` with this channel's whole extranonce (standard channels).
    fn standard_merkle_root(&self, up: &UpstreamJob) -> [u8; 32] {
        let coinbase = up.job.coinbase(&self.extranonce.prefix, &[]);
        merkle_root(&sha256d(&coinbase), &up.job.merkle_branch)
    }

    /// Registers `up` as `job_id` in the validator and the channel's job list; a clean job
    /// (or a new previous hash) retires the older ones.
    fn register(&mut self, up: &Arc<UpstreamJob>, job_id: u32, clean: bool) -> bool {
        let ext = &up.job;
        let job = match self.kind {
            ChannelKind::Standard => Job::Standard(StandardJob {
                version: ext.version,
                prev_hash: ext.prev_hash,
                merkle_root: self.standard_merkle_root(up),
                nbits: ext.nbits,
                ntime: ext.ntime,
            }),
            ChannelKind::Extended => Job::Extended(ext.clone()),
        };
        // Keyed by the pool's job: an UpdateChannel or vardiff re-issue under a new id shares
        // the duplicate set of the earlier issues.
        if self
            .validator
            .add_job_for_work(job_id, job, clean, up.work)
            .is_err()
        {
            warn!(
                channel = self.id,
                "upstream job has invalid nbits; not sent"
            );
            return false;
        }
        if clean {
            self.jobs.clear();
        }
        self.jobs.push_back((job_id, up.clone()));
        while self.jobs.len() > JOBS_KEPT {
            self.jobs.pop_front();
        }
        self.last_upstream = Some(up.clone());
        self.prev_hash = Some(ext.prev_hash);
        true
    }
}
