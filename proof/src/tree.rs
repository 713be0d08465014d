//! Shape of a shard's hash tree at chunk-group granularity.
//!
//! BLAKE3 splits n chunks into a left subtree of the largest power of two
//! below n and the rest. With 16-chunk groups every subtree of two or more
//! groups starts and ends on a group boundary, so the same rule applies to
//! groups. Parent nodes are numbered in pre-order: a node at position p
//! covering g groups has its left child at p + 1 and its right child at
//! p + left_groups(g); a subtree of g groups holds g - 1 parents.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Bytes per BLAKE3 chunk: the piece a challenge samples.
pub const CHUNK_LEN: usize = 1024;
/// Chunks per chunk group.
pub(crate) const GROUP_CHUNKS: u64 = 16;
/// Bytes per chunk group, the leaf of the outboard's tree: 16 BLAKE3 chunks.
pub const GROUP_LEN: usize = GROUP_CHUNKS as usize * CHUNK_LEN;
/// Largest shard this crate handles (1 TiB): keeps all offsets far from overflow.
pub const MAX_SHARD_LEN: u64 = 1 << 40;
/// Bytes per outboard entry: the left and right child chaining values.
pub(crate) const PARENT_LEN: usize = 64;

/// Number of chunk groups of a shard of `len` bytes (an empty shard has one, empty, group).
pub fn group_count(len: u64) -> u64 {
    len.div_ceil(GROUP_LEN as u64).max(1)
}

/// Byte range of group `index` in a shard of `len` bytes.
pub fn group_range(len: u64, index: u64) -> std::ops::Range<u64> {
    let start = index.saturating_mul(GROUP_LEN as u64).min(len);
    let end = start.saturating_add(GROUP_LEN as u64).min(len);
    start..end
}

/// Number of BLAKE3 chunks of a shard of `len` bytes (an empty shard has one, empty, chunk).
pub fn chunk_count(len: u64) -> u64 {
    len.div_ceil(CHUNK_LEN as u64).max(1)
}

/// Byte range of chunk `index` in a shard of `len` bytes.
pub fn chunk_range(len: u64, index: u64) -> std::ops::Range<u64> {
    let start = index.saturating_mul(CHUNK_LEN as u64).min(len);
    let end = start.saturating_add(CHUNK_LEN as u64).min(len);
    start..end
}

/// Size of the outboard of a shard of `len` bytes: 64 bytes per parent node.
pub fn outboard_len(len: u64) -> u64 {
    (group_count(len) - 1) * PARENT_LEN as u64
}

/// Leaves in the left child of a subtree of `leaves` (> 1) leaves: the
/// largest power of two below it. The same rule holds for chunks and for
/// groups.
pub(crate) fn left_groups(leaves: u64) -> u64 {
    debug_assert!(leaves > 1);
    1 << (63 - (leaves - 1).leading_zeros())
}

/// Pre-order position of the parent covering `[start, start + size)` in a tree of `n` groups.
pub(crate) fn parent_position(n: u64, start: u64, size: u64) -> u64 {
    let (mut node_start, mut node_size, mut pos) = (0u64, n, 0u64);
    while (node_start, node_size) != (start, size) {
        let left = left_groups(node_size);
        if start < node_start + left {
            node_size = left;
            pos += 1;
        } else {
            node_start += left;
            node_size -= left;
            pos += left;
        }
    }
    pos
}

/// Chaining value of group `index` (never the root: only for trees of 2+ groups).
pub(crate) fn group_cv(index: u64, bytes: &[u8]) -> ChainingValue {
    subtree_cv(index * GROUP_CHUNKS, bytes)
}

/// Chaining value of the subtree of chunks starting at chunk `first`,
/// whose bytes are `bytes` (a whole subtree: a power of two chunks, or the
/// shard's last, shorter, subtree). Never the root.
pub(crate) fn subtree_cv(first: u64, bytes: &[u8]) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(first * CHUNK_LEN as u64);
    h.update(bytes);
    h.finalize_non_root()
}

pub(crate) fn merge(left: &ChainingValue, right: &ChainingValue, is_root: bool) -> ChainingValue {
    if is_root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_rule_matches_blake3_chunk_rule() {
        for n in 2u64..300 {
            let bytes = n * GROUP_LEN as u64;
            assert_eq!(
                left_groups(n) * GROUP_LEN as u64,
                blake3::hazmat::left_subtree_len(bytes),
                "n = {n}"
            );
            // a short last group does not change the split
            let short = bytes - 1000;
            assert_eq!(
                left_groups(n) * GROUP_LEN as u64,
                blake3::hazmat::left_subtree_len(short)
            );
        }
    }

    #[test]
    fn positions_are_pre_order() {
        // n = 5: root [0,5) p0; left [0,4) p1; [0,2) p2; [2,4) p3; right is a leaf.
        assert_eq!(parent_position(5, 0, 5), 0);
        assert_eq!(parent_position(5, 0, 4), 1);
        assert_eq!(parent_position(5, 0, 2), 2);
        assert_eq!(parent_position(5, 2, 2), 3);
        // n = 3: root p0, [0,2) p1
        assert_eq!(parent_position(3, 0, 2), 1);
    }

    #[test]
    fn counts() {
        assert_eq!(group_count(0), 1);
        assert_eq!(group_count(1), 1);
        assert_eq!(group_count(GROUP_LEN as u64), 1);
        assert_eq!(group_count(GROUP_LEN as u64 + 1), 2);
        assert_eq!(outboard_len(0), 0);
        assert_eq!(outboard_len(3 * GROUP_LEN as u64), 128);
        assert_eq!(group_range(20_000, 1), 16_384..20_000);
    }
}
