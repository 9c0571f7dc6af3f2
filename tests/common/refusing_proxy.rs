//! A loopback HTTP proxy in front of a real server (SeaweedFS) that, while
//! told to, answers `500` to the requests whose request line contains a
//! given text (or passes a given test), as a store failing one kind of
//! request would; everything else goes through unchanged, one request per
//! connection. Stopped on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

pub struct RefusingProxy {
    addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    accepting: Option<thread::JoinHandle<()>>,
}

impl RefusingProxy {
    /// Listens on a free loopback port, forwarding to `upstream`; refuses
    /// requests whose request line contains `refused_line` while [`RefusingProxy::refuse`] is on.
    pub fn start(upstream: SocketAddr, refused_line: &str) -> RefusingProxy {
        let refused_line = refused_line.to_string();
        RefusingProxy::start_refusing(upstream, move |line| line.contains(&refused_line))
    }

    /// Like [`RefusingProxy::start`], refusing the requests whose request line passes `refuses`.
    pub fn start_refusing(
        upstream: SocketAddr,
        refuses: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> RefusingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (refusing, refused, stopped) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let shared = (refusing.clone(), refused.clone(), stopped.clone(), Arc::new(refuses));
        let accepting = thread::spawn(move || {
            let (refusing, refused, stopped, refuses) = shared;
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let refuse = refusing.clone();
                let (refused, refuses) = (refused.clone(), refuses.clone());
                thread::spawn(move || {
                    let refuse = |line: &str| refuse.load(Ordering::Relaxed) && refuses(line);
                    let _ = serve(client, upstream, refuse, &refused);
                });
            }
        });
        RefusingProxy { addr, refusing, refused, stopped, accepting: Some(accepting) }
    }

    /// `http://127.0.0.1:PORT`, for `--s3-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::Relaxed);
    }

    /// How many requests it refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    refuse: impl Fn(&str) -> bool,
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            // One request per connection, so that every request is looked at.
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let request_line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
    let mut client = client;
    if refuse(&request_line) {
        refused.fetch_add(1, Ordering::Relaxed);
        std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink())?;
        client.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return client.shutdown(Shutdown::Both);
    }
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&head)?;
    std::io::copy(&mut (&mut reader).take(length), &mut server)?;
    std::io::copy(&mut server, &mut client)?;
    let _ = server.shutdown(Shutdown::Both);
    client.shutdown(Shutdown::Both)
}
