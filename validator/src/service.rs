//! The validator's loops, a thin async shell around the [`Ledger`]: take
//! datasets in for audit, send challenges and verify the proofs, repair
//! what was lost, set weights, re-read placements.
//!
//! The validator runs on a cairn node and uses only the node's facade
//! ([`Node`]): its client, its dataset service (whose cache the repairs keep
//! current), its registry and a namespace of its key-value space for
//! reputations and the audit set, which survive a restart. Every network
//! round trip happens outside the ledger's lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_erasure::Encoder;
use cairn_node::datasets::{Dataset, LiveMiner};
use cairn_node::registry::{Registry, WeightEntry};
use cairn_node::server::AuditRefusal;
use cairn_node::{EndpointAddr, Node, NodeId, ValidatorService};
use cairn_proof::Challenge;
use cairn_proto::Cid;
use cairn_proto::placement::{self, Candidate};
use cairn_proto::wire::{ErrorCode, VerdictReport};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::ValidatorConfig;
use crate::ledger::{Answer, Due, Ledger, LedgerConfig, RepairJob, Timing};
use crate::score::Reputation;
use crate::{Error, Result};

/// Audit requests waiting to be taken in; beyond this, peers hear "busy".
const AUDIT_QUEUE: usize = 1024;
/// How long a probe of the live miners is reused by repairs.
const LIVE_PROBE_REUSE: Duration = Duration::from_secs(10);
/// Key-value namespaces of the validator's state on its node.
const AUDITS: &str = "audit";
const REPUTATIONS: &str = "rep";

/// Audit requests one peer may make in a burst, and per second after it.
const AUDIT_BURST: f64 = 20.0;
const AUDITS_PER_SEC: f64 = 1.0;

/// What the node's server and gateway call: audit requests go into a
/// bounded queue (each peer within its rate), releases take effect at
/// once, the scoreboard comes from the ledger.
struct Intake {
    audits: mpsc::Sender<(NodeId, Cid)>,
    ledger: Arc<Mutex<Ledger>>,
    datasets: Arc<Mutex<HashMap<Cid, Dataset>>>,
    released: mpsc::Sender<Cid>,
    /// Per peer: tokens left, and when they were counted.
    rates: Mutex<HashMap<NodeId, (f64, Instant)>>,
}

