//! The SV2 connection state machine driven directly: setup, opening standard and extended
//! channels (with and without a pool), UpdateChannel, vardiff, group jobs, failover, shares,
//! acknowledgements and the error limit. Time is a plain `Instant` moved by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashshift_protocol::noise::{AuthorityKeypair, ResponderConfig, SecretKey};
use hashshift_protocol::share::hash::sha256d;
use hashshift_protocol::share::{StandardJob, Target};
use hashshift_protocol::sv2::{
    OpenExtendedMiningChannel, OpenStandardMiningChannel, SubmitSharesStandard, UpdateChannel,
};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::downstream::sv2::channel::ChannelSettings;
use crate::downstream::vardiff::VardiffSettings;
use crate::pool_link::PoolConn;
use crate::pool_link::submit::{SubmitOutcome, UpstreamSubmit};
use crate::pool_link::work::UpstreamJob;
use crate::pool_link::work::test_job as job;
use crate::telemetry::DownstreamStats;

const EASY: f64 = 1e-8;
const HARD: f64 = 1e12;
const HANDSHAKE: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(60);

fn settings(ack_batch: u32) -> Arc<Sv2Settings> {
    let mut rng = rand::rng();
    Arc::new(Sv2Settings {
        noise: ResponderConfig::new(
            AuthorityKeypair::generate(&mut rng),
            SecretKey::generate(&mut rng),
            3600,
        ),
        channel: ChannelSettings {
            vardiff: VardiffSettings {
                min: 1e-10,
                max: 1e15,
                shares_per_minute: 20.0,
            },
            initial_difficulty: EASY,
        },
        handshake_timeout: HANDSHAKE,
        idle_timeout: IDLE,
        write_timeout: Duration::from_secs(10),
        drain_grace: Duration::from_secs(5),
        max_frame_bytes: 1 << 16,
        max_channels: 4,
        ack_delay: Duration::ZERO,
        ack_batch,
        stats: Arc::new(DownstreamStats::new("sv2")),
    })
}

fn work(session: u64, en1: &[u8], job: Option<Arc<UpstreamJob>>) -> Arc<WorkState> {
    Arc::new(WorkState {
        session,
        extranonce1: Bytes::copy_from_slice(en1),
        extranonce2_size: 8,
        difficulty: 1e9,
        target: Target::DIFF1,
        version_mask: 0x1fff_e000,
        job,
    })
}

/// A pool connection as the manager would hand it out: its work can be replaced.
struct Pool {
    work: watch::Sender<Arc<WorkState>>,
    shares: mpsc::Receiver<UpstreamSubmit>,
    handle: PoolConn,
}

fn pool(w: Arc<WorkState>) -> Pool {
    let (work, rx) = watch::channel(w);
    let (submit, shares) = mpsc::channel(16);
    let handle = PoolConn { work: rx, submit };
    Pool {
        work,
        shares,
        handle,
    }
}

fn assignment(p: &Pool, slot: u32) -> Assignment {
    Assignment {
        pool: 0,
        conn: p.handle.clone(),
        slot,
        prefix_bytes: 2,
    }
}

/// The manager's record for a new channel, as the task makes it.
fn record() -> Arc<MinerShared> {
    Arc::new(MinerShared::new(77, "127.0.0.1:4000".parse().unwrap()))
}

struct Rig {
    s: Session,
    t0: Instant,
}

