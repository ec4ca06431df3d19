//! Helpers of the fault and Vault-TLS tests: certificates made at test time with the
//! `openssl` CLI, a rustls TLS terminator in front of the plain-HTTP Vault double, and the
//! end-of-test check that no token leaked.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::common::Exporter;

pub const LOOKUP: &str = "/v1/auth/token/lookup-self";
pub const RENEW: &str = "/v1/auth/token/renew-self";

/// Polls `ready` every 50 ms; panics with `what` after `timeout`. Returns the time it took.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if ready() {
            return started.elapsed();
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds from `earlier` to `later` (negative if `later` is before).
pub fn secs_between(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Reads `/metrics` and `/proc/PID/cmdline` of a running exporter and checks that no
/// `secret` is in them.
pub fn leak_check_running(exporter: &Exporter, secrets: &[&str]) {
    let metrics = exporter.scrape().text;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", exporter.pid())).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
    assert!(
        cmdline.contains("--config.file="),
        "read the real cmdline: {cmdline:?}"
    );
    for secret in secrets {
        assert_absent(secret, "/metrics", &metrics);
        assert_absent(secret, "/proc/PID/cmdline", &cmdline);
    }
}

/// After the exporter exited: no `secret` in its stderr (the log, at trace level) or stdout.
/// Returns the log.
pub fn leak_check_exited(exporter: &Exporter, secrets: &[&str]) -> String {
    // stdout is collected once the pipe closes, just after the exit.
    std::thread::sleep(Duration::from_millis(200));
    let log = exporter.log();
    let stdout = exporter.stdout();
    assert!(
        log.contains(" TRACE ") || log.contains(" DEBUG "),
        "the test must run at --log.level=trace; log:\n{log}"
    );
    for secret in secrets {
        assert_absent(secret, "stderr", &log);
        assert_absent(secret, "stdout", &stdout);
    }
    log
}

fn assert_absent(secret: &str, place: &str, text: &str) {
    // The random part alone, so a token cut after its prefix would be caught too.
    let core = secret.split_once('.').map_or(secret, |(_, rest)| rest);
    assert!(core.len() >= 20, "a real token: {secret}");
    assert!(
        !text.contains(core),
        "a token leaked into {place}:\n{}",
        text.lines()
            .filter(|l| l.contains(core))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checks every fault test ends with, at `--log.level=trace`: no `secret` appears in
/// `/metrics`, `/proc/PID/cmdline`, stderr or stdout, and SIGTERM ends the process with
/// status 0. Returns the full log.
pub fn finish_without_leaks(exporter: &mut Exporter, secrets: &[&str]) -> String {
    leak_check_running(exporter, secrets);
    let (status, _) = exporter.signal_and_wait("TERM", Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    leak_check_exited(exporter, secrets)
}

/// Lines of `log` containing every one of `needles`.
pub fn log_lines<'a>(log: &'a str, needles: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

pub use crate::common::pki::{make_ca, make_leaf, CertFiles};

// ---------------------------------------------------------------------------------------
// TLS terminator
// ---------------------------------------------------------------------------------------

/// How a [`TlsProxy`] presents itself.
pub struct ProxyOptions {
    /// The server certificate and key.
    pub server: CertFiles,
    /// When set, a client certificate signed by this CA is required (mTLS).
    pub client_ca: Option<PathBuf>,
}

#[derive(Default)]
struct ProxyStats {
    handshakes_ok: AtomicU64,
    handshakes_failed: AtomicU64,
    /// The SNI of every completed handshake (`None`: the client sent none).
    server_names: Mutex<Vec<Option<String>>>,
    /// The rustls error of every failed handshake.
    errors: Mutex<Vec<String>>,
}

/// A TLS server on loopback that forwards the decrypted bytes of each connection to a
/// plain-HTTP backend (the Vault double), one thread per connection.
pub struct TlsProxy {
    pub addr: SocketAddr,
    stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
}

fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

impl TlsProxy {
    /// Starts a terminator for `backend`.
    pub fn start(backend: SocketAddr, options: ProxyOptions) -> TlsProxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match &options.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in load_certs(ca) {
                    roots.add(cert).unwrap();
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_file(&options.server.key).unwrap();
        let config = Arc::new(
            builder
                .with_single_cert(load_certs(&options.server.cert), key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_stats, thread_stop) = (stats.clone(), stop.clone());
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, stats, stop) =
                            (config.clone(), thread_stats.clone(), thread_stop.clone());
                        std::thread::spawn(move || {
                            relay(tcp, config, backend, &stats, &stop);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TlsProxy { addr, stats, stop }
    }

    /// `https://HOST:PORT` of this terminator.
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.addr.port())
    }

    pub fn handshakes_ok(&self) -> u64 {
        self.stats.handshakes_ok.load(Ordering::SeqCst)
    }

    pub fn handshakes_failed(&self) -> u64 {
        self.stats.handshakes_failed.load(Ordering::SeqCst)
    }

    /// The SNI of every completed handshake.
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.stats.server_names.lock().unwrap().clone()
    }

    /// What went wrong in each failed handshake, as rustls saw it on the server side.
    pub fn errors(&self) -> Vec<String> {
        self.stats.errors.lock().unwrap().clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Moves bytes between one TLS client and the backend until either side closes.
fn relay(
    mut tcp: TcpStream,
    config: Arc<ServerConfig>,
    backend: SocketAddr,
    stats: &ProxyStats,
    stop: &AtomicBool,
) {
    let poll = Some(Duration::from_millis(1));
    if tcp.set_read_timeout(poll).is_err() {
        return;
    }
    let mut tls = ServerConnection::new(config).unwrap();
    let mut plain: Option<TcpStream> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    let would_block =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    while !stop.load(Ordering::Relaxed) {
        // TLS records from the client.
        match tls.read_tls(&mut tcp) {
            Ok(0) => break,
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    if tls.is_handshaking() || plain.is_none() {
                        stats.handshakes_failed.fetch_add(1, Ordering::SeqCst);
                        stats.errors.lock().unwrap().push(e.to_string());
                    }
                    let _ = tls.write_tls(&mut tcp);
                    break;
                }
            }
            Err(e) if would_block(&e) => {}
            Err(_) => break,
        }
        if plain.is_none() && !tls.is_handshaking() {
            stats.handshakes_ok.fetch_add(1, Ordering::SeqCst);
            stats
                .server_names
                .lock()
                .unwrap()
                .push(tls.server_name().map(str::to_owned));
            let Ok(stream) = TcpStream::connect(backend) else {
                break;
            };
            let _ = stream.set_read_timeout(poll);
            plain = Some(stream);
        }
        if let Some(backend_stream) = plain.as_mut() {
            // Decrypted bytes to the backend.
            loop {
                match tls.reader().read(&mut buf) {
                    Ok(0) => {
                        let _ = backend_stream.shutdown(Shutdown::Write);
                        break;
                    }
                    Ok(n) => {
                        if backend_stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            // The backend's answer back to the client.
            match backend_stream.read(&mut buf) {
                Ok(0) => {
                    tls.send_close_notify();
                    while tls.wants_write() {
                        if tls.write_tls(&mut tcp).is_err() {
                            break;
                        }
                    }
                    break;
                }
                Ok(n) => {
                    if tls.writer().write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if would_block(&e) => {}
                Err(_) => break,
            }
        } else if started.elapsed() > Duration::from_secs(10) {
            break; // a client that never finishes its handshake
        }
        while tls.wants_write() {
            match tls.write_tls(&mut tcp) {
                Ok(_) => {}
                Err(e) if would_block(&e) => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return,
            }
        }
    }
}
