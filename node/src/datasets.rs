//! Datasets: pin (stream -> segments -> shards -> miners), read back, status, unpin.
//!
//! Pinning is a pipeline with bounded depth: the packed byte stream arrives in
//! chunks; a blocking stage cuts segments, hashes them, encodes k + m shards
//! and hashes each shard into its id; an async stage uploads the shards of up
//! to [`SEGMENTS_IN_FLIGHT`] segments at once, each shard to the miner that
//! rendezvous hashing picks for it, falling back to the next miner in that
//! order when one fails. Memory is a few segments whatever the dataset size.
//!
//! Reading fetches any k shards of a segment (data shards first, so that a
//! healthy dataset needs no decoding), verifies every byte against the shard
//! ids as it streams in, hedges with one more shard when a miner is slow,
//! decodes, checks the segment's hash, and streams on while prefetching the
//! next segment.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_erasure::{Decoder, Encoder, Params, Segmenter};
use cairn_proof::ShardId;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::client::Client;
use crate::config::Role;
use crate::manifest::{Cid, Entry, EntryKind, Manifest, Placement, SegmentRecord, check_path};
use crate::placement::{Candidate, capacity_weight, manifest_holders, place_segment};
use crate::registry::{AnyRegistry, Member, Registry};
use crate::store::Store;
use crate::{EndpointAddr, Error, NodeId, Result};

/// Segments whose shards upload at the same time.
pub const SEGMENTS_IN_FLIGHT: usize = 2;
/// Shard uploads at the same time, over all segments.
const UPLOADS_IN_FLIGHT: usize = 12;
/// How long a miner may take to answer a liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A shard fetch slower than this gets a hedge: one more shard is asked for.
const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// A shard fetch is abandoned after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// What the pinning node needs.
#[derive(Clone)]
pub struct DatasetContext {
    pub node_id: NodeId,
    pub key: iroh::SecretKey,
    pub client: Arc<Client>,
    pub registry: AnyRegistry,
    pub store: Arc<Store>,
    /// Recently opened datasets.
    pub cache: Arc<std::sync::Mutex<HashMap<Cid, (Instant, Dataset)>>>,
}

/// How long an opened dataset (manifest + placement) is reused.
pub const DATASET_CACHE_TTL: Duration = Duration::from_secs(20);

/// One entry of a pin request, in path order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
    /// An empty directory.
    #[serde(default)]
    pub dir: bool,
}

/// The header of a pin: what follows, and how to code it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PinRequest {
    /// Shown by `cairn ls`; not part of the CID.
    pub name: String,
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub single_file: bool,
    #[serde(default)]
    pub data_shards: Option<u16>,
    #[serde(default)]
    pub parity_shards: Option<u16>,
    #[serde(default)]
    pub segment_size: Option<u64>,
}

/// What a pin produced.
#[derive(Debug, Clone, Serialize)]
pub struct PinOutcome {
    pub cid: String,
    pub bytes: u64,
    pub files: usize,
    pub segments: usize,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub shards_stored: usize,
    pub manifest_copies: usize,
    pub validators_notified: usize,
    pub seconds: f64,
}

/// The local record of a pin, for `cairn ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRecord {
    pub cid: String,
    pub name: String,
    pub bytes: u64,
    pub files: usize,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub pinned_at: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A miner that answered a probe.
#[derive(Debug, Clone)]
pub struct LiveMiner {
    pub member: Member,
    pub free: u64,
}

/// The placement candidates among `live`, weighted by free capacity.
pub fn candidates(live: &[LiveMiner]) -> Vec<Candidate> {
    live.iter()
        .map(|l| Candidate {
            id: l.member.node_id,
            weight: capacity_weight(l.free),
        })
        .collect()
}

impl DatasetContext {
    /// Registered miners other than this node.
    pub async fn registered_miners(&self) -> Result<Vec<Member>> {
        Ok(self
            .registry
            .members()
            .await?
            .into_iter()
            .filter(|m| m.role == Role::Miner && m.node_id != self.node_id)
            .collect())
    }

    /// Probes miners concurrently; returns those that answered, in input order.
    pub async fn probe(&self, miners: &[Member]) -> Vec<LiveMiner> {
        let mut set = JoinSet::new();
        for (i, m) in miners.iter().enumerate() {
            if m.addrs.is_empty() && m.relay.is_none() {
                continue;
            }
            let client = Arc::clone(&self.client);
            let addr = m.endpoint_addr();
            set.spawn(async move {
                let r = tokio::time::timeout(PROBE_TIMEOUT, client.info(&addr)).await;
                (i, r.ok().and_then(|r| r.ok()))
            });
        }
        let mut live: Vec<(usize, LiveMiner)> = Vec::new();
        while let Some(Ok((i, info))) = set.join_next().await {
            if let Some(info) = info {
                live.push((
                    i,
                    LiveMiner {
                        member: miners[i].clone(),
                        free: info.free,
                    },
                ));
            }
        }
        live.sort_by_key(|(i, _)| *i);
        live.into_iter().map(|(_, m)| m).collect()
    }

