//! One miner connection's protocol state, without I/O: requests in, encoded lines out.
//!
//! The connection task ([`super::conn`]) feeds decoded lines to [`Session::handle`] and the
//! pool's latest work to [`Session::on_work`]; both append complete `\n`-terminated lines to
//! an outbox. Invariants:
//! - No job is sent before the connection has subscribed and authorized at least one worker;
//!   then `mining.set_difficulty` (when the difficulty changes) always directly precedes the
//!   `mining.notify` it applies to, and every job goes into the [`ShareValidator`] at that
//!   difficulty, so shares are judged and credited at the difficulty in force when their job
//!   was sent.
//! - Shares are credited to the worker named in `mining.submit`, which must have been
//!   authorized on this connection (an aggregating proxy authorizes each miner's name).
//! - Difficulty floor: `minimum-difficulty` (from `mining.configure`) and
//!   `mining.suggest_difficulty` set a per-connection floor; the difficulty sent is
//!   `max(pool difficulty, floor)`, from the next job on. Suggestions below the pool's
//!   difficulty therefore change nothing.
//! - Version rolling: granted mask = requested mask (BIP310 default `ffffffff`) & the pool's
//!   mask; when the pool's mask changes, connections that negotiated rolling get
//!   `mining.set_version_mask` with the new grant.

use std::collections::HashSet;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tracing::{debug, warn};

use hashshift_protocol::share::{
    AcceptedShare, Job, Rejection, ShareValidator, Submission, SubmittedVersion, Target,
    ValidatorConfig,
};
use hashshift_protocol::sv1::{
    ClientMessage, ClientRequest, Configure, ConfigureResult, ErrorCode, ExtensionResult, Id,
    Response, ServerMessage, ServerNotification, StratumError, Submit, SubscribeResult, Sv1Error,
    Sv1Message, extension,
};

use super::ConfigureAnswer;
use super::job::{PoolJob, Work, parse_job_id};
use super::stats::{StatsRecorder, reason};

/// Worker names authorized on one connection at most (an aggregating proxy carries one per
/// miner; this bounds what one client can make us remember).
pub(crate) const MAX_WORKERS_PER_CONNECTION: usize = 4096;
/// Longest accepted worker name, in bytes.
pub(crate) const MAX_WORKER_NAME: usize = 256;
/// Lines that are not messages at all (junk JSON, bad UTF-8) tolerated before dropping.
const MAX_BAD_LINES: u32 = 64;
/// Jobs kept valid per connection: with the default 30 s job interval, several minutes.
const JOBS_KEPT: usize = 8;

/// What the connection task should do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep going.
    Continue,
    /// A share met the network target: the pool should move to a new block.
    BlockFound,
    /// Drop the connection (oversized line, too much garbage).
    Close,
}

/// Protocol state of one connection.
#[derive(Debug)]
pub(crate) struct Session {
    subscription_id: String,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    subscribed: bool,
    authorized: HashSet<String>,
    /// The mask the miner asked for, once it negotiated version rolling.
    requested_mask: Option<u32>,
    granted_mask: u32,
    difficulty_floor: f64,
    validator: ShareValidator,
    /// `(seq, block epoch, difficulty)` of the last job sent.
    last_sent: Option<(u64, u64, f64)>,
    bad_lines: u32,
    configure: ConfigureAnswer,
}

impl Session {
    pub fn new(conn_id: u64, extranonce1: Vec<u8>, extranonce2_size: usize) -> Self {
        let config = ValidatorConfig {
            max_jobs: JOBS_KEPT,
            extranonce_size: extranonce2_size,
            version_rolling_mask: 0,
            // One connection may carry a whole farm through a proxy: keep enough shares per
            // job for duplicate detection at tens of thousands of shares per second.
            max_shares_per_job: 1 << 18,
            ..ValidatorConfig::default()
        };
        Session {
            subscription_id: format!("{conn_id:x}"),
            validator: ShareValidator::new(config, extranonce1.clone(), Target::DIFF1),
            extranonce1,
            extranonce2_size,
            subscribed: false,
            authorized: HashSet::new(),
            requested_mask: None,
            granted_mask: 0,
            difficulty_floor: 0.0,
            last_sent: None,
            bad_lines: 0,
            configure: ConfigureAnswer::Grant,
        }
    }

    /// Answers `mining.configure` this way (see [`ConfigureAnswer`]).
    pub fn with_configure(mut self, configure: ConfigureAnswer) -> Self {
        self.configure = configure;
        self
    }

    /// Whether jobs flow: subscribed and at least one worker authorized.
    pub fn ready(&self) -> bool {
        self.subscribed && !self.authorized.is_empty()
    }

