//! Peers that try to hold a TLS handshake open or make it spin: each must
//! end by the handshake deadline and cost next to no CPU.
//!
//! One test only in this binary, so that the process CPU time measured
//! (`getrusage(RUSAGE_SELF)`) is this test's and no other's.

mod common;

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::tls_client::{client_trusting, process_cpu_time, serve_one};
use common::TestDir;
use flakeforge::tls::{self, TlsOptions};
use rustls::pki_types::ServerName;
use rustls::ClientConnection;

const DEADLINE: Duration = Duration::from_millis(800);
/// Far above what one handshake costs, far below a loop spinning until the deadline.
const CPU_BUDGET: Duration = Duration::from_millis(150);

/// The bytes of a real ClientHello, then those of a close_notify alert.
fn client_hello_and_close_notify(ca_pem: &str) -> (Vec<u8>, Vec<u8>) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(client_trusting(ca_pem), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    conn.send_close_notify();
    let mut alert = Vec::new();
    conn.write_tls(&mut alert).unwrap();
    (hello, alert)
}

type Attack<'a> = (&'a str, Box<dyn Fn(&mut TcpStream) -> io::Result<()> + 'a>);

#[test]
fn hostile_handshakes_end_by_the_deadline_and_cost_no_cpu() {
    let state = TestDir::new();
    let options = TlsOptions {
        state_dir: state.path().to_path_buf(),
        listen: vec!["127.0.0.1:5000".parse().unwrap()],
        hostnames: Vec::new(),
        cert_files: None,
        new_ca: false,
    };
    let acceptor = tls::setup(&options).unwrap().with_handshake_timeout(DEADLINE);
    let (hello, alert) = client_hello_and_close_notify(&tls::ca_pem(state.path()).unwrap());
    let garbage: Vec<u8> = std::iter::once(0x16).chain([0xff; 300]).collect();

    let attacks: Vec<Attack> = vec![
        // RUSTSEC-2024-0336: a ClientHello, then close_notify, socket left open.
        ("close_notify after ClientHello", Box::new(|tcp| tcp.write_all(&[hello.as_slice(), &alert].concat()))),
        (
            "EOF after ClientHello",
            Box::new(|tcp| {
                tcp.write_all(&hello)?;
                tcp.shutdown(Shutdown::Write)
            }),
        ),
        ("silence", Box::new(|_| Ok(()))),
        ("half a ClientHello", Box::new(|tcp| tcp.write_all(&hello[..hello.len() / 2]))),
        (
            "a byte every 100 ms",
            Box::new(|tcp| {
                for byte in hello.iter().take(20) {
                    if tcp.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            }),
        ),
        ("garbage after a handshake record byte", Box::new(|tcp| tcp.write_all(&garbage))),
    ];
    for (what, attack) in attacks {
        let cpu_before = process_cpu_time();
        let started = Instant::now();
        let (addr, server) = serve_one(acceptor.clone());
        let mut tcp = TcpStream::connect(addr).unwrap();
        attack(&mut tcp).unwrap();
        let served = server.join().unwrap();
        let (elapsed, cpu) = (started.elapsed(), process_cpu_time() - cpu_before);
        drop(tcp);
        assert!(served.result.is_err(), "{what}: the handshake succeeded");
        assert!(
            served.handshake_time < DEADLINE + Duration::from_millis(300),
            "{what}: took {:?}",
            served.handshake_time
        );
        assert!(elapsed < DEADLINE + Duration::from_secs(2), "{what}: took {elapsed:?}");
        assert!(cpu < CPU_BUDGET, "{what}: used {cpu:?} of CPU");
        eprintln!("{what}: ended after {:?} using {cpu:?} CPU: {}", served.handshake_time, served.result.unwrap_err());
    }
}
