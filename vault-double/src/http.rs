//! A minimal HTTP/1.1 server-side wire layer over `std::net`: request parsing (Content-Length
//! and chunked bodies, keep-alive, `Expect: 100-continue`, pipelining) and response writing.
//! It exists so that faults can act on the raw connection: close it unanswered, hold it,
//! trickle a body, or refuse new connections for real.

use std::io::{self, BufRead, Read, Write};
use std::time::SystemTime;

/// Largest request head (request line plus headers) accepted.
const MAX_HEAD: u64 = 64 * 1024;
/// Largest request body accepted (Vault's default `max_request_size`, 32 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header with this name (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's (undecoded) value; `Some("")` when present without `=`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }
}

/// Why no request could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// EOF, timeout or socket error: just close.
    Closed,
    /// Malformed request: answer with this status and close.
    Bad(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Closed
    }
}

/// Reads one line (without its CR LF), charging its length to `budget`.
fn read_line<R: BufRead>(r: &mut R, budget: &mut u64) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = r.by_ref().take(*budget).read_until(b'\n', &mut buf)?;
    if n == 0 {
        if *budget == 0 {
            return Err(ReadError::Bad(431, "Request Header Fields Too Large"));
        }
        return Err(ReadError::Closed);
    }
    *budget -= n as u64;
    if buf.last() != Some(&b'\n') {
        if *budget == 0 {
            return Err(ReadError::Bad(431, "Request Header Fields Too Large"));
        }
        return Err(ReadError::Closed); // EOF in the middle of a line
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Reads the next request from a connection. `w` is used only for `100 Continue`.
pub(crate) fn read_request<R: BufRead, W: Write>(
    r: &mut R,
    w: &mut W,
) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let line = loop {
        let l = read_line(r, &mut budget)?;
        if !l.is_empty() {
            break l;
        }
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(400, "Bad Request"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Bad(505, "HTTP Version Not Supported"));
    }
    let http10 = version == "HTTP/1.0";
    // Absolute-form targets (proxies) carry scheme and authority: keep only the path.
    let mut target = target;
    for scheme in ["http://", "https://"] {
        if let Some(rest) = target.strip_prefix(scheme) {
            target = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let l = read_line(r, &mut budget)?;
        if l.is_empty() {
            break;
        }
        if l.starts_with(' ') || l.starts_with('\t') {
            // obsolete line folding: continue the previous value
            match headers.last_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(l.trim());
                }
                None => return Err(ReadError::Bad(400, "Bad Request")),
            }
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(ReadError::Bad(400, "Bad Request"));
        };
        if k.is_empty() || k.contains(|c: char| c.is_whitespace()) {
            return Err(ReadError::Bad(400, "Bad Request"));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
        keep_alive: true,
    };
    let connection = req
        .header_all("connection")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    req.keep_alive = if http10 {
        connection.iter().any(|t| t == "keep-alive")
    } else {
        !connection.iter().any(|t| t == "close")
    };

    let chunked = req
        .header_all("transfer-encoding")
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    let content_length = match req.header("content-length") {
        Some(v) if !chunked => Some(
            v.parse::<u64>()
                .map_err(|_| ReadError::Bad(400, "Bad Request"))?,
        ),
        _ => None,
    };
    if content_length.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ReadError::Bad(413, "Request Entity Too Large"));
    }
    let expects_body = chunked || content_length.is_some_and(|n| n > 0);
    if expects_body
        && !http10
        && req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        w.flush()?;
    }
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(n) = content_length {
        let mut body = vec![0; n as usize];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 4096;
        let line = read_line(r, &mut budget)?;
        let size_str = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_str, 16).map_err(|_| ReadError::Bad(400, "Bad Request"))?;
        if size == 0 {
            // trailers, up to the empty line
            let mut budget = MAX_HEAD;
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad(413, "Request Entity Too Large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut budget = 4096;
        if !read_line(r, &mut budget)?.is_empty() {
            return Err(ReadError::Bad(400, "Bad Request"));
        }
    }
}

/// One response to write.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The reason phrase Go's net/http writes for a status ("status code N" when it has none).
pub(crate) fn reason(status: u16) -> String {
    let text = match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        412 => "Precondition Failed",
        413 => "Request Entity Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => return format!("status code {status}"),
    };
    text.to_string()
}

/// Serialises a response head. `content_length` is added unless the caller set one.
pub(crate) fn head_bytes(
    status: u16,
    headers: &[(String, String)],
    content_length: usize,
    close: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_length = false;
    for (k, v) in headers {
        has_length |= k.eq_ignore_ascii_case("content-length");
        let _ = write!(out, "{k}: {v}\r\n");
    }
    let _ = write!(
        out,
        "Date: {}\r\n",
        crate::util::http_date(SystemTime::now())
    );
    let bodyless = (100..200).contains(&status) || status == 204 || status == 304;
    if !has_length && !bodyless {
        let _ = write!(out, "Content-Length: {content_length}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes a whole response; `head_only` for HEAD requests.
pub(crate) fn write_response<W: Write>(
    w: &mut W,
    resp: &Response,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut out = head_bytes(resp.status, &resp.headers, resp.body.len(), close);
    if !head_only {
        out.extend_from_slice(&resp.body);
    }
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &str) -> Result<Request, ReadError> {
        let mut sink = Vec::new();
        read_request(&mut Cursor::new(raw.as_bytes().to_vec()), &mut sink)
    }

    #[test]
    fn parses_content_length_and_query() {
        let r = parse("PUT /v1/auth/token/renew-self?x=1 HTTP/1.1\r\nX-Vault-Token: a\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/v1/auth/token/renew-self");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.header("x-vault-token"), Some("a"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive);
    }

    #[test]
    fn parses_chunked_and_connection_close() {
        let r = parse("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(!r.keep_alive);
        let r = parse("GET /a HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(
            parse("\u{1}\u{2}\r\n\r\n"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            parse("GET / SPDY/3\r\n\r\n"),
            Err(ReadError::Bad(505, _))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nnocolon\r\n\r\n"),
            Err(ReadError::Bad(400, _))
        ));
        assert!(matches!(parse(""), Err(ReadError::Closed)));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab"),
            Err(ReadError::Closed)
        ));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(70_000));
        assert!(matches!(parse(&huge), Err(ReadError::Bad(431, _))));
    }

    #[test]
    fn writes_go_reason_phrases() {
        assert_eq!(reason(473), "status code 473");
        let head = head_bytes(200, &[], 5, true);
        let s = String::from_utf8(head).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Length: 5\r\n"));
        assert!(s.contains("Connection: close\r\n"));
    }
}
