//! The storage engine: RocksDB metadata plus one file per shard.
//!
//! A shard file holds the shard bytes followed by its outboard (the BLAKE3
//! tree, 1/256 of the shard), under `shards/<ab>/<cd>/<id hex>`. A write
//! streams into `tmp/<boot>/`, hashing as it goes; only bytes that hash to the
//! claimed id are fsynced (once, never per chunk), renamed into place and
//! committed to the metadata with a synced RocksDB write, all under one lock,
//! so that nothing unverified is ever where it could be served.
//!
//! Used space is a counter in RocksDB updated in the same batch as the shard
//! record: exact, never found by walking the disk. Opening is O(1) in the
//! number of shards; the walk that removes orphans left by a crash
//! ([`Store::reconcile`]) and the scrub that re-hashes shards to find bit rot
//! ([`Store::scrub_one`]) run in the background while the node serves.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_proof::{OutboardBuilder, ReadAt, ShardId, outboard_len};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::{Error, NodeId, Result};

const CF_SHARDS: &str = "shards";
const CF_OWNERS: &str = "owners";
const CF_PEERS: &str = "peers";
const CF_MANIFESTS: &str = "manifests";
const CF_COUNTERS: &str = "counters";
const CF_APP: &str = "app";
const COLUMN_FAMILIES: [&str; 6] = [
    CF_SHARDS,
    CF_OWNERS,
    CF_PEERS,
    CF_MANIFESTS,
    CF_COUNTERS,
    CF_APP,
];

const USED_BYTES: &[u8] = b"used_bytes";
const SHARD_COUNT: &[u8] = b"shard_count";
const MANIFEST_BYTES: &[u8] = b"manifest_bytes";

/// State of a shard record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// File present and, as far as we know, intact.
    Present,
    /// File found missing or truncated by reconcile.
    Lost,
    /// File failed a scrub (bit rot); removed.
    Corrupt,
}

/// The metadata record of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMeta {
    pub len: u64,
    pub stored_at: u64,
    pub state: ShardState,
    pub last_scrub: u64,
}

impl ShardMeta {
    const ENCODED: usize = 25;

    fn encode(&self) -> [u8; Self::ENCODED] {
        let mut b = [0u8; Self::ENCODED];
        b[..8].copy_from_slice(&self.len.to_le_bytes());
        b[8..16].copy_from_slice(&self.stored_at.to_le_bytes());
        b[16] = match self.state {
            ShardState::Present => 0,
            ShardState::Lost => 1,
            ShardState::Corrupt => 2,
        };
        b[17..25].copy_from_slice(&self.last_scrub.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Self> {
        if b.len() != Self::ENCODED {
            return Err(Error::Db(format!("shard record of {} bytes", b.len())));
        }
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        Ok(ShardMeta {
            len: u(0..8),
            stored_at: u(8..16),
            state: match b[16] {
                0 => ShardState::Present,
                1 => ShardState::Lost,
                _ => ShardState::Corrupt,
            },
            last_scrub: u(17..25),
        })
    }

    /// Bytes on disk: shard plus outboard.
    pub fn disk_len(&self) -> u64 {
        self.len + outboard_len(self.len)
    }
}

/// Counters describing the store, for status pages and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub capacity: u64,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub shard_count: u64,
    pub manifest_bytes: u64,
    pub reconcile_done: bool,
    pub orphans_removed: u64,
    pub temporaries_removed: u64,
    pub lost_found: u64,
    pub scrubbed: u64,
    pub corrupt_found: u64,
}

/// What a reconcile pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub temporaries_removed: u64,
    pub orphans_removed: u64,
    pub lost_found: u64,
    pub counter_fixed: bool,
}

