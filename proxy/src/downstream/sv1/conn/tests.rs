//! The SV1 I/O task over a real loopback socket, with tokio's clock paused: the task's one
//! timer follows the state machine's deadlines (nothing here sleeps in wall-clock time).
//! No pool is usable ([`NoPools`]), so a miner never gets a place.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::downstream::listener;
use crate::downstream::vardiff::VardiffSettings;
use crate::pool_link::{NoPools, Pools};
use crate::telemetry::DownstreamStats;

const HANDSHAKE: Duration = Duration::from_secs(30);

/// A listener serving SV1 sessions, its address, and the sessions' shutdown token.
async fn proxy() -> (std::net::SocketAddr, CancellationToken) {
    let manager: Arc<dyn Pools> = Arc::new(NoPools);
    let settings = Arc::new(SessionSettings {
        vardiff: VardiffSettings {
            min: 1.0,
            max: 1e9,
            shares_per_minute: 20.0,
        },
        initial_difficulty: 1.0,
        max_line_bytes: 4096,
        max_outbox_bytes: 1 << 20,
        handshake_timeout: HANDSHAKE,
        idle_timeout: Duration::from_secs(600),
        write_timeout: Duration::from_secs(10),
        drain_grace: Duration::from_secs(5),
        stats: Arc::new(DownstreamStats::new("sv1")),
    });
    let (addr, stop) =
        listener::serve_for_test("sv1", move |a| serve(a, settings.clone(), manager.clone())).await;
    (addr, stop)
}

/// Reads until the proxy closes the connection; returns what it sent.
async fn until_closed(miner: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = miner.read_to_end(&mut got).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_silent_miner_is_dropped_at_the_handshake_deadline() {
    let (addr, _stop) = proxy().await;
    let start = Instant::now();
    let mut miner = TcpStream::connect(addr).await.unwrap();
    assert_eq!(until_closed(&mut miner).await, "");
    let waited = start.elapsed();
    assert!(
        waited >= HANDSHAKE && waited < HANDSHAKE + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_subscribe_without_a_pool_holds_later_lines_until_its_own_deadline() {
    let (addr, _stop) = proxy().await;
    let mut miner = TcpStream::connect(addr).await.unwrap();
    // The authorize is answered at once; the subscribe waits for a pool that never comes,
    // and the extranonce.subscribe behind it is not answered before it.
    miner
        .write_all(b"{\"id\":1,\"method\":\"mining.authorize\",\"params\":[\"w\",\"x\"]}\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = miner.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("\"id\":1"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let asked = Instant::now();
    miner
        .write_all(b"{\"id\":2,\"method\":\"mining.subscribe\",\"params\":[]}\n{\"id\":3,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n")
        .await
        .unwrap();
    // The connection's own handshake deadline (30 s) passes during the wait; the wait
    // ends 30 s after the subscribe, with no answer to either request.
    assert_eq!(until_closed(&mut miner).await, "");
    let waited = asked.elapsed();
    assert!(
        waited >= HANDSHAKE && waited < HANDSHAKE + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_a_session_waiting_for_a_pool_at_once() {
    let (addr, stop) = proxy().await;
    let mut miner = TcpStream::connect(addr).await.unwrap();
    miner
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cancelled = Instant::now();
    stop.cancel();
    until_closed(&mut miner).await;
    assert!(cancelled.elapsed() < Duration::from_secs(3));
}
