//! The blocking client of the local API (ureq): what the `cairn` CLI and
//! `cairn-validator status` use to talk to a daemon. Request bodies stream
//! from a reader of known length; file bodies stream to the caller.

use std::io::{BufReader, Read};
use std::net::SocketAddr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

use crate::{
    DatasetStatus, DatasetView, DialBackView, ErrorBody, GrantRequest, GrantToken, GrantView,
    MinerSeen, NodeInfo, PinOutcome, PinRecord, PinRequest, TransferView, UnpinOutcome,
    ValidatorReport, VerdictsView,
};

/// What can go wrong talking to a daemon.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing listens there.
    #[error(
        "cannot reach the cairn daemon's API at {addr}: {detail}; is `cairn run` (or `cairn devnet up`) running? Point the CLI elsewhere with --api or CAIRN_API"
    )]
    Unreachable { addr: SocketAddr, detail: String },
    /// The daemon answered with an error status and this message.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// The exchange broke off, or the reply was not what this API sends.
    #[error("{0}")]
    Transfer(String),
    /// A pin header (the file list) longer than a daemon reads.
    #[error(
        "the pin header (file list) is {len} bytes, above the {max} a daemon reads; pin the files in several datasets",
        max = crate::MAX_PIN_HEADER
    )]
    PinHeaderTooLarge { len: u64 },
    /// A pin header that is not the JSON file list.
    #[error("pin header: {0}")]
    BadPinHeader(String),
    /// Reading the input to send failed.
    #[error("reading the input: {0}")]
    Input(#[source] std::io::Error),
}

/// Where the daemon's API listens, and the token that lets this client
/// change things there (the daemon's `api.token`).
#[derive(Debug, Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    agent: ureq::Agent,
    token: Option<String>,
}

/// Everything but unreserved characters and `/` is escaped in a file path.
/// The most of a manifest the client reads: the protocol's limit on a
/// manifest (`cairn_proto::wire::MAX_MANIFEST_LEN`; a test checks they agree).
pub const MAX_MANIFEST_REPLY: u64 = 64 << 20;

/// The most of a JSON reply the client reads (a manifest's listing of
/// files is the largest the daemon sends: several times the manifest).
pub const MAX_JSON_REPLY: u64 = 256 << 20;

const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A dataset path as it goes in a gateway URL.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, PATH).to_string()
}

/// A file's bytes as they arrive.
pub struct FileStream {
    reader: Box<dyn Read + Send>,
    /// `Content-Length` of the reply.
    pub len: Option<u64>,
}

impl Read for FileStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "the transfer broke off ({e}): the daemon could not read the rest \
                     (too few miners answering? `cairn status` shows which)"
                ),
            )
        })
    }
}

/// Counts what a reader hands out.
struct Counting<'a, R> {
    inner: R,
    sent: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.progress)(self.sent);
        Ok(n)
    }
}

