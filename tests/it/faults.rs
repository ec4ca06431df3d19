//! The fault matrix, black-box: the real binary against the Vault double, each fault
//! checked on the exporter's metrics and log and on the requests the double saw.
//!
//! Every scenario runs at `--log.level=trace` and ends by checking that no token appears
//! in stdout, stderr, `/metrics` or `/proc/PID/cmdline` (`finish_without_leaks`). Tokens
//! live 2 to 25 s so that renewal points, retries and expiries happen within a test.
//! Token files use the harness' `file_entry`: timeout 1 s, max_backoff 2 s.

use crate::common;
use crate::fault_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use fault_support::*;
use vault_double::{Fault, RequestRecord, TokenSpec, VaultDouble};

const TRACE: &[&str] = &["--log.level=trace"];

fn config(entries: &[String]) -> String {
    format!("vaults:\n{}", entries.concat())
}

/// A fresh token file holding `token`.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let file = dir.join(name);
    write_token(&file, token);
    file
}

fn of_path<'a>(records: &'a [RequestRecord], path: &str) -> Vec<&'a RequestRecord> {
    records.iter().filter(|r| r.path == path).collect()
}

fn paths(records: &[RequestRecord]) -> Vec<&str> {
    records.iter().map(|r| r.path.as_str()).collect()
}

/// Seconds between consecutive records.
fn gaps(records: &[&RequestRecord]) -> Vec<f64> {
    records
        .windows(2)
        .map(|w| secs_between(w[0].at, w[1].at))
        .collect()
}

/// The ERROR lines the exporter wrote for failures of `vault` with `reason`.
fn failure_lines(log: &str, vault: &str, reason: &str) -> usize {
    log_lines(
        log,
        &[
            " ERROR ",
            "vault token renewal failed",
            &format!("vault={vault} "),
            &format!("reason={reason}"),
        ],
    )
    .len()
}

// ---------------------------------------------------------------------------------------
// Vault unreachable across the renewal point
// ---------------------------------------------------------------------------------------

