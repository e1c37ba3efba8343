//! One SV2 miner connection: the I/O task around its [`Session`].
//!
//! The task does the Noise handshake, then owns the encrypted socket, the session, each
//! channel's upstream work (`watch`) and manager commands (a mailbox), merged into one stream
//! of events tagged with the channel id, and the shares waiting for the pool's verdict. It
//! reads the clock (tokio's) for each event, hands the event to the session with that time,
//! performs the session's [`Action`]s (ask the manager for a slot, queue a share for the
//! pool, release a record), writes what the session decided, and sleeps until the session's
//! next deadline ([`Session::poll_timeout`]).
//!
//! Hostile input: the whole way to the first open channel is bounded by the handshake
//! timeout; frames above `max_frame_bytes` are refused by the Noise decoder before being
//! buffered; a decrypt failure, a malformed message or a protocol violation ends this
//! connection only. A miner that stops reading is dropped after the write timeout.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::stream::{BoxStream, FuturesUnordered, SelectAll};
use futures_util::{FutureExt, StreamExt};
use hashshift_protocol::noise::NoiseCodec;
use hashshift_protocol::noise::codec::NoiseEncoder;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Sv2Settings;
use super::events::{Event, control_stream, work_stream};
use super::state::{Action, End, Session, ShareUp, Verdict};
use crate::downstream::listener::{Accepted, next_conn_id};
use crate::pool_link::mailbox::{Mailbox, mailbox};
use crate::pool_link::miner::MinerShared;
use crate::pool_link::submit::SubmitOutcome;
use crate::pool_link::work::WorkState;
use crate::pool_link::{Control, Pools};

type Pending = Pin<Box<dyn std::future::Future<Output = Verdict> + Send>>;

/// The clock as the session takes it (tokio's, so that paused time in tests applies).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// A new channel's slot, until its connection has work and the channel opens.
struct Slot {
    control: Mailbox,
    work: watch::Receiver<Arc<WorkState>>,
}

/// Waits for new work on the slot's connection (forever when there is no slot).
async fn slot_changed(slot: &mut Option<Slot>) -> Result<(), watch::error::RecvError> {
    match slot.as_mut() {
        Some(s) => s.work.changed().await,
        None => std::future::pending().await,
    }
}

struct Conn {
    s: Session,
    manager: Arc<dyn Pools>,
    settings: Arc<Sv2Settings>,
    writer: OwnedWriteHalf,
    encoder: NoiseEncoder,
    out: BytesMut,
    events: SelectAll<BoxStream<'static, (u32, Event)>>,
    pending: FuturesUnordered<Pending>,
    slot: Option<Slot>,
    peer: std::net::SocketAddr,
    /// The record of the channel being opened, kept across retries until the manager takes it.
    record: Option<Arc<MinerShared>>,
    /// Per channel, ends the stream of its current connection's work (cancelled when the
    /// channel moves or closes).
    work_stops: HashMap<u32, CancellationToken>,
}

/// Runs one SV2 miner connection to its end.
pub async fn serve(accepted: Accepted, settings: Arc<Sv2Settings>, manager: Arc<dyn Pools>) {
    let _open = settings.stats.connection();
    let Accepted {
        mut stream,
        peer,
        shutdown,
        ..
    } = accepted;
    let deadline = Instant::now() + settings.handshake_timeout;
    let transport = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout_at(deadline, crate::noise_tcp::accept(&mut stream, &settings.noise)) => match r {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => { info!(reason = %End::Handshake(e), "miner dropped"); return; }
            Err(_) => { info!(reason = %End::HandshakeTimeout, "miner dropped during the Noise handshake"); return; }
        },
    };
    let (read, writer) = stream.into_split();
    let (encoder, decoder) = NoiseCodec::new(transport)
        .with_max_payload(settings.max_frame_bytes)
        .into_split();
    // A small initial buffer: an idle miner should cost little memory; it grows if needed.
    let mut reader = FramedRead::with_capacity(read, decoder, 256);
    let mut c = Conn {
        s: Session::new(settings.clone(), deadline.into_std(), now()),
        peer,
        record: None,
        manager,
        settings: settings.clone(),
        writer,
        encoder,
        out: BytesMut::new(),
        events: SelectAll::new(),
        pending: FuturesUnordered::new(),
        slot: None,
        work_stops: HashMap::new(),
    };
    let timer = tokio::time::sleep_until(Instant::from_std(c.s.poll_timeout()));
    tokio::pin!(timer);

    let end: End = loop {
        let deadline = Instant::from_std(c.s.poll_timeout());
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        let reading = !c.s.awaiting_slot();
        let result = tokio::select! {
            _ = shutdown.cancelled() => Err(End::Shutdown),
            () = &mut timer => c.s.handle_timeout(now()),
            Some((channel, event)) = c.events.next(), if !c.events.is_empty() => c.on_event(channel, event),
            Some(v) = c.pending.next(), if !c.pending.is_empty() => {
                c.s.handle_verdict(v, now());
                Ok(())
            }
            changed = slot_changed(&mut c.slot) => {
                match changed {
                    Ok(()) => c.slot_work(),
                    // The slot's connection ended before it had work.
                    Err(_) => { c.s.give_up_slot(); Ok(()) }
                }
            }
            frame = reader.next(), if reading => match frame {
                None => Err(End::Closed),
                Some(Err(e)) => Err(End::Transport(e)),
                Some(Ok(frame)) => {
                    c.s.handle_heard();
                    c.s.handle_frame(&frame, now())
                }
            },
        };
        let result = result.and_then(|()| c.perform_actions());
        // Whatever was decided goes out before the connection ends (e.g. SetupConnection.Error).
        let written = c.write_out().await;
        match (result, written) {
            (Err(end), _) | (Ok(()), Err(end)) => break end,
            (Ok(()), Ok(())) => {}
        }
    };

    // Shares already sent to the pool still get their verdict relayed, within a grace period.
    if !c.pending.is_empty() && !matches!(end, End::Closed | End::Io(_) | End::Stuck) {
        let grace = tokio::time::sleep(settings.drain_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                _ = &mut grace => break,
                next = c.pending.next() => match next {
                    Some(v) => c.s.handle_verdict(v, now()),
                    None => break,
                },
            }
        }
        c.s.flush_acks();
        let _ = c.write_out().await;
    }
    let (mut accepted_shares, mut rejected_shares) = (0, 0);
    for shared in c.s.records() {
        let s = shared.counters.snapshot();
        accepted_shares += s.accepted;
        rejected_shares += s.rejected;
        c.manager.release(shared.id);
    }
    match end {
        End::Closed | End::Shutdown | End::Kicked => {
            info!(reason = %end, accepted = accepted_shares, rejected = rejected_shares, "miner disconnected")
        }
        _ => {
            warn!(reason = %end, accepted = accepted_shares, rejected = rejected_shares, "miner dropped")
        }
    }
}

