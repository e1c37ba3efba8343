//! The Noise NX handshake of sv2-spec 04 ("Handshake"), `Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256`.
//!
//! ```text
//! initiator (client)                          responder (server)
//!   -> e                         64 bytes
//!                                             <- e, ee, s, es, SIGNATURE_NOISE_MESSAGE
//!                                                234 bytes = 64 + (64+16) + (74+16)
//! ```
//!
//! Handshake messages carry no length prefix: each side reads exactly
//! [`INITIATOR_MESSAGE_LEN`] or [`RESPONDER_MESSAGE_LEN`] bytes. The prologue is empty. The
//! symmetric state, message processing and `Split()` are `noise-protocol`'s; this module adds
//! the role-aware DH ([`super::dh`]), the certificate carried as the second message's payload,
//! and a sans-IO surface: randomness comes from the caller's RNG, time is the `now` argument.
//!
//! Driving it (the async layer only moves bytes):
//!
//! - client: `Initiator::new(pinned, rng)`, write `step_0()`'s 64 bytes, read 234 bytes,
//!   `step_2(&reply, now)` → [`TransportState`];
//! - server: `Responder::new(&config, rng)`, read 64 bytes, `step_1(&hello, now)` → 234 bytes to
//!   write and a [`TransportState`].
//!
//! Every [`HandshakeError`] means: drop the connection. No state is reusable after an error.

use std::sync::Arc;

use noise_protocol::patterns::noise_nx;
use noise_protocol::{ErrorKind, HandshakeState, U8Array};
use noise_rust_crypto::{ChaCha20Poly1305, Sha256};
use secp256k1::ellswift::ElligatorSwift;
use secp256k1::rand::CryptoRng;
use secp256k1::rand::Rng;
use secp256k1::{PublicKey, XOnlyPublicKey};

use super::cert::{CERTIFICATE_LEN, CertError, Certificate};
use super::dh::{ELLSWIFT_LEN, InitiatorDh, ResponderDh, dh_key};
use super::keys::{AuthorityKeypair, AuthorityPublicKey, SecretKey};
use super::transport::{CipherHalf, MAC_LEN, TransportState, key_from};
#[cfg(test)]
use noise_protocol::DH;

/// Length of the initiator's message (`-> e`): one ElligatorSwift encoding.
pub const INITIATOR_MESSAGE_LEN: usize = ELLSWIFT_LEN;

/// Length of the responder's message (`<- e, ee, s, es` + certificate).
pub const RESPONDER_MESSAGE_LEN: usize =
    ELLSWIFT_LEN + (ELLSWIFT_LEN + MAC_LEN) + (CERTIFICATE_LEN + MAC_LEN);

/// The full Noise protocol name (longer than 32 bytes, so it is hashed into `h`).
pub const PROTOCOL_NAME: &str = "Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256";

