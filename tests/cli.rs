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
    for (args, expected) in [
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
