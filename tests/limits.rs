//! `[limits]` against one host trying to take every slot, end to end over 127.0.0.1: the
//! per-address connection cap, the idle timeout for authorized miners (SV1 and SV2), and the
//! HTTP API's and metrics endpoint's header timeout, idle timeout, connection cap and body
//! limit. Every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hashshift_protocol::sv1::ServerMessage;
use hashshift_proxy::config::Config;
use hashshift_proxy::proxy::Proxy;
use hashshift_proxy::upstream::manager::ManagerSettings;
use hashshift_tools::testpool::TestPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::miner::Miner;
use support::site::{self, Limits};
use support::sv2_miner::Received;
use support::sv2_site::Setup;
use support::wire::alive;

/// A test pool and an SV1 proxy in front of it with `extra` appended to its `[limits]` table
/// (and any tables after it).
async fn start(name: &str, extra: &str) -> Result<(TestPool, Proxy)> {
    let pool = site::pool(name).await?;
    let text = site::config_text(pool.addr(), &Limits::default()) + extra;
    let config = Config::from_toml(&text)?;
    let settings = ManagerSettings {
        no_work_timeout: Duration::from_secs(30),
        failback_after: Duration::from_millis(500),
        rebalance_every: Duration::from_secs(1),
    };
    let proxy = Proxy::start_with(&config, settings).await?;
    Ok((pool, proxy))
}

async fn stop(pool: TestPool, proxy: Proxy) {
    proxy.shutdown(Duration::from_secs(2)).await;
    pool.shutdown().await;
}

