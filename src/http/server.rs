//! Accepting connections and running the request/response loop on each:
//! one thread per listener accepts, one thread per connection serves, and
//! the admission table (`admission.rs`) decides who gets a slot.

use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::admission::{Admission, Ticket, Verdict};
use super::request::{is_timeout, read_within, Head, HeadReader, Rejection, Version};
use super::response::{write_response, Delivery, Sent};
use super::{Request, Response};
use crate::metrics;

/// Large enough that a blob goes out in few system calls.
const OUTPUT_BUFFER_BYTES: usize = 64 * 1024;
/// How long a connection past the limit may take to set up and to take its answer.
const OVERLOAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Closing a socket with unread input resets it, and the reset can destroy
/// the answer before the client reads it; so input left unread (a request
/// body, a rejected head) is read and dropped for a while before closing.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;
/// After a failed accept (out of file descriptors, say), to avoid spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the registry plugs into the server.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &Request) -> Response;
    /// The answer to a connection past `max_connections` (then closed).
    fn overloaded(&self) -> Response;
    /// The answer to a head that is malformed (400), too slow (408), too large
    /// (431) or of another HTTP version (505), and to a handler panic (500).
    fn bad_request(&self, status: u16, message: &str) -> Response;
    /// What kind of endpoint `request` is for, as the metrics count it
    /// (`manifest`, `blob`, `web`…): a small fixed set, never a path.
    fn endpoint_kind(&self, _request: &Request) -> &'static str {
        "other"
    }
}

/// A byte stream the server can run HTTP over: plain TCP, or TLS on TCP.
pub trait Transport: Read + Write + Send {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
}

#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// The largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Open connections served at once; past it an idle one is closed to
    /// make room, or the newcomer is answered `overloaded`.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64), likewise.
    pub max_connections_per_ip: usize,
    /// For a whole request head, from its first byte; also how long a new
    /// connection may wait before its first request begins.
    pub head_timeout: Duration,
    /// A head must also keep up a rate: it may take `head_grace` plus one
    /// second per `min_head_rate` bytes received so far (so a client that
    /// drips a byte at a time is let go after `head_grace`, not at the
    /// head timeout). Not flags: documented in README.md.
    pub head_grace: Duration,
    /// Bytes per second; see `head_grace`.
    pub min_head_rate: u64,
    /// How long a connection may sit idle between requests.
    pub keepalive_timeout: Duration,
    /// For each write to the client, so one that stops reading is let go.
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_header_bytes: 16 * 1024,
            max_connections: 512,
            max_connections_per_ip: 128,
            head_timeout: Duration::from_secs(10),
            head_grace: Duration::from_secs(3),
            min_head_rate: 1024,
            keepalive_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Turns an accepted TCP connection into the transport HTTP runs over (a TLS
/// handshake, say). Runs on the connection's own thread, with the socket's
/// read and write timeouts already set to bound it.
pub type MakeTransport = Arc<dyn Fn(TcpStream) -> io::Result<Box<dyn Transport>> + Send + Sync>;

/// Serves plain HTTP on every listener until the process ends.
pub fn serve(listeners: Vec<TcpListener>, limits: ServerLimits, handler: Arc<dyn Handler>) -> io::Result<()> {
    let plain: MakeTransport = Arc::new(|tcp| Ok(Box::new(tcp) as Box<dyn Transport>));
    serve_with(listeners, limits, handler, plain)
}

/// Serves every listener until the process ends, running HTTP over what
/// `make_transport` makes of each connection.
pub fn serve_with(
    listeners: Vec<TcpListener>,
    limits: ServerLimits,
    handler: Arc<dyn Handler>,
    make_transport: MakeTransport,
) -> io::Result<()> {
    if listeners.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no listeners to serve"));
    }
    raise_open_file_limit(&limits);
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_ip);
    let shared = Arc::new(Shared { limits, handler, make_transport, admission });
    let mut accepting = Vec::new();
    for listener in listeners {
        let shared = Arc::clone(&shared);
        accepting
            .push(thread::Builder::new().name("http-accept".into()).spawn(move || accept_loop(&listener, &shared))?);
    }
    for thread in accepting {
        thread.join().map_err(|_| io::Error::other("an accept thread panicked"))?;
    }
    Ok(())
}

