//! lookup-self bodies: never a panic; an error names a field but never echoes the body
//! (which holds the token in `data.id`), so its text is short ASCII.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match collectors::parse::parse_lookup(body) {
        Ok(lookup) => {
            let mut sorted = lookup.policies.clone();
            sorted.sort();
            assert_eq!(lookup.policies, sorted, "policies are sorted");
            if let Some(t) = lookup.expire_time {
                assert!(t.is_finite());
            }
            assert!(lookup.period != Some(0));
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.len() < 200 && text.is_ascii(), "{text}");
        }
    }
});
