//! The protocol server: accepts QUIC connections and answers requests.
//!
//! One task per connection, one per stream. A request is decoded (bounded
//! before anything is allocated), authorized by the one table in [`authz`],
//! given a slot of its class (a burst waits, it does not allocate), and
//! answered by its handler in [`handlers`]; anything that goes wrong is a
//! typed [`ErrorCode`] reply chosen from the error's variant.

pub mod admission;
pub mod authz;
pub(crate) mod handlers;
pub(crate) mod record_budget;

use std::sync::Arc;
use std::time::Duration;

use cairn_proof::Challenge;
use cairn_proto::wire::{
    DecodeError, ErrorCode, MAX_CONTROL_FRAME, MAX_MANIFEST_LEN, MAX_PLACEMENT_LEN, NodeInfo,
    Request, Response,
};
use cairn_proto::{Cid, NodeId, Role};
use cairn_store::{Store, StoreError};
use iroh::Endpoint;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::net::bandwidth::Bandwidth;
use crate::net::frames::{ReadFrame, read_frame, write_frame};
use crate::registry::{AnyRegistry, Member, Registry};

use self::authz::Slot;
use self::record_budget::{RecordBudget, RecordRoom};

/// How long a request may wait for a free slot before it is refused as busy.
pub(crate) const SLOT_WAIT: Duration = Duration::from_secs(30);
/// Small requests (info, inventory, deletes, audits) in progress at once.
const CONTROL_SLOTS: usize = 64;
/// Peers whose budgets are kept before idle ones are forgotten.
const PEER_BUDGETS_KEPT: usize = 1024;
/// Bytes of record bodies (manifests, placements) being received at once:
/// one manifest and one placement of the largest size. A record is read
/// whole before it is checked (its owner is inside it), so this, not the
/// put slots (eight bodies of up to 64 MiB), bounds what they hold. One
/// peer may hold at most [`MAX_MANIFEST_LEN`] of it.
pub const RECORD_BODIES_IN_FLIGHT: u64 = MAX_MANIFEST_LEN + MAX_PLACEMENT_LEN;

/// What a validator adds to the node it runs on: the server hands it the
/// audit requests peers send, the gateway shows its scoreboard.
pub trait ValidatorService: Send + Sync {
    /// A member asks this validator to audit dataset `cid` (the validator
    /// takes it only from the dataset's owner).
    fn audit(&self, peer: NodeId, cid: Cid) -> Result<(), AuditRefusal>;
    /// A member says it unpinned dataset `cid` (taken only from its owner).
    fn release(&self, peer: NodeId, cid: Cid) -> Result<(), AuditRefusal>;
    /// The scoreboard (`/api/scores`).
    fn report(&self) -> cairn_api::ValidatorReport;
    /// The miners that passed their vetting (placement gives the others a
    /// small share).
    fn vetted(&self) -> Vec<NodeId>;
    /// How this validator judged `miner`: its standing and its last
    /// verdicts. The server passes the peer that asks, and only that one.
    fn verdicts(&self, miner: NodeId) -> cairn_proto::wire::VerdictReport;
}

/// Why a validator did not take an audit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditRefusal {
    /// Too many requests queued; retry later.
    Busy(String),
    /// The request is not one this validator takes.
    Refused(String),
}

/// The shards a node holds, as a [`Prover`] may use them.
pub trait HeldShards {
    /// Up to `limit` shards held: id and length.
    fn list(&self, limit: usize) -> Vec<(cairn_proof::ShardId, u64)>;
    /// The honest proof for `challenge` from the bytes of shard `id`.
    fn prove(&self, challenge: &Challenge, id: &cairn_proof::ShardId) -> Result<Vec<u8>, String>;
    /// The outboard (hash tree) of shard `id`.
    fn outboard(&self, id: &cairn_proof::ShardId) -> Result<Vec<u8>, String>;
}

