//! Helpers for the TLS tests: a one-connection server around a
//! `TlsAcceptor`, and a rustls client, all on loopback.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flakeforge::tls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How the server side of one connection went.
pub struct Served {
    /// The handshake's result, then (when it succeeded) the echo's.
    pub result: io::Result<()>,
    /// The time `wrap` took.
    pub handshake_time: Duration,
}

/// Accepts one connection on loopback, wraps it, and answers one line
/// `ping` with `pong` through the TLS stream.
pub fn serve_one(acceptor: TlsAcceptor) -> (SocketAddr, JoinHandle<Served>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let started = Instant::now();
        let wrapped = acceptor.wrap(tcp);
        let handshake_time = started.elapsed();
        let result = wrapped.and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut line = String::new();
            BufReader::new(&mut stream).read_line(&mut line)?;
            assert_eq!(line, "ping\n");
            stream.write_all(b"pong\n")?;
            stream.flush()
        });
        Served { result, handshake_time }
    });
    (addr, thread)
}

/// A client configuration trusting only the certificates in `ca_pem`.
pub fn client_trusting(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects as `name`, says `ping`, expects `pong`; returns the server's
/// certificate chain. Verification failures come back as `InvalidData`.
pub fn ping(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> io::Result<Vec<CertificateDer<'static>>> {
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(config, server_name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    stream.write_all(b"ping\n")?;
    stream.flush()?;
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line)?;
    assert_eq!(line, "pong\n");
    assert_eq!(stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // The server's stream ends with close_notify when dropped: a clean end, not UnexpectedEof.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    assert!(rest.is_empty());
    Ok(stream.conn.peer_certificates().unwrap().to_vec())
}

/// One handshake against a fresh one-connection server: the client's
/// result and the server's.
pub fn handshake(
    acceptor: &TlsAcceptor,
    config: Arc<ClientConfig>,
    name: &str,
) -> (io::Result<Vec<CertificateDer<'static>>>, Served) {
    let (addr, server) = serve_one(acceptor.clone());
    let client = ping(addr, config, name);
    (client, server.join().unwrap())
}

/// CPU time (user + system) this process has used so far.
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
