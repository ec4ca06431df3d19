//! Black-box renewal tests: the real binary on port 0 against the in-process Vault double.
//! Each test asserts on the scraped metrics, the log and the requests the double saw.
//! Leases are a few seconds long so that every behaviour (renewal at TTL/2, retries,
//! capping, expiry) happens within seconds.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use vault_double::{Fault, RequestRecord, TokenSpec, VaultDouble};

const LOOKUP: &str = "/v1/auth/token/lookup-self";
const RENEW: &str = "/v1/auth/token/renew-self";

const RESULTS: [&str; 3] = ["success", "failure", "not_renewable"];
const REASONS: [&str; 10] = [
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
];
const STATES: [&str; 7] = [
    "renewing",
    "not_renewable",
    "capped",
    "invalid",
    "expired",
    "never_expires",
    "unknown",
];

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn now() -> f64 {
    unix(SystemTime::now())
}

/// Writes `vaults:` + `entries` as the config in `dir` and starts the exporter there.
fn start(dir: PathBuf, entries: &[String], args: &[&str]) -> Exporter {
    let config = dir.join("config.yml");
    std::fs::write(&config, format!("vaults:\n{}", entries.concat())).unwrap();
    let mut all = vec![format!("--config.file={}", config.display())];
    all.extend(args.iter().map(|a| a.to_string()));
    Exporter::start_in(dir, &all, &[])
}

/// A token file `name` in `dir` holding `token`.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    write_token(&path, token);
    path
}

/// Replaces a token file the way Vault Agent does: write a temporary file, rename it over.
fn write_token_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    write_token(&tmp, content);
    std::fs::rename(&tmp, path).unwrap();
}

fn on_path(vault: &VaultDouble, token: &str, path: &str) -> Vec<RequestRecord> {
    vault
        .requests_for(token)
        .into_iter()
        .filter(|r| r.path == path)
        .collect()
}

fn renews(vault: &VaultDouble, token: &str) -> Vec<RequestRecord> {
    on_path(vault, token, RENEW)
}

fn lookups(vault: &VaultDouble, token: &str) -> Vec<RequestRecord> {
    on_path(vault, token, LOOKUP)
}

fn failures_total(s: &Scrape, vault: &str) -> f64 {
    REASONS.iter().map(|r| s.failures(vault, r)).sum()
}

fn gauge(s: &Scrape, name: &str, vault: &str) -> Option<f64> {
    s.of(name, vault, &[])
}

/// Every series design.md says exists from the first scrape, with the one-hot state.
fn assert_zero_initialised(s: &Scrape, vault: &str) {
    for result in RESULTS {
        assert!(
            s.of("vault_token_renewals_total", vault, &[("result", result)])
                .is_some(),
            "vault_token_renewals_total{{result={result}}} missing for {vault}"
        );
    }
    for reason in REASONS {
        assert!(
            s.of(
                "vault_token_renewal_failures_total",
                vault,
                &[("reason", reason)]
            )
            .is_some(),
            "vault_token_renewal_failures_total{{reason={reason}}} missing for {vault}"
        );
    }
    let mut hot = 0;
    for state in STATES {
        let v = s
            .of("vault_token_state", vault, &[("state", state)])
            .unwrap_or_else(|| panic!("vault_token_state{{state={state}}} missing for {vault}"));
        assert!(v == 0.0 || v == 1.0, "state {state} = {v}");
        hot += v as u32;
    }
    assert_eq!(hot, 1, "exactly one state is 1 for {vault}");
    for name in [
        "vault_token_renewable",
        "vault_token_capped",
        "vault_token_renewing",
    ] {
        assert!(
            gauge(s, name, vault).is_some(),
            "{name} missing for {vault}"
        );
    }
}

