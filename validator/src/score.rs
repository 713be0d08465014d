//! Reputation, containment and vetting: what a challenge's outcome costs.
//!
//! **The audit score** is Storj's beta reputation with forgetting. Each
//! scored outcome updates two numbers with a forgetting factor λ:
//! `α ← λα + w(1+v)/2`, `β ← λβ + w(1−v)/2`, with `v = +1` for a pass and
//! `v = −1` for a failure; the score is `α / (α + β)`.
//!
//! Constants, and why:
//! - λ = 0.99: the score remembers about the last 100 audits, so one old
//!   failure fades within a day of steady auditing, and steady failure shows
//!   within tens of audits. (Storj uses 0.999 with far more audits per node.)
//! - w = 1 for every failure: a wrong proof, a shard the miner says it lost,
//!   and silence. **Silence costs what a wrong proof costs**, so a miner that
//!   lost a shard gains nothing by not answering.
//! - **Containment** (after Storj): a miner that does not answer a challenge
//!   (deadline passed, stream or connection dropped, unreachable) is not
//!   scored at once. It is *contained*: nothing else is asked of it, and the
//!   same shard is asked again, up to [`REASKS`] times, after 1, 4 and 16
//!   re-ask periods (`reask_secs`, 60 s by default: about 21 minutes in
//!   all), each time with a fresh nonce so the pause cannot be used to fetch
//!   the answer. An answer ends containment and is scored as it is; a fourth
//!   silence is scored as one failure ([`Outcome::Silent`]). A home router
//!   that reboots costs nothing; a miner that goes quiet whenever it is asked
//!   for a shard it lost pays a failure per shard, only later.
//! - Disqualified below 0.96 (Storj's audit threshold) once it has 20 scored
//!   audits, and for good: the node id and its hotkey earn nothing again
//!   (one failure after a clean history costs about 1%; a miner that lost
//!   10% of a shard, failing 99% of the 44-sample challenges on it, goes
//!   below the line within a handful of audits).
//! - **Vetting**: a miner is vetted once it has passed [`VETTED_PASSES`]
//!   audits over at least [`VETTING_SECS`] (3 days) under its current
//!   hotkey. Until then placement offers it only a small share of shard
//!   slots (`cairn_proto::placement::NEWCOMER_SHARE`, 2%). Storj vets with 100
//!   audits while giving unvetted nodes about 1% of uploads; the days are
//!   what make identities expensive: a fresh identity is cheap, three days
//!   of honest storage under it are not, and a disqualified operator's next
//!   identity starts from nothing. A node id that moves to another hotkey
//!   starts vetting again (and keeps its disqualification).

use serde::{Deserialize, Serialize};

pub const LAMBDA: f64 = 0.99;
pub const FAILURE_WEIGHT: f64 = 1.0;
pub const DISQUALIFY_BELOW: f64 = 0.96;
/// Scored audits before a score can disqualify.
pub const MIN_AUDITS_TO_DISQUALIFY: u64 = 20;
/// Re-asks of an unanswered challenge before silence is scored.
pub const REASKS: u8 = 3;
/// Passed audits, and time, before a miner is vetted.
pub const VETTED_PASSES: u64 = 100;
pub const VETTING_SECS: u64 = 3 * 86_400;

/// How a challenge ended, as scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The proof did not verify (wrong bytes, replay, another shard, hashes only).
    WrongProof,
    /// The miner says it does not hold the shard.
    Missing,
    /// No answer to the challenge nor to its [`REASKS`] re-asks.
    Silent,
}

impl Outcome {
    pub fn is_pass(self) -> bool {
        self == Outcome::Pass
    }
}

