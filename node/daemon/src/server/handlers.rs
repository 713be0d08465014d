//! One handler per request kind, run after [`super::authz`] said yes and a
//! slot was free. Shard bytes move between the QUIC stream and the disk
//! through a small bounded channel to a blocking thread, so that neither a
//! slow disk nor hashing stalls the async workers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use cairn_proof::{Challenge, GROUP_LEN, ShardId};
use cairn_proto::wire::{
    ErrorCode, InventoryEntry, MAX_INVENTORY_PAGE, MAX_MANIFEST_LEN, MAX_NODES_REPLY,
    MAX_PLACEMENT_LEN, Response,
};
use cairn_proto::{Cid, Grant, Manifest, NodeId, Placement};
use cairn_store::{StoreError, unix_secs};
use iroh::endpoint::{RecvStream, SendStream};
use tokio::sync::mpsc;

use super::authz;
use super::{AuditRefusal, ProverAction, RecordPermit, Refusal, Server, reply};
use crate::registry::Member;

/// Bytes per chunk between disk and stream.
const IO_CHUNK: usize = 256 * 1024;
/// A body that sends nothing for this long is dropped and its slot freed.
pub const BODY_IDLE: Duration = Duration::from_secs(10);
/// The slowest a body may arrive: after a grace of `3 x BODY_IDLE`, a body
/// must keep up this many bytes per second of the time the node has waited
/// for it (a 2 MiB shard: 62 s at most; a 2 Mbit/s home uplink sends it in
/// 8 s). So a peer trickling a byte at a time holds a slot about 30 s, not
/// the minutes a large announced length would buy, and a slot held for
/// `t` seconds has cost its holder `(t - 30 s) x BODY_MIN_RATE` bytes sent.
pub const BODY_MIN_RATE: u64 = 64 << 10;

/// How long a body of `len` bytes takes at the slowest pace a node allows
/// (the sender's client waits as long for the verdict on it; a node's own
/// waits, for its disk or its bandwidth cap, come on top).
pub(crate) fn body_allowance(len: u64) -> Duration {
    3 * BODY_IDLE + Duration::from_secs(len / BODY_MIN_RATE)
}

/// The pace a body is held to: the time spent waiting for its bytes (not
/// the node's own waits, for its disk or its bandwidth cap) against the
/// bytes received. A pure account, so tests drive it without a clock.
#[derive(Debug, Default)]
pub(crate) struct BodyPace {
    waited: Duration,
}

impl BodyPace {
    /// How long to wait for more of a body of which `received` bytes came:
    /// at most [`BODY_IDLE`], and no longer than keeps it on pace (zero when
    /// it is behind: bytes already arrived are still taken).
    pub(crate) fn next_wait(&self, received: u64) -> Duration {
        let earned =
            3 * BODY_IDLE + Duration::from_secs_f64(received as f64 / BODY_MIN_RATE as f64);
        BODY_IDLE.min(earned.saturating_sub(self.waited))
    }

    /// Counts a wait for the body.
    pub(crate) fn waited(&mut self, d: Duration) {
        self.waited += d;
    }

    /// Why the body was refused for its pace.
    pub(crate) fn too_slow(received: u64, len: u64) -> String {
        format!(
            "{received} of {len} bytes arrived, too slowly (a body may idle {BODY_IDLE:?} and, after its first {:?}, must keep up {BODY_MIN_RATE} bytes/s)",
            3 * BODY_IDLE
        )
    }
}

/// Waits for the next chunk of a body as its pace allows; `None` when it
/// fell behind or idled.
async fn next_chunk(
    recv: &mut RecvStream,
    pace: &mut BodyPace,
    received: u64,
    want: usize,
) -> Option<Result<Option<Bytes>, iroh::endpoint::ReadError>> {
    let started = tokio::time::Instant::now();
    let read = tokio::time::timeout(pace.next_wait(received), recv.read_chunk(want)).await;
    pace.waited(started.elapsed());
    read.ok()
}

