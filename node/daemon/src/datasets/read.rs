//! Reading a dataset back: any k shards of a segment (data shards first, so
//! a healthy dataset needs no decoding), every byte verified against the
//! shard ids as it streams in, a hedge with one more shard when a miner is
//! slow, decoding (a decoded segment checked against its hash), and the
//! next segment fetched while the current one is sent.
//!
//! A range that covers only part of a segment is read without the rest: the
//! code is systematic, so the bytes are a piece of one or more data shards,
//! and only the 16 KiB groups covering each piece are fetched from its
//! holder (verified group by group against the shard id). When that holder
//! fails, or is slower than a hedge delay learned from its round trip, the
//! same group positions are fetched from k other shards and just those
//! positions decoded (Reed-Solomon works position by position).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_erasure::{Decoder, Params};
use cairn_proof::GROUP_LEN;
use cairn_proto::NodeId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Dataset, Datasets};
use crate::error::{Error, Result};
use crate::net::HeardMark;

/// A shard fetch slower than this gets a hedge: one more shard is asked for.
const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// A shard fetch is abandoned after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a reader may take none of the bytes streamed to it before the
/// read is dropped (with the segments it holds).
pub const READER_IDLE: Duration = Duration::from_secs(30);
/// A ranged read waits for a data shard's holder at least this long (and
/// 4 round trips) before it also decodes the piece from other shards.
const MIN_RANGE_HEDGE: Duration = Duration::from_millis(50);

/// A read of at most this many bytes inside one segment is fetched by the
/// request's own task and answered in one piece (a data loader's sample);
/// longer ones stream segment by segment.
pub const SMALL_READ: u64 = 1 << 20;

/// Segment bytes waiting for the disk tier, in 64 KiB units (4 MiB; a
/// bigger segment waits alone).
pub const DISK_WRITE_PERMITS: usize = 64;

/// `length` bytes at `offset` of shard `id` (`shard_len` bytes) from
/// `addr`, verified, or an error naming the peer after [`FETCH_TIMEOUT`].
async fn fetch_within_timeout(
    client: &crate::net::Client,
    addr: &iroh::EndpointAddr,
    id: cairn_proof::ShardId,
    (offset, length): (u64, u64),
    shard_len: u64,
    grant: Option<&cairn_proto::Grant>,
) -> Result<crate::net::client::ShardRange> {
    let fetch = client.get_shard_granted(addr, id, offset, length, Some(shard_len), grant);
    tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Peer {
                peer: addr.id.fmt_short().to_string(),
                message: format!("no shard data within {FETCH_TIMEOUT:?}"),
            })
        })
}

/// A segment's bytes in a few pieces: its data shards when none needed
/// decoding (so a healthy read never copies them into one buffer), or one
/// decoded buffer.
#[derive(Debug, Clone, Default)]
pub struct SegmentBytes {
    parts: Vec<Bytes>,
}

impl SegmentBytes {
    fn one(bytes: Bytes) -> Self {
        SegmentBytes { parts: vec![bytes] }
    }

    /// The segment of `len` bytes made of `shards` (the padding past its
    /// end cut off).
    fn from_data_shards(shards: Vec<Bytes>, len: u64) -> Self {
        let mut left = len as usize;
        let mut parts = Vec::with_capacity(shards.len());
        for mut shard in shards {
            if left == 0 {
                break;
            }
            shard.truncate(left);
            left -= shard.len();
            parts.push(shard);
        }
        SegmentBytes { parts }
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segment in one buffer (copied when it is in several pieces).
    pub fn contiguous(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => Bytes::from(parts.concat()),
        }
    }

    fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for p in &self.parts {
            h.update(p);
        }
        *h.finalize().as_bytes()
    }

    /// Bytes `[from, to)` as pieces of at most `max` bytes, not copied.
    fn slices(&self, from: usize, to: usize, max: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut at = 0;
        for p in &self.parts {
            let (a, b) = (from.max(at), to.min(at + p.len()));
            let mut pos = a;
            while pos < b {
                let n = (b - pos).min(max);
                out.push(p.slice(pos - at..pos - at + n));
                pos += n;
            }
            at += p.len();
        }
        out
    }

    /// Data shard `i` (`sl` bytes), zero-padded past the segment's end as
    /// the encoder padded it; not copied when it lies in one piece.
    fn data_shard(&self, i: usize, sl: usize) -> Bytes {
        let len = self.len();
        let (from, to) = ((i * sl).min(len), ((i + 1) * sl).min(len));
        let pieces = self.slices(from, to, usize::MAX);
        if pieces.len() == 1 && to - from == sl {
            return pieces.into_iter().next().expect("one piece");
        }
        let mut shard = Vec::with_capacity(sl);
        for p in pieces {
            shard.extend_from_slice(&p);
        }
        shard.resize(sl, 0);
        Bytes::from(shard)
    }
}

/// What partial-segment reads did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Pieces of data shards read for partial-segment ranges.
    pub pieces: AtomicU64,
    /// Of those, pieces decoded from other shards (holder failed or slow).
    pub decoded: AtomicU64,
}

impl Datasets {
    /// Fetches and decodes segment `s`: any k shards, data shards first,
    /// hedged (or from the cache, or from a read-ahead already under way).
    pub async fn fetch_segment(&self, ds: &Dataset, s: usize) -> Result<SegmentBytes> {
        self.wait_for_read_ahead(ds, s).await;
        self.fetch_segment_now(ds, s, false).await
    }

    /// Segment `s`, from the cache or fetched (and then cached); `ahead`
    /// when it is read ahead of its reader.
    async fn fetch_segment_now(&self, ds: &Dataset, s: usize, ahead: bool) -> Result<SegmentBytes> {
        let m = &ds.manifest;
        let seg = m
            .segments
            .get(s)
            .ok_or_else(|| Error::Internal(format!("segment {s} is out of range")))?;
        let k = usize::from(m.data_shards);
        let shard_len = seg.len.div_ceil(k as u64);
        if let Some(bytes) = self.segment_from_cache(ds, s).await {
            return Ok(bytes);
        }
        // Data shards first (no decoding needed), then parity.
        let mut got = self
            .fetch_any_k(ds, s, 0..m.total_shards(), 0, u64::MAX, shard_len as usize)
            .await?;
        got.sort_by_key(|(i, _)| *i);
        // The data shards that may be cached: each checked against its own
        // id in the manifest (the id is the cache's key, shared by every
        // dataset that names it).
        let verified: Vec<(cairn_proof::ShardId, Bytes)>;
        // Whether `verified` are views into one decoded buffer (not each
        // a buffer of its own).
        let from_decoder: bool;
        let bytes = if got.iter().enumerate().all(|(n, (i, _))| n == *i) {
            // Every data shard came: the segment is those shards, no
            // decoding. Each was verified against its id in the manifest as
            // it streamed in, so they are the bytes the manifest names;
            // hashing the segment again would be a second BLAKE3 pass over
            // every byte read (a fifth of the gateway's CPU on `get`).
            let shards: Vec<Bytes> = got.into_iter().map(|(_, b)| Bytes::from(b)).collect();
            verified = seg.shards.iter().copied().zip(shards.clone()).collect();
            from_decoder = false;
            SegmentBytes::from_data_shards(shards, seg.len)
        } else {
            let mut decoder = Decoder::new(m.decoder_params()?)?;
            let given: Vec<(usize, &[u8])> = got.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            let decoded = decoder.decode(seg.len as usize, &given)?;
            let bytes = SegmentBytes::one(Bytes::copy_from_slice(decoded));
            // Parity is only as good as the encoder that made it: a decoded
            // segment must match the segment hash the pinner recorded.
            if bytes.hash() != seg.blake3 {
                return Err(Error::Corrupt(format!(
                    "segment {s} decoded to bytes that do not match the manifest"
                )));
            }
            // The segment's hash vouches for the segment, not for the ids
            // the manifest gives its shards: a manifest may name another
            // dataset's shard id for bytes of its own. Each data shard cut
            // from a decoded segment (padded as the encoder padded it)
            // enters the cache only under the id it hashes to. Decoded
            // segments are the rare case, so this hashing is too.
            verified = (0..k)
                .map(|i| (seg.shards[i], bytes.data_shard(i, shard_len as usize)))
                .filter(|(id, shard)| *blake3::hash(shard).as_bytes() == id.0)
                .collect();
            from_decoder = true;
            bytes
        };
        // Whole segments are what scans read: with a disk tier they are
        // kept there, and memory stays for the groups of small ranges,
        // which a scan would only push out.
        if self.disk.is_some() {
            self.keep_on_disk(verified).await;
        } else {
            for (id, shard) in verified {
                let id = &id;
                if from_decoder {
                    self.groups.insert(id, shard_len, 0, &shard);
                } else {
                    self.groups.insert_whole(id, shard_len, shard);
                }
                if ahead {
                    // Wanted soon: kept over the reader's own segments,
                    // which enter after it and are not read again (a few
                    // groups pushed out cost the whole segment again).
                    self.groups.mark_wanted(id, shard_len);
                }
            }
        }
        Ok(bytes)
    }

