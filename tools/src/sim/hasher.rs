//! The hashing half of a simulated rig: one blocking OS thread that really computes sha256d
//! headers, throttled to a configured hashrate, and reports every header that meets the
//! share target.
//!
//! Work arrives through a `watch` channel (latest wins, so a new job or a new target can never
//! be overtaken by an older one); found shares leave through a bounded channel and are dropped,
//! not queued without bound, if the connection task does not keep up. The thread never touches
//! the async runtime: it only reads the `watch`, `try_send`s, sleeps and checks a token.
//!
//! Rolling order, as ASIC firmware does it: the nonce runs through its whole 32-bit space for
//! one (extranonce2, version) pair; the rolled version bits change per batch (AsicBoost-style,
//! within the negotiated mask); ntime follows the wall clock from the job's ntime, capped at
//! [`MAX_NTIME_ROLL`] seconds; when the nonce space is exhausted extranonce2 is incremented.
//! Nonces only ever increase within a job, so no two submitted shares are duplicates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use hashshift_protocol::share::{PreparedJob, Target};

/// Most seconds a rig advances ntime past the job's ntime (pools accept a few minutes).
pub const MAX_NTIME_ROLL: u32 = 60;

/// Length of one hashing batch at the configured hashrate; the thread sleeps off the rest.
const BATCH_PERIOD: Duration = Duration::from_millis(20);

/// What the hashing thread works on: one job at one target.
#[derive(Clone, Debug)]
pub(crate) struct Work {
    /// The pool's job id, echoed on submit.
    pub job_id: String,
    /// The job with the coinbase midstate over `coinb1 ‖ extranonce1`.
    pub job: Arc<PreparedJob>,
    /// Bytes of extranonce2 the rig rolls.
    pub extranonce2_size: usize,
    /// Share target (from the difficulty in force when the job arrived).
    pub target: Target,
    /// Pool difficulty of `target`, credited per accepted share.
    pub difficulty: f64,
    /// Negotiated version-rolling mask (`None` or 0: no rolling).
    pub version_mask: Option<u32>,
    /// Distinguishes jobs so the thread restarts its counters.
    pub generation: u64,
}

/// A header that met the share target.
#[derive(Clone, Debug)]
pub(crate) struct FoundShare {
    /// Job id from [`Work::job_id`].
    pub job_id: String,
    /// Extranonce2 bytes (exactly [`Work::extranonce2_size`]).
    pub extranonce2: Vec<u8>,
    /// Header ntime.
    pub ntime: u32,
    /// Header nonce.
    pub nonce: u32,
    /// Rolled version bits (already masked), when rolling.
    pub version_bits: Option<u32>,
    /// Difficulty the share was found at.
    pub difficulty: f64,
    /// Generation of the work it came from.
    pub generation: u64,
}

/// Spreads the low bits of `counter` over the set bits of `mask` (a software PDEP).
fn deposit(mut counter: u32, mask: u32) -> u32 {
    let mut out = 0;
    let mut m = mask;
    while m != 0 && counter != 0 {
        let bit = m & m.wrapping_neg();
        if counter & 1 == 1 {
            out |= bit;
        }
        counter >>= 1;
        m &= m - 1;
    }
    out
}

/// Writes `counter` little-endian into `out`, truncated or zero-padded to its length.
fn fill_extranonce2(out: &mut [u8], counter: u64) {
    let bytes = counter.to_le_bytes();
    for (i, b) in out.iter_mut().enumerate() {
        *b = bytes.get(i).copied().unwrap_or(0);
    }
}

/// The rolling state for one [`Work`].
struct Roller {
    work: Work,
    received: Instant,
    extranonce2_counter: u64,
    extranonce2: Vec<u8>,
    nonce: u64,
    version_counter: u32,
}

impl Roller {
    fn new(work: Work) -> Self {
        let mut extranonce2 = vec![0; work.extranonce2_size];
        fill_extranonce2(&mut extranonce2, 0);
        Roller {
            work,
            received: Instant::now(),
            extranonce2_counter: 0,
            extranonce2,
            nonce: 0,
            version_counter: 0,
        }
    }

