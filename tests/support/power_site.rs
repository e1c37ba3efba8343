//! A mining site with power control for end-to-end tests: a test pool, rigs with fake LuxOS
//! management APIs (`rig::SimRig`), the proxy with `[admin]` and `[power]`, and `ctl` calls
//! over its admin socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use hashshift_proxy::config::Config;
use hashshift_proxy::control::admin::ctl::call;
use hashshift_proxy::control::admin::protocol::{Command, Request, Response};
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::fake_firmware::{FakePhase, RigProfile};
use hashshift_tools::testpool::TestPool;
use serde_json::Value;

use super::rig::SimRig;

pub const DIFF: f64 = 1e-6;

/// A rig that sleeps in 0.3 s and wakes in 1 s.
pub fn quick() -> RigProfile {
    RigProfile {
        sleep_delay: Duration::from_millis(300),
        wake_delay: Duration::from_secs(1),
        ..RigProfile::default()
    }
}

/// A file holding `token` (the caller removes it) and the `[http]` table that serves the web
/// API on 127.0.0.1:0 behind that token.
pub fn http_with_token(token: &str) -> Result<(PathBuf, String)> {
    let token_file =
        std::env::temp_dir().join(format!("hashshift-token-{}", rand::random::<u64>()));
    std::fs::write(&token_file, format!("{token}\n"))?;
    let extra = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    Ok((token_file, extra))
}

/// One admin request on `socket` as the operator "noc"; its result (an error if refused).
pub async fn ask_at(socket: &Path, command: Command) -> Result<Value> {
    let r = call(
        socket,
        &Request {
            command,
            by: Some("noc".into()),
        },
    )
    .await?;
    result(r)
}

/// The result of an admin answer; an error if the request was refused.
pub fn result(r: Response) -> Result<Value> {
    match r {
        Response {
            ok: true,
            result: Some(v),
            ..
        } => Ok(v),
        other => bail!("refused: {other:?}"),
    }
}

/// Asks `command` on `socket` (up to `secs`) until `check` holds on the result.
pub async fn until_at(
    socket: &Path,
    what: &str,
    secs: u64,
    command: Command,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = ask_at(socket, command.clone()).await?;
        if check(&v) {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}; last: {v:#}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct Site {
    pub pool: TestPool,
    pub proxy: Option<Proxy>,
    pub dir: PathBuf,
    pub rigs: Vec<SimRig>,
}

impl Site {
    /// The proxy's config: `cap_kw`, the rigs, and `extra` TOML (e.g. `[gpu_scheduler]`).
    pub fn config(&self, cap_kw: f64, extra: &str) -> Result<Config> {
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
        text += extra;
        Ok(Config::from_toml(&text)?)
    }

    /// A pool, `n` rigs (firmware up, not mining until the proxy is up) and the proxy.
    pub async fn start(n: usize, cap_kw: f64, extra: &str) -> Result<Site> {
        let pool = super::site::pool_at("a", DIFF).await?;
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
        let proxy = Proxy::start(&site.config(cap_kw, extra)?).await?;
        let addr = proxy.listen_addrs()[0];
        site.proxy = Some(proxy);
        for r in &mut site.rigs {
            r.mine(addr);
        }
        Ok(site)
    }

    /// Restarts the proxy on the same address and state directory.
    pub async fn restart(&mut self, cap_kw: f64, extra: &str) -> Result<()> {
        let addr = self.proxy()?.listen_addrs()[0];
        if let Some(p) = self.proxy.take() {
            p.shutdown(Duration::from_secs(2)).await;
        }
        let mut config = self.config(cap_kw, extra)?;
        config.downstream[0].listen = addr;
        self.proxy = Some(Proxy::start(&config).await?);
        Ok(())
    }

    pub fn proxy(&self) -> Result<&Proxy> {
        self.proxy
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("proxy down"))
    }

    pub async fn ask(&self, command: Command) -> Result<Value> {
        ask_at(&self.dir.join("admin.sock"), command).await
    }

    /// Waits (up to `secs`) until `check` holds on `ctl rigs` or `ctl power`.
    pub async fn until(
        &self,
        what: &str,
        secs: u64,
        command: Command,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        until_at(&self.dir.join("admin.sock"), what, secs, command, check).await
    }

    pub fn phases(&self) -> Vec<FakePhase> {
        self.rigs.iter().map(|r| r.phase()).collect()
    }

    pub async fn stop(mut self) -> Result<()> {
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

pub fn states(rigs: &Value) -> Vec<String> {
    rigs.as_array()
        .into_iter()
        .flatten()
        .map(|r| r["state"].as_str().unwrap_or("-").to_owned())
        .collect()
}

pub fn all_mining_on_firmware_figures(rigs: &Value, n: usize) -> bool {
    let a = rigs.as_array().map(Vec::as_slice).unwrap_or_default();
    a.len() == n
        && a.iter()
            .all(|r| r["state"] == "mining" && r["power_source"] == "firmware")
}

/// Index of the first audit event matching.
pub fn position(events: &Value, pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.as_array()?.iter().position(pred)
}

/// Indexes of the audit events saying a rig was confirmed asleep, oldest first.
pub fn confirmed_asleep(events: &Value) -> Vec<usize> {
    events
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
        .collect()
}
