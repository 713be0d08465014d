//! Where this node stands in the network, as a home operator needs to know
//! it: the address the outside sees (the relay's address discovery), whether
//! a NAT rewrites it, and so whether peers can dial the node, must go through
//! the relay, or cannot reach it at all; with the fix for each case.
//!
//! [`assess`] is pure: the facts in, the verdict out. [`network_info`] reads
//! the facts from the endpoint.

use std::net::SocketAddr;

use cairn_api::NetworkInfo;
use iroh::{Endpoint, Watcher};

use crate::config::NetworkConfig;
use crate::net::endpoint::published_addrs;

/// What the endpoint knows about its own addresses.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub bound: Vec<SocketAddr>,
    pub external: Vec<SocketAddr>,
    /// The public address the relay saw this node's packets come from.
    pub observed: Option<SocketAddr>,
    /// The observed IP is an address of this host (no NAT in between).
    pub observed_is_local: bool,
    pub relay: Option<String>,
    pub relay_connected: bool,
}

/// The verdict on reachability and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub behind_nat: Option<bool>,
    pub reachability: &'static str,
    pub advice: String,
}

/// Judges reachability from the facts.
pub fn assess(f: &Facts) -> Verdict {
    let port = f.bound.first().map(|a| a.port()).unwrap_or(7440);
    if !f.external.is_empty() {
        return Verdict {
            behind_nat: f.observed.map(|o| !is_own(o, f)),
            reachability: "public",
            advice: format!(
                "peers dial the configured external address {}; keep UDP {} forwarded to this host",
                f.external[0],
                f.external[0].port()
            ),
        };
    }
    let Some(observed) = f.observed else {
        return Verdict {
            behind_nat: None,
            reachability: "unknown",
            advice: if f.relay.is_some() {
                "the relay has not seen this node yet (address discovery pending or blocked): check that UDP to the relay's port 7842 is allowed".into()
            } else {
                format!(
                    "network.relay = \"off\": nothing checks this node from outside. Behind a home router, forward UDP {port} to this host and set network.external_addrs, or set network.relay"
                )
            },
        };
    };
    if is_own(observed, f) {
        return Verdict {
            behind_nat: Some(false),
            reachability: "public",
            advice: format!("peers dial {observed} directly; nothing to do"),
        };
    }
    match (&f.relay, f.relay_connected) {
        (Some(relay), true) => Verdict {
            behind_nat: Some(true),
            reachability: "relayed",
            advice: format!(
                "behind a NAT (seen as {observed}): peers reach this node through the relay {relay} and usually switch to a direct path by hole punching. For direct paths always, forward UDP {port} on the router to this host and set network.external_addrs = [\"{}:{port}\"]",
                observed.ip()
            ),
        },
        _ => Verdict {
            behind_nat: Some(true),
            reachability: "unreachable",
            advice: format!(
                "behind a NAT (seen as {observed}) and no relay connected: peers cannot dial this node. Forward UDP {port} on the router and set network.external_addrs = [\"{}:{port}\"], or set network.relay",
                observed.ip()
            ),
        },
    }
}

/// The observed address is one of ours: an address of this host, on the
/// port the node is bound to (a NAT would have rewritten one or the other).
fn is_own(observed: SocketAddr, f: &Facts) -> bool {
    f.observed_is_local && f.bound.iter().any(|b| b.port() == observed.port())
}

/// The network facts of a running endpoint, with the verdict.
pub fn network_info(endpoint: &Endpoint, net: &NetworkConfig) -> NetworkInfo {
    let report = endpoint.net_report().get();
    let observed = report.as_ref().and_then(|r| {
        r.global_v4
            .map(SocketAddr::V4)
            .or(r.global_v6.map(SocketAddr::V6))
    });
    let relays = endpoint.home_relay_status().get();
    let facts = Facts {
        bound: endpoint.bound_sockets(),
        external: net.external_addrs.clone(),
        observed,
        // An address of this host can be bound; a router's cannot.
        observed_is_local: observed
            .is_some_and(|o| std::net::UdpSocket::bind(SocketAddr::new(o.ip(), 0)).is_ok()),
        relay: endpoint.addr().relay_urls().next().map(|u| u.to_string()),
        relay_connected: relays.iter().any(|r| r.is_connected()),
    };
    let v = assess(&facts);
    NetworkInfo {
        bound: facts.bound.iter().map(|a| a.to_string()).collect(),
        published: published_addrs(endpoint, net)
            .iter()
            .map(|a| a.to_string())
            .collect(),
        observed: observed.map(|a| a.to_string()),
        behind_nat: v.behind_nat,
        relay: facts.relay,
        relay_connected: facts.relay_connected,
        reachability: v.reachability.into(),
        advice: v.advice,
        peers: Vec::new(),
        connections_dialed: 0,
        incoming: Vec::new(),
        bytes_out: 0,
        bytes_in: 0,
    }
}

