//! The Vault client: lookup-self and renew-self over ureq, with one shared agent per Vault
//! address and TLS setting.
//!
//! It follows one 307 from a standby itself (ureq follows none for a POST) and never from
//! https to http, refuses bodies over 1 MiB, bounds every call by the configured timeout
//! (body included, so a slow-loris answer is a timeout), and turns every answer into a
//! typed [`VaultError`] whose text never holds the token.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::VaultError;
use crate::parse::{parse_error_messages, parse_lookup, parse_renewal, Lookup, Renewal};
use crate::proxy::ProxyEnv;
use crate::secret::Token;
use crate::tls;

/// Largest body we read; Vault's token answers are a few KiB.
pub const MAX_BODY: u64 = 1024 * 1024;

/// The two token calls the renewal worker makes; a trait so worker tests can script Vault.
pub trait VaultApi: Send + Sync {
    /// `GET /v1/auth/token/lookup-self`.
    fn lookup_self(&self, token: &Token) -> Result<Lookup, VaultError>;
    /// `POST /v1/auth/token/renew-self`, with an `increment` only when one is given.
    fn renew_self(&self, token: &Token, increment: Option<u64>) -> RenewAttempt;
}

/// The result of one renew-self call, with its latency when Vault answered at all.
#[derive(Debug)]
pub struct RenewAttempt {
    pub result: Result<Renewal, VaultError>,
    /// Time to the HTTP answer; `None` when none came (refused, timeout, TLS).
    pub latency: Option<Duration>,
}

/// TLS settings towards one Vault, as in the config file's `tls` block or `VAULT_*` variables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// A TLS setting that cannot be used: a missing or unreadable file, no certificate in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsConfigError(String);

/// Builds HTTP agents, one per TLS setting and proxy, so that 1000 tokens on one Vault
/// share one connection pool and one TLS context instead of 1000.
pub struct Agents {
    by_tls: Mutex<HashMap<(TlsSettings, Option<String>), ureq::Agent>>,
    proxies: ProxyEnv,
}

impl Default for Agents {
    /// Agents that take the proxy variables of the process environment.
    fn default() -> Self {
        Agents::with_proxies(ProxyEnv::from_process())
    }
}

impl Agents {
    /// Agents that use `proxies` rather than the process environment's.
    pub fn with_proxies(proxies: ProxyEnv) -> Agents {
        Agents {
            by_tls: Mutex::default(),
            proxies,
        }
    }

    /// The agent for calls to `address` with `tls`: through the proxy the environment
    /// names for it, if any.
    pub fn for_address(
        &self,
        address: &str,
        tls: &TlsSettings,
    ) -> Result<ureq::Agent, TlsConfigError> {
        self.build(tls, self.proxies.proxy_for(address))
    }

    /// The agent for `tls`, without a proxy, built on first use.
    pub fn get(&self, tls: &TlsSettings) -> Result<ureq::Agent, TlsConfigError> {
        self.build(tls, None)
    }

    fn build(
        &self,
        tls: &TlsSettings,
        proxy: Option<String>,
    ) -> Result<ureq::Agent, TlsConfigError> {
        let key = (tls.clone(), proxy);
        let mut by_tls = self.by_tls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(agent) = by_tls.get(&key) {
            return Ok(agent.clone());
        }
        let (tls, proxy) = (&key.0, &key.1);
        let config = Arc::new(tls_client_config(tls)?);
        let builder = match &tls.server_name {
            // As VAULT_TLS_SERVER_NAME does for Vault's client: the name is the SNI sent and
            // the name the certificate is checked against, whatever host the URL names.
            Some(name) => ureq::AgentBuilder::new().tls_connector(Arc::new(SniOverride {
                config,
                name: name.clone(),
            })),
            None => ureq::AgentBuilder::new().tls_config(config),
        };
        let builder = match proxy {
            Some(url) => builder.proxy(ureq::Proxy::new(url).map_err(|e| {
                TlsConfigError(format!("unusable proxy {url:?} (from HTTP(S)_PROXY): {e}"))
            })?),
            None => builder,
        };
        let agent = builder
            .redirects(0)
            .user_agent(concat!("vault-token-exporter/", env!("CARGO_PKG_VERSION")))
            .build();
        by_tls.insert(key.clone(), agent.clone());
        Ok(agent)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    tls::read_pem_file(path)
        .and_then(|pem| tls::pem_certificates(&pem))
        .map_err(|e| match e {
            pem::Error::NoItemsFound => {
                TlsConfigError(format!("no PEM certificate in {}", path.display()))
            }
            e => TlsConfigError(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            )),
        })
}

