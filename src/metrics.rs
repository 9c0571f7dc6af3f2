//! The Prometheus metrics every layer records into: one set of families,
//! created on first use and shared by the whole process ([`global`]), so
//! that `http/`, `service/`, `nix/`, `cache/` and `tls/` record without
//! depending on the layer that renders them (`web/metrics.rs`). Names
//! follow Prometheus conventions (`flakeforge_…_total`, `_seconds`,
//! `_bytes`); README.md lists each.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Seconds an HTTP exchange takes, head to last byte: manifests answer in
/// milliseconds, a blob or a request waiting for a build in minutes.
const REQUEST_BUCKETS: [f64; 14] =
    [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0];
/// Seconds a build takes, from its start to its image.
const BUILD_BUCKETS: [f64; 11] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0];
/// Seconds a layer takes to generate.
const LAYER_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    pub lane: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Requests and connections (`http/`).
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub durations: Family<EndpointLabel, Histogram>,
    pub response_bytes: Family<EndpointLabel, Counter>,
    pub connections: Counter,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub connections_closed_idle: Counter,
}

impl HttpMetrics {
    /// One exchange: its endpoint kind, status, body bytes sent and time from head to last byte.
    pub fn exchange(&self, endpoint: &'static str, status: u16, bytes: u64, took: Duration) {
        self.requests.get_or_create(&RequestLabels { endpoint, status }).inc();
        self.durations.get_or_create(&EndpointLabel { endpoint }).observe(took.as_secs_f64());
        self.response_bytes.get_or_create(&EndpointLabel { endpoint }).inc_by(bytes);
    }
}

/// Build jobs (`service/job.rs`).
pub struct BuildMetrics {
    pub finished: Family<OutcomeLabel, Counter>,
    pub durations: Family<OutcomeLabel, Histogram>,
    pub running: Gauge,
    pub queued: Gauge,
}

/// `nix` processes (`nix/`).
pub struct NixMetrics {
    pub invocations: Family<InvocationLabels, Counter>,
    /// Work the scheduler turned down before running anything.
    pub refused: Family<ReasonLabel, Counter>,
}

/// Layer blobs written (`service/`): `reason` is `new` (first time),
/// `regenerated` (an evicted blob made again into the cache) or `uncached`
/// (made for one client when the cache had no room).
pub struct LayerMetrics {
    pub generations: Family<ReasonLabel, Counter>,
    pub bytes: Family<ReasonLabel, Counter>,
    pub seconds: Histogram,
}

impl LayerMetrics {
    pub fn generated(&self, reason: &'static str, bytes: u64, took: Duration) {
        self.generations.get_or_create(&ReasonLabel { reason }).inc();
        self.bytes.get_or_create(&ReasonLabel { reason }).inc_by(bytes);
        self.seconds.observe(took.as_secs_f64());
    }
}

/// The layer blob cache (`cache/blobs.rs`, and `service/blob.rs` for hits and misses).
pub struct CacheMetrics {
    pub size_bytes: Gauge,
    pub limit_bytes: Gauge,
    pub blobs: Gauge,
    pub hits: Counter,
    pub misses: Counter,
    pub evictions: Counter,
    pub evicted_bytes: Counter,
}

/// Requests to a remote store (`storage/s3.rs`): `op` is `get`, `head`,
/// `put`, `delete`, `list`, or a step of a multipart upload
/// (`create_multipart`, `upload_part`, `complete_multipart`, `abort_multipart`);
/// records the store did not take, waiting in memory (`cache/unwritten.rs`).
pub struct StorageMetrics {
    pub requests: Family<OpLabel, Counter>,
    pub unwritten: Gauge,
}

impl StorageMetrics {
    pub fn request(&self, op: &'static str) {
        self.requests.get_or_create(&OpLabel { op }).inc();
    }
}

/// The served certificate (`tls/`).
pub struct TlsMetrics {
    pub certificate_expiry: Gauge,
}

pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub builds: BuildMetrics,
    pub nix: NixMetrics,
    pub layers: LayerMetrics,
    pub cache: CacheMetrics,
    pub storage: StorageMetrics,
    pub tls: TlsMetrics,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Every metric in the Prometheus text format (version 0.0.4).
pub fn render() -> String {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &global().registry)
        .expect("writing to a String does not fail");
    text
}

