//! Strict parsers for what Slurm 22.05 prints: `scontrol show license`, `scontrol show
//! reservation`, `squeue --json` and job license strings.
//!
//! Pure functions over bytes (no I/O), unit-tested on output captured from a real 22.05
//! cluster. Anything unexpected is a [`GpuError::Parse`], never a guess.

use serde_json::Value;

use crate::gpu::GpuError;

fn perr(what: &'static str, detail: impl Into<String>) -> GpuError {
    GpuError::Parse {
        what,
        detail: detail.into(),
    }
}

/// `key=value` tokens of scontrol's human output (values never contain spaces in the fields we
/// read).
fn tokens(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split_whitespace().filter_map(|t| t.split_once('='))
}

/// The `Total=` of license `name` in `scontrol show license <name>` output; `None` when Slurm
/// printed no such license (it exits 0 with empty output).
pub fn license_total(stdout: &[u8], name: &str) -> Result<Option<u64>, GpuError> {
    const WHAT: &str = "scontrol show license";
    let text = std::str::from_utf8(stdout).map_err(|_| perr(WHAT, "not UTF-8"))?;
    let mut current: Option<&str> = None;
    for (k, v) in tokens(text) {
        match k {
            "LicenseName" => current = Some(v),
            "Total" if current == Some(name) => {
                return v
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| perr(WHAT, format!("Total={v} is not a count")));
            }
            _ => {}
        }
    }
    if current.is_some() && text.contains(&format!("LicenseName={name}")) {
        return Err(perr(WHAT, format!("license {name} has no Total")));
    }
    Ok(None)
}

/// What `scontrol show reservation <name>` says about our hold reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Licenses of `license` the reservation holds (0 when it lists none of them).
    pub held: u64,
    /// The `Flags=` field, e.g. `ANY_NODES`.
    pub flags: String,
}

/// Parses `scontrol show reservation <name>` for reservation `name`, license `license`.
/// `Ok(None)` when the output says the reservation is not found.
pub fn reservation(text: &str, name: &str, license: &str) -> Result<Option<Reservation>, GpuError> {
    const WHAT: &str = "scontrol show reservation";
    if text.contains(&format!("Reservation {name} not found")) {
        return Ok(None);
    }
    let mut found = false;
    let mut licenses = None;
    let mut flags = String::new();
    for (k, v) in tokens(text) {
        match k {
            "ReservationName" => {
                if found {
                    break; // the next reservation's fields follow
                }
                found = v == name;
            }
            "Licenses" if found => licenses = Some(v),
            "Flags" if found => flags = v.to_owned(),
            _ => {}
        }
    }
    if !found {
        return Err(perr(WHAT, format!("no ReservationName={name} in output")));
    }
    let licenses = licenses.ok_or_else(|| perr(WHAT, "no Licenses= field"))?;
    let held = if licenses == "(null)" {
        0
    } else {
        license_count(licenses, license, WHAT)?
    };
    Ok(Some(Reservation { held, flags }))
}

/// The count of `license` in a Slurm license list: `a:3,b:2`, `a*3` (older form), `a` (= 1),
/// `a@server:3` (remote). 0 when the list does not mention it.
pub fn license_count(list: &str, license: &str, what: &'static str) -> Result<u64, GpuError> {
    let mut total: u64 = 0;
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, count) = match item.split_once([':', '*']) {
            Some((n, c)) => {
                let c = c
                    .parse::<u64>()
                    .map_err(|_| perr(what, format!("license count in {item:?} is not a count")))?;
                (n, c)
            }
            None => (item, 1),
        };
        let base = name.split('@').next().unwrap_or(name);
        if base == license {
            total = total.saturating_add(count);
        }
    }
    Ok(total)
}

/// Where a job stands, for power purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Pending and waiting only for resources/licenses/priority: it wants power.
    Waiting,
    /// Pending for another reason (held, dependency, begin time, ...): not a power request yet.
    Blocked,
    /// Holds its licenses and runs (or is starting/finishing).
    Running,
    /// Holds its licenses but is stopped.
    Suspended,
    /// Finished, cancelled, failed, ...: holds nothing.
    Done,
}

