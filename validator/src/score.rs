//! Reputation: Storj's audit score (beta reputation with forgetting).
//!
//! Each audit outcome updates two numbers with a forgetting factor λ:
//! `α ← λα + w(1+v)/2`, `β ← λβ + w(1−v)/2`, with `v = +1` for a passed
//! challenge and `v = −1` for a failed one; the score is `α / (α + β)`.
//!
//! Constants, and why:
//! - λ = 0.99: the score remembers about the last 100 audits, so one old
//!   failure fades within a day of steady auditing, and steady failure shows
//!   within tens of audits. (Storj uses 0.999 with far more audits per node.)
//! - w = 1 for a wrong proof or a missing shard; w = 0.5 for a timeout or an
//!   unreachable miner: a miner behind a flaky link is not a cheater, but one
//!   that never answers must not keep its weight.
//! - Disqualified below 0.96 (Storj's audit threshold) once vetted (20
//!   audits): one failure after a clean history costs about 1%; a miner that
//!   lost 10% of a shard, failing 99% of the 44-sample challenges on it, goes
//!   below the line within a handful of audits.

use serde::{Deserialize, Serialize};

pub const LAMBDA: f64 = 0.99;
pub const FAILURE_WEIGHT: f64 = 1.0;
pub const TIMEOUT_WEIGHT: f64 = 0.5;
pub const DISQUALIFY_BELOW: f64 = 0.96;
pub const VETTING_AUDITS: u64 = 20;

/// How a challenge ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    /// The proof did not verify (wrong bytes, replay, another shard, hashes only).
    WrongProof,
    /// The miner says it does not hold the shard.
    Missing,
    /// No answer before the deadline.
    Timeout,
    /// No connection.
    Unreachable,
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
    pub audits: u64,
    pub passes: u64,
    pub failures: u64,
    pub timeouts: u64,
    /// Why the last failures happened, newest last (at most 5).
    pub last_failures: Vec<String>,
    /// Unix seconds of the last answer of any kind (liveness).
    pub last_seen: u64,
    /// Unix seconds since when it has been silent without a break (0: it
    /// answered the last challenge).
    #[serde(default)]
    pub silent_since: u64,
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

    /// Vetted and below the threshold: earns nothing.
    pub fn disqualified(&self) -> bool {
        self.audits >= VETTING_AUDITS && self.score() < DISQUALIFY_BELOW
    }

    /// Records an outcome; `why` says what went wrong, for operators.
    pub fn record(&mut self, outcome: Outcome, why: &str, now: u64) {
        let (v, w) = match outcome {
            Outcome::Pass => (1.0, FAILURE_WEIGHT),
            Outcome::WrongProof | Outcome::Missing => (-1.0, FAILURE_WEIGHT),
            Outcome::Timeout | Outcome::Unreachable => (-1.0, TIMEOUT_WEIGHT),
        };
        self.alpha = LAMBDA * self.alpha + w * (1.0 + v) / 2.0;
        self.beta = LAMBDA * self.beta + w * (1.0 - v) / 2.0;
        self.audits += 1;
        match outcome {
            Outcome::Pass => self.passes += 1,
            Outcome::WrongProof | Outcome::Missing => self.failures += 1,
            Outcome::Timeout | Outcome::Unreachable => self.timeouts += 1,
        }
        // Seen means it answered; silence (timeout or unreachable) is what
        // the repair grace period measures.
        if matches!(outcome, Outcome::Timeout | Outcome::Unreachable) {
            if self.silent_since == 0 {
                self.silent_since = now;
            }
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
    fn one_timeout_is_not_a_ban_and_steady_failure_is() {
        let mut r = Reputation::default();
        for _ in 0..200 {
            r.record(Outcome::Pass, "", 1);
        }
        r.record(Outcome::Timeout, "deadline", 2);
        assert!(r.score() > 0.99 && !r.disqualified(), "{}", r.score());
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
    }

    #[test]
    fn silence_is_measured_from_the_first_unanswered_challenge() {
        let mut r = Reputation::default();
        r.record(Outcome::Timeout, "deadline", 100);
        r.record(Outcome::Unreachable, "gone", 150);
        assert_eq!(r.silent_for(160), 60);
        assert_eq!(r.last_seen, 0);
        r.record(Outcome::WrongProof, "bad", 170);
        assert_eq!((r.silent_for(200), r.last_seen), (0, 170));
        r.record(Outcome::Timeout, "deadline", 300);
        assert_eq!(r.silent_for(310), 10);
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
