//! Jobs the test pool hands out: a realistic coinbase split around the extranonces, random
//! merkle branches, a chain tip that advances, and the job tag that lets a load generator
//! recognise a job after it went through a proxy.
//!
//! Coinbase layout (legacy serialisation, as Stratum sends it):
//!
//! ```text
//! version(4) ‖ 01 ‖ 00…00(32) ffffffff ‖ scriptSig len ‖
//!   scriptSig = push(BIP34 height) ‖ push(job tag, 8 bytes LE) ‖
//!               push_opcode(en1+en2) ‖ extranonce1 ‖ extranonce2 ‖ push(pool tag)
//!   ‖ ffffffff ‖ 02 ‖ payout: value ‖ P2WPKH ‖ commitment: 0 ‖ OP_RETURN aa21a9ed… ‖ locktime(4)
//! coinb1 = everything before extranonce1, coinb2 = everything after extranonce2
//! ```
//!
//! With [`JobFactory::with_extra_outputs`] the coinbase also pays that many extra P2WPKH
//! outputs (31 bytes each, 546 sat taken from the main payout), as a pool that pays its
//! miners in the coinbase does: a large but valid coinbase, for tests of big jobs.
//!
//! The job tag is the pool-wide job sequence number; proxies pass coinb1 through unchanged,
//! so [`job_tag`] recovers it from any `mining.notify` derived from this pool's job.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::Rng;

use hashshift_protocol::share::{ExtendedJob, Target};
use hashshift_protocol::sv1::{Notify, ServerMessage, ServerNotification, Sv1Message};

/// Block subsidy at heights 840 000..1 050 000, in satoshis.
const SUBSIDY_SAT: u64 = 312_500_000;
/// Height of the first block template: realistic, so the BIP34 push has its usual 3 bytes.
const START_HEIGHT: u32 = 900_000;
/// Witness commitment header (BIP141).
const WITNESS_COMMITMENT_HEADER: [u8; 4] = [0xaa, 0x21, 0xa9, 0xed];
/// Realistic block version (BIP9 top bits, no signalling).
pub(crate) const BLOCK_VERSION: u32 = 0x2000_0000;
/// Longest pool tag written into the coinbase scriptSig.
pub(crate) const MAX_POOL_TAG: usize = 24;

/// One job as the pool sent it. Shared by every connection (`Arc`): per connection only the
/// validator state differs.
#[derive(Debug)]
pub(crate) struct PoolJob {
    /// Pool-wide sequence number, also embedded in coinb1 (the job tag).
    pub seq: u64,
    /// Chain tip epoch: changes with every new prevhash, so a connection that missed the
    /// clean job itself still marks the next one it sends as clean.
    pub block: u64,
    /// Whether this job starts a new block (clean_jobs).
    pub clean: bool,
    /// Share difficulty this job is sent (and credited) at.
    pub difficulty: f64,
    /// The job in validator form.
    pub job: ExtendedJob,
    /// The encoded `mining.notify` lines: `[clean_jobs = false, clean_jobs = true]`.
    notify_lines: [Bytes; 2],
}

impl PoolJob {
    /// The job id sent in `mining.notify`.
    pub fn job_id(seq: u64) -> String {
        format!("{:x}", seq as u32)
    }

    /// The `mining.notify` line (with its `\n`), with the given clean flag.
    pub fn notify_line(&self, clean: bool) -> Bytes {
        self.notify_lines[usize::from(clean)].clone()
    }
}

/// What every connection follows (through a `watch`, latest wins): the current job and the
/// pool's version-rolling mask.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    /// The newest job.
    pub job: Arc<PoolJob>,
    /// The pool's version-rolling mask (each connection grants `requested & mask`).
    pub version_mask: u32,
}

/// Parses a job id string sent back in `mining.submit` into the validator's `u32` id.
pub(crate) fn parse_job_id(id: &str) -> Option<u32> {
    if id.is_empty() || id.len() > 8 {
        return None;
    }
    u32::from_str_radix(id, 16).ok()
}

/// The chain tip and job counter of one pool; makes jobs. Pure apart from the RNG and the
/// `now_unix` the caller passes in.
#[derive(Debug)]
pub(crate) struct JobFactory {
    seq: u64,
    block: u64,
    height: u32,
    prev_hash: [u8; 32],
    last_ntime: u32,
    nbits: u32,
    branch_len: usize,
    extranonce_len: usize,
    pool_tag: Vec<u8>,
    payout_hash: [u8; 20],
    extra_outputs: usize,
}

