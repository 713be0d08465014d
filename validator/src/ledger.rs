//! The validator's ledger: a state machine with no I/O and no clock of its
//! own. It knows which miner must hold which shard (assignments, from the
//! placements it audits), picks the next challenge within each miner's
//! budget, turns a challenge's outcome into a score, verified bytes and
//! repair jobs, and computes weights and the scoreboard.
//!
//! Every method that depends on time takes `now` in milliseconds, so tests
//! drive it on a virtual clock: a miner silent for `grace_secs` is a few
//! lines, not a minute of waiting. The async loops in [`crate::service`] are
//! the thin shell that sends the challenges, fetches the shards and sets the
//! weights.

use std::collections::{HashMap, VecDeque};

use cairn_api::{MinerReport, ValidatorReport};
use cairn_node::NodeId;
use cairn_node::registry::{Member, WeightEntry};
use cairn_proof::ShardId;
use cairn_proto::{Cid, Manifest, Placement, Role};
use rand::{Rng, RngExt};

use crate::score::{Outcome, Reputation, weights};

/// Power of several choices: a challenge picks among this many random
/// shards of a miner the one with the most bytes unchecked for the longest.
const CHOICES: usize = 8;
/// Most shards one dataset may ask the validator to audit (a 1 TiB dataset
/// of 8 MiB segments, k + m = 6, is about 800,000).
pub const MAX_ASSIGNMENTS_PER_DATASET: usize = 1 << 20;
/// Most shards audited at once, over all datasets.
pub const MAX_ASSIGNMENTS: usize = 4 << 20;

/// A shard a miner must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub cid: Cid,
    pub segment: usize,
    pub index: usize,
    pub id: ShardId,
    pub len: u64,
    /// When it was last challenged (ms).
    pub last_checked: Option<u64>,
}

/// A shard to rebuild: shard `index` of segment `segment` of `cid`, which
/// `holder` lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairJob {
    pub cid: Cid,
    pub segment: usize,
    pub index: usize,
    pub holder: NodeId,
}

/// A miner as the validator sees it.
#[derive(Debug, Clone, Default)]
struct MinerState {
    reputation: Reputation,
    assignments: Vec<Assignment>,
    /// Shards that passed their last challenge: id -> length.
    verified: HashMap<ShardId, u64>,
    /// No challenge before this time (ms): the per-miner budget.
    next_allowed: Option<u64>,
    last_latency_ms: Option<f64>,
    /// Everything it holds is queued for repair already (silent past grace).
    repair_queued: bool,
}

/// What the ledger needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// Challenges per second to any one miner.
    pub per_miner_per_sec: f64,
    /// Seconds a miner may stay silent before its shards are rebuilt elsewhere.
    pub grace_secs: u64,
}

/// The validator's whole state.
#[derive(Debug)]
pub struct Ledger {
    config: LedgerConfig,
    miners: HashMap<NodeId, MinerState>,
    members: HashMap<NodeId, Member>,
    /// The datasets audited, and their owners.
    owners: HashMap<Cid, NodeId>,
    assignments: usize,
    repairs: VecDeque<RepairJob>,
    repairs_done: u64,
    repairs_failed: u64,
    challenges: u64,
    last_weights: Vec<WeightEntry>,
    cursor: usize,
}

impl Ledger {
    pub fn new(config: LedgerConfig) -> Self {
        Ledger {
            config,
            miners: HashMap::new(),
            members: HashMap::new(),
            owners: HashMap::new(),
            assignments: 0,
            repairs: VecDeque::new(),
            repairs_done: 0,
            repairs_failed: 0,
            challenges: 0,
            last_weights: Vec::new(),
            cursor: 0,
        }
    }

    /// Takes back reputations kept from an earlier run.
    pub fn restore(&mut self, reputations: impl IntoIterator<Item = (NodeId, Reputation)>) {
        for (node, rep) in reputations {
            self.miners.entry(node).or_default().reputation = rep;
        }
    }

    /// Every miner's reputation, to keep across restarts.
    pub fn reputations(&self) -> Vec<(NodeId, Reputation)> {
        self.miners
            .iter()
            .map(|(n, m)| (*n, m.reputation.clone()))
            .collect()
    }

