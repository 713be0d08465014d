//! Pinning and getting datasets through the CLI, against a devnet of real
//! processes: 6 miners, k = 4, m = 2.

use std::path::{Path, PathBuf};

use cairn_testkit::bytes;
use cairn_testkit::net::*;

fn write_dataset(root: &Path) -> u64 {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    let files: [(&str, usize); 6] = [
        ("a/b/c/deep.bin", 9_000_001),
        ("a/large.bin", 40 << 20),
        ("a/small.txt", 17),
        ("empty.txt", 0),
        ("z-last.bin", 20 << 20),
        ("m.bin", 3 << 20),
    ];
    let mut total = 0;
    for (i, (p, len)) in files.iter().enumerate() {
        std::fs::write(root.join(p), bytes(*len, 100 + i as u64)).unwrap();
        total += *len as u64;
    }
    total
}

/// `cairn get CID/train.bin`, which must succeed with the bytes `want`.
fn get_train_bin(net: &CliDevnet, cid: &str, want: &[u8]) {
    let out = net.dir.path().join("back.bin");
    let get = net.cli(&[
        "get",
        &format!("{cid}/train.bin"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert!(std::fs::read(&out).unwrap() == want, "the bytes differ");
}

fn same_tree(a: &Path, b: &Path) {
    let list = |r: &Path| -> Vec<(PathBuf, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut stack = vec![r.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(r).unwrap().to_path_buf();
                if p.is_dir() {
                    out.push((rel, None));
                    stack.push(p);
                } else {
                    out.push((rel, Some(std::fs::read(&p).unwrap())));
                }
            }
        }
        out.sort();
        out
    };
    let (la, lb) = (list(a), list(b));
    assert_eq!(la.len(), lb.len(), "different entries");
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.0, y.0);
        assert!(x.1 == y.1, "{} differs", x.0.display());
    }
}

