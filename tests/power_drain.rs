//! Workload switching end to end over 127.0.0.1: the proxy with power control, rigs that
//! mine through it and answer a fake LuxOS management API, `ctl` requests over the admin
//! socket. GPU demand arrives through the socket here; tests/power_slurm.rs does the same
//! with a real Slurm.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use hashshift::config::Config;
use hashshift::control::admin::ctl::call;
use hashshift::control::admin::protocol::{Command, Request, Response, Target};
use hashshift::firmware::fake::{FakePhase, RigProfile};
use hashshift::proxy::Proxy;
use hashshift::testpool::{TestPool, TestPoolConfig};
use serde_json::Value;
use support::rig::SimRig;

const DIFF: f64 = 1e-6;

/// A rig that sleeps in 0.3 s and wakes in 1 s.
fn quick() -> RigProfile {
    RigProfile {
        sleep_delay: Duration::from_millis(300),
        wake_delay: Duration::from_secs(1),
        ..RigProfile::default()
    }
}

struct Site {
    pool: TestPool,
    proxy: Option<Proxy>,
    dir: PathBuf,
    rigs: Vec<SimRig>,
}

impl Site {
    fn config(&self, cap_kw: f64) -> Result<Config> {
        let mut text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
             [vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n\
             [admin]\nsocket = {:?}\nstate_dir = {:?}\n\
             [power]\nsite_cap_kw = {cap_kw}\nresume_batch = 1\nresume_interval_secs = 1.0\n\
             confirm_deadline_secs = 20.0\nhysteresis_kw = 0.1\nstatus_poll_secs = 0.5\nquiet_secs = 1.0\n\
             [[rig_group]]\nname = \"s19\"\nmodel = \"S19\"\nrated_w = 3250.0\nj_per_th = 34.2\n\
             firmware = \"luxos\"\nworkers = [\"farm.rig*\"]\n",
            self.pool.addr(),
            self.dir.join("admin.sock").display().to_string(),
            self.dir.join("state").display().to_string(),
        );
        for r in &self.rigs {
            text += &format!(
                "[[rig]]\nworker = \"{}\"\nmanagement = \"{}\"\n",
                r.worker,
                r.firmware.addr()
            );
        }
        Ok(Config::from_toml(&text)?)
    }

    /// A pool, `n` rigs (firmware up, not mining until the proxy is up) and the proxy.
    async fn start(n: usize, cap_kw: f64) -> Result<Site> {
        let pool = TestPool::start(TestPoolConfig {
            difficulty: DIFF,
            name: "a".into(),
            ..TestPoolConfig::default()
        })
        .await?;
        let dir = std::env::temp_dir().join(format!("hashshift-power-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let mut site = Site {
            pool,
            proxy: None,
            dir,
            rigs: Vec::new(),
        };
        // Management APIs first (the config lists them), then the proxy, then mining.
        for i in 0..n {
            site.rigs
                .push(SimRig::new(&format!("farm.rig{i}"), quick()).await?);
        }
        let proxy = Proxy::start(&site.config(cap_kw)?).await?;
        let addr = proxy.listen_addrs()[0];
        site.proxy = Some(proxy);
        for r in &mut site.rigs {
            r.mine(addr);
        }
        Ok(site)
    }

    async fn restart(&mut self, cap_kw: f64) -> Result<()> {
        let addr = self.proxy()?.listen_addrs()[0];
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_secs(2)).await;
        }
        let mut config = self.config(cap_kw)?;
        config.downstream[0].listen = addr;
        self.proxy = Some(Proxy::start(&config).await?);
        Ok(())
    }

    fn proxy(&self) -> Result<&Proxy> {
        self.proxy
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("proxy down"))
    }

    async fn ask(&self, command: Command) -> Result<Value> {
        let r = call(
            &self.dir.join("admin.sock"),
            &Request {
                command,
                by: Some("noc".into()),
            },
        )
        .await?;
        match r {
            Response {
                ok: true,
                result: Some(v),
                ..
            } => Ok(v),
            other => bail!("refused: {other:?}"),
        }
    }

    /// Waits (up to `secs`) until `check` holds on `ctl rigs` or `ctl power`.
    async fn until(
        &self,
        what: &str,
        secs: u64,
        command: Command,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.ask(command.clone()).await?;
            if check(&v) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {what}; last: {v:#}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn phases(&self) -> Vec<FakePhase> {
        self.rigs.iter().map(|r| r.phase()).collect()
    }

    async fn stop(mut self) -> Result<()> {
        for r in self.rigs.drain(..) {
            r.stop().await;
        }
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_secs(2)).await;
        }
        self.pool.shutdown().await;
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

fn states(rigs: &Value) -> Vec<String> {
    rigs.as_array()
        .into_iter()
        .flatten()
        .map(|r| r["state"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn all_mining_on_firmware_figures(rigs: &Value, n: usize) -> bool {
    let a = rigs.as_array().map(Vec::as_slice).unwrap_or_default();
    a.len() == n
        && a.iter()
            .all(|r| r["state"] == "mining" && r["power_source"] == "firmware")
}

/// Index of the first audit event matching.
fn position(events: &Value, pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.as_array()?.iter().position(pred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_demand_drains_the_rigs_it_needs_before_the_budget_grows_and_resumes_them_after()
-> Result<()> {
    let site = Site::start(3, 10.0).await?;
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
    let confirmed: Vec<usize> = events
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, e)| {
            e["what"] == "confirmed"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("\"to\":\"asleep\""))
        })
        .map(|(i, _)| i)
        .collect();
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
    // The woken rigs reconnected and mine.
    assert!(
        site.rigs
            .iter()
            .filter(|r| r.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2)
            .count()
            == 2
    );
    site.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_rig_stays_asleep_across_a_restart_until_an_operator_resumes_it() -> Result<()> {
    let mut site = Site::start(2, 10.0).await?;
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

    site.restart(10.0).await?;
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
    let site = Site::start(3, 10.0).await?;
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
