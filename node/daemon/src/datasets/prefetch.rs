//! Read-ahead for sequential readers: a reader whose range starts where
//! one of its dataset's recent ranges ended is reading in order (a training
//! job walking its shards, `curl` with Range steps), so the segment it is
//! reading into and the one after it are fetched whole in the background,
//! into the cache, before it asks.
//!
//! [`Trails`] is the decision, pure: it remembers the ends of the last few
//! ranges per dataset (several readers of one dataset each leave their own
//! trail) and which segments it already asked for, within fixed bounds.

use std::collections::{HashMap, VecDeque};

use cairn_proto::Cid;

/// Range ends remembered per dataset (one per concurrent sequential reader).
const TRAILS_PER_DATASET: usize = 16;
/// Segments remembered as already fetched ahead, per dataset.
const PREFETCHED_PER_DATASET: usize = 64;
/// Datasets tracked at once; the least recently read is forgotten.
const DATASETS: usize = 64;
/// Segments read ahead at once by the whole node (each holds up to a
/// segment's shards in memory while it is fetched).
pub const IN_FLIGHT: usize = 4;

#[derive(Default)]
struct DatasetTrail {
    ends: VecDeque<u64>,
    prefetched: VecDeque<usize>,
    last_use: u64,
}

/// The recent read positions of recently read datasets.
#[derive(Default)]
pub struct Trails {
    datasets: HashMap<Cid, DatasetTrail>,
    tick: u64,
}

impl Trails {
    /// Records a read of bytes `[start, end)` of dataset `cid`'s stream
    /// (`segments` segments of `segment_size` bytes); returns the segments
    /// to fetch ahead now: when the read continues an earlier one, the
    /// segment holding `end` and the next, unless already asked for or read
    /// whole by this very read.
    pub fn observe(
        &mut self,
        cid: Cid,
        start: u64,
        end: u64,
        segment_size: u64,
        segments: usize,
    ) -> Vec<usize> {
        self.tick += 1;
        if !self.datasets.contains_key(&cid) && self.datasets.len() >= DATASETS {
            let oldest = self
                .datasets
                .iter()
                .min_by_key(|(_, t)| t.last_use)
                .map(|(c, _)| *c);
            if let Some(c) = oldest {
                self.datasets.remove(&c);
            }
        }
        let trail = self.datasets.entry(cid).or_default();
        trail.last_use = self.tick;
        let sequential = match trail.ends.iter().position(|&e| e == start && start > 0) {
            Some(i) => {
                trail.ends.remove(i);
                true
            }
            None => false,
        };
        if trail.ends.len() >= TRAILS_PER_DATASET {
            trail.ends.pop_front();
        }
        trail.ends.push_back(end);
        if !sequential || segment_size == 0 || end <= start {
            return Vec::new();
        }
        let first = (end / segment_size) as usize;
        let mut ahead = Vec::new();
        for s in first..(first + 2).min(segments) {
            let (a, b) = (s as u64 * segment_size, (s as u64 + 1) * segment_size);
            let read_whole = start <= a && b <= end;
            if read_whole || trail.prefetched.contains(&s) {
                continue;
            }
            if trail.prefetched.len() >= PREFETCHED_PER_DATASET {
                trail.prefetched.pop_front();
            }
            trail.prefetched.push_back(s);
            ahead.push(s);
        }
        ahead
    }

    /// Forgets that segment `s` of `cid` was asked for (its read-ahead was
    /// skipped for want of a slot), so that the next read into it may ask
    /// again.
    pub fn forget(&mut self, cid: Cid, s: usize) {
        if let Some(trail) = self.datasets.get_mut(&cid) {
            trail.prefetched.retain(|&p| p != s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 100;

    #[test]
    fn sequential_steps_fetch_ahead_once_and_random_reads_do_not() {
        let cid = Cid([1; 32]);
        let mut t = Trails::default();
        assert!(
            t.observe(cid, 0, 30, SEG, 10).is_empty(),
            "the first read is not a trail yet"
        );
        assert_eq!(t.observe(cid, 30, 60, SEG, 10), vec![0, 1]);
        assert!(
            t.observe(cid, 60, 90, SEG, 10).is_empty(),
            "already asked for"
        );
        assert_eq!(t.observe(cid, 90, 120, SEG, 10), vec![2]);
        // random reads leave no trail to follow
        assert!(t.observe(cid, 500, 510, SEG, 10).is_empty());
        assert!(t.observe(cid, 300, 310, SEG, 10).is_empty());
        // the last segment has nothing after it
        assert_eq!(t.observe(cid, 510, 990, SEG, 10), vec![9]);
    }

    #[test]
    fn a_segment_forgotten_is_asked_for_again() {
        let cid = Cid([3; 32]);
        let mut t = Trails::default();
        t.observe(cid, 0, 30, SEG, 10);
        assert_eq!(t.observe(cid, 30, 60, SEG, 10), vec![0, 1]);
        t.forget(cid, 1);
        t.forget(Cid([4; 32]), 0); // an unknown dataset: nothing to forget
        assert_eq!(t.observe(cid, 60, 90, SEG, 10), vec![1]);
    }

    #[test]
    fn each_reader_keeps_its_own_trail_and_the_state_is_bounded() {
        let mut t = Trails::default();
        let cid = Cid([2; 32]);
        t.observe(cid, 0, 10, SEG, 1000);
        t.observe(cid, 5000, 5010, SEG, 1000);
        assert_eq!(t.observe(cid, 10, 20, SEG, 1000), vec![0, 1]);
        assert_eq!(t.observe(cid, 5010, 5020, SEG, 1000), vec![50, 51]);
        for n in 0..200u8 {
            t.observe(Cid([n; 32]), 0, 1, SEG, 10);
        }
        assert!(t.datasets.len() <= DATASETS);
        for i in 0..1000 {
            t.observe(cid, i * 10, i * 10 + 10, SEG, 1000);
        }
        let trail = &t.datasets[&cid];
        assert!(trail.ends.len() <= TRAILS_PER_DATASET);
        assert!(trail.prefetched.len() <= PREFETCHED_PER_DATASET);
    }
}
