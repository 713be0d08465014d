//! A miner that cheats in one of several ways, for the validator's tests.
//!
//! `cheater MODE --data-dir DIR` runs a normal `cairn` node whose challenge
//! answers are replaced:
//! - `hash-only`: answers with hashes in place of the sampled bytes (what a
//!   miner keeping only the hash tree could send);
//! - `replay`: answers every challenge on a shard with its first proof;
//! - `other-shard`: proves with the bytes of another shard it holds;
//! - `stall`: holds the stream open past the deadline;
//! - `silent`: hangs up on every challenge (a miner that lost the data and
//!   hopes silence costs less than a wrong proof);
//! - `reconstruct`: keeps only its outboards; at challenge time fetches the
//!   sampled groups of k other shards of the same segment from their holders
//!   (ranged `GetShard`, with a grant if `DIR/grant` holds a token) and
//!   rebuilds its own groups position by position (Reed-Solomon works byte
//!   by byte across a segment's shards). Needs the dataset's CID in
//!   `DIR/cid`;
//! - `relay`: forwards each challenge to a colluding node (its node id in
//!   `DIR/colluder`) and passes on whatever comes back.
//!
//! Storage, puts and gets stay honest, so only the challenges can tell.
//! After every challenge the cheater writes what it cost it to
//! `DIR/cheat-stats.json`: answers, bytes fetched from others, fetches
//! refused, and milliseconds per answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cairn_erasure::{Decoder, Encoder, Params};
use cairn_node::config::Config;
use cairn_node::datasets::Datasets;
use cairn_node::net::Client;
use cairn_node::sdnotify::Notifier;
use cairn_node::server::HeldShards;
use cairn_node::{Node, NodeId, Prover, ProverAction};
use cairn_proof::{Challenge, GROUP_LEN, ReadAt, ShardId, group_range, outboard_len};
use cairn_proto::{Cid, Grant};

/// What cheating cost, written after every challenge.
#[derive(Debug, Default, serde::Serialize)]
struct Stats {
    answers: u64,
    bytes_fetched: u64,
    refused: u64,
    ms: Vec<f64>,
}

/// The node's parts a cheater uses once it runs.
struct Parts {
    client: Arc<Client>,
    datasets: Arc<Datasets>,
    me: NodeId,
}

/// A prover that cheats in one way.
struct Cheater {
    mode: String,
    dir: PathBuf,
    replay: Mutex<HashMap<ShardId, Vec<u8>>>,
    parts: Arc<OnceLock<Parts>>,
    stats: Arc<Mutex<Stats>>,
}

impl Cheater {
    fn later(
        &self,
        f: impl std::future::Future<Output = (ProverAction, u64, bool)> + Send + 'static,
    ) -> ProverAction {
        let stats = Arc::clone(&self.stats);
        let path = self.dir.join("cheat-stats.json");
        ProverAction::Later(Box::pin(async move {
            let started = Instant::now();
            let (action, fetched, refused) = f.await;
            let mut s = stats.lock().expect("lock");
            s.answers += 1;
            s.bytes_fetched += fetched;
            s.refused += u64::from(refused);
            s.ms.push(started.elapsed().as_secs_f64() * 1e3);
            let _ = std::fs::write(&path, serde_json::to_vec(&*s).unwrap_or_default());
            action
        }))
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }
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
                let mut p = vec![cairn_proof::PROOF_VERSION];
                p.extend_from_slice(&[0u8; 32]);
                for g in ch.sampled_chunks() {
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
            "silent" => ProverAction::Hangup,
            "reconstruct" => {
                let (Some(parts), Ok(outboard)) = (self.parts.get(), shards.outboard(&ch.shard_id))
                else {
                    return ProverAction::NotFound;
                };
                let cid = self.read("cid").and_then(|c| c.parse::<Cid>().ok());
                let grant = self.read("grant").and_then(|t| Grant::from_token(&t).ok());
                let (client, datasets, me) = (
                    Arc::clone(&parts.client),
                    Arc::clone(&parts.datasets),
                    parts.me,
                );
                let ch = *ch;
                self.later(async move {
                    let Some(cid) = cid else {
                        return (ProverAction::NotFound, 0, false);
                    };
                    match reconstruct(&ch, &outboard, cid, &client, &datasets, me, grant).await {
                        Ok((proof, fetched)) => (ProverAction::Reply(proof), fetched, false),
                        Err((fetched, why)) => {
                            tracing::info!(%why, "reconstruct failed");
                            (ProverAction::NotFound, fetched, true)
                        }
                    }
                })
            }
            "relay" => {
                let colluder = self.read("colluder").and_then(|c| c.parse::<NodeId>().ok());
                let (Some(parts), Some(colluder)) = (self.parts.get(), colluder) else {
                    return ProverAction::NotFound;
                };
                let (client, datasets) = (Arc::clone(&parts.client), Arc::clone(&parts.datasets));
                let ch = *ch;
                self.later(async move {
                    let miners = datasets.registered_miners().await.unwrap_or_default();
                    let Some(m) = miners.iter().find(|m| m.node_id == colluder) else {
                        return (ProverAction::NotFound, 0, true);
                    };
                    match client.challenge(&m.endpoint_addr(), &ch).await {
                        Ok(p) => {
                            let n = p.len() as u64;
                            (ProverAction::Reply(p), n, false)
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "the colluder did not answer");
                            (ProverAction::NotFound, 0, true)
                        }
                    }
                })
            }
            _ => match honest {
                Ok(p) => ProverAction::Reply(p),
                Err(_) => ProverAction::NotFound,
            },
        }
    }
}