fn root_store(tls: &TlsSettings) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    let mut add = |certs: Vec<CertificateDer<'static>>, from: &PathBuf| {
        for cert in certs {
            roots.add(cert).map_err(|e| {
                TlsConfigError(format!("invalid CA certificate in {}: {e}", from.display()))
            })?;
        }
        Ok::<_, TlsConfigError>(())
    };
    // As the Vault CLI: a CA file wins over a CA directory; either replaces the public roots.
    if let Some(file) = &tls.ca_file {
        add(read_certs(file)?, file)?;
    } else if let Some(dir) = &tls.ca_path {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            TlsConfigError(format!("cannot read CA directory {}: {e}", dir.display()))
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            // Skip non-PEM files in the directory (a README, a key), as openssl's c_rehash does.
            if let Ok(certs) = read_certs(&file) {
                add(certs, &file)?;
            }
        }
        if roots.is_empty() {
            return Err(TlsConfigError(format!(
                "no PEM certificate in CA directory {}",
                dir.display()
            )));
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// The rustls client configuration for one TLS setting.
pub fn tls_client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, TlsConfigError> {
    let builder = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(format!("tls setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(NoVerification(tls::crypto_provider()))
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(root_store(tls)?),
            tls::crypto_provider(),
        )
        .build()
        .map_err(|e| TlsConfigError(format!("tls setup: {e}")))?;
        match &tls.server_name {
            Some(name) => Arc::new(NamedVerifier {
                inner: webpki,
                name: ServerName::try_from(name.clone())
                    .map_err(|_| TlsConfigError(format!("invalid tls server_name {name:?}")))?,
            }),
            None => webpki,
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let key_der = tls::read_pem_file(key)
                .and_then(|pem| tls::pem_private_key(&pem))
                .map_err(|e| {
                    TlsConfigError(format!(
                        "cannot read private key from {}: {e}",
                        key.display()
                    ))
                })?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key_der)
                .map_err(|e| {
                    TlsConfigError(format!(
                        "client certificate {} does not fit its key: {e}",
                        cert.display()
                    ))
                })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(TlsConfigError(
            "both client cert and client key must be provided".into(),
        )),
    }
}

/// Connects with the configured `server_name` as SNI instead of the URL's host.
struct SniOverride {
    config: Arc<rustls::ClientConfig>,
    name: String,
}

impl ureq::TlsConnector for SniOverride {
    fn connect(
        &self,
        _url_host: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        self.config.connect(&self.name, io)
    }
}

/// Verifies the chain as usual but against the configured `server_name`, not the URL's host.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: accepts any certificate (the operator asked for it, and is warned).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A client for one Vault address (and namespace).
pub struct VaultClient {
    agent: ureq::Agent,
    base: String,
    namespace: Option<String>,
    timeout: Duration,
}

/// An HTTP answer, read in full.
struct Answer {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
}

impl VaultClient {
    /// A client for `address` (e.g. `https://vault:8200`), sending `namespace` if given.
    pub fn new(
        agent: ureq::Agent,
        address: &str,
        namespace: Option<String>,
        timeout: Duration,
    ) -> VaultClient {
        VaultClient {
            agent,
            base: address.trim_end_matches('/').to_owned(),
            namespace,
            timeout,
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: &Token,
        body: Option<&str>,
    ) -> Result<Answer, VaultError> {
        let deadline = Instant::now() + self.timeout;
        let mut url = format!("{}{}", self.base, path);
        for hop in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(VaultError::Timeout);
            }
            let mut request = self
                .agent
                .request(method, &url)
                .timeout(left)
                .set("X-Vault-Token", token.expose())
                .set("X-Vault-Request", "true");
            if let Some(ns) = &self.namespace {
                request = request.set("X-Vault-Namespace", ns);
            }
            let sent = match body {
                Some(json) => request
                    .set("Content-Type", "application/json")
                    .send_string(json),
                None => request.call(),
            };
            let response = match sent {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(ureq::Error::Transport(t)) => return Err(transport_error(&t)),
            };
            let status = response.status();
            if matches!(status, 307 | 308) && hop == 0 {
                // A standby points at the active node; follow it once, as Vault's client does.
                let location = response.header("Location").unwrap_or_default().to_owned();
                url = resolve_redirect(&url, &location)?;
                continue;
            }
            return read_answer(response, token);
        }
        Err(VaultError::ServerError {
            status: 307,
            message: "redirected more than once".into(),
        })
    }
}

