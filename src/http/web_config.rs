//! `--web.config.file`: the exporter-toolkit web configuration (TLS and basic auth), so
//! the exporter is secured the way every other Prometheus exporter is.
//!
//! The format and its semantics follow exporter-toolkit's `docs/web-configuration.md`:
//! relative paths are relative to the file's directory; `tls_server_config` with any of
//! its certificate, key, CA or `client_auth_type` keys turns TLS on and then needs a
//! certificate and a key; a client CA without a `client_auth_type` that asks for client
//! certificates is an error; `basic_auth_users` maps user names to bcrypt hashes.
//! Differences, all loud: keys of the format that this exporter does not implement
//! (`cipher_suites`, `curve_preferences`, `client_allowed_sans`, `rate_limit`) are
//! errors rather than silently ignored security settings; only TLS 1.2 and 1.3 exist
//! (rustls), so `min_version: TLS10` means TLS 1.2; HTTP/2 is never offered
//! (`http2` is accepted and has no effect). The certificate and key files are re-read
//! on the first handshake after either changes (certificate rotation without a restart);
//! everything else is read once at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use collectors::tls;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use serde::Deserialize;

use super::auth::BasicAuth;

/// An unusable web config: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WebConfigError(pub String);

/// exporter-toolkit's `tls_server_config`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// Inline PEM certificate (instead of `cert_file`).
    pub cert: Option<String>,
    /// Inline PEM key (instead of `key_file`).
    pub key: Option<String>,
    /// Inline PEM client CA (instead of `client_ca_file`).
    pub client_ca: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth_type: Option<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    /// Accepted for compatibility; rustls picks the suite.
    pub prefer_server_cipher_suites: Option<bool>,
    /// Part of the format, not implemented here: rejected.
    pub cipher_suites: Option<serde_yaml_ng::Value>,
    /// Part of the format, not implemented here: rejected.
    pub curve_preferences: Option<serde_yaml_ng::Value>,
    /// Part of the format, not implemented here: rejected.
    pub client_allowed_sans: Option<serde_yaml_ng::Value>,
}

/// exporter-toolkit's `http_server_config`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Accepted; this server speaks HTTP/1.1 only.
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The whole web config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub tls_server_config: Option<TlsServerConfig>,
    pub http_server_config: Option<HttpServerConfig>,
    /// User name to bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    /// Part of the format, not implemented here: rejected.
    pub rate_limit: Option<serde_yaml_ng::Value>,
}

/// What a web config asks the server to do.
#[derive(Default)]
pub struct WebSetup {
    /// The basic-auth check, `None` when open.
    pub basic_auth: Option<Arc<BasicAuth>>,
    /// TLS for every connection, `None` for plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WebSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSetup")
            .field("basic_auth", &self.basic_auth.is_some())
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers)
            .finish()
    }
}

