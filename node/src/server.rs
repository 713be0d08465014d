//! The protocol server: accepts QUIC connections and answers requests.
//!
//! One task per connection, one per stream. Each request is authorized
//! against the registry (shards only from registered peers within their
//! quota, challenges only from validators), bounded by a semaphore per
//! request kind (a burst waits, it does not allocate), and answered with a
//! typed error for anything that goes wrong. Shard bytes move between the
//! QUIC stream and the disk through a small bounded channel to a blocking
//! thread, so that neither slow disks nor hashing stall the async workers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_proof::{Challenge, GROUP_LEN, ShardId};
use iroh::Endpoint;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::manifest::Placement;
use crate::registry::{AnyRegistry, Member, Registry};
use crate::store::{ShardState, Store};
use crate::wire::{
    self, DecodeError, ErrorCode, InventoryEntry, MAX_CONTROL_FRAME, MAX_INVENTORY_PAGE,
    MAX_MANIFEST_LEN, MAX_PLACEMENT_LEN, NodeInfo, ReadFrame, Request, Response,
};
use crate::{Error, NodeId};

/// How long a request may wait for a free slot before it is refused as busy.
const SLOT_WAIT: Duration = Duration::from_secs(30);
/// Bytes per chunk between disk and stream.
const IO_CHUNK: usize = 256 * 1024;

/// Something a validator does with an audit request (the validator installs it).
pub type AuditHook = Arc<dyn Fn(NodeId, [u8; 32]) -> Result<(), String> + Send + Sync>;
/// A validator's scoreboard as JSON (the validator installs it).
pub type ScoresHook = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Answers challenges in place of the honest prover: an extension point for
/// research and for tests that play a cheating miner. Never set by `cairn`.
pub type ProverHook =
    Arc<dyn Fn(&Challenge, &Arc<Store>, Result<Vec<u8>, String>) -> ProverAction + Send + Sync>;

/// What a [`ProverHook`] decides.
pub enum ProverAction {
    /// Send these bytes as the proof.
    Reply(Vec<u8>),
    /// Claim the shard is not here.
    NotFound,
    /// Hold the stream open without answering for this long.
    Stall(Duration),
}

/// Everything a request handler needs.
pub struct NodeState {
    pub node_id: NodeId,
    pub config: Config,
    pub store: Arc<Store>,
    pub registry: AnyRegistry,
    pub audit_hook: Option<AuditHook>,
    pub scores_hook: Option<ScoresHook>,
    pub prover_hook: Option<ProverHook>,
    puts: Semaphore,
    gets: Semaphore,
    challenges: Semaphore,
}

impl NodeState {
    pub fn new(node_id: NodeId, config: Config, store: Arc<Store>, registry: AnyRegistry) -> Self {
        NodeState {
            node_id,
            puts: Semaphore::new(config.limits.max_concurrent_puts),
            gets: Semaphore::new(config.limits.max_concurrent_gets),
            challenges: Semaphore::new(config.limits.max_concurrent_challenges),
            config,
            store,
            registry,
            audit_hook: None,
            scores_hook: None,
            prover_hook: None,
        }
    }

    pub fn info(&self) -> NodeInfo {
        let stats = self.store.stats().unwrap_or_default();
        NodeInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            role: self.config.role.to_string(),
            capacity: stats.capacity,
            used: stats.used_bytes,
            free: self.store.free_bytes().unwrap_or(0),
            shards: stats.shard_count,
        }
    }
}

/// Accepts connections until `shutdown` turns true. Every request task is
/// spawned on `tracker`, so shutdown can wait for requests in flight.
pub async fn serve(
    endpoint: Endpoint,
    state: Arc<NodeState>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let state = Arc::clone(&state);
        let t = tracker.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            match incoming.await {
                Ok(conn) => handle_connection(conn, state, t, sd).await,
                Err(e) => tracing::debug!(error = %e, "incoming connection failed"),
            }
        });
    }
}

