//! Rigs are machines, not names (issue 11, items 1 and 2), end to end over 127.0.0.1: made-up
//! worker names count only what their shares prove and are forgotten after they leave, one
//! address holds a few of them, a known rig's name used from another address is an identity
//! conflict that never re-points its management API, and `ctl forget` removes a rig that is
//! gone. Different source addresses come from binding 127.0.0.2 and 127.0.0.3 (all of
//! 127.0.0.0/8 is local).

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use hashshift_proxy::config::Config;
use hashshift_proxy::control::admin::ctl::call;
use hashshift_proxy::control::admin::protocol::{Command, Request, Response};
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::fake_firmware::{FakeLuxos, FakeLuxosConfig};
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use serde_json::Value;
use support::miner::Miner;
use support::power_site::{ask_at, until_at};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

struct Site {
    pool: TestPool,
    api: FakeLuxos,
    dir: PathBuf,
    proxy: Option<Proxy>,
}

impl Site {
    async fn start() -> Result<Site> {
        let pool = TestPool::start(TestPoolConfig {
            difficulty: 1e-6,
            name: "a".into(),
            ..TestPoolConfig::default()
        })
        .await?;
        let api = FakeLuxos::start(FakeLuxosConfig::default()).await?;
        let dir = std::env::temp_dir().join(format!("hashshift-ident-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let mut site = Site {
            pool,
            api,
            dir,
            proxy: None,
        };
        site.proxy = Some(Proxy::start(&site.config(None)?).await?);
        Ok(site)
    }

    /// The group's rigs are `farm.*` at 127.0.0.1 only; their LuxOS API is on the fake's port.
    fn config(&self, listen: Option<SocketAddr>) -> Result<Config> {
        let text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"{}\"\n\
             [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
             [vardiff]\ninitial = 1e-6\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n\
             [admin]\nsocket = {:?}\nstate_dir = {:?}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [power]\nsite_cap_kw = 100.0\nstatus_poll_secs = 0.5\nquiet_secs = 1.0\n\
             forget_unverified_secs = 2.0\nmax_rigs_per_address = 4\n\
             [[rig_group]]\nname = \"hall\"\nrated_w = 3250.0\nj_per_th = 34.0\n\
             firmware = \"luxos\"\napi_port = {}\nworkers = [\"farm.*\"]\naddresses = [\"127.0.0.1/32\"]\n",
            listen.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()),
            self.pool.addr(),
            self.dir.join("admin.sock").display().to_string(),
            self.dir.join("state").display().to_string(),
            self.api.addr().port(),
        );
        Ok(Config::from_toml(&text)?)
    }

    fn proxy(&self) -> Result<&Proxy> {
        self.proxy.as_ref().context("proxy down")
    }

    fn addr(&self) -> Result<SocketAddr> {
        Ok(self.proxy()?.listen_addrs()[0])
    }

    async fn restart(&mut self) -> Result<()> {
        let addr = self.addr()?;
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_secs(2)).await;
        }
        self.proxy = Some(Proxy::start(&self.config(Some(addr))?).await?);
        Ok(())
    }

    async fn call(&self, command: Command) -> Result<Response> {
        call(
            &self.dir.join("admin.sock"),
            &Request {
                command,
                by: Some("noc".into()),
            },
        )
        .await
    }

    async fn ask(&self, command: Command) -> Result<Value> {
        ask_at(&self.dir.join("admin.sock"), command).await
    }

    async fn until(
        &self,
        what: &str,
        command: Command,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        until_at(&self.dir.join("admin.sock"), what, 20, command, check).await
    }

    async fn metrics(&self) -> Result<String> {
        let addr = self.proxy()?.metrics_addr().context("no metrics")?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text)).await??;
        Ok(text)
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_secs(2)).await;
        }
        self.pool.shutdown().await;
        std::fs::remove_dir_all(&self.dir)?;
        Ok(())
    }
}

/// A miner connected from `source` (an address of 127.0.0.0/8), subscribed and authorized.
async fn miner_from(source: &str, proxy: SocketAddr, worker: &str) -> Result<Miner> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse()?)?;
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(proxy)).await??;
    let mut m = Miner::from_stream(stream);
    m.handshake(worker, None).await?;
    Ok(m)
}

fn rig<'a>(rigs: &'a Value, id: &str) -> Option<&'a Value> {
    rigs.as_array()?.iter().find(|r| r["id"] == id)
}

fn ids(rigs: &Value) -> Vec<String> {
    rigs.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect()
}

