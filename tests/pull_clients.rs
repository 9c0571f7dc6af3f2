//! Real clients pull from the real binary against real Nix and run what
//! they pulled: skopeo, podman, docker (dockerd) and containerd (ctr).

mod common;

use common::clients::{skopeo, Containerd, Dockerd, Podman};
use common::flake::HELLO;
use common::{FlakeforgeServer, TestDir, TestFlake};

#[test]
fn podman_pulls_and_runs_a_package_image() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let podman = Podman::new();
    let image = format!("{}/hello", server.host());
    podman.run(&["pull", "-q", "--tls-verify=false", &image]);
    assert_eq!(podman.run(&["run", "--rm", &image]).trim(), HELLO);
    // The rootfs layer: /tmp, /etc/passwd, /bin symlinks; busybox composed in for a shell.
    let composed = format!("{}/hello/busybox", server.host());
    let out = podman.run(&[
        "run",
        "--rm",
        "--tls-verify=false",
        &composed,
        "sh",
        "-c",
        "hello; stat -c %a /tmp; head -1 /etc/passwd; readlink /bin/hello",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], HELLO);
    assert_eq!(lines[1], "1777");
    assert_eq!(lines[2], "root:x:0:0:root:/root:/bin/sh");
    assert!(lines[3].starts_with("/nix/store/") && lines[3].ends_with("-hello/bin/hello"), "{out}");
}

#[test]
fn docker_pulls_runs_and_pulls_by_digest() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let docker = Dockerd::start();
    let image = format!("{}/hello", server.host());
    docker.docker(&["pull", "-q", &image]);
    assert_eq!(docker.docker(&["run", "--rm", "--network", "none", &image]).trim(), HELLO);
    let digest = docker.docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    let by_digest = digest.trim();
    assert!(by_digest.contains("@sha256:"), "{by_digest}");
    docker.docker(&["rmi", &image]);
    docker.docker(&["pull", "-q", by_digest]);
    assert_eq!(docker.docker(&["run", "--rm", "--network", "none", by_digest]).trim(), HELLO);
}

#[test]
fn docker_shows_why_a_build_failed_and_nothing_of_the_host() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let docker = Dockerd::start();
    let (ok, output) = docker.try_docker(&["pull", &format!("{}/broken", server.host())]);
    assert!(!ok);
    assert!(output.contains("builder for 'broken.drv' failed with exit code 3"), "docker did not say why: {output}");
    // Not the builder's output, no paths: the build id leads to the whole log.
    assert!(!output.contains("flakeforge-test-build-failure"), "the builder's output reached the client: {output}");
    assert!(!output.contains("/nix/store") && !output.contains(&flake.path().display().to_string()), "{output}");
    let build = &server.get("/-/builds").json()["builds"][0];
    let id = build["id"].as_str().unwrap();
    assert_eq!(build["state"], "failed");
    assert!(output.contains(&format!("build {id}")), "{output}");
    let log = String::from_utf8(server.get(&format!("/-/builds/{id}/log")).body).unwrap();
    assert!(log.contains("broken> flakeforge-test-build-failure"), "{log}");
    assert!(server.log().contains("flakeforge-test-build-failure"), "the server log lacks the full build log");
}

#[test]
fn containerd_pulls_and_runs() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &["--compression", "zstd"]);
    let containerd = Containerd::start();
    let image = format!("{}/hello:latest", server.host());
    containerd.ctr(&["images", "pull", "--plain-http", &image]);
    assert_eq!(containerd.run(&image, "hello-test").trim(), HELLO);
}

#[test]
fn skopeo_copies_a_stream_layered_image_with_its_config() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &["--compression", "none"]);
    let out = TestDir::new();
    let dest = format!("dir:{}", out.path().display());
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{}/img", server.host()), &dest]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join(config_digest)).unwrap()).unwrap();
    // Uncompressed: each layer's digest is its diff_id; the last is the customisation layer as built.
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        assert_eq!(&layer["digest"], diff_id);
    }
    let customisation = std::fs::read_dir("/nix/store")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with("-customisation-layer"))
        .find(|p| {
            let sum = std::fs::read_to_string(p.join("checksum")).unwrap_or_default();
            diff_ids[2].as_str().unwrap().ends_with(sum.trim())
        });
    assert!(customisation.is_some(), "the last layer is not the conf's customisation layer");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello"]));
    assert_eq!(config["created"], "1970-01-01T00:00:01+00:00");
    assert_eq!(config["os"], "linux");
}

#[test]
fn images_on_a_base_image_and_bare_confs_run() {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    let podman = Podman::new();
    let based = format!("{}/based", server.host());
    podman.run(&["pull", "-q", "--tls-verify=false", &based]);
    // The base image's layer comes first; its Env is merged under the image's own.
    let out = podman.run(&["run", "--rm", &based, "sh", "-c", "cat /base-file; echo $BASE $IMAGE $PATH; /hello"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "from the base image");
    assert!(lines[1].starts_with("1 based /nix/store/") && lines[1].ends_with("-busybox/bin"), "{out}");
    assert_eq!(lines[2], HELLO);
    // An attribute whose output is the conf itself (streamLayeredImageConf).
    let bare = format!("{}/imgconf", server.host());
    podman.run(&["pull", "-q", "--tls-verify=false", &bare]);
    assert_eq!(podman.run(&["run", "--rm", &bare]).trim(), HELLO);
}
