//! Graceful shutdown of the real `hashshift` binary: `hashshift run --config <file>` in front
//! of a test pool running in this test process, a miner with shares in flight (the pool
//! holds its verdicts back), then SIGTERM. The proxy must stop accepting at once, still relay
//! the pool's verdicts for the shares it had sent up, and exit 0 within its grace period.
//! Also the test pool's answer delay, which these tests rely on.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hashshift_protocol::sv1::{Id, ServerMessage};
use tokio::net::TcpStream;

use support::miner::{Miner, STEP, within};
use support::process::{Running, run_command};
use support::site::{self, Limits};

/// How long the pool holds each verdict: long enough to signal the proxy meanwhile, well
/// within the session's 5 s drain grace.
const HOLD: Duration = Duration::from_secs(2);
/// `run` gives sessions 10 s to drain (src/main.rs), then closes pool connections (≤ 2 s).
const EXIT_WITHIN: Duration = Duration::from_secs(14);

/// A config file, removed on drop.
struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts `hashshift run` in front of `pool`; returns once it listens, with its address and
/// its config file.
async fn start(pool: SocketAddr, name: &str) -> Result<(Running, SocketAddr, ConfigFile)> {
    let config = ConfigFile(std::env::temp_dir().join(format!(
        "hashshift-shutdown-{}-{name}.toml",
        std::process::id()
    )));
    std::fs::write(&config.0, site::config_text(pool, &Limits::default()))?;
    let mut running = Running::spawn(run_command(&config.0))?;
    let up = running.wait_log("hashshift is up", STEP).await?;
    let addr = up
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .context("no addr in the startup line")?
        .parse()?;
    Ok((running, addr, config))
}

/// Answers to `ids`, in any order: `true` or the error code.
async fn verdicts(m: &mut Miner, ids: &[Id]) -> Result<Vec<(Id, Result<(), i64>)>> {
    within("verdicts", async {
        let mut out = Vec::new();
        while out.len() < ids.len() {
            match m.recv().await?.context("closed before every verdict")? {
                ServerMessage::Response(r) if ids.contains(&r.id) => {
                    let verdict = match (&r.error, r.result.as_bool()) {
                        (None, Some(true)) => Ok(()),
                        (Some(e), _) => Err(e.code),
                        (None, _) => Err(0),
                    };
                    out.push((r.id, verdict));
                }
                ServerMessage::Response(r) => bail!("unexpected response {r:?}"),
                ServerMessage::Notification { .. } => {}
            }
        }
        Ok(out)
    })
    .await?
}

/// Whether nothing accepts connections at `addr` any more (connection refused).
async fn refused(addr: SocketAddr) -> Result<bool> {
    match tokio::time::timeout(STEP, TcpStream::connect(addr)).await? {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
        // The listening socket closed during our handshake: look again.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// SIGTERM with shares in flight, optionally followed by `second` signals during the drain.
async fn drain_on_sigterm(name: &str, second: &[&str]) -> Result<()> {
    let pool = site::pool(name).await?;
    let (mut proxy, addr, _config) = start(pool.addr(), name).await?;
    let mut m = Miner::connect(addr).await?;
    let (_, job) = m.handshake("farm.rig1", None).await?;
    assert_eq!(
        m.submit(&m.find_share(&job, 0, None), "farm.rig1").await?,
        Ok(())
    );

    // Three shares go up; the pool judges them at once but holds its answers.
    pool.set_answer_delay(HOLD);
    let mut ids = Vec::new();
    for seed in 1..=3 {
        let share = m.find_share(&job, seed, None);
        ids.push(m.send(share.request("farm.rig1")).await?);
    }
    within("three answers held at the pool", async {
        while pool.held_answers() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;

    proxy.signal("TERM")?;
    let signalled = Instant::now();
    proxy.wait_log("SIGTERM received", STEP).await?;
    // The listener goes first, while the verdicts are still on their way.
    within("the listener closed", async {
        while !refused(addr).await? {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    assert!(
        pool.held_answers() > 0,
        "the listener closed while shares were still in flight"
    );
    for signal in second {
        proxy.signal(signal)?;
    }

    // Every share in flight gets the pool's verdict, then the session ends.
    let got = verdicts(&mut m, &ids).await?;
    assert!(
        got.iter().all(|(_, v)| *v == Ok(())),
        "the pool accepted them: {got:?}"
    );
    within("the miner's connection closed", async {
        while m.recv().await?.is_some() {}
        Ok::<_, anyhow::Error>(())
    })
    .await??;

    let status = tokio::time::timeout(EXIT_WITHIN, proxy.child.wait())
        .await
        .context("the proxy did not exit within its grace period")??;
    assert!(status.success(), "exit status {status}");
    eprintln!(
        "{name}: exited {status} {:?} after the signal",
        signalled.elapsed()
    );
    let stats = pool.stats();
    assert_eq!(stats.accepted, 4, "{stats:?}");
    assert_eq!(stats.workers["farm.rig1"].accepted, 4);
    proxy.wait_log("shutdown complete", STEP).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_relays_verdicts_in_flight_and_exits_0() -> Result<()> {
    drain_on_sigterm("term", &[]).await
}

/// The binary has no "second signal = exit now": a second SIGTERM or a SIGINT during the
/// drain is absorbed (tokio keeps the handler installed), so the drain completes as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_does_not_cut_it_short() -> Result<()> {
    drain_on_sigterm("twice", &["INT", "TERM"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testpool_answer_delay_holds_verdicts_but_not_reading() -> Result<()> {
    let pool = site::pool("held").await?;
    let mut m = Miner::connect(pool.addr()).await?;
    let (_, job) = m.handshake("w", None).await?;
    let delay = Duration::from_millis(500);
    pool.set_answer_delay(delay);

    let sent = Instant::now();
    let mut ids = Vec::new();
    for seed in 0..3 {
        let share = m.find_share(&job, seed, None);
        ids.push(m.send(share.request("w")).await?);
    }
    // All three are read and judged while the first answer is still held.
    within("three answers held", async {
        while pool.held_answers() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await?;
    assert_eq!(pool.stats().accepted, 3);
    let got = verdicts(&mut m, &ids).await?;
    assert!(sent.elapsed() >= delay, "answered before the delay");
    let got_ids: Vec<Id> = got.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got_ids, ids, "answers keep their order");
    assert!(got.iter().all(|(_, v)| *v == Ok(())));
    assert_eq!(pool.held_answers(), 0);

    pool.set_answer_delay(Duration::ZERO);
    assert_eq!(m.submit(&m.find_share(&job, 9, None), "w").await?, Ok(()));
    assert_eq!(pool.held_answers(), 0);
    pool.shutdown().await;
    Ok(())
}
