//! `/metrics` of the real binary: a pull, a failed build, evictions and a
//! layer made again change the counters they should; `--metrics-listen`
//! serves them apart (and counts on the main listener idle connections
//! closed to make room, connections turned away and slow heads answered
//! 408); over HTTPS the certificate's expiry is there.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::server::http_request;
use common::{wait_until, FlakeforgeServer, TestFlake};

/// The samples of a Prometheus text page: `name{labels}` → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}")))
        })
        .collect()
}

struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn of(server: &FlakeforgeServer) -> Scrape {
        let response = server.get("/metrics");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        Scrape(parse(&String::from_utf8(response.body).unwrap()))
    }

    /// A scrape once `series` has reached `value`. A request is counted when
    /// its response has been sent, a moment after the client has read it, so
    /// the last request's count may be missing from a scrape made at once.
    fn once_counted(server: &FlakeforgeServer, series: &str, value: f64) -> Scrape {
        let mut scrape = Scrape::of(server);
        wait_until(30, &format!("{series} to reach {value}"), || {
            scrape = Scrape::of(server);
            scrape.get(series) >= value
        });
        scrape
    }

    /// A series' value; absent is 0 (a labelled series appears when first counted).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

/// `series` went from `before` to `after` by exactly `by`.
fn assert_grew(before: &Scrape, after: &Scrape, series: &str, by: f64) {
    let grown = after.get(series) - before.get(series);
    assert_eq!(grown, by, "{series} grew by {grown}, not {by}");
}

