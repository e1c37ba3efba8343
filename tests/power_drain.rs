//! Workload switching end to end over 127.0.0.1: the proxy with power control, rigs that
//! mine through it and answer a fake LuxOS management API, `ctl` requests over the admin
//! socket. GPU demand arrives through the socket here; tests/power_slurm.rs does the same
//! with a real Slurm.

mod support;

use std::time::Duration;

use anyhow::Result;
use hashshift_proxy::control::admin::protocol::{Command, Target};
use hashshift_tools::fake_firmware::FakePhase;
use support::power_site::{
    Site, all_mining_on_firmware_figures, confirmed_asleep, position, states,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_demand_drains_the_rigs_it_needs_before_the_budget_grows_and_resumes_them_after()
-> Result<()> {
    let site = Site::start(3, 10.0, "").await?;
    site.until(
        "three rigs mining with firmware power figures",
        30,
        Command::Rigs,
        |r| all_mining_on_firmware_figures(r, 3),
    )
    .await?;

    // 5 kW for the GPU cluster: 9.75 kW of mining must come down to 5, so two rigs sleep.
    site.ask(Command::GpuRequest {
        kw: 5.0,
        reason: Some("training job 4812".into()),
    })
    .await?;
    let power = site
        .until("the 5 kW grant", 30, Command::Power, |p| {
            p["gpu_granted_kw"] == 5.0
        })
        .await?;
    assert_eq!(power["mining_kw"], 3.25, "{power:#}");
    let asleep = site
        .phases()
        .iter()
        .filter(|p| **p == FakePhase::Sleeping)
        .count();
    assert_eq!(asleep, 2, "{:?}", site.phases());
    let rigs = site.ask(Command::Rigs).await?;
    let mut s = states(&rigs);
    s.sort();
    assert_eq!(s, ["asleep", "asleep", "mining"]);
    for r in rigs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "asleep")
    {
        assert!(r["conn"].is_null(), "an asleep rig gets no work: {r}");
    }

    // Break before make: both sleeps confirmed before the grant was made.
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let confirmed = confirmed_asleep(&events);
    let grant = position(&events, |e| {
        e["what"] == "action"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("set_gpu_budget") && d.contains("5000"))
    });
    assert_eq!(confirmed.len(), 2, "{events:#}");
    assert!(
        grant.is_some_and(|g| confirmed.iter().all(|c| *c < g)),
        "{events:#}"
    );

    // The job ends: the grant goes back to 0 and the rigs resume, one per second.
    site.ask(Command::GpuRequest {
        kw: 0.0,
        reason: None,
    })
    .await?;
    site.until("every rig mining again", 30, Command::Rigs, |r| {
        states(r).iter().all(|s| s == "mining") && states(r).len() == 3
    })
    .await?;
    assert!(site.phases().iter().all(|p| *p == FakePhase::Mining));
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let wakes: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["what"] == "action" && e["detail"].as_str().is_some_and(|d| d.contains("\"wake\""))
        })
        .filter_map(|e| e["time"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(wakes.len(), 2, "{events:#}");
    let t = |s: &str| humantime::parse_rfc3339(s).map_err(anyhow::Error::from);
    let gap = t(&wakes[1])?.duration_since(t(&wakes[0])?)?;
    assert!(gap >= Duration::from_millis(900), "staggered: {gap:?}");
    // The woken rigs reconnect and mine (the firmware reports mining before the rig's Stratum
    // connection is back: on a loaded machine that can take a moment).
    let reconnected = || {
        site.rigs
            .iter()
            .filter(|r| r.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2)
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while reconnected() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reconnected(), 2);
    site.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_rig_stays_asleep_across_a_restart_until_an_operator_resumes_it() -> Result<()> {
    let mut site = Site::start(2, 10.0, "").await?;
    site.until("two rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 2)
    })
    .await?;
    let r = site
        .ask(Command::Drain {
            target: Target::Rig("farm.rig0".into()),
            reason: Some("fan replacement".into()),
        })
        .await?;
    assert_eq!(r["rigs"], serde_json::json!(["farm.rig0"]));
    site.until("rig0 asleep", 30, Command::Rigs, |r| {
        states(r) == ["asleep", "mining"]
    })
    .await?;

    site.restart(10.0, "").await?;
    // Nothing wakes it: watch for a few resume intervals.
    for _ in 0..30 {
        assert_eq!(
            site.rigs[0].phase(),
            FakePhase::Sleeping,
            "woken after a restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rigs = site.ask(Command::Rigs).await?;
    let rig0 = &rigs[0];
    assert_eq!(rig0["state"], "asleep", "{rig0}");
    assert!(
        rig0["pinned"]
            .as_str()
            .is_some_and(|p| p.contains("fan replacement")),
        "{rig0}"
    );
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    assert!(
        position(&events, |e| e["what"] == "restored").is_some(),
        "{events:#}"
    );

    site.ask(Command::Resume {
        target: Target::Rig("farm.rig0".into()),
        reason: Some("fan done".into()),
    })
    .await?;
    site.until("rig0 mining again", 30, Command::Rigs, |r| {
        states(r) == ["mining", "mining"]
    })
    .await?;
    site.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_curtailment_sheds_mining_first_and_ends_with_a_staggered_resume() -> Result<()> {
    let site = Site::start(3, 10.0, "").await?;
    site.until("three rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 3)
    })
    .await?;
    let until = std::time::SystemTime::now() + Duration::from_secs(3600);
    let until_unix = until.duration_since(std::time::UNIX_EPOCH)?.as_secs();
    site.ask(Command::Curtail {
        kw: 4.0,
        until_unix,
        reason: Some("ERCOT EEA".into()),
    })
    .await?;
    let power = site
        .until("mining under the 4 kW cap", 30, Command::Power, |p| {
            p["mining_kw"] == 3.25
        })
        .await?;
    assert_eq!(power["effective_cap_kw"], 4.0);
    assert_eq!(power["gpu_granted_kw"], 0.0);
    site.ask(Command::CurtailClear { reason: None }).await?;
    site.until("all mining after the curtailment", 30, Command::Rigs, |r| {
        states(r).iter().filter(|s| *s == "mining").count() == 3
    })
    .await?;
    site.stop().await
}
