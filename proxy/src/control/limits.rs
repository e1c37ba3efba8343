//! The ranges every control input must fall in, checked in one place where it enters: the
//! admin socket and the HTTP API both hand their requests to [`check_request`] (through the
//! control plane), and the power controller uses [`mining_power_w`] on what firmware reports.
//! The config's ranges and the plain firmware reading check live with the config
//! ([`crate::config::ranges`]), which names no other part.
//!
//! A value outside its range is refused with a message that names the field and the limit;
//! nothing here panics, whatever the input. The limits are wide enough for any real site and
//! narrow enough that no arithmetic downstream (`Instant + Duration`, watts as `u64`) can
//! overflow:
//!
//! | input | limit |
//! |---|---|
//! | kW (curtail, gpu-request, drain) | finite, ≥ 0, ≤ [`KW_CAP_MULTIPLE`] × the site cap |
//! | curtailment end | within [now, now + [`MAX_CURTAILMENT`]] (7 days) |
//! | rig ids, group names, `by` | ≤ [`MAX_NAME_BYTES`] bytes, no control characters |
//! | reasons | ≤ [`MAX_REASON_BYTES`] bytes, no control characters but tab |
//! | `events` limit | capped at [`MAX_EVENTS`] |
//! | firmware power reading | finite, > 0, ≤ [`MAX_RIG_POWER_W`](crate::config::ranges::MAX_RIG_POWER_W); mining: ≥ 10 W and ≥ 10% of nameplate |
//! | config deadlines / polls | finite, > 0 (or ≥ 0), ≤ [`MAX_DEADLINE_SECS`] / [`MAX_POLL_SECS`](crate::config::ranges::MAX_POLL_SECS) |

use std::time::Duration;

use super::admin::protocol::{Command, Request, Target};
use crate::config::ranges::{MAX_DEADLINE_SECS, rig_power_w};

/// Longest rig id, group name or operator name (`by`), in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most audit events one `events` request returns (the in-memory log holds as many).
pub const MAX_EVENTS: usize = crate::control::audit::RECENT;
/// A kW figure may be at most this many times the site cap: more is a typo (W for kW) or an
/// attack, never a plan.
pub const KW_CAP_MULTIPLE: f64 = 10.0;
/// Longest curtailment: a grid event lasts hours; a week bounds a typo in `until_unix`.
pub const MAX_CURTAILMENT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Least power a mining rig can draw (W): the smallest ASICs draw ~15 W.
pub const MIN_MINING_W: f64 = 10.0;
/// A mining rig draws at least this share of its nameplate (the deepest underclocking
/// profiles stay near half).
pub const MIN_NAMEPLATE_SHARE: f64 = 0.1;
/// Checks a kW figure for `what` (e.g. `"curtail: kw"`): finite, ≥ 0 and at most
/// [`KW_CAP_MULTIPLE`] × `site_cap_kw`.
pub fn check_kw(what: &str, kw: f64, site_cap_kw: f64) -> Result<f64, String> {
    let max = site_cap_kw * KW_CAP_MULTIPLE;
    if !kw.is_finite() || kw < 0.0 {
        return Err(format!("{what} must be a number >= 0, got {kw}"));
    }
    if kw > max {
        return Err(format!(
            "{what} {kw} is above {max} kW ({KW_CAP_MULTIPLE}x the site cap of {site_cap_kw} kW)"
        ));
    }
    Ok(kw)
}

/// Checks a curtailment's end (Unix seconds) against `now_unix`: within
/// [now, now + [`MAX_CURTAILMENT`]].
pub fn check_until(until_unix: u64, now_unix: u64) -> Result<u64, String> {
    let max = now_unix.saturating_add(MAX_CURTAILMENT.as_secs());
    if until_unix < now_unix {
        return Err(format!(
            "curtail: until_unix {until_unix} is in the past (now {now_unix})"
        ));
    }
    if until_unix > max {
        return Err(format!(
            "curtail: until_unix {until_unix} is more than 7 days ahead (latest {max})"
        ));
    }
    Ok(until_unix)
}

