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
        #[cfg(feature = "etcd")]
        if let Some(cluster) = &self.config.cluster {
            let plane = self.cluster_plane(cluster, audit, gpu).await?;
            self.admin_socket(a, &plane).await?;
            return Ok(Some(plane));
        }
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
        self.admin_socket(a, &plane).await?;
        Ok(Some(plane))
    }

    /// The admin socket, serving `plane`.
    async fn admin_socket(
        &self,
        a: &crate::config::Admin,
        plane: &Arc<ControlPlane>,
    ) -> std::io::Result<()> {
        let socket = AdminSocket::bind(&a.socket).await?;
        self.supervisor.spawn_critical(
            &self.stage.tasks,
            "admin-socket",
            socket.serve(
                plane.clone(),
                a.allowed_uids.clone(),
                Duration::from_secs(a.idle_timeout_secs),
                self.stage.stop.clone(),
                self.stage.tasks.clone(),
            ),
        );
        Ok(())
    }

    /// The control plane of one instance of a cluster (`[cluster]`): the site's miners
    /// through etcd, power control only while this instance leads, requests forwarded to
    /// the leader. etcd being down at start is no error: miners are served, power control
    /// waits for an election.
    #[cfg(feature = "etcd")]
    async fn cluster_plane(
        &self,
        cluster: &crate::config::Cluster,
        audit: Arc<AuditLog>,
        gpu: Arc<dyn crate::control::power::ports::GpuControl>,
    ) -> std::io::Result<Arc<ControlPlane>> {
        use crate::cluster::{fence::Fence, forward, inventory, leader, node::Node};
        let (supervisor, stage) = (self.supervisor, self.stage);
        let etcd = crate::cluster::etcd::Etcd::connect(cluster)
            .await
            .map_err(|e| std::io::Error::other(format!("[cluster]: {e}")))?;
        let ttl = Duration::from_secs(cluster.lease_ttl_secs);
        let node = Node::new(
            etcd,
            cluster.clone(),
            Fence::closed(leader::fence_margin(ttl)),
        );
        let local: Arc<dyn crate::pool_link::report::Fleet> = self.manager.clone();
        let fleet = inventory::ClusterFleet::new(node.clone(), local);
        // The leader's view of miners on other instances: its quiet checks read it, so a
        // dead inventory task stops the process rather than leave a stale view.
        supervisor.spawn_critical(
            &stage.tasks,
            "cluster-inventory",
            inventory::run(fleet.clone(), stage.stop.clone()),
        );
        let slot = crate::control::power::PowerSlot::default();
        let forwarder = forward::Forwarder::new(node.clone());
        let plane = ControlPlane::new(fleet.clone(), audit.clone(), slot.clone(), Some(forwarder));
        supervisor.spawn_critical(
            &stage.tasks,
            "cluster-requests",
            forward::serve(node.clone(), plane.clone(), stage.stop.clone()),
        );
        let leading = leader::Leading {
            config: Arc::new(self.config.clone()),
            fleet,
            audit,
            factory: crate::control::power::adapters::firmware_factory(),
            outlets: crate::control::power::adapters::outlets(self.config),
            gpu,
            slot,
            supervisor: supervisor.clone(),
            http: self.config.http.as_ref().map(|h| h.listen.to_string()),
        };
        supervisor.spawn_critical(
            &stage.tasks,
            "cluster-leader",
            leader::run(node, leading, stage.stop.clone()),
        );
        Ok(plane)
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
        )
        .with_cluster(plane.and_then(|p| p.cluster().cloned()));
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
