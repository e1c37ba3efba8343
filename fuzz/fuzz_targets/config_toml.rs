//! The configuration loader, `Config::from_toml` (parse, then validate). Beyond "no panic": a
//! configuration that loads serializes back to TOML that loads again and serializes to the
//! same text (what the loader accepts, it can also print).
#![no_main]

use hashshift_proxy::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let printed = toml::to_string(&config).expect("a loaded config serializes");
    let again = Config::from_toml(&printed)
        .unwrap_or_else(|e| panic!("printed config does not load: {e}\n{printed}"));
    let reprinted = toml::to_string(&again).expect("serializes");
    assert_eq!(printed, reprinted);
});
