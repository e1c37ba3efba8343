//! Authority and static keys, and the base58check forms users paste into configs (sv2-spec 04,
//! "Certificate format", and the reference implementation's `key_utils`).
//!
//! - An authority **public** key is the base58check encoding of `[0x01, 0x00] ‖ xonly32`: a U16
//!   LE key version (1) followed by the BIP340 x-only key.
//! - A **secret** key is the base58check encoding of its raw 32 bytes.
//!
//! Both use bitcoin's base58check (4-byte double-SHA256 checksum). Secret keys never appear in
//! `Debug` output. `secp256k1` does not zero its secret keys on drop, so keep them in few
//! places (the handshake copies them into buffers that are zeroed on drop).

use std::fmt;
use std::str::FromStr;

use secp256k1::rand::CryptoRng;
use secp256k1::{Keypair, XOnlyPublicKey};

/// Key version carried in front of an encoded authority public key.
pub const PUBLIC_KEY_VERSION: u16 = 1;

/// Longest base58 string we try to decode; a 38-byte payload needs at most 52 characters.
const MAX_ENCODED_LEN: usize = 128;

/// Why a key string or byte array was rejected. Keys come from local configuration, so every
/// variant means "fix the config"; none comes from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The string is not base58 (bad character) or is absurdly long.
    #[error("not a base58 string")]
    NotBase58,
    /// The base58check checksum does not match: a typo or a truncated paste.
    #[error("base58check checksum mismatch")]
    BadChecksum,
    /// The decoded payload has the wrong length.
    #[error("decoded key has {got} bytes, expected {expected}")]
    BadLength {
        /// Bytes expected after removing the checksum.
        expected: usize,
        /// Bytes found.
        got: usize,
    },
    /// The public key's U16 version prefix is not [`PUBLIC_KEY_VERSION`].
    #[error("unsupported public key version {0}, expected 1")]
    BadVersion(u16),
    /// The bytes are not a valid secp256k1 key (x not on the curve, or scalar zero/too large).
    #[error("not a valid secp256k1 key")]
    InvalidKey,
}

fn decode_check(s: &str) -> Result<Vec<u8>, KeyError> {
    if s.len() > MAX_ENCODED_LEN {
        return Err(KeyError::NotBase58);
    }
    bs58::decode(s.trim())
        .with_check(None)
        .into_vec()
        .map_err(|e| match e {
            bs58::decode::Error::InvalidChecksum { .. } => KeyError::BadChecksum,
            bs58::decode::Error::NoChecksum => KeyError::BadLength {
                expected: 32,
                got: 0,
            },
            _ => KeyError::NotBase58,
        })
}

/// An authority public key (BIP340 x-only): the key a pool publishes and clients pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthorityPublicKey(XOnlyPublicKey);

impl AuthorityPublicKey {
    /// Parses the raw 32-byte x-only form.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        XOnlyPublicKey::from_byte_array(*bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidKey)
    }

    /// The raw 32-byte x-only form.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_byte_array()
    }

    /// The underlying `secp256k1` key.
    pub fn x_only(&self) -> &XOnlyPublicKey {
        &self.0
    }

    /// The base58check string of `[0x01, 0x00] ‖ xonly32`, as configs carry it.
    pub fn to_base58check(&self) -> String {
        let mut payload = [0u8; 34];
        payload[..2].copy_from_slice(&PUBLIC_KEY_VERSION.to_le_bytes());
        payload[2..].copy_from_slice(&self.0.to_byte_array());
        bs58::encode(payload).with_check().into_string()
    }
}

impl From<XOnlyPublicKey> for AuthorityPublicKey {
    fn from(key: XOnlyPublicKey) -> Self {
        Self(key)
    }
}

impl FromStr for AuthorityPublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let raw = decode_check(s)?;
        let raw: [u8; 34] = raw.as_slice().try_into().map_err(|_| KeyError::BadLength {
            expected: 34,
            got: raw.len(),
        })?;
        let version = u16::from_le_bytes([raw[0], raw[1]]);
        if version != PUBLIC_KEY_VERSION {
            return Err(KeyError::BadVersion(version));
        }
        let mut x = [0u8; 32];
        x.copy_from_slice(&raw[2..]);
        Self::from_bytes(&x)
    }
}

impl fmt::Display for AuthorityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58check())
    }
}

impl fmt::Debug for AuthorityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityPublicKey({self})")
    }
}

impl serde::Serialize for AuthorityPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base58check())
    }
}

impl<'de> serde::Deserialize<'de> for AuthorityPublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A secp256k1 secret key (an authority key or a server's static Noise key). `Debug` is
/// redacted; `Display` is deliberately not implemented, use [`SecretKey::to_base58check`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(secp256k1::SecretKey);

impl SecretKey {
    /// Draws a new key from the caller's cryptographically secure RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self(secp256k1::SecretKey::new(rng))
    }

    /// Parses the raw 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        secp256k1::SecretKey::from_secret_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidKey)
    }

    /// The raw 32 bytes. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_secret_bytes()
    }

    /// The base58check string of the raw 32 bytes, as configs carry it.
    pub fn to_base58check(&self) -> String {
        bs58::encode(self.0.as_secret_bytes())
            .with_check()
            .into_string()
    }

    /// The x-only public key of this secret.
    pub fn public_key(&self) -> AuthorityPublicKey {
        AuthorityPublicKey(self.0.x_only_public_key().0)
    }

    pub(crate) fn inner(&self) -> &secp256k1::SecretKey {
        &self.0
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let raw = decode_check(s)?;
        let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| KeyError::BadLength {
            expected: 32,
            got: raw.len(),
        })?;
        Self::from_bytes(raw)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An authority key pair: signs the certificates of the servers it vouches for.
