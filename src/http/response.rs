//! Responses: what a handler returns, and how it is framed and written on a
//! connection (Content-Length, chunked or close-delimited; no body for HEAD).

use std::io::{self, BufWriter, Write};

use log::{debug, warn};

use super::request::Version;

/// Small writes of a chunked body are gathered into chunks of this size, so
/// that the chunk framing stays a negligible share of the bytes sent.
const CHUNK_BYTES: usize = 32 * 1024;

/// A body produced while it is sent (a blob read from disk, or generated).
pub trait StreamBody: Send {
    /// Writes the whole body. An error aborts the response and closes the connection.
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()>;
}

pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// `len` is sent as Content-Length when known; otherwise chunked (or,
    /// to an HTTP/1.0 client, delimited by closing the connection). A stream
    /// that writes a different number of bytes than `len` closes the connection.
    Stream {
        len: Option<u64>,
        source: Box<dyn StreamBody>,
    },
}

/// A response as the handler builds it. The server owns the framing headers:
/// `Content-Length`, `Transfer-Encoding` and `Connection` come from the body
/// and the connection's state, and same-named headers set here are dropped.
/// Answer `HEAD` with the response `GET` would get: the body is not sent
/// (a [`StreamBody`] is dropped without running) but its length is.
pub struct Response {
    pub status: u16,
    /// A reason phrase of the handler's instead of the standard one (see [`Response::reason`]).
    pub reason: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// The longest reason phrase sent.
const MAX_REASON_BYTES: usize = 512;

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, reason: None, headers: Vec::new(), body: Body::Empty }
    }

    /// Sends `reason` as the status line's reason phrase: clients that show
    /// only the status line (containerd, and so kubelet's events) show it.
    /// Anything but printable ASCII becomes `?`; it is cut at 512 bytes.
    pub fn reason(mut self, reason: &str) -> Self {
        let printable = reason.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' });
        self.reason = Some(printable.take(MAX_REASON_BYTES).collect());
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn bytes(mut self, body: Vec<u8>) -> Self {
        self.body = Body::Bytes(body);
        self
    }

    pub fn stream(mut self, len: Option<u64>, source: Box<dyn StreamBody>) -> Self {
        self.body = Body::Stream { len, source };
        self
    }
}

/// How a response is to be sent on its connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub version: Version,
    /// The request was `HEAD`: headers only.
    pub head_only: bool,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// What writing a response came to.
