//! The local HTTP API: what the CLI talks to, the read gateway, the
//! dashboard and `/metrics`. The request and response types are
//! `cairn_api`'s; the routes are listed there.
//!
//! It listens on `api.listen` (127.0.0.1 by default): anyone who can reach it
//! can pin and unpin, so bind it to a LAN address only on a trusted network.
//! Every error reply's status is chosen from the error's variant
//! ([`status_of`]).

pub mod guard;
mod metrics;
pub mod range;
pub mod transfers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_api::{
    CacheView, ChainStatus, DatasetView, EntryView, ErrorBody, GrantRequest, GrantToken, MinerSeen,
    NetworkInfo, NodeInfo, PinRequest, StoreCounters,
};
use cairn_proto::{Cid, EntryKind, NodeId};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::datasets::{Dataset, Datasets};
use crate::error::{Error, Result};
use crate::server::Server;

/// Everything the API needs.
pub(crate) struct ApiState {
    pub guard: guard::Guard,
    pub server: Arc<Server>,
    pub datasets: Arc<Datasets>,
    pub hotkey: String,
    pub started: Instant,
    /// For the network facts of `/api/info`.
    pub endpoint: iroh::Endpoint,
    pub client: Arc<crate::net::Client>,
    pub verdicts: Arc<crate::verdicts::VerdictBook>,
    /// Pins and reads in progress.
    pub transfers: Arc<transfers::Transfers>,
}

/// A response body fed from a channel, so large files stream.
pub struct ChannelBody {
    rx: Option<mpsc::Receiver<Result<Bytes>>>,
    once: Option<Bytes>,
    /// A read listed among the transfers while its body is sent.
    tracked: Option<transfers::Tracked>,
}

impl ChannelBody {
    fn full(b: impl Into<Bytes>) -> Self {
        ChannelBody {
            rx: None,
            once: Some(b.into()),
            tracked: None,
        }
    }
    fn empty() -> Self {
        ChannelBody {
            rx: None,
            once: None,
            tracked: None,
        }
    }
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>>>> {
        if let Some(b) = self.once.take() {
            if let Some(t) = &self.tracked {
                t.add(b.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let this = &mut *self;
        match this.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    if let Some(t) = &this.tracked {
                        t.add(b.len() as u64);
                    }
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

type Resp = Response<ChannelBody>;

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(ChannelBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Bytes as they are (`application/octet-stream`).
fn octets(body: Vec<u8>) -> Resp {
    let mut r = Response::new(ChannelBody::full(body));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

/// The HTTP status of a library error, by its variant.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest(_) | Error::Proto(_) | Error::Erasure(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Peer { .. } | Error::BadReply { .. } | Error::Remote { .. } | Error::Corrupt(_) => {
            StatusCode::BAD_GATEWAY
        }
        Error::Store(s) if s.is_full() => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn failed(e: &Error) -> Resp {
    let status = status_of(e);
    if status.is_server_error() {
        // The caller gets the reason; the operator's log keeps it too.
        tracing::warn!(status = status.as_u16(), error = %e, "request failed");
    }
    error(status, e.to_string())
}

/// At most this many API connections are served at once; more wait in the
/// listen backlog until one ends.
pub const MAX_API_CONNECTIONS: usize = 64;

/// A request's headers (and an idle connection's next request) must arrive
/// within this, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API until `shutdown` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(MAX_API_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&connections).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: not a loop that spins.
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(req, state).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "api connection ended");
            }
        });
    }
}

/// Binds the API listener, with a clear error when the port is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Bind(format!(
            "cannot listen on {addr} for the local API: {e}; set api.listen to a free address"
        ))
    })
}

async fn route(req: Request<Incoming>, state: Arc<ApiState>) -> Resp {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let dashboard_page = path == "/";
    let mut resp = match state.guard.check(req.method(), &path, req.headers()) {
        Ok(()) => answer(req, &state, &path).await,
        Err((status, why)) => error(status, why),
    };
    guard::harden(resp.headers_mut(), dashboard_page);
    state
        .server
        .metrics
        .http(route_name(&path), resp.status().as_u16(), started.elapsed());
    resp
}

