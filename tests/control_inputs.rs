//! Hostile and mistaken control inputs end to end (issue 11, items 3 and 5): absurd values
//! over the real admin socket and the real HTTP API of a proxy with power control are refused
//! with a reason, move no power, are not recorded as accepted, and leave the power controller
//! alive; a persisted plan holding an absurd curtailment restores (clamped); a power.json that
//! cannot be parsed stops the start and is left as it was; a reset moves it aside and every
//! rig then enters unknown until its firmware or shares say otherwise.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hashshift_proxy::control::admin::protocol::Command;
use hashshift_proxy::proxy::{Proxy, StartOptions};
use hashshift_proxy::upstream::manager::ManagerSettings;
use serde_json::Value;
use support::miner::within;
use support::power_site::{Site, all_mining_on_firmware_figures, http_with_token};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const TOKEN: &str = "s3cret-inputs-token";

/// One raw request line on the admin socket, its answer parsed.
async fn raw(socket: &Path, line: &str) -> Result<Value> {
    let mut s = UnixStream::connect(socket).await?;
    s.write_all(line.as_bytes()).await?;
    s.write_all(b"\n").await?;
    let mut answer = String::new();
    within("the admin answer", BufReader::new(s).read_line(&mut answer)).await??;
    Ok(serde_json::from_str(&answer)?)
}

