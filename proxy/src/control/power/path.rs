//! One rig's controls put together: its management API, its switched PDU outlet, or both
//! ([`PowerPath`]). The controller sees one [`RigControl`] per rig and never asks which
//! path is behind it, except to escalate ([`RigControl::cut`]) and to show it.
//!
//! What the outlet says wins where both speak: an outlet that is off means the rig draws
//! nothing whatever its firmware last said, and a PDU's meter beats the rig's own estimate of
//! its draw. A hard cut is the last resort: a rig with firmware is slept through it, and its
//! outlet is switched off only when the controller escalates (`cut`). Every wait here is
//! bounded ([`PathBounds`]); the controller bounds the whole command on top.

use std::sync::Arc;
use std::time::Duration;

use super::ports::{
    BoxFuture, ControlPath, FirmwareState, FirmwareStatus, OutletControl, OutletReading, PortError,
    RigControl,
};
use crate::error::{Classify, Retry, Side};

/// How long the composite waits, and what counts as off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathBounds {
    /// An outlet switched (off by `cut`, on by `wake`) must read so within this.
    pub outlet_confirm: Duration,
    /// How often the outlet is read while waiting.
    pub outlet_poll: Duration,
    /// After the outlet came back on, firmware wake is retried (while its errors are
    /// retryable: the rig boots for a minute or two) for at most this long.
    pub wake_retry_for: Duration,
    /// Pause between those wake attempts.
    pub wake_retry_every: Duration,
    /// A cut outlet counts as off only at or below this current (A), where the PDU meters
    /// current: a mining rig draws 10 A and more, a dead one nothing.
    pub off_current_a: f64,
    /// The same for a PDU that meters power (W).
    pub off_power_w: f64,
}

impl Default for PathBounds {
    fn default() -> Self {
        PathBounds {
            outlet_confirm: Duration::from_secs(30),
            outlet_poll: Duration::from_secs(1),
            wake_retry_for: Duration::from_secs(240),
            wake_retry_every: Duration::from_secs(5),
            off_current_a: 0.5,
            off_power_w: 60.0,
        }
    }
}

/// A rig's management API and/or its PDU outlet as one [`RigControl`]. Made by
/// [`PowerPath::compose`]; holds at least one of the two.
pub struct PowerPath {
    firmware: Option<Arc<dyn RigControl>>,
    outlet: Arc<dyn OutletControl>,
    bounds: PathBounds,
}

impl PowerPath {
    /// The control of a rig with this management API and this outlet: the management API
    /// itself when there is no outlet, `None` when there is neither.
    pub fn compose(
        firmware: Option<Arc<dyn RigControl>>,
        outlet: Option<Arc<dyn OutletControl>>,
        bounds: PathBounds,
    ) -> Option<Arc<dyn RigControl>> {
        match (firmware, outlet) {
            (firmware, Some(outlet)) => Some(Arc::new(PowerPath {
                firmware,
                outlet,
                bounds,
            })),
            (Some(firmware), None) => Some(firmware),
            (None, None) => None,
        }
    }

    /// Whether a reading says the outlet is off and (where metered) its load fell.
    fn reads_off(&self, r: &OutletReading) -> bool {
        !r.on
            && r.current_a
                .is_none_or(|a| a.is_finite() && a <= self.bounds.off_current_a)
            && r.power_w
                .is_none_or(|w| w.is_finite() && w <= self.bounds.off_power_w)
    }

