//! Checks shared by the admin-socket and HTTP request targets: a control request read from
//! either entrance goes through `limits::check_request` as the control plane does, with and
//! without a site cap.

use hashshift_proxy::control::admin::protocol::{Command, Request, Target};
use hashshift_proxy::control::limits::{
    KW_CAP_MULTIPLE, MAX_CURTAILMENT, MAX_EVENTS, MAX_NAME_BYTES, MAX_REASON_BYTES, check_request,
};
use serde_json::Value;

/// "Now" for the checks (Unix seconds, 2027).
pub const NOW: u64 = 1_800_000_000;

/// Site caps the checks run with: none (no power control), a real one, and zero.
const CAPS: [Option<f64>; 3] = [None, Some(1000.0), Some(0.0)];

fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(char::is_control)
}

fn reason_ok(reason: &Option<String>) -> bool {
    reason.as_deref().is_none_or(|r| {
        r.len() <= MAX_REASON_BYTES && !r.chars().any(|c| c.is_control() && c != '\t')
    })
}

fn kw_ok(kw: f64, cap: Option<f64>) -> bool {
    cap.is_none_or(|cap| kw.is_finite() && kw >= 0.0 && kw <= cap * KW_CAP_MULTIPLE)
}

/// What `check_request` accepted is within every documented limit.
fn assert_within(r: &Request, cap: Option<f64>) {
    assert!(r.by.as_deref().is_none_or(name_ok), "by: {:?}", r.by);
    let target_ok = |t: &Target| match t {
        Target::Rig(n) | Target::Group(n) => name_ok(n),
        Target::Kw(kw) => kw_ok(*kw, cap),
        Target::All => true,
    };
    let ok = match &r.command {
        Command::Rigs | Command::Pools | Command::Power | Command::Cluster => true,
        Command::Rig { id } | Command::Kick { id } => name_ok(id),
        Command::Events { limit } => limit.is_none_or(|l| l <= MAX_EVENTS),
        Command::Drain { target, reason } | Command::Resume { target, reason } => {
            target_ok(target) && reason_ok(reason)
        }
        Command::Curtail {
            kw,
            until_unix,
            reason,
        } => {
            kw.is_finite()
                && *kw >= 0.0
                && kw_ok(*kw, cap)
                && (NOW..=NOW + MAX_CURTAILMENT.as_secs()).contains(until_unix)
                && reason_ok(reason)
        }
        Command::CurtailClear { reason } => reason_ok(reason),
        Command::GpuRequest { kw, reason } => {
            kw.is_finite() && *kw >= 0.0 && kw_ok(*kw, cap) && reason_ok(reason)
        }
        Command::Forget { id, reason } => name_ok(id) && reason_ok(reason),
    };
    assert!(ok, "accepted out of limits: {r:?} (cap {cap:?})");
}

/// JSON values equal up to float rounding (serde_json's default float parser is best-effort:
/// a number may read back one ulp off after printing).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= f64::EPSILON * 4.0 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Runs `request` through the limits and the admin wire format.
pub fn check(request: &Request) {
    for cap in CAPS {
        match check_request(request.clone(), cap, NOW) {
            Ok(checked) => {
                assert_within(&checked, cap);
                // Only the events limit is rewritten, and checking again changes nothing.
                if !matches!(request.command, Command::Events { .. }) {
                    assert_eq!(&checked, request);
                }
                assert_eq!(check_request(checked.clone(), cap, NOW), Ok(checked));
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
    // The admin socket's line for the request reads back as the same request.
    let line = serde_json::to_string(request).expect("a request encodes");
    let back: Request = serde_json::from_str(&line).expect("our own line decodes");
    let (a, b) = (
        serde_json::to_value(request).expect("encodes"),
        serde_json::to_value(&back).expect("encodes"),
    );
    assert!(same_json(&a, &b), "{line} read back as {back:?}");
}
