//! The network: one QUIC endpoint per process ([`endpoint`]), frames on its
//! streams ([`frames`]), requests to peers with everything they send checked
//! ([`client`]), which peers failed lately ([`health`]), and where this node
//! stands behind NATs and relays ([`reach`]), and the bandwidth caps every
//! transfer goes through ([`bandwidth`]).

pub mod bandwidth;
pub mod client;
pub mod endpoint;
pub mod frames;
pub mod health;
pub mod reach;

pub use client::{ChallengeReply, Client, PutStream, ShardRange};