/// One job from `squeue --json`, reduced to what the power side needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The Slurm job id (`job_id`).
    pub id: u64,
    /// Whether it waits, runs or is suspended.
    pub phase: JobPhase,
    /// Licenses of the configured license this job asks for / holds.
    pub kw: u64,
    /// Unix start time (0 when not started); newest-started jobs are shed first.
    pub start_time: u64,
    /// `job_state` (the base state of 23.02+'s list).
    pub state: String,
    /// `state_reason` (`None` when absent).
    pub reason: String,
}

/// Pending reasons that mean "would start if it had the power": `Licenses` (our knob),
/// `Resources`, `Priority` (queued behind others), `None` (not evaluated yet).
const WAITING_REASONS: [&str; 4] = ["Licenses", "Resources", "Priority", "None"];

/// Job states that hold licenses and draw power.
const RUNNING_STATES: [&str; 6] = [
    "RUNNING",
    "COMPLETING",
    "CONFIGURING",
    "SIGNALING",
    "STAGE_OUT",
    "RESIZING",
];

fn phase(state: &str, reason: &str) -> JobPhase {
    match state {
        "PENDING" if WAITING_REASONS.contains(&reason) => JobPhase::Waiting,
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            JobPhase::Blocked
        }
        "SUSPENDED" | "STOPPED" => JobPhase::Suspended,
        s if RUNNING_STATES.contains(&s) => JobPhase::Running,
        _ => JobPhase::Done,
    }
}

