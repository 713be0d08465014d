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

pub use client::{ChallengeReply, Client, HeardMark, PutStream, ShardRange};

/// Text that may hold a peer's own words (a refusal's message, a QUIC close
/// reason inside a stream error), made safe to log, to return through the
/// API and to print: control characters, terminal escape sequences among
/// them, become `?`.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
