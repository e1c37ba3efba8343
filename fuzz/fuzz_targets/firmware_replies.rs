//! What rig firmware sends back: a raw cgminer-style reply (quirks and all) through
//! `cgminer::repair` and `parse_reply`, then read as each LuxOS and Braiins OS+ reply is
//! (`check_status`, the LuxOS `logon` session id and status, the Braiins login token and
//! status), plus the raw bytes as a Braiins JSON body.
//!
//! Beyond "no panic": repair is idempotent and leaves valid JSON alone (a reply that is JSON
//! already parses to the same value), a parsed reply is the repaired bytes as JSON, and what
//! the readers accept is within their documented bounds (finite readings, session ids and
//! tokens that cannot smuggle arguments or break a header).
#![no_main]

use hashshift_proxy::firmware::{RigStatus, braiins, cgminer, luxos};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_status(s: &RigStatus) {
    assert!(s.power_w.is_none_or(f64::is_finite));
    assert!(s.hashrate_ths.is_none_or(f64::is_finite));
}

fn read_reply(v: &Value) {
    if let Ok(status) = cgminer::check_status(v) {
        assert_eq!(
            status.is_error(),
            matches!(status.letter.as_str(), "E" | "F")
        );
        let _ = luxos::classify_refusal(&status.msg);
    }
    // One object can carry CONFIG, POWER and SUMMARY at once: read it as all three replies.
    check_status(&luxos::status_from_replies(v, v, v));
    if let Some(sid) = luxos::session_id(v) {
        assert!(!sid.is_empty() && sid.len() <= 128 && !sid.contains(','));
    }
    check_status(&braiins::status_from_replies(v, v));
    if let Some(token) = braiins::login_token(v) {
        assert!(!token.is_empty() && token.len() <= 4096);
        assert!(token.bytes().all(|b| b.is_ascii_graphic()));
    }
    if let Some(Value::Object(map)) = Some(v) {
        for field in map.values() {
            assert!(cgminer::number(Some(field)).is_none_or(f64::is_finite));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let repaired = cgminer::repair(data);
    assert_eq!(cgminer::repair(&repaired), repaired, "repair is idempotent");
    let parsed = cgminer::parse_reply(data);
    match &parsed {
        Ok(v) => {
            let direct: Value = serde_json::from_slice(&repaired).expect("Ok means JSON");
            assert_eq!(&direct, v);
            read_reply(v);
        }
        Err(_) => {
            assert!(repaired.is_empty() || serde_json::from_slice::<Value>(&repaired).is_err())
        }
    }
    // Valid JSON has none of the quirks outside strings: repair must not change its meaning.
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        assert_eq!(
            parsed.as_ref().ok(),
            Some(&v),
            "valid JSON read differently"
        );
        read_reply(&v);
    }
});
