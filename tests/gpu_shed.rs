//! A GPU shed carried through, end to end over 127.0.0.1: the proxy with power control and a
//! command-hook GPU scheduler (a `/bin/sh` script that refuses the first shed calls, or all
//! of them), a grant to the GPU side, then a grid curtailment that cuts the grant below what
//! the GPU side uses. Checked from the audit log (`ctl events`), `ctl power` and `/metrics`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hashshift_proxy::control::admin::protocol::Command;
use serde_json::Value;
use support::metrics::{scrape_text, series};
use support::power_site::Site;

/// The hook: budget events succeed; shed events fail until the `fails`-th one has failed
/// (counted in a file), then succeed.
fn hook(site_dir: &std::path::Path, fails: u32, deadline_secs: f64) -> String {
    let count = site_dir.join("shed-count");
    let script = format!(
        "if [ \"$HASHSHIFT_GPU_EVENT\" = shed ]; then \
         n=$(cat \"$1\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$1\"; \
         if [ $n -le {fails} ]; then echo \"scheduler busy (call $n)\" >&2; exit 1; fi; fi; exit 0"
    );
    format!(
        "[gpu_scheduler]\nkind = \"command\"\nprogram = \"/bin/sh\"\n\
         args = ['-c', '{script}', 'hook', '{}']\ntimeout_ms = 5000\nshed_deadline_secs = {deadline_secs}\n",
        count.display()
    )
}

