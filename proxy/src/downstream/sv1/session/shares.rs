//! A miner's shares: validation against its own target, forwarding of those that meet the
//! pool's target, and relaying the pool's verdict (never a fake "accepted"). Every reject is
//! counted by reason; all but stale shares count toward the consecutive-error limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use hashshift_protocol::share::{Rejection, Submission, SubmittedVersion};
use hashshift_protocol::sv1::{ErrorCode, Id, StratumError, Submit};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::{End, Session};
use crate::downstream::outbox::Outbox;
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::telemetry::RejectReason;

/// A share sent to the pool, waiting for its verdict.
pub(in crate::downstream::sv1) struct PendingShare {
    id: Option<Id>,
    credited: f64,
    reply: oneshot::Receiver<SubmitOutcome>,
    read_at: Instant,
}

/// A pool's verdict on one forwarded share.
pub(in crate::downstream::sv1) struct Verdict {
    id: Id,
    outcome: SubmitOutcome,
    credited: f64,
    read_at: Instant,
}

impl Future for PendingShare {
    type Output = Verdict;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        let outcome = match Pin::new(&mut self.reply).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.unwrap_or(SubmitOutcome::Lost("pool connection ended")),
        };
        Poll::Ready(Verdict {
            id: self.id.take().unwrap_or(Id::Null),
            outcome,
            credited: self.credited,
            read_at: self.read_at,
        })
    }
}

impl Session {
    fn reject(
        &mut self,
        out: &mut Outbox,
        id: Id,
        reason: RejectReason,
        error: StratumError,
    ) -> Result<(), End> {
        self.shared.counters.reject(reason);
        self.reply(out, id, Err(error))
    }

    /// A reject that counts toward the consecutive-error limit (everything but stale shares,
    /// which honest miners send after every block).
    fn reject_counted(
        &mut self,
        out: &mut Outbox,
        id: Id,
        reason: RejectReason,
        error: StratumError,
    ) -> Result<(), End> {
        let too_many = self.count_error();
        self.reject(out, id, reason, error)?;
        if too_many {
            return Err(End::TooManyErrors);
        }
        Ok(())
    }

    pub(super) fn on_submit(
        &mut self,
        id: Id,
        submit: Submit,
        out: &mut Outbox,
        read_at: Instant,
    ) -> Result<(), End> {
        if !self.subscribed {
            let e = StratumError::new(ErrorCode::NotSubscribed);
            return self.reject_counted(out, id, RejectReason::NotSubscribed, e);
        }
        if !self.workers.contains(&submit.worker) {
            let e = StratumError::new(ErrorCode::UnauthorizedWorker);
            return self.reject_counted(out, id, RejectReason::Unauthorized, e);
        }
        let Ok(job_id) = u32::from_str_radix(&submit.job_id, 16) else {
            let e = StratumError::new(ErrorCode::JobNotFound);
            return self.reject_counted(out, id, RejectReason::UnknownJob, e);
        };
        let version = match submit.version_bits {
            Some(bits) => SubmittedVersion::RolledBits(bits),
            None => SubmittedVersion::Job,
        };
        let share = Submission {
            job_id,
            extranonce: &submit.extranonce2,
            ntime: submit.ntime,
            nonce: submit.nonce,
            version,
        };
        let accepted = match self.validator.validate(&share) {
            Ok(a) => a,
            Err(rejection) => {
                debug!(%rejection, "share rejected");
                let err = StratumError {
                    code: i64::from(rejection.sv1_code()),
                    message: rejection.sv1_message().to_owned(),
                };
                let reason = RejectReason::from(&rejection);
                if matches!(rejection, Rejection::StaleJob { .. }) {
                    return self.reject(out, id, reason, err);
                }
                return self.reject_counted(out, id, reason, err);
            }
        };
        self.consecutive_errors = 0;
        let credited = accepted.credited_difficulty;
        let job = self
            .jobs
            .iter()
            .find(|(j, _)| *j == job_id)
            .map(|(_, j)| j.clone());
        let upstream = job.filter(|j| accepted.is_block || j.pool_target.is_met_by(&accepted.hash));
        let (Some(job), Some(a), Some(layout)) =
            (upstream, self.assignment.as_ref(), self.layout.as_ref())
        else {
            self.reply_true(out, id)?;
            return self.accept(credited, out);
        };
        if accepted.is_block {
            let mut shown = accepted.hash;
            shown.reverse();
            info!(hash = %hex::encode(shown), pool_job = %job.pool_job_id, "BLOCK FOUND");
            self.shared.counters.block();
        }
        let mut extranonce2 = layout.extranonce.upstream_prefix.clone();
        extranonce2.extend_from_slice(&submit.extranonce2);
        let (reply_tx, reply_rx) = oneshot::channel();
        let up = UpstreamSubmit {
            worker: submit.worker.as_str().into(),
            job: job.clone(),
            extranonce2,
            ntime: submit.ntime,
            nonce: submit.nonce,
            // Without a grant the bits are necessarily 0 (the validator checked), and a pool
            // that did not negotiate rolling may refuse a 6-parameter submit: send none.
            version_bits: submit
                .version_bits
                .map(|b| b & self.granted_mask)
                .filter(|_| self.granted_mask != 0),
            difficulty: job.pool_difficulty,
            block: accepted.is_block,
            reply: reply_tx,
        };
        // The pool connection has a deep queue; if even that is full the pool is not keeping
        // up and the share is reported lost rather than blocking this miner.
        if a.conn.submit.try_send(up).is_err() {
            self.shared.counters.lose();
            let err = StratumError::with_message(ErrorCode::Other, "pool connection unavailable");
            return self.reply(out, id, Err(err));
        }
        self.pending.push(PendingShare {
            id: Some(id),
            credited,
            reply: reply_rx,
            read_at,
        });
        Ok(())
    }

    /// Credits an accepted share; vardiff may retarget at once (a flooding miner).
    pub(super) fn accept(&mut self, credited: f64, out: &mut Outbox) -> Result<(), End> {
        self.shared.counters.accept(credited);
        self.shared.touch();
        self.vardiff.on_share(credited);
        self.on_tick(out)
    }

    /// Relays the pool's verdict on a forwarded share.
    pub(in crate::downstream::sv1) fn on_upstream_verdict(
        &mut self,
        v: Verdict,
        out: &mut Outbox,
    ) -> Result<(), End> {
        // Observed as the answer is queued (microseconds before it is written).
        let rtt = &self.settings.stats.share_round_trip;
        rtt.observe_duration(v.read_at.elapsed());
        match v.outcome {
            SubmitOutcome::Accepted => {
                // The answer goes first: a retarget's set_difficulty applies to later shares.
                self.reply_true(out, v.id)?;
                self.accept(v.credited, out)
            }
            SubmitOutcome::Rejected(e) => {
                debug!(code = e.code, message = %e.message, "pool rejected share");
                self.reject(out, v.id, RejectReason::from_sv1_code(e.code), e)
            }
            SubmitOutcome::Lost(why) => {
                self.shared.counters.lose();
                warn!(why, "share lost upstream");
                self.reply(
                    out,
                    v.id,
                    Err(StratumError::with_message(ErrorCode::Other, why)),
                )
            }
        }
    }
}