impl Intake {
    /// A token bucket per peer; the map forgets peers that are full again.
    fn within_rate(&self, peer: NodeId) -> bool {
        let now = Instant::now();
        let mut rates = self.rates.lock().expect("lock");
        if rates.len() > 4096 {
            rates.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * AUDITS_PER_SEC < AUDIT_BURST
            });
        }
        let (tokens, at) = rates.entry(peer).or_insert((AUDIT_BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * AUDITS_PER_SEC).min(AUDIT_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl ValidatorService for Intake {
    fn audit(&self, peer: NodeId, cid: Cid) -> std::result::Result<(), AuditRefusal> {
        if let Some(owner) = self.ledger.lock().expect("lock").owner(&cid)
            && owner != peer
        {
            return Err(AuditRefusal::Refused(format!(
                "{cid} belongs to node {owner}; only its owner may ask for its audit"
            )));
        }
        if !self.within_rate(peer) {
            return Err(AuditRefusal::Busy(
                "too many audit requests from this node; retry later".into(),
            ));
        }
        self.audits.try_send((peer, cid)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                AuditRefusal::Busy("too many audit requests queued; retry later".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                AuditRefusal::Busy("the validator is shutting down".into())
            }
        })
    }

    fn release(&self, peer: NodeId, cid: Cid) -> std::result::Result<(), AuditRefusal> {
        let released = self
            .ledger
            .lock()
            .expect("lock")
            .release(&peer, &cid)
            .map_err(AuditRefusal::Refused)?;
        if released {
            self.datasets.lock().expect("lock").remove(&cid);
            // The persisted audit set follows; if the queue is full it is
            // dropped at the next restart, when the dataset cannot be opened.
            let _ = self.released.try_send(cid);
            tracing::info!(%cid, "released by its owner; no longer audited");
        }
        Ok(())
    }

    fn report(&self) -> cairn_api::ValidatorReport {
        self.ledger.lock().expect("lock").report()
    }

    fn vetted(&self) -> Vec<NodeId> {
        self.ledger
            .lock()
            .expect("lock")
            .vetted(cairn_node::unix_secs())
    }

    fn verdicts(&self, miner: NodeId) -> VerdictReport {
        self.ledger
            .lock()
            .expect("lock")
            .verdicts(&miner, cairn_node::unix_secs())
    }
}

/// What peers asked of the validator, for [`Validator::run`].
pub struct Queues {
    audits: mpsc::Receiver<(NodeId, Cid)>,
    released: mpsc::Receiver<Cid>,
}

/// A running validator.
pub struct Validator {
    pub node: Node,
    config: ValidatorConfig,
    ledger: Arc<Mutex<Ledger>>,
    /// The datasets audited, as last opened.
    datasets: Arc<Mutex<HashMap<Cid, Dataset>>>,
    /// Miners that answered the last probe, and when (repairs reuse it for a
    /// few seconds instead of waiting on dead miners per segment).
    live: Mutex<Option<(Instant, Vec<LiveMiner>)>>,
}

impl Validator {
    /// Starts the node with the validator's intake installed, and takes back
    /// the reputations of an earlier run.
    pub async fn start(config: cairn_node::config::Config) -> Result<(Validator, Queues)> {
        let vconfig = ValidatorConfig::from_node_config(&config)?;
        let ledger = Arc::new(Mutex::new(Ledger::new(LedgerConfig {
            per_miner_per_sec: vconfig.per_miner_per_sec,
            grace_secs: vconfig.grace_secs,
            reask_secs: vconfig.reask_secs,
            deadline_cap_ms: vconfig.deadline_secs.saturating_mul(1000),
            samples: vconfig.samples,
        })));
        let (tx, audits) = mpsc::channel(AUDIT_QUEUE);
        let (released_tx, released) = mpsc::channel(AUDIT_QUEUE);
        let datasets: Arc<Mutex<HashMap<Cid, Dataset>>> = Arc::default();
        let intake = Arc::new(Intake {
            audits: tx,
            ledger: Arc::clone(&ledger),
            datasets: Arc::clone(&datasets),
            released: released_tx,
            rates: Mutex::default(),
        });
        let node = Node::builder(config).validator(intake).start().await?;
        let v = Validator {
            node,
            config: vconfig,
            ledger,
            datasets,
            live: Mutex::new(None),
        };
        v.restore()?;
        Ok((v, Queues { audits, released }))
    }

    /// Reloads reputations after a restart.
    fn restore(&self) -> Result<()> {
        let reps = self
            .node
            .kv(REPUTATIONS)?
            .scan()
            .map_err(cairn_node::Error::from)?;
        let reps = reps.into_iter().filter_map(|(k, v)| {
            let id = <[u8; 32]>::try_from(k.as_slice()).ok()?;
            Some((
                NodeId::from_bytes(&id).ok()?,
                serde_json::from_slice::<Reputation>(&v).ok()?,
            ))
        });
        self.ledger.lock().expect("lock").restore(reps);
        Ok(())
    }

    /// CIDs audited before the last restart.
    pub fn persisted_audits(&self) -> Vec<Cid> {
        self.node
            .kv(AUDITS)
            .and_then(|kv| kv.scan().map_err(cairn_node::Error::from))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, _)| <[u8; 32]>::try_from(k.as_slice()).ok().map(Cid))
            .collect()
    }

    /// Runs every loop until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, queues: Queues, mut shutdown: watch::Receiver<bool>) {
        let Queues {
            mut audits,
            mut released,
        } = queues;
        let intake = {
            let v = Arc::clone(&self);
            tokio::spawn(async move {
                for cid in v.persisted_audits() {
                    v.admit(None, cid).await;
                }
                // One at a time: a flood of requests waits in the bounded queue.
                loop {
                    tokio::select! {
                        Some((peer, cid)) = audits.recv() => v.admit(Some(peer), cid).await,
                        Some(cid) = released.recv() => {
                            if let Ok(kv) = v.node.kv(AUDITS) {
                                let _ = kv.delete(&cid.0);
                            }
                        }
                        else => break,
                    }
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
        let reps = self.ledger.lock().expect("lock").reputations();
        let Ok(kv) = self.node.kv(REPUTATIONS) else {
            return;
        };
        for (node, rep) in reps {
            let _ = kv.put(
                node.as_bytes(),
                &serde_json::to_vec(&rep).unwrap_or_default(),
            );
        }
    }

    async fn refresh_members(&self) -> Result<()> {
        let members = self.node.registry().members().await?;
        self.ledger.lock().expect("lock").set_members(members);
        Ok(())
    }

    /// Takes a dataset in for audit: fetch manifest and placement, check
    /// that `peer` (none: a dataset audited before a restart) owns it, that
    /// it is within the caps and that its holders follow the placement rule,
    /// then record the assignments.
    pub async fn admit(&self, peer: Option<NodeId>, cid: Cid) {
        if let Err(e) = self.admit_inner(peer, cid).await {
            tracing::warn!(%cid, error = %e, "dataset not admitted for audit");
        }
    }

    async fn admit_inner(&self, peer: Option<NodeId>, cid: Cid) -> Result<()> {
        self.refresh_members().await?;
        let ds = self.node.datasets().open_fresh(cid).await?;
        if let Some(peer) = peer
            && peer != ds.manifest.owner
        {
            return Err(Error::Refused(format!(
                "{cid} belongs to node {}; node {peer} asked for its audit",
                ds.manifest.owner
            )));
        }
        self.ledger
            .lock()
            .expect("lock")
            .admissible(&cid, &ds.manifest)
            .map_err(Error::Refused)?;
        // (the ledger's guard must be gone before placement_candidates locks it)
        let miners = self.ledger.lock().expect("lock").miners();
        let candidates = self.placement_candidates(&miners);
        let a = placement::admission(&ds.manifest, &ds.placement, &candidates);
        if !a.admits() {
            return Err(Error::Refused(format!(
                "{cid}: only {} of {} shards sit where the placement rule puts them; refusing to audit a steered placement",
                a.following, a.checked
            )));
        }
        self.node
            .kv(AUDITS)?
            .put(&cid.0, &ds.placement.version.to_le_bytes())
            .map_err(cairn_node::Error::from)?;
        self.install(ds);
        tracing::info!(%cid, "auditing dataset");
        Ok(())
    }

    /// `miners` as the placement rule sees them from here: failure domains
    /// by the network's rule, vetting as this validator judged it.
    fn placement_candidates(&self, miners: &[cairn_node::registry::Member]) -> Vec<Candidate> {
        let rule = self.node.datasets().domain_rule();
        let now = cairn_node::unix_secs();
        let ledger = self.ledger.lock().expect("lock");
        miners
            .iter()
            .map(|m| m.candidate(rule).vetted(ledger.is_vetted(&m.node_id, now)))
            .collect()
    }

    fn install(&self, ds: Dataset) {
        self.datasets
            .lock()
            .expect("lock")
            .insert(ds.cid, ds.clone());
        self.ledger
            .lock()
            .expect("lock")
            .install(ds.cid, &ds.manifest, &ds.placement);
    }

    /// Re-reads placements now and then (other validators repair too).
    async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(self.config.refresh_secs)).await;
            let cids: Vec<Cid> = self
                .datasets
                .lock()
                .expect("lock")
                .keys()
                .copied()
                .collect();
            for cid in cids {
                if let Ok(ds) = self.node.datasets().open_fresh(cid).await {
                    let newer = self
                        .datasets
                        .lock()
                        .expect("lock")
                        .get(&cid)
                        // Released meanwhile: gone from the map, stays gone.
                        .is_some_and(|old| ds.placement.version > old.placement.version);
                    if newer {
                        self.install(ds);
                    }
                }
            }
        }
    }

    async fn challenge_loop(self: Arc<Self>) {
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight));
        let tick = Duration::from_secs_f64(1.0 / self.config.challenges_per_sec.max(1e-6));
        // An interval catches up on missed ticks, so rates above the timer's
        // 1 ms resolution are honoured (a sleep per challenge would cap them).
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut last_members: Option<Instant> = None;
        loop {
            ticker.tick().await;
            if last_members.is_none_or(|t| t.elapsed() > Duration::from_secs(15)) {
                let _ = self.refresh_members().await;
                last_members = Some(Instant::now());
            }
            // A slot first, then the challenge: the ledger's clock on a
            // challenge out starts when it can be sent.
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let next = self
                .ledger
                .lock()
                .expect("lock")
                .next_challenge(cairn_node::unix_millis(), &mut rand::rng());
            let Some(due) = next else {
                continue;
            };
            let v = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                v.challenge_one(due).await;
            });
        }
    }

    fn addr(&self, node: &NodeId) -> EndpointAddr {
        self.ledger
            .lock()
            .expect("lock")
            .member(node)
            .map(|m| m.endpoint_addr())
            .unwrap_or_else(|| EndpointAddr::new(*node))
    }

    /// One attempt at a challenge, start to verdict: a fresh nonce (a re-ask
    /// too, so a pause cannot be used to fetch the answer), the miner's own
    /// deadline, and what the answer says about its link.
    async fn challenge_one(&self, due: Due) {
        let node = due.node;
        let a = &due.assignment;
        let addr = self.addr(&node);
        let nonce: [u8; 32] = rand::random();
        let Ok(ch) = Challenge::new(a.id, a.len, nonce, self.config.samples) else {
            self.ledger.lock().expect("lock").abandon(&due);
            return;
        };
        let client = self.node.client();
        // The deadline times the answer, not the handshake: a miner whose
        // connection was dropped (after a miss) is connected first, within
        // the connect timeout. Connecting tells it nothing of the challenge.
        if let Err(e) = client.connect(&addr).await {
            let why = format!("unreachable: {e}");
            client.mark_failed(&node).await;
            tracing::debug!(miner = %node.fmt_short(), shard = %a.id, attempt = due.attempt, error = %e, "challenge: cannot connect");
            let timing = Timing {
                latency_ms: None,
                deadline_ms: 0,
            };
            self.ledger.lock().expect("lock").record_timed(
                &due,
                Answer::NoAnswer,
                &why,
                timing,
                cairn_node::unix_millis(),
            );
            return;
        }
        let rtt_now = client.rtt(&node).await.map(|d| d.as_secs_f64() * 1e3);
        let deadline = Duration::from_millis(self.ledger.lock().expect("lock").deadline_ms(
            &node,
            ch.proof_len(),
            rtt_now,
        ));
        let mark = client.heard_mark(&node).await;
        let started = Instant::now();
        let result = tokio::time::timeout(deadline, client.challenge_timed(&addr, &ch)).await;
        let done = Instant::now();
        let latency = done - started;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let answered = result.is_ok();
        let (answer, why) = match result {
            Err(_) => (
                Answer::NoAnswer,
                format!("no answer within {deadline:?} (shard {})", a.id),
            ),
            Ok(Ok(reply)) => match cairn_proof::verify(&ch, &reply.proof) {
                Ok(()) => (
                    Answer::Pass {
                        rtt_ms: client.rtt(&node).await.map(ms),
                        proof_len: reply.proof.len(),
                        transfer_ms: ms(done.saturating_duration_since(reply.first_byte)),
                        latency_ms: ms(latency),
                    },
                    String::new(),
                ),
                Err(e) => (
                    Answer::WrongProof,
                    format!("wrong proof for shard {}: {e}", a.id),
                ),
            },
            Ok(Err(cairn_node::Error::Remote {
                code: ErrorCode::NotFound,
                ..
            })) => (Answer::Missing, format!("shard {} missing", a.id)),
            Ok(Err(e @ cairn_node::Error::BadReply { .. })) => (
                Answer::WrongProof,
                format!("wrong proof for shard {}: {e}", a.id),
            ),
            Ok(Err(cairn_node::Error::Remote { code, message, .. })) => (
                Answer::NoAnswer,
                format!("refused the challenge: {code}: {message}"),
            ),
            Ok(Err(e)) => (Answer::NoAnswer, format!("no answer: {e}")),
        };
        if answer == Answer::NoAnswer {
            // A miner heard from during the attempt keeps its connection: a
            // fresh one would start the re-ask in slow start, perhaps on the
            // relay. Only a silent one is dialed afresh.
            client.request_failed(&node, mark).await;
        }
        tracing::debug!(miner = %node.fmt_short(), shard = %a.id, attempt = due.attempt, ?answer, ms = ms(latency), deadline_ms = ms(deadline), "challenge");
        let timing = Timing {
            latency_ms: answered.then(|| ms(latency)),
            deadline_ms: deadline.as_millis() as u64,
        };
        self.ledger.lock().expect("lock").record_timed(
            &due,
            answer,
            &why,
            timing,
            cairn_node::unix_millis(),
        );
    }

    async fn repair_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Every queued repair of one dataset segment at a time.
            let Some(batch) = self.ledger.lock().expect("lock").take_repair_batch() else {
                continue;
            };
            let (cid, segment) = (batch[0].cid, batch[0].segment);
            match self.repair_segment(cid, segment, &batch).await {
                Ok(n) => self.ledger.lock().expect("lock").repaired(n),
                Err(e) => {
                    tracing::warn!(%cid, segment, error = %e, "repair failed; will retry");
                    self.ledger.lock().expect("lock").repair_failed(batch);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }

    /// Rebuilds the lost shards of one segment from any k others, stores each
    /// on the first miner of its repair order (the placement rule) that
    /// holds nothing of this segment, and publishes the new placement.
    async fn repair_segment(&self, cid: Cid, s: usize, lost: &[RepairJob]) -> Result<usize> {
        let ds = self
            .datasets
            .lock()
            .expect("lock")
            .get(&cid)
            .cloned()
            .ok_or_else(|| Error::Refused(format!("{cid} is no longer audited")))?;
        let m = &ds.manifest;
        let total = m.total_shards();
        // Only shards still held by the miner that lost them need work (an
        // earlier repair may have moved them already); each shard once,
        // though several failed challenges may have queued it.
        let todo: Vec<(usize, NodeId)> = lost
            .iter()
            .filter(|j| ds.placement.holder(s, j.index, total) == Some(j.holder))
            .map(|j| (j.index, j.holder))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let params = m.decoder_params()?;
        let datasets = self.node.datasets();
        let segment = datasets.fetch_segment(&ds, s).await?.contiguous();
        let mut encoder = Encoder::new(params)?;
        let encoded = encoder.encode(&segment)?;
        let live = self.live_miners().await?;
        let members: Vec<cairn_node::registry::Member> =
            live.iter().map(|l| l.member.clone()).collect();
        let candidates = self.placement_candidates(&members);
        let rule = datasets.domain_rule();
        let mut holders = ds.placement.holders_by_shard();
        let bad: HashSet<NodeId> = todo.iter().map(|(_, b)| *b).collect();
        let me = self.node.node_id();
        let mut repaired = 0;
        let mut unplaced = Vec::new();
        for (i, bad_holder) in &todo {
            let shard = encoded.shard(*i);
            let id = m.segments[s].shards[*i];
            if *blake3::hash(shard).as_bytes() != id.0 {
                return Err(Error::Refused(format!(
                    "segment {s}: rebuilt shard {i} does not match its id"
                )));
            }
            let in_segment: HashSet<NodeId> =
                (0..total).filter_map(|j| holders[s * total + j]).collect();
            // The failure domains of the segment's other holders.
            let mut taken = placement::DomainSet::default();
            for j in (0..total).filter(|j| j != i) {
                if let Some(h) = holders[s * total + j]
                    && let Some(member) = self.ledger.lock().expect("lock").member(&h)
                {
                    taken.claim(member.domain(rule));
                }
            }
            let order =
                placement::repair_order(&m.segments[s].blake3, *i, &candidates, &taken, |n| {
                    in_segment.contains(n) || bad.contains(n) || *n == me
                });
            let mut placed = None;
            for c in order {
                let target = &live[c].member;
                match self
                    .node
                    .client()
                    .put_shard(&target.endpoint_addr(), id, shard, Some(ds.placement.owner))
                    .await
                {
                    Ok(()) => {
                        placed = Some(target.node_id);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(miner = %target.node_id.fmt_short(), error = %e, "repair put failed")
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
            return Err(Error::Refused(format!(
                "segment {s}: no miner took the rebuilt shards {unplaced:?} (every live miner already holds one of this segment)"
            )));
        }
        let ds = datasets.publish_repair(&ds, &holders, &live).await?;
        self.install(ds);
        if !unplaced.is_empty() {
            // What was placed is published; the rest is retried later.
            self.ledger.lock().expect("lock").repaired(repaired);
            return Err(Error::Refused(format!(
                "segment {s}: no miner took the rebuilt shards {unplaced:?}"
            )));
        }
        Ok(repaired)
    }

    /// The miners that answer, probed at most every few seconds.
    async fn live_miners(&self) -> Result<Vec<LiveMiner>> {
        if let Some((at, live)) = self.live.lock().expect("lock").as_ref()
            && at.elapsed() < LIVE_PROBE_REUSE
        {
            return Ok(live.clone());
        }
        self.refresh_members().await?;
        let miners = self.ledger.lock().expect("lock").miners();
        let live = self.node.datasets().probe(&miners).await;
        *self.live.lock().expect("lock") = Some((Instant::now(), live.clone()));
        Ok(live)
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
        let entries = self.ledger.lock().expect("lock").weights();
        let me = self.node.member();
        self.node
            .registry()
            .set_weights(&me, self.node.hotkey(), &entries)
            .await?;
        tracing::info!(miners = entries.len(), "weights set");
        Ok(entries)
    }

    /// The scoreboard.
    pub fn report(&self) -> cairn_api::ValidatorReport {
        self.ledger.lock().expect("lock").report()
    }
}