/// Groups of a shard held in memory, by index.
struct SparseShard(HashMap<u64, Vec<u8>>, u64);

impl ReadAt for SparseShard {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let g = offset / GROUP_LEN as u64;
        let start = group_range(self.1, g).start;
        let bytes = self
            .0
            .get(&g)
            .ok_or_else(|| std::io::Error::other("group not fetched"))?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    }
}

/// Rebuilds the sampled groups of `ch`'s shard from k other shards of its
/// segment, then proves. Returns the proof and the bytes fetched, or the
/// bytes fetched and why it failed.
async fn reconstruct(
    ch: &Challenge,
    outboard: &[u8],
    cid: Cid,
    client: &Client,
    datasets: &Datasets,
    me: NodeId,
    grant: Option<Grant>,
) -> Result<(Vec<u8>, u64), (u64, String)> {
    let ds = datasets.open(cid).await.map_err(|e| (0, e.to_string()))?;
    let m = &ds.manifest;
    let (k, total) = (usize::from(m.data_shards), m.total_shards());
    let (s, i) = m
        .segments
        .iter()
        .enumerate()
        .find_map(|(s, seg)| Some((s, seg.shards.iter().position(|x| *x == ch.shard_id)?)))
        .ok_or((0, "shard not in the dataset".to_string()))?;
    let peers: Vec<(usize, NodeId)> = (0..total)
        .filter(|j| *j != i)
        .filter_map(|j| Some((j, ds.placement.holder(s, j, total)?)))
        .filter(|(_, n)| *n != me)
        .take(k)
        .collect();
    if peers.len() < k {
        return Err((0, "fewer than k other holders".into()));
    }
    let mut fetched = 0u64;
    let mut groups = HashMap::new();
    for g in ch.sampled_groups() {
        let r = group_range(ch.shard_len, g);
        let w = (r.end - r.start) as usize;
        let mut windows = Vec::with_capacity(k);
        for (j, holder) in &peers {
            let id = m.segments[s].shards[*j];
            let got = client
                .get_shard_granted(
                    &ds.addr(holder),
                    id,
                    r.start,
                    w as u64,
                    Some(ch.shard_len),
                    grant.as_ref(),
                )
                .await
                .map_err(|e| (fetched, e.to_string()))?;
            fetched += got.bytes.len() as u64 + outboard_len(ch.shard_len);
            windows.push((*j, got.bytes));
        }
        let params =
            Params::new(k, total - k, k * GROUP_LEN).map_err(|e| (fetched, e.to_string()))?;
        let mut decoder = Decoder::new(params).map_err(|e| (fetched, e.to_string()))?;
        decoder.begin(k * w).map_err(|e| (fetched, e.to_string()))?;
        for (j, bytes) in &windows {
            let slot = decoder.slot(*j).map_err(|e| (fetched, e.to_string()))?;
            slot.copy_from_slice(bytes);
        }
        let data = decoder
            .finish()
            .map_err(|e| (fetched, e.to_string()))?
            .to_vec();
        let mine = if i < k {
            data[i * w..(i + 1) * w].to_vec()
        } else {
            let mut encoder = Encoder::new(params).map_err(|e| (fetched, e.to_string()))?;
            encoder
                .encode(&data)
                .map_err(|e| (fetched, e.to_string()))?
                .shard(i)
                .to_vec()
        };
        groups.insert(g, mine);
    }
    let proof = cairn_proof::prove(ch, &SparseShard(groups, ch.shard_len), outboard)
        .map_err(|e| (fetched, e.to_string()))?;
    Ok((proof, fetched))
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
    config.data_dir = dir.clone();
    cairn_node::logging::init("info", "terminal");
    let parts = Arc::new(OnceLock::new());
    let prover = Arc::new(Cheater {
        mode,
        dir,
        replay: Mutex::default(),
        parts: Arc::clone(&parts),
        stats: Arc::default(),
    });
    tokio::runtime::Runtime::new()?.block_on(async {
        let notifier = Arc::new(Notifier::from_env());
        let node = Node::builder(config).prover(prover).start().await?;
        let _ = parts.set(Parts {
            client: Arc::clone(node.client()),
            datasets: Arc::clone(node.datasets()),
            me: node.node_id(),
        });
        node.start_background(Arc::clone(&notifier));
        notifier.ready("cheating");
        cairn_node::node::wait_for_signal().await;
        node.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
