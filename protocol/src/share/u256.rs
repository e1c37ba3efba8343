//! Minimal unsigned 256/512-bit integer arithmetic for targets.
//!
//! Only what target conversions need: comparison, shifts and division by a 64-bit divisor,
//! all exact. Numbers are arrays of `u64` limbs, least significant limb first, so a 32-byte
//! little-endian target maps onto four limbs without reordering.

/// A 256-bit unsigned integer as four little-endian `u64` limbs.
pub(crate) type Limbs256 = [u64; 4];

/// A 512-bit unsigned integer as eight little-endian `u64` limbs: room for `diff1 << 256`.
pub(crate) type Limbs512 = [u64; 8];

/// Splits 32 little-endian bytes into limbs.
pub(crate) fn from_le_bytes(bytes: &[u8; 32]) -> Limbs256 {
    let mut limbs = [0u64; 4];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(word);
    }
    limbs
}

/// Joins limbs into 32 little-endian bytes.
pub(crate) fn to_le_bytes(limbs: &Limbs256) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (chunk, limb) in bytes.chunks_exact_mut(8).zip(limbs) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    bytes
}

/// Number of significant bits (0 for zero).
pub(crate) fn bit_len(limbs: &[u64]) -> u32 {
    for (i, limb) in limbs.iter().enumerate().rev() {
        if *limb != 0 {
            return 64 * i as u32 + (64 - limb.leading_zeros());
        }
    }
    0
}

/// Shifts left by `shift` bits, dropping bits shifted past the top.
pub(crate) fn shl<const N: usize>(value: &[u64; N], shift: u32) -> [u64; N] {
    let mut out = [0u64; N];
    let limb_shift = (shift / 64) as usize;
    let bit_shift = shift % 64;
    for i in (limb_shift..N).rev() {
        let src = i - limb_shift;
        let mut word = value[src] << bit_shift;
        if bit_shift != 0 && src > 0 {
            word |= value[src - 1] >> (64 - bit_shift);
        }
        out[i] = word;
    }
    out
}

/// Shifts right by `shift` bits (floor).
pub(crate) fn shr<const N: usize>(value: &[u64; N], shift: u32) -> [u64; N] {
    let mut out = [0u64; N];
    let limb_shift = (shift / 64) as usize;
    let bit_shift = shift % 64;
    for (i, slot) in out
        .iter_mut()
        .enumerate()
        .take(N.saturating_sub(limb_shift))
    {
        let src = i + limb_shift;
        let mut word = value[src] >> bit_shift;
        if bit_shift != 0 && src + 1 < N {
            word |= value[src + 1] << (64 - bit_shift);
        }
        *slot = word;
    }
    out
}

/// Floor division by a non-zero 64-bit divisor (schoolbook, one limb at a time).
///
/// A zero divisor returns the dividend unchanged; callers never pass one (difficulty
/// mantissas are non-zero), and returning something keeps the function panic-free.
pub(crate) fn div_u64<const N: usize>(value: &[u64; N], divisor: u64) -> [u64; N] {
    if divisor == 0 {
        return *value;
    }
    let mut out = [0u64; N];
    let mut rem: u128 = 0;
    for i in (0..N).rev() {
        let cur = (rem << 64) | u128::from(value[i]);
        out[i] = (cur / u128::from(divisor)) as u64;
        rem = cur % u128::from(divisor);
    }
    out
}

/// Compares two 256-bit numbers.
pub(crate) fn cmp(a: &Limbs256, b: &Limbs256) -> core::cmp::Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// Nearest-ish `f64` value (each limb rounds once; error is a few ulps, enough for accounting).
pub(crate) fn to_f64(limbs: &Limbs256) -> f64 {
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    limbs
        .iter()
        .rev()
        .fold(0.0, |acc, limb| acc * TWO_64 + *limb as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_cross_limb_boundaries() {
        let one: Limbs256 = [1, 0, 0, 0];
        assert_eq!(shl(&one, 0), one);
        assert_eq!(shl(&one, 64), [0, 1, 0, 0]);
        assert_eq!(shl(&one, 255), [0, 0, 0, 1 << 63]);
        assert_eq!(shl(&one, 256), [0; 4]);
        assert_eq!(shl(&[u64::MAX, 0, 0, 0], 4), [u64::MAX << 4, 0xF, 0, 0]);
        assert_eq!(shr(&[0, 0, 0, 1 << 63], 255), one);
        assert_eq!(shr(&[0, 0xF, 0, 0], 4), [0xF << 60, 0, 0, 0]);
        assert_eq!(shr(&one, 256), [0; 4]);
    }

    #[test]
    fn division_is_floor() {
        let v: Limbs256 = [7, 0, 0, 1];
        // (2^192 + 7) / 2 = 2^191 + 3
        assert_eq!(div_u64(&v, 2), [3, 0, 1 << 63, 0]);
        assert_eq!(div_u64(&[10, 0, 0, 0], 3), [3, 0, 0, 0]);
        assert_eq!(div_u64(&v, 1), v);
    }

    #[test]
    fn bit_len_and_cmp() {
        assert_eq!(bit_len(&[0u64; 4]), 0);
        assert_eq!(bit_len(&[1, 0, 0, 0]), 1);
        assert_eq!(bit_len(&[0, 0, 0, u64::MAX]), 256);
        assert!(cmp(&[u64::MAX, 0, 0, 0], &[0, 1, 0, 0]).is_lt());
        assert!(cmp(&[0, 0, 0, 2], &[u64::MAX, u64::MAX, u64::MAX, 1]).is_gt());
    }

    #[test]
    fn bytes_round_trip() {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(to_le_bytes(&from_le_bytes(&bytes)), bytes);
        assert_eq!(from_le_bytes(&bytes)[0], 0x0706050403020100);
    }
}