    /// Handles one decoded line. `work` is the pool's current work (used for the first job
    /// and the version mask to grant).
    pub fn handle(
        &mut self,
        item: Result<ClientMessage, Sv1Error>,
        work: &Work,
        stats: &StatsRecorder,
        now: Instant,
        out: &mut Vec<Bytes>,
    ) -> Flow {
        let (id, request) = match item {
            Ok(ClientMessage::Request { id, request }) => (id, request),
            // Answers to our own requests: we send none, so there is nothing to match.
            Ok(ClientMessage::Response(_)) => return Flow::Continue,
            Err(Sv1Error::LineTooLong { max }) => {
                warn!(max, "line too long, dropping the connection");
                return Flow::Close;
            }
            Err(Sv1Error::InvalidParams { id, method, error }) => {
                debug!(%method, %error, "invalid params");
                if method == hashshift_protocol::sv1::method::SUBMIT {
                    stats.rejected(None, reason::MALFORMED, now);
                }
                let e = StratumError::with_message(ErrorCode::Other, format!("{error}"));
                push(out, ServerMessage::Response(Response::error(id, e)));
                return Flow::Continue;
            }
            Err(error) => {
                self.bad_lines += 1;
                debug!(%error, bad_lines = self.bad_lines, "unreadable line");
                return if self.bad_lines > MAX_BAD_LINES {
                    warn!(
                        bad_lines = self.bad_lines,
                        "too many unreadable lines, dropping"
                    );
                    Flow::Close
                } else {
                    Flow::Continue
                };
            }
        };
        let was_ready = self.ready();
        let mut flow = Flow::Continue;
        let response = match request {
            ClientRequest::Configure(c) => match self.configure {
                ConfigureAnswer::Ignore => return Flow::Continue,
                ConfigureAnswer::Error => {
                    let e = StratumError::with_message(ErrorCode::Other, "Unknown method");
                    Response::error(id, e)
                }
                ConfigureAnswer::Grant | ConfigureAnswer::WithoutVersionRolling => {
                    Response::ok(id, self.configure(&c, work))
                }
            },
            ClientRequest::Subscribe(_) => {
                self.subscribed = true;
                let result = SubscribeResult::standard(
                    &self.subscription_id,
                    self.extranonce1.clone(),
                    self.extranonce2_size,
                );
                Response::ok(id, result.to_result())
            }
            ClientRequest::Authorize(a) => self.authorize(id, a.user),
            ClientRequest::ExtranonceSubscribe => Response::boolean(id, true),
            ClientRequest::SuggestDifficulty(d) => {
                self.difficulty_floor = self.difficulty_floor.max(d);
                Response::boolean(id, true)
            }
            ClientRequest::Submit(s) => {
                let (response, block) = self.submit(id, &s, stats, now);
                if block {
                    flow = Flow::BlockFound;
                }
                response
            }
            other => {
                debug!(method = other.method(), "unknown method");
                let e = StratumError::with_message(ErrorCode::Other, "Unknown method");
                Response::error(id, e)
            }
        };
        push(out, ServerMessage::Response(response));
        if !was_ready && self.ready() {
            self.on_work(work, out);
        }
        flow
    }

    fn configure(&mut self, c: &Configure, work: &Work) -> Value {
        let mut result = ConfigureResult::default();
        for ext in &c.extensions {
            match ext.as_str() {
                extension::VERSION_ROLLING
                    if self.configure == ConfigureAnswer::WithoutVersionRolling => {}
                extension::VERSION_ROLLING => {
                    // BIP310: an absent mask means the miner can roll every bit.
                    let requested = c.version_rolling_mask.unwrap_or(u32::MAX);
                    self.requested_mask = Some(requested);
                    self.granted_mask = requested & work.version_mask;
                    self.validator.set_version_rolling_mask(self.granted_mask);
                    result.version_rolling = Some(ExtensionResult::Accepted);
                    result.version_rolling_mask = Some(self.granted_mask);
                }
                extension::MINIMUM_DIFFICULTY => {
                    if let Some(min) = c.minimum_difficulty {
                        self.difficulty_floor = self.difficulty_floor.max(min);
                    }
                    result.minimum_difficulty = Some(ExtensionResult::Accepted);
                }
                extension::SUBSCRIBE_EXTRANONCE => {
                    result.subscribe_extranonce = Some(ExtensionResult::Accepted);
                }
                other => {
                    result.other.insert(other.to_owned(), Value::Bool(false));
                }
            }
        }
        result.to_result()
    }

