//! The one address plan of every test and benchmark topology: IPv4 from the
//! benchmarking range 198.18.0.0/15 (RFC 2544) and IPv6 from 2001:2::/48 (RFC 5180), and
//! nothing else.
//!
//! ```text
//! client  198.18.1.2 / 2001:2:0:1::2  ⇄  198.18.1.1 / 2001:2:0:1::1  relay (listener)
//! peer    198.19.1.2 / 2001:2:0:2::2  ⇄  198.19.1.1 / 2001:2:0:2::1  relay (relayed address)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Client side of the client ⇄ relay link.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
/// A second client address on the client's link, added by the tests that need two
/// client hosts (a load balancer and its client, a flood from one address and a client
/// from another).
pub const SECOND_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
/// Relay side of the client ⇄ relay link: the TURN listener address.
pub const RELAY_LISTEN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const RELAY_LISTEN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
/// Relay side of the relay ⇄ peer link: the relayed transport address.
pub const RELAY_RELAYED_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
pub const RELAY_RELAYED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
/// Peer side of the relay ⇄ peer link.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2);
/// Prefix lengths of the two links.
/// Every address of the plan: the RFC 2544 / RFC 5180 benchmarking ranges, which the
/// relay's built-in peer policy denies, so test configurations allow them explicitly.
pub const TEST_NETWORKS: [&str; 2] = ["198.18.0.0/15", "2001:2::/48"];

pub const PREFIX_V4: u8 = 24;
pub const PREFIX_V6: u8 = 64;

/// A second peer on the client side's link (relaying to it from a client is an XDP_TX).
pub const NEAR_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 30);
pub const NEAR_PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0x30);
/// A peer on the peer side's link without a neighbour entry (bpf_fib_lookup: NO_NEIGH).
pub const UNRESOLVED_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 99);
/// A peer in the benchmarking range but on neither link (no route to it).
pub const UNROUTABLE_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 5);
/// The relay's own public address (as behind 1:1 NAT, reached through the NAT's hairpin
/// on the peer side's link): a peer on the relay port range only.
pub const RELAY_PUBLIC_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 40);
pub const RELAY_PUBLIC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x40);
/// A third link of the relay, on an interface XDP is not attached to: the relay's side
/// and a peer behind it.
pub const RELAY_UNATTACHED_LINK_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 1);
pub const UNATTACHED_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 2);

/// Several relays behind one balancer ([`crate::balancer`]): the clients' link, the
/// peers' link and the relays' bridge, each a /24 of the balancer, which routes between
/// them; the balancer's virtual address is DNATed to the relays.
pub const BALANCED_CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 2);
pub const BALANCER_CLIENT_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 1);
/// The one address clients know: `turn:198.18.60.100:3478`.
pub const BALANCER_VIRTUAL_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 60, 100);
pub const BALANCED_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 62, 2);
pub const BALANCER_PEER_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 62, 1);
pub const BALANCER_RELAY_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 61, 1);

/// Relay `index` (0-based) behind the balancer: its listen and relayed address.
pub fn balanced_relay_v4(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        198,
        18,
        61,
        11 + u8::try_from(index).unwrap_or(u8::MAX - 11),
    )
}

/// The TURN port the relay listens on (UDP and TCP).
pub const TURN_PORT: u16 = 3478;
/// The TURN over TLS port (RFC 8656 §4: "turns" on 5349).
pub const TLS_PORT: u16 = 5349;
/// The UDP port `turnutils_peer` echoes on.
pub const PEER_PORT: u16 = 3480;

/// Interface names: `eth0` in the client and peer namespaces, and the relay's two ends
/// (where XDP attaches).
pub const OUTER_INTERFACE: &str = "eth0";
pub const RELAY_CLIENT_SIDE_INTERFACE: &str = "to-client";
pub const RELAY_PEER_SIDE_INTERFACE: &str = "to-peer";

/// The daemon's Prometheus endpoint, on the relay namespace's loopback.
pub const METRICS_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9641);

/// The relay's TURN listener of one IP family (4 or 6).
pub fn listener(family: u8) -> SocketAddr {
    if family == 6 {
        SocketAddr::new(RELAY_LISTEN_V6.into(), TURN_PORT)
    } else {
        SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT)
    }
}

/// The relay's TURN over TLS listener of one IP family (4 or 6).
pub fn tls_listener(family: u8) -> SocketAddr {
    SocketAddr::new(listener(family).ip(), TLS_PORT)
}

/// The client's address of the same family as `server`.
pub fn client_for(server: SocketAddr) -> IpAddr {
    if server.is_ipv4() {
        CLIENT_V4.into()
    } else {
        CLIENT_V6.into()
    }
}
