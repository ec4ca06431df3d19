//! `--web.config.file`: the exporter-toolkit web configuration (TLS and basic auth), so
//! the exporter is secured the way every other Prometheus exporter is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::server::Authorizer;

/// An unusable web config: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WebConfigError(pub String);

/// exporter-toolkit's `tls_server_config`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth_type: Option<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
}

/// exporter-toolkit's `http_server_config`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: HashMap<String, String>,
}

/// The whole web config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    pub tls_server_config: Option<TlsServerConfig>,
    pub http_server_config: Option<HttpServerConfig>,
    /// User name to bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: HashMap<String, String>,
}

/// Reads and checks a web config file.
pub fn read(path: &Path) -> Result<WebConfig, WebConfigError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| WebConfigError(format!("cannot read web config file {file}: {e}")))?;
    let config: WebConfig = serde_yaml_ng::from_str(&text)
        .map_err(|e| WebConfigError(format!("invalid web config file {file}: {e}")))?;
    for (user, hash) in &config.basic_auth_users {
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(WebConfigError(format!(
                "invalid web config file {file}: basic_auth_users.{user}: not a bcrypt hash"
            )));
        }
    }
    if let Some(tls) = &config.tls_server_config {
        if tls.cert_file.is_none() || tls.key_file.is_none() {
            return Err(WebConfigError(format!(
                "invalid web config file {file}: tls_server_config: cert_file and key_file are required"
            )));
        }
        return Err(WebConfigError(format!(
            "invalid web config file {file}: tls_server_config is not supported yet"
        )));
    }
    Ok(config)
}

/// Loads a web config and returns the request check it asks for (`None`: open).
pub fn load(path: &Path) -> Result<Option<Authorizer>, WebConfigError> {
    let config = read(path)?;
    Ok(basic_auth(config.basic_auth_users))
}

/// A check of `Authorization: Basic` against bcrypt hashes. Verified pairs are cached
/// (as a hash of user and password, never the password) since one bcrypt check at cost
/// 10 takes tens of milliseconds, which Prometheus would pay on every scrape.
fn basic_auth(users: HashMap<String, String>) -> Option<Authorizer> {
    if users.is_empty() {
        return None;
    }
    let verified: Arc<Mutex<std::collections::HashSet<[u8; 32]>>> = Default::default();
    Some(Arc::new(move |request: &tiny_http::Request| {
        let Some((user, password)) = credentials(request) else {
            return false;
        };
        let Some(hash) = users.get(&user) else {
            return false;
        };
        let key = cache_key(&user, &password, hash);
        if verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false);
        if ok {
            verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key);
        }
        ok
    }))
}

fn cache_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    // Two independent 128-bit-ish halves from SipHash with fixed keys per process.
    static SEEDS: std::sync::OnceLock<(
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    )> = std::sync::OnceLock::new();
    let (a, b) = SEEDS.get_or_init(Default::default);
    let mut out = [0u8; 32];
    for (i, state) in [a, b, a, b].into_iter().enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write(user.as_bytes());
        h.write_u8(0);
        h.write(password.as_bytes());
        h.write_u8(0);
        h.write(hash.as_bytes());
        out[i * 8..i * 8 + 8].copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

fn credentials(request: &tiny_http::Request) -> Option<(String, String)> {
    let value = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))?
        .value
        .as_str();
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = decode_base64(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_credentials() {
        assert_eq!(decode_base64("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert!(decode_base64("not base64!").is_none());
    }

    #[test]
    fn unknown_keys_and_bad_hashes_are_errors() {
        let dir = std::env::temp_dir().join(format!("vte-web-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let unknown = dir.join("unknown.yml");
        std::fs::write(&unknown, "basic_auth_user:\n  a: b\n").unwrap();
        let err = read(&unknown).unwrap_err().to_string();
        assert!(
            err.contains("basic_auth_user") && err.contains("unknown.yml"),
            "{err}"
        );
        let bad_hash = dir.join("hash.yml");
        std::fs::write(&bad_hash, "basic_auth_users:\n  alice: plaintext\n").unwrap();
        let err = read(&bad_hash).unwrap_err().to_string();
        assert!(err.contains("basic_auth_users.alice"), "{err}");
    }
}