impl Rig {
    fn new(ack_batch: u32) -> Rig {
        let t0 = Instant::now();
        Rig {
            s: Session::new(settings(ack_batch), t0 + HANDSHAKE, t0),
            t0,
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn send(&mut self, secs: f64, m: Message) -> Result<(), End> {
        let now = self.at(secs);
        self.s.handle_message(m, now)
    }

    fn out(&mut self) -> Vec<Message> {
        self.s.take_output().collect()
    }

    fn setup(&mut self, flags: u32) {
        self.send(0.0, setup_message(flags)).unwrap();
        assert_eq!(names(&self.out()), ["SetupConnection.Success"]);
    }

    /// Opens a standard channel on `p` (slot `slot`); returns its id and the messages.
    fn open_standard(&mut self, p: &Pool, slot: u32, secs: f64) -> (u32, Vec<Message>) {
        self.send(secs, open_standard(1)).unwrap();
        assert!(self.s.awaiting_slot());
        let Some(Action::RequestSlot(_)) = self.s.poll_action() else {
            panic!("no slot request")
        };
        self.s.handle_slot(assignment(p, slot), record());
        let w = p.handle.work.borrow().clone();
        let id = self.s.handle_slot_work(&w, self.at(secs)).expect("opened");
        assert!(matches!(self.s.poll_action(), Some(Action::Opened(i)) if i == id));
        (id, self.out())
    }
}

fn setup_message(flags: u32) -> Message {
    Message::SetupConnection(SetupConnection {
        protocol: Protocol::Mining,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: Str0255::truncated("127.0.0.1"),
        endpoint_port: 3336,
        vendor: Str0255::truncated("Bitmain"),
        hardware_version: Str0255::truncated("S21"),
        firmware: Str0255::truncated("braiins-os"),
        device_id: Str0255::truncated("rig-1"),
    })
}

fn open_standard(request_id: u32) -> Message {
    Message::OpenStandardMiningChannel(OpenStandardMiningChannel {
        request_id,
        user_identity: Str0255::truncated("farm.rig1"),
        nominal_hash_rate: 0.0,
        max_target: [0xff; 32],
    })
}

fn names(ms: &[Message]) -> Vec<&'static str> {
    ms.iter().map(Message::name).collect()
}

/// A standard share on `job` (from its NewMiningJob and SetNewPrevHash) meeting `difficulty`.
fn standard_share(channel: u32, seq: u32, job: &[Message], difficulty: f64) -> Message {
    let (Message::NewMiningJob(j), Message::SetNewPrevHash(p)) = (&job[0], &job[1]) else {
        panic!("not a future job: {:?}", names(job))
    };
    let header = StandardJob {
        version: j.version,
        prev_hash: p.prev_hash,
        merkle_root: j.merkle_root,
        nbits: p.nbits,
        ntime: p.min_ntime,
    };
    let target = Target::from_difficulty(difficulty).unwrap();
    // Each sequence number searches its own nonces, so different shares differ.
    let nonce = (seq << 20..)
        .find(|&n| target.is_met_by(&sha256d(&header.header(p.min_ntime, n, j.version))))
        .unwrap();
    Message::SubmitSharesStandard(SubmitSharesStandard {
        channel_id: channel,
        sequence_number: seq,
        job_id: j.job_id,
        nonce,
        ntime: p.min_ntime,
        version: j.version,
    })
}

#[test]
fn setup_comes_first_once_and_with_flags_we_honour() {
    let mut r = Rig::new(1);
    assert!(matches!(
        r.send(0.0, open_standard(1)),
        Err(End::Protocol(_))
    ));

    let mut r = Rig::new(1);
    r.setup(setup_flags::REQUIRES_STANDARD_JOBS);
    assert!(matches!(
        r.send(0.1, setup_message(0)),
        Err(End::Protocol(_))
    ));

    let mut r = Rig::new(1);
    let refused = r.send(0.0, setup_message(setup_flags::REQUIRES_WORK_SELECTION));
    assert!(matches!(refused, Err(End::SetupRefused(_))));
    assert_eq!(names(&r.out()), ["SetupConnection.Error"]);
}

#[test]
fn a_standard_channel_opens_once_its_slot_has_work_with_a_future_job() {
    let mut r = Rig::new(1);
    r.setup(0);
    let p = pool(work(0, &[], None));
    r.send(0.0, open_standard(7)).unwrap();
    let Some(Action::RequestSlot(worker)) = r.s.poll_action() else {
        panic!()
    };
    assert_eq!(&*worker, "farm.rig1");
    r.s.handle_slot(assignment(&p, 3), record());
    // The connection is still subscribing upstream: nothing yet.
    assert_eq!(
        r.s.handle_slot_work(&p.handle.work.borrow().clone(), r.at(0.5)),
        None
    );
    assert!(r.s.awaiting_slot() && r.out().is_empty());
    p.work
        .send_replace(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let id =
        r.s.handle_slot_work(&p.handle.work.borrow().clone(), r.at(1.0))
            .unwrap();
    let out = r.out();
    assert_eq!(
        names(&out),
        [
            "OpenStandardMiningChannel.Success",
            "NewMiningJob",
            "SetNewPrevHash"
        ]
    );
    let Message::OpenStandardMiningChannelSuccess(ok) = &out[0] else {
        panic!()
    };
    assert_eq!(
        (ok.request_id, ok.channel_id, ok.group_channel_id),
        (7, id, GROUP_CHANNEL_ID)
    );
    // Pool extranonce1, the slot, zero padding to the pool's 8 bytes of extranonce2.
    assert_eq!(
        ok.extranonce_prefix.as_bytes(),
        [0xaa, 0, 3, 0, 0, 0, 0, 0, 0]
    );
    let Message::NewMiningJob(j) = &out[1] else {
        panic!()
    };
    assert_eq!(j.min_ntime, None, "a future job");
    assert!(!r.s.awaiting_slot());
}

#[test]
fn without_a_pool_the_open_is_retried_then_refused_and_the_handshake_deadline_resumes() {
    let mut r = Rig::new(1);
    r.setup(0);
    r.send(1.0, open_standard(1)).unwrap();
    assert!(matches!(r.s.poll_action(), Some(Action::RequestSlot(_))));
    r.s.handle_no_slot(r.at(1.0));
    r.s.handle_timeout(r.at(1.0)).unwrap(); // the one-second tick
    assert!(r.s.poll_action().is_none());
    assert_eq!(r.s.poll_timeout(), r.at(1.0) + ASSIGN_RETRY);
    r.s.handle_timeout(r.at(1.2)).unwrap();
    assert!(matches!(r.s.poll_action(), Some(Action::RequestSlot(_))));
    // The open waits up to the handshake timeout from the request (11 s), past the
    // connection's own handshake deadline (10 s).
    r.s.handle_timeout(r.at(10.5)).unwrap();
    r.s.handle_timeout(r.at(11.0)).unwrap();
    let out = r.out();
    assert_eq!(names(&out), ["OpenMiningChannel.Error"]);
    assert!(!r.s.awaiting_slot());
    assert!(
        r.s.poll_action().is_none(),
        "nothing to release: no slot was given"
    );
    assert!(matches!(
        r.s.handle_timeout(r.at(11.0)),
        Err(End::HandshakeTimeout)
    ));
}

#[test]
fn extended_channels_unless_the_miner_wants_standard_jobs() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let extended = |request_id| {
        Message::OpenExtendedMiningChannel(OpenExtendedMiningChannel {
            request_id,
            user_identity: Str0255::truncated("proxy.1"),
            nominal_hash_rate: 0.0,
            max_target: [0xff; 32],
            min_extranonce_size: 0,
        })
    };
    let mut r = Rig::new(1);
    r.setup(setup_flags::REQUIRES_STANDARD_JOBS);
    r.send(0.0, extended(1)).unwrap();
    assert_eq!(names(&r.out()), ["OpenMiningChannel.Error"]);
    assert!(!r.s.awaiting_slot());

    let mut r = Rig::new(1);
    r.setup(0);
    r.send(0.0, extended(2)).unwrap();
    r.s.poll_action();
    r.s.handle_slot(assignment(&p, 3), record());
    r.s.handle_slot_work(&p.handle.work.borrow().clone(), r.at(0.0))
        .unwrap();
    let out = r.out();
    assert_eq!(
        names(&out),
        [
            "OpenExtendedMiningChannel.Success",
            "NewExtendedMiningJob",
            "SetNewPrevHash"
        ]
    );
    let Message::OpenExtendedMiningChannelSuccess(ok) = &out[0] else {
        panic!()
    };
    assert_eq!(ok.extranonce_size, 4);
    assert_eq!(ok.extranonce_prefix.as_bytes(), [0xaa, 0, 3, 0, 0]);
}

#[test]
fn update_channel_retargets_and_unknown_channels_are_answered() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let mut r = Rig::new(1);
    r.setup(0);
    let (id, _) = r.open_standard(&p, 3, 0.0);
    let update = |channel_id, nominal_hash_rate| {
        Message::UpdateChannel(UpdateChannel {
            channel_id,
            nominal_hash_rate,
            maximum_target: [0xff; 32],
        })
    };
    // 1 TH/s at 20 shares a minute: a difficulty near 698.
    r.send(1.0, update(id, 1e12)).unwrap();
    let out = r.out();
    assert_eq!(names(&out), ["SetTarget", "NewMiningJob"]);
    let d = r.s.channel(id).unwrap().shared.difficulty.get();
    assert!((d / 698.5 - 1.0).abs() < 0.01, "{d}");
    let Message::NewMiningJob(j) = &out[1] else {
        panic!()
    };
    assert!(
        j.min_ntime.is_some(),
        "the same previous hash: an active job"
    );
    r.send(1.0, update(99, 1e12)).unwrap();
    assert_eq!(names(&r.out()), ["UpdateChannel.Error"]);
    r.send(1.0, update(id, f32::NAN)).unwrap();
    assert_eq!(names(&r.out()), ["UpdateChannel.Error"]);
}

