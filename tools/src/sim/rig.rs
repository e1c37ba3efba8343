//! The connection half of a simulated rig: connect, open the session in the firmware's
//! order, follow the pool's notifications, submit what the hashing thread finds, count
//! answers, and reconnect when told to or after a drop.
//!
//! The task owns all session state by value; the only shared state is the stats snapshot
//! behind a std `Mutex` (held for a few field updates, never across `.await`) and an atomic
//! hash counter the hashing thread bumps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::hasher::{self, FoundShare, Work};
use super::{FIRMWARE_VERSION_MASK, Firmware, RigConfig, RigStats};
use hashshift_protocol::share::{PreparedJob, Target};
use hashshift_protocol::sv1::{
    Authorize, ClientCodec, ClientMessage, ClientRequest, Configure, Id, Notify, Response,
    ServerMessage, ServerNotification, Submit, Subscribe, extension,
};

/// Found shares buffered between the hashing thread and the connection task.
const SHARE_QUEUE: usize = 256;
/// Longest `client.reconnect` wait honoured.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);
/// Backoff bounds after a failed or dropped connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Requests awaiting an answer; beyond this the oldest bookkeeping is forgotten.
const MAX_PENDING: usize = 4096;

/// Alias: a rig is used through its handle.
pub type Rig = RigHandle;

/// A running simulated rig. Dropping it without [`RigHandle::stop`] leaves it running until
/// the shutdown token given to [`RigHandle::spawn`] is cancelled.
#[derive(Debug)]
pub struct RigHandle {
    stats: Arc<Mutex<RigStats>>,
    hashes: Arc<AtomicU64>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RigHandle {
    /// Starts a rig: a connection task on the current tokio runtime and a hashing thread.
    /// It stops when `shutdown` (or [`RigHandle::stop`]) cancels it.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(config: RigConfig, shutdown: CancellationToken) -> RigHandle {
        let shutdown = shutdown.child_token();
        let stats = Arc::new(Mutex::new(RigStats::default()));
        let hashes = Arc::new(AtomicU64::new(0));
        let (work_tx, work_rx) = watch::channel(None);
        let (share_tx, share_rx) = mpsc::channel(SHARE_QUEUE);
        let thread = {
            let hashes = hashes.clone();
            let shutdown = shutdown.clone();
            let hashrate = config.hashrate;
            std::thread::Builder::new()
                .name(format!("rig-{}", config.worker))
                .spawn(move || hasher::run(work_rx, share_tx, hashrate, hashes, shutdown))
                .ok()
        };
        if thread.is_none() {
            warn!(worker = %config.worker, "cannot start a hashing thread; the rig will not hash");
        }
        let span = info_span!("rig", worker = %config.worker, firmware = ?config.firmware);
        let task = tokio::spawn(
            connection_loop(config, stats.clone(), work_tx, share_rx, shutdown.clone())
                .instrument(span),
        );
        RigHandle {
            stats,
            hashes,
            shutdown,
            task,
            thread,
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RigStats {
        let mut s = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        s.hashes = self.hashes.load(Ordering::Relaxed);
        s
    }

    /// Stops the rig and waits for both halves to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.task).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn update(stats: &Mutex<RigStats>, f: impl FnOnce(&mut RigStats)) {
    f(&mut stats.lock().unwrap_or_else(PoisonError::into_inner));
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Dropped(String),
    Reconnect { to: SocketAddr, wait: Duration },
}

async fn connection_loop(
    config: RigConfig,
    stats: Arc<Mutex<RigStats>>,
    work: watch::Sender<Option<Work>>,
    mut shares: mpsc::Receiver<FoundShare>,
    shutdown: CancellationToken,
) {
    if !config.pool.ip().is_loopback() {
        warn!(pool = %config.pool, "simulated rigs only connect to loopback addresses");
        return;
    }
    let mut addr = config.pool;
    let mut backoff = BACKOFF_MIN;
    let mut generation = 0u64;
    loop {
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = TcpStream::connect(addr) => r,
        };
        match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                backoff = BACKOFF_MIN;
                update(&stats, |s| {
                    s.connects += 1;
                    s.connected = true;
                });
                let mut session = Session::new(&config, addr, &stats, &work, generation);
                let end = session.run(stream, &mut shares, &shutdown).await;
                generation = session.generation + 1;
                work.send_replace(None);
                update(&stats, |s| {
                    s.connected = false;
                    s.disconnects += 1;
                });
                match end {
                    SessionEnd::Shutdown => return,
                    SessionEnd::Dropped(reason) => debug!(%reason, "session ended"),
                    SessionEnd::Reconnect { to, wait } => {
                        if !config.reconnect {
                            return;
                        }
                        debug!(%to, ?wait, "client.reconnect");
                        addr = to;
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        continue;
                    }
                }
            }
            Err(e) => debug!(%addr, error = %e, "connect failed"),
        }
        if !config.reconnect {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// What an outstanding request was.
enum Pending {
    Configure,
    Subscribe,
    Authorize,
    Submit { difficulty: f64 },
    Other,
}

/// One connection's state.
struct Session<'a> {
    config: &'a RigConfig,
    /// Where this connection went (`client.reconnect` without a host means here).
    addr: SocketAddr,
    stats: &'a Mutex<RigStats>,
    work: &'a watch::Sender<Option<Work>>,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    extranonce1: Option<Vec<u8>>,
    extranonce2_size: usize,
    next_extranonce: Option<(Vec<u8>, usize)>,
    next_difficulty: f64,
    version_mask: Option<u32>,
    /// A notify that arrived before the subscribe answer.
    early_notify: Option<Notify>,
    generation: u64,
    /// Shares from generations below this are stale (older session or abandoned job).
    min_generation: u64,
}

impl<'a> Session<'a> {
    fn new(
        config: &'a RigConfig,
        addr: SocketAddr,
        stats: &'a Mutex<RigStats>,
        work: &'a watch::Sender<Option<Work>>,
        generation: u64,
    ) -> Self {
        Session {
            config,
            addr,
            stats,
            work,
            next_id: 1,
            pending: HashMap::new(),
            extranonce1: None,
            extranonce2_size: 0,
            next_extranonce: None,
            next_difficulty: 1.0,
            version_mask: None,
            early_notify: None,
            generation,
            min_generation: generation,
        }
    }

