//! cairn-api: the local HTTP API of a cairn node, as types.
//!
//! The daemon (`cairn-node`'s gateway) serves these structs as JSON; the CLI
//! and `cairn-validator status` read them back through [`ApiClient`]. One
//! definition on both sides, so renaming a field breaks the build, not a
//! command at run time.
//!
//! | route | request | response |
//! |---|---|---|
//! | `GET /api/info` | | [`NodeInfo`] |
//! | `GET /api/pins` | | `Vec<`[`PinRecord`]`>` |
//! | `POST /api/pin` | u32 BE header length, JSON [`PinRequest`], the packed file bytes | [`PinOutcome`] |
//! | `GET /api/datasets/<cid>` | | [`DatasetView`] |
//! | `GET /api/datasets/<cid>/status` | | [`DatasetStatus`] |
//! | `DELETE /api/datasets/<cid>` | | [`UnpinOutcome`] |
//! | `GET /api/scores` | | [`ValidatorReport`] (validators) |
//! | `POST /api/grants` | [`GrantRequest`] | [`GrantView`]: a grant from this node |
//! | `PUT /api/grants` | [`GrantToken`] | [`GrantView`]: a grant to this node, kept |
//! | `GET /d/<cid>/<path>` | `Range` | the file's bytes |
//!
//! Every error is a status of 400 or more with an [`ErrorBody`].

mod client;
mod pin_header;

pub use client::{
    ApiClient, ApiError, FileStream, MAX_JSON_REPLY, MAX_MANIFEST_REPLY, encode_path,
};
pub use pin_header::{decode_pin_header, encode_pin_header};

use serde::{Deserialize, Serialize};

/// Longest pin header (the JSON file list) a daemon reads.
pub const MAX_PIN_HEADER: u32 = 64 << 20;

/// The body of every error reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One entry of a pin request, in path order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
    /// An empty directory.
    #[serde(default)]
    pub dir: bool,
}

/// The header of a pin: what follows, and how to code it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct PinRequest {
    /// Shown by `cairn ls`; not part of the CID.
    pub name: String,
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub single_file: bool,
    #[serde(default)]
    pub data_shards: Option<u16>,
    #[serde(default)]
    pub parity_shards: Option<u16>,
    #[serde(default)]
    pub segment_size: Option<u64>,
}

/// What a pin produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinOutcome {
    pub cid: String,
    pub bytes: u64,
    pub files: usize,
    pub segments: usize,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub shards_stored: usize,
    pub manifest_copies: usize,
    pub validators_notified: usize,
    pub seconds: f64,
}

/// The local record of a pin, for `cairn ls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinRecord {
    pub cid: String,
    pub name: String,
    pub bytes: u64,
    pub files: usize,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub pinned_at: u64,
}

/// What an entry of a dataset is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    /// An empty directory (other directories are implied by file paths).
    Dir,
}

/// A file (or empty directory) of a dataset, as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    /// Relative, `/`-separated, no `.` or `..` components (as the daemon
    /// checked it; a reader checks it again before writing anywhere).
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    /// Where the file's bytes start in the packed stream.
    pub offset: u64,
    /// BLAKE3 of the file, lowercase hex.
    pub blake3: String,
    pub executable: bool,
}

/// A dataset's manifest and current placement version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetView {
    pub cid: String,
    pub bytes: u64,
    pub single_file: bool,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub segment_size: u64,
    pub segments: usize,
    pub placement_version: u64,
    pub entries: Vec<EntryView>,
}

/// Health of a dataset, per segment and per miner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetStatus {
    pub cid: String,
    pub bytes: u64,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub segments: Vec<SegmentStatus>,
    pub miners: Vec<MinerStatus>,
    /// Segments with all k + m shards.
    pub healthy: usize,
    /// Segments below k + m but still readable (>= k).
    pub degraded: usize,
    /// Segments with fewer than k shards.
    pub lost: usize,
    pub placement_version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SegmentStatus {
    pub index: usize,
    pub alive: usize,
    pub total: usize,
    /// Holder of each shard (short node id, `-` for none), and whether it
    /// answered that it holds it.
    pub shards: Vec<(String, bool)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerStatus {
    pub node_id: String,
    pub reachable: bool,
    pub shards_expected: usize,
    pub shards_held: usize,
}

/// What an unpin did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnpinOutcome {
    pub cid: String,
    pub shards_deleted: usize,
    /// Shards on miners that could not be reached; run unpin again later.
    pub shards_pending: usize,
    pub manifest_copies_deleted: usize,
    /// Validators that took the news and stopped auditing the dataset.
    #[serde(default)]
    pub validators_released: usize,
}

