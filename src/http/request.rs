//! Request heads: the [`Request`] a handler sees, and the reader that takes
//! heads off a connection within the size and time limits.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use log::debug;

use super::admission::Ticket;
use super::server::{ServerLimits, Transport};

/// A head with more header lines than this is answered like one that is too large.
const MAX_HEADERS: usize = 100;
/// How much is asked of the transport per read while a head is incomplete.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// One parsed request head. The body, if any, is not read by the handler.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method as sent (`GET`, `HEAD`, ...).
    pub method: String,
    /// The path part of the target, not percent-decoded.
    pub path: String,
    /// The query string without the `?`, if any.
    pub query: Option<String>,
    /// Header names as sent; look them up with [`Request::header`].
    pub headers: Vec<(String, String)>,
    /// The client's address (the TCP peer), for limits and logs per client.
    pub peer: SocketAddr,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order (e.g. several `Accept` headers).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded (`+` stays `+`). The first one wins
    /// if the key repeats; a key without `=` has the empty value.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name) == key).then(|| percent_decode(value))
        })
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is,
/// and bytes that are not UTF-8 become U+FFFD rather than an error.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'%' { bytes.get(i + 1..i + 3).and_then(hex_byte) } else { None };
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    Http10,
    Http11,
}

impl Version {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A request head together with what it means for its connection.
#[derive(Debug)]
pub(crate) struct Head {
    pub request: Request,
    pub version: Version,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The request announces a body. It is never read, so the connection
    /// cannot be reused: its next bytes are not a request head.
    pub has_body: bool,
}

/// Why a head cannot be served; answered through `Handler::bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub status: u16,
    pub message: &'static str,
}

const MALFORMED: Rejection = Rejection { status: 400, message: "malformed request head" };
const TOO_SLOW: Rejection = Rejection { status: 408, message: "request head not received in time" };
const TOO_LARGE: Rejection = Rejection { status: 431, message: "request head too large" };
const BAD_VERSION: Rejection = Rejection { status: 505, message: "only HTTP/1.0 and HTTP/1.1 are supported" };

/// A request that has begun on a connection.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// When its first byte was at hand.
    pub started: Instant,
    pub head: Result<Head, Rejection>,
}

/// Reads request heads off one connection, keeping the bytes that follow a
/// head for the next call (pipelined requests arrive in the same reads).
#[derive(Debug, Default)]
pub(crate) struct HeadReader {
    buffer: Vec<u8>,
    /// What each read goes into first: allocated once, never zeroed again.
    scratch: Vec<u8>,
}

impl HeadReader {
    /// Waits up to `idle_timeout` for a request to begin, then up to
    /// `limits.head_timeout` for its whole head, as long as it keeps up the
    /// minimum rate. `None` when the connection closed, failed or stayed
    /// idle before a request began. While it waits for a request to begin,
    /// `ticket` knows it is idle (and it may be closed to make room).
    pub(crate) fn next_head<T: Transport + ?Sized>(
        &mut self,
        stream: &mut T,
        idle_timeout: Duration,
        limits: &ServerLimits,
        ticket: Option<&Ticket>,
    ) -> Option<Incoming> {
        if self.buffer.is_empty() {
            if let Some(ticket) = ticket {
                ticket.idle();
            }
            let read = self.read_more(stream, idle_timeout);
            if ticket.is_some_and(|ticket| !ticket.busy()) {
                debug!("an idle connection was closed to make room");
                return None;
            }
            match read {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => {
                    debug!("closing an idle connection: {error}");
                    return None;
                }
            }
        }
        let started = Instant::now();
        // One deadline for the whole head: a fresh timeout per read would let
        // a client that sends a byte at a time hold the connection forever.
        // Within it the head must keep up the minimum rate.
        let deadline = |received: usize| {
            let earned = Duration::from_secs_f64(received as f64 / limits.min_head_rate.max(1) as f64);
            let allowed = limits.head_timeout.min(limits.head_grace.saturating_add(earned));
            started.checked_add(allowed)
        };
        // Parsed when it may have become complete (or too large), and once
        // at first to catch garbage early: a client sending a byte per
        // read must not make each read parse the whole head again.
        let mut parsed_len = None;
        loop {
            if parsed_len.is_none_or(|parsed| may_be_complete(&self.buffer, parsed, limits.max_header_bytes)) {
                match parse_head(&self.buffer, limits.max_header_bytes) {
                    Ok(Some((len, head))) => {
                        self.buffer.drain(..len);
                        return Some(Incoming { started, head: Ok(head) });
                    }
                    Ok(None) => parsed_len = Some(self.buffer.len()),
                    Err(rejection) => return Some(Incoming { started, head: Err(rejection) }),
                }
            }
            // (A timeout too large for a deadline stands for "no limit".)
            let time_left = deadline(self.buffer.len())
                .map_or(limits.head_timeout, |d| d.saturating_duration_since(Instant::now()));
            match self.read_more(stream, time_left) {
                Ok(0) => {
                    debug!("connection closed in the middle of a request head");
                    return None;
                }
                Ok(_) => {}
                Err(error) if is_timeout(&error) => return Some(Incoming { started, head: Err(TOO_SLOW) }),
                Err(error) => {
                    debug!("connection failed in the middle of a request head: {error}");
                    return None;
                }
            }
        }
    }