/// Most extra coinbase outputs [`JobFactory::with_extra_outputs`] takes: ~1.5 MB of coinbase,
/// more than a Stratum line of any proxy takes.
pub(crate) const MAX_EXTRA_OUTPUTS: usize = 50_000;
/// Value of each extra output, in satoshis: at the legacy dust limit, above P2WPKH's.
const EXTRA_OUTPUT_SAT: u64 = 546;

impl JobFactory {
    /// A factory for jobs whose extranonce area is `extranonce_len` bytes (en1 + en2).
    pub fn new(
        network_difficulty: f64,
        branch_len: usize,
        extranonce_len: usize,
        pool_name: &str,
    ) -> Result<Self, String> {
        let nbits = Target::from_difficulty(network_difficulty)
            .map_err(|e| format!("network_difficulty: {e}"))?
            .to_compact();
        Target::from_compact(nbits).map_err(|e| format!("network_difficulty: {e}"))?;
        let mut rng = rand::rng();
        let mut tag = format!("/hashshift-testpool:{pool_name}/").into_bytes();
        tag.truncate(MAX_POOL_TAG);
        Ok(JobFactory {
            seq: 0,
            block: 0,
            height: START_HEIGHT - 1,
            prev_hash: rng.random(),
            last_ntime: 0,
            nbits,
            branch_len,
            extranonce_len,
            pool_tag: tag,
            payout_hash: rng.random(),
            extra_outputs: 0,
        })
    }

    /// Makes every coinbase pay `n` extra P2WPKH outputs (at most [`MAX_EXTRA_OUTPUTS`]).
    pub fn with_extra_outputs(mut self, n: usize) -> Self {
        self.extra_outputs = n.min(MAX_EXTRA_OUTPUTS);
        self
    }

    /// The next job. `clean` moves the chain tip first (new prevhash, height + 1).
    pub fn next_job(&mut self, clean: bool, difficulty: f64, now_unix: u32) -> Arc<PoolJob> {
        let mut rng = rand::rng();
        let clean = clean || self.seq == 0;
        if clean {
            self.block += 1;
            self.height += 1;
            self.prev_hash = rng.random();
        }
        self.seq += 1;
        // Never let ntime go backwards, even if the wall clock does.
        self.last_ntime = self.last_ntime.max(now_unix);
        let (coinb1, coinb2) = self.coinbase(&mut rng);
        let merkle_branch: Vec<[u8; 32]> = (0..self.branch_len).map(|_| rng.random()).collect();
        let job = ExtendedJob {
            version: BLOCK_VERSION,
            prev_hash: self.prev_hash,
            coinbase_prefix: coinb1,
            coinbase_suffix: coinb2,
            merkle_branch,
            nbits: self.nbits,
            ntime: self.last_ntime,
        };
        let notify_lines = [false, true].map(|c| encode_notify(self.seq, &job, c));
        Arc::new(PoolJob {
            seq: self.seq,
            block: self.block,
            clean,
            difficulty,
            job,
            notify_lines,
        })
    }

    fn coinbase(&self, rng: &mut impl Rng) -> (Vec<u8>, Vec<u8>) {
        let mut script = Vec::with_capacity(64);
        push_data(&mut script, &script_num(i64::from(self.height)));
        push_data(&mut script, &self.seq.to_le_bytes());
        // The extranonces form one push whose bytes the miner fills in.
        script.push(self.extranonce_len as u8);
        let split = script.len();
        let mut tail = Vec::with_capacity(32);
        push_data(&mut tail, &self.pool_tag);
        let script_len = split + self.extranonce_len + tail.len();

        let mut coinb1 = Vec::with_capacity(128);
        coinb1.extend_from_slice(&2u32.to_le_bytes()); // tx version
        coinb1.push(1); // one input
        coinb1.extend_from_slice(&[0; 32]); // null prevout
        coinb1.extend_from_slice(&u32::MAX.to_le_bytes());
        coinb1.push(script_len as u8); // < 0xfd: bounded by MAX_POOL_TAG and extranonce limits
        coinb1.extend_from_slice(&script[..split]);

        let mut coinb2 = tail;
        coinb2.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
        let outputs = 2 + self.extra_outputs; // at most MAX_EXTRA_OUTPUTS + 2: fits a u32
        push_compact_size(&mut coinb2, outputs as u64);
        let fees: u64 = rng.random_range(1_000_000..50_000_000);
        // At most 50 000 × 546 sat: well under the subsidy.
        let paid_out = EXTRA_OUTPUT_SAT.saturating_mul(self.extra_outputs as u64);
        coinb2.reserve(self.extra_outputs * 31);
        coinb2.extend_from_slice(&(SUBSIDY_SAT + fees).saturating_sub(paid_out).to_le_bytes());
        coinb2.push(22);
        coinb2.extend_from_slice(&[0x00, 0x14]); // P2WPKH: OP_0 PUSH20
        coinb2.extend_from_slice(&self.payout_hash);
        for i in 0..self.extra_outputs {
            coinb2.extend_from_slice(&EXTRA_OUTPUT_SAT.to_le_bytes());
            coinb2.push(22);
            coinb2.extend_from_slice(&[0x00, 0x14]);
            let mut hash = self.payout_hash;
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            coinb2.extend_from_slice(&hash);
        }
        coinb2.extend_from_slice(&0u64.to_le_bytes());
        coinb2.push(38);
        coinb2.extend_from_slice(&[0x6a, 0x24]); // OP_RETURN PUSH36
        coinb2.extend_from_slice(&WITNESS_COMMITMENT_HEADER);
        let commitment: [u8; 32] = rng.random();
        coinb2.extend_from_slice(&commitment);
        coinb2.extend_from_slice(&0u32.to_le_bytes()); // locktime
        (coinb1, coinb2)
    }
}