/// The shard store of one node.
pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
    db: DB,
    capacity: u64,
    commit_lock: Mutex<()>,
    reserved: AtomicU64,
    next_tmp: AtomicU64,
    reconcile_done: AtomicBool,
    orphans_removed: AtomicU64,
    temporaries_removed: AtomicU64,
    lost_found: AtomicU64,
    scrubbed: AtomicU64,
    corrupt_found: AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn u64_value(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn io_at(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

impl Store {
    /// Opens (or creates) the store under `root` with `capacity` bytes for
    /// shards. O(1) in the number of shards stored.
    pub fn open(root: &Path, capacity: u64) -> Result<Store> {
        std::fs::create_dir_all(root.join("shards")).map_err(io_at(root, "create"))?;
        // Temporaries of this process go in their own directory, so that a
        // reconcile running beside live writes removes only older ones.
        let boot = format!(
            "{}-{}-{:08x}",
            now_secs(),
            std::process::id(),
            rand::random::<u32>()
        );
        let tmp = root.join("tmp").join(boot);
        std::fs::create_dir_all(&tmp).map_err(io_at(&tmp, "create"))?;

        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Sized for a 1 GiB board: small memtables, few open files, no stats.
        opts.set_write_buffer_size(4 << 20);
        opts.set_max_write_buffer_number(2);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(2);
        opts.set_max_total_wal_size(16 << 20);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let mut block = rocksdb::BlockBasedOptions::default();
        block.set_block_cache(&rocksdb::Cache::new_lru_cache(8 << 20));
        opts.set_block_based_table_factory(&block);
        let cfs = COLUMN_FAMILIES.iter().map(|name| {
            let mut o = Options::default();
            o.set_write_buffer_size(2 << 20);
            o.set_compression_type(rocksdb::DBCompressionType::None);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db_path = root.join("db");
        let db = DB::open_cf_descriptors(&opts, &db_path, cfs).map_err(|e| {
            let s = e.into_string();
            if s.contains("lock") {
                Error::Db(format!(
                    "{s}: is another cairn process using {}? stop it first",
                    root.display()
                ))
            } else {
                Error::Db(s)
            }
        })?;
        Ok(Store {
            root: root.to_path_buf(),
            tmp,
            db,
            capacity,
            commit_lock: Mutex::new(()),
            reserved: AtomicU64::new(0),
            next_tmp: AtomicU64::new(0),
            reconcile_done: AtomicBool::new(false),
            orphans_removed: AtomicU64::new(0),
            temporaries_removed: AtomicU64::new(0),
            lost_found: AtomicU64::new(0),
            scrubbed: AtomicU64::new(0),
            corrupt_found: AtomicU64::new(0),
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family opened")
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    fn counter(&self, key: &[u8]) -> Result<u64> {
        Ok(u64_value(self.db.get_cf(self.cf(CF_COUNTERS), key)?))
    }

    /// Root directory of the store.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a shard's file.
    pub fn shard_path(&self, id: &ShardId) -> PathBuf {
        let hex = id.to_hex();
        self.root
            .join("shards")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(hex)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes used by committed shards (the RocksDB counter).
    pub fn used_bytes(&self) -> Result<u64> {
        self.counter(USED_BYTES)
    }

    /// Bytes neither used nor reserved by writes in flight.
    pub fn free_bytes(&self) -> Result<u64> {
        Ok(self
            .capacity
            .saturating_sub(self.used_bytes()?)
            .saturating_sub(self.reserved.load(Ordering::Relaxed)))
    }

    pub fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            capacity: self.capacity,
            used_bytes: self.used_bytes()?,
            reserved_bytes: self.reserved.load(Ordering::Relaxed),
            shard_count: self.counter(SHARD_COUNT)?,
            manifest_bytes: self.counter(MANIFEST_BYTES)?,
            reconcile_done: self.reconcile_done.load(Ordering::Acquire),
            orphans_removed: self.orphans_removed.load(Ordering::Relaxed),
            temporaries_removed: self.temporaries_removed.load(Ordering::Relaxed),
            lost_found: self.lost_found.load(Ordering::Relaxed),
            scrubbed: self.scrubbed.load(Ordering::Relaxed),
            corrupt_found: self.corrupt_found.load(Ordering::Relaxed),
        })
    }

    /// The record of a shard, whatever its state.
    pub fn shard_meta(&self, id: &ShardId) -> Result<Option<ShardMeta>> {
        match self.db.get_cf(self.cf(CF_SHARDS), id.0)? {
            Some(b) => Ok(Some(ShardMeta::decode(&b)?)),
            None => Ok(None),
        }
    }

    /// Bytes stored here on behalf of `peer`.
    pub fn peer_usage(&self, peer: &NodeId) -> Result<u64> {
        Ok(u64_value(
            self.db.get_cf(self.cf(CF_PEERS), peer.as_bytes())?,
        ))
    }

    /// True if `owner` holds a reference to shard `id`.
    pub fn is_owner(&self, id: &ShardId, owner: &NodeId) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_OWNERS), owner_key(id, owner))?
            .is_some())
    }

    /// Starts writing a shard of `len` bytes claimed to hash to `id`, on
    /// behalf of `owner`. Reserves the space, or fails with [`Error::Full`].
    pub fn begin_write(
        self: &Arc<Self>,
        id: ShardId,
        len: u64,
        owner: NodeId,
    ) -> Result<ShardWriter> {
        let disk = len + outboard_len(len);
        // Reserve first, then check, so that concurrent writers cannot all pass.
        let reserved_before = self.reserved.fetch_add(disk, Ordering::AcqRel);
        let used = self.used_bytes()?;
        if used.saturating_add(reserved_before).saturating_add(disk) > self.capacity {
            self.reserved.fetch_sub(disk, Ordering::AcqRel);
            return Err(Error::Full {
                needed: disk,
                free: self
                    .capacity
                    .saturating_sub(used)
                    .saturating_sub(reserved_before),
                capacity: self.capacity,
            });
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp_path = self.tmp.join(format!("{}.{n}.part", id.to_hex()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| {
                self.reserved.fetch_sub(disk, Ordering::AcqRel);
                Error::io(format!("create {}", tmp_path.display()), e)
            })?;
        Ok(ShardWriter {
            store: Arc::clone(self),
            id,
            len,
            disk,
            owner,
            tmp_path,
            file: Some(file),
            hasher: OutboardBuilder::new(len)?,
        })
    }

    /// Adds `owner` as a holder of an existing present shard (a second put
    /// of the same bytes). Returns false if the shard is not present.
    pub fn add_owner(&self, id: &ShardId, owner: &NodeId) -> Result<bool> {
        let _g = self.commit_lock.lock().expect("lock");
        let Some(meta) = self.shard_meta(id)? else {
            return Ok(false);
        };
        if meta.state != ShardState::Present {
            return Ok(false);
        }
        if !self.is_owner(id, owner)? {
            let mut b = WriteBatch::default();
            b.put_cf(self.cf(CF_OWNERS), owner_key(id, owner), []);
            let pu = self.peer_usage(owner)? + meta.disk_len();
            b.put_cf(self.cf(CF_PEERS), owner.as_bytes(), pu.to_le_bytes());
            self.db.write_opt(b, &Self::synced())?;
        }
        Ok(true)
    }

    /// Removes `owner`'s reference to a shard; the shard itself goes when no
    /// owner is left. Idempotent. `Err` if `owner` does not hold it and the
    /// shard exists (only holders may delete).
    pub fn delete(&self, id: &ShardId, owner: &NodeId, force: bool) -> Result<DeleteOutcome> {
        let path = self.shard_path(id);
        let _g = self.commit_lock.lock().expect("lock");
        let Some(meta) = self.shard_meta(id)? else {
            return Ok(DeleteOutcome::NotStored);
        };
        let owners = self.owners(id)?;
        if !force && !owners.contains(owner) {
            return Err(Error::Other(format!(
                "shard {id} is held for other peers; only a holder may delete it"
            )));
        }
        let mut b = WriteBatch::default();
        let removing: Vec<NodeId> = if force { owners.clone() } else { vec![*owner] };
        for o in &removing {
            b.delete_cf(self.cf(CF_OWNERS), owner_key(id, o));
            let pu = self.peer_usage(o)?.saturating_sub(meta.disk_len());
            b.put_cf(self.cf(CF_PEERS), o.as_bytes(), pu.to_le_bytes());
        }
        let last = owners.iter().all(|o| removing.contains(o));
        if last {
            b.delete_cf(self.cf(CF_SHARDS), id.0);
            if meta.state == ShardState::Present {
                let used = self.used_bytes()?.saturating_sub(meta.disk_len());
                b.put_cf(self.cf(CF_COUNTERS), USED_BYTES, used.to_le_bytes());
            }
            let count = self.counter(SHARD_COUNT)?.saturating_sub(1);
            b.put_cf(self.cf(CF_COUNTERS), SHARD_COUNT, count.to_le_bytes());
        }
        self.db.write_opt(b, &Self::synced())?;
        if last {
            // Metadata first: a crash here leaves an orphan file, which reconcile removes.
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
            }
            Ok(DeleteOutcome::Deleted)
        } else {
            Ok(DeleteOutcome::Released)
        }
    }

    /// Holders of a shard.
    pub fn owners(&self, id: &ShardId) -> Result<Vec<NodeId>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_OWNERS),
            IteratorMode::From(&id.0, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if k.len() != 64 || k[..32] != id.0 {
                break;
            }
            let pk: [u8; 32] = k[32..].try_into().expect("32 bytes");
            if let Ok(n) = NodeId::from_bytes(&pk) {
                out.push(n);
            }
        }
        Ok(out)
    }

    /// Opens a present shard for reading.
    pub fn open_shard(&self, id: &ShardId) -> Result<ShardFile> {
        let meta = match self.shard_meta(id)? {
            Some(m) if m.state == ShardState::Present => m,
            _ => return Err(Error::ShardNotFound(*id)),
        };
        let path = self.shard_path(id);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::ShardNotFound(*id)
            } else {
                Error::io(format!("open {}", path.display()), e)
            }
        })?;
        Ok(ShardFile {
            file,
            len: meta.len,
        })
    }

    /// Up to `limit` records with ids after `after`, in id order.
    pub fn inventory(
        &self,
        after: Option<&ShardId>,
        limit: usize,
    ) -> Result<Vec<(ShardId, ShardMeta)>> {
        let mode = match after {
            Some(a) => IteratorMode::From(&a.0, rocksdb::Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in self.db.iterator_cf(self.cf(CF_SHARDS), mode) {
            let (k, v) = item?;
            let Ok(key) = <[u8; 32]>::try_from(&k[..]) else {
                continue;
            };
            if after.is_some_and(|a| a.0 == key) {
                continue;
            }
            out.push((ShardId(key), ShardMeta::decode(&v)?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Stores a manifest (opaque bytes, keyed by its content id) for `owner`.
    pub fn put_manifest(&self, cid: &[u8; 32], bytes: &[u8], owner: &NodeId) -> Result<()> {
        let _g = self.commit_lock.lock().expect("lock");
        let cf = self.cf(CF_MANIFESTS);
        let mut b = WriteBatch::default();
        let mut value = Vec::with_capacity(32 + bytes.len());
        value.extend_from_slice(owner.as_bytes());
        value.extend_from_slice(bytes);
        let old = self.db.get_pinned_cf(cf, cid)?.map(|v| v.len() as u64);
        let total = self.counter(MANIFEST_BYTES)? - old.unwrap_or(0) + value.len() as u64;
        b.put_cf(cf, cid, value);
        b.put_cf(self.cf(CF_COUNTERS), MANIFEST_BYTES, total.to_le_bytes());
        self.db.write_opt(b, &Self::synced())?;
        Ok(())
    }

    /// A stored manifest and the peer that stored it.
    pub fn get_manifest(&self, cid: &[u8; 32]) -> Result<Option<(NodeId, Vec<u8>)>> {
        let Some(v) = self.db.get_cf(self.cf(CF_MANIFESTS), cid)? else {
            return Ok(None);
        };
        if v.len() < 32 {
            return Err(Error::Db("manifest record too short".into()));
        }
        let owner = NodeId::from_bytes(v[..32].try_into().expect("32"))
            .map_err(|e| Error::Db(format!("manifest owner: {e}")))?;
        Ok(Some((owner, v[32..].to_vec())))
    }

    /// Removes a manifest; only its owner (or `force`) may.
    pub fn delete_manifest(&self, cid: &[u8; 32], requester: &NodeId, force: bool) -> Result<bool> {
        let _g = self.commit_lock.lock().expect("lock");
        let cf = self.cf(CF_MANIFESTS);
        let Some(v) = self.db.get_cf(cf, cid)? else {
            return Ok(false);
        };
        if !force && v.get(..32) != Some(requester.as_bytes().as_slice()) {
            return Err(Error::Other(
                "this manifest was stored by another peer; only it may delete it".into(),
            ));
        }
        let total = self.counter(MANIFEST_BYTES)?.saturating_sub(v.len() as u64);
        let mut b = WriteBatch::default();
        b.delete_cf(cf, cid);
        b.put_cf(self.cf(CF_COUNTERS), MANIFEST_BYTES, total.to_le_bytes());
        self.db.write_opt(b, &Self::synced())?;
        Ok(true)
    }

    /// Stores a placement record if it is newer than the one held. Returns
    /// the version now held and whether `bytes` replaced it.
    pub fn put_placement(
        &self,
        cid: &[u8; 32],
        version: u64,
        owner: &NodeId,
        bytes: &[u8],
    ) -> Result<(u64, bool)> {
        let _g = self.commit_lock.lock().expect("lock");
        let key = placement_key(cid);
        if let Some(old) = self.db.get_cf(self.cf(CF_APP), &key)?
            && old.len() >= 40
        {
            let held = u64::from_le_bytes(old[..8].try_into().expect("8"));
            if held >= version {
                return Ok((held, false));
            }
            if old[8..40] != owner.as_bytes()[..] {
                return Err(Error::Other(
                    "placement names another owner than the one held".into(),
                ));
            }
        }
        let mut value = Vec::with_capacity(40 + bytes.len());
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(owner.as_bytes());
        value.extend_from_slice(bytes);
        self.db
            .put_cf_opt(self.cf(CF_APP), key, value, &Self::synced())?;
        Ok((version, true))
    }

    /// The placement record held for a CID.
    pub fn get_placement(&self, cid: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_APP), placement_key(cid))?
            .filter(|v| v.len() >= 40)
            .map(|v| v[40..].to_vec()))
    }

    /// Drops the placement record of a CID.
    pub fn delete_placement(&self, cid: &[u8; 32]) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_APP), placement_key(cid), &Self::synced())?;
        Ok(())
    }

    /// True if a present copy of `id` is held.
    pub fn has_shard(&self, id: &ShardId) -> Result<bool> {
        Ok(matches!(self.shard_meta(id)?, Some(m) if m.state == ShardState::Present))
    }

    /// A key-value space for other components (pins, scores, repair queue),
    /// keys prefixed by the caller.
    pub fn app_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_cf_opt(self.cf(CF_APP), key, value, &Self::synced())?;
        Ok(())
    }

    pub fn app_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_APP), key)?)
    }

    pub fn app_delete(&self, key: &[u8]) -> Result<()> {
        self.db
            .delete_cf_opt(self.cf(CF_APP), key, &Self::synced())?;
        Ok(())
    }

    /// All app entries whose key starts with `prefix`.
    pub fn app_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_APP),
            IteratorMode::From(prefix, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Removes what a crash left behind and checks records against files.
    /// Runs beside live traffic: every decision is re-checked under the
    /// commit lock. O(shards); meant for a background thread.
    pub fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        // 1. Temporaries of earlier processes.
        let tmp_root = self.root.join("tmp");
        if let Ok(entries) = std::fs::read_dir(&tmp_root) {
            for entry in entries.flatten() {
                let p = entry.path();
                if p == self.tmp {
                    continue;
                }
                if let Ok(files) = std::fs::read_dir(&p) {
                    report.temporaries_removed += files.count() as u64;
                }
                std::fs::remove_dir_all(&p).map_err(io_at(&p, "remove"))?;
            }
        }
        // 2. Files without a record (crash between rename and commit, or
        //    between a delete's commit and its unlink).
        let shards_root = self.root.join("shards");
        for l1 in read_dir_sorted(&shards_root)? {
            for l2 in read_dir_sorted(&l1)? {
                for f in read_dir_sorted(&l2)? {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    let id = name.parse::<ShardId>().ok();
                    let _g = self.commit_lock.lock().expect("lock");
                    let keep = match id {
                        Some(id) => matches!(
                            self.shard_meta(&id)?,
                            Some(m) if m.state == ShardState::Present
                        ),
                        None => false,
                    };
                    if !keep {
                        std::fs::remove_file(&f).map_err(io_at(&f, "remove"))?;
                        report.orphans_removed += 1;
                    }
                }
            }
        }
        // 3. Records whose file is gone or short: mark lost, stop counting them.
        let mut after: Option<ShardId> = None;
        loop {
            let page = self.inventory(after.as_ref(), 1024)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            for (id, meta) in page {
                if meta.state != ShardState::Present {
                    continue;
                }
                let path = self.shard_path(&id);
                let ok = std::fs::metadata(&path)
                    .map(|m| m.len() == meta.disk_len())
                    .unwrap_or(false);
                if !ok {
                    let _g = self.commit_lock.lock().expect("lock");
                    if self.shard_meta(&id)? == Some(meta) {
                        self.mark_gone(&id, meta, ShardState::Lost)?;
                        let _ = std::fs::remove_file(&path);
                        report.lost_found += 1;
                    }
                }
            }
        }
        // 4. The counter must equal the sum of present records.
        {
            let _g = self.commit_lock.lock().expect("lock");
            let mut sum = 0u64;
            let mut count = 0u64;
            for item in self.db.iterator_cf(self.cf(CF_SHARDS), IteratorMode::Start) {
                let (_, v) = item?;
                let m = ShardMeta::decode(&v)?;
                count += 1;
                if m.state == ShardState::Present {
                    sum += m.disk_len();
                }
            }
            if sum != self.used_bytes()? || count != self.counter(SHARD_COUNT)? {
                tracing::warn!(
                    counted = sum,
                    recorded = self.used_bytes()?,
                    "used-space counter disagreed with the records; fixed"
                );
                let mut b = WriteBatch::default();
                b.put_cf(self.cf(CF_COUNTERS), USED_BYTES, sum.to_le_bytes());
                b.put_cf(self.cf(CF_COUNTERS), SHARD_COUNT, count.to_le_bytes());
                self.db.write_opt(b, &Self::synced())?;
                report.counter_fixed = true;
            }
        }
        self.temporaries_removed
            .fetch_add(report.temporaries_removed, Ordering::Relaxed);
        self.orphans_removed
            .fetch_add(report.orphans_removed, Ordering::Relaxed);
        self.lost_found
            .fetch_add(report.lost_found, Ordering::Relaxed);
        self.reconcile_done.store(true, Ordering::Release);
        Ok(report)
    }

    /// Under the commit lock: records a shard as lost or corrupt and stops counting its bytes.
    fn mark_gone(&self, id: &ShardId, meta: ShardMeta, state: ShardState) -> Result<()> {
        let mut b = WriteBatch::default();
        let new = ShardMeta { state, ..meta };
        b.put_cf(self.cf(CF_SHARDS), id.0, new.encode());
        if meta.state == ShardState::Present {
            let used = self.used_bytes()?.saturating_sub(meta.disk_len());
            b.put_cf(self.cf(CF_COUNTERS), USED_BYTES, used.to_le_bytes());
        }
        self.db.write_opt(b, &Self::synced())?;
        Ok(())
    }

    /// Re-hashes the first present shard after `after` whose last scrub is
    /// older than `older_than` (unix seconds). Returns the shard visited, if
    /// any, and whether it was intact. A corrupt shard is removed and marked.
    pub fn scrub_one(
        &self,
        after: Option<&ShardId>,
        older_than: u64,
    ) -> Result<Option<(ShardId, bool, u64)>> {
        let mut cursor = after.copied();
        loop {
            let page = self.inventory(cursor.as_ref(), 256)?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            cursor = Some(last.0);
            for (id, meta) in page {
                if meta.state != ShardState::Present || meta.last_scrub >= older_than {
                    continue;
                }
                let intact = self.rehash(&id, meta.len).unwrap_or(false);
                let _g = self.commit_lock.lock().expect("lock");
                if self.shard_meta(&id)? != Some(meta) {
                    return Ok(Some((id, true, 0)));
                }
                self.scrubbed.fetch_add(1, Ordering::Relaxed);
                if intact {
                    let new = ShardMeta {
                        last_scrub: now_secs(),
                        ..meta
                    };
                    self.db.put_cf(self.cf(CF_SHARDS), id.0, new.encode())?;
                } else {
                    self.corrupt_found.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(shard = %id, "scrub: shard does not match its id (bit rot); removed");
                    self.mark_gone(&id, meta, ShardState::Corrupt)?;
                    let _ = std::fs::remove_file(self.shard_path(&id));
                }
                return Ok(Some((id, intact, meta.disk_len())));
            }
        }
    }

    fn rehash(&self, id: &ShardId, len: u64) -> Result<bool> {
        let path = self.shard_path(id);
        let file = File::open(&path).map_err(io_at(&path, "open"))?;
        let mut b = OutboardBuilder::new(len)?;
        let mut buf = vec![0u8; 256 << 10];
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], off)
                .map_err(io_at(&path, "read"))?;
            b.update(&buf[..n])?;
            off += n as u64;
        }
        let (actual, ob) = b.finalize()?;
        let mut stored = vec![0u8; ob.len()];
        file.read_exact_at(&mut stored, len)
            .map_err(io_at(&path, "read"))?;
        Ok(actual == *id && stored == ob)
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(r) => r.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    v.sort();
    Ok(v)
}

