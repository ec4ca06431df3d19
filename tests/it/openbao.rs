//! Black-box tests against a real OpenBao 2.7.2 (`bao server -dev`, see
//! `tests/common/openbao.rs`): the real token kinds and faults, each checked against
//! OpenBao's own view (`lookup-accessor` with the root token, the audit log's requests).
//!
//! The exporter is the release build when `VTE_RELEASE_BIN` names it (`.ci/run` does),
//! else the test build. TTLs are a few seconds, so each test runs in well under a minute;
//! the tests run in parallel, each with its own server.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::openbao::{now, rfc3339, OpenBao, ROOT};
use common::*;
use serde_json::json;

/// How far the exporter's expiry may be from OpenBao's: the lookup's `ttl` is whole
/// seconds, plus the time the answer takes on a loaded machine.
const EXPIRY_TOLERANCE: f64 = 2.0;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn exporter_bin() -> PathBuf {
    std::env::var_os("VTE_RELEASE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// Writes `token` to `dir/name` (mode 0600) and returns the path.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    write_token(&path, token);
    path
}

/// The exporter on a config listing `entries` (already indented YAML list items).
fn exporter(dir: &Path, entries: &str) -> Exporter {
    let config = dir.join("config.yml");
    std::fs::write(&config, format!("vaults:\n{entries}")).unwrap();
    Exporter::start_bin(
        &exporter_bin(),
        dir.to_owned(),
        &[
            format!("--config.file={}", config.display()),
            "--log.level=debug".into(),
        ],
        &[],
    )
}

/// A config entry for a token file on `bao` (1 s timeout, 2 s backoff ceiling).
fn entry(bao: &OpenBao, name: &str, file: &Path, extra: &str) -> String {
    file_entry(name, &bao.addr, file, extra)
}

/// [`entry`] with a request timeout that a loaded two-core CI machine cannot miss.
fn patient_entry(bao: &OpenBao, name: &str, file: &Path) -> String {
    format!(
        "  - name: {name}\n    address: {}\n    token_file: {}\n    timeout: 10s\n",
        bao.addr,
        file.display()
    )
}

fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} is not within {tolerance} of {expected}"
    );
}

/// OpenBao's `expire_time` for a token, as Unix seconds.
fn bao_expiry(bao: &OpenBao, accessor: &str, namespace: Option<&str>) -> f64 {
    let data = bao
        .lookup_accessor(accessor, namespace)
        .unwrap_or_else(|| panic!("OpenBao no longer knows accessor {accessor}"));
    rfc3339(data["expire_time"].as_str().expect("an expiring token"))
}

/// Log lines about one token.
fn lines_of(log: &str, vault: &str) -> Vec<String> {
    let field = format!("vault={vault}");
    log.lines()
        .filter(|l| {
            l.split(|c: char| c.is_whitespace() || c == ':' || c == ';')
                .any(|w| w == field)
        })
        .map(str::to_owned)
        .collect()
}

/// Waits until `done` holds, polling every 100 ms; panics with `what` after `timeout`.
fn eventually(timeout: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(secs(0.1));
    }
}

