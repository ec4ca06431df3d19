//! The listening socket and its slots: who gets a connection thread, who waits, and who
//! gives their slot up under pressure.
//!
//! Connections are accepted as soon as they arrive. Beyond [`MAX_CONNECTIONS`] they wait
//! (a descriptor each, no thread), newest first: under a flood of clients that never
//! finish a request, the scrape that arrived last is served next rather than after the
//! whole flood. Each waiting client makes room by evicting the connection that has been
//! useless longest, whatever it is doing: handshaking, silent, half-way through a head,
//! idle between requests, waiting for a bcrypt turn or not reading its answer (each
//! connection says from when it may be evicted, see [`Slot::evictable_from`]). A
//! connection still working on an answer is never evicted. A client that waited longer
//! than [`REQUEST_HEAD_TIMEOUT`] (or beyond [`MAX_WAITING`]) is closed.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::{conn, Gate, REQUEST_HEAD_TIMEOUT};

/// Connections served at once, a thread each.
pub const MAX_CONNECTIONS: usize = 64;
/// Clients waiting for a slot, at most.
pub const MAX_WAITING: usize = 256;
/// Connection threads at most, evicted ones included (they end at their next read or
/// write, or within a bcrypt check).
const MAX_THREADS: usize = 2 * MAX_CONNECTIONS;
/// Clients waiting for a slot right now (a connection that held its slot a while yields
/// it between two requests when someone waits).
pub static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Binds `address` (`:9846` means every interface, IPv6 and IPv4) with `TCP_NODELAY`
/// (accepted sockets inherit it on Linux: without it a kept-alive scrape stalls ~40 ms
/// on the client's delayed ACK).
pub fn bind(address: &str) -> io::Result<TcpListener> {
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid port in {address:?}"),
            )
        })?;
        let any_v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        return bind_one(any_v6, true).or_else(|_| {
            bind_one(
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
                false,
            )
        });
    }
    let addr = address
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {address:?}: {e}")))?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{address:?} resolves to nothing"),
            )
        })?;
    bind_one(addr, false)
}

