//! The front door: our own accept loop in front of tiny_http, for TLS and for limits.
//!
//! Why not tiny_http alone: tiny_http 0.12 accepts every connection and gives each its
//! own thread for as long as the client keeps it open, so a thousand idle or trickling
//! clients cost a thousand threads; it reads request heads without a size limit or a
//! deadline; and its TLS (rustls 0.20) cannot ask for client certificates and runs
//! each handshake on its single accept thread, where one slow client stalls everyone.
//!
//! So the exporter accepts connections itself, at once, and gives each a slot: a
//! connection thread, at most [`MAX_CONNECTIONS`] at a time. That thread does the TLS
//! handshake with rustls 0.23 when TLS is on (off the accept path, within
//! [`HANDSHAKE_TIMEOUT`]), enforces the request-head deadline and size limit, and relays
//! the plaintext, with poll(2), to the tiny_http server that answers requests, one
//! request at a time per connection (a pipelining client cannot queue unbounded work).
//! That server listens on a Unix socket that has no name: it is bound in a fresh 0700
//! directory, opened with `O_PATH`, then unlinked, and reached as `/proc/self/fd/N`.
//! Nothing else (no other user, no other process in the network namespace, unlike a
//! loopback port or an abstract socket) can reach it and skip the TLS client-certificate
//! check or the connection limit, and nothing is left on disk however the process ends.
//!
//! With every slot taken, new clients wait (a descriptor each, no thread), newest first,
//! for at most [`REQUEST_HEAD_TIMEOUT`], which counts from the connect: the first request
//! must be in by then. Meanwhile connections make room: one idle between requests, or
//! whose client stopped reading, is closed; one that pipelines, or held its slot for
//! [`FAIR_SHARE`], closes itself after its current answer. So hostile clients cost at
//! most a slot for a few seconds each, and a scrape arriving in a flood of them is
//! served next.
//!
//! Plain HTTP goes through the same door: the limits matter most there, and the relay
//! costs one local copy through a Unix socket (well under a millisecond per megabyte).
//! Responses are read from tiny_http eagerly (up to [`MAX_BUFFERED_RESPONSE`]) so a
//! client that reads slowly holds no handler thread.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

/// Client connections served at once; each costs at most two threads (ours and
/// tiny_http's).
pub const MAX_CONNECTIONS: usize = 64;
/// A TLS handshake must complete within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A new connection must deliver its first request head within this; so must every
/// request head once its first byte arrived (slow-loris).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with nothing to do is closed after this (longer than the
/// usual scrape interval, so Prometheus keeps its connection).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A client that takes none of its response for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted (request line and headers); larger gets 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// Response bytes buffered per connection for a slow client.
pub const MAX_BUFFERED_RESPONSE: usize = 16 * 1024 * 1024;
/// When every slot is taken and a client waits, a connection idle this long (between
/// requests, nothing in flight) gives its slot up. Real clients send their request as
/// soon as they connect; this spares them.
const EVICTABLE_AFTER: Duration = Duration::from_millis(250);
/// When every slot is taken and a client waits, a connection whose client took nothing
/// of its response for this long gives its slot up.
const STALLED_AFTER: Duration = Duration::from_secs(1);
/// While clients wait for a slot, a connection that held its slot this long, or that
/// pipelines requests, closes itself between two requests (clients retry an idempotent
/// request on a closed kept-alive connection).
pub const FAIR_SHARE: Duration = Duration::from_secs(2);
/// Clients waiting for a slot right now.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Stack of a connection thread: a poll loop and rustls, which keeps its state on the heap.
const CONNECTION_STACK: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// Milliseconds since the first call: a monotonic clock that fits an atomic.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// `now_ms` of an instant.
fn ms_of(at: Instant) -> u64 {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => now_ms() + ahead.as_millis() as u64,
        None => now_ms().saturating_sub(now.duration_since(at).as_millis() as u64),
    }
}

/// The tiny_http side's socket: a Unix socket without a name, reachable only through
/// this process's descriptor table.
pub struct Internal {
    /// `O_PATH` descriptor of the (unlinked) socket inode; keeps it reachable.
    _inode: std::fs::File,
    path: String,
}

