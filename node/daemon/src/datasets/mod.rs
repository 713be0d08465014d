//! Datasets: pin ([`pin`]), read back ([`read`]), status ([`status`]) and
//! unpin ([`unpin`]), and the node's one cache of opened datasets.
//!
//! [`Datasets`] is a service the node creates once; the gateway and the
//! validator share it, so a placement a repair publishes is what the next
//! read uses. Where shards and manifest copies go is decided by the one
//! placement rule (`cairn_proto::placement`) over the registry's members,
//! weighted by what they announce; this module only asks who is alive and
//! walks the rule's orders.

pub mod cache;
mod grants;
mod pin;
mod prefetch;
mod read;
mod status;
mod unpin;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::PinRecord;
use cairn_proto::placement::{self, Candidate, DomainRule};
use cairn_proto::{Cid, Manifest, NodeId, Placement, SecretKey};
use cairn_store::Store;
use tokio::task::JoinSet;

pub use pin::SEGMENTS_IN_FLIGHT;
pub use read::SegmentBytes;

pub use self::grants::view as grant_view;
use crate::error::{Error, Result};
use crate::net::Client;
use crate::registry::{AnyRegistry, Member, Registry};
use cairn_proto::Role;
use iroh::EndpointAddr;

/// How long a miner may take to answer a liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a pin short of miners waits for a second answer from those that
/// missed the first probe: a handshake over a lossy home link that lost its
/// first packets retransmits after 1, 2, 4 s, past [`PROBE_TIMEOUT`]. A
/// little over the client's 10 s dial timeout, so a dial that fails names
/// its own reason.
const PROBE_RETRY_TIMEOUT: Duration = Duration::from_secs(12);
/// How long an opened dataset (manifest + placement) is reused when nothing
/// newer was published through this node.
pub const DATASET_CACHE_TTL: Duration = Duration::from_secs(20);
/// Readers ask this many miners of the read order at once for a manifest,
/// then the rest only if none had it.
const MANIFEST_FIRST_ASK: usize = 4;
/// The key-value namespace of this node's pins.
const PINS: &str = "pin";

/// What one miner's probe found.
#[derive(Debug, Clone)]
pub enum Probed {
    Answered(LiveMiner),
    /// Asked, and no answer came: why.
    Missed(String),
    /// Not asked: it has published no address or relay yet.
    Unpublished,
}

impl Probed {
    /// The miner, if it answered.
    pub fn answered(self) -> Option<LiveMiner> {
        match self {
            Probed::Answered(live) => Some(live),
            _ => None,
        }
    }
}

/// A miner that answered a probe.
#[derive(Debug, Clone)]
pub struct LiveMiner {
    pub member: Member,
    /// Free bytes it reported just now.
    pub free: u64,
}

/// The placement candidates among `live`, as the rule weighs them (by what
/// the registry says they announced and where they said they are, the same
/// for everyone), vetted unless `vetted` (a validator's list) leaves them out.
pub fn candidates(
    live: &[LiveMiner],
    rule: DomainRule,
    vetted: Option<&HashSet<NodeId>>,
) -> Vec<Candidate> {
    live.iter()
        .map(|l| {
            let c = l.member.candidate(rule);
            c.vetted(vetted.is_none_or(|v| v.contains(&l.member.node_id)))
        })
        .collect()
}

/// Default k and m for a network of `miners` miners: 4 + 2 below 12, 10 + 4 from 12.
pub fn default_shards(miners: usize) -> (u16, u16) {
    if miners >= 12 { (10, 4) } else { (4, 2) }
}

/// A dataset opened for reading: its manifest, its newest placement, and
/// how to reach the members it names.
#[derive(Clone)]
pub struct Dataset {
    pub cid: Cid,
    pub manifest: Arc<Manifest>,
    pub placement: Arc<Placement>,
    members: Arc<HashMap<NodeId, Member>>,
}

impl Dataset {
    pub fn addr(&self, node: &NodeId) -> EndpointAddr {
        self.members
            .get(node)
            .map(|m| m.endpoint_addr())
            .unwrap_or_else(|| EndpointAddr::new(*node))
    }
}

