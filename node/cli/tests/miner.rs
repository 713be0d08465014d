//! The miner across real process boundaries: `cairn run` on loopback QUIC,
//! driven by other `cairn` processes and by in-process clients.

use cairn_node::Error;
use cairn_node::config::Role;
use cairn_proof::{Challenge, GROUP_LEN, shard_id_and_outboard};
use cairn_proto::wire::{ErrorCode, Request, Response};
use cairn_testkit::bytes;
use cairn_testkit::net::*;

#[test]
fn processes_put_get_ranges_and_challenge() {
    let net = TestNet::new();
    let miner = net.init("miner", "miner", &[]);
    let client = net.init("client", "client", &[]);
    let validator = net.init("validator", "validator", &[]);
    let mut d = Daemon::start(&miner, &[]);

    let data = bytes(3 * GROUP_LEN * 7 + 12345, 1);
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
    assert!(put.status.success(), "{}", stderr(&put));
    let id = stdout(&put).trim().to_string();
    assert_eq!(id, blake3::hash(&data).to_hex().as_str());

    // whole shard back
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
    assert_eq!(std::fs::read(&out).unwrap(), data);

    // ranges, aligned and not, including the short tail
    for (off, len) in [
        (0usize, 1usize),
        (5, 100),
        (GROUP_LEN - 3, 10),
        (40_000, 70_000),
        (data.len() - 5, 5),
        (data.len() - 1, 100),
    ] {
        let get = cairn(&[
            "shard",
            "get",
            &id,
            "--peer",
            &peer,
            "--data-dir",
            cdir,
            "--offset",
            &off.to_string(),
            "--length",
            &len.to_string(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(get.status.success(), "{}", stderr(&get));
        let end = (off + len).min(data.len());
        assert_eq!(
            std::fs::read(&out).unwrap(),
            &data[off..end],
            "range {off}+{len}"
        );
    }

    // a validator's challenge is answered and verifies
    let ch = cairn(&[
        "shard",
        "challenge",
        &id,
        "--len",
        &data.len().to_string(),
        "--samples",
        "44",
        "--peer",
        &peer,
        "--data-dir",
        validator.path.to_str().unwrap(),
    ]);
    assert!(ch.status.success(), "{}", stderr(&ch));
    assert!(stdout(&ch).contains("proof verified"), "{}", stdout(&ch));

    // a non-validator's challenge is refused, by name
    let ch = cairn(&[
        "shard",
        "challenge",
        &id,
        "--len",
        &data.len().to_string(),
        "--peer",
        &peer,
        "--data-dir",
        cdir,
    ]);
    assert!(!ch.status.success());
    assert!(stderr(&ch).contains("validators only"), "{}", stderr(&ch));

    // the inventory lists it; info counts it
    let ls = cairn(&["shard", "ls", "--peer", &peer, "--data-dir", cdir]);
    assert!(stdout(&ls).contains(&id), "{}", stdout(&ls));

    // clean shutdown on SIGTERM
    let status = d.terminate();
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
    assert!(d.log().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let net = TestNet::new();
    let miner = net.init(
        "miner",
        "miner",
        &["--capacity", "200KiB", "--quota", "190KiB"],
    );
    let d = Daemon::start(&miner, &[]);
    let addr = d.addr().await;
    let (client, _) = net.client(Role::Client).await;

    // a good shard first, to check that nothing below disturbs it
    let good = bytes(50_000, 2);
    let (good_id, _) = shard_id_and_outboard(&good);
    client.put_shard(&addr, good_id, &good, None).await.unwrap();

    // frame over the limit: refused before anything is read
    let mut huge = (1u32 << 30).to_be_bytes().to_vec();
    huge.extend_from_slice(&[1, 9]);
    let r = client.raw_request(&addr, &huge, true).await.unwrap();
    assert!(
        matches!(r, Response::Error { code: ErrorCode::FrameTooLarge, ref message } if message.contains("limit")),
        "{r:?}"
    );

    // truncated frame: the length says 40 bytes, 3 arrive
    let mut trunc = 40u32.to_be_bytes().to_vec();
    trunc.extend_from_slice(&[1, 9, 0]);
    let r = client.raw_request(&addr, &trunc, true).await.unwrap();
    assert!(
        matches!(r, Response::Error { code: ErrorCode::Malformed, ref message } if message.contains("truncated")),
        "{r:?}"
    );

    // unknown request kind
    let mut unknown = 2u32.to_be_bytes().to_vec();
    unknown.extend_from_slice(&[1, 99]);
    let r = client.raw_request(&addr, &unknown, true).await.unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::UnknownRequest,
                ..
            }
        ),
        "{r:?}"
    );

    // wrong protocol version
    let mut v9 = 2u32.to_be_bytes().to_vec();
    v9.extend_from_slice(&[9, 9]);
    let r = client.raw_request(&addr, &v9, true).await.unwrap();
    assert!(
        matches!(r, Response::Error { code: ErrorCode::UnsupportedVersion, ref message } if message.contains("upgrade")),
        "{r:?}"
    );

    // bytes that do not hash to the claimed id
    let (claimed, _) = shard_id_and_outboard(b"what I claim");
    let e = client
        .put_shard(&addr, claimed, b"what I send!", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::HashMismatch,
                ..
            }
        ),
        "{e}"
    );

    // a body shorter than announced
    let (short_id, _) = shard_id_and_outboard(&[7u8; 1000]);
    let mut p = client.begin_put(&addr, short_id, 1000, None).await.unwrap();
    p.write(&[7u8; 600]).await.unwrap();
    let e = p.finish().await.unwrap_err();
    assert!(
        matches!(e, Error::Remote { code: ErrorCode::Malformed, ref message, .. } if message.contains("600 of 1000")),
        "{e}"
    );

    // a put over the per-peer quota, then one over capacity from another peer
    let big = bytes(150_000, 3);
    let (big_id, _) = shard_id_and_outboard(&big);
    let e = client
        .put_shard(&addr, big_id, &big, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::QuotaExceeded,
                ..
            }
        ),
        "{e}"
    );
    let (other, _) = net.client(Role::Client).await;
    let big2 = bytes(170_000, 4);
    let (big2_id, _) = shard_id_and_outboard(&big2);
    let e = other
        .put_shard(&addr, big2_id, &big2, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Remote { code: ErrorCode::Full, ref message, .. } if message.contains("capacity")),
        "{e}"
    );

    // get of an unknown shard
    let (nobody, _) = shard_id_and_outboard(b"never stored");
    let e = client
        .get_shard(&addr, nobody, 0, u64::MAX, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e}"
    );

    // an unregistered peer is refused, by name
    let stranger = unregistered_client().await;
    let e = stranger
        .put_shard(&addr, good_id, &good, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Remote { code: ErrorCode::NotRegistered, ref message, .. } if message.contains("register")),
        "{e}"
    );
    // not even what the node holds and has free
    let e = stranger.info(&addr).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::NotRegistered,
                ..
            }
        ),
        "{e}"
    );
    let e = stranger
        .get_shard(&addr, good_id, 0, u64::MAX, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::NotRegistered,
                ..
            }
        ),
        "{e}"
    );

    // an unreachable peer: a clear error, no hang
    let gone = cairn_node::EndpointAddr::new(addr.id).with_ip_addr("127.0.0.1:9".parse().unwrap());
    let fresh = net
        .client(Role::Client)
        .await
        .0
        .with_connect_timeout(std::time::Duration::from_secs(2));
    let e = fresh.info(&gone).await.unwrap_err();
    assert!(
        e.to_string().contains("unreachable") || e.to_string().contains("cannot connect"),
        "{e}"
    );

    // nothing was lost or half-written
    let back = client
        .get_shard(&addr, good_id, 0, u64::MAX, None)
        .await
        .unwrap();
    assert_eq!(back.bytes, good);
    let info = client.info(&addr).await.unwrap();
    assert_eq!(info.shards, 1);
    let (disk, names) = shard_files(&d.data_dir);
    assert_eq!(names, vec![good_id.to_hex()]);
    assert_eq!(info.used, disk);
    assert!(
        temp_files(&d.data_dir).is_empty(),
        "temporaries left: {:?}",
        temp_files(&d.data_dir)
    );

    // a raw put whose header parses but whose id is wrong never lands
    let frame = Request::PutShard {
        id: claimed,
        len: 3,
        on_behalf: None,
    }
    .encode();
    let mut raw = frame.clone();
    raw.extend_from_slice(b"abc");
    let r = client.raw_request(&addr, &raw, true).await.unwrap();
    assert!(
        matches!(
            r,
            Response::Error {
                code: ErrorCode::HashMismatch,
                ..
            }
        ),
        "{r:?}"
    );
}