#[test]
fn pin_kill_two_miners_get_status_unpin() {
    let net = CliDevnet::up(6);
    let data = net.dir.path().join("dataset");
    let total = write_dataset(&data);
    assert!(total >= 64 << 20);

    let pin = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(pin.status.success(), "{}", stderr(&pin));
    let cid = stdout(&pin).trim().to_string();
    assert!(cid.starts_with("cairn1"), "{cid}");
    // the same data again: the same CID
    let again = net.cli(&["pin", data.to_str().unwrap(), "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["cid"], cid.as_str());
    assert_eq!(
        (v["data_shards"].as_u64(), v["parity_shards"].as_u64()),
        (Some(4), Some(2))
    );
    let ls = net.cli(&["ls"]);
    assert!(stdout(&ls).contains(&cid));

    // every miner got a share
    let usage = net.miner_usage(6);
    assert!(
        usage.iter().all(|u| *u > 0),
        "unbalanced placement: {usage:?}"
    );

    // lose two miners for real
    for i in [1, 4] {
        let o = cairn(&["devnet", "stop-miner", &i.to_string(), "--dir", &net.net()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let out = net.dir.path().join("out");
    let get = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(get.status.success(), "{}", stderr(&get));
    same_tree(&data, &out);

    // one file, and a byte range of one file
    let one = net.dir.path().join("one.bin");
    let g = net.cli(&[
        "get",
        &format!("{cid}/a/b/c/deep.bin"),
        "-o",
        one.to_str().unwrap(),
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    assert_eq!(
        std::fs::read(&one).unwrap(),
        std::fs::read(data.join("a/b/c/deep.bin")).unwrap()
    );
    let part = net.dir.path().join("part.bin");
    let g = net.cli(&[
        "get",
        &format!("{cid}/a/large.bin"),
        "--range",
        "8388000-8389999",
        "-o",
        part.to_str().unwrap(),
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    assert_eq!(
        std::fs::read(&part).unwrap(),
        std::fs::read(data.join("a/large.bin")).unwrap()[8_388_000..8_390_000]
    );

    // status names the missing shards
    let st = net.cli(&["status", &cid, "--json"]);
    assert!(st.status.success(), "{}", stderr(&st));
    let s: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(s["lost"], 0);
    assert!(s["degraded"].as_u64().unwrap() > 0, "{s}");
    let unreachable = s["miners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reachable"] == false)
        .count();
    assert_eq!(unreachable, 2);
    let human = net.cli(&["status", &cid]);
    assert!(stdout(&human).contains("MISSING"), "{}", stdout(&human));

    // the miners come back; unpin frees the space on every one
    for i in [1, 4] {
        let o = cairn(&["devnet", "start-miner", &i.to_string(), "--dir", &net.net()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let un = net.cli(&["unpin", &cid]);
    assert!(un.status.success(), "{}", stderr(&un));
    assert_eq!(net.miner_usage(6), vec![0; 6]);
    let un = net.cli(&["unpin", &cid]);
    assert!(un.status.success(), "unpin is idempotent: {}", stderr(&un));
    let get = net.cli(&[
        "get",
        &cid,
        "-o",
        net.dir.path().join("gone").to_str().unwrap(),
    ]);
    assert!(!get.status.success());
    assert!(stderr(&get).contains("unknown CID"), "{}", stderr(&get));
}

#[test]
fn bad_input_is_refused_clearly_and_nothing_is_half_written() {
    let net = CliDevnet::up(6);
    let d = net.dir.path();

    // a path that does not exist
    let o = net.cli(&["pin", d.join("nope").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("nope") && stderr(&o).contains("check the path"),
        "{}",
        stderr(&o)
    );

    // an unreadable file (root reads everything: make it a dangling special case instead)
    let ds = d.join("ds");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(ds.join("ok.bin"), bytes(1000, 1)).unwrap();
    let locked = ds.join("locked.bin");
    std::fs::write(&locked, b"secret").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_err() {
        let o = net.cli(&["pin", ds.to_str().unwrap()]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("locked.bin") && stderr(&o).contains("permission"),
            "{}",
            stderr(&o)
        );
    } else {
        eprintln!(
            "running as root: every file is readable; the unreadable-file case cannot be made here"
        );
    }
    std::fs::remove_file(&locked).unwrap();

    // malformed and unknown CIDs
    for bad in ["Qmfoo", "cairn1xyz"] {
        let o = net.cli(&["get", bad]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("malformed CID"), "{}", stderr(&o));
    }
    let unknown = format!("cairn1{}", "a".repeat(52));
    let o = net.cli(&["get", &unknown]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown CID"), "{}", stderr(&o));

    // an output directory that exists
    let pin = net.cli(&["pin", ds.to_str().unwrap()]);
    assert!(pin.status.success(), "{}", stderr(&pin));
    let cid = stdout(&pin).trim().to_string();
    let existing = d.join("exists");
    std::fs::create_dir_all(&existing).unwrap();
    let o = net.cli(&["get", &cid, "-o", existing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_dir(&existing).unwrap().count(),
        0,
        "nothing written into it"
    );

    // more shards than registered miners: say what to do
    let o = net.cli(&[
        "pin",
        ds.to_str().unwrap(),
        "--data-shards",
        "6",
        "--parity-shards",
        "2",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("6 miners are registered") && stderr(&o).contains("--data-shards"),
        "{}",
        stderr(&o)
    );

    // fewer than k miners alive at get time
    for i in 0..3 {
        assert!(
            cairn(&["devnet", "stop-miner", &i.to_string(), "--dir", &net.net()])
                .status
                .success()
        );
    }
    let out = d.join("partial");
    let o = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("shards could be fetched") || stderr(&o).contains("broke off"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "a failed get left {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("cairn-partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary output left behind");

    // fewer than k + m miners alive at pin time: names those that did not answer
    let o = net.cli(&["pin", ds.to_str().unwrap(), "--name", "again"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no answer from"), "{}", stderr(&o));
}

/// Another node reads a dataset only with its owner's grant: `cairn get` on
/// a miner's node is refused (naming what to do) until the gateway, which
/// pinned it, signs a grant with `cairn grant new` and the miner keeps it
/// with `cairn grant add`; then every byte comes back.
#[test]
fn another_node_reads_a_dataset_with_the_owners_grant() {
    let net = CliDevnet::up(6);
    let data = net.dir.path().join("dataset");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x.bin"), bytes(5 << 20, 77)).unwrap();
    std::fs::write(data.join("y.txt"), b"hello").unwrap();
    let pin = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(pin.status.success(), "{}", stderr(&pin));
    let cid = stdout(&pin).trim().to_string();

    // The reader: miner-0's own daemon, through its own API.
    let reader = net.member("miner-0");
    let api = reader.api.expect("miner API").to_string();
    let token = net.path().join("miner-0").join("api.token");
    let token = token.to_string_lossy().into_owned();
    let on_reader = |args: &[&str]| {
        let mut a = vec!["--api", api.as_str(), "--api-token-file", token.as_str()];
        a.extend_from_slice(args);
        cairn(&a)
    };
    let out = net.dir.path().join("out");
    let o = on_reader(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success(), "read without a grant: {}", text(&o));
    assert!(stderr(&o).contains("grant"), "{}", stderr(&o));

    let reader_id = reader.node_id.to_string();
    let g = net.cli(&["grant", "new", &reader_id, "--ttl", "2h"]);
    assert!(g.status.success(), "{}", text(&g));
    let grant = stdout(&g).trim().to_string();
    assert!(grant.starts_with("cairngrant1"), "{grant}");
    // a grant is useless to any other node, and refused by it when offered
    let wrong = net.cli(&["grant", "add", &grant]);
    assert!(!wrong.status.success());
    assert!(
        stderr(&wrong).contains("made out to node"),
        "{}",
        stderr(&wrong)
    );
    let bad_ttl = net.cli(&["grant", "new", &reader_id, "--ttl", "90d"]);
    assert!(!bad_ttl.status.success());
    assert!(stderr(&bad_ttl).contains("30 days"), "{}", stderr(&bad_ttl));

    let a = on_reader(&["grant", "add", &grant]);
    assert!(a.status.success(), "{}", text(&a));
    let o = on_reader(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    same_tree(&data, &out);
}

/// A miner that goes silent in the middle of a pin (SIGSTOP: its
/// connection stays open, nothing is acknowledged) costs the pin its idle
/// timeout, not the pin: the shards it held up go to other miners, and the
/// bytes the QUIC stack keeps for it hold back no segment of the pipeline.
#[test]
fn a_miner_silent_mid_pin_does_not_stall_it() {
    let net = CliDevnet::up(7);
    let data = net.dir.path().join("big");
    std::fs::create_dir_all(&data).unwrap();
    let want = bytes(256 << 20, 77);
    std::fs::write(data.join("train.bin"), &want).unwrap();
    let silent = net.pid("miner-3");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = done_tx.send(net.cli(&["pin", data.to_str().unwrap()]));
        });
        // The event: the miner has a shard of this pin on disk.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while net.miner_usage(7)[3] == 0 {
            assert!(std::time::Instant::now() < deadline, "miner-3 got no shard");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let stop = std::process::Command::new("kill")
            .args(["-STOP", &silent.to_string()])
            .status()
            .unwrap();
        assert!(stop.success());
        let pin = done_rx
            .recv_timeout(std::time::Duration::from_secs(180))
            .expect("the pin stalled behind a silent miner");
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &silent.to_string()])
            .status();
        assert!(pin.status.success(), "{}", stderr(&pin));
        // It was mid-pin: the gateway gave up on that miner and went on.
        let failed = net.log_lines("gateway", "upload failed; trying the next miner");
        assert!(!failed.is_empty(), "the pin never met the silent miner");
        let cid = stdout(&pin).trim().to_string();
        get_train_bin(&net, &cid, &want);
    });
}

/// A miner that misses the pin's first probe (a handshake over a lossy home
/// link can take longer) gets a second, longer look before the pin gives up
/// on it: here it is stopped until the gateway has logged the miss, and the
/// pin, which needs every one of the six, still lands.
#[test]
fn a_miner_late_to_the_first_probe_is_asked_again() {
    let net = CliDevnet::up(6);
    let data = net.dir.path().join("small");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(300_000, 4)).unwrap();
    let late = net.pid("miner-2").to_string();
    let signal = |sig: &str| {
        let s = std::process::Command::new("kill")
            .args([sig, &late])
            .status()
            .unwrap();
        assert!(s.success(), "kill {sig} {late}");
    };
    signal("-STOP");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = done_tx.send(net.cli(&["pin", data.to_str().unwrap()]));
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while net
            .log_lines("gateway", "missed the pin's probe; asking them once more")
            .is_empty()
        {
            if std::time::Instant::now() >= deadline {
                signal("-CONT");
                panic!("the gateway never asked the stopped miner again");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        signal("-CONT");
        let pin = done_rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the pin did not finish");
        assert!(pin.status.success(), "{}", stderr(&pin));
        assert!(
            net.miner_usage(6)[2] > 0,
            "the late miner holds no shard of the pin"
        );
    });
}

/// A pin that finds fewer than k + m miners says which were asked and did
/// not answer, and which are registered but have published no address
/// yet (never asked), instead of calling them all unreachable.
#[test]
fn a_pin_short_of_miners_names_the_silent_and_the_unpublished() {
    let net = CliDevnet::up(6);
    net.identity("miner-spare", "miner");
    let spare = net.node_id("miner-spare").fmt_short().to_string();
    let o = cairn(&["devnet", "stop-miner", "2", "--dir", &net.net()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stopped = net.node_id("miner-2").fmt_short().to_string();
    let data = net.dir.path().join("small");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(1000, 3)).unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("only 5 of 7 registered miners answered"), "{e}");
    // With why (its port is closed: the dial's own error).
    assert!(
        e.contains(&format!("no answer from {stopped} (peer {stopped}: ")),
        "{e}"
    );
    assert!(
        e.contains(&format!("no address published by {spare}")),
        "{e}"
    );
}

/// A holder that is slow but answering (a home miner whose upload is
/// capped) and loses a read's race to the other shards is tried last for a
/// while, but keeps its connection: that connection carries its other
/// transfers, and a fresh one would start in slow start. Before, every lost
/// race closed it.
#[test]
fn a_slow_holder_that_loses_a_race_keeps_its_connection() {
    let net = CliDevnet::up(6);
    // miner-0 serves at 256 KiB/s: a 2 MiB shard takes it 8 s, and the
    // gateway's read asks another after 1 s and decodes around it. (The cap
    // is on what it sends: the pin, which it receives, is not slowed.)
    net.devnet(&["stop-miner", "0"], &[]);
    net.devnet(
        &["start-miner", "0"],
        &[("CAIRN_LIMITS_UPLOAD_RATE", "256KiB")],
    );
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Six segments: miner-0 holds a data shard of at least one of them
    // (each segment's placement is its own; all parity: 1 in 729).
    let want = bytes(48 << 20, 31);
    std::fs::write(data.join("train.bin"), &want).unwrap();
    let pin = net.cli(&["pin", data.to_str().unwrap()]);
    assert!(pin.status.success(), "{}", stderr(&pin));
    let cid = stdout(&pin).trim().to_string();
    let slow = net.node_id("miner-0").to_string();
    // The gateway's dials of miner-0 (its connection from the pin is open).
    let dials = || {
        let peers = cairn_api::ApiClient::new(net.api.parse().unwrap())
            .info()
            .unwrap()
            .network
            .expect("the gateway's network facts")
            .peers;
        peers
            .iter()
            .find(|p| p.node_id == slow)
            .map(|p| p.dials)
            .unwrap_or_else(|| panic!("no connection to the slow holder: {peers:#?}"))
    };
    let before = dials();
    get_train_bin(&net, &cid, &want);
    let served = |name: &str| {
        let api = net.member(name).api.unwrap().to_string();
        metric(
            &api,
            "cairn_transfer_bytes_total{direction=\"out\",kind=\"shard\"}",
        )
        .unwrap_or(0.0)
    };
    // It was asked and sent part of a shard, not all of it: it lost a race.
    let sent = served("miner-0");
    assert!(
        sent > 0.0 && sent < (2 << 20) as f64,
        "miner-0 served {sent} shard bytes: never asked, or never slow (all miners: {:?})",
        (0..6)
            .map(|i| served(&format!("miner-{i}")))
            .collect::<Vec<_>>()
    );
    // Still connected, on the connection it had: not closed and dialed
    // again by a later segment.
    assert_eq!(dials(), before, "the gateway dialed the slow holder again");
}

/// A dataset of many small files comes back in one request, its packed
/// stream cut at the manifest's offsets, not one request per file (10,000
/// files of 1-20 KiB took 6-12 s that way): 3,000 files of 0-8 KiB, one in
/// fifty empty, one executable, in nested directories beside an empty one.
/// The stream answers `Range` and `HEAD` as a file does.
#[test]
fn many_small_files_come_back_in_one_request() {
    use std::os::unix::fs::PermissionsExt;
    let net = CliDevnet::up(6);
    let root = net.dir.path().join("many");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    for i in 0..3000u64 {
        let p = root.join(format!("d{}/e{}/f{i:04}.bin", i % 7, i % 3));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = if i % 50 == 0 {
            0
        } else {
            (i as usize * 37) % 8192
        };
        std::fs::write(&p, bytes(len, i)).unwrap();
    }
    let tool = root.join("d1/e1/f0001.bin");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pin = net.cli(&["pin", root.to_str().unwrap(), "--json"]);
    assert!(pin.status.success(), "{}", stderr(&pin));
    let v: serde_json::Value = serde_json::from_slice(&pin.stdout).unwrap();
    let cid = v["cid"].as_str().unwrap().to_string();
    let calls = |route: &str| {
        metric(
            &net.api,
            &format!("cairn_http_requests_total{{route=\"{route}\",status=\"2xx\"}}"),
        )
        .unwrap_or(0.0)
    };
    let (reads, datasets) = (calls("read"), calls("datasets"));
    let out = net.dir.path().join("back");
    let get = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(get.status.success(), "{}", stderr(&get));
    same_tree(&root, &out);
    let mode = std::fs::metadata(out.join("d1/e1/f0001.bin"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the executable bit was lost");
    assert_eq!(
        (calls("read") - reads, calls("datasets") - datasets),
        (1.0, 2.0),
        "the listing, the manifest and the packed stream: one request each (not one per file)"
    );
    // A range of the stream is the bytes of the file at that offset; HEAD
    // gives the dataset's length.
    let path = format!("/api/datasets/{cid}");
    let (status, body) = HttpReader::new().get(&net.api, &path, None);
    assert_eq!(status, 200);
    let view: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let entry = view["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["size"].as_u64().unwrap() >= 100)
        .unwrap();
    let at = entry["offset"].as_u64().unwrap();
    let range = format!("bytes={}-{}", at + 10, at + 99);
    let (status, body) = HttpReader::new().get(&net.api, &format!("{path}/bytes"), Some(&range));
    assert_eq!(status, 206);
    let file = std::fs::read(root.join(entry["path"].as_str().unwrap())).unwrap();
    assert!(body == file[10..100], "the range is not the file's bytes");
    assert_eq!(
        HttpReader::new().head(&net.api, &format!("{path}/bytes")),
        (200, view["bytes"].as_u64())
    );
}
