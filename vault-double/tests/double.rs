//! Black-box tests of the Vault double over real loopback sockets, with a tiny std-only client.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_double::{
    ApiVersion, Fault, TokenSpec, VaultDouble, INVALID_TOKEN_LEGACY, INVALID_TOKEN_V1_17,
    POLICY_DENIED,
};

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn error(&self) -> String {
        let v = self.json();
        let errs = v["errors"].as_array().expect("errors array");
        assert_eq!(errs.len(), 1, "exactly one error string: {v}");
        errs[0].as_str().unwrap().to_string()
    }
}

fn request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    close: bool,
) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: vault\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if close {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

/// Reads one response (Content-Length framed, or to EOF).
fn read_response<R: BufRead>(r: &mut R, head_request: bool) -> std::io::Result<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "no response"));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("header");
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let mut body = Vec::new();
    if !head_request {
        match len {
            Some(n) => {
                body.resize(n, 0);
                r.read_exact(&mut body)?;
            }
            None => {
                r.read_to_end(&mut body)?;
            }
        }
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&request_bytes(method, path, headers, body, true))?;
    read_response(&mut BufReader::new(s), method == "HEAD")
}

fn call(v: &VaultDouble, method: &str, path: &str, token: Option<&str>, body: &str) -> Resp {
    let mut h = vec![("X-Vault-Request", "true")];
    if let Some(t) = token {
        h.push(("X-Vault-Token", t));
    }
    send(v.addr(), method, path, &h, body).expect("request")
}

const LOOKUP: &str = "/v1/auth/token/lookup-self";
const RENEW: &str = "/v1/auth/token/renew-self";

fn lookup(v: &VaultDouble, t: &str) -> Resp {
    call(v, "GET", LOOKUP, Some(t), "")
}

fn renew(v: &VaultDouble, t: &str, body: &str) -> Resp {
    call(v, "PUT", RENEW, Some(t), body)
}

/// Vault's humanDuration for the few values the tests need.
fn human(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn ttl_warning(requested: i64, left: i64) -> String {
    format!(
        "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
        human(requested),
        human(left)
    )
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// Top-level keys in wire order.
fn wire_key_order(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut order = Vec::new();
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
        "mount_type",
    ] {
        if let Some(i) = text.find(&format!("\"{k}\":")) {
            order.push((i, k.to_string()));
        }
    }
    order.sort();
    order.into_iter().map(|(_, k)| k).collect()
}

// ---------------------------------------------------------------------------------------------
// lookup-self
// ---------------------------------------------------------------------------------------------

#[test]
fn lookup_service_token_has_vaults_shape() {
    let v = VaultDouble::start();
    let t = v.add_token(
        TokenSpec::service(3600)
            .policies(&["zeta", "default", "alpha"])
            .meta(&[("role_name", "app")])
            .display_name("approle")
            .path("auth/approle/login"),
    );
    assert!(t.starts_with("hvs.") && t.len() == 28, "{t}");
    let r = lookup(&v, &t);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body.last(), Some(&b'\n'));
    assert_eq!(
        wire_key_order(&r.body),
        [
            "request_id",
            "lease_id",
            "renewable",
            "lease_duration",
            "data",
            "wrap_info",
            "warnings",
            "auth",
            "mount_type"
        ]
    );
    let j = r.json();
    assert_eq!(j["lease_id"], "");
    assert_eq!(j["renewable"], false);
    assert_eq!(j["lease_duration"], 0);
    assert_eq!(j["wrap_info"], Value::Null);
    assert_eq!(j["warnings"], Value::Null);
    assert_eq!(j["auth"], Value::Null);
    assert_eq!(j["mount_type"], "token");
    assert_eq!(j["request_id"].as_str().unwrap().len(), 36);
    let d = &j["data"];
    assert_eq!(
        keys(d),
        [
            "accessor",
            "creation_time",
            "creation_ttl",
            "display_name",
            "entity_id",
            "expire_time",
            "explicit_max_ttl",
            "id",
            "issue_time",
            "meta",
            "num_uses",
            "orphan",
            "path",
            "policies",
            "renewable",
            "ttl",
            "type"
        ]
    );
    assert_eq!(d["id"], t.as_str());
    assert_eq!(d["accessor"].as_str().unwrap().len(), 24);
    assert_eq!(
        d["policies"],
        serde_json::json!(["alpha", "default", "zeta"])
    );
    assert_eq!(d["meta"], serde_json::json!({"role_name": "app"}));
    assert_eq!(d["display_name"], "approle");
    assert_eq!(d["path"], "auth/approle/login");
    assert_eq!(d["orphan"], true);
    assert_eq!(d["creation_ttl"], 3600);
    assert_eq!(d["explicit_max_ttl"], 0);
    assert_eq!(d["entity_id"], "");
    assert_eq!(d["num_uses"], 0);
    assert_eq!(d["renewable"], true);
    assert_eq!(d["type"], "service");
    let ttl = d["ttl"].as_i64().unwrap();
    assert!((3599..=3600).contains(&ttl), "{ttl}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((d["creation_time"].as_i64().unwrap() - now).abs() <= 1);
    for k in ["expire_time", "issue_time"] {
        let s = d[k].as_str().unwrap();
        assert!(
            s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.len() >= 20,
            "{k}: {s}"
        );
    }
    // auth/token/create tokens have a parent
    let t2 = v.add_token(TokenSpec::service(60));
    assert_eq!(lookup(&v, &t2).json()["data"]["orphan"], false);
}

#[test]
fn ttl_counts_down_and_expire_time_stays_fixed() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(30));
    let a = lookup(&v, &t).json();
    thread::sleep(Duration::from_millis(1100));
    let b = lookup(&v, &t).json();
    assert_eq!(a["data"]["expire_time"], b["data"]["expire_time"]);
    assert_eq!(a["data"]["creation_ttl"], b["data"]["creation_ttl"]);
    let (ta, tb) = (
        a["data"]["ttl"].as_i64().unwrap(),
        b["data"]["ttl"].as_i64().unwrap(),
    );
    assert!(tb < ta && ta - tb <= 2, "{ta} -> {tb}");
    let now = v.token_ttl(&t).unwrap();
    assert!(now == tb || now == tb - 1, "{now} vs {tb}");
}

