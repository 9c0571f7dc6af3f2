//! Turning an accepted TCP connection into a TLS one: the rustls server
//! configuration, and a handshake that a slow, silent or hostile peer cannot
//! stretch past its deadline or turn into a busy loop.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::server::ResolvesServerCert;
use rustls::{ServerConfig, ServerConnection};

use super::stream::TlsStream;
use super::TlsError;
use crate::http::Transport;

/// The first byte of every TLS record carrying a handshake message.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The most time spent on a plain HTTP client before closing on it.
const PLAIN_HTTP_LINGER: Duration = Duration::from_secs(1);

/// Performs TLS handshakes for the HTTP server; cheap to clone.
#[derive(Clone, Debug)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    pub(crate) fn new(resolver: Arc<dyn ResolvesServerCert>) -> Result<TlsAcceptor, TlsError> {
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor { config: Arc::new(config), handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT })
    }

    /// The whole time a client has for its handshake, from the moment the
    /// connection is wrapped (default 10 s).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsAcceptor {
        self.handshake_timeout = timeout;
        self
    }

    /// Performs the server side of the handshake and returns the encrypted
    /// stream, with no read or write timeout set. A client speaking plain
    /// HTTP gets a 400 answer saying to use HTTPS (taking at most ~3 s).
    ///
    /// Errors are the peer's doing and worth a debug line at most:
    /// `TimedOut` (no handshake by the deadline), `UnexpectedEof` (closed or
    /// close_notify during the handshake), `InvalidData` (a TLS error, after
    /// the alert was sent, or plain HTTP).
    pub fn wrap(&self, mut tcp: TcpStream) -> io::Result<Box<dyn Transport>> {
        let deadline = Deadline { at: Instant::now() + self.handshake_timeout, timeout: self.handshake_timeout };
        if peek_first_byte(&tcp, &deadline)? != HANDSHAKE_RECORD {
            answer_plain_http(&mut tcp);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP on the HTTPS port (answered 400)"));
        }
        let mut conn = ServerConnection::new(Arc::clone(&self.config)).map_err(io::Error::other)?;
        handshake(&mut conn, &mut tcp, &deadline)?;
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        Ok(Box::new(TlsStream::new(conn, tcp)))
    }

    /// [`wrap`](Self::wrap) as the closure `http::serve_with` takes.
    #[allow(clippy::type_complexity)]
    pub fn into_wrapper(self) -> Arc<dyn Fn(TcpStream) -> io::Result<Box<dyn Transport>> + Send + Sync> {
        Arc::new(move |tcp| self.wrap(tcp))
    }
}

/// The end of the handshake time; every socket wait is bounded by what is left.
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn left(&self) -> io::Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        // A zero timeout would mean "wait forever" to the socket.
        if left < Duration::from_millis(1) {
            return Err(self.expired());
        }
        Ok(left)
    }

    fn expired(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("no TLS handshake within {:?}", self.timeout))
    }

    /// A socket timeout read as the deadline passing.
    fn explain(&self, err: io::Error) -> io::Error {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.expired(),
            _ => err,
        }
    }
}

fn peek_first_byte(tcp: &TcpStream, deadline: &Deadline) -> io::Result<u8> {
    let mut first = [0u8; 1];
    loop {
        tcp.set_read_timeout(Some(deadline.left()?))?;
        match tcp.peek(&mut first) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a TLS handshake")),
            Ok(_) => return Ok(first[0]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(deadline.explain(err)),
        }
    }
}

/// Runs the handshake to its end. Every pass either waits for the socket
/// (bounded by the deadline) or returns, so no peer can make it spin: EOF
/// and close_notify end it, as do rustls errors (after sending the alert).
fn handshake(conn: &mut ServerConnection, tcp: &mut TcpStream, deadline: &Deadline) -> io::Result<()> {
    loop {
        while conn.wants_write() {
            tcp.set_write_timeout(Some(deadline.left()?))?;
            match conn.write_tls(tcp) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(deadline.explain(err)),
            }
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        tcp.set_read_timeout(Some(deadline.left()?))?;
        match conn.read_tls(tcp) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake")),
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(deadline.explain(err)),
        }
        match conn.process_new_packets() {
            Ok(state) if state.peer_has_closed() => {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "close_notify during the TLS handshake"));
            }
            Ok(_) => {}
            Err(err) => {
                // Tell the peer why (best effort, bounded by the deadline).
                if let Ok(left) = deadline.left() {
                    let _ = tcp.set_write_timeout(Some(left));
                    let _ = conn.write_tls(tcp);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, err));
            }
        }
    }
}

/// Answers a plain HTTP request with a 400 that says to use HTTPS.
fn answer_plain_http(tcp: &mut TcpStream) {
    let body = "This port speaks HTTPS: use https:// (the CA that signs this registry's \
                certificate is printed by `flakeforge ca`).\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.set_read_timeout(Some(PLAIN_HTTP_LINGER));
    let _ = tcp.set_write_timeout(Some(PLAIN_HTTP_LINGER));
    // Closing with unread input makes the kernel send a reset, which can
    // destroy the answer before the client reads it: read the request
    // first, and after the answer read until the client closes (bounded).
    let mut sink = [0u8; 8192];
    let _ = tcp.read(&mut sink);
    if tcp.write_all(answer.as_bytes()).is_err() || tcp.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let linger_end = Instant::now() + PLAIN_HTTP_LINGER;
    let mut drained = 0;
    while Instant::now() < linger_end && drained < 64 * 1024 {
        match tcp.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
