//! Targets, difficulty and hashrate.
//!
//! A [`Target`] is a 256-bit unsigned integer stored as 32 little-endian bytes, the form of
//! SV2's `U256` (sv2-spec 03, "Data types"; `SetTarget.maximum_target`). A block header hash
//! meets a target when the hash, read as a little-endian 256-bit number, is `<=` the target.
//!
//! Difficulty follows Stratum V1 pool convention: difficulty 1 is the target
//! `0x00000000FFFF0000…` ("pool difficulty", the bdiff-1 target with the full 0xFFFF
//! mantissa), and `target = floor(diff1 / difficulty)`. The conversion is exact for every
//! finite `f64` difficulty: the `f64` is split into an integer mantissa and a power of two and
//! the quotient is computed in 512-bit integer arithmetic, so integer and power-of-two
//! difficulties give exactly the textbook targets. Results above 2^256 - 1 clamp to
//! [`Target::MAX`].
//!
//! The network target comes from a header's compact `nBits` field ([`Target::from_compact`]),
//! decoded with Bitcoin Core's rules (negative, overflowing or zero targets are errors).

use core::cmp::Ordering;
use core::fmt;

use super::u256;

/// Errors converting to a [`Target`].
///
/// These come from configuration or from a pool's job; the miner-facing layer never sees
/// them. A bad pool difficulty or nBits should make the proxy drop that upstream message
/// (and log it); the connection may be kept.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Difficulty is zero, negative, NaN or infinite. Reject the message that carried it.
    #[error("invalid difficulty {0}: must be finite and > 0")]
    InvalidDifficulty(f64),
    /// Compact nBits has the sign bit set with a non-zero mantissa. Reject the job.
    #[error("nBits {0:#010x} encodes a negative target")]
    NegativeCompact(u32),
    /// Compact nBits does not fit in 256 bits. Reject the job.
    #[error("nBits {0:#010x} overflows 256 bits")]
    OverflowingCompact(u32),
    /// Compact nBits encodes zero, which no hash can meet. Reject the job.
    #[error("nBits {0:#010x} encodes a zero target")]
    ZeroCompact(u32),
    /// A hex string was not 64 hex digits. Reject the configuration value.
    #[error("target hex must be 64 hex digits")]
    BadHex,
}

/// A 256-bit mining target, 32 bytes little-endian, ordered by numeric value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target([u8; 32]);

/// `0x00000000FFFF0000…0000`: the target of difficulty 1, as little-endian limbs.
const DIFF1_LIMBS: u256::Limbs256 = [0, 0, 0, 0x0000_0000_FFFF_0000];

/// `2^32`: expected hashes per unit of difficulty (diff1 ≈ 2^256 / 2^32).
pub const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

impl Target {
    /// The largest target, 2^256 - 1 (every hash meets it).
    pub const MAX: Target = Target([0xFF; 32]);
    /// The zero target (only an all-zero hash meets it).
    pub const ZERO: Target = Target([0; 32]);
    /// The difficulty-1 target `0x00000000FFFF0000000000000000000000000000000000000000000000000000`.
    pub const DIFF1: Target = Target([
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF,
        0, 0, 0, 0,
    ]);

    /// Wraps 32 little-endian bytes (the SV2 `U256` wire form).
    pub const fn from_le_bytes(bytes: [u8; 32]) -> Self {
        Target(bytes)
    }

    /// The 32 little-endian bytes (the SV2 `U256` wire form).
    pub const fn to_le_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Borrows the little-endian bytes.
    pub const fn as_le_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From 32 big-endian bytes (the order humans write targets in).
    pub fn from_be_bytes(mut bytes: [u8; 32]) -> Self {
        bytes.reverse();
        Target(bytes)
    }

    /// The 32 big-endian bytes.
    pub fn to_be_bytes(self) -> [u8; 32] {
        let mut bytes = self.0;
        bytes.reverse();
        bytes
    }