#[test]
fn expired_token_gets_403_and_age_token_skips_waiting() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(10));
    v.age_token(&t, Duration::from_secs(11));
    let r = lookup(&v, &t);
    assert_eq!(r.status, 403);
    assert_eq!(r.error(), INVALID_TOKEN_V1_17);
    assert_eq!(v.token_ttl(&t), None);
    assert_eq!(renew(&v, &t, "").status, 403);
}

#[test]
fn root_batch_and_periodic_lookup_shapes() {
    let v = VaultDouble::start();
    let root = v.add_token(TokenSpec::root_init());
    let d = lookup(&v, &root).json()["data"].clone();
    assert!(
        d.get("renewable").is_none() && d.get("issue_time").is_none(),
        "{d}"
    );
    assert_eq!(d["expire_time"], Value::Null);
    assert_eq!(d["ttl"], 0);
    assert_eq!(d["creation_ttl"], 0);
    assert_eq!(d["path"], "auth/token/root");
    assert_eq!(d["display_name"], "root");
    assert_eq!(d["policies"], serde_json::json!(["root"]));
    assert_eq!(d["orphan"], true);
    assert_eq!(v.token_ttl(&root), Some(0));

    v.add_token_with_id("root", TokenSpec::root_created());
    let d = lookup(&v, "root").json()["data"].clone();
    assert_eq!(d["id"], "root");
    assert_eq!(d["renewable"], false);
    assert!(d["issue_time"].is_string());
    assert_eq!(d["expire_time"], Value::Null);
    assert_eq!(d["ttl"], 0);
    assert_eq!(d["path"], "auth/token/create");

    let b = v.add_token(TokenSpec::batch(600));
    assert!(b.starts_with("hvb.") && b.len() > 100);
    let d = lookup(&v, &b).json()["data"].clone();
    assert_eq!(d["type"], "batch");
    assert_eq!(d["accessor"], "");
    assert_eq!(d["renewable"], false);
    let exp = d["expire_time"].as_str().unwrap();
    assert!(!exp.contains('.'), "batch times are whole seconds: {exp}");
    assert!(!d["issue_time"].as_str().unwrap().contains('.'));
    assert!(d["ttl"].as_i64().unwrap() > 590);

    let p = v.add_token(TokenSpec::periodic(600));
    let d = lookup(&v, &p).json()["data"].clone();
    assert_eq!(d["period"], 600);
    assert_eq!(d["creation_ttl"], 600);
    assert!(d["ttl"].as_i64().unwrap() <= 600);
}

// ---------------------------------------------------------------------------------------------
// renew-self
// ---------------------------------------------------------------------------------------------

