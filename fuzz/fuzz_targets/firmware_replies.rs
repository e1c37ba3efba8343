//! What rig firmware sends back: a raw cgminer-style reply (quirks and all) through
//! `cgminer::repair` and `parse_reply`, then read as each LuxOS, Braiins OS+, stock Antminer,
//! Whatsminer and VNish reply is (`check_status`, the LuxOS `logon` session id and status, the
//! Braiins login token and status, the Antminer figures and config write, the Whatsminer reply
//! status, token and state, the VNish summary and token), plus the raw bytes as a Braiins JSON
//! body, a Digest challenge or `Authorization` header, and Whatsminer ciphertext.
//!
//! Beyond "no panic": repair is idempotent and leaves valid JSON alone (a reply that is JSON
//! already parses to the same value), a parsed reply is the repaired bytes as JSON, and what
//! the readers accept is within their documented bounds (finite readings, session ids and
//! tokens that cannot smuggle arguments or break a header).
#![no_main]

use hashshift_proxy::firmware::antminer::digest;
use hashshift_proxy::firmware::whatsminer::crypto;
use hashshift_proxy::firmware::{RigStatus, antminer, braiins, cgminer, luxos, vnish, whatsminer};
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
    // The stock Antminer, Whatsminer and VNish readers on the same value.
    if let Ok(f) = antminer::figures(v) {
        assert!(f.hashrate_ths.is_none_or(f64::is_finite));
        assert!(f.power_w.is_none_or(f64::is_finite));
    }
    if let Some(mode) = antminer::config_mode(v) {
        // A payload is only ever built from a config that carries its pools.
        if let Some(Value::Object(p)) = antminer::set_payload(v, mode) {
            assert!(p.contains_key("pools"));
        }
    }
    if let Some(r) = whatsminer::reply_status(v) {
        let _ = whatsminer::classify_refusal(r.code, &r.msg);
    }
    let _ = whatsminer::token_fields(v);
    check_status(&whatsminer::status_from_replies(v, Some(v)));
    if let Some(s) = vnish::status_from_summary(v) {
        check_status(&s);
    }
    let _ = vnish::unlock_token(v);
    if let Some(Value::Object(map)) = Some(v) {
        for field in map.values() {
            assert!(cgminer::number(Some(field)).is_none_or(f64::is_finite));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The same bytes as a Digest challenge (WWW-Authenticate) and as Whatsminer ciphertext.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = digest::parse_challenge(text);
        let _ = digest::parse_authorization(text);
        let _ = crypto::decrypt(&[7u8; 32], text, 64 * 1024);
    }
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