    /// Segment `s` from the cache (memory, then disk), when every data
    /// shard of it is there. Cached shards entered under the id they hash
    /// to; the disk tier checks each again as it reads it (files rot), so
    /// the segment is the bytes the manifest's shard ids name, as a fetched
    /// one is.
    async fn segment_from_cache(&self, ds: &Dataset, s: usize) -> Option<SegmentBytes> {
        let seg = &ds.manifest.segments[s];
        let k = u64::from(ds.manifest.data_shards);
        let sl = seg.len.div_ceil(k);
        let mut parts: Vec<Option<Bytes>> = seg.shards[..k as usize]
            .iter()
            .map(|id| self.groups.get_whole(id, sl))
            .collect();
        if parts.iter().any(Option::is_none) {
            let disk = Arc::clone(self.disk.as_ref()?);
            let ids = seg.shards[..k as usize].to_vec();
            if !ids
                .iter()
                .zip(&parts)
                .all(|(id, p)| p.is_some() || disk.contains(id))
            {
                return None;
            }
            // All read (and hashed) at the same time: a cold disk gives
            // more with several reads queued, and the hashing spreads over
            // the cores.
            let mut reads = JoinSet::new();
            for (i, id) in ids.into_iter().enumerate() {
                if parts[i].is_none() {
                    let disk = Arc::clone(&disk);
                    reads.spawn_blocking(move || (i, disk.read_whole(&id, sl)));
                }
            }
            while let Some(r) = reads.join_next().await {
                let (i, bytes) = r.ok()?;
                parts[i] = Some(Bytes::from(bytes?));
            }
        }
        let shards = parts.into_iter().collect::<Option<Vec<_>>>()?;
        Some(SegmentBytes::from_data_shards(shards, seg.len))
    }

