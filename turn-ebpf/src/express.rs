//! The express path: a ChannelData message from a client on a channel this CPU's
//! [`crate::channel_cache`] holds, relayed to the peer (RFC 8656 §12.4, §12.6) by one BPF
//! function that `turn_xdp` calls first, before its own parse into per-CPU memory and
//! its chain of lookups.
//!
//! It makes exactly the decision `to_peer::channel_data_lean` makes for such a frame on
//! a cache hit (the same [`to_peer::cached_channel`] and [`to_peer::relay_lean`]), and
//! leaves every other frame untouched to the general path ([`NOT_EXPRESS`]): a cache
//! miss, a frame the lean egress does not take. [`may_take`] turns away, with a few
//! loads in `turn_xdp`, every frame but ChannelData to a listening port
//! ([`crate::PORT_FILTER`]), so that the others (peers' datagrams, STUN) pay neither the
//! call nor a second parse.

use aya_ebpf::programs::XdpContext;
use turn_common::maps::PortFilter;

use crate::channel_cache::Cached;
use crate::packet::{
    load, load_be16, Packet, Shape, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_LEN, IPV4_LEN, IPV6_LEN,
    UDP_LEN,
};
use crate::{count, port_filter_holds, to_peer, verdict_action, zeroed};

/// What [`channel_data`] returns for a frame it leaves to the general path (no XDP action
/// has this value).
pub const NOT_EXPRESS: u32 = u32::MAX;

/// Whether the frame may be one [`channel_data`] relays: an IPv4 or IPv6 frame whose UDP
/// header and payload, where they are without IP options or extension headers, go to a
/// listening port and start with ChannelData's first two bits (RFC 7983 §7). The parse
/// checks the rest.
#[inline(always)]
pub fn may_take(ctx: &XdpContext) -> bool {
    let udp = match load_be16(ctx, 12) {
        Some(ETHERTYPE_IPV4) => ETH_LEN + IPV4_LEN,
        Some(ETHERTYPE_IPV6) => ETH_LEN + IPV6_LEN,
        _ => return false,
    };
    let channel_data = load::<u8>(ctx, udp + UDP_LEN).is_some_and(|byte| byte >> 6 == 0b01);
    channel_data
        && load_be16(ctx, udp + 2)
            .is_some_and(|port| port_filter_holds(port, PortFilter::is_listening))
}

/// Relays a ChannelData message of a channel this CPU's cache holds for the client's
/// flow, as `to_peer::channel_data_lean` does on a hit, and counts it: the XDP action, or
/// [`NOT_EXPRESS`] with the frame unchanged.
// A BPF function of its own: its parse goes on its own stack frame, not into per-CPU
// memory, and its frame is not added to the general paths' (512 bytes for the chain).
#[inline(never)]
pub fn channel_data(ctx: &XdpContext) -> u32 {
    // Before the egress moves the frame's head.
    let frame_len = ctx.data_end() - ctx.data();
    let mut packet = core::mem::MaybeUninit::<Packet>::uninit();
    // SAFETY: integers and byte arrays: all-zero is valid.
    let packet = unsafe { zeroed(&mut packet) };
    if packet.parse(ctx).is_err() || packet.shape() != Shape::ChannelData {
        return NOT_EXPRESS;
    }
    let (cache, cached) = to_peer::cached_channel(ctx, packet);
    let Cached::Channel(channel) = cached else {
        return NOT_EXPRESS;
    };
    match to_peer::relay_lean(ctx, packet, &cache, &channel) {
        Some(verdict) => {
            let (outcome, action) = verdict_action(verdict);
            count(outcome, frame_len);
            action
        }
        None => NOT_EXPRESS,
    }
}
