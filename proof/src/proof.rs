//! Proof encoding, generation and verification.
//!
//! Encoding, version 1:
//!
//! ```text
//! version: u8 = 1
//! binding: [u8; 32]   digest of the challenge (nonce, shard id, length, samples)
//! body:               pre-order walk of the tree from the root, visiting
//!                     only subtrees that hold a sampled group; at a sampled
//!                     leaf the group's bytes, at an unvisited child its
//!                     32-byte chaining value
//! ```
//!
//! The layout is fully determined by the challenge, so the verifier knows the
//! exact length before reading a byte: a truncated or padded proof is refused
//! without hashing, and nothing is allocated from the proof's contents. The
//! body must carry the sampled bytes themselves; a proof made of hashes alone
//! (what a prover that kept only the tree could produce) has the wrong length
//! and, were it padded out, the wrong root.

use blake3::hazmat::ChainingValue;

use crate::challenge::any_in;
use crate::tree::{PARENT_LEN, group_count, group_cv, left_groups, merge};
use crate::{Challenge, Error, ReadAt};

/// Version byte of the proof encoding produced by this build.
pub const PROOF_VERSION: u8 = 1;

/// Builds the proof for `challenge` from random access to the shard bytes
/// and its outboard. Reads only the sampled groups and the tree nodes on
/// their paths.
pub fn prove(
    challenge: &Challenge,
    shard: &(impl ReadAt + ?Sized),
    outboard: &(impl ReadAt + ?Sized),
) -> Result<Vec<u8>, Error> {
    challenge.validate()?;
    let groups = challenge.sampled_groups();
    let mut out = Vec::with_capacity(challenge.proof_len());
    out.push(PROOF_VERSION);
    out.extend_from_slice(&challenge.binding());
    let n = group_count(challenge.shard_len);
    let mut p = Prover {
        shard,
        outboard,
        shard_len: challenge.shard_len,
        groups: &groups,
        out: &mut out,
    };
    p.node(0, n, 0)?;
    Ok(out)
}

struct Prover<'a, S: ?Sized, O: ?Sized> {
    shard: &'a S,
    outboard: &'a O,
    shard_len: u64,
    groups: &'a [u64],
    out: &'a mut Vec<u8>,
}

impl<S: ReadAt + ?Sized, O: ReadAt + ?Sized> Prover<'_, S, O> {
    fn node(&mut self, start: u64, size: u64, pos: u64) -> Result<(), Error> {
        if size == 1 {
            let r = crate::group_range(self.shard_len, start);
            let at = self.out.len();
            self.out.resize(at + (r.end - r.start) as usize, 0);
            self.shard.read_exact_at(&mut self.out[at..], r.start)?;
            return Ok(());
        }
        let left = left_groups(size);
        let children = [
            (start, left, pos + 1, 0u64),
            (start + left, size - left, pos + left, 32),
        ];
        for (s, z, child_pos, half) in children {
            if any_in(self.groups, s, z) {
                self.node(s, z, child_pos)?;
            } else {
                let mut cv = [0u8; 32];
                self.outboard
                    .read_exact_at(&mut cv, pos * PARENT_LEN as u64 + half)?;
                self.out.extend_from_slice(&cv);
            }
        }
        Ok(())
    }
}

/// Checks `proof` against the challenge: accepts only the exact bytes of the
/// sampled groups linked to `challenge.shard_id` by valid tree nodes.
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
    let groups = challenge.sampled_groups();
    let n = group_count(challenge.shard_len);
    let mut v = Verifier {
        body: &proof[33..],
        shard_len: challenge.shard_len,
        groups: &groups,
        single_group: n == 1,
    };
    let root = v.node(0, n, true);
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
    groups: &'a [u64],
    single_group: bool,
}

impl<'a> Verifier<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.body.split_at(n);
        self.body = rest;
        head
    }

    fn node(&mut self, start: u64, size: u64, is_root: bool) -> ChainingValue {
        if size == 1 {
            let r = crate::group_range(self.shard_len, start);
            let bytes = self.take((r.end - r.start) as usize);
            return if self.single_group {
                *blake3::hash(bytes).as_bytes()
            } else {
                group_cv(start, bytes)
            };
        }
        let left = left_groups(size);
        let mut cvs = [[0u8; 32]; 2];
        for (i, (s, z)) in [(start, left), (start + left, size - left)]
            .into_iter()
            .enumerate()
        {
            cvs[i] = if any_in(self.groups, s, z) {
                self.node(s, z, false)
            } else {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(self.take(32));
                cv
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
        let mut v2 = p.clone();
        v2[0] = 2;
        assert!(matches!(verify(&c, &v2), Err(Error::ProofVersion(2))));
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
        assert!(
            shard.1.get() <= 4 * GROUP_LEN as u64,
            "read {}",
            shard.1.get()
        );
        assert!(outb.1.get() <= 4 * 8 * 32, "read {}", outb.1.get());
    }

    #[test]
    fn missing_outboard_or_short_shard_is_a_read_error() {
        let (d, id, ob) = setup(4 * GROUP_LEN);
        let c = Challenge::new(id, d.len() as u64, [1; 32], 2).unwrap();
        assert!(matches!(prove(&c, &d[..100], &ob[..]), Err(Error::Read(_))));
        assert!(matches!(prove(&c, &d[..], &ob[..10]), Err(Error::Read(_))));
    }
}