#[test]
fn renews_at_half_the_ttl_with_vault_headers_and_no_increment() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(6).policies(&["default", "app"]));
    let dir = temp_dir("basic");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);

    // The start-up lookup: state renewing, no renewal yet.
    let s = exporter.wait_for(secs(5.0), "the start-up lookup", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    let seen = vault.requests_for(&token);
    assert!(!seen.is_empty());
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", LOOKUP),
        "the first request is a lookup-self"
    );
    assert!(
        seen[0].x_vault_request,
        "lookup-self carries X-Vault-Request: true"
    );
    assert!(
        seen[0].header("X-Vault-Token") == Some(token.as_str()),
        "lookup-self carries the token in X-Vault-Token"
    );
    assert!(renews(&vault, &token).is_empty(), "no renewal at start");
    assert_eq!(s.renewals("prod", "success"), 0.0, "a lookup is no renewal");
    let lookup_at = unix(seen[0].at);

    // Expiry and ttl from the lookup.
    let expire = unix(vault.token_expire_time(&token).unwrap());
    let expiry = gauge(&s, "vault_token_expiry_timestamp_seconds", "prod").expect("expiry");
    assert!(
        (expiry - expire).abs() <= 1.5,
        "expiry {expiry} vs Vault's {expire}"
    );
    let ttl = gauge(&s, "vault_token_ttl_seconds", "prod").expect("ttl");
    assert!(
        ttl > 0.0 && ttl <= 6.0 && (ttl - (expire - now())).abs() <= 1.5,
        "ttl {ttl}"
    );
    assert_eq!(gauge(&s, "vault_token_renewable", "prod"), Some(1.0));
    assert_eq!(gauge(&s, "vault_token_renewing", "prod"), Some(1.0));
    assert_eq!(gauge(&s, "vault_token_capped", "prod"), Some(0.0));
    assert!(gauge(&s, "vault_token_last_renewal_timestamp_seconds", "prod").is_none());
    let next = gauge(&s, "vault_token_next_renewal_timestamp_seconds", "prod").expect("next");
    // The lookup says 5 or 6 s (Vault rounds); renew at 40-50 % of it.
    assert!(
        next >= lookup_at + 0.4 * 5.0 - 0.3 && next <= lookup_at + 0.5 * 6.0 + 1.0,
        "next renewal {:.2}s after the lookup",
        next - lookup_at
    );
    assert_eq!(
        s.value(
            "vault_token_info",
            &[("vault", "prod"), ("token_type", "service")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "vault_token_info",
            &[("vault", "prod"), ("policies", "app,default")]
        ),
        Some(1.0),
        "policies sorted and comma-joined"
    );

    // The ttl counts down between renewals.
    let before = Instant::now();
    let a = exporter.scrape();
    std::thread::sleep(secs(1.0));
    let b = exporter.scrape();
    let between = before.elapsed().as_secs_f64();
    let ttl_a = gauge(&a, "vault_token_ttl_seconds", "prod").unwrap();
    let ttl_b = gauge(&b, "vault_token_ttl_seconds", "prod").unwrap();
    if b.renewals("prod", "success") == 0.0 {
        assert!(
            ttl_a - ttl_b >= 0.9 && ttl_a - ttl_b <= between + 0.05,
            "ttl went from {ttl_a} to {ttl_b} in 1 s"
        );
    }

    // The first renewal, at TTL/2 of the looked-up lease.
    let s = exporter.wait_for(secs(6.0), "the first renewal", |s| {
        s.renewals("prod", "success") >= 1.0
    });
    let renewed = renews(&vault, &token);
    let first = &renewed[0];
    assert_eq!(first.method, "POST");
    assert!(
        first.header("X-Vault-Token") == Some(token.as_str()),
        "renew-self carries the token in X-Vault-Token"
    );
    assert!(
        first.x_vault_request,
        "renew-self carries X-Vault-Request: true"
    );
    assert!(
        !first.body.contains("increment"),
        "no increment by default, body: {:?}",
        first.body.len()
    );
    assert_eq!(first.status, 200);
    let gap = unix(first.at) - lookup_at;
    assert!(
        (0.4 * 5.0 - 0.1..=0.5 * 6.0 + 1.0).contains(&gap),
        "first renewal {gap:.2}s after the lookup"
    );
    let last = gauge(&s, "vault_token_last_renewal_timestamp_seconds", "prod").expect("last");
    assert!((last - unix(first.at)).abs() < 1.0, "last renewal {last}");
    let expire = unix(vault.token_expire_time(&token).unwrap());
    let expiry = gauge(&s, "vault_token_expiry_timestamp_seconds", "prod").unwrap();
    assert!(
        (expiry - expire).abs() <= 1.5,
        "expiry {expiry} vs Vault's {expire}"
    );
    let next = gauge(&s, "vault_token_next_renewal_timestamp_seconds", "prod").expect("next");
    assert!(
        next > last + 0.4 * 6.0 - 0.1 && next <= last + 0.5 * 6.0 + 0.1,
        "next renewal {:.2}s after the last",
        next - last
    );
    assert!(
        s.of("vault_token_renewal_duration_seconds_count", "prod", &[])
            .unwrap_or(0.0)
            >= 1.0,
        "the renew-self latency is observed"
    );

    // The cadence comes from the renewal's lease (6 s: Vault keeps the last granted TTL).
    let s = exporter.wait_for(secs(5.0), "the second renewal", |s| {
        s.renewals("prod", "success") >= 2.0
    });
    let renewed = renews(&vault, &token);
    let gap = unix(renewed[1].at) - unix(renewed[0].at);
    assert!(
        (0.4 * 6.0 - 0.1..=0.5 * 6.0 + 1.0).contains(&gap),
        "second renewal {gap:.2}s after the first"
    );
    assert!(renewed.iter().all(|r| r.status == 200 && r.x_vault_request));
    assert_eq!(failures_total(&s, "prod"), 0.0);
    assert_eq!(s.renewals("prod", "failure"), 0.0);
    assert_eq!(
        lookups(&vault, &token).len(),
        1,
        "one lookup at start, then renewals only"
    );
}

#[test]
fn not_renewable_at_start_is_counted_once_warned_and_never_renewed() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(6).renewable(false));
    let dir = temp_dir("notrenewable");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("fixed", &vault.url(), &file, "")], &[]);

    let s = exporter.wait_for(secs(5.0), "state not_renewable", |s| {
        s.state("fixed").as_deref() == Some("not_renewable")
    });
    assert_eq!(s.renewals("fixed", "not_renewable"), 1.0);
    assert_eq!(
        s.renewals("fixed", "failure"),
        0.0,
        "not renewable is no failure"
    );
    assert_eq!(failures_total(&s, "fixed"), 0.0);
    assert_eq!(gauge(&s, "vault_token_renewable", "fixed"), Some(0.0));
    assert_eq!(gauge(&s, "vault_token_renewing", "fixed"), Some(0.0));
    assert!(gauge(&s, "vault_token_expiry_timestamp_seconds", "fixed").is_some());
    assert!(gauge(&s, "vault_token_next_renewal_timestamp_seconds", "fixed").is_none());
    let log = exporter.wait_for_log(secs(1.0), "not renewable");
    let warn = log
        .lines()
        .find(|l| l.contains("not renewable") && l.contains("vault=fixed"))
        .unwrap_or_else(|| panic!("no not-renewable line with vault=fixed in:\n{log}"));
    assert!(warn.contains("WARN"), "a WARN line: {warn}");
    assert!(warn.contains("rotate the token"), "says to rotate: {warn}");

    // At its expiry: expired, ttl 0, still counted once, never a renew-self.
    let s = exporter.wait_for(secs(8.0), "state expired", |s| {
        s.state("fixed").as_deref() == Some("expired")
    });
    assert_eq!(gauge(&s, "vault_token_ttl_seconds", "fixed"), Some(0.0));
    assert_eq!(s.renewals("fixed", "not_renewable"), 1.0);
    assert!(renews(&vault, &token).is_empty(), "no renew-self, ever");
    assert_eq!(
        exporter
            .log()
            .lines()
            .filter(|l| l.contains("not renewable") && l.contains("WARN"))
            .count(),
        1,
        "warned once"
    );
}

