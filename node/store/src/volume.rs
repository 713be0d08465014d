//! Volumes: the disks a store keeps shards on. Volume 0 is the data
//! directory itself (beside the metadata); the others are disks an operator
//! configured (`[[storage.volume]]`), say a USB disk on a board whose data
//! directory is on its SD card.
//!
//! A configured volume is known by a marker file, `cairn-volume.id`, written
//! once when the volume is first used: the volume's id and the id of the
//! store that set it up. The store's volume table keeps index, id and path. A volume whose marker is not there (its disk is not
//! mounted: the path is an empty mount point) is *missing*: nothing is
//! written to it (no directory is ever created in it), its shards answer
//! "not stored" and are reported lost, so validators repair them elsewhere
//! while the node serves the rest; when the marker is back, so are its
//! shards. A marker of another store refuses to open: a disk set up by
//! another data directory is never written to, and never cleaned. A marker
//! of this store that the table lacks (a first start that failed half-way)
//! is adopted.
//!
//! What is left to chance: a disk unmounted in the microseconds between a
//! look at its marker and the creation of this process's temporary
//! directory could leave that (empty) directory in the mount point; the
//! marker is looked at again afterwards and the directory removed.
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
    /// The id of the store the volume belongs to.
    store: [u8; 16],
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
            store: [0; 16],
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
        (id, store): ([u8; 16], [u8; 16]),
        configured: bool,
        boot: &str,
    ) -> Volume {
        Volume {
            index,
            path: path.to_path_buf(),
            capacity,
            id: Some(id),
            store,
            configured,
            tmp: path.join("tmp").join(boot),
            reserved: AtomicU64::new(0),
            present: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    /// True if the volume's marker is there and is this volume's.
    fn marker_is_ours(&self) -> bool {
        matches!(
            (self.id, read_marker(&self.path)),
            (Some(id), Ok(Some(m))) if m.volume == id && m.store == self.store
        )
    }

    /// Looks for the volume's marker and records whether it is there. A
    /// configured volume that is present gets this process's temporary
    /// directory (below the volume's own `tmp`); a volume the config no
    /// longer names is only read. Called through `Store::check_volumes`,
    /// which reports the change.
    pub(crate) fn check(&self) -> Option<VolumeChange> {
        self.id?;
        let mut now = self.marker_is_ours();
        if now && self.configured {
            // Made one level at a time, only below a marker that is there;
            // looked at again afterwards (the disk may have gone meanwhile),
            // and what this call made is removed if it has.
            let mut made: Vec<PathBuf> = Vec::new();
            for dir in [self.path.join("tmp"), self.tmp.clone()] {
                match std::fs::create_dir(&dir) {
                    Ok(()) => made.push(dir),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(_) => now = false,
                }
            }
            if !made.is_empty() && !self.marker_is_ours() {
                for dir in made.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
                now = false;
            }
        }
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

/// What a marker says: which volume, of which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) volume: [u8; 16],
    pub(crate) store: [u8; 16],
}

/// The marker at `dir`, if it has one. A marker that does not parse is an
/// error: something else wrote that file.
fn read_marker(dir: &Path) -> Result<Option<Marker>> {
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
    let (volume, store) = text
        .trim()
        .strip_prefix("cairn volume ")
        .and_then(|rest| rest.split_once(" store "))
        .ok_or_else(bad)?;
    let parse = |hex: &str| -> Option<[u8; 16]> {
        let mut id = [0u8; 16];
        if hex.len() != 32 {
            return None;
        }
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(id)
    };
    Ok(Some(Marker {
        volume: parse(volume).ok_or_else(bad)?,
        store: parse(store).ok_or_else(bad)?,
    }))
}

fn hex16(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets up a new volume at `dir` (an existing directory): `shards/`, `tmp/`
/// and the marker, written and synced last so that a marker means a usable
/// volume.
fn init_volume(dir: &Path, marker: &Marker) -> Result<()> {
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
    f.write_all(
        format!(
            "cairn volume {} store {}\n",
            hex16(&marker.volume),
            hex16(&marker.store)
        )
        .as_bytes(),
    )
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
        if index == 0 {
            return Err(StoreError::CorruptRecord(
                "volume table row for volume 0 (the data directory)".into(),
            ));
        }
        Ok(VolumeRow {
            index,
            id: id.try_into().expect("16 bytes"),
            path: PathBuf::from(std::ffi::OsStr::from_bytes(&value[16..])),
        })
    }
}

/// The volumes of a store from its table and the config: every configured
/// path becomes a volume (new ones are set up, their rows returned to be
/// written), and rows the config no longer names stay, unconfigured. All
/// specs are checked before any disk is touched.
pub(crate) fn resolve(
    root: &Path,
    rows: &[VolumeRow],
    store: [u8; 16],
    specs: &[VolumeSpec],
    boot: &str,
) -> Result<(Vec<Volume>, Vec<VolumeRow>)> {
    let bad = |spec: &VolumeSpec, reason: String| StoreError::Volume {
        path: spec.path.clone(),
        reason,
    };
    for (n, spec) in specs.iter().enumerate() {
        if !spec.path.is_absolute() {
            return Err(bad(spec, "a volume's path must be absolute".into()));
        }
        if spec.path.starts_with(root) || root.starts_with(&spec.path) {
            return Err(bad(
                spec,
                format!(
                    "a volume may not be inside the data directory {} or contain it",
                    root.display()
                ),
            ));
        }
        if specs[..n]
            .iter()
            .any(|o| o.path.starts_with(&spec.path) || spec.path.starts_with(&o.path))
        {
            return Err(bad(spec, "named twice, or inside another volume".into()));
        }
    }
    let mut new_rows: Vec<VolumeRow> = Vec::new();
    let mut to_init: Vec<(PathBuf, Marker)> = Vec::new();
    let mut resolved: Vec<(u8, [u8; 16])> = Vec::new();
    let next_index = |new_rows: &[VolumeRow], spec: &VolumeSpec| -> Result<u8> {
        match rows.iter().chain(new_rows).map(|r| r.index).max() {
            None => Ok(1),
            Some(255) => Err(bad(spec, "more than 255 volumes".into())),
            Some(i) => Ok(i + 1),
        }
    };
    for spec in specs {
        let (index, id) = match read_marker(&spec.path)? {
            Some(m) if m.store != store => {
                return Err(bad(
                    spec,
                    format!(
                        "its {MARKER} is of another cairn data directory; this node never writes to (or cleans) a disk set up by another. Use an empty directory, or remove {MARKER} and what is under shards/ yourself"
                    ),
                ));
            }
            Some(m) => match rows.iter().find(|r| r.id == m.volume) {
                Some(r) => {
                    if r.path != spec.path {
                        // The disk is mounted somewhere else now: follow it.
                        new_rows.push(VolumeRow {
                            index: r.index,
                            id: m.volume,
                            path: spec.path.clone(),
                        });
                    }
                    (r.index, m.volume)
                }
                // Set up by this store, its row never written (a first
                // start that failed half-way): adopted.
                None => {
                    let index = next_index(&new_rows, spec)?;
                    new_rows.push(VolumeRow {
                        index,
                        id: m.volume,
                        path: spec.path.clone(),
                    });
                    (index, m.volume)
                }
            },
            None => match rows.iter().find(|r| r.path == spec.path) {
                // Its disk is not mounted: missing until its marker is back.
                Some(r) => (r.index, r.id),
                None => {
                    if !spec.path.is_dir() {
                        return Err(bad(
                            spec,
                            "does not exist or is not a directory; mount the disk there (or create the directory) and start again".into(),
                        ));
                    }
                    let index = next_index(&new_rows, spec)?;
                    let id: [u8; 16] = rand::random();
                    to_init.push((spec.path.clone(), Marker { volume: id, store }));
                    new_rows.push(VolumeRow {
                        index,
                        id,
                        path: spec.path.clone(),
                    });
                    (index, id)
                }
            },
        };
        if let Some(n) = resolved.iter().position(|(i, _)| *i == index) {
            return Err(bad(
                spec,
                format!(
                    "is the same volume as {} (its disk was moved there?); name each disk once",
                    specs[n].path.display()
                ),
            ));
        }
        resolved.push((index, id));
    }
    // Markers last, each written and synced before its row (a marker
    // without a row is adopted at the next start; a row without its marker
    // would be a missing disk).
    for (path, marker) in &to_init {
        init_volume(path, marker)?;
        tracing::info!(path = %path.display(), "new volume set up");
    }
    let mut volumes: Vec<Volume> = specs
        .iter()
        .zip(&resolved)
        .map(|(spec, &(index, id))| {
            Volume::configured_volume(index, &spec.path, spec.capacity, (id, store), true, boot)
        })
        .collect();
    // Volumes of the table the config no longer names: read, never written.
    for r in rows {
        if !volumes.iter().any(|v| v.index == r.index) {
            volumes.push(Volume::configured_volume(
                r.index,
                &r.path,
                0,
                (r.id, store),
                false,
                boot,
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
        let m = Marker {
            volume: [7; 16],
            store: [8; 16],
        };
        init_volume(d.path(), &m).unwrap();
        assert_eq!(read_marker(d.path()).unwrap(), Some(m));
        std::fs::write(d.path().join(MARKER), "hello").unwrap();
        let e = read_marker(d.path()).unwrap_err();
        assert!(e.to_string().contains("not a cairn volume marker"), "{e}");
    }
}
