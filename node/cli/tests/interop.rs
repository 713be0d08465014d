//! Two versions side by side: the previous release's binaries (version N,
//! `packaging/previous-release`, built by `packaging/build-previous.sh`) and
//! this checkout's (N+1) in one network of real processes, as a network
//! mid-upgrade is: miners of both versions, a gateway and a validator of
//! one version and then of the other.
//!
//! Shown both ways, each across QUIC between processes of different
//! builds: put (a gateway placing shards, a client's `shard put`), get
//! (whole datasets, ranged reads, `shard get`) and challenge (the
//! validator's audits, `shard challenge`); and a store, a node key and a
//! devnet written by one version are used by the other.
//!
//! `CAIRN_PREVIOUS_CAIRN` names the previous `cairn` (its `cairn-validator`
//! beside it). Without it the test says it skipped, and fails under
//! `CAIRN_REQUIRE_EXTERNAL=1` (CI, which builds it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cairn_testkit::bytes;
use cairn_testkit::net::*;

/// Validator settings for a short test (as validator.rs).
const FAST_VALIDATOR: [(&str, &str); 6] = [
    ("CAIRN_VALIDATOR_SAMPLES", "10"),
    ("CAIRN_VALIDATOR_CHALLENGES_PER_SEC", "40"),
    ("CAIRN_VALIDATOR_PER_MINER_PER_SEC", "8"),
    ("CAIRN_VALIDATOR_DEADLINE_SECS", "2"),
    ("CAIRN_VALIDATOR_REPAIR", "false"),
    ("CAIRN_VALIDATOR_WEIGHTS_INTERVAL_SECS", "2"),
];

fn previous_cairn() -> Option<PathBuf> {
    match std::env::var_os("CAIRN_PREVIOUS_CAIRN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
                "CAIRN_PREVIOUS_CAIRN is not set: CAIRN_PREVIOUS_CAIRN=$(packaging/build-previous.sh)/cairn"
            );
            eprintln!(
                "SKIPPED: CAIRN_PREVIOUS_CAIRN is not set (packaging/build-previous.sh builds the previous release)"
            );
            None
        }
    }
}

fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(program);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run a cairn binary")
}

fn ok(what: &str, o: Output) -> String {
    assert!(o.status.success(), "{what}: {}", text(&o));
    stdout(&o).trim().to_string()
}

/// `program devnet args --dir <net>` with the validator settings.
fn devnet(program: &Path, net: &CliDevnet, args: &[&str]) -> String {
    let dir = net.net();
    let mut a = vec!["devnet"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--dir", &dir]);
    ok(
        &format!("{} {}", program.display(), a.join(" ")),
        run(program, &a, &FAST_VALIDATOR),
    )
}

/// `program --api <api> --api-token-file <the gateway's token> args`.
fn cli(program: &Path, net: &CliDevnet, api: &str, args: &[&str]) -> Output {
    let token = net.path().join("gateway").join("api.token");
    let token = token.to_string_lossy();
    let mut a = vec!["--api", api, "--api-token-file", &token];
    a.extend_from_slice(args);
    run(program, &a, &[])
}

/// The API address the gateway published (it picks a new port at each start).
fn gateway_api(net: &CliDevnet) -> String {
    net.member("gateway")
        .api
        .expect("the gateway publishes its API")
        .to_string()
}

/// A dataset of three files: two segments and a short one, a small file,
/// an empty one.
fn write_dataset(root: &Path, seed: u64) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("big.bin"), bytes(20 << 20, seed)).unwrap();
    std::fs::write(root.join("small.txt"), bytes(1000, seed + 1)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
}

/// `program get <cid>` through the gateway at `api` into a new directory
/// named `into`, and the files compared with those pinned from `pinned`.
fn get_and_compare(
    what: &str,
    program: &Path,
    net: &CliDevnet,
    api: &str,
    cid: &str,
    pinned: &Path,
    into: &str,
) {
    let back = net.dir.path().join(into);
    ok(
        what,
        cli(
            program,
            net,
            api,
            &["get", cid, "-o", back.to_str().unwrap()],
        ),
    );
    for f in ["big.bin", "small.txt", "empty"] {
        assert!(
            std::fs::read(pinned.join(f)).unwrap() == std::fs::read(back.join(f)).unwrap(),
            "{what}: {f} differs after the round trip"
        );
    }
}

