//! Simulated rigs against a scripted SV1 server on 127.0.0.1, and against the embedded test
//! pool. (The load generator's SV1 runs are in `bench_sv1.rs`.)
//!
//! The scripted server records every request per connection and validates shares itself
//! (rebuilding the header from the job, extranonce1 and the submitted fields), so these tests
//! prove the rigs produce real, valid proof of work in the order their firmware claims.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use hashshift_protocol::share::hash::sha256d_80;
use hashshift_protocol::share::{ExtendedJob, Target};
use hashshift_protocol::sv1::{
    ClientMessage, ClientRequest, ConfigureResult, ExtensionResult, Notify, Reconnect, Response,
    ServerCodec, ServerMessage, ServerNotification, SetExtranonce, SubscribeResult,
};
use hashshift_tools::sim::{Firmware, RigConfig, RigHandle, RigStats};

const DIFFICULTY: f64 = 1e-6;
const SERVER_MASK: u32 = 0x1fff_e000;

/// What the scripted server saw on one connection.
#[derive(Debug, Default, Clone)]
struct ConnLog {
    methods: Vec<String>,
    accepted: u64,
    rejected: u64,
    rolled_shares: u64,
    extranonce1_used: Vec<Vec<u8>>,
}

/// Commands a test sends to the live connections.
#[derive(Debug, Clone)]
enum Command {
    SetExtranonce(Vec<u8>),
    Reconnect(Option<u16>),
}

struct Server {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<ConnLog>>>,
    commands: Arc<Mutex<Vec<mpsc::Sender<Command>>>>,
}

impl Server {
    async fn start(shutdown: CancellationToken) -> Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(Mutex::new(Vec::new()));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (c, k) = (conns.clone(), commands.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { return };
                let index = {
                    let mut conns = c.lock().unwrap();
                    conns.push(ConnLog::default());
                    conns.len() - 1
                };
                let (tx, rx) = mpsc::channel(8);
                k.lock().unwrap().push(tx);
                let conns = c.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, index, conns, rx, shutdown).await;
                });
            }
        });
        Ok(Server {
            addr,
            conns,
            commands,
        })
    }

    fn log(&self) -> Vec<ConnLog> {
        self.conns.lock().unwrap().clone()
    }

    async fn command(&self, command: Command) {
        let senders = self.commands.lock().unwrap().clone();
        for s in senders {
            let _ = s.send(command.clone()).await;
        }
    }
}

fn job(seq: u32) -> ExtendedJob {
    let mut coinb1 = b"scripted-coinbase-".to_vec();
    coinb1.extend_from_slice(&seq.to_le_bytes());
    ExtendedJob {
        version: 0x2000_0000,
        prev_hash: [seq as u8; 32],
        coinbase_prefix: coinb1,
        coinbase_suffix: b"-suffix".to_vec(),
        merkle_branch: vec![[7; 32], [9; 32]],
        nbits: 0x1d00_ffff,
        ntime: 1_700_000_000 + seq,
    }
}

fn notify(id: &str, job: &ExtendedJob) -> ServerMessage {
    ServerMessage::notification(ServerNotification::Notify(Notify::from_job(
        id.to_owned(),
        job,
        true,
    )))
}

