//! The local HTTP API: what the CLI talks to, the read gateway, the
//! dashboard and `/metrics`.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | dashboard (HTML, refreshes itself) |
//! | `GET /metrics` | Prometheus text |
//! | `GET /api/info` | node id, role, store counters (JSON) |
//! | `GET /api/pins` | this node's pins (JSON) |
//! | `POST /api/pin` | pin: body = u32 BE header length, JSON [`PinRequest`], then the packed file bytes |
//! | `GET /api/datasets/<cid>` | a dataset's manifest (JSON) |
//! | `GET /api/datasets/<cid>/status` | per-segment and per-miner health (JSON) |
//! | `DELETE /api/datasets/<cid>` | unpin (idempotent) |
//! | `GET /d/<cid>/<path>` | a file of a dataset, streamed, with `Range` support |
//!
//! It listens on `api.listen` (127.0.0.1 by default): anyone who can reach it
//! can pin and unpin, so bind it to a LAN address only on a trusted network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RANGE};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::datasets::{self, DatasetContext, PinRequest};
use crate::manifest::{Cid, EntryKind};
use crate::server::NodeState;
use crate::{Error, Result};

/// Largest pin header (the JSON file list).
const MAX_PIN_HEADER: u32 = 64 << 20;

/// Everything the API needs.
pub struct ApiState {
    pub node: Arc<NodeState>,
    pub ctx: DatasetContext,
    pub hotkey: String,
    pub started: Instant,
}

/// A response body fed from a channel, so large files stream.
pub struct ChannelBody {
    rx: Option<mpsc::Receiver<Result<Bytes>>>,
    once: Option<Bytes>,
}

