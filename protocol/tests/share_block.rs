//! Real mainnet blocks rebuilt from stratum-style parts and validated as shares.
//!
//! The data verify themselves: the header hash computed from the parts must equal the known
//! block hash, so a wrong vector cannot pass.
//!
//! - Block 100,000 (4 transactions) as an **extended** job: its coinbase is split around an
//!   "extranonce" region inside the scriptSig (coinb1 | extranonce1 | extranonce2 | coinb2),
//!   the merkle branch is computed from the other three txids. Sources: the block's raw
//!   bytes and txids as carried in several public test suites (btcd-style block fixtures).
//! - Block 840,000 (the fourth halving, version-rolled header `0x2a5fe000`) as a
//!   **standard** job with BIP320 version rolling, from its published header fields.

use hashshift_protocol::share::hash::sha256d;
use hashshift_protocol::share::merkle::{merkle_branch, merkle_root};
use hashshift_protocol::share::{
    ExtendedJob, Job, Rejection, ShareValidator, StandardJob, Submission, SubmittedVersion, Target,
    ValidatorConfig,
};

/// Display (big-endian) hex to internal byte order.
fn display(hex_str: &str) -> [u8; 32] {
    let mut bytes: [u8; 32] = hex::decode(hex_str).unwrap().try_into().unwrap();
    bytes.reverse();
    bytes
}

fn to_display(hash: &[u8; 32]) -> String {
    let mut h = *hash;
    h.reverse();
    hex::encode(h)
}

const B100K_COINBASE: &str = concat!(
    "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff08",
    "044c86041b020602ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444",
    "acb83c4ec7a0e2f99dd7457516c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df",
    "276fdf84ac00000000"
);
const B100K_HEADER: &str = concat!(
    "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000",
    "006657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f33722",
    "1b4d4c86041b0f2b5710"
);
const B100K_HASH: &str = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506";

struct Block100k {
    job: ExtendedJob,
    extranonce1: Vec<u8>,
    extranonce2: Vec<u8>,
}

fn block_100k() -> Block100k {
    let coinbase = hex::decode(B100K_COINBASE).unwrap();
    assert_eq!(
        to_display(&sha256d(&coinbase)),
        "8c14f0db3df150123e6f3dbbf30f8b955a8249b62ac1d1ff16284aefa3d06d87"
    );
    // scriptSig = 04 4c86041b 02 0602 starts at byte 42 (after the length byte 0x08).
    // Split: coinb1 ends after the first push opcode; extranonce1 = the 4 pushed bytes;
    // extranonce2 = "02 06"; coinb2 = the rest.
    let script_start = 42;
    assert_eq!(coinbase[script_start - 1], 0x08);
    let coinb1 = coinbase[..script_start + 1].to_vec();
    let extranonce1 = coinbase[script_start + 1..script_start + 5].to_vec();
    let extranonce2 = coinbase[script_start + 5..script_start + 7].to_vec();
    let coinb2 = coinbase[script_start + 7..].to_vec();
    assert_eq!(hex::encode(&extranonce1), "4c86041b");
    assert_eq!(hex::encode(&extranonce2), "0206");

    let others = [
        display("fff2525b8931402dd09222c50775608f75787bd2b87e56995a7bdd30f79702c4"),
        display("6359f0868171b1d194cbee1af2f16ea598ae8fad666d9b012c8ed2b79a236ec4"),
        display("e9a66845e05d5abc0ad04ec80f774a7e585c6e8db975962d069a522137b80c1d"),
    ];
    let branch = merkle_branch(&others);
    assert_eq!(branch.len(), 2);
    Block100k {
        job: ExtendedJob {
            version: 1,
            prev_hash: display("000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250"),
            coinbase_prefix: coinb1,
            coinbase_suffix: coinb2,
            merkle_branch: branch,
            nbits: 0x1b04864c,
            // A pool's job time is at or before the block's timestamp.
            ntime: 1_293_623_000,
        },
        extranonce1,
        extranonce2,
    }
}

const B100K_NTIME: u32 = 1_293_623_863;
const B100K_NONCE: u32 = 274_148_111;

#[test]
fn block_100000_merkle_root_from_branch() {
    let b = block_100k();
    let coinbase = b.job.coinbase(&b.extranonce1, &b.extranonce2);
    assert_eq!(coinbase, hex::decode(B100K_COINBASE).unwrap());
    let root = merkle_root(&sha256d(&coinbase), &b.job.merkle_branch);
    assert_eq!(
        to_display(&root),
        "f3e94742aca4b5ef85488dc37c06c3282295ffec960994b2c0d5ac2a25a95766"
    );
    let header = b
        .job
        .header(&b.extranonce1, &b.extranonce2, B100K_NTIME, B100K_NONCE, 1);
    assert_eq!(hex::encode(header), B100K_HEADER);
}