    /// The opening requests, in this firmware's order.
    fn opening(&self) -> Vec<(ClientRequest, Pending)> {
        let c = self.config;
        let configure = || {
            let mut extensions = vec![extension::VERSION_ROLLING.to_owned()];
            let minimum_difficulty = match c.firmware {
                Firmware::Antminer => c.suggest_difficulty,
                _ => None,
            };
            if minimum_difficulty.is_some() {
                extensions.push(extension::MINIMUM_DIFFICULTY.to_owned());
            }
            let request = ClientRequest::Configure(Configure {
                extensions,
                version_rolling_mask: Some(FIRMWARE_VERSION_MASK),
                version_rolling_min_bit_count: Some(2),
                minimum_difficulty,
                ..Configure::default()
            });
            (request, Pending::Configure)
        };
        let subscribe = (
            ClientRequest::Subscribe(Subscribe {
                user_agent: Some(c.firmware.user_agent().to_owned()),
                session_id: None,
            }),
            Pending::Subscribe,
        );
        let authorize = (
            ClientRequest::Authorize(Authorize {
                user: c.worker.clone(),
                password: Some(c.password.clone()),
            }),
            Pending::Authorize,
        );
        let mut out = Vec::new();
        if c.firmware == Firmware::Antminer {
            out.push(configure());
        }
        out.push(subscribe);
        out.push(authorize);
        if c.firmware == Firmware::Whatsminer {
            out.push(configure());
        }
        if c.extranonce_subscribe {
            out.push((ClientRequest::ExtranonceSubscribe, Pending::Other));
        }
        if let Some(d) = c.suggest_difficulty {
            out.push((ClientRequest::SuggestDifficulty(d), Pending::Other));
        }
        out
    }

