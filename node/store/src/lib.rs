//! cairn-store: the storage engine of a node, RocksDB metadata plus one file
//! per shard. No networking: the daemon's handlers call it, never the other
//! way round.
//!
//! A shard file holds the shard bytes followed by its outboard (the BLAKE3
//! tree, 1/256 of the shard), under `shards/<ab>/<cd>/<id hex>`. A write
//! streams into `tmp/<boot>/`, hashing as it goes; only bytes that hash to the
//! claimed id are fsynced (once, never per chunk), renamed into place and
//! committed to the metadata with a synced RocksDB write, all under one lock,
//! so that nothing unverified is ever where it could be served ([`file`]).
//!
//! Used space is a counter in RocksDB updated in the same batch as the shard
//! record: exact, never found by walking the disk. Opening is O(1) in the
//! number of shards; the walk that removes orphans left by a crash and the
//! scrub that re-hashes shards to find bit rot ([`upkeep`]) run in the
//! background while the node serves.
//!
//! Shards live on volumes ([`volume`]): the data directory and any disks an
//! operator adds; a write goes to the present volume with the most room, a
//! volume whose disk is gone is never written and its shards count as lost
//! until it is back.
//!
//! Besides shards the store keeps the records of datasets ([`records`]:
//! manifests and placements, each in its own column family) and a namespaced
//! key-value space for other components' state ([`kv`]).

pub mod file;
pub mod kv;
pub mod records;
pub mod upkeep;
pub mod volume;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_proof::{OutboardBuilder, ShardId, outboard_len};
use cairn_proto::{NodeId, ShardState};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

pub use file::{ShardFile, ShardWriter};
pub use kv::Kv;
pub use upkeep::ReconcileReport;
pub use volume::{MARKER, VolumeChange, VolumeSpec, VolumeStats};

use volume::{Volume, VolumeRow};

const CF_SHARDS: &str = "shards";
const CF_OWNERS: &str = "owners";
const CF_PEERS: &str = "peers";
const CF_MANIFESTS: &str = "manifests";
const CF_PLACEMENTS: &str = "placements";
const CF_COUNTERS: &str = "counters";
/// The namespaced key-value space (named "app" since the first release).
const CF_KV: &str = "app";
/// The volume table: index -> marker id and path; and the store's own id.
const CF_VOLUMES: &str = "volumes";
/// The key of the store's id in the volume table (rows have 1-byte keys).
const STORE_ID: &[u8] = b"store-id";
const COLUMN_FAMILIES: [&str; 8] = [
    CF_SHARDS,
    CF_OWNERS,
    CF_PEERS,
    CF_MANIFESTS,
    CF_PLACEMENTS,
    CF_COUNTERS,
    CF_KV,
    CF_VOLUMES,
];

/// Bytes of present shards on every volume (a volume's own share is
/// `used_bytes/<index>`; volume 0's is the rest, so records written before
/// volumes existed need no migration).
const USED_BYTES: &[u8] = b"used_bytes";
const SHARD_COUNT: &[u8] = b"shard_count";
/// Bytes of dataset records (manifests, placements) held.
const RECORD_BYTES: &[u8] = b"record_bytes";
/// Room left on the filesystem for RocksDB and temporaries: a shard that
/// would leave less is refused as full, whatever `capacity` says.
pub const FS_RESERVE: u64 = 32 << 20;

/// Seconds since the Unix epoch (0 if the clock is before it): the one wall
/// clock of the node's records.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything that can go wrong in the store. Callers choose what to do
/// (and what to answer a peer) from the variant.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shard {0} is not stored here")]
    NotFound(ShardId),
    #[error(
        "storage full: {needed} bytes needed, {free} bytes free of {capacity}; raise `capacity` in the config or free space"
    )]
    Full {
        needed: u64,
        free: u64,
        capacity: u64,
    },
    #[error("the bytes do not hash to the claimed shard id {claimed} (they hash to {actual})")]
    HashMismatch { claimed: ShardId, actual: ShardId },
    #[error("shard {0} is held for other peers; only a holder may delete it")]
    NotHolder(ShardId),
    #[error("the placement names another owner than the one held for this dataset")]
    PlacementOwnerMismatch,
    #[error("the write got {got} bytes of the {declared} it declared")]
    IncompleteWrite { declared: u64, got: u64 },
    #[error("read of {len} bytes at {offset} is past the end of the {shard_len}-byte shard")]
    PastEnd {
        offset: u64,
        len: u64,
        shard_len: u64,
    },
    #[error("key-value namespace {0:?} is not a plain name")]
    BadNamespace(String),
    #[error("{} is in use by another cairn process; stop it first", .0.display())]
    Locked(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata database: {0}")]
    Db(String),
    #[error("volume {}: {reason}", path.display())]
    Volume { path: PathBuf, reason: String },
    #[error(
        "volume {} went missing during the write (its disk is not mounted); the shard was not stored",
        .0.display()
    )]
    VolumeMissing(PathBuf),
    #[error("corrupt metadata record: {0}")]
    CorruptRecord(String),
    #[error(transparent)]
    Proof(#[from] cairn_proof::Error),
}

