//! An embedded Stratum V1 (or, with [`TestPool::start_sv2`], Stratum V2) pool for demos,
//! end-to-end tests and load generation.
//!
//! As far as a proxy can tell it is a real pool: it hands out realistic jobs (a BIP34
//! coinbase with a P2WPKH payout and a witness commitment, random merkle branches, nBits from
//! a network difficulty, advancing ntime and prevhash) and validates every share itself with
//! [`ShareValidator`](hashshift_protocol::share::ShareValidator) (real double SHA-256). In
//! tests, "accepted upstream" therefore means "valid by an independent check".
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`TestPoolConfig`], the [`TestPool`] handle and its controls |
//! | `job.rs` | job making, the coinbase layout, [`job_tag`] |
//! | `session.rs` | one connection's protocol state (sans-IO) |
//! | `conn.rs` | the accept loop and the per-connection task |
//! | `stats.rs` | [`PoolStats`], [`WorkerStats`], reject [`reason`]s |
//! | `sv2.rs` | the Stratum V2 mode: Noise responder, extended channels (see its docs) |
//!
//! # Behaviour
//! - `mining.configure`: version-rolling granted as `requested & version_mask` (or refused,
//!   answered without the key, or ignored: [`ConfigureAnswer`]);
//!   minimum-difficulty and `mining.suggest_difficulty` set a per-connection floor (the
//!   difficulty sent is `max(pool difficulty, floor)`, from the next job); subscribe-extranonce
//!   accepted (the pool never changes extranonce1). Unknown extensions get `false`.
//! - `mining.subscribe` gives a unique extranonce1 per connection; `mining.authorize` accepts
//!   any name, and several names per connection. Shares are credited to the worker named in
//!   `mining.submit`, which must have been authorized on that connection (error 24 otherwise,
//!   as real pools do).
//! - After subscribe and authorize: `mining.set_difficulty`, then the current job (clean).
//!   Later jobs arrive every `job_interval`, new blocks every `block_interval` (and right after
//!   a share meets the network target). The last 8 jobs of a block stay valid.
//! - Unknown methods get error 20 and the connection stays.
//! - Each connection has a bounded send queue; a peer that stops reading is first no longer
//!   read from, then dropped after `send_timeout`, never allowed to hold up others. Lines
//!   are limited to 16 KiB.
//!
//! # Controls
//! [`TestPool::stall`] stops all job traffic (connections stay open; new subscribers still
//! get the job current when the stall began, as a stuck pool would); changes made while
//! stalled ([`TestPool::set_difficulty`], [`TestPool::new_job`]) take effect with the fresh
//! job sent on resume. [`TestPool::kill`] closes the listener and every connection at once;
//! [`TestPool::revive`] listens again on the same address. [`TestPool::set_answer_delay`]
//! holds every `mining.submit` verdict back (as a slow or distant pool would), so tests can
//! have shares in flight; [`TestPool::held_answers`] counts the submits waiting meanwhile.
//! [`TestPool::stop_reading`] stops reading every connection (new ones too) while keeping
//! them open and still writing, as a pool whose reader is stuck; on a listener with a small
//! receive buffer and MSS ([`TestPool::start_on`]) the client's writes then stall quickly.

mod config;
mod conn;
mod job;
mod session;
mod stats;
mod sv2;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use hashshift_protocol::noise::{AuthorityKeypair, AuthorityPublicKey, ResponderConfig, SecretKey};

pub use config::{ConfigureAnswer, TestPoolConfig};
pub use job::job_tag;
pub use stats::{MAX_TRACKED_WORKERS, OTHER_WORKERS, PoolStats, WorkerStats, reason};

use job::{JobFactory, PoolJob, Work};
use stats::StatsRecorder;

/// How many job send times [`TestPool::job_sent_at`] remembers.
const SENT_AT_KEPT: usize = 65_536;
/// A running test pool. Cheap to clone; the pool stops when [`TestPool::shutdown`] is called
/// or the last clone is dropped.
#[derive(Clone)]
pub struct TestPool {
    inner: Arc<Inner>,
    _stop_on_drop: Arc<DropGuard>,
}

