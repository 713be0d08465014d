//! `/metrics`: the node's counters and histograms (`crate::metrics`) and
//! the gauges read when it is scraped (store, cache, validator), in the
//! OpenMetrics text format, encoded by prometheus-client.

use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::{ApiState, ChannelBody, Resp, rss_bytes};

/// A miner as a validator labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MinerLabels {
    miner: String,
}

/// A miner and how its audits ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    miner: String,
    outcome: &'static str,
}

/// A volume (disk) of the store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabels {
    volume: String,
    path: String,
}

/// A repair's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// A chain call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
}

pub(super) fn metrics(state: &ApiState) -> Resp {
    let mut out = String::new();
    let scraped = scraped(state);
    // Writing into a String cannot fail.
    let _ = encode_registry(&mut out, state.server.metrics.registry());
    let _ = encode_registry(&mut out, &scraped);
    let _ = encode_eof(&mut out);
    let mut r = Response::new(ChannelBody::full(out));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// The values read at scrape time, as a registry made for this scrape.
fn scraped(state: &ApiState) -> Registry {
    let mut reg = Registry::with_prefix("cairn");
    let s = state.server.store.stats().unwrap_or_default();
    let mut g = |name: &str, help: &str, v: u64| {
        reg.register(name, help, ConstGauge::new(v));
    };
    g("capacity_bytes", "Configured shard capacity.", s.capacity);
    g(
        "used_bytes",
        "Bytes used by stored shards and outboards.",
        s.used_bytes,
    );
    g(
        "reserved_bytes",
        "Bytes reserved by writes in flight.",
        s.reserved_bytes,
    );
    g("shards", "Shard records held.", s.shard_count);
    g(
        "record_bytes",
        "Bytes of dataset records (manifests, placements) held.",
        s.record_bytes,
    );
    let (receiving, waiting) = state.server.record_bodies();
    g(
        "record_bodies_receiving_bytes",
        "Bytes of the budget for record bodies being received taken now.",
        receiving,
    );
    g(
        "record_bodies_waiting",
        "Record bodies waiting for room in that budget (not those waiting within their peer's share).",
        waiting as u64,
    );
    g(
        "filesystem_available_bytes",
        "Bytes the filesystem under the store has available.",
        s.fs_available,
    );
    g(
        "reconcile_done",
        "1 once the start-up reconcile has finished.",
        u64::from(s.reconcile_done),
    );
    g(
        "resident_memory_bytes",
        "Resident set size of the process.",
        rss_bytes(),
    );
    g(
        "uptime_seconds",
        "Seconds since start.",
        state.started.elapsed().as_secs(),
    );
    let cache = state.datasets.cache_stats();
    g(
        "cache_bytes",
        "Verified group bytes in the edge cache.",
        cache.bytes,
    );
    g(
        "cache_budget_bytes",
        "The edge cache's budget ([cache] memory).",
        cache.budget,
    );
    let disk = state.datasets.disk_cache_stats();
    if let Some(d) = &disk {
        g(
            "cache_disk_bytes",
            "Bytes of verified shards and outboards in the disk tier.",
            d.bytes,
        );
        g(
            "cache_disk_budget_bytes",
            "The disk tier's budget ([cache] disk).",
            d.budget,
        );
    }
    // Per volume: a disk gone shows as present 0 (alert on it).
    let volumes = state.server.store.volumes().unwrap_or_default();
    for (name, help, pick) in [
        (
            "volume_capacity_bytes",
            "Configured shard capacity of a volume (0 is the data directory).",
            (|v: &cairn_store::VolumeStats| v.capacity) as fn(&cairn_store::VolumeStats) -> u64,
        ),
        (
            "volume_used_bytes",
            "Bytes of shards on a volume (the data directory's include records).",
            |v| v.used_bytes,
        ),
        (
            "volume_filesystem_available_bytes",
            "Bytes the filesystem under a volume has available (0 while missing).",
            |v| v.fs_available,
        ),
        (
            "volume_present",
            "1 while the volume's disk is there; 0: its shards are reported lost.",
            |v| u64::from(v.present),
        ),
    ] {
        let family = Family::<VolumeLabels, Gauge>::default();
        for v in &volumes {
            family
                .get_or_create(&VolumeLabels {
                    volume: v.index.to_string(),
                    path: v.path.display().to_string(),
                })
                .set(i64::try_from(pick(v)).unwrap_or(i64::MAX));
        }
        reg.register(name, help, family);
    }
    let mut c = |name: &str, help: &str, v: u64| {
        reg.register(name, help, ConstCounter::new(v));
    };
    c(
        "orphans_removed",
        "Orphan shard files removed by reconcile.",
        s.orphans_removed,
    );
    c(
        "lost_shards_found",
        "Shards found missing by reconcile.",
        s.lost_found,
    );
    c(
        "scrubbed_shards",
        "Shards re-hashed by the scrub.",
        s.scrubbed,
    );
    c(
        "corrupt_shards_found",
        "Shards that failed the scrub (bit rot).",
        s.corrupt_found,
    );
    let (received, pieces, decoded) = state.datasets.read_counters();
    c(
        "shard_bytes_received",
        "Shard bytes (outboards and groups) received from miners.",
        received,
    );
    c(
        "range_pieces",
        "Pieces of data shards read for ranges within a segment.",
        pieces,
    );
    c(
        "range_pieces_decoded",
        "Of those, pieces decoded from other shards (holder failed or slow).",
        decoded,
    );
    c(
        "cache_hits",
        "Reads served from the edge cache.",
        cache.hits,
    );
    c(
        "cache_misses",
        "Reads the edge cache could not serve.",
        cache.misses,
    );
    c(
        "cache_evicted_bytes",
        "Bytes the edge cache let go to stay in its budget.",
        cache.evicted_bytes,
    );
    c(
        "prefetch_segments",
        "Segments fetched ahead of sequential readers.",
        state.datasets.prefetched_segments(),
    );
    c(
        "prefetch_skipped",
        "Read-aheads not started: the node's read-ahead slots were all taken.",
        state.datasets.read_ahead_skipped(),
    );
    if let Some(d) = &disk {
        c(
            "cache_disk_hits",
            "Reads served from the edge cache's disk tier.",
            d.hits,
        );
        c(
            "cache_disk_misses",
            "Reads the disk tier could not serve.",
            d.misses,
        );
        c(
            "cache_disk_evicted_bytes",
            "Bytes the disk tier deleted to stay in its budget.",
            d.evicted_bytes,
        );
        c(
            "cache_disk_dropped",
            "Cached shard files that failed their check on read and were deleted.",
            d.dropped,
        );
    }
    if let Some(reads) = state.server.registry.metagraph_reads() {
        c(
            "chain_metagraph_reads",
            "Metagraph reads from the chain.",
            reads,
        );
    }
    if let Some(errors) = state.server.registry.chain_errors() {
        let family = Family::<CallLabels, Counter>::default();
        for (call, n) in errors {
            family.get_or_create(&CallLabels { call }).inc_by(n);
        }
        reg.register(
            "chain_call_errors",
            "Chain calls that failed, by call (metagraph reads, submitted extrinsics).",
            family,
        );
    }
    if let Some(v) = &state.server.validator {
        validator_metrics(&mut reg, &v.report());
    }
    reg
}

/// A validator's scoreboard as metrics: per miner its audits by outcome,
/// score and weight; the repairs.
fn validator_metrics(reg: &mut Registry, r: &cairn_api::ValidatorReport) {
    let audits = Family::<AuditLabels, Counter>::default();
    let score = Family::<MinerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let weight = Family::<MinerLabels, Gauge>::default();
    for m in &r.miners {
        for (outcome, n) in [
            ("pass", m.passes),
            ("fail", m.failures),
            ("timeout", m.timeouts),
        ] {
            audits
                .get_or_create(&AuditLabels {
                    miner: m.node_id.clone(),
                    outcome,
                })
                .inc_by(n);
        }
        let miner = MinerLabels {
            miner: m.node_id.clone(),
        };
        score.get_or_create(&miner).set(m.score);
        weight.get_or_create(&miner).set(i64::from(m.weight));
    }
    reg.register(
        "validator_audits",
        "Scored challenges per miner, by outcome (pass, fail: wrong proof or missing, timeout: silent after its re-asks).",
        audits,
    );
    reg.register(
        "validator_miner_score",
        "Each miner's reputation score (0 to 1).",
        score,
    );
    reg.register(
        "validator_miner_weight",
        "The weight last set for each miner (u16 scale).",
        weight,
    );
    reg.register(
        "validator_challenges",
        "Challenges scored.",
        ConstCounter::new(r.challenges),
    );
    let repairs = Family::<ResultLabels, Counter>::default();
    repairs
        .get_or_create(&ResultLabels { result: "done" })
        .inc_by(r.repairs_done);
    repairs
        .get_or_create(&ResultLabels { result: "failed" })
        .inc_by(r.repairs_failed);
    reg.register("validator_repairs", "Shard repairs, by result.", repairs);
    reg.register(
        "validator_repairs_pending",
        "Shards queued for repair.",
        ConstGauge::new(r.repairs_pending as u64),
    );
    reg.register(
        "validator_datasets",
        "Datasets audited.",
        ConstGauge::new(r.datasets as u64),
    );
}