impl StoreError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }

    /// True for the errors that mean the disk is out of space (the
    /// configured capacity, or the filesystem itself).
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full { .. } => true,
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Db(e.into_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The metadata record of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMeta {
    pub len: u64,
    pub stored_at: u64,
    pub state: ShardState,
    pub last_scrub: u64,
    /// The volume the shard's file is on (0: the data directory).
    pub volume: u8,
}

impl ShardMeta {
    /// A record of volume 0 is 25 bytes, as before volumes existed (so an
    /// older binary still reads it); others carry the volume in a 26th.
    const ENCODED: usize = 25;

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::ENCODED + 1);
        b.extend_from_slice(&self.len.to_le_bytes());
        b.extend_from_slice(&self.stored_at.to_le_bytes());
        b.push(self.state.to_u8());
        b.extend_from_slice(&self.last_scrub.to_le_bytes());
        if self.volume != 0 {
            b.push(self.volume);
        }
        b
    }

    fn decode(b: &[u8]) -> Result<Self> {
        let volume = match b.len() {
            Self::ENCODED => 0,
            26 => b[25],
            n => {
                return Err(StoreError::CorruptRecord(format!(
                    "shard record of {n} bytes"
                )));
            }
        };
        let u = |r: std::ops::Range<usize>| u64::from_le_bytes(b[r].try_into().expect("8 bytes"));
        Ok(ShardMeta {
            len: u(0..8),
            stored_at: u(8..16),
            state: ShardState::from_u8(b[16]).unwrap_or(ShardState::Corrupt),
            last_scrub: u(17..25),
            volume,
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
    /// Bytes of dataset records (manifests, placements).
    pub record_bytes: u64,
    /// Bytes the filesystem under the store has available.
    pub fs_available: u64,
    pub reconcile_done: bool,
    pub orphans_removed: u64,
    pub temporaries_removed: u64,
    pub lost_found: u64,
    pub scrubbed: u64,
    pub corrupt_found: u64,
}

/// The shard store of one node.
pub struct Store {
    root: PathBuf,
    db: DB,
    /// Volume 0 (the data directory) first, then the configured ones.
    volumes: Vec<Volume>,
    commit_lock: Mutex<()>,
    /// One reconcile at a time (at start, and when a volume comes back).
    reconcile_lock: Mutex<()>,
    /// A volume came back: the copies replaced meanwhile are orphans on it.
    reconcile_wanted: AtomicBool,
    next_tmp: AtomicU64,
    reconcile_done: AtomicBool,
    orphans_removed: AtomicU64,
    temporaries_removed: AtomicU64,
    lost_found: AtomicU64,
    scrubbed: AtomicU64,
    corrupt_found: AtomicU64,
    /// Held (locked) for the store's lifetime.
    _lock: File,
}

fn u64_value(v: Option<Vec<u8>>) -> u64 {
    v.and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn io_at(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = format!("{what} {}", path.display());
    move |e| StoreError::io(context, e)
}

impl Store {
    /// Opens (or creates) the store under `root` with `capacity` bytes for
    /// shards. O(1) in the number of shards stored.
    pub fn open(root: &Path, capacity: u64) -> Result<Store> {
        Self::open_with_volumes(root, capacity, &[])
    }

    /// Opens the store with shards in `root` (up to `capacity` bytes) and on
    /// `volumes`. A new volume is set up (its marker written); one whose
    /// marker is missing opens as missing; one set up by another store is
    /// refused. O(1) in the number of shards stored.
    pub fn open_with_volumes(root: &Path, capacity: u64, volumes: &[VolumeSpec]) -> Result<Store> {
        std::fs::create_dir_all(root.join("shards")).map_err(io_at(root, "create"))?;
        // One process per data directory: RocksDB would refuse a second one
        // too, but only after its own work; this lock says so by name.
        let lock_path = root.join("store.lock");
        let lock = File::create(&lock_path).map_err(io_at(&lock_path, "create"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(root.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(format!("lock {}", lock_path.display()), e));
            }
        }
        // Temporaries of this process go in their own directory, so that a
        // reconcile running beside live writes removes only older ones.
        let boot = format!(
            "{}-{}-{:08x}",
            unix_secs(),
            std::process::id(),
            rand::random::<u32>()
        );
        let data_dir = Volume::data_dir(root, capacity, &boot);
        std::fs::create_dir_all(&data_dir.tmp).map_err(io_at(&data_dir.tmp, "create"))?;

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
        let db = DB::open_cf_descriptors(&opts, &db_path, cfs)?;
        let cf_volumes = db.cf_handle(CF_VOLUMES).expect("column family opened");
        let mut rows = Vec::new();
        let mut store_id: Option<[u8; 16]> = None;
        for item in db.iterator_cf(cf_volumes, IteratorMode::Start) {
            let (k, v) = item?;
            if &k[..] == STORE_ID {
                let id = <[u8; 16]>::try_from(&v[..])
                    .map_err(|_| StoreError::CorruptRecord("store id".into()))?;
                store_id = Some(id);
            } else {
                rows.push(VolumeRow::decode(&k, &v)?);
            }
        }
        // The id volume markers name, made once (only stores with volumes
        // need it, but it costs one key).
        let store_id = match store_id {
            Some(id) => id,
            None => {
                let id: [u8; 16] = rand::random();
                db.put_cf_opt(cf_volumes, STORE_ID, id, &Self::synced())?;
                id
            }
        };
        let (configured, new_rows) = volume::resolve(root, &rows, store_id, volumes, &boot)?;
        if !new_rows.is_empty() {
            let mut b = WriteBatch::default();
            for r in &new_rows {
                b.put_cf(cf_volumes, [r.index], r.encode());
            }
            db.write_opt(b, &Self::synced())?;
        }
        for v in configured.iter().filter(|v| !v.is_present()) {
            tracing::warn!(
                volume = v.index,
                path = %v.path.display(),
                advice = "mount its disk again: its shards come back as they were; until then validators repair them elsewhere",
                "volume missing (its cairn-volume.id is not there): its shards are reported lost and nothing is written to it"
            );
        }
        let mut all = vec![data_dir];
        all.extend(configured);
        let store = Store {
            root: root.to_path_buf(),
            db,
            volumes: all,
            commit_lock: Mutex::new(()),
            reconcile_lock: Mutex::new(()),
            reconcile_wanted: AtomicBool::new(false),
            next_tmp: AtomicU64::new(0),
            reconcile_done: AtomicBool::new(false),
            orphans_removed: AtomicU64::new(0),
            temporaries_removed: AtomicU64::new(0),
            lost_found: AtomicU64::new(0),
            scrubbed: AtomicU64::new(0),
            corrupt_found: AtomicU64::new(0),
            _lock: lock,
        };
        Ok(store)
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

    /// Path of a shard's file (on the volume its record names; volume 0
    /// for a shard not stored).
    pub fn shard_path(&self, id: &ShardId) -> PathBuf {
        let v = match self.shard_meta(id) {
            Ok(Some(m)) => m.volume,
            _ => 0,
        };
        self.shard_path_on(self.volume(v).unwrap_or(&self.volumes[0]), id)
    }

    pub(crate) fn shard_path_on(&self, vol: &Volume, id: &ShardId) -> PathBuf {
        let hex = id.to_hex();
        vol.path
            .join("shards")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(hex)
    }

    /// The volume of `index`, if the store has it.
    pub(crate) fn volume(&self, index: u8) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.index == index)
    }

    /// True if shards on volume `index` can be read now.
    pub(crate) fn volume_present(&self, index: u8) -> bool {
        self.volume(index).is_some_and(Volume::is_present)
    }

    /// Bytes of shards the store may hold: the capacities of its volumes.
    pub fn capacity(&self) -> u64 {
        self.volumes.iter().map(|v| v.capacity).sum()
    }

    /// Bytes used by committed shards and dataset records (RocksDB counters).
    pub fn used_bytes(&self) -> Result<u64> {
        Ok(self
            .counter(USED_BYTES)?
            .saturating_add(self.counter(RECORD_BYTES)?))
    }

    /// Bytes of volume `index` used: its shards (volume 0: and the records).
    pub(crate) fn volume_used(&self, index: u8) -> Result<u64> {
        if index != 0 {
            return self.counter(&volume_used_key(index));
        }
        let mut others = 0u64;
        for v in self.volumes.iter().filter(|v| v.index != 0) {
            others = others.saturating_add(self.counter(&volume_used_key(v.index))?);
        }
        Ok(self.used_bytes()?.saturating_sub(others))
    }

    /// Adds the changes of used bytes per volume to batch `b` (one put per
    /// counter: a batch keeps only the last put of a key).
    pub(crate) fn charge_volumes(&self, b: &mut WriteBatch, changes: &[(u8, i128)]) -> Result<()> {
        let apply = |v: u64, d: i128| (i128::from(v) + d).clamp(0, i128::from(u64::MAX)) as u64;
        let total: i128 = changes.iter().map(|(_, d)| d).sum();
        let used = apply(self.counter(USED_BYTES)?, total);
        b.put_cf(self.cf(CF_COUNTERS), USED_BYTES, used.to_le_bytes());
        let mut per: Vec<(u8, i128)> = Vec::new();
        for &(v, d) in changes.iter().filter(|(v, _)| *v != 0) {
            match per.iter_mut().find(|(i, _)| *i == v) {
                Some((_, sum)) => *sum += d,
                None => per.push((v, d)),
            }
        }
        for (v, d) in per {
            let key = volume_used_key(v);
            let now = apply(self.counter(&key)?, d);
            b.put_cf(self.cf(CF_COUNTERS), key, now.to_le_bytes());
        }
        Ok(())
    }

    /// Bytes the filesystems under the store's present volumes have
    /// available (volumes sharing a filesystem count it once each).
    pub fn fs_available(&self) -> Result<u64> {
        let mut sum = 0u64;
        for v in self.volumes.iter().filter(|v| v.is_present()) {
            sum = sum.saturating_add(v.fs_available()?);
        }
        Ok(sum)
    }

    /// Bytes a new write may take on volume `v`: its capacity neither used
    /// nor reserved by writes in flight, and no more than its filesystem has
    /// left (minus [`FS_RESERVE`]), so a disk fuller than the config says
    /// refuses puts instead of failing them half-way. 0 while missing.
    fn volume_free(&self, v: &Volume, reserved: u64) -> Result<u64> {
        if !v.is_present() || v.capacity == 0 {
            return Ok(0);
        }
        let by_capacity = v.capacity.saturating_sub(self.volume_used(v.index)?);
        let by_disk = match v.fs_available() {
            Ok(b) => b.saturating_sub(FS_RESERVE),
            // A failing disk takes no writes; the others still do.
            Err(_) if v.index != 0 => 0,
            Err(e) => return Err(e),
        };
        Ok(by_capacity.min(by_disk).saturating_sub(reserved))
    }

    /// Bytes new writes may take, over all present volumes.
    pub fn free_bytes(&self) -> Result<u64> {
        let mut sum = 0u64;
        for v in &self.volumes {
            sum = sum.saturating_add(self.volume_free(v, v.reserved.load(Ordering::Relaxed))?);
        }
        Ok(sum)
    }

    /// Looks for every volume's marker; logs and returns what changed.
    /// Cheap (a small read per volume): the node calls it every few
    /// seconds, and every write calls it before choosing a volume.
    pub fn check_volumes(&self) -> Vec<(PathBuf, VolumeChange)> {
        self.volumes
            .iter()
            .filter_map(|v| self.check_volume(v).map(|c| (v.path.clone(), c)))
            .collect()
    }

    /// True once after a volume came back (whoever noticed it): the node
    /// runs a reconcile then, to remove the copies replaced meanwhile.
    pub fn take_reconcile_wanted(&self) -> bool {
        self.reconcile_wanted.swap(false, Ordering::AcqRel)
    }

    /// Looks for one volume's marker; logs a change and remembers that a
    /// volume came back. Every look at a volume goes through here.
    pub(crate) fn check_volume(&self, v: &Volume) -> Option<VolumeChange> {
        let change = v.check();
        match change {
            Some(VolumeChange::Disappeared) => {
                tracing::warn!(
                    volume = v.index,
                    path = %v.path.display(),
                    advice = "mount its disk again: its shards come back as they were; until then validators repair them elsewhere",
                    "volume missing (its cairn-volume.id is gone): its shards are reported lost and nothing is written to it"
                );
            }
            Some(VolumeChange::Appeared) => {
                tracing::info!(volume = v.index, path = %v.path.display(), "volume back: its shards are served again");
                self.reconcile_wanted.store(true, Ordering::Release);
            }
            None => {}
        }
        change
    }

    /// Every volume, for status pages.
    pub fn volumes(&self) -> Result<Vec<VolumeStats>> {
        let mut out = Vec::with_capacity(self.volumes.len());
        for v in &self.volumes {
            out.push(VolumeStats {
                index: v.index,
                path: v.path.clone(),
                capacity: v.capacity,
                used_bytes: self.volume_used(v.index)?,
                reserved_bytes: v.reserved.load(Ordering::Relaxed),
                fs_available: if v.is_present() {
                    v.fs_available().unwrap_or(0)
                } else {
                    0
                },
                present: v.is_present(),
                configured: v.configured,
            });
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            capacity: self.capacity(),
            used_bytes: self.used_bytes()?,
            reserved_bytes: self
                .volumes
                .iter()
                .map(|v| v.reserved.load(Ordering::Relaxed))
                .sum(),
            shard_count: self.counter(SHARD_COUNT)?,
            record_bytes: self.counter(RECORD_BYTES)?,
            fs_available: self.fs_available().unwrap_or(0),
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
    /// behalf of `owner`. Reserves the space, or fails with [`StoreError::Full`].
    pub fn begin_write(
        self: &Arc<Self>,
        id: ShardId,
        len: u64,
        owner: NodeId,
    ) -> Result<ShardWriter> {
        let disk = len + outboard_len(len);
        // Never write to a volume whose disk has gone: look first.
        if self.volumes.len() > 1 {
            self.check_volumes();
        }
        // The present volume with the most room.
        let mut best: Option<(&Volume, u64)> = None;
        let mut free_total = 0u64;
        for v in &self.volumes {
            let free = self.volume_free(v, v.reserved.load(Ordering::Relaxed))?;
            free_total = free_total.saturating_add(free);
            if v.is_present() && v.capacity > 0 && best.is_none_or(|(_, f)| free > f) {
                best = Some((v, free));
            }
        }
        let full = |free| StoreError::Full {
            needed: disk,
            free,
            capacity: self.capacity(),
        };
        let Some((vol, _)) = best else {
            return Err(full(free_total));
        };
        // Reserve first, then check, so that concurrent writers cannot all pass.
        let reserved_before = vol.reserved.fetch_add(disk, Ordering::AcqRel);
        let free = self.volume_free(vol, reserved_before)?;
        if disk > free {
            vol.reserved.fetch_sub(disk, Ordering::AcqRel);
            return Err(full(free_total));
        }
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp_path = vol.tmp.join(format!("{}.{n}.part", id.to_hex()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| {
                vol.reserved.fetch_sub(disk, Ordering::AcqRel);
                StoreError::io(format!("create {}", tmp_path.display()), e)
            })?;
        Ok(ShardWriter {
            store: Arc::clone(self),
            id,
            len,
            disk,
            volume: vol.index,
            owner,
            tmp_path,
            file: Some(file),
            hasher: OutboardBuilder::new(len)?,
        })
    }

    /// Removes `owner`'s reference to a shard; the shard itself goes when no
    /// owner is left. Idempotent. `Err` if `owner` does not hold it and the
    /// shard exists (only holders may delete).
    pub fn delete(&self, id: &ShardId, owner: &NodeId, force: bool) -> Result<DeleteOutcome> {
        let _g = self.commit_lock.lock().expect("lock");
        let Some(meta) = self.shard_meta(id)? else {
            return Ok(DeleteOutcome::NotStored);
        };
        // On a missing volume the file stays; reconcile removes it as an
        // orphan once the volume is back.
        let path = self
            .volume(meta.volume)
            .filter(|v| v.is_present())
            .map(|v| self.shard_path_on(v, id));
        let owners = self.owners(id)?;
        if !force && !owners.contains(owner) {
            return Err(StoreError::NotHolder(*id));
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
                self.charge_volumes(&mut b, &[(meta.volume, -i128::from(meta.disk_len()))])?;
            }
            let count = self.counter(SHARD_COUNT)?.saturating_sub(1);
            b.put_cf(self.cf(CF_COUNTERS), SHARD_COUNT, count.to_le_bytes());
        }
        self.db.write_opt(b, &Self::synced())?;
        if last {
            // Metadata first: a crash here leaves an orphan file, which reconcile removes.
            if let Some(path) = path {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(format!("remove {}", path.display()), e)),
                }
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
        let (meta, vol) = match self.shard_meta(id)? {
            Some(m) if m.state == ShardState::Present => match self.volume(m.volume) {
                Some(v) if v.is_present() => (m, v),
                _ => return Err(StoreError::NotFound(*id)),
            },
            _ => return Err(StoreError::NotFound(*id)),
        };
        let path = self.shard_path_on(vol, id);
        let file = File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                // Its disk may just have gone: look, so that the node says so.
                if vol.index != 0 {
                    self.check_volumes();
                }
                StoreError::NotFound(*id)
            } else {
                StoreError::io(format!("open {}", path.display()), e)
            }
        })?;
        Ok(ShardFile {
            file,
            len: meta.len,
        })
    }

    /// Up to `limit` records with ids after `after`, in id order; a shard
    /// on a missing volume is reported lost.
    pub fn inventory(
        &self,
        after: Option<&ShardId>,
        limit: usize,
    ) -> Result<Vec<(ShardId, ShardMeta)>> {
        let mut page = self.records(after, limit)?;
        for (_, m) in &mut page {
            if m.state == ShardState::Present && !self.volume_present(m.volume) {
                m.state = ShardState::Lost;
            }
        }
        Ok(page)
    }

    /// Up to `limit` records as stored, with ids after `after`.
    pub(crate) fn records(
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

    /// True if a present copy of `id` is held.
    pub fn has_shard(&self, id: &ShardId) -> Result<bool> {
        Ok(
            matches!(self.shard_meta(id)?, Some(m) if m.state == ShardState::Present && self.volume_present(m.volume)),
        )
    }
}

fn volume_used_key(index: u8) -> Vec<u8> {
    let mut k = b"used_bytes/".to_vec();
    k.push(index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proof::shard_id_and_outboard;

    fn peer(n: u8) -> NodeId {
        cairn_proto::SecretKey::from_bytes(&[n; 32]).public()
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
        // Reads end at the shard, never in its outboard.
        assert_eq!(f.read_vec(20_000, 100).unwrap(), data[20_000..20_100]);
        assert_eq!(f.read_vec(0, data.len()).unwrap(), data);
        assert_eq!(f.read_vec(50_000, 0).unwrap(), b"");
        assert!(matches!(
            f.read_vec(49_990, 11),
            Err(StoreError::PastEnd { .. })
        ));
        assert_eq!(f.outboard().unwrap(), shard_id_and_outboard(&data).1);
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
        assert!(matches!(w.commit(), Err(StoreError::HashMismatch { .. })));
        assert_eq!(s.used_bytes().unwrap(), 0);
        assert!(s.shard_meta(&id).unwrap().is_none());
        assert_eq!(std::fs::read_dir(&s.volumes[0].tmp).unwrap().count(), 0);
        assert_eq!(s.volumes[0].reserved.load(Ordering::Relaxed), 0);
        // too many bytes
        let mut w = s.begin_write(id, 14, peer(1)).unwrap();
        assert!(w.write(&[0; 15]).is_err());
        drop(w);
        assert_eq!(std::fs::read_dir(&s.volumes[0].tmp).unwrap().count(), 0);
    }

    #[test]
    fn full_store_refuses_with_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(d.path(), 10_000).unwrap());
        put(&s, &[1; 6000], peer(1)).unwrap();
        let e = put(&s, &[2; 6000], peer(1)).unwrap_err();
        assert!(matches!(e, StoreError::Full { .. }));
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
            std::fs::write(s.volumes[0].tmp.join("x.part"), b"partial").unwrap();
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
        assert!(matches!(s.open_shard(&b), Err(StoreError::NotFound(_))));
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

    /// Files under `dir` and their bytes.
    fn files_under(dir: &Path) -> (usize, u64) {
        let (mut n, mut bytes) = (0, 0);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    n += 1;
                    bytes += m.len();
                }
            }
        }
        (n, bytes)
    }

    fn spec(path: &Path, capacity: u64) -> VolumeSpec {
        VolumeSpec {
            path: path.to_path_buf(),
            capacity,
        }
    }

    #[test]
    fn shard_records_of_volume_zero_keep_their_old_form() {
        let m = ShardMeta {
            len: 5,
            stored_at: 6,
            state: ShardState::Present,
            last_scrub: 7,
            volume: 0,
        };
        assert_eq!(m.encode().len(), 25, "readable by a binary without volumes");
        assert_eq!(ShardMeta::decode(&m.encode()).unwrap(), m);
        let on_3 = ShardMeta { volume: 3, ..m };
        assert_eq!(ShardMeta::decode(&on_3.encode()).unwrap(), on_3);
        assert!(ShardMeta::decode(&[0; 27]).is_err());
    }

    #[test]
    fn shards_spread_over_volumes_by_free_space() {
        let (d, a, b) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        // No shards in the data directory (an SD card), two disks.
        let s = Arc::new(
            Store::open_with_volumes(
                d.path(),
                0,
                &[spec(a.path(), 200_000), spec(b.path(), 100_000)],
            )
            .unwrap(),
        );
        assert_eq!(s.capacity(), 300_000);
        for i in 0..12u8 {
            put(&s, &[i; 20_000], peer(1)).unwrap();
        }
        let v = s.volumes().unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].used_bytes, 0, "data directory has capacity 0");
        assert_eq!(files_under(&d.path().join("shards")).0, 0);
        let (on_a, on_b) = (
            files_under(&a.path().join("shards")).0,
            files_under(&b.path().join("shards")).0,
        );
        assert_eq!(on_a + on_b, 12);
        // Most room first: a takes the first 5 (to 100k used, b's size),
        // then they alternate (a 200k cap gets ~8, b ~4).
        assert!(on_a > on_b && on_b >= 3, "a {on_a}, b {on_b}");
        // Each volume's counter is the bytes of its files.
        assert_eq!(v[1].used_bytes, files_under(&a.path().join("shards")).1);
        assert_eq!(v[2].used_bytes, files_under(&b.path().join("shards")).1);
        assert!(a.path().join(MARKER).is_file() && b.path().join(MARKER).is_file());
        // The counters agree with the records.
        assert!(!s.reconcile().unwrap().counter_fixed);
        // Reopened: the same volumes, found by their markers.
        drop(s);
        let s = Store::open_with_volumes(
            d.path(),
            0,
            &[spec(a.path(), 200_000), spec(b.path(), 100_000)],
        )
        .unwrap();
        assert_eq!(
            s.volumes().unwrap()[1..]
                .iter()
                .map(|v| (v.index, v.present))
                .collect::<Vec<_>>(),
            vec![(1, true), (2, true)]
        );
    }

    #[test]
    fn a_missing_volume_is_never_written_and_its_shards_come_back() {
        let (d, a, vols) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let b = vols.path().join("usb");
        std::fs::create_dir(&b).unwrap();
        let specs = [spec(a.path(), 1 << 20), spec(&b, 4 << 20)];
        let s = Arc::new(Store::open_with_volumes(d.path(), 0, &specs).unwrap());
        let on_b: Vec<ShardId> = (0..3u8)
            .map(|i| put(&s, &[i; 10_000], peer(1)).unwrap())
            .collect();
        assert!(
            on_b.iter().all(|id| s.shard_path(id).starts_with(&b)),
            "most room first"
        );
        // The disk is unplugged: its mount point is an empty directory.
        let unplugged = vols.path().join("usb-unplugged");
        std::fs::rename(&b, &unplugged).unwrap();
        std::fs::create_dir(&b).unwrap();
        assert_eq!(
            s.check_volumes(),
            vec![(b.clone(), VolumeChange::Disappeared)]
        );
        assert!(matches!(
            s.open_shard(&on_b[0]),
            Err(StoreError::NotFound(_))
        ));
        assert!(!s.has_shard(&on_b[0]).unwrap());
        let inv = s.inventory(None, 100).unwrap();
        assert!(
            inv.iter().all(|(_, m)| m.state == ShardState::Lost),
            "reported lost"
        );
        // Writes go to the volume that is there; nothing lands in the mount point.
        let fresh = put(&s, &[9; 10_000], peer(1)).unwrap();
        assert!(s.shard_path(&fresh).starts_with(a.path()));
        // A repair puts a lost shard back here: it lands on a, and counts there.
        put(&s, &[1; 10_000], peer(1)).unwrap();
        assert!(s.open_shard(&on_b[1]).is_ok() && s.shard_path(&on_b[1]).starts_with(a.path()));
        // Reconcile leaves the missing volume's records alone.
        let r = s.reconcile().unwrap();
        assert_eq!((r.lost_found, r.orphans_removed), (0, 0));
        assert_eq!(
            std::fs::read_dir(&b).unwrap().count(),
            0,
            "nothing written into the empty mount point"
        );
        // With the disk missing at start, the store opens, the volume missing.
        drop(s);
        let s = Arc::new(Store::open_with_volumes(d.path(), 0, &specs).unwrap());
        assert!(!s.volumes().unwrap()[2].present);
        assert_eq!(std::fs::read_dir(&b).unwrap().count(), 0);
        // Plugged back in: its shards are served again; the copy replaced
        // meanwhile is an orphan there, removed by reconcile.
        std::fs::remove_dir(&b).unwrap();
        std::fs::rename(&unplugged, &b).unwrap();
        // A write notices it first (not the node's periodic look): the
        // reconcile it needs is still asked for, once.
        put(&s, &[42; 10_000], peer(1)).unwrap();
        assert!(s.volumes().unwrap()[2].present);
        assert!(s.take_reconcile_wanted() && !s.take_reconcile_wanted());
        assert!(s.check_volumes().is_empty());
        assert!(s.open_shard(&on_b[0]).is_ok() && s.open_shard(&on_b[2]).is_ok());
        let r = s.reconcile().unwrap();
        assert_eq!(
            (r.orphans_removed, r.lost_found, r.counter_fixed),
            (1, 0, false)
        );
        let v = s.volumes().unwrap();
        assert_eq!(v[1].used_bytes, files_under(&a.path().join("shards")).1);
        assert_eq!(v[2].used_bytes, files_under(&b.join("shards")).1);
        assert!(
            s.inventory(None, 100)
                .unwrap()
                .iter()
                .all(|(_, m)| m.state == ShardState::Present)
        );
    }

    #[test]
    fn volumes_of_another_store_or_nowhere_are_refused_by_name() {
        let (d1, d2, a) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        drop(Store::open_with_volumes(d1.path(), 0, &[spec(a.path(), 1 << 20)]).unwrap());
        let e = Store::open_with_volumes(d2.path(), 0, &[spec(a.path(), 1 << 20)])
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("another cairn data directory"),
            "{e}"
        );
        let nowhere = a.path().join("not-mounted");
        let e = Store::open_with_volumes(d2.path(), 0, &[spec(&nowhere, 1 << 20)])
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("not-mounted") && e.to_string().contains("mount the disk"),
            "{e}"
        );
        assert!(!nowhere.exists(), "never created");
        // Checked before any disk is touched: a new volume beside one that
        // is not there is not set up either.
        let fresh = tempfile::tempdir().unwrap();
        assert!(
            Store::open_with_volumes(d2.path(), 0, &[spec(fresh.path(), 1), spec(&nowhere, 1)])
                .is_err()
        );
        assert!(!fresh.path().join(MARKER).exists());
        drop(Store::open_with_volumes(d2.path(), 0, &[spec(fresh.path(), 1)]).unwrap());
        // A disk moved to another mount point while the config names both.
        let moved = tempfile::tempdir().unwrap();
        std::fs::rename(fresh.path().join(MARKER), moved.path().join(MARKER)).unwrap();
        let e = Store::open_with_volumes(
            d2.path(),
            0,
            &[spec(fresh.path(), 1), spec(moved.path(), 1)],
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("same volume"), "{e}");
        let e = Store::open_with_volumes(d2.path(), 0, &[spec(&d2.path().join("v"), 1)])
            .err()
            .unwrap();
        assert!(e.to_string().contains("inside the data directory"), "{e}");
    }
}
