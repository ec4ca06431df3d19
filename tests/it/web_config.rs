//! `--web.config.file` (exporter-toolkit format), black-box: basic auth with bcrypt, TLS
//! with every client-auth type, certificate rotation, and start-up errors (exit 2).
//! Certificates are made at test time with the `openssl` CLI; the TLS client is rustls.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{make_ca, make_leaf, make_self_signed_client, CertFiles};
use common::{http_request, run_to_exit, temp_dir, Exporter};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

/// Starts the exporter with `web_yaml` as its web config, written in `dir` (relative paths
/// in it are relative to `dir`), and a token config that needs no Vault.
fn start(dir: &Path, web_yaml: &str) -> Exporter {
    let web = dir.join("web.yml");
    std::fs::write(&web, web_yaml).unwrap();
    let token = dir.join("token");
    common::write_token(&token, "hvs.web-config-test");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "vaults:\n  - name: web\n    address: http://127.0.0.1:9\n    token_file: {}\n    timeout: 1s\n",
            token.display()
        ),
    )
    .unwrap();
    Exporter::start_in(
        dir.to_owned(),
        &[
            format!("--config.file={}", config.display()),
            format!("--web.config.file={}", web.display()),
            "--log.level=debug".into(),
        ],
        &[],
    )
}

// ----------------------------------------------------------------------------------------
// Certificates (openssl CLI)
// ----------------------------------------------------------------------------------------

/// Names of the test server certificates.
const LOCALHOST: &[&str] = &["DNS:localhost", "IP:127.0.0.1"];

/// A CA, a server certificate for localhost, a client certificate from the same CA, a
/// client certificate from another CA, and a self-signed client certificate.
struct Pki {
    ca: CertFiles,
    server: CertFiles,
    client: CertFiles,
    stranger: CertFiles,
    self_signed: CertFiles,
}

fn pki(dir: &Path) -> Pki {
    let ca = make_ca(dir, "ca");
    let other_ca = make_ca(dir, "other-ca");
    Pki {
        server: make_leaf(dir, "server", &ca, LOCALHOST, false),
        client: make_leaf(dir, "client", &ca, &[], true),
        stranger: make_leaf(dir, "stranger", &other_ca, &[], true),
        self_signed: make_self_signed_client(dir, "self-signed"),
        ca,
    }
}

fn tls_section(pki: &Pki, extra: &str) -> String {
    format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n{extra}",
        pki.server.cert.file_name().unwrap().to_string_lossy(),
        pki.server.key.file_name().unwrap().to_string_lossy(),
    )
}

// ----------------------------------------------------------------------------------------
// A rustls HTTPS client
// ----------------------------------------------------------------------------------------

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
const TLS12_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn client_config(
    ca: &Path,
    identity: Option<&CertFiles>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = CertificateDer::pem_file_iter(&pair.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// What an HTTPS request got: the status and body, and the server's certificate.
struct Answer {
    status: u16,
    body: String,
    server_cert: Vec<u8>,
}

/// GET `path` over TLS (server name `localhost`); `Err` when the handshake or the
/// exchange fails.
fn https_get(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<Answer, String> {
    let mut socket = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut conn =
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut socket)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let server_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    let authorization = auth
        .map(|(u, p)| format!("Authorization: Basic {}\r\n", base64(&format!("{u}:{p}"))))
        .unwrap_or_default();
    tls.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{authorization}\r\n"
        )
        .as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        // A server that closes without close_notify after a complete answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(Answer {
        status,
        body,
        server_cert,
    })
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A plain-HTTP GET with basic auth: (status, head and body).
fn get_with_auth(addr: SocketAddr, path: &str, user: &str, password: &str) -> (u16, String) {
    http_request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nAuthorization: Basic {}\r\n\r\n",
            base64(&format!("{user}:{password}"))
        ),
    )
}

// ----------------------------------------------------------------------------------------
// Basic auth
// ----------------------------------------------------------------------------------------