/// Every token kind OpenBao makes, one exporter watching them all.
#[test]
fn every_token_kind_behaves_as_openbao_sees_it() {
    let Some(bao) = OpenBao::start("kinds") else {
        return;
    };
    let dir = temp_dir("bao-kinds-exporter");
    bao.ok(
        "POST",
        "sys/policies/acl/lookup-only",
        None,
        json!({"policy": "path \"auth/token/lookup-self\" { capabilities = [\"read\"] }"}),
    );
    bao.ok(
        "POST",
        "sys/policies/acl/nothing",
        None,
        json!({"policy": "path \"secret/*\" { capabilities = [\"read\"] }"}),
    );
    bao.ok(
        "POST",
        "auth/token/roles/prole",
        None,
        json!({"token_period": "4s", "allowed_policies": ["default"]}),
    );
    bao.ok("POST", "sys/namespaces/team-a", None, json!({}));

    let service =
        bao.create(json!({"ttl": "8s", "explicit_max_ttl": "1h", "policies": ["default"]}));
    let capped =
        bao.create(json!({"ttl": "6s", "explicit_max_ttl": "10s", "policies": ["default"]}));
    let fixed = bao.create(json!({"ttl": "60s", "renewable": false, "policies": ["default"]}));
    let batch = bao.create(json!({"ttl": "60s", "type": "batch", "policies": ["default"]}));
    let child = bao.create(json!({"ttl": "0", "period": "0"}));
    let periodic = bao.create(json!({"period": "4s", "policies": ["default"]}));
    let role = bao.create_at("auth/token/create/prole", None, json!({}));
    let limited = bao.create(json!({"ttl": "16s", "num_uses": 3, "policies": ["default"]}));
    let no_renew =
        bao.create(json!({"ttl": "6s", "no_default_policy": true, "policies": ["lookup-only"]}));
    let no_lookup =
        bao.create(json!({"ttl": "60s", "no_default_policy": true, "policies": ["nothing"]}));
    let revoked = bao.create(json!({"ttl": "6s", "policies": ["default"]}));
    let in_ns = bao.create_at(
        "auth/token/create",
        Some("team-a"),
        json!({"ttl": "8s", "policies": ["default"]}),
    );
    let wrong_scheme = bao.create(json!({"ttl": "60s", "policies": ["default"]}));
    assert!(
        bao.lookup_accessor(&child.accessor, None).unwrap()["expire_time"].is_null(),
        "the root's child never expires in OpenBao's view"
    );
    // OpenBao's service tokens are `s.` + 24 characters; one made in a namespace carries
    // the namespace's id as a `.XXXXX` suffix (the README's compatibility notes).
    assert!(service.token.starts_with("s.") && service.token.matches('.').count() == 1);
    assert_eq!(in_ns.token.matches('.').count(), 2, "namespace suffix");
    assert!(batch.token.starts_with("b."));

    let file = |name: &str, token: &str| token_file(&dir, name, token);
    let https_addr = bao.addr.replace("http://", "https://");
    let entries = [
        entry(&bao, "service", &file("service", &service.token), ""),
        entry(&bao, "capped", &file("capped", &capped.token), ""),
        entry(&bao, "fixed", &file("fixed", &fixed.token), ""),
        entry(&bao, "batch", &file("batch", &batch.token), ""),
        entry(&bao, "root", &file("root", ROOT), ""),
        entry(&bao, "child", &file("child", &child.token), ""),
        entry(&bao, "periodic", &file("periodic", &periodic.token), ""),
        entry(&bao, "role", &file("role", &role.token), ""),
        entry(&bao, "limited", &file("limited", &limited.token), ""),
        entry(&bao, "no_renew", &file("no_renew", &no_renew.token), ""),
        entry(&bao, "no_lookup", &file("no_lookup", &no_lookup.token), ""),
        entry(&bao, "revoked", &file("revoked", &revoked.token), ""),
        entry(
            &bao,
            "in_ns",
            &file("in_ns", &in_ns.token),
            "    namespace: team-a\n",
        ),
        file_entry(
            "wrong_scheme",
            &https_addr,
            &file("wrong_scheme", &wrong_scheme.token),
            "",
        ),
    ]
    .concat();
    let started = now();
    let exporter = exporter(&dir, &entries);

    // Revoked after the exporter looked it up; the next renewal meets a 403.
    exporter.wait_for(secs(5.0), "the revoked-to-be token renewing", |s| {
        s.state("revoked").as_deref() == Some("renewing")
    });
    bao.ok(
        "POST",
        "auth/token/revoke-accessor",
        None,
        json!({"accessor": revoked.accessor}),
    );

    // The revoked token is invalid; a new one in its file is picked up.
    exporter.wait_for(secs(6.0), "the revoked token invalid", |s| {
        s.state("revoked").as_deref() == Some("invalid")
    });
    // A policy without renew-self or lookup-self: say what is missing, not that it is dead.
    exporter.wait_for(secs(6.0), "the renew-denied token invalid", |s| {
        s.state("no_renew").as_deref() == Some("invalid")
    });
    let s = exporter.scrape();
    let log = exporter.log();
    for (vault, made, missing) in [
        (
            "no_renew",
            &no_renew,
            "`update` capability on auth/token/renew-self",
        ),
        (
            "no_lookup",
            &no_lookup,
            "`read` capability on auth/token/lookup-self",
        ),
    ] {
        assert_eq!(s.state(vault).as_deref(), Some("invalid"), "{vault}");
        assert_eq!(s.failures(vault, "permission_denied"), 1.0, "{vault}");
        let lines = lines_of(&log, vault);
        assert!(
            lines.iter().any(|l| l.contains(missing)),
            "{vault}: {lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("the token is invalid")),
            "{vault}: {lines:?}"
        );
        assert!(
            bao.lookup_accessor(&made.accessor, None).is_some(),
            "{vault} lives"
        );
    }
    let replacement = bao.create(json!({"ttl": "60s", "policies": ["default"]}));
    let swap = dir.join("revoked.new");
    write_token(&swap, &replacement.token);
    std::fs::rename(&swap, dir.join("revoked")).unwrap();
    let s = exporter.wait_for(secs(5.0), "the replacement renewing", |s| {
        s.state("revoked").as_deref() == Some("renewing")
    });
    assert_eq!(s.failures("revoked", "permission_denied"), 1.0);
    assert!(
        lines_of(&exporter.log(), "revoked")
            .iter()
            .any(|l| l.contains("the token is invalid, rotate the token")),
        "a revoked token is called dead: {}",
        exporter.log()
    );
    assert_eq!(bao.calls_of(&replacement.accessor, "lookup-self").len(), 1);

    // The max TTL: capped within one renewal, then expired, and no request after capping.
    let s = exporter.wait_for(secs(9.0), "the capped token capped", |s| {
        s.state("capped").as_deref() == Some("capped")
    });
    let capped_at = now();
    assert_eq!(s.of("vault_token_capped", "capped", &[]), Some(1.0));
    let capped_expiry = s
        .of("vault_token_expiry_timestamp_seconds", "capped", &[])
        .unwrap();
    assert_close(
        capped_expiry,
        bao_expiry(&bao, &capped.accessor, None),
        EXPIRY_TOLERANCE,
        "capped expiry vs OpenBao",
    );
    assert!(
        capped_expiry <= started + 11.0,
        "the capped expiry is the max TTL's"
    );

    // A service token: renewed at about half its TTL, its expiry OpenBao's.
    let s = exporter.wait_for(secs(6.0), "the service token renewed", |s| {
        s.renewals("service", "success") >= 1.0
    });
    assert_eq!(s.state("service").as_deref(), Some("renewing"));
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "service", &[])
            .unwrap(),
        bao_expiry(&bao, &service.accessor, None),
        EXPIRY_TOLERANCE,
        "service expiry vs OpenBao",
    );
    let lookups = bao.calls_of(&service.accessor, "lookup-self");
    let renewals = bao.calls_of(&service.accessor, "renew-self");
    assert_eq!(lookups.len(), 1, "one start-up lookup");
    let first_after = renewals[0] - lookups[0];
    assert!(
        (0.4 * 7.0 - 0.2..=0.5 * 8.0 + 0.6).contains(&first_after),
        "renewed {first_after}s after the lookup of an 8 s token: about half its TTL"
    );

    // The namespace's token: renewing, as OpenBao sees it in team-a.
    let s = exporter.wait_for(secs(6.0), "the namespaced token renewed", |s| {
        s.renewals("in_ns", "success") >= 1.0
    });
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "in_ns", &[])
            .unwrap(),
        bao_expiry(&bao, &in_ns.accessor, Some("team-a")),
        EXPIRY_TOLERANCE,
        "namespaced expiry vs OpenBao",
    );

    // Capped tokens expire at OpenBao's expiry, and OpenBao then forgets them.
    exporter.wait_for(secs(8.0), "the capped token expired", |s| {
        s.state("capped").as_deref() == Some("expired")
    });
    eventually(secs(4.0), "OpenBao revoking the capped token", || {
        bao.lookup_accessor(&capped.accessor, None).is_none()
    });
    let after_capping: Vec<_> = bao
        .requests_of(&capped.accessor)
        .into_iter()
        .filter(|(t, _)| *t > capped_at)
        .collect();
    assert!(
        after_capping.is_empty(),
        "requests after capping: {after_capping:?}"
    );

    let s = exporter.scrape();
    let log = exporter.log();
    // Periodic tokens (explicit and from a role) renew forever.
    for (vault, made) in [("periodic", &periodic), ("role", &role)] {
        assert_eq!(s.state(vault).as_deref(), Some("renewing"), "{vault}");
        assert!(
            s.renewals(vault, "success") >= 3.0,
            "{vault}: renewals every ~2 s"
        );
        assert_eq!(s.of("vault_token_capped", vault, &[]), Some(0.0), "{vault}");
        let view = bao.lookup_accessor(&made.accessor, None).unwrap();
        // Alive long past its 4 s period. A role's period shows only as the role's TTL.
        let period = if vault == "role" {
            &view["creation_ttl"]
        } else {
            &view["period"]
        };
        assert_eq!(period, 4, "{vault}: {view}");
        assert!(
            now() - rfc3339(view["issue_time"].as_str().unwrap()) > 8.0,
            "{vault}: twice its period"
        );
        assert_close(
            s.of("vault_token_expiry_timestamp_seconds", vault, &[])
                .unwrap(),
            rfc3339(view["expire_time"].as_str().unwrap()),
            EXPIRY_TOLERANCE,
            vault,
        );
    }
    // Non-renewable kinds: counted once, never a renew-self.
    for vault in ["fixed", "batch", "limited"] {
        assert_eq!(s.state(vault).as_deref(), Some("not_renewable"), "{vault}");
        assert_eq!(s.renewals(vault, "not_renewable"), 1.0, "{vault}");
        assert_eq!(s.renewals(vault, "failure"), 0.0, "{vault}");
    }
    assert!(bao.calls_of(&fixed.accessor, "renew-self").is_empty());
    assert_eq!(bao.lookup_token(&batch.token).unwrap()["type"], "batch");
    // The use-limited token kept all but the one use the start-up lookup spent.
    assert!(bao.calls_of(&limited.accessor, "renew-self").is_empty());
    let view = bao
        .lookup_accessor(&limited.accessor, None)
        .expect("the use-limited token lives");
    assert_eq!(view["num_uses"], 2, "{view}");
    assert!(
        lines_of(&log, "limited")
            .iter()
            .any(|l| l.contains("use-limited") && l.contains("rotate the token")),
        "{log}"
    );
    // Tokens that never expire: the root and its no-TTL child.
    let root_accessor = bao.lookup_token(ROOT).unwrap()["accessor"]
        .as_str()
        .unwrap()
        .to_owned();
    for (vault, accessor) in [
        ("root", root_accessor.as_str()),
        ("child", child.accessor.as_str()),
    ] {
        assert_eq!(s.state(vault).as_deref(), Some("never_expires"), "{vault}");
        assert_eq!(
            s.of("vault_token_expiry_timestamp_seconds", vault, &[]),
            None
        );
        assert_eq!(s.renewals(vault, "not_renewable"), 0.0, "{vault}");
        assert!(bao.calls_of(accessor, "renew-self").is_empty(), "{vault}");
    }
    // https:// against this plain-HTTP server: a tls failure that says so.
    assert!(s.failures("wrong_scheme", "tls") >= 1.0);
    assert!(
        lines_of(&log, "wrong_scheme")
            .iter()
            .any(|l| l.contains("plain HTTP")),
        "{log}"
    );
    // Never a token in the log.
    for made in [
        &service,
        &capped,
        &periodic,
        &limited,
        &no_renew,
        &in_ns,
        &replacement,
    ] {
        assert!(!log.contains(&made.token), "a token leaked into the log");
    }
}