impl Metrics {
    fn new() -> Metrics {
        let http = HttpMetrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            response_bytes: Family::default(),
            connections: Counter::default(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            connections_closed_idle: Counter::default(),
        };
        let builds = BuildMetrics {
            finished: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(BUILD_BUCKETS)),
            running: Gauge::default(),
            queued: Gauge::default(),
        };
        let nix = NixMetrics { invocations: Family::default(), refused: Family::default() };
        let layers = LayerMetrics {
            generations: Family::default(),
            bytes: Family::default(),
            seconds: Histogram::new(LAYER_BUCKETS),
        };
        let cache = CacheMetrics {
            size_bytes: Gauge::default(),
            limit_bytes: Gauge::default(),
            blobs: Gauge::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            evictions: Counter::default(),
            evicted_bytes: Counter::default(),
        };
        let storage = StorageMetrics { requests: Family::default(), unwritten: Gauge::default() };
        let tls = TlsMetrics { certificate_expiry: Gauge::default() };

        let mut registry = Registry::with_prefix("flakeforge");
        // Counters are registered without `_total`: the encoder appends it.
        let r = &mut registry;
        r.register("http_requests", "HTTP requests answered, by endpoint kind and status", http.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "Time from a request's head to the last byte of its answer, by endpoint kind",
            http.durations.clone(),
        );
        r.register("http_response_bytes", "Body bytes sent, by endpoint kind", http.response_bytes.clone());
        r.register("http_connections", "Connections accepted", http.connections.clone());
        r.register("http_connections_open", "Connections open now", http.connections_open.clone());
        r.register(
            "http_connections_refused",
            "Connections past --max-connections or --max-connections-per-ip with no idle one to close, answered 503 or closed",
            http.connections_refused.clone(),
        );
        r.register(
            "http_connections_closed_idle",
            "Idle connections closed to make room for a new one",
            http.connections_closed_idle.clone(),
        );
        r.register("builds", "Builds finished, by outcome (succeeded, failed)", builds.finished.clone());
        r.register(
            "build_duration_seconds",
            "Time from a build's start to its end, by outcome",
            builds.durations.clone(),
        );
        r.register("builds_running", "Builds running now", builds.running.clone());
        r.register("builds_queued", "Builds waiting for a build slot now", builds.queued.clone());
        r.register(
            "nix_invocations",
            "nix processes run, by lane (build, eval) and outcome (succeeded, failed, timeout, error)",
            nix.invocations.clone(),
        );
        r.register(
            "nix_refused",
            "Nix work turned down before it ran, by reason (busy, rate_limited)",
            nix.refused.clone(),
        );
        r.register(
            "layer_generations",
            "Layer blobs generated, by reason (new, regenerated, uncached)",
            layers.generations.clone(),
        );
        r.register("layer_generated_bytes", "Bytes of layer blobs generated, by reason", layers.bytes.clone());
        r.register("layer_generation_seconds", "Time to generate a layer blob", layers.seconds.clone());
        r.register("cache_size_bytes", "Bytes of layer blobs in the cache", cache.size_bytes.clone());
        r.register("cache_limit_bytes", "The cache's size limit (--cache-size)", cache.limit_bytes.clone());
        r.register("cache_blobs", "Layer blobs in the cache", cache.blobs.clone());
        r.register("cache_hits", "Layer blobs served from the cache", cache.hits.clone());
        r.register("cache_misses", "Layer blobs asked for that had to be made again", cache.misses.clone());
        r.register("cache_evictions", "Layer blobs evicted from the cache", cache.evictions.clone());
        r.register("cache_evicted_bytes", "Bytes of layer blobs evicted from the cache", cache.evicted_bytes.clone());
        r.register(
            "storage_requests",
            "Requests sent to a remote store (S3), by operation (get, head, put, delete, list, create_multipart, upload_part, complete_multipart, abort_multipart)",
            storage.requests.clone(),
        );
        r.register(
            "storage_unwritten_records",
            "Records the store did not take (an outage, a full disk), kept in memory until it does",
            storage.unwritten.clone(),
        );
        r.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the served certificate expires (Unix time); 0 over plain HTTP",
            tls.certificate_expiry.clone(),
        );
        Metrics { registry, http, builds, nix, layers, cache, storage, tls }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_prometheus_text_format_with_conventional_names() {
        let metrics = global();
        metrics.http.exchange("manifest", 200, 1234, Duration::from_millis(20));
        metrics.layers.generated("new", 10, Duration::from_millis(5));
        let text = render();
        assert!(text.contains("# TYPE flakeforge_http_requests_total counter\n"), "{text}");
        assert!(text.contains("flakeforge_http_requests_total{endpoint=\"manifest\",status=\"200\"} "), "{text}");
        assert!(text.contains("flakeforge_http_request_duration_seconds_bucket{endpoint=\"manifest\",le=\"0.025\"} "));
        assert!(text.contains("# TYPE flakeforge_cache_size_bytes gauge\n"));
        assert!(text.contains("flakeforge_layer_generated_bytes_total{reason=\"new\"} "));
        assert!(text.contains("flakeforge_tls_certificate_expiry_timestamp_seconds "));
        // Every family has help and a type, and every name has the prefix.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("flakeforge_"), "{line}");
        }
    }
}