#[test]
fn shares_are_acknowledged_in_batches_and_rejections_one_by_one() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let mut r = Rig::new(2);
    r.setup(0);
    let (id, out) = r.open_standard(&p, 3, 0.0);
    let job = &out[1..];
    r.send(1.0, standard_share(id, 1, job, EASY)).unwrap();
    assert!(
        r.out().is_empty(),
        "the batch waits for a second share or the flush"
    );
    assert_eq!(
        r.s.poll_timeout(),
        r.at(1.0),
        "ack_delay 0: flushed at once"
    );
    r.s.handle_timeout(r.at(1.0)).unwrap();
    assert_eq!(names(&r.out()), ["SubmitShares.Success"]);
    assert_eq!(r.s.take_touched(), [id]);
    r.send(1.1, standard_share(id, 2, job, EASY)).unwrap();
    // The same share again: the pending ack goes first, then the duplicate's error.
    r.send(1.1, standard_share(id, 2, job, EASY)).unwrap();
    let out = r.out();
    assert_eq!(names(&out), ["SubmitShares.Success", "SubmitShares.Error"]);
    let Message::SubmitSharesError(e) = &out[1] else {
        panic!()
    };
    assert_eq!(e.error_code.to_string_lossy(), "duplicate-share");
    r.send(1.2, standard_share(99, 3, job, EASY)).unwrap();
    let out = r.out();
    let Message::SubmitSharesError(e) = &out[0] else {
        panic!()
    };
    assert_eq!(e.error_code.to_string_lossy(), "invalid-channel-id");
}

