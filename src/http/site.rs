//! What the exporter serves: the routes, each answered with a tiny_http `Response` that
//! the connection writes itself (see [`super::conn`]).
//!
//! Routes: the telemetry path (gzip when the client accepts it, as promhttp does), the
//! status page `/`, `/-/healthy`, `/-/ready`, and `POST /-/reload` with
//! `--web.enable-lifecycle`. Other methods get 405, other paths 404.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use collectors::collector::Collectors;
use collectors::family::{OrderedText, TextOut};
use prometheus::Registry;
use tiny_http::{Header, Response, ResponseBox, StatusCode};

use super::coalesce::Coalesce;
use super::gzip::GzipPieces;
use super::request::Request;

/// Where scrapes come from.
enum Source {
    /// Any registry: gathered, then encoded by the prometheus crate's `TextEncoder`.
    Registry(Registry),
    /// The exporter's collectors, writing the text format directly: the same bytes,
    /// without the protobuf structures in between (see `Collectors::write_text`).
    Collectors(Arc<Collectors>),
}

/// Reloads the configuration: the status and body of the answer.
pub type ReloadHook = Arc<dyn Fn() -> (u16, String) + Send + Sync>;

/// Renders the status page; its argument is the telemetry path to link.
pub type StatusPage = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// The answer to one request: the response, and for the telemetry path the scrape body,
/// which the connection writes piece by piece after the response's head (the response
/// then carries the body's length and no body of its own).
pub struct Reply {
    pub response: ResponseBox,
    pub body: Option<ScrapeBody>,
}

impl Reply {
    /// One tiny_http response with the body as its reader (for a tiny_http server).
    pub fn into_response(self) -> ResponseBox {
        match self.body {
            Some(body) => {
                let len = body.len();
                let reader: Box<dyn Read + Send> = Box::new(body);
                self.response.with_data(reader, Some(len))
            }
            None => self.response,
        }
    }
}

impl From<ResponseBox> for Reply {
    fn from(response: ResponseBox) -> Reply {
        Reply {
            response,
            body: None,
        }
    }
}

/// What the exporter serves.
pub struct Site {
    source: Source,
    pub telemetry_path: String,
    /// Set once the config is loaded and the workers run.
    pub ready: Arc<AtomicBool>,
    /// Added to every response (the web config's `http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// `POST /-/reload` (with `--web.enable-lifecycle`): reloads and says how it went.
    pub reload: Option<ReloadHook>,
    /// The status page at `/` (the telemetry path is its argument); a bare landing page
    /// without it.
    pub status_page: Option<StatusPage>,
    renders: Coalesce<Rendered>,
    gzip: GzipPieces,
}

/// One scrape's text (much of it kept from earlier scrapes, see `TextCache`), and its
/// gzip once a client asked for it.
struct Rendered {
    text: OrderedText,
    gzip: OnceLock<Option<Vec<u8>>>,
}

/// The body of a scrape: a shared render, plain or gzip, written or read piece by piece.
pub struct ScrapeBody {
    rendered: Arc<Rendered>,
    gzip: bool,
    piece: usize,
    pos: usize,
}

impl ScrapeBody {
    fn gzipped(&self) -> Option<&[u8]> {
        match (self.gzip, self.rendered.gzip.get()) {
            (true, Some(Some(compressed))) => Some(compressed),
            _ => None,
        }
    }

    /// Bytes in the body.
    pub fn len(&self) -> usize {
        self.gzipped()
            .map_or_else(|| self.rendered.text.len(), <[u8]>::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the body to `out`, each piece as it lies in memory: a `BufWriter` passes
    /// the large ones on without copying them into its buffer.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        match self.gzipped() {
            Some(compressed) => out.write_all(compressed),
            None => self
                .rendered
                .text
                .pieces()
                .try_for_each(|piece| out.write_all(piece)),
        }
    }
}