/// The response headers exporter-toolkit lets a web config set, with their allowed
/// values (empty: any).
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// Reads and checks a web config file (not the files it names).
pub fn read(path: &Path) -> Result<WebConfig, WebConfigError> {
    let file = path.display();
    let invalid = |what: String| WebConfigError(format!("invalid web config file {file}: {what}"));
    let text = std::fs::read_to_string(path)
        .map_err(|e| WebConfigError(format!("cannot read web config file {file}: {e}")))?;
    if text.trim().is_empty() {
        return Ok(WebConfig::default());
    }
    let config: WebConfig = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    for (user, hash) in &config.basic_auth_users {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(invalid(format!(
                "basic_auth_users.{user}: not a bcrypt hash"
            )));
        }
    }
    if config.rate_limit.is_some() {
        return Err(invalid(
            "rate_limit is not supported by vault-token-exporter".into(),
        ));
    }
    if let Some(http) = &config.http_server_config {
        for (name, value) in &http.headers {
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(n, _)| n == name) else {
                return Err(invalid(format!(
                    "http_server_config.headers: HTTP header {name:?} can not be configured"
                )));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(invalid(format!(
                    "http_server_config.headers.{name}: expected one of {allowed:?}, got {value:?}"
                )));
            }
            if value.chars().any(|c| c.is_control()) || !value.is_ascii() {
                return Err(invalid(format!(
                    "http_server_config.headers.{name}: not a valid header value"
                )));
            }
        }
    }
    if let Some(tls) = &config.tls_server_config {
        for (key, set) in [
            ("cipher_suites", tls.cipher_suites.is_some()),
            ("curve_preferences", tls.curve_preferences.is_some()),
            ("client_allowed_sans", tls.client_allowed_sans.is_some()),
        ] {
            if set {
                return Err(invalid(format!(
                    "tls_server_config.{key} is not supported by vault-token-exporter"
                )));
            }
        }
        for (inline, file_key, both) in [
            (
                "cert",
                "cert_file",
                tls.cert.is_some() && tls.cert_file.is_some(),
            ),
            (
                "key",
                "key_file",
                tls.key.is_some() && tls.key_file.is_some(),
            ),
            (
                "client_ca",
                "client_ca_file",
                tls.client_ca.is_some() && tls.client_ca_file.is_some(),
            ),
        ] {
            if both {
                return Err(invalid(format!(
                    "tls_server_config: give {inline} or {file_key}, not both"
                )));
            }
        }
    }
    Ok(config)
}