/// Where a `Location` points, relative to `from`; refuses a step down from https to http.
fn resolve_redirect(from: &str, location: &str) -> Result<String, VaultError> {
    let refuse = |message: &str| VaultError::ServerError {
        status: 307,
        message: message.into(),
    };
    let target = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with('/') {
        let scheme_end = from.find("://").map(|i| i + 3).unwrap_or(0);
        let authority_end = from[scheme_end..]
            .find('/')
            .map(|i| scheme_end + i)
            .unwrap_or(from.len());
        format!("{}{}", &from[..authority_end], location)
    } else {
        return Err(refuse("redirect without a usable location"));
    };
    if from.starts_with("https://") && !target.starts_with("https://") {
        return Err(refuse("refused redirect from https to http"));
    }
    Ok(target)
}

fn read_answer(response: ureq::Response, token: &Token) -> Result<Answer, VaultError> {
    let status = response.status();
    let retry_after = response
        .header("Retry-After")
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = read_body(response)?;
    if status == 200 {
        return Ok(Answer {
            status,
            body,
            retry_after,
        });
    }
    Err(status_error(status, &body, retry_after, token))
}

/// Reads a whole answer body, refusing one over [`MAX_BODY`] (also by its announced length)
/// and bounding the read by the request's timeout (a slow-loris body is a timeout).
pub(crate) fn read_body(response: ureq::Response) -> Result<Vec<u8>, VaultError> {
    let too_big = || VaultError::BadResponse("body over 1 MiB".into());
    let announced = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > MAX_BODY) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => VaultError::Timeout,
            kind => VaultError::Network(format!("reading the answer: {kind}")),
        })?;
    if body.len() as u64 > MAX_BODY {
        return Err(too_big());
    }
    Ok(body)
}

/// Maps a non-200 answer to its error, by status and Vault's error text.
fn status_error(status: u16, body: &[u8], retry_after: Option<u64>, token: &Token) -> VaultError {
    let message = parse_error_messages(body)
        .map(|m| sanitize(&m, token))
        .unwrap_or_else(|| "no Vault error in the body".into());
    let says = |text: &str| message.contains(text);
    match status {
        403 => VaultError::PermissionDenied { message },
        // Vault 0.6.0 answered some permission errors with 400 (hashicorp/vault#1878).
        400 if says("permission denied") => VaultError::PermissionDenied { message },
        400 if says("token not found") || says("lease expired") || says("past the max TTL") => {
            VaultError::TokenNotFound
        }
        400 if says("not renewable")
            || says("batch tokens cannot be renewed")
            || says("invalid lease ID") =>
        {
            VaultError::NotRenewable { message }
        }
        429 => VaultError::RateLimited { retry_after },
        503 if says("Vault is sealed") => VaultError::Sealed,
        412 | 500..=599 | 300..=399 => VaultError::ServerError { status, message },
        400..=499 => VaultError::BadRequest { status, message },
        _ => VaultError::BadResponse(format!("unexpected status {status}")),
    }
}

/// A Vault error text fit for a log line: one line, bounded, and never the token.
fn sanitize(message: &str, token: &Token) -> String {
    let one_line: String = message
        .replace(token.expose(), "<redacted>")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &one_line[..cut]),
        None => one_line,
    }
}

/// Classifies a failure to get any answer (also for `sys/health`, see [`crate::health`]).
pub(crate) fn transport_error(t: &ureq::Transport) -> VaultError {
    use std::error::Error as _;
    let mut source = t.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                return VaultError::Timeout;
            }
            if let Some(tls) = io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
                return tls_error(tls);
            }
        }
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return tls_error(tls);
        }
        source = err.source();
    }
    let detail = match t.kind() {
        ureq::ErrorKind::Dns => {
            let host = t.url().and_then(|u| u.host_str()).unwrap_or("the host");
            // The resolver's own words ("Name or service not known"), not io's kind.
            let why = t.source().map(|e| format!(": {e}")).unwrap_or_default();
            return VaultError::Network(format!("cannot resolve {host}{why}"));
        }
        ureq::ErrorKind::ConnectionFailed => "connection failed".to_owned(),
        kind => kind.to_string(),
    };
    let cause = t
        .source()
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .map(|io| format!(": {}", io.kind()))
        .unwrap_or_default();
    VaultError::Network(format!("{}{cause}", detail.to_lowercase()))
}