/// The store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCounters {
    pub capacity: u64,
    pub used_bytes: u64,
    pub reserved_bytes: u64,
    pub shard_count: u64,
    /// Bytes of dataset records (manifests, placements), inside `used_bytes`.
    pub record_bytes: u64,
    /// Bytes the filesystem under the store has available.
    pub fs_available: u64,
    pub reconcile_done: bool,
    pub orphans_removed: u64,
    pub temporaries_removed: u64,
    pub lost_found: u64,
    pub scrubbed: u64,
    pub corrupt_found: u64,
}

/// The node: who it is and how its store is doing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub version: String,
    pub node_id: String,
    pub hotkey: String,
    pub role: String,
    pub uptime_secs: u64,
    pub rss_bytes: u64,
    pub store: StoreCounters,
    pub free_bytes: u64,
    /// How the network sees this node (absent from nodes before it existed).
    #[serde(default)]
    pub network: Option<NetworkInfo>,
    /// This node's standing in the registry or on chain.
    #[serde(default)]
    pub chain: Option<ChainStatus>,
    /// The edge cache of verified groups (reads through this node).
    #[serde(default)]
    pub cache: Option<CacheView>,
    /// The last distinct warnings and errors this node logged, newest first.
    #[serde(default)]
    pub problems: Vec<Problem>,
    /// The node's clock when it answered (unix ms): pages say "ago" by it.
    #[serde(default)]
    pub now_ms: u64,
    /// Where shards are kept: the data directory, then configured disks.
    #[serde(default)]
    pub volumes: Vec<VolumeView>,
}

/// A disk shards are kept on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    /// 0 is the data directory.
    pub index: u8,
    pub path: String,
    pub capacity: u64,
    pub used_bytes: u64,
    pub fs_available: u64,
    /// False while its disk is not there: its shards are reported lost and
    /// nothing is written to it.
    pub present: bool,
    /// False for a disk the config no longer names (read, never written).
    pub configured: bool,
}

/// Whether the network can find this node: its registration and the record
/// it published, as the registry (or the chain) holds them now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChainStatus {
    /// `local` (a registry directory) or `subtensor`.
    pub kind: String,
    /// This node id is a member: in chain mode, its hotkey is registered on
    /// the subnet and its commitment names this node.
    pub registered: bool,
    /// The published addresses are the ones this node publishes now.
    pub addresses_match: bool,
    /// The addresses the registry holds for this node.
    pub published: Vec<String>,
    /// The block of the last metagraph read (chain mode).
    pub last_block: Option<u64>,
    /// Seconds since that read (chain mode).
    pub last_read_secs: Option<u64>,
    /// Failed chain calls since start (chain mode).
    pub chain_errors: u64,
    /// The registry could not be read: why.
    pub error: Option<String>,
    /// What to do, in a sentence (empty when all is well).
    pub advice: String,
}

/// The edge cache's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheView {
    pub budget: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

/// One kind of warning or error the node logged: the same message again
/// counts up instead of pushing others out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    /// `warn` or `error`.
    pub level: String,
    pub message: String,
    /// The structured fields of the last occurrence, `key=value ...`.
    pub fields: String,
    /// What to do, when the event said (its `advice` field).
    pub advice: String,
    pub count: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

/// A transfer through the API in progress: a pin coming in or a read going
/// out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferView {
    /// `pin` or `read`.
    pub kind: String,
    /// The pin's name, or the read's `CID/path`.
    pub what: String,
    /// Bytes moved so far.
    pub done: u64,
    /// Bytes in all, when known.
    pub total: Option<u64>,
    /// Seconds since it started.
    pub secs: f64,
}

/// A registered miner as this node sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerSeen {
    pub node_id: String,
    pub hotkey: String,
    pub addrs: Vec<String>,
    /// Failed recently: reads and placements try it last for a while.
    pub suspect: bool,
    /// The open connection's path (`direct` / `relay`), if connected.
    pub path: Option<String>,
    pub rtt_ms: Option<f64>,
}

/// What a home operator needs to know about the node's place in the
/// network: the address the outside sees, whether peers can dial it, the
/// relay, and the path each open connection takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The UDP sockets the node is bound to.
    pub bound: Vec<String>,
    /// The addresses this node publishes for peers to dial.
    pub published: Vec<String>,
    /// This node's address as the relay's address discovery saw it: the
    /// router's public address and port when behind a NAT.
    pub observed: Option<String>,
    /// The observed address is none of the node's own: a NAT rewrites it.
    pub behind_nat: Option<bool>,
    /// The relay this node uses, if any, and whether it is connected now.
    pub relay: Option<String>,
    pub relay_connected: bool,
    /// `public` (peers dial it directly), `relayed` (behind a NAT: peers
    /// reach it through the relay, and most switch to a direct path by hole
    /// punching), `unreachable` (behind a NAT without a relay) or `unknown`
    /// (no relay, so no address discovery).
    pub reachability: String,
    /// What to do about it, in a sentence.
    pub advice: String,
    /// Open connections this node dialed, and the path each one uses now.
    pub peers: Vec<PeerPath>,
    /// Connections this node has dialed since it started (a reconnect
    /// counts again).
    pub connections_dialed: u64,
    /// Peers connected to this node now (connections they opened: a
    /// miner's validators and readers).
    #[serde(default)]
    pub incoming: Vec<IncomingPeer>,
    /// Bytes this node has sent and received in requests since start
    /// (shards, proofs, records).
    #[serde(default)]
    pub bytes_out: u64,
    #[serde(default)]
    pub bytes_in: u64,
}

