//! The `token` collector: every `vault_token_*` series of every configured token, read from
//! the workers' atomics at scrape time (TTLs count down between renewals without any
//! worker waking up).

use std::sync::Arc;

use prometheus::proto::{MetricFamily, MetricType};

use crate::collector::{Collect, CollectError};
use crate::error::Reason;
use crate::family::{counter, family, gauge, histogram, label};
use crate::state::{Outcome, TokenState, TokenStatus, DURATION_BUCKETS};
use crate::worker::unix_now;

/// Exports the state of every configured token.
pub struct TokenCollector {
    tokens: Vec<Arc<TokenState>>,
}

impl TokenCollector {
    pub fn new(tokens: Vec<Arc<TokenState>>) -> TokenCollector {
        TokenCollector { tokens }
    }

    /// The families as of `now` (Unix seconds).
    pub fn families_at(&self, now: f64) -> Vec<MetricFamily> {
        let n = self.tokens.len();
        let mut renewals = family(
            "vault_token_renewals_total",
            "Renewal outcomes per token: success, failure, not_renewable.",
            MetricType::COUNTER,
            n * 3,
        );
        let mut failures = family(
            "vault_token_renewal_failures_total",
            "Failed renewal attempts (lookups included) per token, by reason.",
            MetricType::COUNTER,
            n * Reason::ALL.len(),
        );
        let mut expiry = family(
            "vault_token_expiry_timestamp_seconds",
            "Unix time the token expires.",
            MetricType::GAUGE,
            n,
        );
        let mut ttl = family(
            "vault_token_ttl_seconds",
            "Seconds until the token expires, 0 once expired.",
            MetricType::GAUGE,
            n,
        );
        let mut renewable = family(
            "vault_token_renewable",
            "1 if Vault says the token is renewable.",
            MetricType::GAUGE,
            n,
        );
        let mut capped = family(
            "vault_token_capped",
            "1 once renewals no longer extend the token (max TTL reached): it dies at its expiry.",
            MetricType::GAUGE,
            n,
        );
        let mut renewing = family(
            "vault_token_renewing",
            "1 while the exporter keeps this token alive.",
            MetricType::GAUGE,
            n,
        );
        let mut last = family(
            "vault_token_last_renewal_timestamp_seconds",
            "Unix time of the last successful renewal by this exporter.",
            MetricType::GAUGE,
            n,
        );
        let mut next = family(
            "vault_token_next_renewal_timestamp_seconds",
            "Unix time of the next scheduled renewal or retry.",
            MetricType::GAUGE,
            n,
        );
        let mut duration = family(
            "vault_token_renewal_duration_seconds",
            "Latency of renew-self calls that got an HTTP answer.",
            MetricType::HISTOGRAM,
            n,
        );
        let mut state = family(
            "vault_token_state",
            "Token state, one-hot: renewing, not_renewable, capped, invalid, expired, never_expires, unknown.",
            MetricType::GAUGE,
            n * TokenStatus::ALL.len(),
        );
        let mut info = family(
            "vault_token_info",
            "Token metadata from the last successful lookup (policies sorted, comma-joined).",
            MetricType::GAUGE,
            n,
        );

        for token in &self.tokens {
            let s = token.snapshot();
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
            let status = s.status_at(now);
            renewable
                .mut_metric()
                .push(gauge(vault(), f64::from(u8::from(s.renewable))));
            capped
                .mut_metric()
                .push(gauge(vault(), f64::from(u8::from(s.capped))));
            let is_renewing = s.renewing && status == TokenStatus::Renewing;
            renewing
                .mut_metric()
                .push(gauge(vault(), f64::from(u8::from(is_renewing))));
            if let Some(t) = s.last_renewal {
                last.mut_metric().push(gauge(vault(), t));
            }
            if let Some(t) = s
                .next_renewal
                .filter(|_| is_renewing || status == TokenStatus::Unknown)
            {
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
                let v = f64::from(u8::from(candidate == status));
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
            renewals, failures, expiry, ttl, renewable, capped, renewing, last, next, duration,
            state, info,
        ]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
    }
}

impl Collect for TokenCollector {
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        out.extend(self.families_at(unix_now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

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
