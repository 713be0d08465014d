//! The client side of `cairn pin` and `cairn get`: walking a dataset and
//! streaming it to the daemon; streaming it back and writing it atomically.
//!
//! Pin checks everything it can before sending a byte (the path exists,
//! every file opens, names are UTF-8), then streams the files in path order
//! with a known total length. Get checks every path the daemon names (a
//! relative path, no `..`, no two entries that a case-folding filesystem
//! would merge) before it writes anything, writes into a temporary
//! directory beside the destination, checks every file's BLAKE3 against the
//! manifest, and renames the whole tree into place only when all of it is
//! right: an interrupted or failed get leaves nothing behind.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use cairn_api::{
    ApiClient, ApiError, DatasetView, EntryKind, EntryView, FileSpec, PinOutcome, PinRequest,
};
use cairn_proto::Cid;
use cairn_proto::records::check_path;

/// A dataset on disk, ready to stream.
#[derive(Debug)]
pub struct LocalDataset {
    pub root: PathBuf,
    pub single_file: bool,
    pub files: Vec<FileSpec>,
    pub total: u64,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => "; check the path",
        std::io::ErrorKind::PermissionDenied => "; check its permissions",
        _ => "",
    };
    anyhow!("{what} {}: {e}{hint}", path.display())
}

/// Refuses a name with a control character: cairn keeps them out of
/// datasets, as a terminal acts on them when a name is printed (a name can
/// clear the screen, or move the cursor over what was said before it).
fn check_printable(name: &str, dir: &Path) -> Result<()> {
    if name.chars().any(char::is_control) {
        bail!(
            "{}: the name {name:?} holds a control character, which cairn keeps out of datasets; rename it and pin again",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses a path a daemon names with a control character (cairn pins
/// none), before it is printed anywhere.
fn named_printable(path: &str) -> Result<()> {
    if path.chars().any(char::is_control) {
        bail!(
            "the daemon named {path:?}, with a control character (cairn pins none); nothing was written"
        );
    }
    Ok(())
}

/// Walks `path` (a file or a directory tree) and checks every file opens.
pub fn scan(path: &Path) -> Result<LocalDataset> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, "cannot pin", e))?;
    if meta.is_file() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{}: file name is not UTF-8", path.display()))?
            .to_string();
        check_printable(&name, path.parent().unwrap_or(Path::new(".")))?;
        File::open(path).map_err(|e| io_err(path, "cannot read", e))?;
        let size = meta.len();
        return Ok(LocalDataset {
            root: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            single_file: true,
            files: vec![FileSpec {
                path: name,
                size,
                executable: is_executable(&meta),
                dir: false,
            }],
            total: size,
        });
    }
    if !meta.is_dir() {
        bail!("{} is neither a file nor a directory", path.display());
    }
    let mut files = Vec::new();
    walk(path, "", &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let total = files.iter().map(|f| f.size).sum();
    Ok(LocalDataset {
        root: path.to_path_buf(),
        single_file: false,
        files,
        total,
    })
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<FileSpec>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, "cannot read directory", e))?;
    let mut empty = true;
    for entry in rd {
        let entry = entry.map_err(|e| io_err(dir, "cannot read directory", e))?;
        empty = false;
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| anyhow!("{}: a name in it is not UTF-8", dir.display()))?;
        check_printable(name, dir)?;
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let p = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| io_err(&p, "cannot stat", e))?;
        if ft.is_symlink() {
            tracing::warn!(path = %p.display(), "skipping symbolic link");
            continue;
        }
        if ft.is_dir() {
            walk(&p, &rel, out)?;
        } else if ft.is_file() {
            let meta = entry.metadata().map_err(|e| io_err(&p, "cannot stat", e))?;
            File::open(&p).map_err(|e| io_err(&p, "cannot read", e))?;
            out.push(FileSpec {
                path: rel,
                size: meta.len(),
                executable: is_executable(&meta),
                dir: false,
            });
        }
    }
    if empty && !prefix.is_empty() {
        out.push(FileSpec {
            path: prefix.to_string(),
            size: 0,
            executable: false,
            dir: true,
        });
    }
    Ok(())
}

