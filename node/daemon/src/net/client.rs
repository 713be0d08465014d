//! The protocol client: requests to other nodes over one cached QUIC
//! connection per peer, one stream per request.
//!
//! Everything read from a peer is checked before it is used: shard bytes
//! against the shard id group by group as they stream in (the outboard comes
//! first and is itself checked against the id), manifests against their
//! content id, and every length against a bound before anything is allocated.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncReadExt;

use super::printable;
use cairn_proof::{Challenge, GROUP_LEN, ShardId, ShardVerifier, outboard_len};
use cairn_proto::wire::{
    self, DialBackReport, InventoryEntry, MAX_CONTROL_FRAME, MAX_MANIFEST_LEN, MAX_PLACEMENT_LEN,
    NodeInfo, Request, Response, VerdictReport,
};
use cairn_proto::{Cid, Grant, Placement};
use iroh::Endpoint;
use iroh::endpoint::{Connection, RecvStream, SendStream};

use crate::error::{Error, Result};
use crate::net::bandwidth::Bandwidth;
use crate::net::frames::{ReadFrame, read_frame, read_frame_timed, write_frame};
use crate::net::health::PeerHealth;
use cairn_proto::{ALPN, NodeId};
use iroh::EndpointAddr;

/// Largest shard fetched when the caller does not know the length.
pub const MAX_FETCH_LEN: u64 = 1 << 30;

/// A client bound to this node's endpoint.
pub struct Client {
    endpoint: Endpoint,
    conns: tokio::sync::Mutex<HashMap<NodeId, Connection>>,
    connect_timeout: Duration,
    health: PeerHealth,
    /// Shard bytes received (outboards and groups), for `/metrics`.
    shard_bytes_received: std::sync::atomic::AtomicU64,
    /// Connections dialed since start (a reconnect counts again).
    dialed: std::sync::atomic::AtomicU64,
    /// Connections dialed per peer (peers come from the registry: bounded
    /// by its members).
    dials: std::sync::Mutex<HashMap<NodeId, u32>>,
    /// The node's caps: shard and record bytes wait for them.
    bandwidth: Arc<Bandwidth>,
}

fn peer_err(peer: &NodeId, message: impl Into<String>) -> Error {
    Error::Peer {
        peer: peer.fmt_short().to_string(),
        message: printable(&message.into()),
    }
}

/// The most characters of a peer's own text (a refusal's message) kept.
const PEER_TEXT_MAX: usize = 200;

/// Text a peer chose whole (the message of its refusal): [`printable`],
/// and cut at [`PEER_TEXT_MAX`] characters.
fn peer_text(s: &str) -> String {
    match s.char_indices().nth(PEER_TEXT_MAX) {
        Some((cut, _)) => printable(&s[..cut]) + "...",
        None => printable(s),
    }
}

/// The peer sent what no honest peer sends.
fn bad_reply(peer: &NodeId, message: impl Into<String>) -> Error {
    Error::BadReply {
        peer: peer.fmt_short().to_string(),
        message: printable(&message.into()),
    }
}

/// Which connection to a peer a request began on and what had arrived on
/// it then ([`Client::heard_mark`], [`Client::request_failed`]).
#[derive(Debug, Clone, Copy)]
pub struct HeardMark {
    /// Connections dialed to the peer so far: the open one's generation.
    dials: u32,
    /// UDP datagrams received on the open connection, if one was open.
    datagrams: Option<u64>,
}

