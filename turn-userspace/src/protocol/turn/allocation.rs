//! Per-allocation state (RFC 8656 §2.2, §5): relayed address, lifetime, the credentials
//! it was created with, permissions and channel bindings.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use turn_common::bandwidth::Bandwidth;

use crate::protocol::datapath::{ClientFlow, RelayedTraffic};
use crate::protocol::policy::PeerPorts;
use crate::protocol::stun::{PasswordAlgorithm, TransactionId};

use super::authenticate::IntegrityKind;
use super::PacketCount;

/// A permission (RFC 8656 §9): for which peer IP, until when, and which ports of it the
/// policy allows (all, or the relay ports of the relay's own address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Permission {
    pub(super) peer: IpAddr,
    pub(super) expires_at: Instant,
    pub(super) ports: PeerPorts,
}

/// A channel binding (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Channel {
    pub(super) number: u16,
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
    pub(super) number: u16,
    pub(super) peer: SocketAddr,
    pub(super) until: Instant,
}

/// An allocation's channels in their cool-off, one per number: rare (a channel must
/// expire), so a single pointer while there are none.
#[derive(Debug, Default)]
#[expect(
    clippy::box_collection,
    reason = "one pointer in every allocation, where a Vec would be three words"
)]
pub(super) struct CoolingChannels(Option<Box<Vec<CoolingChannel>>>);

impl CoolingChannels {
    pub(super) fn iter(&self) -> impl Iterator<Item = &CoolingChannel> + '_ {
        self.0.iter().flat_map(|cooling| cooling.iter())
    }

    /// Starts the cool-off of channel `cooling.number`, replacing an earlier one.
    pub(super) fn start(&mut self, cooling: CoolingChannel) {
        self.end(cooling.number);
        self.0.get_or_insert_default().push(cooling);
    }

    /// Ends the cool-off of channel `number`, if it has one.
    pub(super) fn end(&mut self, number: u16) {
        if let Some(cooling) = &mut self.0 {
            cooling.retain(|cooling| cooling.number != number);
            if cooling.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// The long-term key a request was verified with (RFC 8489 §9.2.2): 16 bytes (MD5) or
/// 32 (SHA-256), kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    bytes: [u8; 32],
    len: u8,
}

impl Key {
    /// None for a key longer than a SHA-256 digest (no password algorithm makes one).
    pub(super) fn new(key: &[u8]) -> Option<Key> {
        let mut bytes = [0; 32];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(Key {
            bytes,
            len: u8::try_from(key.len()).ok()?,
        })
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

/// Keys never appear in logs.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.len)
    }
}

/// What an allocation's next deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// The allocation's own lifetime (RFC 8656 §7).
    Allocation,
    Permission(IpAddr),
    Channel(u16),
    /// The end of channel `number`'s cool-off.
    CoolOff(u16),
}

/// One allocation. Its permissions and channels are short lists, searched linearly: the
/// core caps them per allocation ([`super::ServerLimits`], 10 each by default) and a
/// WebRTC client holds one to a handful; the first of each is kept inline.
#[derive(Debug)]
pub(super) struct Allocation {
    /// The client's 5-tuple (RFC 8656 §2).
    pub(super) flow: ClientFlow,
    /// Relayed transport address: bind IP + port (what the relay socket binds to).
    pub(super) relay: SocketAddr,
    pub(super) created_at: Instant,
    pub(super) expires_at: Instant,
    /// The deadline armed for it in the server's timers: the earliest of
    /// [`Allocation::next_deadline`] when it was last armed; None while being expired.
    pub(super) armed: Option<Instant>,
    /// RFC 8656 §5: later requests must use the same USERNAME (else 441)…
    pub(super) username: Arc<str>,
    /// Whom the allocation quota counts this allocation for (shared with the quota table
    /// and the user's other allocations).
    pub(super) quota_user: Arc<str>,
    /// When its time-limited username expires (unix seconds): after that (and a grace),
    /// the allocation can no longer be used.
    pub(super) credential_expiry: Option<u64>,
    /// …and are verified with the key the allocation was created with.
    pub(super) key: Key,
    pub(super) password_algorithm: PasswordAlgorithm,
    pub(super) integrity: IntegrityKind,
    /// The Allocate transaction, to find its queued success if the relay cannot bind.
    pub(super) allocate_transaction: TransactionId,
    /// A port this allocation reserved for a later RESERVATION-TOKEN (EVEN-PORT R bit).
    pub(super) reservation_token: Option<u64>,
    /// One per peer IP (RFC 8656 §9: keyed by IP, ports ignored).
    pub(super) permissions: SmallVec<[Permission; 1]>,
    /// One per channel number and one per peer transport address (RFC 8656 §12).
    pub(super) channels: SmallVec<[Channel; 1]>,
    /// Expired channel numbers still cooling off, one per number.
    pub(super) cooling_channels: CoolingChannels,
    pub(super) userspace_traffic: UserspaceTraffic,
    /// Its bandwidth limit and the buckets of what userspace relays for it.
    pub(super) bandwidth: Bandwidth,
}