impl Internal {
    /// Binds the listener tiny_http serves on.
    pub fn bind() -> io::Result<(UnixListener, Internal)> {
        let mut bases = Vec::new();
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
            bases.push(std::path::PathBuf::from(dir));
        }
        bases.push(std::env::temp_dir());
        bases.push("/dev/shm".into());
        let mut last_error = io::Error::other("no directory to create it in");
        for base in bases {
            match Self::bind_in(&base) {
                Ok(bound) => return Ok(bound),
                Err(e) => {
                    last_error = io::Error::new(
                        e.kind(),
                        format!("cannot create the internal HTTP socket in {}: {e} (set TMPDIR to a writable directory)", base.display()),
                    )
                }
            }
        }
        Err(last_error)
    }

    fn bind_in(base: &std::path::Path) -> io::Result<(UnixListener, Internal)> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let dir = base.join(format!(
            "vault-token-exporter-{}-{nanos:x}",
            std::process::id()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("http.sock");
        let result = (|| -> io::Result<(UnixListener, std::fs::File)> {
            let listener = UnixListener::bind(&socket)?;
            let inode = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH)
                .open(&socket)?;
            Ok((listener, inode))
        })();
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_dir(&dir);
        let (listener, inode) = result?;
        let internal = Internal {
            path: format!("/proc/self/fd/{}", inode.as_raw_fd()),
            _inode: inode,
        };
        // Prove the nameless socket is reachable before anything relies on it.
        let probe = internal.connect().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e} (connecting through /proc/self/fd; is /proc mounted?)"),
            )
        })?;
        drop(listener.accept()?);
        drop(probe);
        Ok((listener, internal))
    }

    fn connect(&self) -> io::Result<UnixStream> {
        UnixStream::connect(&self.path)
    }
}

/// A connection's slot, seen from the accept loop (to evict it).
struct Slot {
    /// A handle on the client socket, to shut it down.
    socket: TcpStream,
    /// From this time (`now_ms`) on, the connection may be closed to make room for a
    /// waiting client: it sits idle between requests, or its client stopped taking its
    /// response. `u64::MAX`: busy.
    evictable_at_ms: AtomicU64,
}

struct Slots {
    live: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// Frees the slot when the connection thread ends.
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    slot: Arc<Slot>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Slots {
    fn taken(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Closes up to `wanted` connections that sit idle or stalled (longest first) to
    /// make room for clients waiting for a slot.
    fn evict(&self, wanted: usize) {
        let now = now_ms();
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut evictable: Vec<(u64, &Arc<Slot>)> = live
            .values()
            .map(|s| (s.evictable_at_ms.load(Ordering::Relaxed), s))
            .filter(|(at, _)| *at <= now)
            .collect();
        evictable.sort_by_key(|(at, _)| *at);
        for (_, slot) in evictable.into_iter().take(wanted) {
            // Marked busy so the next round does not pick it again while it closes.
            slot.evictable_at_ms.store(u64::MAX, Ordering::Relaxed);
            let _ = slot.socket.shutdown(Shutdown::Both);
        }
    }

    fn register(self: &Arc<Self>, id: u64, socket: TcpStream) -> SlotGuard {
        let slot = Arc::new(Slot {
            socket,
            evictable_at_ms: AtomicU64::new(u64::MAX),
        });
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, slot.clone());
        SlotGuard {
            slots: self.clone(),
            id,
            slot,
        }
    }
}

/// poll(2) on one descriptor: true when `events` (or an error or hang-up) is ready.
fn poll_one(fd: RawFd, events: libc::c_short, timeout: Duration) -> bool {
    let mut fds = [libc::pollfd {
        fd,
        events,
        revents: 0,
    }];
    poll(&mut fds, timeout) > 0
}

fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> i32 {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        // EINTR: the caller loops and recomputes its deadlines.
        0
    } else {
        n
    }
}

