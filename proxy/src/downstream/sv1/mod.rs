//! One Stratum V1 miner connection: the I/O loop around its [`session::Session`].
//!
//! The task owns the socket and the session state. Events (lines from the miner, new work
//! from the pool connection, the pool's verdicts on forwarded shares, the manager's
//! commands, a slow tick for vardiff) are handled synchronously by the session, which only
//! appends bytes to its [`Outbox`]; after each batch of events the outbox is flushed with
//! non-blocking writes. So the order the miner sees is the order the session decided
//! (`mining.set_difficulty` always before the `mining.notify` it applies to), several replies
//! share one `write`, and a miner that stops reading is dropped when its bounded outbox
//! fills or stops draining, never blocking anyone.
//!
//! Work arrives through the upstream connection's `watch` (latest wins); the
//! `mining.notify` line is encoded once per upstream job and the same bytes go to every miner.

mod reader;
mod session;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hashshift_protocol::sv1::{ClientMessage, ClientRequest, Sv1Error};
use tokio::net::tcp::ReadHalf;
use tokio::time::Instant;
use tracing::{info, warn};

use super::listener::Accepted;
use super::outbox::Outbox;
use super::vardiff::VardiffSettings;
use crate::pool_link::mailbox::{MailboxSender, mailbox};
use crate::pool_link::miner::MinerShared;
use crate::pool_link::{Control, Pools};
use crate::telemetry::DownstreamStats;
use reader::{Fill, LineReader};
use session::{End, Session};

/// Settings every SV1 session shares.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// Vardiff bounds and rate.
    pub vardiff: VardiffSettings,
    /// Starting difficulty.
    pub initial_difficulty: f64,
    /// Longest line accepted.
    pub max_line_bytes: usize,
    /// Most bytes waiting for one miner before it is dropped as not reading.
    pub max_outbox_bytes: usize,
    /// Time to subscribe and authorize.
    pub handshake_timeout: Duration,
    /// An authorized miner that sends nothing at all for this long is dropped.
    pub idle_timeout: Duration,
    /// Output waiting this long without any of it being written means the miner stopped
    /// reading.
    pub write_timeout: Duration,
    /// How long shutdown waits for shares in flight.
    pub drain_grace: Duration,
    /// SV1 totals and latency histograms (metrics).
    pub stats: Arc<DownstreamStats>,
}

/// How often an idle miner's vardiff is checked (it is also checked on every share).
const VARDIFF_TICK: Duration = Duration::from_secs(5);

