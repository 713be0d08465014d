//! kill -9 of a miner in the middle of writes, 50 times over.
//!
//! Each round starts the real daemon, waits for its reconcile of the previous
//! crash, checks the store, writes some shards and kills the process at a
//! random point: inside a shard body, right after the last byte (while the
//! miner hashes, fsyncs, renames and commits), or between requests.

use std::collections::BTreeMap;

use cairn_node::config::Role;
use cairn_proof::{ShardId, shard_id_and_outboard};
use cairn_testkit::bytes;
use cairn_testkit::net::*;

const ROUNDS: u64 = 50;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// After reconcile: counters equal the disk, no orphans, no temporaries,
/// every acknowledged shard is there, and everything served matches its id.
async fn check_store(
    d: &Daemon,
    client: &cairn_node::net::Client,
    acked: &BTreeMap<ShardId, Vec<u8>>,
    round: u64,
) {
    let addr = d.addr().await;
    let info = client.info(&addr).await.unwrap();
    let inventory = client.inventory_all(&addr).await.unwrap();
    let (disk, names) = shard_files(&d.data_dir);
    assert!(
        inventory
            .iter()
            .all(|e| e.state == cairn_proto::ShardState::Present),
        "round {round}: lost shards after kill -9"
    );
    let mut listed: Vec<String> = inventory.iter().map(|e| e.id.to_hex()).collect();
    listed.sort();
    assert_eq!(
        names, listed,
        "round {round}: files on disk differ from the records (orphans?)"
    );
    assert_eq!(
        info.used, disk,
        "round {round}: used-space counter differs from the disk"
    );
    assert_eq!(
        info.shards,
        inventory.len() as u64,
        "round {round}: shard counter"
    );
    assert!(
        temp_files(&d.data_dir).is_empty(),
        "round {round}: temporaries left"
    );
    for id in acked.keys() {
        assert!(
            listed.contains(&id.to_hex()),
            "round {round}: acknowledged shard {id} missing"
        );
    }
    for e in &inventory {
        // The client verifies every group against the id as it streams.
        let r = client
            .get_shard(&addr, e.id, 0, u64::MAX, Some(e.len))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "round {round}: shard {} served wrong or not at all: {err}",
                    e.id
                )
            });
        assert_eq!(*blake3::hash(&r.bytes).as_bytes(), e.id.0);
        if let Some(orig) = acked.get(&e.id) {
            assert_eq!(&r.bytes, orig);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_writes_leaves_a_consistent_store() {
    let net = TestNet::new();
    let miner = net.init("miner", "miner", &["--capacity", "4GiB"]);
    let (client, _) = net.client(Role::Client).await;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut acked: BTreeMap<ShardId, Vec<u8>> = BTreeMap::new();
    let env = [("CAIRN_STORAGE_SCRUB_RATE", "0")];
    let mut kinds = [0u32; 3];
    let (mut orphans, mut temporaries) = (0u64, 0u64);

    for round in 0..ROUNDS {
        let mut d = Daemon::start(&miner, &env);
        let status = d.wait_reconciled();
        let (o, t) = reconcile_counts(&status);
        orphans += o;
        temporaries += t;
        check_store(&d, &client, &acked, round).await;
        let addr = d.addr().await;

        let complete = rng.below(3);
        for _ in 0..complete {
            let data = bytes(1 + rng.below(1 << 20) as usize, rng.next());
            let (id, _) = shard_id_and_outboard(&data);
            client.put_shard(&addr, id, &data, None).await.unwrap();
            acked.insert(id, data);
        }
        let data = bytes(64 * 1024 + rng.below(2 << 20) as usize, rng.next());
        let (id, _) = shard_id_and_outboard(&data);
        let mut put = client
            .begin_put(&addr, id, data.len() as u64, None)
            .await
            .unwrap();
        let kind = rng.below(3);
        kinds[kind as usize] += 1;
        match kind {
            0 => {
                // inside the body
                let cut = 1 + rng.below(data.len() as u64 - 1) as usize;
                put.write(&data[..cut]).await.unwrap();
                d.kill9();
            }
            1 => {
                // every byte sent: the miner is hashing, syncing, renaming or committing
                put.write(&data).await.unwrap();
                let finish = tokio::spawn(put.finish());
                d.kill9();
                // Close our side at once instead of waiting out the idle timeout.
                client.forget(&d.node_id).await;
                if finish.await.unwrap().is_ok() {
                    acked.insert(id, data);
                }
            }
            _ => {
                // between requests
                put.write(&data).await.unwrap();
                put.finish().await.unwrap();
                acked.insert(id, data);
                d.kill9();
            }
        }
        client.forget(&d.node_id).await;
    }
    let mut d = Daemon::start(&miner, &env);
    let status = d.wait_reconciled();
    check_store(&d, &client, &acked, ROUNDS).await;
    let (o, t) = reconcile_counts(&status);
    println!(
        "{ROUNDS} kills: {} inside a body, {} during commit, {} between requests; {} shards acknowledged; \
         reconcile removed {} orphan files and {} temporaries in all",
        kinds[0],
        kinds[1],
        kinds[2],
        acked.len(),
        orphans + o,
        temporaries + t
    );
    assert!(
        temporaries + t > 0,
        "no kill landed inside a body: the test did not exercise recovery"
    );
}

/// Parses "reconciled: N orphans, M temporaries removed" from the daemon's status.
fn reconcile_counts(status: &str) -> (u64, u64) {
    let num_before = |word: &str| -> u64 {
        let i = status.find(word).unwrap_or(0);
        status[..i]
            .split_whitespace()
            .last()
            .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
            .unwrap_or(0)
    };
    (num_before(" orphans"), num_before(" temporaries"))
}
