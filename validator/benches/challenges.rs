//! Challenges verified per second by one validator process, over real QUIC
//! against a devnet of miner processes holding a pinned dataset.
//!
//! ```sh
//! cargo build --release -p cairn-cli --bin cairn
//! cargo bench -p cairn-validator --bench challenges
//! ```
//!
//! The validator runs with an unbounded rate (its in-flight limit is the only
//! brake), so the figure is what the machine sustains: every challenge is
//! sent, answered by a miner, and verified. The validator's own CPU time per
//! challenge is printed beside it, which says what one validator core could
//! verify were the miners elsewhere. `CAIRN_BENCH_SECS` (default 15) sets the
//! measured window, `CAIRN_BENCH_IN_FLIGHT` (default 16) the in-flight limit,
//! `CAIRN_BENCH_SAMPLES` (default 44) the samples per challenge.

use std::time::{Duration, Instant};

use cairn_testkit::bench::{cpu_secs, env_num, rss_kib};
use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// User + system CPU seconds and peak RSS (KiB) of a process.
fn cpu_and_hwm(pid: u32) -> (f64, u64) {
    (cpu_secs(pid), rss_kib(pid).1)
}

fn main() {
    // `cargo test --benches` / `cargo bench -- --test`: compile-check only.
    if !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--test") {
        return;
    }
    let secs = env_num("CAIRN_BENCH_SECS", 15);
    let in_flight = env_num("CAIRN_BENCH_IN_FLIGHT", 16).to_string();
    let samples = env_num("CAIRN_BENCH_SAMPLES", 44).to_string();
    let env = [
        ("CAIRN_VALIDATOR_SAMPLES", samples.as_str()),
        ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "100000"),
        ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "100000"),
        ("CAIRN_VALIDATOR_MAX_IN_FLIGHT", in_flight.as_str()),
        ("CAIRN_VALIDATOR_REPAIR", "false"),
        ("CAIRN_LOG_LEVEL", "warn"),
    ];
    let net = CliDevnet::with(6, 1, &env);

    // 64 MiB in 8 MiB segments: 8 segments x 6 shards of 2 MiB.
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("weights.bin"), bytes(64 << 20, 1)).unwrap();
    let pin = net.cli(&["pin", data.to_str().unwrap(), "--json"]);
    assert!(pin.status.success(), "{}", text(&pin));
    let v: serde_json::Value = serde_json::from_slice(&pin.stdout).unwrap();
    assert_eq!(v["validators_notified"], 1, "{v}");

    let pid = net.pid("validator-0");
    // Warm-up: every miner's connection is up and its shards are assigned.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut r = net.report();
    while r.challenges < 200 || r.miners.iter().filter(|m| m.passes > 0).count() < 6 {
        assert!(Instant::now() < deadline, "validator not auditing: {r:#?}");
        std::thread::sleep(Duration::from_millis(250));
        r = net.report();
    }

    let (cpu0, _) = cpu_and_hwm(pid);
    let (n0, t0) = (r.challenges, Instant::now());
    std::thread::sleep(Duration::from_secs(secs));
    let r = net.report();
    let (cpu1, hwm) = cpu_and_hwm(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let done = r.challenges - n0;
    let failures: u64 = r.miners.iter().map(|m| m.failures + m.timeouts).sum();
    assert_eq!(failures, 0, "honest miners failed challenges: {r:#?}");
    let rate = done as f64 / elapsed;
    let cpu_ms = (cpu1 - cpu0) * 1e3 / done.max(1) as f64;
    // Mean proof size for 2 MiB shards, from the proof format itself.
    let c: u16 = samples.parse().unwrap();
    let proof_bytes = (0..1000u32)
        .map(|i| {
            let mut nonce = [0u8; 32];
            nonce[..4].copy_from_slice(&i.to_le_bytes());
            cairn_proof::Challenge::new(cairn_proof::ShardId([7; 32]), 2 << 20, nonce, c)
                .unwrap()
                .proof_len()
        })
        .sum::<usize>() as f64
        / 1000.0;

    println!("\none validator, 6 miner processes, loopback, 2 MiB shards, one run");
    let rows = [
        (
            format!("challenges verified (c={samples}, {in_flight} in flight)"),
            format!("{rate:.0} /s over {elapsed:.1} s ({done} challenges, 0 failures)"),
        ),
        (
            "proof bytes received".into(),
            format!(
                "{:.0} MB/s (proofs of {:.0} kB on average)",
                rate * proof_bytes / 1e6,
                proof_bytes / 1e3
            ),
        ),
        (
            "validator CPU per challenge (send, receive, verify, score)".into(),
            format!(
                "{cpu_ms:.2} ms = about {:.0} challenges/s per validator core",
                1e3 / cpu_ms
            ),
        ),
        (
            "validator peak RSS".into(),
            format!("{:.1} MiB", hwm as f64 / 1024.0),
        ),
    ];
    for (what, value) in rows {
        println!("  {what:<60} {value}");
    }
}
