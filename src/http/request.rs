//! The one parse of a request head, a pure function (unit-tested here, fuzzed by
//! `fuzz/fuzz_targets/request_head.rs`).
//!
//! The gate admits only what the exporter serves: `GET` and `HEAD` (other methods reach
//! the site, which answers 405) without a body. A head that announces a body
//! (`Content-Length` above 0, any `Transfer-Encoding`) is refused here, before anything
//! reads or allocates by the client's numbers.

/// Headers read at most; more gets 431.
const MAX_HEADERS: usize = 100;

/// What the exporter needs of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without its query.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The raw `Authorization` value.
    pub authorization: Option<String>,
    /// The client asked to close after this answer (or speaks HTTP/1.0).
    pub close: bool,
    /// `Accept-Encoding` allows gzip.
    pub gzip: bool,
}

impl Request {
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Why a head is refused; the connection is closed after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not HTTP/1.x, or malformed: 400.
    Malformed,
    /// More headers than [`MAX_HEADERS`]: 431.
    TooManyHeaders,
    /// The request announces a body, which nothing here takes: 413.
    Body,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::Malformed => 400,
            Refusal::TooManyHeaders => 431,
            Refusal::Body => 413,
        }
    }
}

/// Where the head at the start of `buf` ends (after its empty line), if it is complete.
/// `from`: bytes already searched, so a trickled head is scanned once.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(2);
    let mut i = start;
    while let Some(at) = buf
        .get(i..)
        .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
    {
        let lf = i + at;
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => i = lf + 1,
        }
    }
    None
}

/// Bytes of empty lines before a request, which RFC 9112 says to ignore.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// Parses one complete head (as delimited by [`head_end`]).
pub fn parse(head: &[u8]) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Refusal::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
        Err(_) => return Err(Refusal::Malformed),
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Refusal::Malformed);
    };
    let mut request = Request {
        method: method.to_owned(),
        path: target.split(['?', '#']).next().unwrap_or("/").to_owned(),
        minor_version,
        authorization: None,
        close: minor_version == 0,
        gzip: false,
    };
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = std::str::from_utf8(header.value).map_err(|_| Refusal::Malformed);
        if name.eq_ignore_ascii_case("content-length") {
            match value?.trim().parse::<u64>() {
                Ok(0) => {}
                Ok(_) => return Err(Refusal::Body),
                Err(_) => return Err(Refusal::Malformed),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Refusal::Body);
        } else if name.eq_ignore_ascii_case("authorization") {
            if request.authorization.is_some() {
                return Err(Refusal::Malformed);
            }
            request.authorization = Some(value?.trim().to_owned());
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value?, "close") {
                request.close = true;
            }
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            request.gzip |= accepts_gzip(value?);
        }
    }
    Ok(request)
}

fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `gzip` in an `Accept-Encoding` list, with a weight above zero.
fn accepts_gzip(list: &str) -> bool {
    list.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        coding.eq_ignore_ascii_case("gzip") && weight > 0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_finds_crlf_and_bare_lf_heads_at_every_split() {
        let head = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET";
        assert_eq!(head_end(head, 0), Some(head.len() - 3));
        for from in 0..head.len() - 3 {
            assert_eq!(head_end(head, from), Some(head.len() - 3), "from {from}");
        }
        // Scanning byte by byte as a trickled head arrives.
        let mut searched = 0;
        for len in 1..=head.len() - 3 {
            match head_end(&head[..len], searched) {
                Some(end) => assert_eq!(end, len),
                None => searched = len,
            }
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: t\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: t\r\n", 0), None);
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
    }

    #[test]
    fn a_scrape_is_parsed() {
        let r = parse(
            b"GET /metrics?x=1 HTTP/1.1\r\nAuthorization: Basic YTpi\r\nAccept-Encoding: gzip, deflate\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.authorization.as_deref(), Some("Basic YTpi"));
        assert!(r.gzip && !r.close);
        let r = parse(b"HEAD / HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.is_head() && r.close && !r.gzip);
        let r = parse(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").unwrap();
        assert!(r.close);
    }

    #[test]
    fn any_announced_body_is_refused_whatever_its_size() {
        for head in [
            "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 1000000000000000\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
        ] {
            assert_eq!(parse(head.as_bytes()), Err(Refusal::Body), "{head}");
        }
        for head in [
            "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET /\r\n\r\n",
            "G\x00T / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
        ] {
            assert_eq!(parse(head.as_bytes()), Err(Refusal::Malformed), "{head:?}");
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()), Err(Refusal::TooManyHeaders));
    }

    #[test]
    fn gzip_needs_a_positive_weight() {
        assert!(accepts_gzip("gzip"));
        assert!(accepts_gzip("br;q=1.0, GZIP;q=0.5"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("deflate, identity"));
        assert!(!accepts_gzip("*"));
    }
}