    /// The registry's members as last read.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = Member>) {
        self.members = members.into_iter().map(|m| (m.node_id, m)).collect();
    }

    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// The registered miners.
    pub fn miners(&self) -> Vec<Member> {
        self.members
            .values()
            .filter(|m| m.role == Role::Miner)
            .cloned()
            .collect()
    }

    /// Whether a dataset of this shape may be taken in: its shards within
    /// the per-dataset cap, and all shards audited within the total cap.
    pub fn admissible(&self, cid: &Cid, manifest: &Manifest) -> Result<(), String> {
        let shards = manifest
            .segments
            .len()
            .saturating_mul(manifest.total_shards());
        if shards > MAX_ASSIGNMENTS_PER_DATASET {
            return Err(format!(
                "{cid} has {shards} shards; a dataset may have at most {MAX_ASSIGNMENTS_PER_DATASET} audited"
            ));
        }
        let held = if self.owners.contains_key(cid) {
            self.miners
                .values()
                .map(|m| m.assignments.iter().filter(|a| a.cid == *cid).count())
                .sum()
        } else {
            0
        };
        if self.assignments - held + shards > MAX_ASSIGNMENTS {
            return Err(format!(
                "auditing {cid} would take this validator past {MAX_ASSIGNMENTS} shards"
            ));
        }
        Ok(())
    }

    /// The owner of an audited dataset.
    pub fn owner(&self, cid: &Cid) -> Option<NodeId> {
        self.owners.get(cid).copied()
    }

    /// Replaces a dataset's assignments with those of its (newer) placement.
    pub fn install(&mut self, cid: Cid, manifest: &Manifest, placement: &Placement) {
        self.remove_assignments(&cid);
        self.owners.insert(cid, manifest.owner);
        let total = manifest.total_shards();
        let k = u64::from(manifest.data_shards);
        for (s, seg) in manifest.segments.iter().enumerate() {
            let shard_len = seg.len.div_ceil(k);
            for i in 0..total {
                if let Some(node) = placement.holder(s, i, total) {
                    let m = self.miners.entry(node).or_default();
                    m.repair_queued = false;
                    m.assignments.push(Assignment {
                        cid,
                        segment: s,
                        index: i,
                        id: seg.shards[i],
                        len: shard_len,
                        last_checked: None,
                    });
                    self.assignments += 1;
                }
            }
        }
    }

    fn remove_assignments(&mut self, cid: &Cid) {
        for m in self.miners.values_mut() {
            let before = m.assignments.len();
            let mut gone = Vec::new();
            m.assignments.retain(|a| {
                let keep = a.cid != *cid;
                if !keep {
                    gone.push(a.id);
                }
                keep
            });
            self.assignments -= before - m.assignments.len();
            // A shard of another dataset with the same id keeps counting.
            for id in gone {
                if !m.assignments.iter().any(|a| a.id == id) {
                    m.verified.remove(&id);
                }
            }
        }
    }

    /// The owner unpinned `cid`: stop auditing it (and forget the repairs
    /// it had queued). Only the owner may; a dataset not audited is fine.
    pub fn release(&mut self, peer: &NodeId, cid: &Cid) -> Result<bool, String> {
        match self.owners.get(cid) {
            None => Ok(false),
            Some(owner) if owner != peer => Err(format!(
                "{cid} belongs to node {owner}; only its owner may release it"
            )),
            Some(_) => {
                self.remove_assignments(cid);
                self.owners.remove(cid);
                self.repairs.retain(|r| r.cid != *cid);
                Ok(true)
            }
        }
    }

    /// Shards assigned to `node`.
    pub fn assignments(&self, node: &NodeId) -> &[Assignment] {
        self.miners
            .get(node)
            .map(|m| m.assignments.as_slice())
            .unwrap_or_default()
    }

    /// The next (miner, shard) to challenge: miners in turn, each within its
    /// per-miner budget; among a few random shards of the miner, the one
    /// with the most bytes unchecked for the longest.
    pub fn next_challenge(
        &mut self,
        now_ms: u64,
        rng: &mut impl Rng,
    ) -> Option<(NodeId, Assignment)> {
        let mut ready: Vec<NodeId> = self
            .miners
            .iter()
            .filter(|(_, m)| {
                !m.assignments.is_empty() && m.next_allowed.is_none_or(|t| t <= now_ms)
            })
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            return None;
        }
        ready.sort_by_key(|n| *n.as_bytes());
        self.cursor = self.cursor.wrapping_add(1);
        let node = ready[self.cursor % ready.len()];
        let gap_ms = (1000.0 / self.config.per_miner_per_sec.max(1e-6)) as u64;
        let m = self.miners.get_mut(&node)?;
        m.next_allowed = Some(now_ms.saturating_add(gap_ms));
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..CHOICES {
            let i = rng.random_range(0..m.assignments.len());
            let a = &m.assignments[i];
            let age_secs = a
                .last_checked
                .map(|t| now_ms.saturating_sub(t) as f64 / 1e3)
                .unwrap_or(1e9);
            let w = (a.len.max(1) as f64) * (age_secs + 1.0);
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, i));
            }
        }
        let (_, i) = best?;
        m.assignments[i].last_checked = Some(now_ms);
        Some((node, m.assignments[i].clone()))
    }

    /// Records how a challenge ended; queues repairs: the one shard after a
    /// wrong proof or a missing answer, everything the miner holds once it
    /// has been silent for `grace_secs`.
    pub fn record(
        &mut self,
        node: NodeId,
        a: &Assignment,
        outcome: Outcome,
        why: &str,
        latency_ms: f64,
        now_ms: u64,
    ) {
        self.challenges += 1;
        let now = now_ms / 1000;
        let grace = self.config.grace_secs;
        let m = self.miners.entry(node).or_default();
        m.reputation.record(outcome, why, now);
        m.last_latency_ms = Some(latency_ms);
        let mut queue: Vec<RepairJob> = Vec::new();
        let job = |x: &Assignment| RepairJob {
            cid: x.cid,
            segment: x.segment,
            index: x.index,
            holder: node,
        };
        match outcome {
            Outcome::Pass => {
                m.verified.insert(a.id, a.len);
            }
            Outcome::WrongProof | Outcome::Missing => {
                m.verified.remove(&a.id);
                queue.push(job(a));
            }
            Outcome::Timeout | Outcome::Unreachable => {
                m.verified.remove(&a.id);
                // Gone past the grace period: everything it held is rebuilt elsewhere.
                if m.reputation.silent_for(now) >= grace && !m.repair_queued {
                    m.repair_queued = true;
                    queue.extend(m.assignments.iter().map(job));
                }
            }
        }
        for r in queue {
            if !self.repairs.contains(&r) {
                self.repairs.push_back(r);
            }
        }
    }

    /// Repair jobs waiting.
    pub fn repairs_pending(&self) -> usize {
        self.repairs.len()
    }

    /// Takes every queued job of the segment at the head of the queue.
    pub fn take_repair_batch(&mut self) -> Option<Vec<RepairJob>> {
        let first = self.repairs.pop_front()?;
        let mut batch = vec![first];
        let mut rest = VecDeque::with_capacity(self.repairs.len());
        for r in self.repairs.drain(..) {
            if r.cid == first.cid && r.segment == first.segment {
                batch.push(r);
            } else {
                rest.push_back(r);
            }
        }
        self.repairs = rest;
        Some(batch)
    }

    /// A batch whose repair failed goes back to the end of the queue.
    pub fn repair_failed(&mut self, batch: Vec<RepairJob>) {
        self.repairs_failed += 1;
        for r in batch {
            if !self.repairs.contains(&r) {
                self.repairs.push_back(r);
            }
        }
    }

    pub fn repaired(&mut self, shards: usize) {
        self.repairs_done += shards as u64;
    }

    /// Weights over the registered miners: reputation x verified bytes,
    /// zero when disqualified; kept for the scoreboard.
    pub fn weights(&mut self) -> Vec<WeightEntry> {
        let mut miners = self.miners();
        miners.sort_by_key(|m| *m.node_id.as_bytes());
        let rows: Vec<(f64, bool, u64)> = miners
            .iter()
            .map(|m| match self.miners.get(&m.node_id) {
                Some(ms) => (
                    ms.reputation.score(),
                    ms.reputation.disqualified(),
                    ms.verified.values().sum(),
                ),
                None => (1.0, false, 0),
            })
            .collect();
        let w = weights(&rows);
        let entries: Vec<WeightEntry> = miners
            .iter()
            .zip(w)
            .zip(&rows)
            .map(|((m, weight), (score, dq, bytes))| WeightEntry {
                node_id: m.node_id,
                hotkey: m.hotkey.clone(),
                weight,
                details: serde_json::json!({
                    "score": score,
                    "disqualified": dq,
                    "verified_bytes": bytes,
                    "last_failures": self.miners.get(&m.node_id).map(|x| x.reputation.last_failures.clone()).unwrap_or_default(),
                }),
            })
            .collect();
        self.last_weights = entries.clone();
        entries
    }

    /// The whole scoreboard.
    pub fn report(&self) -> ValidatorReport {
        let mut miners: Vec<MinerReport> = self
            .miners
            .iter()
            .map(|(node, m)| MinerReport {
                node_id: node.to_string(),
                hotkey: self
                    .members
                    .get(node)
                    .map(|x| x.hotkey.clone())
                    .unwrap_or_default(),
                score: m.reputation.score(),
                disqualified: m.reputation.disqualified(),
                audits: m.reputation.audits,
                passes: m.reputation.passes,
                failures: m.reputation.failures,
                timeouts: m.reputation.timeouts,
                shards_assigned: m.assignments.len(),
                verified_bytes: m.verified.values().sum(),
                weight: self
                    .last_weights
                    .iter()
                    .find(|w| w.node_id == *node)
                    .map(|w| w.weight)
                    .unwrap_or(0),
                last_latency_ms: m.last_latency_ms,
                last_failures: m.reputation.last_failures.clone(),
            })
            .collect();
        miners.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        ValidatorReport {
            datasets: self.owners.len(),
            challenges: self.challenges,
            repairs_done: self.repairs_done,
            repairs_pending: self.repairs.len(),
            repairs_failed: self.repairs_failed,
            miners,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::{SecretKey, SegmentRecord};
    use rand::SeedableRng;

    const T0: u64 = 1_700_000_000_000;

    fn node(i: u8) -> NodeId {
        SecretKey::from_bytes(&[i; 32]).public()
    }

    fn member(i: u8) -> Member {
        Member {
            node_id: node(i),
            role: Role::Miner,
            addrs: vec![],
            relay: None,
            hotkey: format!("hk{i}"),
            uid: None,
            stake: 0,
            validator_permit: false,
            capacity: 0,
            free: 1 << 30,
            api: None,
        }
    }

    /// A dataset of `segments` segments, k = 2, m = 1, every shard of
    /// segment s on miners (s, s+1, s+2) mod `miners`.
    fn dataset(segments: usize, miners: u8) -> (Cid, Manifest, Placement) {
        let manifest = Manifest {
            owner: node(99),
            data_shards: 2,
            parity_shards: 1,
            segment_size: 128,
            total_len: 128 * segments as u64,
            single_file: true,
            entries: vec![],
            segments: (0..segments)
                .map(|s| SegmentRecord {
                    len: 128,
                    blake3: [s as u8; 32],
                    shards: (0..3).map(|i| ShardId([(s * 3 + i) as u8; 32])).collect(),
                })
                .collect(),
        };
        let holders: Vec<Option<NodeId>> = (0..segments)
            .flat_map(|s| (0..3).map(move |i| Some(node(((s + i) % miners as usize) as u8))))
            .collect();
        let key = SecretKey::from_bytes(&[99; 32]);
        let cid = Cid([7; 32]);
        let placement = Placement::signed(cid, 1, key.public(), &holders, &key);
        (cid, manifest, placement)
    }

    fn ledger(grace_secs: u64) -> Ledger {
        let mut l = Ledger::new(LedgerConfig {
            per_miner_per_sec: 1.0,
            grace_secs,
        });
        l.set_members((0..3).map(member));
        let (cid, m, p) = dataset(4, 3);
        l.admissible(&cid, &m).unwrap();
        l.install(cid, &m, &p);
        l
    }

    #[test]
    fn a_silent_miner_is_queued_for_repair_exactly_at_grace() {
        let grace = 600;
        let mut l = ledger(grace);
        let a = l.assignments(&node(0))[0].clone();
        let held = l.assignments(&node(0)).len();
        // Silent from T0; every challenge until grace - 1 s queues nothing.
        for s in [0, 1, grace / 2, grace - 1] {
            l.record(
                node(0),
                &a,
                Outcome::Timeout,
                "no answer",
                10_000.0,
                T0 + s * 1000,
            );
            assert_eq!(l.repairs_pending(), 0, "queued after {s} s of silence");
        }
        l.record(
            node(0),
            &a,
            Outcome::Unreachable,
            "gone",
            0.0,
            T0 + grace * 1000,
        );
        assert_eq!(l.repairs_pending(), held, "every shard it holds, at grace");
        let queued: Vec<RepairJob> = std::iter::from_fn(|| l.take_repair_batch())
            .flatten()
            .collect();
        assert!(queued.iter().all(|j| j.holder == node(0)));
        // Further silence does not queue them again.
        l.record(
            node(0),
            &a,
            Outcome::Timeout,
            "no answer",
            0.0,
            T0 + 2 * grace * 1000,
        );
        assert_eq!(l.repairs_pending(), 0);
    }

    #[test]
    fn an_answer_resets_the_silence() {
        let mut l = ledger(100);
        let a = l.assignments(&node(1))[0].clone();
        l.record(node(1), &a, Outcome::Timeout, "", 0.0, T0);
        l.record(node(1), &a, Outcome::Pass, "", 5.0, T0 + 99_000);
        l.record(node(1), &a, Outcome::Timeout, "", 0.0, T0 + 150_000);
        assert_eq!(l.repairs_pending(), 0, "silent for 50 s only");
    }

    #[test]
    fn a_wrong_proof_queues_that_one_shard() {
        let mut l = ledger(3600);
        let a = l.assignments(&node(2))[1].clone();
        l.record(node(2), &a, Outcome::WrongProof, "bad", 3.0, T0);
        l.record(node(2), &a, Outcome::Missing, "gone", 3.0, T0 + 1000);
        let batch = l.take_repair_batch().expect("queued");
        assert_eq!(
            batch,
            vec![RepairJob {
                cid: a.cid,
                segment: a.segment,
                index: a.index,
                holder: node(2),
            }]
        );
        assert!(l.take_repair_batch().is_none(), "queued once");
    }

    #[test]
    fn weights_follow_scores_and_verified_bytes() {
        let mut l = ledger(3600);
        let mut t = T0;
        // Every miner passes every shard once: the same verified bytes.
        for i in 0..3 {
            for a in l.assignments(&node(i)).to_vec() {
                l.record(node(i), &a, Outcome::Pass, "", 1.0, t);
                t += 1;
            }
        }
        let w = l.weights();
        let weight = |i: u8| w.iter().find(|e| e.node_id == node(i)).unwrap().weight;
        assert_eq!(weight(0), weight(1));
        // Miner 1 times out now and then: lower; miner 2 fails until disqualified: zero.
        let a1 = l.assignments(&node(1))[0].clone();
        l.record(node(1), &a1, Outcome::Timeout, "slow", 0.0, t);
        l.record(node(1), &a1, Outcome::Pass, "", 1.0, t + 1);
        let a2 = l.assignments(&node(2))[0].clone();
        for k in 0..40 {
            l.record(node(2), &a2, Outcome::WrongProof, "bad", 1.0, t + k);
        }
        let w = l.weights();
        let weight = |i: u8| w.iter().find(|e| e.node_id == node(i)).unwrap().weight;
        assert!(weight(0) > weight(1), "{w:?}");
        assert!(weight(1) > 0);
        assert_eq!(weight(2), 0, "a disqualified miner earns nothing");
        assert_eq!(
            l.report()
                .miners
                .iter()
                .find(|m| m.node_id == node(2).to_string())
                .unwrap()
                .weight,
            0
        );
    }

    #[test]
    fn only_the_owner_releases_a_dataset_and_then_nothing_of_it_is_audited() {
        let mut l = ledger(3600);
        let (cid, m, _) = dataset(4, 3);
        let a = l.assignments(&node(0))[0].clone();
        l.record(node(0), &a, Outcome::Pass, "", 1.0, T0);
        l.record(node(0), &a, Outcome::WrongProof, "bad", 1.0, T0 + 1);
        assert!(
            l.release(&node(0), &cid).is_err(),
            "a holder is not the owner"
        );
        assert_eq!(l.report().datasets, 1);
        assert!(l.release(&m.owner, &cid).unwrap());
        assert_eq!(l.report().datasets, 0);
        assert!(l.assignments(&node(0)).is_empty());
        assert_eq!(l.repairs_pending(), 0, "its repairs are dropped too");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert!(l.next_challenge(T0 + 10_000, &mut rng).is_none());
        assert!(!l.release(&m.owner, &cid).unwrap(), "idempotent");
    }

    #[test]
    fn a_dataset_over_the_caps_is_not_admissible() {
        let l = ledger(3600);
        let (cid, mut m, _) = dataset(1, 3);
        let seg = m.segments[0].clone();
        m.segments = vec![seg; MAX_ASSIGNMENTS_PER_DATASET / 3 + 1];
        let e = l.admissible(&cid, &m).unwrap_err();
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn challenges_keep_each_miners_budget_and_visit_every_miner() {
        let mut l = ledger(3600);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        // Within one second each miner is asked once (1 per second budget).
        let mut n = 0;
        while let Some((node, _)) = l.next_challenge(T0, &mut rng) {
            assert!(seen.insert(node), "{node} asked twice within its budget");
            n += 1;
        }
        assert_eq!(n, 3);
        assert!(l.next_challenge(T0 + 999, &mut rng).is_none());
        assert!(l.next_challenge(T0 + 1000, &mut rng).is_some());
    }
}