/// Kills node `name` of the devnet (its pid file) and waits until its data
/// directory is free: the lock its store holds is released when the last of
/// its threads is gone (the process shows as a zombie before that).
fn kill(net: &CliDevnet, name: &str) {
    let pid = net.pid(name);
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let dir = net.path().join(name);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    assert!(
        cairn_node::sdnotify::wait_gone(pid, &dir, deadline),
        "{name} ({pid}) did not let go of its data directory"
    );
    std::fs::remove_file(dir.join("pid")).unwrap();
}

/// The devnet's directory of node `name`, to start it with another binary.
fn node_dir(net: &CliDevnet, name: &str) -> NodeDir {
    NodeDir {
        path: net.path().join(name),
        node_id: net.node_id(name),
        registry: net.registry(),
    }
}

/// Waits until the validator has seen each of `miners` pass `more` more
/// challenges than in `before`, with no more failures or timeouts.
fn audited(net: &CliDevnet, miners: &[String], before: &cairn_api::ValidatorReport, more: u64) {
    let of = |r: &cairn_api::ValidatorReport, id: &str| {
        r.miners
            .iter()
            .find(|m| m.node_id == id)
            .map_or((0, 0, 0), |m| (m.passes, m.failures, m.timeouts))
    };
    let r = net.wait_report("challenges across versions", Duration::from_secs(90), |r| {
        miners
            .iter()
            .all(|id| of(r, id).0 >= of(before, id).0 + more)
    });
    for id in miners {
        let (now, then) = (of(&r, id), of(before, id));
        assert_eq!(
            (now.1 - then.1, now.2 - then.2),
            (0, 0),
            "a miner of the other version failed challenges (failures, timeouts): {:?}",
            r.miners.iter().find(|m| &m.node_id == id)
        );
    }
}

