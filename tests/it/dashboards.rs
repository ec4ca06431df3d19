//! Checks that can fail for the bundled Grafana dashboard, Prometheus alert
//! rules and Grafana-managed alert (`dashboards/`):
//!
//! - every metric name they use is in the exporter's real `/metrics` output
//!   (the binary in `--demo` mode, which serves tokens in every state);
//! - every panel query (and the Grafana alert's query) parses, checked by
//!   `promtool check rules` on a rules file generated from them;
//! - `promtool check rules` and `promtool test rules` pass on the shipped
//!   rules and their unit tests;
//! - `promtool check metrics` is clean on a real scrape;
//! - the dashboard is importable as is (datasource variable, fixed uid, no
//!   `__inputs`) and its thresholds are the alert rules' thresholds.
//!
//! promtool comes from Debian's `prometheus` package; these tests fail (they
//! do not skip) when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use crate::common::{find_in_path, repo, temp_dir, Exporter, TempDir};

const DASHBOARD: &str = "dashboards/vault-token-exporter.json";
const RULES: &str = "dashboards/vault-token-exporter.rules.yml";
const RULES_TEST: &str = "dashboards/vault-token-exporter.rules.test.yml";
const GRAFANA_ALERT: &str = "dashboards/grafana-alert-not-renewable.yml";

/// Series that Prometheus itself makes for every target; the exporter
/// cannot expose them.
const PROMETHEUS_SYNTHESIZED: &[&str] = &["up", "ALERTS"];

/// Placeholder for the Prometheus data source UID in the Grafana alert file.
const GRAFANA_DS_PLACEHOLDER: &str = "${VAULT_TOKEN_EXPORTER_PROMETHEUS_UID}";

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).expect("dashboard JSON parses")
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

fn seq(v: &Yaml) -> &[Yaml] {
    v.as_sequence().map(|s| s.as_slice()).unwrap_or(&[])
}

fn ystr<'a>(v: &'a Yaml, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Yaml::as_str)
}

// ---------------------------------------------------------------------------
// PromQL: metric names and variable substitution
// ---------------------------------------------------------------------------

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Index just past the bracket that closes the one at `open`, skipping
/// quoted strings; `len` when it never closes (promtool reports that).
fn skip_bracket(b: &[u8], open: usize, close: u8) -> usize {
    let opener = b[open];
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            c if c == opener => {
                depth += 1;
                i += 1;
            }
            c if c == close => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// Index just past the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, aggregations, keywords, label names (inside `{}` or a grouping
/// clause), durations or numbers.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
        } else if c == b'{' {
            i = skip_bracket(b, i, b'}');
        } else if c == b'[' {
            i = skip_bracket(b, i, b']');
        } else if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            // numbers and durations: 0.99, 1e3, 0x1f, 5m, 1h30m
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let lower = word.to_ascii_lowercase();
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let next = b.get(j).copied();
            if GROUPING.contains(&lower.as_str()) {
                if next == Some(b'(') {
                    i = skip_bracket(b, j, b')');
                }
            } else if KEYWORDS.contains(&lower.as_str())
                || AGGREGATIONS.contains(&lower.as_str())
                || next == Some(b'(')
            {
                // keyword, aggregation or function call
            } else {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// A Grafana variable query (`label_values(selector, label)`,
/// `query_result(expr)`, `metrics(re)`) as the PromQL it runs, if any.
fn grafana_variable_promql(query: &str) -> Option<String> {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        // label_values(label) has no selector
        return inner
            .rfind(',')
            .map(|comma| inner[..comma].trim().to_string());
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Some(inner.to_string());
    }
    None
}

