//! # vault-double: an in-process test double of HashiCorp Vault's token endpoints
//!
//! **Why it exists.** The exporter's black-box tests spawn the real binary and point it at a
//! "Vault"; the `--demo` mode needs a Vault too. A real Vault is heavy, slow to start and
//! cannot be made to misbehave on demand. This crate serves, on loopback, the endpoints the
//! exporter uses, with Vault's real wire format, and lets a test inject the failures a real
//! deployment produces.
//!
//! **What it reproduces** (section numbers cite Vault's token API as the project documents it; the real bodies it imitates are in `tests/fixtures/`):
//!
//! * `GET /v1/auth/token/lookup-self`: the full `logical.HTTPResponse` envelope (key order
//!   as Vault writes it, `mount_type:"token"` on 1.17), `data` with every field of §2.1/§2.2,
//!   a `ttl` counting down with the wall clock exactly as Vault computes it
//!   (`expire − now.Round(1s)`, truncated), a fixed `expire_time` in RFC 3339 with
//!   nanoseconds, `renewable`/`issue_time` only when a lease exists, `last_renewal*` after a
//!   renewal, `period` on periodic tokens.
//! * `PUT|POST /v1/auth/token/renew-self`: `CalculateTTL` of §6.2 (increment from *now*,
//!   sticky last granted TTL, max TTL measured from issue time, periodic reset, warnings in
//!   Vault's exact format with its `humanDuration`), the answer in `auth.lease_duration` with
//!   top-level `lease_duration: 0`, and the 400s of each non-renewable kind.
//! * The traps of §9: 403 bodies by version (`2 errors occurred` on ≥ 1.17, `permission
//!   denied` before), ACL 403 for `POST lookup-self` and `GET renew-self`, `num_uses`
//!   (`-1` on the last use, renew gives 400 `token not found`), namespaces, `id` echo,
//!   `X-Vault-Token` winning over `Authorization: Bearer`.
//! * `GET|HEAD /v1/sys/health` with a body shaped like the captured ones.
//! * Faults ([`Fault`]): hangs, delays, fixed statuses (429, 5xx, 412…), sealed, garbage
//!   bodies, slow-loris bodies, standby redirects, connections closed unanswered, and a
//!   listening socket that really goes away (`ECONNREFUSED`) and comes back on the same port.
//!
//! Every request is recorded ([`RequestRecord`]) before any fault acts on it.
//!
//! The server is a small HTTP/1.1 implementation on `std::net` (keep-alive, chunked bodies,
//! pipelining), one thread per connection, so a hung connection never blocks the others.
//!
//! ```no_run
//! use vault_double::{Fault, TokenSpec, VaultDouble};
//! let vault = VaultDouble::start();
//! let token = vault.add_token(TokenSpec::service(3600).explicit_max_ttl(7200));
//! let vault_addr = vault.url(); // e.g. VAULT_ADDR for the process under test
//! vault.set_fault(Fault::Sealed);
//! vault.clear_fault();
//! assert_eq!(vault.requests_for(&token).len(), 0);
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod http;
mod util;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use crate::http::{ReadError, Request, Response};

/// Vault's default system `max_lease_ttl` and `default_lease_ttl`: 768h.
pub const DEFAULT_MAX_LEASE_TTL: u64 = 768 * 3600;

/// The 403 string of Vault ≥ 1.17 for a missing, unknown, expired or revoked token.
pub const INVALID_TOKEN_V1_17: &str =
    "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
/// The 403 string of Vault < 1.17 (and OpenBao) for a missing, unknown, expired or revoked token.
pub const INVALID_TOKEN_LEGACY: &str = "permission denied";
/// The 403 string for a valid token whose policies deny the operation.
pub const POLICY_DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";

const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_RECORD_LIMIT: usize = 200_000;
const CONN_STACK: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// What kind of token to mint; decides lease and renewal behaviour (§2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A normal service token with a lease (`hvs.` prefix).
    #[default]
    Service,
    /// A batch token: no accessor, never renewable, real expiry (`hvb.` prefix).
    Batch,
    /// The `operator init` root token: no lease, no `renewable`/`issue_time` keys, renew gives 400 `invalid lease ID`.
    RootInit,
    /// A root token made through `auth/token/create` (dev mode): `renewable:false`, zero expiry, renew gives 400 `lease is not renewable`.
    RootCreated,
}

/// Which Vault generation the token's answers imitate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// Vault ≥ 1.17: invalid-token 403 is the two-error multierror string; envelopes carry `mount_type`.
    #[default]
    V1_17,
    /// Vault < 1.17: invalid-token 403 is `permission denied`; envelopes have no `mount_type`.
    Legacy,
}

/// How to mint a token. Build with the constructors and builder setters.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// Service (default), Batch, RootInit or RootCreated.
    pub kind: TokenKind,
    /// Creation TTL in seconds; 0 means the mount default (768h, capped by the mount max). Ignored for roots.
    pub ttl: u64,
    /// Whether renew-self may extend it (service only; batch and roots are never renewable).
    pub renewable: bool,
    /// Hard cap in seconds measured from issue time; 0 = none.
    pub explicit_max_ttl: u64,
    /// Period in seconds; 0 = not periodic. Periodic tokens reset to the period on every renewal.
    pub period: u64,
    /// Use limit; 0 = unlimited. Every request carrying the token uses one.
    pub num_uses: i64,
    /// Policies; sanitised like Vault (lower-cased, sorted, deduplicated, `root` alone wins).
    pub policies: Vec<String>,
    /// `display_name` reported by lookup.
    pub display_name: String,
    /// Creation path reported by lookup, e.g. `auth/token/create`, `auth/approle/login`.
    pub path: String,
    /// Metadata (`meta` in lookup, `metadata` in renew); `None` is JSON null.
    pub meta: Option<BTreeMap<String, String>>,
    /// Enterprise namespace; when set, requests must carry an equal `X-Vault-Namespace` or get 403.
    pub namespace: Option<String>,
    /// Which Vault generation this token's answers imitate.
    pub api_version: ApiVersion,
}

impl Default for TokenSpec {
    fn default() -> Self {
        TokenSpec {
            kind: TokenKind::Service,
            ttl: 3600,
            renewable: true,
            explicit_max_ttl: 0,
            period: 0,
            num_uses: 0,
            policies: vec!["default".to_string()],
            display_name: "token".to_string(),
            path: "auth/token/create".to_string(),
            meta: None,
            namespace: None,
            api_version: ApiVersion::V1_17,
        }
    }
}

impl TokenSpec {
    /// A renewable service token with this creation TTL (seconds).
    pub fn service(ttl: u64) -> Self {
        TokenSpec {
            ttl,
            ..Default::default()
        }
    }

