//! The NOC page against a running `hashshift demo` (the real binary): headless Chromium loads
//! the page the demo prints, after the demo's simulated GPU job took power from the rigs, and
//! the DOM must show every rig (some asleep for the GPU job, the others mining), the pools and
//! the power chart; a screenshot is saved under the target directory.
//!
//! Without `chromium` it is skipped with a message, unless `HASHSHIFT_BROWSER=1` (CI).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use support::browser::{chromium, dump_dom, http, rig_rows, screenshot};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Reads the demo's stdout until it prints where the NOC page is.
async fn noc_address(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<SocketAddr> {
    let find = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.strip_prefix("NOC page: http://") {
                let addr = rest.split('/').next().context("no address")?;
                return Ok(addr.parse()?);
            }
        }
        bail!("the demo ended without printing its NOC page")
    };
    tokio::time::timeout(Duration::from_secs(60), find)
        .await
        .context("the demo did not print its NOC page within 60 s")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_its_gpu_switch_on_the_noc_page() -> Result<()> {
    let Some(browser) = chromium()? else {
        return Ok(());
    };
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_hashshift"))
        .args([
            "demo",
            "--rigs",
            "4",
            "--khs",
            "20",
            "--duration",
            "150",
            "--gpu-at",
            "1",
            "--gpu-for",
            "600",
            "--every",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = demo.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let addr = noc_address(&mut lines).await?;
    // Keep draining the demo's output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // 4 rigs × 3.25 kW under a 13.5 kW cap; the GPU job asks for 6 kW: two rigs must sleep
    // (and confirm) before the grant.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (status, _, body) = http(addr, "GET", "/api/power", None, "").await?;
        let power: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 200
            && power["result"]["gpu_granted_kw"] == 6.0
            && power["result"]["rigs"]["asleep"] == 2
        {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no GPU grant in 90 s: {power}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let url = format!("http://{addr}/");
    let dom = dump_dom(&browser, &url, "--virtual-time-budget=5000").await?;
    let rows = rig_rows(&dom);
    ensure!(rows.len() == 4, "every demo rig in the table: {rows:?}");
    ensure!(
        rows.iter().all(|(id, _)| id.starts_with("demo.rack")),
        "{rows:?}"
    );
    let asleep = rows.iter().filter(|(_, s)| s == "asleep").count();
    let mining = rows.iter().filter(|(_, s)| s == "mining").count();
    ensure!(
        (asleep, mining) == (2, 2),
        "two rigs asleep for the GPU job: {rows:?}"
    );
    for series in ["mining", "gpu", "cap"] {
        ensure!(
            dom.contains(&format!("data-series=\"{series}\"")),
            "no {series} series in the chart"
        );
    }
    ensure!(
        dom.contains("<tr class=\"pool\" data-state=\"active\">")
            && dom.contains("<tr class=\"pool\" data-state=\"standby\">"),
        "the demo's primary and standby pools are listed"
    );
    screenshot(&browser, &url, "noc-demo.png").await?;
    let _ = demo.kill().await;
    Ok(())
}
