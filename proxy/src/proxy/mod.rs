//! The proxy assembled: listeners, miner sessions, pool connections, the pool manager, and
//! graceful shutdown.
//!
//! [`Proxy::start`] binds every listener before returning (so a caller, a test or the demo,
//! knows the addresses), then runs until [`Proxy::shutdown`]: stop accepting, let sessions
//! relay the verdicts of shares already sent upstream within a grace period, then stop.
//!
//! Its long-lived tasks run under a [`Supervisor`] (see [`crate::supervisor`]); every one is
//! critical, because each one's death leaves the site unsafe or unmanaged while the process
//! looks alive:
//! - `pool-manager`: without it pool failover and share routing stop;
//! - `listener-N` (config order): miners can no longer (re)connect;
//! - `audit-writer`: decisions would stop reaching the disk, with no one told;
//! - `power-controller`: drains, wakes, curtailments and GPU grants stop, and every request
//!   answers "shutting down";
//! - `gpu-budget`: the GPU budget would stop following the arbiter, so the scheduler could
//!   hand out power the rigs are using;
//! - `admin-socket`, `http-server`: operators and the grid signal lose their way in;
//! - `metrics-server`: monitoring goes blind.
//!
//! The power history sampler (`power-history`, the NOC page's chart) is watched only: its end
//! is logged, and nothing unsafe follows from it. [`Proxy::failed`] resolves on the first
//! failure; `hashshift run` then shuts down and exits non-zero so its service manager
//! restarts it, and the new process resumes from the persisted power plan.
//!
//! # Assembly and shutdown
//! [`Proxy::start_with_options`] is a short sequence of named steps, each starting one stage
//! ([`stage::Stage`]: a child of one root cancellation token and a task tracker):
//! 1. pools: the pool manager and its connections;
//! 2. miners: one listener per `[[downstream]]` through one function whatever its protocol
//!    ([`listeners`]);
//! 3. control: the control plane (audit log, power control, admin socket), then the HTTP API
//!    and the Prometheus endpoint ([`control`]).
//!
//! [`Proxy::shutdown`] goes the other way round: stop accepting, drain the miners within the
//! grace period (sessions relay the verdicts of shares already upstream), then the pools,
//! then control last so the audit log records the whole shutdown. A start that fails half way
//! drops the root's guard, which cancels every stage started so far.

mod control;
mod listeners;
mod stage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use self::stage::Stage;
use crate::config::Config;
use crate::control::plane::ControlPlane;
use crate::pool_link::report::PoolSnapshot;
use crate::supervisor::{Fault, Supervisor, TaskFailure};
use crate::telemetry::Instruments;
use crate::upstream::manager::{ManagerSettings, PoolManager};

/// How long shutdown waits for the pools' and then the control stage's tasks once told to
/// stop. Not configurable: told to stop, they only close sockets and flush the audit log
/// (milliseconds); the bound only keeps one stuck task from holding the exit up, and the
/// user's say over shutdown is `limits.shutdown_grace_secs`, the miners' drain.
const STAGE_STOP_WITHIN: Duration = Duration::from_secs(2);

/// A running proxy.
pub struct Proxy {
    listeners: Vec<SocketAddr>,
    web: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    instruments: Arc<Instruments>,
    control: Option<Arc<ControlPlane>>,
    manager: Arc<PoolManager>,
    /// Parent of every stage's token.
    root: CancellationToken,
    /// Stops the listeners only; a child of the miners' stage.
    accept: CancellationToken,
    miners: Stage,
    pools: Stage,
    control_stage: Stage,
    supervisor: Supervisor,
}

/// What `hashshift run` may ask for beyond the config file.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// Move an existing power plan aside (`power.json.bad-<unix>`) and start with every rig
    /// unknown (`--reset-power-state`); otherwise a plan that cannot be used stops the start.
    pub reset_power_state: bool,
}

impl Proxy {
    /// Binds the listeners and starts everything. SV2 listeners load their authority key
    /// file here; an unreadable or invalid one fails the start (as an `io::Error`).
    pub async fn start(config: &Config) -> std::io::Result<Proxy> {
        Self::start_with(config, ManagerSettings::from_config(config)).await
    }

    /// Like [`Proxy::start`] with explicit failover timings (tests shorten them).
    pub async fn start_with(
        config: &Config,
        manager_settings: ManagerSettings,
    ) -> std::io::Result<Proxy> {
        Self::start_with_options(config, manager_settings, StartOptions::default()).await
    }