#[test]
fn a_reload_to_another_non_renewable_token_counts_again_and_a_renewable_one_resumes() {
    let vault = VaultDouble::start();
    let first = vault.add_token(TokenSpec::service(60).renewable(false));
    let second = vault.add_token(TokenSpec::service(60).renewable(false));
    let third = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("notrenewable-reload");
    let file = token_file(&dir, "token", &first);
    let exporter = start(dir, &[file_entry("app", &vault.url(), &file, "")], &[]);

    exporter.wait_for(secs(5.0), "the first not_renewable", |s| {
        s.renewals("app", "not_renewable") == 1.0
    });
    write_token(&file, &format!("{second}\n"));
    let s = exporter.wait_for(secs(5.0), "not_renewable counted for the new token", |s| {
        s.renewals("app", "not_renewable") == 2.0
    });
    assert_eq!(s.state("app").as_deref(), Some("not_renewable"));
    write_token_atomically(&file, &third);
    let s = exporter.wait_for(secs(5.0), "the renewable token renewing", |s| {
        s.state("app").as_deref() == Some("renewing")
    });
    assert_eq!(s.renewals("app", "not_renewable"), 2.0);
    assert_eq!(gauge(&s, "vault_token_renewable", "app"), Some(1.0));
    for token in [&first, &second] {
        assert!(
            renews(&vault, token).is_empty(),
            "no renew-self for a non-renewable token"
        );
    }
    assert_eq!(lookups(&vault, &third).len(), 1);
}

#[test]
fn root_tokens_never_expire_and_are_never_renewed() {
    let vault = VaultDouble::start();
    let init = vault.add_token(TokenSpec::root_init());
    let created = vault.add_token(TokenSpec::root_created());
    let dir = temp_dir("root");
    let init_file = token_file(&dir, "init", &init);
    let created_file = token_file(&dir, "created", &created);
    let exporter = start(
        dir,
        &[
            file_entry("init", &vault.url(), &init_file, ""),
            file_entry("created", &vault.url(), &created_file, ""),
        ],
        &[],
    );
    exporter.wait_for(secs(5.0), "both roots never_expires", |s| {
        s.state("init").as_deref() == Some("never_expires")
            && s.state("created").as_deref() == Some("never_expires")
    });
    // Give a wrong worker time to do something wrong.
    std::thread::sleep(secs(1.5));
    let s = exporter.scrape();
    for (name, token) in [("init", &init), ("created", &created)] {
        assert_eq!(s.state(name).as_deref(), Some("never_expires"), "{name}");
        assert_zero_initialised(&s, name);
        for absent in [
            "vault_token_expiry_timestamp_seconds",
            "vault_token_ttl_seconds",
            "vault_token_next_renewal_timestamp_seconds",
            "vault_token_last_renewal_timestamp_seconds",
        ] {
            assert!(
                gauge(&s, absent, name).is_none(),
                "{absent} present for {name}"
            );
        }
        for result in RESULTS {
            assert_eq!(s.renewals(name, result), 0.0, "{name} {result}");
        }
        assert_eq!(failures_total(&s, name), 0.0, "{name}: never a failure");
        assert_eq!(gauge(&s, "vault_token_renewing", name), Some(0.0));
        assert_eq!(
            s.value("vault_token_info", &[("vault", name), ("policies", "root")]),
            Some(1.0),
            "{name} info"
        );
        assert!(renews(&vault, token).is_empty(), "{name}: no renew-self");
        assert_eq!(lookups(&vault, token).len(), 1, "{name}: one lookup");
    }
    assert!(!exporter.log().contains("not renewable"));
}

#[test]
fn a_batch_token_is_not_renewable_and_expires() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::batch(6));
    let dir = temp_dir("batch");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("batch", &vault.url(), &file, "")], &[]);
    let s = exporter.wait_for(secs(5.0), "state not_renewable", |s| {
        s.state("batch").as_deref() == Some("not_renewable")
    });
    assert_eq!(s.renewals("batch", "not_renewable"), 1.0);
    assert_eq!(failures_total(&s, "batch"), 0.0);
    assert_eq!(gauge(&s, "vault_token_renewable", "batch"), Some(0.0));
    assert_eq!(
        s.value(
            "vault_token_info",
            &[("vault", "batch"), ("token_type", "batch")]
        ),
        Some(1.0)
    );
    let expire = unix(vault.token_expire_time(&token).unwrap());
    let expiry = gauge(&s, "vault_token_expiry_timestamp_seconds", "batch").unwrap();
    assert!(
        (expiry - expire).abs() <= 1.5,
        "expiry {expiry} vs {expire}"
    );
    let s = exporter.wait_for(secs(8.0), "state expired", |s| {
        s.state("batch").as_deref() == Some("expired")
    });
    assert_eq!(gauge(&s, "vault_token_ttl_seconds", "batch"), Some(0.0));
    assert!(
        renews(&vault, &token).is_empty(),
        "a batch token is never renewed"
    );
    assert_eq!(s.renewals("batch", "not_renewable"), 1.0);
}

#[test]
fn an_outage_across_the_renewal_point_is_survived() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(8));
    let dir = temp_dir("outage");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    let s = exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    let first_expiry = gauge(&s, "vault_token_expiry_timestamp_seconds", "prod").unwrap();
    let original_expire = vault.token_expire_time(&token).unwrap();

    // Vault goes away before the renewal point (40-50 % of 8 s) and comes back well
    // before the token would die.
    vault.stop_listening();
    let down = Instant::now();
    let s = exporter.wait_for(secs(6.0), "a network failure at the renewal point", |s| {
        s.failures("prod", "network") >= 1.0
    });
    assert_eq!(
        s.state("prod").as_deref(),
        Some("renewing"),
        "retrying is renewing"
    );
    assert!(
        gauge(&s, "vault_token_next_renewal_timestamp_seconds", "prod").is_some(),
        "a retry is scheduled"
    );
    let until = unix(original_expire) - 2.5;
    std::thread::sleep(secs((until - now()).max(0.0)));
    let outage = down.elapsed().as_secs_f64();
    vault.resume_listening();

    let s = exporter.wait_for(secs(3.0), "a successful renewal after the outage", |s| {
        s.renewals("prod", "success") >= 1.0
    });
    let network = s.failures("prod", "network");
    assert!(
        network >= 1.0 && network <= outage + 1.0,
        "{network} network failures in a {outage:.1}s outage: at most one attempt a second"
    );
    assert_eq!(s.renewals("prod", "failure"), failures_total(&s, "prod"));
    assert_eq!(s.state("prod").as_deref(), Some("renewing"));
    let expiry = gauge(&s, "vault_token_expiry_timestamp_seconds", "prod").unwrap();
    assert!(
        expiry > first_expiry + 1.0,
        "the renewal extended the token"
    );

    // Past the original expiry the token lives on.
    std::thread::sleep(secs((unix(original_expire) + 0.5 - now()).max(0.0)));
    assert!(
        vault.token_ttl(&token).is_some(),
        "the token is alive in Vault after its original expiry"
    );
    let s = exporter.scrape();
    assert_eq!(s.state("prod").as_deref(), Some("renewing"));
    assert!(gauge(&s, "vault_token_ttl_seconds", "prod").unwrap() > 0.0);
    let log = exporter.log();
    let line = log
        .lines()
        .find(|l| l.contains("vault token renewal failed") && l.contains("reason=network"))
        .expect("an ERROR line per failure");
    assert!(
        line.contains("ERROR") && line.contains("vault=prod"),
        "{line}"
    );
    let attempts = log_times(&log, "reason=network");
    assert_eq!(
        attempts.len() as f64,
        network,
        "one ERROR line per failed attempt"
    );
    for pair in attempts.windows(2) {
        // rem_euclid: the test may straddle midnight.
        let gap = (pair[1] - pair[0]).rem_euclid(86_400.0);
        assert!(gap >= 0.95, "two attempts {gap:.3}s apart");
    }
}

