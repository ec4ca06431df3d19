//! Black-box tests of the command line, the config file, env mode, the HTTP endpoints,
//! collectors switching and signals: the real binary, exit codes and messages.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use vault_double::{Fault, TokenSpec, VaultDouble};

const LOOKUP: &str = "/v1/auth/token/lookup-self";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Writes `yaml` as `config.yml` in a fresh directory; returns its path.
fn config(name: &str, yaml: &str) -> PathBuf {
    let dir = temp_dir(name);
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn config_arg(path: &Path) -> String {
    format!("--config.file={}", path.display())
}

/// Runs with `yaml` as the config and expects `code`; returns stderr.
fn exits_with(name: &str, yaml: &str, extra: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let path = config(name, yaml);
    let mut args = vec![config_arg(&path)];
    if !extra.iter().any(|a| a.starts_with("--web.listen-address")) {
        args.push("--web.listen-address=127.0.0.1:0".into());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, _, stderr) = run_to_exit(&args, env);
    assert_eq!(status, code, "{name}: exit status; stderr:\n{stderr}");
    assert!(
        !stderr.contains("listening on"),
        "{name}: nothing starts half-configured:\n{stderr}"
    );
    stderr
}

/// An invalid config: exit 2 with one message naming `key` and the file.
fn config_error(name: &str, yaml: &str, key: &str) {
    let path = config(name, yaml);
    let stderr = exits_with(name, yaml, &[], &[], 2);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{name}: one message:\n{stderr}");
    assert!(lines[0].contains(key), "{name}: names {key:?}: {stderr}");
    assert!(
        lines[0].contains(path.to_str().unwrap()),
        "{name}: names the file: {stderr}"
    );
}

#[test]
fn an_unknown_key_exits_2_naming_the_key_and_the_file() {
    config_error(
        "unknown-key",
        "vaults:\n  - name: prod\n    adress: http://127.0.0.1:8200\n    token_file: /run/token\n",
        "adress",
    );
    config_error(
        "unknown-tls-key",
        "vaults:\n  - name: prod\n    address: https://127.0.0.1:8200\n    token_file: /run/token\n    tls:\n      ca_flie: /ca.pem\n",
        "ca_flie",
    );
    config_error(
        "unknown-top-key",
        "vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token_file: /run/token\nrenew_fraction: 0.5\n",
        "renew_fraction",
    );
}

#[test]
fn every_invalid_config_exits_2_naming_the_key_and_the_file() {
    let cases = [
        (
            "duplicate",
            "vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token_file: /a\n  - name: prod\n    address: http://127.0.0.1:8201\n    token_file: /b\n",
            "prod",
        ),
        (
            "no-address",
            "vaults:\n  - name: prod\n    token_file: /run/token\n",
            "address",
        ),
        (
            "no-source",
            "vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n",
            "token_file",
        ),
        (
            "both-sources",
            "vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token_file: /a\n    token_env: VTE_TEST_TOKEN\n",
            "token_env",
        ),
        (
            "no-name",
            "vaults:\n  - address: http://127.0.0.1:8200\n    token_file: /a\n",
            "name",
        ),
        (
            "cert-without-key",
            "vaults:\n  - name: prod\n    address: https://127.0.0.1:8200\n    token_file: /a\n    tls:\n      cert_file: /client.pem\n",
            "key_file",
        ),
        (
            "bad-duration",
            "vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token_file: /a\n    max_backoff: forever\n",
            "max_backoff",
        ),
        (
            "no-vaults",
            "vaults: []\n",
            "vaults",
        ),
        (
            "not-yaml",
            "vaults: [\n",
            "config",
        ),
    ];
    for (name, yaml, key) in cases {
        config_error(name, yaml, key);
    }
    let duplicate = exits_with("duplicate-again", cases[0].1, &[], &[], 2);
    assert!(duplicate.contains("duplicate"), "{duplicate}");
}

#[test]
fn an_unset_token_env_exits_2_naming_the_variable() {
    let yaml = "vaults:\n  - name: prod\n    address: http://127.0.0.1:8200\n    token_env: VTE_SURELY_UNSET_TOKEN\n";
    config_error("unset-env", yaml, "VTE_SURELY_UNSET_TOKEN");
    // Set, it is fine: the exporter starts.
    let dir = temp_dir("set-env");
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let exporter = Exporter::start_in(
        dir,
        &[config_arg(&path)],
        &[("VTE_SURELY_UNSET_TOKEN", "hvs.not-a-real-token")],
    );
    assert!(exporter.scrape().state("prod").is_some());
}

#[test]
fn a_missing_config_file_exits_2() {
    let dir = temp_dir("missing-config");
    let path = dir.join("nope.yml");
    let (code, _, stderr) = run_to_exit(
        &[&config_arg(&path), "--web.listen-address=127.0.0.1:0"],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
}

#[test]
fn a_listen_address_in_use_exits_1_with_a_clear_message() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("in-use");
    let yaml = file_entry("prod", "http://127.0.0.1:1", &dir.join("token"), "");
    let stderr = exits_with(
        "in-use",
        &format!("vaults:\n{yaml}"),
        &[&format!("--web.listen-address={addr}")],
        &[],
        1,
    );
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(
        stderr.to_lowercase().contains("in use"),
        "says why: {stderr}"
    );
}

#[test]
fn an_invalid_web_config_exits_2() {
    let dir = temp_dir("web-config");
    let yaml = format!(
        "vaults:\n{}",
        file_entry("prod", "http://127.0.0.1:1", &dir.join("token"), "")
    );
    let cases = [
        (
            "web-unknown",
            "basic_auth_user:\n  admin: x\n",
            "basic_auth_user",
        ),
        (
            "web-hash",
            "basic_auth_users:\n  admin: plaintext\n",
            "admin",
        ),
        ("web-yaml", "tls_server_config: [\n", "web"),
    ];
    for (name, web, key) in cases {
        let web_path = dir.join(format!("{name}.yml"));
        std::fs::write(&web_path, web).unwrap();
        let stderr = exits_with(
            name,
            &yaml,
            &[&format!("--web.config.file={}", web_path.display())],
            &[],
            2,
        );
        assert!(stderr.contains(key), "{name}: names {key:?}: {stderr}");
        assert!(
            stderr.contains(web_path.to_str().unwrap()),
            "{name}: names the file: {stderr}"
        );
    }
    let missing = dir.join("missing-web.yml");
    exits_with(
        "web-missing",
        &yaml,
        &[&format!("--web.config.file={}", missing.display())],
        &[],
        2,
    );
}

#[test]
fn version_and_help_exit_0() {
    let (code, stdout, _) = run_to_exit(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    let (code, stdout, _) = run_to_exit(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--config.file",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.config.file",
        "--log.level",
        "--demo",
        "--collector.token",
        "--no-collector.process",
        "--version",
    ] {
        assert!(stdout.contains(flag), "--help lists {flag}");
    }
    let (code, _, stderr) = run_to_exit(&["--no-such-flag"], &[]);
    assert_eq!(code, 2, "a usage error: {stderr}");
    let (code, _, stderr) = run_to_exit(&["--log.level=loud"], &[]);
    assert_eq!(code, 2, "a bad log level: {stderr}");
}

/// A GET returning (status, head, body).
fn fetch(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, secs(5.0)).unwrap();
    stream.set_read_timeout(Some(secs(10.0))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

fn idle_exporter(name: &str, args: &[&str]) -> Exporter {
    let dir = temp_dir(name);
    let yaml = format!(
        "vaults:\n{}",
        file_entry("prod", "http://127.0.0.1:1", &dir.join("token"), "")
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let mut all = vec![config_arg(&path)];
    all.extend(args.iter().map(|a| a.to_string()));
    Exporter::start_in(dir, &all, &[])
}

#[test]
fn landing_page_health_readiness_metrics_and_404() {
    let exporter = idle_exporter("endpoints", &[]);
    let (status, head, body) = fetch(exporter.addr, "/");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        body.contains("href=\"/metrics\""),
        "links to the metrics: {body}"
    );
    assert_eq!(fetch(exporter.addr, "/-/healthy").0, 200);
    assert_eq!(fetch(exporter.addr, "/-/ready").0, 200);
    let (status, head, body) = fetch(exporter.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "the text exposition format: {head}"
    );
    assert!(body.contains("vault_token_state{"));
    assert!(body.contains("# TYPE vault_token_renewals_total counter"));
    assert_eq!(fetch(exporter.addr, "/nope").0, 404);
    assert_eq!(fetch(exporter.addr, "/metrics/extra").0, 404);
    // A query string does not change the path.
    assert_eq!(fetch(exporter.addr, "/metrics?x=1").0, 200);
}

#[test]
fn a_port_only_listen_address_serves_every_interface() {
    let exporter = idle_exporter("all-interfaces", &["--web.listen-address=:0"]);
    assert!(
        exporter.addr.ip().is_unspecified(),
        "bound {}",
        exporter.addr
    );
    assert_ne!(exporter.addr.port(), 0, "the log gives the real port");
    let loopback = SocketAddr::from(([127, 0, 0, 1], exporter.addr.port()));
    assert_eq!(fetch(loopback, "/-/healthy").0, 200);
}

#[test]
fn the_telemetry_path_moves_the_metrics() {
    let exporter = idle_exporter("telemetry-path", &["--web.telemetry-path=/custom/metrics"]);
    let (status, _, body) = fetch(exporter.addr, "/custom/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("vault_token_renewals_total{"));
    assert_eq!(fetch(exporter.addr, "/metrics").0, 404);
    let (_, _, landing) = fetch(exporter.addr, "/");
    assert!(landing.contains("href=\"/custom/metrics\""), "{landing}");
}

#[test]
fn collectors_are_switched_by_flags() {
    let default = idle_exporter("collectors-default", &[]);
    let s = default.scrape();
    for collector in ["token", "exporter", "process"] {
        assert_eq!(
            s.value(
                "vault_token_exporter_collector_success",
                &[("collector", collector)]
            ),
            Some(1.0),
            "{collector}"
        );
        assert!(s
            .value(
                "vault_token_exporter_collector_duration_seconds",
                &[("collector", collector)]
            )
            .is_some());
    }
    assert!(s.samples.iter().any(|x| x.name.starts_with("process_")));
    assert!(s.value("vault_token_exporter_build_info", &[]).is_some());

    let no_process = idle_exporter("collectors-no-process", &["--no-collector.process"]);
    let s = no_process.scrape();
    assert!(
        !s.samples.iter().any(|x| x.name.starts_with("process_")),
        "no process_* series"
    );
    assert!(s
        .value(
            "vault_token_exporter_collector_success",
            &[("collector", "process")]
        )
        .is_none());
    assert!(s
        .value(
            "vault_token_exporter_collector_duration_seconds",
            &[("collector", "process")]
        )
        .is_none());
    assert_eq!(
        s.value(
            "vault_token_exporter_collector_success",
            &[("collector", "token")]
        ),
        Some(1.0)
    );
    assert!(s.state("prod").is_some());

    let no_token = idle_exporter("collectors-no-token", &["--no-collector.token"]);
    let s = no_token.scrape();
    assert!(!s.samples.iter().any(
        |x| x.name.starts_with("vault_token_") && !x.name.starts_with("vault_token_exporter_")
    ));
    assert!(s.value("vault_token_exporter_build_info", &[]).is_some());
}

/// A config entry whose requests may hang for `timeout`.
fn entry_with_timeout(name: &str, address: &str, token_file: &Path, timeout: &str) -> String {
    format!(
        "vaults:\n  - name: {name}\n    address: {address}\n    token_file: {}\n    timeout: {timeout}\n",
        token_file.display()
    )
}

fn exits_fast_on(signal: &str) {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    vault.set_fault(Fault::Hang);
    let dir = temp_dir(&format!("signal-{signal}"));
    let file = dir.join("token");
    write_token(&file, &token);
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        entry_with_timeout("prod", &vault.url(), &file, "60s"),
    )
    .unwrap();
    let mut exporter = Exporter::start_in(dir, &[config_arg(&path)], &[]);
    let deadline = Instant::now() + secs(5.0);
    while vault.requests_for(&token).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the lookup never reached the double"
        );
        std::thread::sleep(secs(0.02));
    }
    assert_eq!(vault.requests_for(&token)[0].path, LOOKUP);
    // The worker now hangs in its lookup; the server still answers.
    assert_eq!(exporter.scrape().state("prod").as_deref(), Some("unknown"));
    let (status, took) = exporter.signal_and_wait(signal, secs(5.0));
    assert_eq!(status.code(), Some(0), "SIG{signal} exits 0");
    assert!(took < secs(0.2), "SIG{signal} took {took:?}");
}

#[test]
fn sigterm_exits_0_within_200ms_while_vault_hangs() {
    exits_fast_on("TERM");
}

#[test]
fn sigint_exits_0_within_200ms_while_vault_hangs() {
    exits_fast_on("INT");
}

#[test]
fn env_mode_watches_vault_token_as_default() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let other = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("env-token");
    // VAULT_TOKEN wins over ~/.vault-token, as in the Vault CLI.
    write_token(&dir.join(".vault-token"), &other);
    let home = dir.to_str().unwrap().to_owned();
    let url = vault.url();
    let exporter = Exporter::start_in(
        dir,
        &[],
        &[
            ("VAULT_ADDR", url.as_str()),
            ("VAULT_TOKEN", token.as_str()),
            ("VAULT_NAMESPACE", "team-env"),
            ("HOME", home.as_str()),
        ],
    );
    let s = exporter.wait_for(secs(5.0), "the default token renewing", |s| {
        s.state("default").as_deref() == Some("renewing")
    });
    assert!(s
        .samples
        .iter()
        .filter(|x| x.name == "vault_token_state")
        .all(|x| x.labels["vault"] == "default"));
    let seen = vault.requests_for(&token);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].namespace.as_deref(),
        Some("team-env"),
        "VAULT_NAMESPACE is sent"
    );
    assert!(
        vault.requests_for(&other).is_empty(),
        "VAULT_TOKEN wins over ~/.vault-token"
    );
}

