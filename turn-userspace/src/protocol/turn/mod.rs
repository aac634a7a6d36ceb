//! The sans-IO TURN server (RFC 8656), in the style of quinn-proto: the IO layer feeds
//! datagrams (or frames cut from a TCP/TLS stream) and time in, and drains [`Command`]s,
//! [`Transmit`]s and timeouts out. No sockets, clocks or global RNG: time comes in as
//! [`Now`], randomness from `R`.
//!
//! - [`Server::handle_client_datagram`]: STUN requests/indications and ChannelData from
//!   clients on a listening socket (RFC 8656 §5–§12). DONT-FRAGMENT (RFC 8656 §7.2,
//!   §11.2) is not supported: an Allocate carrying it gets 420, a Send indication carrying
//!   it is discarded, as the RFC says for servers that cannot set DF per datagram.
//! - Clients reach the server over UDP, TCP or TLS ([`Transport`] in the [`ClientFlow`]);
//!   the relayed transport is UDP whatever the client's (RFC 8656 §3.1, §7: a
//!   REQUESTED-TRANSPORT other than UDP gets 442). Over TCP and TLS the flow is the
//!   connection: [`Server::handle_connection_closed`] deletes its allocation. Stream
//!   allocations never enter the fast path (only their usage line passes through it), their
//!   responses are not cached (clients do not retransmit over reliable transports, RFC 8489
//!   §6.2.2), and their unauthenticated answers are not rate-limited (a connection's
//!   source cannot be spoofed, so there is nothing to reflect).
//! - [`Server::handle_peer_datagram`]: datagrams from peers on a relay socket (§11.3, §12.6).
//! - Relay data never allocates: it comes back as a [`Forward`] that points into the
//!   input packet or into the caller's reusable `out` buffer.
//! - State that the fast path mirrors is emitted as [`FastPathCommand`]s, queued before
//!   the success response that depends on them; on expiry or deletion their removal is
//!   queued. The IO layer applies them in order with a [`crate::protocol::datapath::FastPath`]
//!   before it sends the responses. The core itself never waits on a map.

mod allocation;
mod authenticate;
mod cache;
mod error;
mod lifecycle;
mod limiter;
mod operations;
mod relay;
mod requests;
mod response;
mod table;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::auth::Authenticator;
use crate::protocol::datapath::{ClientFlow, FastPathCommand, Transport};
use crate::protocol::policy::PeerPolicy;

use allocation::Reservation;
use cache::ResponseCache;
use limiter::AnswerLimiter;
use table::{AllocationId, Allocations};
use timers::Timers;
use turn_common::bandwidth::Bandwidth;

pub use error::TurnError;
pub use limiter::source_key;
pub use operations::{AllocationView, FamilyCounts};

/// One relay address family: the address relay sockets bind to and the one announced
/// in XOR-RELAYED-ADDRESS (they differ behind 1:1 NAT, e.g. cloud VMs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddress {
    pub bind: IpAddr,
    /// The public/external IP the clients see.
    pub advertised: IpAddr,
}

/// Server policy knobs (RFC 8656 §7.2, §8).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub realm: String,
    /// SOFTWARE attribute in every authenticated response (RFC 8489 §14.14), if set;
    /// unauthenticated answers leave it out to stay small.
    pub software: Option<String>,
    pub relay_v4: Option<RelayAddress>,
    pub relay_v6: Option<RelayAddress>,
    /// Relay ports handed out (default 49152..=65535).
    pub port_range: RangeInclusive<u16>,
    /// Lifetime when the client asks for less or nothing (600 s).
    pub default_lifetime: Duration,
    /// Upper bound of any lifetime (3600 s).
    pub max_lifetime: Duration,
    /// Allocations (and EVEN-PORT reservations) on the whole server (RFC 8656 §7.2: more
    /// → 508 Insufficient Capacity).
    pub max_allocations: usize,
    /// Allocations and EVEN-PORT reservations per user; 0 = unlimited (RFC 8656 §7.2:
    /// more → 486 Allocation Quota Reached). A time-limited username counts for its user
    /// part (coturn REST `expiry:user`, zrest without its expiry), so renewed credentials
    /// share one quota. Default 10, the common practice of coturn and eturnal
    /// deployments: a WebRTC client needs one or two allocations per call.
    pub max_allocations_per_user: usize,
    /// How long a permission lives after CreatePermission/ChannelBind (RFC 8656 §9: 300 s).
    pub permission_lifetime: Duration,
    /// How long a channel binding lives after ChannelBind (RFC 8656 §12: 600 s). It may be
    /// shorter than `permission_lifetime`; a channel relays only while both are alive.
    pub channel_lifetime: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            realm: "turn-relay.local".to_owned(),
            software: None,
            relay_v4: None,
            relay_v6: None,
            port_range: 49152..=65535,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            max_allocations: 16_384,
            max_allocations_per_user: DEFAULT_MAX_ALLOCATIONS_PER_USER,
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
        }
    }
}

