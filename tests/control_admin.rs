//! The admin socket end to end: the proxy with `[admin]` in front of a test pool, SV1 miners
//! mining, and `hashshift ctl` (the library call and the real binary) asking about them.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use hashshift_proxy::config::Config;
use hashshift_proxy::control::admin::ctl::call;
use hashshift_proxy::control::admin::protocol::{Command, Request, Response};
use hashshift_proxy::proxy::Proxy;
use hashshift_tools::testpool::TestPool;
use serde_json::Value;
use support::honest::{Honest, stop_all};
use support::miner::{Miner, within};
use support::power_site::result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const DIFF: f64 = 1e-6;

struct Site {
    pool: TestPool,
    proxy: Proxy,
    dir: PathBuf,
}

impl Site {
    async fn start() -> Result<Site> {
        let pool = support::site::pool_at("a", DIFF).await?;
        let dir = std::env::temp_dir().join(format!("hashshift-admin-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)?;
        let text = format!(
            "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
             [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
             [vardiff]\ninitial = {DIFF}\nmin = 1e-9\nmax = 1.0\nshares_per_minute = 600.0\n\
             [admin]\nsocket = {:?}\nstate_dir = {:?}\n",
            pool.addr(),
            dir.join("admin.sock").display().to_string(),
            dir.join("state").display().to_string(),
        );
        let proxy = Proxy::start(&Config::from_toml(&text)?).await?;
        Ok(Site { pool, proxy, dir })
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    async fn ask(&self, command: Command) -> Result<Response> {
        call(
            &self.socket(),
            &Request {
                command,
                by: Some("alice".into()),
            },
        )
        .await
    }

    /// Shuts everything down; returns the temp directory (socket, state) for checks.
    async fn shutdown(self) -> PathBuf {
        self.proxy.shutdown(Duration::from_secs(2)).await;
        self.pool.shutdown().await;
        self.dir
    }

    async fn stop(self) -> Result<()> {
        Ok(std::fs::remove_dir_all(self.shutdown().await)?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_rigs_and_pools_and_kicks_with_an_audit_trail() -> Result<()> {
    let site = Site::start().await?;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(site.socket())?.permissions());
    assert_eq!(mode & 0o777, 0o660, "socket mode");
    let honest = Honest::start_many(site.proxy.listen_addrs()[0], "farm.rig", 2).await?;
    let mut victim = Miner::connect(site.proxy.listen_addrs()[0]).await?;
    victim.handshake("farm.victim", None).await?;

    // Hashrate comes from accepted difficulty: wait until both honest rigs have some.
    let rigs = within("hashrates in the inventory", async {
        loop {
            let rigs = result(site.ask(Command::Rigs).await?)?;
            let mining = rigs.as_array().map(|a| {
                a.iter()
                    .filter(|r| r["hashrate_ths"].as_f64() > Some(0.0))
                    .count()
            });
            if mining == Some(2) {
                return Ok::<_, anyhow::Error>(rigs);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await??;
    let ids: Vec<&str> = rigs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["farm.rig0", "farm.rig1", "farm.victim"],
        "sorted, by worker"
    );
    assert_eq!(
        rigs[0]["pool"].as_str(),
        Some(format!("stratum+tcp://{}", site.pool.addr()).as_str())
    );
    let one = result(
        site.ask(Command::Rig {
            id: "farm.rig1".into(),
        })
        .await?,
    )?;
    assert_eq!(one["worker"], "farm.rig1");
    assert!(!site.ask(Command::Rig { id: "nope".into() }).await?.ok);

    let pools = result(site.ask(Command::Pools).await?)?;
    assert_eq!(pools[0]["miners"], 3);
    assert!(pools[0]["accepted"].as_u64() > Some(0));

    // Kick: the rig's connection closes, and the audit log says who did it.
    result(
        site.ask(Command::Kick {
            id: "farm.victim".into(),
        })
        .await?,
    )?;
    let mut buf = [0u8; 4096];
    within("the kicked rig disconnected", async {
        loop {
            match victim.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await?;
    let events = result(site.ask(Command::Events { limit: None }).await?)?;
    let last = &events[events.as_array().map_or(0, |a| a.len()).saturating_sub(1)];
    assert_eq!(last["what"], "kick");
    assert!(
        last["who"]
            .as_str()
            .is_some_and(|w| w.starts_with("alice (uid ")),
        "{last}"
    );
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("farm.victim"))
    );

    // The real CLI: a table for people, JSON for scripts, exit 1 on a refusal.
    let bin = env!("CARGO_BIN_EXE_hashshift");
    let out = tokio::process::Command::new(bin)
        .args(["ctl", "--socket"])
        .arg(site.socket())
        .arg("rigs")
        .output()
        .await?;
    let table = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{table}");
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("farm.rig0 ")),
        "{table}"
    );
    let out = tokio::process::Command::new(bin)
        .args(["ctl", "--json", "--socket"])
        .arg(site.socket())
        .args(["rig", "nope"])
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(1));
    let answer: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(answer["ok"], false);

    stop_all(honest).await?;
    // The audit log reached the disk.
    let dir = site.shutdown().await;
    let text = std::fs::read_to_string(dir.join("state").join("audit.jsonl"))?;
    assert!(text.lines().any(|l| l.contains("\"kick\"")), "{text}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_errors_and_long_lines_close_the_client() -> Result<()> {
    let site = Site::start().await?;
    let mut s = UnixStream::connect(site.socket()).await?;
    s.write_all(b"{\"cmd\":\"reboot\"}\nnot json\n\n{\"cmd\":\"power\"}\n")
        .await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    within("three answers", async {
        while got.iter().filter(|&&b| b == b'\n').count() < 3 {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await??;
    let lines: Vec<Value> = String::from_utf8(got)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 3, "the blank line gets no answer");
    assert!(lines.iter().all(|l| l["ok"] == false));
    assert!(
        lines[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("reboot"))
    );

    s.write_all(&vec![b'x'; 70 * 1024]).await?;
    within("the proxy closing the client", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await?;
    // Another client is served as usual.
    assert!(site.ask(Command::Pools).await?.ok);
    site.stop().await
}

#[tokio::test]
async fn a_live_socket_is_not_stolen_and_a_stale_one_is_replaced() -> Result<()> {
    let site = Site::start().await?;
    let text = format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum+tcp://{}\"\nuser = \"farm\"\n\
         [admin]\nsocket = {:?}\n",
        site.pool.addr(),
        site.socket().display().to_string(),
    );
    let config = Config::from_toml(&text)?;
    let Err(e) = Proxy::start(&config).await else {
        bail!("a second proxy took over a live admin socket");
    };
    assert!(e.to_string().contains("another process"), "{e}");
    // A stale socket file (its proxy died without cleaning up) is replaced.
    let stale = site.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale)?);
    let config = Config::from_toml(&text.replace(
        &site.socket().display().to_string(),
        &stale.display().to_string(),
    ))?;
    let second = Proxy::start(&config).await?;
    assert!(
        call(
            &stale,
            &Request {
                command: Command::Pools,
                by: None
            }
        )
        .await?
        .ok
    );
    second.shutdown(Duration::from_secs(1)).await;
    site.stop().await
}
