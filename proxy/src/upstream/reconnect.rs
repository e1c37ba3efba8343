//! The life of a pool connection task, whatever its protocol: sessions one after the other,
//! with backoff between them, until shutdown.
//!
//! [`run`] is the loop both `sv1` and `sv2` use. A protocol supplies only one session
//! ([`Session::session`]: connect, handshake, relay work and shares until the pool goes away)
//! and says how it ended ([`Ended`]). The loop does the rest the same way for both:
//! - the status the pool manager reads for failover: `Connecting` while a session starts
//!   (the session itself reports `Up` once it has work), `Down` as soon as it ended;
//! - backoff: doubling from `min_backoff` to `max_backoff` with ±50% jitter
//!   ([`reconnect_delay`]), started again after a session that lasted [`HEALTHY_SESSION`];
//! - a pool's redirect (SV2 `Reconnect`) holds for the next session only, and goes through
//!   the same backoff, so hosts that keep redirecting to each other cannot make us spin;
//! - shares queued while the pool is down are answered as lost at once, and those still
//!   queued when the task ends too, so no miner waits forever.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashshift_protocol::share::Target;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::Classify;

use super::connection::{ConnStatus, ConnectionHandle, ConnectionParams, Hashrate, SUBMIT_QUEUE};
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::pool_link::work::WorkState;
use crate::telemetry::histogram::LATENCY_BUCKETS;
use crate::telemetry::{Histogram, ShareCounters};

/// A session that lasted this long proves the pool healthy: the next failure waits the
/// shortest backoff again. Not configurable: it only needs to be well above a connect and
/// handshake (`pool_connect_timeout_secs`) and well below a pool's usual uptime.
pub(super) const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// How often a session looks for shares the pool has not answered within `submit_timeout`
/// (and SV2 for a hashrate to announce). Not configurable: it is only the resolution of
/// those timeouts, which are configured.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a pool connection task holds whatever its protocol: its settings, its side of the
/// [`ConnectionHandle`], the shutdown token, and where a redirect sent it.
pub(super) struct Link {
    /// The pool and the timings towards it.
    pub params: ConnectionParams,
    /// Work for the miners on this connection.
    pub work_tx: watch::Sender<Arc<WorkState>>,
    /// Status for the pool manager.
    pub status_tx: watch::Sender<ConnStatus>,
    /// Miners' shares for the pool.
    pub submit_rx: mpsc::Receiver<UpstreamSubmit>,
    /// Shares as the pool judged them.
    pub counters: Arc<ShareCounters>,
    /// The miners' hashrate estimate, kept by the pool manager (SV2 announces it).
    pub hashrate: Arc<Hashrate>,
    /// Share sent → the pool's verdict.
    pub submit_latency: Arc<Histogram>,
    /// Cancelled when the proxy stops its pools.
    pub shutdown: CancellationToken,
    /// Where the pool's last `Reconnect` sent us, for the next session only.
    pub redirect: Option<String>,
}

impl Link {
    /// A connection's handle and the task's link, before the first session (no work yet).
    pub(super) fn new(
        params: ConnectionParams,
        shutdown: CancellationToken,
    ) -> (ConnectionHandle, Link) {
        let initial = WorkState {
            session: 0,
            extranonce1: bytes::Bytes::new(),
            extranonce2_size: 0,
            difficulty: 1.0,
            target: Target::DIFF1,
            version_mask: 0,
            job: None,
        };
        let (work_tx, work) = watch::channel(Arc::new(initial));
        let (submit, submit_rx) = mpsc::channel(SUBMIT_QUEUE);
        let (status_tx, status) = watch::channel(ConnStatus::Connecting);
        let counters = Arc::new(ShareCounters::default());
        let hashrate = Arc::new(Hashrate::default());
        let submit_latency = Arc::new(Histogram::new(LATENCY_BUCKETS));
        let handle = ConnectionHandle {
            pool: params.pool,
            work,
            submit,
            status,
            counters: counters.clone(),
            hashrate: hashrate.clone(),
            submit_latency: submit_latency.clone(),
        };
        let link = Link {
            params,
            work_tx,
            status_tx,
            submit_rx,
            counters,
            hashrate,
            submit_latency,
            shutdown,
            redirect: None,
        };
        (handle, link)
    }

    /// Connects to the pool (where a redirect sent us, else the configured address), Nagle
    /// off: shares are small and latency matters.
    pub(super) async fn tcp_connect(&self) -> std::io::Result<TcpStream> {
        let address = self
            .redirect
            .clone()
            .unwrap_or_else(|| self.params.url.authority());
        let stream = TcpStream::connect(address).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Runs the opening of a session (connect and, for SV2, the Noise handshake) within
    /// `connect_timeout`, giving way to shutdown at once.
    pub(super) async fn opening<T, E: Ended>(
        &self,
        open: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(E::shutdown()),
            r = tokio::time::timeout(self.params.connect_timeout, open) => {
                r.unwrap_or_else(|_| Err(E::timeout()))
            }
        }
    }
}

