//! renew-self bodies: never a panic; errors never echo the body (`auth.client_token`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match collectors::parse::parse_renewal(body) {
        Ok(renewal) => {
            let _ = renewal.capped_by_max_ttl();
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.len() < 200 && text.is_ascii(), "{text}");
        }
    }
});