/// Parses `squeue --json` (Slurm 22.05 `openapi/v0.0.38`; the list form of `job_state` that
/// later versions print is accepted too), keeping every job with its license count.
pub fn squeue_jobs(stdout: &[u8], license: &str) -> Result<Vec<Job>, GpuError> {
    const WHAT: &str = "squeue --json";
    let root: Value =
        serde_json::from_slice(stdout).map_err(|e| perr(WHAT, format!("not JSON: {e}")))?;
    if let Some(errors) = root.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        return Err(perr(
            WHAT,
            format!("errors: {}", Value::Array(errors.clone())),
        ));
    }
    let jobs = root
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or_else(|| perr(WHAT, "no jobs array"))?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let id = j
            .get("job_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| perr(WHAT, "job without a numeric job_id"))?;
        let state = match j.get("job_state") {
            Some(Value::String(s)) => s.clone(),
            // 23.02+: a list of flags, the base state first.
            Some(Value::Array(a)) => a
                .first()
                .and_then(Value::as_str)
                .ok_or_else(|| perr(WHAT, format!("job {id}: empty job_state list")))?
                .to_owned(),
            _ => return Err(perr(WHAT, format!("job {id}: no job_state"))),
        };
        let reason = j
            .get("state_reason")
            .and_then(Value::as_str)
            .unwrap_or("None")
            .to_owned();
        let kw = match j.get("licenses") {
            Some(Value::String(s)) => license_count(s, license, WHAT)?,
            None | Some(Value::Null) => 0,
            Some(other) => return Err(perr(WHAT, format!("job {id}: licenses is {other}"))),
        };
        let start_time = match j.get("start_time") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            // 23.02+: {"set":true,"number":N}
            Some(Value::Object(o)) => o.get("number").and_then(Value::as_u64).unwrap_or(0),
            _ => 0,
        };
        out.push(Job {
            id,
            phase: phase(&state, &reason),
            kw,
            start_time,
            state,
            reason,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIC: &[u8] =
        b"LicenseName=power_kw\n    Total=100 Used=10 Free=90 Reserved=90 Remote=no\n";
    const RES: &str = "ReservationName=hashshift_hold StartTime=2026-11-22T01:01:09 EndTime=2027-11-22T01:01:09 Duration=365-00:00:00\n   Nodes=(null) NodeCnt=0 CoreCnt=0 Features=(null) PartitionName=(null) Flags=ANY_NODES\n   TRES=(null)\n   Users=root Groups=(null) Accounts=(null) Licenses=power_kw:90 State=ACTIVE BurstBuffer=(null) Watts=n/a\n   MaxStartDelay=(null)\n\n";

    #[test]
    fn license_totals() {
        assert_eq!(license_total(LIC, "power_kw").expect("parses"), Some(100));
        assert_eq!(license_total(b"", "power_kw").expect("empty"), None);
        assert_eq!(license_total(LIC, "other").expect("other"), None);
        assert!(license_total(b"LicenseName=power_kw\n Total=lots\n", "power_kw").is_err());
        assert!(license_total(b"LicenseName=power_kw\n Used=3\n", "power_kw").is_err());
        assert!(license_total(&[0xff, 0xfe], "power_kw").is_err());
    }

    #[test]
    fn reservations() {
        let r = reservation(RES, "hashshift_hold", "power_kw")
            .expect("parses")
            .expect("found");
        assert_eq!(
            r,
            Reservation {
                held: 90,
                flags: "ANY_NODES".into()
            }
        );
        let zero = RES.replace("power_kw:90", "power_kw:0");
        assert_eq!(
            reservation(&zero, "hashshift_hold", "power_kw")
                .expect("0")
                .map(|r| r.held),
            Some(0)
        );
        assert_eq!(
            reservation(
                "Reservation hashshift_hold not found\n",
                "hashshift_hold",
                "power_kw"
            )
            .expect("not found"),
            None
        );
        assert!(reservation(RES, "other", "power_kw").is_err());
        assert!(
            reservation(
                &RES.replace("Licenses=power_kw:90 ", ""),
                "hashshift_hold",
                "power_kw"
            )
            .is_err()
        );
        assert!(reservation(&RES.replace(":90", ":x"), "hashshift_hold", "power_kw").is_err());
    }

    #[test]
    fn license_lists() {
        let c = |s| license_count(s, "power_kw", "t");
        assert_eq!(c("power_kw:10").expect("a"), 10);
        assert_eq!(c("gpu_lic:2,power_kw:7").expect("b"), 7);
        assert_eq!(c("power_kw*3").expect("c"), 3);
        assert_eq!(c("power_kw").expect("d"), 1);
        assert_eq!(c("power_kw@db:4").expect("e"), 4);
        assert_eq!(c("power_kwx:4,").expect("f"), 0);
        assert_eq!(c("").expect("g"), 0);
        assert!(c("power_kw:-1").is_err());
        assert!(c("power_kw:1e3").is_err());
    }

    #[test]
    fn squeue_json_from_22_05() {
        // Trimmed from `squeue --json` on a real 22.05.8 one-node cluster.
        let json = br#"{"meta":{"plugin":{"type":"openapi\/v0.0.38"}},"errors":[],"jobs":[
            {"job_id":1,"job_state":"COMPLETED","state_reason":"None","licenses":"power_kw:10","start_time":100},
            {"job_id":2,"job_state":"PENDING","state_reason":"Licenses","licenses":"power_kw:10","start_time":0},
            {"job_id":3,"job_state":"PENDING","state_reason":"BeginTime","licenses":"power_kw:10","start_time":0},
            {"job_id":4,"job_state":"RUNNING","state_reason":"None","licenses":"power_kw:5","start_time":200},
            {"job_id":5,"job_state":"SUSPENDED","state_reason":"None","licenses":"power_kw:10","start_time":150},
            {"job_id":6,"job_state":"RUNNING","state_reason":"None","licenses":"","start_time":120},
            {"job_id":7,"job_state":["PENDING"],"state_reason":"Priority","licenses":"power_kw:2","start_time":{"set":true,"number":0}}
        ]}"#;
        let jobs = squeue_jobs(json, "power_kw").expect("parses");
        let phases: Vec<_> = jobs.iter().map(|j| (j.id, j.phase, j.kw)).collect();
        assert_eq!(
            phases,
            vec![
                (1, JobPhase::Done, 10),
                (2, JobPhase::Waiting, 10),
                (3, JobPhase::Blocked, 10),
                (4, JobPhase::Running, 5),
                (5, JobPhase::Suspended, 10),
                (6, JobPhase::Running, 0),
                (7, JobPhase::Waiting, 2),
            ]
        );
        assert_eq!(jobs[3].start_time, 200);
    }

    #[test]
    fn squeue_json_rejects_garbage() {
        let bad: [&[u8]; 6] = [
            b"",
            b"{}",
            br#"{"errors":[{"error":"x"}],"jobs":[]}"#,
            br#"{"jobs":[{"job_state":"RUNNING"}]}"#,
            br#"{"jobs":[{"job_id":1}]}"#,
            br#"{"jobs":[{"job_id":1,"job_state":"RUNNING","licenses":5}]}"#,
        ];
        for b in bad {
            assert!(
                squeue_jobs(b, "power_kw").is_err(),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        assert_eq!(
            squeue_jobs(br#"{"errors":[],"jobs":[]}"#, "power_kw").expect("empty"),
            vec![]
        );
    }
}
