//! The `hashshift` binary as a child process, with its log lines read as they come: for the
//! tests that need the real process (signals, exit statuses, a restart).

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_hashshift");

/// `hashshift run --config CONFIG`, logging at info without colour to a piped stderr, killed
/// when dropped. Callers may add to it before [`Running::spawn`].
pub fn run_command(config: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// A running binary and its log lines as they come.
pub struct Running {
    /// The process (killed on drop).
    pub child: Child,
    log: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    /// When it was spawned.
    pub started: Instant,
}

impl Running {
    /// Spawns `command` (its stderr must be piped) and starts reading its log.
    pub fn spawn(mut command: Command) -> Result<Running> {
        let mut child = command.spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(strip_ansi(&line)).is_err() {
                    break;
                }
            }
        });
        Ok(Running {
            child,
            log,
            seen: Vec::new(),
            started: Instant::now(),
        })
    }

    /// Waits for a log line containing `what`, up to `within`.
    pub async fn wait_log(&mut self, what: &str, within: Duration) -> Result<String> {
        let found = tokio::time::timeout(within, async {
            while let Some(line) = self.log.recv().await {
                self.seen.push(line.clone());
                if line.contains(what) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => Ok(line),
            _ => bail!(
                "no log line {what:?}; log so far:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// Waits for the exit, up to `within`; returns the status and the whole log.
    pub async fn wait_exit(&mut self, within: Duration) -> Result<(ExitStatus, String)> {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.kill().await;
                self.drain_log().await;
                bail!(
                    "still running {within:?} later; log:\n{}",
                    self.seen.join("\n")
                );
            }
        };
        self.drain_log().await;
        Ok((status, self.seen.join("\n")))
    }

    /// Collects the rest of the log (the reader ends with the process's stderr).
    async fn drain_log(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(line) = self.log.recv().await {
                self.seen.push(line);
            }
        })
        .await;
    }

    /// Sends `signal` (`TERM`, `INT`, ...) with `kill`.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.id().context("the proxy already exited")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        ensure!(status.success(), "kill -{signal} {pid}: {status}");
        Ok(())
    }
}

/// `line` without ANSI escape sequences (CSI: ESC [ parameters final-byte).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