impl HeldShards for Store {
    fn list(&self, limit: usize) -> Vec<(cairn_proof::ShardId, u64)> {
        self.inventory(None, limit)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, m)| (id, m.len))
            .collect()
    }

    fn prove(&self, challenge: &Challenge, id: &cairn_proof::ShardId) -> Result<Vec<u8>, String> {
        let f = self.open_shard(id).map_err(|e| e.to_string())?;
        cairn_proof::prove(challenge, &f.data(), &f.outboard_region()).map_err(|e| e.to_string())
    }

    fn outboard(&self, id: &cairn_proof::ShardId) -> Result<Vec<u8>, String> {
        let f = self.open_shard(id).map_err(|e| e.to_string())?;
        f.outboard().map_err(|e| e.to_string())
    }
}

/// Answers challenges in place of the honest prover: an extension point for
/// research and for tests that play a cheating miner. Never set by `cairn`.
pub trait Prover: Send + Sync {
    /// `honest` is what the honest prover would send (or why it cannot).
    fn answer(
        &self,
        challenge: &Challenge,
        shards: &dyn HeldShards,
        honest: Result<Vec<u8>, String>,
    ) -> ProverAction;
}

/// What a [`Prover`] decides.
pub enum ProverAction {
    /// Send these bytes as the proof.
    Reply(Vec<u8>),
    /// Claim the shard is not here.
    NotFound,
    /// Hold the stream open without answering for this long.
    Stall(Duration),
    /// Reset the stream: no answer at all.
    Hangup,
    /// Decide after some work of its own (a cheater fetching from peers).
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = ProverAction> + Send>>),
}

/// Everything a request handler needs.
pub struct Server {
    pub(crate) node_id: NodeId,
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<Store>,
    pub(crate) registry: AnyRegistry,
    pub(crate) validator: Option<Arc<dyn ValidatorService>>,
    pub(crate) prover: Option<Arc<dyn Prover>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) bandwidth: Arc<Bandwidth>,
    pub(crate) dial_backs: DialBacks,
    classes: Slots,
    /// Each peer's share of every class: half of it, so no one peer can
    /// hold all the slots of a class.
    peers: std::sync::Mutex<std::collections::HashMap<NodeId, Arc<Slots>>>,
    /// Connections peers opened to this node, while open (for the
    /// dashboard: who talks to this miner, and over which path).
    incoming: std::sync::Mutex<Vec<(u64, Connection, Option<Role>)>>,
    next_incoming: std::sync::atomic::AtomicU64,
    /// The connections peers hold open here, counted.
    admissions: Arc<admission::Admissions>,
}

/// One semaphore per class of request, and the budget of record bodies
/// being received.
struct Slots {
    puts: Arc<Semaphore>,
    gets: Arc<Semaphore>,
    challenges: Arc<Semaphore>,
    control: Arc<Semaphore>,
    sizes: [usize; 4],
    records: RecordBudget,
}

impl Slots {
    fn new(sizes: [usize; 4], record_bytes: u64) -> Self {
        Slots {
            puts: Arc::new(Semaphore::new(sizes[0])),
            gets: Arc::new(Semaphore::new(sizes[1])),
            challenges: Arc::new(Semaphore::new(sizes[2])),
            control: Arc::new(Semaphore::new(sizes[3])),
            sizes,
            records: RecordBudget::new(record_bytes),
        }
    }

    fn of(&self, class: Slot) -> (&Arc<Semaphore>, &'static str) {
        match class {
            Slot::Put => (&self.puts, "puts"),
            Slot::Get => (&self.gets, "gets"),
            Slot::Challenge => (&self.challenges, "challenges"),
            Slot::Control => (&self.control, "requests"),
        }
    }

    /// Nothing of it is in use.
    fn idle(&self) -> bool {
        [&self.puts, &self.gets, &self.challenges, &self.control]
            .iter()
            .zip(self.sizes)
            .all(|(s, n)| s.available_permits() == n)
            && self.records.idle()
    }
}

/// Dial-backs a validator does for its members: each member at most once
/// per [`DialBacks::EVERY`], at most [`DialBacks::AT_ONCE`] in flight, so
/// asking cannot make a validator open sockets without bound.
#[derive(Debug)]
pub struct DialBacks {
    last: std::sync::Mutex<std::collections::HashMap<NodeId, std::time::Instant>>,
    slots: Arc<Semaphore>,
}

