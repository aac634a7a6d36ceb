//! The one place where tests and the benchmark write the XDP program's flow tables
//! ([`BpfDatapath`] through the core's [`Datapath`] surface), so a change of that surface
//! is a change here only.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::Result;
use turn_relay::bpf::{BpfDatapath, XdpRelay};
use turn_relay::protocol::datapath::{
    self, AllocationEntry, ChannelEntry, ClientFlow, Datapath as _, DatapathError, PeerPortRange,
    PermissionEntry, RelayedTraffic,
};

use crate::addresses::{CLIENT_V4, PEER_V4, RELAY_LISTEN_V4, RELAY_RELAYED_V4};

/// One IPv4 client's addresses in a [`crate::testbed::Testbed`]: its flow to the
/// listener (198.18 client port 40000 → listener port 3478), its relayed address (port
/// 50000) and a peer (port 60000), for tests that install entries for them.
pub struct Ipv4Flow {
    pub flow: ClientFlow,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

impl Ipv4Flow {
    pub const CLIENT_PORT: u16 = 40_000;
    pub const LISTENER_PORT: u16 = 3478;
    pub const RELAY_PORT: u16 = 50_000;
    pub const PEER_PORT: u16 = 60_000;

    pub fn new() -> Ipv4Flow {
        Ipv4Flow {
            flow: ClientFlow::udp(
                SocketAddr::new(CLIENT_V4.into(), Self::CLIENT_PORT),
                SocketAddr::new(RELAY_LISTEN_V4.into(), Self::LISTENER_PORT),
            ),
            relay: SocketAddr::new(RELAY_RELAYED_V4.into(), Self::RELAY_PORT),
            peer: SocketAddr::new(PEER_V4.into(), Self::PEER_PORT),
        }
    }
}

impl Default for Ipv4Flow {
    fn default() -> Ipv4Flow {
        Ipv4Flow::new()
    }
}

/// The core's own applier of fast-path commands on the program's tables: what the daemon
/// runs, for tests that feed the tables from the core's commands.
pub type Applier = datapath::FastPath<BpfDatapath>;

/// The flow tables of one loaded XDP program.
pub struct FastPath {
    datapath: BpfDatapath,
}

impl FastPath {
    pub fn new(datapath: BpfDatapath) -> FastPath {
        FastPath { datapath }
    }

    /// The tables of an attached program (handed out once per program).
    pub fn of_relay(relay: &XdpRelay) -> Result<FastPath> {
        relay.datapath().map(FastPath::new)
    }

    /// The tables behind the core's applier, for commands the core emitted.
    pub fn into_applier(self) -> Applier {
        Applier::new(self.datapath)
    }

    /// Installs (or refreshes) the allocation of `flow` on relayed address `relay`,
    /// without a bandwidth limit.
    pub fn allocation(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        expires_at: Instant,
    ) -> Result<(), DatapathError> {
        self.limited_allocation(flow, relay, expires_at, 0)
    }

    /// An allocation limited to `bytes_per_second` per direction (0: unlimited).
    pub fn limited_allocation(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        expires_at: Instant,
        bytes_per_second: u64,
    ) -> Result<(), DatapathError> {
        self.datapath.install_allocation(AllocationEntry {
            flow,
            relay,
            expires_at,
            bytes_per_second,
        })
    }

    /// Sets the relay's total bandwidth limit (0: unlimited).
    pub fn limit_relay_bandwidth(&mut self, bytes_per_second: u64) -> Result<(), DatapathError> {
        self.datapath.limit_relay_bandwidth(bytes_per_second)
    }

    /// Installs (or refreshes) a permission for `peer_ip` (RFC 8656 §9), on every port.
    pub fn permission(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        peer_ip: IpAddr,
        expires_at: Instant,
    ) -> Result<(), DatapathError> {
        self.permission_on_ports(flow, relay, peer_ip, PeerPortRange::ALL, expires_at)
    }

    /// A permission for `peer_ip` covering its ports `ports` only (the relay's own
    /// addresses: the relay port range).
    pub fn permission_on_ports(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        peer_ip: IpAddr,
        ports: PeerPortRange,
        expires_at: Instant,
    ) -> Result<(), DatapathError> {
        self.datapath.install_permission(PermissionEntry {
            flow,
            relay,
            peer_ip,
            ports,
            expires_at,
        })
    }

    /// Binds channel `number` to `peer` (RFC 8656 §12).
    pub fn channel(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        peer: SocketAddr,
        number: u16,
        expires_at: Instant,
    ) -> Result<(), DatapathError> {
        self.datapath.install_channel(ChannelEntry {
            flow,
            relay,
            peer,
            number,
            expires_at,
        })
    }

    /// An allocation with a permission for `peer`'s IP and channel `number` bound to it.
    pub fn allocation_with_channel(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        peer: SocketAddr,
        number: u16,
        expires_at: Instant,
    ) -> Result<(), DatapathError> {
        self.allocation(flow, relay, expires_at)?;
        self.permission(flow, relay, peer.ip(), expires_at)?;
        self.channel(flow, relay, peer, number, expires_at)
    }

    pub fn remove_allocation(&mut self, flow: ClientFlow, relay: SocketAddr) {
        self.datapath.remove_allocation(flow, relay);
    }

    pub fn remove_channel(&mut self, relay: SocketAddr, number: u16) {
        self.datapath.remove_channel(relay, number);
    }

    /// What the program relayed for the allocation on `relay`.
    pub fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic {
        self.datapath.relayed_traffic(relay)
    }
}
