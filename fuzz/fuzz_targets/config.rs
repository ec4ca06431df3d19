//! Config file texts: never a panic; any error is one message naming the file. Every
//! `token_env` variable is set, so the checks after it are reached too.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let env = |_: &str| Some("hvs.FUZZ".to_string());
    match vault_token_exporter::config::parse_config(text, Path::new("/fuzz/config.yml"), &env) {
        Ok(tokens) => assert!(!tokens.is_empty()),
        Err(e) => assert!(e.to_string().contains("/fuzz/config.yml"), "{e}"),
    }
});
