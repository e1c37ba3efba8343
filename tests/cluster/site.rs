//! The site the cluster tests (tests/cluster.rs) drive: a private etcd, one test pool, rigs
//! whose LuxOS management APIs are in-process fakes ([`SimRig`]), and three real `hashshift`
//! processes with the same site config except their name, ports and folders.
//!
//! Each instance listens on a port picked once, so a restarted instance comes back where its
//! miners look for it. Its log goes to `<dir>/<instance>/hashshift.log`; a failing test keeps
//! the folder and prints the logs' tails ([`ClusterSite::finish`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hashshift_proxy::control::admin::protocol::{Command, Response};
use hashshift_tools::fake_firmware::{FakePhase, RigProfile};
use hashshift_tools::testpool::TestPool;
use serde_json::Value;

use crate::fault_site::{Proc, RIG_KW, ask, ask_ok, free_port};
use crate::support::etcd::{Etcd, Kv};
use crate::support::rig::SimRig;

/// Share difficulty at the pool (as in the other power tests).
const DIFF: f64 = 1e-6;
/// The site's name in etcd.
pub const SITE: &str = "plant-7";
/// Firmware requests that act (LuxOS: a session, the curtail, its end). Status reads
/// (`config`, `power`, `summary`, `stats`) are not counted.
const COMMANDS: [&str; 3] = ["logon", "curtail", "logoff"];

/// What a test's site looks like.
pub struct Options {
    /// Rigs (`farm.rig0`, ...), 3.25 kW each.
    pub rigs: usize,
    /// `[power] site_cap_kw`.
    pub cap_kw: f64,
    /// `[cluster] lease_ttl_secs`.
    pub ttl_secs: u64,
    /// The rigs' firmware timing.
    pub profile: RigProfile,
    /// Rig `i`'s pool list as instance indexes, given the first leader's index (default: one
    /// instance each, round robin).
    pub pools: fn(usize, usize) -> Vec<usize>,
    /// etcd members (1 or 3).
    pub etcd_members: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rigs: 3,
            cap_kw: 10.0,
            ttl_secs: 2,
            profile: RigProfile {
                sleep_delay: Duration::from_millis(300),
                wake_delay: Duration::from_secs(1),
                ..RigProfile::default()
            },
            pools: |i, _| vec![i % 3],
            etcd_members: 1,
        }
    }
}

/// One `hashshift` process of the site.
pub struct Instance {
    /// `[cluster] instance`.
    pub name: String,
    /// Its folder (config, log, admin socket, state).
    pub dir: PathBuf,
    /// Where its miners connect.
    pub listen: SocketAddr,
    /// Its web API's port.
    pub http: u16,
    proc: Option<Proc>,
    /// Whether it was sent SIGSTOP and not SIGCONT yet.
    pub frozen: bool,
}

impl Instance {
    /// Its admin socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    /// Starts (or restarts) the process on its config.
    pub fn start(&mut self) -> Result<()> {
        self.proc = Some(Proc::start(
            &self.dir.join("hashshift.toml"),
            &self.dir.join("hashshift.log"),
        )?);
        self.frozen = false;
        Ok(())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(p) = self.proc.take() {
            let signal = p.kill9()?;
            if signal != Some(9) {
                bail!("{} had already ended ({signal:?})", self.name);
            }
        }
        self.frozen = false;
        Ok(())
    }

