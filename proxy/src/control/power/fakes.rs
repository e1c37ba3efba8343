//! Fakes of a rig's management API and of a PDU outlet, sharing one simulated rig, for the
//! composite's and the controller's tests.

use std::sync::{Arc, Mutex};

use super::ports::{
    BoxFuture, FirmwareState, FirmwareStatus, OutletControl, OutletReading, PortError, RigControl,
};
use crate::error::{Retry, Side};

/// The simulated rig behind both fakes.
#[derive(Debug)]
pub struct Sim {
    /// The outlet's relay.
    pub outlet_on: bool,
    /// What the firmware does (mining or asleep), while powered.
    pub firmware_mining: bool,
    /// Firmware accepts sleep but keeps mining (it lies).
    pub ignores_sleep: bool,
    /// Firmware API calls refused with a retryable error this many more times (it boots).
    pub booting_calls: u32,
    /// What `booting_calls` becomes when the outlet comes back on.
    pub boots_for: u32,
    /// Firmware refuses wake for good (a changed password).
    pub wake_refused: bool,
    /// The PDU refuses to switch.
    pub outlet_stuck: bool,
    /// Reads after an off switch that still show the load (the PSU's capacitors draining).
    pub load_lingers: u32,
    /// Calls so far: ("sleep" | "wake" | "status" | "set-on" | "set-off" | "read").
    pub calls: Vec<&'static str>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            outlet_on: true,
            firmware_mining: true,
            ignores_sleep: false,
            booting_calls: 0,
            boots_for: 2,
            wake_refused: false,
            outlet_stuck: false,
            load_lingers: 0,
            calls: Vec::new(),
        }
    }
}

/// A shared simulated rig.
pub type SharedSim = Arc<Mutex<Sim>>;

/// Mining draw (W) and current (A) of the simulated rig.
pub const MINING_W: f64 = 3200.0;
/// The PDU's reading while the rig idles asleep (W).
pub const ASLEEP_W: f64 = 40.0;

/// The firmware side of a [`Sim`].
pub struct FakeFirmware(pub SharedSim);

/// The outlet side of a [`Sim`].
pub struct FakeOutlet(pub SharedSim);

fn booting(s: &mut Sim) -> Option<PortError> {
    if !s.outlet_on {
        return Some(PortError::new(
            Side::Firmware,
            Retry::Yes,
            "connection refused",
        ));
    }
    if s.booting_calls > 0 {
        s.booting_calls -= 1;
        return Some(PortError::new(Side::Firmware, Retry::Yes, "booting"));
    }
    None
}

impl RigControl for FakeFirmware {
    fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("sleep");
        let r = match booting(&mut s) {
            Some(e) => Err(e),
            None => {
                if !s.ignores_sleep {
                    s.firmware_mining = false;
                }
                Ok(())
            }
        };
        Box::pin(async move { r })
    }

    fn wake(&self) -> BoxFuture<'_, Result<(), PortError>> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("wake");
        let r = match booting(&mut s) {
            Some(e) => Err(e),
            None if s.wake_refused => {
                Err(PortError::new(Side::Firmware, Retry::No, "bad password"))
            }
            None => {
                s.firmware_mining = true;
                Ok(())
            }
        };
        Box::pin(async move { r })
    }

    fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("status");
        let r = match booting(&mut s) {
            Some(e) => Err(e),
            None => Ok(FirmwareStatus {
                state: if s.firmware_mining {
                    FirmwareState::Mining
                } else {
                    FirmwareState::Sleeping
                },
                // The rig's own estimate, off by 10% (the PDU's meter is right).
                power_w: Some(if s.firmware_mining { 2900.0 } else { 30.0 }),
                metered: false,
            }),
        };
        Box::pin(async move { r })
    }

    fn describe(&self) -> String {
        "fake 127.0.0.1:4028".into()
    }
}

impl OutletControl for FakeOutlet {
    fn set(&self, on: bool) -> BoxFuture<'_, Result<(), PortError>> {
        let mut s = self.0.lock().unwrap();
        s.calls.push(if on { "set-on" } else { "set-off" });
        let r = if s.outlet_stuck {
            Err(PortError::new(Side::Firmware, Retry::Yes, "pdu timed out"))
        } else {
            if s.outlet_on && !on {
                // Power lost: the firmware comes back as it boots (mining unless it keeps
                // its sleep; this one mines).
                s.firmware_mining = true;
            }
            if !s.outlet_on && on {
                s.booting_calls = s.booting_calls.max(s.boots_for);
            }
            s.outlet_on = on;
            Ok(())
        };
        Box::pin(async move { r })
    }

    fn read(&self) -> BoxFuture<'_, Result<OutletReading, PortError>> {
        let mut s = self.0.lock().unwrap();
        s.calls.push("read");
        let lingering = !s.outlet_on && s.load_lingers > 0;
        if lingering {
            s.load_lingers -= 1;
        }
        let w = match (s.outlet_on || lingering, s.firmware_mining) {
            (false, _) => 0.0,
            (true, true) => MINING_W,
            (true, false) => ASLEEP_W,
        };
        let r = Ok(OutletReading {
            on: s.outlet_on,
            power_w: Some(w),
            current_a: Some(w / 230.0),
        });
        Box::pin(async move { r })
    }

    fn describe(&self) -> String {
        "pdu-a outlet 7".into()
    }
}

/// A simulated rig and its two fakes.
pub fn rig(sim: Sim) -> (SharedSim, Arc<dyn RigControl>, Arc<dyn OutletControl>) {
    let sim = Arc::new(Mutex::new(sim));
    (
        sim.clone(),
        Arc::new(FakeFirmware(sim.clone())),
        Arc::new(FakeOutlet(sim)),
    )
}
