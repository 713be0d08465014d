//! Reading a dataset back: any k shards of a segment (data shards first, so
//! a healthy dataset needs no decoding), every byte verified against the
//! shard ids as it streams in, a hedge with one more shard when a miner is
//! slow, decoding, the segment's hash checked, and the next segment fetched
//! while the current one is sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_erasure::Decoder;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{Dataset, Datasets};
use crate::error::{Error, Result};

/// A shard fetch slower than this gets a hedge: one more shard is asked for.
const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// A shard fetch is abandoned after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

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
        Ok(bytes)
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
        let fetch = |s: usize| {
            let (ctx, ds) = (Arc::clone(&ctx), ds.clone());
            tokio::spawn(async move {
                let mut decoder = Decoder::new(params)?;
                ctx.fetch_segment(&ds, s, &mut decoder).await
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
                    let _ = tx.send(Err(Error::task(e))).await;
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
}
