//! An honest miner in its own task: it follows the newest job, submits a real share every
//! [`PACE`], and keeps reading its socket all the time (as firmware does), so the proxy never
//! has a reason to drop it. Any disconnect, or any rejection other than a stale job (a job
//! replaced while the share was on its way), ends it with an error that the test sees.
//!
//! Needs a multi-threaded runtime: nonce search runs in `block_in_place`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use hashshift_protocol::sv1::{Notify, ServerMessage, ServerNotification};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::miner::{Miner, within};

/// Time between an answer and the next share.
pub const PACE: Duration = Duration::from_millis(100);

/// What an honest miner saw, once stopped.
#[derive(Debug)]
pub struct HonestReport {
    pub worker: String,
    /// Shares the proxy answered `true` (each one after the pool accepted it).
    pub accepted: u64,
    /// Shares answered "job not found" because the job changed while they were in flight.
    pub stale: u64,
}

/// A running honest miner.
pub struct Honest {
    pub worker: String,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<Result<HonestReport>>,
}

impl Honest {
    /// Connects, handshakes as `worker` and starts mining.
    pub async fn start(addr: SocketAddr, worker: &str) -> Result<Honest> {
        let mut miner = Miner::connect(addr).await?;
        let (_, job) = miner.handshake(worker, None).await?;
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            miner,
            job,
            worker.to_owned(),
            accepted.clone(),
            stop.clone(),
        ));
        Ok(Honest {
            worker: worker.to_owned(),
            accepted,
            stop,
            task,
        })
    }

    /// Starts `n` honest miners named `{prefix}{i}`.
    pub async fn start_many(addr: SocketAddr, prefix: &str, n: usize) -> Result<Vec<Honest>> {
        let mut all = Vec::new();
        for i in 0..n {
            all.push(Honest::start(addr, &format!("{prefix}{i}")).await?);
        }
        Ok(all)
    }

    /// Whether it is still mining (not stopped, not disconnected).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Shares accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Waits until `more` shares beyond `from` are accepted; fails if the miner ended.
    pub async fn wait_accepted(&self, from: u64, more: u64) -> Result<()> {
        let what = format!("{} getting {more} more shares accepted", self.worker);
        within(&what, async {
            while self.accepted() < from + more {
                if self.task.is_finished() {
                    bail!("{} stopped mining", self.worker);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
        .await?
    }

    /// Stops mining and returns what it saw, or why it failed.
    pub async fn stop(self) -> Result<HonestReport> {
        self.stop.cancel();
        within("honest miner stopping", self.task).await??
    }
}

/// Counts of every honest miner's accepted shares.
pub fn accepted_counts(miners: &[Honest]) -> Vec<u64> {
    miners.iter().map(Honest::accepted).collect()
}

/// Waits until every miner has `more` accepted shares beyond `from` (same order).
pub async fn all_get_accepted(miners: &[Honest], from: &[u64], more: u64) -> Result<()> {
    for (m, from) in miners.iter().zip(from) {
        m.wait_accepted(*from, more).await?;
    }
    Ok(())
}

/// Stops every miner; fails with the first one that failed.
pub async fn stop_all(miners: Vec<Honest>) -> Result<Vec<HonestReport>> {
    let mut reports = Vec::new();
    for m in miners {
        reports.push(m.stop().await?);
    }
    Ok(reports)
}

async fn run(
    mut m: Miner,
    first: Notify,
    worker: String,
    accepted: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<HonestReport> {
    let mut report = HonestReport {
        worker: worker.clone(),
        accepted: 0,
        stale: 0,
    };
    // The difficulty in force when each job arrived is the one its shares are judged at.
    let mut difficulty = m.difficulty;
    let mut job = (first, difficulty);
    for seed in 0u64.. {
        while let Some(note) = m.notes.pop_front() {
            match note {
                ServerNotification::SetDifficulty(d) => difficulty = d,
                ServerNotification::Notify(n) => job = (n, difficulty),
                _ => {}
            }
        }
        m.difficulty = job.1;
        let share = tokio::task::block_in_place(|| m.find_share(&job.0, seed, None));
        match m.submit(&share, &worker).await {
            Ok(Ok(())) => {
                report.accepted += 1;
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(21)) => report.stale += 1,
            Ok(Err(code)) => bail!("{worker}: honest share rejected with code {code}"),
            Err(e) => return Err(e.context(format!("{worker}: submitting"))),
        }
        // Pause, but keep reading: a miner that stops reading would rightly be dropped.
        let pause = tokio::time::sleep(PACE);
        tokio::pin!(pause);
        loop {
            // Both branches are cancel-safe; `recv` only reads into the miner's buffer.
            tokio::select! {
                _ = stop.cancelled() => return Ok(report),
                _ = &mut pause => break,
                message = m.recv() => match message? {
                    None => bail!("{worker}: the proxy closed the connection"),
                    Some(ServerMessage::Notification { notification, .. }) => {
                        m.notes.push_back(notification);
                    }
                    Some(ServerMessage::Response(r)) => bail!("{worker}: stray response {r:?}"),
                },
            }
        }
    }
    Err(anyhow!("{worker}: out of extranonce2 seeds"))
}
