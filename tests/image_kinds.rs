//! Every way a flake defines an image, served as that image: docker
//! archives (`docker save`'s layout, buildImage's gzip one, the old
//! `repositories` one), a directory of archives, a nix2container JSON and a
//! package's `image`. Each is pulled and run by podman, docker and
//! containerd (its Cmd, Env, User and WorkingDir reach the container) and
//! copied by skopeo (its layers hash to the diff_ids the image declares).
//! Broken images are build errors; `_catalog` lists a directory's images;
//! layers evicted from the cache are made again from the archive.

mod common;

use std::fs;
use std::io::Read;

use common::clients::{skopeo, Containerd, Dockerd, Podman};
use common::image_kinds::{declared, expected_output, image_kinds_flake, KINDS};
use common::{FlakeforgeServer, TestDir};
use flakeforge::digest::Digest;

#[test]
fn podman_runs_every_kind() {
    let flake = image_kinds_flake();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let podman = Podman::new();
    for name in KINDS {
        let image = format!("{}/{name}", server.host());
        podman.run(&["pull", "-q", "--tls-verify=false", &image]);
        assert_eq!(podman.run(&["run", "--rm", &image]).trim(), expected_output(name), "{name}");
    }
}

#[test]
fn docker_loads_what_docker_load_would() {
    let flake = image_kinds_flake();
    let server = FlakeforgeServer::start(flake.path(), &["--compression", "none"]);
    let docker = Dockerd::start();
    for name in KINDS {
        let image = format!("{}/{name}", server.host());
        docker.docker(&["pull", "-q", &image]);
        let output = docker.docker(&["run", "--rm", "--network", "none", &image]);
        assert_eq!(output.trim(), expected_output(name), "{name}");
        let declared = declared(&flake, name);
        let layers = docker.docker(&["inspect", "--format", "{{json .RootFS.Layers}}", &image]);
        assert_eq!(serde_json::from_str::<Vec<String>>(&layers).unwrap(), declared.diff_ids, "{name}");
        // The archive's own config: the image ID `docker load` gives.
        if let Some(config) = declared.config {
            let id = docker.docker(&["inspect", "--format", "{{.Id}}", &image]);
            assert_eq!(id.trim(), Digest::of(&config).to_string(), "{name}");
        }
    }
}

#[test]
fn containerd_runs_every_kind() {
    let flake = image_kinds_flake();
    let server = FlakeforgeServer::start(flake.path(), &["--compression", "zstd"]);
    let containerd = Containerd::start();
    for (i, name) in KINDS.iter().enumerate() {
        let image = format!("{}/{name}:latest", server.host());
        containerd.ctr(&["images", "pull", "--plain-http", &image]);
        let output = containerd.run(&image, &format!("image-kinds-{i}"));
        assert_eq!(output.trim(), expected_output(name), "{name}");
    }
}

#[test]
fn skopeo_copies_layers_that_hash_to_the_declared_diff_ids() {
    let flake = image_kinds_flake();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    for name in KINDS {
        let out = TestDir::new();
        let source = format!("docker://{}/{name}", server.host());
        skopeo(&["copy", "--src-tls-verify=false", &source, &format!("dir:{}", out.path().display())]);
        let blob = |digest: &str| fs::read(out.path().join(digest.trim_start_matches("sha256:"))).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
        let config_bytes = blob(manifest["config"]["digest"].as_str().unwrap());
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
        let declared = declared(&flake, name);
        let served: Vec<String> = serde_json::from_value(config["rootfs"]["diff_ids"].clone()).unwrap();
        assert_eq!(served, declared.diff_ids, "{name}");
        for (layer, diff_id) in manifest["layers"].as_array().unwrap().iter().zip(&declared.diff_ids) {
            let mut tarball = Vec::new();
            // A layer is several gzip members, one per compression block.
            flate2::read::MultiGzDecoder::new(&blob(layer["digest"].as_str().unwrap())[..])
                .read_to_end(&mut tarball)
                .unwrap();
            assert_eq!(&Digest::of(&tarball).to_string(), diff_id, "{name}");
        }
        if let Some(archive_config) = declared.config {
            assert_eq!(config_bytes, archive_config, "{name}: the archive's config, byte for byte");
        }
        for (key, value) in [("User", "1000:1000"), ("WorkingDir", "/srv")] {
            assert_eq!(config["config"][key], value, "{name}");
        }
        assert_eq!(config["config"]["ExposedPorts"], serde_json::json!({"8080/tcp": {}}), "{name}");
    }
}

