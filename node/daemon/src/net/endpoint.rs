//! The node's QUIC endpoint (iroh): bound as the network config says,
//! keep-alives short enough that a dead peer is noticed in seconds (and a
//! home router's NAT mapping never idles out), and the addresses this node
//! publishes.
//!
//! With a relay configured, iroh talks to that relay only: the relay link,
//! address discovery (QAD) and a latency probe. The captive-portal probe
//! (plain HTTP to port 80 of the relay's host) is off, and DNS never falls
//! back to public resolvers.

use std::net::SocketAddr;
use std::time::Duration;

use iroh::dns::DnsResolver;
use iroh::endpoint::{QuicTransportConfig, VarInt, presets};
use iroh::tls::CaTlsConfig;
use iroh::{Endpoint, NetReportConfig, RelayMode, SecretKey};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::NetworkConfig;
use crate::error::{Error, Result};
use cairn_proto::ALPN;

/// The most a peer may have sent on one connection that the node has not
/// read yet, over all its streams (16 MiB: a dozen streams at full window).
pub const CONNECTION_RECEIVE_WINDOW: u32 = 16 << 20;

/// Binds the QUIC endpoint as the network config says.
pub async fn bind_endpoint(
    secret: SecretKey,
    net: &NetworkConfig,
    max_streams: u32,
) -> Result<Endpoint> {
    // Keep-alives every 2 s and a 10 s idle timeout: a dead peer is noticed in
    // seconds, not after the default half minute.
    let idle = iroh::endpoint::IdleTimeout::try_from(Duration::from_secs(10))
        .map_err(|e| Error::Internal(format!("idle timeout: {e}")))?;
    // cairn speaks on bidirectional streams only: a peer may open none of
    // the other kind (the QUIC stack would buffer up to a window on each of
    // 100 of them, unread). And a connection's unread bytes are bounded as a
    // whole, not only per stream.
    let transport = QuicTransportConfig::builder()
        .max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .keep_alive_interval(Duration::from_secs(2))
        .max_idle_timeout(Some(idle))
        .build();
    let builder = match net.relay.as_str() {
        "default" => Endpoint::builder(presets::N0),
        _ => Endpoint::builder(presets::Minimal),
    };
    let mut builder = builder
        .secret_key(secret)
        .alpns(vec![ALPN.to_vec()])
        .transport_config(transport)
        .clear_ip_transports()
        .bind_addr(net.listen)
        .map_err(|e| Error::Bind(format!("network.listen {}: {e}", net.listen)))?;
    builder = match net.relay.as_str() {
        "off" => builder.relay_mode(RelayMode::Disabled),
        "default" => builder,
        url => {
            let url = url
                .parse()
                .map_err(|e| Error::Bind(format!("network.relay {url:?}: {e}")))?;
            builder.relay_mode(RelayMode::custom([url]))
        }
    };
    if let Some(path) = &net.relay_ca {
        builder =
            builder.ca_tls_config(CaTlsConfig::default().with_extra_roots(relay_roots(path)?));
    }
    let mut report = NetReportConfig::default();
    report.captive_portal_check = false;
    builder = builder.net_report_config(report).dns_resolver(
        DnsResolver::builder()
            .with_system_defaults()
            .disable_fallback()
            .build(),
    );
    for a in &net.external_addrs {
        builder = builder.external_addr(*a);
    }
    builder.bind().await.map_err(|e| {
        Error::Bind(format!(
            "cannot bind the QUIC endpoint on UDP {}: {e}; is the port in use by another process?",
            net.listen
        ))
    })
}

/// The certificates of `network.relay_ca`.
fn relay_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::io(format!("network.relay_ca {}", path.display()), e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::Bind(format!(
                "network.relay_ca {}: {e}; expected PEM certificates",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Bind(format!(
            "network.relay_ca {}: no certificate in it; expected PEM (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Addresses to publish: bound sockets (interfaces when bound to 0.0.0.0)
/// plus configured external addresses.
pub fn published_addrs(endpoint: &Endpoint, net: &NetworkConfig) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in endpoint.bound_sockets() {
        if !a.ip().is_unspecified() {
            out.push(a);
        }
    }
    for a in endpoint.addr().ip_addrs() {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    for a in &net.external_addrs {
        if !out.contains(a) {
            out.push(*a);
        }
    }
    out
}