struct Shared {
    limits: ServerLimits,
    handler: Arc<dyn Handler>,
    make_transport: MakeTransport,
    admission: Arc<Admission>,
}

/// A connection with a thread (served or being turned away) in the
/// `connections_open` gauge, taken out when dropped, also when its thread
/// unwinds.
struct Open;

impl Open {
    fn count() -> Open {
        metrics::global().http.connections_open.inc();
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::global().http.connections_open.dec();
    }
}

/// Each served connection takes two descriptors (its socket and the handle
/// the admission table keeps), plus a blob file or Nix's pipes at times:
/// the soft limit (often 1024) is raised to the hard one.
fn raise_open_file_limit(limits: &ServerLimits) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let wanted = 3 * limits.max_connections as u64 + 256;
    // rlim_t is 32 bits on some targets.
    #[allow(clippy::unnecessary_cast)]
    if (limit.rlim_cur as u64) < wanted {
        warn!(
            "the open file limit is {}: --max-connections {} wants about {wanted}; raise it (ulimit -n, LimitNOFILE=)",
            limit.rlim_cur, limits.max_connections
        );
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((tcp, peer)) => admit(tcp, peer, shared),
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                warn!("accepting a connection failed: {e}");
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// Starts the connection's thread, unless far too many are being turned away already.
fn admit(tcp: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    let http_metrics = &metrics::global().http;
    http_metrics.connections.inc();
    let verdict = shared.admission.admit(&tcp, peer);
    if !matches!(verdict, Verdict::Serve(_)) {
        http_metrics.connections_refused.inc();
    }
    if let Verdict::Close = verdict {
        return debug!("{peer}: closed unanswered, too many are being turned away");
    }
    let open = Open::count();
    let shared = Arc::clone(shared);
    let spawned = thread::Builder::new().name("http-connection".into()).spawn(move || {
        let _open = open;
        run_connection(tcp, peer, &shared, verdict)
    });
    if let Err(e) = spawned {
        warn!("{peer}: no thread for the connection: {e}");
    }
}

fn run_connection(tcp: TcpStream, peer: SocketAddr, shared: &Shared, verdict: Verdict) {
    let limits = &shared.limits;
    let overloaded = matches!(verdict, Verdict::TurnAway(_));
    let (setup_timeout, write_timeout) =
        if overloaded { (OVERLOAD_TIMEOUT, OVERLOAD_TIMEOUT) } else { (limits.head_timeout, limits.write_timeout) };
    // Each response is flushed whole; Nagle would hold back its last segment.
    let setup = tcp
        .set_nodelay(true)
        .and_then(|()| tcp.set_read_timeout(Some(setup_timeout)))
        .and_then(|()| tcp.set_write_timeout(Some(write_timeout)))
        .and_then(|()| (shared.make_transport)(tcp));
    let mut transport = match setup {
        Ok(transport) => transport,
        Err(e) => return debug!("{peer}: connection setup failed: {e}"),
    };
    match verdict {
        Verdict::Serve(ticket) => serve_connection(&mut *transport, peer, limits, &*shared.handler, Some(&ticket)),
        Verdict::TurnAway(place) => {
            turn_away(&mut *transport, peer, &*shared.handler);
            drop(place);
        }
        Verdict::Close => {}
    }
}

/// Answers `overloaded` at once, without waiting for the request.
fn turn_away(stream: &mut dyn Transport, peer: SocketAddr, handler: &dyn Handler) {
    let started = Instant::now();
    let delivery = Delivery { version: Version::Http11, head_only: false, keep_alive: false };
    let sent = write_response(&mut BufWriter::new(&mut *stream), handler.overloaded(), &delivery);
    log_exchange(peer, None, &sent, started);
    match &sent.error {
        Some(e) => log_write_error(peer, e),
        None => discard_unread_input(stream),
    }
}

/// Serves requests on one connection until it closes, fails, times out or
/// must not carry another request.
pub fn handle_connection<T: Transport + ?Sized>(
    stream: &mut T,
    peer: SocketAddr,
    limits: &ServerLimits,
    handler: &dyn Handler,
) {
    serve_connection(stream, peer, limits, handler, None);
}

/// [`handle_connection`], telling `ticket` when the connection is idle.
fn serve_connection<T: Transport + ?Sized>(
    stream: &mut T,
    peer: SocketAddr,
    limits: &ServerLimits,
    handler: &dyn Handler,
    ticket: Option<&Ticket>,
) {
    if let Err(e) = stream.set_write_timeout(Some(limits.write_timeout)) {
        return debug!("{peer}: cannot set the write timeout: {e}");
    }
    let mut heads = HeadReader::default();
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, stream);
    let mut idle_timeout = limits.head_timeout;
    loop {
        let Some(mut incoming) = heads.next_head(&mut **out.get_mut(), idle_timeout, limits, ticket) else { return };
        if let Ok(head) = &mut incoming.head {
            head.request.peer = peer;
        }
        let (response, delivery) = match &incoming.head {
            Ok(head) => respond(head, handler, peer),
            Err(rejection) => (
                handler.bad_request(rejection.status, rejection.message),
                Delivery { version: Version::Http11, head_only: false, keep_alive: false },
            ),
        };
        let sent = write_response(&mut out, response, &delivery);
        log_exchange(peer, incoming.head.as_ref().ok(), &sent, incoming.started);
        let endpoint = incoming.head.as_ref().map_or("invalid", |head| handler.endpoint_kind(&head.request));
        metrics::global().http.exchange(endpoint, sent.status, sent.body_bytes, incoming.started.elapsed());
        if let Some(e) = &sent.error {
            return log_write_error(peer, e);
        }
        if !sent.reusable {
            if leaves_input_unread(&incoming.head) {
                discard_unread_input(&mut **out.get_mut());
            }
            return;
        }
        idle_timeout = limits.keepalive_timeout;
    }
}