/// One connection of the scripted pool: answers the handshake, sends a job after
/// authorize, validates every share against the job and extranonce1 it was mined on.
async fn serve(
    stream: tokio::net::TcpStream,
    index: usize,
    conns: Arc<Mutex<Vec<ConnLog>>>,
    mut commands: mpsc::Receiver<Command>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut framed = Framed::new(stream, ServerCodec::new());
    let mut extranonce1 = vec![index as u8, 0xaa, 0xbb, 0xcc];
    let mut mask = 0u32;
    let mut jobs: Vec<(String, ExtendedJob, Vec<u8>)> = Vec::new();
    let mut seq = 0u32;
    let target = Target::from_difficulty(DIFFICULTY)?;
    let with_log = |f: &mut dyn FnMut(&mut ConnLog)| f(&mut conns.lock().unwrap()[index]);
    loop {
        let mut out: Vec<ServerMessage> = Vec::new();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            Some(cmd) = commands.recv() => match cmd {
                Command::SetExtranonce(e1) => {
                    extranonce1 = e1.clone();
                    out.push(ServerMessage::notification(ServerNotification::SetExtranonce(
                        SetExtranonce { extranonce1: e1, extranonce2_size: 4 },
                    )));
                    seq += 1;
                    let j = job(seq);
                    out.push(notify(&seq.to_string(), &j));
                    jobs.push((seq.to_string(), j, extranonce1.clone()));
                }
                Command::Reconnect(port) => out.push(ServerMessage::notification(
                    ServerNotification::Reconnect(Reconnect {
                        host: port.map(|_| "127.0.0.1".to_owned()),
                        port,
                        wait: Some(0),
                    }),
                )),
            },
            line = framed.next() => {
                let Some(Ok(Ok(ClientMessage::Request { id, request }))) = line else {
                    if line.is_none() { return Ok(()); }
                    continue;
                };
                with_log(&mut |l| l.methods.push(request.method().to_owned()));
                match request {
                    ClientRequest::Configure(c) => {
                        mask = c.version_rolling_mask.unwrap_or(0) & SERVER_MASK;
                        let result = ConfigureResult {
                            version_rolling: Some(ExtensionResult::Accepted),
                            version_rolling_mask: Some(mask),
                            ..ConfigureResult::default()
                        };
                        out.push(ServerMessage::Response(Response::ok(id, result.to_result())));
                    }
                    ClientRequest::Subscribe(_) => {
                        let r = SubscribeResult::standard("1", extranonce1.clone(), 4);
                        out.push(ServerMessage::Response(Response::ok(id, r.to_result())));
                    }
                    ClientRequest::Authorize(_) => {
                        out.push(ServerMessage::Response(Response::boolean(id, true)));
                        out.push(ServerMessage::notification(ServerNotification::SetDifficulty(
                            DIFFICULTY,
                        )));
                        seq += 1;
                        let j = job(seq);
                        out.push(notify(&seq.to_string(), &j));
                        jobs.push((seq.to_string(), j, extranonce1.clone()));
                    }
                    ClientRequest::Submit(s) => {
                        let found = jobs.iter().find(|(jid, _, _)| *jid == s.job_id);
                        let ok = found.is_some_and(|(_, j, e1)| {
                            let bits = s.version_bits.unwrap_or(0);
                            let version = (j.version & !mask) | (bits & mask);
                            bits & !mask == 0
                                && s.extranonce2.len() == 4
                                && s.ntime >= j.ntime
                                && target.is_met_by(&sha256d_80(&j.header(
                                    e1, &s.extranonce2, s.ntime, s.nonce, version,
                                )))
                        });
                        let e1 = found.map(|(_, _, e1)| e1.clone()).unwrap_or_default();
                        with_log(&mut |l| {
                            if ok {
                                l.accepted += 1;
                            } else {
                                l.rejected += 1;
                            }
                            if s.version_bits.is_some_and(|b| b != 0) {
                                l.rolled_shares += 1;
                            }
                            if !l.extranonce1_used.contains(&e1) {
                                l.extranonce1_used.push(e1.clone());
                            }
                        });
                        out.push(ServerMessage::Response(if ok {
                            Response::boolean(id, true)
                        } else {
                            Response::error(id, hashshift_protocol::sv1::StratumError::new(
                                hashshift_protocol::sv1::ErrorCode::LowDifficulty,
                            ))
                        }));
                    }
                    _ => out.push(ServerMessage::Response(Response::boolean(id, true))),
                }
            }
        }
        for m in out {
            framed.send(m).await?;
        }
    }
}

fn rig_config(pool: SocketAddr, firmware: Firmware) -> RigConfig {
    RigConfig {
        firmware,
        ..RigConfig::new(pool, "sim.rig", 200_000.0)
    }
}