/// One request being answered.
pub(super) struct Handler<'a> {
    pub server: &'a Server,
    pub peer: NodeId,
    pub send: &'a mut SendStream,
    pub recv: &'a mut RecvStream,
}

fn write_err(e: iroh::endpoint::WriteError) -> Refusal {
    Refusal::new(ErrorCode::Internal, e.to_string())
}

/// Hands a piece of a reply to the stream, which the peer must make room
/// for within a body's idle allowance: a reader that stops reading loses
/// the stream (reset), and the slot and buffers its request held go with
/// it instead of staying as long as it keeps the connection alive.
async fn send_piece(send: &mut SendStream, piece: Bytes) -> Result<(), Refusal> {
    match tokio::time::timeout(BODY_IDLE, send.write_chunk(piece)).await {
        Ok(r) => r.map_err(write_err),
        Err(_) => {
            let _ = send.reset(2u32.into());
            Err(Refusal::new(
                ErrorCode::Malformed,
                format!("the reader took nothing for {BODY_IDLE:?}; the reply was cut"),
            ))
        }
    }
}

impl Handler<'_> {
    async fn respond(&mut self, r: &Response) -> Result<(), Refusal> {
        reply(self.send, r, &self.peer)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
    }

    /// A `Blob` header, then the bytes it announces.
    async fn respond_blob(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        self.respond(&Response::Blob {
            len: bytes.len() as u64,
        })
        .await?;
        self.server.bandwidth.up.take(bytes.len()).await;
        for piece in bytes.chunks(IO_CHUNK) {
            send_piece(self.send, Bytes::copy_from_slice(piece)).await?;
        }
        self.server
            .metrics
            .transfer("out", "record", bytes.len() as u64);
        Ok(())
    }

    pub async fn info(mut self) -> Result<(), Refusal> {
        let info = self.server.info();
        self.respond(&Response::Info(info)).await
    }

    pub async fn put_shard(mut self, owner: NodeId, id: ShardId, len: u64) -> Result<(), Refusal> {
        let server = self.server;
        let max = server.config.limits.max_shard_size.0;
        if len > max {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("shard of {len} bytes exceeds this node's limit of {max} bytes"),
            ));
        }
        let disk = len + cairn_proof::outboard_len(len);
        let quota = server
            .config
            .limits
            .quota_per_peer
            .bytes(server.config.total_capacity());
        let usage = server.store.peer_usage(&owner)?;
        if !server.store.is_owner(&id, &owner)? && usage + disk > quota {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!("peer quota of {quota} bytes would be exceeded ({usage} used)"),
            ));
        }
        // An owner putting a shard it already holds here: nothing to send.
        // Anyone else proves they have the bytes by sending them (verified
        // like any put; the commit keeps the copy already here and adds the
        // new owner): a claim alone would let a member read a shard it
        // never had, and a miner rebuild one it threw away.
        if server.store.is_owner(&id, &owner)? && server.store.has_shard(&id)? {
            let _ = self.recv.stop(0u32.into());
            return self.respond(&Response::Ok).await;
        }
        let writer = server.store.begin_write(id, len, owner)?;
        // The stream yields a packet's worth at a time; the disk side gets
        // batches of up to IO_CHUNK (one thread hop, one write and one
        // SIMD-wide hash update each instead of hundreds). A batch is
        // allocated when its first bytes arrive: a put holds at most the
        // batch being filled, two queued and one being written.
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
        let disk_task = tokio::task::spawn_blocking(move || -> Result<Duration, StoreError> {
            let mut writer = writer;
            while let Some(chunk) = rx.blocking_recv() {
                writer.write(&chunk)?;
            }
            if writer.written() != writer.len() {
                // Sender stopped early: dropping the writer removes the temporary.
                return Err(StoreError::IncompleteWrite {
                    declared: writer.len(),
                    got: writer.written(),
                });
            }
            let started = std::time::Instant::now();
            writer.commit().map(|()| started.elapsed())
        });
        let mut received = 0u64;
        let mut stream_error = None;
        let mut pace = BodyPace::default();
        let mut batch = Vec::new();
        while received < len {
            let want = ((len - received) as usize).min(IO_CHUNK - batch.len());
            let Some(read) = next_chunk(self.recv, &mut pace, received, want).await else {
                stream_error = Some(BodyPace::too_slow(received, len));
                break;
            };
            match read {
                Ok(Some(chunk)) => {
                    server.bandwidth.down.take(chunk.len()).await;
                    if batch.is_empty() {
                        batch.reserve_exact(((len - received) as usize).min(IO_CHUNK));
                    }
                    received += chunk.len() as u64;
                    batch.extend_from_slice(&chunk);
                    if batch.len() < IO_CHUNK && received < len {
                        continue;
                    }
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        break; // disk side failed; its error is reported below
                    }
                }
                Ok(None) => {
                    stream_error = Some(format!(
                        "stream ended after {received} of {len} bytes (truncated)"
                    ));
                    break;
                }
                Err(e) => {
                    stream_error = Some(format!(
                        "stream failed after {received} of {len} bytes: {e}"
                    ));
                    break;
                }
            }
        }
        if stream_error.is_none()
            && received == len
            && let Err(r) = expect_end(self.recv).await
        {
            stream_error = Some(r.message);
        }
        drop(tx);
        let disk_result = disk_task.await?;
        if let Some(msg) = stream_error {
            return Err(Refusal::new(ErrorCode::Malformed, msg));
        }
        server.metrics.commit(disk_result?);
        server.metrics.transfer("in", "shard", len);
        tracing::debug!(shard = %id, len, owner = %owner.fmt_short(), "stored shard");
        self.respond(&Response::Ok).await
    }

    pub async fn get_shard(
        mut self,
        member: &Member,
        id: ShardId,
        offset: u64,
        length: u64,
        grant: Option<&Grant>,
    ) -> Result<(), Refusal> {
        let owners = self.server.store.owners(&id)?;
        if owners.is_empty() {
            return Err(StoreError::NotFound(id).into());
        }
        authz::may_read_shard(member, &self.peer, &id, &owners, grant, unix_secs())?;
        // One blocking hop opens the shard, reads its outboard and, for a
        // range of at most IO_CHUNK (a ranged read's group), its bytes: a
        // small read costs one thread hand-off, not three.
        let store = Arc::clone(&self.server.store);
        let (file, outboard, span, head) = tokio::task::spawn_blocking(move || {
            let file = store.open_shard(&id)?;
            let span = shard_span(file.len(), offset, length)?;
            let outboard = file.outboard()?;
            let head = if span.1 - span.0 <= IO_CHUNK as u64 {
                Some(file.read_vec(span.0, (span.1 - span.0) as usize)?)
            } else {
                None
            };
            Ok::<_, Refusal>((file, outboard, span, head))
        })
        .await??;
        let (start, end) = span;
        let shard_len = file.len();
        self.respond(&Response::ShardData {
            shard_len,
            start,
            length: end - start,
            outboard_len: outboard.len() as u64,
        })
        .await?;
        let server: &Server = self.server;
        // Owned buffers go to the stream as they are (`write_chunk`), not
        // copied into its send buffer.
        let outboard_len = outboard.len();
        server.bandwidth.up.take(outboard_len).await;
        send_piece(self.send, outboard.into()).await?;
        let metrics = &server.metrics;
        metrics.transfer("out", "shard", outboard_len as u64);
        if let Some(buf) = head {
            let n = buf.len();
            server.bandwidth.up.take(n).await;
            send_piece(self.send, buf.into()).await?;
            metrics.transfer("out", "shard", n as u64);
            return Ok(());
        }
        // A blocking reader feeds a bounded channel; the stream drains it.
        let (tx, mut rx) = mpsc::channel::<Result<Vec<u8>, StoreError>>(4);
        let f = Arc::new(file);
        let reader = tokio::task::spawn_blocking(move || {
            let mut pos = start;
            while pos < end {
                let n = ((end - pos) as usize).min(IO_CHUNK);
                let r = f.read_vec(pos, n);
                let failed = r.is_err();
                if tx.blocking_send(r).is_err() || failed {
                    return;
                }
                pos += n as u64;
            }
        });
        while let Some(chunk) = rx.recv().await {
            match chunk {
                Ok(buf) => {
                    let n = buf.len();
                    server.bandwidth.up.take(n).await;
                    send_piece(self.send, buf.into()).await?;
                    metrics.transfer("out", "shard", n as u64);
                }
                Err(e) => {
                    // Mid-stream: the header is out, so reset the stream; the reader sees a short body.
                    tracing::error!(shard = %id, error = %e, "read failed while serving");
                    let _ = self.send.reset(1u32.into());
                    break;
                }
            }
        }
        let _ = reader.await;
        Ok(())
    }

    pub async fn challenge(
        mut self,
        id: ShardId,
        len: u64,
        nonce: [u8; 32],
        samples: u16,
    ) -> Result<(), Refusal> {
        let challenge = Challenge::new(id, len, nonce, samples)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        let store = Arc::clone(&self.server.store);
        let ch = challenge;
        let honest = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Refusal> {
            let f = store.open_shard(&id)?;
            if f.len() != len {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("shard {id} has {} bytes, the challenge says {len}", f.len()),
                ));
            }
            cairn_proof::prove(&ch, &f.data(), &f.outboard_region())
                .map_err(|e| Refusal::from(StoreError::from(e)))
        })
        .await?;
        let proof = match &self.server.prover {
            None => honest?,
            Some(prover) => {
                let shards: &cairn_store::Store = &self.server.store;
                let mut action = prover.answer(&challenge, shards, honest.map_err(|r| r.message));
                loop {
                    match action {
                        ProverAction::Reply(p) => break p,
                        ProverAction::NotFound => {
                            return Err(StoreError::NotFound(id).into());
                        }
                        ProverAction::Stall(d) => {
                            tokio::time::sleep(d).await;
                            return Err(Refusal::new(ErrorCode::Busy, "stalled"));
                        }
                        ProverAction::Hangup => {
                            let _ = self.send.reset(0u32.into());
                            return Ok(());
                        }
                        ProverAction::Later(f) => action = f.await,
                    }
                }
            }
        };
        let len = proof.len() as u64;
        // Never held back by the upload cap: audits pass on a capped line.
        self.server.bandwidth.up.charge(proof.len());
        self.respond(&Response::Proof(proof)).await?;
        self.server.metrics.transfer("out", "proof", len);
        Ok(())
    }

    pub async fn inventory(mut self, after: Option<ShardId>, limit: u32) -> Result<(), Refusal> {
        let limit = limit.clamp(1, MAX_INVENTORY_PAGE) as usize;
        let mut page = self.server.store.inventory(after.as_ref(), limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let entries = page
            .into_iter()
            .map(|(id, m)| InventoryEntry {
                id,
                len: m.len,
                state: m.state,
            })
            .collect();
        self.respond(&Response::Inventory { entries, more }).await
    }

    pub async fn has(mut self, ids: &[ShardId]) -> Result<(), Refusal> {
        let mut bits = Vec::with_capacity(ids.len());
        for id in ids {
            bits.push(self.server.store.has_shard(id)?);
        }
        self.respond(&Response::Has(bits)).await
    }

    pub async fn put_manifest(
        mut self,
        member: &Member,
        cid: [u8; 32],
        len: u64,
    ) -> Result<(), Refusal> {
        if len > MAX_MANIFEST_LEN {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("manifest of {len} bytes exceeds {MAX_MANIFEST_LEN}"),
            ));
        }
        let store = &self.server.store;
        // Before the body. A manifest held here already can only be that one
        // (its bytes must hash to the CID), so its owner is known; anyone but
        // a validator can only send its own (`may_store_manifest`), so the
        // quota it is charged to is known.
        match store.manifest_owner(&cid)? {
            Some(owner) => authz::may_store_manifest(member, &self.peer, &owner)?,
            None if !member.is_validator() => self.within_quota(&self.peer, len)?,
            None => {}
        }
        let (bytes, _room) = read_record_body(self.server, &self.peer, self.recv, len).await?;
        self.server.bandwidth.down.take(bytes.len()).await;
        if *blake3::hash(&bytes).as_bytes() != cid {
            return Err(Refusal::new(
                ErrorCode::HashMismatch,
                "manifest bytes do not hash to the claimed content id",
            ));
        }
        let manifest = Manifest::decode(&bytes)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        authz::may_store_manifest(member, &self.peer, &manifest.owner)?;
        // Read again: stored meanwhile by another put, it is not charged again.
        if store.manifest_owner(&cid)?.is_none() {
            self.within_quota(&manifest.owner, len)?;
        }
        store.put_manifest(&cid, &bytes, &manifest.owner, true)?;
        self.server.metrics.transfer("in", "record", len);
        self.respond(&Response::Ok).await
    }

    /// Refuses when `len` bytes more for `owner` would pass the quota each
    /// peer has here.
    fn within_quota(&self, owner: &NodeId, len: u64) -> Result<(), Refusal> {
        let config = &self.server.config;
        let quota = config.limits.quota_per_peer.bytes(config.total_capacity());
        let usage = self.server.store.peer_usage(owner)?;
        if usage.saturating_add(len) > quota {
            return Err(Refusal::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the owner {}'s quota of {quota} bytes would be exceeded ({usage} used)",
                    owner.fmt_short()
                ),
            ));
        }
        Ok(())
    }

    pub async fn get_manifest(mut self, cid: [u8; 32]) -> Result<(), Refusal> {
        match self.server.store.get_manifest(&cid)? {
            Some((_, bytes)) => self.respond_blob(&bytes).await,
            None => Err(Refusal::new(
                ErrorCode::NotFound,
                "manifest not stored here",
            )),
        }
    }

    pub async fn put_placement(
        mut self,
        member: &Member,
        cid: [u8; 32],
        len: u64,
    ) -> Result<(), Refusal> {
        if len > MAX_PLACEMENT_LEN {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("placement of {len} bytes"),
            ));
        }
        let store = &self.server.store;
        let owner = authz::may_place(member, &self.peer, store.manifest_owner(&cid)?)?;
        // A placement is charged to its owner; from the owner itself, the
        // quota is checked before the body. (A validator re-placing another's
        // dataset is not held to the owner's quota: repair must not fail.)
        if !member.is_validator() {
            self.within_quota(&owner, len)?;
        }
        let (bytes, _room) = read_record_body(self.server, &self.peer, self.recv, len).await?;
        self.server.bandwidth.down.take(bytes.len()).await;
        let p = Placement::decode(&bytes)
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        if p.cid.0 != cid {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "placement is for another CID",
            ));
        }
        // Read again: the manifest may have gone while the body came.
        let manifest_owner = store.manifest_owner(&cid)?;
        authz::may_store_placement(member, &self.peer, &p, manifest_owner)?;
        store.put_placement(&cid, p.version, &p.owner, &bytes, true)?;
        self.server.metrics.transfer("in", "record", len);
        self.respond(&Response::Ok).await
    }

    pub async fn get_placement(mut self, cid: [u8; 32]) -> Result<(), Refusal> {
        match self.server.store.get_placement(&cid)? {
            Some(bytes) => self.respond_blob(&bytes).await,
            None => Err(Refusal::new(
                ErrorCode::NotFound,
                "no placement stored here",
            )),
        }
    }

    pub async fn delete_shard(mut self, owner: NodeId, id: ShardId) -> Result<(), Refusal> {
        self.server.store.delete(&id, &owner, false)?;
        self.respond(&Response::Ok).await
    }

    pub async fn delete_manifest(mut self, cid: [u8; 32]) -> Result<(), Refusal> {
        let store = &self.server.store;
        authz::may_delete_records(&self.peer, store.records_owner(&cid)?)?;
        store.delete_records(&cid)?;
        self.respond(&Response::Ok).await
    }

    /// An audit request (or, with `release`, its end) for a validator.
    pub async fn audit(mut self, cid: [u8; 32], release: bool) -> Result<(), Refusal> {
        let Some(validator) = &self.server.validator else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "this node is not a validator; send audit requests to a validator",
            ));
        };
        let r = if release {
            validator.release(self.peer, Cid(cid))
        } else {
            validator.audit(self.peer, Cid(cid))
        };
        match r {
            Ok(()) => self.respond(&Response::Ok).await,
            Err(AuditRefusal::Busy(m)) => Err(Refusal::new(ErrorCode::Busy, m)),
            Err(AuditRefusal::Refused(m)) => Err(Refusal::new(ErrorCode::Forbidden, m)),
        }
    }

    pub async fn vetted(mut self) -> Result<(), Refusal> {
        let Some(validator) = &self.server.validator else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "this node is not a validator; ask a validator which miners are vetted",
            ));
        };
        let nodes = validator
            .vetted()
            .into_iter()
            .take(MAX_NODES_REPLY)
            .map(|n| *n.as_bytes())
            .collect();
        self.respond(&Response::Nodes(nodes)).await
    }

    /// Dials the asker back as a stranger would (see
    /// [`crate::net::reach::dial_back`]): whether it is reachable from
    /// outside without a relay. Validators do it, within [`super::DialBacks`].
    pub async fn dial_back(mut self, member: &Member) -> Result<(), Refusal> {
        if self.server.validator.is_none() {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "this node is not a validator; ask a validator to dial back",
            ));
        }
        let _turn = self.server.dial_backs.turn(&self.peer)?;
        let report = crate::net::reach::dial_back(member, &self.server.config.network).await;
        tracing::debug!(peer = %self.peer.fmt_short(), reached = report.reached, detail = %report.detail, "dialed back");
        self.respond(&Response::DialedBack(report)).await
    }

    /// The asker's own verdicts: the subject is the authenticated peer.
    pub async fn verdicts(mut self) -> Result<(), Refusal> {
        let Some(validator) = &self.server.validator else {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "this node is not a validator; ask a validator for your verdicts",
            ));
        };
        let report = validator.verdicts(self.peer);
        self.respond(&Response::Verdicts(report)).await
    }
}