/// Accepts connections on `listener` forever, each relayed to `internal`.
///
/// Connections are accepted as soon as they arrive. Beyond [`MAX_CONNECTIONS`] they wait
/// (a descriptor each, no thread) for a slot, newest first: under a flood of clients
/// that never finish a request, the scrape that arrived last is served next rather than
/// after the whole flood; a waiting client makes the connection idle longest give its
/// slot up; and one waiting longer than [`REQUEST_HEAD_TIMEOUT`] (or beyond
/// [`MAX_WAITING`]) is closed.
pub fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    internal: Arc<Internal>,
) -> ! {
    let slots = Arc::new(Slots {
        live: Mutex::default(),
    });
    if let Err(e) = listener.set_nonblocking(true) {
        log::warn!("HTTP listener: {e}");
    }
    let mut waiting: Vec<(TcpStream, Instant)> = Vec::new();
    let mut next_id = 0u64;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let timeout = if waiting.is_empty() {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(20)
        };
        poll_one(listener.as_raw_fd(), libc::POLLIN, timeout);
        loop {
            match listener.accept() {
                Ok((stream, _)) => waiting.push((stream, Instant::now())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory, most likely: let the process free some.
                    if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        log::error!("cannot accept HTTP connections: {e}");
                        last_error_log = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
        waiting.retain(|(_, since)| since.elapsed() < REQUEST_HEAD_TIMEOUT);
        if waiting.len() > MAX_WAITING {
            waiting.drain(..waiting.len() - MAX_WAITING);
        }
        let mut free = MAX_CONNECTIONS.saturating_sub(slots.taken());
        while free > 0 {
            let Some((stream, accepted)) = waiting.pop() else {
                break;
            };
            free -= 1;
            next_id += 1;
            start_connection(stream, accepted, &slots, next_id, &tls, &internal);
        }
        WAITING.store(waiting.len(), Ordering::Relaxed);
        if !waiting.is_empty() {
            slots.evict(waiting.len());
        }
    }
}

/// Clients waiting for a slot, at most.
pub const MAX_WAITING: usize = 256;

fn start_connection(
    stream: TcpStream,
    accepted: Instant,
    slots: &Arc<Slots>,
    id: u64,
    tls: &Option<Arc<ServerConfig>>,
    internal: &Arc<Internal>,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let handle = match stream.try_clone() {
        Ok(handle) => handle,
        Err(e) => {
            log::warn!("dropping the HTTP connection from {peer}: {e}");
            return;
        }
    };
    let guard = slots.register(id, handle);
    let (tls, internal) = (tls.clone(), internal.clone());
    let spawned = std::thread::Builder::new()
        .name("http-conn".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            let slot = guard.slot.clone();
            Connection::new(stream, accepted, &slot, &internal).run(tls);
            drop(guard);
        });
    if let Err(e) = spawned {
        log::warn!("dropping the HTTP connection from {peer}: cannot start its thread: {e}");
    }
}

/// Where the current request head stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Head {
    /// Between requests (or before the first one).
    Waiting,
    /// Inside a request head that began at `since`; `matched` bytes of CRLFCRLF seen.
    Reading {
        since: Instant,
        len: usize,
        matched: u8,
    },
}

/// One client connection, relayed to the internal tiny_http server.
struct Connection<'a> {
    client: TcpStream,
    slot: &'a Slot,
    internal_path: &'a Internal,
    /// Connected on the first request byte, so idle clients cost tiny_http nothing.
    internal: Option<UnixStream>,
    tls: Option<ServerConnection>,
    accepted: Instant,
    /// When this connection got its slot.
    started: Instant,
    /// Plaintext from the client, not yet written to tiny_http.
    inbound: Vec<u8>,
    /// Plaintext from tiny_http, not yet written to the client (or handed to rustls).
    outbound: Vec<u8>,
    out_pos: usize,
    head: Head,
    heads_done: u64,
    /// The request being forwarded to tiny_http.
    forwarding: Forwarding,
    /// The answers tiny_http owes.
    responses: Responses,
    /// tiny_http sent something on this connection.
    answered_any: bool,
    client_eof: bool,
    internal_eof: bool,
    internal_write_shut: bool,
    /// A limit was hit: stop reading, deliver what is queued, close.
    closing: bool,
    last_active: Instant,
    last_out_progress: Instant,
}

/// Why a TLS handshake did not complete.
enum Handshake {
    /// rustls refused the client (certificate, versions, protocol).
    Refused(String),
    /// The client went away, stayed silent, or spoke plain HTTP.
    Failed(String),
}

impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handshake::Refused(why) | Handshake::Failed(why) => f.write_str(why),
        }
    }
}

