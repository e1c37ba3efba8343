//! Helpers for tests against the real one-node Slurm that `.ci/slurm-up.sh` starts: run
//! its tools, submit jobs that need `power_kw` licenses, follow their state.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::process::Command;

/// Whether the Slurm tests should run (`HASHSHIFT_SLURM=1`, exported by `.ci/run`).
pub fn enabled() -> bool {
    std::env::var("HASHSHIFT_SLURM").is_ok_and(|v| v == "1")
}

pub async fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{program} {args:?} timed out"))?
    .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Submits `sleep secs` named `name` needing `kw` power licenses; returns the job id.
pub async fn sbatch(name: &str, kw: u32, secs: u32) -> Result<u64> {
    let lic = format!("power_kw:{kw}");
    let wrap = format!("sleep {secs}");
    let id = sh(
        "sbatch",
        &[
            "--parsable",
            "-J",
            name,
            "-L",
            &lic,
            "-o",
            "/dev/null",
            "--chdir",
            "/tmp",
            "--wrap",
            &wrap,
        ],
    )
    .await?;
    id.split(';')
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("sbatch printed {id:?}"))
}

/// `(state, reason)` of a job, `None` once Slurm forgot it.
pub async fn job(id: u64) -> Result<Option<(String, String)>> {
    let out = sh(
        "squeue",
        &["-h", "-t", "all", "-j", &id.to_string(), "-o", "%T|%r"],
    )
    .await;
    let out = match out {
        Ok(o) => o,
        Err(e) if e.to_string().contains("Invalid job id") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(out
        .split_once('|')
        .map(|(s, r)| (s.to_owned(), r.to_owned())))
}

/// Polls `job(id)` every 100 ms until `pred` holds, at most `within`.
pub async fn wait_job(
    id: u64,
    within: Duration,
    pred: impl Fn(&str, &str) -> bool,
) -> Result<(String, String)> {
    let deadline = Instant::now() + within;
    loop {
        let now = job(id)
            .await?
            .unwrap_or_else(|| ("GONE".into(), String::new()));
        if pred(&now.0, &now.1) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("job {id} still {now:?} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