#[test]
fn basic_auth_answers_401_without_or_with_wrong_credentials_and_caches_good_ones() {
    let dir = temp_dir("web-basic-auth");
    // Cost 10, what `htpasswd -nBC 10` makes: slow enough that the cache shows.
    let hash = bcrypt::hash("s3cret:with-colon", 10).unwrap();
    let exporter = start(
        &dir,
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n  other: '{hash}'\n"),
    );
    let addr = exporter.addr;

    for path in ["/metrics", "/", "/-/healthy", "/-/ready", "/nope"] {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(
            answer.contains("WWW-Authenticate: Basic"),
            "{path}: {answer}"
        );
    }
    for (user, password) in [
        ("prometheus", "wrong"),
        ("prometheus", ""),
        ("nobody", "s3cret:with-colon"),
        ("prometheus", "s3cret:with-colo"),
    ] {
        let (status, _) = get_with_auth(addr, "/metrics", user, password);
        assert_eq!(status, 401, "{user}:{password} must not get in");
    }
    let garbage = http_request(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic !!!\r\n\r\n",
    );
    assert_eq!(garbage.0, 401);

    let started = Instant::now();
    let (status, body) = get_with_auth(addr, "/metrics", "prometheus", "s3cret:with-colon");
    let first = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("vault_token_state{vault=\"web\""), "{body}");
    let started = Instant::now();
    for _ in 0..5 {
        let (status, _) = get_with_auth(addr, "/-/healthy", "prometheus", "s3cret:with-colon");
        assert_eq!(status, 200);
    }
    let cached = started.elapsed() / 5;
    println!("first authenticated request {first:?}, then {cached:?} each (cached)");
    assert!(
        cached * 3 < first,
        "a verified password must not pay bcrypt again: first {first:?}, then {cached:?} each"
    );
    // A cached pair does not open the door to other passwords or users.
    assert_eq!(
        get_with_auth(addr, "/metrics", "prometheus", "wrong").0,
        401
    );
    assert_eq!(
        get_with_auth(addr, "/metrics", "other", "s3cret:with-colon").0,
        200
    );
}

// ----------------------------------------------------------------------------------------
// TLS
// ----------------------------------------------------------------------------------------

#[test]
fn tls_serves_https_on_tls12_and_tls13_and_tells_plain_http_clients() {
    let dir = temp_dir("web-tls");
    let pki = pki(&dir);
    let exporter = start(&dir, &tls_section(&pki, ""));
    let addr = exporter.addr;
    for versions in [BOTH, TLS12_ONLY, &[&rustls::version::TLS13][..]] {
        let answer = https_get(
            addr,
            &client_config(&pki.ca.cert, None, versions),
            "/metrics",
            None,
        )
        .unwrap_or_else(|e| panic!("{versions:?}: {e}\n{}", exporter.log()));
        assert_eq!(answer.status, 200);
        assert!(answer.body.contains("vault_token_state{vault=\"web\""));
    }
    let (status, body) = exporter.get("/metrics");
    assert_eq!(status, 400);
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
    assert!(
        exporter.log().contains("TLS is enabled"),
        "{}",
        exporter.log()
    );

    // min_version TLS13 turns TLS 1.2 clients away.
    let dir13 = temp_dir("web-tls13");
    for file in ["server.pem", "server.key"] {
        std::fs::copy(dir.join(file), dir13.join(file)).unwrap();
    }
    let exporter = start(&dir13, &tls_section(&pki, "  min_version: TLS13\n"));
    let old = https_get(
        exporter.addr,
        &client_config(&pki.ca.cert, None, TLS12_ONLY),
        "/metrics",
        None,
    );
    assert!(
        old.is_err(),
        "a TLS 1.2 client got through min_version TLS13"
    );
    let new = https_get(
        exporter.addr,
        &client_config(&pki.ca.cert, None, BOTH),
        "/metrics",
        None,
    );
    assert_eq!(new.unwrap().status, 200);
}

