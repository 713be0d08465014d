//! What the validators say about this node. Operators' first complaint is a
//! score that drops with nothing in the logs to say why; a validator knows
//! why, so a miner asks each validator for its verdicts on it
//! (`Request::Verdicts`, answered about the asking peer only), keeps the
//! last answer of each, writes every new failure to the log with its reason
//! and what to do, and shows them (`/api/verdicts`, the dashboard,
//! `cairn verdicts`).
//!
//! A validator also dials the node back on request (`/api/dialback`,
//! `cairn doctor`): the outside view of its reachability.
//!
//! Bounded: at most [`MAX_VALIDATORS_ASKED`](crate::registry::MAX_VALIDATORS_ASKED) validators, each reply at most
//! `MAX_VERDICTS` verdicts in one control frame, one ask in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::{DialBackView, ValidatorVerdicts, VerdictView, VerdictsView};
use cairn_proto::NodeId;
use cairn_proto::wire::{Verdict, VerdictOutcome, VerdictReport};
use tokio::task::JoinSet;

use crate::net::Client;
use crate::registry::AnyRegistry;

/// How long one validator has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// A miner asks this often in the background.
pub const POLL_EVERY: Duration = Duration::from_secs(30);
/// An API read asks again only when the last ask is older than this.
const FRESH_FOR: Duration = Duration::from_secs(2);

/// One validator's last answer.
#[derive(Debug, Clone, Default)]
struct Kept {
    hotkey: String,
    /// Unix seconds of its last answer; 0 when it never answered.
    answered_at: u64,
    /// Why the last ask failed (what is kept is then older).
    error: Option<String>,
    report: VerdictReport,
}

/// The verdicts of every validator on this node.
pub struct VerdictBook {
    me: NodeId,
    registry: AnyRegistry,
    client: Arc<Client>,
    kept: Mutex<BTreeMap<NodeId, Kept>>,
    /// Held while asking (one ask at a time); when the last one ended.
    asking: tokio::sync::Mutex<Option<Instant>>,
    asked_at: Mutex<u64>,
}

impl VerdictBook {
    pub fn new(me: NodeId, registry: AnyRegistry, client: Arc<Client>) -> Self {
        VerdictBook {
            me,
            registry,
            client,
            kept: Mutex::new(BTreeMap::new()),
            asking: tokio::sync::Mutex::new(None),
            asked_at: Mutex::new(0),
        }
    }