#[test]
fn missing_or_malformed_keys_and_config_are_named() {
    let net = TestNet::new();
    // no node key
    let empty = net.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = cairn(&["run", "--data-dir", empty.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cairn init"), "{}", stderr(&o));

    // malformed node key
    let n = net.init("n", "miner", &[]);
    std::fs::write(n.path.join("node.key"), "not hex\n").unwrap();
    let o = cairn(&["run", "--data-dir", n.path.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("node.key") && stderr(&o).contains("64 hex"),
        "{}",
        stderr(&o)
    );

    // malformed hotkey
    let m = net.init("m", "miner", &[]);
    std::fs::write(m.path.join("hotkey"), "{\"nope\": 1}").unwrap();
    let o = cairn(&["run", "--data-dir", m.path.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("hotkey") && stderr(&o).contains("secretSeed"),
        "{}",
        stderr(&o)
    );

    // missing wallet hotkey
    let cfg = net.dir.path().join("w.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[chain]\nwallet_path = {:?}\nwallet = \"w\"\nhotkey = \"h\"\n",
            m.path,
            net.dir.path().join("wallets")
        ),
    )
    .unwrap();
    let o = cairn(&["id", "--config", cfg.to_str().unwrap()]);
    assert!(
        stderr(&o).contains("btcli wallet new_hotkey"),
        "{}",
        stderr(&o)
    );

    // config: unknown key and bad value, named
    let bad = net.dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\nscrub_rat = \"1MiB\"\n").unwrap();
    let o = cairn(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("scrub_rat"), "{}", stderr(&o));
    std::fs::write(&bad, "capacity = \"lots\"\n").unwrap();
    let o = cairn(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert!(stderr(&o).contains("lots"), "{}", stderr(&o));
    let o = Command::new(cairn_bin())
        .args(["config", "check", "--config", bad.to_str().unwrap()])
        .env("CAIRN_CAPACITY", "1GiB")
        .output()
        .unwrap();
    assert!(o.status.success(), "env overrides the file: {}", stderr(&o));
}

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenge_answers_verify_and_a_second_owner_keeps_the_shard() {
    let net = TestNet::new();
    let miner = net.init("miner", "miner", &[]);
    let d = Daemon::start(&miner, &[]);
    let addr = d.addr().await;
    let (validator, _) = net.client(Role::Validator).await;
    let (a, _) = net.client(Role::Client).await;
    let (b, _) = net.client(Role::Client).await;

    let data = bytes(2 << 20, 9);
    let (id, _) = shard_id_and_outboard(&data);
    a.put_shard(&addr, id, &data, None).await.unwrap();
    // the same bytes from a second owner are not sent twice
    b.put_shard(&addr, id, &data, None).await.unwrap();
    for n in 0..5u8 {
        let ch = Challenge::new(id, data.len() as u64, [n; 32], 44).unwrap();
        let proof = validator.challenge(&addr, &ch).await.unwrap();
        cairn_proof::verify(&ch, &proof).unwrap();
    }
    // a challenge with the wrong length is refused, not answered wrongly
    let ch = Challenge::new(id, 999, [1; 32], 4).unwrap();
    let e = validator.challenge(&addr, &ch).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{e}"
    );
    // one owner lets go: still served; the other lets go: gone
    a.delete_shard(&addr, id, None).await.unwrap();
    assert_eq!(
        b.get_shard(&addr, id, 0, 10, None).await.unwrap().bytes,
        data[..10]
    );
    let e = validator.delete_shard(&addr, id, None).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{e}"
    );
    b.delete_shard(&addr, id, None).await.unwrap();
    assert!(a.get_shard(&addr, id, 0, 10, None).await.is_err());
    assert_eq!(shard_files(&d.data_dir).0, 0);
}

/// Unmounts a test filesystem however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// On a disk smaller than the configured capacity, puts are refused as
/// full (not failed half-way), everything stored stays readable and
/// provable, and freeing space lets puts in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_puts_and_keeps_serving() {
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !root {
        assert!(
            std::env::var("CAIRN_REQUIRE_EXTERNAL").as_deref() != Ok("1"),
            "mounting a small filesystem needs root (CI runs as root)"
        );
        eprintln!("SKIPPED: mounting a small filesystem needs root");
        return;
    }
    let net = TestNet::new();
    let disk = net.dir.path().join("small-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let o = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96m", "tmpfs"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _mounted = Mounted(disk.clone());
    // A capacity far above the 96 MiB the disk has.
    let miner = net.init("small-disk/miner", "miner", &["--capacity", "1GiB"]);
    let d = Daemon::start(&miner, &[("CAIRN_STORAGE_SCRUB_RATE", "0")]);
    let addr = d.addr().await;
    let (client, _) = net.client(Role::Client).await;
    let (validator, _) = net.client(Role::Validator).await;
    let mut stored = Vec::new();
    let refusal = loop {
        let data = bytes(1 << 20, stored.len() as u64 + 100);
        let (id, _) = shard_id_and_outboard(&data);
        match client.put_shard(&addr, id, &data, None).await {
            Ok(()) => stored.push((id, data)),
            Err(e) => break e,
        }
        assert!(stored.len() < 96, "a 96 MiB disk took 96 MiB");
    };
    assert!(
        matches!(
            refusal,
            Error::Remote {
                code: ErrorCode::Full,
                ..
            }
        ),
        "{refusal}"
    );
    assert!(stored.len() >= 4, "only {} shards fit", stored.len());
    for (id, data) in &stored {
        let got = client
            .get_shard(&addr, *id, 0, u64::MAX, None)
            .await
            .unwrap();
        assert_eq!(&got.bytes, data);
    }
    let (id, data) = &stored[0];
    let ch = Challenge::new(*id, data.len() as u64, [3; 32], 44).unwrap();
    cairn_proof::verify(&ch, &validator.challenge(&addr, &ch).await.unwrap()).unwrap();
    // Space freed: puts go in again.
    for (id, _) in stored.drain(..3) {
        client.delete_shard(&addr, id, None).await.unwrap();
    }
    let data = bytes(1 << 20, 999);
    let (id, _) = shard_id_and_outboard(&data);
    client.put_shard(&addr, id, &data, None).await.unwrap();
    assert!(
        temp_files(&miner.path).is_empty(),
        "a refused put left a temporary"
    );
}

/// Shard bytes go to the nodes that placed the shard, to validators, and to
/// a reader with an owner's grant made out to it; every other member is
/// refused, whatever grant it shows (another reader's, an expired one, one
/// it signed itself, one for another shard). Without this rule a miner could
/// read the same positions of k other shards of its segment and answer a
/// challenge on a shard it threw away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_reads_need_the_owners_grant() {
    use cairn_proto::Grant;
    let net = TestNet::new();
    let miner = net.init("miner", "miner", &[]);
    let d = Daemon::start(&miner, &[]);
    let addr = d.addr().await;
    let (owner, _, owner_key) = net.client_with_key(Role::Client).await;
    let (reader, reader_id, reader_key) = net.client_with_key(Role::Miner).await;
    let (_, other_id) = net.client(Role::Miner).await;
    let (validator, _) = net.client(Role::Validator).await;

    let data = bytes(300_000, 12);
    let (id, _) = shard_id_and_outboard(&data);
    owner.put_shard(&addr, id, &data, None).await.unwrap();
    let (other_shard, _) = shard_id_and_outboard(b"another shard");

    let refused = |e: Error, why: &str| {
        assert!(
            matches!(e, Error::Remote { code: ErrorCode::Forbidden, ref message, .. } if message.contains(why)),
            "expected a refusal naming {why:?}: {e}"
        );
    };
    // no grant: refused, with what to do
    let e = reader
        .get_shard(&addr, id, 0, 16384, None)
        .await
        .unwrap_err();
    refused(e, "cairn grant new");
    let now = cairn_node::unix_secs();
    let read = |g: Grant| {
        let reader = &reader;
        let addr = &addr;
        async move {
            reader
                .get_shard_granted(addr, id, 0, u64::MAX, None, Some(&g))
                .await
        }
    };
    for (g, why) in [
        (
            Grant::signed(&owner_key, other_id, now + 3600, None),
            "another node",
        ),
        (
            Grant::signed(&owner_key, reader_id, now - 1, None),
            "expired",
        ),
        (
            Grant::signed(&reader_key, reader_id, now + 3600, None),
            "did not place",
        ),
        (
            Grant::signed(&owner_key, reader_id, now + 3600, Some(other_shard)),
            "another shard",
        ),
        (
            Grant::signed(&owner_key, reader_id, now + 400 * 86_400, None),
            "30 days",
        ),
        // Forged: the reader's own grant, rewritten to name the owner (the
        // signature no longer holds) ...
        (
            {
                let mut g = Grant::signed(&reader_key, reader_id, now + 3600, None);
                g.owner = owner_key.public();
                g
            },
            "signature",
        ),
        // ... or the owner's grant for another node with its expiry
        // rewritten: refused for its reader before any signature is checked.
        (
            {
                let mut g = Grant::signed(&owner_key, other_id, now + 3600, None);
                g.expires = now + 7200;
                g
            },
            "another node",
        ),
    ] {
        refused(read(g).await.unwrap_err(), why);
    }
    // the owner's grant to this reader: served, verified, whole or one shard
    for scope in [None, Some(id)] {
        let g = Grant::signed(&owner_key, reader_id, now + 3600, scope);
        assert_eq!(read(g).await.unwrap().bytes, data);
    }
    // the owner and validators need none
    assert_eq!(
        owner
            .get_shard(&addr, id, 0, 100, None)
            .await
            .unwrap()
            .bytes,
        data[..100]
    );
    assert_eq!(
        validator
            .get_shard(&addr, id, 0, u64::MAX, None)
            .await
            .unwrap()
            .bytes,
        data
    );
}

