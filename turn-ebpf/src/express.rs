//! The express path: what this CPU's [`crate::channel_cache`] holds, relayed by one BPF
//! function that `turn_xdp` calls first, before its chain of lookups: ChannelData in
//! either direction (RFC 8656 §12.4, §12.5, §12.6), a client's Send indications (§11.2)
//! and peers' datagrams as Data indications (§11.4).
//!
//! It is the only path that looks frames up in the cache (the general path's Data
//! indication rereads the slot found here, [`Left::DataIndication`]); the general path
//! fills the slots from the hash entries. On a hit it makes exactly the
//! decision the general path makes from those entries: the lean egress with the
//! framing of `to_peer::channel_data_lean` for a client's ChannelData
//! ([`to_peer::cache_lookup`], [`to_peer::lean_framing`]) and of
//! `to_client::channel_data_lean` for a peer's datagram on a channel
//! ([`to_client::cache_lookup`], [`to_client::lean_framing`]), and for Send and Data
//! indications the general paths (`to_peer::send_indication`,
//! `to_client::data_indication`) with the entries copied and the lean egress
//! ([`to_peer::send_indication_express`], [`to_client::data_indication_lean`]). Every
//! other frame goes on to the general path unchanged ([`Left`]), parsed into
//! [`crate::PACKET`] as the general path parses it, so that it is not parsed twice, and
//! not looked up in the cache twice either. With the decision trace on, every frame
//! takes the general path, which decides them alike from the hash entries.
//!
//! [`may_take`] turns away, with a few loads in `turn_xdp`, every frame but ChannelData
//! and Send indications to a listening port and datagrams to a relayed port
//! ([`crate::PORT_FILTER`]), so that the others (STUN requests) pay neither the call
//! nor the port filter twice.

use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::stun::SEND_INDICATION;

use crate::channel_cache::Cached;
use crate::egress;
use crate::packet::{
    load_be16, Packet, Shape, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_LEN, IPV4_LEN, IPV6_LEN, UDP_LEN,
};
use crate::{count, port_filter, to_client, to_peer, verdict_action, Relayed, PACKET};

/// Which path [`relay`] tries for a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// To a listening port: a client's ChannelData (`to_peer`).
    ClientChannelData,
    /// To a listening port: a client's Send indication (`to_peer`).
    ClientSend,
    /// To a relayed port (and no listening one): a peer's datagram (`to_client`).
    Peer,
}

/// How [`relay`] left a frame to the general path, unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Not parsed (or not parseable: the general path's parse says why).
    Unparsed,
    /// Parsed into [`PACKET`]; nothing cached for the frame, or a cached channel or
    /// Send indication the lean egress did not take: the general path decides from the
    /// hash entries.
    Parsed,
    /// Parsed into [`PACKET`], its cache tag read: a peer's datagram whose slot holds
    /// its Data indication (`Cached::DataIndication`), which the lean egress did not
    /// take (`to_client::data_indication_cached` relays it from the slot).
    DataIndication,
}

/// The values of [`relay`]'s result that are not XDP actions (0–4), one per [`Left`].
const UNPARSED: u32 = u32::MAX;
const PARSED: u32 = u32::MAX - 1;
const DATA_INDICATION: u32 = u32::MAX - 2;

/// Whether [`relay`] may take the frame, and on which side: an IPv4 or IPv6 frame whose
/// UDP header, where it is without IP options or extension headers, goes to a listening
/// port with a payload that starts with ChannelData's first two bits (RFC 7983 §7) or a
/// Send indication's type, or to a relayed port. The parse checks the rest.
#[inline(always)]
pub fn may_take(ctx: &XdpContext) -> Option<Side> {
    let udp = match load_be16(ctx, 12) {
        Some(ETHERTYPE_IPV4) => ETH_LEN + IPV4_LEN,
        Some(ETHERTYPE_IPV6) => ETH_LEN + IPV6_LEN,
        _ => return None,
    };
    let port = load_be16(ctx, udp + 2)?;
    let filter = port_filter()?;
    if filter.is_listening(port) {
        return match load_be16(ctx, udp + UDP_LEN)? {
            head if head >> 14 == 0b01 => Some(Side::ClientChannelData),
            SEND_INDICATION => Some(Side::ClientSend),
            _ => None,
        };
    }
    filter.is_relayed(port).then_some(Side::Peer)
}