#[test]
fn renew_answers_in_auth_lease_duration_with_top_level_zero() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(3600).policies(&["exporter", "default"]));
    let r = renew(&v, &t, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        wire_key_order(&r.body),
        [
            "request_id",
            "lease_id",
            "renewable",
            "lease_duration",
            "data",
            "wrap_info",
            "warnings",
            "auth",
            "mount_type"
        ]
    );
    let j = r.json();
    assert_eq!(j["lease_duration"], 0);
    assert_eq!(j["renewable"], false);
    assert_eq!(j["data"], Value::Null);
    assert_eq!(j["warnings"], Value::Null);
    let a = &j["auth"];
    assert_eq!(
        keys(a),
        // serde_json sorts keys on parse; the wire order is checked below
        [
            "accessor",
            "client_token",
            "entity_id",
            "lease_duration",
            "metadata",
            "mfa_requirement",
            "num_uses",
            "orphan",
            "policies",
            "renewable",
            "token_policies",
            "token_type"
        ]
    );
    assert!(r.text().contains("\"auth\":{\"client_token\":"));
    assert_eq!(a["client_token"], t.as_str());
    assert_eq!(a["lease_duration"], 3600);
    assert_eq!(a["renewable"], true);
    assert_eq!(a["policies"], serde_json::json!(["default", "exporter"]));
    assert_eq!(a["token_policies"], a["policies"]);
    assert_eq!(a["metadata"], Value::Null);
    assert_eq!(a["token_type"], "service");
    assert_eq!(a["mfa_requirement"], Value::Null);
    assert_eq!(a["orphan"], false);
    let d = lookup(&v, &t).json()["data"].clone();
    assert!(d["last_renewal"].is_string());
    assert!(d["last_renewal_time"].is_i64());
    assert_eq!(d["creation_ttl"], 3600);
    // POST works too, and so does a body with an explicit zero increment.
    assert_eq!(
        call(&v, "POST", RENEW, Some(&t), "{\"increment\":0}").status,
        200
    );
}

#[test]
fn increment_is_a_new_ttl_from_now_and_sticks() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(3600));
    let lease = |r: Resp| r.json()["auth"]["lease_duration"].as_i64().unwrap();
    assert_eq!(lease(renew(&v, &t, "{\"increment\": 60}")), 60);
    assert_eq!(
        lease(renew(&v, &t, "")),
        60,
        "no increment reuses the last granted TTL"
    );
    assert_eq!(lease(renew(&v, &t, "{}")), 60);
    assert_eq!(lease(renew(&v, &t, "{\"increment\": \"2m\"}")), 120);
    assert_eq!(lease(renew(&v, &t, "{\"increment\": \"1h\"}")), 3600);
    assert_eq!(lease(renew(&v, &t, "{\"increment\": \"90\"}")), 90);
    let ttl = lookup(&v, &t).json()["data"]["ttl"].as_i64().unwrap();
    assert!((89..=90).contains(&ttl), "{ttl}");
    assert_eq!(lookup(&v, &t).json()["data"]["creation_ttl"], 3600);
}

#[test]
fn renewal_capped_by_explicit_max_ttl_warns_exactly() {
    let v = VaultDouble::start();
    // 1h token, explicit max 90m, renewed 45 min after issue (§3.3's example).
    let t = v.add_token(TokenSpec::service(3600).explicit_max_ttl(5400));
    v.age_token(&t, Duration::from_secs(2700));
    let r = renew(&v, &t, "");
    assert_eq!(r.status, 200);
    let j = r.json();
    let got = j["auth"]["lease_duration"].as_i64().unwrap();
    // 2699 only if a second boundary passed between minting and renewing
    assert!(got == 2700 || got == 2699, "{got}");
    assert_eq!(j["warnings"], serde_json::json!([ttl_warning(3600, got)]));
    if got == 2700 {
        assert_eq!(
            j["warnings"][0],
            "TTL of \"1h\" exceeded the effective max_ttl of \"45m\"; TTL value is capped accordingly"
        );
    }
    assert_eq!(j["lease_duration"], 0);
    // the capped TTL is what lookup reports and what sticks
    let ttl = lookup(&v, &t).json()["data"]["ttl"].as_i64().unwrap();
    assert!(ttl <= got && ttl >= got - 1);
}

