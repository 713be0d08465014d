//! The cairn wire protocol: length-prefixed, versioned binary frames.
//!
//! One bi-directional QUIC stream per request. Every message is a frame:
//!
//! ```text
//! u32 BE  length of what follows (version + kind + payload)
//! u8      version (1)
//! u8      kind
//! ...     payload, fixed layout per kind, integers little-endian
//! ```
//!
//! The reader checks the length against a limit chosen by the caller for
//! the frame it expects *before* allocating, and a payload must be consumed
//! exactly (no trailing bytes). Bulk bytes (shard data, outboards,
//! manifests) follow their header frame raw, with their length announced in
//! it, so they stream without being framed or buffered whole.
//!
//! Anything that does not parse gets a typed [`ErrorCode`] reply; nothing
//! here panics on input. Reading and writing frames on a QUIC stream is the
//! daemon's business (`cairn_node::net::frames`); this module only encodes,
//! decodes and bounds.

use cairn_proof::ShardId;

use crate::{Grant, ShardState};

/// Protocol version written in every frame.
pub const VERSION: u8 = 1;
/// Limit for control frames (requests, most responses).
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;
/// Largest manifest accepted.
pub const MAX_MANIFEST_LEN: u64 = 64 << 20;
/// Most inventory entries in one page.
pub const MAX_INVENTORY_PAGE: u32 = 1024;
/// Most shard ids in one `Has` request.
pub const MAX_HAS_IDS: usize = 1024;
/// Most node ids in one reply (fits a control frame).
pub const MAX_NODES_REPLY: usize = 2000;
/// Largest placement record accepted.
pub const MAX_PLACEMENT_LEN: u64 = 32 << 20;
/// Most verdicts in one reply: what a validator keeps per miner.
pub const MAX_VERDICTS: usize = 32;
/// Longest reason of one verdict, in bytes (UTF-8).
pub const MAX_VERDICT_REASON: usize = 240;

/// A request, from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Followed by `len` raw bytes. `on_behalf` is honoured from validators
    /// only (repair places shards for the pinner).
    PutShard {
        id: ShardId,
        len: u64,
        on_behalf: Option<[u8; 32]>,
    },
    /// Bytes `[offset, offset + length)`; `length == u64::MAX` means to the
    /// end. A reader that did not place the shard presents an owner's grant.
    GetShard {
        id: ShardId,
        offset: u64,
        length: u64,
        grant: Option<Grant>,
    },
    Challenge {
        id: ShardId,
        len: u64,
        nonce: [u8; 32],
        samples: u16,
    },
    Inventory {
        after: Option<ShardId>,
        limit: u32,
    },
    /// Followed by `len` raw bytes.
    PutManifest {
        cid: [u8; 32],
        len: u64,
    },
    GetManifest {
        cid: [u8; 32],
    },
    DeleteShard {
        id: ShardId,
        on_behalf: Option<[u8; 32]>,
    },
    DeleteManifest {
        cid: [u8; 32],
    },
    Info,
    /// Asks a validator to audit the dataset of this manifest (its owner only).
    Audit {
        cid: [u8; 32],
    },
    /// Tells a validator the owner unpinned this dataset: stop auditing it.
    Release {
        cid: [u8; 32],
    },
    /// Followed by `len` raw bytes of a signed placement for `cid`.
    PutPlacement {
        cid: [u8; 32],
        len: u64,
    },
    GetPlacement {
        cid: [u8; 32],
    },
    /// Which of these shards are held here (at most [`MAX_HAS_IDS`]).
    Has {
        ids: Vec<ShardId>,
    },
    /// Asks a validator which miners passed their vetting.
    Vetted,
    /// Asks a validator how it judged the asker: its standing and its last
    /// challenges. The subject is the QUIC peer, never named in the request,
    /// so nobody can read another miner's verdicts.
    Verdicts,
    /// Asks a validator to dial the asker back, from a fresh socket and
    /// without a relay, at the addresses the registry holds for it (never
    /// at addresses the request names): is this node reachable from outside?
    DialBack,
}

/// A response, from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok,
    Error {
        code: ErrorCode,
        message: String,
    },
    /// Followed by `outboard_len` bytes of outboard, then `length` bytes of
    /// shard data starting at `start` (group-aligned, covering the request).
    ShardData {
        shard_len: u64,
        start: u64,
        length: u64,
        outboard_len: u64,
    },
    Proof(Vec<u8>),
    Inventory {
        entries: Vec<InventoryEntry>,
        more: bool,
    },
    /// Followed by `len` raw bytes (a manifest or a placement).
    Blob {
        len: u64,
    },
    /// For each id asked, whether a present copy is held.
    Has(Vec<bool>),
    /// Node ids (at most [`MAX_NODES_REPLY`]).
    Nodes(Vec<[u8; 32]>),
    Info(NodeInfo),
    /// A validator's verdicts on the asker.
    Verdicts(VerdictReport),
    /// What a dial-back found.
    DialedBack(DialBackReport),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryEntry {
    pub id: ShardId,
    pub len: u64,
    pub state: ShardState,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub version: String,
    pub role: String,
    pub capacity: u64,
    pub used: u64,
    pub free: u64,
    pub shards: u64,
}

