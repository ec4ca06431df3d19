//! Which HTTP proxy, if any, carries the calls to one Vault address: `HTTPS_PROXY`,
//! `HTTP_PROXY` and `NO_PROXY` read the way the Vault CLI reads them (Go's net/http,
//! `golang.org/x/net/http/httpproxy`), so the exporter goes where `vault token lookup` goes.
//!
//! ureq 2 reads no proxy variable by itself (its `proxy-from-env` feature would pick one
//! proxy for every scheme and ignore `NO_PROXY`), so the decision is made here, per
//! address, and [`crate::client::Agents`] builds one agent per proxy.

use std::net::IpAddr;

/// The proxy variables, read once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    http: Option<String>,
    https: Option<String>,
    no_proxy: Vec<String>,
}

impl ProxyEnv {
    /// Reads `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (else their lowercase forms) from `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> ProxyEnv {
        let either = |upper: &str, lower: &str| {
            env(upper)
                .filter(|v| !v.is_empty())
                .or_else(|| env(lower).filter(|v| !v.is_empty()))
        };
        ProxyEnv {
            http: either("HTTP_PROXY", "http_proxy"),
            https: either("HTTPS_PROXY", "https_proxy"),
            no_proxy: either("NO_PROXY", "no_proxy")
                .unwrap_or_default()
                .split(',')
                .map(|entry| entry.trim().to_ascii_lowercase())
                .filter(|entry| !entry.is_empty())
                .collect(),
        }
    }

    /// The process environment's proxy variables.
    pub fn from_process() -> ProxyEnv {
        Self::from_env(&|k| std::env::var(k).ok())
    }

    /// The proxy URL for calls to `address` (`http://host:port`), or `None` to go direct.
    /// As in Go: `HTTPS_PROXY` for https, `HTTP_PROXY` for http, a proxy without a scheme
    /// is `http://`, and localhost, loopback addresses and `NO_PROXY` matches go direct.
    pub fn proxy_for(&self, address: &str) -> Option<String> {
        let url = url::Url::parse(address).ok()?;
        let proxy = match url.scheme() {
            "https" => self.https.as_ref()?,
            "http" => self.http.as_ref()?,
            _ => return None,
        };
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let ip = host.parse::<IpAddr>().ok();
        if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        if self
            .no_proxy
            .iter()
            .any(|entry| bypasses(entry, &host, ip, port))
        {
            return None;
        }
        Some(if proxy.contains("://") {
            proxy.clone()
        } else {
            format!("http://{proxy}")
        })
    }
}

/// One `NO_PROXY` entry against a host: `*`, an IP, a CIDR, or a domain with an optional
/// port (`example.com` matches it and its subdomains, `.example.com` only subdomains).
fn bypasses(entry: &str, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        return match (net.parse::<IpAddr>(), bits.parse::<u8>(), ip) {
            (Ok(net), Ok(bits), Some(ip)) => in_cidr(ip, net, bits),
            _ => false,
        };
    }
    if let Ok(entry_ip) = entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return ip == Some(entry_ip);
    }
    let (name, entry_port) = match entry.rsplit_once(':') {
        Some((name, p)) if !name.contains(':') => match p.parse::<u16>() {
            Ok(p) => (name, Some(p)),
            Err(_) => return false,
        },
        _ => (entry, None),
    };
    if let Ok(entry_ip) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return ip == Some(entry_ip) && entry_port.is_none_or(|p| p == port);
    }
    let name = name.strip_prefix('*').unwrap_or(name);
    let matches = match name.strip_prefix('.') {
        Some(_) => host.ends_with(name),
        None => host == name || host.ends_with(&format!(".{name}")),
    };
    matches && entry_port.is_none_or(|p| p == port)
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_env(&|k| vars.get(k).cloned())
    }

    #[test]
    fn each_scheme_takes_its_own_variable() {
        let e = env(&[
            ("HTTPS_PROXY", "http://secure-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
        ]);
        assert_eq!(
            e.proxy_for("https://vault.example.com:8200").as_deref(),
            Some("http://secure-proxy:3128")
        );
        assert_eq!(
            e.proxy_for("http://vault.example.com:8200").as_deref(),
            Some("http://plain-proxy:8080"),
            "lowercase works, and no scheme means http"
        );
        assert_eq!(env(&[]).proxy_for("https://vault.example.com"), None);
        let upper_wins = env(&[("HTTPS_PROXY", "http://a:1"), ("https_proxy", "http://b:1")]);
        assert_eq!(
            upper_wins.proxy_for("https://v").as_deref(),
            Some("http://a:1")
        );
    }

    #[test]
    fn loopback_and_no_proxy_go_direct() {
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            (
                "NO_PROXY",
                "internal.example, .corp.example, 10.0.0.0/8, 192.168.1.7, vault.other:8200, fd00::/8",
            ),
        ]);
        let direct = [
            "https://localhost:8200",
            "https://127.0.0.1:8200",
            "https://[::1]:8200",
            "https://internal.example",
            "https://vault.internal.example:8200",
            "https://vault.corp.example",
            "https://10.1.2.3:8200",
            "https://192.168.1.7:8200",
            "https://vault.other:8200",
            "https://[fd00::5]:8200",
        ];
        for address in direct {
            assert_eq!(e.proxy_for(address), None, "{address}");
        }
        let proxied = [
            "https://corp.example",
            "https://notinternal.example",
            "https://11.1.2.3",
            "https://192.168.1.8",
            "https://vault.other:8201",
            "https://vault.example.com",
        ];
        for address in proxied {
            assert!(e.proxy_for(address).is_some(), "{address}");
        }
        let all = env(&[("HTTPS_PROXY", "http://proxy:3128"), ("no_proxy", "*")]);
        assert_eq!(all.proxy_for("https://vault.example.com"), None);
    }
}
