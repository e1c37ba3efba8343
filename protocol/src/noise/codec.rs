//! [`NoiseCodec`]: SV2 frames over an established Noise session, for `tokio_util::codec`
//! (sv2-spec 04, "Transport message encryption and format").
//!
//! Wire format of one frame:
//!
//! ```text
//! [ 6-byte header ‖ 16-byte MAC ]                      22 bytes, one nonce
//! [ ≤ 65,519 payload bytes ‖ 16-byte MAC ] × k         each chunk its own nonce
//! ```
//!
//! `msg_length` in the header is the *plaintext* payload length; the ciphertext is
//! `msg_length + 16 × ceil(msg_length / 65,519)` bytes. An empty payload sends only the header.
//!
//! Decoding decrypts the 22-byte header first and checks `msg_length` against the configured
//! maximum *before* reserving anything; it then reserves at most one chunk at a time, so a
//! peer's claimed length cannot make us allocate memory it has not actually sent. Any failure
//! poisons the decoder: the nonce sequence is lost, so the connection must be dropped.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::transport::{CipherHalf, MAC_LEN, TransportError, TransportState};
use crate::sv2::frame::{Frame, HEADER_LEN, Header, MAX_PAYLOAD_LEN};

/// Bytes of an encrypted frame header.
pub const ENCRYPTED_HEADER_LEN: usize = HEADER_LEN + MAC_LEN;

/// Largest encrypted chunk on the wire (a Noise message is at most 65,535 bytes).
pub const MAX_CHUNK_CIPHERTEXT_LEN: usize = 65_535;

/// Largest plaintext carried by one chunk.
pub const MAX_CHUNK_PLAINTEXT_LEN: usize = MAX_CHUNK_CIPHERTEXT_LEN - MAC_LEN;

/// Ciphertext length of a payload of `plain` bytes (per-chunk MACs included).
pub const fn encrypted_payload_len(plain: usize) -> usize {
    plain + plain.div_ceil(MAX_CHUNK_PLAINTEXT_LEN) * MAC_LEN
}

/// Why encoding or decoding failed. All decode errors mean: drop the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseCodecError {
    /// The socket failed (or closed mid-frame). Drop the connection.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A header or chunk did not authenticate. Drop the connection.
    #[error("noise transport decryption failed")]
    Decrypt,
    /// The peer announced a payload above our limit. Drop the connection.
    #[error("announced payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// The announced `msg_length`.
        len: u32,
        /// The configured maximum.
        max: usize,
    },
    /// A direction's nonce counter ran out. Drop the connection.
    #[error("noise nonce exhausted")]
    NonceExhausted,
    /// A frame to encode has `msg_length` different from its payload length, or a payload
    /// too long for the U24 field (a local bug; nothing was written).
    #[error("frame header length {header} does not match payload length {payload}")]
    LengthMismatch {
        /// `header.msg_length`.
        header: u32,
        /// `payload.len()`.
        payload: usize,
    },
    /// `decode` was called again after a failure. Drop the connection.
    #[error("noise decoder used after a failure")]
    Poisoned,
}

impl From<TransportError> for NoiseCodecError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Decrypt(_) => NoiseCodecError::Decrypt,
            TransportError::NonceExhausted(_) => NoiseCodecError::NonceExhausted,
            // Only reachable through a bug in this module; treat it like a broken stream.
            _ => NoiseCodecError::Decrypt,
        }
    }
}

/// The sending half: encrypts [`Frame`]s.
#[derive(Debug)]
pub struct NoiseEncoder {
    cipher: CipherHalf,
}

impl NoiseEncoder {
    /// Wraps the sending cipher of a session.
    pub fn new(cipher: CipherHalf) -> Self {
        NoiseEncoder { cipher }
    }

    fn seal(&mut self, plain: &[u8], dst: &mut BytesMut) -> Result<(), TransportError> {
        let start = dst.len();
        dst.extend_from_slice(plain);
        dst.extend_from_slice(&[0u8; MAC_LEN]);
        match dst.get_mut(start..) {
            Some(buf) => self.cipher.encrypt_in_place(buf),
            None => Err(TransportError::BufferTooShort),
        }
    }
}

impl Encoder<Frame> for NoiseEncoder {
    type Error = NoiseCodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), NoiseCodecError> {
        let len = frame.payload.len();
        if len != frame.header.msg_length as usize || len > MAX_PAYLOAD_LEN {
            return Err(NoiseCodecError::LengthMismatch {
                header: frame.header.msg_length,
                payload: len,
            });
        }
        let start = dst.len();
        dst.reserve(ENCRYPTED_HEADER_LEN + encrypted_payload_len(len));
        let mut result = self.seal(&frame.header.encode(), dst);
        for chunk in frame.payload.chunks(MAX_CHUNK_PLAINTEXT_LEN) {
            if result.is_err() {
                break;
            }
            result = self.seal(chunk, dst);
        }
        if let Err(e) = result {
            // Never leave half a frame in the write buffer.
            dst.truncate(start);
            return Err(e.into());
        }
        Ok(())
    }
}