/// Bounds on what one allocation, request or source may cost the server, each with a
/// safe default. Set with [`Server::with_limits`]; the XDP maps are sized from the
/// per-allocation caps, so in the fast path a map cannot fill up before the core says 508.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Permissions (peer IPs) one allocation may hold (RFC 8656 §9.1: more → 508
    /// Insufficient Capacity). eturnal's default; a WebRTC peer has a handful of
    /// candidate addresses.
    pub max_permissions_per_allocation: usize,
    /// Channel bindings one allocation may hold (RFC 8656 §12.1: more → 508).
    pub max_channels_per_allocation: usize,
    /// XOR-PEER-ADDRESS attributes one CreatePermission may carry, duplicates included
    /// (more → 400): bounds the work one request does.
    pub max_peers_per_request: usize,
    /// How long after its expiry a time-limited username (REST, zrest) may still be used
    /// on the allocation it created (clock skew between the credential service and the
    /// relay); afterwards its requests get 401.
    pub credential_expiry_grace: Duration,
    /// Error answers to unauthenticated requests (401 challenges, 400, …) per second and
    /// source (IPv4 address, IPv6 /64); 0 = unlimited. Beyond it they are dropped
    /// silently: the relay must not reflect floods at a spoofed source. A source that
    /// sent back a nonce issued to it (it receives our answers, so it is not spoofed) is
    /// not limited for the next 10 minutes.
    pub unauthenticated_answers_per_second: u32,
    /// How many such answers a source may get at once.
    pub unauthenticated_answers_burst: u32,
    /// Responses kept for retransmissions (RFC 8489 §6.3.1, 40 s each) per user: one
    /// user flooding requests cannot take the whole transaction cache from the others.
    pub max_cached_responses_per_user: usize,
    /// coturn's `max-bps`: bytes of application data per second one allocation may relay
    /// in each direction, in bursts of one second's worth; the rest is dropped. 0 =
    /// unlimited. Both relay paths apply the one rule of [`turn_common::bandwidth`].
    pub max_bytes_per_second_per_allocation: u64,
    /// coturn's `bps-capacity`: the same for all allocations together. 0 = unlimited.
    pub max_bytes_per_second_total: u64,
}

/// Default of [`ServerLimits::max_permissions_per_allocation`].
pub const DEFAULT_MAX_PERMISSIONS_PER_ALLOCATION: usize = 10;
/// Default of [`ServerLimits::max_channels_per_allocation`].
pub const DEFAULT_MAX_CHANNELS_PER_ALLOCATION: usize = 10;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_permissions_per_allocation: DEFAULT_MAX_PERMISSIONS_PER_ALLOCATION,
            max_channels_per_allocation: DEFAULT_MAX_CHANNELS_PER_ALLOCATION,
            max_peers_per_request: 16,
            credential_expiry_grace: Duration::from_secs(60),
            unauthenticated_answers_per_second: 20,
            unauthenticated_answers_burst: 50,
            max_cached_responses_per_user: 64,
            max_bytes_per_second_per_allocation: 0,
            max_bytes_per_second_total: 0,
        }
    }
}

/// Default of [`ServerConfig::max_allocations_per_user`].
pub const DEFAULT_MAX_ALLOCATIONS_PER_USER: usize = 10;

/// The current time, as a monotonic instant (timers) and as wall-clock unix seconds
/// (nonces and time-limited usernames).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub unix_secs: u64,
}

