//! The webhook and command-hook GPU adapters, against a local HTTP server on 127.0.0.1:0 and
//! small shell scripts: bodies as documented, retries on 5xx, giving up after `max_attempts`,
//! no retry on 4xx, exit codes and timeouts of the hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use hashshift_proxy::gpu::{
    CommandConfig, GpuDemand, GpuError, GpuScheduler, GpuSchedulerConfig, ShedAction, WebhookConfig,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the test server received.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Value,
}

/// An HTTP server that answers the scripted statuses in order (the last one repeats) and
/// records what it received.
async fn server(statuses: Vec<u16>) -> Result<(String, Arc<Mutex<Vec<Seen>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/gpu/hook", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            let status = statuses.get(n).or(statuses.last()).copied().unwrap_or(200);
            n += 1;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let Ok(k) = s.read(&mut chunk).await else {
                    break (String::new(), Vec::new());
                };
                if k == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..k]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break (head, buf[end + 4..end + 4 + len].to_vec());
                }
            };
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().expect("lock").push(Seen { head, body });
            let reply =
                format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    Ok((url, seen))
}

fn webhook(url: &str, attempts: u32) -> Result<GpuScheduler> {
    let mut c = WebhookConfig::new(url);
    c.max_attempts = attempts;
    c.backoff_initial_ms = 10;
    c.backoff_max_ms = 40;
    c.timeout_ms = 2_000;
    c.authorization = Some("Bearer t0ken".into());
    Ok(GpuScheduler::from_config(GpuSchedulerConfig::Webhook(c))?)
}

async fn bounded<T>(f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .context("test timed out")
}

#[tokio::test]
async fn webhook_retries_5xx_then_delivers_documented_body() -> Result<()> {
    let (url, seen) = server(vec![500, 503, 204]).await?;
    let s = webhook(&url, 4)?;
    bounded(s.set_budget_kw(12.5)).await??;
    let seen = seen.lock().expect("lock").clone();
    ensure!(seen.len() == 3, "want 3 attempts, got {}", seen.len());
    let head = &seen[2].head;
    ensure!(head.starts_with("POST /gpu/hook HTTP/1.1\r\n"), "{head}");
    ensure!(
        head.contains("Content-Type: application/json")
            && head.contains("Authorization: Bearer t0ken"),
        "{head}"
    );
    let b = &seen[2].body;
    ensure!(
        b["event"] == "budget" && b["kw"] == 12.5 && b["reason"].is_null(),
        "{b}"
    );
    ensure!(b["source"] == "hashshift" && b["seq"] == 1, "{b}");
    let at = b["at"].as_str().context("at")?;
    ensure!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "at = {at}"
    );
    // Every retry carries the same event (same seq).
    ensure!(
        seen.iter().all(|s| s.body == *b),
        "retries differ: {seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn webhook_gives_up_after_max_attempts() -> Result<()> {
    let (url, seen) = server(vec![500]).await?;
    let s = webhook(&url, 3)?;
    let e = bounded(s.set_budget_kw(1.0)).await?;
    ensure!(
        matches!(
            e,
            Err(GpuError::HttpStatus {
                status: 500,
                attempts: 3,
                ..
            })
        ),
        "{e:?}"
    );
    ensure!(seen.lock().expect("lock").len() == 3);
    Ok(())
}

#[tokio::test]
async fn webhook_does_not_retry_4xx_and_shed_body() -> Result<()> {
    let (url, seen) = server(vec![400, 200]).await?;
    let s = webhook(&url, 5)?;
    let e = bounded(s.set_budget_kw(3.0)).await?;
    ensure!(
        matches!(
            e,
            Err(GpuError::HttpStatus {
                status: 400,
                attempts: 1,
                ..
            })
        ),
        "{e:?}"
    );
    let out = bounded(s.shed(7.0, "grid\ncurtailment")).await??;
    ensure!(
        out.actions == [ShedAction::Notified] && !out.confirmed && out.freed_kw == 0.0,
        "{out:?}"
    );
    let seen = seen.lock().expect("lock").clone();
    ensure!(seen.len() == 2, "{seen:?}");
    let b = &seen[1].body;
    ensure!(
        b["event"] == "shed" && b["kw"] == 7.0 && b["reason"] == "grid curtailment",
        "{b}"
    );
    ensure!(b["seq"] == 2, "seq increases per event: {b}");
    Ok(())
}

#[tokio::test]
async fn webhook_unreachable_fails_after_attempts_and_demand_is_reported() -> Result<()> {
    // A port that was just free: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port();
    let s = webhook(&format!("http://127.0.0.1:{port}/"), 2)?;
    let e = bounded(s.set_budget_kw(1.0)).await?;
    ensure!(
        matches!(e, Err(GpuError::Http { attempts: 2, .. })),
        "{e:?}"
    );
    ensure!(matches!(
        s.set_budget_kw(-1.0).await,
        Err(GpuError::InvalidKw { .. })
    ));

    ensure!(s.demand().await? == GpuDemand::default());
    s.report_demand(GpuDemand::new(40.0, 8.0))?;
    ensure!(s.demand().await? == GpuDemand::new(40.0, 8.0));
    ensure!(s.report_demand(GpuDemand::new(f64::NAN, 0.0)).is_err());
    Ok(())
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    Ok(p)
}

fn command(program: std::path::PathBuf, args: &[&str], timeout_ms: u64) -> Result<GpuScheduler> {
    let mut c = CommandConfig::new(program);
    c.args = args.iter().map(|s| s.to_string()).collect();
    c.env.insert("SITE".into(), "test-site".into());
    c.timeout_ms = timeout_ms;
    Ok(GpuScheduler::from_config(GpuSchedulerConfig::Command(c))?)
}

#[tokio::test]
async fn command_hook_env_args_exit_codes_and_timeout() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("hashshift-gpu-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("log");
    let hook = script(
        &dir,
        "hook.sh",
        r#"echo "$1 $SITE $HASHSHIFT_GPU_EVENT b=$HASHSHIFT_GPU_BUDGET_KW s=$HASHSHIFT_GPU_SHED_KW r=$HASHSHIFT_GPU_REASON" >> "$2""#,
    )?;
    let log_arg = log.to_string_lossy().into_owned();
    let s = command(hook, &["arg1", &log_arg], 5_000)?;
    bounded(s.set_budget_kw(25.0)).await??;
    let out = bounded(s.shed(4.5, "grid event")).await??;
    ensure!(
        out.actions == [ShedAction::Notified] && !out.confirmed,
        "{out:?}"
    );
    let text = std::fs::read_to_string(&log)?;
    ensure!(
        text == "arg1 test-site budget b=25 s= r=\narg1 test-site shed b= s=4.5 r=grid event\n",
        "hook saw {text:?}"
    );

    let fail = script(&dir, "fail.sh", "echo 'no capacity' >&2; exit 3")?;
    let e = bounded(command(fail, &[], 5_000)?.set_budget_kw(1.0)).await?;
    ensure!(
        matches!(&e, Err(GpuError::Exit { code: Some(3), stderr, .. }) if stderr == "no capacity"),
        "{e:?}"
    );

    let slow = script(&dir, "slow.sh", "sleep 30")?;
    let e = bounded(command(slow, &[], 300)?.set_budget_kw(1.0)).await?;
    ensure!(matches!(e, Err(GpuError::Timeout { .. })), "{e:?}");

    let e = bounded(command(dir.join("missing.sh"), &[], 1_000)?.set_budget_kw(1.0)).await?;
    ensure!(matches!(e, Err(GpuError::Spawn { .. })), "{e:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
