//! The daemon's TOML configuration from arbitrary text: no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = broker::config::Config::parse(&text, std::path::Path::new("fuzz.toml"));
});
