//! The Noise NX handshake and transport cipher of Stratum V2 (sv2-spec 04, "Protocol
//! Security"), byte-for-byte interoperable with the reference implementation (`noise_sv2`).
//!
//! | module | role |
//! |---|---|
//! | [`keys`] | authority/static keys and their base58check config forms |
//! | [`cert`] | the 74-byte SIGNATURE_NOISE_MESSAGE: sign, verify with `now` and leeway |
//! | [`dh`] | the role-aware `Secp256k1+EllSwift` DH plugged into `noise-protocol` |
//! | [`handshake`] | [`Initiator`] and [`Responder`] step functions (64 then 234 bytes) |
//! | [`transport`] | the two ChaCha20-Poly1305 directions a handshake yields |
//! | [`codec`] | [`NoiseCodec`]: encrypted SV2 frames for `tokio_util::codec` |
//!
//! Sans-IO: randomness comes in as an RNG argument (`secp256k1::rand`, i.e. rand 0.9), time
//! as a `now: u32` (unix seconds) argument. Every handshake or transport error means the
//! connection must be dropped; nothing here ever answers a peer with an error message.

pub mod cert;
pub mod codec;
pub mod dh;
pub mod handshake;
pub mod keys;
pub mod transport;

pub use cert::{CertError, Certificate};
pub use codec::{NoiseCodec, NoiseCodecError};
pub use handshake::{
    HandshakeError, INITIATOR_MESSAGE_LEN, Initiator, RESPONDER_MESSAGE_LEN, Responder,
    ResponderConfig,
};
pub use keys::{AuthorityKeypair, AuthorityPublicKey, KeyError, SecretKey};
pub use transport::{TransportError, TransportState};
