//! Pinning: a stream of packed file bytes in, segments coded into shards
//! and placed on miners, a manifest and a signed placement out.
//!
//! A pipeline of bounded depth. A blocking stage fills a segment buffer from
//! the stream, hashes the files as they go by, encodes the segment in place
//! (the data shards stay where they are; only parity is written) and hashes
//! each shard into its id; an async stage uploads each shard to the miner
//! the placement rule picks for it, falling back along the rule's order when
//! one fails, never two shards of a segment on one miner.
//!
//! Memory: at most [`SEGMENTS_IN_FLIGHT`] segments are in the pipeline
//! (their k + m shards, O(segment x (k+m)/k) each): the stage takes one of
//! that many tokens before it reads a segment, and a segment gives its
//! token back when the last upload of it is done. Never O(dataset).
//!
//! Each shard is a buffer of its own, read into (data) or encoded into
//! (parity) once and handed to its QUIC stream as it is, not copied into
//! the stream's send buffer. The QUIC stack keeps a stream's
//! unacknowledged bytes until the connection's state is dropped (a dead
//! miner's, until its connection is closed and let go): what it keeps is
//! that one shard, the same bytes a copy would be, never a segment, and
//! the pin's tokens do not wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use cairn_api::{FileSpec, PinOutcome, PinRecord, PinRequest};
use cairn_erasure::{Encoder, Params};
use cairn_proof::ShardId;
use cairn_proto::placement::{self, Candidate, DomainRule};
use cairn_proto::records::check_path;
use cairn_proto::{Entry, EntryKind, Manifest, NodeId, Placement, SegmentRecord};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{
    Datasets, LiveMiner, PINS, PROBE_RETRY_TIMEOUT, PROBE_TIMEOUT, Probed, candidates,
    default_shards,
};
use crate::error::{Error, Result};
use crate::registry::Member;

/// Segment buffers of one pin: one being filled and encoded while the others'
/// shards upload.
pub const SEGMENTS_IN_FLIGHT: usize = 3;
/// Shard uploads at the same time, over all segments.
const UPLOADS_IN_FLIGHT: usize = 12;
/// Miners tried for one shard before the pin gives up on it.
const TRIES_PER_SHARD: usize = 4;

/// A segment cut, hashed and encoded, waiting for upload. Its token goes
/// back to the stage when the last upload of it is done.
struct EncodedSegment {
    index: usize,
    len: u64,
    hash: [u8; 32],
    ids: Vec<ShardId>,
    /// Data shards, then parity; each a buffer of its own.
    shards: Vec<Bytes>,
    tokens: std::sync::mpsc::SyncSender<()>,
}

impl Drop for EncodedSegment {
    fn drop(&mut self) {
        // There is room for every token; a closed channel means the stage ended.
        let _ = self.tokens.try_send(());
    }
}

/// A segment being read: its data shards so far, each filled to the
/// full-segment shard length before the next starts.
#[derive(Default)]
struct SegmentFill {
    shards: Vec<Vec<u8>>,
    len: usize,
}

/// A segment's length, BLAKE3 and shard ids, as the manifest will record them.
type SegmentInfo = (u64, [u8; 32], Vec<ShardId>);

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
                return Err(Error::BadRequest(
                    "more bytes arrived than the files' sizes add up to".into(),
                ));
            }
            let n = self.left.min(data.len() as u64) as usize;
            self.hasher.update(&data[..n]);
            self.left -= n as u64;
            data = &data[n..];
            self.skip_finished();
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<[u8; 32]>> {
        if self.current < self.sizes.len() {
            return Err(Error::BadRequest(format!(
                "the stream ended {} bytes short, inside entry {}",
                self.left, self.current
            )));
        }
        Ok(self.hashes)
    }
}

