//! The accept loop and the per-connection task.
//!
//! Each connection is one task running two futures side by side: the session loop (reads
//! and decodes lines, follows the pool's work through a `watch`, drives the sans-IO
//! [`Session`]) and the writer (drains a bounded queue to the socket).
//!
//! Held answers ([`super::TestPool::set_answer_delay`]): a submit is handled when read (and
//! counted in the stats then), but its answer is queued with a "not before" instant that the
//! writer waits for; lines queued behind it wait too, so answers keep their order, while
//! reading goes on (a held verdict never stops the pool from taking the next share).
//!
//! Backpressure: the session queues each answer before reading the next request, so a peer
//! that does not read its answers soon stops being read (TCP pushes back on it). A peer whose
//! queue stays full, or whose socket accepts nothing, for `send_timeout` is dropped: it can
//! never hold up other connections, which each have their own queue and task. Cancelling the
//! connection's token (pool killed or shut down) ends both futures at once and closes the
//! socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc::{self, error::SendTimeoutError};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use hashshift_protocol::sv1::{ClientMessage, ClientRequest, ServerCodec, Sv1Error};

use super::Inner;
use super::session::{Flow, Session};

/// Lines queued for one connection before it counts as not reading.
const SEND_QUEUE: usize = 256;
/// Longest line accepted from a miner (requests are a few hundred bytes).
const MAX_LINE: usize = 16 * 1024;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// A line for the writer, and the instant before which it must not be written (held answers).
type Outgoing = (Bytes, Option<tokio::time::Instant>);

pub(super) async fn serve(
    inner: Arc<Inner>,
    stream: TcpStream,
    peer: SocketAddr,
    conn: u64,
    cancel: CancellationToken,
) {
    inner.stats.connected();
    info!("miner connected");
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let session = Session::new(
        conn,
        super::extranonce1(conn, inner.config.extranonce1_len),
        inner.config.extranonce2_size,
    )
    .with_configure(inner.config.configure);
    let timeout = inner.config.send_timeout;
    let why = tokio::join!(
        session_loop(&inner, session, reader, tx, &cancel),
        write_loop(&inner, writer, rx, timeout, &cancel),
    )
    .0;
    inner.stats.disconnected();
    info!(%peer, reason = why, "miner disconnected");
}

/// Reads and answers requests and forwards work until the peer leaves or is dropped.
/// Returns why it ended. Cancels `cancel` on the way out so the writer stops too.
async fn session_loop(
    inner: &Inner,
    mut session: Session,
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<Outgoing>,
    cancel: &CancellationToken,
) -> &'static str {
    let mut work_rx = inner.work.subscribe();
    let mut reading_rx = inner.reading.subscribe();
    let mut reading = *reading_rx.borrow_and_update();
    let mut codec = ServerCodec::with_max_line_len(MAX_LINE);
    let mut buf = BytesMut::with_capacity(4096);
    let mut out: Vec<Bytes> = Vec::new();
    // `(why, drain)`: with `drain`, the writer sends what is queued before closing.
    let (why, drain) = 'conn: loop {
        let mut eof = false;
        // Every branch is cancel-safe: `read_buf` either reads into `buf` or not at all, and
        // `changed` only marks the value seen when it returns.
        tokio::select! {
            _ = cancel.cancelled() => break 'conn ("closed by the pool or a failed write", false),
            changed = reading_rx.changed() => {
                if changed.is_err() {
                    break 'conn ("pool stopped", false);
                }
                reading = *reading_rx.borrow_and_update();
            }
            read = reader.read_buf(&mut buf), if reading => match read {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(_) => break 'conn ("read error", false),
            },
            changed = work_rx.changed() => {
                if changed.is_err() {
                    break 'conn ("pool stopped", false);
                }
                // Clone out of the borrow: holding it would block the publisher.
                let work = work_rx.borrow_and_update().clone();
                session.on_work(&work, &mut out);
                if let Err(why) = flush(inner, &tx, &mut out, None, cancel).await {
                    break 'conn (why, false);
                }
            }
        }
        loop {
            let decoded = if eof {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            let item = match decoded {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(_) => break 'conn ("read error", false),
            };
            let hold = match inner.answer_delay() {
                delay if is_submit(&item) && !delay.is_zero() => {
                    Some(tokio::time::Instant::now() + delay)
                }
                _ => None,
            };
            let work = inner.current_work();
            let flow = session.handle(item, &work, &inner.stats, Instant::now(), &mut out);
            // Answer before reading on: this is where a peer that does not read is slowed
            // down, then dropped.
            if let Err(why) = flush(inner, &tx, &mut out, hold, cancel).await {
                break 'conn (why, false);
            }
            match flow {
                Flow::Continue => {}
                Flow::BlockFound => inner.block_found(),
                Flow::Close => break 'conn ("protocol violation", true),
            }
        }
        if eof {
            break 'conn ("peer closed the connection", true);
        }
    };
    if !drain {
        cancel.cancel();
    }
    why
}

