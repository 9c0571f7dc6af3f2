//! The encrypted stream the HTTP server reads requests from and writes
//! responses to, once the handshake is done.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rustls::{ServerConnection, StreamOwned};

use crate::http::Transport;

/// How long closing may wait for the peer to take our close_notify.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct TlsStream(StreamOwned<ServerConnection, TcpStream>);

impl TlsStream {
    pub(crate) fn new(conn: ServerConnection, tcp: TcpStream) -> TlsStream {
        TlsStream(StreamOwned::new(conn, tcp))
    }
}

/// Runs `op` again when a signal (SIGHUP for a reload) interrupted it:
/// socket calls with a timeout get EINTR even under SA_RESTART, and rustls
/// leaves its state intact when the socket fails.
fn retry_interrupted<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        retry_interrupted(|| self.0.read(buf))
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        retry_interrupted(|| self.0.write(buf))
    }

    /// Sends every buffered TLS record to the socket.
    fn flush(&mut self) -> io::Result<()> {
        retry_interrupted(|| self.0.flush())
    }
}

impl Transport for TlsStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.sock.set_read_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.sock.set_write_timeout(timeout)
    }
}

impl Drop for TlsStream {
    /// Ends the session with close_notify, so clients can tell a complete
    /// response from a cut connection; never waits long for a stuck peer.
    fn drop(&mut self) {
        let StreamOwned { conn, sock } = &mut self.0;
        conn.send_close_notify();
        let _ = sock.set_write_timeout(Some(CLOSE_TIMEOUT));
        while conn.wants_write() {
            match conn.write_tls(sock) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
