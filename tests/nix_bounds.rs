//! Hostile clients cannot make Nix run without bound: every `nix` process
//! goes through one scheduler (counted here from outside, in /proc), one
//! address's flood of new images is rate-limited while another address's
//! pull of a built image is served at once, names compose at most
//! `--max-compose` packages, concurrent requests for an evicted layer make
//! it once, and error bodies carry no host paths or builder output.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use common::clients::skopeo;
use common::server::HttpResponse;
use common::{require_tool, run_capture, wait_until, FlakeforgeServer, TestDir, TestFlake};

/// Buildable images of the test flake that are new for every pair.
fn composed_names() -> Vec<String> {
    let packages = ["hello", "motd", "busybox", "upper", "tools.jq", "img", "based", "imgconf"];
    packages.iter().enumerate().flat_map(|(i, a)| packages[i + 1..].iter().map(move |b| format!("{a}/{b}"))).collect()
}

#[test]
fn floods_of_lookups_never_run_more_nix_than_the_scheduler_allows() {
    let flake = TestFlake::new();
    flake.init_git();
    let args = ["--max-evals", "2", "--max-builds", "1", "--build-rate", "0", "--answer-within", "120"];
    let server = FlakeforgeServer::start(flake.path(), &args);
    let started_before = server.builds()["nix"]["started"].as_u64().unwrap();
    let (stop, peak, samples) = (AtomicBool::new(false), AtomicUsize::new(0), AtomicUsize::new(0));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(server.nix_children(), Ordering::SeqCst);
                samples.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        // Names that do not exist (tags/list evaluates every segment) and git refs that do not (each a lookup).
        let requests: Vec<_> = (0..90)
            .map(|i| {
                let path = match i % 3 {
                    0 => format!("/v2/nosuch{i}/tags/list"),
                    1 => format!("/v2/tools.nosuch{i}/hello/tags/list"),
                    _ => format!("/v2/hello/manifests/no-ref-{i}"),
                };
                let server = &server;
                scope.spawn(move || server.get(&path).status)
            })
            .collect();
        let statuses = requests.into_iter().map(|r| r.join().unwrap()).collect();
        stop.store(true, Ordering::SeqCst);
        statuses
    });
    let peak = peak.load(Ordering::SeqCst);
    let started = server.builds()["nix"]["started"].as_u64().unwrap() - started_before;
    eprintln!("the flood ran {started} nix processes, at most {peak} at once");
    assert!(peak <= 3, "{peak} nix processes at once; the scheduler allows 2 evaluations and 1 build");
    assert!(started >= 20 && peak >= 2, "the flood ran {started} nix processes, at most {peak} at once");
    assert!(samples.load(Ordering::SeqCst) > 50);
    assert!(statuses.iter().all(|s| [404, 429].contains(s)), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 404).count() >= 60, "{statuses:?}");
}

/// `curl` from another loopback address: the server sees another client.
fn get_from(address: &str, server: &FlakeforgeServer, path: &str) -> (u16, String) {
    require_tool("curl");
    let url = format!("http://{}{path}", server.host());
    let (ok, output) =
        run_capture(Command::new("curl").args(["-s", "-w", "\n%{http_code}", "--interface", address, &url]), 120);
    assert!(ok, "curl failed: {output}");
    let (body, status) = output.trim_end().rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_string())
}

