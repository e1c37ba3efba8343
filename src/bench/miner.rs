//! Load-mode miners: SV1 clients that do not hash. Each subscribes and authorizes, then,
//! once the load phase starts, submits shares at a fixed rate with random extranonce2 and
//! nonce on the latest job. With a tiny difficulty (target clamped to the maximum) every such
//! share meets the target, so the proxy and pool do the full validation work per share.
//!
//! Every miner is one task owning its state; the counters and histograms they feed are
//! shared ([`Shared`]): atomics for counts, std mutexes (held for one `record`, never across
//! `.await`) for the histograms.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::protocol::sv1::{
    Authorize, ClientCodec, ClientMessage, ClientRequest, Id, ServerMessage, ServerNotification,
    Submit, Subscribe,
};
use crate::testpool::{TestPool, job_tag};

/// Outstanding submits per miner beyond which it skips a tick instead of piling up.
const MAX_IN_FLIGHT: usize = 1024;
/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest latency the histograms hold (µs); larger values are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Counters and histograms all miners feed.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Miners authorized and holding a job.
    pub ready: AtomicU64,
    /// Failed connects or handshakes.
    pub connect_errors: AtomicU64,
    /// Connections that ended before shutdown.
    pub disconnects: AtomicU64,
    /// Submits written.
    pub submitted: AtomicU64,
    /// Submit answers read.
    pub answered: AtomicU64,
    /// Answers `true`.
    pub accepted: AtomicU64,
    /// Answers `false` or with an error.
    pub rejected: AtomicU64,
    /// Ticks skipped because too many submits were outstanding.
    pub skipped: AtomicU64,
    /// Rejections by Stratum error code.
    pub rejected_by_code: Mutex<BTreeMap<i64, u64>>,
    /// Submit written → answer read, µs.
    pub latency: Mutex<Histogram<u64>>,
    /// Pool sent the job → miner read its notify, µs (load phase only).
    pub fanout: Mutex<Histogram<u64>>,
    /// Set while the load phase runs.
    pub loading: AtomicBool,
    /// Cancelled when the load phase starts.
    pub go: CancellationToken,
    /// The embedded pool, for job send times.
    pub pool: Option<TestPool>,
    /// When the load phase started (set once).
    pub load_started: Mutex<Option<Instant>>,
}

