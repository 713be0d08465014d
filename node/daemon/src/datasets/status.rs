//! The health of a dataset: every holder is asked which of its shards it
//! still has; the answer is counted per segment and per miner.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_api::{DatasetStatus, MinerStatus, SegmentStatus};
use cairn_proof::ShardId;
use tokio::task::JoinSet;

use super::{Dataset, Datasets, PROBE_TIMEOUT};
use crate::error::Result;
use cairn_proto::NodeId;

impl Datasets {
    /// Asks every holder which of its shards it still has.
    pub async fn status(&self, ds: &Dataset) -> Result<DatasetStatus> {
        let ctx = self;
        let m = &ds.manifest;
        let total = m.total_shards();
        let mut by_miner: HashMap<NodeId, Vec<(usize, usize)>> = HashMap::new();
        for s in 0..m.segments.len() {
            for i in 0..total {
                if let Some(n) = ds.placement.holder(s, i, total) {
                    by_miner.entry(n).or_default().push((s, i));
                }
            }
        }
        let mut set = JoinSet::new();
        for (node, places) in by_miner.clone() {
            let ids: Vec<ShardId> = places
                .iter()
                .map(|&(s, i)| m.segments[s].shards[i])
                .collect();
            let client = Arc::clone(&ctx.client);
            let addr = ds.addr(&node);
            set.spawn(async move {
                let r = tokio::time::timeout(PROBE_TIMEOUT * 2, client.has(&addr, &ids)).await;
                (node, r.ok().and_then(|r| r.ok()))
            });
        }
        let mut held: HashMap<(usize, usize), bool> = HashMap::new();
        let mut miners = Vec::new();
        while let Some(Ok((node, bits))) = set.join_next().await {
            let places = &by_miner[&node];
            let reachable = bits.is_some();
            let bits = bits.unwrap_or_else(|| vec![false; places.len()]);
            for (p, b) in places.iter().zip(&bits) {
                held.insert(*p, *b);
            }
            miners.push(MinerStatus {
                node_id: node.to_string(),
                reachable,
                shards_expected: places.len(),
                shards_held: bits.iter().filter(|b| **b).count(),
            });
        }
        miners.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let k = usize::from(m.data_shards);
        let mut segments = Vec::with_capacity(m.segments.len());
        let (mut healthy, mut degraded, mut lost) = (0, 0, 0);
        for s in 0..m.segments.len() {
            let shards: Vec<(String, bool)> = (0..total)
                .map(|i| match ds.placement.holder(s, i, total) {
                    Some(n) => (
                        n.fmt_short().to_string(),
                        held.get(&(s, i)).copied().unwrap_or(false),
                    ),
                    None => ("-".into(), false),
                })
                .collect();
            let alive = shards.iter().filter(|(_, b)| *b).count();
            if alive == total {
                healthy += 1;
            } else if alive >= k {
                degraded += 1;
            } else {
                lost += 1;
            }
            segments.push(SegmentStatus {
                index: s,
                alive,
                total,
                shards,
            });
        }
        Ok(DatasetStatus {
            cid: ds.cid.to_string(),
            bytes: m.total_len,
            data_shards: m.data_shards,
            parity_shards: m.parity_shards,
            segments,
            miners,
            healthy,
            degraded,
            lost,
            placement_version: ds.placement.version,
        })
    }
}
