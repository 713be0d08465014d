//! Reading a dataset back: any k shards of a segment (data shards first, so
//! a healthy dataset needs no decoding), every byte verified against the
//! shard ids as it streams in, a hedge with one more shard when a miner is
//! slow, decoding, the segment's hash checked, and the next segment fetched
//! while the current one is sent.
//!
//! A range that covers only part of a segment is read without the rest: the
//! code is systematic, so the bytes are a piece of one or more data shards,
//! and only the 16 KiB groups covering each piece are fetched from its
//! holder (verified group by group against the shard id). When that holder
//! fails, or is slower than a hedge delay learned from its round trip, the
//! same group positions are fetched from k other shards and just those
//! positions decoded (Reed-Solomon works position by position).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_erasure::{Decoder, Params};
use cairn_proof::GROUP_LEN;
use cairn_proto::NodeId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Dataset, Datasets};
use crate::error::{Error, Result};

/// A shard fetch slower than this gets a hedge: one more shard is asked for.
const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// A shard fetch is abandoned after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A ranged read waits for a data shard's holder at least this long (and
/// 4 round trips) before it also decodes the piece from other shards.
const MIN_RANGE_HEDGE: Duration = Duration::from_millis(50);

/// What partial-segment reads did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Pieces of data shards read for partial-segment ranges.
    pub pieces: AtomicU64,
    /// Of those, pieces decoded from other shards (holder failed or slow).
    pub decoded: AtomicU64,
}