/// Env mode as an OpenBao user has it: `bao login` wrote `~/.vault-token`, BAO_ADDR is set.
#[test]
fn env_mode_renews_the_token_bao_login_wrote() {
    let Some(bao) = OpenBao::start("login") else {
        return;
    };
    let made = bao.create(json!({"ttl": "6s", "policies": ["default"]}));
    let home = temp_dir("bao-login-home");
    let home_str = home.to_str().unwrap().to_owned();
    // `bao login -` reads the token from stdin: never on a command line.
    bao.cli(
        &["login", "-no-print", "-"],
        &[("HOME", &home_str)],
        Some(&made.token),
    );
    let helper = std::fs::read_to_string(home.join(".vault-token"))
        .expect("bao login writes ~/.vault-token");
    assert_eq!(helper.trim(), made.token);
    let exporter = Exporter::start_bin(
        &exporter_bin(),
        home.clone(),
        &[],
        &[("BAO_ADDR", &bao.addr), ("HOME", &home_str)],
    );
    let s = exporter.wait_for(secs(6.0), "the logged-in token renewed", |s| {
        s.renewals("default", "success") >= 1.0
    });
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "default", &[])
            .unwrap(),
        bao_expiry(&bao, &made.accessor, None),
        EXPIRY_TOLERANCE,
        "expiry vs OpenBao",
    );
    let log = exporter.log();
    let chosen = log
        .lines()
        .find(|l| l.contains("env mode"))
        .unwrap_or_default();
    assert!(
        chosen.contains(&bao.addr) && chosen.contains("BAO_ADDR"),
        "{log}"
    );
    assert!(chosen.contains(".vault-token"), "{log}");
    assert!(!log.contains(&made.token));
}