#[derive(Debug)]
pub(crate) struct Sent {
    pub status: u16,
    pub body_bytes: u64,
    /// The connection is in a known state and may carry another request.
    pub reusable: bool,
    pub error: Option<io::Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    NoBody,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes the whole response and flushes `out`.
pub(crate) fn write_response(out: &mut dyn Write, response: Response, delivery: &Delivery) -> Sent {
    let status = if (100..=999).contains(&response.status) {
        response.status
    } else {
        warn!("handler answered with status {}, sending 500", response.status);
        500
    };
    let framing = match &response.body {
        _ if status < 200 || status == 204 || status == 304 => Framing::NoBody,
        Body::Empty => Framing::Length(0),
        Body::Bytes(bytes) => Framing::Length(bytes.len() as u64),
        Body::Stream { len: Some(len), .. } => Framing::Length(*len),
        Body::Stream { len: None, .. } if delivery.version == Version::Http11 => Framing::Chunked,
        Body::Stream { len: None, .. } => Framing::UntilClose,
    };
    let keep_alive = delivery.keep_alive && framing != Framing::UntilClose;
    let reason = response.reason.as_deref().filter(|_| status == response.status).unwrap_or(reason_phrase(status));
    let head = render_head(status, reason, &response.headers, framing, keep_alive, delivery.version);
    let mut body_bytes = 0;
    let mut result = out.write_all(head.as_bytes());
    if result.is_ok() && !delivery.head_only && framing != Framing::NoBody {
        let (written, body_result) = write_body(out, response.body, framing);
        body_bytes = written;
        result = body_result;
    }
    let error = result.and_then(|()| out.flush()).err();
    Sent { status, body_bytes, reusable: keep_alive && error.is_none(), error }
}

fn render_head(
    status: u16,
    reason: &str,
    headers: &[(String, String)],
    framing: Framing,
    keep_alive: bool,
    version: Version,
) -> String {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        if ["content-length", "transfer-encoding", "connection"]
            .iter()
            .any(|framing| name.eq_ignore_ascii_case(framing))
        {
            debug!("dropping the handler's {name} header: the server sets it");
        } else if !is_header_safe(name, value) {
            warn!("dropping a header that would break the response head: {name:?}");
        } else {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    match framing {
        Framing::Length(len) => head.push_str(&format!("Content-Length: {len}\r\n")),
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::NoBody | Framing::UntilClose => {}
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    } else if version == Version::Http10 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A name that is a token and a value without line breaks: anything else
/// (say a value built from request input) could forge headers or a response.
fn is_header_safe(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// The body bytes written (before chunk framing), and whether all went well.
fn write_body(out: &mut dyn Write, body: Body, framing: Framing) -> (u64, io::Result<()>) {
    match framing {
        Framing::Length(len) => write_metered(out, body, Some(len)),
        Framing::Chunked => {
            let mut chunks = BufWriter::with_capacity(CHUNK_BYTES, ChunkEncoder(out));
            let (written, result) = write_metered(&mut chunks, body, None);
            let result = match result {
                Ok(()) => chunks.into_inner().map_err(|e| e.into_error()).and_then(ChunkEncoder::finish),
                Err(error) => {
                    // Not flushed: the connection is closed anyway.
                    let _unsent = chunks.into_parts();
                    Err(error)
                }
            };
            (written, result)
        }
        Framing::NoBody | Framing::UntilClose => write_metered(out, body, None),
    }
}

fn write_metered(out: &mut dyn Write, body: Body, declared: Option<u64>) -> (u64, io::Result<()>) {
    let mut metered = Metered { inner: out, written: 0, limit: declared.unwrap_or(u64::MAX) };
    let mut result = match body {
        Body::Empty => Ok(()),
        Body::Bytes(bytes) => metered.write_all(&bytes),
        Body::Stream { source, .. } => source.write_to(&mut metered),
    };
    if result.is_ok() && declared.is_some_and(|len| len != metered.written) {
        result = Err(io::Error::new(io::ErrorKind::InvalidData, "stream body shorter than its declared length"));
    }
    (metered.written, result)
}

/// Counts what passes through and refuses bytes past the declared length,
/// which the client would otherwise take for the start of the next response.
struct Metered<'a> {
    inner: &'a mut dyn Write,
    written: u64,
    limit: u64,
}

impl Write for Metered<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = usize::try_from(self.limit - self.written).unwrap_or(usize::MAX);
        if room == 0 && !data.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "stream body longer than its declared length"));
        }
        let n = self.inner.write(&data[..data.len().min(room)])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Sends each write as one chunk of `Transfer-Encoding: chunked`.
struct ChunkEncoder<'a>(&'a mut dyn Write);

impl ChunkEncoder<'_> {
    fn finish(self) -> io::Result<()> {
        self.0.write_all(b"0\r\n\r\n")
    }
}