/// Reads the files of a dataset in order, each exactly its scanned size.
struct Concat<'a> {
    ds: &'a LocalDataset,
    next: usize,
    current: Option<(std::io::Take<File>, PathBuf)>,
}

impl Read for Concat<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some((r, p)) = &mut self.current {
                let n = r.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                if r.limit() > 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} shrank while being pinned", p.display()),
                    ));
                }
                self.current = None;
            }
            let Some(f) = self.ds.files.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            if f.dir {
                continue;
            }
            let p = self.ds.root.join(&f.path);
            let file = File::open(&p)?;
            self.current = Some((file.take(f.size), p));
        }
    }
}

/// Options of a pin.
#[derive(Debug, Clone, Default)]
pub struct PinOptions {
    pub name: Option<String>,
    pub data_shards: Option<u16>,
    pub parity_shards: Option<u16>,
    pub segment_size: Option<u64>,
}

/// Pins `path` through the daemon; `progress(sent, total)` follows the upload.
pub fn pin(
    api: &ApiClient,
    path: &Path,
    opts: &PinOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<PinOutcome> {
    let ds = scan(path)?;
    let name = opts.name.clone().unwrap_or_else(|| {
        path.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| path.display().to_string())
    });
    let req = PinRequest {
        name,
        files: ds.files.clone(),
        single_file: ds.single_file,
        data_shards: opts.data_shards,
        parity_shards: opts.parity_shards,
        segment_size: opts.segment_size,
    };
    let total = ds.total;
    let mut body = Concat {
        ds: &ds,
        next: 0,
        current: None,
    };
    Ok(api.pin(&req, &mut body, total, |sent| progress(sent, total))?)
}

/// Checks the entries a daemon names before anything is written: each a
/// relative path without `.` or `..`, none twice, none that differs from
/// another only in case (the two would be one file on a case-folding
/// filesystem), no file that is also the directory of another, and no
/// control character (printed, a terminal would act on it).
fn check_entries(entries: &[&EntryView]) -> Result<()> {
    let mut folded = HashSet::new();
    let mut files = HashSet::new();
    for e in entries {
        check_path(&e.path).map_err(|err| anyhow!("the daemon named an unsafe path: {err}"))?;
        named_printable(&e.path)?;
        if !folded.insert(e.path.to_lowercase()) {
            bail!(
                "the daemon named {:?} twice (or two paths that differ only in case); nothing was written",
                e.path
            );
        }
        if e.kind == EntryKind::File {
            files.insert(e.path.as_str());
        }
    }
    for e in entries {
        let mut prefix = e.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if files.contains(parent) {
                bail!(
                    "the daemon named {:?} inside {parent:?}, which is a file; nothing was written",
                    e.path
                );
            }
            prefix = parent;
        }
    }
    Ok(())
}

/// Streams one file of a dataset (`CID/path`, or the CID of a single-file
/// dataset) to `out`, checking it as it goes: no more than the manifest's
/// size is written, and a file whose size or BLAKE3 differs fails the
/// command after the fact (a pipe cannot take bytes back: the caller sees
/// the failure in the exit status).
pub fn get_to_writer(api: &ApiClient, target: &str, out: &mut dyn Write) -> Result<()> {
    let (cid_str, sub) = target.split_once('/').unwrap_or((target, ""));
    let cid: Cid = cid_str.parse()?;
    let listing = api.dataset(&cid.to_string())?;
    if !listing_is_the_cids(api, &cid, &listing)? {
        eprintln!(
            "warning: the manifest of {cid} was not checked against the CID (the daemon, an earlier release, gives none)"
        );
    }
    let files: Vec<&EntryView> = listing
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && (e.path == sub || sub.is_empty()))
        .collect();
    let [e] = files.as_slice() else {
        if sub.is_empty() {
            bail!(
                "{cid} holds {} files; `-o -` writes one: name it as {cid}/PATH",
                files.len()
            );
        }
        bail!("{cid} has no file {sub:?}");
    };
    named_printable(&e.path)?;
    let resp = api.file(&cid.to_string(), &e.path, None)?;
    let (written, got) = copy_checked(resp, e, |piece, _| {
        out.write_all(piece).context("writing the output")
    })?;
    out.flush().context("writing the output")?;
    if written != e.size || got.as_str() != e.blake3 {
        bail!(
            "{}: the bytes written do not match the manifest (size {written} of {}, BLAKE3 {got}); discard the output",
            e.path,
            e.size
        );
    }
    Ok(())
}