    fn authorize(&mut self, id: Id, user: String) -> Response {
        if user.len() > MAX_WORKER_NAME {
            let e = StratumError::with_message(ErrorCode::Other, "Worker name too long");
            return Response::error(id, e);
        }
        if !self.authorized.contains(&user) {
            if self.authorized.len() >= MAX_WORKERS_PER_CONNECTION {
                let e = StratumError::with_message(ErrorCode::Other, "Too many workers");
                return Response::error(id, e);
            }
            debug!(worker = %user, "authorized");
            self.authorized.insert(user);
        }
        Response::boolean(id, true)
    }

    /// Validates one share; returns the reply and whether it was a block.
    fn submit(
        &mut self,
        id: Id,
        s: &Submit,
        stats: &StatsRecorder,
        now: Instant,
    ) -> (Response, bool) {
        let refuse = |code: ErrorCode, why: &'static str, worker: Option<&str>| {
            stats.rejected(worker, why, now);
            Response::error(id.clone(), StratumError::new(code))
        };
        if !self.subscribed {
            return (
                refuse(ErrorCode::NotSubscribed, reason::NOT_SUBSCRIBED, None),
                false,
            );
        }
        if !self.authorized.contains(&s.worker) {
            let response = refuse(ErrorCode::UnauthorizedWorker, reason::UNAUTHORIZED, None);
            return (response, false);
        }
        let worker = Some(s.worker.as_str());
        if s.version_bits.is_some()
            && self.requested_mask.is_none()
            && self.configure != ConfigureAnswer::Grant
        {
            // A pool without BIP310 knows only 5-parameter submits.
            return (refuse(ErrorCode::Other, reason::MALFORMED, worker), false);
        }
        let Some(job_id) = parse_job_id(&s.job_id) else {
            return (
                refuse(ErrorCode::JobNotFound, reason::UNKNOWN_JOB, worker),
                false,
            );
        };
        let share = Submission {
            job_id,
            extranonce: &s.extranonce2,
            ntime: s.ntime,
            nonce: s.nonce,
            version: s
                .version_bits
                .map_or(SubmittedVersion::Job, SubmittedVersion::RolledBits),
        };
        match self.validator.validate(&share) {
            Ok(accepted) => {
                credit(stats, &s.worker, &accepted, now);
                (Response::boolean(id, true), accepted.is_block)
            }
            Err(rejection) => {
                debug!(worker = %s.worker, %rejection, "share rejected");
                stats.rejected(worker, rejection_reason(&rejection), now);
                let e = StratumError {
                    code: i64::from(rejection.sv1_code()),
                    message: rejection.sv1_message().to_owned(),
                };
                (Response::error(id, e), false)
            }
        }
    }

    /// Brings the miner up to date with the pool's latest work: a new version mask, and a
    /// new job (preceded by `mining.set_difficulty` when the difficulty changes). Calling it
    /// again with the same work sends nothing.
    pub fn on_work(&mut self, work: &Work, out: &mut Vec<Bytes>) {
        if !self.ready() {
            return;
        }
        if let Some(requested) = self.requested_mask {
            let granted = requested & work.version_mask;
            if granted != self.granted_mask {
                self.granted_mask = granted;
                self.validator.set_version_rolling_mask(granted);
                let n = ServerNotification::SetVersionMask(granted);
                push(out, ServerMessage::notification(n));
            }
        }
        self.send_job(&work.job, out);
    }

    fn send_job(&mut self, job: &PoolJob, out: &mut Vec<Bytes>) {
        let (clean, difficulty_changed, difficulty) = match self.last_sent {
            Some((seq, _, _)) if seq == job.seq => return,
            Some((_, block, sent_difficulty)) => {
                let d = self.difficulty_for(job);
                (job.clean || block != job.block, d != sent_difficulty, d)
            }
            None => (true, true, self.difficulty_for(job)),
        };
        if difficulty_changed {
            match Target::from_difficulty(difficulty) {
                Ok(target) => self.validator.set_miner_target(target),
                Err(error) => {
                    warn!(%error, difficulty, "unusable difficulty, job not sent");
                    return;
                }
            }
            let n = ServerNotification::SetDifficulty(difficulty);
            push(out, ServerMessage::notification(n));
        }
        // Job ids are the low 32 bits of the sequence, as in the notify's job id.
        if let Err(error) =
            self.validator
                .add_job(job.seq as u32, Job::from(job.job.clone()), clean)
        {
            warn!(%error, "job refused by the validator, not sent");
            return;
        }
        out.push(job.notify_line(clean));
        self.last_sent = Some((job.seq, job.block, difficulty));
    }

    fn difficulty_for(&self, job: &PoolJob) -> f64 {
        job.difficulty.max(self.difficulty_floor)
    }
}