/// A sealed server (503) and a stopped one (timeouts): retried, and renewing again after;
/// the `vault` collector sees it sealed (`bao operator seal` is this `sys/seal` call),
/// unsealed and down, with OpenBao's version and a clock that agrees with ours.
#[test]
fn a_sealed_then_a_stopped_server_cost_no_token() {
    let Some(bao) = OpenBao::start("faults") else {
        return;
    };
    let dir = temp_dir("bao-faults-exporter");
    let made = bao.create(json!({"ttl": "12s", "policies": ["default"]}));
    let exporter = exporter(
        &dir,
        &entry(
            &bao,
            "t",
            &token_file(&dir, "t", &made.token),
            "    health_interval: 1s\n",
        ),
    );
    let health = |s: &Scrape, metric: &str| s.of(&format!("vault_health_{metric}"), "t", &[]);
    let s = exporter.wait_for(secs(5.0), "renewing, and the Vault polled", |s| {
        s.state("t").as_deref() == Some("renewing") && health(s, "up") == Some(1.0)
    });
    assert_eq!(health(&s, "sealed"), Some(0.0));
    assert_eq!(health(&s, "standby"), Some(0.0));
    // What OpenBao itself says, asked here.
    let (_, said) = bao.call("GET", "sys/health", None, None);
    let version = said["version"].as_str().expect("a version");
    assert!(version.starts_with("2.7."), "OpenBao {version}");
    let info = [
        ("version", version),
        ("cluster_name", said["cluster_name"].as_str().unwrap()),
    ];
    assert_eq!(
        s.of("vault_health_info", "t", &info),
        Some(1.0),
        "{}",
        s.text
    );
    let skew = health(&s, "clock_skew_seconds").expect("a clock skew");
    assert!(skew.abs() <= 2.0, "one machine, one clock: skew {skew}");

    bao.seal();
    exporter.wait_for(secs(8.0), "a sealed failure, and seen sealed", |s| {
        s.failures("t", "sealed") >= 1.0 && health(s, "sealed") == Some(1.0)
    });
    let (_, page) = exporter.get("/");
    assert!(page.contains("health down\">sealed<"), "{page}");
    bao.unseal();
    exporter.wait_for(secs(8.0), "seen unsealed", |s| {
        health(s, "sealed") == Some(0.0)
    });
    let s = exporter.wait_for(secs(8.0), "a renewal after unsealing", |s| {
        s.renewals("t", "success") >= 1.0
    });
    assert_eq!(s.state("t").as_deref(), Some("renewing"));
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "t", &[])
            .unwrap(),
        bao_expiry(&bao, &made.accessor, None),
        EXPIRY_TOLERANCE,
        "expiry after unsealing vs OpenBao",
    );
    let renewed = s.renewals("t", "success");

    bao.signal("STOP");
    let stopped = exporter.wait_for(secs(8.0), "a timeout, and the Vault seen down", |s| {
        s.failures("t", "timeout") >= 1.0 && health(s, "up") == Some(0.0)
    });
    assert_eq!(
        stopped.state("t").as_deref(),
        Some("renewing"),
        "retrying, not given up"
    );
    // /metrics answers while the Vault hangs.
    assert_eq!(exporter.get("/metrics").0, 200);
    bao.signal("CONT");
    let s = exporter.wait_for(secs(8.0), "a renewal after SIGCONT", |s| {
        s.renewals("t", "success") > renewed
    });
    assert_eq!(s.state("t").as_deref(), Some("renewing"));
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "t", &[])
            .unwrap(),
        bao_expiry(&bao, &made.accessor, None),
        EXPIRY_TOLERANCE,
        "expiry after SIGCONT vs OpenBao",
    );
}