/// Grafana's variables as fixed PromQL. `job` is the job regex to use.
/// Panics on a variable it does not know, so a new one needs a decision here.
fn substitute_grafana_vars(expr: &str, job: &str, rate_interval: &str) -> String {
    let out = expr
        .replace("$__rate_interval", rate_interval)
        .replace("${__rate_interval}", rate_interval)
        .replace("$__interval", rate_interval)
        .replace("${vault}", ".+")
        .replace("$vault", ".+")
        .replace("${instance}", ".+")
        .replace("$instance", ".+")
        .replace("${job}", job)
        .replace("$job", job);
    assert!(
        !out.contains('$'),
        "unknown Grafana variable left in query after substitution: {out}"
    );
    out
}

// ---------------------------------------------------------------------------
// What the files use
// ---------------------------------------------------------------------------

/// A PromQL query found in one of the files, with where it came from.
struct Query {
    origin: String,
    expr: String,
}

/// Every panel (rows' nested panels included) of the dashboard.
fn dashboard_panels(d: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("dashboard has panels") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter());
        }
    }
    out
}

fn dashboard_queries(d: &Json) -> Vec<Query> {
    let mut out = Vec::new();
    for p in dashboard_panels(d) {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(expr) = t["expr"].as_str() {
                out.push(Query {
                    origin: format!(
                        "panel {} {:?} target {}",
                        p["id"],
                        p["title"].as_str().unwrap_or(""),
                        t["refId"].as_str().unwrap_or("?")
                    ),
                    expr: expr.to_string(),
                });
            }
        }
    }
    out
}

fn dashboard_variable_queries(d: &Json) -> Vec<Query> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .unwrap_or_else(|| panic!("variable {} has no query", v["name"]));
        let promql = grafana_variable_promql(q)
            .unwrap_or_else(|| panic!("variable {}: cannot read query {q:?}", v["name"]));
        out.push(Query {
            origin: format!("variable {}", v["name"]),
            expr: promql,
        });
    }
    out
}

fn rules_queries() -> Vec<Query> {
    let rules = yaml(RULES);
    let mut out = Vec::new();
    for g in seq(&rules["groups"]) {
        for r in seq(&g["rules"]) {
            let name = ystr(r, "alert")
                .or_else(|| ystr(r, "record"))
                .unwrap_or("?");
            out.push(Query {
                origin: format!("rule {name}"),
                expr: ystr(r, "expr")
                    .unwrap_or_else(|| panic!("rule {name} has no expr"))
                    .to_string(),
            });
        }
    }
    out
}

fn grafana_alert_queries() -> Vec<Query> {
    let doc = yaml(GRAFANA_ALERT);
    let mut out = Vec::new();
    for g in seq(&doc["groups"]) {
        for r in seq(&g["rules"]) {
            for d in seq(&r["data"]) {
                if ystr(d, "datasourceUid") == Some("__expr__") {
                    continue;
                }
                out.push(Query {
                    origin: format!(
                        "Grafana alert {} query {}",
                        ystr(r, "title").unwrap_or("?"),
                        ystr(d, "refId").unwrap_or("?")
                    ),
                    expr: d["model"]["expr"]
                        .as_str()
                        .expect("Grafana alert query has model.expr")
                        .to_string(),
                });
            }
        }
    }
    out
}

