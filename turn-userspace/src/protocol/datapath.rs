//! The one narrow surface through which the protocol core programs the fast path.
//!
//! The sans-IO core ([`crate::protocol::turn`]) calls these methods synchronously, *before* it queues
//! the success response of the request that created the state (RFC 8656 §9 and §11 say the
//! permission/channel exists once the client sees success, so the kernel must already relay).
//! Two implementations exist: [`InMemoryDatapath`] (tests, and `xdp = "off"`) and the BPF
//! one in [`crate::bpf`], which writes the XDP program's maps.
//!
//! Every entry carries its absolute expiry so the fast path stops relaying on time even
//! if userspace lags behind with its own expiry timers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The client side of an allocation: RFC 8656 §2 "5-tuple" for UDP (the transport is
/// always UDP here), seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientFlow {
    /// The client's address as seen by the server (the server-reflexive address).
    pub client: SocketAddr,
    /// The listening address the client sends to.
    pub listener: SocketAddr,
}

/// Everything the fast path needs to know about one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationEntry {
    pub flow: ClientFlow,
    /// The relayed transport address (the local address of the relay socket).
    pub relay: SocketAddr,
    pub expires_at: Instant,
}

/// A permission of one allocation for one peer IP (RFC 8656 §9: ports are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionEntry {
    pub flow: ClientFlow,
    pub relay: SocketAddr,
    pub peer_ip: IpAddr,
    pub expires_at: Instant,
}

/// A channel binding (RFC 8656 §12): number ↔ peer transport address, per allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEntry {
    pub flow: ClientFlow,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub number: u16,
    /// The earlier of the channel's and the peer permission's expiry: the fast path relays
    /// on the channel only while both are alive.
    pub expires_at: Instant,
}

/// Traffic the fast path relayed for one allocation, so userspace can account for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayedTraffic {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// Why the fast path could not take an entry. The core keeps relaying in userspace when
/// this happens; the allocation is never lost because of it.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("fast-path map is full")]
    MapFull,
    #[error("fast-path map update failed: {0}")]
    Update(String),
}

/// The fast path, as seen by the protocol core. Installing an entry that already exists
/// replaces it (that is how refreshes extend expiries); removing a missing entry is a no-op.
pub trait Datapath: Send {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError>;
    /// Removes the allocation and everything that hangs off it.
    fn remove_allocation(&mut self, flow: ClientFlow, relay: SocketAddr);
    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError>;
    fn remove_permission(&mut self, relay: SocketAddr, peer_ip: IpAddr);
    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError>;
    /// Removes channel `number` of the allocation on `relay`.
    fn remove_channel(&mut self, relay: SocketAddr, number: u16);
    /// Traffic relayed by the fast path for this allocation since it was installed.
    fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic;
}

/// A datapath that keeps the entries in memory and relays nothing itself: used by the
/// core's tests to see exactly what would be installed, and when XDP is off.
#[derive(Debug, Default)]
pub struct InMemoryDatapath {
    pub allocations: HashMap<SocketAddr, AllocationEntry>,
    pub permissions: HashMap<(SocketAddr, IpAddr), PermissionEntry>,
    pub channels: HashMap<(SocketAddr, u16), ChannelEntry>,
}

impl Datapath for InMemoryDatapath {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError> {
        self.allocations.insert(entry.relay, entry);
        Ok(())
    }

    fn remove_allocation(&mut self, _flow: ClientFlow, relay: SocketAddr) {
        self.allocations.remove(&relay);
        self.permissions.retain(|(r, _), _| *r != relay);
        self.channels.retain(|(r, _), _| *r != relay);
    }

    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        self.permissions.insert((entry.relay, entry.peer_ip), entry);
        Ok(())
    }

    fn remove_permission(&mut self, relay: SocketAddr, peer_ip: IpAddr) {
        self.permissions.remove(&(relay, peer_ip));
    }

    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError> {
        self.channels.insert((entry.relay, entry.number), entry);
        Ok(())
    }

    fn remove_channel(&mut self, relay: SocketAddr, number: u16) {
        self.channels.remove(&(relay, number));
    }

    fn relayed_traffic(&self, _relay: SocketAddr) -> RelayedTraffic {
        RelayedTraffic::default()
    }
}
