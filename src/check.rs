//! `vault-token-exporter check`: every configured token looked up once (lookup-self, no
//! renewal) and one line per token, for CI pipelines and runbooks. Exit 0 if every token
//! is renewing or never expires, 1 otherwise (2, a config error, is main's).

use std::io::Write;
use std::time::Duration;

use collectors::client::{Agents, VaultApi};
use collectors::logfmt::Value;
use collectors::parse::{format_rfc3339, Lookup};
use collectors::state::TokenStatus;
use collectors::worker::{max_expiry, status_after_lookup};

use crate::app;
use crate::config::{ConfigError, TokenConfig};

/// Lookups run this many at a time.
const PARALLEL: usize = 16;

/// What one lookup says of a token.
struct Verdict {
    status: TokenStatus,
    /// Seconds left, when the token expires.
    time_left: Option<u64>,
    /// When the token dies whatever renewals do (Unix seconds), when known.
    max_expiry: Option<f64>,
    /// The failure reason, when the lookup failed.
    reason: Option<&'static str>,
}

impl Verdict {
    fn healthy(&self) -> bool {
        matches!(
            self.status,
            TokenStatus::Renewing | TokenStatus::NeverExpires
        )
    }
}

/// Looks every token up and writes one line each to `out`; `Ok(true)` if all are healthy.
pub fn run(tokens: &[TokenConfig], out: &mut dyn Write) -> Result<bool, ConfigError> {
    let agents = Agents::default();
    let clients = tokens
        .iter()
        .map(|t| app::client(&agents, t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut healthy = true;
    for (chunk, clients) in tokens.chunks(PARALLEL).zip(clients.chunks(PARALLEL)) {
        let verdicts: Vec<Verdict> = std::thread::scope(|scope| {
            let running: Vec<_> = chunk
                .iter()
                .zip(clients)
                .map(|(token, client)| scope.spawn(move || verdict(token, client)))
                .collect();
            running
                .into_iter()
                .map(|h| h.join().expect("a lookup thread panicked"))
                .collect()
        });
        for (token, v) in chunk.iter().zip(&verdicts) {
            healthy &= v.healthy();
            let time_left = match (v.status, v.time_left) {
                (TokenStatus::NeverExpires, _) => "never".to_owned(),
                (_, Some(secs)) => human(Duration::from_secs(secs)),
                (_, None) => "unknown".to_owned(),
            };
            let max_expiry = v
                .max_expiry
                .map(format_rfc3339)
                .unwrap_or_else(|| "unknown".to_owned());
            let _ = writeln!(
                out,
                "vault={} state={} time_left={time_left} max_expiry={max_expiry} reason={}",
                Value(&token.name),
                v.status.as_str(),
                v.reason.unwrap_or("none"),
            );
        }
    }
    Ok(healthy)
}

fn verdict(token: &TokenConfig, client: &dyn VaultApi) -> Verdict {
    let failed = |status, reason| Verdict {
        status,
        time_left: None,
        max_expiry: None,
        reason: Some(reason),
    };
    let secret = match token.source.read() {
        Ok(secret) => secret,
        Err(_) => return failed(TokenStatus::Unknown, "token_source"),
    };
    match client.lookup_self(&secret) {
        Ok(lookup) => looked_up(&lookup, token.renew.max_ttl),
        Err(e) if e.is_fatal_for_token() => failed(TokenStatus::Invalid, e.reason().as_str()),
        Err(e) => failed(TokenStatus::Unknown, e.reason().as_str()),
    }
}

/// The state the renewal worker would give the token after this lookup.
fn looked_up(lookup: &Lookup, configured_max_ttl: Option<Duration>) -> Verdict {
    Verdict {
        status: status_after_lookup(lookup),
        time_left: (!lookup.never_expires()).then_some(lookup.ttl),
        max_expiry: max_expiry(lookup, configured_max_ttl),
        reason: None,
    }
}

/// `1h2m3s`, `45s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_config_ones() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(125)), "2m5s");
        assert_eq!(human(Duration::from_secs(3723)), "1h2m3s");
    }
}
