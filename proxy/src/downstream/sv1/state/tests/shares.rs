//! Shares through the SV1 state machine: answered by the proxy, sent up and relayed, the
//! consecutive-error limit, and vardiff driven by shares and by silence.

use super::*;

#[test]
fn shares_accepted_duplicate_stale_and_from_unknown_workers() {
    let mut r = Rig::new();
    let up = job(5, 1, true, HARD);
    let sent = r.start(work(5, &[0xaa], 0, Some(up.clone())));
    let en1 = extranonce1(&sent[0]);
    let (id, _) = notify(&sent[3]);
    r.line(
        0.3,
        r#"{"id":3,"method":"mining.authorize","params":["w2","x"]}"#,
    )
    .unwrap();
    r.sent();
    let good = share(10, "w2", &id, &up, &en1, 1, true);
    r.line(1.0, &good).unwrap();
    let first = r.sent();
    assert_eq!(
        first[0]["result"], true,
        "a second authorized worker may submit: {first:?}"
    );
    assert!(r.s.take_touched());
    r.line(1.1, &good.replace("\"id\":10", "\"id\":11"))
        .unwrap();
    assert_eq!(r.sent()[0]["error"][0], 22, "duplicate");
    r.line(1.2, &share(12, "w1", &id, &up, &en1, 2, false))
        .unwrap();
    assert_eq!(r.sent()[0]["error"][0], 23, "low difficulty");
    r.line(1.3, &share(13, "nobody", &id, &up, &en1, 3, true))
        .unwrap();
    assert_eq!(r.sent()[0]["error"][0], 24, "unauthorized worker");
    // A new block: the old job is stale.
    let next = job(5, 2, true, HARD);
    r.s.handle_work(
        work(5, &[0xaa], 0, Some(next.clone())),
        r.at(2.0),
        &mut r.out,
    )
    .unwrap();
    let (new_id, clean) = notify(&r.sent()[0]);
    assert!(clean);
    r.line(2.1, &share(14, "w1", &id, &up, &en1, 4, true))
        .unwrap();
    assert_eq!(r.sent()[0]["error"][0], 21, "stale");
    r.line(2.2, &share(15, "w1", &new_id, &next, &en1, 4, true))
        .unwrap();
    assert_eq!(r.sent()[0]["result"], true);
    let c = r.shared.counters.snapshot();
    assert_eq!((c.accepted, c.rejected), (2, 4));
}

#[test]
fn shares_meeting_the_pool_target_wait_for_its_verdict() {
    let mut r = Rig::new();
    let up = job(5, 1, true, EASY);
    let sent = r.start(work(5, &[0xaa, 0xbb], 0, Some(up.clone())));
    let en1 = extranonce1(&sent[0]);
    let (id, _) = notify(&sent[3]);
    let mut answers = Vec::new();
    for (n, outcome) in [
        (1, SubmitOutcome::Accepted),
        (
            2,
            SubmitOutcome::Rejected(StratumError::new(ErrorCode::DuplicateShare)),
        ),
        (3, SubmitOutcome::Lost("pool connection ended")),
    ] {
        r.line(1.0, &share(20 + n, "w1", &id, &up, &en1, n, true))
            .unwrap();
        let early = r.sent();
        assert!(early.is_empty(), "no answer before the pool's: {early:?}");
        let Some(Action::Submit(s)) = r.s.poll_action() else {
            panic!("share not sent up")
        };
        // The pool sees the proxy's slot prefix before the miner's extranonce2.
        assert_eq!(s.extranonce2, [0, 7, 0, 0, 0, 0, 0, n as u8]);
        assert_eq!(&*s.worker, "w1");
        assert_eq!(s.version_bits, None);
        let v = Verdict {
            id: s.id,
            outcome,
            credited: s.credited,
            read_at: s.read_at,
        };
        r.s.handle_verdict(v, r.at(1.5), &mut r.out).unwrap();
        answers.extend(r.sent());
    }
    let sent = answers;
    assert_eq!(sent[0]["result"], true);
    assert_eq!(sent[1]["error"][0], 22);
    assert_eq!(sent[2]["error"][1], "pool connection ended");
    let c = r.shared.counters.snapshot();
    assert_eq!((c.accepted, c.rejected, c.lost), (1, 1, 1));
    // A full pool queue: the share is answered as lost.
    r.line(2.0, &share(30, "w1", &id, &up, &en1, 9, true))
        .unwrap();
    let Some(Action::Submit(s)) = r.s.poll_action() else {
        panic!()
    };
    r.s.handle_submit_failed(s, r.at(2.0), &mut r.out).unwrap();
    assert_eq!(r.sent()[0]["error"][1], "pool connection unavailable");
}

