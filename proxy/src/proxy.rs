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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::{Config, DownstreamProtocol};
use crate::control::admin::server::AdminSocket;
use crate::control::audit::AuditLog;
use crate::control::plane::ControlPlane;
use crate::downstream::listener;
use crate::downstream::sv1::{self as sv1_session, SessionSettings};
use crate::downstream::sv2::{self as sv2_session, Sv2Settings, channel::ChannelSettings};
use crate::downstream::vardiff::VardiffSettings;
use crate::supervisor::{Fault, Supervisor, TaskFailure};
use crate::telemetry::Instruments;
use crate::upstream::manager::{ManagerSettings, PoolManager, PoolSnapshot};

/// Bytes of send buffer per `limits.send_queue` entry (a `mining.notify` is 0.3–2 KiB).
const SEND_QUEUE_ENTRY_BYTES: usize = 2048;

/// A running proxy.
pub struct Proxy {
    listeners: Vec<SocketAddr>,
    web: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    instruments: Arc<Instruments>,
    control: Option<Arc<ControlPlane>>,
    admin_stop: CancellationToken,
    admin: TaskTracker,
    manager: Arc<PoolManager>,
    accept_stop: CancellationToken,
    sessions_stop: CancellationToken,
    upstream_stop: CancellationToken,
    sessions: TaskTracker,
    upstream: TaskTracker,
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

