//! Splitting one pool connection's extranonce2 space among many miners.
//!
//! A pool gives each connection an `extranonce1` and an `extranonce2_size`. The proxy keeps
//! the first `prefix_bytes` of extranonce2 as a per-miner prefix and lets the miner roll the
//! rest, so every miner on the connection searches a disjoint space while the pool sees one
//! connection:
//!
//! ```text
//! pool:   coinb1 | extranonce1 | extranonce2 (extranonce2_size bytes)               | coinb2
//! miner:  coinb1 | extranonce1   prefix      | extranonce2 (size - prefix_bytes)     | coinb2
//!                  \____ the miner's extranonce1 ____/
//! ```
//!
//! The prefixes themselves are handed out per connection by the pool manager
//! (`upstream::prefix`).

use bytes::{BufMut, Bytes, BytesMut};

/// Smallest extranonce2 a miner is left with. Below 2 bytes a fast ASIC exhausts its space
/// within a job; cgminer-based firmwares also reject 0.
pub const MIN_MINER_EXTRANONCE2: usize = 2;
/// Largest extranonce2 handed to SV1 miners: cgminer-based firmwares fail above 8 bytes.
pub const MAX_MINER_EXTRANONCE2: usize = 8;

/// A pool session whose extranonce2 leaves miners too little room once the proxy has taken its
/// per-miner prefix. The connection to that pool is refused (it counts as down, so miners go
/// to the next pool) rather than handing miners an unusable extranonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the pool's extranonce2 is {pool_extranonce2} bytes; the proxy keeps {prefix_bytes} per miner \
     ([aggregation] proxy_extranonce2_bytes), which leaves {left}, below the {MIN_MINER_EXTRANONCE2} \
     a miner needs: lower proxy_extranonce2_bytes or use a pool that gives more",
    left = self.left()
)]
pub struct ExtranonceTooSmall {
    /// The pool's extranonce2 size.
    pub pool_extranonce2: usize,
    /// The proxy's per-miner prefix.
    pub prefix_bytes: usize,
}

impl ExtranonceTooSmall {
    /// Bytes a miner would have been left with.
    pub fn left(&self) -> usize {
        self.pool_extranonce2.saturating_sub(self.prefix_bytes)
    }
}

/// The extranonce2 size a miner gets on a pool session whose extranonce2 is
/// `pool_extranonce2_size` bytes when the proxy keeps `prefix_bytes` (1..=4) of it: what is left,
/// at most [`MAX_MINER_EXTRANONCE2`]; an error when that is below [`MIN_MINER_EXTRANONCE2`].
pub fn miner_extranonce2_size(
    pool_extranonce2_size: usize,
    prefix_bytes: usize,
) -> Result<usize, ExtranonceTooSmall> {
    let prefix_bytes = prefix_bytes.clamp(1, 4);
    match pool_extranonce2_size.checked_sub(prefix_bytes) {
        Some(room) if room >= MIN_MINER_EXTRANONCE2 => Ok(room.min(MAX_MINER_EXTRANONCE2)),
        _ => Err(ExtranonceTooSmall {
            pool_extranonce2: pool_extranonce2_size,
            prefix_bytes,
        }),
    }
}

/// One miner's extranonces on one pool session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinerExtranonce {
    /// The miner's extranonce1: pool extranonce1 ‖ slot (big-endian) ‖ zero padding.
    pub extranonce1: Bytes,
    /// What precedes the miner's extranonce2 in the pool's extranonce2 (slot ‖ padding).
    pub upstream_prefix: Vec<u8>,
    /// The miner's extranonce2 size.
    pub extranonce2_size: usize,
}

impl MinerExtranonce {
    /// The layout for `slot` (of `prefix_bytes` bytes, 1..=4) on a pool session with
    /// `pool_extranonce1` and `pool_extranonce2_size`, or `None` if the pool leaves too little
    /// room to split. The miner rolls at most [`MAX_MINER_EXTRANONCE2`] bytes; whatever the pool
    /// allows beyond that is filled with zeros, as part of the miner's extranonce1.
    pub fn new(
        pool_extranonce1: &[u8],
        pool_extranonce2_size: usize,
        prefix_bytes: usize,
        slot: u32,
    ) -> Option<Self> {
        let prefix_bytes = prefix_bytes.clamp(1, 4);
        let extranonce2_size = miner_extranonce2_size(pool_extranonce2_size, prefix_bytes).ok()?;
        let mut upstream_prefix = slot.to_be_bytes()[4 - prefix_bytes..].to_vec();
        upstream_prefix.resize(pool_extranonce2_size - extranonce2_size, 0);
        let mut extranonce1 =
            BytesMut::with_capacity(pool_extranonce1.len() + upstream_prefix.len());
        extranonce1.put_slice(pool_extranonce1);
        extranonce1.put_slice(&upstream_prefix);
        Some(MinerExtranonce {
            extranonce1: extranonce1.freeze(),
            upstream_prefix,
            extranonce2_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extranonce_layout() {
        let m = MinerExtranonce::new(&[0xaa, 0xbb], 8, 2, 0x0102).unwrap();
        assert_eq!(&m.extranonce1[..], &[0xaa, 0xbb, 0x01, 0x02]);
        assert_eq!(m.extranonce2_size, 6);
        assert_eq!(m.upstream_prefix, [0x01, 0x02]);
        assert_eq!(MinerExtranonce::new(&[0xaa, 0xbb], 3, 2, 1), None);
        let wide = MinerExtranonce::new(&[0xaa, 0xbb], 16, 2, 0x0102).unwrap();
        assert_eq!(
            wide.extranonce2_size, 8,
            "capped for cgminer-based firmware"
        );
        assert_eq!(
            wide.upstream_prefix,
            [0x01, 0x02, 0, 0, 0, 0, 0, 0],
            "the rest is padding"
        );
        assert_eq!(wide.extranonce1.len(), 2 + 8);
    }

    #[test]
    fn miners_get_what_is_left_of_the_pools_extranonce2() {
        // (pool extranonce2, proxy prefix) -> miner extranonce2
        assert_eq!(miner_extranonce2_size(8, 2), Ok(6));
        assert_eq!(miner_extranonce2_size(4, 2), Ok(2));
        assert_eq!(miner_extranonce2_size(4, 1), Ok(3));
        assert_eq!(miner_extranonce2_size(16, 4), Ok(8), "capped at 8");
        let too_small = miner_extranonce2_size(2, 2).unwrap_err();
        assert_eq!(too_small.left(), 0);
        let why = too_small.to_string();
        assert!(
            why.contains("extranonce2 is 2 bytes")
                && why.contains("keeps 2")
                && why.contains("leaves 0"),
            "{why}"
        );
        assert_eq!(miner_extranonce2_size(3, 2).unwrap_err().left(), 1);
        assert_eq!(
            miner_extranonce2_size(1, 2).unwrap_err().left(),
            0,
            "no underflow"
        );
        assert_eq!(miner_extranonce2_size(0, 4).unwrap_err().left(), 0);
        assert_eq!(
            MinerExtranonce::new(&[0xaa], 4, 2, 1).map(|m| m.extranonce2_size),
            Some(2)
        );
        assert_eq!(MinerExtranonce::new(&[0xaa], 2, 2, 1), None);
    }
}
