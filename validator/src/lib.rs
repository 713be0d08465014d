//! cairn-validator: challenges miners, verifies their proofs without holding
//! the data, scores them, repairs lost shards and sets weights.
//!
//! A validator is a cairn node with more duties: [`ledger`] is its state as
//! a pure state machine (assignments, the next challenge, what an outcome
//! means, weights) driven on the caller's clock; [`service`] is the thin
//! async shell that runs on a [`cairn_node::Node`] through its facade. Scores
//! follow Storj's audit reputation, with containment and vetting
//! ([`score`]); deadlines follow each miner's link ([`deadline`]).

pub mod config;
pub mod deadline;
pub mod ledger;
pub mod score;
pub mod service;

/// Everything that can go wrong in the validator's library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    /// The validator will not do this (a steered placement, a dataset no
    /// longer audited, a rebuilt shard that does not match).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Node(#[from] cairn_node::Error),
    #[error(transparent)]
    Proto(#[from] cairn_proto::Error),
    #[error(transparent)]
    Erasure(#[from] cairn_erasure::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
