//! The HTTP side: `/metrics` (or the configured telemetry path), a landing page,
//! `/-/healthy` and `/-/ready`, answered by tiny_http behind our own accept loop
//! ([`crate::front`]: connection limit, deadlines, TLS), from a listener we bind ourselves.
//!
//! We bind with `TCP_NODELAY` (accepted sockets inherit it on Linux): responses go out in
//! more than one write, and without it a kept-alive scrape stalls ~40 ms on the client's
//! delayed ACK. tiny_http's accept thread ends for good on its first accept() error
//! (EMFILE, say) and reports it through `recv()`; we then build a new server on the same
//! listening socket, so `/metrics` cannot silently die.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collectors::collector::Collectors;
use collectors::family::OrderedText;
use prometheus::{Encoder, Registry, TextEncoder};
use socket2::{Domain, Protocol, Socket, Type};
use tiny_http::{Header, Request, Response, Server, StatusCode};

/// Threads answering requests; scrapes take milliseconds, so a few cover many clients.
const HANDLER_THREADS: usize = 4;

/// Binds `address` (`:9846` means every interface, IPv6 and IPv4) with `TCP_NODELAY`.
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

/// Decides whether a request may see anything (basic auth of the web config).
pub type Authorizer = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

/// Where scrapes come from.
enum Source {
    /// Any registry: gathered, then encoded by the prometheus crate's `TextEncoder`.
    Registry(Registry),
    /// The exporter's collectors, writing the text format directly: the same bytes,
    /// without the protobuf structures in between (see `Collectors::write_text`).
    Collectors(Arc<Collectors>),
}

/// What the handlers serve.
pub struct Site {
    source: Source,
    pub telemetry_path: String,
    /// Set once the config is loaded and the workers run.
    pub ready: Arc<AtomicBool>,
    /// `None`: everyone may read.
    pub authorize: Option<Authorizer>,
    /// Added to every response (the web config's `http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// Size of the last scrape, to allocate the next one in one go.
    last_size: AtomicUsize,
}

impl Site {
    /// Serves what `registry` gathers.
    pub fn new(registry: Registry, telemetry_path: String, ready: Arc<AtomicBool>) -> Site {
        Site::with_source(Source::Registry(registry), telemetry_path, ready)
    }

    /// Serves the exporter's collectors through their direct text path (the same
    /// exposition as a registry holding them, at a fraction of the cost).
    pub fn for_collectors(
        collectors: Arc<Collectors>,
        telemetry_path: String,
        ready: Arc<AtomicBool>,
    ) -> Site {
        Site::with_source(Source::Collectors(collectors), telemetry_path, ready)
    }

    fn with_source(source: Source, telemetry_path: String, ready: Arc<AtomicBool>) -> Site {
        Site {
            source,
            telemetry_path,
            ready,
            authorize: None,
            headers: Vec::new(),
            last_size: AtomicUsize::new(16 * 1024),
        }
    }

    /// The exposition text of one scrape.
    pub fn render_metrics(&self) -> Vec<u8> {
        match self.render() {
            Body::Encoded(body) => body,
            Body::Written(text) => text.into_vec(),
        }
    }

    /// One scrape, in one allocation sized from the last scrape.
    fn render(&self) -> Body {
        let size_hint = self.last_size.load(Ordering::Relaxed) + 4096;
        let body = match &self.source {
            Source::Collectors(collectors) => Body::Written(collectors.write_text(size_hint)),
            Source::Registry(registry) => {
                let families = registry.gather();
                let mut body = Vec::with_capacity(size_hint);
                if let Err(e) = TextEncoder::new().encode(&families, &mut body) {
                    log::error!("cannot encode metrics: {e}");
                }
                Body::Encoded(body)
            }
        };
        let len = match &body {
            Body::Encoded(body) => body.len(),
            Body::Written(text) => text.len(),
        };
        self.last_size.store(len, Ordering::Relaxed);
        body
    }

    fn metrics_response(&self, request: Request) {
        let content_type = header("Content-Type", prometheus::TEXT_FORMAT);
        match self.render() {
            Body::Encoded(body) => {
                self.respond(request, Response::from_data(body).with_header(content_type))
            }
            Body::Written(text) => {
                // Served from the collectors' buffer in family order, not copied into one,
                // with a Content-Length rather than tiny_http's chunking of bodies over
                // 32 KiB: the client can size its buffer, and there is no chunk framing.
                let len = text.len();
                let response =
                    Response::new(StatusCode(200), vec![content_type], text, Some(len), None)
                        .with_chunked_threshold(usize::MAX);
                self.respond(request, response)
            }
        }
    }

