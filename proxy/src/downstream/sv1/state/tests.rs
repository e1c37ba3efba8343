//! The SV1 state machine driven directly: message orders real firmware uses, pool waits,
//! timers, vardiff, failover, share outcomes and the error limit. Time is a plain
//! `Instant` the tests move by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hashshift_protocol::share::Target;
use hashshift_protocol::share::hash::sha256d;
use hashshift_protocol::sv1::{ServerCodec, StratumError};
use serde_json::{Value, json};
use tokio_util::codec::Decoder;

use super::*;
use crate::downstream::vardiff::VardiffSettings;
use crate::pool_link::submit::SubmitOutcome;
use crate::pool_link::work::test_job as job;
use crate::telemetry::DownstreamStats;

mod shares;

/// A miner difficulty low enough that a share takes a few dozen hashes.
const EASY: f64 = 1e-8;
/// A pool difficulty no test share meets: shares are answered by the proxy.
const HARD: f64 = 1e12;
const HANDSHAKE: Duration = Duration::from_secs(10);
const IDLE: Duration = Duration::from_secs(600);

fn settings() -> Arc<SessionSettings> {
    Arc::new(SessionSettings {
        vardiff: VardiffSettings {
            min: 1e-10,
            max: 1e15,
            shares_per_minute: 20.0,
        },
        initial_difficulty: EASY,
        max_line_bytes: 4096,
        max_outbox_bytes: 1 << 20,
        handshake_timeout: HANDSHAKE,
        idle_timeout: IDLE,
        write_timeout: Duration::from_secs(10),
        drain_grace: Duration::from_secs(5),
        stats: Arc::new(DownstreamStats::new("sv1")),
    })
}

/// A pool connection's work: extranonce1 `en1`, 8 bytes of extranonce2, rolling mask `mask`.
fn work(session: u64, en1: &[u8], mask: u32, job: Option<Arc<UpstreamJob>>) -> Arc<WorkState> {
    Arc::new(WorkState {
        session,
        extranonce1: Bytes::copy_from_slice(en1),
        extranonce2_size: 8,
        difficulty: 1e9,
        target: Target::DIFF1,
        version_mask: mask,
        job,
    })
}

const PLACE: Place = Place {
    slot: 7,
    prefix_bytes: 2,
};

/// The state machine, an outbox, and the clock.
struct Rig {
    s: Session,
    out: Outbox,
    t0: Instant,
    shared: Arc<MinerShared>,
}