fn histogram() -> Histogram<u64> {
    // Three significant figures over 1 µs..60 s: constant, valid bounds.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

fn record(h: &Mutex<Histogram<u64>>, micros: u64) {
    let mut h = h.lock().unwrap_or_else(PoisonError::into_inner);
    h.saturating_record(micros.clamp(1, MAX_LATENCY_US));
}

impl Shared {
    pub fn new(pool: Option<TestPool>) -> Self {
        Shared {
            ready: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            submitted: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rejected_by_code: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(histogram()),
            fanout: Mutex::new(histogram()),
            loading: AtomicBool::new(false),
            go: CancellationToken::new(),
            pool,
            load_started: Mutex::new(None),
        }
    }

    fn load_started(&self) -> Option<Instant> {
        *self
            .load_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One load miner's settings.
#[derive(Clone, Debug)]
pub(crate) struct MinerConfig {
    pub addr: SocketAddr,
    pub worker: String,
    /// Time between submits.
    pub share_interval: Duration,
}

/// The latest job: what a submit refers to.
struct CurrentJob {
    id: String,
    ntime: u32,
}

/// Runs one miner until `shutdown`.
pub(crate) async fn run(config: MinerConfig, shared: &Shared, shutdown: CancellationToken) {
    let connect = tokio::select! {
        _ = shutdown.cancelled() => return,
        c = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(config.addr)) => c,
    };
    let stream = match connect {
        Ok(Ok(s)) => s,
        _ => {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, ClientCodec::new());
    let opening = [
        ClientRequest::Subscribe(Subscribe {
            user_agent: Some("hashshift-bench/0.1".to_owned()),
            session_id: None,
        }),
        ClientRequest::Authorize(Authorize {
            user: config.worker.clone(),
            password: Some("x".to_owned()),
        }),
    ];
    for (i, request) in opening.into_iter().enumerate() {
        let message = ClientMessage::Request {
            id: Id::from(i as u64 + 1),
            request,
        };
        if framed.send(message).await.is_err() {
            shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let mut extranonce2_size = 0usize;
    let mut job: Option<CurrentJob> = None;
    let mut ready = false;
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let mut next_id = 3u64;
    let mut ticker: Option<tokio::time::Interval> = None;
    loop {
        // Cancel-safe branches only: cancellation, `Framed::next`, an interval tick.
        let outgoing = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.go.cancelled(), if ticker.is_none() => {
                // Spread the first submits over one interval so miners do not fire in step.
                let phase = rand::rng().random_range(0.0..1.0) * config.share_interval.as_secs_f64();
                let start = tokio::time::Instant::now() + Duration::from_secs_f64(phase);
                let mut t = tokio::time::interval_at(start, config.share_interval);
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                ticker = Some(t);
                None
            }
            _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                match &job {
                    Some(j) if pending.len() < MAX_IN_FLIGHT && extranonce2_size > 0 => {
                        let mut rng = rand::rng();
                        let extranonce2: Vec<u8> = (0..extranonce2_size).map(|_| rng.random()).collect();
                        let id = next_id;
                        next_id += 1;
                        pending.insert(id, Instant::now());
                        Some(ClientMessage::Request {
                            id: Id::from(id),
                            request: ClientRequest::Submit(Submit {
                                worker: config.worker.clone(),
                                job_id: j.id.clone(),
                                extranonce2,
                                ntime: j.ntime,
                                nonce: rng.random(),
                                version_bits: None,
                            }),
                        })
                    }
                    _ => {
                        shared.skipped.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            }
            incoming = framed.next() => match incoming {
                None | Some(Err(_)) => {
                    shared.disconnects.fetch_add(1, Ordering::Relaxed);
                    if !ready {
                        shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Some(Ok(Err(_))) => None,
                Some(Ok(Ok(ServerMessage::Response(r)))) => {
                    let id = r.id.as_u64().unwrap_or(0);
                    if id == 1 {
                        match r.subscribe_result() {
                            Ok(s) => {
                                extranonce2_size = s.extranonce2_size;
                                if job.is_some() && !ready {
                                    ready = true;
                                    shared.ready.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                shared.connect_errors.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        }
                    } else if let Some(sent) = pending.remove(&id) {
                        record(&shared.latency, sent.elapsed().as_micros() as u64);
                        if shared.loading.load(Ordering::Relaxed) {
                            shared.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        if r.error.is_none() && r.as_bool().unwrap_or(false) {
                            shared.accepted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.rejected.fetch_add(1, Ordering::Relaxed);
                            let code = r.error.as_ref().map_or(20, |e| e.code);
                            let mut by_code = shared.rejected_by_code.lock().unwrap_or_else(PoisonError::into_inner);
                            *by_code.entry(code).or_default() += 1;
                        }
                    }
                    None
                }
                Some(Ok(Ok(ServerMessage::Notification { notification, .. }))) => {
                    if let ServerNotification::Notify(n) = notification {
                        let received = Instant::now();
                        if let (Some(pool), Some(tag)) = (&shared.pool, job_tag(&n.coinb1))
                            && let (Some(sent), Some(started)) = (pool.job_sent_at(tag), shared.load_started())
                            && sent >= started
                        {
                            record(&shared.fanout, received.saturating_duration_since(sent).as_micros() as u64);
                        }
                        job = Some(CurrentJob { id: n.job_id, ntime: n.ntime });
                        if !ready && extranonce2_size > 0 {
                            ready = true;
                            shared.ready.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None
                }
            },
        };
        if let Some(message) = outgoing {
            if framed.send(message).await.is_err() {
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
                return;
            }
            shared.submitted.fetch_add(1, Ordering::Relaxed);
        }
    }
}