impl std::fmt::Debug for TestPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPool")
            .field("name", &self.inner.config.name)
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

/// State shared by the handle, the timers and the connection tasks.
pub(crate) struct Inner {
    config: TestPoolConfig,
    addr: SocketAddr,
    stats: StatsRecorder,
    state: Mutex<PoolState>,
    /// Latest-wins work for every connection: a job and its difficulty travel together, so
    /// set_difficulty and notify can never be reordered or split.
    work: watch::Sender<Work>,
    /// Source of unique extranonce1 values (starts at a random value).
    next_extranonce1: AtomicU64,
    root: CancellationToken,
    tasks: TaskTracker,
    /// The listener and its connections, while the pool is alive.
    life: Mutex<Option<Life>>,
    /// Noise keys in SV2 mode; `None` for an SV1 pool.
    sv2: Option<ResponderConfig>,
    /// How long each submit's verdict is held back, in milliseconds (0: answer at once).
    answer_delay_ms: AtomicU64,
    /// Submits received whose verdict is being held back now.
    held_answers: AtomicUsize,
    /// SV2 mode: where connections are told to go (`Reconnect`), bumped on each redirect.
    redirect: watch::Sender<Option<SocketAddr>>,
    /// Whether connections read from their peers ([`TestPool::stop_reading`]).
    reading: watch::Sender<bool>,
}

/// One "life" of the pool between start/revive and kill.
struct Life {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// Job-making state, behind a std mutex held only for synchronous updates.
struct PoolState {
    factory: JobFactory,
    current: Arc<PoolJob>,
    difficulty: f64,
    version_mask: u32,
    stalled: bool,
    sent_at: BTreeMap<u64, Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few assignments: a panic in one leaves nothing
    // half-updated that matters, so a poisoned lock is reused.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Makes and publishes a job unless stalled. Publishing happens under the state lock so
    /// that two publishers cannot reorder their jobs.
    fn publish_job(&self, clean: bool) {
        let mut state = lock(&self.state);
        if state.stalled {
            return;
        }
        Self::publish_locked(&mut state, &self.work, clean);
    }

    fn publish_locked(state: &mut PoolState, work: &watch::Sender<Work>, clean: bool) {
        let job = state.factory.next_job(
            clean,
            state.difficulty,
            hashshift_proxy::time::unix_secs_u32(),
        );
        state.sent_at.insert(job.seq, Instant::now());
        while state.sent_at.len() > SENT_AT_KEPT {
            state.sent_at.pop_first();
        }
        state.current = Arc::clone(&job);
        work.send_replace(Work {
            job,
            version_mask: state.version_mask,
        });
    }

    /// How long to hold a submit's verdict back.
    fn answer_delay(&self) -> Duration {
        Duration::from_millis(self.answer_delay_ms.load(Ordering::Relaxed))
    }

    fn current_work(&self) -> Work {
        self.work.borrow().clone()
    }

    /// A share met the network target: the chain moves on.
    fn block_found(&self) {
        self.publish_job(true);
    }
}

impl TestPool {
    /// Binds `config.listen` and starts serving.
    ///
    /// # Errors
    /// The bind error, or `InvalidInput` for an unusable configuration.
    pub async fn start(config: TestPoolConfig) -> std::io::Result<TestPool> {
        Self::start_with(config, None, None).await
    }

    /// Like [`TestPool::start`] on a listener the caller made (`config.listen` is ignored),
    /// e.g. with socket options tokio does not expose. [`TestPool::revive`] binds a plain
    /// listener on the same address.
    ///
    /// # Errors
    /// `InvalidInput` for an unusable configuration.
    pub async fn start_on(
        config: TestPoolConfig,
        listener: TcpListener,
    ) -> std::io::Result<TestPool> {
        Self::start_with(config, None, Some(listener)).await
    }

