//! The broker's request parser and its range checks on arbitrary lines: no panic; a refusal names a field.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let (_, parsed) = broker::api::parse_request(&line);
    if let Ok(req) = parsed
        && let Err(e) = broker::validate::request(&req)
    {
        assert!(!e.message.chars().any(char::is_control), "{:?}", e.message);
    }
});
