//! The site the fault-injection suite (tests/fault_injection.rs) drives: the real `hashshift`
//! binary as a child process (so `kill -9` is a real kill), a test pool, rigs whose LuxOS
//! management APIs are in-process fakes with fault switches, a command-hook "scheduler" script
//! that can be told to hang or fail, and raw access to the admin socket.
//!
//! The rigs are [`SimRig`]s, which record what their miners saw (accepted shares, and every
//! error that ended a miner).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hashshift_proxy::control::admin::ctl::call;
use hashshift_proxy::control::admin::protocol::{Command, Request, Response};
use hashshift_tools::fake_firmware::RigProfile;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::rig::SimRig;

/// Nameplate of every simulated rig (an S19), kW.
pub const RIG_KW: f64 = 3.25;

/// A rig for the suite: a [`SimRig`] whose fake sleeps in 0.3 s and wakes in 0.8 s.
pub async fn fault_rig(worker: &str) -> Result<SimRig> {
    SimRig::new(
        worker,
        RigProfile {
            sleep_delay: Duration::from_millis(300),
            wake_delay: Duration::from_millis(800),
            ..RigProfile::default()
        },
    )
    .await
}

/// The proxy binary as a child process.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `hashshift run --config <config>`, logging to `log` (appended).
    pub fn start(config: &Path, log: &Path) -> Result<Proc> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hashshift"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting hashshift")?;
        Ok(Proc { child })
    }

    /// `kill -9`; returns the signal the process died of (Some(9) when the kill did it).
    pub fn kill9(mut self) -> Result<Option<i32>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.child.try_wait()? {
            // Already dead before the kill: report how.
            return Ok(status.signal().or(status.code().map(|c| -c)));
        }
        self.child.kill()?;
        Ok(self.child.wait()?.signal())
    }

    /// Its process id (for `kill -STOP` and `kill -CONT`).
    #[allow(dead_code)] // tests/cluster.rs freezes instances; the fault suite does not
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running; if not, how it ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound and released: the proxy takes it a moment later).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// One admin request; the answer as it came (refusals included).
pub async fn ask(socket: &Path, command: Command) -> Result<Response> {
    let r = tokio::time::timeout(
        Duration::from_secs(6),
        call(
            socket,
            &Request {
                command,
                by: Some("faults".into()),
            },
        ),
    )
    .await
    .context("admin call timed out")??;
    Ok(r)
}

/// One admin request that must succeed; its result.
pub async fn ask_ok(socket: &Path, command: Command) -> Result<Value> {
    match ask(socket, command.clone()).await? {
        Response {
            ok: true,
            result: Some(v),
            ..
        } => Ok(v),
        other => bail!("{command:?} refused: {other:?}"),
    }
}

/// Sends one raw line on the admin socket; the answer line, or what happened instead.
pub async fn raw(socket: &Path, line: &str) -> Result<String> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(6), async {
        w.write_all(line.as_bytes()).await?;
        w.write_all(b"\n").await?;
        r.read_line(&mut answer).await?;
        anyhow::Ok(())
    })
    .await
    .context("no answer in time")??;
    Ok(answer)
}

/// The command-hook script standing in for Slurm's `scontrol`: it logs every call to
/// `<dir>/gpu_calls` with the mode it ran in, then hangs (`hang`), fails (`fail`) or succeeds,
/// as `<dir>/gpu_mode` says at the time.
pub fn write_hook(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("scontrol-hook.sh");
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nmode=$(cat '{d}/gpu_mode' 2>/dev/null)\n\
             echo \"$HASHSHIFT_GPU_EVENT budget=$HASHSHIFT_GPU_BUDGET_KW shed=$HASHSHIFT_GPU_SHED_KW mode=$mode\" >> '{d}/gpu_calls'\n\
             case \"$mode\" in\n  hang) sleep 30 ;;\n  fail) echo 'scontrol: error: Unable to contact slurm controller' >&2; exit 1 ;;\nesac\n\
             if [ \"$HASHSHIFT_GPU_EVENT\" = budget ]; then echo \"$HASHSHIFT_GPU_BUDGET_KW\" > '{d}/gpu_applied'; fi\nexit 0\n"
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}
