//! The controller against a fake management API and a fake PDU outlet over one simulated
//! rig, started as the proxy starts it ([`crate::control::power::start`]). Real (short)
//! time: the arbiter's deadlines are wall-clock, and the quiet check reads share times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control::arbiter::{RigId, RigState};
use crate::control::audit::AuditLog;
use crate::control::power::fakes::{FakeFirmware, FakeOutlet, SharedSim, Sim};
use crate::control::power::ports::{OutletControl, OutletFactory, RigControl};
use crate::control::power::rigs::{ControlFactory, PowerSource};
use crate::control::power::{PowerHandle, PowerView, adapters};
use crate::pool_link::ConnId;
use crate::pool_link::miner::MinerShared;
use crate::pool_link::report::{Fleet, MinerReport, PoolSnapshot};

/// One miner connection for the simulated rig, present (and sharing) while it hashes.
struct OneRig {
    sim: SharedSim,
    miner: Arc<MinerShared>,
}

impl Fleet for OneRig {
    fn miner_reports(&self) -> Vec<MinerReport> {
        let hashing = {
            let s = self.sim.lock().unwrap();
            s.outlet_on && s.firmware_mining
        };
        if !hashing {
            return Vec::new();
        }
        self.miner.touch();
        vec![MinerReport {
            shared: self.miner.clone(),
            pool: 0,
            hashrate: 100e12,
        }]
    }

    fn pools(&self) -> Vec<PoolSnapshot> {
        Vec::new()
    }

    fn pool_urls(&self) -> Vec<String> {
        Vec::new()
    }

    fn kick(&self, _id: ConnId) -> bool {
        true
    }
}

struct Site {
    sim: SharedSim,
    power: PowerHandle,
    audit: Arc<AuditLog>,
    stop: CancellationToken,
    dir: std::path::PathBuf,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(sim: Sim) -> Site {
    let dir = std::env::temp_dir().join(format!("hashshift-pdu-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = Config::from_toml(&format!(
        r#"
[[downstream]]
protocol = "sv1"
listen = "127.0.0.1:0"
[[upstream]]
url = "stratum+tcp://127.0.0.1:3333"
user = "u"
[admin]
socket = "{dir}/ctl.sock"
state_dir = "{dir}"
[power]
site_cap_kw = 10.0
confirm_deadline_secs = 2.0
wake_deadline_secs = 20.0
status_poll_secs = 1.0
quiet_secs = 0.5
replace_after_secs = 1.5
resume_interval_secs = 1.0
hysteresis_kw = 0.5
[[rig_group]]
name = "g"
rated_w = 3000.0
firmware = "luxos"
addresses = ["127.0.0.1/32"]
[[pdu]]
name = "pdu-a"
address = "127.0.0.1:16100"
profile = "apc-rpdu"
outlets = 24
version = "2c"
community_env = "HASHSHIFT_TEST_NO_SUCH_VAR"
insecure_v2c = true
[[rig]]
worker = "r1"
group = "g"
management = "127.0.0.1:4028"
pdu = "pdu-a"
outlet = 7
"#,
        dir = dir.display()
    ))
    .unwrap();
    let sim: SharedSim = Arc::new(Mutex::new(sim));
    let miner = Arc::new(MinerShared::new(1, "127.0.0.1:50000".parse().unwrap()));
    miner.set_worker("r1");
    let fleet = Arc::new(OneRig {
        sim: sim.clone(),
        miner,
    });
    let fw_sim = sim.clone();
    let factory: ControlFactory =
        Arc::new(move |_, _| Some(Arc::new(FakeFirmware(fw_sim.clone())) as Arc<dyn RigControl>));
    let outlet_sim = sim.clone();
    let outlets: OutletFactory = Arc::new(move |pdu: &str, outlet: u16| {
        (pdu == "pdu-a" && outlet == 7)
            .then(|| Arc::new(FakeOutlet(outlet_sim.clone())) as Arc<dyn OutletControl>)
    });
    let audit = AuditLog::in_memory();
    let stop = CancellationToken::new();
    let power = crate::control::power::start(
        &config,
        fleet,
        audit.clone(),
        factory,
        Some(outlets),
        Arc::new(adapters::SocketOnly),
        stop.clone(),
        &TaskTracker::new(),
        crate::control::power::persist::Storage::File { reset: false },
        &crate::supervisor::Supervisor::new(None),
    )
    .unwrap()
    .unwrap();
    Site {
        sim,
        power,
        audit,
        stop,
        dir,
    }
}

impl Site {
    /// Waits (at most `secs`) until the view satisfies `ok`.
    async fn until(&self, secs: u64, what: &str, ok: impl Fn(&PowerView) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let view = self.power.fresh_view().await.unwrap();
            if ok(&view) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {secs} s; rig {:?}; audit {:#?}",
                view.rigs.get(&RigId::from("r1")),
                self.audit.recent(50)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pdu_cut_audits(&self) -> Vec<String> {
        self.audit
            .recent(200)
            .into_iter()
            .filter(|e| e.what == "pdu-cut")
            .map(|e| e.detail)
            .collect()
    }
}

fn rig(view: &PowerView) -> Option<&crate::control::power::RigPower> {
    view.rigs.get(&RigId::from("r1"))
}

/// Issue 14 item 3(a): a rig whose firmware acknowledges sleep but keeps mining is cut at its
/// outlet at the confirm deadline, confirmed asleep only once its shares stopped, and the
/// GPU grant grows only then; woken, the outlet comes back on and the firmware is woken.
#[tokio::test]
async fn a_sleep_the_firmware_ignores_is_cut_at_the_outlet_then_confirmed_quiet() {
    let site = start(Sim {
        ignores_sleep: true,
        load_lingers: 1,
        boots_for: 0,
        ..Sim::default()
    });
    site.until(5, "rig counted, its path known", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Mining && r.control == "luxos+pdu")
    })
    .await;
    assert_eq!(
        rig(&site.power.view()).unwrap().management.as_deref(),
        Some("fake 127.0.0.1:4028 + pdu-a outlet 7")
    );
    // The PDU's meter (3200 W) beats the firmware's own figure (2900 W).
    site.until(5, "the PDU's reading counted", |v| {
        rig(v).is_some_and(|r| r.power_source == Some(PowerSource::Pdu) && r.power_w == 3200.0)
    })
    .await;
    site.power.gpu_request(8.0).await.unwrap();
    site.until(3, "told to sleep", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Draining)
    })
    .await;
    // The firmware took the command and keeps hashing: nothing confirms, nothing is cut yet.
    assert!(site.sim.lock().unwrap().outlet_on);
    assert!(site.power.view().snapshot.gpu_granted.kw() < 8.0);
    site.until(10, "cut, then confirmed asleep", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Asleep)
    })
    .await;
    let view = site.power.view();
    let r = rig(&view).unwrap();
    assert_eq!(r.control, "pdu-cut");
    assert_eq!((view.pdu_cuts.done, view.pdu_cuts.failed), (1, 0));
    assert!(!site.sim.lock().unwrap().outlet_on);
    let audits = site.pdu_cut_audits();
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits[0].starts_with("r1 started (fake 127.0.0.1:4028 + pdu-a outlet 7)"));
    assert_eq!(audits[1], "r1 done");
    site.until(3, "the grant grows into the freed power", |v| {
        v.snapshot.gpu_granted.kw() == 8.0
    })
    .await;

    // Demand gone: woken (staggered as any wake): outlet on, then firmware wake.
    site.power.gpu_request(0.0).await.unwrap();
    site.until(10, "woken through the outlet", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Mining && r.control == "luxos+pdu")
    })
    .await;
    let s = site.sim.lock().unwrap();
    assert!(s.outlet_on && s.firmware_mining);
    let on = s.calls.iter().rposition(|c| *c == "set-on").unwrap();
    assert!(
        s.calls[on..].contains(&"wake"),
        "firmware woken after power: {:?}",
        s.calls
    );
}