/// Seconds of the day of every log line containing `needle` (env_logger's
/// `[YYYY-MM-DDTHH:MM:SS.mmmZ LEVEL target]` prefix).
fn log_times(log: &str, needle: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(|l| {
            let clock = l
                .get(12..24)
                .unwrap_or_else(|| panic!("no timestamp in {l}"));
            let mut parts = clock.split(':');
            let mut next = || parts.next().unwrap().parse::<f64>().unwrap();
            next() * 3600.0 + next() * 60.0 + next()
        })
        .collect()
}

#[test]
fn a_sealed_vault_is_retried_at_most_once_a_second_then_renewal_resumes() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(12));
    let dir = temp_dir("sealed");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    vault.set_fault(Fault::Sealed);
    let s = exporter.wait_for(secs(10.0), "three sealed failures", |s| {
        s.failures("prod", "sealed") >= 3.0
    });
    assert_eq!(s.state("prod").as_deref(), Some("renewing"));
    vault.clear_fault();
    let s = exporter.wait_for(secs(4.0), "a renewal after the seal", |s| {
        s.renewals("prod", "success") >= 1.0
    });
    let attempts = renews(&vault, &token);
    let failed: Vec<&RequestRecord> = attempts.iter().filter(|r| r.status == 503).collect();
    assert!(failed.len() >= 3);
    for pair in attempts.windows(2) {
        let gap = unix(pair[1].at) - unix(pair[0].at);
        assert!(gap >= 0.95, "two attempts {gap:.3}s apart");
    }
    assert_eq!(
        s.failures("prod", "sealed"),
        failed.len() as f64,
        "one reason per failed attempt"
    );
    assert_eq!(s.renewals("prod", "failure"), failed.len() as f64);
    assert_eq!(failures_total(&s, "prod"), failed.len() as f64);
    assert!(
        s.of("vault_token_renewal_duration_seconds_count", "prod", &[])
            .unwrap()
            >= attempts.len() as f64,
        "every renew-self that got an answer is observed"
    );
}

#[test]
fn each_failure_is_counted_under_its_reason() {
    // Faults from the start: the start-up lookup is the attempt that fails.
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(3600));
    let dir = temp_dir("reasons");
    let file = token_file(&dir, "token", &token);
    vault.set_fault(Fault::error(500, "internal error"));
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    let cases: Vec<(Option<Fault>, &str)> = vec![
        (None, "server_error"),
        (
            Some(Fault::error(412, "required index state not present")),
            "server_error",
        ),
        (
            Some(Fault::error(429, "rate limit quota exceeded")),
            "rate_limited",
        ),
        (Some(Fault::error(404, "unsupported path")), "bad_request"),
        (
            Some(Fault::Body {
                status: 200,
                content_type: "text/html".into(),
                body: b"<html>proxy error</html>".to_vec(),
            }),
            "bad_response",
        ),
        (Some(Fault::Hang), "timeout"),
    ];
    let mut before = exporter.scrape();
    for (fault, reason) in cases {
        if let Some(fault) = fault {
            vault.set_fault(fault);
        }
        let base = before.failures("prod", reason);
        let s = exporter.wait_for(secs(5.0), reason, |s| s.failures("prod", reason) > base);
        assert_eq!(
            s.state("prod").as_deref(),
            Some("unknown"),
            "not looked up yet"
        );
        assert_eq!(s.renewals("prod", "failure"), failures_total(&s, "prod"));
        before = s;
    }
    vault.clear_fault();
    let s = exporter.wait_for(secs(5.0), "renewing once Vault answers", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert_eq!(s.failures("prod", "permission_denied"), 0.0);
    assert_eq!(s.failures("prod", "token_source"), 0.0);
    let log = exporter.log();
    for reason in [
        "server_error",
        "rate_limited",
        "bad_request",
        "bad_response",
        "timeout",
    ] {
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("vault token renewal failed")
                && l.contains("vault=prod")
                && l.contains(&format!("reason={reason}"))),
            "no ERROR line for reason={reason}"
        );
    }
}