/// Why a handshake failed. Every variant means: drop the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's message does not have the fixed length of its step. Drop the connection.
    #[error("handshake message is {got} bytes, expected {expected}")]
    BadLength {
        /// The length this step requires.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// The responder's encrypted static key or certificate did not authenticate (tampering,
    /// or a peer that is not speaking this protocol). Drop the connection.
    #[error("handshake decryption failed")]
    Decrypt,
    /// A Diffie-Hellman computation failed (invalid key material). Drop the connection.
    #[error("handshake DH failed")]
    Dh,
    /// The server's certificate was rejected. Drop the connection.
    #[error("server certificate rejected: {0}")]
    Certificate(#[from] CertError),
    /// A step was called out of order (a local bug). Drop the connection.
    #[error("handshake step called out of order")]
    OutOfOrder,
}

fn map_noise(e: noise_protocol::Error) -> HandshakeError {
    match e.kind() {
        ErrorKind::DH => HandshakeError::Dh,
        ErrorKind::Decryption | ErrorKind::TooShort => HandshakeError::Decrypt,
        // NeedPSK: NX uses no PSK, so this cannot happen.
        _ => HandshakeError::OutOfOrder,
    }
}

fn fresh_dh_key<R: CryptoRng + ?Sized>(rng: &mut R) -> super::dh::DhKey {
    let sk = secp256k1::SecretKey::new(rng);
    let aux: [u8; 32] = rng.random();
    dh_key(&sk, aux)
}

/// The client side of the handshake.
pub struct Initiator {
    hs: HandshakeState<InitiatorDh, ChaCha20Poly1305, Sha256>,
    authority: Option<AuthorityPublicKey>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Prepares a handshake with a fresh ephemeral key from `rng`. With `authority` set, the
    /// server's certificate must be signed by it; without, only the certificate's version
    /// and validity window are checked (any server is accepted: use only on trusted links).
    pub fn new<R: CryptoRng + ?Sized>(authority: Option<AuthorityPublicKey>, rng: &mut R) -> Self {
        let e = fresh_dh_key(rng);
        let hs = HandshakeState::new(noise_nx(), true, [], None, Some(e), None, None);
        Initiator { hs, authority }
    }

    /// Produces the first message (`-> e`), to be written as is.
    pub fn step_0(&mut self) -> Result<[u8; INITIATOR_MESSAGE_LEN], HandshakeError> {
        if !self.hs.is_write_turn()
            || self.hs.completed()
            || self.hs.get_next_message_overhead() != INITIATOR_MESSAGE_LEN
        {
            return Err(HandshakeError::OutOfOrder);
        }
        let mut out = [0u8; INITIATOR_MESSAGE_LEN];
        self.hs.write_message(&[], &mut out).map_err(map_noise)?;
        Ok(out)
    }

    /// Consumes the responder's 234-byte message: checks its length, decrypts the server's
    /// static key and certificate, verifies the certificate at `now` (unix seconds), and
    /// returns the transport ciphers with the accepted certificate.
    pub fn step_2(
        mut self,
        message: &[u8],
        now: u32,
    ) -> Result<(TransportState, Certificate), HandshakeError> {
        if message.len() != RESPONDER_MESSAGE_LEN {
            return Err(HandshakeError::BadLength {
                expected: RESPONDER_MESSAGE_LEN,
                got: message.len(),
            });
        }
        if self.hs.is_write_turn()
            || self.hs.completed()
            || self.hs.get_next_message_overhead() + CERTIFICATE_LEN != RESPONDER_MESSAGE_LEN
        {
            return Err(HandshakeError::OutOfOrder);
        }
        let mut payload = [0u8; CERTIFICATE_LEN];
        self.hs
            .read_message(message, &mut payload)
            .map_err(map_noise)?;
        let rs = self.hs.get_rs().ok_or(HandshakeError::OutOfOrder)?;
        let server_static: XOnlyPublicKey =
            PublicKey::from_ellswift(ElligatorSwift::from_array(rs))
                .x_only_public_key()
                .0;
        let cert = Certificate::decode(&payload);
        cert.verify(&server_static, self.authority.as_ref(), now)?;
        let (c1, c2) = self.hs.get_ciphers();
        let (k1, n1) = c1.extract();
        let (k2, n2) = c2.extract();
        let transport = TransportState::new(
            CipherHalf::new(key_from(k1.as_slice()), n1),
            CipherHalf::new(key_from(k2.as_slice()), n2),
            self.hs.get_hash(),
        );
        Ok((transport, cert))
    }
}

/// What a server needs to answer handshakes: its authority key pair (to sign certificates),
/// its static Noise key, and how long each certificate is valid. Build it once at startup and
/// share it between connections; clones share one copy of the secrets.
#[derive(Clone)]
pub struct ResponderConfig {
    inner: Arc<ConfigInner>,
}

struct ConfigInner {
    authority: AuthorityKeypair,
    static_key: SecretKey,
    static_xonly: XOnlyPublicKey,
    cert_validity_secs: u32,
}

impl std::fmt::Debug for ResponderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponderConfig")
            .field("authority", &self.inner.authority.public_key())
            .field("cert_validity_secs", &self.inner.cert_validity_secs)
            .finish_non_exhaustive()
    }
}

