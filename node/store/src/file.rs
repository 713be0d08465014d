//! Shard files: a write that hashes as it streams and commits only verified
//! bytes, and a present shard opened for reading (bytes, then outboard).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_proof::{OutboardBuilder, ReadAt, ShardId, outboard_len};
use cairn_proto::{NodeId, ShardState};
use rocksdb::WriteBatch;

use crate::{
    CF_COUNTERS, CF_OWNERS, CF_PEERS, CF_SHARDS, Result, SHARD_COUNT, ShardMeta, Store, StoreError,
    io_at, owner_key, unix_secs,
};

/// A shard being written: bytes stream in, are hashed, and only a complete
/// shard that hashes to its claimed id is committed. Dropping it without
/// [`ShardWriter::commit`] removes the temporary and releases the space.
pub struct ShardWriter {
    pub(crate) store: Arc<Store>,
    pub(crate) id: ShardId,
    pub(crate) len: u64,
    pub(crate) disk: u64,
    /// The volume the shard is written to.
    pub(crate) volume: u8,
    pub(crate) owner: NodeId,
    pub(crate) tmp_path: PathBuf,
    pub(crate) file: Option<File>,
    pub(crate) hasher: OutboardBuilder,
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
            .map_err(|e| StoreError::io(format!("write {}", self.tmp_path.display()), e))
    }

    /// Checks the hash, appends the outboard, fsyncs once, renames into
    /// place and commits the record (synced). Blocking: call it off the
    /// async executor.
    pub fn commit(mut self) -> Result<()> {
        let hasher = std::mem::replace(&mut self.hasher, OutboardBuilder::new(0)?);
        let (actual, outboard) = hasher.finalize()?;
        if actual != self.id {
            return Err(StoreError::HashMismatch {
                claimed: self.id,
                actual,
            });
        }
        let mut f = self.file.take().expect("open until commit");
        f.write_all(&outboard)
            .and_then(|_| f.sync_data())
            .map_err(|e| StoreError::io(format!("write {}", self.tmp_path.display()), e))?;
        drop(f);
        let store = Arc::clone(&self.store);
        let vol = store
            .volume(self.volume)
            .expect("a writer's volume is the store's");
        let dest = store.shard_path_on(vol, &self.id);
        let _g = store.commit_lock.lock().expect("lock");
        let existing = store.shard_meta(&self.id)?;
        let mut b = WriteBatch::default();
        if matches!(existing, Some(m) if m.state == ShardState::Present && store.volume_present(m.volume))
        {
            // Same bytes already here (another writer won): keep theirs.
            let _ = std::fs::remove_file(&self.tmp_path);
        } else {
            // Directories are made below the volume's `shards/` only (never
            // in the empty mount point of a disk that has gone).
            if vol.index != 0 {
                store.check_volume(vol);
                if !vol.is_present() {
                    return Err(StoreError::VolumeMissing(vol.path.clone()));
                }
            }
            let mut dir = vol.path.join("shards");
            for part in dest
                .parent()
                .and_then(|p| p.strip_prefix(&dir).ok())
                .into_iter()
                .flat_map(|p| p.components())
            {
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::io(format!("create {}", dir.display()), e)),
                }
            }
            std::fs::rename(&self.tmp_path, &dest).map_err(io_at(&dest, "rename into"))?;
            // The rename is durable once its directory is: ext4 orders it
            // before the RocksDB write, other filesystems need this.
            if let Some(dir) = dest.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_at(dir, "sync"))?;
            }
            let meta = ShardMeta {
                len: self.len,
                stored_at: unix_secs(),
                state: ShardState::Present,
                last_scrub: unix_secs(),
                volume: vol.index,
            };
            b.put_cf(store.cf(CF_SHARDS), self.id.0, meta.encode());
            let mut changes = vec![(vol.index, i128::from(self.disk))];
            // A copy on a volume that has gone is replaced by this one; its
            // file there is an orphan once the volume is back.
            if let Some(old) = existing.filter(|m| m.state == ShardState::Present) {
                changes.push((old.volume, -i128::from(old.disk_len())));
            }
            store.charge_volumes(&mut b, &changes)?;
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
        if let Some(v) = self.store.volume(self.volume) {
            v.reserved.fetch_sub(self.disk, Ordering::AcqRel);
        }
    }
}

/// A present shard opened for reading: bytes, then outboard, in one file.
pub struct ShardFile {
    pub(crate) file: File,
    pub(crate) len: u64,
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
        read_exact_vec(&self.file, self.len, outboard_len(self.len) as usize)
            .map_err(|e| StoreError::io("read outboard", e))
    }

    /// Reads `len` shard bytes at `offset` (within the shard, not the
    /// outboard) into a new buffer, not zeroed first: a served shard's
    /// bytes are written once, by the read.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if offset.saturating_add(len as u64) > self.len {
            return Err(StoreError::PastEnd {
                offset,
                len: len as u64,
                shard_len: self.len,
            });
        }
        read_exact_vec(&self.file, offset, len).map_err(|e| StoreError::io("read shard", e))
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
    pub(crate) len: u64,
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

/// `len` bytes of `file` at `offset`, read into a buffer's spare capacity.
fn read_exact_vec(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        match rustix::io::pread(file, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // The capacity may exceed `len`; a read may have filled past it.
    buf.truncate(len);
    Ok(buf)
}