#[test]
fn a_pull_a_failed_build_and_evictions_change_the_counters() {
    let flake = TestFlake::web();
    let mut server = FlakeforgeServer::start(flake.path(), &[]);
    let before = Scrape::of(&server);

    // A pull: the manifest, then the config and every layer.
    let accept = [("Accept", "application/vnd.oci.image.manifest.v1+json")];
    let manifest = server.request("GET", "/v2/hello/manifests/latest", &accept);
    assert_eq!(manifest.status, 200);
    let manifest = manifest.json();
    let layers: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["digest"].as_str().unwrap().to_string(), l["size"].as_u64().unwrap()))
        .collect();
    let config =
        (manifest["config"]["digest"].as_str().unwrap().to_string(), manifest["config"]["size"].as_u64().unwrap());
    for (digest, size) in layers.iter().chain([&config]) {
        let blob = server.get(&format!("/v2/hello/blobs/{digest}"));
        assert_eq!((blob.status, blob.body.len() as u64), (200, *size));
    }
    let n = layers.len() as f64;
    let blobs = r#"flakeforge_http_requests_total{endpoint="blob",status="200"}"#;
    let after = Scrape::once_counted(&server, blobs, before.get(blobs) + n + 1.0);
    let layer_bytes: u64 = layers.iter().map(|(_, size)| size).sum();
    assert_grew(&before, &after, r#"flakeforge_http_requests_total{endpoint="manifest",status="200"}"#, 1.0);
    assert_grew(&before, &after, r#"flakeforge_http_requests_total{endpoint="blob",status="200"}"#, n + 1.0);
    assert_grew(
        &before,
        &after,
        r#"flakeforge_http_response_bytes_total{endpoint="blob"}"#,
        (layer_bytes + config.1) as f64,
    );
    assert_grew(&before, &after, r#"flakeforge_http_request_duration_seconds_count{endpoint="blob"}"#, n + 1.0);
    assert_grew(&before, &after, r#"flakeforge_builds_total{outcome="succeeded"}"#, 1.0);
    assert_grew(&before, &after, r#"flakeforge_build_duration_seconds_count{outcome="succeeded"}"#, 1.0);
    assert_grew(&before, &after, r#"flakeforge_layer_generations_total{reason="new"}"#, n);
    assert_grew(&before, &after, r#"flakeforge_layer_generated_bytes_total{reason="new"}"#, layer_bytes as f64);
    assert_grew(&before, &after, "flakeforge_layer_generation_seconds_count", n);
    assert_grew(&before, &after, "flakeforge_cache_hits_total", n);
    assert_eq!(after.get("flakeforge_cache_size_bytes"), layer_bytes as f64);
    assert_eq!(after.get("flakeforge_cache_blobs"), n);
    assert_eq!(after.get("flakeforge_cache_limit_bytes"), (10u64 << 30) as f64);
    assert!(after.get(r#"flakeforge_nix_invocations_total{lane="build",outcome="succeeded"}"#) >= 1.0);
    assert!(after.get(r#"flakeforge_nix_invocations_total{lane="eval",outcome="succeeded"}"#) >= 1.0);
    assert_eq!((after.get("flakeforge_builds_running"), after.get("flakeforge_builds_queued")), (0.0, 0.0));
    assert!(after.get("flakeforge_http_connections_open") >= 1.0, "the scrape's own connection is open");
    assert_eq!(after.get("flakeforge_tls_certificate_expiry_timestamp_seconds"), 0.0, "plain HTTP");

    // A failed build.
    let broken = server.request("GET", "/v2/broken/manifests/latest", &accept);
    assert_eq!(broken.status, 404);
    let not_found = r#"flakeforge_http_requests_total{endpoint="manifest",status="404"}"#;
    let failed = Scrape::once_counted(&server, not_found, after.get(not_found) + 1.0);
    assert_grew(&after, &failed, r#"flakeforge_builds_total{outcome="failed"}"#, 1.0);
    assert_grew(&after, &failed, r#"flakeforge_http_requests_total{endpoint="manifest",status="404"}"#, 1.0);
    assert!(failed.get(r#"flakeforge_nix_invocations_total{lane="build",outcome="failed"}"#) >= 1.0);

    // A cache of one byte keeps only the newest blob: the others are evicted
    // at the start, and one asked for is a miss, made again.
    server.restart_with(&["--cache-size", "1"]);
    let restarted = Scrape::of(&server);
    assert_eq!(restarted.get("flakeforge_cache_evictions_total"), n - 1.0);
    assert_eq!(restarted.get("flakeforge_cache_blobs"), 1.0);
    let evicted = layers.iter().find(|(digest, _)| {
        let path = server.state_dir().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        !path.exists()
    });
    let (digest, size) = evicted.expect("a layer was evicted");
    let blob = server.get(&format!("/v2/hello/blobs/{digest}"));
    assert_eq!((blob.status, blob.body.len() as u64), (200, *size));
    let regenerated = Scrape::of(&server);
    assert_eq!(regenerated.get("flakeforge_cache_misses_total"), 1.0);
    assert_eq!(regenerated.get(r#"flakeforge_layer_generations_total{reason="regenerated"}"#), 1.0);
    assert_eq!(regenerated.get(r#"flakeforge_layer_generated_bytes_total{reason="regenerated"}"#), *size as f64);
}

#[test]
fn metrics_listen_serves_them_apart_and_counts_refused_connections() {
    let flake = TestFlake::web();
    let server = FlakeforgeServer::start(flake.path(), &["--metrics-listen", "127.0.0.1:0", "--max-connections", "1"]);
    let metrics = server.metrics_listener();
    // The harness's own first request may hold the one connection a moment longer.
    let mut main = server.get("/metrics");
    wait_until(20, "the one connection to be free", || {
        main = server.get("/metrics");
        main.status != 503
    });
    assert_eq!(main.status, 404, "the main listener does not serve /metrics");
    let other = http_request(metrics, "GET", "/v2/", &[]);
    assert_eq!(other.status, 404, "the metrics listener serves /metrics alone");

    // An idle keep-alive connection is closed to make room for the next one.
    // (Until its answer is sent and the server waits for its next request it
    // is busy, and the next is turned away: hence the retries.)
    // The previous request's connection may still hold the one slot a
    // moment after its answer was read: this one is turned away then, so
    // it tries again.
    let mut answer = [0; 512];
    let mut idle = None;
    wait_until(30, "a connection to be answered and left idle", || {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let n = stream.read(&mut answer).unwrap();
        let served = answer[..n].starts_with(b"HTTP/1.1 200");
        assert!(served || answer[..n].starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer[..n]));
        idle = Some(stream);
        served
    });
    let mut idle = idle.unwrap();
    wait_until(30, "the idle connection to be closed for another", || server.get("/v2/").status == 200);
    idle.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(matches!(idle.read(&mut answer), Ok(0) | Err(_)), "the idle connection is still open");

    // One connection in the middle of a request head fills the main
    // listener: it is not closed for another, the next is turned away.
    let mut busy = None;
    wait_until(30, "a connection to be turned away", || {
        let mut held = TcpStream::connect(server.addr()).unwrap();
        held.write_all(b"GET /v2/ HTTP/1.1\r\n").unwrap();
        // Time for the server to read it; if not, the next try waits longer.
        thread::sleep(Duration::from_millis(300));
        let turned_away = server.get("/v2/").status == 503;
        busy = Some(held);
        turned_away
    });
    // The head it never finishes falls below the minimum rate: 408.
    let mut busy = busy.unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut slow = Vec::new();
    let _ = busy.read_to_end(&mut slow);
    assert!(slow.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&slow));

    let scrape_of_408 = r#"flakeforge_http_requests_total{endpoint="invalid",status="408"}"#;
    let mut scrape = BTreeMap::new();
    wait_until(30, "the 408 to be counted", || {
        let response = http_request(metrics, "GET", "/metrics", &[]);
        assert_eq!(response.status, 200);
        scrape = parse(&String::from_utf8(response.body).unwrap());
        scrape.get(scrape_of_408).is_some_and(|count| *count >= 1.0)
    });
    assert!(scrape["flakeforge_http_connections_refused_total"] >= 1.0);
    assert!(scrape["flakeforge_http_connections_closed_idle_total"] >= 1.0);
    assert!(scrape[r#"flakeforge_http_requests_total{endpoint="metrics",status="404"}"#] >= 1.0);
}

#[test]
fn over_https_the_certificates_expiry_is_shown() {
    let flake = TestFlake::web();
    let server = FlakeforgeServer::start_tls(flake.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let response = http_request(server.metrics_listener(), "GET", "/metrics", &[]);
    assert_eq!(response.status, 200);
    let expiry =
        parse(&String::from_utf8(response.body).unwrap())["flakeforge_tls_certificate_expiry_timestamp_seconds"];
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as f64;
    let days = (expiry - now) / 86400.0;
    // The local CA issues server certificates for about a year.
    assert!((360.0..=366.0).contains(&days), "the certificate expires in {days} days");
}