    /// A batch token with this TTL (seconds); never renewable.
    pub fn batch(ttl: u64) -> Self {
        TokenSpec {
            kind: TokenKind::Batch,
            ttl,
            renewable: false,
            ..Default::default()
        }
    }

    /// The initial root token of `operator init` (`path: auth/token/root`, no lease).
    pub fn root_init() -> Self {
        TokenSpec {
            kind: TokenKind::RootInit,
            ttl: 0,
            renewable: false,
            policies: vec!["root".to_string()],
            display_name: "root".to_string(),
            path: "auth/token/root".to_string(),
            ..Default::default()
        }
    }

    /// A root token created through `auth/token/create`, like a dev server's `-dev-root-token-id`.
    pub fn root_created() -> Self {
        TokenSpec {
            kind: TokenKind::RootCreated,
            ttl: 0,
            renewable: false,
            policies: vec!["root".to_string()],
            ..Default::default()
        }
    }

    /// A renewable periodic service token with this period (seconds).
    pub fn periodic(period: u64) -> Self {
        TokenSpec {
            period,
            ttl: 0,
            ..Default::default()
        }
    }

    /// Sets the creation TTL (seconds).
    pub fn ttl(mut self, secs: u64) -> Self {
        self.ttl = secs;
        self
    }

    /// Sets whether the token is renewable.
    pub fn renewable(mut self, renewable: bool) -> Self {
        self.renewable = renewable;
        self
    }

    /// Sets the explicit max TTL (seconds from issue; 0 = none).
    pub fn explicit_max_ttl(mut self, secs: u64) -> Self {
        self.explicit_max_ttl = secs;
        self
    }

    /// Sets the period (seconds; 0 = not periodic).
    pub fn period(mut self, secs: u64) -> Self {
        self.period = secs;
        self
    }

    /// Sets the use limit (0 = unlimited).
    pub fn num_uses(mut self, n: i64) -> Self {
        self.num_uses = n;
        self
    }

    /// Sets the policies.
    pub fn policies(mut self, policies: &[&str]) -> Self {
        self.policies = policies.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Sets the display name.
    pub fn display_name(mut self, name: &str) -> Self {
        self.display_name = name.to_string();
        self
    }

    /// Sets the creation path (e.g. `auth/approle/login`).
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }

    /// Sets the metadata.
    pub fn meta(mut self, pairs: &[(&str, &str)]) -> Self {
        self.meta = Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    /// Puts the token in an Enterprise namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// Sets the Vault generation imitated for this token.
    pub fn api_version(mut self, v: ApiVersion) -> Self {
        self.api_version = v;
        self
    }
}

/// A misbehaviour to inject, for every request ([`VaultDouble::set_fault`]) or for one token's requests ([`VaultDouble::set_token_fault`]).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Read the request and never answer; the connection is held while this request's fault is still `Hang` (then closed unanswered), or until the client hangs up or shutdown.
    Hang,
    /// Answer normally after this delay.
    Delay(Duration),
    /// A fixed answer (e.g. 429 with `Retry-After`, 500, 412); `Content-Type: application/json` unless `headers` sets one.
    Status {
        /// HTTP status.
        status: u16,
        /// Body, sent as is.
        body: String,
        /// Extra headers; a `Content-Length` here replaces the real one (so it can lie).
        headers: Vec<(String, String)>,
    },
    /// 503 `{"errors":["Vault is sealed"]}`; `sys/health` answers 503 with `sealed:true`.
    Sealed,
    /// Garbage: any status, content type and bytes (HTML, truncated JSON, invalid UTF-8, huge).
    Body {
        /// HTTP status.
        status: u16,
        /// `Content-Type` header value.
        content_type: String,
        /// Body bytes.
        body: Vec<u8>,
    },
    /// Send the head at once, then trickle the body at this rate (slow loris; 0 is treated as 1).
    SlowBody {
        /// HTTP status.
        status: u16,
        /// Body bytes.
        body: Vec<u8>,
        /// Trickle rate.
        bytes_per_sec: u32,
    },
    /// A standby's 307 with `Location` and an empty body. A bare `scheme://host:port` gets the request path and query appended, as Vault does; a location with a path is sent verbatim. `sys/health` answers 429 `standby:true` instead, as a standby does.
    Redirect {
        /// Where to send the client.
        location: String,
    },
    /// Close the connection as soon as the request is read, without answering (EOF / reset).
    RefuseAfterAccept,
}