#[test]
fn require_and_verify_client_cert_needs_a_certificate_from_the_client_ca() {
    let dir = temp_dir("web-mtls");
    let pki = pki(&dir);
    let exporter = start(
        &dir,
        &tls_section(
            &pki,
            "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
        ),
    );
    let addr = exporter.addr;
    for versions in [BOTH, TLS12_ONLY] {
        let none = https_get(
            addr,
            &client_config(&pki.ca.cert, None, versions),
            "/metrics",
            None,
        );
        assert!(
            none.is_err(),
            "no client certificate got in: {:?}",
            none.map(|a| a.status)
        );
        let stranger = https_get(
            addr,
            &client_config(&pki.ca.cert, Some(&pki.stranger), versions),
            "/metrics",
            None,
        );
        assert!(stranger.is_err(), "a certificate from another CA got in");
        let self_signed = https_get(
            addr,
            &client_config(&pki.ca.cert, Some(&pki.self_signed), versions),
            "/metrics",
            None,
        );
        assert!(self_signed.is_err(), "a self-signed certificate got in");
        let answer = https_get(
            addr,
            &client_config(&pki.ca.cert, Some(&pki.client), versions),
            "/metrics",
            None,
        )
        .unwrap_or_else(|e| {
            panic!(
                "the right client certificate failed: {e}\n{}",
                exporter.log()
            )
        });
        assert_eq!(answer.status, 200);
        assert!(answer.body.contains("vault_token_renewals_total"));
    }
    // Refused certificates are logged at info, with the client's address and why.
    let log = exporter.wait_for_log(Duration::from_secs(2), "TLS handshake with");
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("TLS handshake with 127.0.0.1:")),
        "{log}"
    );
}

#[test]
fn request_require_any_and_verify_if_given_client_auth_types() {
    let dir = temp_dir("web-client-auth-types");
    let pki = pki(&dir);
    let ok = |exporter: &Exporter, identity: Option<&CertFiles>| {
        https_get(
            exporter.addr,
            &client_config(&pki.ca.cert, identity, BOTH),
            "/-/healthy",
            None,
        )
        .map(|a| a.status == 200)
        .unwrap_or(false)
    };

    let request = start(
        &dir,
        &tls_section(&pki, "  client_auth_type: RequestClientCert\n"),
    );
    assert!(
        ok(&request, None),
        "RequestClientCert: no certificate is fine"
    );
    assert!(
        ok(&request, Some(&pki.self_signed)),
        "RequestClientCert: any certificate is fine"
    );
    drop(request);

    let any = start(
        &dir,
        &tls_section(&pki, "  client_auth_type: RequireAnyClientCert\n"),
    );
    assert!(
        !ok(&any, None),
        "RequireAnyClientCert: a certificate is required"
    );
    assert!(
        ok(&any, Some(&pki.self_signed)),
        "RequireAnyClientCert: any certificate is fine"
    );
    assert!(ok(&any, Some(&pki.stranger)));
    drop(any);

    let if_given = start(
        &dir,
        &tls_section(
            &pki,
            "  client_ca_file: ca.pem\n  client_auth_type: VerifyClientCertIfGiven\n",
        ),
    );
    assert!(
        ok(&if_given, None),
        "VerifyClientCertIfGiven: no certificate is fine"
    );
    assert!(ok(&if_given, Some(&pki.client)));
    assert!(
        !ok(&if_given, Some(&pki.stranger)),
        "VerifyClientCertIfGiven: a given certificate is verified"
    );
}

