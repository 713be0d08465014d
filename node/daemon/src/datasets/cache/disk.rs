//! The edge cache's disk tier (`[cache] disk`): whole data shards a node
//! read, each in a file under `<data dir>/cache/` with its outboard behind
//! it, so a dataset bigger than the memory tier (a training set read epoch
//! after epoch) is served from the local disk instead of the miners.
//!
//! A file is checked every time it is read: a range group by group against
//! the shard id, exactly as bytes from a miner are (through the outboard
//! behind the shard); a whole shard (an epoch's sequential read, a `cairn
//! get`) against a checksum of its verified bytes taken when the file was
//! written (XXH3, 64 bits, seeded at random per run, kept in memory). A
//! disk that rots or a file cut short yields a miss (and the file is
//! dropped), never wrong bytes. The checksum is there for rot, not for a
//! forger (someone who can write the data directory can replace the node's
//! key beside it: docs/THREATS.md); re-hashing with BLAKE3 was the largest
//! item of a warm epoch's CPU, and the checksum took a fifth off the
//! gateway's CPU per GiB (docs/PERFORMANCE.md).
//! Writes are not synced: the tier starts empty after a restart, so no file
//! a crash cut short is ever read.
//!
//! Files are written behind the reads that fetched them. Until its file is
//! written, a shard is *staged*: its verified bytes are served from memory
//! (they are held for the write anyway), so a reader right behind a
//! read-ahead finds the segment here, never in neither tier. The caller
//! bounds what is staged (the bytes waiting to be written).
//!
//! The index of what is on disk lives in memory, so the tier starts empty:
//! at start the old directory is renamed aside in one step and deleted by a
//! background thread (start-up stays O(1) in what is cached). Eviction is
//! quick_cache's recency/frequency policy over whole shards; an evicted
//! shard's file is deleted by the call that evicted it.
//!
//! Everything here blocks (file I/O and hashing): callers run it on
//! tokio's blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use cairn_proof::{GROUP_LEN, ShardId, ShardVerifier, group_range, outboard_len};
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use crate::error::{Error, Result};

/// The directory under the data directory.
pub const DIR: &str = "cache";

/// What the index knows of a file: the shard's length and the checksum of
/// its bytes as written.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Kept {
    len: u64,
    sum: u64,
}

/// Weight of a cached shard: its bytes and its outboard on disk.
#[derive(Clone)]
struct FileWeight;

impl Weighter<ShardId, Kept> for FileWeight {
    fn weight(&self, _id: &ShardId, kept: &Kept) -> u64 {
        (kept.len + outboard_len(kept.len)).max(1)
    }
}

/// Collects the shards an insert evicted, whose files are then deleted.
#[derive(Clone, Default)]
struct Evictions;

impl Lifecycle<ShardId, Kept> for Evictions {
    type RequestState = Vec<(ShardId, u64)>;

    fn begin_request(&self) -> Self::RequestState {
        Vec::new()
    }

    fn on_evict(&self, state: &mut Self::RequestState, id: ShardId, kept: Kept) {
        state.push((id, kept.len));
    }
}

/// What the disk tier did, for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskStats {
    pub budget: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evicted_bytes: u64,
    /// Files that failed their check (or could not be read) and were dropped.
    pub dropped: u64,
}

/// Verified data shards on the local disk, by shard id.
pub struct DiskTier {
    dir: PathBuf,
    index: Cache<ShardId, Kept, FileWeight, DefaultHashBuilder, Evictions>,
    /// This run's seed of the whole-shard checksums.
    seed: u64,
    /// Verified shards whose files are being written ([`DiskTier::stage`]).
    staged: Mutex<HashMap<ShardId, Bytes>>,
    budget: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    evicted: AtomicU64,
    dropped: AtomicU64,
}

