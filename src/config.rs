//! What to watch: the YAML config file, or (without one) a single token configured the
//! way the Vault CLI is, from `VAULT_*` variables.
//!
//! Everything is checked before anything starts: an unknown key, a missing address or
//! token source, a duplicate name, an unset `token_env` or an unusable TLS file is one
//! error naming the key and the file, and the process exits 2.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use collectors::client::TlsSettings;
use collectors::secret::Token;
use collectors::source::TokenSource;
use collectors::worker::RenewSettings;
use serde::Deserialize;

use crate::duration::parse_duration;

/// Per-request timeout when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Between two `sys/health` polls of one Vault when none is configured.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);

/// One token to keep alive. Equal entries are the same token to a reload: it keeps
/// their worker.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenConfig {
    /// The `vault` label.
    pub name: String,
    pub address: String,
    pub namespace: Option<String>,
    pub source: TokenSource,
    pub tls: TlsSettings,
    pub timeout: Duration,
    pub renew: RenewSettings,
    /// Between two `sys/health` polls of this entry's Vault (the `vault` collector); the
    /// smallest of the entries sharing a Vault wins. Not part of the worker's identity:
    /// see [`TokenConfig::same_worker`].
    pub health_interval: Duration,
}

impl TokenConfig {
    /// Whether a running worker for `self` can serve `other` unchanged: everything but
    /// the health poll interval, which concerns the Vault's poller, not the token.
    pub fn same_worker(&self, other: &TokenConfig) -> bool {
        TokenConfig {
            health_interval: other.health_interval,
            ..self.clone()
        } == *other
    }
}

/// An invalid configuration: the message names the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    vaults: Option<Vec<VaultEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultEntry {
    name: Option<String>,
    address: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    namespace: Option<String>,
    tls: Option<TlsEntry>,
    timeout: Option<String>,
    max_backoff: Option<String>,
    invalid_recheck_interval: Option<String>,
    increment: Option<String>,
    max_ttl: Option<String>,
    health_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsEntry {
    ca_file: Option<PathBuf>,
    ca_path: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// Reads and checks the config file; `env` looks up `token_env` variables.
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<TokenConfig>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    parse_config(&text, path, env)
}

