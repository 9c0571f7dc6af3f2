//! Replicas sharing one S3 bucket, against the real store (SeaweedFS on
//! loopback, started and stopped by the test) and real clients: what one
//! replica built is served by another without Nix or layer generation,
//! blob GETs are redirected to presigned URLs the clients follow (a blob
//! found in the bucket lately without asking the bucket again), every
//! blob checks out against its digest, and records a replica kept in
//! memory while the store refused writes reach the bucket when it takes
//! them again.

mod common;

use std::fs;
use std::process::Command;

use common::clients::{skopeo_copy, Containerd, Dockerd, Podman};
use common::flake::HELLO;
use common::refusing_proxy::RefusingProxy;
use common::seaweedfs::SeaweedFs;
use common::server::HttpResponse;
use common::{run_ok, FlakeforgeServer, TestDir, TestFlake};
use flakeforge::digest::Digest;

const BUCKET: &str = "flakeforge-test";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Records a replica kept in memory, not yet written.
const UNWRITTEN: &str = "flakeforge_storage_unwritten_records";

/// `--storage` and friends for a replica of `store`, credentials from a file.
fn s3_args(store: &SeaweedFs, credentials: &TestDir, more: &[&str]) -> Vec<String> {
    let file = store.credentials_file(credentials);
    let mut args = vec![
        "--storage".to_string(),
        format!("s3://{BUCKET}/replicas"),
        "--s3-endpoint".into(),
        store.endpoint(),
        "--s3-credentials".into(),
        file.display().to_string(),
    ];
    args.extend(more.iter().map(|a| a.to_string()));
    args
}

fn start(flake: &TestFlake, args: &[String]) -> FlakeforgeServer {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    FlakeforgeServer::start(flake.path(), &args)
}

/// The layer digests of `copy` (a skopeo `dir:` copy, whose digests skopeo checked).
fn layers_of(copy: &TestDir) -> Vec<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(copy.path().join("manifest.json")).unwrap()).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

fn curl(url: &str) -> (u16, Vec<u8>) {
    let out = TestDir::new();
    let body = out.path().join("body");
    let status = run_ok(
        Command::new("curl").args(["-s", "-o"]).arg(&body).args(["-w", "%{http_code}", "--max-time", "120", url]),
        150,
    );
    (status.trim().parse().unwrap(), fs::read(&body).unwrap_or_default())
}

/// Requests `server` sent to the store as `op` (`head`, `get`, ...), from its `/metrics`.
fn storage_requests(server: &FlakeforgeServer, op: &str) -> u64 {
    server.metric(&format!("flakeforge_storage_requests_total{{op=\"{op}\"}}")).unwrap_or(0)
}

fn generated_layers(server: &FlakeforgeServer) -> usize {
    server.log().lines().filter(|l| l.contains("generated layer") || l.contains("regenerated layer")).count()
}