/// Runs one miner connection to its end.
pub async fn serve(
    mut accepted: Accepted,
    settings: Arc<SessionSettings>,
    manager: Arc<dyn Pools>,
) {
    let _open = settings.stats.connection();
    let shared =
        Arc::new(MinerShared::new(accepted.id, accepted.peer).with_totals(&settings.stats.shares));
    let (control_tx, mut control_rx) = mailbox();
    let (mut read, writer) = accepted.stream.split();
    let mut reader = LineReader::new(settings.max_line_bytes);
    let mut s = Session::new(settings.clone(), shared.clone());
    let mut out = Outbox::new(settings.max_outbox_bytes);
    // One timer serves four deadlines (handshake, stuck writer, idle miner, vardiff tick):
    // each timer costs memory in every connection's task, and only the earliest matters.
    let handshake_deadline = Instant::now() + settings.handshake_timeout;
    let mut next_tick = Instant::now() + VARDIFF_TICK;
    // Reads only note the time (no timer reset per read); the idle check moves its deadline
    // up to `last_read + idle_timeout` when it fires, so it fires at most once per timeout
    // while the miner talks.
    let mut last_read = Instant::now();
    let mut idle_check = last_read + settings.idle_timeout;
    let timer = tokio::time::sleep_until(handshake_deadline);
    tokio::pin!(timer);

    let end: End = loop {
        let working = s.is_working();
        let write_deadline = out.deadline(settings.write_timeout);
        let mut deadline = next_tick;
        if working {
            deadline = deadline.min(idle_check);
        } else {
            deadline = deadline.min(handshake_deadline);
        }
        if let Some(d) = write_deadline {
            deadline = deadline.min(d);
        }
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let step: Result<(), End> = tokio::select! {
            _ = accepted.shutdown.cancelled() => Err(End::Shutdown),
            () = &mut timer => {
                let now = Instant::now();
                if !working && now >= handshake_deadline {
                    Err(End::HandshakeTimeout)
                } else if write_deadline.is_some_and(|d| now >= d) {
                    Err(End::Stuck)
                } else if working && now >= idle_check {
                    idle_check = last_read + settings.idle_timeout;
                    if now >= idle_check {
                        Err(End::Idle(settings.idle_timeout.as_secs()))
                    } else {
                        Ok(())
                    }
                } else if now >= next_tick {
                    next_tick = now + VARDIFF_TICK;
                    s.on_tick(&mut out)
                } else {
                    Ok(())
                }
            }
            writable = writer.writable(), if !out.is_empty() => writable.map_err(End::Io),
            control = control_rx.recv() => match control {
                Some(Control::Reassign(a)) => { s.reassign(a); Ok(()) }
                Some(Control::Kick) | None => Err(End::Kicked),
            },
            changed = session::work_changed(&mut s.work) => match changed {
                Ok(()) => s.on_work(&mut out),
                // The connection task ended (shutdown): nothing more will come.
                Err(_) => { s.drop_work(); Ok(()) }
            },
            Some(verdict) = s.pending.next(), if !s.pending.is_empty() => s.on_upstream_verdict(verdict, &mut out),
            readable = read.readable() => match readable {
                Err(e) => Err(End::Io(e)),
                Ok(()) => {
                    last_read = Instant::now();
                    on_readable(&mut s, &mut reader, &mut read, &manager, &control_tx, &mut out).await
                }
            },
        };
        if let Err(end) = step {
            break end;
        }
        if let Err(e) = out.flush_now(&writer) {
            break End::Io(e);
        }
    };

    if end.relays_pending() {
        // Shares already sent to the pool still get their verdict relayed, within a grace
        // period; then whatever is still buffered (a last reply, a client.reconnect) gets a
        // short, bounded chance to reach the miner.
        if !s.pending.is_empty() {
            let grace = tokio::time::sleep(settings.drain_grace);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    _ = &mut grace => break,
                    verdict = s.pending.next() => match verdict {
                        Some(v) => {
                            if s.on_upstream_verdict(v, &mut out).is_err() { break; }
                            if out.flush_now(&writer).is_err() { break; }
                        }
                        None => break,
                    },
                }
            }
        }
        let flush = async {
            while out.flush_now(&writer).is_ok() && !out.is_empty() {
                if writer.writable().await.is_err() {
                    break;
                }
            }
        };
        let _ =
            tokio::time::timeout(settings.write_timeout.min(Duration::from_secs(2)), flush).await;
    }
    manager.release(shared.id);
    let snapshot = shared.counters.snapshot();
    match end {
        End::Closed | End::Shutdown | End::Reconnected | End::Kicked => {
            info!(reason = %end, accepted = snapshot.accepted, rejected = snapshot.rejected, "miner disconnected")
        }
        _ => {
            warn!(reason = %end, accepted = snapshot.accepted, rejected = snapshot.rejected, "miner dropped")
        }
    }
}

/// Reads what the miner sent and handles every complete line in it.
async fn on_readable(
    s: &mut Session,
    reader: &mut LineReader,
    read: &mut ReadHalf<'_>,
    manager: &Arc<dyn Pools>,
    control: &MailboxSender,
    out: &mut Outbox,
) -> Result<(), End> {
    let fill = reader.fill(read).map_err(End::Io)?;
    while let Some(item) = reader.next_line() {
        on_line(s, item, manager, control, out).await?;
    }
    if fill == Fill::Eof {
        if let Some(item) = reader.last_line() {
            on_line(s, item, manager, control, out).await?;
        }
        return Err(End::Closed);
    }
    Ok(())
}

/// One decoded line (or decode error) from the miner.
async fn on_line(
    s: &mut Session,
    item: Result<ClientMessage, Sv1Error>,
    manager: &Arc<dyn Pools>,
    control: &MailboxSender,
    out: &mut Outbox,
) -> Result<(), End> {
    let message = match item {
        Err(Sv1Error::LineTooLong { max }) => return Err(End::LineTooLong(max)),
        Err(e) => return s.on_bad_line(&e, out),
        Ok(m) => m,
    };
    // Configure and subscribe need a pool; waiting for one is the only slow step, and a
    // rare one, so it lives in its own boxed future (the session's future stays small).
    if matches!(
        &message,
        ClientMessage::Request {
            request: ClientRequest::Configure(_) | ClientRequest::Subscribe(_),
            ..
        }
    ) && !s.is_assigned()
    {
        Box::pin(s.ensure_assigned(manager, control)).await?;
    }
    s.on_message(message, out)
}
