//! Mining jobs and the block header a share implies.
//!
//! Two kinds of job, as the protocols define them:
//!
//! - [`ExtendedJob`]: SV1 `mining.notify` or SV2 `NewExtendedMiningJob` (sv2-spec 05) joined
//!   with its `SetNewPrevHash`. The miner rolls an extranonce inside the coinbase, so each
//!   share rebuilds `coinbase = coinb1 ‖ extranonce_prefix ‖ extranonce ‖ coinb2`, its txid,
//!   the merkle root and the header.
//! - [`StandardJob`]: SV2 `NewMiningJob` (header-only mining) joined with `SetNewPrevHash`:
//!   the merkle root is given, a share only supplies ntime, nonce and version.
//!
//! Header layout (80 bytes): `version LE ‖ prev_hash ‖ merkle_root ‖ ntime LE ‖ nbits LE ‖
//! nonce LE`. `prev_hash` and `merkle_root` are in header (internal) byte order; the SV1 layer
//! undoes stratum's word-swapped prevhash before building a job. Integers are plain `u32`
//! values: the SV1 layer parses stratum's big-endian hex into them.
//!
//! [`PreparedJob`] holds what is per job and per channel: the SHA-256 midstate over the
//! 64-byte blocks of `coinb1 ‖ extranonce_prefix`, so a share hashes only the rest.

use super::hash::{Sha256Engine, sha256d, sha256d_80};
use super::merkle::merkle_root;
use super::target::{Target, TargetError};

/// An extended job: the coinbase is rebuilt per share (SV1 notify / SV2 extended job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtendedJob {
    /// Block version the pool asked for (before version rolling).
    pub version: u32,
    /// Previous block hash in header byte order.
    pub prev_hash: [u8; 32],
    /// Coinbase bytes before the extranonces (`coinb1`, SV2 `coinbase_tx_prefix`).
    pub coinbase_prefix: Vec<u8>,
    /// Coinbase bytes after the extranonces (`coinb2`, SV2 `coinbase_tx_suffix`).
    pub coinbase_suffix: Vec<u8>,
    /// Merkle branch from the coinbase to the root, internal byte order.
    pub merkle_branch: Vec<[u8; 32]>,
    /// Compact network target.
    pub nbits: u32,
    /// Job time (SV1 `ntime`, SV2 `min_ntime`): the earliest ntime a share may carry.
    pub ntime: u32,
}

/// A standard job: header-only mining with a fixed merkle root (SV2 `NewMiningJob`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandardJob {
    /// Block version the pool asked for (before version rolling).
    pub version: u32,
    /// Previous block hash in header byte order (from `SetNewPrevHash`).
    pub prev_hash: [u8; 32],
    /// Merkle root in header byte order.
    pub merkle_root: [u8; 32],
    /// Compact network target (from `SetNewPrevHash`).
    pub nbits: u32,
    /// Earliest ntime a share may carry (`SetNewPrevHash.min_ntime`).
    pub ntime: u32,
}

/// A job of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Job {
    /// Coinbase rebuilt per share. Shared: a proxy hands the same job to thousands of
    /// miners, each with its own validator, and must not copy the coinbase for each.
    Extended(std::sync::Arc<ExtendedJob>),
    /// Merkle root fixed by the pool.
    Standard(StandardJob),
}

impl Job {
    /// Block version before rolling.
    pub fn version(&self) -> u32 {
        match self {
            Job::Extended(j) => j.version,
            Job::Standard(j) => j.version,
        }
    }

    /// Compact network target.
    pub fn nbits(&self) -> u32 {
        match self {
            Job::Extended(j) => j.nbits,
            Job::Standard(j) => j.nbits,
        }
    }

    /// Earliest allowed ntime.
    pub fn ntime(&self) -> u32 {
        match self {
            Job::Extended(j) => j.ntime,
            Job::Standard(j) => j.ntime,
        }
    }
}

impl From<ExtendedJob> for Job {
    fn from(job: ExtendedJob) -> Self {
        Job::Extended(std::sync::Arc::new(job))
    }
}

impl From<StandardJob> for Job {
    fn from(job: StandardJob) -> Self {
        Job::Standard(job)
    }
}

/// Writes the 80-byte header.
pub fn build_header(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 80] {
    let mut header = [0u8; 80];
    header[0..4].copy_from_slice(&version.to_le_bytes());
    header[4..36].copy_from_slice(prev_hash);
    header[36..68].copy_from_slice(merkle_root);
    header[68..72].copy_from_slice(&ntime.to_le_bytes());
    header[72..76].copy_from_slice(&nbits.to_le_bytes());
    header[76..80].copy_from_slice(&nonce.to_le_bytes());
    header
}

