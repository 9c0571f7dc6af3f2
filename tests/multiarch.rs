//! One name, an image index for x86_64 and aarch64: each client gets the
//! image of its own architecture (arm64 runs through qemu-user here).

mod common;

use common::clients::{Dockerd, Podman};
use common::{FlakeforgeServer, TestFlake};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const BOTH: [&str; 4] = ["--system", "x86_64-linux", "--system", "aarch64-linux"];

fn platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let variant = p["variant"].as_str().map(|v| format!("/{v}")).unwrap_or_default();
            format!("{}/{}{variant}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn an_index_lists_both_platforms_and_clients_pick_theirs() {
    let flake = TestFlake::multiarch();
    let server = FlakeforgeServer::start(flake.path(), &BOTH);

    let oci = server.request("GET", "/v2/arch/manifests/latest", &[("Accept", OCI_INDEX)]);
    assert_eq!(oci.status, 200, "{}", String::from_utf8_lossy(&oci.body));
    assert_eq!(oci.header("content-type"), Some(OCI_INDEX));
    let index = oci.json();
    assert_eq!(platforms(&index), ["linux/amd64", "linux/arm64/v8"]);

    // Each entry is a single-platform manifest, pullable by digest, whose
    // config names the image's own architecture.
    for (entry, architecture) in index["manifests"].as_array().unwrap().iter().zip(["amd64", "arm64"]) {
        let manifest = server.get(&format!("/v2/arch/manifests/{}", entry["digest"].as_str().unwrap()));
        assert_eq!(manifest.status, 200);
        assert_eq!(manifest.body.len() as u64, entry["size"].as_u64().unwrap());
        let config = manifest.json()["config"]["digest"].as_str().unwrap().to_string();
        assert_eq!(server.get(&format!("/v2/arch/blobs/{config}")).json()["architecture"], architecture);
        // Each platform's image has an SBOM of its own (tests/sbom.rs has the rest).
        let referrers = server.get(&format!("/v2/arch/referrers/{}", entry["digest"].as_str().unwrap())).json();
        let sbom = server.get(&format!("/v2/arch/manifests/{}", referrers["manifests"][0]["digest"].as_str().unwrap()));
        let bom =
            server.get(&format!("/v2/arch/blobs/{}", sbom.json()["layers"][0]["digest"].as_str().unwrap())).json();
        let platform = bom["metadata"]["component"]["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "flakeforge:platform")
            .unwrap()["value"]
            .clone();
        assert_eq!(platform, platforms(&serde_json::json!({ "manifests": [entry] }))[0].as_str());
    }
    // The index says what its images all say.
    assert_eq!(index["annotations"]["org.opencontainers.image.title"], "arch");
    assert!(index["annotations"]["org.opencontainers.image.revision"].is_string());

    // A client that asks only for Docker types gets a Docker manifest list.
    let docker_accept = "application/vnd.docker.distribution.manifest.v2+json, ".to_string() + DOCKER_LIST;
    let list = server.request("GET", "/v2/arch/manifests/latest", &[("Accept", &docker_accept)]);
    assert_eq!(list.header("content-type"), Some(DOCKER_LIST));
    assert_eq!(platforms(&list.json()), ["linux/amd64", "linux/arm64/v8"]);
    assert_eq!(list.json()["manifests"][1]["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");

    let podman = Podman::new();
    let image = format!("{}/arch", server.host());
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--pull=always", "--tls-verify=false"];
        args.extend_from_slice(extra);
        args.push(&image);
        podman.run(&args).trim().to_string()
    };
    assert_eq!(run(&[]), "x86_64");
    assert_eq!(run(&["--arch", "arm64"]), "aarch64");

    let docker = Dockerd::start();
    assert_eq!(
        docker.docker(&["run", "--rm", "--network", "none", "--platform", "linux/arm64", &image]).trim(),
        "aarch64"
    );
    assert_eq!(
        docker
            .docker(&["run", "--rm", "--network", "none", "--pull", "always", "--platform", "linux/amd64", &image])
            .trim(),
        "x86_64"
    );
}

#[test]
fn systems_without_the_package_or_whose_build_fails_are_left_out() {
    let flake = TestFlake::multiarch();
    let server = FlakeforgeServer::start(flake.path(), &BOTH);
    let only = server.request("GET", "/v2/onlyx86/manifests/latest", &[("Accept", OCI_INDEX)]);
    assert_eq!(platforms(&only.json()), ["linux/amd64"]);
    let broken = server.request("GET", "/v2/brokenonarm/manifests/latest", &[("Accept", OCI_INDEX)]);
    assert_eq!(platforms(&broken.json()), ["linux/amd64"]);
    assert!(server.log().contains("is left out of its index for aarch64-linux"), "{}", server.log());
    let missing = server.get("/v2/nothing/manifests/latest");
    assert_eq!((missing.status, missing.error_code().as_str()), (404, "NAME_UNKNOWN"));
    // The catalog is the union over the systems.
    let catalog = server.get("/v2/_catalog").json();
    assert_eq!(catalog["repositories"], serde_json::json!(["arch", "brokenonarm", "busybox", "onlyx86"]));
}