#[test]
fn capped_then_quiet_until_expiry() {
    let vault = VaultDouble::start();
    // The first renewal (at 2.4-3 s) is granted only what is left of the 7 s max.
    let token = vault.add_token(TokenSpec::service(6).explicit_max_ttl(7));
    let dir = temp_dir("capped");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    let s = exporter.wait_for(secs(6.0), "state capped", |s| {
        s.state("prod").as_deref() == Some("capped")
    });
    assert_eq!(gauge(&s, "vault_token_capped", "prod"), Some(1.0));
    assert_eq!(gauge(&s, "vault_token_renewing", "prod"), Some(0.0));
    assert_eq!(
        s.renewals("prod", "success"),
        1.0,
        "the capped renewal succeeded"
    );
    assert_eq!(failures_total(&s, "prod"), 0.0, "capping is no failure");
    assert!(gauge(&s, "vault_token_next_renewal_timestamp_seconds", "prod").is_none());
    let expire = unix(vault.token_expire_time(&token).unwrap());
    let expiry = gauge(&s, "vault_token_expiry_timestamp_seconds", "prod").unwrap();
    assert!(
        (expiry - expire).abs() <= 1.5,
        "expiry {expiry} vs {expire}"
    );
    let capped = renews(&vault, &token);
    assert_eq!(capped.len(), 1);
    assert!(capped[0].status == 200);
    let log = exporter.log();
    assert!(
        log.lines().any(|l| l.contains("vault=prod")
            && l.contains("max TTL")
            && l.contains("rotate the token")),
        "the capped line says to rotate the token:\n{log}"
    );

    let s = exporter.wait_for(secs(8.0), "state expired", |s| {
        s.state("prod").as_deref() == Some("expired")
    });
    assert_eq!(gauge(&s, "vault_token_ttl_seconds", "prod"), Some(0.0));
    assert_eq!(gauge(&s, "vault_token_capped", "prod"), Some(1.0));
    // A moment past the expiry, still quiet: no renewal, no 403 flood.
    std::thread::sleep(secs(1.0));
    assert_eq!(
        renews(&vault, &token).len(),
        1,
        "no renew-self after the capped one"
    );
    assert_eq!(lookups(&vault, &token).len(), 1);
    let s = exporter.scrape();
    assert_eq!(failures_total(&s, "prod"), 0.0);
    let log = exporter.log();
    assert!(
        log.lines().any(|l| l.contains("expired")
            && l.contains("vault=prod")
            && l.contains("rotate the token")),
        "the expiry line says to rotate the token:\n{log}"
    );
}

type Writer = fn(&Path, &str);

fn in_place_with_newline(path: &Path, token: &str) {
    write_token(path, &format!("{token}\n"))
}

fn in_place_without_newline(path: &Path, token: &str) {
    write_token(path, token)
}

fn renamed_with_newline(path: &Path, token: &str) {
    write_token_atomically(path, &format!("{token}\n"))
}

fn renamed_without_newline(path: &Path, token: &str) {
    write_token_atomically(path, token)
}

/// Revokes the token in use, waits for `invalid` and a 403 logged once, and checks that
/// nothing more reaches Vault for `quiet`.
fn revoke_and_expect_quiet(exporter: &Exporter, vault: &VaultDouble, token: &str, quiet: Duration) {
    let before = exporter.scrape().failures("prod", "permission_denied");
    vault.revoke(token);
    let s = exporter.wait_for(secs(6.0), "state invalid", |s| {
        s.state("prod").as_deref() == Some("invalid")
    });
    assert_eq!(s.failures("prod", "permission_denied"), before + 1.0);
    assert_eq!(gauge(&s, "vault_token_renewing", "prod"), Some(0.0));
    assert!(gauge(&s, "vault_token_next_renewal_timestamp_seconds", "prod").is_none());
    let requests = vault.requests_for(token);
    assert_eq!(
        requests.iter().filter(|r| r.status == 403).count(),
        1,
        "one 403, then nothing"
    );
    std::thread::sleep(quiet);
    assert_eq!(
        vault.requests_for(token).len(),
        requests.len(),
        "no request after the 403"
    );
}

/// Writes a new token with `write` and expects it renewing within 5 s, without a restart
/// (and, with `renew`, its first renewal).
fn reload_and_expect_renewing(
    exporter: &Exporter,
    vault: &VaultDouble,
    file: &Path,
    write: Writer,
    renew: bool,
) -> String {
    let token = vault.add_token(TokenSpec::service(6));
    let successes = exporter.scrape().renewals("prod", "success");
    let written = Instant::now();
    write(file, &token);
    let s = exporter.wait_for(secs(5.0), "renewing with the new token", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert!(written.elapsed() < secs(5.0));
    assert_eq!(
        lookups(vault, &token).len(),
        1,
        "the new token is looked up"
    );
    assert_eq!(gauge(&s, "vault_token_renewing", "prod"), Some(1.0));
    if renew {
        exporter.wait_for(secs(6.0), "a renewal of the new token", |s| {
            s.renewals("prod", "success") > successes
        });
        assert_eq!(renews(vault, &token).len(), 1);
    }
    token
}

/// Revoked at renewal -> invalid and quiet -> reload with `first` -> renewing -> a revoked
/// token written -> invalid at lookup -> reload with `second` -> renewing and renewed;
/// the revoked tokens are never used again.
fn revoke_then_reload(name: &str, first: Writer, second: Writer) {
    let vault = VaultDouble::start();
    let original = vault.add_token(TokenSpec::service(6));
    let dir = temp_dir(name);
    let file = token_file(&dir, "token", &original);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    // No hammering: the default re-check of an invalid token is 5 minutes away.
    revoke_and_expect_quiet(&exporter, &vault, &original, secs(2.5));
    let log = exporter.log();
    let line = log
        .lines()
        .find(|l| l.contains("reason=permission_denied"))
        .expect("an ERROR line for the 403");
    assert!(
        line.contains("ERROR")
            && line.contains("vault token renewal failed")
            && line.contains("vault=prod")
            && line.contains("rotate the token"),
        "{line}"
    );
    let used = vault.requests_for(&original).len();

    reload_and_expect_renewing(&exporter, &vault, &file, first, false);
    let revoked = vault.add_token(TokenSpec::service(6));
    vault.revoke(&revoked);
    write_token(&file, &revoked);
    exporter.wait_for(secs(5.0), "invalid at the lookup of a revoked token", |s| {
        s.state("prod").as_deref() == Some("invalid")
    });
    assert_eq!(vault.requests_for(&revoked).len(), 1, "one lookup, one 403");
    reload_and_expect_renewing(&exporter, &vault, &file, second, true);

    let s = exporter.scrape();
    assert_eq!(s.failures("prod", "permission_denied"), 2.0);
    assert_eq!(s.renewals("prod", "failure"), 2.0);
    assert_eq!(
        vault.requests_for(&original).len(),
        used,
        "the revoked token is left alone"
    );
    assert_eq!(vault.requests_for(&revoked).len(), 1);
}

#[test]
fn revoked_then_quiet_then_reloaded_in_place_then_by_rename() {
    revoke_then_reload("revoked-a", in_place_with_newline, renamed_without_newline);
}

#[test]
fn revoked_then_quiet_then_reloaded_by_rename_then_in_place() {
    revoke_then_reload("revoked-b", renamed_with_newline, in_place_without_newline);
}

#[test]
fn an_invalid_token_is_rechecked_at_most_once_per_interval() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    vault.revoke(&token);
    let dir = temp_dir("recheck");
    let file = token_file(&dir, "token", &token);
    let exporter = start(
        dir,
        &[file_entry(
            "prod",
            &vault.url(),
            &file,
            "    invalid_recheck_interval: 2s\n",
        )],
        &[],
    );
    exporter.wait_for(secs(5.0), "state invalid", |s| {
        s.state("prod").as_deref() == Some("invalid")
    });
    std::thread::sleep(secs(5.0));
    let seen = vault.requests_for(&token);
    assert!(
        seen.iter()
            .all(|r| r.method == "GET" && r.path == LOOKUP && r.status == 403),
        "only lookups of the invalid token"
    );
    assert!(
        (2..=4).contains(&seen.len()),
        "{} lookups in about 5 s with a 2 s re-check",
        seen.len()
    );
    for pair in seen.windows(2) {
        let gap = unix(pair[1].at) - unix(pair[0].at);
        assert!(gap >= 1.9, "re-checks {gap:.2}s apart");
    }
    let s = exporter.scrape();
    assert_eq!(s.state("prod").as_deref(), Some("invalid"));
    assert_eq!(s.failures("prod", "permission_denied"), seen.len() as f64);
}