/// A curtailment of `minutes` from `now_unix` as its end (Unix seconds): `minutes` finite, > 0
/// and at most 7 days.
pub fn minutes_to_until(minutes: f64, now_unix: u64) -> Result<u64, String> {
    let max = MAX_CURTAILMENT.as_secs_f64() / 60.0;
    if !(minutes.is_finite() && minutes > 0.0 && minutes <= max) {
        return Err(format!(
            "curtail: minutes must be > 0 and at most {max} (7 days), got {minutes}"
        ));
    }
    // In range, so the product is below 7 days of seconds: the cast cannot saturate.
    Ok(now_unix.saturating_add((minutes * 60.0).ceil() as u64))
}

/// Checks a name (rig id, group name, operator): non-empty, ≤ [`MAX_NAME_BYTES`] bytes, no
/// control characters (they would forge lines in logs and terminals).
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes, longer than {MAX_NAME_BYTES}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// Checks a reason: ≤ [`MAX_REASON_BYTES`] bytes, no control characters but tab.
pub fn check_reason(reason: Option<&str>) -> Result<(), String> {
    let Some(r) = reason else { return Ok(()) };
    if r.len() > MAX_REASON_BYTES {
        return Err(format!(
            "reason is {} bytes, longer than {MAX_REASON_BYTES}",
            r.len()
        ));
    }
    if r.chars().any(|c| c.is_control() && c != '\t') {
        return Err("reason contains a control character".to_owned());
    }
    Ok(())
}

/// Checks every field of a control request. `site_cap_kw` is `None` without power control
/// (then kW figures are only checked to be finite and >= 0: the command is refused anyway). Returns the
/// request with `events`' limit capped at [`MAX_EVENTS`].
pub fn check_request(
    mut request: Request,
    site_cap_kw: Option<f64>,
    now_unix: u64,
) -> Result<Request, String> {
    if let Some(by) = &request.by {
        check_name("by", by)?;
    }
    let kw = |what: &str, kw: f64| match site_cap_kw {
        Some(cap) => check_kw(what, kw, cap).map(drop),
        // Without a cap the command is refused later; a figure that is no figure is still
        // refused here, so nothing downstream ever sees one.
        None if !kw.is_finite() || kw < 0.0 => {
            Err(format!("{what} must be a number >= 0, got {kw}"))
        }
        None => Ok(()),
    };
    let target = |cmd: &str, t: &Target| match t {
        Target::Rig(r) => check_name(&format!("{cmd}: rig"), r),
        Target::Group(g) => check_name(&format!("{cmd}: group"), g),
        Target::Kw(v) => kw(&format!("{cmd}: kw"), *v),
        Target::All => Ok(()),
    };
    match &mut request.command {
        Command::Rigs | Command::Pools | Command::Power | Command::Cluster => {}
        Command::Rig { id } | Command::Kick { id } => check_name("rig", id)?,
        Command::Events { limit } => {
            *limit = limit.map(|l| l.min(MAX_EVENTS));
        }
        Command::Drain { target: t, reason } => {
            target("drain", t)?;
            check_reason(reason.as_deref())?;
        }
        Command::Resume { target: t, reason } => {
            target("resume", t)?;
            check_reason(reason.as_deref())?;
        }
        Command::Curtail {
            kw: v,
            until_unix,
            reason,
        } => {
            if !(v.is_finite() && *v >= 0.0) {
                return Err(format!("curtail: kw must be a number >= 0, got {v}"));
            }
            kw("curtail: kw", *v)?;
            check_until(*until_unix, now_unix)?;
            check_reason(reason.as_deref())?;
        }
        Command::CurtailClear { reason } => check_reason(reason.as_deref())?,
        Command::Forget { id, reason } => {
            check_name("rig", id)?;
            check_reason(reason.as_deref())?;
        }
        Command::GpuRequest { kw: v, reason } => {
            if !(v.is_finite() && *v >= 0.0) {
                return Err(format!("gpu-request: kw must be a number >= 0, got {v}"));
            }
            kw("gpu-request: kw", *v)?;
            check_reason(reason.as_deref())?;
        }
    }
    Ok(request)
}

