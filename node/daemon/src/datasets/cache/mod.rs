//! The edge cache: verified 16 KiB groups of the shards this node read,
//! kept within a byte budget (`[cache] memory`), so that a dataset read
//! again (a training job's next epoch, a hot file behind the gateway) is
//! served without going back to the miners.
//!
//! Only groups that passed verification against their shard id enter it;
//! bytes decoded around a failed holder never do. Eviction is quick_cache's
//! S3-FIFO-style policy (recency and frequency): groups read again move to
//! its "hot" part, so one long scan does not push out what is read often.
//! Half the budget admits new groups (quick_cache keeps 3% by default,
//! which suits lookups; a training epoch reads every group once, and the
//! next epoch should find them). One internal shard, not quick_cache's
//! several: each would get its own slice of the budget, and entries as
//! heavy as whole shards (below) fill slices unevenly, so one evicts while
//! the budget is not full (a reader of file after file fetched 3.5% of its
//! bytes twice with 4); a cache lookup per group or per shard read is far
//! too rare for its lock to matter.
//!
//! A shard read whole (a segment of a scan or a `cairn get`) is kept as one
//! entry holding the buffer it arrived in, not copied group by group: a
//! whole read then costs the cache no copy in and none out. Only a buffer
//! that is the shard's alone enters that way (a view into a larger buffer
//! would keep all of it alive under a smaller weight), and only a shard
//! small beside the budget (at most a sixteenth; quick_cache admits
//! nothing heavier than its hot half); other shards enter as groups.
//!
//! Behind it, optionally, [`disk`]: whole verified data shards on the local
//! disk, for datasets bigger than memory.

pub mod disk;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use cairn_proof::{GROUP_LEN, ShardId, group_count, group_range};
use quick_cache::sync::{Cache, DefaultLifecycle};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, Weighter};

/// Bookkeeping a cached group costs beyond its bytes (key, handle), counted
/// in the budget.
const ENTRY_OVERHEAD: u64 = 64;

/// The group index a shard kept whole is stored under.
const WHOLE: u64 = u64::MAX;

#[derive(Clone)]
struct GroupWeight;

impl Weighter<(ShardId, u64), Bytes> for GroupWeight {
    fn weight(&self, _key: &(ShardId, u64), group: &Bytes) -> u64 {
        group.len() as u64 + ENTRY_OVERHEAD
    }
}

/// What the cache did, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheStats {
    pub budget: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub inserted_bytes: u64,
    pub evicted_bytes: u64,
}

/// Verified groups by (shard id, group index).
pub struct GroupCache {
    cache: Option<Cache<(ShardId, u64), Bytes, GroupWeight>>,
    budget: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    inserted: AtomicU64,
}

impl GroupCache {
    /// A cache of at most `budget` bytes (0: no cache).
    pub fn new(budget: u64) -> Self {
        let cache = (budget > 0).then(|| {
            let items = (budget / (GROUP_LEN as u64 + ENTRY_OVERHEAD)).max(1) as usize;
            let options = OptionsBuilder::new()
                .estimated_items_capacity(items)
                .weight_capacity(budget)
                .hot_allocation(0.5)
                .shards(1)
                .build()
                .expect("valid cache options");
            Cache::with_options(
                options,
                GroupWeight,
                DefaultHashBuilder::default(),
                DefaultLifecycle::default(),
            )
        });
        GroupCache {
            cache,
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserted: AtomicU64::new(0),
        }
    }

    /// Whether it keeps anything (a budget above 0).
    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// Bytes `[from, to)` of shard `id` (`shard_len` bytes long) if the
    /// shard is kept whole or every group holding them is cached; one hit
    /// or one miss either way.
    pub fn get(&self, id: &ShardId, shard_len: u64, from: u64, to: u64) -> Option<Vec<u8>> {
        let cache = self.cache.as_ref()?;
        if let Some(whole) = self.whole(id, shard_len)
            && let Some(bytes) = whole.get(from as usize..to as usize)
        {
            self.hits.fetch_add(1, Relaxed);
            return Some(bytes.to_vec());
        }
        let g = GROUP_LEN as u64;
        let (g0, g1) = (from / g, to.div_ceil(g).max(from / g + 1));
        let mut out = Vec::with_capacity((to - from) as usize);
        for group in g0..g1 {
            let Some(bytes) = cache.get(&(*id, group)) else {
                self.misses.fetch_add(1, Relaxed);
                return None;
            };
            let r = group_range(shard_len, group);
            if bytes.len() as u64 != r.end - r.start {
                self.misses.fetch_add(1, Relaxed);
                return None;
            }
            let a = from.max(r.start) - r.start;
            let b = to.min(r.end) - r.start;
            out.extend_from_slice(&bytes[a as usize..b as usize]);
        }
        self.hits.fetch_add(1, Relaxed);
        Some(out)
    }

