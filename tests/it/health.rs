//! The `vault` collector, black box: the binary against the Vault double, which can be
//! sealed, a standby, down or on a skewed clock. One background poller per Vault,
//! at its `health_interval`, never at scrape time; `--no-collector.vault` polls nothing;
//! a reload starts and stops pollers with the Vaults it adds and removes.

use crate::common;

use std::time::{Duration, Instant};

use common::{file_entry, http_request, write_token, Exporter, Scrape};
use vault_double::{Fault, TokenSpec, VaultDouble};

const HEALTH: &str = "/v1/sys/health";

/// The `sys/health` requests the double received.
fn health_polls(vault: &VaultDouble) -> usize {
    vault.requests().iter().filter(|r| r.path == HEALTH).count()
}

/// A config entry with a fresh token of `vault` in a token file.
fn entry(exporter_dir: &std::path::Path, name: &str, vault: &VaultDouble, extra: &str) -> String {
    let token = vault.add_token(TokenSpec::service(600));
    let path = exporter_dir.join(format!("{name}.token"));
    write_token(&path, &token);
    file_entry(name, &vault.url(), &path, extra)
}

fn health(s: &Scrape, metric: &str, vault: &str) -> Option<f64> {
    s.of(&format!("vault_health_{metric}"), vault, &[])
}

