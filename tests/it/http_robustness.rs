//! The HTTP server under abuse, black-box: many concurrent scrapes, clients that never
//! send a request (or trickle it, or never read), a 1 MB request header, requests that
//! announce a body (one used to abort the process), crowds larger than the slot limit, a
//! panicking handler, a flood of connections. Other scrapes keep answering in time and the
//! thread count stays bounded (`/proc/PID/status`, `Threads:`).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{temp_dir, Exporter};

/// Client connections the exporter serves at once (`http::MAX_CONNECTIONS`), a thread
/// each (evicted ones end at their next read or write).
const MAX_CONNECTIONS: usize = 64;
/// Hostile connections in the crowd tests: more than the slots, so eviction must work.
const CROWD: usize = 120;

/// The tests measure latency: one at a time, so they do not load each other.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn start(name: &str) -> Exporter {
    start_with_env(name, &[])
}

fn start_with_env(name: &str, env: &[(&str, &str)]) -> Exporter {
    let dir = temp_dir(name);
    let mut yaml = String::from("vaults:\n");
    for i in 0..5 {
        let token = dir.join(format!("token-{i}"));
        common::write_token(&token, &format!("hvs.robustness-{i}"));
        yaml.push_str(&common::file_entry(
            &format!("v{i}"),
            "http://127.0.0.1:9",
            &token,
            "",
        ));
    }
    let config = dir.join("config.yml");
    std::fs::write(&config, yaml).unwrap();
    Exporter::start_in(dir, &[format!("--config.file={}", config.display())], env)
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/PID/status")
}

/// Reads one HTTP/1.1 response (Content-Length or chunked): (status, body).
fn read_response(reader: &mut impl BufRead) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse::<usize>().ok();
        }
        if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok((status, body))
}

/// One scrape on a fresh connection: how long it took; panics unless it is a 200 with
/// metrics in it. A connection that fails is tried once more: under pressure, one whose
/// client has not sent its request within the grace may be evicted (on a loaded test
/// machine a client thread can be that slow), and clients retry a refused connection.
fn timed_scrape(addr: SocketAddr) -> Duration {
    let started = Instant::now();
    let scrape = || -> std::io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
        read_response(&mut BufReader::new(stream))
    };
    let (status, body) = scrape().or_else(|_| scrape()).expect("a scrape answer");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("vault_token_state{vault=\"v4\""));
    started.elapsed()
}

#[test]
fn many_concurrent_scrapes_all_answer() {
    let _serial = serial();
    let exporter = start("http-concurrent");
    let addr = exporter.addr;
    let started = Instant::now();
    // 100 clients scraping on fresh connections and 20 on kept-alive ones, all at once.
    let fresh: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || (0..5).map(|_| timed_scrape(addr)).max().unwrap_or_default())
        })
        .collect();
    let kept_alive: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let connect = || {
                    let stream = TcpStream::connect(addr).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(20)))
                        .unwrap();
                    (stream.try_clone().unwrap(), BufReader::new(stream))
                };
                let (mut writer, mut reader) = connect();
                let mut slowest = Duration::ZERO;
                for _ in 0..10 {
                    let t = Instant::now();
                    let request = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
                    writer.write_all(request).unwrap();
                    let (status, body) = match read_response(&mut reader) {
                        Ok(answer) => answer,
                        // Under pressure a kept-alive connection may be closed between
                        // requests; clients (Go's, Prometheus') retry on a new one.
                        Err(_) => {
                            (writer, reader) = connect();
                            writer.write_all(request).unwrap();
                            read_response(&mut reader).unwrap()
                        }
                    };
                    assert_eq!(status, 200);
                    assert!(!body.is_empty());
                    slowest = slowest.max(t.elapsed());
                }
                slowest
            })
        })
        .collect();
    let slowest = fresh
        .into_iter()
        .chain(kept_alive)
        .map(|t| t.join().expect("a scraper failed"))
        .max()
        .unwrap();
    let total = started.elapsed();
    println!("700 scrapes from 120 concurrent clients in {total:?}; slowest {slowest:?}");
    assert!(
        slowest < Duration::from_secs(5),
        "a scrape took {slowest:?}"
    );
    assert!(timed_scrape(addr) < Duration::from_secs(1));
}