/// How a protocol's session ended, as far as the reconnect loop needs to know.
pub(super) trait Ended: fmt::Display + Classify {
    /// The end "shutting down".
    fn shutdown() -> Self;
    /// The end "the connect or handshake took longer than `connect_timeout`".
    fn timeout() -> Self;
    /// Whether the proxy is stopping (then the task ends instead of reconnecting).
    fn is_shutdown(&self) -> bool;
    /// Where the pool sent us, if it did; the next session connects there.
    fn redirect(&self) -> Option<String> {
        None
    }
    /// Logs the end (`retry_in`: the backoff before the next session).
    fn log(&self, link: &Link, retry_in: Duration) {
        let _ = link;
        warn!(error = %self, side = %self.side(), retry = %self.retry(), ?retry_in, "pool session ended");
    }
}

/// One protocol's connection task: a [`Link`] and whatever the protocol keeps across
/// sessions.
pub(super) trait Session: Send {
    /// Why a session ended.
    type End: Ended + Send;
    /// The task's link.
    fn link(&mut self) -> &mut Link;
    /// One session: connect, handshake, then relay work and shares until it ends. Every share
    /// it took from the queue is answered before it returns.
    fn session(&mut self) -> impl Future<Output = Self::End> + Send;
}

/// Runs sessions one after the other until shutdown (see the module doc).
pub(super) async fn run<S: Session>(mut task: S) {
    let mut failures: u32 = 0;
    loop {
        let _ = task.link().status_tx.send(ConnStatus::Connecting);
        let started = Instant::now();
        let end = task.session().await;
        let link = task.link();
        let _ = link.status_tx.send(ConnStatus::Down);
        if end.is_shutdown() {
            break;
        }
        link.redirect = end.redirect();
        if started.elapsed() > HEALTHY_SESSION {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = reconnect_delay(failures, link.params.min_backoff, link.params.max_backoff);
        end.log(link, wait);
        if !wait_to_reconnect(wait, &link.shutdown, &mut link.submit_rx, &link.counters).await {
            break;
        }
    }
    fail_queued(&mut task.link().submit_rx);
}

/// How long to wait before reconnecting after `failures` (≥ 1) consecutive failed sessions:
/// `min` doubled per further failure, at most `max`, with ±50% jitter so a fleet of proxies
/// does not reconnect to a recovering pool in step.
pub(super) fn reconnect_delay(failures: u32, min: Duration, max: Duration) -> Duration {
    use rand::Rng;
    // 2^20 × the smallest `min` is past the largest `max` config allows: the shift never
    // decides, `max` does.
    let doublings = failures.saturating_sub(1).min(20);
    let base = min.saturating_mul(1u32 << doublings).min(max);
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// Waits out a reconnect delay. Shares queued meanwhile belong to the ended session and can
/// never be submitted: they are answered at once instead of leaving their miners waiting.
/// Returns false when `shutdown` ended the wait.
async fn wait_to_reconnect(
    wait: Duration,
    shutdown: &CancellationToken,
    submit_rx: &mut mpsc::Receiver<UpstreamSubmit>,
    counters: &ShareCounters,
) -> bool {
    let backoff = tokio::time::sleep(wait);
    tokio::pin!(backoff);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = &mut backoff => return true,
            Some(s) = submit_rx.recv() => {
                counters.lose_weighted(s.difficulty);
                let _ = s.reply.send(SubmitOutcome::Lost("pool connection down"));
            }
        }
    }
}

