//! The command line: bad input is one readable line on stderr and a
//! non-zero exit, and nothing is left half-done.

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::{TestDir, TestFlake};

/// Runs flakeforge; returns (exit code, stderr).
fn flakeforge(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flakeforge")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_flags_are_one_line_and_a_failure() {
    let flake = TestFlake::new();
    let state = TestDir::new();
    let state_dir = state.path().join("state");
    let (flake_path, state_path) = (flake.path().to_str().unwrap(), state_dir.to_str().unwrap());
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let credentials = state.path().join("credentials");
    std::fs::write(&credentials, "[default]\naws_access_key_id = k\naws_secret_access_key = s\n").unwrap();
    let credentials = credentials.to_str().unwrap();
    let s3 = |more: &[&'static str]| {
        let mut args = vec!["--storage", "s3://images/replicas", "--s3-credentials", credentials];
        args.extend(more);
        args
    };
    for (args, expected) in [
        (vec!["--storage", "/srv/blobs"], "--storage \"/srv/blobs\": not s3://BUCKET/PREFIX"),
        (vec!["--storage", "s3://Images/x"], "\"Images\" is not a bucket name"),
        (vec!["--storage", "s3://images/a/../b"], "the prefix may not hold '.', '..' or empty parts"),
        (vec!["--s3-endpoint", "http://127.0.0.1:1"], "--s3-endpoint, --s3-region and --s3-credentials need --storage"),
        (vec!["--storage", "s3://images/x", "--s3-credentials", "/nonexistent"], "--s3-credentials: cannot read"),
        (s3(&["--s3-endpoint", "ftp://127.0.0.1:1"]), "\"ftp://127.0.0.1:1\": not an http:// or https:// URL"),
        (s3(&["--s3-redirect-expiry", "0"]), "--s3-redirect-expiry: from 1 to 604800"),
        (vec!["--cache-size", "10X"], "--cache-size: invalid size \"10X\""),
        (vec!["--compression", "lz4"], "unknown compression \"lz4\""),
        (vec!["--compression", "gzip:13"], "invalid compression \"gzip:13\": gzip levels are 1 to 12"),
        (vec!["--compression", "zstd:0"], "invalid compression \"zstd:0\": zstd levels are 1 to 19"),
        (vec!["--listen", "nope"], "invalid --listen \"nope\""),
        (vec!["--listen", &busy_addr], "cannot listen on"),
        (vec!["--metrics-listen", "nope"], "invalid --metrics-listen \"nope\""),
        (vec!["--listen", "127.0.0.1:0", "--metrics-listen", &busy_addr], "cannot listen on"),
        (vec!["--max-builds", "0"], "--max-builds must be at least 1"),
        (vec!["--max-evals", "0"], "--max-evals must be at least 1"),
        (vec!["--max-compose", "0"], "--max-compose must be at least 1"),
        (vec!["--prebuild", "Hello"], "--prebuild \"Hello\": \"Hello\" is not an image name"),
        (vec!["--prebuild", "hello:-x"], "--prebuild \"hello:-x\": \"-x\" is not a tag"),
        (vec!["--tls-cert", "/x.pem"], "--tls-cert and --tls-key go together"),
        (vec!["--bogus"], "Unrecognized argument: --bogus"),
    ] {
        let mut all = vec!["serve", "--flake", flake_path, "--state-dir", state_path, "--no-tls"];
        all.extend(args.iter().copied());
        let (code, stderr) = flakeforge(&all);
        assert_ne!(code, 0, "{args:?}");
        assert!(stderr.lines().next().unwrap_or_default().contains(expected), "{args:?}: {stderr}");
    }
    // A store that cannot be reached stops the start in one line, after the
    // access control's own line (the store is opened after the guard).
    let mut args = vec!["serve", "--flake", flake_path, "--state-dir", state_path, "--no-tls"];
    args.extend(s3(&["--s3-endpoint", "http://127.0.0.1:1"]));
    let (code, stderr) = flakeforge(&args);
    assert_ne!(code, 0);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("flakeforge: cannot open the storage s3://images/replicas: the store is unavailable"),
        "{stderr}"
    );
    assert!(!stderr.lines().any(|l| l.contains(" WARN ") || l.contains(" ERROR ")), "{stderr}");
    let (code, stderr) = flakeforge(&["serve", "--flake", "/nonexistent", "--state-dir", state_path, "--no-tls"]);
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("flakeforge: flake \"/nonexistent\""), "{stderr}");
}

#[test]
fn ca_creates_the_authority_once() {
    let state = TestDir::new();
    let dir = state.path().join("state");
    let first = Command::new(env!("CARGO_BIN_EXE_flakeforge")).arg("ca").arg("--state-dir").arg(&dir).output().unwrap();
    assert!(first.status.success());
    let pem = String::from_utf8(first.stdout).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----") && pem.trim_end().ends_with("-----END CERTIFICATE-----"));
    let again = Command::new(env!("CARGO_BIN_EXE_flakeforge")).arg("ca").arg("--state-dir").arg(&dir).output().unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), pem);
}

#[test]
fn a_lost_ca_key_refuses_to_start_unless_a_new_ca_is_asked_for() {
    let flake = TestFlake::new();
    let scratch = TestDir::new();
    let state = scratch.path().join("state");
    let state_arg = state.to_str().unwrap();
    let ca =
        || Command::new(env!("CARGO_BIN_EXE_flakeforge")).arg("ca").arg("--state-dir").arg(&state).output().unwrap();
    let old_pem = String::from_utf8(ca().stdout).unwrap();
    std::fs::remove_file(state.join("tls/ca.key")).unwrap();

    let serve = ["serve", "--flake", flake.path().to_str().unwrap(), "--state-dir", state_arg, "--listen"];
    let (code, stderr) = flakeforge(&[&serve[..], &["127.0.0.1:0"]].concat());
    assert_ne!(code, 0, "started without the CA's key");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("ca.key is missing") && stderr.contains("--new-ca"), "{stderr}");
    let refused = ca();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--new-ca"));
    assert!(!state.join("tls/ca.key").exists(), "a key was made");
    assert_eq!(std::fs::read_to_string(state.join("tls/ca.crt")).unwrap(), old_pem, "ca.crt was changed");

    // Told to, it makes a new CA, keeps the old certificate aside and serves.
    let log = scratch.path().join("serve.log");
    let mut server = Command::new(env!("CARGO_BIN_EXE_flakeforge"))
        .args(serve)
        .args(["127.0.0.1:0", "--new-ca"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_until(60, "flakeforge --new-ca to serve", || {
        assert!(server.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
        std::fs::read_to_string(&log).unwrap().contains("] serving ")
    });
    server.kill().unwrap();
    server.wait().unwrap();
    let new_pem = String::from_utf8(ca().stdout).unwrap();
    assert!(new_pem.starts_with("-----BEGIN CERTIFICATE-----") && new_pem != old_pem);
    assert_eq!(std::fs::read_to_string(state.join("tls/ca.crt.old")).unwrap(), old_pem);
    assert!(std::fs::read_to_string(&log).unwrap().contains("--new-ca"));
}
