//! `bench`: measures what vault-token-exporter costs and how fast it scrapes, on loopback,
//! against two reference servers measured in the same run.
//!
//! ```text
//! cargo run --release -p bench -- [--tokens 1,100,1000,10000] [--smoke]
//! ```
//!
//! For each N it starts the Vault test double with N service tokens (TTL 1 h: one lookup
//! each at start, then the exporter idles), starts the release exporter binary as a child
//! process with one token file per token, and measures: VmRSS, VmHWM and threads
//! (`/proc/PID/status`), CPU over an idle window (utime+stime of `/proc/PID/stat`), the time
//! from spawn to the first scrape listing every token (with the Vault up, and again with
//! every Vault down), scrape latency (median and p99 on one kept-alive connection) and
//! throughput (concurrent kept-alive clients). The same scrape figures are taken for two
//! minimal tiny_http servers with `TCP_NODELAY`: one serving the exporter's body
//! pre-rendered (the transfer floor), one encoding the same metric families with the
//! prometheus crate's `TextEncoder` on every request (the floor of the stack). It also
//! profiles the scrape path in-process (allocations and time per token, by phase) with a
//! counting global allocator, and checks renewal timing: N tokens of a short TTL renewed
//! together, each within 1 s of the `vault_token_next_renewal_timestamp_seconds` it was
//! announced with, measured from the requests the double saw.
//!
//! It exits non-zero when something is broken (a scrape fails, a token is missing, a
//! renewal never comes), never because a machine is slow: missed targets are reported.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use vault_double::{TokenSpec, VaultDouble};

// ---------------------------------------------------------------------------------------
// Counting allocator: counts only while `COUNTING` is set (the in-process profile), so the
// reference servers run at full speed.
// ---------------------------------------------------------------------------------------

struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method hands the same layout and pointer straight to `System`, which
// upholds GlobalAlloc's contract; the counting around it only touches atomics and never
// allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        }
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations and bytes allocated by `f` on this (single-threaded) path.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (a0, b0) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
    COUNTING.store(true, Relaxed);
    let out = f();
    COUNTING.store(false, Relaxed);
    (
        out,
        ALLOCS.load(Relaxed) - a0,
        ALLOC_BYTES.load(Relaxed) - b0,
    )
}

// ---------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Options {
    tokens: Vec<usize>,
    smoke: bool,
    exporter: Option<PathBuf>,
    /// Scrapes for the latency figures (fewer if `latency_budget` runs out first).
    scrapes: usize,
    latency_budget: Duration,
    clients: usize,
    throughput_for: Duration,
    idle_for: Duration,
    accuracy_tokens: usize,
    accuracy_ttl: u64,
    skip_accuracy: bool,
    /// Only start the double and the exporter with this many tokens, print the PID and
    /// address, and keep them running this long (for profiling by hand).
    hold: Option<(usize, Duration)>,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            tokens: vec![1, 100, 1000, 10000],
            smoke: false,
            exporter: None,
            scrapes: 300,
            latency_budget: Duration::from_secs(60),
            clients: 4,
            throughput_for: Duration::from_secs(5),
            idle_for: Duration::from_secs(30),
            accuracy_tokens: 1000,
            accuracy_ttl: 20,
            skip_accuracy: false,
            hold: None,
        };
        let mut tokens_given = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let secs = |v: String| {
                v.parse::<f64>()
                    .map(Duration::from_secs_f64)
                    .map_err(|e| format!("{key}: {e}"))
            };
            match key.as_str() {
                "--tokens" => {
                    o.tokens = value("--tokens")?
                        .split(',')
                        .map(|n| n.trim().parse().map_err(|e| format!("--tokens: {e}")))
                        .collect::<Result<_, _>>()?;
                    tokens_given = true;
                }
                "--smoke" => o.smoke = true,
                "--exporter" => o.exporter = Some(PathBuf::from(value("--exporter")?)),
                "--scrapes" => {
                    o.scrapes = value("--scrapes")?.parse().map_err(|e| format!("{e}"))?
                }
                "--clients" => {
                    o.clients = value("--clients")?.parse().map_err(|e| format!("{e}"))?
                }
                "--throughput-seconds" => o.throughput_for = secs(value(&key)?)?,
                "--idle-seconds" => o.idle_for = secs(value(&key)?)?,
                "--accuracy-tokens" => {
                    o.accuracy_tokens = value(&key)?.parse().map_err(|e| format!("{e}"))?
                }
                "--accuracy-ttl" => {
                    o.accuracy_ttl = value(&key)?.parse().map_err(|e| format!("{e}"))?
                }
                "--no-accuracy" => o.skip_accuracy = true,
                "--hold" => {
                    let v = value(&key)?;
                    let (n, secs) = v.split_once(':').unwrap_or((&v, "600"));
                    let n = n.parse().map_err(|e| format!("--hold N[:SECONDS]: {e}"))?;
                    let secs = secs
                        .parse()
                        .map_err(|e| format!("--hold N[:SECONDS]: {e}"))?;
                    o.hold = Some((n, Duration::from_secs(secs)));
                }
                "-h" | "--help" => {
                    println!(
                        "usage: bench [--tokens 1,100,1000,10000] [--smoke] [--exporter PATH]\n\
                         \x20            [--scrapes 300] [--clients 4] [--throughput-seconds 5]\n\
                         \x20            [--idle-seconds 30] [--accuracy-tokens 1000] [--accuracy-ttl 20]\n\
                         \x20            [--no-accuracy] [--hold N[:SECONDS]]\n\
                         --smoke: N=100, short windows, for CI (fails only when something is broken)"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (see --help)")),
            }
        }
        if o.smoke {
            if !tokens_given {
                o.tokens = vec![100];
            }
            o.scrapes = o.scrapes.min(100);
            o.latency_budget = Duration::from_secs(5);
            o.throughput_for = o.throughput_for.min(Duration::from_millis(500));
            o.idle_for = o.idle_for.min(Duration::from_secs(1));
            o.accuracy_tokens = o.accuracy_tokens.min(100);
            o.accuracy_ttl = o.accuracy_ttl.min(5);
        }
        if o.tokens.is_empty() || o.tokens.contains(&0) {
            return Err("--tokens: give positive counts".into());
        }
        Ok(o)
    }
}

// ---------------------------------------------------------------------------------------
// A minimal HTTP/1.1 keep-alive client
// ---------------------------------------------------------------------------------------

