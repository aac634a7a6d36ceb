//! What an operator changes or reads while the server runs, without touching live
//! allocations:
//!
//! - draining: a new Allocate gets 300 Try Alternate with an ALTERNATE-SERVER (RFC 8489
//!   §10, §14.15; RFC 8656 §7.2), round robin over the alternates of the client's address
//!   family, or 508 when there is none; everything else goes on as before;
//! - reloading: the credentials and the peer policy are replaced; allocations keep the
//!   key they were created with, and the next permission is checked against the new policy;
//! - a read-only view of every allocation, with no secret in it.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::protocol::auth::Authenticator;
use crate::protocol::datapath::ClientFlow;
use crate::protocol::policy::PeerPolicy;

use super::{PacketCount, Server, TurnError};

/// The drain state: whether new allocations are turned away, and where to.
#[derive(Debug, Default)]
pub(super) struct Drain {
    draining: bool,
    alternates: Vec<SocketAddr>,
    /// Round-robin position (over the alternates of one family, taken modulo).
    next: usize,
}

/// One allocation as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationView<'a> {
    pub flow: ClientFlow,
    /// The USERNAME that created it.
    pub username: &'a str,
    /// The relay socket's (bind) address.
    pub relay: SocketAddr,
    /// The relayed transport address announced to the client (XOR-RELAYED-ADDRESS).
    pub relayed: SocketAddr,
    pub created_at: Instant,
    pub permissions: usize,
    pub channels: usize,
    /// Relayed in userspace (the fast path counts its own share).
    pub userspace_to_peer: PacketCount,
    pub userspace_to_client: PacketCount,
}

/// Allocations by relayed address family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyCounts {
    pub ipv4: usize,
    pub ipv6: usize,
}

impl<R: rand::RngCore> Server<R> {
    /// Starts or stops draining (restund's drain module). Existing allocations are not
    /// affected: Refresh, CreatePermission, ChannelBind and relaying go on.
    pub fn set_draining(&mut self, draining: bool) {
        self.drain.draining = draining;
    }

    pub fn draining(&self) -> bool {
        self.drain.draining
    }

    /// The relays a draining server sends new allocations to. The caller leaves this
    /// server itself out.
    pub fn set_alternate_servers(&mut self, alternates: Vec<SocketAddr>) {
        self.drain.alternates = alternates;
    }

    /// Replaces the credentials (users, REST and zrest secrets, nonce settings).
    /// Allocations keep the key they were created with.
    pub fn set_authenticator(&mut self, mut auth: Authenticator) {
        auth.index_userhashes(&self.config.realm);
        self.auth = auth;
    }

    /// Replaces the peer policy; it applies to the next CreatePermission, ChannelBind or
    /// Send indication, not to permissions already granted.
    pub fn set_peer_policy(&mut self, policy: PeerPolicy) {
        self.policy = policy.with_relay_ports(self.config.port_range.clone());
    }

    /// While draining, what a new Allocate from `client` gets instead of an allocation:
    /// 300 with the next alternate of its address family (RFC 8489 §14.15: "the IP
    /// address family MUST be identical to that of the source IP address of the request"),
    /// else 508. None when not draining.
    pub(super) fn turn_away(&mut self, client: IpAddr) -> Option<TurnError> {
        if !self.drain.draining {
            return None;
        }
        let same_family: Vec<SocketAddr> = self
            .drain
            .alternates
            .iter()
            .filter(|alternate| alternate.is_ipv4() == client.is_ipv4())
            .copied()
            .collect();
        let Some(count) = std::num::NonZeroUsize::new(same_family.len()) else {
            return Some(TurnError::InsufficientCapacity);
        };
        let alternate = same_family.get(self.drain.next % count)?;
        self.drain.next = self.drain.next.wrapping_add(1);
        Some(TurnError::TryAlternate(*alternate))
    }

    /// Every allocation, in no particular order.
    pub fn allocations(&self) -> impl Iterator<Item = AllocationView<'_>> + '_ {
        self.allocations.iter().map(|allocation| {
            let advertised = [self.config.relay_v4, self.config.relay_v6]
                .into_iter()
                .flatten()
                .find(|relay| relay.bind == allocation.relay.ip())
                .map_or(allocation.relay.ip(), |relay| relay.advertised);
            AllocationView {
                flow: allocation.flow,
                username: &allocation.username,
                relay: allocation.relay,
                relayed: SocketAddr::new(advertised, allocation.relay.port()),
                created_at: allocation.created_at,
                permissions: allocation.permissions.len(),
                channels: allocation.channels.len(),
                userspace_to_peer: allocation.userspace_traffic.to_peer,
                userspace_to_client: allocation.userspace_traffic.to_client,
            }
        })
    }

    /// How many allocations relay over IPv4 and over IPv6.
    pub fn allocations_by_family(&self) -> FamilyCounts {
        let ipv4 = self
            .allocations
            .iter()
            .filter(|allocation| allocation.relay.is_ipv4())
            .count();
        FamilyCounts {
            ipv4,
            ipv6: self.allocations.len() - ipv4,
        }
    }
}
