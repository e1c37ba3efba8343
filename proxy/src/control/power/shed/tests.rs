//! The shed follow-up alone (pure steps), then with the controller's shed calls
//! ([`ops::shed`]) against a fake scheduler that fails, hangs or stays above its grant, on
//! paused tokio time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::*;
use crate::control::power::ops::{self, Done, Op};
use crate::control::power::ports::{BoxFuture, GpuControl, GpuLoad, PortError};
use crate::error::{Retry, Side};

fn kw(x: f64) -> Watts {
    Watts::from_kw(x)
}

const DEADLINE: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(4);

fn sends(steps: &[ShedStep]) -> Vec<f64> {
    steps
        .iter()
        .filter_map(|s| match s {
            ShedStep::Send { kw, .. } => Some(*kw),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_up_to_the_cap() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    t.handle_ask(t0, kw(4.0), kw(2.0), "Curtailment".into());
    assert_eq!(sends(&t.poll(t0)), [4.0], "the first call goes out at once");
    assert!(t.poll(t0).is_empty(), "one call in flight at a time");
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..7 {
        assert_eq!(t.handle_result(now, Err("boom".into()), false), None);
        let next = t.poll_at().expect("a retry is due");
        waits.push(next.duration_since(now).as_secs());
        assert!(t.poll(next - Duration::from_millis(1)).is_empty());
        now = next;
        assert_eq!(sends(&t.poll(now)), [4.0]);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(t.current().map(|s| s.attempts), Some(8));
    assert_eq!(t.status().calls_total, 8);
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_ends_a_shed_without_polled_demand() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    t.handle_ask(t0, kw(4.0), kw(2.0), "r".into());
    t.poll(t0);
    let step = t.handle_result(t0 + Duration::from_secs(3), Ok(()), false);
    assert_eq!(
        step,
        Some(ShedStep::Done {
            attempts: 1,
            took: Duration::from_secs(3),
            how: "the scheduler acknowledged the shed",
        })
    );
    assert!(t.current().is_none());
    assert!(t.poll_at().is_none());
}

#[tokio::test(start_paused = true)]
async fn nothing_to_shed_starts_nothing() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    t.handle_ask(t0, Watts::ZERO, kw(2.0), "r".into());
    assert!(t.current().is_none());
    assert!(t.poll(t0).is_empty());
    assert_eq!(
        t.handle_in_use(t0, kw(9.0)),
        None,
        "reports alone start nothing"
    );
    assert_eq!(t.handle_grant(kw(0.0)), None);
    assert!(t.current().is_none());
}

#[tokio::test(start_paused = true)]
async fn with_polled_demand_only_a_report_at_or_below_the_grant_ends_it() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    t.handle_ask(t0, kw(4.0), kw(2.0), "r".into());
    t.poll(t0);
    assert_eq!(t.handle_result(t0, Ok(()), true), None);
    // Not sent again before the reports could reflect it.
    assert_eq!(t.poll_at(), Some(t0 + SETTLE));
    assert_eq!(t.handle_in_use(t0 + Duration::from_secs(2), kw(3.0)), None);
    // What is sent next is what the report says is still over.
    assert_eq!(sends(&t.poll(t0 + SETTLE)), [1.0]);
    let done = t.handle_in_use(t0 + Duration::from_secs(5), kw(2.0));
    assert!(
        matches!(done, Some(ShedStep::Done { attempts: 2, .. })),
        "{done:?}"
    );
    // A late result of the call in flight is ignored.
    assert_eq!(t.handle_result(t0, Ok(()), true), None);
}

#[tokio::test(start_paused = true)]
async fn a_second_cut_merges_and_is_sent_when_the_call_in_flight_returns() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    // Grant 6 → 4 (shed 2), then 4 → 1 (shed 3) while the first call is out.
    t.handle_ask(t0, kw(2.0), kw(4.0), "a".into());
    assert_eq!(sends(&t.poll(t0)), [2.0]);
    let t1 = t0 + Duration::from_secs(10);
    t.handle_ask(t1, kw(3.0), kw(1.0), "b".into());
    assert!(t.poll(t1).is_empty(), "still one call at a time");
    // The first call's success does not cover the larger shed: sent again at once.
    assert_eq!(t.handle_result(t1, Ok(()), false), None);
    let steps = t.poll(t1);
    assert_eq!(sends(&steps), [5.0]);
    let s = t.current().expect("in progress");
    assert_eq!(
        s.started, t0,
        "a merge keeps the first start (and deadline)"
    );
    assert_eq!(s.reason, "b");
    assert!(matches!(
        t.handle_result(t1, Ok(()), false),
        Some(ShedStep::Done { attempts: 2, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_grant_that_rises_back_ends_the_shed() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    t.handle_ask(t0, kw(4.0), kw(2.0), "r".into());
    t.poll(t0);
    t.handle_result(t0, Err("down".into()), false);
    assert_eq!(t.handle_grant(kw(5.0)), None, "still 1 kW over");
    assert_eq!(
        t.handle_grant(kw(6.0)),
        Some(ShedStep::NoLongerNeeded {
            grant: kw(6.0),
            attempts: 1
        })
    );
    assert!(t.current().is_none());
}

#[tokio::test(start_paused = true)]
async fn past_its_deadline_a_shed_is_escalated_once_and_retried_on() {
    let mut t = ShedTracker::new(Duration::from_secs(10), SETTLE);
    let t0 = Instant::now();
    t.handle_ask(t0, kw(4.0), kw(2.0), "r".into());
    let mut now = t0;
    let mut overdue = Vec::new();
    let mut calls = 0;
    while now < t0 + Duration::from_secs(200) {
        for step in t.poll(now) {
            match step {
                ShedStep::Send { .. } => {
                    calls += 1;
                    t.handle_result(now, Err("refused".into()), false);
                }
                ShedStep::Overdue { .. } => overdue.push((now - t0, step)),
                other => panic!("{other:?}"),
            }
        }
        now = t.poll_at().expect("always something due");
    }
    assert_eq!(overdue.len(), 1, "{overdue:?}");
    let (at, step) = &overdue[0];
    assert_eq!(*at, Duration::from_secs(10));
    assert!(
        matches!(step, ShedStep::Overdue { outstanding, in_use, grant, attempts: 4, last_error: Some(e), .. }
            if *outstanding == kw(4.0) && *in_use == kw(6.0) && *grant == kw(2.0) && e == "refused"),
        "{step:?}"
    );
    // Calls at 0, 1, 3, 7, then every 30 s from the escalation: 10 (backoff 8 → 15) ...
    assert!((8..=12).contains(&calls), "{calls}");
    assert_eq!(t.status().overdue_total, 1);
    let s = t.current().expect("still in progress");
    assert!(s.overdue);
}

// ---- with the controller's shed calls and a fake scheduler -----------------------------

/// A scheduler whose shed fails its first `fail` calls, or hangs on every call.
struct FakeGpu {
    fail: u32,
    hang: bool,
    bound: Duration,
    calls: AtomicU32,
}

impl FakeGpu {
    fn new(fail: u32, hang: bool) -> Arc<Self> {
        Arc::new(Self {
            fail,
            hang,
            bound: Duration::from_secs(3),
            calls: AtomicU32::new(0),
        })
    }
}

impl GpuControl for FakeGpu {
    fn set_budget_kw(&self, _kw: f64) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn shed_kw(&self, _kw: f64, _reason: &str) -> BoxFuture<'_, Result<(), PortError>> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let (hang, fail) = (self.hang, n <= self.fail);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            // A call takes a while, like a real webhook or hook.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if fail {
                Err(PortError::new(
                    Side::Scheduler,
                    Retry::Yes,
                    format!("call {n} refused"),
                ))
            } else {
                Ok(())
            }
        })
    }

    fn demand(&self) -> BoxFuture<'_, Result<Option<GpuLoad>, PortError>> {
        Box::pin(async { Ok(None) })
    }

    fn describe(&self) -> String {
        "fake".into()
    }

    fn call_bound(&self) -> Duration {
        self.bound
    }
}