/// A path's route, as a metrics label: one of a fixed set, whatever the
/// caller sent.
fn route_name(path: &str) -> &'static str {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some("" | "dashboard.js"), None) => "dashboard",
        (Some("metrics"), None) => "metrics",
        (Some("d"), _) => "read",
        (Some("api"), Some("info")) => "info",
        (Some("api"), Some("scores")) => "scores",
        (Some("api"), Some("verdicts")) => "verdicts",
        (Some("api"), Some("dialback")) => "dialback",
        (Some("api"), Some("miners")) => "miners",
        (Some("api"), Some("transfers")) => "transfers",
        (Some("api"), Some("pins")) => "pins",
        (Some("api"), Some("pin")) => "pin",
        (Some("api"), Some("grants")) => "grants",
        // A dataset's packed stream is a read like a file's.
        (Some("api"), Some("datasets")) if path.ends_with("/bytes") => "read",
        (Some("api"), Some("datasets")) => "datasets",
        _ => "other",
    }
}

async fn answer(req: Request<Incoming>, state: &Arc<ApiState>, path: &str) -> Resp {
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, [""]) => page(include_str!("dashboard.html"), "text/html; charset=utf-8"),
        (&Method::GET, ["dashboard.js"]) => page(
            include_str!("dashboard.js"),
            "text/javascript; charset=utf-8",
        ),
        (&Method::GET, ["metrics"]) => metrics::metrics(state),
        (&Method::GET, ["api", "info"]) => json(StatusCode::OK, &info(state).await),
        (&Method::GET, ["api", "scores"]) => match &state.server.validator {
            Some(v) => json(StatusCode::OK, &v.report()),
            None => error(StatusCode::NOT_FOUND, "this node is not a validator"),
        },
        (&Method::GET, ["api", "verdicts"]) => json(StatusCode::OK, &state.verdicts.view().await),
        (&Method::GET, ["api", "dialback"]) => {
            json(StatusCode::OK, &state.verdicts.dial_back().await)
        }
        (&Method::GET, ["api", "transfers"]) => json(StatusCode::OK, &state.transfers.view()),
        (&Method::GET, ["api", "miners"]) => match miners_seen(state).await {
            Ok(m) => json(StatusCode::OK, &m),
            Err(e) => failed(&e),
        },
        (&Method::GET, ["api", "pins"]) => match state.datasets.pins() {
            Ok(p) => json(StatusCode::OK, &p),
            Err(e) => failed(&e),
        },
        (&Method::POST, ["api", "pin"]) => pin(req, state).await,
        (&Method::POST, ["api", "grants"]) => match read_json::<GrantRequest>(req).await {
            Ok(g) => issue_grant(state, g),
            Err(r) => r,
        },
        (&Method::PUT, ["api", "grants"]) => match read_json::<GrantToken>(req).await {
            Ok(t) => match state.datasets.add_grant(&t.token) {
                Ok(g) => json(StatusCode::OK, &crate::datasets::grant_view(&g)),
                Err(e) => failed(&e),
            },
            Err(r) => r,
        },
        (&Method::GET | &Method::HEAD, ["api", "datasets", rest])
        | (&Method::DELETE, ["api", "datasets", rest]) => {
            let (cid, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let cid = match cid.parse::<Cid>() {
                Ok(c) => c,
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let ds = &state.datasets;
            match (&method, sub) {
                (&Method::GET, "") => match ds.open(cid).await {
                    Ok(d) => json(StatusCode::OK, &dataset_view(&d)),
                    Err(e) => failed(&e),
                },
                (&Method::GET, "status") => match ds.open_fresh(cid).await {
                    Ok(d) => match ds.status(&d).await {
                        Ok(s) => json(StatusCode::OK, &s),
                        Err(e) => failed(&e),
                    },
                    Err(e) => failed(&e),
                },
                // The manifest as stored (its BLAKE3 is the CID): `cairn
                // get` checks what it is told against the CID it asked for.
                (&Method::GET, "manifest") => match ds.open(cid).await {
                    Ok(d) => octets(d.manifest.encode()),
                    Err(e) => failed(&e),
                },
                // The dataset's files back to back in manifest order, as
                // stored: `cairn get` reads a dataset of many files in one
                // request and cuts it at the manifest's offsets.
                (&Method::GET | &Method::HEAD, "bytes") => match ds.open(cid).await {
                    Ok(d) => {
                        let all = 0..d.manifest.total_len;
                        let tag = cid.to_string();
                        let head = method == Method::HEAD;
                        serve_bytes(&req, state, &d, all, &tag, tag.clone(), head).await
                    }
                    Err(e) => failed(&e),
                },
                (&Method::DELETE, "") => match ds.unpin(cid).await {
                    Ok(o) => json(StatusCode::OK, &o),
                    Err(e) => failed(&e),
                },
                _ => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
            }
        }
        (&Method::GET, ["d", rest @ ..]) | (&Method::HEAD, ["d", rest @ ..]) => {
            let rest = rest.join("/");
            gateway(&req, state, &rest, method == Method::HEAD).await
        }
        _ => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
    }
}