fn placement_key(cid: &[u8; 32]) -> Vec<u8> {
    let mut k = b"placement/".to_vec();
    k.extend_from_slice(cid);
    k
}

fn owner_key(id: &ShardId, owner: &NodeId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&id.0);
    k[32..].copy_from_slice(owner.as_bytes());
    k
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The last holder let go: record and file removed.
    Deleted,
    /// Other holders remain; only this holder's reference was removed.
    Released,
    /// Nothing was stored under that id.
    NotStored,
}

/// A shard being written: bytes stream in, are hashed, and only a complete
/// shard that hashes to its claimed id is committed. Dropping it without
/// [`ShardWriter::commit`] removes the temporary and releases the space.
pub struct ShardWriter {
    store: Arc<Store>,
    id: ShardId,
    len: u64,
    disk: u64,
    owner: NodeId,
    tmp_path: PathBuf,
    file: Option<File>,
    hasher: OutboardBuilder,
}

impl ShardWriter {
    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.hasher.bytes_fed()
    }

    /// Declared length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes; fails if they go past the declared length.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes)?;
        let f = self.file.as_mut().expect("open until commit");
        f.write_all(bytes)
            .map_err(|e| Error::io(format!("write {}", self.tmp_path.display()), e))
    }

    /// Checks the hash, appends the outboard, fsyncs once, renames into
    /// place and commits the record (synced). Blocking: call it off the
    /// async executor.
    pub fn commit(mut self) -> Result<()> {
        let hasher = std::mem::replace(&mut self.hasher, OutboardBuilder::new(0)?);
        let (actual, outboard) = hasher.finalize()?;
        if actual != self.id {
            return Err(Error::HashMismatch {
                claimed: self.id,
                actual,
            });
        }
        let mut f = self.file.take().expect("open until commit");
        f.write_all(&outboard)
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io(format!("write {}", self.tmp_path.display()), e))?;
        drop(f);
        let store = Arc::clone(&self.store);
        let dest = store.shard_path(&self.id);
        let _g = store.commit_lock.lock().expect("lock");
        let existing = store.shard_meta(&self.id)?;
        let mut b = WriteBatch::default();
        if matches!(existing, Some(m) if m.state == ShardState::Present) {
            // Same bytes already here (another writer won): keep theirs.
            let _ = std::fs::remove_file(&self.tmp_path);
        } else {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(io_at(dir, "create"))?;
            }
            std::fs::rename(&self.tmp_path, &dest).map_err(io_at(&dest, "rename into"))?;
            let meta = ShardMeta {
                len: self.len,
                stored_at: now_secs(),
                state: ShardState::Present,
                last_scrub: now_secs(),
            };
            b.put_cf(store.cf(CF_SHARDS), self.id.0, meta.encode());
            let used = store.used_bytes()? + self.disk;
            b.put_cf(store.cf(CF_COUNTERS), USED_BYTES, used.to_le_bytes());
            if existing.is_none() {
                let count = store.counter(SHARD_COUNT)? + 1;
                b.put_cf(store.cf(CF_COUNTERS), SHARD_COUNT, count.to_le_bytes());
            }
        }
        if !store.is_owner(&self.id, &self.owner)? {
            b.put_cf(store.cf(CF_OWNERS), owner_key(&self.id, &self.owner), []);
            let pu = store.peer_usage(&self.owner)? + self.disk;
            b.put_cf(store.cf(CF_PEERS), self.owner.as_bytes(), pu.to_le_bytes());
        }
        store.db.write_opt(b, &Store::synced())?;
        Ok(())
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp_path.exists() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        self.store.reserved.fetch_sub(self.disk, Ordering::AcqRel);
    }
}

