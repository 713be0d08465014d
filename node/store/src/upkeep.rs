//! Keeping a store honest in the background: reconcile (what a crash left
//! behind: temporaries, orphan files, records without their file, the
//! counters) and scrub (re-hashing shards to find bit rot). Both run beside
//! live traffic and re-check every decision under the commit lock.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use cairn_proof::{OutboardBuilder, ShardId};
use cairn_proto::ShardState;
use rocksdb::{IteratorMode, WriteBatch};

use crate::{
    CF_COUNTERS, CF_SHARDS, RECORD_BYTES, Result, SHARD_COUNT, ShardMeta, Store, StoreError,
    USED_BYTES, io_at, unix_secs, volume_used_key,
};

/// What a reconcile pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub temporaries_removed: u64,
    pub orphans_removed: u64,
    pub lost_found: u64,
    pub counter_fixed: bool,
}

impl Store {
    /// Removes what a crash left behind and checks records against files.
    /// Runs beside live traffic: every decision is re-checked under the
    /// commit lock. O(shards); meant for a background thread.
    pub fn reconcile(&self) -> Result<ReconcileReport> {
        let _one = self.reconcile_lock.lock().expect("lock");
        let mut report = ReconcileReport::default();
        // Volumes whose disk is not there are left alone, whole: their
        // records stay as they are and nothing is looked for on them.
        for vol in self.volumes.iter().filter(|v| v.is_present()) {
            // 1. Temporaries of earlier processes.
            let tmp_root = vol.path.join("tmp");
            if let Ok(entries) = std::fs::read_dir(&tmp_root) {
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p == vol.tmp {
                        continue;
                    }
                    if let Ok(files) = std::fs::read_dir(&p) {
                        report.temporaries_removed += files.count() as u64;
                    }
                    std::fs::remove_dir_all(&p).map_err(io_at(&p, "remove"))?;
                }
            }
            // 2. Files without a record on this volume (crash between
            //    rename and commit, or between a delete's commit and its
            //    unlink; a copy replaced while the volume was missing).
            let shards_root = vol.path.join("shards");
            for l1 in read_dir_sorted(&shards_root)? {
                for l2 in read_dir_sorted(&l1)? {
                    for f in read_dir_sorted(&l2)? {
                        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        let id = name.parse::<ShardId>().ok();
                        let _g = self.commit_lock.lock().expect("lock");
                        let keep = match id {
                            Some(id) => matches!(
                                self.shard_meta(&id)?,
                                Some(m) if m.state == ShardState::Present && m.volume == vol.index
                            ),
                            None => false,
                        };
                        if !keep && vol.is_present() {
                            match std::fs::remove_file(&f) {
                                Ok(()) => report.orphans_removed += 1,
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => {
                                    return Err(StoreError::io(
                                        format!("remove {}", f.display()),
                                        e,
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
        // 3. Records whose file is gone or short: mark lost, stop counting
        //    them. Not on a missing volume: its files are on the disk that
        //    is not there.
        let mut after: Option<ShardId> = None;
        loop {
            let page = self.records(after.as_ref(), 1024)?;
            let Some(last) = page.last() else { break };
            after = Some(last.0);
            for (id, meta) in page {
                if meta.state != ShardState::Present {
                    continue;
                }
                let Some(vol) = self.volume(meta.volume).filter(|v| v.is_present()) else {
                    continue;
                };
                let path = self.shard_path_on(vol, &id);
                if file_is_whole(&path, meta.disk_len()) != Some(false) {
                    continue;
                }
                let _g = self.commit_lock.lock().expect("lock");
                // Look again, at the disk and then at the file: a disk that
                // went a moment ago is missing, not its shards lost.
                self.check_volume(vol);
                if vol.is_present()
                    && file_is_whole(&path, meta.disk_len()) == Some(false)
                    && self.shard_meta(&id)? == Some(meta)
                {
                    self.mark_gone(&id, meta, ShardState::Lost)?;
                    let _ = std::fs::remove_file(&path);
                    report.lost_found += 1;
                }
            }
        }
        // 4. The counter must equal the sum of present records.
        {
            let _g = self.commit_lock.lock().expect("lock");
            let mut sum = 0u64;
            let mut count = 0u64;
            let mut per: Vec<(u8, u64)> = self
                .volumes
                .iter()
                .filter(|v| v.index != 0)
                .map(|v| (v.index, 0))
                .collect();
            for item in self.db.iterator_cf(self.cf(CF_SHARDS), IteratorMode::Start) {
                let (_, v) = item?;
                let m = ShardMeta::decode(&v)?;
                count += 1;
                if m.state == ShardState::Present {
                    sum += m.disk_len();
                    if let Some((_, s)) = per.iter_mut().find(|(i, _)| *i == m.volume) {
                        *s += m.disk_len();
                    }
                }
            }
            let mut per_wrong = false;
            for (i, s) in &per {
                per_wrong |= *s != self.counter(&volume_used_key(*i))?;
            }
            if per_wrong
                || sum != self.counter(USED_BYTES)?
                || count != self.counter(SHARD_COUNT)?
            {
                tracing::warn!(
                    counted = sum,
                    recorded = self.counter(USED_BYTES)?,
                    "used-space counter disagreed with the records; fixed"
                );
                let mut b = WriteBatch::default();
                b.put_cf(self.cf(CF_COUNTERS), USED_BYTES, sum.to_le_bytes());
                b.put_cf(self.cf(CF_COUNTERS), SHARD_COUNT, count.to_le_bytes());
                for (i, s) in &per {
                    b.put_cf(self.cf(CF_COUNTERS), volume_used_key(*i), s.to_le_bytes());
                }
                self.db.write_opt(b, &Self::synced())?;
                report.counter_fixed = true;
            }
            // The records' counter, likewise (manifests and placements).
            let records = self.record_bytes_counted()?;
            if records != self.counter(RECORD_BYTES)? {
                tracing::warn!(
                    counted = records,
                    "record-space counter disagreed with the records; fixed"
                );
                self.db.put_cf_opt(
                    self.cf(CF_COUNTERS),
                    RECORD_BYTES,
                    records.to_le_bytes(),
                    &Self::synced(),
                )?;
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
            self.charge_volumes(&mut b, &[(meta.volume, -i128::from(meta.disk_len()))])?;
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
            let page = self.records(cursor.as_ref(), 256)?;
            let Some(last) = page.last() else {
                return Ok(None);
            };
            cursor = Some(last.0);
            for (id, meta) in page {
                if meta.state != ShardState::Present
                    || meta.last_scrub >= older_than
                    || !self.volume_present(meta.volume)
                {
                    continue;
                }
                let intact = match self.rehash(&id, meta.len) {
                    Ok(intact) => intact,
                    // Gone or short: as good as rotten.
                    Err(StoreError::Io { source, .. })
                        if matches!(
                            source.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof
                        ) =>
                    {
                        false
                    }
                    // Any other failure to read (a disk pulled without
                    // unmounting, an I/O error) is not bit rot: look at the
                    // volume, and leave the shard for the next pass.
                    Err(e) => {
                        if let Some(v) = self.volume(meta.volume) {
                            self.check_volume(v);
                        }
                        tracing::warn!(shard = %id, error = %e, "scrub could not read a shard; left as it is");
                        return Ok(Some((id, true, 0)));
                    }
                };
                // A read that failed because the disk went is not bit rot.
                if !intact && meta.volume != 0 {
                    self.check_volumes();
                    if !self.volume_present(meta.volume) {
                        return Ok(Some((id, true, 0)));
                    }
                }
                let _g = self.commit_lock.lock().expect("lock");
                if self.shard_meta(&id)? != Some(meta) {
                    return Ok(Some((id, true, 0)));
                }
                self.scrubbed.fetch_add(1, Ordering::Relaxed);
                if intact {
                    let new = ShardMeta {
                        last_scrub: unix_secs(),
                        ..meta
                    };
                    self.db.put_cf(self.cf(CF_SHARDS), id.0, new.encode())?;
                } else {
                    self.corrupt_found.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(shard = %id, "scrub: shard does not match its id (bit rot); removed");
                    self.mark_gone(&id, meta, ShardState::Corrupt)?;
                    if let Some(v) = self.volume(meta.volume) {
                        let _ = std::fs::remove_file(self.shard_path_on(v, &id));
                    }
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

/// Whether the file at `path` has `len` bytes: `Some(false)` if it is gone
/// or another length, `None` if it could not be looked at (an I/O error is
/// not a lost shard).
fn file_is_whole(path: &Path, len: u64) -> Option<bool> {
    match std::fs::metadata(path) {
        Ok(m) => Some(m.len() == len),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(r) => r.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(format!("read {}", dir.display()), e)),
    };
    v.sort();
    Ok(v)
}