impl DiskTier {
    /// A tier of at most `budget` bytes in `<data_dir>/cache`, starting
    /// empty: whatever an earlier run left there is moved aside and deleted
    /// in the background.
    pub fn open(data_dir: &Path, budget: u64) -> Result<DiskTier> {
        let dir = data_dir.join(DIR);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        if dir.exists() {
            let aside = data_dir.join(format!("{DIR}.old-{stamp}"));
            std::fs::rename(&dir, &aside)
                .map_err(|e| Error::io(format!("moving the old cache {}", dir.display()), e))?;
        }
        // Old tiers (this run's, and any a crash left half deleted).
        let old: Vec<PathBuf> = std::fs::read_dir(data_dir)
            .map_err(|e| Error::io(format!("reading {}", data_dir.display()), e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("cache.old-"))
            .map(|e| e.path())
            .collect();
        if !old.is_empty() {
            std::thread::Builder::new()
                .name("cache-cleanup".into())
                .spawn(move || {
                    for d in old {
                        let _ = std::fs::remove_dir_all(d);
                    }
                })
                .map_err(|e| Error::io("starting the cache clean-up thread", e))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let unit = 2 << 20; // typical shard: 8 MiB segments over 4 data shards
        let options = OptionsBuilder::new()
            .estimated_items_capacity((budget / unit).max(16) as usize)
            .weight_capacity(budget)
            .hot_allocation(0.5)
            .shards(1)
            .build()
            .map_err(|e| Error::Internal(format!("disk cache options: {e:?}")))?;
        Ok(DiskTier {
            dir,
            index: Cache::with_options(
                options,
                FileWeight,
                DefaultHashBuilder::default(),
                Evictions,
            ),
            staged: Mutex::new(HashMap::new()),
            seed: rand::random(),
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    fn path(&self, id: &ShardId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(&hex)
    }

    /// Whether shard `id` is on disk or staged for it (no hit or miss
    /// counted).
    pub fn contains(&self, id: &ShardId) -> bool {
        self.index.peek(id).is_some() || self.staged.lock().expect("lock").contains_key(id)
    }

    /// Holds `shards` (whole, each verified by the caller against its id:
    /// they are served as they are) until [`Staged::write`] has written
    /// them (or failed to, or the `Staged` is dropped): reads in between are
    /// served these bytes.
    pub fn stage(self: &Arc<Self>, shards: Vec<(ShardId, Bytes)>) -> Staged {
        let mut staged = self.staged.lock().expect("lock");
        for (id, shard) in &shards {
            if self.index.peek(id).is_none() && !shard.is_empty() {
                staged.insert(*id, shard.clone());
            }
        }
        Staged {
            tier: Arc::clone(self),
            shards,
        }
    }

    /// The staged bytes `[from, to)` of shard `id`, counted as a hit.
    fn staged_range(&self, id: &ShardId, shard_len: u64, from: u64, to: u64) -> Option<Vec<u8>> {
        // Cloned under the lock, copied after it.
        let shard = self.staged.lock().expect("lock").get(id).cloned()?;
        if shard.len() as u64 != shard_len || from >= to || to > shard_len {
            return None;
        }
        self.hits.fetch_add(1, Relaxed);
        Some(shard[from as usize..to as usize].to_vec())
    }

    /// Bytes `[from, to)` of shard `id` (`shard_len` bytes long), read and
    /// checked against the id; `None` when it is not here or fails.
    pub fn get(&self, id: &ShardId, shard_len: u64, from: u64, to: u64) -> Option<Vec<u8>> {
        if let Some(bytes) = self.staged_range(id, shard_len, from, to) {
            return Some(bytes);
        }
        match self.index.get(id) {
            Some(kept) if kept.len == shard_len && from < to && to <= shard_len => {}
            _ => {
                self.misses.fetch_add(1, Relaxed);
                return None;
            }
        }
        match self.read_verified(id, shard_len, from, to) {
            Ok(bytes) => {
                self.hits.fetch_add(1, Relaxed);
                Some(bytes)
            }
            Err(e) => {
                tracing::warn!(shard = %id, error = %e, "dropping a cached shard that failed its check");
                self.misses.fetch_add(1, Relaxed);
                self.dropped.fetch_add(1, Relaxed);
                self.index.remove(id);
                let _ = std::fs::remove_file(self.path(id));
                None
            }
        }
    }

    /// All of shard `id` (`shard_len` bytes), checked in one pass against
    /// the checksum taken when its file was written: for a whole segment,
    /// whose shards are read (and checked) side by side. A file that fails
    /// is dropped, as in [`DiskTier::get`].
    pub fn read_whole(&self, id: &ShardId, shard_len: u64) -> Option<Vec<u8>> {
        if let Some(bytes) = self.staged_range(id, shard_len, 0, shard_len) {
            return Some(bytes);
        }
        let sum = match self.index.get(id) {
            Some(kept) if kept.len == shard_len => kept.sum,
            _ => {
                self.misses.fetch_add(1, Relaxed);
                return None;
            }
        };
        let path = self.path(id);
        // Read into spare capacity: no 2 MiB of zeros written first.
        let mut buf = Vec::with_capacity(shard_len as usize);
        let read = File::open(&path).and_then(|f| {
            use std::io::Read;
            f.take(shard_len).read_to_end(&mut buf)
        });
        let why = match read {
            Ok(n) if n as u64 != shard_len => format!("{n} bytes, not {shard_len}"),
            Ok(_) if self.checksum(&buf) != sum => "its bytes changed since written".into(),
            Ok(_) => {
                self.hits.fetch_add(1, Relaxed);
                return Some(buf);
            }
            Err(e) => e.to_string(),
        };
        tracing::warn!(shard = %id, error = %why, "dropping a cached shard that failed its check");
        self.misses.fetch_add(1, Relaxed);
        self.dropped.fetch_add(1, Relaxed);
        self.index.remove(id);
        let _ = std::fs::remove_file(path);
        None
    }

    fn read_verified(&self, id: &ShardId, shard_len: u64, from: u64, to: u64) -> Result<Vec<u8>> {
        let path = self.path(id);
        let file = File::open(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let mut outboard = vec![0u8; outboard_len(shard_len) as usize];
        file.read_exact_at(&mut outboard, shard_len)
            .map_err(|e| Error::io(format!("{}: outboard", path.display()), e))?;
        let verifier = ShardVerifier::new(*id, shard_len, &outboard)?;
        let g = GROUP_LEN as u64;
        let (g0, g1) = (from / g, to.div_ceil(g));
        let start = g0 * g;
        let end = group_range(shard_len, g1 - 1).end;
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| Error::io(format!("{}: shard bytes", path.display()), e))?;
        for group in g0..g1 {
            let r = group_range(shard_len, group);
            verifier.verify_group(
                group,
                &buf[(r.start - start) as usize..(r.end - start) as usize],
            )?;
        }
        if from == start && to == end {
            return Ok(buf);
        }
        Ok(buf[(from - start) as usize..(to - start) as usize].to_vec())
    }

    fn checksum(&self, bytes: &[u8]) -> u64 {
        twox_hash::XxHash3_64::oneshot_with_seed(self.seed, bytes)
    }

    /// Keeps `shard`, whole and verified by the caller against `id` (its
    /// outboard is computed here; bytes whose hash is not `id` are not
    /// kept). Files of shards this evicts are deleted.
    pub fn insert(&self, id: &ShardId, shard: &[u8]) -> Result<()> {
        if self.index.peek(id).is_some() || shard.is_empty() {
            return Ok(());
        }
        let (computed, outboard) = cairn_proof::shard_id_and_outboard(shard);
        if computed != *id {
            return Err(Error::Corrupt(format!(
                "bytes offered to the disk cache as shard {id} hash to {computed}"
            )));
        }
        let path = self.path(id);
        let parent = path.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        // Written aside and renamed, so a reader never opens half a file.
        let tmp = path.with_extension(format!("tmp-{}", rand::random::<u32>()));
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(shard)?;
            f.write_all(&outboard)
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("writing {}", path.display()), e));
        }
        let kept = Kept {
            len: shard.len() as u64,
            sum: self.checksum(shard),
        };
        let evicted = self.index.insert_with_lifecycle(*id, kept);
        for (gone, len) in evicted {
            self.evicted.fetch_add(len + outboard_len(len), Relaxed);
            if gone != *id {
                let _ = std::fs::remove_file(self.path(&gone));
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> DiskStats {
        DiskStats {
            budget: self.budget,
            bytes: self.index.weight(),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            evicted_bytes: self.evicted.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

/// Shards staged by [`DiskTier::stage`]: written by [`Staged::write`];
/// whatever is still staged when this is dropped (written, failed, or
/// never run) is unstaged.
pub struct Staged {
    tier: Arc<DiskTier>,
    shards: Vec<(ShardId, Bytes)>,
}

impl Staged {
    /// Writes each shard's file (blocking), unstaging each once its file is
    /// in the index: never in neither place while the file is good.
    pub fn write(mut self) {
        for (id, shard) in std::mem::take(&mut self.shards) {
            if let Err(e) = self.tier.insert(&id, &shard) {
                tracing::warn!(shard = %id, error = %e, "not kept in the disk cache");
            }
            self.tier.staged.lock().expect("lock").remove(&id);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let mut staged = self.tier.staged.lock().expect("lock");
        for (id, _) in &self.shards {
            staged.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(len: usize, seed: u8) -> (ShardId, Vec<u8>) {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        (cairn_proof::shard_id_and_outboard(&bytes).0, bytes)
    }

    #[test]
    fn ranges_come_back_checked_and_a_damaged_file_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 64 << 20).unwrap();
        let (id, bytes) = shard(40_000, 1);
        let len = bytes.len() as u64;
        assert!(tier.get(&id, len, 0, 1).is_none());
        tier.insert(&id, &bytes).unwrap();
        for (a, b) in [(0, 1), (16_383, 16_385), (30_000, 40_000), (0, 40_000)] {
            assert_eq!(
                tier.get(&id, len, a, b).unwrap(),
                bytes[a as usize..b as usize]
            );
        }
        // bytes that are not the shard they claim to be are refused
        let (other, _) = shard(40_000, 2);
        assert!(matches!(
            tier.insert(&other, &bytes),
            Err(Error::Corrupt(_))
        ));
        // one flipped byte on disk: a miss, and the file is gone
        let path = tier.path(&id);
        let mut on_disk = std::fs::read(&path).unwrap();
        on_disk[20_000] ^= 1;
        std::fs::write(&path, &on_disk).unwrap();
        assert!(tier.get(&id, len, 0, 10).is_some(), "group 0 is intact");
        assert!(tier.get(&id, len, 19_000, 21_000).is_none());
        assert!(!path.exists() && !tier.contains(&id));
        // read whole: checked in one pass, a damaged or short file dropped
        tier.insert(&id, &bytes).unwrap();
        assert_eq!(tier.read_whole(&id, len).unwrap(), bytes);
        std::fs::write(&path, &on_disk).unwrap();
        assert!(tier.read_whole(&id, len).is_none());
        assert!(!path.exists() && !tier.contains(&id));
        tier.insert(&id, &bytes).unwrap();
        std::fs::write(&path, &bytes[..100]).unwrap();
        assert!(tier.read_whole(&id, len).is_none());
        let s = tier.stats();
        assert_eq!((s.hits, s.misses, s.dropped), (6, 4, 3), "{s:?}");
    }

    #[test]
    fn a_staged_shard_is_served_until_its_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let tier = Arc::new(DiskTier::open(dir.path(), 64 << 20).unwrap());
        let (id, bytes) = shard(40_000, 4);
        let len = bytes.len() as u64;
        let staged = tier.stage(vec![(id, Bytes::from(bytes.clone()))]);
        assert!(tier.contains(&id) && !tier.path(&id).exists());
        assert_eq!(tier.get(&id, len, 100, 20_000).unwrap(), bytes[100..20_000]);
        assert_eq!(tier.read_whole(&id, len).unwrap(), bytes);
        // a wrong length or range is a miss, not a panic
        assert!(tier.get(&id, len + 1, 0, 1).is_none());
        assert!(tier.get(&id, len, 10, len + 1).is_none());
        staged.write();
        assert!(tier.staged.lock().unwrap().is_empty());
        assert!(tier.path(&id).exists());
        assert_eq!(tier.get(&id, len, 0, len).unwrap(), bytes);
        // a write that fails (bytes that are not the id's) ends the staging
        let (other, _) = shard(40_000, 5);
        tier.stage(vec![(other, Bytes::from(bytes.clone()))])
            .write();
        assert!(!tier.contains(&other));
        // and so does a write that never runs
        let (third, third_bytes) = shard(1000, 6);
        drop(tier.stage(vec![(third, Bytes::from(third_bytes))]));
        assert!(!tier.contains(&third));
        let s = tier.stats();
        assert_eq!((s.hits, s.misses), (3, 2), "{s:?}");
    }

    #[test]
    fn the_budget_holds_and_evicted_files_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let budget = 1 << 20;
        let tier = DiskTier::open(dir.path(), budget).unwrap();
        let mut ids = Vec::new();
        for n in 0..8 {
            let (id, bytes) = shard(300_000, n);
            tier.insert(&id, &bytes).unwrap();
            ids.push(id);
            assert!(tier.stats().bytes <= budget);
        }
        let on_disk: u64 = walk(&dir.path().join(DIR));
        assert!(on_disk <= budget, "{on_disk} bytes on disk");
        assert!(tier.stats().evicted_bytes > 0);
        assert_eq!(
            ids.iter().filter(|i| tier.contains(i)).count() as u64,
            on_disk / 301_000
        );
    }

    #[test]
    fn a_restart_starts_empty_and_clears_the_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        let (id, bytes) = shard(1000, 3);
        tier.insert(&id, &bytes).unwrap();
        drop(tier);
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        assert!(tier.get(&id, 1000, 0, 1).is_none());
        assert_eq!(walk(&dir.path().join(DIR)), 0);
    }

    fn walk(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path())
                } else {
                    e.metadata().unwrap().len()
                }
            })
            .sum()
    }
}
