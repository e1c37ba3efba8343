//! Unit tests of the sans-IO SV2 channel.

use super::*;
use hashshift_protocol::sv2::{B064K, Seq0255, Str0255};

fn granted() -> OpenExtendedMiningChannelSuccess {
    OpenExtendedMiningChannelSuccess {
        request_id: 1,
        channel_id: 7,
        target: Target::DIFF1.to_le_bytes(),
        extranonce_size: 16,
        extranonce_prefix: B032::try_from(&[1u8, 2, 3, 4][..]).unwrap(),
        group_channel_id: 9,
    }
}

fn job(id: u32, min_ntime: Option<u32>) -> NewExtendedMiningJob {
    NewExtendedMiningJob {
        channel_id: 7,
        job_id: id,
        min_ntime,
        version: 0x2000_0000,
        version_rolling_allowed: true,
        merkle_path: Seq0255::try_from(vec![[5u8; 32]]).unwrap(),
        coinbase_tx_prefix: B064K::try_from(vec![1u8, 2]).unwrap(),
        coinbase_tx_suffix: B064K::try_from(vec![3u8]).unwrap(),
    }
}

fn prev(id: u32) -> SetNewPrevHash {
    SetNewPrevHash {
        channel_id: 7,
        job_id: id,
        prev_hash: [8; 32],
        min_ntime: 1_700_000_000,
        nbits: 0x1703_0000,
    }
}

fn share(
    job: &Arc<UpstreamJob>,
    bits: Option<u32>,
) -> (UpstreamSubmit, oneshot::Receiver<SubmitOutcome>) {
    let (tx, rx) = oneshot::channel();
    let s = UpstreamSubmit {
        worker: "w".into(),
        job: Arc::clone(job),
        extranonce2: vec![0; 16],
        ntime: 1_700_000_001,
        nonce: 42,
        version_bits: bits,
        difficulty: 1.0,
        block: false,
        reply: tx,
    };
    (s, rx)
}

fn send(vs: Vec<Verdict>) -> usize {
    let n = vs.len();
    for v in vs {
        let _ = v.reply.send(v.outcome);
    }
    n
}

#[test]
fn grant_maps_to_extranonce1_and_size() {
    let ch = Channel::open(&granted(), 1e12, false, Instant::now());
    let w = ch.work_state();
    assert_eq!(&w.extranonce1[..], &[1, 2, 3, 4]);
    assert_eq!(w.extranonce2_size, 16);
    assert!(w.job.is_none() && !w.is_ready());
    assert!(ch.addresses(7) && ch.addresses(9) && !ch.addresses(8));
    // The proxy's per-miner split gives an SV1 miner at most 8 of the 16 bytes.
    let m = crate::pool_link::extranonce::MinerExtranonce::new(&w.extranonce1, 16, 2, 3).unwrap();
    assert_eq!(m.extranonce2_size, 8);
    assert_eq!(m.upstream_prefix.len() + m.extranonce2_size, 16);
}

#[test]
fn future_job_becomes_clean_work_on_its_prevhash_then_non_future_jobs_follow() {
    let mut ch = Channel::open(&granted(), 1e12, false, Instant::now());
    let now = Instant::now();
    assert!(!ch.on_new_job(job(1, Some(5)), now), "no tip yet");
    assert!(!ch.on_new_job(job(2, None), now), "future job waits");
    assert!(!ch.has_job());
    assert!(ch.on_prev_hash(&prev(2), now));
    let w = ch.work_state();
    let j = w.job.clone().unwrap();
    assert!(j.clean);
    assert_eq!(j.pool_job_id, "2");
    assert_eq!(j.job.prev_hash, [8; 32]);
    assert_eq!(j.job.ntime, 1_700_000_000);
    assert_eq!(j.job.nbits, 0x1703_0000);
    assert_eq!(j.job.coinbase_prefix, vec![1, 2]);
    assert_eq!(j.session, w.session);
    assert_eq!(w.version_mask, REQUESTED_VERSION_MASK);
    // A harder target applies at once: the current job is re-issued under it, not clean.
    assert!(ch.set_target(Target::from_difficulty(4.0).unwrap().to_le_bytes(), now));
    let j2 = ch.work_state().job.unwrap();
    assert!(!j2.clean);
    assert_eq!(j2.pool_job_id, "2");
    assert_ne!(j2.id, j.id);
    assert!((j2.pool_difficulty - 4.0).abs() < 1e-6);
    assert!((j.pool_difficulty - 1.0).abs() < 1e-6);
    // An easier one waits for the next job.
    assert!(!ch.set_target(Target::from_difficulty(2.0).unwrap().to_le_bytes(), now));
    assert!((ch.work_state().job.unwrap().pool_difficulty - 4.0).abs() < 1e-6);
    assert!(ch.on_new_job(job(3, Some(1_700_000_100)), now));
    let j3 = ch.work_state().job.unwrap();
    assert!(!j3.clean);
    assert_eq!(j3.job.ntime, 1_700_000_100);
    assert!((j3.pool_difficulty - 2.0).abs() < 1e-6);
    // A prevhash for an unknown job leaves miners without work.
    assert!(ch.on_prev_hash(&prev(99), now));
    assert!(!ch.has_job());
}

