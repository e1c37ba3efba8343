//! Length-prefixed SV2 types (sv2-spec 03, "Data Types Mapping"): `STR0_255`, `B0_32`,
//! `B0_255`, `B0_64K`, `B0_16M`, `SEQ0_255[T]`, `SEQ0_64K[T]`.
//!
//! Invariant: a value of these types is never longer than its type allows, because the only
//! ways to build one are the checked `TryFrom` constructors and the decoder. Encoding is
//! therefore infallible. Decoding checks the declared length against the remaining input
//! before copying or reserving anything.
//!
//! [`B032`] (extranonces and extranonce prefixes, on the share-submission hot path) is stored
//! inline, so decoding a `SubmitSharesExtended` does not touch the heap.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use bytes::BufMut;

use super::error::Sv2Error;
use super::types::{Reader, Sv2Decode, Sv2Encode, U24};

/// Reads a length prefix of `width` bytes (1, 2 or 3), little-endian.
fn read_len(r: &mut Reader<'_>, width: usize) -> Result<usize, Sv2Error> {
    Ok(match width {
        1 => usize::from(u8::decode(r)?),
        2 => usize::from(u16::decode(r)?),
        _ => U24::decode(r)?.get() as usize,
    })
}

/// Writes a length prefix of `width` bytes; `len` fits by the type's invariant.
fn write_len<B: BufMut>(dst: &mut B, width: usize, len: usize) {
    let bytes = (len as u32).to_le_bytes();
    dst.put_slice(&bytes[..width.min(4)]);
}

macro_rules! bounded_bytes {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $width:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, Default, PartialEq, Eq, Hash)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// Largest number of bytes this type holds.
            pub const MAX_LEN: usize = $max;

            /// The bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }

            /// Consumes the value, returning its bytes.
            pub fn into_vec(self) -> Vec<u8> {
                self.0
            }
        }

        impl TryFrom<Vec<u8>> for $name {
            type Error = Sv2Error;
            fn try_from(v: Vec<u8>) -> Result<Self, Sv2Error> {
                if v.len() > Self::MAX_LEN {
                    return Err(Sv2Error::TooLong { kind: $kind, max: Self::MAX_LEN, len: v.len() });
                }
                Ok($name(v))
            }
        }

        impl TryFrom<&[u8]> for $name {
            type Error = Sv2Error;
            fn try_from(v: &[u8]) -> Result<Self, Sv2Error> {
                if v.len() > Self::MAX_LEN {
                    return Err(Sv2Error::TooLong { kind: $kind, max: Self::MAX_LEN, len: v.len() });
                }
                Ok($name(v.to_vec()))
            }
        }

        impl Deref for $name {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                &self.0
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(&self.0))
            }
        }

        impl Sv2Encode for $name {
            fn encoded_len(&self) -> usize {
                $width + self.0.len()
            }
            fn encode<B: BufMut>(&self, dst: &mut B) {
                write_len(dst, $width, self.0.len());
                dst.put_slice(&self.0);
            }
        }

        impl Sv2Decode for $name {
            const MIN_ENCODED_LEN: usize = $width;
            fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
                let len = read_len(r, $width)?;
                if len > Self::MAX_LEN {
                    return Err(Sv2Error::TooLong { kind: $kind, max: Self::MAX_LEN, len });
                }
                // `take` checks `len` against the remaining input before we copy.
                Ok($name(r.take(len)?.to_vec()))
            }
        }
    };
}

bounded_bytes!(
    /// `B0_255`: up to 255 bytes behind a U8 length.
    B0255, "B0_255", 1, 255
);
bounded_bytes!(
    /// `B0_64K`: up to 65,535 bytes behind a U16 length.
    B064K, "B0_64K", 2, 65_535
);
bounded_bytes!(
    /// `B0_16M`: up to 2^24 - 1 bytes behind a U24 length.
    B016M, "B0_16M", 3, (1 << 24) - 1
);
bounded_bytes!(
    /// `STR0_255`: up to 255 bytes behind a U8 length.
    ///
    /// Held as bytes, not `String`: the spec calls `user_identity` an "unconstrained sequence
    /// of bytes" and SRI does not validate UTF-8, so rejecting non-UTF-8 would drop peers that
    /// SRI accepts, and a proxy must forward identities byte for byte. Use
    /// [`Str0255::as_str`] or [`Str0255::to_string_lossy`] to read it as text.
    Str0255, "STR0_255", 1, 255
);

impl Str0255 {
    /// The bytes as UTF-8, if they are valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The bytes as text, invalid sequences replaced by U+FFFD.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }

    /// `s` cut to at most 255 bytes on a character boundary (for names we send: a long
    /// user or firmware string is shortened rather than refused).
    pub fn truncated(s: &str) -> Self {
        let mut end = s.len().min(Self::MAX_LEN);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Str0255(s.as_bytes()[..end].to_vec())
    }
}

impl TryFrom<&str> for Str0255 {
    type Error = Sv2Error;
    fn try_from(s: &str) -> Result<Self, Sv2Error> {
        Self::try_from(s.as_bytes())
    }
}

impl TryFrom<String> for Str0255 {
    type Error = Sv2Error;
    fn try_from(s: String) -> Result<Self, Sv2Error> {
        Self::try_from(s.into_bytes())
    }
}

impl fmt::Display for Str0255 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_lossy())
    }
}

/// `B0_32`: up to 32 bytes behind a U8 length, stored inline (no heap allocation).
///
/// Used for extranonces and extranonce prefixes. Equality and hashing look only at the
/// used bytes.
#[derive(Clone, Copy, Default)]
pub struct B032 {
    len: u8,
    buf: [u8; 32],
}

impl B032 {
    /// Largest number of bytes this type holds.
    pub const MAX_LEN: usize = 32;

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // `len <= 32` is the type's invariant; `get` keeps even a broken one panic-free.
        self.buf.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl TryFrom<&[u8]> for B032 {
    type Error = Sv2Error;
    fn try_from(v: &[u8]) -> Result<Self, Sv2Error> {
        let mut buf = [0u8; 32];
        let dst = buf.get_mut(..v.len()).ok_or(Sv2Error::TooLong {
            kind: "B0_32",
            max: Self::MAX_LEN,
            len: v.len(),
        })?;
        dst.copy_from_slice(v);
        Ok(B032 {
            len: v.len() as u8,
            buf,
        })
    }
}

impl TryFrom<Vec<u8>> for B032 {
    type Error = Sv2Error;
    fn try_from(v: Vec<u8>) -> Result<Self, Sv2Error> {
        Self::try_from(v.as_slice())
    }
}

impl Deref for B032 {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for B032 {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for B032 {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for B032 {}

impl std::hash::Hash for B032 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for B032 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B032({})", hex::encode(self.as_bytes()))
    }
}

impl Sv2Encode for B032 {
    fn encoded_len(&self) -> usize {
        1 + usize::from(self.len)
    }
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(self.len);
        dst.put_slice(self.as_bytes());
    }
}

impl Sv2Decode for B032 {
    const MIN_ENCODED_LEN: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
        let len = usize::from(u8::decode(r)?);
        if len > Self::MAX_LEN {
            return Err(Sv2Error::TooLong {
                kind: "B0_32",
                max: Self::MAX_LEN,
                len,
            });
        }
        Self::try_from(r.take(len)?)
    }
}

macro_rules! bounded_seq {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $width:literal, $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name<T>(Vec<T>);

        impl<T> $name<T> {
            /// Largest number of elements this type holds.
            pub const MAX_LEN: usize = $max;

            /// The elements.
            pub fn as_slice(&self) -> &[T] {
                &self.0
            }

            /// Consumes the sequence, returning its elements.
            pub fn into_vec(self) -> Vec<T> {
                self.0
            }
        }

        impl<T> Default for $name<T> {
            fn default() -> Self {
                $name(Vec::new())
            }
        }

        impl<T> TryFrom<Vec<T>> for $name<T> {
            type Error = Sv2Error;
            fn try_from(v: Vec<T>) -> Result<Self, Sv2Error> {
                if v.len() > Self::MAX_LEN {
                    return Err(Sv2Error::TooLong { kind: $kind, max: Self::MAX_LEN, len: v.len() });
                }
                Ok($name(v))
            }
        }

        impl<T> Deref for $name<T> {
            type Target = [T];
            fn deref(&self) -> &[T] {
                &self.0
            }
        }

        impl<T: Sv2Encode> Sv2Encode for $name<T> {
            fn encoded_len(&self) -> usize {
                $width + self.0.iter().map(Sv2Encode::encoded_len).sum::<usize>()
            }
            fn encode<B: BufMut>(&self, dst: &mut B) {
                write_len(dst, $width, self.0.len());
                for item in &self.0 {
                    item.encode(dst);
                }
            }
        }

        impl<T: Sv2Decode> Sv2Decode for $name<T> {
            const MIN_ENCODED_LEN: usize = $width;
            fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
                let count = read_len(r, $width)?;
                // Every element takes at least MIN_ENCODED_LEN bytes: a count that cannot
                // fit in what is left fails here, before `with_capacity`.
                let needed = count.saturating_mul(T::MIN_ENCODED_LEN);
                if needed > r.remaining() {
                    return Err(Sv2Error::Truncated { needed, remaining: r.remaining() });
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(T::decode(r)?);
                }
                Ok($name(items))
            }
        }
    };
}