/// A rate-limit quota: 429 with Retry-After is a `rate_limited` failure, retried no sooner
/// than asked, and the token renews once the quota is lifted.
#[test]
fn a_rate_limit_quota_is_counted_and_waited_out() {
    let Some(bao) = OpenBao::start("quota") else {
        return;
    };
    let dir = temp_dir("bao-quota-exporter");
    let made = bao.create(json!({"ttl": "30s", "policies": ["default"]}));
    bao.ok(
        "POST",
        "sys/quotas/config",
        None,
        json!({"enable_rate_limit_response_headers": true}),
    );
    // One request per 20 s on the token endpoints: the start-up lookup takes it.
    bao.ok(
        "POST",
        "sys/quotas/rate-limit/tokens",
        None,
        json!({"rate": 1, "interval": "20s", "path": "auth/token/"}),
    );
    let exporter = exporter(
        &dir,
        &entry(&bao, "t", &token_file(&dir, "t", &made.token), ""),
    );
    let s = exporter.wait_for(secs(20.0), "a rate_limited failure", |s| {
        s.failures("t", "rate_limited") >= 1.0
    });
    let limited_at = now();
    assert_eq!(s.state("t").as_deref(), Some("renewing"));
    // Retry-After says about 20 s; with 30 s of lease the wait is capped at a quarter of
    // the time left, so no retry within the next 4 s, and no hammering.
    std::thread::sleep(secs(3.0));
    let s = exporter.scrape();
    assert_eq!(s.failures("t", "rate_limited"), 1.0, "{}", exporter.log());
    bao.call("DELETE", "sys/quotas/rate-limit/tokens", None, None);
    let s = exporter.wait_for(secs(10.0), "a renewal once the quota is gone", |s| {
        s.renewals("t", "success") >= 1.0
    });
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "t", &[])
            .unwrap(),
        bao_expiry(&bao, &made.accessor, None),
        EXPIRY_TOLERANCE,
        "expiry vs OpenBao",
    );
    let calls = bao.calls_of(&made.accessor, "renew-self");
    let during: Vec<_> = calls
        .iter()
        .filter(|t| **t > limited_at - 0.5 && **t < limited_at + 3.0)
        .collect();
    assert!(
        during.len() <= 1,
        "retried sooner than Retry-After allows: {calls:?}"
    );
}

