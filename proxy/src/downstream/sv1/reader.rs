//! Reading a miner's lines without keeping a read buffer while it is idle.
//!
//! A `FramedRead` keeps its buffer (and its capacity) for the life of the connection; at
//! tens of thousands of idle miners that is a large share of the proxy's memory. Here the
//! socket is read without waiting into a stack buffer, only an incomplete trailing line is
//! kept on the heap, and the buffer is released as soon as every line in it has been decoded.

use std::io;

use bytes::BytesMut;
use futures_util::FutureExt;
use hashshift_protocol::sv1::{ClientMessage, ServerCodec, Sv1Error};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::ReadHalf;
use tokio_util::codec::Decoder;

/// Bytes read from the socket per wake-up at most, so one busy miner cannot monopolise
/// its worker thread; the rest is read on the next turn (the socket stays readable).
const READ_PER_WAKE: usize = 16 * 1024;
/// Size of the stack buffer each `read` goes into.
const CHUNK: usize = 4096;

/// What a non-blocking read found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fill {
    /// Some bytes (or none yet: the readiness was spurious).
    Data,
    /// The miner closed its side.
    Eof,
}

/// Undecoded input from one miner.
pub(super) struct LineReader {
    codec: ServerCodec,
    buf: BytesMut,
}

impl LineReader {
    pub(super) fn new(max_line_bytes: usize) -> Self {
        LineReader {
            codec: ServerCodec::with_max_line_len(max_line_bytes),
            buf: BytesMut::new(),
        }
    }

    /// Reads what the socket holds now (up to [`READ_PER_WAKE`]), without waiting.
    ///
    /// Reads through `AsyncRead` polled once rather than `try_read`: tokio then clears the
    /// socket's readiness after a short read, which saves an `EAGAIN` read per message.
    pub(super) fn fill(&mut self, read: &mut ReadHalf<'_>) -> io::Result<Fill> {
        let mut chunk = [0u8; CHUNK];
        let mut total = 0;
        while total < READ_PER_WAKE {
            match read.read(&mut chunk).now_or_never() {
                None => break, // nothing more for now
                Some(Ok(0)) => return Ok(Fill::Eof),
                Some(Ok(n)) => {
                    total += n;
                    self.buf.extend_from_slice(&chunk[..n]);
                    if n < CHUNK {
                        break; // drained for now
                    }
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(Fill::Data)
    }

    /// The next complete line, decoded. The codec bounds line length, so an endless line
    /// costs at most `max_line_bytes` before it is reported and discarded.
    pub(super) fn next_line(&mut self) -> Option<Result<ClientMessage, Sv1Error>> {
        // The codec's I/O error type is never produced by decoding lines (bad lines come as
        // `Some(Err(Sv1Error))`), so an `Err` here cannot carry anything to report.
        let item = self.codec.decode(&mut self.buf).unwrap_or_default();
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
        item
    }

    /// A last unterminated line at end of input, if any.
    pub(super) fn last_line(&mut self) -> Option<Result<ClientMessage, Sv1Error>> {
        self.codec.decode_eof(&mut self.buf).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashshift_protocol::sv1::ClientRequest;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    #[tokio::test]
    async fn lines_split_across_reads_decode_and_memory_is_released() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (mut read, _) = server.split();
        let mut reader = LineReader::new(1024);

        client
            .write_all(
                b"{\"id\":1,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n{\"id\":2,",
            )
            .await
            .unwrap();
        read.readable().await.unwrap();
        assert_eq!(reader.fill(&mut read).unwrap(), Fill::Data);
        let first = reader.next_line().unwrap().unwrap();
        assert!(matches!(
            first,
            ClientMessage::Request {
                request: ClientRequest::ExtranonceSubscribe,
                ..
            }
        ));
        assert!(reader.next_line().is_none(), "second line incomplete");
        assert!(reader.buf.capacity() > 0);

        client
            .write_all(b"\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\n")
            .await
            .unwrap();
        loop {
            read.readable().await.unwrap();
            reader.fill(&mut read).unwrap();
            if let Some(line) = reader.next_line() {
                assert!(line.is_ok());
                break;
            }
        }
        assert!(reader.next_line().is_none());
        assert_eq!(
            reader.buf.capacity(),
            0,
            "an idle miner holds no read buffer"
        );

        drop(client);
        let eof = loop {
            read.readable().await.unwrap();
            if reader.fill(&mut read).unwrap() == Fill::Eof {
                break true;
            }
        };
        assert!(eof);
    }

    #[test]
    fn an_endless_line_is_reported_once_bounded() {
        let mut reader = LineReader::new(600);
        reader.buf.extend_from_slice(&[b'x'; 2000]);
        assert!(matches!(
            reader.next_line(),
            Some(Err(Sv1Error::LineTooLong { .. }))
        ));
    }
}
