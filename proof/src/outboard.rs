//! Building the outboard in one streaming pass, and checking a shard against it.

use blake3::hazmat::ChainingValue;

use crate::tree::{
    GROUP_LEN, MAX_SHARD_LEN, PARENT_LEN, group_count, group_cv, left_groups, merge, outboard_len,
    parent_position,
};
use crate::{Error, ShardId};

struct Subtree {
    cv: ChainingValue,
    start: u64,
    size: u64,
}

/// Computes a shard's id and outboard from its bytes, fed in any chunking.
///
/// The shard length is declared up front (it is known before the bytes arrive
/// on every path in cairn), which lets each parent be written straight to its
/// pre-order slot. Memory: the outboard (1/256 of the shard) plus a stack of
/// at most 64 chaining values.
pub struct OutboardBuilder {
    len: u64,
    groups: u64,
    fed: u64,
    hasher: blake3::Hasher,
    group_fill: usize,
    next_group: u64,
    stack: Vec<Subtree>,
    outboard: Vec<u8>,
}

impl OutboardBuilder {
    /// A builder for a shard of exactly `len` bytes.
    pub fn new(len: u64) -> Result<Self, Error> {
        if len > MAX_SHARD_LEN {
            return Err(Error::ShardTooLarge(len));
        }
        Ok(OutboardBuilder {
            len,
            groups: group_count(len),
            fed: 0,
            hasher: blake3::Hasher::new(),
            group_fill: 0,
            next_group: 0,
            stack: Vec::with_capacity(64),
            outboard: vec![0; outboard_len(len) as usize],
        })
    }

    /// Bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.fed
    }

    /// Feeds the next bytes of the shard. Fails, without consuming anything,
    /// if they would exceed the declared length.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let got = self.fed.saturating_add(data.len() as u64);
        if got > self.len {
            return Err(Error::LengthMismatch {
                expected: self.len,
                got,
            });
        }
        if self.groups == 1 {
            // A one-group shard is its own root: plain BLAKE3.
            self.hasher.update(data);
            self.fed = got;
            return Ok(());
        }
        while !data.is_empty() {
            let take = (GROUP_LEN - self.group_fill).min(data.len());
            self.hasher.update(&data[..take]);
            self.group_fill += take;
            self.fed += take as u64;
            data = &data[take..];
            let group_end = ((self.next_group + 1) * GROUP_LEN as u64).min(self.len);
            if self.fed == group_end {
                self.finish_group();
            }
        }
        Ok(())
    }

    fn finish_group(&mut self) {
        let cv = blake3::hazmat::HasherExt::finalize_non_root(&self.hasher);
        self.stack.push(Subtree {
            cv,
            start: self.next_group,
            size: 1,
        });
        self.next_group += 1;
        self.group_fill = 0;
        self.hasher = blake3::Hasher::new();
        if self.next_group < self.groups {
            blake3::hazmat::HasherExt::set_input_offset(
                &mut self.hasher,
                self.next_group * GROUP_LEN as u64,
            );
            // Complete subtrees of 2^j groups can be merged as soon as more input follows.
            for _ in 0..self.next_group.trailing_zeros() {
                self.merge_top(false);
            }
        }
    }

    fn merge_top(&mut self, is_root: bool) {
        let right = self.stack.pop().expect("stack holds two subtrees");
        let left = self.stack.pop().expect("stack holds two subtrees");
        let size = left.size + right.size;
        let pos = parent_position(self.groups, left.start, size) as usize;
        let entry = &mut self.outboard[pos * PARENT_LEN..(pos + 1) * PARENT_LEN];
        entry[..32].copy_from_slice(&left.cv);
        entry[32..].copy_from_slice(&right.cv);
        self.stack.push(Subtree {
            cv: merge(&left.cv, &right.cv, is_root),
            start: left.start,
            size,
        });
    }

    /// The shard id and its outboard. Fails if fewer bytes than declared were fed.
    pub fn finalize(mut self) -> Result<(ShardId, Vec<u8>), Error> {
        if self.fed != self.len {
            return Err(Error::LengthMismatch {
                expected: self.len,
                got: self.fed,
            });
        }
        if self.groups == 1 {
            return Ok((ShardId(*self.hasher.finalize().as_bytes()), self.outboard));
        }
        while self.stack.len() > 1 {
            let is_root = self.stack.len() == 2;
            self.merge_top(is_root);
        }
        let root = self.stack.pop().expect("one subtree left");
        Ok((ShardId(root.cv), self.outboard))
    }
}

/// Id and outboard of a shard held in memory.
pub fn shard_id_and_outboard(shard: &[u8]) -> (ShardId, Vec<u8>) {
    let mut b = OutboardBuilder::new(shard.len() as u64).expect("in-memory shard is small");
    b.update(shard).expect("length matches");
    b.finalize().expect("length matches")
}

/// Checks a shard group by group as it streams in, against an outboard that
/// was itself checked against the shard id. Holds one chaining value per group.
#[derive(Debug, Clone)]
pub struct ShardVerifier {
    id: ShardId,
    len: u64,
    leaves: Vec<ChainingValue>,
}

