//! The accept loop and the per-connection task.
//!
//! Each connection is one task running two futures side by side: the session loop (reads
//! and decodes lines, follows the pool's work through a `watch`, drives the sans-IO
//! [`Session`]) and the writer (drains a bounded queue to the socket).
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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::SendTimeoutError};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use hashshift_protocol::sv1::ServerCodec;

use super::Inner;
use super::session::{Flow, Session};

/// Lines queued for one connection before it counts as not reading.
const SEND_QUEUE: usize = 256;
/// Longest line accepted from a miner (requests are a few hundred bytes).
const MAX_LINE: usize = 16 * 1024;
/// Bytes gathered into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Accepts connections until `cancel`, spawning each on `tracker`.
pub(super) async fn accept_loop(
    inner: Arc<Inner>,
    listener: TcpListener,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let conn = inner.next_extranonce1.fetch_add(1, Ordering::Relaxed);
                let span = info_span!("pool_conn", pool = %inner.config.name, conn, %peer);
                let fut = serve(Arc::clone(&inner), stream, peer, conn, cancel.child_token());
                tracker.spawn(fut.instrument(span));
            }
            Err(error) => {
                // Out of file descriptors and the like: wait instead of spinning.
                warn!(%error, ?backoff, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    debug!("listener closed");
}

/// The extranonce1 for connection counter value `n`: its low bytes, big-endian.
fn extranonce1(n: u64, len: usize) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let mut out = vec![0u8; len.saturating_sub(8)];
    out.extend_from_slice(&bytes[8 - len.min(8)..]);
    out
}

async fn serve(
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
        extranonce1(conn, inner.config.extranonce1_len),
        inner.config.extranonce2_size,
    );
    let timeout = inner.config.send_timeout;
    let why = tokio::join!(
        session_loop(&inner, session, reader, tx, &cancel),
        write_loop(writer, rx, timeout, &cancel),
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
    tx: mpsc::Sender<Bytes>,
    cancel: &CancellationToken,
) -> &'static str {
    let mut work_rx = inner.work.subscribe();
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
            read = reader.read_buf(&mut buf) => match read {
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
                if let Err(why) = flush(&tx, &mut out, inner.config.send_timeout, cancel).await {
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
            let work = inner.current_work();
            let flow = session.handle(item, &work, &inner.stats, Instant::now(), &mut out);
            // Answer before reading on: this is where a peer that does not read is slowed
            // down, then dropped.
            if let Err(why) = flush(&tx, &mut out, inner.config.send_timeout, cancel).await {
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

/// Queues the outbox, waiting at most `timeout` per line for room: a queue that stays full
/// means the peer does not read.
async fn flush(
    tx: &mpsc::Sender<Bytes>,
    out: &mut Vec<Bytes>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), &'static str> {
    for line in out.drain(..) {
        let sent = tokio::select! {
            _ = cancel.cancelled() => return Err("closed by the pool or a failed write"),
            r = tx.send_timeout(line, timeout) => r,
        };
        match sent {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                warn!(
                    queue = SEND_QUEUE,
                    ?timeout,
                    "send queue full, peer is not reading"
                );
                return Err("peer not reading");
            }
            Err(SendTimeoutError::Closed(_)) => return Err("write error"),
        }
    }
    Ok(())
}

/// Writes queued lines until the queue closes (after draining it) or `cancel`.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    timeout: Duration,
    cancel: &CancellationToken,
) {
    let mut batch = BytesMut::with_capacity(4096);
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
        };
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(line) => batch.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        // Not cancel-safe, and need not be: if cancelled mid-write the connection is closed.
        let written = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(timeout, writer.write_all(&batch)) => r,
        };
        match written {
            Ok(Ok(())) => batch.clear(),
            Ok(Err(_)) => break,
            Err(_) => {
                warn!(?timeout, "write stalled, peer is not reading");
                break;
            }
        }
    }
    // Either the session ended (queue closed and drained) or writing failed: make sure the
    // session loop stops as well.
    cancel.cancel();
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::extranonce1;

    #[test]
    fn extranonce1_takes_low_bytes() {
        assert_eq!(extranonce1(0x0102_0304_0506_0708, 4), vec![5, 6, 7, 8]);
        assert_eq!(extranonce1(0x0102, 1), vec![2]);
        assert_eq!(extranonce1(7, 10), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    }
}