/// A datagram to relay right away. `from` is the local address to send from: a relay
/// address (towards a peer) or a listener address (towards a client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// How it leaves: UDP towards a peer; towards a client, the client's transport (over a
    /// stream, ChannelData must be padded to 4 bytes, RFC 8656 §12.5).
    pub transport: Transport,
    pub payload: Payload,
    /// The TTL (IPv4) or hop limit (IPv6) to send with, per [`relayed_hop_limit`]; None
    /// when the IO layer did not say what the datagram arrived with (the socket's
    /// default then).
    pub hop_limit: Option<u8>,
}

/// The one TTL / hop-limit rule of both relay paths (RFC 8656 §14, "preferred
/// behaviour"): a relayed datagram leaves with the TTL or hop limit it arrived with minus
/// one; one that arrived with 0 or 1 is not relayed. The XDP program decrements the
/// same way and passes such frames up to userspace, which drops them. The decrement is
/// what ends relay loops (two relays that are each other's peer and client), whichever
/// path a round goes through.
pub fn relayed_hop_limit(incoming: u8) -> Option<u8> {
    incoming.checked_sub(1).filter(|&outgoing| outgoing > 0)
}

/// Where a [`Forward`]'s bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// This range of the input packet (client → peer: the application data).
    Input(Range<usize>),
    /// All of the caller's `out` buffer (peer → client: framed as ChannelData or a Data
    /// indication).
    Output,
}

/// Socket management the IO layer must perform before sending queued transmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Bind a UDP socket on this relayed transport address (a *bind* address).
    OpenRelay { relay: SocketAddr },
    /// Close the relay socket of a deleted or expired allocation.
    CloseRelay { relay: SocketAddr },
}

/// A STUN message to send to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// The client's transport: over TCP and TLS the message goes on the flow's connection.
    pub transport: Transport,
    pub payload: Vec<u8>,
}

impl Transmit {
    /// The client flow it answers.
    pub fn flow(&self) -> ClientFlow {
        ClientFlow {
            client: self.to,
            listener: self.from,
            transport: self.transport,
        }
    }
}

/// Packets and bytes (application data) relayed in userspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

impl PacketCount {
    pub(super) fn add(&mut self, bytes: usize) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes as u64);
    }
}

/// Application data relayed in userspace, by direction and framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayedCounts {
    /// Client → peer via ChannelData.
    pub to_peer_channel_data: PacketCount,
    /// Client → peer via Send indications.
    pub to_peer_send: PacketCount,
    /// Peer → client via ChannelData.
    pub to_client_channel_data: PacketCount,
    /// Peer → client via Data indications.
    pub to_client_data_indication: PacketCount,
}

impl RelayedCounts {
    fn plus(self, other: RelayedCounts) -> RelayedCounts {
        let add = |a: PacketCount, b: PacketCount| PacketCount {
            packets: a.packets.saturating_add(b.packets),
            bytes: a.bytes.saturating_add(b.bytes),
        };
        RelayedCounts {
            to_peer_channel_data: add(self.to_peer_channel_data, other.to_peer_channel_data),
            to_peer_send: add(self.to_peer_send, other.to_peer_send),
            to_client_channel_data: add(self.to_client_channel_data, other.to_client_channel_data),
            to_client_data_indication: add(
                self.to_client_data_indication,
                other.to_client_data_indication,
            ),
        }
    }
}

/// The allocations and userspace relay counters of the clients of one transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub allocations: usize,
    pub relayed: RelayedCounts,
}

/// A snapshot of the server's state and userspace relay counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub allocations: usize,
    pub permissions: usize,
    pub channels: usize,
    /// Client → peer via ChannelData (all transports).
    pub to_peer_channel_data: PacketCount,
    /// Client → peer via Send indications (all transports).
    pub to_peer_send: PacketCount,
    /// Peer → client via ChannelData (all transports).
    pub to_client_channel_data: PacketCount,
    /// Peer → client via Data indications (all transports).
    pub to_client_data_indication: PacketCount,
    /// Allocations and relayed data per client transport, indexed by
    /// [`Transport::index`].
    pub by_transport: [TransportStats; 3],
    /// Relay data dropped (no allocation, permission or channel; malformed; over a
    /// bandwidth limit).
    pub dropped_packets: u64,
    /// Relay data dropped for being over the allocation's or the relay's bandwidth limit,
    /// client → peer and peer → client (application data bytes).
    pub rate_limited_to_peer: PacketCount,
    pub rate_limited_to_client: PacketCount,
    /// Answers to unauthenticated requests not sent: their source was over
    /// [`ServerLimits::unauthenticated_answers_per_second`].
    pub unauthenticated_answers_dropped: u64,
}