impl Fault {
    /// A [`Fault::Status`] with this status and raw body and no extra headers.
    pub fn status(status: u16, body: &str) -> Fault {
        Fault::Status {
            status,
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    /// A [`Fault::Status`] whose body is Vault's error envelope `{"errors":[message]}`.
    pub fn error(status: u16, message: &str) -> Fault {
        Fault::status(status, &error_body(&[message]))
    }
}

/// One request the double received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string without `?` (empty if none).
    pub query: String,
    /// `X-Vault-Token`, else `Authorization: Bearer` (as Vault picks it).
    pub token: Option<String>,
    /// `X-Vault-Namespace`, if sent and non-empty.
    pub namespace: Option<String>,
    /// Whether `X-Vault-Request: true` was sent.
    pub x_vault_request: bool,
    /// Every request header, in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body (lossy UTF-8).
    pub body: String,
    /// Status the double answered; 0 if it never answered (Hang, RefuseAfterAccept, shutdown).
    pub status: u16,
    /// When the request was fully read.
    pub at: SystemTime,
}

impl RequestRecord {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running Vault double. Cheap to clone (shared state); the server stops on [`VaultDouble::shutdown`] or when the last clone drops.
#[derive(Clone)]
pub struct VaultDouble {
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl fmt::Debug for VaultDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultDouble")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------------

/// Shuts the server down when the last public handle drops (threads hold only `Inner`).
struct Guard {
    inner: Arc<Inner>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

struct Inner {
    addr: SocketAddr,
    state: Mutex<State>,
    /// Wakes hung, delayed and trickling requests on fault changes, stop and shutdown.
    cond: Condvar,
    records: Mutex<Records>,
    listener: Mutex<ListenerCtl>,
    conns: Mutex<HashMap<u64, ConnHandle>>,
    next_conn: AtomicU64,
    accepted: AtomicU64,
    shutdown: AtomicBool,
    cluster_name: String,
    cluster_id: String,
}

struct ListenerCtl {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct ConnHandle {
    stream: TcpStream,
    closed: Arc<AtomicBool>,
}

struct State {
    tokens: HashMap<String, TokenEntry>,
    mount_max_ttl: u64,
    default_version: ApiVersion,
    /// Seconds added to the clock `sys/health` reports (a skewed server).
    health_clock_offset: i64,
    fault: Option<Fault>,
    token_faults: HashMap<String, Fault>,
}

struct Records {
    base: u64,
    limit: usize,
    list: VecDeque<RequestRecord>,
}

struct TokenEntry {
    spec: TokenSpec,
    accessor: String,
    /// `creation_time`, Unix seconds.
    creation_time: i64,
    /// Lease issue time (batch: creation second).
    issue_time: SystemTime,
    creation_ttl: u64,
    /// `None`: never expires (roots).
    expire: Option<SystemTime>,
    /// `le.Auth.TTL`: the TTL granted last (creation TTL before any renewal).
    last_ttl: i64,
    last_renewal: Option<SystemTime>,
    /// Remaining uses when `spec.num_uses > 0`.
    uses_left: i64,
    /// Revoked or used up.
    dead: bool,
}

impl TokenEntry {
    fn new(mut spec: TokenSpec, mount_max: u64, now: SystemTime) -> TokenEntry {
        spec.policies = sanitize_policies(&spec.policies);
        match spec.kind {
            TokenKind::RootInit | TokenKind::RootCreated => {
                spec.policies = vec!["root".to_string()];
                spec.ttl = 0;
                spec.renewable = false;
                spec.period = 0;
                spec.explicit_max_ttl = 0;
            }
            TokenKind::Batch => {
                spec.renewable = false;
                spec.period = 0;
            }
            TokenKind::Service => {}
        }
        spec.num_uses = spec.num_uses.max(0);
        let mut max_ttl = mount_max;
        if spec.explicit_max_ttl > 0 && spec.explicit_max_ttl < max_ttl {
            max_ttl = spec.explicit_max_ttl;
        }
        let ttl = match spec.kind {
            TokenKind::RootInit | TokenKind::RootCreated => 0,
            _ if spec.period > 0 => spec.period.min(max_ttl),
            _ => {
                let want = if spec.ttl > 0 {
                    spec.ttl
                } else {
                    DEFAULT_MAX_LEASE_TTL.min(mount_max)
                };
                want.min(max_ttl)
            }
        };
        let creation_time = util::floor_secs(now);
        let (issue_time, expire) = match spec.kind {
            TokenKind::RootInit | TokenKind::RootCreated => (now, None),
            TokenKind::Batch => {
                let issue = util::at_secs(creation_time);
                (issue, Some(util::add_secs(issue, ttl as i64)))
            }
            TokenKind::Service => (now, Some(util::add_secs(now, ttl as i64))),
        };
        let accessor = if spec.kind == TokenKind::Batch {
            String::new()
        } else {
            util::base62(24)
        };
        TokenEntry {
            uses_left: spec.num_uses,
            spec,
            accessor,
            creation_time,
            issue_time,
            creation_ttl: ttl,
            expire,
            last_ttl: ttl as i64,
            last_renewal: None,
            dead: false,
        }
    }

    /// Usable now: not revoked, not used up, not past `expire_time`.
    fn live(&self, now: SystemTime) -> bool {
        !self.dead && self.expire.is_none_or(|e| now < e)
    }

    /// `UseToken`: returns true when this request is the last permitted use.
    fn use_once(&mut self) -> bool {
        if self.spec.num_uses > 0 && self.uses_left > 0 {
            self.uses_left -= 1;
            return self.uses_left == 0;
        }
        false
    }

    fn ttl_now(&self, now: SystemTime) -> i64 {
        self.expire.map_or(0, |e| util::vault_ttl(e, now).max(0))
    }

    fn is_root(&self) -> bool {
        self.spec.policies.iter().any(|p| p == "root")
    }

    fn orphan(&self) -> bool {
        match self.spec.kind {
            TokenKind::RootInit | TokenKind::RootCreated => true,
            // Login tokens and create-orphan tokens have no parent; auth/token/create ones do.
            _ => {
                !(self.spec.path == "auth/token/create"
                    || self.spec.path.starts_with("auth/token/create/"))
            }
        }
    }

    fn type_str(&self) -> &'static str {
        if self.spec.kind == TokenKind::Batch {
            "batch"
        } else {
            "service"
        }
    }

    fn meta_value(&self) -> Value {
        match &self.spec.meta {
            Some(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            ),
            None => Value::Null,
        }
    }

    fn policies_value(&self) -> Value {
        Value::from(self.spec.policies.clone())
    }
}

/// Vault's `policyutil.SanitizePolicies` without adding `default`.
fn sanitize_policies(policies: &[String]) -> Vec<String> {
    let mut out: Vec<String> = policies
        .iter()
        .map(|p| p.trim().to_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if out.iter().any(|p| p == "root") {
        return vec!["root".to_string()];
    }
    out.sort();
    out.dedup();
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn norm_ns(ns: &str) -> &str {
    ns.trim_matches('/')
}

// ---------------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------------

fn js(v: impl Into<Value>) -> String {
    v.into().to_string()
}

/// An object whose keys keep the given order (Vault writes its envelope in struct order).
fn ordered(fields: &[(&str, String)]) -> String {
    let mut s = String::with_capacity(512);
    s.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&js(*k));
        s.push(':');
        s.push_str(v);
    }
    s.push('}');
    s
}

fn error_body(errors: &[&str]) -> String {
    ordered(&[("errors", js(errors.to_vec()))])
}

fn json_response(status: u16, body: String) -> Response {
    let mut bytes = body.into_bytes();
    bytes.push(b'\n'); // Go's json.Encoder ends every body with a newline
    Response {
        status,
        headers: vec![
            ("Cache-Control".to_string(), "no-store".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ],
        body: bytes,
    }
}

fn error_response(status: u16, errors: &[&str]) -> Response {
    json_response(status, error_body(errors))
}

fn invalid_token(version: ApiVersion) -> Response {
    error_response(
        403,
        &[match version {
            ApiVersion::V1_17 => INVALID_TOKEN_V1_17,
            ApiVersion::Legacy => INVALID_TOKEN_LEGACY,
        }],
    )
}

/// Go's `%v`-ish rendering of a JSON value in conversion errors.
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => "[...]".to_string(),
        Value::Object(_) => "map[...]".to_string(),
        other => other.to_string(),
    }
}

/// The request body as Vault's HTTP layer parses it (empty body allowed, trailing data ignored).
fn parse_json_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let mut it = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let kind = match it.next() {
        None | Some(Ok(Value::Null)) => return Ok(Map::new()),
        Some(Ok(Value::Object(m))) => return Ok(m),
        Some(Err(e)) => return Err(format!("failed to parse JSON input: {e}")),
        Some(Ok(Value::Array(_))) => "array",
        Some(Ok(Value::String(_))) => "string",
        Some(Ok(Value::Number(_))) => "number",
        Some(Ok(Value::Bool(_))) => "bool",
    };
    Err(format!(
        "failed to parse JSON input: json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
    ))
}

/// `increment` as Vault's `TypeDurationSecond` reads it: seconds, or a duration string.
fn parse_increment(v: Option<&Value>) -> Result<i64, String> {
    let s = match v {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "error converting input {} for field \"increment\": could not parse duration from input",
                go_value(other)
            ))
        }
    };
    let wrap = |e: String| format!("error converting input {s} for field \"increment\": {e}");
    if s.is_empty() {
        return Ok(0);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Some(days) = s.strip_suffix('d') {
        if let Ok(d) = days.parse::<i64>() {
            return d
                .checked_mul(86_400)
                .ok_or_else(|| wrap(format!("time: invalid duration {s:?}")));
        }
    }
    util::go_parse_duration(&s)
        .map(|nanos| (nanos / 1_000_000_000) as i64)
        .map_err(wrap)
}