/// Runs the follow-up as the controller does, for at most `limit` of (paused) time:
/// `drawing(t)` is what a polled scheduler reports at `t` since the start (`None`: no polled
/// demand). Returns each step with when it happened.
async fn drive(
    t: &mut ShedTracker,
    gpu: Arc<FakeGpu>,
    drawing: Option<fn(Duration) -> Watts>,
    limit: Duration,
) -> Vec<(Duration, ShedStep)> {
    let t0 = Instant::now();
    t.handle_ask(t0, kw(4.0), kw(2.0), "Curtailment".into());
    let mut ops: FuturesUnordered<Op> = FuturesUnordered::new();
    let mut demand = tokio::time::interval(Duration::from_secs(2));
    let mut log = Vec::new();
    let margin = crate::control::power::controller::GPU_CALL_MARGIN;
    loop {
        for step in t.poll(Instant::now()) {
            if let ShedStep::Send { kw, reason, .. } = &step {
                let bound = gpu.call_bound() + margin;
                ops.push(ops::shed(gpu.clone(), *kw, reason.clone(), bound));
            }
            log.push((t0.elapsed(), step));
        }
        if log.iter().any(|(_, s)| matches!(s, ShedStep::Done { .. })) || t0.elapsed() >= limit {
            return log;
        }
        let at = t.poll_at().unwrap_or(t0 + limit).min(t0 + limit);
        let step = tokio::select! {
            Some(Done::Shed(_, r)) = ops.next(), if !ops.is_empty() => {
                t.handle_result(Instant::now(), r.map_err(|e| e.to_string()), drawing.is_some())
            }
            _ = demand.tick(), if drawing.is_some() => {
                let w = drawing.map(|f| f(t0.elapsed())).unwrap_or_default();
                t.handle_in_use(Instant::now(), w)
            }
            _ = tokio::time::sleep_until(at) => None,
        };
        if let Some(step) = step {
            log.push((t0.elapsed(), step));
        }
    }
}

