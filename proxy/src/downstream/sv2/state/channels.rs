//! A connection's channels: opening one (a slot from the pool manager on a connection with
//! work, then `Open*Success` and its first job), closing one, and giving new upstream jobs to
//! them, to the group at once when the miner allows it.

use std::sync::Arc;
use std::time::Instant;

use hashshift_protocol::sv2::constants::error_code::open_mining_channel;
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    B032, CloseChannel, Message, OpenExtendedMiningChannelSuccess, OpenMiningChannelError,
    OpenStandardMiningChannelSuccess, Str0255, U256,
};
use tracing::{info, warn};

use super::{Action, End, GROUP_CHANNEL_ID, Session, SlotWait, str0255};
use crate::downstream::sv2::channel::{Channel, ChannelKind, GroupJob};
use crate::pool_link::Assignment;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::work::{UpstreamJob, WorkState};

/// An `Open*MiningChannel` request, kept while a slot is sought.
#[derive(Clone, Debug)]
pub(in crate::downstream::sv2) struct OpenRequest {
    /// Standard or extended.
    pub kind: ChannelKind,
    /// Echoed in the answer.
    pub request_id: u32,
    /// The miner's hashrate estimate (suggests a starting difficulty).
    pub nominal_hash_rate: f32,
    /// The easiest target the miner takes (a difficulty floor).
    pub max_target: U256,
    /// Rollable extranonce bytes asked for (extended channels).
    pub min_extranonce_size: u16,
}

impl Session {
    pub(super) fn open_error(&mut self, request_id: u32, code: &str) {
        self.output
            .push(Message::OpenMiningChannelError(OpenMiningChannelError {
                request_id,
                error_code: str0255(code),
            }));
    }

    /// A channel open request: checked here, then a slot is asked for ([`Action::RequestSlot`]).
    pub(super) fn open(
        &mut self,
        request: OpenRequest,
        user_identity: &Str0255,
        now: Instant,
    ) -> Result<(), End> {
        if self.channels.len() >= self.settings.max_channels {
            self.open_error(
                request.request_id,
                open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED,
            );
            return self.count_error();
        }
        let worker: Arc<str> = user_identity.to_string_lossy().into();
        if !crate::downstream::valid_worker_name(&worker) {
            warn!("user_identity refused: empty or with control characters");
            self.open_error(
                request.request_id,
                open_mining_channel::INVALID_USER_IDENTITY,
            );
            return self.count_error();
        }
        if !self.opened_any {
            tracing::Span::current().record("worker", &*worker);
        }
        self.actions.push_back(Action::RequestSlot(worker.clone()));
        self.slot_wait = Some(SlotWait {
            request,
            worker,
            slot: None,
            deadline: now + self.settings.handshake_timeout,
            retry_at: None,
        });
        Ok(())
    }

    /// The pool manager found no slot: ask again shortly, unless the wait is over.
    pub(in crate::downstream::sv2) fn handle_no_slot(&mut self, now: Instant) {
        let Some(wait) = &mut self.slot_wait else {
            return;
        };
        if now >= wait.deadline {
            self.give_up_slot();
        } else {
            wait.retry_at = Some(now + super::ASSIGN_RETRY);
        }
    }

    /// The pool manager gave the new channel a slot, registered under `record` (made by the
    /// task: a fresh connection id, the worker name, movable); the connection's work follows
    /// through [`Session::handle_slot_work`].
    pub(in crate::downstream::sv2) fn handle_slot(
        &mut self,
        a: Assignment,
        record: Arc<MinerShared>,
    ) {
        if let Some(wait) = &mut self.slot_wait {
            wait.slot = Some((a, record));
        }
    }

    /// Work on the new channel's slot connection: once it is ready, the channel opens.
    /// Returns the new channel's id, when it opened.
    pub(in crate::downstream::sv2) fn handle_slot_work(
        &mut self,
        work: &WorkState,
        now: Instant,
    ) -> Option<u32> {
        let ready = self
            .slot_wait
            .as_ref()
            .is_some_and(|w| w.slot.is_some() && work.is_ready());
        if !ready {
            return None;
        }
        let wait = self.slot_wait.take()?;
        let (assignment, record) = wait.slot?;
        self.complete_open(wait.request, wait.worker, record, assignment, work, now)
    }

    /// The slot's connection ended before it had work, or the wait ran out.
    pub(in crate::downstream::sv2) fn give_up_slot(&mut self) {
        let Some(wait) = self.slot_wait.take() else {
            return;
        };
        if let Some((_, record)) = &wait.slot {
            self.actions.push_back(Action::Release(record.id));
        }
        warn!("no pool with work for a new channel");
        // No code says "no upstream"; this is the closest the spec has.
        self.open_error(
            wait.request.request_id,
            open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED,
        );
    }