    /// [`TestPool::start_sv2`] on a listener the caller made (see [`TestPool::start_on`]).
    ///
    /// # Errors
    /// `InvalidInput` for an unusable configuration.
    pub async fn start_sv2_on(
        config: TestPoolConfig,
        listener: TcpListener,
    ) -> std::io::Result<TestPool> {
        let authority = AuthorityKeypair::generate(&mut rand::rng());
        let static_key = SecretKey::generate(&mut rand::rng());
        let noise = ResponderConfig::new(authority, static_key, 86_400);
        Self::start_with(config, Some(noise), Some(listener)).await
    }

    /// Binds `config.listen` and starts serving Stratum V2 (Noise, extended channels; see
    /// `sv2.rs`) under a freshly generated authority key, valid for a day. In this mode
    /// `extranonce1_len` is the channel's extranonce prefix and `extranonce2_size` the
    /// rollable extranonce size (see [`TestPoolConfig::sv2`]).
    ///
    /// # Errors
    /// The bind error, or `InvalidInput` for an unusable configuration.
    pub async fn start_sv2(config: TestPoolConfig) -> std::io::Result<TestPool> {
        let authority = AuthorityKeypair::generate(&mut rand::rng());
        Self::start_sv2_node(config, authority).await
    }

    /// An SV2 pool whose certificates `authority` signs: several nodes of one pool operator
    /// share it (so a client pinned to it accepts a `Reconnect` to any of them).
    pub async fn start_sv2_node(
        config: TestPoolConfig,
        authority: AuthorityKeypair,
    ) -> std::io::Result<TestPool> {
        let static_key = SecretKey::generate(&mut rand::rng());
        let noise = ResponderConfig::new(authority, static_key, 86_400);
        Self::start_with(config, Some(noise), None).await
    }

