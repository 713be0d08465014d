//! cairn-proto: what two cairn nodes agree on, as pure code.
//!
//! The wire protocol's frames and messages ([`wire`]), the records that
//! describe a pinned dataset ([`records`]: the content-addressed manifest and
//! the signed placement), and the one placement rule that every party
//! recomputes ([`placement`]: where a pinner puts shards, where repair puts
//! them again, what a validator admits, where a reader looks first).
//!
//! Nothing here touches a socket, a file or a clock: bytes and member lists
//! in, bytes and decisions out. The daemon (`cairn-node`) is the I/O shell
//! around it; the validator recomputes the same rule from the same inputs.
//! Every decoder bounds what it allocates by the bytes it was given.

pub mod grant;
pub mod placement;
pub mod records;
pub mod wire;

pub use grant::Grant;
pub use iroh_base::{PublicKey as NodeId, SecretKey, Signature};
pub use records::{Cid, Entry, EntryKind, Manifest, Placement, SegmentRecord};

/// The ALPN of the cairn protocol, version 1.
pub const ALPN: &[u8] = b"cairn/1";

/// What a node does on the network, as it announces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Stores shards and answers challenges.
    Miner,
    /// Challenges miners, repairs, sets weights.
    Validator,
    /// Pins and gets datasets; stores nothing for others.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Miner => "miner",
            Role::Validator => "validator",
            Role::Client => "client",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "miner" => Ok(Role::Miner),
            "validator" => Ok(Role::Validator),
            "client" => Ok(Role::Client),
            _ => Err(Error::UnknownRole(s.chars().take(40).collect())),
        }
    }
}

/// The state of a shard held by a miner, as its store records it and its
/// inventory reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardState {
    /// File present and, as far as the holder knows, intact.
    Present,
    /// File found missing or truncated (reconcile).
    Lost,
    /// File failed a scrub (bit rot) and was removed.
    Corrupt,
}

impl ShardState {
    pub fn to_u8(self) -> u8 {
        match self {
            ShardState::Present => 0,
            ShardState::Lost => 1,
            ShardState::Corrupt => 2,
        }
    }

    /// `None` for a byte no encoder writes.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(ShardState::Present),
            1 => Some(ShardState::Lost),
            2 => Some(ShardState::Corrupt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShardState::Present => "present",
            ShardState::Lost => "lost",
            ShardState::Corrupt => "corrupt",
        }
    }
}

/// Everything that can go wrong in this crate: input that does not decode
/// or does not make sense. Each variant names the input and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "malformed CID {input:?}: {why}; a CID is \"cairn1\" followed by 52 base32 characters, as `cairn pin` prints it"
    )]
    BadCid { input: String, why: String },
    #[error("invalid path {path:?} in dataset: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("not a valid manifest: {0}")]
    BadManifest(String),
    #[error("not a valid placement record: {0}")]
    BadPlacement(String),
    #[error("not a valid read grant: {0}")]
    BadGrant(String),
    #[error("unknown role {0:?}: use miner, validator or client")]
    UnknownRole(String),
    #[error(transparent)]
    Erasure(#[from] cairn_erasure::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