    fn request(&mut self, request: ClientRequest, pending: Pending) -> ClientMessage {
        let id = self.next_id;
        self.next_id += 1;
        if self.pending.len() >= MAX_PENDING {
            // A pool that never answers must not grow this map forever.
            self.pending.clear();
        }
        self.pending.insert(id, pending);
        ClientMessage::Request {
            id: Id::from(id),
            request,
        }
    }

    async fn run(
        &mut self,
        stream: TcpStream,
        shares: &mut mpsc::Receiver<FoundShare>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let mut framed = Framed::new(stream, ClientCodec::new());
        for (request, pending) in self.opening() {
            let message = self.request(request, pending);
            if let Err(e) = framed.send(message).await {
                return SessionEnd::Dropped(e.to_string());
            }
        }
        loop {
            // All branches are cancel-safe: `cancelled`, `Framed::next` and `recv` lose
            // nothing when another branch wins.
            let outgoing = tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                incoming = framed.next() => match incoming {
                    None => return SessionEnd::Dropped("closed by peer".into()),
                    Some(Err(e)) => return SessionEnd::Dropped(e.to_string()),
                    Some(Ok(Err(e))) => {
                        debug!(error = %e, "unparsable line from the pool");
                        None
                    }
                    Some(Ok(Ok(message))) => match self.handle(message) {
                        Ok(reply) => reply,
                        Err(end) => return end,
                    },
                },
                Some(share) = shares.recv() => self.submit(share),
            };
            if let Some(message) = outgoing
                && let Err(e) = framed.send(message).await
            {
                return SessionEnd::Dropped(e.to_string());
            }
        }
    }

    fn submit(&mut self, share: FoundShare) -> Option<ClientMessage> {
        if share.generation < self.min_generation {
            return None;
        }
        let request = ClientRequest::Submit(Submit {
            worker: self.config.worker.clone(),
            job_id: share.job_id,
            extranonce2: share.extranonce2,
            ntime: share.ntime,
            nonce: share.nonce,
            version_bits: share.version_bits,
        });
        Some(self.request(
            request,
            Pending::Submit {
                difficulty: share.difficulty,
            },
        ))
    }

    /// Handles one message; `Err` ends the session.
    fn handle(&mut self, message: ServerMessage) -> Result<Option<ClientMessage>, SessionEnd> {
        match message {
            ServerMessage::Response(response) => self.handle_response(response).map(|()| None),
            ServerMessage::Notification { id, notification } => match notification {
                ServerNotification::Notify(notify) => {
                    self.handle_notify(notify);
                    Ok(None)
                }
                ServerNotification::SetDifficulty(d) => {
                    self.next_difficulty = d;
                    Ok(None)
                }
                ServerNotification::SetExtranonce(s) => {
                    if self.config.extranonce_subscribe {
                        self.next_extranonce = Some((s.extranonce1, s.extranonce2_size));
                    } else {
                        debug!("set_extranonce without extranonce.subscribe ignored");
                    }
                    Ok(None)
                }
                ServerNotification::SetVersionMask(mask) => {
                    if self.version_mask.is_some() {
                        self.version_mask = Some(mask);
                        update(self.stats, |s| s.version_mask = Some(mask));
                    }
                    Ok(None)
                }
                ServerNotification::Reconnect(r) => Err(self.reconnect_target(r)),
                ServerNotification::GetVersion if !id.is_null() => {
                    Ok(Some(ClientMessage::Response(Response::ok(
                        id,
                        self.config.firmware.user_agent().into(),
                    ))))
                }
                _ => Ok(None),
            },
        }
    }

