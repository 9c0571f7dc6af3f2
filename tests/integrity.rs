//! A damaged state directory: a flipped byte in every kind of stored object
//! (manifest, config, layer blob of the same size, layer record, image
//! record, tag resolution), and a manifest deleted or emptied, are never served, by tag or
//! by digest, before and after a restart: each is made again, and the pull
//! afterwards verifies.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::clients::skopeo_copy;
use common::{FlakeforgeServer, TestFlake};
use flakeforge::digest::Digest;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Flips one bit in the middle of `path`, keeping its size and mtime: what
/// a failing disk does without anyone writing to the file.
fn flip(path: &Path) {
    let mtime = fs::metadata(path).unwrap().modified().unwrap();
    let mut bytes = fs::read(path).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(path, &bytes).unwrap();
    fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

struct Image {
    manifest: String,
    config: String,
    layers: Vec<String>,
}

impl Image {
    fn of(server: &FlakeforgeServer) -> Image {
        let response = server.request("GET", "/v2/hello/manifests/latest", &[("Accept", OCI_MANIFEST)]);
        assert_eq!(response.status, 200);
        let json = response.json();
        Image {
            manifest: sha256(&response.body),
            config: json["config"]["digest"].as_str().unwrap().to_string(),
            layers: json["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().into()).collect(),
        }
    }
}

fn file(state: &Path, kind: &str, digest: &str) -> PathBuf {
    state.join(kind).join(digest.trim_start_matches("sha256:"))
}

/// The record of the only image built.
fn image_record(state: &Path) -> PathBuf {
    let records: Vec<PathBuf> = fs::read_dir(state.join("images")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    records[0].clone()
}

/// GETs `path` and checks that it answers 200 with bytes that are `digest`.
fn served_intact(server: &FlakeforgeServer, path: &str, digest: &str, what: &str) {
    let response = server.request("GET", path, &[("Accept", OCI_MANIFEST)]);
    assert_eq!(response.status, 200, "{what}: {}", String::from_utf8_lossy(&response.body));
    assert_eq!(sha256(&response.body), digest, "{what}: served bytes that do not match");
    assert_eq!(response.header("docker-content-digest"), Some(digest), "{what}");
}

fn check_all(server: &FlakeforgeServer, image: &Image, stage: &str) {
    served_intact(server, "/v2/hello/manifests/latest", &image.manifest, &format!("{stage}: manifest by tag"));
    served_intact(server, &format!("/v2/hello/manifests/{}", image.manifest), &image.manifest, stage);
    served_intact(server, &format!("/v2/hello/blobs/{}", image.config), &image.config, stage);
    for layer in &image.layers {
        served_intact(server, &format!("/v2/hello/blobs/{layer}"), layer, stage);
    }
}

fn damage_reports(server: &FlakeforgeServer) -> usize {
    server.log().lines().filter(|l| l.contains("does not match its digest") || l.contains(", not sha256:")).count()
}

#[test]
fn damaged_objects_are_never_served_and_are_made_again() {
    let flake = TestFlake::new();
    let mut server = FlakeforgeServer::start(flake.path(), &[]);
    let image = Image::of(&server);
    let state = server.state_dir();
    check_all(&server, &image, "fresh");
    let builds = server.nix_builds();
    let manifest = file(&state, "manifests", &image.manifest);
    let layer = image.layers[0].clone();
    let blob = file(&state, "blobs/sha256", &layer);
    assert!(blob.is_file());

    // One object at a time, the server running (its checks remembered).
    let mut reports = damage_reports(&server);
    for (what, damage) in [
        ("a manifest with a flipped bit", Box::new(|| flip(&manifest)) as Box<dyn Fn()>),
        ("an emptied manifest", Box::new(|| fs::write(&manifest, b"").unwrap())),
        ("a config with a flipped bit", Box::new(|| flip(&file(&state, "configs", &image.config)))),
        ("a cached layer with a flipped bit", Box::new(|| flip(&blob))),
        (
            "a layer record with a flipped bit (its blob gone)",
            Box::new(|| {
                flip(&file(&state, "layers", &layer));
                fs::remove_file(&blob).unwrap();
            }),
        ),
    ] {
        damage();
        check_all(&server, &image, what);
        let now = damage_reports(&server);
        assert!(now > reports, "{what}: the damage was not noticed\n{}", server.log());
        reports = now;
    }
    // A deleted manifest, while its tag is still resolved: made again at once, by tag and by digest.
    fs::remove_file(&manifest).unwrap();
    served_intact(&server, "/v2/hello/manifests/latest", &image.manifest, "deleted manifest, by tag");
    fs::remove_file(&manifest).unwrap();
    check_all(&server, &image, "deleted manifest, by digest");
    // The image record too: the tag is resolved again, the image made again.
    flip(&image_record(&state));
    fs::remove_file(&manifest).unwrap();
    check_all(&server, &image, "damaged image record and deleted manifest");
    assert!(damage_reports(&server) > reports);

    // Across a restart nothing is remembered: every object is checked when first read.
    flip(&manifest);
    flip(&file(&state, "configs", &image.config));
    flip(&file(&state, "layers", &layer));
    flip(&blob);
    reports = damage_reports(&server);
    server.restart();
    for layer in &image.layers {
        served_intact(&server, &format!("/v2/hello/blobs/{layer}"), layer, "after a restart");
    }
    served_intact(&server, &format!("/v2/hello/manifests/{}", image.manifest), &image.manifest, "after a restart");
    check_all(&server, &image, "after a restart");
    assert!(damage_reports(&server) >= reports + 4, "{}", server.log());
    // The image record, the manifest and what the tag resolved to: built again, once.
    flip(&image_record(&state));
    fs::remove_file(&manifest).unwrap();
    for resolution in fs::read_dir(state.join("resolutions")).unwrap() {
        flip(&resolution.unwrap().path());
    }
    reports = damage_reports(&server);
    server.restart();
    check_all(&server, &image, "image record, manifest and resolutions, after a restart");
    assert!(damage_reports(&server) >= reports + 2, "{}", server.log());
    let rebuilt = server.nix_builds() - builds;
    assert!(rebuilt <= 3, "{rebuilt} nix builds for two lost image records: more than one each (and one at the first)");

    // A real client pulls it and checks every digest.
    skopeo_copy(&format!("{}/hello", server.host()), &["--src-tls-verify=false"]);
}