#[test]
fn pipelined_and_head_requests_on_a_kept_alive_connection() {
    let _serial = serial();
    let exporter = start("http-pipeline");
    let stream = TcpStream::connect(exporter.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(
            b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    let answers: Vec<(u16, Vec<u8>)> = (0..3)
        .map(|_| read_response(&mut reader).unwrap())
        .collect();
    assert_eq!(answers[0], (200, b"Healthy\n".to_vec()));
    assert_eq!(answers[1].0, 404);
    assert_eq!(answers[2].0, 200);
    assert!(String::from_utf8_lossy(&answers[2].1).contains("vault_token_renewals_total"));
    writer
        .write_all(b"HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert!(
        rest.ends_with("\r\n\r\n"),
        "a HEAD answer has no body: {rest:?}"
    );
}

#[test]
fn silent_and_trickling_clients_do_not_delay_scrapes_and_are_cut_off() {
    let _serial = serial();
    let exporter = start("http-slowloris");
    let addr = exporter.addr;
    // Ten clients that connect and never send a request line.
    let silent: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Ten that send a request head one byte every 200 ms, forever.
    let stop = Arc::new(AtomicBool::new(false));
    let trickling: Vec<_> = (0..10)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                let started = Instant::now();
                let head = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Padding: ";
                for b in head.iter().chain(std::iter::repeat(&b'a')) {
                    if stop.load(Ordering::Relaxed) || stream.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                started.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let slowest = (0..20).map(|_| timed_scrape(addr)).max().unwrap();
    println!("slowest of 20 scrapes beside 20 slow-loris clients: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?}"
    );

    // The request-head deadline (10 s) closes them all.
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a silent client got an answer");
    }
    let guard = std::thread::spawn({
        let stop = stop.clone();
        move || {
            std::thread::sleep(Duration::from_secs(20));
            stop.store(true, Ordering::Relaxed);
        }
    });
    for t in trickling {
        let lasted = t.join().unwrap();
        assert!(
            lasted < Duration::from_secs(14),
            "a trickling client lasted {lasted:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(guard);
    assert!(timed_scrape(addr) < Duration::from_secs(1));
}

#[test]
fn a_one_megabyte_request_header_gets_431_and_others_still_answer() {
    let _serial = serial();
    let exporter = start("http-big-header");
    let addr = exporter.addr;
    let big = std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut request = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
        request.resize(request.len() + 1_000_000, b'a');
        request.extend_from_slice(b"\r\n\r\n");
        // The server stops reading at its limit: the write may fail part way.
        let _ = writer.write_all(&request);
        let mut answer = Vec::new();
        let _ = BufReader::new(stream).read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    });
    for _ in 0..10 {
        assert!(timed_scrape(addr) < Duration::from_secs(1));
    }
    let answer = big.join().unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "a 1 MB header must be refused with 431: {answer:?}"
    );
    // Many of them at once do not hurt either.
    let many: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                let mut header = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
                header.resize(1_000_000, b'b');
                let _ = stream.write_all(&header);
            })
        })
        .collect();
    assert!(timed_scrape(addr) < Duration::from_secs(2));
    for t in many {
        t.join().unwrap();
    }
    assert!(timed_scrape(addr) < Duration::from_secs(1));
}

#[test]
fn the_thread_count_stays_bounded_under_a_connection_flood() {
    let _serial = serial();
    let exporter = start("http-flood");
    let (addr, pid) = (exporter.addr, exporter.pid());
    timed_scrape(addr);
    std::thread::sleep(Duration::from_millis(300));
    let base = threads(pid);
    // A thread per slot, plus evicted connections' threads until their next read or write.
    let bound = base + 2 * MAX_CONNECTIONS + 8;

    let mut flood = Vec::new();
    let mut peak = base;
    for i in 0..400 {
        let mut stream = TcpStream::connect(addr).unwrap();
        match i % 4 {
            0 => {}
            1 => stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
                .unwrap(),
            // Asks for many scrapes and never reads them.
            2 => stream
                .write_all(&b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50))
                .unwrap(),
            _ => stream
                .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap(),
        }
        flood.push(stream);
        if i % 20 == 0 {
            peak = peak.max(threads(pid));
        }
    }
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        peak = peak.max(threads(pid));
        slowest = slowest.max(timed_scrape(addr));
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "400 hostile connections: threads {base} before, peak {peak} (bound {bound}); slowest scrape meanwhile {slowest:?}"
    );
    assert!(peak <= bound, "{peak} threads, more than {bound}");
    // Every useless connection (silent, half-sent, idle, stalled, pipelining) can be
    // evicted for a waiting client: a scrape never waits a second.
    assert!(
        slowest < Duration::from_secs(1),
        "a scrape took {slowest:?} during the flood"
    );

    drop(flood);
    let started = Instant::now();
    let mut now = threads(pid);
    while now > base + 4 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
        now = threads(pid);
    }
    println!(
        "threads {now} {:?} after the flood ended",
        started.elapsed()
    );
    assert!(
        now <= base + 4,
        "{now} threads left after the flood (base {base})"
    );
    assert!(timed_scrape(addr) < Duration::from_secs(1));
}