/// The bytes of a `length`-byte read at `offset` of a shard, widened to
/// whole chunk groups so that the reader can verify each against the
/// outboard (`u64::MAX` reads to the end).
fn shard_span(shard_len: u64, offset: u64, length: u64) -> Result<(u64, u64), Refusal> {
    if offset > shard_len {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("offset {offset} is past the end of the {shard_len}-byte shard"),
        ));
    }
    let end = if length == u64::MAX {
        shard_len
    } else {
        offset.saturating_add(length).min(shard_len)
    };
    let g = GROUP_LEN as u64;
    let start = offset / g * g;
    let end = if end == shard_len {
        shard_len
    } else {
        end.div_ceil(g).saturating_mul(g).min(shard_len)
    };
    Ok((start, end))
}

/// Reads a record's body of `len` bytes (bounded by the caller), growing
/// the buffer as bytes arrive: a peer that announces much and sends little
/// costs what it sent. Once its first bytes come, the body takes its room
/// among the records being received (`Server::record_room`), held with the
/// bytes until the caller is done with them; a body that never starts
/// holds none. A body idle for [`BODY_IDLE`], or behind its [`BodyPace`],
/// is refused.
async fn read_record_body(
    server: &Server,
    peer: &NodeId,
    recv: &mut RecvStream,
    len: u64,
) -> Result<(Vec<u8>, Option<RecordPermit>), Refusal> {
    let mut buf = Vec::with_capacity((len as usize).min(64 * 1024));
    let mut pace = BodyPace::default();
    let mut room = None;
    while (buf.len() as u64) < len {
        let want = ((len - buf.len() as u64) as usize).min(IO_CHUNK);
        match next_chunk(recv, &mut pace, buf.len() as u64, want).await {
            None => {
                return Err(Refusal::new(
                    ErrorCode::Malformed,
                    BodyPace::too_slow(buf.len() as u64, len),
                ));
            }
            Some(Ok(Some(chunk))) => {
                if room.is_none() {
                    room = Some(server.record_room(peer, len).await?);
                }
                buf.extend_from_slice(&chunk);
            }
            Some(_) => {
                return Err(Refusal::new(
                    ErrorCode::Malformed,
                    format!("stream ended before the announced {len} bytes"),
                ));
            }
        }
    }
    expect_end(recv).await?;
    Ok((buf, room))
}

