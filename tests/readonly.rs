//! A read-only state directory (a read-only bind mount: the tests run as
//! root, so file modes alone would not stop writes): what was built before
//! is served over HTTPS with the stored CA, resolving its tag writes
//! nothing, the start says in one line what will not work, and an image
//! not built before is still served, from memory.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::auth::Https;
use common::clients::skopeo_copy;
use common::{run_ok, FlakeforgeServer, TestDir, TestFlake};

/// `skopeo copy` over HTTPS verified with the state directory's CA; the manifest digest.
fn pull(server: &FlakeforgeServer, name: &str, certs: &Path) -> String {
    let out = skopeo_copy(&format!("{}/{name}", server.host()), &["--src-cert-dir", certs.to_str().unwrap()]);
    let manifest = fs::read(out.path().join("manifest.json")).unwrap();
    flakeforge::digest::Digest::of(&manifest).to_string()
}

/// Every path under `dir` with its size and modification time.
fn listing(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path.clone());
            }
            found.push(format!("{} {} {:?}", path.display(), meta.len(), meta.modified().unwrap()));
        }
    }
    found.sort();
    found
}

#[test]
fn a_read_only_state_directory_serves_what_is_stored() {
    let flake = TestFlake::new();
    // A moving tag resolved again on every request: the read-only path is taken each time.
    let mut server = FlakeforgeServer::start_tls(flake.path(), &["--tag-ttl", "0"]);
    let state = server.state_dir();
    let certs = TestDir::new();
    fs::copy(state.join("tls/ca.crt"), certs.path().join("ca.crt")).unwrap();
    let built = pull(&server, "hello", certs.path());
    let hello_build = server_builds(&server)[0]["id"].clone();
    server.stop();

    run_ok(Command::new("mount").arg("--bind").arg(&state).arg(&state), 10);
    run_ok(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&state), 10);
    assert!(fs::write(state.join("probe"), b"").is_err(), "the bind mount is writable");
    let before = listing(&state);
    server.restart();
    let notices: Vec<String> =
        server.log().lines().filter(|l| l.contains("cannot be written")).map(String::from).collect();
    assert_eq!(notices.len(), 1, "{}", server.log());
    for what in ["served", "layers not cached", "no GC roots", "no local CA"] {
        assert!(notices[0].contains(what), "the start does not say {what:?}: {}", notices[0]);
    }

    let since_restart = server.log().len();
    for _ in 0..2 {
        assert_eq!(pull(&server, "hello", certs.path()), built);
    }
    assert_eq!(listing(&state), before, "the state directory changed");
    // Resolving the tag again wrote no GC root, and none was missing.
    let resolving = server.log()[since_restart..].to_string();
    assert!(!resolving.contains("--out-link") && !resolving.contains("no GC root keeps"), "{resolving}");

    // Not built before: built without a GC root, kept in memory, its layers made on the way out.
    pull(&server, "motd", certs.path());
    let building = server.log()[since_restart..].to_string();
    assert!(building.contains("--no-link") && building.contains("no GC root keeps"), "{building}");
    assert_eq!(listing(&state), before, "the state directory changed");

    // The build history: the build from before is listed; new ones are listed but not kept, said once.
    let https = Https::new(&server);
    assert_eq!(https.get("/v2/broken/manifests/latest", None).status, 404);
    let builds = server_builds(&server);
    let listed: Vec<_> = builds.iter().map(|b| (b["image"].as_str().unwrap(), b["id"] == hello_build)).collect();
    assert_eq!(listed, [("broken", false), ("motd", false), ("hello", true)], "{builds:?}");
    let log = server.log()[since_restart..].to_string();
    assert_eq!(log.matches("build history: cannot keep finished builds").count(), 1, "{log}");
    assert_eq!(listing(&state), before, "the state directory changed");
}

/// The builds `GET /-/builds` lists, newest first.
fn server_builds(server: &FlakeforgeServer) -> Vec<serde_json::Value> {
    let response = Https::new(server).get("/-/builds", None);
    assert_eq!(response.status, 200);
    response.json()["builds"].as_array().unwrap().clone()
}
