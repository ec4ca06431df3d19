//! The front door: our own accept loop in front of tiny_http, for TLS and for limits.
//!
//! Why not tiny_http alone: tiny_http 0.12 accepts every connection and gives each its
//! own thread for as long as the client keeps it open, so a thousand idle or trickling
//! clients cost a thousand threads; it reads request heads without a size limit or a
//! deadline; and its TLS (rustls 0.20) cannot ask for client certificates and runs
//! each handshake on its single accept thread, where one slow client stalls everyone.
//!
//! So the exporter accepts connections itself and hands each, once it has a slot, to a
//! connection thread (at most [`MAX_CONNECTIONS`] at a time; the next clients wait in
//! the kernel's backlog, or take the slot of the connection idle longest). That thread
//! does the TLS handshake with rustls 0.23 when TLS is on (off the accept path, within
//! [`HANDSHAKE_TIMEOUT`]), enforces the request-head deadline and size limit, and
//! relays the plaintext, with poll(2), to the tiny_http server that answers requests.
//! That server listens on a Unix socket that has no name: it is bound in a fresh 0700
//! directory, opened with `O_PATH`, then unlinked, and reached as
//! `/proc/self/fd/N`. Nothing else (no other user, no other process in the network
//! namespace, unlike a loopback port or an abstract socket) can reach it and skip the
//! TLS client-certificate check or the connection limit, and nothing is left on disk
//! whatever way the process ends.
//!
//! Plain HTTP goes through the same door: the limits matter most there, and the relay
//! costs one copy through a Unix socket (well under a millisecond per megabyte), not a
//! protocol. Responses are read from tiny_http eagerly (up to [`MAX_BUFFERED_RESPONSE`])
//! so a client that reads slowly holds neither a handler thread nor a slot for long.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// Stack of a connection thread: a poll loop and rustls, which keeps its state on the heap.
const CONNECTION_STACK: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// Milliseconds since the first call: a monotonic clock that fits an atomic.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
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
    last_active_ms: AtomicU64,
    /// Between requests with nothing in flight: may be closed to make room.
    idle: AtomicBool,
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

    /// Closes up to `wanted` connections that sit idle (longest idle first) to make
    /// room for clients waiting for a slot.
    fn evict(&self, wanted: usize) {
        let now = now_ms();
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let mut idle: Vec<(u64, &Arc<Slot>)> = live
            .values()
            .filter(|s| s.idle.load(Ordering::Relaxed))
            .map(|s| (s.last_active_ms.load(Ordering::Relaxed), s))
            .filter(|(at, _)| now.saturating_sub(*at) >= EVICTABLE_AFTER.as_millis() as u64)
            .collect();
        idle.sort_by_key(|(at, _)| *at);
        for (_, slot) in idle.into_iter().take(wanted) {
            // Marked busy so the next round does not pick it again while it closes.
            slot.idle.store(false, Ordering::Relaxed);
            let _ = slot.socket.shutdown(Shutdown::Both);
        }
    }

    fn register(self: &Arc<Self>, id: u64, socket: TcpStream) -> SlotGuard {
        let slot = Arc::new(Slot {
            socket,
            last_active_ms: AtomicU64::new(now_ms()),
            idle: AtomicBool::new(false),
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
            let Some((stream, _)) = waiting.pop() else {
                break;
            };
            free -= 1;
            next_id += 1;
            start_connection(stream, &slots, next_id, &tls, &internal);
        }
        if !waiting.is_empty() {
            slots.evict(waiting.len());
        }
    }
}

/// Clients waiting for a slot, at most.
pub const MAX_WAITING: usize = 256;

