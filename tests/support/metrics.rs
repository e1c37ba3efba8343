//! Scraping the proxy's Prometheus exporter: the text exposition and its samples by series.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use hashshift_proxy::http_client::{Limits, Request, request};

/// `GET /metrics` on `addr`: the exposition text (an error unless HTTP 200).
pub async fn scrape_text(addr: SocketAddr) -> Result<String> {
    let host = addr.to_string();
    let r = request(
        addr,
        Request {
            method: hyper::Method::GET,
            host: &host,
            path: "/metrics",
            headers: &[],
            body: Default::default(),
        },
        Limits {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            max_body: 16 << 20,
        },
    )
    .await?;
    if r.status != 200 {
        bail!("GET /metrics: HTTP {}", r.status);
    }
    Ok(String::from_utf8(r.body.to_vec())?)
}

/// Sample lines by series (`name{labels}` → value); comments and blank lines skipped.
pub fn series(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}