impl ResponderConfig {
    /// Combines the authority key pair, the server's static key and the certificate validity
    /// (each certificate is valid from the handshake's `now` for this many seconds).
    pub fn new(
        authority: AuthorityKeypair,
        static_key: SecretKey,
        cert_validity_secs: u32,
    ) -> Self {
        let static_xonly = *static_key.public_key().x_only();
        ResponderConfig {
            inner: Arc::new(ConfigInner {
                authority,
                static_key,
                static_xonly,
                cert_validity_secs,
            }),
        }
    }

    /// The authority public key clients should pin.
    pub fn authority_public_key(&self) -> AuthorityPublicKey {
        self.inner.authority.public_key()
    }

    /// Signs a certificate for our static key valid from `now`.
    fn certificate(&self, now: u32, aux: &[u8; 32]) -> Certificate {
        Certificate::sign(
            &self.inner.authority,
            &self.inner.static_xonly,
            now,
            now.saturating_add(self.inner.cert_validity_secs),
            aux,
        )
    }
}

/// The server side of the handshake, for one connection.
pub struct Responder {
    hs: HandshakeState<ResponderDh, ChaCha20Poly1305, Sha256>,
    config: ResponderConfig,
    sig_aux: [u8; 32],
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder").finish_non_exhaustive()
    }
}

impl Responder {
    /// Prepares to answer one handshake: draws the ephemeral key and the randomness for the
    /// ElligatorSwift encodings and the certificate signature from `rng`.
    pub fn new<R: CryptoRng + ?Sized>(config: &ResponderConfig, rng: &mut R) -> Self {
        let e = fresh_dh_key(rng);
        let s = dh_key(config.inner.static_key.inner(), rng.random());
        let hs = HandshakeState::new(noise_nx(), false, [], Some(s), Some(e), None, None);
        Responder {
            hs,
            config: config.clone(),
            sig_aux: rng.random(),
        }
    }