impl Allocation {
    pub(super) fn has_permission(&self, peer: IpAddr, now: Instant) -> bool {
        self.live_permission(peer, now).is_some()
    }

    /// The permission for `peer`, live or not yet expired by the timers.
    pub(super) fn permission(&self, peer: IpAddr) -> Option<&Permission> {
        self.permissions
            .iter()
            .find(|permission| permission.peer == peer)
    }

    /// The ports a live permission for `peer` covers.
    pub(super) fn live_permission(&self, peer: IpAddr, now: Instant) -> Option<PeerPorts> {
        self.permission(peer)
            .filter(|permission| permission.expires_at > now)
            .map(|permission| permission.ports)
    }

    /// Channel `number`, live or not yet expired by the timers.
    pub(super) fn channel(&self, number: u16) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|channel| channel.number == number)
    }

    /// The channel bound to `peer`, live or not yet expired by the timers.
    fn channel_bound_to(&self, peer: SocketAddr) -> Option<&Channel> {
        self.channels.iter().find(|channel| channel.peer == peer)
    }

    /// The live channel bound to `peer`, if any.
    pub(super) fn channel_for_peer(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channel_bound_to(peer)
            .filter(|channel| channel.expires_at > now)
            .map(|channel| channel.number)
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
            .channel(number)
            .is_some_and(|channel| channel.peer != peer);
        let peer_taken = self
            .channel_bound_to(peer)
            .is_some_and(|channel| channel.number != number);
        let cooling_conflict = self.cooling_channels.iter().any(|cooling| {
            let same_number = cooling.number == number;
            let same_peer = cooling.peer == peer;
            cooling.until > now && same_number != same_peer
        });
        number_taken || peer_taken || cooling_conflict
    }

    /// The live peer of channel `number`, if any.
    pub(super) fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channel(number)
            .filter(|channel| channel.expires_at > now)
            .map(|channel| channel.peer)
    }

    /// Creates or refreshes the permission for `permission.peer`.
    pub(super) fn set_permission(&mut self, permission: Permission) {
        replace_or_push(&mut self.permissions, permission, |existing| {
            existing.peer == permission.peer
        });
    }

    /// Binds or refreshes channel `channel.number` (the caller checked that it does not
    /// conflict: a channel with this number is bound to the same peer); its cool-off, if
    /// any, ends.
    pub(super) fn bind_channel(&mut self, channel: Channel) {
        replace_or_push(&mut self.channels, channel, |existing| {
            existing.number == channel.number
        });
        self.cooling_channels.end(channel.number);
    }

    /// Every deadline of the allocation, with what it is for.
    fn deadlines(&self) -> impl Iterator<Item = (Instant, Due)> + '_ {
        let permissions = self
            .permissions
            .iter()
            .map(|permission| (permission.expires_at, Due::Permission(permission.peer)));
        let channels = self
            .channels
            .iter()
            .map(|channel| (channel.expires_at, Due::Channel(channel.number)));
        let cooling = self
            .cooling_channels
            .iter()
            .map(|cooling| (cooling.until, Due::CoolOff(cooling.number)));
        std::iter::once((self.expires_at, Due::Allocation))
            .chain(permissions)
            .chain(channels)
            .chain(cooling)
    }

    /// The earliest of its deadlines: when the timers must look at it next.
    pub(super) fn next_deadline(&self) -> Instant {
        self.deadlines()
            .map(|(at, _)| at)
            .min()
            .unwrap_or(self.expires_at)
    }

    /// The earliest deadline at or before `now`, if any; on a tie the allocation's own
    /// expiry comes first (it ends everything else).
    pub(super) fn next_due(&self, now: Instant) -> Option<Due> {
        self.deadlines()
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, due)| (*at, *due != Due::Allocation))
            .map(|(_, due)| due)
    }
}

/// Replaces the element of `list` that `same` finds, or appends `item`.
fn replace_or_push<T>(list: &mut SmallVec<[T; 1]>, item: T, same: impl Fn(&T) -> bool) {
    match list.iter_mut().find(|existing| same(existing)) {
        Some(existing) => *existing = item,
        None => list.push(item),
    }
}

/// A port held back for the odd half of an EVEN-PORT pair (RFC 8656 §7.2). It counts
/// against the quota of the user whose Allocate reserved it until it is claimed or
/// expires.
#[derive(Debug, Clone)]
pub(super) struct Reservation {
    pub(super) relay: SocketAddr,
    pub(super) expires_at: Instant,
    pub(super) quota_user: Arc<str>,
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
