//! Layers compressed in parallel blocks: multi-member gzip and multi-frame
//! zstd layers pulled and run by docker, podman, containerd and skopeo; the
//! same bytes whether one core or all made them, also when an evicted layer
//! is made again; and the level as part of what a layer is.

mod common;

use common::clients::{skopeo, Containerd, Dockerd, Podman};
use common::flake::NUMBERS;
use common::{FlakeforgeServer, TestDir, TestFlake};
use flakeforge::digest::Digest;

const GZIP_MEMBER: [u8; 4] = [0x1f, 0x8b, 8, 0];
const ZSTD_FRAME: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn layer_digests(server: &FlakeforgeServer, name: &str) -> Vec<String> {
    let manifest = server.get(&format!("/v2/{name}/manifests/latest"));
    assert_eq!(manifest.status, 200, "{}", server.log());
    let layers = manifest.json()["layers"].as_array().unwrap().clone();
    layers.iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// The blob, checked against its digest.
fn blob(server: &FlakeforgeServer, name: &str, digest: &str) -> Vec<u8> {
    let response = server.get(&format!("/v2/{name}/blobs/{digest}"));
    assert_eq!(response.status, 200);
    assert_eq!(Digest::of(&response.body).to_string(), digest, "the blob does not match its digest");
    response.body
}

fn count(haystack: &[u8], magic: &[u8; 4]) -> usize {
    haystack.windows(4).filter(|w| w == magic).count()
}

#[test]
fn multi_block_layers_pull_and_run_in_every_client() {
    let flake = TestFlake::new();
    let gzip = FlakeforgeServer::start(flake.path(), &[]);
    let zstd = FlakeforgeServer::start(flake.path(), &["--compression", "zstd"]);
    // The numbers layer is 11 MB of tarball: 11 gzip members, 3 zstd frames.
    for (server, magic, least) in [(&gzip, GZIP_MEMBER, 10), (&zstd, ZSTD_FRAME, 3)] {
        let most = layer_digests(server, "numbers").iter().map(|d| count(&blob(server, "numbers", d), &magic)).max();
        assert!(most >= Some(least), "no layer of {least} members or frames or more: {most:?}");
    }
    let expected = format!("{NUMBERS} {NUMBERS}");
    let docker = Dockerd::start();
    let podman = Podman::new();
    let containerd = Containerd::start();
    for server in [&gzip, &zstd] {
        let image = format!("{}/numbers", server.host());
        docker.docker(&["pull", "-q", &image]);
        assert_eq!(docker.docker(&["run", "--rm", "--network", "none", &image]).trim(), expected, "docker, {image}");
        podman.run(&["pull", "-q", "--tls-verify=false", &image]);
        assert_eq!(podman.run(&["run", "--rm", &image]).trim(), expected, "podman, {image}");
        let tagged = format!("{image}:latest");
        containerd.ctr(&["images", "pull", "--plain-http", &tagged]);
        assert_eq!(containerd.run(&tagged, "numbers-test").trim(), expected, "ctr, {image}");
        // skopeo decompresses every layer; the results are exactly the config's diff_ids.
        let out = TestDir::new();
        let dest = format!("dir:{}", out.path().display());
        skopeo(&["copy", "--src-tls-verify=false", "--dest-decompress", &format!("docker://{image}"), &dest]);
        let read_json = |file: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(out.path().join(file)).unwrap()).unwrap()
        };
        let manifest = read_json("manifest.json");
        let config = read_json(manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let layers: Vec<_> = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].clone()).collect();
        assert_eq!(&layers, config["rootfs"]["diff_ids"].as_array().unwrap(), "skopeo, {image}");
    }
}

#[test]
fn one_core_or_all_give_the_same_layers_also_when_made_again() {
    let flake = TestFlake::new();
    for compression in ["gzip", "zstd"] {
        let all = FlakeforgeServer::start(flake.path(), &["--compression", compression]);
        let digests = layer_digests(&all, "numbers");
        // One core, and a one-byte cache: every layer is evicted and made again on request.
        let one = FlakeforgeServer::start_under(
            &["taskset", "-c", "0"],
            flake.path(),
            &["--compression", compression, "--cache-size", "1"],
        );
        assert!(one.log().contains("on 1 threads"), "{}", one.log());
        assert_eq!(layer_digests(&one, "numbers"), digests, "{compression}: one core made other layers");
        for digest in &digests {
            blob(&one, "numbers", digest);
        }
        assert!(one.log().contains("regenerated layer"), "no layer was made again:\n{}", one.log());
    }
}

#[test]
fn the_level_is_part_of_a_layer() {
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start(flake.path(), &["--compression", "gzip:1"]);
    assert!(server.log().contains("compression gzip:1"), "{}", server.log());
    let fast = layer_digests(&server, "numbers");
    // The same state directory at another level: no layer made at level 1 is reused.
    server.restart_setting("--compression", "zstd:19");
    assert!(server.log().contains("compression zstd:19"), "{}", server.log());
    server.restart_setting("--compression", "gzip:9");
    let small = layer_digests(&server, "numbers");
    assert!(fast.iter().all(|d| !small.contains(d)), "a gzip:1 layer was reused for gzip:9");
    let (fast_size, small_size): (usize, usize) = (
        fast.iter().map(|d| blob(&server, "numbers", d).len()).sum(),
        small.iter().map(|d| blob(&server, "numbers", d).len()).sum(),
    );
    assert!(small_size < fast_size, "gzip:9 ({small_size} bytes) is not smaller than gzip:1 ({fast_size})");
}
