//! Double SHA-256 built on the raw compression function.
//!
//! Share validation hashes a few hundred bytes per share, so the fixed costs of a general
//! streaming hasher matter. Everything here calls `sha2::compress256` (which picks SHA-NI at
//! run time) directly:
//!
//! - [`sha256d_64`] hashes a 64-byte merkle node pair: one compression of the data, one of
//!   the constant padding block, one for the second hash (whose input, 32 bytes + padding,
//!   always fits one block).
//! - [`sha256d_80`] hashes an 80-byte block header with the same 2 + 1 compressions.
//! - [`Sha256Engine`] is a small copyable streaming state used for the coinbase: a job
//!   absorbs the coinbase prefix once (its *midstate*), and each share clones that state and
//!   absorbs only the extranonces and the suffix.
//!
//! Digests are returned as computed (not reversed): the "internal byte order" Bitcoin uses in
//! headers and merkle trees. Block explorers display the reverse.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

/// SHA-256 initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Padding block after exactly 64 message bytes: `0x80`, zeros, bit length 512 big-endian.
const PAD_AFTER_64: [u8; 64] = {
    let mut block = [0u8; 64];
    block[0] = 0x80;
    block[62] = 0x02; // 512 = 0x0200
    block
};

/// One 64-byte block in the form `compress256` takes.
type Block = GenericArray<u8, U64>;

/// Compresses one 64-byte block into `state`.
#[inline(always)]
fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let block: &Block = block.into();
    compress256(state, core::slice::from_ref(block));
}

/// Compresses a message block followed by its padding block in one call: each
/// `compress256` call re-loads and re-shuffles the state (a few ns with SHA-NI), so paths
/// with a known second block hand both over at once.
#[inline(always)]
fn compress_two(state: &mut [u32; 8], blocks: &[Block; 2]) {
    compress256(state, blocks);
}

/// Writes a state as the 32 big-endian digest bytes.
#[inline(always)]
fn state_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The second SHA-256 of sha256d: hashes a 32-byte digest given as a state (one block).
#[inline(always)]
fn second_hash(first: &[u32; 8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    for (chunk, word) in block.chunks_exact_mut(4).zip(first) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    block[32] = 0x80;
    block[62] = 0x01; // 256 bits = 0x0100
    let mut state = IV;
    compress(&mut state, &block);
    state_bytes(&state)
}

/// `SHA256(SHA256(data))` of a 64-byte input (a merkle node's two children): 3 compressions.
#[inline]
pub fn sha256d_64(data: &[u8; 64]) -> [u8; 32] {
    let blocks = [Block::from(*data), Block::from(PAD_AFTER_64)];
    let mut state = IV;
    compress_two(&mut state, &blocks);
    second_hash(&state)
}

/// `SHA256(SHA256(left ‖ right))`: a merkle node from its children, without an
/// intermediate 64-byte copy.
#[inline]
pub fn sha256d_pair(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut blocks = [Block::default(), Block::from(PAD_AFTER_64)];
    blocks[0][..32].copy_from_slice(left);
    blocks[0][32..].copy_from_slice(right);
    let mut state = IV;
    compress_two(&mut state, &blocks);
    second_hash(&state)
}

/// `SHA256(SHA256(header))` of an 80-byte block header: 3 compressions.
#[inline]
pub fn sha256d_80(header: &[u8; 80]) -> [u8; 32] {
    let mut blocks = [Block::default(); 2];
    blocks[0].copy_from_slice(&header[..64]);
    blocks[1][..16].copy_from_slice(&header[64..]);
    blocks[1][16] = 0x80;
    blocks[1][62] = 0x02; // 640 bits = 0x0280
    blocks[1][63] = 0x80;
    let mut state = IV;
    compress_two(&mut state, &blocks);
    second_hash(&state)
}

/// `SHA256(SHA256(data))` of any input (coinbase transactions, tests).
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    let mut engine = Sha256Engine::new();
    engine.update(data);
    engine.finish_double()
}

/// `SHA256(data)` of any input.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut engine = Sha256Engine::new();
    engine.update(data);
    state_bytes(&engine.finish_state())
}

/// A copyable SHA-256 streaming state: the chaining value, the partial block and the length.
///
/// After absorbing a prefix it *is* the prefix's midstate: cloning it and absorbing the rest
/// gives the same digest as hashing the whole message, at the cost of the remaining blocks
/// only. It never allocates.
#[derive(Clone, Copy, Debug)]
pub struct Sha256Engine {
    state: [u32; 8],
    buffer: [u8; 64],
    buffered: usize,
    length: u64,
}

