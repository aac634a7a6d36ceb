//! The userspace relay hot path (RFC 8656 §11 Send/Data, §12 ChannelData). No heap
//! allocation per packet: client → peer data is forwarded as a range of the input, peer →
//! client data is framed into the caller's reusable buffer. Bandwidth limits apply the
//! rule of [`turn_common::bandwidth`] as the XDP program does, to what passes every other
//! check, just before it is relayed.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use turn_common::bandwidth::{take_within, TO_CLIENT, TO_PEER};

use crate::protocol::datapath::{ClientFlow, Transport};
use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::channel_data::{self, ChannelData};
use crate::protocol::stun::{Class, Message, MessageBuilder, Method, TransactionId};

use super::allocation::Allocation;
use super::{relayed_hop_limit, Forward, PacketCount, Payload, RelayedCounts, Server};

/// Bytes a Data indication adds around the data: STUN header, XOR-PEER-ADDRESS (IPv6),
/// DATA header and at most 3 bytes of padding (RFC 8656 §11.3).
const DATA_INDICATION_OVERHEAD: usize = crate::protocol::stun::HEADER_LEN + 24 + 4 + 3;

impl<R: rand::RngCore> Server<R> {
    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer, while both
    /// the channel and the peer's permission are alive.
    pub(super) fn relay_channel_data_from_client(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        packet: &[u8],
        hop_limit: Option<u8>,
    ) -> Option<Forward> {
        self.forward_to_peer(
            now,
            flow,
            hop_limit,
            |allocation| {
                let (message, range) =
                    ChannelData::parse(packet).zip(ChannelData::data_range(packet))?;
                Some((allocation.channel_peer(message.number, now)?, range))
            },
            |counts| &mut counts.to_peer_channel_data,
        )
    }

    /// RFC 8656 §11.2: a Send indication's DATA goes to XOR-PEER-ADDRESS when a permission
    /// exists; otherwise it is silently discarded (indications are never answered).
    /// Permissions only exist for peers the policy allowed. An indication with unknown
    /// comprehension-required attributes is discarded (RFC 8489 §6.3.2), and so is one
    /// with DONT-FRAGMENT, which this server does not support (RFC 8656 §11.2).
    pub(super) fn relay_send_indication(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        message: &Message,
        hop_limit: Option<u8>,
    ) -> Option<Forward> {
        let understood =
            message.unknown_comprehension_required().is_empty() && !message.dont_fragment();
        self.forward_to_peer(
            now,
            flow,
            hop_limit,
            |allocation| {
                let peer = message.xor_peer_address().ok()??;
                let same_family = peer.is_ipv4() == allocation.relay.is_ipv4();
                if !(understood && same_family) {
                    return None;
                }
                Some((peer, message.data_range()?))
            },
            |counts| &mut counts.to_peer_send,
        )
    }

    /// Client → peer data of `flow`'s allocation: `route` names the peer and the data's
    /// range in the input packet; it is forwarded while the peer's permission lives (RFC
    /// 8656 §9) and covers the peer's port (the relay's own addresses: relay ports only)
    /// and its hop limit allows (RFC 8656 §14), and counted in `counter` and the
    /// allocation, or counted as dropped.
    fn forward_to_peer(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        hop_limit: Option<u8>,
        route: impl FnOnce(&Allocation) -> Option<(SocketAddr, Range<usize>)>,
        counter: fn(&mut RelayedCounts) -> &mut PacketCount,
    ) -> Option<Forward> {
        let now_ns = bandwidth_clock(&mut self.clock_origin, now);
        let policy = &self.policy;
        let relay_bandwidth = &mut self.relay_bandwidth;
        let rate_limited = &mut self.stats.rate_limited_to_peer;
        let forward = self.allocations.get_mut(&flow).and_then(|allocation| {
            let hop_limit = outgoing_hop_limit(hop_limit)?;
            let (peer, range) = route(allocation)?;
            let ports = allocation.live_permission(peer.ip(), now)?;
            if !policy.allows_port(ports, peer.port()) {
                return None;
            }
            let data = range.len() as u64;
            if !take_within(
                &mut allocation.bandwidth,
                relay_bandwidth,
                TO_PEER,
                now_ns,
                data,
            ) {
                rate_limited.add(range.len());
                return None;
            }
            allocation.userspace_traffic.to_peer.add(range.len());
            Some(Forward {
                from: allocation.relay,
                to: peer,
                transport: Transport::Udp,
                payload: Payload::Input(range),
                hop_limit,
            })
        });
        match (&forward, self.relayed.get_mut(flow.transport.index())) {
            (
                Some(Forward {
                    payload: Payload::Input(range),
                    ..
                }),
                Some(counts),
            ) => counter(counts).add(range.len()),
            _ => self.stats.dropped_packets += 1,
        }
        forward
    }

