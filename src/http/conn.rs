//! One client connection, on its own thread from accept to close: the TLS handshake
//! (rustls, within [`HANDSHAKE_TIMEOUT`]), each request head read once within its
//! deadline and parsed once ([`super::request`]), basic auth, then the site's tiny_http
//! `Response` written straight to the client with `Response::raw_print`.
//!
//! Blocking reads and writes with socket timeouts, no poll: the thread has nothing else
//! to do. Every wait says from when the connection may be evicted (see
//! [`super::listen`]); eviction shuts the socket down, so whatever the thread waits for
//! fails at once. Requests are answered one at a time: a client that pipelines without
//! reading blocks its own thread, never another's. A panic ends this connection only.

use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};
use tiny_http::{HTTPVersion, Header};

use super::auth::Verdict;
use super::listen::{now_ms, Slot, WAITING};
use super::request::{self, Request};
use super::site::Reply;
use super::{
    Gate, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_REQUEST_HEAD, REQUEST_HEAD_TIMEOUT, WRITE_TIMEOUT,
};

/// Stack of a connection thread (rustls, bcrypt and gzip keep their state on the heap).
pub const STACK: usize = 512 * 1024;
/// A connection waiting for its client may be evicted after this much waiting. Real
/// clients send their request as soon as they connect; this spares them.
pub const GRACE_MS: u64 = 250;
/// A client that took nothing of its answer for this long may be evicted.
const STALLED_MS: u64 = 250;
/// While clients wait for a slot, a connection that held its slot this long, or that
/// pipelines requests, closes itself between two requests (clients retry an idempotent
/// request on a closed kept-alive connection).
const FAIR_SHARE: Duration = Duration::from_secs(2);
/// How long a closing connection reads what the client still sends, so the kernel does
/// not answer it with a reset that could destroy the end of the answer.
const LINGER: Duration = Duration::from_secs(1);
const CHUNK: usize = 16 * 1024;
/// What Go's net/http answers plain HTTP on a TLS port.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves one connection to its end; a panic is logged and ends only this connection.
pub fn serve(tcp: TcpStream, accepted: Instant, slot: &Slot, gate: &Gate) {
    let served = catch_unwind(AssertUnwindSafe(|| {
        let mut conn = Conn {
            tcp,
            tls: None,
            slot,
            received: Vec::new(),
            client_closed: false,
        };
        conn.run(accepted, gate);
        conn.close();
    }));
    if let Err(panic) = served {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::error!(
            "an HTTP handler panicked ({what}); its connection is closed, the exporter goes on"
        );
    }
}

struct Conn<'a> {
    tcp: TcpStream,
    tls: Option<ServerConnection>,
    slot: &'a Slot,
    /// Request bytes not yet consumed (the start of a head, or pipelined requests).
    received: Vec<u8>,
    client_closed: bool,
}

/// Why a connection ends early, for the trace log.
type Why = &'static str;

enum Head {
    /// A complete head of this many bytes at the start of `received`.
    Complete(usize),
    /// Over [`MAX_REQUEST_HEAD`]: 431.
    TooLarge,
    Closed(Why),
}

