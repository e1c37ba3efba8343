//! The `Secp256k1+EllSwift` Diffie-Hellman function of sv2-spec 04 for the `noise-protocol`
//! crate.
//!
//! Public keys travel as 64-byte BIP324 ElligatorSwift encodings, and DH is BIP324's x-only
//! ECDH: `SHA256(tag ‖ tag ‖ ell_A ‖ ell_B ‖ x)` where `ell_A` is always the **initiator's**
//! encoding. The result therefore depends on which side computes it, while `noise-protocol`'s
//! [`DH`] trait has no notion of a role. The role lives in the type instead
//! ([`Secp256k1EllSwift<INITIATOR>`], aliased [`InitiatorDh`] and [`ResponderDh`]).
//!
//! `dh()` also needs our *own* 64-byte encoding, which the trait does not pass in. An encoding
//! is a deterministic function of the secret key and 32 bytes of auxiliary randomness, so the
//! private "key" handed to `noise-protocol` is 64 bytes: the secret scalar followed by that
//! randomness ([`DhKey`]). `pubkey()` and `dh()` both recompute the same encoding from it.
//!
//! Invariant (sans-IO): [`DH::genkey`] is never reached. Every [`noise_protocol::HandshakeState`]
//! built by this crate is given its ephemeral key up front, drawn from the caller's RNG. To fail
//! closed rather than fall back to some internal randomness, `genkey` returns an all-zero key,
//! which is not a valid scalar: `dh()` then fails and the handshake is aborted.

use noise_protocol::{DH, U8Array};
use noise_rust_crypto::sensitive::Sensitive;
use secp256k1::SecretKey;
use secp256k1::ellswift::{ElligatorSwift, Party};

/// Length of an ElligatorSwift-encoded public key on the wire.
pub const ELLSWIFT_LEN: usize = 64;

/// The key type handed to `noise-protocol`: `secret scalar (32) ‖ encoding randomness (32)`,
/// zeroed on drop.
pub type DhKey = Sensitive<[u8; 64]>;

/// The `Secp256k1+EllSwift` DH function, seen from the initiator (`INITIATOR = true`) or the
/// responder (`false`).
#[derive(Debug)]
pub enum Secp256k1EllSwift<const INITIATOR: bool> {}

/// DH as the initiator (client) computes it: its own encoding goes first.
pub type InitiatorDh = Secp256k1EllSwift<true>;

/// DH as the responder (server) computes it: the peer's encoding goes first.
pub type ResponderDh = Secp256k1EllSwift<false>;

/// Builds the 64-byte key `noise-protocol` stores from a secret key and encoding randomness.
pub(crate) fn dh_key(secret: &SecretKey, aux: [u8; 32]) -> DhKey {
    let mut raw = DhKey::new();
    let buf = raw.as_mut();
    buf[..32].copy_from_slice(secret.as_secret_bytes());
    buf[32..].copy_from_slice(&aux);
    raw
}

/// Splits a [`DhKey`] back into the secret key and the encoding randomness; `None` for an
/// invalid scalar (only the all-zero key of `genkey` in practice).
fn split_key(key: &DhKey) -> Option<(SecretKey, [u8; 32])> {
    let raw = key.as_slice();
    let sk: [u8; 32] = raw.get(..32)?.try_into().ok()?;
    let aux: [u8; 32] = raw.get(32..)?.try_into().ok()?;
    let sk = SecretKey::from_secret_bytes(sk).ok()?;
    Some((sk, aux))
}

/// Our ElligatorSwift encoding for a key: deterministic in `(secret, aux)`.
pub(crate) fn encode(secret: SecretKey, aux: [u8; 32]) -> ElligatorSwift {
    ElligatorSwift::from_seckey(secret, Some(aux))
}

impl<const INITIATOR: bool> DH for Secp256k1EllSwift<INITIATOR> {
    type Key = DhKey;
    type Pubkey = [u8; ELLSWIFT_LEN];
    type Output = Sensitive<[u8; 32]>;

    fn name() -> &'static str {
        "Secp256k1+EllSwift"
    }

    fn genkey() -> Self::Key {
        // Fail closed: see the module docs. An all-zero scalar is rejected by `dh()`.
        DhKey::new()
    }

    fn pubkey(key: &Self::Key) -> Self::Pubkey {
        match split_key(key) {
            Some((sk, aux)) => encode(sk, aux).to_array(),
            // Unreachable for keys built by this crate; an all-zero "public key" cannot lead
            // to a completed handshake because `dh()` fails for the same key.
            None => [0; ELLSWIFT_LEN],
        }
    }

    fn dh(key: &Self::Key, theirs: &Self::Pubkey) -> Result<Self::Output, ()> {
        let (sk, aux) = split_key(key).ok_or(())?;
        let ours = encode(sk, aux);
        let theirs = ElligatorSwift::from_array(*theirs);
        let secret = if INITIATOR {
            ElligatorSwift::shared_secret(ours, theirs, sk, Party::Initiator)
        } else {
            ElligatorSwift::shared_secret(theirs, ours, sk, Party::Responder)
        };
        Ok(Sensitive::from_slice(secret.as_secret_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8, aux: u8) -> DhKey {
        let sk = SecretKey::from_secret_bytes([byte; 32]).unwrap();
        dh_key(&sk, [aux; 32])
    }

    #[test]
    fn initiator_and_responder_agree() {
        let a = key(1, 7);
        let b = key(2, 9);
        let a_pub = InitiatorDh::pubkey(&a);
        let b_pub = ResponderDh::pubkey(&b);
        let from_a = InitiatorDh::dh(&a, &b_pub).unwrap();
        let from_b = ResponderDh::dh(&b, &a_pub).unwrap();
        assert_eq!(from_a.as_slice(), from_b.as_slice());
    }

    #[test]
    fn same_role_on_both_sides_disagrees() {
        // Both claiming to be the initiator puts the encodings in different orders, so the
        // hashes differ: the role really is part of the function.
        let a = key(1, 7);
        let b = key(2, 9);
        let x = InitiatorDh::dh(&a, &InitiatorDh::pubkey(&b)).unwrap();
        let y = InitiatorDh::dh(&b, &InitiatorDh::pubkey(&a)).unwrap();
        assert_ne!(x.as_slice(), y.as_slice());
    }

    #[test]
    fn encoding_is_deterministic_in_aux_and_varies_with_it() {
        assert_eq!(
            InitiatorDh::pubkey(&key(3, 1)),
            InitiatorDh::pubkey(&key(3, 1))
        );
        assert_ne!(
            InitiatorDh::pubkey(&key(3, 1)),
            InitiatorDh::pubkey(&key(3, 2))
        );
    }

    #[test]
    fn genkey_fails_closed() {
        let k = InitiatorDh::genkey();
        assert!(InitiatorDh::dh(&k, &InitiatorDh::pubkey(&key(1, 1))).is_err());
        assert_eq!(ResponderDh::name(), "Secp256k1+EllSwift");
    }
}
