//! Black-box tests of the two gauges the alert rules key on, the real binary against the
//! Vault double: `vault_token_max_expiry_timestamp_seconds` (when a token dies whatever
//! renewals do) and `vault_token_consecutive_failures` (the failure streak, which must end
//! as soon as the cause is fixed so that alerts clear), and of use-limited tokens, which
//! are never renewed.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use vault_double::{TokenSpec, VaultDouble};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn start(dir: PathBuf, entries: &[String]) -> Exporter {
    let config = dir.join("config.yml");
    std::fs::write(&config, format!("vaults:\n{}", entries.concat())).unwrap();
    Exporter::start_in(dir, &[format!("--config.file={}", config.display())], &[])
}

const MAX_EXPIRY: &str = "vault_token_max_expiry_timestamp_seconds";
const STREAK: &str = "vault_token_consecutive_failures";

#[test]
fn max_expiry_comes_from_the_explicit_max_ttl_or_the_configured_max_ttl() {
    let vault = VaultDouble::start();
    // Issued now (the double stamps issue_time when it mints the token).
    let issued = now();
    let explicit = vault.add_token(TokenSpec::service(600).explicit_max_ttl(3600));
    let both = vault.add_token(TokenSpec::service(600).explicit_max_ttl(3600));
    let configured = vault.add_token(TokenSpec::service(600));
    let periodic = vault.add_token(TokenSpec::periodic(600));
    let unknown = vault.add_token(TokenSpec::service(600));
    let dir = temp_dir("max-expiry");
    let entry = |name: &str, token: &str, extra: &str| {
        let file = dir.join(name);
        write_token(&file, token);
        file_entry(name, &vault.url(), &file, extra)
    };
    let entries = [
        entry("explicit", &explicit, ""),
        // The sooner of the two wins: the explicit max, 1 h, before the mount's 2 h.
        entry("both", &both, "    max_ttl: 2h\n"),
        entry("configured", &configured, "    max_ttl: 2h\n"),
        // A periodic token escapes the mount's max TTL: nothing known.
        entry("periodic", &periodic, "    max_ttl: 2h\n"),
        entry("unknown", &unknown, ""),
    ];
    let exporter = start(dir.clone(), &entries);
    let s = exporter.wait_for(secs(5.0), "every token looked up", |s| {
        ["explicit", "both", "configured", "periodic", "unknown"]
            .iter()
            .all(|v| s.state(v).as_deref() == Some("renewing"))
    });
    let near = |vault: &str, expected: f64| {
        let got = s
            .of(MAX_EXPIRY, vault, &[])
            .unwrap_or_else(|| panic!("{MAX_EXPIRY} missing for {vault}"));
        assert!(
            (got - expected).abs() < 2.0,
            "{vault}: {got} vs {expected} expected"
        );
    };
    near("explicit", issued + 3600.0);
    near("both", issued + 3600.0);
    near("configured", issued + 7200.0);
    assert_eq!(s.of(MAX_EXPIRY, "periodic", &[]), None);
    assert_eq!(s.of(MAX_EXPIRY, "unknown", &[]), None);
}

#[test]
fn a_token_capped_by_the_mount_max_dies_at_its_expiry_and_that_is_its_max_expiry() {
    let vault = VaultDouble::start();
    // The mount caps every token at 5 s from issue: the renewal at 1.6-2 s grants 3 s
    // instead of 4, so the token is capped.
    vault.set_mount_max_ttl(5);
    let token = vault.add_token(TokenSpec::service(4));
    let dir = temp_dir("max-expiry-capped");
    let file = dir.join("token");
    write_token(&file, &token);
    let exporter = start(dir, &[file_entry("capped", &vault.url(), &file, "")]);
    let s = exporter.wait_for(secs(2.0), "renewing", |s| {
        s.state("capped").as_deref() == Some("renewing")
    });
    assert_eq!(
        s.of(MAX_EXPIRY, "capped", &[]),
        None,
        "unknown until capped"
    );
    let s = exporter.wait_for(secs(5.0), "capped", |s| {
        s.state("capped").as_deref() == Some("capped")
    });
    let expiry = s
        .of("vault_token_expiry_timestamp_seconds", "capped", &[])
        .unwrap();
    assert_eq!(s.of(MAX_EXPIRY, "capped", &[]), Some(expiry));
}