/// The handler's answer; a panic in it becomes a 500 that closes the connection.
fn respond(head: &Head, handler: &dyn Handler, peer: SocketAddr) -> (Response, Delivery) {
    let mut delivery = Delivery {
        version: head.version,
        head_only: head.request.method == "HEAD",
        keep_alive: head.keep_alive && !head.has_body,
    };
    match panic::catch_unwind(AssertUnwindSafe(|| handler.handle(&head.request))) {
        Ok(response) => (response, delivery),
        Err(_) => {
            error!("{peer}: the handler panicked on {} {}", head.request.method, head.request.path);
            delivery.keep_alive = false;
            (handler.bad_request(500, "internal error"), delivery)
        }
    }
}

fn leaves_input_unread(head: &Result<Head, Rejection>) -> bool {
    match head {
        Ok(head) => head.has_body,
        // A slow client has not sent the rest, and lingering would wait on it.
        Err(rejection) => rejection.status != 408,
    }
}

fn discard_unread_input<T: Transport + ?Sized>(stream: &mut T) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut scratch = [0; 8 * 1024];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match read_within(stream, &mut scratch, deadline.saturating_duration_since(Instant::now())) {
            Ok(0) | Err(_) => break,
            Ok(n) => discarded += n,
        }
    }
}

/// The one line logged per request, e.g.
/// `127.0.0.1:5566 "GET /v2/ HTTP/1.1" 200 2 0.3ms`.
fn log_exchange(peer: SocketAddr, head: Option<&Head>, sent: &Sent, started: Instant) {
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    let (status, bytes) = (sent.status, sent.body_bytes);
    match head {
        Some(Head { request, version, .. }) => {
            let query = request.query.as_deref().map(|q| format!("?{q}")).unwrap_or_default();
            let (method, path, version) = (&request.method, &request.path, version.as_str());
            info!("{peer} \"{method} {path}{query} {version}\" {status} {bytes} {millis:.1}ms");
        }
        None => info!("{peer} \"-\" {status} {bytes} {millis:.1}ms"),
    }
}