#[test]
fn mount_max_ttl_caps_and_past_max_refuses() {
    let v = VaultDouble::start();
    v.set_mount_max_ttl(7200);
    let t = v.add_token(TokenSpec::service(7200));
    v.age_token(&t, Duration::from_secs(5400));
    let j = renew(&v, &t, "{\"increment\":3600}").json();
    let got = j["auth"]["lease_duration"].as_i64().unwrap();
    assert!(got == 1800 || got == 1799, "{got}");
    assert_eq!(j["warnings"][0], ttl_warning(3600, got));

    // The mount max is re-read at each renewal: tuning it down below the token's age
    // leaves it alive but unrenewable.
    let t = v.add_token(TokenSpec::service(3600));
    v.age_token(&t, Duration::from_secs(120));
    v.set_mount_max_ttl(60);
    assert_eq!(lookup(&v, &t).status, 200);
    let r = renew(&v, &t, "");
    assert_eq!(r.status, 500);
    assert!(r.error().contains("past the max TTL, cannot renew"));
}

#[test]
fn periodic_tokens_reset_to_period_and_warn_when_capped() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::periodic(600));
    v.age_token(&t, Duration::from_secs(100));
    let ttl = lookup(&v, &t).json()["data"]["ttl"].as_i64().unwrap();
    assert!(ttl <= 500);
    let j = renew(&v, &t, "{\"increment\": 5}").json();
    assert_eq!(j["auth"]["lease_duration"], 600, "increment is ignored");
    assert_eq!(j["warnings"], Value::Null);
    // no overall max without explicit_max_ttl: renewable long after the mount max
    v.set_mount_max_ttl(1000);
    let t2 = v.add_token(TokenSpec::periodic(600));
    for _ in 0..3 {
        v.age_token(&t2, Duration::from_secs(500));
        let j = renew(&v, &t2, "").json();
        assert_eq!(j["auth"]["lease_duration"], 600);
        assert_eq!(j["warnings"], Value::Null);
    }

    v.set_mount_max_ttl(300);
    let j = renew(&v, &t2, "").json();
    assert_eq!(j["auth"]["lease_duration"], 300);
    assert_eq!(
        j["warnings"],
        serde_json::json!(["period of \"10m\" exceeded the effective max_ttl of \"5m\"; period value is capped accordingly"])
    );
    v.set_mount_max_ttl(0); // back to 768h

    // with explicit_max_ttl the period is capped by what is left
    let t3 = v.add_token(TokenSpec::periodic(600).explicit_max_ttl(900));
    v.age_token(&t3, Duration::from_secs(500));
    let j = renew(&v, &t3, "").json();
    let got = j["auth"]["lease_duration"].as_i64().unwrap();
    assert!(got == 400 || got == 399, "{got}");
    assert_eq!(j["warnings"], serde_json::json!([ttl_warning(600, got)]));
}

#[test]
fn non_renewable_kinds_get_400_with_vaults_strings() {
    let v = VaultDouble::start();
    let cases = [
        (
            TokenSpec::service(600).renewable(false),
            "lease is not renewable",
        ),
        (TokenSpec::batch(600), "batch tokens cannot be renewed"),
        (TokenSpec::root_init(), "invalid lease ID"),
        (TokenSpec::root_created(), "lease is not renewable"),
    ];
    for (spec, want) in cases {
        let t = v.add_token(spec);
        let r = renew(&v, &t, "");
        assert_eq!(r.status, 400, "{want}");
        assert_eq!(r.json(), serde_json::json!({ "errors": [want] }));
    }
    let t = v.add_token(TokenSpec::service(600).renewable(false));
    assert_eq!(lookup(&v, &t).json()["data"]["renewable"], false);
}

#[test]
fn invalid_token_403_bodies_by_version() {
    let v = VaultDouble::start();
    let r = lookup(&v, "hvs.bogus");
    assert_eq!(
        (r.status, r.error()),
        (403, INVALID_TOKEN_V1_17.to_string())
    );
    let r = call(&v, "GET", LOOKUP, None, "");
    assert_eq!(
        (r.status, r.error()),
        (403, INVALID_TOKEN_V1_17.to_string())
    );
    assert_eq!(r.text(), "{\"errors\":[\"2 errors occurred:\\n\\t* permission denied\\n\\t* invalid token\\n\\n\"]}\n");

    let t = v.add_token(TokenSpec::service(600));
    v.revoke(&t);
    assert_eq!(lookup(&v, &t).error(), INVALID_TOKEN_V1_17);
    assert_eq!(renew(&v, &t, "").status, 403);
    assert_eq!(v.token_ttl(&t), None);

    let old = v.add_token(TokenSpec::service(600).api_version(ApiVersion::Legacy));
    let r = lookup(&v, &old);
    assert!(r.json().get("mount_type").is_none());
    assert!(renew(&v, &old, "").json().get("mount_type").is_none());
    v.revoke(&old);
    let r = lookup(&v, &old);
    assert_eq!(
        (r.status, r.error()),
        (403, INVALID_TOKEN_LEGACY.to_string())
    );

    v.set_api_version(ApiVersion::Legacy);
    assert_eq!(lookup(&v, "nope").error(), "permission denied");
}