#[test]
fn tls_with_client_certificates_and_basic_auth_together() {
    let dir = temp_dir("web-tls-auth");
    let pki = pki(&dir);
    let hash = bcrypt::hash("pw", 4).unwrap();
    let exporter = start(
        &dir,
        &format!(
            "{}basic_auth_users:\n  prom: {hash}\n",
            tls_section(
                &pki,
                "  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
            )
        ),
    );
    let config = client_config(&pki.ca.cert, Some(&pki.client), BOTH);
    let without = https_get(exporter.addr, &config, "/metrics", None).unwrap();
    assert_eq!(without.status, 401);
    let wrong = https_get(exporter.addr, &config, "/metrics", Some(("prom", "nope"))).unwrap();
    assert_eq!(wrong.status, 401);
    let right = https_get(exporter.addr, &config, "/metrics", Some(("prom", "pw"))).unwrap();
    assert_eq!(right.status, 200);
    assert!(right.body.contains("vault_token_state"));
}

#[test]
fn a_rotated_server_certificate_is_served_without_a_restart() {
    let dir = temp_dir("web-rotate");
    let pki = pki(&dir);
    let exporter = start(&dir, &tls_section(&pki, ""));
    let config = client_config(&pki.ca.cert, None, BOTH);
    let before = https_get(exporter.addr, &config, "/-/healthy", None).unwrap();
    assert_eq!(before.status, 200);

    let new = make_leaf(&dir, "server-renewed", &pki.ca, LOCALHOST, false);
    std::fs::copy(&new.key, &pki.server.key).unwrap();
    std::fs::copy(&new.cert, &pki.server.cert).unwrap();
    // A fresh client: a resumed session would not show the server's certificate again.
    let config = client_config(&pki.ca.cert, None, BOTH);
    let after = https_get(exporter.addr, &config, "/-/healthy", None).unwrap();
    assert_eq!(after.status, 200);
    assert_ne!(
        before.server_cert, after.server_cert,
        "still the old certificate"
    );
    assert_eq!(
        after.server_cert,
        CertificateDer::from_pem_file(&new.cert).unwrap().to_vec()
    );
    exporter.wait_for_log(Duration::from_secs(2), "reloaded the TLS certificate");

    // A broken rotation keeps the last good certificate.
    std::fs::write(&pki.server.cert, "garbage\n").unwrap();
    let config = client_config(&pki.ca.cert, None, BOTH);
    let still = https_get(exporter.addr, &config, "/-/healthy", None).unwrap();
    assert_eq!(still.status, 200);
    assert_eq!(still.server_cert, after.server_cert);
    exporter.wait_for_log(
        Duration::from_secs(2),
        "keeping the previous TLS certificate",
    );
}

#[test]
fn clients_that_never_finish_a_handshake_do_not_hold_up_others() {
    let dir = temp_dir("web-tls-silent");
    let pki = pki(&dir);
    let exporter = start(&dir, &tls_section(&pki, ""));
    // Connected, silent; and one that sends half a ClientHello.
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(exporter.addr).unwrap())
        .collect();
    let mut half = TcpStream::connect(exporter.addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    silent.push(half);
    let config = client_config(&pki.ca.cert, None, BOTH);
    for _ in 0..5 {
        let started = Instant::now();
        let answer = https_get(exporter.addr, &config, "/metrics", None)
            .unwrap_or_else(|e| panic!("{e}\n--- log ---\n{}", exporter.log()));
        assert_eq!(answer.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a scrape took {:?} behind silent TLS clients",
            started.elapsed()
        );
    }
    // The handshake deadline (10 s) closes the silent ones.
    let mut buf = [0u8; 16];
    let closed_by = Instant::now();
    silent[0]
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let n = silent[0].read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the server sent something to a silent client");
    assert!(closed_by.elapsed() < Duration::from_secs(12));
}

/// Hostile connections in the crowd tests: more than the 64 slots.
const CROWD: usize = 120;

