//! A simulated rig with a management API: a fake LuxOS controller (`firmware::fake`) and an
//! honest SV1 miner that mines only while the fake says the rig hashes. When the rig falls
//! asleep its miner stops (shares stop, as on a real rig); when it wakes, a new miner
//! connects, as firmware reconnecting after a wake does. Each rig records what its miners saw
//! (accepted shares, and every error that ended a miner), so a test can tell a share that went
//! unanswered on a live connection (lost) from one cut off by a kill (its connection closed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use hashshift_tools::fake_firmware::{FakeLuxos, FakeLuxosConfig, FakePhase, RigProfile};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::honest::Honest;

/// A running simulated rig.
pub struct SimRig {
    pub worker: String,
    pub firmware: Arc<FakeLuxos>,
    /// Times its miner connected (1 at start, +1 per wake).
    pub connects: Arc<AtomicU64>,
    /// Shares the proxy accepted, over every miner this rig ran.
    pub accepted: Arc<AtomicU64>,
    /// Why each of its miners ended other than by our stop (disconnects, timeouts, rejects).
    pub errors: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl SimRig {
    /// A rig named `worker` whose management API is up; it mines once [`SimRig::mine`] says
    /// where.
    pub async fn new(worker: &str, profile: RigProfile) -> Result<SimRig> {
        let firmware = Arc::new(
            FakeLuxos::start(FakeLuxosConfig {
                profile,
                ..FakeLuxosConfig::default()
            })
            .await?,
        );
        Ok(SimRig {
            worker: worker.to_owned(),
            firmware,
            connects: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(Mutex::new(Vec::new())),
            stop: CancellationToken::new(),
            task: None,
        })
    }

    /// Starts mining into the proxy at `proxy` (whenever the firmware says it hashes).
    pub fn mine(&mut self, proxy: SocketAddr) {
        self.mine_any(vec![proxy]);
    }

    /// Starts mining with a pool list, as firmware does: each (re)connect tries `proxies` in
    /// order and mines on the first that takes it.
    pub fn mine_any(&mut self, proxies: Vec<SocketAddr>) {
        let firmware = self.firmware.clone();
        self.task = Some(tokio::spawn(run(
            proxies,
            self.worker.clone(),
            Arc::new(move || firmware.phase()),
            self.connects.clone(),
            self.accepted.clone(),
            self.errors.clone(),
            self.stop.clone(),
        )));
    }

    /// Starts mining into the proxy at `proxy` whenever `phase` says the rig hashes (a rig
    /// whose management API is not the fake LuxOS, or whose power is cut at a PDU).
    pub fn mine_while(&mut self, proxy: SocketAddr, phase: PhaseFn) {
        self.task = Some(tokio::spawn(run(
            vec![proxy],
            self.worker.clone(),
            phase,
            self.connects.clone(),
            self.accepted.clone(),
            self.errors.clone(),
            self.stop.clone(),
        )));
    }

    /// The fake's phase.
    pub fn phase(&self) -> FakePhase {
        self.firmware.phase()
    }

    /// Stops the rig's miner (the fake stays up until dropped).
    pub async fn stop(self) {
        self.stop.cancel();
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

/// What a simulated rig is doing, read afresh on every turn of its miner loop.
pub type PhaseFn = Arc<dyn Fn() -> FakePhase + Send + Sync>;

async fn run(
    proxies: Vec<SocketAddr>,
    worker: String,
    phase: PhaseFn,
    connects: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
) {
    let mut miner: Option<Honest> = None;
    // Accepted by miners already ended.
    let mut base = 0u64;
    let end = |m: Honest, base: &mut u64| {
        let errors = errors.clone();
        *base += m.accepted();
        async move {
            if let Err(e) = m.stop().await {
                errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("{e:#}"));
            }
        }
    };
    loop {
        let hashing = matches!(phase(), FakePhase::Mining | FakePhase::Stopping);
        match (miner.take(), hashing) {
            (None, true) => {
                for proxy in &proxies {
                    if let Ok(m) = Honest::start(*proxy, &worker).await {
                        connects.fetch_add(1, Ordering::Relaxed);
                        miner = Some(m);
                        break;
                    }
                }
            }
            (Some(m), false) => end(m, &mut base).await,
            // Ended while hashing (kicked, proxy restarted or killed): reconnect, as firmware
            // does.
            (Some(m), true) if !m.is_running() => end(m, &mut base).await,
            (m, _) => miner = m,
        }
        let live = miner.as_ref().map_or(0, Honest::accepted);
        accepted.store(base + live, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    if let Some(m) = miner {
        end(m, &mut base).await;
    }
}

/// A miner that hashes whenever its rig does, for rigs other than [`SimRig`]'s LuxOS ones.
pub struct Miner {
    /// Shares the proxy accepted, over every connection it made.
    pub accepted: Arc<AtomicU64>,
    /// Times it connected.
    pub connects: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Miner {
    /// Mines into `proxy` as `worker` whenever `phase` says the rig hashes.
    pub fn spawn(proxy: SocketAddr, worker: &str, phase: PhaseFn) -> Miner {
        let accepted = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            vec![proxy],
            worker.to_owned(),
            phase,
            connects.clone(),
            accepted.clone(),
            Arc::new(Mutex::new(Vec::new())),
            stop.clone(),
        ));
        Miner {
            accepted,
            connects,
            stop,
            task,
        }
    }

    /// Stops it.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
