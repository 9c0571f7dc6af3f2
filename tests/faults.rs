//! Bad days: a build that times out, a restart, many clients at once for an
//! image not built yet, a client that leaves mid-blob, a cache too small to
//! keep anything, a full disk, and records that could not be written.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::skopeo_copy;
use common::{run_ok, wait_until, FlakeforgeServer, TestFlake};

fn pull(server: &FlakeforgeServer, name: &str) {
    skopeo_copy(&format!("{}/{name}", server.host()), &["--src-tls-verify=false"]);
}

fn leftover_temp_files(state: &Path) -> usize {
    std::fs::read_dir(state.join("tmp/blobs")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_build_that_runs_too_long_is_killed_with_its_process_group() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &["--build-timeout", "3"]);
    let started = Instant::now();
    let response = server.get("/v2/sleeper/manifests/latest");
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout did not stop the build");
    assert_eq!((response.status, response.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
    assert!(response.json()["errors"][0]["message"].as_str().unwrap().contains("timed out"));
    let flake_dir = flake.path().display().to_string();
    wait_until(10, "the builder to be gone", || {
        let ps = run_ok(Command::new("ps").args(["-eo", "args"]), 10);
        !ps.lines().any(|l| l.contains(&flake.sleeper_command()))
            && !ps.lines().any(|l| l.contains("nix") && l.contains(&flake_dir))
    });
}

#[test]
fn digests_served_before_a_restart_are_served_after_it() {
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start(flake.path(), &[]);
    let manifest = server.get("/v2/hello/manifests/latest");
    let digest = manifest.header("docker-content-digest").unwrap().to_string();
    let blobs: Vec<String> = std::iter::once(manifest.json()["config"]["digest"].as_str().unwrap().to_string())
        .chain(manifest.json()["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()))
        .collect();
    server.restart();
    let builds = server.nix_builds();
    let again = server.get(&format!("/v2/hello/manifests/{digest}"));
    assert_eq!(again.status, 200);
    assert_eq!(again.body, manifest.body);
    for blob in &blobs {
        assert_eq!(server.get(&format!("/v2/hello/blobs/{blob}")).status, 200, "{blob}");
    }
    assert_eq!(server.nix_builds(), builds, "serving by digest ran nix");
    // The tag resolves to the same image after the restart: manifests are deterministic.
    assert_eq!(server.get("/v2/hello/manifests/latest").header("docker-content-digest"), Some(digest.as_str()));
}

#[test]
fn concurrent_requests_for_an_unbuilt_image_share_one_build() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let digests: Vec<String> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..40)
            .map(|_| {
                scope.spawn(|| {
                    let response = server.get("/v2/motd/manifests/latest");
                    assert_eq!(response.status, 200);
                    response.header("docker-content-digest").unwrap().to_string()
                })
            })
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(digests.windows(2).all(|w| w[0] == w[1]));
    let builds = server.log().lines().filter(|l| l.contains("nix build ") && l.contains("motd")).count();
    assert_eq!(builds, 1, "{}", server.log());
}

#[test]
fn a_client_that_leaves_mid_blob_leaves_nothing_behind() {
    let flake = TestFlake::new();
    // A one-byte cache keeps nothing but the newest blob: the busybox layer is generated on request.
    let server = FlakeforgeServer::start(flake.path(), &["--cache-size", "1", "--compression", "gzip"]);
    let manifest = server.get("/v2/busybox/manifests/latest").json();
    let big = manifest["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64()).unwrap().clone();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        write!(stream, "GET /v2/busybox/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\n", big["digest"].as_str().unwrap())
            .unwrap();
        let mut some = [0u8; 4096];
        stream.read_exact(&mut some).unwrap();
        drop(stream);
    }
    wait_until(10, "temporary files to go", || leftover_temp_files(&server.state_dir()) == 0);
    // The server still answers, and the whole blob comes out right.
    pull(&server, "busybox");
}

#[test]
fn evicted_layers_are_made_again_on_request() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &["--cache-size", "1"]);
    pull(&server, "hello");
    assert!(server.log().contains("regenerated layer"), "no layer was made again:\n{}", server.log());
    pull(&server, "hello");
    assert_eq!(leftover_temp_files(&server.state_dir()), 0);
}

#[test]
fn a_full_disk_serves_without_caching() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start_prepared(flake.path(), &["--compression", "none"], |state| {
        std::fs::create_dir_all(state).unwrap();
        // Room for the metadata, not for busybox's layer; the scratch dir unmounts it when dropped.
        run_ok(Command::new("mount").args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"]).arg(state), 10);
    });
    pull(&server, "hello");
    pull(&server, "hello");
    assert!(server.log().contains("serving without caching"), "{}", server.log());
    assert_eq!(leftover_temp_files(&server.state_dir()), 0);
}

