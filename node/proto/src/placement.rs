//! THE placement rule: where shards and manifests live, recomputable by anyone.
//!
//! Weighted rendezvous (highest-random-weight) hashing. For a key (a
//! segment's BLAKE3 and a shard index, or a CID) every candidate miner gets
//! the score `w / -ln(u)`, where `u` in (0, 1) comes from BLAKE3 of the key
//! and the miner's node id and `w` is the miner's weight. Ranking by score
//! gives each key its own order of miners; a miner's share of keys is
//! proportional to its weight, and adding, removing or re-weighting a miner
//! moves only the keys it wins or held.
//!
//! Every decision about placement is a function here, fed the same inputs by
//! everyone who makes it:
//!
//! | who | function |
//! |---|---|
//! | a pin: where each shard of a segment goes | [`segment_orders`] |
//! | repair: where a rebuilt shard goes | [`repair_order`] |
//! | a validator: is this placement honest? | [`admission`] |
//! | a pin and repair: who keeps the manifest and placement copies | [`manifest_holders`] |
//! | a reader: whom to ask for a manifest | [`read_order`] |
//!
//! The inputs are the registry's members (the same list for everyone) and
//! each member's announced free space, rounded down to a power of two of MiB
//! ([`capacity_weight`]) so that the order does not change with every shard a
//! miner stores. Liveness is not an input: a pinner skips a miner that does
//! not answer by going on along the order, and [`admission`] allows for that
//! with a small slack.

use crate::{Manifest, NodeId, Placement};

/// A miner that may receive shards, with its placement weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: NodeId,
    pub weight: f64,
}

impl Candidate {
    /// A miner announcing `free` bytes.
    pub fn new(id: NodeId, free: u64) -> Self {
        Candidate {
            id,
            weight: capacity_weight(free),
        }
    }
}

/// Free space above which more announced space earns no more weight
/// (16 TiB): an announcement is not evidence, so a claim of `u64::MAX` bytes
/// weighs no more than a very large honest disk.
pub const MAX_WEIGHTED_FREE: u64 = 16 << 40;

/// Weight of a miner announcing `free` bytes: free MiB rounded down to a
/// power of two (at least 1 MiB, at most [`MAX_WEIGHTED_FREE`]).
pub fn capacity_weight(free: u64) -> f64 {
    let mib = (free.min(MAX_WEIGHTED_FREE) >> 20).max(1);
    (1u64 << (63 - mib.leading_zeros())) as f64
}

/// The shard index under which a CID is ranked for its manifest copies.
pub const MANIFEST_INDEX: u32 = u32::MAX;

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

/// Candidates (indices into `candidates`) ordered best first for
/// `(key, index)`. Ties break by node id; the order of `candidates` does not
/// matter. Candidates of weight 0 are left out.
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

/// Where a pin puts the `shards` shards of a segment: for each shard its
/// candidates in order, the assigned miner first. Shard i takes the best
/// miner of its own order that no earlier shard took, so no two shards of a
/// segment share a miner while there are enough candidates; the rest of
/// each order is its fall-back, to be walked skipping miners that another
/// shard of the segment holds.
pub fn segment_orders(
    segment: &[u8; 32],
    shards: usize,
    candidates: &[Candidate],
) -> Vec<Vec<usize>> {
    let mut taken = vec![false; candidates.len()];
    let mut out = Vec::with_capacity(shards);
    for i in 0..shards {
        let mut order = rank(segment, i as u32, candidates);
        if let Some(pos) = order.iter().position(|&c| !taken[c]) {
            let first = order.remove(pos);
            taken[first] = true;
            order.insert(0, first);
        }
        out.push(order);
    }
    out
}

/// Where repair puts shard `index` of a segment: the shard's own order,
/// without the miners `excluded` says no to (those holding another shard of
/// the segment, the one that lost it, the repairer itself).
pub fn repair_order(
    segment: &[u8; 32],
    index: usize,
    candidates: &[Candidate],
    excluded: impl Fn(&NodeId) -> bool,
) -> Vec<usize> {
    rank(segment, index as u32, candidates)
        .into_iter()
        .filter(|&c| !excluded(&candidates[c].id))
        .collect()
}

/// The miners that keep copies of a dataset's manifest and placement: the
/// first `copies` of [`read_order`].
pub fn manifest_holders(cid: &[u8; 32], copies: usize, candidates: &[Candidate]) -> Vec<usize> {
    let mut r = read_order(cid, candidates);
    r.truncate(copies);
    r
}

/// Whom a reader asks for a CID's manifest and placement, in order: the
/// manifest holders come first, whatever their number.
pub fn read_order(cid: &[u8; 32], candidates: &[Candidate]) -> Vec<usize> {
    rank(cid, MANIFEST_INDEX, candidates)
}