/// Loads a web config, with its certificates and keys, and returns what it asks for.
pub fn load(path: &Path) -> Result<WebSetup, WebConfigError> {
    let config = read(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tls = match &config.tls_server_config {
        Some(tls) if tls_enabled(tls) => Some(
            server_config(tls, dir)
                .map_err(|e| WebConfigError(format!("web config file {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let headers = config
        .http_server_config
        .map(|h| h.headers.into_iter().collect())
        .unwrap_or_default();
    Ok(WebSetup {
        basic_auth: BasicAuth::new(config.basic_auth_users).map(Arc::new),
        tls,
        headers,
    })
}

/// exporter-toolkit's `IsEnabled`: any certificate, key, CA or client auth key.
fn tls_enabled(tls: &TlsServerConfig) -> bool {
    tls.cert.is_some()
        || tls.cert_file.is_some()
        || tls.key.is_some()
        || tls.key_file.is_some()
        || tls.client_ca.is_some()
        || tls.client_ca_file.is_some()
        || tls.client_auth_type.is_some()
}

/// Where PEM text comes from: the config itself or a file (relative to the config).
#[derive(Clone, Debug)]
enum Pem {
    Inline(&'static str, String),
    File(&'static str, PathBuf),
}

impl Pem {
    fn of(
        inline: &Option<String>,
        file: &Option<PathBuf>,
        keys: (&'static str, &'static str),
        dir: &Path,
    ) -> Option<Pem> {
        match (inline, file) {
            (Some(text), _) => Some(Pem::Inline(keys.0, text.clone())),
            (None, Some(path)) => Some(Pem::File(keys.1, dir.join(path))),
            (None, None) => None,
        }
    }

    /// `tls_server_config.cert_file /etc/x.pem`, for messages.
    fn describe(&self) -> String {
        match self {
            Pem::Inline(key, _) => format!("tls_server_config.{key}"),
            Pem::File(key, path) => format!("tls_server_config.{key} {}", path.display()),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            Pem::Inline(_, text) => Ok(text.clone().into_bytes()),
            Pem::File(_, path) => {
                std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", self.describe()))
            }
        }
    }

    /// Identifies the file's current content cheaply (inline text never changes).
    fn stamp(&self) -> Option<(SystemTime, u64)> {
        match self {
            Pem::Inline(..) => None,
            Pem::File(_, path) => std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())),
        }
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let bytes = self.bytes()?;
        tls::pem_certificates(&bytes).map_err(|e| match e {
            pem::Error::NoItemsFound => format!("{}: no PEM certificate in it", self.describe()),
            e => format!("{}: invalid PEM: {e}", self.describe()),
        })
    }

    fn private_key(&self) -> Result<PrivateKeyDer<'static>, String> {
        let bytes = self.bytes()?;
        tls::pem_private_key(&bytes)
            .map_err(|e| format!("{}: no usable PEM private key: {e}", self.describe()))
    }
}

/// Builds the rustls server configuration of a `tls_server_config`.
fn server_config(tls: &TlsServerConfig, dir: &Path) -> Result<Arc<ServerConfig>, String> {
    let provider = tls::crypto_provider();
    let cert = Pem::of(&tls.cert, &tls.cert_file, ("cert", "cert_file"), dir)
        .ok_or("tls_server_config: cert_file (or cert) is required")?;
    let key = Pem::of(&tls.key, &tls.key_file, ("key", "key_file"), dir)
        .ok_or("tls_server_config: key_file (or key) is required")?;
    let resolver = ReloadingCert::new(cert, key, provider.clone())?;

    let roots = match Pem::of(
        &tls.client_ca,
        &tls.client_ca_file,
        ("client_ca", "client_ca_file"),
        dir,
    ) {
        None => None,
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in pem.certificates()? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: unusable CA certificate: {e}", pem.describe()))?;
            }
            Some((Arc::new(roots), pem))
        }
    };
    let auth_type = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let need_roots = |roots: Option<(Arc<RootCertStore>, Pem)>| {
        roots.map(|(r, _)| r).ok_or_else(|| {
            format!("tls_server_config.client_auth_type {auth_type} needs client_ca_file (or client_ca) to verify client certificates")
        })
    };
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ClientCertVerifier> = match auth_type {
        "NoClientCert" | "" => {
            if let Some((_, pem)) = roots {
                return Err(format!(
                    "{} is set but client_auth_type is NoClientCert: set client_auth_type to RequireAndVerifyClientCert to check client certificates",
                    pem.describe()
                ));
            }
            WebPkiClientVerifier::no_client_auth()
        }
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            Arc::new(AnyClientCert {
                mandatory: auth_type != "RequestClientCert",
                hints: roots.map(|(r, _)| r.subjects()).unwrap_or_default(),
                algorithms,
            })
        }
        "VerifyClientCertIfGiven" => {
            WebPkiClientVerifier::builder_with_provider(need_roots(roots)?, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("tls_server_config: client certificate verifier: {e}"))?
        }
        "RequireAndVerifyClientCert" => {
            WebPkiClientVerifier::builder_with_provider(need_roots(roots)?, provider.clone())
                .build()
                .map_err(|e| format!("tls_server_config: client certificate verifier: {e}"))?
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type {other:?} is not one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
            ))
        }
    };

    let version = |key: &str, value: &Option<String>, default: u8| -> Result<u8, String> {
        match value.as_deref() {
            None => Ok(default),
            Some("TLS10") => Ok(10),
            Some("TLS11") => Ok(11),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(other) => Err(format!(
                "tls_server_config.{key}: unknown TLS version {other:?} (TLS10, TLS11, TLS12, TLS13)"
            )),
        }
    };
    let min = version("min_version", &tls.min_version, 12)?;
    let max = version("max_version", &tls.max_version, 13)?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, v)| v)
            .collect();
    if versions.is_empty() {
        return Err("tls_server_config: no TLS version between min_version and max_version that this exporter speaks (TLS12, TLS13)".into());
    }

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    // HTTP/1.1 only: a client offering h2 and http/1.1 (Prometheus) picks http/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server certificate, re-read on the first handshake after its files change so a
/// rotated certificate needs no restart. A rotation that leaves an unusable pair keeps
/// the last good one and logs why.
#[derive(Debug)]
struct ReloadingCert {
    cert: Pem,
    key: Pem,
    provider: Arc<CryptoProvider>,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

type Stamp = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

impl ReloadingCert {
    fn new(cert: Pem, key: Pem, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        let stamp = (cert.stamp(), key.stamp());
        let loaded = Self::load(&cert, &key, &provider)?;
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            current: Mutex::new((stamp, loaded)),
        })
    }

    fn load(cert: &Pem, key: &Pem, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
        let chain = cert.certificates()?;
        let der = key.private_key()?;
        CertifiedKey::from_der(chain, der, provider)
            .map(Arc::new)
            .map_err(|e| {
                let why = match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "the key does not belong to the certificate".to_owned()
                    }
                    e => e.to_string(),
                };
                format!(
                    "{} and {} do not make a usable pair: {why}",
                    cert.describe(),
                    key.describe()
                )
            })
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let stamp = (self.cert.stamp(), self.key.stamp());
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if stamp != current.0 {
            // Remember the stamp either way: a bad file is reported once, not per handshake.
            current.0 = stamp;
            match Self::load(&self.cert, &self.key, &self.provider) {
                Ok(loaded) => {
                    log::info!("reloaded the TLS certificate {}", self.cert.describe());
                    current.1 = loaded;
                }
                Err(e) => log::error!("keeping the previous TLS certificate: {e}"),
            }
        }
        Some(current.1.clone())
    }
}

