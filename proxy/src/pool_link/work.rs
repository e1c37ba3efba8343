//! What an upstream connection publishes to the miners on it: the current job, the pool's
//! share target, the extranonce space and the version-rolling mask.
//!
//! Published through a `tokio::sync::watch` channel: latest wins, readers never block the
//! connection, and a miner that wakes up late sees the newest state rather than a backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hashshift_protocol::share::{ExtendedJob, Target};
use hashshift_protocol::sv1::{Notify, ServerMessage, ServerNotification, Sv1Message};

/// Process-wide downstream job ids. Every upstream job gets one, shared by every miner it is
/// sent to, so the `mining.notify` line can be encoded once and written to thousands of
/// sockets; a per-miner re-issue (after a difficulty change) takes a fresh id.
static NEXT_JOB_ID: AtomicU32 = AtomicU32::new(1);

/// Process-wide upstream session numbers (see [`WorkState::session`]).
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh upstream session number (never 0, which means "no session yet").
pub fn next_session() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// A fresh downstream job id.
pub fn next_job_id() -> u32 {
    NEXT_JOB_ID.fetch_add(1, Ordering::Relaxed)
}

/// One job from a pool, ready to hand to miners.
#[derive(Debug)]
pub struct UpstreamJob {
    /// Downstream job id (`format!("{:x}")` on the wire).
    pub id: u32,
    /// The pool's job id, used when submitting upstream.
    pub pool_job_id: String,
    /// The job as the share validator needs it.
    pub job: Arc<ExtendedJob>,
    /// Whether miners must drop older work.
    pub clean: bool,
    /// When the pool's notify arrived.
    pub received_at: Instant,
    /// The upstream session (connection epoch) the job belongs to; its extranonce1 is only
    /// valid within that session.
    pub session: u64,
    /// The pool's share difficulty in force when the job arrived (pools apply a
    /// `mining.set_difficulty` from the next job on).
    pub pool_difficulty: f64,
    /// Target for `pool_difficulty`: shares meeting it go up.
    pub pool_target: Target,
    /// The `mining.notify` line for miners, with `id` as job id, encoded once.
    pub notify_line: Bytes,
    /// Names the pool's job (upstream session and pool job id) for miners' duplicate sets:
    /// every issue of one pool job, under any downstream id, shares one set. Two `UpstreamJob`s
    /// of the same pool job (an SV2 `SetTarget` re-issue, an SV1 pool re-sending a job id)
    /// have the same key.
    pub work: u64,
}

/// The duplicate-set key of a pool's job: a hash of the upstream session (process-unique,
/// so another pool or connection never shares a key) and the pool's job id. A fixed-key
/// SipHash is enough: a validator holds at most 8 jobs, and even a collision would only merge
/// two sets whose entries (header hashes of different jobs) still differ.
pub fn work_key(session: u64, pool_job_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    session.hash(&mut h);
    pool_job_id.hash(&mut h);
    h.finish()
}

impl UpstreamJob {
    /// Builds a job from a pool's notify, assigning a downstream id.
    pub fn from_notify(
        n: &Notify,
        session: u64,
        received_at: Instant,
        pool_difficulty: f64,
    ) -> UpstreamJob {
        let pool_target = Target::from_difficulty(pool_difficulty).unwrap_or(Target::DIFF1);
        let mut job = UpstreamJob::new(
            n.clone().into_job(),
            n.job_id.clone(),
            n.clean_jobs,
            session,
            received_at,
            pool_target,
        );
        // Keep the pool's own figure for accounting, not one round-tripped through a target.
        job.pool_difficulty = pool_difficulty;
        job
    }

    /// Builds a job from any protocol's job, assigning a downstream id and encoding the
    /// `mining.notify` line once. Shares meeting `pool_target` go up.
    pub fn new(
        job: ExtendedJob,
        pool_job_id: String,
        clean: bool,
        session: u64,
        received_at: Instant,
        pool_target: Target,
    ) -> UpstreamJob {
        let id = next_job_id();
        let job = Arc::new(job);
        let notify_line = encode_notify(&job, id, clean);
        UpstreamJob {
            id,
            work: work_key(session, &pool_job_id),
            pool_job_id,
            job,
            clean,
            received_at,
            session,
            pool_difficulty: pool_target.to_difficulty(),
            pool_target,
            notify_line,
        }
    }

    /// The same job under a new downstream id (for one miner, after a difficulty change).
    pub fn reissue(&self, clean: bool) -> (u32, Bytes) {
        let id = next_job_id();
        (id, encode_notify(&self.job, id, clean))
    }
}

/// Encodes a `mining.notify` line for `job` under downstream id `id`.
pub fn encode_notify(job: &ExtendedJob, id: u32, clean: bool) -> Bytes {
    let notify = Notify::from_job(format!("{id:x}"), job, clean);
    let mut buf = bytes::BytesMut::with_capacity(
        256 + 2 * (job.coinbase_prefix.len() + job.coinbase_suffix.len())
            + 67 * job.merkle_branch.len(),
    );
    if let Err(error) =
        ServerMessage::notification(ServerNotification::Notify(notify)).encode_line(&mut buf)
    {
        // Encoding owned values into memory cannot fail in practice; never send half a line.
        tracing::error!(%error, "cannot encode mining.notify");
        return Bytes::new();
    }
    buf.freeze()
}

/// Everything a miner on a connection needs; replaced as a whole on every change.
#[derive(Clone, Debug)]
pub struct WorkState {
    /// Upstream session: bumps on every (re)subscribe, and on `mining.set_extranonce`.
    pub session: u64,
    /// The pool's extranonce1 for this session.
    pub extranonce1: Bytes,
    /// The pool's extranonce2 size for this session.
    pub extranonce2_size: usize,
    /// The pool's share difficulty.
    pub difficulty: f64,
    /// The pool's share target (from `difficulty`).
    pub target: Target,
    /// Version-rolling mask granted by the pool (0: no rolling).
    pub version_mask: u32,
    /// The newest job, if any arrived in this session.
    pub job: Option<Arc<UpstreamJob>>,
}

impl WorkState {
    /// Whether miners can be given work from this state.
    pub fn is_ready(&self) -> bool {
        self.job.is_some() && self.extranonce2_size > 0
    }
}

/// A job for session state-machine tests: pool job id `p{prev}` on `session`, previous block
/// hash all `prev` bytes; shares meeting `pool_difficulty` go up.
#[cfg(test)]
pub(crate) fn test_job(
    session: u64,
    prev: u8,
    clean: bool,
    pool_difficulty: f64,
) -> Arc<UpstreamJob> {
    let ext = ExtendedJob {
        version: 0x2000_0000,
        prev_hash: [prev; 32],
        coinbase_prefix: vec![1; 60],
        coinbase_suffix: vec![2; 40],
        merkle_branch: vec![[3; 32]],
        nbits: 0x1703_4219,
        ntime: 1_700_000_000,
    };
    let target = Target::from_difficulty(pool_difficulty).expect("a positive test difficulty");
    Arc::new(UpstreamJob::new(
        ext,
        format!("p{prev}"),
        clean,
        session,
        Instant::now(),
        target,
    ))
}