    fn reconnect_target(&self, r: hashshift_protocol::sv1::Reconnect) -> SessionEnd {
        let wait = Duration::from_secs(r.wait.unwrap_or(0)).min(MAX_RECONNECT_WAIT);
        let mut to = self.addr;
        if let Some(port) = r.port {
            to.set_port(port);
        }
        if let Some(host) = r.host.as_deref().filter(|h| !h.is_empty()) {
            match host.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_loopback() => to.set_ip(ip),
                _ if host == "localhost" => {}
                _ => warn!(%host, "client.reconnect to a non-loopback host ignored"),
            }
        }
        SessionEnd::Reconnect { to, wait }
    }

    fn handle_response(&mut self, response: Response) -> Result<(), SessionEnd> {
        let Some(pending) = response.id.as_u64().and_then(|id| self.pending.remove(&id)) else {
            return Ok(());
        };
        let ok = response.error.is_none() && response.as_bool().unwrap_or(true);
        match pending {
            Pending::Subscribe => {
                let result = match response.subscribe_result() {
                    Ok(r) if response.error.is_none() => r,
                    _ => return Err(SessionEnd::Dropped("subscribe refused".into())),
                };
                self.extranonce1 = Some(result.extranonce1.clone());
                self.extranonce2_size = result.extranonce2_size;
                update(self.stats, |s| s.extranonce1 = result.extranonce1);
                if let Some(n) = self.early_notify.take() {
                    self.handle_notify(n);
                }
            }
            Pending::Configure => {
                let mask = response
                    .configure_result()
                    .ok()
                    .and_then(|c| c.negotiated_mask());
                self.version_mask = mask;
                update(self.stats, |s| s.version_mask = mask);
                // Firmware that configures after subscribing (Whatsminer) already has a job:
                // the pool accepts rolled versions from the moment it answered, so roll now.
                if mask.is_some() {
                    self.work.send_if_modified(|work| match work {
                        Some(w) if w.version_mask != mask => {
                            w.version_mask = mask;
                            true
                        }
                        _ => false,
                    });
                }
            }
            Pending::Authorize => {
                if !ok {
                    warn!(error = ?response.error, "authorize refused");
                }
            }
            Pending::Submit { difficulty } => {
                let ok = response.error.is_none() && response.as_bool().unwrap_or(false);
                update(self.stats, |s| {
                    if ok {
                        s.accepted += 1;
                        s.accepted_difficulty += difficulty;
                    } else {
                        s.rejected += 1;
                        let code = response.error.as_ref().map_or(20, |e| e.code);
                        *s.rejected_by_code.entry(code).or_default() += 1;
                    }
                });
            }
            Pending::Other => {}
        }
        Ok(())
    }

    fn handle_notify(&mut self, notify: Notify) {
        if self.extranonce1.is_none() {
            self.early_notify = Some(notify);
            return;
        }
        if let Some((extranonce1, size)) = self.next_extranonce.take() {
            self.extranonce1 = Some(extranonce1.clone());
            self.extranonce2_size = size;
            update(self.stats, |s| s.extranonce1 = extranonce1);
        }
        let extranonce1 = self.extranonce1.clone().unwrap_or_default();
        let difficulty = self.next_difficulty;
        let target = match Target::from_difficulty(difficulty) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "unusable difficulty");
                return;
            }
        };
        let (job_id, clean_jobs) = (notify.job_id.clone(), notify.clean_jobs);
        let job = notify.into_job();
        let prepared = match PreparedJob::new(job.into(), &extranonce1) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "unusable job");
                return;
            }
        };
        self.generation += 1;
        if clean_jobs {
            self.min_generation = self.generation;
        }
        self.work.send_replace(Some(Work {
            job_id,
            job: Arc::new(prepared),
            extranonce2_size: self.extranonce2_size,
            target,
            difficulty,
            version_mask: self.version_mask,
            generation: self.generation,
        }));
        update(self.stats, |s| {
            s.difficulty = difficulty;
            s.last_job = Some(Instant::now());
        });
    }
}
