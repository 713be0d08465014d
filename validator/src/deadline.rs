//! How long a miner has to answer a challenge: learned from the network,
//! not a constant.
//!
//! An honest answer costs one round trip, the proof's transfer over the
//! miner's uplink, and reading the sampled chunks' groups from its disk.
//! The validator measures the first two on its own challenges: the round
//! trip is the QUIC connection's estimate on the path in use, the uplink is
//! the proof's bytes over the time from its first byte to its last (so disk
//! time, or time spent fetching from elsewhere, does not inflate it, and
//! sending slowly buys nothing below 1 Mbit/s). The disk is budgeted, not
//! learned, since a miner could learn to look slow.
//!
//! A short transfer on a lossy or fresh path is bound by the sender's
//! congestion window more than by the line's rate: the window starts at
//! 12 kB and doubles each round trip, and loss keeps it small (5% loss
//! holds it near six packets: about 250 kbit/s at a 200 ms round trip,
//! whatever the line). So the transfer is budgeted twice: at the learned
//! rate, and in the round trips the window needs to grow to the proof's
//! size:
//!
//! ```text
//! deadline = (2 + window_rounds(proof_len, window)) x rtt
//!          + 2 x proof_len / max(uplink, 1 Mbit/s)
//!          + samples x 10 ms + 250 ms,   at most [validator] deadline_secs
//! ```
//!
//! `window_rounds` is 2 for the 45 kB proof of 44 samples from the initial
//! window, 4 from the smallest. A window held small by loss (six packets
//! at 5%) needs more round trips than a doubling one; the slack below
//! covers part of that, and a miss is asked again. A miner *can* stretch
//! the round trip by holding back its acknowledgements; each millisecond
//! held buys `2 + window_rounds` (four at 44 samples, six on a re-ask), up
//! to `deadline_secs` (docs/THREATS.md counts this).
//!
//! A home link gets worse without notice (someone starts a video call; the
//! path falls back to a relay). So the round trip used is the larger of the
//! learned one and the connection's own estimate right now (QUIC measures it
//! on every ack, keep-alives included), and an unanswered challenge drops the
//! learned uplink to the 1 Mbit/s floor and budgets the window from its
//! smallest (loss, the likeliest reason an honest miner misses, collapses
//! it): the re-ask gets the budget any miner can already earn by sending
//! slowly plus two round trips, and its pass teaches the new uplink. A
//! cheater who stays silent on purpose gains those two round trips (its own,
//! inflated if it holds back acknowledgements) and spends a re-ask.
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
/// QUIC's initial congestion window (RFC 9002: ten 1,200-byte datagrams).
pub const INITIAL_WINDOW_BYTES: f64 = 12_000.0;
/// QUIC's smallest congestion window (RFC 9002: two datagrams), where
/// persistent congestion leaves it.
pub const MIN_WINDOW_BYTES: f64 = 2_400.0;

/// Round trips a proof of `len` bytes waits on its sender's congestion
/// window after the first flight, when the window starts at `window` bytes
/// and doubles each round trip: 2 for a 45 kB proof from the initial window
/// (12 + 24 + 48 kB), 4 from the smallest. A lossy link keeps the window
/// small; this is what lets its proofs through.
pub fn window_rounds(len: usize, window: f64) -> u32 {
    let mut window = window.max(1.0);
    let mut sent = window;
    let mut rounds = 0;
    while sent < len as f64 && rounds < 32 {
        window *= 2.0;
        sent += window;
        rounds += 1;
    }
    rounds
}

/// What the validator has learned about one miner's link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkEstimate {
    /// Smoothed round trip (ms).
    pub rtt_ms: Option<f64>,
    /// The best uplink seen lately (bytes/s).
    pub uplink: Option<f64>,
    /// The last attempt went unanswered: the sender's window may have
    /// collapsed (loss is the likeliest reason an honest miner misses).
    pub missed_last: bool,
}

