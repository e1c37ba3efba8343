//! SV2 miners through the proxy, end to end over 127.0.0.1: a test SV2 miner built on the
//! Stratum Reference Implementation's crates → hashshift's SV2 listener → the embedded SV1
//! test pool, which validates every share with its own hashing.

mod support;

use anyhow::{Context, Result, bail};
use hashshift_proxy::config::Config;
use support::miner::within;
use support::sv2_miner::{
    FoundShare, MiningJob, REQUIRES_STANDARD_JOBS, REQUIRES_WORK_SELECTION, Received, Sv2Miner,
};
use support::sv2_site::{DIFF, GoodMiner, KeyFile, Setup, pool_accepts, sv1_pool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn standard_channel_shares_reach_the_pool() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    assert!(matches!(
        m.setup(REQUIRES_STANDARD_JOBS).await?,
        Received::SetupSuccess {
            used_version: 2,
            ..
        }
    ));
    m.open_standard(7, "farm.std1", 0.0).await?;
    let (channel, target, prefix) = match m.recv().await? {
        Some(Received::OpenStandardSuccess {
            request_id: 7,
            channel_id,
            target,
            extranonce_prefix,
            group_channel_id,
        }) => {
            assert_ne!(group_channel_id, channel_id);
            (channel_id, target, extranonce_prefix)
        }
        other => bail!("expected OpenStandardMiningChannel.Success, got {other:?}"),
    };
    assert_eq!(
        prefix.len(),
        4 + 8,
        "a standard channel's whole extranonce is fixed: pool extranonce1 + extranonce2"
    );
    let job = m.first_job(channel).await?;
    for seed in 0..3 {
        // Roll version bits inside BIP320's mask, as ASICs do.
        let version = job.version | (0x2000 << seed);
        let share = job.find(&[], Vec::new(), version, &target, seed, false);
        let seq = m.submit(channel, &share, false).await?;
        assert_eq!(m.verdict(channel, seq).await?, Ok(()), "share {seed}");
    }
    pool_accepts(&s.pool, 3).await?;
    let stats = s.pool.stats();
    assert_eq!(
        stats.accepted, 3,
        "every share met the pool's target and was valid there"
    );
    assert_eq!(
        stats.workers["farm.std1"].accepted, 3,
        "user_identity goes up as the worker"
    );
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn extended_channel_shares_reach_the_pool() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    assert!(matches!(m.setup(0).await?, Received::SetupSuccess { .. }));
    m.open_extended(1, "farm.ext1", 4).await?;
    let (channel, target, prefix, size) = match m.recv().await? {
        Some(Received::OpenExtendedSuccess {
            request_id: 1,
            channel_id,
            target,
            extranonce_size,
            extranonce_prefix,
            ..
        }) => (channel_id, target, extranonce_prefix, extranonce_size),
        other => bail!("expected OpenExtendedMiningChannel.Success, got {other:?}"),
    };
    assert_eq!(
        prefix.len(),
        4 + 4,
        "pool extranonce1 + the proxy's 2-byte slot and zero padding up to the miner's part"
    );
    assert_eq!(
        size, 4,
        "what the miner asked for: the smaller it is, the more pools it fits on failover"
    );
    let job = m.first_job(channel).await?;
    assert!(job.merkle_root.is_none() && !job.coinbase_prefix.is_empty());
    for seed in 0..3u32 {
        let extranonce = (0..size as u8).map(|b| b ^ seed as u8).collect();
        let share = job.find(
            &prefix,
            extranonce,
            job.version | 0x4000,
            &target,
            seed,
            false,
        );
        let seq = m.submit(channel, &share, true).await?;
        assert_eq!(m.verdict(channel, seq).await?, Ok(()), "share {seed}");
    }
    pool_accepts(&s.pool, 3).await?;
    assert_eq!(s.pool.stats().workers["farm.ext1"].accepted, 3);
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn invalid_shares_get_the_spec_error_codes() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    m.setup(0).await?;
    m.open_extended(1, "w", 0).await?;
    let (channel, target, prefix, size) = match m.recv().await? {
        Some(Received::OpenExtendedSuccess {
            channel_id,
            target,
            extranonce_prefix,
            extranonce_size,
            ..
        }) => (
            channel_id,
            target,
            extranonce_prefix,
            extranonce_size as usize,
        ),
        other => bail!("expected OpenExtendedMiningChannel.Success, got {other:?}"),
    };
    let job = m.first_job(channel).await?;
    let good = job.find(&prefix, vec![1; size], job.version, &target, 1, false);
    let seq = m.submit(channel, &good, true).await?;
    assert_eq!(m.verdict(channel, seq).await?, Ok(()));

    let mut cases = vec![(good.clone(), "duplicate-share")];
    cases.push((
        job.find(&prefix, vec![2; size], job.version, &target, 2, true),
        "difficulty-too-low",
    ));
    let mut unknown = good.clone();
    unknown.job_id = job.job_id.wrapping_add(1_000_000);
    cases.push((unknown, "invalid-job-id"));
    let mut short = good.clone();
    short.extranonce.pop();
    cases.push((short, "bad-extranonce-size"));
    let mut outside = good.clone();
    outside.version ^= 0x0000_0001;
    cases.push((outside, "invalid-non-rollable-version-bit"));
    for (share, code) in cases {
        let seq = m.submit(channel, &share, true).await?;
        assert_eq!(
            m.verdict(channel, seq).await?,
            Err(code.to_owned()),
            "{code}"
        );
    }
    let seq = m.submit(channel + 100, &good, true).await?;
    assert_eq!(
        m.verdict(channel + 100, seq).await?,
        Err("invalid-channel-id".to_owned())
    );
    assert_eq!(s.pool.stats().accepted, 1, "nothing invalid went up");
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn setup_connection_is_checked() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    assert_eq!(
        m.setup(REQUIRES_WORK_SELECTION).await?,
        Received::SetupError {
            flags: REQUIRES_WORK_SELECTION,
            code: "unsupported-feature-flags".into()
        }
    );
    assert_eq!(m.recv().await?, None, "closed after the error");

    let mut m = s.miner().await?;
    assert_eq!(
        m.setup_protocol(common_messages_sv2::Protocol::JobDeclarationProtocol, 0)
            .await?,
        Received::SetupError {
            flags: 0,
            code: "unsupported-protocol".into()
        }
    );

    // Standard-jobs-only connections cannot open extended channels.
    let mut m = s.miner().await?;
    m.setup(REQUIRES_STANDARD_JOBS).await?;
    m.open_extended(3, "w", 0).await?;
    assert_eq!(
        m.recv().await?,
        Some(Received::OpenError {
            request_id: 3,
            code: "extended-channels-not-supported-for-standard-jobs".into()
        })
    );
    s.stop().await;
    Ok(())
}

