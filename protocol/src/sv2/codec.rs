//! The plaintext SV2 frame codec (sv2-spec 03 §3.2): `tokio_util` [`Decoder`]/[`Encoder`]
//! between a byte stream and [`Frame`]s.
//!
//! Plaintext SV2 is for trusted links and tests; over the Internet SV2 runs inside Noise,
//! whose codec yields the same [`Frame`]. Invariant: the decoder compares the header's
//! `msg_length` with its configured maximum *before* reserving or buffering any payload byte,
//! so a peer cannot make it allocate more than `max_payload_len + 6` bytes. Payloads are
//! split off the read buffer without copying.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::Sv2CodecError;
use super::frame::{Frame, HEADER_LEN, Header, MAX_PAYLOAD_LEN};
use super::message::Message;

/// Default largest accepted payload: 1 MiB. The largest Common/Mining message is a full
/// `SetGroupChannel` (262,146 bytes); extended jobs top out near 140 KB.
pub const DEFAULT_MAX_PAYLOAD_LEN: usize = 1 << 20;

/// Plaintext SV2 codec: decodes [`Frame`]s, encodes [`Frame`]s and `&`[`Message`]s.
#[derive(Clone, Copy, Debug)]
pub struct Sv2Codec {
    max_payload_len: usize,
}

impl Default for Sv2Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Sv2Codec {
    /// A codec accepting payloads up to [`DEFAULT_MAX_PAYLOAD_LEN`].
    pub fn new() -> Self {
        Sv2Codec {
            max_payload_len: DEFAULT_MAX_PAYLOAD_LEN,
        }
    }

    /// A codec accepting payloads up to `max` bytes (capped at the U24 limit, 2^24 - 1).
    pub fn with_max_payload_len(max: usize) -> Self {
        Sv2Codec {
            max_payload_len: max.min(MAX_PAYLOAD_LEN),
        }
    }

    /// The largest payload the decoder accepts.
    pub fn max_payload_len(&self) -> usize {
        self.max_payload_len
    }
}

impl Decoder for Sv2Codec {
    type Item = Frame;
    type Error = Sv2CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Sv2CodecError> {
        let Some(raw) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::decode(raw);
        let len = header.msg_length as usize;
        if len > self.max_payload_len {
            return Err(Sv2CodecError::FrameTooLarge {
                len,
                max: self.max_payload_len,
            });
        }
        let total = HEADER_LEN + len;
        if src.len() < total {
            // Bounded by the check above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        Ok(Some(Frame { header, payload }))
    }
}

impl Encoder<Frame> for Sv2Codec {
    type Error = Sv2CodecError;

    /// Writes the header and payload. `msg_length` is taken from the payload itself, so a
    /// hand-built frame with a stale header length still goes out consistent.
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Sv2CodecError> {
        encode_frame_ref(&frame, dst)
    }
}

impl Encoder<&Frame> for Sv2Codec {
    type Error = Sv2CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Sv2CodecError> {
        encode_frame_ref(frame, dst)
    }
}

impl Encoder<&Message> for Sv2Codec {
    type Error = Sv2CodecError;

    /// Serialises straight into `dst`: no intermediate payload buffer.
    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), Sv2CodecError> {
        dst.reserve(msg.frame_len());
        msg.encode_frame(dst);
        Ok(())
    }
}

fn encode_frame_ref(frame: &Frame, dst: &mut BytesMut) -> Result<(), Sv2CodecError> {
    let len = frame.payload.len();
    if len > MAX_PAYLOAD_LEN {
        return Err(Sv2CodecError::PayloadTooLong { len });
    }
    let header = Header {
        msg_length: len as u32,
        ..frame.header
    };
    dst.reserve(HEADER_LEN + len);
    header.encode_to(dst);
    dst.put_slice(&frame.payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sv2::mining_shares::SubmitSharesStandard;

    fn share() -> Message {
        Message::SubmitSharesStandard(SubmitSharesStandard {
            channel_id: 1,
            sequence_number: 2,
            job_id: 3,
            nonce: 4,
            ntime: 5,
            version: 6,
        })
    }

    #[test]
    fn decodes_byte_by_byte_and_back_to_back() {
        let mut codec = Sv2Codec::new();
        let mut wire = BytesMut::new();
        codec.encode(&share(), &mut wire).unwrap();
        codec.encode(share().to_frame(), &mut wire).unwrap();
        assert_eq!(wire.len(), 2 * (6 + 24));

        let mut src = BytesMut::new();
        let mut frames = Vec::new();
        for b in wire.iter() {
            src.put_u8(*b);
            while let Some(f) = codec.decode(&mut src).unwrap() {
                frames.push(f);
            }
        }
        assert!(src.is_empty());
        assert_eq!(frames.len(), 2);
        for f in &frames {
            assert_eq!(f.header.msg_length, 24);
            assert!(f.header.channel_msg);
            assert_eq!(Message::from_frame(f).unwrap(), share());
        }
    }

    #[test]
    fn oversized_header_fails_before_buffering() {
        let mut codec = Sv2Codec::with_max_payload_len(100);
        // msg_length = 101 with no payload yet.
        let mut src = BytesMut::from(&[0u8, 0, 0x10, 101, 0, 0][..]);
        let cap_before = src.capacity();
        match codec.decode(&mut src) {
            Err(Sv2CodecError::FrameTooLarge { len: 101, max: 100 }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(src.capacity(), cap_before, "nothing reserved");
        // Exactly the maximum is fine (and incomplete).
        let mut src = BytesMut::from(&[0u8, 0, 0x10, 100, 0, 0][..]);
        assert!(codec.decode(&mut src).unwrap().is_none());
    }

    #[test]
    fn max_is_capped_at_u24() {
        assert_eq!(
            Sv2Codec::with_max_payload_len(usize::MAX).max_payload_len(),
            MAX_PAYLOAD_LEN
        );
    }

    #[test]
    fn frame_encoder_uses_payload_length() {
        let mut f = share().to_frame();
        f.header.msg_length = 999;
        let mut dst = BytesMut::new();
        Sv2Codec::new().encode(f, &mut dst).unwrap();
        assert_eq!(&dst[..6], &[0x00, 0x80, 0x1a, 24, 0, 0]);
    }
}
