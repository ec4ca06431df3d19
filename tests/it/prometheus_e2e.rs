//! End to end: the shipped alert rules and dashboard queries in a real
//! Prometheus server (Debian's `prometheus` package), scraping the real
//! exporter, which watches three tokens on the Vault double:
//!
//! - `nonrenew`: a service token that is not renewable (600 s left);
//! - `capped`: a service token with a 30 s TTL and a 40 s explicit max TTL,
//!   so its first renewal (at 12-15 s) is capped, and it expires at 40 s;
//! - `healthy`: a renewable 8 s service token, renewed every ~4 s;
//! - `rotated`: its token file holds a revoked token (invalid);
//! - `late`: its token file does not exist (token_source failures);
//! - `max-soon`: a renewable token whose max TTL is 6 days away
//!   (VaultTokenMaxExpiryNear; `capped` fires it too until it is capped).
//!
//! Fix after failure: once VaultTokenInvalid fired for `rotated` and
//! VaultTokenRenewalsFailing for `late`, a new 8 s token is written to each
//! file. Both alerts must clear, and nothing else may fire for those tokens
//! afterwards (the counter-window rules kept a critical VaultTokenExpiringSoon
//! firing after such a fix: a fresh short token is looked up, not renewed).
//! Nothing stays firing for them until the end of the test.
//!
//! Prometheus scrapes every second and evaluates every second, with the
//! rules file as shipped except for shorter `for` durations. The test
//! asserts through Prometheus' HTTP API that VaultTokenNotRenewable and
//! VaultTokenCapped (and VaultTokenExpiringSoon) fire for the right tokens,
//! that nothing fires for the healthy token or for the exporter, that the
//! capped token's alert hands over to VaultTokenInvalid once it expired, and
//! that every dashboard panel query and the Grafana alert's query return
//! data. It prints how long after the exporter first exposed each situation
//! the alert fired.
//!
//! The test fails (does not skip) when `prometheus` is not installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{find_in_path, repo, TempDir};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use vault_double::{TokenSpec, VaultDouble};

const DASHBOARD: &str = "dashboards/vault-token-exporter.json";
const RULES: &str = "dashboards/vault-token-exporter.rules.yml";
const GRAFANA_ALERT: &str = "dashboards/grafana-alert-not-renewable.yml";
const JOB: &str = "vault-token-exporter";

/// Short `for` for every rule in this test. VaultTokenExporterDown keeps a
/// longer one: before the first scrape `up` is absent, which is what its
/// `absent()` branch is for, and that is no failure of the exporter.
fn short_for(alert: &str) -> &'static str {
    if alert == "VaultTokenExporterDown" {
        "15s"
    } else {
        "2s"
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A child process killed on drop, with its stderr kept for diagnostics and
/// handed line by line to `lines`.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc { child, log, lines }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ADDR` from a log line containing `listening on ADDR`.
fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    let token = token.trim_matches(|c: char| c == '"' || c == '\'' || c == ',' || c == ')');
    let token = token
        .strip_prefix("http://")
        .or_else(|| token.strip_prefix("https://"))
        .unwrap_or(token);
    let addr = token.split('/').next()?;
    addr.contains(':').then(|| addr.to_string())
}