impl Default for Sha256Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Engine {
    /// A fresh state (nothing absorbed).
    pub const fn new() -> Self {
        Sha256Engine {
            state: IV,
            buffer: [0; 64],
            buffered: 0,
            length: 0,
        }
    }

    /// Bytes absorbed so far.
    pub fn len(&self) -> u64 {
        self.length
    }

    /// Whether nothing has been absorbed.
    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// Absorbs `data`.
    #[inline]
    pub fn update(&mut self, mut data: &[u8]) {
        self.length = self.length.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let room = 64 - self.buffered;
            let take = room.min(data.len());
            let (head, rest) = data.split_at(take);
            if let Some(dst) = self.buffer.get_mut(self.buffered..self.buffered + take) {
                dst.copy_from_slice(head);
            }
            self.buffered += take;
            data = rest;
            if self.buffered < 64 {
                return;
            }
            compress(&mut self.state, &self.buffer);
            self.buffered = 0;
        }
        let mut blocks = data.chunks_exact(64);
        for block in &mut blocks {
            if let Ok(block) = <&[u8; 64]>::try_from(block) {
                compress(&mut self.state, block);
            }
        }
        let rest = blocks.remainder();
        if let Some(dst) = self.buffer.get_mut(..rest.len()) {
            dst.copy_from_slice(rest);
        }
        self.buffered = rest.len();
    }

    /// Pads and returns the final chaining value of SHA-256 (not yet serialised).
    fn finish_state(mut self) -> [u32; 8] {
        let bit_len = self.length.wrapping_mul(8);
        let used = self.buffered;
        if let Some(rest) = self.buffer.get_mut(used..) {
            rest.fill(0);
        }
        if let Some(first) = self.buffer.get_mut(used) {
            *first = 0x80;
        }
        if used >= 56 {
            compress(&mut self.state, &self.buffer);
            self.buffer = [0; 64];
        }
        if let Some(len_bytes) = self.buffer.get_mut(56..) {
            len_bytes.copy_from_slice(&bit_len.to_be_bytes());
        }
        compress(&mut self.state, &self.buffer);
        self.state
    }

    /// Finishes as SHA-256 and hashes the digest once more: sha256d of everything absorbed.
    #[inline]
    pub fn finish_double(self) -> [u8; 32] {
        second_hash(&self.finish_state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn reference_sha256d(data: &[u8]) -> [u8; 32] {
        Sha256::digest(Sha256::digest(data)).into()
    }

    #[test]
    fn known_answer_abc() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn all_lengths_match_the_reference() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(
                sha256d(&data[..len]),
                reference_sha256d(&data[..len]),
                "{len}"
            );
        }
    }

    #[test]
    fn fixed_size_paths_match_the_reference() {
        let mut pair = [0u8; 64];
        pair.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        assert_eq!(sha256d_64(&pair), reference_sha256d(&pair));
        let mut header = [0u8; 80];
        header
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 3) as u8);
        assert_eq!(sha256d_80(&header), reference_sha256d(&header));
        let (left, right) = pair.split_at(32);
        assert_eq!(
            sha256d_pair(&left.try_into().unwrap(), &right.try_into().unwrap()),
            reference_sha256d(&pair)
        );
    }

    #[test]
    fn midstate_split_anywhere_gives_the_same_digest() {
        let data: Vec<u8> = (0..250u32).map(|i| (i ^ 0x5A) as u8).collect();
        let whole = sha256d(&data);
        for split in [0, 1, 63, 64, 65, 127, 128, 200, 250] {
            let mut prefix = Sha256Engine::new();
            prefix.update(&data[..split]);
            let mut engine = prefix; // copy: the prefix stays reusable
            for piece in data[split..].chunks(17) {
                engine.update(piece);
            }
            assert_eq!(engine.finish_double(), whole, "split {split}");
            assert_eq!(prefix.len(), split as u64);
        }
    }

    #[test]
    fn genesis_header_hash() {
        let header = hex::decode(concat!(
            "0100000000000000000000000000000000000000000000000000000000000000",
            "000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa",
            "4b1e5e4a29ab5f49ffff001d1dac2b7c"
        ))
        .unwrap();
        let header: [u8; 80] = header.try_into().unwrap();
        let mut hash = sha256d_80(&header);
        hash.reverse();
        assert_eq!(
            hex::encode(hash),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
    }
}
