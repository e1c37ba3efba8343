//! The HTTP API end to end: a grid operator's curtailment signal over HTTP sheds mining on a
//! site with power control; reads need no token, changes need the bearer token.

mod support;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use hashshift_proxy::control::admin::protocol::Command;
use serde_json::Value;
use support::power_site::{Site, all_mining_on_firmware_figures, http_with_token};

const TOKEN: &str = "s3cret-grid-token";

/// One HTTP/1.1 request on a fresh connection: (status, JSON body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, Value)> {
    let (status, _, body) = support::browser::http(addr, method, path, token, body).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_signal_over_http_curtails_the_site_and_needs_the_token() -> Result<()> {
    let (token_file, extra) = http_with_token(TOKEN)?;
    let site = Site::start(2, 10.0, &extra).await?;
    let addr = site.proxy()?.web_addr().context("no HTTP API")?;
    site.until("two rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 2)
    })
    .await?;

    // Reads are open.
    let (status, power) = http(addr, "GET", "/api/power", None, "").await?;
    assert_eq!(status, 200, "{power}");
    assert_eq!(power["result"]["site_cap_kw"], 10.0);
    let (status, rigs) = http(addr, "GET", "/api/rigs", None, "").await?;
    assert_eq!(
        (status, rigs["result"].as_array().map(Vec::len)),
        (200, Some(2))
    );

    // Changes need the token.
    let signal = r#"{"kw": 4.0, "minutes": 30, "reason": "ERCOT EEA2"}"#;
    let (status, _) = http(addr, "POST", "/api/curtail", None, signal).await?;
    assert_eq!(status, 401);
    let (status, _) = http(
        addr,
        "POST",
        "/api/curtail",
        Some("wrong-token-of-same-len"),
        signal,
    )
    .await?;
    assert_eq!(status, 401);
    let (status, bad) = http(addr, "POST", "/api/curtail", Some(TOKEN), r#"{"kw": 4.0}"#).await?;
    assert_eq!(status, 400, "{bad}");
    let (status, ok) = http(addr, "POST", "/api/curtail", Some(TOKEN), signal).await?;
    assert_eq!(status, 200, "{ok}");

    // One rig sleeps to fit the 4 kW cap; the audit log names the signal.
    let power = site
        .until("mining under 4 kW", 30, Command::Power, |p| {
            p["mining_kw"] == 3.25
        })
        .await?;
    assert_eq!(power["effective_cap_kw"], 4.0);
    let until = power["curtailment"]["until_unix"]
        .as_u64()
        .context("until")?;
    let now = hashshift_proxy::time::unix_secs();
    assert!(
        (now + 29 * 60..=now + 31 * 60).contains(&until),
        "{until} vs {now}"
    );
    let (_, events) = http(addr, "GET", "/api/events?limit=200", None, "").await?;
    let signal_event = events["result"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["what"] == "curtail")
        .cloned()
        .unwrap_or_default();
    assert!(
        signal_event["who"]
            .as_str()
            .is_some_and(|w| w.starts_with("grid-signal (http 127.0.0.1")),
        "{signal_event}"
    );
    assert_eq!(signal_event["why"], "ERCOT EEA2");

    let (status, _) = http(addr, "POST", "/api/curtail/clear", Some(TOKEN), "").await?;
    assert_eq!(status, 200);
    site.until("both mining again", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 2)
    })
    .await?;
    std::fs::remove_file(&token_file)?;
    site.stop().await
}