struct Client {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    line: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr, path: &str) -> io::Result<Client> {
        Client::connect_with(addr, path, "")
    }

    /// A client whose requests carry `headers` (each ending in CRLF).
    fn connect_with(addr: SocketAddr, path: &str, headers: &str) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            request: format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: */*\r\n{headers}\r\n")
                .into_bytes(),
            line: Vec::with_capacity(256),
        })
    }

    fn read_line(&mut self) -> io::Result<&str> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        std::str::from_utf8(&self.line)
            .map(|l| l.trim_end_matches(['\r', '\n']))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// One GET on the kept-alive connection; the body lands in `body`. Returns the status.
    fn get(&mut self, body: &mut Vec<u8>) -> io::Result<u16> {
        self.reader.get_mut().write_all(&self.request)?;
        let status_line = self.read_line()?.to_owned();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|e| bad(e.to_string()))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        body.clear();
        if chunked {
            loop {
                let line = self.read_line()?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|e| bad(format!("bad chunk size {line:?}: {e}")))?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                if !self.read_line()?.is_empty() {
                    return Err(bad("chunk not followed by CRLF".into()));
                }
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            self.reader.read_exact(body)?;
        } else {
            self.reader.read_to_end(body)?;
        }
        if close {
            return Err(bad("server closed the kept-alive connection".into()));
        }
        Ok(status)
    }
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// One GET on a fresh connection.
fn get_once(addr: SocketAddr) -> io::Result<(u16, Vec<u8>)> {
    let mut client = Client::connect(addr, "/metrics")?;
    let mut body = Vec::new();
    let status = client.get(&mut body)?;
    Ok((status, body))
}

fn scrape_text(addr: SocketAddr) -> Result<String, String> {
    match get_once(addr) {
        Ok((200, body)) => String::from_utf8(body).map_err(|e| format!("scrape not UTF-8: {e}")),
        Ok((status, _)) => Err(format!("scrape answered {status}")),
        Err(e) => Err(format!("scrape failed: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Scrape figures: latency on one connection, throughput with concurrent clients
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct ScrapeFigures {
    scrapes: usize,
    median: Duration,
    p99: Duration,
    /// Scrapes per second with `clients` concurrent kept-alive clients.
    throughput: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Rounds the measurement of the servers is split into, interleaved.
const ROUNDS: usize = 5;

/// Checks one scrape: 200, and about the size expected (values change between scrapes,
/// never by more than a few per cent of the size).
fn check_scrape(
    addr: SocketAddr,
    status: u16,
    body: &[u8],
    expect_len: usize,
) -> Result<(), String> {
    if status != 200 {
        return Err(format!("scrape of {addr} answered {status}"));
    }
    if body.len() < expect_len * 9 / 10 {
        return Err(format!(
            "scrape of {addr} is {} bytes, expected about {expect_len}",
            body.len()
        ));
    }
    Ok(())
}

/// Scrapes per second from `clients` kept-alive clients for `duration`: (scrapes, time).
fn throughput_block(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    expect_len: usize,
) -> Result<(usize, Duration), String> {
    let done = Arc::new(AtomicUsize::new(0));
    let error = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (done, error) = (done.clone(), error.clone());
            std::thread::spawn(move || {
                let run = || -> Result<(), String> {
                    let mut client =
                        Client::connect(addr, "/metrics").map_err(|e| format!("connect: {e}"))?;
                    let mut body = Vec::with_capacity(expect_len + 4096);
                    while Instant::now() < deadline {
                        let status = client.get(&mut body).map_err(|e| format!("scrape: {e}"))?;
                        check_scrape(addr, status, &body, expect_len)?;
                        done.fetch_add(1, Relaxed);
                    }
                    Ok(())
                };
                if let Err(e) = run() {
                    *error.lock().unwrap() = Some(e);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = error.lock().unwrap().take() {
        return Err(format!("throughput against {addr}: {e}"));
    }
    Ok((done.load(Relaxed), started.elapsed()))
}

/// Latency (one kept-alive connection each) and throughput of every server, measured in
/// [`ROUNDS`] interleaved rounds, each starting with another server, so that a change in
/// the machine's background load falls on all of them alike. `targets`: (address,
/// expected body size).
fn measure_interleaved(
    targets: &[(SocketAddr, usize)],
    o: &Options,
) -> Result<Vec<ScrapeFigures>, String> {
    let mut clients = Vec::with_capacity(targets.len());
    let mut body = Vec::new();
    for &(addr, expect_len) in targets {
        let mut client =
            Client::connect(addr, "/metrics").map_err(|e| format!("connect {addr}: {e}"))?;
        // Warm up the connection and both sides' buffers.
        for _ in 0..3 {
            let status = client
                .get(&mut body)
                .map_err(|e| format!("scrape {addr}: {e}"))?;
            check_scrape(addr, status, &body, expect_len)?;
        }
        clients.push(client);
    }
    let n = targets.len();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(o.scrapes); n];
    let mut done = vec![(0usize, Duration::ZERO); n];
    let scrapes = o.scrapes.div_ceil(ROUNDS);
    let budget = o.latency_budget / ROUNDS as u32;
    let throughput_for = o.throughput_for / ROUNDS as u32;
    for round in 0..ROUNDS {
        for k in 0..n {
            let i = (round + k) % n;
            let (addr, expect_len) = targets[i];
            let started = Instant::now();
            let mut taken = 0;
            while taken < scrapes && (taken < 4 || started.elapsed() < budget) {
                let t = Instant::now();
                let status = clients[i]
                    .get(&mut body)
                    .map_err(|e| format!("scrape {addr}: {e}"))?;
                times[i].push(t.elapsed());
                check_scrape(addr, status, &body, expect_len)?;
                taken += 1;
            }
            let (count, spent) = throughput_block(addr, o.clients, throughput_for, expect_len)?;
            done[i].0 += count;
            done[i].1 += spent;
        }
    }
    Ok(times
        .into_iter()
        .zip(done)
        .map(|(mut times, (count, spent))| {
            times.sort();
            ScrapeFigures {
                scrapes: times.len(),
                median: percentile(&times, 0.5),
                p99: percentile(&times, 0.99),
                throughput: count as f64 / spent.as_secs_f64(),
            }
        })
        .collect())
}

/// gzip scrapes of the exporter on one kept-alive connection (`Accept-Encoding: gzip`):
/// the compressed size, and the latency median and p99. The body must unzip to about
/// `expect_len` bytes.
fn gzip_scrapes(
    addr: SocketAddr,
    scrapes: usize,
    expect_len: usize,
) -> Result<(usize, ScrapeFigures), String> {
    let mut client = Client::connect_with(addr, "/metrics", "Accept-Encoding: gzip\r\n")
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut body = Vec::new();
    let mut times = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for i in 0..scrapes.max(4) + 2 {
        let t = Instant::now();
        let status = client
            .get(&mut body)
            .map_err(|e| format!("gzip scrape {addr}: {e}"))?;
        if i >= 2 {
            times.push(t.elapsed());
        }
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .map_err(|e| format!("the gzip scrape does not unzip: {e}"))?;
        check_scrape(addr, status, &text, expect_len)?;
        bytes = body.len();
    }
    times.sort();
    Ok((
        bytes,
        ScrapeFigures {
            scrapes: times.len(),
            median: percentile(&times, 0.5),
            p99: percentile(&times, 0.99),
            throughput: 0.0,
        },
    ))
}

// ---------------------------------------------------------------------------------------
// Reference servers
// ---------------------------------------------------------------------------------------

/// A body shared by every response of the pre-rendered server, read without copying.
struct SharedBody {
    data: Arc<Vec<u8>>,
    pos: usize,
}

impl Read for SharedBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A minimal tiny_http server on a `TCP_NODELAY` listener, with as many handler threads as
/// the exporter, answering every request with `respond`.
struct RefServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const HANDLERS: usize = 4;

impl RefServer {
    fn start(respond: Arc<dyn Fn(tiny_http::Request) + Send + Sync>) -> RefServer {
        let listener =
            vault_token_exporter::http::bind("127.0.0.1:0").expect("bind a reference server");
        let addr = listener.local_addr().expect("local address");
        let server =
            Arc::new(tiny_http::Server::from_listener(listener, None).expect("reference server"));
        let threads = (0..HANDLERS)
            .map(|_| {
                let (server, respond) = (server.clone(), respond.clone());
                std::thread::spawn(move || {
                    while let Ok(request) = server.recv() {
                        respond(request);
                    }
                })
            })
            .collect();
        RefServer {
            addr,
            server,
            threads,
        }
    }

    fn stop(self) {
        for _ in 0..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn content_type() -> tiny_http::Header {
    tiny_http::Header::from_bytes(&b"Content-Type"[..], prometheus::TEXT_FORMAT.as_bytes())
        .expect("valid header")
}

fn prerendered_server(body: Arc<Vec<u8>>) -> RefServer {
    RefServer::start(Arc::new(move |request: tiny_http::Request| {
        let len = body.len();
        let reader = SharedBody {
            data: body.clone(),
            pos: 0,
        };
        let response = tiny_http::Response::new(
            tiny_http::StatusCode(200),
            vec![content_type()],
            reader,
            Some(len),
            None,
        );
        let _ = request.respond(response);
    }))
}

fn encoding_server(families: Arc<Vec<MetricFamily>>, size: usize) -> RefServer {
    RefServer::start(Arc::new(move |request: tiny_http::Request| {
        let mut body = Vec::with_capacity(size + 4096);
        TextEncoder::new()
            .encode(&families, &mut body)
            .expect("the parsed families encode");
        let response = tiny_http::Response::from_data(body).with_header(content_type());
        let _ = request.respond(response);
    }))
}

/// The exporter's `Site` (collectors writing the text directly) over N synthetic tokens,
/// answering on a bare tiny_http server: what a scrape costs without the gate.
fn site_server(n: usize) -> RefServer {
    use collectors::collector::{CollectorContext, Collectors};
    let ctx = CollectorContext::new(token_states(n));
    let site = Arc::new(vault_token_exporter::http::Site::for_collectors(
        Arc::new(Collectors::new(&ctx, &["token", "exporter", "process"])),
        "/metrics".into(),
        Arc::new(AtomicBool::new(true)),
    ));
    RefServer::start(Arc::new(move |request: tiny_http::Request| {
        let scrape = vault_token_exporter::http::request::Request {
            method: "GET".into(),
            path: request.url().split('?').next().unwrap_or("/").into(),
            minor_version: 1,
            authorization: None,
            close: false,
            gzip: false,
        };
        let response = site
            .respond(&scrape)
            .into_response()
            .with_chunked_threshold(usize::MAX);
        let _ = request.respond(response);
    }))
}

// ---------------------------------------------------------------------------------------
// Exposition text back to metric families (for the encoding reference)
// ---------------------------------------------------------------------------------------

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// A sample line's name, labels and value.
type Sample<'a> = (&'a str, Vec<(String, String)>, f64);

/// Splits `name{a="x",b="y"} value` into its parts.
fn parse_sample(line: &str) -> Result<Sample<'_>, String> {
    let (series, value) = line
        .rsplit_once(' ')
        .ok_or_else(|| format!("bad sample line {line:?}"))?;
    let value = parse_value(value)?;
    let Some((name, rest)) = series.split_once('{') else {
        return Ok((series, Vec::new(), value));
    };
    let body = rest
        .strip_suffix('}')
        .ok_or_else(|| format!("bad labels in {line:?}"))?;
    let mut labels = Vec::new();
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let eq = body[i..]
            .find("=\"")
            .ok_or_else(|| format!("bad label in {line:?}"))?
            + i;
        let key = body[i..eq].to_owned();
        let mut j = eq + 2;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        labels.push((key, unescape(&body[eq + 2..j])));
        i = j + 2; // past `",`
    }
    Ok((name, labels, value))
}

fn label_pairs(labels: &[(String, String)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name(k.clone());
            l.set_value(v.clone());
            l
        })
        .collect()
}

/// Parses the text format as the prometheus crate's `TextEncoder` writes it (counters,
/// gauges, histograms; no timestamps) back into families that encode to the same bytes.
fn parse_families(text: &str) -> Result<Vec<MetricFamily>, String> {
    let mut families: Vec<MetricFamily> = Vec::new();
    let start = |families: &mut Vec<MetricFamily>, name: &str| {
        if families.last().is_none_or(|f| f.name() != name) {
            let mut f = MetricFamily::default();
            f.set_name(name.to_owned());
            families.push(f);
        }
    };
    // Inside a histogram series: between its first bucket and its `_count`.
    let mut histogram_open = false;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if line.starts_with("# ") {
            histogram_open = false;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            start(&mut families, name);
            families.last_mut().unwrap().set_help(unescape(help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| format!("bad TYPE line {line:?}"))?;
            start(&mut families, name);
            let kind = match kind {
                "counter" => MetricType::COUNTER,
                "gauge" => MetricType::GAUGE,
                "histogram" => MetricType::HISTOGRAM,
                "summary" => MetricType::SUMMARY,
                other => return Err(format!("unsupported type {other}")),
            };
            families.last_mut().unwrap().set_field_type(kind);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, mut labels, value) = parse_sample(line)?;
        let family = families
            .last_mut()
            .ok_or_else(|| format!("sample before any TYPE: {line:?}"))?;
        match family.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                let mut m = Metric::from_label(label_pairs(&labels));
                m.set_counter(c);
                family.mut_metric().push(m);
            }
            MetricType::GAUGE => {
                let mut g = Gauge::default();
                g.set_value(value);
                let mut m = Metric::from_label(label_pairs(&labels));
                m.set_gauge(g);
                family.mut_metric().push(m);
            }
            MetricType::HISTOGRAM => {
                let suffix = &name[family.name().len()..];
                let le = if suffix == "_bucket" {
                    let (k, v) = labels.pop().ok_or("bucket without le")?;
                    if k != "le" {
                        return Err(format!("bucket without le: {line:?}"));
                    }
                    Some(parse_value(&v)?)
                } else {
                    None
                };
                if suffix == "_bucket" && !histogram_open {
                    family
                        .mut_metric()
                        .push(Metric::from_label(label_pairs(&labels)));
                    histogram_open = true;
                }
                let metric = family
                    .mut_metric()
                    .last_mut()
                    .ok_or_else(|| format!("histogram sample before its buckets: {line:?}"))?;
                let mut h = metric.get_histogram().clone();
                match (suffix, le) {
                    ("_bucket", Some(le)) if le.is_infinite() => {}
                    ("_bucket", Some(le)) => {
                        let mut b = Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(value as u64);
                        let mut buckets = h.get_bucket().to_vec();
                        buckets.push(b);
                        h.set_bucket(buckets);
                    }
                    ("_sum", _) => h.set_sample_sum(value),
                    ("_count", _) => {
                        h.set_sample_count(value as u64);
                        histogram_open = false;
                    }
                    _ => return Err(format!("unexpected histogram sample {line:?}")),
                }
                metric.set_histogram(h);
            }
            _ => return Err(format!("unsupported family {}", family.name())),
        }
    }
    Ok(families)
}

fn encode(families: &[MetricFamily]) -> Vec<u8> {
    let mut body = Vec::new();
    TextEncoder::new()
        .encode(families, &mut body)
        .expect("families encode");
    body
}

// ---------------------------------------------------------------------------------------
// The exporter as a child process
// ---------------------------------------------------------------------------------------

struct Exporter {
    child: Child,
    addr: SocketAddr,
    spawned: Instant,
}

impl Exporter {
    fn spawn(bin: &Path, config: &Path) -> Result<Exporter, String> {
        let mut cmd = Command::new(bin);
        // The exporter dies with the bench, however the bench ends.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        cmd.arg(format!("--config.file={}", config.display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Drain the log for the whole run, or the child blocks on a full pipe.
            let mut tx = Some(tx);
            let mut first = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if first.len() < 20 {
                    first.push(line.clone());
                }
                if let Some(addr) = line.split("listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok(addr.trim().to_owned()));
                    }
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err(first.join("\n")));
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr
                .parse()
                .map_err(|e| format!("bad listening address {addr:?}: {e}"))?,
            Ok(Err(log)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the exporter exited before listening:\n{log}"));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the exporter did not log `listening on` within 30 s".into());
            }
        };
        Ok(Exporter {
            child,
            addr,
            spawned,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Scrapes until every one of `n` tokens is listed; the time since spawn.
    fn first_complete_scrape(&self, n: usize, timeout: Duration) -> Result<Duration, String> {
        loop {
            if let Ok(text) = scrape_text(self.addr) {
                if count_lines(&text, "vault_token_renewing{") == n {
                    return Ok(self.spawned.elapsed());
                }
            }
            if self.spawned.elapsed() > timeout {
                return Err(format!(
                    "no scrape listed all {n} tokens within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Scrapes until all `n` tokens are renewing (looked up); the time since spawn.
    fn all_renewing(&self, n: usize, timeout: Duration) -> Result<(Duration, String), String> {
        loop {
            let last = match scrape_text(self.addr) {
                Ok(text) => {
                    let renewing = text
                        .lines()
                        .filter(|l| l.starts_with("vault_token_renewing{") && l.ends_with(" 1"))
                        .count();
                    if renewing == n {
                        return Ok((self.spawned.elapsed(), text));
                    }
                    format!("{renewing} of {n} tokens renewing")
                }
                Err(e) => e,
            };
            if self.spawned.elapsed() > timeout {
                return Err(format!("not all tokens renewing after {timeout:?}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_lines(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

#[derive(Clone, Copy, Debug, Default)]
struct ProcStatus {
    rss_kib: u64,
    /// Of `rss_kib`: private memory, and pages of the binary and libraries (shared with
    /// the page cache; how many are mapped varies with the kernel's fault-around).
    anon_kib: u64,
    file_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Result<ProcStatus, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
    })
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("bad /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(at(14) + at(15))
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------
// Fixtures: token files and config
// ---------------------------------------------------------------------------------------

struct Fixture {
    dir: PathBuf,
    config: PathBuf,
    names: Vec<String>,
    /// token value -> name
    by_token: HashMap<String, String>,
}

fn name_of(i: usize) -> String {
    format!("t{i:05}")
}

fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// N token files and a config pointing at `address`; the tokens come from `vault` (or are
/// made up when every Vault is down).
fn fixture(
    tag: &str,
    n: usize,
    address: &str,
    vault: Option<&VaultDouble>,
    ttl: u64,
) -> Result<Fixture, String> {
    let dir = std::env::temp_dir().join(format!("vte-bench-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    let mut yaml = String::with_capacity(n * 120);
    yaml.push_str("vaults:\n");
    let mut names = Vec::with_capacity(n);
    let mut by_token = HashMap::with_capacity(n);
    for i in 0..n {
        let name = name_of(i);
        let token = match vault {
            Some(v) => v.add_token(TokenSpec::service(ttl)),
            None => format!("hvs.benchdown{i:012}"),
        };
        let file = tokens.join(&name);
        write_private(&file, &token).map_err(|e| format!("{}: {e}", file.display()))?;
        yaml.push_str(&format!(
            "  - name: {name}\n    address: {address}\n    token_file: {}\n    timeout: 10s\n",
            file.display()
        ));
        by_token.insert(token, name.clone());
        names.push(name);
    }
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
    Ok(Fixture {
        dir,
        config,
        names,
        by_token,
    })
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An address where nothing listens: every Vault is down.
fn dead_address() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// In-process profile of the scrape path
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Profile {
    /// The exporter's path (collectors write the text directly), one token changed since
    /// the last scrape: what a Prometheus scrape costs while renewals go on.
    direct_allocs: u64,
    direct_bytes: u64,
    direct_render: Duration,
    /// The same with nothing changed since the last scrape (the kept text is shared).
    kept_render: Duration,
    /// The token collector's `write_text_at` alone.
    write_text: Duration,
    /// The registry path: `Registry::gather` (collect + sort) then `TextEncoder`.
    gather_allocs: u64,
    encode_allocs: u64,
    registry_bytes: u64,
    families_at: Duration,
    gather: Duration,
    encode: Duration,
    registry_render: Duration,
}

fn token_states(n: usize) -> Vec<Arc<collectors::state::TokenState>> {
    use collectors::state::{TokenInfo, TokenState, TokenStatus};
    let now = unix_now();
    (0..n)
        .map(|i| {
            let s = Arc::new(TokenState::new(name_of(i)));
            s.set_status(TokenStatus::Renewing);
            s.set_renewable(true);
            s.expiry.set(now + 3600.0);
            s.next_renewal.set(now + 1700.0 + i as f64 * 0.01);
            s.set_info(TokenInfo {
                display_name: "token".into(),
                token_type: "service".into(),
                auth_path: "auth/token/create".into(),
                policies: "default".into(),
            });
            s
        })
        .collect()
}

fn profile(n: usize, iterations: usize) -> Profile {
    use collectors::collector::{CollectorContext, Collectors};
    use collectors::family::TextOut;
    use collectors::token_collector::TokenCollector;
    use vault_token_exporter::http::Site;
    let states = token_states(n);
    let ctx = CollectorContext::new(states.clone());
    let enabled = ["token", "exporter", "process"];
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(Collectors::new(&ctx, &enabled)))
        .expect("register");
    let ready = Arc::new(AtomicBool::new(true));
    let via_registry = Site::new(registry.clone(), "/metrics".into(), ready.clone());
    let direct = Collectors::new(&ctx, &enabled);
    // One renewal counted since the last scrape: the token text is written again.
    let changed = states[0].clone();
    let render_changed = || {
        changed.count(collectors::state::Outcome::Success);
        direct.write_text()
    };
    let tokens = TokenCollector::new(states);
    for _ in 0..2 {
        drop(via_registry.render_metrics());
        drop(render_changed());
    }
    let mut p = Profile::default();
    let iterations = iterations.max(1);
    let (families, gather_allocs, gather_bytes) = counted(|| registry.gather());
    let (_, encode_allocs, encode_bytes) = counted(|| {
        let mut body = Vec::with_capacity(1 << 20);
        TextEncoder::new().encode(&families, &mut body).unwrap();
        body
    });
    drop(families);
    p.gather_allocs = gather_allocs;
    p.encode_allocs = encode_allocs;
    p.registry_bytes = gather_bytes + encode_bytes;
    let (_, direct_allocs, direct_bytes) = counted(render_changed);
    p.direct_allocs = direct_allocs;
    p.direct_bytes = direct_bytes;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..iterations {
            f();
        }
        t.elapsed() / iterations as u32
    };
    let now = unix_now();
    let size = direct.write_text().len();
    p.write_text = time(&mut || {
        let mut out = TextOut::with_capacity(size + 4096);
        tokens.write_text_at(now, &mut out);
        drop(out)
    });
    p.direct_render = time(&mut || drop(render_changed()));
    p.kept_render = time(&mut || drop(direct.write_text()));
    p.families_at = time(&mut || drop(tokens.families_at(now)));
    p.gather = time(&mut || drop(registry.gather()));
    let families = registry.gather();
    p.encode = time(&mut || {
        let mut body = Vec::with_capacity(size + 4096);
        TextEncoder::new().encode(&families, &mut body).unwrap();
        drop(body)
    });
    p.registry_render = time(&mut || drop(via_registry.render_metrics()));
    p
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// One N
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct Row {
    n: usize,
    series: usize,
    series_per_token: usize,
    body_bytes: usize,
    bytes_per_token: usize,
    idle: ProcStatus,
    loaded: ProcStatus,
    idle_cpu_percent: f64,
    first_scrape: Duration,
    first_scrape_down: Duration,
    all_renewing: Duration,
    exporter: ScrapeFigures,
    encoding: ScrapeFigures,
    prerendered: ScrapeFigures,
    /// The exporter's own rendering (`Site::for_collectors`, N synthetic tokens) on a bare
    /// tiny_http server: the exporter without its gate.
    no_relay: ScrapeFigures,
    /// A gzip scrape of the exporter: compressed bytes, latency on one connection.
    gzip_bytes: usize,
    gzip: ScrapeFigures,
    profile: Profile,
}

fn run_n(n: usize, o: &Options, bin: &Path, ticks: f64) -> Result<Row, String> {
    let mut row = Row {
        n,
        ..Row::default()
    };
    eprintln!("== N = {n}");
    let startup_timeout = Duration::from_secs(30 + n as u64 / 100);

    // Every Vault down: the first scrape must still list every token, at once. A start
    // is short and a busy moment of the machine weighs on it: the median of three.
    {
        let fx = fixture("down", n, &dead_address(), None, 0)?;
        let starts = if n <= 1000 { 3 } else { 1 };
        let mut times = Vec::with_capacity(starts);
        for _ in 0..starts {
            let exporter = Exporter::spawn(bin, &fx.config)?;
            times.push(exporter.first_complete_scrape(n, startup_timeout)?);
        }
        times.sort();
        row.first_scrape_down = times[times.len() / 2];
        eprintln!(
            "   first complete scrape, every Vault down: {} (median of {:?})",
            ms(row.first_scrape_down),
            times.iter().map(|t| ms(*t)).collect::<Vec<_>>()
        );
    }

    let vault = VaultDouble::start();
    let fx = fixture("up", n, &vault.url(), Some(&vault), 3600)?;
    let exporter = Exporter::spawn(bin, &fx.config)?;
    let pid = exporter.pid();
    row.first_scrape = exporter.first_complete_scrape(n, startup_timeout)?;
    let (renewing, text) = exporter.all_renewing(n, startup_timeout * 2)?;
    row.all_renewing = renewing;
    eprintln!(
        "   first complete scrape {}, all {n} looked up and renewing {}",
        ms(row.first_scrape),
        ms(row.all_renewing)
    );
    for name in &fx.names {
        let series = format!("vault_token_state{{vault=\"{name}\",state=\"renewing\"}} 1");
        if !text.contains(&series) {
            return Err(format!("{name} is missing or not renewing in the scrape"));
        }
    }
    let lookups = vault
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/auth/token/lookup-self")
        .count();
    if lookups < n {
        return Err(format!("the double saw {lookups} lookups for {n} tokens"));
    }

    // Idle: nothing scrapes, nothing renews (TTL 1 h).
    std::thread::sleep(Duration::from_millis(500));
    row.idle = proc_status(pid)?;
    let before = cpu_ticks(pid)?;
    let t = Instant::now();
    std::thread::sleep(o.idle_for);
    let used = cpu_ticks(pid)?.saturating_sub(before);
    row.idle_cpu_percent = used as f64 / ticks / t.elapsed().as_secs_f64() * 100.0;
    eprintln!(
        "   idle: RSS {} KiB ({} anon + {} file), {} threads, CPU {:.3} % of a core over {:.0} s ({used} ticks)",
        row.idle.rss_kib,
        row.idle.anon_kib,
        row.idle.file_kib,
        row.idle.threads,
        row.idle_cpu_percent,
        t.elapsed().as_secs_f64()
    );

    // The body every server will serve.
    let body = scrape_text(exporter.addr)?;
    row.body_bytes = body.len();
    row.series = body.lines().filter(|l| !l.starts_with('#')).count();
    let first = format!("vault=\"{}\"", fx.names[0]);
    let token_lines: Vec<&str> = body.lines().filter(|l| l.contains(&first)).collect();
    row.series_per_token = token_lines.len();
    let all_token_bytes: usize = body
        .lines()
        .filter(|l| l.contains("{vault=\"t"))
        .map(|l| l.len() + 1)
        .sum();
    row.bytes_per_token = all_token_bytes / n;

    // The references, from the same body; all four servers measured in interleaved rounds.
    let families = parse_families(&body)?;
    let re_encoded = encode(&families);
    if re_encoded != body.as_bytes() {
        let at = re_encoded
            .iter()
            .zip(body.as_bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(re_encoded.len().min(body.len()));
        return Err(format!(
            "the parsed families do not encode to the scraped body (first difference at byte {at}: {:?})",
            String::from_utf8_lossy(&re_encoded[at.saturating_sub(60)..(at + 60).min(re_encoded.len())])
        ));
    }
    drop(re_encoded);
    let size = body.len();
    let encoding = encoding_server(Arc::new(families), size);
    let prerendered = prerendered_server(Arc::new(body.into_bytes()));
    let no_relay = site_server(n);
    let own_size = get_once(no_relay.addr)
        .map_err(|e| format!("the site server: {e}"))?
        .1
        .len();
    let figures = measure_interleaved(
        &[
            (exporter.addr, size),
            (encoding.addr, size),
            (prerendered.addr, size),
            (no_relay.addr, own_size),
        ],
        o,
    )?;
    let (gzip_bytes, gzip) = gzip_scrapes(exporter.addr, o.scrapes.min(100), size)?;
    row.gzip_bytes = gzip_bytes;
    row.gzip = gzip;
    eprintln!(
        "   exporter, gzip: {} bytes ({:.1} % of {size}), p50 {} p99 {} over {} scrapes",
        row.gzip_bytes,
        row.gzip_bytes as f64 * 100.0 / size as f64,
        ms(row.gzip.median),
        ms(row.gzip.p99),
        row.gzip.scrapes
    );
    row.loaded = proc_status(pid)?;
    [encoding, prerendered, no_relay]
        .into_iter()
        .for_each(RefServer::stop);
    drop(exporter);
    drop(vault);
    let [exporter_figures, encoding_figures, prerendered_figures, no_relay_figures]: [ScrapeFigures;
        4] = figures
        .try_into()
        .map_err(|_| "four servers measured".to_string())?;
    row.exporter = exporter_figures;
    row.encoding = encoding_figures;
    row.prerendered = prerendered_figures;
    row.no_relay = no_relay_figures;
    for (name, f) in [
        ("exporter", &row.exporter),
        ("encoding reference", &row.encoding),
        ("pre-rendered reference", &row.prerendered),
        (
            "exporter's rendering on bare tiny_http (no gate)",
            &row.no_relay,
        ),
    ] {
        eprintln!(
            "   {name}: p50 {} p99 {} over {} scrapes, {:.1} scrapes/s",
            ms(f.median),
            ms(f.p99),
            f.scrapes,
            f.throughput
        );
    }
    eprintln!(
        "   exporter after load: RSS {} KiB ({} anon + {} file), HWM {} KiB",
        row.loaded.rss_kib, row.loaded.anon_kib, row.loaded.file_kib, row.loaded.hwm_kib
    );

    let iterations = if o.smoke {
        3
    } else {
        (200_000 / n).clamp(3, 200)
    };
    row.profile = profile(n, iterations);
    let p = &row.profile;
    eprintln!(
        "   scrape path in-process: direct {} allocations ({} KiB), render {} ({:.2} µs per token; \
         token write_text {}); registry path {} + {} allocations ({} KiB), families_at {}, \
         gather {}, encode {}, render {}",
        p.direct_allocs,
        p.direct_bytes / 1024,
        ms(p.direct_render),
        p.direct_render.as_nanos() as f64 / n as f64 / 1000.0,
        ms(p.write_text),
        p.gather_allocs,
        p.encode_allocs,
        p.registry_bytes / 1024,
        ms(p.families_at),
        ms(p.gather),
        ms(p.encode),
        ms(p.registry_render),
    );
    Ok(row)
}

// ---------------------------------------------------------------------------------------
// Renewal timing accuracy
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Accuracy {
    tokens: usize,
    ttl: u64,
    renewed: usize,
    /// Renewal time minus announced time, seconds, sorted.
    errors: Vec<f64>,
    spread: f64,
}

fn next_renewals(text: &str) -> HashMap<String, f64> {
    let prefix = "vault_token_next_renewal_timestamp_seconds{vault=\"";
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (name, rest) = rest.split_once('"')?;
            let value = rest.rsplit_once(' ')?.1.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect()
}

fn renewal_accuracy(o: &Options, bin: &Path) -> Result<Accuracy, String> {
    let (n, ttl) = (o.accuracy_tokens, o.accuracy_ttl);
    eprintln!("== renewal timing: {n} tokens of TTL {ttl} s, renewals due together");
    let vault = VaultDouble::start();
    let fx = fixture("accuracy", n, &vault.url(), Some(&vault), ttl)?;
    let exporter = Exporter::spawn(bin, &fx.config)?;
    let (_, text) = exporter.all_renewing(n, Duration::from_secs(30 + n as u64 / 100))?;
    let announced = next_renewals(&text);
    if announced.len() != n {
        return Err(format!(
            "{} of {n} tokens announce a next renewal",
            announced.len()
        ));
    }
    let first_due = announced.values().cloned().fold(f64::INFINITY, f64::min);
    let last_due = announced
        .values()
        .cloned()
        .fold(f64::NEG_INFINITY, f64::max);
    if unix_now() >= first_due {
        eprintln!(
            "   warning: the first renewal fell due before all tokens were looked up; use a longer --accuracy-ttl"
        );
    }
    // Wait for every first renewal (or give up 10 s after the last was due).
    let give_up = last_due + 10.0;
    let mut firsts: HashMap<String, f64> = HashMap::new();
    loop {
        for r in vault.requests() {
            if r.path != "/v1/auth/token/renew-self" {
                continue;
            }
            let Some(name) = r.token.as_ref().and_then(|t| fx.by_token.get(t)) else {
                continue;
            };
            let at =
                r.at.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
            let e = firsts.entry(name.clone()).or_insert(at);
            if at < *e {
                *e = at;
            }
        }
        if firsts.len() == n || unix_now() > give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The renewal must have been answered by a success that the exporter counted.
    let after = scrape_text(exporter.addr)?;
    let failures = after
        .lines()
        .filter(|l| {
            l.starts_with("vault_token_renewals_total{")
                && l.contains("result=\"failure\"")
                && !l.ends_with(" 0")
        })
        .count();
    drop(exporter);
    let mut errors: Vec<f64> = firsts
        .iter()
        .map(|(name, at)| at - announced[name])
        .collect();
    errors.sort_by(|a, b| a.total_cmp(b));
    let acc = Accuracy {
        tokens: n,
        ttl,
        renewed: firsts.len(),
        errors,
        spread: last_due - first_due,
    };
    if acc.renewed < n {
        let missing: Vec<&String> = fx
            .names
            .iter()
            .filter(|t| !firsts.contains_key(*t))
            .take(5)
            .collect();
        return Err(format!(
            "only {} of {n} tokens were renewed by 10 s after their announced time (missing e.g. {missing:?})",
            acc.renewed
        ));
    }
    if failures > 0 {
        return Err(format!("{failures} tokens counted failed renewals"));
    }
    Ok(acc)
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

fn print_tables(rows: &[Row], acc: Option<&Accuracy>, o: &Options) {
    println!("\n### vault-token-exporter benchmark\n");
    println!(
        "Machine: {}. {}",
        machine(),
        if o.smoke {
            "Smoke run (short windows, figures indicative only)."
        } else {
            ""
        }
    );
    println!();
    println!("| N tokens | series (per token) | scrape bytes (per token) | RSS idle (anon + file) | RSS after load (anon + file) / HWM | threads | idle CPU ({} s) | first complete scrape: Vault up / every Vault down | all tokens looked up |", o.idle_for.as_secs());
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} ({}) | {} ({}) | {} ({} + {}) | {} ({} + {}) / {} | {} | {:.3} % | {} / {} | {} |",
            r.n,
            r.series,
            r.series_per_token,
            r.body_bytes,
            r.bytes_per_token,
            mib(r.idle.rss_kib),
            mib(r.idle.anon_kib),
            mib(r.idle.file_kib),
            mib(r.loaded.rss_kib),
            mib(r.loaded.anon_kib),
            mib(r.loaded.file_kib),
            mib(r.loaded.hwm_kib),
            r.idle.threads,
            r.idle_cpu_percent,
            ms(r.first_scrape),
            ms(r.first_scrape_down),
            ms(r.all_renewing),
        );
    }
    println!();
    println!(
        "Scrapes: latency median / p99 on one kept-alive connection ({} scrapes or fewer for large N), throughput with {} kept-alive clients for {} s. \
         References (tiny_http, TCP_NODELAY, {HANDLERS} handler threads like the exporter): encoding = the exporter's body parsed once into \
         metric families, encoded by TextEncoder per request; pre-rendered = the exporter's body as bytes; no-gate = the exporter's own \
         rendering (Site::for_collectors over N synthetic tokens) on bare tiny_http, without the gate.\n",
        o.scrapes,
        o.clients,
        o.throughput_for.as_secs_f64()
    );
    println!("| N tokens | exporter p50 / p99 | encoding ref p50 / p99 | pre-rendered ref p50 / p99 | no-gate p50 / p99 | exporter scrapes/s | encoding ref scrapes/s | pre-rendered ref scrapes/s | no-gate scrapes/s | throughput exporter/encoding | p99 exporter/encoding | throughput / p99 exporter/pre-rendered (≥ 0.8 / ≤ 1.5) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "| {} | {} / {} | {} / {} | {} / {} | {} / {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} / {:.2} |",
            r.n,
            ms(r.exporter.median),
            ms(r.exporter.p99),
            ms(r.encoding.median),
            ms(r.encoding.p99),
            ms(r.prerendered.median),
            ms(r.prerendered.p99),
            ms(r.no_relay.median),
            ms(r.no_relay.p99),
            r.exporter.throughput,
            r.encoding.throughput,
            r.prerendered.throughput,
            r.no_relay.throughput,
            ratio(r.exporter.throughput, r.encoding.throughput),
            ratio(r.exporter.p99.as_secs_f64(), r.encoding.p99.as_secs_f64()),
            ratio(r.exporter.throughput, r.prerendered.throughput),
            ratio(r.exporter.p99.as_secs_f64(), r.prerendered.p99.as_secs_f64()),
        );
    }
    println!();
    println!("gzip (`Accept-Encoding: gzip`, flate2 level 1) on one kept-alive connection:\n");
    println!("| N tokens | plain bytes | gzip bytes (share) | plain p50 / p99 | gzip p50 / p99 |");
    println!("|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} ({:.1} %) | {} / {} | {} / {} |",
            r.n,
            r.body_bytes,
            r.gzip_bytes,
            r.gzip_bytes as f64 * 100.0 / r.body_bytes.max(1) as f64,
            ms(r.exporter.median),
            ms(r.exporter.p99),
            ms(r.gzip.median),
            ms(r.gzip.p99),
        );
    }
    println!();
    println!(
        "Scrape path in-process (one thread, counting allocator), per scrape: the exporter's \
         direct text path, after one token changed (its families are written again) and with \
         nothing changed (the kept text is shared, only the TTLs are written), against the \
         registry path (Registry::gather, then TextEncoder).\n"
    );
    println!("| N tokens | direct, a token changed: allocations / bytes | direct, a token changed: render (per token) | direct, nothing changed: render | registry: allocations (gather + encode) / bytes | families_at | Registry::gather | TextEncoder | registry: render (per token) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let p = &r.profile;
        let per_token = |d: Duration| d.as_nanos() as f64 / r.n as f64 / 1000.0;
        println!(
            "| {} | {} / {} KiB | {} ({:.2} µs) | {} | {} ({} + {}) / {} KiB | {} | {} | {} | {} ({:.2} µs) |",
            r.n,
            p.direct_allocs,
            p.direct_bytes / 1024,
            ms(p.direct_render),
            per_token(p.direct_render),
            ms(p.kept_render),
            p.gather_allocs + p.encode_allocs,
            p.gather_allocs,
            p.encode_allocs,
            p.registry_bytes / 1024,
            ms(p.families_at),
            ms(p.gather),
            ms(p.encode),
            ms(p.registry_render),
            per_token(p.registry_render),
        );
    }
    if let Some(a) = acc {
        let pick = |p: f64| {
            let i = ((p * a.errors.len() as f64).ceil() as usize).clamp(1, a.errors.len()) - 1;
            a.errors[i]
        };
        let worst = a.errors.iter().map(|e| e.abs()).fold(0.0, f64::max);
        let outside = a.errors.iter().filter(|e| e.abs() > 1.0).count();
        println!();
        println!(
            "Renewal timing: {} tokens of TTL {} s, announced renewals spread over {:.1} s; renewal time (seen by the double) minus announced time:\n",
            a.tokens, a.ttl, a.spread
        );
        println!("| renewed | min | median | p99 | max | worst abs | outside ±1 s |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} / {} | {:+.3} s | {:+.3} s | {:+.3} s | {:+.3} s | {:.3} s | {} |",
            a.renewed,
            a.tokens,
            a.errors[0],
            pick(0.5),
            pick(0.99),
            a.errors[a.errors.len() - 1],
            worst,
            outside
        );
    }
}

fn check_targets(rows: &[Row], acc: Option<&Accuracy>) -> Vec<String> {
    let mut notes = Vec::new();
    let mut target = |ok: bool, what: String| {
        notes.push(format!("{} {what}", if ok { "met:   " } else { "MISSED:" }));
    };
    for r in rows {
        let thr = r.exporter.throughput / r.prerendered.throughput;
        let p99 = r.exporter.p99.as_secs_f64() / r.prerendered.p99.as_secs_f64();
        if r.n == 100 || r.n == 1000 {
            target(
                thr >= 0.8,
                format!(
                    "N={}: throughput {thr:.2}x the pre-rendered tiny_http reference (>= 0.8)",
                    r.n
                ),
            );
            target(
                p99 <= 1.5,
                format!(
                    "N={}: p99 {p99:.2}x the pre-rendered tiny_http reference (<= 1.5)",
                    r.n
                ),
            );
        }
        let rss = r.idle.rss_kib.max(r.loaded.rss_kib);
        let detail = |s: &ProcStatus| {
            format!(
                "{} ({} private + {} binary and library pages)",
                mib(s.rss_kib),
                mib(s.anon_kib),
                mib(s.file_kib)
            )
        };
        let rss_note = format!("idle {}, after load {}", detail(&r.idle), detail(&r.loaded));
        if r.n == 100 {
            target(rss <= 8 * 1024, format!("N=100: RSS {rss_note} (<= 8 MiB)"));
            target(
                r.first_scrape_down <= Duration::from_millis(50),
                format!(
                    "N=100: first complete scrape with every Vault down {} (<= 50 ms)",
                    ms(r.first_scrape_down)
                ),
            );
        }
        if r.n == 1000 {
            target(
                rss <= 64 * 1024,
                format!("N=1000: RSS {rss_note} (<= 64 MiB)"),
            );
            target(
                r.idle_cpu_percent <= 0.1,
                format!("N=1000: idle CPU {:.3} % (<= 0.1 %)", r.idle_cpu_percent),
            );
        }
        if r.n == 10000 {
            target(
                r.exporter.p99 < Duration::from_secs(2),
                format!("N=10000: scrape p99 {} (< 2 s)", ms(r.exporter.p99)),
            );
        }
    }
    if let Some(a) = acc {
        let worst = a.errors.iter().map(|e| e.abs()).fold(0.0, f64::max);
        target(
            worst <= 1.0,
            format!("renewal timing: worst {worst:.3} s from the announced time (<= 1 s)"),
        );
    }
    notes
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

/// The exporter binary: `--exporter`, else built next to this one.
fn exporter_binary(o: &Options) -> Result<PathBuf, String> {
    if let Some(path) = &o.exporter {
        return Ok(path.clone());
    }
    let release = !cfg!(debug_assertions);
    if !release {
        eprintln!(
            "warning: a debug build of the bench; run it with --release for meaningful figures"
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--bin",
        "vault-token-exporter",
        "--manifest-path",
    ])
    .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
    if release {
        cmd.arg("--release");
    }
    eprintln!("building the exporter ...");
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build of the exporter failed".into());
    }
    let dir = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no directory for the bench binary")?;
    let bin = dir.join("vault-token-exporter");
    if !bin.is_file() {
        return Err(format!(
            "{} not found (give --exporter PATH)",
            bin.display()
        ));
    }
    Ok(bin)
}

fn run() -> Result<(), String> {
    let o = Options::parse()?;
    let bin = exporter_binary(&o)?;
    if let Some((n, secs)) = o.hold {
        let vault = VaultDouble::start();
        let fx = fixture("hold", n, &vault.url(), Some(&vault), 3600)?;
        let exporter = Exporter::spawn(&bin, &fx.config)?;
        exporter.all_renewing(n, Duration::from_secs(60 + n as u64 / 100))?;
        println!("pid {} listening on {}", exporter.pid(), exporter.addr);
        std::thread::sleep(secs);
        return Ok(());
    }
    let ticks = clock_ticks_per_second();
    eprintln!("exporter: {}\nmachine: {}", bin.display(), machine());
    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &o.tokens {
        rows.push(run_n(n, &o, &bin, ticks).map_err(|e| format!("N={n}: {e}"))?);
    }
    let acc = if o.skip_accuracy {
        None
    } else {
        Some(renewal_accuracy(&o, &bin).map_err(|e| format!("renewal timing: {e}"))?)
    };
    print_tables(&rows, acc.as_ref(), &o);
    println!();
    for note in check_targets(&rows, acc.as_ref()) {
        println!("- {note}");
    }
    eprintln!("bench finished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