enum Step {
    Continue,
    Close(&'static str),
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";
/// What Go's net/http answers plain HTTP on a TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n";

impl<'a> Connection<'a> {
    /// `accepted`: when the client connected (it may have waited for its slot since).
    fn new(client: TcpStream, accepted: Instant, slot: &'a Slot, internal: &'a Internal) -> Self {
        let now = Instant::now();
        Connection {
            client,
            slot,
            internal_path: internal,
            internal: None,
            tls: None,
            accepted,
            started: now,
            inbound: Vec::new(),
            outbound: Vec::new(),
            out_pos: 0,
            head: Head::Waiting,
            heads_done: 0,
            forwarding: Forwarding::default(),
            responses: Responses::default(),
            answered_any: false,
            client_eof: false,
            internal_eof: false,
            internal_write_shut: false,
            closing: false,
            last_active: now,
            last_out_progress: now,
        }
    }

    fn run(mut self, tls: Option<Arc<ServerConfig>>) {
        if let Err(e) = self.client.set_nonblocking(true) {
            log::debug!("HTTP connection: {e}");
            return;
        }
        if let Some(config) = tls {
            match ServerConnection::new(config) {
                Ok(conn) => self.tls = Some(conn),
                Err(e) => {
                    log::warn!("cannot start a TLS session: {e}");
                    return;
                }
            }
            if let Err(why) = self.handshake() {
                // A refused certificate or protocol is worth an operator's eye; clients
                // that go away or never speak (scanners, probes) are not.
                let level = match why {
                    Handshake::Refused(_) => log::Level::Info,
                    Handshake::Failed(_) => log::Level::Debug,
                };
                log::log!(level, "TLS handshake with {} failed: {why}", self.peer());
                return;
            }
            // The request clock starts now; the request may already be in rustls.
            self.accepted = Instant::now();
            if let Step::Close(why) = self.drain_plaintext() {
                log::trace!("HTTP connection from {} closed: {why}", self.peer());
                return self.finish();
            }
        }
        let why = loop {
            match self.step() {
                Step::Continue => {}
                Step::Close(why) => break why,
            }
        };
        log::trace!("HTTP connection from {} closed: {why}", self.peer());
        self.finish();
    }

    fn peer(&self) -> String {
        self.client
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    fn handshake(&mut self) -> Result<(), Handshake> {
        let deadline = self.accepted + HANDSHAKE_TIMEOUT;
        // A TLS record starts with 0x16; a letter is someone speaking plain HTTP here.
        let mut first = [0u8; 1];
        loop {
            match self.client.peek(&mut first) {
                Ok(0) => return Err(Handshake::Failed("the client closed the connection".into())),
                Ok(_) if first[0].is_ascii_uppercase() => {
                    let _ = self.client.write_all(PLAIN_ON_TLS);
                    self.linger();
                    return Err(Handshake::Failed("plain HTTP on the TLS port".into()));
                }
                Ok(_) => break,
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(Handshake::Failed(e.to_string())),
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or_else(|| Handshake::Failed("timed out".into()))?;
            poll_one(self.client.as_raw_fd(), libc::POLLIN, left);
        }
        let tls = self.tls.as_mut().expect("TLS session");
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.client) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(Handshake::Failed(e.to_string())),
                }
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Handshake::Failed("timed out".into()));
            }
            let mut events = libc::POLLIN;
            if tls.wants_write() {
                events |= libc::POLLOUT;
            }
            if !poll_one(self.client.as_raw_fd(), events, deadline - now) {
                continue;
            }
            match tls.read_tls(&mut self.client) {
                Ok(0) => return Err(Handshake::Failed("the client closed the connection".into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Handshake::Failed(e.to_string())),
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the client why (an alert), best effort.
                let _ = tls.write_tls(&mut self.client);
                return Err(Handshake::Refused(e.to_string()));
            }
        }
    }

    /// One request at a time: the next waits until the answer to this one went out, so
    /// a client cannot queue unbounded work by pipelining without reading.
    fn may_forward(&self) -> bool {
        !self.responses.in_flight() && !self.out_pending()
    }

