//! What the node counts as it works: requests by kind and outcome, their
//! latency, bytes in and out, store commits and errors, the local API's
//! calls. Kept with prometheus-client (a maintained implementation of the
//! OpenMetrics format, rather than text written by hand) and encoded by
//! `/metrics` together with the gauges read when it is scraped
//! (`gateway/metrics.rs`).
//!
//! Every label value is one of a fixed set of names chosen here (request
//! kinds, error codes, routes): nothing a peer or a caller sends becomes a
//! label, so the number of series is bounded.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A protocol request: its kind and how it ended (`ok` or an error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// A request kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Bytes moved: `in` or `out`, and what they were (`shard`, `proof`, `record`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransferLabels {
    pub direction: &'static str,
    pub kind: &'static str,
}

/// A store failure, by the error code it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

/// Why a connection was refused (`node_full`, `address_full`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: &'static str,
}

/// A call of the local HTTP API: its route and status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub status: &'static str,
}

/// An HTTP route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

fn latency_buckets() -> Histogram {
    // 1 ms to about 65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn fast_buckets() -> Histogram {
    // 0.1 ms to about 3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The node's counters and histograms.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<KindLabels, Histogram, fn() -> Histogram>,
    transfer_bytes: Family<TransferLabels, Counter>,
    commit_seconds: Histogram,
    store_errors: Family<ErrorLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    connections_refused: Family<RefusalLabels, Counter>,
    /// Totals of `transfer_bytes` by direction, for the dashboard.
    bytes_in: std::sync::atomic::AtomicU64,
    bytes_out: std::sync::atomic::AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Protocol requests served, by kind and outcome (ok, or the error code answered).",
            requests.clone(),
        );
        let request_seconds =
            Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_buckets,
            );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its last reply byte written, by kind (put_shard, get_shard, challenge, ...).",
            request_seconds.clone(),
        );
        let transfer_bytes = Family::<TransferLabels, Counter>::default();
        registry.register(
            "transfer_bytes",
            "Bytes served to peers (out) and stored from them (in), by what they were.",
            transfer_bytes.clone(),
        );
        let commit_seconds = fast_buckets();
        registry.register(
            "store_commit_duration_seconds",
            "Time to make a received shard durable: its fsync, the rename and the synced metadata write.",
            commit_seconds.clone(),
        );
        let store_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Requests that failed in the store, by the error code answered.",
            store_errors.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Calls of the local API and gateway, by route and status class.",
            http_requests.clone(),
        );
        let http_seconds =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_buckets,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time until a call of the local API and gateway is answered (its response starts; a streamed body is not included), by route.",
            http_seconds.clone(),
        );
        let connections_refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "QUIC connections refused before their handshake: the node held its most (node_full) or their address did (address_full).",
            connections_refused.clone(),
        );
        Metrics {
            registry,
            connections_refused,
            requests,
            request_seconds,
            transfer_bytes,
            commit_seconds,
            store_errors,
            http_requests,
            http_seconds,
            bytes_in: std::sync::atomic::AtomicU64::new(0),
            bytes_out: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A connection refused for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// The registry of these metrics, for `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A protocol request ended.
    pub fn request(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { kind, outcome })
            .inc();
        self.request_seconds
            .get_or_create(&KindLabels { kind })
            .observe(took.as_secs_f64());
    }

    /// Bytes served (`out`) or stored (`in`).
    pub fn transfer(&self, direction: &'static str, kind: &'static str, bytes: u64) {
        self.transfer_bytes
            .get_or_create(&TransferLabels { direction, kind })
            .inc_by(bytes);
        let total = if direction == "in" {
            &self.bytes_in
        } else {
            &self.bytes_out
        };
        total.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes received and sent in requests since start.
    pub fn transfer_totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed))
    }

    /// A shard was made durable.
    pub fn commit(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// A request failed in the store.
    pub fn store_error(&self, error: &'static str) {
        self.store_errors
            .get_or_create(&ErrorLabels { error })
            .inc();
    }

    /// A call of the local API ended with `status`.
    pub fn http(&self, route: &'static str, status: u16, took: Duration) {
        let status = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }
}