/// `RequestClientCert` / `RequireAnyClientCert`: asks for a certificate (optionally
/// insists on one) without checking who issued it, as Go's crypto/tls does. The
/// handshake signature is still verified, so the client holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A scratch directory, removed when dropped.
    struct Dir(PathBuf);

    impl std::ops::Deref for Dir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("vte-web-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    #[test]
    fn unknown_keys_and_bad_hashes_are_errors() {
        let dir = dir("keys");
        let unknown = write(&dir, "unknown.yml", "basic_auth_user:\n  a: b\n");
        let err = read(&unknown).unwrap_err().to_string();
        assert!(
            err.contains("basic_auth_user") && err.contains("unknown.yml"),
            "{err}"
        );
        let nested = write(&dir, "nested.yml", "tls_server_config:\n  cert_fil: x\n");
        let err = read(&nested).unwrap_err().to_string();
        assert!(
            err.contains("cert_fil") && err.contains("nested.yml"),
            "{err}"
        );
        let bad_hash = write(&dir, "hash.yml", "basic_auth_users:\n  alice: plaintext\n");
        let err = read(&bad_hash).unwrap_err().to_string();
        assert!(err.contains("basic_auth_users.alice"), "{err}");
    }

    #[test]
    fn format_keys_not_implemented_are_errors_not_ignored() {
        let dir = dir("unsupported");
        for (name, yaml, key) in [
            (
                "sans.yml",
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_allowed_sans: [a]\n",
                "client_allowed_sans",
            ),
            (
                "ciphers.yml",
                "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
                "cipher_suites",
            ),
            (
                "rate.yml",
                "rate_limit:\n  interval: 1s\n  burst: 2\n",
                "rate_limit",
            ),
            (
                "header.yml",
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "X-Powered-By",
            ),
            (
                "frame.yml",
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "X-Frame-Options",
            ),
        ] {
            let err = read(&write(&dir, name, yaml)).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(name), "{err}");
        }
    }

    #[test]
    fn an_empty_file_and_empty_tls_section_mean_plain_http_without_auth() {
        let dir = dir("empty");
        let setup = load(&write(&dir, "empty.yml", "")).unwrap();
        assert!(setup.tls.is_none() && setup.basic_auth.is_none());
        let setup = load(&write(&dir, "tls.yml", "tls_server_config: {}\n")).unwrap();
        assert!(setup.tls.is_none());
    }

    #[test]
    fn tls_needs_a_readable_certificate_and_key_and_names_the_file() {
        let dir = dir("files");
        let err = load(&write(
            &dir,
            "nokey.yml",
            "tls_server_config:\n  cert_file: c.pem\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("key_file") && err.contains("nokey.yml"),
            "{err}"
        );
        let err = load(&write(
            &dir,
            "missing.yml",
            "tls_server_config:\n  cert_file: missing-cert.pem\n  key_file: k.pem\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&dir.join("missing-cert.pem").display().to_string()),
            "{err}"
        );
        write(&dir, "junk.pem", "not a certificate\n");
        let err = load(&write(
            &dir,
            "junk.yml",
            "tls_server_config:\n  cert_file: junk.pem\n  key_file: junk.pem\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