    fn addr_of(&self, members: &HashMap<NodeId, Member>, id: &NodeId) -> EndpointAddr {
        members
            .get(id)
            .map(|m| m.endpoint_addr())
            .unwrap_or_else(|| EndpointAddr::new(*id))
    }
}

/// Default k and m for a network of `miners` miners: 4 + 2 below 12, 10 + 4 from 12.
pub fn default_shards(miners: usize) -> (u16, u16) {
    if miners >= 12 { (10, 4) } else { (4, 2) }
}

/// Checks a pin request's entries: sane paths, sorted, unique.
fn check_files(files: &[FileSpec]) -> Result<()> {
    let mut prev: Option<&str> = None;
    for f in files {
        check_path(&f.path)?;
        if prev.is_some_and(|p| p >= f.path.as_str()) {
            return Err(Error::Other(format!(
                "pin request: {:?} is out of order or repeated (entries must be sorted by path)",
                f.path
            )));
        }
        if f.dir && f.size != 0 {
            return Err(Error::Other(format!(
                "pin request: directory {:?} has a size",
                f.path
            )));
        }
        prev = Some(&f.path);
    }
    Ok(())
}

/// A segment's length, BLAKE3 and shard ids, as the manifest will record them.
type SegmentInfo = (u64, [u8; 32], Vec<ShardId>);

/// A segment cut, hashed and encoded, its shards owned, waiting for upload.
struct EncodedSegment {
    index: usize,
    len: u64,
    hash: [u8; 32],
    shards: Vec<Vec<u8>>,
    ids: Vec<ShardId>,
}

/// Per-file hashing as the packed stream goes by.
struct FileHasher {
    sizes: Vec<u64>,
    current: usize,
    left: u64,
    hasher: blake3::Hasher,
    hashes: Vec<[u8; 32]>,
}

impl FileHasher {
    fn new(files: &[FileSpec]) -> Self {
        let sizes: Vec<u64> = files
            .iter()
            .map(|f| if f.dir { 0 } else { f.size })
            .collect();
        let mut h = FileHasher {
            sizes,
            current: 0,
            left: 0,
            hasher: blake3::Hasher::new(),
            hashes: Vec::with_capacity(files.len()),
        };
        h.left = h.sizes.first().copied().unwrap_or(0);
        h.skip_finished();
        h
    }

    /// Closes files that are complete (empty ones at once).
    fn skip_finished(&mut self) {
        while self.current < self.sizes.len() && self.left == 0 {
            self.hashes.push(*self.hasher.finalize().as_bytes());
            self.hasher = blake3::Hasher::new();
            self.current += 1;
            self.left = self.sizes.get(self.current).copied().unwrap_or(0);
        }
    }