impl ServerStats {
    /// The figures of the clients of `transport`.
    pub fn transport(&self, transport: Transport) -> TransportStats {
        self.by_transport
            .get(transport.index())
            .copied()
            .unwrap_or_default()
    }
}

/// The fast-path commands not yet drained. Only UDP allocations enter the fast path (XDP
/// relays UDP): a stream allocation's installs and removals are not queued, except its
/// RemoveAllocation, which removes nothing and carries its usage line.
#[derive(Debug, Default)]
struct FastPathQueue(VecDeque<FastPathCommand>);

impl FastPathQueue {
    /// Queues `command` about an allocation of `flow`.
    fn push(&mut self, flow: ClientFlow, command: FastPathCommand) {
        if !flow.transport.is_stream()
            || matches!(command, FastPathCommand::RemoveAllocation { .. })
        {
            self.0.push_back(command);
        }
    }
}

/// How long a cached response answers retransmissions (RFC 8489 §6.3.1: 40 s covers the
/// whole retransmission window over UDP).
const TRANSACTION_CACHE_TIME: Duration = Duration::from_secs(40);
/// Upper bound of cached responses, so a flood cannot exhaust memory (each user gets at
/// most [`ServerLimits::max_cached_responses_per_user`] of them).
const TRANSACTION_CACHE_LIMIT: usize = 65_536;
/// RFC 8656 §12: an expired channel's number and peer are not rebound to anything else
/// for 5 minutes, so late ChannelData cannot reach the wrong peer.
const CHANNEL_REBIND_COOL_OFF: Duration = Duration::from_secs(300);
/// RFC 8656 §7.2 (EVEN-PORT with R bit): a reserved port is kept "about 30 seconds".
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

fn answer_limiter(limits: &ServerLimits) -> AnswerLimiter {
    AnswerLimiter::new(
        limits.unauthenticated_answers_per_second,
        limits.unauthenticated_answers_burst,
    )
}

/// The TURN server state machine. See the module documentation.
pub struct Server<R: rand::RngCore> {
    config: ServerConfig,
    limits: ServerLimits,
    answer_limiter: AnswerLimiter,
    auth: Authenticator,
    policy: PeerPolicy,
    rng: R,
    /// By client flow and by relay (bind) address.
    allocations: Allocations,
    /// Allocations and reservations per quota user; its keys are shared with them.
    allocations_per_user: HashMap<Arc<str>, usize>,
    /// RESERVATION-TOKEN → reserved relay address (RFC 8656 §7.2, EVEN-PORT R bit).
    reservations: HashMap<u64, Reservation>,
    reserved_relays: HashMap<SocketAddr, u64>,
    /// Responses kept for retransmissions, with their own expiry.
    responses: ResponseCache,
    /// Each allocation's next deadline (see [`allocation::Allocation::next_deadline`]).
    allocation_timers: Timers<AllocationId>,
    /// RESERVATION-TOKEN expiries.
    reservation_timers: Timers<u64>,
    commands: VecDeque<Command>,
    fast_path: FastPathQueue,
    transmits: VecDeque<Transmit>,
    /// Userspace relay counters per client transport ([`Transport::index`]).
    relayed: [RelayedCounts; 3],
    /// Counters not kept per transport (state counts are computed by [`Self::stats`]).
    stats: ServerStats,
    /// Draining: new allocations are sent to `alternates` (300) or refused (508).
    drain: operations::Drain,
    /// The relay's total bandwidth limit and its buckets ([`turn_common::bandwidth`]).
    relay_bandwidth: Bandwidth,
    /// The instant the bandwidth buckets count their nanoseconds from (the first one
    /// the server was given).
    clock_origin: Option<Instant>,
}