impl ExtendedJob {
    /// The full coinbase transaction for one share (allocates; for tests and block
    /// submission, not the hot path).
    pub fn coinbase(&self, extranonce_prefix: &[u8], extranonce: &[u8]) -> Vec<u8> {
        let mut tx = Vec::with_capacity(
            self.coinbase_prefix.len()
                + extranonce_prefix.len()
                + extranonce.len()
                + self.coinbase_suffix.len(),
        );
        tx.extend_from_slice(&self.coinbase_prefix);
        tx.extend_from_slice(extranonce_prefix);
        tx.extend_from_slice(extranonce);
        tx.extend_from_slice(&self.coinbase_suffix);
        tx
    }

    /// The header a share implies, computed the plain way (no midstate).
    pub fn header(
        &self,
        extranonce_prefix: &[u8],
        extranonce: &[u8],
        ntime: u32,
        nonce: u32,
        version: u32,
    ) -> [u8; 80] {
        let txid = sha256d(&self.coinbase(extranonce_prefix, extranonce));
        let root = merkle_root(&txid, &self.merkle_branch);
        build_header(version, &self.prev_hash, &root, ntime, self.nbits, nonce)
    }
}

impl StandardJob {
    /// The header a share implies.
    pub fn header(&self, ntime: u32, nonce: u32, version: u32) -> [u8; 80] {
        build_header(
            version,
            &self.prev_hash,
            &self.merkle_root,
            ntime,
            self.nbits,
            nonce,
        )
    }
}

/// A job with its per-channel precomputation: network target and coinbase midstate.
#[derive(Clone, Debug)]
pub struct PreparedJob {
    job: Job,
    /// SHA-256 state after `coinb1 ‖ extranonce_prefix` (extended jobs only).
    coinbase_midstate: Sha256Engine,
}

impl PreparedJob {
    /// Precomputes `job` for a channel whose extranonce prefix (SV1 extranonce1) is
    /// `extranonce_prefix`. Fails if the job's nBits is not a valid target.
    pub fn new(job: Job, extranonce_prefix: &[u8]) -> Result<Self, TargetError> {
        // Checked here so that `network_target` cannot fail later; not stored, since a
        // validator keeps a prepared job per miner per job and 32 bytes each add up.
        Target::from_compact(job.nbits())?;
        let mut coinbase_midstate = Sha256Engine::new();
        if let Job::Extended(ext) = &job {
            coinbase_midstate.update(&ext.coinbase_prefix);
            coinbase_midstate.update(extranonce_prefix);
        }
        Ok(PreparedJob {
            job,
            coinbase_midstate,
        })
    }

    /// The job.
    pub fn job(&self) -> &Job {
        &self.job
    }

    /// The network target decoded from the job's nBits.
    pub fn network_target(&self) -> Target {
        // nBits was checked in `new`; ZERO (met by no hash) is unreachable.
        Target::from_compact(self.job.nbits()).unwrap_or(Target::ZERO)
    }

    /// Re-absorbs the coinbase prefix for a new extranonce prefix (SV2
    /// `SetExtranoncePrefix`).
    pub fn set_extranonce_prefix(&mut self, extranonce_prefix: &[u8]) {
        if let Job::Extended(ext) = &self.job {
            let mut engine = Sha256Engine::new();
            engine.update(&ext.coinbase_prefix);
            engine.update(extranonce_prefix);
            self.coinbase_midstate = engine;
        }
    }

    /// The header for a share, using the cached midstate. `extranonce` is ignored for
    /// standard jobs. No allocation.
    #[inline]
    pub fn header(&self, extranonce: &[u8], ntime: u32, nonce: u32, version: u32) -> [u8; 80] {
        match &self.job {
            Job::Extended(ext) => {
                let mut engine = self.coinbase_midstate;
                engine.update(extranonce);
                engine.update(&ext.coinbase_suffix);
                let txid = engine.finish_double();
                let root = merkle_root(&txid, &ext.merkle_branch);
                build_header(version, &ext.prev_hash, &root, ntime, ext.nbits, nonce)
            }
            Job::Standard(std) => std.header(ntime, nonce, version),
        }
    }

    /// The header hash (sha256d, internal byte order) for a share.
    #[inline]
    pub fn hash(&self, extranonce: &[u8], ntime: u32, nonce: u32, version: u32) -> [u8; 32] {
        sha256d_80(&self.header(extranonce, ntime, nonce, version))
    }
}

