//! `/metrics`: the node's gauges in the Prometheus text format.

use hyper::Response;
use hyper::header::{CONTENT_TYPE, HeaderValue};

use super::{ApiState, ChannelBody, Resp, rss_bytes};

pub(super) fn metrics(state: &ApiState) -> Resp {
    let s = state.server.store.stats().unwrap_or_default();
    let mut out = String::new();
    let mut g = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    g(
        "cairn_capacity_bytes",
        "Configured shard capacity.",
        s.capacity,
    );
    g(
        "cairn_used_bytes",
        "Bytes used by stored shards and outboards.",
        s.used_bytes,
    );
    g(
        "cairn_reserved_bytes",
        "Bytes reserved by writes in flight.",
        s.reserved_bytes,
    );
    g("cairn_shards", "Shard records held.", s.shard_count);
    g(
        "cairn_record_bytes",
        "Bytes of dataset records (manifests, placements) held.",
        s.record_bytes,
    );
    g(
        "cairn_filesystem_available_bytes",
        "Bytes the filesystem under the store has available.",
        s.fs_available,
    );
    g(
        "cairn_reconcile_done",
        "1 once the start-up reconcile has finished.",
        u64::from(s.reconcile_done),
    );
    g(
        "cairn_orphans_removed_total",
        "Orphan shard files removed by reconcile.",
        s.orphans_removed,
    );
    g(
        "cairn_lost_shards_found_total",
        "Shards found missing by reconcile.",
        s.lost_found,
    );
    g(
        "cairn_scrubbed_shards_total",
        "Shards re-hashed by the scrub.",
        s.scrubbed,
    );
    g(
        "cairn_corrupt_shards_found_total",
        "Shards that failed the scrub (bit rot).",
        s.corrupt_found,
    );
    g(
        "cairn_resident_memory_bytes",
        "Resident set size of the process.",
        rss_bytes(),
    );
    g(
        "cairn_uptime_seconds",
        "Seconds since start.",
        state.started.elapsed().as_secs(),
    );
    let (received, pieces, decoded) = state.datasets.read_counters();
    counter(
        &mut out,
        "cairn_shard_bytes_received_total",
        "Shard bytes (outboards and groups) received from miners.",
        received,
    );
    counter(
        &mut out,
        "cairn_range_pieces_total",
        "Pieces of data shards read for ranges within a segment.",
        pieces,
    );
    counter(
        &mut out,
        "cairn_range_pieces_decoded_total",
        "Of those, pieces decoded from other shards (holder failed or slow).",
        decoded,
    );
    let cache = state.datasets.cache_stats();
    counter(
        &mut out,
        "cairn_cache_hits_total",
        "Reads served from the edge cache.",
        cache.hits,
    );
    counter(
        &mut out,
        "cairn_cache_misses_total",
        "Reads the edge cache could not serve.",
        cache.misses,
    );
    counter(
        &mut out,
        "cairn_cache_evicted_bytes_total",
        "Bytes the edge cache let go to stay in its budget.",
        cache.evicted_bytes,
    );
    gauge(
        &mut out,
        "cairn_cache_bytes",
        "Verified group bytes in the edge cache.",
        cache.bytes,
    );
    gauge(
        &mut out,
        "cairn_cache_budget_bytes",
        "The edge cache's budget ([cache] memory).",
        cache.budget,
    );
    counter(
        &mut out,
        "cairn_prefetch_segments_total",
        "Segments fetched ahead of sequential readers.",
        state.datasets.prefetched_segments(),
    );
    counter(
        &mut out,
        "cairn_prefetch_skipped_total",
        "Read-aheads not started: the node's read-ahead slots were all taken.",
        state.datasets.read_ahead_skipped(),
    );
    if let Some(disk) = state.datasets.disk_cache_stats() {
        counter(
            &mut out,
            "cairn_cache_disk_hits_total",
            "Reads served from the edge cache's disk tier.",
            disk.hits,
        );
        counter(
            &mut out,
            "cairn_cache_disk_misses_total",
            "Reads the disk tier could not serve.",
            disk.misses,
        );
        counter(
            &mut out,
            "cairn_cache_disk_evicted_bytes_total",
            "Bytes the disk tier deleted to stay in its budget.",
            disk.evicted_bytes,
        );
        counter(
            &mut out,
            "cairn_cache_disk_dropped_total",
            "Cached shard files that failed their check on read and were deleted.",
            disk.dropped,
        );
        gauge(
            &mut out,
            "cairn_cache_disk_bytes",
            "Bytes of verified shards and outboards in the disk tier.",
            disk.bytes,
        );
        gauge(
            &mut out,
            "cairn_cache_disk_budget_bytes",
            "The disk tier's budget ([cache] disk).",
            disk.budget,
        );
    }
    if let Some(reads) = state.server.registry.metagraph_reads() {
        out.push_str(&format!(
            "# HELP cairn_chain_metagraph_reads_total Metagraph reads from the chain.\n# TYPE cairn_chain_metagraph_reads_total counter\ncairn_chain_metagraph_reads_total {reads}\n"
        ));
    }
    let mut r = Response::new(ChannelBody::full(out));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
    ));
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
    ));
}