/// CPU time the process used so far (utime + stime), in seconds (100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[test]
fn stuck_and_silent_clients_cost_no_cpu() {
    let _serial = serial();
    let exporter = start("http-idle-cpu");
    let (addr, pid) = (exporter.addr, exporter.pid());
    let cpu_share = |window: Duration| {
        let (cpu, started) = (cpu_seconds(pid), Instant::now());
        std::thread::sleep(window);
        (cpu_seconds(pid) - cpu) / started.elapsed().as_secs_f64()
    };
    // What the exporter spends anyway (its workers retry an unreachable Vault).
    std::thread::sleep(Duration::from_secs(1));
    let baseline = cpu_share(Duration::from_secs(3));
    // Clients that ask for many scrapes in one go and never read: their answers fill
    // the socket buffers and the next requests wait. Plus silent and half-sent ones.
    let mut hostile = Vec::new();
    for _ in 0..10 {
        // A small receive buffer, so the socket is full after a few answers.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .write_all(&b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(500))
            .unwrap();
        hostile.push(stream);
    }
    for i in 0..20 {
        let mut stream = TcpStream::connect(addr).unwrap();
        if i % 2 == 0 {
            stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        }
        hostile.push(stream);
    }
    // Answering until the socket buffers are full takes a few seconds of CPU; then the
    // stuck connections must cost nothing (a relay spinning on a ready socket would).
    let started = Instant::now();
    while cpu_share(Duration::from_millis(500)) > baseline + 0.05 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the exporter keeps busy with stuck clients"
        );
    }
    println!("answers to stuck clients took {:?}", started.elapsed());
    let share = cpu_share(Duration::from_secs(3));
    println!(
        "CPU: {:.1} % of a core without clients, {:.1} % with 30 stuck or silent ones",
        baseline * 100.0,
        share * 100.0
    );
    assert!(
        share < baseline + 0.05,
        "{:.1} % of a core with stuck clients, {:.1} % without",
        share * 100.0,
        baseline * 100.0
    );
    assert!(timed_scrape(addr) < Duration::from_secs(1));
}

