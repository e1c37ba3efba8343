//! The control stage: the audit log, power control, the admin socket, the HTTP API and the
//! Prometheus endpoint. They stop last (see [`super::Proxy::shutdown`]), so the audit log
//! records everything the shutdown did and operators see the proxy until the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::StartOptions;
use super::stage::Stage;
use crate::config::Config;
use crate::control::admin::server::AdminSocket;
use crate::control::audit::AuditLog;
use crate::control::plane::ControlPlane;
use crate::supervisor::Supervisor;
use crate::telemetry::Instruments;
use crate::upstream::manager::PoolManager;

/// What the control stage's steps share.
pub(super) struct Control<'a> {
    pub(super) config: &'a Config,
    pub(super) manager: &'a Arc<PoolManager>,
    pub(super) supervisor: &'a Supervisor,
    pub(super) stage: &'a Stage,
}

impl Control<'_> {
    /// The control plane, when `[admin]` is configured: the audit log (and its writer, when
    /// it has a file), power control, and the admin socket.
    pub(super) async fn plane(
        &self,
        options: StartOptions,
    ) -> std::io::Result<Option<Arc<ControlPlane>>> {
        let Some(a) = &self.config.admin else {
            return Ok(None);
        };
        let (supervisor, stage) = (self.supervisor, self.stage);
        let audit = match &a.state_dir {
            Some(dir) => {
                let audit = AuditLog::open(dir)?;
                // Only a log with a file has a writer (an in-memory one's would return at once).
                supervisor.spawn_critical(
                    &stage.tasks,
                    "audit-writer",
                    audit.clone().run_writer(stage.stop.clone()),
                );
                audit
            }
            None => AuditLog::in_memory(),
        };
        supervisor.set_audit(audit.clone());
        let gpu = crate::control::power::adapters::gpu(self.config)
            .map_err(|e| std::io::Error::other(format!("[gpu_scheduler]: {e}")))?;
        let power = crate::control::power::start(
            self.config,
            self.manager.clone(),
            audit.clone(),
            crate::control::power::adapters::firmware_factory(),
            crate::control::power::adapters::outlets(self.config),
            gpu,
            stage.stop.clone(),
            &stage.tasks,
            crate::control::power::persist::Storage::File {
                reset: options.reset_power_state,
            },
            supervisor,
        )
        .map_err(|e| std::io::Error::other(format!("[power]: {e}")))?;
        let plane = ControlPlane::new(
            self.manager.clone(),
            audit,
            crate::control::power::PowerSlot::fixed(power),
            None,
        );
        let socket = AdminSocket::bind(&a.socket).await?;
        supervisor.spawn_critical(
            &stage.tasks,
            "admin-socket",
            socket.serve(
                plane.clone(),
                a.allowed_uids.clone(),
                Duration::from_secs(a.idle_timeout_secs),
                stage.stop.clone(),
                stage.tasks.clone(),
            ),
        );
        Ok(Some(plane))
    }

    /// The HTTP API, when `[http]` is configured (it serves the control plane, so config
    /// validation makes `[http]` need `[admin]`). Returns its address.
    pub(super) async fn web(
        &self,
        plane: Option<&Arc<ControlPlane>>,
    ) -> std::io::Result<Option<SocketAddr>> {
        let (Some(h), Some(plane)) = (&self.config.http, plane) else {
            return Ok(None);
        };
        let server = crate::web::WebServer::bind(h, &self.config.limits, plane.clone()).await?;
        let address = server.local_addr()?;
        self.supervisor.spawn_critical(
            &self.stage.tasks,
            "http-server",
            server.serve(self.stage.stop.clone()),
        );
        Ok(Some(address))
    }

    /// The Prometheus endpoint, when `[metrics]` is configured. Returns its address.
    pub(super) async fn metrics(
        &self,
        plane: Option<&Arc<ControlPlane>>,
        instruments: &Arc<Instruments>,
    ) -> std::io::Result<Option<SocketAddr>> {
        let Some(m) = &self.config.metrics else {
            return Ok(None);
        };
        let power = plane.map(|c| c.power_slot().clone()).unwrap_or_default();
        let source = crate::web::metrics::live::LiveSource::new(
            self.config,
            self.manager.clone(),
            power,
            instruments.clone(),
        );
        let registry = crate::web::metrics::registry(Arc::new(source), m.top_workers)
            .map_err(|e| std::io::Error::other(format!("[metrics]: {e}")))?;
        let server = crate::web::metrics::server::MetricsServer::bind(
            m.listen,
            registry,
            crate::http_server::HttpLimits::from_config(&self.config.limits),
        )
        .await?;
        let address = server.local_addr()?;
        self.supervisor.spawn_critical(
            &self.stage.tasks,
            "metrics-server",
            server.serve(self.stage.stop.clone()),
        );
        Ok(Some(address))
    }
}
