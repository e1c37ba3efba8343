//! Load-mode SV1 miners: clients that do not hash. Each subscribes and authorizes, then,
//! once the load phase starts, submits shares at a fixed rate with random extranonce2 and
//! nonce on the latest job. With a tiny difficulty (target clamped to the maximum) every such
//! share meets the target, so the proxy and pool do the full validation work per share.
//!
//! Every miner is one task owning its state; the counters it feeds are in [`Shared`]. At
//! shutdown it closes cleanly ([`close`]), so the proxy logs a disconnect, not a reset.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::stats::Shared;
use crate::testpool::job_tag;
use hashshift_protocol::sv1::{
    Authorize, ClientCodec, ClientMessage, ClientRequest, Id, ServerMessage, ServerNotification,
    Submit, Subscribe,
};

/// Outstanding submits per miner beyond which it skips a tick instead of piling up.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;
/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One load miner's settings.
#[derive(Clone, Debug)]
pub(crate) struct MinerConfig {
    pub addr: SocketAddr,
    pub worker: String,
    /// Time between submits.
    pub share_interval: Duration,
}

/// How long a closing miner waits for the other side to close.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Ends a connection cleanly: our FIN first, then whatever the peer still sends is read and
/// dropped until it closes too. Closing with unread data would make the kernel reset the
/// connection, which the proxy rightly logs as an error.
pub(crate) async fn close<C>(mut conn: Framed<TcpStream, C>)
where
    C: tokio_util::codec::Decoder,
{
    let _ = conn.get_mut().shutdown().await;
    let drain = async { while let Some(Ok(_)) = conn.next().await {} };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
}

/// The submit clock of one miner, its first tick at a random point of the first interval so
/// that miners do not fire in step.
pub(crate) fn share_ticker(every: Duration) -> tokio::time::Interval {
    let phase = rand::rng().random_range(0.0..1.0) * every.as_secs_f64();
    let start = tokio::time::Instant::now() + Duration::from_secs_f64(phase);
    let mut t = tokio::time::interval_at(start, every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Waits for the next tick, or forever without a ticker (cancel-safe: `Interval::tick` is).
pub(crate) async fn next_tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker.as_mut() {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
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
            _ = shutdown.cancelled() => {
                close(framed).await;
                return;
            }
            _ = shared.go.cancelled(), if ticker.is_none() => {
                ticker = Some(share_ticker(config.share_interval));
                None
            }
            _ = next_tick(&mut ticker) => {
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
                        let accepted = r.error.is_none() && r.as_bool().unwrap_or(false);
                        shared.answered(sent, Instant::now(), accepted);
                        if !accepted {
                            shared.rejected_with(&r.error.as_ref().map_or(20, |e| e.code).to_string());
                        }
                    }
                    None
                }
                Some(Ok(Ok(ServerMessage::Notification { notification, .. }))) => {
                    if let ServerNotification::Notify(n) = notification {
                        shared.job_received(job_tag(&n.coinb1), Instant::now());
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