#[test]
fn shares_meeting_the_pool_target_go_up_and_the_verdict_is_relayed() {
    let mut p = pool(work(5, &[0xaa], Some(job(5, 1, true, EASY))));
    let mut r = Rig::new(1);
    r.setup(0);
    let (id, out) = r.open_standard(&p, 3, 0.0);
    r.send(1.0, standard_share(id, 1, &out[1..], EASY)).unwrap();
    let Some(Action::Submit(up)) = r.s.poll_action() else {
        panic!("not sent up")
    };
    assert_eq!((up.channel, up.sequence_number), (id, 1));
    assert_eq!(up.submit.extranonce2, [0, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&*up.submit.worker, "farm.rig1");
    r.s.handle_verdict(
        Verdict {
            channel: id,
            sequence_number: 1,
            outcome: SubmitOutcome::Rejected(hashshift_protocol::sv1::StratumError::new(
                hashshift_protocol::sv1::ErrorCode::JobNotFound,
            )),
            credited: up.credited,
            read_at: up.read_at,
        },
        r.at(1.5),
    );
    let out = r.out();
    let Message::SubmitSharesError(e) = &out[0] else {
        panic!()
    };
    assert_eq!(e.error_code.to_string_lossy(), "stale-share");
    // A full pool queue: lost, answered as stale.
    r.s.handle_submit_failed(id, 2, r.at(2.0), r.at(2.0));
    assert_eq!(names(&r.out()), ["SubmitShares.Error"]);
    assert_eq!(r.s.channel(id).unwrap().shared.counters.snapshot().lost, 1);
    assert!(
        p.shares.try_recv().is_err(),
        "the state machine itself sends nothing"
    );
}

#[test]
fn the_500th_unexpected_message_drops_the_miner() {
    let mut r = Rig::new(1);
    r.setup(0);
    let stray = || setup_message(0);
    // SetupConnection.Success from a miner is unexpected, not a violation.
    let unexpected = || {
        Message::SetupConnectionSuccess(SetupConnectionSuccess {
            used_version: 2,
            flags: 0,
        })
    };
    for _ in 0..MAX_CONSECUTIVE_ERRORS - 1 {
        r.send(0.0, unexpected()).unwrap();
    }
    assert!(matches!(r.send(0.0, unexpected()), Err(End::TooManyErrors)));
    assert!(matches!(r.send(0.0, stray()), Err(End::Protocol(_))));
}

#[test]
fn group_jobs_go_once_to_the_group_when_every_channel_is_on_the_job() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let mut r = Rig::new(1);
    r.setup(0);
    let (a, _) = r.open_standard(&p, 3, 0.0);
    let (b, _) = r.open_standard(&p, 4, 0.0);
    let next = job(5, 2, true, HARD);
    let w = work(5, &[0xaa], Some(next));
    p.work.send_replace(w.clone());
    let generation = r.s.channel(a).unwrap().generation;
    r.s.handle_work(a, generation, &w, r.at(1.0));
    let out = r.out();
    assert_eq!(names(&out), ["NewExtendedMiningJob", "SetNewPrevHash"]);
    assert_eq!(out[0].channel_id(), Some(GROUP_CHANNEL_ID));
    // The other channel's own wake-up for the same work sends nothing more.
    r.s.handle_work(b, generation, &w, r.at(1.0));
    assert!(r.out().is_empty());

    // A miner that asked for standard jobs gets one per channel.
    let mut r = Rig::new(1);
    r.setup(setup_flags::REQUIRES_STANDARD_JOBS);
    let (a, _) = r.open_standard(&p, 5, 0.0);
    r.open_standard(&p, 6, 0.0);
    let w = work(5, &[0xaa], Some(job(5, 3, true, HARD)));
    p.work.send_replace(w.clone());
    r.s.handle_work(a, 0, &w, r.at(1.0));
    assert_eq!(names(&r.out()), ["NewMiningJob", "SetNewPrevHash"]);
}