    /// Hashes `count` headers, sending each share found. Returns the number hashed.
    fn batch(&mut self, count: u64, shares: &mpsc::Sender<FoundShare>) -> u64 {
        let job = self.work.job.job();
        let base_version = job.version();
        let elapsed = u32::try_from(self.received.elapsed().as_secs()).unwrap_or(u32::MAX);
        let ntime = job.ntime().saturating_add(elapsed.min(MAX_NTIME_ROLL));
        let mask = self.work.version_mask.filter(|m| *m != 0);
        let version_bits = mask.map(|m| {
            self.version_counter = self.version_counter.wrapping_add(1);
            deposit(self.version_counter, m)
        });
        let version = match (mask, version_bits) {
            (Some(m), Some(bits)) => (base_version & !m) | bits,
            _ => base_version,
        };
        for _ in 0..count {
            if self.nonce > u64::from(u32::MAX) {
                self.nonce = 0;
                self.extranonce2_counter = self.extranonce2_counter.wrapping_add(1);
                fill_extranonce2(&mut self.extranonce2, self.extranonce2_counter);
            }
            let nonce = self.nonce as u32;
            self.nonce += 1;
            let hash = self.work.job.hash(&self.extranonce2, ntime, nonce, version);
            if self.work.target.is_met_by(&hash) {
                // Dropping a share when the connection task lags is what a real rig's full
                // result FIFO does too; it keeps memory bounded.
                let _ = shares.try_send(FoundShare {
                    job_id: self.work.job_id.clone(),
                    extranonce2: self.extranonce2.clone(),
                    ntime,
                    nonce,
                    version_bits,
                    difficulty: self.work.difficulty,
                    generation: self.work.generation,
                });
            }
        }
        count
    }
}

/// Runs the hashing loop until `shutdown` is cancelled or the work channel closes.
/// `hashrate` is in H/s; `hashes` counts every header hashed.
pub(crate) fn run(
    mut work: watch::Receiver<Option<Work>>,
    shares: mpsc::Sender<FoundShare>,
    hashrate: f64,
    hashes: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let per_batch = (hashrate * BATCH_PERIOD.as_secs_f64()).clamp(1.0, 1e9) as u64;
    let batch_time = Duration::from_secs_f64(per_batch as f64 / hashrate.max(1e-9));
    let mut roller: Option<Roller> = None;
    while !shutdown.is_cancelled() {
        match work.has_changed() {
            Ok(true) => {
                roller = work.borrow_and_update().clone().map(Roller::new);
            }
            Ok(false) => {}
            Err(_) => return,
        }
        let Some(r) = roller.as_mut() else {
            std::thread::sleep(BATCH_PERIOD);
            continue;
        };
        let started = Instant::now();
        let done = r.batch(per_batch, &shares);
        hashes.fetch_add(done, Ordering::Relaxed);
        if let Some(rest) = batch_time.checked_sub(started.elapsed()) {
            // Sleep in short slices so a new job or shutdown is seen promptly even at
            // very low hashrates.
            let deadline = Instant::now() + rest;
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if shutdown.is_cancelled() || work.has_changed().unwrap_or(true) {
                    break;
                }
                std::thread::sleep(left.min(BATCH_PERIOD));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposit_fills_mask_bits_in_order() {
        assert_eq!(deposit(0, 0x1fff_e000), 0);
        assert_eq!(deposit(1, 0x1fff_e000), 0x2000);
        assert_eq!(deposit(3, 0x1fff_e000), 0x6000);
        assert_eq!(deposit(u32::MAX, 0x1fff_e000), 0x1fff_e000);
        assert_eq!(deposit(0b101, 0b1010_1000), 0b1000_1000);
    }

    #[test]
    fn extranonce2_is_little_endian_and_sized() {
        let mut b = [0u8; 4];
        fill_extranonce2(&mut b, 0x0102);
        assert_eq!(b, [2, 1, 0, 0]);
        let mut long = [0xffu8; 10];
        fill_extranonce2(&mut long, 1);
        assert_eq!(long, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