    /// Parses 64 big-endian hex digits (optionally prefixed by `0x`).
    pub fn from_be_hex(hex_str: &str) -> Result<Self, TargetError> {
        let digits = hex_str.strip_prefix("0x").unwrap_or(hex_str);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| TargetError::BadHex)?;
        Ok(Target::from_be_bytes(bytes))
    }

    fn limbs(&self) -> u256::Limbs256 {
        u256::from_le_bytes(&self.0)
    }

    fn from_limbs(limbs: &u256::Limbs256) -> Self {
        Target(u256::to_le_bytes(limbs))
    }

    /// The target for a pool difficulty: `floor(diff1 / difficulty)`, clamped to
    /// [`Target::MAX`]. Fractional difficulties below 1 are allowed. The result is exact for
    /// the `f64` value given (no floating-point rounding happens).
    pub fn from_difficulty(difficulty: f64) -> Result<Self, TargetError> {
        if !difficulty.is_finite() || difficulty <= 0.0 {
            return Err(TargetError::InvalidDifficulty(difficulty));
        }
        // difficulty = mantissa * 2^exp exactly, with an odd integer mantissa < 2^53.
        let bits = difficulty.to_bits();
        let biased = ((bits >> 52) & 0x7FF) as i32;
        let fraction = bits & ((1u64 << 52) - 1);
        let (mut mantissa, mut exp) = if biased == 0 {
            (fraction, -1074)
        } else {
            (fraction | (1u64 << 52), biased - 1075)
        };
        let zeros = mantissa.trailing_zeros();
        mantissa >>= zeros;
        exp += zeros as i32;

        let mut wide: u256::Limbs512 = [0; 8];
        wide[..4].copy_from_slice(&DIFF1_LIMBS);
        if exp >= 0 {
            // floor(floor(a / m) / 2^e) == floor(a / (m * 2^e)).
            let quotient = u256::shr(&u256::div_u64(&wide, mantissa), exp.unsigned_abs());
            return Ok(Target::from_limbs(&narrow(&quotient)));
        }
        let shift = exp.unsigned_abs();
        // diff1 >= 2^223 and mantissa < 2^53, so a shift of 86 or more already exceeds 2^256.
        if shift > 256 {
            return Ok(Target::MAX);
        }
        let quotient = u256::div_u64(&u256::shl(&wide, shift), mantissa);
        if u256::bit_len(&quotient) > 256 {
            return Ok(Target::MAX);
        }
        Ok(Target::from_limbs(&narrow(&quotient)))
    }

    /// The pool difficulty of this target, `diff1 / target`, as `f64` (a zero target counts
    /// as 1 so the result stays finite). Exact enough for accounting, not for consensus.
    pub fn to_difficulty(&self) -> f64 {
        let value = u256::to_f64(&self.limbs()).max(1.0);
        u256::to_f64(&DIFF1_LIMBS) / value
    }

    /// Decodes the compact `nBits` form of a header's network target.
    pub fn from_compact(bits: u32) -> Result<Self, TargetError> {
        let size = bits >> 24;
        let mantissa = bits & 0x007F_FFFF;
        if mantissa != 0 && bits & 0x0080_0000 != 0 {
            return Err(TargetError::NegativeCompact(bits));
        }
        let limbs = if size <= 3 {
            [u64::from(mantissa >> (8 * (3 - size))), 0, 0, 0]
        } else {
            let shift = 8 * (size - 3);
            if mantissa != 0 && u256::bit_len(&[u64::from(mantissa)]) + shift > 256 {
                return Err(TargetError::OverflowingCompact(bits));
            }
            u256::shl(&[u64::from(mantissa), 0, 0, 0], shift)
        };
        if limbs == [0; 4] {
            return Err(TargetError::ZeroCompact(bits));
        }
        Ok(Target::from_limbs(&limbs))
    }

    /// Encodes as compact `nBits` (rounding down to 3 significant bytes, as Bitcoin Core does).
    pub fn to_compact(&self) -> u32 {
        let limbs = self.limbs();
        let mut size = u256::bit_len(&limbs).div_ceil(8);
        let mut compact = if size <= 3 {
            (limbs[0] << (8 * (3 - size))) as u32
        } else {
            u256::shr(&limbs, 8 * (size - 3))[0] as u32
        };
        if compact & 0x0080_0000 != 0 {
            compact >>= 8;
            size += 1;
        }
        compact | (size << 24)
    }

    /// Whether a header hash (the 32 bytes of sha256d as computed, read little-endian) meets
    /// this target: `hash <= target`.
    #[inline]
    pub fn is_met_by(&self, hash: &[u8; 32]) -> bool {
        u256::cmp(&u256::from_le_bytes(hash), &self.limbs()).is_le()
    }
}

/// Drops the upper half of a 512-bit value the caller has shown to fit in 256 bits.
fn narrow(wide: &u256::Limbs512) -> u256::Limbs256 {
    [wide[0], wide[1], wide[2], wide[3]]
}

impl Ord for Target {
    fn cmp(&self, other: &Self) -> Ordering {
        u256::cmp(&self.limbs(), &other.limbs())
    }
}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Target {
    /// 64 big-endian hex digits, the way block explorers print targets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_be_bytes()))
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target(0x{self})")
    }
}