fn encode_notify(seq: u64, job: &ExtendedJob, clean_jobs: bool) -> Bytes {
    let notify = Notify::from_job(PoolJob::job_id(seq), job, clean_jobs);
    let mut buf = BytesMut::with_capacity(1024);
    // Serialising owned JSON values into memory cannot fail.
    let _ = ServerMessage::notification(ServerNotification::Notify(notify)).encode_line(&mut buf);
    buf.freeze()
}

/// Bitcoin's CompactSize integer (a transaction's input and output counts).
fn push_compact_size(out: &mut Vec<u8>, n: u64) {
    match n {
        0..0xfd => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// A direct push of `data` (at most 75 bytes: every push here is short).
fn push_data(script: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= 75);
    script.push(data.len() as u8);
    script.extend_from_slice(data);
}

/// Minimal CScriptNum encoding (BIP34 height).
fn script_num(mut n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let negative = n < 0;
    n = n.abs();
    while n > 0 {
        out.push((n & 0xff) as u8);
        n >>= 8;
    }
    if let Some(last) = out.last_mut() {
        if *last & 0x80 != 0 {
            out.push(if negative { 0x80 } else { 0 });
        } else if negative {
            *last |= 0x80;
        }
    }
    out
}

/// Extracts the job tag (the pool's job sequence number) from a coinb1 this pool made, or
/// from any coinb1 that follows the same layout: the second push of the coinbase scriptSig,
/// right after the BIP34 height, holding 8 bytes little-endian. `None` for anything else.
pub fn job_tag(coinb1: &[u8]) -> Option<u64> {
    let mut at = 4; // tx version
    if coinb1.get(at..at + 2) == Some(&[0x00, 0x01]) {
        at += 2; // segwit marker and flag, in case someone sends the witness serialisation
    }
    if *coinb1.get(at)? != 1 {
        return None;
    }
    at += 1;
    let prevout = coinb1.get(at..at + 36)?;
    if prevout[..32] != [0; 32] || prevout[32..] != [0xff; 4] {
        return None;
    }
    at += 36 + 1; // prevout, scriptSig length (< 0xfd for coinbases: at most 100 bytes)
    let height_op = *coinb1.get(at)?;
    at += match height_op {
        0x01..=0x4b => 1 + usize::from(height_op),
        0x00 | 0x51..=0x60 => 1, // OP_0, OP_1..OP_16: heights below 17
        _ => return None,
    };
    if *coinb1.get(at)? != 8 {
        return None;
    }
    let tag: [u8; 8] = coinb1.get(at + 1..at + 9)?.try_into().ok()?;
    Some(u64::from_le_bytes(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashshift_protocol::share::hash::sha256d;

    #[test]
    fn extra_outputs_make_a_big_coinbase_with_a_compact_size_count() {
        let mut plain = JobFactory::new(1e15, 0, 12, "p").unwrap();
        let mut big = JobFactory::new(1e15, 0, 12, "p")
            .unwrap()
            .with_extra_outputs(7_000);
        let small = plain.next_job(true, 1.0, 0);
        let large = big.next_job(true, 1.0, 0);
        let (a, b) = (&small.job.coinbase_suffix, &large.job.coinbase_suffix);
        // Two more bytes for the count (0xfd + u16), 31 per output.
        assert_eq!(b.len(), a.len() + 2 + 7_000 * 31);
        // The output count follows push(pool tag) and the input's sequence.
        let at = 1 + "/hashshift-testpool:p/".len() + 4;
        assert_eq!(a[at], 2);
        let n = (2u16 + 7_000).to_le_bytes();
        assert_eq!(b[at..at + 3], [0xfd, n[0], n[1]]);
    }

    #[test]
    fn script_num_is_minimal() {
        assert_eq!(script_num(0), Vec::<u8>::new());
        assert_eq!(script_num(1), vec![1]);
        assert_eq!(script_num(0x80), vec![0x80, 0]);
        assert_eq!(script_num(900_000), vec![0xa0, 0xbb, 0x0d]);
        assert_eq!(script_num(-1), vec![0x81]);
    }

    #[test]
    fn coinbase_is_well_formed_and_tagged() {
        let mut f = JobFactory::new(1e15, 12, 12, "pool-a").unwrap();
        let first = f.next_job(false, 1.0, 1_700_000_000);
        assert!(first.clean, "the first job is always clean");
        let j = f.next_job(false, 1.0, 1_700_000_000);
        assert_eq!((j.seq, j.block, j.clean), (2, 1, false));
        assert_eq!(job_tag(&j.job.coinbase_prefix), Some(2));
        assert_eq!(j.job.merkle_branch.len(), 12);
        let tx = j.job.coinbase(&[1, 2, 3, 4], &[0; 8]);
        // version 2, one input, null prevout.
        assert_eq!(&tx[..5], &[2, 0, 0, 0, 1]);
        let script_len = usize::from(tx[41]);
        let script = &tx[42..42 + script_len];
        assert!((2..=100).contains(&script_len));
        assert_eq!(&script[..4], &[3, 0xa0, 0xbb, 0x0d], "BIP34 height 900000");
        // The scriptSig parses as pushes covering it exactly.
        let mut at = 0;
        while at < script.len() {
            at += 1 + usize::from(script[at]);
        }
        assert_eq!(at, script.len());
        let rest = &tx[42 + script_len..];
        assert_eq!(&rest[..5], &[0xff, 0xff, 0xff, 0xff, 2]);
        assert_eq!(&rest[rest.len() - 4..], &[0; 4], "locktime");
        assert_eq!(rest.len(), 4 + 1 + (8 + 1 + 22) + (8 + 1 + 38) + 4);
        assert_eq!(sha256d(&tx).len(), 32);
    }

    #[test]
    fn clean_jobs_move_the_tip_and_ntime_never_goes_back() {
        let mut f = JobFactory::new(1e15, 0, 12, "p").unwrap();
        let a = f.next_job(false, 1.0, 100);
        let b = f.next_job(false, 1.0, 90);
        let c = f.next_job(true, 1.0, 105);
        assert_eq!(a.job.prev_hash, b.job.prev_hash);
        assert_ne!(b.job.prev_hash, c.job.prev_hash);
        assert_eq!((a.job.ntime, b.job.ntime, c.job.ntime), (100, 100, 105));
        assert_eq!((b.block, c.block), (1, 2));
        assert!(c.clean);
        let line = String::from_utf8(c.notify_line(true).to_vec()).unwrap();
        assert!(line.contains("\"mining.notify\"") && line.ends_with("true]}\n"));
    }

    #[test]
    fn job_tag_rejects_foreign_coinbases() {
        assert_eq!(job_tag(&[]), None);
        assert_eq!(job_tag(&[1, 0, 0, 0, 1]), None);
        let mut cb = vec![1, 0, 0, 0, 1];
        cb.extend_from_slice(&[0; 32]);
        cb.extend_from_slice(&[0xff; 4]);
        cb.extend_from_slice(&[20, 3, 1, 2, 3, 4, 0xde, 0xad]);
        assert_eq!(job_tag(&cb), None, "second push is not 8 bytes");
        cb.truncate(41);
        cb.extend_from_slice(&[20, 0x51, 8, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(job_tag(&cb), Some(7), "OP_1 height");
    }

    #[test]
    fn job_ids_round_trip() {
        assert_eq!(parse_job_id(&PoolJob::job_id(0x1_0000_00ab)), Some(0xab));
        assert_eq!(parse_job_id("zz"), None);
        assert_eq!(parse_job_id(""), None);
        assert_eq!(parse_job_id("123456789"), None);
    }
}
