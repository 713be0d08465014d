//! Membership: who is on the network, in which role, and how to reach them.
//!
//! Behind one trait, [`Registry`], sit the local registry (a directory shared
//! by the nodes of one machine or LAN: the embedded default, no chain needed)
//! and the subtensor chain. Every member binds an iroh node id to a hotkey:
//! in the local registry the entry is signed by the hotkey; on chain the
//! hotkey itself publishes the node id.

mod local;
mod member;
pub mod subtensor;

use std::future::Future;

pub use local::LocalRegistry;
pub use member::{Member, WeightEntry};
pub use subtensor::Subtensor;

use crate::config::{ChainKind, Config};
use crate::error::Result;
use crate::identity::Hotkey;
use cairn_proto::NodeId;
use cairn_proto::SecretKey;

/// Opens the registry the config names.
pub async fn open(config: &Config) -> Result<AnyRegistry> {
    match config.chain.kind {
        ChainKind::Local => Ok(AnyRegistry::Local(
            LocalRegistry::open(&config.registry_dir())?.accepting_relay(own_relay(config)),
        )),
        ChainKind::Subtensor => Ok(AnyRegistry::Subtensor(
            Subtensor::connect(
                &config.chain.endpoint,
                &config.chain.backend,
                config.chain.netuid,
            )
            .await?
            .accepting_relay(own_relay(config)),
        )),
    }
}

/// This node's own relay URL as iroh prints it (`network.relay` when it
/// names one): the only relay a member's commitment may point dialers at.
fn own_relay(config: &Config) -> Option<String> {
    match config.network.relay.as_str() {
        "off" | "default" => None,
        url => url.parse::<iroh::RelayUrl>().ok().map(|u| u.to_string()),
    }
}

/// A member's relay, kept only if it is `accepted` (this node's own): a
/// relay is an address the dialer connects to, and a member must not choose
/// it for the dialer. Both are compared as iroh prints a relay URL.
pub(crate) fn keep_own_relay(relay: Option<String>, accepted: Option<&str>) -> Option<String> {
    let relay = relay?.parse::<iroh::RelayUrl>().ok()?.to_string();
    (Some(relay.as_str()) == accepted).then_some(relay)
}

/// Membership, whatever backs it.
pub trait Registry: Send + Sync {
    /// Every current member.
    fn members(&self) -> impl Future<Output = Result<Vec<Member>>> + Send;
    /// One member, if registered.
    fn member(&self, id: &NodeId) -> impl Future<Output = Result<Option<Member>>> + Send;
    /// Announces this node (role, addresses, capacity), signed by its
    /// hotkey and its node key.
    fn publish(
        &self,
        me: &Member,
        hotkey: &Hotkey,
        node_key: &SecretKey,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Sets this validator's weights over the miners.
    fn set_weights(
        &self,
        validator: &Member,
        hotkey: &Hotkey,
        weights: &[WeightEntry],
    ) -> impl Future<Output = Result<()>> + Send;
}

/// At most this many validators are asked anything by one node (a subnet
/// gives at most 64 validator permits by default): what a node asks of them
/// stays bounded however many claim the role.
pub const MAX_VALIDATORS_ASKED: usize = 64;

impl AnyRegistry {
    /// The registered validators other than `me`, at most
    /// [`MAX_VALIDATORS_ASKED`]: whom a node asks for verdicts, a dial-back,
    /// the vetted list, or tells of a new pin.
    pub async fn validators_except(&self, me: &NodeId) -> Result<Vec<Member>> {
        Ok(self
            .members()
            .await?
            .into_iter()
            .filter(|m| m.is_validator() && m.node_id != *me)
            .take(MAX_VALIDATORS_ASKED)
            .collect())
    }

    /// Metagraph reads so far (chain mode), for `/metrics`.
    pub fn metagraph_reads(&self) -> Option<u64> {
        match self {
            AnyRegistry::Local(_) => None,
            AnyRegistry::Subtensor(s) => Some(s.metagraph_reads()),
        }
    }

    /// Failed chain calls by kind, when on chain (`/metrics`).
    pub fn chain_errors(&self) -> Option<[(&'static str, u64); 2]> {
        match self {
            AnyRegistry::Local(_) => None,
            AnyRegistry::Subtensor(s) => Some(s.chain_errors()),
        }
    }
}

/// The registries this build knows.
#[derive(Clone)]
pub enum AnyRegistry {
    Local(LocalRegistry),
    Subtensor(Subtensor),
}

impl Registry for AnyRegistry {
    async fn members(&self) -> Result<Vec<Member>> {
        match self {
            AnyRegistry::Local(r) => r.members().await,
            AnyRegistry::Subtensor(s) => s.members().await,
        }
    }
    async fn member(&self, id: &NodeId) -> Result<Option<Member>> {
        match self {
            AnyRegistry::Local(r) => r.member(id).await,
            AnyRegistry::Subtensor(s) => s.member(id).await,
        }
    }
    async fn publish(&self, me: &Member, hotkey: &Hotkey, node_key: &SecretKey) -> Result<()> {
        match self {
            AnyRegistry::Local(r) => r.publish(me, hotkey, node_key).await,
            AnyRegistry::Subtensor(s) => s.publish(me, hotkey, node_key).await,
        }
    }
    async fn set_weights(
        &self,
        validator: &Member,
        hotkey: &Hotkey,
        weights: &[WeightEntry],
    ) -> Result<()> {
        match self {
            AnyRegistry::Local(r) => r.set_weights(validator, hotkey, weights).await,
            AnyRegistry::Subtensor(s) => s.set_weights(hotkey, weights).await,
        }
    }
}