impl Conn {
    /// Encodes what the session decided and writes it.
    async fn write_out(&mut self) -> Result<(), End> {
        for m in self.s.take_output() {
            self.encoder.encode(m.to_frame(), &mut self.out)?;
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = self.out.split();
        match tokio::time::timeout(self.settings.write_timeout, self.writer.write_all(&bytes)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Stuck),
        }
    }

    fn on_event(&mut self, channel: u32, event: Event) -> Result<(), End> {
        match event {
            Event::Work(generation, work) => {
                self.s.handle_work(channel, generation, &work, now());
                Ok(())
            }
            Event::Control(Control::Reassign(a)) => {
                let rx = a.conn.work.clone();
                let Some(generation) = self.s.handle_reassigned(channel, a) else {
                    return Ok(()); // closed meanwhile
                };
                let stop = self.follow(channel);
                self.events
                    .push(work_stream(channel, generation, rx.clone(), stop));
                // The new connection's current work counts as a change, handled now.
                let current = rx.borrow().clone();
                self.s.handle_work(channel, generation, &current, now());
                Ok(())
            }
            Event::Control(Control::Kick) => Err(End::Kicked),
        }
    }

    /// Work on a new channel's slot connection: the channel opens once it is ready.
    fn slot_work(&mut self) -> Result<(), End> {
        let Some(slot) = self.slot.as_mut() else {
            return Ok(());
        };
        let work = slot.work.borrow_and_update().clone();
        self.s.handle_slot_work(&work, now());
        Ok(())
    }

    fn perform_actions(&mut self) -> Result<(), End> {
        while let Some(action) = self.s.poll_action() {
            match action {
                Action::RequestSlot(worker) => {
                    let (peer, stats) = (self.peer, &self.settings.stats.shares);
                    let shared = self
                        .record
                        .get_or_insert_with(|| {
                            let record = MinerShared::new(next_conn_id(), peer).with_totals(stats);
                            record.set_worker(&worker);
                            // SV2 channels can always be moved: SetExtranoncePrefix exists for that.
                            record.set_movable(true);
                            Arc::new(record)
                        })
                        .clone();
                    let (tx, rx) = mailbox();
                    match self.manager.assign(shared.id, tx, shared.clone()) {
                        Some(a) => {
                            self.record = None;
                            self.slot = Some(Slot {
                                control: rx,
                                work: a.conn.work.clone(),
                            });
                            self.s.handle_slot(a, shared);
                            self.slot_work()?;
                        }
                        None => self.s.handle_no_slot(now()),
                    }
                }
                Action::Opened(id) => {
                    let Some(slot) = self.slot.take() else {
                        continue;
                    };
                    let stop = self.follow(id);
                    if let Some(ch) = self.s.channel(id) {
                        let work = ch.assignment.conn.work.clone();
                        self.events.push(work_stream(id, ch.generation, work, stop));
                        self.events.push(control_stream(id, slot.control));
                    }
                }
                Action::Closed(id) => {
                    if let Some(stop) = self.work_stops.remove(&id) {
                        stop.cancel();
                    }
                }
                Action::Submit(share) => self.submit(share),
                Action::Release(id) => self.manager.release(id),
            }
        }
        if !self.s.awaiting_slot() {
            // A slot given up (or never used) leaves nothing to watch.
            self.slot = None;
            self.record = None;
        }
        for id in self.s.take_touched() {
            if let Some(ch) = self.s.channel(id) {
                ch.shared.touch();
            }
        }
        Ok(())
    }

    /// A fresh stop token for `channel`'s work stream, ending the one it replaces.
    fn follow(&mut self, channel: u32) -> CancellationToken {
        let stop = CancellationToken::new();
        if let Some(old) = self.work_stops.insert(channel, stop.clone()) {
            old.cancel();
        }
        stop
    }

    fn submit(&mut self, share: ShareUp) {
        let ShareUp {
            channel,
            sequence_number,
            submit,
            verdict,
            credited,
            read_at,
        } = share;
        let queued = self
            .s
            .channel(channel)
            .is_some_and(|ch| ch.assignment.conn.submit.try_send(submit).is_ok());
        if !queued {
            self.s
                .handle_submit_failed(channel, sequence_number, read_at, now());
            return;
        }
        self.pending.push(
            verdict
                .map(move |outcome| Verdict {
                    channel,
                    sequence_number,
                    outcome: outcome.unwrap_or(SubmitOutcome::Lost("pool connection ended")),
                    credited,
                    read_at,
                })
                .boxed(),
        );
    }
}

#[cfg(test)]
mod tests;
