//! Operating the exporter like any Prometheus exporter: reload (SIGHUP, POST /-/reload),
//! `--config.check`, the `check` command, `--log.format`, signals, build information, and
//! the shipped operations files (example config, systemd unit, Kubernetes manifests).
//! The real binary against the Vault double; systemd-analyze and kubectl from Debian's
//! `systemd` and `kubernetes-client` packages (`.ci/run` installs them).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vault_double::{TokenSpec, VaultDouble};

const LOOKUP: &str = "/v1/auth/token/lookup-self";
const RENEW: &str = "/v1/auth/token/renew-self";

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn count(double: &VaultDouble, token: &str, path: &str) -> usize {
    double
        .requests_for(token)
        .iter()
        .filter(|r| r.path == path)
        .count()
}

/// Sends `signal` to the exporter.
fn kill(exporter: &Exporter, signal: &str) {
    common::send_signal(exporter.pid(), signal);
}

/// Log lines containing every one of `needles`.
fn lines_with(log: &str, needles: &[&str]) -> usize {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// Sends SIGHUP and waits for the `nth` reload outcome line (success or failure).
fn reload_by_sighup(exporter: &Exporter, nth: usize) -> String {
    kill(exporter, "HUP");
    let deadline = Instant::now() + secs(10.0);
    loop {
        let log = exporter.log();
        let outcomes = lines_with(&log, &["configuration reload"]);
        if outcomes >= nth {
            return log;
        }
        assert!(Instant::now() < deadline, "no reload outcome in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reload_gauges(s: &Scrape) -> (f64, f64) {
    (
        s.value("vault_token_exporter_config_last_reload_successful", &[])
            .expect("config_last_reload_successful"),
        s.value(
            "vault_token_exporter_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .expect("config_last_reload_success_timestamp_seconds"),
    )
}

#[test]
fn sighup_keeps_unchanged_entries_stops_removed_ones_and_starts_new_ones() {
    let double = VaultDouble::start();
    // Leases of 4 s: each worker renews about every 2 s, so counters move in the test.
    let kept_token = double.add_token(TokenSpec::service(4));
    let removed_token = double.add_token(TokenSpec::service(4));
    let added_token = double.add_token(TokenSpec::service(3600));
    let dir = temp_dir("op-reload");
    let token_file = |name: &str, token: &str| {
        let path = dir.join(format!("{name}.token"));
        write_token(&path, token);
        path
    };
    let kept = file_entry("kept", &double.url(), &token_file("kept", &kept_token), "");
    let removed = file_entry(
        "removed",
        &double.url(),
        &token_file("removed", &removed_token),
        "",
    );
    let added = file_entry(
        "added",
        &double.url(),
        &token_file("added", &added_token),
        "",
    );
    let config = dir.join("config.yml");
    std::fs::write(&config, format!("vaults:\n{kept}{removed}")).unwrap();
    let exporter = Exporter::start_in(
        dir.clone(),
        &[format!("--config.file={}", config.display())],
        &[],
    );
    let before = exporter.wait_for(secs(15.0), "both tokens renewed", |s| {
        s.renewals("kept", "success") >= 1.0 && s.renewals("removed", "success") >= 1.0
    });
    let (ok, loaded_at) = reload_gauges(&before);
    assert_eq!(ok, 1.0);
    assert_eq!(count(&double, &kept_token, LOOKUP), 1);

    std::fs::write(&config, format!("vaults:\n{kept}{added}")).unwrap();
    let log = reload_by_sighup(&exporter, 1);
    assert!(
        log.contains("configuration reloaded: 2 vault token(s), 1 kept, 1 started, 1 stopped"),
        "{log}"
    );
    let removed_requests = double.requests_for(&removed_token).len();
    let after = exporter.wait_for(secs(10.0), "the added token renewing", |s| {
        s.state("added").as_deref() == Some("renewing")
    });
    let (ok, reloaded_at) = reload_gauges(&after);
    assert_eq!(ok, 1.0);
    assert!(reloaded_at > loaded_at, "{reloaded_at} > {loaded_at}");
    // The kept entry: same worker, same counters, no new lookup.
    assert!(
        after.renewals("kept", "success") >= before.renewals("kept", "success"),
        "counters kept"
    );
    assert_eq!(after.state("kept").as_deref(), Some("renewing"));
    // The removed entry: no series, and no more requests (its worker woke and ended).
    assert!(
        !after.text.contains("vault=\"removed\""),
        "removed series gone:\n{}",
        after.text
    );
    // Renewals come every 1.6 to 2 s (40 to 50 % of the 4 s lease): three more of the
    // kept worker span over 3.2 s, in which the removed one, alive, would have renewed.
    let renewed = after.renewals("kept", "success");
    exporter.wait_for(
        secs(15.0),
        "the kept worker renewing three more times",
        |s| s.renewals("kept", "success") >= renewed + 3.0,
    );
    assert_eq!(
        count(&double, &kept_token, LOOKUP),
        1,
        "a kept entry is not looked up again"
    );
    assert_eq!(
        double.requests_for(&removed_token).len(),
        removed_requests,
        "a removed worker sends nothing more"
    );
    // A token file of an added entry is watched: a new token there is picked up.
    let fresh = double.add_token(TokenSpec::service(3600));
    write_token(&dir.join("added.token"), &fresh);
    exporter.wait_for(secs(10.0), "the added entry's new token looked up", |_| {
        count(&double, &fresh, LOOKUP) == 1
    });
    assert_eq!(
        count(&double, &added_token, RENEW),
        0,
        "no renewal at start"
    );
}

#[test]
fn an_invalid_config_on_reload_changes_nothing() {
    let double = VaultDouble::start();
    let token = double.add_token(TokenSpec::service(3600));
    let dir = temp_dir("op-invalid");
    let token_path = dir.join("prod.token");
    write_token(&token_path, &token);
    let entry = file_entry("prod", &double.url(), &token_path, "");
    let config = dir.join("config.yml");
    let web = dir.join("web.yml");
    std::fs::write(&config, format!("vaults:\n{entry}")).unwrap();
    std::fs::write(&web, "{}\n").unwrap();
    let exporter = Exporter::start_in(
        dir.clone(),
        &[
            format!("--config.file={}", config.display()),
            format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    let first = exporter.wait_for(secs(10.0), "renewing", |s| {
        s.state("prod").as_deref() == Some("renewing")
    });
    let (_, loaded_at) = reload_gauges(&first);

    // An unknown key: ERROR line naming it, gauge 0, the old config keeps running.
    std::fs::write(
        &config,
        format!("vaults:\n{entry}    renew_fraction: 0.5\n"),
    )
    .unwrap();
    let log = reload_by_sighup(&exporter, 1);
    assert_eq!(
        lines_with(
            &log,
            &["ERROR", "configuration reload failed", "renew_fraction"]
        ),
        1,
        "{log}"
    );
    let s = exporter.scrape();
    assert_eq!(reload_gauges(&s), (0.0, loaded_at));
    assert_eq!(s.state("prod").as_deref(), Some("renewing"));
    assert_eq!(count(&double, &token, LOOKUP), 1, "nothing restarted");

    // A valid config again, but an invalid web config: still nothing changes.
    std::fs::write(&config, format!("vaults:\n{entry}")).unwrap();
    std::fs::write(&web, "tls_server_config: [\n").unwrap();
    let log = reload_by_sighup(&exporter, 2);
    assert_eq!(
        lines_with(&log, &["ERROR", "configuration reload failed", "web.yml"]),
        1,
        "{log}"
    );
    assert_eq!(reload_gauges(&exporter.scrape()).0, 0.0);

    // Both fixed: success again, the token still the same worker's.
    std::fs::write(&web, "{}\n").unwrap();
    reload_by_sighup(&exporter, 3);
    let s = exporter.scrape();
    let (ok, at) = reload_gauges(&s);
    assert_eq!(ok, 1.0);
    assert!(at > loaded_at);
    assert_eq!(count(&double, &token, LOOKUP), 1);
}

#[test]
fn basic_auth_users_follow_a_reload() {
    let dir = temp_dir("op-web-reload");
    let web = dir.join("web.yml");
    let users = |user: &str| {
        let hash = bcrypt::hash("pw", 4).unwrap();
        format!("basic_auth_users:\n  {user}: '{hash}'\n")
    };
    std::fs::write(&web, users("alice")).unwrap();
    let yaml = format!(
        "vaults:\n{}",
        file_entry("prod", "http://127.0.0.1:1", &dir.join("missing.token"), "")
    );
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    let exporter = Exporter::start_in(
        dir.clone(),
        &[
            format!("--config.file={}", config.display()),
            format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    // alice:pw and bob:pw in base64.
    let get = |credentials: &str| {
        http_request(
            exporter.addr,
            &format!("GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic {credentials}\r\n\r\n"),
        )
        .0
    };
    let (alice, bob) = ("YWxpY2U6cHc=", "Ym9iOnB3");
    assert_eq!((get(alice), get(bob)), (200, 401));
    std::fs::write(&web, users("bob")).unwrap();
    let log = reload_by_sighup(&exporter, 1);
    assert!(log.contains("configuration reloaded"), "{log}");
    assert_eq!((get(alice), get(bob)), (401, 200), "the new users, at once");
}

#[test]
fn no_signal_but_sigterm_sigint_and_sigquit_ends_the_process() {
    let double = VaultDouble::start();
    let token = double.add_token(TokenSpec::service(3600));
    let dir = temp_dir("op-signals-token");
    let token_path = dir.join("prod.token");
    write_token(&token_path, &token);
    let mut exporter = Exporter::with_config(
        "op-signals",
        &format!(
            "vaults:\n{}",
            file_entry("prod", &double.url(), &token_path, "")
        ),
        &[],
    );
    for signal in ["USR1", "USR2", "PIPE", "ALRM", "HUP"] {
        kill(&exporter, signal);
    }
    exporter.wait_for_log(secs(5.0), "configuration reloaded");
    let log = exporter.wait_for_log(secs(5.0), "received SIGUSR2, ignored");
    assert!(log.contains("received SIGUSR1, ignored"), "{log}");
    assert_eq!(exporter.get("/-/healthy").0, 200, "still serving");
    let (status, _) = exporter.signal_and_wait("QUIT", secs(5.0));
    assert_eq!(status.code(), Some(0));
    assert!(exporter.log().contains("received SIGQUIT, shutting down"));
}

#[test]
fn post_reload_needs_the_lifecycle_flag() {
    let double = VaultDouble::start();
    let token = double.add_token(TokenSpec::service(3600));
    let dir = temp_dir("op-post");
    let token_path = dir.join("prod.token");
    write_token(&token_path, &token);
    let yaml = format!(
        "vaults:\n{}",
        file_entry("prod", &double.url(), &token_path, "")
    );
    let post =
        "POST /-/reload HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let off = Exporter::with_config("op-post-off", &yaml, &[]);
    let (status, _) = http_request(off.addr, post);
    assert!(status >= 400, "without --web.enable-lifecycle: {status}");
    assert!(!off.log().contains("configuration reloaded"));

    let on = Exporter::with_config("op-post-on", &yaml, &["--web.enable-lifecycle"]);
    let (status, body) = http_request(on.addr, post);
    assert_eq!(status, 200, "{body}");
    on.wait_for_log(secs(5.0), "configuration reloaded");
    let config = on.dir.join("config.yml");
    std::fs::write(&config, "vaults: [\n").unwrap();
    let (status, body) = http_request(on.addr, post);
    assert_eq!(status, 500, "an invalid config is an error answer: {body}");
    assert!(body.contains("config.yml"), "{body}");
    assert_eq!(reload_gauges(&on.scrape()).0, 0.0);
    assert_eq!(
        http_get(on.addr, "/-/reload").0,
        405,
        "GET /-/reload reloads nothing"
    );
}

#[test]
fn config_check_validates_without_the_network() {
    // The shipped example, as a user would check it (its token_env entry needs its variable).
    let example = repo().join("examples/config.yml");
    let arg = format!("--config.file={}", example.display());
    let (code, stdout, stderr) = run_to_exit(
        &[&arg, "--config.check"],
        &[("VAULT_TOKEN_DEV", "hvs.example")],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("config ok") && stdout.contains("2 vault token(s)"),
        "{stdout}"
    );
    assert!(!stderr.contains("listening on"), "nothing served: {stderr}");

    // A valid config whose Vault is a closed port: still 0, fast, nothing contacted.
    let dir = temp_dir("op-config-check");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        "vaults:\n  - name: prod\n    address: http://127.0.0.1:1\n    token_file: /nonexistent/token\n",
    )
    .unwrap();
    let arg = format!("--config.file={}", config.display());
    let started = Instant::now();
    let (code, _, stderr) = run_to_exit(&[&arg, "--config.check"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(started.elapsed() < secs(5.0));

    // Invalid config, invalid web config: 2 with one line naming the file.
    std::fs::write(&config, "vaults:\n  - name: prod\n    adress: http://x\n").unwrap();
    let (code, stdout, stderr) = run_to_exit(&[&arg, "--config.check"], &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("adress") && stderr.contains("config.yml"),
        "{stderr}"
    );
    std::fs::write(
        &config,
        "vaults:\n  - name: prod\n    address: http://127.0.0.1:1\n    token_file: /t\n",
    )
    .unwrap();
    let web = dir.join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  alice: not-a-bcrypt-hash\n").unwrap();
    let web_arg = format!("--web.config.file={}", web.display());
    let (code, _, stderr) = run_to_exit(&[&arg, &web_arg, "--config.check"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// The fields of `struct NAME` in the config loader's source: the keys a config may have.
fn config_keys(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} in src/config.rs"));
    let body = &source[start..];
    let body = &body[..body.find("\n}").unwrap()];
    body.lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with("//"))
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, _)| k.trim_start_matches("pub ").to_owned())
        })
        .collect()
}

#[test]
fn the_example_config_shows_every_key() {
    let source = std::fs::read_to_string(repo().join("src/config.rs")).unwrap();
    let example = std::fs::read_to_string(repo().join("examples/config.yml")).unwrap();
    let shown = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches([' ', '#', '-']);
            l.starts_with(&format!("{key}:"))
        })
    };
    let mut keys = config_keys(&source, "VaultEntry");
    keys.extend(config_keys(&source, "TlsEntry"));
    assert!(keys.len() >= 15, "found the loader's keys: {keys:?}");
    let missing: Vec<&String> = keys.iter().filter(|k| !shown(k)).collect();
    assert!(missing.is_empty(), "examples/config.yml lacks {missing:?}");
}

#[test]
fn the_check_command_looks_every_token_up_once_and_renews_none() {
    let double = VaultDouble::start();
    let renewing = double.add_token(TokenSpec::service(3600));
    let root = double.add_token(TokenSpec::root_created());
    let fixed = double.add_token(TokenSpec::service(60).renewable(false));
    let revoked = double.add_token(TokenSpec::service(3600));
    double.revoke(&revoked);
    let dir = temp_dir("op-check");
    let entry = |name: &str, token: &str| {
        let path = dir.join(format!("{name}.token"));
        write_token(&path, token);
        file_entry(name, &double.url(), &path, "")
    };
    let healthy = dir.join("healthy.yml");
    std::fs::write(
        &healthy,
        format!(
            "vaults:\n{}{}",
            entry("app", &renewing),
            entry("root", &root)
        ),
    )
    .unwrap();
    let arg = format!("--config.file={}", healthy.display());
    let (code, stdout, stderr) = run_to_exit(&["check", &arg], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one line per token:\n{stdout}");
    assert!(
        lines[0].starts_with("vault=app state=renewing time_left="),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("vault=root state=never_expires time_left=never"),
        "{stdout}"
    );
    assert!(stdout.contains("max_expiry=") && stdout.contains("reason=none"));

    let unhealthy = dir.join("unhealthy.yml");
    let missing = dir.join("missing.token");
    std::fs::write(
        &unhealthy,
        format!(
            "vaults:\n{}{}{}{}",
            entry("app", &renewing),
            entry("fixed", &fixed),
            entry("revoked", &revoked),
            file_entry("missing", &double.url(), &missing, ""),
        ),
    )
    .unwrap();
    let arg = format!("--config.file={}", unhealthy.display());
    let (code, stdout, stderr) = run_to_exit(&[&arg, "check"], &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
    assert!(
        stdout.contains("vault=fixed state=not_renewable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vault=revoked state=invalid time_left=unknown max_expiry=unknown reason=permission_denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vault=missing state=unknown") && stdout.contains("reason=token_source")
    );
    assert!(
        !stdout.contains(&renewing) && !stderr.contains(&renewing),
        "never the token"
    );

    assert_eq!(count(&double, &renewing, LOOKUP), 2, "one lookup per run");
    assert!(
        double.requests().iter().all(|r| r.path != RENEW),
        "check renews nothing"
    );

    let (code, _, stderr) = run_to_exit(&["check", "--config.file=/nonexistent.yml"], &[]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn json_logs_parse_and_carry_the_vault_name() {
    let dir = temp_dir("op-json");
    // A name that needs quoting, a token file that is missing: an ERROR line about it.
    let yaml = format!(
        "vaults:\n{}",
        file_entry(
            "team a",
            "http://127.0.0.1:1",
            &dir.join("missing.token"),
            ""
        )
    );
    let json = Exporter::with_config("op-json", &yaml, &["--log.format=json"]);
    let log = json.wait_for_log(secs(10.0), "reason");
    let mut about_the_token = 0;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "msg"] {
            assert!(value.get(key).is_some(), "{key} in {line}");
        }
        if value["msg"]
            .as_str()
            .unwrap()
            .contains("vault token renewal failed")
        {
            about_the_token += 1;
            assert_eq!(value["vault"], "team a", "{line}");
            assert_eq!(value["reason"], "token_source", "{line}");
            assert_eq!(value["level"], "error", "{line}");
        }
    }
    assert!(about_the_token >= 1, "{log}");

    let text = Exporter::with_config("op-logfmt", &yaml, &[]);
    let log = text.wait_for_log(secs(10.0), "vault token renewal failed");
    assert!(
        log.contains("vault=\"team a\" reason=token_source"),
        "quoted when it needs it:\n{log}"
    );
}

#[test]
fn version_and_build_info_carry_the_revision_and_the_compiler() {
    let (code, stdout, _) = run_to_exit(&["--version"], &[]);
    assert_eq!(code, 0);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc).arg("--version").output().unwrap();
    let rustc = String::from_utf8(rustc.stdout).unwrap().trim().to_owned();
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output();
    let revision = match git {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        _ => "unknown".into(),
    };
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    assert!(stdout.contains(&rustc), "{stdout} has {rustc}");
    // The binary was built at this commit or, while the tests run on uncommitted work,
    // its parent: either way a revision, not "unknown", inside a checkout.
    if revision != "unknown" {
        assert!(!stdout.contains("unknown"), "{stdout}");
    }
    let exporter = Exporter::with_config(
        "op-build-info",
        "vaults:\n  - name: a\n    address: http://127.0.0.1:1\n    token_file: /nonexistent\n",
        &[],
    );
    let s = exporter.scrape();
    let info = s
        .samples
        .iter()
        .find(|s| s.name == "vault_token_exporter_build_info")
        .expect("build_info");
    assert_eq!(info.labels["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info.labels["rustc_version"], rustc);
    assert!(stdout.contains(&info.labels["revision"]), "{stdout}");
}

#[test]
fn cargo_install_installs_only_the_exporter() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version=1", "--offline"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vault-token-exporter")
        .unwrap();
    let bins: Vec<&str> = root["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(bins, ["vault-token-exporter"]);
}

#[test]
fn license_and_changelog_ship_with_the_source() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"Apache-2.0\""));
    let license = std::fs::read_to_string(repo().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(
        license.contains("END OF TERMS AND CONDITIONS"),
        "the full text"
    );
    let changelog = std::fs::read_to_string(repo().join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains(&format!("## {}", env!("CARGO_PKG_VERSION"))),
        "the current version has an entry"
    );
}

fn tool(name: &str, package: &str) -> PathBuf {
    find_in_path(name).unwrap_or_else(|| {
        panic!(
            "{name} not found in PATH. It is in Debian's {package} package: \
             apt-get install -y --no-install-recommends {package} (.ci/run installs it)"
        )
    })
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit =
        std::fs::read_to_string(repo().join("examples/vault-token-exporter.service")).unwrap();
    let directives: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |k: &str, v: &str| directives.iter().any(|(dk, dv)| *dk == k && dv.trim() == v);
    for (k, v) in [
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("User", "vault-token-exporter"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("TasksMax", "infinity"),
    ] {
        assert!(has(k, v), "{k}={v} in the unit");
    }
    assert!(directives
        .iter()
        .any(|(k, _)| *k == "RestrictAddressFamilies"));
    // The config path of ExecStart is what the unit's comments install.
    assert!(unit.contains("--config.file=/etc/vault-token-exporter/config.yml"));

    // systemd-analyze verify wants ExecStart to exist: point it at the built binary.
    let dir = temp_dir("op-systemd");
    let copy = dir.join("vault-token-exporter.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/vault-token-exporter", BIN),
    )
    .unwrap();
    let out = Command::new(tool("systemd-analyze", "systemd"))
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are warnings, not failures: none may appear.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("vault-token-exporter.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze warns:\n{stderr}");
}

/// Every document `kubectl kustomize deploy/kubernetes` renders.
fn rendered_manifests() -> Vec<serde_yaml_ng::Value> {
    let out = Command::new(tool("kubectl", "kubernetes-client"))
        .args(["kustomize", "deploy/kubernetes"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> Vec<&'a serde_yaml_ng::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

#[test]
fn the_kubernetes_manifests_render_with_probes_sidecar_and_a_valid_config() {
    use serde_yaml_ng::Value;
    let docs = rendered_manifests();
    for kind in [
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
        "ServiceAccount",
    ] {
        assert_eq!(of_kind(&docs, kind).len(), 1, "one {kind}");
    }
    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    let exporter = containers
        .iter()
        .find(|c| c["name"] == "vault-token-exporter")
        .expect("exporter container");
    assert!(
        containers.iter().any(|c| c["args"]
            .as_sequence()
            .is_some_and(|a| a.first().and_then(Value::as_str) == Some("agent"))),
        "a Vault Agent sidecar"
    );
    assert_eq!(exporter["livenessProbe"]["httpGet"]["path"], "/-/healthy");
    assert_eq!(exporter["readinessProbe"]["httpGet"]["path"], "/-/ready");
    let port = &exporter["ports"][0];
    assert_eq!(exporter["livenessProbe"]["httpGet"]["port"], port["name"]);
    let args: Vec<&str> = exporter["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let listen = args
        .iter()
        .find_map(|a| a.strip_prefix("--web.listen-address=:"))
        .expect("listen address");
    assert_eq!(port["containerPort"].as_u64().unwrap().to_string(), listen);
    let service = of_kind(&docs, "Service")[0];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    let monitor = of_kind(&docs, "ServiceMonitor")[0];
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );

    // The exporter's config comes from a ConfigMap mounted where --config.file points,
    // names a token file on the volume the agent writes, and passes --config.check.
    let config_path = args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file");
    let mount = |container: &Value, path: &str| -> String {
        let mounts = container["volumeMounts"].as_sequence().unwrap();
        mounts
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("no mount holds {path}"))["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let config_volume = mount(exporter, config_path);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(config_volume.as_str()))
        .unwrap();
    let map_name = volume["configMap"]["name"].as_str().unwrap();
    let map = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == map_name)
        .expect("the mounted ConfigMap is rendered");
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let yaml = map["data"][file_name].as_str().unwrap();
    let dir = temp_dir("op-k8s");
    std::fs::write(dir.join("config.yml"), yaml).unwrap();
    let arg = format!("--config.file={}", dir.join("config.yml").display());
    let (code, stdout, stderr) = run_to_exit(&[&arg, "--config.check"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let config: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let token_file = config["vaults"][0]["token_file"].as_str().unwrap();
    let agent = containers
        .iter()
        .find(|c| c["name"] == "vault-agent")
        .unwrap();
    assert_eq!(
        mount(exporter, token_file),
        mount(agent, token_file),
        "the exporter reads the token where the agent writes it"
    );
}

#[test]
fn the_prometheusrule_carries_exactly_the_rules_file() {
    let rules_path = repo().join("dashboards/vault-token-exporter.rules.yml");
    let rules_text = std::fs::read_to_string(&rules_path).unwrap();
    let manifest = repo().join("deploy/kubernetes/prometheusrule.yaml");
    if std::env::var_os("VTE_WRITE_PROMETHEUSRULE").is_some() {
        let current = std::fs::read_to_string(&manifest).unwrap();
        let head = &current[..current.find("spec:\n").expect("spec:") + "spec:\n".len()];
        let body: String = rules_text
            .split_inclusive('\n')
            .map(|l| {
                if l.trim().is_empty() {
                    l.to_owned()
                } else {
                    format!("  {l}")
                }
            })
            .collect();
        std::fs::write(&manifest, format!("{head}{body}")).unwrap();
    }
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules_text).unwrap();
    let file: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let hint = "regenerate with VTE_WRITE_PROMETHEUSRULE=1 cargo test --test it prometheusrule";
    assert_eq!(file["spec"]["groups"], rules["groups"], "{hint}");
    // And what kustomize renders is that file.
    let docs = rendered_manifests();
    let rendered = of_kind(&docs, "PrometheusRule")[0];
    assert_eq!(rendered["spec"]["groups"], rules["groups"], "{hint}");
}