impl ApiClient {
    pub fn new(addr: SocketAddr) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build();
        ApiClient {
            addr,
            agent: config.into(),
            token: None,
        }
    }

    /// Sends `token` with every request (`Authorization: Bearer`).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        self
    }

    fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn failed(&self, e: ureq::Error) -> ApiError {
        match e {
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                ApiError::Unreachable {
                    addr: self.addr,
                    detail: io.to_string(),
                }
            }
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ApiError::Unreachable {
                addr: self.addr,
                detail: e.to_string(),
            },
            ureq::Error::Timeout(_) => ApiError::Unreachable {
                addr: self.addr,
                detail: e.to_string(),
            },
            other => ApiError::Transfer(format!("talking to the daemon at {}: {other}", self.addr)),
        }
    }

    /// Turns an error status into [`ApiError::Refused`] with the daemon's message.
    fn check(
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<ureq::http::Response<ureq::Body>, ApiError> {
        let status = resp.status().as_u16();
        if status < 400 {
            return Ok(resp);
        }
        let mut body = resp.into_body();
        let text = body
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("the daemon replied {status}: {}", text.trim()));
        Err(ApiError::Refused { status, message })
    }

    fn json<T: DeserializeOwned>(
        &self,
        resp: ureq::http::Response<ureq::Body>,
    ) -> Result<T, ApiError> {
        let resp = Self::check(resp)?;
        let reader = BufReader::new(
            resp.into_body()
                .into_with_config()
                .limit(MAX_JSON_REPLY)
                .reader(),
        );
        serde_json::from_reader(reader)
            .map_err(|e| ApiError::Transfer(format!("the daemon's reply does not parse: {e}")))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let resp = self
            .authorized(self.agent.get(self.url(path)))
            .call()
            .map_err(|e| self.failed(e))?;
        self.json(resp)
    }

    pub fn info(&self) -> Result<NodeInfo, ApiError> {
        self.get("/api/info")
    }

    pub fn pins(&self) -> Result<Vec<PinRecord>, ApiError> {
        self.get("/api/pins")
    }

    /// A dataset's manifest, by CID.
    pub fn dataset(&self, cid: &str) -> Result<DatasetView, ApiError> {
        self.get(&format!("/api/datasets/{}", encode_path(cid)))
    }

    pub fn status(&self, cid: &str) -> Result<DatasetStatus, ApiError> {
        self.get(&format!("/api/datasets/{}/status", encode_path(cid)))
    }

    pub fn unpin(&self, cid: &str) -> Result<UnpinOutcome, ApiError> {
        let resp = self
            .authorized(
                self.agent
                    .delete(self.url(&format!("/api/datasets/{}", encode_path(cid)))),
            )
            .call()
            .map_err(|e| self.failed(e))?;
        self.json(resp)
    }

    /// A validator's scoreboard.
    pub fn scores(&self) -> Result<ValidatorReport, ApiError> {
        self.get("/api/scores")
    }

    /// Asks a validator to dial this node back from outside.
    pub fn dial_back(&self) -> Result<DialBackView, ApiError> {
        self.get("/api/dialback")
    }

    /// What the validators say about this node.
    pub fn verdicts(&self) -> Result<VerdictsView, ApiError> {
        self.get("/api/verdicts")
    }

    /// The transfers through the API in progress.
    pub fn transfers(&self) -> Result<Vec<TransferView>, ApiError> {
        self.get("/api/transfers")
    }

    /// The registered miners and how this node sees each.
    pub fn miners(&self) -> Result<Vec<MinerSeen>, ApiError> {
        self.get("/api/miners")
    }

    fn send_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        let url = self.url(path);
        let req = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let resp = self
            .authorized(req)
            .content_type("application/json")
            .send(&serde_json::to_vec(body).unwrap_or_default()[..])
            .map_err(|e| self.failed(e))?;
        self.json(resp)
    }

    /// A read grant from this node (the owner) to another.
    pub fn grant_new(&self, req: &GrantRequest) -> Result<GrantView, ApiError> {
        self.send_json("POST", "/api/grants", req)
    }

    /// Keeps a grant another node made out to this one.
    pub fn grant_add(&self, token: &str) -> Result<GrantView, ApiError> {
        self.send_json(
            "PUT",
            "/api/grants",
            &GrantToken {
                token: token.to_string(),
            },
        )
    }

    /// Pins: sends the header, then `len` bytes of `body` (the files in
    /// path order), calling `progress` with the file bytes sent so far.
    pub fn pin(
        &self,
        header: &PinRequest,
        body: &mut dyn Read,
        len: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<PinOutcome, ApiError> {
        let prefix = crate::encode_pin_header(header)?;
        let prefix_len = prefix.len() as u64;
        let mut report = |sent: u64| progress(sent.saturating_sub(prefix_len));
        let mut reader = Counting {
            inner: std::io::Cursor::new(prefix).chain(ExactLen {
                inner: body,
                left: len,
            }),
            sent: 0,
            progress: &mut report,
        };
        let resp = self
            .authorized(self.agent.post(self.url("/api/pin")))
            .header("Content-Type", "application/octet-stream")
            // A daemon that refuses the pin at once (no token, say) answers
            // before the files are sent, not after.
            .header("Expect", "100-continue")
            .header("Content-Length", (prefix_len + len).to_string())
            .send(ureq::SendBody::from_reader(&mut reader));
        match resp {
            Ok(r) => self.json(r),
            // Reading the input failed: say so, not "cannot reach".
            Err(ureq::Error::Io(e)) if e.get_ref().is_some_and(|i| i.is::<InputError>()) => {
                Err(ApiError::Input(e))
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A dataset's manifest as stored (its BLAKE3 is the CID), at most
    /// [`MAX_MANIFEST_REPLY`] bytes.
    pub fn manifest(&self, cid: &str) -> Result<Vec<u8>, ApiError> {
        let url = self.url(&format!("/api/datasets/{}/manifest", encode_path(cid)));
        let resp = self
            .authorized(self.agent.get(url))
            .call()
            .map_err(|e| self.failed(e))?;
        Self::check(resp)?
            .into_body()
            .with_config()
            .limit(MAX_MANIFEST_REPLY)
            .read_to_vec()
            .map_err(|e| ApiError::Transfer(format!("the manifest did not come whole: {e}")))
    }

    /// A dataset's packed stream: its files back to back in manifest order
    /// (each at its entry's `offset`), in one response.
    pub fn dataset_bytes(&self, cid: &str) -> Result<FileStream, ApiError> {
        let url = self.url(&format!("/api/datasets/{}/bytes", encode_path(cid)));
        self.stream(self.agent.get(url))
    }

    /// A file of a dataset (or bytes `[start, end]` of it, inclusive as in
    /// HTTP), streamed.
    pub fn file(&self, cid: &str, path: &str, range: Option<&str>) -> Result<FileStream, ApiError> {
        let url = self.url(&format!("/d/{}/{}", encode_path(cid), encode_path(path)));
        let mut req = self.agent.get(url);
        if let Some(r) = range {
            req = req.header("Range", format!("bytes={r}"));
        }
        self.stream(req)
    }

    /// Sends a read and hands out its body as it arrives. The token goes
    /// along: on a non-loopback bind the API wants it for reads too.
    fn stream(
        &self,
        req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<FileStream, ApiError> {
        let req = self.authorized(req);
        let resp = Self::check(req.call().map_err(|e| self.failed(e))?)?;
        let body = resp.into_body();
        let len = body.content_length();
        Ok(FileStream {
            reader: Box::new(body.into_reader()),
            len,
        })
    }
}

/// An input that must hand out exactly `left` more bytes: a file that
/// shrinks while it is being sent is an error, not a short pin.
struct ExactLen<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

/// Marks an input failure inside ureq's I/O error.
#[derive(Debug)]
struct InputError(std::io::Error);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InputError {}

impl Read for ExactLen<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => Err(std::io::Error::other(InputError(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the input ended {} bytes early: a file changed while it was being sent; nothing was pinned",
                    self.left
                ),
            )))),
            Ok(n) => {
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) => Err(std::io::Error::other(InputError(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_escaped_but_slashes_kept() {
        assert_eq!(super::encode_path("a b/c%d"), "a%20b/c%25d");
        assert_eq!(super::encode_path("x/ü.bin"), "x/%C3%BC.bin");
    }
}
