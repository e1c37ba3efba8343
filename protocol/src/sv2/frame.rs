//! The Stratum V2 frame header (sv2-spec 03, "Framing").
//!
//! Every SV2 message travels as a 6-byte little-endian header followed by its payload:
//! `extension_type: U16 | msg_type: U8 | msg_length: U24`. The high bit of `extension_type`
//! (`0x8000`, the `channel_msg` flag) says the payload starts with a U32 `channel_id`; the
//! reference implementation uses `0x8000` and so do we (the spec's prose is ambiguous).
//! `msg_length` counts payload bytes only, so a payload is at most 2^24 - 1 bytes; a codec
//! compares it with its own configured maximum before allocating anything.

use bytes::{Buf, BufMut};

/// Size of the encoded header in bytes.
pub const HEADER_LEN: usize = 6;

/// The `channel_msg` bit of `extension_type`.
pub const CHANNEL_MSG_BIT: u16 = 0x8000;

/// Largest payload the U24 length field can describe.
pub const MAX_PAYLOAD_LEN: usize = (1 << 24) - 1;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Extension type with the `channel_msg` bit removed (0 = core protocols).
    pub extension_type: u16,
    /// Whether the payload begins with a U32 `channel_id`.
    pub channel_msg: bool,
    /// Message type within the extension.
    pub msg_type: u8,
    /// Payload length in bytes (the header itself excluded).
    pub msg_length: u32,
}

impl Header {
    /// Decodes a header from exactly [`HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let raw_ext = u16::from_le_bytes([bytes[0], bytes[1]]);
        Header {
            extension_type: raw_ext & !CHANNEL_MSG_BIT,
            channel_msg: raw_ext & CHANNEL_MSG_BIT != 0,
            msg_type: bytes[2],
            msg_length: u32::from_le_bytes([bytes[3], bytes[4], bytes[5], 0]),
        }
    }

    /// Decodes a header from the front of `buf`, advancing it; `None` if fewer than
    /// [`HEADER_LEN`] bytes are available (nothing is consumed then).
    pub fn decode_from(buf: &mut impl Buf) -> Option<Self> {
        if buf.remaining() < HEADER_LEN {
            return None;
        }
        let mut raw = [0u8; HEADER_LEN];
        buf.copy_to_slice(&mut raw);
        Some(Self::decode(&raw))
    }

    /// Encodes the header. `msg_length` above [`MAX_PAYLOAD_LEN`] cannot be represented; the
    /// constructors of this crate never produce one, and the value is truncated to 24 bits.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let ext = self.extension_type | if self.channel_msg { CHANNEL_MSG_BIT } else { 0 };
        let [e0, e1] = ext.to_le_bytes();
        let [l0, l1, l2, _] = self.msg_length.to_le_bytes();
        [e0, e1, self.msg_type, l0, l1, l2]
    }

    /// Appends the encoded header to `dst`.
    pub fn encode_to(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.encode());
    }
}

/// One SV2 frame: a header and its payload, as both codecs (plaintext and Noise) yield it.
///
/// `header.msg_length` always equals `payload.len()` for frames built by this crate. When
/// `header.channel_msg` is set, the payload's first four bytes are the channel id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The decoded header.
    pub header: Header,
    /// The payload bytes (the header excluded).
    pub payload: bytes::Bytes,
}

impl Frame {
    /// Builds a frame, deriving `msg_length` from the payload. Returns `None` if the payload is
    /// longer than [`MAX_PAYLOAD_LEN`].
    pub fn new(
        extension_type: u16,
        channel_msg: bool,
        msg_type: u8,
        payload: bytes::Bytes,
    ) -> Option<Self> {
        let msg_length = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l as usize <= MAX_PAYLOAD_LEN)?;
        Some(Frame {
            header: Header {
                extension_type,
                channel_msg,
                msg_type,
                msg_length,
            },
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_channel_bit() {
        let h = Header {
            extension_type: 0,
            channel_msg: true,
            msg_type: 0x1a,
            msg_length: 0x01_0203,
        };
        let b = h.encode();
        assert_eq!(b, [0x00, 0x80, 0x1a, 0x03, 0x02, 0x01]);
        assert_eq!(Header::decode(&b), h);
    }

    #[test]
    fn decode_from_needs_six_bytes() {
        let mut short: &[u8] = &[0, 0, 0, 0, 0];
        assert_eq!(Header::decode_from(&mut short), None);
        assert_eq!(short.len(), 5);
    }
}
