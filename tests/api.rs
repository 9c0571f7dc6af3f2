//! The registry API against the real binary and real Nix: every endpoint,
//! content negotiation, ranges, pagination and the spec's errors.

mod common;

use common::{FlakeforgeServer, TestFlake};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn server() -> (TestFlake, FlakeforgeServer) {
    let flake = TestFlake::new();
    let server = FlakeforgeServer::start(flake.path(), &[]);
    (flake, server)
}

#[test]
fn base_catalog_and_tags() {
    let (_flake, server) = server();
    let base = server.get("/v2/");
    assert_eq!(base.status, 200);
    assert_eq!(base.header("docker-distribution-api-version"), Some("registry/2.0"));
    assert_eq!(server.request("HEAD", "/v2/", &[]).status, 200);

    let catalog = server.get("/v2/_catalog").json();
    let names: Vec<&str> = catalog["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["based", "broken", "busybox", "hello", "img", "imgconf", "motd", "numbers", "sleeper", "slow", "upper"]
    );
    let page = server.get("/v2/_catalog?n=2");
    assert_eq!(page.json()["repositories"], serde_json::json!(["based", "broken"]));
    assert_eq!(page.header("link"), Some("</v2/_catalog?n=2&last=broken>; rel=\"next\""));
    let next = server.get("/v2/_catalog?n=2&last=broken");
    assert_eq!(next.json()["repositories"], serde_json::json!(["busybox", "hello"]));
    let last = server.get("/v2/_catalog?n=20&last=motd");
    assert_eq!(last.json()["repositories"], serde_json::json!(["numbers", "sleeper", "slow", "upper"]));
    assert!(last.header("link").is_none());
    assert_eq!(server.get("/v2/_catalog?n=x").error_code(), "PAGINATION_NUMBER_INVALID");

    let tags = server.get("/v2/hello/tags/list");
    assert_eq!(tags.json(), serde_json::json!({"name": "hello", "tags": ["latest"]}));
    let unknown = server.get("/v2/nope/tags/list");
    assert_eq!((unknown.status, unknown.error_code().as_str()), (404, "NAME_UNKNOWN"));
}

