//! The validator's loops: take datasets in for audit, challenge miners,
//! score them, repair what was lost, set weights.
//!
//! All state lives behind one mutex ([`State`]); every network round trip
//! happens outside it. Reputations and the audit set are persisted in the
//! node's RocksDB (`app` column family), so a restart keeps the history.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_erasure::{Decoder, Encoder};
use cairn_node::client::Client;
use cairn_node::config::Role;
use cairn_node::daemon::Node;
use cairn_node::datasets::{self, Dataset, DatasetContext, LiveMiner};
use cairn_node::manifest::{Cid, Placement};
use cairn_node::placement::{Candidate, capacity_weight, manifest_holders, rank};
use cairn_node::registry::{Member, Registry, WeightEntry};
use cairn_node::wire::ErrorCode;
use cairn_node::{EndpointAddr, NodeId};
use cairn_proof::{Challenge, ShardId};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::ValidatorConfig;
use crate::score::{Outcome, Reputation, weights};
use crate::{Error, Result};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A shard a miner must hold.
#[derive(Debug, Clone)]
struct Assignment {
    cid: Cid,
    segment: usize,
    index: usize,
    id: ShardId,
    len: u64,
    last_checked: Option<Instant>,
}

/// A miner as the validator sees it.
#[derive(Debug, Clone, Default)]
struct MinerState {
    reputation: Reputation,
    assignments: Vec<Assignment>,
    /// Shards that passed their last challenge: id -> length.
    verified: HashMap<ShardId, u64>,
    next_allowed: Option<Instant>,
    last_latency_ms: Option<f64>,
    repair_queued: bool,
}

/// Everything the loops share.
#[derive(Default)]
struct State {
    datasets: HashMap<Cid, Dataset>,
    miners: HashMap<NodeId, MinerState>,
    members: HashMap<NodeId, Member>,
    /// Shards to rebuild: (dataset, segment, shard index, holder that lost it).
    repairs: VecDeque<(Cid, usize, usize, NodeId)>,
    repairs_done: u64,
    repairs_failed: u64,
    challenges: u64,
    last_weights: Vec<WeightEntry>,
    cursor: usize,
    /// Miners that answered the last probe, and when (repairs reuse it
    /// for a few seconds instead of waiting on dead miners per segment).
    live: Option<(Instant, Vec<LiveMiner>)>,
}

/// What the scoreboard shows for one miner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerReport {
    pub node_id: String,
    pub hotkey: String,
    pub score: f64,
    pub disqualified: bool,
    pub audits: u64,
    pub passes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub shards_assigned: usize,
    pub verified_bytes: u64,
    pub weight: u16,
    pub last_latency_ms: Option<f64>,
    pub last_failures: Vec<String>,
}

/// A running validator.
pub struct Validator {
    pub node: Node,
    ctx: DatasetContext,
    config: ValidatorConfig,
    state: Arc<Mutex<State>>,
}

const AUDIT_PREFIX: &[u8] = b"audit/";
const LIVE_PROBE_REUSE: Duration = Duration::from_secs(10);
const REP_PREFIX: &[u8] = b"rep/";

impl Validator {
    /// Starts the node side (server, API) with the validator's hooks installed.
    pub async fn start(
        config: cairn_node::config::Config,
    ) -> Result<(Validator, mpsc::UnboundedReceiver<Cid>)> {
        let vconfig = ValidatorConfig::from_node_config(&config)?;
        let (audit_tx, audit_rx) = mpsc::unbounded_channel::<Cid>();
        let state: Arc<Mutex<State>> = Arc::default();
        let scores_state = Arc::clone(&state);
        let hooks = cairn_node::daemon::Hooks {
            audit: Some(Arc::new(move |_peer, cid| {
                audit_tx
                    .send(Cid(cid))
                    .map_err(|_| "the validator is shutting down".to_string())
            })),
            scores: Some(Arc::new(move || {
                serde_json::to_value(report(&scores_state.lock().expect("lock")))
                    .unwrap_or_default()
            })),
            prover: None,
        };
        let node = Node::start_with_hooks(config, hooks).await?;
        let ctx = node.dataset_context();
        let v = Validator {
            node,
            ctx,
            config: vconfig,
            state,
        };
        v.restore()?;
        Ok((v, audit_rx))
    }

