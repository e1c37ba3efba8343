use super::*;
use crate::pool_link::miner::MinerShared;

fn group(firmware: bool) -> RigGroup {
    RigGroup {
        name: "g".into(),
        priority: 0,
        model: String::new(),
        rated_w: 3250.0,
        j_per_th: Some(34.0),
        firmware: firmware.then_some(crate::firmware::FirmwareKind::Luxos.into()),
        api_port: None,
        username: None,
        password_env: None,
        workers: vec!["*".into()],
        addresses: Vec::new(),
    }
}

fn rig(seen: Instant, control: Option<Arc<dyn RigControl>>) -> RigEntry {
    RigEntry {
        id: RigId("r".into()),
        group: Some(0),
        conns: Vec::new(),
        miners: Vec::new(),
        address: None,
        home: None,
        identity: Identity::Listed,
        control,
        hashrate: 50e12,
        last_share_unix_ms: 0,
        firmware_power: None,
        power_metered: false,
        cut_at: None,
        first_seen: seen,
        disconnected_since: None,
        conflicts: 0,
        last_conflict: None,
        announced: None,
    }
}

struct Silent;
impl RigControl for Silent {
    fn sleep(
        &self,
    ) -> super::super::ports::BoxFuture<'_, Result<(), super::super::ports::PortError>> {
        Box::pin(async { Ok(()) })
    }
    fn wake(
        &self,
    ) -> super::super::ports::BoxFuture<'_, Result<(), super::super::ports::PortError>> {
        Box::pin(async { Ok(()) })
    }
    fn status(
        &self,
    ) -> super::super::ports::BoxFuture<
        '_,
        Result<super::super::ports::FirmwareStatus, super::super::ports::PortError>,
    > {
        Box::pin(async {
            Err(super::super::ports::PortError::new(
                crate::error::Side::Firmware,
                crate::error::Retry::Yes,
                "silent",
            ))
        })
    }
    fn describe(&self) -> String {
        "silent".into()
    }
}

const IDENTITY: IdentitySettings = IdentitySettings {
    forget_unverified: Duration::from_secs(120),
    max_per_address: 4,
};

fn registry(groups: Vec<RigGroup>, overrides: &[RigOverride]) -> Registry {
    // Records every address the registry would send credentials to.
    Registry::new(
        groups,
        overrides,
        Arc::new(|_, _| Some(Arc::new(Silent) as Arc<dyn RigControl>)),
        Duration::from_secs(90),
        IDENTITY,
    )
}

fn miner(conn: u64, worker: &str, peer: &str, hashrate: f64) -> MinerReport {
    let shared = MinerShared::new(conn, peer.parse().unwrap());
    shared.set_worker(worker);
    MinerReport {
        shared: Arc::new(shared),
        pool: 0,
        hashrate,
    }
}

fn hall() -> RigGroup {
    RigGroup {
        addresses: vec!["10.0.1.0/24".into()],
        workers: vec!["farm.*".into()],
        ..group(true)
    }
}

#[test]
fn power_estimates_err_high_until_they_can_be_trusted() {
    let now = Instant::now();
    let old = now - ESTIMATE_MATURE - Duration::from_secs(1);
    let no_api = Registry::new(
        vec![group(false)],
        &[],
        Arc::new(|_, _| None),
        Duration::from_secs(90),
        IDENTITY,
    );
    // A young hashrate estimate is not trusted: nameplate.
    assert_eq!(no_api.power(&rig(now, None), now).1, PowerSource::Nameplate);
    // A mature one is: 50 TH/s × 34 J/TH.
    let (w, source, _) = no_api.power(&rig(old, None), now);
    assert_eq!((w.round(), source), (1700.0, PowerSource::Efficiency));
    // A rig whose management API will report: nameplate until it does.
    let api = Registry::new(
        vec![group(true)],
        &[],
        Arc::new(|_, _| None),
        Duration::from_secs(90),
        IDENTITY,
    );
    let mut r = rig(old, Some(Arc::new(Silent)));
    assert_eq!(api.power(&r, now).1, PowerSource::Nameplate);
    r.firmware_power = Some((3010.0, now));
    assert_eq!(
        api.power(&r, now),
        (3010.0, PowerSource::Firmware, Some(Duration::ZERO))
    );
    // A stale reading is not used.
    r.firmware_power = Some((3010.0, now - Duration::from_secs(91)));
    assert_eq!(api.power(&r, now).1, PowerSource::Nameplate);
}

