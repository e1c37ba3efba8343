//! The newline-delimited JSON codec: one [`Sv1Codec`] type, generic over the message type
//! it decodes (`Rx`) and the one it encodes (`Tx`).
//!
//! - [`ServerCodec`] (= `Sv1Codec<ClientMessage, ServerMessage>`): the side that faces
//!   miners. It decodes what miners send and encodes what a pool would send.
//! - [`ClientCodec`] (= `Sv1Codec<ServerMessage, ClientMessage>`): the side that faces a
//!   pool.
//!
//! # Framing and errors
//! Lines end in `\n`; a `\r` before it, surrounding whitespace and blank lines are ignored.
//! Each decoded item is a `Result<Rx, Sv1Error>`: a bad line (invalid UTF-8, junk JSON,
//! wrong params, too long) is reported as `Ok(Some(Err(..)))` for that line only, and the
//! codec carries on with the next one. This matters because `FramedRead` ends the stream
//! after the first `Err` from `decode`; the codec's own `Err` (an `io::Error`) therefore
//! never comes from peer data.
//!
//! # Length limit
//! The maximum line length is checked before more is kept: once `max_line_len` bytes
//! without a newline are buffered, the codec reports [`Sv1Error::LineTooLong`] once, then
//! throws away everything up to and including the next `\n` as it arrives (never holding
//! more than what is already in the buffer), and resumes with the line after it. The caller
//! decides whether to keep the connection; dropping it is the recommended reaction.
//!
//! # Driving it from a byte slice
//! ```
//! use bytes::BytesMut;
//! use hashshift_protocol::sv1::{ServerCodec, Sv1Error, ClientMessage};
//! use tokio_util::codec::Decoder;
//!
//! let mut codec = ServerCodec::new();
//! let mut buf = BytesMut::from(&b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\njunk\n"[..]);
//! let mut items: Vec<Result<ClientMessage, Sv1Error>> = Vec::new();
//! while let Some(item) = codec.decode(&mut buf).expect("never fails on peer data") {
//!     items.push(item);
//! }
//! if let Some(item) = codec.decode_eof(&mut buf).expect("never fails on peer data") {
//!     items.push(item);
//! }
//! assert!(items[0].is_ok() && items[1].is_err());
//! ```

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::Sv1Error;
use super::message::{ClientMessage, ServerMessage, Sv1Message};

/// Default maximum line length: 64 KiB, far above the largest real `mining.notify`
/// (coinbase parts of a few KB and at most a dozen merkle hashes).
pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;

/// Line codec for Stratum V1. See the [module docs](self).
#[derive(Debug)]
pub struct Sv1Codec<Rx, Tx> {
    max_line_len: usize,
    /// How far the buffer has been searched for `\n` already, so a slowly arriving line is
    /// not rescanned from its start on every read.
    scanned: usize,
    /// Set after an oversized line was reported, until its terminating `\n` is seen.
    discarding: bool,
    _types: PhantomData<fn(Rx) -> Tx>,
}

/// The codec for connections from miners: decodes [`ClientMessage`], encodes
/// [`ServerMessage`].
pub type ServerCodec = Sv1Codec<ClientMessage, ServerMessage>;

/// The codec for connections to pools: decodes [`ServerMessage`], encodes
/// [`ClientMessage`].
pub type ClientCodec = Sv1Codec<ServerMessage, ClientMessage>;

impl<Rx, Tx> Sv1Codec<Rx, Tx> {
    /// A codec with [`DEFAULT_MAX_LINE_LEN`].
    pub fn new() -> Self {
        Self::with_max_line_len(DEFAULT_MAX_LINE_LEN)
    }

    /// A codec accepting lines of at most `max_line_len` bytes (excluding the `\n`).
    pub fn with_max_line_len(max_line_len: usize) -> Self {
        Sv1Codec {
            max_line_len,
            scanned: 0,
            discarding: false,
            _types: PhantomData,
        }
    }

    /// The configured maximum line length.
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }
}

impl<Rx, Tx> Default for Sv1Codec<Rx, Tx> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Rx, Tx> Clone for Sv1Codec<Rx, Tx> {
    /// A fresh codec with the same limit (framing state is not copied).
    fn clone(&self) -> Self {
        Self::with_max_line_len(self.max_line_len)
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

impl<Rx: Sv1Message, Tx> Decoder for Sv1Codec<Rx, Tx> {
    type Item = Result<Rx, Sv1Error>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        loop {
            if self.discarding {
                match src.iter().position(|b| *b == b'\n') {
                    Some(pos) => {
                        src.advance(pos + 1);
                        self.discarding = false;
                        self.scanned = 0;
                        continue;
                    }
                    None => {
                        src.clear();
                        return Ok(None);
                    }
                }
            }
            // Only look as far as a maximal line plus its newline could reach.
            let limit = src.len().min(self.max_line_len.saturating_add(1));
            let start = self.scanned.min(limit);
            let found = src
                .get(start..limit)
                .and_then(|s| s.iter().position(|b| *b == b'\n'));
            match found {
                Some(offset) => {
                    let line = src.split_to(start + offset + 1);
                    self.scanned = 0;
                    if is_blank(&line) {
                        continue;
                    }
                    return Ok(Some(Rx::from_line(&line)));
                }
                None if src.len() > self.max_line_len => {
                    self.discarding = true;
                    self.scanned = 0;
                    return Ok(Some(Err(Sv1Error::LineTooLong {
                        max: self.max_line_len,
                    })));
                }
                None => {
                    self.scanned = limit;
                    return Ok(None);
                }
            }
        }
    }

    /// At end of stream a final line without `\n` is still decoded (some peers close right
    /// after their last message); a partial oversized line is dropped silently, having
    /// already been reported.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        self.scanned = 0;
        if self.discarding {
            self.discarding = false;
            src.clear();
            return Ok(None);
        }
        let rest = src.split();
        if is_blank(&rest) {
            return Ok(None);
        }
        Ok(Some(Rx::from_line(&rest)))
    }
}

