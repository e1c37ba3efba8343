//! Critical tasks are supervised, tested on the real `hashshift` binary: with the test-only
//! fault hook (`HASHSHIFT_TEST_FAULT=<task>:<panic|exit>@<ms>`, see `src/supervisor.rs`) one
//! critical task panics or returns; the process must log which and why, shut down and exit
//! with status 70 within a bounded time, so that systemd or Docker restarts it. And a proxy
//! restarted after such a failure resumes from the persisted power plan: a drained rig stays
//! pinned asleep and a curtailment stays in force.
//!
//! The proxy runs as a child process in front of a test pool in this process; its config has
//! every part that runs a critical task (`[admin]` with a state directory, `[power]`, `[http]`,
//! `[metrics]`), every port 127.0.0.1:0 and its files in a fresh temporary directory.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tokio::process::Command;

use support::power_site::quick;
use support::process::{BIN, Running, run_command};
use support::rig::SimRig;
use support::site;

/// The exit status of a run stopped by a task failure (`hashshift_proxy::supervisor`).
const TASK_FAILED: i32 = 70;
/// From the fault to the exit: the shutdown after a failure gives sessions 5 s, the pool
/// connections and the control plane 2 s each, and a watchdog exits after 20 s regardless.
const EXIT_WITHIN: Duration = Duration::from_secs(25);
/// Bound on the proxy coming up and on any one `ctl` call.
const STEP: Duration = Duration::from_secs(15);

/// A temporary directory with the config, the admin socket and the state directory.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Result<Dir> {
        let dir = std::env::temp_dir().join(format!(
            "hashshift-supervision-{name}-{}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Dir(dir))
    }

    fn socket(&self) -> PathBuf {
        self.0.join("admin.sock")
    }

    fn state(&self) -> PathBuf {
        self.0.join("state")
    }

    /// Every part of the proxy that runs a critical task, on 127.0.0.1:0.
    fn write_config(&self, pool: SocketAddr) -> Result<PathBuf> {
        self.write_config_with(pool, "")
    }

    /// The same with `extra` TOML (rig groups, rigs).
    fn write_config_with(&self, pool: SocketAddr, extra: &str) -> Result<PathBuf> {
        let text = format!(
            "{}[admin]\nsocket = {:?}\nstate_dir = {:?}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n\
             [power]\nsite_cap_kw = 100.0\nstatus_poll_secs = 0.5\nquiet_secs = 1.0\n{extra}",
            site::config_text(pool, &site::Limits::default()),
            self.socket().display().to_string(),
            self.state().display().to_string(),
        );
        let path = self.0.join("hashshift.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `hashshift run` on `config`, with `fault` in `HASHSHIFT_TEST_FAULT` if given.
fn start(config: &Path, fault: Option<&str>) -> Result<Running> {
    let mut command = run_command(config);
    command.env_remove("HASHSHIFT_TEST_FAULT");
    if let Some(f) = fault {
        command.env("HASHSHIFT_TEST_FAULT", f);
    }
    Running::spawn(command)
}

/// `hashshift ctl --json --socket SOCKET args...`: the answer's `result`.
async fn ctl(socket: &Path, args: &[&str]) -> Result<Value> {
    let out = tokio::time::timeout(
        STEP,
        Command::new(BIN)
            .args(["ctl", "--json", "--socket"])
            .arg(socket)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("ctl {args:?} timed out"))??;
    let answer: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    ensure!(
        out.status.success() && answer["ok"] == true,
        "ctl {args:?}: {answer}"
    );
    Ok(answer["result"].clone())
}

/// Injects `fault` (`<task>:<panic|exit>`) shortly after start and checks that the process
/// names the task in an error line and exits 70 in time. Returns the log and the directory.
async fn fails_and_exits(task: &str, kind: &str) -> Result<(String, Dir)> {
    let pool = site::pool(&format!("{task}-{kind}")).await?;
    let dir = Dir::new(&format!("{task}-{kind}"))?;
    let config = dir.write_config(pool.addr())?;
    // 300 ms: after the proxy is up, so the failure hits a running proxy.
    let fault_after = Duration::from_millis(300);
    let mut proxy = start(
        &config,
        Some(&format!("{task}:{kind}@{}", fault_after.as_millis())),
    )?;
    proxy.wait_log("hashshift is up", STEP).await?;
    let (status, log) = proxy.wait_exit(EXIT_WITHIN + fault_after).await?;
    let took = proxy.started.elapsed();
    assert_eq!(
        status.code(),
        Some(TASK_FAILED),
        "{task}:{kind}: {status}; log:\n{log}"
    );
    let why = if kind == "panic" {
        "panicked: test fault injected"
    } else {
        "returned before shutdown"
    };
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("critical task ended")
            && l.contains(&format!("task=\"{task}\""))
            && l.contains(why)),
        "{task}:{kind}: no error line naming the task and why; log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("hashshift: critical task ") && l.contains("status 70")),
        "{task}:{kind}: no closing line; log:\n{log}"
    );
    eprintln!("{task}:{kind}: exited 70 {took:?} after start (fault at {fault_after:?})");
    Ok((log, dir))
}

#[tokio::test]
async fn power_controller_panic_stops_the_process_and_is_audited() -> Result<()> {
    let (_, dir) = fails_and_exits("power-controller", "panic").await?;
    // The audit writer outlived the controller: the failure reached the disk.
    let audit = std::fs::read_to_string(dir.state().join("audit.jsonl"))?;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"task-failed\"") && l.contains("power-controller: panicked")),
        "{audit}"
    );
    Ok(())
}