#[test]
fn manifests_negotiated_and_fetchable_by_digest() {
    let (_flake, server) = server();
    let oci = server.request("GET", "/v2/hello/manifests/latest", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(oci.status, 200);
    assert_eq!(oci.header("content-type"), Some(OCI_MANIFEST));
    let oci_digest = oci.header("docker-content-digest").unwrap().to_string();
    assert_eq!(oci.json()["mediaType"], OCI_MANIFEST);

    let docker = server.request("GET", "/v2/hello/manifests/latest", &[("Accept", DOCKER_MANIFEST)]);
    assert_eq!(docker.header("content-type"), Some(DOCKER_MANIFEST));
    let docker_digest = docker.header("docker-content-digest").unwrap().to_string();
    assert_ne!(oci_digest, docker_digest);
    assert_eq!(docker.json()["config"]["mediaType"], "application/vnd.docker.container.image.v1+json");

    // Both forms stay fetchable by digest, whatever the client accepts.
    for (digest, media_type) in [(&oci_digest, OCI_MANIFEST), (&docker_digest, DOCKER_MANIFEST)] {
        let by_digest = server.get(&format!("/v2/hello/manifests/{digest}"));
        assert_eq!(by_digest.status, 200);
        assert_eq!(by_digest.header("content-type"), Some(media_type));
        assert_eq!(by_digest.header("docker-content-digest"), Some(digest.as_str()));
    }
    let head = server.request("HEAD", "/v2/hello/manifests/latest", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(head.header("docker-content-digest"), Some(oci_digest.as_str()));
    assert_eq!(head.header("content-length").unwrap(), oci.body.len().to_string());
    assert!(head.body.is_empty());

    // Order does not change the image; case-insensitive names find `Upper`.
    let ab = server.get("/v2/hello/motd/manifests/latest");
    let ba = server.get("/v2/motd/hello/manifests/latest");
    assert_eq!(ab.header("docker-content-digest"), ba.header("docker-content-digest"));
    assert_eq!(server.get("/v2/upper/manifests/latest").status, 200);
    assert_eq!(server.get("/v2/tools.jq/manifests/latest").status, 200);

    let config = oci.json()["config"]["digest"].as_str().unwrap().to_string();
    let config_body = server.get(&format!("/v2/hello/blobs/{config}")).json();
    assert_eq!(config_body["config"]["Cmd"], serde_json::json!(["/bin/hello"]));
    assert_eq!(config_body["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert_eq!(config_body["architecture"], "amd64");
}

#[test]
fn blobs_with_ranges() {
    let (_flake, server) = server();
    let manifest = server.get("/v2/hello/manifests/latest").json();
    let layer = &manifest["layers"][0];
    let digest = layer["digest"].as_str().unwrap();
    let size = layer["size"].as_u64().unwrap();
    let path = format!("/v2/hello/blobs/{digest}");

    let whole = server.get(&path);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body.len() as u64, size);
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("docker-content-digest"), Some(digest));
    let head = server.request("HEAD", &path, &[]);
    assert_eq!(head.header("content-length").unwrap(), size.to_string());

    let part = server.request("GET", &path, &[("Range", "bytes=10-19")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range").unwrap(), format!("bytes 10-19/{size}"));
    assert_eq!(part.body, whole.body[10..20]);
    let tail = server.request("GET", &path, &[("Range", "bytes=-5")]);
    assert_eq!(tail.body, whole.body[size as usize - 5..]);
    let beyond = server.request("GET", &path, &[("Range", &format!("bytes={size}-"))]);
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("content-range").unwrap(), format!("bytes */{size}"));
}

#[test]
fn errors_are_the_spec_json() {
    let (_flake, server) = server();
    let zeros = format!("sha256:{}", "0".repeat(64));
    for (method, path, status, code) in [
        ("GET", "/v2/--option/manifests/latest".to_string(), 400, "NAME_INVALID"),
        ("GET", "/v2/../manifests/latest".to_string(), 400, "NAME_INVALID"),
        ("GET", "/v2/a%23b/manifests/latest".to_string(), 400, "NAME_INVALID"),
        ("GET", "/v2/Hello/manifests/latest".to_string(), 400, "NAME_INVALID"),
        ("GET", "/v2/nope/manifests/latest".to_string(), 404, "NAME_UNKNOWN"),
        // A malformed tag names no manifest (OCI conformance v1.1.1, CNCF distribution).
        ("GET", "/v2/hello/manifests/-bad".to_string(), 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/hello/manifests/.hidden".to_string(), 404, "MANIFEST_UNKNOWN"),
        ("GET", format!("/v2/hello/manifests/{}", "t".repeat(129)), 404, "MANIFEST_UNKNOWN"),
        ("GET", format!("/v2/hello/manifests/{zeros}"), 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/hello/manifests/v1".to_string(), 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/hello/blobs/sha256:xyz".to_string(), 400, "DIGEST_INVALID"),
        ("GET", "/v2/hello/blobs/sha256:..%2F..%2Fetc%2Fpasswd".to_string(), 400, "DIGEST_INVALID"),
        // Slashes end the digest: this is no endpoint at all.
        ("GET", "/v2/hello/blobs/sha256:../../etc/passwd".to_string(), 404, "UNSUPPORTED"),
        ("GET", "/v2/hello/manifests/sha256:abc".to_string(), 400, "DIGEST_INVALID"),
        ("GET", format!("/v2/hello/blobs/{zeros}"), 404, "BLOB_UNKNOWN"),
        ("PUT", "/v2/hello/manifests/latest".to_string(), 405, "UNSUPPORTED"),
        ("DELETE", format!("/v2/hello/blobs/{zeros}"), 405, "UNSUPPORTED"),
        ("POST", "/v2/hello/blobs/uploads/".to_string(), 405, "UNSUPPORTED"),
        ("PATCH", "/v2/hello/blobs/uploads/x".to_string(), 405, "UNSUPPORTED"),
        ("GET", "/v2/hello/blobs/uploads/x".to_string(), 405, "UNSUPPORTED"),
        ("GET", "/nothing".to_string(), 404, "UNSUPPORTED"),
    ] {
        let response = server.request(method, &path, &[]);
        assert_eq!((response.status, response.error_code().as_str()), (status, code), "{method} {path}");
        assert_eq!(response.header("content-type"), Some("application/json"), "{method} {path}");
        let message = response.json()["errors"][0]["message"].as_str().unwrap().to_string();
        assert!(!message.is_empty() && !message.contains("/tmp/"), "{method} {path}: {message}");
    }
    assert_eq!(server.request("HEAD", "/v2/hello/manifests/-bad", &[]).status, 404);
    assert_eq!(server.request("HEAD", "/v2/hello/manifests/sha256:abc", &[]).status, 400);
    let tag_on_path_flake = server.get("/v2/hello/manifests/v1").json();
    assert!(tag_on_path_flake["errors"][0]["message"].as_str().unwrap().contains("no tags but latest"));

    let referrers = server.get(&format!("/v2/hello/referrers/{zeros}"));
    assert_eq!(referrers.status, 200);
    assert_eq!(referrers.json()["manifests"], serde_json::json!([]));
    assert_eq!(referrers.header("content-type"), Some("application/vnd.oci.image.index.v1+json"));
}