async fn handle_connection(
    conn: Connection,
    state: Arc<NodeState>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = conn.remote_id();
    // Membership is looked up once per connection: a registration change
    // takes effect on the peer's next connection.
    let member = match state.registry.member(&peer).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(peer = %peer.fmt_short(), error = %e, "registry lookup failed");
            None
        }
    };
    let member = Arc::new(member);
    tracing::debug!(peer = %peer.fmt_short(), registered = member.is_some(), "connection");
    loop {
        let (send, recv) = tokio::select! {
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        if tracker.is_closed() {
            break;
        }
        let state = Arc::clone(&state);
        let member = Arc::clone(&member);
        tracker.spawn(async move {
            if let Err(e) = handle_stream(&state, peer, &member, send, recv).await {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "stream ended with error");
            }
        });
    }
}

/// A reply that ends the request.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Refusal::new(e.code, e.message)
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::ShardNotFound(_) => ErrorCode::NotFound,
            Error::Full { .. } => ErrorCode::Full,
            Error::HashMismatch { .. } => ErrorCode::HashMismatch,
            Error::Proof(cairn_proof::Error::LengthMismatch { .. }) => ErrorCode::Malformed,
            _ => ErrorCode::Internal,
        };
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "request failed");
        }
        Refusal::new(code, e.to_string())
    }
}

/// A `Blob` header, then the bytes it announces.
async fn reply_blob(send: &mut SendStream, bytes: &[u8]) -> Result<(), Refusal> {
    reply(
        send,
        &Response::Blob {
            len: bytes.len() as u64,
        },
    )
    .await?;
    send.write_all(bytes)
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))
}

async fn reply(send: &mut SendStream, r: &Response) -> crate::Result<()> {
    wire::write_frame(send, &r.encode()).await
}

async fn handle_stream(
    state: &NodeState,
    peer: NodeId,
    member: &Option<Member>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> crate::Result<()> {
    let outcome = match wire::read_frame(&mut recv, MAX_CONTROL_FRAME).await? {
        ReadFrame::End => return Ok(()),
        ReadFrame::TooLarge { len, limit } => Err(Refusal::new(
            ErrorCode::FrameTooLarge,
            format!("frame of {len} bytes exceeds the limit of {limit} bytes"),
        )),
        ReadFrame::Truncated => Err(Refusal::new(
            ErrorCode::Malformed,
            "stream ended inside a frame (truncated)",
        )),
        ReadFrame::Body(body) => match Request::decode(&body) {
            Ok(req) => dispatch(state, peer, member, req, &mut send, &mut recv).await,
            Err(e) => Err(e.into()),
        },
    };
    if let Err(r) = outcome {
        tracing::debug!(peer = %peer.fmt_short(), code = %r.code, message = %r.message, "refused");
        let _ = recv.stop(0u32.into());
        reply(
            &mut send,
            &Response::Error {
                code: r.code,
                message: r.message,
            },
        )
        .await?;
    }
    let _ = send.finish();
    // Wait until the peer has read everything (or gone), so the reply is not cut.
    let _ = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await;
    Ok(())
}

fn require_member<'a>(member: &'a Option<Member>, peer: &NodeId) -> Result<&'a Member, Refusal> {
    member.as_ref().ok_or_else(|| {
        Refusal::new(
            ErrorCode::NotRegistered,
            format!(
                "node {peer} is not registered on this network; register it (`cairn register`, or `cairn init` with the shared registry) and reconnect"
            ),
        )
    })
}

async fn slot<'a>(
    sem: &'a Semaphore,
    what: &str,
) -> Result<tokio::sync::SemaphorePermit<'a>, Refusal> {
    match tokio::time::timeout(SLOT_WAIT, sem.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(Refusal::new(
            ErrorCode::Busy,
            format!("too many {what} in progress; retry later"),
        )),
    }
}

/// The owner a request acts for: the peer, or whom a validator names.
fn acting_owner(
    member: &Member,
    peer: NodeId,
    on_behalf: Option<[u8; 32]>,
) -> Result<NodeId, Refusal> {
    match on_behalf {
        None => Ok(peer),
        Some(b) if member.is_validator() => NodeId::from_bytes(&b)
            .map_err(|_| Refusal::new(ErrorCode::BadRequest, "on_behalf is not a node id")),
        Some(_) => Err(Refusal::new(
            ErrorCode::Forbidden,
            "only validators may act on behalf of another node",
        )),
    }
}