impl Rig {
    fn new() -> Rig {
        let t0 = Instant::now();
        let shared = Arc::new(MinerShared::new(0x2a, "127.0.0.1:4000".parse().unwrap()));
        Rig {
            s: Session::new(settings(), shared.clone(), t0),
            out: Outbox::new(1 << 20),
            t0,
            shared,
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Feeds one line at time `secs`.
    fn line(&mut self, secs: f64, text: &str) -> Result<(), End> {
        let mut codec = ServerCodec::with_max_line_len(4096);
        let mut buf = BytesMut::from(format!("{text}\n").as_bytes());
        let item = codec.decode(&mut buf).unwrap().unwrap();
        let now = self.at(secs);
        self.s.handle_line(item, now, &mut self.out)
    }

    /// Everything written so far, as JSON values (and clears it).
    fn sent(&mut self) -> Vec<Value> {
        let bytes = self.out.buf_mut().split();
        bytes
            .as_ref()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    /// Answers a pool request with a place and `w`.
    fn assign(&mut self, secs: f64, w: Arc<WorkState>) -> Result<(), End> {
        self.s.handle_assigned(PLACE);
        let now = self.at(secs);
        self.s.handle_work(w, now, &mut self.out)
    }

    /// subscribe (answered from `w`) and authorize `worker`: the usual cgminer order.
    fn start(&mut self, w: Arc<WorkState>) -> Vec<Value> {
        self.line(
            0.0,
            r#"{"id":1,"method":"mining.subscribe","params":["cgminer/4.11"]}"#,
        )
        .unwrap();
        assert!(matches!(self.actions()[..], [Action::RequestPool]));
        self.assign(0.1, w).unwrap();
        self.line(
            0.2,
            r#"{"id":2,"method":"mining.authorize","params":["w1","x"]}"#,
        )
        .unwrap();
        self.sent()
    }
}

fn method(v: &Value) -> &str {
    v["method"].as_str().unwrap_or("")
}

fn methods(vs: &[Value]) -> Vec<&str> {
    vs.iter()
        .map(|v| {
            if v["method"].is_null() {
                "reply"
            } else {
                method(v)
            }
        })
        .collect()
}

/// `mining.notify` job id and clean flag.
fn notify(v: &Value) -> (String, bool) {
    assert_eq!(method(v), "mining.notify", "{v}");
    let p = &v["params"];
    (p[0].as_str().unwrap().to_owned(), p[8].as_bool().unwrap())
}

/// extranonce1 from a subscribe reply.
fn extranonce1(reply: &Value) -> Vec<u8> {
    hex::decode(reply["result"][1].as_str().unwrap()).unwrap()
}

/// A `mining.submit` line for `job_id` whose hash meets [`EASY`] (`want`) or not.
fn share(
    id: u32,
    worker: &str,
    job_id: &str,
    up: &UpstreamJob,
    en1: &[u8],
    en2: u32,
    want: bool,
) -> String {
    let target = Target::from_difficulty(EASY).unwrap();
    // The miner rolls 6 bytes (8 from the pool, 2 kept for its slot).
    let mut bytes = [0u8; 6];
    bytes[2..].copy_from_slice(&en2.to_be_bytes());
    let en2 = bytes;
    let ntime = up.job.ntime;
    let nonce = (0u32..)
        .find(|&n| {
            let header = up.job.header(en1, &en2, ntime, n, up.job.version);
            target.is_met_by(&sha256d(&header)) == want
        })
        .unwrap();
    json!({"id": id, "method": "mining.submit",
        "params": [worker, job_id, hex::encode(en2), format!("{ntime:08x}"), format!("{nonce:08x}")]})
    .to_string()
}

#[test]
fn subscribe_waits_for_a_pool_then_authorize_starts_work() {
    let mut r = Rig::new();
    let up = job(5, 1, true, HARD);
    let sent = r.start(work(5, &[0xaa, 0xbb], 0, Some(up.clone())));
    assert_eq!(
        methods(&sent),
        ["reply", "reply", "mining.set_difficulty", "mining.notify"]
    );
    assert_eq!(sent[0]["id"], 1);
    // extranonce1 = pool extranonce1 ‖ the miner's slot (2 bytes); 6 bytes left to roll.
    assert_eq!(extranonce1(&sent[0]), [0xaa, 0xbb, 0, 7]);
    assert_eq!(sent[0]["result"][2], 6);
    assert_eq!(sent[1]["result"], true);
    assert_eq!(sent[2]["params"][0], EASY);
    assert_eq!(notify(&sent[3]), (format!("{:x}", up.id), true));
    assert!(r.s.is_working());
    assert_eq!(r.shared.worker().as_deref(), Some("w1"));
}

#[test]
fn lines_after_a_waiting_request_are_answered_in_order_once_the_pool_is_ready() {
    // Antminer order: configure first, then subscribe and authorize in one burst.
    let mut r = Rig::new();
    r.line(0.0, r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"1fffe000"}]}"#).unwrap();
    r.line(0.0, r#"{"id":2,"method":"mining.subscribe","params":[]}"#)
        .unwrap();
    r.line(
        0.0,
        r#"{"id":3,"method":"mining.authorize","params":["w1","x"]}"#,
    )
    .unwrap();
    assert!(r.s.awaiting_pool());
    assert!(
        r.sent().is_empty(),
        "nothing is answered before a pool has work"
    );
    assert!(matches!(r.actions()[..], [Action::RequestPool]));
    // A place, but the connection has no job yet: still waiting.
    r.assign(0.5, work(0, &[], 0, None)).unwrap();
    assert!(r.s.awaiting_pool() && r.sent().is_empty());
    let w = work(5, &[0xaa], 0x1fff_e000, Some(job(5, 1, true, HARD)));
    r.s.handle_work(w, r.at(0.7), &mut r.out).unwrap();
    let sent = r.sent();
    assert_eq!(
        methods(&sent),
        [
            "reply",
            "reply",
            "reply",
            "mining.set_difficulty",
            "mining.notify"
        ]
    );
    let ids: Vec<_> = sent[..3]
        .iter()
        .map(|v| v["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(sent[0]["result"]["version-rolling"], true);
    assert_eq!(sent[0]["result"]["version-rolling.mask"], "1fffe000");
    assert!(!r.s.awaiting_pool());
}

#[test]
fn authorize_before_subscribe_and_configure_after_it_need_no_second_pool_request() {
    let mut r = Rig::new();
    r.line(
        0.0,
        r#"{"id":1,"method":"mining.authorize","params":["w1","x"]}"#,
    )
    .unwrap();
    assert_eq!(methods(&r.sent()), ["reply"], "no work before subscribe");
    assert!(r.actions().is_empty(), "authorize needs no pool");
    r.line(0.1, r#"{"id":2,"method":"mining.subscribe","params":[]}"#)
        .unwrap();
    assert!(matches!(r.actions()[..], [Action::RequestPool]));
    r.assign(
        0.2,
        work(5, &[0xaa], 0x1fff_e000, Some(job(5, 1, true, HARD))),
    )
    .unwrap();
    assert_eq!(
        methods(&r.sent()),
        ["reply", "mining.set_difficulty", "mining.notify"]
    );
    // Whatsminer sends configure after subscribe: answered at once, no mask notification.
    r.line(0.3, r#"{"id":3,"method":"mining.configure","params":[["version-rolling","subscribe-extranonce"],{"version-rolling.mask":"00ffe000"}]}"#).unwrap();
    assert!(r.actions().is_empty());
    let sent = r.sent();
    assert_eq!(sent[0]["result"]["version-rolling.mask"], "00ffe000");
    assert_eq!(sent[0]["result"]["subscribe-extranonce"], true);
    assert!(r.shared.is_movable());
}

#[test]
fn no_pool_is_asked_again_on_the_sessions_deadline_then_given_up() {
    let mut r = Rig::new();
    r.line(1.0, r#"{"id":1,"method":"mining.subscribe","params":[]}"#)
        .unwrap();
    assert!(matches!(r.actions()[..], [Action::RequestPool]));
    r.s.handle_no_pool(r.at(1.0)).unwrap();
    assert_eq!(r.s.poll_timeout(), r.at(1.0) + ASSIGN_RETRY);
    r.s.handle_timeout(r.at(1.2), &mut r.out).unwrap();
    assert!(matches!(r.actions()[..], [Action::RequestPool]));
    // The handshake deadline (10 s after connecting) waits while the pool wait runs; the
    // pool wait ends 10 s after the request.
    r.s.handle_no_pool(r.at(10.5)).unwrap();
    r.s.handle_timeout(r.at(10.7), &mut r.out).unwrap();
    assert!(matches!(r.actions()[..], [Action::RequestPool]));
    assert!(matches!(r.s.handle_no_pool(r.at(11.0)), Err(End::NoPool)));
}

#[test]
fn a_place_whose_connection_never_gets_work_ends_at_the_wait_deadline() {
    let mut r = Rig::new();
    r.line(0.0, r#"{"id":1,"method":"mining.subscribe","params":[]}"#)
        .unwrap();
    r.actions();
    r.assign(0.0, work(0, &[], 0, None)).unwrap();
    assert_eq!(r.s.poll_timeout(), r.at(0.0) + VARDIFF_TICK);
    r.s.handle_timeout(r.at(5.0), &mut r.out).unwrap();
    assert!(matches!(
        r.s.handle_timeout(r.at(10.0), &mut r.out),
        Err(End::NoPool)
    ));
}

#[test]
fn handshake_and_idle_deadlines() {
    let mut r = Rig::new();
    assert_eq!(
        r.s.poll_timeout(),
        r.at(5.0),
        "the vardiff tick comes first"
    );
    r.s.handle_timeout(r.at(5.0), &mut r.out).unwrap();
    assert!(matches!(
        r.s.handle_timeout(r.at(10.0), &mut r.out),
        Err(End::HandshakeTimeout)
    ));

    let mut r = Rig::new();
    r.start(work(5, &[0xaa], 0, Some(job(5, 1, true, HARD))));
    let idle = IDLE.as_secs_f64();
    r.s.handle_heard(r.at(100.0));
    // The first idle check finds the miner heard since: it moves to 100 s + the timeout.
    r.s.handle_timeout(r.at(idle), &mut r.out).unwrap();
    assert!(r.s.poll_timeout() <= r.at(100.0 + idle));
    r.s.handle_timeout(r.at(100.0 + idle - 1.0), &mut r.out)
        .unwrap();
    assert!(matches!(
        r.s.handle_timeout(r.at(100.0 + idle), &mut r.out),
        Err(End::Idle(600))
    ));
}

#[test]
fn extranonce_subscribe_and_suggest_difficulty() {
    let mut r = Rig::new();
    r.line(
        0.0,
        r#"{"id":1,"method":"mining.extranonce.subscribe","params":[]}"#,
    )
    .unwrap();
    assert_eq!(r.sent()[0]["result"], true);
    assert!(r.shared.is_movable());
    // NiceHash style: suggest_difficulty as a notification (null id) before subscribe.
    r.line(
        0.0,
        r#"{"id":null,"method":"mining.suggest_difficulty","params":[0.001]}"#,
    )
    .unwrap();
    assert!(r.sent().is_empty(), "no reply to a notification");
    let sent = r.start(work(5, &[0xaa], 0, Some(job(5, 1, true, HARD))));
    assert_eq!(
        methods(&sent),
        ["reply", "reply", "mining.set_difficulty", "mining.notify"]
    );
    assert_eq!(sent[2]["params"][0], 0.001);
    // A suggestion once working: set_difficulty and the job again under a new id, not clean.
    r.line(
        1.0,
        r#"{"id":5,"method":"mining.suggest_difficulty","params":[0.002]}"#,
    )
    .unwrap();
    let sent = r.sent();
    assert_eq!(
        methods(&sent),
        ["reply", "mining.set_difficulty", "mining.notify"]
    );
    assert_eq!(sent[1]["params"][0], 0.002);
    assert!(!notify(&sent[2]).1);
}

#[test]
fn a_long_line_ends_the_session() {
    let mut r = Rig::new();
    let long = Err(Sv1Error::LineTooLong { max: 4096 });
    assert!(matches!(
        r.s.handle_line(long, r.t0, &mut r.out),
        Err(End::LineTooLong(4096))
    ));
}

#[test]
fn failover_moves_an_extranonce_subscriber_and_reconnects_the_others() {
    let mut r = Rig::new();
    r.line(
        0.0,
        r#"{"id":0,"method":"mining.extranonce.subscribe","params":[]}"#,
    )
    .unwrap();
    let sent = r.start(work(5, &[0xaa], 0, Some(job(5, 1, true, HARD))));
    assert_eq!(extranonce1(&sent[1]), [0xaa, 0, 7]);
    // Moved to another pool's connection, slot 9.
    r.s.handle_reassigned(Place {
        slot: 9,
        prefix_bytes: 2,
    });
    let other = job(8, 4, false, HARD);
    r.s.handle_work(
        work(8, &[0xcc, 0xdd], 0, Some(other.clone())),
        r.at(5.0),
        &mut r.out,
    )
    .unwrap();
    let sent = r.sent();
    assert_eq!(
        methods(&sent),
        [
            "mining.set_extranonce",
            "mining.set_difficulty",
            "mining.notify"
        ]
    );
    assert_eq!(sent[0]["params"], json!(["ccdd0009", 6]));
    assert!(
        notify(&sent[2]).1,
        "the first job of a new extranonce is clean"
    );

    // A miner without extranonce.subscribe is sent back to the proxy to reconnect.
    let mut r = Rig::new();
    r.start(work(5, &[0xaa], 0, Some(job(5, 1, true, HARD))));
    r.s.handle_reassigned(Place {
        slot: 9,
        prefix_bytes: 2,
    });
    let moved =
        r.s.handle_work(work(8, &[0xcc], 0, Some(other)), r.at(5.0), &mut r.out);
    assert!(matches!(moved, Err(End::Reconnected)));
    assert_eq!(methods(&r.sent()), ["client.reconnect"]);
}

#[test]
fn new_jobs_follow_the_pool_and_the_version_mask_follows_it_too() {
    let mut r = Rig::new();
    r.line(0.0, r#"{"id":0,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}"#).unwrap();
    r.start(work(5, &[0xaa], 0x1fff_e000, Some(job(5, 1, true, HARD))));
    // Same session, a new job that is not clean: sent as the pool's (shared) notify line.
    let next = job(5, 1, false, HARD);
    let w = work(5, &[0xaa], 0x1fff_e000, Some(next.clone()));
    r.s.handle_work(w.clone(), r.at(1.0), &mut r.out).unwrap();
    let sent = r.sent();
    assert_eq!(notify(&sent[0]), (format!("{:x}", next.id), false));
    // The same work again (a spurious wake-up) sends nothing.
    r.s.handle_work(w, r.at(1.1), &mut r.out).unwrap();
    assert!(r.sent().is_empty());
    // The pool narrows its mask: the miner hears of it before the next job.
    let narrower = work(5, &[0xaa], 0x0000_e000, Some(job(5, 1, false, HARD)));
    r.s.handle_work(narrower, r.at(2.0), &mut r.out).unwrap();
    let sent = r.sent();
    assert_eq!(methods(&sent), ["mining.set_version_mask", "mining.notify"]);
    assert_eq!(sent[0]["params"][0], "0000e000");
}
