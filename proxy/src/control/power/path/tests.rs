//! The composite against a fake management API and a fake outlet over one simulated rig.

use super::*;
use crate::control::power::fakes::{ASLEEP_W, MINING_W, Sim, rig};

fn bounds() -> PathBounds {
    PathBounds {
        outlet_confirm: Duration::from_secs(5),
        outlet_poll: Duration::from_millis(100),
        wake_retry_for: Duration::from_secs(10),
        wake_retry_every: Duration::from_secs(1),
        ..PathBounds::default()
    }
}

fn both(sim: Sim) -> (crate::control::power::fakes::SharedSim, Arc<dyn RigControl>) {
    let (sim, fw, outlet) = rig(sim);
    (
        sim,
        PowerPath::compose(Some(fw), Some(outlet), bounds()).unwrap(),
    )
}

#[test]
fn compose_keeps_a_lone_firmware_and_names_every_path() {
    let (_, fw, outlet) = rig(Sim::default());
    let alone = PowerPath::compose(Some(fw.clone()), None, bounds()).unwrap();
    assert_eq!(alone.path(), ControlPath::Firmware);
    assert_eq!(alone.describe(), "fake 127.0.0.1:4028");
    let both = PowerPath::compose(Some(fw), Some(outlet.clone()), bounds()).unwrap();
    assert_eq!(both.path(), ControlPath::FirmwareAndPdu);
    assert_eq!(both.describe(), "fake 127.0.0.1:4028 + pdu-a outlet 7");
    let pdu = PowerPath::compose(None, Some(outlet), bounds()).unwrap();
    assert_eq!(pdu.path(), ControlPath::Pdu);
    assert_eq!(pdu.describe(), "pdu-a outlet 7");
    assert!(PowerPath::compose(None, None, bounds()).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_rig_without_an_outlet_cannot_be_cut() {
    let (_, fw, _) = rig(Sim::default());
    let e = fw.cut().await.unwrap_err();
    assert!(e.message().contains("no PDU outlet"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn sleep_goes_through_the_firmware_when_there_is_one() {
    let (sim, c) = both(Sim::default());
    c.sleep().await.unwrap();
    let s = sim.lock().unwrap();
    assert!(s.outlet_on, "a sleep is no power cut");
    assert!(!s.firmware_mining);
    assert!(!s.calls.contains(&"set-off"));
}

#[tokio::test(start_paused = true)]
async fn a_pdu_only_rig_sleeps_and_wakes_at_its_outlet() {
    let (sim, _, outlet) = rig(Sim::default());
    let c = PowerPath::compose(None, Some(outlet), bounds()).unwrap();
    let s = c.status().await.unwrap();
    assert_eq!(
        (s.state, s.power_w),
        (FirmwareState::Mining, Some(MINING_W))
    );
    c.sleep().await.unwrap();
    assert!(!sim.lock().unwrap().outlet_on);
    let s = c.status().await.unwrap();
    assert_eq!((s.state, s.power_w), (FirmwareState::Sleeping, Some(0.0)));
    c.wake().await.unwrap();
    assert!(sim.lock().unwrap().outlet_on);
    assert_eq!(c.status().await.unwrap().state, FirmwareState::Mining);
}

#[tokio::test(start_paused = true)]
async fn cut_confirms_the_outlet_off_and_its_load_fallen() {
    // The PDU reports the load for a few reads after the relay opened.
    let (sim, c) = both(Sim {
        ignores_sleep: true,
        load_lingers: 3,
        ..Sim::default()
    });
    let start = tokio::time::Instant::now();
    c.cut().await.unwrap();
    let s = sim.lock().unwrap();
    assert!(!s.outlet_on);
    assert_eq!(s.load_lingers, 0, "read until the load fell");
    let reads = s.calls.iter().filter(|c| **c == "read").count();
    assert_eq!(reads, 4, "{:?}", s.calls);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn cut_fails_when_the_load_does_not_fall_in_time() {
    let (_, c) = both(Sim {
        load_lingers: 1000,
        ..Sim::default()
    });
    let e = c.cut().await.unwrap_err();
    assert!(e.message().contains("did not read off"), "{e}");
    assert!(e.message().contains("power_w: Some(3200.0)"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn cut_reports_a_pdu_that_refuses() {
    let (_, c) = both(Sim {
        outlet_stuck: true,
        ..Sim::default()
    });
    assert!(
        c.cut()
            .await
            .unwrap_err()
            .message()
            .contains("pdu timed out")
    );
}

#[tokio::test(start_paused = true)]
async fn status_reads_the_outlet_first_and_prefers_its_meter() {
    let (sim, c) = both(Sim::default());
    let s = c.status().await.unwrap();
    // The firmware says 2900 W; the PDU meters 3200 W.
    assert_eq!(
        (s.state, s.power_w),
        (FirmwareState::Mining, Some(MINING_W))
    );
    assert!(s.metered);
    c.sleep().await.unwrap();
    let s = c.status().await.unwrap();
    assert_eq!(
        (s.state, s.power_w),
        (FirmwareState::Sleeping, Some(ASLEEP_W))
    );
    // Off at the outlet: asleep, though the firmware (unpowered) cannot say.
    sim.lock().unwrap().outlet_on = false;
    let s = c.status().await.unwrap();
    assert_eq!((s.state, s.power_w), (FirmwareState::Sleeping, Some(0.0)));
    let calls = &sim.lock().unwrap().calls;
    assert_eq!(calls.last(), Some(&"read"), "firmware not asked: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn wake_restores_the_outlet_then_retries_firmware_wake_while_it_boots() {
    let (sim, c) = both(Sim {
        ignores_sleep: true,
        ..Sim::default()
    });
    c.cut().await.unwrap();
    // This firmware keeps its sleep across the power cycle, and refuses calls while booting.
    {
        let mut s = sim.lock().unwrap();
        s.firmware_mining = false;
        s.calls.clear();
    }
    sim.lock().unwrap().booting_calls = 0;
    c.wake().await.unwrap();
    let s = sim.lock().unwrap();
    assert!(s.outlet_on && s.firmware_mining, "{s:?}");
    let wakes = s.calls.iter().filter(|c| **c == "wake").count();
    // set-on gives 2 booting calls: two refused wakes, then one taken.
    assert_eq!(wakes, 3, "{:?}", s.calls);
    let on = s.calls.iter().position(|c| *c == "set-on").unwrap();
    let first_wake = s.calls.iter().position(|c| *c == "wake").unwrap();
    assert!(on < first_wake, "outlet first: {:?}", s.calls);
}

#[tokio::test(start_paused = true)]
async fn wake_with_the_outlet_on_is_a_plain_firmware_wake() {
    let (sim, c) = both(Sim::default());
    c.sleep().await.unwrap();
    sim.lock().unwrap().calls.clear();
    c.wake().await.unwrap();
    assert_eq!(sim.lock().unwrap().calls, ["read", "wake"]);
}

#[tokio::test(start_paused = true)]
async fn a_firmware_that_refuses_wake_for_good_is_not_retried() {
    struct Refuses;
    impl RigControl for Refuses {
        fn sleep(&self) -> BoxFuture<'_, Result<(), PortError>> {
            Box::pin(async { Ok(()) })
        }
        fn wake(&self) -> BoxFuture<'_, Result<(), PortError>> {
            Box::pin(async { Err(PortError::new(Side::Firmware, Retry::No, "bad password")) })
        }
        fn status(&self) -> BoxFuture<'_, Result<FirmwareStatus, PortError>> {
            Box::pin(async { Err(PortError::new(Side::Firmware, Retry::No, "bad password")) })
        }
        fn describe(&self) -> String {
            "refuses".into()
        }
    }
    let (sim, _, outlet) = rig(Sim::default());
    sim.lock().unwrap().outlet_on = false;
    let c = PowerPath::compose(Some(Arc::new(Refuses)), Some(outlet), bounds()).unwrap();
    let start = tokio::time::Instant::now();
    let e = c.wake().await.unwrap_err();
    assert!(e.message().contains("bad password"));
    assert!(start.elapsed() < Duration::from_secs(1), "not retried");
    assert!(sim.lock().unwrap().outlet_on);
}