async fn info(state: &ApiState) -> NodeInfo {
    let mut network =
        crate::net::reach::network_info(&state.endpoint, &state.server.config.network);
    network.peers = state.client.peer_paths().await;
    network.connections_dialed = state.client.connections_dialed();
    network.incoming = state.server.incoming_peers();
    (network.bytes_in, network.bytes_out) = state.server.metrics.transfer_totals();
    let store = &state.server.store;
    let s = store.stats().unwrap_or_default();
    NodeInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        node_id: state.server.node_id.to_string(),
        hotkey: state.hotkey.clone(),
        role: state.server.config.role.to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        rss_bytes: rss_bytes(),
        store: StoreCounters {
            capacity: s.capacity,
            used_bytes: s.used_bytes,
            reserved_bytes: s.reserved_bytes,
            shard_count: s.shard_count,
            record_bytes: s.record_bytes,
            fs_available: s.fs_available,
            reconcile_done: s.reconcile_done,
            orphans_removed: s.orphans_removed,
            temporaries_removed: s.temporaries_removed,
            lost_found: s.lost_found,
            scrubbed: s.scrubbed,
            corrupt_found: s.corrupt_found,
        },
        free_bytes: store.free_bytes().unwrap_or(0),
        chain: Some(chain_status(state, &network).await),
        network: Some(network),
        cache: {
            let c = state.datasets.cache_stats();
            (c.budget > 0).then_some(CacheView {
                budget: c.budget,
                bytes: c.bytes,
                hits: c.hits,
                misses: c.misses,
            })
        },
        problems: crate::logging::recent_problems(),
        now_ms: cairn_store::unix_millis(),
        volumes: store
            .volumes()
            .unwrap_or_default()
            .into_iter()
            .map(|v| cairn_api::VolumeView {
                index: v.index,
                path: v.path.display().to_string(),
                capacity: v.capacity,
                used_bytes: v.used_bytes,
                fs_available: v.fs_available,
                present: v.present,
                configured: v.configured,
            })
            .collect(),
    }
}

/// This node's record as the registry holds it now, against what it
/// publishes. In chain mode the members come from the metagraph cache (a
/// read at most every 30 s), so the page's polling costs the chain nothing.
async fn chain_status(state: &ApiState, network: &NetworkInfo) -> ChainStatus {
    use crate::registry::{AnyRegistry, Registry};
    let registry = &state.server.registry;
    let mut c = ChainStatus {
        kind: match registry {
            AnyRegistry::Local(_) => "local",
            AnyRegistry::Subtensor(_) => "subtensor",
        }
        .to_string(),
        chain_errors: registry
            .chain_errors()
            .map(|e| e.iter().map(|(_, n)| n).sum())
            .unwrap_or(0),
        ..ChainStatus::default()
    };
    if let AnyRegistry::Subtensor(s) = registry
        && let Some((block, age)) = s.last_read().await
    {
        c.last_block = Some(block);
        c.last_read_secs = Some(age.as_secs());
    }
    match registry.member(&state.server.node_id).await {
        Ok(Some(m)) => {
            c.registered = true;
            c.published = m.addrs.iter().map(|a| a.to_string()).collect();
            let mut held = c.published.clone();
            let mut now = network.published.clone();
            held.sort();
            now.sort();
            c.addresses_match = held == now;
            if !c.addresses_match {
                c.advice = "the registry holds other addresses than the node publishes now: restart the node to publish again, and check network.external_addrs".into();
            }
        }
        Ok(None) => {
            c.advice = match registry {
                AnyRegistry::Local(_) => "this node is not in the registry directory: run `cairn init` with the network's --registry".into(),
                AnyRegistry::Subtensor(_) => "no commitment on the subnet names this node: register the hotkey (`btcli subnets register` or `cairn register`), then restart the node to publish its address".into(),
            };
        }
        Err(e) => {
            c.error = Some(e.to_string());
            c.advice = "the registry could not be read: check chain.endpoint (or the registry directory) and the network".into();
        }
    }
    c
}