/// Fetches a dataset (or one file of it) into `out`, atomically.
pub fn get(
    api: &ApiClient,
    target: &str,
    out: Option<&Path>,
    mut progress: impl FnMut(u64, u64),
) -> Result<GetOutcome> {
    let started = Instant::now();
    let (cid_str, sub) = target.split_once('/').unwrap_or((target, ""));
    let cid: Cid = cid_str.parse()?;
    let manifest = api.dataset(&cid.to_string())?;
    let manifest_checked = listing_is_the_cids(api, &cid, &manifest)?;
    let wanted: Vec<&EntryView> = if sub.is_empty() {
        manifest.entries.iter().collect()
    } else {
        let e: Vec<&EntryView> = manifest.entries.iter().filter(|e| e.path == sub).collect();
        if e.is_empty() {
            bail!("{cid} has no file {sub:?}");
        }
        e
    };
    check_entries(&wanted)?;
    let as_file = manifest.single_file || !sub.is_empty();
    let dest: PathBuf = match out {
        Some(p) => p.to_path_buf(),
        None if as_file => {
            let Some(first) = wanted.first() else {
                bail!("{cid} lists no file; nothing was written");
            };
            PathBuf::from(Path::new(&first.path).file_name().unwrap_or_default())
        }
        None => PathBuf::from(cid.to_string()),
    };
    if dest.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; cairn get never overwrites: choose another -o or remove it",
            dest.display()
        );
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("{} is not a directory", parent.display());
    }
    let total: u64 = wanted.iter().map(|e| e.size).sum();
    let tmp = parent.join(format!(
        ".{}.cairn-partial-{}-{:08x}",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| -> Result<u64> {
        if !as_file {
            std::fs::create_dir(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
            return match fetch_packed(api, &cid, &wanted, &tmp, |n| progress(n, total))? {
                Some(done) => Ok(done),
                // A daemon of an earlier release: a request per file.
                None => fetch_each(api, &cid, &wanted, &tmp, |n| progress(n, total)),
            };
        }
        // One entry: the dataset's only file, or the one named.
        let Some(e) = wanted.first() else {
            bail!("{cid} lists no file; nothing was written");
        };
        if e.kind == EntryKind::Dir {
            std::fs::create_dir_all(&tmp).map_err(|err| io_err(&tmp, "cannot create", err))?;
            return Ok(0);
        }
        fetch_entry(api, &cid, e, &tmp, |n| progress(n, total))?;
        Ok(e.size)
    })();
    let result = result.and_then(|bytes| match rename_no_replace(&tmp, &dest) {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(anyhow!(
            "{} appeared while get ran; cairn get never overwrites: nothing was written (choose another -o or remove it)",
            dest.display()
        )),
        Err(e) => Err(io_err(&dest, "cannot move into place", e)),
    });
    match result {
        Ok(bytes) => Ok(GetOutcome {
            manifest_checked,
            path: dest,
            bytes,
            files: wanted.len(),
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            let _ = if tmp.is_dir() {
                std::fs::remove_dir_all(&tmp)
            } else {
                std::fs::remove_file(&tmp)
            };
            Err(e)
        }
    }
}

/// Fetches a whole dataset into the directory `root` in one request: the
/// packed stream (its files back to back), cut at the manifest's offsets.
/// A dataset of many small files costs no round trip per file (10,000 files
/// of 1-20 KiB took 6-12 s one request each). The offsets are checked
/// first (back to back from 0: no gap, no overlap), every file against its
/// size and BLAKE3 as it is written, and the stream must end where the
/// last file does. Finished files are synced on a [`SyncPool`] while the
/// next ones are written (a large one also behind its writes). `None`: the
/// daemon has no packed stream (an earlier release); nothing was written.
fn fetch_packed(
    api: &ApiClient,
    cid: &Cid,
    entries: &[&EntryView],
    root: &Path,
    mut progress: impl FnMut(u64),
) -> Result<Option<u64>> {
    let mut files: Vec<&EntryView> = entries
        .iter()
        .filter(|e| e.kind != EntryKind::Dir)
        .copied()
        .collect();
    // An empty file shares its offset with the file after it: it goes first.
    files.sort_by_key(|e| (e.offset, e.size));
    let mut end = 0u64;
    for e in &files {
        if e.offset != end {
            bail!(
                "{}: the manifest puts it at byte {} of the dataset, where the files before it end at byte {end}; nothing was written",
                e.path,
                e.offset
            );
        }
        end = end.checked_add(e.size).ok_or_else(|| {
            anyhow!(
                "{}: the manifest's sizes overflow; nothing was written",
                e.path
            )
        })?;
    }
    for e in entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        let local = root.join(&e.path);
        std::fs::create_dir_all(&local).map_err(|err| io_err(&local, "cannot create", err))?;
    }
    let mut stream = match api.dataset_bytes(&cid.to_string()) {
        Ok(s) => s,
        Err(ApiError::Refused { status: 404, .. }) if api.dataset(&cid.to_string()).is_ok() => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(len) = stream.len
        && len != end
    {
        bail!(
            "the daemon sends {len} bytes for a dataset whose files hold {end}; nothing was written"
        );
    }
    let mut syncs = SyncPool::new(files.len())?;
    let mut done = 0u64;
    let mut buf = vec![0u8; 128 << 10];
    for e in files {
        let local = root.join(&e.path);
        if let Some(p) = local.parent() {
            std::fs::create_dir_all(p).map_err(|err| io_err(p, "cannot create", err))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&local)
            .map_err(|err| io_err(&local, "cannot create", err))?;
        let mut hasher = blake3::Hasher::new();
        // A large file is synced behind its writes, as a single file is;
        // small ones are synced by the pool once written.
        let mut behind = (e.size >= SyncBehind::EVERY as u64).then(|| SyncBehind::new(&f));
        let mut left = e.size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = fill(&mut stream, &mut buf[..want])
                .with_context(|| format!("{}: the transfer broke off", e.path))?;
            if n == 0 {
                bail!(
                    "{}: the bytes received do not match the manifest (the stream ended {} bytes into its {})",
                    e.path,
                    e.size - left,
                    e.size
                );
            }
            hasher.update(&buf[..n]);
            write_out(&mut f, &local, &buf[..n])?;
            if let Some(b) = behind.as_mut() {
                b.wrote(n);
            }
            left -= n as u64;
            done += n as u64;
            progress(done);
        }
        if let Some(b) = behind {
            b.finish()
                .map_err(|err| io_err(&local, "cannot write", err))?;
        }
        let got = hasher.finalize().to_hex();
        if got.as_str() != e.blake3 {
            bail!(
                "{}: the bytes received do not match the manifest (BLAKE3 {got})",
                e.path
            );
        }
        if e.executable {
            make_executable(&local);
        }
        syncs.sync(f, local)?;
    }
    if fill(&mut stream, &mut buf[..1]).unwrap_or(0) != 0 {
        bail!("the daemon sent more than the dataset's {end} bytes; nothing was kept");
    }
    syncs.finish()?;
    Ok(Some(done))
}

/// Fetches a dataset's files one request each, each synced as it ends:
/// what a daemon of an earlier release, without the packed stream, serves.
fn fetch_each(
    api: &ApiClient,
    cid: &Cid,
    entries: &[&EntryView],
    root: &Path,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut done = 0u64;
    for e in entries {
        let local = root.join(&e.path);
        if e.kind == EntryKind::Dir {
            std::fs::create_dir_all(&local).map_err(|err| io_err(&local, "cannot create", err))?;
            continue;
        }
        if let Some(p) = local.parent() {
            std::fs::create_dir_all(p).map_err(|err| io_err(p, "cannot create", err))?;
        }
        fetch_entry(api, cid, e, &local, |n| progress(done + n))?;
        done += e.size;
    }
    Ok(done)
}

/// One file of a dataset, one request: fetched into `local`, checked
/// against the manifest's size and BLAKE3, made executable if it was.
fn fetch_entry(
    api: &ApiClient,
    cid: &Cid,
    e: &EntryView,
    local: &Path,
    progress: impl FnMut(u64),
) -> Result<()> {
    let got = fetch_file(api, cid, e, local, progress)?;
    if got.0 != e.size || got.1 != e.blake3 {
        bail!(
            "{}: the bytes received do not match the manifest (size {} of {}, BLAKE3 {})",
            e.path,
            got.0,
            e.size,
            got.1
        );
    }
    if e.executable {
        make_executable(local);
    }
    Ok(())
}

/// The mode a file marked executable in its manifest gets (best effort:
/// a filesystem without modes keeps what it has).
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
}