/// Words in free text (annotations, descriptions, test series) that name one
/// of our metrics: `vault_token_...` or `process_...`.
fn metric_words(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let at_word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if at_word_start && (b[i].is_ascii_alphabetic()) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = text[start..i].trim_end_matches('_');
            if (word.starts_with("vault_token_") || word.starts_with("process_"))
                && word.len() > "vault_token".len()
            {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Metric name -> where it is used, over all four files.
fn used_metric_names() -> BTreeMap<String, BTreeSet<String>> {
    let d = dashboard();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let queries = dashboard_queries(&d)
        .into_iter()
        .chain(dashboard_variable_queries(&d))
        .chain(rules_queries())
        .chain(grafana_alert_queries());
    for q in queries {
        for name in promql_metric_names(&q.expr) {
            used.entry(name).or_default().insert(q.origin.clone());
        }
    }
    // Names in templates (query "vault_token_ttl_seconds{...}"), panel
    // descriptions, comments and the unit tests' input series.
    for file in [DASHBOARD, RULES, RULES_TEST, GRAFANA_ALERT] {
        for name in metric_words(&read(file)) {
            used.entry(name).or_default().insert(file.to_string());
        }
    }
    used
}

// ---------------------------------------------------------------------------
// Tools and the exporter
// ---------------------------------------------------------------------------

fn promtool() -> PathBuf {
    find_in_path("promtool").unwrap_or_else(|| {
        panic!(
            "promtool not found in PATH. It is in Debian's prometheus package: \
             apt-get install -y --no-install-recommends prometheus (.ci/run installs it)"
        )
    })
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The exporter in `--demo`, through the shared harness.
fn demo_exporter() -> Exporter {
    Exporter::start_in(temp_dir("dashboards-demo"), &["--demo".to_string()], &[])
}

/// The exporter's `/metrics` URL.
fn metrics_url(exporter: &Exporter) -> String {
    format!("http://{}/metrics", exporter.addr)
}

fn http_get(url: &str) -> String {
    ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_string()
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
}

/// Metric names in a text exposition: sample names, plus the family names of
/// `# TYPE` lines (so a histogram's base name counts too).
fn exposed_metric_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn promql_metric_name_extraction() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"sum by (vault, le) (rate(foo_bucket{a="b}",c=~"x"}[5m])) > on(vault) group_left(x, y) bar_total offset 1h"#,
            &["bar_total", "foo_bucket"],
        ),
        (
            "(x < 3600) > 0 and on (vault, instance) (y == 0 or z == 1) unless ignoring(state) w",
            &["w", "x", "y", "z"],
        ),
        (r#"absent(up{job=~".*vault-token.*"})"#, &["up"]),
        (
            "histogram_quantile(0.99, sum without (instance) (rate(h_bucket[1m])))",
            &["h_bucket"],
        ),
        (
            r#"max by (vault) (s{state="a"} * 1 or s{state="b"} * 2) * 1e3"#,
            &["s"],
        ),
        ("time() - max(last_ts)", &["last_ts"]),
        ("ns:rule:recorded > bool 1", &["ns:rule:recorded"]),
    ];
    for (expr, want) in cases {
        let got: Vec<String> = promql_metric_names(expr).into_iter().collect();
        assert_eq!(got, *want, "metric names of {expr}");
    }
    assert_eq!(
        grafana_variable_promql("label_values(vault_token_state, vault)").as_deref(),
        Some("vault_token_state")
    );
    assert_eq!(grafana_variable_promql("label_values(job)"), None);
    let words = metric_words(
        "see vault_token_ttl_seconds{x} and vault_token_* or process_cpu_seconds_total.",
    );
    assert_eq!(
        words.into_iter().collect::<Vec<_>>(),
        ["process_cpu_seconds_total", "vault_token_ttl_seconds"]
    );
}

