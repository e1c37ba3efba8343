//! Group channels, end to end over 127.0.0.1: an SV2 miner that did not set
//! `REQUIRES_STANDARD_JOBS` gets one job on its group channel for all its channels, standard
//! and extended, and mines it on each with that channel's own extranonce; a miner that set
//! the flag keeps getting a `NewMiningJob` per channel.

mod support;

use anyhow::Result;
use support::sv2_miner::{MiningJob, OpenedChannel, REQUIRES_STANDARD_JOBS, Received, Sv2Miner};
use support::sv2_site::{Setup, pool_accepts};

/// Opens a channel and takes its own first job.
async fn open(m: &mut Sv2Miner, request_id: u32, extended: bool) -> Result<OpenedChannel> {
    let user = if extended { "farm.ext" } else { "farm.std" };
    let ch = m.open_channel(request_id, user, extended).await?;
    m.next_future_job(ch.id).await?;
    Ok(ch)
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
    m.mine(&job, &std, 1).await?;
    m.mine(&job, &ext, 2).await?;

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
    m.mine(&active, &std, 3).await?;
    m.mine(&active, &ext, 4).await?;
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
        m.mine(&job, ch, ch.id).await?;
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