fn start_connection(
    stream: TcpStream,
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
            Connection::new(stream, &slot, &internal).run(tls);
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
    /// Plaintext from the client, not yet written to tiny_http.
    inbound: Vec<u8>,
    /// Plaintext from tiny_http, not yet written to the client (or handed to rustls).
    outbound: Vec<u8>,
    out_pos: usize,
    head: Head,
    heads_done: u64,
    /// A request went to tiny_http and its answer is not fully delivered yet.
    awaiting: bool,
    /// tiny_http began answering the latest request.
    answer_started: bool,
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

enum Step {
    Continue,
    Close(&'static str),
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";
/// What Go's net/http answers plain HTTP on a TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n";

impl<'a> Connection<'a> {
    fn new(client: TcpStream, slot: &'a Slot, internal: &'a Internal) -> Self {
        let now = Instant::now();
        Connection {
            client,
            slot,
            internal_path: internal,
            internal: None,
            tls: None,
            accepted: now,
            inbound: Vec::new(),
            outbound: Vec::new(),
            out_pos: 0,
            head: Head::Waiting,
            heads_done: 0,
            awaiting: false,
            answer_started: false,
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
                log::debug!("TLS handshake with {} failed: {why}", self.peer());
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

    fn handshake(&mut self) -> Result<(), String> {
        let deadline = self.accepted + HANDSHAKE_TIMEOUT;
        // A TLS record starts with 0x16; a letter is someone speaking plain HTTP here.
        let mut first = [0u8; 1];
        loop {
            match self.client.peek(&mut first) {
                Ok(0) => return Err("the client closed the connection".into()),
                Ok(_) if first[0].is_ascii_uppercase() => {
                    let _ = self.client.write_all(PLAIN_ON_TLS);
                    self.linger();
                    return Err("plain HTTP on the TLS port".into());
                }
                Ok(_) => break,
                Err(e) if is_transient(&e) => {}
                Err(e) => return Err(e.to_string()),
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("timed out")?;
            poll_one(self.client.as_raw_fd(), libc::POLLIN, left);
        }
        let tls = self.tls.as_mut().expect("TLS session");
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.client) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if !tls.is_handshaking() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("timed out".into());
            }
            let mut events = libc::POLLIN;
            if tls.wants_write() {
                events |= libc::POLLOUT;
            }
            if !poll_one(self.client.as_raw_fd(), events, deadline - now) {
                continue;
            }
            match tls.read_tls(&mut self.client) {
                Ok(0) => return Err("the client closed the connection".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.to_string()),
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the client why (an alert), best effort.
                let _ = tls.write_tls(&mut self.client);
                return Err(e.to_string());
            }
        }
    }

    fn out_pending(&self) -> bool {
        self.out_pos < self.outbound.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    fn deadline(&self) -> Instant {
        let mut deadline = match self.head {
            Head::Reading { since, .. } => since + REQUEST_HEAD_TIMEOUT,
            Head::Waiting if self.heads_done == 0 => self.accepted + REQUEST_HEAD_TIMEOUT,
            Head::Waiting => self.last_active + IDLE_TIMEOUT,
        };
        if self.awaiting || self.out_pending() || self.closing {
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
        let write_internal =
            self.internal.is_some() && !self.inbound.is_empty() && !self.internal_write_shut;
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
        if self.awaiting && self.answer_started && !self.out_pending() && self.inbound.is_empty() {
            self.awaiting = false;
        }
        let idle = self.head == Head::Waiting
            && !self.awaiting
            && !self.out_pending()
            && self.inbound.is_empty();
        self.slot.idle.store(idle, Ordering::Relaxed);
        Step::Continue
    }

    fn active(&mut self) {
        self.last_active = Instant::now();
        self.slot.last_active_ms.store(now_ms(), Ordering::Relaxed);
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
            let matched = if b == HEAD_END[matched as usize] {
                matched + 1
            } else {
                u8::from(b == b'\r')
            };
            if matched == 4 {
                self.head = Head::Waiting;
                self.heads_done += 1;
                self.awaiting = true;
                self.answer_started = false;
                self.last_out_progress = now;
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
        let internal = self.internal.as_mut().expect("connected");
        match internal.write(&self.inbound) {
            Ok(n) => {
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
                self.answered_any = true;
                self.answer_started = true;
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