/// Checks a pin request's entries: sane paths, sorted, unique.
fn check_files(files: &[FileSpec]) -> Result<()> {
    let mut prev: Option<&str> = None;
    for f in files {
        check_path(&f.path)?;
        if prev.is_some_and(|p| p >= f.path.as_str()) {
            return Err(Error::BadRequest(format!(
                "pin request: {:?} is out of order or repeated (entries must be sorted by path)",
                f.path
            )));
        }
        if f.dir && f.size != 0 {
            return Err(Error::BadRequest(format!(
                "pin request: directory {:?} has a size",
                f.path
            )));
        }
        prev = Some(&f.path);
    }
    Ok(())
}

/// The blocking stage: body chunks in, encoded segments out, each under a
/// token taken from the [`SEGMENTS_IN_FLIGHT`] there are.
fn segment_stage(
    params: Params,
    files: Vec<FileSpec>,
    mut body: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<EncodedSegment>,
) -> Result<Vec<[u8; 32]>> {
    let seg_size = params.segment_size();
    let k = params.data_shards();
    // A whole segment's shard length (segment sizes are multiples of k).
    let full = seg_size / k;
    let (tokens_tx, tokens) = std::sync::mpsc::sync_channel::<()>(SEGMENTS_IN_FLIGHT);
    for _ in 0..SEGMENTS_IN_FLIGHT {
        tokens_tx
            .try_send(())
            .expect("there is room for every token");
    }
    let mut encoder = Encoder::new(params)?;
    let mut hashes = FileHasher::new(&files);
    let mut index = 0usize;
    let mut current: Option<SegmentFill> = None;
    let mut emit = |fill: SegmentFill, index: usize| -> Result<()> {
        let len = fill.len;
        let sl = params.shard_len(len);
        let mut hasher = blake3::Hasher::new();
        let data: Vec<Vec<u8>> = if len == seg_size {
            for shard in &fill.shards {
                hasher.update(shard);
            }
            fill.shards
        } else {
            // The short last segment: cut again into k shards of its own
            // (shorter) length, zero-padded (one copy, once per pin).
            let bytes = fill.shards.concat();
            hasher.update(&bytes);
            (0..k)
                .map(|i| {
                    let mut shard = Vec::with_capacity(sl);
                    shard.extend_from_slice(&bytes[(i * sl).min(len)..((i + 1) * sl).min(len)]);
                    shard.resize(sl, 0);
                    shard
                })
                .collect()
        };
        let hash = *hasher.finalize().as_bytes();
        let views: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let parity = encoder.encode_shards(len, &views)?;
        let shards: Vec<Bytes> = data.into_iter().chain(parity).map(Bytes::from).collect();
        let ids = shards
            .iter()
            .map(|s| ShardId(*blake3::hash(s).as_bytes()))
            .collect();
        out.blocking_send(EncodedSegment {
            index,
            len: len as u64,
            hash,
            ids,
            shards,
            tokens: tokens_tx.clone(),
        })
        .map_err(|_| Error::Internal("the upload stage stopped".into()))
    };
    while let Some(chunk) = body.blocking_recv() {
        hashes.update(&chunk)?;
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let fill = match current.as_mut() {
                Some(f) => f,
                None => {
                    // Waits until an upload gives a token back.
                    tokens
                        .recv()
                        .map_err(|_| Error::Internal("the segment tokens are gone".into()))?;
                    current.insert(SegmentFill::default())
                }
            };
            let i = fill.len / full;
            if fill.shards.len() == i {
                fill.shards.push(Vec::with_capacity(full));
            }
            let shard = &mut fill.shards[i];
            let n = (full - shard.len()).min(rest.len());
            shard.extend_from_slice(&rest[..n]);
            fill.len += n;
            rest = &rest[n..];
            if fill.len == seg_size {
                emit(current.take().expect("filled"), index)?;
                index += 1;
            }
        }
    }
    if let Some(fill) = current.take()
        && fill.len > 0
    {
        emit(fill, index)?;
    }
    hashes.finish()
}

/// Records an upload's outcome: the holders, or the first failure.
fn settle(
    r: std::result::Result<Result<(usize, Vec<NodeId>)>, tokio::task::JoinError>,
    holders: &mut [Option<Vec<NodeId>>],
    failure: &mut Option<Error>,
) {
    match r.map_err(Error::task).and_then(|r| r) {
        Ok((i, h)) => holders[i] = Some(h),
        Err(e) => {
            failure.get_or_insert(e);
        }
    }
}