    fn out_pending(&self) -> bool {
        self.out_pos < self.outbound.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    fn deadline(&self) -> Instant {
        let mut deadline = match self.head {
            // The first request head must be in within the timeout of connecting.
            _ if self.heads_done == 0 => self.accepted + REQUEST_HEAD_TIMEOUT,
            Head::Reading { since, .. } => since + REQUEST_HEAD_TIMEOUT,
            Head::Waiting => self.last_active + IDLE_TIMEOUT,
        };
        if self.responses.in_flight() || self.out_pending() || self.closing {
            deadline = self.last_out_progress + WRITE_TIMEOUT;
        }
        deadline
    }

    /// One poll and whatever it allows.
    fn step(&mut self) -> Step {
        let now = Instant::now();
        let deadline = self.deadline();
        if now >= deadline {
            return Step::Close(match self.head {
                Head::Reading { .. } => "request head timed out",
                Head::Waiting if self.heads_done == 0 => "no request in time",
                Head::Waiting if self.out_pending() => "the client takes no response",
                Head::Waiting => "idle",
            });
        }
        if self.internal_eof && !self.out_pending() {
            return Step::Close("done");
        }
        if self.client_eof && self.internal.is_none() {
            return Step::Close("the client closed the connection");
        }
        let read_client =
            !self.client_eof && !self.closing && self.inbound.len() < MAX_REQUEST_HEAD;
        let write_client = self.out_pending();
        let read_internal = self.internal.is_some()
            && !self.internal_eof
            && self.outbound.len() - self.out_pos < MAX_BUFFERED_RESPONSE;
        let write_internal = self.internal.is_some()
            && !self.inbound.is_empty()
            && !self.internal_write_shut
            && self.may_forward();
        let events = |read: bool, write: bool| {
            (if read { libc::POLLIN } else { 0 }) | (if write { libc::POLLOUT } else { 0 })
        };
        let client_events = events(read_client, write_client);
        let internal_events = events(read_internal, write_internal);
        let internal_fd = self.internal.as_ref().map_or(-1, |s| s.as_raw_fd());
        let mut fds = [
            libc::pollfd {
                fd: if client_events != 0 {
                    self.client.as_raw_fd()
                } else {
                    -1
                },
                events: client_events,
                revents: 0,
            },
            libc::pollfd {
                fd: if internal_events != 0 {
                    internal_fd
                } else {
                    -1
                },
                events: internal_events,
                revents: 0,
            },
        ];
        if poll(&mut fds, deadline - now) == 0 {
            return Step::Continue;
        }
        if read_client && fds[0].revents != 0 {
            if let Step::Close(why) = self.read_client() {
                return Step::Close(why);
            }
        }
        if !self.inbound.is_empty() && !self.internal_write_shut && !self.closing {
            if let Step::Close(why) = self.write_internal() {
                return Step::Close(why);
            }
        }
        if read_internal && fds[1].revents != 0 {
            self.read_internal();
        }
        if self.out_pending() {
            if let Step::Close(why) = self.write_client() {
                return Step::Close(why);
            }
        }
        if self.client_eof && self.inbound.is_empty() && !self.internal_write_shut {
            if let Some(internal) = &self.internal {
                let _ = internal.shutdown(Shutdown::Write);
            }
            self.internal_write_shut = true;
        }
        let between_requests = !self.responses.in_flight() && !self.out_pending();
        if between_requests
            && self.heads_done > 0
            && WAITING.load(Ordering::Relaxed) > 0
            && (!self.inbound.is_empty() || self.started.elapsed() >= FAIR_SHARE)
        {
            return Step::Close("yielding its slot to waiting clients");
        }
        let idle = self.head == Head::Waiting && between_requests && self.inbound.is_empty();
        let evictable_at = if idle {
            ms_of(self.last_active + EVICTABLE_AFTER)
        } else if self.out_pending() {
            ms_of(self.last_out_progress + STALLED_AFTER)
        } else {
            u64::MAX
        };
        self.slot
            .evictable_at_ms
            .store(evictable_at, Ordering::Relaxed);
        Step::Continue
    }

    fn active(&mut self) {
        self.last_active = Instant::now();
    }

    fn read_client(&mut self) -> Step {
        let mut buf = [0u8; 16 * 1024];
        let Some(tls) = self.tls.as_mut() else {
            return match self.client.read(&mut buf) {
                Ok(0) => {
                    self.client_eof = true;
                    Step::Continue
                }
                Ok(n) => self.take_request_bytes(&buf[..n]),
                Err(e) if is_transient(&e) => Step::Continue,
                Err(_) => Step::Close("the client connection failed"),
            };
        };
        match tls.read_tls(&mut self.client) {
            Ok(0) => self.client_eof = true,
            Ok(_) => {}
            Err(e) if is_transient(&e) => return Step::Continue,
            Err(_) => return Step::Close("the client connection failed"),
        }
        if tls.process_new_packets().is_err() {
            let _ = tls.write_tls(&mut self.client);
            return Step::Close("TLS error");
        }
        self.drain_plaintext()
    }

    /// Takes the request bytes rustls decrypted.
    fn drain_plaintext(&mut self) -> Step {
        let Some(tls) = self.tls.as_mut() else {
            return Step::Continue;
        };
        let mut buf = [0u8; 16 * 1024];
        let mut plain = Vec::new();
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => {
                    self.client_eof = true;
                    break;
                }
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.client_eof = true;
                    break;
                }
            }
        }
        if plain.is_empty() {
            Step::Continue
        } else {
            self.take_request_bytes(&plain)
        }
    }

    /// Tracks request heads (deadline and size) and queues the bytes for tiny_http.
    fn take_request_bytes(&mut self, bytes: &[u8]) -> Step {
        self.active();
        let now = Instant::now();
        for &b in bytes {
            let (since, len, matched) = match self.head {
                Head::Waiting => (now, 0, 0),
                Head::Reading {
                    since,
                    len,
                    matched,
                } => (since, len, matched),
            };
            let matched = next_match(matched, b);
            if matched == 4 {
                self.head = Head::Waiting;
                self.heads_done += 1;
            } else if len + 1 > MAX_REQUEST_HEAD {
                return self.refuse_head();
            } else {
                self.head = Head::Reading {
                    since,
                    len: len + 1,
                    matched,
                };
            }
        }
        self.inbound.extend_from_slice(bytes);
        Step::Continue
    }

    /// A request head over the limit: 431 when nothing else is on the wire, then close.
    fn refuse_head(&mut self) -> Step {
        log::debug!(
            "HTTP request head from {} over {MAX_REQUEST_HEAD} bytes: closing",
            self.peer()
        );
        self.closing = true;
        self.inbound.clear();
        self.internal = None;
        self.internal_eof = true;
        if self.heads_done == 0 && !self.answered_any {
            self.outbound.extend_from_slice(TOO_LARGE);
            self.last_out_progress = Instant::now();
            return Step::Continue;
        }
        Step::Close("request head too large")
    }

    fn write_internal(&mut self) -> Step {
        if self.internal.is_none() {
            match self.internal_path.connect().and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            }) {
                Ok(stream) => self.internal = Some(stream),
                Err(e) => {
                    log::error!("cannot reach the internal HTTP server: {e}");
                    return Step::Close("internal server unreachable");
                }
            }
        }
        if !self.may_forward() {
            return Step::Continue;
        }
        let upto = self.forwarding.request_end(&self.inbound);
        let internal = self.internal.as_mut().expect("connected");
        match internal.write(&self.inbound[..upto]) {
            Ok(n) => {
                if let Some(is_head) = self.forwarding.sent(&self.inbound[..n]) {
                    self.responses.expect(is_head);
                    self.last_out_progress = Instant::now();
                }
                self.inbound.drain(..n);
            }
            Err(e) if is_transient(&e) => {}
            Err(_) => {
                // tiny_http closed its side (`Connection: close`): what it sent still goes out.
                self.inbound.clear();
                self.internal_write_shut = true;
            }
        }
        Step::Continue
    }

    fn read_internal(&mut self) {
        let Some(internal) = self.internal.as_mut() else {
            return;
        };
        if self.out_pos == self.outbound.len() {
            self.outbound.clear();
            self.out_pos = 0;
            self.last_out_progress = Instant::now();
        }
        let start = self.outbound.len();
        self.outbound.resize(start + CHUNK, 0);
        match internal.read(&mut self.outbound[start..]) {
            Ok(0) => {
                self.outbound.truncate(start);
                self.internal_eof = true;
            }
            Ok(n) => {
                self.outbound.truncate(start + n);
                self.responses.feed(&self.outbound[start..]);
                self.answered_any = true;
                self.active();
            }
            Err(e) => {
                self.outbound.truncate(start);
                if !is_transient(&e) {
                    self.internal_eof = true;
                }
            }
        }
    }

    fn write_client(&mut self) -> Step {
        let before = (self.out_pos, self.tls.as_ref().map(|t| t.wants_write()));
        match self.tls.as_mut() {
            None => match self.client.write(&self.outbound[self.out_pos..]) {
                Ok(n) => self.out_pos += n,
                Err(e) if is_transient(&e) => {}
                Err(_) => return Step::Close("the client connection failed"),
            },
            Some(tls) => {
                if self.out_pos < self.outbound.len() {
                    match tls.writer().write(&self.outbound[self.out_pos..]) {
                        Ok(n) => self.out_pos += n,
                        Err(_) => return Step::Close("TLS error"),
                    }
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut self.client) {
                        Ok(_) => self.last_out_progress = Instant::now(),
                        Err(e) if is_transient(&e) => break,
                        Err(_) => return Step::Close("the client connection failed"),
                    }
                }
            }
        }
        if self.out_pos != before.0 {
            self.last_out_progress = Instant::now();
            self.active();
        }
        if self.out_pos == self.outbound.len() {
            self.outbound.clear();
            self.out_pos = 0;
        }
        Step::Continue
    }

    /// Says goodbye properly: TLS close_notify, FIN, then reads what the client still
    /// sends for a moment so the kernel does not answer it with a reset that could
    /// destroy the end of a response.
    fn finish(mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let deadline = Instant::now() + Duration::from_secs(1);
            while tls.wants_write() && Instant::now() < deadline {
                match tls.write_tls(&mut self.client) {
                    Ok(_) => {}
                    Err(e) if is_transient(&e) => {
                        poll_one(
                            self.client.as_raw_fd(),
                            libc::POLLOUT,
                            Duration::from_millis(100),
                        );
                    }
                    Err(_) => break,
                }
            }
        }
        drop(self.internal.take());
        if !self.client_eof {
            self.linger();
        }
    }

    /// Sends FIN, then reads what the client still sends, for a second at most.
    fn linger(&mut self) {
        let _ = self.client.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if !poll_one(self.client.as_raw_fd(), libc::POLLIN, left) {
                continue;
            }
            match self.client.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_transient(&e) => {}
                Err(_) => break,
            }
        }
    }
}

