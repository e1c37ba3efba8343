//! Headless Chromium from Debian's packages for the NOC page tests: find it (or skip, unless
//! `HASHSHIFT_BROWSER=1`), dump the DOM after the page's script ran, take screenshots, read
//! rig rows out of the DOM; and a minimal HTTP/1.1 client for the page's JSON API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::miner::within;

/// Chromium, or `None` (skip) when it is missing and `HASHSHIFT_BROWSER` is not `1`.
pub fn chromium() -> Result<Option<PathBuf>> {
    let candidates = [
        std::env::var_os("HASHSHIFT_CHROMIUM").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/chromium")),
        Some(PathBuf::from("/usr/bin/chromium-browser")),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.exists()) {
        return Ok(Some(found));
    }
    if std::env::var("HASHSHIFT_BROWSER").as_deref() == Ok("1") {
        bail!("HASHSHIFT_BROWSER=1 but no chromium (apt-get install -y chromium)");
    }
    eprintln!(
        "SKIPPED: no chromium (apt-get install -y chromium; HASHSHIFT_BROWSER=1 makes this fail)"
    );
    Ok(None)
}

/// Runs headless Chromium on `url` with `args` and a fresh profile; its stdout.
pub async fn run_chromium(bin: &Path, args: &[String], url: &str) -> Result<String> {
    let profile =
        std::env::temp_dir().join(format!("hashshift-chromium-{}", rand::random::<u64>()));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("chromium timed out")??;
    let _ = std::fs::remove_dir_all(&profile);
    ensure!(
        out.status.success(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The DOM after the page's script ran, for `wait` (`--virtual-time-budget=MS`: timers run
/// fast and the dump waits for the page's fetches).
pub async fn dump_dom(bin: &Path, url: &str, wait: &str) -> Result<String> {
    run_chromium(bin, &["--dump-dom".to_owned(), wait.to_owned()], url).await
}

/// Saves a 1400×1000 screenshot of `url` as `name` under the target directory; its path.
pub async fn screenshot(bin: &Path, url: &str, name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("noc");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let args = [
        format!("--screenshot={}", path.display()),
        "--window-size=1400,1000".to_owned(),
        "--virtual-time-budget=3000".to_owned(),
    ];
    run_chromium(bin, &args, url).await?;
    let png =
        std::fs::read(&path).with_context(|| format!("no screenshot at {}", path.display()))?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "not a real screenshot ({} bytes)",
        png.len()
    );
    println!("screenshot: {}", path.display());
    Ok(path)
}

/// `(data-id, data-state)` of every rendered rig row.
pub fn rig_rows(dom: &str) -> Vec<(String, String)> {
    dom.split("<tr class=\"rig\"")
        .skip(1)
        .filter_map(|tag| {
            let tag = tag.split('>').next()?;
            Some((attr(tag, "data-id")?, attr(tag, "data-state")?))
        })
        .collect()
}

pub fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

/// The text of the element with `id` (its first text node).
pub fn text_of(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let len = rest[start..].find('<')?;
    Some(rest[start..start + len].to_owned())
}

/// One HTTP/1.1 request: (status, headers, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    // Read the head, then Content-Length bytes (chromedriver keeps the connection open).
    within("the HTTP answer", async {
        let mut out = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| out.len() >= end + 4 + n) {
                    break;
                }
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8(out)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP head")?;
        let status = head.split(' ').nth(1).context("no status")?.parse()?;
        Ok((status, head.to_ascii_lowercase(), body.to_owned()))
    })
    .await?
}