/// Polls `rig` until `done` holds or the time runs out.
async fn wait_for(
    rig: &RigHandle,
    secs: u64,
    done: impl Fn(&RigStats) -> bool,
) -> Result<RigStats> {
    timeout(Duration::from_secs(secs), async {
        loop {
            let s = rig.stats();
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .with_context(|| format!("rig did not get there in {secs} s: {:?}", rig.stats()))
}

#[tokio::test]
async fn each_firmware_opens_in_its_order_and_gets_real_shares_accepted() -> Result<()> {
    let shutdown = CancellationToken::new();
    for (firmware, order, rolls) in [
        (
            Firmware::Antminer,
            &["mining.configure", "mining.subscribe", "mining.authorize"][..],
            true,
        ),
        (
            Firmware::Whatsminer,
            &["mining.subscribe", "mining.authorize", "mining.configure"][..],
            true,
        ),
        (
            Firmware::Basic,
            &["mining.subscribe", "mining.authorize"][..],
            false,
        ),
    ] {
        let server = Server::start(shutdown.clone()).await?;
        let rig = RigHandle::spawn(rig_config(server.addr, firmware), shutdown.clone());
        let stats = wait_for(&rig, 30, |s| s.accepted >= 3).await?;
        rig.stop().await;
        let log = server.log();
        assert_eq!(log.len(), 1, "{firmware:?}: one connection");
        let methods: Vec<&str> = log[0].methods.iter().map(String::as_str).collect();
        assert_eq!(
            &methods[..order.len()],
            order,
            "{firmware:?}: opening order"
        );
        assert!(
            methods[order.len()..].iter().all(|m| *m == "mining.submit"),
            "{firmware:?}: only submits after the opening: {methods:?}"
        );
        assert_eq!(log[0].rejected, 0, "{firmware:?}: every share valid");
        assert_eq!(stats.rejected, 0);
        assert!(stats.accepted >= 3 && log[0].accepted >= stats.accepted);
        assert!(stats.hashes > 0);
        assert!((stats.accepted_difficulty - stats.accepted as f64 * DIFFICULTY).abs() < 1e-12);
        assert_eq!(stats.difficulty, DIFFICULTY);
        assert_eq!(stats.version_mask, rolls.then_some(SERVER_MASK));
        assert_eq!(
            log[0].rolled_shares > 0,
            rolls,
            "{firmware:?}: version rolling"
        );
    }
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn antminer_sends_suggest_difficulty_and_extranonce_subscribe_after_opening() -> Result<()> {
    let shutdown = CancellationToken::new();
    let server = Server::start(shutdown.clone()).await?;
    let config = RigConfig {
        extranonce_subscribe: true,
        suggest_difficulty: Some(512.0),
        ..rig_config(server.addr, Firmware::Antminer)
    };
    let rig = RigHandle::spawn(config, shutdown.clone());
    wait_for(&rig, 30, |s| s.accepted >= 1).await?;
    rig.stop().await;
    let methods = server.log()[0].methods.clone();
    assert_eq!(
        &methods[..5],
        [
            "mining.configure",
            "mining.subscribe",
            "mining.authorize",
            "mining.extranonce.subscribe",
            "mining.suggest_difficulty"
        ]
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn set_extranonce_is_honoured_with_the_next_job() -> Result<()> {
    let shutdown = CancellationToken::new();
    let server = Server::start(shutdown.clone()).await?;
    let config = RigConfig {
        extranonce_subscribe: true,
        ..rig_config(server.addr, Firmware::Antminer)
    };
    let rig = RigHandle::spawn(config, shutdown.clone());
    let before = wait_for(&rig, 30, |s| s.accepted >= 1).await?;
    assert_eq!(before.extranonce1, vec![0, 0xaa, 0xbb, 0xcc]);
    server
        .command(Command::SetExtranonce(vec![0x11, 0x22, 0x33, 0x44, 0x55]))
        .await;
    let after = wait_for(&rig, 30, |s| {
        s.extranonce1 == [0x11, 0x22, 0x33, 0x44, 0x55] && s.accepted >= before.accepted + 3
    })
    .await?;
    rig.stop().await;
    let log = &server.log()[0];
    assert_eq!(
        log.rejected, 0,
        "shares under the new extranonce1 are valid"
    );
    assert_eq!(after.rejected, 0);
    assert!(
        log.extranonce1_used
            .contains(&vec![0x11, 0x22, 0x33, 0x44, 0x55])
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn set_extranonce_is_ignored_without_extranonce_subscribe() -> Result<()> {
    let shutdown = CancellationToken::new();
    let server = Server::start(shutdown.clone()).await?;
    let rig = RigHandle::spawn(rig_config(server.addr, Firmware::Basic), shutdown.clone());
    wait_for(&rig, 30, |s| s.accepted >= 1).await?;
    server
        .command(Command::SetExtranonce(vec![9, 9, 9, 9]))
        .await;
    // The server now validates job 2 against the new extranonce1, which this rig must not
    // use: its shares for job 2 get rejected, proving the message was not applied.
    let stats = wait_for(&rig, 30, |s| s.rejected >= 1).await?;
    rig.stop().await;
    assert_eq!(stats.extranonce1, vec![0, 0xaa, 0xbb, 0xcc]);
    assert_eq!(
        stats.rejected_by_code.get(&23).copied(),
        Some(stats.rejected)
    );
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn client_reconnect_moves_the_rig_to_the_given_port() -> Result<()> {
    let shutdown = CancellationToken::new();
    let first = Server::start(shutdown.clone()).await?;
    let second = Server::start(shutdown.clone()).await?;
    let rig = RigHandle::spawn(
        rig_config(first.addr, Firmware::Whatsminer),
        shutdown.clone(),
    );
    wait_for(&rig, 30, |s| s.accepted >= 1).await?;
    first
        .command(Command::Reconnect(Some(second.addr.port())))
        .await;
    let stats = wait_for(&rig, 30, |s| s.connects == 2 && s.connected).await?;
    assert_eq!(stats.disconnects, 1);
    timeout(Duration::from_secs(30), async {
        while second.log().first().is_none_or(|l| l.accepted == 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .context("no share reached the second server")?;
    // Without host and port, client.reconnect means the same address again.
    second.command(Command::Reconnect(None)).await;
    wait_for(&rig, 30, |s| s.connects == 3 && s.connected).await?;
    rig.stop().await;
    assert_eq!(first.log().len(), 1);
    assert_eq!(second.log().len(), 2);
    shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_dropped_rig_reconnects_and_stop_is_prompt() -> Result<()> {
    let shutdown = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let rig = RigHandle::spawn(rig_config(addr, Firmware::Basic), shutdown.clone());
    // Accept and drop twice: the rig must come back each time.
    for _ in 0..2 {
        let (stream, _) = timeout(Duration::from_secs(10), listener.accept()).await??;
        drop(stream);
    }
    let _third = timeout(Duration::from_secs(10), listener.accept()).await??;
    let stats = wait_for(&rig, 10, |s| s.connects == 3).await?;
    assert!(stats.disconnects >= 2);
    timeout(Duration::from_secs(10), rig.stop())
        .await
        .context("stop hung")?;
    shutdown.cancel();
    Ok(())
}

mod against_the_test_pool {
    use super::*;
    use hashshift_tools::testpool::{TestPool, TestPoolConfig};

    async fn pool(difficulty: f64) -> Result<TestPool> {
        Ok(TestPool::start(TestPoolConfig {
            difficulty,
            merkle_branch_len: 4,
            name: "sim-test".to_owned(),
            ..TestPoolConfig::default()
        })
        .await?)
    }

    #[tokio::test]
    async fn every_firmware_gets_real_shares_accepted() -> Result<()> {
        let shutdown = CancellationToken::new();
        let pool = pool(DIFFICULTY).await?;
        let rigs: Vec<RigHandle> = [Firmware::Antminer, Firmware::Whatsminer, Firmware::Basic]
            .into_iter()
            .enumerate()
            .map(|(i, firmware)| {
                let config = RigConfig {
                    firmware,
                    extranonce_subscribe: i == 0,
                    ..RigConfig::new(pool.addr(), format!("sim.{i}"), 100_000.0)
                };
                RigHandle::spawn(config, shutdown.clone())
            })
            .collect();
        for rig in &rigs {
            wait_for(rig, 60, |s| s.accepted >= 3).await?;
        }
        // A new difficulty reaches the rigs with the next job.
        pool.set_difficulty(2.0 * DIFFICULTY);
        for rig in &rigs {
            wait_for(rig, 60, |s| s.difficulty == 2.0 * DIFFICULTY).await?;
        }
        let mut accepted = 0;
        let mut rolled = 0;
        for rig in rigs {
            let s = rig.stats();
            accepted += s.accepted;
            rolled += u64::from(s.version_mask.is_some());
            assert_eq!(s.rejected, 0, "{s:?}");
            rig.stop().await;
        }
        let stats = pool.stats();
        assert_eq!(stats.rejected_total(), 0, "{stats:?}");
        assert!(stats.accepted >= accepted, "{stats:?}");
        assert_eq!(
            rolled, 2,
            "Antminer and Whatsminer negotiate version rolling"
        );
        pool.shutdown().await;
        shutdown.cancel();
        Ok(())
    }

    #[tokio::test]
    async fn a_rig_comes_back_after_the_pool_dies_and_revives() -> Result<()> {
        let shutdown = CancellationToken::new();
        let pool = pool(DIFFICULTY).await?;
        let rig = RigHandle::spawn(
            RigConfig::new(pool.addr(), "sim.revive", 100_000.0),
            shutdown.clone(),
        );
        wait_for(&rig, 60, |s| s.accepted >= 1).await?;
        pool.kill().await;
        wait_for(&rig, 10, |s| !s.connected).await?;
        pool.revive().await?;
        let before = rig.stats().accepted;
        let s = wait_for(&rig, 60, |s| s.connects >= 2 && s.accepted > before).await?;
        assert!(s.disconnects >= 1);
        rig.stop().await;
        assert!(pool.stats().connects_total >= 2);
        pool.shutdown().await;
        shutdown.cancel();
        Ok(())
    }
}