fn start_exporter(config: &Path) -> (Proc, String) {
    let bin = env!("CARGO_BIN_EXE_vault-token-exporter");
    let proc = Proc::spawn(Command::new(bin).args([
        format!("--config.file={}", config.display()),
        "--web.listen-address=127.0.0.1:0".to_string(),
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match proc.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(addr) = listening_addr(&line) {
                    return (proc, addr);
                }
            }
            Err(_) => panic!(
                "exporter printed no `listening on ADDR` line; stderr:\n{}",
                proc.log()
            ),
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

fn get(url: &str) -> Result<String, String> {
    ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())
}

/// A Prometheus API call. Transport errors (a stalled server on a loaded
/// machine) are `Err` for the caller to retry; an API error panics.
fn try_get_json(url: &str, params: &[(&str, &str)]) -> Result<Json, String> {
    let mut req = ureq::get(url).timeout(Duration::from_secs(20));
    for (k, v) in params {
        req = req.query(k, v);
    }
    let body = match req.call() {
        Ok(resp) => resp.into_string().map_err(|e| e.to_string())?,
        Err(ureq::Error::Status(code, resp)) => {
            panic!(
                "GET {url} {params:?}: HTTP {code}: {}",
                resp.into_string().unwrap_or_default()
            )
        }
        Err(e) => return Err(format!("GET {url} {params:?}: {e}")),
    };
    let json: Json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"));
    assert_eq!(json["status"], "success", "{url} {params:?}: {body}");
    Ok(json)
}

/// A Prometheus API call retried for up to a minute.
fn get_json(url: &str, params: &[(&str, &str)]) -> Json {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_get_json(url, params) {
            Ok(json) => return json,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(e) => {
                eprintln!("retrying: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// One sample line of the text exposition: name, labels, value.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let b = body.as_bytes();
        let mut i = 0;
        loop {
            while i < b.len() && (b[i] == b',' || b[i] == b' ') {
                i += 1;
            }
            if i >= b.len() {
                return None;
            }
            if b[i] == b'}' {
                i += 1;
                break;
            }
            let eq = i + body[i..].find('=')?;
            let key = body[i..eq].trim().to_string();
            i = eq + 1;
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            let mut value = String::new();
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    value.push(match b[i + 1] {
                        b'n' => '\n',
                        c => c as char,
                    });
                    i += 2;
                } else {
                    let ch = body[i..].chars().next()?;
                    value.push(ch);
                    i += ch.len_utf8();
                }
            }
            i += 1;
            labels.insert(key, value);
        }
        rest = &body[i..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

fn scrape_has(body: &str, name: &str, want: &[(&str, &str)], value: f64) -> bool {
    body.lines().filter_map(parse_sample).any(|(n, labels, v)| {
        n == name
            && v == value
            && want
                .iter()
                .all(|(k, val)| labels.get(*k).map(String::as_str) == Some(*val))
    })
}

/// Every PromQL query of the dashboard's panels, with where it came from.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: Json = serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&Json> = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        panels.push(p);
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested.iter());
        }
    }
    for p in panels {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(expr) = t["expr"].as_str() {
                out.push((
                    format!(
                        "panel {:?} target {}",
                        p["title"].as_str().unwrap_or(""),
                        t["refId"].as_str().unwrap_or("?")
                    ),
                    expr.to_string(),
                ));
            }
        }
    }
    out
}

fn substitute_grafana_vars(expr: &str) -> String {
    let out = expr
        .replace("$__rate_interval", "10s")
        .replace("${__rate_interval}", "10s")
        .replace("$__interval", "10s")
        .replace("${vault}", ".+")
        .replace("$vault", ".+")
        .replace("${instance}", ".+")
        .replace("$instance", ".+")
        .replace("${job}", JOB)
        .replace("$job", JOB);
    assert!(!out.contains('$'), "unknown Grafana variable in {out}");
    out
}

/// The shipped rules with every `for` shortened (see `short_for`).
fn rules_with_short_for() -> String {
    let mut rules: Yaml = serde_yaml_ng::from_str(&read(RULES)).expect("rules YAML");
    let mut n = 0;
    for g in rules["groups"].as_sequence_mut().expect("groups") {
        for r in g["rules"].as_sequence_mut().expect("rules") {
            let name = r["alert"].as_str().expect("alert").to_string();
            let map = r.as_mapping_mut().unwrap();
            map.insert(Yaml::from("for"), Yaml::from(short_for(&name)));
            n += 1;
        }
    }
    assert!(n >= 7, "{n} rules");
    serde_yaml_ng::to_string(&rules).unwrap()
}

fn start_prometheus(dir: &Path, exporter_addr: &str) -> (Proc, String) {
    let bin = find_in_path("prometheus").unwrap_or_else(|| {
        panic!(
            "prometheus not found in PATH: install Debian's prometheus package \
             (apt-get install -y --no-install-recommends prometheus; .ci/run does)"
        )
    });
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, rules_with_short_for()).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{exporter_addr}']\n",
            rules.display()
        ),
    )
    .unwrap();
    // A free port can be taken between the probe and Prometheus' bind: retry.
    for attempt in 1..=3 {
        let port = free_port();
        let data = dir.join(format!("data-{attempt}"));
        let mut proc = Proc::spawn(Command::new(&bin).args([
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", data.display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_string(),
        ]));
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = proc.child.try_wait() {
                eprintln!(
                    "prometheus exited ({status}) on attempt {attempt}:\n{}",
                    proc.log()
                );
                break;
            }
            if get(&format!("{url}/-/ready")).is_ok() {
                return (proc, url);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if proc.child.try_wait().ok().flatten().is_none() {
            panic!("prometheus not ready within 30 s:\n{}", proc.log());
        }
    }
    panic!("prometheus did not start in 3 attempts");
}