#[test]
fn start_with_vault_down_serves_at_once_then_follows_vault() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    vault.stop_listening();
    let dir = temp_dir("down");
    let file = token_file(&dir, "token", &token);
    let started = Instant::now();
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    let s = exporter.scrape();
    assert!(
        started.elapsed() < secs(3.0),
        "/metrics answered {:?} after the start",
        started.elapsed()
    );
    assert_zero_initialised(&s, "prod");
    assert_eq!(s.state("prod").as_deref(), Some("unknown"));
    for name in [
        "vault_token_renewable",
        "vault_token_capped",
        "vault_token_renewing",
    ] {
        assert_eq!(gauge(&s, name, "prod"), Some(0.0), "{name}");
    }
    for absent in [
        "vault_token_expiry_timestamp_seconds",
        "vault_token_ttl_seconds",
        "vault_token_last_renewal_timestamp_seconds",
    ] {
        assert!(
            gauge(&s, absent, "prod").is_none(),
            "{absent} before any lookup"
        );
    }
    assert!(s.value("vault_token_info", &[("vault", "prod")]).is_none());
    let (status, _) = exporter.get("/-/ready");
    assert_eq!(status, 200, "ready without Vault");

    let s = exporter.wait_for(secs(5.0), "the failed start-up lookup", |s| {
        s.failures("prod", "network") >= 1.0
    });
    assert_eq!(s.state("prod").as_deref(), Some("unknown"));
    assert_eq!(s.renewals("prod", "failure"), s.failures("prod", "network"));
    vault.resume_listening();
    let s = exporter.wait_for(secs(5.0), "renewing once Vault is up", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert!(gauge(&s, "vault_token_expiry_timestamp_seconds", "prod").is_some());
    assert_eq!(gauge(&s, "vault_token_renewing", "prod"), Some(1.0));
    assert_eq!(lookups(&vault, &token).len(), 1);
}

#[test]
fn one_vault_down_leaves_the_other_untouched() {
    let up = VaultDouble::start();
    let down = VaultDouble::start();
    let up_token = up.add_token(TokenSpec::service(6));
    let down_token = down.add_token(TokenSpec::service(6));
    let dir = temp_dir("isolation");
    let up_file = token_file(&dir, "up", &up_token);
    let down_file = token_file(&dir, "down", &down_token);
    let exporter = start(
        dir,
        &[
            file_entry("up", &up.url(), &up_file, ""),
            file_entry("down", &down.url(), &down_file, ""),
        ],
        &[],
    );
    exporter.wait_for(secs(5.0), "both renewing", |s| {
        s.state("up").as_deref() == Some("renewing")
            && s.state("down").as_deref() == Some("renewing")
    });
    down.stop_listening();
    let s = exporter.wait_for(
        secs(12.0),
        "two renewals of one, failures of the other",
        |s| s.renewals("up", "success") >= 2.0 && s.failures("down", "network") >= 2.0,
    );
    assert_eq!(failures_total(&s, "up"), 0.0);
    assert_eq!(s.renewals("up", "failure"), 0.0);
    assert_eq!(s.state("up").as_deref(), Some("renewing"));
    assert_eq!(s.renewals("down", "success"), 0.0);
    let renewed = renews(&up, &up_token);
    assert!(renewed.iter().all(|r| r.status == 200));
    for pair in renewed.windows(2) {
        let gap = unix(pair[1].at) - unix(pair[0].at);
        assert!(
            gap >= 0.4 * 6.0 - 0.1,
            "the healthy token kept its cadence: {gap:.2}s"
        );
    }
    assert!(token_requests(&up)
        .iter()
        .all(|r| r.token.as_deref() == Some(up_token.as_str())));
}

#[test]
fn the_namespace_is_sent_as_x_vault_namespace() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(6).namespace("team-a"));
    let dir = temp_dir("namespace");
    let file = token_file(&dir, "token", &token);
    let exporter = start(
        dir,
        &[file_entry(
            "ns",
            &vault.url(),
            &file,
            "    namespace: team-a\n",
        )],
        &[],
    );
    let s = exporter.wait_for(secs(8.0), "a renewal in the namespace", |s| {
        s.renewals("ns", "success") >= 1.0
    });
    assert_eq!(failures_total(&s, "ns"), 0.0);
    let seen = vault.requests_for(&token);
    assert!(seen.len() >= 2);
    for r in &seen {
        assert_eq!(
            r.namespace.as_deref(),
            Some("team-a"),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn no_namespace_header_without_a_namespace() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("no-namespace");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("root-ns", &vault.url(), &file, "")], &[]);
    exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("root-ns").as_deref() == Some("renewing")
    });
    let seen = vault.requests_for(&token);
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|r| r.header("X-Vault-Namespace").is_none()));
}

