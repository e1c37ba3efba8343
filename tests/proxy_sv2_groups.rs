//! Group channels, end to end over 127.0.0.1: an SV2 miner that did not set
//! `REQUIRES_STANDARD_JOBS` gets one job on its group channel for all its channels, standard
//! and extended, and mines it on each with that channel's own extranonce; a miner that set
//! the flag keeps getting a `NewMiningJob` per channel.

mod support;

use anyhow::{Result, bail};
use support::sv2_miner::{MiningJob, REQUIRES_STANDARD_JOBS, Received, Sv2Miner};
use support::sv2_site::{Setup, pool_accepts};

/// A channel as the miner sees it.
struct Opened {
    id: u32,
    group: u32,
    target: [u8; 32],
    prefix: Vec<u8>,
    /// Rollable extranonce bytes (0 for standard channels).
    size: usize,
}

async fn open(m: &mut Sv2Miner, request_id: u32, extended: bool) -> Result<Opened> {
    if extended {
        m.open_extended(request_id, "farm.ext", 4).await?;
    } else {
        m.open_standard(request_id, "farm.std", 0.0).await?;
    }
    let opened = m
        .expect("Open*Success", |r| match r {
            Received::OpenStandardSuccess {
                request_id: r,
                channel_id,
                target,
                extranonce_prefix,
                group_channel_id,
            } if *r == request_id => Some(Opened {
                id: *channel_id,
                group: *group_channel_id,
                target: *target,
                prefix: extranonce_prefix.clone(),
                size: 0,
            }),
            Received::OpenExtendedSuccess {
                request_id: r,
                channel_id,
                target,
                extranonce_size,
                extranonce_prefix,
                group_channel_id,
            } if *r == request_id => Some(Opened {
                id: *channel_id,
                group: *group_channel_id,
                target: *target,
                prefix: extranonce_prefix.clone(),
                size: usize::from(*extranonce_size),
            }),
            _ => None,
        })
        .await?;
    // Its own first job, on the channel.
    m.next_future_job(opened.id).await?;
    Ok(opened)
}

/// Mines `job` (a group's extended job) on channel `ch` and expects the share accepted.
async fn mine(m: &mut Sv2Miner, job: &MiningJob, ch: &Opened, seed: u32) -> Result<()> {
    let extranonce = vec![seed as u8; ch.size];
    let share = job.find(&ch.prefix, extranonce, job.version, &ch.target, seed, false);
    let seq = m.submit(ch.id, &share, ch.size > 0).await?;
    match m.verdict(ch.id, seq).await? {
        Ok(()) => Ok(()),
        Err(code) => bail!("share on channel {} rejected: {code}", ch.id),
    }
}

#[tokio::test]
async fn one_group_job_serves_standard_and_extended_channels() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    m.setup(0).await?;
    let std = open(&mut m, 1, false).await?;
    let ext = open(&mut m, 2, true).await?;
    assert_eq!(std.group, ext.group, "one group per connection");
    assert!(std.group != std.id && std.group != ext.id);

    // A new block: one future job + SetNewPrevHash on the group, nothing per channel.
    s.pool.new_job(true);
    let job = m.next_future_job(std.group).await?;
    assert!(job.merkle_root.is_none(), "a group job is an extended job");
    let per_channel = m.inbox.iter().any(|r| match r {
        Received::NewMiningJob { .. } => true,
        Received::NewExtendedJob { channel_id, .. } => *channel_id != std.group,
        _ => false,
    });
    assert!(
        !per_channel,
        "no per-channel job besides the group's: {:?}",
        m.inbox
    );
    // The standard channel's merkle root comes from the coinbase with its whole extranonce.
    mine(&mut m, &job, &std, 1).await?;
    mine(&mut m, &job, &ext, 2).await?;

    // A job on the same block: active at once, still one message for both.
    s.pool.new_job(false);
    let active = m
        .expect("an active group job", |r| match r {
            Received::NewExtendedJob {
                channel_id,
                job_id,
                min_ntime: Some(ntime),
                version,
                merkle_path,
                coinbase_prefix,
                coinbase_suffix,
                ..
            } if *channel_id == std.group => Some(MiningJob {
                channel_id: *channel_id,
                job_id: *job_id,
                version: *version,
                ntime: *ntime,
                merkle_root: None,
                merkle_path: merkle_path.clone(),
                coinbase_prefix: coinbase_prefix.clone(),
                coinbase_suffix: coinbase_suffix.clone(),
                ..job.clone()
            }),
            _ => None,
        })
        .await?;
    mine(&mut m, &active, &std, 3).await?;
    mine(&mut m, &active, &ext, 4).await?;
    pool_accepts(&s.pool, 4).await?;
    assert_eq!(s.pool.stats().rejected_total(), 0);
    s.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_miner_requiring_standard_jobs_gets_one_per_channel() -> Result<()> {
    let s = Setup::start("").await?;
    let mut m = s.miner().await?;
    m.setup(REQUIRES_STANDARD_JOBS).await?;
    let a = open(&mut m, 1, false).await?;
    let b = open(&mut m, 2, false).await?;
    s.pool.new_job(true);
    for ch in [&a, &b] {
        let job = m.next_future_job(ch.id).await?;
        assert!(
            job.merkle_root.is_some(),
            "NewMiningJob with its merkle root"
        );
        mine(&mut m, &job, ch, ch.id).await?;
    }
    assert!(
        !m.inbox.iter().any(
            |r| matches!(r, Received::NewExtendedJob { channel_id, .. } if *channel_id == a.group)
        ),
        "no group job"
    );
    s.stop().await;
    Ok(())
}
