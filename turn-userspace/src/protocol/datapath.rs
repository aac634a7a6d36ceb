//! The fast path as the protocol core sees it: the commands the core emits, and the
//! [`FastPath`] that applies them to a [`Datapath`].
//!
//! The sans-IO core ([`crate::protocol::turn`]) never touches a map. Every change of the
//! state the fast path mirrors (allocations, permissions, channels) is queued as a
//! [`FastPathCommand`], drained with [`crate::protocol::turn::Server::poll_fast_path`] and
//! applied by the IO layer, in the order the core emitted them and before it sends the
//! success response that depends on them (RFC 8656 §9 and §12: the permission/channel
//! exists once the client sees success). The daemon's worker loop documents how it keeps
//! both promises with several workers.
//!
//! Two [`Datapath`]s exist: [`InMemoryDatapath`] (the model the core's tests inspect, and
//! the stand-in when XDP is off) and the BPF one in [`crate::bpf`], which writes the XDP
//! program's maps. Every entry carries its absolute expiry so the fast path stops relaying
//! on time even if userspace lags behind with its own expiry timers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How a client reaches the server (RFC 8656 §3.1): the transport of its 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    /// TURN over TCP: STUN messages and ChannelData framed on a byte stream (RFC 8656 §3.1).
    Tcp,
    /// TURN over TLS over TCP, framed as over TCP.
    Tls,
}

impl Transport {
    /// Every transport, in the order of [`Transport::index`].
    pub const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    /// A connection (TCP or TLS) rather than datagrams.
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }

    /// Its position in [`Transport::ALL`] (for per-transport tables).
    pub fn index(self) -> usize {
        match self {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        }
    }

    /// "udp", "tcp" or "tls": logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The client side of an allocation: RFC 8656 §2 "5-tuple", seen from the server. Over
/// TCP and TLS it names one connection (RFC 8656 §3.1: the allocation lives and dies with
/// it). Only UDP allocations ever enter the fast path: XDP relays UDP only, so peer data
/// for a stream allocation is passed up (no map entry matches) and relayed in userspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientFlow {
    /// The client's address as seen by the server (the server-reflexive address; behind a
    /// PROXY-protocol load balancer, the address the balancer reports).
    pub client: SocketAddr,
    /// The listening address the client sends to.
    pub listener: SocketAddr,
    pub transport: Transport,
}

impl ClientFlow {
    /// A client sending UDP datagrams from `client` to `listener`.
    pub fn udp(client: SocketAddr, listener: SocketAddr) -> ClientFlow {
        ClientFlow {
            client,
            listener,
            transport: Transport::Udp,
        }
    }
}

/// Everything the fast path needs to know about one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationEntry {
    pub flow: ClientFlow,
    /// The relayed transport address (the local address of the relay socket).
    pub relay: SocketAddr,
    pub expires_at: Instant,
    /// The allocation's bandwidth limit per direction, in bytes of application data per
    /// second (0: unlimited), as the core applies it ([`turn_common::bandwidth`]).
    pub bytes_per_second: u64,
}

/// A permission of one allocation for one peer IP (RFC 8656 §9: ports are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionEntry {
    pub flow: ClientFlow,
    pub relay: SocketAddr,
    pub peer_ip: IpAddr,
    /// The peer ports the permission covers, as the policy decided: all of them, or the
    /// relay port range for the relay's own addresses (see
    /// [`crate::protocol::policy::PeerPorts`]). Both paths check a Send indication's peer
    /// port against it.
    pub ports: PeerPortRange,
    pub expires_at: Instant,
}

/// An inclusive range of peer ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPortRange {
    pub first: u16,
    pub last: u16,
}

impl PeerPortRange {
    /// Every port: what a permission covers unless the policy limits it.
    pub const ALL: PeerPortRange = PeerPortRange {
        first: 0,
        last: u16::MAX,
    };

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl From<RangeInclusive<u16>> for PeerPortRange {
    fn from(range: RangeInclusive<u16>) -> Self {
        PeerPortRange {
            first: *range.start(),
            last: *range.end(),
        }
    }
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

/// Application data relayed for one allocation, by the fast path (read from its
/// counters) or by userspace (counted by the core).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayedTraffic {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

impl RelayedTraffic {
    fn plus(self, other: RelayedTraffic) -> RelayedTraffic {
        RelayedTraffic {
            to_peer_packets: self.to_peer_packets.saturating_add(other.to_peer_packets),
            to_peer_bytes: self.to_peer_bytes.saturating_add(other.to_peer_bytes),
            to_client_packets: self
                .to_client_packets
                .saturating_add(other.to_client_packets),
            to_client_bytes: self.to_client_bytes.saturating_add(other.to_client_bytes),
        }
    }
}

/// Why an allocation ended, for its usage line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Its lifetime ran out (RFC 8656 §7).
    Expired,
    /// The client sent a Refresh with LIFETIME 0 (RFC 8656 §8).
    DeletedByClient,
    /// Its TCP or TLS connection closed (RFC 8656 §3.1).
    ConnectionClosed,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndReason::Expired => "expired",
            EndReason::DeletedByClient => "deleted by client",
            EndReason::ConnectionClosed => "connection closed",
        })
    }
}