#[test]
fn num_uses_runs_out_like_vault() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600).num_uses(3));
    assert_eq!(lookup(&v, &t).json()["data"]["num_uses"], 2);
    let r = renew(&v, &t, "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["auth"]["num_uses"],
        3,
        "auth.num_uses is the stored value"
    );
    let r = renew(&v, &t, ""); // third and last use
    assert_eq!((r.status, r.error()), (400, "token not found".to_string()));
    assert_eq!(lookup(&v, &t).status, 403);

    let t = v.add_token(TokenSpec::service(600).num_uses(1));
    let r = lookup(&v, &t);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["num_uses"], -1);
    assert_eq!(lookup(&v, &t).status, 403);
    assert_eq!(v.token_ttl(&t), None);
}

#[test]
fn acl_and_methods() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    for m in ["POST", "PUT"] {
        let r = call(&v, m, LOOKUP, Some(&t), "");
        assert_eq!(
            (r.status, r.error()),
            (403, POLICY_DENIED.to_string()),
            "{m} lookup-self"
        );
    }
    let r = call(&v, "GET", RENEW, Some(&t), "");
    assert_eq!((r.status, r.error()), (403, POLICY_DENIED.to_string()));
    assert_eq!(call(&v, "DELETE", LOOKUP, Some(&t), "").status, 403);

    let root = v.add_token(TokenSpec::root_init());
    assert_eq!(call(&v, "POST", LOOKUP, Some(&root), "").status, 200);
    let r = call(&v, "GET", RENEW, Some(&root), "");
    assert_eq!(
        (r.status, r.error()),
        (405, "unsupported operation".to_string())
    );
    let r = call(&v, "OPTIONS", LOOKUP, Some(&t), "");
    assert_eq!((r.status, r.text()), (405, "{\"errors\":[]}\n".to_string()));
}

#[test]
fn namespaces_must_match() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600).namespace("team-a"));
    let with_ns = |ns: &str| {
        send(
            v.addr(),
            "GET",
            LOOKUP,
            &[("X-Vault-Token", &t), ("X-Vault-Namespace", ns)],
            "",
        )
        .unwrap()
    };
    assert_eq!(lookup(&v, &t).status, 403);
    assert_eq!(with_ns("team-b").error(), INVALID_TOKEN_V1_17);
    let r = with_ns("team-a");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["namespace_path"], "team-a/");
    assert_eq!(with_ns("team-a/").status, 200);
    // root-namespace tokens ignore the header (as Vault CE does)
    let plain = v.add_token(TokenSpec::service(600));
    let r = send(
        v.addr(),
        "GET",
        LOOKUP,
        &[("X-Vault-Token", &plain), ("X-Vault-Namespace", "x")],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(v.requests().last().unwrap().namespace.as_deref(), Some("x"));
}

#[test]
fn token_sources_bearer_and_precedence() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    let bearer = format!("Bearer {t}");
    let r = send(v.addr(), "GET", LOOKUP, &[("Authorization", &bearer)], "").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["id"], t.as_str());
    let r = send(
        v.addr(),
        "GET",
        LOOKUP,
        &[("Authorization", &bearer), ("X-Vault-Token", "hvs.other")],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 403, "X-Vault-Token wins");
    assert_eq!(
        v.requests().last().unwrap().token.as_deref(),
        Some("hvs.other")
    );
}

#[test]
fn bad_input_and_other_paths() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    let r = renew(&v, &t, "{\"increment\":");
    assert_eq!(r.status, 400);
    assert!(
        r.error().starts_with("failed to parse JSON input: "),
        "{}",
        r.text()
    );
    let r = renew(&v, &t, "[1,2]");
    assert_eq!(r.status, 400);
    let r = renew(&v, &t, "{\"increment\":\"soon\"}");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("increment"));
    let r = renew(&v, &t, "{\"increment\":true}");
    assert_eq!(r.status, 400);
    // bad JSON is rejected before the token is looked at
    assert_eq!(renew(&v, "hvs.bogus", "{").status, 400);
    let r = call(&v, "GET", "/v1/secret/data/x", Some(&t), "");
    assert_eq!((r.status, r.text()), (404, "{\"errors\":[]}\n".to_string()));
    assert_eq!(call(&v, "GET", "/", None, "").status, 404);
    // garbage on the wire: 400 and close, no panic
    let mut s = TcpStream::connect(v.addr()).unwrap();
    s.write_all(b"\x00\x01 garbage\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s), false).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(lookup(&v, &t).status, 200, "still serving");
}

