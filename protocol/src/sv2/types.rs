//! SV2 primitive data types and the encode/decode traits (sv2-spec 03, "Data Types Mapping").
//!
//! Fixed-size types map to Rust primitives: BOOL = `bool`, U8/U16/U32/U64 = `u8`..`u64`
//! (little-endian), U24 = [`U24`], U256 = [`U256`] (32 raw bytes, no byte-order conversion),
//! F32 = `f32` (IEEE-754 binary32, little-endian; the spec's type table omits it but
//! `nominal_hash_rate` uses it and SRI encodes it this way), `OPTION[T]` = `Option<T>`.
//! The length-prefixed types live in [`super::bounded`].
//!
//! Decoding goes through [`Reader`], which checks every read against what is left of the
//! payload, so no peer-controlled length ever reaches an allocator unchecked.

use bytes::BufMut;

use super::error::Sv2Error;

/// U256: 32 raw bytes, as they appear on the wire (a hash or a little-endian target).
pub type U256 = [u8; 32];

/// A value with an SV2 wire encoding.
pub trait Sv2Encode {
    /// Exact number of bytes [`Sv2Encode::encode`] writes.
    fn encoded_len(&self) -> usize;
    /// Appends the encoding to `dst`. Infallible: bounded types cannot hold over-long values.
    fn encode<B: BufMut>(&self, dst: &mut B);
}

/// A value that can be decoded from an SV2 payload.
pub trait Sv2Decode: Sized {
    /// Smallest possible encoding. Sequences use it to reject a declared element count that
    /// cannot fit in the remaining input before reserving memory for it.
    const MIN_ENCODED_LEN: usize;
    /// Reads one value from the front of `r`.
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error>;
}

/// A bounds-checked cursor over a payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next `n` bytes, or fails without consuming anything.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Sv2Error> {
        if n > self.buf.len() {
            return Err(Sv2Error::Truncated {
                needed: n,
                remaining: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Sv2Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Fails with [`Sv2Error::TrailingBytes`] unless the whole payload was consumed.
    pub fn finish(&self) -> Result<(), Sv2Error> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Sv2Error::TrailingBytes {
                extra: self.buf.len(),
            })
        }
    }
}

/// Decodes a whole payload as one `T`, rejecting trailing bytes.
pub fn decode_exact<T: Sv2Decode>(payload: &[u8]) -> Result<T, Sv2Error> {
    let mut r = Reader::new(payload);
    let value = T::decode(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// Encodes `value` into a vector of exactly its encoded length.
pub fn encode_to_vec<T: Sv2Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.encoded_len());
    value.encode(&mut out);
    out
}

macro_rules! le_int {
    ($($t:ty),*) => {$(
        impl Sv2Encode for $t {
            fn encoded_len(&self) -> usize {
                size_of::<$t>()
            }
            fn encode<B: BufMut>(&self, dst: &mut B) {
                dst.put_slice(&self.to_le_bytes());
            }
        }
        impl Sv2Decode for $t {
            const MIN_ENCODED_LEN: usize = size_of::<$t>();
            fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
                Ok(<$t>::from_le_bytes(r.array()?))
            }
        }
    )*};
}
le_int!(u8, u16, u32, u64, f32);

impl Sv2Encode for bool {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_u8(u8::from(*self));
    }
}

impl Sv2Decode for bool {
    const MIN_ENCODED_LEN: usize = 1;
    /// Only the least significant bit carries meaning; the spec reserves the other seven for
    /// future flags and tells recipients to ignore them (SRI does the same).
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
        Ok(u8::decode(r)? & 1 == 1)
    }
}

impl Sv2Encode for U256 {
    fn encoded_len(&self) -> usize {
        32
    }
    fn encode<B: BufMut>(&self, dst: &mut B) {
        dst.put_slice(self);
    }
}

impl Sv2Decode for U256 {
    const MIN_ENCODED_LEN: usize = 32;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
        r.array()
    }
}

/// U24: an unsigned 24-bit little-endian integer (the length prefix of `B0_16M`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct U24(u32);

impl U24 {
    /// Largest representable value, 2^24 - 1.
    pub const MAX: u32 = (1 << 24) - 1;

    /// The value as a `u32`.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for U24 {
    type Error = Sv2Error;
    fn try_from(v: u32) -> Result<Self, Sv2Error> {
        if v > Self::MAX {
            return Err(Sv2Error::TooLong {
                kind: "U24",
                max: Self::MAX as usize,
                len: v as usize,
            });
        }
        Ok(U24(v))
    }
}