/// The receiving half: decrypts [`Frame`]s.
#[derive(Debug)]
pub struct NoiseDecoder {
    cipher: CipherHalf,
    max_payload: usize,
    /// Header of a frame whose payload has not fully arrived yet.
    pending: Option<Header>,
    failed: bool,
}

impl NoiseDecoder {
    /// Wraps the receiving cipher of a session; payloads up to [`MAX_PAYLOAD_LEN`] accepted.
    pub fn new(cipher: CipherHalf) -> Self {
        NoiseDecoder {
            cipher,
            max_payload: MAX_PAYLOAD_LEN,
            pending: None,
            failed: false,
        }
    }

    /// Sets the largest payload accepted; a bigger announced `msg_length` is an error.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    fn decode_inner(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, NoiseCodecError> {
        let header = match self.pending {
            Some(h) => h,
            None => {
                if src.len() < ENCRYPTED_HEADER_LEN {
                    src.reserve(ENCRYPTED_HEADER_LEN - src.len());
                    return Ok(None);
                }
                let mut sealed = [0u8; ENCRYPTED_HEADER_LEN];
                sealed.copy_from_slice(&src.split_to(ENCRYPTED_HEADER_LEN));
                self.cipher.decrypt_in_place(&mut sealed)?;
                let mut raw = [0u8; HEADER_LEN];
                raw.copy_from_slice(&sealed[..HEADER_LEN]);
                let header = Header::decode(&raw);
                if header.msg_length as usize > self.max_payload {
                    return Err(NoiseCodecError::PayloadTooLarge {
                        len: header.msg_length,
                        max: self.max_payload,
                    });
                }
                if header.msg_length == 0 {
                    return Ok(Some(Frame {
                        header,
                        payload: Bytes::new(),
                    }));
                }
                self.pending = Some(header);
                header
            }
        };
        let sealed_len = encrypted_payload_len(header.msg_length as usize);
        if src.len() < sealed_len {
            // Grow by what is still missing, at most one chunk: memory follows real bytes.
            src.reserve((sealed_len - src.len()).min(MAX_CHUNK_CIPHERTEXT_LEN));
            return Ok(None);
        }
        let mut payload = src.split_to(sealed_len);
        // Decrypt each chunk in place and slide its plaintext down over the previous MACs.
        let mut read = 0;
        let mut written = 0;
        while read < sealed_len {
            let end = (read + MAX_CHUNK_CIPHERTEXT_LEN).min(sealed_len);
            let chunk = payload.get_mut(read..end).ok_or(NoiseCodecError::Decrypt)?;
            self.cipher.decrypt_in_place(chunk)?;
            let plain = end - read - MAC_LEN;
            payload.copy_within(read..read + plain, written);
            written += plain;
            read = end;
        }
        payload.truncate(written);
        self.pending = None;
        Ok(Some(Frame {
            header,
            payload: payload.freeze(),
        }))
    }
}

impl Decoder for NoiseDecoder {
    type Item = Frame;
    type Error = NoiseCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, NoiseCodecError> {
        if self.failed {
            return Err(NoiseCodecError::Poisoned);
        }
        let result = self.decode_inner(src);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, NoiseCodecError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            // A clean close happens between frames only.
            None if src.is_empty() && self.pending.is_none() => Ok(None),
            None => {
                self.failed = true;
                Err(NoiseCodecError::Io(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ))
            }
        }
    }
}

/// Both halves in one codec, for a `Framed` socket. Use [`NoiseCodec::into_split`] for
/// separate `FramedRead`/`FramedWrite` halves.
#[derive(Debug)]
pub struct NoiseCodec {
    encoder: NoiseEncoder,
    decoder: NoiseDecoder,
}

impl NoiseCodec {
    /// The codec for a session that completed its handshake; payloads up to
    /// [`MAX_PAYLOAD_LEN`] accepted.
    pub fn new(transport: TransportState) -> Self {
        let (encryptor, decryptor) = transport.split();
        NoiseCodec {
            encoder: NoiseEncoder::new(encryptor),
            decoder: NoiseDecoder::new(decryptor),
        }
    }

    /// Sets the largest payload accepted from the peer.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.decoder = self.decoder.with_max_payload(max);
        self
    }

    /// Separates the sending and receiving halves.
    pub fn into_split(self) -> (NoiseEncoder, NoiseDecoder) {
        (self.encoder, self.decoder)
    }
}

impl Encoder<Frame> for NoiseCodec {
    type Error = NoiseCodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), NoiseCodecError> {
        self.encoder.encode(frame, dst)
    }
}

