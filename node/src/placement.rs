//! Where shards go: weighted rendezvous (highest-random-weight) hashing.
//!
//! For a key (a segment's hash and a shard index, or a CID) every miner gets
//! the score `w / -ln(u)`, where `u` in (0, 1) comes from BLAKE3 of the key
//! and the miner's node id and `w` is the miner's weight. Ranking miners by
//! score gives each key its own order; a miner's share of keys is
//! proportional to its weight, and adding or removing a miner moves only the
//! keys it wins or held. Anyone with the same member list recomputes the same
//! order, which is how validators check that a pinner did not steer shards.
//!
//! Weights are the free capacity rounded down to a power of two (in MiB), so
//! that the order does not change with every shard a miner stores.

use crate::NodeId;

/// A miner that may receive shards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: NodeId,
    pub weight: f64,
}

/// Weight of a miner with `free` bytes: free MiB rounded down to a power of two.
pub fn capacity_weight(free: u64) -> f64 {
    let mib = (free >> 20).max(1);
    (1u64 << (63 - mib.leading_zeros())) as f64
}

fn score(key: &[u8], index: u32, node: &NodeId, weight: f64) -> f64 {
    let mut h = blake3::Hasher::new_derive_key("cairn 2026-11 rendezvous v1");
    h.update(key);
    h.update(&index.to_le_bytes());
    h.update(node.as_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8"));
    // u in (0, 1): never 0, never 1
    let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -u.ln()
}

/// Candidates ordered best first for `(key, index)`. Ties break by node id.
pub fn rank(key: &[u8], index: u32, candidates: &[Candidate]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.weight > 0.0)
        .map(|(i, c)| (score(key, index, &c.id, c.weight), i))
        .collect();
    scored.sort_by(|a, b| {
        b.0.total_cmp(&a.0).then_with(|| {
            candidates[a.1]
                .id
                .as_bytes()
                .cmp(candidates[b.1].id.as_bytes())
        })
    });
    scored.into_iter().map(|(_, i)| i).collect()
}

/// For each of `shards` shard indices of a segment, its candidates in order,
/// with every shard's first choice distinct: shard i takes the best miner of
/// its own order that no earlier shard took first. Returns, per shard, the
/// full order with the assigned miner first (the rest are fall-backs).
pub fn place_segment(
    segment_key: &[u8; 32],
    shards: usize,
    candidates: &[Candidate],
) -> Vec<Vec<usize>> {
    let mut taken = vec![false; candidates.len()];
    let mut out = Vec::with_capacity(shards);
    for i in 0..shards {
        let order = rank(segment_key, i as u32, candidates);
        let mut order: Vec<usize> = order;
        if let Some(pos) = order.iter().position(|&c| !taken[c]) {
            let first = order.remove(pos);
            taken[first] = true;
            order.insert(0, first);
        }
        out.push(order);
    }
    out
}

/// The miners that keep copies of a manifest: the best `copies` for the CID.
pub fn manifest_holders(cid: &[u8; 32], copies: usize, candidates: &[Candidate]) -> Vec<usize> {
    let mut r = rank(cid, u32::MAX, candidates);
    r.truncate(copies);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miners(n: u8, weight: f64) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate {
                id: iroh::SecretKey::from_bytes(&[i; 32]).public(),
                weight,
            })
            .collect()
    }

    #[test]
    fn first_choices_are_distinct_and_deterministic() {
        let c = miners(8, 1.0);
        for seg in 0..50u8 {
            let p = place_segment(&[seg; 32], 6, &c);
            let firsts: Vec<usize> = p.iter().map(|o| o[0]).collect();
            let mut d = firsts.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 6, "segment {seg}: {firsts:?}");
            assert_eq!(p, place_segment(&[seg; 32], 6, &c));
            assert!(p.iter().all(|o| o.len() == 8));
        }
    }

    #[test]
    fn share_follows_weight() {
        let mut c = miners(4, 1.0);
        c[0].weight = 4.0;
        let mut wins = [0u32; 4];
        for k in 0..20_000u32 {
            wins[rank(&k.to_le_bytes(), 0, &c)[0]] += 1;
        }
        // weight 4 of a total 7: about 57%
        let share = f64::from(wins[0]) / 20_000.0;
        assert!(
            (share - 4.0 / 7.0).abs() < 0.02,
            "share {share}, wins {wins:?}"
        );
    }

    #[test]
    fn removing_a_miner_moves_only_its_keys() {
        let c = miners(10, 1.0);
        let fewer: Vec<Candidate> = c[1..].to_vec();
        for k in 0..2000u32 {
            let a = rank(&k.to_le_bytes(), 0, &c)[0];
            let b = rank(&k.to_le_bytes(), 0, &fewer)[0];
            if a != 0 {
                assert_eq!(
                    c[a].id, fewer[b].id,
                    "key {k} moved although its miner stayed"
                );
            }
        }
    }

    #[test]
    fn weights_are_coarse() {
        assert_eq!(capacity_weight(0), 1.0);
        assert_eq!(capacity_weight(100 << 20), 64.0);
        assert_eq!(capacity_weight(127 << 20), 64.0);
        assert_eq!(capacity_weight(128 << 20), 128.0);
    }
}
