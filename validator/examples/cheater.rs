//! A miner that cheats in one of several ways, for the validator's tests.
//!
//! `cheater MODE --data-dir DIR` runs a normal `cairn` node whose challenge
//! answers are replaced:
//! - `hash-only`: answers with hashes in place of the sampled bytes (what a
//!   miner keeping only the hash tree could send);
//! - `replay`: answers every challenge on a shard with its first proof;
//! - `other-shard`: proves with the bytes of another shard it holds;
//! - `stall`: never answers in time.
//!
//! Storage, puts and gets stay honest, so only the challenges can tell.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_node::config::Config;
use cairn_node::sdnotify::Notifier;
use cairn_node::server::HeldShards;
use cairn_node::{Node, Prover, ProverAction};
use cairn_proof::{Challenge, ShardId};

/// A prover that cheats in one way.
struct Cheater {
    mode: String,
    replay: Mutex<HashMap<ShardId, Vec<u8>>>,
}

impl Prover for Cheater {
    fn answer(
        &self,
        ch: &Challenge,
        shards: &dyn HeldShards,
        honest: Result<Vec<u8>, String>,
    ) -> ProverAction {
        match self.mode.as_str() {
            "hash-only" => {
                let mut p = vec![1u8];
                p.extend_from_slice(&[0u8; 32]);
                for g in ch.sampled_groups() {
                    p.extend_from_slice(blake3::hash(&g.to_le_bytes()).as_bytes());
                }
                ProverAction::Reply(p)
            }
            "replay" => {
                let Ok(proof) = honest else {
                    return ProverAction::NotFound;
                };
                let mut r = self.replay.lock().expect("lock");
                ProverAction::Reply(r.entry(ch.shard_id).or_insert(proof).clone())
            }
            "other-shard" => {
                let other = shards
                    .list(64)
                    .into_iter()
                    .find(|(id, len)| *id != ch.shard_id && *len == ch.shard_len);
                match other.map(|(id, _)| shards.prove(ch, &id)) {
                    Some(Ok(p)) => ProverAction::Reply(p),
                    _ => ProverAction::NotFound,
                }
            }
            "stall" => ProverAction::Stall(Duration::from_secs(120)),
            _ => match honest {
                Ok(p) => ProverAction::Reply(p),
                Err(_) => ProverAction::NotFound,
            },
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).cloned().unwrap_or_default();
    let dir = args
        .iter()
        .position(|a| a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: cheater MODE --data-dir DIR"))?;
    let mut config = Config::load(Some(&dir.join("node.toml")), std::env::vars())?;
    config.data_dir = dir;
    cairn_node::logging::init("info", "terminal");
    let prover = Arc::new(Cheater {
        mode,
        replay: Mutex::default(),
    });
    tokio::runtime::Runtime::new()?.block_on(async {
        let notifier = Arc::new(Notifier::from_env());
        let node = Node::builder(config).prover(prover).start().await?;
        node.start_background(Arc::clone(&notifier));
        notifier.ready("cheating");
        cairn_node::node::wait_for_signal().await;
        node.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
