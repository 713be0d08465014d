//! Proof encoding, generation and verification.
//!
//! Encoding, version 2:
//!
//! ```text
//! version: u8 = 2
//! binding: [u8; 32]   digest of the challenge (nonce, shard id, length, samples)
//! body:               pre-order walk of the shard's BLAKE3 tree from the
//!                     root, at chunk (1 KiB) granularity, visiting only
//!                     subtrees that hold a sampled chunk; at a sampled chunk
//!                     its bytes, at an unvisited child its 32-byte chaining
//!                     value
//! ```
//!
//! Version 1 sampled whole 16 KiB groups (a c = 44 proof of a 2 MiB shard
//! was about 613 kB); version 2 samples chunks, so the same c detects the
//! same lost fraction with a proof of at most about 60 kB. The prover reads
//! the sampled chunk's whole group and computes the chaining values inside
//! the group that the outboard (which stops at groups) does not hold.
//!
//! The layout is fully determined by the challenge, so the verifier knows the
//! exact length before reading a byte: a truncated or padded proof is refused
//! without hashing, and nothing is allocated from the proof's contents. The
//! body must carry the sampled bytes themselves; a proof made of hashes alone
//! (what a prover that kept only the tree could produce) has the wrong length
//! and, were it padded out, the wrong root.

use blake3::hazmat::ChainingValue;

use crate::challenge::any_in;
use crate::tree::{
    GROUP_CHUNKS, PARENT_LEN, chunk_count, chunk_range, group_range, left_groups, merge, subtree_cv,
};
use crate::{Challenge, Error, ReadAt};

/// Version byte of the proof encoding produced by this build.
pub const PROOF_VERSION: u8 = 2;

/// Builds the proof for `challenge` from random access to the shard bytes
/// and its outboard. Reads only the groups of the sampled chunks and the
/// tree nodes on their paths.
pub fn prove(
    challenge: &Challenge,
    shard: &(impl ReadAt + ?Sized),
    outboard: &(impl ReadAt + ?Sized),
) -> Result<Vec<u8>, Error> {
    challenge.validate()?;
    let chunks = challenge.sampled_chunks();
    let mut out = Vec::with_capacity(challenge.proof_len());
    out.push(PROOF_VERSION);
    out.extend_from_slice(&challenge.binding());
    let n = chunk_count(challenge.shard_len);
    let mut p = Prover {
        shard,
        outboard,
        shard_len: challenge.shard_len,
        chunks: &chunks,
        group: None,
        group_bytes: Vec::new(),
        out: &mut out,
    };
    if n == 1 {
        p.chunk_bytes(0)?;
    } else {
        p.node(0, n, 0)?;
    }
    Ok(out)
}

struct Prover<'a, S: ?Sized, O: ?Sized> {
    shard: &'a S,
    outboard: &'a O,
    shard_len: u64,
    chunks: &'a [u64],
    /// The group whose bytes are in `group_bytes` (chunks are visited in
    /// ascending order, so one group at a time suffices).
    group: Option<u64>,
    group_bytes: Vec<u8>,
    out: &'a mut Vec<u8>,
}