/// TLS as the Vault CLI does it: a CA file, VAULT_CACERT in env mode, and a wrong name.
#[test]
fn tls_with_a_ca_file_vault_cacert_and_a_wrong_server_name() {
    let Some(bao) = OpenBao::start_tls("tls") else {
        return;
    };
    let ca = bao.ca_file.clone().unwrap();
    let dir = temp_dir("bao-tls-exporter");
    let good = bao.create(json!({"ttl": "6s", "policies": ["default"]}));
    let misnamed = bao.create(json!({"ttl": "60s", "policies": ["default"]}));
    let tls = |name: &str| format!("    tls:\n      ca_file: {}\n{name}", ca.display());
    let entries = [
        entry(
            &bao,
            "good",
            &token_file(&dir, "good", &good.token),
            &tls(""),
        ),
        entry(
            &bao,
            "misnamed",
            &token_file(&dir, "misnamed", &misnamed.token),
            &tls("      server_name: vault.wrong.example\n"),
        ),
    ]
    .concat();
    let exporter = exporter(&dir, &entries);
    let env_made = bao.create(json!({"ttl": "6s", "policies": ["default"]}));
    let env_dir = temp_dir("bao-tls-env");
    let env_exporter = Exporter::start_bin(
        &exporter_bin(),
        env_dir.clone(),
        &[],
        &[
            ("VAULT_ADDR", &bao.addr),
            ("VAULT_TOKEN", &env_made.token),
            ("VAULT_CACERT", ca.to_str().unwrap()),
            ("HOME", env_dir.to_str().unwrap()),
        ],
    );
    let s = exporter.wait_for(secs(6.0), "the CA-file token renewed", |s| {
        s.renewals("good", "success") >= 1.0 && s.failures("misnamed", "tls") >= 1.0
    });
    assert_close(
        s.of("vault_token_expiry_timestamp_seconds", "good", &[])
            .unwrap(),
        bao_expiry(&bao, &good.accessor, None),
        EXPIRY_TOLERANCE,
        "expiry over TLS vs OpenBao",
    );
    assert_eq!(s.state("misnamed").as_deref(), Some("unknown"));
    assert!(
        bao.requests_of(&misnamed.accessor).is_empty(),
        "no request got through"
    );
    let s = env_exporter.wait_for(secs(6.0), "the VAULT_CACERT token renewed", |s| {
        s.renewals("default", "success") >= 1.0
    });
    assert_eq!(s.failures("default", "tls"), 0.0);
}