impl ChannelBody {
    fn full(b: impl Into<Bytes>) -> Self {
        ChannelBody {
            rx: None,
            once: Some(b.into()),
        }
    }
    fn empty() -> Self {
        ChannelBody {
            rx: None,
            once: None,
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
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.rx.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
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

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// Maps a library error to an HTTP status.
fn error_status(e: &Error) -> StatusCode {
    let s = e.to_string();
    if s.contains("malformed CID") {
        StatusCode::BAD_REQUEST
    } else if s.contains("unknown CID") {
        StatusCode::NOT_FOUND
    } else if s.contains("shards could be fetched") || s.contains("miners") {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Serves the API until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ApiState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(req, state).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
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
        Error::Other(format!(
            "cannot listen on {addr} for the local API: {e}; set api.listen to a free address"
        ))
    })
}

async fn route(req: Request<Incoming>, state: Arc<ApiState>) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(3, '/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, [""]) => dashboard(),
        (&Method::GET, ["metrics"]) => metrics(&state),
        (&Method::GET, ["api", "info"]) => json(StatusCode::OK, &info(&state)),
        (&Method::GET, ["api", "scores"]) => match &state.node.scores_hook {
            Some(hook) => json(StatusCode::OK, &hook()),
            None => error(StatusCode::NOT_FOUND, "this node is not a validator"),
        },
        (&Method::GET, ["api", "pins"]) => match datasets::list_pins(&state.ctx.store) {
            Ok(p) => json(StatusCode::OK, &p),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        (&Method::POST, ["api", "pin"]) => pin(req, &state).await,
        (&Method::GET, ["api", "datasets", rest])
        | (&Method::DELETE, ["api", "datasets", rest]) => {
            let (cid, sub) = rest.split_once('/').unwrap_or((rest, ""));
            let cid = match cid.parse::<Cid>() {
                Ok(c) => c,
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match (&method, sub) {
                (&Method::GET, "") => match datasets::open_dataset(&state.ctx, cid).await {
                    Ok(ds) => json(StatusCode::OK, &manifest_json(&ds)),
                    Err(e) => error(error_status(&e), e.to_string()),
                },
                (&Method::GET, "status") => {
                    match datasets::open_dataset_fresh(&state.ctx, cid).await {
                        Ok(ds) => match datasets::status(&state.ctx, &ds).await {
                            Ok(s) => json(StatusCode::OK, &s),
                            Err(e) => error(error_status(&e), e.to_string()),
                        },
                        Err(e) => error(error_status(&e), e.to_string()),
                    }
                }
                (&Method::DELETE, "") => match datasets::unpin(&state.ctx, cid)
                    .await
                    .inspect(|_| datasets::forget_dataset(&state.ctx, &cid))
                {
                    Ok(o) => json(StatusCode::OK, &o),
                    Err(e) => error(error_status(&e), e.to_string()),
                },
                _ => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
            }
        }
        (&Method::GET, ["d", rest @ ..]) | (&Method::HEAD, ["d", rest @ ..]) => {
            let rest = rest.join("/");
            gateway(&req, &state, &rest, method == Method::HEAD).await
        }
        _ => error(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
    }
}

fn info(state: &ApiState) -> serde_json::Value {
    let stats = state.node.store.stats().unwrap_or_default();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": state.node.node_id.to_string(),
        "hotkey": state.hotkey,
        "role": state.node.config.role.to_string(),
        "uptime_secs": state.started.elapsed().as_secs(),
        "rss_bytes": rss_bytes(),
        "store": stats,
        "free_bytes": state.node.store.free_bytes().unwrap_or(0),
    })
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

fn metrics(state: &ApiState) -> Resp {
    let s = state.node.store.stats().unwrap_or_default();
    let mut out = String::new();
    let mut g = |name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        ));
    };
    g(
        "cairn_capacity_bytes",
        "Configured shard capacity.",
        s.capacity,
    );
    g(
        "cairn_used_bytes",
        "Bytes used by stored shards and outboards.",
        s.used_bytes,
    );
    g(
        "cairn_reserved_bytes",
        "Bytes reserved by writes in flight.",
        s.reserved_bytes,
    );
    g("cairn_shards", "Shard records held.", s.shard_count);
    g(
        "cairn_manifest_bytes",
        "Bytes of manifests held.",
        s.manifest_bytes,
    );
    g(
        "cairn_reconcile_done",
        "1 once the start-up reconcile has finished.",
        u64::from(s.reconcile_done),
    );
    g(
        "cairn_orphans_removed_total",
        "Orphan shard files removed by reconcile.",
        s.orphans_removed,
    );
    g(
        "cairn_lost_shards_found_total",
        "Shards found missing by reconcile.",
        s.lost_found,
    );
    g(
        "cairn_scrubbed_shards_total",
        "Shards re-hashed by the scrub.",
        s.scrubbed,
    );
    g(
        "cairn_corrupt_shards_found_total",
        "Shards that failed the scrub (bit rot).",
        s.corrupt_found,
    );
    g(
        "cairn_resident_memory_bytes",
        "Resident set size of the process.",
        rss_bytes(),
    );
    g(
        "cairn_uptime_seconds",
        "Seconds since start.",
        state.started.elapsed().as_secs(),
    );
    let mut r = Response::new(ChannelBody::full(out));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn dashboard() -> Resp {
    let mut r = Response::new(ChannelBody::full(DASHBOARD));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

const DASHBOARD: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cairn node</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}
td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}code{font-size:12px}</style></head>
<body><h1>cairn node</h1><table id="info"></table><h2>Pins</h2><table id="pins"></table>
<p><a href="/metrics">/metrics</a></p>
<script>
const mib = b => (b / 1048576).toFixed(1) + " MiB";
async function refresh() {
  const i = await (await fetch("/api/info")).json();
  const rows = [["node id", "<code>" + i.node_id + "</code>"], ["hotkey", i.hotkey], ["role", i.role],
    ["version", i.version], ["uptime", i.uptime_secs + " s"], ["memory", mib(i.rss_bytes)],
    ["used", mib(i.store.used_bytes) + " of " + mib(i.store.capacity)], ["shards", i.store.shard_count],
    ["reconcile", i.store.reconcile_done ? "done" : "running"],
    ["scrubbed / corrupt", i.store.scrubbed + " / " + i.store.corrupt_found]];
  document.getElementById("info").innerHTML = rows.map(r => "<tr><th>" + r[0] + "</th><td>" + r[1] + "</td></tr>").join("");
  const p = await (await fetch("/api/pins")).json();
  document.getElementById("pins").innerHTML = "<tr><th>name</th><th>CID</th><th>size</th><th>files</th></tr>" +
    p.map(x => "<tr><td>" + x.name + "</td><td><code>" + x.cid + "</code></td><td>" + mib(x.bytes) + "</td><td>" + x.files + "</td></tr>").join("");
}
refresh(); setInterval(refresh, 5000);
</script></body></html>
"#;