/// The difficulty of the next `SetTarget` on `channel`.
async fn next_target(m: &mut Sv2Miner, channel: u32) -> Result<f64> {
    let target = m
        .expect("SetTarget", |r| match r {
            Received::SetTarget { channel_id, target } if *channel_id == channel => Some(*target),
            _ => None,
        })
        .await?;
    Ok(hashshift_protocol::share::Target::from_le_bytes(target).to_difficulty())
}

#[tokio::test]
async fn update_channel_moves_the_target() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    m.setup(REQUIRES_STANDARD_JOBS).await?;
    m.open_standard(1, "w", 0.0).await?;
    let channel = match m.recv().await? {
        Some(Received::OpenStandardSuccess { channel_id, .. }) => channel_id,
        other => bail!("expected OpenStandardMiningChannel.Success, got {other:?}"),
    };
    let first = m.first_job(channel).await?;
    // 10 kH/s at 600 shares/min: difficulty 1e4 * 0.1 / 2^32 ≈ 2.3e-7.
    m.update_channel(channel, 1e4, [0xff; 32]).await?;
    let difficulty = next_target(&mut m, channel).await?;
    assert!((difficulty / 2.328e-7 - 1.0).abs() < 0.01, "{difficulty}");
    // The current job is re-issued under a new id, active at once.
    let (job_id, min_ntime) = m
        .expect("re-issued job", |r| match r {
            Received::NewMiningJob {
                job_id, min_ntime, ..
            } => Some((*job_id, *min_ntime)),
            _ => None,
        })
        .await?;
    assert_ne!(job_id, first.job_id);
    assert_eq!(min_ntime, Some(first.ntime));
    // 1 MH/s would mean 2.3e-5, but a miner never gets more than the pool's difficulty:
    // above it every share would go up and be credited at the pool's lower difficulty.
    m.update_channel(channel, 1e6, [0xff; 32]).await?;
    let difficulty = next_target(&mut m, channel).await?;
    assert!((difficulty / DIFF - 1.0).abs() < 1e-6, "{difficulty}");
    // A maximum target the proxy cannot honour is refused.
    m.update_channel(channel, 0.0, [0; 32]).await?;
    assert_eq!(
        m.expect("UpdateChannel.Error", |r| match r {
            Received::UpdateChannelError { code, .. } => Some(code.clone()),
            _ => None,
        })
        .await?,
        "max-target-out-of-range"
    );
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn failover_moves_every_channel_with_set_extranonce_prefix() -> Result<()> {
    let b = sv1_pool("b").await?;
    let s = Setup::start_with(&[&b], "").await?;
    let mut m = s.miner().await?;
    m.setup(0).await?;
    // Two channels on one connection: one standard, one extended.
    m.open_standard(1, "std", 0.0).await?;
    let (std_channel, std_target) = match m.recv().await? {
        Some(Received::OpenStandardSuccess {
            channel_id, target, ..
        }) => (channel_id, target),
        other => bail!("expected OpenStandardMiningChannel.Success, got {other:?}"),
    };
    m.first_job(std_channel).await?;
    m.open_extended(2, "ext", 0).await?;
    let (ext_channel, ext_target, ext_size) = match m.recv().await? {
        Some(Received::OpenExtendedSuccess {
            channel_id,
            target,
            extranonce_size,
            ..
        }) => (channel_id, target, extranonce_size as usize),
        other => bail!("expected OpenExtendedMiningChannel.Success, got {other:?}"),
    };
    m.first_job(ext_channel).await?;
    assert_ne!(std_channel, ext_channel);

    s.pool.kill().await;
    for (channel, target, extended) in [
        (std_channel, std_target, false),
        (ext_channel, ext_target, true),
    ] {
        let prefix = m
            .expect("SetExtranoncePrefix", |r| match r {
                Received::SetExtranoncePrefix { channel_id, prefix } if *channel_id == channel => {
                    Some(prefix.clone())
                }
                _ => None,
            })
            .await?;
        let job = m.next_future_job(channel).await?;
        let share = if extended {
            job.find(&prefix, vec![5; ext_size], job.version, &target, 3, false)
        } else {
            job.find(&[], Vec::new(), job.version, &target, 3, false)
        };
        let seq = m.submit(channel, &share, extended).await?;
        assert_eq!(m.verdict(channel, seq).await?, Ok(()), "channel {channel}");
    }
    pool_accepts(&b, 2).await?;
    let stats = b.stats();
    assert_eq!(
        stats.workers["std"].accepted, 1,
        "the standard channel moved to b"
    );
    assert_eq!(
        stats.workers["ext"].accepted, 1,
        "the extended channel moved to b"
    );
    s.stop().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_miner_pinning_another_authority_fails_the_handshake() -> Result<()> {
    let s = Setup::start("").await?;
    let other = KeyFile::new()?;
    let result = Sv2Miner::connect(s.proxy.listen_addrs()[0], other.public.to_bytes()).await;
    let Err(e) = result else {
        bail!("the handshake must fail with the wrong authority key");
    };
    assert!(e.to_string().contains("rejected the handshake"), "{e}");
    s.stop().await;
    Ok(())
}

/// Reads until the peer closes; errors if it does not within the bound.
async fn closed_by_proxy(stream: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 512];
    within("the proxy closing the connection", async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn stalled_and_garbage_handshakes_are_dropped_without_harming_others() -> Result<()> {
    let s = Setup::start(
        "[limits]\nmax_line_bytes = 16384\nsend_queue = 64\nmax_connections = 1000\nhandshake_timeout_secs = 1\n",
    ).await?;
    let mut good = GoodMiner::open(&s).await?;

    let addr = s.proxy.listen_addrs()[0];
    // Stalls half-way through the first handshake message.
    let mut stalled = TcpStream::connect(addr).await?;
    stalled.write_all(&[0x42; 10]).await?;
    // Completes the key exchange with random bytes, then sends garbage instead of frames.
    let mut garbage = TcpStream::connect(addr).await?;
    garbage.write_all(&[0x17; 64]).await?;
    let mut reply = [0u8; 234];
    within("handshake reply", garbage.read_exact(&mut reply)).await??;
    garbage.write_all(&[0xAB; 200]).await?;
    closed_by_proxy(&mut garbage).await?;
    // Never sends anything after connecting.
    let mut silent = TcpStream::connect(addr).await?;
    closed_by_proxy(&mut stalled).await?;
    closed_by_proxy(&mut silent).await?;

    // The good miner, past the handshake timeout, is unaffected.
    good.share_accepted(9).await?;
    pool_accepts(&s.pool, 1).await?;
    s.stop().await;
    Ok(())
}

#[test]
fn sv2_listeners_need_an_authority_key_file() {
    let text = "[[downstream]]\nprotocol = \"sv2\"\nlisten = \"127.0.0.1:0\"\n\
                [[upstream]]\nurl = \"stratum+tcp://127.0.0.1:1\"\nuser = \"u\"\n";
    let e = Config::from_toml(text).unwrap_err().to_string();
    assert!(e.contains("authority_key_file"), "{e}");
    let e = Config::from_toml(&text.replace("\"sv2\"", "\"sv1\"").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nauthority_key_file = \"k\"\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("only SV2"), "{e}");
}

/// A raw Noise session with the proxy, through our own protocol crate: the test can then
/// encrypt whatever bytes it likes.
async fn raw_session(
    addr: std::net::SocketAddr,
    authority: hashshift_protocol::noise::AuthorityPublicKey,
) -> Result<(TcpStream, hashshift_protocol::noise::transport::CipherHalf)> {
    use hashshift_protocol::noise::{Initiator, RESPONDER_MESSAGE_LEN};
    let mut stream = TcpStream::connect(addr).await?;
    let mut initiator = Initiator::new(Some(authority), &mut rand::rng());
    stream.write_all(&initiator.step_0()?).await?;
    let mut reply = [0u8; RESPONDER_MESSAGE_LEN];
    within("handshake reply", stream.read_exact(&mut reply)).await??;
    let now = hashshift_proxy::time::unix_secs_u32();
    let (transport, _) = initiator.step_2(&reply, now)?;
    let (send, _recv) = transport.split();
    Ok((stream, send))
}

/// `plain` encrypted as one Noise transport message.
fn seal(cipher: &mut hashshift_protocol::noise::transport::CipherHalf, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.extend_from_slice(&[0u8; 16]);
    cipher.encrypt_in_place(&mut buf).expect("fresh cipher");
    buf
}

#[tokio::test]
async fn oversized_and_tampered_frames_close_only_their_connection() -> Result<()> {
    use hashshift_protocol::sv2::frame::Header;
    // A long handshake timeout: a close within it is the frame check, not the timer.
    let s = Setup::start(
        "[limits]\nmax_line_bytes = 16384\nsend_queue = 64\nmax_connections = 1000\nhandshake_timeout_secs = 60\n",
    )
    .await?;
    let mut good = GoodMiner::open(&s).await?;
    let addr = s.proxy.listen_addrs()[0];

    // A header announcing 16 MiB (the limit is 16 KiB): refused on the header, before any
    // of the payload is sent, let alone buffered.
    let (mut big, mut cipher) = raw_session(addr, s.key.public).await?;
    let header = Header {
        extension_type: 0,
        channel_msg: false,
        msg_type: 0x00,
        msg_length: (1 << 24) - 1,
    };
    big.write_all(&seal(&mut cipher, &header.encode())).await?;
    closed_by_proxy(&mut big).await?;

    // A frame whose ciphertext was tampered with: the MAC fails, the connection closes.
    let (mut tampered, mut cipher) = raw_session(addr, s.key.public).await?;
    let header = Header {
        msg_length: 0,
        ..header
    };
    let mut sealed = seal(&mut cipher, &header.encode());
    sealed[3] ^= 0x01;
    tampered.write_all(&sealed).await?;
    closed_by_proxy(&mut tampered).await?;

    // The good miner is unaffected.
    good.share_accepted(5).await?;
    pool_accepts(&s.pool, 1).await?;
    s.stop().await;
    Ok(())
}

/// The next `SetTarget` on `channel` (its raw target), then the job re-issued under a new id.
async fn retargeted_job(
    m: &mut Sv2Miner,
    channel: u32,
    old: &MiningJob,
) -> Result<([u8; 32], MiningJob)> {
    let target = m
        .expect("SetTarget", |r| match r {
            Received::SetTarget { channel_id, target } if *channel_id == channel => Some(*target),
            _ => None,
        })
        .await?;
    let job_id = m
        .expect("re-issued job", |r| match r {
            Received::NewMiningJob {
                channel_id, job_id, ..
            }
            | Received::NewExtendedJob {
                channel_id, job_id, ..
            } if *channel_id == channel => Some(*job_id),
            _ => None,
        })
        .await?;
    assert_ne!(job_id, old.job_id, "re-issued under a new id");
    Ok((
        target,
        MiningJob {
            job_id,
            ..old.clone()
        },
    ))
}

/// Issue 12 on SV2: `UpdateChannel` lowers the target and re-issues the pool's job under a
/// new id; a share resubmitted under it is answered `duplicate-share`, reaches the pool once,
/// and is credited once, above and below the pool's target.
async fn update_channel_reissue_keeps_duplicates_out(extended: bool) -> Result<()> {
    use hashshift_protocol::share::Target;
    use hashshift_proxy::telemetry::RejectReason;
    let duplicate = Err("duplicate-share".to_string());

    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    m.setup(if extended { 0 } else { REQUIRES_STANDARD_JOBS })
        .await?;
    let ch = m.open_channel(1, "farm.dup", extended).await?;
    let first = m.first_job(ch.id).await?;
    let extranonce = vec![7; ch.size];
    let share = first.find(
        &ch.prefix,
        extranonce.clone(),
        first.version,
        &ch.target,
        1,
        false,
    );
    let seq = m.submit(ch.id, &share, extended).await?;
    assert_eq!(m.verdict(ch.id, seq).await?, Ok(()));
    pool_accepts(&s.pool, 1).await?;

    // 10 kH/s: a difficulty below the pool's; SetTarget and the same job under a new id.
    m.update_channel(ch.id, 1e4, [0xff; 32]).await?;
    let (target, second) = retargeted_job(&mut m, ch.id, &first).await?;
    let again = FoundShare {
        job_id: second.job_id,
        ..share.clone()
    };
    let seq = m.submit(ch.id, &again, extended).await?;
    assert_eq!(m.verdict(ch.id, seq).await?, duplicate);

    // Below the pool's target: credited by the proxy once, a duplicate under the next id.
    let pool_target = Target::from_difficulty(DIFF)?;
    let low = (100..)
        .map(|seed| {
            second.find(
                &ch.prefix,
                extranonce.clone(),
                second.version,
                &target,
                seed,
                false,
            )
        })
        .find(|f| !pool_target.is_met_by(&second.hash(&ch.prefix, f)))
        .context("a share below the pool's target")?;
    let seq = m.submit(ch.id, &low, extended).await?;
    assert_eq!(m.verdict(ch.id, seq).await?, Ok(()));
    m.update_channel(ch.id, 5e3, [0xff; 32]).await?;
    let (_, third) = retargeted_job(&mut m, ch.id, &second).await?;
    for f in [&low, &share] {
        let again = FoundShare {
            job_id: third.job_id,
            ..f.clone()
        };
        let seq = m.submit(ch.id, &again, extended).await?;
        assert_eq!(m.verdict(ch.id, seq).await?, duplicate);
    }

    let stats = s.pool.stats();
    assert_eq!(stats.accepted, 1, "the pool got the share once");
    assert_eq!(stats.rejected_total(), 0, "no duplicate reached the pool");
    let miners = &s.proxy.instruments().sv2.shares;
    assert_eq!(miners.snapshot().accepted, 2, "each share credited once");
    assert_eq!(miners.reasons.get(RejectReason::Duplicate), 3);
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn update_channel_reissue_keeps_duplicates_out_standard() -> Result<()> {
    update_channel_reissue_keeps_duplicates_out(false).await
}

#[tokio::test]
async fn update_channel_reissue_keeps_duplicates_out_extended() -> Result<()> {
    update_channel_reissue_keeps_duplicates_out(true).await
}