    fn read_more<T: Transport + ?Sized>(&mut self, stream: &mut T, timeout: Duration) -> io::Result<usize> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; READ_CHUNK_BYTES];
        }
        let read = read_within(stream, &mut self.scratch, timeout)?;
        self.buffer.extend_from_slice(&self.scratch[..read]);
        Ok(read)
    }
}

/// Whether the bytes past `parsed` (the length last parsed as incomplete)
/// may end the head: a blank line (`\n\n` or `\n\r\n`) in them, or the
/// size limit reached.
fn may_be_complete(buffer: &[u8], parsed: usize, max_bytes: usize) -> bool {
    let fresh = &buffer[parsed.saturating_sub(2)..];
    buffer.len() >= max_bytes || fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n")
}

/// One read that gives up after `timeout` (an error of kind `TimedOut` or
/// `WouldBlock`, as the platform reports it).
pub(crate) fn read_within<T: Transport + ?Sized>(
    stream: &mut T,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<usize> {
    // A zero timeout would mean "no timeout" to the socket.
    if timeout.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(timeout))?;
    loop {
        match stream.read(buf) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

pub(crate) fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// The head at the start of `buffer` and its length, or `None` if it is
/// still incomplete.
fn parse_head(buffer: &[u8], max_bytes: usize) -> Result<Option<(usize, Head)>, Rejection> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if len <= max_bytes => len,
        Ok(httparse::Status::Partial) if buffer.len() < max_bytes => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(httparse::Error::Version) if names_another_http_version(buffer) => return Err(BAD_VERSION),
        Err(_) => return Err(MALFORMED),
    };
    let target = parsed.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    let request = Request {
        method: parsed.method.unwrap_or_default().to_string(),
        path: path.to_string(),
        query,
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect(),
        // The connection fills it in; a head alone does not know it.
        peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    };
    let version = if parsed.version == Some(0) { Version::Http10 } else { Version::Http11 };
    let connection_says = |token: &str| {
        request.headers_named("connection").flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = !connection_says("close") && (version == Version::Http11 || connection_says("keep-alive"));
    let content_lengths: Result<Vec<u64>, _> =
        request.headers_named("content-length").map(|v| v.trim().parse()).collect();
    let has_body = match content_lengths {
        Ok(lengths) => lengths.iter().any(|&len| len > 0) || request.header("transfer-encoding").is_some(),
        Err(_) => return Err(MALFORMED),
    };
    Ok(Some((len, Head { request, version, keep_alive, has_body })))
}

/// Whether the request line ends in a well-formed version other than 1.0/1.1
/// (`HTTP/2.0`, `HTTP/3`): that gets a 505, anything else a 400.
fn names_another_http_version(buffer: &[u8]) -> bool {
    let line = buffer.split(|&b| b == b'\n').find(|line| !line.is_empty() && *line != b"\r").unwrap_or_default();
    let token = line.strip_suffix(b"\r").unwrap_or(line).rsplit(|&b| b == b' ').next().unwrap_or_default();
    match token.strip_prefix(b"HTTP/") {
        Some(number) => {
            number.first().is_some_and(u8::is_ascii_digit) && number.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{may_be_complete, parse_head, Head, Rejection, Request, Version, BAD_VERSION, MALFORMED, TOO_LARGE};

    fn request_with_query(query: &str) -> Request {
        Request {
            method: "GET".into(),
            path: "/".into(),
            query: Some(query.into()),
            headers: Vec::new(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    fn head(raw: &str) -> Head {
        match parse_head(raw.as_bytes(), 1024) {
            Ok(Some((len, head))) => {
                assert_eq!(len, raw.len());
                head
            }
            other => panic!("{raw:?} parsed as {other:?}"),
        }
    }

    fn rejection(raw: &[u8]) -> Rejection {
        match parse_head(raw, 1024) {
            Err(rejection) => rejection,
            other => panic!("{raw:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let request = request_with_query("n=2&last=a%2Fb&flag&plus=a+b&bad=%zz%4&key%3D=v&n=3&utf8=%C3%A9&broken=%FF");
        assert_eq!(request.query_param("n").as_deref(), Some("2"));
        assert_eq!(request.query_param("last").as_deref(), Some("a/b"));
        assert_eq!(request.query_param("flag").as_deref(), Some(""));
        assert_eq!(request.query_param("plus").as_deref(), Some("a+b"));
        assert_eq!(request.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(request.query_param("key=").as_deref(), Some("v"));
        assert_eq!(request.query_param("utf8").as_deref(), Some("é"));
        assert_eq!(request.query_param("broken").as_deref(), Some("\u{FFFD}"));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(Request { query: None, ..request }.query_param("n"), None);
    }

    #[test]
    fn a_head_splits_its_target_and_keeps_headers_as_sent() {
        let head = head("\r\nGET /v2/a%2Fb/tags/list?n=2&last=x HTTP/1.1\r\nAccept: a\r\naccept: b\r\nHost: h\r\n\r\n");
        assert_eq!((head.request.method.as_str(), head.request.path.as_str()), ("GET", "/v2/a%2Fb/tags/list"));
        assert_eq!(head.request.query.as_deref(), Some("n=2&last=x"));
        assert_eq!(head.request.header("ACCEPT"), Some("a"));
        assert_eq!(head.request.headers_named("accept").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((head.version, head.keep_alive, head.has_body), (Version::Http11, true, false));
    }

    #[test]
    fn connection_tokens_and_version_decide_keep_alive() {
        let keep_alive = |raw: &str| head(raw).keep_alive;
        assert!(keep_alive("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep_alive("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n"));
        assert!(!keep_alive("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep_alive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!keep_alive("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn a_length_or_transfer_coding_announces_a_body() {
        let has_body = |raw: &str| head(raw).has_body;
        assert!(!has_body("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        assert!(has_body("POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\n"));
        assert!(has_body("POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 7\r\n\r\n"));
        assert!(has_body("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert_eq!(rejection(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), MALFORMED);
    }

    #[test]
    fn a_head_is_parsed_again_only_when_it_may_have_ended() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n";
        assert!(!may_be_complete(head, head.len() - 1, 1024));
        assert!(may_be_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", head.len(), 1024));
        assert!(may_be_complete(b"GET / HTTP/1.1\n\n", 14, 1024));
        assert!(!may_be_complete(b"GET / HTTP/1.1\r\n\r", 15, 1024));
        // The blank line split across reads: the last read brought only its last byte.
        assert!(may_be_complete(b"GET / HTTP/1.1\r\n\r\n", 17, 1024));
        assert!(may_be_complete(&[b'x'; 1024], 1023, 1024));
    }

    #[test]
    fn incomplete_heads_wait_and_bad_ones_are_rejected() {
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 1024), Ok(None)));
        assert_eq!(rejection(&[b'x'; 1024]), TOO_LARGE);
        assert_eq!(rejection(format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(101)).as_bytes()), TOO_LARGE);
        assert_eq!(rejection(b"GET / HTTP/2.0\r\n\r\n"), BAD_VERSION);
        assert_eq!(rejection(b"GET / HTTP/3\r\n\r\n"), BAD_VERSION);
        assert_eq!(rejection(b"GET / FTP/1.1\r\n\r\n"), MALFORMED);
        assert_eq!(rejection(b"GET /\r\n\r\n"), MALFORMED);
        assert_eq!(rejection(b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"), MALFORMED);
        assert_eq!(rejection(b"\x16\x03\x01\x00\xa5\x01"), MALFORMED);
    }
}