/// Syncs finished files on a few threads while later ones are written: one
/// after another, each sync waits for a journal commit of its own (10,000
/// files of 1-20 KiB: 1.9 s here; 0.7 s on 16 threads, whose syncs share
/// commits). Only the files given are synced, never the whole filesystem
/// (a `syncfs` waited for other programs' writes too). At most
/// [`SyncPool::QUEUE`] files wait, each an open file. Dropped before
/// [`SyncPool::finish`] (a get that failed), it syncs nothing more and
/// waits for its threads.
struct SyncPool {
    tx: Option<std::sync::mpsc::SyncSender<(File, PathBuf)>>,
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SyncPool {
    const THREADS: usize = 16;
    const QUEUE: usize = 64;

    /// A pool for `files` files: no more threads than files.
    fn new(files: usize) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(File, PathBuf)>(Self::QUEUE);
        // The threads hold the only handles to the receiver: when all have
        // ended, a sender waiting on a full queue is let go with an error.
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let abandoned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut pool = SyncPool {
            tx: Some(tx),
            threads: Vec::new(),
            abandoned: std::sync::Arc::clone(&abandoned),
        };
        for _ in 0..files.clamp(1, Self::THREADS) {
            let (rx, abandoned) = (
                std::sync::Arc::clone(&rx),
                std::sync::Arc::clone(&abandoned),
            );
            let thread = std::thread::Builder::new()
                .name("sync".into())
                .spawn(move || -> Result<()> {
                    loop {
                        let next = rx.lock().expect("the queue's lock").recv();
                        let Ok((f, path)) = next else {
                            return Ok(());
                        };
                        if !abandoned.load(std::sync::atomic::Ordering::Relaxed) {
                            f.sync_all().map_err(|e| io_err(&path, "cannot write", e))?;
                        }
                    }
                })
                .map_err(|e| anyhow!("cannot start a thread to sync the files written: {e}"))?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Queues a written file; once a sync has failed, stops and returns
    /// its error (a thread ends early only on an error).
    fn sync(&mut self, f: File, path: PathBuf) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) if !self.threads.iter().any(|t| t.is_finished()) => tx.send((f, path)).is_ok(),
            _ => false,
        };
        if sent {
            return Ok(());
        }
        self.join()?;
        Err(anyhow!("the sync threads stopped"))
    }

    /// Waits for every queued sync; the first error is the get's.
    fn finish(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        self.tx = None;
        let mut first = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(anyhow!("a sync thread failed")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.join();
    }
}

