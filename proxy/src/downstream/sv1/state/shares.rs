//! A miner's shares: validation against its own target, forwarding of those that meet the
//! pool's target ([`Action::Submit`]), and relaying the pool's verdict (never a fake
//! "accepted"). Every reject is counted by reason; all but stale shares count toward the
//! consecutive-error limit.

use std::sync::Arc;
use std::time::Instant;

use hashshift_protocol::share::{Rejection, Submission, SubmittedVersion};
use hashshift_protocol::sv1::{ErrorCode, Id, StratumError, Submit};
use tracing::{debug, info, warn};

use super::{Action, End, Session};
use crate::downstream::outbox::Outbox;
use crate::pool_link::submit::SubmitOutcome;
use crate::pool_link::work::UpstreamJob;
use crate::telemetry::RejectReason;

/// A share for the pool: what the connection task needs to submit it and, with the
/// verdict, to answer the miner.
#[derive(Debug)]
pub(in crate::downstream::sv1) struct ShareUp {
    /// The miner's request id, for the answer.
    pub id: Id,
    /// Difficulty to credit if the pool accepts.
    pub credited: f64,
    /// When the share was read (the round trip is timed from it).
    pub read_at: Instant,
    /// Worker name it goes up under.
    pub worker: Arc<str>,
    /// The job it solves.
    pub job: Arc<UpstreamJob>,
    /// The pool-sized extranonce2 (the proxy's prefix, padding, then the miner's part).
    pub extranonce2: Vec<u8>,
    /// Header time.
    pub ntime: u32,
    /// Nonce the miner found.
    pub nonce: u32,
    /// Rolled version bits, only when rolling was granted.
    pub version_bits: Option<u32>,
    /// Whether it meets the network target.
    pub block: bool,
}

/// A pool's verdict on one forwarded share.
#[derive(Debug)]
pub(in crate::downstream::sv1) struct Verdict {
    /// The miner's request id.
    pub id: Id,
    /// What the pool said.
    pub outcome: SubmitOutcome,
    /// Difficulty to credit if accepted.
    pub credited: f64,
    /// When the share was read.
    pub read_at: Instant,
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

    /// `mining.submit`: answered here (timed now), or sent up (timed at the verdict).
    pub(super) fn on_submit(
        &mut self,
        id: Id,
        submit: Submit,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), End> {
        let waiting = self.actions.len();
        let result = self.validate_submit(id, submit, now, out);
        if self.actions.len() == waiting {
            let rtt = &self.settings.stats.share_round_trip;
            rtt.observe_duration(std::time::Duration::ZERO);
        }
        result
    }

    fn validate_submit(
        &mut self,
        id: Id,
        submit: Submit,
        now: Instant,
        out: &mut Outbox,
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
        let (Some(job), Some(layout)) = (upstream, self.layout.as_ref()) else {
            self.reply_true(out, id)?;
            return self.accept(credited, now, out);
        };
        if accepted.is_block {
            let mut shown = accepted.hash;
            shown.reverse();
            info!(hash = %hex::encode(shown), pool_job = %job.pool_job_id, "BLOCK FOUND");
            self.shared.counters.block();
        }
        let mut extranonce2 = layout.extranonce.upstream_prefix.clone();
        extranonce2.extend_from_slice(&submit.extranonce2);
        self.actions.push_back(Action::Submit(ShareUp {
            id,
            credited,
            read_at: now,
            worker: submit.worker.as_str().into(),
            job,
            extranonce2,
            ntime: submit.ntime,
            nonce: submit.nonce,
            // Without a grant the bits are necessarily 0 (the validator checked), and a pool
            // that did not negotiate rolling may refuse a 6-parameter submit: send none.
            version_bits: submit
                .version_bits
                .map(|b| b & self.granted_mask)
                .filter(|_| self.granted_mask != 0),
            block: accepted.is_block,
        }));
        Ok(())
    }

    /// Credits an accepted share; vardiff may retarget at once (a flooding miner).
    fn accept(&mut self, credited: f64, now: Instant, out: &mut Outbox) -> Result<(), End> {
        self.shared.counters.accept(credited);
        self.touched = true;
        self.vardiff.on_share(credited);
        self.on_tick(now, out)
    }

    /// The share could not be queued for the pool (its queue is full: the pool is not
    /// keeping up). It is reported lost rather than blocking this miner.
    pub(in crate::downstream::sv1) fn handle_submit_failed(
        &mut self,
        share: ShareUp,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), End> {
        let rtt = &self.settings.stats.share_round_trip;
        rtt.observe_duration(now.saturating_duration_since(share.read_at));
        self.shared.counters.lose();
        let err = StratumError::with_message(ErrorCode::Other, "pool connection unavailable");
        self.reply(out, share.id, Err(err))
    }

    /// Relays the pool's verdict on a forwarded share.
    pub(in crate::downstream::sv1) fn handle_verdict(
        &mut self,
        v: Verdict,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), End> {
        // Observed as the answer is queued (microseconds before it is written).
        let rtt = &self.settings.stats.share_round_trip;
        rtt.observe_duration(now.saturating_duration_since(v.read_at));
        match v.outcome {
            SubmitOutcome::Accepted => {
                // The answer goes first: a retarget's set_difficulty applies to later shares.
                self.reply_true(out, v.id)?;
                self.accept(v.credited, now, out)
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