#[test]
fn dashboard_imports_without_surgery() {
    let d = dashboard();
    assert_eq!(d["uid"], "vault-token-exporter", "fixed uid");
    assert!(
        d.get("__inputs").is_none(),
        "no __inputs: file provisioning cannot fill them"
    );
    assert!(
        d.get("id").is_none_or(Json::is_null),
        "no instance id in a shipped dashboard"
    );

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("dashboard variable {name} missing"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");

    let query_of = |v: &Json| {
        v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .unwrap()
            .to_string()
    };
    for name in ["job", "instance", "vault"] {
        let v = var(name);
        assert_eq!(v["type"], "query");
        assert_eq!(v["multi"], true, "{name} is multi-select");
        assert_eq!(v["includeAll"], true, "{name} has All");
    }
    // Each variable offers only what the ones before it select.
    assert_eq!(
        query_of(var("instance")),
        "label_values(vault_token_exporter_build_info{job=~\"$job\"}, instance)"
    );
    assert_eq!(
        query_of(var("vault")),
        "label_values(vault_token_state{job=~\"$job\", instance=~\"$instance\"}, vault)"
    );

    let want_ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"], want_ds,
            "variable {} data source",
            v["name"]
        );
    }

    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for p in dashboard_panels(&d) {
        assert!(
            ids.insert(p["id"].to_string()),
            "duplicate panel id {}",
            p["id"]
        );
        let title = p["title"].as_str().unwrap_or("");
        assert!(!title.is_empty(), "panel {} has a title", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"], want_ds, "panel {title:?} data source");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has queries");
        for t in targets {
            assert_eq!(
                t["datasource"], want_ds,
                "panel {title:?} target data source"
            );
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !expr.trim().is_empty(),
                "panel {title:?} target has an expr"
            );
            // Every panel follows the job and instance selection; token panels the
            // vault selection too (the alert list also shows exporter-level alerts,
            // which have no vault label).
            for selector in ["job=~\"$job\"", "instance=~\"$instance\""] {
                assert!(
                    expr.contains(selector),
                    "panel {title:?}: query ignores {selector}: {expr}"
                );
            }
            let exporter_level =
                expr.contains("up{") || expr.contains("process_") || expr.contains("exporter_");
            if expr.contains("ALERTS{") {
                assert!(expr.contains("vault=~\"$vault|\""), "{title:?}: {expr}");
            } else if !exporter_level {
                assert!(
                    expr.contains("vault=~\"$vault\""),
                    "panel {title:?}: token query ignores $vault: {expr}"
                );
            }
            queried += 1;
        }
    }
    assert!(queried >= 10, "only {queried} panel queries");

    // The panels the issue asks for: a panel (not a description) queries each.
    let exprs: Vec<String> = dashboard_queries(&d).into_iter().map(|q| q.expr).collect();
    for metric in [
        "vault_token_ttl_seconds",
        "vault_token_expiry_timestamp_seconds",
        "vault_token_max_expiry_timestamp_seconds",
        "vault_token_consecutive_failures",
        "ALERTS",
        "vault_token_state",
        "vault_token_renewals_total",
        "vault_token_renewal_failures_total",
        "vault_token_last_renewal_timestamp_seconds",
        "vault_token_next_renewal_timestamp_seconds",
        "vault_token_renewal_duration_seconds_bucket",
        "vault_token_exporter_collector_success",
        "up",
    ] {
        assert!(
            exprs
                .iter()
                .any(|e| promql_metric_names(e).contains(metric)),
            "no panel queries {metric}"
        );
    }
    // Every state has a name on the state panels.
    let text = read(DASHBOARD);
    for state in [
        "renewing",
        "never_expires",
        "not_renewable",
        "capped",
        "invalid",
        "expired",
    ] {
        assert!(
            text.contains(&format!("state=\\\"{state}\\\"")),
            "state panel does not map state {state}"
        );
    }
}

/// True when a query returns one series per token: a `vault_token_*` metric not
/// aggregated away from its `vault` label, and not limited by `topk`/`bottomk`.
fn one_series_per_token(expr: &str) -> bool {
    let per_token_metric = promql_metric_names(expr)
        .iter()
        .any(|m| m.starts_with("vault_token_") && !m.starts_with("vault_token_exporter_"));
    if !per_token_metric || expr.contains("topk(") || expr.contains("bottomk(") {
        return false;
    }
    let clauses: Vec<&str> = expr
        .split("by (")
        .skip(1)
        .map(|rest| rest.split(')').next().unwrap_or(""))
        .collect();
    clauses.is_empty() || clauses.iter().any(|c| c.contains("vault"))
}