/// Scrapes of the exporter so far: count, failed, slowest.
fn scrape_health(prom: &str) -> String {
    let value = |q: &str| {
        let res = get_json(&format!("{prom}/api/v1/query"), &[("query", q)]);
        res["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or("none")
            .to_string()
    };
    let sel = format!("{{job=\"{JOB}\"}}");
    format!(
        "{} scrapes, {} failed, slowest {} s, up now {}",
        value(&format!("sum(count_over_time(up{sel}[10m]))")),
        value(&format!(
            "sum(count_over_time(up{sel}[10m]) - sum_over_time(up{sel}[10m]))"
        )),
        value(&format!(
            "max(max_over_time(scrape_duration_seconds{sel}[10m]))"
        )),
        value(&format!("max(up{sel})")),
    )
}

/// An alert we wait for: when the exporter first exposed its situation, when
/// Prometheus first had it stored (a query finds it), and when Prometheus
/// first reported the alert firing.
struct Watch {
    alert: &'static str,
    vault: &'static str,
    situation: &'static str,
    seen: Option<Instant>,
    stored: Option<Instant>,
    fired: Option<Instant>,
    active_at: String,
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn alerts_fire_in_a_real_prometheus_and_panels_have_data() {
    let t0 = Instant::now();
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();

    let vault = VaultDouble::start();
    let tmp = TempDir::new("prom-e2e");
    let tokens = [
        (
            "nonrenew",
            vault.add_token(TokenSpec::service(600).renewable(false)),
        ),
        (
            "capped",
            vault.add_token(TokenSpec::service(30).explicit_max_ttl(40)),
        ),
        ("healthy", vault.add_token(TokenSpec::service(8))),
        ("rotated", vault.add_token(TokenSpec::service(600))),
        ("late", String::new()),
        (
            "max-soon",
            vault.add_token(TokenSpec::service(600).explicit_max_ttl(6 * 24 * 3600)),
        ),
    ];
    vault.revoke(&tokens[3].1);
    let tokens_added = Instant::now();
    let mut config = String::from("vaults:\n");
    for (name, token) in &tokens {
        let file = tmp.path().join(format!("{name}.token"));
        if !token.is_empty() {
            std::fs::write(&file, token).unwrap();
        }
        config.push_str(&format!(
            "  - name: {name}\n    address: {}\n    token_file: {}\n    timeout: 2s\n",
            vault.url(),
            file.display()
        ));
    }
    let config_path = tmp.path().join("exporter.yml");
    std::fs::write(&config_path, &config).unwrap();

    let (exporter, exporter_addr) = start_exporter(&config_path);
    let exporter_started = Instant::now();
    let (prometheus, prom) = start_prometheus(tmp.path(), &exporter_addr);
    eprintln!(
        "exporter on {exporter_addr} at {:.1}s, prometheus on {prom} ready at {:.1}s",
        secs(exporter_started),
        secs(Instant::now())
    );

    let metrics_url = format!("http://{exporter_addr}/metrics");
    let alerts_url = format!("{prom}/api/v1/alerts");
    let mut watches = [
        Watch {
            alert: "VaultTokenNotRenewable",
            vault: "nonrenew",
            situation: "not_renewable",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenExpiringSoon",
            vault: "nonrenew",
            situation: "not_renewable",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenCapped",
            vault: "capped",
            situation: "capped",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenExpiringSoon",
            vault: "capped",
            situation: "capped",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenInvalid",
            vault: "capped",
            situation: "expired",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenInvalid",
            vault: "rotated",
            situation: "invalid",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenRenewalsFailing",
            vault: "late",
            situation: "unknown",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
        Watch {
            alert: "VaultTokenMaxExpiryNear",
            vault: "max-soon",
            situation: "renewing",
            seen: None,
            stored: None,
            fired: None,
            active_at: String::new(),
        },
    ];
    // The tokens fixed once their alert fired: when, and when nothing fired for
    // them any more.
    const FIXED: [&str; 2] = ["rotated", "late"];
    let mut fixed_at: Option<Instant> = None;
    let mut cleared_at: Option<Instant> = None;
    let mut firing_after_fix: BTreeMap<String, Instant> = BTreeMap::new();
    // Firing alerts allowed at any time: the watched ones, and the max TTL
    // warning for `capped` (40 s away) until it is capped. Anything else
    // firing (the healthy token, the exporter, a collector) is a failure.
    let mut allowed: BTreeSet<(&str, &str)> = watches.iter().map(|w| (w.alert, w.vault)).collect();
    allowed.insert(("VaultTokenMaxExpiryNear", "capped"));
    let mut unexpected: Vec<String> = Vec::new();
    let mut pending_healthy: BTreeSet<String> = BTreeSet::new();
    let mut capped_resolved_after_expiry: Option<Instant> = None;
    let mut panels_checked = false;
    let mut panel_report = Vec::new();

    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let now = Instant::now();
        // What the exporter exposes right now.
        if let Ok(body) = get(&metrics_url) {
            for w in watches.iter_mut().filter(|w| w.seen.is_none()) {
                if scrape_has(
                    &body,
                    "vault_token_state",
                    &[("vault", w.vault), ("state", w.situation)],
                    1.0,
                ) {
                    w.seen = Some(now);
                }
            }
        }
        // What Prometheus has stored.
        for w in watches
            .iter_mut()
            .filter(|w| w.seen.is_some() && w.stored.is_none())
        {
            let q = format!(
                "vault_token_state{{vault=\"{}\",state=\"{}\"}} == 1",
                w.vault, w.situation
            );
            let res = try_get_json(&format!("{prom}/api/v1/query"), &[("query", &q)]);
            if res.is_ok_and(|res| {
                res["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty())
            }) {
                w.stored = Some(now);
            }
        }
        // What Prometheus says is firing.
        let alerts = match try_get_json(&alerts_url, &[]) {
            Ok(alerts) => alerts,
            Err(e) => {
                eprintln!("retrying: {e}");
                if Instant::now() > deadline {
                    panic!("Prometheus API unreachable at the deadline: {e}");
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let mut firing: BTreeSet<(String, String)> = BTreeSet::new();
        for a in alerts["data"]["alerts"].as_array().expect("alerts") {
            let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
            let v = a["labels"]["vault"].as_str().unwrap_or("").to_string();
            let state = a["state"].as_str().unwrap_or("");
            if state != "firing" {
                if v == "healthy" {
                    pending_healthy.insert(name);
                }
                continue;
            }
            if !allowed.contains(&(name.as_str(), v.as_str())) {
                let what = format!("{name}{{vault={v:?}}} {}", a["labels"]);
                if !unexpected.contains(&what) {
                    eprintln!("UNEXPECTED firing at {:.1}s: {what}", secs(now));
                    unexpected.push(what);
                }
            }
            for w in watches.iter_mut() {
                if w.alert == name && w.vault == v && w.fired.is_none() {
                    w.fired = Some(now);
                    w.active_at = a["activeAt"].as_str().unwrap_or("").to_string();
                    eprintln!(
                        "{} {{vault={}}} firing at {:.1}s",
                        w.alert,
                        w.vault,
                        secs(now)
                    );
                }
            }
            firing.insert((name, v));
        }

        let fixed_tokens_fired = watches
            .iter()
            .filter(|w| FIXED.contains(&w.vault))
            .all(|w| w.fired.is_some());
        if fixed_tokens_fired && fixed_at.is_none() {
            for name in FIXED {
                let token = vault.add_token(TokenSpec::service(8));
                let file = tmp.path().join(format!("{name}.token"));
                // Written aside and renamed in, as Vault Agent does.
                let aside = tmp.path().join(format!("{name}.token.new"));
                std::fs::write(&aside, &token).unwrap();
                std::fs::rename(&aside, &file).unwrap();
            }
            fixed_at = Some(now);
            eprintln!("new tokens written for {FIXED:?} at {:.1}s", secs(now));
        }
        if let Some(fixed) = fixed_at {
            let still: Vec<&(String, String)> = firing
                .iter()
                .filter(|(_, v)| FIXED.contains(&v.as_str()))
                .collect();
            if still.is_empty() && cleared_at.is_none() {
                cleared_at = Some(now);
                eprintln!(
                    "every alert of {FIXED:?} cleared at {:.1}s, {:.1}s after the fix",
                    secs(now),
                    now.duration_since(fixed).as_secs_f64()
                );
            }
            if cleared_at.is_some() {
                for (name, v) in still {
                    firing_after_fix
                        .entry(format!("{name}{{vault={v:?}}}"))
                        .or_insert(now);
                }
            }
        }

        let phase1 = watches
            .iter()
            .filter(|w| w.situation != "expired")
            .all(|w| w.fired.is_some());
        if phase1 && !panels_checked {
            // Every dashboard query returns data now that every situation
            // is on; the Grafana alert's query tells nonrenew from healthy.
            // A scrape that fails (1 s timeout on a loaded machine) marks
            // every series stale for a moment, so each query gets 15 s.
            for (origin, expr) in dashboard_queries() {
                let q = substitute_grafana_vars(&expr);
                let asked = Instant::now();
                let mut tries = 0;
                let n = loop {
                    tries += 1;
                    let res = get_json(&format!("{prom}/api/v1/query"), &[("query", &q)]);
                    let n = res["data"]["result"].as_array().map_or(0, Vec::len);
                    if n > 0 || asked.elapsed() > Duration::from_secs(15) {
                        break n;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                };
                assert!(
                    n > 0,
                    "{origin} returned no data for 15 s: {q}\nscrape health: {}",
                    scrape_health(&prom)
                );
                panel_report.push(format!("{n:>3} series  {origin} (try {tries})"));
            }
            let galert: Yaml = serde_yaml_ng::from_str(&read(GRAFANA_ALERT)).unwrap();
            let gexpr = galert["groups"][0]["rules"][0]["data"][0]["model"]["expr"]
                .as_str()
                .expect("Grafana alert expr")
                .to_string();
            let res = get_json(&format!("{prom}/api/v1/query"), &[("query", &gexpr)]);
            let by_vault: BTreeMap<String, f64> = res["data"]["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    (
                        s["metric"]["vault"].as_str().unwrap_or("").to_string(),
                        s["value"][1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                by_vault.get("nonrenew"),
                Some(&1.0),
                "Grafana alert query: {by_vault:?}"
            );
            assert_eq!(
                by_vault.get("healthy"),
                Some(&0.0),
                "Grafana alert query: {by_vault:?}"
            );
            assert_eq!(
                by_vault.get("capped"),
                Some(&0.0),
                "Grafana alert query: {by_vault:?}"
            );
            panel_report.push(format!("Grafana alert query by vault: {by_vault:?}"));
            panels_checked = true;
        }

        let expired_fired = watches
            .iter()
            .any(|w| w.situation == "expired" && w.fired.is_some());
        if expired_fired
            && capped_resolved_after_expiry.is_none()
            && !firing.contains(&("VaultTokenCapped".to_string(), "capped".to_string()))
        {
            capped_resolved_after_expiry = Some(now);
        }
        // Stays clear: at least 5 s (5 evaluations) after the fixed tokens' alerts cleared.
        let stayed_clear =
            cleared_at.is_some_and(|t| now.duration_since(t) > Duration::from_secs(5));
        if panels_checked && capped_resolved_after_expiry.is_some() && stayed_clear {
            break;
        }
        if Instant::now() > deadline {
            let state: Vec<String> = watches
                .iter()
                .map(|w| {
                    format!(
                        "{}{{vault={}}}: situation seen {:?}, fired {:?}",
                        w.alert,
                        w.vault,
                        w.seen.map(secs),
                        w.fired.map(secs)
                    )
                })
                .collect();
            panic!(
                "not every expected alert fired, or the fixed tokens' alerts did not clear, within 100 s \
                 (fixed at {:?}, cleared at {:?}):\n  {}\nfiring now: {firing:?}\n\
                 exporter log:\n{}\nprometheus log:\n{}",
                fixed_at.map(secs),
                cleared_at.map(secs),
                state.join("\n  "),
                exporter.log(),
                prometheus.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    eprintln!(
        "\nEnd-to-end run (tokens added at {:.1}s, exporter started at {:.1}s; \
         scrape and evaluation every 1 s, `for` 2 s):",
        secs(tokens_added),
        secs(exporter_started)
    );
    for w in &watches {
        let seen = w.seen.expect("situation seen");
        let fired = w.fired.expect("fired");
        let stored = w.stored.map_or(f64::NAN, |t| {
            fired.saturating_duration_since(t).as_secs_f64()
        });
        eprintln!(
            "  {:<24} vault={:<9} state {:<13} fired {:>4.1}s after the exporter exposed it, \
             {:>4.1}s after Prometheus stored it ({:>4.1}s after exporter start; activeAt {})",
            w.alert,
            w.vault,
            w.situation,
            fired.saturating_duration_since(seen).as_secs_f64(),
            stored,
            fired.duration_since(exporter_started).as_secs_f64(),
            w.active_at
        );
    }
    if let Some(t) = capped_resolved_after_expiry {
        eprintln!(
            "  VaultTokenCapped{{vault=capped}} resolved at {:.1}s, once the token expired",
            secs(t)
        );
    }
    eprintln!(
        "  pending (never firing) for healthy: {pending_healthy:?}\n  exporter scrapes: {}\n\
         Panel queries:\n  {}",
        scrape_health(&prom),
        panel_report.join("\n  ")
    );
    assert!(
        firing_after_fix.is_empty(),
        "alerts of fixed tokens fired again after they cleared: {firing_after_fix:?}"
    );
    assert!(
        unexpected.is_empty(),
        "alerts fired that must not: {unexpected:?}\nexporter log:\n{}",
        exporter.log()
    );
    drop(prometheus);
    drop(exporter);
}
