//! The lean relay ([`lean`]): one frame of the commonest shapes relayed within one BPF
//! function, without [`super::forward`]'s chain.

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail};
use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::maps::{NextHop, FAMILY_V4};
use turn_common::stun::CHANNEL_DATA_HEADER_LEN;

use super::checksum::{add_prefix, framing_delta, length_delta};
use super::headers::{put, write_headers, write_prefix, write_zeros};
use super::{
    fragmentable_identification, Arrival, Channel, Reframe, Route, MAX_PADDING,
    MAX_PREFIX_WORDS, MAX_STRIPPED,
};
use crate::packet::{Packet, ETH_LEN, IPV4_LEN, IPV6_LEN, UDP_LEN};
use crate::{add_traffic, bandwidth, Relayed, EGRESS};

/// The TURN framing a lean relay ([`lean`]) changes.
#[derive(Clone, Copy)]
pub enum LeanFraming<'a> {
    /// Client → peer ChannelData: the header (the payload's first word) goes.
    StripChannelData,
    /// Peer → client ChannelData: this header (a wire word) goes in front of the data.
    PrependChannelData(u32),
    /// Client → peer Send indication: the `data_offset` payload bytes in front of the
    /// DATA value (STUN header, attributes, DATA's header) go, and the `tail_len` bytes
    /// behind it (its padding, attributes after it).
    StripSendIndication { data_offset: usize, tail_len: usize },
    /// Peer → client Data indication: the first `words` words of `prefix` (STUN header,
    /// XOR-PEER-ADDRESS, DATA's header; wire words) go in front of the data, `pad` zero
    /// bytes behind it.
    PrependDataIndication {
        prefix: &'a [u32; MAX_PREFIX_WORDS],
        words: usize,
        pad: usize,
    },
}

impl LeanFraming<'_> {
    /// The outcome of a frame relayed so.
    #[inline(always)]
    fn relayed(self) -> Outcome {
        match self {
            LeanFraming::StripChannelData => Outcome::RelayedChannelDataToPeer,
            LeanFraming::PrependChannelData(_) => Outcome::RelayedChannelDataToClient,
            LeanFraming::StripSendIndication { .. } => Outcome::RelayedSendToPeer,
            LeanFraming::PrependDataIndication { .. } => Outcome::RelayedDataIndicationToClient,
        }
    }

    /// The payload bytes in front of the data that go, those behind it that go, the
    /// bytes written in front of it and the zero bytes appended behind it.
    #[inline(always)]
    fn lengths(self) -> (usize, usize, usize, usize) {
        match self {
            LeanFraming::StripChannelData => (CHANNEL_DATA_HEADER_LEN, 0, 0, 0),
            LeanFraming::PrependChannelData(_) => (0, 0, CHANNEL_DATA_HEADER_LEN, 0),
            LeanFraming::StripSendIndication {
                data_offset,
                tail_len,
            } => (data_offset, tail_len, 0, 0),
            LeanFraming::PrependDataIndication { words, pad, .. } => (0, 0, 4 * words, pad),
        }
    }

    /// Whether the data goes to the peer (else to the client).
    #[inline(always)]
    fn to_peer(self) -> bool {
        matches!(
            self,
            LeanFraming::StripChannelData | LeanFraming::StripSendIndication { .. }
        )
    }
}