    fn update(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.current >= self.sizes.len() {
                return Err(Error::Other(
                    "more bytes arrived than the files' sizes add up to".into(),
                ));
            }
            let n = (self.left as usize).min(data.len());
            self.hasher.update(&data[..n]);
            self.left -= n as u64;
            data = &data[n..];
            self.skip_finished();
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<[u8; 32]>> {
        if self.current < self.sizes.len() {
            return Err(Error::Other(format!(
                "the stream ended {} bytes short, inside entry {}",
                self.left, self.current
            )));
        }
        Ok(self.hashes)
    }
}

/// The blocking stage: body chunks in, encoded segments out.
fn segment_stage(
    params: Params,
    files: Vec<FileSpec>,
    mut body: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<EncodedSegment>,
) -> Result<Vec<[u8; 32]>> {
    let mut segmenter = Segmenter::new(params.segment_size());
    let mut encoder = Encoder::new(params)?;
    let mut hashes = FileHasher::new(&files);
    let mut emit = |index: u64, bytes: &[u8]| -> Result<()> {
        let hash = *blake3::hash(bytes).as_bytes();
        let e = encoder.encode(bytes)?;
        let shards: Vec<Vec<u8>> = e.shards().map(|s| s.to_vec()).collect();
        let ids = shards
            .iter()
            .map(|s| ShardId(*blake3::hash(s).as_bytes()))
            .collect();
        out.blocking_send(EncodedSegment {
            index: index as usize,
            len: bytes.len() as u64,
            hash,
            shards,
            ids,
        })
        .map_err(|_| Error::Other("upload stage stopped".into()))
    };
    while let Some(chunk) = body.blocking_recv() {
        hashes.update(&chunk)?;
        segmenter.push(&chunk, |s| emit(s.index, s.bytes))?;
    }
    if let Some(s) = segmenter.finish() {
        let (i, b) = (s.index, s.bytes.to_vec());
        emit(i, &b)?;
    }
    hashes.finish()
}

/// Uploads one segment's shards: shard i to its rendezvous miner, falling
/// back along its order, never two shards of a segment on one miner.
async fn upload_segment(
    ctx: DatasetContext,
    seg: EncodedSegment,
    live: Arc<Vec<LiveMiner>>,
    candidates: Arc<Vec<Candidate>>,
    uploads: Arc<Semaphore>,
) -> Result<(usize, Vec<NodeId>)> {
    let orders = place_segment(&seg.hash, seg.shards.len(), &candidates);
    let used: Arc<std::sync::Mutex<Vec<bool>>> =
        Arc::new(std::sync::Mutex::new(vec![false; live.len()]));
    // First choices are distinct: claim them up front.
    for o in &orders {
        used.lock().expect("lock")[o[0]] = true;
    }
    let shards = Arc::new(seg.shards);
    let mut set = JoinSet::new();
    for (i, order) in orders.into_iter().enumerate() {
        let (ctx, live, used, shards, uploads) = (
            ctx.clone(),
            Arc::clone(&live),
            Arc::clone(&used),
            Arc::clone(&shards),
            Arc::clone(&uploads),
        );
        let id = seg.ids[i];
        set.spawn(async move {
            let _permit = uploads.acquire_owned().await.expect("semaphore open");
            let mut errors = Vec::new();
            for (attempt, &c) in order.iter().enumerate() {
                if attempt > 0 {
                    let mut u = used.lock().expect("lock");
                    if u[c] {
                        continue;
                    }
                    u[c] = true;
                }
                let m = &live[c].member;
                match ctx.client.put_shard(&m.endpoint_addr(), id, &shards[i], None).await {
                    Ok(()) => return Ok((i, m.node_id)),
                    Err(e) => {
                        tracing::warn!(miner = %m.node_id.fmt_short(), shard = %id, error = %e, "upload failed; trying the next miner");
                        errors.push(format!("{}: {e}", m.node_id.fmt_short()));
                        if errors.len() >= 4 {
                            break;
                        }
                    }
                }
            }
            Err(Error::Other(format!(
                "shard {i} of segment {}: no miner took it ({})",
                seg.index,
                errors.join("; ")
            )))
        });
    }
    let mut holders = vec![None; shards.len()];
    while let Some(r) = set.join_next().await {
        let (i, node) = r.map_err(|e| Error::Other(e.to_string()))??;
        holders[i] = Some(node);
    }
    Ok((
        seg.index,
        holders
            .into_iter()
            .map(|h| h.expect("every shard placed"))
            .collect(),
    ))
}

/// Pins a dataset whose packed bytes arrive on `body`.
pub async fn pin(
    ctx: &DatasetContext,
    req: PinRequest,
    body: mpsc::Receiver<Bytes>,
) -> Result<PinOutcome> {
    let started = Instant::now();
    check_files(&req.files)?;
    let registered = ctx.registered_miners().await?;
    let (dk, dm) = default_shards(registered.len());
    let k = req.data_shards.unwrap_or(dk);
    let m = req.parity_shards.unwrap_or(dm);
    let total = usize::from(k) + usize::from(m);
    if registered.len() < total {
        let advice = if registered.len() >= 2 {
            format!(
                "add miners, or pin with fewer shards (e.g. --data-shards {} --parity-shards 1)",
                registered.len() - 1
            )
        } else {
            "add miners: a pin needs at least 2 (k = 1 data + m = 1 parity shard)".to_string()
        };
        return Err(Error::Other(format!(
            "{} miners are registered but k + m = {k} + {m} = {total} shards each need a different miner; {advice}",
            registered.len(),
        )));
    }
    let params = Params::with_segment_near(
        usize::from(k),
        usize::from(m),
        req.segment_size
            .unwrap_or(Params::DEFAULT_SEGMENT_SIZE as u64) as usize,
    )?;
    let live = ctx.probe(&registered).await;
    if live.len() < total {
        let dead: Vec<String> = registered
            .iter()
            .filter(|r| !live.iter().any(|l| l.member.node_id == r.node_id))
            .map(|r| r.node_id.fmt_short().to_string())
            .collect();
        return Err(Error::Other(format!(
            "only {} of {} registered miners answered ({} needed for k + m = {total}); unreachable: {}",
            live.len(),
            registered.len(),
            total,
            dead.join(", ")
        )));
    }
    let candidates = candidates(&live);
    let live = Arc::new(live);
    let candidates = Arc::new(candidates);

    let (seg_tx, mut seg_rx) = mpsc::channel::<EncodedSegment>(1);
    let files = req.files.clone();
    let stage = tokio::task::spawn_blocking(move || segment_stage(params, files, body, seg_tx));

    let uploads = Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut segments: Vec<Option<SegmentInfo>> = Vec::new();
    let mut holders: Vec<Option<Vec<NodeId>>> = Vec::new();
    let mut failure: Option<Error> = None;
    while let Some(seg) = seg_rx.recv().await {
        if segments.len() <= seg.index {
            segments.resize(seg.index + 1, None);
            holders.resize(seg.index + 1, None);
        }
        segments[seg.index] = Some((seg.len, seg.hash, seg.ids.clone()));
        in_flight.spawn(upload_segment(
            ctx.clone(),
            seg,
            Arc::clone(&live),
            Arc::clone(&candidates),
            Arc::clone(&uploads),
        ));
        while in_flight.len() >= SEGMENTS_IN_FLIGHT {
            if let Some(r) = in_flight.join_next().await {
                match r.map_err(|e| Error::Other(e.to_string())).and_then(|r| r) {
                    Ok((i, h)) => holders[i] = Some(h),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
        }
        if failure.is_some() {
            break;
        }
    }
    drop(seg_rx);
    while let Some(r) = in_flight.join_next().await {
        match r.map_err(|e| Error::Other(e.to_string())).and_then(|r| r) {
            Ok((i, h)) => holders[i] = Some(h),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    let stage_result = stage.await.map_err(|e| Error::Other(e.to_string()))?;
    let file_hashes = match (failure, stage_result) {
        (Some(e), _) | (None, Err(e)) => {
            cleanup_uploads(ctx, &segments, &holders, &live).await;
            return Err(e);
        }
        (None, Ok(h)) => h,
    };

    let mut offset = 0u64;
    let entries: Vec<Entry> = req
        .files
        .iter()
        .zip(file_hashes)
        .map(|(f, hash)| {
            let e = Entry {
                path: f.path.clone(),
                kind: if f.dir {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                },
                size: if f.dir { 0 } else { f.size },
                offset,
                blake3: if f.dir { [0; 32] } else { hash },
                executable: f.executable,
            };
            offset += e.size;
            e
        })
        .collect();
    let manifest = Manifest {
        data_shards: k,
        parity_shards: m,
        segment_size: params.segment_size() as u64,
        total_len: offset,
        single_file: req.single_file,
        entries,
        segments: segments
            .into_iter()
            .map(|s| {
                let (len, blake3, shards) = s.expect("every segment recorded");
                SegmentRecord {
                    len,
                    blake3,
                    shards,
                }
            })
            .collect(),
    };
    let cid = manifest.cid();
    let flat: Vec<Option<NodeId>> = holders
        .into_iter()
        .flat_map(|h| h.expect("every segment placed").into_iter().map(Some))
        .collect();
    let placement = Placement::signed(cid, now_millis(), ctx.node_id, &flat, &ctx.key);
    let copies = publish_manifest(ctx, &manifest, &placement, &live, &candidates).await?;
    let validators = notify_validators(ctx, cid).await;
    let record = PinRecord {
        cid: cid.to_string(),
        name: req.name.clone(),
        bytes: manifest.total_len,
        files: manifest.entries.len(),
        data_shards: k,
        parity_shards: m,
        pinned_at: now_secs(),
    };
    ctx.store.app_put(
        &pin_key(&cid),
        &serde_json::to_vec(&record).expect("serializable"),
    )?;
    Ok(PinOutcome {
        cid: cid.to_string(),
        bytes: manifest.total_len,
        files: manifest.entries.len(),
        segments: manifest.segments.len(),
        data_shards: k,
        parity_shards: m,
        shards_stored: flat.len(),
        manifest_copies: copies,
        validators_notified: validators,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Asks every registered validator to audit `cid` (best effort). Returns how many accepted.
pub async fn notify_validators(ctx: &DatasetContext, cid: Cid) -> usize {
    let Ok(members) = ctx.registry.members().await else {
        return 0;
    };
    let mut set = JoinSet::new();
    for v in members
        .into_iter()
        .filter(|m| m.is_validator() && m.node_id != ctx.node_id)
    {
        let client = Arc::clone(&ctx.client);
        set.spawn(async move {
            let addr = v.endpoint_addr();
            matches!(
                tokio::time::timeout(PROBE_TIMEOUT, client.audit(&addr, cid.0)).await,
                Ok(Ok(()))
            )
        });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        n += usize::from(r.unwrap_or(false));
    }
    n
}

fn pin_key(cid: &Cid) -> Vec<u8> {
    let mut k = b"pin/".to_vec();
    k.extend_from_slice(&cid.0);
    k
}

/// Stores the manifest and its placement locally and on the manifest holders
/// (the best m + 1 miners for the CID). Returns the number of remote copies.
async fn publish_manifest(
    ctx: &DatasetContext,
    manifest: &Manifest,
    placement: &Placement,
    live: &[LiveMiner],
    candidates: &[Candidate],
) -> Result<usize> {
    let cid = placement.cid;
    let bytes = manifest.encode();
    ctx.store.put_manifest(&cid.0, &bytes, &ctx.node_id)?;
    ctx.store.put_placement(
        &cid.0,
        placement.version,
        &placement.owner,
        &placement.encode(),
    )?;
    let copies = usize::from(manifest.parity_shards) + 1;
    let mut stored = 0;
    let mut errors = Vec::new();
    for i in manifest_holders(&cid.0, copies, candidates) {
        let addr = live[i].member.endpoint_addr();
        let r = async {
            ctx.client.put_manifest(&addr, cid.0, &bytes).await?;
            ctx.client.put_placement(&addr, placement).await
        }
        .await;
        match r {
            Ok(()) => stored += 1,
            Err(e) => errors.push(e.to_string()),
        }
    }
    if stored == 0 {
        return Err(Error::Other(format!(
            "the shards are stored but no miner took the manifest: {}",
            errors.join("; ")
        )));
    }
    Ok(stored)
}

/// Best effort: removes the shards of a pin that failed half-way.
async fn cleanup_uploads(
    ctx: &DatasetContext,
    segments: &[Option<SegmentInfo>],
    holders: &[Option<Vec<NodeId>>],
    live: &[LiveMiner],
) {
    let members: HashMap<NodeId, Member> = live
        .iter()
        .map(|l| (l.member.node_id, l.member.clone()))
        .collect();
    for (s, h) in segments.iter().zip(holders) {
        if let (Some((_, _, ids)), Some(h)) = (s, h) {
            for (id, node) in ids.iter().zip(h) {
                let addr = ctx.addr_of(&members, node);
                let _ = ctx.client.delete_shard(&addr, *id, None).await;
            }
        }
    }
}

/// A dataset opened for reading.
#[derive(Clone)]
pub struct Dataset {
    pub cid: Cid,
    pub manifest: Arc<Manifest>,
    pub placement: Arc<Placement>,
    members: Arc<HashMap<NodeId, Member>>,
}

impl Dataset {
    pub fn addr(&self, node: &NodeId) -> EndpointAddr {
        self.members
            .get(node)
            .map(|m| m.endpoint_addr())
            .unwrap_or_else(|| EndpointAddr::new(*node))
    }
}

/// Finds a dataset's manifest and newest placement. Opened datasets are
/// cached for [`DATASET_CACHE_TTL`], so the files of one `get` share one look-up.
pub async fn open_dataset(ctx: &DatasetContext, cid: Cid) -> Result<Dataset> {
    if let Some((at, ds)) = ctx.cache.lock().expect("lock").get(&cid)
        && at.elapsed() < DATASET_CACHE_TTL
    {
        return Ok(ds.clone());
    }
    let ds = open_dataset_uncached(ctx, cid).await?;
    let mut cache = ctx.cache.lock().expect("lock");
    cache.retain(|_, (at, _)| at.elapsed() < DATASET_CACHE_TTL);
    cache.insert(cid, (Instant::now(), ds.clone()));
    Ok(ds)
}

/// Opens a dataset bypassing (and refreshing) the cache: for status and
/// unpin, which must see the current members and placement.
pub async fn open_dataset_fresh(ctx: &DatasetContext, cid: Cid) -> Result<Dataset> {
    forget_dataset(ctx, &cid);
    open_dataset(ctx, cid).await
}

/// Forgets a cached dataset (after unpin or repair).
pub fn forget_dataset(ctx: &DatasetContext, cid: &Cid) {
    ctx.cache.lock().expect("lock").remove(cid);
}

/// The local store first; then the best miners for the CID, asked at once
/// (recently failed ones skipped); then, if nothing turned up, every miner.
async fn open_dataset_uncached(ctx: &DatasetContext, cid: Cid) -> Result<Dataset> {
    let members: HashMap<NodeId, Member> = ctx
        .registry
        .members()
        .await?
        .into_iter()
        .map(|m| (m.node_id, m))
        .collect();
    let mut manifest = match ctx.store.get_manifest(&cid.0)? {
        Some((_, bytes)) => Some(Manifest::decode(&bytes)?),
        None => None,
    };
    let mut placement = match ctx.store.get_placement(&cid.0)? {
        Some(bytes) => Some(Placement::decode(&bytes)?),
        None => None,
    };
    let miners: Vec<&Member> = members
        .values()
        .filter(|m| m.role == Role::Miner && m.node_id != ctx.node_id)
        .filter(|m| !m.addrs.is_empty() || m.relay.is_some())
        .collect();
    let candidates: Vec<Candidate> = miners
        .iter()
        .map(|m| Candidate {
            id: m.node_id,
            weight: 1.0,
        })
        .collect();
    let order: Vec<usize> = crate::placement::rank(&cid.0, u32::MAX, &candidates)
        .into_iter()
        .filter(|&i| !ctx.client.is_suspect(&miners[i].node_id))
        .collect();
    // The manifest holders are the first few in this order; ask them at once,
    // then everyone else only if they had nothing.
    let (first, rest) = order.split_at(order.len().min(4));
    for batch in [first, rest] {
        if manifest.is_some() && placement.is_some() && batch.as_ptr() == rest.as_ptr() {
            break;
        }
        let mut set = JoinSet::new();
        for &i in batch {
            let (client, addr) = (Arc::clone(&ctx.client), miners[i].endpoint_addr());
            let want_manifest = manifest.is_none();
            set.spawn(async move {
                let got = tokio::time::timeout(PROBE_TIMEOUT, async {
                    let m = if want_manifest {
                        client.get_manifest(&addr, cid.0).await.ok()
                    } else {
                        None
                    };
                    let p = client.get_placement(&addr, cid).await.ok();
                    (m, p)
                })
                .await;
                (addr.id, got)
            });
        }
        while let Some(Ok((node, got))) = set.join_next().await {
            let Ok((m, p)) = got else {
                ctx.client.mark_failed(&node).await;
                continue;
            };
            if manifest.is_none()
                && let Some(bytes) = m
                && let Ok(decoded) = Manifest::decode(&bytes)
                && decoded.cid() == cid
            {
                manifest = Some(decoded);
            }
            if let Some(p) = p
                && placement.as_ref().is_none_or(|old| p.version > old.version)
            {
                placement = Some(p);
            }
        }
    }
    let manifest = manifest.ok_or_else(|| {
        Error::Other(format!(
            "unknown CID {cid}: no manifest here nor on any of the {} miners asked; check the CID, or whether the network that pinned it is reachable",
            order.len()
        ))
    })?;
    let placement = placement
        .ok_or_else(|| Error::Other(format!("{cid}: manifest found but no placement record")))?;
    if placement.holders.len() != manifest.segments.len() * manifest.total_shards() {
        return Err(Error::Other(format!(
            "{cid}: placement does not match the manifest"
        )));
    }
    Ok(Dataset {
        cid,
        manifest: Arc::new(manifest),
        placement: Arc::new(placement),
        members: Arc::new(members),
    })
}

/// Fetches and decodes segment `s`: any k shards, data shards first, hedged.
pub async fn fetch_segment(
    ctx: &DatasetContext,
    ds: &Dataset,
    s: usize,
    decoder: &mut Decoder,
) -> Result<Vec<u8>> {
    let m = &ds.manifest;
    let seg = m
        .segments
        .get(s)
        .ok_or_else(|| Error::Other(format!("segment {s} out of range")))?;
    let k = usize::from(m.data_shards);
    let total = m.total_shards();
    let shard_len = seg.len.div_ceil(k as u64);
    // Data shards first (no decoding needed), then parity; miners that
    // failed recently last.
    let mut order: Vec<usize> = (0..total)
        .filter(|&i| ds.placement.holder(s, i, total).is_some())
        .collect();
    order.sort_by_key(|&i| {
        let node = ds.placement.holder(s, i, total).expect("filtered");
        ctx.client.is_suspect(&node)
    });
    let mut queue: std::collections::VecDeque<usize> = order.into();
    let mut set: JoinSet<(usize, Result<Vec<u8>>)> = JoinSet::new();
    let start = |i: usize, set: &mut JoinSet<(usize, Result<Vec<u8>>)>| {
        let node = ds.placement.holder(s, i, total).expect("filtered");
        let addr = ds.addr(&node);
        let client = Arc::clone(&ctx.client);
        let id = seg.shards[i];
        set.spawn(async move {
            let r = tokio::time::timeout(
                FETCH_TIMEOUT,
                client.get_shard(&addr, id, 0, u64::MAX, Some(shard_len)),
            )
            .await
            .unwrap_or_else(|_| Err(Error::Other("timed out".into())))
            .map(|r| r.bytes);
            (i, r)
        });
    };
    let mut started: HashMap<usize, Instant> = HashMap::new();
    for _ in 0..k {
        if let Some(i) = queue.pop_front() {
            started.insert(i, Instant::now());
            start(i, &mut set);
        }
    }
    let mut got: Vec<(usize, Vec<u8>)> = Vec::with_capacity(k);
    let mut errors: Vec<String> = Vec::new();
    while got.len() < k {
        if set.is_empty() {
            break;
        }
        match tokio::time::timeout(HEDGE_AFTER, set.join_next()).await {
            Ok(Some(Ok((i, Ok(bytes))))) => {
                if let Some(n) = ds.placement.holder(s, i, total) {
                    ctx.client.mark_ok(&n);
                }
                got.push((i, bytes))
            }
            Ok(Some(Ok((i, Err(e))))) => {
                let holder = ds.placement.holder(s, i, total);
                if let Some(n) = holder {
                    ctx.client.mark_failed(&n).await;
                }
                let holder = holder.map(|n| n.fmt_short().to_string());
                errors.push(format!("shard {i} on {}: {e}", holder.unwrap_or_default()));
                started.remove(&i);
                if let Some(next) = queue.pop_front() {
                    started.insert(next, Instant::now());
                    start(next, &mut set);
                }
            }
            Ok(Some(Err(e))) => errors.push(e.to_string()),
            Ok(None) => break,
            Err(_) => {
                // Slow: ask one more miner, keep waiting for all.
                if let Some(next) = queue.pop_front() {
                    started.insert(next, Instant::now());
                    start(next, &mut set);
                }
            }
        }
        for (i, _) in &got {
            started.remove(i);
        }
    }
    set.abort_all();
    // Whoever is still pending after the hedge delay is slow or gone: try it last next time.
    for (i, t) in started {
        if t.elapsed() >= HEDGE_AFTER
            && let Some(n) = ds.placement.holder(s, i, total)
        {
            ctx.client.mark_failed(&n).await;
        }
    }
    if got.len() < k {
        return Err(Error::Other(format!(
            "segment {s}: only {} of {total} shards could be fetched and {k} are needed ({})",
            got.len(),
            errors.join("; ")
        )));
    }
    let given: Vec<(usize, &[u8])> = got.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    let bytes = decoder.decode(seg.len as usize, &given)?.to_vec();
    if *blake3::hash(&bytes).as_bytes() != seg.blake3 {
        return Err(Error::Other(format!(
            "segment {s} decoded to bytes that do not match the manifest"
        )));
    }
    Ok(bytes)
}

/// Streams bytes `[start, end)` of the packed stream to `tx`, a segment at a
/// time, fetching the next segment while the current one is sent.
pub async fn stream_range(
    ctx: DatasetContext,
    ds: Dataset,
    start: u64,
    end: u64,
    tx: mpsc::Sender<Result<Bytes>>,
) {
    let m = Arc::clone(&ds.manifest);
    if start >= end {
        return;
    }
    let params = match m.params() {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let seg_size = m.segment_size;
    let first = (start / seg_size) as usize;
    let last = ((end - 1) / seg_size) as usize;
    let fetch = |s: usize| {
        let (ctx, ds) = (ctx.clone(), ds.clone());
        tokio::spawn(async move {
            let mut decoder = Decoder::new(params)?;
            fetch_segment(&ctx, &ds, s, &mut decoder).await
        })
    };
    let mut next = Some(fetch(first));
    for s in first..=last {
        let current = next.take().expect("prefetched");
        if s < last {
            next = Some(fetch(s + 1));
        }
        let bytes = match current.await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Error::Other(e.to_string()))).await;
                return;
            }
        };
        let seg_start = s as u64 * seg_size;
        let from = start.saturating_sub(seg_start) as usize;
        let to = ((end - seg_start) as usize).min(bytes.len());
        let bytes = Bytes::from(bytes);
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(1 << 20);
            if tx.send(Ok(bytes.slice(pos..pos + n))).await.is_err() {
                return; // reader went away
            }
            pos += n;
        }
    }
}

/// Health of a dataset, per segment and per miner.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetStatus {
    pub cid: String,
    pub bytes: u64,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub segments: Vec<SegmentStatus>,
    pub miners: Vec<MinerStatus>,
    /// Segments with all k + m shards.
    pub healthy: usize,
    /// Segments below k + m but still readable (>= k).
    pub degraded: usize,
    /// Segments with fewer than k shards.
    pub lost: usize,
    pub placement_version: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentStatus {
    pub index: usize,
    pub alive: usize,
    pub total: usize,
    /// Holder of each shard, and whether it answered that it holds it.
    pub shards: Vec<(String, bool)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MinerStatus {
    pub node_id: String,
    pub reachable: bool,
    pub shards_expected: usize,
    pub shards_held: usize,
}

/// Asks every holder which of its shards it still has.
pub async fn status(ctx: &DatasetContext, ds: &Dataset) -> Result<DatasetStatus> {
    let m = &ds.manifest;
    let total = m.total_shards();
    let mut by_miner: HashMap<NodeId, Vec<(usize, usize)>> = HashMap::new();
    for s in 0..m.segments.len() {
        for i in 0..total {
            if let Some(n) = ds.placement.holder(s, i, total) {
                by_miner.entry(n).or_default().push((s, i));
            }
        }
    }
    let mut set = JoinSet::new();
    for (node, places) in by_miner.clone() {
        let ids: Vec<ShardId> = places
            .iter()
            .map(|&(s, i)| m.segments[s].shards[i])
            .collect();
        let client = Arc::clone(&ctx.client);
        let addr = ds.addr(&node);
        set.spawn(async move {
            let r = tokio::time::timeout(PROBE_TIMEOUT * 2, client.has(&addr, &ids)).await;
            (node, r.ok().and_then(|r| r.ok()))
        });
    }
    let mut held: HashMap<(usize, usize), bool> = HashMap::new();
    let mut miners = Vec::new();
    while let Some(Ok((node, bits))) = set.join_next().await {
        let places = &by_miner[&node];
        let reachable = bits.is_some();
        let bits = bits.unwrap_or_else(|| vec![false; places.len()]);
        for (p, b) in places.iter().zip(&bits) {
            held.insert(*p, *b);
        }
        miners.push(MinerStatus {
            node_id: node.to_string(),
            reachable,
            shards_expected: places.len(),
            shards_held: bits.iter().filter(|b| **b).count(),
        });
    }
    miners.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let k = usize::from(m.data_shards);
    let mut segments = Vec::with_capacity(m.segments.len());
    let (mut healthy, mut degraded, mut lost) = (0, 0, 0);
    for s in 0..m.segments.len() {
        let shards: Vec<(String, bool)> = (0..total)
            .map(|i| match ds.placement.holder(s, i, total) {
                Some(n) => (
                    n.fmt_short().to_string(),
                    held.get(&(s, i)).copied().unwrap_or(false),
                ),
                None => ("-".into(), false),
            })
            .collect();
        let alive = shards.iter().filter(|(_, b)| *b).count();
        if alive == total {
            healthy += 1;
        } else if alive >= k {
            degraded += 1;
        } else {
            lost += 1;
        }
        segments.push(SegmentStatus {
            index: s,
            alive,
            total,
            shards,
        });
    }
    Ok(DatasetStatus {
        cid: ds.cid.to_string(),
        bytes: m.total_len,
        data_shards: m.data_shards,
        parity_shards: m.parity_shards,
        segments,
        miners,
        healthy,
        degraded,
        lost,
        placement_version: ds.placement.version,
    })
}

/// What an unpin did.
#[derive(Debug, Clone, Serialize)]
pub struct UnpinOutcome {
    pub cid: String,
    pub shards_deleted: usize,
    /// Shards on miners that could not be reached; run unpin again later.
    pub shards_pending: usize,
    pub manifest_copies_deleted: usize,
}

/// Deletes a dataset's shards, manifest copies and local record. Idempotent.
pub async fn unpin(ctx: &DatasetContext, cid: Cid) -> Result<UnpinOutcome> {
    forget_dataset(ctx, &cid);
    let ds = match open_dataset_uncached(ctx, cid).await {
        Ok(ds) => ds,
        Err(e) => {
            // Already gone everywhere: nothing left to do but the local record.
            if ctx.store.app_get(&pin_key(&cid))?.is_some()
                || ctx.store.get_manifest(&cid.0)?.is_some()
            {
                return Err(e);
            }
            return Ok(UnpinOutcome {
                cid: cid.to_string(),
                shards_deleted: 0,
                shards_pending: 0,
                manifest_copies_deleted: 0,
            });
        }
    };
    let m = &ds.manifest;
    let total = m.total_shards();
    let mut set = JoinSet::new();
    let sem = Arc::new(Semaphore::new(16));
    for s in 0..m.segments.len() {
        for i in 0..total {
            if let Some(node) = ds.placement.holder(s, i, total) {
                let (client, addr, id, sem) = (
                    Arc::clone(&ctx.client),
                    ds.addr(&node),
                    m.segments[s].shards[i],
                    Arc::clone(&sem),
                );
                set.spawn(async move {
                    let _p = sem.acquire_owned().await.expect("open");
                    tokio::time::timeout(PROBE_TIMEOUT * 2, client.delete_shard(&addr, id, None))
                        .await
                        .map(|r| r.is_ok())
                        .unwrap_or(false)
                });
            }
        }
    }
    let (mut deleted, mut pending) = (0, 0);
    while let Some(r) = set.join_next().await {
        if r.unwrap_or(false) {
            deleted += 1;
        } else {
            pending += 1;
        }
    }
    let mut copies = 0;
    for member in ds.members.values().filter(|m| m.role == Role::Miner) {
        let addr = member.endpoint_addr();
        if let Ok(Ok(())) =
            tokio::time::timeout(PROBE_TIMEOUT, ctx.client.delete_manifest(&addr, cid.0)).await
        {
            copies += 1;
        }
    }
    if pending == 0 {
        ctx.store.delete_manifest(&cid.0, &ctx.node_id, true)?;
        ctx.store.delete_placement(&cid.0)?;
        ctx.store.app_delete(&pin_key(&cid))?;
    }
    Ok(UnpinOutcome {
        cid: cid.to_string(),
        shards_deleted: deleted,
        shards_pending: pending,
        manifest_copies_deleted: copies,
    })
}

/// This node's pins, newest first.
pub fn list_pins(store: &Store) -> Result<Vec<PinRecord>> {
    let mut out: Vec<PinRecord> = store
        .app_scan(b"pin/")?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.pinned_at));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, size: u64) -> FileSpec {
        FileSpec {
            path: path.into(),
            size,
            executable: false,
            dir: false,
        }
    }

    #[test]
    fn file_hasher_splits_the_stream_by_size() {
        let files = vec![spec("a", 3), spec("b", 0), spec("c", 5)];
        let mut h = FileHasher::new(&files);
        h.update(b"abcde").unwrap();
        h.update(b"fgh").unwrap();
        let hashes = h.finish().unwrap();
        assert_eq!(hashes[0], *blake3::hash(b"abc").as_bytes());
        assert_eq!(hashes[1], *blake3::hash(b"").as_bytes());
        assert_eq!(hashes[2], *blake3::hash(b"defgh").as_bytes());
        let mut short = FileHasher::new(&files);
        short.update(b"abc").unwrap();
        assert!(short.finish().is_err());
        let mut long = FileHasher::new(&files);
        assert!(long.update(b"abcdefghX").is_err());
    }

    #[test]
    fn pin_requests_must_be_sorted_and_sane() {
        assert!(check_files(&[spec("a", 1), spec("b", 1)]).is_ok());
        assert!(check_files(&[spec("b", 1), spec("a", 1)]).is_err());
        assert!(check_files(&[spec("a", 1), spec("a", 1)]).is_err());
        assert!(check_files(&[spec("../x", 1)]).is_err());
    }
}