    /// Reloads reputations and re-queues the audit set after a restart.
    fn restore(&self) -> Result<()> {
        let store = &self.node.state.store;
        let mut st = self.state.lock().expect("lock");
        for (k, v) in store.app_scan(REP_PREFIX)? {
            let Ok(id) = <[u8; 32]>::try_from(&k[REP_PREFIX.len()..]) else {
                continue;
            };
            if let (Ok(node), Ok(rep)) = (
                NodeId::from_bytes(&id),
                serde_json::from_slice::<Reputation>(&v),
            ) {
                st.miners.entry(node).or_default().reputation = rep;
            }
        }
        Ok(())
    }

    /// CIDs audited before the last restart.
    pub fn persisted_audits(&self) -> Vec<Cid> {
        self.node
            .state
            .store
            .app_scan(AUDIT_PREFIX)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, _)| <[u8; 32]>::try_from(&k[AUDIT_PREFIX.len()..]).ok().map(Cid))
            .collect()
    }

    /// Runs every loop until `shutdown` turns true.
    pub async fn run(
        self: Arc<Self>,
        mut audits: mpsc::UnboundedReceiver<Cid>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        for cid in self.persisted_audits() {
            let v = Arc::clone(&self);
            tokio::spawn(async move { v.admit(cid).await });
        }
        let intake = {
            let v = Arc::clone(&self);
            tokio::spawn(async move {
                while let Some(cid) = audits.recv().await {
                    let v = Arc::clone(&v);
                    tokio::spawn(async move { v.admit(cid).await });
                }
            })
        };
        let challenges = tokio::spawn(Arc::clone(&self).challenge_loop());
        let repairs = tokio::spawn(Arc::clone(&self).repair_loop());
        if !self.config.repair {
            repairs.abort();
        }
        let weights = tokio::spawn(Arc::clone(&self).weights_loop());
        let refresh = tokio::spawn(Arc::clone(&self).refresh_loop());
        let _ = shutdown.wait_for(|s| *s).await;
        for t in [intake, challenges, repairs, weights, refresh] {
            t.abort();
        }
        self.persist_reputations();
    }

    fn persist_reputations(&self) {
        let st = self.state.lock().expect("lock");
        for (node, m) in &st.miners {
            let mut key = REP_PREFIX.to_vec();
            key.extend_from_slice(node.as_bytes());
            let _ = self
                .node
                .state
                .store
                .app_put(&key, &serde_json::to_vec(&m.reputation).unwrap_or_default());
        }
    }

    async fn refresh_members(&self) -> Result<()> {
        let members = self.ctx.registry.members().await?;
        let mut st = self.state.lock().expect("lock");
        st.members = members.into_iter().map(|m| (m.node_id, m)).collect();
        Ok(())
    }

    /// Takes a dataset in for audit: fetch manifest and placement, check that
    /// the holders follow the placement rule, record the assignments.
    pub async fn admit(&self, cid: Cid) {
        if let Err(e) = self.admit_inner(cid).await {
            tracing::warn!(%cid, error = %e, "dataset not admitted for audit");
        }
    }

    async fn admit_inner(&self, cid: Cid) -> Result<()> {
        self.refresh_members().await?;
        let ds = datasets::open_dataset_fresh(&self.ctx, cid).await?;
        let members = self.state.lock().expect("lock").members.clone();
        let (ok, checked) = placement_rule_holds(&ds, &members);
        if checked > 0 && ok * 10 < checked * 9 {
            return Err(Error::Other(format!(
                "{cid}: only {ok} of {checked} shards sit where the placement rule puts them; refusing to audit a steered placement"
            )));
        }
        let mut key = AUDIT_PREFIX.to_vec();
        key.extend_from_slice(&cid.0);
        self.node
            .state
            .store
            .app_put(&key, &ds.placement.version.to_le_bytes())?;
        let mut st = self.state.lock().expect("lock");
        install_dataset(&mut st, ds);
        tracing::info!(%cid, "auditing dataset");
        Ok(())
    }

    /// Re-reads placements now and then (other validators repair too).
    async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(self.config.refresh_secs)).await;
            let cids: Vec<Cid> = self
                .state
                .lock()
                .expect("lock")
                .datasets
                .keys()
                .copied()
                .collect();
            for cid in cids {
                if let Ok(ds) = datasets::open_dataset_fresh(&self.ctx, cid).await {
                    let mut st = self.state.lock().expect("lock");
                    let newer = st
                        .datasets
                        .get(&cid)
                        .is_none_or(|old| ds.placement.version > old.placement.version);
                    if newer {
                        install_dataset(&mut st, ds);
                    }
                }
            }
        }
    }

    /// Picks the next (miner, shard) to challenge, honouring the per-miner budget.
    fn next_challenge(&self) -> Option<(NodeId, Assignment)> {
        let mut st = self.state.lock().expect("lock");
        let now = Instant::now();
        let mut miners: Vec<NodeId> = st
            .miners
            .iter()
            .filter(|(_, m)| !m.assignments.is_empty() && m.next_allowed.is_none_or(|t| t <= now))
            .map(|(n, _)| *n)
            .collect();
        if miners.is_empty() {
            return None;
        }
        miners.sort_by_key(|n| *n.as_bytes());
        st.cursor = st.cursor.wrapping_add(1);
        let node = miners[st.cursor % miners.len()];
        let gap = Duration::from_secs_f64(1.0 / self.config.per_miner_per_sec.max(1e-6));
        let m = st.miners.get_mut(&node).expect("listed");
        m.next_allowed = Some(now + gap);
        // Power of several choices: among a few random shards, the one with
        // the most bytes unchecked for the longest.
        let mut rng = rand::rng();
        let mut best: Option<(f64, usize)> = None;
        for _ in 0..8 {
            let i = rng.random_range(0..m.assignments.len());
            let a = &m.assignments[i];
            let age = a
                .last_checked
                .map(|t| now.duration_since(t).as_secs_f64())
                .unwrap_or(1e9);
            let w = (a.len.max(1) as f64) * (age + 1.0);
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, i));
            }
        }
        let (_, i) = best?;
        m.assignments[i].last_checked = Some(now);
        Some((node, m.assignments[i].clone()))
    }

    async fn challenge_loop(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight));
        let tick = Duration::from_secs_f64(1.0 / self.config.challenges_per_sec.max(1e-6));
        // An interval catches up on missed ticks, so rates above the timer's
        // 1 ms resolution are honoured (a sleep per challenge would cap them).
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut last_members = Instant::now() - Duration::from_secs(3600);
        loop {
            ticker.tick().await;
            if last_members.elapsed() > Duration::from_secs(15) {
                let _ = self.refresh_members().await;
                last_members = Instant::now();
            }
            let Some((node, a)) = self.next_challenge() else {
                continue;
            };
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let v = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                v.challenge_one(node, a).await;
            });
        }
    }

    /// One challenge, start to verdict.
    async fn challenge_one(&self, node: NodeId, a: Assignment) {
        let addr = self.addr(&node);
        let nonce: [u8; 32] = rand::random();
        let Ok(ch) = Challenge::new(a.id, a.len, nonce, self.config.samples) else {
            return;
        };
        let started = Instant::now();
        let deadline = Duration::from_secs(self.config.deadline_secs);
        let result = tokio::time::timeout(deadline, self.ctx.client.challenge(&addr, &ch)).await;
        let latency = started.elapsed();
        let (outcome, why) = match result {
            Err(_) => (
                Outcome::Timeout,
                format!("no answer within {deadline:?} (shard {})", a.id),
            ),
            Ok(Ok(proof)) => match cairn_proof::verify(&ch, &proof) {
                Ok(()) => (Outcome::Pass, String::new()),
                Err(e) => (
                    Outcome::WrongProof,
                    format!("wrong proof for shard {}: {e}", a.id),
                ),
            },
            Ok(Err(cairn_node::Error::Remote {
                code: ErrorCode::NotFound,
                ..
            })) => (Outcome::Missing, format!("shard {} missing", a.id)),
            Ok(Err(cairn_node::Error::Remote { code, message, .. })) => (
                Outcome::Timeout,
                format!("refused the challenge: {code}: {message}"),
            ),
            Ok(Err(e @ cairn_node::Error::BadReply { .. })) => (
                Outcome::WrongProof,
                format!("wrong proof for shard {}: {e}", a.id),
            ),
            Ok(Err(e)) => (Outcome::Unreachable, format!("unreachable: {e}")),
        };
        if matches!(outcome, Outcome::Timeout | Outcome::Unreachable) {
            self.ctx.client.mark_failed(&node).await;
        }
        tracing::debug!(miner = %node.fmt_short(), shard = %a.id, ?outcome, ms = latency.as_secs_f64() * 1e3, "challenge");
        let now = now_secs();
        let mut st = self.state.lock().expect("lock");
        st.challenges += 1;
        let grace = self.config.grace_secs;
        let m = st.miners.entry(node).or_default();
        m.reputation.record(outcome, &why, now);
        m.last_latency_ms = Some(latency.as_secs_f64() * 1e3);
        let mut queue: Vec<(Cid, usize, usize, NodeId)> = Vec::new();
        match outcome {
            Outcome::Pass => {
                m.verified.insert(a.id, a.len);
            }
            Outcome::WrongProof | Outcome::Missing => {
                m.verified.remove(&a.id);
                queue.push((a.cid, a.segment, a.index, node));
            }
            Outcome::Timeout | Outcome::Unreachable => {
                m.verified.remove(&a.id);
                // Gone past the grace period: everything it held is rebuilt elsewhere.
                if m.reputation.silent_for(now) >= grace && !m.repair_queued {
                    m.repair_queued = true;
                    queue.extend(
                        m.assignments
                            .iter()
                            .map(|x| (x.cid, x.segment, x.index, node)),
                    );
                }
            }
        }
        for r in queue {
            if !st.repairs.contains(&r) {
                st.repairs.push_back(r);
            }
        }
    }

    fn addr(&self, node: &NodeId) -> EndpointAddr {
        self.state
            .lock()
            .expect("lock")
            .members
            .get(node)
            .map(|m| m.endpoint_addr())
            .unwrap_or_else(|| EndpointAddr::new(*node))
    }

    async fn repair_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Take every queued repair of one dataset segment at a time.
            let batch = {
                let mut st = self.state.lock().expect("lock");
                let Some(first) = st.repairs.pop_front() else {
                    continue;
                };
                let mut batch = vec![first];
                let rest: Vec<_> = st.repairs.drain(..).collect();
                for r in rest {
                    if r.0 == first.0 && r.1 == first.1 {
                        batch.push(r);
                    } else {
                        st.repairs.push_back(r);
                    }
                }
                batch
            };
            let (cid, segment) = (batch[0].0, batch[0].1);
            match self.repair_segment(cid, segment, &batch).await {
                Ok(n) => {
                    let mut st = self.state.lock().expect("lock");
                    st.repairs_done += n as u64;
                }
                Err(e) => {
                    tracing::warn!(%cid, segment, error = %e, "repair failed; will retry");
                    {
                        let mut st = self.state.lock().expect("lock");
                        st.repairs_failed += 1;
                        st.repairs.extend(batch);
                    }
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// Rebuilds the lost shards of one segment from any k others, stores each
    /// on the best miner (by the placement rule) that holds nothing of this
    /// segment, and publishes the new placement.
    async fn repair_segment(
        &self,
        cid: Cid,
        s: usize,
        lost: &[(Cid, usize, usize, NodeId)],
    ) -> Result<usize> {
        let ds = self
            .state
            .lock()
            .expect("lock")
            .datasets
            .get(&cid)
            .cloned()
            .ok_or_else(|| Error::Other(format!("{cid} is no longer audited")))?;
        let m = &ds.manifest;
        let total = m.total_shards();
        // Only shards still held by the miner that lost them need work (an
        // earlier repair may have moved them already).
        // Each shard once, though several failed challenges may have queued it.
        let todo: Vec<(usize, NodeId)> = lost
            .iter()
            .filter(|(_, _, i, bad)| ds.placement.holder(s, *i, total) == Some(*bad))
            .map(|(_, _, i, bad)| (*i, *bad))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let params = m.params()?;
        let mut decoder = Decoder::new(params)?;
        let segment = datasets::fetch_segment(&self.ctx, &ds, s, &mut decoder).await?;
        let mut encoder = Encoder::new(params)?;
        let encoded = encoder.encode(&segment)?;
        let live = self.live_miners().await?;
        let candidates = datasets::candidates(&live);
        let mut holders = ds.placement.holders_by_shard();
        let bad: HashSet<NodeId> = todo.iter().map(|(_, b)| *b).collect();
        let mut repaired = 0;
        let mut unplaced = Vec::new();
        for (i, bad_holder) in &todo {
            let shard = encoded.shard(*i);
            let id = m.segments[s].shards[*i];
            if *blake3::hash(shard).as_bytes() != id.0 {
                return Err(Error::Other(format!(
                    "segment {s}: rebuilt shard {i} does not match its id"
                )));
            }
            let in_segment: HashSet<NodeId> =
                (0..total).filter_map(|j| holders[s * total + j]).collect();
            let order = rank(&m.segments[s].blake3, *i as u32, &candidates);
            let mut placed = None;
            for c in order {
                let target = live[c].member.node_id;
                if in_segment.contains(&target)
                    || bad.contains(&target)
                    || target == self.ctx.node_id
                {
                    continue;
                }
                let addr = live[c].member.endpoint_addr();
                match self
                    .ctx
                    .client
                    .put_shard(&addr, id, shard, Some(ds.placement.owner))
                    .await
                {
                    Ok(()) => {
                        placed = Some(target);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(miner = %target.fmt_short(), error = %e, "repair put failed")
                    }
                }
            }
            let Some(target) = placed else {
                unplaced.push(*i);
                continue;
            };
            tracing::info!(%cid, segment = s, shard = i, from = %bad_holder.fmt_short(), to = %target.fmt_short(), "repaired shard");
            holders[s * total + i] = Some(target);
            repaired += 1;
        }
        if repaired == 0 {
            return Err(Error::Other(format!(
                "segment {s}: no miner took the rebuilt shards {unplaced:?} (every live miner already holds one of this segment)"
            )));
        }
        let version = (ds.placement.version + 1).max(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        );
        let placement =
            Placement::signed(cid, version, ds.placement.owner, &holders, &self.ctx.key);
        publish_placement(&self.ctx.client, m, &ds, &placement, &live, &candidates).await;
        self.ctx.store.put_placement(
            &cid.0,
            placement.version,
            &placement.owner,
            &placement.encode(),
        )?;
        let ds = datasets::open_dataset_fresh(&self.ctx, cid).await?;
        let mut st = self.state.lock().expect("lock");
        install_dataset(&mut st, ds);
        if !unplaced.is_empty() {
            // What was placed is published; the rest is retried later.
            st.repairs_done += repaired as u64;
            return Err(Error::Other(format!(
                "segment {s}: no miner took the rebuilt shards {unplaced:?}"
            )));
        }
        Ok(repaired)
    }

    /// The miners that answer, probed at most every few seconds.
    async fn live_miners(&self) -> Result<Vec<LiveMiner>> {
        if let Some((at, live)) = &self.state.lock().expect("lock").live
            && at.elapsed() < LIVE_PROBE_REUSE
        {
            return Ok(live.clone());
        }
        self.refresh_members().await?;
        let live = self.ctx.probe(&self.miners_list()).await;
        self.state.lock().expect("lock").live = Some((Instant::now(), live.clone()));
        Ok(live)
    }

    fn miners_list(&self) -> Vec<Member> {
        self.state
            .lock()
            .expect("lock")
            .members
            .values()
            .filter(|m| m.role == Role::Miner)
            .cloned()
            .collect()
    }

    async fn weights_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(self.config.weights_interval_secs)).await;
            if let Err(e) = self.set_weights().await {
                tracing::warn!(error = %e, "setting weights failed");
            }
            self.persist_reputations();
        }
    }

    /// Computes weights from reputation x verified bytes and sets them.
    pub async fn set_weights(&self) -> Result<Vec<WeightEntry>> {
        self.refresh_members().await?;
        let entries = {
            let mut st = self.state.lock().expect("lock");
            let miners: Vec<Member> = st
                .members
                .values()
                .filter(|m| m.role == Role::Miner)
                .cloned()
                .collect();
            let rows: Vec<(f64, bool, u64)> = miners
                .iter()
                .map(|m| match st.miners.get(&m.node_id) {
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
                        "last_failures": st.miners.get(&m.node_id).map(|x| x.reputation.last_failures.clone()).unwrap_or_default(),
                    }),
                })
                .collect();
            st.last_weights = entries.clone();
            entries
        };
        let me = self.node.member();
        self.ctx
            .registry
            .set_weights(&me, &self.node.hotkey, &entries)
            .await?;
        tracing::info!(miners = entries.len(), "weights set");
        Ok(entries)
    }

    /// The scoreboard.
    pub fn report(&self) -> ValidatorReport {
        report(&self.state.lock().expect("lock"))
    }
}

