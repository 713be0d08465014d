//! Volumes: the disks a store keeps shards on. Volume 0 is the data
//! directory itself (beside the metadata); the others are disks an operator
//! configured (`[[storage.volume]]`), say a USB disk on a board whose data
//! directory is on its SD card.
//!
//! A configured volume is known by a marker file, `cairn-volume.id`, written
//! once when the volume is first used and kept in the store's volume table
//! (index, id, path). A volume whose marker is not there (its disk is not
//! mounted: the path is an empty mount point) is *missing*: nothing is
//! written to it (no directory is ever created in it), its shards answer
//! "not stored" and are reported lost, so validators repair them elsewhere
//! while the node serves the rest; when the marker is back, so are its
//! shards. A marker of another store refuses to open: a disk set up by
//! another data directory is never written to, and never cleaned.
//!
//! A shard's record names its volume (one byte); records written before
//! volumes existed are volume 0's.

use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{Result, StoreError, io_at};

/// The marker file at the root of a configured volume.
pub const MARKER: &str = "cairn-volume.id";

/// A configured volume: a directory (normally a mount point) and the bytes
/// of shards it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub path: PathBuf,
    pub capacity: u64,
}

/// One volume as a status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeStats {
    pub index: u8,
    pub path: PathBuf,
    pub capacity: u64,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    /// Bytes the filesystem under the volume has available (0 if missing).
    pub fs_available: u64,
    /// False while the volume's disk is not there (its marker is missing).
    pub present: bool,
    /// False for a volume in the store's table that the config no longer
    /// names: read while present, never written.
    pub configured: bool,
}

/// A volume of an open store.
pub(crate) struct Volume {
    pub(crate) index: u8,
    pub(crate) path: PathBuf,
    pub(crate) capacity: u64,
    /// The marker's id; `None` for the data directory (volume 0).
    id: Option<[u8; 16]>,
    pub(crate) configured: bool,
    /// This process's temporaries on the volume (same filesystem as its
    /// shards, so that a commit is a rename).
    pub(crate) tmp: PathBuf,
    pub(crate) reserved: AtomicU64,
    present: AtomicBool,
}

/// What [`Volume::check`] saw change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeChange {
    Appeared,
    Disappeared,
}

impl Volume {
    /// The data directory: always present.
    pub(crate) fn data_dir(root: &Path, capacity: u64, boot: &str) -> Volume {
        Volume {
            index: 0,
            path: root.to_path_buf(),
            capacity,
            id: None,
            configured: true,
            tmp: root.join("tmp").join(boot),
            reserved: AtomicU64::new(0),
            present: AtomicBool::new(true),
        }
    }

    fn configured_volume(
        index: u8,
        path: &Path,
        capacity: u64,
        id: [u8; 16],
        configured: bool,
        boot: &str,
    ) -> Volume {
        Volume {
            index,
            path: path.to_path_buf(),
            capacity,
            id: Some(id),
            configured,
            tmp: path.join("tmp").join(boot),
            reserved: AtomicU64::new(0),
            present: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// Looks for the volume's marker and records whether it is there.
    /// When it appears, this process's temporary directory is made on it
    /// (below the volume's own `tmp`, never in an empty mount point).
    pub(crate) fn check(&self) -> Option<VolumeChange> {
        let id = self.id?;
        // Directories are made only below a marker that is there: on the
        // volume's disk, never in the empty mount point.
        let made = |p: &Path| match std::fs::create_dir(p) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::AlreadyExists,
        };
        let now = matches!(read_marker(&self.path), Ok(Some(m)) if m == id)
            && made(&self.path.join("tmp"))
            && made(&self.tmp);
        let before = self.present.swap(now, Ordering::AcqRel);
        match (before, now) {
            (false, true) => Some(VolumeChange::Appeared),
            (true, false) => Some(VolumeChange::Disappeared),
            _ => None,
        }
    }

    /// Bytes the filesystem under the volume has available.
    pub(crate) fn fs_available(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.path)
            .map_err(|e| StoreError::io(format!("statvfs {}", self.path.display()), e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
}

/// The marker's id at `dir`, if it has one. A marker that does not parse is
/// an error: something else wrote that file.
fn read_marker(dir: &Path) -> Result<Option<[u8; 16]>> {
    let path = dir.join(MARKER);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(format!("read {}", path.display()), e)),
    };
    let bad = || StoreError::Volume {
        path: dir.to_path_buf(),
        reason: format!("{MARKER} is not a cairn volume marker; move it away"),
    };
    let text = std::str::from_utf8(&text).map_err(|_| bad())?;
    let hex = text.trim().strip_prefix("cairn volume ").ok_or_else(bad)?;
    let mut id = [0u8; 16];
    if hex.len() != 32 {
        return Err(bad());
    }
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(Some(id))
}

fn hex16(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets up a new volume at `dir` (an existing directory): `shards/`, `tmp/`
/// and the marker, written and synced last so that a marker means a usable
/// volume.
fn init_volume(dir: &Path, id: &[u8; 16]) -> Result<()> {
    for sub in ["shards", "tmp"] {
        let p = dir.join(sub);
        match std::fs::create_dir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(format!("create {}", p.display()), e)),
        }
    }
    let tmp = dir.join(format!("{MARKER}.part"));
    let mut f = File::create(&tmp).map_err(io_at(&tmp, "create"))?;
    f.write_all(format!("cairn volume {}\n", hex16(id)).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_at(&tmp, "write"))?;
    let marker = dir.join(MARKER);
    std::fs::rename(&tmp, &marker).map_err(io_at(&marker, "rename into"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir, "sync"))?;
    Ok(())
}