/// Whether the peer closes `m` within `wait` (reading and dropping whatever comes first).
async fn closes_within(m: &mut Miner, wait: Duration) -> Result<bool> {
    let read_to_end = async {
        loop {
            match m.recv().await? {
                None => return Ok::<_, anyhow::Error>(()),
                Some(ServerMessage::Response(_) | ServerMessage::Notification { .. }) => {}
            }
        }
    };
    match tokio::time::timeout(wait, read_to_end).await {
        Ok(r) => r.map(|()| true),
        Err(_) => Ok(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_cap_and_a_freed_place_is_taken_again() -> Result<()> {
    let (pool, proxy) = start("per-address", "max_connections_per_address = 3\n").await?;
    let addr = proxy.listen_addrs()[0];
    let mut three = Vec::new();
    for i in 0..3 {
        let mut m = Miner::connect(addr).await?;
        m.handshake(&format!("rig{i}"), None).await?;
        three.push(m);
    }
    // The fourth from 127.0.0.1 is closed at once, before it says anything.
    let mut fourth = Miner::connect(addr).await?;
    ensure!(
        closes_within(&mut fourth, Duration::from_secs(2)).await?,
        "a fourth connection from one address was kept"
    );
    for m in &mut three {
        alive(m).await?;
    }
    // One leaves; its place is free again once the proxy has seen it go.
    drop(three.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut m = Miner::connect(addr).await?;
        if !closes_within(&mut m, Duration::from_millis(300)).await? {
            m.handshake("rig-again", None).await?;
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the freed place was never given out"
        );
    }
    for m in &mut three {
        alive(m).await?;
    }
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_authorized_sv1_miner_is_dropped_after_the_idle_timeout() -> Result<()> {
    let (pool, proxy) = start("idle-sv1", "idle_timeout_secs = 1\n").await?;
    let addr = proxy.listen_addrs()[0];
    let mut quiet = Miner::connect(addr).await?;
    let mut talking = Miner::connect(addr).await?;
    quiet.handshake("quiet", None).await?;
    talking.handshake("talking", None).await?;
    let silent_from = Instant::now();
    let talker = tokio::spawn(async move {
        // A request every 300 ms for 3 s: never a second of silence.
        for _ in 0..10 {
            alive(&mut talking).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        alive(&mut talking).await?;
        Ok::<_, anyhow::Error>(talking)
    });
    ensure!(
        closes_within(&mut quiet, Duration::from_secs(4)).await?,
        "a miner silent for 4 s with idle_timeout_secs = 1 was kept"
    );
    let after = silent_from.elapsed();
    ensure!(
        after >= Duration::from_millis(900),
        "dropped after {after:?}: before the idle timeout"
    );
    let talking = talker.await??;
    drop(talking);
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sv2_connection_is_dropped_after_the_idle_timeout() -> Result<()> {
    let s = Setup::start("[limits]\nidle_timeout_secs = 1\n").await?;
    let mut quiet = s.miner().await?;
    let mut talking = s.miner().await?;
    for (m, user) in [(&mut quiet, "farm.quiet"), (&mut talking, "farm.talking")] {
        ensure!(matches!(m.setup(0).await?, Received::SetupSuccess { .. }));
        m.open_channel(1, user, true).await?;
    }
    let silent_from = Instant::now();
    let talker = tokio::spawn(async move {
        for _ in 0..10 {
            talking.update_channel(2, 1e9, [0xff; 32]).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok::<_, anyhow::Error>(talking)
    });
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while quiet.recv().await?.is_some() {}
        Ok::<_, anyhow::Error>(())
    })
    .await;
    match closed {
        Ok(r) => r?,
        Err(_) => bail!("an SV2 miner silent for 5 s with idle_timeout_secs = 1 was kept"),
    }
    let after = silent_from.elapsed();
    ensure!(
        after >= Duration::from_millis(900),
        "dropped after {after:?}: before the idle timeout"
    );
    let mut talking = talker.await??;
    // Still connected: it gets the proxy's answer to one more request.
    talking.update_channel(99, 1e9, [0xff; 32]).await?;
    talking
        .expect("UpdateChannel.Error for an unknown channel", |r| {
            matches!(r, Received::UpdateChannelError { .. }).then_some(())
        })
        .await?;
    s.stop().await;
    Ok(())
}

/// A proxy with the HTTP API and the metrics endpoint, and `limits` in `[limits]`; returns
/// the pool, the proxy, the API's and the metrics' addresses.
async fn http_site(name: &str, limits: &str) -> Result<(TestPool, Proxy, SocketAddr, SocketAddr)> {
    let socket =
        std::env::temp_dir().join(format!("hashshift-limits-{}.sock", rand::random::<u64>()));
    let extra = format!(
        "{limits}[admin]\nsocket = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        socket.display().to_string()
    );
    let (pool, proxy) = start(name, &extra).await?;
    let api = proxy.web_addr().context("no HTTP API")?;
    let metrics = proxy.metrics_addr().context("no metrics endpoint")?;
    Ok((pool, proxy, api, metrics))
}

/// Reads until the server closes (EOF or reset) within `wait`; `None` if it does not.
async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(wait, read).await.ok()?;
    Some(out)
}

/// The status of a complete answer in `bytes`, if there is one.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

async fn get(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let answer = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .context("no answer")?;
    status_of(&answer).context("no status line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_that_send_headers_slowly_are_cut_off() -> Result<()> {
    let (pool, proxy, api, metrics) = http_site(
        "slowloris",
        "http_header_timeout_secs = 1\nhttp_idle_timeout_secs = 30\n",
    )
    .await?;
    for (addr, path) in [(api, "/api/pools"), (metrics, "/metrics")] {
        ensure!(
            get(addr, path).await? == 200,
            "{path} answers a prompt client"
        );
        let s = TcpStream::connect(addr).await?;
        let (mut read, mut write) = s.into_split();
        let started = Instant::now();
        let path = path.to_owned();
        // A header line every 200 ms, never the blank line that ends them (for 10 s).
        let trickle = tokio::spawn(async move {
            let _ = write
                .write_all(format!("GET {path} HTTP/1.1\r\n").as_bytes())
                .await;
            for i in 0..50 {
                if write
                    .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let closed = tokio::time::timeout(Duration::from_secs(4), async {
            let mut chunk = [0u8; 1024];
            loop {
                match read.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // a 408, say
                }
            }
        })
        .await;
        trickle.abort();
        ensure!(
            closed.is_ok(),
            "{addr}: headers trickled for 4 s with http_header_timeout_secs = 1 were kept"
        );
        let after = started.elapsed();
        ensure!(
            after >= Duration::from_millis(900),
            "{addr}: cut off after {after:?}: before the header timeout"
        );
    }
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_whose_body_stalls_is_closed_after_the_idle_timeout() -> Result<()> {
    let (pool, proxy, api, _) = http_site(
        "stalled-body",
        "http_header_timeout_secs = 30\nhttp_idle_timeout_secs = 1\n",
    )
    .await?;
    let mut s = TcpStream::connect(api).await?;
    // Headers complete, then 10 of the 100 body bytes announced, then nothing.
    s.write_all(b"POST /api/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"rig\": \"")
        .await?;
    let started = Instant::now();
    ensure!(
        read_until_closed(&mut s, Duration::from_secs(4))
            .await
            .is_some(),
        "a request body stalled for 4 s with http_idle_timeout_secs = 1 was kept"
    );
    ensure!(started.elapsed() >= Duration::from_millis(900));
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_beyond_the_connection_cap_wait_until_one_closes() -> Result<()> {
    let (pool, proxy, _, metrics) = http_site(
        "http-cap",
        "http_max_connections = 2\nhttp_header_timeout_secs = 30\nhttp_idle_timeout_secs = 30\n",
    )
    .await?;
    // Two clients that say nothing hold both places.
    let first = TcpStream::connect(metrics).await?;
    let _second = TcpStream::connect(metrics).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The third connects (the kernel's backlog) but is not served...
    let mut third = TcpStream::connect(metrics).await?;
    third
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut chunk = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut chunk)).await;
    ensure!(
        early.is_err(),
        "a third connection was served with http_max_connections = 2: {early:?}"
    );
    // ... until one of the two leaves.
    drop(first);
    let answer = read_until_closed(&mut third, Duration::from_secs(5))
        .await
        .context("the waiting client was never served")?;
    ensure!(
        status_of(&answer) == Some(200),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    stop(pool, proxy).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_body_above_the_limit_gets_413() -> Result<()> {
    let (pool, proxy, api, _) = http_site("body-limit", "http_max_body_bytes = 1024\n").await?;
    let body = format!("{{\"rig\": \"{}\"}}", "x".repeat(2000));
    let mut s = TcpStream::connect(api).await?;
    let request = format!(
        "POST /api/drain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let answer = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .context("no answer")?;
    ensure!(
        status_of(&answer) == Some(413),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    stop(pool, proxy).await;
    Ok(())
}