impl<R: rand::RngCore> Server<R> {
    pub fn new(config: ServerConfig, mut auth: Authenticator, policy: PeerPolicy, rng: R) -> Self {
        auth.index_userhashes(&config.realm);
        let policy = policy.with_relay_ports(config.port_range.clone());
        let limits = ServerLimits::default();
        Server {
            config,
            answer_limiter: answer_limiter(&limits),
            limits,
            auth,
            policy,
            rng,
            allocations: Allocations::default(),
            allocations_per_user: HashMap::new(),
            reservations: HashMap::new(),
            reserved_relays: HashMap::new(),
            responses: ResponseCache::default(),
            allocation_timers: Timers::default(),
            reservation_timers: Timers::default(),
            commands: VecDeque::new(),
            fast_path: FastPathQueue::default(),
            transmits: VecDeque::new(),
            relayed: [RelayedCounts::default(); 3],
            stats: ServerStats::default(),
            drain: operations::Drain::default(),
            relay_bandwidth: Bandwidth::UNLIMITED,
            clock_origin: None,
        }
    }

    /// Replaces the default [`ServerLimits`].
    /// A total bandwidth limit is queued for the fast path right away, before anything
    /// that could use it.
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.answer_limiter = answer_limiter(&limits);
        if limits.max_bytes_per_second_total != self.relay_bandwidth.bytes_per_second {
            self.relay_bandwidth = Bandwidth::new(limits.max_bytes_per_second_total);
            self.fast_path
                .0
                .push_back(FastPathCommand::LimitRelayBandwidth {
                    bytes_per_second: limits.max_bytes_per_second_total,
                });
        }
        self.limits = limits;
        self
    }

    /// IO must drain commands BEFORE transmits after every `handle_*` call.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next change for the fast path. IO must apply them in this order, and all that
    /// were queued before a transmit before sending that transmit (see the module docs).
    pub fn poll_fast_path(&mut self) -> Option<FastPathCommand> {
        self.fast_path.0.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The earliest instant at which [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.allocation_timers.next_deadline(),
            self.reservation_timers.next_deadline(),
            self.responses.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// How many responses are cached for retransmissions.
    #[cfg(test)]
    pub(super) fn cached_responses(&self) -> usize {
        self.responses.len()
    }

    /// How many expiry deadlines are armed: every allocation's, permission's, channel's,
    /// cool-off's, reservation's and cached response's. The timers hold them in one entry
    /// per allocation (its earliest), one per reservation and one per cached response.
    #[cfg(test)]
    pub(super) fn armed_timers(&self) -> usize {
        let allocations: usize = self
            .allocations
            .iter()
            .map(|allocation| {
                1 + allocation.permissions.len()
                    + allocation.channels.len()
                    + allocation.cooling_channels.iter().count()
            })
            .sum();
        assert_eq!(self.allocation_timers.len(), self.allocations.len());
        assert_eq!(self.reservation_timers.len(), self.reservations.len());
        allocations + self.reservations.len() + self.responses.len()
    }

    pub fn stats(&self) -> ServerStats {
        let mut stats = self.stats;
        stats.allocations = self.allocations.len();
        stats.permissions = self.allocations.iter().map(|a| a.permissions.len()).sum();
        stats.channels = self.allocations.iter().map(|a| a.channels.len()).sum();
        for (transport, relayed) in Transport::ALL.into_iter().zip(self.relayed) {
            if let Some(slot) = stats.by_transport.get_mut(transport.index()) {
                slot.relayed = relayed;
            }
        }
        for allocation in self.allocations.iter() {
            if let Some(slot) = stats
                .by_transport
                .get_mut(allocation.flow.transport.index())
            {
                slot.allocations += 1;
            }
        }
        let total = self
            .relayed
            .iter()
            .fold(RelayedCounts::default(), |total, counts| {
                total.plus(*counts)
            });
        stats.to_peer_channel_data = total.to_peer_channel_data;
        stats.to_peer_send = total.to_peer_send;
        stats.to_client_channel_data = total.to_client_channel_data;
        stats.to_client_data_indication = total.to_client_data_indication;
        stats
    }
}
