//! Log set-up: `--log.level`, else `RUST_LOG`, else info; `--log.format` logfmt (the
//! default, `TIMESTAMP LEVEL target] message` as env_logger writes it) or json, one object
//! per line for log shippers. Lines about a token carry a `vault=NAME` field (see
//! `collectors::logfmt`); the json format lifts `vault` and `reason` out of the message
//! into fields of their own.
//!
//! ureq logs each request's header block at debug level ("writing prelude") and redacts
//! only `Authorization` and `Cookie`: `X-Vault-Token` would be printed. A directive can
//! always be more specific than a cap added to the filter (`ureq::unit=debug` beats
//! `ureq=info`), so the cap is not a directive: the logger itself drops every record of
//! ureq's below info, whatever `RUST_LOG` or `--log.level` says.

use std::io::Write;

use collectors::logfmt;
use log::{LevelFilter, Log, Metadata, Record};

/// `--log.format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Logfmt,
    Json,
}

/// Starts env_logger on stderr, behind [`Redacting`].
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
    let logger = builder.build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Redacting(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// Lets through only what cannot carry a token.
struct Redacting<L>(L);

/// Whether a record may be written: nothing of ureq's below info.
fn may_log(metadata: &Metadata) -> bool {
    let target = metadata.target();
    let ureq = target == "ureq" || target.starts_with("ureq::");
    !ureq || metadata.level() <= log::Level::Info
}

impl<L: Log> Log for Redacting<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        may_log(metadata) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if may_log(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_of_ureqs_below_info_passes() {
        let at =
            |target: &str, level| may_log(&Metadata::builder().target(target).level(level).build());
        assert!(!at("ureq::unit", log::Level::Debug));
        assert!(!at("ureq", log::Level::Trace));
        assert!(at("ureq::unit", log::Level::Info));
        assert!(at("ureqx", log::Level::Debug));
        assert!(at("vault_token_exporter", log::Level::Trace));
    }
}
