//! HTTPS with real clients that verify: skopeo and podman trust only what
//! `flakeforge ca` prints (or a CA the test made for `--tls-cert`), and
//! reject a wrong name, an expired certificate and a CA they don't trust.

mod common;

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use common::clients::Podman;
use common::flake::HELLO;
use common::{run_capture, FlakeforgeServer, TestDir, TestFlake};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

/// `flakeforge ca --state-dir DIR`.
fn flakeforge_ca(state: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flakeforge")).arg("ca").arg("--state-dir").arg(state).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A directory with `ca.crt`, as skopeo's and podman's `--cert-dir` want it.
fn cert_dir(ca_pem: &str) -> TestDir {
    let dir = TestDir::new();
    fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
    dir
}

/// skopeo inspect over verified HTTPS: Ok, or the error text.
fn skopeo_inspect(host: &str, name: &str, certs: &Path) -> Result<String, String> {
    let mut command = Command::new("skopeo");
    command.args(["inspect", "--cert-dir"]).arg(certs).arg(format!("docker://{host}/{name}"));
    match run_capture(&mut command, 120) {
        (true, text) => Ok(text),
        (false, text) => Err(text),
    }
}

struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa { key, cert }
    }

    /// A server certificate and key (PEM) for `names`, optionally expired.
    fn issue(&self, names: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            });
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        (params.signed_by(&key, &self.cert, &self.key).unwrap().pem(), key.serialize_pem())
    }
}

#[test]
fn the_local_ca_is_trusted_by_skopeo_and_podman_and_kept_across_restarts() {
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start_tls(flake.path(), &["--hostname", "registry.test"]);
    let ca = flakeforge_ca(&server.state_dir());
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let trusted = cert_dir(&ca);
    skopeo_inspect(&server.host(), "hello", trusted.path()).expect("skopeo verifies against the local CA");

    let podman = Podman::new();
    let image = format!("{}/hello", server.host());
    podman.run(&["pull", "-q", "--cert-dir", trusted.path().to_str().unwrap(), &image]);
    assert_eq!(podman.run(&["run", "--rm", &image]).trim(), HELLO);

    // Another CA is not trusted.
    let other = cert_dir(&TestCa::new().cert.pem());
    let refused = skopeo_inspect(&server.host(), "hello", other.path()).unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    let (ok, _) = podman.try_run(&["pull", "--cert-dir", other.path().to_str().unwrap(), &image]);
    assert!(!ok, "podman pulled trusting a foreign CA");

    // Reused across restarts; a new hostname re-issues the server certificate, the CA stays.
    let tls = server.state_dir().join("tls");
    let server_cert = fs::read(tls.join("server.crt")).unwrap();
    server.restart();
    assert_eq!(fs::read(tls.join("server.crt")).unwrap(), server_cert);
    assert_eq!(flakeforge_ca(&server.state_dir()), ca);
    let key_mode = fs::metadata(tls.join("ca.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777, 0o600);
}

#[test]
fn a_new_hostname_reissues_the_server_certificate_but_keeps_the_ca() {
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start_tls(flake.path(), &[]);
    let tls = server.state_dir().join("tls");
    let ca = flakeforge_ca(&server.state_dir());
    let cert = fs::read(tls.join("server.crt")).unwrap();
    server.restart_with(&["--hostname", "other.test"]);
    assert_ne!(fs::read(tls.join("server.crt")).unwrap(), cert, "the certificate was not re-issued");
    assert_eq!(flakeforge_ca(&server.state_dir()), ca);
    let trusted = cert_dir(&ca);
    skopeo_inspect(&server.host(), "hello", trusted.path()).expect("clients that trust the CA keep working");
}

#[test]
fn given_certificate_files_are_served_checked_and_rotated() {
    let flake = TestFlake::new();
    let files = TestDir::new();
    let (cert_path, key_path) = (files.path().join("cert.pem"), files.path().join("key.pem"));
    let write = |pair: (String, String)| {
        // Written to temporary names and renamed, as ACME clients do.
        fs::write(files.path().join("cert.tmp"), pair.0).unwrap();
        fs::write(files.path().join("key.tmp"), pair.1).unwrap();
        fs::set_permissions(files.path().join("key.tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        fs::rename(files.path().join("key.tmp"), &key_path).unwrap();
        fs::rename(files.path().join("cert.tmp"), &cert_path).unwrap();
    };
    let first = TestCa::new();
    write(first.issue(&["localhost", "127.0.0.1"], false));
    let args = ["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()];
    let server = FlakeforgeServer::start_tls(flake.path(), &args);
    let first_dir = cert_dir(&first.cert.pem());
    skopeo_inspect(&server.host(), "hello", first_dir.path()).expect("the given certificate verifies");
    let podman = Podman::new();
    let image = format!("{}/hello", server.host());
    podman.run(&["pull", "-q", "--cert-dir", first_dir.path().to_str().unwrap(), &image]);
    assert_eq!(podman.run(&["run", "--rm", &image]).trim(), HELLO);

    // Rotation: the next connection sees the new certificate.
    let second = TestCa::new();
    let second_dir = cert_dir(&second.cert.pem());
    write(second.issue(&["localhost", "127.0.0.1"], false));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    skopeo_inspect(&server.host(), "hello", second_dir.path()).expect("the rotated certificate is served");
    assert!(skopeo_inspect(&server.host(), "hello", first_dir.path()).is_err());

    // A wrong name and an expired certificate are rejected by the client.
    write(second.issue(&["elsewhere.test"], false));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let wrong_name = skopeo_inspect(&server.host(), "hello", second_dir.path()).unwrap_err();
    assert!(wrong_name.contains("127.0.0.1") || wrong_name.contains("certificate"), "{wrong_name}");
    write(second.issue(&["localhost", "127.0.0.1"], true));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = skopeo_inspect(&server.host(), "hello", second_dir.path()).unwrap_err();
    assert!(expired.contains("expired"), "{expired}");
}