    /// Writes data shards, each verified against its id, to the disk tier
    /// in the background; waits only while more than [`DISK_WRITE_PERMITS`]
    /// x 64 KiB of shards are still waiting to be written. The shards are
    /// staged before this returns, so a reader that waited for this
    /// segment's read-ahead finds them whether or not the files are written
    /// yet.
    async fn keep_on_disk(&self, shards: Vec<(cairn_proof::ShardId, Bytes)>) {
        let Some(disk) = self.disk.as_ref() else {
            return;
        };
        let shards: Vec<_> = shards
            .into_iter()
            .filter(|(id, _)| !disk.contains(id))
            .collect();
        if shards.is_empty() {
            return;
        }
        let len: usize = shards.iter().map(|(_, b)| b.len()).sum();
        let units = (len >> 16).clamp(1, DISK_WRITE_PERMITS) as u32;
        let Ok(permit) = Arc::clone(&self.disk_writes)
            .acquire_many_owned(units)
            .await
        else {
            return;
        };
        // The staged bytes are the ones the write holds until it is done,
        // under the same permit (not copied).
        let staged = disk.stage(shards);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            staged.write();
        });
    }

    /// Waits for a read-ahead of segment `s` under way, so the reader finds
    /// it in the cache instead of fetching it a second time.
    /// Bounded: a reader waits at most [`FETCH_TIMEOUT`], then fetches for
    /// itself, whatever became of the read-ahead.
    async fn wait_for_read_ahead(&self, ds: &Dataset, s: usize) {
        let ahead = self.ahead.lock().expect("lock").get(&(ds.cid, s)).cloned();
        if let Some(mut done) = ahead {
            let _ = tokio::time::timeout(FETCH_TIMEOUT, done.wait_for(|d| *d)).await;
        }
    }

    /// Starts fetching segments `ahead` of dataset `ds` whole, into the cache.
    fn read_ahead(self: &Arc<Self>, ds: &Dataset, ahead: Vec<usize>) {
        for s in ahead {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let slot = {
                let mut map = self.ahead.lock().expect("lock");
                if map.contains_key(&(ds.cid, s)) {
                    continue;
                }
                // Read-ahead outlives the request that asked for it, so the
                // node bounds it as a whole: with every slot taken, readers
                // fetch for themselves.
                let Ok(slot) = Arc::clone(&self.read_ahead_slots).try_acquire_owned() else {
                    self.read_ahead_skipped.fetch_add(1, Ordering::Relaxed);
                    drop(map);
                    // Asked again by the next read into it.
                    self.trails.lock().expect("lock").forget(ds.cid, s);
                    continue;
                };
                map.insert((ds.cid, s), rx);
                slot
            };
            self.prefetched.fetch_add(1, Ordering::Relaxed);
            let (ctx, ds) = (Arc::clone(self), ds.clone());
            tokio::spawn(async move {
                let _slot = slot;
                // Bounded as a whole, so a slot and its waiters are always freed.
                // A failed read-ahead is not asked again: the reads behind
                // it would each wait for another whole-segment fetch that
                // fails the same way.
                let fetched =
                    tokio::time::timeout(FETCH_TIMEOUT, ctx.fetch_segment_now(&ds, s, true)).await;
                match &fetched {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(cid = %ds.cid, segment = s, error = %e, "read-ahead failed")
                    }
                    Err(_) => tracing::warn!(
                        cid = %ds.cid,
                        segment = s,
                        "read-ahead took over {FETCH_TIMEOUT:?}; given up"
                    ),
                }
                ctx.ahead.lock().expect("lock").remove(&(ds.cid, s));
                let _ = tx.send(true);
            });
        }
    }

    /// Bytes `[a, b)` of segment `s`, fetching only the groups that hold
    /// them (see the module doc).
    pub async fn fetch_segment_range(
        self: &Arc<Self>,
        ds: &Dataset,
        s: usize,
        a: u64,
        b: u64,
    ) -> Result<Vec<u8>> {
        let m = &ds.manifest;
        let seg = m
            .segments
            .get(s)
            .ok_or_else(|| Error::Internal(format!("segment {s} is out of range")))?;
        if a >= b || b > seg.len {
            return Err(Error::Internal(format!(
                "bytes {a}..{b} of segment {s} ({} bytes)",
                seg.len
            )));
        }
        self.wait_for_read_ahead(ds, s).await;
        let sl = seg.len.div_ceil(u64::from(m.data_shards));
        if a / sl == (b - 1) / sl {
            // In one data shard (a small read): no task to hand it to.
            let i = a / sl;
            return self
                .fetch_data_piece(ds, s, i as usize, a - i * sl, b - i * sl)
                .await;
        }
        let mut out = Vec::with_capacity((b - a) as usize);
        let mut set: JoinSet<(u64, Result<Vec<u8>>)> = JoinSet::new();
        for i in a / sl..=(b - 1) / sl {
            let lo = a.max(i * sl) - i * sl;
            let hi = b.min((i + 1) * sl) - i * sl;
            let (ctx, ds) = (Arc::clone(self), ds.clone());
            set.spawn(async move {
                let r = ctx.fetch_data_piece(&ds, s, i as usize, lo, hi).await;
                (i, r)
            });
        }
        let mut pieces = Vec::new();
        while let Some(j) = set.join_next().await {
            let (i, r) = j.map_err(Error::task)?;
            pieces.push((i, r?));
        }
        pieces.sort_by_key(|(i, _)| *i);
        for (_, p) in pieces {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }

    /// Bytes `[lo, hi)` of data shard `i` of segment `s`: from its holder,
    /// or decoded from other shards' same positions.
    async fn fetch_data_piece(
        &self,
        ds: &Dataset,
        s: usize,
        i: usize,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<u8>> {
        self.reads.pieces.fetch_add(1, Ordering::Relaxed);
        let m = &ds.manifest;
        let seg = &m.segments[s];
        let total = m.total_shards();
        let sl = seg.len.div_ceil(u64::from(m.data_shards));
        if let Some(b) = self.groups.get(&seg.shards[i], sl, lo, hi) {
            return Ok(b);
        }
        if let Some(disk) = self.disk.as_ref().filter(|d| d.contains(&seg.shards[i])) {
            let (disk, id) = (Arc::clone(disk), seg.shards[i]);
            let r = tokio::task::spawn_blocking(move || disk.get(&id, sl, lo, hi)).await;
            if let Ok(Some(b)) = r {
                return Ok(b);
            }
        }
        let grant = self.grant_for(&m.owner);
        let holder = ds
            .placement
            .holder(s, i, total)
            .filter(|n| !self.client.is_suspect(n));
        let Some(holder) = holder else {
            self.reads.decoded.fetch_add(1, Ordering::Relaxed);
            return self.decode_piece(ds, s, i, lo, hi).await;
        };
        let addr = ds.addr(&holder);
        // Whole groups, so that what is fetched can be cached.
        let g = GROUP_LEN as u64;
        let (g0, g1) = (lo / g * g, (hi.div_ceil(g) * g).min(sl));
        let mark = self.client.heard_mark(&holder).await;
        let direct = async {
            let r = fetch_within_timeout(
                &self.client,
                &addr,
                seg.shards[i],
                (g0, g1 - g0),
                sl,
                grant.as_ref(),
            )
            .await;
            match &r {
                Ok(_) => self.client.mark_ok(&holder),
                // "Not stored" comes from a live peer: not one to avoid.
                Err(e) if not_stored_here(e) => {}
                Err(_) => self.client.request_failed(&holder, mark).await,
            }
            let groups = r?.bytes;
            self.groups.insert(&seg.shards[i], sl, g0, &groups);
            groups
                .get((lo - g0) as usize..(hi - g0) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::Internal(format!("a verified range of shard {i} is short")))
        };
        // Boxed so that it can be dropped before this task waits on
        // anything else (below).
        let mut direct = Box::pin(direct);
        let hedge = self.hedge_delay(&holder).await;
        let direct_failed = tokio::select! {
            r = &mut direct => match r {
                Ok(b) => return Ok(b),
                Err(e) => Some(e),
            },
            _ = tokio::time::sleep(hedge) => None,
        };
        self.reads.decoded.fetch_add(1, Ordering::Relaxed);
        let decode = self.decode_piece(ds, s, i, lo, hi);
        if let Some(e) = direct_failed {
            return decode.await.map_err(|d| {
                let why = format!(
                    "segment {s}, shard {i}: its holder failed ({e}) and decoding from the others failed ({d})"
                );
                if not_stored_here(&e) && matches!(d, Error::NotFound(_)) {
                    Error::NotFound(why)
                } else {
                    Error::Unavailable(why)
                }
            });
        }
        // The holder is slow: whichever answers first; a holder that loses
        // the race is tried last for a while.
        tokio::pin!(decode);
        tokio::select! {
            r = &mut direct => match r {
                Ok(b) => Ok(b),
                Err(_) => decode.await,
            },
            r = &mut decode => match r {
                Ok(b) => {
                    // Drop the holder's fetch before waiting on anything
                    // else: left alive but unpolled, it could own the
                    // client's connection lock it had queued for, and
                    // marking the holder needs that lock (a futurelock: a
                    // ranges test hung on it for good under load).
                    drop(direct);
                    self.client.request_failed(&holder, mark).await;
                    Ok(b)
                }
                // The holder's fetch marks it failed itself if it fails.
                Err(_) => direct.await,
            },
        }
    }

    /// A failed or slow fetch from `node`: judged against its mark; a fetch
    /// that never ran far enough to take one tells nothing of the peer's
    /// connection, so it only makes the peer suspect.
    async fn judge_failed(&self, node: &NodeId, mark: Option<HeardMark>) {
        match mark {
            Some(mark) => self.client.request_failed(node, mark).await,
            None => self.client.note_failure(node).await,
        }
    }

    /// How long a ranged read waits for `peer` before decoding around it:
    /// 4 round trips of its connection, at least [`MIN_RANGE_HEDGE`].
    async fn hedge_delay(&self, peer: &NodeId) -> Duration {
        match self.client.rtt(peer).await {
            Some(rtt) => (rtt * 4).clamp(MIN_RANGE_HEDGE, HEDGE_AFTER),
            None => HEDGE_AFTER / 4,
        }
    }

    /// Bytes `[offset, offset + length)` (whole shards: `0, u64::MAX`) of
    /// any k of segment `s`'s shards `candidates`, each `piece_len` bytes,
    /// verified: asked in that order (miners that failed lately last), one
    /// more after every [`HEDGE_AFTER`] without an answer and the next in
    /// line after a failure. A miner that failed, or was still silent after
    /// the hedge delay when k had come, is tried last for a while.
    async fn fetch_any_k(
        &self,
        ds: &Dataset,
        s: usize,
        candidates: impl Iterator<Item = usize>,
        offset: u64,
        length: u64,
        piece_len: usize,
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let m = &ds.manifest;
        let seg = &m.segments[s];
        let (k, total) = (usize::from(m.data_shards), m.total_shards());
        let shard_len = seg.len.div_ceil(k as u64);
        let mut order: Vec<(usize, NodeId)> = candidates
            .filter_map(|i| Some((i, ds.placement.holder(s, i, total)?)))
            .collect();
        let asked = order.len();
        order.sort_by_key(|(_, node)| self.client.is_suspect(node));
        let mut queue: std::collections::VecDeque<(usize, NodeId)> = order.into();
        // Another owner's dataset: show the grant it gave this node, if any.
        let grant = self.grant_for(&m.owner);
        type Fetch = (usize, NodeId, Result<Vec<u8>>);
        let mut set: JoinSet<Fetch> = JoinSet::new();
        // Each fetch's holder, start, and what had arrived from the holder
        // when it began (taken by the fetch itself), to judge a failure by.
        type Started = HashMap<usize, (NodeId, Instant, Arc<OnceLock<HeardMark>>)>;
        let mut started: Started = HashMap::new();
        let start =
            |(i, node): (usize, NodeId), set: &mut JoinSet<Fetch>, started: &mut Started| {
                let mark = Arc::new(OnceLock::new());
                started.insert(i, (node, Instant::now(), Arc::clone(&mark)));
                let (addr, client) = (ds.addr(&node), Arc::clone(&self.client));
                let (id, grant) = (seg.shards[i], grant.clone());
                set.spawn(async move {
                    let _ = mark.set(client.heard_mark(&node).await);
                    let r = fetch_within_timeout(
                        &client,
                        &addr,
                        id,
                        (offset, length),
                        shard_len,
                        grant.as_ref(),
                    )
                    .await;
                    (i, node, r.map(|r| r.bytes))
                });
            };
        for _ in 0..k {
            if let Some(next) = queue.pop_front() {
                start(next, &mut set, &mut started);
            }
        }
        let mut got: Vec<(usize, Vec<u8>)> = Vec::with_capacity(k);
        let mut errors: Vec<String> = Vec::new();
        // Holders that answered at once that they do not store their shard.
        let mut not_stored = 0;
        while got.len() < k && !set.is_empty() {
            match tokio::time::timeout(HEDGE_AFTER, set.join_next()).await {
                Ok(Some(Ok((i, node, r)))) => {
                    let mark = started.remove(&i).and_then(|(.., m)| m.get().copied());
                    match r {
                        Ok(bytes) if bytes.len() == piece_len => {
                            self.client.mark_ok(&node);
                            got.push((i, bytes));
                            continue;
                        }
                        Ok(bytes) => errors.push(format!(
                            "shard {i} on {}: {} bytes for a {piece_len}-byte piece",
                            node.fmt_short(),
                            bytes.len()
                        )),
                        Err(e) => {
                            // A "not stored" answer is a live peer: not one
                            // to try last for other reads.
                            if not_stored_here(&e) {
                                not_stored += 1;
                            } else {
                                self.judge_failed(&node, mark).await;
                            }
                            errors.push(format!("shard {i} on {}: {e}", node.fmt_short()));
                        }
                    }
                    if let Some(next) = queue.pop_front() {
                        start(next, &mut set, &mut started);
                    }
                }
                Ok(Some(Err(e))) => errors.push(e.to_string()),
                Ok(None) => break,
                Err(_) => {
                    // Slow: ask one more miner, keep waiting for all.
                    if let Some(next) = queue.pop_front() {
                        start(next, &mut set, &mut started);
                    }
                }
            }
        }
        set.abort_all();
        for (node, t, mark) in started.into_values() {
            if t.elapsed() >= HEDGE_AFTER {
                self.judge_failed(&node, mark.get().copied()).await;
            }
        }
        if got.len() < k {
            let what = if length == u64::MAX {
                "whole shards".to_string()
            } else {
                format!("bytes {offset}..{}", offset + length)
            };
            let why = format!(
                "segment {s}: {what} of only {} of {asked} shards could be fetched and {k} are needed ({})",
                got.len(),
                errors.join("; ")
            );
            // Every holder answered that it does not store its shard: the
            // bytes are gone (unpinned, or lost), not late: retrying is
            // pointless, which a 404 says and a 503 does not.
            return Err(if not_stored == asked {
                Error::NotFound(format!(
                    "{why}: no holder stores this dataset's shards any more (unpinned, or lost)"
                ))
            } else {
                Error::Unavailable(why)
            });
        }
        Ok(got)
    }

    /// Bytes `[lo, hi)` of data shard `i` of segment `s`, decoded from the
    /// groups at the same positions of k other shards.
    async fn decode_piece(
        &self,
        ds: &Dataset,
        s: usize,
        i: usize,
        lo: u64,
        hi: u64,
    ) -> Result<Vec<u8>> {
        let m = &ds.manifest;
        let seg = &m.segments[s];
        let k = usize::from(m.data_shards);
        let total = m.total_shards();
        let sl = seg.len.div_ceil(k as u64);
        let g = GROUP_LEN as u64;
        let (g0, g1) = (lo / g * g, (hi.div_ceil(g) * g).min(sl));
        let len = (g1 - g0) as usize;
        let others = (0..total).filter(|&j| j != i);
        let got = self.fetch_any_k(ds, s, others, g0, g1 - g0, len).await?;
        // A decoder sized for this piece: k shards of `len` bytes (rounded
        // up to the codec's alignment; the tail is never given).
        let piece_params = Params::new(
            k,
            total - k,
            k * len.div_ceil(cairn_erasure::SHARD_ALIGN) * cairn_erasure::SHARD_ALIGN,
        )?;
        let mut decoder = Decoder::new(piece_params)?;
        let given: Vec<(usize, &[u8])> = got.iter().map(|(j, b)| (*j, b.as_slice())).collect();
        let decoded = decoder.decode(k * len, &given)?;
        let piece = &decoded[i * len..(i + 1) * len];
        Ok(piece[(lo - g0) as usize..(hi - g0) as usize].to_vec())
    }

    /// Notes a read of packed-stream bytes `[start, end)` for read-ahead;
    /// returns the segments to read ahead (none when the reader is not
    /// sequential or there is no cache to read into), for the caller to
    /// start with [`Datasets::read_ahead`] when the read nears its end.
    fn observe_read(&self, ds: &Dataset, start: u64, end: u64) -> Vec<usize> {
        if !self.groups.enabled() && self.disk.is_none() {
            return Vec::new();
        }
        let m = &ds.manifest;
        self.trails.lock().expect("lock").observe(
            ds.cid,
            start,
            end,
            m.segment_size,
            m.segments.len(),
        )
    }

    /// Whether bytes `[start, end)` of the packed stream are a small read:
    /// at most [`SMALL_READ`] bytes inside one segment and not all of it
    /// (a whole segment is fetched as k shards, by [`Datasets::stream_range`]).
    pub fn is_small_read(ds: &Dataset, start: u64, end: u64) -> bool {
        let m = &ds.manifest;
        let s = start / m.segment_size;
        let Some(seg) = m.segments.get(s as usize) else {
            return false;
        };
        let seg_start = s * m.segment_size;
        start < end
            && end - start <= SMALL_READ
            && (end - 1) / m.segment_size == s
            && !(start == seg_start && end - seg_start >= seg.len)
    }

    /// Bytes `[start, end)` of the packed stream when they are a small read
    /// ([`Datasets::is_small_read`]): fetched by the caller's task, so a data
    /// loader's sample costs no reader task and no channel (what
    /// [`Datasets::stream_range`] needs for reads of many segments).
    pub async fn read_in_segment(
        self: &Arc<Self>,
        ds: &Dataset,
        start: u64,
        end: u64,
    ) -> Result<Bytes> {
        if !Self::is_small_read(ds, start, end) {
            return Err(Error::Internal(format!(
                "bytes {start}..{end} are not a small read"
            )));
        }
        // A small read ends where it starts: its read-ahead starts now.
        let ahead = self.observe_read(ds, start, end);
        self.read_ahead(ds, ahead);
        let seg_size = ds.manifest.segment_size;
        let s = start / seg_size;
        let seg_start = s * seg_size;
        let bytes = self
            .fetch_segment_range(ds, s as usize, start - seg_start, end - seg_start)
            .await?;
        Ok(Bytes::from(bytes))
    }

    /// Streams bytes `[start, end)` of the packed stream to `tx`, a segment at a
    /// time, fetching the next segment while the current one is sent.
    pub async fn stream_range(
        self: Arc<Self>,
        ds: Dataset,
        start: u64,
        end: u64,
        tx: mpsc::Sender<Result<Bytes>>,
    ) {
        let ctx = self;
        let m = Arc::clone(&ds.manifest);
        if start >= end {
            return;
        }
        let seg_size = m.segment_size;
        let first = (start / seg_size) as usize;
        let last = ((end - 1) / seg_size) as usize;
        // Read-ahead starts when this read reaches its last segment: asked
        // for now, a long read's own segments would pass through the cache
        // after it and evict it before the next read came for it (a
        // `cairn get` of file after file fetched an eighth of its bytes
        // twice).
        let mut ahead = Some(ctx.observe_read(&ds, start, end));
        // A whole segment is fetched as k shards; part of one as the
        // groups that hold it. Either way `bytes` starts at `offset` of
        // the segment.
        let fetch = |s: usize| {
            let (ctx, ds) = (Arc::clone(&ctx), ds.clone());
            tokio::spawn(async move {
                let seg_start = s as u64 * seg_size;
                let seg_len = ds.manifest.segments[s].len;
                let a = start.saturating_sub(seg_start);
                let b = (end - seg_start).min(seg_len);
                if a == 0 && b == seg_len {
                    Ok((0, ctx.fetch_segment(&ds, s).await?))
                } else {
                    let bytes = ctx.fetch_segment_range(&ds, s, a, b).await?;
                    Ok((a, SegmentBytes::one(Bytes::from(bytes))))
                }
            })
        };
        // The read-ahead covers the segment holding the end: it is started
        // before that segment's own fetch, which then waits for it instead
        // of fetching it a second time beside it.
        let mut fetch_next = |s: usize| {
            if s == last
                && let Some(ahead) = ahead.take()
            {
                ctx.read_ahead(&ds, ahead);
            }
            fetch(s)
        };
        let mut next = Some(fetch_next(first));
        for s in first..=last {
            let current = next.take().expect("prefetched");
            if s < last {
                next = Some(fetch_next(s + 1));
            }
            let (offset, bytes) = match current.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Error::task(e))).await;
                    return;
                }
            };
            let seg_start = s as u64 * seg_size;
            let from = (start.saturating_sub(seg_start) - offset) as usize;
            let to = ((end - seg_start - offset) as usize).min(bytes.len());
            for piece in bytes.slices(from, to, 1 << 20) {
                match tokio::time::timeout(READER_IDLE, tx.send(Ok(piece))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // reader went away
                    Err(_) => {
                        tracing::debug!(
                            idle = ?READER_IDLE,
                            "a reader took nothing for too long; its read is dropped"
                        );
                        return;
                    }
                }
            }
        }
    }
}

/// A peer's answer that it does not store the shard asked for.
fn not_stored_here(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote {
            code: cairn_proto::wire::ErrorCode::NotFound,
            ..
        }
    )
}