#[tokio::test]
async fn power_controller_return_stops_the_process() -> Result<()> {
    fails_and_exits("power-controller", "exit").await.map(drop)
}

#[tokio::test]
async fn pool_manager_panic_stops_the_process() -> Result<()> {
    fails_and_exits("pool-manager", "panic").await.map(drop)
}

#[tokio::test]
async fn pool_manager_return_stops_the_process() -> Result<()> {
    fails_and_exits("pool-manager", "exit").await.map(drop)
}

#[tokio::test]
async fn audit_writer_panic_stops_the_process() -> Result<()> {
    fails_and_exits("audit-writer", "panic").await.map(drop)
}

#[tokio::test]
async fn listener_return_stops_the_process() -> Result<()> {
    fails_and_exits("listener-0", "exit").await.map(drop)
}

#[tokio::test]
async fn http_server_panic_stops_the_process() -> Result<()> {
    fails_and_exits("http-server", "panic").await.map(drop)
}

#[tokio::test]
async fn gpu_budget_admin_socket_and_metrics_failures_stop_the_process() -> Result<()> {
    fails_and_exits("gpu-budget", "exit").await?;
    fails_and_exits("admin-socket", "panic").await?;
    fails_and_exits("metrics-server", "exit").await?;
    Ok(())
}

#[tokio::test]
async fn a_fault_naming_no_task_refuses_to_start() -> Result<()> {
    let pool = site::pool("typo").await?;
    let dir = Dir::new("typo")?;
    let config = dir.write_config(pool.addr())?;
    let mut proxy = start(&config, Some("power-controler:panic"))?;
    let (status, log) = proxy.wait_exit(STEP).await?;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("no task named \"power-controler\""), "{log}");
    Ok(())
}

/// The rig `farm.rig0` of `rigs`, from `ctl rigs`.
fn rig0(rigs: &Value) -> Value {
    rigs.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["id"] == "farm.rig0")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls `ctl ARGS` until `pred` holds, up to [`STEP`].
