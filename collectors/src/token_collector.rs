//! The `token` collector: every `vault_token_*` series of every configured token, read from
//! the workers' atomics at scrape time (TTLs count down between renewals without any
//! worker waking up).
//!
//! Two outputs with the same content: [`TokenCollector::families_at`] builds protobuf
//! families for a `prometheus::Registry`; [`TokenCollector::write_text_at`], the scrape
//! path, writes the text format directly, byte for byte what `TextEncoder` writes for
//! the registry's families (series in the order `Registry::gather` sorts them), without
//! the ~5 allocations per series the protobuf structures cost.

use std::sync::{Arc, RwLock};

use prometheus::proto::{MetricFamily, MetricType};

use crate::clock::unix_now;
use crate::collect::{Collect, CollectError};
use crate::error::Reason;
use crate::family::{
    counter, family, gauge, histogram, label, label_set_opening, write_series, TextOut,
};
use crate::state::{Outcome, Snapshot, TokenSet, TokenState, TokenStatus, DURATION_BUCKETS};

/// Name, help and type of one exported family.
struct Spec(&'static str, &'static str, MetricType);

const RENEWALS: Spec = Spec(
    "vault_token_renewals_total",
    "Renewal outcomes per token: success, failure, not_renewable.",
    MetricType::COUNTER,
);
const FAILURES: Spec = Spec(
    "vault_token_renewal_failures_total",
    "Failed renewal attempts (lookups included) per token, by reason.",
    MetricType::COUNTER,
);
const EXPIRY: Spec = Spec(
    "vault_token_expiry_timestamp_seconds",
    "Unix time the token expires.",
    MetricType::GAUGE,
);
const MAX_EXPIRY: Spec = Spec(
    "vault_token_max_expiry_timestamp_seconds",
    "Unix time the token dies whatever renewals do (its max TTL), when known.",
    MetricType::GAUGE,
);
const CONSECUTIVE_FAILURES: Spec = Spec(
    "vault_token_consecutive_failures",
    "Failed attempts since the token was last known good (renewed, or a new token looked up).",
    MetricType::GAUGE,
);
const TTL: Spec = Spec(
    "vault_token_ttl_seconds",
    "Seconds until the token expires, 0 once expired.",
    MetricType::GAUGE,
);
const RENEWABLE: Spec = Spec(
    "vault_token_renewable",
    "1 if Vault says the token is renewable.",
    MetricType::GAUGE,
);
const CAPPED: Spec = Spec(
    "vault_token_capped",
    "1 once renewals no longer extend the token (max TTL reached): it dies at its expiry.",
    MetricType::GAUGE,
);
const RENEWING: Spec = Spec(
    "vault_token_renewing",
    "1 while the exporter keeps this token alive.",
    MetricType::GAUGE,
);
const LAST: Spec = Spec(
    "vault_token_last_renewal_timestamp_seconds",
    "Unix time of the last successful renewal by this exporter.",
    MetricType::GAUGE,
);
const NEXT: Spec = Spec(
    "vault_token_next_renewal_timestamp_seconds",
    "Unix time of the next scheduled renewal or retry.",
    MetricType::GAUGE,
);
const DURATION: Spec = Spec(
    "vault_token_renewal_duration_seconds",
    "Latency of renew-self calls that got an HTTP answer.",
    MetricType::HISTOGRAM,
);
const STATE: Spec = Spec(
    "vault_token_state",
    "Token state, one-hot: renewing, not_renewable, capped, invalid, expired, never_expires, unknown.",
    MetricType::GAUGE,
);
const INFO: Spec = Spec(
    "vault_token_info",
    "Token metadata from the last successful lookup (policies sorted, comma-joined).",
    MetricType::GAUGE,
);

/// What one scrape reads of a token, once.
struct Seen {
    s: Snapshot,
    status: TokenStatus,
    is_renewing: bool,
}

