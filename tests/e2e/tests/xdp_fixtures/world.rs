//! The flows the fixture rows run against: one allocation per family and one per
//! cross-family combination, with their permissions and channels, installed into the
//! program's maps through the testkit's [`FastPath`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use turn_relay::protocol::datapath::{ClientFlow, PeerPortRange};
use turn_testkit::addresses::{
    CLIENT_V4, CLIENT_V6, NEAR_PEER_V4, NEAR_PEER_V6, PEER_V4, PEER_V6, RELAY_LISTEN_V4,
    RELAY_LISTEN_V6, RELAY_PUBLIC_V4, RELAY_PUBLIC_V6, RELAY_RELAYED_V4, RELAY_RELAYED_V6,
    UNATTACHED_PEER_V4, UNRESOLVED_PEER_V4, UNROUTABLE_PEER_V4,
};
use turn_testkit::fast_path::FastPath;

use crate::rows::{
    Peer, CHANNEL_CROSS, CHANNEL_EXPIRED, CHANNEL_HIGHEST, CHANNEL_MAPPED, CHANNEL_NEAR_PEER,
    CHANNEL_PEER, CHANNEL_UNATTACHED, CHANNEL_UNRESOLVED, CHANNEL_UNROUTABLE,
};

pub const LISTENER_PORT: u16 = 3478;
pub const RELAY_PORT: u16 = 50_000;
/// The relay port range: the ports of the relay's own addresses a peer may have.
pub const RELAY_PORTS: PeerPortRange = PeerPortRange {
    first: RELAY_PORT,
    last: RELAY_PORT + 999,
};
pub const CLIENT_PORT: u16 = 40_000;
pub const PEER_PORT: u16 = 7000;

/// A peer whose permission has expired.
const EXPIRED_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 21);
/// Peers without any permission.
const STRANGER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 50);
const STRANGER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 0x50);

/// One allocation: the client's flow, its relayed address and the family of its peers.
#[derive(Clone, Copy, Debug)]
pub struct Allocation {
    /// What the runner appends to a row's name.
    pub tag: &'static str,
    pub client: IpAddr,
    pub listener: IpAddr,
    pub relay: SocketAddr,
    /// The permitted peer's IP (of the relayed address's family).
    pub peer_ip: IpAddr,
    /// Client and relayed address differ in family.
    pub cross_family: bool,
}

/// The IPv4 allocation.
pub const V4: Allocation = Allocation {
    tag: "v4",
    client: IpAddr::V4(CLIENT_V4),
    listener: IpAddr::V4(RELAY_LISTEN_V4),
    relay: SocketAddr::new(IpAddr::V4(RELAY_RELAYED_V4), RELAY_PORT),
    peer_ip: IpAddr::V4(PEER_V4),
    cross_family: false,
};

/// The IPv6 allocation.
pub const V6: Allocation = Allocation {
    tag: "v6",
    client: IpAddr::V6(CLIENT_V6),
    listener: IpAddr::V6(RELAY_LISTEN_V6),
    relay: SocketAddr::new(IpAddr::V6(RELAY_RELAYED_V6), RELAY_PORT),
    peer_ip: IpAddr::V6(PEER_V6),
    cross_family: false,
};

/// An IPv4 client with an IPv6 relayed address (RFC 8656 §7.2 REQUESTED-ADDRESS-FAMILY,
/// or the second allocation of ADDITIONAL-ADDRESS-FAMILY). Channel numbers are per client
/// 5-tuple, so it uses [`CHANNEL_CROSS`].
pub const V4_CLIENT_V6_RELAY: Allocation = Allocation {
    tag: "v4_client_v6_relay",
    relay: SocketAddr::new(IpAddr::V6(RELAY_RELAYED_V6), RELAY_PORT + 1),
    peer_ip: IpAddr::V6(PEER_V6),
    cross_family: true,
    ..V4
};

/// An IPv6 client with an IPv4 relayed address.
pub const V6_CLIENT_V4_RELAY: Allocation = Allocation {
    tag: "v6_client_v4_relay",
    relay: SocketAddr::new(IpAddr::V4(RELAY_RELAYED_V4), RELAY_PORT + 1),
    peer_ip: IpAddr::V4(PEER_V4),
    cross_family: true,
    ..V6
};

impl Allocation {
    pub fn flow(&self) -> ClientFlow {
        ClientFlow::udp(
            SocketAddr::new(self.client, CLIENT_PORT),
            SocketAddr::new(self.listener, LISTENER_PORT),
        )
    }

    /// The transport address of a peer, in the relayed address's family.
    pub fn peer(&self, peer: Peer) -> SocketAddr {
        let v4 = self.peer_ip.is_ipv4();
        let pick = |v4_address: Ipv4Addr, v6_address: Ipv6Addr| -> IpAddr {
            if v4 {
                v4_address.into()
            } else {
                v6_address.into()
            }
        };
        match peer {
            Peer::Bound => SocketAddr::new(self.peer_ip, PEER_PORT),
            Peer::OtherPort => SocketAddr::new(self.peer_ip, PEER_PORT + 1),
            Peer::HighestChannel => SocketAddr::new(self.peer_ip, PEER_PORT + 2),
            Peer::Near => SocketAddr::new(pick(NEAR_PEER_V4, NEAR_PEER_V6), PEER_PORT),
            Peer::Stranger => SocketAddr::new(pick(STRANGER_V4, STRANGER_V6), PEER_PORT),
            Peer::Ipv4Mapped => {
                assert!(
                    !v4,
                    "the IPv4-mapped peer exists on the IPv6 allocation only"
                );
                SocketAddr::new(PEER_V4.to_ipv6_mapped().into(), PEER_PORT)
            }
            Peer::Expired => {
                assert!(
                    v4,
                    "the expired permission exists on the IPv4 allocation only"
                );
                SocketAddr::new(EXPIRED_PEER_V4.into(), PEER_PORT + 1)
            }
            Peer::RelayPublicOnRelayPort => SocketAddr::new(
                pick(RELAY_PUBLIC_V4, RELAY_PUBLIC_V6),
                RELAY_PORTS.first + 10,
            ),
            Peer::RelayPublicOffRelayPorts => {
                SocketAddr::new(pick(RELAY_PUBLIC_V4, RELAY_PUBLIC_V6), LISTENER_PORT)
            }
        }
    }
}

