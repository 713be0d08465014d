//! Challenges: which chunks a prover must produce.

use crate::tree::{CHUNK_LEN, GROUP_CHUNKS, MAX_SHARD_LEN, chunk_count, chunk_range, left_groups};
use crate::{Error, ShardId};

/// Most samples a challenge may ask for. Bounds a proof to about 2 MiB.
pub const MAX_SAMPLES: u16 = 1024;

/// Upper bound on any proof's length: every sample a full chunk plus one
/// chaining value per level of the deepest tree (2^30 chunks).
pub const MAX_PROOF_LEN: usize = 1 + 32 + MAX_SAMPLES as usize * (CHUNK_LEN + 30 * 32);

const INDEX_CONTEXT: &str = "cairn 2026-11 challenge chunk indices v2";
const BINDING_CONTEXT: &str = "cairn 2026-11 proof binding v2";

/// A storage challenge: prove you hold the shard by producing `samples`
/// 1 KiB chunks chosen by `BLAKE3(nonce || shard id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    pub shard_id: ShardId,
    pub shard_len: u64,
    pub nonce: [u8; 32],
    pub samples: u16,
}

impl Challenge {
    /// Checks the sample count (1..=MAX_SAMPLES) and the shard length.
    pub fn new(
        shard_id: ShardId,
        shard_len: u64,
        nonce: [u8; 32],
        samples: u16,
    ) -> Result<Self, Error> {
        let c = Challenge {
            shard_id,
            shard_len,
            nonce,
            samples,
        };
        c.validate()?;
        Ok(c)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.samples == 0 || self.samples > MAX_SAMPLES {
            return Err(Error::BadSampleCount(u32::from(self.samples)));
        }
        if self.shard_len > MAX_SHARD_LEN {
            return Err(Error::ShardTooLarge(self.shard_len));
        }
        Ok(())
    }

    /// The `samples` chunk indices, drawn with replacement, uniform over the
    /// shard's chunks: a BLAKE3 XOF keyed by the nonce and the shard id, read
    /// as u64s with rejection of the biased tail.
    pub fn indices(&self) -> Vec<u64> {
        let n = chunk_count(self.shard_len);
        let mut h = blake3::Hasher::new_derive_key(INDEX_CONTEXT);
        h.update(&self.nonce);
        h.update(&self.shard_id.0);
        h.update(&self.shard_len.to_le_bytes());
        let mut xof = h.finalize_xof();
        let zone = u64::MAX - (u64::MAX % n + 1) % n; // largest multiple of n, minus 1
        let mut out = Vec::with_capacity(usize::from(self.samples));
        let mut word = [0u8; 8];
        while out.len() < usize::from(self.samples) {
            xof.fill(&mut word);
            let x = u64::from_le_bytes(word);
            if x <= zone {
                out.push(x % n);
            }
        }
        out
    }

    /// The distinct sampled chunks, ascending: what a proof carries.
    pub fn sampled_chunks(&self) -> Vec<u64> {
        let mut v = self.indices();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The distinct chunk groups the sampled chunks fall in, ascending: what
    /// the prover reads from disk.
    pub fn sampled_groups(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .sampled_chunks()
            .into_iter()
            .map(|c| c / GROUP_CHUNKS)
            .collect();
        v.dedup();
        v
    }

    /// Exact length of a proof for this challenge (version, binding, body).
    pub fn proof_len(&self) -> usize {
        let chunks = self.sampled_chunks();
        1 + 32 + body_len(self.shard_len, &chunks)
    }

    /// A digest of every field, written into the proof so that a proof made
    /// for another challenge is told apart before any hashing of the body.
    pub(crate) fn binding(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(BINDING_CONTEXT);
        h.update(&self.nonce);
        h.update(&self.shard_id.0);
        h.update(&self.shard_len.to_le_bytes());
        h.update(&self.samples.to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// True if any of the ascending `leaves` lies in `[start, start + size)`.
pub(crate) fn any_in(leaves: &[u64], start: u64, size: u64) -> bool {
    let i = leaves.partition_point(|&g| g < start);
    i < leaves.len() && leaves[i] < start + size
}

/// Length of the proof body: the sampled chunks' bytes plus one 32-byte
/// chaining value for every unsampled sibling on their paths.
fn body_len(shard_len: u64, chunks: &[u64]) -> usize {
    fn walk(shard_len: u64, chunks: &[u64], start: u64, size: u64) -> u64 {
        if size == 1 {
            let r = chunk_range(shard_len, start);
            return r.end - r.start;
        }
        let left = left_groups(size);
        let mut total = 0;
        for (s, z) in [(start, left), (start + left, size - left)] {
            total += if any_in(chunks, s, z) {
                walk(shard_len, chunks, s, z)
            } else {
                32
            };
        }
        total
    }
    walk(shard_len, chunks, 0, chunk_count(shard_len)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(nonce: u8, len: u64, samples: u16) -> Challenge {
        Challenge::new(ShardId([7; 32]), len, [nonce; 32], samples).unwrap()
    }

    #[test]
    fn indices_are_deterministic_and_in_range() {
        let c = ch(1, 100 * CHUNK_LEN as u64, 44);
        assert_eq!(c.indices(), c.indices());
        assert_eq!(c.indices().len(), 44);
        assert!(c.indices().iter().all(|&i| i < 100));
        assert_ne!(c.indices(), ch(2, 100 * CHUNK_LEN as u64, 44).indices());
        assert!(c.sampled_groups().iter().all(|&g| g < 7));
    }

    #[test]
    fn sample_count_is_bounded() {
        assert!(matches!(
            Challenge::new(ShardId([0; 32]), 10, [0; 32], 0),
            Err(Error::BadSampleCount(0))
        ));
        assert!(Challenge::new(ShardId([0; 32]), 10, [0; 32], MAX_SAMPLES + 1).is_err());
    }

    #[test]
    fn one_chunk_shards_always_sample_chunk_zero() {
        let c = ch(3, 5, 10);
        assert_eq!(c.sampled_chunks(), vec![0]);
        assert_eq!(c.proof_len(), 33 + 5);
    }

    #[test]
    fn a_c44_proof_of_a_2mib_shard_fits_in_64kib() {
        for nonce in 0..50 {
            let c = ch(nonce, 2 << 20, 44);
            assert!(c.proof_len() <= 64 << 10, "{}", c.proof_len());
        }
    }
}
