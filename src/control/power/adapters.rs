//! The real world behind [`super::ports`]: the GPU scheduler adapters of [`crate::gpu`], and
//! the admin socket as the GPU side when no scheduler is configured.

use std::sync::Arc;

use super::ports::{BoxFuture, GpuControl, GpuLoad};
use crate::gpu::GpuScheduler;

impl GpuControl for GpuScheduler {
    fn set_budget_kw(&self, kw: f64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            GpuScheduler::set_budget_kw(self, kw)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn shed_kw(&self, kw: f64, reason: &str) -> BoxFuture<'_, Result<(), String>> {
        let reason = reason.to_owned();
        Box::pin(async move {
            self.shed(kw, &reason)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, String>> {
        Box::pin(async move {
            if self.kind() != "slurm" {
                // Webhook and command hooks learn nothing by themselves: demand comes through
                // the admin socket (`ctl gpu-request`).
                return Ok(None);
            }
            let d = GpuScheduler::demand(self)
                .await
                .map_err(|e| e.to_string())?;
            // Suspended work keeps its licenses: it counts as in use.
            let in_use = d.running_kw + d.suspended_kw;
            Ok(Some(GpuLoad {
                wanted_kw: d.requested_kw + in_use,
                in_use_kw: in_use,
            }))
        })
    }

    fn describe(&self) -> String {
        self.kind().to_owned()
    }
}

/// No scheduler: grants are recorded (audit log, `ctl power`) and demand comes through the
/// admin socket.
pub struct SocketOnly;

impl GpuControl for SocketOnly {
    fn set_budget_kw(&self, _kw: f64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn shed_kw(&self, _kw: f64, _reason: &str) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, String>> {
        Box::pin(async { Ok(None) })
    }

    fn describe(&self) -> String {
        "admin socket".to_owned()
    }
}

/// The GPU side for `config`.
pub fn gpu(config: &crate::config::Config) -> Result<Arc<dyn GpuControl>, crate::gpu::GpuError> {
    Ok(match &config.gpu_scheduler {
        Some(c) => Arc::new(GpuScheduler::from_config(c.clone())?),
        None => Arc::new(SocketOnly),
    })
}