/// Uploads one segment's shards: shard i to its miner by the rule, falling
/// back along its order, never two shards of a segment on one miner.
async fn upload_segment(
    ds: Arc<Datasets>,
    seg: EncodedSegment,
    live: Arc<Vec<LiveMiner>>,
    candidates: Arc<Vec<Candidate>>,
    uploads: Arc<Semaphore>,
) -> Result<(usize, Vec<NodeId>)> {
    let total = seg.ids.len();
    // First choices are in distinct failure domains, claimed up front; a
    // fall-back claims its domain before it is tried and gives it back if
    // the miner does not take the shard.
    let (orders, taken) = placement::segment_orders(&seg.hash, total, &candidates);
    let used = Arc::new(std::sync::Mutex::new(taken));
    let seg = Arc::new(seg);
    let mut set = JoinSet::new();
    for (i, order) in orders.into_iter().enumerate() {
        let (ds, live, used, seg, uploads, candidates) = (
            Arc::clone(&ds),
            Arc::clone(&live),
            Arc::clone(&used),
            Arc::clone(&seg),
            Arc::clone(&uploads),
            Arc::clone(&candidates),
        );
        set.spawn(async move {
            let _permit = uploads
                .acquire_owned()
                .await
                .map_err(|_| Error::Internal("upload slots closed".into()))?;
            let id = seg.ids[i];
            let mut errors = Vec::new();
            // Miners that failed lately are tried last: a silent one would
            // cost every shard it is first choice for a timeout. A first
            // choice moved back gives up the domain claimed for it.
            // One look at each miner's health: it may change meanwhile.
            let mut order: Vec<(bool, usize)> = order
                .into_iter()
                .map(|c| (ds.client.is_suspect(&live[c].member.node_id), c))
                .collect();
            let first_claimed = !(order.len() > 1 && order[0].0);
            if !first_claimed {
                used.lock().expect("lock").release(&candidates[order[0].1].domain);
            }
            order.sort_by_key(|(suspect, _)| *suspect);
            for (attempt, &(_, c)) in order.iter().enumerate() {
                let domain = candidates[c].domain;
                if (attempt > 0 || !first_claimed) && !used.lock().expect("lock").claim(domain) {
                    continue;
                }
                let m = &live[c].member;
                match ds
                    .client
                    .put_shard_bytes(&m.endpoint_addr(), id, seg.shards[i].clone(), None)
                    .await
                {
                    Ok(()) => return Ok((i, m.node_id)),
                    Err(e) => {
                        used.lock().expect("lock").release(&domain);
                        // Not an answer from a live miner (a refusal): it
                        // is tried last for a while, and a connection that
                        // closed (or that the put closed on a stall) is let
                        // go with whatever of this pin's shards it held.
                        if !matches!(e, Error::Remote { .. }) {
                            ds.client.note_failure(&m.node_id).await;
                        }
                        tracing::warn!(miner = %m.node_id.fmt_short(), shard = %id, error = %e, "upload failed; trying the next miner");
                        errors.push(format!("{}: {e}", m.node_id.fmt_short()));
                        if errors.len() >= TRIES_PER_SHARD {
                            break;
                        }
                    }
                }
            }
            Err(Error::Unavailable(if errors.is_empty() {
                format!(
                    "shard {i} of segment {}: no miner in a failure domain of its own is left (each shard of a segment goes to a different /24 or /48 network)",
                    seg.index
                )
            } else {
                format!(
                    "shard {i} of segment {}: no miner took it ({})",
                    seg.index,
                    errors.join("; ")
                )
            }))
        });
    }
    let mut holders = vec![None; total];
    while let Some(r) = set.join_next().await {
        let (i, node) = r.map_err(Error::task)??;
        holders[i] = Some(node);
    }
    let holders = holders
        .into_iter()
        .collect::<Option<Vec<NodeId>>>()
        .ok_or_else(|| Error::Internal("a shard was left without an upload".into()))?;
    Ok((seg.index, holders))
}

