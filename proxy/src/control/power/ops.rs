//! The power controller's slow work, each piece a future whose result comes back to the
//! controller's loop: firmware commands followed until the rig confirms, status polls, GPU
//! demand polls and shed requests. Every future is bounded in time.

use std::sync::Arc;
use std::time::Duration;

use super::ports::{
    BoxFuture, FirmwareState, FirmwareStatus, GpuControl, GpuLoad, PortError, RigControl,
};
use crate::control::arbiter::RigId;
use crate::error::{Retry, Side};

/// How often a rig is asked whether a command took effect.
pub const CONFIRM_POLL: Duration = Duration::from_millis(500);

/// A finished piece of work.
pub enum Done {
    /// A sleep command: `Ok` once the firmware says the rig sleeps.
    Slept(RigId, Result<(), PortError>),
    /// A wake command: `Ok` once the firmware says the rig mines again.
    Woke(RigId, Result<(), PortError>),
    /// The firmware said the rig sleeps, but shares still arrived: look again now.
    QuietCheck(RigId),
    /// A status poll.
    Status(RigId, Result<FirmwareStatus, PortError>),
    /// A GPU demand poll.
    Demand(Result<Option<GpuLoad>, PortError>),
    /// A shed request.
    Shed(f64, Result<(), PortError>),
    /// A PDU cut (escalation): `Ok` once the outlet reads off and its load fell.
    Cut(RigId, Result<(), PortError>),
}

/// A boxed piece of work.
pub type Op = BoxFuture<'static, Done>;

/// Commands `rig` to sleep (`sleep == true`) or wake, then polls its status until it reports
/// the new state, for at most `deadline`.
pub fn command(rig: RigId, control: Arc<dyn RigControl>, sleep: bool, deadline: Duration) -> Op {
    Box::pin(async move {
        let want = if sleep {
            FirmwareState::Sleeping
        } else {
            FirmwareState::Mining
        };
        let result = tokio::time::timeout(deadline, async {
            if sleep {
                control.sleep().await?;
            } else {
                control.wake().await?;
            }
            loop {
                tokio::time::sleep(CONFIRM_POLL).await;
                // A failed poll is not a failed command: the rig may be rebooting.
                if let Ok(s) = control.status().await {
                    if s.state == want {
                        return Ok(());
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(PortError::new(
                Side::Firmware,
                Retry::Yes,
                format!(
                    "{} did not report {want:?} within {deadline:?}",
                    control.describe()
                ),
            ))
        });
        if sleep {
            Done::Slept(rig, result)
        } else {
            Done::Woke(rig, result)
        }
    })
}

/// Cuts a rig's power at its PDU outlet ([`RigControl::cut`] confirms it), for at most
/// `bound` (the composite bounds its own wait; this only catches one that would not stop).
pub fn cut(rig: RigId, control: Arc<dyn RigControl>, bound: Duration) -> Op {
    Box::pin(async move {
        let r = tokio::time::timeout(bound, control.cut())
            .await
            .unwrap_or_else(|_| {
                Err(PortError::new(
                    Side::Firmware,
                    Retry::Yes,
                    format!("{} did not cut within {bound:?}", control.describe()),
                ))
            });
        Done::Cut(rig, r)
    })
}

/// Looks at a rig again after `after` (its shares must stop before its sleep counts).
pub fn quiet_check(rig: RigId, after: Duration) -> Op {
    Box::pin(async move {
        tokio::time::sleep(after).await;
        Done::QuietCheck(rig)
    })
}

/// One status poll, bounded by `timeout`.
pub fn status(rig: RigId, control: Arc<dyn RigControl>, timeout: Duration) -> Op {
    Box::pin(async move {
        let r = tokio::time::timeout(timeout, control.status())
            .await
            .unwrap_or_else(|_| {
                Err(PortError::new(
                    Side::Firmware,
                    Retry::Yes,
                    "status timed out",
                ))
            });
        Done::Status(rig, r)
    })
}

/// One GPU demand poll.
pub fn demand(gpu: Arc<dyn GpuControl>, timeout: Duration) -> Op {
    Box::pin(async move {
        let r = tokio::time::timeout(timeout, gpu.demand())
            .await
            .unwrap_or_else(|_| {
                Err(PortError::new(
                    Side::Scheduler,
                    Retry::Yes,
                    "demand poll timed out",
                ))
            });
        Done::Demand(r)
    })
}

/// Asks the GPU side to give `kw` back. The adapter bounds its own call (its retries and
/// timeouts); `bound` is that plus a margin, a safety net for one that would not stop.
pub fn shed(gpu: Arc<dyn GpuControl>, kw: f64, reason: String, bound: Duration) -> Op {
    Box::pin(async move {
        let r = tokio::time::timeout(bound, gpu.shed_kw(kw, &reason))
            .await
            .unwrap_or_else(|_| {
                Err(PortError::new(
                    Side::Scheduler,
                    Retry::Yes,
                    format!(
                        "{} did not answer the shed within {bound:?}",
                        gpu.describe()
                    ),
                ))
            });
        Done::Shed(kw, r)
    })
}
