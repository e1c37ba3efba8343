//! What Slurm prints, as the Slurm scheduler adapter reads it: `scontrol show license`,
//! `scontrol show reservation`, `squeue --json` and license lists (`gpu::slurm::parse`). The
//! same bytes go to every parser (the fuzzer finds which shape each wants).
//!
//! Beyond "no panic": a license list counts the sum of its items, a parsed reservation holds
//! what its `Licenses=` list says, and every parsed job carries the count of its `licenses`
//! string, in the order and number `squeue` listed them.
#![no_main]

use hashshift_proxy::gpu::slurm::parse::{
    JobPhase, license_count, license_total, reservation, squeue_jobs,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const LICENSE: &str = "power_kw";
const HOLD: &str = "hashshift_hold";

fuzz_target!(|data: &[u8]| {
    let _ = license_total(data, LICENSE);

    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(total) = license_count(text, LICENSE, "fuzz") {
            let by_item = text
                .split(',')
                .map(|item| license_count(item, LICENSE, "fuzz").expect("items of a valid list"))
                .fold(0u64, u64::saturating_add);
            assert_eq!(total, by_item);
        }
        if let Ok(Some(r)) = reservation(text, HOLD, LICENSE) {
            // The `Licenses=` of our reservation (the tokens after its name, before the next;
            // the last one when repeated).
            let ours = text
                .split_whitespace()
                .filter_map(|t| t.split_once('='))
                .skip_while(|(k, v)| !(*k == "ReservationName" && *v == HOLD))
                .skip(1)
                .take_while(|(k, _)| *k != "ReservationName")
                .filter(|(k, _)| *k == "Licenses")
                .last()
                .map(|(_, v)| v)
                .expect("a parsed reservation has Licenses=");
            let held = if ours == "(null)" {
                0
            } else {
                license_count(ours, LICENSE, "fuzz").expect("parsed once")
            };
            assert_eq!(r.held, held);
        }
    }

    if let Ok(jobs) = squeue_jobs(data, LICENSE) {
        let root: Value = serde_json::from_slice(data).expect("parsed once");
        let listed = root["jobs"].as_array().expect("parsed once");
        assert_eq!(jobs.len(), listed.len());
        for (job, raw) in jobs.iter().zip(listed) {
            assert_eq!(Some(job.id), raw["job_id"].as_u64());
            let kw = match raw.get("licenses") {
                Some(Value::String(s)) => license_count(s, LICENSE, "fuzz").expect("parsed once"),
                _ => 0,
            };
            assert_eq!(job.kw, kw);
            if job.phase == JobPhase::Waiting {
                assert_eq!(job.state, "PENDING");
            }
        }
    }
});