/// The difficulty a header hash achieved: `diff1 / hash` (for "best share" and accounting).
pub fn hash_difficulty(hash: &[u8; 32]) -> f64 {
    Target::from_le_bytes(*hash).to_difficulty()
}

/// Expected number of hashes to find one share of `difficulty`: `difficulty × 2^32`.
pub fn hashes_for_difficulty(difficulty: f64) -> f64 {
    difficulty * HASHES_PER_DIFFICULTY
}

/// Hashrate (hashes per second) implied by `total_difficulty` of accepted shares over
/// `seconds`. Returns 0 for a non-positive interval.
pub fn hashrate_from_shares(total_difficulty: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        hashes_for_difficulty(total_difficulty) / seconds
    } else {
        0.0
    }
}

/// The difficulty at which a miner of `hashrate` (H/s) finds one share every
/// `seconds_per_share` on average (the usual vardiff target).
pub fn difficulty_for_hashrate(hashrate: f64, seconds_per_share: f64) -> f64 {
    hashrate * seconds_per_share / HASHES_PER_DIFFICULTY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(hex_str: &str) -> Target {
        Target::from_be_hex(hex_str).unwrap()
    }

    #[test]
    fn diff1_constant_matches_definition() {
        assert_eq!(
            Target::DIFF1,
            be("00000000FFFF0000000000000000000000000000000000000000000000000000")
        );
        assert_eq!(Target::from_difficulty(1.0).unwrap(), Target::DIFF1);
        assert_eq!(Target::DIFF1.to_difficulty(), 1.0);
    }

    #[test]
    fn integer_and_power_of_two_difficulties_are_exact() {
        // 0xFFFF << 208 / 1024 = 0xFFFF << 198 = 0x3FFFC << 196.
        assert_eq!(
            Target::from_difficulty(1024.0).unwrap(),
            be("00000000003FFFC0000000000000000000000000000000000000000000000000")
        );
        // diff1 / 3 = 0x5555 << 208 exactly.
        assert_eq!(
            Target::from_difficulty(3.0).unwrap(),
            be("0000000055550000000000000000000000000000000000000000000000000000")
        );
        // 1/4 shifts left by two bits.
        assert_eq!(
            Target::from_difficulty(0.25).unwrap(),
            be("00000003FFFC0000000000000000000000000000000000000000000000000000")
        );
        // A non-dividing integer: floor((0xFFFF << 208) / 7) computed independently in u128
        // on the top 128 bits (the low 128 bits of the dividend are zero, the remainder
        // carries into them).
        let t = Target::from_difficulty(7.0).unwrap().to_be_bytes();
        let top = (0xFFFFu128 << 80) / 7;
        assert_eq!(&t[..16], &top.to_be_bytes());
    }

    #[test]
    fn fractional_difficulty_0_001() {
        let t = Target::from_difficulty(0.001).unwrap();
        // diff1 * 1000 = 0x3E7FC18 << 208. The f64 0.001 is a hair above 1/1000, so the exact
        // quotient is a hair below: same leading digits, not more.
        let thousand = be("000003E7FC180000000000000000000000000000000000000000000000000000");
        assert!(t <= thousand);
        assert_eq!(&t.to_be_bytes()[..6], &[0, 0, 3, 0xE7, 0xFC, 0x17]);
        assert!((t.to_difficulty() - 0.001).abs() < 1e-15);
    }

    #[test]
    fn tiny_difficulty_clamps_to_max() {
        assert_eq!(Target::from_difficulty(1e-12).unwrap(), Target::MAX);
        assert_eq!(
            Target::from_difficulty(f64::MIN_POSITIVE).unwrap(),
            Target::MAX
        );
        assert_eq!(Target::from_difficulty(5e-324).unwrap(), Target::MAX);
        // 2^-32: diff1 << 32 = 0xFFFF << 240 still fits.
        assert_eq!(
            Target::from_difficulty(1.0 / 4_294_967_296.0).unwrap(),
            be("FFFF000000000000000000000000000000000000000000000000000000000000")
        );
        // One more halving overflows.
        assert_eq!(
            Target::from_difficulty(1.0 / 8_589_934_592.0).unwrap(),
            Target::MAX
        );
    }

    #[test]
    fn huge_difficulty_goes_to_zero_without_panicking() {
        assert_eq!(Target::from_difficulty(f64::MAX).unwrap(), Target::ZERO);
        assert!(Target::ZERO.to_difficulty().is_finite());
    }

    #[test]
    fn invalid_difficulties_are_rejected() {
        for bad in [0.0, -0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                Target::from_difficulty(bad),
                Err(TargetError::InvalidDifficulty(_))
            ));
        }
    }

    #[test]
    fn compact_genesis_and_modern() {
        // 0x1d00ffff: the genesis / difficulty-1 network target (0xFFFF << 208).
        assert_eq!(Target::from_compact(0x1d00ffff).unwrap(), Target::DIFF1);
        assert_eq!(Target::DIFF1.to_compact(), 0x1d00ffff);
        // Block 840000's nBits 0x17034219.
        let t = Target::from_compact(0x17034219).unwrap();
        assert_eq!(
            t,
            be("0000000000000000000342190000000000000000000000000000000000000000")
        );
        assert_eq!(t.to_compact(), 0x17034219);
        let expected = 65535.0 / f64::from(0x034219) * 2f64.powi(48);
        assert!((t.to_difficulty() / expected - 1.0).abs() < 1e-12);
        // Block 100000's nBits.
        let t = Target::from_compact(0x1b04864c).unwrap();
        assert_eq!(
            t,
            be("000000000004864c000000000000000000000000000000000000000000000000")
        );
    }

    #[test]
    fn compact_edge_cases() {
        assert_eq!(
            Target::from_compact(0x01003456),
            Err(TargetError::ZeroCompact(0x01003456))
        );
        assert_eq!(
            Target::from_compact(0x01123456).unwrap(),
            Target::from_le_bytes({
                let mut b = [0u8; 32];
                b[0] = 0x12;
                b
            })
        );
        assert_eq!(
            Target::from_compact(0x04923456),
            Err(TargetError::NegativeCompact(0x04923456))
        );
        assert_eq!(
            Target::from_compact(0xff123456),
            Err(TargetError::OverflowingCompact(0xff123456))
        );
        // 0x21 bytes with a 1-byte mantissa still fits (2^256 > 0x7f << 256 - 8)
        assert!(Target::from_compact(0x2100007f).is_ok());
        assert!(Target::from_compact(0x21008000).is_ok());
        assert!(Target::from_compact(0x22008000).is_err());
        // A value whose top mantissa bit would be read as the sign gets an extra byte.
        assert_eq!(
            Target::from_compact(0x05008000).unwrap().to_compact(),
            0x05008000
        );
    }

    #[test]
    fn is_met_by_compares_little_endian() {
        let t = Target::DIFF1;
        let mut hash = t.to_le_bytes();
        assert!(t.is_met_by(&hash));
        hash[0] = 1; // diff1 + 1
        assert!(!t.is_met_by(&hash));
        let mut low = [0u8; 32];
        low[31] = 0;
        low[0] = 0xFF;
        assert!(t.is_met_by(&low));
        assert!(Target::MAX.is_met_by(&[0xFF; 32]));
        assert!(!Target::ZERO.is_met_by(&[1; 32]));
    }

    #[test]
    fn ordering_is_numeric() {
        let a = Target::from_difficulty(2.0).unwrap();
        let b = Target::from_difficulty(1.0).unwrap();
        assert!(a < b);
        assert!(Target::ZERO < a && b < Target::MAX);
        // A byte-wise comparison of the LE bytes would get this wrong.
        let mut x = [0u8; 32];
        x[0] = 0xFF;
        let mut y = [0u8; 32];
        y[1] = 0x01;
        assert!(Target::from_le_bytes(x) < Target::from_le_bytes(y));
    }

    #[test]
    fn hashrate_helpers() {
        assert_eq!(hashes_for_difficulty(1.0), 4_294_967_296.0);
        // 100 TH/s at one share per 10 s -> difficulty ~232,830.
        let d = difficulty_for_hashrate(100e12, 10.0);
        assert!((d - 232_830.643_653_869_6).abs() < 1e-6);
        assert!((hashrate_from_shares(d, 10.0) - 100e12).abs() < 1.0);
        assert_eq!(hashrate_from_shares(1.0, 0.0), 0.0);
    }

    #[test]
    fn display_and_hex_round_trip() {
        let t = Target::from_difficulty(1024.0).unwrap();
        assert_eq!(Target::from_be_hex(&t.to_string()).unwrap(), t);
        assert_eq!(Target::from_be_hex(&format!("0x{t}")).unwrap(), t);
        assert_eq!(Target::from_be_hex("00"), Err(TargetError::BadHex));
        assert!(format!("{t:?}").starts_with("Target(0x0000000000"));
    }
}