impl Conn<'_> {
    fn run(&mut self, accepted: Instant, gate: &Gate) {
        let _ = self.tcp.set_nonblocking(false);
        let _ = self.tcp.set_write_timeout(Some(WRITE_TIMEOUT));
        if let Some(config) = &gate.tls {
            if let Err(why) = self.handshake(config, accepted + HANDSHAKE_TIMEOUT) {
                return log::log!(
                    why.0,
                    "TLS handshake with {} failed: {}",
                    self.peer(),
                    why.1
                );
            }
        }
        let started = Instant::now();
        for served in 0u64.. {
            if served > 0 {
                if WAITING.load(Ordering::Relaxed) > 0
                    && (!self.received.is_empty() || started.elapsed() >= FAIR_SHARE)
                {
                    return log::trace!("yielding an HTTP slot to waiting clients");
                }
                self.slot.evictable_from(now_ms() + GRACE_MS);
            }
            let deadline = match served {
                // The first request head must be in within the timeout of connecting.
                0 => accepted + REQUEST_HEAD_TIMEOUT,
                _ => Instant::now() + IDLE_TIMEOUT,
            };
            let end = match self.read_head(deadline, served == 0) {
                Head::Complete(end) => end,
                Head::TooLarge => {
                    log::debug!("HTTP request head from {} too large", self.peer());
                    return self.refuse(gate, 431);
                }
                Head::Closed(why) => return log::trace!("HTTP connection closed: {why}"),
            };
            self.slot.evictable_from(u64::MAX);
            let parsed = request::parse(&self.received[..end]);
            self.received.drain(..end);
            let request = match parsed {
                Ok(request) => request,
                Err(refusal) => return self.refuse(gate, refusal.status()),
            };
            let (response, close) = self.answer(gate, &request);
            let version = HTTPVersion(1, request.minor_version);
            if let Err(e) = self.send(response, version, request.is_head(), close) {
                return log::trace!("HTTP connection closed while answering: {e}");
            }
            if close {
                return;
            }
        }
    }

    /// Basic auth, then the site.
    fn answer(&self, gate: &Gate, request: &Request) -> (Reply, bool) {
        let auth = gate
            .basic_auth
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(auth) = auth {
            let slot = self.slot;
            // Waiting for a bcrypt turn is waiting on the client's behalf: evictable.
            let verdict = auth.check(
                request.authorization.as_deref(),
                || slot.evictable_from(now_ms()),
                || slot.evicted(),
            );
            self.slot.evictable_from(u64::MAX);
            match verdict {
                Verdict::Allowed => {}
                Verdict::Denied => return (gate.site.answer(401).into(), request.close),
                Verdict::Busy => return (gate.site.answer(429).into(), true),
            }
        }
        (gate.site.respond(request), request.close)
    }

    /// Answers a refused head with `status`; the connection closes after it.
    fn refuse(&mut self, gate: &Gate, status: u16) {
        log::debug!("HTTP request from {} refused: {status}", self.peer());
        let refusal = gate.site.answer(status).into();
        let _ = self.send(refusal, HTTPVersion(1, 1), false, true);
    }

    fn send(
        &mut self,
        reply: Reply,
        version: HTTPVersion,
        head_only: bool,
        close: bool,
    ) -> io::Result<()> {
        let Reply { mut response, body } = reply;
        if close {
            response.add_header(Header::from_bytes("Connection", "close").expect("valid"));
        }
        // A Content-Length, never chunks: the client can size its buffer.
        let response = response.with_chunked_threshold(usize::MAX);
        self.slot.evictable_from(now_ms() + STALLED_MS);
        let mut out = BufWriter::with_capacity(4 * CHUNK, Out(self));
        // A scrape body follows the head, written from the render as it lies in memory.
        response.raw_print(&mut out, version, &[], head_only || body.is_some(), None)?;
        if let Some(body) = body.filter(|_| !head_only) {
            body.write_to(&mut out)?;
        }
        out.flush()
    }

    /// Reads until `received` holds a complete head, within `deadline` for the whole
    /// head (or, between requests, until the first byte of the next).
    fn read_head(&mut self, mut deadline: Instant, first: bool) -> Head {
        let mut searched = 0;
        let mut began = !self.received.is_empty();
        let mut chunk = [0u8; CHUNK];
        loop {
            let blank = request::leading_empty_lines(&self.received);
            if blank > 0 {
                self.received.drain(..blank);
                searched = 0;
            }
            if !self.received.is_empty() && !began {
                began = true;
                if !first {
                    deadline = Instant::now() + REQUEST_HEAD_TIMEOUT;
                }
            }
            if let Some(end) = request::head_end(&self.received, searched) {
                return Head::Complete(end);
            }
            if self.received.len() > MAX_REQUEST_HEAD {
                return Head::TooLarge;
            }
            searched = self.received.len();
            match self.read(&mut chunk, deadline) {
                Ok(0) => {
                    self.client_closed = true;
                    return Head::Closed("the client closed the connection");
                }
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Head::Closed("no request head in time")
                }
                Err(_) => return Head::Closed("the connection failed"),
            }
        }
    }

    /// Reads plaintext within `deadline` (`TimedOut` after it).
    fn read(&mut self, out: &mut [u8], deadline: Instant) -> io::Result<usize> {
        loop {
            if let Some(tls) = &mut self.tls {
                // Plaintext may already be in: a request sent with the handshake's end.
                match tls.reader().read(out) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or(io::ErrorKind::TimedOut)?;
            self.tcp.set_read_timeout(Some(left))?;
            let Some(tls) = &mut self.tls else {
                return self.tcp.read(out).map_err(timed_out);
            };
            if tls.read_tls(&mut self.tcp).map_err(timed_out)? == 0 {
                return Ok(0);
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(&mut self.tcp);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            while tls.wants_write() {
                tls.write_tls(&mut self.tcp)?;
            }
        }
    }

    /// The TLS handshake, within `deadline`; on failure, the log level and why.
    fn handshake(
        &mut self,
        config: &Arc<ServerConfig>,
        deadline: Instant,
    ) -> Result<(), (log::Level, String)> {
        // A refused certificate or protocol is worth an operator's eye; clients that go
        // away or never speak (scanners, probes) are not.
        let failed = |why: String| (log::Level::Debug, why);
        let set_timeout = |tcp: &TcpStream| {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|left| !left.is_zero())
                .ok_or_else(|| failed("timed out".into()))?;
            tcp.set_read_timeout(Some(left))
                .map_err(|e| failed(e.to_string()))
        };
        // A TLS record starts with 0x16; a letter is someone speaking plain HTTP here.
        let mut first = [0u8; 1];
        set_timeout(&self.tcp)?;
        match self.tcp.peek(&mut first) {
            Ok(0) => return Err(failed("the client closed the connection".into())),
            Ok(_) if first[0].is_ascii_uppercase() => {
                let _ = self.tcp.write_all(PLAIN_ON_TLS);
                return Err(failed("plain HTTP on the TLS port".into()));
            }
            Ok(_) => {}
            Err(e) => return Err(failed(timed_out(e).to_string())),
        }
        let mut tls = ServerConnection::new(config.clone()).map_err(|e| failed(e.to_string()))?;
        loop {
            while tls.wants_write() {
                tls.write_tls(&mut self.tcp)
                    .map_err(|e| failed(e.to_string()))?;
            }
            if !tls.is_handshaking() {
                break;
            }
            set_timeout(&self.tcp)?;
            match tls.read_tls(&mut self.tcp) {
                Ok(0) => return Err(failed("the client closed the connection".into())),
                Ok(_) => {}
                Err(e) => return Err(failed(timed_out(e).to_string())),
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the client why (an alert), best effort.
                let _ = tls.write_tls(&mut self.tcp);
                return Err((log::Level::Info, e.to_string()));
            }
        }
        self.tls = Some(tls);
        Ok(())
    }

    /// Says goodbye properly: TLS close_notify, FIN, then reads what the client still
    /// sends for [`LINGER`] at most.
    fn close(&mut self) {
        self.slot.evictable_from(now_ms());
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut self.tcp).is_err() {
                    break;
                }
            }
        }
        let _ = self.tcp.shutdown(Shutdown::Write);
        if self.client_closed {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut sink = [0u8; CHUNK];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.tcp.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match self.tcp.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn peer(&self) -> String {
        self.tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    }
}

