//! The token never leaks: not in a log line at any level (trace included), not in an
//! error, not in `/metrics`, not in `/proc/PID/cmdline`, even when Vault or a proxy echoes
//! it back or an operator pastes it in the wrong place.
//!
//! Assertion messages here never print a token: they name where it leaked.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vault_double::{Fault, TokenSpec, VaultDouble};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The secret part of a token (`hvs.` and `hvb.` prefixes are public knowledge).
fn secret_part(token: &str) -> &str {
    token.split_once('.').map_or(token, |(_, rest)| rest)
}

/// Panics, without printing the token, if `text` holds it (or its secret part).
fn assert_no_token(text: &str, token: &str, place: &str) {
    assert!(
        !text.contains(secret_part(token)),
        "a token leaked into {place} ({} bytes checked)",
        text.len()
    );
}

fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// What lookup-self says of `token`, asked directly: (accessor, id).
fn lookup(vault: &VaultDouble, token: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(vault.addr()).unwrap();
    stream.set_read_timeout(Some(secs(5.0))).unwrap();
    write!(
        stream,
        "GET /v1/auth/token/lookup-self HTTP/1.1\r\nHost: vault\r\nX-Vault-Token: {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    write_token(&tmp, content);
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn the_token_never_leaks_at_trace_level_even_when_vault_echoes_it() {
    let vault = VaultDouble::start();
    let first = vault.add_token(TokenSpec::service(30));
    // A proxy error page and a Vault error that both echo the token, then a body with
    // the token beside a field of the wrong type.
    vault.set_token_fault(
        &first,
        Fault::error(500, &format!("upstream rejected X-Vault-Token {first}")),
    );
    let dir = temp_dir("trace");
    let file = dir.join("token");
    write_token(&file, &format!("{first}\n"));
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!("vaults:\n{}", file_entry("prod", &vault.url(), &file, "")),
    )
    .unwrap();
    let exporter = Exporter::start_in(
        dir,
        &[
            format!("--config.file={}", config.display()),
            "--log.level=trace".into(),
        ],
        &[],
    );
    exporter.wait_for(secs(5.0), "a server_error", |s| {
        s.failures("prod", "server_error") >= 1.0
    });
    vault.set_token_fault(
        &first,
        Fault::Body {
            status: 200,
            content_type: "application/json".into(),
            body: format!(r#"{{"data":{{"id":"{first}","ttl":"{first}","policies":"{first}"}}}}"#)
                .into_bytes(),
        },
    );
    exporter.wait_for(secs(5.0), "a bad_response", |s| {
        s.failures("prod", "bad_response") >= 1.0
    });
    vault.set_token_fault(
        &first,
        Fault::Body {
            status: 502,
            content_type: "text/html".into(),
            body: format!("<html><pre>X-Vault-Token: {first}</pre></html>").into_bytes(),
        },
    );
    exporter.wait_for(secs(5.0), "a server_error for the HTML page", |s| {
        s.failures("prod", "server_error") >= 2.0
    });
    vault.clear_token_fault(&first);
    exporter.wait_for(secs(5.0), "renewing once Vault answers", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    // A new token, renewed (the renew-self path at trace level) ...
    let second = vault.add_token(TokenSpec::service(6));
    write_atomically(&file, &second);
    exporter.wait_for(secs(6.0), "a renewal of the new token", |s| {
        s.renewals("prod", "success") >= 1.0
    });
    // ... then a revoked one: a 403.
    let third = vault.add_token(TokenSpec::service(6));
    vault.revoke(&third);
    write_token(&file, &third);
    let s = exporter.wait_for(secs(5.0), "state invalid", |s| {
        s.state("prod").as_deref() == Some("invalid")
    });
    let log = exporter.log();
    assert!(
        log.contains(" TRACE ") || log.contains(" DEBUG "),
        "verbose logging is on"
    );

    let info = lookup(&vault, &second);
    let accessor = info["data"]["accessor"].as_str().unwrap().to_owned();
    assert!(!accessor.is_empty());
    let metrics = s.text.clone() + &exporter.scrape().text;
    let log = exporter.log() + &exporter.stdout();
    let cmd = cmdline(exporter.pid());
    for token in [&first, &second, &third] {
        assert_no_token(&log, token, "the log");
        assert_no_token(&metrics, token, "/metrics");
        assert_no_token(&cmd, token, "/proc/PID/cmdline");
    }
    assert!(
        !metrics.contains(&accessor),
        "the accessor leaked into /metrics"
    );
    assert!(!log.contains(&accessor), "the accessor leaked into the log");
    // The errors were logged, just without the token.
    assert!(log.contains("reason=server_error"));
    assert!(log.contains("reason=bad_response"));
    assert!(log.contains("reason=permission_denied"));
}

#[test]
fn an_env_token_never_leaks_at_trace_level() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(4));
    let home = temp_dir("env-trace");
    let home_str = home.to_str().unwrap().to_owned();
    let url = vault.url();
    let exporter = Exporter::start_in(
        home,
        &["--log.level=trace".into()],
        &[
            ("VAULT_ADDR", url.as_str()),
            ("VAULT_TOKEN", token.as_str()),
            ("HOME", home_str.as_str()),
        ],
    );
    let s = exporter.wait_for(secs(6.0), "a renewal", |s| {
        s.renewals("default", "success") >= 1.0
    });
    vault.stop_listening();
    exporter.wait_for(secs(6.0), "a network failure", |s| {
        s.failures("default", "network") >= 1.0
    });
    assert_no_token(&exporter.log(), &token, "the log");
    assert_no_token(&exporter.stdout(), &token, "stdout");
    assert_no_token(&s.text, &token, "/metrics");
    assert_no_token(&exporter.scrape().text, &token, "/metrics");
    assert_no_token(&cmdline(exporter.pid()), &token, "/proc/PID/cmdline");
}

#[test]
fn no_rust_log_directive_lets_the_token_out() {
    let vault = VaultDouble::start();
    let url = vault.url();
    // ureq logs each request's header block at debug level in `ureq::unit`; the more
    // specific directives are the ones a cap on `ureq` alone would lose to.
    for directive in [
        "ureq::unit=debug",
        "ureq=trace",
        "trace",
        "debug,ureq::unit=trace",
        "info,ureq::unit::x=trace,ureq::unit=trace",
    ] {
        let token = vault.add_token(TokenSpec::service(30));
        let home = temp_dir("rust-log");
        let home_str = home.to_str().unwrap().to_owned();
        let exporter = Exporter::start_in(
            home,
            &[],
            &[
                ("VAULT_ADDR", url.as_str()),
                ("VAULT_TOKEN", token.as_str()),
                ("HOME", home_str.as_str()),
                ("RUST_LOG", directive),
            ],
        );
        exporter.wait_for(secs(6.0), "a lookup", |s| {
            s.of("vault_token_ttl_seconds", "default", &[]).is_some()
        });
        let log = exporter.log();
        assert!(
            log.lines().count() >= 2,
            "{directive}: the exporter logged nothing"
        );
        assert_no_token(&log, &token, directive);
    }
}

#[test]
fn a_token_pasted_into_the_config_is_never_echoed() {
    let token = "hvs.CAJpastedByMistakeQ9xZ7";
    let dir = temp_dir("pasted");
    let cases = [
        (
            "token-key",
            format!("vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token: {token}\n"),
            "token",
        ),
        (
            "token-env-value",
            format!("vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token_env: {token}\n"),
            "token_env",
        ),
    ];
    for (name, yaml, key) in cases {
        let path = dir.join(format!("{name}.yml"));
        std::fs::write(&path, yaml).unwrap();
        let (code, stdout, stderr) = run_to_exit(
            &[
                &format!("--config.file={}", path.display()),
                "--web.listen-address=127.0.0.1:0",
            ],
            &[],
        );
        assert_eq!(code, 2, "{name}: exit 2");
        assert!(stderr.contains(key), "{name}: the message names {key}");
        assert_no_token(&stderr, token, &format!("the {name} error"));
        assert_no_token(&stdout, token, &format!("the {name} output"));
    }
}

#[test]
fn a_malformed_token_file_never_leaks_its_content() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let other = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("malformed-file");
    let file = dir.join("token");
    // Two tokens on two lines: no valid header value, and no guessing which one is meant.
    write_token(&file, &format!("{token}\n{other}\n"));
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!("vaults:\n{}", file_entry("prod", &vault.url(), &file, "")),
    )
    .unwrap();
    let exporter = Exporter::start_in(
        dir,
        &[
            format!("--config.file={}", config.display()),
            "--log.level=trace".into(),
        ],
        &[],
    );
    let started = Instant::now();
    let s = exporter.wait_for(secs(5.0), "a token_source failure", |s| {
        s.failures("prod", "token_source") >= 1.0
    });
    assert_eq!(s.state("prod").as_deref(), Some("unknown"));
    assert!(
        token_requests(&vault).is_empty(),
        "no malformed token is sent to Vault"
    );
    assert!(started.elapsed() < secs(5.0));
    let log = exporter.log();
    assert_no_token(&log, &token, "the log");
    assert_no_token(&log, &other, "the log");
    assert_no_token(&exporter.scrape().text, &token, "/metrics");
    // Fixed in place, it is picked up.
    write_token(&file, &token);
    exporter.wait_for(secs(5.0), "renewing once the file holds one token", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert_no_token(&exporter.log(), &token, "the log");
}
