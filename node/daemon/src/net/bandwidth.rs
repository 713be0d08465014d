//! Bandwidth caps (`[limits] upload_rate`, `download_rate`): one token
//! bucket per direction, shared by every transfer of the node (shards
//! served and stored, pins and reads, repairs). A home line's upload is
//! shared with the household; the cap keeps the node under it.
//!
//! Challenge answers are never held back, so a capped node still answers
//! its audits in time: their bytes are charged to the bucket (bulk
//! transfers wait that much longer) but they do not wait for tokens.
//!
//! [`Bucket`] is the pure part, a state machine on the caller's clock in
//! seconds; [`Limiter`] is the async shell that sleeps what it says.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The smallest burst: what may go out at once after an idle spell.
const MIN_BURST: f64 = 64.0 * 1024.0;

/// A token bucket that may go into debt: a taker is told how long to wait
/// for its bytes, and the next taker waits behind it, so the rate holds
/// over any number of concurrent transfers.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bytes per second.
    rate: f64,
    /// Most tokens kept while idle.
    burst: f64,
    tokens: f64,
    at: f64,
}

impl Bucket {
    /// A full bucket at `now` for `rate` bytes per second (> 0); it holds
    /// a quarter second's bytes (at least 64 KiB) while idle.
    pub fn new(rate: u64, now: f64) -> Self {
        let rate = rate.max(1) as f64;
        let burst = (rate / 4.0).max(MIN_BURST);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.rate).min(self.burst);
            self.at = now;
        }
    }

    /// Takes `n` bytes at `now`: how many seconds the caller waits before
    /// sending (or after receiving) them; 0 when the bucket had them.
    pub fn take(&mut self, n: u64, now: f64) -> f64 {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }

    /// Counts `n` bytes that were not held back (a challenge answer).
    pub fn charge(&mut self, n: u64, now: f64) {
        self.refill(now);
        self.tokens -= n as f64;
    }
}

/// One direction's cap, or none.
#[derive(Debug)]
pub struct Limiter {
    bucket: Option<Mutex<Bucket>>,
    epoch: Instant,
}

impl Limiter {
    /// A cap of `rate` bytes per second; 0 means no cap.
    pub fn new(rate: u64) -> Self {
        Limiter {
            bucket: (rate > 0).then(|| Mutex::new(Bucket::new(rate, 0.0))),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Waits until `n` bytes fit under the cap.
    pub async fn take(&self, n: usize) {
        let Some(b) = &self.bucket else {
            return;
        };
        let wait = b.lock().expect("lock").take(n as u64, self.now());
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }

    /// Counts `n` bytes that go out at once (challenge answers).
    pub fn charge(&self, n: usize) {
        if let Some(b) = &self.bucket {
            b.lock().expect("lock").charge(n as u64, self.now());
        }
    }
}

/// The node's caps, both directions.
#[derive(Debug)]
pub struct Bandwidth {
    /// Bytes this node sends.
    pub up: Limiter,
    /// Bytes this node receives.
    pub down: Limiter,
}

impl Bandwidth {
    pub fn new(upload_rate: u64, download_rate: u64) -> Self {
        Bandwidth {
            up: Limiter::new(upload_rate),
            down: Limiter::new(download_rate),
        }
    }

    /// No caps.
    pub fn unlimited() -> Self {
        Self::new(0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a bucket with `takers` transfers of `chunk`-byte writes for
    /// `secs` on a virtual clock; returns the bytes sent.
    fn run(rate: u64, takers: usize, chunk: u64, secs: f64) -> f64 {
        let mut b = Bucket::new(rate, 0.0);
        // each taker's clock: when its next write may go
        let mut next = vec![0.0f64; takers];
        let mut sent = 0.0;
        loop {
            let (i, &t) = next
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            if t >= secs {
                return sent;
            }
            let wait = b.take(chunk, t);
            next[i] = t + wait;
            if t + wait <= secs {
                sent += chunk as f64;
            }
        }
    }

    #[test]
    fn the_rate_holds_over_many_takers_within_a_burst() {
        let rate = 1 << 20;
        for takers in [1, 4, 32] {
            let sent = run(rate, takers, 256 << 10, 20.0);
            let expected = rate as f64 * 20.0;
            // the burst and one chunk per taker in flight at most
            let slack = (rate as f64 / 4.0) + (takers as f64 * (256 << 10) as f64);
            assert!(
                sent <= expected + slack && sent >= expected - (256 << 10) as f64,
                "{takers} takers: {sent} bytes in 20 s at {rate} B/s"
            );
        }
    }

    #[test]
    fn charged_bytes_go_at_once_and_delay_the_rest() {
        let mut b = Bucket::new(1000 * 4, 0.0); // burst 64 KiB
        assert_eq!(b.take(65_536, 0.0), 0.0, "the burst goes at once");
        b.charge(8_000, 0.0); // a proof: no wait, but counted
        let wait = b.take(4_000, 0.0);
        assert!((wait - 3.0).abs() < 1e-9, "{wait}");
        // idle time refills up to the burst only
        let mut b = Bucket::new(1 << 20, 0.0);
        b.take(1 << 20, 0.0);
        assert_eq!(b.take(1, 100.0), 0.0);
        assert!(b.take(1 << 20, 100.0) > 0.7);
    }
}