fn manifest_json(ds: &datasets::Dataset) -> serde_json::Value {
    let m = &ds.manifest;
    serde_json::json!({
        "cid": ds.cid.to_string(),
        "bytes": m.total_len,
        "single_file": m.single_file,
        "data_shards": m.data_shards,
        "parity_shards": m.parity_shards,
        "segment_size": m.segment_size,
        "segments": m.segments.len(),
        "placement_version": ds.placement.version,
        "entries": m.entries,
    })
}

/// Reads the pin header, then feeds the body to the pin pipeline.
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
        if buf.len() >= 4 {
            let n = u32::from_be_bytes(buf[..4].try_into().expect("4"));
            if n > MAX_PIN_HEADER {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("pin header of {n} bytes"),
                );
            }
            if buf.len() >= 4 + n as usize {
                match serde_json::from_slice::<PinRequest>(&buf[4..4 + n as usize]) {
                    Ok(h) => header = Some(h),
                    Err(e) => return error(StatusCode::BAD_REQUEST, format!("pin header: {e}")),
                }
                buf.drain(..4 + n as usize);
            }
        }
    }
    let header = header.expect("loop exits with a header");
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let feeder = tokio::spawn(async move {
        if !buf.is_empty() && tx.send(Bytes::from(buf)).await.is_err() {
            return Ok(());
        }
        while let Some(f) = body.frame().await {
            let f = f.map_err(|e| format!("the pin body broke off: {e}"))?;
            if let Ok(d) = f.into_data()
                && tx.send(d).await.is_err()
            {
                return Ok(());
            }
        }
        Ok::<(), String>(())
    });
    let result = datasets::pin(&state.ctx, header, rx).await;
    let fed = feeder.await.unwrap_or_else(|e| Err(e.to_string()));
    match (result, fed) {
        (Ok(outcome), _) => {
            tracing::info!(cid = %outcome.cid, bytes = outcome.bytes, secs = outcome.seconds, "pinned");
            json(StatusCode::OK, &outcome)
        }
        (Err(e), Err(feed)) => error(StatusCode::BAD_REQUEST, format!("{feed} ({e})")),
        (Err(e), Ok(())) => {
            tracing::warn!(error = %e, "pin failed");
            error(
                if e.to_string().contains("miners") {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_REQUEST
                },
                e.to_string(),
            )
        }
    }
}

/// Parses a single `bytes=` range against a length; `None` means "serve it all".
fn parse_range(h: &str, len: u64) -> Option<std::result::Result<(u64, u64), ()>> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: serve the whole entity (RFC 9110 allows it)
    }
    let (a, b) = spec.split_once('-')?;
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(len)
        };
        if start >= len || start >= end {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(r))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn gateway(req: &Request<Incoming>, state: &ApiState, rest: &str, head: bool) -> Resp {
    let (cid_str, path) = rest.split_once('/').unwrap_or((rest, ""));
    let cid = match cid_str.parse::<Cid>() {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let path = percent_decode(path);
    let ds = match datasets::open_dataset(&state.ctx, cid).await {
        Ok(ds) => ds,
        Err(e) => return error(error_status(&e), e.to_string()),
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
    let len = entry.size;
    let range = req
        .headers()
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| parse_range(h, len));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range outside a {len}-byte file"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if head || start == end {
        ChannelBody::empty()
    } else {
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(datasets::stream_range(
            state.ctx.clone(),
            ds.clone(),
            entry.offset + start,
            entry.offset + end,
            tx,
        ));
        // The first segment decides the status: a dataset that cannot be read
        // gets an error reply, not a 200 that breaks off.
        match rx.recv().await {
            Some(Ok(first)) => ChannelBody {
                rx: Some(rx),
                once: Some(first),
            },
            Some(Err(e)) => return error(error_status(&e), e.to_string()),
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
    if let Ok(v) = HeaderValue::from_str(&format!(
        "\"{}\"",
        data_encoding::HEXLOWER.encode(&entry.blake3)
    )) {
        h.insert(hyper::header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(hyper::header::CONTENT_RANGE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(parse_range("bytes=-5", 100), Some(Ok((95, 100))));
        assert_eq!(parse_range("bytes=50-1000", 100), Some(Ok((50, 100))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b/c%2Fd"), "a b/c/d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
