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
//! | a pin: where each shard of a segment goes | [`segment_orders`], [`DomainSet`] |
//! | repair: where a rebuilt shard goes | [`repair_order`] |
//! | what one outage takes down together | [`failure_domain`] |
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
//!
//! Two more inputs keep one operator from holding too much of a segment:
//!
//! - **Failure domains.** No two shards of a segment go to one failure
//!   domain ([`failure_domain`]): one /24 of IPv4 or /48 of IPv6 from the
//!   addresses a member committed, so many identities on one home network
//!   (or one rented subnet) hold at most one shard of each segment between
//!   them. Loopback and private addresses say nothing about where a node is,
//!   so they all share one domain, unless the network is configured as a
//!   devnet ([`DomainRule::PerNode`]), where every node is its own domain.
//! - **Vetting.** A miner that has not yet passed its vetting audits (the
//!   validator decides; see its scoring module) is offered only
//!   [`NEWCOMER_SHARE`] of the shard slots, chosen by hashing the slot; on
//!   every other slot it comes after every vetted miner. A network with too
//!   few vetted miners falls back to the newcomers, so a fresh network works.

use std::net::{IpAddr, SocketAddr};

use crate::{Manifest, NodeId, Placement};

/// A miner that may receive shards, with its placement weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: NodeId,
    pub weight: f64,
    /// What fails with it.
    pub domain: Domain,
    /// Passed its vetting audits.
    pub vetted: bool,
}

impl Candidate {
    /// A vetted miner announcing `free` bytes, a failure domain of its own.
    pub fn new(id: NodeId, free: u64) -> Self {
        Candidate {
            id,
            weight: capacity_weight(free),
            domain: Domain::Node(id),
            vetted: true,
        }
    }

    /// The same miner in failure domain `domain`.
    pub fn in_domain(mut self, domain: Domain) -> Self {
        self.domain = domain;
        self
    }

    /// The same miner, vetted or not.
    pub fn vetted(mut self, vetted: bool) -> Self {
        self.vetted = vetted;
        self
    }
}

/// What one outage takes down together: a network, or (on a devnet, or for
/// a node without a usable address) one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// A public IPv4 /24.
    V4([u8; 3]),
    /// A public IPv6 /48.
    V6([u8; 6]),
    /// Loopback, private, link-local or no address at all: where the node
    /// is cannot be told, so all such nodes share this one domain.
    Unlocated,
    /// One node (devnets, where every node runs on one host on purpose).
    Node(NodeId),
}

/// How failure domains are drawn: a network-wide setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DomainRule {
    /// By committed address (/24, /48; unlocated addresses share one domain).
    #[default]
    Network,
    /// Every node its own domain: a devnet on one host.
    PerNode,
}

/// The failure domain of a member with node id `id` and committed
/// addresses `addrs`: the first public address decides (IPv4 before IPv6,
/// so a node cannot pick a fresh /48 to split itself off a shared /24).
pub fn failure_domain(id: NodeId, addrs: &[SocketAddr], rule: DomainRule) -> Domain {
    if rule == DomainRule::PerNode {
        return Domain::Node(id);
    }
    let public = |a: &&SocketAddr| is_public(a.ip());
    let first = addrs
        .iter()
        .filter(public)
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.iter().find(public));
    match first.map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => {
            let o = v4.octets();
            Domain::V4([o[0], o[1], o[2]])
        }
        Some(IpAddr::V6(v6)) => {
            let o = v6.octets();
            Domain::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
        }
        None => Domain::Unlocated,
    }
}

/// Whether an address says where a node is on the internet.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let cgnat = o[0] == 100 && (64..128).contains(&o[1]);
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || cgnat
                || o[0] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let unique_local = s[0] & 0xfe00 == 0xfc00;
            let link_local = s[0] & 0xffc0 == 0xfe80;
            let documentation = s[0] == 0x2001 && s[1] == 0x0db8;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || unique_local
                || link_local
                || documentation)
        }
    }
}

/// The failure domains one segment's shards have taken so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSet(Vec<Domain>);

impl DomainSet {
    pub fn contains(&self, d: &Domain) -> bool {
        self.0.contains(d)
    }