#[test]
fn the_500th_consecutive_error_drops_the_miner_and_an_accepted_share_resets_the_count() {
    let mut r = Rig::new();
    let up = job(5, 1, true, HARD);
    let sent = r.start(work(5, &[0xaa], 0, Some(up.clone())));
    let en1 = extranonce1(&sent[0]);
    let (id, _) = notify(&sent[3]);
    let bad = r#"{"id":9,"method":"mining.submit","params":["w1","zz","00000000","00000000","00000000"]}"#;
    for _ in 0..MAX_CONSECUTIVE_ERRORS - 1 {
        r.line(1.0, bad).unwrap();
    }
    r.line(1.0, &share(10, "w1", &id, &up, &en1, 1, true))
        .unwrap();
    for _ in 0..MAX_CONSECUTIVE_ERRORS - 1 {
        r.line(1.0, bad).unwrap();
    }
    // Stale shares are not errors: an honest miner sends some after every block.
    r.s.handle_work(
        work(5, &[0xaa], 0, Some(job(5, 2, true, HARD))),
        r.at(2.0),
        &mut r.out,
    )
    .unwrap();
    r.line(2.0, &share(11, "w1", &id, &up, &en1, 2, true))
        .unwrap();
    assert!(matches!(r.line(2.0, bad), Err(End::TooManyErrors)));
    // Lines that do not parse count too.
    let mut r = Rig::new();
    let junk: Result<ClientMessage, Sv1Error> = Err(Sv1Error::NotAnObject);
    for _ in 0..MAX_CONSECUTIVE_ERRORS - 1 {
        r.s.handle_line(junk.clone(), r.t0, &mut r.out).unwrap();
    }
    assert!(matches!(
        r.s.handle_line(junk, r.t0, &mut r.out),
        Err(End::TooManyErrors)
    ));
}

#[test]
fn vardiff_raises_a_flooding_miner_and_halves_a_silent_one() {
    let mut r = Rig::new();
    let up = job(5, 1, true, HARD);
    let sent = r.start(work(5, &[0xaa], 0, Some(up.clone())));
    let en1 = extranonce1(&sent[0]);
    let (id, _) = notify(&sent[3]);
    // 20 shares a minute wanted; 8 in 3 s is a flood: the share that shows it is answered,
    // then set_difficulty and the job again.
    let mut answered = 0;
    let tail = loop {
        r.line(
            3.0,
            &share(100 + answered, "w1", &id, &up, &en1, answered, true),
        )
        .unwrap();
        answered += 1;
        let sent = r.sent();
        if sent.len() > 1 {
            break sent;
        }
        assert!(answered < 10, "no retarget");
    };
    assert_eq!(answered, 8);
    assert_eq!(
        methods(&tail),
        ["reply", "mining.set_difficulty", "mining.notify"]
    );
    let tail = &tail[1..];
    let raised = tail[0]["params"][0].as_f64().unwrap();
    assert!(raised > EASY, "{raised}");
    assert!(!notify(&tail[1]).1, "a re-issue is not clean");
    assert_eq!(r.shared.difficulty.get(), raised);
    // Then silence: after a full window the vardiff tick halves it.
    let mut t = 3.0;
    while t < 130.0 {
        t += VARDIFF_TICK.as_secs_f64();
        r.s.handle_heard(r.at(t));
        r.s.handle_timeout(r.at(t), &mut r.out).unwrap();
    }
    let sent = r.sent();
    assert_eq!(methods(&sent), ["mining.set_difficulty", "mining.notify"]);
    assert_eq!(sent[0]["params"][0].as_f64().unwrap(), raised / 2.0);
}