/// The userspace half of an ended allocation's usage line (what coturn operators find in
/// coturn's session-close lines). The fast path's counters vanish with its entries, so
/// the [`FastPath`] reads them while applying the removal, adds them and logs the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationUsage {
    /// Logged: operators bill and debug by it. Keys and passwords never are.
    pub username: String,
    pub lifetime: Duration,
    /// What the core relayed in userspace.
    pub userspace: RelayedTraffic,
    pub reason: EndReason,
}

/// One change of the state the fast path mirrors, in the order the core decided it.
/// Installing an entry that exists replaces it (that is how refreshes move expiries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastPathCommand {
    InstallAllocation(AllocationEntry),
    /// Removes the allocation and everything hanging off it; `usage` is set when the
    /// allocation ended (not when its relay socket could not be bound).
    RemoveAllocation {
        flow: ClientFlow,
        relay: SocketAddr,
        usage: Option<Box<AllocationUsage>>,
    },
    InstallPermission(PermissionEntry),
    RemovePermission {
        relay: SocketAddr,
        peer_ip: IpAddr,
    },
    InstallChannel(ChannelEntry),
    RemoveChannel {
        relay: SocketAddr,
        number: u16,
    },
    /// The relay's total bandwidth limit per direction, in bytes of application data per
    /// second (0: unlimited). Emitted once, before any allocation.
    LimitRelayBandwidth {
        bytes_per_second: u64,
    },
}

/// Why the fast path could not take an entry. The [`FastPath`] then hands the whole
/// allocation to userspace; the allocation is never lost because of it.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("fast-path map is full")]
    MapFull,
    #[error("fast-path map update failed: {0}")]
    Update(String),
}

/// A fast path's entry tables. Installing an entry that already exists replaces it;
/// removing a missing entry is a no-op. Only [`FastPath`] drives it in the daemon.
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
    /// Sets the relay's total bandwidth limit (0: unlimited).
    fn limit_relay_bandwidth(&mut self, bytes_per_second: u64) -> Result<(), DatapathError>;
}

/// The daemon picks its datapath at start-up (XDP or the in-memory stand-in).
impl<T: Datapath + ?Sized> Datapath for Box<T> {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError> {
        (**self).install_allocation(entry)
    }
    fn remove_allocation(&mut self, flow: ClientFlow, relay: SocketAddr) {
        (**self).remove_allocation(flow, relay);
    }
    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        (**self).install_permission(entry)
    }
    fn remove_permission(&mut self, relay: SocketAddr, peer_ip: IpAddr) {
        (**self).remove_permission(relay, peer_ip);
    }
    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError> {
        (**self).install_channel(entry)
    }
    fn remove_channel(&mut self, relay: SocketAddr, number: u16) {
        (**self).remove_channel(relay, number);
    }
    fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic {
        (**self).relayed_traffic(relay)
    }
    fn limit_relay_bandwidth(&mut self, bytes_per_second: u64) -> Result<(), DatapathError> {
        (**self).limit_relay_bandwidth(bytes_per_second)
    }
}

/// A datapath that keeps the entries in memory and relays nothing itself: the model the
/// core's tests inspect, and the stand-in when XDP is off.
#[derive(Debug, Default)]
pub struct InMemoryDatapath {
    pub allocations: HashMap<SocketAddr, AllocationEntry>,
    pub permissions: HashMap<(SocketAddr, IpAddr), PermissionEntry>,
    pub channels: HashMap<(SocketAddr, u16), ChannelEntry>,
    /// The relay's total bandwidth limit (0: unlimited).
    pub relay_bytes_per_second: u64,
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

    fn limit_relay_bandwidth(&mut self, bytes_per_second: u64) -> Result<(), DatapathError> {
        self.relay_bytes_per_second = bytes_per_second;
        Ok(())
    }
}

/// What the [`FastPath`] did besides applying commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathStats {
    /// Allocations handed to userspace because the fast path refused one of their entries.
    pub userspace_only_allocations: u64,
}