/// How one challenge ended, as the validator judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictOutcome {
    /// The proof verified.
    Pass,
    /// The reply was not the proof of the challenged bytes.
    WrongProof,
    /// The miner said it does not hold the shard.
    Missing,
    /// No answer within the deadline, or the miner could not be reached.
    /// Asked again (with a fresh nonce) before it is scored as a failure.
    Timeout,
}

impl VerdictOutcome {
    pub fn to_u8(self) -> u8 {
        match self {
            VerdictOutcome::Pass => 0,
            VerdictOutcome::WrongProof => 1,
            VerdictOutcome::Missing => 2,
            VerdictOutcome::Timeout => 3,
        }
    }

    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => VerdictOutcome::Pass,
            1 => VerdictOutcome::WrongProof,
            2 => VerdictOutcome::Missing,
            3 => VerdictOutcome::Timeout,
            _ => return None,
        })
    }

    /// The outcome's name in APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictOutcome::Pass => "pass",
            VerdictOutcome::WrongProof => "wrong-proof",
            VerdictOutcome::Missing => "missing",
            VerdictOutcome::Timeout => "timeout",
        }
    }
}

/// One challenge a validator sent the asking miner, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// When the validator recorded it (unix milliseconds, its clock).
    pub at_ms: u64,
    pub shard: ShardId,
    pub outcome: VerdictOutcome,
    /// 1 for a fresh challenge, 2 and up for re-asks of an unanswered one.
    pub attempt: u8,
    /// From sending the challenge to the answer's last byte; none without
    /// an answer.
    pub latency_ms: Option<u32>,
    /// The deadline the answer had.
    pub deadline_ms: u32,
    /// What went wrong, in words (empty for a pass); at most
    /// [`MAX_VERDICT_REASON`] bytes.
    pub reason: String,
}

/// A validator's view of the miner that asked: its standing, then its last
/// verdicts (oldest first, at most [`MAX_VERDICTS`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerdictReport {
    /// Reputation score in millionths (0 to 1,000,000).
    pub score_ppm: u32,
    /// The weight last set for it (u16 scale; 0 before the first weights).
    pub weight: u16,
    pub disqualified: bool,
    /// An unanswered challenge is being asked again; nothing else is asked
    /// meanwhile.
    pub contained: bool,
    /// Passed its vetting (newcomers get a small share of placements).
    pub vetted: bool,
    pub audits: u64,
    pub passes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub shards_assigned: u64,
    pub verified_bytes: u64,
    pub verdicts: Vec<Verdict>,
}

/// What a validator's dial-back found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DialBackReport {
    /// A QUIC handshake with the asker completed.
    pub reached: bool,
    /// The handshake's time, when it completed.
    pub rtt_ms: Option<u32>,
    /// Which addresses were tried and what happened, in words (at most
    /// [`MAX_VERDICT_REASON`] bytes).
    pub detail: String,
}

/// Why a request failed; sent as a u16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Malformed,
    FrameTooLarge,
    UnsupportedVersion,
    UnknownRequest,
    NotFound,
    HashMismatch,
    Full,
    QuotaExceeded,
    NotRegistered,
    NotValidator,
    Forbidden,
    Busy,
    TooLarge,
    BadRequest,
    Internal,
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::Malformed => 1,
            ErrorCode::FrameTooLarge => 2,
            ErrorCode::UnsupportedVersion => 3,
            ErrorCode::UnknownRequest => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::HashMismatch => 6,
            ErrorCode::Full => 7,
            ErrorCode::QuotaExceeded => 8,
            ErrorCode::NotRegistered => 9,
            ErrorCode::NotValidator => 10,
            ErrorCode::Forbidden => 11,
            ErrorCode::Busy => 12,
            ErrorCode::TooLarge => 13,
            ErrorCode::BadRequest => 14,
            ErrorCode::Internal => 15,
            ErrorCode::Other(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> Self {
        match c {
            1 => ErrorCode::Malformed,
            2 => ErrorCode::FrameTooLarge,
            3 => ErrorCode::UnsupportedVersion,
            4 => ErrorCode::UnknownRequest,
            5 => ErrorCode::NotFound,
            6 => ErrorCode::HashMismatch,
            7 => ErrorCode::Full,
            8 => ErrorCode::QuotaExceeded,
            9 => ErrorCode::NotRegistered,
            10 => ErrorCode::NotValidator,
            11 => ErrorCode::Forbidden,
            12 => ErrorCode::Busy,
            13 => ErrorCode::TooLarge,
            14 => ErrorCode::BadRequest,
            15 => ErrorCode::Internal,
            c => ErrorCode::Other(c),
        }
    }
}