impl Seen {
    fn at(token: &TokenState, now: f64) -> Seen {
        let s = token.snapshot();
        let status = s.status_at(now);
        Seen {
            is_renewing: s.renewing && status == TokenStatus::Renewing,
            status,
            s,
        }
    }

    /// `next_renewal_timestamp`: while a renewal or retry is scheduled.
    fn next_renewal(&self) -> Option<f64> {
        self.s
            .next_renewal
            .filter(|_| self.is_renewing || self.status == TokenStatus::Unknown)
    }
}

/// Writes the series of one token into a family: (buffer, `{vault="NAME"`, what the
/// scrape saw, index of the token).
type SeriesWriter<'a> = dyn FnMut(&mut Vec<u8>, &str, &Seen, usize) + 'a;

/// Exports the state of every configured token.
pub struct TokenCollector {
    tokens: Vec<Arc<TokenState>>,
    /// Indexes into `tokens` by name: the order `Registry::gather` sorts series in
    /// (names are unique, so they decide).
    by_name: Vec<usize>,
    /// Per token: `{vault="NAME"`, escaped once.
    openings: Vec<Box<str>>,
    /// `le="..."` of each bucket of [`DURATION_BUCKETS`], then `le="+Inf"`.
    le: Vec<String>,
    /// `result="..."`, `reason="..."`, `state="..."` pairs in label-value order (the
    /// order of the registry's sort), with the index each reads.
    results: Vec<(String, usize)>,
    reasons: Vec<(String, usize)>,
    states: Vec<(String, TokenStatus)>,
}