impl LinkEstimate {
    /// Learns from a passed challenge: the connection's round trip (when
    /// known) and the proof's transfer (`proof_len` bytes in `transfer_ms`
    /// from first to last byte).
    pub fn observe(&mut self, rtt_ms: Option<f64>, proof_len: usize, transfer_ms: f64) {
        self.missed_last = false;
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
    /// may have shrunk and the sender's window collapsed, so the next
    /// deadline budgets the slowest uplink and a window from its smallest.
    pub fn missed(&mut self) {
        self.missed_last = true;
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
        let window = if self.missed_last {
            MIN_WINDOW_BYTES
        } else {
            INITIAL_WINDOW_BYTES
        };
        let round_trips = 2.0 + f64::from(window_rounds(proof_len, window));
        let d = round_trips * rtt
            + 2.0 * transfer_ms
            + f64::from(samples) * DISK_MS_PER_SAMPLE
            + SLACK_MS;
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
        assert_eq!(d, 4 * 40 + 480 + 440 + 250);
    }

    #[test]
    fn sending_slowly_does_not_buy_time_beyond_the_slowest_uplink() {
        let mut slow = LinkEstimate::default();
        slow.observe(Some(1.0), 60_000, 60_000.0); // 1 kB/s
        let d = slow.deadline_ms(60_000, 44, 10_000, None);
        // 60 kB at 1 Mbit/s is 480 ms: twice that, and no more
        assert_eq!(d, 4 + 960 + 440 + 250);
    }

    #[test]
    fn a_proof_waits_on_its_senders_window_for_round_trips() {
        // 12 kB in the first flight, then 24, 48, 96...
        let w = INITIAL_WINDOW_BYTES;
        assert_eq!(window_rounds(0, w), 0);
        assert_eq!(window_rounds(12_000, w), 0);
        assert_eq!(window_rounds(12_001, w), 1);
        assert_eq!(window_rounds(36_000, w), 1);
        assert_eq!(window_rounds(45_000, w), 2);
        assert_eq!(window_rounds(cairn_proof::MAX_PROOF_LEN, w), 7);
        assert_eq!(window_rounds(usize::MAX, w), 32);
        // From the smallest window: 2.4, 4.8, 9.6, 19.2, 38.4 kB...
        assert_eq!(window_rounds(45_000, MIN_WINDOW_BYTES), 4);
        // So a far miner gets two more round trips for a 45 kB proof than
        // for a 10 kB one, and a near one next to nothing.
        let mut far = LinkEstimate::default();
        far.observe(Some(200.0), 45_000, 100.0);
        let big = far.deadline_ms(45_000, 44, 10_000, None);
        let small = far.deadline_ms(10_000, 44, 10_000, None);
        // (45 kB in 100 ms: 450 kB/s, so 35 kB more cost 156 ms twice over)
        let window_ms = (big - small) as f64 - 2.0 * 35_000.0 / 450_000.0 * 1e3;
        assert!((window_ms - 400.0).abs() <= 1.0, "{big} - {small}");
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
        assert_eq!(slow - lan, 4 * 229);
        // ...and a lower round trip now does not shrink the learned one.
        assert_eq!(l.deadline_ms(60_000, 44, 10_000, Some(0.1)), lan);
        // A missed answer: the re-ask budgets the slowest uplink, what
        // sending slowly earns (sending_slowly_... above), and a window
        // growing again from its smallest: two round trips more.
        l.missed();
        let reask = l.deadline_ms(60_000, 44, 10_000, Some(230.0));
        assert_eq!(reask, 6 * 230 + 960 + 440 + 250);
        let mut slow_sender = LinkEstimate::default();
        slow_sender.observe(Some(230.0), 60_000, 60_000.0);
        assert_eq!(
            slow_sender.deadline_ms(60_000, 44, 10_000, None) + 2 * 230,
            reask
        );
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