impl ErrorCode {
    /// A short name for metrics labels and logs: `not_found`, `busy`, ...
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownRequest => "unknown_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::Full => "full",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::NotValidator => "not_validator",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Busy => "busy",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::Malformed => "malformed frame",
            ErrorCode::FrameTooLarge => "frame too large",
            ErrorCode::UnsupportedVersion => "unsupported protocol version",
            ErrorCode::UnknownRequest => "unknown request",
            ErrorCode::NotFound => "not found",
            ErrorCode::HashMismatch => "hash mismatch",
            ErrorCode::Full => "storage full",
            ErrorCode::QuotaExceeded => "quota exceeded",
            ErrorCode::NotRegistered => "peer not registered",
            ErrorCode::NotValidator => "peer is not a validator",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Busy => "busy",
            ErrorCode::TooLarge => "too large",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Internal => "internal error",
            ErrorCode::Other(c) => return write!(f, "error {c}"),
        };
        f.write_str(s)
    }
}

/// A frame that could not be decoded, with the code to reply with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DecodeError {
            code,
            message: message.into(),
        }
    }
}

mod kind {
    pub const PUT_SHARD: u8 = 1;
    pub const GET_SHARD: u8 = 2;
    pub const CHALLENGE: u8 = 3;
    pub const INVENTORY: u8 = 4;
    pub const PUT_MANIFEST: u8 = 5;
    pub const GET_MANIFEST: u8 = 6;
    pub const DELETE_SHARD: u8 = 7;
    pub const DELETE_MANIFEST: u8 = 8;
    pub const INFO: u8 = 9;
    pub const AUDIT: u8 = 10;
    pub const PUT_PLACEMENT: u8 = 11;
    pub const GET_PLACEMENT: u8 = 12;
    pub const HAS: u8 = 13;
    // 14 was a validator scoreboard request, never sent; retired.
    pub const RELEASE: u8 = 15;
    pub const VETTED: u8 = 16;
    pub const VERDICTS: u8 = 17;
    pub const DIAL_BACK: u8 = 18;

    pub const OK: u8 = 128;
    pub const ERROR: u8 = 129;
    pub const SHARD_DATA: u8 = 130;
    pub const PROOF: u8 = 131;
    pub const INVENTORY_PAGE: u8 = 132;
    pub const BLOB: u8 = 133;
    pub const INFO_REPLY: u8 = 134;
    pub const HAS_REPLY: u8 = 135;
    pub const NODES: u8 = 136;
    pub const VERDICTS_REPLY: u8 = 137;
    pub const DIALED_BACK: u8 = 138;
}

/// Bounds-checked little-endian reader over a payload.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::new(ErrorCode::Malformed, "payload truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> std::result::Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> std::result::Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn b32(&mut self) -> std::result::Result<[u8; 32], DecodeError> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
    fn opt32(&mut self) -> std::result::Result<Option<[u8; 32]>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.b32()?)),
            t => Err(DecodeError::new(
                ErrorCode::Malformed,
                format!("option tag {t}"),
            )),
        }
    }
    fn string(&mut self) -> std::result::Result<String, DecodeError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    /// A string of at most `max` bytes that must be valid UTF-8 (so it
    /// re-encodes to the same bytes).
    fn utf8(&mut self, max: usize, what: &str) -> std::result::Result<String, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError::new(
                ErrorCode::TooLarge,
                format!("{what} of {n} bytes; at most {max}"),
            ));
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| DecodeError::new(ErrorCode::Malformed, format!("{what} is not UTF-8")))
    }
    fn opt_u32(&mut self) -> std::result::Result<Option<u32>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()?)),
            t => Err(DecodeError::new(
                ErrorCode::Malformed,
                format!("option tag {t}"),
            )),
        }
    }
    /// A flag byte: exactly 0 or 1.
    fn flag(&mut self, what: &str) -> std::result::Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::new(
                ErrorCode::Malformed,
                format!("{what} flag is {b}, not 0 or 1"),
            )),
        }
    }
    fn end(self) -> std::result::Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::new(
                ErrorCode::Malformed,
                format!("{} unexpected trailing bytes", self.buf.len()),
            ))
        }
    }
}

