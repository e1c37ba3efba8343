//! One SV1 miner connection: the I/O task around its [`Session`].
//!
//! The task owns the socket, the session, the miner's work `watch` and its mailbox from the
//! pool manager, and the shares waiting for the pool's verdict. It reads the clock (tokio's)
//! for each event, hands the event to the session with that time, performs the session's
//! [`Action`]s (ask the manager for a place, queue a share for the pool), flushes the
//! [`Outbox`] with non-blocking writes, and sleeps until the earliest of the session's
//! deadline ([`Session::poll_timeout`]) and the outbox's write deadline. So several replies
//! share one `write`, and a miner that stops reading is dropped when its bounded outbox fills
//! or stops draining, never blocking anyone.
//!
//! Work arrives through the upstream connection's `watch` (latest wins); the
//! `mining.notify` line is encoded once per upstream job and the same bytes go to every miner.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hashshift_protocol::sv1::Id;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::SessionSettings;
use super::reader::{Fill, LineReader};
use super::state::{Action, End, Place, Session, ShareUp, Verdict};
use crate::downstream::listener::Accepted;
use crate::downstream::outbox::Outbox;
use crate::pool_link::mailbox::{MailboxSender, mailbox};
use crate::pool_link::miner::MinerShared;
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::pool_link::work::WorkState;
use crate::pool_link::{Assignment, Control, Pools};

/// A share sent to the pool, waiting for its verdict.
struct PendingShare {
    id: Option<Id>,
    credited: f64,
    read_at: std::time::Instant,
    reply: oneshot::Receiver<SubmitOutcome>,
}

impl Future for PendingShare {
    type Output = Verdict;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Verdict> {
        let outcome = match Pin::new(&mut self.reply).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.unwrap_or(SubmitOutcome::Lost("pool connection ended")),
        };
        Poll::Ready(Verdict {
            id: self.id.take().unwrap_or(Id::Null),
            outcome,
            credited: self.credited,
            read_at: self.read_at,
        })
    }
}