#[test]
fn unverified_workers_count_what_their_shares_prove_and_expire() {
    let now = Instant::now();
    let mut reg = registry(vec![hall()], &[]);
    // A made-up name that never submits: 0 W, not the nameplate.
    reg.sync(&[miner(1, "ghost-1a2b3c4d", "10.9.9.9:4000", 0.0)], now);
    let ghost = &reg.rigs[&RigId("ghost-1a2b3c4d".into())];
    assert_eq!(ghost.identity, Identity::Unverified);
    assert!(ghost.control.is_none(), "no group allows its address");
    assert_eq!(reg.power(ghost, now).0, 0.0);
    // 100 TH/s × 34 J/TH, capped at the nameplate.
    reg.sync(&[miner(1, "ghost-1a2b3c4d", "10.9.9.9:4000", 100e12)], now);
    let ghost = &reg.rigs[&RigId("ghost-1a2b3c4d".into())];
    assert_eq!(reg.power(ghost, now).0, 3250.0);
    reg.sync(&[miner(1, "ghost-1a2b3c4d", "10.9.9.9:4000", 50e12)], now);
    let ghost = &reg.rigs[&RigId("ghost-1a2b3c4d".into())];
    assert_eq!(reg.power(ghost, now).0.round(), 1700.0);
    // Gone: still counted at its last estimate for forget_unverified, then forgotten.
    reg.sync(&[], now);
    let ghost = &reg.rigs[&RigId("ghost-1a2b3c4d".into())];
    assert_eq!(reg.power(ghost, now).0.round(), 1700.0);
    assert!(reg.expire(now + Duration::from_secs(119)).is_empty());
    let gone = reg.expire(now + Duration::from_secs(120));
    assert_eq!(gone.len(), 1);
    assert!(reg.rigs.is_empty());
}

#[test]
fn credentials_go_only_where_the_config_allows() {
    let now = Instant::now();
    let listed = RigOverride {
        worker: "farm.nat".into(),
        group: Some("g".into()),
        management: Some("10.0.9.17:14028".parse().unwrap()),
        rated_w: None,
        pdu: None,
        outlet: None,
    };
    let mut reg = registry(vec![hall()], &[listed]);
    reg.sync(
        &[
            // Inside the group's range: its API is asked at its address.
            miner(1, "farm.a", "10.0.1.5:4000", 0.0),
            // The right name from outside the range: not the group, no API, no credentials.
            miner(2, "farm.b", "192.0.2.7:4000", 0.0),
            // Listed: its configured management address.
            miner(3, "farm.nat", "10.0.1.17:4000", 0.0),
        ],
        now,
    );
    let a = &reg.rigs[&RigId("farm.a".into())];
    assert!(a.control.is_some());
    assert_eq!(a.identity, Identity::Unverified);
    let b = &reg.rigs[&RigId("farm.b".into())];
    assert!(b.control.is_none() && b.group.is_none());
    assert_eq!(
        reg.rigs[&RigId("farm.nat".into())].identity,
        Identity::Listed
    );
    // Its API answers: it holds budget now, at its nameplate until it reports power.
    assert!(reg.answered(&RigId("farm.a".into())));
    let a = &reg.rigs[&RigId("farm.a".into())];
    assert_eq!(a.identity, Identity::Answered);
    assert_eq!(reg.power(a, now), (3250.0, PowerSource::Nameplate, None));
    // A rig without an API client cannot be verified by an answer.
    assert!(!reg.answered(&RigId("farm.b".into())));
    // Known rigs are not forgotten when they leave.
    reg.sync(&[], now);
    let gone: Vec<_> = reg
        .expire(now + Duration::from_secs(3600))
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(gone, vec!["farm.b".to_owned()]);
}

#[test]
fn a_known_rig_is_not_moved_by_a_stratum_peer() {
    let now = Instant::now();
    let mut reg = registry(vec![hall()], &[]);
    reg.sync(&[miner(1, "farm.a", "10.0.1.5:4000", 0.0)], now);
    assert!(reg.answered(&RigId("farm.a".into())));
    // The same name from another address, while the rig is connected and after it left.
    let report = reg.sync(
        &[
            miner(1, "farm.a", "10.0.1.5:4000", 0.0),
            miner(2, "farm.a", "10.0.1.66:4000", 10e12),
        ],
        now,
    );
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].0, RigId("farm.a".into()));
    let report = reg.sync(&[miner(2, "farm.a", "10.0.1.66:4000", 10e12)], now);
    assert!(
        report.conflicts.is_empty(),
        "each connection is reported once"
    );
    let a = &reg.rigs[&RigId("farm.a".into())];
    assert_eq!(a.home, Some("10.0.1.5".parse().unwrap()));
    assert!(a.conns.is_empty());
    assert_eq!(a.conflicts, 2);
    assert_eq!(a.last_conflict, Some("10.0.1.66:4000".parse().unwrap()));
    // The claimant counts on its own, unverified, at what its shares prove.
    let alias = &reg.rigs[&RigId("farm.a@10.0.1.66".into())];
    assert_eq!(alias.identity, Identity::Unverified);
    assert_eq!(alias.conns, vec![2]);
    assert_eq!(reg.power(alias, now).0.round(), 340.0);
    // An unproven name moves with its miner once the old address is gone.
    reg.sync(&[miner(3, "farm.c", "10.0.1.7:4000", 0.0)], now);
    reg.sync(&[], now);
    reg.sync(&[miner(4, "farm.c", "10.0.1.8:4000", 0.0)], now);
    assert_eq!(
        reg.rigs[&RigId("farm.c".into())].home,
        Some("10.0.1.8".parse().unwrap())
    );
    assert!(!reg.rigs.contains_key(&RigId("farm.c@10.0.1.8".into())));
}