    /// A datagram from a peer on a relay socket (RFC 8656 §11.3/§12.6): dropped without a
    /// permission for the peer's IP; sent as ChannelData when a channel is bound to the
    /// peer's transport address, else as a Data indication.
    /// `hop_limit`: the TTL / hop limit the datagram arrived with, if the IO layer knows it.
    pub fn handle_peer_datagram(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
        hop_limit: Option<u8>,
    ) -> Option<Forward> {
        let Some((allocation, hop_limit)) = self
            .allocations
            .by_relay_mut(&relay)
            .filter(|allocation| allocation.has_permission(peer.ip(), now))
            .and_then(|allocation| Some((allocation, outgoing_hop_limit(hop_limit)?)))
        else {
            self.stats.dropped_packets += 1;
            return None;
        };
        let flow = allocation.flow;
        let channel = allocation.channel_for_peer(peer, now);
        let overhead = if channel.is_some() {
            channel_data::HEADER_LEN
        } else {
            DATA_INDICATION_OVERHEAD
        };
        if packet.len() + overhead > usize::from(u16::MAX) {
            // Cannot be framed with a 16-bit length; UDP never delivers this much anyway.
            self.stats.dropped_packets += 1;
            return None;
        }
        let now_ns = bandwidth_clock(&mut self.clock_origin, now);
        let data = packet.len() as u64;
        if !take_within(
            &mut allocation.bandwidth,
            &mut self.relay_bandwidth,
            TO_CLIENT,
            now_ns,
            data,
        ) {
            self.stats.rate_limited_to_client.add(packet.len());
            self.stats.dropped_packets += 1;
            return None;
        }
        let counts = self.relayed.get_mut(flow.transport.index())?;
        if let Some(number) = channel {
            channel_data::encode(out, number, packet);
            counts.to_client_channel_data.add(packet.len());
        } else {
            let mut transaction_id = [0u8; 12];
            self.rng.fill_bytes(&mut transaction_id);
            MessageBuilder::new(
                out,
                Method::DATA,
                Class::Indication,
                &TransactionId(transaction_id),
            )
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attribute(attr::DATA, packet);
            counts.to_client_data_indication.add(packet.len());
        }
        allocation.userspace_traffic.to_client.add(packet.len());
        Some(Forward {
            from: flow.listener,
            to: flow.client,
            transport: flow.transport,
            payload: Payload::Output,
            // A stream's segments carry no per-message TTL.
            hop_limit: hop_limit.filter(|_| !flow.transport.is_stream()),
        })
    }
}

/// `now` as the bandwidth buckets count time: ns since the first instant they saw.
fn bandwidth_clock(origin: &mut Option<Instant>, now: Instant) -> u64 {
    let origin = *origin.get_or_insert(now);
    u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// The hop limit a relayed datagram leaves with: Some(None) when the arriving one is
/// unknown (the socket's default), None when it must not be relayed.
fn outgoing_hop_limit(incoming: Option<u8>) -> Option<Option<u8>> {
    match incoming {
        None => Some(None),
        Some(incoming) => relayed_hop_limit(incoming).map(Some),
    }
}