#[test]
fn health_endpoint() {
    let v = VaultDouble::start();
    let r = call(&v, "GET", "/v1/sys/health", None, "");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["initialized"], true);
    assert_eq!(j["sealed"], false);
    assert_eq!(j["standby"], false);
    assert!(j["server_time_utc"].is_i64());
    assert!(
        j["version"].is_string() && j["cluster_name"].is_string() && j["cluster_id"].is_string()
    );
    let r = call(&v, "HEAD", "/v1/sys/health", None, "");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        call(&v, "GET", "/v1/sys/health?activecode=204", None, "").status,
        204
    );
    assert_eq!(
        call(&v, "GET", "/v1/sys/health?activecode=x", None, "").status,
        400
    );
    assert_eq!(call(&v, "POST", "/v1/sys/health", None, "").status, 405);
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[test]
fn hang_holds_one_connection_without_blocking_others() {
    let v = VaultDouble::start();
    let slow = v.add_token(TokenSpec::service(600));
    let fast = v.add_token(TokenSpec::service(600));
    v.set_token_fault(&slow, Fault::Hang);
    let addr = v.addr();
    let slow2 = slow.clone();
    let hung = thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&request_bytes(
            "GET",
            LOOKUP,
            &[("X-Vault-Token", &slow2)],
            "",
            false,
        ))
        .unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        (n, start.elapsed())
    });
    thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    assert_eq!(lookup(&v, &fast).status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1));
    // changing another token's fault leaves this one hung
    let other = v.add_token(TokenSpec::service(600));
    v.set_token_fault(&other, Fault::Sealed);
    thread::sleep(Duration::from_millis(300));
    assert!(!hung.is_finished(), "still hung");
    assert_eq!(lookup(&v, &other).status, 503);
    v.clear_token_fault(&slow);
    let (n, waited) = hung.join().unwrap();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        waited < Duration::from_secs(3),
        "released when the fault was cleared: {waited:?}"
    );
    let rec = v.requests_for(&slow);
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].status, 0);
    assert_eq!(lookup(&v, &slow).status, 200);
}

#[test]
fn global_hang_times_out_clients_until_cleared() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    v.set_fault(Fault::Hang);
    let mut s = TcpStream::connect(v.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(&request_bytes("GET", "/v1/sys/health", &[], "", false))
        .unwrap();
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e:?}"
    );
    v.clear_fault();
    assert_eq!(lookup(&v, &t).status, 200);
}

#[test]
fn delay_answers_late() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    v.set_fault(Fault::Delay(Duration::from_millis(300)));
    let t0 = Instant::now();
    assert_eq!(lookup(&v, &t).status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

#[test]
fn status_fault_with_headers() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    v.set_fault(Fault::Status {
        status: 429,
        body: "{\"errors\":[\"request path \\\"auth/token/renew-self\\\": rate limit quota exceeded\"]}".into(),
        headers: vec![("Retry-After".into(), "7".into())],
    });
    let r = renew(&v, &t, "");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.error().contains("rate limit quota exceeded"));
    v.set_fault(Fault::error(412, "required index state not present"));
    assert_eq!(lookup(&v, &t).status, 412);
    v.set_fault(Fault::status(500, ""));
    let r = lookup(&v, &t);
    assert_eq!((r.status, r.body.len()), (500, 0));
    v.clear_fault();
    // faulted requests do not touch the token
    assert_eq!(lookup(&v, &t).json()["data"]["num_uses"], 0);
    assert!(v
        .requests()
        .iter()
        .map(|r| r.status)
        .eq([429, 412, 500, 200]));
}

#[test]
fn sealed_fault() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    v.set_fault(Fault::Sealed);
    let r = lookup(&v, &t);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "{\"errors\":[\"Vault is sealed\"]}\n");
    let r = call(&v, "GET", "/v1/sys/health", None, "");
    assert_eq!(r.status, 503);
    let j = r.json();
    assert_eq!(j["sealed"], true);
    assert!(j.get("cluster_id").is_none());
    assert_eq!(
        call(&v, "GET", "/v1/sys/health?sealedcode=200", None, "").status,
        200
    );
}