#[test]
fn the_previous_release_and_this_one_interoperate() {
    let Some(old) = previous_cairn() else { return };
    let new = cairn_bin();
    let old_version = ok("previous --version", run(&old, &["--version"], &[]));
    let new_version = ok("this --version", run(&new, &["--version"], &[]));
    println!(
        "previous: {old_version} ({}), this: {new_version}",
        old.display()
    );
    assert_ne!(
        old_version, new_version,
        "CAIRN_PREVIOUS_CAIRN is this build"
    );
    let old_validator = old.parent().unwrap().join("cairn-validator");
    assert!(
        old_validator.exists(),
        "the previous cairn-validator belongs beside {}",
        old.display()
    );

    // --- N+1 gateway and validator; miners 3, 4, 5 run version N ---------
    // (their stores, made by N+1's `init`, are opened by N)
    let net = CliDevnet::with(6, 1, &FAST_VALIDATOR);
    for i in 3..6 {
        let i = i.to_string();
        net.devnet(&["stop-miner", &i], &[]);
        devnet(&old, &net, &["start-miner", &i]);
    }
    let old_miners: Vec<String> = (3..6)
        .map(|i| net.node_id(&format!("miner-{i}")).to_string())
        .collect();
    let new_miners: Vec<String> = (0..3)
        .map(|i| net.node_id(&format!("miner-{i}")).to_string())
        .collect();

    let a = net.dir.path().join("a");
    write_dataset(&a, 1);
    let cid_a = ok(
        "pin (N+1 gateway onto N and N+1 miners)",
        net.cli(&["pin", a.to_str().unwrap()]),
    );
    for m in 3..6 {
        let (n, _) = shard_files(&net.path().join(format!("miner-{m}")));
        assert!(n > 0, "miner-{m} (version N) got no shard");
    }
    get_and_compare(
        "get (N+1 from N and N+1)",
        &new,
        &net,
        &net.api,
        &cid_a,
        &a,
        "a-back",
    );
    // A ranged read comes from its data shard's holder alone: one read in
    // each data shard of every segment (2 MiB each), so the N miners among
    // the holders serve some of them, and one across a segment's end.
    let big = bytes(20 << 20, 1);
    let mut ranges: Vec<(usize, usize)> = (0..10).map(|i| (i * (2 << 20) + 1000, 4096)).collect();
    ranges.push(((8 << 20) - 100, 200));
    ranges.push(((20 << 20) - 5000, 5000));
    for (start, len) in ranges {
        let range = format!("bytes={}-{}", start, start + len - 1);
        let (status, body) = http_bytes(&net.api, &format!("/d/{cid_a}/big.bin"), Some(&range));
        assert_eq!(status, 206, "{range}");
        assert!(body == big[start..start + len], "{range}: wrong bytes");
    }
    let r0 = net.report();
    audited(&net, &old_miners, &r0, 3);
    println!("N+1 gateway and validator: version N miners store, serve and pass challenges");

    // --- shards both ways between single clients and miners ---------------
    // Each client writes with one version and reads with the other (its node
    // key and directory shared), from a miner of the other version.
    let registry = net.registry();
    let init = |program: &Path, name: &str| -> String {
        let dir = net.dir.path().join(name);
        let args = [
            "init",
            "--quiet",
            "--data-dir",
            dir.to_str().unwrap(),
            "--role",
            "client",
            "--registry",
            registry.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ];
        ok(&format!("{name} init"), run(program, &args, &[]));
        dir.to_string_lossy().into_owned()
    };
    let old_client = init(&old, "old-client");
    let new_client = init(&new, "new-client");
    let shard = bytes(700_000, 9);
    let file = net.dir.path().join("shard.bin");
    std::fs::write(&file, &shard).unwrap();
    let pairs = [
        (&old, &old_client, &new, &new_miners[0], "N+1"),
        (&new, &new_client, &old, &old_miners[0], "N"),
    ];
    for (writer, dir, reader, miner, v) in pairs {
        let id = ok(
            &format!("shard put by {} to a version {v} miner", writer.display()),
            run(
                writer,
                &[
                    "shard",
                    "put",
                    file.to_str().unwrap(),
                    "--peer",
                    miner,
                    "--data-dir",
                    dir,
                ],
                &[],
            ),
        );
        let out = net.dir.path().join(format!("shard-back-{v}.bin"));
        let out = out.to_str().unwrap();
        ok(
            &format!("shard get by {} from a version {v} miner", reader.display()),
            run(
                reader,
                &[
                    "shard",
                    "get",
                    &id,
                    "--peer",
                    miner,
                    "--data-dir",
                    dir,
                    "-o",
                    out,
                ],
                &[],
            ),
        );
        assert!(
            std::fs::read(out).unwrap() == shard,
            "shard bytes differ (miner {v})"
        );
        let ranged = [
            "shard",
            "get",
            &id,
            "--peer",
            miner,
            "--data-dir",
            dir,
            "--offset",
            "100000",
            "--length",
            "50000",
            "-o",
            out,
        ];
        ok("ranged shard get", run(reader, &ranged, &[]));
        assert!(std::fs::read(out).unwrap() == shard[100_000..150_000]);
    }
    println!("shard put and get: N to N+1 and N+1 to N");

    // --- version N gateway and validator on the same network ----------------
    kill(&net, "gateway");
    kill(&net, "validator-0");
    let _gateway = Daemon::start_with(
        &[old.to_string_lossy().into_owned()],
        &node_dir(&net, "gateway"),
        &[],
    );
    let _validator = Daemon::start_with(
        &[old_validator.to_string_lossy().into_owned()],
        &node_dir(&net, "validator-0"),
        &FAST_VALIDATOR,
    );
    let api = gateway_api(&net);
    let r1 = net.report();
    get_and_compare(
        "get (N gateway from N and N+1)",
        &old,
        &net,
        &api,
        &cid_a,
        &a,
        "a-back-old",
    );
    let b = net.dir.path().join("b");
    write_dataset(&b, 2);
    let cid_b = ok(
        "pin (N gateway onto N and N+1 miners)",
        cli(&old, &net, &api, &["pin", b.to_str().unwrap()]),
    );
    get_and_compare(
        "get (N+1 client, N gateway)",
        &new,
        &net,
        &api,
        &cid_b,
        &b,
        "b-back",
    );
    audited(&net, &new_miners, &r1, 3);
    println!("N gateway and validator: version N+1 miners store, serve and pass challenges");

    // --- and back: every node on N+1 reads what N wrote ---------------------
    drop(_gateway);
    drop(_validator);
    net.devnet(&["down"], &[]);
    net.devnet(
        &["up", "--miners", "6", "--validators", "1"],
        &FAST_VALIDATOR,
    );
    let api = gateway_api(&net);
    get_and_compare("get (all N+1)", &new, &net, &api, &cid_b, &b, "b-back-new");
}