async fn until(
    socket: &Path,
    args: &[&str],
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + STEP;
    loop {
        let v = ctl(socket, args).await?;
        if pred(&v) {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {STEP:?}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_resumes_the_persisted_plan() -> Result<()> {
    let pool = site::pool("resume").await?;
    let dir = Dir::new("resume")?;
    // One rig with a (fake LuxOS) management API, mining into the proxy.
    let mut rig = SimRig::new("farm.rig0", quick()).await?;
    let config = dir.write_config_with(
        pool.addr(),
        &format!(
            "[[rig_group]]\nname = \"s19\"\nmodel = \"S19\"\nrated_w = 3250.0\nj_per_th = 34.2\n\
             firmware = \"luxos\"\nworkers = [\"farm.rig*\"]\n\
             [[rig]]\nworker = \"farm.rig0\"\nmanagement = \"{}\"\n",
            rig.firmware.addr()
        ),
    )?;
    // Time enough to drain the rig, curtail and see both persisted before the controller
    // dies, even on a loaded machine; the test says so if it was not.
    let fault_after = Duration::from_secs(10);
    let mut proxy = start(
        &config,
        Some(&format!(
            "power-controller:panic@{}",
            fault_after.as_millis()
        )),
    )?;
    let up = proxy.wait_log("hashshift is up", STEP).await?;
    let addr: SocketAddr = up
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .context("no addr in the startup line")?
        .parse()?;
    rig.mine(addr);
    let socket = dir.socket();
    until(&socket, &["rigs"], "rig0 mining", |r| {
        rig0(r)["state"] == "mining"
    })
    .await?;
    ctl(
        &socket,
        &["drain", "farm.rig0", "--reason", "supervision test pin"],
    )
    .await?;
    ctl(
        &socket,
        &[
            "curtail",
            "--kw",
            "40",
            "--until",
            "2h",
            "--reason",
            "supervision test",
        ],
    )
    .await?;
    let power = ctl(&socket, &["power"]).await?;
    assert_eq!(power["curtailment"]["cap_kw"], 40.0, "{power}");
    let plan = dir.state().join("power.json");
    let persisted = tokio::time::timeout(STEP, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(&plan) {
                if text.contains("\"curtailment\":{\"cap\":40000")
                    && text.contains("supervision test pin")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    ensure!(
        persisted.is_ok(),
        "the curtailment and the pin never reached {plan:?}"
    );
    let ready = proxy.started.elapsed();
    ensure!(
        ready < fault_after,
        "too slow: the plan was persisted {ready:?} after start, after the fault was due"
    );
    eprintln!("drain and curtailment persisted {ready:?} after start");

    let (status, log) = proxy.wait_exit(EXIT_WITHIN + fault_after).await?;
    assert_eq!(status.code(), Some(TASK_FAILED), "{log}");
    assert!(log.contains("task=\"power-controller\""), "{log}");

    // The service manager's restart: same config, same state directory, no fault.
    let mut proxy = start(&config, None)?;
    proxy.wait_log("hashshift is up", STEP).await?;
    let power = ctl(&socket, &["power"]).await?;
    assert_eq!(power["curtailment"]["cap_kw"], 40.0, "{power}");
    assert_eq!(power["effective_cap_kw"], 40.0, "{power}");
    // The pin holds: the rig is (or ends) asleep and nothing wakes it.
    let rigs = until(&socket, &["rigs"], "rig0 asleep after the restart", |r| {
        rig0(r)["state"] == "asleep"
    })
    .await?;
    let r = rig0(&rigs);
    assert!(
        r["pinned"]
            .as_str()
            .is_some_and(|p| p.contains("supervision test pin")),
        "{r}"
    );
    for _ in 0..10 {
        assert_eq!(
            rig.phase(),
            hashshift_tools::fake_firmware::FakePhase::Sleeping,
            "woken after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A SIGTERM is no failure: exit 0.
    proxy.signal("TERM")?;
    let (status, log) = proxy.wait_exit(EXIT_WITHIN).await?;
    assert_eq!(status.code(), Some(0), "{log}");
    // The audit log tells the story in order: the failure, then the restore.
    let audit = std::fs::read_to_string(dir.state().join("audit.jsonl"))?;
    let failed_at = audit.lines().position(|l| l.contains("\"task-failed\""));
    let restored_at = audit.lines().position(|l| l.contains("\"restored\""));
    assert!(
        matches!((failed_at, restored_at), (Some(f), Some(r)) if f < r),
        "{audit}"
    );
    rig.stop().await;
    Ok(())
}