    /// Switches the outlet and reads it until it says so (off: with its load fallen), within
    /// `outlet_confirm`. A failed read is retried (a busy PDU); a refused switch is not.
    async fn switch(&self, on: bool) -> Result<(), PortError> {
        self.outlet.set(on).await?;
        let mut last: Option<String> = None;
        let confirmed = tokio::time::timeout(self.bounds.outlet_confirm, async {
            loop {
                match self.outlet.read().await {
                    Ok(r) if on && r.on => return,
                    Ok(r) if !on && self.reads_off(&r) => return,
                    Ok(r) => last = Some(format!("{r:?}")),
                    Err(e) => last = Some(e.to_string()),
                }
                tokio::time::sleep(self.bounds.outlet_poll).await;
            }
        })
        .await;
        confirmed.map_err(|_| {
            PortError::new(
                // The PDU is the rig's equipment side too (no side of its own yet).
                Side::Firmware,
                Retry::Yes,
                format!(
                    "{} did not read {} within {:?} (last: {})",
                    self.outlet.describe(),
                    if on { "on" } else { "off with its load fallen" },
                    self.bounds.outlet_confirm,
                    last.as_deref().unwrap_or("no reading")
                ),
            )
        })
    }

    /// Firmware wake, retried while its errors are retryable (the rig is booting) for at
    /// most `wake_retry_for`.
    async fn wake_firmware(&self, firmware: &dyn RigControl) -> Result<(), PortError> {
        let mut last = None;
        let woke = tokio::time::timeout(self.bounds.wake_retry_for, async {
            loop {
                match firmware.wake().await {
                    Ok(()) => return Ok(()),
                    Err(e) if e.retry() == Retry::No => return Err(e),
                    Err(e) => last = Some(e),
                }
                tokio::time::sleep(self.bounds.wake_retry_every).await;
            }
        })
        .await;
        woke.unwrap_or_else(|_| {
            Err(last.unwrap_or_else(|| {
                PortError::new(
                    Side::Firmware,
                    Retry::Yes,
                    format!("{} did not take a wake", firmware.describe()),
                )
            }))
        })
    }
}

impl RigControl for PowerPath {
    fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            match &self.firmware {
                Some(f) => f.sleep().await,
                None => self.outlet.set(false).await,
            }
        })
    }

    fn wake(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async move {
            // Unreadable, the outlet is switched on anyway: on is what a wake wants, and
            // switching an outlet that is on changes nothing.
            let off = self.outlet.read().await.map_or(true, |r| !r.on);
            if off {
                self.switch(true).await?;
                if let Some(f) = &self.firmware {
                    // It boots now; some firmware keeps its sleep across a reboot.
                    return self.wake_firmware(f.as_ref()).await;
                }
                return Ok(());
            }
            match &self.firmware {
                Some(f) => f.wake().await,
                None => Ok(()),
            }
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>> {
        Box::pin(async move {
            let reading = self.outlet.read().await;
            let firmware = match (&reading, &self.firmware) {
                // Off: nothing draws, whatever the firmware last said (it cannot answer).
                (Ok(r), _) if !r.on => {
                    return Ok(FirmwareStatus {
                        state: FirmwareState::Sleeping,
                        power_w: Some(r.power_w.unwrap_or(0.0)),
                        metered: r.power_w.is_some(),
                    });
                }
                (_, Some(f)) => f,
                // On and no firmware: it hashes (its shares tell the controller the rest).
                (Ok(r), None) => {
                    return Ok(FirmwareStatus {
                        state: FirmwareState::Mining,
                        power_w: r.power_w,
                        metered: r.power_w.is_some(),
                    });
                }
                (Err(e), None) => return Err(e.clone()),
            };
            // An unreadable outlet leaves the firmware's word (no worse than no PDU).
            let mut status = firmware.status().await?;
            if let Some(w) = reading.ok().and_then(|r| r.power_w) {
                status.power_w = Some(w);
                status.metered = true;
            }
            Ok(status)
        })
    }

    fn describe(&self) -> String {
        match &self.firmware {
            Some(f) => format!("{} + {}", f.describe(), self.outlet.describe()),
            None => self.outlet.describe(),
        }
    }

    fn path(&self) -> ControlPath {
        if self.firmware.is_some() {
            ControlPath::FirmwareAndPdu
        } else {
            ControlPath::Pdu
        }
    }

    fn cut(&self) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(self.switch(false))
    }
}

#[cfg(test)]
mod tests;