/// Finds where requests end in the bytes going to tiny_http.
#[derive(Default)]
struct Forwarding {
    /// Bytes of CRLFCRLF matched at the end of what was sent.
    matched: u8,
    /// The first bytes of the request being sent (its method).
    method: Vec<u8>,
}

impl Forwarding {
    /// How much of `pending` to send now: up to the end of the first request head.
    fn request_end(&self, pending: &[u8]) -> usize {
        let mut matched = self.matched;
        for (i, &b) in pending.iter().enumerate() {
            matched = next_match(matched, b);
            if matched == 4 {
                return i + 1;
            }
        }
        pending.len()
    }

    /// Notes `sent` bytes; at the end of a request head, says whether it was a HEAD.
    fn sent(&mut self, sent: &[u8]) -> Option<bool> {
        for &b in sent {
            if self.method.len() < 5 {
                self.method.push(b);
            }
            self.matched = next_match(self.matched, b);
            if self.matched == 4 {
                self.matched = 0;
                let is_head = self.method.as_slice() == b"HEAD ";
                self.method.clear();
                return Some(is_head);
            }
        }
        None
    }
}

/// One step of matching CRLFCRLF.
fn next_match(matched: u8, b: u8) -> u8 {
    if b == HEAD_END[matched as usize] {
        matched + 1
    } else {
        u8::from(b == b'\r')
    }
}