/// A present shard opened for reading: bytes, then outboard, in one file.
pub struct ShardFile {
    file: File,
    len: u64,
}

impl ShardFile {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the outboard.
    pub fn outboard(&self) -> Result<Vec<u8>> {
        let mut ob = vec![0u8; outboard_len(self.len) as usize];
        self.file
            .read_exact_at(&mut ob, self.len)
            .map_err(|e| Error::io("read outboard", e))?;
        Ok(ob)
    }

    /// Reads shard bytes at `offset` (within the shard, not the outboard).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if offset + buf.len() as u64 > self.len {
            return Err(Error::Other("read past the end of the shard".into()));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io("read shard", e))
    }

    /// Random access to the shard bytes, for proofs.
    pub fn data(&self) -> impl ReadAt + '_ {
        Region {
            file: &self.file,
            start: 0,
            len: self.len,
        }
    }

    /// Random access to the outboard, for proofs.
    pub fn outboard_region(&self) -> impl ReadAt + '_ {
        Region {
            file: &self.file,
            start: self.len,
            len: outboard_len(self.len),
        }
    }
}

struct Region<'a> {
    file: &'a File,
    start: u64,
    len: u64,
}

impl ReadAt for Region<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the region",
            ));
        }
        self.file.read_exact_at(buf, self.start + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proof::shard_id_and_outboard;

    fn peer(n: u8) -> NodeId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    fn put(store: &Arc<Store>, bytes: &[u8], owner: NodeId) -> Result<ShardId> {
        let (id, _) = shard_id_and_outboard(bytes);
        let mut w = store.begin_write(id, bytes.len() as u64, owner)?;
        for c in bytes.chunks(1000) {
            w.write(c)?;
        }
        w.commit()?;
        Ok(id)
    }

    #[test]
    fn write_read_delete_and_counters() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(d.path(), 1 << 20).unwrap());
        let data: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let id = put(&s, &data, peer(1)).unwrap();
        let disk = data.len() as u64 + outboard_len(data.len() as u64);
        assert_eq!(s.used_bytes().unwrap(), disk);
        assert_eq!(std::fs::metadata(s.shard_path(&id)).unwrap().len(), disk);
        let f = s.open_shard(&id).unwrap();
        let mut buf = vec![0; 100];
        f.read_at(&mut buf, 20_000).unwrap();
        assert_eq!(buf, data[20_000..20_100]);
        // second owner, then deletes
        put(&s, &data, peer(2)).unwrap();
        assert_eq!(s.used_bytes().unwrap(), disk, "stored once");
        assert!(
            s.delete(&id, &peer(3), false).is_err(),
            "non-holder may not delete"
        );
        assert_eq!(
            s.delete(&id, &peer(1), false).unwrap(),
            DeleteOutcome::Released
        );
        assert!(s.shard_path(&id).exists());
        assert_eq!(
            s.delete(&id, &peer(2), false).unwrap(),
            DeleteOutcome::Deleted
        );
        assert!(!s.shard_path(&id).exists());
        assert_eq!(s.used_bytes().unwrap(), 0);
        assert_eq!(
            s.delete(&id, &peer(2), false).unwrap(),
            DeleteOutcome::NotStored
        );
        assert_eq!(s.peer_usage(&peer(1)).unwrap(), 0);
    }

    #[test]
    fn wrong_bytes_leave_no_trace() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(d.path(), 1 << 20).unwrap());
        let (id, _) = shard_id_and_outboard(b"the real bytes");
        let mut w = s.begin_write(id, 14, peer(1)).unwrap();
        w.write(b"the fake bytes").unwrap();
        assert!(matches!(w.commit(), Err(Error::HashMismatch { .. })));
        assert_eq!(s.used_bytes().unwrap(), 0);
        assert!(s.shard_meta(&id).unwrap().is_none());
        assert_eq!(std::fs::read_dir(&s.tmp).unwrap().count(), 0);
        assert_eq!(s.reserved.load(Ordering::Relaxed), 0);
        // too many bytes
        let mut w = s.begin_write(id, 14, peer(1)).unwrap();
        assert!(w.write(&[0; 15]).is_err());
        drop(w);
        assert_eq!(std::fs::read_dir(&s.tmp).unwrap().count(), 0);
    }

    #[test]
    fn full_store_refuses_with_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(d.path(), 10_000).unwrap());
        put(&s, &[1; 6000], peer(1)).unwrap();
        let e = put(&s, &[2; 6000], peer(1)).unwrap_err();
        assert!(matches!(e, Error::Full { .. }));
        assert!(e.to_string().contains("capacity"), "{e}");
    }

    #[test]
    fn reconcile_removes_orphans_and_marks_lost() {
        let d = tempfile::tempdir().unwrap();
        let (a, b);
        {
            let s = Arc::new(Store::open(d.path(), 1 << 20).unwrap());
            a = put(&s, &[1; 3000], peer(1)).unwrap();
            b = put(&s, &[2; 3000], peer(1)).unwrap();
            // an orphan file and a stale temporary
            let (oid, _) = shard_id_and_outboard(b"orphan");
            let p = s.shard_path(&oid);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"orphan").unwrap();
            std::fs::write(s.tmp.join("x.part"), b"partial").unwrap();
            std::fs::remove_file(s.shard_path(&b)).unwrap();
        }
        let s = Arc::new(Store::open(d.path(), 1 << 20).unwrap());
        let r = s.reconcile().unwrap();
        assert_eq!(r.orphans_removed, 1);
        assert_eq!(r.temporaries_removed, 1);
        assert_eq!(r.lost_found, 1);
        assert_eq!(s.shard_meta(&b).unwrap().unwrap().state, ShardState::Lost);
        assert_eq!(s.used_bytes().unwrap(), 3000);
        assert!(s.open_shard(&a).is_ok());
        assert!(matches!(s.open_shard(&b), Err(Error::ShardNotFound(_))));
    }

    #[test]
    fn scrub_finds_bit_rot() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(d.path(), 1 << 20).unwrap());
        let a = put(&s, &[7; 40_000], peer(1)).unwrap();
        let (_, ok, _) = s.scrub_one(None, u64::MAX).unwrap().unwrap();
        assert!(ok);
        let p = s.shard_path(&a);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[12_345] ^= 4;
        std::fs::write(&p, bytes).unwrap();
        let (id, ok, _) = s.scrub_one(None, u64::MAX).unwrap().unwrap();
        assert_eq!((id, ok), (a, false));
        assert_eq!(s.stats().unwrap().corrupt_found, 1);
        assert_eq!(s.used_bytes().unwrap(), 0);
        assert!(s.open_shard(&a).is_err());
    }
}