/// A firmware power reading (W) for a rig that reports it is mining, against its nameplate:
/// as [`rig_power_w`], and at least [`MIN_MINING_W`] and [`MIN_NAMEPLATE_SHARE`] of the
/// nameplate. A mining rig reading 1 W is lying or broken, and believing it would let the GPU
/// grant grow into power the rig still draws; the nameplate (or the estimate) is used instead.
pub fn mining_power_w(w: f64, nameplate_w: Option<f64>) -> Result<f64, String> {
    let w = rig_power_w(w)?;
    let floor = nameplate_w
        .filter(|n| n.is_finite() && *n > 0.0)
        .map_or(MIN_MINING_W, |n| {
            (n * MIN_NAMEPLATE_SHARE).max(MIN_MINING_W)
        });
    if w < floor {
        return Err(format!(
            "firmware reported {w} W while mining, below {floor} W (a tenth of its nameplate)"
        ));
    }
    Ok(w)
}

/// Seconds as a [`Duration`] without the panics of `Duration::from_secs_f64`: NaN and
/// negative give zero, too large gives [`MAX_DEADLINE_SECS`]. Config values are validated
/// before they get here; this is the second line.
pub fn secs(v: f64) -> Duration {
    if v.is_nan() || v <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(v.min(MAX_DEADLINE_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: Command) -> Request {
        Request { command, by: None }
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn kw_must_be_finite_non_negative_and_near_the_cap() {
        assert_eq!(check_kw("kw", 0.0, 100.0), Ok(0.0));
        assert_eq!(check_kw("kw", 1000.0, 100.0), Ok(1000.0));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1000.5, 1e300] {
            assert!(check_kw("kw", bad, 100.0).is_err(), "{bad}");
        }
        let e = check_kw("curtail: kw", 5000.0, 100.0).unwrap_err();
        assert!(e.contains("curtail: kw") && e.contains("1000"), "{e}");
    }

    #[test]
    fn curtailment_ends_within_a_week() {
        assert!(check_until(NOW, NOW).is_ok());
        assert!(check_until(NOW + 7 * 86_400, NOW).is_ok());
        let e = check_until(u64::MAX, NOW).unwrap_err();
        assert!(e.contains("7 days"), "{e}");
        assert!(check_until(NOW + 7 * 86_400 + 1, NOW).is_err());
        assert!(check_until(NOW - 1, NOW).is_err());
        assert!(check_until(0, u64::MAX).is_err());
        assert_eq!(minutes_to_until(1.0, NOW), Ok(NOW + 60));
        assert_eq!(minutes_to_until(10_080.0, NOW), Ok(NOW + 7 * 86_400));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 10_080.1, 1e300] {
            let e = minutes_to_until(bad, NOW).unwrap_err();
            assert!(e.contains("7 days"), "{e}");
        }
    }

    #[test]
    fn names_and_reasons_are_short_and_printable() {
        assert!(check_name("rig", "farm.s19-017").is_ok());
        assert!(check_name("rig", "").is_err());
        assert!(check_name("rig", &"x".repeat(MAX_NAME_BYTES)).is_ok());
        assert!(check_name("rig", &"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        assert!(check_name("rig", "a\nb").is_err());
        assert!(check_name("rig", "a\u{1b}[2J").is_err());
        assert!(check_reason(None).is_ok());
        assert!(check_reason(Some("GPU job 4812\tbatch")).is_ok());
        assert!(check_reason(Some(&"r".repeat(MAX_REASON_BYTES + 1))).is_err());
        assert!(check_reason(Some("line\nforged")).is_err());
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let curtail = |kw, until_unix| {
            req(Command::Curtail {
                kw,
                until_unix,
                reason: None,
            })
        };
        assert!(check_request(curtail(50.0, NOW + 3600), Some(100.0), NOW).is_ok());
        assert!(check_request(curtail(50.0, u64::MAX), Some(100.0), NOW).is_err());
        assert!(check_request(curtail(f64::NAN, NOW + 60), Some(100.0), NOW).is_err());
        assert!(check_request(curtail(1e9, NOW + 60), Some(100.0), NOW).is_err());
        // Without power control the time is still checked.
        assert!(check_request(curtail(1e9, u64::MAX), None, NOW).is_err());
        let gpu = |kw| {
            req(Command::GpuRequest {
                kw,
                reason: Some("job".into()),
            })
        };
        assert!(check_request(gpu(10.0), Some(100.0), NOW).is_ok());
        assert!(check_request(gpu(-1.0), Some(100.0), NOW).is_err());
        assert!(check_request(gpu(1e12), Some(100.0), NOW).is_err());
        let drain = |target| {
            req(Command::Drain {
                target,
                reason: None,
            })
        };
        assert!(check_request(drain(Target::Kw(5.0)), Some(100.0), NOW).is_ok());
        assert!(check_request(drain(Target::Kw(-5.0)), Some(100.0), NOW).is_err());
        assert!(check_request(drain(Target::Kw(1e300)), Some(100.0), NOW).is_err());
        // Without power control a kW figure is not range-checked, but it must be a figure.
        assert!(check_request(drain(Target::Kw(1e300)), None, NOW).is_ok());
        assert!(check_request(drain(Target::Kw(f64::NAN)), None, NOW).is_err());
        assert!(check_request(drain(Target::Kw(-5.0)), None, NOW).is_err());
        assert!(check_request(gpu(f64::INFINITY), None, NOW).is_err());
        let long = "g".repeat(MAX_NAME_BYTES + 1);
        assert!(check_request(drain(Target::Group(long.clone())), Some(100.0), NOW).is_err());
        assert!(check_request(req(Command::Kick { id: long }), None, NOW).is_err());
        let r = Request {
            command: Command::Power,
            by: Some("mallory\r\n".into()),
        };
        assert!(check_request(r, Some(100.0), NOW).is_err());
        let r = check_request(
            req(Command::Events {
                limit: Some(usize::MAX),
            }),
            None,
            NOW,
        )
        .unwrap();
        assert_eq!(
            r.command,
            Command::Events {
                limit: Some(MAX_EVENTS)
            }
        );
    }

    #[test]
    fn firmware_power_must_be_plausible_for_one_rig() {
        assert_eq!(rig_power_w(3250.0), Ok(3250.0));
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY, 20_001.0, 1e12] {
            assert!(rig_power_w(bad).is_err(), "{bad}");
            assert!(mining_power_w(bad, Some(3250.0)).is_err(), "{bad}");
        }
        // A mining rig reading 1 W lies.
        assert!(mining_power_w(1.0, Some(3250.0)).is_err());
        assert!(mining_power_w(1.0, None).is_err());
        assert!(mining_power_w(300.0, Some(3250.0)).is_err());
        assert_eq!(mining_power_w(1800.0, Some(3250.0)), Ok(1800.0));
        assert_eq!(mining_power_w(15.0, None), Ok(15.0));
    }

    /// The arbiter's deadline arithmetic saturates: the longest settings at the far end of
    /// time, and a curtailment ending at `Duration::MAX`, neither panic nor wrap.
    #[test]
    fn arbiter_deadlines_saturate() {
        use crate::control::arbiter::{
            Arbiter, Curtailment, GroupId, Observed, RigId, RigInfo, Settings, Watts,
        };
        let mut settings = Settings::new(Watts::from_kw(100.0));
        settings.confirm_deadline = Duration::MAX;
        settings.wake_deadline = Duration::MAX;
        settings.resume_interval = Duration::MAX;
        let now = Duration::MAX - Duration::from_secs(1);
        let mut a = Arbiter::new(settings, now).unwrap();
        let rig = |id: &str| RigInfo {
            id: RigId(id.into()),
            group: GroupId("g".into()),
            priority: 0,
            power: Watts::from_kw(3.25),
            efficiency: None,
            path: Default::default(),
        };
        a.handle_rig(now, rig("a"), Observed::Unknown).unwrap();
        a.handle_rig(now, rig("b"), Observed::Asleep).unwrap();
        a.handle_curtailment(
            now,
            Curtailment {
                cap: Watts::from_kw(1e300),
                until: Some(Duration::MAX),
                source: "test".into(),
            },
        );
        assert_eq!(a.poll_timeout(), Some(Duration::MAX));
        a.handle_timeout(Duration::MAX);
        let restored = Arbiter::restore(a.settings().clone(), a.persist(), Duration::MAX).unwrap();
        // Time ran out for everything: the curtailment ended, no deadline is left to wait for.
        assert!(restored.snapshot().curtailment.is_none());
        assert_eq!(restored.poll_timeout(), None);
    }

    #[test]
    fn config_seconds_never_panic_as_durations() {
        assert_eq!(secs(f64::NAN), Duration::ZERO);
        assert_eq!(secs(-3.0), Duration::ZERO);
        assert_eq!(secs(1e300), Duration::from_secs_f64(MAX_DEADLINE_SECS));
        assert_eq!(secs(1.5), Duration::from_millis(1500));
    }
}
