//! Shard commitments, storage challenges and proofs: the pure proof core of cairn.
//!
//! A shard is committed to by its BLAKE3 hash, seen as a tree whose leaves are
//! 16 KiB *chunk groups* (16 BLAKE3 chunks). [`OutboardBuilder`] computes the
//! shard id and the *outboard* (every parent node of that tree, 64 bytes per
//! parent, 1/256 of the shard) in one streaming pass. A [`Challenge`] names a
//! shard, a fresh nonce and a sample count; the sampled 1 KiB chunks follow
//! from BLAKE3 over the nonce and the id, so the prover cannot choose them.
//! [`prove`] answers with the sampled chunks' bytes plus the tree nodes that
//! link them to the id, reading only those chunks' groups and the nodes
//! above; [`verify`] checks the answer with nothing but the id, the length
//! and the challenge (proof format version 2: see the `proof` module).
//! [`ShardVerifier`] checks a shard group by group as it streams in.
//!
//! Nothing here opens a file, a socket or reads a clock: storage is reached
//! through the [`ReadAt`] trait, which node implements over files.
//!
//! The tree is BLAKE3's own, built with `blake3::hazmat` (an official API for
//! subtree chaining values) rather than the `bao-tree` crate: the tree code is
//! small, the proof encoding and its size bound are ours to define, and the
//! dependency tree stays at one crate. A shard id equals `blake3::hash(shard)`.

mod challenge;
mod outboard;
mod proof;
mod tree;

pub use challenge::{Challenge, MAX_PROOF_LEN, MAX_SAMPLES};
pub use outboard::{OutboardBuilder, ShardVerifier, shard_id_and_outboard};
pub use proof::{PROOF_VERSION, prove, verify};
pub use tree::{
    CHUNK_LEN, GROUP_LEN, MAX_SHARD_LEN, chunk_count, chunk_range, group_count, group_range,
    outboard_len,
};

use std::fmt;
use std::str::FromStr;

/// Everything that can go wrong in this crate, including every reason a proof is rejected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sample count {0} is outside 1..={MAX_SAMPLES}")]
    BadSampleCount(u32),
    #[error("shard length {0} exceeds the maximum of {MAX_SHARD_LEN} bytes")]
    ShardTooLarge(u64),
    #[error("the shard was declared as {expected} bytes but {got} bytes were given")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("the outboard has {got} bytes; a shard of {shard_len} bytes needs {expected}")]
    OutboardSize {
        shard_len: u64,
        expected: u64,
        got: u64,
    },
    #[error("the outboard does not hash to the shard id (corrupt or for another shard)")]
    OutboardMismatch,
    #[error("chunk group {index} does not hash to its place in the shard's tree")]
    GroupMismatch { index: u64 },
    #[error("chunk group {index} does not exist in a shard of {groups} groups")]
    GroupOutOfRange { index: u64, groups: u64 },
    #[error("not a shard id: {0} (expected 64 hex digits)")]
    BadShardId(String),
    #[error("reading the shard or its outboard failed: {0}")]
    Read(#[from] std::io::Error),
    #[error("proof version {0} is not supported (this build speaks version {PROOF_VERSION})")]
    ProofVersion(u8),
    #[error("proof is {got} bytes, this challenge needs exactly {expected}")]
    ProofLength { expected: usize, got: usize },
    #[error("proof answers another challenge (other nonce, shard, length or sample count)")]
    ProofForOtherChallenge,
    #[error("proof does not hash to the shard id: chunk bytes or tree nodes are wrong")]
    ProofRootMismatch,
}

impl Error {
    /// True for the errors that mean "this proof is wrong" rather than a local fault.
    pub fn is_proof_rejection(&self) -> bool {
        matches!(
            self,
            Error::ProofVersion(_)
                | Error::ProofLength { .. }
                | Error::ProofForOtherChallenge
                | Error::ProofRootMismatch
        )
    }
}

/// The id of a shard: the BLAKE3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub [u8; 32]);

impl ShardId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hex form, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ShardId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadShardId(s.chars().take(80).collect());
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(ShardId(out))
    }
}

/// Random access to bytes: a shard or its outboard, in memory or on disk.
pub trait ReadAt {
    /// Fills `buf` from `offset`; fails if the source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {offset} past the end of {} bytes",
                    buf.len(),
                    self.len()
                ),
            )),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_id_hex_round_trip_and_errors() {
        let id = ShardId(*blake3::hash(b"x").as_bytes());
        assert_eq!(id.to_hex().parse::<ShardId>().unwrap(), id);
        assert_eq!(id.to_string(), blake3::hash(b"x").to_hex().as_str());
        assert!(matches!("zz".parse::<ShardId>(), Err(Error::BadShardId(_))));
        let bad = "g".repeat(64);
        assert!(bad.parse::<ShardId>().is_err());
    }
}