#[test]
fn catalog_broken_images_and_layers_made_again() {
    let flake = image_kinds_flake();
    // Built before: `_catalog` lists only what a directory is known to hold.
    flake.build("apps");
    // A one-byte cache keeps no layer: every one is made again from its recipe when asked for.
    let server = FlakeforgeServer::start(flake.path(), &["--cache-size", "1", "--compression", "gzip"]);
    let catalog = server.get("/v2/_catalog").json();
    let names: Vec<&str> = catalog["repositories"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    for listed in ["apps/web", "apps/worker", "myapp", "myapp/web", "myapp/worker", "n2c", "dotimage"] {
        assert!(names.contains(&listed), "{listed} is not in {names:?}");
    }
    assert!(!names.contains(&"apps"), "{names:?}");

    // An application's `containers` is the same directory: the same image
    // (config and layers), whose manifest says which name it was built as.
    let manifest = |name: &str| {
        let response = server.get(&format!("/v2/{name}/manifests/latest"));
        assert_eq!(response.status, 200, "{name}: {}", String::from_utf8_lossy(&response.body));
        response.json()
    };
    let (myapp, apps) = (manifest("myapp/web"), manifest("apps/web"));
    assert_eq!((&myapp["config"], &myapp["layers"]), (&apps["config"], &apps["layers"]));
    assert_eq!(myapp["annotations"]["org.opencontainers.image.title"], "myapp/web");
    // Without a directory of images, `a/b` composes packages: `myapp` is one.
    let missing = server.get("/v2/apps/nope/manifests/latest");
    assert_eq!((missing.status, missing.error_code().as_str()), (404, "NAME_UNKNOWN"));
    let message = missing.json()["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("holds no image nope (it holds web, worker)"), "{message}");

    // As buildLayeredImage: served from its `stream`'s conf, not by reading the archive.
    let layered = server.get("/v2/layered/manifests/latest").json();
    let config = server.get(&format!("/v2/layered/blobs/{}", layered["config"]["digest"].as_str().unwrap())).json();
    assert_eq!(config["config"]["Env"][1], "GREETING=hello from layered");
    assert_eq!(layered["layers"].as_array().unwrap().len(), 2);

    for (name, says) in [
        ("truncatedgz", "cannot be read"),
        ("truncatedtar", "truncated"),
        ("wrongdiffid", "layer2.tar has diff_id"),
        ("badn2c", "but the image declares sha256:0000"),
    ] {
        let response = server.get(&format!("/v2/{name}/manifests/latest"));
        assert_eq!((response.status, response.error_code().as_str()), (404, "MANIFEST_UNKNOWN"), "{name}");
        let message = response.json()["errors"][0]["message"].as_str().unwrap().to_string();
        assert!(message.contains(says) && !message.contains("/tmp/"), "{name}: {message}");
    }

    for name in ["gzimage", "legacyimage", "n2c"] {
        let manifest = server.get(&format!("/v2/{name}/manifests/latest")).json();
        for layer in manifest["layers"].as_array().unwrap() {
            let digest = layer["digest"].as_str().unwrap();
            let blob = server.get(&format!("/v2/{name}/blobs/{digest}"));
            assert_eq!((blob.status, Digest::of(&blob.body).to_string()), (200, digest.to_string()), "{name}");
        }
    }
    assert!(server.log().contains("regenerated layer"), "no layer was made again");
}
