//! How long a miner has to answer a challenge: learned from the network,
//! not a constant.
//!
//! An honest answer costs one round trip, the proof's transfer over the
//! miner's uplink, and reading the sampled chunks' groups from its disk.
//! The validator measures the first two on its own challenges: the round
//! trip is the QUIC connection's estimate on the path in use, the uplink is
//! the proof's bytes over the time from its first byte to its last (so disk
//! time, or time spent fetching from elsewhere, does not inflate it, and
//! sending slowly buys nothing below 1 Mbit/s). A miner *can* stretch the
//! round trip by holding back its acknowledgements; each millisecond held
//! buys two, up to `deadline_secs` (docs/THREATS.md counts this). The disk
//! is budgeted, not learned, since a miner could learn to look slow:
//!
//! ```text
//! deadline = 2 x rtt + 2 x proof_len / max(uplink, 1 Mbit/s)
//!          + samples x 10 ms + 250 ms,   at most [validator] deadline_secs
//! ```
//!
//! A home link gets worse without notice (someone starts a video call; the
//! path falls back to a relay). So the round trip used is the larger of the
//! learned one and the connection's own estimate right now (QUIC measures it
//! on every ack, keep-alives included), and an unanswered challenge drops the
//! learned uplink to the 1 Mbit/s floor: the re-ask gets the budget any miner
//! can already earn by sending slowly, no more, and its pass teaches the new
//! uplink. A cheater who stays silent on purpose gains nothing it could not
//! have had by sending slowly, and spends a re-ask.
//!
//! 10 ms a sample covers a USB hard disk (one seek and a 16 KiB read); an SD
//! card or SSD needs 0.1 to 2 ms. The margin left for anything else (a
//! relay to a friend, fetching from peers) is therefore about `samples x 10
//! ms + 250 ms` less the honest disk time: 0.7 s at c = 44. Until a miner
//! has passed once, its deadline is the configured maximum.

/// Disk budget per sample (one random 16 KiB read on a hard disk).
pub const DISK_MS_PER_SAMPLE: f64 = 10.0;
/// Scheduling, a busy CPU, a garbage-collecting neighbour.
pub const SLACK_MS: f64 = 250.0;
/// The slowest uplink budgeted for: 1 Mbit/s. A miner cannot earn a longer
/// deadline by sending slowly.
pub const MIN_UPLINK_BYTES_PER_SEC: f64 = 125_000.0;
/// How fast the best uplink seen is forgotten, per observation.
const UPLINK_DECAY: f64 = 0.95;

/// What the validator has learned about one miner's link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkEstimate {
    /// Smoothed round trip (ms).
    pub rtt_ms: Option<f64>,
    /// The best uplink seen lately (bytes/s).
    pub uplink: Option<f64>,
}

impl LinkEstimate {
    /// Learns from a passed challenge: the connection's round trip (when
    /// known) and the proof's transfer (`proof_len` bytes in `transfer_ms`
    /// from first to last byte).
    pub fn observe(&mut self, rtt_ms: Option<f64>, proof_len: usize, transfer_ms: f64) {
        if let Some(r) = rtt_ms.filter(|r| r.is_finite() && *r >= 0.0) {
            self.rtt_ms = Some(match self.rtt_ms {
                None => r,
                Some(old) => 0.8 * old + 0.2 * r,
            });
        }
        if transfer_ms.is_finite() && proof_len > 0 {
            let rate = proof_len as f64 / (transfer_ms.max(0.05) / 1e3);
            self.uplink = Some(match self.uplink {
                None => rate,
                Some(old) => (old * UPLINK_DECAY).max(rate),
            });
        }
    }

    /// Learns from a challenge that went unanswered in time: the uplink
    /// may have shrunk, so the next deadline budgets the slowest uplink.
    pub fn missed(&mut self) {
        if let Some(u) = self.uplink.as_mut() {
            *u = u.min(MIN_UPLINK_BYTES_PER_SEC);
        }
    }

