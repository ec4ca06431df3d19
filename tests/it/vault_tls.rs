//! TLS towards Vault, black-box: the binary talks https to a rustls terminator in front of
//! the Vault double, with certificates made at test time by the `openssl` CLI.
//!
//! One exporter watches one token per case, each with its own `tls` block, so every case
//! is told apart by its `vault` label and by the requests the double saw with its token.

use crate::common;
use crate::fault_support;

use std::path::Path;
use std::time::Duration;

use common::*;
use fault_support::*;
use vault_double::{TokenSpec, VaultDouble};

struct Case {
    name: &'static str,
    token: String,
    address: String,
    tls_yaml: String,
}

fn tls_block(lines: &[(&str, &Path)], extra: &str) -> String {
    let mut yaml = String::from("    tls:\n");
    for (key, path) in lines {
        yaml.push_str(&format!("      {key}: {}\n", path.display()));
    }
    yaml.push_str(extra);
    yaml
}

#[test]
fn tls_to_vault_ca_file_ca_path_mtls_server_name_and_insecure() {
    let pki = temp_dir("vault-tls-pki");
    let ca = make_ca(&pki, "vault-ca");
    let other_ca = make_ca(&pki, "other-ca");
    let client_ca = make_ca(&pki, "client-ca");
    let server = make_leaf(
        &pki,
        "server",
        &ca,
        &["DNS:localhost", "IP:127.0.0.1"],
        false,
    );
    let internal = make_leaf(&pki, "internal", &ca, &["DNS:vault.internal"], false);
    let client = make_leaf(&pki, "client", &client_ca, &[], true);
    let stranger = make_leaf(&pki, "stranger", &other_ca, &[], true);

    // A directory of CA certificates with the right one among others and a non-PEM file.
    let ca_dir = pki.join("ca.d");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&other_ca.cert, ca_dir.join("00-other.pem")).unwrap();
    std::fs::copy(&ca.cert, ca_dir.join("10-vault.pem")).unwrap();
    std::fs::write(ca_dir.join("README"), "CA certificates for Vault\n").unwrap();
    let wrong_dir = pki.join("wrong.d");
    std::fs::create_dir_all(&wrong_dir).unwrap();
    std::fs::copy(&other_ca.cert, wrong_dir.join("other.pem")).unwrap();

    let vault = VaultDouble::start();
    let plain = ProxyOptions {
        server: server.clone(),
        client_ca: None,
    };
    let tls = TlsProxy::start(vault.addr(), plain);
    let mtls = TlsProxy::start(
        vault.addr(),
        ProxyOptions {
            server: server.clone(),
            client_ca: Some(client_ca.cert.clone()),
        },
    );
    // The certificate names only vault.internal: reached at localhost, it needs server_name.
    let named = TlsProxy::start(
        vault.addr(),
        ProxyOptions {
            server: internal.clone(),
            client_ca: None,
        },
    );
    let named_override = TlsProxy::start(
        vault.addr(),
        ProxyOptions {
            server: internal.clone(),
            client_ca: None,
        },
    );

    let token = || vault.add_token(TokenSpec::service(4));
    let cases = vec![
        Case {
            name: "ca_file",
            token: token(),
            address: tls.url("localhost"),
            tls_yaml: tls_block(&[("ca_file", &ca.cert)], ""),
        },
        Case {
            name: "ca_file_ip",
            token: token(),
            address: tls.url("127.0.0.1"),
            tls_yaml: tls_block(&[("ca_file", &ca.cert)], ""),
        },
        Case {
            name: "wrong_ca",
            token: token(),
            address: tls.url("localhost"),
            tls_yaml: tls_block(&[("ca_file", &other_ca.cert)], ""),
        },
        Case {
            name: "public_roots",
            token: token(),
            address: tls.url("localhost"),
            tls_yaml: String::new(),
        },
        Case {
            name: "ca_path",
            token: token(),
            address: tls.url("localhost"),
            tls_yaml: tls_block(&[("ca_path", &ca_dir)], ""),
        },
        Case {
            name: "ca_path_wrong",
            token: token(),
            address: tls.url("localhost"),
            tls_yaml: tls_block(&[("ca_path", &wrong_dir)], ""),
        },
        Case {
            name: "mtls",
            token: token(),
            address: mtls.url("localhost"),
            tls_yaml: tls_block(
                &[
                    ("ca_file", &ca.cert),
                    ("cert_file", &client.cert),
                    ("key_file", &client.key),
                ],
                "",
            ),
        },
        Case {
            name: "mtls_no_cert",
            token: token(),
            address: mtls.url("localhost"),
            tls_yaml: tls_block(&[("ca_file", &ca.cert)], ""),
        },
        Case {
            name: "mtls_untrusted_cert",
            token: token(),
            address: mtls.url("localhost"),
            tls_yaml: tls_block(
                &[
                    ("ca_file", &ca.cert),
                    ("cert_file", &stranger.cert),
                    ("key_file", &stranger.key),
                ],
                "",
            ),
        },
        Case {
            name: "server_name",
            token: token(),
            address: named_override.url("localhost"),
            tls_yaml: tls_block(
                &[("ca_file", &ca.cert)],
                "      server_name: vault.internal\n",
            ),
        },
        Case {
            name: "no_server_name",
            token: token(),
            address: named.url("localhost"),
            tls_yaml: tls_block(&[("ca_file", &ca.cert)], ""),
        },
        Case {
            name: "insecure",
            token: token(),
            address: named.url("localhost"),
            tls_yaml: "    tls:\n      insecure_skip_verify: true\n".into(),
        },
    ];
    let working = [
        "ca_file",
        "ca_file_ip",
        "ca_path",
        "mtls",
        "server_name",
        "insecure",
    ];

    let tokens_dir = temp_dir("vault-tls-tokens");
    let mut yaml = String::from("vaults:\n");
    for case in &cases {
        let file = tokens_dir.join(case.name);
        write_token(&file, &case.token);
        yaml.push_str(&file_entry(case.name, &case.address, &file, &case.tls_yaml));
    }
    let mut exporter = Exporter::with_config("vault-tls", &yaml, &["--log.level=trace"]);

    // Every working case renews its 4 s token at least once (at 1.6-2 s); every failing
    // case fails its start-up lookup and its first retry, all with reason tls. The
    // `vault` collector's poller of each entry uses the entry's TLS settings: its Vault
    // answers sys/health exactly where the token calls get through.
    let scrape = exporter.wait_for(Duration::from_secs(10), "all TLS cases settled", |s| {
        cases.iter().all(|c| {
            let health_up = s.of("vault_health_up", c.name, &[]);
            if working.contains(&c.name) {
                s.renewals(c.name, "success") >= 1.0 && health_up == Some(1.0)
            } else {
                s.failures(c.name, "tls") >= 2.0 && health_up == Some(0.0)
            }
        })
    });
    for case in &cases {
        let seen = vault.requests_for(&case.token);
        let failures = scrape.renewals(case.name, "failure");
        if working.contains(&case.name) {
            assert_eq!(failures, 0.0, "{}: no failure", case.name);
            assert_eq!(
                scrape.state(case.name).as_deref(),
                Some("renewing"),
                "{}",
                case.name
            );
            assert!(
                seen.iter().any(|r| r.path == LOOKUP && r.status == 200)
                    && seen.iter().any(|r| r.path == RENEW && r.status == 200),
                "{}: the double saw a lookup and a renewal through TLS: {seen:?}",
                case.name
            );
        } else {
            assert_eq!(
                failures,
                scrape.failures(case.name, "tls"),
                "{}: every failure is a tls failure",
                case.name
            );
            assert!(
                seen.is_empty(),
                "{}: no request got through TLS: {seen:?}",
                case.name
            );
        }
    }
    // The handshakes failed on the server side for the reasons each case is about.
    let errors = tls.errors().join("\n");
    assert!(
        errors.contains("UnknownCA") || errors.contains("unknown"),
        "{errors}"
    );
    let mtls_errors = mtls.errors().join("\n");
    assert!(
        mtls_errors.contains("peer sent no certificates"),
        "{mtls_errors}"
    );
    assert!(
        mtls_errors.contains("UnknownIssuer") || mtls_errors.contains("unknown issuer"),
        "{mtls_errors}"
    );
    // server_name is the name sent as SNI too, as VAULT_TLS_SERVER_NAME is for Vault's client.
    let names = named_override.server_names();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.as_deref() == Some("vault.internal")),
        "SNI seen with server_name set: {names:?}"
    );

    let log = finish_without_leaks(
        &mut exporter,
        &cases.iter().map(|c| c.token.as_str()).collect::<Vec<_>>(),
    );
    // One WARN at start for the entry that skips verification, naming it.
    let warnings = log_lines(&log, &[" WARN ", "vault=insecure"]);
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("verification is disabled"),
        "{}",
        warnings[0]
    );
    for failing in cases.iter().filter(|c| !working.contains(&c.name)) {
        assert!(
            !log_lines(
                &log,
                &[
                    " ERROR ",
                    "vault token renewal failed",
                    &format!("vault={} ", failing.name),
                    "reason=tls"
                ]
            )
            .is_empty(),
            "{}: an ERROR line with reason=tls",
            failing.name
        );
    }
}
