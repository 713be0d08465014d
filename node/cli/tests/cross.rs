//! A cross-built `cairn` (an aarch64 or armv7 binary run under qemu-user)
//! stores and serves shards to a native `cairn` over loopback QUIC and
//! answers a challenge that verifies.
//!
//! Ignored by a plain `cargo test`: `packaging/test-cross.sh` runs it with
//! `--ignored` and `CAIRN_CROSS_CAIRN` naming the foreign binary, e.g.
//! `CAIRN_CROSS_CAIRN="qemu-aarch64 -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/cairn"`.

use cairn_testkit::bytes;
use cairn_testkit::net::*;

#[test]
#[ignore = "needs a cross-built cairn: packaging/test-cross.sh runs it"]
fn foreign_miner_serves_a_native_client() {
    let program = std::env::var("CAIRN_CROSS_CAIRN")
        .expect("CAIRN_CROSS_CAIRN names the cross-built cairn (packaging/test-cross.sh sets it)");
    let program: Vec<String> = program.split_whitespace().map(String::from).collect();
    let version = run_program(&program, &["--version"]);
    assert!(version.status.success(), "{}", stderr(&version));
    println!("foreign binary: {}", stdout(&version).trim());

    let net = TestNet::new();
    // The foreign binary creates its own identity and runs the miner.
    let miner = net.init_with(&program, "foreign-miner", "miner", &[]);
    let client = net.init("client", "client", &[]);
    let validator = net.init("validator", "validator", &[]);
    let mut d = Daemon::start_with(&program, &miner, &[("CAIRN_STORAGE_SCRUB_RATE", "0")]);

    let data = bytes(700_000, 42);
    let file = net.dir.path().join("shard.bin");
    std::fs::write(&file, &data).unwrap();
    let peer = miner.node_id.to_string();
    let cdir = client.path.to_str().unwrap();
    let put = cairn(&[
        "shard",
        "put",
        file.to_str().unwrap(),
        "--peer",
        &peer,
        "--data-dir",
        cdir,
    ]);
    assert!(put.status.success(), "{}\n{}", stderr(&put), d.log());
    let id = stdout(&put).trim().to_string();

    let out = net.dir.path().join("back.bin");
    let get = cairn(&[
        "shard",
        "get",
        &id,
        "--peer",
        &peer,
        "--data-dir",
        cdir,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        data,
        "bytes from the foreign miner differ"
    );

    let get = cairn(&[
        "shard",
        "get",
        &id,
        "--peer",
        &peer,
        "--data-dir",
        cdir,
        "--offset",
        "100000",
        "--length",
        "50000",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(get.status.success(), "{}", stderr(&get));
    assert_eq!(std::fs::read(&out).unwrap(), &data[100_000..150_000]);

    let ch = cairn(&[
        "shard",
        "challenge",
        &id,
        "--len",
        &data.len().to_string(),
        "--peer",
        &peer,
        "--data-dir",
        validator.path.to_str().unwrap(),
    ]);
    assert!(ch.status.success(), "{}", stderr(&ch));
    assert!(stdout(&ch).contains("proof verified"));
    println!("{}", stdout(&ch).trim());
    assert!(d.terminate().success(), "{}", d.log());
}