/// The lean relay within one IP family of ChannelData without padding (RFC 8656 §12.4,
/// §12.5), the commonest frame by far, and of Send and Data indications (§11.2, §11.4)
/// from the express path: the same checks, checksum and headers as [`super::forward`] for such
/// a frame, hand-written in one BPF function without [`super::forward`]'s calls of its phases
/// (each call and return is dear on a kernel with SRSO "safe RET") and its generality
/// (other families, ChannelData padding, next-hop lookups). `data_len` is the
/// application data's length, `channel` the route (and next hop) [`super::forward`] would get.
///
/// `None` when the frame needs what only [`super::forward`] does (a family change, TTL 1, a
/// next hop not cached or of another generation, TOS or ingress, over the path MTU, an
/// egress not attached): nothing has changed then, and the caller runs the general path,
/// which decides the frame as if this had not run. `arrival`: [`Arrival::of`] the frame.
#[inline(always)]
pub fn lean(
    ctx: &XdpContext,
    packet: &Packet,
    arrival: Arrival,
    channel: &Channel,
    data_len: usize,
    framing: LeanFraming,
) -> Option<Result<Relayed, Outcome>> {
    let (next_hop, route, slot) = (channel.next_hop, &channel.route, channel.slot);
    let relayed = framing.relayed();
    let (strip_front, strip_tail, prefix_len, pad) = framing.lengths();
    // The checks of `prepare`, for this shape of frame.
    if route.family != packet.family || packet.ttl <= 1 {
        return None;
    }
    let v4 = packet.family == FAMILY_V4;
    let udp_len = UDP_LEN + prefix_len + data_len + pad;
    if udp_len > 0xFFFF - IPV6_LEN
        || prefix_len > 4 * MAX_PREFIX_WORDS
        || pad > MAX_PADDING
        || strip_front > MAX_STRIPPED
        || strip_tail > MAX_STRIPPED
        || strip_front + data_len + strip_tail != packet.payload_len
    {
        return None;
    }
    let ip_header_len = if v4 { IPV4_LEN } else { IPV6_LEN };
    let ip_total_len = (ip_header_len + udp_len) as u16;
    // The TOS the relayed IPv4 header carries (RFC 8656 §14), as `prepare` has it.
    let tos = if v4 { packet.tos } else { 0 };
    // Only a cached next hop (see `resolve`).
    let Arrival {
        routing_generation: generation,
        ingress,
    } = arrival;
    if generation == 0
        || next_hop.generation != generation
        || next_hop.ingress_ifindex != ingress
        || next_hop.tos != tos
        || ip_total_len > next_hop.mtu
    {
        return None;
    }
    let action = if next_hop.ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        EGRESS.redirect(next_hop.ifindex, 0).ok()?
    };
    let bytes = data_len as u64;
    if let Err(outcome) = bandwidth::charge(slot, relayed, bytes) {
        return Some(Err(outcome));
    }
    // The delta of `udp_checksum` for this frame: addresses, lengths, ports, and the
    // TURN framing removed or added. No checksum stays none (IPv4, RFC 768).
    let udp_checksum = if packet.udp_checksum == 0 {
        0
    } else {
        let delta = length_delta(channel.route_delta, packet, udp_len as u16);
        let delta = match framing {
            LeanFraming::StripChannelData => delta.remove_u32(packet.head_be()),
            LeanFraming::PrependChannelData(header) => delta.add_u32(u32::from_be(header)),
            // (The zero padding adds nothing.)
            LeanFraming::PrependDataIndication { prefix, words, .. } => {
                add_prefix(delta, prefix, words)
            }
            LeanFraming::StripSendIndication { .. } => {
                let reframe = Reframe {
                    strip_front,
                    data_len,
                    pad: 0,
                    attributes_after: true,
                };
                match framing_delta(ctx, delta, packet, &reframe) {
                    Ok(delta) => delta,
                    Err(outcome) => {
                        return Some(Err(bandwidth::refund(slot, relayed, bytes, outcome)))
                    }
                }
            }
        };
        delta.apply_udp(packet.udp_checksum)
    };
    // The writes of `rewrite`: the data stays where it is, the headers move.
    let header_len = ETH_LEN + ip_header_len + UDP_LEN + prefix_len;
    let head_delta = (packet.payload + strip_front) as i32 - header_len as i32;
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, head_delta) } != 0 {
        return Some(Err(bandwidth::refund(
            slot,
            relayed,
            bytes,
            Outcome::PassAdjustFailed,
        )));
    }
    let tail_delta = pad as i32 - strip_tail as i32;
    // SAFETY: as above.
    if tail_delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, tail_delta) } != 0 {
        // Undo the head move so the stack gets the frame as it arrived.
        // SAFETY: as above; moves the head back where it was.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, -head_delta) };
        return Some(Err(bandwidth::refund(
            slot,
            relayed,
            bytes,
            Outcome::PassAdjustFailed,
        )));
    }
    if let Err(outcome) =
        write_lean(ctx, packet, next_hop, route, udp_len, udp_checksum, framing)
    {
        return Some(Err(bandwidth::refund(slot, relayed, bytes, outcome)));
    }
    if pad > 0 {
        if let Err(outcome) = write_zeros(ctx, header_len + data_len, pad) {
            return Some(Err(bandwidth::refund(slot, relayed, bytes, outcome)));
        }
    }
    add_traffic(slot, data_len, framing.to_peer());
    Some(Ok(Relayed {
        action,
        outcome: relayed,
    }))
}

/// The headers of [`lean`]'s relayed frame, at the frame's (moved) start.
#[inline(always)]
fn write_lean(
    ctx: &XdpContext,
    packet: &Packet,
    next_hop: &NextHop,
    route: &Route,
    udp_len: usize,
    udp_checksum: u16,
    framing: LeanFraming,
) -> Result<(), Outcome> {
    let payload = write_headers(
        ctx,
        next_hop,
        packet,
        route,
        udp_len as u16,
        udp_checksum,
        fragmentable_identification(packet),
    )?;
    match framing {
        LeanFraming::PrependChannelData(header) => put(ctx, payload, [header]),
        LeanFraming::PrependDataIndication { prefix, words, .. } => {
            write_prefix(ctx, payload, prefix, words)
        }
        LeanFraming::StripChannelData | LeanFraming::StripSendIndication { .. } => Ok(()),
    }
}