/// A read that hit its socket timeout reports `WouldBlock`; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::ErrorKind::TimedOut.into()
    } else {
        e
    }
}

/// The client side of an answer, plain or TLS; every write that goes through moves the
/// time from which the connection counts as stalled.
struct Out<'c, 'a>(&'c mut Conn<'a>);

impl Write for Out<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let conn = &mut *self.0;
        let n = match &mut conn.tls {
            None => conn.tcp.write(buf)?,
            Some(tls) => {
                let n = tls.writer().write(buf)?;
                while tls.wants_write() {
                    tls.write_tls(&mut conn.tcp)?;
                    conn.slot.evictable_from(now_ms() + STALLED_MS);
                }
                n
            }
        };
        conn.slot.evictable_from(now_ms() + STALLED_MS);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::Refusal;

    #[test]
    fn socket_timeouts_read_as_timeouts() {
        assert_eq!(
            timed_out(io::ErrorKind::WouldBlock.into()).kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(
            timed_out(io::ErrorKind::BrokenPipe.into()).kind(),
            io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn refusals_map_to_their_statuses() {
        assert_eq!(Refusal::Body.status(), 413);
        assert_eq!(Refusal::TooManyHeaders.status(), 431);
        assert_eq!(Refusal::Malformed.status(), 400);
    }
}