bounded_seq!(
    /// `SEQ0_255[T]`: up to 255 elements behind a U8 count.
    Seq0255, "SEQ0_255", 1, 255
);
bounded_seq!(
    /// `SEQ0_64K[T]`: up to 65,535 elements behind a U16 count.
    Seq064K, "SEQ0_64K", 2, 65_535
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sv2::types::{U256, decode_exact, encode_to_vec};

    #[test]
    fn constructors_enforce_bounds() {
        assert!(Str0255::try_from("x".repeat(255).as_str()).is_ok());
        assert_eq!(
            Str0255::try_from("x".repeat(256)),
            Err(Sv2Error::TooLong {
                kind: "STR0_255",
                max: 255,
                len: 256
            })
        );
        assert!(B032::try_from(&[0u8; 32][..]).is_ok());
        assert!(B032::try_from(&[0u8; 33][..]).is_err());
        assert!(B0255::try_from(vec![0u8; 256]).is_err());
        assert!(B064K::try_from(vec![0u8; 65_535]).is_ok());
        assert!(B064K::try_from(vec![0u8; 65_536]).is_err());
        assert!(Seq0255::try_from(vec![0u32; 256]).is_err());
        assert!(Seq064K::try_from(vec![0u32; 65_535]).is_ok());
        assert!(Seq064K::try_from(vec![0u32; 65_536]).is_err());
    }

    #[test]
    fn golden_encodings() {
        assert_eq!(
            encode_to_vec(&Str0255::try_from("ab").unwrap()),
            [2, b'a', b'b']
        );
        assert_eq!(encode_to_vec(&B032::try_from(&[9u8][..]).unwrap()), [1, 9]);
        assert_eq!(
            encode_to_vec(&B064K::try_from(vec![7u8; 2]).unwrap()),
            [2, 0, 7, 7]
        );
        assert_eq!(
            encode_to_vec(&B016M::try_from(vec![7u8]).unwrap()),
            [1, 0, 0, 7]
        );
        assert_eq!(
            encode_to_vec(&Seq064K::try_from(vec![1u32, 2]).unwrap()),
            [2, 0, 1, 0, 0, 0, 2, 0, 0, 0]
        );
        let path: Seq0255<U256> = Seq0255::try_from(vec![[0xaa; 32]]).unwrap();
        let enc = encode_to_vec(&path);
        assert_eq!(enc.len(), 33);
        assert_eq!(enc[0], 1);
        assert_eq!(decode_exact::<Seq0255<U256>>(&enc).unwrap(), path);
    }

    #[test]
    fn declared_length_beyond_input_is_an_error_not_an_allocation() {
        // B0_16M claiming 16 MiB with 2 bytes behind it.
        assert_eq!(
            decode_exact::<B016M>(&[0xff, 0xff, 0xff, 1, 2]),
            Err(Sv2Error::Truncated {
                needed: U24::MAX as usize,
                remaining: 2
            })
        );
        // SEQ0_64K of 65535 U256 with nothing behind it.
        assert_eq!(
            decode_exact::<Seq064K<U256>>(&[0xff, 0xff]),
            Err(Sv2Error::Truncated {
                needed: 65_535 * 32,
                remaining: 0
            })
        );
        // SEQ0_255 of strings: each needs at least its length byte.
        assert!(matches!(
            decode_exact::<Seq0255<Str0255>>(&[3, 0, 0]),
            Err(Sv2Error::Truncated { .. })
        ));
    }

    #[test]
    fn b032_length_prefix_over_32_is_rejected() {
        let mut bytes = vec![33u8];
        bytes.extend([0u8; 33]);
        assert_eq!(
            decode_exact::<B032>(&bytes),
            Err(Sv2Error::TooLong {
                kind: "B0_32",
                max: 32,
                len: 33
            })
        );
    }

    #[test]
    fn str0255_keeps_non_utf8_bytes() {
        let s = decode_exact::<Str0255>(&[2, 0xff, b'a']).unwrap();
        assert_eq!(s.as_bytes(), [0xff, b'a']);
        assert_eq!(s.as_str(), None);
        assert_eq!(s.to_string_lossy(), "\u{fffd}a");
    }

    #[test]
    fn b032_equality_ignores_unused_tail() {
        let a = B032::try_from(&[1u8, 2][..]).unwrap();
        let b = decode_exact::<B032>(&[2, 1, 2]).unwrap();
        assert_eq!(a, b);
        assert_eq!(&*a, &[1, 2]);
    }
}