    /// All of shard `id` (`shard_len` bytes): the buffer it is kept in when
    /// kept whole (not copied), else its groups put together; one hit or
    /// one miss.
    pub fn get_whole(&self, id: &ShardId, shard_len: u64) -> Option<Bytes> {
        if let Some(whole) = self.whole(id, shard_len) {
            self.hits.fetch_add(1, Relaxed);
            return Some(whole);
        }
        self.get(id, shard_len, 0, shard_len).map(Bytes::from)
    }

    /// The entry of shard `id` kept whole, if it is there and as long as
    /// the manifest says (no hit or miss counted).
    fn whole(&self, id: &ShardId, shard_len: u64) -> Option<Bytes> {
        self.cache
            .as_ref()?
            .get(&(*id, WHOLE))
            .filter(|b| b.len() as u64 == shard_len)
    }

    /// Keeps all of shard `id`, verified by the caller against it, without
    /// copying it when `shard` is a buffer of its own (`Bytes::from` a
    /// `Vec` of exactly its length; never a view into a larger buffer) and
    /// small beside the budget; as groups (copied) otherwise.
    pub fn insert_whole(&self, id: &ShardId, shard_len: u64, shard: Bytes) {
        let Some(cache) = self.cache.as_ref() else {
            return;
        };
        if shard.len() as u64 != shard_len {
            return;
        }
        if shard_len + ENTRY_OVERHEAD > self.budget / 16 {
            self.insert(id, shard_len, 0, &shard);
            return;
        }
        self.inserted.fetch_add(shard_len, Relaxed);
        cache.insert((*id, WHOLE), shard);
    }

    /// Keeps verified bytes of shard `id` that start at group-aligned
    /// `start` (whole groups, the last one possibly the shard's short tail).
    pub fn insert(&self, id: &ShardId, shard_len: u64, start: u64, verified: &[u8]) {
        let Some(cache) = self.cache.as_ref() else {
            return;
        };
        let g = GROUP_LEN as u64;
        if !start.is_multiple_of(g) {
            return;
        }
        let mut pos = start;
        while pos < start + verified.len() as u64 {
            let r = group_range(shard_len, pos / g);
            let end = r.end.min(start + verified.len() as u64);
            if end != r.end {
                break; // a partial group: not what a reader of it expects
            }
            let bytes = &verified[(pos - start) as usize..(end - start) as usize];
            self.inserted.fetch_add(bytes.len() as u64, Relaxed);
            cache.insert((*id, pos / g), Bytes::copy_from_slice(bytes));
            pos = end;
        }
    }