    async fn start_with(
        config: TestPoolConfig,
        sv2: Option<ResponderConfig>,
        listener: Option<TcpListener>,
    ) -> std::io::Result<TestPool> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        config.validate().map_err(invalid)?;
        let mut factory = JobFactory::new(
            config.network_difficulty,
            config.merkle_branch_len,
            config.extranonce1_len + config.extranonce2_size,
            &config.name,
        )
        .map_err(invalid)?
        .with_extra_outputs(config.coinbase_extra_outputs);
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(config.listen).await?,
        };
        let addr = listener.local_addr()?;
        let first = factory.next_job(
            true,
            config.difficulty,
            hashshift_proxy::time::unix_secs_u32(),
        );
        let mut sent_at = BTreeMap::new();
        sent_at.insert(first.seq, Instant::now());
        let (work, _) = watch::channel(Work {
            job: Arc::clone(&first),
            version_mask: config.version_mask,
        });
        let root = CancellationToken::new();
        let inner = Arc::new(Inner {
            state: Mutex::new(PoolState {
                factory,
                current: first,
                difficulty: config.difficulty,
                version_mask: config.version_mask,
                stalled: false,
                sent_at,
            }),
            addr,
            stats: StatsRecorder::default(),
            work,
            next_extranonce1: AtomicU64::new(rand::random()),
            root: root.clone(),
            tasks: TaskTracker::new(),
            life: Mutex::new(None),
            answer_delay_ms: AtomicU64::new(0),
            redirect: watch::Sender::new(None),
            reading: watch::Sender::new(true),
            held_answers: AtomicUsize::new(0),
            config,
            sv2,
        });
        info!(pool = %inner.config.name, %addr, difficulty = inner.config.difficulty, "test pool started");
        let span = info_span!("testpool", pool = %inner.config.name);
        inner
            .tasks
            .spawn(run_timers(Arc::clone(&inner)).instrument(span));
        let pool = TestPool {
            inner,
            _stop_on_drop: Arc::new(root.drop_guard()),
        };
        pool.go_live(listener);
        Ok(pool)
    }

    fn go_live(&self, listener: TcpListener) {
        let life = Life {
            cancel: self.inner.root.child_token(),
            tracker: TaskTracker::new(),
        };
        let span = info_span!("testpool", pool = %self.inner.config.name);
        let (inner, cancel, tracker) = (
            Arc::clone(&self.inner),
            life.cancel.clone(),
            life.tracker.clone(),
        );
        if self.inner.sv2.is_some() {
            life.tracker.spawn(
                accept_loop(inner, listener, cancel, tracker, "sv2", sv2::serve).instrument(span),
            );
        } else {
            life.tracker.spawn(
                accept_loop(inner, listener, cancel, tracker, "sv1", conn::serve).instrument(span),
            );
        }
        *lock(&self.inner.life) = Some(life);
    }

    /// The address the pool listens on (the same after [`TestPool::revive`]).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The authority public key clients must pin (SV2 mode only).
    pub fn authority_public_key(&self) -> Option<AuthorityPublicKey> {
        self.inner.sv2.as_ref().map(|c| c.authority_public_key())
    }

    /// The URL a proxy config uses for this pool: `stratum+tcp://ADDR`, or in SV2 mode
    /// `stratum2+tcp://ADDR/AUTHORITY_PUBKEY`.
    pub fn url(&self) -> String {
        match self.authority_public_key() {
            Some(key) => format!("stratum2+tcp://{}/{key}", self.inner.addr),
            None => format!("stratum+tcp://{}", self.inner.addr),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats.snapshot()
    }

    /// Stops (`true`) or resumes (`false`) sending jobs. Connections stay open. Resuming
    /// sends a fresh job at once.
    pub fn stall(&self, stalled: bool) {
        let mut state = lock(&self.inner.state);
        let resume = state.stalled && !stalled;
        state.stalled = stalled;
        if resume {
            Inner::publish_locked(&mut state, &self.inner.work, false);
        }
        info!(pool = %self.inner.config.name, stalled, "stall");
    }

    /// The pool dies: stops accepting and closes every connection at once. Returns when the
    /// listening socket and all connections are closed. Does nothing if already dead.
    pub async fn kill(&self) {
        let life = lock(&self.inner.life).take();
        if let Some(life) = life {
            life.cancel.cancel();
            life.tracker.close();
            life.tracker.wait().await;
            info!(pool = %self.inner.config.name, "killed");
        }
    }

    /// Listens again on the same address after [`TestPool::kill`]. Does nothing if alive.
    ///
    /// # Errors
    /// The bind error (e.g. the port was taken meanwhile).
    pub async fn revive(&self) -> std::io::Result<()> {
        if lock(&self.inner.life).is_some() {
            return Ok(());
        }
        let listener = TcpListener::bind(self.inner.addr).await?;
        if lock(&self.inner.life).is_some() {
            return Ok(()); // revived concurrently; this listener is dropped
        }
        self.go_live(listener);
        info!(pool = %self.inner.config.name, addr = %self.inner.addr, "revived");
        Ok(())
    }

    /// Sets the share difficulty: every connection gets `mining.set_difficulty` and then a
    /// new job (shares of earlier jobs keep their difficulty). Non-positive or non-finite
    /// values are ignored.
    pub fn set_difficulty(&self, difficulty: f64) {
        if !(difficulty.is_finite() && difficulty > 0.0) {
            warn!(pool = %self.inner.config.name, difficulty, "ignoring invalid difficulty");
            return;
        }
        lock(&self.inner.state).difficulty = difficulty;
        self.inner.publish_job(false);
    }

    /// Changes the pool's version-rolling mask; connections that negotiated rolling get
    /// `mining.set_version_mask` with their new grant (`requested & mask`).
    pub fn set_version_mask(&self, mask: u32) {
        let mut state = lock(&self.inner.state);
        state.version_mask = mask;
        self.inner.work.send_replace(Work {
            job: Arc::clone(&state.current),
            version_mask: mask,
        });
    }

    /// Sends a new job now; `clean` starts a new block (earlier jobs become stale).
    pub fn new_job(&self, clean: bool) {
        self.inner.publish_job(clean);
    }

    /// Stops (`true`) or resumes (`false`) reading from every connection, new ones included.
    /// Connections stay open and the pool keeps writing to them (jobs); requests wait in the
    /// socket buffers, so a client that keeps writing soon finds its writes stalled.
    pub fn stop_reading(&self, stop: bool) {
        self.inner.reading.send_replace(!stop);
        info!(pool = %self.inner.config.name, stop, "stop reading");
    }

    /// SV2 mode: sends `Reconnect` to `to` on every open connection (SV1 mode: no effect).
    pub fn redirect(&self, to: SocketAddr) {
        self.inner.redirect.send_replace(Some(to));
    }

    /// Holds the verdict of every `mining.submit` back by `delay` from when it was read, as a
    /// slow or distant pool would (zero, the default, answers at once). The share is judged
    /// and counted in [`TestPool::stats`] when read; only the answer waits, and answers on one
    /// connection keep their order (those queued behind a held one wait for it). Reading goes
    /// on meanwhile, so several shares can be in flight at once.
    pub fn set_answer_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner.answer_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Submit answers being held back by [`TestPool::set_answer_delay`] right now: shares the
    /// pool has received and judged but not yet answered.
    pub fn held_answers(&self) -> usize {
        self.inner.held_answers.load(Ordering::Relaxed)
    }

    /// When the job with this tag ([`job_tag`]) was first sent.
    pub fn job_sent_at(&self, tag: u64) -> Option<Instant> {
        lock(&self.inner.state).sent_at.get(&tag).copied()
    }

    /// The tag of the current job.
    pub fn current_job_tag(&self) -> u64 {
        self.inner.current_work().job.seq
    }

    /// Stops everything: the listener, every connection and the job timers.
    pub async fn shutdown(self) {
        self.kill().await;
        self.inner.root.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// New jobs and new blocks on their intervals until the pool shuts down.
async fn run_timers(inner: Arc<Inner>) {
    use tokio::time::{Instant as TokioInstant, MissedTickBehavior, interval_at};
    let start = TokioInstant::now();
    let mut jobs = interval_at(start + inner.config.job_interval, inner.config.job_interval);
    let mut blocks = interval_at(
        start + inner.config.block_interval,
        inner.config.block_interval,
    );
    jobs.set_missed_tick_behavior(MissedTickBehavior::Delay);
    blocks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // All branches are cancel-safe (`tick` and `cancelled`).
        tokio::select! {
            _ = inner.root.cancelled() => break,
            _ = blocks.tick() => inner.publish_job(true),
            _ = jobs.tick() => inner.publish_job(false),
        }
    }
}

/// Accepts connections until `cancel`, spawning `serve` for each on `tracker` (both modes:
/// the protocol lives in `serve`).
async fn accept_loop<F, Fut>(
    inner: Arc<Inner>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
    protocol: &'static str,
    serve: F,
) where
    F: Fn(Arc<Inner>, TcpStream, SocketAddr, u64, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let conn = inner.next_extranonce1.fetch_add(1, Ordering::Relaxed);
                let span =
                    info_span!("pool_conn", pool = %inner.config.name, conn, %peer, protocol);
                let fut = serve(Arc::clone(&inner), stream, peer, conn, cancel.child_token());
                tracker.spawn(fut.instrument(span));
            }
            Err(error) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(%error, ?backoff, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::debug!("listener closed");
}

/// The extranonce1 (SV2: extranonce prefix) for connection counter value `n`: its low bytes,
/// big-endian, zero-padded on the left to `len`.
fn extranonce1(n: u64, len: usize) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut out = vec![0u8; len.saturating_sub(8)];
    out.extend_from_slice(&bytes[8 - len.min(8)..]);
    out
}

#[cfg(test)]
mod accept_tests {
    use super::extranonce1;

    #[test]
    fn extranonce1_takes_low_bytes() {
        assert_eq!(extranonce1(0x0102_0304_0506_0708, 4), vec![5, 6, 7, 8]);
        assert_eq!(extranonce1(0x0102, 1), vec![2]);
        assert_eq!(extranonce1(7, 10), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    }
}