/// Writes `yaml` as the exporter's config and reloads it (POST /-/reload).
fn reload(exporter: &Exporter, yaml: &str) {
    std::fs::write(exporter.dir.join("config.yml"), yaml).unwrap();
    let (status, body) = http_request(
        exporter.addr,
        "POST /-/reload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn health_series_follow_the_vault_sealed_standby_skewed_and_down() {
    let vault = VaultDouble::start();
    let dir = common::temp_dir("health-states-tokens");
    let yaml = format!(
        "vaults:\n{}",
        entry(&dir, "prod", &vault, "    health_interval: 1s\n")
    );
    let exporter = Exporter::with_config("health-states", &yaml, &[]);
    let wait = Duration::from_secs(10);

    let up = exporter.wait_for(wait, "the first health poll", |s| {
        health(s, "up", "prod") == Some(1.0)
    });
    assert_eq!(health(&up, "sealed", "prod"), Some(0.0));
    assert_eq!(health(&up, "standby", "prod"), Some(0.0));
    // What the double itself says, read here independently of the exporter.
    let (_, body) = common::http_get(vault.addr(), HEALTH);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let info = [
        ("version", body["version"].as_str().unwrap()),
        ("cluster_name", body["cluster_name"].as_str().unwrap()),
    ];
    assert_eq!(
        up.of("vault_health_info", "prod", &info),
        Some(1.0),
        "{}",
        up.text
    );
    let skew = health(&up, "clock_skew_seconds", "prod").expect("skew");
    assert!(skew.abs() <= 2.0, "same clock, skew {skew}");

    vault.set_health_clock_offset(120);
    let skewed = exporter.wait_for(wait, "a skew of about +120 s", |s| {
        health(s, "clock_skew_seconds", "prod").is_some_and(|v| v > 100.0)
    });
    let skew = health(&skewed, "clock_skew_seconds", "prod").unwrap();
    assert!((skew - 120.0).abs() <= 2.0, "skew {skew}");
    vault.set_health_clock_offset(-300);
    exporter.wait_for(wait, "a skew of about -300 s", |s| {
        health(s, "clock_skew_seconds", "prod").is_some_and(|v| (v + 300.0).abs() <= 2.0)
    });
    vault.set_health_clock_offset(0);

    vault.set_fault(Fault::Sealed);
    let sealed = exporter.wait_for(wait, "sealed", |s| health(s, "sealed", "prod") == Some(1.0));
    assert_eq!(
        health(&sealed, "up", "prod"),
        Some(1.0),
        "a sealed Vault answers"
    );
    let (_, page) = exporter.get("/");
    assert!(page.contains("health down\">sealed<"), "{page}");

    vault.set_fault(Fault::Redirect {
        location: vault.url(),
    });
    exporter.wait_for(wait, "standby, unsealed", |s| {
        health(s, "standby", "prod") == Some(1.0) && health(s, "sealed", "prod") == Some(0.0)
    });
    vault.clear_fault();
    exporter.wait_for(wait, "active again", |s| {
        health(s, "standby", "prod") == Some(0.0)
    });

    let polls: Vec<_> = vault
        .requests()
        .into_iter()
        .filter(|r| r.path == HEALTH)
        .collect();
    assert!(polls.len() >= 5, "{} polls", polls.len());
    assert!(
        polls.iter().all(|r| r.method == "GET" && r.token.is_none()),
        "unauthenticated GETs"
    );

    vault.shutdown();
    let down = exporter.wait_for(wait, "down", |s| health(s, "up", "prod") == Some(0.0));
    for gone in ["sealed", "standby", "clock_skew_seconds"] {
        assert_eq!(
            health(&down, gone, "prod"),
            None,
            "{gone} absent while down"
        );
    }
    assert!(!down.text.contains("vault_health_info{"), "{}", down.text);
    let (_, page) = exporter.get("/");
    assert!(page.contains("health down\">unreachable<"), "{page}");
}

#[test]
fn one_poller_per_vault_at_the_smallest_interval() {
    let vault = VaultDouble::start();
    let dir = common::temp_dir("health-interval-tokens");
    // Two entries on one Vault: one poller, at 1 s (not 3 s, and not twice).
    let yaml = format!(
        "vaults:\n{}{}",
        entry(&dir, "a", &vault, "    health_interval: 3s\n"),
        entry(&dir, "b", &vault, "    health_interval: 1s\n"),
    );
    let exporter = Exporter::with_config("health-interval", &yaml, &[]);
    exporter.wait_for(Duration::from_secs(10), "the first poll", |s| {
        health(s, "up", "a") == Some(1.0) && health(s, "up", "b") == Some(1.0)
    });
    vault.clear_requests();
    let window = Duration::from_millis(4500);
    let started = Instant::now();
    // Scrapes meanwhile ask Vault nothing.
    while started.elapsed() < window {
        exporter.scrape();
        std::thread::sleep(Duration::from_millis(100));
    }
    let polls = health_polls(&vault);
    // 4 or 5 at 1 s; one poller per entry would be 8 or more, one at 3 s at most 2.
    assert!(
        (3..=6).contains(&polls),
        "{polls} sys/health requests in 4.5 s at a 1 s interval"
    );
}

#[test]
fn without_the_vault_collector_nothing_polls() {
    let vault = VaultDouble::start();
    let dir = common::temp_dir("health-off-tokens");
    let yaml = format!(
        "vaults:\n{}",
        entry(&dir, "prod", &vault, "    health_interval: 1s\n")
    );
    let exporter = Exporter::with_config("health-off", &yaml, &["--no-collector.vault"]);
    exporter.wait_for(Duration::from_secs(10), "the token renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    // Two intervals more than a poller would need.
    std::thread::sleep(Duration::from_millis(2500));
    let scrape = exporter.scrape();
    assert!(!scrape.text.contains("vault_health_"), "{}", scrape.text);
    assert!(!scrape.text.contains("collector=\"vault\""));
    assert!(!vault.requests().is_empty(), "the worker did talk to Vault");
    assert_eq!(health_polls(&vault), 0, "no sys/health request");
    let (_, page) = exporter.get("/");
    assert!(page.contains(">prod<") && !page.contains("class=\"health"));
}

#[test]
fn a_reload_starts_and_stops_pollers() {
    let (a, b) = (VaultDouble::start(), VaultDouble::start());
    let dir = common::temp_dir("health-reload-tokens");
    let on_a = entry(&dir, "on-a", &a, "    health_interval: 1s\n");
    let on_b = entry(&dir, "on-b", &b, "    health_interval: 1s\n");
    let exporter = Exporter::with_config(
        "health-reload",
        &format!("vaults:\n{on_a}"),
        &["--web.enable-lifecycle"],
    );
    let wait = Duration::from_secs(10);
    exporter.wait_for(wait, "a polled", |s| health(s, "up", "on-a") == Some(1.0));
    assert_eq!(health_polls(&b), 0);

    reload(&exporter, &format!("vaults:\n{on_a}{on_b}"));
    let both = exporter.wait_for(wait, "b polled", |s| health(s, "up", "on-b") == Some(1.0));
    assert_eq!(health(&both, "up", "on-a"), Some(1.0));
    assert!(health_polls(&b) >= 1);

    // a's last entry goes: its poller stops (one request may be in flight at the reload).
    reload(&exporter, &format!("vaults:\n{on_b}"));
    let after = exporter.wait_for(wait, "on-a gone", |s| health(s, "up", "on-a").is_none());
    assert_eq!(health(&after, "up", "on-b"), Some(1.0));
    std::thread::sleep(Duration::from_millis(500));
    a.clear_requests();
    b.clear_requests();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(health_polls(&a), 0, "a is no longer polled");
    assert!(health_polls(&b) >= 2, "b still is, at 1 s");
    exporter.wait_for_log(wait, "vault health poller stopped");
}