/// The dataset service of one node.
pub struct Datasets {
    node_id: NodeId,
    key: SecretKey,
    client: Arc<Client>,
    registry: AnyRegistry,
    store: Arc<Store>,
    /// How failure domains are told apart on this network.
    rule: DomainRule,
    cache: Mutex<HashMap<Cid, (Instant, Dataset)>>,
    /// What ranged reads did (for `/metrics`).
    pub(crate) reads: read::ReadCounters,
    /// Verified groups read lately.
    pub(crate) groups: cache::GroupCache,
    /// Verified data shards on the local disk (`[cache] disk`).
    pub(crate) disk: Option<Arc<cache::disk::DiskTier>>,
    /// Bounds the segment bytes waiting to be written to the disk tier.
    pub(crate) disk_writes: Arc<tokio::sync::Semaphore>,
    /// Where sequential readers are, to fetch ahead of them.
    pub(crate) trails: Mutex<prefetch::Trails>,
    /// Segments being fetched ahead, which readers of them wait for.
    pub(crate) ahead: Mutex<HashMap<(Cid, usize), tokio::sync::watch::Receiver<bool>>>,
    /// Segments fetched ahead (for `/metrics`).
    pub(crate) prefetched: std::sync::atomic::AtomicU64,
    /// Bounds the segments read ahead at once ([`prefetch::IN_FLIGHT`]).
    pub(crate) read_ahead_slots: Arc<tokio::sync::Semaphore>,
    /// Read-aheads not started because every slot was taken.
    pub(crate) read_ahead_skipped: std::sync::atomic::AtomicU64,
}

