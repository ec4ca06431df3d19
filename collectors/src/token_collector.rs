//! The `token` collector: every `vault_token_*` series of every configured token, read from
//! the workers' atomics at scrape time (TTLs count down between renewals without any
//! worker waking up). The text of every family but the TTL's is kept while what it is
//! written from stays the same (see `Unchanged`): a scrape between two changes writes
//! the TTL lines only.
//!
//! The families are described once, in [`FAMILIES`]: name, help, type, labels and how
//! each value is read from what a scrape saw of a token. Two outputs follow that one
//! description: [`TokenCollector::families_at`] builds protobuf families (the prometheus
//! `Collector` a library user registers in any registry), and
//! [`TokenCollector::write_text_at`], the scrape path, writes the text format directly
//! through [`crate::family::FamilyText`], byte for byte what `TextEncoder` writes for the registry's
//! families, without the ~5 allocations per series the protobuf structures cost.

use std::sync::{Arc, RwLock};

use prometheus::core::Desc;
use prometheus::proto::{MetricFamily, MetricType};

use crate::clock::unix_now;
use crate::collect::{Collect, CollectError};
use crate::error::Reason;
use crate::family::{
    counter, describe, family, gauge, histogram, label, Buckets, Label, Lines, TextCache, TextOut,
};
use crate::state::{
    Outcome, Snapshot, TokenInfo, TokenSet, TokenState, TokenStatus, DURATION_BUCKETS,
};

/// One exported family: every series has the `vault` label first, then what `series` adds.
struct TokenFamily {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Series,
}

/// The series a family has per token, and how their values are read.
enum Series {
    /// One series, absent while the reading is `None`.
    One(fn(&Seen) -> Option<f64>),
    /// Like `One`, for a value that moves with the scrape's clock (the TTL): written at
    /// every scrape, where the other families' text is kept until their state changes.
    Countdown(fn(&Seen) -> Option<f64>),
    /// One series per value of a second label, read by the value's position in `values`.
    Each {
        label: &'static str,
        values: fn() -> Vec<&'static str>,
        read: fn(&Seen, usize) -> f64,
    },
    /// A histogram over `bounds`: (cumulative bucket counts, count, sum).
    Histogram {
        bounds: &'static [f64],
        read: fn(&Snapshot) -> (&[u64], u64, f64),
    },
    /// Value 1 with labels from the token's last lookup; absent before one.
    Info(fn(&TokenInfo) -> [(&'static str, &str); 4]),
}

fn bool_value(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// Every family of the `token` collector.
const FAMILIES: [TokenFamily; 14] = [
    TokenFamily {
        name: "vault_token_renewals_total",
        help: "Renewal outcomes per token: success, failure, not_renewable.",
        kind: MetricType::COUNTER,
        series: Series::Each {
            label: "result",
            values: || Outcome::ALL.iter().map(|o| o.as_str()).collect(),
            read: |seen, i| seen.s.renewals[Outcome::ALL[i] as usize] as f64,
        },
    },
    TokenFamily {
        name: "vault_token_renewal_failures_total",
        help: "Failed renewal attempts (lookups included) per token, by reason.",
        kind: MetricType::COUNTER,
        series: Series::Each {
            label: "reason",
            values: || Reason::ALL.iter().map(|r| r.as_str()).collect(),
            read: |seen, i| seen.s.failures[Reason::ALL[i].index()] as f64,
        },
    },
    TokenFamily {
        name: "vault_token_expiry_timestamp_seconds",
        help: "Unix time the token expires.",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| seen.s.expiry),
    },
    TokenFamily {
        name: "vault_token_max_expiry_timestamp_seconds",
        help: "Unix time the token dies whatever renewals do (its max TTL), when known.",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| seen.s.max_expiry),
    },
    TokenFamily {
        name: "vault_token_consecutive_failures",
        help: "Failed attempts since the token was last known good (renewed, or a new token looked up).",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| Some(seen.s.consecutive_failures as f64)),
    },
    TokenFamily {
        name: "vault_token_ttl_seconds",
        help: "Seconds until the token expires, 0 once expired.",
        kind: MetricType::GAUGE,
        series: Series::Countdown(|seen| seen.ttl),
    },
    TokenFamily {
        name: "vault_token_renewable",
        help: "1 if Vault says the token is renewable.",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| Some(bool_value(seen.s.renewable))),
    },
    TokenFamily {
        name: "vault_token_capped",
        help: "1 once renewals no longer extend the token (max TTL reached): it dies at its expiry.",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| Some(bool_value(seen.s.capped))),
    },
    TokenFamily {
        name: "vault_token_renewing",
        help: "1 while the exporter keeps this token alive.",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| Some(bool_value(seen.is_renewing))),
    },
    TokenFamily {
        name: "vault_token_last_renewal_timestamp_seconds",
        help: "Unix time of the last successful renewal by this exporter.",
        kind: MetricType::GAUGE,
        series: Series::One(|seen| seen.s.last_renewal),
    },
    TokenFamily {
        name: "vault_token_next_renewal_timestamp_seconds",
        help: "Unix time of the next scheduled renewal or retry.",
        kind: MetricType::GAUGE,
        // While a renewal or retry is scheduled.
        series: Series::One(|seen| {
            let scheduled = seen.is_renewing || seen.status == TokenStatus::Unknown;
            seen.s.next_renewal.filter(|_| scheduled)
        }),
    },
    TokenFamily {
        name: "vault_token_renewal_duration_seconds",
        help: "Latency of renew-self calls that got an HTTP answer.",
        kind: MetricType::HISTOGRAM,
        series: Series::Histogram {
            bounds: &DURATION_BUCKETS,
            read: |s| (&s.duration_buckets, s.duration_count, s.duration_sum),
        },
    },
    TokenFamily {
        name: "vault_token_state",
        help: "Token state, one-hot: renewing, not_renewable, capped, invalid, expired, never_expires, unknown.",
        kind: MetricType::GAUGE,
        series: Series::Each {
            label: "state",
            values: || TokenStatus::ALL.iter().map(|s| s.as_str()).collect(),
            read: |seen, i| bool_value(seen.status == TokenStatus::ALL[i]),
        },
    },
    TokenFamily {
        name: "vault_token_info",
        help: "Token metadata from the last successful lookup (policies sorted, comma-joined).",
        kind: MetricType::GAUGE,
        series: Series::Info(|i| {
            [
                ("display_name", &i.display_name),
                ("token_type", &i.token_type),
                ("auth_path", &i.auth_path),
                ("policies", &i.policies),
            ]
        }),
    },
];