async fn dispatch(
    state: &NodeState,
    peer: NodeId,
    member: &Option<Member>,
    req: Request,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), Refusal> {
    match req {
        Request::Info => {
            reply(send, &Response::Info(state.info())).await?;
            Ok(())
        }
        Request::PutShard { id, len, on_behalf } => {
            let m = require_member(member, &peer)?;
            let owner = acting_owner(m, peer, on_behalf)?;
            put_shard(state, owner, id, len, send, recv).await
        }
        Request::GetShard { id, offset, length } => {
            require_member(member, &peer)?;
            get_shard(state, id, offset, length, send).await
        }
        Request::Challenge {
            id,
            len,
            nonce,
            samples,
        } => {
            let m = require_member(member, &peer)?;
            if !m.is_validator() {
                return Err(Refusal::new(
                    ErrorCode::NotValidator,
                    "challenges are answered for validators only",
                ));
            }
            let _permit = slot(&state.challenges, "challenges").await?;
            let challenge = Challenge::new(id, len, nonce, samples)
                .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
            let store = Arc::clone(&state.store);
            let honest = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, Refusal> {
                let f = store.open_shard(&id)?;
                if f.len() != len {
                    return Err(Refusal::new(
                        ErrorCode::BadRequest,
                        format!("shard {id} has {} bytes, the challenge says {len}", f.len()),
                    ));
                }
                cairn_proof::prove(&challenge, &f.data(), &f.outboard_region())
                    .map_err(|e| Refusal::from(Error::from(e)))
            })
            .await
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
            let proof = match &state.prover_hook {
                None => honest?,
                Some(hook) => match hook(&challenge, &state.store, honest.map_err(|r| r.message)) {
                    ProverAction::Reply(p) => p,
                    ProverAction::NotFound => {
                        return Err(Refusal::new(
                            ErrorCode::NotFound,
                            format!("shard {id} is not stored here"),
                        ));
                    }
                    ProverAction::Stall(d) => {
                        tokio::time::sleep(d).await;
                        return Err(Refusal::new(ErrorCode::Busy, "stalled"));
                    }
                },
            };
            reply(send, &Response::Proof(proof)).await?;
            Ok(())
        }
        Request::Inventory { after, limit } => {
            require_member(member, &peer)?;
            let limit = limit.clamp(1, MAX_INVENTORY_PAGE) as usize;
            let mut page = state.store.inventory(after.as_ref(), limit + 1)?;
            let more = page.len() > limit;
            page.truncate(limit);
            let entries = page
                .into_iter()
                .map(|(id, m)| InventoryEntry {
                    id,
                    len: m.len,
                    state: match m.state {
                        ShardState::Present => 0,
                        ShardState::Lost => 1,
                        ShardState::Corrupt => 2,
                    },
                })
                .collect();
            reply(send, &Response::Inventory { entries, more }).await?;
            Ok(())
        }
        Request::PutManifest { cid, len } => {
            require_member(member, &peer)?;
            if len > MAX_MANIFEST_LEN {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("manifest of {len} bytes exceeds {MAX_MANIFEST_LEN}"),
                ));
            }
            let _permit = slot(&state.puts, "puts").await?;
            let bytes = read_exact_body(recv, len).await?;
            let actual = *blake3::hash(&bytes).as_bytes();
            if actual != cid {
                return Err(Refusal::new(
                    ErrorCode::HashMismatch,
                    "manifest bytes do not hash to the claimed content id",
                ));
            }
            let used = state.store.stats()?.manifest_bytes;
            if used + len > state.config.capacity.0 / 8 + (64 << 20) {
                return Err(Refusal::new(ErrorCode::Full, "manifest space is full"));
            }
            state.store.put_manifest(&cid, &bytes, &peer)?;
            reply(send, &Response::Ok).await?;
            Ok(())
        }
        Request::GetManifest { cid } => {
            require_member(member, &peer)?;
            match state.store.get_manifest(&cid)? {
                Some((_, bytes)) => reply_blob(send, &bytes).await,
                None => Err(Refusal::new(
                    ErrorCode::NotFound,
                    "manifest not stored here",
                )),
            }
        }
        Request::DeleteShard { id, on_behalf } => {
            let m = require_member(member, &peer)?;
            let owner = acting_owner(m, peer, on_behalf)?;
            match state.store.delete(&id, &owner, false) {
                Ok(_) => {
                    reply(send, &Response::Ok).await?;
                    Ok(())
                }
                Err(Error::Other(msg)) => Err(Refusal::new(ErrorCode::Forbidden, msg)),
                Err(e) => Err(e.into()),
            }
        }
        Request::DeleteManifest { cid } => {
            let m = require_member(member, &peer)?;
            // The pinner (owner in the placement held here) may delete too, even
            // when a validator re-stored the manifest after a repair.
            let placement_owner = state
                .store
                .get_placement(&cid)?
                .and_then(|b| Placement::decode(&b).ok())
                .map(|p| p.owner);
            let may = m.is_validator() || placement_owner == Some(peer);
            let result = state.store.delete_manifest(&cid, &peer, may);
            if result.is_ok() {
                state.store.delete_placement(&cid)?;
            }
            match result {
                Ok(_) => {
                    reply(send, &Response::Ok).await?;
                    Ok(())
                }
                Err(Error::Other(msg)) => Err(Refusal::new(ErrorCode::Forbidden, msg)),
                Err(e) => Err(e.into()),
            }
        }
        Request::PutPlacement { cid, len } => {
            let m = require_member(member, &peer)?;
            if len > MAX_PLACEMENT_LEN {
                return Err(Refusal::new(
                    ErrorCode::TooLarge,
                    format!("placement of {len} bytes"),
                ));
            }
            let bytes = read_exact_body(recv, len).await?;
            let p = Placement::decode(&bytes)
                .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
            if p.cid.0 != cid {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "placement is for another CID",
                ));
            }
            // The pinner places its own data; validators re-place it after repair.
            let signer_ok = p.signer == peer && (p.signer == p.owner || m.is_validator());
            if !signer_ok {
                return Err(Refusal::new(
                    ErrorCode::Forbidden,
                    "a placement must be signed and sent by its owner or by a validator",
                ));
            }
            match state.store.put_placement(&cid, p.version, &p.owner, &bytes) {
                Ok(_) => {
                    reply(send, &Response::Ok).await?;
                    Ok(())
                }
                Err(Error::Other(msg)) => Err(Refusal::new(ErrorCode::Forbidden, msg)),
                Err(e) => Err(e.into()),
            }
        }
        Request::GetPlacement { cid } => {
            require_member(member, &peer)?;
            match state.store.get_placement(&cid)? {
                Some(bytes) => reply_blob(send, &bytes).await,
                None => Err(Refusal::new(
                    ErrorCode::NotFound,
                    "no placement stored here",
                )),
            }
        }
        Request::Has { ids } => {
            require_member(member, &peer)?;
            let mut bits = Vec::with_capacity(ids.len());
            for id in &ids {
                bits.push(state.store.has_shard(id)?);
            }
            reply(send, &Response::Has(bits)).await?;
            Ok(())
        }
        Request::Scores => {
            require_member(member, &peer)?;
            let Some(hook) = &state.scores_hook else {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "this node is not a validator",
                ));
            };
            let json = serde_json::to_vec(&hook()).unwrap_or_default();
            reply(
                send,
                &Response::Blob {
                    len: json.len() as u64,
                },
            )
            .await?;
            send.write_all(&json)
                .await
                .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
            Ok(())
        }
        Request::Audit { cid } => {
            require_member(member, &peer)?;
            let Some(hook) = &state.audit_hook else {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    "this node is not a validator; send audit requests to a validator",
                ));
            };
            hook(peer, cid).map_err(|m| Refusal::new(ErrorCode::BadRequest, m))?;
            reply(send, &Response::Ok).await?;
            Ok(())
        }
    }
}