/// Writes to a file being fetched; a full disk says so.
fn write_out(f: &mut File, local: &Path, bytes: &[u8]) -> Result<()> {
    f.write_all(bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            anyhow!(
                "disk full writing {}; nothing was kept: free space and run get again",
                local.display()
            )
        } else {
            io_err(local, "cannot write", e)
        }
    })
}

/// What a get wrote.
#[derive(Debug, Clone)]
pub struct GetOutcome {
    pub path: PathBuf,
    pub bytes: u64,
    pub files: usize,
    pub seconds: f64,
    /// The listing was checked against the manifest whose BLAKE3 is the CID
    /// (false only with a daemon of an earlier release, which gives none).
    pub manifest_checked: bool,
}

/// Checks the API's listing of `cid` against the manifest whose BLAKE3 is
/// that CID, so what `get` writes is the dataset asked for, whoever
/// answers: the files, their sizes, offsets, BLAKE3s and modes must be
/// the manifest's. False when the daemon (an earlier release) has no
/// manifest to give.
fn listing_is_the_cids(api: &ApiClient, cid: &Cid, view: &DatasetView) -> Result<bool> {
    let bytes = match api.manifest(&cid.to_string()) {
        Ok(b) => b,
        Err(ApiError::Refused { status: 404, .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if *blake3::hash(&bytes).as_bytes() != cid.0 {
        bail!(
            "the manifest the API gives for {cid} does not hash to it: not this dataset; nothing was written"
        );
    }
    let m = cairn_proto::Manifest::decode(&bytes)
        .map_err(|e| anyhow!("the manifest of {cid} does not decode: {e}; nothing was written"))?;
    let same_entry = |a: &cairn_proto::Entry, b: &EntryView| {
        let kinds = matches!(
            (&a.kind, &b.kind),
            (cairn_proto::EntryKind::File, EntryKind::File)
                | (cairn_proto::EntryKind::Dir, EntryKind::Dir)
        );
        kinds
            && a.path == b.path
            && a.size == b.size
            && a.offset == b.offset
            && a.executable == b.executable
            && blake3::Hash::from(a.blake3).to_hex().as_str() == b.blake3
    };
    let same = m.single_file == view.single_file
        && m.entries.len() == view.entries.len()
        && m.entries
            .iter()
            .zip(&view.entries)
            .all(|(a, b)| same_entry(a, b));
    if !same {
        bail!("the API's listing of {cid} is not what its manifest holds; nothing was written");
    }
    Ok(true)
}

/// Streams one file to `local` (a new file: never through a link that is
/// already there), returning its size and BLAKE3 (hex).
fn fetch_file(
    api: &ApiClient,
    cid: &Cid,
    e: &EntryView,
    local: &Path,
    mut progress: impl FnMut(u64),
) -> Result<(u64, String)> {
    let resp = api.file(&cid.to_string(), &e.path, None)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(local)
        .map_err(|e| io_err(local, "cannot create", e))?;
    let mut behind = SyncBehind::new(&f);
    let (n_total, got) = copy_checked(resp, e, |piece, so_far| {
        write_out(&mut f, local, piece)?;
        behind.wrote(piece.len());
        progress(so_far);
        Ok(())
    })?;
    behind
        .finish()
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(local, "cannot write", e))?;
    Ok((n_total, got))
}

/// Copies file `e` of a dataset from `input` to `write` (given each piece
/// and the bytes so far), never more than the manifest's size of it;
/// returns the bytes copied and their BLAKE3 (hex), for the caller to
/// check against the manifest.
fn copy_checked(
    mut input: impl Read,
    e: &EntryView,
    mut write: impl FnMut(&[u8], u64) -> Result<()>,
) -> Result<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut copied = 0u64;
    loop {
        // The buffer is filled before it is hashed and written: the HTTP
        // reader hands out what one socket read brought (often a few KiB),
        // and BLAKE3 and the file write cost less per byte in larger
        // pieces. 128 KiB stays in the core's cache between the copy in,
        // the hash and the write (a 1 MiB buffer filled first cost more CPU
        // than no filling; A/B in docs/PERFORMANCE.md).
        let n = fill(&mut input, &mut buf)
            .with_context(|| format!("{}: the transfer broke off", e.path))?;
        if n == 0 {
            break;
        }
        // No more than the manifest announces is written.
        if copied + n as u64 > e.size {
            bail!(
                "{}: the API sends more than the manifest's {} bytes; nothing more was written",
                e.path,
                e.size
            );
        }
        hasher.update(&buf[..n]);
        copied += n as u64;
        write(&buf[..n], copied)?;
    }
    Ok((copied, hasher.finalize().to_hex().to_string()))
}

/// Moves `tmp` to `dest` unless something is there, also something made
/// while get ran: the kernel checks and renames in one step
/// (`RENAME_NOREPLACE`) where the filesystem can; elsewhere (some network
/// filesystems) it is checked, then renamed.
fn rename_no_replace(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, tmp, CWD, dest, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if dest.symlink_metadata().is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(tmp, dest)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads into `buf` until it is full or the input ends; the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(got) => n += got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Syncs a file being written from a second thread every
/// [`SyncBehind::EVERY`] bytes, so the disk writes while later bytes still
/// arrive and the sync that ends a file waits for its tail only (a 256 MiB
/// file's final sync was a quarter of a `get` here). A sync already under
/// way is not queued behind: the next one covers its bytes.
struct SyncBehind {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<usize>>>,
    since: usize,
}

impl SyncBehind {
    const EVERY: usize = 16 << 20;

    fn new(f: &File) -> Self {
        let Ok(clone) = f.try_clone() else {
            // No second handle: the sync at the end does it all.
            return SyncBehind {
                tx: None,
                thread: None,
                since: 0,
            };
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            let mut syncs = 0;
            while rx.recv().is_ok() {
                clone.sync_data()?;
                syncs += 1;
            }
            Ok(syncs)
        });
        SyncBehind {
            tx: Some(tx),
            thread: Some(thread),
            since: 0,
        }
    }

    fn wrote(&mut self, n: usize) {
        self.since += n;
        if self.since >= Self::EVERY {
            self.since = 0;
            if let Some(tx) = &self.tx {
                let _ = tx.try_send(());
            }
        }
    }

    /// Waits for the thread; an error it met (a full disk, EIO) is the
    /// file's. Returns how many syncs it made.
    fn finish(mut self) -> std::io::Result<usize> {
        self.tx = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the sync thread failed")),
            None => Ok(0),
        }
    }
}