#[test]
fn block_100000_validates_as_a_block() {
    let b = block_100k();
    let config = ValidatorConfig {
        extranonce_size: 2,
        ..ValidatorConfig::default()
    };
    let mut v = ShareValidator::new(config, b.extranonce1.clone(), Target::DIFF1);
    v.set_upstream_target(Target::from_difficulty(1000.0).unwrap());
    v.add_job(7, Job::from(b.job.clone()), true).unwrap();

    let share = Submission {
        job_id: 7,
        extranonce: &b.extranonce2,
        ntime: B100K_NTIME,
        nonce: B100K_NONCE,
        version: SubmittedVersion::Job,
    };
    let accepted = v.validate(&share).unwrap();
    assert_eq!(to_display(&accepted.hash), B100K_HASH);
    assert_eq!(hex::encode(accepted.header), B100K_HEADER);
    assert!(accepted.is_block);
    assert!(accepted.meets_upstream);
    assert_eq!(accepted.credited_difficulty, 1.0);
    // The network difficulty at 0x1b04864c is 14484.16; the block's hash beat it.
    let network = Target::from_compact(0x1b04864c).unwrap().to_difficulty();
    assert!((network - 14_484.162_361_225_4).abs() < 1e-6);
    assert!(accepted.difficulty >= network);

    // Submitting it again is a duplicate.
    assert_eq!(v.validate(&share), Err(Rejection::Duplicate));
    // Another nonce is just a (low difficulty) miss.
    let miss = Submission {
        nonce: B100K_NONCE + 1,
        ..share
    };
    assert!(matches!(
        v.validate(&miss),
        Err(Rejection::LowDifficulty { .. })
    ));
    // A different extranonce2 changes the coinbase, hence the hash.
    let other_en2 = [0x02, 0x07];
    let other = Submission {
        extranonce: &other_en2,
        ..share
    };
    assert!(matches!(
        v.validate(&other),
        Err(Rejection::LowDifficulty { .. })
    ));
}

const B840K_HASH: &str = "0000000000000000000320283a032748cef8227873ff4872689bf23f1cda83a5";

fn block_840k_job() -> StandardJob {
    StandardJob {
        version: 0x2000_0000,
        prev_hash: display("0000000000000000000172014ba58d66455762add0512355ad651207918494ab"),
        merkle_root: display("031b417c3a1828ddf3d6527fc210daafcc9218e81f98257f88d4d43bd7a5894f"),
        nbits: 0x17034219,
        ntime: 1_713_571_000,
    }
}

/// Block 840,000's own header as a share on job 1 of [`block_840k_job`], with the full rolled
/// version 0x2a5fe000 (SV2 style).
fn block_840k_share() -> Submission<'static> {
    Submission {
        job_id: 1,
        extranonce: &[],
        ntime: 1_713_571_767,
        nonce: 0xea63_987d,
        version: SubmittedVersion::Full(0x2a5f_e000),
    }
}

#[test]
fn block_840000_validates_with_version_rolling() {
    let config = ValidatorConfig {
        version_rolling_mask: 0x1fff_e000,
        extranonce_size: 0,
        ..ValidatorConfig::default()
    };
    let mut v = ShareValidator::new(
        config,
        Vec::new(),
        Target::from_difficulty(65536.0).unwrap(),
    );
    v.add_job(1, Job::Standard(block_840k_job()), true).unwrap();

    // SV2 style: the full rolled version 0x2a5fe000.
    let share = block_840k_share();
    let accepted = v.validate(&share).unwrap();
    assert_eq!(to_display(&accepted.hash), B840K_HASH);
    assert!(accepted.is_block);
    assert_eq!(&accepted.header[..4], &[0x00, 0xe0, 0x5f, 0x2a]);

    // SV1 style (BIP310): only the rolled bits. Same header, so now a duplicate.
    let sv1 = Submission {
        version: SubmittedVersion::RolledBits(0x0a5f_e000),
        ..share
    };
    assert_eq!(v.validate(&sv1), Err(Rejection::Duplicate));

    // Without the rolled bits the header differs: a miss.
    let unrolled = Submission {
        version: SubmittedVersion::Job,
        ..share
    };
    assert!(matches!(
        v.validate(&unrolled),
        Err(Rejection::LowDifficulty { .. })
    ));
}

#[test]
fn block_840000_needs_the_mask() {
    // With no rolling negotiated, the real block's version is refused before hashing.
    let mut v = ShareValidator::new(ValidatorConfig::default(), Vec::new(), Target::MAX);
    v.add_job(1, Job::Standard(block_840k_job()), true).unwrap();
    let share = block_840k_share();
    let err = v.validate(&share).unwrap_err();
    assert_eq!(
        err,
        Rejection::VersionBitsOutsideMask {
            version: 0x2a5f_e000,
            mask: 0
        }
    );
    assert_eq!(err.sv2_error_code(), "version-rolling-not-allowed");
}
