//! The SV2 I/O task over a real loopback socket with tokio's clock paused: Noise, then
//! frames, with the task's one timer following the state machine's deadlines. The pool
//! manager has one unreachable pool, so a channel never gets a slot.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use hashshift_protocol::noise::{AuthorityKeypair, SecretKey};
use hashshift_protocol::sv2::{
    Message, OpenStandardMiningChannel, Protocol, SetupConnection, Str0255,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::downstream::listener;
use crate::downstream::sv2::channel::ChannelSettings;
use crate::downstream::vardiff::VardiffSettings;
use crate::pool_link::{NoPools, Pools};
use crate::telemetry::DownstreamStats;

const HANDSHAKE: Duration = Duration::from_secs(30);

/// A listener serving SV2 sessions; its address, authority and the shutdown token.
async fn proxy() -> (
    std::net::SocketAddr,
    hashshift_protocol::noise::AuthorityPublicKey,
    CancellationToken,
) {
    let manager: Arc<dyn Pools> = Arc::new(NoPools);
    let mut rng = rand::rng();
    let noise = hashshift_protocol::noise::ResponderConfig::new(
        AuthorityKeypair::generate(&mut rng),
        SecretKey::generate(&mut rng),
        3600,
    );
    let authority = noise.authority_public_key();
    let settings = Arc::new(Sv2Settings {
        noise,
        channel: ChannelSettings {
            vardiff: VardiffSettings {
                min: 1.0,
                max: 1e9,
                shares_per_minute: 20.0,
            },
            initial_difficulty: 1.0,
        },
        handshake_timeout: HANDSHAKE,
        idle_timeout: Duration::from_secs(600),
        write_timeout: Duration::from_secs(10),
        drain_grace: Duration::from_secs(5),
        max_frame_bytes: 1 << 16,
        max_channels: 4,
        ack_delay: Duration::ZERO,
        ack_batch: 8,
        stats: Arc::new(DownstreamStats::new("sv2")),
    });
    let (addr, stop) =
        listener::serve_for_test("sv2", move |a| serve(a, settings.clone(), manager.clone())).await;
    (addr, authority, stop)
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_does_the_noise_handshake_is_dropped_at_the_deadline() {
    let (addr, _, _stop) = proxy().await;
    let start = Instant::now();
    let mut miner = TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    let _ = miner.read_to_end(&mut got).await;
    assert!(got.is_empty());
    let waited = start.elapsed();
    assert!(
        waited >= HANDSHAKE && waited < HANDSHAKE + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_without_a_pool_is_refused_after_its_wait_then_the_connection_ends() {
    let (addr, authority, _stop) = proxy().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (transport, _) = crate::noise_tcp::initiate(&mut stream, authority)
        .await
        .unwrap();
    let mut miner = Framed::new(stream, NoiseCodec::new(transport));
    let setup = Message::SetupConnection(SetupConnection {
        protocol: Protocol::Mining,
        min_version: 2,
        max_version: 2,
        flags: 0,
        endpoint_host: Str0255::truncated("127.0.0.1"),
        endpoint_port: 3336,
        vendor: Str0255::truncated("test"),
        hardware_version: Str0255::truncated("t"),
        firmware: Str0255::truncated("t"),
        device_id: Str0255::truncated("t"),
    });
    miner.send(setup.to_frame()).await.unwrap();
    let reply = miner.next().await.unwrap().unwrap();
    assert_eq!(
        Message::from_frame(&reply).unwrap().name(),
        "SetupConnection.Success"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = Instant::now();
    let open = Message::OpenStandardMiningChannel(OpenStandardMiningChannel {
        request_id: 4,
        user_identity: Str0255::truncated("rig"),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    });
    miner.send(open.to_frame()).await.unwrap();
    let reply = miner.next().await.unwrap().unwrap();
    assert_eq!(
        Message::from_frame(&reply).unwrap().name(),
        "OpenMiningChannel.Error"
    );
    let waited = asked.elapsed();
    assert!(
        waited >= HANDSHAKE && waited < HANDSHAKE + Duration::from_secs(1),
        "{waited:?}"
    );
    // No channel ever opened and the connection's handshake deadline has passed: it ends.
    assert!(miner.next().await.is_none_or(|f| f.is_err()));
    assert!(asked.elapsed() < HANDSHAKE + Duration::from_secs(2));
}