/// BIP320's general-purpose version bits: what a miner may roll, what the proxy asks pools
/// for, and what an SV2 job's `version_rolling_allowed` lets a miner roll.
pub const BIP320_VERSION_BITS: u32 = 0x1fff_e000;

/// Whether SV2 extended jobs on a pool session with this version mask may say
/// `version_rolling_allowed`. The flag has no mask: "if set to True, the general purpose bits
/// of version (as specified in BIP320) can be freely manipulated by the downstream node"
/// (SV2 Mining Protocol, `NewExtendedMiningJob`). So it is only true when the pool granted
/// every one of those bits; with a narrower mask, SV2 miners would roll bits the pool
/// rejects, so they must keep the job's version.
pub fn allows_bip320_rolling(mask: u32) -> bool {
    mask & BIP320_VERSION_BITS == BIP320_VERSION_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sv2_rolling_needs_every_bip320_bit() {
        assert!(allows_bip320_rolling(0x1fff_e000));
        assert!(allows_bip320_rolling(0xffff_ffff));
        assert!(
            !allows_bip320_rolling(0x00ff_e000),
            "narrower: bits 24..28 missing"
        );
        assert!(!allows_bip320_rolling(0x1fff_c000), "bit 13 missing");
        assert!(!allows_bip320_rolling(0));
    }

    fn sample_job() -> ExtendedJob {
        ExtendedJob {
            version: 0x2000_0000,
            prev_hash: [7; 32],
            coinbase_prefix: (0..150u8).collect(),
            coinbase_suffix: (0..90u8).rev().collect(),
            merkle_branch: vec![[1; 32], [2; 32], [3; 32]],
            nbits: 0x1703_4219,
            ntime: 1_700_000_000,
        }
    }

    #[test]
    fn header_layout_is_little_endian() {
        let h = build_header(
            0x2000_0000,
            &[0xAA; 32],
            &[0xBB; 32],
            0x6623_07b7,
            0x1703_4219,
            1,
        );
        assert_eq!(&h[0..4], &[0, 0, 0, 0x20]);
        assert_eq!(&h[4..36], &[0xAA; 32]);
        assert_eq!(&h[36..68], &[0xBB; 32]);
        assert_eq!(&h[68..72], &[0xb7, 0x07, 0x23, 0x66]);
        assert_eq!(&h[72..76], &[0x19, 0x42, 0x03, 0x17]);
        assert_eq!(&h[76..80], &[1, 0, 0, 0]);
    }

    #[test]
    fn midstate_path_equals_plain_path() {
        let job = sample_job();
        for prefix_len in [0usize, 1, 4, 8] {
            let prefix: Vec<u8> = (0..prefix_len as u8).map(|b| b ^ 0x33).collect();
            let prepared = PreparedJob::new(job.clone().into(), &prefix).unwrap();
            for en2 in [&[][..], &[1, 2, 3, 4], &[9; 8]] {
                let fast = prepared.header(en2, job.ntime + 5, 42, 0x2000_4000);
                let slow = job.header(&prefix, en2, job.ntime + 5, 42, 0x2000_4000);
                assert_eq!(fast, slow);
            }
        }
    }

    #[test]
    fn changing_the_extranonce_prefix_recomputes_the_midstate() {
        let job = sample_job();
        let mut prepared = PreparedJob::new(job.clone().into(), &[1, 2, 3, 4]).unwrap();
        prepared.set_extranonce_prefix(&[5, 6, 7, 8]);
        assert_eq!(
            prepared.header(&[0; 4], job.ntime, 0, job.version),
            job.header(&[5, 6, 7, 8], &[0; 4], job.ntime, 0, job.version)
        );
    }

    #[test]
    fn invalid_nbits_is_rejected() {
        let mut job = sample_job();
        job.nbits = 0x0480_0001;
        assert!(PreparedJob::new(job.into(), &[]).is_err());
    }

    #[test]
    fn standard_job_header() {
        let job = StandardJob {
            version: 0x2000_0000,
            prev_hash: [1; 32],
            merkle_root: [2; 32],
            nbits: 0x1d00_ffff,
            ntime: 10,
        };
        let prepared = PreparedJob::new(job.clone().into(), &[]).unwrap();
        assert_eq!(prepared.network_target(), Target::DIFF1);
        assert_eq!(
            prepared.header(&[0xFF], 11, 12, 0x2000_0000),
            build_header(0x2000_0000, &[1; 32], &[2; 32], 11, 0x1d00_ffff, 12)
        );
    }
}
