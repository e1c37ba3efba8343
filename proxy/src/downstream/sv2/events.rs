//! What a connection's task waits on besides its socket: each channel's upstream work
//! (`watch`) and pool-manager commands (a [`Mailbox`]), merged into one stream of [`Event`]s tagged
//! with the channel id, and the initial slot assignment of a new channel.
//!
//! A channel's work stream ends when its `stop` token is cancelled (the channel moved to
//! another connection or closed); its control stream ends when the manager drops the sender
//! (the channel was released), so nothing outlives its channel for long.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pool_link::mailbox::{Mailbox, mailbox};
use crate::pool_link::miner::MinerShared;
use crate::pool_link::work::WorkState;
use crate::pool_link::{Assignment, Control, Pools};

/// What a channel's merged streams deliver.
pub enum Event {
    /// New work on the channel's connection, for the channel's `generation`.
    Work(u64, Arc<WorkState>),
    /// A command from the pool manager.
    Control(Control),
}

/// A channel's work updates until `stop` (the channel moved or closed) or the upstream
/// connection ends. The value current now counts as seen.
pub fn work_stream(
    channel: u32,
    generation: u64,
    mut rx: watch::Receiver<Arc<WorkState>>,
    stop: CancellationToken,
) -> BoxStream<'static, (u32, Event)> {
    rx.borrow_and_update();
    futures_util::stream::unfold((rx, stop), move |(mut rx, stop)| async move {
        tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            changed = rx.changed() => {
                changed.ok()?;
                let work = rx.borrow_and_update().clone();
                Some(((channel, Event::Work(generation, work)), (rx, stop)))
            }
        }
    })
    .boxed()
}

pub fn control_stream(channel: u32, rx: Mailbox) -> BoxStream<'static, (u32, Event)> {
    futures_util::stream::unfold(rx, move |mut rx| async move {
        let c = rx.recv().await?;
        Some(((channel, Event::Control(c)), rx))
    })
    .boxed()
}

/// Takes an extranonce slot for a new channel, waiting (up to `wait`) for a pool that is up
/// and has work. The manager holds the channel's control sender. (A free function: the
/// connection state is not `Sync` and must not be borrowed across this wait.)
pub async fn assign(
    manager: &dyn Pools,
    shared: &Arc<MinerShared>,
    wait: Duration,
) -> Option<(Assignment, Mailbox, Arc<WorkState>)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (tx, rx) = mailbox();
        if let Some(a) = manager.assign(shared.id, tx, shared.clone()) {
            let mut work = a.conn.work.clone();
            let ready = tokio::time::timeout_at(deadline, work.wait_for(|w| w.is_ready()))
                .await
                .is_ok_and(|r| r.is_ok());
            if !ready {
                manager.release(shared.id);
                return None;
            }
            let current = work.borrow().clone();
            return Some((a, rx, current));
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