impl Datasets {
    pub(crate) fn new(
        key: SecretKey,
        client: Arc<Client>,
        registry: AnyRegistry,
        store: Arc<Store>,
        rule: DomainRule,
        cache_bytes: u64,
        disk: Option<cache::disk::DiskTier>,
    ) -> Self {
        Datasets {
            node_id: key.public(),
            key,
            client,
            registry,
            store,
            rule,
            cache: Mutex::new(HashMap::new()),
            reads: read::ReadCounters::default(),
            groups: cache::GroupCache::new(cache_bytes),
            disk: disk.map(Arc::new),
            disk_writes: Arc::new(tokio::sync::Semaphore::new(read::DISK_WRITE_PERMITS)),
            trails: Mutex::new(prefetch::Trails::default()),
            ahead: Mutex::new(HashMap::new()),
            prefetched: std::sync::atomic::AtomicU64::new(0),
            read_ahead_slots: Arc::new(tokio::sync::Semaphore::new(prefetch::IN_FLIGHT)),
            read_ahead_skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counters for `/metrics`: shard bytes received from miners, pieces of
    /// partial-segment reads, and how many of those were decoded around a
    /// failed or slow holder.
    pub fn read_counters(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.client.shard_bytes_received(),
            self.reads.pieces.load(Relaxed),
            self.reads.decoded.load(Relaxed),
        )
    }

    /// The edge cache's counters, for `/metrics`.
    pub fn cache_stats(&self) -> cache::CacheStats {
        self.groups.stats()
    }

    /// The disk tier's counters (`None`: no disk tier), for `/metrics`.
    pub fn disk_cache_stats(&self) -> Option<cache::disk::DiskStats> {
        self.disk.as_ref().map(|d| d.stats())
    }

    /// Segments fetched ahead of sequential readers, for `/metrics`.
    pub fn prefetched_segments(&self) -> u64 {
        self.prefetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read-aheads not started because the node's slots were all taken.
    pub fn read_ahead_skipped(&self) -> u64 {
        self.read_ahead_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Registered miners other than this node.
    pub async fn registered_miners(&self) -> Result<Vec<Member>> {
        Ok(self
            .registry
            .members()
            .await?
            .into_iter()
            .filter(|m| m.role == Role::Miner && m.node_id != self.node_id)
            .collect())
    }

    /// Probes miners concurrently; returns those that answered, in input order.
    pub async fn probe(&self, miners: &[Member]) -> Vec<LiveMiner> {
        self.probe_each(miners, PROBE_TIMEOUT)
            .await
            .into_iter()
            .filter_map(Probed::answered)
            .collect()
    }

    /// Probes miners concurrently, each for at most `wait`; one outcome per
    /// miner, in input order.
    pub async fn probe_each(&self, miners: &[Member], wait: Duration) -> Vec<Probed> {
        let mut out: Vec<Probed> = miners.iter().map(|_| Probed::Unpublished).collect();
        let mut set = JoinSet::new();
        for (i, m) in miners.iter().enumerate() {
            if m.addrs.is_empty() && m.relay.is_none() {
                continue;
            }
            let client = Arc::clone(&self.client);
            let addr = m.endpoint_addr();
            set.spawn(async move {
                let r = match tokio::time::timeout(wait, client.info(&addr)).await {
                    Ok(Ok(info)) => Ok(info.free),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", wait.as_secs())),
                };
                (i, r)
            });
        }
        while let Some(Ok((i, r))) = set.join_next().await {
            out[i] = match r {
                Ok(free) => Probed::Answered(LiveMiner {
                    member: miners[i].clone(),
                    free,
                }),
                Err(why) => {
                    tracing::debug!(miner = %miners[i].node_id, %why, "a miner did not answer a probe");
                    Probed::Missed(why)
                }
            };
        }
        out
    }

    /// This node's pins, newest first.
    pub fn pins(&self) -> Result<Vec<PinRecord>> {
        let mut out: Vec<PinRecord> = self
            .store
            .kv(PINS)?
            .scan()?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.pinned_at));
        Ok(out)
    }

    /// Finds a dataset's manifest and newest placement. Opened datasets are
    /// cached for [`DATASET_CACHE_TTL`], so the files of one `get` share one
    /// look-up; a placement published through this node replaces its entry.
    pub async fn open(&self, cid: Cid) -> Result<Dataset> {
        if let Some((at, ds)) = self.cache.lock().expect("lock").get(&cid)
            && at.elapsed() < DATASET_CACHE_TTL
        {
            return Ok(ds.clone());
        }
        let ds = self.open_uncached(cid).await?;
        self.remember(&ds);
        Ok(ds)
    }

    /// Opens a dataset past the cache (and refreshes it): for status, unpin
    /// and audits, which must see the current members and placement.
    pub async fn open_fresh(&self, cid: Cid) -> Result<Dataset> {
        self.forget(&cid);
        self.open(cid).await
    }

    fn remember(&self, ds: &Dataset) {
        let mut cache = self.cache.lock().expect("lock");
        cache.retain(|_, (at, _)| at.elapsed() < DATASET_CACHE_TTL);
        cache.insert(ds.cid, (Instant::now(), ds.clone()));
    }

    /// Forgets a cached dataset (after unpin).
    pub fn forget(&self, cid: &Cid) {
        self.cache.lock().expect("lock").remove(cid);
    }

    /// The local store first; then the miners of the read order for the
    /// CID, the first few (the manifest holders) at once and the rest only
    /// if they had nothing; recently failed miners are skipped.
    async fn open_uncached(&self, cid: Cid) -> Result<Dataset> {
        let members: HashMap<NodeId, Member> = self
            .registry
            .members()
            .await?
            .into_iter()
            .map(|m| (m.node_id, m))
            .collect();
        let mut manifest = match self.store.get_manifest(&cid.0)? {
            Some((_, bytes)) => Some(Manifest::decode(&bytes)?),
            None => None,
        };
        // Placements are kept as offered and judged once the manifest (and
        // with it the dataset's owner) is known.
        let mut placements: Vec<Placement> = Vec::new();
        if let Some(bytes) = self.store.get_placement(&cid.0)? {
            placements.push(Placement::decode(&bytes)?);
        }
        let miners: Vec<&Member> = members
            .values()
            .filter(|m| m.role == Role::Miner && m.node_id != self.node_id)
            .filter(|m| !m.addrs.is_empty() || m.relay.is_some())
            .collect();
        let candidates: Vec<Candidate> = miners.iter().map(|m| m.candidate(self.rule)).collect();
        let order: Vec<usize> = placement::read_order(&cid.0, &candidates)
            .into_iter()
            .filter(|&i| !self.client.is_suspect(&miners[i].node_id))
            .collect();
        let (first, rest) = order.split_at(order.len().min(MANIFEST_FIRST_ASK));
        for (round, batch) in [first, rest].into_iter().enumerate() {
            if round > 0 && manifest.is_some() && !placements.is_empty() {
                break;
            }
            let mut set = JoinSet::new();
            for &i in batch {
                let (client, addr) = (Arc::clone(&self.client), miners[i].endpoint_addr());
                let want_manifest = manifest.is_none();
                set.spawn(async move {
                    let mark = client.heard_mark(&addr.id).await;
                    let got = tokio::time::timeout(PROBE_TIMEOUT, async {
                        let m = if want_manifest {
                            client.get_manifest(&addr, cid.0).await.ok()
                        } else {
                            None
                        };
                        let p = client.get_placement(&addr, cid).await.ok();
                        (m, p)
                    })
                    .await;
                    (addr.id, mark, got)
                });
            }
            while let Some(Ok((node, mark, got))) = set.join_next().await {
                let Ok((m, p)) = got else {
                    self.client.request_failed(&node, mark).await;
                    continue;
                };
                if manifest.is_none()
                    && let Some(bytes) = m
                    && let Ok(decoded) = Manifest::decode(&bytes)
                    && decoded.cid() == cid
                {
                    manifest = Some(decoded);
                }
                placements.extend(p);
            }
        }
        let manifest = manifest.ok_or_else(|| {
            Error::NotFound(format!(
                "unknown CID {cid}: no manifest here nor on any of the {} miners asked; check the CID, or whether the network that pinned it is reachable",
                order.len()
            ))
        })?;
        // Only the dataset's owner, or a validator re-placing it after a
        // repair, may place it: anything else a miner offers is ignored.
        let placement = placements
            .into_iter()
            .filter(|p| {
                p.owner == manifest.owner
                    && (p.signer == p.owner
                        || members.get(&p.signer).is_some_and(|m| m.is_validator()))
            })
            .max_by_key(|p| p.version)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "{cid}: manifest found but no placement record from its owner; the miners that hold it may be down"
                ))
            })?;
        if placement.holders.len() != manifest.segments.len() * manifest.total_shards() {
            return Err(Error::Corrupt(format!(
                "{cid}: the placement record does not match the manifest"
            )));
        }
        Ok(Dataset {
            cid,
            manifest: Arc::new(manifest),
            placement: Arc::new(placement),
            members: Arc::new(members),
        })
    }

    /// Stores a manifest and its placement locally and on the manifest
    /// holders (the first m + 1 of the read order among `live`). Returns the
    /// number of remote copies taken.
    async fn publish(
        &self,
        manifest: &Manifest,
        placement: &Placement,
        live: &[LiveMiner],
    ) -> Result<usize> {
        let cid = placement.cid;
        let bytes = manifest.encode();
        // This node's own records: counted, never refused for space.
        self.store
            .put_manifest(&cid.0, &bytes, &manifest.owner, false)?;
        self.store.put_placement(
            &cid.0,
            placement.version,
            &placement.owner,
            &placement.encode(),
            false,
        )?;
        let copies = usize::from(manifest.parity_shards) + 1;
        let candidates = candidates(live, self.rule, None);
        let mut stored = 0;
        let mut errors = Vec::new();
        for i in placement::manifest_holders(&cid.0, copies, &candidates) {
            let addr = live[i].member.endpoint_addr();
            let r = async {
                self.client.put_manifest(&addr, cid.0, &bytes).await?;
                self.client.put_placement(&addr, placement).await
            }
            .await;
            match r {
                Ok(()) => stored += 1,
                Err(e) => {
                    tracing::warn!(%cid, miner = %addr.id.fmt_short(), error = %e, "manifest copy not stored");
                    errors.push(e.to_string());
                }
            }
        }
        if stored == 0 {
            return Err(Error::Unavailable(format!(
                "no miner took the manifest of {cid}: {}",
                errors.join("; ")
            )));
        }
        Ok(stored)
    }

    /// Publishes a new placement of `ds` with `holders` (one per shard),
    /// signed by this node: a validator's repair. The new version is above
    /// the old one; the dataset as now placed is cached and returned.
    pub async fn publish_repair(
        &self,
        ds: &Dataset,
        holders: &[Option<NodeId>],
        live: &[LiveMiner],
    ) -> Result<Dataset> {
        let next = ds.placement.version.checked_add(1).ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: placement version {} cannot grow",
                ds.cid, ds.placement.version
            ))
        })?;
        let version = next.max(cairn_store::unix_millis());
        let placement = Placement::signed(ds.cid, version, ds.placement.owner, holders, &self.key);
        self.publish(&ds.manifest, &placement, live).await?;
        let new = Dataset {
            cid: ds.cid,
            manifest: Arc::clone(&ds.manifest),
            placement: Arc::new(placement),
            members: Arc::clone(&ds.members),
        };
        self.remember(&new);
        Ok(new)
    }

    /// Asks every registered validator to audit `cid` (or, with `release`,
    /// to stop auditing it), best effort. Returns how many accepted.
    /// How failure domains are told apart on this network.
    pub fn domain_rule(&self) -> DomainRule {
        self.rule
    }

    /// The miners a validator says passed their vetting: the first validator
    /// that answers. `None` when none does (then nobody is held back: with no
    /// validator there is no vetting).
    pub async fn vetted(&self) -> Option<HashSet<NodeId>> {
        for v in self.registry.validators_except(&self.node_id).await.ok()? {
            let addr = v.endpoint_addr();
            let asked = self.client.vetted(&addr);
            if let Ok(Ok(list)) = tokio::time::timeout(PROBE_TIMEOUT, asked).await {
                return Some(list.into_iter().collect());
            }
        }
        None
    }

    async fn notify_validators(&self, cid: Cid, release: bool) -> usize {
        let Ok(validators) = self.registry.validators_except(&self.node_id).await else {
            return 0;
        };
        let mut set = JoinSet::new();
        for v in validators {
            let client = Arc::clone(&self.client);
            set.spawn(async move {
                let addr = v.endpoint_addr();
                let asked = async {
                    if release {
                        client.release(&addr, cid.0).await
                    } else {
                        client.audit(&addr, cid.0).await
                    }
                };
                matches!(tokio::time::timeout(PROBE_TIMEOUT, asked).await, Ok(Ok(())))
            });
        }
        let mut n = 0;
        while let Some(r) = set.join_next().await {
            n += usize::from(r.unwrap_or(false));
        }
        n
    }
}
