//! `expire_time` texts: the hand-written RFC 3339 parser indexes bytes; never a panic,
//! and a time it accepts is finite.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Some(t) = collectors::parse::parse_rfc3339(text) {
        assert!(t.is_finite());
    }
});