impl Datasets {
    /// Pins a dataset whose packed bytes arrive on `body`.
    pub async fn pin(
        self: &Arc<Self>,
        req: PinRequest,
        body: mpsc::Receiver<Bytes>,
    ) -> Result<PinOutcome> {
        let started = Instant::now();
        check_files(&req.files)?;
        let registered = self.registered_miners().await?;
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
            return Err(Error::Unavailable(format!(
                "{} miners are registered but k + m = {k} + {m} = {total} shards each need a different miner; {advice}",
                registered.len(),
            )));
        }
        let params = Params::with_segment_near(
            usize::from(k),
            usize::from(m),
            req.segment_size
                .unwrap_or(Params::DEFAULT_SEGMENT_SIZE as u64)
                .try_into()
                .unwrap_or(usize::MAX),
        )
        .map_err(|e| Error::BadRequest(e.to_string()))?;
        let mut probed = self.probe_each(&registered, PROBE_TIMEOUT).await;
        let answered = |p: &[Probed]| {
            p.iter()
                .filter(|p| matches!(p, Probed::Answered(_)))
                .count()
        };
        if answered(&probed) < total {
            // Short: those that missed get one longer look before the pin
            // gives up (only then, so a pin beside a dead miner costs one
            // probe's wait, not two).
            let missed: Vec<usize> = (0..probed.len())
                .filter(|&i| matches!(probed[i], Probed::Missed(_)))
                .collect();
            if !missed.is_empty() {
                let again: Vec<Member> = missed.iter().map(|&i| registered[i].clone()).collect();
                let names: Vec<String> = again
                    .iter()
                    .map(|m| m.node_id.fmt_short().to_string())
                    .collect();
                tracing::warn!(
                    miners = %names.join(","),
                    "miners missed the pin's probe; asking them once more"
                );
                for (i, p) in missed
                    .into_iter()
                    .zip(self.probe_each(&again, PROBE_RETRY_TIMEOUT).await)
                {
                    probed[i] = p;
                }
            }
        }
        if answered(&probed) < total {
            let mut silent = Vec::new();
            let mut unpublished = Vec::new();
            for (r, p) in registered.iter().zip(&probed) {
                match p {
                    Probed::Answered(_) => {}
                    Probed::Missed(why) => {
                        silent.push(format!("{} ({why})", r.node_id.fmt_short()))
                    }
                    Probed::Unpublished => unpublished.push(r.node_id.fmt_short().to_string()),
                }
            }
            let mut why = Vec::new();
            if !silent.is_empty() {
                why.push(format!("no answer from {}", silent.join(", ")));
            }
            if !unpublished.is_empty() {
                why.push(format!(
                    "no address published by {}",
                    unpublished.join(", ")
                ));
            }
            return Err(Error::Unavailable(format!(
                "only {} of {} registered miners answered ({} needed for k + m = {total}); {}",
                answered(&probed),
                registered.len(),
                total,
                why.join("; ")
            )));
        }
        let live: Vec<LiveMiner> = probed.into_iter().filter_map(Probed::answered).collect();
        let vetted = self.vetted().await;
        let candidates = candidates(&live, self.rule, vetted.as_ref());
        let domains = {
            let mut d = placement::DomainSet::default();
            for c in &candidates {
                d.claim(c.domain);
            }
            d.len()
        };
        if domains < total {
            return Err(Error::Unavailable(format!(
                "k + m = {total} shards of each segment go to {total} different failure domains (a public /24 or /48 each; loopback and private addresses count as one), but the {} live miners span {domains}; add miners on other networks or pin with fewer shards{}",
                live.len(),
                if self.rule == DomainRule::Network {
                    " (a devnet on one host sets [network] failure_domains = \"node\")"
                } else {
                    ""
                }
            )));
        }
        let candidates = Arc::new(candidates);
        let live = Arc::new(live);

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
                Arc::clone(self),
                seg,
                Arc::clone(&live),
                Arc::clone(&candidates),
                Arc::clone(&uploads),
            ));
            // A finished upload gives its token back to the stage at once;
            // collect the results as they come so a failure stops the pin.
            while let Some(r) = in_flight.try_join_next() {
                settle(r, &mut holders, &mut failure);
            }
            if failure.is_some() {
                break;
            }
        }
        drop(seg_rx);
        while let Some(r) = in_flight.join_next().await {
            settle(r, &mut holders, &mut failure);
        }
        let stage_result = stage.await.map_err(Error::task)?;
        let file_hashes = match (failure, stage_result) {
            (Some(e), _) | (None, Err(e)) => {
                self.cleanup_uploads(&segments, &holders, &live).await;
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
        let segments = segments
            .into_iter()
            .map(|s| {
                s.map(|(len, blake3, shards)| SegmentRecord {
                    len,
                    blake3,
                    shards,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Internal("a segment was not recorded".into()))?;
        let manifest = Manifest {
            owner: self.node_id,
            data_shards: k,
            parity_shards: m,
            segment_size: params.segment_size() as u64,
            total_len: offset,
            single_file: req.single_file,
            entries,
            segments,
        };
        let cid = manifest.cid();
        let flat: Vec<Option<NodeId>> = holders
            .into_iter()
            .map(|h| h.ok_or_else(|| Error::Internal("a segment was not placed".into())))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .map(Some)
            .collect();
        let placement = Placement::signed(
            cid,
            cairn_store::unix_millis(),
            self.node_id,
            &flat,
            &self.key,
        );
        let copies = self.publish(&manifest, &placement, &live).await?;
        let validators = self.notify_validators(cid, false).await;
        let record = PinRecord {
            cid: cid.to_string(),
            name: req.name.clone(),
            bytes: manifest.total_len,
            files: manifest.entries.len(),
            data_shards: k,
            parity_shards: m,
            pinned_at: cairn_store::unix_secs(),
        };
        self.store.kv(PINS)?.put(
            &cid.0,
            &serde_json::to_vec(&record).expect("a pin record serializes"),
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

    /// Best effort: removes the shards of a pin that failed half-way.
    async fn cleanup_uploads(
        &self,
        segments: &[Option<SegmentInfo>],
        holders: &[Option<Vec<NodeId>>],
        live: &[LiveMiner],
    ) {
        let addrs: HashMap<NodeId, iroh::EndpointAddr> = live
            .iter()
            .map(|l| (l.member.node_id, l.member.endpoint_addr()))
            .collect();
        for (s, h) in segments.iter().zip(holders) {
            if let (Some((_, _, ids)), Some(h)) = (s, h) {
                for (id, node) in ids.iter().zip(h) {
                    if let Some(addr) = addrs.get(node) {
                        let _ = self.client.delete_shard(addr, *id, None).await;
                    }
                }
            }
        }
    }
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

    /// The k + m shards the encoder makes of `segment`, each its own copy.
    fn encoded(encoder: &mut Encoder, segment: &[u8]) -> Vec<Vec<u8>> {
        encoder
            .encode(segment)
            .unwrap()
            .shards()
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Every segment of streams that end anywhere (1 byte, a shard's worth,
    /// exactly one or two segments, a byte past one) comes out as the
    /// encoder would make it from the whole stream.
    #[test]
    fn the_stage_cuts_every_stream_length_right() {
        let params = Params::new(4, 2, 4 * 64 * 16).unwrap();
        let seg = params.segment_size();
        for total in [
            1,
            63,
            seg / 4,
            seg / 4 + 1,
            seg - 1,
            seg,
            seg + 1,
            2 * seg,
            3 * seg - 7,
        ] {
            let data: Vec<u8> = (0..total).map(|i| (i * 13 % 251) as u8).collect();
            let (body_tx, body_rx) = mpsc::channel::<Bytes>(total.div_ceil(700) + 1);
            for c in data.chunks(700) {
                body_tx.try_send(Bytes::copy_from_slice(c)).unwrap();
            }
            drop(body_tx);
            let (out_tx, mut out_rx) = mpsc::channel::<EncodedSegment>(8);
            let files = vec![spec("a", total as u64)];
            let hashes = segment_stage(params, files, body_rx, out_tx).unwrap();
            assert_eq!(hashes, vec![*blake3::hash(&data).as_bytes()]);
            let mut encoder = Encoder::new(params).unwrap();
            let mut n = 0;
            while let Ok(s) = out_rx.try_recv() {
                assert_eq!(s.index, n);
                let at = n * seg;
                let len = (total - at).min(seg);
                assert_eq!(s.len as usize, len, "total {total}");
                let want = encoded(&mut encoder, &data[at..at + len]);
                let got: Vec<Vec<u8>> = s.shards.iter().map(|b| b.to_vec()).collect();
                assert_eq!(got, want, "total {total}, segment {n}");
                assert_eq!(s.hash, *blake3::hash(&data[at..at + len]).as_bytes());
                n += 1;
            }
            assert_eq!(n, total.div_ceil(seg), "total {total}");
        }
    }

    /// The stage never holds more than its tokens' segments, whatever the
    /// uploads do: with the uploads stalled, it stops reading after
    /// SEGMENTS_IN_FLIGHT segments; every shard is a buffer of its own, of
    /// exactly its length (no view keeps a larger buffer alive); the short
    /// last segment is cut into shards of its own length.
    #[test]
    fn the_stage_holds_at_most_its_tokens_and_each_shard_alone() {
        let params = Params::new(4, 2, 4 * 64 * 16).unwrap();
        let seg = params.segment_size();
        let total = 10 * seg + 100;
        let files = vec![spec("a", total as u64)];
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
        // A body channel of two chunks: when it stays full, the stage has
        // stopped reading.
        let (body_tx, body_rx) = mpsc::channel::<Bytes>(2);
        let (out_tx, mut out_rx) = mpsc::channel::<EncodedSegment>(1);
        let stage = std::thread::spawn(move || segment_stage(params, files, body_rx, out_tx));
        let probe = body_tx.clone();
        let feeder = {
            let data = data.clone();
            std::thread::spawn(move || {
                for c in data.chunks(1000) {
                    if body_tx.blocking_send(Bytes::copy_from_slice(c)).is_err() {
                        return;
                    }
                }
            })
        };
        // Take segments without giving their tokens back.
        let mut held = Vec::new();
        for _ in 0..SEGMENTS_IN_FLIGHT {
            held.push(out_rx.blocking_recv().expect("a segment"));
        }
        // The event: the stage stops reading (the feeder fills the channel).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while probe.capacity() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the stage never stopped reading"
            );
            std::thread::yield_now();
        }
        drop(probe);
        assert!(
            out_rx.try_recv().is_err(),
            "a segment beyond the tokens was made"
        );
        let check = |s: &EncodedSegment| {
            let at = s.index * seg;
            let len = s.len as usize;
            let sl = params.shard_len(len);
            let want = encoded(&mut Encoder::new(params).unwrap(), &data[at..at + len]);
            assert_eq!(s.shards.len(), 6);
            for (i, shard) in s.shards.iter().enumerate() {
                assert_eq!(shard.as_ref(), want[i].as_slice(), "shard {i}");
                assert_eq!(shard.len(), sl);
                assert_eq!(s.ids[i], ShardId(*blake3::hash(shard).as_bytes()));
            }
            assert_eq!(s.hash, *blake3::hash(&data[at..at + len]).as_bytes());
        };
        for s in &held {
            check(s);
            assert_eq!(s.len as usize, seg);
        }
        // Give them back: the rest flows.
        drop(held);
        let mut n = SEGMENTS_IN_FLIGHT;
        while let Some(s) = out_rx.blocking_recv() {
            n += 1;
            check(&s);
            drop(s);
        }
        assert_eq!(n, 11);
        feeder.join().unwrap();
        stage.join().unwrap().unwrap();
    }
}