/// At hundreds of tokens a tile or a line per token is noise: outside the
/// collapsed tiles row, only tables show one row per token, and graphs
/// aggregate or keep the few closest to expiry. The main table is sorted by
/// time left, colours the state, and shows the max expiry beside the expiry;
/// an alert list sits above it.
#[test]
fn dashboard_stays_usable_at_hundreds_of_tokens() {
    assert!(one_series_per_token(
        "vault_token_ttl_seconds{vault=~\"a\"}"
    ));
    assert!(one_series_per_token(
        "max by (instance, vault) (vault_token_state)"
    ));
    assert!(!one_series_per_token(
        "sum by (result) (vault_token_renewals_total)"
    ));
    assert!(!one_series_per_token(
        "bottomk(20, vault_token_ttl_seconds)"
    ));
    assert!(!one_series_per_token("up{job=~\"x\"}"));

    let d = dashboard();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap_or("");
        if p["type"] == "row" {
            if p["panels"]
                .as_array()
                .is_some_and(|nested| !nested.is_empty())
            {
                assert_eq!(
                    p["collapsed"], true,
                    "row {title:?} with panels is collapsed"
                );
            }
            continue;
        }
        if p["type"] == "table" {
            continue;
        }
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(
                !one_series_per_token(expr),
                "panel {title:?} draws one series per token outside the collapsed row: {expr}"
            );
        }
    }

    let tables: Vec<&Json> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "table")
        .collect();
    let main = tables
        .iter()
        .find(|p| {
            p["targets"].as_array().unwrap().iter().any(|t| {
                t["expr"]
                    .as_str()
                    .unwrap_or("")
                    .contains("vault_token_max_expiry_timestamp_seconds")
            })
        })
        .expect("a top-level table shows the max expiry");
    assert_eq!(main["options"]["sortBy"][0]["displayName"], "Time left");
    assert_eq!(main["options"]["sortBy"][0]["desc"], false, "soonest first");
    let name_of_ref = |metric: &str| {
        let target = main["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| {
                let expr = t["expr"].as_str().unwrap_or("");
                expr.contains(metric) && expr.ends_with("* 1000")
            })
            .unwrap_or_else(|| panic!("main table shows {metric} as a time"));
        format!("Value #{}", target["refId"].as_str().unwrap())
    };
    let order = &main["transformations"][1]["options"]["indexByName"];
    let expiry = order[name_of_ref("vault_token_expiry_timestamp_seconds")]
        .as_i64()
        .expect("expiry column placed");
    let max_expiry = order[name_of_ref("vault_token_max_expiry_timestamp_seconds")]
        .as_i64()
        .expect("max expiry column placed");
    assert_eq!(max_expiry, expiry + 1, "max expiry right beside expiry");
    let state_colours = main["fieldConfig"]["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| {
            o["properties"].as_array().unwrap().iter().any(|p| {
                p["id"] == "mappings" && p["value"].to_string().contains("\"not renewable\"")
            })
        });
    assert!(state_colours, "the main table colours the state");
    let alert_list = tables
        .iter()
        .position(|p| {
            p["targets"][0]["expr"]
                .as_str()
                .unwrap_or("")
                .contains("ALERTS{")
        })
        .expect("an alert list");
    let main_at = tables.iter().position(|p| std::ptr::eq(*p, *main)).unwrap();
    assert!(alert_list < main_at, "alerts first");
}

