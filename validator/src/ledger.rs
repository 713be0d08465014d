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

use std::collections::{HashMap, HashSet, VecDeque};

use cairn_api::{MinerReport, ValidatorReport};
use cairn_node::NodeId;
use cairn_node::registry::{Member, WeightEntry};
use cairn_proof::ShardId;
use cairn_proto::wire::{MAX_VERDICTS, Verdict, VerdictOutcome, VerdictReport};
use cairn_proto::{Cid, Manifest, Placement, Role};
use rand::{Rng, RngExt};

use crate::deadline::LinkEstimate;
use crate::score::{Outcome, REASKS, Reputation, weights};

/// Power of several choices: a challenge picks among this many random
/// shards of a miner the one with the most bytes unchecked for the longest.
const CHOICES: usize = 8;
/// A challenge whose record never came stops counting as out after two
/// deadline caps and this long: an attempt is a connect (10 s at most) and
/// a deadline, so only an attempt that went wrong (a panic) runs past it.
const IN_FLIGHT_SLACK_MS: u64 = 15_000;
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

/// A challenge out to a miner.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Its [`Due::seq`].
    seq: u64,
    /// Given up on at this time (ms) should its record never come.
    until_ms: u64,
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
    /// The challenge out to it (its [`Due::seq`]) until it is recorded, or
    /// until the time (ms) given should its record never come: one at a
    /// time, so the proofs the validator asks for never share the miner's
    /// uplink with each other, and one attempt's end (a dropped
    /// connection) cannot take others with it.
    in_flight: Option<InFlight>,
    /// The gap (ms) to wait after the answer to the challenge out, should it
    /// come after `next_allowed`: drawn when the challenge went out, so a
    /// slow answer does not make the next challenge's time predictable.
    gap_after_answer_ms: u64,
    last_latency_ms: Option<f64>,
    /// Everything it holds is queued for repair already (silent past grace).
    repair_queued: bool,
    /// An unanswered challenge being asked again (see [`crate::score`]).
    contained: Option<Contained>,
    /// Its link, as learned from passed challenges.
    link: LinkEstimate,
    /// Length of its last passed proof.
    last_proof_len: Option<usize>,
    /// Its last challenges and how they ended, oldest first (at most
    /// [`MAX_VERDICTS`]): what it is told when it asks.
    verdicts: VecDeque<Verdict>,
}

impl MinerState {
    /// `out` goes to this miner; `gap_after_answer_ms` is waited after its
    /// answer should that come after the budget's gap.
    fn send_out(&mut self, out: InFlight, gap_after_answer_ms: u64) {
        self.in_flight = Some(out);
        self.gap_after_answer_ms = gap_after_answer_ms;
    }
}

/// A challenge that went unanswered, to be asked again.
#[derive(Debug, Clone)]
struct Contained {
    assignment: Assignment,
    /// Attempts so far (the first ask included).
    attempts: u8,
    /// When to ask again (ms).
    retry_at: u64,
}

/// What the ledger needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// Challenges per second to any one miner.
    pub per_miner_per_sec: f64,
    /// Seconds a miner may stay silent before its shards are rebuilt elsewhere.
    pub grace_secs: u64,
    /// The first re-ask of an unanswered challenge comes this long after it
    /// (then 4x, 16x).
    pub reask_secs: f64,
    /// The longest deadline, and the deadline of a miner not yet measured (ms).
    pub deadline_cap_ms: u64,
    /// Samples per challenge.
    pub samples: u16,
}

/// A challenge to send: to whom, on which shard, and which attempt it is
/// (1: a fresh challenge; 2 and up: re-asks of an unanswered one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub node: NodeId,
    pub assignment: Assignment,
    pub attempt: u8,
    /// Which challenge this is (unique in this ledger; 0 for none): a
    /// record of an older one is not taken for it.
    pub seq: u64,
}

/// What one attempt at a challenge gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// The proof verified; how the link behaved.
    Pass {
        rtt_ms: Option<f64>,
        proof_len: usize,
        /// From the proof's first byte to its last.
        transfer_ms: f64,
        /// From sending the challenge to the last byte.
        latency_ms: f64,
    },
    WrongProof,
    Missing,
    /// Deadline passed, stream or connection dropped, or no connection.
    NoAnswer,
}