/// Sends `request` on a fresh connection: the status answered (`None`: closed without
/// one), whether the server closed the connection after it, and how long that took.
fn exchange(addr: SocketAddr, request: &[u8]) -> (Option<u16>, bool, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut reader = BufReader::new(stream);
    let status = read_response(&mut reader).ok().map(|(status, _)| status);
    let mut rest = [0u8; 1];
    let closed = matches!(reader.read(&mut rest), Ok(0));
    (status, closed, started.elapsed())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        !s.lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

#[test]
fn requests_that_announce_a_body_are_refused_at_once_and_closed() {
    let _serial = serial();
    let exporter = start("http-body");
    let (addr, pid) = (exporter.addr, exporter.pid());
    // tiny_http 0.12 drained an unread body into `vec![0; Content-Length]`: the first
    // value aborted the process, the second killed a handler thread (four: deaf), the
    // third held a handler until the idle timeout. Any method, any path, before auth.
    for length in ["1000000000000000", "18446744073709551615", "100000", "5"] {
        for (method, path) in [("GET", "/metrics"), ("POST", "/nope"), ("HEAD", "/")] {
            let request =
                format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n");
            let (status, closed, took) = exchange(addr, request.as_bytes());
            assert_eq!(
                status,
                Some(413),
                "{method} {path} Content-Length: {length}"
            );
            assert!(
                closed,
                "{method} {path} Content-Length: {length}: left open"
            );
            assert!(
                took < Duration::from_secs(1),
                "{length}: refused after {took:?}"
            );
        }
    }
    // `curl -X GET -d hello`, and a chunked body.
    for request in [
        "GET /metrics HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\n\r\nhello",
        "GET /metrics HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let (status, closed, took) = exchange(addr, request.as_bytes());
        assert_eq!(status, Some(413), "{request:?}");
        assert!(closed && took < Duration::from_secs(1), "{request:?}: {took:?}");
    }
    // Many at once, left open: more than any pool of handlers.
    let held: Vec<TcpStream> = (0..16)
        .map(|i| {
            let mut stream = TcpStream::connect(addr).unwrap();
            let length = ["18446744073709551615", "100000"][i % 2];
            stream
                .write_all(
                    format!("GET /metrics HTTP/1.1\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
                )
                .unwrap();
            stream
        })
        .collect();
    for _ in 0..5 {
        let took = timed_scrape(addr);
        assert!(took < Duration::from_secs(1), "a scrape took {took:?}");
    }
    drop(held);
    assert!(alive(pid), "the exporter died");
    assert!(timed_scrape(addr) < Duration::from_secs(1));
}

/// A crowd of `CROWD` connections of one kind; the trickler thread stops with `stop`.
fn crowd(addr: SocketAddr, kind: &str, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let mut streams: Vec<TcpStream> = Vec::new();
    for _ in 0..CROWD {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // Non-reading clients: a small window, so the server's writes stall soon.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        let _ = match kind {
            "silent" => Ok(()),
            "sent G" => stream.write_all(b"G"),
            "half a head" => stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n"),
            "not reading" => {
                stream.write_all(&b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(50))
            }
            "trickling" => Ok(()),
            other => panic!("unknown crowd {other}"),
        };
        streams.push(stream);
    }
    let stop = stop.clone();
    let trickle = kind == "trickling";
    // Holds the connections open (and trickles, one byte per connection every 100 ms).
    vec![std::thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Padding: ";
        let started = Instant::now();
        for round in 0.. {
            if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(30) {
                break;
            }
            if trickle {
                let byte = head.get(round).copied().unwrap_or(b'a');
                for stream in &mut streams {
                    let _ = stream.write_all(&[byte]);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })]
}

#[test]
fn crowds_above_the_slot_limit_never_delay_a_scrape_past_a_second() {
    let _serial = serial();
    let exporter = start("http-crowds");
    let addr = exporter.addr;
    for kind in [
        "silent",
        "sent G",
        "half a head",
        "trickling",
        "not reading",
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let holders = crowd(addr, kind, &stop);
        std::thread::sleep(Duration::from_millis(500));
        let slowest = (0..10)
            .map(|_| {
                let took = timed_scrape(addr);
                std::thread::sleep(Duration::from_millis(50));
                took
            })
            .max()
            .unwrap();
        println!("{CROWD} connections {kind}: slowest of 10 scrapes {slowest:?}");
        assert!(
            slowest < Duration::from_millis(900),
            "{CROWD} connections {kind}: a scrape took {slowest:?}"
        );
        stop.store(true, Ordering::Relaxed);
        for holder in holders {
            holder.join().unwrap();
        }
    }
}

#[test]
fn a_panicking_handler_costs_its_connection_only() {
    let _serial = serial();
    let exporter = start_with_env("http-panic", &[("VAULT_TOKEN_EXPORTER_TEST_PANIC", "1")]);
    let (addr, pid) = (exporter.addr, exporter.pid());
    // More panics than any pool of handler threads, then scrapes.
    for _ in 0..12 {
        let (status, closed, _) = exchange(addr, b"GET /-/panic HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(status, None, "a panicking handler answered");
        assert!(closed);
    }
    for _ in 0..5 {
        assert!(timed_scrape(addr) < Duration::from_secs(1));
    }
    assert!(alive(pid));
    let log = exporter.wait_for_log(Duration::from_secs(5), "an HTTP handler panicked");
    assert!(log.contains("a test asked for a panic"), "{log}");
}