#[test]
fn records_not_written_are_served_from_memory_then_written() {
    const UNWRITTEN: &str = "flakeforge_storage_unwritten_records";
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start(flake.path(), &[]);
    // Records cannot be written (as on a full disk) while their scratch
    // folder is gone; blobs and GC roots still can.
    let scratch = server.state_dir().join("tmp/metadata");
    std::fs::remove_dir_all(&scratch).unwrap();
    let manifest = server.get("/v2/hello/manifests/latest");
    assert_eq!(manifest.status, 200, "{}", server.log());
    let digest = manifest.header("docker-content-digest").unwrap().to_string();
    let builds = server.nix_builds();
    assert!(builds > 0);
    assert!(server.metric(UNWRITTEN).unwrap() > 0, "nothing kept in memory:\n{}", server.log());
    let manifest_file = server.state_dir().join("manifests").join(digest.trim_start_matches("sha256:"));
    assert!(!manifest_file.exists());
    assert_eq!(server.get(&format!("/v2/hello/manifests/{digest}")).status, 200);
    std::fs::create_dir(&scratch).unwrap();
    wait_until(240, "the records kept in memory to be written", || server.metric(UNWRITTEN) == Some(0));
    assert!(manifest_file.exists());
    assert!(server.log().contains("records kept in memory during a storage outage"), "{}", server.log());
    // Written, they outlive the process: served after a restart without building.
    server.restart();
    let again = server.get("/v2/hello/manifests/latest");
    assert_eq!((again.status, again.header("docker-content-digest")), (200, Some(&*digest)));
    assert_eq!(server.nix_builds(), builds, "built again after a restart:\n{}", server.log());
}

#[test]
fn a_cached_blob_cut_short_is_made_again() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let manifest = server.get("/v2/hello/manifests/latest").json();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let whole = server.get(&format!("/v2/hello/blobs/{layer}")).body;
    // As a crash before the data reached the disk would leave it.
    let file = server.state_dir().join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let again = server.get(&format!("/v2/hello/blobs/{layer}"));
    assert_eq!(again.status, 200);
    assert_eq!(again.body, whole);
    // The blob is kept once its last byte has gone out, so it may land just after the client has it all.
    wait_until(30, "the blob to be cached again whole", || std::fs::read(&file).is_ok_and(|b| b == whole));
}

#[test]
fn an_image_that_leaves_the_cache_drops_its_gc_roots() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &["--cache-size", "1"]);
    let roots = |server: &FlakeforgeServer| -> Vec<String> {
        let dir = server.state_dir().join("gcroots");
        let mut found = Vec::new();
        for image in std::fs::read_dir(&dir).unwrap() {
            for link in std::fs::read_dir(image.unwrap().path()).unwrap() {
                let link = link.unwrap().path();
                if link.is_symlink() {
                    found.push(std::fs::read_link(&link).unwrap().display().to_string());
                }
            }
        }
        found
    };
    assert_eq!(server.get("/v2/hello/manifests/latest").status, 200);
    let hello_roots = roots(&server);
    assert!(hello_roots.iter().any(|r| r.ends_with("-hello")), "{hello_roots:?}");
    // Another image's blobs push all of hello's out of the one-byte cache.
    assert_eq!(server.get("/v2/motd/manifests/latest").status, 200);
    let after = roots(&server);
    assert!(!after.iter().any(|r| r.ends_with("-hello")), "hello is still a GC root: {after:?}");
    assert!(after.iter().any(|r| r.ends_with("-motd")), "{after:?}");
}

#[test]
fn builds_past_the_waiting_bound_get_toomanyrequests() {
    let flake = TestFlake::new();
    let args = ["--max-builds", "1", "--build-timeout", "8", "--answer-within", "0"];
    let server = FlakeforgeServer::start(flake.path(), &args);
    let server = &server;
    let packages = ["hello", "motd", "busybox", "upper", "tools.jq", "img", "based", "imgconf"];
    let pairs: Vec<String> = packages
        .iter()
        .enumerate()
        .flat_map(|(i, a)| packages[i + 1..].iter().map(move |b| format!("{a}/{b}")))
        .collect();
    std::thread::scope(|scope| {
        // Holds the only build slot for the length of the timeout.
        let sleeper = scope.spawn(move || server.get("/v2/sleeper/manifests/latest").status);
        wait_until(30, "the sleeper build to start", || {
            run_ok(Command::new("ps").args(["-eo", "args"]), 10).lines().any(|l| l.contains(&flake.sleeper_command()))
        });
        // 16 builds may wait for it (16 × --max-builds); the 17th is refused at once.
        let waiting: Vec<_> = pairs[..16]
            .iter()
            .map(|name| scope.spawn(move || server.get(&format!("/v2/{name}/manifests/latest")).status))
            .collect();
        wait_until(60, "16 builds to wait for the slot", || {
            server.get("/-/builds").json()["nix"]["queued"]["build"] == 16
        });
        let refused = server.get(&format!("/v2/{}/manifests/latest", pairs[16]));
        assert_eq!((refused.status, refused.error_code().as_str()), (429, "TOOMANYREQUESTS"));
        assert_eq!(sleeper.join().unwrap(), 404);
        // The waiting ones got their turn.
        for w in waiting {
            assert_eq!(w.join().unwrap(), 200);
        }
    });
}
