//! Trust boundaries, attacked across the real boundary: a registered but
//! hostile member (the `adversary` example, a process of its own with its
//! own identity) against miner and validator processes over QUIC. Each test
//! fails on a node without the defence it names (docs/THREATS.md).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_testkit::bench::{reset_peak_rss_kib, rss_kib};
use cairn_testkit::bytes;
use cairn_testkit::net::*;

fn pin(net: &CliDevnet, name: &str, len: usize, seed: u64) -> (String, std::path::PathBuf) {
    let data = net.dir.path().join(name);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("part.bin"), bytes(len, seed)).unwrap();
    let o = net.cli(&[
        "pin",
        data.to_str().unwrap(),
        "--segment-size",
        "1MiB",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (v["cid"].as_str().unwrap().to_string(), data)
}

/// `cairn get` of `cid` gives back `data`'s `part.bin` (as [`pin`] made it).
fn assert_gets_back(net: &CliDevnet, cid: &str, data: &std::path::Path) {
    let out = net.dir.path().join("out");
    let o = net.cli(&["get", cid, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.join("part.bin")).unwrap(),
        std::fs::read(data.join("part.bin")).unwrap()
    );
}

/// A member that does not own a dataset cannot replace its manifest copy,
/// delete it, or publish a placement of it (naming itself or the owner, at
/// version u64::MAX): the owner's placement survives on every holder and
/// `get` returns every byte.
#[test]
fn a_member_cannot_take_over_another_members_dataset() {
    let net = CliDevnet::up(6);
    let (cid, data) = pin(&net, "data", 5 << 20, 3);
    let evil = net.identity("mallory", "client");
    let owner = net.node_id("gateway").to_string();
    let miners: Vec<_> = (0..6).map(|i| net.member(&format!("miner-{i}"))).collect();
    let mut holders = Vec::new();
    for m in &miners {
        if let Ok(r) = adversary(&evil, m, &["placement", &cid])
            && count(&r, "ok") == 1
        {
            assert_eq!(r["owner"], owner.as_str(), "{r}");
            holders.push((m, r["version"].as_u64().unwrap()));
        }
    }
    assert!(
        holders.len() >= 3,
        "m + 1 = 3 copies of the placement: {holders:?}"
    );
    for (m, _) in &holders {
        for attack in [
            vec!["put-manifest", cid.as_str()],
            vec![
                "put-placement",
                cid.as_str(),
                "18446744073709551615",
                "self",
            ],
            vec![
                "put-placement",
                cid.as_str(),
                "18446744073709551615",
                "owner",
            ],
            vec!["delete-manifest", cid.as_str()],
        ] {
            let r = adversary(&evil, m, &attack).unwrap();
            assert_eq!(
                count(&r, "forbidden"),
                1,
                "{attack:?} on {}: {r}",
                m.node_id
            );
        }
    }
    for (m, version) in &holders {
        let r = adversary(&evil, m, &["placement", &cid]).unwrap();
        assert_eq!(
            count(&r, "ok"),
            1,
            "the placement is gone from {}: {r}",
            m.node_id
        );
        assert_eq!(r["version"].as_u64(), Some(*version), "{r}");
        assert_eq!(r["signer"], owner.as_str(), "{r}");
    }
    assert_gets_back(&net, &cid, &data);
}

/// A member cannot become an owner of a shard by claiming it: a put of the
/// shard's id with no bytes is refused, and the member still may not read
/// the shard (a claim alone would let a miner that threw its shards away
/// rebuild them at challenge time from the other holders). The true owner
/// still reads every byte.
#[test]
fn a_member_cannot_claim_a_shard_it_does_not_have() {
    let net = CliDevnet::up(6);
    let (cid, data) = pin(&net, "data", 3 << 20, 5);
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let (_, shards) = shard_files(&net.path().join("miner-0"));
    let shard = shards.first().expect("miner-0 holds a shard");
    let r = adversary(&evil, &miner, &["claim-shard", shard]).unwrap();
    assert_ne!(r["claim"], "ok", "a claim with no bytes was taken: {r}");
    assert_eq!(r["read"], "forbidden", "the claimant read the shard: {r}");
    assert_gets_back(&net, &cid, &data);
}

/// Placements sent for another's dataset cost the miner no read of that
/// dataset's manifest (up to 64 MiB, read whole and copied twice to learn
/// its owner before the refusal): its owner is kept apart, 32 bytes. A
/// flood of them leaves the miner's memory where it was, and one is
/// refused before its body is received (sent slowly, it would be held
/// until cut).
#[test]
fn placements_for_anothers_dataset_cost_no_manifest_read() {
    let net = CliDevnet::up(1);
    let owner = net.identity("owner", "client");
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let r = adversary(&owner, &miner, &["big-manifest", "48"]).unwrap();
    assert_eq!(
        count(&r, "ok"),
        1,
        "the owner's manifest was not stored: {r}"
    );
    let cid = r["cid"].as_str().unwrap().to_string();
    let pid = net.pid("miner-0");
    let before = reset_peak_rss_kib(pid);
    let r = adversary(&evil, &miner, &["placement-flood", &cid, "32"]).unwrap();
    let (_, peak) = rss_kib(pid);
    println!("placement flood: {r}; miner RSS {before} KiB, peak after {peak} KiB");
    assert_eq!(count(&r, "forbidden"), 32, "{r}");
    assert!(
        peak.saturating_sub(before) < 16 << 10,
        "32 placements for a 48 MiB manifest took the miner from {before} to {peak} KiB"
    );
    let r = adversary(&evil, &miner, &["slow-placement", &cid, "16", "5"]).unwrap();
    println!("slow placement: {r}");
    assert_eq!(count(&r, "forbidden"), 1, "{r}");
}

/// Record bodies are read whole before they are checked (a manifest's
/// owner is inside it), so the bytes of those being received at once are
/// bounded (96 MiB), not only their number: four 60 MiB manifests sent at
/// once by one member are taken one at a time, not all four into memory.
#[test]
fn manifests_sent_at_once_are_received_within_a_byte_budget() {
    let net = CliDevnet::up(1);
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let pid = net.pid("miner-0");
    let before = reset_peak_rss_kib(pid);
    let r = adversary(&evil, &miner, &["manifest-bodies", "4", "60"]).unwrap();
    let (_, peak) = rss_kib(pid);
    println!("manifest bodies: {r}; miner RSS {before} KiB, peak after {peak} KiB");
    assert_eq!(count(&r, "hash-mismatch"), 4, "{r}");
    assert!(
        peak.saturating_sub(before) < 128 << 10,
        "four 60 MiB manifests took the miner from {before} to {peak} KiB"
    );
}

/// Polls `metric` of the node whose API is `api` until `done` holds of it
/// (the node's own count is the event; bounded).
fn until_metric(api: &str, metric_name: &str, done: impl Fn(f64) -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let v = metric(api, metric_name).unwrap_or(-1.0);
        if done(v) {
            return;
        }
        assert!(Instant::now() < end, "{metric_name} stayed at {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A record that fits in the budget of bodies being received is never held
/// behind a bigger one waiting for room: one member holds 60 MiB of the 96
/// by sending a manifest slowly, a second asks for 60 MiB more and waits,
/// and a third's manifest of 1 MiB is stored while the second still waits
/// (behind it in a queue, it would wait for the second to give up, 30 s).
/// And a member over its quota is refused before its manifest's or
/// placement's body is received, not after holding it.
#[test]
fn a_small_record_is_not_held_behind_a_big_one_waiting_for_room() {
    let net = CliDevnet::with(1, 0, &[("CAIRN_LIMITS_QUOTA_PER_PEER", "90MiB")]);
    let (slow, big, honest) = (
        net.identity("mallory", "client"),
        net.identity("eve", "client"),
        net.identity("carol", "client"),
    );
    let miner = net.member("miner-0");
    let api = miner.api.expect("the miner publishes its API").to_string();
    std::thread::scope(|s| {
        let holder = s.spawn(|| adversary(&slow, &miner, &["slow-manifest", "60", "40"]).unwrap());
        until_metric(&api, "cairn_record_bodies_receiving_bytes", |v| {
            v >= f64::from(60u32 << 20)
        });
        let waiter = s.spawn(|| adversary(&big, &miner, &["manifest-bodies", "1", "60"]).unwrap());
        until_metric(&api, "cairn_record_bodies_waiting", |v| v == 1.0);
        let r = adversary(&honest, &miner, &["big-manifest", "1"]).unwrap();
        let still_waiting = metric(&api, "cairn_record_bodies_waiting");
        println!("1 MiB manifest: {r}; bodies still waiting then: {still_waiting:?}");
        assert_eq!(count(&r, "ok"), 1, "{r}");
        assert_eq!(
            still_waiting,
            Some(1.0),
            "the 1 MiB manifest was stored only after the 60 MiB one stopped waiting"
        );
        // The budget still bounds the whole: the 60 MiB body never got in.
        let r = waiter.join().unwrap();
        println!("60 MiB manifest waiting: {r}");
        assert_eq!(count(&r, "busy"), 1, "{r}");
        println!("slow manifest: {}", holder.join().unwrap());
    });
    // Carol stores 61 MiB of her 90: a 60 MiB manifest more, or a 32 MiB
    // placement of her dataset, is refused before its body (sent slowly, it
    // would be held and then cut).
    let r = adversary(&honest, &miner, &["big-manifest", "60"]).unwrap();
    assert_eq!(count(&r, "ok"), 1, "{r}");
    let cid = r["cid"].as_str().unwrap().to_string();
    let manifest = adversary(&honest, &miner, &["slow-manifest", "60", "5"]).unwrap();
    let placement = adversary(&honest, &miner, &["slow-placement", &cid, "32", "5"]).unwrap();
    println!("over quota: manifest {manifest}, placement {placement}");
    for r in [manifest, placement] {
        assert_eq!(count(&r, "quota-exceeded"), 1, "{r}");
    }
}

/// One host cannot fill a node with connections by making identities (each
/// connection may hold a receive window of unread bytes): an address holds
/// at most 32 open at once, the rest are refused before their handshake,
/// and the places come back when the host closes them.
#[test]
fn one_host_cannot_fill_a_node_with_connections() {
    let net = CliDevnet::up(1);
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let r = adversary(&evil, &miner, &["hold-connections", "48"]).unwrap();
    println!("held connections: {r}");
    let refused = count(&r, "unreachable");
    // The devnet's own nodes connect from the same address.
    assert!((16..=20).contains(&refused), "{refused} of 48 refused: {r}");
    // Closed, they are places again: new identities are answered.
    let r = adversary(&evil, &miner, &["fresh-identities", "3"]).unwrap();
    assert_eq!(count(&r, "unreachable"), 0, "{r}");
}

/// A peer cannot park bytes or tasks on a node: it may open no stream of
/// the kind cairn never reads (the QUIC stack would hold a window of
/// unread bytes on each), and a request announced but never finished is
/// refused once a body's idle allowance (10 s) has passed, not held open.
#[test]
fn a_peer_cannot_park_streams_on_a_node() {
    let net = CliDevnet::up(1);
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let r = adversary(&evil, &miner, &["uni-streams", "3"]).unwrap();
    assert_eq!(
        count(&r, "held"),
        3,
        "a stream cairn never reads took bytes: {r}"
    );
    let r = adversary(&evil, &miner, &["stall-requests", "8", "40"]).unwrap();
    assert_eq!(
        count(&r, "malformed-frame"),
        8,
        "a stalled request was held: {r}"
    );
}

/// A reader that stops taking a shard's bytes loses the stream once a
/// body's idle allowance (10 s) has passed: the get slot and the bytes in
/// flight are freed, not held for as long as it keeps the connection. (The
/// shard, 24 MiB, is more than the QUIC stack buffers for a connection.)
#[test]
fn a_shard_reader_that_stops_reading_is_let_go() {
    let net = CliDevnet::up(1);
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let r = adversary(&evil, &miner, &["stall-reads", "4", "15"]).unwrap();
    assert_eq!(count(&r, "reset"), 4, "a reader that stopped was held: {r}");
}

/// A manifest whose parameters would make a reader allocate 64 GiB is
/// refused by the miner it is sent to, with a clear error, and a reader
/// asking for it gets an error, not an allocation.
#[test]
fn a_hostile_manifest_is_refused_before_anything_is_allocated() {
    let net = CliDevnet::up(4);
    let evil = net.identity("mallory", "client");
    let miner = net.member("miner-0");
    let r = adversary(&evil, &miner, &["hostile-manifest"]).unwrap();
    assert_eq!(count(&r, "bad-request"), 1, "{r}");
    let cid = r["cid"].as_str().unwrap();
    let out = net.dir.path().join("out");
    let o = net.cli(&["get", cid, "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown CID"), "{}", stderr(&o));
    let (_, peak_kib) = rss_kib(net.pid("gateway"));
    assert!(peak_kib < 200 << 10, "gateway peak RSS {peak_kib} KiB");
    let (_, peak_kib) = rss_kib(net.pid("miner-0"));
    assert!(peak_kib < 200 << 10, "miner peak RSS {peak_kib} KiB");
}

/// Only a dataset's owner may ask a validator to audit it or to stop; a
/// flood of audit requests is bounded per peer; `cairn unpin` reaches the
/// validator, which stops auditing at once, so no holder is penalised for
/// shards its owner deleted.
#[test]
fn audits_and_releases_come_from_owners_and_unpin_penalises_no_holder() {
    let env = [
        ("CAIRN_VALIDATOR_SAMPLES", "8"),
        ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "40"),
        ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "8"),
        ("CAIRN_VALIDATOR_DEADLINE_SECS", "3"),
        ("CAIRN_VALIDATOR_REPAIR", "false"),
    ];
    let net = CliDevnet::with(6, 1, &env);
    let (a, _) = pin(&net, "a", 3 << 20, 11);
    let (b, _) = pin(&net, "b", 3 << 20, 12);
    net.wait_report("both datasets audited", Duration::from_secs(120), |r| {
        r.datasets == 2 && r.challenges >= 30
    });
    let evil = net.identity("mallory", "client");
    let validator = net.member("validator-0");
    for attack in [vec!["audit", b.as_str(), "1"], vec!["release", b.as_str()]] {
        let r = adversary(&evil, &validator, &attack).unwrap();
        assert_eq!(count(&r, "forbidden"), 1, "{attack:?}: {r}");
    }
    assert_eq!(
        net.report().datasets,
        2,
        "a non-owner's release took effect"
    );
    let unknown = format!("cairn1{}", "a".repeat(52));
    let r = adversary(&evil, &validator, &["audit", &unknown, "60"]).unwrap();
    assert!(count(&r, "ok") <= 21, "{r}");
    assert!(count(&r, "busy") >= 39, "{r}");

    let o = net.cli(&["unpin", &a]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o).contains("1 validators stopped auditing"),
        "{}",
        stderr(&o)
    );
    let r = net.report();
    assert_eq!(r.datasets, 1, "{r:#?}");
    let after = r.challenges;
    let r = net.wait_report("80 more challenges", Duration::from_secs(120), |r| {
        r.challenges >= after + 80
    });
    for m in &r.miners {
        assert_eq!(
            (m.failures, m.timeouts),
            (0, 0),
            "a holder was penalised after the owner unpinned: {m:?}"
        );
    }
}