/// Closes the share queue of a connection task that is ending and fails what is still in
/// it, so no miner waits forever.
fn fail_queued(submit_rx: &mut mpsc::Receiver<UpstreamSubmit>) {
    submit_rx.close();
    while let Ok(s) = submit_rx.try_recv() {
        let _ = s.reply.send(SubmitOutcome::Lost("proxy shutting down"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PoolUrl, WorkerIdentity};
    use crate::pool_link::work::UpstreamJob;
    use hashshift_protocol::share::{ExtendedJob, Target};
    use std::collections::VecDeque;
    use tokio::sync::oneshot;

    /// Ends scripted per session; past the script a session waits for shutdown.
    #[derive(Debug)]
    enum End {
        Timeout,
        Redirect(String),
        Shutdown,
    }

    impl fmt::Display for End {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Classify for End {
        fn side(&self) -> crate::error::Side {
            crate::error::Side::Pool
        }

        fn retry(&self) -> crate::error::Retry {
            crate::error::Retry::Yes
        }
    }

    impl Ended for End {
        fn shutdown() -> Self {
            End::Shutdown
        }
        fn timeout() -> Self {
            End::Timeout
        }
        fn is_shutdown(&self) -> bool {
            matches!(self, End::Shutdown)
        }
        fn redirect(&self) -> Option<String> {
            match self {
                End::Redirect(to) => Some(to.clone()),
                _ => None,
            }
        }
    }

    /// Per session: the redirect it was to use and the status it started under.
    type Starts = std::sync::Arc<std::sync::Mutex<Vec<(Option<String>, ConnStatus)>>>;

    /// A protocol whose sessions end as scripted, recording what each one started with.
    struct Scripted {
        link: Link,
        script: VecDeque<End>,
        started: Starts,
    }

    impl Session for Scripted {
        type End = End;
        fn link(&mut self) -> &mut Link {
            &mut self.link
        }
        async fn session(&mut self) -> End {
            let status = *self.link.status_tx.borrow();
            let redirect = self.link.redirect.clone();
            self.started.lock().unwrap().push((redirect, status));
            match self.script.pop_front() {
                Some(end) => end,
                None => {
                    self.link.shutdown.cancelled().await;
                    End::Shutdown
                }
            }
        }
    }

    fn params() -> ConnectionParams {
        ConnectionParams {
            pool: 0,
            url: PoolUrl::parse("stratum+tcp://127.0.0.1:1").unwrap(),
            user: "u".into(),
            password: "x".into(),
            identity: WorkerIdentity::Fixed,
            max_line_bytes: 1024,
            connect_timeout: Duration::from_secs(10),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            submit_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
            prefix_bytes: 2,
        }
    }

    fn share() -> (UpstreamSubmit, oneshot::Receiver<SubmitOutcome>) {
        let job = ExtendedJob {
            version: 0x2000_0000,
            prev_hash: [0; 32],
            coinbase_prefix: vec![],
            coinbase_suffix: vec![],
            merkle_branch: vec![],
            nbits: 0x1d00_ffff,
            ntime: 0,
        };
        let job = UpstreamJob::new(job, "j".into(), true, 1, Instant::now(), Target::DIFF1);
        let (reply, verdict) = oneshot::channel();
        let share = UpstreamSubmit {
            worker: "w".into(),
            job: Arc::new(job),
            extranonce2: vec![0; 4],
            ntime: 0,
            nonce: 0,
            version_bits: None,
            difficulty: 1.0,
            block: false,
            reply,
        };
        (share, verdict)
    }

    /// The loop both protocols share: a redirect holds for one session only, every session
    /// starts `Connecting` and ends `Down`, a share queued while the pool is down is answered
    /// at once, and shutdown ends the task.
    #[tokio::test(start_paused = true)]
    async fn sessions_follow_one_redirect_then_the_configured_address_until_shutdown() {
        let shutdown = CancellationToken::new();
        let (handle, link) = Link::new(params(), shutdown.clone());
        let started = Starts::default();
        let task = Scripted {
            link,
            script: VecDeque::from([End::Redirect("127.0.0.2:2".into()), End::Timeout]),
            started: started.clone(),
        };
        // Queued before the first session, which never reads it: the backoff answers it.
        let (s, verdict) = share();
        handle.submit.send(s).await.unwrap();
        let task = tokio::spawn(run(task));
        assert_eq!(
            verdict.await.unwrap(),
            SubmitOutcome::Lost("pool connection down")
        );
        // Two backoffs of at most 0.75 s and 1.5 s, then the third session waits.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            *started.lock().unwrap(),
            [
                (None, ConnStatus::Connecting),
                (Some("127.0.0.2:2".to_owned()), ConnStatus::Connecting),
                (None, ConnStatus::Connecting),
            ]
        );
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(*handle.status.borrow(), ConnStatus::Down);
        let (s, _) = share();
        assert!(
            handle.submit.send(s).await.is_err(),
            "the queue closes with the task"
        );
    }

    #[test]
    fn the_backoff_doubles_from_min_to_max_within_its_jitter() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(30));
        for _ in 0..50 {
            let first = reconnect_delay(1, min, max);
            assert!(first >= min / 2 && first <= min * 3 / 2, "{first:?}");
            let third = reconnect_delay(3, min, max);
            assert!(third >= min * 2 && third <= min * 6, "{third:?}");
            // Capped by `max`, however many failures; no overflow past 2^32.
            let late = reconnect_delay(u32::MAX, min, max);
            assert!(late >= max / 2 && late <= max * 3 / 2, "{late:?}");
        }
        // A long `max` is reached too (it used to stop at 64 s).
        let long = reconnect_delay(40, min, Duration::from_secs(3600));
        assert!(long >= Duration::from_secs(1800), "{long:?}");
    }
}