impl Read for ScrapeBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let piece = match self.gzipped() {
                Some(compressed) => (self.piece == 0).then_some(compressed),
                None => self.rendered.text.piece(self.piece),
            };
            let Some(piece) = piece else { return Ok(0) };
            let n = (&piece[self.pos..]).read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n;
                return Ok(n);
            }
            self.piece += 1;
            self.pos = 0;
        }
    }
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
            headers: Vec::new(),
            reload: None,
            status_page: None,
            renders: Coalesce::default(),
            gzip: GzipPieces::default(),
        }
    }

    /// The exposition text of one scrape.
    pub fn render_metrics(&self) -> Vec<u8> {
        self.render().text.to_vec()
    }

    /// One scrape's text, shared with the scrapes that arrive while it renders.
    fn render(&self) -> Arc<Rendered> {
        self.renders.get(|| {
            let text = match &self.source {
                Source::Collectors(collectors) => collectors.write_text(),
                Source::Registry(registry) => {
                    // The families as gathered, each encoded by `TextEncoder`.
                    let mut out = TextOut::default();
                    for family in registry.gather() {
                        if let Err(e) = out.push_family(family) {
                            log::error!("cannot encode metrics: {e}");
                        }
                    }
                    out.into_ordered()
                }
            };
            Rendered {
                text,
                gzip: OnceLock::new(),
            }
        })
    }

    fn metrics(&self, gzip: bool) -> Reply {
        let rendered = self.render();
        let mut headers = vec![
            header("Content-Type", prometheus::TEXT_FORMAT),
            header("Vary", "Accept-Encoding"),
        ];
        if gzip {
            // Compressed once per render, for every scrape that shares it.
            let compress = || match self.gzip.compress(&rendered.text) {
                Ok(compressed) => Some(compressed),
                Err(e) => {
                    log::error!("cannot compress metrics: {e}");
                    None
                }
            };
            if rendered.gzip.get_or_init(compress).is_none() {
                return plain_answer(500).into();
            }
            headers.push(header("Content-Encoding", "gzip"));
        }
        let body = ScrapeBody {
            rendered,
            gzip,
            piece: 0,
            pos: 0,
        };
        let head = Response::new(
            StatusCode(200),
            headers,
            Box::new(io::empty()) as Box<dyn Read + Send>,
            Some(body.len()),
            None,
        );
        Reply {
            response: head,
            body: Some(body),
        }
    }

    /// Answers one request that passed the gate.
    pub fn respond(&self, request: &Request) -> Reply {
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("GET" | "HEAD", path) if path == self.telemetry_path => {
                let Reply { response, body } = self.metrics(request.gzip);
                return Reply {
                    response: self.with_headers(response),
                    body,
                };
            }
            ("GET" | "HEAD", "/") => {
                let page = match &self.status_page {
                    Some(render) => render(&self.telemetry_path),
                    None => landing_page(&self.telemetry_path),
                };
                Response::from_data(page)
                    .with_header(header("Content-Type", "text/html; charset=utf-8"))
                    .boxed()
            }
            ("POST" | "PUT", "/-/reload") if self.reload.is_some() => {
                let (status, body) = self
                    .reload
                    .as_ref()
                    .map(|reload| reload())
                    .unwrap_or_default();
                text(status, &body)
            }
            (_, "/-/reload") if self.reload.is_some() => {
                let mut response = text(405, "Only POST or PUT requests allowed\n");
                response.add_header(header("Allow", "POST, PUT"));
                response
            }
            ("GET" | "HEAD", "/-/healthy") => text(200, "Healthy\n"),
            ("GET" | "HEAD", "/-/ready") if self.ready.load(Ordering::Relaxed) => {
                text(200, "Ready\n")
            }
            ("GET" | "HEAD", "/-/ready") => text(503, "Service Unavailable\n"),
            #[cfg(debug_assertions)]
            ("GET", "/-/panic") if std::env::var_os(TEST_PANIC).is_some() => {
                panic!("a test asked for a panic")
            }
            ("GET" | "HEAD", _) => text(404, "Not Found\n"),
            _ => plain_answer(405),
        };
        self.with_headers(response).into()
    }

    /// A plain-text answer of `status` (refusals, 401, 405, 429...), with its headers.
    pub fn answer(&self, status: u16) -> ResponseBox {
        self.with_headers(plain_answer(status))
    }

    fn with_headers(&self, mut response: ResponseBox) -> ResponseBox {
        for (name, value) in &self.headers {
            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        response
    }
}