/// One miner's reputation and the evidence behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reputation {
    pub alpha: f64,
    pub beta: f64,
    /// Scored audits.
    pub audits: u64,
    pub passes: u64,
    pub failures: u64,
    /// Silences scored (each after its re-asks).
    pub timeouts: u64,
    /// Why the last failures happened, newest last (at most 5).
    pub last_failures: Vec<String>,
    /// Unix seconds of the last answer of any kind (liveness).
    pub last_seen: u64,
    /// Unix seconds since when it has been silent without a break (0: it
    /// answered the last challenge).
    #[serde(default)]
    pub silent_since: u64,
    /// The hotkey it was audited under.
    #[serde(default)]
    pub hotkey: String,
    /// Unix seconds when vetting began under this hotkey (0: not yet).
    #[serde(default)]
    pub vetting_since: u64,
    /// Passes since vetting began.
    #[serde(default)]
    pub vetting_passes: u64,
    /// Disqualified, for good.
    #[serde(default)]
    pub disqualified: bool,
}

impl Default for Reputation {
    fn default() -> Self {
        Reputation {
            alpha: 1.0,
            beta: 0.0,
            audits: 0,
            passes: 0,
            failures: 0,
            timeouts: 0,
            last_failures: Vec::new(),
            last_seen: 0,
            silent_since: 0,
            hotkey: String::new(),
            vetting_since: 0,
            vetting_passes: 0,
            disqualified: false,
        }
    }
}

impl Reputation {
    /// Seconds it has been silent without a break, as of `now`.
    pub fn silent_for(&self, now: u64) -> u64 {
        if self.silent_since == 0 {
            0
        } else {
            now.saturating_sub(self.silent_since)
        }
    }

    pub fn score(&self) -> f64 {
        if self.alpha + self.beta <= 0.0 {
            return 1.0;
        }
        self.alpha / (self.alpha + self.beta)
    }

    /// Earns nothing, for good.
    pub fn disqualified(&self) -> bool {
        self.disqualified
    }

    /// Passed its vetting as of `now` (unix seconds).
    pub fn vetted(&self, now: u64) -> bool {
        !self.disqualified
            && self.vetting_since > 0
            && self.vetting_passes >= VETTED_PASSES
            && now.saturating_sub(self.vetting_since) >= VETTING_SECS
    }

    /// The node is now registered under `hotkey`: a change starts vetting over.
    pub fn under_hotkey(&mut self, hotkey: &str) {
        if self.hotkey != hotkey {
            if !self.hotkey.is_empty() {
                self.vetting_since = 0;
                self.vetting_passes = 0;
            }
            self.hotkey = hotkey.to_string();
        }
    }

    /// An attempt went unanswered at `now`: liveness only, not a score.
    pub fn silence(&mut self, now: u64) {
        if self.silent_since == 0 {
            self.silent_since = now;
        }
    }

    /// Scores an outcome; `why` says what went wrong, for operators.
    pub fn record(&mut self, outcome: Outcome, why: &str, now: u64) {
        let (v, w) = match outcome {
            Outcome::Pass => (1.0, FAILURE_WEIGHT),
            Outcome::WrongProof | Outcome::Missing | Outcome::Silent => (-1.0, FAILURE_WEIGHT),
        };
        self.alpha = LAMBDA * self.alpha + w * (1.0 + v) / 2.0;
        self.beta = LAMBDA * self.beta + w * (1.0 - v) / 2.0;
        self.audits += 1;
        if self.vetting_since == 0 {
            self.vetting_since = now.max(1);
        }
        match outcome {
            Outcome::Pass => {
                self.passes += 1;
                self.vetting_passes += 1;
            }
            Outcome::WrongProof | Outcome::Missing => self.failures += 1,
            Outcome::Silent => self.timeouts += 1,
        }
        if outcome == Outcome::Silent {
            self.silence(now);
        } else {
            self.last_seen = now;
            self.silent_since = 0;
        }
        if !outcome.is_pass() {
            self.last_failures.push(why.to_string());
            if self.last_failures.len() > 5 {
                self.last_failures.remove(0);
            }
        }
        if self.audits >= MIN_AUDITS_TO_DISQUALIFY && self.score() < DISQUALIFY_BELOW {
            self.disqualified = true;
        }
    }
}