/// The whole scoreboard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidatorReport {
    pub datasets: usize,
    pub challenges: u64,
    pub repairs_done: u64,
    pub repairs_pending: usize,
    pub repairs_failed: u64,
    pub miners: Vec<MinerReport>,
}

fn report(st: &State) -> ValidatorReport {
    let mut miners: Vec<MinerReport> = st
        .miners
        .iter()
        .map(|(node, m)| MinerReport {
            node_id: node.to_string(),
            hotkey: st
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
            weight: st
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
        datasets: st.datasets.len(),
        challenges: st.challenges,
        repairs_done: st.repairs_done,
        repairs_pending: st.repairs.len(),
        repairs_failed: st.repairs_failed,
        miners,
    }
}

/// Replaces a dataset's assignments with those of its (newer) placement.
fn install_dataset(st: &mut State, ds: Dataset) {
    let cid = ds.cid;
    for m in st.miners.values_mut() {
        m.assignments.retain(|a| a.cid != cid);
    }
    let man = &ds.manifest;
    let total = man.total_shards();
    let k = u64::from(man.data_shards);
    for (s, seg) in man.segments.iter().enumerate() {
        let shard_len = seg.len.div_ceil(k);
        for i in 0..total {
            if let Some(node) = ds.placement.holder(s, i, total) {
                let m = st.miners.entry(node).or_default();
                m.repair_queued = false;
                m.assignments.push(Assignment {
                    cid,
                    segment: s,
                    index: i,
                    id: seg.shards[i],
                    len: shard_len,
                    last_checked: None,
                });
            }
        }
    }
    st.datasets.insert(cid, ds);
}

/// Counts shards whose holder ranks among the first `total + 2` miners of the
/// weighted rendezvous order for its key. Returns (following, checked).
fn placement_rule_holds(ds: &Dataset, members: &HashMap<NodeId, Member>) -> (usize, usize) {
    let mut miners: Vec<&Member> = members.values().filter(|m| m.role == Role::Miner).collect();
    miners.sort_by_key(|m| *m.node_id.as_bytes());
    let candidates: Vec<Candidate> = miners
        .iter()
        .map(|m| Candidate {
            id: m.node_id,
            weight: capacity_weight(m.free),
        })
        .collect();
    let total = ds.manifest.total_shards();
    let slack = total + 2;
    let (mut ok, mut checked) = (0, 0);
    for (s, seg) in ds.manifest.segments.iter().enumerate() {
        for i in 0..total {
            let Some(holder) = ds.placement.holder(s, i, total) else {
                continue;
            };
            checked += 1;
            let order = rank(&seg.blake3, i as u32, &candidates);
            if order
                .iter()
                .take(slack)
                .any(|&c| candidates[c].id == holder)
            {
                ok += 1;
            }
        }
    }
    (ok, checked)
}

/// Sends a new placement (and the manifest) to the manifest holders.
async fn publish_placement(
    client: &Client,
    manifest: &cairn_node::manifest::Manifest,
    ds: &Dataset,
    placement: &Placement,
    live: &[datasets::LiveMiner],
    candidates: &[Candidate],
) {
    let bytes = manifest.encode();
    let copies = usize::from(manifest.parity_shards) + 1;
    for i in manifest_holders(&ds.cid.0, copies, candidates) {
        let addr = live[i].member.endpoint_addr();
        let _ = client.put_manifest(&addr, ds.cid.0, &bytes).await;
        if let Err(e) = client.put_placement(&addr, placement).await {
            tracing::warn!(error = %e, "placement update not stored");
        }
    }
}