/// 200 tokens at once: each looked up once and renewed, as OpenBao's audit log shows.
#[test]
fn two_hundred_tokens_at_once() {
    let Some(bao) = OpenBao::start("many") else {
        return;
    };
    let dir = temp_dir("bao-many-exporter");
    let made: Vec<_> = (0..200)
        .map(|_| bao.create(json!({"ttl": "8s", "policies": ["default"]})))
        .collect();
    let entries: String = made
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = format!("t{i:03}");
            patient_entry(&bao, &name, &token_file(&dir, &name, &m.token))
        })
        .collect();
    let exporter = exporter(&dir, &entries);
    let s = exporter.wait_for(secs(10.0), "every token renewed once", |s| {
        (0..200).all(|i| s.renewals(&format!("t{i:03}"), "success") >= 1.0)
    });
    let audited = bao.audited_requests();
    let count = |accessor: &str, path: &str| {
        audited
            .iter()
            .filter(|(a, _, p)| a == accessor && p == path)
            .count()
    };
    for (i, m) in made.iter().enumerate() {
        let name = format!("t{i:03}");
        assert_eq!(
            s.renewals(&name, "failure"),
            0.0,
            "{name}: {}",
            exporter.log()
        );
        assert_eq!(count(&m.accessor, "auth/token/lookup-self"), 1, "{name}");
        assert!(count(&m.accessor, "auth/token/renew-self") >= 1, "{name}");
    }
    for i in [0usize, 99, 199] {
        let name = format!("t{i:03}");
        assert_close(
            s.of("vault_token_expiry_timestamp_seconds", &name, &[])
                .unwrap(),
            bao_expiry(&bao, &made[i].accessor, None),
            EXPIRY_TOLERANCE,
            &name,
        );
    }
}