#[test]
fn env_mode_reads_and_watches_the_token_helper_file() {
    let vault = VaultDouble::start();
    let first = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("env-home");
    let helper = dir.join(".vault-token");
    write_token(&helper, &format!("{first}\n"));
    let home = dir.to_str().unwrap().to_owned();
    let url = vault.url();
    let exporter = Exporter::start_in(
        dir,
        &[],
        &[("VAULT_ADDR", url.as_str()), ("HOME", home.as_str())],
    );
    exporter.wait_for(secs(5.0), "the ~/.vault-token token renewing", |s| {
        s.state("default").as_deref() == Some("renewing")
    });
    assert_eq!(vault.requests_for(&first).len(), 1);
    // `vault login` again: the helper replaces the file atomically.
    let second = vault.add_token(TokenSpec::service(60));
    let tmp = helper.with_extension("tmp");
    write_token(&tmp, &second);
    std::fs::rename(&tmp, &helper).unwrap();
    let deadline = Instant::now() + secs(5.0);
    while vault.requests_for(&second).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the new ~/.vault-token was not picked up"
        );
        std::thread::sleep(secs(0.05));
    }
    assert_eq!(vault.requests_for(&second)[0].path, LOOKUP);
    let s = exporter.wait_for(secs(5.0), "renewing the new login", |s| {
        s.state("default").as_deref() == Some("renewing")
    });
    assert_eq!(
        vault.requests_for(&first).len(),
        1,
        "the old token is dropped"
    );
    assert_eq!(s.renewals("default", "failure"), 0.0);
}