// ---------------------------------------------------------------------------------------------
// Request handling: Vault semantics
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    LookupSelf,
    RenewSelf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Update,
    Delete,
    List,
    Patch,
}

impl Inner {
    /// Produces the answer for a request (faults that replace the answer included).
    fn respond(
        &self,
        req: &Request,
        token: Option<&str>,
        ns: Option<&str>,
        fault: Option<&Fault>,
    ) -> Response {
        match fault {
            Some(Fault::Status {
                status,
                body,
                headers,
            }) => {
                let mut h = Vec::new();
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    h.push(("Content-Type".to_string(), "application/json".to_string()));
                }
                h.extend(headers.iter().cloned());
                return Response {
                    status: *status,
                    headers: h,
                    body: body.clone().into_bytes(),
                };
            }
            Some(Fault::Body {
                status,
                content_type,
                body,
            }) => {
                return Response {
                    status: *status,
                    headers: vec![("Content-Type".to_string(), content_type.clone())],
                    body: body.clone(),
                };
            }
            _ => {}
        }
        let sealed = matches!(fault, Some(Fault::Sealed));
        if req.path == "/v1/sys/health" {
            let standby = matches!(fault, Some(Fault::Redirect { .. }));
            return self.health(req, sealed, standby);
        }
        if sealed {
            return error_response(503, &["Vault is sealed"]);
        }
        if let Some(Fault::Redirect { location }) = fault {
            return Response {
                status: 307,
                headers: vec![("Location".to_string(), redirect_location(location, req))],
                body: Vec::new(),
            };
        }
        match req.path.as_str() {
            "/v1/auth/token/lookup-self" => {
                self.token_endpoint(req, Endpoint::LookupSelf, token, ns)
            }
            "/v1/auth/token/renew-self" => self.token_endpoint(req, Endpoint::RenewSelf, token, ns),
            _ => error_response(404, &[]),
        }
    }

    fn health(&self, req: &Request, sealed: bool, standby: bool) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return error_response(405, &[]);
        }
        let code = |name: &str, default: u16| -> Result<u16, ()> {
            match req.query_param(name) {
                None => Ok(default),
                Some(v) => v.parse::<u16>().map_err(|_| ()),
            }
        };
        let standby_ok = req
            .query_param("standbyok")
            .is_some_and(|v| !matches!(v, "false" | "0" | "f" | "F" | "FALSE" | "False"));
        let status = if sealed {
            code("sealedcode", 503)
        } else if standby && !standby_ok {
            code("standbycode", 429)
        } else {
            code("activecode", 200)
        };
        let Ok(status) = status else {
            return error_response(400, &[]);
        };
        let (version, offset) = {
            let st = lock(&self.state);
            (st.default_version, st.health_clock_offset)
        };
        let now = util::floor_secs(SystemTime::now()) + offset;
        let mut f: Vec<(&str, String)> = vec![
            ("initialized", "true".into()),
            ("sealed", js(sealed)),
            ("standby", js(standby || sealed)),
            ("performance_standby", "false".into()),
            ("replication_performance_mode", js("disabled")),
            ("replication_dr_mode", js("disabled")),
            ("server_time_utc", js(now)),
            (
                "version",
                js(match version {
                    ApiVersion::V1_17 => "1.17.0",
                    ApiVersion::Legacy => "1.16.3",
                }),
            ),
            ("enterprise", "false".into()),
        ];
        if !sealed {
            f.push(("cluster_name", js(self.cluster_name.as_str())));
            f.push(("cluster_id", js(self.cluster_id.as_str())));
        }
        f.push(("echo_duration_ms", "0".into()));
        f.push(("clock_skew_ms", "0".into()));
        f.push(("replication_primary_canary_age_ms", "0".into()));
        if standby && !sealed {
            f.push(("ha_connection_healthy", "true".into()));
            f.push(("last_request_forwarding_heartbeat_ms", "1".into()));
        }
        json_response(status, ordered(&f))
    }

    fn token_endpoint(
        &self,
        req: &Request,
        ep: Endpoint,
        token: Option<&str>,
        ns: Option<&str>,
    ) -> Response {
        let op = match req.method.as_str() {
            "GET" => Op::Read,
            "POST" | "PUT" => Op::Update,
            "DELETE" => Op::Delete,
            "LIST" => Op::List,
            "PATCH" => Op::Patch,
            _ => return error_response(405, &[]),
        };
        // Vault parses the JSON body before it looks at the token.
        let body = if matches!(op, Op::Update | Op::Patch) {
            match parse_json_body(&req.body) {
                Ok(m) => m,
                Err(msg) => return error_response(400, &[&msg]),
            }
        } else {
            Map::new()
        };
        let now = SystemTime::now();
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let default_version = st.default_version;
        let mount_max = st.mount_max_ttl;
        let Some(tok) = token else {
            return invalid_token(default_version);
        };
        let Some(entry) = st.tokens.get_mut(tok) else {
            return invalid_token(default_version);
        };
        if !entry.live(now) {
            entry.dead = true;
            return invalid_token(entry.spec.api_version);
        }
        if let Some(want) = &entry.spec.namespace {
            if ns.map(norm_ns) != Some(norm_ns(want)) {
                return invalid_token(entry.spec.api_version);
            }
        }
        let last_use = entry.use_once();
        // ACL: the default policy grants read on lookup-self and update on renew-self; root grants all.
        let allowed = entry.is_root()
            || matches!(
                (ep, op),
                (Endpoint::LookupSelf, Op::Read) | (Endpoint::RenewSelf, Op::Update)
            );
        let resp = if !allowed {
            error_response(403, &[POLICY_DENIED])
        } else {
            match (ep, op) {
                (Endpoint::LookupSelf, Op::Read | Op::Update) => {
                    lookup_response(entry, tok, now, last_use)
                }
                (Endpoint::RenewSelf, Op::Update) => {
                    renew_response(entry, tok, &body, now, mount_max, last_use)
                }
                _ => error_response(405, &["unsupported operation"]),
            }
        };
        if last_use {
            entry.dead = true; // revocation deferred to the end of the request, as Vault does
        }
        resp
    }
}

