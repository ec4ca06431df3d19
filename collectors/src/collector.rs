//! Pluggable collectors, node_exporter style: one table lists them all, each can be
//! switched with `--collector.NAME` / `--no-collector.NAME`, and one wrapper times each,
//! exports `vault_token_exporter_collector_success` and `_duration_seconds` for it, and
//! keeps a failing (or panicking) collector from failing the scrape.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use crate::collect::{Collect, CollectError};
use crate::exporter::{ConfigStatus, ExporterInfo};
use crate::family::{describe, family, gauge, label, TextOut};
use crate::health::{HealthCollector, HealthSet};
use crate::process::ProcessMetrics;
use crate::state::{TokenSet, TokenState};
use crate::token_collector::LiveTokenCollector;

/// What collectors are built from.
pub struct CollectorContext {
    /// Every configured token, in configuration order; a reload replaces the list.
    pub tokens: TokenSet,
    /// Outcome of the last (re)load of the configuration.
    pub config: Arc<ConfigStatus>,
    /// What the health pollers learnt of each configured vault; a reload replaces it.
    pub health: HealthSet,
}

impl CollectorContext {
    /// A context for `tokens`, with the configuration counted as loaded now.
    pub fn new(tokens: Vec<Arc<TokenState>>) -> CollectorContext {
        let config = ConfigStatus::default();
        config.loaded(crate::clock::unix_now());
        CollectorContext {
            tokens: TokenSet::new(tokens),
            config: Arc::new(config),
            health: HealthSet::default(),
        }
    }
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
        build: |ctx| Box::new(LiveTokenCollector::new(ctx.tokens.clone())),
    },
    CollectorSpec {
        name: "vault",
        enabled_by_default: true,
        help: "whether each Vault is up, sealed or a standby, and its clock skew, polled in the background (vault_health_*)",
        build: |ctx| Box::new(HealthCollector::new(ctx.health.clone())),
    },
    CollectorSpec {
        name: "exporter",
        enabled_by_default: true,
        help: "build information and config reload status of the exporter (vault_token_exporter_*)",
        build: |ctx| Box::new(ExporterInfo(ctx.config.clone())),
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

/// The enabled collectors behind one `prometheus` collector, each timed and guarded.
pub struct Collectors {
    enabled: Vec<(&'static str, Box<dyn Collect>)>,
    /// What the collectors describe, and the outcome families.
    descs: Vec<Desc>,
}

impl Collectors {
    /// Builds the collectors named in `enabled` (names from [`COLLECTORS`]).
    pub fn new(ctx: &CollectorContext, enabled: &[&str]) -> Collectors {
        let enabled = COLLECTORS
            .iter()
            .filter(|spec| enabled.contains(&spec.name))
            .map(|spec| (spec.name, (spec.build)(ctx)))
            .collect();
        Collectors::from_parts(enabled)
    }

    /// Builds from explicit collectors (tests, benchmarks).
    pub fn from_parts(enabled: Vec<(&'static str, Box<dyn Collect>)>) -> Collectors {
        let mut descs: Vec<Desc> = enabled.iter().flat_map(|(_, c)| c.describe()).collect();
        descs.extend(OUTCOME_FAMILIES.map(|(name, help)| describe(name, help, &["collector"])));
        Collectors { enabled, descs }
    }

    /// Names of the collectors that run.
    pub fn names(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|(name, _)| *name).collect()
    }
}

impl Collector for Collectors {
    /// The families the collectors describe: a registry refuses this collector if one of
    /// them is already registered, or if two collectors describe the same family.
    /// Families a collector does not describe (process, dynamic ones) go unchecked.
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let mut outcomes = Vec::with_capacity(self.enabled.len());
        for (name, collector) in &self.enabled {
            let started = Instant::now();
            let mut families = Vec::new();
            let ok = guarded(name, || collector.collect(&mut families));
            if ok {
                out.append(&mut families);
            }
            outcomes.push((*name, ok, started.elapsed().as_secs_f64()));
        }
        out.extend(outcome_families(&outcomes));
        out
    }
}

impl Collectors {
    /// One scrape in the text format, families in name order: the same bytes as the
    /// prometheus `TextEncoder` writes for `Registry::gather` of these collectors, written
    /// without building the intermediate protobuf structures (a 1000-token scrape is
    /// tens of thousands of series).
    pub fn write_text(&self) -> crate::family::OrderedText {
        let mut out = TextOut::default();
        let mut outcomes = Vec::with_capacity(self.enabled.len());
        for (name, collector) in &self.enabled {
            let started = Instant::now();
            let mark = out.mark();
            let ok = guarded(name, || collector.write_text(&mut out));
            if !ok {
                out.rollback(mark);
            }
            outcomes.push((*name, ok, started.elapsed().as_secs_f64()));
        }
        for family in outcome_families(&outcomes) {
            if let Err(e) = out.push_family(family) {
                log::error!("cannot encode the collector metrics: {e}");
            }
        }
        let text = out.into_ordered();
        if !text.clashes().is_empty() {
            // A bug of this program, not of the scrape: said once, not at every scrape.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                log::error!(
                    "two collectors export the same families, served merged: {}",
                    text.clashes().join(", ")
                )
            });
        }
        text
    }
}

