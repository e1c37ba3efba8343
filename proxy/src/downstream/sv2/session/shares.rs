//! A connection's shares: each one validated by its channel, answered here at once or sent
//! to the pool, whose verdict comes back as a [`Verdict`]; acceptances are batched into
//! `SubmitShares.Success` messages, rejections answered one by one with the spec's codes.

use std::pin::Pin;
use std::time::Instant;

use futures_util::FutureExt;
use hashshift_protocol::share::Rejection;
use hashshift_protocol::sv2::constants::error_code::submit_shares;
use hashshift_protocol::sv2::{Message, SubmitSharesError};
use tracing::{debug, warn};

use super::{Conn, End, str0255};
use crate::downstream::sv2::channel::{Channel, ShareResult, SubmittedShare};
use crate::pool_link::submit::SubmitOutcome;
use crate::telemetry::RejectReason;

/// A pool's answer on a share that went up, with what is needed to relay it.
pub(super) struct Verdict {
    channel: u32,
    sequence_number: u32,
    outcome: SubmitOutcome,
    credited: f64,
    read_at: Instant,
}

pub(super) type Pending = Pin<Box<dyn std::future::Future<Output = Verdict> + Send>>;

/// The SV2 code for a pool's SV1 rejection (codes 21-23 of the de-facto stratum table).
fn upstream_reject_code(code: i64) -> &'static str {
    match code {
        21 => submit_shares::STALE_SHARE,
        22 => submit_shares::DUPLICATE_SHARE,
        23 => submit_shares::DIFFICULTY_TOO_LOW,
        _ => submit_shares::INVALID_SHARE,
    }
}

impl Conn {
    pub(super) fn flush_acks(&mut self) {
        self.flush_at = None;
        for ch in self.channels.values_mut() {
            if let Some(m) = ch.take_batch() {
                self.outbox.push(m);
            }
        }
    }

    /// Sends a channel's batch now if it is full, else makes sure a flush is scheduled.
    fn schedule_ack(&mut self, channel: u32) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.batched() >= self.settings.ack_batch {
            if let Some(m) = ch.take_batch() {
                self.outbox.push(m);
            }
        } else if ch.batched() > 0 && self.flush_at.is_none() {
            self.flush_at = Some(tokio::time::Instant::now() + self.settings.ack_delay);
        }
    }

    /// `SubmitShares.Error`, after the channel's pending acknowledgements (so the miner sees
    /// answers roughly in sequence order).
    pub(super) fn share_error(&mut self, channel: u32, sequence_number: u32, code: &str) {
        if let Some(m) = self
            .channels
            .get_mut(&channel)
            .and_then(Channel::take_batch)
        {
            self.outbox.push(m);
        }
        self.outbox
            .push(Message::SubmitSharesError(SubmitSharesError {
                channel_id: channel,
                sequence_number,
                error_code: str0255(code),
            }));
    }

    /// A share from the miner; timed here when answered at once, at the pool's verdict
    /// when sent up.
    pub(super) fn on_submit(&mut self, channel: u32, share: SubmittedShare<'_>) -> Result<(), End> {
        let (read_at, waiting) = (Instant::now(), self.pending.len());
        let result = self.submit(channel, share, read_at);
        if self.pending.len() == waiting {
            let rtt = &self.settings.stats.share_round_trip;
            rtt.observe_duration(read_at.elapsed());
        }
        result
    }

    fn submit(
        &mut self,
        channel: u32,
        share: SubmittedShare<'_>,
        read_at: Instant,
    ) -> Result<(), End> {
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
                self.schedule_ack(channel);
                Ok(())
            }
            ShareResult::Upstream {
                submit,
                verdict,
                credited,
            } => {
                self.consecutive_errors = 0;
                // The pool connection has a deep queue; if even that is full the pool is not
                // keeping up and the share is reported lost rather than blocking this miner.
                if ch.assignment.conn.submit.try_send(submit).is_err() {
                    ch.shared.counters.lose();
                    self.share_error(channel, seq, submit_shares::STALE_SHARE);
                    return Ok(());
                }
                self.pending.push(
                    verdict
                        .map(move |outcome| Verdict {
                            channel,
                            sequence_number: seq,
                            outcome: outcome
                                .unwrap_or(SubmitOutcome::Lost("pool connection ended")),
                            credited,
                            read_at,
                        })
                        .boxed(),
                );
                Ok(())
            }
        }
    }

    pub(super) fn on_verdict(&mut self, v: Verdict) {
        let rtt = &self.settings.stats.share_round_trip;
        rtt.observe_duration(v.read_at.elapsed());
        let Some(ch) = self.channels.get_mut(&v.channel) else {
            return;
        };
        match v.outcome {
            SubmitOutcome::Accepted => {
                ch.accept(v.sequence_number, v.credited);
                self.schedule_ack(v.channel);
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