/// How long a dial-back may take.
pub const DIAL_BACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most addresses of a member tried in one dial-back.
const DIAL_BACK_ADDRS: usize = 8;

/// Dials `member` the way a stranger would: from a fresh endpoint (a new
/// key and socket, no relay) at the direct addresses its registry record
/// holds, within [`DIAL_BACK_TIMEOUT`]. A completed QUIC handshake means
/// peers can reach it without a relay. The addresses come from the
/// registry, never from the asker, so nobody can point a validator at a
/// third party.
pub async fn dial_back(
    member: &crate::registry::Member,
    net: &NetworkConfig,
) -> cairn_proto::wire::DialBackReport {
    use cairn_proto::wire::DialBackReport;
    let addrs: Vec<SocketAddr> = member.addrs.iter().copied().take(DIAL_BACK_ADDRS).collect();
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let not = |detail: String| DialBackReport {
        reached: false,
        rtt_ms: None,
        detail,
    };
    if addrs.is_empty() {
        return not(
            "no direct address is registered for this node (only a relay): peers cannot dial it directly".into(),
        );
    }
    let mut fresh = net.clone();
    fresh.relay = "off".into();
    fresh.relay_ca = None;
    fresh.external_addrs.clear();
    fresh.listen = SocketAddr::new(net.listen.ip(), 0);
    let endpoint =
        match crate::net::endpoint::bind_endpoint(cairn_proto::SecretKey::generate(), &fresh, 1)
            .await
        {
            Ok(e) => e,
            Err(e) => return not(format!("could not open a socket to dial from: {e}")),
        };
    let mut to = iroh::EndpointAddr::new(member.node_id);
    for a in &addrs {
        to = to.with_ip_addr(*a);
    }
    let started = std::time::Instant::now();
    let dialed =
        tokio::time::timeout(DIAL_BACK_TIMEOUT, endpoint.connect(to, cairn_proto::ALPN)).await;
    let report = match dialed {
        Ok(Ok(conn)) => {
            let ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
            conn.close(0u32.into(), b"dial-back done");
            DialBackReport {
                reached: true,
                rtt_ms: Some(ms),
                detail: format!("reached at {list} from a fresh socket, without a relay"),
            }
        }
        Ok(Err(e)) => not(format!(
            "dialed {list} from a fresh socket, without a relay: {e}"
        )),
        Err(_) => not(format!(
            "dialed {list} from a fresh socket, without a relay: no answer within {DIAL_BACK_TIMEOUT:?}"
        )),
    };
    endpoint.close().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(observed: Option<&str>, relay: bool) -> Facts {
        Facts {
            bound: vec!["192.168.1.2:7440".parse().unwrap()],
            external: vec![],
            observed: observed.map(|o| o.parse().unwrap()),
            observed_is_local: false,
            relay: relay.then(|| "http://203.0.113.3:3340/".to_string()),
            relay_connected: relay,
        }
    }

    #[test]
    fn a_public_node_sees_its_own_address() {
        let mut f = facts(Some("203.0.113.11:7440"), true);
        f.bound = vec!["0.0.0.0:7440".parse().unwrap()];
        f.observed_is_local = true;
        let v = assess(&f);
        assert_eq!((v.reachability, v.behind_nat), ("public", Some(false)));
    }

    #[test]
    fn a_nated_node_is_relayed_and_told_what_to_forward() {
        let v = assess(&facts(Some("203.0.113.21:7440"), true));
        assert_eq!((v.reachability, v.behind_nat), ("relayed", Some(true)));
        assert!(v.advice.contains("forward UDP 7440"), "{}", v.advice);
        assert!(v.advice.contains("203.0.113.21:7440"), "{}", v.advice);
    }

    #[test]
    fn a_nated_node_without_a_relay_is_unreachable() {
        let mut f = facts(Some("203.0.113.21:40000"), true);
        f.relay_connected = false;
        assert_eq!(assess(&f).reachability, "unreachable");
    }

    #[test]
    fn without_a_relay_nothing_is_known() {
        let v = assess(&facts(None, false));
        assert_eq!((v.reachability, v.behind_nat), ("unknown", None));
        assert!(v.advice.contains("network.relay"), "{}", v.advice);
    }

    #[test]
    fn a_port_forward_is_public() {
        let mut f = facts(Some("203.0.113.21:7440"), true);
        f.external = vec!["203.0.113.21:7440".parse().unwrap()];
        assert_eq!(assess(&f).reachability, "public");
    }
}
