//! Merkle roots from a coinbase txid and a branch, and branches from a transaction list.
//!
//! Stratum jobs (SV1 `mining.notify` `merkle_branch`, SV2 `NewExtendedMiningJob.merkle_path`)
//! carry the siblings on the path from the coinbase (always leaf 0) to the root. The root is
//! `fold(txid, |acc, step| sha256d(acc ‖ step))`. All hashes are in internal byte order
//! (as computed, not the reversed display form).

use super::hash::{sha256d_64, sha256d_pair};

/// Folds `coinbase_txid` up a merkle branch: `acc = sha256d(acc ‖ step)` for each step.
#[inline]
pub fn merkle_root(coinbase_txid: &[u8; 32], branch: &[[u8; 32]]) -> [u8; 32] {
    branch
        .iter()
        .fold(*coinbase_txid, |acc, step| sha256d_pair(&acc, step))
}

/// The branch for leaf 0 of a block whose other transactions are `txids` (coinbase
/// excluded), in block order. Used by test pools and the demo to build jobs.
///
/// Leaf 0's value never enters its own branch, so the coinbase need not be known yet: at
/// each level the sibling is element 1, and element 0 stands for "the path so far".
pub fn merkle_branch(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut branch = Vec::new();
    // `level` holds the nodes of the current level except the first (the path node).
    let mut level: Vec<[u8; 32]> = txids.to_vec();
    while let Some((&sibling, rest)) = level.split_first() {
        branch.push(sibling);
        // Next level, without its own first node (path ‖ sibling): pair up `rest`,
        // duplicating an odd last node as Bitcoin does.
        let mut next = Vec::with_capacity(rest.len().div_ceil(2));
        for pair in rest.chunks(2) {
            let (left, right) = match pair {
                [l, r] => (l, r),
                [l] => (l, l),
                _ => continue,
            };
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(left);
            buf[32..].copy_from_slice(right);
            next.push(sha256d_64(&buf));
        }
        level = next;
    }
    branch
}

/// The merkle root of a full transaction list (coinbase first). Empty input gives zeros.
pub fn merkle_root_of(txids: &[[u8; 32]]) -> [u8; 32] {
    match txids.split_first() {
        Some((first, rest)) => merkle_root(first, &merkle_branch(rest)),
        None => [0; 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 32] {
        [n; 32]
    }

    /// Textbook root: repeatedly pair up, duplicating the last of an odd level.
    fn naive_root(leaves: &[[u8; 32]]) -> [u8; 32] {
        let mut level = leaves.to_vec();
        while level.len() > 1 {
            if level.len() % 2 == 1 {
                level.push(*level.last().unwrap());
            }
            level = level
                .chunks(2)
                .map(|p| {
                    let mut buf = [0u8; 64];
                    buf[..32].copy_from_slice(&p[0]);
                    buf[32..].copy_from_slice(&p[1]);
                    sha256d_64(&buf)
                })
                .collect();
        }
        level[0]
    }

    #[test]
    fn branch_reproduces_the_naive_root_for_all_small_sizes() {
        for n in 1..=33u8 {
            let leaves: Vec<_> = (0..n).map(id).collect();
            let branch = merkle_branch(&leaves[1..]);
            assert_eq!(
                merkle_root(&leaves[0], &branch),
                naive_root(&leaves),
                "n={n}"
            );
            // depth = ceil(log2(n))
            let depth = (usize::from(n)).next_power_of_two().trailing_zeros() as usize;
            assert_eq!(branch.len(), depth, "n={n}");
        }
    }

    #[test]
    fn single_transaction_root_is_the_txid() {
        assert_eq!(merkle_root(&id(9), &[]), id(9));
        assert_eq!(merkle_root_of(&[id(9)]), id(9));
        assert_eq!(merkle_root_of(&[]), [0; 32]);
    }

    #[test]
    fn branch_does_not_depend_on_the_coinbase() {
        let others = [id(1), id(2), id(3), id(4), id(5)];
        let branch = merkle_branch(&others);
        let mut a = vec![id(0xAA)];
        a.extend_from_slice(&others);
        let mut b = vec![id(0xBB)];
        b.extend_from_slice(&others);
        assert_eq!(merkle_root(&id(0xAA), &branch), naive_root(&a));
        assert_eq!(merkle_root(&id(0xBB), &branch), naive_root(&b));
    }
}