fn is_submit(item: &Result<ClientMessage, Sv1Error>) -> bool {
    matches!(
        item,
        Ok(ClientMessage::Request {
            request: ClientRequest::Submit(_),
            ..
        })
    )
}

/// Queues the outbox, each line to be written no earlier than `hold`, waiting at most
/// `send_timeout` per line for room: a queue that stays full means the peer does not read.
async fn flush(
    inner: &Inner,
    tx: &mpsc::Sender<Outgoing>,
    out: &mut Vec<Bytes>,
    hold: Option<tokio::time::Instant>,
    cancel: &CancellationToken,
) -> Result<(), &'static str> {
    let timeout = inner.config.send_timeout;
    for line in out.drain(..) {
        if hold.is_some() {
            // Counted back down by the writer once written (or dropped with the connection).
            inner.held_answers.fetch_add(1, Ordering::Relaxed);
        }
        let sent = tokio::select! {
            _ = cancel.cancelled() => None,
            r = tx.send_timeout((line, hold), timeout) => Some(r),
        };
        if !matches!(sent, Some(Ok(()))) && hold.is_some() {
            inner.held_answers.fetch_sub(1, Ordering::Relaxed);
        }
        match sent {
            None => return Err("closed by the pool or a failed write"),
            Some(Ok(())) => {}
            Some(Err(SendTimeoutError::Timeout(_))) => {
                warn!(
                    queue = SEND_QUEUE,
                    ?timeout,
                    "send queue full, peer is not reading"
                );
                return Err("peer not reading");
            }
            Some(Err(SendTimeoutError::Closed(_))) => return Err("write error"),
        }
    }
    Ok(())
}

/// Writes queued lines, each no earlier than its hold instant, until the queue closes (after
/// draining it) or `cancel`.
async fn write_loop(
    inner: &Inner,
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    timeout: Duration,
    cancel: &CancellationToken,
) {
    let mut batch = BytesMut::with_capacity(4096);
    // A held line taken off the queue while batching, to be written after this batch.
    let mut carry: Option<Outgoing> = None;
    // Held answers in `batch`, no longer held once it is written.
    let mut held_in_batch = 0usize;
    let mut cancelled = false;
    loop {
        let (first, hold) = match carry.take() {
            Some(item) => item,
            None => tokio::select! {
                _ = cancel.cancelled() => { cancelled = true; break; }
                line = rx.recv() => match line {
                    Some(item) => item,
                    None => break,
                },
            },
        };
        if let Some(at) = hold {
            tokio::select! {
                _ = cancel.cancelled() => {
                    carry = Some((first, hold));
                    cancelled = true;
                    break;
                }
                _ = tokio::time::sleep_until(at) => held_in_batch += 1,
            }
        }
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok((line, Some(at))) if at > tokio::time::Instant::now() => {
                    carry = Some((line, Some(at)));
                    break;
                }
                Ok((line, hold)) => {
                    held_in_batch += usize::from(hold.is_some());
                    batch.extend_from_slice(&line);
                }
                Err(_) => break,
            }
        }
        // Not cancel-safe, and need not be: if cancelled mid-write the connection is closed.
        let written = tokio::select! {
            _ = cancel.cancelled() => { cancelled = true; break; }
            r = tokio::time::timeout(timeout, writer.write_all(&batch)) => r,
        };
        match written {
            Ok(Ok(())) => {
                batch.clear();
                inner
                    .held_answers
                    .fetch_sub(held_in_batch, Ordering::Relaxed);
                held_in_batch = 0;
            }
            Ok(Err(_)) => break,
            Err(_) => {
                warn!(?timeout, "write stalled, peer is not reading");
                break;
            }
        }
    }
    // Held answers that will never be written are no longer held.
    let mut unwritten = held_in_batch + carry.map_or(0, |(_, hold)| usize::from(hold.is_some()));
    rx.close();
    while let Ok((_, hold)) = rx.try_recv() {
        unwritten += usize::from(hold.is_some());
    }
    inner.held_answers.fetch_sub(unwritten, Ordering::Relaxed);
    if cancelled {
        return;
    }
    // Either the session ended (queue closed and drained) or writing failed: make sure the
    // session loop stops as well.
    cancel.cancel();
    let _ = writer.shutdown().await;
}
