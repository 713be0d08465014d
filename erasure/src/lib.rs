//! Segments and Reed-Solomon shards: the pure erasure core of cairn.
//!
//! A dataset is a byte stream. [`Segmenter`] cuts it into fixed-size segments
//! (the last one shorter), [`Encoder`] turns a segment into `k` data and `m`
//! parity shards, and [`Decoder`] restores the exact segment bytes from any `k`
//! of those shards. Nothing here touches a file, a socket or a clock: bytes in,
//! bytes out, so the same code runs in the CLI, the miner and the validator and
//! is tested exhaustively in isolation.
//!
//! The code is systematic (data shards are slices of the segment) over GF(2^8),
//! from `reed-solomon-erasure`. With its `simd-accel` feature the inner loops are
//! C with AVX2 or SSSE3 on x86_64 and NEON on aarch64; on armv7 the crate uses its
//! portable Rust loops (see docs/ARCHITECTURE.md).

mod codec;
mod params;
mod segment;

pub use codec::{Decoder, EncodedSegment, Encoder};
pub use params::{MAX_SEGMENT_SIZE, MAX_TOTAL_SHARDS, Params, SHARD_ALIGN};
pub use segment::{Segment, Segmenter};

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("data shard count k must be at least 1 (got 0)")]
    NoDataShards,
    #[error("parity shard count m must be at least 1 (got 0): without parity no shard may be lost")]
    NoParityShards,
    #[error(
        "k + m = {k} + {m} = {} exceeds {MAX_TOTAL_SHARDS}, the limit of a GF(2^8) code; use fewer shards",
        k + m
    )]
    TooManyShards { k: usize, m: usize },
    #[error("segment size must be greater than 0")]
    ZeroSegmentSize,
    #[error(
        "segment size {segment_size} is not a multiple of {multiple} (k = {k} shards of {SHARD_ALIGN}-byte aligned length); try {suggestion}"
    )]
    SegmentSizeNotAligned {
        segment_size: usize,
        k: usize,
        multiple: usize,
        suggestion: usize,
    },
    #[error("segment size {segment_size} exceeds the maximum of {MAX_SEGMENT_SIZE} bytes")]
    SegmentTooLarge { segment_size: usize },
    #[error("segment of {len} bytes is not between 1 and the segment size {segment_size}")]
    BadSegmentLength { len: usize, segment_size: usize },
    #[error("a segment is encoded from k = {k} data shards; {got} were given")]
    DataShardCount { got: usize, k: usize },
    #[error("shard index {index} is out of range: this code has {total} shards (0..{total})")]
    ShardIndexOutOfRange { index: usize, total: usize },
    #[error("shard {index} was given twice")]
    DuplicateShard { index: usize },
    #[error(
        "shard {index} has {got} bytes, but a segment of this length has shards of {expected} bytes"
    )]
    ShardLengthMismatch {
        index: usize,
        got: usize,
        expected: usize,
    },
    #[error(
        "only {have} distinct shards given, at least k = {need} are needed to restore the segment"
    )]
    NotEnoughShards { have: usize, need: usize },
    #[error("Reed-Solomon coder failed: {0}")]
    Coder(String),
}

impl From<reed_solomon_erasure::Error> for Error {
    fn from(e: reed_solomon_erasure::Error) -> Self {
        Error::Coder(format!("{e:?}"))
    }
}