/// Follows the responses tiny_http writes (a head, then a body by length or in chunks)
/// to know when each ends. Should it ever not understand one, it stops tracking and the
/// relay stops holding requests back.
#[derive(Default)]
struct Responses {
    /// For each request sent and not fully answered: was it a HEAD request?
    expecting: VecDeque<bool>,
    state: Body,
    head: Vec<u8>,
    lost: bool,
}

#[derive(Debug, Default, PartialEq)]
enum Body {
    /// Reading a response head (into `Responses::head`).
    #[default]
    Head,
    Fixed(u64),
    ChunkSize(Vec<u8>),
    /// Chunk bytes left, with the CRLF after them.
    ChunkData(u64),
    /// After the last chunk: trailer lines up to an empty one.
    Trailer(Vec<u8>),
    UntilClose,
}

/// Bytes up to and including the first LF.
fn line_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1)
}

impl Responses {
    fn in_flight(&self) -> bool {
        !self.lost && !self.expecting.is_empty()
    }

    fn expect(&mut self, is_head: bool) {
        self.expecting.push_back(is_head);
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.lost {
            let taken = match &mut self.state {
                Body::Head => {
                    let mut taken = 0;
                    for &b in bytes {
                        taken += 1;
                        self.head.push(b);
                        if self.head.ends_with(HEAD_END) {
                            self.state = self.body_of_head();
                            self.head.clear();
                            break;
                        }
                    }
                    if self.head.len() > MAX_REQUEST_HEAD {
                        self.lost = true;
                    }
                    taken
                }
                Body::Fixed(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = self.answered();
                    }
                    n as usize
                }
                Body::ChunkSize(line) => {
                    let n = line_len(bytes);
                    line.extend_from_slice(&bytes[..n]);
                    if line.ends_with(b"\n") {
                        let text = String::from_utf8_lossy(line);
                        let hex = text.split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(hex, 16) {
                            Ok(0) => self.state = Body::Trailer(Vec::new()),
                            Ok(size) => self.state = Body::ChunkData(size.saturating_add(2)),
                            Err(_) => self.lost = true,
                        }
                    } else if line.len() > 1024 {
                        self.lost = true;
                    }
                    n
                }
                Body::ChunkData(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = Body::ChunkSize(Vec::new());
                    }
                    n as usize
                }
                Body::Trailer(line) => {
                    let n = line_len(bytes);
                    line.extend_from_slice(&bytes[..n]);
                    if line.as_slice() == b"\r\n" {
                        self.state = self.answered();
                    } else if line.ends_with(b"\n") {
                        line.clear();
                    } else if line.len() > MAX_REQUEST_HEAD {
                        self.lost = true;
                    }
                    n
                }
                Body::UntilClose => bytes.len(),
            };
            bytes = &bytes[taken..];
        }
    }

    /// What follows a complete response head.
    fn body_of_head(&mut self) -> Body {
        let text = String::from_utf8_lossy(&self.head).into_owned();
        let mut lines = text.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let (mut length, mut chunked) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok();
            } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        let is_head = self.expecting.front().copied().unwrap_or(false);
        match status {
            0 => {
                self.lost = true;
                Body::UntilClose
            }
            // 100 Continue and friends: the real answer follows.
            100..=199 => Body::Head,
            204 | 304 => self.answered(),
            _ if is_head => self.answered(),
            _ if chunked => Body::ChunkSize(Vec::new()),
            _ => match length {
                Some(0) => self.answered(),
                Some(n) => Body::Fixed(n),
                None => Body::UntilClose,
            },
        }
    }

    /// One response complete; returns the state for the next one.
    fn answered(&mut self) -> Body {
        self.expecting.pop_front();
        Body::Head
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_followed_by_length_by_chunks_and_for_head_requests() {
        let mut r = Responses::default();
        r.expect(false);
        r.expect(true);
        r.expect(false);
        r.expect(false);
        let stream: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n\
HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        // Byte by byte: every split point must work.
        for (i, b) in stream.iter().enumerate() {
            assert!(r.in_flight(), "answered early, at byte {i}");
            r.feed(std::slice::from_ref(b));
        }
        assert!(!r.in_flight() && !r.lost, "{:?}", r.state);
        r.expect(false);
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab");
        assert!(r.in_flight());
        r.feed(b"c");
        assert!(!r.in_flight());
    }

    #[test]
    fn forwarding_stops_at_the_end_of_each_request_head() {
        let mut f = Forwarding::default();
        let pending = b"GET / HTTP/1.1\r\n\r\nHEAD /m HTTP/1.1\r\n\r\nGET";
        let first = f.request_end(pending);
        assert_eq!(&pending[..first], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(f.sent(&pending[..first]), Some(false));
        let rest = &pending[first..];
        let second = f.request_end(rest);
        assert_eq!(f.sent(&rest[..3]), None);
        assert_eq!(f.sent(&rest[3..second]), Some(true));
        assert_eq!(f.request_end(&rest[second..]), 3);
    }

    #[test]
    fn the_internal_socket_is_reachable_and_leaves_nothing_on_disk() {
        let (listener, internal) = Internal::bind().unwrap();
        assert!(internal.path.starts_with("/proc/self/fd/"));
        let mut client = internal.connect().unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        let leftover = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("vault-token-exporter-{}-", std::process::id()))
            });
        assert!(!leftover, "the socket's directory is still on disk");
    }
}