/// A TLS failure in words an operator can act on.
fn tls_error(e: &rustls::Error) -> VaultError {
    use rustls::InvalidMessage;
    match e {
        // What rustls makes of an HTTP answer to its ClientHello.
        rustls::Error::InvalidMessage(InvalidMessage::InvalidContentType) => VaultError::Tls(
            "the server answered in plain HTTP, not TLS: use an http:// address, or enable TLS on Vault's listener".into(),
        ),
        e => VaultError::Tls(e.to_string()),
    }
}

impl VaultApi for VaultClient {
    fn lookup_self(&self, token: &Token) -> Result<Lookup, VaultError> {
        let answer = self.call("GET", "/v1/auth/token/lookup-self", token, None)?;
        parse_lookup(&answer.body)
    }

    fn renew_self(&self, token: &Token, increment: Option<u64>) -> RenewAttempt {
        let started = Instant::now();
        let body = increment.map(|i| format!("{{\"increment\":{i}}}"));
        let answered = |e: &VaultError| {
            !matches!(
                e,
                VaultError::Network(_) | VaultError::Timeout | VaultError::Tls(_)
            )
        };
        match self.call("POST", "/v1/auth/token/renew-self", token, body.as_deref()) {
            Ok(answer) => {
                let latency = Some(started.elapsed());
                debug_assert_eq!(answer.status, 200);
                let _ = answer.retry_after;
                RenewAttempt {
                    result: parse_renewal(&answer.body),
                    latency,
                }
            }
            Err(e) => RenewAttempt {
                latency: answered(&e).then(|| started.elapsed()),
                result: Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token::new("hvs.SECRET").unwrap()
    }

    fn classify(status: u16, body: &str) -> VaultError {
        status_error(status, body.as_bytes(), None, &token())
    }

    #[test]
    fn statuses_map_to_the_contracts_reasons() {
        use crate::error::Reason::*;
        let cases = [
            (
                403,
                r#"{"errors":["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]}"#,
                PermissionDenied,
            ),
            (403, r#"{"errors":["permission denied"]}"#, PermissionDenied),
            (400, r#"{"errors":["permission denied"]}"#, PermissionDenied),
            (503, r#"{"errors":["Vault is sealed"]}"#, Sealed),
            (
                503,
                r#"{"errors":["no active Vault instance found"]}"#,
                ServerError,
            ),
            (500, "<html>oops</html>", ServerError),
            (
                412,
                r#"{"errors":["required index state not present"]}"#,
                ServerError,
            ),
            (
                429,
                r#"{"errors":["rate limit quota exceeded"]}"#,
                RateLimited,
            ),
            (404, r#"{"errors":[]}"#, BadRequest),
            (405, r#"{"errors":["unsupported operation"]}"#, BadRequest),
        ];
        for (status, body, reason) in cases {
            assert_eq!(classify(status, body).reason(), reason, "{status} {body}");
        }
    }

    #[test]
    fn renewal_refusals_of_vault_are_not_renewable_or_invalid() {
        for body in [
            r#"{"errors":["lease is not renewable"]}"#,
            r#"{"errors":["batch tokens cannot be renewed"]}"#,
            r#"{"errors":["invalid lease ID"]}"#,
            r#"{"errors":["lease not found or lease is not renewable"]}"#,
        ] {
            assert!(
                matches!(classify(400, body), VaultError::NotRenewable { .. }),
                "{body}"
            );
        }
        assert!(matches!(
            classify(400, r#"{"errors":["token not found"]}"#),
            VaultError::TokenNotFound
        ));
        assert!(matches!(
            classify(400, r#"{"errors":["missing client token"]}"#),
            VaultError::BadRequest { status: 400, .. }
        ));
    }

    #[test]
    fn error_texts_never_carry_the_token() {
        let err = classify(403, r#"{"errors":["token hvs.SECRET is bad"]}"#);
        let text = err.to_string();
        assert!(
            !text.contains("SECRET") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn redirects_resolve_relative_and_never_step_down_to_http() {
        assert_eq!(
            resolve_redirect("http://a:8200/v1/x", "/v1/x").unwrap(),
            "http://a:8200/v1/x"
        );
        assert_eq!(
            resolve_redirect("https://a:8200/v1/x", "https://b:8200/v1/x").unwrap(),
            "https://b:8200/v1/x"
        );
        assert!(resolve_redirect("https://a:8200/v1/x", "http://b:8200/v1/x").is_err());
        assert!(resolve_redirect("http://a/v1/x", "").is_err());
    }

    #[test]
    fn client_cert_without_key_is_refused() {
        let tls = TlsSettings {
            cert_file: Some("/nonexistent.pem".into()),
            ..Default::default()
        };
        let err = tls_client_config(&tls).unwrap_err().to_string();
        assert!(err.contains("both client cert and client key"), "{err}");
    }

    fn client(address: &str) -> VaultClient {
        let agent = Agents::default().get(&TlsSettings::default()).unwrap();
        VaultClient::new(agent, address, None, Duration::from_secs(5))
    }

    #[test]
    fn https_against_a_plain_http_server_says_so() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut hello = [0u8; 512];
            let _ = conn.read(&mut hello);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        });
        let err = client(&format!("https://127.0.0.1:{port}"))
            .lookup_self(&token())
            .unwrap_err();
        server.join().unwrap();
        assert_eq!(err.reason(), crate::error::Reason::Tls);
        let text = err.to_string();
        assert!(
            text.contains("plain HTTP") && text.contains("http://"),
            "{text}"
        );
    }

    #[test]
    fn an_unresolvable_host_is_named() {
        // `.invalid` never resolves (RFC 2606).
        let err = client("http://vault.example.invalid:8200")
            .lookup_self(&token())
            .unwrap_err();
        assert_eq!(err.reason(), crate::error::Reason::Network);
        let text = err.to_string();
        assert!(
            text.contains("cannot resolve vault.example.invalid"),
            "{text}"
        );
    }

    #[test]
    fn a_vault_behind_a_proxy_is_reached_through_it() {
        use std::io::{BufRead, BufReader, Write};
        // A proxy that answers the request itself, as the Vault behind it would.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = proxy.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let body = br#"{"data":{"ttl":60,"expire_time":"2030-01-01T00:00:00Z","renewable":true,"policies":["default"]}}"#;
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body);
            request_line
        });
        let vars = [
            ("HTTP_PROXY".to_string(), format!("http://{proxy_addr}")),
            ("NO_PROXY".to_string(), "direct.example".to_string()),
        ];
        let proxies =
            ProxyEnv::from_env(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()));
        let agents = Agents::with_proxies(proxies);
        // `.invalid` never resolves: only the proxy can have answered.
        let address = "http://vault.example.invalid:8200";
        let agent = agents
            .for_address(address, &TlsSettings::default())
            .unwrap();
        let client = VaultClient::new(agent, address, None, Duration::from_secs(5));
        let lookup = client.lookup_self(&token()).unwrap();
        assert_eq!(lookup.ttl, 60);
        let request_line = server.join().unwrap();
        assert!(
            request_line
                .starts_with("GET http://vault.example.invalid:8200/v1/auth/token/lookup-self"),
            "{request_line}"
        );
        // NO_PROXY and loopback go direct: the same agent as without a proxy.
        agents
            .for_address("http://direct.example:8200", &TlsSettings::default())
            .unwrap();
        agents
            .for_address("http://127.0.0.1:8200", &TlsSettings::default())
            .unwrap();
        assert_eq!(agents.by_tls.lock().unwrap().len(), 2);
    }

    #[test]
    fn one_agent_per_tls_setting() {
        let agents = Agents::default();
        let a = agents.get(&TlsSettings::default()).unwrap();
        let b = agents.get(&TlsSettings::default()).unwrap();
        let insecure = TlsSettings {
            insecure_skip_verify: true,
            ..Default::default()
        };
        agents.get(&insecure).unwrap();
        assert_eq!(agents.by_tls.lock().unwrap().len(), 2);
        drop((a, b));
    }
}
