//! cairn-node: the storage miner, the edge node and the `cairn` CLI.
//!
//! Everything that touches a file, a socket or a clock lives here (the pure
//! cores are `cairn-erasure` and `cairn-proof`): the storage engine
//! ([`store`]), the QUIC protocol ([`wire`], [`server`], [`client`]),
//! identities ([`identity`]), membership ([`registry`]), configuration
//! ([`config`]), the daemon ([`daemon`]) and its systemd integration
//! ([`sdnotify`], [`logging`]).

pub mod api_client;
pub mod cli_docs;
pub mod client;
pub mod config;
pub mod daemon;
pub mod datasets;
pub mod devnet;
pub mod http;
pub mod identity;
pub mod logging;
pub mod manifest;
pub mod placement;
pub mod registry;
pub mod sdnotify;
pub mod server;
pub mod size;
pub mod store;
pub mod subtensor;
pub mod transfer;
pub mod wire;

pub use iroh::{EndpointAddr, PublicKey as NodeId};

/// The ALPN of the cairn protocol, version 1.
pub const ALPN: &[u8] = b"cairn/1";

/// Everything that can go wrong in cairn-node's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {message}")]
    Config { path: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata database: {0}")]
    Db(String),
    #[error("key file {path}: {message}")]
    Key { path: String, message: String },
    #[error("registry: {0}")]
    Registry(String),
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    /// The peer answered, but with bytes no honest peer sends (oversized or
    /// undecodable): its fault, not the network's.
    #[error("peer {peer} sent an invalid reply: {message}")]
    BadReply { peer: String, message: String },
    #[error("peer {peer} refused: {code}: {message}")]
    Remote {
        peer: String,
        code: wire::ErrorCode,
        message: String,
    },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("shard {0} is not stored here")]
    ShardNotFound(cairn_proof::ShardId),
    #[error(
        "storage full: {needed} bytes needed, {free} bytes free of {capacity}; raise `capacity` in the config or free space"
    )]
    Full {
        needed: u64,
        free: u64,
        capacity: u64,
    },
    #[error("the bytes do not hash to the claimed shard id {claimed} (they hash to {actual})")]
    HashMismatch {
        claimed: cairn_proof::ShardId,
        actual: cairn_proof::ShardId,
    },
    #[error(transparent)]
    Proof(#[from] cairn_proof::Error),
    #[error(transparent)]
    Erasure(#[from] cairn_erasure::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Db(e.into_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