    /// Like [`Proxy::start_with`] with the command line's options. The steps, in order:
    /// pools, miners' listeners, control plane, HTTP API, metrics (see the module doc).
    pub async fn start_with_options(
        config: &Config,
        manager_settings: ManagerSettings,
        options: StartOptions,
    ) -> std::io::Result<Proxy> {
        // The test-only fault hook, read once here (see `crate::supervisor`).
        let fault = Fault::from_env().map_err(std::io::Error::other)?;
        let supervisor = Supervisor::new(fault);
        let root = CancellationToken::new();
        // A start that fails half way (a bad power plan, a port in use) stops what it already
        // started: the dropped guard cancels the root and with it every stage; a successful
        // start disarms it.
        let root_guard = root.clone().drop_guard();
        let (pools, miners, control_stage) = (
            Stage::child_of(&root),
            Stage::child_of(&root),
            Stage::child_of(&root),
        );
        let accept = miners.stop.child_token();

        let manager = start_pools(config, manager_settings, &pools, &supervisor);
        let instruments = Arc::new(Instruments::default());
        let listeners = listeners::Miners {
            config,
            manager: &manager,
            instruments: &instruments,
            supervisor: &supervisor,
            stage: &miners,
            accept: &accept,
        }
        .start()?;
        let steps = control::Control {
            config,
            manager: &manager,
            supervisor: &supervisor,
            stage: &control_stage,
        };
        let control = steps.plane(options).await?;
        let web = steps.web(control.as_ref()).await?;
        let metrics = steps.metrics(control.as_ref(), &instruments).await?;

        supervisor.check_fault().map_err(std::io::Error::other)?;
        root_guard.disarm();
        Ok(Proxy {
            listeners,
            web,
            metrics,
            instruments,
            control,
            manager,
            root,
            accept,
            miners,
            pools,
            control_stage,
            supervisor,
        })
    }

    /// Resolves when a critical task ends before shutdown or panics, with which and why (the
    /// first one). Does not borrow the proxy: select on it, then call [`Proxy::shutdown`].
    pub fn failed(&self) -> impl Future<Output = TaskFailure> + Send + 'static {
        self.supervisor.failed()
    }

    /// The first critical task failure so far, if any. A panic during [`Proxy::shutdown`]
    /// counts too (a task returning then does not).
    pub fn failure(&self) -> Option<TaskFailure> {
        self.supervisor.failure()
    }

    /// The supervisor of the proxy's tasks (outlives [`Proxy::shutdown`], so a caller can ask
    /// for [`Supervisor::failure`] afterwards).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Addresses of the downstream listeners, in config order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listeners
    }

    /// The HTTP API's address, when `[http]` is configured.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web
    }

    /// The Prometheus endpoint's address, when `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The hot-path instruments (share round trip, job fan-out, protocol totals).
    pub fn instruments(&self) -> &Arc<Instruments> {
        &self.instruments
    }

    /// The control plane, when `[admin]` is configured.
    pub fn control(&self) -> Option<&Arc<ControlPlane>> {
        self.control.as_ref()
    }

    /// The pool manager (for reports).
    pub fn manager(&self) -> &Arc<PoolManager> {
        &self.manager
    }

    /// Pools as operators see them.
    pub fn pools(&self) -> Vec<PoolSnapshot> {
        self.manager.pools()
    }

    /// Stops accepting, lets sessions finish (relaying verdicts of shares in flight) within
    /// `grace`, then closes the pool connections, then the control plane, HTTP API and
    /// metrics.
    pub async fn shutdown(self, grace: Duration) {
        info!("shutting down: no new miners");
        // Tasks that return from here on are doing what they were told.
        self.supervisor.stopping();
        self.accept.cancel();
        if !self.miners.stop(grace).await {
            info!("grace period over with sessions still open");
        }
        self.pools.stop(STAGE_STOP_WITHIN).await;
        // Last, so the audit log gets everything the shutdown did.
        self.control_stage.stop(STAGE_STOP_WITHIN).await;
        self.root.cancel();
        info!("shutdown complete");
    }
}

/// The pools' stage: the pool manager (the critical task `pool-manager`), which opens the
/// pool connections on the stage's token and tracker.
fn start_pools(
    config: &Config,
    settings: ManagerSettings,
    stage: &Stage,
    supervisor: &Supervisor,
) -> Arc<PoolManager> {
    let manager = PoolManager::start(config, settings, stage.stop.clone(), stage.tasks.clone());
    supervisor.spawn_critical(&stage.tasks, "pool-manager", manager.clone().run());
    manager
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start that fails at its last step (the metrics port is taken) stops what the earlier
    /// steps started: the root's guard cancels every stage, so the miners' listener lets go
    /// of its port.
    #[tokio::test]
    async fn a_failed_start_stops_the_stages_already_started() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let miners = free.local_addr().unwrap();
        drop(free);
        let config = Config::from_toml(&format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"{miners}\"\n\
             [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:1\"\nuser = \"u\"\n\
             [metrics]\nlisten = \"{}\"\n",
            busy.local_addr().unwrap()
        ))
        .unwrap();
        assert!(
            Proxy::start(&config).await.is_err(),
            "the metrics port is taken"
        );
        // The listener task sees its token cancelled the next time it runs.
        let mut rebound = None;
        for _ in 0..1000 {
            tokio::task::yield_now().await;
            if let Ok(l) = crate::downstream::listener::bind(miners) {
                rebound = Some(l);
                break;
            }
        }
        assert!(
            rebound.is_some(),
            "the miners' port is still held after a failed start"
        );
    }
}