/// Checks the text of a config file; `path` only names it in error messages. Split from
/// [`load_file`] so the fuzzer can drive it without a file.
pub fn parse_config(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<TokenConfig>, ConfigError> {
    let file = path.display();
    let parsed: FileConfig = serde_yaml_ng::from_str(text)
        .map_err(|e| ConfigError(format!("invalid config file {file}: {e}")))?;
    let entries = parsed.vaults.unwrap_or_default();
    if entries.is_empty() {
        return Err(ConfigError(format!(
            "invalid config file {file}: vaults: at least one Vault token must be listed"
        )));
    }
    let mut names = HashSet::new();
    let mut tokens = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let key = |k: &str| format!("vaults[{i}].{k}");
        let fail = |k: &str, why: &str| {
            ConfigError(format!("invalid config file {file}: {}: {why}", key(k)))
        };
        let name = entry
            .name
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| fail("name", "is required"))?;
        check_name(&name).map_err(|why| fail("name", why))?;
        if !names.insert(name.clone()) {
            return Err(fail("name", &format!("duplicate name {name:?}")));
        }
        let address = entry
            .address
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| fail("address", "is required"))?;
        check_address(&address).map_err(|why| fail("address", &why))?;
        let source = match (entry.token_file, entry.token_env) {
            (Some(path), None) => TokenSource::File(path),
            (None, Some(var)) => {
                // Not a variable name: most likely the token itself, pasted in by mistake.
                // Say so without echoing it.
                if !is_env_var_name(&var) {
                    return Err(fail(
                        "token_env",
                        "must name an environment variable (letters, digits and _), not hold the token itself",
                    ));
                }
                let value = env(&var).ok_or_else(|| {
                    fail(
                        "token_env",
                        &format!("environment variable {var} is not set"),
                    )
                })?;
                TokenSource::Value(Token::new(&value).ok_or_else(|| {
                    fail("token_env", &format!("environment variable {var} is empty"))
                })?)
            }
            (Some(_), Some(_)) => {
                return Err(fail(
                    "token_file",
                    "give exactly one of token_file and token_env, not both",
                ))
            }
            (None, None) => {
                return Err(fail(
                    "token_file",
                    "one of token_file or token_env is required",
                ))
            }
        };
        let duration = |k: &str, v: Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(text) => parse_duration(&text)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    fail(
                        k,
                        &format!("{text:?} is not a duration like 10s, 2m or 1h30m"),
                    )
                }),
        };
        let defaults = RenewSettings::default();
        let increment = entry
            .increment
            .map(|text| {
                parse_duration(&text)
                    .filter(|d| d.as_secs() > 0)
                    .map(|d| d.as_secs())
                    .ok_or_else(|| {
                        fail("increment", &format!("{text:?} is not a duration like 1h"))
                    })
            })
            .transpose()?;
        let tls = entry.tls.map(|t| TlsSettings {
            ca_file: t.ca_file,
            ca_path: t.ca_path,
            cert_file: t.cert_file,
            key_file: t.key_file,
            server_name: t.server_name,
            insecure_skip_verify: t.insecure_skip_verify,
        });
        let tls = tls.unwrap_or_default();
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            let missing = if tls.cert_file.is_some() {
                "tls.key_file"
            } else {
                "tls.cert_file"
            };
            return Err(fail(
                missing,
                "a client certificate needs both cert_file and key_file",
            ));
        }
        tokens.push(TokenConfig {
            name,
            address: address.trim_end_matches('/').to_owned(),
            namespace: entry.namespace.filter(|n| !n.is_empty()),
            source,
            tls,
            timeout: duration("timeout", entry.timeout, DEFAULT_TIMEOUT)?,
            renew: RenewSettings {
                max_backoff: duration("max_backoff", entry.max_backoff, defaults.max_backoff)?,
                invalid_recheck: duration(
                    "invalid_recheck_interval",
                    entry.invalid_recheck_interval,
                    defaults.invalid_recheck,
                )?,
                increment,
                max_ttl: entry
                    .max_ttl
                    .map(|text| duration("max_ttl", Some(text), Duration::ZERO))
                    .transpose()?,
            },
            health_interval: match entry.health_interval {
                None => DEFAULT_HEALTH_INTERVAL,
                Some(text) => duration("health_interval", Some(text), Duration::ZERO)
                    // Below a second a poller would hammer its Vault for no news.
                    .and_then(|d| match d >= Duration::from_secs(1) {
                        true => Ok(d),
                        false => Err(fail("health_interval", "must be at least 1s")),
                    })?,
            },
        });
    }
    Ok(tokens)
}

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Longest `name`: it becomes a label value on every series of the token.
const MAX_NAME_CHARS: usize = 128;

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err("must be at most 128 characters (it becomes the `vault` label)");
    }
    if name.chars().any(char::is_control) {
        return Err("must hold printable characters only, no control characters");
    }
    Ok(())
}

/// An http(s) URL with a host, as ureq will need it.
fn check_address(address: &str) -> Result<(), String> {
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .ok_or_else(|| format!("{address:?} must start with http:// or https://"))?;
    // The URL standard reads `http:///v1` as host `v1`; an operator meant no host.
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{address:?} has no host"));
    }
    let url = url::Url::parse(address).map_err(|e| {
        format!("{address:?} is not a URL like https://vault.example.com:8200 ({e})")
    })?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{address:?} has no host"));
    }
    Ok(())
}

