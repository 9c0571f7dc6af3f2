//! HTTPS through `flakeforge::tls` with a real rustls client on loopback:
//! the local CA, `--tls-cert`/`--tls-key` files and their reloading, and a
//! plain HTTP client on the TLS port.

mod common;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::tls_client::{client_trusting, handshake, serve_one};
use common::TestDir;
use flakeforge::tls::{self, CertFiles, TlsAcceptor, TlsError, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ED25519, PKCS_RSA_SHA256};

fn local_ca_options(state: &Path, hostnames: &[&str]) -> TlsOptions {
    TlsOptions {
        state_dir: state.to_path_buf(),
        listen: vec!["127.0.0.1:5000".parse().unwrap()],
        hostnames: hostnames.iter().map(|name| name.to_string()).collect(),
        cert_files: None,
        new_ca: false,
    }
}

#[test]
fn local_ca_certificate_verifies_for_every_name() {
    let state = TestDir::new();
    let acceptor = tls::setup(&local_ca_options(state.path(), &["registry.test"])).unwrap();
    let ca_pem = tls::ca_pem(state.path()).unwrap();
    let trusting = client_trusting(&ca_pem);
    for name in ["localhost", "127.0.0.1", "registry.test"] {
        let (client, served) = handshake(&acceptor, trusting.clone(), name);
        client.unwrap_or_else(|err| panic!("{name}: {err}"));
        served.result.unwrap();
    }

    let (client, served) = handshake(&acceptor, trusting, "elsewhere.test");
    assert!(client.unwrap_err().to_string().contains("certificate"), "a wrong name fails verification");
    assert!(served.result.is_err());

    let other_state = TestDir::new();
    let other_ca = client_trusting(&tls::ca_pem(other_state.path()).unwrap());
    let (client, _) = handshake(&acceptor, other_ca, "localhost");
    assert!(client.unwrap_err().to_string().contains("UnknownIssuer"), "a client trusting another CA fails");

    // A second start reuses the CA: the same PEM, still trusted.
    let again = tls::setup(&local_ca_options(state.path(), &["registry.test", "more.test"])).unwrap();
    assert_eq!(tls::ca_pem(state.path()).unwrap(), ca_pem);
    let (client, _) = handshake(&again, client_trusting(&ca_pem), "more.test");
    client.unwrap();
}

#[test]
fn bad_hostname_is_refused() {
    let state = TestDir::new();
    let err = tls::setup(&local_ca_options(state.path(), &["not a name"])).unwrap_err();
    assert!(matches!(err, TlsError::BadHostname(_)), "{err}");
}

/// A test CA and a server certificate for `localhost` signed by it, with
/// the server key given; returns (CA PEM, chain PEM).
fn issue_for_localhost(server_key: &KeyPair) -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = leaf.signed_by(server_key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem())
}

/// Replaces `path` the way ACME clients do: a new file renamed over it.
fn replace(path: &Path, contents: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn files_acceptor(dir: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_files = CertFiles { cert: dir.join("chain.pem"), key: dir.join("key.pem") };
    tls::setup(&TlsOptions { cert_files: Some(cert_files), ..local_ca_options(dir, &[]) })
}

#[test]
fn given_certificate_files_are_served_for_every_key_kind() {
    let rsa_pkcs8 = include_str!("data/rsa2048.pk8.pem");
    let ec_pkcs8 = include_str!("data/ec-p256.pk8.pem");
    // (what, the key rcgen signs with, the key file as served)
    let kinds = [
        ("ECDSA P-256, PKCS#8", KeyPair::generate().unwrap().serialize_pem(), None),
        ("Ed25519", KeyPair::generate_for(&PKCS_ED25519).unwrap().serialize_pem(), None),
        ("RSA 2048, PKCS#1", rsa_pkcs8.to_string(), Some(include_str!("data/rsa2048.pk1.pem"))),
        ("ECDSA P-256, SEC1", ec_pkcs8.to_string(), Some(include_str!("data/ec-p256.sec1.pem"))),
    ];
    for (what, signing_pem, served_key) in kinds {
        let dir = TestDir::new();
        let key = if what.starts_with("RSA") {
            KeyPair::from_pem_and_sign_algo(&signing_pem, &PKCS_RSA_SHA256).unwrap()
        } else {
            KeyPair::from_pem(&signing_pem).unwrap()
        };
        let (ca_pem, chain_pem) = issue_for_localhost(&key);
        std::fs::write(dir.path().join("chain.pem"), &chain_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), served_key.unwrap_or(&signing_pem)).unwrap();
        let acceptor = files_acceptor(dir.path()).unwrap_or_else(|err| panic!("{what}: {err}"));
        let (client, served) = handshake(&acceptor, client_trusting(&ca_pem), "localhost");
        client.unwrap_or_else(|err| panic!("{what}: {err}"));
        served.result.unwrap();
    }
}

