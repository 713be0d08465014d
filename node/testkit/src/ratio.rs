//! Throughput measured beside a memcpy of the same bytes in the same run.
//!
//! Shared by the benchmarks of several crates. Absolute MB/s
//! depend on the machine; the ratio to memcpy, measured seconds apart on the
//! same core, is what carries over from one machine to another.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Median throughput in MB/s (10^6 bytes/s) of `f`, which processes `bytes`
/// bytes per call, over 7 rounds of at least 150 ms each, after a warm-up.
pub fn mbps(bytes: usize, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(100) {
        f();
    }
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < Duration::from_millis(150) {
                f();
                calls += 1;
            }
            (bytes as f64 * calls as f64) / start.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    rounds.sort_by(|a, b| a.total_cmp(b));
    rounds[3]
}

/// Throughput of copying `bytes` bytes between two buffers.
pub fn memcpy_mbps(bytes: usize) -> f64 {
    let src = vec![0x5au8; bytes];
    let mut dst = vec![0u8; bytes];
    mbps(bytes, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    })
}

/// One row of a ratio table.
pub struct Row {
    pub name: String,
    pub bytes: usize,
    pub mbps: f64,
    /// Optional reference row name: prints this row's share of it.
    pub versus: Option<(String, f64)>,
}

/// Prints rows as MB/s and as a fraction of memcpy of the same byte count.
pub fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "  {:<44} {:>10} {:>10} {:>9}  vs library",
        "operation", "bytes", "MB/s", "x memcpy"
    );
    let mut memcpy_cache: Vec<(usize, f64)> = Vec::new();
    for r in rows {
        let m = match memcpy_cache.iter().find(|(b, _)| *b == r.bytes) {
            Some((_, m)) => *m,
            None => {
                let m = memcpy_mbps(r.bytes);
                memcpy_cache.push((r.bytes, m));
                m
            }
        };
        let versus = r
            .versus
            .as_ref()
            .map(|(n, v)| format!("{:.0}% of {n}", 100.0 * r.mbps / v))
            .unwrap_or_default();
        println!(
            "  {:<44} {:>10} {:>10.0} {:>9.3}  {}",
            r.name,
            r.bytes,
            r.mbps,
            r.mbps / m,
            versus
        );
    }
    for (bytes, m) in memcpy_cache {
        println!("  (memcpy of {bytes} bytes: {m:.0} MB/s)");
    }
}

/// True when the bench binary runs in a mode where timing tables are unwanted
/// (`cargo test --benches`, `cargo bench -- --test`, `--list`).
pub fn quick_mode() -> bool {
    std::env::args().any(|a| a == "--test" || a == "--list" || a == "--exact")
        || !std::env::args().any(|a| a == "--bench")
}