impl Write for ChunkEncoder<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // An empty chunk would end the body.
        if !data.is_empty() {
            write!(self.0, "{:x}\r\n", data.len())?;
            self.0.write_all(data)?;
            self.0.write_all(b"\r\n")?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
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
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Write};

    use super::super::testing::Pieces;
    use super::{write_response, ChunkEncoder, Delivery, Response, Sent, StreamBody, CHUNK_BYTES};
    use crate::http::request::Version;

    const GET: Delivery = Delivery { version: Version::Http11, head_only: false, keep_alive: true };

    fn written(response: Response, delivery: Delivery) -> (String, Sent) {
        let mut out = Vec::new();
        let sent = write_response(&mut out, response, &delivery);
        (String::from_utf8(out).unwrap(), sent)
    }

    /// Writes a piece, then fails like a blob whose file went away.
    struct FailsMidway;

    impl StreamBody for FailsMidway {
        fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(b"part")?;
            Err(io::Error::new(io::ErrorKind::NotFound, "blob vanished"))
        }
    }

    #[test]
    fn the_server_owns_framing_and_drops_unsafe_headers() {
        let response = Response::new(200)
            .header("Content-Length", "99")
            .header("connection", "upgrade")
            .header("Transfer-Encoding", "gzip")
            .header("X-Injected", "a\r\nSet-Cookie: b")
            .header("Bad Name", "c")
            .header("Docker-Distribution-API-Version", "registry/2.0");
        let (raw, sent) = written(response, GET);
        assert_eq!(
            raw,
            "HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(sent.reusable && sent.error.is_none());
    }

    #[test]
    fn odd_statuses_are_sent_or_replaced() {
        assert!(written(Response::new(599), GET).0.starts_with("HTTP/1.1 599 \r\n"));
        let (raw, sent) = written(Response::new(42).bytes(b"x".to_vec()), GET);
        assert!(raw.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{raw}");
        assert_eq!(sent.status, 500);
        assert_eq!(written(Response::new(304).bytes(b"x".to_vec()), GET).0, "HTTP/1.1 304 Not Modified\r\n\r\n");
    }

    #[test]
    fn a_reason_phrase_of_the_handler_is_sent_printable() {
        let response = Response::new(429).reason("Too Many Requests: a:b is being built\r\nX: y é");
        assert!(written(response, GET).0.starts_with("HTTP/1.1 429 Too Many Requests: a:b is being built??X: y ?\r\n"));
        // Not on a status the server had to replace.
        assert!(written(Response::new(42).reason("odd"), GET).0.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
    }

    #[test]
    fn small_writes_share_a_chunk_and_large_ones_get_their_own() {
        static LARGE: [u8; CHUNK_BYTES + 1] = [b'y'; CHUNK_BYTES + 1];
        let body = Pieces(vec![b"ab", b"c", &LARGE, b"z"]);
        let (raw, sent) = written(Response::new(200).stream(None, Box::new(body)), GET);
        let large = String::from_utf8(LARGE.to_vec()).unwrap();
        let expected = format!("3\r\nabc\r\n{:x}\r\n{large}\r\n1\r\nz\r\n0\r\n\r\n", LARGE.len());
        assert_eq!(raw.split_once("\r\n\r\n").unwrap().1, expected);
        assert_eq!(sent.body_bytes, LARGE.len() as u64 + 4);
        assert!(sent.reusable);
    }

    #[test]
    fn an_empty_write_is_not_taken_for_the_last_chunk() {
        let mut out = Vec::new();
        assert_eq!(ChunkEncoder(&mut out).write(b"").unwrap(), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn head_sends_the_framing_of_get_and_no_body() {
        let head_only = Delivery { head_only: true, ..GET };
        let (raw, sent) = written(Response::new(200).stream(None, Box::new(Pieces(vec![b"abc"]))), head_only);
        assert_eq!(raw, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(sent.reusable);
        assert_eq!(sent.body_bytes, 0);
    }

    #[test]
    fn a_failing_stream_leaves_the_connection_unusable() {
        for len in [None, Some(10)] {
            let (raw, sent) = written(Response::new(200).stream(len, Box::new(FailsMidway)), GET);
            assert!(!raw.ends_with("0\r\n\r\n"), "{raw}");
            assert_eq!(sent.error.map(|e| e.kind()), Some(io::ErrorKind::NotFound));
            assert!(!sent.reusable);
            assert_eq!(sent.body_bytes, 4);
        }
    }

    #[test]
    fn a_response_to_http_1_0_is_never_chunked() {
        let http10 = Delivery { version: Version::Http10, ..GET };
        let (raw, sent) = written(Response::new(200).bytes(b"abc".to_vec()), http10);
        assert_eq!(raw, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc");
        assert!(sent.reusable);
        let (raw, sent) = written(Response::new(200).stream(None, Box::new(Pieces(vec![b"abc"]))), http10);
        assert_eq!(raw, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc");
        assert!(!sent.reusable && sent.error.is_none());
    }
}