/// The single token of env mode, read as the Vault CLI does: `VAULT_ADDR`, `VAULT_TOKEN`
/// (else the token helper's file `~/.vault-token`), `VAULT_NAMESPACE` and the TLS variables.
/// OpenBao's CLI reads the same names with `BAO_`: each is used where its `VAULT_` twin is
/// unset, so an OpenBao user's environment works as it is.
pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<TokenConfig, ConfigError> {
    // (the variable that was set, its value), `VAULT_` first.
    let var = |suffix: &str| {
        ["VAULT_", "BAO_"].iter().find_map(|prefix| {
            let name = format!("{prefix}{suffix}");
            env(&name).filter(|v| !v.is_empty()).map(|v| (name, v))
        })
    };
    let value = |suffix: &str| var(suffix).map(|(_, v)| v);
    let fail = |k: &str, why: &str| ConfigError(format!("invalid environment: {k}: {why}"));
    let (address_from, address) =
        var("ADDR").unwrap_or_else(|| ("the default".into(), "https://127.0.0.1:8200".into()));
    check_address(&address).map_err(|why| fail(&address_from, &why))?;
    let (source, token_from) = match var("TOKEN").and_then(|(k, t)| Some((k, Token::new(&t)?))) {
        Some((name, token)) => (TokenSource::Value(token), name),
        None => {
            let home = env("HOME").filter(|h| !h.is_empty()).ok_or_else(|| {
                fail(
                    "VAULT_TOKEN",
                    "neither VAULT_TOKEN nor BAO_TOKEN is set, and HOME is not set to find ~/.vault-token",
                )
            })?;
            let path = PathBuf::from(home).join(".vault-token");
            if !path.exists() {
                return Err(fail(
                    "VAULT_TOKEN",
                    &format!("neither VAULT_TOKEN nor BAO_TOKEN is set and {} does not exist (log in with `vault login` or `bao login`, or set VAULT_TOKEN)", path.display()),
                ));
            }
            let from = format!("the token helper file {}", path.display());
            (TokenSource::File(path), from)
        }
    };
    let insecure_skip_verify = match var("SKIP_VERIFY") {
        None => false,
        Some((name, v)) => {
            parse_go_bool(&v).ok_or_else(|| fail(&name, &format!("{v:?} is not a boolean")))?
        }
    };
    let tls = TlsSettings {
        ca_file: value("CACERT").map(PathBuf::from),
        ca_path: value("CAPATH").map(PathBuf::from),
        cert_file: value("CLIENT_CERT").map(PathBuf::from),
        key_file: value("CLIENT_KEY").map(PathBuf::from),
        server_name: value("TLS_SERVER_NAME"),
        insecure_skip_verify,
    };
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(fail(
            "VAULT_CLIENT_CERT/VAULT_CLIENT_KEY",
            "both client cert and client key must be provided",
        ));
    }
    let timeout = match var("CLIENT_TIMEOUT") {
        None => DEFAULT_TIMEOUT,
        Some((name, v)) => parse_duration(&v)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| fail(&name, &format!("{v:?} is not a duration")))?,
    };
    // Which of the two families won is the first thing to know when the exporter talks to
    // the wrong server; the token itself is never named.
    log::info!(
        "env mode: vault=default address {address} (from {address_from}), token from {token_from}"
    );
    Ok(TokenConfig {
        name: "default".into(),
        address: address.trim_end_matches('/').to_owned(),
        namespace: value("NAMESPACE"),
        source,
        tls,
        timeout,
        renew: RenewSettings::default(),
        health_interval: DEFAULT_HEALTH_INTERVAL,
    })
}