/// The registered miners and how this node sees each: whether it failed
/// lately, and the open connection's path.
async fn miners_seen(state: &ApiState) -> Result<Vec<MinerSeen>> {
    let paths = state.client.peer_paths().await;
    Ok(state
        .datasets
        .registered_miners()
        .await?
        .into_iter()
        .map(|m| {
            let id = m.node_id.to_string();
            let path = paths.iter().find(|p| p.node_id == id);
            MinerSeen {
                suspect: state.client.is_suspect(&m.node_id),
                path: path.map(|p| p.path.clone()),
                rtt_ms: path.map(|p| p.rtt_ms),
                addrs: m.addrs.iter().map(|a| a.to_string()).collect(),
                hotkey: m.hotkey,
                node_id: id,
            }
        })
        .collect())
}

/// This process's resident memory, from /proc.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// A static page of the dashboard.
fn page(body: &'static str, content_type: &'static str) -> Resp {
    let mut r = Response::new(ChannelBody::full(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn dataset_view(ds: &Dataset) -> DatasetView {
    let m = &ds.manifest;
    DatasetView {
        cid: ds.cid.to_string(),
        bytes: m.total_len,
        single_file: m.single_file,
        data_shards: m.data_shards,
        parity_shards: m.parity_shards,
        segment_size: m.segment_size,
        segments: m.segments.len(),
        placement_version: ds.placement.version,
        entries: m
            .entries
            .iter()
            .map(|e| EntryView {
                path: e.path.clone(),
                kind: match e.kind {
                    EntryKind::File => cairn_api::EntryKind::File,
                    EntryKind::Dir => cairn_api::EntryKind::Dir,
                },
                size: e.size,
                offset: e.offset,
                blake3: data_encoding::HEXLOWER.encode(&e.blake3),
                executable: e.executable,
            })
            .collect(),
    }
}

/// Reads the pin header, then feeds the body to the pin pipeline. A pin
/// refused early still reads the rest of the body, so the client, which
/// sends it all before it reads a reply, gets the reason.
/// Largest JSON body of a small API request.
const MAX_JSON_BODY: usize = 64 << 10;

/// Reads a small JSON body, bounded before it is buffered.
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Resp> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY);
    let bytes = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {e} (at most {MAX_JSON_BODY} bytes)"),
            ));
        }
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

fn issue_grant(state: &ApiState, g: GrantRequest) -> Resp {
    let reader = match g.reader.trim().parse::<NodeId>() {
        Ok(r) => r,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "reader {:?} is not a node id (64 hex digits, as `cairn info` prints it)",
                    g.reader
                ),
            );
        }
    };
    let shard = match g.shard.as_deref().map(str::parse::<cairn_proof::ShardId>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match state.datasets.issue_grant(reader, g.ttl_secs, shard) {
        Ok(grant) => json(StatusCode::OK, &crate::datasets::grant_view(&grant)),
        Err(e) => failed(&e),
    }
}