/// Weights from `(reputation, verified bytes)`, scaled so the largest is u16::MAX.
pub fn weights(entries: &[(f64, bool, u64)]) -> Vec<u16> {
    let raw: Vec<f64> = entries
        .iter()
        .map(|&(score, dq, bytes)| if dq { 0.0 } else { score * bytes as f64 })
        .collect();
    let max = raw.iter().cloned().fold(0.0, f64::max);
    raw.iter()
        .map(|&r| {
            if max > 0.0 {
                ((r / max) * f64::from(u16::MAX)).round() as u16
            } else {
                0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_is_not_a_ban_and_steady_failure_is_for_good() {
        let mut r = Reputation::default();
        for _ in 0..200 {
            r.record(Outcome::Pass, "", 1);
        }
        r.record(Outcome::Silent, "no answer", 2);
        assert!(r.score() > 0.98 && !r.disqualified(), "{}", r.score());
        r.record(Outcome::WrongProof, "bad", 3);
        assert!(!r.disqualified(), "{}", r.score());
        let mut cheat = Reputation::default();
        let mut n = 0;
        while !cheat.disqualified() {
            // fails 10% of the time, like a miner that lost data on some shards
            cheat.record(
                if n % 10 == 0 {
                    Outcome::Missing
                } else {
                    Outcome::Pass
                },
                "missing",
                1,
            );
            n += 1;
            assert!(n < 1000, "never disqualified: {}", cheat.score());
        }
        assert!(cheat.last_failures.len() <= 5);
        // passing again later does not undo it
        for _ in 0..500 {
            cheat.record(Outcome::Pass, "", 2);
        }
        assert!(cheat.disqualified() && cheat.score() > 0.99);
    }

    #[test]
    fn silence_costs_what_a_wrong_proof_costs() {
        let (mut silent, mut wrong) = (Reputation::default(), Reputation::default());
        for _ in 0..50 {
            silent.record(Outcome::Pass, "", 1);
            wrong.record(Outcome::Pass, "", 1);
        }
        silent.record(Outcome::Silent, "", 2);
        wrong.record(Outcome::WrongProof, "", 2);
        assert_eq!(silent.score(), wrong.score());
    }

    #[test]
    fn silence_is_measured_from_the_first_unanswered_attempt() {
        let mut r = Reputation::default();
        r.silence(100);
        r.silence(150);
        assert_eq!(r.silent_for(160), 60);
        assert_eq!(r.last_seen, 0);
        r.record(Outcome::WrongProof, "bad", 170);
        assert_eq!((r.silent_for(200), r.last_seen), (0, 170));
        r.silence(300);
        assert_eq!(r.silent_for(310), 10);
    }

    #[test]
    fn vetting_takes_passes_and_days_and_restarts_with_a_new_hotkey() {
        let day = 86_400;
        let mut r = Reputation::default();
        r.under_hotkey("hk1");
        for i in 0..VETTED_PASSES {
            r.record(Outcome::Pass, "", 1_000 + i);
        }
        assert!(!r.vetted(1_000 + day), "enough passes, not enough days");
        assert!(r.vetted(1_000 + VETTING_SECS));
        r.under_hotkey("hk1");
        assert!(r.vetted(1_000 + VETTING_SECS), "same hotkey: still vetted");
        r.under_hotkey("hk2");
        assert!(!r.vetted(1_000 + 10 * day), "a new hotkey starts over");
        let mut dq = r.clone();
        dq.disqualified = true;
        assert!(!dq.vetted(u64::MAX));
    }

    #[test]
    fn weights_are_normalised_and_zero_when_disqualified() {
        let w = weights(&[
            (1.0, false, 100),
            (0.5, false, 100),
            (1.0, true, 1000),
            (1.0, false, 0),
        ]);
        assert_eq!(w, vec![u16::MAX, 32768, 0, 0]);
        assert_eq!(weights(&[]), Vec::<u16>::new());
        assert_eq!(weights(&[(1.0, false, 0)]), vec![0]);
    }
}
