//! Every rejection reason of the share validator, and its accounting rules.

use hashshift_protocol::share::{
    ExtendedJob, Job, Rejection, ShareValidator, StandardJob, Submission, SubmittedVersion, Target,
    ValidatorConfig,
};

const NTIME: u32 = 1_700_000_000;
const MASK: u32 = 0x1fff_e000;

fn job(nbits: u32) -> Job {
    Job::from(ExtendedJob {
        version: 0x2000_0000,
        prev_hash: [3; 32],
        coinbase_prefix: vec![1; 70],
        coinbase_suffix: vec![2; 60],
        merkle_branch: vec![[4; 32], [5; 32]],
        nbits,
        ntime: NTIME,
    })
}

/// Regtest's nBits: about half of all hashes meet it.
const EASY_NBITS: u32 = 0x207f_ffff;
/// A real network target: no test share meets it.
const HARD_NBITS: u32 = 0x1703_4219;

fn config() -> ValidatorConfig {
    ValidatorConfig {
        version_rolling_mask: MASK,
        extranonce_size: 4,
        ..ValidatorConfig::default()
    }
}

/// A validator for extranonce1 `EE EE EE EE` with `config`, the easiest target and no job yet.
fn no_jobs(config: ValidatorConfig) -> ShareValidator {
    ShareValidator::new(config, vec![0xEE; 4], Target::MAX)
}

fn validator(target: Target) -> ShareValidator {
    let mut v = ShareValidator::new(config(), vec![0xEE; 4], target);
    v.add_job(1, job(HARD_NBITS), true).unwrap();
    v
}

fn share(job_id: u32, nonce: u32) -> Submission<'static> {
    Submission {
        job_id,
        extranonce: &[0, 0, 0, 1],
        ntime: NTIME,
        nonce,
        version: SubmittedVersion::Job,
    }
}

#[test]
fn accepted_share_reports_its_work() {
    let mut v = validator(Target::MAX);
    let ok = v.validate(&share(1, 1)).unwrap();
    assert!(!ok.is_block);
    assert!(ok.meets_upstream); // upstream target starts equal to the miner target
    assert_eq!(ok.credited_difficulty, Target::MAX.to_difficulty());
    assert!(ok.difficulty > 0.0);
    assert_eq!(v.remembered_shares(), 1);
}