/// Relays a frame on `side` as the lean path does on a cache hit and counts it: `Ok`
/// with the XDP action, or how the frame was left to the general path.
#[inline(always)]
pub fn relay(ctx: &XdpContext, side: Side) -> Result<u32, Left> {
    let result = match side {
        Side::ClientChannelData => relay_channel_data_or_leave(ctx),
        Side::ClientSend => relay_send_or_leave(ctx),
        Side::Peer => relay_peer_or_leave(ctx),
    };
    match result {
        UNPARSED => Err(Left::Unparsed),
        PARSED => Err(Left::Parsed),
        DATA_INDICATION => Err(Left::DataIndication),
        action => Ok(action),
    }
}

// [`relay`] on each side is a BPF function of its own, its result encoded in the return
// register (the XDP action, or [`UNPARSED`], [`PARSED`], [`DATA_INDICATION`]): their
// stack frames are not added up, nor to the general paths' (512 bytes for the chain).

/// [`relay`] for [`Side::ClientChannelData`].
#[inline(never)]
fn relay_channel_data_or_leave(ctx: &XdpContext) -> u32 {
    // Before the egress moves the frame's head.
    let frame_len = ctx.data_end() - ctx.data();
    let Some(packet) = parsed(ctx) else {
        return UNPARSED;
    };
    if packet.shape() != Shape::ChannelData {
        return PARSED;
    }
    let cache = to_peer::cache_lookup(ctx, packet);
    let Cached::Channel(channel) = cache.find(packet) else {
        return PARSED;
    };
    let (data_len, framing) = to_peer::lean_framing(packet);
    let verdict = egress::lean(ctx, packet, cache.arrival, &channel, data_len, framing);
    counted(verdict, frame_len)
}

/// [`relay`] for [`Side::ClientSend`].
#[inline(never)]
fn relay_send_or_leave(ctx: &XdpContext) -> u32 {
    let frame_len = ctx.data_end() - ctx.data();
    let Some(packet) = parsed(ctx) else {
        return UNPARSED;
    };
    if packet.shape() != Shape::SendIndication {
        return PARSED;
    }
    counted(to_peer::send_indication_express(ctx, packet), frame_len)
}

/// [`relay`] for [`Side::Peer`].
#[inline(never)]
fn relay_peer_or_leave(ctx: &XdpContext) -> u32 {
    let frame_len = ctx.data_end() - ctx.data();
    let Some(packet) = parsed(ctx) else {
        return UNPARSED;
    };
    let cache = to_client::cache_lookup(ctx, packet);
    let verdict = match cache.find(packet) {
        Cached::Channel(channel) => {
            let (data_len, framing) = to_client::lean_framing(packet, &channel);
            egress::lean(ctx, packet, cache.arrival, &channel, data_len, framing)
        }
        Cached::DataIndication(channel) => {
            match to_client::data_indication_lean(ctx, packet, &cache, &channel) {
                Some(verdict) => Some(verdict),
                None => return DATA_INDICATION,
            }
        }
        Cached::Miss => return PARSED,
    };
    counted(verdict, frame_len)
}

/// The frame parsed into this CPU's [`PACKET`], if it parses.
#[inline(always)]
fn parsed(ctx: &XdpContext) -> Option<&'static mut Packet> {
    let packet = PACKET.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by nothing else while the program runs.
    let packet = unsafe { &mut *packet };
    packet.parse(ctx).ok()?;
    Some(packet)
}

/// The XDP action of a lean path's `verdict` on a frame of `frame_len` bytes, counted;
/// [`PARSED`] for none.
#[inline(always)]
fn counted(verdict: Option<Result<Relayed, Outcome>>, frame_len: usize) -> u32 {
    match verdict {
        Some(verdict) => {
            let (outcome, action) = verdict_action(verdict);
            count(outcome, frame_len);
            action
        }
        None => PARSED,
    }
}
