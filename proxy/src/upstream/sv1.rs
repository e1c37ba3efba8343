//! One Stratum V1 connection to a pool, kept alive with backoff, publishing work to the miners
//! on it and carrying their shares up.
//!
//! The task owns the socket and its state. It speaks to the rest of the proxy through:
//! * a `watch` of [`WorkState`] (job, extranonce, pool target, mask) that miners read;
//! * a bounded `mpsc` of [`UpstreamSubmit`], each with a oneshot for the pool's verdict;
//! * a `watch` of [`ConnStatus`] the pool manager reads for failover.
//!
//! Every share sent up is answered: accepted, rejected with the pool's own error, or
//! [`SubmitOutcome::Lost`] when the connection dies or the pool never answers. Nothing is
//! dropped silently.
//!
//! Every write to the pool is bounded by `write_timeout` and by shutdown
//! ([`bounded_write`]): a pool that stops reading ends the session like a disconnect.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hashshift_protocol::share::Target;
use hashshift_protocol::sv1::{
    Authorize, ClientCodec, ClientMessage, ClientRequest, Configure, Id, Response, ServerMessage,
    ServerNotification, StratumError, Submit, Subscribe,
};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::connection::{
    ConnStatus, ConnectionHandle, ConnectionParams, REQUESTED_VERSION_MASK, WriteFailure,
    bounded_write,
};
use super::reconnect::{self, Ended, Link, SWEEP_EVERY};
use super::sent::{PoolShare, SentShares};
use crate::config::WorkerIdentity;
use crate::error::{Classify, Retry, Side};
use crate::pool_link::extranonce::{ExtranonceTooSmall, miner_extranonce2_size};
use crate::pool_link::submit::SubmitOutcome;
use crate::pool_link::work::{UpstreamJob, WorkState, next_session};
use crate::telemetry::RejectReason;

