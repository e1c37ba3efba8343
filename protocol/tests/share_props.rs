//! Property tests: target/difficulty arithmetic and a validator that never panics.

use hashshift_protocol::share::{
    ExtendedJob, Job, ShareValidator, StandardJob, Submission, SubmittedVersion, Target,
    ValidatorConfig,
};
use proptest::prelude::*;

/// Big-endian bytes as a vector of base-2^32 digits, most significant first.
fn be_words(t: &Target) -> Vec<u64> {
    t.to_be_bytes()
        .chunks(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// `t * d` as base-2^32 digits (9 words: room for a carry), most significant first.
fn mul_small(t: &Target, d: u32) -> Vec<u64> {
    let mut out = vec![0u64; 9];
    let mut carry = 0u64;
    for (i, w) in be_words(t).iter().enumerate().rev() {
        let p = w * u64::from(d) + carry;
        out[i + 1] = p & 0xFFFF_FFFF;
        carry = p >> 32;
    }
    out[0] = carry;
    out
}

fn diff1_words() -> Vec<u64> {
    let mut v = vec![0u64];
    v.extend(be_words(&Target::DIFF1));
    v
}

fn add_small(mut v: Vec<u64>, d: u32) -> Vec<u64> {
    let mut carry = u64::from(d);
    for w in v.iter_mut().rev() {
        let s = *w + carry;
        *w = s & 0xFFFF_FFFF;
        carry = s >> 32;
    }
    v
}

proptest! {
    /// For integer difficulties the target is exactly floor(diff1 / d):
    /// t*d <= diff1 < (t+1)*d = t*d + d.
    #[test]
    fn integer_difficulty_is_exact_floor(d in 1u32..=u32::MAX) {
        let t = Target::from_difficulty(f64::from(d)).unwrap();
        let lo = mul_small(&t, d);
        let hi = add_small(lo.clone(), d);
        let diff1 = diff1_words();
        prop_assert!(lo <= diff1);
        prop_assert!(diff1 < hi);
    }

    /// Higher difficulty never gives an easier target.
    #[test]
    fn difficulty_to_target_is_monotonic(a in 1e-12f64..1e18, b in 1e-12f64..1e18) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(Target::from_difficulty(lo).unwrap() >= Target::from_difficulty(hi).unwrap());
    }

    /// difficulty -> target -> difficulty comes back to within f64 rounding.
    #[test]
    fn difficulty_round_trip(d in 1e-6f64..1e15) {
        let back = Target::from_difficulty(d).unwrap().to_difficulty();
        prop_assert!((back / d - 1.0).abs() < 1e-12, "{} -> {}", d, back);
    }

    /// Power-of-two difficulties map to exact shifts of diff1.
    #[test]
    fn power_of_two_difficulty_is_a_shift(e in -32i32..=200) {
        let t = Target::from_difficulty(2f64.powi(e)).unwrap();
        prop_assert_eq!(t.to_difficulty(), 2f64.powi(e));
    }

    /// Decoding any compact value never panics, and re-encoding a decoded target is stable.
    #[test]
    fn compact_round_trip(bits in any::<u32>()) {
        if let Ok(t) = Target::from_compact(bits) {
            let c = t.to_compact();
            prop_assert_eq!(Target::from_compact(c).unwrap(), t);
        }
    }

    /// Compact encoding rounds down: the decoded target never exceeds the original.
    #[test]
    fn compact_rounds_down(bytes in any::<[u8; 32]>()) {
        let t = Target::from_le_bytes(bytes);
        if let Ok(back) = Target::from_compact(t.to_compact()) {
            prop_assert!(back <= t);
        }
    }

    /// Little-endian ordering agrees with big-endian byte ordering.
    #[test]
    fn ordering_matches_big_endian_bytes(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
        let (ta, tb) = (Target::from_le_bytes(a), Target::from_le_bytes(b));
        prop_assert_eq!(ta.cmp(&tb), ta.to_be_bytes().cmp(&tb.to_be_bytes()));
        prop_assert_eq!(ta.is_met_by(&b), tb <= ta);
    }
}

fn arb_job() -> impl Strategy<Value = Job> {
    let extended = (
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<[u8; 32]>(), 0..14),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(version, prefix, suffix, branch, nbits, ntime)| {
            Job::from(ExtendedJob {
                version,
                prev_hash: [9; 32],
                coinbase_prefix: prefix,
                coinbase_suffix: suffix,
                merkle_branch: branch,
                nbits,
                ntime,
            })
        });
    let standard =
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(version, nbits, ntime)| {
            Job::Standard(StandardJob {
                version,
                prev_hash: [1; 32],
                merkle_root: [2; 32],
                nbits,
                ntime,
            })
        });
    prop_oneof![extended, standard]
}

fn arb_version() -> impl Strategy<Value = SubmittedVersion> {
    prop_oneof![
        Just(SubmittedVersion::Job),
        any::<u32>().prop_map(SubmittedVersion::RolledBits),
        any::<u32>().prop_map(SubmittedVersion::Full),
    ]
}

#[derive(Debug, Clone)]
enum Event {
    Job(u32, Job, bool),
    /// A job under a work key (re-issues share a duplicate set).
    WorkJob(u32, Job, bool, u64),
    Share(u32, Vec<u8>, u32, u32, SubmittedVersion),
    MinerTarget([u8; 32]),
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u32..6, arb_job(), any::<bool>()).prop_map(|(id, j, c)| Event::Job(id, j, c)),
        (0u32..6, arb_job(), any::<bool>(), 0u64..3)
            .prop_map(|(id, j, c, w)| Event::WorkJob(id, j, c, w)),
        (
            0u32..8,
            proptest::collection::vec(any::<u8>(), 0..12),
            any::<u32>(),
            any::<u32>(),
            arb_version()
        )
            .prop_map(|(id, en, ntime, nonce, v)| Event::Share(id, en, ntime, nonce, v)),
        any::<[u8; 32]>().prop_map(Event::MinerTarget),
    ]
}

proptest! {
    /// Arbitrary jobs, target changes and submissions never panic, and the bounds hold.
    #[test]
    fn validator_never_panics(
        events in proptest::collection::vec(arb_event(), 0..60),
        mask in any::<u32>(),
        en_size in 0usize..10,
        window in any::<u32>(),
    ) {
        let config = ValidatorConfig {
            max_jobs: 3,
            max_retired_job_ids: 4,
            max_shares_per_job: 5,
            ntime_window: window,
            version_rolling_mask: mask,
            extranonce_size: en_size,
        };
        let mut v = ShareValidator::new(config, vec![7; 3], Target::MAX);
        for event in events {
            match event {
                Event::Job(id, job, clean) => {
                    let _ = v.add_job(id, job, clean);
                }
                Event::WorkJob(id, job, clean, work) => {
                    let _ = v.add_job_for_work(id, job, clean, work);
                }
                Event::Share(job_id, extranonce, ntime, nonce, version) => {
                    let share = Submission { job_id, extranonce: &extranonce, ntime, nonce, version };
                    if let Err(reason) = v.validate(&share) {
                        prop_assert!((20..=23).contains(&reason.sv1_code()));
                        prop_assert!(!reason.sv2_error_code().is_empty());
                    }
                }
                Event::MinerTarget(bytes) => v.set_miner_target(Target::from_le_bytes(bytes)),
            }
            prop_assert!(v.active_jobs() <= 3);
            prop_assert!(v.remembered_shares() <= 15);
        }
    }
}