/// The descriptors of [`FAMILIES`], with their label names.
fn describe_families() -> Vec<Desc> {
    let describe_one = |f: &TokenFamily| {
        let mut labels = vec!["vault"];
        match &f.series {
            Series::Each { label, .. } => labels.push(label),
            Series::Info(read) => labels.extend(read(&TokenInfo::default()).map(|(k, _)| k)),
            Series::One(_) | Series::Countdown(_) | Series::Histogram { .. } => {}
        }
        describe(f.name, f.help, &labels)
    };
    FAMILIES.iter().map(describe_one).collect()
}

/// What one scrape reads of a token, once.
struct Seen {
    s: Snapshot,
    status: TokenStatus,
    is_renewing: bool,
    /// Seconds left as of the scrape, while the expiry is known.
    ttl: Option<f64>,
}

impl Seen {
    fn at(token: &TokenState, now: f64) -> Seen {
        let s = token.snapshot();
        let status = s.status_at(now);
        Seen {
            is_renewing: s.renewing && status == TokenStatus::Renewing,
            ttl: s.ttl_at(now),
            status,
            s,
        }
    }
}

/// A family of [`FAMILIES`] made ready for the text path: its label sets escaped once,
/// in the order `Registry::gather` sorts series in.
enum TextSeries {
    One(fn(&Seen) -> Option<f64>),
    /// The second label's pairs sorted by value, each with its position in `values`.
    Each(Vec<(Label, usize)>, fn(&Seen, usize) -> f64),
    Histogram(Buckets, fn(&Snapshot) -> (&[u64], u64, f64)),
    Info(fn(&TokenInfo) -> [(&'static str, &str); 4]),
}

impl TextSeries {
    fn new(series: &Series) -> TextSeries {
        match series {
            Series::One(read) | Series::Countdown(read) => TextSeries::One(*read),
            Series::Each {
                label,
                values,
                read,
            } => {
                let mut pairs: Vec<(&str, usize)> = values()
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (v, i))
                    .collect();
                pairs.sort();
                let pairs = pairs
                    .into_iter()
                    .map(|(v, i)| (Label::new(label, v), i))
                    .collect();
                TextSeries::Each(pairs, *read)
            }
            Series::Histogram { bounds, read } => {
                TextSeries::Histogram(Buckets::new(bounds), *read)
            }
            Series::Info(read) => TextSeries::Info(*read),
        }
    }

    /// Writes the series of one token.
    fn write(&self, out: &mut Lines, vault: &Label, token: &TokenState, seen: &Seen) {
        match self {
            TextSeries::One(read) => {
                if let Some(v) = read(seen) {
                    out.series(&[vault], v);
                }
            }
            TextSeries::Each(pairs, read) => {
                for (pair, i) in pairs {
                    out.series(&[vault, pair], read(seen, *i));
                }
            }
            TextSeries::Histogram(buckets, read) => {
                let (cumulative, count, sum) = read(&seen.s);
                out.histogram(&[vault], buckets, cumulative, count, sum);
            }
            TextSeries::Info(read) => token.with_info(|info| {
                if let Some(info) = info {
                    out.series_with(&[vault], &read(info), 1.0);
                }
            }),
        }
    }
}

/// Exports the state of every configured token.
pub struct TokenCollector {
    tokens: Vec<Arc<TokenState>>,
    /// The text of every family but the countdowns, kept while no token changes.
    kept: TextCache<Vec<Unchanged>>,
    /// Indexes into `tokens` by name: the order `Registry::gather` sorts series in
    /// (names are unique, so they decide).
    by_name: Vec<usize>,
    /// Per token: its `vault` label.
    vault: Vec<Label>,
    /// [`FAMILIES`], ready for the text path.
    text: Vec<TextSeries>,
}

impl TokenCollector {
    pub fn new(tokens: Vec<Arc<TokenState>>) -> TokenCollector {
        let mut by_name: Vec<usize> = (0..tokens.len()).collect();
        by_name.sort_by(|a, b| tokens[*a].vault.cmp(&tokens[*b].vault));
        TokenCollector {
            kept: TextCache::default(),
            by_name,
            vault: tokens
                .iter()
                .map(|t| Label::new("vault", &t.vault))
                .collect(),
            text: FAMILIES
                .iter()
                .map(|f| TextSeries::new(&f.series))
                .collect(),
            tokens,
        }
    }

    /// The families as of `now` (Unix seconds), series in configuration order (a
    /// registry sorts them); a family without series is left out.
    pub fn families_at(&self, now: f64) -> Vec<MetricFamily> {
        let seen: Vec<Seen> = self.tokens.iter().map(|t| Seen::at(t, now)).collect();
        let mut out = Vec::with_capacity(FAMILIES.len());
        for f in &FAMILIES {
            let values = match &f.series {
                Series::Each { values, .. } => values(),
                _ => Vec::new(),
            };
            let per_token = values.len().max(1);
            let mut proto = family(f.name, f.help, f.kind, self.tokens.len() * per_token);
            let metrics = proto.mut_metric();
            let series = |labels, value| match f.kind {
                MetricType::COUNTER => counter(labels, value),
                _ => gauge(labels, value),
            };
            for (token, seen) in self.tokens.iter().zip(&seen) {
                let vault = || label("vault", &token.vault);
                match &f.series {
                    Series::One(read) | Series::Countdown(read) => {
                        if let Some(v) = read(seen) {
                            metrics.push(series(vec![vault()], v));
                        }
                    }
                    Series::Each {
                        label: name, read, ..
                    } => {
                        for (i, value) in values.iter().enumerate() {
                            let labels = vec![vault(), label(name, value)];
                            metrics.push(series(labels, read(seen, i)));
                        }
                    }
                    Series::Histogram { bounds, read } => {
                        let (cumulative, count, sum) = read(&seen.s);
                        metrics.push(histogram(vec![vault()], bounds, cumulative, count, sum));
                    }
                    Series::Info(read) => {
                        if let Some(info) = token.info() {
                            let mut labels = Vec::with_capacity(5);
                            labels.push(vault());
                            labels.extend(read(&info).iter().map(|(k, v)| label(k, v)));
                            metrics.push(gauge(labels, 1.0));
                        }
                    }
                }
            }
            // The text encoder refuses a family without series.
            if !proto.get_metric().is_empty() {
                out.push(proto);
            }
        }
        out
    }

    /// Writes every family as of `now` (Unix seconds) in the text format: the bytes
    /// `TextEncoder` writes for [`TokenCollector::families_at`] once `Registry::gather`
    /// has sorted them, one pass per family over one snapshot of every token.
    pub fn write_text_at(&self, now: f64, out: &mut TextOut) {
        let seen: Vec<(usize, Seen)> = self
            .by_name
            .iter()
            .map(|&i| (i, Seen::at(&self.tokens[i], now)))
            .collect();
        let write = |out: &mut TextOut, countdowns: bool| {
            let families = FAMILIES.iter().zip(&self.text);
            for (f, text) in families.filter(|(f, _)| is_countdown(f) == countdowns) {
                let mut family = out.family(f.name, f.help, f.kind);
                let mut lines = family.lines();
                for (i, seen) in &seen {
                    text.write(&mut lines, &self.vault[*i], &self.tokens[*i], seen);
                }
            }
        };
        let unchanged = seen
            .iter()
            .map(|(i, seen)| Unchanged::of(&self.tokens[*i], seen))
            .collect();
        let kept = self.kept.write(unchanged, out, |_, fresh| {
            write(fresh, false);
            Ok::<_, std::convert::Infallible>(())
        });
        let Ok(()) = kept;
        write(out, true);
    }
}

fn is_countdown(f: &TokenFamily) -> bool {
    matches!(f.series, Series::Countdown(_))
}

/// Everything but the countdowns is written from: while it is equal, so is their text.
#[derive(PartialEq)]
struct Unchanged {
    s: Snapshot,
    /// Moves with the clock too (`expired` once past the expiry).
    status: TokenStatus,
    info_changes: u64,
}

impl Unchanged {
    fn of(token: &TokenState, seen: &Seen) -> Unchanged {
        Unchanged {
            s: seen.s.clone(),
            status: seen.status,
            info_changes: token.info_changes(),
        }
    }
}

impl Collect for TokenCollector {
    fn describe(&self) -> Vec<Desc> {
        describe_families()
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        out.extend(self.families_at(unix_now()));
        Ok(())
    }

    fn write_text(&self, out: &mut TextOut) -> Result<(), CollectError> {
        self.write_text_at(unix_now(), out);
        Ok(())
    }
}

/// The `token` collector over a [`TokenSet`] that a reload may replace: a
/// [`TokenCollector`] for the current set, rebuilt on the first scrape after a change.
pub struct LiveTokenCollector {
    set: TokenSet,
    built: RwLock<Built>,
}

/// A token list and the collector built for it.
type Built = (Arc<[Arc<TokenState>]>, Arc<TokenCollector>);

impl LiveTokenCollector {
    pub fn new(set: TokenSet) -> LiveTokenCollector {
        let tokens = set.current();
        let collector = Arc::new(TokenCollector::new(tokens.to_vec()));
        LiveTokenCollector {
            set,
            built: RwLock::new((tokens, collector)),
        }
    }

    /// The collector for the set as it is now.
    fn current(&self) -> Arc<TokenCollector> {
        let tokens = self.set.current();
        {
            let built = self.built.read().unwrap_or_else(|e| e.into_inner());
            if Arc::ptr_eq(&built.0, &tokens) {
                return built.1.clone();
            }
        }
        let collector = Arc::new(TokenCollector::new(tokens.to_vec()));
        *self.built.write().unwrap_or_else(|e| e.into_inner()) = (tokens, collector.clone());
        collector
    }
}

impl Collect for LiveTokenCollector {
    fn describe(&self) -> Vec<Desc> {
        describe_families()
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        self.current().collect(out)
    }

    fn write_text(&self, out: &mut TextOut) -> Result<(), CollectError> {
        self.current().write_text(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn a_replaced_token_set_is_what_the_next_scrape_shows() {
        let prod = Arc::new(TokenState::new("prod"));
        prod.count(Outcome::Success);
        let set = TokenSet::new(vec![prod.clone(), Arc::new(TokenState::new("old"))]);
        let live = LiveTokenCollector::new(set.clone());
        let text = |live: &LiveTokenCollector| {
            let mut out = TextOut::with_capacity(0);
            live.write_text(&mut out).unwrap();
            String::from_utf8(out.into_ordered().to_vec()).unwrap()
        };
        assert!(text(&live).contains("vault=\"old\""));
        set.replace(vec![prod, Arc::new(TokenState::new("new"))]);
        let after = text(&live);
        assert!(!after.contains("vault=\"old\""), "{after}");
        assert!(after.contains("vault_token_state{vault=\"new\",state=\"unknown\"} 1"));
        assert!(
            after.contains("vault_token_renewals_total{vault=\"prod\",result=\"success\"} 1"),
            "a kept token keeps its counters: {after}"
        );
    }

    fn encode(families: &[MetricFamily]) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(families, &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_token_not_yet_looked_up_has_every_zeroed_series_and_no_expiry() {
        let text = encode(
            &TokenCollector::new(vec![Arc::new(TokenState::new("prod"))]).families_at(1000.0),
        );
        for result in ["success", "failure", "not_renewable"] {
            let series =
                format!("vault_token_renewals_total{{vault=\"prod\",result=\"{result}\"}}");
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
        for reason in [
            "network",
            "timeout",
            "tls",
            "server_error",
            "sealed",
            "rate_limited",
            "permission_denied",
            "bad_request",
            "bad_response",
            "token_source",
        ] {
            let series =
                format!("vault_token_renewal_failures_total{{vault=\"prod\",reason=\"{reason}\"}}");
            assert_eq!(value(&text, &series), Some(0.0), "{series}");
        }
        let states = [
            "renewing",
            "not_renewable",
            "capped",
            "invalid",
            "expired",
            "never_expires",
            "unknown",
        ];
        for st in states {
            let series = format!("vault_token_state{{vault=\"prod\",state=\"{st}\"}}");
            let expected = if st == "unknown" { 1.0 } else { 0.0 };
            assert_eq!(value(&text, &series), Some(expected), "{series}");
        }
        for gauge in [
            "vault_token_renewable",
            "vault_token_capped",
            "vault_token_renewing",
            "vault_token_consecutive_failures",
        ] {
            assert_eq!(
                value(&text, &format!("{gauge}{{vault=\"prod\"}}")),
                Some(0.0),
                "{gauge}"
            );
        }
        for absent in [
            "vault_token_expiry_timestamp_seconds{",
            "vault_token_ttl_seconds{",
            "vault_token_max_expiry_timestamp_seconds{",
            "vault_token_info{",
            "vault_token_last_renewal_timestamp_seconds{",
            "vault_token_next_renewal_timestamp_seconds{",
        ] {
            assert!(!text.contains(absent), "{absent} present:\n{text}");
        }
    }

    #[test]
    fn ttl_counts_down_at_scrape_time_and_stops_at_zero() {
        let token = Arc::new(TokenState::new("prod"));
        token.set_status(TokenStatus::Renewing);
        token.expiry.set(1000.0);
        token.next_renewal.set(700.0);
        let collector = TokenCollector::new(vec![token]);
        let at = |now: f64| encode(&collector.families_at(now));
        assert_eq!(
            value(&at(400.0), "vault_token_ttl_seconds{vault=\"prod\"}"),
            Some(600.0)
        );
        assert_eq!(
            value(&at(999.5), "vault_token_ttl_seconds{vault=\"prod\"}"),
            Some(0.5)
        );
        let expired = at(1200.0);
        assert_eq!(
            value(&expired, "vault_token_ttl_seconds{vault=\"prod\"}"),
            Some(0.0)
        );
        assert_eq!(
            value(
                &expired,
                "vault_token_expiry_timestamp_seconds{vault=\"prod\"}"
            ),
            Some(1000.0)
        );
        assert_eq!(
            value(
                &expired,
                "vault_token_state{vault=\"prod\",state=\"expired\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &expired,
                "vault_token_state{vault=\"prod\",state=\"renewing\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&expired, "vault_token_renewing{vault=\"prod\"}"),
            Some(0.0)
        );
        assert!(!expired.contains("vault_token_next_renewal_timestamp_seconds{"));
    }

    #[test]
    fn max_expiry_and_the_failure_streak_are_exported_as_the_state_holds_them() {
        let token = Arc::new(TokenState::new("prod"));
        token.max_expiry.set(1_702_764_800.0);
        token.count_failure(Reason::Network);
        token.count_failure(Reason::Timeout);
        let collector = TokenCollector::new(vec![token.clone()]);
        let text = encode(&collector.families_at(0.0));
        let max = "vault_token_max_expiry_timestamp_seconds{vault=\"prod\"}";
        let streak = "vault_token_consecutive_failures{vault=\"prod\"}";
        assert_eq!(value(&text, max), Some(1_702_764_800.0), "{text}");
        assert_eq!(value(&text, streak), Some(2.0), "{text}");
        token.reset_consecutive_failures();
        token.max_expiry.clear();
        let text = encode(&collector.families_at(0.0));
        assert_eq!(value(&text, streak), Some(0.0));
        assert!(!text.contains("vault_token_max_expiry_timestamp_seconds{"));
    }

    #[test]
    fn info_has_sorted_policies_and_never_the_token() {
        let token = Arc::new(TokenState::new("prod"));
        token.set_info(crate::state::TokenInfo {
            display_name: "approle".into(),
            token_type: "service".into(),
            auth_path: "auth/approle/login".into(),
            policies: "app,default".into(),
        });
        let text = encode(&TokenCollector::new(vec![token]).families_at(0.0));
        let series = "vault_token_info{vault=\"prod\",display_name=\"approle\",token_type=\"service\",auth_path=\"auth/approle/login\",policies=\"app,default\"}";
        assert_eq!(value(&text, series), Some(1.0), "{text}");
    }

    /// What the registry serves: families sorted by name, series by label values.
    fn gathered(collector: &TokenCollector, now: f64) -> String {
        let mut families = collector.families_at(now);
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families
            .iter_mut()
            .for_each(crate::family::sort_like_gather);
        encode(&families)
    }

    fn direct(collector: &TokenCollector, now: f64) -> String {
        let mut out = TextOut::default();
        collector.write_text_at(now, &mut out);
        String::from_utf8(out.into_ordered().to_vec()).unwrap()
    }

    #[test]
    fn the_kept_text_follows_every_change_and_the_ttl_every_scrape() {
        use crate::state::TokenInfo;
        let token = Arc::new(TokenState::new("prod"));
        token.set_status(TokenStatus::Renewing);
        token.set_renewable(true);
        token.expiry.set(1000.0);
        let collector = TokenCollector::new(vec![token.clone()]);
        // What a collector that never kept anything writes.
        let afresh = |now| direct(&TokenCollector::new(vec![token.clone()]), now);
        let scrape = |now| {
            let text = direct(&collector, now);
            assert_eq!(text, afresh(now), "kept text differs at {now}");
            text
        };
        let ttl = |text: &str| value(text, "vault_token_ttl_seconds{vault=\"prod\"}");
        assert_eq!(ttl(&scrape(400.0)), Some(600.0));
        assert_eq!(
            ttl(&scrape(401.5)),
            Some(598.5),
            "nothing changed, the TTL did"
        );

        token.count(Outcome::Success);
        token.observe_duration(0.02);
        let renewed = scrape(402.0);
        assert!(renewed.contains("vault_token_renewals_total{vault=\"prod\",result=\"success\"} 1"));
        assert!(renewed.contains("vault_token_renewal_duration_seconds_count{vault=\"prod\"} 1"));
        token.set_info(TokenInfo {
            display_name: "first".into(),
            ..TokenInfo::default()
        });
        assert!(scrape(403.0).contains("display_name=\"first\""));
        token.set_info(TokenInfo {
            display_name: "second".into(),
            ..TokenInfo::default()
        });
        assert!(
            scrape(404.0).contains("display_name=\"second\""),
            "same size, new text"
        );
        token.count_failure(Reason::Network);
        token.set_capped(true);
        token.max_expiry.set(1000.0);
        let capped = scrape(405.0);
        assert!(capped.contains("vault_token_capped{vault=\"prod\"} 1"));
        assert!(capped.contains("vault_token_consecutive_failures{vault=\"prod\"} 1"));
        // No worker writes anything when the token expires: the clock alone moves it.
        let expired = scrape(1000.5);
        assert_eq!(
            value(
                &expired,
                "vault_token_state{vault=\"prod\",state=\"expired\"}"
            ),
            Some(1.0)
        );
        assert_eq!(ttl(&expired), Some(0.0));
    }

    #[test]
    fn the_text_written_directly_is_what_the_registry_and_text_encoder_serve() {
        use crate::state::TokenInfo;
        assert_eq!(direct(&TokenCollector::new(Vec::new()), 0.0), "");
        let names = [
            "prod",
            "dev",
            "b\"q",
            "a\\b",
            "z\nnl",
            "Zed",
            "prod-2",
            "ünïcode",
            "",
        ];
        let tokens: Vec<Arc<TokenState>> = names
            .iter()
            .map(|n| Arc::new(TokenState::new(*n)))
            .collect();
        // Every state and every optional series, in some token or other.
        tokens[0].set_status(TokenStatus::Renewing);
        tokens[0].set_renewable(true);
        tokens[0].expiry.set(5000.25);
        tokens[0].next_renewal.set(3000.125);
        tokens[0].last_renewal.set(1000.5);
        tokens[0].observe_duration(0.003);
        tokens[0].observe_duration(0.7);
        tokens[0].observe_duration(12.0);
        tokens[0].count(Outcome::Success);
        tokens[0].count_failure(Reason::Sealed);
        tokens[0].set_info(TokenInfo {
            display_name: "approle \"x\"".into(),
            token_type: "service".into(),
            auth_path: "auth/approle\\login\n".into(),
            policies: "app,default".into(),
        });
        tokens[0].max_expiry.set(1_702_764_800.5);
        tokens[1].set_status(TokenStatus::Capped);
        tokens[1].set_capped(true);
        tokens[1].expiry.set(1500.0);
        tokens[1].max_expiry.set(1500.0);
        tokens[2].set_status(TokenStatus::NotRenewable);
        tokens[2].count(Outcome::NotRenewable);
        tokens[3].set_status(TokenStatus::Invalid);
        tokens[3].count_failure(Reason::PermissionDenied);
        tokens[4].set_status(TokenStatus::NeverExpires);
        tokens[5].next_renewal.set(2001.0);
        tokens[6].set_status(TokenStatus::Renewing);
        tokens[6].expiry.set(2100.0);
        tokens[6].next_renewal.set(2050.0);
        for r in Reason::ALL {
            tokens[7].count_failure(r);
        }
        let hostile = Arc::new(TokenState::new("h\"\\\n"));
        hostile.set_status(TokenStatus::Renewing);
        hostile.expiry.set(4000.0);
        hostile.max_expiry.set(9000.0);
        hostile.last_renewal.set(1000.0);
        hostile.next_renewal.set(3000.0);
        hostile.set_info(TokenInfo {
            display_name: "role=\"x\",injected=\"1".into(),
            token_type: "batch\n# HELP".into(),
            auth_path: "auth\\".into(),
            policies: String::new(),
        });
        let mut tokens = tokens;
        tokens.push(hostile);
        let collector = TokenCollector::new(tokens);
        for now in [0.0, 2000.0, 1_700_000_000.0] {
            let expected = gathered(&collector, now);
            assert_eq!(direct(&collector, now), expected, "at {now}");
        }
        // Every family has a series of the hostile token, whose name needs every escape.
        let expected = gathered(&collector, 2000.0);
        let hostile = "vault=\"h\\\"\\\\\\n\"";
        for f in &FAMILIES {
            assert!(
                expected
                    .lines()
                    .any(|l| l.starts_with(f.name) && l.contains(hostile)),
                "{} has no series of the hostile token:\n{expected}",
                f.name
            );
        }
    }

    #[test]
    fn every_family_is_described_with_its_help_and_label_names() {
        let token = Arc::new(TokenState::new("prod"));
        token.expiry.set(3000.0);
        token.max_expiry.set(4000.0);
        token.last_renewal.set(1000.0);
        token.next_renewal.set(2500.0);
        token.set_info(crate::state::TokenInfo::default());
        let descs = describe_families();
        assert_eq!(descs.len(), FAMILIES.len());
        let families = TokenCollector::new(vec![token]).families_at(2000.0);
        assert_eq!(families.len(), FAMILIES.len(), "every family has a series");
        for f in families {
            let d = descs.iter().find(|d| d.fq_name == f.name()).unwrap();
            assert_eq!(d.help, f.help());
            for m in f.get_metric() {
                let names: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
                assert_eq!(names, d.variable_labels, "{}", f.name());
            }
        }
    }

    #[test]
    fn the_histogram_has_cumulative_buckets_sum_and_count() {
        let token = Arc::new(TokenState::new("prod"));
        token.observe_duration(0.002);
        token.observe_duration(0.3);
        let text = encode(&TokenCollector::new(vec![token]).families_at(0.0));
        assert_eq!(
            value(
                &text,
                "vault_token_renewal_duration_seconds_bucket{vault=\"prod\",le=\"0.005\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "vault_token_renewal_duration_seconds_bucket{vault=\"prod\",le=\"1\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "vault_token_renewal_duration_seconds_bucket{vault=\"prod\",le=\"+Inf\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "vault_token_renewal_duration_seconds_count{vault=\"prod\"}"
            ),
            Some(2.0)
        );
    }
}