impl<S: ReadAt + ?Sized, O: ReadAt + ?Sized> Prover<'_, S, O> {
    /// The bytes of chunks `[first, first + count)`, all in one group.
    fn chunks_of_group(&mut self, first: u64, count: u64) -> Result<&[u8], Error> {
        let g = first / GROUP_CHUNKS;
        let range = group_range(self.shard_len, g);
        if self.group != Some(g) {
            self.group_bytes
                .resize((range.end - range.start) as usize, 0);
            self.shard
                .read_exact_at(&mut self.group_bytes, range.start)?;
            self.group = Some(g);
        }
        let a = chunk_range(self.shard_len, first).start - range.start;
        let b = chunk_range(self.shard_len, first + count - 1).end - range.start;
        Ok(&self.group_bytes[a as usize..b as usize])
    }

    fn chunk_bytes(&mut self, index: u64) -> Result<(), Error> {
        let bytes = self.chunks_of_group(index, 1)?.to_vec();
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    /// A subtree of `size` (> 1) chunks from chunk `start`; `pos` is its
    /// pre-order position among the outboard's parents when it spans two or
    /// more groups.
    fn node(&mut self, start: u64, size: u64, pos: u64) -> Result<(), Error> {
        let left = left_groups(size);
        let spans_groups = size > GROUP_CHUNKS;
        let children = [
            (start, left, pos + 1, 0u64),
            (start + left, size - left, pos + left / GROUP_CHUNKS, 32),
        ];
        for (s, z, child_pos, half) in children {
            if any_in(self.chunks, s, z) {
                if z == 1 {
                    self.chunk_bytes(s)?;
                } else {
                    self.node(s, z, child_pos)?;
                }
            } else if spans_groups {
                // A child of a node spanning groups is a group or more: the
                // outboard holds its chaining value.
                let mut cv = [0u8; 32];
                self.outboard
                    .read_exact_at(&mut cv, pos * PARENT_LEN as u64 + half)?;
                self.out.extend_from_slice(&cv);
            } else {
                // Inside one group: computed from the group's bytes.
                let cv = subtree_cv(s, self.chunks_of_group(s, z)?);
                self.out.extend_from_slice(&cv);
            }
        }
        Ok(())
    }
}

/// Checks `proof` against the challenge: accepts only the exact bytes of the
/// sampled chunks linked to `challenge.shard_id` by valid tree nodes.
pub fn verify(challenge: &Challenge, proof: &[u8]) -> Result<(), Error> {
    challenge.validate()?;
    let expected = challenge.proof_len();
    let Some(&version) = proof.first() else {
        return Err(Error::ProofLength { expected, got: 0 });
    };
    if version != PROOF_VERSION {
        return Err(Error::ProofVersion(version));
    }
    if proof.len() != expected {
        return Err(Error::ProofLength {
            expected,
            got: proof.len(),
        });
    }
    if proof[1..33] != challenge.binding() {
        return Err(Error::ProofForOtherChallenge);
    }
    let chunks = challenge.sampled_chunks();
    let n = chunk_count(challenge.shard_len);
    let mut v = Verifier {
        body: &proof[33..],
        shard_len: challenge.shard_len,
        chunks: &chunks,
    };
    let root = if n == 1 {
        *blake3::hash(v.take(v.body.len())).as_bytes()
    } else {
        v.node(0, n, true)
    };
    debug_assert!(v.body.is_empty(), "length was checked up front");
    if root == challenge.shard_id.0 {
        Ok(())
    } else {
        Err(Error::ProofRootMismatch)
    }
}

struct Verifier<'a> {
    body: &'a [u8],
    shard_len: u64,
    chunks: &'a [u64],
}