/// One entry of the world, in installation order.
#[derive(Clone, Copy, Debug)]
pub enum Entry {
    Allocation {
        flow: ClientFlow,
        relay: SocketAddr,
        expires_at: Instant,
    },
    /// A permission for `peer_ip` on its ports `ports`.
    Permission {
        flow: ClientFlow,
        relay: SocketAddr,
        peer_ip: IpAddr,
        ports: PeerPortRange,
        expires_at: Instant,
    },
    Channel {
        flow: ClientFlow,
        relay: SocketAddr,
        peer: SocketAddr,
        number: u16,
        expires_at: Instant,
    },
}

/// An allocation with a permission (peer IP, ports) and a channel (peer, number), all
/// living until `expires_at`.
fn allocation_with_channel(
    flow: ClientFlow,
    relay: SocketAddr,
    (peer_ip, ports): (IpAddr, PeerPortRange),
    (peer, number): (SocketAddr, u16),
    expires_at: Instant,
) -> [Entry; 3] {
    [
        Entry::Allocation {
            flow,
            relay,
            expires_at,
        },
        Entry::Permission {
            flow,
            relay,
            peer_ip,
            ports,
            expires_at,
        },
        Entry::Channel {
            flow,
            relay,
            peer,
            number,
            expires_at,
        },
    ]
}

/// Every allocation with its permissions and channels: live ones for 10 minutes from
/// `now`, a permission for the relay's own public address on relay ports only, and on
/// the IPv4 allocation also an expired one, peers without a neighbour entry or a route
/// and one behind an interface the program is not attached to.
pub fn entries(now: Instant) -> Vec<Entry> {
    let live = now + Duration::from_secs(600);
    let expired = now - Duration::from_secs(1);
    let mut entries = Vec::new();
    for cross in [V4_CLIENT_V6_RELAY, V6_CLIENT_V4_RELAY] {
        let peer = cross.peer(Peer::Bound);
        entries.extend(allocation_with_channel(
            cross.flow(),
            cross.relay,
            (peer.ip(), PeerPortRange::ALL),
            (peer, CHANNEL_CROSS),
            live,
        ));
    }
    for allocation in [V4, V6] {
        let (flow, relay) = (allocation.flow(), allocation.relay);
        entries.extend(allocation_with_channel(
            flow,
            relay,
            (
                allocation.peer(Peer::RelayPublicOnRelayPort).ip(),
                RELAY_PORTS,
            ),
            (allocation.peer(Peer::HighestChannel), CHANNEL_HIGHEST),
            live,
        ));
        let mut peers = vec![(allocation.peer_ip, live, CHANNEL_PEER)];
        if allocation.peer_ip.is_ipv6() {
            peers.push((allocation.peer(Peer::Ipv4Mapped).ip(), live, CHANNEL_MAPPED));
        }
        if allocation.peer_ip.is_ipv4() {
            peers.extend([
                (IpAddr::V4(NEAR_PEER_V4), live, CHANNEL_NEAR_PEER),
                (IpAddr::V4(UNRESOLVED_PEER_V4), live, CHANNEL_UNRESOLVED),
                (IpAddr::V4(UNROUTABLE_PEER_V4), live, CHANNEL_UNROUTABLE),
                (IpAddr::V4(EXPIRED_PEER_V4), expired, CHANNEL_EXPIRED),
                (IpAddr::V4(UNATTACHED_PEER_V4), live, CHANNEL_UNATTACHED),
            ]);
        }
        for (peer_ip, expires_at, number) in peers {
            entries.extend([
                Entry::Permission {
                    flow,
                    relay,
                    peer_ip,
                    ports: PeerPortRange::ALL,
                    expires_at,
                },
                Entry::Channel {
                    flow,
                    relay,
                    peer: SocketAddr::new(peer_ip, PEER_PORT),
                    number,
                    expires_at,
                },
            ]);
        }
    }
    entries
}

/// Installs the world of [`entries`] as of now.
pub fn install(fast_path: &mut FastPath) {
    install_entries(fast_path, &entries(Instant::now()));
}

/// Installs `entries` in order.
pub fn install_entries(fast_path: &mut FastPath, entries: &[Entry]) {
    for entry in entries {
        let installed = match *entry {
            Entry::Allocation {
                flow,
                relay,
                expires_at,
            } => fast_path.allocation(flow, relay, expires_at),
            Entry::Permission {
                flow,
                relay,
                peer_ip,
                ports,
                expires_at,
            } => fast_path.permission_on_ports(flow, relay, peer_ip, ports, expires_at),
            Entry::Channel {
                flow,
                relay,
                peer,
                number,
                expires_at,
            } => fast_path.channel(flow, relay, peer, number, expires_at),
        };
        installed.unwrap_or_else(|error| panic!("installing {entry:?}: {error}"));
    }
}
