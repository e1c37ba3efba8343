//! The server certificate, SIGNATURE_NOISE_MESSAGE (sv2-spec 04, "Signature structure" and
//! "Certificate format").
//!
//! 74 bytes, little-endian: `version: U16 | valid_from: U32 | not_valid_after: U32 |
//! signature: [u8; 64]`. The signature is BIP340 Schnorr by the authority key over
//! `SHA256(version ‖ valid_from ‖ not_valid_after ‖ server_static_xonly32)`, where the last
//! field is the x-only form of the static key the server sent in the same handshake message.
//!
//! Verification follows the reference implementation: version must be 0, and the window is
//! widened by [`TIME_LEEWAY_SECS`] on both sides to absorb clock skew. Times are unix seconds
//! passed in by the caller (`now`); this module never reads a clock.

use secp256k1::{XOnlyPublicKey, schnorr};
use sha2::{Digest, Sha256};

use super::keys::{AuthorityKeypair, AuthorityPublicKey};

/// Encoded length of a certificate.
pub const CERTIFICATE_LEN: usize = 74;

/// The only certificate version defined.
pub const CERTIFICATE_VERSION: u16 = 0;

/// Clock skew tolerated on both ends of the validity window, in seconds.
pub const TIME_LEEWAY_SECS: u32 = 10;

/// Why a certificate was rejected. Every variant means the server is not (or not provably)
/// who it claims: the initiator drops the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The version field is not [`CERTIFICATE_VERSION`]. Drop the connection.
    #[error("unsupported certificate version {0}")]
    UnsupportedVersion(u16),
    /// `now + leeway < valid_from`. Drop the connection (check both clocks).
    #[error("certificate not valid before {valid_from}, now is {now}")]
    NotYetValid {
        /// Start of the window.
        valid_from: u32,
        /// The time it was checked at.
        now: u32,
    },
    /// `now - leeway > not_valid_after`. Drop the connection.
    #[error("certificate expired at {not_valid_after}, now is {now}")]
    Expired {
        /// End of the window.
        not_valid_after: u32,
        /// The time it was checked at.
        now: u32,
    },
    /// The signature is not the authority's over this server key and window: a wrong
    /// authority, a tampered certificate or a man in the middle. Drop the connection.
    #[error("certificate signature is not valid for the pinned authority key")]
    BadSignature,
}

/// A decoded SIGNATURE_NOISE_MESSAGE.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Certificate {
    /// Certificate version; must be [`CERTIFICATE_VERSION`].
    pub version: u16,
    /// First second (unix time) the certificate is valid.
    pub valid_from: u32,
    /// Last second (unix time) the certificate is valid.
    pub not_valid_after: u32,
    /// BIP340 signature by the authority.
    pub signature: [u8; 64],
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("version", &self.version)
            .field("valid_from", &self.valid_from)
            .field("not_valid_after", &self.not_valid_after)
            .field("signature", &hex::encode(self.signature))
            .finish()
    }
}

/// The 32-byte digest the authority signs.
fn signed_digest(
    version: u16,
    valid_from: u32,
    not_valid_after: u32,
    server_static: &XOnlyPublicKey,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(version.to_le_bytes());
    h.update(valid_from.to_le_bytes());
    h.update(not_valid_after.to_le_bytes());
    h.update(server_static.to_byte_array());
    h.finalize().into()
}

impl Certificate {
    /// Signs a version-0 certificate for `server_static`, valid from `valid_from` to
    /// `not_valid_after` inclusive. `aux_rand` is BIP340's auxiliary randomness (fresh random
    /// bytes from the caller; it hardens the nonce, the signature is valid whatever it is).
    pub fn sign(
        authority: &AuthorityKeypair,
        server_static: &XOnlyPublicKey,
        valid_from: u32,
        not_valid_after: u32,
        aux_rand: &[u8; 32],
    ) -> Self {
        let digest = signed_digest(
            CERTIFICATE_VERSION,
            valid_from,
            not_valid_after,
            server_static,
        );
        let sig = schnorr::sign_with_aux_rand(&digest, authority.keypair(), aux_rand);
        Certificate {
            version: CERTIFICATE_VERSION,
            valid_from,
            not_valid_after,
            signature: sig.to_byte_array(),
        }
    }

