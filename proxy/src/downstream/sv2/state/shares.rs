//! A connection's shares: each one validated by its channel, answered here at once or sent
//! to the pool ([`Action::Submit`]), whose verdict comes back as a [`Verdict`]; acceptances
//! are batched into `SubmitShares.Success` messages, rejections answered one by one with the
//! spec's codes.

use std::time::{Duration, Instant};

use hashshift_protocol::share::Rejection;
use hashshift_protocol::sv2::constants::error_code::submit_shares;
use hashshift_protocol::sv2::{Message, SubmitSharesError};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::{Action, End, Session, str0255};
use crate::downstream::sv2::channel::{Channel, ShareResult, SubmittedShare};
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::telemetry::RejectReason;

/// A share for the pool, with what is needed to relay its verdict.
#[derive(Debug)]
pub(in crate::downstream::sv2) struct ShareUp {
    /// The channel it came on.
    pub channel: u32,
    /// Its sequence number, for the answer.
    pub sequence_number: u32,
    /// The share for the pool connection.
    pub submit: UpstreamSubmit,
    /// Where the verdict arrives.
    pub verdict: oneshot::Receiver<SubmitOutcome>,
    /// Difficulty to credit if the pool accepts.
    pub credited: f64,
    /// When it was read.
    pub read_at: Instant,
}

/// A pool's answer on a share that went up, with what is needed to relay it.
#[derive(Debug)]
pub(in crate::downstream::sv2) struct Verdict {
    /// The channel it came on.
    pub channel: u32,
    /// Its sequence number.
    pub sequence_number: u32,
    /// What the pool said.
    pub outcome: SubmitOutcome,
    /// Difficulty to credit if accepted.
    pub credited: f64,
    /// When it was read.
    pub read_at: Instant,
}

/// The SV2 code for a pool's SV1 rejection (codes 21-23 of the de-facto stratum table).
fn upstream_reject_code(code: i64) -> &'static str {
    match code {
        21 => submit_shares::STALE_SHARE,
        22 => submit_shares::DUPLICATE_SHARE,
        23 => submit_shares::DIFFICULTY_TOO_LOW,
        _ => submit_shares::INVALID_SHARE,
    }
}

impl Session {
    /// Notes an accepted share on `channel` for [`Session::take_touched`].
    fn touch(&mut self, channel: u32) {
        if self.touched.last() != Some(&channel) {
            self.touched.push(channel);
        }
    }

    /// Channels with a share accepted since the last call (the task stamps their
    /// last-share time: a wall-clock read the session does not make).
    pub(in crate::downstream::sv2) fn take_touched(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.touched)
    }

    /// Sends every channel's waiting acknowledgements.
    pub(in crate::downstream::sv2) fn flush_acks(&mut self) {
        self.flush_at = None;
        for ch in self.channels.values_mut() {
            if let Some(m) = ch.take_batch() {
                self.output.push(m);
            }
        }
    }

    /// Sends a channel's batch now if it is full, else makes sure a flush is scheduled.
    fn schedule_ack(&mut self, channel: u32, now: Instant) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.batched() >= self.settings.ack_batch {
            if let Some(m) = ch.take_batch() {
                self.output.push(m);
            }
        } else if ch.batched() > 0 && self.flush_at.is_none() {
            self.flush_at = Some(now + self.settings.ack_delay);
        }
    }

    /// `SubmitShares.Error`, after the channel's pending acknowledgements (so the miner sees
    /// answers roughly in sequence order).
    fn share_error(&mut self, channel: u32, sequence_number: u32, code: &str) {
        if let Some(m) = self
            .channels
            .get_mut(&channel)
            .and_then(Channel::take_batch)
        {
            self.output.push(m);
        }
        self.output
            .push(Message::SubmitSharesError(SubmitSharesError {
                channel_id: channel,
                sequence_number,
                error_code: str0255(code),
            }));
    }

    /// A share from the miner; timed here when answered at once, at the pool's verdict
    /// when sent up.
    pub(super) fn on_submit(
        &mut self,
        channel: u32,
        share: SubmittedShare<'_>,
        now: Instant,
    ) -> Result<(), End> {
        let waiting = self.actions.len();
        let result = self.submit(channel, share, now);
        if self.actions.len() == waiting {
            let rtt = &self.settings.stats.share_round_trip;
            rtt.observe_duration(Duration::ZERO);
        }
        result
    }

    fn submit(&mut self, channel: u32, share: SubmittedShare<'_>, now: Instant) -> Result<(), End> {
        let seq = share.sequence_number;
        let Some(ch) = self.channels.get_mut(&channel) else {
            self.share_error(channel, seq, submit_shares::INVALID_CHANNEL_ID);
            return self.count_error();
        };
        match ch.submit(&share) {
            ShareResult::Rejected(rejection) => {
                debug!(channel, %rejection, "share rejected");
                self.share_error(channel, seq, rejection.sv2_error_code());
                if matches!(rejection, Rejection::StaleJob { .. }) {
                    Ok(())
                } else {
                    self.count_error()
                }
            }
            ShareResult::Accepted => {
                self.consecutive_errors = 0;
                self.touch(channel);
                self.schedule_ack(channel, now);
                Ok(())
            }
            ShareResult::Upstream {
                submit,
                verdict,
                credited,
            } => {
                self.consecutive_errors = 0;
                self.actions.push_back(Action::Submit(ShareUp {
                    channel,
                    sequence_number: seq,
                    submit,
                    verdict,
                    credited,
                    read_at: now,
                }));
                Ok(())
            }
        }
    }

    /// The share could not be queued: the pool connection's deep queue is full, so the pool
    /// is not keeping up, and the share is reported lost rather than blocking this miner.
    pub(in crate::downstream::sv2) fn handle_submit_failed(
        &mut self,
        channel: u32,
        sequence_number: u32,
        read_at: Instant,
        now: Instant,
    ) {
        let rtt = &self.settings.stats.share_round_trip;
        rtt.observe_duration(now.saturating_duration_since(read_at));
        if let Some(ch) = self.channels.get(&channel) {
            ch.shared.counters.lose();
        }
        self.share_error(channel, sequence_number, submit_shares::STALE_SHARE);
    }

    /// Relays the pool's verdict on a share.
    pub(in crate::downstream::sv2) fn handle_verdict(&mut self, v: Verdict, now: Instant) {
        let rtt = &self.settings.stats.share_round_trip;
        rtt.observe_duration(now.saturating_duration_since(v.read_at));
        let Some(ch) = self.channels.get_mut(&v.channel) else {
            return;
        };
        match v.outcome {
            SubmitOutcome::Accepted => {
                ch.accept(v.sequence_number, v.credited);
                self.touch(v.channel);
                self.schedule_ack(v.channel, now);
            }
            SubmitOutcome::Rejected(e) => {
                ch.shared
                    .counters
                    .reject(RejectReason::from_sv1_code(e.code));
                debug!(code = e.code, message = %e.message, "pool rejected share");
                self.share_error(v.channel, v.sequence_number, upstream_reject_code(e.code));
            }
            SubmitOutcome::Lost(why) => {
                ch.shared.counters.lose();
                warn!(why, "share lost upstream");
                // SV2 has no "unknown outcome" code; the share will not be credited.
                self.share_error(v.channel, v.sequence_number, submit_shares::STALE_SHARE);
            }
        }
    }
}