async fn start(fails: u32, deadline_secs: f64, metrics: bool) -> Result<(Site, PathBuf)> {
    // The site directory is made by `Site::start`; the hook's count file goes in a directory
    // of its own, made first.
    let dir = std::env::temp_dir().join(format!("hashshift-gpu-shed-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir)?;
    let mut extra = hook(&dir, fails, deadline_secs);
    if metrics {
        extra += "[metrics]\nlisten = \"127.0.0.1:0\"\n";
    }
    // No rigs: the whole cap can go to the GPU side, and a curtailment must cut into it.
    Ok((Site::start(0, 10.0, &extra).await?, dir))
}

async fn stop(site: Site, dir: PathBuf) -> Result<()> {
    site.stop().await?;
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

/// Grants the GPU side 6 kW, then curtails the site to 2 kW: the grant is cut to 2 kW and
/// 4 kW must be shed.
async fn grant_then_curtail(site: &Site) -> Result<()> {
    site.ask(Command::GpuRequest {
        kw: 6.0,
        reason: Some("training".into()),
    })
    .await?;
    site.until("the 6 kW grant", 20, Command::Power, |p| {
        p["gpu_granted_kw"] == 6.0
    })
    .await?;
    let until_unix = hashshift_proxy::time::unix_secs() + 3600;
    site.ask(Command::Curtail {
        kw: 2.0,
        until_unix,
        reason: Some("grid event".into()),
    })
    .await?;
    site.until("the grant cut to 2 kW", 20, Command::Power, |p| {
        p["gpu_granted_kw"] == 2.0
    })
    .await?;
    Ok(())
}

fn gpu_events<'a>(events: &'a Value, what: &str) -> Vec<&'a Value> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["who"] == "gpu" && e["what"] == what)
        .collect()
}

async fn events_until(site: &Site, what: &str, secs: u64) -> Result<Value> {
    site.until(what, secs, Command::Events { limit: Some(1000) }, |e| {
        !gpu_events(e, what).is_empty()
    })
    .await
}

/// The `hashshift_power_gpu_shed_*` series, once `check` holds on them (the view the
/// exporter reads is refreshed every 100 ms), within 10 s.
async fn shed_series(
    addr: SocketAddr,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> Result<HashMap<String, f64>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m: HashMap<String, f64> = series(&scrape_text(addr).await?)
            .into_iter()
            .filter(|(k, _)| k.starts_with("hashshift_power_gpu_shed_"))
            .collect();
        if check(&m) {
            return Ok(m);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out; last: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_the_scheduler_refuses_twice_is_retried_until_it_is_acknowledged() -> Result<()> {
    let (site, dir) = start(2, 120.0, false).await?;
    grant_then_curtail(&site).await?;
    // Calls at about 0, 1 and 3 s (backoff 1 s, 2 s); the third is acknowledged.
    let events = events_until(&site, "shed-complete", 20).await?;
    let requests = gpu_events(&events, "shed-request");
    let details: Vec<&str> = requests
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        [
            "4.0 kW, attempt 1",
            "4.0 kW, attempt 2",
            "4.0 kW, attempt 3"
        ],
        "{events:#}"
    );
    let results: Vec<&str> = gpu_events(&events, "shed-result")
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(results.len(), 3, "{events:#}");
    assert!(
        results[..2]
            .iter()
            .all(|r| r.contains("scheduler busy") && r.starts_with("4.0 kW")),
        "{results:?}"
    );
    assert_eq!(results[2], "4.0 kW: done");
    let done = gpu_events(&events, "shed-complete");
    assert_eq!(done.len(), 1, "{events:#}");
    assert!(
        done[0]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("after 3 attempts")),
        "{done:?}"
    );
    assert!(gpu_events(&events, "shed-overdue").is_empty(), "{events:#}");
    let power = site.ask(Command::Power).await?;
    assert_eq!(power["gpu_granted_kw"], 2.0, "{power:#}");
    stop(site, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_never_acknowledged_is_escalated_past_its_deadline_and_retried_on() -> Result<()> {
    // Calls at about 0, 1 and 3 s (backoff 1 s, 2 s): the deadline falls between the second
    // and the third.
    let (site, dir) = start(u32::MAX, 2.0, true).await?;
    let metrics = site
        .proxy()?
        .metrics_addr()
        .context("no metrics listener")?;
    let before = shed_series(metrics, |_| true).await?;
    assert_eq!(
        before.get("hashshift_power_gpu_shed_in_progress"),
        Some(&0.0)
    );
    assert_eq!(
        before.get("hashshift_power_gpu_shed_overdue_total"),
        Some(&0.0)
    );
    grant_then_curtail(&site).await?;
    let events = events_until(&site, "shed-overdue", 20).await?;
    let overdue = gpu_events(&events, "shed-overdue");
    assert_eq!(overdue.len(), 1, "{events:#}");
    let detail = overdue[0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("4.0 kW still to shed: in use 6.0 kW, grant 2.0 kW, ")
            && detail.contains("scheduler busy"),
        "{detail}"
    );
    let why = overdue[0]["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("by hand") && why.contains("keeps retrying"),
        "{why}"
    );
    assert!(
        gpu_events(&events, "shed-complete").is_empty(),
        "{events:#}"
    );

    // Metrics: in progress, aged past the deadline, escalated once.
    let m = shed_series(metrics, |m| {
        m.get("hashshift_power_gpu_shed_overdue_total") == Some(&1.0)
    })
    .await?;
    assert_eq!(
        m.get("hashshift_power_gpu_shed_in_progress"),
        Some(&1.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("hashshift_power_gpu_shed_outstanding_watts"),
        Some(&4000.0),
        "{m:?}"
    );
    assert!(
        m.get("hashshift_power_gpu_shed_age_seconds")
            .is_some_and(|a| *a >= 2.0),
        "{m:?}"
    );
    assert!(
        m.get("hashshift_power_gpu_shed_calls_total")
            .is_some_and(|c| *c >= 2.0),
        "{m:?}"
    );

    // Retried on after the escalation (the third call, due at about 3 s; later ones every
    // 30 s).
    let events = site
        .until(
            "a retry after the escalation",
            20,
            Command::Events { limit: Some(1000) },
            |e| {
                let all = e.as_array().map(Vec::as_slice).unwrap_or_default();
                let overdue = all.iter().position(|x| x["what"] == "shed-overdue");
                overdue.is_some_and(|o| all[o..].iter().any(|x| x["what"] == "shed-request"))
            },
        )
        .await?;
    assert_eq!(gpu_events(&events, "shed-overdue").len(), 1, "{events:#}");

    // The curtailment ends: the grant goes back to 6 kW and nothing is left to shed.
    site.ask(Command::CurtailClear { reason: None }).await?;
    let events = events_until(&site, "shed-cancelled", 20).await?;
    assert_eq!(gpu_events(&events, "shed-cancelled").len(), 1, "{events:#}");
    let m = shed_series(metrics, |m| {
        m.get("hashshift_power_gpu_shed_in_progress") == Some(&0.0)
    })
    .await?;
    assert_eq!(
        m.get("hashshift_power_gpu_shed_outstanding_watts"),
        Some(&0.0),
        "{m:?}"
    );
    assert_eq!(
        m.get("hashshift_power_gpu_shed_overdue_total"),
        Some(&1.0),
        "{m:?}"
    );
    stop(site, dir).await
}