    /// Answers one request.
    pub fn handle(&self, request: Request) {
        let path = request.url().split('?').next().unwrap_or("/").to_owned();
        let method = request.method().clone();
        if let Some(authorize) = &self.authorize {
            if !authorize(&request) {
                let response = text(401, "Unauthorized\n").with_header(header(
                    "WWW-Authenticate",
                    "Basic realm=\"vault-token-exporter\"",
                ));
                return self.respond(request, response);
            }
        }
        if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
            let response =
                text(405, "Method Not Allowed\n").with_header(header("Allow", "GET, HEAD"));
            return self.respond(request, response);
        }
        if path == self.telemetry_path {
            return self.metrics_response(request);
        }
        let response = if path == "/" {
            Response::from_data(landing_page(&self.telemetry_path).into_bytes())
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
        } else if path == "/-/healthy" {
            text(200, "Healthy\n")
        } else if path == "/-/ready" {
            if self.ready.load(Ordering::Relaxed) {
                text(200, "Ready\n")
            } else {
                text(503, "Service Unavailable\n")
            }
        } else {
            text(404, "Not Found\n")
        };
        self.respond(request, response);
    }

    fn respond<R: io::Read>(&self, request: Request, mut response: Response<R>) {
        for (name, value) in &self.headers {
            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        // A client that went away is its own problem, not ours.
        let _ = request.respond(response);
    }
}

/// A scrape's body.
enum Body {
    Encoded(Vec<u8>),
    Written(OrderedText),
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_data(body.as_bytes().to_vec())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn landing_page(telemetry_path: &str) -> String {
    let path = telemetry_path
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;");
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>Vault Token Exporter</title></head>\n<body>\n\
         <h1>Vault Token Exporter</h1>\n<p>Keeps Vault tokens alive and reports when they will die.</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n<p>Version {}</p>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Serves `site` on `listener` forever, over TLS when `tls` is given; returns only if
/// the server cannot start.
pub fn serve(
    listener: TcpListener,
    site: Arc<Site>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<std::convert::Infallible> {
    let (internal_listener, internal) = crate::front::Internal::bind()?;
    let (queue, requests) = sync_channel::<Request>(256);
    let requests = Arc::new(Mutex::new(requests));
    for i in 0..HANDLER_THREADS {
        let (site, requests) = (site.clone(), requests.clone());
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || handle_queue(&site, &requests))?;
    }
    std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || run_tiny_http(&internal_listener, &queue))?;
    if tls.is_some() {
        log::info!("TLS is enabled");
    }
    crate::front::accept_loop(listener, tls, Arc::new(internal))
}

/// Runs tiny_http on the internal socket, restarting it whenever its accept thread dies.
fn run_tiny_http(listener: &UnixListener, queue: &SyncSender<Request>) {
    loop {
        match listener.try_clone() {
            Ok(clone) => match Server::from_listener(clone, None) {
                Ok(server) => dispatch(&server, queue),
                Err(e) => log::error!("cannot start the HTTP server: {e}"),
            },
            Err(e) => log::error!("cannot reuse the listening socket: {e}"),
        }
        // Out of file descriptors, most likely: give the process a moment to free some.
        std::thread::sleep(Duration::from_millis(100));
        log::info!("restarting the HTTP server");
    }
}

/// Hands requests to the handlers until the accept thread dies.
fn dispatch(server: &Server, queue: &SyncSender<Request>) {
    loop {
        match server.recv() {
            Ok(request) => {
                if queue.send(request).is_err() {
                    return;
                }
            }
            Err(e) => {
                log::error!("the HTTP server stopped accepting connections: {e}");
                return;
            }
        }
    }
}

fn handle_queue(site: &Site, requests: &Mutex<Receiver<Request>>) {
    loop {
        let next = requests.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(request) => site.handle(request),
            Err(_) => return,
        }
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
    fn the_landing_page_links_the_telemetry_path_escaped() {
        let page = landing_page("/m<\"x");
        assert!(page.contains("href=\"/m&lt;&quot;x\""));
    }
}