#[test]
fn crowds_of_silent_and_half_finished_handshakes_above_the_slot_limit() {
    let dir = temp_dir("web-tls-crowd");
    let pki = pki(&dir);
    let exporter = start(&dir, &tls_section(&pki, ""));
    let config = client_config(&pki.ca.cert, None, BOTH);
    for kind in ["silent", "half a ClientHello"] {
        let crowd: Vec<TcpStream> = (0..CROWD)
            .map(|_| {
                let mut stream = TcpStream::connect(exporter.addr).unwrap();
                if kind != "silent" {
                    let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
                }
                stream
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            let started = Instant::now();
            let answer = https_get(exporter.addr, &config, "/metrics", None)
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(answer.status, 200);
            slowest = slowest.max(started.elapsed());
        }
        println!("{CROWD} TLS connections {kind}: slowest of 5 scrapes {slowest:?}");
        assert!(
            slowest < Duration::from_millis(900),
            "{CROWD} TLS connections {kind}: a scrape took {slowest:?}"
        );
        drop(crowd);
    }
}

/// GET over TLS 1.3, the request sent in the same write as the client's Finished (as a
/// client with a fast path does): the status, or why there is none.
fn https_get_with_the_finished(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> Result<u16, String> {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut conn =
        ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut socket).map_err(|e| e.to_string())?;
    }
    // Read the server's flight; the client's Finished is then ready, not yet sent.
    while !conn.wants_write() {
        if conn
            .read_tls(&mut socket)
            .map_err(|e| format!("handshake: {e}"))?
            == 0
        {
            return Err("closed during the handshake".into());
        }
        conn.process_new_packets().map_err(|e| e.to_string())?;
    }
    conn.writer()
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).unwrap();
    }
    socket.write_all(&flight).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, socket);
    let mut answer = Vec::new();
    match tls.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(format!("no answer: {e}")),
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))
}