/// One member stalls 64 manifests that announce 32 MiB each and trickles
/// 8 shard puts a byte a second: the miner's memory stays small, stalled
/// bodies are refused within the idle timeout and trickling ones when they
/// fall behind the minimum rate (measured over the time they took, not
/// their announced length), freeing their slots, and another member's puts
/// go through all along.
#[test]
fn stalled_and_trickling_bodies_neither_exhaust_memory_nor_starve_others() {
    let net = TestNet::new();
    let miner = net.init("miner", "miner", &[]);
    let d = Daemon::start(&miner, &[]);
    let evil = net.init("mallory", "client", &[]);
    let honest = net.init("honest", "client", &[]);
    let member = futures_lite_block(d.member());
    let attack = |args: &[&str]| {
        let addr = member.addrs[0].to_string();
        Command::new(adversary_bin())
            .args(["--data-dir", evil.path.to_str().unwrap()])
            .args(["--peer", &member.node_id.to_string(), "--addr", &addr])
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut stall = attack(&["stall-manifests", "64", &(32u64 << 20).to_string(), "45"]);
    let mut trickle = attack(&["trickle-puts", "8", &(64u64 << 10).to_string(), "60"]);
    // Honest puts while the attack lasts, every one of them through.
    let file = net.dir.path().join("honest.bin");
    let mut puts = 0;
    let started = Instant::now();
    while stall.try_wait().unwrap().is_none() || trickle.try_wait().unwrap().is_none() {
        std::fs::write(&file, bytes(300_000, puts)).unwrap();
        let o = cairn(&[
            "shard",
            "put",
            file.to_str().unwrap(),
            "--peer",
            &member.node_id.to_string(),
            "--data-dir",
            honest.path.to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "an honest put failed {:?} into the attack: {}",
            started.elapsed(),
            text(&o)
        );
        puts += 1;
    }
    let report = |c: std::process::Child| {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let stall = report(stall);
    let trickle = report(trickle);
    println!("honest puts during the attack: {puts}\nstall: {stall}\ntrickle: {trickle}");
    assert!(puts >= 5, "the attack ended before it could be tested");
    // Every hostile request ended: refused as too slow once it held a slot
    // of the attacker's share, or as busy while it waited for one.
    for r in [&stall, &trickle] {
        assert_eq!(
            count(r, "held"),
            0,
            "a hostile body still holds its stream: {r}"
        );
        assert_eq!(count(r, "ok"), 0, "{r}");
    }
    assert!(
        count(&stall, "malformed-frame") + count(&trickle, "malformed-frame") >= 4,
        "the attacker's share of slots was never taken back: {stall} {trickle}"
    );
    // Alone, stalled bodies free their slots within the idle timeout: the
    // attacker's share (4 puts) takes them two waves of 10 s.
    let o = attack(&["stall-manifests", "8", &(32u64 << 20).to_string(), "40"])
        .wait_with_output()
        .unwrap();
    let alone: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(count(&alone, "malformed-frame"), 8, "{alone}");
    let slowest = alone["slowest_refusal_secs"].as_f64().unwrap();
    assert!(
        slowest < 25.0,
        "stalled bodies held their slots for {slowest} s: {alone}"
    );
    // Alone, trickled bodies are let go once behind their pace, whatever
    // length they announce: a 64 MiB put sending a byte a second for a
    // minute is refused about 30 s in, not kept as long as its length
    // would allow (17 minutes) or until it falls silent.
    let o = attack(&["trickle-puts", "4", &(64u64 << 20).to_string(), "60"])
        .wait_with_output()
        .unwrap();
    let alone: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("64 MiB puts trickled alone: {alone}");
    assert_eq!(count(&alone, "malformed-frame"), 4, "{alone}");
    let slowest = alone["slowest_refusal_secs"].as_f64().unwrap();
    assert!(
        slowest < 50.0,
        "trickled bodies held their slots for {slowest} s: {alone}"
    );
    let (_, peak_kib) = rss_kib(d.child.id());
    assert!(
        peak_kib < 100 << 10,
        "miner peak RSS {peak_kib} KiB under attack"
    );
}

/// The daemon's member record, read on a runtime of its own.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
