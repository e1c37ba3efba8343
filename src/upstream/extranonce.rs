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

use bytes::{BufMut, Bytes, BytesMut};

/// Smallest extranonce2 a miner is left with. Below 2 bytes a fast ASIC exhausts its space
/// within a job; cgminer-based firmwares also reject 0.
pub const MIN_MINER_EXTRANONCE2: usize = 2;
/// Largest extranonce2 handed to SV1 miners: cgminer-based firmwares fail above 8 bytes.
pub const MAX_MINER_EXTRANONCE2: usize = 8;

/// Allocates per-miner prefixes on one upstream connection. Freed prefixes are reused last
/// (FIFO), so a prefix is not handed to a new miner while late shares from its previous owner
/// may still be arriving.
#[derive(Debug)]
pub struct PrefixAllocator {
    prefix_bytes: usize,
    capacity: u32,
    next_fresh: u32,
    freed: std::collections::VecDeque<u32>,
    in_use: u32,
}

impl PrefixAllocator {
    /// An allocator for `prefix_bytes` (1..=4) bytes, limited to `max_miners` prefixes.
    pub fn new(prefix_bytes: usize, max_miners: u32) -> Self {
        let bytes = prefix_bytes.clamp(1, 4);
        let space = if bytes == 4 {
            u32::MAX
        } else {
            (1u32 << (8 * bytes)) - 1
        };
        PrefixAllocator {
            prefix_bytes: bytes,
            capacity: max_miners.min(space.saturating_add(if bytes == 4 { 0 } else { 1 })),
            next_fresh: 0,
            freed: Default::default(),
            in_use: 0,
        }
    }

    /// Bytes per prefix.
    pub fn prefix_bytes(&self) -> usize {
        self.prefix_bytes
    }

    /// Prefixes handed out and not released.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Whether no prefix is left.
    pub fn is_full(&self) -> bool {
        self.in_use >= self.capacity
    }

    /// Takes a prefix, or `None` when the connection is full.
    pub fn allocate(&mut self) -> Option<u32> {
        if self.is_full() {
            return None;
        }
        let slot = if self.next_fresh < self.capacity {
            self.next_fresh += 1;
            self.next_fresh - 1
        } else {
            self.freed.pop_front()?
        };
        self.in_use += 1;
        Some(slot)
    }

    /// Returns a prefix.
    pub fn release(&mut self, slot: u32) {
        if slot < self.next_fresh && self.in_use > 0 {
            self.in_use -= 1;
            self.freed.push_back(slot);
        }
    }

    /// The miner's extranonce1: the pool's extranonce1 followed by the slot, big-endian.
    pub fn miner_extranonce1(&self, pool_extranonce1: &[u8], slot: u32) -> Bytes {
        let mut out = BytesMut::with_capacity(pool_extranonce1.len() + self.prefix_bytes);
        out.put_slice(pool_extranonce1);
        let be = slot.to_be_bytes();
        out.put_slice(&be[4 - self.prefix_bytes..]);
        out.freeze()
    }

    /// The extranonce2 size left to miners for a pool's `extranonce2_size`, or `None` if the
    /// pool leaves too little room to split.
    pub fn miner_extranonce2_size(&self, pool_extranonce2_size: usize) -> Option<usize> {
        let left = pool_extranonce2_size.checked_sub(self.prefix_bytes)?;
        (left >= MIN_MINER_EXTRANONCE2).then_some(left.min(MAX_MINER_EXTRANONCE2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_until_full_and_reused_fifo() {
        let mut a = PrefixAllocator::new(1, 1000);
        let got: Vec<u32> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(got.len(), 256, "one byte gives 256 miners");
        assert!(a.is_full());
        a.release(7);
        a.release(3);
        assert_eq!(a.allocate(), Some(7));
        assert_eq!(a.allocate(), Some(3));
        assert_eq!(a.allocate(), None);
        a.release(999); // never handed out: ignored
        assert_eq!(a.in_use(), 256);
    }

    #[test]
    fn extranonce_layout() {
        let a = PrefixAllocator::new(2, 10);
        assert_eq!(
            &a.miner_extranonce1(&[0xaa, 0xbb], 0x0102)[..],
            &[0xaa, 0xbb, 0x01, 0x02]
        );
        assert_eq!(a.miner_extranonce2_size(8), Some(6));
        assert_eq!(a.miner_extranonce2_size(3), None);
        assert_eq!(
            a.miner_extranonce2_size(16),
            Some(8),
            "capped for cgminer-based firmware"
        );
    }
}
