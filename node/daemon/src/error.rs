//! The one error enum of the crate.

use cairn_proto::wire::ErrorCode;

/// Everything that can go wrong in cairn-node's library. Callers (the
/// server's replies, the gateway's statuses, the validator's verdicts)
/// choose from the variant, never from the message.
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
    #[error("key file {path}: {message}")]
    Key { path: String, message: String },
    /// A local registry entry or a registry operation failed.
    #[error("registry: {0}")]
    Registry(String),
    /// The chain refused or could not be reached; the message names the
    /// cause and the fix.
    #[error("chain: {0}")]
    Chain(String),
    /// Binding a socket failed (the message names the setting to change).
    #[error("{0}")]
    Bind(String),
    /// Talking to a peer failed: unreachable, or the stream broke.
    #[error("peer {peer}: {message}")]
    Peer { peer: String, message: String },
    /// The peer answered, but with bytes no honest peer sends (oversized,
    /// undecodable, failing verification): its fault, not the network's.
    #[error("peer {peer} sent an invalid reply: {message}")]
    BadReply { peer: String, message: String },
    /// The peer refused the request with this code.
    #[error("peer {peer} refused: {code}: {message}")]
    Remote {
        peer: String,
        code: ErrorCode,
        message: String,
    },
    /// A pin request that cannot be pinned as it is (the caller's to fix).
    #[error("{0}")]
    BadRequest(String),
    /// No such dataset, or no such file in it.
    #[error("{0}")]
    NotFound(String),
    /// Too few miners to place or read a dataset now.
    #[error("{0}")]
    Unavailable(String),
    /// Bytes that were verified piecewise do not add up (a decoded segment
    /// that does not match its manifest).
    #[error("{0}")]
    Corrupt(String),
    /// The node is shutting down, or a task it ran failed.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] cairn_store::StoreError),
    #[error(transparent)]
    Proto(#[from] cairn_proto::Error),
    #[error(transparent)]
    Proof(#[from] cairn_proof::Error),
    #[error(transparent)]
    Erasure(#[from] cairn_erasure::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn task(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a task failed: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