fn put_opt32(out: &mut Vec<u8>, v: &Option<[u8; 32]>) {
    match v {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(b);
        }
    }
}

fn put_opt_u32(out: &mut Vec<u8>, v: Option<u32>) {
    match v {
        None => out.push(0),
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + payload.len());
    out.extend_from_slice(&((payload.len() + 2) as u32).to_be_bytes());
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

impl Request {
    /// The request's kind as a short name (metrics labels, logs).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Request::PutShard { .. } => "put_shard",
            Request::GetShard { .. } => "get_shard",
            Request::Challenge { .. } => "challenge",
            Request::Inventory { .. } => "inventory",
            Request::PutManifest { .. } => "put_manifest",
            Request::GetManifest { .. } => "get_manifest",
            Request::DeleteShard { .. } => "delete_shard",
            Request::DeleteManifest { .. } => "delete_manifest",
            Request::Info => "info",
            Request::Audit { .. } => "audit",
            Request::Release { .. } => "release",
            Request::PutPlacement { .. } => "put_placement",
            Request::GetPlacement { .. } => "get_placement",
            Request::Has { .. } => "has",
            Request::Vetted => "vetted",
            Request::Verdicts => "verdicts",
            Request::DialBack => "dial_back",
        }
    }

    /// The complete frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(96);
        let k = match self {
            Request::PutShard { id, len, on_behalf } => {
                p.extend_from_slice(&id.0);
                p.extend_from_slice(&len.to_le_bytes());
                put_opt32(&mut p, on_behalf);
                kind::PUT_SHARD
            }
            Request::GetShard {
                id,
                offset,
                length,
                grant,
            } => {
                p.extend_from_slice(&id.0);
                p.extend_from_slice(&offset.to_le_bytes());
                p.extend_from_slice(&length.to_le_bytes());
                match grant {
                    None => p.push(0),
                    Some(g) => {
                        let b = g.encode();
                        p.push(b.len() as u8);
                        p.extend_from_slice(&b);
                    }
                }
                kind::GET_SHARD
            }
            Request::Challenge {
                id,
                len,
                nonce,
                samples,
            } => {
                p.extend_from_slice(&id.0);
                p.extend_from_slice(&len.to_le_bytes());
                p.extend_from_slice(nonce);
                p.extend_from_slice(&samples.to_le_bytes());
                kind::CHALLENGE
            }
            Request::Inventory { after, limit } => {
                put_opt32(&mut p, &after.map(|a| a.0));
                p.extend_from_slice(&limit.to_le_bytes());
                kind::INVENTORY
            }
            Request::PutManifest { cid, len } => {
                p.extend_from_slice(cid);
                p.extend_from_slice(&len.to_le_bytes());
                kind::PUT_MANIFEST
            }
            Request::GetManifest { cid } => {
                p.extend_from_slice(cid);
                kind::GET_MANIFEST
            }
            Request::DeleteShard { id, on_behalf } => {
                p.extend_from_slice(&id.0);
                put_opt32(&mut p, on_behalf);
                kind::DELETE_SHARD
            }
            Request::DeleteManifest { cid } => {
                p.extend_from_slice(cid);
                kind::DELETE_MANIFEST
            }
            Request::Info => kind::INFO,
            Request::Audit { cid } => {
                p.extend_from_slice(cid);
                kind::AUDIT
            }
            Request::Release { cid } => {
                p.extend_from_slice(cid);
                kind::RELEASE
            }
            Request::PutPlacement { cid, len } => {
                p.extend_from_slice(cid);
                p.extend_from_slice(&len.to_le_bytes());
                kind::PUT_PLACEMENT
            }
            Request::GetPlacement { cid } => {
                p.extend_from_slice(cid);
                kind::GET_PLACEMENT
            }
            Request::Has { ids } => {
                p.extend_from_slice(&(ids.len() as u16).to_le_bytes());
                for id in ids {
                    p.extend_from_slice(&id.0);
                }
                kind::HAS
            }
            Request::Vetted => kind::VETTED,
            Request::Verdicts => kind::VERDICTS,
            Request::DialBack => kind::DIAL_BACK,
        };
        frame(k, &p)
    }

    /// Decodes a frame body (version, kind, payload; no length prefix).
    pub fn decode(body: &[u8]) -> std::result::Result<Request, DecodeError> {
        let (k, payload) = split_body(body)?;
        let mut c = Cursor { buf: payload };
        let r = match k {
            kind::PUT_SHARD => Request::PutShard {
                id: ShardId(c.b32()?),
                len: c.u64()?,
                on_behalf: c.opt32()?,
            },
            kind::GET_SHARD => Request::GetShard {
                id: ShardId(c.b32()?),
                offset: c.u64()?,
                length: c.u64()?,
                grant: match c.u8()? {
                    0 => None,
                    n => Some(
                        Grant::decode_unverified(c.take(usize::from(n))?)
                            .map_err(|e| DecodeError::new(ErrorCode::BadRequest, e.to_string()))?,
                    ),
                },
            },
            kind::CHALLENGE => Request::Challenge {
                id: ShardId(c.b32()?),
                len: c.u64()?,
                nonce: c.b32()?,
                samples: c.u16()?,
            },
            kind::INVENTORY => Request::Inventory {
                after: c.opt32()?.map(ShardId),
                limit: c.u32()?,
            },
            kind::PUT_MANIFEST => Request::PutManifest {
                cid: c.b32()?,
                len: c.u64()?,
            },
            kind::GET_MANIFEST => Request::GetManifest { cid: c.b32()? },
            kind::DELETE_SHARD => Request::DeleteShard {
                id: ShardId(c.b32()?),
                on_behalf: c.opt32()?,
            },
            kind::DELETE_MANIFEST => Request::DeleteManifest { cid: c.b32()? },
            kind::INFO => Request::Info,
            kind::AUDIT => Request::Audit { cid: c.b32()? },
            kind::RELEASE => Request::Release { cid: c.b32()? },
            kind::PUT_PLACEMENT => Request::PutPlacement {
                cid: c.b32()?,
                len: c.u64()?,
            },
            kind::GET_PLACEMENT => Request::GetPlacement { cid: c.b32()? },
            kind::HAS => {
                let n = c.u16()? as usize;
                if n > MAX_HAS_IDS {
                    return Err(DecodeError::new(
                        ErrorCode::TooLarge,
                        format!("{n} ids in one request; at most {MAX_HAS_IDS}"),
                    ));
                }
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(ShardId(c.b32()?));
                }
                Request::Has { ids }
            }
            kind::VETTED => Request::Vetted,
            kind::VERDICTS => Request::Verdicts,
            kind::DIAL_BACK => Request::DialBack,
            other => {
                return Err(DecodeError::new(
                    ErrorCode::UnknownRequest,
                    format!(
                        "request kind {other} is not known to this node (protocol version {VERSION})"
                    ),
                ));
            }
        };
        c.end()?;
        Ok(r)
    }
}