#[test]
fn failover_moves_a_channel_with_set_extranonce_prefix() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let q = pool(work(9, &[0xcc, 0xdd], Some(job(9, 7, true, HARD))));
    let mut r = Rig::new(1);
    r.setup(0);
    let (id, _) = r.open_standard(&p, 3, 0.0);
    let generation = r.s.handle_reassigned(id, assignment(&q, 8)).unwrap();
    // Work from the old connection, still in flight, is ignored.
    r.s.handle_work(
        id,
        generation - 1,
        &p.handle.work.borrow().clone(),
        r.at(1.0),
    );
    assert!(r.out().is_empty());
    r.s.handle_work(id, generation, &q.handle.work.borrow().clone(), r.at(1.0));
    let out = r.out();
    assert_eq!(
        names(&out),
        ["SetExtranoncePrefix", "NewMiningJob", "SetNewPrevHash"]
    );
    let Message::SetExtranoncePrefix(m) = &out[0] else {
        panic!()
    };
    assert_eq!(
        m.extranonce_prefix.as_bytes(),
        [0xcc, 0xdd, 0, 8, 0, 0, 0, 0, 0, 0]
    );
}

#[test]
fn an_open_channel_that_hears_nothing_for_the_idle_timeout_is_dropped() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let mut r = Rig::new(1);
    r.setup(0);
    r.open_standard(&p, 3, 0.0);
    let mut t = 0.0;
    let end = loop {
        t += TICK.as_secs_f64();
        if t == 30.0 {
            r.s.handle_heard();
        }
        if let Err(e) = r.s.handle_timeout(r.at(t)) {
            break e;
        }
        assert!(t < 200.0);
    };
    assert!(matches!(end, End::Idle(60)));
    // Heard just before the 30 s tick, silent after: dropped a timeout later.
    assert_eq!(t, 30.0 + IDLE.as_secs_f64());
}

#[test]
fn closing_a_channel_flushes_its_acks_and_releases_its_slot() {
    let p = pool(work(5, &[0xaa], Some(job(5, 1, true, HARD))));
    let mut r = Rig::new(8);
    r.setup(0);
    let (id, out) = r.open_standard(&p, 3, 0.0);
    r.send(1.0, standard_share(id, 1, &out[1..], EASY)).unwrap();
    let record = r.s.channel(id).unwrap().shared.id;
    r.send(
        1.0,
        Message::CloseChannel(hashshift_protocol::sv2::CloseChannel {
            channel_id: id,
            reason_code: Str0255::truncated("bye"),
        }),
    )
    .unwrap();
    assert_eq!(names(&r.out()), ["SubmitShares.Success"]);
    let actions: Vec<_> = std::iter::from_fn(|| r.s.poll_action()).collect();
    assert!(
        matches!(actions[..], [Action::Release(a), Action::Closed(c)] if a == record && c == id)
    );
    assert!(r.s.channel(id).is_none());
}
