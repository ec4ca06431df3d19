//! Pluggable collectors, node_exporter style: one table lists them all, each can be
//! switched with `--collector.NAME` / `--no-collector.NAME`, and one wrapper times each,
//! exports `vault_token_exporter_collector_success` and `_duration_seconds` for it, and
//! keeps a failing (or panicking) collector from failing the scrape.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use crate::family::{family, gauge, label};
use crate::state::TokenState;
use crate::token_collector::TokenCollector;

/// A collector could not produce its metrics this scrape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectError(pub String);

/// One pluggable source of metric families.
pub trait Collect: Send + Sync {
    /// Appends this collector's families to `out`.
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError>;
}

/// What collectors are built from.
pub struct CollectorContext {
    /// Every configured token, in configuration order.
    pub tokens: Vec<Arc<TokenState>>,
}

/// A row of the collector table.
pub struct CollectorSpec {
    pub name: &'static str,
    pub enabled_by_default: bool,
    pub help: &'static str,
    pub build: fn(&CollectorContext) -> Box<dyn Collect>,
}

/// Every collector this exporter has.
pub const COLLECTORS: &[CollectorSpec] = &[
    CollectorSpec {
        name: "token",
        enabled_by_default: true,
        help: "renewal state, TTL and outcomes of every configured Vault token (vault_token_*)",
        build: |ctx| Box::new(TokenCollector::new(ctx.tokens.clone())),
    },
    CollectorSpec {
        name: "exporter",
        enabled_by_default: true,
        help: "build information of the exporter (vault_token_exporter_build_info)",
        build: |_| Box::new(BuildInfo),
    },
    CollectorSpec {
        name: "process",
        enabled_by_default: true,
        help: "CPU, memory, file descriptors and threads of the exporter process (process_*)",
        build: |_| {
            Box::new(ProcessMetrics(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
        },
    },
];

/// `vault_token_exporter_build_info`.
struct BuildInfo;

impl Collect for BuildInfo {
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        let mut f = family(
            "vault_token_exporter_build_info",
            "Build information of vault-token-exporter; the value is 1.",
            MetricType::GAUGE,
            1,
        );
        f.mut_metric().push(gauge(
            vec![
                label("version", env!("CARGO_PKG_VERSION")),
                label(
                    "rust_version",
                    option_env!("VTE_RUSTC_VERSION").unwrap_or("unknown"),
                ),
            ],
            1.0,
        ));
        out.push(f);
        Ok(())
    }
}

/// The prometheus crate's process collector (Linux `/proc/self`).
struct ProcessMetrics(prometheus::process_collector::ProcessCollector);

impl Collect for ProcessMetrics {
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        let families = self.0.collect();
        if families.is_empty() {
            return Err(CollectError("cannot read /proc/self".into()));
        }
        out.extend(families);
        Ok(())
    }
}

/// The enabled collectors behind one `prometheus` collector, each timed and guarded.
pub struct Collectors {
    enabled: Vec<(&'static str, Box<dyn Collect>)>,
}

impl Collectors {
    /// Builds the collectors named in `enabled` (names from [`COLLECTORS`]).
    pub fn new(ctx: &CollectorContext, enabled: &[&str]) -> Collectors {
        let enabled = COLLECTORS
            .iter()
            .filter(|spec| enabled.contains(&spec.name))
            .map(|spec| (spec.name, (spec.build)(ctx)))
            .collect();
        Collectors { enabled }
    }

    /// Builds from explicit collectors (tests, benchmarks).
    pub fn from_parts(enabled: Vec<(&'static str, Box<dyn Collect>)>) -> Collectors {
        Collectors { enabled }
    }

    /// Names of the collectors that run.
    pub fn names(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|(name, _)| *name).collect()
    }
}

impl Collector for Collectors {
    fn desc(&self) -> Vec<&Desc> {
        // The series depend on the configured tokens; an unchecked collector, as the
        // Prometheus client guidelines allow for collectors of dynamic metrics.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let mut success = family(
            "vault_token_exporter_collector_success",
            "1 if the collector succeeded in this scrape.",
            MetricType::GAUGE,
            self.enabled.len(),
        );
        let mut duration = family(
            "vault_token_exporter_collector_duration_seconds",
            "Time the collector took in this scrape.",
            MetricType::GAUGE,
            self.enabled.len(),
        );
        for (name, collector) in &self.enabled {
            let started = Instant::now();
            let mut families = Vec::new();
            let ok = match catch_unwind(AssertUnwindSafe(|| collector.collect(&mut families))) {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    log::error!("collector failed collector={name}: {e}");
                    false
                }
                Err(_) => {
                    log::error!("collector panicked collector={name}");
                    false
                }
            };
            if ok {
                out.append(&mut families);
            }
            let labels = || vec![label("collector", name)];
            duration
                .mut_metric()
                .push(gauge(labels(), started.elapsed().as_secs_f64()));
            success
                .mut_metric()
                .push(gauge(labels(), f64::from(u8::from(ok))));
        }
        out.push(success);
        out.push(duration);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    struct Failing;
    impl Collect for Failing {
        fn collect(&self, _: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
            Err(CollectError("broken".into()))
        }
    }
    struct Panicking;
    impl Collect for Panicking {
        fn collect(&self, _: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
            panic!("boom")
        }
    }

    fn scrape(collectors: Collectors) -> String {
        let registry = prometheus::Registry::new();
        registry.register(Box::new(collectors)).unwrap();
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn collector_names_are_unique() {
        let mut names: Vec<_> = COLLECTORS.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COLLECTORS.len());
    }

    #[test]
    fn a_failing_collector_never_fails_the_scrape() {
        let text = scrape(Collectors::from_parts(vec![
            ("exporter", Box::new(BuildInfo)),
            ("failing", Box::new(Failing)),
            ("panicking", Box::new(Panicking)),
        ]));
        assert!(
            text.contains("vault_token_exporter_collector_success{collector=\"exporter\"} 1"),
            "{text}"
        );
        assert!(text.contains("vault_token_exporter_collector_success{collector=\"failing\"} 0"));
        assert!(text.contains("vault_token_exporter_collector_success{collector=\"panicking\"} 0"));
        assert!(
            text.contains("vault_token_exporter_collector_duration_seconds{collector=\"failing\"}")
        );
        assert!(text.contains("vault_token_exporter_build_info{version=\""));
    }

    #[test]
    fn only_enabled_collectors_run() {
        let ctx = CollectorContext {
            tokens: vec![Arc::new(TokenState::new("prod"))],
        };
        let text = scrape(Collectors::new(&ctx, &["exporter"]));
        assert!(!text.contains("vault_token_state"));
        assert!(!text.contains("collector=\"token\""));
        let text = scrape(Collectors::new(&ctx, &["token", "process"]));
        assert!(text.contains("vault_token_state{vault=\"prod\",state=\"unknown\"} 1"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(!text.contains("vault_token_exporter_build_info"));
    }
}
