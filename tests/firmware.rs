//! Firmware adapters against their protocol-faithful fakes, over 127.0.0.1.
//!
//! Each test drives the real adapter (`FirmwareClient`) against a fake rig speaking the
//! firmware's wire protocol, and checks both what the adapter returns and what the fake saw.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hashshift_proxy::firmware::{
    Credentials, Endpoint, FirmwareClient, FirmwareError, FirmwareKind, RigState, RigStatus,
    Timeouts,
};
use hashshift_tools::fake_firmware::{
    FakeBraiins, FakeBraiinsConfig, FakeLuxos, FakeLuxosConfig, FakePhase, RigProfile,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every test finishes within this or fails.
const TEST_BOUND: Duration = Duration::from_secs(60);

async fn bounded<F: Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::time::timeout(TEST_BOUND, f)
        .await
        .context("test exceeded its time bound")?
}

fn client() -> FirmwareClient {
    FirmwareClient::new(Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(2),
    })
}

fn quick_profile() -> RigProfile {
    RigProfile {
        sleep_delay: Duration::from_millis(150),
        wake_delay: Duration::from_millis(300),
        ..RigProfile::default()
    }
}

/// A LuxOS fake whose rig changes state quickly ([`quick_profile`]).
async fn quick_luxos() -> Result<FakeLuxos> {
    Ok(FakeLuxos::start(FakeLuxosConfig {
        profile: quick_profile(),
        ..FakeLuxosConfig::default()
    })
    .await?)
}

/// A Braiins OS+ fake whose rig changes state quickly ([`quick_profile`]).
async fn quick_braiins() -> Result<FakeBraiins> {
    Ok(FakeBraiins::start(FakeBraiinsConfig {
        profile: quick_profile(),
        ..FakeBraiinsConfig::default()
    })
    .await?)
}

