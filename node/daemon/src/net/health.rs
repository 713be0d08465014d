//! Which peers failed lately: a reader asks them last, a pinner skips them.
//! Pure bookkeeping on the caller's clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_proto::NodeId;

/// How long a failed peer stays suspect (tried last).
pub const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// Peers that failed recently, and when.
#[derive(Debug, Default)]
pub struct PeerHealth {
    failures: Mutex<HashMap<NodeId, Instant>>,
}

impl PeerHealth {
    /// Records that a request to `peer` failed or timed out.
    pub fn failed(&self, peer: &NodeId, now: Instant) {
        let mut f = self.failures.lock().expect("lock");
        // Forget the long-recovered, so the map stays as small as the trouble.
        f.retain(|_, t| now.saturating_duration_since(*t) < SUSPECT_FOR);
        f.insert(*peer, now);
    }

    /// Records a success: `peer` is no longer suspect.
    pub fn ok(&self, peer: &NodeId) {
        self.failures.lock().expect("lock").remove(peer);
    }

    /// True if `peer` failed within [`SUSPECT_FOR`] of `now`.
    pub fn is_suspect(&self, peer: &NodeId, now: Instant) -> bool {
        self.failures
            .lock()
            .expect("lock")
            .get(peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < SUSPECT_FOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_suspect_for_a_while_and_a_success_clears_it() {
        let h = PeerHealth::default();
        let p = cairn_proto::SecretKey::from_bytes(&[1; 32]).public();
        let t0 = Instant::now();
        h.failed(&p, t0);
        assert!(h.is_suspect(&p, t0 + Duration::from_secs(29)));
        assert!(!h.is_suspect(&p, t0 + SUSPECT_FOR));
        h.failed(&p, t0);
        h.ok(&p);
        assert!(!h.is_suspect(&p, t0));
    }
}