/// A one-line progress display on a terminal (indicatif): bytes, rate,
/// ETA; nothing when `enabled` is false (not a terminal, `--json`).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(label: &str, enabled: bool) -> Self {
        let bar = enabled.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(5),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix}: {bytes:>10} / {total_bytes} {percent:>3}%  {binary_bytes_per_sec:>12}  ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        Progress { bar }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length() != Some(total) {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_reads_a_manifest_as_long_as_the_protocol_allows() {
        assert_eq!(
            cairn_api::MAX_MANIFEST_REPLY,
            cairn_proto::wire::MAX_MANIFEST_LEN
        );
    }

    /// A reader that hands out at most 3 bytes a call and is interrupted
    /// every other call, as a socket may be.
    struct Trickle<'a> {
        left: &'a [u8],
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3).min(self.left.len());
            buf[..n].copy_from_slice(&self.left[..n]);
            self.left = &self.left[n..];
            Ok(n)
        }
    }

    /// Files given to the pool are synced; a sync that fails (a pipe
    /// cannot be synced) is the error of the next call, naming its path.
    #[test]
    fn the_sync_pool_syncs_and_reports_the_first_failure() {
        let d = tempfile::tempdir().unwrap();
        let mut pool = SyncPool::new(200).unwrap();
        for i in 0..200 {
            let p = d.path().join(format!("f{i}"));
            std::fs::write(&p, [i as u8; 100]).unwrap();
            pool.sync(File::open(&p).unwrap(), p).unwrap();
        }
        pool.finish().unwrap();

        let mut pool = SyncPool::new(2).unwrap();
        let (_r, w) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(w));
        pool.sync(pipe, PathBuf::from("the-pipe")).unwrap();
        let mut failed = None;
        for i in 0..1000 {
            let p = d.path().join(format!("f{}", i % 200));
            if let Err(e) = pool.sync(File::open(&p).unwrap(), p) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => pool.finish().unwrap_err(),
        };
        assert!(e.to_string().contains("the-pipe"), "{e}");
    }

    #[test]
    fn fill_takes_whole_buffers_until_the_input_ends() {
        let data: Vec<u8> = (0..25u8).collect();
        let mut input = Trickle {
            left: &data,
            calls: 0,
        };
        let mut buf = [0u8; 10];
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let n = fill(&mut input, &mut buf).unwrap();
            sizes.push(n);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(sizes, [10, 10, 5, 0]);
        assert_eq!(got, data);
    }

    #[test]
    fn a_long_file_is_synced_while_it_is_written() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let mut f = File::create(&path).unwrap();
        let mut behind = SyncBehind::new(&f);
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..((3 * SyncBehind::EVERY) >> 20) {
            f.write_all(&chunk).unwrap();
            behind.wrote(chunk.len());
        }
        let syncs = behind.finish().unwrap();
        assert!((1..=3).contains(&syncs), "{syncs} syncs");
        f.sync_all().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            3 * SyncBehind::EVERY as u64
        );
    }

    #[test]
    fn scan_sorts_records_empty_dirs_and_checks_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("b/nested")).unwrap();
        std::fs::create_dir_all(r.join("empty")).unwrap();
        std::fs::write(r.join("b/nested/z.bin"), [1; 10]).unwrap();
        std::fs::write(r.join("a.txt"), b"hello").unwrap();
        std::fs::write(r.join("zero"), b"").unwrap();
        let ds = scan(r).unwrap();
        let paths: Vec<&str> = ds.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "b/nested/z.bin", "empty", "zero"]);
        assert!(ds.files[2].dir);
        assert_eq!(ds.total, 15);
        let mut all = Vec::new();
        Concat {
            ds: &ds,
            next: 0,
            current: None,
        }
        .read_to_end(&mut all)
        .unwrap();
        assert_eq!(all.len(), 15);
        assert!(
            scan(&r.join("missing"))
                .unwrap_err()
                .to_string()
                .contains("check the path")
        );
        std::fs::write(r.join("b/bell\u{7}"), b"").unwrap();
        let e = scan(r).unwrap_err().to_string();
        assert!(
            e.contains("\"bell\\u{7}\"") && e.contains("rename it"),
            "{e}"
        );
        let single = d.path().join("line\nbreak");
        std::fs::write(&single, b"x").unwrap();
        let e = scan(&single).unwrap_err().to_string();
        assert!(e.contains("\"line\\nbreak\"") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn the_move_into_place_never_replaces_what_appeared_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let (tmp, dest) = (d.path().join("tmp"), d.path().join("dest"));
        std::fs::write(&tmp, b"fetched").unwrap();
        std::fs::write(&dest, b"theirs").unwrap();
        let e = rename_no_replace(&tmp, &dest).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&dest).unwrap(), b"theirs");
        // An empty directory is something too (rename would replace it).
        std::fs::remove_file(&dest).unwrap();
        std::fs::create_dir(&dest).unwrap();
        assert!(rename_no_replace(&tmp, &dest).is_err());
        std::fs::remove_dir(&dest).unwrap();
        rename_no_replace(&tmp, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"fetched");
    }

    fn entry(path: &str, kind: EntryKind) -> EntryView {
        EntryView {
            path: path.into(),
            kind,
            size: 0,
            offset: 0,
            blake3: String::new(),
            executable: false,
        }
    }

    #[test]
    fn paths_from_the_daemon_are_checked_before_anything_is_written() {
        let ok = [
            entry("a/b.bin", EntryKind::File),
            entry("c", EntryKind::Dir),
        ];
        assert!(check_entries(&ok.iter().collect::<Vec<_>>()).is_ok());
        for bad in [
            vec![entry("../evil", EntryKind::File)],
            vec![entry("/tmp/x", EntryKind::File)],
            vec![entry("a/./b", EntryKind::File)],
            vec![
                entry("A.bin", EntryKind::File),
                entry("a.bin", EntryKind::File),
            ],
            vec![entry("x", EntryKind::File), entry("x/y", EntryKind::File)],
            vec![entry("a\u{1b}[2Jb", EntryKind::File)],
            vec![entry("line\nbreak", EntryKind::File)],
        ] {
            let refs: Vec<&EntryView> = bad.iter().collect();
            assert!(check_entries(&refs).is_err(), "{:?} accepted", bad[0].path);
        }
    }
}
