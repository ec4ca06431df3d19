//! The status page at `/`: every token at a glance, most urgent first, with the health of
//! the Vault behind it. For the operator paged at night who opens the exporter in a browser
//! before Grafana has loaded.
//!
//! Plain HTML and CSS, no JavaScript, rendered from the same shared state a scrape reads
//! (never a call to Vault). Every value that comes from Vault or the config is
//! HTML-escaped; the page never shows a token.

use std::collections::HashMap;
use std::fmt::Write as _;

use collectors::clock::unix_now;
use collectors::health::{HealthSet, HealthSnapshot, HealthState};
use collectors::parse::format_rfc3339;
use collectors::state::TokenSet;
use collectors::state::{Snapshot, TokenStatus};

/// One token, as the page shows it.
pub struct Row<'a> {
    pub vault: &'a str,
    pub snapshot: Snapshot,
    /// The Vault this token's entry points at; `None` when the `vault` collector is off.
    pub health: Option<HealthSnapshot>,
}

/// The page as of now for the configured tokens; `health` is `None` when the `vault`
/// collector is off.
pub fn render_current(
    tokens: &TokenSet,
    health: Option<&HealthSet>,
    telemetry_path: &str,
) -> String {
    let tokens = tokens.current();
    let health = health.map(HealthSet::current);
    // Names are unique in a configuration: one lookup per token, not a scan.
    let by_name: HashMap<&str, &HealthState> = health
        .iter()
        .flat_map(|vaults| vaults.iter())
        .map(|(name, state)| (name.as_str(), &**state))
        .collect();
    let mut rows: Vec<Row<'_>> = tokens
        .iter()
        .map(|t| Row {
            vault: &t.vault,
            snapshot: t.snapshot(),
            health: by_name.get(t.vault.as_str()).map(|state| state.snapshot()),
        })
        .collect();
    render(&mut rows, telemetry_path, unix_now())
}

/// Renders the page for `rows` as of `now` (Unix seconds).
pub fn render(rows: &mut [Row<'_>], telemetry_path: &str, now: f64) -> String {
    rows.sort_by(|a, b| {
        let key = |r: &Row<'_>| {
            let status = r.snapshot.status_at(now);
            (
                urgency(status, r.snapshot.consecutive_failures > 0),
                r.snapshot.ttl_at(now).unwrap_or(f64::INFINITY),
            )
        };
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| a.vault.cmp(b.vault))
    });
    let mut counts = [0usize; TokenStatus::ALL.len()];
    for row in rows.iter() {
        let status = row.snapshot.status_at(now);
        if let Some(i) = TokenStatus::ALL.iter().position(|s| *s == status) {
            counts[i] += 1;
        }
    }

    let mut html = String::with_capacity(2048 + rows.len() * 700);
    html.push_str(HEAD);
    let path = escape(telemetry_path);
    let _ = write!(
        html,
        "<header><h1>vault-token-exporter</h1><nav><a href=\"{path}\">Metrics</a> \
         <a href=\"/-/healthy\">Health</a> <a href=\"/-/ready\">Ready</a></nav></header>\n\
         <p class=\"summary\">{} token(s) as of {} (times in UTC):",
        rows.len(),
        format_utc(now)
    );
    for (status, count) in TokenStatus::ALL.iter().zip(counts) {
        if count > 0 {
            let _ = write!(
                html,
                " <span class=\"state {0}\">{0}</span>&nbsp;{count}",
                status.as_str()
            );
        }
    }
    html.push_str(
        "</p>\n<table>\n<thead><tr><th>vault</th><th>state</th><th>time left</th>\
         <th>expires</th><th>max expiry</th><th>last renewal</th><th>next renewal</th>\
         <th>renewed / failed</th><th>last failure</th><th>Vault</th></tr></thead>\n<tbody>\n",
    );
    for row in rows.iter() {
        write_row(&mut html, row, now);
    }
    if rows.is_empty() {
        html.push_str("<tr><td colspan=\"10\">no token configured</td></tr>\n");
    }
    html.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    html
}