#[test]
fn an_address_holds_a_few_unverified_rigs_and_the_rest_count_together() {
    let now = Instant::now();
    let mut reg = registry(vec![hall()], &[]);
    let miners: Vec<MinerReport> = (0..20)
        .map(|i| miner(i, &format!("ghost-{i}"), "10.9.9.9:4000", 1e12))
        .collect();
    let report = reg.sync(&miners, now);
    assert_eq!(report.refused.len(), 16);
    assert!(report.refused.iter().all(|r| r.2 == Refusal::PerAddress));
    assert_eq!(reg.rigs.len(), 5, "4 rigs and the overflow rig");
    let overflow = &reg.rigs[&RigId("overflow@10.9.9.9".into())];
    assert_eq!(overflow.conns.len(), 16);
    assert_eq!(reg.power(overflow, now).0.round(), 16.0 * 34.0);
    // Reported once per connection.
    assert!(reg.sync(&miners, now).refused.is_empty());
}

#[test]
fn forget_is_refused_while_connected() {
    let now = Instant::now();
    let mut reg = registry(vec![hall()], &[]);
    reg.sync(&[miner(1, "farm.a", "10.0.1.5:4000", 0.0)], now);
    let id = RigId("farm.a".into());
    assert!(reg.forget(&id).unwrap_err().contains("connected"));
    reg.sync(&[], now);
    reg.forget(&id).unwrap();
    assert!(reg.rigs.is_empty());
}

#[test]
fn identities_survive_a_restart() {
    let now = Instant::now();
    let mut reg = registry(vec![hall()], &[]);
    reg.sync(&[miner(1, "farm.a", "10.0.1.5:4000", 0.0)], now);
    reg.answered(&RigId("farm.a".into()));
    let known = reg.known();
    let mut after = registry(vec![hall()], &[]);
    after.ensure(&RigId("farm.a".into()), known.first(), now);
    let a = &after.rigs[&RigId("farm.a".into())];
    assert_eq!(a.identity, Identity::Answered);
    assert!(a.control.is_some(), "its API at its known address");
    // Not forgotten while away; still bound to its address.
    assert!(after.expire(now + Duration::from_secs(3600)).is_empty());
    let report = after.sync(&[miner(9, "farm.a", "10.0.1.99:4000", 0.0)], now);
    assert_eq!(report.conflicts.len(), 1);
}

#[test]
fn listed_rigs_count_before_they_connect_and_share_times_are_read_live() {
    let now = Instant::now();
    let listed = RigOverride {
        worker: "farm.z".into(),
        group: None,
        management: Some("10.0.1.30:4028".parse().unwrap()),
        rated_w: None,
        pdu: None,
        outlet: None,
    };
    let mut reg = registry(vec![hall()], &[listed]);
    assert_eq!(reg.ensure_listed(now), vec![RigId("farm.z".into())]);
    assert!(reg.ensure_listed(now).is_empty(), "once");
    let z = &reg.rigs[&RigId("farm.z".into())];
    assert_eq!(z.identity, Identity::Listed);
    assert_eq!(z.group, Some(0), "its group from its management address");
    assert!(z.control.is_some());
    assert_eq!(reg.power(z, now), (3250.0, PowerSource::Nameplate, None));
    // It connects; a share accepted after the sync is seen at once.
    let m = miner(7, "farm.z", "10.0.1.30:4000", 0.0);
    let shared = m.shared.clone();
    reg.sync(&[m], now);
    assert_eq!(
        reg.rigs[&RigId("farm.z".into())].live_last_share_unix_ms(),
        0
    );
    shared.touch();
    assert!(reg.rigs[&RigId("farm.z".into())].live_last_share_unix_ms() > 0);
}