#[test]
fn replicas_share_one_bucket_and_clients_follow_redirects() {
    let mut store = SeaweedFs::start(BUCKET);
    let flake = TestFlake::new();
    let credentials = TestDir::new();

    // Replica A streams blobs through itself: it builds, generates the
    // layers and keeps them in the bucket.
    let a = start(&flake, &s3_args(&store, &credentials, &["--s3-redirect", "false"]));
    let from_a = skopeo_copy(&format!("{}/hello", a.host()), &["--src-tls-verify=false"]);
    assert!(a.nix_builds() > 0, "A built nothing:\n{}", a.log());
    let layers = layers_of(&from_a);
    let stored = store.keys(BUCKET, "replicas/blobs/sha256/");
    for layer in &layers {
        let key = format!("replicas/blobs/sha256/{}", layer.trim_start_matches("sha256:"));
        assert!(stored.contains(&key), "{key} is not in the bucket: {stored:?}\n{}", a.log());
    }
    assert!(
        !store.keys(BUCKET, "replicas/images/").is_empty() && !store.keys(BUCKET, "replicas/manifests/").is_empty()
    );
    // The build history is the replica's own: in its state directory, not in the bucket.
    let build = a.builds()["builds"][0]["id"].as_str().unwrap().to_string();
    assert!(a.state_dir().join("builds").join(format!("{build}.json")).is_file(), "{}", a.log());
    assert!(store.keys(BUCKET, "replicas/").iter().all(|key| !key.contains("builds")), "{:?}", store.keys(BUCKET, ""));
    // Streamed through A: no redirect.
    let blob = a.get(&format!("/v2/hello/blobs/{}", layers[0]));
    assert_eq!(blob.status, 200);
    assert_eq!(Digest::of(&blob.body).to_string(), layers[0]);

    // Replica B, its own state directory, the same bucket: it serves A's
    // image without building or generating anything.
    let b = start(&flake, &s3_args(&store, &credentials, &["--s3-redirect-expiry", "5"]));
    let from_b = skopeo_copy(&format!("{}/hello", b.host()), &["--src-tls-verify=false"]);
    assert_eq!(layers_of(&from_b), layers);
    let podman = Podman::new();
    let image = format!("{}/hello", b.host());
    podman.run(&["pull", "-q", "--tls-verify=false", &image]);
    assert_eq!(podman.run(&["run", "--rm", &image]).trim(), HELLO);
    let docker = Dockerd::start();
    docker.docker(&["pull", "-q", &image]);
    assert_eq!(docker.docker(&["run", "--rm", "--network", "none", &image]).trim(), HELLO);
    let containerd = Containerd::start();
    containerd.ctr(&["images", "pull", "--plain-http", &format!("{image}:latest")]);
    assert_eq!(b.nix_builds(), 0, "B ran nix build:\n{}", b.log());
    assert_eq!(generated_layers(&b), 0, "B generated layers:\n{}", b.log());
    // What A attached (SBOM, provenance) is listed by B the same.
    let manifest = b.request("GET", "/v2/hello/manifests/latest", &[("Accept", OCI_MANIFEST)]);
    let digest = manifest.header("docker-content-digest").unwrap().to_string();
    let (listed_by_a, listed_by_b) =
        (a.get(&format!("/v2/hello/referrers/{digest}")), b.get(&format!("/v2/hello/referrers/{digest}")));
    assert_eq!(listed_by_b.status, 200);
    assert!(!listed_by_b.json()["manifests"].as_array().unwrap().is_empty(), "B lists no referrers");
    assert_eq!(listed_by_a.body, listed_by_b.body);

    // A blob GET on B is a 307 to a presigned URL of that blob alone.
    let redirect: HttpResponse = b.get(&format!("/v2/hello/blobs/{}", layers[0]));
    assert_eq!(redirect.status, 307, "{}", String::from_utf8_lossy(&redirect.body));
    let location = redirect.header("location").unwrap().to_string();
    assert!(location.starts_with(&store.endpoint()) && location.contains("X-Amz-Signature="), "{location}");
    let (status, bytes) = curl(&location);
    assert_eq!(status, 200);
    assert_eq!(Digest::of(&bytes).to_string(), layers[0]);
    // Another object under the same signature is refused.
    let other = location.replace(layers[0].trim_start_matches("sha256:"), layers[1].trim_start_matches("sha256:"));
    assert_eq!(curl(&other).0, 403, "a presigned URL served another object");
    // A HEAD answers from the recorded size: 200 and the size, no redirect.
    let head = b.request("HEAD", &format!("/v2/hello/blobs/{}", layers[0]), &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").unwrap(), bytes.len().to_string());
    // The URL expires (--s3-redirect-expiry 5).
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(curl(&location).0, 403, "an expired presigned URL still served");

    // Replica C redirects with the default expiry: what it found in the
    // bucket lately it redirects to without asking the bucket again.
    let c = start(&flake, &s3_args(&store, &credentials, &[]));
    let at_start = storage_requests(&c, "head");
    skopeo_copy(&format!("{}/hello", c.host()), &["--src-tls-verify=false"]);
    let heads = storage_requests(&c, "head");
    assert!(heads - at_start >= layers.len() as u64, "{} HEADs for {} layers", heads - at_start, layers.len());
    assert_eq!(layers_of(&skopeo_copy(&format!("{}/hello", c.host()), &["--src-tls-verify=false"])), layers);
    assert_eq!(storage_requests(&c, "head"), heads, "the second pull asked the bucket for its blobs again");

    // A blob a lifecycle rule (or another replica) removed: C, which found
    // it less than a minute ago, still redirects there and the bucket
    // answers 404. B's knowledge of it is older than its redirects' expiry
    // (5 s): B asks the bucket, makes the blob again (here the store paths
    // are at hand) and stores it again; the next GET redirects once more.
    store.delete(BUCKET, &format!("replicas/blobs/sha256/{}", layers[0].trim_start_matches("sha256:")));
    let stale = c.get(&format!("/v2/hello/blobs/{}", layers[0]));
    assert_eq!(stale.status, 307);
    assert_eq!(curl(stale.header("location").unwrap()).0, 404);
    let made_again = b.get(&format!("/v2/hello/blobs/{}", layers[0]));
    assert_eq!(made_again.status, 200, "{}", b.log());
    assert_eq!(Digest::of(&made_again.body).to_string(), layers[0]);
    assert!(b.log().contains("regenerated layer"), "{}", b.log());
    assert_eq!(b.get(&format!("/v2/hello/blobs/{}", layers[0])).status, 307);
    let (status, bytes_again) = curl(c.get(&format!("/v2/hello/blobs/{}", layers[0])).header("location").unwrap());
    assert_eq!((status, Digest::of(&bytes_again).to_string()), (200, layers[0].clone()));

    // The store goes away: a clear, retryable 503, no build, nothing recorded.
    store.stop();
    // A HEAD answers from the layer record B read before, not from the store.
    let head = b.request("HEAD", &format!("/v2/hello/blobs/{}", layers[0]), &[]);
    assert_eq!((head.status, head.header("content-length")), (200, Some(&*bytes.len().to_string())));
    // What B read before is still served from memory (immutable, verified);
    // what it must ask the store for is a 503, not "unknown".
    assert_eq!(b.get("/v2/hello/manifests/latest").status, 200);
    let never_seen = Digest::of(b"never stored");
    for path in ["/v2/motd/manifests/latest".to_string(), format!("/v2/hello/blobs/{never_seen}")] {
        let answer = b.get(&path);
        assert_eq!(answer.status, 503, "{path}: {}", String::from_utf8_lossy(&answer.body));
        assert_eq!(answer.error_code(), "UNKNOWN");
        assert!(answer.error_message().contains("storage is unavailable"), "{}", answer.error_message());
        assert!(answer.header("retry-after").is_some());
    }
    let (ok, _) = common::run_capture(
        Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{}/motd", b.host())]),
        120,
    );
    assert!(!ok, "skopeo inspected an image never built with the store down");
    assert_eq!(b.nix_builds(), 0, "B built while the store was away:\n{}", b.log());
    // It comes back: served again, as before, still without a build.
    store.restart();
    let again = skopeo_copy(&format!("{}/hello", b.host()), &["--src-tls-verify=false"]);
    assert_eq!(layers_of(&again), layers);
    assert_eq!(b.nix_builds(), 0, "B built while the store was away:\n{}", b.log());

    // Replica D reaches the bucket through a proxy that refuses to store
    // anything but build leases (500), as a store failing writes would:
    // D builds motd and serves it from memory; when the store takes
    // writes again, what D kept in memory is written, and C serves the
    // same image without building.
    let proxy = RefusingProxy::start_refusing(store.s3_addr(), |line| {
        line.starts_with("PUT ") && !line.contains("/replicas/leases/")
    });
    let mut args = s3_args(&store, &credentials, &[]);
    let endpoint = args.iter().position(|a| a == "--s3-endpoint").unwrap() + 1;
    args[endpoint] = proxy.endpoint();
    let d = start(&flake, &args);
    proxy.refuse(true);
    let motd = d.request("GET", "/v2/motd/manifests/latest", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(motd.status, 200, "{}", d.log());
    let motd_digest = motd.header("docker-content-digest").unwrap().to_string();
    let motd_key = format!("replicas/manifests/{}", motd_digest.trim_start_matches("sha256:"));
    assert!(d.nix_builds() > 0 && proxy.refused() > 0, "{}", d.log());
    assert!(!store.keys(BUCKET, "replicas/manifests/").contains(&motd_key), "{motd_key} was stored");
    let pending = d.metric(UNWRITTEN).unwrap();
    assert!(pending > 0, "nothing kept in memory:\n{}", d.log());
    // Served from memory meanwhile.
    assert_eq!(d.request("GET", &format!("/v2/motd/manifests/{motd_digest}"), &[]).status, 200);
    proxy.refuse(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while d.metric(UNWRITTEN).unwrap() > 0 {
        assert!(std::time::Instant::now() < deadline, "the records kept in memory were not written:\n{}", d.log());
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert!(store.keys(BUCKET, "replicas/manifests/").contains(&motd_key), "{}", d.log());
    assert!(d.log().contains("records kept in memory during a storage outage"), "{}", d.log());
    let from_c = c.request("GET", "/v2/motd/manifests/latest", &[("Accept", OCI_MANIFEST)]);
    assert_eq!(from_c.status, 200, "{}", c.log());
    assert_eq!(from_c.header("docker-content-digest"), Some(&*motd_digest));
    assert_eq!(c.nix_builds(), 0, "C built motd:\n{}", c.log());
    for replica in [&a, &b, &c, &d] {
        assert!(!replica.log().contains("does not match its digest"), "{}", replica.log());
    }
}

/// `nix build` runs of `attr` in `server`'s log.
fn builds_of(server: &FlakeforgeServer, attr: &str) -> usize {
    server.log().lines().filter(|l| l.contains("nix build ") && l.contains(&format!(".{attr}: "))).count()
}

#[test]
fn two_replicas_asked_at_once_build_once() {
    let store = SeaweedFs::start(BUCKET);
    // A build of several seconds (unique to this flake), so both replicas ask while it runs.
    let flake = TestFlake::small("built once");
    flake.write_small("built once", "${bb} sleep 6;");
    let credentials = TestDir::new();
    let args = s3_args(&store, &credentials, &[]);
    let (a, b) = (start(&flake, &args), start(&flake, &args));
    let (from_a, from_b) = std::thread::scope(|scope| {
        let from_a = scope.spawn(|| a.get("/v2/hello/manifests/latest"));
        let from_b = scope.spawn(|| b.get("/v2/hello/manifests/latest"));
        (from_a.join().unwrap(), from_b.join().unwrap())
    });
    assert_eq!((from_a.status, from_b.status), (200, 200), "{}\n{}", a.log(), b.log());
    assert_eq!(from_a.header("docker-content-digest"), from_b.header("docker-content-digest"));
    assert_eq!(from_a.body, from_b.body);
    assert_eq!(builds_of(&a, "hello") + builds_of(&b, "hello"), 1, "A:\n{}\nB:\n{}", a.log(), b.log());
    let waited = [&a, &b].iter().filter(|s| s.log().contains("is held by another replica")).count();
    assert_eq!(waited, 1, "one replica waited for the other's lease");
    assert_eq!(store.keys(BUCKET, "replicas/leases/"), Vec::<String>::new(), "the lease was left behind");
}

/// The layer of `copy` (a skopeo `dir:` copy) larger than `size`.
fn layer_over(copy: &TestDir, size: u64) -> (String, u64) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(copy.path().join("manifest.json")).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let large = layers.iter().find(|l| l["size"].as_u64().unwrap() > size).expect("a layer over the threshold");
    (large["digest"].as_str().unwrap().to_string(), large["size"].as_u64().unwrap())
}

#[test]
fn a_large_layer_goes_up_in_parts_or_not_at_all() {
    // Over the 64 MiB threshold: 16 MiB parts, 5 of them.
    const RANDOM_BYTES: u64 = 72_000_000;
    let store = SeaweedFs::start(BUCKET);
    // Replica A reaches the bucket through a proxy that can refuse part 3.
    let proxy = RefusingProxy::start(store.s3_addr(), "partNumber=3&");
    let flake = TestFlake::small("large layer");
    flake.write_small(
        "large layer",
        &format!("${{bb}} mkdir -p $out/share; ${{bb}} head -c {RANDOM_BYTES} /dev/urandom > $out/share/random;"),
    );
    let credentials = TestDir::new();
    let mut args = s3_args(&store, &credentials, &["--s3-redirect", "false"]);
    let endpoint = args.iter().position(|a| a == "--s3-endpoint").unwrap() + 1;
    args[endpoint] = proxy.endpoint();
    let a = start(&flake, &args);

    // Part 3 refused (500, every try): the upload is aborted, the bucket
    // holds no object and no parts; the client got its layer all the same.
    proxy.refuse(true);
    let copy = skopeo_copy(&format!("{}/hello", a.host()), &["--src-tls-verify=false"]);
    let (large, size) = layer_over(&copy, 64 << 20);
    assert!(size < 80 << 20, "{size}");
    let key = format!("replicas/blobs/sha256/{}", large.trim_start_matches("sha256:"));
    assert!(proxy.refused() >= 2, "part 3 was not retried: {}", proxy.refused());
    assert!(!store.keys(BUCKET, "replicas/blobs/").contains(&key), "a failed upload left {key}");
    assert_eq!(store.pending_uploads(BUCKET), Vec::<String>::new(), "a failed upload left its parts");
    // (Assembling the image and serving the blob each made and offered it.)
    let begun = storage_requests(&a, "create_multipart");
    assert!(begun >= 1);
    assert_eq!(storage_requests(&a, "abort_multipart"), begun, "an upload begun was not aborted");
    assert_eq!(storage_requests(&a, "complete_multipart"), 0);
    assert!(a.log().contains(&format!("could not keep {large}")), "{}", a.log());

    // The store takes parts again: the blob is made again, as after a
    // failed single PUT, and goes up in parts.
    proxy.refuse(false);
    let parts_before = storage_requests(&a, "upload_part");
    let blob = a.get(&format!("/v2/hello/blobs/{large}"));
    assert_eq!(blob.status, 200, "{}", a.log());
    assert_eq!(Digest::of(&blob.body).to_string(), large);
    assert!(a.log().contains("regenerated layer"), "{}", a.log());
    assert_eq!(storage_requests(&a, "upload_part") - parts_before, size.div_ceil(16 << 20));
    assert_eq!(storage_requests(&a, "complete_multipart"), 1);
    assert!(store.keys(BUCKET, "replicas/blobs/").contains(&key));
    assert_eq!(store.pending_uploads(BUCKET), Vec::<String>::new());
    // A multipart ETag ("<md5 of the parts' md5s>-<parts>"), the same from
    // HEAD and GET; the one completing the upload gave is that one too: A
    // streams the blob without reading it whole first to hash it again.
    let (head, get) = store.etags(BUCKET, &key);
    assert!(head.ends_with(&format!("-{}\"", size.div_ceil(16 << 20))), "{head}");
    assert_eq!(head, get);
    let small = layers_of(&copy).into_iter().find(|l| *l != large).unwrap();
    let gets_to_stream = |digest: &str| {
        let before = storage_requests(&a, "get");
        assert_eq!(Digest::of(&a.get(&format!("/v2/hello/blobs/{digest}")).body).to_string(), digest);
        storage_requests(&a, "get") - before
    };
    // (Versus a blob put in one PUT: the first is read back whole if its version differs.)
    assert_eq!(gets_to_stream(&large), gets_to_stream(&small), "A read the blob back to verify it");

    // Replica B, straight to the bucket, redirects skopeo to the object
    // made of parts; skopeo checks every digest.
    let b = start(&flake, &s3_args(&store, &credentials, &[]));
    let from_b = skopeo_copy(&format!("{}/hello", b.host()), &["--src-tls-verify=false"]);
    assert_eq!(layers_of(&from_b), layers_of(&copy));
    let copied = fs::read(from_b.path().join(large.trim_start_matches("sha256:"))).unwrap();
    assert_eq!(Digest::of(&copied).to_string(), large);
    assert_eq!((b.nix_builds(), generated_layers(&b)), (0, 0), "B made the image again:\n{}", b.log());
}