impl Response {
    /// The complete frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        let k = match self {
            Response::Ok => kind::OK,
            Response::Error { code, message } => {
                p.extend_from_slice(&code.to_u16().to_le_bytes());
                put_string(&mut p, message);
                kind::ERROR
            }
            Response::ShardData {
                shard_len,
                start,
                length,
                outboard_len,
            } => {
                for v in [shard_len, start, length, outboard_len] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                kind::SHARD_DATA
            }
            Response::Proof(bytes) => {
                p.extend_from_slice(bytes);
                kind::PROOF
            }
            Response::Inventory { entries, more } => {
                p.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for e in entries {
                    p.extend_from_slice(&e.id.0);
                    p.extend_from_slice(&e.len.to_le_bytes());
                    p.push(e.state.to_u8());
                }
                p.push(u8::from(*more));
                kind::INVENTORY_PAGE
            }
            Response::Blob { len } => {
                p.extend_from_slice(&len.to_le_bytes());
                kind::BLOB
            }
            Response::Has(bits) => {
                p.extend_from_slice(&(bits.len() as u16).to_le_bytes());
                p.extend(bits.iter().map(|b| u8::from(*b)));
                kind::HAS_REPLY
            }
            Response::Nodes(ids) => {
                let n = ids.len().min(MAX_NODES_REPLY);
                p.extend_from_slice(&(n as u16).to_le_bytes());
                for id in &ids[..n] {
                    p.extend_from_slice(id);
                }
                kind::NODES
            }
            Response::Info(i) => {
                put_string(&mut p, &i.version);
                put_string(&mut p, &i.role);
                for v in [i.capacity, i.used, i.free, i.shards] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                kind::INFO_REPLY
            }
            Response::Verdicts(r) => {
                put_verdicts(&mut p, r);
                kind::VERDICTS_REPLY
            }
            Response::DialedBack(r) => {
                p.push(u8::from(r.reached));
                put_opt_u32(&mut p, r.rtt_ms);
                put_string(&mut p, short_reason(&r.detail));
                kind::DIALED_BACK
            }
        };
        frame(k, &p)
    }

    /// Decodes a frame body (version, kind, payload).
    pub fn decode(body: &[u8]) -> std::result::Result<Response, DecodeError> {
        let (k, payload) = split_body(body)?;
        let mut c = Cursor { buf: payload };
        let r = match k {
            kind::OK => Response::Ok,
            kind::ERROR => Response::Error {
                code: ErrorCode::from_u16(c.u16()?),
                message: c.string()?,
            },
            kind::SHARD_DATA => Response::ShardData {
                shard_len: c.u64()?,
                start: c.u64()?,
                length: c.u64()?,
                outboard_len: c.u64()?,
            },
            kind::PROOF => {
                let bytes = c.take(c.buf.len())?.to_vec();
                Response::Proof(bytes)
            }
            kind::INVENTORY_PAGE => {
                let n = c.u32()?;
                if n > MAX_INVENTORY_PAGE {
                    return Err(DecodeError::new(
                        ErrorCode::Malformed,
                        format!("inventory page of {n} entries"),
                    ));
                }
                let mut entries = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let id = ShardId(c.b32()?);
                    let len = c.u64()?;
                    let state = ShardState::from_u8(c.u8()?).ok_or_else(|| {
                        DecodeError::new(ErrorCode::Malformed, "unknown shard state")
                    })?;
                    entries.push(InventoryEntry { id, len, state });
                }
                let more = c.u8()? != 0;
                Response::Inventory { entries, more }
            }
            kind::BLOB => Response::Blob { len: c.u64()? },
            kind::HAS_REPLY => {
                let n = c.u16()? as usize;
                let bits = c.take(n)?.iter().map(|b| *b != 0).collect();
                Response::Has(bits)
            }
            kind::NODES => {
                let n = c.u16()? as usize;
                if n > MAX_NODES_REPLY {
                    return Err(DecodeError::new(
                        ErrorCode::TooLarge,
                        format!("{n} node ids in one reply; at most {MAX_NODES_REPLY}"),
                    ));
                }
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(c.b32()?);
                }
                Response::Nodes(ids)
            }
            kind::INFO_REPLY => Response::Info(NodeInfo {
                version: c.string()?,
                role: c.string()?,
                capacity: c.u64()?,
                used: c.u64()?,
                free: c.u64()?,
                shards: c.u64()?,
            }),
            kind::VERDICTS_REPLY => Response::Verdicts(take_verdicts(&mut c)?),
            kind::DIALED_BACK => Response::DialedBack(DialBackReport {
                reached: c.flag("reached")?,
                rtt_ms: c.opt_u32()?,
                detail: c.utf8(MAX_VERDICT_REASON, "dial-back detail")?,
            }),
            other => {
                return Err(DecodeError::new(
                    ErrorCode::Malformed,
                    format!("response kind {other}"),
                ));
            }
        };
        c.end()?;
        Ok(r)
    }
}