/// Starts a connection task; it runs until `shutdown`.
pub fn spawn(
    params: ConnectionParams,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> ConnectionHandle {
    let span = info_span!("pool", pool = params.pool, url = %params.url);
    let (handle, link) = Link::new(params, shutdown);
    let task = Task {
        link,
        sent: SentShares::new(),
    };
    tracker.spawn(reconnect::run(task).instrument(span));
    handle
}

/// The SV1 connection task: the shared [`Link`] and the shares already sent.
struct Task {
    link: Link,
    /// Shares sent on this connection, across its sessions (a pool that resumes a session
    /// with the same extranonce1 would see a re-sent share as a duplicate).
    sent: SentShares,
}

/// Why a session with the pool ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("timed out connecting or subscribing")]
    Timeout,
    #[error("connection closed by the pool")]
    Closed,
    #[error("I/O error: {0}")]
    Io(std::io::Error),
    #[error("pool refused the subscription: {0}")]
    Refused(String),
    #[error("pool unusable: {0}")]
    Extranonce(#[from] ExtranonceTooSmall),
    #[error("pool asked us to reconnect")]
    Reconnect,
    #[error("pool stopped reading: a write took longer than {0:?}")]
    WriteTimeout(Duration),
    #[error("shutting down")]
    Shutdown,
}

/// Every end but shutdown is the pool's (or the way to it); the loop reconnects after each,
/// and only an extranonce too small to split waits for an operator to change the pool.
impl Classify for SessionEnd {
    fn side(&self) -> Side {
        match self {
            SessionEnd::Shutdown => Side::Internal,
            _ => Side::Pool,
        }
    }

    fn retry(&self) -> Retry {
        match self {
            SessionEnd::Extranonce(_) | SessionEnd::Shutdown => Retry::No,
            _ => Retry::Yes,
        }
    }
}

impl Ended for SessionEnd {
    fn shutdown() -> Self {
        SessionEnd::Shutdown
    }
    fn timeout() -> Self {
        SessionEnd::Timeout
    }
    fn is_shutdown(&self) -> bool {
        matches!(self, SessionEnd::Shutdown)
    }
    // No redirect: SV1's `client.reconnect` is answered by reconnecting to the configured
    // address (see `on_notification`).
}

impl reconnect::Session for Task {
    type End = SessionEnd;
    fn link(&mut self) -> &mut Link {
        &mut self.link
    }
    async fn session(&mut self) -> SessionEnd {
        self.run_session().await
    }
}

impl SessionEnd {
    /// The end of a session whose write to the pool did not complete.
    fn from_write(failure: WriteFailure<std::io::Error>, timeout: Duration) -> Self {
        match failure {
            WriteFailure::Failed(e) => SessionEnd::Io(e),
            WriteFailure::TimedOut => SessionEnd::WriteTimeout(timeout),
            WriteFailure::Shutdown => SessionEnd::Shutdown,
        }
    }
}

enum Call {
    Configure,
    Subscribe,
    ExtranonceSubscribe,
    Authorize(Arc<str>),
    Submit {
        reply: oneshot::Sender<SubmitOutcome>,
        difficulty: f64,
        block: bool,
        sent: Instant,
    },
}

impl Task {
    async fn run_session(&mut self) -> SessionEnd {
        let p = self.link.params.clone();
        let connect = async { self.link.tcp_connect().await.map_err(SessionEnd::Connect) };
        let stream = match self.link.opening(connect).await {
            Ok(stream) => stream,
            Err(end) => return end,
        };
        let mut framed = Framed::new(stream, ClientCodec::with_max_line_len(p.max_line_bytes));
        let mut state = SessionState::default();
        let mut calls: HashMap<u64, Call> = HashMap::new();
        let mut next_id: u64 = 1;
        let mut authorized: HashSet<Arc<str>> = HashSet::new();

        // Pipeline the handshake: configure, subscribe, extranonce.subscribe, authorize.
        let configure = ClientRequest::Configure(Configure {
            extensions: vec!["version-rolling".into()],
            version_rolling_mask: Some(REQUESTED_VERSION_MASK),
            version_rolling_min_bit_count: Some(2),
            minimum_difficulty: None,
            other_params: Default::default(),
        });
        let subscribe = ClientRequest::Subscribe(Subscribe {
            user_agent: Some(concat!("hashshift/", env!("CARGO_PKG_VERSION")).into()),
            session_id: None,
        });
        let user: Arc<str> = p.user.as_str().into();
        let mut opening = vec![
            (configure, Call::Configure),
            (subscribe, Call::Subscribe),
            (
                ClientRequest::ExtranonceSubscribe,
                Call::ExtranonceSubscribe,
            ),
        ];
        opening.push((
            ClientRequest::Authorize(Authorize {
                user: p.user.clone(),
                password: Some(p.password.clone()),
            }),
            Call::Authorize(user.clone()),
        ));
        authorized.insert(user);
        let (write_timeout, shutdown) = (p.write_timeout, self.link.shutdown.clone());
        let write_end = |e| SessionEnd::from_write(e, write_timeout);
        // Fed, then flushed once: one write for the four requests.
        for (request, call) in opening {
            let id = next_id;
            next_id += 1;
            calls.insert(id, call);
            let message = ClientMessage::Request {
                id: Id::from(id),
                request,
            };
            if let Err(e) = bounded_write(framed.feed(message), write_timeout, &shutdown).await {
                return write_end(e);
            }
        }
        if let Err(e) = bounded_write(
            SinkExt::<ClientMessage>::flush(&mut framed),
            write_timeout,
            &shutdown,
        )
        .await
        {
            return write_end(e);
        }

        let deadline = tokio::time::Instant::now() + p.connect_timeout;
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let end = loop {
            tokio::select! {
                _ = self.link.shutdown.cancelled() => break SessionEnd::Shutdown,
                _ = tokio::time::sleep_until(deadline), if state.session == 0 => break SessionEnd::Timeout,
                _ = sweep.tick() => {
                    let now = Instant::now();
                    let timeout = p.submit_timeout;
                    let expired: Vec<u64> = calls.iter().filter_map(|(id, c)| match c {
                        Call::Submit { sent, .. } if now.duration_since(*sent) > timeout => Some(*id),
                        _ => None,
                    }).collect();
                    for id in expired {
                        if let Some(Call::Submit { reply, difficulty, .. }) = calls.remove(&id) {
                            self.link.counters.lose_weighted(difficulty);
                            let _ = reply.send(SubmitOutcome::Lost("pool did not answer"));
                        }
                    }
                }
                // Taken before the subscription too: a share queued then is for a job of an
                // earlier session, and is answered at once instead of after the handshake
                // (or its timeout, when the pool does not answer).
                share = self.link.submit_rx.recv() => {
                    let Some(share) = share else { break SessionEnd::Shutdown };
                    if share.job.session != state.session {
                        // The job's extranonce1 belongs to an earlier session: the pool would
                        // reject it as a stale or invalid share.
                        self.link.counters.lose_weighted(share.difficulty);
                        let _ = share.reply.send(SubmitOutcome::Lost("job from a previous pool session"));
                        continue;
                    }
                    let seen = self.sent.check(&PoolShare::of(
                        &share,
                        &state.extranonce1,
                        state.version_mask,
                    ));
                    if let Some(refusal) = seen.refusal() {
                        debug!(?seen, pool_job = %share.job.pool_job_id, "share not sent to the pool");
                        let _ = share.reply.send(refusal);
                        continue;
                    }
                    let worker: Arc<str> = match p.identity {
                        WorkerIdentity::Fixed => p.user.as_str().into(),
                        WorkerIdentity::Passthrough => share.worker.clone(),
                    };
                    if !authorized.contains(&worker) && authorized.len() < 100_000 {
                        let id = next_id;
                        next_id += 1;
                        calls.insert(id, Call::Authorize(worker.clone()));
                        authorized.insert(worker.clone());
                        let request = ClientRequest::Authorize(Authorize { user: worker.to_string(), password: Some(p.password.clone()) });
                        let feed = framed.feed(ClientMessage::Request { id: Id::from(id), request });
                        if let Err(e) = bounded_write(feed, write_timeout, &shutdown).await {
                            self.link.counters.lose_weighted(share.difficulty);
                            let _ = share.reply.send(SubmitOutcome::Lost("pool connection failed"));
                            break write_end(e);
                        }
                    }
                    let id = next_id;
                    next_id += 1;
                    let request = ClientRequest::Submit(Submit {
                        worker: worker.to_string(),
                        job_id: share.job.pool_job_id.clone(),
                        extranonce2: share.extranonce2,
                        ntime: share.ntime,
                        nonce: share.nonce,
                        version_bits: submit_version_bits(share.version_bits, share.job.job.version, state.version_mask),
                    });
                    calls.insert(id, Call::Submit { reply: share.reply, difficulty: share.difficulty, block: share.block, sent: Instant::now() });
                    // Answered with the rest of `calls` if this write fails or stalls.
                    let send = framed.send(ClientMessage::Request { id: Id::from(id), request });
                    if let Err(e) = bounded_write(send, write_timeout, &shutdown).await {
                        break write_end(e);
                    }
                }
                msg = framed.next() => {
                    let msg = match msg {
                        None => break SessionEnd::Closed,
                        Some(Err(e)) => break SessionEnd::Io(e),
                        Some(Ok(Err(e))) => {
                            // One bad line from a pool is logged and skipped; pools do send junk.
                            warn!(error = %e, "unparseable line from pool");
                            continue;
                        }
                        Some(Ok(Ok(m))) => m,
                    };
                    match msg {
                        ServerMessage::Response(r) => {
                            if let Err(end) = self.on_response(r, &mut calls, &mut state) {
                                break end;
                            }
                        }
                        ServerMessage::Notification { id, notification } => {
                            if let Err(end) = self.on_notification(id, notification, &mut state, &mut framed).await {
                                break end;
                            }
                        }
                    }
                }
            }
        };
        for (_, call) in calls.drain() {
            if let Call::Submit {
                reply, difficulty, ..
            } = call
            {
                self.link.counters.lose_weighted(difficulty);
                let _ = reply.send(SubmitOutcome::Lost("pool connection lost"));
            }
        }
        end
    }

    fn on_response(
        &self,
        r: Response,
        calls: &mut HashMap<u64, Call>,
        state: &mut SessionState,
    ) -> Result<(), SessionEnd> {
        let Some(call) = r.id.as_u64().and_then(|id| calls.remove(&id)) else {
            debug!(id = ?r.id, "response to no request");
            return Ok(());
        };
        match call {
            Call::Configure => {
                // BIP310: the pool answers `requested & its own mask`; an error, a missing
                // key or `"version-rolling": false` all mean no rolling. Never more than we
                // asked for, whatever the pool says.
                state.version_mask = r
                    .configure_result()
                    .ok()
                    .and_then(|c| c.negotiated_mask())
                    .unwrap_or(0)
                    & REQUESTED_VERSION_MASK;
                if state.version_mask == 0 {
                    info!(
                        error = ?r.error,
                        "pool did not grant version rolling; miners are told version-rolling false"
                    );
                } else {
                    info!(
                        mask = format_args!("{:08x}", state.version_mask),
                        "version rolling negotiated"
                    );
                }
                self.publish(state);
            }
            Call::Subscribe => {
                let result = r.subscribe_result().map_err(|e| {
                    SessionEnd::Refused(
                        r.error
                            .as_ref()
                            .map_or_else(|| e.to_string(), |err| err.message.clone()),
                    )
                })?;
                self.check_extranonce2(result.extranonce2_size)?;
                state.session = next_session();
                state.extranonce1 = result.extranonce1.into();
                state.extranonce2_size = result.extranonce2_size;
                info!(extranonce1 = %hex::encode(&state.extranonce1), extranonce2_size = state.extranonce2_size, "subscribed");
                self.publish(state);
            }
            Call::ExtranonceSubscribe => {}
            Call::Authorize(worker) => {
                if r.as_bool() != Ok(true) {
                    warn!(%worker, error = ?r.error, "pool refused a worker");
                }
            }
            Call::Submit {
                reply,
                difficulty,
                block,
                sent,
            } => {
                self.link.submit_latency.observe_duration(sent.elapsed());
                let outcome = match (r.as_bool(), r.error) {
                    (Ok(true), _) => {
                        self.link.counters.accept(difficulty);
                        if block {
                            self.link.counters.block();
                        }
                        SubmitOutcome::Accepted
                    }
                    (_, Some(e)) => {
                        self.link
                            .counters
                            .reject_weighted(RejectReason::from_sv1_code(e.code), difficulty);
                        SubmitOutcome::Rejected(e)
                    }
                    (_, None) => {
                        self.link
                            .counters
                            .reject_weighted(RejectReason::Other, difficulty);
                        SubmitOutcome::Rejected(StratumError::with_message(
                            hashshift_protocol::sv1::ErrorCode::Other,
                            "rejected by pool",
                        ))
                    }
                };
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }

    async fn on_notification(
        &self,
        id: Id,
        n: ServerNotification,
        state: &mut SessionState,
        framed: &mut Framed<TcpStream, ClientCodec>,
    ) -> Result<(), SessionEnd> {
        match n {
            ServerNotification::Notify(notify) => {
                if state.session == 0 {
                    // Work before the subscribe result: keep it until we know our extranonce.
                    state.pending_notify = Some(notify);
                    return Ok(());
                }
                let job = UpstreamJob::from_notify(
                    &notify,
                    state.session,
                    Instant::now(),
                    state.difficulty,
                );
                debug!(pool_job = %notify.job_id, job = job.id, clean = notify.clean_jobs, "new job");
                state.job = Some(Arc::new(job));
                self.publish(state);
            }
            ServerNotification::SetDifficulty(d) => {
                state.difficulty = d;
                // Like miners, apply it from the next job on (that job records it).
            }
            ServerNotification::SetExtranonce(e) => {
                self.check_extranonce2(e.extranonce2_size)?;
                state.session = next_session();
                state.extranonce1 = e.extranonce1.into();
                state.extranonce2_size = e.extranonce2_size;
                // Jobs of the old session are void; miners wait for the next notify.
                state.job = None;
                info!(extranonce1 = %hex::encode(&state.extranonce1), "pool changed our extranonce");
                self.publish(state);
            }
            ServerNotification::SetVersionMask(mask) => {
                // BIP310: valid immediately, for the whole connection; miners follow through
                // the published work (their own grant is `requested & this`).
                state.version_mask = mask & REQUESTED_VERSION_MASK;
                info!(
                    mask = format_args!("{:08x}", state.version_mask),
                    "pool changed the version-rolling mask"
                );
                self.publish(state);
            }
            ServerNotification::Reconnect(r) => {
                info!(host = ?r.host, port = ?r.port, "pool asked for a reconnect; reconnecting to the configured address");
                return Err(SessionEnd::Reconnect);
            }
            ServerNotification::ShowMessage(m) => info!(message = %m, "message from pool"),
            ServerNotification::GetVersion => {
                let reply = Response::ok(
                    id,
                    serde_json::Value::String(
                        concat!("hashshift/", env!("CARGO_PKG_VERSION")).into(),
                    ),
                );
                let timeout = self.link.params.write_timeout;
                bounded_write(
                    framed.send(ClientMessage::Response(reply)),
                    timeout,
                    &self.link.shutdown,
                )
                .await
                .map_err(|e| SessionEnd::from_write(e, timeout))?;
            }
            ServerNotification::Unknown { method, .. } => {
                debug!(%method, "unknown notification from pool")
            }
            _ => {}
        }
        if state.session != 0 {
            if let Some(notify) = state.pending_notify.take() {
                state.job = Some(Arc::new(UpstreamJob::from_notify(
                    &notify,
                    state.session,
                    Instant::now(),
                    state.difficulty,
                )));
                self.publish(state);
            }
        }
        Ok(())
    }

    /// Refuses a pool session whose extranonce2 leaves miners too little room after the
    /// proxy's prefix: the session ends (the pool counts as down and miners go to the next
    /// pool) instead of miners being handed an unusable extranonce.
    fn check_extranonce2(&self, pool_extranonce2_size: usize) -> Result<(), SessionEnd> {
        miner_extranonce2_size(pool_extranonce2_size, self.link.params.prefix_bytes).map_err(
            |e| {
                error!(
                    pool = %self.link.params.url,
                    pool_extranonce2 = e.pool_extranonce2,
                    proxy_extranonce2_bytes = e.prefix_bytes,
                    left = e.left(),
                    "{e}"
                );
                SessionEnd::from(e)
            },
        )?;
        Ok(())
    }

    fn publish(&self, state: &SessionState) {
        let ready = state.session != 0 && state.job.is_some();
        let target = Target::from_difficulty(state.difficulty).unwrap_or(Target::DIFF1);
        let work = WorkState {
            session: state.session,
            extranonce1: state.extranonce1.clone(),
            extranonce2_size: state.extranonce2_size,
            difficulty: state.difficulty,
            target,
            version_mask: state.version_mask,
            job: state.job.clone(),
        };
        self.link.work_tx.send_replace(Arc::new(work));
        let _ = self.link.status_tx.send(if ready {
            ConnStatus::Up
        } else {
            ConnStatus::Connecting
        });
    }
}

/// The `version_bits` of a share's `mining.submit` on a session where the pool granted
/// `session_mask` (0: no rolling). Once rolling is negotiated every submit carries them
/// (BIP310's 6-parameter form; SRI's translator, on sv1_api, refuses a 5-parameter submit on
/// such a session as "other" error): a miner that did not roll sends the job's own bits, so
/// the pool rebuilds `(job & !mask) | (bits & mask)` = the job's version. Without a grant,
/// none (a pool that did not negotiate rolling may refuse the sixth parameter).
fn submit_version_bits(
    share_bits: Option<u32>,
    job_version: u32,
    session_mask: u32,
) -> Option<u32> {
    if session_mask == 0 {
        return None;
    }
    Some(share_bits.unwrap_or(job_version) & session_mask)
}

struct SessionState {
    session: u64,
    extranonce1: bytes::Bytes,
    extranonce2_size: usize,
    difficulty: f64,
    version_mask: u32,
    job: Option<Arc<UpstreamJob>>,
    pending_notify: Option<hashshift_protocol::sv1::Notify>,
}

impl Default for SessionState {
    fn default() -> Self {
        SessionState {
            session: 0,
            extranonce1: bytes::Bytes::new(),
            extranonce2_size: 0,
            difficulty: 1.0,
            version_mask: 0,
            job: None,
            pending_notify: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dropped pool is worth another session; an unusable extranonce is not until the pool
    /// changes, and shutdown is ours.
    #[test]
    fn session_ends_say_whose_they_are_and_whether_to_retry() {
        let too_small = ExtranonceTooSmall {
            pool_extranonce2: 2,
            prefix_bytes: 2,
        };
        assert_eq!(SessionEnd::Closed.side(), Side::Pool);
        assert_eq!(SessionEnd::Closed.retry(), Retry::Yes);
        assert_eq!(SessionEnd::Timeout.retry(), Retry::Yes);
        assert_eq!(SessionEnd::Extranonce(too_small).retry(), Retry::No);
        assert_eq!(SessionEnd::Shutdown.side(), Side::Internal);
    }

    /// On a rolling session every submit carries version bits, a non-rolling miner's being
    /// the job's own, and the pool rebuilds the version the miner hashed; without rolling,
    /// none are sent.
    #[test]
    fn submits_carry_version_bits_exactly_when_rolling_was_negotiated() {
        use crate::upstream::connection::rolled_version;
        let mask = 0x1fff_e000;
        for job in [0x2000_0000u32, 0x2000_4004] {
            let bits = submit_version_bits(None, job, mask);
            assert_eq!(bits, Some(job & mask));
            assert_eq!(
                rolled_version(job, bits, mask),
                job,
                "the header the miner hashed"
            );
        }
        let rolled = submit_version_bits(Some(0x0012_2000), 0x2000_0000, mask);
        assert_eq!(rolled, Some(0x0012_2000));
        assert_eq!(
            submit_version_bits(Some(0xffff_ffff), 0x2000_0000, mask),
            Some(mask),
            "never outside the session's mask"
        );
        assert_eq!(submit_version_bits(None, 0x2000_0000, 0), None);
    }
}