    /// Takes `d` for a shard; false if another shard of the segment has it.
    pub fn claim(&mut self, d: Domain) -> bool {
        if self.contains(&d) {
            false
        } else {
            self.0.push(d);
            true
        }
    }

    /// Gives `d` back (the miner claimed in it did not take the shard).
    pub fn release(&mut self, d: &Domain) {
        self.0.retain(|x| x != d);
    }

    /// How many domains are taken.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Share of shard slots offered to miners still being vetted (Storj gives
/// unvetted nodes about 1% of uploads; 2% here, for smaller networks).
pub const NEWCOMER_SHARE: f64 = 0.02;

/// Whether shard slot `index` of a segment is one of the newcomers' slots.
pub fn newcomer_slot(segment: &[u8; 32], index: u32) -> bool {
    let mut h = blake3::Hasher::new_derive_key("cairn 2026-11 newcomer slots v1");
    h.update(segment);
    h.update(&index.to_le_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8"));
    (x as f64) < NEWCOMER_SHARE * u64::MAX as f64
}

/// The order of candidates for shard `index` of a segment: on a newcomer
/// slot the miners being vetted first, otherwise the vetted ones first; each
/// group in rendezvous order.
pub fn shard_order(segment: &[u8; 32], index: u32, candidates: &[Candidate]) -> Vec<usize> {
    let prefer_new = newcomer_slot(segment, index);
    let (first, rest): (Vec<usize>, Vec<usize>) = rank(segment, index, candidates)
        .into_iter()
        .partition(|&c| candidates[c].vetted != prefer_new);
    let mut order = first;
    order.extend(rest);
    order
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
/// candidates in order ([`shard_order`]), the assigned miner first. Shard i
/// takes the best miner of its own order in a failure domain no earlier
/// shard took, so no two shards of a segment share a domain (hence a miner)
/// while there are enough domains; the rest of each order is its fall-back,
/// to be walked skipping miners whose domain another shard of the segment
/// holds (claim them in a [`DomainSet`]). The second value is the domains
/// the first choices took.
pub fn segment_orders(
    segment: &[u8; 32],
    shards: usize,
    candidates: &[Candidate],
) -> (Vec<Vec<usize>>, DomainSet) {
    let mut taken = DomainSet::default();
    let mut out = Vec::with_capacity(shards);
    for i in 0..shards {
        let mut order = shard_order(segment, i as u32, candidates);
        if let Some(pos) = order
            .iter()
            .position(|&c| !taken.contains(&candidates[c].domain))
        {
            let first = order.remove(pos);
            taken.claim(candidates[first].domain);
            order.insert(0, first);
        } else {
            // No domain left: this shard has no holder by the rule.
            order.clear();
        }
        out.push(order);
    }
    (out, taken)
}

/// Where repair puts shard `index` of a segment: the shard's own order,
/// without the miners in a domain the segment's other shards hold (`taken`)
/// and those `excluded` says no to (the one that lost it, the repairer).
pub fn repair_order(
    segment: &[u8; 32],
    index: usize,
    candidates: &[Candidate],
    taken: &DomainSet,
    excluded: impl Fn(&NodeId) -> bool,
) -> Vec<usize> {
    shard_order(segment, index as u32, candidates)
        .into_iter()
        .filter(|&c| !taken.contains(&candidates[c].domain) && !excluded(&candidates[c].id))
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
/// choosing. A shard follows the rule when its holder sits within the slack
/// of its order (leaving out the miners in domains the segment's other
/// holders took, which an honest pin skipped) and shares its failure domain
/// with no other shard of the segment.
pub fn admission(
    manifest: &Manifest,
    placement: &Placement,
    candidates: &[Candidate],
) -> Admission {
    let total = manifest.total_shards();
    let slack = admission_slack(total);
    let domain_of = |id: &NodeId| candidates.iter().find(|c| c.id == *id).map(|c| c.domain);
    let (mut following, mut checked) = (0, 0);
    for (s, seg) in manifest.segments.iter().enumerate() {
        let holders: Vec<Option<NodeId>> =
            (0..total).map(|i| placement.holder(s, i, total)).collect();
        let domains: Vec<Option<Domain>> = holders
            .iter()
            .map(|h| h.as_ref().and_then(domain_of))
            .collect();
        for i in 0..total {
            let Some(holder) = holders[i] else {
                continue;
            };
            checked += 1;
            let mut others = DomainSet::default();
            for (j, d) in domains.iter().enumerate() {
                if let Some(d) = d
                    && j != i
                {
                    others.claim(*d);
                }
            }
            if domains[i].is_some_and(|d| others.contains(&d)) {
                continue; // two shards of the segment in one domain
            }
            if shard_order(&seg.blake3, i as u32, candidates)
                .into_iter()
                .filter(|&c| candidates[c].id == holder || !others.contains(&candidates[c].domain))
                .take(slack)
                .any(|c| candidates[c].id == holder)
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
    /// miners that are `down` or in a domain another shard of the segment
    /// took.
    fn pin_segment(
        seg: &[u8; 32],
        shards: usize,
        c: &[Candidate],
        down: &[bool],
    ) -> Vec<Option<usize>> {
        let (orders, mut taken) = segment_orders(seg, shards, c);
        orders
            .iter()
            .map(|o| {
                let first = *o.first()?;
                if !down[first] {
                    return Some(first);
                }
                taken.release(&c[first].domain);
                o.iter()
                    .copied()
                    .find(|&x| !down[x] && taken.claim(c[x].domain))
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
                prop_assert_eq!(segment_orders(key, 6, &c).0, segment_orders(key, 6, &drifted).0);
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

    /// `n` miners spread round-robin over `networks` public /24s.
    fn over_networks(n: u32, networks: u8) -> Vec<Candidate> {
        (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("203.0.{}.{}:4433", i as u8 % networks, 10 + i / 8)
                    .parse()
                    .unwrap();
                let id = node(i);
                Candidate::new(id, 1 << 30).in_domain(failure_domain(
                    id,
                    &[addr],
                    DomainRule::Network,
                ))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

        /// 20 miners over 5 networks: whatever miners are down, no segment
        /// ever has two shards in one network, and every shard finds a
        /// holder while its segment has a live network for each shard.
        #[test]
        fn never_two_shards_of_a_segment_in_one_failure_domain(down_mask in any::<u32>(), seed in any::<u64>(), total in 2usize..=6) {
            let c = over_networks(20, 5);
            let down: Vec<bool> = (0..20).map(|i| down_mask >> i & 1 == 1).collect();
            let live_domains = {
                let mut d = DomainSet::default();
                for (i, x) in c.iter().enumerate() { if !down[i] { d.claim(x.domain); } }
                d.0.len()
            };
            for s in 0..50u64 {
                let seg = *blake3::hash(&(seed ^ s).to_le_bytes()).as_bytes();
                let holders = pin_segment(&seg, total, &c, &down);
                let mut domains: Vec<Domain> = holders.iter().flatten().map(|&h| c[h].domain).collect();
                let placed = domains.len();
                domains.sort();
                domains.dedup();
                prop_assert_eq!(domains.len(), placed, "two shards in one network: {:?}", holders);
                prop_assert!(placed <= 5);
                if total <= live_domains {
                    prop_assert!(holders.iter().all(Option::is_some), "{} networks up, {} shards: {:?}", live_domains, total, holders);
                }
            }
        }
    }

    #[test]
    fn addresses_map_to_domains() {
        let id = node(1);
        let d = |a: &[&str]| {
            let addrs: Vec<SocketAddr> = a.iter().map(|s| s.parse().unwrap()).collect();
            failure_domain(id, &addrs, DomainRule::Network)
        };
        assert_eq!(d(&["198.51.7.9:1"]), d(&["198.51.7.200:2"]));
        assert_ne!(d(&["198.51.7.9:1"]), d(&["198.51.8.9:1"]));
        assert_eq!(d(&["[2a01:4f8:1:2::1]:1"]), d(&["[2a01:4f8:1:ffff::9]:1"]));
        assert_ne!(d(&["[2a01:4f8:1::1]:1"]), d(&["[2a01:4f8:2::1]:1"]));
        // loopback, private, CGNAT, link-local and none: one shared domain
        for a in [
            &["127.0.0.1:1"][..],
            &["10.1.2.3:1"],
            &["192.168.1.5:1"],
            &["100.64.0.1:1"],
            &["[::1]:1"],
            &["[fe80::1]:1"],
            &["[fd00::1]:1"],
            &[],
        ] {
            assert_eq!(d(a), Domain::Unlocated, "{a:?}");
        }
        // a public address wins over private ones; IPv4 before IPv6
        assert_eq!(d(&["10.0.0.1:1", "198.51.7.9:1"]), d(&["198.51.7.1:1"]));
        assert_eq!(
            d(&["[2a01:4f8::1]:1", "198.51.7.9:1"]),
            d(&["198.51.7.1:1"])
        );
        // a devnet: every node its own domain
        assert_eq!(
            failure_domain(id, &["127.0.0.1:1".parse().unwrap()], DomainRule::PerNode),
            Domain::Node(id)
        );
    }

    #[test]
    fn miners_on_one_host_hold_one_shard_of_a_segment_between_them() {
        // six identities on 127.0.0.1 without the devnet setting: one domain
        let c: Vec<Candidate> = (0..6)
            .map(|i| {
                let id = node(i);
                Candidate::new(id, 1 << 30).in_domain(failure_domain(
                    id,
                    &["127.0.0.1:1".parse().unwrap()],
                    DomainRule::Network,
                ))
            })
            .collect();
        let (orders, _) = segment_orders(&[9; 32], 6, &c);
        assert_eq!(orders.iter().filter(|o| !o.is_empty()).count(), 1);
    }

    /// With vetted miners around, newcomers get about NEWCOMER_SHARE of the
    /// slots whatever their number; with none vetted, newcomers take all.
    #[test]
    fn newcomers_get_a_small_share_until_vetted() {
        let mut c = miners(40, 1 << 30);
        for x in c.iter_mut().take(20) {
            x.vetted = false;
        }
        let (mut new, mut all) = (0u32, 0u32);
        for s in 0..4000u64 {
            let seg = *blake3::hash(&s.to_le_bytes()).as_bytes();
            for o in segment_orders(&seg, 6, &c).0 {
                all += 1;
                if !c[o[0]].vetted {
                    new += 1;
                }
            }
        }
        let share = f64::from(new) / f64::from(all);
        assert!(
            (share - NEWCOMER_SHARE).abs() < 0.006,
            "newcomer share {share}"
        );
        // nobody vetted yet: the newcomers are the network
        let fresh: Vec<Candidate> = miners(8, 1 << 30)
            .into_iter()
            .map(|x| x.vetted(false))
            .collect();
        let (orders, _) = segment_orders(&[1; 32], 6, &fresh);
        assert!(orders.iter().all(|o| !o.is_empty()));
    }

    #[test]
    fn a_placement_with_two_shards_in_one_domain_is_not_admitted() {
        let c = over_networks(20, 5);
        let segs: Vec<[u8; 32]> = (0..30u64)
            .map(|s| *blake3::hash(&s.to_le_bytes()).as_bytes())
            .collect();
        let manifest = manifest_of(&segs, 3, 2);
        let key = SecretKey::from_bytes(&[7; 32]);
        let mut honest = Vec::new();
        let mut crowded = Vec::new();
        for s in &segs {
            let h = pin_segment(s, 5, &c, &[false; 20]);
            honest.extend(h.iter().map(|x| x.map(|i| c[i].id)));
            // the same, but shard 1 on another miner of shard 0's network
            let mut h2: Vec<Option<NodeId>> = h.iter().map(|x| x.map(|i| c[i].id)).collect();
            let first = h[0].unwrap();
            let mate = (0..20)
                .find(|&j| j != first && c[j].domain == c[first].domain)
                .unwrap();
            h2[1] = Some(c[mate].id);
            crowded.extend(h2);
        }
        let ok = Placement::signed(Cid([1; 32]), 1, key.public(), &honest, &key);
        assert!(admission(&manifest, &ok, &c).admits());
        let bad = Placement::signed(Cid([1; 32]), 1, key.public(), &crowded, &key);
        let a = admission(&manifest, &bad, &c);
        assert!(!a.admits(), "{a:?}");
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