impl Default for DialBacks {
    fn default() -> Self {
        DialBacks {
            last: std::sync::Mutex::default(),
            slots: Arc::new(Semaphore::new(Self::AT_ONCE)),
        }
    }
}

impl DialBacks {
    pub const EVERY: Duration = Duration::from_secs(60);
    pub const AT_ONCE: usize = 2;

    /// A turn for `peer`, or why not now.
    pub fn turn(&self, peer: &NodeId) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        let busy = |why: String| Refusal::new(ErrorCode::Busy, why);
        let now = std::time::Instant::now();
        let mut last = self.last.lock().expect("lock");
        if let Some(t) = last.get(peer)
            && now.duration_since(*t) < Self::EVERY
        {
            return Err(busy(format!(
                "dialed back {} s ago; one dial-back per {} s",
                now.duration_since(*t).as_secs(),
                Self::EVERY.as_secs()
            )));
        }
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| busy("other dial-backs in progress; retry in a few seconds".into()))?;
        if last.len() >= PEER_BUDGETS_KEPT {
            last.retain(|_, t| now.duration_since(*t) < Self::EVERY);
        }
        last.insert(*peer, now);
        Ok(permit)
    }
}

/// A request's permits: its peer's share and the class's.
pub(crate) struct Permit {
    _peer: tokio::sync::OwnedSemaphorePermit,
    _class: tokio::sync::OwnedSemaphorePermit,
}

/// A record body's room: in its peer's share and in the whole.
pub(crate) struct RecordPermit {
    _peer: RecordRoom,
    _all: RecordRoom,
}

impl Server {
    pub(crate) fn new(
        node_id: NodeId,
        config: Arc<Config>,
        store: Arc<Store>,
        registry: AnyRegistry,
        validator: Option<Arc<dyn ValidatorService>>,
        prover: Option<Arc<dyn Prover>>,
        bandwidth: Arc<Bandwidth>,
    ) -> Self {
        let l = &config.limits;
        Server {
            node_id,
            classes: Slots::new(
                [
                    l.max_concurrent_puts,
                    l.max_concurrent_gets,
                    l.max_concurrent_challenges,
                    CONTROL_SLOTS,
                ],
                RECORD_BODIES_IN_FLIGHT,
            ),
            peers: std::sync::Mutex::default(),
            incoming: std::sync::Mutex::default(),
            next_incoming: std::sync::atomic::AtomicU64::new(0),
            admissions: Arc::default(),
            config,
            store,
            registry,
            validator,
            prover,
            metrics: Arc::new(Metrics::new()),
            bandwidth,
            dial_backs: DialBacks::default(),
        }
    }

    /// What `Info` answers.
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

    /// A peer's budget of slots, made on first use.
    fn peer_slots(&self, peer: &NodeId) -> Arc<Slots> {
        let mut peers = self.peers.lock().expect("lock");
        if peers.len() >= PEER_BUDGETS_KEPT {
            peers.retain(|_, s| Arc::strong_count(s) > 1 || !s.idle());
        }
        let share = self.classes.sizes.map(|n| n.div_ceil(2));
        Arc::clone(
            peers
                .entry(*peer)
                .or_insert_with(|| Arc::new(Slots::new(share, MAX_MANIFEST_LEN))),
        )
    }

    /// Waits (up to [`SLOT_WAIT`]) for room to receive a record body of
    /// `len` bytes from `peer`, within its share and then the whole
    /// ([`RECORD_BODIES_IN_FLIGHT`]); refuses as busy after that. A body
    /// that fits is never held behind a bigger one waiting
    /// ([`record_budget`]).
    pub(crate) async fn record_room(
        &self,
        peer: &NodeId,
        len: u64,
    ) -> Result<RecordPermit, Refusal> {
        let deadline = tokio::time::Instant::now() + SLOT_WAIT;
        let kib = len.div_ceil(1024).clamp(1, MAX_MANIFEST_LEN >> 10) as u32;
        let busy = |whose: &str, budget: u64| {
            Refusal::new(
                ErrorCode::Busy,
                format!(
                    "records being received{whose} take their {} MiB; retry later",
                    budget >> 20
                ),
            )
        };
        let mine = self.peer_slots(peer);
        let Some(own) = mine.records.take(kib, deadline).await else {
            return Err(busy(" from this node", MAX_MANIFEST_LEN));
        };
        let Some(all) = self.classes.records.take(kib, deadline).await else {
            return Err(busy("", RECORD_BODIES_IN_FLIGHT));
        };
        Ok(RecordPermit {
            _peer: own,
            _all: all,
        })
    }