#[test]
fn body_faults_send_garbage_verbatim() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    let cases: Vec<(u16, &str, Vec<u8>)> = vec![
        (
            200,
            "text/html",
            b"<html><body>Login</body></html>".to_vec(),
        ),
        (200, "application/json", b"{\"data\":{\"ttl\":".to_vec()),
        (
            200,
            "application/json",
            b"{\"data\":{\"ttl\":\"3600\"}}".to_vec(),
        ),
        (200, "application/json", vec![b'{', 0xff, 0xfe, b'}']),
        (200, "application/json", vec![b' '; 2 * 1024 * 1024]),
    ];
    for (status, ct, body) in cases {
        v.set_fault(Fault::Body {
            status,
            content_type: ct.into(),
            body: body.clone(),
        });
        let r = lookup(&v, &t);
        assert_eq!(r.status, status);
        assert_eq!(r.header("content-type"), Some(ct));
        assert_eq!(r.body, body);
    }
}

#[test]
fn slow_body_trickles() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    let body = b"{\"errors\":[\"slow\"]}\n".to_vec(); // 20 bytes
    v.set_fault(Fault::SlowBody {
        status: 200,
        body: body.clone(),
        bytes_per_sec: 40,
    });
    let mut s = TcpStream::connect(v.addr()).unwrap();
    s.write_all(&request_bytes(
        "GET",
        LOOKUP,
        &[("X-Vault-Token", &t)],
        "",
        true,
    ))
    .unwrap();
    let t0 = Instant::now();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let head_at = t0.elapsed();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    let total = t0.elapsed();
    assert!(
        head_at < Duration::from_millis(200),
        "head comes at once: {head_at:?}"
    );
    assert!(
        total >= Duration::from_millis(400),
        "body trickles: {total:?}"
    );
    assert!(rest.ends_with(&body));
    assert_eq!(v.requests()[0].status, 200);
}

#[test]
fn redirect_fault_is_a_standby() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    v.set_fault(Fault::Redirect {
        location: "http://127.0.0.1:1".into(),
    });
    let r = call(&v, "GET", "/v1/auth/token/lookup-self?x=1", Some(&t), "");
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:1/v1/auth/token/lookup-self?x=1")
    );
    assert!(r.body.is_empty());
    let r = call(&v, "GET", "/v1/sys/health", None, "");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["standby"], true);
    assert_eq!(
        call(&v, "GET", "/v1/sys/health?standbyok=true", None, "").status,
        200
    );
}

#[test]
fn refuse_after_accept_closes_unanswered() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    v.set_fault(Fault::RefuseAfterAccept);
    let err = send(v.addr(), "GET", LOOKUP, &[("X-Vault-Token", &t)], "").unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
        ),
        "{err:?}"
    );
    assert_eq!(v.requests()[0].status, 0);
    v.clear_fault();
    assert_eq!(lookup(&v, &t).status, 200);
}

#[test]
fn stop_listening_refuses_and_resume_serves_on_the_same_port() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    let addr = v.addr();
    // an idle keep-alive connection
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(&request_bytes(
        "GET",
        LOOKUP,
        &[("X-Vault-Token", &t)],
        "",
        false,
    ))
    .unwrap();
    let mut idle_r = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut idle_r, false).unwrap().status, 200);

    v.stop_listening();
    assert!(!v.is_listening());
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    // open connections die too, like a crashed server's
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = idle.write_all(&request_bytes(
        "GET",
        LOOKUP,
        &[("X-Vault-Token", &t)],
        "",
        false,
    ));
    assert!(read_response(&mut idle_r, false).is_err());

    v.resume_listening();
    assert!(v.is_listening());
    assert_eq!(v.addr(), addr);
    assert_eq!(lookup(&v, &t).status, 200);
    // stop/resume twice more to make sure it is repeatable
    v.stop_listening();
    v.stop_listening();
    assert!(TcpStream::connect(addr).is_err());
    v.resume_listening();
    v.resume_listening();
    assert_eq!(lookup(&v, &t).status, 200);
}

