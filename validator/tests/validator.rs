//! The validator against real processes on loopback: cheaters of every kind
//! are caught while honest miners keep a clean record, and lost shards are
//! rebuilt on other miners until `status` shows k + m again.
//!
//! The cheaters are the `cheater` example: a normal node whose challenge
//! answers are replaced (see its doc for the modes).

use std::time::{Duration, Instant};

use cairn_api::{ApiClient, ValidatorReport};
use cairn_node::sdnotify::spawn_and_wait_ready;
use cairn_testkit::bytes;
use cairn_testkit::net::*;

fn node_id_of(net: &CliDevnet, name: &str) -> String {
    net.node_id(name).to_string()
}

#[test]
fn cheaters_are_caught_and_honest_miners_are_not() {
    // Validator settings for a short test: fast challenges, 10 samples (so a
    // 10% loss shows as ~65% failures), short deadline, no repair.
    // Validator settings for a short test: fast challenges, 10 samples (so a
    // 10% loss shows as ~65% failures), a short longest deadline and
    // re-asks 0.2 s, 0.8 s and 3.2 s after an unanswered attempt.
    let env = [
        ("CAIRN_VALIDATOR_SAMPLES", "10"),
        ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "60"),
        ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "8"),
        ("CAIRN_VALIDATOR_DEADLINE_SECS", "2"),
        ("CAIRN_VALIDATOR_REASK_SECS", "0.2"),
        ("CAIRN_VALIDATOR_REPAIR", "false"),
        ("CAIRN_VALIDATOR_WEIGHTS_INTERVAL_SECS", "2"),
    ];
    let net = CliDevnet::with(4, 1, &env);
    // Seven cheaters join: normal storage, dishonest answers.
    let modes = [
        "hash-only",
        "replay",
        "other-shard",
        "stall",
        "silent",
        "reconstruct",
        "relay",
    ];
    let mut cheaters = Vec::new();
    for mode in modes {
        let name = format!("cheat-{mode}");
        let dir = net.path().join(&name);
        let o = cairn(&[
            "init",
            "--quiet",
            "--data-dir",
            dir.to_str().unwrap(),
            "--role",
            "miner",
            "--registry",
            net.registry().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--capacity",
            "2GiB",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let pid = spawn_and_wait_ready(
            &cheater_bin(),
            &[mode, "--data-dir", dir.to_str().unwrap()],
            &[],
            &dir.join("daemon.log"),
            &net.path(),
        )
        .unwrap();
        std::fs::write(dir.join("pid"), pid.to_string()).unwrap();
        cheaters.push((mode, node_id_of(&net, &name)));
    }
    // A dataset over all 8 miners: 1 MiB shards (4 MiB segments, k = 4).
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), bytes(60 << 20, 1)).unwrap();
    let o = net.cli(&[
        "pin",
        data.to_str().unwrap(),
        "--segment-size",
        "4MiB",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["validators_notified"], 1, "{v}");
    let cid = v["cid"].as_str().unwrap().to_string();
    // The reconstructing cheater knows the dataset (any member may read its
    // manifest and placement); the relaying one colludes with miner-1.
    let dir_of = |mode: &str| net.path().join(format!("cheat-{mode}"));
    std::fs::write(dir_of("reconstruct").join("cid"), &cid).unwrap();
    std::fs::write(
        dir_of("relay").join("colluder"),
        node_id_of(&net, "miner-1"),
    )
    .unwrap();

    // Honest miner 0 loses a tenth of every shard it holds: zeroed groups on disk.
    let lossy_dir = net.path().join("miner-0");
    let lossy = node_id_of(&net, "miner-0");
    // 6 of the 64 groups of each 1 MiB shard (9.4%).
    let damaged = zero_shard_groups(&lossy_dir, 1 << 20, &[3, 13, 23, 33, 43, 53]);
    assert!(damaged > 0, "miner-0 got no shards");

    let honest: Vec<String> = (1..4)
        .map(|i| node_id_of(&net, &format!("miner-{i}")))
        .collect();
    // Silence is scored only after three re-asks: those modes need longer
    // for each scored challenge, so fewer are waited for.
    let wanted = |mode: &str| match mode {
        "stall" => 4,
        "silent" => 10,
        _ => 40,
    };
    let r = net.wait_report(
        "enough audits of every miner",
        Duration::from_secs(300),
        |r| {
            let enough =
                |id: &String, n: u64| r.miners.iter().any(|m| &m.node_id == id && m.audits >= n);
            cheaters.iter().all(|(mode, id)| enough(id, wanted(mode)))
                && honest.iter().chain([&lossy]).all(|id| enough(id, 40))
        },
    );
    let get = |id: &str| r.miners.iter().find(|m| m.node_id == id).unwrap().clone();
    let stats = |mode: &str| -> serde_json::Value {
        std::fs::read(dir_of(mode).join("cheat-stats.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    println!(
        "\n  {:<12} {:>10} {:>7} {:>7} {:>14} {:>18} {:>12}",
        "mode", "challenges", "caught", "rate*", "bytes fetched", "cheater ms (max)", "deadline ms"
    );
    for (mode, id) in &cheaters {
        let m = get(id);
        let st = stats(mode);
        let ms: Vec<f64> = st["ms"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default();
        let max_ms = ms.iter().cloned().fold(0.0, f64::max);
        let caught = m.failures + m.timeouts;
        // A replayed proof is genuine the first time it is sent, for the
        // challenge it was made for: those answers are not cheats.
        let genuine = if *mode == "replay" { m.passes } else { 0 };
        println!(
            "  {mode:<12} {:>10} {:>7} {:>6.1}% {:>14} {:>18} {:>12}",
            m.audits,
            caught,
            100.0 * caught as f64 / (m.audits - genuine).max(1) as f64,
            st["bytes_fetched"].as_u64().unwrap_or(0),
            if ms.is_empty() {
                "-".to_string()
            } else {
                format!("{max_ms:.0}")
            },
            m.deadline_ms
        );
        // Caught in at least 99% of its dishonest answers (here: all of them).
        assert!(
            caught * 100 >= (m.audits - genuine) * 99,
            "{mode} escaped too often: {m:?}"
        );
        if *mode == "stall" || *mode == "silent" {
            assert_eq!(m.passes, 0);
            assert!(m.timeouts >= wanted(mode), "{m:?}");
            // Timed out on its own deadline (never cut off with another), or
            // hung up: never a verdict on proof bytes it never sent.
            let own = if *mode == "stall" {
                "no answer within"
            } else {
                "no answer"
            };
            assert!(m.last_failures.iter().all(|f| f.contains(own)), "{m:?}");
        } else {
            // At most one genuine (first) answer per shard for replay.
            let allowed = if *mode == "replay" {
                m.shards_assigned as u64
            } else {
                0
            };
            assert!(m.passes <= allowed, "{mode} passed a challenge: {m:?}");
            assert!(m.disqualified, "{mode} not disqualified: {m:?}");
            let last = m.last_failures.last().unwrap();
            if *mode == "reconstruct" || *mode == "relay" {
                // refused by the peers it asked: it had nothing to send
                assert!(last.contains("missing"), "{m:?}");
                assert!(st["refused"].as_u64().unwrap_or(0) > 0, "{st}");
            } else {
                assert!(last.contains("wrong proof"), "{m:?}");
            }
        }
    }
    println!("  * caught of the dishonest answers (a replay's first answer per shard is genuine)");
    for id in &honest {
        let m = get(id);
        assert_eq!(
            (m.failures, m.timeouts),
            (0, 0),
            "honest miner penalised: {m:?}"
        );
        assert!(m.score > 0.999, "{m:?}");
    }
    let l = get(&lossy);
    let observed = l.failures as f64 / l.audits as f64;
    let f = 6.0 / 64.0;
    let expected = 1.0 - (1.0f64 - f).powi(10);
    println!(
        "lost {:.1}% of every shard, c = 10: failed {} of {} challenges = {observed:.3}; 1-(1-f)^c = {expected:.3}",
        f * 100.0,
        l.failures,
        l.audits
    );
    let se = (expected * (1.0 - expected) / l.audits as f64).sqrt();
    assert!(
        (observed - expected).abs() < 5.0 * se + 0.02,
        "observed {observed}, expected {expected}"
    );
    assert!(l.disqualified, "{l:?}");

    // Each miner hears from the validator why it failed, and nothing about
    // anyone else. The lossy miner's own API shows its wrong proofs with the
    // reason and what to do, `cairn verdicts` prints them, its log says so.
    let api_of = |name: &str| net.member(name).api.expect("the node published its API");
    let validator = node_id_of(&net, "validator-0");
    let asked = Instant::now();
    let mine = loop {
        let v = ApiClient::new(api_of("miner-0")).verdicts().unwrap();
        if v.validators.iter().any(|x| x.failures > 0) {
            break v;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "miner-0 does not know it failed: {v:#?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "  miner-0 saw its failures {:.1} s after the scoreboard showed them",
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(mine.node_id, lossy);
    assert_eq!(mine.validators.len(), 1, "{mine:#?}");
    let x = &mine.validators[0];
    assert_eq!(x.validator, validator);
    assert!(x.disqualified && x.failures >= l.failures, "{x:#?}");
    let wrong = x
        .verdicts
        .iter()
        .find(|d| d.outcome == "wrong-proof")
        .unwrap_or_else(|| panic!("no wrong proof among {x:#?}"));
    assert!(wrong.reason.contains("wrong proof for shard"), "{wrong:?}");
    assert!(wrong.advice.contains("disk"), "{wrong:?}");
    assert!(
        wrong.latency_ms.is_some() && wrong.deadline_ms > 0,
        "{wrong:?}"
    );
    let o = cairn(&["--api", &api_of("miner-0").to_string(), "verdicts"]);
    assert!(o.status.success(), "{}", text(&o));
    let printed = stdout(&o);
    assert!(
        printed.contains(&validator)
            && printed.contains("wrong-proof")
            && printed.contains("what to do:"),
        "{printed}"
    );
    let logged = net.log_lines("miner-0", "a validator failed a challenge of this node");
    assert!(
        logged.contains("wrong-proof"),
        "not in miner-0's log: {logged}"
    );
    // An honest miner's verdicts are passes, answered inside their deadline.
    let honest_view = ApiClient::new(api_of("miner-1")).verdicts().unwrap();
    let h = &honest_view.validators[0];
    assert!(!h.verdicts.is_empty(), "{h:#?}");
    for d in &h.verdicts {
        assert_eq!(d.outcome, "pass", "{d:?}");
        assert!(d.latency_ms.unwrap() <= d.deadline_ms, "{d:?}");
    }
    // A silent cheater is told it timed out.
    let stall = ApiClient::new(api_of("cheat-stall")).verdicts().unwrap();
    assert!(
        stall.validators[0]
            .verdicts
            .iter()
            .any(|d| d.outcome == "timeout" && d.latency_ms.is_none()),
        "{stall:#?}"
    );
    // One challenge to a miner at a time: each of the stalling cheater's
    // attempts began after the one before was given up, so they end at
    // least a deadline apart (many out at once would end together).
    let mut tried = stall.validators[0].verdicts.clone();
    tried.sort_by_key(|d| d.at_ms);
    for w in tried.windows(2) {
        assert!(
            w[1].at_ms >= w[0].at_ms + u64::from(w[1].deadline_ms),
            "two challenges out to one miner at once: {w:#?}"
        );
    }
    // A miner heard from keeps its connection through its misses: while the
    // stalling and the hanging-up cheaters miss again and again, the
    // validator dials nobody anew (a fresh connection would start each
    // re-ask in slow start, perhaps through a relay).
    let id_of = |mode: &str| cheaters.iter().find(|(m, _)| *m == mode).unwrap().1.clone();
    let dials = || -> Vec<u32> {
        let peers = ApiClient::new(api_of("validator-0"))
            .info()
            .unwrap()
            .network
            .expect("the validator's network facts")
            .peers;
        ["stall", "silent"]
            .iter()
            .map(|mode| {
                peers
                    .iter()
                    .find(|p| p.node_id == id_of(mode))
                    .unwrap_or_else(|| panic!("no connection to the {mode} cheater: {peers:#?}"))
                    .dials
            })
            .collect()
    };
    let before = dials();
    let timeouts = |r: &ValidatorReport, mode: &str| {
        let id = id_of(mode);
        r.miners
            .iter()
            .find(|m| m.node_id == id)
            .map_or(0, |m| m.timeouts)
    };
    let r0 = net.report();
    net.wait_report(
        "the stalling and the silent cheater to miss again",
        Duration::from_secs(120),
        |r| {
            timeouts(r, "stall") > timeouts(&r0, "stall")
                && timeouts(r, "silent") > timeouts(&r0, "silent")
        },
    );
    assert_eq!(
        dials(),
        before,
        "the validator dialed the stalling or the hanging-up cheater again (dials of each)"
    );

    // Weights: honest miners earn, cheaters and the lossy miner do not.
    let weights_file = std::fs::read_dir(net.registry())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("weights-"))
        .expect("weights written");
    let w: serde_json::Value =
        serde_json::from_slice(&std::fs::read(weights_file.path()).unwrap()).unwrap();
    let weight = |id: &str| {
        w["weights"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node_id"] == id)
            .map(|e| e["weight"].as_u64().unwrap())
            .unwrap_or(0)
    };
    for id in &honest {
        assert!(weight(id) > 0, "honest miner without weight: {w}");
    }
    for (mode, id) in &cheaters {
        assert_eq!(weight(id), 0, "{mode} earns weight: {w}");
    }
    assert_eq!(weight(&lossy), 0);

    // What stopped the reconstruction was the grant rule: once the owner
    // grants the cheater reads, it rebuilds its groups from k peers and
    // passes on loopback, inside its deadline.
    let g = net.cli(&["grant", "new", &cheaters[5].1, "--ttl", "1h"]);
    assert!(g.status.success(), "{}", text(&g));
    std::fs::write(dir_of("reconstruct").join("grant"), stdout(&g).trim()).unwrap();
    let before = get(&cheaters[5].1).passes;
    let answered_before = stats("reconstruct")["ms"].as_array().map_or(0, |a| a.len());
    let r = net.wait_report(
        "the granted reconstruction to pass",
        Duration::from_secs(120),
        |r| {
            r.miners
                .iter()
                .any(|m| m.node_id == cheaters[5].1 && m.passes > before + 2)
        },
    );
    let m = r
        .miners
        .iter()
        .find(|m| m.node_id == cheaters[5].1)
        .unwrap();
    let st = stats("reconstruct");
    let granted_ms = st["ms"].as_array().map_or(0.0, |a| {
        a[answered_before.min(a.len())..]
            .iter()
            .filter_map(|x| x.as_f64())
            .fold(0.0, f64::max)
    });
    println!(
        "  reconstruct with the owner's grant: {} passes; {} bytes fetched in all; \
         slowest rebuild {granted_ms:.0} ms against a deadline of {} ms (loopback: fetching is nearly free)",
        m.passes - before,
        st["bytes_fetched"],
        m.deadline_ms
    );
    for id in &honest {
        let m = get(id);
        println!(
            "  honest {}: last answer {:.0} ms, deadline {} ms",
            &id[..8],
            m.last_latency_ms.unwrap_or(0.0),
            m.deadline_ms
        );
    }
    // A member asking the validator is answered about itself only (it holds
    // nothing: no audits, no verdicts); a miner is not asked at all.
    let spy = net.identity("spy", "miner");
    let r = adversary(&spy, &net.member("validator-0"), &["verdicts"]).unwrap();
    assert_eq!(r["codes"]["ok"], 1, "{r}");
    assert_eq!(
        (r["audits"].as_u64(), r["verdicts"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    let r = adversary(&spy, &net.member("miner-1"), &["verdicts"]).unwrap();
    assert_eq!(r["codes"]["bad-request"], 1, "{r}");
}

#[test]
fn lost_miners_are_repaired_back_to_full_redundancy() {
    let env = [
        ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "40"),
        ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "10"),
        ("CAIRN_VALIDATOR_DEADLINE_SECS", "2"),
        ("CAIRN_VALIDATOR_GRACE_SECS", "3"),
        ("CAIRN_VALIDATOR_REFRESH_SECS", "2"),
        ("CAIRN_VALIDATOR_WEIGHTS_INTERVAL_SECS", "2"),
    ];
    let net = CliDevnet::with(6, 1, &env);
    let data = net.dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a.bin"), bytes(20 << 20, 5)).unwrap();
    std::fs::write(data.join("b.bin"), bytes(3_333_333, 6)).unwrap();
    let o = net.cli(&["pin", data.to_str().unwrap(), "--segment-size", "2MiB"]);
    assert!(o.status.success(), "{}", text(&o));
    let cid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    net.wait_report("the dataset audited", Duration::from_secs(60), |r| {
        r.datasets == 1
    });

    // Two miners go for good; two new ones join.
    for i in ["0", "3"] {
        net.devnet(&["stop-miner", i], &[]);
    }
    for _ in 0..2 {
        net.devnet(&["add-miner"], &env);
    }
    let status = |json: bool| {
        let mut a = vec!["status", cid.as_str()];
        if json {
            a.push("--json");
        }
        net.cli(&a)
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let s = loop {
        let o = status(true);
        assert!(o.status.success(), "{}", text(&o));
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if s["healthy"] == s["segments"].as_array().unwrap().len() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired: {s}\n{:#?}\nvalidator log (repairs):\n{}",
            net.report(),
            net.log_lines("validator-0", "repair")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let r = net.report();
    println!(
        "repaired {} shards; placement version {}",
        r.repairs_done, s["placement_version"]
    );
    assert!(r.repairs_done > 0);
    // Every byte still there.
    let out = net.dir.path().join("out");
    let o = net.cli(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(out.join("sub/a.bin")).unwrap(),
        bytes(20 << 20, 5)
    );
    assert_eq!(
        std::fs::read(out.join("b.bin")).unwrap(),
        bytes(3_333_333, 6)
    );
    let human = String::from_utf8_lossy(&status(false).stdout).into_owned();
    assert!(!human.contains("MISSING"), "{human}");
}