    /// Bytes of record bodies being received now, and bodies waiting for
    /// room (`/metrics`).
    pub fn record_bodies(&self) -> (u64, usize) {
        let r = &self.classes.records;
        (r.taken_bytes(), r.waiting())
    }

    /// Waits (up to [`SLOT_WAIT`]) for a slot of `class` within `peer`'s
    /// share, then for one of the class; refuses as busy after that.
    async fn slot(&self, peer: &NodeId, class: Slot) -> Result<Permit, Refusal> {
        let deadline = tokio::time::Instant::now() + SLOT_WAIT;
        let mine = self.peer_slots(peer);
        let (own, what) = mine.of(class);
        let busy = |whose: &str| {
            Refusal::new(
                ErrorCode::Busy,
                format!("too many {what} in progress{whose}; retry later"),
            )
        };
        let own = match tokio::time::timeout_at(deadline, Arc::clone(own).acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy(" from this node")),
        };
        let (all, _) = self.classes.of(class);
        let all = match tokio::time::timeout_at(deadline, Arc::clone(all).acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy("")),
        };
        Ok(Permit {
            _peer: own,
            _class: all,
        })
    }
}

/// Accepts connections until `shutdown` turns true. Every request task is
/// spawned on `tracker`, so shutdown can wait for requests in flight.
pub(crate) async fn serve(
    endpoint: Endpoint,
    server: Arc<Server>,
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
        let from = match incoming.remote_addr() {
            iroh::endpoint::IncomingAddr::Ip(addr) => Some(addr.ip()),
            _ => None,
        };
        // Before the handshake only the whole is checked: the sender's
        // address is proven only by the handshake, and a spoofed first
        // packet must not take the places of the address it names.
        if server.admissions.full() {
            refuse_connection(&server, from, admission::Full::Node);
            incoming.refuse();
            continue;
        }
        let server = Arc::clone(&server);
        let t = tracker.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "incoming connection failed");
                    return;
                }
            };
            let _admission = match server.admissions.admit(from) {
                Ok(a) => a,
                Err(full) => {
                    refuse_connection(&server, from, full);
                    conn.close(0u32.into(), full.reason().as_bytes());
                    return;
                }
            };
            handle_connection(conn, server, t, sd).await;
        });
    }
}

fn refuse_connection(server: &Server, from: Option<std::net::IpAddr>, full: admission::Full) {
    tracing::debug!(from = ?from, reason = full.as_str(), "connection refused");
    server.metrics.connection_refused(full.as_str());
}

async fn handle_connection(
    conn: Connection,
    server: Arc<Server>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = conn.remote_id();
    // Membership is looked up once per connection: a registration change
    // takes effect on the peer's next connection.
    let member = match server.registry.member(&peer).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(peer = %peer.fmt_short(), error = %e, "registry lookup failed");
            None
        }
    };
    let member = Arc::new(member);
    tracing::debug!(peer = %peer.fmt_short(), registered = member.is_some(), "connection");
    let _listed = server.list_incoming(&conn, member.as_ref().as_ref().map(|m| m.role));
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
        let server = Arc::clone(&server);
        let member = Arc::clone(&member);
        tracker.spawn(async move {
            if let Err(e) = handle_stream(&server, peer, member.as_ref().as_ref(), send, recv).await
            {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "stream ended with error");
            }
        });
    }
}

/// An incoming connection's place in `Server::incoming`, removed on drop.
struct ListedConnection<'a> {
    server: &'a Server,
    id: u64,
}

impl Drop for ListedConnection<'_> {
    fn drop(&mut self) {
        if let Ok(mut list) = self.server.incoming.lock() {
            list.retain(|(id, _, _)| *id != self.id);
        }
    }
}