/// How long an attempt took against its deadline, for the miner's verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timing {
    /// From sending the challenge to the answer; none without an answer.
    pub latency_ms: Option<f64>,
    pub deadline_ms: u64,
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
    /// The next challenge's [`Due::seq`].
    next_seq: u64,
    /// Hotkeys with a disqualified node: a new node under one starts
    /// disqualified.
    disqualified_hotkeys: HashSet<String>,
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
            next_seq: 1,
            disqualified_hotkeys: HashSet::new(),
        }
    }

    /// Takes back reputations kept from an earlier run.
    pub fn restore(&mut self, reputations: impl IntoIterator<Item = (NodeId, Reputation)>) {
        for (node, rep) in reputations {
            if rep.disqualified && !rep.hotkey.is_empty() {
                self.disqualified_hotkeys.insert(rep.hotkey.clone());
            }
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

    /// The registry's members as last read. A miner seen under a new hotkey
    /// starts vetting again; one under a disqualified hotkey is disqualified.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = Member>) {
        self.members = members.into_iter().map(|m| (m.node_id, m)).collect();
        for m in self.members.values().filter(|m| m.role == Role::Miner) {
            let state = self.miners.entry(m.node_id).or_default();
            state.reputation.under_hotkey(&m.hotkey);
            if self.disqualified_hotkeys.contains(&m.hotkey) {
                state.reputation.disqualified = true;
            }
        }
    }

    /// Whether `node` passed its vetting, as of `now_secs`.
    pub fn is_vetted(&self, node: &NodeId, now_secs: u64) -> bool {
        self.miners
            .get(node)
            .is_some_and(|m| m.reputation.vetted(now_secs))
    }

    /// The registered miners that passed their vetting.
    pub fn vetted(&self, now_secs: u64) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self
            .members
            .values()
            .filter(|m| m.role == Role::Miner && self.is_vetted(&m.node_id, now_secs))
            .map(|m| m.node_id)
            .collect();
        v.sort_by_key(|n| *n.as_bytes());
        v
    }

    /// How long `node` has for a challenge whose proof is `proof_len` bytes,
    /// over a connection whose round trip is `rtt_now_ms` now.
    pub fn deadline_ms(&self, node: &NodeId, proof_len: usize, rtt_now_ms: Option<f64>) -> u64 {
        let cap = self.config.deadline_cap_ms;
        self.miners.get(node).map_or(cap, |m| {
            m.link
                .deadline_ms(proof_len, self.config.samples, cap, rtt_now_ms)
        })
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
            if m.contained
                .as_ref()
                .is_some_and(|c| c.assignment.cid == *cid)
            {
                m.contained = None;
            }
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

    /// The next challenge to send. A contained miner whose re-ask is due
    /// comes first, with the same shard; otherwise miners in turn, each
    /// within its per-miner budget (gaps drawn at random, so a miner cannot
    /// tell when the next challenge comes), and among a few random shards of
    /// the miner the one with the most bytes unchecked for the longest. A
    /// contained miner is asked nothing else, and no miner is asked while a
    /// challenge to it is out.
    pub fn next_challenge(&mut self, now_ms: u64, rng: &mut impl Rng) -> Option<Due> {
        let mut reask: Vec<(u64, NodeId)> = self
            .miners
            .iter()
            .filter_map(|(n, m)| {
                let c = m.contained.as_ref()?;
                (c.retry_at <= now_ms).then_some((c.retry_at, *n))
            })
            .collect();
        reask.sort_by_key(|(t, n)| (*t, *n.as_bytes()));
        let out_until = now_ms
            .saturating_add(2 * self.config.deadline_cap_ms)
            .saturating_add(IN_FLIGHT_SLACK_MS);
        let out = InFlight {
            seq: self.next_seq,
            until_ms: out_until,
        };
        if let Some((_, node)) = reask.first() {
            let gap_after_answer = self.gap_ms(rng);
            let m = self.miners.get_mut(node)?;
            let c = m.contained.as_mut()?;
            // Not due again until this attempt is recorded, or given up.
            c.retry_at = out_until;
            let due = Due {
                node: *node,
                assignment: c.assignment.clone(),
                attempt: c.attempts + 1,
                seq: out.seq,
            };
            m.send_out(out, gap_after_answer);
            self.next_seq += 1;
            return Some(due);
        }
        let mut ready: Vec<NodeId> = self
            .miners
            .iter()
            .filter(|(_, m)| {
                !m.assignments.is_empty()
                    && m.contained.is_none()
                    && m.next_allowed.is_none_or(|t| t <= now_ms)
                    && m.in_flight.is_none_or(|f| f.until_ms <= now_ms)
            })
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            return None;
        }
        ready.sort_by_key(|n| *n.as_bytes());
        self.cursor = self.cursor.wrapping_add(1);
        let node = ready[self.cursor % ready.len()];
        let gap = self.gap_ms(rng);
        let gap_after_answer = self.gap_ms(rng);
        let m = self.miners.get_mut(&node)?;
        m.next_allowed = Some(now_ms.saturating_add(gap));
        m.send_out(out, gap_after_answer);
        self.next_seq += 1;
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
        Some(Due {
            node,
            assignment: m.assignments[i].clone(),
            attempt: 1,
            seq: out.seq,
        })
    }

    /// Records one attempt. An answer is scored (and ends containment); a
    /// missing answer contains the miner and schedules a re-ask, until the
    /// re-asks run out and the silence is scored as a failure. Queues
    /// repairs: the one shard after a failure, everything the miner holds
    /// once it has been silent for `grace_secs`.
    pub fn record(&mut self, due: &Due, answer: Answer, why: &str, now_ms: u64) {
        self.record_timed(due, answer, why, Timing::default(), now_ms);
    }

    /// [`Ledger::record`], keeping how long the answer took against its
    /// deadline in the miner's verdicts.
    pub fn record_timed(
        &mut self,
        due: &Due,
        answer: Answer,
        why: &str,
        timing: Timing,
        now_ms: u64,
    ) {
        let now = now_ms / 1000;
        let grace = self.config.grace_secs;
        let reask_ms = (self.config.reask_secs.max(0.0) * 1e3) as u64;
        let node = due.node;
        let a = &due.assignment;
        let m = self.miners.entry(node).or_default();
        match m.in_flight {
            // A newer challenge is out (this one ran past its time): its
            // record is the one that counts.
            Some(out) if out.seq != due.seq => return,
            Some(_) => {
                m.in_flight = None;
                if m.next_allowed.is_some_and(|t| t <= now_ms) {
                    m.next_allowed = Some(now_ms.saturating_add(m.gap_after_answer_ms));
                }
            }
            None => {}
        }
        let job = |x: &Assignment| RepairJob {
            cid: x.cid,
            segment: x.segment,
            index: x.index,
            holder: node,
        };
        let mut queue: Vec<RepairJob> = Vec::new();
        if m.verdicts.len() >= MAX_VERDICTS {
            m.verdicts.pop_front();
        }
        m.verdicts.push_back(Verdict {
            at_ms: now_ms,
            shard: a.id,
            outcome: match answer {
                Answer::Pass { .. } => VerdictOutcome::Pass,
                Answer::WrongProof => VerdictOutcome::WrongProof,
                Answer::Missing => VerdictOutcome::Missing,
                Answer::NoAnswer => VerdictOutcome::Timeout,
            },
            attempt: due.attempt,
            latency_ms: match answer {
                Answer::Pass { latency_ms, .. } => Some(latency_ms),
                _ => timing.latency_ms,
            }
            .map(|ms| ms.clamp(0.0, f64::from(u32::MAX)).round() as u32),
            deadline_ms: timing.deadline_ms.min(u64::from(u32::MAX)) as u32,
            reason: why.to_string(),
        });
        let scored = match answer {
            Answer::Pass {
                rtt_ms,
                proof_len,
                transfer_ms,
                latency_ms,
            } => {
                m.link.observe(rtt_ms, proof_len, transfer_ms);
                m.last_proof_len = Some(proof_len);
                m.last_latency_ms = Some(latency_ms);
                m.verified.insert(a.id, a.len);
                Some(Outcome::Pass)
            }
            Answer::WrongProof | Answer::Missing => {
                m.verified.remove(&a.id);
                queue.push(job(a));
                Some(if answer == Answer::Missing {
                    Outcome::Missing
                } else {
                    Outcome::WrongProof
                })
            }
            Answer::NoAnswer => {
                m.link.missed();
                m.reputation.silence(now);
                let attempts = due.attempt;
                if attempts > REASKS {
                    m.verified.remove(&a.id);
                    queue.push(job(a));
                    Some(Outcome::Silent)
                } else {
                    // 1, 4, 16 re-ask periods after the attempt
                    let wait = reask_ms.saturating_mul(1 << (2 * u32::from(attempts - 1)));
                    m.contained = Some(Contained {
                        assignment: a.clone(),
                        attempts,
                        retry_at: now_ms.saturating_add(wait),
                    });
                    None
                }
            }
        };
        if let Some(outcome) = scored {
            self.challenges += 1;
            m.contained = None;
            m.reputation.record(outcome, why, now);
            if m.reputation.disqualified && !m.reputation.hotkey.is_empty() {
                self.disqualified_hotkeys
                    .insert(m.reputation.hotkey.clone());
            }
        }
        // Gone past the grace period: everything it held is rebuilt elsewhere.
        if answer == Answer::NoAnswer && m.reputation.silent_for(now) >= grace && !m.repair_queued {
            m.repair_queued = true;
            queue.extend(m.assignments.iter().map(job));
        }
        for r in queue {
            if !self.repairs.contains(&r) {
                self.repairs.push_back(r);
            }
        }
    }

    /// A gap between a miner's challenges (ms): exponential with the
    /// configured mean, at most 5x it.
    fn gap_ms(&self, rng: &mut impl Rng) -> u64 {
        let mean_ms = 1000.0 / self.config.per_miner_per_sec.max(1e-6);
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        (-u.ln() * mean_ms).min(5.0 * mean_ms) as u64
    }

    /// Gives up on a challenge that was never sent (it could not be made):
    /// its miner may be asked again.
    pub fn abandon(&mut self, due: &Due) {
        if let Some(m) = self.miners.get_mut(&due.node)
            && m.in_flight.is_some_and(|out| out.seq == due.seq)
        {
            m.in_flight = None;
        }
    }

    /// Whether `node` is contained (an unanswered challenge pending).
    pub fn is_contained(&self, node: &NodeId) -> bool {
        self.miners.get(node).is_some_and(|m| m.contained.is_some())
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

    /// The weight last set for `node` (0 if none).
    fn weight_of(&self, node: &NodeId) -> u16 {
        self.last_weights
            .iter()
            .find(|w| w.node_id == *node)
            .map(|w| w.weight)
            .unwrap_or(0)
    }

    /// What `node` is told when it asks how it is judged: its standing and
    /// its last verdicts. Only ever about the node that asks (the server
    /// passes the QUIC peer).
    pub fn verdicts(&self, node: &NodeId, now_secs: u64) -> VerdictReport {
        let Some(m) = self.miners.get(node) else {
            return VerdictReport::default();
        };
        let r = &m.reputation;
        VerdictReport {
            score_ppm: (r.score().clamp(0.0, 1.0) * 1e6).round() as u32,
            weight: self.weight_of(node),
            disqualified: r.disqualified(),
            contained: m.contained.is_some(),
            vetted: r.vetted(now_secs),
            audits: r.audits,
            passes: r.passes,
            failures: r.failures,
            timeouts: r.timeouts,
            shards_assigned: m.assignments.len() as u64,
            verified_bytes: m.verified.values().sum(),
            verdicts: m.verdicts.iter().cloned().collect(),
        }
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
                weight: self.weight_of(node),
                last_latency_ms: m.last_latency_ms,
                last_failures: m.reputation.last_failures.clone(),
                deadline_ms: m.link.deadline_ms(
                    m.last_proof_len.unwrap_or(64 << 10),
                    self.config.samples,
                    self.config.deadline_cap_ms,
                    None,
                ),
                contained: m.contained.is_some(),
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
            reask_secs: 60.0,
            deadline_cap_ms: 10_000,
            samples: 44,
        });
        l.set_members((0..3).map(member));
        let (cid, m, p) = dataset(4, 3);
        l.admissible(&cid, &m).unwrap();
        l.install(cid, &m, &p);
        l
    }

    fn due(node: NodeId, a: &Assignment, attempt: u8) -> Due {
        Due {
            node,
            assignment: a.clone(),
            attempt,
            seq: 0,
        }
    }

    fn pass() -> Answer {
        Answer::Pass {
            rtt_ms: Some(1.0),
            proof_len: 60_000,
            transfer_ms: 1.0,
            latency_ms: 5.0,
        }
    }

    /// Plays a miner that never answers: takes every due challenge of `n`
    /// up to `until_ms`, in steps of one second; returns the attempts.
    fn silent_until(l: &mut Ledger, n: NodeId, from_ms: u64, until_ms: u64) -> Vec<Due> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut asked = Vec::new();
        let mut t = from_ms;
        while t <= until_ms {
            while let Some(d) = l.next_challenge(t, &mut rng) {
                if d.node == n {
                    l.record(&d, Answer::NoAnswer, "no answer", t);
                    asked.push(d);
                } else {
                    l.record(&d, pass(), "", t);
                }
            }
            t += 1000;
        }
        asked
    }

    #[test]
    fn a_miner_is_told_its_own_verdicts_and_nobody_elses() {
        let mut l = ledger(100_000);
        let a = l.assignments(&node(0))[0].clone();
        let b = l.assignments(&node(1))[0].clone();
        let timing = Timing {
            latency_ms: Some(1500.4),
            deadline_ms: 2000,
        };
        l.record_timed(&due(node(0), &a, 1), pass(), "", timing, T0);
        l.record_timed(
            &due(node(0), &a, 1),
            Answer::WrongProof,
            "wrong proof for shard x: chunk 3 does not hash",
            timing,
            T0 + 1000,
        );
        l.record_timed(
            &due(node(0), &a, 1),
            Answer::NoAnswer,
            "no answer within 2s",
            Timing {
                latency_ms: None,
                deadline_ms: 2000,
            },
            T0 + 2000,
        );
        l.record(&due(node(1), &b, 1), Answer::Missing, "shard missing", T0);
        let v = l.verdicts(&node(0), T0 / 1000);
        let outcomes: Vec<_> = v.verdicts.iter().map(|d| d.outcome).collect();
        assert_eq!(
            outcomes,
            [
                VerdictOutcome::Pass,
                VerdictOutcome::WrongProof,
                VerdictOutcome::Timeout
            ]
        );
        assert!(v.verdicts.iter().all(|d| d.shard == a.id));
        // a pass carries its own latency; the others what the shell measured
        assert_eq!(v.verdicts[0].latency_ms, Some(5));
        assert_eq!(v.verdicts[1].latency_ms, Some(1500));
        assert_eq!(v.verdicts[2].latency_ms, None);
        assert_eq!(v.verdicts[1].deadline_ms, 2000);
        assert!(v.verdicts[1].reason.contains("chunk 3"));
        assert_eq!((v.audits, v.passes, v.failures), (2, 1, 1));
        assert!(v.contained, "the unanswered challenge is being asked again");
        assert!(v.score_ppm < 1_000_000);
        // miner 1 sees its one verdict; a stranger sees nothing
        let w = l.verdicts(&node(1), T0 / 1000);
        assert_eq!(w.verdicts.len(), 1);
        assert_eq!(w.verdicts[0].outcome, VerdictOutcome::Missing);
        assert_eq!(l.verdicts(&node(42), T0 / 1000), VerdictReport::default());
        // only the last MAX_VERDICTS are kept
        for i in 0..(MAX_VERDICTS as u64 + 10) {
            l.record(&due(node(1), &b, 1), pass(), "", T0 + 10_000 + i);
        }
        let w = l.verdicts(&node(1), T0 / 1000);
        assert_eq!(w.verdicts.len(), MAX_VERDICTS);
        assert_eq!(
            w.verdicts.last().unwrap().at_ms,
            T0 + 10_009 + MAX_VERDICTS as u64
        );
    }

    #[test]
    fn a_miner_is_asked_one_challenge_at_a_time() {
        let mut l = ledger(100_000);
        l.config.per_miner_per_sec = 1000.0;
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let take_all = |l: &mut Ledger, t: u64, rng: &mut rand::rngs::StdRng| {
            std::iter::from_fn(|| l.next_challenge(t, rng)).collect::<Vec<_>>()
        };
        // Each miner once, then nothing while all three are out, however
        // long past their budgets.
        let out = take_all(&mut l, T0, &mut rng);
        let mut nodes: Vec<_> = out.iter().map(|d| d.node).collect();
        nodes.sort_by_key(|n| *n.as_bytes());
        let mut all = [node(0), node(1), node(2)];
        all.sort_by_key(|n| *n.as_bytes());
        assert_eq!(nodes, all, "{out:#?}");
        assert!(take_all(&mut l, T0 + 5_000, &mut rng).is_empty());
        // A recorded answer frees its miner, and only it; so does an
        // abandoned challenge.
        let of = |n: NodeId| out.iter().find(|d| d.node == n).unwrap().clone();
        l.record(&of(node(0)), pass(), "", T0 + 5_000);
        l.abandon(&of(node(1)));
        let next: Vec<_> = take_all(&mut l, T0 + 5_000, &mut rng)
            .iter()
            .map(|d| d.node)
            .collect();
        assert_eq!(next.len(), 2, "{next:?}");
        assert!(next.contains(&node(0)) && next.contains(&node(1)));
        // A record that never comes stops holding its miner after two
        // deadline caps and 15 s (a connect and a deadline fit inside)...
        assert!(take_all(&mut l, T0 + 34_999, &mut rng).is_empty());
        let late = take_all(&mut l, T0 + 35_000, &mut rng);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].node, node(2));
        // ...and should it come after all, it is not taken for the newer
        // challenge: that one is still out, and nothing is scored.
        l.record(&of(node(2)), Answer::NoAnswer, "no answer", T0 + 35_000);
        assert!(!l.is_contained(&node(2)));
        assert!(
            take_all(&mut l, T0 + 36_000, &mut rng)
                .iter()
                .all(|d| d.node != node(2))
        );
        // A contained miner's re-ask is one challenge out too, and one whose
        // record never comes is asked again once its time is up.
        l.record(
            &late[0],
            Answer::NoAnswer,
            "no answer within 1s",
            T0 + 36_000,
        );
        let re: Vec<_> = take_all(&mut l, T0 + 96_000, &mut rng)
            .into_iter()
            .filter(|d| d.node == node(2))
            .collect();
        assert_eq!(re.len(), 1, "{re:#?}");
        assert_eq!(re[0].attempt, 2);
        assert!(
            take_all(&mut l, T0 + 130_999, &mut rng)
                .iter()
                .all(|d| d.node != node(2))
        );
        let again: Vec<_> = take_all(&mut l, T0 + 131_000, &mut rng)
            .into_iter()
            .filter(|d| d.node == node(2))
            .collect();
        assert_eq!(again.len(), 1, "{again:#?}");
        assert_eq!(
            (again[0].attempt, &again[0].assignment),
            (2, &re[0].assignment)
        );
    }

    #[test]
    fn a_slow_answer_is_followed_by_a_fresh_gap_not_at_once() {
        // A miner whose answers take longer than its budget's gaps: the
        // next challenge comes a random gap after the answer, not with it.
        let mut l = ledger(100_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut waits = Vec::new();
        let mut t = T0;
        for _ in 0..200 {
            let d = loop {
                match l.next_challenge(t, &mut rng) {
                    Some(d) if d.node == node(0) => break d,
                    Some(d) => l.record(&d, pass(), "", t),
                    None => t += 10,
                }
            };
            // answered 6 s later: past any gap (at most 5 s)
            t += 6_000;
            l.record(&d, pass(), "", t);
            let answered = t;
            loop {
                match l.next_challenge(t, &mut rng) {
                    Some(d) if d.node == node(0) => {
                        waits.push(t - answered);
                        l.abandon(&d);
                        // put it back out for the loop above to find
                        l.miners.get_mut(&node(0)).unwrap().next_allowed = None;
                        break;
                    }
                    Some(d) => l.record(&d, pass(), "", t),
                    None => t += 10,
                }
            }
        }
        let mean = waits.iter().sum::<u64>() as f64 / waits.len() as f64;
        let at_once = waits.iter().filter(|w| **w <= 10).count();
        // exponential, mean 1 s: about 1% within 10 ms
        assert!((700.0..1300.0).contains(&mean), "{mean}");
        assert!(at_once < 10, "{at_once} of {} at once", waits.len());
    }

    #[test]
    fn a_silent_miner_is_asked_the_same_shard_three_more_times_then_fails_once() {
        let mut l = ledger(100_000);
        let before = l.report();
        // the first ask and three re-asks, all on one shard, at 1, 4 and 16
        // minutes after each other: 21 minutes in all
        let asked = silent_until(&mut l, node(0), T0, T0 + 1259 * 1000);
        assert_eq!(asked.len(), 3, "{asked:#?}");
        let mut asked = asked;
        // then a fresh challenge, a random gap (at most 5 s) later
        asked.extend(silent_until(
            &mut l,
            node(0),
            T0 + 1260 * 1000,
            T0 + 1265 * 1000,
        ));
        assert_eq!(asked.len(), 5, "then a fresh challenge: {asked:#?}");
        assert_eq!(asked.pop().unwrap().attempt, 1);
        assert!(asked.iter().all(|d| d.assignment == asked[0].assignment));
        assert_eq!(
            asked.iter().map(|d| d.attempt).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let r = l.report();
        let m = |r: &ValidatorReport| {
            r.miners
                .iter()
                .find(|m| m.node_id == node(0).to_string())
                .cloned()
                .unwrap()
        };
        assert_eq!(m(&before).audits, 0);
        // scored exactly once, as a failure, and that shard queued for repair
        assert_eq!((m(&r).audits, m(&r).timeouts), (1, 1));
        assert_eq!(l.repairs_pending(), 1);
    }

    #[test]
    fn nothing_is_scored_while_contained_and_an_answer_ends_it() {
        let mut l = ledger(100_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let first = loop {
            let d = l.next_challenge(T0, &mut rng).unwrap();
            if d.node == node(1) {
                break d;
            }
            l.record(&d, pass(), "", T0);
        };
        l.record(&first, Answer::NoAnswer, "deadline", T0);
        assert!(l.is_contained(&node(1)));
        // nothing more is asked of it until the re-ask is due
        for t in (T0..T0 + 59_000).step_by(1000) {
            while let Some(d) = l.next_challenge(t, &mut rng) {
                assert_ne!(
                    d.node,
                    node(1),
                    "a contained miner was asked something else"
                );
                l.record(&d, pass(), "", t);
            }
        }
        let re = loop {
            let d = l.next_challenge(T0 + 60_000, &mut rng).unwrap();
            if d.node == node(1) {
                break d;
            }
            l.record(&d, pass(), "", T0 + 60_000);
        };
        assert_eq!(
            (re.assignment.clone(), re.attempt),
            (first.assignment.clone(), 2)
        );
        l.record(&re, pass(), "", T0 + 60_000);
        assert!(!l.is_contained(&node(1)));
        let r = l.report();
        let m = r
            .miners
            .iter()
            .find(|m| m.node_id == node(1).to_string())
            .unwrap();
        assert_eq!(
            (m.audits, m.failures, m.timeouts),
            (1, 0, 0),
            "a router reboot costs nothing"
        );
    }

    #[test]
    fn a_silent_miner_is_queued_for_repair_exactly_at_grace() {
        let grace = 600;
        let mut l = ledger(grace);
        let held = l.assignments(&node(0)).len();
        // Silent from T0: nothing but its contained shard queued before grace.
        silent_until(&mut l, node(0), T0, T0 + (grace - 1) * 1000);
        let before_grace = l.repairs_pending();
        assert!(before_grace <= 1, "{before_grace}");
        silent_until(
            &mut l,
            node(0),
            T0 + grace * 1000,
            T0 + (grace + 960) * 1000,
        );
        assert!(
            l.repairs_pending() >= held,
            "every shard it holds, once silent past grace"
        );
        let queued: Vec<RepairJob> = std::iter::from_fn(|| l.take_repair_batch())
            .flatten()
            .collect();
        assert!(queued.iter().all(|j| j.holder == node(0)));
        // Further silence does not queue them again.
        silent_until(
            &mut l,
            node(0),
            T0 + (grace + 961) * 1000,
            T0 + 3 * grace * 1000,
        );
        assert!(l.repairs_pending() <= 1);
    }

    #[test]
    fn a_wrong_proof_queues_that_one_shard() {
        let mut l = ledger(3600);
        let a = l.assignments(&node(2))[1].clone();
        l.record(&due(node(2), &a, 1), Answer::WrongProof, "bad", T0);
        l.record(&due(node(2), &a, 1), Answer::Missing, "gone", T0 + 1000);
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
    fn deadlines_follow_the_link_once_measured() {
        let mut l = ledger(3600);
        let a = l.assignments(&node(0))[0].clone();
        assert_eq!(l.deadline_ms(&node(0), 60_000, None), 10_000);
        l.record(&due(node(0), &a, 1), pass(), "", T0);
        let d = l.deadline_ms(&node(0), 60_000, None);
        assert!(d < 1_000, "{d}");
    }

    #[test]
    fn vetting_needs_passes_over_days_and_a_new_hotkey_starts_over() {
        let mut l = ledger(1 << 40);
        let secs = |ms: u64| ms / 1000;
        let a = l.assignments(&node(0))[0].clone();
        let mut t = T0;
        for _ in 0..crate::score::VETTED_PASSES {
            l.record(&due(node(0), &a, 1), pass(), "", t);
            t += 60_000;
        }
        assert!(
            !l.is_vetted(&node(0), secs(t)),
            "passes, but not yet the days"
        );
        let later = T0 + crate::score::VETTING_SECS * 1000;
        assert!(l.is_vetted(&node(0), secs(later)));
        assert_eq!(l.vetted(secs(later)), vec![node(0)]);
        // the same node under another hotkey starts again
        let mut moved = member(0);
        moved.hotkey = "another".into();
        l.set_members([moved, member(1), member(2)]);
        assert!(!l.is_vetted(&node(0), secs(later)));
    }

    #[test]
    fn a_disqualified_hotkey_stays_disqualified_under_a_new_node() {
        let mut l = ledger(3600);
        let a = l.assignments(&node(2))[0].clone();
        for k in 0..40 {
            l.record(&due(node(2), &a, 1), Answer::WrongProof, "bad", T0 + k);
        }
        let w = l.weights();
        assert_eq!(w.iter().find(|e| e.node_id == node(2)).unwrap().weight, 0);
        // its operator brings a new node under the same hotkey
        let mut again = member(5);
        again.hotkey = member(2).hotkey;
        l.set_members([member(0), member(1), again]);
        assert!(
            l.report()
                .miners
                .iter()
                .any(|m| m.node_id == node(5).to_string() && m.disqualified)
        );
    }

    #[test]
    fn weights_follow_scores_and_verified_bytes() {
        let mut l = ledger(3600);
        let mut t = T0;
        // Every miner passes every shard once: the same verified bytes.
        for i in 0..3 {
            for a in l.assignments(&node(i)).to_vec() {
                l.record(&due(node(i), &a, 1), pass(), "", t);
                t += 1;
            }
        }
        let w = l.weights();
        let weight = |i: u8| w.iter().find(|e| e.node_id == node(i)).unwrap().weight;
        assert_eq!(weight(0), weight(1));
        // Miner 1 stays silent once (after re-asks): lower; miner 2 fails until disqualified: zero.
        let a1 = l.assignments(&node(1))[0].clone();
        l.record(&due(node(1), &a1, 4), Answer::NoAnswer, "silent", t);
        l.record(&due(node(1), &a1, 1), pass(), "", t + 1);
        let a2 = l.assignments(&node(2))[0].clone();
        for k in 0..40 {
            l.record(&due(node(2), &a2, 1), Answer::WrongProof, "bad", t + k);
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
        l.record(&due(node(0), &a, 1), pass(), "", T0);
        l.record(&due(node(0), &a, 1), Answer::WrongProof, "bad", T0 + 1);
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
        // At one instant each miner is asked once; then gaps are random,
        // averaging the budget (1 per second), at most 5 s.
        let mut n = 0;
        // (Each answered at once: the budget, not a challenge out, holds
        // them back.)
        while let Some(d) = l.next_challenge(T0, &mut rng) {
            assert!(
                seen.insert(d.node),
                "{} asked twice within its budget",
                d.node
            );
            l.record(&d, pass(), "", T0);
            n += 1;
        }
        assert_eq!(n, 3);
        assert!(l.next_challenge(T0, &mut rng).is_none());
        let mut asked = 0u32;
        for t in (T0 + 1..=T0 + 600_000).step_by(10) {
            while let Some(d) = l.next_challenge(t, &mut rng) {
                l.record(&d, pass(), "", t);
                asked += 1;
            }
        }
        // three miners for 600 s at one a second each: about 1800
        assert!((1600..2000).contains(&asked), "{asked}");
    }
}