fn redirect_location(location: &str, req: &Request) -> String {
    let after_scheme = location
        .find("://")
        .map_or(location, |i| &location[i + 3..]);
    let has_path = after_scheme
        .find('/')
        .is_some_and(|i| after_scheme.len() > i + 1);
    if has_path {
        return location.to_string();
    }
    let mut s = format!("{}{}", location.trim_end_matches('/'), req.path);
    if !req.query.is_empty() {
        s.push('?');
        s.push_str(&req.query);
    }
    s
}

fn envelope(version: ApiVersion, data: String, warnings: &[String], auth: String) -> String {
    let mut f: Vec<(&str, String)> = vec![
        ("request_id", js(util::uuid())),
        ("lease_id", js("")),
        ("renewable", "false".into()),
        ("lease_duration", "0".into()),
        ("data", data),
        ("wrap_info", "null".into()),
        (
            "warnings",
            if warnings.is_empty() {
                "null".into()
            } else {
                js(warnings.to_vec())
            },
        ),
        ("auth", auth),
    ];
    if version == ApiVersion::V1_17 {
        f.push(("mount_type", js("token")));
    }
    ordered(&f)
}

/// `handleLookup` (§2): Go map keys, so alphabetical order.
fn lookup_response(e: &TokenEntry, id: &str, now: SystemTime, last_use: bool) -> Response {
    let has_lease = e.spec.kind != TokenKind::RootInit;
    let mut d = Map::new();
    d.insert("accessor".into(), Value::from(e.accessor.as_str()));
    d.insert("creation_time".into(), Value::from(e.creation_time));
    d.insert("creation_ttl".into(), Value::from(e.creation_ttl));
    d.insert(
        "display_name".into(),
        Value::from(e.spec.display_name.as_str()),
    );
    d.insert("entity_id".into(), Value::from(""));
    d.insert(
        "expire_time".into(),
        e.expire
            .map_or(Value::Null, |t| Value::from(util::rfc3339_nano(t))),
    );
    d.insert(
        "explicit_max_ttl".into(),
        Value::from(e.spec.explicit_max_ttl),
    );
    d.insert("id".into(), Value::from(id));
    if has_lease {
        d.insert(
            "issue_time".into(),
            Value::from(util::rfc3339_nano(e.issue_time)),
        );
    }
    if let Some(lr) = e.last_renewal {
        d.insert("last_renewal".into(), Value::from(util::rfc3339_nano(lr)));
        d.insert(
            "last_renewal_time".into(),
            Value::from(util::floor_secs(lr)),
        );
    }
    d.insert("meta".into(), e.meta_value());
    if let Some(ns) = &e.spec.namespace {
        d.insert(
            "namespace_path".into(),
            Value::from(format!("{}/", norm_ns(ns))),
        );
    }
    let num_uses = if e.spec.num_uses == 0 {
        0
    } else if last_use {
        -1
    } else {
        e.uses_left
    };
    d.insert("num_uses".into(), Value::from(num_uses));
    d.insert("orphan".into(), Value::from(e.orphan()));
    d.insert("path".into(), Value::from(e.spec.path.as_str()));
    if e.spec.period > 0 {
        d.insert("period".into(), Value::from(e.spec.period));
    }
    d.insert("policies".into(), e.policies_value());
    if has_lease {
        let renewable = e.spec.kind == TokenKind::Service && e.spec.renewable;
        d.insert("renewable".into(), Value::from(renewable));
    }
    d.insert("ttl".into(), Value::from(e.ttl_now(now)));
    d.insert("type".into(), Value::from(e.type_str()));
    let data = js(Value::Object(d));
    json_response(200, envelope(e.spec.api_version, data, &[], "null".into()))
}

/// `handleRenew` → `RenewToken` → `CalculateTTL` (§3, §6.2).
fn renew_response(
    e: &mut TokenEntry,
    id: &str,
    body: &Map<String, Value>,
    now: SystemTime,
    mount_max: u64,
    last_use: bool,
) -> Response {
    // Field validation happens before the handler runs.
    let increment = match parse_increment(body.get("increment")) {
        Ok(i) => i,
        Err(msg) => return error_response(400, &[&msg]),
    };
    if last_use {
        return error_response(400, &["token not found"]);
    }
    match e.spec.kind {
        TokenKind::Batch => return error_response(400, &["batch tokens cannot be renewed"]),
        TokenKind::RootInit => return error_response(400, &["invalid lease ID"]),
        TokenKind::RootCreated => return error_response(400, &["lease is not renewable"]),
        TokenKind::Service if !e.spec.renewable => {
            return error_response(400, &["lease is not renewable"])
        }
        TokenKind::Service => {}
    }
    let now_trunc = util::floor_secs(now);
    let start = util::floor_secs(e.issue_time);
    let mut max_ttl = mount_max as i64;
    let explicit = e.spec.explicit_max_ttl as i64;
    if explicit > 0 && explicit < max_ttl {
        max_ttl = explicit;
    }
    let mut warnings = Vec::new();
    let period = e.spec.period as i64;
    let (mut ttl, max_valid) = if period > 0 {
        let mut p = period;
        if p > max_ttl {
            warnings.push(format!(
                "period of \"{}\" exceeded the effective max_ttl of \"{}\"; period value is capped accordingly",
                util::human_duration(p),
                util::human_duration(max_ttl)
            ));
            p = max_ttl;
        }
        (p, (explicit > 0).then_some(start + explicit))
    } else {
        let t = if increment > 0 {
            increment
        } else if e.last_ttl > 0 {
            e.last_ttl
        } else {
            DEFAULT_MAX_LEASE_TTL.min(mount_max) as i64
        };
        (t, Some(start + max_ttl))
    };
    if let Some(max_valid) = max_valid {
        let left = max_valid - now_trunc;
        if left <= 0 {
            // A plain error from CalculateTTL: no response object, so Vault answers 500
            // with the request's multierror text.
            return error_response(
                500,
                &["1 error occurred:\n\t* past the max TTL, cannot renew\n\n"],
            );
        }
        if ttl > left {
            warnings.push(format!(
                "TTL of \"{}\" exceeded the effective max_ttl of \"{}\"; TTL value is capped accordingly",
                util::human_duration(ttl),
                util::human_duration(left)
            ));
            ttl = left;
        }
    }
    e.last_ttl = ttl;
    e.expire = Some(util::add_secs(now, ttl));
    e.last_renewal = Some(now);

    let policies = js(e.policies_value());
    let auth = ordered(&[
        ("client_token", js(id)),
        ("accessor", js(e.accessor.as_str())),
        ("policies", policies.clone()),
        ("token_policies", policies),
        ("metadata", js(e.meta_value())),
        ("lease_duration", js(ttl)),
        ("renewable", "true".into()),
        ("entity_id", js("")),
        ("token_type", js(e.type_str())),
        ("orphan", js(e.orphan())),
        ("mfa_requirement", "null".into()),
        ("num_uses", js(e.spec.num_uses)),
    ]);
    json_response(
        200,
        envelope(e.spec.api_version, "null".into(), &warnings, auth),
    )
}

