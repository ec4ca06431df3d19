//! The HTTP side: a gate in front of tiny_http's responses.
//!
//! ```text
//! listen.rs      bind; accept; slots (64), newest-first admission, eviction under pressure
//!   conn.rs      one thread per connection: TLS handshake, head read within its
//!                deadline, one parse, basic auth, answer written with tiny_http
//!     request.rs the head parser (httparse): GET/HEAD without a body, or a refusal
//!     auth.rs    basic auth: bcrypt verdicts cached both ways, bounded bcrypt turns
//!     site.rs    the routes: telemetry path (gzip), /, /-/healthy, /-/ready, /-/reload
//!       coalesce.rs  scrapes that arrive during a render share it
//!       gzip.rs      gzip piece by piece: kept text is compressed once
//! web_config.rs  --web.config.file: TLS (client auth, certificate reload) and users
//! ```
//!
//! Why a gate rather than tiny_http's own server: tiny_http 0.12 gives every connection
//! a thread for as long as the client keeps it, reads heads without a limit or a
//! deadline, and drains an unread request body into a buffer sized by the client's
//! `Content-Length` (one request could abort the process). Here nothing reads a body,
//! every connection state has a deadline and can be evicted under pressure, and tiny_http
//! only formats the answers (`Response::raw_print`). A scrape touches two threads: the
//! acceptor and its connection's.

mod auth;
mod coalesce;
mod conn;
mod gzip;
mod listen;
pub mod request;
mod site;
pub mod web_config;

use std::net::TcpListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use auth::BasicAuth;
pub use listen::{bind, MAX_CONNECTIONS};
pub use site::Site;
#[cfg(debug_assertions)]
pub use site::TEST_PANIC;

/// A TLS handshake must complete within this of the connect.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A new connection must deliver its first request head within this of the connect; so
/// must every later head once its first byte arrived (slow-loris).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with nothing to do is closed after this (longer than the
/// usual scrape interval, so Prometheus keeps its connection).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A client that takes none of its answer for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head accepted (request line and headers); larger gets 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// What every connection needs.
pub struct Gate {
    pub site: Arc<Site>,
    /// TLS for every connection, `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `None`: everyone may read. Replaced by a reload of the web config.
    pub basic_auth: Arc<RwLock<Option<Arc<BasicAuth>>>>,
}

/// Serves `gate` on `listener` forever. Nothing a client does can end this: a panic in
/// the acceptor is logged and the acceptor starts over.
pub fn serve(listener: TcpListener, gate: Gate) -> ! {
    if gate.tls.is_some() {
        log::info!("TLS is enabled");
    }
    let gate = Arc::new(gate);
    loop {
        let _ = catch_unwind(AssertUnwindSafe(|| listen::accept_loop(&listener, &gate)));
        log::error!("the HTTP acceptor panicked; starting it again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
