//! HTTP API request bodies (`web::api`): the first byte picks the POST route, the rest is its
//! body, read by `request_from_body` as the handlers do, then range-checked as the control
//! plane does. Beyond "no panic": the request matches its route, a curtailment given in
//! minutes ends within the allowed window, and the checks hold as for the admin socket.
#![no_main]

#[path = "common/control.rs"]
mod control;

use hashshift_proxy::control::admin::protocol::Command;
use hashshift_proxy::control::limits::check_until;
use hashshift_proxy::web::api::{BodyRoute, request_from_body};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const ROUTES: [BodyRoute; 5] = [
    BodyRoute::Drain,
    BodyRoute::Resume,
    BodyRoute::Curtail,
    BodyRoute::CurtailClear,
    BodyRoute::GpuRequest,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let route = ROUTES[usize::from(selector) % ROUTES.len()];
    let Ok(request) = request_from_body(route, body, control::NOW) else {
        return;
    };
    let matches = match (&request.command, route) {
        (Command::Drain { .. }, BodyRoute::Drain)
        | (Command::Resume { .. }, BodyRoute::Resume)
        | (Command::CurtailClear { .. }, BodyRoute::CurtailClear)
        | (Command::GpuRequest { .. }, BodyRoute::GpuRequest) => true,
        (Command::Curtail { until_unix, .. }, BodyRoute::Curtail) => {
            let minutes = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("minutes").cloned());
            if minutes.is_some() {
                assert!(check_until(*until_unix, control::NOW).is_ok());
            }
            true
        }
        _ => false,
    };
    assert!(matches, "{route:?} read as {request:?}");
    control::check(&request);
});