fn write_row(html: &mut String, row: &Row<'_>, now: f64) {
    let s = &row.snapshot;
    let status = s.status_at(now).as_str();
    let ttl = match (s.status_at(now), s.ttl_at(now)) {
        (TokenStatus::NeverExpires, _) => "never expires".to_owned(),
        (_, Some(left)) => format_duration(left),
        (_, None) => "–".to_owned(),
    };
    let [success, failure, _] = s.renewals;
    // A failure streak in red; a past failure (renewed since) in grey.
    let last_failure = match s.last_failure {
        None => "–".to_owned(),
        Some(reason) if s.consecutive_failures > 0 => format!(
            "<span class=\"failure now\" title=\"failed attempts in a row\">{} ×{}</span>",
            reason.as_str(),
            s.consecutive_failures
        ),
        Some(reason) => format!("<span class=\"failure past\">{}</span>", reason.as_str()),
    };
    let _ = writeln!(
        html,
        "<tr class=\"{status}\"><td class=\"vault\">{}</td><td><span class=\"state {status}\">{status}</span></td>\
         <td class=\"num\">{ttl}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td class=\"num\">{success} / {failure}</td><td>{last_failure}</td><td>{}</td></tr>",
        escape(row.vault),
        timestamp(s.expiry),
        timestamp(s.max_expiry),
        relative(s.last_renewal, now),
        relative(s.next_renewal, now),
        health_cell(row.health.as_ref()),
    );
}

/// An absolute time to the minute (the seconds are in its tooltip); `–` when unknown.
fn timestamp(unix: Option<f64>) -> String {
    match unix {
        None => "–".into(),
        Some(t) => {
            let full = format_utc(t);
            let minute = full.get(..16).unwrap_or(&full);
            format!(
                "<time datetime=\"{}\" title=\"{full}\">{minute}</time>",
                format_rfc3339(t)
            )
        }
    }
}

/// A time near now as a person says it (`41s ago`, `in 3m 10s`), the absolute time in
/// its tooltip; `–` when unknown.
fn relative(unix: Option<f64>, now: f64) -> String {
    match unix {
        None => "–".into(),
        Some(t) => {
            let words = if t >= now {
                format!("in {}", format_duration(t - now))
            } else {
                format!("{} ago", format_duration(now - t))
            };
            format!(
                "<time datetime=\"{}\" title=\"{}\">{words}</time>",
                format_rfc3339(t),
                format_utc(t)
            )
        }
    }
}

fn health_cell(health: Option<&HealthSnapshot>) -> String {
    let Some(h) = health else {
        return "–".into();
    };
    match h.up {
        None => "<span class=\"health unknown\">not polled yet</span>".into(),
        Some(false) => "<span class=\"health down\">unreachable</span>".into(),
        Some(true) => {
            let (class, word) = if h.sealed {
                ("down", "sealed")
            } else if h.standby {
                ("ok", "standby")
            } else {
                ("ok", "active")
            };
            let version = h
                .info
                .as_ref()
                .map(|(version, _)| format!(" {}", escape(version)))
                .unwrap_or_default();
            let skew = h
                .clock_skew
                .filter(|skew| skew.abs() >= 1.0)
                .map(|skew| format!(", clock {skew:+.0} s"))
                .unwrap_or_default();
            format!("<span class=\"health {class}\">{word}</span>{version}{skew}")
        }
    }
}

