//! A connection's channels: opening one (an extranonce slot from the pool manager, then
//! `Open*Success` and its first job), closing one, and giving new upstream jobs to them, to
//! the group at once when the miner allows it.

use std::sync::Arc;
use std::time::Instant;

use hashshift_protocol::sv2::constants::error_code::open_mining_channel;
use hashshift_protocol::sv2::constants::setup_flags;
use hashshift_protocol::sv2::{
    B032, CloseChannel, Message, OpenExtendedMiningChannelSuccess, OpenMiningChannelError,
    OpenStandardMiningChannelSuccess, Str0255, U256,
};
use tracing::{info, warn};

use super::{Conn, End, GROUP_CHANNEL_ID, str0255};
use crate::downstream::listener::next_conn_id;
use crate::downstream::sv2::channel::{Channel, ChannelKind, GroupJob};
use crate::downstream::sv2::events::{assign, control_stream, work_stream};
use crate::pool_link::miner::MinerShared;
use crate::pool_link::work::UpstreamJob;

impl Conn {
    pub(super) fn open_error(&mut self, request_id: u32, code: &str) {
        self.outbox
            .push(Message::OpenMiningChannelError(OpenMiningChannelError {
                request_id,
                error_code: str0255(code),
            }));
    }

    /// Opens a channel: an extranonce slot on a pool with work, `Open*Success` (or
    /// `OpenMiningChannel.Error`), then the first job.
    pub(super) async fn open(
        &mut self,
        kind: ChannelKind,
        request_id: u32,
        user_identity: &Str0255,
        nominal_hash_rate: f32,
        max_target: &U256,
        min_extranonce_size: u16,
    ) -> Result<(), End> {
        if self.channels.len() >= self.settings.max_channels {
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return self.count_error();
        }
        let worker: Arc<str> = user_identity.to_string_lossy().into();
        if !crate::downstream::valid_worker_name(&worker) {
            warn!("user_identity refused: empty or with control characters");
            self.open_error(request_id, open_mining_channel::INVALID_USER_IDENTITY);
            return self.count_error();
        }
        if !self.opened_any {
            tracing::Span::current().record("worker", &*worker);
        }
        let shared = Arc::new(
            MinerShared::new(next_conn_id(), self.peer).with_totals(&self.settings.stats.shares),
        );
        shared.set_worker(&worker);
        // SV2 channels can always be moved: SetExtranoncePrefix exists for that.
        shared.set_movable(true);
        let Some((assignment, control, work)) =
            assign(&self.manager, &shared, self.settings.handshake_timeout).await
        else {
            warn!("no pool with work for a new channel");
            // No code says "no upstream"; this is the closest the spec has.
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return Ok(());
        };
        let id = self.next_channel_id;
        let mut ch = match Channel::open(
            id,
            kind,
            worker.clone(),
            shared.clone(),
            assignment,
            &work,
            &self.settings.channel,
            nominal_hash_rate,
            max_target,
            min_extranonce_size,
            Instant::now(),
        ) {
            Ok(ch) => ch,
            Err(code) => {
                self.manager.release(shared.id);
                self.open_error(request_id, code);
                return Ok(());
            }
        };
        self.next_channel_id = self
            .next_channel_id
            .wrapping_add(1)
            .max(GROUP_CHANNEL_ID + 1);
        let Ok(prefix) = B032::try_from(ch.extranonce().prefix.as_slice()) else {
            // `fit` guarantees at most 32 bytes.
            self.manager.release(shared.id);
            self.open_error(request_id, open_mining_channel::CHANNEL_CAPACITY_EXHAUSTED);
            return Ok(());
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
        self.outbox.push(success);
        // The first job, on the channel: future job + SetNewPrevHash (no previous hash yet).
        match ch.on_work(&work, &mut self.outbox) {
            Ok(Some(job)) => ch.send_job(&job, job.clean, &mut self.outbox),
            Ok(None) => {}
            Err(_) => {
                // Unreachable: `open` already fitted the extranonce on this very work.
                self.manager.release(shared.id);
                return Ok(());
            }
        }
        info!(
            channel = id,
            ?kind,
            worker = &*worker,
            difficulty = shared.difficulty.get(),
            "channel opened"
        );
        self.events.push(work_stream(
            id,
            ch.generation,
            ch.assignment.conn.work.clone(),
            ch.work_stop.clone(),
        ));
        self.events.push(control_stream(id, control));
        self.channels.insert(id, ch);
        self.opened_any = true;
        Ok(())
    }

    /// Closes a channel (the miner's request, or ours with a reason sent to the miner).
    pub(super) fn close_channel(&mut self, channel: u32, reason: Option<&str>) {
        let Some(mut ch) = self.channels.remove(&channel) else {
            return;
        };
        if let Some(m) = ch.take_batch() {
            self.outbox.push(m);
        }
        if let Some(reason) = reason {
            self.outbox.push(Message::CloseChannel(CloseChannel {
                channel_id: channel,
                reason_code: str0255(reason),
            }));
        }
        // Dropping the manager's entry drops the control sender: the control stream ends.
        self.manager.release(ch.shared.id);
        ch.work_stop.cancel();
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
                    joined &= c.join_group_job(&group, &mut self.outbox);
                }
                if joined {
                    self.outbox
                        .extend(group.messages(GROUP_CHANNEL_ID, version_rolling));
                }
                return;
            }
        }
        if let Some(ch) = self.channels.get_mut(&leader) {
            ch.send_job(&job, job.clean, &mut self.outbox);
        }
    }
}