impl<Rx, Tx: Sv1Message> Encoder<Tx> for Sv1Codec<Rx, Tx> {
    type Error = std::io::Error;

    fn encode(&mut self, item: Tx, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode_line(dst).map_err(std::io::Error::other)
    }
}

impl<Rx, Tx: Sv1Message> Encoder<&Tx> for Sv1Codec<Rx, Tx> {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Tx, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode_line(dst).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sv1::client::ClientRequest;
    use crate::sv1::server::ServerNotification;

    fn drain<Rx: Sv1Message, Tx>(
        codec: &mut Sv1Codec<Rx, Tx>,
        buf: &mut BytesMut,
    ) -> Vec<Result<Rx, Sv1Error>> {
        let mut out = Vec::new();
        while let Some(item) = codec.decode(buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn tolerates_crlf_blank_lines_and_whitespace() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::from(
            &b"\r\n\n  {\"id\":1,\"method\":\"mining.extranonce.subscribe\",\"params\":[]}\r\n\t\n{\"id\":2,\"method\":\"mining.suggest_difficulty\",\"params\":[512]}\n"[..],
        );
        let items = drain(&mut codec, &mut buf);
        assert_eq!(items.len(), 2);
        assert!(matches!(
            items[0],
            Ok(ClientMessage::Request {
                request: ClientRequest::ExtranonceSubscribe,
                ..
            })
        ));
        assert!(
            matches!(items[1], Ok(ClientMessage::Request { request: ClientRequest::SuggestDifficulty(d), .. }) if d == 512.0)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_lines_do_not_stop_the_codec() {
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::from(&b"junk\n\xff\xfe\n{\"id\":auth,\"result\":true}\n{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[8]}\n"[..]);
        let items = drain(&mut codec, &mut buf);
        assert_eq!(items.len(), 4);
        assert!(matches!(items[0], Err(Sv1Error::InvalidJson(_))));
        assert_eq!(items[1], Err(Sv1Error::NotUtf8));
        assert!(matches!(items[2], Err(Sv1Error::InvalidJson(_))));
        assert!(matches!(
            items[3],
            Ok(ServerMessage::Notification { notification: ServerNotification::SetDifficulty(d), .. }) if d == 8.0
        ));
    }

    #[test]
    fn partial_lines_wait_for_more() {
        let mut codec = ClientCodec::new();
        let full =
            b"{\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"1fffe000\"]}\n";
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for chunk in full.chunks(7) {
            buf.extend_from_slice(chunk);
            got.extend(drain(&mut codec, &mut buf));
        }
        assert_eq!(got.len(), 1);
        assert!(matches!(
            got[0],
            Ok(ServerMessage::Notification {
                notification: ServerNotification::SetVersionMask(0x1fff_e000),
                ..
            })
        ));
    }

    #[test]
    fn oversized_lines_are_reported_once_then_skipped() {
        let mut codec = ServerCodec::with_max_line_len(64);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'x'; 100]);
        let items = drain(&mut codec, &mut buf);
        assert_eq!(items, vec![Err(Sv1Error::LineTooLong { max: 64 })]);
        assert!(buf.is_empty(), "discarded bytes are not kept");
        buf.extend_from_slice(&[b'y'; 1000]);
        assert!(drain(&mut codec, &mut buf).is_empty());
        buf.extend_from_slice(b"yy\n{\"id\":3,\"method\":\"mining.ping\"}\n");
        let items = drain(&mut codec, &mut buf);
        assert_eq!(items.len(), 1);
        assert!(
            matches!(&items[0], Ok(ClientMessage::Request { request: ClientRequest::Unknown { method, .. }, .. }) if method == "mining.ping")
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_passes() {
        let line = b"{\"id\":1,\"result\":true,\"error\":null}";
        let mut codec = ClientCodec::with_max_line_len(line.len());
        let mut buf = BytesMut::from(&line[..]);
        buf.extend_from_slice(b"\n");
        let items = drain(&mut codec, &mut buf);
        assert!(matches!(items.as_slice(), [Ok(ServerMessage::Response(_))]));
        let mut codec = ClientCodec::with_max_line_len(line.len() - 1);
        let mut buf = BytesMut::from(&line[..]);
        buf.extend_from_slice(b"\n");
        let items = drain(&mut codec, &mut buf);
        assert_eq!(
            items,
            vec![Err(Sv1Error::LineTooLong {
                max: line.len() - 1
            })]
        );
    }

    #[test]
    fn eof_decodes_a_last_unterminated_line() {
        let mut codec = ClientCodec::new();
        let mut buf = BytesMut::from(&b"{\"id\":1,\"result\":true}"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap(),
            Some(Ok(ServerMessage::Response(_)))
        ));
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn encoder_appends_newline() {
        let mut codec = ServerCodec::new();
        let mut buf = BytesMut::new();
        codec
            .encode(
                ServerMessage::notification(ServerNotification::SetDifficulty(0.5)),
                &mut buf,
            )
            .unwrap();
        assert_eq!(
            &buf[..],
            b"{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[0.5]}\n"
        );
    }
}