    /// Checks the version, the window (with leeway) at `now`, and, if an authority is
    /// pinned, the signature over `server_static`. Without a pinned authority the signature
    /// cannot be checked and only version and window are (the reference implementation
    /// checks nothing at all in that case).
    pub fn verify(
        &self,
        server_static: &XOnlyPublicKey,
        authority: Option<&AuthorityPublicKey>,
        now: u32,
    ) -> Result<(), CertError> {
        if self.version != CERTIFICATE_VERSION {
            return Err(CertError::UnsupportedVersion(self.version));
        }
        if now.saturating_add(TIME_LEEWAY_SECS) < self.valid_from {
            return Err(CertError::NotYetValid {
                valid_from: self.valid_from,
                now,
            });
        }
        if now.saturating_sub(TIME_LEEWAY_SECS) > self.not_valid_after {
            return Err(CertError::Expired {
                not_valid_after: self.not_valid_after,
                now,
            });
        }
        if let Some(authority) = authority {
            let digest = signed_digest(
                self.version,
                self.valid_from,
                self.not_valid_after,
                server_static,
            );
            schnorr::Signature::from_byte_array(self.signature)
                .verify(&digest, authority.x_only())
                .map_err(|_| CertError::BadSignature)?;
        }
        Ok(())
    }

    /// Encodes the 74 wire bytes.
    pub fn encode(&self) -> [u8; CERTIFICATE_LEN] {
        let mut out = [0u8; CERTIFICATE_LEN];
        out[0..2].copy_from_slice(&self.version.to_le_bytes());
        out[2..6].copy_from_slice(&self.valid_from.to_le_bytes());
        out[6..10].copy_from_slice(&self.not_valid_after.to_le_bytes());
        out[10..].copy_from_slice(&self.signature);
        out
    }

    /// Decodes the 74 wire bytes. Every byte pattern decodes; [`Certificate::verify`] judges.
    pub fn decode(bytes: &[u8; CERTIFICATE_LEN]) -> Self {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[10..]);
        Certificate {
            version: u16::from_le_bytes([bytes[0], bytes[1]]),
            valid_from: u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]),
            not_valid_after: u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]),
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::keys::SecretKey;

    fn setup() -> (AuthorityKeypair, XOnlyPublicKey) {
        let authority = AuthorityKeypair::from_secret(&SecretKey::from_bytes([0x11; 32]).unwrap());
        let server = SecretKey::from_bytes([0x22; 32]).unwrap();
        (authority, *server.public_key().x_only())
    }

    #[test]
    fn sign_verify_and_window_edges() {
        let (auth, server) = setup();
        let pk = auth.public_key();
        let c = Certificate::sign(&auth, &server, 1_000, 2_000, &[7; 32]);
        for now in [990, 1_000, 1_500, 2_000, 2_010] {
            assert_eq!(c.verify(&server, Some(&pk), now), Ok(()), "now={now}");
        }
        assert_eq!(
            c.verify(&server, Some(&pk), 989),
            Err(CertError::NotYetValid {
                valid_from: 1_000,
                now: 989
            })
        );
        assert_eq!(
            c.verify(&server, Some(&pk), 2_011),
            Err(CertError::Expired {
                not_valid_after: 2_000,
                now: 2_011
            })
        );
    }

    #[test]
    fn wrong_signer_wrong_server_tamper_and_version() {
        let (auth, server) = setup();
        let c = Certificate::sign(&auth, &server, 1_000, 2_000, &[7; 32]);
        let other = AuthorityKeypair::from_secret(&SecretKey::from_bytes([0x33; 32]).unwrap());
        assert_eq!(
            c.verify(&server, Some(&other.public_key()), 1_500),
            Err(CertError::BadSignature)
        );
        let other_server = *SecretKey::from_bytes([0x44; 32])
            .unwrap()
            .public_key()
            .x_only();
        assert_eq!(
            c.verify(&other_server, Some(&auth.public_key()), 1_500),
            Err(CertError::BadSignature)
        );
        let mut stretched = c;
        stretched.not_valid_after = 3_000;
        assert_eq!(
            stretched.verify(&server, Some(&auth.public_key()), 1_500),
            Err(CertError::BadSignature)
        );
        let mut v1 = c;
        v1.version = 1;
        assert_eq!(
            v1.verify(&server, Some(&auth.public_key()), 1_500),
            Err(CertError::UnsupportedVersion(1))
        );
        // Unpinned: signature unchecked, window still checked.
        assert_eq!(stretched.verify(&server, None, 1_500), Ok(()));
        assert!(c.verify(&server, None, 5_000).is_err());
    }

    #[test]
    fn encode_layout_and_round_trip() {
        let (auth, server) = setup();
        let c = Certificate::sign(&auth, &server, 0x0102_0304, 0x0a0b_0c0d, &[0; 32]);
        let b = c.encode();
        assert_eq!(b[..10], [0, 0, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(Certificate::decode(&b), c);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let (auth, server) = setup();
        let c = Certificate::sign(&auth, &server, u32::MAX, u32::MAX, &[0; 32]);
        assert!(
            c.verify(&server, Some(&auth.public_key()), u32::MAX)
                .is_ok()
        );
        let c = Certificate::sign(&auth, &server, 0, 0, &[0; 32]);
        assert!(c.verify(&server, Some(&auth.public_key()), 0).is_ok());
    }
}
