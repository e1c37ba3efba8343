//! Failover scenarios' shared parts: SV1 test miners that keep mining through the proxy while
//! pools stall, die or stop reading, and log which pool each job came from and every answer.
//! Used by `proxy_stall.rs` (no-work timeout, dead pool) and `proxy_pool_stall.rs` (write
//! timeout).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hashshift_protocol::sv1::{
    ClientRequest, Id, Notify, ServerMessage, ServerNotification, Submit,
};
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::testpool::TestPool;
use tokio_util::sync::CancellationToken;

use super::miner::Miner;

/// Which test pool made a job: its name is in the coinbase tag after the extranonces (cut to
/// 24 bytes by the pool, so pool names in these tests are short).
pub fn job_pool(job: &Notify, pools: &[&TestPool]) -> Option<usize> {
    pools.iter().position(|p| {
        let tag = format!("/hashshift-testpool:{}/", p.name());
        job.coinb2.windows(tag.len()).any(|w| w == tag.as_bytes())
    })
}

/// What a driven miner saw.
#[derive(Default, Debug)]
pub struct Log {
    /// Jobs received: when, and from which pool.
    pub jobs: Vec<(Instant, Option<usize>)>,
    pub set_extranonce: usize,
    pub reconnects: usize,
    pub submitted: usize,
    pub accepted: usize,
    /// Error codes of rejected (or lost) shares.
    pub errors: Vec<i64>,
    pub closed: bool,
}

impl Log {
    pub fn first_job_from(&self, pool: usize, after: Instant) -> Option<Instant> {
        self.jobs
            .iter()
            .find(|(t, p)| *t >= after && *p == Some(pool))
            .map(|(t, _)| *t)
    }
}

pub fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a driven miner submits: `burst` shares in one write every `every`, while fewer than
/// `max_pending` wait for an answer.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub burst: usize,
    pub every: Duration,
    pub max_pending: usize,
}

impl Pace {
    /// One share every `every`, however many are unanswered.
    pub fn every(every: Duration) -> Pace {
        Pace {
            burst: 1,
            every,
            max_pending: usize::MAX,
        }
    }
}

/// Starts [`drive`] for `m` on its own task, with a fresh log: the log and the task.
pub fn spawn_drive(
    m: Miner,
    worker: String,
    job: Notify,
    pools: Vec<TestPool>,
    pace: Pace,
    stop: CancellationToken,
) -> (Arc<Mutex<Log>>, tokio::task::JoinHandle<Result<usize>>) {
    let log = Arc::new(Mutex::new(Log::default()));
    let task = tokio::spawn(drive(m, worker, job, pools, log.clone(), pace, stop));
    (log, task)
}

/// Keeps a subscribed miner mining on the newest job at `pace`, applying set_extranonce /
/// set_difficulty / notify as firmware does, until `stop`; then waits up to 10 s for the
/// answers still due. Returns how many submits were never answered.
pub async fn drive(
    mut m: Miner,
    worker: String,
    mut job: Notify,
    pools: Vec<TestPool>,
    log: Arc<Mutex<Log>>,
    pace: Pace,
    stop: CancellationToken,
) -> Result<usize> {
    let pools: Vec<&TestPool> = pools.iter().collect();
    let mut pending: HashSet<Id> = HashSet::new();
    let mut tick = tokio::time::interval(pace.every);
    let mut seed = 1_000u64;
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        if drain_until.is_some() && pending.is_empty() {
            break;
        }
        // Cancel-safe branches: `cancelled`, `sleep_until`, `tick`, and `recv` (it only reads
        // into the miner's buffer, so a lost race loses no bytes).
        tokio::select! {
            _ = stop.cancelled(), if drain_until.is_none() => {
                drain_until = Some(tokio::time::Instant::now() + Duration::from_secs(10));
            }
            _ = async { tokio::time::sleep_until(drain_until.unwrap_or_else(tokio::time::Instant::now)).await }, if drain_until.is_some() => break,
            _ = tick.tick(), if drain_until.is_none() && pending.len() < pace.max_pending => {
                let mut shares = Vec::with_capacity(pace.burst);
                for _ in 0..pace.burst {
                    let share = m.find_share(&job, seed, None);
                    seed += 1;
                    shares.push(ClientRequest::Submit(Submit {
                        worker: worker.clone(),
                        job_id: share.job_id,
                        extranonce2: share.extranonce2,
                        ntime: share.ntime,
                        nonce: share.nonce,
                        version_bits: None,
                    }));
                }
                pending.extend(m.send_all(shares).await?);
                lock(&log).submitted += pace.burst;
            }
            msg = m.recv() => match msg? {
                None => {
                    lock(&log).closed = true;
                    break;
                }
                Some(ServerMessage::Response(r)) => {
                    if !pending.remove(&r.id) {
                        bail!("{worker}: answer to a request never sent: {r:?}");
                    }
                    let verdict = match &r.error {
                        Some(e) => Err(e.code),
                        None if r.as_bool()? => Ok(()),
                        None => Err(0),
                    };
                    let mut l = lock(&log);
                    match verdict {
                        Ok(()) => l.accepted += 1,
                        Err(code) => l.errors.push(code),
                    }
                }
                Some(ServerMessage::Notification { notification, .. }) => match notification {
                    ServerNotification::SetExtranonce(e) => {
                        m.extranonce1 = e.extranonce1;
                        m.extranonce2_size = e.extranonce2_size;
                        lock(&log).set_extranonce += 1;
                    }
                    ServerNotification::SetDifficulty(d) => m.difficulty = d,
                    ServerNotification::Notify(n) => {
                        let from = job_pool(&n, &pools);
                        lock(&log).jobs.push((Instant::now(), from));
                        job = n;
                    }
                    ServerNotification::Reconnect(_) => lock(&log).reconnects += 1,
                    _ => {}
                },
            },
        }
    }
    Ok(pending.len())
}

/// Polls `cond` every 10 ms for up to `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    tokio::time::timeout(limit, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .with_context(|| format!("timed out waiting for {what}"))
}

/// Starts the proxy and waits (up to 20 s) until the primary is the active pool (whichever
/// pool answers first is used at once; the primary takes over after `failback_after`).
pub async fn start_on_primary(config: &Config) -> Result<Proxy> {
    let proxy = Proxy::start(config).await?;
    wait_until("the primary to be active", Duration::from_secs(20), || {
        proxy.pools().first().is_some_and(|p| p.active)
    })
    .await?;
    Ok(proxy)
}

/// A miner that subscribed to extranonce changes, after its handshake.
pub async fn subscribed_miner(proxy: &Proxy, worker: &str) -> Result<(Miner, Notify)> {
    let mut m = Miner::connect(proxy.listen_addrs()[0]).await?;
    let (_, job) = m.handshake(worker, None).await?;
    ensure!(
        m.call(ClientRequest::ExtranonceSubscribe)
            .await?
            .as_bool()?,
        "extranonce.subscribe refused"
    );
    Ok((m, job))
}