fn attempts_at(log: &[(Duration, ShedStep)]) -> Vec<u64> {
    log.iter()
        .filter(|(_, s)| matches!(s, ShedStep::Send { .. }))
        .map(|(at, _)| at.as_secs())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_scheduler_that_fails_three_times_is_retried_until_it_acknowledges() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let gpu = FakeGpu::new(3, false);
    let log = drive(&mut t, gpu.clone(), None, Duration::from_secs(60)).await;
    // Each call takes 0.2 s; waits 1, 2, 4 s after each failure.
    assert_eq!(attempts_at(&log), [0, 1, 3, 7], "{log:?}");
    assert!(
        matches!(log.last(), Some((_, ShedStep::Done { attempts: 4, .. }))),
        "{log:?}"
    );
    assert_eq!(gpu.calls.load(Ordering::Relaxed), 4);
    assert!(t.current().is_none());
    assert_eq!(t.status().overdue_total, 0);
}

#[tokio::test(start_paused = true)]
async fn a_polled_scheduler_above_its_grant_is_asked_again_until_it_reports_within_it() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let gpu = FakeGpu::new(0, false);
    // Acknowledges every call, but its jobs only stop after 20 s.
    let drawing: fn(Duration) -> Watts = |at| {
        if at < Duration::from_secs(20) {
            kw(6.0)
        } else {
            kw(1.5)
        }
    };
    let log = drive(&mut t, gpu.clone(), Some(drawing), Duration::from_secs(60)).await;
    let done = log
        .iter()
        .find(|(_, s)| matches!(s, ShedStep::Done { .. }))
        .expect("done");
    assert!(
        matches!(done.1, ShedStep::Done { how, .. } if how.contains("reports")),
        "{done:?}"
    );
    assert!(
        (20..=22).contains(&done.0.as_secs()),
        "done at the first report after 20 s: {log:?}"
    );
    let at = attempts_at(&log);
    assert!(at.len() >= 3, "asked again while above the grant: {log:?}");
    // Never sooner than the settle time after an acknowledged call.
    assert!(at.windows(2).all(|w| w[1] - w[0] >= 4), "{at:?}");
    assert!(
        !log.iter()
            .any(|(_, s)| matches!(s, ShedStep::Overdue { .. })),
        "{log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_scheduler_is_cut_off_at_its_bound_escalated_and_retried() {
    let mut t = ShedTracker::new(Duration::from_secs(30), SETTLE);
    let gpu = FakeGpu::new(0, true);
    let log = drive(&mut t, gpu.clone(), None, Duration::from_secs(120)).await;
    // Each call is cut off after the adapter's bound (3 s) + the margin (5 s).
    let at = attempts_at(&log);
    assert_eq!(&at[..4], [0, 9, 19, 31], "{log:?}");
    let overdue: Vec<_> = log
        .iter()
        .filter(|(_, s)| matches!(s, ShedStep::Overdue { .. }))
        .collect();
    assert_eq!(overdue.len(), 1, "{log:?}");
    assert_eq!(overdue[0].0.as_secs(), 30);
    assert!(
        matches!(&overdue[0].1, ShedStep::Overdue { last_error: Some(e), .. } if e.contains("did not answer")),
        "{overdue:?}"
    );
    // Retried on after the escalation, at most every 30 s plus the cut-off.
    assert!(at.iter().filter(|a| **a > 30).count() >= 2, "{at:?}");
    assert!(t.current().is_some_and(|s| s.overdue));
    assert_eq!(t.status().overdue_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_draw_beyond_the_reachable_grant_starts_a_shed_of_the_excess() {
    let mut t = ShedTracker::new(DEADLINE, SETTLE);
    let t0 = Instant::now();
    // Within reach (mining will make room), or over by rounding: nothing.
    assert_eq!(t.handle_over_grant(t0, kw(5.0), kw(5.0)), None);
    assert_eq!(t.handle_over_grant(t0, kw(5.05), kw(5.0)), None);
    assert!(t.current().is_none());
    // 3 kW beyond (a restart mid-shed: the shed was not persisted): shed the excess.
    assert_eq!(t.handle_over_grant(t0, kw(8.0), kw(5.0)), Some(kw(3.0)));
    assert_eq!(sends(&t.poll(t0)), [3.0]);
    // One shed at a time: a second report does not start another.
    assert_eq!(t.handle_over_grant(t0, kw(9.0), kw(5.0)), None);
    // The scheduler comes within reach: done.
    t.handle_result(t0, Ok(()), true);
    assert!(matches!(
        t.handle_in_use(t0 + SETTLE, kw(5.0)),
        Some(ShedStep::Done { .. })
    ));
}
