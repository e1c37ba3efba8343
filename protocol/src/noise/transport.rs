//! The transport ciphers that a completed handshake yields (sv2-spec 04, "Transport message
//! encryption and format").
//!
//! `Split()` gives two ChaCha20-Poly1305 keys: c1 for initiator → responder, c2 for the other
//! way. Each direction keeps its own nonce counter, encoded as 4 zero bytes followed by the u64
//! counter little-endian, and starting at 0. There is no rekeying. Associated data is empty.
//!
//! Keys live in [`Sensitive`] buffers, zeroed on drop. Nonce `2^64 - 1` is reserved by the
//! Noise spec; reaching it is reported as [`NonceExhausted`] instead of wrapping or panicking
//! (it would take centuries at any real message rate).

use noise_protocol::{Cipher, U8Array};
use noise_rust_crypto::ChaCha20Poly1305;
use noise_rust_crypto::sensitive::Sensitive;

/// Length of the Poly1305 tag appended to every ciphertext.
pub const MAC_LEN: usize = 16;

/// The nonce counter of one direction reached its reserved maximum; the connection must be
/// dropped (and a new handshake run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transport nonce exhausted")]
pub struct NonceExhausted;

/// An authentication failure: the ciphertext was not produced by the peer under the expected
/// key and nonce. The connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transport decryption failed")]
pub struct DecryptFailed;

/// One direction of the transport: a key and its next nonce.
pub struct CipherHalf {
    key: Sensitive<[u8; 32]>,
    nonce: u64,
}

impl std::fmt::Debug for CipherHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherHalf")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl CipherHalf {
    pub(crate) fn new(key: Sensitive<[u8; 32]>, nonce: u64) -> Self {
        CipherHalf { key, nonce }
    }

    /// The nonce the next message will use.
    pub fn next_nonce(&self) -> u64 {
        self.nonce
    }

    fn take_nonce(&mut self) -> Result<u64, NonceExhausted> {
        let n = self.nonce;
        if n == u64::MAX {
            return Err(NonceExhausted);
        }
        self.nonce = n + 1;
        Ok(n)
    }

    /// Encrypts `buf[..buf.len() - MAC_LEN]` in place and writes the tag into the last
    /// [`MAC_LEN`] bytes (their previous content is ignored). A `buf` shorter than [`MAC_LEN`]
    /// is rejected untouched, without consuming a nonce.
    pub fn encrypt_in_place(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        let Some(plain_len) = buf.len().checked_sub(MAC_LEN) else {
            return Err(TransportError::BufferTooShort);
        };
        let n = self.take_nonce()?;
        ChaCha20Poly1305::encrypt_in_place(&self.key, n, &[], buf, plain_len);
        Ok(())
    }

    /// Decrypts `buf` (ciphertext followed by its tag) in place; on success the plaintext is
    /// `buf[..buf.len() - MAC_LEN]`. On failure the nonce is still consumed, so the stream
    /// cannot be resumed: the connection must be dropped.
    pub fn decrypt_in_place(&mut self, buf: &mut [u8]) -> Result<(), TransportError> {
        if buf.len() < MAC_LEN {
            return Err(TransportError::Decrypt(DecryptFailed));
        }
        let n = self.take_nonce()?;
        let len = buf.len();
        ChaCha20Poly1305::decrypt_in_place(&self.key, n, &[], buf, len)
            .map(|_| ())
            .map_err(|()| TransportError::Decrypt(DecryptFailed))
    }
}

/// A transport failure; the peer-caused ones mean the connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// See [`DecryptFailed`]. Drop the connection.
    #[error(transparent)]
    Decrypt(#[from] DecryptFailed),
    /// See [`NonceExhausted`]. Drop the connection.
    #[error(transparent)]
    NonceExhausted(#[from] NonceExhausted),
    /// A buffer too short to hold a tag was passed to encrypt: a local bug, nothing was
    /// encrypted and no nonce consumed.
    #[error("buffer shorter than the authentication tag")]
    BufferTooShort,
}

/// Both directions of an established Noise session, as seen from one side.
#[derive(Debug)]
pub struct TransportState {
    /// Encrypts what we send.
    pub encryptor: CipherHalf,
    /// Decrypts what we receive.
    pub decryptor: CipherHalf,
    handshake_hash: [u8; 32],
}

impl TransportState {
    pub(crate) fn new(encryptor: CipherHalf, decryptor: CipherHalf, h: &[u8]) -> Self {
        let mut handshake_hash = [0u8; 32];
        if let Some(src) = h.get(..32) {
            handshake_hash.copy_from_slice(src);
        }
        TransportState {
            encryptor,
            decryptor,
            handshake_hash,
        }
    }

    /// The Noise handshake hash `h`: identical on both sides, usable for channel binding.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// Separates the two directions, e.g. for a reader task and a writer task.
    pub fn split(self) -> (CipherHalf, CipherHalf) {
        (self.encryptor, self.decryptor)
    }
}

/// Builds a key buffer from a slice of exactly 32 bytes (the output of `Split()`).
pub(crate) fn key_from(slice: &[u8]) -> Sensitive<[u8; 32]> {
    let mut key = Sensitive::<[u8; 32]>::new();
    if slice.len() == 32 {
        key.as_mut().copy_from_slice(slice);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(k: u8, n: u64) -> CipherHalf {
        CipherHalf::new(key_from(&[k; 32]), n)
    }

    #[test]
    fn round_trip_and_nonce_order() {
        let (mut a, mut b) = (half(1, 0), half(1, 0));
        let mut m1 = b"hello\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        let mut m2 = m1.clone();
        a.encrypt_in_place(&mut m1).unwrap();
        a.encrypt_in_place(&mut m2).unwrap();
        assert_ne!(m1, m2, "nonce must advance");
        // A receiver at the wrong nonce cannot decrypt.
        let mut c = half(1, 0);
        assert!(c.decrypt_in_place(&mut m2.clone()).is_err());
        b.decrypt_in_place(&mut m1).unwrap();
        b.decrypt_in_place(&mut m2).unwrap();
        assert_eq!(&m1[..5], b"hello");
        assert_eq!(b.next_nonce(), 2);
    }

    #[test]
    fn tamper_and_short_buffers_fail() {
        let (mut a, mut b) = (half(9, 0), half(9, 0));
        let mut m = vec![0u8; 40];
        a.encrypt_in_place(&mut m).unwrap();
        m[3] ^= 1;
        assert_eq!(
            b.decrypt_in_place(&mut m),
            Err(TransportError::Decrypt(DecryptFailed))
        );
        assert!(b.decrypt_in_place(&mut [0u8; 15]).is_err());
    }

    #[test]
    fn nonce_exhaustion_is_an_error() {
        let mut a = half(1, u64::MAX);
        assert_eq!(
            a.encrypt_in_place(&mut [0u8; 16]),
            Err(TransportError::NonceExhausted(NonceExhausted))
        );
        assert_eq!(
            half(1, 0).encrypt_in_place(&mut [0u8; 15]),
            Err(TransportError::BufferTooShort)
        );
        let mut b = half(1, u64::MAX);
        assert_eq!(
            b.decrypt_in_place(&mut [0u8; 16]),
            Err(TransportError::NonceExhausted(NonceExhausted))
        );
    }
}