// ---------------------------------------------------------------------------------------------
// Server: listener, connections, faults
// ---------------------------------------------------------------------------------------------

/// The fault for a request: the token's own, else the global one.
fn applicable_fault<'a>(st: &'a State, token: Option<&str>) -> Option<&'a Fault> {
    token
        .and_then(|t| st.token_faults.get(t))
        .or(st.fault.as_ref())
}

/// Whether the peer has closed the connection (EOF or error), without consuming data.
fn client_gone(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let gone = match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    };
    let _ = s.set_nonblocking(false);
    gone
}

fn token_from(req: &Request) -> Option<String> {
    if let Some(t) = req.header("x-vault-token").filter(|t| !t.is_empty()) {
        return Some(t.to_string());
    }
    req.header_all("authorization")
        .find_map(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

impl Inner {
    fn push_record(&self, rec: RequestRecord) -> u64 {
        let mut r = lock(&self.records);
        let id = r.base + r.list.len() as u64;
        r.list.push_back(rec);
        while r.list.len() > r.limit {
            r.list.pop_front();
            r.base += 1;
        }
        id
    }

    fn set_status(&self, id: u64, status: u16) {
        let mut r = lock(&self.records);
        if id >= r.base {
            let idx = (id - r.base) as usize;
            if let Some(rec) = r.list.get_mut(idx) {
                rec.status = status;
            }
        }
    }

    fn stopping(&self, closed: &AtomicBool) -> bool {
        self.shutdown.load(Ordering::SeqCst) || closed.load(Ordering::SeqCst)
    }

    /// Sleeps `d` unless the connection is closed or the server shuts down (then returns false).
    fn sleep_interruptible(&self, d: Duration, closed: &AtomicBool) -> bool {
        let deadline = Instant::now() + d;
        let mut st = lock(&self.state);
        loop {
            if self.stopping(closed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            let wait = (deadline - now).min(Duration::from_millis(500));
            st = self
                .cond
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Holds a hung request while the fault that applies to it is still `Hang`, until the
    /// client hangs up, the connection is closed or the server shuts down.
    fn wait_hang(&self, token: Option<&str>, w: &TcpStream, closed: &AtomicBool) {
        let mut st = lock(&self.state);
        while matches!(applicable_fault(&st, token), Some(Fault::Hang)) && !self.stopping(closed) {
            st = self
                .cond
                .wait_timeout(st, Duration::from_millis(500))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            if client_gone(w) {
                break;
            }
        }
    }

    /// Handles one request; returns whether to keep the connection open.
    fn handle(&self, req: Request, w: &mut TcpStream, closed: &AtomicBool) -> bool {
        let token = token_from(&req);
        let namespace = req
            .header("x-vault-namespace")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let rec = RequestRecord {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            token: token.clone(),
            namespace: namespace.clone(),
            x_vault_request: req.header("x-vault-request") == Some("true"),
            headers: req.headers.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
            status: 0,
            at: SystemTime::now(),
        };
        let rec_id = self.push_record(rec);
        log::debug!(
            "vault-double: {} {} (token {})",
            req.method,
            req.path,
            token.is_some()
        );
        let fault = applicable_fault(&lock(&self.state), token.as_deref()).cloned();
        let head_only = req.method == "HEAD";
        let keep = req.keep_alive;
        let resp = match &fault {
            Some(Fault::Hang) => {
                self.wait_hang(token.as_deref(), w, closed);
                let _ = w.shutdown(Shutdown::Both);
                return false;
            }
            Some(Fault::RefuseAfterAccept) => {
                let _ = w.shutdown(Shutdown::Both);
                return false;
            }
            Some(Fault::Delay(d)) => {
                if !self.sleep_interruptible(*d, closed) {
                    return false;
                }
                self.respond(&req, token.as_deref(), namespace.as_deref(), None)
            }
            Some(Fault::SlowBody {
                status,
                body,
                bytes_per_sec,
            }) => {
                self.set_status(rec_id, *status);
                return self.slow_body(w, *status, body, *bytes_per_sec, closed, head_only) && keep;
            }
            other => self.respond(&req, token.as_deref(), namespace.as_deref(), other.as_ref()),
        };
        self.set_status(rec_id, resp.status);
        http::write_response(w, &resp, head_only, !keep).is_ok() && keep
    }

    fn slow_body(
        &self,
        w: &mut TcpStream,
        status: u16,
        body: &[u8],
        bps: u32,
        closed: &AtomicBool,
        head_only: bool,
    ) -> bool {
        let headers = vec![
            ("Cache-Control".to_string(), "no-store".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
        ];
        let head = http::head_bytes(status, &headers, body.len(), false);
        if w.write_all(&head).and_then(|_| w.flush()).is_err() {
            return false;
        }
        if head_only {
            return true;
        }
        let bps = u128::from(bps.max(1));
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < body.len() {
            let elapsed = start.elapsed();
            let due = ((elapsed.as_nanos() * bps) / 1_000_000_000).min(body.len() as u128) as usize;
            if due > sent {
                if w.write_all(&body[sent..due])
                    .and_then(|_| w.flush())
                    .is_err()
                {
                    return false;
                }
                sent = due;
                continue;
            }
            let next = Duration::from_nanos(
                ((sent as u128 + 1) * 1_000_000_000 / bps).min(u64::MAX as u128) as u64,
            );
            let wait = next
                .saturating_sub(elapsed)
                .clamp(Duration::from_millis(1), Duration::from_millis(100));
            if !self.sleep_interruptible(wait, closed) {
                return false;
            }
        }
        true
    }

    fn serve_conn(self: Arc<Self>, stream: TcpStream, id: u64, closed: Arc<AtomicBool>) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
        if let Ok(read_half) = stream.try_clone() {
            let mut reader = BufReader::new(read_half);
            let mut writer = stream;
            loop {
                if self.stopping(&closed) {
                    break;
                }
                match http::read_request(&mut reader, &mut writer) {
                    Ok(req) => {
                        if !self.handle(req, &mut writer, &closed) {
                            break;
                        }
                    }
                    Err(ReadError::Closed) => break,
                    Err(ReadError::Bad(status, text)) => {
                        let resp = Response {
                            status,
                            headers: vec![(
                                "Content-Type".to_string(),
                                "text/plain; charset=utf-8".to_string(),
                            )],
                            body: format!("{status} {text}").into_bytes(),
                        };
                        let _ = http::write_response(&mut writer, &resp, false, true);
                        break;
                    }
                }
            }
            let _ = writer.shutdown(Shutdown::Write);
        }
        lock(&self.conns).remove(&id);
    }

    fn accept_loop(self: Arc<Self>, listener: TcpListener, stop: Arc<AtomicBool>) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stop.load(Ordering::SeqCst) || self.shutdown.load(Ordering::SeqCst) {
                        break;
                    }
                    self.accepted.fetch_add(1, Ordering::SeqCst);
                    self.spawn_conn(stream);
                }
                Err(e) => {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    log::debug!("vault-double: accept failed: {e}");
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn spawn_conn(self: &Arc<Self>, stream: TcpStream) {
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        let closed = Arc::new(AtomicBool::new(false));
        if let Ok(clone) = stream.try_clone() {
            lock(&self.conns).insert(
                id,
                ConnHandle {
                    stream: clone,
                    closed: closed.clone(),
                },
            );
        }
        let inner = self.clone();
        let spawned = thread::Builder::new()
            .name("vault-double-conn".into())
            .stack_size(CONN_STACK)
            .spawn(move || inner.serve_conn(stream, id, closed));
        if let Err(e) = spawned {
            log::warn!("vault-double: cannot spawn a connection thread: {e}");
            if let Some(c) = lock(&self.conns).remove(&id) {
                let _ = c.stream.shutdown(Shutdown::Both);
            }
        }
    }

    /// Starts the accept thread; the caller holds the listener lock.
    fn start_listener(
        self: &Arc<Self>,
        l: &mut ListenerCtl,
        listener: TcpListener,
    ) -> io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        let inner = self.clone();
        let stop2 = stop.clone();
        let handle = thread::Builder::new()
            .name("vault-double-accept".into())
            .spawn(move || inner.accept_loop(listener, stop2))?;
        l.stop = stop;
        l.thread = Some(handle);
        Ok(())
    }

    /// Closes the listening socket and drops every open connection.
    fn stop_listening(&self) {
        {
            let mut l = lock(&self.listener);
            if let Some(handle) = l.thread.take() {
                l.stop.store(true, Ordering::SeqCst);
                // Wake the blocked accept() so the thread drops the listener.
                let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(2));
                let _ = handle.join();
            }
        }
        self.close_connections();
    }

    fn close_connections(&self) {
        let st = lock(&self.state);
        let conns: Vec<ConnHandle> = lock(&self.conns).drain().map(|(_, c)| c).collect();
        for c in &conns {
            c.closed.store(true, Ordering::SeqCst);
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        self.cond.notify_all();
        drop(st);
    }

    fn shutdown(&self) {
        {
            let _st = lock(&self.state);
            if self.shutdown.swap(true, Ordering::SeqCst) {
                return;
            }
            self.cond.notify_all();
        }
        self.stop_listening();
    }
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

impl VaultDouble {
    /// Starts a double on `127.0.0.1:0`; panics if it cannot bind (test helper).
    pub fn start() -> VaultDouble {
        VaultDouble::start_on(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
            .unwrap_or_else(|e| panic!("vault-double: cannot bind 127.0.0.1:0: {e}"))
    }

    /// Starts a double on `addr` (port 0 picks a free port).
    pub fn start_on(addr: SocketAddr) -> io::Result<VaultDouble> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            state: Mutex::new(State {
                tokens: HashMap::new(),
                mount_max_ttl: DEFAULT_MAX_LEASE_TTL,
                default_version: ApiVersion::V1_17,
                health_clock_offset: 0,
                fault: None,
                token_faults: HashMap::new(),
            }),
            cond: Condvar::new(),
            records: Mutex::new(Records {
                base: 0,
                limit: DEFAULT_RECORD_LIMIT,
                list: VecDeque::new(),
            }),
            listener: Mutex::new(ListenerCtl {
                stop: Arc::new(AtomicBool::new(false)),
                thread: None,
            }),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            cluster_name: format!("vault-cluster-{:08x}", util::rand_u64() as u32),
            cluster_id: util::uuid(),
        });
        inner.start_listener(&mut lock(&inner.listener), listener)?;
        Ok(VaultDouble {
            _guard: Arc::new(Guard {
                inner: inner.clone(),
            }),
            inner,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The base URL for `VAULT_ADDR`, e.g. `http://127.0.0.1:8200`.
    pub fn url(&self) -> String {
        format!("http://{}", wake_addr(self.inner.addr))
    }

    /// Mints a token (`hvs.` + 24 base62 chars, batch `hvb.` + 120) and returns it.
    pub fn add_token(&self, spec: TokenSpec) -> String {
        let id = if spec.kind == TokenKind::Batch {
            format!("hvb.{}", util::base62(120))
        } else {
            format!("hvs.{}", util::base62(24))
        };
        self.add_token_with_id(&id, spec);
        id
    }

    /// Registers a token under an exact id (replacing any token with that id), issued now.
    pub fn add_token_with_id(&self, id: &str, spec: TokenSpec) {
        let mut st = lock(&self.inner.state);
        let entry = TokenEntry::new(spec, st.mount_max_ttl, SystemTime::now());
        st.tokens.insert(id.to_string(), entry);
    }

    /// Revokes a token: later requests with it get 403.
    pub fn revoke(&self, token: &str) {
        if let Some(e) = lock(&self.inner.state).tokens.get_mut(token) {
            e.dead = true;
        }
    }

    /// Makes a token older by `by`, as if that much time had passed for it: issue, creation, expiry and last-renewal times all move back. Lets tests reach the max TTL or expiry without waiting.
    pub fn age_token(&self, token: &str, by: Duration) {
        let secs = by.as_secs() as i64;
        if let Some(e) = lock(&self.inner.state).tokens.get_mut(token) {
            // batch times are whole seconds: move them by whole seconds only
            let nanos = if e.spec.kind == TokenKind::Batch {
                secs as i128 * 1_000_000_000
            } else {
                by.as_nanos() as i128
            };
            let back = |t: SystemTime| util::from_unix_nanos(util::unix_nanos(t) - nanos);
            e.issue_time = util::from_unix_nanos(util::unix_nanos(e.issue_time) - nanos);
            e.expire = e.expire.map(back);
            e.last_renewal = e.last_renewal.map(back);
            e.creation_time -= secs;
        }
    }

    /// Sets a fault for every later request until cleared (replaces the previous one).
    pub fn set_fault(&self, fault: Fault) {
        let mut st = lock(&self.inner.state);
        st.fault = Some(fault);
        self.inner.cond.notify_all();
    }

    /// Clears the global fault; requests hung by it are released (their connections close unanswered).
    pub fn clear_fault(&self) {
        let mut st = lock(&self.inner.state);
        st.fault = None;
        self.inner.cond.notify_all();
    }

    /// Sets a fault only for requests carrying this token; it takes precedence over the global fault.
    pub fn set_token_fault(&self, token: &str, fault: Fault) {
        let mut st = lock(&self.inner.state);
        st.token_faults.insert(token.to_string(), fault);
        self.inner.cond.notify_all();
    }

    /// Clears the fault of one token.
    pub fn clear_token_fault(&self, token: &str) {
        let mut st = lock(&self.inner.state);
        st.token_faults.remove(token);
        self.inner.cond.notify_all();
    }

    /// Closes the listening socket (new connections get ECONNREFUSED) and drops every open connection, as a dead Vault would.
    pub fn stop_listening(&self) {
        self.inner.stop_listening();
    }

    /// Binds the same port again (SO_REUSEADDR) and serves; panics if the port cannot be re-bound within ~2 s.
    pub fn resume_listening(&self) {
        if let Err(e) = self.try_resume_listening() {
            panic!("vault-double: cannot re-bind {}: {e}", self.inner.addr);
        }
    }

    /// Like [`VaultDouble::resume_listening`], returning the bind error instead of panicking.
    pub fn try_resume_listening(&self) -> io::Result<()> {
        if self.inner.shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::other("vault-double is shut down"));
        }
        let mut l = lock(&self.inner.listener);
        if l.thread.is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match TcpListener::bind(self.inner.addr) {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        self.inner.start_listener(&mut l, listener)
    }

    /// Whether the listening socket is open.
    pub fn is_listening(&self) -> bool {
        lock(&self.inner.listener).thread.is_some()
    }

    /// Every request received, in order (bounded, see [`VaultDouble::set_record_limit`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.inner.records).list.iter().cloned().collect()
    }

    /// The requests that carried this token, in order.
    pub fn requests_for(&self, token: &str) -> Vec<RequestRecord> {
        lock(&self.inner.records)
            .list
            .iter()
            .filter(|r| r.token.as_deref() == Some(token))
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        let mut r = lock(&self.inner.records);
        r.base += r.list.len() as u64;
        r.list.clear();
    }

    /// Keeps at most this many records, dropping the oldest (default 200 000; protects long `--demo` runs).
    pub fn set_record_limit(&self, limit: usize) {
        let mut r = lock(&self.inner.records);
        r.limit = limit;
        while r.list.len() > r.limit {
            r.list.pop_front();
            r.base += 1;
        }
    }

    /// What lookup-self would report now as `data.ttl`; `None` if unknown, revoked, used up or expired.
    pub fn token_ttl(&self, token: &str) -> Option<i64> {
        let now = SystemTime::now();
        let st = lock(&self.inner.state);
        st.tokens
            .get(token)
            .filter(|e| e.live(now))
            .map(|e| e.ttl_now(now))
    }

    /// The token's current `expire_time`; `None` if unknown, dead, or it never expires (roots).
    pub fn token_expire_time(&self, token: &str) -> Option<SystemTime> {
        let now = SystemTime::now();
        let st = lock(&self.inner.state);
        st.tokens
            .get(token)
            .filter(|e| e.live(now))
            .and_then(|e| e.expire)
    }

    /// Sets the mount/system `max_lease_ttl` in seconds (default 768h; 0 restores the default). Re-read at every renewal, as Vault does.
    pub fn set_mount_max_ttl(&self, secs: u64) {
        lock(&self.inner.state).mount_max_ttl = if secs == 0 {
            DEFAULT_MAX_LEASE_TTL
        } else {
            secs
        };
    }

    /// Sets the version imitated where no token decides it: 403 for missing/unknown tokens and `sys/health` (default V1_17).
    pub fn set_api_version(&self, version: ApiVersion) {
        lock(&self.inner.state).default_version = version;
    }

    /// Skews the clock `sys/health` reports in `server_time_utc` by `secs` (negative: behind).
    pub fn set_health_clock_offset(&self, secs: i64) {
        lock(&self.inner.state).health_clock_offset = secs;
    }

    /// How many TCP connections were accepted so far (to check keep-alive reuse).
    pub fn connections_accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Stops the server: closes the listener and every connection, releases hung requests. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_policies_like_vault() {
        let p =
            |v: &[&str]| sanitize_policies(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["b", "A", "a", ""]), vec!["a", "b"]);
        assert_eq!(p(&["default", "root"]), vec!["root"]);
    }

    #[test]
    fn parses_increment_forms() {
        assert_eq!(parse_increment(None), Ok(0));
        assert_eq!(parse_increment(Some(&Value::from(60))), Ok(60));
        assert_eq!(parse_increment(Some(&Value::from("1h"))), Ok(3600));
        assert_eq!(parse_increment(Some(&Value::from("90"))), Ok(90));
        assert_eq!(parse_increment(Some(&Value::from("2d"))), Ok(172_800));
        assert!(parse_increment(Some(&Value::from(1.5))).is_err());
        assert!(parse_increment(Some(&Value::from(true))).is_err());
        assert!(parse_increment(Some(&Value::from("soon"))).is_err());
    }

    #[test]
    fn parses_bodies_like_vault() {
        assert!(parse_json_body(b"").unwrap().is_empty());
        assert!(parse_json_body(b" \n").unwrap().is_empty());
        assert!(parse_json_body(b"null").unwrap().is_empty());
        assert_eq!(
            parse_json_body(b"{\"increment\":5} trailing").unwrap()["increment"],
            5
        );
        assert!(parse_json_body(b"{")
            .unwrap_err()
            .starts_with("failed to parse JSON input: "));
        assert!(parse_json_body(b"[1]")
            .unwrap_err()
            .contains("cannot unmarshal array"));
        assert!(parse_json_body(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn redirect_appends_path_only_to_bare_hosts() {
        let req = Request {
            method: "GET".into(),
            path: "/v1/auth/token/lookup-self".into(),
            query: "a=b".into(),
            headers: vec![],
            body: vec![],
            keep_alive: true,
        };
        assert_eq!(
            redirect_location("https://active:8200", &req),
            "https://active:8200/v1/auth/token/lookup-self?a=b"
        );
        assert_eq!(
            redirect_location("https://active:8200/x", &req),
            "https://active:8200/x"
        );
    }
}