/// Waits for new work on the miner's connection (forever when it has none).
async fn work_changed(
    work: &mut Option<watch::Receiver<Arc<WorkState>>>,
) -> Result<(), watch::error::RecvError> {
    match work.as_mut() {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// The clock as the session takes it (tokio's, so that paused time in tests applies).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Everything the task holds besides the socket.
struct Conn {
    s: Session,
    out: Outbox,
    reader: LineReader,
    shared: Arc<MinerShared>,
    manager: Arc<dyn Pools>,
    control: MailboxSender,
    assignment: Option<Assignment>,
    work: Option<watch::Receiver<Arc<WorkState>>>,
    pending: FuturesUnordered<PendingShare>,
    /// The miner closed its side; lines still buffered are handled first.
    eof: bool,
}

/// Runs one miner connection to its end.
pub async fn serve(
    mut accepted: Accepted,
    settings: Arc<SessionSettings>,
    manager: Arc<dyn Pools>,
) {
    let _open = settings.stats.connection();
    let shared =
        Arc::new(MinerShared::new(accepted.id, accepted.peer).with_totals(&settings.stats.shares));
    let (control, mut control_rx) = mailbox();
    let (mut read, writer) = accepted.stream.split();
    let mut c = Conn {
        s: Session::new(settings.clone(), shared.clone(), now()),
        out: Outbox::new(settings.max_outbox_bytes),
        reader: LineReader::new(settings.max_line_bytes),
        shared: shared.clone(),
        manager,
        control,
        assignment: None,
        work: None,
        pending: FuturesUnordered::new(),
        eof: false,
    };
    // One timer serves every deadline (the session's and the outbox's): each timer costs
    // memory in every connection's task, and only the earliest matters.
    let timer = tokio::time::sleep_until(Instant::from_std(c.s.poll_timeout()));
    tokio::pin!(timer);

    let end: End = loop {
        let write_deadline = c.out.deadline(settings.write_timeout);
        let mut deadline = Instant::from_std(c.s.poll_timeout());
        if let Some(d) = write_deadline {
            deadline = deadline.min(d);
        }
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        // While a request waits for a pool the socket is not read: its lines wait in the
        // kernel, in order, as they would behind a slow answer.
        let reading = !c.s.awaiting_pool() && !c.eof;
        let step: Result<(), End> = tokio::select! {
            _ = accepted.shutdown.cancelled() => Err(End::Shutdown),
            () = &mut timer => {
                // The session's own deadlines first (a handshake timeout is the better reason
                // to give), then the writer's.
                c.s.handle_timeout(now(), &mut c.out).and_then(|()| {
                    match write_deadline {
                        Some(d) if Instant::now() >= d => Err(End::Stuck),
                        _ => Ok(()),
                    }
                })
            }
            writable = writer.writable(), if !c.out.is_empty() => writable.map_err(End::Io),
            command = control_rx.recv() => match command {
                Some(Control::Reassign(a)) => c.reassign(a),
                Some(Control::Kick) | None => Err(End::Kicked),
            },
            changed = work_changed(&mut c.work) => match changed {
                Ok(()) => c.deliver_work(),
                // The connection task ended (shutdown): nothing more will come.
                Err(_) => { c.work = None; c.s.handle_work_ended() }
            },
            Some(verdict) = c.pending.next(), if !c.pending.is_empty() => {
                c.s.handle_verdict(verdict, now(), &mut c.out)
            }
            readable = read.readable(), if reading => match readable {
                Err(e) => Err(End::Io(e)),
                Ok(()) => c.on_readable(&mut read),
            },
        };
        let step = step.and_then(|()| c.after_event());
        if let Err(end) = step {
            break end;
        }
        if let Err(e) = c.out.flush_now(&writer) {
            break End::Io(e);
        }
    };

    c.finish(&end, &settings, &writer).await;
    c.manager.release(shared.id);
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

impl Conn {
    /// Reads what the miner sent and handles every complete line in it.
    fn on_readable(&mut self, read: &mut ReadHalf<'_>) -> Result<(), End> {
        let fill = self.reader.fill(read).map_err(End::Io)?;
        self.s.handle_heard(now());
        if fill == Fill::Eof {
            self.eof = true;
        }
        Ok(())
    }

    /// After any event: performs the session's actions and feeds it the lines already read,
    /// as long as it is not waiting for a pool.
    fn after_event(&mut self) -> Result<(), End> {
        loop {
            self.perform_actions()?;
            if self.s.awaiting_pool() {
                return Ok(());
            }
            // Work published meanwhile counts before the next line (as if its wake-up had
            // come first), so a subscribe answers with the connection's newest extranonce.
            if self
                .work
                .as_ref()
                .is_some_and(|w| w.has_changed().unwrap_or(false))
            {
                self.deliver_work()?;
                continue;
            }
            match self.reader.next_line() {
                Some(item) => self.s.handle_line(item, now(), &mut self.out)?,
                None if self.eof => {
                    if let Some(item) = self.reader.last_line() {
                        self.s.handle_line(item, now(), &mut self.out)?;
                        continue;
                    }
                    return Err(End::Closed);
                }
                None => return Ok(()),
            }
        }
    }

    fn perform_actions(&mut self) -> Result<(), End> {
        while let Some(action) = self.s.poll_action() {
            match action {
                Action::RequestPool => self.request_pool()?,
                Action::Submit(share) => self.submit(share)?,
            }
        }
        if self.s.take_touched() {
            self.shared.touch();
        }
        Ok(())
    }

    /// Asks the pool manager for a place; the connection's current work follows at once.
    fn request_pool(&mut self) -> Result<(), End> {
        match self
            .manager
            .assign(self.shared.id, self.control.clone(), self.shared.clone())
        {
            Some(a) => {
                self.s.handle_assigned(place_of(&a));
                self.work = Some(a.conn.work.clone());
                self.assignment = Some(a);
                self.deliver_work()
            }
            None => self.s.handle_no_pool(now()),
        }
    }

    /// The manager moved the miner: the new connection's work goes to the session at once.
    fn reassign(&mut self, a: Assignment) -> Result<(), End> {
        self.s.handle_reassigned(place_of(&a));
        self.work = Some(a.conn.work.clone());
        self.assignment = Some(a);
        self.deliver_work()
    }

    fn deliver_work(&mut self) -> Result<(), End> {
        let Some(work) = self.work.as_mut().map(|w| w.borrow_and_update().clone()) else {
            return Ok(());
        };
        self.s.handle_work(work, now(), &mut self.out)
    }

    fn submit(&mut self, share: ShareUp) -> Result<(), End> {
        let Some(a) = &self.assignment else {
            return self.s.handle_submit_failed(share, now(), &mut self.out);
        };
        let (reply, verdict) = oneshot::channel();
        let up = UpstreamSubmit {
            worker: share.worker.clone(),
            difficulty: share.job.pool_difficulty,
            job: share.job.clone(),
            extranonce2: share.extranonce2.clone(),
            ntime: share.ntime,
            nonce: share.nonce,
            version_bits: share.version_bits,
            block: share.block,
            reply,
        };
        // The pool connection has a deep queue; if even that is full the share is lost.
        if a.conn.submit.try_send(up).is_err() {
            return self.s.handle_submit_failed(share, now(), &mut self.out);
        }
        self.pending.push(PendingShare {
            id: Some(share.id),
            credited: share.credited,
            read_at: share.read_at,
            reply: verdict,
        });
        Ok(())
    }

    /// At the end: shares already sent to the pool still get their verdict relayed, within
    /// a grace period; then whatever is still buffered (a last reply, a `client.reconnect`)
    /// gets a short, bounded chance to reach the miner.
    async fn finish(&mut self, end: &End, settings: &SessionSettings, writer: &WriteHalf<'_>) {
        if !end.relays_pending() {
            return;
        }
        if !self.pending.is_empty() {
            let grace = tokio::time::sleep(settings.drain_grace);
            tokio::pin!(grace);
            loop {
                tokio::select! {
                    _ = &mut grace => break,
                    verdict = self.pending.next() => match verdict {
                        Some(v) => {
                            if self.s.handle_verdict(v, now(), &mut self.out).is_err() { break; }
                            if self.out.flush_now(writer).is_err() { break; }
                        }
                        None => break,
                    },
                }
            }
        }
        let out = &mut self.out;
        let flush = async {
            while out.flush_now(writer).is_ok() && !out.is_empty() {
                if writer.writable().await.is_err() {
                    break;
                }
            }
        };
        let _ =
            tokio::time::timeout(settings.write_timeout.min(Duration::from_secs(2)), flush).await;
    }
}

fn place_of(a: &Assignment) -> Place {
    Place {
        slot: a.slot,
        prefix_bytes: a.prefix_bytes,
    }
}

#[cfg(test)]
mod tests;
