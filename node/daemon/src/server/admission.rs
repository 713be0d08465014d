//! Which incoming QUIC connections a node keeps: each open connection may
//! hold up to a receive window of unread bytes and its streams' tasks, and
//! identities cost nothing to make, so the number open is bounded, as a
//! whole and per source address. A node that holds its most refuses new
//! connections before their handshake (`Incoming::refuse`); one address's
//! share is counted once the handshake has proven the address (a spoofed
//! first packet takes nothing), and a connection beyond it is closed with
//! the reason. Either peer may try again when other connections close.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections peers opened to this node, open at once.
pub const MAX_INCOMING_CONNECTIONS: usize = 512;
/// Of those, from one address: peers behind one NAT, or a devnet's nodes
/// on loopback, stay far below it; one host making identities does not.
/// Relayed connections have no address of their own and count only in the
/// whole.
pub const MAX_INCOMING_PER_ADDR: usize = 32;

/// The address whose share a connection counts in: an IPv4 address (also
/// written in IPv6), or an IPv6 /64 (one host is routinely given a whole
/// /64, so a share per IPv6 address would be no bound).
fn share_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (!0u128 << 64)).into()),
        v4 => v4,
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The node holds [`MAX_INCOMING_CONNECTIONS`].
    Node,
    /// The address holds [`MAX_INCOMING_PER_ADDR`].
    Address,
}

impl Full {
    /// Its metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Full::Node => "node_full",
            Full::Address => "address_full",
        }
    }

    /// What the refused peer is told (a connection's close reason).
    pub fn reason(self) -> String {
        match self {
            Full::Node => {
                format!("this node holds its {MAX_INCOMING_CONNECTIONS} connections; retry later")
            }
            Full::Address => format!(
                "your address holds its {MAX_INCOMING_PER_ADDR} connections to this node; close some"
            ),
        }
    }
}

/// The open connections, counted.
#[derive(Debug)]
pub struct Admissions {
    all: Arc<Semaphore>,
    per_addr: usize,
    by_addr: Mutex<HashMap<IpAddr, usize>>,
}

impl Default for Admissions {
    fn default() -> Self {
        Self::new(MAX_INCOMING_CONNECTIONS, MAX_INCOMING_PER_ADDR)
    }
}

impl Admissions {
    pub fn new(all: usize, per_addr: usize) -> Self {
        Admissions {
            all: Arc::new(Semaphore::new(all)),
            per_addr,
            by_addr: Mutex::default(),
        }
    }

    /// The node holds its most: a new connection is refused before its
    /// handshake.
    pub fn full(&self) -> bool {
        self.all.available_permits() == 0
    }

    /// A place for a connection from `from` (`None`: relayed), or why not;
    /// the place is given back when the [`Admission`] drops.
    pub fn admit(self: &Arc<Self>, from: Option<IpAddr>) -> Result<Admission, Full> {
        let permit = Arc::clone(&self.all)
            .try_acquire_owned()
            .map_err(|_| Full::Node)?;
        let from = from.map(share_key);
        if let Some(ip) = from {
            let mut by_addr = self.by_addr.lock().expect("lock");
            let open = by_addr.entry(ip).or_default();
            if *open >= self.per_addr {
                return Err(Full::Address);
            }
            *open += 1;
        }
        Ok(Admission {
            admissions: Arc::clone(self),
            from,
            _permit: permit,
        })
    }

    /// Addresses with a connection open (the map holds no others).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.by_addr.lock().expect("lock").len()
    }
}

/// One admitted connection's place.
#[derive(Debug)]
pub struct Admission {
    admissions: Arc<Admissions>,
    from: Option<IpAddr>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Some(ip) = self.from else { return };
        let mut by_addr = self.admissions.by_addr.lock().expect("lock");
        if let Some(open) = by_addr.get_mut(&ip) {
            *open -= 1;
            if *open == 0 {
                by_addr.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_gets_its_share_and_the_node_its_whole() {
        let a = Arc::new(Admissions::new(5, 2));
        let first = a.admit(ip("10.0.0.1")).unwrap();
        let _second = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).unwrap_err(), Full::Address);
        // The same address written as IPv4 in IPv6 is the same address.
        assert_eq!(a.admit(ip("::ffff:10.0.0.1")).unwrap_err(), Full::Address);
        let _other = a.admit(ip("10.0.0.2")).unwrap();
        let _relayed = a.admit(None).unwrap();
        let _more = a.admit(None).unwrap();
        assert_eq!(a.admit(ip("10.0.0.3")).unwrap_err(), Full::Node);
        assert!(a.full());
        drop(first);
        assert!(!a.full());
        assert!(
            a.admit(ip("10.0.0.1")).is_ok(),
            "a closed connection gives its place back"
        );
    }

    #[test]
    fn an_ipv6_host_has_one_share_for_its_64() {
        let a = Arc::new(Admissions::new(10, 2));
        let _one = a.admit(ip("2001:db8:0:1::1")).unwrap();
        let _two = a.admit(ip("2001:db8:0:1:ffff::9")).unwrap();
        assert_eq!(a.admit(ip("2001:db8:0:1::77")).unwrap_err(), Full::Address);
        assert!(
            a.admit(ip("2001:db8:0:2::1")).is_ok(),
            "the next /64 is another"
        );
    }

    #[test]
    fn an_address_with_nothing_open_is_forgotten() {
        let a = Arc::new(Admissions::new(100, 4));
        let open: Vec<_> = (0..50)
            .map(|i| a.admit(Some(IpAddr::from([10, 0, 0, i]))).unwrap())
            .collect();
        assert_eq!(a.addresses(), 50);
        drop(open);
        assert_eq!(a.addresses(), 0);
        // A refusal leaves nothing behind either.
        let a = Arc::new(Admissions::new(1, 4));
        let _held = a.admit(None).unwrap();
        assert_eq!(a.admit(ip("10.0.0.9")).unwrap_err(), Full::Node);
        assert_eq!(a.addresses(), 0);
    }
}