impl From<U24> for u32 {
    fn from(v: U24) -> u32 {
        v.0
    }
}

impl Sv2Encode for U24 {
    fn encoded_len(&self) -> usize {
        3
    }
    fn encode<B: BufMut>(&self, dst: &mut B) {
        let [a, b, c, _] = self.0.to_le_bytes();
        dst.put_slice(&[a, b, c]);
    }
}

impl Sv2Decode for U24 {
    const MIN_ENCODED_LEN: usize = 3;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
        let [a, b, c] = r.array()?;
        Ok(U24(u32::from_le_bytes([a, b, c, 0])))
    }
}

/// `OPTION[T]`: a count byte (0 or 1) followed by the value if present (spec: `SEQ0_1[T]`).
impl<T: Sv2Encode> Sv2Encode for Option<T> {
    fn encoded_len(&self) -> usize {
        1 + self.as_ref().map_or(0, Sv2Encode::encoded_len)
    }
    fn encode<B: BufMut>(&self, dst: &mut B) {
        match self {
            None => dst.put_u8(0),
            Some(v) => {
                dst.put_u8(1);
                v.encode(dst);
            }
        }
    }
}

impl<T: Sv2Decode> Sv2Decode for Option<T> {
    const MIN_ENCODED_LEN: usize = 1;
    fn decode(r: &mut Reader<'_>) -> Result<Self, Sv2Error> {
        match u8::decode(r)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            n => Err(Sv2Error::InvalidOption(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_little_endian() {
        assert_eq!(encode_to_vec(&0x0102u16), [0x02, 0x01]);
        assert_eq!(encode_to_vec(&0x0102_0304u32), [4, 3, 2, 1]);
        assert_eq!(
            encode_to_vec(&0x0102_0304_0506_0708u64),
            [8, 7, 6, 5, 4, 3, 2, 1]
        );
        assert_eq!(
            encode_to_vec(&U24::try_from(0x0A0B0C).unwrap()),
            [0x0C, 0x0B, 0x0A]
        );
        assert_eq!(
            decode_exact::<U24>(&[0xff, 0xff, 0xff]).unwrap().get(),
            U24::MAX
        );
    }

    #[test]
    fn f32_is_ieee754_le() {
        // 1.0f32 = 0x3F800000.
        assert_eq!(encode_to_vec(&1.0f32), [0x00, 0x00, 0x80, 0x3f]);
        assert_eq!(decode_exact::<f32>(&[0x00, 0x00, 0x80, 0x3f]).unwrap(), 1.0);
    }

    #[test]
    fn bool_reads_only_the_low_bit() {
        assert!(decode_exact::<bool>(&[0x01]).unwrap());
        assert!(decode_exact::<bool>(&[0xff]).unwrap());
        assert!(!decode_exact::<bool>(&[0xfe]).unwrap());
        assert_eq!(encode_to_vec(&true), [1]);
    }

    #[test]
    fn u24_rejects_values_over_24_bits() {
        assert!(U24::try_from(1 << 24).is_err());
        assert!(U24::try_from(U24::MAX).is_ok());
    }

    #[test]
    fn option_encoding() {
        assert_eq!(encode_to_vec(&None::<u32>), [0]);
        assert_eq!(encode_to_vec(&Some(7u32)), [1, 7, 0, 0, 0]);
        assert_eq!(
            decode_exact::<Option<u32>>(&[1, 7, 0, 0, 0]).unwrap(),
            Some(7)
        );
        assert_eq!(
            decode_exact::<Option<u32>>(&[2, 7, 0, 0, 0]),
            Err(Sv2Error::InvalidOption(2))
        );
        assert_eq!(
            decode_exact::<Option<u32>>(&[1, 7, 0]),
            Err(Sv2Error::Truncated {
                needed: 4,
                remaining: 2
            })
        );
    }

    #[test]
    fn trailing_and_truncated() {
        assert_eq!(
            decode_exact::<u16>(&[1, 2, 3]),
            Err(Sv2Error::TrailingBytes { extra: 1 })
        );
        assert_eq!(
            decode_exact::<u64>(&[1, 2, 3]),
            Err(Sv2Error::Truncated {
                needed: 8,
                remaining: 3
            })
        );
    }
}
