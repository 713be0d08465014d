//! cairn-node: the daemon of a cairn node (miner, gateway or the node under a
//! validator), as a library.
//!
//! The pure parts live below it: `cairn-proto` (wire messages, records, the
//! placement rule), `cairn-proof`, `cairn-erasure`; the disk lives in
//! `cairn-store`. This crate is the I/O shell that joins them:
//!
//! | module | what it does |
//! |---|---|
//! | [`node`] | [`Node`]: starts, wires and stops everything; the only door other crates use |
//! | [`net`] | the QUIC endpoint, framed I/O on streams, the protocol client, peer health |
//! | [`server`] | answers peers: one authorization table, then a handler per request |
//! | [`registry`] | who is on the network: the local registry or the subtensor chain |
//! | [`datasets`] | pin, read, status and unpin of datasets, with the node's one dataset cache |
//! | [`gateway`] | the local HTTP API, the read gateway, the dashboard and `/metrics` |
//! | [`config`], [`identity`] | the TOML config; the node key and the hotkey files btcli writes |
//! | [`logging`], [`sdnotify`], [`cli_docs`] | what both binaries need to run as services |

pub mod cli_docs;
pub mod config;
pub mod datasets;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod net;
pub mod node;
pub mod registry;
pub mod sdnotify;
pub mod server;
pub mod size;
pub mod verdicts;

pub use cairn_proto::{ALPN, NodeId, Role};
pub use cairn_store::{MARKER as VOLUME_MARKER, unix_millis, unix_secs};
pub use error::{Error, Result};
pub use iroh::EndpointAddr;
pub use node::{Node, NodeBuilder, Prover, ProverAction, ValidatorService};