    /// Like [`Proxy::start_with`] with the command line's options.
    pub async fn start_with_options(
        config: &Config,
        manager_settings: ManagerSettings,
        options: StartOptions,
    ) -> std::io::Result<Proxy> {
        // The test-only fault hook, read once here (see `crate::supervisor`).
        let fault = Fault::from_env().map_err(std::io::Error::other)?;
        let supervisor = Supervisor::new(fault);
        let upstream_stop = CancellationToken::new();
        // A start that fails half way (a bad power plan, a port in use) stops what it already
        // started: dropped guards cancel their tokens; a successful start disarms them.
        let upstream_guard = upstream_stop.clone().drop_guard();
        let upstream = TaskTracker::new();
        let manager = PoolManager::start(
            config,
            manager_settings,
            upstream_stop.clone(),
            upstream.clone(),
        );
        supervisor.spawn_critical(&upstream, "pool-manager", manager.clone().run());
        let instruments = Arc::new(Instruments::default());

        let settings = Arc::new(SessionSettings {
            vardiff: VardiffSettings {
                min: config.vardiff.min,
                max: config.vardiff.max,
                shares_per_minute: config.vardiff.shares_per_minute,
            },
            initial_difficulty: config.vardiff.initial,
            max_line_bytes: config.limits.max_line_bytes,
            max_outbox_bytes: config
                .limits
                .send_queue
                .saturating_mul(SEND_QUEUE_ENTRY_BYTES),
            handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
            idle_timeout: Duration::from_secs(config.limits.idle_timeout_secs),
            write_timeout: Duration::from_secs(config.limits.write_timeout_secs),
            drain_grace: Duration::from_secs(config.limits.drain_grace_secs),
            stats: instruments.sv1.clone(),
        });
        let accept_stop = CancellationToken::new();
        let sessions_stop = CancellationToken::new();
        let accept_guard = accept_stop.clone().drop_guard();
        let sessions_guard = sessions_stop.clone().drop_guard();
        let sessions = TaskTracker::new();
        let mut listeners = Vec::new();
        let caps = listener::ConnectionLimits {
            total: config.limits.max_connections,
            per_address: config.limits.max_connections_per_address,
        };
        for (index, d) in config.downstream.iter().enumerate() {
            let name = format!("listener-{index}");
            let listener = listener::bind(d.listen)?;
            listeners.push(listener.local_addr()?);
            match d.protocol {
                DownstreamProtocol::Sv1 => {
                    let settings = settings.clone();
                    let manager = manager.clone();
                    let stop = accept_stop.clone();
                    let session_stop = sessions_stop.clone();
                    let tracker = sessions.clone();
                    supervisor.spawn_critical(&sessions, &name, async move {
                        listener::serve(
                            listener,
                            caps,
                            "sv1",
                            stop,
                            tracker,
                            move |mut accepted| {
                                // Sessions end on the session token, not the accept token, so that
                                // shutdown can stop accepting first and drain sessions after.
                                accepted.shutdown = session_stop.clone();
                                sv1_session::serve(accepted, settings.clone(), manager.clone())
                            },
                        )
                        .await
                    });
                }
                DownstreamProtocol::Sv2 => {
                    let key_file = d.authority_key_file.as_deref().ok_or_else(|| {
                        std::io::Error::other("SV2 listener without authority_key_file")
                    })?;
                    let noise =
                        sv2_session::handshake::responder_config(key_file, d.cert_validity_secs)
                            .map_err(std::io::Error::other)?;
                    info!(authority = %noise.authority_public_key(), listen = %d.listen, "SV2 listener certified by authority key");
                    let sv2_settings = Arc::new(Sv2Settings {
                        noise,
                        channel: ChannelSettings {
                            vardiff: settings.vardiff,
                            initial_difficulty: settings.initial_difficulty,
                        },
                        handshake_timeout: settings.handshake_timeout,
                        idle_timeout: settings.idle_timeout,
                        write_timeout: settings.write_timeout,
                        drain_grace: settings.drain_grace,
                        max_frame_bytes: d.max_frame_bytes,
                        max_channels: d.max_channels_per_connection,
                        // Acknowledge as soon as the session has nothing else ready: a
                        // real channel sends a share every few seconds, so waiting only adds
                        // latency; what arrives together is still acknowledged together.
                        ack_delay: Duration::ZERO,
                        ack_batch: config.limits.sv2_ack_batch,
                        stats: instruments.sv2.clone(),
                    });
                    let manager = manager.clone();
                    let stop = accept_stop.clone();
                    let session_stop = sessions_stop.clone();
                    let tracker = sessions.clone();
                    supervisor.spawn_critical(&sessions, &name, async move {
                        listener::serve(
                            listener,
                            caps,
                            "sv2",
                            stop,
                            tracker,
                            move |mut accepted| {
                                accepted.shutdown = session_stop.clone();
                                sv2_session::serve(accepted, sv2_settings.clone(), manager.clone())
                            },
                        )
                        .await
                    });
                }
            }
        }
        let admin_stop = CancellationToken::new();
        let admin_guard = admin_stop.clone().drop_guard();
        let admin = TaskTracker::new();
        let control = match &config.admin {
            None => None,
            Some(a) => {
                let audit = match &a.state_dir {
                    Some(dir) => {
                        let audit = AuditLog::open(dir)?;
                        // Only a log with a file has a writer (an in-memory one's would
                        // return at once).
                        supervisor.spawn_critical(
                            &admin,
                            "audit-writer",
                            audit.clone().run_writer(admin_stop.clone()),
                        );
                        audit
                    }
                    None => AuditLog::in_memory(),
                };
                supervisor.set_audit(audit.clone());
                let gpu = crate::control::power::adapters::gpu(config)
                    .map_err(|e| std::io::Error::other(format!("[gpu_scheduler]: {e}")))?;
                let power = crate::control::power::start(
                    config,
                    manager.clone(),
                    audit.clone(),
                    crate::control::power::adapters::firmware_factory(),
                    gpu,
                    admin_stop.clone(),
                    &admin,
                    options.reset_power_state,
                    &supervisor,
                )
                .map_err(|e| std::io::Error::other(format!("[power]: {e}")))?;
                let plane = ControlPlane::new(manager.clone(), audit, power);
                let socket = AdminSocket::bind(&a.socket).await?;
                supervisor.spawn_critical(
                    &admin,
                    "admin-socket",
                    socket.serve(
                        plane.clone(),
                        a.allowed_uids.clone(),
                        admin_stop.clone(),
                        admin.clone(),
                    ),
                );
                Some(plane)
            }
        };
        let mut web = None;
        if let (Some(h), Some(plane)) = (&config.http, &control) {
            let server = crate::web::WebServer::bind(h, &config.limits, plane.clone()).await?;
            web = Some(server.local_addr()?);
            supervisor.spawn_critical(&admin, "http-server", server.serve(admin_stop.clone()));
        }
        let mut metrics = None;
        if let Some(m) = &config.metrics {
            let power = control.as_ref().and_then(|c| c.power().cloned());
            let source = crate::web::metrics::live::LiveSource::new(
                config,
                manager.clone(),
                power,
                instruments.clone(),
            );
            let registry = crate::web::metrics::registry(Arc::new(source), m.top_workers)
                .map_err(|e| std::io::Error::other(format!("[metrics]: {e}")))?;
            let server = crate::web::metrics::server::MetricsServer::bind(
                m.listen,
                registry,
                crate::http_server::HttpLimits::from_config(&config.limits),
            )
            .await?;
            metrics = Some(server.local_addr()?);
            supervisor.spawn_critical(&admin, "metrics-server", server.serve(admin_stop.clone()));
        }
        supervisor.check_fault().map_err(std::io::Error::other)?;
        for guard in [upstream_guard, accept_guard, sessions_guard, admin_guard] {
            guard.disarm();
        }
        Ok(Proxy {
            listeners,
            web,
            metrics,
            instruments,
            control,
            admin_stop,
            admin,
            manager,
            accept_stop,
            sessions_stop,
            upstream_stop,
            sessions,
            upstream,
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
    /// `grace`, then closes the pool connections.
    pub async fn shutdown(self, grace: Duration) {
        info!("shutting down: no new miners");
        // Tasks that return from here on are doing what they were told.
        self.supervisor.stopping();
        self.accept_stop.cancel();
        self.sessions_stop.cancel();
        self.sessions.close();
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            info!("grace period over with sessions still open");
        }
        self.upstream_stop.cancel();
        self.upstream.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.upstream.wait()).await;
        // Last, so the audit log gets everything the shutdown did.
        self.admin_stop.cancel();
        self.admin.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.admin.wait()).await;
        info!("shutdown complete");
    }
}
