//! Checks the test harness and the test flake without flakeforge: real Nix
//! builds the flake's `hello`, the test writes an OCI layout of it by hand,
//! skopeo pushes it to Debian's docker-registry, and podman, docker
//! (dockerd) and containerd (ctr) pull it from there and run it. When a pull
//! test against flakeforge fails and these pass, the fault is flakeforge's,
//! not the machine's or the harness's.

mod common;

use std::fs;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::clients::{skopeo, Containerd, DockerRegistry, Dockerd, Podman};
use common::flake::{oci_arch, HELLO};
use common::server::read_response;
use common::{run_ok, TestDir, TestFlake, NIX_CONFIG};

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Writes `bytes` as a blob of the OCI layout at `layout`; its descriptor.
fn write_blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&digest), bytes).unwrap();
    json!({ "mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len() })
}

/// One uncompressed layer holding the store paths of `path`'s closure.
fn closure_layer(path: &Path) -> Vec<u8> {
    let closure = run_ok(
        Command::new("nix-store").arg("--query").arg("--requisites").arg(path).env("NIX_CONFIG", NIX_CONFIG),
        60,
    );
    let mut layer = tar::Builder::new(Vec::new());
    // busybox's applets are symlinks and must stay symlinks.
    layer.follow_symlinks(false);
    layer.mode(tar::HeaderMode::Deterministic);
    layer.append_dir("nix", "/nix").unwrap();
    layer.append_dir("nix/store", "/nix/store").unwrap();
    for store_path in closure.lines().map(Path::new) {
        let name = Path::new("nix/store").join(store_path.file_name().unwrap());
        if store_path.is_dir() {
            layer.append_dir_all(&name, store_path).unwrap();
        } else {
            layer.append_path_with_name(store_path, &name).unwrap();
        }
    }
    layer.into_inner().unwrap()
}

/// An OCI image layout at `layout` whose image runs the flake's `hello`.
fn write_hello_layout(flake: &TestFlake, layout: &Path) {
    let hello = flake.build("hello");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer = closure_layer(&hello);
    let config = json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Cmd": [hello.join("bin/hello")] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))] },
    });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": write_blob(layout, "application/vnd.oci.image.config.v1+json", config.to_string().as_bytes()),
        "layers": [write_blob(layout, "application/vnd.oci.image.layer.v1.tar", &layer)],
    });
    let manifest = write_blob(layout, "application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes());
    let index = json!({ "schemaVersion": 2, "manifests": [manifest] });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// docker-registry with the test flake's `hello` pushed to it as
/// `hello:latest`; the image reference.
fn registry_with_hello() -> (DockerRegistry, String) {
    let flake = TestFlake::new();
    let layout = TestDir::new();
    write_hello_layout(&flake, layout.path());
    let registry = DockerRegistry::start();
    let image = format!("{}/hello:latest", registry.host());
    let source = format!("oci:{}", layout.path().display());
    skopeo(&["copy", "--quiet", "--dest-tls-verify=false", &source, &format!("docker://{image}")]);
    (registry, image)
}

#[test]
fn podman_pulls_and_runs_hello_from_the_stand_in_registry() {
    let (_registry, image) = registry_with_hello();
    let podman = Podman::new();
    podman.run(&["pull", "-q", "--tls-verify=false", &image]);
    assert_eq!(podman.run(&["run", "--rm", &image]).trim(), HELLO);
}

#[test]
fn docker_pulls_and_runs_hello_from_the_stand_in_registry() {
    let (_registry, image) = registry_with_hello();
    let docker = Dockerd::start();
    docker.docker(&["pull", "-q", &image]);
    assert_eq!(docker.docker(&["run", "--rm", "--network", "none", &image]).trim(), HELLO);
}

#[test]
fn containerd_pulls_and_runs_hello_from_the_stand_in_registry() {
    let (_registry, image) = registry_with_hello();
    let containerd = Containerd::start();
    containerd.ctr(&["images", "pull", "--plain-http", &image]);
    assert_eq!(containerd.run(&image, "selfcheck-hello").trim(), HELLO);
}

#[test]
fn the_http_client_reads_a_registry_answer_whole() {
    let (registry, _image) = registry_with_hello();
    assert_eq!(registry.request("GET", "/v2/", &[]).status, 200);
    let accept = ("Accept", "application/vnd.oci.image.manifest.v1+json");
    let manifest = registry.request("GET", "/v2/hello/manifests/latest", &[accept]);
    assert_eq!(manifest.status, 200);
    let digest = manifest.header("docker-content-digest").unwrap();
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&manifest.body)), "the body was not read whole");
    let head = registry.request("HEAD", "/v2/hello/manifests/latest", &[accept]);
    assert_eq!((head.status, head.body.len()), (200, 0));
    let unknown = registry.request("GET", "/v2/hello/manifests/nosuchtag", &[]);
    assert_eq!((unknown.status, unknown.error_code().as_str()), (404, "MANIFEST_UNKNOWN"));
}

#[test]
fn the_http_client_joins_chunks() {
    let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    let response = read_response(&mut Cursor::new(raw), false);
    assert_eq!((response.status, response.body.as_slice()), (200, b"hello, world".as_slice()));
}

/// The conf is what nixpkgs' `dockerTools.streamLayeredImage` passes to its
/// stream_layered_image.py, field for field, and its customisation layer
/// carries the right checksum.
#[test]
fn img_conf_has_the_stream_layered_image_shape() {
    let flake = TestFlake::new();
    let conf: Value = serde_json::from_slice(&fs::read(flake.build("img.conf")).unwrap()).unwrap();
    let mut fields: Vec<&str> = conf.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    let expected = [
        "architecture",
        "config",
        "created",
        "customisation_layer",
        "from_image",
        "gid",
        "gname",
        "mtime",
        "repo_tag",
        "store_dir",
        "store_layers",
        "uid",
        "uname",
    ];
    assert_eq!(fields, expected);
    assert_eq!(conf["architecture"], oci_arch());
    assert_eq!(conf["from_image"], Value::Null);
    assert_eq!(conf["store_dir"], "/nix/store");
    assert!(conf["config"]["Cmd"].is_array() && conf["config"]["Env"].is_array(), "{conf}");
    for layer in conf["store_layers"].as_array().unwrap() {
        for path in layer.as_array().unwrap() {
            assert!(Path::new(path.as_str().unwrap()).exists(), "store layer path {path} was not built");
        }
    }
    let customisation = Path::new(conf["customisation_layer"].as_str().unwrap());
    let layer_tar = fs::read(customisation.join("layer.tar")).unwrap();
    let checksum = fs::read_to_string(customisation.join("checksum")).unwrap();
    assert_eq!(checksum.trim(), sha256_hex(&layer_tar));
}