/// `name="value"` pairs of a label, sorted by value.
fn sorted_pairs<T: Copy>(
    name: &str,
    values: impl Iterator<Item = (&'static str, T)>,
) -> Vec<(String, T)> {
    let mut pairs: Vec<(&str, T)> = values.collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs
        .into_iter()
        .map(|(v, t)| (format!("{name}=\"{v}\""), t))
        .collect()
}

impl TokenCollector {
    pub fn new(tokens: Vec<Arc<TokenState>>) -> TokenCollector {
        let mut by_name: Vec<usize> = (0..tokens.len()).collect();
        by_name.sort_by(|a, b| tokens[*a].vault.cmp(&tokens[*b].vault));
        let openings = tokens
            .iter()
            .map(|t| label_set_opening("vault", &t.vault))
            .collect();
        let le = DURATION_BUCKETS
            .iter()
            .map(|b| format!("le=\"{b}\""))
            .chain(std::iter::once("le=\"+Inf\"".to_owned()))
            .collect();
        TokenCollector {
            by_name,
            openings,
            le,
            results: sorted_pairs(
                "result",
                Outcome::ALL.iter().map(|o| (o.as_str(), *o as usize)),
            ),
            reasons: sorted_pairs(
                "reason",
                Reason::ALL.iter().map(|r| (r.as_str(), r.index())),
            ),
            states: sorted_pairs("state", TokenStatus::ALL.iter().map(|s| (s.as_str(), *s))),
            tokens,
        }
    }

    /// The families as of `now` (Unix seconds).
    pub fn families_at(&self, now: f64) -> Vec<MetricFamily> {
        let n = self.tokens.len();
        let new = |spec: &Spec, capacity: usize| family(spec.0, spec.1, spec.2, capacity);
        let mut renewals = new(&RENEWALS, n * 3);
        let mut failures = new(&FAILURES, n * Reason::ALL.len());
        let mut expiry = new(&EXPIRY, n);
        let mut max_expiry = new(&MAX_EXPIRY, n);
        let mut consecutive = new(&CONSECUTIVE_FAILURES, n);
        let mut ttl = new(&TTL, n);
        let mut renewable = new(&RENEWABLE, n);
        let mut capped = new(&CAPPED, n);
        let mut renewing = new(&RENEWING, n);
        let mut last = new(&LAST, n);
        let mut next = new(&NEXT, n);
        let mut duration = new(&DURATION, n);
        let mut state = new(&STATE, n * TokenStatus::ALL.len());
        let mut info = new(&INFO, n);

        for token in &self.tokens {
            let seen = Seen::at(token, now);
            let s = &seen.s;
            let vault = || vec![label("vault", &token.vault)];
            let with =
                |name: &str, value: &str| vec![label("vault", &token.vault), label(name, value)];
            for outcome in Outcome::ALL {
                let v = s.renewals[outcome as usize] as f64;
                renewals
                    .mut_metric()
                    .push(counter(with("result", outcome.as_str()), v));
            }
            for reason in Reason::ALL {
                let v = s.failures[reason.index()] as f64;
                failures
                    .mut_metric()
                    .push(counter(with("reason", reason.as_str()), v));
            }
            if let (Some(e), Some(left)) = (s.expiry, s.ttl_at(now)) {
                expiry.mut_metric().push(gauge(vault(), e));
                ttl.mut_metric().push(gauge(vault(), left));
            }
            if let Some(m) = s.max_expiry {
                max_expiry.mut_metric().push(gauge(vault(), m));
            }
            consecutive
                .mut_metric()
                .push(gauge(vault(), s.consecutive_failures as f64));
            renewable
                .mut_metric()
                .push(gauge(vault(), f64::from(u8::from(s.renewable))));
            capped
                .mut_metric()
                .push(gauge(vault(), f64::from(u8::from(s.capped))));
            renewing
                .mut_metric()
                .push(gauge(vault(), f64::from(u8::from(seen.is_renewing))));
            if let Some(t) = s.last_renewal {
                last.mut_metric().push(gauge(vault(), t));
            }
            if let Some(t) = seen.next_renewal() {
                next.mut_metric().push(gauge(vault(), t));
            }
            duration.mut_metric().push(histogram(
                vault(),
                &DURATION_BUCKETS,
                &s.duration_buckets,
                s.duration_count,
                s.duration_sum,
            ));
            for candidate in TokenStatus::ALL {
                let v = f64::from(u8::from(candidate == seen.status));
                state
                    .mut_metric()
                    .push(gauge(with("state", candidate.as_str()), v));
            }
            if let Some(i) = token.info() {
                info.mut_metric().push(gauge(
                    vec![
                        label("vault", &token.vault),
                        label("display_name", &i.display_name),
                        label("token_type", &i.token_type),
                        label("auth_path", &i.auth_path),
                        label("policies", &i.policies),
                    ],
                    1.0,
                ));
            }
        }
        // A family with no series is not exported (the text encoder refuses it).
        [
            renewals,
            failures,
            expiry,
            max_expiry,
            consecutive,
            ttl,
            renewable,
            capped,
            renewing,
            last,
            next,
            duration,
            state,
            info,
        ]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
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
        let bool_value = |b: bool| f64::from(u8::from(b));
        // One family: `series` writes the lines of one token.
        let mut write = |spec: &Spec, series: &mut SeriesWriter| {
            let open = out.begin_family(spec.0, spec.1, spec.2);
            let buf = out.buf();
            for (i, seen) in &seen {
                series(buf, &self.openings[*i], seen, *i);
            }
            out.end_family(open);
        };
        let name = RENEWALS.0;
        write(&RENEWALS, &mut |buf, vault, seen, _| {
            for (pair, index) in &self.results {
                write_series(
                    buf,
                    name,
                    "",
                    vault,
                    Some(pair),
                    seen.s.renewals[*index] as f64,
                );
            }
        });
        let name = FAILURES.0;
        write(&FAILURES, &mut |buf, vault, seen, _| {
            for (pair, index) in &self.reasons {
                write_series(
                    buf,
                    name,
                    "",
                    vault,
                    Some(pair),
                    seen.s.failures[*index] as f64,
                );
            }
        });
        let expiry = |seen: &Seen| seen.s.expiry.zip(seen.s.ttl_at(now));
        write(&EXPIRY, &mut |buf, vault, seen, _| {
            if let Some((e, _)) = expiry(seen) {
                write_series(buf, EXPIRY.0, "", vault, None, e);
            }
        });
        write(&MAX_EXPIRY, &mut |buf, vault, seen, _| {
            if let Some(m) = seen.s.max_expiry {
                write_series(buf, MAX_EXPIRY.0, "", vault, None, m);
            }
        });
        write(&CONSECUTIVE_FAILURES, &mut |buf, vault, seen, _| {
            let v = seen.s.consecutive_failures as f64;
            write_series(buf, CONSECUTIVE_FAILURES.0, "", vault, None, v);
        });
        write(&TTL, &mut |buf, vault, seen, _| {
            if let Some((_, left)) = expiry(seen) {
                write_series(buf, TTL.0, "", vault, None, left);
            }
        });
        write(&RENEWABLE, &mut |buf, vault, seen, _| {
            write_series(
                buf,
                RENEWABLE.0,
                "",
                vault,
                None,
                bool_value(seen.s.renewable),
            );
        });
        write(&CAPPED, &mut |buf, vault, seen, _| {
            write_series(buf, CAPPED.0, "", vault, None, bool_value(seen.s.capped));
        });
        write(&RENEWING, &mut |buf, vault, seen, _| {
            write_series(
                buf,
                RENEWING.0,
                "",
                vault,
                None,
                bool_value(seen.is_renewing),
            );
        });
        write(&LAST, &mut |buf, vault, seen, _| {
            if let Some(t) = seen.s.last_renewal {
                write_series(buf, LAST.0, "", vault, None, t);
            }
        });
        write(&NEXT, &mut |buf, vault, seen, _| {
            if let Some(t) = seen.next_renewal() {
                write_series(buf, NEXT.0, "", vault, None, t);
            }
        });
        let (name, le) = (DURATION.0, &self.le);
        write(&DURATION, &mut |buf, vault, seen, _| {
            let s = &seen.s;
            for (pair, count) in le.iter().zip(&s.duration_buckets) {
                write_series(buf, name, "_bucket", vault, Some(pair), *count as f64);
            }
            let count = s.duration_count as f64;
            write_series(
                buf,
                name,
                "_bucket",
                vault,
                le.last().map(String::as_str),
                count,
            );
            write_series(buf, name, "_sum", vault, None, s.duration_sum);
            write_series(buf, name, "_count", vault, None, count);
        });
        let name = STATE.0;
        write(&STATE, &mut |buf, vault, seen, _| {
            for (pair, status) in &self.states {
                write_series(
                    buf,
                    name,
                    "",
                    vault,
                    Some(pair),
                    bool_value(*status == seen.status),
                );
            }
        });
        let mut extra = Vec::new();
        write(&INFO, &mut |buf, vault, _, i| {
            self.tokens[i].with_info(|info| {
                let Some(info) = info else { return };
                extra.clear();
                for (k, v) in [
                    ("display_name", &info.display_name),
                    ("token_type", &info.token_type),
                    ("auth_path", &info.auth_path),
                    ("policies", &info.policies),
                ] {
                    if !extra.is_empty() {
                        extra.push(b',');
                    }
                    extra.extend_from_slice(k.as_bytes());
                    extra.extend_from_slice(b"=\"");
                    crate::family::escape_into(&mut extra, v, true);
                    extra.push(b'"');
                }
                let extra = std::str::from_utf8(&extra).expect("escaping keeps UTF-8");
                write_series(buf, INFO.0, "", vault, Some(extra), 1.0);
            })
        });
    }
}

impl Collect for TokenCollector {
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
            String::from_utf8(out.into_ordered().into_vec()).unwrap()
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
        String::from_utf8(out.into_ordered().into_vec()).unwrap()
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
        let collector = TokenCollector::new(tokens);
        for now in [0.0, 2000.0, 1_700_000_000.0] {
            let expected = gathered(&collector, now);
            assert_eq!(direct(&collector, now), expected, "at {now}");
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
