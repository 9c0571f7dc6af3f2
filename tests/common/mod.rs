//! What the integration tests share: scratch directories, the real
//! `flakeforge` binary on a free loopback port, a generated test flake built
//! with busybox alone, and the container clients (skopeo, podman, dockerd,
//! containerd) started by hand, SeaweedFS as a real S3 store, with docker-registry as a stand-in registry
//! for checking the harness itself. A missing tool fails a test; nothing skips.
#![allow(dead_code, unused_imports)]

pub mod auth;
pub mod clients;
pub mod flake;
pub mod image_kinds;
pub mod refusing_proxy;
pub mod seaweedfs;
pub mod server;
mod test_dir;
pub mod tls_client;

pub use flake::TestFlake;
pub use server::{FlakeforgeServer, Launch};
pub use test_dir::TestDir;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Nix settings that work offline, as root, without a daemon.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsandbox = false\nbuild-users-group =\nsubstituters =\nextra-platforms = aarch64-linux\n";

/// A loopback port free right now (for a server to bind just after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Panics with a clear message when `tool` is not on PATH: tests fail, never skip.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run scripts/install-deps.sh (tests never skip a missing tool)");
}

/// Runs `command` to its end or kills it after `seconds`.
pub fn run_with_timeout(command: &mut Command, seconds: u64) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {seconds} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Runs `command`, panicking with its stderr unless it succeeds; returns stdout.
pub fn run_ok(command: &mut Command, seconds: u64) -> String {
    let description = format!("{command:?}");
    let output = run_with_timeout(command, seconds);
    assert!(
        output.status.success(),
        "{description} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `command` and returns whether it succeeded, with its stdout and stderr together.
pub fn run_capture(command: &mut Command, seconds: u64) -> (bool, String) {
    let output = run_with_timeout(command, seconds);
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Polls `check` every 50 ms until it holds or `seconds` pass.
pub fn wait_until(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
