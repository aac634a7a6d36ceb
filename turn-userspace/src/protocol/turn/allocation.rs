//! Per-allocation state (RFC 8656 §2.2, §5): relayed address, lifetime, the credentials
//! it was created with, permissions and channel bindings.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use turn_common::bandwidth::Bandwidth;

use crate::protocol::datapath::RelayedTraffic;
use crate::protocol::policy::PeerPorts;
use crate::protocol::stun::{PasswordAlgorithm, TransactionId};

use super::authenticate::IntegrityKind;
use super::PacketCount;

/// A permission (RFC 8656 §9): until when, and which ports of the peer IP the policy
/// allows (all, or the relay ports of the relay's own address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Permission {
    pub(super) expires_at: Instant,
    pub(super) ports: PeerPorts,
}

/// A channel binding (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Channel {
    pub(super) peer: SocketAddr,
    pub(super) expires_at: Instant,
}

/// Application data this allocation relayed in userspace, for the usage log line when it
/// ends (the fast path counts its own share).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UserspaceTraffic {
    pub(super) to_peer: PacketCount,
    pub(super) to_client: PacketCount,
}

impl From<UserspaceTraffic> for RelayedTraffic {
    fn from(traffic: UserspaceTraffic) -> Self {
        RelayedTraffic {
            to_peer_packets: traffic.to_peer.packets,
            to_peer_bytes: traffic.to_peer.bytes,
            to_client_packets: traffic.to_client.packets,
            to_client_bytes: traffic.to_client.bytes,
        }
    }
}

/// An expired channel binding in its cool-off (RFC 8656 §12): until `until`, neither its
/// number nor its peer may be bound to anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CoolingChannel {
    pub(super) peer: SocketAddr,
    pub(super) until: Instant,
}

#[derive(Debug)]
pub(super) struct Allocation {
    /// Relayed transport address: bind IP + port (what the relay socket binds to).
    pub(super) relay: SocketAddr,
    pub(super) created_at: Instant,
    pub(super) expires_at: Instant,
    /// RFC 8656 §5: later requests must use the same USERNAME (else 441)…
    pub(super) username: String,
    /// Whom the allocation quota counts this allocation for.
    pub(super) quota_user: String,
    /// When its time-limited username expires (unix seconds): after that (and a grace),
    /// the allocation can no longer be used.
    pub(super) credential_expiry: Option<u64>,
    /// …and are verified with the key the allocation was created with.
    pub(super) key: Vec<u8>,
    pub(super) password_algorithm: PasswordAlgorithm,
    pub(super) integrity: IntegrityKind,
    /// The Allocate transaction, to find its queued success if the relay cannot bind.
    pub(super) allocate_transaction: TransactionId,
    /// A port this allocation reserved for a later RESERVATION-TOKEN (EVEN-PORT R bit).
    pub(super) reservation_token: Option<u64>,
    /// Peer IP → permission (RFC 8656 §9: keyed by IP, ports ignored).
    pub(super) permissions: HashMap<IpAddr, Permission>,
    pub(super) channels: HashMap<u16, Channel>,
    pub(super) channel_by_peer: HashMap<SocketAddr, u16>,
    /// Expired channel numbers still cooling off.
    pub(super) cooling_channels: HashMap<u16, CoolingChannel>,
    pub(super) userspace_traffic: UserspaceTraffic,
    /// Its bandwidth limit and the buckets of what userspace relays for it.
    pub(super) bandwidth: Bandwidth,
}

impl Allocation {
    pub(super) fn has_permission(&self, peer: IpAddr, now: Instant) -> bool {
        self.live_permission(peer, now).is_some()
    }

    /// The ports a live permission for `peer` covers.
    pub(super) fn live_permission(&self, peer: IpAddr, now: Instant) -> Option<PeerPorts> {
        self.permissions
            .get(&peer)
            .filter(|permission| permission.expires_at > now)
            .map(|permission| permission.ports)
    }

    /// The live channel bound to `peer`, if any.
    pub(super) fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_by_peer.get(&peer)?;
        let channel = self.channels.get(&number)?;
        (channel.expires_at > now).then_some(number)
    }

    /// RFC 8656 §12.1: whether binding `number` to `peer` would rebind a channel number to
    /// another peer or a peer to another number, counting bindings in their cool-off.
    pub(super) fn channel_bind_conflicts(
        &self,
        number: u16,
        peer: SocketAddr,
        now: Instant,
    ) -> bool {
        let number_taken = self
            .channels
            .get(&number)
            .is_some_and(|channel| channel.peer != peer);
        let peer_taken = self
            .channel_by_peer
            .get(&peer)
            .is_some_and(|&bound| bound != number);
        let cooling_conflict = self
            .cooling_channels
            .iter()
            .any(|(&cooling_number, cooling)| {
                let same_number = cooling_number == number;
                let same_peer = cooling.peer == peer;
                cooling.until > now && same_number != same_peer
            });
        number_taken || peer_taken || cooling_conflict
    }

    /// The live peer of channel `number`, if any.
    pub(super) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|channel| channel.expires_at > now)
            .map(|channel| channel.peer)
    }
}

/// A port held back for the odd half of an EVEN-PORT pair (RFC 8656 §7.2). It counts
/// against the quota of the user whose Allocate reserved it until it is claimed or
/// expires.
#[derive(Debug, Clone)]
pub(super) struct Reservation {
    pub(super) relay: SocketAddr,
    pub(super) expires_at: Instant,
    pub(super) quota_user: String,
}

/// RFC 8656 §7.2 and §8: the lesser of the requested and the maximum lifetime, but never
/// less than the default (also when no LIFETIME was sent).
pub(super) fn granted_lifetime(
    requested: Option<u32>,
    default: Duration,
    max: Duration,
) -> Duration {
    match requested {
        Some(seconds) => Duration::from_secs(u64::from(seconds))
            .min(max)
            .max(default.min(max)),
        None => default.min(max),
    }
}