#[test]
fn records_every_request() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    send(
        v.addr(),
        "PUT",
        "/v1/auth/token/renew-self?debug=1",
        &[
            ("X-Vault-Token", &t),
            ("X-Vault-Namespace", "ns1"),
            ("X-Vault-Request", "true"),
            ("User-Agent", "exporter/1"),
        ],
        "{\"increment\":60}",
    )
    .unwrap();
    lookup(&v, "hvs.other");
    send(v.addr(), "GET", "/v1/sys/health", &[], "").unwrap();
    let all = v.requests();
    assert_eq!(all.len(), 3);
    let r = &all[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(r.path, RENEW);
    assert_eq!(r.query, "debug=1");
    assert_eq!(r.token.as_deref(), Some(t.as_str()));
    assert_eq!(r.namespace.as_deref(), Some("ns1"));
    assert!(r.x_vault_request);
    assert_eq!(r.header("user-agent"), Some("exporter/1"));
    assert_eq!(r.body, "{\"increment\":60}");
    assert_eq!(r.status, 200);
    assert!(r.at <= std::time::SystemTime::now());
    assert_eq!(all[1].status, 403);
    assert_eq!(all[2].token, None);
    assert!(!all[2].x_vault_request);
    assert_eq!(v.requests_for(&t).len(), 1);
    v.clear_requests();
    assert!(v.requests().is_empty());
    lookup(&v, &t);
    assert_eq!(v.requests_for(&t)[0].status, 200);
    v.set_record_limit(1);
    lookup(&v, &t);
    assert_eq!(v.requests().len(), 1);
}

#[test]
fn keep_alive_chunked_and_pipelined() {
    let v = VaultDouble::start();
    let t = v.add_token(TokenSpec::service(600));
    let s = TcpStream::connect(v.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    for _ in 0..3 {
        w.write_all(&request_bytes(
            "GET",
            LOOKUP,
            &[("X-Vault-Token", &t)],
            "",
            false,
        ))
        .unwrap();
        assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    }
    // chunked body
    let chunked = format!(
        "PUT {RENEW} HTTP/1.1\r\nX-Vault-Token: {t}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"inc\r\nb\r\nrement\":42}}\r\n0\r\n\r\n"
    );
    w.write_all(chunked.as_bytes()).unwrap();
    let resp = read_response(&mut r, false).unwrap();
    assert_eq!(resp.json()["auth"]["lease_duration"], 42);
    // two pipelined requests in one write
    let mut both = request_bytes("GET", LOOKUP, &[("X-Vault-Token", &t)], "", false);
    both.extend(request_bytes("GET", "/v1/sys/health", &[], "", false));
    w.write_all(&both).unwrap();
    assert_eq!(read_response(&mut r, false).unwrap().status, 200);
    assert_eq!(
        read_response(&mut r, false).unwrap().json()["initialized"],
        true
    );
    assert_eq!(v.connections_accepted(), 1);
}

#[test]
fn many_tokens_and_concurrent_clients() {
    let v = VaultDouble::start();
    let tokens: Vec<String> = (0..2000)
        .map(|i| v.add_token(TokenSpec::service(600 + i)))
        .collect();
    let hang = v.add_token(TokenSpec::service(600));
    v.set_token_fault(&hang, Fault::Hang);
    let addr = v.addr();
    let hang2 = hang.clone();
    // a hung request in the background must not slow the others
    let _hung = thread::spawn(move || send(addr, "GET", LOOKUP, &[("X-Vault-Token", &hang2)], ""));
    let threads: Vec<_> = (0..16)
        .map(|k| {
            let mine: Vec<String> = tokens
                .iter()
                .skip(k)
                .step_by(16)
                .take(40)
                .cloned()
                .collect();
            thread::spawn(move || {
                let s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                for t in &mine {
                    w.write_all(&request_bytes(
                        "GET",
                        LOOKUP,
                        &[("X-Vault-Token", t)],
                        "",
                        false,
                    ))
                    .unwrap();
                    let resp = read_response(&mut r, false).unwrap();
                    assert_eq!(resp.status, 200);
                    assert_eq!(resp.json()["data"]["id"], t.as_str());
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(
        v.requests().iter().filter(|r| r.status == 200).count(),
        16 * 40
    );
    v.shutdown(); // releases the hung request
}

#[test]
fn shutdown_and_drop_stop_the_server() {
    let v = VaultDouble::start();
    let addr = v.addr();
    let clone = v.clone();
    assert_eq!(call(&clone, "GET", "/v1/sys/health", None, "").status, 200);
    drop(v);
    assert_eq!(
        call(&clone, "GET", "/v1/sys/health", None, "").status,
        200,
        "a clone keeps it alive"
    );
    drop(clone);
    assert_eq!(
        TcpStream::connect(addr).unwrap_err().kind(),
        ErrorKind::ConnectionRefused
    );

    let v = VaultDouble::start();
    let addr = v.addr();
    v.shutdown();
    v.shutdown();
    assert!(TcpStream::connect(addr).is_err());
    assert!(v.try_resume_listening().is_err());
}
