//! Ranged reads through the gateway: exact bytes at every boundary (group,
//! data shard, segment, file, the last short segment, an empty file), with
//! every holder up, with a holder serving corrupted bytes, and with two
//! holders killed; and a small range fetches only the groups that hold it.
//! The edge cache: a second read is served without the miners, its budget
//! holds, and bytes decoded around a bad holder never enter it. Read-ahead
//! serves sequential readers without fetching a byte twice.

use cairn_testkit::bytes;
use cairn_testkit::net::*;

const SEG: u64 = 1 << 20;
const K: u64 = 4;

/// Reads `[a, b)` of `file` through the gateway and checks it against `want`.
fn check(net: &CliDevnet, cid: &str, file: &str, want: &[u8], a: u64, b: u64) {
    let (status, body) = http_bytes(
        &net.api,
        &format!("/d/{cid}/{file}"),
        Some(&format!("bytes={a}-{}", b - 1)),
    );
    assert_eq!(
        status,
        206,
        "{file} {a}..{b}: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        body == want[a as usize..b as usize],
        "{file} {a}..{b}: {} bytes, not the file's",
        body.len()
    );
}

fn counter(net: &CliDevnet, name: &str) -> f64 {
    metric(&net.api, name).unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// Pins `files` (name, bytes) as one dataset of 1 MiB segments; its cid.
fn pin_files(net: &CliDevnet, files: &[(&str, &[u8])]) -> String {
    let data = net.dir.path().join("dataset");
    std::fs::create_dir_all(&data).unwrap();
    for (name, bytes) in files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    let pin = net.cli(&["pin", data.to_str().unwrap(), "--segment-size", "1MiB"]);
    assert!(pin.status.success(), "{}", text(&pin));
    stdout(&pin).trim().to_string()
}

/// `cairn status --json` of the dataset.
fn status(net: &CliDevnet, cid: &str) -> serde_json::Value {
    let o = net.cli(&["status", cid, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The devnet name (`miner-N`) of the holder of shard `i` of segment `seg`.
fn holder_of(net: &CliDevnet, status: &serde_json::Value, seg: usize, i: usize) -> String {
    let short = status["segments"][seg]["shards"][i][0].as_str().unwrap();
    (0..6)
        .map(|n| format!("miner-{n}"))
        .find(|n| net.node_id(n).fmt_short().to_string() == short)
        .expect("the holder is a devnet miner")
}

/// Rewrites every shard file of devnet node `name` with `damage` applied.
fn corrupt_every_shard(net: &CliDevnet, name: &str, damage: impl Fn(&mut [u8])) {
    for l1 in std::fs::read_dir(net.path().join(name).join("shards"))
        .unwrap()
        .flatten()
    {
        for l2 in std::fs::read_dir(l1.path()).unwrap().flatten() {
            for f in std::fs::read_dir(l2.path()).unwrap().flatten() {
                let mut bytes = std::fs::read(f.path()).unwrap();
                damage(&mut bytes);
                std::fs::write(f.path(), bytes).unwrap();
            }
        }
    }
}

#[test]
fn ranged_reads_are_exact_at_every_boundary_with_and_without_holders() {
    // No edge cache: every read goes to the miners.
    let net = CliDevnet::with(6, 0, &[("CAIRN_CACHE_MEMORY", "0")]);
    let data = net.dir.path().join("dataset");
    std::fs::create_dir_all(&data).unwrap();
    // Two full 1 MiB segments and a short one of 300,001 bytes (its shards
    // 75,001 bytes: the last group of each is short), then a small file and
    // an empty one.
    let a_len = 2 * SEG + 300_001;
    let a = bytes(a_len as usize, 7);
    let b = bytes(5_000, 8);
    std::fs::write(data.join("a.bin"), &a).unwrap();
    std::fs::write(data.join("b.txt"), &b).unwrap();
    std::fs::write(data.join("empty"), b"").unwrap();
    let pin = net.cli(&["pin", data.to_str().unwrap(), "--segment-size", "1MiB"]);
    assert!(pin.status.success(), "{}", text(&pin));
    let cid = stdout(&pin).trim().to_string();

    let shard = SEG / K; // 256 KiB, 16 groups
    let short = (a_len - 2 * SEG).div_ceil(K); // 75,001
    let g = 16 << 10;
    let ranges: Vec<(u64, u64)> = vec![
        (0, 1),
        (0, 4096),
        (g - 1, g + 1),                             // a group boundary
        (shard - 1, shard + 1),                     // a data shard boundary
        (shard - 100, 3 * shard + 100),             // across three data shards
        (SEG - 1, SEG + 1),                         // a segment boundary
        (SEG - 10, SEG + shard + 10),               // a segment and a shard
        (2 * SEG, 2 * SEG + 1),                     // the short segment's first byte
        (2 * SEG + short - 1, 2 * SEG + short + 1), // its shard boundary
        (2 * SEG + 3 * short, a_len),               // its last data shard (padded)
        (a_len - 1, a_len),                         // the file's last byte
        (123_457, 123_457 + 4096),
    ];
    let read_all = |phase: &str| {
        for &(x, y) in &ranges {
            check(&net, &cid, "a.bin", &a, x, y);
        }
        // a whole file spanning full segments and the short one
        let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/a.bin"), None);
        assert_eq!(status, 200, "{phase}");
        assert!(body == a, "{phase}: a.bin whole");
        // a small file in the stream's last segment, and its edges
        check(&net, &cid, "b.txt", &b, 0, 5_000);
        check(&net, &cid, "b.txt", &b, 4_999, 5_000);
        // the empty file: 200 with nothing; any range is unsatisfiable
        let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/empty"), None);
        assert_eq!((status, body.len()), (200, 0), "{phase}");
        let (status, _) = http_bytes(&net.api, &format!("/d/{cid}/empty"), Some("bytes=0-0"));
        assert_eq!(status, 416, "{phase}");
    };

    // All holders up: a 4 KiB read fetches one or two groups and the
    // outboard from one miner, nothing else.
    let received = counter(&net, "cairn_shard_bytes_received_total");
    let pieces = counter(&net, "cairn_range_pieces_total");
    check(&net, &cid, "a.bin", &a, 123_457, 123_457 + 4096);
    let fetched = counter(&net, "cairn_shard_bytes_received_total") - received;
    println!("a 4 KiB read fetched {fetched} shard bytes");
    assert!(
        fetched <= (64 << 10) as f64,
        "{fetched} bytes for a 4 KiB read"
    );
    assert!(fetched >= 4096.0, "{fetched}");
    assert_eq!(counter(&net, "cairn_range_pieces_total") - pieces, 1.0);
    read_all("all up");
    assert_eq!(counter(&net, "cairn_range_pieces_decoded_total"), 0.0);

    // The holder of segment 0's data shard 0 serves corrupted bytes: the
    // read notices, decodes around it, and returns the right bytes.
    let s = status(&net, &cid);
    let miner = holder_of(&net, &s, 0, 0);
    corrupt_every_shard(&net, &miner, |b| b[100] ^= 0xff); // group 0 of each
    check(&net, &cid, "a.bin", &a, 0, 4096);
    assert!(counter(&net, "cairn_range_pieces_decoded_total") >= 1.0);

    // Two miners gone (m = 2), the corrupting one among them: every range
    // still exact.
    let index: usize = miner["miner-".len()..].parse().unwrap();
    for i in [index, (index + 3) % 6] {
        net.devnet(&["stop-miner", &i.to_string()], &[]);
    }
    let decoded = counter(&net, "cairn_range_pieces_decoded_total");
    read_all("two miners down");
    assert!(
        counter(&net, "cairn_range_pieces_decoded_total") > decoded,
        "no piece was decoded around the stopped miners"
    );

    // Every miner comes back with an empty store (its disk replaced): each
    // holder answers that it does not store its shard, so the bytes are
    // gone, not late: 404 with the reason, not a 503 that invites retries.
    for i in 0..6 {
        if i != index && i != (index + 3) % 6 {
            net.devnet(&["stop-miner", &i.to_string()], &[]);
        }
        let dir = net.path().join(format!("miner-{i}"));
        for sub in ["shards", "db"] {
            std::fs::remove_dir_all(dir.join(sub)).unwrap();
        }
        net.devnet(&["start-miner", &i.to_string()], &[]);
    }
    for (x, y) in [(0, 4096), (SEG + 10, SEG + 20_000)] {
        // The gateway's connections to the old processes may need a try to
        // notice they are gone (that try is a 503: not answered at all).
        let mut tries = 0;
        let (status, body) = loop {
            tries += 1;
            let (status, body) = http_bytes(
                &net.api,
                &format!("/d/{cid}/a.bin"),
                Some(&format!("bytes={x}-{}", y - 1)),
            );
            if status != 503 || tries == 5 {
                break (status, body);
            }
        };
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 404, "bytes {x}..{y}: {body}");
        assert!(body.contains("no holder stores"), "{body}");
    }
}

#[test]
fn the_edge_cache_serves_second_reads_within_its_budget() {
    let budget = 8u64 << 20;
    let net = CliDevnet::with(6, 0, &[("CAIRN_CACHE_MEMORY", "8MiB")]);
    let a = bytes((12 * SEG) as usize, 9);
    let cid = pin_files(&net, &[("a.bin", &a)]);
    assert_eq!(counter(&net, "cairn_cache_budget_bytes"), budget as f64);

    // The holder of segment 2's data shard 1 serves corrupted bytes: a read
    // there decodes around it, and what it decoded is not cached: the same
    // read decodes again.
    let s = status(&net, &cid);
    let holder = s["segments"][2]["shards"][1][0]
        .as_str()
        .unwrap()
        .to_string();
    let miner = holder_of(&net, &s, 2, 1);
    corrupt_every_shard(&net, &miner, |b| {
        for x in b.iter_mut().take((SEG / K) as usize) {
            *x ^= 0x55;
        }
    });
    let at = 2 * SEG + SEG / K + 77_777;
    for round in 0..2 {
        let decoded = counter(&net, "cairn_range_pieces_decoded_total");
        let hits = counter(&net, "cairn_cache_hits_total");
        check(&net, &cid, "a.bin", &a, at, at + 4096);
        assert_eq!(
            counter(&net, "cairn_cache_hits_total"),
            hits,
            "round {round}"
        );
        assert_eq!(
            counter(&net, "cairn_range_pieces_decoded_total"),
            decoded + 1.0,
            "round {round}"
        );
    }

    // The same 4 KiB twice from a data shard the corrupting miner does not
    // hold: the second read costs the miners nothing.
    let (seg, shard) = (0..12u64)
        .flat_map(|s| (0..K).map(move |i| (s, i)))
        .find(|&(seg, i)| s["segments"][seg as usize]["shards"][i as usize][0] != holder.as_str())
        .unwrap();
    let at = seg * SEG + shard * (SEG / K) + 10_000;
    check(&net, &cid, "a.bin", &a, at, at + 4096);
    let (received, hits) = (
        counter(&net, "cairn_shard_bytes_received_total"),
        counter(&net, "cairn_cache_hits_total"),
    );
    check(&net, &cid, "a.bin", &a, at, at + 4096);
    assert_eq!(counter(&net, "cairn_shard_bytes_received_total"), received);
    assert_eq!(counter(&net, "cairn_cache_hits_total"), hits + 1.0);

    // A whole segment read twice: the second from the cache alone.
    check(&net, &cid, "a.bin", &a, SEG, 2 * SEG);
    let received = counter(&net, "cairn_shard_bytes_received_total");
    let misses = counter(&net, "cairn_cache_misses_total");
    check(&net, &cid, "a.bin", &a, SEG, 2 * SEG);
    assert_eq!(
        counter(&net, "cairn_shard_bytes_received_total"),
        received,
        "misses {misses} -> {}, cached {}",
        counter(&net, "cairn_cache_misses_total"),
        counter(&net, "cairn_cache_bytes")
    );

    // The whole 12 MiB file through an 8 MiB cache: exact, and the budget holds.
    for _ in 0..2 {
        let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/a.bin"), None);
        assert_eq!(status, 200);
        assert!(body == a);
        assert!(counter(&net, "cairn_cache_bytes") <= budget as f64);
    }
    assert!(counter(&net, "cairn_cache_evicted_bytes_total") > 0.0);
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn sequential_readers_are_read_ahead_and_the_disk_tier_serves_the_next_epoch() {
    let disk_budget = 16u64 << 20;
    let net = CliDevnet::with(
        6,
        0,
        &[
            ("CAIRN_CACHE_MEMORY", "1MiB"),
            ("CAIRN_CACHE_DISK", "16MiB"),
        ],
    );
    let a = bytes((12 * SEG) as usize, 21);
    let b = bytes((8 * SEG) as usize, 22);
    let cid = pin_files(&net, &[("a.bin", &a), ("b.bin", &b)]);
    assert_eq!(
        counter(&net, "cairn_cache_disk_budget_bytes"),
        disk_budget as f64
    );

    // Epoch 1 of b.bin (the dataset's last 8 segments), in 256 KiB steps:
    // after the first two steps the segments ahead of the reader are
    // fetched whole, so most steps find their bytes already here (without
    // read-ahead every step is a miss).
    let step = 256 << 10;
    let hits =
        || counter(&net, "cairn_cache_hits_total") + counter(&net, "cairn_cache_disk_hits_total");
    let before = hits();
    let received_before = counter(&net, "cairn_shard_bytes_received_total");
    for at in (0..b.len() as u64).step_by(step) {
        check(&net, &cid, "b.bin", &b, at, at + step as u64);
    }
    let steps = (b.len() / step) as f64;
    let ahead = counter(&net, "cairn_prefetch_segments_total");
    assert!(ahead >= 6.0, "{ahead} segments read ahead");
    assert_eq!(counter(&net, "cairn_prefetch_skipped_total"), 0.0);
    assert!(
        hits() - before >= steps * 0.75,
        "{} of {steps} steps found their bytes read ahead",
        hits() - before
    );
    // A step that misses fetches its groups from a miner besides the
    // segment's read-ahead (each about 3% of the file): the bytes fetched
    // stay near the file's own (whole shards, their outboards, the first
    // steps before the reader counts as sequential).
    let fetched = counter(&net, "cairn_shard_bytes_received_total") - received_before;
    assert!(
        fetched <= 1.3 * b.len() as f64,
        "{fetched} shard bytes fetched for a {}-byte file",
        b.len()
    );
    // The disk tier is written behind the reads: wait until all 8
    // segments' data shards (and outboards) are there.
    let shard_on_disk = (SEG / K + 15 * 64) as f64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while counter(&net, "cairn_cache_disk_bytes") < 8.0 * K as f64 * shard_on_disk {
        assert!(
            std::time::Instant::now() < deadline,
            "{} bytes in the disk tier",
            counter(&net, "cairn_cache_disk_bytes")
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // Epoch 2, the whole file: from the disk tier alone (the 1 MiB memory
    // tier cannot hold it).
    let received = counter(&net, "cairn_shard_bytes_received_total");
    let disk_hits = counter(&net, "cairn_cache_disk_hits_total");
    let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/b.bin"), None);
    assert_eq!(status, 200);
    assert!(body == b);
    assert_eq!(counter(&net, "cairn_shard_bytes_received_total"), received);
    assert!(counter(&net, "cairn_cache_disk_hits_total") >= disk_hits + 8.0 * K as f64 - 4.0);

    // Cached files damaged on disk are dropped, never served: the bytes
    // come from the miners again.
    let cache_dir = net.path().join("gateway").join("cache");
    let cached = files_under(&cache_dir);
    assert_eq!(cached.len() as u64, 8 * K, "shard files cached");
    for f in &cached {
        let mut bytes = std::fs::read(f).unwrap();
        bytes[1000] ^= 0xff;
        std::fs::write(f, bytes).unwrap();
    }
    let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/b.bin"), None);
    assert_eq!(status, 200);
    assert!(body == b);
    assert!(counter(&net, "cairn_cache_disk_dropped_total") >= 1.0);
    assert!(counter(&net, "cairn_shard_bytes_received_total") > received);

    // 20 MiB read through a 16 MiB disk tier: the budget holds on disk.
    for (name, want) in [("a.bin", &a), ("b.bin", &b)] {
        let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/{name}"), None);
        assert_eq!(status, 200);
        assert!(body == *want);
    }
    assert!(counter(&net, "cairn_cache_disk_evicted_bytes_total") > 0.0);
    assert!(counter(&net, "cairn_cache_disk_bytes") <= disk_budget as f64);
    let on_disk: u64 = files_under(&cache_dir)
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum();
    assert!(
        on_disk <= disk_budget,
        "{on_disk} bytes in {}",
        cache_dir.display()
    );
}

#[test]
fn read_ahead_is_bounded_for_the_whole_node() {
    // Read-ahead outlives the request that asked for it: many readers each
    // stepping once into a different segment must not start a fetch each.
    // Two miners are stopped, so a read-ahead of nearly any segment waits
    // out a hedge (1 s) and the readers' read-aheads overlap.
    let net = CliDevnet::up(6);
    let a = bytes((24 * SEG) as usize, 31);
    let cid = pin_files(&net, &[("a.bin", &a)]);
    for i in ["0", "3"] {
        net.devnet(&["stop-miner", i], &[]);
    }
    std::thread::scope(|s| {
        for j in 0..12u64 {
            let (net, cid, a) = (&net, &cid, &a);
            s.spawn(move || {
                let at = 2 * j * SEG + 1000;
                check(net, cid, "a.bin", a, at, at + 4096);
                check(net, cid, "a.bin", a, at + 4096, at + 8192);
            });
        }
    });
    let started = counter(&net, "cairn_prefetch_segments_total");
    let skipped = counter(&net, "cairn_prefetch_skipped_total");
    assert!(skipped > 0.0, "{started} read-aheads started, none skipped");
    assert!(
        started + skipped >= 12.0,
        "{started} started, {skipped} skipped"
    );
}

#[test]
fn a_reader_of_file_after_file_fetches_each_byte_once() {
    // `cairn get` reads a dataset file after file; each read continues the
    // last, so the segments after it are read ahead. Asked for when a long
    // read starts, they went into the cache ahead of that read's own
    // segments and were evicted by them before the next file's read came:
    // fetched twice. Asked for when the read reaches its last segment, they
    // are still there.
    let net = CliDevnet::with(6, 0, &[("CAIRN_CACHE_MEMORY", "8MiB")]);
    let files: Vec<(String, Vec<u8>)> = (0..4u8)
        .map(|i| {
            (
                format!("f{i}.bin"),
                bytes((8 * SEG) as usize, 40 + u64::from(i)),
            )
        })
        .collect();
    let named: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let cid = pin_files(&net, &named);
    let before = counter(&net, "cairn_shard_bytes_received_total");
    for (name, want) in &files {
        let (status, body) = http_bytes(&net.api, &format!("/d/{cid}/{name}"), None);
        assert_eq!(status, 200);
        assert!(body == *want, "{name}: not the file's bytes");
    }
    let received = counter(&net, "cairn_shard_bytes_received_total") - before;
    let data = (files.len() as u64 * 8 * SEG) as f64;
    let ahead = counter(&net, "cairn_prefetch_segments_total");
    assert!(ahead >= 4.0, "{ahead} segments read ahead");
    // Each data byte once, plus the shards' outboards (0.4%).
    assert!(
        received <= data * 1.02,
        "{received} shard bytes fetched for {data} bytes of files ({:.3}x)",
        received / data
    );
}

/// A manifest may name another dataset's shard id for bytes of its own
/// that decode from its own parity (the segment's hash is its own too): a
/// gateway that read that dataset and cached what it decoded under the id
/// would serve those bytes to every reader of the other dataset. Only
/// shards that hash to their id enter the cache, in either tier.
#[test]
fn a_manifest_naming_anothers_shard_id_cannot_fill_the_cache_under_it() {
    for disk in [false, true] {
        let env: &[(&str, &str)] = if disk {
            &[("CAIRN_CACHE_DISK", "64MiB")]
        } else {
            &[]
        };
        let net = CliDevnet::with(6, 0, env);
        let victim = bytes((2 * SEG) as usize, 41);
        let file = net.path().join("victim.bin");
        std::fs::write(&file, &victim).unwrap();
        let pin = net.cli(&["pin", file.to_str().unwrap(), "--segment-size", "1MiB"]);
        assert!(pin.status.success(), "{}", text(&pin));
        let cid = stdout(&pin).trim().to_string();

        let evil = net.identity("mallory", "client");
        let file = file.to_str().unwrap();
        let gateway = net.node_id("gateway").to_string();
        let r = adversary(
            &evil,
            &net.member("miner-0"),
            &["shadow-shard", file, &gateway],
        )
        .unwrap();
        assert_eq!(
            count(&r, "ok"),
            7,
            "5 shards, the manifest, the placement: {r}"
        );
        let shadow = r["cid"].as_str().unwrap();
        // Its owner hands out read grants, as for a public dataset; the
        // gateway's operator takes one and reads it.
        let add = net.cli(&["grant", "add", r["grant"].as_str().unwrap()]);
        assert!(add.status.success(), "{}", text(&add));
        // The gateway reads the shadow dataset; its shard 0 has no holder,
        // so the segment is decoded from the parity (and is the attacker's).
        let (status, body) = http_bytes(&net.api, &format!("/d/{shadow}"), None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let want: Vec<u8> = (0..SEG as usize)
            .map(|i| (i * 7 + i / 1000 + 13) as u8)
            .collect();
        assert!(
            body == want,
            "the shadow dataset reads back as its owner made it"
        );
        if disk {
            // Its three data shards that are what they claim are written
            // behind the read (a shard offered under another id would be
            // staged first, served until its write refused it, and logged).
            let three = 3.0 * (SEG / K + 15 * 64) as f64;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while counter(&net, "cairn_cache_disk_bytes") < three {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} bytes in the disk tier, {three} expected",
                    counter(&net, "cairn_cache_disk_bytes")
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let refused = net.log_lines("gateway", "not kept in the disk cache");
            assert!(refused.is_empty(), "staged under another id: {refused}");
        }

        // The victim's first shard, read in pieces: its own bytes, every time.
        for (a, b) in [(1000, 5000), (0, 16384), (200_000, 262_144)] {
            let (status, body) = http_bytes(
                &net.api,
                &format!("/d/{cid}"),
                Some(&format!("bytes={a}-{}", b - 1)),
            );
            assert_eq!(status, 206, "{}", String::from_utf8_lossy(&body));
            assert!(
                body == victim[a..b],
                "disk tier {disk}: bytes {a}..{b} of the victim's file came from the shadow dataset"
            );
        }
    }
}