#[test]
fn one_clients_flood_of_new_images_is_rate_limited_while_anothers_pull_is_served() {
    let flake = TestFlake::new();
    let args = ["--build-rate", "5", "--max-builds", "1", "--answer-within", "2", "--tag-ttl", "1"];
    let server = FlakeforgeServer::start(flake.path(), &args);
    wait_until(120, "hello to be built", || server.get("/v2/hello/manifests/latest").status == 200);

    let names = composed_names();
    let (flood, slowest) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            names[..20]
                .iter()
                .map(|name| get_from("127.0.0.2", &server, &format!("/v2/{name}/manifests/latest")))
                .collect::<Vec<_>>()
        });
        // Meanwhile (and past hello's --tag-ttl) the other client pulls its image.
        let mut slowest = Duration::ZERO;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(700));
            let started = Instant::now();
            assert_eq!(server.get("/v2/hello/manifests/latest").status, 200);
            slowest = slowest.max(started.elapsed());
        }
        let out = TestDir::new();
        let started = Instant::now();
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/hello", server.host()),
            &format!("dir:{}", out.path().display()),
        ]);
        slowest = slowest.max(started.elapsed());
        (flood.join().unwrap(), slowest)
    });
    assert!(slowest < Duration::from_secs(20), "the built image waited {slowest:?} behind the flood");
    let limited =
        flood.iter().filter(|(status, body)| *status == 429 && body.contains("too many requests that run Nix"));
    assert!(limited.count() >= 10, "the flood was not limited: {flood:?}");
    // The address that was not flooding still starts builds.
    let other = server.get(&format!("/v2/{}/manifests/latest", names[25]));
    assert!(other.status == 200 || other.error_message().contains("is being built"), "{}", other.error_message());

    // Names compose at most --max-compose (8) packages, checked before any work.
    let nine = "/v2/a/b/c/d/e/f/g/h/i/manifests/latest";
    let refused = server.get(nine);
    assert_eq!((refused.status, refused.error_code().as_str()), (400, "NAME_INVALID"));
    assert!(refused.error_message().contains("at most 8"), "{}", refused.error_message());
    assert_eq!(server.get("/v2/a/b/c/d/e/f/g/h/i/tags/list").error_code(), "NAME_INVALID");
}

#[test]
fn concurrent_range_requests_for_an_evicted_layer_make_it_once() {
    let flake = TestFlake::new();
    // A one-byte cache keeps only the newest blob.
    let server = FlakeforgeServer::start(flake.path(), &["--cache-size", "1"]);
    let manifest = server.get("/v2/busybox/manifests/latest").json();
    let big = manifest["layers"].as_array().unwrap().iter().max_by_key(|l| l["size"].as_u64()).unwrap().clone();
    let digest = big["digest"].as_str().unwrap().to_string();
    assert_eq!(server.get("/v2/hello/manifests/latest").status, 200);
    let cached = server.state_dir().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    assert!(!cached.exists(), "the layer was not evicted");

    let barrier = Barrier::new(4);
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    server.request("GET", &format!("/v2/busybox/blobs/{digest}"), &[("Range", "bytes=0-0")])
                })
            })
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!((answer.status, answer.body.as_slice()), (206, &[0x1f][..]), "not the first byte of a gzip stream");
    }
    // The regeneration runs to its end after the clients have left, once.
    let regenerated = || server.log().matches(&format!("regenerated layer {digest}")).count();
    wait_until(60, "the layer to be made again", || regenerated() >= 1);
    let whole = server.get(&format!("/v2/busybox/blobs/{digest}"));
    assert_eq!(flakeforge::digest::Digest::of(&whole.body).to_string(), digest);
    assert_eq!(regenerated(), 1, "{}", server.log());
}

#[test]
fn error_bodies_carry_no_host_paths_or_builder_output() {
    let flake = TestFlake::new();
    flake.init_git();
    let server = FlakeforgeServer::start(flake.path(), &["--build-timeout", "3"]);
    let paths = [
        "/v2/broken/manifests/latest",
        "/v2/sleeper/manifests/latest",
        "/v2/hello/manifests/no-such-ref",
        "/v2/nosuch/manifests/latest",
        "/v2/nosuch/tags/list",
    ];
    let secrets = [
        flake.path().display().to_string(),
        server.state_dir().display().to_string(),
        "/nix/store/".into(),
        "git+file".into(),
        "flakeforge-test-build-failure".into(),
        "/tmp/".into(),
    ];
    for path in paths {
        let answer = server.get(path);
        assert!((400..500).contains(&answer.status), "{path}: {}", answer.status);
        let body = String::from_utf8_lossy(&answer.body);
        for secret in &secrets {
            assert!(!body.contains(secret.as_str()), "{path} told the client {secret:?}: {body}");
        }
    }
    // What each failure was is still said.
    let broken = server.get("/v2/broken/manifests/latest").error_message();
    assert!(broken.contains("builder for 'broken.drv' failed with exit code 3"), "{broken}");
    let sleeper = server.get("/v2/sleeper/manifests/latest").error_message();
    assert!(sleeper.contains("timed out after 3 s"), "{sleeper}");
    let no_ref = server.get("/v2/hello/manifests/no-such-ref").error_message();
    assert!(no_ref.contains("no ref no-such-ref") && no_ref.contains("git"), "{no_ref}");
}
