//! Log set-up: `--log.level`, else `RUST_LOG`, else info; `--log.format` logfmt (the
//! default, `TIMESTAMP LEVEL target] message` as env_logger writes it) or json, one object
//! per line for log shippers. Lines about a token carry a `vault=NAME` field (see
//! `collectors::logfmt`); the json format lifts `vault` and `reason` out of the message
//! into fields of their own.

use std::io::Write;

use collectors::logfmt;
use log::LevelFilter;

/// `--log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Logfmt,
    Json,
}

/// Starts env_logger on stderr.
pub fn init(level: Option<LevelFilter>, format: LogFormat) {
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
    if format == LogFormat::Json {
        builder.format(|out, record| {
            let message = record.args().to_string();
            // Written field by field to keep the order readers expect: time, level, who,
            // the token's fields, the message. Every value is escaped by serde_json.
            let quoted = |v: &str| serde_json::Value::from(v).to_string();
            let mut line = format!(
                "{{\"ts\":{},\"level\":{},\"target\":{}",
                quoted(&out.timestamp_millis().to_string()),
                quoted(&record.level().as_str().to_lowercase()),
                quoted(record.target()),
            );
            for key in ["vault", "reason"] {
                if let Some(value) = logfmt::field(&message, key) {
                    line.push_str(&format!(",\"{key}\":{}", quoted(&value)));
                }
            }
            writeln!(out, "{line},\"msg\":{}}}", quoted(&message))
        });
    }
    let _ = builder.try_init();
}