async fn read_exact_body(recv: &mut RecvStream, len: u64) -> Result<Vec<u8>, Refusal> {
    let mut buf = vec![0u8; len as usize];
    recv.read_exact(&mut buf).await.map_err(|_| {
        Refusal::new(
            ErrorCode::Malformed,
            format!("stream ended before the announced {len} bytes"),
        )
    })?;
    expect_end(recv).await?;
    Ok(buf)
}

/// After the announced bytes the stream must end.
async fn expect_end(recv: &mut RecvStream) -> Result<(), Refusal> {
    let mut probe = [0u8; 1];
    match recv.read(&mut probe).await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(Refusal::new(
            ErrorCode::Malformed,
            "more bytes than announced after the body",
        )),
        Err(e) => Err(Refusal::new(ErrorCode::Malformed, e.to_string())),
    }
}

async fn put_shard(
    state: &NodeState,
    owner: NodeId,
    id: ShardId,
    len: u64,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), Refusal> {
    let max = state.config.limits.max_shard_size.0;
    if len > max {
        return Err(Refusal::new(
            ErrorCode::TooLarge,
            format!("shard of {len} bytes exceeds this node's limit of {max} bytes"),
        ));
    }
    let disk = len + cairn_proof::outboard_len(len);
    let quota = state.config.limits.quota_per_peer.0;
    let usage = state.store.peer_usage(&owner)?;
    if !state.store.is_owner(&id, &owner)? && usage + disk > quota {
        return Err(Refusal::new(
            ErrorCode::QuotaExceeded,
            format!("peer quota of {quota} bytes would be exceeded ({usage} used)"),
        ));
    }
    // Already here: take a reference, tell the sender to stop sending.
    if state.store.add_owner(&id, &owner)? {
        let _ = recv.stop(0u32.into());
        reply(send, &Response::Ok).await?;
        return Ok(());
    }
    let _permit = slot(&state.puts, "puts").await?;
    let writer = state.store.begin_write(id, len, owner)?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let disk_task = tokio::task::spawn_blocking(move || -> crate::Result<()> {
        let mut writer = writer;
        while let Some(chunk) = rx.blocking_recv() {
            writer.write(&chunk)?;
        }
        if writer.written() != writer.len() {
            // Sender stopped early: dropping the writer removes the temporary.
            return Err(Error::Protocol(format!(
                "stream ended after {} of {} bytes",
                writer.written(),
                writer.len()
            )));
        }
        writer.commit()
    });
    let mut received = 0u64;
    let mut stream_error = None;
    while received < len {
        let want = ((len - received) as usize).min(IO_CHUNK);
        match recv.read_chunk(want).await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
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
        && let Err(r) = expect_end(recv).await
    {
        stream_error = Some(r.message);
    }
    drop(tx);
    let disk_result = disk_task
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    if let Some(msg) = stream_error {
        return Err(Refusal::new(ErrorCode::Malformed, msg));
    }
    disk_result?;
    tracing::debug!(shard = %id, len, owner = %owner.fmt_short(), "stored shard");
    reply(send, &Response::Ok).await?;
    Ok(())
}

async fn get_shard(
    state: &NodeState,
    id: ShardId,
    offset: u64,
    length: u64,
    send: &mut SendStream,
) -> Result<(), Refusal> {
    let _permit = slot(&state.gets, "gets").await?;
    let store = Arc::clone(&state.store);
    let file = tokio::task::spawn_blocking(move || store.open_shard(&id))
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))??;
    let shard_len = file.len();
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
    // Whole chunk groups, so the reader can verify each against the outboard.
    let g = GROUP_LEN as u64;
    let start = offset / g * g;
    let end = if end == shard_len {
        shard_len
    } else {
        end.div_ceil(g).saturating_mul(g).min(shard_len)
    };
    let file = Arc::new(file);
    let f = Arc::clone(&file);
    let outboard = tokio::task::spawn_blocking(move || f.outboard())
        .await
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))??;
    reply(
        send,
        &Response::ShardData {
            shard_len,
            start,
            length: end - start,
            outboard_len: outboard.len() as u64,
        },
    )
    .await?;
    let write_err =
        |e: iroh::endpoint::WriteError| Refusal::new(ErrorCode::Internal, e.to_string());
    send.write_all(&outboard).await.map_err(write_err)?;
    // A blocking reader feeds a bounded channel; the stream drains it.
    let (tx, mut rx) = mpsc::channel::<crate::Result<Vec<u8>>>(4);
    let f = Arc::clone(&file);
    let reader = tokio::task::spawn_blocking(move || {
        let mut pos = start;
        while pos < end {
            let n = ((end - pos) as usize).min(IO_CHUNK);
            let mut buf = vec![0u8; n];
            let r = f.read_at(&mut buf, pos).map(|_| buf);
            let failed = r.is_err();
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
            pos += n as u64;
        }
    });
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Ok(buf) => send.write_all(&buf).await.map_err(write_err)?,
            Err(e) => {
                // Mid-stream: the header is out, so reset the stream; the reader sees a short body.
                tracing::error!(shard = %id, error = %e, "read failed while serving");
                let _ = send.reset(1u32.into());
                break;
            }
        }
    }
    let _ = reader.await;
    Ok(())
}