    /// The deadline (ms) for a challenge of `samples` samples whose proof
    /// is `proof_len` bytes, over a connection whose round trip is
    /// `rtt_now_ms` now (if known); `cap_ms` before anything is known, and
    /// at most.
    pub fn deadline_ms(
        &self,
        proof_len: usize,
        samples: u16,
        cap_ms: u64,
        rtt_now_ms: Option<f64>,
    ) -> u64 {
        let (Some(learned), Some(uplink)) = (self.rtt_ms, self.uplink) else {
            return cap_ms;
        };
        let rtt = rtt_now_ms
            .filter(|r| r.is_finite() && *r >= 0.0)
            .map_or(learned, |now| now.max(learned));
        let transfer_ms = proof_len as f64 / uplink.max(MIN_UPLINK_BYTES_PER_SEC) * 1e3;
        let d = 2.0 * rtt + 2.0 * transfer_ms + f64::from(samples) * DISK_MS_PER_SAMPLE + SLACK_MS;
        (d.ceil() as u64).min(cap_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_links_get_the_cap_and_known_ones_a_budget() {
        let mut l = LinkEstimate::default();
        assert_eq!(l.deadline_ms(60_000, 44, 10_000, None), 10_000);
        // a LAN miner: 1 ms round trip, 60 kB in 1 ms
        l.observe(Some(1.0), 60_000, 1.0);
        let d = l.deadline_ms(60_000, 44, 10_000, None);
        assert!((690..=700).contains(&d), "{d}");
        // a home uplink of 2 Mbit/s, 40 ms away: 60 kB take 240 ms
        let mut home = LinkEstimate::default();
        home.observe(Some(40.0), 60_000, 240.0);
        let d = home.deadline_ms(60_000, 44, 10_000, None);
        assert_eq!(d, 80 + 480 + 440 + 250);
    }

    #[test]
    fn sending_slowly_does_not_buy_time_beyond_the_slowest_uplink() {
        let mut slow = LinkEstimate::default();
        slow.observe(Some(1.0), 60_000, 60_000.0); // 1 kB/s
        let d = slow.deadline_ms(60_000, 44, 10_000, None);
        // 60 kB at 1 Mbit/s is 480 ms: twice that, and no more
        assert_eq!(d, 2 + 960 + 440 + 250);
    }

    #[test]
    fn the_round_trip_is_smoothed_and_the_uplink_is_the_best_seen() {
        let mut l = LinkEstimate::default();
        l.observe(Some(10.0), 60_000, 6.0);
        l.observe(Some(20.0), 60_000, 600.0);
        assert_eq!(l.rtt_ms, Some(12.0));
        assert!(
            l.uplink.unwrap() > 9e6,
            "a slow transfer does not erase a fast one at once"
        );
        l.observe(None, 0, f64::NAN);
        assert_eq!(l.rtt_ms, Some(12.0));
    }

    #[test]
    fn a_link_that_got_worse_is_followed() {
        // Learned on a LAN: 1 ms, 60 kB in 1 ms.
        let mut l = LinkEstimate::default();
        l.observe(Some(1.0), 60_000, 1.0);
        let lan = l.deadline_ms(60_000, 44, 10_000, Some(1.0));
        // The path now takes 230 ms: the deadline follows at once...
        let slow = l.deadline_ms(60_000, 44, 10_000, Some(230.0));
        assert_eq!(slow - lan, 2 * 229);
        // ...and a lower round trip now does not shrink the learned one.
        assert_eq!(l.deadline_ms(60_000, 44, 10_000, Some(0.1)), lan);
        // A missed answer: the re-ask budgets the slowest uplink, exactly
        // what sending slowly earns (sending_slowly_... above), no more.
        l.missed();
        let reask = l.deadline_ms(60_000, 44, 10_000, Some(230.0));
        assert_eq!(reask, 460 + 960 + 440 + 250);
        let mut slow_sender = LinkEstimate::default();
        slow_sender.observe(Some(230.0), 60_000, 60_000.0);
        assert_eq!(slow_sender.deadline_ms(60_000, 44, 10_000, None), reask);
        // Its pass at 2 Mbit/s teaches the new uplink.
        l.observe(Some(230.0), 60_000, 240.0);
        let learned = l.deadline_ms(60_000, 44, 10_000, Some(230.0));
        assert!(learned < reask, "{learned} < {reask}");
        // Nothing is known of a link never seen: missing it changes nothing.
        let mut unknown = LinkEstimate::default();
        unknown.missed();
        assert_eq!(unknown.deadline_ms(60_000, 44, 10_000, Some(5.0)), 10_000);
    }
}