    /// Opens the channel on its slot: `Open*Success` (or `OpenMiningChannel.Error`), then
    /// the first job.
    fn complete_open(
        &mut self,
        request: OpenRequest,
        worker: Arc<str>,
        shared: Arc<MinerShared>,
        assignment: Assignment,
        work: &WorkState,
        now: Instant,
    ) -> Option<u32> {
        let OpenRequest {
            kind, request_id, ..
        } = request;
        let id = self.next_channel_id;
        let mut ch = match Channel::open(
            id,
            kind,
            worker.clone(),
            shared.clone(),
            assignment,
            work,
            &self.settings.channel,
            request.nominal_hash_rate,
            &request.max_target,
            request.min_extranonce_size,
            now,
        ) {
            Ok(ch) => ch,
            Err(code) => {
                self.actions.push_back(Action::Release(shared.id));
                self.open_error(request_id, code);
                return None;
            }
        };
        self.next_channel_id = self
            .next_channel_id
            .wrapping_add(1)
            .max(GROUP_CHANNEL_ID + 1);
        let Ok(prefix) = B032::try_from(ch.extranonce().prefix.as_slice()) else {
            // `fit` guarantees at most 32 bytes.
            self.actions.push_back(Action::Release(shared.id));
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return None;
        };
        let success = match kind {
            ChannelKind::Standard => {
                Message::OpenStandardMiningChannelSuccess(OpenStandardMiningChannelSuccess {
                    request_id,
                    channel_id: id,
                    target: ch.target(),
                    extranonce_prefix: prefix,
                    group_channel_id: GROUP_CHANNEL_ID,
                })
            }
            ChannelKind::Extended => {
                Message::OpenExtendedMiningChannelSuccess(OpenExtendedMiningChannelSuccess {
                    request_id,
                    channel_id: id,
                    target: ch.target(),
                    extranonce_size: ch.extranonce().size as u16,
                    extranonce_prefix: prefix,
                    group_channel_id: GROUP_CHANNEL_ID,
                })
            }
        };
        self.output.push(success);
        // The first job, on the channel: future job + SetNewPrevHash (no previous hash yet).
        match ch.on_work(work, &mut self.output) {
            Ok(Some(job)) => ch.send_job(&job, job.clean, &mut self.output),
            Ok(None) => {}
            Err(_) => {
                // Unreachable: `open` already fitted the extranonce on this very work.
                self.actions.push_back(Action::Release(shared.id));
                return None;
            }
        }
        info!(
            channel = id,
            ?kind,
            worker = &*worker,
            difficulty = shared.difficulty.get(),
            "channel opened"
        );
        self.channels.insert(id, ch);
        self.opened_any = true;
        self.actions.push_back(Action::Opened(id));
        Some(id)
    }

    /// Closes a channel (the miner's request, or ours with a reason sent to the miner).
    pub(super) fn close_channel(&mut self, channel: u32, reason: Option<&str>) {
        let Some(mut ch) = self.channels.remove(&channel) else {
            return;
        };
        if let Some(m) = ch.take_batch() {
            self.output.push(m);
        }
        if let Some(reason) = reason {
            self.output.push(Message::CloseChannel(CloseChannel {
                channel_id: channel,
                reason_code: str0255(reason),
            }));
        }
        // Dropping the manager's entry drops the control sender: the control stream ends.
        self.actions.push_back(Action::Release(ch.shared.id));
        self.actions.push_back(Action::Closed(channel));
    }

    /// Gives `leader` (the channel whose work brought it) a new upstream job: to the whole
    /// group in one message when the miner takes group jobs and every channel of the
    /// connection is on that same job (a group job reaches every channel in the group, so it
    /// must be right for all of them), else on the channel alone.
    pub(super) fn give_job(&mut self, leader: u32, job: Arc<UpstreamJob>, version_rolling: bool) {
        let takes_group_jobs = self
            .setup
            .is_some_and(|f| f & setup_flags::REQUIRES_STANDARD_JOBS == 0);
        let Some(ch) = self.channels.get(&leader) else {
            return;
        };
        if takes_group_jobs && self.channels.len() > 1 {
            let group = GroupJob::new(job.clone(), ch);
            let all = self
                .channels
                .iter_mut()
                .all(|(&id, c)| id == leader || c.ready_for(&group));
            if all {
                let mut joined = true;
                for c in self.channels.values_mut() {
                    joined &= c.join_group_job(&group, &mut self.output);
                }
                if joined {
                    self.output
                        .extend(group.messages(GROUP_CHANNEL_ID, version_rolling));
                }
                return;
            }
        }
        if let Some(ch) = self.channels.get_mut(&leader) {
            ch.send_job(&job, job.clean, &mut self.output);
        }
    }
}
