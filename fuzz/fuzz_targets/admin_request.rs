//! Admin socket request lines (`control::admin`): one UTF-8 line decoded into a `Request` as
//! the socket server does, then range-checked by `limits::check_request` as the control plane
//! does. Beyond "no panic": what the checks accept is within every documented limit, checking
//! is idempotent, and a decoded request re-encodes to a line that decodes to the same request.
#![no_main]

#[path = "common/control.rs"]
mod control;

use hashshift_proxy::control::admin::protocol::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server's line codec hands over UTF-8 text only.
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = serde_json::from_str::<Request>(line) {
        control::check(&request);
    }
});
