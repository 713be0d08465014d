//! cairn-validator: challenges miners, verifies their proofs without holding
//! the data, scores them, repairs lost shards and sets weights.
//!
//! A validator is a node with more duties: it runs cairn-node's server and
//! client and adds its own loops ([`service`]); it depends on node's
//! library, never the reverse. Scores follow Storj's audit reputation
//! ([`score`]).

pub mod config;
pub mod score;
pub mod service;

/// Everything that can go wrong in the validator's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Node(#[from] cairn_node::Error),
    #[error(transparent)]
    Erasure(#[from] cairn_erasure::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
