//! A member of the network as every registry describes it, and the weights
//! a validator sets over members.

use std::net::SocketAddr;

use cairn_proto::placement::{Candidate, Domain, DomainRule, failure_domain};
use serde::{Deserialize, Serialize};

use cairn_proto::{NodeId, Role};
use iroh::EndpointAddr;

/// One node of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The iroh endpoint id (hex).
    pub node_id: NodeId,
    pub role: Role,
    /// Direct addresses.
    #[serde(default)]
    pub addrs: Vec<SocketAddr>,
    /// Home relay URL, if any.
    #[serde(default)]
    pub relay: Option<String>,
    /// SS58 address of the hotkey this node acts for.
    pub hotkey: String,
    /// Position in the subnet's metagraph (chain mode).
    #[serde(default)]
    pub uid: Option<u16>,
    #[serde(default)]
    pub stake: u64,
    #[serde(default)]
    pub validator_permit: bool,
    /// Capacity and free bytes as last announced (placement weights).
    #[serde(default)]
    pub capacity: u64,
    #[serde(default)]
    pub free: u64,
    /// The local HTTP API, for tools on the same machine (devnet).
    #[serde(default)]
    pub api: Option<SocketAddr>,
}

impl Member {
    /// How to dial this member.
    pub fn endpoint_addr(&self) -> EndpointAddr {
        let mut a = EndpointAddr::new(self.node_id);
        for ip in &self.addrs {
            a = a.with_ip_addr(*ip);
        }
        if let Some(r) = self.relay.as_deref().and_then(|r| r.parse().ok()) {
            a = a.with_relay_url(r);
        }
        a
    }

    /// The validator right, as the registry grants it: the chain's
    /// validator permit, or the signed role of a local registry entry.
    /// Never what a node says of itself in its commitment.
    pub fn is_validator(&self) -> bool {
        self.validator_permit
    }

    /// This member as the placement rule weighs it (vetted; see
    /// [`Candidate::vetted`]).
    pub fn candidate(&self, rule: DomainRule) -> Candidate {
        Candidate::new(self.node_id, self.free).in_domain(self.domain(rule))
    }

    /// Its failure domain, from its committed addresses.
    pub fn domain(&self, rule: DomainRule) -> Domain {
        failure_domain(self.node_id, &self.addrs, rule)
    }
}

/// One miner's weight as a validator sets it, with the evidence behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightEntry {
    pub node_id: NodeId,
    pub hotkey: String,
    pub weight: u16,
    /// Score, verified bytes, last failures: shown by the devnet and status pages.
    #[serde(default)]
    pub details: serde_json::Value,
}