fn bind_one(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Milliseconds since the first call: a monotonic clock that fits an atomic.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A connection's slot, as the acceptor sees it.
pub struct Slot {
    /// A handle on the client socket, to shut it down.
    socket: TcpStream,
    /// `now_ms` from which the connection may be evicted; `u64::MAX`: working.
    evictable_from: AtomicU64,
    evicted: AtomicBool,
}

impl Slot {
    /// The connection may be evicted from `at_ms` on (`u64::MAX`: never).
    pub fn evictable_from(&self, at_ms: u64) {
        self.evictable_from.store(at_ms, Ordering::Relaxed);
    }

    /// Evicted (its socket shut down): the connection's next read or write fails.
    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Slots {
    live: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Connection threads running, evicted ones included.
    threads: AtomicUsize,
    /// Signalled when a connection thread ends.
    ended: Condvar,
}

/// Frees the slot when the connection thread ends (or unwinds).
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
        self.slots.threads.fetch_sub(1, Ordering::Relaxed);
        self.slots.ended.notify_one();
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self) -> usize {
        let by_slots = MAX_CONNECTIONS.saturating_sub(self.lock().len());
        let by_threads = MAX_THREADS.saturating_sub(self.threads.load(Ordering::Relaxed));
        by_slots.min(by_threads)
    }

    /// Evicts up to `wanted` connections, useless longest first.
    fn evict(&self, wanted: usize) {
        let now = now_ms();
        let mut live = self.lock();
        let mut evictable: Vec<(u64, u64)> = live
            .iter()
            .map(|(id, s)| (s.evictable_from.load(Ordering::Relaxed), *id))
            .filter(|(from, _)| *from <= now)
            .collect();
        evictable.sort_unstable();
        for (_, id) in evictable.into_iter().take(wanted) {
            if let Some(slot) = live.remove(&id) {
                slot.evicted.store(true, Ordering::Relaxed);
                let _ = slot.socket.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Accepts connections on `listener` forever, each served by [`conn::serve`].
pub fn accept_loop(listener: &TcpListener, gate: &Arc<Gate>) -> ! {
    let slots = Arc::new(Slots::default());
    let mut waiting: Vec<(TcpStream, Instant)> = Vec::new();
    let mut next_id = 0u64;
    let mut last_error_log: Option<Instant> = None;
    loop {
        // Nobody waits: sleep in accept(). Someone waits: look every few milliseconds
        // (and whenever a connection ends) for newcomers and free slots.
        if waiting.is_empty() {
            let _ = listener.set_nonblocking(false);
            accept(listener, &mut waiting, &mut last_error_log);
            let _ = listener.set_nonblocking(true);
        }
        while accept(listener, &mut waiting, &mut last_error_log) {}
        waiting.retain(|(_, since)| since.elapsed() < REQUEST_HEAD_TIMEOUT);
        if waiting.len() > MAX_WAITING {
            waiting.drain(..waiting.len() - MAX_WAITING);
        }
        if !waiting.is_empty() && slots.free() < waiting.len() {
            slots.evict(waiting.len() - slots.free());
        }
        for _ in 0..slots.free() {
            let Some((stream, accepted)) = waiting.pop() else {
                break;
            };
            next_id += 1;
            start(stream, accepted, &slots, next_id, gate);
        }
        WAITING.store(waiting.len(), Ordering::Relaxed);
        if !waiting.is_empty() {
            let live = slots.lock();
            let _ = slots.ended.wait_timeout(live, Duration::from_millis(10));
        }
    }
}

/// Accepts one connection into `waiting`; false when there is none (or no descriptor).
fn accept(
    listener: &TcpListener,
    waiting: &mut Vec<(TcpStream, Instant)>,
    last_error_log: &mut Option<Instant>,
) -> bool {
    match listener.accept() {
        Ok((stream, _)) => waiting.push((stream, Instant::now())),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
            ) => {}
        Err(e) => {
            // Out of descriptors or memory, most likely: let the process free some.
            if last_error_log.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                log::error!("cannot accept HTTP connections: {e}");
                *last_error_log = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(100));
            return false;
        }
    }
    true
}

fn start(stream: TcpStream, accepted: Instant, slots: &Arc<Slots>, id: u64, gate: &Arc<Gate>) {
    let handle = match stream.try_clone() {
        Ok(handle) => handle,
        Err(e) => {
            log::warn!("dropping an HTTP connection: {e}");
            return;
        }
    };
    let slot = Arc::new(Slot {
        socket: handle,
        evictable_from: AtomicU64::new(now_ms() + conn::GRACE_MS),
        evicted: AtomicBool::new(false),
    });
    slots.lock().insert(id, slot.clone());
    slots.threads.fetch_add(1, Ordering::Relaxed);
    let guard = SlotGuard {
        slots: slots.clone(),
        id,
    };
    let gate = gate.clone();
    let spawned = std::thread::Builder::new()
        .name("http-conn".into())
        .stack_size(conn::STACK)
        .spawn(move || {
            let _guard = guard;
            conn::serve(stream, accepted, &slot, &gate);
        });
    if let Err(e) = spawned {
        // The closure (and the guard in it) is dropped: the slot is free again.
        log::warn!("dropping an HTTP connection: cannot start its thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_loopback_port_zero_and_reports_the_real_port() {
        let listener = bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
        let err = bind(&addr.to_string()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn bad_addresses_are_errors() {
        assert!(bind(":notaport").is_err());
        assert!(bind("no-such-host.invalid:80").is_err());
    }

    #[test]
    fn eviction_takes_the_longest_useless_and_never_a_working_connection() {
        let listener = bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Slots::default();
        // The clock starts at its first reading: let it pass the instants below.
        while now_ms() < 10 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut clients = Vec::new();
        for (id, from) in [(1, 5), (2, 1), (3, u64::MAX), (4, 3)] {
            clients.push(TcpStream::connect(addr).unwrap());
            let (socket, _) = listener.accept().unwrap();
            let slot = Slot {
                socket,
                evictable_from: AtomicU64::new(from),
                evicted: AtomicBool::new(false),
            };
            slots.lock().insert(id, Arc::new(slot));
        }
        slots.evict(2);
        let mut left: Vec<u64> = slots.lock().keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [1, 3]);
        slots.evict(5);
        assert_eq!(slots.lock().keys().copied().collect::<Vec<_>>(), [3]);
    }
}
