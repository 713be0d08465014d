//! Erasure parameters: k, m and the segment size, validated once.

use crate::Error;

/// GF(2^8) has 256 elements, so a code has at most 256 shards.
pub const MAX_TOTAL_SHARDS: usize = 256;
/// Full-segment shards are a multiple of this many bytes, so the SIMD loops
/// never run a scalar tail on them.
pub const SHARD_ALIGN: usize = 64;
/// Upper bound on the segment size: a pin holds a few segments in memory.
pub const MAX_SEGMENT_SIZE: usize = 256 << 20;

/// Validated erasure parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Params {
    data_shards: usize,
    parity_shards: usize,
    segment_size: usize,
}

impl Params {
    /// The default segment size, 8 MiB.
    pub const DEFAULT_SEGMENT_SIZE: usize = 8 << 20;

    /// Checks `k >= 1`, `m >= 1`, `k + m <= 256`, and that the segment size is
    /// positive, bounded and a multiple of `k * SHARD_ALIGN`.
    pub fn new(
        data_shards: usize,
        parity_shards: usize,
        segment_size: usize,
    ) -> Result<Self, Error> {
        if data_shards == 0 {
            return Err(Error::NoDataShards);
        }
        if parity_shards == 0 {
            return Err(Error::NoParityShards);
        }
        if data_shards + parity_shards > MAX_TOTAL_SHARDS {
            return Err(Error::TooManyShards {
                k: data_shards,
                m: parity_shards,
            });
        }
        if segment_size == 0 {
            return Err(Error::ZeroSegmentSize);
        }
        if segment_size > MAX_SEGMENT_SIZE {
            return Err(Error::SegmentTooLarge { segment_size });
        }
        let multiple = data_shards * SHARD_ALIGN;
        if !segment_size.is_multiple_of(multiple) {
            return Err(Error::SegmentSizeNotAligned {
                segment_size,
                k: data_shards,
                multiple,
                suggestion: segment_size.div_ceil(multiple) * multiple,
            });
        }
        Ok(Params {
            data_shards,
            parity_shards,
            segment_size,
        })
    }

    /// Like [`Params::new`], with the segment size rounded down to the nearest
    /// valid size (a multiple of `k * SHARD_ALIGN`): 8 MiB with k = 10 gives
    /// 8,388,480 bytes.
    pub fn with_segment_near(
        data_shards: usize,
        parity_shards: usize,
        target_segment_size: usize,
    ) -> Result<Self, Error> {
        let multiple = data_shards.max(1) * SHARD_ALIGN;
        let rounded = (target_segment_size / multiple * multiple).max(multiple);
        Params::new(data_shards, parity_shards, rounded)
    }

    /// k.
    pub fn data_shards(&self) -> usize {
        self.data_shards
    }

    /// m.
    pub fn parity_shards(&self) -> usize {
        self.parity_shards
    }

    /// k + m.
    pub fn total_shards(&self) -> usize {
        self.data_shards + self.parity_shards
    }

    /// Bytes per full segment.
    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// Shard length for a segment of `segment_len` bytes: `ceil(len / k)`.
    /// Full segments give `segment_size / k`; the last, short segment is padded
    /// with zeros up to `k` shards of this length.
    pub fn shard_len(&self, segment_len: usize) -> usize {
        segment_len.div_ceil(self.data_shards)
    }

    /// Number of segments of a stream of `stream_len` bytes (0 for an empty stream).
    pub fn segment_count(&self, stream_len: u64) -> u64 {
        stream_len.div_ceil(self.segment_size as u64)
    }

    /// Length of segment `index` of a stream of `stream_len` bytes.
    pub fn segment_len(&self, stream_len: u64, index: u64) -> usize {
        let start = index.saturating_mul(self.segment_size as u64);
        stream_len
            .saturating_sub(start)
            .min(self.segment_size as u64) as usize
    }

    pub(crate) fn check_segment_len(&self, len: usize) -> Result<(), Error> {
        if len == 0 || len > self.segment_size {
            return Err(Error::BadSegmentLength {
                len,
                segment_size: self.segment_size,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_violation_with_its_own_error() {
        assert_eq!(Params::new(0, 2, 1024), Err(Error::NoDataShards));
        assert_eq!(Params::new(4, 0, 1024), Err(Error::NoParityShards));
        assert_eq!(
            Params::new(200, 57, 200 * 64),
            Err(Error::TooManyShards { k: 200, m: 57 })
        );
        assert_eq!(Params::new(4, 2, 0), Err(Error::ZeroSegmentSize));
        assert!(matches!(
            Params::new(4, 2, 1000),
            Err(Error::SegmentSizeNotAligned {
                suggestion: 1024,
                ..
            })
        ));
        assert!(matches!(
            Params::new(4, 2, MAX_SEGMENT_SIZE + 256),
            Err(Error::SegmentTooLarge { .. })
        ));
        let p = Params::new(200, 56, 200 * 64).unwrap();
        assert_eq!(p.total_shards(), 256);
    }

    #[test]
    fn error_messages_name_the_fix() {
        let e = Params::new(3, 2, 1000).unwrap_err().to_string();
        assert!(e.contains("1152"), "{e}");
        let e = Params::new(4, 0, 1024).unwrap_err().to_string();
        assert!(e.contains("parity"), "{e}");
    }

    #[test]
    fn segment_near_rounds_down_to_a_valid_size() {
        let p = Params::with_segment_near(10, 4, 8 << 20).unwrap();
        assert_eq!(p.segment_size(), 8_388_480);
        assert_eq!(
            Params::with_segment_near(4, 2, 8 << 20)
                .unwrap()
                .segment_size(),
            8 << 20
        );
        assert_eq!(
            Params::with_segment_near(4, 2, 1).unwrap().segment_size(),
            256
        );
        assert_eq!(Params::with_segment_near(0, 2, 1), Err(Error::NoDataShards));
    }

    #[test]
    fn segment_arithmetic() {
        let p = Params::new(4, 2, 1024).unwrap();
        assert_eq!(p.segment_count(0), 0);
        assert_eq!(p.segment_count(1), 1);
        assert_eq!(p.segment_count(1024), 1);
        assert_eq!(p.segment_count(1025), 2);
        assert_eq!(p.segment_len(1025, 0), 1024);
        assert_eq!(p.segment_len(1025, 1), 1);
        assert_eq!(p.segment_len(1025, 2), 0);
        assert_eq!(p.shard_len(1024), 256);
        assert_eq!(p.shard_len(1), 1);
        assert_eq!(p.shard_len(5), 2);
    }
}
