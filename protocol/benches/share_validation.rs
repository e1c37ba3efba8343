//! Share validation throughput (one share per iteration).
//!
//! `cargo bench -p hashshift-protocol --bench share_validation -- --warm-up-time 1 --measurement-time 5`
//!
//! Every validated share has a fresh nonce, so none is a duplicate and each one is inserted
//! into the job's duplicate set. To keep memory flat the benchmark sends a new clean job every
//! [`ROTATE_EVERY`] shares, which retires the previous job and frees its set (the same thing
//! a pool's job cadence does in production); the set never exceeds `ROTATE_EVERY` entries,
//! well under the validator's `max_shares_per_job`.
//!
//! Two groups run the same benchmarks: `share_validation` measures wall-clock time (the
//! figure of record), `share_validation_cpu` measures the thread's CPU time from
//! `/proc/thread-self/schedstat`, which stays meaningful when other processes share the cores.

use std::hint::black_box;

use std::time::Instant;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hashshift_protocol::share::hash::sha256d_80;
use hashshift_protocol::share::{
    ExtendedJob, Job, ShareValidator, StandardJob, Submission, SubmittedVersion, Target,
    ValidatorConfig,
};

const ROTATE_EVERY: u32 = 4096;

fn extended_job(ntime: u32) -> Job {
    // ~250-byte coinbase: 90-byte prefix, 4-byte extranonce prefix, 8-byte extranonce,
    // 150-byte suffix; 12-step merkle branch (a block of ~2,000-4,000 transactions).
    Job::from(ExtendedJob {
        version: 0x2000_0000,
        prev_hash: [0x11; 32],
        coinbase_prefix: (0..90u8).collect(),
        coinbase_suffix: (0..150u8).map(|b| b.wrapping_mul(7)).collect(),
        merkle_branch: (0..12u8).map(|i| [i; 32]).collect(),
        nbits: 0x1703_4219,
        ntime,
    })
}

fn standard_job(ntime: u32) -> Job {
    Job::Standard(StandardJob {
        version: 0x2000_0000,
        prev_hash: [0x11; 32],
        merkle_root: [0x22; 32],
        nbits: 0x1703_4219,
        ntime,
    })
}

fn validator(extranonce_size: usize) -> ShareValidator {
    let config = ValidatorConfig {
        version_rolling_mask: 0x1fff_e000,
        extranonce_size,
        ..ValidatorConfig::default()
    };
    // Target::MAX: every share is accepted, so each iteration takes the full path
    // including the duplicate-set insert.
    ShareValidator::new(config, vec![0xAB, 0xCD, 0xEF, 0x01], Target::MAX)
}

/// Runs one share through `v`, rotating jobs so the duplicate set stays bounded.
fn run_share(v: &mut ShareValidator, make_job: fn(u32) -> Job, counter: &mut u32) -> f64 {
    let n = *counter;
    *counter = n.wrapping_add(1);
    let job_id = n / ROTATE_EVERY;
    if n % ROTATE_EVERY == 0 {
        let _ = v.add_job(job_id, make_job(1_700_000_000), true);
    }
    let extranonce = u64::from(n).to_le_bytes();
    let share = Submission {
        job_id,
        extranonce: &extranonce,
        ntime: 1_700_000_000,
        nonce: n,
        version: SubmittedVersion::Full(0x2000_0000 | ((n & 0xFF) << 13)),
    };
    match v.validate(black_box(&share)) {
        Ok(accepted) => accepted.difficulty,
        Err(_) => 0.0,
    }
}

fn bench(c: &mut Criterion) {
    register(c, "share_validation");
}

fn bench_cpu(c: &mut Criterion<ThreadCpuTime>) {
    register(c, "share_validation_cpu");
}

fn register<M: Measurement + 'static>(c: &mut Criterion<M>, group_name: &str) {
    let mut group = c.benchmark_group(group_name);
    if std::any::TypeId::of::<M>() == std::any::TypeId::of::<ThreadCpuTime>() {
        // schedstat advances in scheduler ticks (a few ms): few, equally long samples keep
        // that granularity below 1% of each sample.
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
    }
    group.throughput(Throughput::Elements(1));

    group.bench_function("extended_job_share", |b| {
        let mut v = validator(8);
        let mut counter = 0u32;
        b.iter(|| run_share(&mut v, extended_job, &mut counter));
        // The bound the rotation keeps: one job's set at a time.
        assert!(v.remembered_shares() <= ROTATE_EVERY as usize);
    });

    group.bench_function("standard_job_share", |b| {
        let mut v = validator(0);
        let mut counter = 0u32;
        b.iter(|| run_share(&mut v, standard_job, &mut counter));
    });

    group.bench_function("sha256d_80", |b| {
        let mut header = [0x5Au8; 80];
        let mut nonce = 0u32;
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            header[76..].copy_from_slice(&nonce.to_le_bytes());
            sha256d_80(black_box(&header))
        });
    });

    group.finish();
}

/// CPU time of the current thread in nanoseconds (Linux `schedstat`, tick-granular), falling
/// back to wall time where that file does not exist.
struct ThreadCpuTime;

static WALL: WallTime = WallTime;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_nanos() as u64
        })
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, exactly what the wall-time formatter expects.
        WALL.formatter()
    }
}

criterion_group!(benches, bench);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench_cpu
}
criterion_main!(benches, cpu_benches);
