//! Error bodies (any status): never a panic, whatever a proxy or a broken Vault sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = collectors::parse::parse_error_messages(body);
});