impl<'a> Verifier<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.body.split_at(n);
        self.body = rest;
        head
    }

    fn node(&mut self, start: u64, size: u64, is_root: bool) -> ChainingValue {
        let left = left_groups(size);
        let mut cvs = [[0u8; 32]; 2];
        for (i, (s, z)) in [(start, left), (start + left, size - left)]
            .into_iter()
            .enumerate()
        {
            cvs[i] = if !any_in(self.chunks, s, z) {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(self.take(32));
                cv
            } else if z == 1 {
                let r = chunk_range(self.shard_len, s);
                subtree_cv(s, self.take((r.end - r.start) as usize))
            } else {
                self.node(s, z, false)
            };
        }
        merge(&cvs[0], &cvs[1], is_root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GROUP_LEN, ShardId, shard_id_and_outboard};

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 11) as u8)
            .collect()
    }

    fn setup(len: usize) -> (Vec<u8>, ShardId, Vec<u8>) {
        let d = data(len, 13);
        let (id, ob) = shard_id_and_outboard(&d);
        (d, id, ob)
    }

    #[test]
    fn honest_proofs_verify_for_all_shapes() {
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            17 * 1024 + 5,
            GROUP_LEN,
            GROUP_LEN + 1,
            3 * GROUP_LEN + 77,
            64 * GROUP_LEN,
            129 * GROUP_LEN,
        ] {
            let (d, id, ob) = setup(len);
            for nonce in 0..5u8 {
                for samples in [1u16, 4, 44, 300] {
                    let c = Challenge::new(id, len as u64, [nonce; 32], samples).unwrap();
                    let p = prove(&c, &d[..], &ob[..]).unwrap();
                    assert_eq!(p.len(), c.proof_len());
                    verify(&c, &p).unwrap_or_else(|e| panic!("len {len} samples {samples}: {e}"));
                }
            }
        }
    }

    #[test]
    fn proof_for_other_nonce_or_shard_is_rejected() {
        let (d, id, ob) = setup(50 * GROUP_LEN);
        let c1 = Challenge::new(id, d.len() as u64, [1; 32], 20).unwrap();
        let c2 = Challenge::new(id, d.len() as u64, [2; 32], 20).unwrap();
        let p1 = prove(&c1, &d[..], &ob[..]).unwrap();
        assert!(matches!(
            verify(&c2, &p1),
            Err(Error::ProofForOtherChallenge | Error::ProofLength { .. })
        ));
        // same binding forged for c2, body still c1's: the root check catches it
        let mut forged = p1.clone();
        forged[1..33].copy_from_slice(&c2.binding());
        if forged.len() == c2.proof_len() {
            assert!(matches!(
                verify(&c2, &forged),
                Err(Error::ProofRootMismatch)
            ));
        }
        // another shard of the same length
        let other = data(d.len(), 99);
        let (oid, oob) = shard_id_and_outboard(&other);
        let c_other = Challenge::new(oid, d.len() as u64, [1; 32], 20).unwrap();
        let p_other = prove(&c_other, &other[..], &oob[..]).unwrap();
        assert!(verify(&c1, &p_other).is_err());
    }

    #[test]
    fn version_truncation_and_padding_are_rejected() {
        let (d, id, ob) = setup(10 * GROUP_LEN);
        let c = Challenge::new(id, d.len() as u64, [5; 32], 8).unwrap();
        let p = prove(&c, &d[..], &ob[..]).unwrap();
        let mut v1 = p.clone();
        v1[0] = 1;
        assert!(matches!(verify(&c, &v1), Err(Error::ProofVersion(1))));
        assert!(matches!(
            verify(&c, &p[..p.len() - 1]),
            Err(Error::ProofLength { .. })
        ));
        let mut padded = p.clone();
        padded.push(0);
        assert!(matches!(
            verify(&c, &padded),
            Err(Error::ProofLength { .. })
        ));
        assert!(matches!(
            verify(&c, &[]),
            Err(Error::ProofLength { got: 0, .. })
        ));
    }

    #[test]
    fn prover_reads_only_what_it_needs() {
        use std::cell::Cell;
        struct Counting<'a>(&'a [u8], Cell<u64>);
        impl ReadAt for Counting<'_> {
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
                self.1.set(self.1.get() + buf.len() as u64);
                self.0.read_exact_at(buf, offset)
            }
        }
        let (d, id, ob) = setup(256 * GROUP_LEN);
        let c = Challenge::new(id, d.len() as u64, [9; 32], 4).unwrap();
        let shard = Counting(&d, Cell::new(0));
        let outb = Counting(&ob, Cell::new(0));
        let p = prove(&c, &shard, &outb).unwrap();
        verify(&c, &p).unwrap();
        // each sampled chunk's group once, and the tree nodes above the groups
        assert!(
            shard.1.get() <= 4 * GROUP_LEN as u64,
            "read {}",
            shard.1.get()
        );
        assert!(outb.1.get() <= 4 * 8 * 32, "read {}", outb.1.get());
        // the proof carries chunks, not groups
        assert!(p.len() <= 33 + 4 * (1024 + 12 * 32), "{}", p.len());
    }

    #[test]
    fn missing_outboard_or_short_shard_is_a_read_error() {
        let (d, id, ob) = setup(4 * GROUP_LEN);
        let c = Challenge::new(id, d.len() as u64, [1; 32], 2).unwrap();
        assert!(matches!(prove(&c, &d[..100], &ob[..]), Err(Error::Read(_))));
        assert!(matches!(prove(&c, &d[..], &ob[..10]), Err(Error::Read(_))));
    }
}
