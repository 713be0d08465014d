//! The network: one QUIC endpoint per process ([`endpoint`]), frames on its
//! streams ([`frames`]), requests to peers with everything they send checked
//! ([`client`]), and which peers failed lately ([`health`]).

pub mod client;
pub mod endpoint;
pub mod frames;
pub mod health;

pub use client::{ChallengeReply, Client, PutStream, ShardRange};
