//! The userspace relay hot path (RFC 8656 §11 Send/Data, §12 ChannelData). No heap
//! allocation per packet: client → peer data is forwarded as a range of the input, peer →
//! client data is framed into the caller's reusable buffer.

use std::net::SocketAddr;
use std::time::Instant;

use crate::datapath::{ClientFlow, Datapath};
use crate::stun::attributes as attr;
use crate::stun::channel_data::{self, ChannelData};
use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};

use super::{Forward, Payload, Server};

/// Bytes a Data indication adds around the data: STUN header, XOR-PEER-ADDRESS (IPv6),
/// DATA header and at most 3 bytes of padding (RFC 8656 §11.3).
const DATA_INDICATION_OVERHEAD: usize = crate::stun::HEADER_LEN + 24 + 4 + 3;

impl<D: Datapath, R: rand::RngCore> Server<D, R> {
    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer, while both
    /// the channel and the peer's permission are alive.
    pub(super) fn relay_channel_data_from_client(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        packet: &[u8],
    ) -> Option<Forward> {
        let forward = ChannelData::parse(packet)
            .zip(ChannelData::data_range(packet))
            .and_then(|(message, range)| {
                let allocation = self.allocations.get(&flow)?;
                let peer = allocation.channel_peer(message.number, now)?;
                allocation
                    .has_permission(peer.ip(), now)
                    .then_some(Forward {
                        from: allocation.relay,
                        to: peer,
                        payload: Payload::Input(range),
                    })
            });
        match &forward {
            Some(Forward {
                payload: Payload::Input(range),
                ..
            }) => self.stats.to_peer_channel_data.add(range.len()),
            _ => self.stats.dropped_packets += 1,
        }
        forward
    }

    /// RFC 8656 §11.2: a Send indication's DATA goes to XOR-PEER-ADDRESS when a permission
    /// exists; otherwise it is silently discarded (indications are never answered).
    /// Permissions only exist for peers the policy allowed. DONT-FRAGMENT is ignored. An
    /// indication with unknown comprehension-required attributes is discarded (RFC 8489 §6.3.2).
    pub(super) fn relay_send_indication(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        message: &Message,
    ) -> Option<Forward> {
        let understood = message.unknown_comprehension_required().is_empty();
        let forward = self
            .allocations
            .get(&flow)
            .filter(|_| understood)
            .and_then(|allocation| {
                let peer = message.xor_peer_address().ok()??;
                let range = message.data_range()?;
                let allowed = peer.is_ipv4() == allocation.relay.is_ipv4()
                    && allocation.has_permission(peer.ip(), now);
                allowed.then_some(Forward {
                    from: allocation.relay,
                    to: peer,
                    payload: Payload::Input(range),
                })
            });
        match &forward {
            Some(Forward {
                payload: Payload::Input(range),
                ..
            }) => self.stats.to_peer_send.add(range.len()),
            _ => self.stats.dropped_packets += 1,
        }
        forward
    }

    /// A datagram from a peer on a relay socket (RFC 8656 §11.3/§12.6): dropped without a
    /// permission for the peer's IP; sent as ChannelData when a channel is bound to the
    /// peer's transport address, else as a Data indication.
    pub fn handle_peer_datagram(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Forward> {
        let Some((flow, allocation)) = self
            .flows_by_relay
            .get(&relay)
            .and_then(|flow| Some((*flow, self.allocations.get(flow)?)))
            .filter(|(_, allocation)| allocation.has_permission(peer.ip(), now))
        else {
            self.stats.dropped_packets += 1;
            return None;
        };
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
        if let Some(number) = channel {
            channel_data::encode(out, number, packet);
            self.stats.to_client_channel_data.add(packet.len());
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
            self.stats.to_client_data_indication.add(packet.len());
        }
        Some(Forward {
            from: flow.listener,
            to: flow.client,
            payload: Payload::Output,
        })
    }
}