/// Vault refuses connections from `down_after` seconds after the start-up lookup (before
/// the earliest renewal point, at 40 % of the lease) for `fraction` of the time the token
/// has left at that moment, then comes back before the expiry: the token must survive.
fn outage_across_the_renewal_point(name: &str, ttl: u64, down_after: f64, fraction: f64) {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(ttl));
    let file = token_file(&temp_dir(&format!("{name}-tokens")), "token", &token);
    let mut exporter = Exporter::with_config(
        name,
        &config(&[file_entry("v", &vault.url(), &file, "")]),
        TRACE,
    );
    let first = exporter.wait_for(Duration::from_secs(5), "the start-up lookup", |s| {
        s.state("v").as_deref() == Some("renewing")
    });
    let expiry_before = first
        .of("vault_token_expiry_timestamp_seconds", "v", &[])
        .unwrap();
    let lookup = vault.requests_for(&token)[0].clone();
    assert_eq!((lookup.path.as_str(), lookup.status), (LOOKUP, 200));
    let down_at = lookup.at + Duration::from_secs_f64(down_after);
    if let Ok(wait) = down_at.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
    assert!(
        of_path(&vault.requests_for(&token), RENEW).is_empty(),
        "the outage must start before the renewal point"
    );
    let expire = vault.token_expire_time(&token).unwrap();
    let left = expire.duration_since(SystemTime::now()).unwrap();
    let outage = left.mul_f64(fraction);

    vault.stop_listening();
    let down = Instant::now();
    let mut states = Vec::new();
    while down.elapsed() < outage {
        states.push(exporter.scrape().state("v"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = exporter.scrape();
    vault.resume_listening();
    let back = SystemTime::now();

    let network = during.failures("v", "network");
    assert!(
        network >= 1.0,
        "the renewal point fell in the outage, so an attempt failed with reason network"
    );
    assert_eq!(
        during.renewals("v", "failure"),
        network,
        "every failure is a network one"
    );
    assert!(
        network <= outage.as_secs_f64().ceil() + 1.0,
        "{network} attempts in a {outage:?} outage: more than one a second"
    );
    assert_eq!(during.renewals("v", "success"), 0.0);
    assert!(
        states.iter().all(|s| s.as_deref() == Some("renewing")),
        "state during the outage: {states:?}"
    );

    // Vault is back before the expiry: a retry renews the token in time.
    let after = exporter.wait_for(
        expire.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(1),
        "a renewal after the outage",
        |s| s.renewals("v", "success") >= 1.0,
    );
    let renewed = vault.requests_for(&token);
    let renewal = of_path(&renewed, RENEW)
        .into_iter()
        .find(|r| r.status == 200)
        .expect("the double renewed the token");
    assert!(
        renewal.at < expire,
        "renewed before the old expiry: {:.2}s after it",
        secs_between(expire, renewal.at)
    );
    assert!(vault.token_ttl(&token).is_some(), "the token is alive");
    assert_eq!(after.state("v").as_deref(), Some("renewing"));
    assert!(
        after
            .of("vault_token_expiry_timestamp_seconds", "v", &[])
            .unwrap()
            > expiry_before
    );
    let retry_after_back = secs_between(back, renewal.at);
    let cap = secs_between(back, expire) / 4.0 + 1.25;
    assert!(
        retry_after_back <= cap,
        "the first retry came {retry_after_back:.2}s after Vault was back (cap {cap:.2}s)"
    );
    println!(
        "{name}: ttl {ttl}s, down {:.1}s from {down_after}s after the lookup; {network} network failures; renewed {retry_after_back:.2}s after Vault was back, {:.2}s before the old expiry",
        outage.as_secs_f64(),
        secs_between(renewal.at, expire)
    );

    let total_failures = exporter.scrape().renewals("v", "failure");
    let log = finish_without_leaks(&mut exporter, &[&token]);
    assert_eq!(
        failure_lines(&log, "v", "network") as f64,
        total_failures,
        "one ERROR line per failure"
    );
}

#[test]
fn refused_connections_for_40_percent_of_the_ttl_left_across_the_renewal_point() {
    // 10 s lease: renewal due 4-5 s after the lookup; down from 3 s, for 40 % of the 7 s left.
    outage_across_the_renewal_point("faults-outage-40", 10, 3.0, 0.4);
}

#[test]
fn refused_connections_for_90_percent_of_the_ttl_left_across_the_renewal_point() {
    // 25 s lease: down from 1 s after the lookup for 90 % of the 24 s left, back 2.4 s
    // before the expiry (retries are at least a second apart; the TTL Vault reports is
    // whole seconds, so the exporter may think the token ends up to a second earlier).
    outage_across_the_renewal_point("faults-outage-90", 25, 1.0, 0.9);
}

// ---------------------------------------------------------------------------------------
// Hung and slow Vaults
// ---------------------------------------------------------------------------------------

#[test]
fn hung_and_slow_vaults_block_neither_scrapes_nor_shutdown() {
    let vault = VaultDouble::start();
    let dir = temp_dir("faults-hung-tokens");
    let hung = vault.add_token(TokenSpec::service(60));
    let loris = vault.add_token(TokenSpec::service(60));
    let slow_ok = vault.add_token(TokenSpec::service(4));
    let slow_over = vault.add_token(TokenSpec::service(60));
    vault.set_token_fault(&hung, Fault::Hang);
    // A valid answer, trickled at 20 bytes a second: ~50 s for its ~1 KB.
    let body = format!(
        r#"{{"request_id":"x","lease_id":"","renewable":false,"lease_duration":0,"data":{{"ttl":60,"renewable":true,"policies":["default"],"pad":"{}"}},"wrap_info":null,"warnings":null,"auth":null}}"#,
        "x".repeat(900)
    );
    vault.set_token_fault(
        &loris,
        Fault::SlowBody {
            status: 200,
            body: body.into_bytes(),
            bytes_per_sec: 20,
        },
    );
    // Timeout is 1 s: 600 ms answers succeed, 1.5 s answers time out.
    vault.set_token_fault(&slow_ok, Fault::Delay(Duration::from_millis(600)));
    vault.set_token_fault(&slow_over, Fault::Delay(Duration::from_millis(1500)));
    let entries = [
        ("hung", &hung),
        ("loris", &loris),
        ("slow_ok", &slow_ok),
        ("slow_over", &slow_over),
    ]
    .map(|(name, token)| file_entry(name, &vault.url(), &token_file(&dir, name, token), ""));
    let mut exporter = Exporter::with_config("faults-hung", &config(&entries), TRACE);

    // Scrape every 100 ms for 5 s while every worker is stuck in a Vault call. A scrape
    // that waited on a worker would last at least the 1 s Vault timeout (the hung one
    // forever); the bounds below leave room for a loaded 2-core machine.
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let t = Instant::now();
        exporter.scrape();
        latencies.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort();
    let (median, slowest) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!(
        "hung: {} scrapes, median {median:?}, slowest {slowest:?}",
        latencies.len()
    );
    assert!(
        median < Duration::from_millis(200) && slowest < Duration::from_secs(1),
        "scrapes while Vault hung: median {median:?}, slowest {slowest:?}"
    );

    let s = exporter.wait_for(Duration::from_secs(5), "the slow answers settled", |s| {
        s.failures("hung", "timeout") >= 2.0
            && s.failures("loris", "timeout") >= 2.0
            && s.failures("slow_over", "timeout") >= 2.0
            && s.renewals("slow_ok", "success") >= 1.0
    });
    for name in ["hung", "loris", "slow_over"] {
        assert_eq!(
            s.renewals(name, "failure"),
            s.failures(name, "timeout"),
            "{name}: every failure is a timeout"
        );
        assert_eq!(s.renewals(name, "success"), 0.0, "{name}");
    }
    // Each hung attempt ends at the 1 s timeout, and the next waits at least a second more.
    let hung_requests = vault.requests_for(&hung);
    assert!(hung_requests.iter().all(|r| r.status == 0));
    let hung_gaps = gaps(&of_path(&hung_requests, LOOKUP));
    assert!(
        hung_gaps.iter().all(|g| *g >= 1.9),
        "hung attempts: timeout + retry delay apart: {hung_gaps:?}"
    );
    // The slow-loris body is cut at the timeout too: it never parses as a bad response.
    assert_eq!(s.failures("loris", "bad_response"), 0.0);
    let loris_gaps = gaps(&of_path(&vault.requests_for(&loris), LOOKUP));
    assert!(
        loris_gaps.iter().all(|g| *g >= 1.9 && *g < 6.0),
        "{loris_gaps:?}"
    );
    // An answer within the timeout is a success, and its latency is observed.
    assert_eq!(s.renewals("slow_ok", "failure"), 0.0);
    let observed = s
        .of("vault_token_renewal_duration_seconds_sum", "slow_ok", &[])
        .unwrap();
    let count = s
        .of("vault_token_renewal_duration_seconds_count", "slow_ok", &[])
        .unwrap();
    assert!(
        count >= 1.0 && observed >= 0.6 * count,
        "{observed}s over {count}"
    );
    // Timeouts never observed as renewal latency: they got no HTTP answer.
    assert_eq!(
        s.of("vault_token_renewal_duration_seconds_count", "hung", &[]),
        Some(0.0)
    );

    // SIGTERM while a request hangs: exit 0 within 200 ms.
    let secrets = [hung.as_str(), &loris, &slow_ok, &slow_over];
    leak_check_running(&exporter, &secrets);
    let hung_before = vault.requests_for(&hung).len();
    wait_until(Duration::from_secs(5), "a fresh hung request", || {
        vault.requests_for(&hung).len() > hung_before
    });
    let in_flight = vault.requests_for(&hung).last().unwrap().at;
    let (status, took) = exporter.signal_and_wait("TERM", Duration::from_secs(2));
    let age = secs_between(in_flight, SystemTime::now());
    assert!(
        age < 1.0,
        "the hung request was still in flight ({age:.2}s old)"
    );
    println!("hung: SIGTERM -> exit in {took:?} with a request hung for {age:.2}s");
    assert_eq!(status.code(), Some(0));
    assert!(took <= Duration::from_millis(200), "exit took {took:?}");
    let log = leak_check_exited(&exporter, &secrets);
    assert!(failure_lines(&log, "loris", "timeout") >= 2);
}

// ---------------------------------------------------------------------------------------
// Error statuses
// ---------------------------------------------------------------------------------------

#[test]
fn error_statuses_carry_their_reason_and_are_retried() {
    let vault = VaultDouble::start();
    let dir = temp_dir("faults-status-tokens");
    let rate_limited =
        r#"{"errors":["request path \"auth/token/lookup-self\": rate limit quota exceeded"]}"#;
    let cases: Vec<(&str, Fault, &str)> = vec![
        ("e500", Fault::error(500, "internal error"), "server_error"),
        (
            "e502",
            Fault::error(502, "upstream rate limited"),
            "server_error",
        ),
        (
            "e504_html",
            Fault::Body {
                status: 504,
                content_type: "text/html".into(),
                body: b"<html>Gateway Timeout</html>".to_vec(),
            },
            "server_error",
        ),
        (
            "e412",
            Fault::error(412, "required index state not present"),
            "server_error",
        ),
        ("sealed", Fault::Sealed, "sealed"),
        (
            "no_active",
            Fault::error(503, "no active Vault instance found"),
            "server_error",
        ),
        ("r429", Fault::status(429, rate_limited), "rate_limited"),
        (
            "r429_after",
            Fault::Status {
                status: 429,
                body: rate_limited.into(),
                headers: vec![("Retry-After".into(), "3".into())],
            },
            "rate_limited",
        ),
        ("e400", Fault::error(400, "invalid request"), "bad_request"),
        (
            "e404",
            Fault::status(404, r#"{"errors":[]}"#),
            "bad_request",
        ),
        (
            "e405",
            Fault::error(405, "unsupported operation"),
            "bad_request",
        ),
    ];
    let mut tokens = Vec::new();
    let mut entries = Vec::new();
    for (name, fault, _) in &cases {
        let token = vault.add_token(TokenSpec::service(60));
        vault.set_token_fault(&token, fault.clone());
        entries.push(file_entry(
            name,
            &vault.url(),
            &token_file(&dir, name, &token),
            "",
        ));
        tokens.push(token);
    }
    let mut exporter = Exporter::with_config("faults-status", &config(&entries), TRACE);
    // Attempts at 0, ~1, ~3, ~5 s (backoff 1 s doubling, max_backoff 2 s); Retry-After 3 s
    // spaces that one's at 0, 3, 6.
    let s = exporter.wait_for(Duration::from_secs(12), "three attempts each", |s| {
        cases
            .iter()
            .all(|(name, _, reason)| s.failures(name, reason) >= 3.0)
    });
    for ((name, _, reason), token) in cases.iter().zip(&tokens) {
        let failures = s.renewals(name, "failure");
        assert_eq!(
            failures,
            s.failures(name, reason),
            "{name}: every failure is {reason}"
        );
        let requests = vault.requests_for(token).len() as f64;
        assert!(
            requests >= failures && requests <= failures + 1.0,
            "{name}: one request per counted failure ({requests} requests, {failures} failures)"
        );
        assert_eq!(s.renewals(name, "success"), 0.0);
        assert_ne!(
            s.state(name).as_deref(),
            Some("invalid"),
            "{name}: not a dead token"
        );
    }
    let lookups = |token: &str| vault.requests_for(token);
    let without = lookups(&tokens[6]);
    let first_gap = gaps(&of_path(&without, LOOKUP))[0];
    assert!(
        (0.9..2.0).contains(&first_gap),
        "429 without Retry-After: first retry after about a second, not {first_gap:.2}s"
    );
    let with = lookups(&tokens[7]);
    let with_gaps = gaps(&of_path(&with, LOOKUP));
    assert!(
        with_gaps.iter().all(|g| *g >= 2.9),
        "429 with Retry-After: 3: retries {with_gaps:?} s apart"
    );

    // Vault heals: every token is looked up and renewing within the backoff ceiling.
    for token in &tokens {
        vault.clear_token_fault(token);
    }
    let healed = exporter.wait_for(Duration::from_secs(6), "every token renewing", |s| {
        cases
            .iter()
            .all(|(name, _, _)| s.state(name).as_deref() == Some("renewing"))
    });
    let secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let log = finish_without_leaks(&mut exporter, &secrets);
    for (name, _, reason) in &cases {
        assert_eq!(
            failure_lines(&log, name, reason) as f64,
            healed.renewals(name, "failure"),
            "{name}: one ERROR line with reason={reason} per failure"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------------------

#[test]
fn a_standby_redirect_is_followed_once_and_never_from_https_to_http() {
    let standby = VaultDouble::start();
    let active = VaultDouble::start();
    let third = VaultDouble::start();
    let dir = temp_dir("faults-redirect-tokens");
    let pki = temp_dir("faults-redirect-pki");
    let ca = make_ca(&pki, "ca");
    let server = make_leaf(&pki, "server", &ca, &["DNS:localhost"], false);
    let tls_standby = TlsProxy::start(
        standby.addr(),
        ProxyOptions {
            server: server.clone(),
            client_ca: None,
        },
    );
    let tls_active = TlsProxy::start(
        active.addr(),
        ProxyOptions {
            server,
            client_ca: None,
        },
    );
    // A token the standby and the active node both know, as in one cluster.
    let shared = |spec: TokenSpec, nodes: &[&VaultDouble]| {
        let token = standby.add_token(spec.clone());
        for node in nodes {
            node.add_token_with_id(&token, spec.clone());
        }
        token
    };
    let followed = shared(TokenSpec::service(4), &[&active]);
    standby.set_token_fault(
        &followed,
        Fault::Redirect {
            location: active.url(),
        },
    );
    let twice = shared(TokenSpec::service(60), &[&active, &third]);
    standby.set_token_fault(
        &twice,
        Fault::Redirect {
            location: active.url(),
        },
    );
    active.set_token_fault(
        &twice,
        Fault::Redirect {
            location: third.url(),
        },
    );
    let https_to_https = shared(TokenSpec::service(4), &[&active]);
    standby.set_token_fault(
        &https_to_https,
        Fault::Redirect {
            location: tls_active.url("localhost"),
        },
    );
    let downgrade = shared(TokenSpec::service(60), &[&active]);
    standby.set_token_fault(
        &downgrade,
        Fault::Redirect {
            location: active.url(),
        },
    );

    let ca_yaml = format!("    tls:\n      ca_file: {}\n", ca.cert.display());
    let entries = [
        file_entry(
            "followed",
            &standby.url(),
            &token_file(&dir, "followed", &followed),
            "",
        ),
        file_entry(
            "twice",
            &standby.url(),
            &token_file(&dir, "twice", &twice),
            "",
        ),
        file_entry(
            "https_to_https",
            &tls_standby.url("localhost"),
            &token_file(&dir, "https_to_https", &https_to_https),
            &ca_yaml,
        ),
        file_entry(
            "downgrade",
            &tls_standby.url("localhost"),
            &token_file(&dir, "downgrade", &downgrade),
            &ca_yaml,
        ),
    ];
    let mut exporter = Exporter::with_config("faults-redirect", &config(&entries), TRACE);
    let s = exporter.wait_for(Duration::from_secs(10), "redirects settled", |s| {
        s.renewals("followed", "success") >= 1.0
            && s.renewals("https_to_https", "success") >= 1.0
            && s.failures("twice", "server_error") >= 2.0
            && s.failures("downgrade", "server_error") >= 2.0
    });
    for name in ["followed", "https_to_https"] {
        assert_eq!(s.renewals(name, "failure"), 0.0, "{name}");
        assert_eq!(s.state(name).as_deref(), Some("renewing"), "{name}");
    }
    for (name, token) in [("followed", &followed), ("https_to_https", &https_to_https)] {
        let at_standby = standby.requests_for(token);
        assert!(
            at_standby.iter().all(|r| r.status == 307),
            "{name}: {at_standby:?}"
        );
        let at_active = active.requests_for(token);
        assert_eq!(
            at_active.len(),
            at_standby.len(),
            "{name}: each request redirected once to the active node"
        );
        assert!(at_active.iter().all(|r| r.status == 200), "{name}");
        assert!(
            !of_path(&at_active, RENEW).is_empty(),
            "{name}: renewed at the active node"
        );
    }
    // A second redirect is not followed.
    assert!(!active.requests_for(&twice).is_empty());
    assert!(
        third.requests_for(&twice).is_empty(),
        "the second hop was followed"
    );
    assert_eq!(
        s.renewals("twice", "failure"),
        s.failures("twice", "server_error")
    );
    // https -> http: never followed, the token is not sent in clear.
    assert!(!standby.requests_for(&downgrade).is_empty());
    assert!(
        active.requests_for(&downgrade).is_empty(),
        "followed a downgrade to http"
    );
    assert_eq!(
        s.renewals("downgrade", "failure"),
        s.failures("downgrade", "server_error")
    );

    let log = finish_without_leaks(
        &mut exporter,
        &[&followed, &twice, &https_to_https, &downgrade],
    );
    assert!(
        log_lines(
            &log,
            &["vault=downgrade ", "refused redirect from https to http"]
        )
        .len()
            >= 2,
        "the failure says why"
    );
}

// ---------------------------------------------------------------------------------------
// Garbage answers
// ---------------------------------------------------------------------------------------

/// Garbage bodies, each embedding the token so that an error text echoing the body would
/// leak it: (name, content type, body) for `data` (lookup) or `auth` (renew) answers.
fn garbage(token: &str, envelope: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let real = format!(
        r#"{{"request_id":"5a6c","lease_id":"","renewable":false,"lease_duration":0,"{envelope}":{{"client_token":"{token}","id":"{token}","ttl":60,"lease_duration":60,"renewable":true,"policies":["default"]}},"wrap_info":null,"warnings":null}}"#
    );
    let mut utf8 = format!(r#"{{"{envelope}":{{"id":"{token}"#).into_bytes();
    utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    utf8.extend_from_slice(br#"","ttl":60,"lease_duration":60,"renewable":true}}"#);
    let mut huge = real.clone().into_bytes();
    huge.truncate(huge.len() - 1);
    huge.extend_from_slice(format!(r#","pad":"{}"}}"#, "a".repeat(2 << 20)).as_bytes());
    vec![
        (
            "html",
            "text/html",
            format!("<html><body><h1>Vault</h1><p>{token}</p></body></html>").into_bytes(),
        ),
        (
            "truncated",
            "application/json",
            real.as_bytes()[..real.len() / 2 + 20].to_vec(),
        ),
        (
            "types",
            "application/json",
            format!(r#"{{"{envelope}":{{"id":"{token}","ttl":"{token}","lease_duration":"{token}","renewable":"{token}"}}}}"#).into_bytes(),
        ),
        (
            "missing",
            "application/json",
            format!(r#"{{"{envelope}":{{"id":"{token}","client_token":"{token}"}}}}"#).into_bytes(),
        ),
        ("huge", "application/json", huge),
        ("utf8", "application/json", utf8),
    ]
}

#[test]
fn garbage_answers_are_bad_responses_and_never_lose_the_token() {
    let vault = VaultDouble::start();
    let dir = temp_dir("faults-garbage-tokens");
    // On renew-self: 8 s tokens, garbage once they are renewing, cleared before expiry.
    // On lookup-self: 60 s tokens, garbage from the start.
    let mut renew_cases = Vec::new();
    let mut lookup_cases = Vec::new();
    let mut entries = Vec::new();
    let kinds = garbage("hvs.placeholder", "auth").len();
    for i in 0..kinds {
        let token = vault.add_token(TokenSpec::service(8));
        let (kind, content_type, body) = garbage(&token, "auth").swap_remove(i);
        let name = format!("renew_{kind}");
        entries.push(file_entry(
            &name,
            &vault.url(),
            &token_file(&dir, &name, &token),
            "",
        ));
        renew_cases.push((
            name,
            token,
            Fault::Body {
                status: 200,
                content_type: content_type.into(),
                body,
            },
        ));

        let token = vault.add_token(TokenSpec::service(60));
        let (kind, content_type, body) = garbage(&token, "data").swap_remove(i);
        vault.set_token_fault(
            &token,
            Fault::Body {
                status: 200,
                content_type: content_type.into(),
                body,
            },
        );
        let name = format!("lookup_{kind}");
        entries.push(file_entry(
            &name,
            &vault.url(),
            &token_file(&dir, &name, &token),
            "",
        ));
        lookup_cases.push((name, token));
    }
    let mut exporter = Exporter::with_config("faults-garbage", &config(&entries), TRACE);
    exporter.wait_for(Duration::from_secs(5), "renew_* looked up", |s| {
        renew_cases
            .iter()
            .all(|(name, _, _)| s.state(name).as_deref() == Some("renewing"))
    });
    for (_, token, fault) in &renew_cases {
        vault.set_token_fault(token, fault.clone());
    }
    let s = exporter.wait_for(Duration::from_secs(6), "a bad response each", |s| {
        renew_cases
            .iter()
            .map(|(name, _, _)| name)
            .chain(lookup_cases.iter().map(|(name, _)| name))
            .all(|name| s.failures(name, "bad_response") >= 1.0)
    });
    for (name, _, _) in &renew_cases {
        assert_eq!(
            s.renewals(name, "failure"),
            s.failures(name, "bad_response"),
            "{name}"
        );
        assert_eq!(
            s.state(name).as_deref(),
            Some("renewing"),
            "{name}: retrying\n{}",
            s.text
                .lines()
                .filter(|l| l.contains(&format!("\"{name}\"")) && !l.contains("bucket"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            s.of("vault_token_next_renewal_timestamp_seconds", name, &[])
                .is_some(),
            "{name}: a retry is scheduled"
        );
    }
    for (name, _) in &lookup_cases {
        assert_eq!(
            s.renewals(name, "failure"),
            s.failures(name, "bad_response"),
            "{name}"
        );
    }
    // Vault heals before the 8 s tokens expire: none is lost.
    for (_, token, _) in &renew_cases {
        vault.clear_token_fault(token);
    }
    for (_, token) in &lookup_cases {
        vault.clear_token_fault(token);
    }
    let healed = exporter.wait_for(Duration::from_secs(5), "renewed after the garbage", |s| {
        renew_cases
            .iter()
            .all(|(name, _, _)| s.renewals(name, "success") >= 1.0)
            && lookup_cases
                .iter()
                .all(|(name, _)| s.state(name).as_deref() == Some("renewing"))
    });
    for (name, token, _) in &renew_cases {
        assert_eq!(healed.state(name).as_deref(), Some("renewing"), "{name}");
        assert!(
            vault.token_ttl(token).is_some(),
            "{name}: the token is alive"
        );
    }
    let secrets: Vec<&str> = renew_cases
        .iter()
        .map(|(_, t, _)| t.as_str())
        .chain(lookup_cases.iter().map(|(_, t)| t.as_str()))
        .collect();
    let log = finish_without_leaks(&mut exporter, &secrets);
    assert!(!log.contains("panicked"), "{log}");
    let over = log_lines(&log, &["vault=renew_huge ", "reason=bad_response"]);
    assert!(over.iter().all(|l| l.contains("1 MiB")), "{over:?}");
}

// ---------------------------------------------------------------------------------------
// Dead tokens
// ---------------------------------------------------------------------------------------

#[test]
fn dead_tokens_cost_vault_nothing_and_a_new_token_resumes_within_5s() {
    let vault = VaultDouble::start();
    let unreachable = VaultDouble::start();
    let dir = temp_dir("faults-dead-tokens");
    // Revoked before the start: 403 at the start-up lookup, expiry never learnt.
    let invalid = vault.add_token(TokenSpec::service(60));
    vault.revoke(&invalid);
    // Revoked once renewing: 403 at its renewal (3.2-4 s), rechecked until its expiry.
    let revoked = vault.add_token(TokenSpec::service(8));
    // Max TTL = TTL: Vault counts whole seconds since issue, and the renewal comes at
    // >= 1.2 s, so at most 3 s are left of the 4 s max and the first renewal is capped.
    let capped = vault.add_token(TokenSpec::service(4).explicit_max_ttl(4));
    let not_renewable = vault.add_token(TokenSpec::service(4).renewable(false));
    let expired = unreachable.add_token(TokenSpec::service(4));
    let names = ["invalid", "revoked", "capped", "not_renewable", "expired"];
    let files: Vec<PathBuf> = names
        .iter()
        .zip([&invalid, &revoked, &capped, &not_renewable, &expired])
        .map(|(name, token)| token_file(&dir, name, token))
        .collect();
    let recheck = "    invalid_recheck_interval: 2s\n";
    let entries: Vec<String> = names
        .iter()
        .zip(&files)
        .map(|(name, file)| {
            let node = if *name == "expired" {
                &unreachable
            } else {
                &vault
            };
            file_entry(name, &node.url(), file, recheck)
        })
        .collect();
    let mut exporter = Exporter::with_config("faults-dead", &config(&entries), TRACE);
    exporter.wait_for(Duration::from_secs(5), "the start-up lookups", |s| {
        s.state("revoked").as_deref() == Some("renewing")
            && s.state("expired").as_deref() == Some("renewing")
    });
    vault.revoke(&revoked);
    unreachable.stop_listening();

    let s = exporter.wait_for(Duration::from_secs(10), "all five dead", |s| {
        s.state("invalid").as_deref() == Some("invalid")
            && ["revoked", "capped", "not_renewable", "expired"]
                .iter()
                .all(|name| s.state(name).as_deref() == Some("expired"))
    });
    unreachable.resume_listening();
    let watched_from = SystemTime::now();
    for name in names {
        assert_eq!(s.of("vault_token_renewing", name, &[]), Some(0.0), "{name}");
        assert_eq!(
            s.of("vault_token_next_renewal_timestamp_seconds", name, &[]),
            None,
            "{name}: nothing scheduled"
        );
    }
    assert_eq!(s.of("vault_token_capped", "capped", &[]), Some(1.0));
    assert_eq!(s.renewals("not_renewable", "not_renewable"), 1.0);
    assert!(s.failures("expired", "network") >= 1.0);
    assert!(s.failures("revoked", "permission_denied") >= 1.0);
    // Watch what each costs Vault for 4 s more.
    std::thread::sleep(Duration::from_secs(4));
    let watched = secs_between(watched_from, SystemTime::now());

    // 403 at start: only lookups, one per recheck interval at most, and they go on.
    let inv = vault.requests_for(&invalid);
    assert!(inv.iter().all(|r| r.path == LOOKUP && r.status == 403));
    let span = secs_between(inv[0].at, SystemTime::now());
    let inv_gaps = gaps(&of_path(&inv, LOOKUP));
    assert!(
        (inv.len() as f64) <= span / 2.0 + 1.0 && inv.len() >= 4,
        "{} lookups in {span:.1}s with a 2 s recheck interval",
        inv.len()
    );
    assert!(inv_gaps.iter().all(|g| *g >= 1.95), "{inv_gaps:?}");
    assert_eq!(
        s.failures("invalid", "permission_denied"),
        s.renewals("invalid", "failure")
    );
    // 403 at renewal: never renewed again; rechecked every 2 s until its expiry, then nothing.
    let rev = vault.requests_for(&revoked);
    let denied_at = rev.iter().position(|r| r.status == 403).expect("a 403");
    assert_eq!(rev[denied_at].path, RENEW, "the renewal met the 403");
    let rechecks: Vec<&RequestRecord> = rev[denied_at..].iter().collect();
    assert!(
        rechecks[1..]
            .iter()
            .all(|r| r.path == LOOKUP && r.status == 403),
        "after a 403 only lookups: {:?}",
        paths(&rev)
    );
    let rev_gaps = gaps(&rechecks);
    assert!(rev_gaps.iter().all(|g| *g >= 1.95), "{rev_gaps:?}");
    let revoked_expiry = rev[0].at + Duration::from_secs(8);
    assert!(
        rev.iter().all(|r| r.at <= revoked_expiry),
        "no request after the expiry: {:?}",
        rev.iter()
            .map(|r| secs_between(rev[0].at, r.at))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        paths(&vault.requests_for(&capped)),
        [LOOKUP, RENEW],
        "capped: nothing after the capped renewal"
    );
    assert_eq!(
        paths(&vault.requests_for(&not_renewable)),
        [LOOKUP],
        "not renewable: never renewed"
    );
    assert_eq!(
        paths(&unreachable.requests_for(&expired)),
        [LOOKUP],
        "expired: nothing once Vault was back ({watched:.1}s)"
    );
    println!(
        "dead: invalid {} lookups in {span:.1}s, gaps {inv_gaps:.2?}; revoked: 403 on renewal then {} lookups, gaps {rev_gaps:.2?}; capped, not renewable, expired: 0 requests in {watched:.1}s",
        inv.len(),
        rechecks.len() - 1
    );

    // A new token in each file: renewal resumes within 5 s.
    let mut fresh = Vec::new();
    for (name, file) in names.iter().zip(&files) {
        let node = if *name == "expired" {
            &unreachable
        } else {
            &vault
        };
        let token = node.add_token(TokenSpec::service(8));
        let written = SystemTime::now();
        write_token(file, &format!("{token}\n"));
        wait_until(
            Duration::from_secs(5),
            &format!("{name}: the new token looked up"),
            || !node.requests_for(&token).is_empty(),
        );
        let took = secs_between(written, node.requests_for(&token)[0].at);
        println!("dead: {name} resumed {took:.2}s after the new token was written");
        fresh.push(token);
    }
    exporter.wait_for(Duration::from_secs(2), "all renewing again", |s| {
        names
            .iter()
            .all(|name| s.state(name).as_deref() == Some("renewing"))
    });
    let mut secrets = vec![
        invalid.as_str(),
        &revoked,
        &capped,
        &not_renewable,
        &expired,
    ];
    secrets.extend(fresh.iter().map(String::as_str));
    let log = finish_without_leaks(&mut exporter, &secrets);
    for name in ["invalid", "revoked", "capped", "expired"] {
        assert!(
            !log_lines(&log, &[&format!("vault={name}"), "rotate the token"]).is_empty(),
            "{name}: the log says to rotate the token"
        );
    }
    let warn = log_lines(&log, &[" WARN ", "vault=not_renewable", "rotate the token"]);
    assert_eq!(warn.len(), 1, "one WARN for the non-renewable token");
}

// ---------------------------------------------------------------------------------------
// Token files
// ---------------------------------------------------------------------------------------

#[test]
fn broken_token_files_are_token_source_failures_until_fixed() {
    let vault = VaultDouble::start();
    let dir = temp_dir("faults-files-tokens");
    let missing = dir.join("missing");
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    let blank = dir.join("blank");
    std::fs::write(&blank, "  \n\t \n").unwrap();
    // Unreadable even for root, which the tests run as: a directory where the file should be.
    let unreadable = dir.join("unreadable");
    std::fs::create_dir_all(&unreadable).unwrap();
    let binary = dir.join("binary");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let cases = [
        ("missing", &missing),
        ("empty", &empty),
        ("blank", &blank),
        ("unreadable", &unreadable),
        ("binary", &binary),
    ];
    let entries: Vec<String> = cases
        .iter()
        .map(|(name, file)| file_entry(name, &vault.url(), file, ""))
        .collect();
    let mut exporter = Exporter::with_config("faults-files", &config(&entries), TRACE);
    let s = exporter.wait_for(
        Duration::from_secs(6),
        "retried token source failures",
        |s| {
            cases
                .iter()
                .all(|(name, _)| s.failures(name, "token_source") >= 2.0)
        },
    );
    for (name, _) in &cases {
        assert_eq!(
            s.renewals(name, "failure"),
            s.failures(name, "token_source"),
            "{name}"
        );
        assert_eq!(s.state(name).as_deref(), Some("unknown"), "{name}");
    }
    assert!(
        token_requests(&vault).is_empty(),
        "no token, no request to Vault"
    );
    assert_eq!(exporter.get("/-/healthy").0, 200, "the exporter serves");

    // Fix each file (the directory goes, a file takes its place): renewal within 5 s.
    let mut tokens = Vec::new();
    for (name, file) in &cases {
        let token = vault.add_token(TokenSpec::service(8));
        let written = SystemTime::now();
        if file.is_dir() {
            std::fs::remove_dir(file).unwrap();
        }
        write_token(file, &token);
        wait_until(
            Duration::from_secs(5),
            &format!("{name}: looked up"),
            || !vault.requests_for(&token).is_empty(),
        );
        let took = secs_between(written, vault.requests_for(&token)[0].at);
        println!("files: {name} fixed, looked up {took:.2}s later");
        tokens.push(token);
    }
    exporter.wait_for(Duration::from_secs(2), "all renewing", |s| {
        cases
            .iter()
            .all(|(name, _)| s.state(name).as_deref() == Some("renewing"))
    });
    let secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let log = finish_without_leaks(&mut exporter, &secrets);
    for (name, _) in &cases {
        assert!(failure_lines(&log, name, "token_source") >= 2, "{name}");
    }
    let line = log_lines(&log, &["vault=unreadable ", "reason=token_source"])[0];
    assert!(line.contains("cannot read token file"), "{line}");
}

#[test]
fn a_token_replaced_by_rename_or_in_place_is_picked_up_within_5s() {
    let vault = VaultDouble::start();
    let dir = temp_dir("faults-replace-tokens");
    let first = [
        vault.add_token(TokenSpec::service(8)),
        vault.add_token(TokenSpec::service(8)),
    ];
    let renamed = token_file(&dir, "renamed", &first[0]);
    let in_place = token_file(&dir, "in_place", &first[1]);
    let entries = [
        file_entry("renamed", &vault.url(), &renamed, ""),
        file_entry("in_place", &vault.url(), &in_place, ""),
    ];
    let mut exporter = Exporter::with_config("faults-replace", &config(&entries), TRACE);
    exporter.wait_for(Duration::from_secs(5), "both renewing", |s| {
        s.state("renamed").as_deref() == Some("renewing")
            && s.state("in_place").as_deref() == Some("renewing")
    });
    let atomic = |file: &Path, content: &str| {
        let tmp = file.with_extension("tmp");
        write_token(&tmp, content);
        std::fs::rename(&tmp, file).unwrap();
    };
    let in_place_write = |file: &Path, content: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(file)
            .unwrap();
        f.write_all(content.as_bytes()).unwrap();
    };
    let mut all = first.to_vec();
    // Each file is replaced twice, both ways, with and without a trailing newline.
    let steps: [(&str, &Path, bool, &str); 4] = [
        ("renamed", &renamed, true, "\n"),
        ("in_place", &in_place, false, ""),
        ("renamed", &renamed, false, ""),
        ("in_place", &in_place, true, "\n"),
    ];
    for (name, file, rename, newline) in steps {
        let token = vault.add_token(TokenSpec::service(4));
        let written = SystemTime::now();
        if rename {
            atomic(file, &format!("{token}{newline}"));
        } else {
            in_place_write(file, &format!("{token}{newline}"));
        }
        wait_until(
            Duration::from_secs(5),
            &format!("{name}: new token looked up"),
            || !vault.requests_for(&token).is_empty(),
        );
        let took = secs_between(written, vault.requests_for(&token)[0].at);
        println!(
            "replace: {name} {} -> looked up {took:.2}s later",
            if rename {
                "renamed over"
            } else {
                "rewritten in place"
            }
        );
        all.push(token);
    }
    // The last token of each file is renewed (4 s lease: at 1.6-2 s); no older token is
    // used after its successor was looked up.
    let last = [all[all.len() - 2].clone(), all[all.len() - 1].clone()];
    wait_until(Duration::from_secs(4), "the new tokens renewed", || {
        last.iter()
            .all(|t| !of_path(&vault.requests_for(t), RENEW).is_empty())
    });
    let records = vault.requests();
    let first_use = |t: &str| {
        records
            .iter()
            .find(|r| r.token.as_deref() == Some(t))
            .map(|r| r.at)
    };
    let last_use = |t: &str| {
        records
            .iter()
            .rev()
            .find(|r| r.token.as_deref() == Some(t))
            .map(|r| r.at)
    };
    // Per file, in order of use: first[0] -> all[2] -> all[4]; first[1] -> all[3] -> all[5].
    for chain in [[&all[0], &all[2], &all[4]], [&all[1], &all[3], &all[5]]] {
        for pair in chain.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            let (old_last, new_first) = (last_use(old).unwrap(), first_use(new).unwrap());
            assert!(
                old_last <= new_first,
                "the old token was used {:.2}s after the new one",
                secs_between(new_first, old_last)
            );
        }
    }
    let secrets: Vec<&str> = all.iter().map(String::as_str).collect();
    finish_without_leaks(&mut exporter, &secrets);
}

#[test]
fn a_token_file_deleted_while_renewing_keeps_the_token_in_memory() {
    let vault = VaultDouble::start();
    let dir = temp_dir("faults-deleted-tokens");
    let token = vault.add_token(TokenSpec::service(4));
    let file = token_file(&dir, "token", &token);
    let mut exporter = Exporter::with_config(
        "faults-deleted",
        &config(&[file_entry("v", &vault.url(), &file, "")]),
        TRACE,
    );
    exporter.wait_for(Duration::from_secs(5), "renewing", |s| {
        s.state("v").as_deref() == Some("renewing")
    });
    std::fs::remove_file(&file).unwrap();
    let deleted = SystemTime::now();
    // 4 s leases renewed every 1.6-2 s: three renewals with the token in memory.
    wait_until(
        Duration::from_secs(9),
        "three renewals after the deletion",
        || {
            of_path(&vault.requests_for(&token), RENEW)
                .iter()
                .filter(|r| r.at > deleted && r.status == 200)
                .count()
                >= 3
        },
    );
    let s = exporter.scrape();
    assert_eq!(s.state("v").as_deref(), Some("renewing"));
    assert_eq!(
        s.failures("v", "token_source"),
        0.0,
        "no failure: the token is in memory"
    );
    assert_eq!(s.renewals("v", "failure"), 0.0);
    let log = exporter.log();
    let warnings = log_lines(&log, &[" WARN ", "vault=v", "in memory"]);
    assert_eq!(warnings.len(), 1, "WARN once: {warnings:?}");

    // The file comes back with a new token: picked up within 5 s.
    let next = vault.add_token(TokenSpec::service(4));
    let written = SystemTime::now();
    write_token(&file, &next);
    wait_until(
        Duration::from_secs(5),
        "the returned file's token looked up",
        || !vault.requests_for(&next).is_empty(),
    );
    println!(
        "deleted: file back, new token looked up {:.2}s later",
        secs_between(written, vault.requests_for(&next)[0].at)
    );
    wait_until(Duration::from_secs(4), "the returned token renewed", || {
        !of_path(&vault.requests_for(&next), RENEW).is_empty()
    });
    let old_last = vault.requests_for(&token).last().unwrap().at;
    assert!(
        old_last <= vault.requests_for(&next)[0].at,
        "the old token is no longer used"
    );
    let log = finish_without_leaks(&mut exporter, &[&token, &next]);
    assert_eq!(
        log_lines(&log, &[" WARN ", "vault=v", "in memory"]).len(),
        1
    );
}