#[test]
fn a_request_sent_with_the_end_of_the_handshake_is_answered() {
    let dir = temp_dir("web-tls-finished");
    let pki = pki(&dir);
    let exporter = start(&dir, &tls_section(&pki, ""));
    let tls13 = client_config(&pki.ca.cert, None, &[&rustls::version::TLS13]);
    for i in 0..30 {
        let started = Instant::now();
        let status = https_get_with_the_finished(exporter.addr, &tls13)
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // And ordinary scrapes, on both versions.
    for versions in [BOTH, TLS12_ONLY] {
        let config = client_config(&pki.ca.cert, None, versions);
        for _ in 0..15 {
            let started = Instant::now();
            assert_eq!(
                https_get(exporter.addr, &config, "/metrics", None)
                    .unwrap()
                    .status,
                200
            );
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }
}

#[test]
fn a_brute_force_of_distinct_passwords_does_not_starve_a_scrape_with_the_right_one() {
    let dir = temp_dir("web-brute-force");
    let hash = bcrypt::hash("right", 10).unwrap();
    let exporter = start(
        &dir,
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let addr = exporter.addr;
    assert_eq!(
        get_with_auth(addr, "/metrics", "prometheus", "right").0,
        200
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 80 attackers, no password twice (so no cache helps), answered 401 or 429.
    let attackers: Vec<_> = (0..80)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut statuses = std::collections::BTreeSet::new();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || started.elapsed() > Duration::from_secs(20)
                    {
                        break;
                    }
                    let Ok(mut socket) = TcpStream::connect(addr) else {
                        continue;
                    };
                    let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
                    let request = format!(
                        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic {}\r\n\r\n",
                        base64(&format!("prometheus:guess-{i}-{n}"))
                    );
                    let _ = socket.write_all(request.as_bytes());
                    let mut answer = String::new();
                    let _ = socket.read_to_string(&mut answer);
                    if let Some(status) = answer.split_whitespace().nth(1) {
                        statuses.insert(status.to_owned());
                    }
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let (status, body) = get_with_auth(addr, "/metrics", "prometheus", "right");
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = std::collections::BTreeSet::new();
    for attacker in attackers {
        statuses.extend(attacker.join().unwrap());
    }
    println!("80 attackers got {statuses:?}; slowest right-password scrape {slowest:?}");
    assert!(
        statuses.iter().all(|s| s == "401" || s == "429"),
        "{statuses:?}"
    );
    assert!(
        slowest < Duration::from_millis(900),
        "a scrape with the right password took {slowest:?} during the brute force"
    );
}

// ----------------------------------------------------------------------------------------
// Start-up errors
// ----------------------------------------------------------------------------------------

#[test]
fn invalid_web_configs_exit_2_with_a_message_naming_the_file_and_the_key() {
    let dir = temp_dir("web-invalid");
    let pki = pki(&dir);
    std::fs::write(
        dir.join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nnot base64\n",
    )
    .unwrap();
    let tls = |extra: &str| tls_section(&pki, extra);
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("unknown-top", "basic_auth_user:\n  a: b\n".into(), vec!["basic_auth_user"]),
        ("unknown-tls", tls("  client_auth: RequireAndVerifyClientCert\n"), vec!["client_auth"]),
        ("unknown-http", "http_server_config:\n  http3: true\n".into(), vec!["http3"]),
        ("not-bcrypt", "basic_auth_users:\n  alice: secret\n".into(), vec!["basic_auth_users.alice"]),
        (
            "missing-cert",
            "tls_server_config:\n  cert_file: nothere.pem\n  key_file: server.key\n".into(),
            vec!["cert_file", "nothere.pem"],
        ),
        (
            "missing-key",
            "tls_server_config:\n  cert_file: server.pem\n  key_file: nothere.key\n".into(),
            vec!["key_file", "nothere.key"],
        ),
        ("no-key", "tls_server_config:\n  cert_file: server.pem\n".into(), vec!["key_file"]),
        (
            "junk-cert",
            "tls_server_config:\n  cert_file: junk.pem\n  key_file: server.key\n".into(),
            vec!["junk.pem"],
        ),
        (
            "cert-as-key",
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n".into(),
            vec!["key_file", "server.pem"],
        ),
        (
            "mismatched-key",
            "tls_server_config:\n  cert_file: server.pem\n  key_file: client.key\n".into(),
            vec!["server.pem", "client.key"],
        ),
        ("ca-without-auth", tls("  client_ca_file: ca.pem\n"), vec!["client_ca_file", "NoClientCert"]),
        ("verify-without-ca", tls("  client_auth_type: RequireAndVerifyClientCert\n"), vec!["client_ca_file"]),
        ("bad-auth-type", tls("  client_auth_type: Sometimes\n"), vec!["client_auth_type", "Sometimes"]),
        ("bad-version", tls("  min_version: TLS14\n"), vec!["min_version", "TLS14"]),
        ("no-version", tls("  max_version: TLS11\n"), vec!["max_version"]),
        ("unsupported-sans", tls("  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [a]\n"), vec!["client_allowed_sans"]),
        ("missing-ca", tls("  client_ca_file: nothere-ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n"), vec!["nothere-ca.pem"]),
    ];
    for (name, yaml, needles) in cases {
        let file = dir.join(format!("{name}.yml"));
        std::fs::write(&file, yaml).unwrap();
        let (code, _, stderr) =
            run_to_exit(&[&format!("--web.config.file={}", file.display())], &[]);
        assert_eq!(code, 2, "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}.yml")),
            "{name}: the message must name the file: {stderr}"
        );
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{name}: the message must name {needle:?}: {stderr}"
            );
        }
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{name}: one clear message: {stderr}"
        );
    }
    let (code, _, stderr) = run_to_exit(&["--web.config.file=/nonexistent/web.yml"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/web.yml"), "{stderr}");
}

#[test]
fn configured_response_headers_are_sent() {
    let dir = temp_dir("web-headers");
    let exporter = start(
        &dir,
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: \"default-src 'none'\"\n",
    );
    let mut socket = TcpStream::connect(exporter.addr).unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let head = answer.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("X-Frame-Options: deny"), "{head}");
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
}