/// A reason cut to [`MAX_VERDICT_REASON`] bytes at a character boundary.
fn short_reason(s: &str) -> &str {
    let mut end = s.len().min(MAX_VERDICT_REASON);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_verdicts(p: &mut Vec<u8>, r: &VerdictReport) {
    p.extend_from_slice(&r.score_ppm.min(1_000_000).to_le_bytes());
    p.extend_from_slice(&r.weight.to_le_bytes());
    for f in [r.disqualified, r.contained, r.vetted] {
        p.push(u8::from(f));
    }
    for v in [
        r.audits,
        r.passes,
        r.failures,
        r.timeouts,
        r.shards_assigned,
        r.verified_bytes,
    ] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    // The newest ones when there are more than a reply holds.
    let verdicts = &r.verdicts[r.verdicts.len().saturating_sub(MAX_VERDICTS)..];
    p.extend_from_slice(&(verdicts.len() as u16).to_le_bytes());
    for v in verdicts {
        p.extend_from_slice(&v.at_ms.to_le_bytes());
        p.extend_from_slice(&v.shard.0);
        p.push(v.outcome.to_u8());
        p.push(v.attempt);
        put_opt_u32(p, v.latency_ms);
        p.extend_from_slice(&v.deadline_ms.to_le_bytes());
        put_string(p, short_reason(&v.reason));
    }
}

fn take_verdicts(c: &mut Cursor<'_>) -> std::result::Result<VerdictReport, DecodeError> {
    let score_ppm = c.u32()?;
    if score_ppm > 1_000_000 {
        return Err(DecodeError::new(
            ErrorCode::Malformed,
            format!("score of {score_ppm} millionths"),
        ));
    }
    let mut r = VerdictReport {
        score_ppm,
        weight: c.u16()?,
        disqualified: c.flag("disqualified")?,
        contained: c.flag("contained")?,
        vetted: c.flag("vetted")?,
        audits: c.u64()?,
        passes: c.u64()?,
        failures: c.u64()?,
        timeouts: c.u64()?,
        shards_assigned: c.u64()?,
        verified_bytes: c.u64()?,
        verdicts: Vec::new(),
    };
    let n = c.u16()? as usize;
    if n > MAX_VERDICTS {
        return Err(DecodeError::new(
            ErrorCode::TooLarge,
            format!("{n} verdicts in one reply; at most {MAX_VERDICTS}"),
        ));
    }
    r.verdicts.reserve_exact(n);
    for _ in 0..n {
        let at_ms = c.u64()?;
        let shard = ShardId(c.b32()?);
        let outcome = VerdictOutcome::from_u8(c.u8()?)
            .ok_or_else(|| DecodeError::new(ErrorCode::Malformed, "unknown verdict outcome"))?;
        let attempt = c.u8()?;
        let latency_ms = c.opt_u32()?;
        r.verdicts.push(Verdict {
            at_ms,
            shard,
            outcome,
            attempt,
            latency_ms,
            deadline_ms: c.u32()?,
            reason: c.utf8(MAX_VERDICT_REASON, "verdict reason")?,
        });
    }
    Ok(r)
}

fn split_body(body: &[u8]) -> std::result::Result<(u8, &[u8]), DecodeError> {
    match body {
        [v, k, rest @ ..] => {
            if *v != VERSION {
                return Err(DecodeError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "frame version {v}, this node speaks {VERSION}; upgrade the older side"
                    ),
                ));
            }
            Ok((*k, rest))
        }
        _ => Err(DecodeError::new(
            ErrorCode::Malformed,
            "frame shorter than its header",
        )),
    }
}