#[derive(Clone)]
pub struct AuthorityKeypair {
    keypair: Keypair,
}

impl AuthorityKeypair {
    /// Generates a new authority key pair from the caller's RNG.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self::from_secret(&SecretKey::generate(rng))
    }

    /// Builds the pair from its secret key.
    pub fn from_secret(secret: &SecretKey) -> Self {
        Self {
            keypair: Keypair::from_secret_key(secret.inner()),
        }
    }

    /// Builds the pair from a configured secret and the configured public key, checking that
    /// they belong together (a mismatch would make every client reject us).
    pub fn from_parts(
        secret: &SecretKey,
        public: &AuthorityPublicKey,
    ) -> Result<Self, KeyMismatch> {
        let pair = Self::from_secret(secret);
        if pair.public_key() == *public {
            Ok(pair)
        } else {
            Err(KeyMismatch)
        }
    }

    /// The public half, as clients pin it.
    pub fn public_key(&self) -> AuthorityPublicKey {
        AuthorityPublicKey(self.keypair.x_only_public_key().0)
    }

    /// The secret half.
    pub fn secret_key(&self) -> SecretKey {
        SecretKey(self.keypair.secret_key())
    }

    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }
}

impl fmt::Debug for AuthorityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityKeypair")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// The configured authority public key is not the one derived from the configured secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authority public key does not match the authority secret key")]
pub struct KeyMismatch;

#[cfg(test)]
mod tests {
    use super::*;

    // The authority key pair of SRI's example configs (pool-config-example.toml and the
    // codec_sv2 tests): the public string must be the one derived from the secret.
    const SRI_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
    const SRI_SECRET: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";

    #[test]
    fn sri_example_pair_matches() {
        let secret: SecretKey = SRI_SECRET.parse().unwrap();
        let public: AuthorityPublicKey = SRI_PUBLIC.parse().unwrap();
        assert_eq!(secret.public_key(), public);
        assert_eq!(public.to_base58check(), SRI_PUBLIC);
        assert_eq!(secret.to_base58check(), SRI_SECRET);
        assert!(AuthorityKeypair::from_parts(&secret, &public).is_ok());
    }

    #[test]
    fn round_trips() {
        let mut rng =
            <secp256k1::rand::rngs::StdRng as secp256k1::rand::SeedableRng>::seed_from_u64(1);
        let pair = AuthorityKeypair::generate(&mut rng);
        let p: AuthorityPublicKey = pair.public_key().to_string().parse().unwrap();
        assert_eq!(p, pair.public_key());
        let s: SecretKey = pair.secret_key().to_base58check().parse().unwrap();
        assert_eq!(s, pair.secret_key());
        let other = AuthorityKeypair::generate(&mut rng);
        assert_eq!(
            AuthorityKeypair::from_parts(&pair.secret_key(), &other.public_key()).unwrap_err(),
            KeyMismatch
        );
    }

    #[test]
    fn bad_checksum_is_typed() {
        // Change one character in the middle: the checksum no longer matches.
        let mut s: Vec<char> = SRI_PUBLIC.chars().collect();
        s[10] = if s[10] == 'a' { 'b' } else { 'a' };
        let s: String = s.into_iter().collect();
        assert_eq!(s.parse::<AuthorityPublicKey>(), Err(KeyError::BadChecksum));
        assert_eq!(
            "0OIl".parse::<SecretKey>().unwrap_err(),
            KeyError::NotBase58
        );
    }

    #[test]
    fn swapped_forms_and_versions_are_rejected() {
        assert_eq!(
            SRI_SECRET.parse::<AuthorityPublicKey>(),
            Err(KeyError::BadLength {
                expected: 34,
                got: 32
            })
        );
        assert_eq!(
            SRI_PUBLIC.parse::<SecretKey>().unwrap_err(),
            KeyError::BadLength {
                expected: 32,
                got: 34
            }
        );
        let public: AuthorityPublicKey = SRI_PUBLIC.parse().unwrap();
        let mut payload = vec![2u8, 0];
        payload.extend_from_slice(&public.to_bytes());
        let v2 = bs58::encode(payload).with_check().into_string();
        assert_eq!(
            v2.parse::<AuthorityPublicKey>(),
            Err(KeyError::BadVersion(2))
        );
        let zero = bs58::encode([0u8; 32]).with_check().into_string();
        assert_eq!(zero.parse::<SecretKey>().unwrap_err(), KeyError::InvalidKey);
    }

    #[test]
    fn debug_redacts_secrets() {
        let secret: SecretKey = SRI_SECRET.parse().unwrap();
        let dbg = format!("{secret:?} {:?}", AuthorityKeypair::from_secret(&secret));
        assert!(!dbg.contains(SRI_SECRET));
        assert!(!dbg.contains(&hex::encode(secret.to_bytes())));
    }
}