#[test]
fn replaced_certificate_files_are_picked_up_without_a_restart() {
    let dir = TestDir::new();
    let (cert_path, key_path) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
    let first_key = KeyPair::generate().unwrap();
    let (first_ca, first_chain) = issue_for_localhost(&first_key);
    std::fs::write(&cert_path, first_chain).unwrap();
    std::fs::write(&key_path, first_key.serialize_pem()).unwrap();
    let acceptor = files_acceptor(dir.path()).unwrap();
    handshake(&acceptor, client_trusting(&first_ca), "localhost").0.unwrap();

    // A broken file keeps the current certificate.
    replace(&cert_path, "garbage");
    std::thread::sleep(Duration::from_millis(1100));
    handshake(&acceptor, client_trusting(&first_ca), "localhost").0.unwrap();

    let second_key = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let (second_ca, second_chain) = issue_for_localhost(&second_key);
    replace(&key_path, &second_key.serialize_pem());
    replace(&cert_path, &second_chain);
    // Checked at most once a second: the new one must show within a few.
    let give_up = Instant::now() + Duration::from_secs(5);
    while handshake(&acceptor, client_trusting(&second_ca), "localhost").0.is_err() {
        assert!(Instant::now() < give_up, "the new certificate was never served");
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGHUP: seen on the very next handshake, within the second.
    std::thread::sleep(Duration::from_millis(1100));
    handshake(&acceptor, client_trusting(&second_ca), "localhost").0.unwrap();
    let third_key = KeyPair::generate().unwrap();
    let (third_ca, third_chain) = issue_for_localhost(&third_key);
    replace(&key_path, &third_key.serialize_pem());
    replace(&cert_path, &third_chain);
    // SAFETY: setup installed the SIGHUP handler; raise signals this thread only.
    assert_eq!(unsafe { libc::raise(libc::SIGHUP) }, 0);
    handshake(&acceptor, client_trusting(&third_ca), "localhost").0.unwrap();
}

#[test]
fn bad_certificate_files_stop_the_start_with_one_line() {
    let dir = TestDir::new();
    let key = KeyPair::generate().unwrap();
    let other_key = KeyPair::generate().unwrap();
    let (_, chain) = issue_for_localhost(&key);
    let cases: [(&str, &str, &str); 4] = [
        ("not pem", &other_key.serialize_pem(), "no CERTIFICATE"),
        (&chain, "not pem", "no PRIVATE KEY"),
        (&chain, &other_key.serialize_pem(), "does not belong"),
        (&chain, "-----BEGIN PRIVATE KEY-----\nMIGH\n", "no END line"),
    ];
    for (cert, key, expected) in cases {
        std::fs::write(dir.path().join("chain.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let message = files_acceptor(dir.path()).expect_err("an error").to_string();
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert!(!message.contains('\n') && !message.contains("MIG"), "{message:?}");
    }
    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    let message = files_acceptor(dir.path()).unwrap_err().to_string();
    assert!(message.contains("key.pem"), "{message}");
}

#[test]
fn the_tls_stream_forwards_timeouts_to_the_socket() {
    let state = TestDir::new();
    let acceptor = tls::setup(&local_ca_options(state.path(), &[])).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut stream = acceptor.wrap(listener.accept().unwrap().0).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let started = Instant::now();
        let err = stream.read(&mut [0; 16]).unwrap_err();
        (err.kind(), started.elapsed())
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let config = client_trusting(&tls::ca_pem(state.path()).unwrap());
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    let (kind, waited) = server.join().unwrap();
    assert_eq!(kind, io::ErrorKind::WouldBlock);
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2), "{waited:?}");
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400() {
    let state = TestDir::new();
    let acceptor = tls::setup(&local_ca_options(state.path(), &[])).unwrap();
    let (addr, server) = serve_one(acceptor);
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost:5000\r\n\r\n").unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("HTTPS"), "{answer}");
    let served = server.join().unwrap();
    assert_eq!(served.result.unwrap_err().kind(), io::ErrorKind::InvalidData);
}