/// Most urgent first: tokens that are dead or will die whatever happens, then those that
/// die at their expiry unless something changes (not renewable, or renewing but failing
/// right now, as VaultTokenExpiringSoon sees them), then the rest. Ties: least time left.
fn urgency(status: TokenStatus, failing: bool) -> u8 {
    match status {
        TokenStatus::Expired => 0,
        TokenStatus::Invalid => 1,
        TokenStatus::Capped => 2,
        TokenStatus::NotRenewable => 3,
        TokenStatus::Renewing if failing => 3,
        TokenStatus::Unknown => 4,
        TokenStatus::Renewing => 5,
        TokenStatus::NeverExpires => 6,
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// `3d 4h`, `2h 05m`, `4m 10s`, `9s`: two units are enough to judge urgency.
fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `2026-12-03 14:05:09 UTC`.
fn format_utc(unix: f64) -> String {
    format_rfc3339(unix).replace('T', " ").replace('Z', " UTC")
}

const HEAD: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="30">
<title>vault-token-exporter</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.25rem; color: #1f2328; background: #fff; }
header { display: flex; align-items: baseline; gap: 2rem; }
h1 { font-size: 1.4rem; margin: 0 0 .5rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .875rem; }
th, td { text-align: left; padding: .35rem .45rem; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.vault { font-weight: 600; white-space: normal; overflow-wrap: anywhere; min-width: 8rem; max-width: 20rem; }
.failure.now { color: #cf222e; font-weight: 600; }
.failure.past { color: #6e7781; }
.state { display: inline-block; padding: .1rem .5rem; border-radius: 1rem; font-size: .8rem; font-weight: 600; color: #fff; }
.state.renewing { background: #1a7f37; }
.state.never_expires { background: #0969da; }
.state.unknown { background: #6e7781; }
.state.not_renewable { background: #bf8700; }
.state.capped { background: #bc4c00; }
.state.invalid { background: #cf222e; }
.state.expired { background: #82071e; }
.health.ok { color: #1a7f37; font-weight: 600; }
.health.down { color: #cf222e; font-weight: 600; }
.health.unknown { color: #6e7781; }
.summary .state { margin-left: .5rem; }
</style>
</head>
<body>
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use collectors::error::Reason;
    use collectors::state::TokenState;

    fn snapshot(status: TokenStatus, expiry: Option<f64>, failure: Option<Reason>) -> Snapshot {
        let state = TokenState::new("x");
        if let Some(reason) = failure {
            state.count_failure(reason);
        }
        state.set_status(status);
        if let Some(e) = expiry {
            state.expiry.set(e);
        }
        state.snapshot()
    }

    #[test]
    fn most_urgent_first_then_least_time_left() {
        let now = 1_000_000.0;
        let mut rows = vec![
            Row {
                vault: "healthy-long",
                snapshot: snapshot(TokenStatus::Renewing, Some(now + 7200.0), None),
                health: None,
            },
            Row {
                vault: "root",
                snapshot: snapshot(TokenStatus::NeverExpires, None, None),
                health: None,
            },
            Row {
                vault: "healthy-short",
                snapshot: snapshot(TokenStatus::Renewing, Some(now + 60.0), None),
                health: None,
            },
            Row {
                vault: "failing",
                snapshot: snapshot(
                    TokenStatus::Renewing,
                    Some(now + 3000.0),
                    Some(Reason::Sealed),
                ),
                health: None,
            },
            Row {
                vault: "fixed-lease",
                snapshot: snapshot(TokenStatus::NotRenewable, Some(now + 100.0), None),
                health: None,
            },
            Row {
                vault: "dead",
                snapshot: snapshot(
                    TokenStatus::Invalid,
                    Some(now + 600.0),
                    Some(Reason::PermissionDenied),
                ),
                health: None,
            },
        ];
        let html = render(&mut rows, "/metrics", now);
        let order: Vec<_> = rows.iter().map(|r| r.vault).collect();
        assert_eq!(
            order,
            [
                "dead",
                "fixed-lease",
                "failing",
                "healthy-short",
                "healthy-long",
                "root"
            ],
            "a renewing token failing right now ranks with those that will die"
        );
        let at = |needle: &str| html.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(at(">dead<") < at(">healthy-short<"));
        assert!(html.contains("<a href=\"/metrics\">Metrics</a>"));
        assert!(html.contains("permission_denied") && html.contains("sealed"));
        assert!(html.contains(">1m 00s<"), "{html}");
        assert!(html.contains("never expires"));
        assert!(!html.contains("<script"), "no JavaScript");
    }

    #[test]
    fn names_and_vault_values_are_escaped() {
        let now = 0.0;
        let health = HealthSnapshot {
            up: Some(true),
            sealed: false,
            standby: false,
            clock_skew: Some(-12.4),
            info: Some(("<b>1.0</b>".into(), "c".into())),
        };
        let mut rows = vec![Row {
            vault: "<script>alert('x')</script>&\"",
            snapshot: snapshot(TokenStatus::Unknown, None, None),
            health: Some(health),
        }];
        let html = render(&mut rows, "/m\"><script>", now);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
        assert!(html.contains("clock -12 s"), "{html}");
    }

    #[test]
    fn times_and_durations_read_as_a_person_expects() {
        assert_eq!(format_utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_735_059_206.9), "2024-12-24 16:53:26 UTC");
        assert_eq!(format_utc(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_duration(9.9), "9s");
        assert_eq!(format_duration(250.0), "4m 10s");
        assert_eq!(format_duration(7500.0), "2h 05m");
        assert_eq!(
            format_duration(3.0 * 86_400.0 + 4.0 * 3600.0 + 59.0),
            "3d 4h"
        );
    }
}