/// A failed wake is a person's call: never cut.
#[tokio::test]
async fn a_failed_wake_is_never_cut() {
    let site = start(Sim::default());
    site.until(5, "rig counted", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Mining)
    })
    .await;
    site.power.gpu_request(8.0).await.unwrap();
    site.until(5, "slept through its firmware", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Asleep)
    })
    .await;
    assert_eq!(rig(&site.power.view()).unwrap().control, "luxos+pdu");
    site.sim.lock().unwrap().wake_refused = true;
    site.power.gpu_request(0.0).await.unwrap();
    site.until(5, "wake failed and escalated", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Fault && r.escalated)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let view = site.power.view();
    assert_eq!((view.pdu_cuts.done, view.pdu_cuts.failed), (0, 0));
    assert!(site.pdu_cut_audits().is_empty());
    let s = site.sim.lock().unwrap();
    assert!(
        s.outlet_on && !s.calls.contains(&"set-off"),
        "{:?}",
        s.calls
    );
}

/// A cut the PDU refuses is audited and counted; the rig stays escalated and drawing.
#[tokio::test]
async fn a_failed_cut_leaves_the_rig_escalated_and_drawing() {
    let site = start(Sim {
        ignores_sleep: true,
        outlet_stuck: true,
        ..Sim::default()
    });
    site.until(5, "rig counted", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Mining && r.control == "luxos+pdu")
    })
    .await;
    site.power.gpu_request(8.0).await.unwrap();
    site.until(8, "the cut failed", |v| v.pdu_cuts.failed == 1)
        .await;
    let view = site.power.view();
    let r = rig(&view).unwrap();
    assert!(r.escalated && r.state != RigState::Asleep, "{r:?}");
    assert_eq!(r.control, "luxos+pdu", "not cut");
    assert!(
        view.snapshot.gpu_granted.kw() < 8.0,
        "no grant into power still drawn"
    );
    let audits = site.pdu_cut_audits();
    assert_eq!(audits.len(), 2, "{audits:?}");
    assert!(audits[0].starts_with("r1 started"));
    assert_eq!(audits[1], "r1 failed");
    let why = site
        .audit
        .recent(200)
        .into_iter()
        .rfind(|e| e.what == "pdu-cut")
        .and_then(|e| e.why);
    assert!(why.is_some_and(|w| w.contains("pdu timed out")));
}

/// A rig whose management API stops answering (here: every call refused while it "boots") is
/// never taken to be asleep; the first failure is audited with the adapter's words, once per
/// streak, and the recovery too.
#[tokio::test]
async fn failed_status_polls_are_audited_once_and_never_read_as_asleep() {
    let site = start(Sim::default());
    site.until(5, "rig counted", |v| {
        rig(v).is_some_and(|r| r.state == RigState::Mining)
    })
    .await;
    site.sim.lock().unwrap().booting_calls = u32::MAX;
    let audits = |what: &str| {
        site.audit
            .recent(200)
            .into_iter()
            .filter(|e| e.what == what)
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while audits("status-failed").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status-failed audit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several more polls fail meanwhile: still one audit, and the rig still counts as mining.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let failed = audits("status-failed");
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert!(
        failed[0]
            .why
            .as_deref()
            .is_some_and(|r| r.contains("booting")),
        "{failed:#?}"
    );
    assert_eq!(rig(&site.power.view()).unwrap().state, RigState::Mining);
    site.sim.lock().unwrap().booting_calls = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while audits("status-recovered").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no status-recovered audit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
