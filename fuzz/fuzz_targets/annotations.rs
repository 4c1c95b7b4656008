//! `io.predictive.*` annotations from arbitrary bytes: a map of lines `key=value`; no panic, in-range results.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let map: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = if k.starts_with("io.") { k.to_owned() } else { format!("io.predictive.{k}") };
            (k, v.to_owned())
        })
        .collect();
    if let Ok(a) = broker::annotations::Annotations::parse(&map) {
        assert!((-1000..=1000).contains(&a.priority));
        assert!(a.depends_on.len() <= 64);
    }
});