#[test]
fn the_failure_streak_of_a_late_token_file_ends_at_the_lookup_of_its_token() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(600));
    let dir = temp_dir("streak-late");
    let file = dir.join("agent-sink");
    let exporter = start(dir, &[file_entry("late", &vault.url(), &file, "")]);
    let s = exporter.wait_for(secs(6.0), "three token_source failures", |s| {
        s.failures("late", "token_source") >= 3.0
    });
    let streak = s.of(STREAK, "late", &[]).unwrap();
    let failures = s.failures("late", "token_source");
    // Scraped between attempts: the streak is every failed attempt so far.
    assert!(
        (streak - failures).abs() <= 1.0 && streak >= 2.0,
        "streak {streak}, failures {failures}"
    );
    write_token(&file, &format!("{token}\n"));
    let s = exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("late").as_deref() == Some("renewing")
    });
    assert_eq!(s.of(STREAK, "late", &[]), Some(0.0), "reset by the lookup");
    assert_eq!(s.renewals("late", "success"), 0.0, "before any renewal");
    assert!(
        s.failures("late", "token_source") >= failures,
        "counters stay"
    );
}

#[test]
fn the_failure_streak_of_an_invalid_token_grows_at_each_recheck_and_ends_with_a_new_token() {
    let vault = VaultDouble::start();
    let revoked = vault.add_token(TokenSpec::service(600));
    vault.revoke(&revoked);
    let dir = temp_dir("streak-rotated");
    let file = dir.join("token");
    write_token(&file, &revoked);
    let exporter = start(
        dir,
        &[file_entry(
            "rotated",
            &vault.url(),
            &file,
            "    invalid_recheck_interval: 1s\n",
        )],
    );
    let s = exporter.wait_for(secs(5.0), "three failed lookups", |s| {
        s.of(STREAK, "rotated", &[]).is_some_and(|v| v >= 3.0)
    });
    assert_eq!(s.state("rotated").as_deref(), Some("invalid"));
    let fresh = vault.add_token(TokenSpec::service(600));
    write_token(&file, &fresh);
    let s = exporter.wait_for(secs(5.0), "renewing the new token", |s| {
        s.state("rotated").as_deref() == Some("renewing")
    });
    assert_eq!(s.of(STREAK, "rotated", &[]), Some(0.0));
    assert_eq!(
        s.renewals("rotated", "success"),
        0.0,
        "looked up, not renewed"
    );
    assert!(s.failures("rotated", "permission_denied") >= 3.0);
}

#[test]
fn a_use_limited_token_is_never_renewed_and_says_so() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(4).num_uses(5));
    let dir = temp_dir("use-limited");
    let file = dir.join("token");
    write_token(&file, &token);
    let exporter = start(dir, &[file_entry("limited", &vault.url(), &file, "")]);
    let s = exporter.wait_for(secs(5.0), "not renewable", |s| {
        s.state("limited").as_deref() == Some("not_renewable")
    });
    assert_eq!(s.renewals("limited", "not_renewable"), 1.0);
    assert_eq!(s.renewals("limited", "failure"), 0.0);
    let log = exporter.wait_for_log(secs(1.0), "use-limited");
    let warn = log
        .lines()
        .find(|l| l.contains("use-limited") && l.contains("vault=limited"))
        .unwrap();
    assert!(
        warn.contains("WARN") && warn.contains("rotate the token"),
        "{warn}"
    );
    // Past the time it would have been renewed (at 1.6-2 s) and past its expiry.
    exporter.wait_for(secs(6.0), "expired", |s| {
        s.state("limited").as_deref() == Some("expired")
    });
    let paths: Vec<String> = vault
        .requests_for(&token)
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        ["/v1/auth/token/lookup-self"],
        "one use spent, by the start-up lookup"
    );
}