#[test]
fn shares_get_sequence_numbers_full_versions_and_batched_verdicts() {
    let mut ch = Channel::open(&granted(), 1e12, false, Instant::now());
    let now = Instant::now();
    ch.on_new_job(job(2, None), now);
    ch.on_prev_hash(&prev(2), now);
    let j = ch.work_state().job.unwrap();
    let mut rxs = Vec::new();
    for (i, bits) in [None, Some(0x0000_6000), Some(0xffff_ffff)]
        .into_iter()
        .enumerate()
    {
        let (s, rx) = share(&j, bits);
        let m = ch.submit(s, now).unwrap();
        assert_eq!(m.sequence_number, i as u32);
        assert_eq!((m.channel_id, m.job_id, m.nonce), (7, 2, 42));
        assert_eq!(m.extranonce.as_bytes(), &[0; 16]);
        let want = match bits {
            None => 0x2000_0000,
            Some(b) => 0x2000_0000 | (b & REQUESTED_VERSION_MASK),
        };
        assert_eq!(m.version, want);
        rxs.push(rx);
    }
    assert_eq!(ch.pending(), 3);
    // The pool rejects #1, then acknowledges up to #2 in one batch.
    let e = SubmitSharesError {
        channel_id: 7,
        sequence_number: 1,
        error_code: Str0255::try_from("stale-share").unwrap(),
    };
    let v = ch.on_error(&e).unwrap();
    let _ = v.reply.send(v.outcome);
    let s = SubmitSharesSuccess {
        channel_id: 7,
        last_sequence_number: 2,
        new_submits_accepted_count: 2,
        new_shares_sum: 2,
    };
    assert_eq!(send(ch.on_success(&s)), 2);
    assert_eq!(ch.pending(), 0);
    let got: Vec<_> = rxs.into_iter().map(|mut r| r.try_recv().unwrap()).collect();
    assert_eq!(got[0], SubmitOutcome::Accepted);
    match &got[1] {
        SubmitOutcome::Rejected(e) => {
            assert_eq!(e.code, 21);
            assert!(e.message.contains("stale-share"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(got[2], SubmitOutcome::Accepted);
}

#[test]
fn old_sessions_timeouts_and_disconnects_are_lost_never_silent() {
    let mut ch = Channel::open(&granted(), 1e12, false, Instant::now());
    let now = Instant::now();
    ch.on_new_job(job(2, None), now);
    ch.on_prev_hash(&prev(2), now);
    let old = ch.work_state().job.unwrap();
    ch.set_extranonce_prefix(&[9, 9, 9, 9], now);
    let w = ch.work_state();
    assert_eq!(&w.extranonce1[..], &[9, 9, 9, 9]);
    let reissued = w.job.unwrap();
    assert_ne!(
        reissued.session, old.session,
        "current job re-issued in the new session"
    );
    let (s, _rx) = share(&old, None);
    let v = ch.submit(s, now).unwrap_err();
    assert!(matches!(v.outcome, SubmitOutcome::Lost(_)));
    let (s, _rx1) = share(&reissued, None);
    ch.submit(s, now).unwrap();
    assert!(ch.expire(now, Duration::from_secs(30)).is_empty());
    assert_eq!(
        send(ch.expire(now + Duration::from_secs(31), Duration::from_secs(30))),
        1
    );
    // Another share: the expired one went up once and is never sent again.
    let (mut s, _rx2) = share(&reissued, None);
    s.nonce = 43;
    ch.submit(s, now).unwrap();
    let v = ch.fail_all("gone");
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].outcome, SubmitOutcome::Lost("gone"));
}

#[test]
fn sv2_codes_map_to_sv1_codes_keeping_the_pool_string() {
    for (c, want) in [
        ("stale-share", 21),
        ("invalid-job-id", 21),
        ("duplicate-share", 22),
        ("difficulty-too-low", 23),
        ("invalid-non-rollable-version-bit", 20),
        ("something-new\n", 20),
    ] {
        let e = stratum_error(c);
        assert_eq!(e.code, want, "{c}");
        assert!(e.message.contains(c.trim()), "{}", e.message);
        assert!(!e.message.contains('\n'));
    }
}

#[test]
fn the_miners_hashrate_is_announced_when_it_drifts_at_most_every_ten_seconds() {
    let t0 = Instant::now();
    let mut ch = Channel::open(&granted(), 100e12, false, t0);
    let later = t0 + Duration::from_secs(11);
    assert!(
        ch.hashrate_update(5e6, t0 + Duration::from_secs(9))
            .is_none(),
        "too soon"
    );
    assert!(ch.hashrate_update(0.0, later).is_none(), "no estimate yet");
    assert!(ch.hashrate_update(f64::NAN, later).is_none());
    let u = ch.hashrate_update(5e6, later).unwrap();
    assert_eq!(u.channel_id, 7);
    assert_eq!(u.nominal_hash_rate, 5e6);
    assert_eq!(u.maximum_target, Target::MAX.to_le_bytes());
    let t2 = later + Duration::from_secs(11);
    assert!(ch.hashrate_update(6e6, t2).is_none(), "within 30%");
    assert_eq!(ch.hashrate_update(7e6, t2).unwrap().nominal_hash_rate, 7e6);
}

#[test]
fn a_block_share_is_reported_as_a_block_once_accepted() {
    let mut ch = Channel::open(&granted(), 1e12, false, Instant::now());
    let now = Instant::now();
    ch.on_new_job(job(2, None), now);
    ch.on_prev_hash(&prev(2), now);
    let job = ch.work_state().job.unwrap();
    let (mut s, _rx) = share(&job, None);
    s.block = true;
    let m = ch.submit(s, now).unwrap();
    let verdicts = ch.on_success(&SubmitSharesSuccess {
        channel_id: 7,
        last_sequence_number: m.sequence_number,
        new_submits_accepted_count: 1,
        new_shares_sum: 1,
    });
    assert_eq!(verdicts.len(), 1);
    assert!(verdicts[0].block);
}

#[test]
fn a_guessed_announcement_is_replaced_by_the_first_estimate_at_once() {
    let t0 = Instant::now();
    let mut ch = Channel::open(&granted(), 100e12, true, t0);
    let u = ch
        .hashrate_update(8e6, t0 + Duration::from_secs(1))
        .unwrap();
    assert_eq!(u.nominal_hash_rate, 8e6);
    assert!(
        ch.hashrate_update(1e6, t0 + Duration::from_secs(2))
            .is_none(),
        "then the usual spacing"
    );
}

#[test]
fn a_share_goes_up_once_whatever_upstream_job_it_comes_under() {
    let mut ch = Channel::open(&granted(), 1e12, false, Instant::now());
    let now = Instant::now();
    ch.on_new_job(job(2, None), now);
    ch.on_prev_hash(&prev(2), now);
    let j = ch.work_state().job.unwrap();
    let (s, _rx) = share(&j, Some(0x2000));
    assert!(ch.submit(s, now).is_ok());
    // A harder SetTarget re-publishes pool job 2 as another UpstreamJob: same work key.
    assert!(ch.set_target(Target::from_difficulty(4.0).unwrap().to_le_bytes(), now));
    let j2 = ch.work_state().job.unwrap();
    assert_ne!(j2.id, j.id);
    assert_eq!(j2.work, j.work, "miners' duplicate sets see one pool job");
    for upstream in [&j, &j2] {
        let (s, mut rx) = share(upstream, Some(0x2000));
        let v = ch.submit(s, now).expect_err("not sent again");
        let _ = v.reply.send(v.outcome);
        match rx.try_recv() {
            Ok(SubmitOutcome::Rejected(e)) => assert_eq!(e.code, 22),
            other => panic!("expected a duplicate reject, got {other:?}"),
        }
    }
    // Other rolled bits are another share.
    let (s, _rx) = share(&j2, Some(0x4000));
    assert!(ch.submit(s, now).is_ok());
    // The next pool job is another job for the pool.
    ch.on_new_job(job(3, Some(1_700_000_000)), now);
    let j3 = ch.work_state().job.unwrap();
    assert_ne!(j3.work, j.work);
    let (s, _rx) = share(&j3, Some(0x2000));
    assert!(ch.submit(s, now).is_ok());
}