/// Runs one collector, keeping its error or panic from failing the scrape.
fn guarded(name: &str, run: impl FnOnce() -> Result<(), CollectError>) -> bool {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            log::error!("collector failed collector={name}: {e}");
            false
        }
        Err(_) => {
            log::error!("collector panicked collector={name}");
            false
        }
    }
}

/// `..._collector_success` and `..._collector_duration_seconds`: name and help.
const OUTCOME_FAMILIES: [(&str, &str); 2] = [
    (
        "vault_token_exporter_collector_success",
        "1 if the collector succeeded in this scrape.",
    ),
    (
        "vault_token_exporter_collector_duration_seconds",
        "Time the collector took in this scrape.",
    ),
];

/// The [`OUTCOME_FAMILIES`] from (name, ok, seconds).
fn outcome_families(outcomes: &[(&str, bool, f64)]) -> [MetricFamily; 2] {
    let [(success, success_help), (duration, duration_help)] = OUTCOME_FAMILIES;
    let mut success = family(success, success_help, MetricType::GAUGE, outcomes.len());
    let mut duration = family(duration, duration_help, MetricType::GAUGE, outcomes.len());
    for (name, ok, seconds) in outcomes {
        let labels = || vec![label("collector", name)];
        duration.mut_metric().push(gauge(labels(), *seconds));
        success
            .mut_metric()
            .push(gauge(labels(), f64::from(u8::from(*ok))));
    }
    [success, duration]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::build;
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

    fn exporter_info() -> Box<ExporterInfo> {
        Box::new(ExporterInfo(Arc::new(ConfigStatus::default())))
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

    /// The scrape with the collector durations (timings) blanked.
    fn without_durations(text: &str) -> String {
        text.lines()
            .map(|l| match l.rsplit_once(' ') {
                Some((series, _))
                    if series.starts_with("vault_token_exporter_collector_duration_seconds{") =>
                {
                    format!("{series} X\n")
                }
                _ => format!("{l}\n"),
            })
            .collect()
    }

    fn direct(collectors: &Collectors) -> String {
        String::from_utf8(collectors.write_text().to_vec()).unwrap()
    }

    #[test]
    fn the_direct_text_path_serves_what_the_registry_serves() {
        let ctx = CollectorContext::new(
            ["prod", "dev", "a\"b"]
                .iter()
                .map(|n| Arc::new(TokenState::new(*n)))
                .collect(),
        );
        ctx.tokens.current()[0].observe_duration(0.2);
        // The process collector's figures move between two scrapes: leave it out here.
        let build = || Collectors::new(&ctx, &["token", "exporter"]);
        let text = direct(&build());
        assert!(text.contains("vault_token_state{vault=\"prod\",state=\"unknown\"} 1"));
        assert_eq!(
            without_durations(&text),
            without_durations(&scrape(build()))
        );
        let failing = || {
            Collectors::from_parts(vec![
                ("exporter", exporter_info() as Box<dyn Collect>),
                ("failing", Box::new(Failing)),
                ("panicking", Box::new(Panicking)),
            ])
        };
        assert_eq!(
            without_durations(&direct(&failing())),
            without_durations(&scrape(failing()))
        );
        let all = direct(&Collectors::new(&ctx, &["token", "exporter", "process"]));
        assert!(all.contains("process_resident_memory_bytes "), "{all}");
        let names: Vec<&str> = all
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted, "families in name order, each once");
    }

    /// A family name belongs to one collector: a second writer would merge its series
    /// under the first one's HELP and TYPE, which no scrape should show.
    #[test]
    fn no_two_collectors_of_the_table_export_the_same_family() {
        let token = Arc::new(TokenState::new("prod"));
        token.expiry.set(2.0e9);
        token.max_expiry.set(2.1e9);
        token.last_renewal.set(1.0e9);
        token.set_info(crate::state::TokenInfo::default());
        let ctx = CollectorContext::new(vec![token]);
        let every: Vec<&str> = COLLECTORS.iter().map(|c| c.name).collect();
        let text = Collectors::new(&ctx, &every).write_text();
        assert_eq!(text.clashes(), [] as [String; 0]);
        let twice = Collectors::from_parts(vec![
            ("exporter", exporter_info() as Box<dyn Collect>),
            ("again", exporter_info()),
        ]);
        let text = twice.write_text();
        assert!(text
            .clashes()
            .contains(&"vault_token_exporter_build_info".to_owned()));
        // A registry sees the same: it takes the table, refuses the clash.
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(Collectors::new(&ctx, &every)))
            .expect("the table's collectors describe disjoint families");
        let described = Collectors::new(&ctx, &every).desc().len();
        assert!(described > 14, "{described} families described");
        assert!(prometheus::Registry::new()
            .register(Box::new(twice))
            .is_err());
        // And so does a library user's registry that already has one of the names.
        let registry = prometheus::Registry::new();
        let own = prometheus::Gauge::new("vault_token_ttl_seconds", "Mine.").unwrap();
        registry.register(Box::new(own)).unwrap();
        let ours = Collectors::new(&ctx, &["token"]);
        assert!(registry.register(Box::new(ours)).is_err());
    }

    #[test]
    fn the_reload_gauges_follow_the_config_status() {
        let status = Arc::new(ConfigStatus::default());
        let exporter = || {
            Collectors::from_parts(vec![(
                "exporter",
                Box::new(ExporterInfo(status.clone())) as Box<dyn Collect>,
            )])
        };
        let text = direct(&exporter());
        assert!(text.contains("vault_token_exporter_config_last_reload_successful 0\n"));
        assert!(
            !text.contains("_success_timestamp_seconds"),
            "absent before a load"
        );
        status.loaded(1234.5);
        status.failed();
        let text = direct(&exporter());
        assert!(text.contains("vault_token_exporter_config_last_reload_successful 0\n"));
        assert!(text.contains(
            "vault_token_exporter_config_last_reload_success_timestamp_seconds 1234.5\n"
        ));
        status.loaded(2000.0);
        let text = direct(&exporter());
        assert!(text.contains("vault_token_exporter_config_last_reload_successful 1\n"));
        assert!(text.contains("_success_timestamp_seconds 2000\n"), "{text}");
        assert!(text.contains(&format!("revision=\"{}\"", build::REVISION)));
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
            ("exporter", exporter_info()),
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
        let ctx = CollectorContext::new(vec![Arc::new(TokenState::new("prod"))]);
        let text = scrape(Collectors::new(&ctx, &["exporter"]));
        assert!(!text.contains("vault_token_state"));
        assert!(!text.contains("collector=\"token\""));
        let text = scrape(Collectors::new(&ctx, &["token", "process"]));
        assert!(text.contains("vault_token_state{vault=\"prod\",state=\"unknown\"} 1"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(!text.contains("vault_token_exporter_build_info"));
    }
}