/// Issue 14: a `[[rig]]` with `pdu`/`outlet` gets its outlet; a PDU-only rig is counted
/// before it connects with its outlet as its only control, and gains nothing else; a
/// firmware rig known by its outlet alone gains its management API once it connects; a
/// claimant of its name from another address never reaches its outlet.
#[test]
fn listed_outlets_make_each_rig_s_control_path() {
    use crate::control::power::fakes::{FakeOutlet, Sim};
    use crate::control::power::path::PathBounds;
    use crate::control::power::ports::{ControlPath, OutletControl, OutletFactory};
    let now = Instant::now();
    let pdu_group = RigGroup {
        name: "dumb".into(),
        firmware: Some(crate::config::GroupControl::Pdu),
        workers: vec!["dumb.*".into()],
        ..group(false)
    };
    let listed = |worker: &str, group: &str, outlet: u16| RigOverride {
        worker: worker.into(),
        group: Some(group.into()),
        management: None,
        rated_w: None,
        pdu: Some("pdu-a".into()),
        outlet: Some(outlet),
    };
    let sim = Arc::new(std::sync::Mutex::new(Sim::default()));
    let outlets: OutletFactory = Arc::new(move |pdu: &str, n: u16| {
        (pdu == "pdu-a")
            .then(|| Arc::new(FakeOutlet(sim.clone())) as Arc<dyn OutletControl>)
            .filter(|_| n < 100)
    });
    let mut reg = registry(
        vec![hall(), pdu_group],
        &[
            listed("dumb.1", "dumb", 1),
            listed("farm.7", "g", 7),
            listed("farm.bad", "g", 100),
        ],
    )
    .with_outlets(Some(outlets), PathBounds::default());
    let mut new = reg.ensure_listed(now);
    new.sort();
    assert_eq!(
        new,
        [
            RigId("dumb.1".into()),
            RigId("farm.7".into()),
            RigId("farm.bad".into())
        ]
    );
    let path = |reg: &Registry, id: &str| {
        reg.rigs[&RigId(id.into())]
            .control
            .as_ref()
            .map(|c| c.path())
    };
    assert_eq!(path(&reg, "dumb.1"), Some(ControlPath::Pdu));
    // Not connected yet: its outlet is all it has.
    assert_eq!(path(&reg, "farm.7"), Some(ControlPath::Pdu));
    // The factory knows no such outlet: nothing.
    assert_eq!(path(&reg, "farm.bad"), None);
    reg.sync(
        &[
            miner(1, "farm.7", "10.0.1.7:4000", 1e14),
            miner(2, "dumb.1", "10.0.1.8:4000", 1e14),
        ],
        now,
    );
    assert_eq!(path(&reg, "farm.7"), Some(ControlPath::FirmwareAndPdu));
    assert_eq!(path(&reg, "dumb.1"), Some(ControlPath::Pdu));
    assert_eq!(
        reg.info(&reg.rigs[&RigId("farm.7".into())], now).path,
        ControlPath::FirmwareAndPdu
    );
    // Another address claims farm.7: its alias has the firmware of its own address at
    // most, never the outlet.
    reg.sync(
        &[
            miner(1, "farm.7", "10.0.1.7:4000", 1e14),
            miner(3, "farm.7", "10.0.1.99:4000", 1e14),
        ],
        now,
    );
    let alias = RigId("farm.7@10.0.1.99".into());
    assert_ne!(path(&reg, &alias.0), Some(ControlPath::FirmwareAndPdu));
    assert_ne!(path(&reg, &alias.0), Some(ControlPath::Pdu));
}

/// A rig whose outlet hashshift cut is still known as cut after a restart (its outlet stays
/// off until it is woken), and plans from before cuts existed read as not cut.
#[test]
fn a_cut_outlet_is_kept_across_a_restart() {
    let now = Instant::now();
    let mut reg = registry(vec![hall()], &[]);
    let id = RigId("farm.1".into());
    let known = KnownRig {
        id: id.clone(),
        identity: Identity::Answered,
        home: Some("10.0.1.1".parse().unwrap()),
        conflicts: 0,
        cut: true,
    };
    reg.ensure(&id, Some(&known), now);
    assert!(reg.rigs[&id].cut_at.is_some());
    assert_eq!(reg.known(), std::slice::from_ref(&known));
    let json = serde_json::to_string(&reg.known()).unwrap();
    assert!(json.contains(r#""cut":true"#), "{json}");
    let old: KnownRig =
        serde_json::from_str(r#"{"id":"farm.1","identity":"answered","home":"10.0.1.1"}"#).unwrap();
    assert!(!old.cut);
    reg.rigs.get_mut(&id).unwrap().cut_at = None;
    let json = serde_json::to_string(&reg.known()).unwrap();
    assert!(!json.contains("cut"), "not written when false: {json}");
}
