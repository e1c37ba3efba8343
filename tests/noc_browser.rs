//! The NOC page end to end in a real browser: headless Chromium (Debian's `chromium`) loads
//! the page from a running site with power control (a test pool, rigs with fake LuxOS
//! management APIs, the proxy with `[http]`), runs its script against the live JSON API, and
//! the DOM it leaves must list the site's rigs with their states, the pool, and the power
//! chart's series; a screenshot is saved under the target directory. A second run loads the
//! same page over a fake API with 10k rigs and reports how long the table took to render.
//!
//! The drain the page's buttons make is the `POST /api/drain` tested here with the same body
//! and headers the page's `post()` sends.
//!
//! Without `chromium` the browser parts are skipped with a message, unless
//! `HASHSHIFT_BROWSER=1` (CI), where a missing browser fails the test.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use hashshift_proxy::control::admin::protocol::Command;
use serde_json::{Value, json};
use support::browser::{attr, chromium, dump_dom, http, rig_rows, screenshot, text_of};
use support::miner::within;
use support::power_site::{Site, all_mining_on_firmware_figures, states};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "noc-page-test-token";

/// A minimal W3C WebDriver client over Debian's `chromedriver` (package `chromium-driver`),
/// for what `--dump-dom` cannot do: click the page's buttons, type the token, and read the
/// page's render time in real time (under `--virtual-time-budget` the page's clock stands
/// still while its script runs).
struct Driver {
    child: tokio::process::Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    /// Starts chromedriver on an ephemeral port and a headless Chromium session; `None`
    /// (skip) when chromedriver is missing and `HASHSHIFT_BROWSER` is not `1`.
    async fn start(chromium: &Path) -> Result<Option<Driver>> {
        use tokio::io::AsyncBufReadExt;
        let bin = Path::new("/usr/bin/chromedriver");
        if !bin.exists() {
            if std::env::var("HASHSHIFT_BROWSER").as_deref() == Ok("1") {
                bail!(
                    "HASHSHIFT_BROWSER=1 but no chromedriver (apt-get install -y chromium-driver)"
                );
            }
            eprintln!("SKIPPED (the clicks): no chromedriver (apt-get install -y chromium-driver)");
            return Ok(None);
        }
        let mut child = tokio::process::Command::new(bin)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("chromedriver stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let port: u16 = within("chromedriver's port", async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return Ok(rest.trim_end_matches('.').parse()?);
                }
            }
            bail!("chromedriver exited")
        })
        .await??;
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let profile =
            std::env::temp_dir().join(format!("hashshift-chromedriver-{}", rand::random::<u64>()));
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--window-size=1400,1000",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium.display().to_string(), "args": args}}}});
        let mut driver = Driver {
            child,
            addr,
            session: String::new(),
            profile,
        };
        let created = driver.call("POST", "/session", caps).await?;
        driver.session = created["sessionId"]
            .as_str()
            .context("no session")?
            .to_owned();
        Ok(Some(driver))
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let path = if path.starts_with("/session/") || path == "/session" {
            path.to_owned()
        } else {
            format!("/session/{}{path}", self.session)
        };
        let body = if method == "GET" || method == "DELETE" {
            String::new()
        } else {
            body.to_string()
        };
        let (status, _, answer) = http(self.addr, method, &path, None, &body).await?;
        let answer: Value = serde_json::from_str(&answer)?;
        ensure!(
            status == 200,
            "webdriver {method} {path}: {status} {answer}"
        );
        Ok(answer["value"].clone())
    }

    async fn script(&self, script: &str) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`/`false` (30 s at most).
    async fn until(&self, what: &str, script: &str) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.script(script).await?;
            if !v.is_null() && v != Value::Bool(false) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element `css` selects (its WebDriver reference).
    async fn find(&self, css: &str) -> Result<String> {
        let body = json!({"using": "css selector", "value": css});
        let e = self.call("POST", "/element", body).await?;
        Ok(e[ELEMENT]
            .as_str()
            .with_context(|| format!("no {css}: {e}"))?
            .to_owned())
    }

    async fn click(&self, css: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.call("POST", &format!("/element/{id}/click"), json!({}))
            .await?;
        Ok(())
    }

    async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let id = self.find(css).await?;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({"text": text}),
        )
        .await?;
        Ok(())
    }

    async fn quit(mut self) {
        let path = format!("/session/{}", self.session);
        let _ = self.call("DELETE", &path, Value::Null).await;
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: Value) -> Result<(u16, Value)> {
    let (status, _, body) = http(addr, method, path, Some(TOKEN), &body.to_string()).await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_noc_page_shows_the_sites_rigs_pool_and_power_chart_in_chromium() -> Result<()> {
    let token_file = std::env::temp_dir().join(format!("hashshift-noc-{}", rand::random::<u64>()));
    std::fs::write(&token_file, TOKEN)?;
    let extra = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
        token_file.display().to_string()
    );
    let site = Site::start(3, 20.0, &extra).await?;
    let web = site.proxy()?.web_addr().context("no HTTP server")?;
    site.until("three rigs mining", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 3)
    })
    .await?;
    // The firmware's figures can say "mining" before the rigs' Stratum sessions reach the
    // proxy (seen on a loaded CI machine): the pool serves miners once they have.
    site.until("the pool serving the rigs", 30, Command::Pools, |p| {
        p[0]["active"] == true
    })
    .await?;

    // The page and its assets: embedded, typed, locked down.
    let (status, head, page) = http(web, "GET", "/", None, "").await?;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(page.contains("noc.js"));
    for asset in ["/noc.js", "/noc.css"] {
        let (status, head, _) = http(web, "GET", asset, None, "").await?;
        assert_eq!(status, 200, "{asset}");
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{asset}: {head}"
        );
    }
    let (status, _, _) = http(web, "GET", "/api/rigs", None, "").await?;
    assert_eq!(status, 200);
    let (status, _, pools) = http(web, "GET", "/api/pools", None, "").await?;
    assert_eq!(status, 200);
    let pools: Value = serde_json::from_str(&pools)?;
    assert_eq!(pools["result"][0]["active"], true, "{pools}");
    let (status, _, history) = http(web, "GET", "/api/power/history", None, "").await?;
    assert_eq!(status, 200);
    let history: Value = serde_json::from_str(&history)?;
    let samples = history["result"]["samples"].as_array().context("samples")?;
    assert!(!samples.is_empty(), "{history}");
    assert_eq!(samples.last().context("a sample")?["site_cap_kw"], 20.0);
    assert_eq!(history["result"]["every_secs"], 10);

    // A drain as the page's button sends it: needs the token, one target.
    let drain = json!({"rig": "farm.rig0", "reason": "NOC test", "by": "noc-page"});
    let (status, _, _) = http(web, "POST", "/api/drain", None, &drain.to_string()).await?;
    assert_eq!(status, 401);
    let (status, both) = api(web, "POST", "/api/drain", json!({"rig": "a", "group": "b"})).await?;
    assert_eq!(status, 400, "{both}");
    let (status, unknown) = api(web, "POST", "/api/drain", json!({"rig": "nope"})).await?;
    assert_eq!(status, 400, "{unknown}");
    let (status, ok) = api(web, "POST", "/api/drain", drain).await?;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["result"]["rigs"], json!(["farm.rig0"]));
    site.until("rig0 asleep", 30, Command::Rigs, |r| {
        states(r) == ["asleep", "mining", "mining"]
    })
    .await?;
    let (_, _, events) = http(web, "GET", "/api/events?limit=50", None, "").await?;
    assert!(
        events.contains("\"what\":\"drain\"") && events.contains("NOC test"),
        "{events}"
    );

    if let Some(bin) = chromium()? {
        let url = format!("http://{web}/");
        let dom = dump_dom(&bin, &url, "--virtual-time-budget=3000").await?;
        let rows = rig_rows(&dom);
        assert_eq!(
            rows,
            [
                ("farm.rig0".to_owned(), "asleep".to_owned()),
                ("farm.rig1".to_owned(), "mining".to_owned()),
                ("farm.rig2".to_owned(), "mining".to_owned()),
            ],
            "the rigs table\n{dom}"
        );
        assert_eq!(text_of(&dom, "rig-count").as_deref(), Some("(3)"));
        // Each rig row has its action: resume for the drained one, drain for the others.
        assert_eq!(dom.matches("<button class=\"resume\"").count(), 1, "{dom}");
        assert_eq!(dom.matches("<button class=\"drain\"").count(), 2, "{dom}");
        let pool_url = format!("stratum+tcp://{}", site.pool.addr());
        assert!(
            dom.contains("<tr class=\"pool\" data-state=\"active\">"),
            "{dom}"
        );
        assert!(dom.contains(&pool_url), "the pool row names {pool_url}");
        for series in ["mining", "gpu", "cap"] {
            let tag = format!("data-series=\"{series}\"");
            let line = dom
                .split("<polyline")
                .find(|p| p.split('>').next().is_some_and(|t| t.contains(&tag)))
                .with_context(|| format!("no {series} series in the chart\n{dom}"))?;
            let points = attr(line, "points").unwrap_or_default();
            assert!(points.split(' ').count() >= 2, "{series}: {points}");
        }
        assert!(
            dom.contains("cap</span><span class=\"v\">20.0 kW"),
            "power figures\n{dom}"
        );
        assert!(
            dom.contains("id=\"status\" class=\"status\"><span>updated "),
            "the status line\n{dom}"
        );
        assert!(
            !dom.contains("<span class=\"error\""),
            "the page reported an error\n{dom}"
        );
        screenshot(&bin, &url, "noc-site.png").await?;

        // The page's own drain button: confirm, token asked once, POST, the rig sleeps.
        if let Some(driver) = Box::pin(Driver::start(&bin)).await? {
            let clicked = Box::pin(drain_through_the_page(&driver, &url, &site)).await;
            driver.quit().await;
            clicked?;
        }
    }

    let (status, ok) = api(web, "POST", "/api/resume", json!({"group": "s19"})).await?;
    assert_eq!(status, 200, "{ok}");
    site.until("all mining again", 30, Command::Rigs, |r| {
        all_mining_on_firmware_figures(r, 3)
    })
    .await?;
    std::fs::remove_file(&token_file)?;
    site.stop().await
}

/// Clicks farm.rig1's drain button, accepts the confirmation, gives the token when the page
/// asks for it, and checks the rig goes to sleep and the page shows it.
async fn drain_through_the_page(driver: &Driver, url: &str, site: &Site) -> Result<()> {
    driver.call("POST", "/url", json!({"url": url})).await?;
    driver
        .until(
            "three rows",
            "return document.querySelectorAll('tr.rig').length === 3",
        )
        .await?;
    driver
        .click("tr.rig[data-id='farm.rig1'] button.drain")
        .await?;
    driver.call("POST", "/alert/accept", json!({})).await?;
    driver
        .until(
            "the token form",
            "return !document.getElementById('token-form').hidden",
        )
        .await?;
    driver.type_into("#token-input", TOKEN).await?;
    driver.click("#token-form button[type=submit]").await?;
    let message = driver
        .until(
            "the drain's answer",
            "const m = document.getElementById('message').textContent; return m === '' ? null : m",
        )
        .await?;
    assert_eq!(message, "drain rig farm.rig1: accepted (1 rigs)");
    let kept = driver
        .script("return sessionStorage.getItem('hashshift.noc.token')")
        .await?;
    assert_eq!(kept, TOKEN, "the token is kept for the tab");
    site.until("rig1 asleep", 30, Command::Rigs, |r| {
        states(r) == ["asleep", "asleep", "mining"]
    })
    .await?;
    driver
        .until(
            "the page shows rig1 asleep",
            "const r = document.querySelector(\"tr.rig[data-id='farm.rig1']\"); \
             return r !== null && r.dataset.state === 'asleep'",
        )
        .await?;
    Ok(())
}

/// The page's own render times with 10k rigs (printed; no timed assertion).
async fn time_10k(driver: &Driver, url: &str) -> Result<()> {
    let started = std::time::Instant::now();
    driver.call("POST", "/url", json!({"url": url})).await?;
    let first = driver
        .until(
            "the first render",
            "const e = document.getElementById('render-ms'); return e && e.textContent",
        )
        .await?;
    let loaded = started.elapsed().as_secs_f64();
    driver.click("th[data-key='hashrate_ths']").await?;
    let sorted = driver
        .script("return document.getElementById('render-ms').textContent")
        .await?;
    let order = driver
        .script("return document.querySelector('#rigs-head th.asc') !== null")
        .await?;
    assert_eq!(order, true, "sorted ascending");
    driver.type_into("#filter", "hall2").await?;
    let filtered = driver
        .script("return document.getElementById('render-ms').textContent")
        .await?;
    let count = driver
        .script("return document.getElementById('rig-count').textContent")
        .await?;
    assert_eq!(count, "(2500 of 10000)");
    println!(
        "10k rigs, real time: page loaded and first table in {loaded:.2} s; \
         filter+sort+render: first {} ms, sort by hashrate {} ms, text filter {} ms",
        first.as_str().unwrap_or("?"),
        sorted.as_str().unwrap_or("?"),
        filtered.as_str().unwrap_or("?"),
    );
    Ok(())
}

/// A fake API with `n` rigs, two pools and six hours of history, and the real page.
fn fake_farm(n: usize) -> axum::Router {
    use axum::routing::get;
    let states = [
        "mining", "mining", "mining", "draining", "asleep", "waking", "fault",
    ];
    // Served in a scrambled order, so the page's sort has work to do.
    let rigs: Vec<Value> = (0..n)
        .map(|k| (k * 7919) % n)
        .map(|i| {
            let state = states[i % states.len()];
            json!({
                "id": format!("site.hall{}-rack{:03}-rig{:05}", i % 4, i / 40, i),
                "worker": format!("site.rig{i:05}"), "address": format!("10.{}.{}.{}:4028", i / 65536, (i / 256) % 256, i % 256),
                "state": state, "group": format!("hall-{}", i % 4), "model": "S19",
                "pool": if state == "asleep" { Value::Null } else { json!("stratum+tcp://pool.example:3333") },
                "hashrate_ths": if state == "mining" { 90.0 + (i % 17) as f64 } else { 0.0 },
                "difficulty": 65536.0, "accepted": i * 3, "rejected": i % 5,
                "last_share_age_secs": (i % 120) as f64, "connected_secs": 3600.0,
                "power_w": 3250.0, "power_source": "firmware", "power_age_secs": 1.0,
                "pinned": if state == "asleep" { json!("noc: GPU job") } else { Value::Null },
                "escalated": state == "fault", "management": "luxos",
            })
        })
        .collect();
    let rigs = json!({"ok": true, "result": rigs}).to_string();
    let pools = json!({"ok": true, "result": [
        {"pool": 0, "url": "stratum+tcp://pool.example:3333", "active": true, "up": true, "miners": n, "connections": 40, "accepted": 123456, "rejected": 12, "lost": 0},
        {"pool": 1, "url": "stratum+tcp://backup.example:3333", "active": false, "up": false, "miners": 0, "connections": 0, "accepted": 0, "rejected": 0, "lost": 0},
    ]})
    .to_string();
    let kw = n as f64 * 3.25;
    let power = json!({"ok": true, "result": {
        "site_cap_kw": kw, "effective_cap_kw": kw, "headroom_kw": 50.0, "budget_kw": kw - 50.0,
        "mining_kw": kw * 0.7, "draining_kw": 10.0, "asleep_kw": kw * 0.3, "gpu_granted_kw": kw * 0.25,
        "gpu_wanted_kw": kw * 0.25, "gpu_in_use_kw": kw * 0.2, "gpu_pending_kw": 0.0, "free_kw": 1.0,
        "curtailment": null,
    }})
    .to_string();
    let now_ms = hashshift_proxy::time::unix_ms();
    let samples: Vec<Value> = (0..2160u64)
        .map(|i| {
            let f = (i as f64 / 2160.0 * std::f64::consts::TAU).sin().abs();
            json!({"at_unix_ms": now_ms - (2160 - i) * 10_000, "mining_kw": kw * (1.0 - 0.3 * f),
                   "gpu_granted_kw": kw * 0.3 * f, "gpu_in_use_kw": kw * 0.25 * f, "cap_kw": kw, "site_cap_kw": kw})
        })
        .collect();
    let history =
        json!({"ok": true, "result": {"every_secs": 10, "keep_secs": 21600, "samples": samples}})
            .to_string();
    let json_answer = |body: String| {
        move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }
    };
    hashshift_proxy::web::noc::routes()
        .route("/api/rigs", get(json_answer(rigs)))
        .route("/api/pools", get(json_answer(pools)))
        .route("/api/power", get(json_answer(power)))
        .route("/api/power/history", get(json_answer(history)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rigs_render_in_chromium_with_only_the_visible_rows() -> Result<()> {
    let Some(bin) = chromium()? else {
        return Ok(());
    };
    const RIGS: usize = 10_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move {
            axum::serve(listener, fake_farm(RIGS))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });
    let url = format!("http://{addr}/");
    // Virtual time lets the page's fetches finish before the dump; its clock then ticks in
    // whole milliseconds, so a render time of 0 means under a millisecond.
    let started = std::time::Instant::now();
    let dom = dump_dom(&bin, &url, "--virtual-time-budget=3000").await?;
    let browser_secs = started.elapsed().as_secs_f64();
    assert_eq!(
        text_of(&dom, "rig-count").as_deref(),
        Some("(10000)"),
        "{}",
        &dom[..dom.len().min(4000)]
    );
    let rows = rig_rows(&dom);
    assert!(
        !rows.is_empty() && rows.len() < 200,
        "only the rows in view are in the DOM, got {}",
        rows.len()
    );
    assert_eq!(rows[0].0, "site.hall0-rack000-rig00000");
    assert!(text_of(&dom, "render-ms").is_some(), "no render time");
    println!(
        "10k rigs: {} rows in the DOM; page assets {} bytes; chromium run {browser_secs:.1} s",
        rows.len(),
        hashshift_proxy::web::noc::page_bytes()
    );
    screenshot(&bin, &url, "noc-10k.png").await?;

    // Real time, through WebDriver: the first render, a sort by hashrate, a filter.
    if let Some(driver) = Box::pin(Driver::start(&bin)).await? {
        let timed = Box::pin(time_10k(&driver, &url)).await;
        driver.quit().await;
        timed?;
    }
    stop.cancel();
    within("the fake API stops", server).await???;
    Ok(())
}