/// The 1 h threshold of VaultTokenExpiringSoon, read from the rules file,
/// is a threshold step of every dashboard panel that shows time left.
#[test]
fn dashboard_thresholds_match_alert_rules() {
    let rules = rules_queries();
    let expiring = rules
        .iter()
        .find(|q| q.origin == "rule VaultTokenExpiringSoon")
        .expect("VaultTokenExpiringSoon rule");
    let after = expiring
        .expr
        .split("vault_token_ttl_seconds <")
        .nth(1)
        .expect("ExpiringSoon compares vault_token_ttl_seconds <");
    let threshold: f64 = after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap()
        .parse()
        .expect("numeric threshold");
    assert!(threshold > 0.0);

    let d = dashboard();
    let mut checked = 0;
    for p in dashboard_panels(&d) {
        let shows_ttl = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .any(|t| {
                t["expr"]
                    .as_str()
                    .unwrap_or("")
                    .contains("vault_token_ttl_seconds")
            });
        if !shows_ttl {
            continue;
        }
        let mut steps: Vec<f64> = p["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .filter_map(|s| s["value"].as_f64())
            .collect();
        for o in p["fieldConfig"]["overrides"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            for prop in o["properties"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                if prop["id"] == "thresholds" {
                    steps.extend(
                        prop["value"]["steps"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter_map(|s| s["value"].as_f64()),
                    );
                }
            }
        }
        assert!(
            steps.contains(&threshold),
            "panel {:?} shows time left but has no threshold at {threshold} s (steps {steps:?})",
            p["title"]
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} time-left panels checked");

    // The 7-day threshold of VaultTokenMaxExpiryNear colours the time until the
    // max expiry in the tokens table.
    let near = rules
        .iter()
        .find(|q| q.origin == "rule VaultTokenMaxExpiryNear")
        .expect("VaultTokenMaxExpiryNear rule");
    let product: f64 = near
        .expr
        .split("time() <")
        .nth(1)
        .expect("MaxExpiryNear compares max expiry - time() <")
        .lines()
        .next()
        .unwrap()
        .split('*')
        .map(|f| f.trim().parse::<f64>().expect("a product of numbers"))
        .product();
    let mut max_checked = 0;
    for p in dashboard_panels(&d) {
        for (i, t) in p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let expr = t["expr"].as_str().unwrap_or("");
            if !(expr.contains("vault_token_max_expiry_timestamp_seconds")
                && expr.contains("time()"))
            {
                continue;
            }
            let field = format!("Value #{}", t["refId"].as_str().unwrap_or(&i.to_string()));
            let override_steps: Vec<f64> = p["fieldConfig"]["overrides"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["matcher"]["options"] == field.as_str())
                .flat_map(|o| o["properties"].as_array().unwrap().iter())
                .filter(|prop| prop["id"] == "thresholds")
                .flat_map(|prop| prop["value"]["steps"].as_array().unwrap().iter())
                .filter_map(|step| step["value"].as_f64())
                .collect();
            assert!(
                override_steps.contains(&product),
                "panel {:?} {field}: no threshold at {product} s ({override_steps:?})",
                p["title"]
            );
            max_checked += 1;
        }
    }
    assert!(
        max_checked >= 1,
        "no panel shows the time until the max expiry"
    );

    // Up and collector success panels turn red at 0, as their alerts fire.
    for title in ["Exporter up", "Collector health"] {
        let p = dashboard_panels(&d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("panel {title}"));
        let steps = &p["fieldConfig"]["defaults"]["thresholds"]["steps"];
        assert_eq!(steps[0]["color"], "red", "{title}: base colour");
        assert_eq!(steps[1]["value"], 1.0, "{title}: green from 1");
    }
}

#[test]
fn alert_rules_are_documented_and_unit_tested() {
    let text = read(RULES);
    let rules = yaml(RULES);
    let lines: Vec<&str> = text.lines().collect();
    let mut alerts = Vec::new();
    for g in seq(&rules["groups"]) {
        for r in seq(&g["rules"]) {
            let name = ystr(r, "alert").expect("only alerting rules").to_string();
            let sev = r["labels"]["severity"].as_str().unwrap_or("");
            assert!(
                sev == "warning" || sev == "critical",
                "{name}: severity {sev:?}"
            );
            let summary = r["annotations"]["summary"].as_str().unwrap_or("");
            let description = r["annotations"]["description"].as_str().unwrap_or("");
            assert!(!summary.is_empty(), "{name}: summary");
            assert!(
                description.len() > 80,
                "{name}: description says what to do"
            );
            let per_token = promql_metric_names(ystr(r, "expr").unwrap())
                .iter()
                .any(|m| m.starts_with("vault_token_") && !m.starts_with("vault_token_exporter_"));
            let names = if per_token {
                "$labels.vault"
            } else {
                "$labels.instance"
            };
            assert!(
                description.contains(names),
                "{name}: description names {names}"
            );
            // The comment block above the rule explains threshold and for.
            let at = lines
                .iter()
                .position(|l| l.trim() == format!("- alert: {name}"))
                .unwrap_or_else(|| panic!("{name}: `- alert: {name}` line"));
            let comment: Vec<&str> = lines[..at]
                .iter()
                .rev()
                .take_while(|l| l.trim_start().starts_with('#'))
                .copied()
                .collect();
            assert!(comment.len() >= 2, "{name}: comment above the rule");
            assert!(
                comment.iter().any(|l| l.contains("for")),
                "{name}: comment explains its `for`"
            );
            assert!(ystr(r, "for").is_some(), "{name}: has a for");
            alerts.push(name);
        }
    }
    for must in [
        "VaultTokenNotRenewable",
        "VaultTokenCapped",
        "VaultTokenRenewalsFailing",
        "VaultTokenExpiringSoon",
        "VaultTokenInvalid",
        "VaultTokenMaxExpiryNear",
        "VaultTokenExporterDown",
        "VaultTokenExporterCollectorFailing",
        "VaultUnreachable",
        "VaultSealed",
        "VaultClockSkew",
    ] {
        assert!(alerts.iter().any(|a| a == must), "alert {must} missing");
    }

    // Each alert is seen firing and seen silent in the promtool tests.
    let tests = yaml(RULES_TEST);
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in seq(&tests["tests"]) {
        for a in seq(&t["alert_rule_test"]) {
            let name = ystr(a, "alertname").unwrap().to_string();
            if seq(&a["exp_alerts"]).is_empty() {
                silent.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for a in &alerts {
        assert!(fires.contains(a), "no promtool test where {a} fires");
        assert!(
            silent.contains(a),
            "no promtool test where {a} stays silent"
        );
    }
}

#[test]
fn grafana_alert_provisioning_file() {
    let doc = yaml(GRAFANA_ALERT);
    assert_eq!(doc["apiVersion"].as_u64(), Some(1));
    let groups = seq(&doc["groups"]);
    assert!(!groups.is_empty());
    let mut rules = 0;
    for g in groups {
        assert!(
            ystr(g, "folder").is_some_and(|f| !f.is_empty()),
            "group folder"
        );
        assert!(ystr(g, "interval").is_some(), "group interval");
        for r in seq(&g["rules"]) {
            rules += 1;
            let title = ystr(r, "title").expect("title");
            assert!(ystr(r, "uid").is_some_and(|u| !u.is_empty() && u.len() <= 40));
            let refs: Vec<&str> = seq(&r["data"])
                .iter()
                .map(|d| ystr(d, "refId").expect("refId"))
                .collect();
            let cond = ystr(r, "condition").expect("condition");
            assert!(refs.contains(&cond), "{title}: condition {cond} is a refId");
            for d in seq(&r["data"]) {
                let uid = ystr(d, "datasourceUid").expect("datasourceUid");
                assert!(
                    uid == "__expr__" || uid == GRAFANA_DS_PLACEHOLDER,
                    "{title}: datasourceUid {uid:?} is neither an expression nor the placeholder"
                );
                if uid == "__expr__" {
                    let input = d["model"]["expression"].as_str().unwrap_or("");
                    assert!(refs.contains(&input), "{title}: expression input {input}");
                }
            }
            assert_eq!(r["labels"]["severity"].as_str(), Some("warning"));
            for key in ["summary", "description"] {
                let a = r["annotations"][key].as_str().unwrap_or("");
                assert!(
                    a.contains("{{ .Labels.vault }}"),
                    "{title}: {key} names the vault"
                );
                // Grafana expands $words of provisioning files as env vars.
                assert!(!a.contains('$'), "{title}: {key} contains a `$`");
            }
            let expr: String = grafana_alert_queries()
                .into_iter()
                .map(|q| q.expr)
                .collect();
            assert!(
                expr.contains("state=\"not_renewable\""),
                "{title}: queries not_renewable"
            );
        }
    }
    assert_eq!(rules, 1);
    assert!(
        read(GRAFANA_ALERT).contains(&format!("datasourceUid: {GRAFANA_DS_PLACEHOLDER}")),
        "placeholder documented in the file"
    );
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let promtool = promtool();
    let dir = repo().join("dashboards");
    let check = run(Command::new(&promtool).current_dir(&dir).args([
        "check",
        "rules",
        "vault-token-exporter.rules.yml",
    ]));
    assert!(check.status.success(), "promtool check rules failed");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        stdout.contains("SUCCESS: 11 rules found"),
        "rule count: {stdout}"
    );

    let test = run(Command::new(&promtool).current_dir(&dir).args([
        "test",
        "rules",
        "vault-token-exporter.rules.test.yml",
    ]));
    assert!(test.status.success(), "promtool test rules failed");
}

/// Every panel query, variable query and the Grafana alert's query, with
/// Grafana's variables substituted, as a rules file `promtool check rules`
/// must accept.
#[test]
fn panel_queries_parse() {
    let d = dashboard();
    let queries: Vec<Query> = dashboard_queries(&d)
        .into_iter()
        .chain(dashboard_variable_queries(&d))
        .chain(grafana_alert_queries())
        .collect();
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let expr = substitute_grafana_vars(&q.expr, ".+", "1m");
        rules.push_str(&format!(
            "      # {}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            q.origin.replace('\n', " "),
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let tmp = TempDir::new("panels");
    let file = tmp.path().join("panel-queries.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = run(Command::new(promtool())
        .arg("check")
        .arg("rules")
        .arg(&file));
    assert!(
        out.status.success(),
        "a panel query does not parse; generated file:\n{rules}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{stdout}"
    );
}

/// Scrape the demo exporter until every name the files use is exposed (some
/// appear only after the first renewal), or fail after 60 s naming the
/// missing ones.
#[test]
fn every_metric_used_is_exposed_by_the_exporter() {
    let used = used_metric_names();
    assert!(
        used.len() >= 15,
        "only {} names found: {used:?}",
        used.len()
    );
    let exporter = demo_exporter();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = http_get(&metrics_url(&exporter));
        let exposed = exposed_metric_names(&body);
        let missing: Vec<String> = used
            .iter()
            .filter(|(name, _)| {
                !exposed.contains(*name) && !PROMETHEUS_SYNTHESIZED.contains(&name.as_str())
            })
            .map(|(name, origins)| format!("{name} (used by {origins:?})"))
            .collect();
        if missing.is_empty() {
            eprintln!(
                "all {} metric names used by dashboards/ are exposed ({} names in the scrape)",
                used.len(),
                exposed.len()
            );
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "metric names used by dashboards/ but not in the exporter's /metrics after 60 s:\n  {}\n\
                 exposed: {exposed:?}\nexporter log:\n{}",
                missing.join("\n  "),
                exporter.log()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn promtool_check_metrics_is_clean_on_a_real_scrape() {
    let promtool = promtool();
    let exporter = demo_exporter();
    // Let the demo tokens be looked up and renewed once, so the scrape has
    // every family with samples (histograms, timestamps, info).
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = http_get(&metrics_url(&exporter));
        let names = exposed_metric_names(&body);
        if names.contains("vault_token_renewal_duration_seconds_bucket")
            && names.contains("vault_token_info")
            || Instant::now() > deadline
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        body.contains("vault_token_state{"),
        "scrape has token metrics:\n{body}"
    );
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "promtool check metrics on {} bytes, {} lines: exit {:?}\n{report}",
        body.len(),
        body.lines().count(),
        out.status.code()
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems (exit {:?}):\n{report}",
        out.status.code()
    );
}
