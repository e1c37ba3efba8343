//! The power plan fails closed, over the real `hashshift` binary: a power.json that exists but
//! cannot be read, parsed or restored stops `hashshift run` (non-zero exit, the file named in
//! the error) and is left byte for byte as it was; `--reset-power-state` moves it aside under
//! a timestamped name, records that in the audit log and starts.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hashshift_tools::testpool::{TestPool, TestPoolConfig};
use support::process::run_command;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A config with power control whose state directory is `dir/state`.
fn write_config(dir: &Path, pool: std::net::SocketAddr) -> Result<PathBuf> {
    let text = format!(
        "[[downstream]]\nprotocol = \"sv1\"\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nurl = \"stratum+tcp://{pool}\"\nuser = \"farm\"\n\
         [admin]\nsocket = {:?}\nstate_dir = {:?}\n\
         [power]\nsite_cap_kw = 100.0\n",
        dir.join("admin.sock").display().to_string(),
        dir.join("state").display().to_string(),
    );
    let path = dir.join("hashshift.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn site() -> Result<(TestPool, PathBuf, PathBuf)> {
    let pool = TestPool::start(TestPoolConfig::default()).await?;
    let dir = std::env::temp_dir().join(format!("hashshift-state-{}", rand::random::<u64>()));
    std::fs::create_dir_all(dir.join("state"))?;
    let config = write_config(&dir, pool.addr())?;
    Ok((pool, dir, config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_power_plan_stops_the_start_and_is_left_as_it_was() -> Result<()> {
    let (pool, dir, config) = site().await?;
    let plan = dir.join("state").join("power.json");
    let cases: [(&[u8], &str); 3] = [
        (b"{\"version\":1,\"rigs\":[{\"info\":", "cannot parse"),
        (b"\x00\xff not json at all", "cannot parse"),
        (
            br#"{"version":99,"saved_at":{"secs":0,"nanos":0},"rigs":[],"granted":0,"demand":{"wanted":0,"in_use":0},"curtailment":null}"#,
            "cannot restore",
        ),
    ];
    for (bytes, problem) in cases {
        std::fs::write(&plan, bytes)?;
        let out = tokio::time::timeout(Duration::from_secs(20), run_command(&config).output())
            .await
            .context("hashshift run did not exit")??;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started on a bad plan: {stderr}");
        assert!(
            stderr.contains(&plan.display().to_string()) && stderr.contains(problem),
            "{stderr}"
        );
        assert!(stderr.contains("--reset-power-state"), "{stderr}");
        assert_eq!(std::fs::read(&plan)?, bytes, "the plan was changed");
    }
    // A plan that cannot even be read (here: a directory in its place).
    std::fs::remove_file(&plan)?;
    std::fs::create_dir(&plan)?;
    let out = tokio::time::timeout(Duration::from_secs(20), run_command(&config).output())
        .await
        .context("hashshift run did not exit")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(plan.is_dir());
    pool.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_power_state_moves_the_plan_aside_audits_it_and_starts() -> Result<()> {
    let (pool, dir, config) = site().await?;
    let state = dir.join("state");
    let garbage = b"{\"version\":1,\"granted\":".to_vec();
    std::fs::write(state.join("power.json"), &garbage)?;
    let mut child = run_command(&config).arg("--reset-power-state").spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let up = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            let up = line.contains("hashshift is up");
            seen.push(line);
            if up {
                return Ok(true);
            }
        }
        Ok::<_, anyhow::Error>(false)
    })
    .await;
    if !matches!(up, Ok(Ok(true))) {
        bail!("did not start: {up:?}\n{}", seen.join("\n"));
    }
    // Drain the rest of the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let aside: Vec<PathBuf> = std::fs::read_dir(&state)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("power.json.bad-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0])?, garbage, "kept as it was");
    // The audit log is written within ~200 ms.
    let audit = state.join("audit.jsonl");
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("power-state-reset")) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("no power-state-reset event in the audit log")?;
    let event: serde_json::Value = serde_json::from_str(&event)?;
    let name = aside[0]
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    assert!(
        event["detail"]
            .as_str()
            .zip(name.as_deref())
            .is_some_and(|(d, n)| d.contains(n)),
        "{event}"
    );
    assert!(
        event["who"]
            .as_str()
            .is_some_and(|w| w.contains("--reset-power-state")),
        "{event}"
    );
    assert!(event["why"].as_str().is_some_and(|w| w.contains("unknown")));
    child.kill().await?;
    pool.shutdown().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
