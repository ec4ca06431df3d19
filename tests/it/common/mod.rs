//! Shared harness of the black-box tests: start the real binary on port 0, read its log,
//! scrape it, and wait for conditions without fixed sleeps.
#![allow(dead_code)]

pub mod openbao;
pub mod pki;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_vault-token-exporter");

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vte-it-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("vte-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program on `PATH`, if there is one.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Writes a token file with mode 0600.
pub fn write_token(path: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, token).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// One parsed exposition line.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape's body, parsed.
#[derive(Clone, Debug)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Scrape { text, samples }
    }

    /// The value of the series `name` whose labels include all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// `value` for a token's series (`vault` label) plus extra labels.
    pub fn of(&self, name: &str, vault: &str, extra: &[(&str, &str)]) -> Option<f64> {
        let mut labels = vec![("vault", vault)];
        labels.extend_from_slice(extra);
        self.value(name, &labels)
    }

    /// The one-hot state of a token.
    pub fn state(&self, vault: &str) -> Option<String> {
        self.samples
            .iter()
            .find(|s| {
                s.name == "vault_token_state"
                    && s.labels.get("vault").map(String::as_str) == Some(vault)
                    && s.value == 1.0
            })
            .and_then(|s| s.labels.get("state").cloned())
    }

    pub fn renewals(&self, vault: &str, result: &str) -> f64 {
        self.of("vault_token_renewals_total", vault, &[("result", result)])
            .unwrap_or(f64::NAN)
    }

    pub fn failures(&self, vault: &str, reason: &str) -> f64 {
        self.of(
            "vault_token_renewal_failures_total",
            vault,
            &[("reason", reason)],
        )
        .unwrap_or(f64::NAN)
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_owned(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = BTreeMap::new();
            let mut chars = body.chars().peekable();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                if key.is_empty() {
                    break;
                }
                if chars.next() != Some('"') {
                    return None;
                }
                let mut val = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some('n') => val.push('\n'),
                            Some(other) => val.push(other),
                            None => return None,
                        },
                        '"' => break,
                        c => val.push(c),
                    }
                }
                labels.insert(key.trim_start_matches(',').to_owned(), val);
                if chars.peek() == Some(&',') {
                    chars.next();
                }
            }
            (name.to_owned(), labels)
        }
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A plain HTTP/1.1 GET on a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends a raw request and reads the whole answer: (status, body).
pub fn http_request(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read answer");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

/// The body of a `Transfer-Encoding: chunked` answer (tiny_http sends bodies over 32 KiB so).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    body
}

/// The exporter binary, running.
pub struct Exporter {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    pub dir: PathBuf,
}

impl Exporter {
    /// Starts the binary with a config file holding `yaml` and `args`.
    pub fn with_config(name: &str, yaml: &str, args: &[&str]) -> Exporter {
        let dir = temp_dir(name);
        let config = dir.join("config.yml");
        std::fs::write(&config, yaml).unwrap();
        let mut all = vec![format!("--config.file={}", config.display())];
        all.extend(args.iter().map(|a| a.to_string()));
        Self::start_in(dir, &all, &[])
    }

    /// Starts the binary in `dir` with `args` and extra environment `env`; waits for
    /// `listening on` (10 s at most).
    pub fn start_in(dir: PathBuf, args: &[String], env: &[(&str, &str)]) -> Exporter {
        Self::start_bin(Path::new(BIN), dir, args, env)
    }

    /// [`Exporter::start_in`] with another build of the binary (the release one).
    pub fn start_bin(bin: &Path, dir: PathBuf, args: &[String], env: &[(&str, &str)]) -> Exporter {
        let mut cmd = Command::new(bin);
        if !args.iter().any(|a| a.starts_with("--web.listen-address")) {
            cmd.arg("--web.listen-address=127.0.0.1:0");
        }
        cmd.args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in [
            "VAULT_ADDR",
            "VAULT_TOKEN",
            "VAULT_NAMESPACE",
            "VAULT_CACERT",
            "VAULT_CAPATH",
            "VAULT_SKIP_VERIFY",
            "BAO_ADDR",
            "BAO_TOKEN",
            "BAO_NAMESPACE",
            "BAO_CACERT",
            "BAO_CAPATH",
            "BAO_SKIP_VERIFY",
        ] {
            if !env.iter().any(|(e, _)| *e == k) {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn exporter");
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // The exporter's line, not a library's: the address ends the text line
                // (in a JSON line a quote follows it) and parses.
                let addr = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split(['"', ' ']).next())
                    .and_then(|addr| addr.trim().parse::<SocketAddr>().ok());
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let out = child.stdout.take().unwrap();
        let out_writer = stdout.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(out).read_to_string(&mut text);
            out_writer.lock().unwrap().push_str(&text);
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("exporter did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Exporter {
            child,
            addr,
            log,
            stdout,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    pub fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape::parse(body)
    }

    /// Scrapes until `ready` holds; panics with the last scrape and the log after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        ready: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = self.scrape();
            if ready(&scrape) {
                return scrape;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- scrape ---\n{}\n--- log ---\n{}",
                    interesting(&scrape.text),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&self, timeout: Duration, needle: &str) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if Instant::now() > deadline {
                panic!("no log line with {needle:?} in:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits for the exit status (panics after `timeout`).
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        send_signal(self.pid(), signal);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > timeout {
                panic!("exporter still running {timeout:?} after SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn interesting(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("vault_token_") && !l.contains("_bucket"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the binary to completion (10 s at most): (exit code, stdout, stderr).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_TOKEN")
        .env_remove("BAO_ADDR");
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The path the `vault` collector polls, unauthenticated, on every configured Vault.
pub const HEALTH_PATH: &str = "/v1/sys/health";

/// The requests `vault` received about tokens: all but the `vault` collector's
/// unauthenticated `sys/health` polls.
pub fn token_requests(vault: &vault_double::VaultDouble) -> Vec<vault_double::RequestRecord> {
    vault
        .requests()
        .into_iter()
        .filter(|r| r.path != HEALTH_PATH)
        .collect()
}

/// A config entry for one token in a token file.
pub fn file_entry(name: &str, address: &str, token_file: &Path, extra: &str) -> String {
    format!(
        "  - name: {name}\n    address: {address}\n    token_file: {}\n    timeout: 1s\n    max_backoff: 2s\n{extra}",
        token_file.display()
    )
}

/// Sends `signal` (a name: `HUP`, `STOP`...) to process `pid`, as `kill -SIGNAL PID` does.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}