/// A miner that takes a shard's bytes and never gives its verdict, while
/// its QUIC stack keeps the connection alive (so no idle timeout comes):
/// the put fails once the miner's own allowance for the body is over,
/// naming what happened, and closes that connection, which lets go of the
/// shard the stream held. Without the bound the put, and a pin behind it,
/// waited for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_never_answers_a_put_costs_a_bounded_wait() {
    let hostile = loopback_endpoint(iroh::SecretKey::generate()).await;
    let addr = loopback_addr(&hostile);
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(1);
    let server = tokio::spawn(async move {
        let conn = hostile.accept().await.unwrap().await.unwrap();
        let (send, mut recv) = conn.accept_bi().await.unwrap();
        // Every byte read (and so acknowledged), no answer ever.
        let got = recv.read_to_end(8 << 20).await.map(|b| b.len());
        let reason = conn.closed().await;
        let _ = closed_tx.send((got, reason.to_string())).await;
        drop(send);
        hostile
    });
    let client = unregistered_client().await;
    // Small, so the verdict's wait (the miner's own allowance for the body,
    // 30 s plus a second per 64 KiB, plus 10 s) is short.
    let data = bytes(16 << 10, 5);
    let (id, _) = shard_id_and_outboard(&data);
    let put = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        client.put_shard(&addr, id, &data, None),
    )
    .await
    .expect("the put waited for good on a miner that never answers");
    let e = put.unwrap_err();
    assert!(matches!(e, Error::Peer { .. }), "{e:?}");
    assert!(e.to_string().contains("gave no verdict"), "{e}");
    // The peer saw its connection closed, after it had read the whole body.
    let (got, reason) = tokio::time::timeout(std::time::Duration::from_secs(30), closed_rx.recv())
        .await
        .expect("the stalled connection was left open")
        .unwrap();
    assert!(got.unwrap() > data.len(), "the body did not arrive whole");
    assert!(reason.contains("stalled"), "{reason}");
    server.await.unwrap();
}