/// Poll status until it reports `want`, at most ~5 s.
async fn wait_for(c: &FirmwareClient, ep: &Endpoint, want: RigState) -> Result<RigStatus> {
    let mut last = None;
    for _ in 0..100 {
        let s = c.status(ep).await?;
        if s.state == want {
            return Ok(s);
        }
        last = Some(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("never reached {want:?}; last status {last:?}")
}

#[tokio::test]
async fn luxos_sleep_confirm_and_wake() -> Result<()> {
    bounded(async {
        let fake = quick_luxos().await?;
        let (c, ep) = (client(), fake.endpoint());

        let s = c.status(&ep).await?;
        assert_eq!(s.state, RigState::Mining);
        assert_eq!(s.power_w, Some(3250.0));
        assert_eq!(s.hashrate_ths, Some(95.0));

        c.sleep(&ep).await?;
        // Accepted, but power has not dropped yet: not safe to hand away.
        assert_eq!(c.status(&ep).await?.state, RigState::Stopping);
        let s = wait_for(&c, &ep, RigState::Sleeping).await?;
        assert!(s.power_w.is_some_and(|w| w < 50.0), "{s:?}");
        assert_eq!(s.hashrate_ths, Some(0.0));
        assert_eq!(fake.phase(), FakePhase::Sleeping);
        // We logged off: the rig is free for other tools at once.
        assert!(!fake.session_active());
        // Sleep again: LuxOS says "already in sleep mode", which is success for us.
        c.sleep(&ep).await?;

        c.wake(&ep).await?;
        assert_eq!(c.status(&ep).await?.state, RigState::Waking);
        let s = wait_for(&c, &ep, RigState::Mining).await?;
        assert_eq!(s.power_w, Some(3250.0));
        c.wake(&ep).await?;

        let n = fake.counters();
        assert_eq!(n.get("curtail"), 4);
        assert_eq!(n.get("logon"), 4);
        assert_eq!(n.get("logoff"), 4);
        // Never borrows someone else's session through `session`.
        assert_eq!(n.get("session"), 0);
        fake.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn luxos_session_busy_then_free_after_expiry() -> Result<()> {
    bounded(async {
        let fake = FakeLuxos::start(FakeLuxosConfig {
            profile: quick_profile(),
            session_ttl: Duration::from_millis(400),
            ..FakeLuxosConfig::default()
        })
        .await?;
        let (c, ep) = (client(), fake.endpoint());
        let _other_tool = fake.hold_session();
        let err = c
            .sleep(&ep)
            .await
            .expect_err("session is held by another tool");
        assert!(matches!(err, FirmwareError::SessionBusy { .. }), "{err}");
        assert!(err.is_retryable());
        assert_eq!(fake.counters().get("curtail"), 0);
        assert_eq!(fake.phase(), FakePhase::Mining);
        // Status needs no session: it still works while the rig is locked.
        assert_eq!(c.status(&ep).await?.state, RigState::Mining);

        // The other tool's session expires after 400 ms idle; retrying then succeeds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.sleep(&ep).await?;
        wait_for(&c, &ep, RigState::Sleeping).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn luxos_expired_session_is_renewed_once() -> Result<()> {
    bounded(async {
        let fake = quick_luxos().await?;
        let (c, ep) = (client(), fake.endpoint());
        fake.expire_next_sessions(1);
        c.sleep(&ep).await?;
        assert_eq!(fake.counters().get("logon"), 2);
        assert_eq!(fake.counters().get("curtail"), 2);

        fake.expire_next_sessions(2);
        let err = c.wake(&ep).await.expect_err("both sessions expire");
        assert!(matches!(err, FirmwareError::SessionExpired { .. }), "{err}");
        assert!(err.is_retryable());
        assert_eq!(fake.counters().get("logon"), 4);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn luxos_malformed_replies_are_errors() -> Result<()> {
    bounded(async {
        let fake = FakeLuxos::start(FakeLuxosConfig::default()).await?;
        let (c, ep) = (client(), fake.endpoint());
        fake.set_malformed(true);
        for err in [
            c.status(&ep).await.expect_err("malformed"),
            c.sleep(&ep).await.expect_err("malformed"),
        ] {
            assert!(matches!(err, FirmwareError::Malformed { .. }), "{err}");
        }
        fake.set_malformed(false);
        assert_eq!(c.status(&ep).await?.state, RigState::Mining);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn stuck_rigs_acknowledge_but_keep_mining() -> Result<()> {
    bounded(async {
        let c = client();
        let lux = quick_luxos().await?;
        let bos = quick_braiins().await?;
        lux.set_stuck(true);
        bos.set_stuck(true);
        for ep in [lux.endpoint(), bos.endpoint()] {
            c.sleep(&ep).await?;
        }
        // Well past the sleep delay, the firmware still reports mining at full power: the
        // command's Ok alone must never be taken as confirmation.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for ep in [lux.endpoint(), bos.endpoint()] {
            let s = c.status(&ep).await?;
            assert_eq!(s.state, RigState::Mining, "{s:?}");
            assert!(s.power_w.is_some_and(|w| w > 3000.0), "{s:?}");
        }
        Ok(())
    })
    .await
}

/// A one-connection-at-a-time server that answers every connection with `reply` and closes.
async fn canned_server(reply: Vec<u8>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            let _ = s.write_all(&reply).await;
            let _ = s.shutdown().await;
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn cgminer_quirks_on_the_wire() -> Result<()> {
    bounded(async {
        let c = client();
        // A raw reply with every quirk: NUL terminator, `}{`, inf and nan, a newline.
        let quirky = b"{\"STATUS\":[{\"STATUS\":\"S\",\"Msg\":\"Summary\"}],\"SUMMARY\":[{\"GHS 5s\":0,\"Work Utility\":inf,\"X\":nan}{\"Elapsed\":1}],\"id\":1}\n\0".to_vec();
        let addr = canned_server(quirky).await?;
        let (v, status) =
            hashshift_proxy::firmware::cgminer::request(&c, addr, "summary", None).await?;
        assert_eq!(status.letter, "S");
        assert_eq!(v["SUMMARY"].as_array().map(Vec::len), Some(2));
        assert!(v["SUMMARY"][0]["Work Utility"].is_null());

        // A peer that streams more than the bound is cut off, not buffered.
        let mut huge = b"{\"STATUS\":[{\"STATUS\":\"S\"}],\"x\":\"".to_vec();
        huge.resize(2 * 1024 * 1024, b'a');
        let addr = canned_server(huge).await?;
        let ep = Endpoint::new(FirmwareKind::Luxos, addr, Credentials::default());
        let err = c.status(&ep).await.expect_err("too large");
        assert!(
            matches!(&err, FirmwareError::Malformed { detail, .. } if detail.contains("larger")),
            "{err}"
        );

        // A STATUS:"E" reply to a read is a rejection that says why.
        let addr = canned_server(
            b"{\"STATUS\":[{\"STATUS\":\"E\",\"Code\":45,\"Msg\":\"Access denied\"}],\"id\":1}\0"
                .to_vec(),
        )
        .await?;
        let ep = Endpoint::new(FirmwareKind::Luxos, addr, Credentials::default());
        let err = c.status(&ep).await.expect_err("rejected");
        assert!(
            matches!(&err, FirmwareError::Rejected { detail, .. } if detail == "Access denied"),
            "{err}"
        );
        // And a refused logon (not a busy session) is a refused login, not retryable.
        let err = c.sleep(&ep).await.expect_err("login refused");
        assert!(matches!(err, FirmwareError::LoginRefused { .. }), "{err}");
        assert!(!err.is_retryable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unresponsive_and_absent_rigs_fail_within_bounds() -> Result<()> {
    bounded(async {
        let c = FirmwareClient::new(Timeouts {
            connect: Duration::from_millis(500),
            request: Duration::from_millis(300),
        });
        let lux = FakeLuxos::start(FakeLuxosConfig::default()).await?;
        let bos = FakeBraiins::start(FakeBraiinsConfig::default()).await?;
        lux.set_silent(true);
        bos.set_silent(true);
        for ep in [lux.endpoint(), bos.endpoint()] {
            let started = Instant::now();
            let err = c.sleep(&ep).await.expect_err("silent rig");
            assert!(
                matches!(
                    err,
                    FirmwareError::Timeout {
                        step: "request",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.is_retryable());
            // One step timed out: bounded by connect + request, with slack for a busy machine.
            assert!(started.elapsed() < Duration::from_secs(5));
        }
        // Shutting down a fake ends its hung connections too.
        lux.shutdown().await;
        bos.shutdown().await;

        // Nothing listening: a connect error, retryable.
        let gone = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let ep = Endpoint::new(FirmwareKind::Luxos, gone, Credentials::default());
        let err = c.status(&ep).await.expect_err("nothing listens");
        assert!(matches!(err, FirmwareError::Connect { .. }), "{err}");
        assert!(err.is_retryable());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn braiins_pause_confirm_and_resume() -> Result<()> {
    bounded(async {
        let fake = FakeBraiins::start(FakeBraiinsConfig {
            profile: RigProfile {
                hashrate_ths: 140.0,
                mining_power_w: 3010.0,
                sleep_power_w: 15.0,
                ..quick_profile()
            },
            ..FakeBraiinsConfig::default()
        })
        .await?;
        let (c, ep) = (client(), fake.endpoint());
        let s = c.status(&ep).await?;
        assert_eq!(s.state, RigState::Mining);
        assert_eq!((s.power_w, s.hashrate_ths), (Some(3010.0), Some(140.0)));

        c.sleep(&ep).await?;
        assert_eq!(c.status(&ep).await?.state, RigState::Stopping);
        let s = wait_for(&c, &ep, RigState::Sleeping).await?;
        assert_eq!(s.power_w, Some(15.0));
        c.sleep(&ep).await?;

        c.wake(&ep).await?;
        assert_eq!(c.status(&ep).await?.state, RigState::Waking);
        wait_for(&c, &ep, RigState::Mining).await?;
        let n = fake.counters();
        assert_eq!(n.get("PUT /api/v1/actions/pause"), 2);
        assert_eq!(n.get("PUT /api/v1/actions/resume"), 1);
        assert_eq!(n.get("<other>"), 0);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn braiins_login_and_token_errors() -> Result<()> {
    bounded(async {
        let fake = FakeBraiins::start(FakeBraiinsConfig::default()).await?;
        let c = client();
        let mut wrong = fake.endpoint();
        wrong.credentials = Credentials::new("root", "wrong");
        let err = c.sleep(&wrong).await.expect_err("bad password");
        assert!(matches!(err, FirmwareError::LoginRefused { .. }), "{err}");
        assert!(!err.is_retryable());
        assert_eq!(fake.phase(), FakePhase::Mining);

        let ep = fake.endpoint();
        fake.expire_next_tokens(1);
        c.sleep(&ep).await?;
        assert_eq!(fake.counters().get("POST /api/v1/auth/login"), 3);

        fake.expire_next_tokens(2);
        let err = c.wake(&ep).await.expect_err("both tokens refused");
        assert!(matches!(err, FirmwareError::SessionExpired { .. }), "{err}");

        fake.set_malformed(true);
        let err = c.status(&ep).await.expect_err("malformed");
        assert!(matches!(err, FirmwareError::Malformed { .. }), "{err}");
        Ok(())
    })
    .await
}

/// 1,000 rigs (half LuxOS, half Braiins OS+) commanded to sleep at once, then confirmed.
/// Prints the time taken; asserts only that every rig ends asleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_rigs_sleep_concurrently() -> Result<()> {
    bounded(async {
        const RIGS: usize = 1000;
        let profile = RigProfile {
            sleep_delay: Duration::ZERO,
            ..RigProfile::default()
        };
        let mut lux = Vec::new();
        let mut bos = Vec::new();
        for i in 0..RIGS {
            if i % 2 == 0 {
                lux.push(
                    FakeLuxos::start(FakeLuxosConfig {
                        profile,
                        ..FakeLuxosConfig::default()
                    })
                    .await?,
                );
            } else {
                bos.push(
                    FakeBraiins::start(FakeBraiinsConfig {
                        profile,
                        ..FakeBraiinsConfig::default()
                    })
                    .await?,
                );
            }
        }
        let endpoints: Vec<Endpoint> = lux
            .iter()
            .map(FakeLuxos::endpoint)
            .chain(bos.iter().map(FakeBraiins::endpoint))
            .collect();
        let c = FirmwareClient::new(Timeouts {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(10),
        });

        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for ep in endpoints.clone() {
            tasks.spawn(async move { c.sleep(&ep).await });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let commanded = started.elapsed();
        let mut tasks = tokio::task::JoinSet::new();
        for ep in endpoints {
            tasks.spawn(async move { c.status(&ep).await });
        }
        while let Some(r) = tasks.join_next().await {
            let s = r??;
            assert_eq!(s.state, RigState::Sleeping, "{s:?}");
        }
        let confirmed = started.elapsed();
        println!(
            "figure: {RIGS} rigs (LuxOS + Braiins OS+ fakes, debug build): sleep commanded in \
             {:.0} ms, all confirmed asleep in {:.0} ms",
            commanded.as_secs_f64() * 1000.0,
            confirmed.as_secs_f64() * 1000.0
        );
        assert!(lux.iter().all(|f| f.phase() == FakePhase::Sleeping));
        assert!(bos.iter().all(|f| f.phase() == FakePhase::Sleeping));
        Ok(())
    })
    .await
}