fn events_of(events: &Value, what: &str) -> Vec<Value> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["what"] == what)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_workers_hold_no_budget_and_are_forgotten() -> Result<()> {
    let mut site = Site::start().await?;
    let addr = site.addr()?;
    // 20 connections with made-up names from one address, held 3 s, never submitting.
    let mut ghosts = Vec::new();
    for i in 0..20 {
        ghosts.push(miner_from("127.0.0.3", addr, &format!("ghost-{i:08x}")).await?);
    }
    let rigs = site
        .until("the ghosts in the inventory", Command::Rigs, |r| {
            // Connections sharing one rig show as `RIG#CONN`.
            ids(r)
                .iter()
                .filter(|id| id.starts_with("overflow@127.0.0.3#"))
                .count()
                == 16
        })
        .await?;
    let named: Vec<String> = ids(&rigs)
        .into_iter()
        .filter(|id| id.starts_with("ghost-"))
        .collect();
    assert_eq!(named.len(), 4, "max_rigs_per_address: {rigs:#}");
    for r in rigs.as_array().into_iter().flatten() {
        assert_eq!(r["identity"], "unverified", "{r:#}");
        assert_eq!(
            r["power_w"].as_f64(),
            Some(0.0),
            "no shares, no power: {r:#}"
        );
    }
    let power = site.ask(Command::Power).await?;
    assert_eq!(power["mining_kw"].as_f64(), Some(0.0), "{power:#}");
    assert_eq!(power["identity"]["refused_per_address"], 16, "{power:#}");
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    assert_eq!(
        events_of(&events, "rig-cap").len(),
        16,
        "reported, never silently"
    );
    let metrics = site.metrics().await?;
    assert!(
        metrics.contains("hashshift_power_rigs_refused_total{reason=\"per_address\"} 16"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(ghosts);

    // forget_unverified_secs (2 s) after they left, they no longer count, and the plan on disk
    // no longer holds them.
    site.until("the ghosts forgotten", Command::Rigs, |r| {
        r.as_array().is_some_and(Vec::is_empty)
    })
    .await?;
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    assert_eq!(events_of(&events, "rig-forgotten").len(), 5, "{events:#}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let plan = std::fs::read_to_string(site.dir.join("state/power.json"))?;
    assert!(!plan.contains("ghost-"), "{plan}");
    // A restart brings none of them back.
    site.restart().await?;
    let rigs = site.ask(Command::Rigs).await?;
    assert!(ids(&rigs).is_empty(), "{rigs:#}");
    site.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_rigs_name_from_another_address_is_a_conflict_not_a_move() -> Result<()> {
    let mut site = Site::start().await?;
    let addr = site.addr()?;
    // A trap where a re-pointed management API would be: the conflicting peer's address with
    // the group's API port. No one may ever connect to it.
    let trap = TcpListener::bind(SocketAddr::new(
        "127.0.0.2".parse()?,
        site.api.addr().port(),
    ))
    .await?;
    let trapped = Arc::new(AtomicUsize::new(0));
    let count = trapped.clone();
    let trap_task = tokio::spawn(async move {
        while let Ok((_s, _)) = trap.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });

    // The real rig: its management API answers at its address, so it holds budget.
    let real = miner_from("127.0.0.1", addr, "farm.a").await?;
    site.until("farm.a verified", Command::Rigs, |r| {
        rig(r, "farm.a").is_some_and(|a| a["identity"] == "answered")
    })
    .await?;
    // Another address claims the name.
    let impostor = miner_from("127.0.0.2", addr, "farm.a").await?;
    let rigs = site
        .until("the claim counted apart", Command::Rigs, |r| {
            rig(r, "farm.a@127.0.0.2").is_some()
        })
        .await?;
    let a = rig(&rigs, "farm.a").context("farm.a")?;
    assert_eq!(a["identity_conflicts"], 1, "{a:#}");
    assert!(
        a["last_conflict"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.2:")),
        "{a:#}"
    );
    assert!(
        a["address"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "not moved: {a:#}"
    );
    let claim = rig(&rigs, "farm.a@127.0.0.2").context("claim")?;
    assert_eq!(claim["identity"], "unverified", "{claim:#}");
    assert!(claim["management"].is_null(), "no credentials: {claim:#}");
    let one = site
        .ask(Command::Rig {
            id: "farm.a".into(),
        })
        .await?;
    assert_eq!(one["identity_conflicts"], 1);
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let conflicts = events_of(&events, "identity-conflict");
    assert_eq!(conflicts.len(), 1, "{events:#}");
    assert!(
        conflicts[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("127.0.0.2")
    );
    assert!(
        site.metrics()
            .await?
            .contains("hashshift_rig_identity_conflicts_total 1")
    );
    // The real rig leaves, the impostor stays: the name still does not move.
    drop(real);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rigs = site.ask(Command::Rigs).await?;
    let a = rig(&rigs, "farm.a").context("farm.a kept")?;
    assert!(a["conn"].is_null(), "{a:#}");
    assert!(
        a["management"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:")),
        "{a:#}"
    );
    assert_eq!(
        trapped.load(Ordering::SeqCst),
        0,
        "credentials went to a stratum peer"
    );

    // `ctl forget`: refused while connected, audited when done, not back after a restart.
    let refused = site
        .call(Command::Forget {
            id: "farm.a@127.0.0.2".into(),
            reason: None,
        })
        .await?;
    assert!(!refused.ok);
    assert!(refused.error.unwrap_or_default().contains("connected"));
    site.ask(Command::Forget {
        id: "farm.a".into(),
        reason: Some("moved to hall b".into()),
    })
    .await?;
    let rigs = site.ask(Command::Rigs).await?;
    assert!(rig(&rigs, "farm.a").is_none(), "{rigs:#}");
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let forgotten = events_of(&events, "rig-forgotten");
    assert_eq!(forgotten.len(), 1, "{events:#}");
    assert_eq!(forgotten[0]["why"], "moved to hall b");
    let unknown = site
        .call(Command::Forget {
            id: "farm.nope".into(),
            reason: None,
        })
        .await?;
    assert!(!unknown.ok);
    drop(impostor);
    site.restart().await?;
    let rigs = site.ask(Command::Rigs).await?;
    assert!(rig(&rigs, "farm.a").is_none(), "{rigs:#}");
    assert_eq!(trapped.load(Ordering::SeqCst), 0);
    trap_task.abort();
    site.stop().await
}