/// Debug builds only: with this variable set, `GET /-/panic` panics, so the tests can
/// check that a panicking handler costs one connection and nothing else.
#[cfg(debug_assertions)]
pub const TEST_PANIC: &str = "VAULT_TOKEN_EXPORTER_TEST_PANIC";

/// A plain-text answer of `status`, with the headers its status calls for.
fn plain_answer(status: u16) -> ResponseBox {
    let reason = StatusCode(status).default_reason_phrase();
    let mut response = text(status, &format!("{reason}\n"));
    match status {
        401 => response.add_header(header(
            "WWW-Authenticate",
            "Basic realm=\"vault-token-exporter\"",
        )),
        405 => response.add_header(header("Allow", "GET, HEAD")),
        429 => response.add_header(header("Retry-After", "1")),
        _ => {}
    }
    response
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn text(status: u16, body: &str) -> ResponseBox {
    Response::from_data(body.as_bytes().to_vec())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
        .boxed()
}

fn landing_page(telemetry_path: &str) -> String {
    let path = crate::status_page::escape(telemetry_path);
    format!(
        "<!DOCTYPE html>\n<html>\n<head><title>Vault Token Exporter</title></head>\n<body>\n\
         <h1>Vault Token Exporter</h1>\n<p>Keeps Vault tokens alive and reports when they will die.</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n<p>Version {}</p>\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_landing_page_links_the_telemetry_path_escaped() {
        let page = landing_page("/m<\"x");
        assert!(page.contains("href=\"/m&lt;&quot;x\""));
    }

    #[test]
    fn configured_headers_come_once_on_every_route() {
        let mut site = Site::new(
            Registry::new(),
            "/metrics".into(),
            Arc::new(AtomicBool::new(true)),
        );
        site.headers = vec![("X-Frame-Options".into(), "deny".into())];
        for head in [
            &b"GET /metrics HTTP/1.1\r\n\r\n"[..],
            b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET /nope HTTP/1.1\r\n\r\n",
            b"DELETE /metrics HTTP/1.1\r\n\r\n",
        ] {
            let request = crate::http::request::parse(head).unwrap();
            let response = site.respond(&request).response;
            let count = response
                .headers()
                .iter()
                .filter(|h| h.field.equiv("X-Frame-Options"))
                .count();
            assert_eq!(count, 1, "{}", String::from_utf8_lossy(head));
        }
        let refusal = site.answer(401);
        assert_eq!(
            refusal
                .headers()
                .iter()
                .filter(|h| h.field.equiv("X-Frame-Options"))
                .count(),
            1
        );
    }

    #[test]
    fn metrics_are_gzipped_for_clients_that_accept_it() {
        let registry = Registry::new();
        let counter = prometheus::IntCounter::new("c_total", "help").unwrap();
        registry.register(Box::new(counter)).unwrap();
        let site = Site::new(registry, "/metrics".into(), Arc::new(AtomicBool::new(true)));
        let plain = site.render_metrics();
        let request =
            crate::http::request::parse(b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n")
                .unwrap();
        let response = site.respond(&request).into_response();
        assert!(response
            .headers()
            .iter()
            .any(|h| h.field.equiv("Content-Encoding") && h.value == "gzip"));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(response.into_reader())
            .read_to_end(&mut unzipped)
            .unwrap();
        assert_eq!(unzipped, plain);
    }
}