#[test]
fn a_missing_or_empty_token_file_is_a_token_source_failure_until_a_token_appears() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("missing-file");
    let file = dir.join("agent-sink");
    let exporter = start(dir, &[file_entry("agent", &vault.url(), &file, "")], &[]);
    let s = exporter.wait_for(secs(5.0), "a token_source failure", |s| {
        s.failures("agent", "token_source") >= 1.0
    });
    assert_eq!(s.state("agent").as_deref(), Some("unknown"));
    assert_zero_initialised(&s, "agent");
    write_token(&file, "");
    let base = s.failures("agent", "token_source");
    exporter.wait_for(
        secs(5.0),
        "another token_source failure for the empty file",
        |s| s.failures("agent", "token_source") > base,
    );
    assert!(
        token_requests(&vault).is_empty(),
        "nothing sent to Vault without a token"
    );
    let written = Instant::now();
    write_token(&file, &format!("{token}\n"));
    let s = exporter.wait_for(secs(5.0), "renewing once the token is written", |s| {
        s.state("agent").as_deref() == Some("renewing")
    });
    assert!(written.elapsed() < secs(5.0));
    assert_eq!(
        s.renewals("agent", "failure"),
        s.failures("agent", "token_source")
    );
    let log = exporter.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("vault=agent")
            && l.contains("reason=token_source")),
        "{log}"
    );
}

#[test]
fn a_periodic_token_capped_by_the_mount_max_renews_forever() {
    let vault = VaultDouble::start();
    // The period (8 s) exceeds the mount's max TTL (4 s): every renewal carries Vault's
    // `period of "8s" exceeded the effective max_ttl of "4s"` warning and grants 4 s.
    vault.set_mount_max_ttl(4);
    let token = vault.add_token(TokenSpec::periodic(8));
    let dir = temp_dir("periodic");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("periodic", &vault.url(), &file, "")], &[]);
    let s = exporter.wait_for(secs(10.0), "three renewals", |s| {
        s.renewals("periodic", "success") >= 3.0
    });
    assert_eq!(s.state("periodic").as_deref(), Some("renewing"));
    assert_eq!(gauge(&s, "vault_token_capped", "periodic"), Some(0.0));
    assert_eq!(gauge(&s, "vault_token_renewing", "periodic"), Some(1.0));
    assert_eq!(failures_total(&s, "periodic"), 0.0);
    assert!(renews(&vault, &token).iter().all(|r| r.status == 200));
}

#[test]
fn an_increment_is_sent_when_configured_and_never_below_the_last_lease() {
    let vault = VaultDouble::start();
    let longer = vault.add_token(TokenSpec::service(4));
    let shorter = vault.add_token(TokenSpec::service(4));
    let dir = temp_dir("increment");
    let longer_file = token_file(&dir, "longer", &longer);
    let shorter_file = token_file(&dir, "shorter", &shorter);
    let exporter = start(
        dir,
        &[
            file_entry("longer", &vault.url(), &longer_file, "    increment: 20s\n"),
            file_entry(
                "shorter",
                &vault.url(),
                &shorter_file,
                "    increment: 1s\n",
            ),
        ],
        &[],
    );
    let s = exporter.wait_for(secs(6.0), "a renewal of both", |s| {
        s.renewals("longer", "success") >= 1.0 && s.renewals("shorter", "success") >= 1.0
    });
    let increment = |token: &str| -> i64 {
        let body = &renews(&vault, token)[0].body;
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        json["increment"].as_i64().expect("a numeric increment")
    };
    assert_eq!(increment(&longer), 20);
    let sent = increment(&shorter);
    assert!(
        (3..=4).contains(&sent),
        "a 1 s increment would shorten the 4 s lease; sent {sent}"
    );
    // The 20 s grant is what the exporter now schedules from.
    let ttl = gauge(&s, "vault_token_ttl_seconds", "longer").unwrap();
    assert!(ttl > 15.0, "ttl {ttl} after a 20 s renewal");
    let next = gauge(&s, "vault_token_next_renewal_timestamp_seconds", "longer").unwrap();
    assert!(
        next - now() > 0.4 * 20.0 - 2.0,
        "next renewal in {:.1}s",
        next - now()
    );
}

#[test]
fn a_standby_redirect_is_followed_once() {
    let active = VaultDouble::start();
    let standby = VaultDouble::start();
    let token = active.add_token(TokenSpec::service(4));
    standby.set_fault(Fault::Redirect {
        location: active.url(),
    });
    let dir = temp_dir("standby");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("ha", &standby.url(), &file, "")], &[]);
    let s = exporter.wait_for(secs(6.0), "a renewal through the standby", |s| {
        s.renewals("ha", "success") >= 1.0
    });
    assert_eq!(failures_total(&s, "ha"), 0.0);
    let at_standby = standby.requests_for(&token);
    let at_active = active.requests_for(&token);
    assert!(at_standby.iter().all(|r| r.status == 307));
    assert!(at_standby
        .iter()
        .any(|r| r.path == RENEW && r.method == "POST"));
    let renewed = renews(&active, &token);
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].method, "POST", "the POST stays a POST");
    assert!(renewed[0].x_vault_request);
    assert_eq!(at_active.len(), at_standby.len(), "one hop per request");
}

#[test]
fn a_deleted_token_file_keeps_the_token_in_memory_and_is_picked_up_when_back() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(6));
    let dir = temp_dir("deleted");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    std::fs::remove_file(&file).unwrap();
    let s = exporter.wait_for(secs(8.0), "two renewals without the file", |s| {
        s.renewals("prod", "success") >= 2.0
    });
    assert_eq!(s.state("prod").as_deref(), Some("renewing"));
    assert_eq!(
        failures_total(&s, "prod"),
        0.0,
        "no failure while the token is in memory"
    );
    let log = exporter.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("vault=prod") && l.contains("in memory"))
        .collect();
    assert_eq!(warnings.len(), 1, "warned once:\n{log}");
    // The file returns with a new token: it is adopted.
    let next = vault.add_token(TokenSpec::service(6));
    write_token(&file, &next);
    exporter.wait_for(secs(5.0), "renewing with the returned file", |s| {
        s.state("prod").as_deref() == Some("renewing") && !lookups(&vault, &next).is_empty()
    });
    assert_eq!(lookups(&vault, &next).len(), 1);
}