async fn pin(req: Request<Incoming>, state: &ApiState) -> Resp {
    let mut body = req.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut header: Option<PinRequest> = None;
    // Read until the header is complete.
    while header.is_none() {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    buf.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the pin body: {e}"),
                );
            }
            None => return error(StatusCode::BAD_REQUEST, "pin body ended inside its header"),
        }
        match cairn_api::decode_pin_header(&buf) {
            Ok(None) => {}
            Ok(Some((h, used))) => {
                header = Some(h);
                buf.drain(..used);
            }
            Err(e @ cairn_api::ApiError::PinHeaderTooLarge { .. }) => {
                return error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let Some(header) = header else {
        return error(StatusCode::BAD_REQUEST, "pin body ended inside its header");
    };
    // Listed until the pin is answered (placing goes on after the last byte).
    let tracked = state.transfers.start(
        "pin",
        header.name.clone(),
        Some(
            header
                .files
                .iter()
                .fold(0u64, |n, f| n.saturating_add(f.size)),
        ),
    );
    let received = tracked.counter();
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let feeder = tokio::spawn(async move {
        let mut tx = Some(tx);
        received.fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if !buf.is_empty()
            && let Some(t) = &tx
            && t.send(Bytes::from(buf)).await.is_err()
        {
            tx = None;
        }
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| format!("the pin body broke off: {e}"))?;
            let Ok(d) = f.into_data() else {
                continue;
            };
            received.fetch_add(d.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = &tx
                && t.send(d).await.is_err()
            {
                // The pipeline stopped (an error): read on, discarding.
                tx = None;
            }
        }
        Ok::<(), String>(())
    });
    let result = state.datasets.pin(header, rx).await;
    let fed = feeder
        .await
        .unwrap_or_else(|e| Err(format!("the pin body reader failed: {e}")));
    match (result, fed) {
        (Ok(outcome), _) => {
            tracing::info!(cid = %outcome.cid, bytes = outcome.bytes, secs = outcome.seconds, "pinned");
            json(StatusCode::OK, &outcome)
        }
        (Err(e), Err(feed)) => error(StatusCode::BAD_REQUEST, format!("{feed} ({e})")),
        (Err(e), Ok(())) => {
            tracing::warn!(error = %e, "pin failed");
            failed(&e)
        }
    }
}

async fn gateway(req: &Request<Incoming>, state: &ApiState, rest: &str, head: bool) -> Resp {
    let (cid_str, path) = rest.split_once('/').unwrap_or((rest, ""));
    let cid = match cid_str.parse::<Cid>() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(path) = range::decode_path(path) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the path is not UTF-8 once decoded",
        );
    };
    let ds = match state.datasets.open(cid).await {
        Ok(ds) => ds,
        Err(e) => return failed(&e),
    };
    let m = &ds.manifest;
    let entry = if path.is_empty() && m.single_file && m.entries.len() == 1 {
        &m.entries[0]
    } else {
        match m.entry(&path) {
            Some(e) if e.kind == EntryKind::File => e,
            Some(_) => return error(StatusCode::BAD_REQUEST, format!("{path:?} is a directory")),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("{cid} has no file {path:?}; `cairn get {cid}` lists its files"),
                );
            }
        }
    };
    let name = if path.is_empty() {
        cid.to_string()
    } else {
        format!("{cid}/{path}")
    };
    let etag = data_encoding::HEXLOWER.encode(&entry.blake3);
    let bytes = entry.offset..entry.offset + entry.size;
    serve_bytes(req, state, &ds, bytes, &etag, name, head).await
}

/// Serves the bytes `stream` of a dataset's packed stream (one file's, or
/// the whole stream), honouring a `Range` header within them: small reads
/// from the groups that hold them, longer ones streamed a segment at a time.
async fn serve_bytes(
    req: &Request<Incoming>,
    state: &ApiState,
    ds: &crate::datasets::Dataset,
    stream: std::ops::Range<u64>,
    etag: &str,
    name: String,
    head: bool,
) -> Resp {
    let (base, len) = (stream.start, stream.end - stream.start);
    let range = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| range::parse_range(h, len));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range outside the {len} bytes of {name}"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let tracked = || {
        state
            .transfers
            .start("read", name.clone(), Some(end - start))
    };
    let (a, b) = (base + start, base + end);
    let body = if head || start == end {
        ChannelBody::empty()
    } else if Datasets::is_small_read(ds, a, b) {
        match state.datasets.read_in_segment(ds, a, b).await {
            Ok(bytes) => ChannelBody {
                rx: None,
                once: Some(bytes),
                tracked: Some(tracked()),
            },
            Err(e) => return failed(&e),
        }
    } else {
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(Arc::clone(&state.datasets).stream_range(ds.clone(), a, b, tx));
        // The first segment decides the status: a dataset that cannot be read
        // gets an error reply, not a 200 that breaks off.
        match rx.recv().await {
            Some(Ok(first)) => ChannelBody {
                rx: Some(rx),
                once: Some(first),
                tracked: Some(tracked()),
            },
            Some(Err(e)) => return failed(&e),
            None => return error(StatusCode::INTERNAL_SERVER_ERROR, "the reader stopped"),
        }
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        hyper::header::ACCEPT_RANGES,
        HeaderValue::from_static("bytes"),
    );
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(hyper::header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(hyper::header::CONTENT_RANGE, v);
    }
    r
}