    /// Consumes the initiator's 64-byte message and returns the 234-byte reply to write,
    /// with the transport ciphers; the certificate inside is valid from `now` (unix seconds).
    pub fn step_1(
        mut self,
        message: &[u8],
        now: u32,
    ) -> Result<([u8; RESPONDER_MESSAGE_LEN], TransportState), HandshakeError> {
        if message.len() != INITIATOR_MESSAGE_LEN {
            return Err(HandshakeError::BadLength {
                expected: INITIATOR_MESSAGE_LEN,
                got: message.len(),
            });
        }
        if self.hs.is_write_turn()
            || self.hs.completed()
            || self.hs.get_next_message_overhead() != INITIATOR_MESSAGE_LEN
        {
            return Err(HandshakeError::OutOfOrder);
        }
        self.hs.read_message(message, &mut []).map_err(map_noise)?;
        if !self.hs.is_write_turn()
            || self.hs.completed()
            || self.hs.get_next_message_overhead() + CERTIFICATE_LEN != RESPONDER_MESSAGE_LEN
        {
            return Err(HandshakeError::OutOfOrder);
        }
        let cert = self.config.certificate(now, &self.sig_aux).encode();
        let mut out = [0u8; RESPONDER_MESSAGE_LEN];
        self.hs.write_message(&cert, &mut out).map_err(map_noise)?;
        let (c1, c2) = self.hs.get_ciphers();
        let (k1, n1) = c1.extract();
        let (k2, n2) = c2.extract();
        let transport = TransportState::new(
            CipherHalf::new(key_from(k2.as_slice()), n2),
            CipherHalf::new(key_from(k1.as_slice()), n1),
            self.hs.get_hash(),
        );
        Ok((out, transport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::rand::SeedableRng;
    use secp256k1::rand::rngs::StdRng;

    const NOW: u32 = 1_700_000_000;

    fn config(rng: &mut StdRng) -> ResponderConfig {
        ResponderConfig::new(
            AuthorityKeypair::generate(rng),
            SecretKey::generate(rng),
            3600,
        )
    }

    fn handshake(
        rng: &mut StdRng,
        cfg: &ResponderConfig,
        pinned: Option<AuthorityPublicKey>,
        client_now: u32,
    ) -> Result<(TransportState, TransportState), HandshakeError> {
        let mut i = Initiator::new(pinned, rng);
        let r = Responder::new(cfg, rng);
        let m0 = i.step_0()?;
        let (m1, rt) = r.step_1(&m0, NOW)?;
        let (it, cert) = i.step_2(&m1, client_now)?;
        assert_eq!(cert.valid_from, NOW);
        Ok((it, rt))
    }

    #[test]
    fn lengths_match_the_notes() {
        assert_eq!(INITIATOR_MESSAGE_LEN, 64);
        assert_eq!(RESPONDER_MESSAGE_LEN, 234);
        assert_eq!(
            format!("Noise_NX_{}_ChaChaPoly_SHA256", InitiatorDh::name()),
            PROTOCOL_NAME
        );
    }

    #[test]
    fn full_handshake_then_transport_both_ways() {
        let mut rng = StdRng::seed_from_u64(7);
        let cfg = config(&mut rng);
        let (mut it, mut rt) =
            handshake(&mut rng, &cfg, Some(cfg.authority_public_key()), NOW).unwrap();
        assert_eq!(it.handshake_hash(), rt.handshake_hash());
        let mut m = vec![1u8; 20];
        it.encryptor.encrypt_in_place(&mut m).unwrap();
        rt.decryptor.decrypt_in_place(&mut m).unwrap();
        assert_eq!(&m[..4], &[1; 4]);
        let mut m = vec![2u8; 20];
        rt.encryptor.encrypt_in_place(&mut m).unwrap();
        it.decryptor.decrypt_in_place(&mut m).unwrap();
        assert_eq!(&m[..4], &[2; 4]);
    }

    #[test]
    fn deterministic_given_the_rng() {
        let run = || {
            let mut rng = StdRng::seed_from_u64(99);
            let cfg = config(&mut rng);
            let mut i = Initiator::new(None, &mut rng);
            let r = Responder::new(&cfg, &mut rng);
            let m0 = i.step_0().unwrap();
            let (m1, _) = r.step_1(&m0, NOW).unwrap();
            (m0, m1)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn certificate_failures_are_typed() {
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = config(&mut rng);
        let wrong = AuthorityKeypair::generate(&mut rng).public_key();
        assert_eq!(
            handshake(&mut rng, &cfg, Some(wrong), NOW).unwrap_err(),
            HandshakeError::Certificate(CertError::BadSignature)
        );
        assert!(matches!(
            handshake(
                &mut rng,
                &cfg,
                Some(cfg.authority_public_key()),
                NOW + 3600 + 11
            ),
            Err(HandshakeError::Certificate(CertError::Expired { .. }))
        ));
        assert!(matches!(
            handshake(&mut rng, &cfg, Some(cfg.authority_public_key()), NOW - 11),
            Err(HandshakeError::Certificate(CertError::NotYetValid { .. }))
        ));
    }

    #[test]
    fn bad_lengths_tamper_and_order() {
        let mut rng = StdRng::seed_from_u64(4);
        let cfg = config(&mut rng);
        let r = Responder::new(&cfg, &mut rng);
        assert_eq!(
            r.step_1(&[0; 63], NOW).unwrap_err(),
            HandshakeError::BadLength {
                expected: 64,
                got: 63
            }
        );
        let mut i = Initiator::new(None, &mut rng);
        let m0 = i.step_0().unwrap();
        assert_eq!(i.step_0().unwrap_err(), HandshakeError::OutOfOrder);
        let (mut m1, _) = Responder::new(&cfg, &mut rng).step_1(&m0, NOW).unwrap();
        m1[200] ^= 1;
        assert_eq!(i.step_2(&m1, NOW).unwrap_err(), HandshakeError::Decrypt);
        let i = Initiator::new(None, &mut rng);
        assert_eq!(
            i.step_2(&[0; RESPONDER_MESSAGE_LEN], NOW).unwrap_err(),
            HandshakeError::OutOfOrder
        );
    }
}
