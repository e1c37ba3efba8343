//! What a connection's task waits on besides its socket: each channel's upstream work
//! (`watch`) and pool-manager commands (a [`Mailbox`]), merged into one stream of [`Event`]s tagged
//! with the channel id.
//!
//! A channel's work stream ends when its `stop` token is cancelled (the channel moved to
//! another connection or closed); its control stream ends when the manager drops the sender
//! (the channel was released), so nothing outlives its channel for long.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::pool_link::Control;
use crate::pool_link::mailbox::Mailbox;
use crate::pool_link::work::WorkState;

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

/// A channel's commands from the pool manager, until the manager drops its sender.
pub fn control_stream(channel: u32, rx: Mailbox) -> BoxStream<'static, (u32, Event)> {
    futures_util::stream::unfold(rx, move |mut rx| async move {
        let c = rx.recv().await?;
        Some(((channel, Event::Control(c)), rx))
    })
    .boxed()
}
