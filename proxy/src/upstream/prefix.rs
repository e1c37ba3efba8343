//! Allocating the per-miner extranonce prefixes on one pool connection (the layout they fill
//! is [`crate::pool_link::extranonce`]).

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
}