    /// Asks every registered validator at once and keeps what each said;
    /// new failures go to the log. A caller that finds an ask younger than
    /// `fresh_for` in progress or just done takes its result instead.
    pub async fn refresh(&self, fresh_for: Duration) {
        let mut last = self.asking.lock().await;
        if last.is_some_and(|t| t.elapsed() < fresh_for) {
            return;
        }
        let validators: Vec<_> = match self.registry.validators_except(&self.me).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "verdicts: cannot list the validators");
                return;
            }
        };
        let mut asks = JoinSet::new();
        for v in validators {
            let client = Arc::clone(&self.client);
            asks.spawn(async move {
                let addr = v.endpoint_addr();
                let r = match tokio::time::timeout(ASK_TIMEOUT, client.verdicts(&addr)).await {
                    Ok(Ok(r)) => Ok(r),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {ASK_TIMEOUT:?}")),
                };
                (v.node_id, v.hotkey, r)
            });
        }
        let now = crate::unix_secs();
        let mut answers = Vec::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok(a) = joined {
                answers.push(a);
            }
        }
        let mut kept = self.kept.lock().expect("lock");
        let asked: Vec<NodeId> = answers.iter().map(|a| a.0).collect();
        for (validator, hotkey, answer) in answers {
            let k = kept.entry(validator).or_default();
            k.hotkey = hotkey;
            match answer {
                Ok(report) => {
                    let newest_known = k.report.verdicts.last().map_or(0, |v| v.at_ms);
                    for v in report.verdicts.iter().filter(|v| v.at_ms > newest_known) {
                        log_failure(&validator, v);
                    }
                    k.report = report;
                    k.answered_at = now;
                    k.error = None;
                }
                Err(e) => k.error = Some(e),
            }
        }
        // Validators that left the registry are forgotten.
        kept.retain(|id, _| asked.contains(id));
        *self.asked_at.lock().expect("lock") = now;
        *last = Some(Instant::now());
    }

    /// What every validator said, after asking again if the last ask is
    /// older than a moment.
    pub async fn view(&self) -> VerdictsView {
        self.refresh(FRESH_FOR).await;
        let kept = self.kept.lock().expect("lock");
        VerdictsView {
            node_id: self.me.to_string(),
            asked_at: *self.asked_at.lock().expect("lock"),
            validators: kept.iter().map(|(id, k)| validator_view(id, k)).collect(),
        }
    }

    /// Asks validators, one after another, to dial this node back; the
    /// first answer counts.
    pub async fn dial_back(&self) -> DialBackView {
        let validators: Vec<_> = match self.registry.validators_except(&self.me).await {
            Ok(v) => v,
            Err(e) => {
                return DialBackView {
                    error: Some(format!("cannot list the validators: {e}")),
                    ..DialBackView::default()
                };
            }
        };
        let mut failures = Vec::new();
        for v in validators.iter().take(3) {
            let addr = v.endpoint_addr();
            let wait = ASK_TIMEOUT + crate::net::reach::DIAL_BACK_TIMEOUT;
            match tokio::time::timeout(wait, self.client.dial_back(&addr)).await {
                Ok(Ok(r)) => {
                    return DialBackView {
                        validator: v.node_id.to_string(),
                        reached: r.reached,
                        rtt_ms: r.rtt_ms,
                        detail: r.detail,
                        error: None,
                    };
                }
                Ok(Err(e)) => failures.push(format!("{}: {e}", v.node_id.fmt_short())),
                Err(_) => failures.push(format!(
                    "{}: no answer within {wait:?}",
                    v.node_id.fmt_short()
                )),
            }
        }
        DialBackView {
            error: Some(if validators.is_empty() {
                "no validator is registered to dial this node back".into()
            } else {
                format!("no validator dialed back: {}", failures.join("; "))
            }),
            ..DialBackView::default()
        }
    }

    /// Asks every [`POLL_EVERY`] for as long as the node runs.
    pub async fn poll(self: Arc<Self>) {
        loop {
            self.refresh(FRESH_FOR).await;
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

fn log_failure(validator: &NodeId, v: &Verdict) {
    if v.outcome == VerdictOutcome::Pass {
        return;
    }
    tracing::warn!(
        validator = %validator.fmt_short(),
        shard = %v.shard,
        outcome = v.outcome.as_str(),
        attempt = v.attempt,
        latency_ms = ?v.latency_ms,
        deadline_ms = v.deadline_ms,
        reason = %v.reason,
        advice = advice(v.outcome),
        "a validator failed a challenge of this node"
    );
}

/// What an operator can do about an outcome.
pub fn advice(outcome: VerdictOutcome) -> &'static str {
    match outcome {
        VerdictOutcome::Pass => "",
        VerdictOutcome::WrongProof => {
            "the shard's bytes on disk are not the ones stored (a failing disk, or a file changed by hand): check the disk; the validator rebuilds the shard elsewhere"
        }
        VerdictOutcome::Missing => {
            "this node does not have the shard (deleted, or its disk not mounted): check that the data directory's disk is mounted and whole"
        }
        VerdictOutcome::Timeout => {
            "the answer came late or not at all: check that the node is reachable (`cairn id` shows its paths), that its upload is not saturated and its disk not overloaded"
        }
    }
}

fn validator_view(id: &NodeId, k: &Kept) -> ValidatorVerdicts {
    let r = &k.report;
    ValidatorVerdicts {
        validator: id.to_string(),
        hotkey: k.hotkey.clone(),
        answered_at: k.answered_at,
        error: k.error.clone(),
        score: f64::from(r.score_ppm) / 1e6,
        weight: r.weight,
        disqualified: r.disqualified,
        contained: r.contained,
        vetted: r.vetted,
        audits: r.audits,
        passes: r.passes,
        failures: r.failures,
        timeouts: r.timeouts,
        shards_assigned: r.shards_assigned,
        verified_bytes: r.verified_bytes,
        // Newest first: what an operator reads first.
        verdicts: r
            .verdicts
            .iter()
            .rev()
            .map(|v| VerdictView {
                at_ms: v.at_ms,
                shard: v.shard.to_string(),
                outcome: v.outcome.as_str().to_string(),
                attempt: v.attempt,
                latency_ms: v.latency_ms,
                deadline_ms: v.deadline_ms,
                reason: v.reason.clone(),
                advice: advice(v.outcome).to_string(),
            })
            .collect(),
    }
}