#[test]
fn low_difficulty() {
    let mut v = validator(Target::DIFF1);
    match v.validate(&share(1, 1)) {
        Err(Rejection::LowDifficulty { achieved, required }) => {
            assert_eq!(required, 1.0);
            assert!(achieved < 1.0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(v.remembered_shares(), 0);
}

#[test]
fn duplicate() {
    let mut v = validator(Target::MAX);
    v.validate(&share(1, 9)).unwrap();
    let err = v.validate(&share(1, 9)).unwrap_err();
    assert_eq!(err, Rejection::Duplicate);
    assert_eq!(err.sv1_code(), 22);
    assert_eq!(err.sv2_error_code(), "duplicate-share");
    // Same nonce, other extranonce: a different header, not a duplicate.
    let other = Submission {
        extranonce: &[0, 0, 0, 2],
        ..share(1, 9)
    };
    v.validate(&other).unwrap();
}

#[test]
fn stale_after_clean_job_and_unknown_job() {
    let mut v = validator(Target::MAX);
    v.validate(&share(1, 1)).unwrap();
    v.add_job(2, job(HARD_NBITS), true).unwrap();
    assert_eq!(v.active_jobs(), 1);
    assert_eq!(v.remembered_shares(), 0, "retired job's set freed");
    let err = v.validate(&share(1, 2)).unwrap_err();
    assert_eq!(err, Rejection::StaleJob { job_id: 1 });
    assert_eq!((err.sv1_code(), err.sv2_error_code()), (21, "stale-share"));
    let err = v.validate(&share(99, 2)).unwrap_err();
    assert_eq!(err, Rejection::UnknownJob { job_id: 99 });
    assert_eq!(
        (err.sv1_code(), err.sv2_error_code()),
        (21, "invalid-job-id")
    );
    v.validate(&share(2, 2)).unwrap();
}

#[test]
fn non_clean_jobs_stay_valid_up_to_the_window() {
    let mut v = no_jobs(ValidatorConfig {
        max_jobs: 2,
        ..config()
    });
    v.add_job(1, job(HARD_NBITS), false).unwrap();
    v.add_job(2, job(HARD_NBITS), false).unwrap();
    v.validate(&share(1, 1)).unwrap();
    v.add_job(3, job(HARD_NBITS), false).unwrap(); // evicts job 1
    assert_eq!(v.active_jobs(), 2);
    assert_eq!(
        v.validate(&share(1, 2)),
        Err(Rejection::StaleJob { job_id: 1 })
    );
    v.validate(&share(2, 2)).unwrap();
    v.validate(&share(3, 2)).unwrap();
}

#[test]
fn retired_ids_are_forgotten_within_bounds() {
    let mut v = no_jobs(ValidatorConfig {
        max_retired_job_ids: 2,
        ..config()
    });
    for id in 1..=4 {
        v.add_job(id, job(HARD_NBITS), true).unwrap();
    }
    // Retired 1, 2, 3; only the last two are remembered.
    assert_eq!(
        v.validate(&share(1, 0)),
        Err(Rejection::UnknownJob { job_id: 1 })
    );
    assert_eq!(
        v.validate(&share(2, 0)),
        Err(Rejection::StaleJob { job_id: 2 })
    );
    assert_eq!(
        v.validate(&share(3, 0)),
        Err(Rejection::StaleJob { job_id: 3 })
    );
}

#[test]
fn ntime_window() {
    let mut v = validator(Target::MAX);
    let at = |ntime| Submission {
        ntime,
        ..share(1, ntime)
    };
    v.validate(&at(NTIME)).unwrap();
    v.validate(&at(NTIME + 7200)).unwrap();
    let err = v.validate(&at(NTIME - 1)).unwrap_err();
    assert_eq!(
        err,
        Rejection::NtimeOutOfRange {
            ntime: NTIME - 1,
            min: NTIME,
            max: NTIME + 7200
        }
    );
    assert_eq!(
        (err.sv1_code(), err.sv2_error_code()),
        (20, "invalid-share")
    );
    assert!(matches!(
        v.validate(&at(NTIME + 7201)),
        Err(Rejection::NtimeOutOfRange { .. })
    ));
}

#[test]
fn version_rolling_rules() {
    let mut v = validator(Target::MAX);
    // SV1 bits inside the mask: accepted, and they land in the header.
    let rolled = Submission {
        version: SubmittedVersion::RolledBits(0x0000_6000),
        ..share(1, 1)
    };
    let ok = v.validate(&rolled).unwrap();
    assert_eq!(
        u32::from_le_bytes(ok.header[..4].try_into().unwrap()),
        0x2000_6000
    );
    // SV1 bits outside the mask.
    let bad = Submission {
        version: SubmittedVersion::RolledBits(0x0000_1000),
        ..share(1, 2)
    };
    let err = v.validate(&bad).unwrap_err();
    assert_eq!(
        err,
        Rejection::VersionBitsOutsideMask {
            version: 0x1000,
            mask: MASK
        }
    );
    assert_eq!(err.sv1_code(), 20);
    assert_eq!(err.sv2_error_code(), "invalid-non-rollable-version-bit");
    // SV2 full version: same as the job outside the mask.
    let full = Submission {
        version: SubmittedVersion::Full(0x3fff_e000),
        ..share(1, 3)
    };
    v.validate(&full).unwrap();
    let full_bad = Submission {
        version: SubmittedVersion::Full(0x6000_0000),
        ..share(1, 4)
    };
    assert!(matches!(
        v.validate(&full_bad),
        Err(Rejection::VersionBitsOutsideMask { .. })
    ));
}

#[test]
fn extranonce_size() {
    let mut v = validator(Target::MAX);
    let short = Submission {
        extranonce: &[1, 2, 3],
        ..share(1, 1)
    };
    let err = v.validate(&short).unwrap_err();
    assert_eq!(
        err,
        Rejection::WrongExtranonceSize {
            expected: 4,
            got: 3
        }
    );
    assert_eq!(
        (err.sv1_code(), err.sv2_error_code()),
        (20, "bad-extranonce-size")
    );
    // Standard jobs carry no extranonce; whatever is passed is ignored.
    v.add_job(
        2,
        Job::Standard(StandardJob {
            version: 0x2000_0000,
            prev_hash: [0; 32],
            merkle_root: [1; 32],
            nbits: HARD_NBITS,
            ntime: NTIME,
        }),
        false,
    )
    .unwrap();
    v.validate(&Submission {
        extranonce: &[],
        ..share(2, 1)
    })
    .unwrap();
}

#[test]
fn duplicate_memory_is_bounded() {
    let mut v = no_jobs(ValidatorConfig {
        max_shares_per_job: 3,
        ..config()
    });
    v.add_job(1, job(HARD_NBITS), true).unwrap();
    for nonce in 0..3 {
        v.validate(&share(1, nonce)).unwrap();
    }
    // A repeat is still caught as a duplicate; a new share finds the set full.
    assert_eq!(v.validate(&share(1, 0)), Err(Rejection::Duplicate));
    assert_eq!(v.validate(&share(1, 3)), Err(Rejection::TooManyShares));
    assert_eq!(v.remembered_shares(), 3);
    // A new job starts a fresh set.
    v.add_job(2, job(HARD_NBITS), false).unwrap();
    v.validate(&share(2, 3)).unwrap();
}

#[test]
fn vardiff_credits_the_target_the_job_was_sent_with() {
    let mut v = validator(Target::MAX); // job 1 at the easiest target
    v.set_miner_target(Target::DIFF1);
    v.add_job(2, job(HARD_NBITS), false).unwrap();
    assert_eq!(v.miner_target(), Target::DIFF1);
    // Job 1 keeps its easy target.
    let ok = v.validate(&share(1, 5)).unwrap();
    assert_eq!(ok.credited_difficulty, Target::MAX.to_difficulty());
    // The same work on job 2 is judged at difficulty 1.
    assert!(matches!(
        v.validate(&share(2, 5)),
        Err(Rejection::LowDifficulty { required, .. }) if required == 1.0
    ));
}

#[test]
fn a_block_is_never_thrown_away() {
    // Miner target harder than the network target (absurd, but must not lose a block).
    let mut v = ShareValidator::new(config(), vec![0xEE; 4], Target::from_le_bytes([0; 32]));
    v.set_upstream_target(Target::DIFF1);
    v.add_job(1, job(EASY_NBITS), true).unwrap();
    let network = Target::from_compact(EASY_NBITS).unwrap();
    let mut blocks = 0;
    for nonce in 0..64 {
        match v.validate(&share(1, nonce)) {
            Ok(ok) => {
                assert!(ok.is_block);
                assert!(network.is_met_by(&ok.hash));
                assert_eq!(ok.meets_upstream, Target::DIFF1.is_met_by(&ok.hash));
                blocks += 1;
            }
            Err(Rejection::LowDifficulty { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    // About half of all hashes meet regtest's target.
    assert!((10..=54).contains(&blocks), "{blocks}");
}

#[test]
fn meets_upstream_tracks_the_current_upstream_target() {
    let mut v = validator(Target::MAX);
    v.set_upstream_target(Target::from_le_bytes([0; 32]));
    assert!(!v.validate(&share(1, 1)).unwrap().meets_upstream);
    v.set_upstream_target(Target::MAX);
    assert!(v.validate(&share(1, 2)).unwrap().meets_upstream);
}

#[test]
fn new_extranonce_prefix_changes_the_coinbase() {
    let mut v = validator(Target::MAX);
    let first = v.validate(&share(1, 1)).unwrap();
    v.set_extranonce_prefix(vec![0xDD; 4]);
    assert_eq!(v.extranonce_prefix(), &[0xDD; 4]);
    let second = v.validate(&share(1, 1)).unwrap();
    assert_ne!(first.hash, second.hash);
    // The header matches a plain rebuild with the new prefix.
    let Job::Extended(ext) = job(HARD_NBITS) else {
        unreachable!()
    };
    assert_eq!(
        second.header,
        ext.header(&[0xDD; 4], &[0, 0, 0, 1], NTIME, 1, 0x2000_0000)
    );
}

#[test]
fn invalid_nbits_job_is_refused_and_changes_nothing() {
    let mut v = validator(Target::MAX);
    assert!(v.add_job(2, job(0x0480_0001), true).is_err());
    assert_eq!(v.active_jobs(), 1);
    v.validate(&share(1, 1)).unwrap();
}

#[test]
fn a_reissue_of_the_same_work_shares_its_duplicate_set() {
    // Job 1 at difficulty 1; the miner asks for less and gets the same work as job 2.
    let mut v = no_jobs(config());
    v.add_job_for_work(1, job(HARD_NBITS), true, 42).unwrap();
    let first = v.validate(&share(1, 9)).unwrap();
    v.set_miner_target(Target::MAX);
    v.add_job_for_work(2, job(HARD_NBITS), false, 42).unwrap();
    assert_eq!(v.validate(&share(2, 9)), Err(Rejection::Duplicate));
    assert_eq!(v.remembered_shares(), 1, "one set for both issues");
    // A clean re-issue of the same work keeps the set too.
    v.add_job_for_work(3, job(HARD_NBITS), true, 42).unwrap();
    assert_eq!(v.validate(&share(3, 9)), Err(Rejection::Duplicate));
    // Other work (another upstream job, or one after a failover) is judged on its own.
    v.add_job_for_work(4, job(HARD_NBITS), false, 43).unwrap();
    let other = v.validate(&share(4, 9)).unwrap();
    assert_eq!(
        other.hash, first.hash,
        "same header, different upstream job"
    );
    assert_eq!(v.remembered_shares(), 2);
}

#[test]
fn a_work_set_lives_until_its_last_job_retires() {
    let mut v = no_jobs(ValidatorConfig {
        max_jobs: 2,
        ..config()
    });
    v.add_job_for_work(1, job(HARD_NBITS), true, 7).unwrap();
    v.validate(&share(1, 1)).unwrap();
    v.add_job_for_work(2, job(HARD_NBITS), false, 7).unwrap();
    // Job 3 evicts job 1; job 2 still holds work 7's set.
    v.add_job_for_work(3, job(HARD_NBITS), false, 8).unwrap();
    assert_eq!(
        v.validate(&share(1, 1)),
        Err(Rejection::StaleJob { job_id: 1 })
    );
    assert_eq!(v.validate(&share(2, 1)), Err(Rejection::Duplicate));
    // Job 4 evicts job 2: work 7 is gone, its set freed.
    v.add_job_for_work(4, job(HARD_NBITS), false, 8).unwrap();
    assert_eq!(v.remembered_shares(), 0);
    // Replacing an active id under other work frees the old set as well.
    v.validate(&share(4, 2)).unwrap();
    v.add_job(4, job(HARD_NBITS), false).unwrap();
    v.add_job(5, job(HARD_NBITS), false).unwrap();
    assert_eq!(v.remembered_shares(), 0);
}

#[test]
fn plain_jobs_keep_sets_of_their_own() {
    let mut v = validator(Target::MAX);
    v.validate(&share(1, 4)).unwrap();
    v.add_job(2, job(HARD_NBITS), false).unwrap();
    v.validate(&share(2, 4)).unwrap();
    assert_eq!(v.remembered_shares(), 2);
}
