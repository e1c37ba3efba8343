//! Bytes waiting to go to one miner, written without blocking the session.
//!
//! Handlers append whole messages; the session flushes after each batch of events with
//! non-blocking writes (usually one `write` for several replies), and only when the socket
//! is full does it wait for writability. The buffer is bounded: a miner that stops reading
//! fills it and is dropped, and one that reads too slowly for `write_timeout` is dropped too,
//! so a stuck miner costs at most its bound and never delays anyone else. An empty outbox
//! holds no memory.
//!
//! The bound is `limit` plus room for two jobs ([`Outbox::push_job`]): the largest job line
//! pushed since the outbox was last empty, twice (the job being written and the next one). A
//! job is as large as its pool makes it (a coinbase with many outputs runs to hundreds of
//! KiB), so a fixed bound would drop every miner on every big job; with the room, a job of
//! any size the pool connection accepts gets through, while a miner that does not read still
//! overflows by its third unread job (or is dropped earlier by `write_timeout`). A stuck
//! miner holds at most `limit` + 2 × the largest job line.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::tcp::WriteHalf;
use tokio::time::Instant;

/// The miner is not reading fast enough.
#[derive(Debug, thiserror::Error)]
#[error("send buffer over {limit} bytes: the miner is not reading")]
pub struct Overflow {
    /// The configured bound.
    pub limit: usize,
}

/// One connection's pending output.
#[derive(Debug)]
pub struct Outbox {
    buf: BytesMut,
    limit: usize,
    /// Longest job line pushed since the outbox was last empty (0: none).
    job_room: usize,
    /// When output last made progress while some was waiting (None: empty).
    waiting_since: Option<Instant>,
}

impl Outbox {
    /// An empty outbox holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Outbox {
            buf: BytesMut::new(),
            limit,
            job_room: 0,
            waiting_since: None,
        }
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The buffer, for encoders that write into it; call [`Outbox::check`] after.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends a whole message.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Overflow> {
        self.buf.extend_from_slice(bytes);
        self.check()
    }

    /// Appends a job line (`mining.notify`); the bound makes room for two of the largest
    /// (see the module docs).
    pub fn push_job(&mut self, line: &[u8]) -> Result<(), Overflow> {
        self.job_room = self.job_room.max(line.len());
        self.push(line)
    }

    /// The bound now: `limit` plus room for two jobs.
    pub fn bound(&self) -> usize {
        self.limit.saturating_add(self.job_room.saturating_mul(2))
    }

    /// Fails when more than the bound is waiting.
    pub fn check(&self) -> Result<(), Overflow> {
        let limit = self.bound();
        if self.buf.len() > limit {
            Err(Overflow { limit })
        } else {
            Ok(())
        }
    }

    /// Writes as much as the socket takes now, without waiting.
    pub fn flush_now(&mut self, writer: &WriteHalf<'_>) -> io::Result<()> {
        let mut progressed = false;
        while !self.buf.is_empty() {
            match writer.try_write(&self.buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.buf.advance(n);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.buf.is_empty() {
            // Give the memory back: most miners are idle between jobs.
            self.buf = BytesMut::new();
            self.waiting_since = None;
            self.job_room = 0;
        } else if progressed || self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        Ok(())
    }

    /// When the miner counts as stuck if nothing more is written (None: nothing waiting).
    pub fn deadline(&self, write_timeout: Duration) -> Option<Instant> {
        self.waiting_since.map(|t| t + write_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected (client, server) pair on 127.0.0.1.
    async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn flushes_in_order_and_frees_memory() {
        let (mut client, mut server) = socket_pair().await;
        let (_, writer) = server.split();
        let mut out = Outbox::new(1024);
        out.push(b"one\n").unwrap();
        out.push(b"two\n").unwrap();
        writer.writable().await.unwrap();
        out.flush_now(&writer).unwrap();
        assert!(out.is_empty());
        assert_eq!(out.buf.capacity(), 0);
        assert!(out.deadline(Duration::from_secs(1)).is_none());
        let mut got = [0u8; 8];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one\ntwo\n");
    }

    #[test]
    fn a_job_of_any_size_fits_but_a_third_unread_one_overflows() {
        let mut out = Outbox::new(1024);
        let job = vec![b'j'; 64 * 1024];
        out.push(b"set_difficulty\n").unwrap();
        out.push_job(&job).unwrap();
        out.push_job(&job).unwrap();
        assert!(
            out.push(b"reply\n").is_ok(),
            "`limit` is still there for the rest"
        );
        assert!(
            out.push_job(&job).is_err(),
            "a miner that does not read is dropped"
        );
        // Small messages alone still get only `limit`.
        let mut small = Outbox::new(1024);
        assert!(small.push(&[b'x'; 1025]).is_err());
    }

    #[tokio::test]
    async fn the_job_room_goes_once_the_outbox_drains() {
        let (mut client, mut server) = socket_pair().await;
        let (_, writer) = server.split();
        let mut out = Outbox::new(1024);
        out.push_job(&[b'j'; 4096]).unwrap();
        assert_eq!(out.bound(), 1024 + 2 * 4096);
        while !out.is_empty() {
            writer.writable().await.unwrap();
            out.flush_now(&writer).unwrap();
        }
        assert_eq!(out.bound(), 1024);
        let mut got = vec![0u8; 4096];
        client.read_exact(&mut got).await.unwrap();
    }

    #[tokio::test]
    async fn a_miner_that_does_not_read_overflows_the_bound() {
        let (_client, mut server) = socket_pair().await; // the client never reads
        let (_, writer) = server.split();
        let mut out = Outbox::new(64 * 1024);
        let chunk = vec![b'x'; 16 * 1024];
        let overflowed = (0..10_000).any(|_| {
            let full = out.push(&chunk).is_err();
            out.flush_now(&writer).unwrap();
            full
        });
        assert!(
            overflowed,
            "kernel buffers are finite; the outbox must fill"
        );
        assert!(out.deadline(Duration::from_secs(1)).is_some());
    }
}