impl Datasets {
    /// Fetches and decodes segment `s`: any k shards, data shards first, hedged.
    pub async fn fetch_segment(
        &self,
        ds: &Dataset,
        s: usize,
        decoder: &mut Decoder,
    ) -> Result<Vec<u8>> {
        let ctx = self;
        let m = &ds.manifest;
        let seg = m
            .segments
            .get(s)
            .ok_or_else(|| Error::Internal(format!("segment {s} is out of range")))?;
        let k = usize::from(m.data_shards);
        let total = m.total_shards();
        let shard_len = seg.len.div_ceil(k as u64);
        if let Some(bytes) = self.segment_from_cache(ds, s) {
            return Ok(bytes);
        }
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
        // Another owner's dataset: show the grant it gave this node, if any.
        let grant = ctx.grant_for(&m.owner);
        let mut set: JoinSet<(usize, Result<Vec<u8>>)> = JoinSet::new();
        let start = |i: usize, set: &mut JoinSet<(usize, Result<Vec<u8>>)>| {
            let node = ds.placement.holder(s, i, total).expect("filtered");
            let addr = ds.addr(&node);
            let client = Arc::clone(&ctx.client);
            let id = seg.shards[i];
            let grant = grant.clone();
            set.spawn(async move {
                let r = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    client.get_shard_granted(
                        &addr,
                        id,
                        0,
                        u64::MAX,
                        Some(shard_len),
                        grant.as_ref(),
                    ),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Peer {
                        peer: addr.id.fmt_short().to_string(),
                        message: format!("no shard within {FETCH_TIMEOUT:?}"),
                    })
                })
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
            return Err(Error::Unavailable(format!(
                "segment {s}: only {} of {total} shards could be fetched and {k} are needed ({})",
                got.len(),
                errors.join("; ")
            )));
        }
        let given: Vec<(usize, &[u8])> = got.iter().map(|(i, b)| (*i, b.as_slice())).collect();
        let bytes = decoder.decode(seg.len as usize, &given)?.to_vec();
        if *blake3::hash(&bytes).as_bytes() != seg.blake3 {
            return Err(Error::Corrupt(format!(
                "segment {s} decoded to bytes that do not match the manifest"
            )));
        }
        // The segment matches the manifest, so every data shard cut from it
        // is verified, fetched or decoded (the last ones padded with zeros,
        // as the encoder padded them).
        let sl = shard_len as usize;
        for i in 0..k {
            let from = (i * sl).min(bytes.len());
            let to = ((i + 1) * sl).min(bytes.len());
            if to - from == sl {
                self.groups
                    .insert(&seg.shards[i], shard_len, 0, &bytes[from..to]);
            } else {
                let mut padded = bytes[from..to].to_vec();
                padded.resize(sl, 0);
                self.groups.insert(&seg.shards[i], shard_len, 0, &padded);
            }
        }
        Ok(bytes)
    }

    /// Segment `s` from the cache, when every data shard of it is there
    /// (checked against the segment's hash like a fetched one).
    fn segment_from_cache(&self, ds: &Dataset, s: usize) -> Option<Vec<u8>> {
        let seg = &ds.manifest.segments[s];
        let k = u64::from(ds.manifest.data_shards);
        let sl = seg.len.div_ceil(k);
        let mut out = Vec::with_capacity((sl * k) as usize);
        for i in 0..k as usize {
            out.extend_from_slice(&self.groups.get(&seg.shards[i], sl, 0, sl)?);
        }
        out.truncate(seg.len as usize);
        (*blake3::hash(&out).as_bytes() == seg.blake3).then_some(out)
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
        let sl = seg.len.div_ceil(u64::from(m.data_shards));
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
        let direct = async {
            let r = tokio::time::timeout(
                FETCH_TIMEOUT,
                self.client.get_shard_granted(
                    &addr,
                    seg.shards[i],
                    g0,
                    g1 - g0,
                    Some(sl),
                    grant.as_ref(),
                ),
            )
            .await
            .unwrap_or_else(|_| {
                Err(Error::Peer {
                    peer: holder.fmt_short().to_string(),
                    message: format!("no shard range within {FETCH_TIMEOUT:?}"),
                })
            });
            match &r {
                Ok(_) => self.client.mark_ok(&holder),
                Err(_) => self.client.mark_failed(&holder).await,
            }
            let groups = r?.bytes;
            self.groups.insert(&seg.shards[i], sl, g0, &groups);
            groups
                .get((lo - g0) as usize..(hi - g0) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::Internal(format!("a verified range of shard {i} is short")))
        };
        tokio::pin!(direct);
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
                Error::Unavailable(format!(
                    "segment {s}, shard {i}: its holder failed ({e}) and decoding from the others failed ({d})"
                ))
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
            r = &mut decode => {
                self.client.mark_failed(&holder).await;
                match r {
                    Ok(b) => Ok(b),
                    Err(_) => direct.await,
                }
            }
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
        let mut order: Vec<usize> = (0..total)
            .filter(|&j| j != i && ds.placement.holder(s, j, total).is_some())
            .collect();
        order.sort_by_key(|&j| {
            let node = ds.placement.holder(s, j, total).expect("filtered");
            self.client.is_suspect(&node)
        });
        let mut queue: std::collections::VecDeque<usize> = order.into();
        let grant = self.grant_for(&m.owner);
        let mut set: JoinSet<(usize, Result<Vec<u8>>)> = JoinSet::new();
        let start = |j: usize, set: &mut JoinSet<(usize, Result<Vec<u8>>)>| {
            let node = ds.placement.holder(s, j, total).expect("filtered");
            let addr = ds.addr(&node);
            let client = Arc::clone(&self.client);
            let (id, grant) = (seg.shards[j], grant.clone());
            set.spawn(async move {
                let r = tokio::time::timeout(
                    FETCH_TIMEOUT,
                    client.get_shard_granted(&addr, id, g0, g1 - g0, Some(sl), grant.as_ref()),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Peer {
                        peer: node.fmt_short().to_string(),
                        message: format!("no shard range within {FETCH_TIMEOUT:?}"),
                    })
                });
                match &r {
                    Ok(_) => client.mark_ok(&node),
                    Err(_) => client.mark_failed(&node).await,
                }
                (j, r.map(|r| r.bytes))
            });
        };
        for _ in 0..k {
            if let Some(j) = queue.pop_front() {
                start(j, &mut set);
            }
        }
        let mut got: Vec<(usize, Vec<u8>)> = Vec::with_capacity(k);
        let mut errors = Vec::new();
        while got.len() < k {
            match tokio::time::timeout(HEDGE_AFTER, set.join_next()).await {
                Ok(Some(Ok((j, Ok(bytes))))) if bytes.len() == len => got.push((j, bytes)),
                Ok(Some(Ok((j, r)))) => {
                    errors.push(match r {
                        Ok(b) => format!("shard {j}: {} bytes for a {len}-byte range", b.len()),
                        Err(e) => format!("shard {j}: {e}"),
                    });
                    if let Some(next) = queue.pop_front() {
                        start(next, &mut set);
                    }
                }
                Ok(Some(Err(e))) => errors.push(e.to_string()),
                Ok(None) => break,
                Err(_) => {
                    if let Some(next) = queue.pop_front() {
                        start(next, &mut set);
                    }
                }
            }
        }
        set.abort_all();
        if got.len() < k {
            return Err(Error::Unavailable(format!(
                "segment {s}: bytes {g0}..{g1} of only {} of {} other shards could be fetched and {k} are needed ({})",
                got.len(),
                total - 1,
                errors.join("; ")
            )));
        }
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
        let params = match m.decoder_params() {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let seg_size = m.segment_size;
        let first = (start / seg_size) as usize;
        let last = ((end - 1) / seg_size) as usize;
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
                    let mut decoder = Decoder::new(params)?;
                    Ok((0, ctx.fetch_segment(&ds, s, &mut decoder).await?))
                } else {
                    Ok((a, ctx.fetch_segment_range(&ds, s, a, b).await?))
                }
            })
        };
        let mut next = Some(fetch(first));
        for s in first..=last {
            let current = next.take().expect("prefetched");
            if s < last {
                next = Some(fetch(s + 1));
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
}
