//! Targets, difficulty, header rebuild and share validation (BIP310, BIP320, sv2-spec 05).
//!
//! | module | role |
//! |---|---|
//! | [`target`] | 256-bit [`Target`], pool difficulty, compact nBits, hashrate helpers |
//! | [`hash`] | sha256d on the raw compression function, midstates |
//! | [`merkle`] | merkle root from a branch, branch from a transaction list |
//! | [`job`] | extended / standard jobs, header rebuild with per-job precomputation |
//! | [`validate`] | the per-channel [`ShareValidator`] |
//! | [`rejection`] | typed [`Rejection`] reasons and their SV1 / SV2 error codes |
//!
//! Byte order: hashes (prev hash, txids, merkle nodes, header hash) are kept as computed,
//! the "internal" order; block explorers print them reversed. Targets are 32 bytes
//! little-endian (SV2 `U256`), and a hash meets a target when, read little-endian, it is not
//! greater. Nothing here performs I/O or reads a clock.

pub mod hash;
pub mod job;
pub mod merkle;
pub mod rejection;
pub mod target;
mod u256;
pub mod validate;

pub use job::{
    BIP320_VERSION_BITS, ExtendedJob, Job, PreparedJob, StandardJob, allows_bip320_rolling,
};
pub use rejection::Rejection;
pub use target::{Target, TargetError};
pub use validate::{
    AcceptedShare, JobError, ShareValidator, Submission, SubmittedVersion, ValidatorConfig,
};