async fn http(addr: std::net::SocketAddr, path: &str, body: &str) -> Result<(u16, Value)> {
    let (status, _, body) = support::browser::http(addr, "POST", path, Some(TOKEN), body).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

/// The audit actions an operator got accepted (`curtail`, `drain`, ...), by name.
async fn accepted_actions(site: &Site) -> Result<Vec<String>> {
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    Ok(events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            [
                "curtail",
                "curtail-clear",
                "gpu-request",
                "drain",
                "resume",
                "kick",
            ]
            .contains(&e["what"].as_str().unwrap_or(""))
        })
        .map(|e| e["what"].as_str().unwrap_or("").to_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_inputs_are_refused_on_both_doors_and_power_control_lives_on() -> Result<()> {
    let (token_file, extra) = http_with_token(TOKEN)?;
    let mut site = Site::start(2, 10.0, &extra).await?;
    site.until("two rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 2)
    })
    .await?;
    let socket = site.dir.join("admin.sock");
    let soon = hashshift_proxy::time::unix_secs() + 600;
    let long = "x".repeat(200);
    let reason = "r".repeat(2000);

    // The admin socket: the issue's line first (it used to panic the controller).
    let lines = [
        (
            r#"{"cmd":"curtail","kw":50,"until_unix":18446744073709551615}"#.to_owned(),
            "more than 7 days ahead",
        ),
        (
            r#"{"cmd":"curtail","kw":5,"until_unix":1}"#.to_owned(),
            "in the past",
        ),
        (
            format!(r#"{{"cmd":"curtail","kw":-1,"until_unix":{soon}}}"#),
            "curtail: kw must be a number >= 0",
        ),
        (
            format!(r#"{{"cmd":"curtail","kw":1e9,"until_unix":{soon}}}"#),
            "10x the site cap",
        ),
        (
            format!(r#"{{"cmd":"curtail","kw":1e400,"until_unix":{soon}}}"#),
            "bad request",
        ),
        (
            r#"{"cmd":"gpu_request","kw":1e12}"#.to_owned(),
            "gpu-request: kw",
        ),
        (
            r#"{"cmd":"drain","target":{"kw":1e300}}"#.to_owned(),
            "drain: kw",
        ),
        (
            format!(r#"{{"cmd":"drain","target":{{"group":"{long}"}}}}"#),
            "longer than 128",
        ),
        (
            r#"{"cmd":"drain","target":{"rig":"farm.rig0\u001b[2J"}}"#.to_owned(),
            "control character",
        ),
        (
            format!(r#"{{"cmd":"drain","target":{{"rig":"farm.rig0"}},"reason":"{reason}"}}"#),
            "longer than 1024",
        ),
        (
            r#"{"cmd":"curtail_clear","by":"mallory\nforged line"}"#.to_owned(),
            "by contains a control character",
        ),
        (
            format!(r#"{{"cmd":"kick","id":"{long}"}}"#),
            "rig is 200 bytes",
        ),
    ];
    for (line, want) in &lines {
        let r = raw(&socket, line).await?;
        assert_eq!(r["ok"], false, "{line} -> {r}");
        let error = r["error"].as_str().unwrap_or("");
        assert!(error.contains(want), "{line}: {error:?} lacks {want:?}");
    }
    // A huge `events` limit is capped, not refused.
    let r = raw(&socket, r#"{"cmd":"events","limit":18446744073709551615}"#).await?;
    assert_eq!(r["ok"], true, "{r}");

    // The HTTP API: the same checks, as 400s with the same JSON answer.
    let addr = site.proxy()?.web_addr().context("no HTTP API")?;
    let bodies = [
        (
            "/api/curtail",
            r#"{"kw":50,"until_unix":18446744073709551615}"#.to_owned(),
            "more than 7 days ahead",
        ),
        (
            "/api/curtail",
            r#"{"kw":5,"minutes":1e9}"#.to_owned(),
            "7 days",
        ),
        (
            "/api/curtail",
            r#"{"kw":5,"minutes":-3}"#.to_owned(),
            "minutes must be > 0",
        ),
        (
            "/api/curtail",
            r#"{"kw":1e9,"minutes":30}"#.to_owned(),
            "10x the site cap",
        ),
        ("/api/curtail", r#"{"kw":"lots"}"#.to_owned(), "bad body"),
        (
            "/api/gpu-request",
            r#"{"kw":-1}"#.to_owned(),
            "gpu-request: kw",
        ),
        ("/api/gpu-request", "not json".to_owned(), "bad body"),
        (
            "/api/drain",
            format!(r#"{{"group":"{long}"}}"#),
            "longer than 128",
        ),
        (
            "/api/curtail/clear",
            format!(r#"{{"reason":"{reason}"}}"#),
            "longer than 1024",
        ),
    ];
    for (path, body, want) in &bodies {
        let (status, r) = http(addr, path, body).await?;
        assert_eq!(
            (status, &r["ok"]),
            (400, &Value::Bool(false)),
            "{path} {body} -> {r}"
        );
        let error = r["error"].as_str().unwrap_or("");
        assert!(
            error.contains(want),
            "{path} {body}: {error:?} lacks {want:?}"
        );
    }

    let (status, _, body) = support::browser::http(
        addr,
        "GET",
        "/api/events?limit=99999999999999999999999",
        None,
        "",
    )
    .await?;
    let r: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((status, &r["ok"]), (400, &Value::Bool(false)), "{body}");
    let (status, _, _) = support::browser::http(
        addr,
        "GET",
        "/api/events?limit=18446744073709551615",
        None,
        "",
    )
    .await?;
    assert_eq!(status, 200, "a huge limit is capped");

    // Nothing moved, nothing was recorded as accepted, and the controller still answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let power = site.ask(Command::Power).await?;
    assert!(power["curtailment"].is_null(), "{power}");
    assert_eq!(power["gpu_wanted_kw"], 0.0, "{power}");
    assert_eq!(power["rigs"]["mining"], 2, "{power}");
    assert_eq!(accepted_actions(&site).await?, Vec::<String>::new());

    // A sane request still goes through both doors.
    let (status, ok) = http(addr, "/api/curtail", r#"{"kw":8.0,"minutes":5}"#).await?;
    assert_eq!(status, 200, "{ok}");
    let r = raw(&socket, r#"{"cmd":"curtail_clear","reason":"test over"}"#).await?;
    assert_eq!(r["ok"], true, "{r}");

    // A restart on the resulting state directory works and power control answers.
    site.restart(10.0, &extra).await?;
    site.until(
        "two rigs mining after the restart",
        30,
        Command::Rigs,
        |r| all_mining_on_firmware_figures(r, 2),
    )
    .await?;
    let power = site.ask(Command::Power).await?;
    assert!(power["curtailment"].is_null(), "{power}");
    std::fs::remove_file(&token_file)?;
    site.stop().await
}

/// Stops the site's proxy and returns the downstream address it listened on.
async fn stop_proxy(site: &mut Site) -> Result<std::net::SocketAddr> {
    let addr = site.proxy()?.listen_addrs()[0];
    if let Some(p) = site.proxy.take() {
        p.shutdown(Duration::from_secs(2)).await;
    }
    Ok(addr)
}

async fn start_proxy(
    site: &mut Site,
    addr: std::net::SocketAddr,
    options: StartOptions,
) -> Result<()> {
    let mut config = site.config(10.0, "")?;
    config.downstream[0].listen = addr;
    let proxy =
        Proxy::start_with_options(&config, ManagerSettings::from_config(&config), options).await?;
    site.proxy = Some(proxy);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_plan_with_an_absurd_curtailment_restores_clamped() -> Result<()> {
    let mut site = Site::start(1, 10.0, "").await?;
    site.until("the rig mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 1)
    })
    .await?;
    site.ask(Command::Curtail {
        kw: 8.0,
        until_unix: hashshift_proxy::time::unix_secs() + 3600,
        reason: Some("test".into()),
    })
    .await?;
    let addr = stop_proxy(&mut site).await?;
    // As a plan saved before the limits existed would hold it.
    let path = site.dir.join("state").join("power.json");
    let mut plan: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    plan["curtailment"]["until"]["secs"] = Value::from(u64::MAX);
    std::fs::write(&path, serde_json::to_vec(&plan)?)?;

    start_proxy(&mut site, addr, StartOptions::default()).await?;
    let week = 7 * 24 * 3600;
    let power = site.ask(Command::Power).await?;
    let until = power["curtailment"]["until_unix"]
        .as_u64()
        .context("the curtailment is kept")?;
    let now = hashshift_proxy::time::unix_secs();
    assert!(
        (now + week - 60..=now + week + 60).contains(&until),
        "{until} vs {now}"
    );
    assert_eq!(power["curtailment"]["cap_kw"], 8.0);
    // Alive a while later (the old bug panicked the controller on its first loop).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    site.ask(Command::Power).await?;
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let clamped = events
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["what"] == "curtailment-clamped");
    assert!(clamped, "{events:#}");
    site.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_plan_stops_the_start_and_a_reset_starts_every_rig_unknown() -> Result<()> {
    let mut site = Site::start(2, 10.0, "").await?;
    site.until("two rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 2)
    })
    .await?;
    let addr = stop_proxy(&mut site).await?;
    let path = site.dir.join("state").join("power.json");
    let garbage = b"{\"version\":1,\"rigs\":[{\"info\":".to_vec();
    std::fs::write(&path, &garbage)?;

    let Err(e) = start_proxy(&mut site, addr, StartOptions::default()).await else {
        bail!("started on an unparsable power.json");
    };
    let message = format!("{e:#}");
    assert!(
        message.contains(&path.display().to_string()) && message.contains("cannot parse"),
        "{message}"
    );
    // Not rewritten, not even a little later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::read(&path)?, garbage);

    let reset = StartOptions {
        reset_power_state: true,
    };
    // The failed start stopped its listener; its accept loop may take a moment to let go of
    // the port.
    let mut tries = 0;
    while let Err(e) = start_proxy(&mut site, addr, reset).await {
        tries += 1;
        if tries > 20 {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let aside: Vec<_> = std::fs::read_dir(site.dir.join("state"))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("power.json.bad-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "one file moved aside");
    assert_eq!(std::fs::read(aside[0].path())?, garbage);
    // Every rig enters unknown, then its firmware or shares confirm it mines.
    site.until("two rigs mining after the reset", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 2)
    })
    .await?;
    let power = site.ask(Command::Power).await?;
    assert_eq!(power["gpu_granted_kw"], 0.0, "{power}");
    let events = site.ask(Command::Events { limit: Some(1000) }).await?;
    let events = events.as_array().context("events")?;
    let reset_event = events
        .iter()
        .find(|e| e["what"] == "power-state-reset")
        .context("no power-state-reset event")?;
    assert!(
        reset_event["detail"]
            .as_str()
            .is_some_and(|d| d.contains("power.json.bad-")),
        "{reset_event}"
    );
    let added: Vec<&Value> = events.iter().filter(|e| e["what"] == "rig-added").collect();
    assert!(!added.is_empty(), "no rig-added events");
    // Only those after the reset count (the first run added them mining).
    let after = events
        .iter()
        .position(|e| e["what"] == "power-state-reset")
        .unwrap_or(0);
    let added_after: Vec<&Value> = events[after..]
        .iter()
        .filter(|e| e["what"] == "rig-added")
        .collect();
    assert_eq!(added_after.len(), 2, "{added_after:#?}");
    for e in added_after {
        assert!(
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("\"state\":\"unknown\"")),
            "{e}"
        );
    }
    site.stop().await
}