impl Server {
    fn list_incoming(&self, conn: &Connection, role: Option<Role>) -> ListedConnection<'_> {
        let id = self
            .next_incoming
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut list) = self.incoming.lock() {
            list.push((id, conn.clone(), role));
        }
        ListedConnection { server: self, id }
    }

    /// Peers connected to this node now (connections they opened): who,
    /// their registered role, the path and round trip.
    pub fn incoming_peers(&self) -> Vec<cairn_api::IncomingPeer> {
        let list = match self.incoming.lock() {
            Ok(l) => l.clone(),
            Err(_) => return Vec::new(),
        };
        let mut out: Vec<cairn_api::IncomingPeer> = list
            .iter()
            .filter(|(_, c, _)| c.close_reason().is_none())
            .map(|(_, c, role)| {
                let paths = c.paths();
                let selected = paths.iter().find(|p| p.is_selected());
                cairn_api::IncomingPeer {
                    node_id: c.remote_id().to_string(),
                    role: role.map_or_else(|| "unregistered".to_string(), |r| r.to_string()),
                    path: match &selected {
                        Some(p) if p.is_relay() => "relay".into(),
                        Some(_) => "direct".into(),
                        None => "-".into(),
                    },
                    rtt_ms: selected.map(|p| p.rtt().as_secs_f64() * 1000.0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out.dedup_by(|a, b| a.node_id == b.node_id);
        out
    }
}

/// A reply that ends the request.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// It came from a store error (counted in `cairn_store_errors_total`).
    pub from_store: bool,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            from_store: false,
        }
    }
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Refusal::new(e.code, e.message)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Full { .. } => ErrorCode::Full,
            StoreError::HashMismatch { .. } => ErrorCode::HashMismatch,
            StoreError::NotHolder(_) | StoreError::PlacementOwnerMismatch => ErrorCode::Forbidden,
            StoreError::IncompleteWrite { .. } => ErrorCode::Malformed,
            StoreError::PastEnd { .. } => ErrorCode::BadRequest,
            StoreError::Proof(cairn_proof::Error::LengthMismatch { .. }) => ErrorCode::Malformed,
            _ if e.is_full() => ErrorCode::Full,
            _ => ErrorCode::Internal,
        };
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "request failed in the store");
        }
        Refusal {
            from_store: true,
            ..Refusal::new(code, e.to_string())
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        match e {
            Error::Store(s) => s.into(),
            Error::Proof(cairn_proof::Error::LengthMismatch { .. }) => {
                Refusal::new(ErrorCode::Malformed, e.to_string())
            }
            e => {
                tracing::error!(error = %e, "request failed");
                Refusal::new(ErrorCode::Internal, e.to_string())
            }
        }
    }
}

impl From<tokio::task::JoinError> for Refusal {
    fn from(e: tokio::task::JoinError) -> Self {
        Refusal::new(ErrorCode::Internal, e.to_string())
    }
}

pub(crate) async fn reply(
    send: &mut SendStream,
    r: &Response,
    peer: &NodeId,
) -> crate::error::Result<()> {
    write_frame(send, &r.encode(), peer).await
}