#[test]
fn env_mode_without_any_token_exits_2() {
    let home = temp_dir("env-none");
    let (code, _, stderr) = run_to_exit(
        &["--web.listen-address=127.0.0.1:0"],
        &[
            ("HOME", home.to_str().unwrap()),
            ("VAULT_ADDR", "http://127.0.0.1:8200"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("VAULT_TOKEN"), "{stderr}");
    assert!(stderr.contains(".vault-token"), "{stderr}");
    assert!(!stderr.contains("listening on"));
}

#[test]
fn env_mode_rejects_bad_variables_with_exit_2() {
    let cases = [
        (
            vec![("VAULT_CLIENT_CERT", "/client.pem")],
            "VAULT_CLIENT_KEY",
        ),
        (vec![("VAULT_SKIP_VERIFY", "maybe")], "VAULT_SKIP_VERIFY"),
        (vec![("VAULT_ADDR", "vault:8200")], "VAULT_ADDR"),
    ];
    for (vars, named) in cases {
        let mut env = vec![("VAULT_TOKEN", "hvs.not-a-real-token")];
        env.extend(vars);
        let (code, _, stderr) = run_to_exit(&["--web.listen-address=127.0.0.1:0"], &env);
        assert_eq!(code, 2, "{named}: {stderr}");
        assert!(stderr.contains(named), "names {named}: {stderr}");
        assert!(!stderr.contains("not-a-real-token"));
    }
}

#[test]
fn config_mode_ignores_the_vault_environment() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let env_token = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("config-ignores-env");
    let file = dir.join("token");
    write_token(&file, &token);
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        format!("vaults:\n{}", file_entry("prod", &vault.url(), &file, "")),
    )
    .unwrap();
    let exporter = Exporter::start_in(
        dir,
        &[config_arg(&path)],
        &[
            ("VAULT_TOKEN", env_token.as_str()),
            ("VAULT_NAMESPACE", "from-env"),
            ("VAULT_ADDR", "http://127.0.0.1:1"),
        ],
    );
    let s = exporter.wait_for(secs(5.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    assert!(
        s.state("default").is_none(),
        "no env-mode token in config mode"
    );
    assert!(vault.requests_for(&env_token).is_empty());
    assert!(vault
        .requests_for(&token)
        .iter()
        .all(|r| r.namespace.is_none()));
}

#[test]
fn log_level_flag_wins_over_rust_log() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let start = |name: &str, args: &[&str]| {
        let dir = temp_dir(name);
        let file = dir.join("token");
        write_token(&file, &token);
        let path = dir.join("config.yml");
        std::fs::write(
            &path,
            format!("vaults:\n{}", file_entry("prod", &vault.url(), &file, "")),
        )
        .unwrap();
        let mut all = vec![config_arg(&path)];
        all.extend(args.iter().map(|a| a.to_string()));
        let exporter = Exporter::start_in(dir, &all, &[("RUST_LOG", "debug")]);
        exporter.wait_for(secs(5.0), "renewing", |s| {
            s.state("prod").as_deref() == Some("renewing")
        });
        // Let the worker log what it logs after the lookup.
        std::thread::sleep(secs(0.3));
        exporter.log()
    };
    let from_env = start("rust-log", &[]);
    assert!(
        from_env.contains(" DEBUG "),
        "RUST_LOG=debug applies without the flag:\n{from_env}"
    );
    let from_flag = start("log-level", &["--log.level=info"]);
    assert!(
        !from_flag.contains(" DEBUG "),
        "--log.level=info wins:\n{from_flag}"
    );
    assert!(from_flag.contains(" INFO "));
}

#[test]
fn a_bad_name_or_address_exits_2_naming_the_key_and_the_file() {
    let entry = |name: &str, address: &str| {
        format!("vaults:\n  - name: {name}\n    address: {address}\n    token_file: /run/token\n")
    };
    let long = "n".repeat(129);
    config_error(
        "name-too-long",
        &entry(&long, "http://127.0.0.1:8200"),
        "vaults[0].name",
    );
    // A tab in a double-quoted YAML string: a control character in a label value.
    config_error(
        "name-control",
        &entry("\"prod\\tbad\"", "http://127.0.0.1:8200"),
        "vaults[0].name",
    );
    for (case, address) in [
        ("address-no-scheme", "vault.example.com:8200"),
        ("address-ftp", "ftp://vault.example.com"),
        ("address-no-host", "https://"),
        ("address-bad-port", "https://vault:99999"),
    ] {
        config_error(case, &entry("prod", address), "vaults[0].address");
    }
    // 128 characters is fine.
    let fine = config("name-128", &entry(&"n".repeat(128), "http://127.0.0.1:1"));
    let exporter = Exporter::start_in(fine.parent().unwrap().to_owned(), &[config_arg(&fine)], &[]);
    assert_eq!(exporter.get("/-/healthy").0, 200);
}

#[test]
fn a_telemetry_path_that_is_not_a_free_absolute_path_exits_2() {
    for path in ["metrics", "", "/", "/-/healthy", "/-/ready", "/-/reload"] {
        let flag = format!("--web.telemetry-path={path}");
        let (code, _, stderr) = run_to_exit(
            &["--web.listen-address=127.0.0.1:0", &flag],
            &[
                ("VAULT_TOKEN", "hvs.unused"),
                ("VAULT_ADDR", "http://127.0.0.1:1"),
            ],
        );
        assert_eq!(code, 2, "{path:?}: {stderr}");
        assert!(
            stderr.contains("--web.telemetry-path"),
            "{path:?}: {stderr}"
        );
        assert!(!stderr.contains("listening on"), "{path:?}: {stderr}");
    }
}

#[test]
fn env_mode_reads_openbao_variables_and_says_which_it_chose() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("env-bao");
    let home = dir.to_str().unwrap().to_owned();
    let url = vault.url();
    let exporter = Exporter::start_in(
        dir,
        &[],
        &[
            ("BAO_ADDR", url.as_str()),
            ("BAO_TOKEN", token.as_str()),
            ("BAO_NAMESPACE", "team-bao"),
            ("HOME", home.as_str()),
        ],
    );
    exporter.wait_for(secs(5.0), "the BAO_TOKEN token renewing", |s| {
        s.state("default").as_deref() == Some("renewing")
    });
    let seen = vault.requests_for(&token);
    assert_eq!(seen[0].namespace.as_deref(), Some("team-bao"));
    let log = exporter.log();
    let chosen = log
        .lines()
        .find(|l| l.contains("env mode"))
        .unwrap_or_else(|| panic!("no start-up line naming the choice:\n{log}"));
    assert!(
        chosen.contains(&url) && chosen.contains("BAO_ADDR"),
        "{chosen}"
    );
    assert!(chosen.contains("token from BAO_TOKEN"), "{chosen}");
    assert!(!log.contains(&token), "never the token:\n{log}");
}

#[test]
fn a_fifo_as_token_file_is_a_token_source_failure_not_a_blocked_worker() {
    let vault = VaultDouble::start();
    let token = vault.add_token(TokenSpec::service(60));
    let dir = temp_dir("fifo-token");
    let fifo = dir.join("token");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let good = dir.join("good-token");
    write_token(&good, &token);
    let yaml = format!(
        "vaults:\n{}{}",
        file_entry("fifo", &vault.url(), &fifo, ""),
        file_entry("good", &vault.url(), &good, "")
    );
    let exporter = Exporter::with_config("fifo-token-run", &yaml, &[]);
    // Nobody ever writes to the FIFO: a blocking open would leave `fifo` at 0 failures.
    let s = exporter.wait_for(secs(5.0), "a token_source failure for the FIFO", |s| {
        s.failures("fifo", "token_source") >= 1.0 && s.state("good").as_deref() == Some("renewing")
    });
    assert_eq!(s.state("fifo").as_deref(), Some("unknown"));
    exporter.wait_for_log(secs(1.0), "not a regular file (a named pipe)");
}