fn push(out: &mut Vec<Bytes>, message: ServerMessage) {
    let mut buf = BytesMut::with_capacity(128);
    // Serialising owned JSON values into memory cannot fail.
    let _ = message.encode_line(&mut buf);
    out.push(buf.freeze());
}

/// Credits an accepted share to `worker`, with a warning when it is a block (its hash shown
/// in the usual byte order).
pub(crate) fn credit(stats: &StatsRecorder, worker: &str, accepted: &AcceptedShare, now: Instant) {
    stats.accepted(worker, accepted.credited_difficulty, accepted.is_block, now);
    if accepted.is_block {
        let mut hash = accepted.hash;
        hash.reverse();
        warn!(%worker, hash = %hex::encode(hash), "block found");
    }
}

/// The stats key for a validator rejection.
pub(crate) fn rejection_reason(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::UnknownJob { .. } => reason::UNKNOWN_JOB,
        Rejection::StaleJob { .. } => reason::STALE,
        Rejection::Duplicate => reason::DUPLICATE,
        Rejection::LowDifficulty { .. } => reason::LOW_DIFFICULTY,
        Rejection::NtimeOutOfRange { .. } => reason::NTIME,
        Rejection::VersionBitsOutsideMask { .. } => reason::VERSION_BITS,
        Rejection::WrongExtranonceSize { .. } => reason::EXTRANONCE_SIZE,
        Rejection::TooManyShares => reason::TOO_MANY_SHARES,
        _ => reason::OTHER,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testpool::job::JobFactory;
    use hashshift_protocol::sv1::{Authorize, Subscribe};

    fn work(factory: &mut JobFactory, clean: bool, difficulty: f64, mask: u32) -> Work {
        Work {
            job: factory.next_job(clean, difficulty, 1_700_000_000),
            version_mask: mask,
        }
    }

    fn request(id: u64, request: ClientRequest) -> Result<ClientMessage, Sv1Error> {
        Ok(ClientMessage::Request {
            id: Id::from(id),
            request,
        })
    }

    fn lines(out: &mut Vec<Bytes>) -> Vec<String> {
        out.drain(..)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    #[test]
    fn jobs_flow_only_after_subscribe_and_authorize_then_in_order() {
        let mut f = JobFactory::new(1e15, 2, 12, "t").unwrap();
        let stats = StatsRecorder::default();
        let now = Instant::now();
        let mut s = Session::new(1, vec![0, 0, 0, 1], 8);
        let mut out = Vec::new();
        let w1 = work(&mut f, false, 2.0, 0x1fff_e000);
        let auth = ClientRequest::Authorize(Authorize {
            user: "a".into(),
            password: None,
        });
        assert_eq!(
            s.handle(request(1, auth), &w1, &stats, now, &mut out),
            Flow::Continue
        );
        s.on_work(&w1, &mut out);
        assert_eq!(lines(&mut out).len(), 1, "only the authorize answer");
        let sub = ClientRequest::Subscribe(Subscribe::default());
        s.handle(request(2, sub), &w1, &stats, now, &mut out);
        let l = lines(&mut out);
        assert_eq!(l.len(), 3, "{l:?}");
        assert!(l[1].contains("mining.set_difficulty") && l[1].contains("[2.0]"));
        assert!(l[2].contains("mining.notify") && l[2].ends_with("true]}\n"));
        s.on_work(&w1, &mut out);
        assert!(out.is_empty(), "the same work is not sent twice");
        let w2 = work(&mut f, false, 2.0, 0x1fff_e000);
        s.on_work(&w2, &mut out);
        let l = lines(&mut out);
        assert_eq!(l.len(), 1, "no set_difficulty when it did not change");
        assert!(l[0].ends_with("false]}\n"));
        // A clean job this session never saw still moves it to the new block.
        let _missed = work(&mut f, true, 2.0, 0x1fff_e000);
        let w4 = work(&mut f, false, 2.0, 0x1fff_e000);
        s.on_work(&w4, &mut out);
        assert!(lines(&mut out)[0].ends_with("true]}\n"));
    }

    #[test]
    fn version_rolling_grant_follows_the_pool_mask() {
        let mut f = JobFactory::new(1e15, 0, 12, "t").unwrap();
        let stats = StatsRecorder::default();
        let mut s = Session::new(1, vec![1; 4], 8);
        let mut out = Vec::new();
        let w = work(&mut f, false, 1.0, 0x1fff_e000);
        let configure = ClientRequest::Configure(Configure {
            extensions: vec!["version-rolling".into(), "info".into()],
            version_rolling_mask: Some(0x00ff_ff00),
            ..Configure::default()
        });
        s.handle(request(1, configure), &w, &stats, Instant::now(), &mut out);
        let l = lines(&mut out);
        assert!(
            l[0].contains("\"version-rolling.mask\":\"00ffe000\""),
            "{l:?}"
        );
        assert!(l[0].contains("\"info\":false"), "{l:?}");
        for (id, r) in [
            (2, ClientRequest::Subscribe(Subscribe::default())),
            (
                3,
                ClientRequest::Authorize(Authorize {
                    user: "a".into(),
                    password: None,
                }),
            ),
        ] {
            s.handle(request(id, r), &w, &stats, Instant::now(), &mut out);
        }
        out.clear();
        let w2 = Work {
            job: Arc::clone(&w.job),
            version_mask: 0x0000_e000,
        };
        s.on_work(&w2, &mut out);
        let l = lines(&mut out);
        assert_eq!(l.len(), 1, "mask only, same job: {l:?}");
        assert!(l[0].contains("mining.set_version_mask") && l[0].contains("0000e000"));
    }

    #[test]
    fn configure_answers_of_pools_without_bip310() {
        let mut f = JobFactory::new(1e15, 0, 12, "t").unwrap();
        let stats = StatsRecorder::default();
        let w = work(&mut f, false, 1.0, 0x1fff_e000);
        let configure = || {
            ClientRequest::Configure(Configure {
                extensions: vec!["version-rolling".into(), "minimum-difficulty".into()],
                version_rolling_mask: Some(0x1fff_e000),
                ..Configure::default()
            })
        };
        let answer = |mode: ConfigureAnswer| {
            let mut s = Session::new(1, vec![1; 4], 8).with_configure(mode);
            let mut out = Vec::new();
            s.handle(
                request(1, configure()),
                &w,
                &stats,
                Instant::now(),
                &mut out,
            );
            (s, lines(&mut out))
        };
        let (_, l) = answer(ConfigureAnswer::Grant);
        assert!(l[0].contains("\"version-rolling\":true"), "{l:?}");
        let (_, l) = answer(ConfigureAnswer::Error);
        assert!(
            l[0].contains("Unknown method") && l[0].contains("\"result\":null"),
            "{l:?}"
        );
        let (_, l) = answer(ConfigureAnswer::Ignore);
        assert!(l.is_empty(), "{l:?}");
        let (mut s, l) = answer(ConfigureAnswer::WithoutVersionRolling);
        assert!(
            !l[0].contains("version-rolling") && l[0].contains("minimum-difficulty"),
            "{l:?}"
        );
        // No rolling negotiated: a 6-parameter submit is refused, as such a pool would.
        for (id, r) in [
            (2, ClientRequest::Subscribe(Subscribe::default())),
            (
                3,
                ClientRequest::Authorize(Authorize {
                    user: "a".into(),
                    password: None,
                }),
            ),
        ] {
            s.handle(request(id, r), &w, &stats, Instant::now(), &mut Vec::new());
        }
        let submit = ClientRequest::Submit(Submit {
            worker: "a".into(),
            job_id: "0".into(),
            extranonce2: vec![0; 8],
            ntime: 0,
            nonce: 0,
            version_bits: Some(0),
        });
        let mut out = Vec::new();
        s.handle(request(4, submit), &w, &stats, Instant::now(), &mut out);
        assert_eq!(stats.snapshot().rejected_for(reason::MALFORMED), 1);
    }

    #[test]
    fn garbage_is_tolerated_up_to_a_limit_and_long_lines_close() {
        let mut f = JobFactory::new(1e15, 0, 12, "t").unwrap();
        let stats = StatsRecorder::default();
        let w = work(&mut f, false, 1.0, 0);
        let mut s = Session::new(1, vec![1; 4], 8);
        let mut out = Vec::new();
        let junk = || Err(Sv1Error::InvalidJson("x".into()));
        for _ in 0..MAX_BAD_LINES {
            assert_eq!(
                s.handle(junk(), &w, &stats, Instant::now(), &mut out),
                Flow::Continue
            );
        }
        assert_eq!(
            s.handle(junk(), &w, &stats, Instant::now(), &mut out),
            Flow::Close
        );
        assert!(out.is_empty(), "no reply without an id");
        let long = Err(Sv1Error::LineTooLong { max: 10 });
        let mut s = Session::new(2, vec![1; 4], 8);
        assert_eq!(
            s.handle(long, &w, &stats, Instant::now(), &mut out),
            Flow::Close
        );
    }
}