/// Go's `strconv.ParseBool`, which `VAULT_SKIP_VERIFY` is read with.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write(name: &str, yaml: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vte-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        path
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn error(name: &str, yaml: &str) -> String {
        let path = write(name, yaml);
        let err = load_file(&path, &no_env).unwrap_err().to_string();
        assert!(
            err.contains(path.to_str().unwrap()),
            "names the file: {err}"
        );
        err
    }

    #[test]
    fn a_full_entry_loads_with_defaults_filled_in() {
        let path = write(
            "full.yml",
            "vaults:\n  - name: prod\n    address: https://vault.example.com:8200/\n    token_file: /run/token\n    namespace: team-a\n    tls:\n      ca_file: /etc/ca.pem\n      server_name: vault.internal\n    timeout: 2s\n    max_backoff: 30s\n    invalid_recheck_interval: 1m\n    max_ttl: 768h\n    health_interval: 5s\n  - name: dev\n    address: http://127.0.0.1:8200\n    token_env: DEV_TOKEN\n",
        );
        let env = |k: &str| (k == "DEV_TOKEN").then(|| "hvs.DEV".to_string());
        let tokens = load_file(&path, &env).unwrap();
        assert_eq!(tokens.len(), 2);
        let prod = &tokens[0];
        assert_eq!(prod.address, "https://vault.example.com:8200");
        assert_eq!(prod.namespace.as_deref(), Some("team-a"));
        assert_eq!(prod.timeout, Duration::from_secs(2));
        assert_eq!(prod.renew.max_backoff, Duration::from_secs(30));
        assert_eq!(prod.renew.invalid_recheck, Duration::from_secs(60));
        assert_eq!(prod.renew.max_ttl, Some(Duration::from_secs(768 * 3600)));
        assert_eq!(prod.tls.server_name.as_deref(), Some("vault.internal"));
        assert_eq!(prod.health_interval, Duration::from_secs(5));
        assert!(matches!(&prod.source, TokenSource::File(p) if p == Path::new("/run/token")));
        let dev = &tokens[1];
        assert_eq!(dev.timeout, DEFAULT_TIMEOUT);
        assert_eq!(dev.renew, RenewSettings::default());
        assert_eq!(dev.health_interval, DEFAULT_HEALTH_INTERVAL);
        let mut slower = dev.clone();
        slower.health_interval = Duration::from_secs(60);
        assert!(dev.same_worker(&slower) && *dev != slower);
        slower.timeout = Duration::from_secs(1);
        assert!(!dev.same_worker(&slower));
        assert!(matches!(&dev.source, TokenSource::Value(t) if t.expose() == "hvs.DEV"));
    }

    #[test]
    fn every_invalid_config_names_the_key() {
        let cases = [
            ("unknown.yml", "vaults:\n  - name: a\n    adress: http://x\n    token_file: /t\n", "adress"),
            ("unknown-tls.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    tls:\n      ca: /x\n", "ca"),
            ("top.yml", "vault:\n  - name: a\n", "vault"),
            ("noaddr.yml", "vaults:\n  - name: a\n    token_file: /t\n", "vaults[0].address"),
            ("badaddr.yml", "vaults:\n  - name: a\n    address: vault:8200\n    token_file: /t\n", "vaults[0].address"),
            ("noname.yml", "vaults:\n  - address: http://x\n    token_file: /t\n", "vaults[0].name"),
            ("dup.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n  - name: a\n    address: http://y\n    token_file: /u\n", "vaults[1].name"),
            ("nosource.yml", "vaults:\n  - name: a\n    address: http://x\n", "token_file"),
            ("both.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    token_env: X\n", "token_env"),
            ("unsetenv.yml", "vaults:\n  - name: a\n    address: http://x\n    token_env: SURELY_UNSET_VAR\n", "SURELY_UNSET_VAR"),
            ("certonly.yml", "vaults:\n  - name: a\n    address: https://x\n    token_file: /t\n    tls:\n      cert_file: /c.pem\n", "tls.key_file"),
            ("badtimeout.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    timeout: soon\n", "vaults[0].timeout"),
            ("badmaxttl.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    max_ttl: a month\n", "vaults[0].max_ttl"),
            ("zeromaxttl.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    max_ttl: 0s\n", "vaults[0].max_ttl"),
            ("badhealth.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    health_interval: often\n", "vaults[0].health_interval"),
            ("fasthealth.yml", "vaults:\n  - name: a\n    address: http://x\n    token_file: /t\n    health_interval: 500ms\n", "vaults[0].health_interval: must be at least 1s"),
            ("empty.yml", "vaults: []\n", "vaults"),
            ("notyaml.yml", "vaults: [\n", "invalid config file"),
        ];
        for (name, yaml, key) in cases {
            let err = error(name, yaml);
            assert!(err.contains(key), "{name}: {err}");
        }
    }

    #[test]
    fn a_token_pasted_as_token_env_is_refused_without_being_echoed() {
        let err = error(
            "pasted.yml",
            "vaults:\n  - name: a\n    address: http://x\n    token_env: hvs.PASTEDsecret\n",
        );
        assert!(err.contains("vaults[0].token_env"), "{err}");
        assert!(!err.contains("PASTEDsecret"), "the value is not echoed");
        assert!(is_env_var_name("VAULT_TOKEN_PROD") && is_env_var_name("_x1"));
        assert!(!is_env_var_name("1X") && !is_env_var_name("") && !is_env_var_name("a-b"));
    }

    #[test]
    fn env_mode_reads_the_vault_cli_variables() {
        let vars: HashMap<&str, &str> = [
            ("VAULT_ADDR", "https://vault:8200"),
            ("VAULT_TOKEN", "hvs.ENV"),
            ("VAULT_NAMESPACE", "ns1"),
            ("VAULT_CACERT", "/ca.pem"),
            ("VAULT_SKIP_VERIFY", "true"),
            ("VAULT_TLS_SERVER_NAME", "vault.internal"),
        ]
        .into();
        let t = from_env(&|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(t.name, "default");
        assert_eq!(t.address, "https://vault:8200");
        assert_eq!(t.namespace.as_deref(), Some("ns1"));
        assert!(t.tls.insecure_skip_verify);
        assert_eq!(t.tls.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert!(matches!(&t.source, TokenSource::Value(tok) if tok.expose() == "hvs.ENV"));
    }

    #[test]
    fn env_mode_falls_back_to_the_token_helper_file() {
        let home = std::env::temp_dir().join(format!("vte-home-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        let home_str = home.to_str().unwrap().to_string();
        let env = |k: &str| (k == "HOME").then(|| home_str.clone());
        let err = from_env(&env).unwrap_err().to_string();
        assert!(
            err.contains("VAULT_TOKEN") && err.contains(".vault-token"),
            "{err}"
        );
        std::fs::write(home.join(".vault-token"), "hvs.FILE\n").unwrap();
        let t = from_env(&env).unwrap();
        assert!(matches!(&t.source, TokenSource::File(p) if p.ends_with(".vault-token")));
        assert_eq!(t.address, "https://127.0.0.1:8200");
    }

    #[test]
    fn env_mode_reads_openbao_names_where_the_vault_ones_are_unset() {
        let vars: HashMap<&str, &str> = [
            ("BAO_ADDR", "http://bao:8200"),
            ("BAO_TOKEN", "s.BAO"),
            ("BAO_NAMESPACE", "team-a"),
            ("BAO_CACERT", "/bao-ca.pem"),
            ("VAULT_CACERT", "/vault-ca.pem"),
            ("BAO_TLS_SERVER_NAME", "bao.internal"),
            ("BAO_SKIP_VERIFY", "1"),
        ]
        .into();
        let t = from_env(&|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(t.address, "http://bao:8200");
        assert!(matches!(&t.source, TokenSource::Value(tok) if tok.expose() == "s.BAO"));
        assert_eq!(t.namespace.as_deref(), Some("team-a"));
        assert_eq!(t.tls.ca_file.as_deref(), Some(Path::new("/vault-ca.pem")));
        assert_eq!(t.tls.server_name.as_deref(), Some("bao.internal"));
        assert!(t.tls.insecure_skip_verify);
        let both: HashMap<&str, &str> = [
            ("VAULT_TOKEN", "hvs.V"),
            ("BAO_TOKEN", "s.B"),
            ("BAO_ADDR", "x"),
        ]
        .into();
        let err = from_env(&|k| both.get(k).map(|v| v.to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BAO_ADDR"),
            "names the variable it read: {err}"
        );
    }

    #[test]
    fn names_are_printable_and_bounded_and_addresses_are_urls_with_a_host() {
        assert!(check_name(&"a".repeat(128)).is_ok());
        assert!(check_name(&"é".repeat(128)).is_ok());
        assert!(check_name(&"a".repeat(129)).is_err());
        assert!(check_name("prod\tbad").is_err());
        assert!(check_name("prod\u{7f}").is_err());
        for good in [
            "http://127.0.0.1:8200",
            "https://vault.example.com",
            "https://[::1]:8200/",
        ] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in [
            "vault:8200",
            "ftp://vault",
            "https://",
            "http:///v1",
            "https://vault:99999",
            "http//vault",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_mode_rejects_bad_values() {
        let bad = [
            (
                vec![("VAULT_TOKEN", "x"), ("VAULT_SKIP_VERIFY", "maybe")],
                "VAULT_SKIP_VERIFY",
            ),
            (
                vec![("VAULT_TOKEN", "x"), ("VAULT_CLIENT_CERT", "/c.pem")],
                "both client cert and client key",
            ),
            (
                vec![("VAULT_TOKEN", "x"), ("VAULT_ADDR", "vault:8200")],
                "VAULT_ADDR",
            ),
        ];
        for (vars, expected) in bad {
            let vars: HashMap<&str, &str> = vars.into_iter().collect();
            let err = from_env(&|k| vars.get(k).map(|v| v.to_string()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