/// A peer's refusal carries a message of its own choosing, and that text
/// travels into logs, the API's errors and an operator's terminal (a pin
/// short of miners names why each missed). It arrives with every control
/// character, terminal escape sequences among them, replaced and cut to a
/// bounded length, whatever the peer sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_refusal_cannot_drive_a_terminal_or_flood_an_error() {
    use cairn_node::net::frames::{ReadFrame, read_frame, write_frame};
    let hostile = loopback_endpoint(iroh::SecretKey::generate()).await;
    let addr = loopback_addr(&hostile);
    let server = tokio::spawn(async move {
        let conn = hostile.accept().await.unwrap().await.unwrap();
        let peer = conn.remote_id();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let asked = read_frame(&mut recv, 1 << 20, &peer).await.unwrap();
        assert!(matches!(asked, ReadFrame::Body(_)), "{asked:?}");
        let message = format!(
            "refused: \u{1b}]0;owned\u{7}\u{1b}[2J\r\nfake line {}",
            "x".repeat(8_000)
        );
        let reply = Response::Error {
            code: ErrorCode::Busy,
            message,
        };
        write_frame(&mut send, &reply.encode(), &peer)
            .await
            .unwrap();
        let _ = send.finish();
        let _ = conn.closed().await;
        hostile
    });
    let client = unregistered_client().await;
    let e = client.info(&addr).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{e:?}"
    );
    let shown = e.to_string();
    assert!(
        !shown.chars().any(char::is_control),
        "control characters reached the error: {:?}",
        shown.chars().take(300).collect::<String>()
    );
    assert!(
        shown.contains("refused: ?]0;owned??[2J??fake line"),
        "{shown}"
    );
    assert!(shown.len() < 400, "{} bytes of peer text kept", shown.len());
    drop(client);
    server.abort();
}