async fn handle_stream(
    server: &Server,
    peer: NodeId,
    member: Option<&Member>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> crate::error::Result<()> {
    let started = std::time::Instant::now();
    // The request must arrive whole within a body's idle allowance: a
    // stream that announces a frame and stalls holds a task and a buffer.
    let frame = tokio::time::timeout(
        handlers::BODY_IDLE,
        read_frame(&mut recv, MAX_CONTROL_FRAME, &peer),
    )
    .await;
    let Ok(frame) = frame else {
        let refusal = Refusal::new(
            ErrorCode::Malformed,
            format!(
                "the request did not arrive whole within {:?}",
                handlers::BODY_IDLE
            ),
        );
        return refuse(server, peer, "stalled", refusal, started, send, recv).await;
    };
    let (kind, outcome) = match frame? {
        ReadFrame::End => return Ok(()),
        ReadFrame::TooLarge { len, limit } => (
            "oversized",
            Err(Refusal::new(
                ErrorCode::FrameTooLarge,
                format!("frame of {len} bytes exceeds the limit of {limit} bytes"),
            )),
        ),
        ReadFrame::Truncated => (
            "truncated",
            Err(Refusal::new(
                ErrorCode::Malformed,
                "stream ended inside a frame (truncated)",
            )),
        ),
        ReadFrame::Body(body) => match Request::decode(&body) {
            Ok(req) => (
                req.kind_name(),
                dispatch(server, peer, member, req, &mut send, &mut recv).await,
            ),
            Err(e) => ("undecodable", Err(e.into())),
        },
    };
    let counted = match &outcome {
        Ok(()) => "ok",
        Err(r) => {
            if r.from_store {
                server.metrics.store_error(r.code.name());
            }
            r.code.name()
        }
    };
    match outcome {
        Err(r) => refuse(server, peer, kind, r, started, send, recv).await,
        Ok(()) => {
            server.metrics.request(kind, counted, started.elapsed());
            end_stream(send).await;
            Ok(())
        }
    }
}

/// Answers a request with its refusal, counts it, and ends the stream.
async fn refuse(
    server: &Server,
    peer: NodeId,
    kind: &'static str,
    r: Refusal,
    started: std::time::Instant,
    mut send: SendStream,
    mut recv: RecvStream,
) -> crate::error::Result<()> {
    tracing::debug!(peer = %peer.fmt_short(), code = %r.code, message = %r.message, "refused");
    let _ = recv.stop(0u32.into());
    server
        .metrics
        .request(kind, r.code.name(), started.elapsed());
    reply(
        &mut send,
        &Response::Error {
            code: r.code,
            message: r.message,
        },
        &peer,
    )
    .await?;
    end_stream(send).await;
    Ok(())
}

/// Finishes a reply and waits until the peer has read it (or gone), so it
/// is not cut.
async fn end_stream(mut send: SendStream) {
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(10), send.stopped()).await;
}

/// The authorization table, then the slot, then the handler.
async fn dispatch(
    server: &Server,
    peer: NodeId,
    member: Option<&Member>,
    req: Request,
    send: &mut SendStream,
    recv: &mut RecvStream,
) -> Result<(), Refusal> {
    let (right, class) = authz::rule(&req);
    let member = authz::check(right, &peer, member)?;
    let _permit = server.slot(&peer, class).await?;
    let h = handlers::Handler {
        server,
        peer,
        send,
        recv,
    };
    match req {
        Request::Info => h.info().await,
        Request::PutShard { id, len, on_behalf } => {
            h.put_shard(authz::acting_owner(peer, on_behalf)?, id, len)
                .await
        }
        Request::GetShard {
            id,
            offset,
            length,
            grant,
        } => {
            h.get_shard(member_of(member)?, id, offset, length, grant.as_ref())
                .await
        }
        Request::Challenge {
            id,
            len,
            nonce,
            samples,
        } => h.challenge(id, len, nonce, samples).await,
        Request::Inventory { after, limit } => h.inventory(after, limit).await,
        Request::Has { ids } => h.has(&ids).await,
        Request::PutManifest { cid, len } => h.put_manifest(member_of(member)?, cid, len).await,
        Request::GetManifest { cid } => h.get_manifest(cid).await,
        Request::PutPlacement { cid, len } => h.put_placement(member_of(member)?, cid, len).await,
        Request::GetPlacement { cid } => h.get_placement(cid).await,
        Request::DeleteShard { id, on_behalf } => {
            h.delete_shard(authz::acting_owner(peer, on_behalf)?, id)
                .await
        }
        Request::DeleteManifest { cid } => h.delete_manifest(cid).await,
        Request::Audit { cid } => h.audit(cid, false).await,
        Request::Release { cid } => h.audit(cid, true).await,
        Request::Vetted => h.vetted().await,
        Request::Verdicts => h.verdicts().await,
        Request::DialBack => h.dial_back(member_of(member)?).await,
    }
}

/// The member record [`authz::check`] returned for a member-only request.
fn member_of(member: Option<&Member>) -> Result<&Member, Refusal> {
    member.ok_or_else(|| Refusal::new(ErrorCode::NotRegistered, "not a member"))
}