    /// How it ended, if its process ended without our kill.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(Proc::exited)
    }

    /// `kill -STOP` (true) or `kill -CONT` (false).
    pub fn freeze(&mut self, on: bool) -> Result<()> {
        let pid = self.proc.as_ref().context("not running")?.pid();
        let sig = if on { "-STOP" } else { "-CONT" };
        let status = std::process::Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
        self.frozen = on;
        Ok(())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("hashshift.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Its audit log as written to disk (`state/audit.jsonl`).
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("state").join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The site: etcd, pool, rigs, three instances.
pub struct ClusterSite {
    pub etcd: Etcd,
    pub pool: TestPool,
    pub rigs: Vec<SimRig>,
    pub instances: Vec<Instance>,
    pub dir: PathBuf,
    /// `[cluster] lease_ttl_secs`.
    pub ttl: Duration,
}

/// One instance's config.
fn config(
    etcd: &Etcd,
    pool: SocketAddr,
    instance: &Instance,
    options: &Options,
    rigs: &[SimRig],
) -> String {
    let (dir, name, listen, http) = (
        &instance.dir,
        &instance.name,
        instance.listen,
        instance.http,
    );
    let mut text = format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"{listen}\"\n\
         [[upstream]]\nurl = \"stratum+tcp://{pool}\"\nuser = \"farm\"\n\
         [vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n\
         [admin]\nsocket = {:?}\nstate_dir = {:?}\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\ntoken_file = {:?}\n\
         [power]\nsite_cap_kw = {}\nresume_batch = 1\nresume_interval_secs = 1.0\n\
         confirm_deadline_secs = 20.0\nhysteresis_kw = 0.1\nstatus_poll_secs = 0.5\nquiet_secs = 1.0\n\
         [cluster]\netcd = {}\nsite = \"{SITE}\"\ninstance = \"{name}\"\nlease_ttl_secs = {}\n\
         [[rig_group]]\nname = \"s19\"\nmodel = \"S19\"\nrated_w = 3250.0\nj_per_th = 34.2\n\
         firmware = \"luxos\"\nworkers = [\"farm.rig*\"]\n",
        dir.join("admin.sock").display().to_string(),
        dir.join("state").display().to_string(),
        dir.join("token").display().to_string(),
        options.cap_kw,
        etcd.toml_endpoints(),
        options.ttl_secs,
    );
    for r in rigs {
        text += &format!(
            "[[rig]]\nworker = \"{}\"\nmanagement = \"{}\"\n",
            r.worker,
            r.firmware.addr()
        );
    }
    text
}

/// Instance names: distinct enough that finding one in a JSON text means it.
pub const NAMES: [&str; 3] = ["hs-a", "hs-b", "hs-c"];

impl ClusterSite {
    /// Starts etcd, the pool, the rigs' APIs, the three instances, and waits for a
    /// leader; then the rigs mine. `None` when etcd is not installed (and not required).
    pub async fn start(options: Options) -> Result<Option<ClusterSite>> {
        let Some(etcd) = Etcd::start(options.etcd_members)? else {
            return Ok(None);
        };
        let pool = crate::support::site::pool_at("a", DIFF).await?;
        let dir = std::env::temp_dir().join(format!("hashshift-cluster-{}", rand::random::<u64>()));
        let mut rigs = Vec::new();
        for i in 0..options.rigs {
            rigs.push(SimRig::new(&format!("farm.rig{i}"), options.profile).await?);
        }
        let mut instances = Vec::new();
        for name in NAMES {
            let idir = dir.join(name);
            std::fs::create_dir_all(&idir)?;
            std::fs::write(idir.join("token"), "cluster-test-token\n")?;
            let instance = Instance {
                name: name.to_owned(),
                dir: idir,
                listen: format!("127.0.0.1:{}", free_port()?).parse()?,
                http: free_port()?,
                proc: None,
                frozen: false,
            };
            let text = config(&etcd, pool.addr(), &instance, &options, &rigs);
            std::fs::write(instance.dir.join("hashshift.toml"), text)?;
            instances.push(instance);
        }
        let mut site = ClusterSite {
            etcd,
            pool,
            rigs,
            instances,
            dir,
            ttl: Duration::from_secs(options.ttl_secs),
        };
        for i in 0..3 {
            site.instances[i].start()?;
        }
        let up = async {
            for i in 0..3 {
                site.wait_up(i, Duration::from_secs(60)).await?;
            }
            site.leader(&[0, 1, 2], Duration::from_secs(30)).await
        };
        let leader = match up.await {
            Ok(l) => l,
            Err(e) => bail!("the site did not come up: {e:#}\n{}", site.dump()),
        };
        for i in 0..site.rigs.len() {
            let addrs = (options.pools)(i, leader)
                .into_iter()
                .map(|k| site.instances[k].listen)
                .collect();
            site.rigs[i].mine_any(addrs);
        }
        Ok(Some(site))
    }

    /// Waits until instance `i` answers `cluster` with a role other than `starting`.
    pub async fn wait_up(&self, i: usize, within: Duration) -> Result<Value> {
        self.until(
            i,
            "a role other than starting",
            within,
            Command::Cluster,
            |v| v["role"].as_str().is_some_and(|r| r != "starting"),
        )
        .await
    }

    /// `{"cmd":"cluster"}` on instance `i`: its result.
    pub async fn cluster(&self, i: usize) -> Result<Value> {
        self.ask_ok(i, Command::Cluster).await
    }

    /// Who leads according to instance `i` (`None`: nobody, or it does not answer).
    pub async fn leader_per(&self, i: usize) -> Option<(String, String)> {
        let v = self.cluster(i).await.ok()?;
        let role = v["role"].as_str()?.to_owned();
        let leader = v["leader"]["instance"].as_str().unwrap_or("").to_owned();
        Some((role, leader))
    }

    /// Waits until one of `among` says it leads and every other one of `among` names it;
    /// returns its index.
    pub async fn leader(&self, among: &[usize], within: Duration) -> Result<usize> {
        let deadline = Instant::now() + within;
        loop {
            let mut views = Vec::new();
            for &i in among {
                views.push((i, self.leader_per(i).await));
            }
            let leaders: Vec<usize> = views
                .iter()
                .filter(|(_, v)| v.as_ref().is_some_and(|(role, _)| role == "leader"))
                .map(|(i, _)| *i)
                .collect();
            if let [l] = leaders[..] {
                let name = &self.instances[l].name;
                if views
                    .iter()
                    .all(|(_, v)| v.as_ref().is_some_and(|(_, leader)| leader == name))
                {
                    return Ok(l);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader among {among:?} after {within:?}: {views:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One admin request on instance `i`, as answered (refusals included).
    pub async fn ask(&self, i: usize, command: Command) -> Result<Response> {
        ask(&self.instances[i].socket(), command).await
    }

    /// One admin request on instance `i` that must succeed; its result.
    pub async fn ask_ok(&self, i: usize, command: Command) -> Result<Value> {
        ask_ok(&self.instances[i].socket(), command)
            .await
            .with_context(|| format!("on {}", self.instances[i].name))
    }

    /// Asks `command` on instance `i` until `check` holds (up to `within`).
    pub async fn until(
        &self,
        i: usize,
        what: &str,
        within: Duration,
        command: Command,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.ask_ok(i, command.clone()).await;
            if let Ok(v) = &last {
                if check(v) {
                    return Ok(v.clone());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what} on {}; last: {last:?}",
                    self.instances[i].name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Acting firmware requests (logon, curtail, logoff) each rig's API received so far.
    pub fn commands(&self) -> Vec<u64> {
        self.rigs
            .iter()
            .map(|r| {
                let c = r.firmware.counters();
                COMMANDS.iter().map(|k| c.get(k)).sum()
            })
            .collect()
    }

    /// Each rig's phase, as its fake firmware has it.
    pub fn phases(&self) -> Vec<FakePhase> {
        self.rigs.iter().map(SimRig::phase).collect()
    }

    /// Shares the proxy accepted from each rig so far.
    pub fn accepted(&self) -> Vec<u64> {
        self.rigs
            .iter()
            .map(|r| r.accepted.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    /// kW the rigs draw at full power unless the fakes say they sleep.
    pub fn awake_kw(&self) -> f64 {
        self.phases()
            .iter()
            .filter(|p| **p != FakePhase::Sleeping)
            .count() as f64
            * RIG_KW
    }

    /// The plan as stored in etcd.
    pub fn plan(&self) -> Result<Option<Kv>> {
        self.etcd.get(&format!("/hashshift/{SITE}/plan"))
    }

    /// The instances whose published inventory (`miners/<instance>` in etcd) lists
    /// `worker` as connected.
    pub fn published_on(&self, worker: &str) -> Result<Vec<usize>> {
        let quoted = format!("{worker:?}");
        let mut on = Vec::new();
        for (i, name) in NAMES.iter().enumerate() {
            let key = format!("/hashshift/{SITE}/miners/{name}");
            if self
                .etcd
                .get(&key)?
                .is_some_and(|kv| kv.value.contains(&quoted))
            {
                on.push(i);
            }
        }
        Ok(on)
    }

    /// Waits until `worker` is published as connected on exactly `instances`.
    pub async fn until_published(&self, worker: &str, instances: &[usize]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let on = self.published_on(worker)?;
            if on == instances {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{worker} published on {on:?}, expected {instances:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader key as stored in etcd.
    pub fn leader_key(&self) -> Result<Option<Kv>> {
        self.etcd.get(&format!("/hashshift/{SITE}/leader"))
    }

    /// `etcd_writes` as each instance reports it (`None` where it does not answer).
    pub async fn etcd_writes(&self) -> Vec<Option<u64>> {
        let mut out = Vec::new();
        for i in 0..self.instances.len() {
            if self.instances[i].frozen {
                out.push(None);
                continue;
            }
            out.push(
                self.cluster(i)
                    .await
                    .ok()
                    .and_then(|v| v["etcd_writes"].as_u64()),
            );
        }
        out
    }

    /// The instances' and etcd's log tails.
    pub fn dump(&self) -> String {
        let mut out = format!("site folder: {}\n", self.dir.display());
        for i in &self.instances {
            out += &format!("--- {} ---\n{}\n", i.name, i.log_tail(60));
        }
        out + &self.etcd.logs()
    }

    /// Runs a test's `body` on a site started with `options` and ends it with [`finish`]
    /// (`Ok` without running it when etcd is missing and not required: see [`Etcd::start`]).
    ///
    /// [`finish`]: ClusterSite::finish
    pub async fn run(
        options: Options,
        body: impl AsyncFnOnce(&mut ClusterSite) -> Result<()>,
    ) -> Result<()> {
        let Some(mut site) = ClusterSite::start(options).await? else {
            return Ok(());
        };
        let r = body(&mut site).await;
        site.finish(r).await
    }

    /// Ends the test: on success stops everything and removes the folder; on failure thaws
    /// any frozen instance, keeps the folder and adds the logs to the error.
    pub async fn finish(mut self, result: Result<()>) -> Result<()> {
        // An instance is only ever stopped by the test (kill -9, then restarted or left
        // down): one that ended by itself is a failure whatever the test saw.
        let mut exits = Vec::new();
        for i in &mut self.instances {
            if let Some(status) = i.exited() {
                exits.push(format!("{} exited by itself: {status}", i.name));
            }
        }
        let result = match result {
            Ok(()) if !exits.is_empty() => Err(anyhow::anyhow!("{}", exits.join("; "))),
            Err(e) if !exits.is_empty() => Err(e.context(exits.join("; "))),
            other => other,
        };
        for i in &mut self.instances {
            if i.frozen {
                let _ = i.freeze(false);
            }
        }
        let dump = result.as_ref().err().map(|_| self.dump());
        for r in self.rigs.drain(..) {
            r.stop().await;
        }
        for i in &mut self.instances {
            i.proc = None;
        }
        self.pool.shutdown().await;
        match result {
            Ok(()) => {
                std::fs::remove_dir_all(&self.dir)?;
                Ok(())
            }
            Err(e) => Err(e.context(dump.unwrap_or_default())),
        }
    }
}

/// What a plan decides, without its timestamps: each rig's state and pin (by id), and the
/// GPU grant in watts.
pub fn decided(plan: &Kv) -> Result<Value> {
    let v = plan.json()?;
    let mut rigs: Vec<Value> = v["rigs"]
        .as_array()
        .context("a plan without rigs")?
        .iter()
        .map(|r| serde_json::json!([r["info"]["id"], r["state"], r["pin"]]))
        .collect();
    rigs.sort_by_key(|r| r.to_string());
    Ok(serde_json::json!({"rigs": rigs, "granted": v["granted"]}))
}

/// The rig `id` in a `ctl rigs` answer.
pub fn rig<'a>(rigs: &'a Value, id: &str) -> &'a Value {
    rigs.as_array()
        .and_then(|a| a.iter().find(|r| r["id"] == id))
        .unwrap_or(&Value::Null)
}

/// Whether `ctl rigs` lists every one of `n` rigs (`farm.rig0`..) in `state`.
pub fn all_in(rigs: &Value, n: usize, state: &str) -> bool {
    (0..n).all(|i| rig(rigs, &format!("farm.rig{i}"))["state"] == state)
}

/// Whether a `ctl rigs` row has a live connection (on whichever instance).
pub fn connected(row: &Value) -> bool {
    !row["conn"].is_null()
}