/// A row of the volume table: index -> (id, path).
pub(crate) struct VolumeRow {
    pub(crate) index: u8,
    pub(crate) id: [u8; 16],
    pub(crate) path: PathBuf,
}

impl VolumeRow {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = self.id.to_vec();
        v.extend_from_slice(self.path.as_os_str().as_bytes());
        v
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<VolumeRow> {
        let (&[index], Some(id)) = (key, value.get(..16)) else {
            return Err(StoreError::CorruptRecord("volume table row".into()));
        };
        Ok(VolumeRow {
            index,
            id: id.try_into().expect("16 bytes"),
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&value[16..])),
        })
    }
}

/// The volumes of a store from its table and the config: every configured
/// path becomes a volume (new ones are set up and added to `rows`, returned
/// to be written), and rows the config no longer names stay, unconfigured.
pub(crate) fn resolve(
    root: &Path,
    rows: &[VolumeRow],
    specs: &[VolumeSpec],
    boot: &str,
) -> Result<(Vec<Volume>, Vec<VolumeRow>)> {
    let mut volumes: Vec<Volume> = Vec::new();
    let mut new_rows: Vec<VolumeRow> = Vec::new();
    for (n, spec) in specs.iter().enumerate() {
        let bad = |reason: String| StoreError::Volume {
            path: spec.path.clone(),
            reason,
        };
        if !spec.path.is_absolute() {
            return Err(bad("a volume's path must be absolute".into()));
        }
        if spec.path.starts_with(root) || root.starts_with(&spec.path) {
            return Err(bad(format!(
                "a volume may not be inside the data directory {} or contain it",
                root.display()
            )));
        }
        if specs[..n]
            .iter()
            .any(|o| o.path.starts_with(&spec.path) || spec.path.starts_with(&o.path))
        {
            return Err(bad("named twice, or inside another volume".into()));
        }
        let known_by_path = rows.iter().find(|r| r.path == spec.path);
        let (index, id) = match read_marker(&spec.path)? {
            Some(id) => match rows.iter().find(|r| r.id == id) {
                Some(r) => {
                    if r.path != spec.path {
                        // The disk is mounted somewhere else now: follow it.
                        new_rows.push(VolumeRow {
                            index: r.index,
                            id,
                            path: spec.path.clone(),
                        });
                    }
                    (r.index, id)
                }
                None => {
                    return Err(bad(format!(
                        "its {MARKER} is of another cairn data directory; this node never writes to (or cleans) a disk set up by another. Use an empty directory, or remove {MARKER} and what is under shards/ yourself"
                    )));
                }
            },
            None => match known_by_path {
                // Its disk is not mounted: missing until its marker is back.
                Some(r) => (r.index, r.id),
                None => {
                    if !spec.path.is_dir() {
                        return Err(bad(
                            "does not exist or is not a directory; mount the disk there (or create the directory) and start again".into(),
                        ));
                    }
                    let used = rows.iter().chain(&new_rows).map(|r| r.index).max();
                    let index = match used {
                        None => 1,
                        Some(255) => return Err(bad("more than 255 volumes".into())),
                        Some(i) => i + 1,
                    };
                    let id: [u8; 16] = rand::random();
                    init_volume(&spec.path, &id)?;
                    tracing::info!(volume = index, path = %spec.path.display(), "new volume set up");
                    new_rows.push(VolumeRow {
                        index,
                        id,
                        path: spec.path.clone(),
                    });
                    (index, id)
                }
            },
        };
        volumes.push(Volume::configured_volume(
            index,
            &spec.path,
            spec.capacity,
            id,
            true,
            boot,
        ));
    }
    // Volumes of the table the config no longer names: read, never written.
    for r in rows {
        if !volumes.iter().any(|v| v.index == r.index) {
            volumes.push(Volume::configured_volume(
                r.index, &r.path, 0, r.id, false, boot,
            ));
        }
    }
    for v in &volumes {
        v.check();
    }
    Ok((volumes, new_rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_foreign_text_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_marker(d.path()).unwrap(), None);
        init_volume(d.path(), &[7; 16]).unwrap();
        assert_eq!(read_marker(d.path()).unwrap(), Some([7; 16]));
        std::fs::write(d.path().join(MARKER), "hello").unwrap();
        let e = read_marker(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a cairn volume marker"), "{e}");
    }
}