/// How far down its order a shard may sit and still count as placed by the
/// rule: the earlier shards of its segment may have taken the miners above
/// it (k + m - 1 at most) and a pinner skips miners that did not answer.
pub fn admission_slack(total_shards: usize) -> usize {
    total_shards + 2
}

/// What [`admission`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Shards whose holder sits within the slack of the shard's order.
    pub following: usize,
    /// Shards with a holder.
    pub checked: usize,
}

impl Admission {
    /// At least 90% of the held shards follow the rule (members come and go
    /// between a pin and its audit, so not all of them need to).
    pub fn admits(&self) -> bool {
        self.following.saturating_mul(10) >= self.checked.saturating_mul(9)
    }
}

/// Checks that a placement's holders follow the rule for `candidates`: a
/// validator audits only placements nobody steered onto miners of their
/// choosing.
pub fn admission(
    manifest: &Manifest,
    placement: &Placement,
    candidates: &[Candidate],
) -> Admission {
    let total = manifest.total_shards();
    let slack = admission_slack(total);
    let (mut following, mut checked) = (0, 0);
    for (s, seg) in manifest.segments.iter().enumerate() {
        for i in 0..total {
            let Some(holder) = placement.holder(s, i, total) else {
                continue;
            };
            checked += 1;
            if rank(&seg.blake3, i as u32, candidates)
                .iter()
                .take(slack)
                .any(|&c| candidates[c].id == holder)
            {
                following += 1;
            }
        }
    }
    Admission { following, checked }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cid, SecretKey, SegmentRecord};
    use cairn_proof::ShardId;
    use proptest::prelude::*;

    fn node(i: u32) -> NodeId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_le_bytes());
        b[4] = 1;
        SecretKey::from_bytes(&b).public()
    }

    fn miners(n: u32, free: u64) -> Vec<Candidate> {
        (0..n).map(|i| Candidate::new(node(i), free)).collect()
    }

    #[test]
    fn weights_are_coarse_and_capped() {
        assert_eq!(capacity_weight(0), 1.0);
        assert_eq!(capacity_weight(100 << 20), 64.0);
        assert_eq!(capacity_weight(127 << 20), 64.0);
        assert_eq!(capacity_weight(128 << 20), 128.0);
        assert_eq!(
            capacity_weight(u64::MAX),
            capacity_weight(MAX_WEIGHTED_FREE)
        );
    }

    #[test]
    fn share_follows_weight() {
        let mut c = miners(4, 1 << 30);
        c[0].weight *= 4.0;
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

    /// A pin as the daemon runs it: each shard walks its order, skipping
    /// miners that are `down` or already hold a shard of the segment.
    fn pin_segment(
        seg: &[u8; 32],
        shards: usize,
        c: &[Candidate],
        down: &[bool],
    ) -> Vec<Option<usize>> {
        let orders = segment_orders(seg, shards, c);
        let mut used = vec![false; c.len()];
        for o in &orders {
            if let Some(&f) = o.first() {
                used[f] = true;
            }
        }
        orders
            .iter()
            .map(|o| {
                let first = *o.first()?;
                if !down[first] {
                    return Some(first);
                }
                let next = o.iter().copied().find(|&x| !used[x] && !down[x])?;
                used[next] = true;
                Some(next)
            })
            .collect()
    }

    fn manifest_of(segments: &[[u8; 32]], k: u16, m: u16) -> Manifest {
        let total = usize::from(k + m);
        Manifest {
            owner: node(999),
            data_shards: k,
            parity_shards: m,
            segment_size: 64 * u64::from(k),
            total_len: 64 * u64::from(k) * segments.len() as u64,
            single_file: true,
            entries: vec![],
            segments: segments
                .iter()
                .map(|h| SegmentRecord {
                    len: 64 * u64::from(k),
                    blake3: *h,
                    shards: vec![ShardId([0; 32]); total],
                })
                .collect(),
        }
    }

    fn frees() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::vec(
            prop_oneof![(1u64..1 << 44), Just(0u64), Just(u64::MAX),],
            8..24,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

        /// Free space that moves within its power of two changes nothing;
        /// one miner's capacity that moves further changes only the keys it
        /// wins or held.
        #[test]
        fn stable_under_capacity_drift(frees in frees(), who in 0usize..8, to in 1u64..1 << 44, seed in any::<u64>()) {
            let c: Vec<Candidate> = frees.iter().enumerate().map(|(i, f)| Candidate::new(node(i as u32), *f)).collect();
            let drifted: Vec<Candidate> = frees.iter().enumerate().map(|(i, f)| {
                // down by less than the rounding: same class
                let w = capacity_weight(*f);
                let class_floor = (w as u64) << 20;
                let f2 = if *f > class_floor { class_floor + (f - class_floor) / 2 } else { *f };
                Candidate::new(node(i as u32), f2)
            }).collect();
            let mut moved = c.clone();
            moved[who] = Candidate::new(node(who as u32), to);
            for k in 0..64u64 {
                let key = blake3::hash(&(seed ^ k).to_le_bytes());
                let key = key.as_bytes();
                prop_assert_eq!(segment_orders(key, 6, &c), segment_orders(key, 6, &drifted));
                let a = rank(key, 0, &c)[0];
                let b = rank(key, 0, &moved)[0];
                prop_assert!(a == b || a == who || b == who, "key moved between two miners that did not change");
            }
        }

        /// Whatever miners are down, a segment never has two shards on one
        /// miner, and every shard finds a holder while enough miners are up.
        #[test]
        fn never_two_shards_of_a_segment_on_one_miner(frees in frees(), down_mask in any::<u32>(), seg in any::<[u8; 32]>(), k in 1usize..6, m in 1usize..4) {
            let c: Vec<Candidate> = frees.iter().enumerate().map(|(i, f)| Candidate::new(node(i as u32), *f)).collect();
            let down: Vec<bool> = (0..c.len()).map(|i| down_mask >> (i % 32) & 1 == 1).collect();
            let holders = pin_segment(&seg, k + m, &c, &down);
            let placed: Vec<usize> = holders.iter().flatten().copied().collect();
            let mut distinct = placed.clone();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), placed.len(), "two shards on one miner: {:?}", holders);
            let up = down.iter().filter(|d| !**d).count();
            if up >= k + m {
                prop_assert!(holders.iter().all(Option::is_some), "a shard found no holder with {} miners up: {:?}", up, holders);
            }
        }

        /// A reader asking in read order reaches every manifest holder first.
        #[test]
        fn the_read_order_finds_the_manifest_holders_first(frees in frees(), cid in any::<[u8; 32]>(), copies in 1usize..8) {
            let c: Vec<Candidate> = frees.iter().enumerate().map(|(i, f)| Candidate::new(node(i as u32), *f)).collect();
            let holders = manifest_holders(&cid, copies, &c);
            let order = read_order(&cid, &c);
            prop_assert_eq!(&order[..holders.len()], &holders[..]);
        }

        /// Honest pins across mixed capacities (including a miner that
        /// claims u64::MAX free) and with some miners down are admitted.
        #[test]
        fn honest_pins_are_admitted(frees in frees(), down_mask in any::<u32>(), seed in any::<u64>()) {
            let c: Vec<Candidate> = frees.iter().enumerate().map(|(i, f)| Candidate::new(node(i as u32), *f)).collect();
            // at most two miners down, as a pin that goes through would see
            let down: Vec<bool> = (0..c.len()).map(|i| i < 2 && down_mask >> i & 1 == 1).collect();
            let (k, m) = (4u16, 2u16);
            let segs: Vec<[u8; 32]> = (0..20u64).map(|s| *blake3::hash(&(seed ^ s).to_le_bytes()).as_bytes()).collect();
            let manifest = manifest_of(&segs, k, m);
            let key = SecretKey::from_bytes(&[7; 32]);
            let mut flat = Vec::new();
            for s in &segs {
                flat.extend(pin_segment(s, 6, &c, &down).into_iter().map(|h| h.map(|i| c[i].id)));
            }
            let honest = Placement::signed(Cid([1; 32]), 1, key.public(), &flat, &key);
            let a = admission(&manifest, &honest, &c);
            prop_assert!(a.admits(), "honest pin refused: {:?}", a);
        }
    }

    #[test]
    fn a_placement_steered_onto_chosen_miners_is_not_admitted() {
        let c = miners(20, 1 << 30);
        let segs: Vec<[u8; 32]> = (0..30u64)
            .map(|s| *blake3::hash(&s.to_le_bytes()).as_bytes())
            .collect();
        let manifest = manifest_of(&segs, 4, 2);
        let key = SecretKey::from_bytes(&[7; 32]);
        let chosen: Vec<Option<NodeId>> = segs
            .iter()
            .flat_map(|_| (0..6).map(|i| Some(c[i].id)))
            .collect();
        let steered = Placement::signed(Cid([1; 32]), 1, key.public(), &chosen, &key);
        let a = admission(&manifest, &steered, &c);
        assert!(!a.admits(), "steered placement admitted: {a:?}");
    }
}