/// Length of the frame announced by a 4-byte prefix: what follows it
/// (version, kind, payload). The reader compares it with its limit before
/// allocating anything.
pub fn frame_len(prefix: [u8; 4]) -> u64 {
    u64::from(u32::from_be_bytes(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(frame: &[u8]) -> &[u8] {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    fn requests() -> Vec<Request> {
        let id = ShardId([3; 32]);
        vec![
            Request::PutShard {
                id,
                len: 5,
                on_behalf: None,
            },
            Request::PutShard {
                id,
                len: 5,
                on_behalf: Some([9; 32]),
            },
            Request::GetShard {
                id,
                offset: 1,
                length: u64::MAX,
                grant: None,
            },
            Request::GetShard {
                id,
                offset: 0,
                length: 7,
                grant: Some(Grant::signed(
                    &crate::SecretKey::from_bytes(&[1; 32]),
                    crate::SecretKey::from_bytes(&[2; 32]).public(),
                    99,
                    Some(id),
                )),
            },
            Request::Vetted,
            Request::Verdicts,
            Request::DialBack,
            Request::Challenge {
                id,
                len: 77,
                nonce: [1; 32],
                samples: 44,
            },
            Request::Inventory {
                after: Some(id),
                limit: 10,
            },
            Request::Inventory {
                after: None,
                limit: 10,
            },
            Request::PutManifest {
                cid: [4; 32],
                len: 1000,
            },
            Request::GetManifest { cid: [4; 32] },
            Request::DeleteShard {
                id,
                on_behalf: None,
            },
            Request::DeleteManifest { cid: [4; 32] },
            Request::Info,
            Request::Audit { cid: [5; 32] },
            Request::Release { cid: [5; 32] },
            Request::PutPlacement {
                cid: [6; 32],
                len: 77,
            },
            Request::GetPlacement { cid: [6; 32] },
            Request::Has {
                ids: vec![id, ShardId([8; 32])],
            },
        ]
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for r in requests() {
            assert_eq!(Request::decode(body(&r.encode())).unwrap(), r);
        }
        let responses = vec![
            Response::Ok,
            Response::Error {
                code: ErrorCode::Full,
                message: "full".into(),
            },
            Response::ShardData {
                shard_len: 1,
                start: 2,
                length: 3,
                outboard_len: 4,
            },
            Response::Proof(vec![1, 2, 3]),
            Response::Inventory {
                entries: vec![InventoryEntry {
                    id: ShardId([1; 32]),
                    len: 9,
                    state: ShardState::Lost,
                }],
                more: true,
            },
            Response::Blob { len: 12 },
            Response::Has(vec![true, false, true]),
            Response::Nodes(vec![[1; 32], [2; 32]]),
            Response::Info(NodeInfo {
                version: "0.1".into(),
                role: "miner".into(),
                capacity: 1,
                used: 2,
                free: 3,
                shards: 4,
            }),
            Response::Verdicts(VerdictReport::default()),
            Response::Verdicts(sample_verdicts()),
            Response::DialedBack(DialBackReport {
                reached: true,
                rtt_ms: Some(3),
                detail: "dialed 203.0.113.7:7440".into(),
            }),
            Response::DialedBack(DialBackReport::default()),
        ];
        for r in responses {
            assert_eq!(Response::decode(body(&r.encode())).unwrap(), r);
        }
    }

    fn sample_verdicts() -> VerdictReport {
        VerdictReport {
            score_ppm: 987_654,
            weight: 1234,
            disqualified: false,
            contained: true,
            vetted: true,
            audits: 7,
            passes: 5,
            failures: 1,
            timeouts: 1,
            shards_assigned: 9,
            verified_bytes: 1 << 30,
            verdicts: vec![
                Verdict {
                    at_ms: 1_700_000_000_000,
                    shard: ShardId([7; 32]),
                    outcome: VerdictOutcome::Pass,
                    attempt: 1,
                    latency_ms: Some(12),
                    deadline_ms: 2000,
                    reason: String::new(),
                },
                Verdict {
                    at_ms: 1_700_000_001_000,
                    shard: ShardId([8; 32]),
                    outcome: VerdictOutcome::Timeout,
                    attempt: 2,
                    latency_ms: None,
                    deadline_ms: 2000,
                    reason: "no answer within 2s — ünïcode".into(),
                },
            ],
        }
    }

    #[test]
    fn verdict_replies_are_bounded() {
        // More than a reply holds: the newest are sent, the reason is cut at
        // a character boundary.
        let mut r = sample_verdicts();
        let long = "é".repeat(MAX_VERDICT_REASON);
        r.verdicts = (0..MAX_VERDICTS as u64 + 5)
            .map(|i| Verdict {
                at_ms: i,
                reason: long.clone(),
                ..sample_verdicts().verdicts[1].clone()
            })
            .collect();
        let f = Response::Verdicts(r).encode();
        assert!(f.len() <= MAX_CONTROL_FRAME, "{} bytes", f.len());
        let Response::Verdicts(back) = Response::decode(body(&f)).unwrap() else {
            panic!("not verdicts");
        };
        assert_eq!(back.verdicts.len(), MAX_VERDICTS);
        assert_eq!(back.verdicts[0].at_ms, 5, "the oldest were dropped");
        assert_eq!(back.verdicts[0].reason.len(), MAX_VERDICT_REASON);
        // A reply announcing more verdicts, a longer reason, a flag of 2 or
        // a reason that is not UTF-8 is refused.
        let f = Response::Verdicts(sample_verdicts()).encode();
        let b = body(&f).to_vec();
        let count_at = 2 + 4 + 2 + 3 + 48;
        let mut many = b.clone();
        many[count_at..count_at + 2].copy_from_slice(&(MAX_VERDICTS as u16 + 1).to_le_bytes());
        assert_eq!(
            Response::decode(&many).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let mut flag = b.clone();
        flag[2 + 4 + 2] = 2;
        assert_eq!(
            Response::decode(&flag).unwrap_err().code,
            ErrorCode::Malformed
        );
        let reason_at = b.len() - sample_verdicts().verdicts[1].reason.len();
        let mut long = b.clone();
        long[reason_at - 2..reason_at]
            .copy_from_slice(&(MAX_VERDICT_REASON as u16 + 1).to_le_bytes());
        assert_eq!(
            Response::decode(&long).unwrap_err().code,
            ErrorCode::TooLarge
        );
        let mut bad = b;
        bad[reason_at] = 0xff;
        assert_eq!(
            Response::decode(&bad).unwrap_err().code,
            ErrorCode::Malformed
        );
    }

    #[test]
    fn bad_frames_get_typed_errors() {
        let f = Request::Info.encode();
        let mut v2 = body(&f).to_vec();
        v2[0] = 2;
        assert_eq!(
            Request::decode(&v2).unwrap_err().code,
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            Request::decode(&[1, 77]).unwrap_err().code,
            ErrorCode::UnknownRequest
        );
        assert_eq!(
            Request::decode(&[1]).unwrap_err().code,
            ErrorCode::Malformed
        );
        let put = Request::PutShard {
            id: ShardId([0; 32]),
            len: 1,
            on_behalf: None,
        }
        .encode();
        let b = body(&put);
        assert_eq!(
            Request::decode(&b[..b.len() - 1]).unwrap_err().code,
            ErrorCode::Malformed
        );
        let mut padded = b.to_vec();
        padded.push(0);
        assert_eq!(
            Request::decode(&padded).unwrap_err().code,
            ErrorCode::Malformed
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(&bytes);
            let _ = Response::decode(&bytes);
        }

        #[test]
        fn truncations_of_valid_requests_are_malformed(i in 0usize..16, cut in 0usize..100) {
            let r = &requests()[i];
            let f = r.encode();
            let b = body(&f);
            if cut < b.len() {
                prop_assert!(Request::decode(&b[..cut]).is_err());
            }
        }
    }
}
