//! Bounded subprocesses: `scontrol`, `squeue` and the command hook.
//!
//! Invariants: no shell (argv elements are passed as they are), stdin is `/dev/null`, stdout
//! and stderr are read concurrently and capped, the whole run (spawn, output, exit) is bounded
//! by one timeout, and the child is killed when we stop waiting for it (`kill_on_drop`).

use std::ffi::OsStr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::GpuError;

/// What a finished subprocess left behind.
#[derive(Debug)]
pub(crate) struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// What it printed on stdout (bounded by the caller's limit).
    pub stdout: Vec<u8>,
    /// What it printed on stderr (bounded by the caller's limit).
    pub stderr: Vec<u8>,
}

impl Output {
    /// stderr (or stdout when stderr is empty) as one short line, for error messages.
    pub fn message(&self) -> String {
        let raw = if self.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &self.stderr
        } else {
            &self.stdout
        };
        let text = String::from_utf8_lossy(raw);
        super::clean_reason(text.trim())
    }
}

/// Runs `program args..` with extra `env`, bounded by `timeout` and `max_output` bytes per
/// stream. A non-zero exit is *not* an error here (callers read Slurm's messages); see
/// [`run_ok`].
pub(crate) async fn run<S: AsRef<OsStr>>(
    program: &OsStr,
    args: &[S],
    env: &[(String, String)],
    timeout: Duration,
    max_output: usize,
) -> Result<Output, GpuError> {
    let name = program.to_string_lossy().into_owned();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| GpuError::Spawn {
        program: name.clone(),
        source,
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (stdout, stderr) = tokio::try_join!(
            read_capped(stdout, max_output, &name),
            read_capped(stderr, max_output, &name)
        )?;
        let status = child.wait().await.map_err(|source| GpuError::Io {
            program: name.clone(),
            source,
        })?;
        Ok::<_, GpuError>(Output {
            status,
            stdout,
            stderr,
        })
    };
    let result = tokio::time::timeout(timeout, work).await;
    match result {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => {
            // Over the output cap or an I/O error: do not leave the program running.
            let _ = child.start_kill();
            Err(e)
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(GpuError::Timeout {
                what: name,
                after: timeout,
            })
        }
    }
}

/// [`run`], and a non-zero exit becomes [`GpuError::Exit`].
pub(crate) async fn run_ok<S: AsRef<OsStr>>(
    program: &OsStr,
    args: &[S],
    env: &[(String, String)],
    timeout: Duration,
    max_output: usize,
) -> Result<Output, GpuError> {
    let out = run(program, args, env, timeout, max_output).await?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(GpuError::Exit {
            program: program.to_string_lossy().into_owned(),
            code: out.status.code(),
            stderr: out.message(),
        })
    }
}

async fn read_capped<R: AsyncRead + Unpin>(
    stream: Option<R>,
    limit: usize,
    program: &str,
) -> Result<Vec<u8>, GpuError> {
    let Some(stream) = stream else {
        return Ok(Vec::new());
    };
    let mut buf = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    stream
        .take(cap)
        .read_to_end(&mut buf)
        .await
        .map_err(|source| GpuError::Io {
            program: program.to_owned(),
            source,
        })?;
    if buf.len() > limit {
        return Err(GpuError::OutputTooLarge {
            program: program.to_owned(),
            limit,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> &'static OsStr {
        OsStr::new("/bin/sh")
    }

    #[tokio::test]
    async fn output_exit_and_env() {
        let env = [("HS_X".to_owned(), "42".to_owned())];
        let out = run(
            sh(),
            &["-c", "echo $HS_X; echo err >&2; exit 3"],
            &env,
            Duration::from_secs(5),
            1024,
        )
        .await
        .expect("runs");
        assert_eq!(out.stdout, b"42\n");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.message(), "err");
        let e = run_ok(sh(), &["-c", "exit 4"], &[], Duration::from_secs(5), 1024).await;
        assert!(
            matches!(e, Err(GpuError::Exit { code: Some(4), .. })),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn timeout_cap_and_missing_program() {
        let e = run(
            sh(),
            &["-c", "sleep 10"],
            &[],
            Duration::from_millis(200),
            1024,
        )
        .await;
        assert!(matches!(e, Err(GpuError::Timeout { .. })), "{e:?}");
        let e = run(
            sh(),
            &["-c", "yes | head -c 5000"],
            &[],
            Duration::from_secs(5),
            100,
        )
        .await;
        assert!(
            matches!(e, Err(GpuError::OutputTooLarge { limit: 100, .. })),
            "{e:?}"
        );
        let e = run(
            OsStr::new("/nonexistent/prog"),
            &[] as &[&str],
            &[],
            Duration::from_secs(1),
            10,
        )
        .await;
        assert!(matches!(e, Err(GpuError::Spawn { .. })), "{e:?}");
    }
}
