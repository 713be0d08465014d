//! Bandwidth caps across real processes: a miner's upload cap holds within
//! 10% over 20 s of reads that want more, and a validator's challenges of
//! that miner still pass meanwhile (answers are never held back).

use std::time::{Duration, Instant};

use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// The value of a labeled sample in a node's `/metrics`.
fn sample(api: &str, line_prefix: &str) -> f64 {
    let (status, body) = http(api, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn an_upload_cap_holds_and_challenges_still_pass_under_it() {
    let cap = 1u64 << 20;
    let net = CliDevnet::with(
        6,
        1,
        &[
            ("CAIRN_LIMITS_UPLOAD_RATE", "1MiB"),
            ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "10"),
            ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "2"),
            ("CAIRN_VALIDATOR_REPAIR", "false"),
        ],
    );
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(8 << 20, 5)).unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let gateway = net.path().join("gateway");
    let miner = net.node_id("miner-0").to_string();
    let o = cairn(&[
        "--data-dir",
        gateway.to_str().unwrap(),
        "shard",
        "ls",
        "--peer",
        &miner,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let shards: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert!(!shards.is_empty(), "miner-0 holds nothing");
    let api = net.member("miner-0").api.unwrap().to_string();
    let served = "cairn_transfer_bytes_total{direction=\"out\",kind=\"shard\"}";
    let passes = |r: &cairn_api::ValidatorReport| {
        r.miners
            .iter()
            .find(|m| m.node_id == miner)
            .map_or((0, 0), |m| (m.passes, m.failures + m.timeouts))
    };

    // Eight readers fetch miner-0's shards for 23 s (more than the cap); the first 3 s fill the
    // pipes and spend the bucket's burst, the next 20 are measured.
    let stop = Instant::now() + Duration::from_secs(23);
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let gateway = gateway.clone();
            let miner = miner.clone();
            let shards = shards.clone();
            std::thread::spawn(move || {
                let mut n = i;
                while Instant::now() < stop {
                    let o = cairn(&[
                        "--data-dir",
                        gateway.to_str().unwrap(),
                        "shard",
                        "get",
                        &shards[n % shards.len()],
                        "--peer",
                        &miner,
                        "-o",
                        "/dev/null",
                    ]);
                    assert!(o.status.success(), "{}", text(&o));
                    n += 1;
                }
            })
        })
        .collect();
    // The sleeps are the measurement's window, not a wait for an event.
    std::thread::sleep(Duration::from_secs(3));
    let (b0, t0, r0) = (sample(&api, served), Instant::now(), net.report());
    std::thread::sleep(Duration::from_secs(20));
    let (b1, t1, r1) = (sample(&api, served), Instant::now(), net.report());
    for r in readers {
        r.join().unwrap();
    }
    let rate = (b1 - b0) / (t1 - t0).as_secs_f64();
    println!(
        "upload cap {cap} B/s: served {rate:.0} B/s over {:.1} s ({:.3}x); challenges of miner-0 meanwhile: {} passed, {} failed",
        (t1 - t0).as_secs_f64(),
        rate / cap as f64,
        passes(&r1).0 - passes(&r0).0,
        passes(&r1).1 - passes(&r0).1
    );
    assert!(
        (rate / cap as f64 - 1.0).abs() <= 0.10,
        "served {rate:.0} B/s under a cap of {cap}"
    );
    assert!(passes(&r1).0 >= passes(&r0).0 + 5, "{r1:#?}");
    assert_eq!(
        passes(&r1).1,
        passes(&r0).1,
        "a challenge failed under the cap: {r1:#?}"
    );
}
