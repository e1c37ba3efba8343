//! A pool's replies to `mining.subscribe` and `mining.configure`, read as the upstream SV1
//! session reads them (`src/upstream/sv1.rs`): the `result` of a response line through
//! `subscribe_result` (extranonce1, extranonce2 size) and `configure_result` (the negotiated
//! version-rolling mask), then the per-miner extranonce split the proxy derives from them.
//!
//! The input is a whole response line; a line that is JSON but no response is read as the
//! bare `result` value, so the interpreters see every shape the fuzzer finds. Beyond "no
//! panic": what an interpreter accepts is within the protocol limits and reads back the same
//! from its canonical form, the mask the session keeps is within what it asked for, and the
//! extranonce split never hands a miner more than the pool gave.
#![no_main]

use hashshift_proxy::pool_link::extranonce::MinerExtranonce;
use hashshift_proxy::upstream::connection::REQUESTED_VERSION_MASK;
use hashshift_protocol::sv1::response::{ConfigureResult, SubscribeResult};
use hashshift_protocol::sv1::{MAX_EXTRANONCE_LEN, ServerMessage, Sv1Message};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let result = match ServerMessage::from_line(data) {
        Ok(ServerMessage::Response(r)) => r.result,
        _ => match serde_json::from_slice::<Value>(data) {
            Ok(v) => v,
            Err(_) => return,
        },
    };

    if let Ok(sub) = SubscribeResult::from_result(&result) {
        assert!(sub.extranonce1.len() <= MAX_EXTRANONCE_LEN);
        assert!(sub.extranonce2_size <= MAX_EXTRANONCE_LEN);
        let again = SubscribeResult::from_result(&sub.to_result()).expect("canonical form reads");
        assert_eq!(again, sub);
        for prefix_bytes in 1..=4 {
            let Some(m) =
                MinerExtranonce::new(&sub.extranonce1, sub.extranonce2_size, prefix_bytes, 7)
            else {
                continue;
            };
            // The miner's extranonce1 ‖ extranonce2 covers exactly the pool's extranonce1 ‖
            // extranonce2, and starts with the pool's extranonce1.
            assert!(m.extranonce1.starts_with(&sub.extranonce1));
            assert_eq!(
                m.extranonce1.len() + m.extranonce2_size,
                sub.extranonce1.len() + sub.extranonce2_size
            );
            assert_eq!(
                m.upstream_prefix.len() + m.extranonce2_size,
                sub.extranonce2_size
            );
        }
    }

    if let Ok(conf) = ConfigureResult::from_result(&result) {
        let again = ConfigureResult::from_result(&conf.to_result()).expect("canonical form reads");
        assert_eq!(again, conf);
        // What the session keeps (`on_response`, Call::Configure).
        let kept = conf.negotiated_mask().unwrap_or(0) & REQUESTED_VERSION_MASK;
        assert_eq!(kept & !REQUESTED_VERSION_MASK, 0);
        if conf.negotiated_mask().is_some() {
            assert!(conf.version_rolling_mask.is_some());
        }
    }
});
