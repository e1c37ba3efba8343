//! The real world behind [`super::ports`]: the firmware adapters of [`crate::firmware`], the
//! GPU scheduler adapters of [`crate::gpu`], and the admin socket as the GPU side when no
//! scheduler is configured.

use std::net::SocketAddr;
use std::sync::Arc;

use super::ports::{
    BoxFuture, FirmwareState, FirmwareStatus, GpuControl, GpuLoad, PortError, RigControl,
};
use super::rigs::ControlFactory;
use crate::config::RigGroup;
use crate::firmware::{Credentials, Endpoint, FirmwareClient, FirmwareError, RigState};
use crate::gpu::{GpuError, GpuScheduler};

// The controller logs the side and retry hint of what the adapters report: keep them.
impl From<FirmwareError> for PortError {
    fn from(e: FirmwareError) -> Self {
        PortError::of(&e)
    }
}

impl From<GpuError> for PortError {
    fn from(e: GpuError) -> Self {
        PortError::of(&e)
    }
}

/// A rig's management API through [`crate::firmware`].
pub struct Firmware {
    client: FirmwareClient,
    endpoint: Endpoint,
}

impl RigControl for Firmware {
    fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.client
                .sleep(&self.endpoint)
                .await
                .map_err(PortError::from)
        })
    }

    fn wake(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.client
                .wake(&self.endpoint)
                .await
                .map_err(PortError::from)
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>> {
        Box::pin(async move {
            let s = self
                .client
                .status(&self.endpoint)
                .await
                .map_err(PortError::from)?;
            let state = match s.state {
                RigState::Mining => FirmwareState::Mining,
                RigState::Sleeping => FirmwareState::Sleeping,
                RigState::Waking => FirmwareState::Waking,
                // Stopping still hashes at full power: not asleep yet.
                _ => FirmwareState::Unknown,
            };
            Ok(FirmwareStatus {
                state,
                power_w: s.power_w,
                metered: false,
            })
        })
    }

    fn describe(&self) -> String {
        format!("{} {}", self.endpoint.kind, self.endpoint.addr)
    }
}

/// Management API clients for rig groups with a `firmware`: the password comes from the
/// group's `password_env` when the client is made (so a rotated secret is picked up by the
/// next rig that connects).
pub fn firmware_factory() -> ControlFactory {
    Arc::new(|group: &RigGroup, addr: SocketAddr| {
        let kind = group.firmware?.firmware()?;
        let password = group
            .password_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .unwrap_or_default();
        let user = group.username.clone().unwrap_or_else(|| "root".to_owned());
        Some(Arc::new(Firmware {
            client: FirmwareClient::default(),
            endpoint: Endpoint::new(kind, addr, Credentials::new(user, password)),
        }) as Arc<dyn RigControl>)
    })
}

/// The outlets of the `[[pdu]]`s over SNMP, for `[[rig]]` `pdu`/`outlet` (`None`: no PDU
/// configured).
pub fn outlets(config: &crate::config::Config) -> Option<super::ports::OutletFactory> {
    (!config.pdu.is_empty()).then(|| super::pdu_adapter::outlet_factory(&config.pdu))
}

impl GpuControl for GpuScheduler {
    fn set_budget_kw(&self, kw: f64) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            GpuScheduler::set_budget_kw(self, kw)
                .await
                .map_err(PortError::from)
        })
    }

    fn shed_kw(&self, kw: f64, reason: &str) -> BoxFuture<'_, Result<(), PortError>> {
        let reason = reason.to_owned();
        Box::pin(async move {
            self.shed(kw, &reason)
                .await
                .map(|_| ())
                .map_err(PortError::from)
        })
    }

    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, PortError>> {
        Box::pin(async move {
            if self.kind() != "slurm" {
                // Webhook and command hooks learn nothing by themselves: demand comes through
                // the admin socket (`ctl gpu-request`).
                return Ok(None);
            }
            let d = GpuScheduler::demand(self).await.map_err(PortError::from)?;
            // Suspended work keeps its licenses: it counts as in use.
            let in_use = d.running_kw + d.suspended_kw;
            Ok(Some(GpuLoad {
                wanted_kw: d.requested_kw + in_use,
                in_use_kw: in_use,
                drawing_kw: d.running_kw,
            }))
        })
    }

    fn describe(&self) -> String {
        self.kind().to_owned()
    }

    fn call_bound(&self) -> std::time::Duration {
        GpuScheduler::call_bound(self)
    }
}

/// No scheduler: grants are recorded (audit log, `ctl power`) and demand comes through the
/// admin socket.
pub struct SocketOnly;

impl GpuControl for SocketOnly {
    fn set_budget_kw(&self, _kw: f64) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn shed_kw(&self, _kw: f64, _reason: &str) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, PortError>> {
        Box::pin(async { Ok(None) })
    }

    fn describe(&self) -> String {
        "admin socket".to_owned()
    }

    fn call_bound(&self) -> std::time::Duration {
        // Nothing is called: the answers above are immediate.
        std::time::Duration::from_secs(1)
    }
}

/// The GPU side for `config`.
pub fn gpu(config: &crate::config::Config) -> Result<Arc<dyn GpuControl>, crate::gpu::GpuError> {
    Ok(match &config.gpu_scheduler {
        Some(c) => Arc::new(GpuScheduler::from_config(c.clone())?),
        None => Arc::new(SocketOnly),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, Retry, Side};

    #[test]
    fn port_errors_keep_the_side_and_hint_of_the_adapter_error() {
        let refused = || FirmwareError::LoginRefused {
            addr: "127.0.0.1:4028".parse().unwrap(),
            detail: "bad password".into(),
        };
        let e = PortError::from(refused());
        assert_eq!((e.side(), e.retry()), (Side::Firmware, Retry::No));
        assert_eq!(e.message(), refused().to_string());
        let e = PortError::from(GpuError::NoSuchLicense("power_kw".into()));
        assert_eq!((e.side(), e.retry()), (Side::Operator, Retry::No));
    }
}
