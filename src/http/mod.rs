//! A small HTTP/1.1 server on `httparse`: one thread per connection,
//! keep-alive and pipelining, bounded heads, connection counts and timeouts.
//! Generic over the byte stream (see [`Transport`]) so TLS plugs in below it.

mod admission;
pub mod listen;
pub mod request;
pub mod response;
pub mod server;

pub use request::Request;
pub use response::{Body, Response, StreamBody};
pub use server::{handle_connection, serve, serve_with, Handler, MakeTransport, ServerLimits, Transport};

/// What the tests of this layer share: a scripted in-memory transport, a
/// handler with one route per behaviour, and a parser for what was sent.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::io::{self, Read, Write};
    use std::thread;
    use std::time::Duration;

    use super::{Handler, Request, Response, StreamBody, Transport};

    /// One thing the scripted client does.
    pub(crate) enum Step {
        Send(Vec<u8>),
        Pause(Duration),
    }

    pub(crate) fn send(bytes: &[u8]) -> Step {
        Step::Send(bytes.to_vec())
    }

    /// Plays its steps as the input (pauses honour the read timeout, then
    /// the input ends) and keeps everything written.
    pub(crate) struct ScriptedTransport {
        steps: VecDeque<Step>,
        read_timeout: Cell<Option<Duration>>,
        pub output: Vec<u8>,
        /// Writes fail once this much is out, as if the client went away.
        pub output_limit: usize,
    }

    impl ScriptedTransport {
        pub(crate) fn new(steps: Vec<Step>) -> Self {
            ScriptedTransport {
                steps: steps.into(),
                read_timeout: Cell::new(None),
                output: Vec::new(),
                output_limit: usize::MAX,
            }
        }
    }

    impl Read for ScriptedTransport {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                match self.steps.front_mut() {
                    None => return Ok(0),
                    Some(Step::Send(data)) if data.is_empty() => {}
                    Some(Step::Send(data)) => {
                        let n = data.len().min(buf.len());
                        buf[..n].copy_from_slice(&data[..n]);
                        data.drain(..n);
                        return Ok(n);
                    }
                    Some(Step::Pause(pause)) => match self.read_timeout.get() {
                        Some(timeout) if timeout < *pause => {
                            thread::sleep(timeout);
                            *pause -= timeout;
                            return Err(io::ErrorKind::WouldBlock.into());
                        }
                        _ => thread::sleep(*pause),
                    },
                }
                self.steps.pop_front();
            }
        }
    }

    impl Write for ScriptedTransport {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let room = self.output_limit - self.output.len();
            if room == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = data.len().min(room);
            self.output.extend_from_slice(&data[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for ScriptedTransport {
        fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
            self.read_timeout.set(timeout);
            Ok(())
        }

        fn set_write_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes its pieces one `write_all` at a time.
    pub(crate) struct Pieces(pub Vec<&'static [u8]>);

    impl StreamBody for Pieces {
        fn write_to(self: Box<Self>, out: &mut dyn Write) -> io::Result<()> {
            self.0.iter().try_for_each(|piece| out.write_all(piece))
        }
    }

    /// A body that must never be run (the answer to a HEAD request).
    struct MustNotRun;

    impl StreamBody for MustNotRun {
        fn write_to(self: Box<Self>, _: &mut dyn Write) -> io::Result<()> {
            panic!("the body of a HEAD response was run")
        }
    }

    pub(crate) struct TestHandler;

    impl Handler for TestHandler {
        fn handle(&self, request: &Request) -> Response {
            let ok = Response::new(200);
            match request.path.as_str() {
                "/hello" => ok.header("Content-Type", "text/plain").bytes(b"hello".to_vec()),
                "/chunked" => ok.stream(None, Box::new(Pieces(vec![b"abc", b"", b"defg"]))),
                "/sized" => ok.stream(Some(6), Box::new(Pieces(vec![b"abc", b"def"]))),
                "/short" => ok.stream(Some(10), Box::new(Pieces(vec![b"abc"]))),
                "/long" => ok.stream(Some(3), Box::new(Pieces(vec![b"abcdef"]))),
                "/big" => ok.stream(Some(1 << 20), Box::new(Pieces(vec![&[b'x'; 64 * 1024]; 16]))),
                "/head-only" => ok.stream(Some(4), Box::new(MustNotRun)),
                "/no-content" => Response::new(204).bytes(b"dropped".to_vec()),
                "/panic" => panic!("the test handler panics on purpose"),
                other => Response::new(404).bytes(other.as_bytes().to_vec()),
            }
        }

        fn overloaded(&self) -> Response {
            Response::new(503).bytes(b"busy".to_vec())
        }

        fn bad_request(&self, status: u16, message: &str) -> Response {
            Response::new(status).bytes(message.as_bytes().to_vec())
        }
    }

    #[derive(Debug)]
    pub(crate) struct TestResponse {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl TestResponse {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
    }

    /// The complete responses at the start of `raw`, framed by their
    /// Content-Length, chunked encoding or the end of `raw`.
    pub(crate) fn parse_responses(mut raw: &[u8]) -> Vec<TestResponse> {
        let mut responses = Vec::new();
        while !raw.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            let Ok(httparse::Status::Complete(head_len)) = parsed.parse(raw) else { break };
            let mut response = TestResponse {
                status: parsed.code.unwrap_or_default(),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.into(), String::from_utf8_lossy(h.value).into()))
                    .collect(),
                body: Vec::new(),
            };
            let rest = &raw[head_len..];
            let body_len = match (response.header("content-length"), response.header("transfer-encoding")) {
                _ if response.status == 204 || response.status == 304 => Some(0),
                (Some(len), _) => len.parse().ok().filter(|&len| len <= rest.len()),
                (None, Some("chunked")) => dechunk(rest, &mut response.body),
                (None, _) => Some(rest.len()),
            };
            let Some(body_len) = body_len else { break };
            if response.body.is_empty() {
                response.body = rest[..body_len].to_vec();
            }
            responses.push(response);
            raw = &rest[body_len..];
        }
        responses
    }

    /// Decodes a complete chunked body into `body`; how many bytes it took.
    fn dechunk(raw: &[u8], body: &mut Vec<u8>) -> Option<usize> {
        let mut at = 0;
        loop {
            let Ok(httparse::Status::Complete((size_len, size))) = httparse::parse_chunk_size(&raw[at..]) else {
                return None;
            };
            let start = at + size_len;
            let end = start + usize::try_from(size).ok()?;
            if raw.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            body.extend_from_slice(&raw[start..end]);
            at = end + 2;
            if size == 0 {
                return Some(at);
            }
        }
    }
}

/// The whole layer over real loopback TCP.
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::testing::{parse_responses, TestHandler, TestResponse};
    use super::{serve, ServerLimits};

    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

    fn limits() -> ServerLimits {
        ServerLimits {
            max_connections: 2,
            head_timeout: Duration::from_millis(300),
            keepalive_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        }
    }

    fn start_server(limits: ServerLimits) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || serve(vec![listener], limits, Arc::new(TestHandler)));
        address
    }

    fn connect(address: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        stream
    }

    /// Sends `request`, then reads until `count` responses are complete or
    /// the server closes (or the client's timeout passes).
    fn exchange(stream: &mut TcpStream, request: &[u8], count: usize) -> Vec<TestResponse> {
        stream.write_all(request).unwrap();
        let (mut raw, mut buf) = (Vec::new(), [0; 16 * 1024]);
        loop {
            let responses = parse_responses(&raw);
            if responses.len() >= count {
                return responses;
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return responses,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn server_closes(stream: &mut TcpStream) -> bool {
        matches!(stream.read(&mut [0; 1]), Ok(0))
    }

    #[test]
    fn serves_keep_alive_requests_until_the_client_says_close() {
        let mut client = connect(start_server(limits()));
        let hello = exchange(&mut client, b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n", 1);
        assert_eq!((hello[0].status, &hello[0].body[..]), (200, &b"hello"[..]));
        let pipelined = exchange(&mut client, b"GET /chunked HTTP/1.1\r\n\r\nGET /sized HTTP/1.1\r\n\r\n", 2);
        assert_eq!([&pipelined[0].body[..], &pipelined[1].body[..]], [&b"abcdefg"[..], b"abcdef"]);
        let last = exchange(&mut client, b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n", 1);
        assert_eq!(last[0].header("connection"), Some("close"));
        assert!(server_closes(&mut client));
    }

    #[test]
    fn an_idle_connection_is_closed_after_the_keepalive_timeout() {
        let mut client = connect(start_server(limits()));
        assert_eq!(exchange(&mut client, b"GET /1 HTTP/1.1\r\n\r\n", 1).len(), 1);
        let idle_since = Instant::now();
        assert!(server_closes(&mut client));
        assert!(idle_since.elapsed() < Duration::from_secs(2), "closed after {:?}", idle_since.elapsed());
    }

    /// Sends a head a byte every `pause` to a server with `limits`: its
    /// answer, and how long that took.
    fn dripped_head(limits: ServerLimits, pause: Duration) -> (u16, Duration) {
        let mut client = connect(start_server(limits));
        let mut dripper = client.try_clone().unwrap();
        thread::spawn(move || {
            for byte in b"GET /hello HTTP/1.1\r\nHost: a-host-that-takes-a-while-to-send\r\n\r\n" {
                thread::sleep(pause);
                if dripper.write_all(&[*byte]).is_err() {
                    return;
                }
            }
        });
        let started = Instant::now();
        let responses = exchange(&mut client, b"", 1);
        (responses[0].status, started.elapsed())
    }

    #[test]
    fn a_byte_a_time_head_is_cut_off_at_the_deadline() {
        let (status, took) = dripped_head(limits(), Duration::from_millis(50));
        assert_eq!(status, 408);
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }

    #[test]
    fn the_answer_to_a_request_with_a_body_reaches_a_client_still_sending_it() {
        let mut client = connect(start_server(limits()));
        // More than the socket buffers hold, less than the server discards:
        // closing without reading it would reset the connection while the
        // client is still sending, and it would never see the answer.
        let body_len = 768 * 1024;
        let mut request = format!("POST /upload HTTP/1.1\r\nContent-Length: {body_len}\r\n\r\n").into_bytes();
        request.resize(request.len() + body_len, b'x');
        let responses = exchange(&mut client, &request, 1);
        assert_eq!(responses.len(), 1, "the answer was lost");
        assert_eq!((responses[0].status, responses[0].header("connection")), (404, Some("close")));
    }

    #[test]
    fn connections_past_the_limit_are_turned_away_until_one_closes() {
        // Two connections busy in the middle of their heads, which must outlive the test.
        let patient = Duration::from_secs(10);
        let address = start_server(ServerLimits {
            head_timeout: patient,
            head_grace: patient,
            keepalive_timeout: patient,
            ..limits()
        });
        let mut first = connect(address);
        let mut second = connect(address);
        for client in [&mut first, &mut second] {
            client.write_all(b"GET /open HTTP/1.1\r\nHost: a-head-not-finished-yet\r\n").unwrap();
        }
        thread::sleep(Duration::from_millis(200));
        let mut third = connect(address);
        let turned_away = exchange(&mut third, b"GET /third HTTP/1.1\r\n\r\n", 1);
        assert_eq!((turned_away[0].status, &turned_away[0].body[..]), (503, &b"busy"[..]));
        assert!(server_closes(&mut third));
        drop((first, third));
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut fourth = connect(address);
            let status = exchange(&mut fourth, b"GET /fourth HTTP/1.1\r\n\r\n", 1)[0].status;
            if status == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "the count of open connections never went down");
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(exchange(&mut second, b"\r\n", 1)[0].status, 404, "the busy connection was kept");
    }

    #[test]
    fn idle_keep_alive_connections_make_room_for_new_ones() {
        let patient = Duration::from_secs(10);
        let address = start_server(ServerLimits { keepalive_timeout: patient, ..limits() });
        let mut idle: Vec<TcpStream> = (0..2).map(|_| connect(address)).collect();
        for client in &mut idle {
            assert_eq!(exchange(client, b"GET /open HTTP/1.1\r\n\r\n", 1)[0].status, 404);
        }
        // Each newcomer is served: the longest idle connection is closed for
        // it. A connection counts as busy until its thread, after the answer,
        // is back to waiting for a request: on a loaded machine that may take
        // a moment, and a newcomer meanwhile is turned away and tries again.
        for round in 0..4 {
            let deadline = Instant::now() + Duration::from_secs(20);
            let newcomer = loop {
                let mut newcomer = connect(address);
                match exchange(&mut newcomer, b"GET /new HTTP/1.1\r\n\r\n", 1)[0].status {
                    404 => break newcomer,
                    503 if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                    status => panic!("round {round}: {status} while idle connections held the slots"),
                }
            };
            idle.push(newcomer);
        }
        // Which ones went depends on which threads were back to waiting; how many does not.
        let closed = idle
            .iter_mut()
            .map(|client| {
                client.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                matches!(client.read(&mut [0; 1]), Ok(0))
            })
            .filter(|&closed| closed)
            .count();
        assert_eq!(closed, 4, "one closed for each newcomer");
    }

    #[test]
    fn a_head_that_drips_below_the_minimum_rate_is_cut_off_before_the_head_timeout() {
        let limits = ServerLimits {
            head_timeout: Duration::from_secs(30),
            head_grace: Duration::from_millis(300),
            min_head_rate: 100,
            ..limits()
        };
        let (status, took) = dripped_head(limits, Duration::from_millis(100));
        assert_eq!(status, 408);
        // 10 bytes a second earn 0.1 s each: cut off well before the 30 s timeout.
        assert!(took < Duration::from_secs(10), "answered after {took:?}");
    }
}