/// After the announced bytes the stream must end.
async fn expect_end(recv: &mut RecvStream) -> Result<(), Refusal> {
    let mut probe = [0u8; 1];
    let Ok(read) = tokio::time::timeout(BODY_IDLE, recv.read(&mut probe)).await else {
        return Err(Refusal::new(
            ErrorCode::Malformed,
            "the stream was not finished after the body",
        ));
    };
    match read {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(Refusal::new(
            ErrorCode::Malformed,
            "more bytes than announced after the body",
        )),
        Err(e) => Err(Refusal::new(ErrorCode::Malformed, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a pace: each step waits `secs` and then receives `bytes`;
    /// returns after how many seconds it was refused (a wait it was not
    /// given), if it was.
    fn refused_after(steps: impl IntoIterator<Item = (f64, u64)>) -> Option<f64> {
        let mut pace = BodyPace::default();
        let (mut received, mut clock) = (0u64, 0.0);
        for (secs, bytes) in steps {
            let wait = Duration::from_secs_f64(secs);
            let allowed = pace.next_wait(received);
            if wait > allowed {
                return Some(clock + allowed.as_secs_f64());
            }
            pace.waited(wait);
            clock += secs;
            received += bytes;
        }
        None
    }

    #[test]
    fn a_body_at_the_minimum_rate_is_never_cut() {
        // 64 MiB at exactly the rate: 1,024 s.
        assert_eq!(refused_after((0..1024).map(|_| (1.0, BODY_MIN_RATE))), None);
        // A slow start (27 s of nothing) is forgiven for the grace, then
        // the rate is kept.
        let late = [(9.0, 0), (9.0, 0), (9.0, 0)]
            .into_iter()
            .chain((0..100).map(|_| (1.0, 2 * BODY_MIN_RATE)));
        assert_eq!(refused_after(late), None);
    }

    #[test]
    fn a_trickle_is_cut_after_the_grace_whatever_length_it_announced() {
        let at = refused_after((0..2000).map(|_| (1.0, 1))).expect("refused");
        assert!((30.0..31.0).contains(&at), "refused after {at} s");
        // Silence is cut at the idle limit.
        let at = refused_after([(0.5, 1000), (11.0, 1)]).expect("refused");
        assert!((10.4..10.6).contains(&at), "refused after {at} s");
    }

    #[test]
    fn bytes_sent_ahead_buy_time_at_the_minimum_rate() {
        // 32 MiB at once earns 512 s beyond the grace, spent a byte per 9 s.
        let steps = std::iter::once((0.0, 32 << 20)).chain((0..200).map(|_| (9.0, 1)));
        let at = refused_after(steps).expect("refused");
        assert!((542.0..543.0).contains(&at), "refused after {at} s");
    }

    #[test]
    fn a_body_behind_its_pace_may_take_what_already_arrived() {
        let mut pace = BodyPace::default();
        pace.waited(Duration::from_secs(40));
        assert_eq!(pace.next_wait(0), Duration::ZERO);
        assert_eq!(pace.next_wait(BODY_MIN_RATE * 20), BODY_IDLE);
    }
}