/// Applies the core's [`FastPathCommand`]s to a [`Datapath`], one at a time, in order.
///
/// It keeps one promise the core cannot keep alone: a refused install never makes the
/// fast path drop what userspace relays (a permission missing from the maps while its
/// allocation is there makes XDP drop the peer's datagrams, although userspace has the
/// permission). When any install for an allocation fails, the allocation and everything
/// hanging off it are removed from the fast path, and the allocation is remembered as
/// userspace-only until the core removes it: later commands for it are skipped. Without
/// any entry for its addresses, XDP passes all of its traffic to the userspace relay,
/// which behaves identically.
///
/// A permission for the relay's own addresses covers the relay ports only (hairpinning
/// between allocations); the XDP program checks a Send indication's peer port against
/// the permission's range and passes the ones outside it up to userspace, which discards
/// them. (Towards a local address the kernel never forwards anyway: `bpf_fib_lookup`
/// answers "not forwarded" and the stack delivers it.)
pub struct FastPath<D: Datapath> {
    datapath: D,
    /// Relayed address → the fast-path traffic it had relayed before it was handed to
    /// userspace (its counters vanish with its entries; the usage line still adds them).
    userspace_only: HashMap<SocketAddr, RelayedTraffic>,
    stats: FastPathStats,
}

impl<D: Datapath> FastPath<D> {
    pub fn new(datapath: D) -> Self {
        FastPath {
            datapath,
            userspace_only: HashMap::new(),
            stats: FastPathStats::default(),
        }
    }

    pub fn datapath(&self) -> &D {
        &self.datapath
    }

    pub fn stats(&self) -> FastPathStats {
        self.stats
    }

    /// Whether the allocation on `relay` is relayed in userspace only.
    pub fn is_userspace_only(&self, relay: SocketAddr) -> bool {
        self.userspace_only.contains_key(&relay)
    }

    /// Applies one command. Must be called in the order the core emitted the commands.
    pub fn apply(&mut self, command: FastPathCommand) {
        match command {
            FastPathCommand::InstallAllocation(entry) => {
                if !self.is_userspace_only(entry.relay) {
                    let result = self.datapath.install_allocation(entry);
                    self.keep_or_hand_over(entry.flow, entry.relay, result);
                }
            }
            FastPathCommand::RemoveAllocation { flow, relay, usage } => {
                let fast_path = match self.userspace_only.remove(&relay) {
                    Some(before) => before,
                    None => self.datapath.relayed_traffic(relay),
                };
                self.datapath.remove_allocation(flow, relay);
                if let Some(usage) = usage {
                    log_usage(flow, relay, &usage, fast_path);
                }
            }
            FastPathCommand::InstallPermission(entry) => {
                if !self.is_userspace_only(entry.relay) {
                    let result = self.datapath.install_permission(entry);
                    self.keep_or_hand_over(entry.flow, entry.relay, result);
                }
            }
            FastPathCommand::RemovePermission { relay, peer_ip } => {
                if !self.is_userspace_only(relay) {
                    self.datapath.remove_permission(relay, peer_ip);
                }
            }
            FastPathCommand::InstallChannel(entry) => {
                if !self.is_userspace_only(entry.relay) {
                    let result = self.datapath.install_channel(entry);
                    self.keep_or_hand_over(entry.flow, entry.relay, result);
                }
            }
            FastPathCommand::RemoveChannel { relay, number } => {
                if !self.is_userspace_only(relay) {
                    self.datapath.remove_channel(relay, number);
                }
            }
            FastPathCommand::LimitRelayBandwidth { bytes_per_second } => {
                if let Err(error) = self.datapath.limit_relay_bandwidth(bytes_per_second) {
                    // The program then relays without the total limit: say so loudly.
                    tracing::error!(%error, bytes_per_second, "the fast path refused the relay's bandwidth limit");
                }
            }
        }
    }

    /// After an install the fast path could not take: removes the allocation from the
    /// fast path and remembers it as userspace-only.
    fn keep_or_hand_over(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        result: Result<(), DatapathError>,
    ) {
        let Err(error) = result else {
            return;
        };
        tracing::warn!(%relay, client = %flow.client, %error, "the fast path refused an entry; the allocation is relayed in userspace from now on");
        let relayed = self.datapath.relayed_traffic(relay);
        self.datapath.remove_allocation(flow, relay);
        self.userspace_only.insert(relay, relayed);
        self.stats.userspace_only_allocations += 1;
    }
}

/// The usage line of an ended allocation: who, where, how long and how much was relayed
/// in userspace plus in the fast path.
fn log_usage(flow: ClientFlow, relay: SocketAddr, usage: &AllocationUsage, fast: RelayedTraffic) {
    let total = usage.userspace.plus(fast);
    tracing::info!(
        username = %usage.username,
        client = %flow.client,
        transport = %flow.transport,
        relay = %relay,
        lifetime_secs = usage.lifetime.as_secs(),
        to_peer_packets = total.to_peer_packets,
        to_peer_bytes = total.to_peer_bytes,
        to_client_packets = total.to_client_packets,
        to_client_bytes = total.to_client_bytes,
        fast_path_packets = fast.to_peer_packets.saturating_add(fast.to_client_packets),
        "allocation closed: {}",
        usage.reason
    );
}