    /// Marks the cached groups of shard `id` as read once (no hit counted),
    /// as a read-ahead does for the reader it expects: the policy then
    /// keeps them over groups inserted after them that nobody reads, where
    /// it evicts new groups first in first out.
    pub fn mark_wanted(&self, id: &ShardId, shard_len: u64) {
        if let Some(cache) = self.cache.as_ref() {
            if cache.get(&(*id, WHOLE)).is_some() {
                return;
            }
            for group in 0..group_count(shard_len) {
                let _ = cache.get(&(*id, group));
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let bytes = self.cache.as_ref().map_or(0, |c| {
            let w = c.weight();
            w - (c.len() as u64 * ENTRY_OVERHEAD).min(w)
        });
        let inserted = self.inserted.load(Relaxed);
        CacheStats {
            budget: self.budget,
            bytes,
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            inserted_bytes: inserted,
            evicted_bytes: inserted.saturating_sub(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ShardId {
        ShardId([n; 32])
    }

    #[test]
    fn ranges_come_back_exact_and_only_whole_groups_enter() {
        let c = GroupCache::new(1 << 20);
        let len = 40_000u64; // groups of 16384, 16384, 7232
        let shard: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert_eq!(c.get(&id(1), len, 0, 10), None);
        c.insert(&id(1), len, 0, &shard);
        for (a, b) in [(0, 1), (16_383, 16_385), (30_000, 40_000), (0, 40_000)] {
            assert_eq!(
                c.get(&id(1), len, a, b).unwrap(),
                shard[a as usize..b as usize]
            );
        }
        // a piece that does not end on a group boundary is not kept
        c.insert(&id(2), len, 0, &shard[..20_000]);
        assert!(c.get(&id(2), len, 0, 100).is_some());
        assert_eq!(c.get(&id(2), len, 16_384, 16_400), None);
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (5, 2));
    }

    #[test]
    fn groups_wanted_soon_outlast_a_scan_inserted_after_them() {
        let shard = vec![7u8; 256 << 10];
        let len = shard.len() as u64;
        for wanted in [false, true] {
            let c = GroupCache::new(1 << 20);
            // a scan has filled the cache
            for n in 0..8 {
                c.insert(&id(n), len, 0, &shard);
            }
            // a read-ahead, then more of the scan before its reader comes
            c.insert(&id(100), len, 0, &shard);
            if wanted {
                c.mark_wanted(&id(100), len);
                assert_eq!(c.stats().hits, 0, "marking counts no hit");
            }
            for n in 8..12 {
                c.insert(&id(n), len, 0, &shard);
            }
            assert_eq!(c.get(&id(100), len, 0, len).is_some(), wanted);
            assert!(c.stats().bytes <= 1 << 20);
        }
    }

    #[test]
    fn a_shard_read_whole_is_kept_in_its_own_buffer() {
        let len = 100_000u64;
        let shard = Bytes::from((0..len).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
        let c = GroupCache::new(4 << 20);
        c.insert_whole(&id(1), len, shard.clone());
        let back = c.get_whole(&id(1), len).unwrap();
        assert_eq!(back.as_ptr(), shard.as_ptr(), "not copied out");
        assert_eq!(back, shard);
        for (a, b) in [(0, 1), (16_383, 16_385), (90_000, 100_000)] {
            assert_eq!(
                c.get(&id(1), len, a, b).unwrap(),
                shard[a as usize..b as usize]
            );
        }
        // a reader that believes another length finds nothing
        assert_eq!(c.get_whole(&id(1), len + 1), None);
        // nor does a shard offered under a length it does not have enter
        c.insert_whole(&id(2), len, shard.slice(1..));
        assert_eq!(c.get(&id(2), len, 0, 1), None);
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.bytes), (4, 2, len));

        // Heavier than a sixteenth of the budget: kept as groups (copied),
        // still served whole and in ranges.
        let c = GroupCache::new(1 << 20);
        c.insert_whole(&id(3), len, shard.clone());
        let back = c.get_whole(&id(3), len).unwrap();
        assert_ne!(back.as_ptr(), shard.as_ptr());
        assert_eq!(back, shard);
        assert_eq!(
            c.get(&id(3), len, 50_000, 50_010).unwrap(),
            shard[50_000..50_010]
        );
    }

    #[test]
    fn the_budget_holds() {
        let budget = 256 << 10;
        let c = GroupCache::new(budget);
        let shard = vec![7u8; 4 << 20];
        for n in 0..8 {
            c.insert(&id(n), shard.len() as u64, 0, &shard);
            assert!(c.stats().bytes <= budget, "{:?}", c.stats());
        }
        let s = c.stats();
        assert!(s.evicted_bytes > 0 && s.bytes > 0, "{s:?}");
        // shards kept whole count against the same budget
        let c = GroupCache::new(32 << 20);
        for n in 0..64 {
            let shard = Bytes::from(vec![n; 1 << 20]);
            c.insert_whole(&id(n), 1 << 20, shard.clone());
            assert_eq!(
                c.get_whole(&id(n), 1 << 20).unwrap().as_ptr(),
                shard.as_ptr()
            );
            assert!(c.stats().bytes <= 32 << 20, "{:?}", c.stats());
        }
        assert!(c.stats().evicted_bytes >= 32 << 20, "{:?}", c.stats());
        assert!(GroupCache::new(0).get(&id(0), 10, 0, 1).is_none());
    }
}