#[test]
fn an_outage_longer_than_the_token_expires_it_then_a_new_token_resumes() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(4));
    let dir = temp_dir("expired-outage");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    vault.stop_listening();
    let s = exporter.wait_for(secs(8.0), "state expired", |s| {
        s.state("prod").as_deref() == Some("expired")
    });
    assert_eq!(gauge(&s, "vault_token_ttl_seconds", "prod"), Some(0.0));
    assert_eq!(gauge(&s, "vault_token_renewing", "prod"), Some(0.0));
    assert!(s.failures("prod", "network") >= 1.0);
    let log = exporter.wait_for_log(secs(2.0), "rotate the token");
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("vault=prod")
            && l.contains("expired")
            && l.contains("rotate the token")),
        "{log}"
    );
    // Back up: an expired token is not retried; a new one is adopted.
    vault.resume_listening();
    let seen = vault.requests_for(&token).len();
    let failures = exporter.scrape().renewals("prod", "failure");
    std::thread::sleep(secs(1.5));
    let s = exporter.scrape();
    assert_eq!(
        s.renewals("prod", "failure"),
        failures,
        "no attempts on an expired token"
    );
    assert_eq!(s.state("prod").as_deref(), Some("expired"));
    let next = vault.add_token(TokenSpec::service(6));
    write_token_atomically(&file, &next);
    exporter.wait_for(secs(5.0), "renewing with the new token", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert_eq!(
        vault.requests_for(&token).len(),
        seen,
        "the expired token is left alone"
    );
}

#[test]
fn renewals_refused_with_400_stop_as_not_renewable_or_invalid() {
    let vault = VaultDouble::start();
    let refused = vault.add_token(TokenSpec::service(6));
    let spent = vault.add_token(TokenSpec::service(6));
    let dir = temp_dir("refused");
    let refused_file = token_file(&dir, "refused", &refused);
    let spent_file = token_file(&dir, "spent", &spent);
    let exporter = start(
        dir,
        &[
            file_entry("refused", &vault.url(), &refused_file, ""),
            file_entry("spent", &vault.url(), &spent_file, ""),
        ],
        &[],
    );
    exporter.wait_for(secs(5.0), "both renewing", |s| {
        s.state("refused").as_deref() == Some("renewing")
            && s.state("spent").as_deref() == Some("renewing")
    });
    // Renewals now answer as Vault does for a lease made non-renewable and for a token
    // whose uses ran out.
    vault.set_token_fault(&refused, Fault::error(400, "lease is not renewable"));
    vault.set_token_fault(&spent, Fault::error(400, "token not found"));
    let s = exporter.wait_for(secs(6.0), "not_renewable and invalid", |s| {
        s.state("refused").as_deref() == Some("not_renewable")
            && s.state("spent").as_deref() == Some("invalid")
    });
    assert_eq!(s.renewals("refused", "not_renewable"), 1.0);
    assert_eq!(
        s.renewals("refused", "failure"),
        0.0,
        "not renewable is no failure"
    );
    assert_eq!(gauge(&s, "vault_token_renewable", "refused"), Some(0.0));
    assert_eq!(s.renewals("spent", "failure"), 1.0);
    assert_eq!(s.renewals("spent", "not_renewable"), 0.0);
    std::thread::sleep(secs(1.5));
    assert_eq!(
        renews(&vault, &refused).len(),
        1,
        "no retry of a refused renewal"
    );
    assert_eq!(renews(&vault, &spent).len(), 1, "no retry of a spent token");
    let log = exporter.log();
    assert!(log.lines().any(|l| l.contains("WARN")
        && l.contains("vault=refused")
        && l.contains("rotate the token")));
    assert!(log.lines().any(|l| l.contains("ERROR")
        && l.contains("vault=spent")
        && l.contains("vault token renewal failed")
        && l.contains("rotate the token")));
}

#[test]
fn bad_answers_never_lose_the_token() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(3600));
    let dir = temp_dir("bad-answers");
    let file = token_file(&dir, "token", &token);
    let body = |status: u16, content_type: &str, body: Vec<u8>| Fault::Body {
        status,
        content_type: content_type.into(),
        body,
    };
    let cases: Vec<(Fault, &str)> = vec![
        (
            body(200, "application/json", b"{\"data\":{\"ttl\":".to_vec()),
            "bad_response",
        ),
        (
            body(200, "application/json", vec![0xff, 0xfe, 0x00, 0x7b]),
            "bad_response",
        ),
        (
            body(
                200,
                "application/json",
                b"{\"data\":{\"ttl\":\"an hour\",\"policies\":7}}".to_vec(),
            ),
            "bad_response",
        ),
        (
            body(200, "application/json", vec![b' '; 2 * 1024 * 1024]),
            "bad_response",
        ),
        (
            Fault::SlowBody {
                status: 200,
                body: vec![b' '; 4096],
                bytes_per_sec: 100,
            },
            "timeout",
        ),
    ];
    vault.set_fault(cases[0].0.clone());
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    for (fault, reason) in cases {
        let base = exporter.scrape().failures("prod", reason);
        vault.set_fault(fault);
        exporter.wait_for(secs(6.0), reason, |s| s.failures("prod", reason) > base);
    }
    vault.clear_fault();
    let s = exporter.wait_for(secs(5.0), "renewing once Vault answers well", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert_eq!(s.renewals("prod", "failure"), failures_total(&s, "prod"));
    assert!(s.failures("prod", "bad_response") >= 4.0);
    let (status, _) = exporter.get("/-/healthy");
    assert_eq!(status, 200, "still serving");
}

#[test]
fn rate_limited_lookups_honour_retry_after() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(3600));
    vault.set_fault(Fault::Status {
        status: 429,
        body:
            r#"{"errors":["request path \"auth/token/lookup-self\": rate limit quota exceeded"]}"#
                .into(),
        headers: vec![("Retry-After".into(), "3".into())],
    });
    let dir = temp_dir("retry-after");
    let file = token_file(&dir, "token", &token);
    let exporter = start(dir, &[file_entry("prod", &vault.url(), &file, "")], &[]);
    exporter.wait_for(secs(8.0), "two rate-limited lookups", |s| {
        s.failures("prod", "rate_limited") >= 2.0
    });
    let seen = lookups(&vault, &token);
    let gap = unix(seen[1].at) - unix(seen[0].at);
    assert!(
        gap >= 2.9,
        "Retry-After: 3 honoured, retried after {gap:.2}s"
    );
    vault.clear_fault();
    exporter.wait_for(secs(6.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
}