/// A client that goes away or stops reading is routine; anything else (a
/// stream body that failed or broke its declared length) is worth a warning.
fn log_write_error(peer: SocketAddr, error: &io::Error) {
    use io::ErrorKind::*;
    if is_timeout(error)
        || matches!(error.kind(), BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | WriteZero)
    {
        debug!("{peer}: connection lost while answering: {error}");
    } else {
        warn!("{peer}: response aborted, closing the connection: {error}");
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use super::super::testing::{parse_responses, send, ScriptedTransport, Step, TestHandler, TestResponse};
    use super::{handle_connection, ServerLimits};

    fn limits() -> ServerLimits {
        ServerLimits {
            max_header_bytes: 1024,
            max_connections: 2,
            head_timeout: Duration::from_millis(300),
            keepalive_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_secs(1),
            ..ServerLimits::default()
        }
    }

    /// Plays `steps` as the client; what was sent back, raw, and how long it took.
    fn converse(steps: Vec<Step>) -> (String, Duration) {
        let mut transport = ScriptedTransport::new(steps);
        let started = Instant::now();
        handle_connection(&mut transport, SocketAddr::from((Ipv4Addr::LOCALHOST, 5566)), &limits(), &TestHandler);
        (String::from_utf8_lossy(&transport.output).into_owned(), started.elapsed())
    }

    fn responses_to(steps: Vec<Step>) -> Vec<TestResponse> {
        parse_responses(converse(steps).0.as_bytes())
    }

    fn bodies(responses: &[TestResponse]) -> Vec<String> {
        responses.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect()
    }

    #[test]
    fn get_is_answered_with_status_line_and_length() {
        let (raw, _) = converse(vec![send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")]);
        assert_eq!(raw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello");
    }

    #[test]
    fn head_gets_the_get_headers_and_no_body() {
        let (raw, _) = converse(vec![send(
            b"HEAD /hello HTTP/1.1\r\n\r\nHEAD /head-only HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n",
        )]);
        assert_eq!(
            raw,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\
             HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n/x"
        );
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let two = responses_to(vec![send(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(bodies(&two), ["/1", "/2"]);
        let three = responses_to(vec![send(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n")]);
        assert_eq!(bodies(&three), ["/1", "/2", "/3"]);
    }

    #[test]
    fn a_head_split_across_reads_and_a_pipelined_tail_are_reassembled() {
        let responses = responses_to(vec![
            send(b"GET /1 HT"),
            Step::Pause(Duration::from_millis(20)),
            send(b"TP/1.1\r\n\r\nGET /2 HTTP/1.1\r"),
            send(b"\n\r\n"),
        ]);
        assert_eq!(bodies(&responses), ["/1", "/2"]);
    }

    #[test]
    fn keep_alive_carries_requests_sent_separately() {
        let responses = responses_to(vec![
            send(b"GET /1 HTTP/1.1\r\n\r\n"),
            Step::Pause(Duration::from_millis(100)),
            send(b"GET /2 HTTP/1.1\r\n\r\n"),
        ]);
        assert_eq!(bodies(&responses), ["/1", "/2"]);
        assert_eq!(responses[0].header("connection"), None);
    }

    #[test]
    fn connection_close_ends_the_connection_after_the_answer() {
        let responses =
            responses_to(vec![send(b"GET /1 HTTP/1.1\r\nConnection: Close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(bodies(&responses), ["/1"]);
        assert_eq!(responses[0].header("connection"), Some("close"));
    }

    #[test]
    fn http_1_0_closes_unless_it_asks_for_keep_alive() {
        let closing = responses_to(vec![send(b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")]);
        assert_eq!(bodies(&closing), ["/1"]);
        assert_eq!(closing[0].header("connection"), Some("close"));
        let kept = responses_to(vec![send(
            b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )]);
        assert_eq!(bodies(&kept), ["/1", "/2"]);
        assert_eq!(kept[0].header("connection"), Some("keep-alive"));
    }

    #[test]
    fn a_head_over_the_limit_gets_431_and_closes() {
        let large = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", "a".repeat(2000));
        let responses = responses_to(vec![send(large.as_bytes())]);
        assert_eq!(bodies(&responses), ["request head too large"]);
        assert_eq!(responses[0].status, 431);
        // A head that never ends is cut off at the limit too, not read forever.
        let endless = format!("GET / HTTP/1.1\r\nX-Filler: {}", "a".repeat(4000));
        assert_eq!(responses_to(vec![send(endless.as_bytes())])[0].status, 431);
    }

    #[test]
    fn garbage_gets_400_and_other_versions_505() {
        let garbage =
            responses_to(vec![send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(garbage.len(), 1);
        assert_eq!((garbage[0].status, garbage[0].header("connection")), (400, Some("close")));
        assert_eq!(responses_to(vec![send(b"GET / HTTP/2.0\r\n\r\n")])[0].status, 505);
    }

    #[test]
    fn a_slow_head_gets_408_at_its_deadline() {
        let request = b"GET /hello HTTP/1.1\r\nHost: a-host-name-that-takes-long\r\n\r\n";
        let drip = request.iter().flat_map(|&b| [send(&[b]), Step::Pause(Duration::from_millis(20))]).collect();
        let (raw, took) = converse(drip);
        let responses = parse_responses(raw.as_bytes());
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].status, 408);
        assert!(took >= limits().head_timeout && took < Duration::from_millis(700), "took {took:?}");
    }

    #[test]
    fn an_idle_keep_alive_connection_is_closed_silently() {
        let (raw, took) = converse(vec![send(b"GET /1 HTTP/1.1\r\n\r\n"), Step::Pause(Duration::from_secs(5))]);
        assert_eq!(bodies(&parse_responses(raw.as_bytes())), ["/1"]);
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }

    #[test]
    fn a_stream_of_unknown_length_is_chunked_and_keeps_the_connection() {
        let (raw, _) = converse(vec![send(b"GET /chunked HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert!(
            raw.starts_with(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nabcdefg\r\n0\r\n\r\nHTTP/1.1 404"
            ),
            "{raw}"
        );
        assert_eq!(bodies(&parse_responses(raw.as_bytes())), ["abcdefg", "/2"]);
    }

    #[test]
    fn a_stream_of_unknown_length_to_http_1_0_ends_with_the_connection() {
        let (raw, _) =
            converse(vec![send(b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n")]);
        assert_eq!(raw, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabcdefg");
    }

    #[test]
    fn a_stream_of_declared_length_is_sent_with_it() {
        let responses = responses_to(vec![send(b"GET /sized HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(bodies(&responses), ["abcdef", "/2"]);
        assert_eq!(responses[0].header("content-length"), Some("6"));
    }

    #[test]
    fn a_stream_that_breaks_its_length_closes_the_connection() {
        let (short, _) = converse(vec![send(b"GET /short HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(short, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        let (long, _) = converse(vec![send(b"GET /long HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(long, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
    }

    #[test]
    fn a_request_with_a_body_is_answered_then_closed() {
        for request in [
            &b"POST /1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\n\r\n"[..],
            b"POST /1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        ] {
            let responses = responses_to(vec![send(request)]);
            assert_eq!(bodies(&responses), ["/1"]);
            assert_eq!(responses[0].header("connection"), Some("close"));
        }
        let empty_body =
            responses_to(vec![send(b"GET /1 HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(bodies(&empty_body), ["/1", "/2"]);
    }

    #[test]
    fn a_handler_panic_is_answered_500_and_closes() {
        let responses = responses_to(vec![send(b"GET /panic HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert_eq!(responses.len(), 1);
        assert_eq!((responses[0].status, responses[0].header("connection")), (500, Some("close")));
    }

    #[test]
    fn statuses_without_body_send_none() {
        let (raw, _) = converse(vec![send(b"GET /no-content HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        assert!(raw.starts_with("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 404 Not Found\r\n"), "{raw}");
    }

    #[test]
    fn a_client_gone_mid_body_ends_the_connection_quietly() {
        let mut transport = ScriptedTransport::new(vec![send(b"GET /big HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")]);
        transport.output_limit = 100_000;
        handle_connection(&mut transport, SocketAddr::from((Ipv4Addr::LOCALHOST, 5566)), &limits(), &TestHandler);
        assert_eq!(transport.output.len(), 100_000);
    }
}