/// A peer connected to this node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IncomingPeer {
    pub node_id: String,
    /// Its registered role, or `unregistered`.
    pub role: String,
    /// `direct` or `relay`.
    pub path: String,
    pub rtt_ms: Option<f64>,
}

/// The path one connection uses now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerPath {
    pub node_id: String,
    /// `direct` (UDP to `addr`) or `relay` (through the relay at `addr`).
    pub path: String,
    pub addr: String,
    pub rtt_ms: f64,
    /// Connections dialed to this peer since start: more than one means it
    /// was lost and dialed again.
    #[serde(default)]
    pub dials: u32,
}

/// What a validator's scoreboard shows for one miner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MinerReport {
    pub node_id: String,
    pub hotkey: String,
    pub score: f64,
    pub disqualified: bool,
    pub audits: u64,
    pub passes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub shards_assigned: usize,
    pub verified_bytes: u64,
    pub weight: u16,
    pub last_latency_ms: Option<f64>,
    pub last_failures: Vec<String>,
    /// Its current deadline for a challenge (ms), from its measured link.
    #[serde(default)]
    pub deadline_ms: u64,
    /// An unanswered challenge is being asked again; nothing else is asked.
    #[serde(default)]
    pub contained: bool,
}

/// A validator's whole scoreboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidatorReport {
    pub datasets: usize,
    pub challenges: u64,
    pub repairs_done: u64,
    pub repairs_pending: usize,
    pub repairs_failed: u64,
    pub miners: Vec<MinerReport>,
}

/// What the validators told this node about itself (`/api/verdicts`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerdictsView {
    /// This node.
    pub node_id: String,
    /// Unix seconds of the last ask; 0 before the first.
    pub asked_at: u64,
    pub validators: Vec<ValidatorVerdicts>,
}

/// One validator's standing of this node and its last verdicts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ValidatorVerdicts {
    pub validator: String,
    pub hotkey: String,
    /// Unix seconds of its last answer; 0 when it never answered.
    pub answered_at: u64,
    /// Why the last ask failed (what is shown is then older).
    #[serde(default)]
    pub error: Option<String>,
    /// Reputation score, 0 to 1.
    pub score: f64,
    pub weight: u16,
    pub disqualified: bool,
    /// An unanswered challenge is being asked again.
    pub contained: bool,
    pub vetted: bool,
    pub audits: u64,
    pub passes: u64,
    pub failures: u64,
    pub timeouts: u64,
    pub shards_assigned: u64,
    pub verified_bytes: u64,
    /// Newest first.
    pub verdicts: Vec<VerdictView>,
}

/// One challenge and how it ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerdictView {
    /// Unix milliseconds (the validator's clock).
    pub at_ms: u64,
    pub shard: String,
    /// `pass`, `wrong-proof`, `missing` or `timeout`.
    pub outcome: String,
    /// 1 for a fresh challenge, 2 and up for re-asks.
    pub attempt: u8,
    pub latency_ms: Option<u32>,
    pub deadline_ms: u32,
    /// What went wrong, as the validator saw it.
    pub reason: String,
    /// What the operator can do about it.
    pub advice: String,
}

/// A validator's attempt to dial this node from outside (`/api/dialback`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DialBackView {
    /// The validator that dialed (or was asked); empty when none answered.
    pub validator: String,
    /// Peers can open a direct connection to this node.
    pub reached: bool,
    pub rtt_ms: Option<u32>,
    /// What was tried and what happened.
    pub detail: String,
    /// Why no validator could be asked, if none could.
    #[serde(default)]
    pub error: Option<String>,
}

/// Asks this node (a dataset owner) for a read grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    /// The reader's node id.
    pub reader: String,
    /// Seconds the grant runs (at most 30 days).
    pub ttl_secs: u64,
    /// One shard id only (hex); none: every shard this node placed.
    #[serde(default)]
    pub shard: Option<String>,
}

/// A grant to hand to a reader, as a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantToken {
    pub token: String,
}

/// A grant, issued or kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantView {
    pub token: String,
    pub owner: String,
    pub reader: String,
    /// Unix seconds.
    pub expires: u64,
    #[serde(default)]
    pub shard: Option<String>,
}
