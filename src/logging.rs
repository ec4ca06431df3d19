//! Log set-up: `--log.level`, else `RUST_LOG`, else info.

use log::LevelFilter;

/// Starts env_logger on stderr.
pub fn init(level: Option<LevelFilter>) {
    let mut builder = env_logger::Builder::new();
    match level {
        Some(level) => {
            builder.filter_level(level);
        }
        None => {
            builder.filter_level(LevelFilter::Info);
            if let Ok(spec) = std::env::var("RUST_LOG") {
                builder.parse_filters(&spec);
            }
        }
    }
    // ureq logs each request's header block at debug level, and only redacts
    // Authorization and Cookie: X-Vault-Token would be printed. Never below info for it.
    let ureq_level = level.unwrap_or(LevelFilter::Trace).min(LevelFilter::Info);
    builder.filter_module("ureq", ureq_level);
    builder
        .format_timestamp_millis()
        .target(env_logger::Target::Stderr);
    let _ = builder.try_init();
}