/// Verified bytes of a shard range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    pub shard_len: u64,
    /// Offset of `bytes[0]` in the shard.
    pub offset: u64,
    pub bytes: Vec<u8>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            conns: tokio::sync::Mutex::new(HashMap::new()),
            connect_timeout: Duration::from_secs(10),
            health: PeerHealth::default(),
            shard_bytes_received: Default::default(),
            dialed: Default::default(),
            dials: Default::default(),
            bandwidth: Arc::new(Bandwidth::unlimited()),
        }
    }

    /// Transfers under these caps (the node's `[limits]` rates).
    pub fn with_bandwidth(mut self, bandwidth: Arc<Bandwidth>) -> Self {
        self.bandwidth = bandwidth;
        self
    }

    /// Connections dialed since start.
    pub fn connections_dialed(&self) -> u64 {
        self.dialed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The path each open connection uses now: direct UDP or the relay.
    pub async fn peer_paths(&self) -> Vec<cairn_api::PeerPath> {
        let conns = self.conns.lock().await;
        let dials = self.dials.lock().expect("lock").clone();
        let mut out = Vec::new();
        for (id, conn) in conns.iter() {
            if conn.close_reason().is_some() {
                continue;
            }
            let paths = conn.paths();
            if let Some(p) = paths.iter().find(|p| p.is_selected()) {
                out.push(cairn_api::PeerPath {
                    node_id: id.to_string(),
                    path: if p.is_relay() { "relay" } else { "direct" }.into(),
                    addr: match p.remote_addr() {
                        iroh::TransportAddr::Ip(a) => a.to_string(),
                        iroh::TransportAddr::Relay(u) => u.to_string(),
                        other => format!("{other:?}"),
                    },
                    rtt_ms: p.rtt().as_secs_f64() * 1000.0,
                    dials: dials.get(id).copied().unwrap_or(0),
                });
            }
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Shard bytes (outboards and groups) this client has received.
    pub fn shard_bytes_received(&self) -> u64 {
        self.shard_bytes_received
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_shard_bytes(&self, n: u64) {
        self.shard_bytes_received
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records that a transfer with `peer` failed, for ordering (it is
    /// suspect for a while), and lets its cached connection go if that has
    /// closed: a closed connection's state, with any stream bytes it still
    /// held, is freed once no handle is left. A live connection stays: it
    /// carries other transfers, and the failure may have been this one's.
    pub async fn note_failure(&self, peer: &NodeId) {
        self.health.failed(peer, Instant::now());
        let mut conns = self.conns.lock().await;
        if conns.get(peer).is_some_and(|c| c.close_reason().is_some()) {
            conns.remove(peer);
        }
    }

    /// Records that a request to `peer` failed or timed out, and drops its
    /// connection so the next request reconnects.
    pub async fn mark_failed(&self, peer: &NodeId) {
        self.health.failed(peer, Instant::now());
        self.forget(peer).await;
    }

    /// True if `peer` failed within the last half minute.
    pub fn is_suspect(&self, peer: &NodeId) -> bool {
        self.health.is_suspect(peer, Instant::now())
    }

    /// Records a success: `peer` is no longer suspect.
    pub fn mark_ok(&self, peer: &NodeId) {
        self.health.ok(peer);
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn with_connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    async fn connection(&self, addr: &EndpointAddr) -> Result<Connection> {
        let id = addr.id;
        {
            let mut conns = self.conns.lock().await;
            match conns.get(&id) {
                Some(c) if c.close_reason().is_none() => return Ok(c.clone()),
                // Closed: dropped now, not when a new dial succeeds (a dead
                // peer's connection keeps its unacknowledged stream bytes).
                Some(_) => drop(conns.remove(&id)),
                None => {}
            }
        }
        let addrs: Vec<String> = addr.ip_addrs().map(|a| a.to_string()).collect();
        let conn = tokio::time::timeout(self.connect_timeout, self.endpoint.connect(addr.clone(), ALPN))
            .await
            .map_err(|_| {
                peer_err(
                    &id,
                    format!(
                        "unreachable: no answer within {:?} at [{}]; is it running and is its UDP port open?",
                        self.connect_timeout,
                        addrs.join(", ")
                    ),
                )
            })?
            .map_err(|e| peer_err(&id, format!("cannot connect at [{}]: {e}", addrs.join(", "))))?;
        self.dialed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.dials.lock().expect("lock").entry(id).or_default() += 1;
        self.conns.lock().await.insert(id, conn.clone());
        Ok(conn)
    }

    /// Connects to `addr` unless a connection is open already (bounded by
    /// the connect timeout): for a caller that times a request, not the
    /// handshake.
    pub async fn connect(&self, addr: &EndpointAddr) -> Result<()> {
        self.connection(addr).await.map(|_| ())
    }

    /// Drops the cached connection to a peer (after it failed).
    pub async fn forget(&self, id: &NodeId) {
        if let Some(c) = self.conns.lock().await.remove(id) {
            c.close(0u32.into(), b"bye");
        }
    }

    async fn open(&self, addr: &EndpointAddr) -> Result<(SendStream, RecvStream)> {
        self.open_on(addr).await.map(|(_, send, recv)| (send, recv))
    }

    /// [`Client::open`], with the connection the streams are on.
    async fn open_on(&self, addr: &EndpointAddr) -> Result<(Connection, SendStream, RecvStream)> {
        for attempt in 0..2 {
            let conn = self.connection(addr).await?;
            match conn.open_bi().await {
                Ok((send, recv)) => return Ok((conn, send, recv)),
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "stale connection; reconnecting");
                    self.conns.lock().await.remove(&addr.id);
                }
                Err(e) => return Err(peer_err(&addr.id, format!("open stream: {e}"))),
            }
        }
        Err(peer_err(&addr.id, "open stream: no connection"))
    }

    async fn response(recv: &mut RecvStream, peer: &NodeId, limit: usize) -> Result<Response> {
        Self::response_timed(recv, peer, limit)
            .await
            .map(|(r, _)| r)
    }

    async fn response_timed(
        recv: &mut RecvStream,
        peer: &NodeId,
        limit: usize,
    ) -> Result<(Response, Option<Instant>)> {
        let (frame, first) = read_frame_timed(recv, limit, peer).await?;
        let r = match frame {
            ReadFrame::Body(b) => {
                let r = Response::decode(&b).map_err(|e| bad_reply(peer, e.message))?;
                if let Response::Error { code, message } = r {
                    return Err(Error::Remote {
                        peer: peer.fmt_short().to_string(),
                        code,
                        message: peer_text(&message),
                    });
                }
                Ok(r)
            }
            ReadFrame::End | ReadFrame::Truncated => {
                Err(peer_err(peer, "closed the stream without a reply"))
            }
            ReadFrame::TooLarge { len, limit } => Err(bad_reply(
                peer,
                format!("reply of {len} bytes exceeds {limit}"),
            )),
        };
        r.map(|r| (r, first))
    }

    /// Sends raw bytes as a request and returns the decoded reply, error
    /// replies included (for tests and diagnostics of malformed input).
    pub async fn raw_request(
        &self,
        addr: &EndpointAddr,
        bytes: &[u8],
        finish: bool,
    ) -> Result<Response> {
        let (mut send, mut recv) = self.open(addr).await?;
        send.write_all(bytes)
            .await
            .map_err(|e| peer_err(&addr.id, e.to_string()))?;
        if finish {
            let _ = send.finish();
        }
        match read_frame(&mut recv, MAX_CONTROL_FRAME, &addr.id).await? {
            ReadFrame::Body(b) => {
                Response::decode(&b).map_err(|e| bad_reply(&addr.id, e.to_string()))
            }
            other => Err(peer_err(&addr.id, format!("no reply: {other:?}"))),
        }
    }

    /// Opens a stream and sends a request's frame, leaving the body and the
    /// reply to the caller (tests and diagnostics that play a slow or
    /// hostile peer).
    pub async fn open_request(
        &self,
        addr: &EndpointAddr,
        req: &Request,
    ) -> Result<(SendStream, RecvStream)> {
        let (mut send, recv) = self.open(addr).await?;
        write_frame(&mut send, &req.encode(), &addr.id).await?;
        Ok((send, recv))
    }

    /// Reads the reply to a request opened with [`Client::open_request`]:
    /// the response, an error reply as `Ok(Response::Error)`.
    pub async fn read_reply(recv: &mut RecvStream, peer: &NodeId) -> Result<Response> {
        match read_frame(recv, MAX_CONTROL_FRAME, peer).await? {
            ReadFrame::Body(b) => Response::decode(&b).map_err(|e| bad_reply(peer, e.to_string())),
            other => Err(peer_err(peer, format!("no reply: {other:?}"))),
        }
    }

    async fn simple(&self, addr: &EndpointAddr, req: &Request) -> Result<Response> {
        let (mut send, mut recv) = self.open(addr).await?;
        write_frame(&mut send, &req.encode(), &addr.id).await?;
        let _ = send.finish();
        Self::response(&mut recv, &addr.id, MAX_CONTROL_FRAME).await
    }

    fn unexpected(peer: &NodeId, r: &Response) -> Error {
        bad_reply(peer, format!("unexpected reply {r:?}"))
    }

    pub async fn info(&self, addr: &EndpointAddr) -> Result<NodeInfo> {
        match self.simple(addr, &Request::Info).await? {
            Response::Info(i) => Ok(i),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// Starts a put; write the bytes with [`PutStream::write`], then [`PutStream::finish`].
    pub async fn begin_put(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        len: u64,
        on_behalf: Option<NodeId>,
    ) -> Result<PutStream> {
        // A peer may keep its stream credit to itself: nothing of the shard
        // is written yet, so giving up costs nothing but the wait.
        let deadline =
            tokio::time::Instant::now() + crate::server::handlers::body_allowance(len) + PUT_STALL;
        let open = async {
            let (conn, mut send, recv) = self.open_on(addr).await?;
            let req = Request::PutShard {
                id,
                len,
                on_behalf: on_behalf.map(|n| *n.as_bytes()),
            };
            write_frame(&mut send, &req.encode(), &addr.id).await?;
            Ok::<_, Error>((conn, send, recv))
        };
        let (conn, send, recv) = tokio::time::timeout(PUT_STALL, open)
            .await
            .map_err(|_| peer_err(&addr.id, format!("opened no stream within {PUT_STALL:?}")))??;
        Ok(PutStream {
            peer: addr.id,
            conn,
            send,
            recv,
            stopped: false,
            deadline,
            bandwidth: Arc::clone(&self.bandwidth),
        })
    }

    /// Stores a shard on a peer; the peer verifies the bytes hash to `id`.
    pub async fn put_shard(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        bytes: &[u8],
        on_behalf: Option<NodeId>,
    ) -> Result<()> {
        self.put_shard_bytes(addr, id, Bytes::copy_from_slice(bytes), on_behalf)
            .await
    }

    /// [`Client::put_shard`] of a buffer handed to the stream as it is (not
    /// copied). The stream keeps it until the peer has acknowledged it, or
    /// until the connection is let go.
    pub async fn put_shard_bytes(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        bytes: Bytes,
        on_behalf: Option<NodeId>,
    ) -> Result<()> {
        let mut p = self
            .begin_put(addr, id, bytes.len() as u64, on_behalf)
            .await?;
        p.write_bytes(bytes).await?;
        p.finish().await
    }

    /// Fetches bytes `[offset, offset + length)` of a shard (`length =
    /// u64::MAX`: to the end), verified against `id`. `expected_len`, when
    /// known, is checked against what the peer announces.
    pub async fn get_shard(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        offset: u64,
        length: u64,
        expected_len: Option<u64>,
    ) -> Result<ShardRange> {
        self.get_shard_granted(addr, id, offset, length, expected_len, None)
            .await
    }

    /// [`Client::get_shard`], presenting an owner's read grant (needed for
    /// shards this node did not place, unless it is a validator).
    pub async fn get_shard_granted(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        offset: u64,
        length: u64,
        expected_len: Option<u64>,
        grant: Option<&Grant>,
    ) -> Result<ShardRange> {
        // Sized up front when the length is known, so a whole shard is
        // received without regrowing (or copying) its buffer.
        let mut out = Vec::with_capacity(match (expected_len, length) {
            (Some(len), u64::MAX) => len.min(MAX_FETCH_LEN),
            (Some(len), n) => n
                .saturating_add(2 * GROUP_LEN as u64)
                .min(len)
                .min(MAX_FETCH_LEN),
            (None, _) => 0,
        } as usize);
        let (shard_len, group_start) = self
            .fetch_verified(addr, id, offset, length, expected_len, grant, &mut out)
            .await?;
        let end = if length == u64::MAX {
            shard_len
        } else {
            offset.saturating_add(length).min(shard_len)
        };
        let from = (offset.saturating_sub(group_start)) as usize;
        let to = (end.saturating_sub(group_start)) as usize;
        let to = to.min(out.len());
        out.truncate(to);
        out.drain(..from.min(to));
        let bytes = out;
        Ok(ShardRange {
            shard_len,
            offset,
            bytes,
        })
    }

    /// Appends the verified chunk groups of a range to `out`; returns the
    /// shard's length and where in it the first group starts. Each group is
    /// received straight into `out`'s spare capacity and checked there:
    /// on an error `out` may end in unverified bytes, and the caller drops
    /// it.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_verified(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        offset: u64,
        length: u64,
        expected_len: Option<u64>,
        grant: Option<&Grant>,
        out: &mut Vec<u8>,
    ) -> Result<(u64, u64)> {
        let peer = addr.id;
        let (mut send, mut recv) = self.open(addr).await?;
        let request = Request::GetShard {
            id,
            offset,
            length,
            grant: grant.cloned(),
        };
        write_frame(&mut send, &request.encode(), &peer).await?;
        let _ = send.finish();
        let (shard_len, start, len, ob_len) =
            match Self::response(&mut recv, &peer, MAX_CONTROL_FRAME).await? {
                Response::ShardData {
                    shard_len,
                    start,
                    length,
                    outboard_len,
                } => (shard_len, start, length, outboard_len),
                r => return Err(Self::unexpected(&peer, &r)),
            };
        let bound = expected_len.unwrap_or(MAX_FETCH_LEN);
        if expected_len.is_some_and(|e| e != shard_len) || shard_len > bound {
            return Err(bad_reply(
                &peer,
                format!("announced a {shard_len}-byte shard; expected {bound} bytes"),
            ));
        }
        let g = GROUP_LEN as u64;
        if ob_len != outboard_len(shard_len)
            || start % g != 0
            || start.saturating_add(len) > shard_len
            || start > offset
        {
            return Err(bad_reply(&peer, "announced an inconsistent shard range"));
        }
        let mut outboard = vec![0u8; ob_len as usize];
        recv.read_exact(&mut outboard)
            .await
            .map_err(|e| peer_err(&peer, format!("outboard: {e}")))?;
        self.count_shard_bytes(ob_len);
        self.bandwidth.down.take(outboard.len()).await;
        let verifier = ShardVerifier::new(id, shard_len, &outboard)
            .map_err(|e| bad_reply(&peer, format!("sent a bad outboard for {id}: {e}")))?;
        let mut pos = start;
        let end = start + len;
        while pos < end {
            let n = ((end - pos) as usize).min(GROUP_LEN);
            let at = out.len();
            // Into `out`'s spare capacity (nothing zeroed first), up to the
            // group's end and no further.
            while out.len() < at + n {
                let room = at + n - out.len();
                let got = recv
                    .read_buf(&mut bytes::BufMut::limit(&mut *out, room))
                    .await
                    .map_err(|e| peer_err(&peer, format!("shard body ended early: {e}")))?;
                if got == 0 {
                    return Err(peer_err(&peer, "shard body ended early"));
                }
            }
            self.count_shard_bytes(n as u64);
            self.bandwidth.down.take(n).await;
            let group = pos / g;
            let expected = cairn_proof::group_range(shard_len, group);
            if expected.end - expected.start != n as u64 {
                return Err(bad_reply(
                    &peer,
                    "shard range does not end on a group boundary",
                ));
            }
            verifier
                .verify_group(group, &out[at..])
                .map_err(|e| bad_reply(&peer, format!("sent bytes that fail verification: {e}")))?;
            pos += n as u64;
        }
        if shard_len == 0 {
            verifier
                .verify_group(0, &[])
                .map_err(|e| bad_reply(&peer, format!("empty shard fails verification: {e}")))?;
        }
        Ok((shard_len, start))
    }

    /// Sends a challenge; returns the proof bytes (unverified: the caller
    /// verifies and decides). Reads at most the challenge's exact proof length.
    pub async fn challenge(&self, addr: &EndpointAddr, challenge: &Challenge) -> Result<Vec<u8>> {
        self.challenge_timed(addr, challenge).await.map(|r| r.proof)
    }

    /// A challenge, with when the proof's first byte arrived (so the proof's
    /// transfer can be told from the time spent producing it).
    pub async fn challenge_timed(
        &self,
        addr: &EndpointAddr,
        challenge: &Challenge,
    ) -> Result<ChallengeReply> {
        let (mut send, mut recv) = self.open(addr).await?;
        let req = Request::Challenge {
            id: challenge.shard_id,
            len: challenge.shard_len,
            nonce: challenge.nonce,
            samples: challenge.samples,
        };
        write_frame(&mut send, &req.encode(), &addr.id).await?;
        let _ = send.finish();
        let limit = (challenge.proof_len() + 2).max(MAX_CONTROL_FRAME);
        let (response, first_byte) = Self::response_timed(&mut recv, &addr.id, limit).await?;
        match response {
            Response::Proof(proof) => Ok(ChallengeReply {
                proof,
                first_byte: first_byte.unwrap_or_else(Instant::now),
            }),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// The round trip the QUIC connection to `peer` measures on its path in
    /// use, if a connection is open.
    pub async fn rtt(&self, peer: &NodeId) -> Option<Duration> {
        let conns = self.conns.lock().await;
        let conn = conns.get(peer)?;
        let paths = conn.paths();
        paths.iter().find(|p| p.is_selected()).map(|p| p.rtt())
    }

    /// What has arrived from `peer` so far, taken before a request whose
    /// failure [`Client::request_failed`] will judge.
    pub async fn heard_mark(&self, peer: &NodeId) -> HeardMark {
        // The dial count first: a connection dialed between the two looks
        // like one made during the request (heard), never the reverse.
        let dials = self.dials_to(peer);
        HeardMark {
            dials,
            datagrams: self.datagrams_received(peer).await,
        }
    }

    /// Records that a request to `peer`, begun at `mark`, failed or timed
    /// out: the peer is suspect for a while (tried last). Whether its
    /// connection is dropped depends on whether anything arrived from the
    /// peer during the request (acknowledgements, keep-alives, a reset; a
    /// connection dialed during it counts, its handshake was the peer
    /// answering): a peer heard from keeps its connection, which carries
    /// its other transfers and whose congestion window a fresh one would
    /// have to learn again from slow start; a silent one is dropped, so the
    /// next request dials afresh in case its path died without notice.
    pub async fn request_failed(&self, peer: &NodeId, mark: HeardMark) {
        let heard = self.dials_to(peer) != mark.dials
            || match (mark.datagrams, self.datagrams_received(peer).await) {
                (Some(before), Some(after)) => after > before,
                // Connected while the mark was taken.
                (None, Some(_)) => true,
                (_, None) => false,
            };
        if heard {
            self.note_failure(peer).await;
        } else {
            self.mark_failed(peer).await;
        }
    }

    /// Connections dialed to `peer` since start: a connection's generation
    /// (a connection's own id is its address in memory, which a later
    /// connection may reuse).
    fn dials_to(&self, peer: &NodeId) -> u32 {
        self.dials
            .lock()
            .expect("lock")
            .get(peer)
            .copied()
            .unwrap_or(0)
    }

    /// The UDP datagrams received so far on the open connection to `peer`.
    async fn datagrams_received(&self, peer: &NodeId) -> Option<u64> {
        let conns = self.conns.lock().await;
        conns.get(peer).map(|c| c.stats().udp_rx.datagrams)
    }

    /// One page of a peer's shard inventory.
    pub async fn inventory(
        &self,
        addr: &EndpointAddr,
        after: Option<ShardId>,
        limit: u32,
    ) -> Result<(Vec<InventoryEntry>, bool)> {
        match self
            .simple(addr, &Request::Inventory { after, limit })
            .await?
        {
            Response::Inventory { entries, more } => Ok((entries, more)),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// A peer's whole inventory, page by page.
    pub async fn inventory_all(&self, addr: &EndpointAddr) -> Result<Vec<InventoryEntry>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = self
                .inventory(addr, after, wire::MAX_INVENTORY_PAGE)
                .await?;
            after = page.last().map(|e| e.id);
            all.extend(page);
            if !more || after.is_none() {
                return Ok(all);
            }
        }
    }

    pub async fn put_manifest(
        &self,
        addr: &EndpointAddr,
        cid: [u8; 32],
        bytes: &[u8],
    ) -> Result<()> {
        let req = Request::PutManifest {
            cid,
            len: bytes.len() as u64,
        };
        self.put_blob(addr, &req, bytes).await
    }

    /// Sends `req`, then the bytes it announces; expects `Ok`. A peer that
    /// refuses before it has taken the whole body (a quota, a busy budget)
    /// stops the stream and answers why: that answer is the result.
    ///
    /// Bounded: a peer may wait for a slot and for room for the body (30 s
    /// each), then take the body at the slowest pace it allows; one that
    /// gives no answer by then is taken for stalled.
    async fn put_blob(&self, addr: &EndpointAddr, req: &Request, bytes: &[u8]) -> Result<()> {
        let allowed = RECORD_WAITS + crate::server::handlers::body_allowance(bytes.len() as u64);
        let exchange = async {
            let (mut send, mut recv) = self.open(addr).await?;
            write_frame(&mut send, &req.encode(), &addr.id).await?;
            match send.write_all(bytes).await {
                Ok(()) => {
                    let _ = send.finish();
                }
                Err(iroh::endpoint::WriteError::Stopped(_)) => {}
                Err(e) => return Err(peer_err(&addr.id, e.to_string())),
            }
            match Self::response(&mut recv, &addr.id, MAX_CONTROL_FRAME).await? {
                Response::Ok => Ok(()),
                r => Err(Self::unexpected(&addr.id, &r)),
            }
        };
        tokio::time::timeout(allowed + PUT_STALL, exchange)
            .await
            .map_err(|_| {
                peer_err(
                    &addr.id,
                    format!(
                        "gave no answer on a record within {:?}",
                        allowed + PUT_STALL
                    ),
                )
            })?
    }

    /// Sends `req` and reads the `Blob` reply of at most `max` bytes.
    async fn get_blob(
        &self,
        addr: &EndpointAddr,
        req: &Request,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let (mut send, mut recv) = self.open(addr).await?;
        write_frame(&mut send, &req.encode(), &addr.id).await?;
        let _ = send.finish();
        let len = match Self::response(&mut recv, &addr.id, MAX_CONTROL_FRAME).await? {
            Response::Blob { len } if len <= max => len,
            r => return Err(Self::unexpected(&addr.id, &r)),
        };
        let mut bytes = vec![0u8; len as usize];
        recv.read_exact(&mut bytes)
            .await
            .map_err(|e| peer_err(&addr.id, format!("{what} body: {e}")))?;
        Ok(bytes)
    }

    /// Fetches a manifest and checks it hashes to `cid`.
    pub async fn get_manifest(&self, addr: &EndpointAddr, cid: [u8; 32]) -> Result<Vec<u8>> {
        let req = Request::GetManifest { cid };
        let bytes = self
            .get_blob(addr, &req, MAX_MANIFEST_LEN, "manifest")
            .await?;
        if *blake3::hash(&bytes).as_bytes() != cid {
            return Err(bad_reply(
                &addr.id,
                "sent a manifest that does not match its content id",
            ));
        }
        Ok(bytes)
    }

    /// Stores a signed placement record.
    pub async fn put_placement(&self, addr: &EndpointAddr, placement: &Placement) -> Result<()> {
        let bytes = placement.encode();
        let req = Request::PutPlacement {
            cid: placement.cid.0,
            len: bytes.len() as u64,
        };
        self.put_blob(addr, &req, &bytes).await
    }

    /// Fetches the placement record held for `cid`, signature checked.
    pub async fn get_placement(&self, addr: &EndpointAddr, cid: Cid) -> Result<Placement> {
        let req = Request::GetPlacement { cid: cid.0 };
        let bytes = self
            .get_blob(addr, &req, MAX_PLACEMENT_LEN, "placement")
            .await?;
        let p = Placement::decode(&bytes)
            .map_err(|e| bad_reply(&addr.id, format!("bad placement: {e}")))?;
        if p.cid != cid {
            return Err(bad_reply(&addr.id, "sent a placement for another CID"));
        }
        Ok(p)
    }

    /// Which of `ids` the peer holds.
    pub async fn has(&self, addr: &EndpointAddr, ids: &[ShardId]) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(wire::MAX_HAS_IDS) {
            let req = Request::Has {
                ids: chunk.to_vec(),
            };
            match self.simple(addr, &req).await? {
                Response::Has(bits) if bits.len() == chunk.len() => out.extend(bits),
                r => return Err(Self::unexpected(&addr.id, &r)),
            }
        }
        Ok(out)
    }

    pub async fn delete_shard(
        &self,
        addr: &EndpointAddr,
        id: ShardId,
        on_behalf: Option<NodeId>,
    ) -> Result<()> {
        let req = Request::DeleteShard {
            id,
            on_behalf: on_behalf.map(|n| *n.as_bytes()),
        };
        match self.simple(addr, &req).await? {
            Response::Ok => Ok(()),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    pub async fn delete_manifest(&self, addr: &EndpointAddr, cid: [u8; 32]) -> Result<()> {
        match self.simple(addr, &Request::DeleteManifest { cid }).await? {
            Response::Ok => Ok(()),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// Tells a validator this node (the owner) unpinned a dataset.
    pub async fn release(&self, addr: &EndpointAddr, cid: [u8; 32]) -> Result<()> {
        match self.simple(addr, &Request::Release { cid }).await? {
            Response::Ok => Ok(()),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// Asks a validator to audit a dataset.
    pub async fn audit(&self, addr: &EndpointAddr, cid: [u8; 32]) -> Result<()> {
        match self.simple(addr, &Request::Audit { cid }).await? {
            Response::Ok => Ok(()),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// Asks a validator which miners passed their vetting.
    pub async fn vetted(&self, addr: &EndpointAddr) -> Result<Vec<NodeId>> {
        match self.simple(addr, &Request::Vetted).await? {
            Response::Nodes(ids) => Ok(ids
                .iter()
                .filter_map(|b| NodeId::from_bytes(b).ok())
                .collect()),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// Asks a validator to dial this node back from outside.
    pub async fn dial_back(&self, addr: &EndpointAddr) -> Result<DialBackReport> {
        match self.simple(addr, &Request::DialBack).await? {
            Response::DialedBack(r) => Ok(r),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }

    /// Asks a validator how it judged this node (and only this node: the
    /// validator answers about the connection's peer).
    pub async fn verdicts(&self, addr: &EndpointAddr) -> Result<VerdictReport> {
        match self.simple(addr, &Request::Verdicts).await? {
            Response::Verdicts(r) => Ok(r),
            r => Err(Self::unexpected(&addr.id, &r)),
        }
    }
}

/// Bytes one stream sends per turn under an upload cap.
const CAPPED_PIECE: usize = 64 << 10;

/// A proof, and when its first byte arrived.
#[derive(Debug)]
pub struct ChallengeReply {
    pub proof: Vec<u8>,
    pub first_byte: Instant,
}

/// How long a put may make no progress (no stream opened, a piece not
/// taken by the stream) before the peer is taken for stalled: the idle
/// timeout's length, for a peer that keeps its connection alive. The
/// verdict is awaited as long as the miner gives the body to arrive
/// (`body_allowance`: up to the stream window may still be unsent when
/// the body's last piece is taken, and a slow uplink takes its time), plus
/// this much.
const PUT_STALL: Duration = Duration::from_secs(10);
/// How long a node may keep a record waiting before its body is taken: for
/// a slot, then for room in its budget of record bodies.
const RECORD_WAITS: Duration = crate::server::SLOT_WAIT.saturating_mul(2);
/// How long a peer that accepted a shard may take to acknowledge its last
/// bytes at the QUIC level. Until it does, the stream keeps the shard's
/// buffer; a peer that never does would keep every shard it is sent.
const PUT_ACK_WAIT: Duration = Duration::from_secs(5);

/// A put in progress.
pub struct PutStream {
    peer: NodeId,
    /// The connection the put is on: closed if the peer stalls, which frees
    /// what its streams held once the client lets it go
    /// ([`Client::note_failure`]).
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    stopped: bool,
    /// When the verdict must have come: the miner's allowance for the body,
    /// from the put's start, plus [`PUT_STALL`].
    deadline: tokio::time::Instant,
    bandwidth: Arc<Bandwidth>,
}

impl PutStream {
    /// Sends the next bytes. If the peer already has the shard it stops the
    /// stream early; the remaining writes are skipped and `finish` reports.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_bytes(Bytes::copy_from_slice(bytes)).await
    }

    /// [`PutStream::write`] of a buffer handed to the stream as it is.
    pub async fn write_bytes(&mut self, bytes: Bytes) -> Result<()> {
        // Under a cap, pieces take their turns with every other transfer's,
        // so no stream of a pin sits idle long enough for its miner to give
        // up on it.
        let mut at = 0;
        while at < bytes.len() {
            if self.stopped {
                return Ok(());
            }
            let piece = bytes.slice(at..(at + CAPPED_PIECE).min(bytes.len()));
            at += piece.len();
            self.bandwidth.up.take(piece.len()).await;
            match tokio::time::timeout(PUT_STALL, self.send.write_chunk(piece)).await {
                Err(_) => {
                    return Err(
                        self.stalled(&format!("took none of the shard's bytes for {PUT_STALL:?}"))
                    );
                }
                Ok(Ok(())) => {}
                Ok(Err(iroh::endpoint::WriteError::Stopped(_))) => self.stopped = true,
                Ok(Err(e)) => return Err(peer_err(&self.peer, format!("sending shard: {e}"))),
            }
        }
        Ok(())
    }

    /// Ends the body, waits for the peer's verdict and for its
    /// acknowledgement of the bytes (so the stream lets the shard go),
    /// whatever the verdict.
    pub async fn finish(mut self) -> Result<()> {
        let _ = self.send.finish();
        // Asked for before the acknowledgement can come, so that the
        // connection forgets the request when it does.
        let acknowledged = (!self.stopped).then(|| self.send.stopped());
        let verdict = tokio::time::timeout_at(
            self.deadline,
            Client::response(&mut self.recv, &self.peer, MAX_CONTROL_FRAME),
        )
        .await;
        let result = match verdict {
            Err(_) => return Err(self.stalled("gave no verdict on the shard in time")),
            Ok(Ok(Response::Ok)) => Ok(()),
            Ok(Ok(r)) => Err(Client::unexpected(&self.peer, &r)),
            Ok(Err(e)) => Err(e),
        };
        // Stopped or acknowledged: either way the stream holds nothing more.
        if let Some(acknowledged) = acknowledged
            && tokio::time::timeout(PUT_ACK_WAIT, acknowledged)
                .await
                .is_err()
        {
            return Err(self.stalled(&format!(
                "did not acknowledge the shard's bytes within {PUT_ACK_WAIT:?} of its verdict"
            )));
        }
        result
    }

    /// Closes the put's connection (the peer stalled: whatever its streams
    /// hold is let go with it) and names what happened.
    fn stalled(&self, what: &str) -> Error {
        self.conn.close(0u32.into(), b"stalled");
        peer_err(&self.peer, format!("{what}; its connection is closed"))
    }
}