impl ShardVerifier {
    /// Verifies every parent node of `outboard` up to the id; afterwards each
    /// group's expected chaining value is known.
    pub fn new(id: ShardId, len: u64, outboard: &[u8]) -> Result<Self, Error> {
        if len > MAX_SHARD_LEN {
            return Err(Error::ShardTooLarge(len));
        }
        let expected = outboard_len(len);
        if outboard.len() as u64 != expected {
            return Err(Error::OutboardSize {
                shard_len: len,
                expected,
                got: outboard.len() as u64,
            });
        }
        let n = group_count(len);
        let mut leaves = Vec::with_capacity(if n > 1 { n as usize } else { 0 });
        if n > 1 {
            check_parent(outboard, 0, n, &id.0, true, &mut leaves)?;
        }
        Ok(ShardVerifier { id, len, leaves })
    }

    /// Number of groups of this shard.
    pub fn groups(&self) -> u64 {
        group_count(self.len)
    }

    /// Checks that `bytes` are exactly group `index` of the shard.
    pub fn verify_group(&self, index: u64, bytes: &[u8]) -> Result<(), Error> {
        let groups = self.groups();
        if index >= groups {
            return Err(Error::GroupOutOfRange { index, groups });
        }
        let range = crate::group_range(self.len, index);
        if bytes.len() as u64 != range.end - range.start {
            return Err(Error::GroupMismatch { index });
        }
        let ok = if groups == 1 {
            *blake3::hash(bytes).as_bytes() == self.id.0
        } else {
            group_cv(index, bytes) == self.leaves[index as usize]
        };
        if ok {
            Ok(())
        } else {
            Err(Error::GroupMismatch { index })
        }
    }
}

/// Checks the parent at `pos` covering `size` groups against
/// `expected` (its chaining value as its own parent recorded it), collecting
/// leaf chaining values left to right.
fn check_parent(
    outboard: &[u8],
    pos: u64,
    size: u64,
    expected: &ChainingValue,
    is_root: bool,
    leaves: &mut Vec<ChainingValue>,
) -> Result<(), Error> {
    let at = pos as usize * PARENT_LEN;
    let mut left = [0u8; 32];
    let mut right = [0u8; 32];
    left.copy_from_slice(&outboard[at..at + 32]);
    right.copy_from_slice(&outboard[at + 32..at + 64]);
    if merge(&left, &right, is_root) != *expected {
        return Err(Error::OutboardMismatch);
    }
    let left_size = left_groups(size);
    let right_size = size - left_size;
    if left_size == 1 {
        leaves.push(left);
    } else {
        check_parent(outboard, pos + 1, left_size, &left, false, leaves)?;
    }
    if right_size == 1 {
        leaves.push(right);
    } else {
        check_parent(outboard, pos + left_size, right_size, &right, false, leaves)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i ^ (i >> 9)) as u8).collect()
    }

    #[test]
    fn id_is_plain_blake3_for_all_shapes() {
        for len in [
            0,
            1,
            1024,
            GROUP_LEN - 1,
            GROUP_LEN,
            GROUP_LEN + 1,
            2 * GROUP_LEN,
            3 * GROUP_LEN + 5,
            5 * GROUP_LEN,
            8 * GROUP_LEN,
            17 * GROUP_LEN + 999,
            128 * GROUP_LEN,
        ] {
            let d = data(len);
            let (id, ob) = shard_id_and_outboard(&d);
            assert_eq!(id.0, *blake3::hash(&d).as_bytes(), "len {len}");
            assert_eq!(ob.len() as u64, outboard_len(len as u64));
        }
    }

    #[test]
    fn chunking_of_input_does_not_matter() {
        let d = data(7 * GROUP_LEN + 123);
        let (id, ob) = shard_id_and_outboard(&d);
        for step in [1usize, 7, 1000, GROUP_LEN, GROUP_LEN + 1] {
            let mut b = OutboardBuilder::new(d.len() as u64).unwrap();
            for c in d.chunks(step) {
                b.update(c).unwrap();
            }
            assert_eq!(b.finalize().unwrap(), (id, ob.clone()), "step {step}");
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut b = OutboardBuilder::new(10).unwrap();
        assert!(matches!(
            b.update(&[0; 11]),
            Err(Error::LengthMismatch {
                expected: 10,
                got: 11
            })
        ));
        b.update(&[0; 9]).unwrap();
        assert!(matches!(
            b.finalize(),
            Err(Error::LengthMismatch {
                expected: 10,
                got: 9
            })
        ));
    }

    #[test]
    fn streaming_verifier_accepts_the_shard_and_catches_each_corrupt_group() {
        for len in [0usize, 100, GROUP_LEN, 5 * GROUP_LEN + 7, 16 * GROUP_LEN] {
            let d = data(len);
            let (id, ob) = shard_id_and_outboard(&d);
            let v = ShardVerifier::new(id, len as u64, &ob).unwrap();
            for g in 0..v.groups() {
                let r = crate::group_range(len as u64, g);
                let bytes = &d[r.start as usize..r.end as usize];
                v.verify_group(g, bytes).unwrap();
                if !bytes.is_empty() {
                    let mut bad = bytes.to_vec();
                    bad[bytes.len() / 2] ^= 1;
                    assert!(matches!(
                        v.verify_group(g, &bad),
                        Err(Error::GroupMismatch { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn corrupt_outboard_is_refused() {
        let d = data(9 * GROUP_LEN);
        let (id, ob) = shard_id_and_outboard(&d);
        for i in (0..ob.len()).step_by(13) {
            let mut bad = ob.clone();
            bad[i] ^= 0x20;
            assert!(matches!(
                ShardVerifier::new(id, d.len() as u64, &bad),
                Err(Error::OutboardMismatch)
            ));
        }
        assert!(matches!(
            ShardVerifier::new(id, d.len() as u64, &ob[1..]),
            Err(Error::OutboardSize { .. })
        ));
    }
}