impl Decoder for NoiseCodec {
    type Item = Frame;
    type Error = NoiseCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, NoiseCodecError> {
        self.decoder.decode(src)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, NoiseCodecError> {
        self.decoder.decode_eof(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::handshake::{Initiator, Responder, ResponderConfig};
    use crate::noise::keys::{AuthorityKeypair, SecretKey};
    use secp256k1::rand::SeedableRng;
    use secp256k1::rand::rngs::StdRng;

    fn pair() -> (NoiseCodec, NoiseCodec) {
        let mut rng = StdRng::seed_from_u64(5);
        let cfg = ResponderConfig::new(
            AuthorityKeypair::generate(&mut rng),
            SecretKey::generate(&mut rng),
            60,
        );
        let mut i = Initiator::new(Some(cfg.authority_public_key()), &mut rng);
        let m0 = i.step_0().unwrap();
        let (m1, rt) = Responder::new(&cfg, &mut rng).step_1(&m0, 100).unwrap();
        let (it, _) = i.step_2(&m1, 100).unwrap();
        (NoiseCodec::new(it), NoiseCodec::new(rt))
    }

    fn frame(len: usize) -> Frame {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        Frame::new(0, true, 0x1a, payload.into()).unwrap()
    }

    #[test]
    fn lengths() {
        assert_eq!(encrypted_payload_len(0), 0);
        assert_eq!(encrypted_payload_len(1), 17);
        assert_eq!(encrypted_payload_len(65_519), 65_535);
        assert_eq!(encrypted_payload_len(65_520), 65_552);
    }

    #[test]
    fn round_trips_sizes_and_byte_by_byte() {
        let (mut a, mut b) = pair();
        for len in [0, 1, 100, 65_519, 65_520, 200_000] {
            let f = frame(len);
            let mut wire = BytesMut::new();
            a.encode(f.clone(), &mut wire).unwrap();
            assert_eq!(
                wire.len(),
                ENCRYPTED_HEADER_LEN + encrypted_payload_len(len)
            );
            // Feed in small pieces: every prefix is "need more".
            let mut rx = BytesMut::new();
            let mut got = None;
            for piece in wire.chunks(7919) {
                assert!(got.is_none());
                rx.extend_from_slice(piece);
                got = b.decode(&mut rx).unwrap();
            }
            assert_eq!(got.unwrap(), f);
            assert!(rx.is_empty());
        }
        // And the other direction.
        let mut wire = BytesMut::new();
        b.encode(frame(5), &mut wire).unwrap();
        assert_eq!(a.decode(&mut wire).unwrap().unwrap(), frame(5));
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let (mut a, mut b) = pair();
        let mut wire = BytesMut::new();
        for len in [3, 0, 70_000] {
            a.encode(frame(len), &mut wire).unwrap();
        }
        for len in [3, 0, 70_000] {
            assert_eq!(b.decode(&mut wire).unwrap().unwrap(), frame(len));
        }
        assert_eq!(b.decode(&mut wire).unwrap(), None);
    }

    #[test]
    fn too_large_is_rejected_before_reserving() {
        let (mut a, b) = pair();
        let mut b = b.with_max_payload(1000);
        let mut wire = BytesMut::new();
        a.encode(frame(1001), &mut wire).unwrap();
        wire.truncate(ENCRYPTED_HEADER_LEN);
        let cap = wire.capacity();
        assert!(matches!(
            b.decode(&mut wire),
            Err(NoiseCodecError::PayloadTooLarge {
                len: 1001,
                max: 1000
            })
        ));
        assert!(wire.capacity() <= cap);
        assert!(matches!(
            b.decode(&mut wire),
            Err(NoiseCodecError::Poisoned)
        ));
    }

    #[test]
    fn reservation_is_bounded_by_a_chunk() {
        let (mut a, mut b) = pair();
        let mut wire = BytesMut::new();
        a.encode(frame(1_000_000), &mut wire).unwrap();
        let mut rx = BytesMut::from(&wire[..ENCRYPTED_HEADER_LEN]);
        assert_eq!(b.decode(&mut rx).unwrap(), None);
        assert!(rx.capacity() <= ENCRYPTED_HEADER_LEN + MAX_CHUNK_CIPHERTEXT_LEN);
    }

    #[test]
    fn eof_mid_frame_is_an_error() {
        let (mut a, mut b) = pair();
        let mut wire = BytesMut::new();
        a.encode(frame(100), &mut wire).unwrap();
        let mut rx = BytesMut::from(&wire[..ENCRYPTED_HEADER_LEN]);
        assert!(matches!(
            b.decode_eof(&mut rx),
            Err(NoiseCodecError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
        let (_, mut c) = pair();
        assert_eq!(c.decode_eof(&mut BytesMut::new()).unwrap(), None);
    }

    #[test]
    fn tampering_and_mismatch() {
        let (mut a, mut b) = pair();
        let mut wire = BytesMut::new();
        a.encode(frame(10), &mut wire).unwrap();
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert!(matches!(b.decode(&mut wire), Err(NoiseCodecError::Decrypt)));
        let mut bad = frame(10);
        bad.header.msg_length = 11;
        let mut out = BytesMut::new();
        assert!(matches!(
            a.encode(bad, &mut out),
            Err(NoiseCodecError::LengthMismatch { .. })
        ));
        assert!(out.is_empty());
    }
}
