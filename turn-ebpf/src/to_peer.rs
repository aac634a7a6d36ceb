//! Client → peer: ChannelData (RFC 8656 §12.4, §12.6) and Send indications (§11.2,
//! §11.3) arriving on a listening address are unwrapped and sent from the relayed
//! address to the peer as a plain UDP datagram.

use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::maps::{
    AllocationValue, ClientChannelKey, ClientChannelValue, FlowKey, NextHop, PermissionKey,
    PermissionValue, FAMILY_V4, FAMILY_V6,
};
use turn_common::stun::{
    ADDRESS_FAMILY_V4, ADDRESS_FAMILY_V6, ATTR_DATA, ATTR_FINGERPRINT, ATTR_XOR_PEER_ADDRESS,
    CHANNEL_DATA_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE,
};

use crate::channel_cache::{Direction, Lookup, SendLookup, Tag};
use crate::egress::{self, forward, Channel, LeanFraming, Job, Lean, Reframe, Route};
use crate::fingerprint;
use crate::packet::{address_bytes, address_words, load, Address, Packet, MAX_OFFSET};
use crate::{
    add_traffic, is_listening, job, now_ns, zeroed, Relayed, CLIENT_ALLOCATIONS, CLIENT_CHANNELS,
    PERMISSIONS,
};

/// The most attributes a Send indication may have for the fast path to take it
/// (XOR-PEER-ADDRESS, DATA, FINGERPRINT).
const MAX_ATTRIBUTES: usize = 3;

/// Relays a ChannelData message of a channel bound on the client's flow (RFC 8656
/// §12.4); `Err(Outcome::PassChannelNotBound)`: no such channel, the caller goes on with
/// the peer-side lookups.
// A separate BPF function: the stack frames of the paths are not added up.
#[inline(never)]
pub fn channel_data(ctx: &XdpContext, packet: &Packet) -> Result<Relayed, Outcome> {
    let channel = CLIENT_CHANNELS
        .get_ptr_mut(channel_key(packet))
        .ok_or(Outcome::PassChannelNotBound)?;
    // SAFETY: a map value, valid while this program runs (RCU); the program writes only
    // its next-hop cache.
    relay_channel_data(ctx, packet, unsafe { &mut *channel })
}

/// [`channel_data`] on the lean path ([`egress::lean`]): a channel to a peer of
/// the client's family, a payload of exactly the header and the data (no padding), a
/// live entry, which this CPU's [`crate::channel_cache`] then keeps for the express path
/// (`crate::express`). The cache is not read here: the express path looked the frame
/// up before (with the decision trace on, the general path decides from the hash
/// entries). Anything else is left to [`channel_data`] (`Lean::General`); `verdict` is
/// written for `Lean::Done`.
// A separate BPF function: its stack frame is not added to the general paths'.
#[inline(never)]
pub fn channel_data_lean(
    ctx: &XdpContext,
    packet: &Packet,
    verdict: &mut Result<Relayed, Outcome>,
) -> Lean {
    // No client flow on this port: the lookup would miss.
    if !is_listening(packet) {
        return Lean::NotFound;
    }
    // Before the hash lookup (see `channel_cache`).
    let cache = cache_lookup(ctx, packet);
    let Some(entry) = CLIENT_CHANNELS.get_ptr_mut(channel_key(packet)) else {
        return Lean::NotFound;
    };
    // SAFETY: a map value, valid while this program runs (RCU); only read here.
    let entry = unsafe { &*entry };
    let channel = Channel::new(packet, &entry.next_hop, to_peer(entry), [0; 2], entry.slot());
    if !cache.admit(packet, &channel, entry.expires_ns()) {
        return Lean::General;
    }
    let (data_len, framing) = lean_framing(packet);
    let decided = egress::lean(ctx, packet, cache.arrival, &channel, data_len, framing);
    Lean::from(decided, verdict)
}

/// A ChannelData frame's place in this CPU's [`crate::channel_cache`] on the path to the
/// peer: under the client's tag, by the header's channel number. The express path finds
/// the channel there, [`channel_data_lean`] fills it.
#[inline(always)]
pub fn cache_lookup(ctx: &XdpContext, packet: &Packet) -> Lookup {
    let number = (packet.head_be() >> 16) as u16;
    Lookup::new(ctx, packet, Direction::ToPeer, number, Tag::of_client(packet))
}

/// The lean egress's data length and framing of a client's ChannelData frame: the
/// header goes, the data is relayed as the datagram to the peer.
#[inline(always)]
pub fn lean_framing(packet: &Packet) -> (usize, LeanFraming<'static>) {
    let data_len = (packet.head_be() & 0xFFFF) as usize;
    (data_len, LeanFraming::StripChannelData)
}

/// The `CLIENT_CHANNELS` key of a ChannelData frame from a client.
#[inline(always)]
fn channel_key(packet: &Packet) -> ClientChannelKey {
    ClientChannelKey::new(
        packet.family,
        address_bytes(packet.src_ip),
        packet.src_port.to_ne_bytes(),
        address_bytes(packet.dst_ip),
        packet.dst_port.to_ne_bytes(),
        // The channel number: the first two payload bytes.
        (packet.head as u16).to_ne_bytes(),
    )
}

/// The route from the relayed address to the channel's peer.
#[inline(always)]
fn to_peer(channel: &ClientChannelValue) -> Route {
    Route {
        // SAFETY: 4-aligned fields of the value.
        src_ip: unsafe { address_words(channel.relay_ip()) },
        // SAFETY: as above.
        dst_ip: unsafe { address_words(channel.peer_ip()) },
        src_port: u16::from_ne_bytes(channel.relay_port()),
        dst_port: u16::from_ne_bytes(channel.peer_port()),
        family: channel.peer_family(),
    }
}

/// Relays a ChannelData message of a bound channel. The UDP payload must be exactly the
/// header and data plus at most the padding to a multiple of 4 (RFC 8656 §12.5).
#[inline(always)]
fn relay_channel_data(
    ctx: &XdpContext,
    packet: &Packet,
    channel: &mut ClientChannelValue,
) -> Result<Relayed, Outcome> {
    let data_len = (packet.head_be() & 0xFFFF) as usize;
    let framed = CHANNEL_DATA_HEADER_LEN + data_len;
    if packet.payload_len < framed || packet.payload_len > (framed + 3) & !3 {
        return Err(Outcome::PassMalformed);
    }
    if channel.expires_ns() <= now_ns() {
        return Err(Outcome::PassExpired);
    }
    let job = job()?;
    job.route = to_peer(channel);
    job.reframe = Reframe {
        strip_front: CHANNEL_DATA_HEADER_LEN,
        data_len,
        pad: 0,
        attributes_after: false,
    };
    job.prefix_words = 0;
    job.relayed = Outcome::RelayedChannelDataToPeer;
    let slot = channel.slot();
    job.slot = slot;
    let relayed = forward(ctx, packet, job, &mut channel.next_hop)?;
    add_traffic(slot, data_len, true);
    Ok(relayed)
}

/// What a bounded walk over a Send indication's attributes found.
struct SendIndication {
    peer_ip: Address,
    /// A word holding the port's bytes in memory order.
    peer_port: u16,
    peer_family: u8,
    /// Offset of the DATA value from the start of the message.
    data_offset: usize,
    data_len: usize,
    /// Offset of a trailing FINGERPRINT attribute from the start of the message (0: none)
    /// and its value.
    fingerprint_offset: usize,
    fingerprint: u32,
}

/// [`send_indication`] for a client–peer pair in this CPU's [`crate::channel_cache`], the
/// express path's: relayed on the lean path ([`egress::lean`]) without the hash lookups
/// of the allocation and the permission. None: left to the general path
/// ([`send_indication`], which fills the slot), the frame unchanged.
#[inline(always)]
pub fn send_indication_express(
    ctx: &XdpContext,
    packet: &Packet,
) -> Option<Result<Relayed, Outcome>> {
    let mut send = core::mem::MaybeUninit::<SendIndication>::uninit();
    // SAFETY: integers and byte arrays: all-zero is valid.
    let send = unsafe { zeroed(&mut send) };
    if !parse_send_indication(ctx, packet, send) {
        return None;
    }
    let cache = SendLookup::new(packet, send.peer_port, send.peer_family);
    // Live: `find` checked the copy's expiry, the earlier of the two entries'.
    let (arrival, channel) = cache.find(ctx, packet, &send.peer_ip)?;
    if !fingerprint_holds(ctx, packet, send) {
        return Some(Err(Outcome::PassBadFingerprint));
    }
    let framing = LeanFraming::StripSendIndication {
        data_offset: send.data_offset,
        tail_len: packet.payload_len - send.data_offset - send.data_len,
    };
    egress::lean(ctx, packet, arrival, &channel, send.data_len, framing)
}

/// Relays a Send indication (RFC 8656 §11.2) from a client with a fast-path allocation
/// to a peer it has a permission for (covering the peer's port). `Err(Outcome::PassStun)`:
/// not a Send indication the fast path takes (malformed, attributes other than the ones
/// it relays by, or no such flow): the caller goes on with the peer-side lookups, and
/// passes it to userspace if they find nothing either.
///
/// A trailing FINGERPRINT is verified (RFC 8489 §7.3, §14.7) just before relaying; a
/// message whose FINGERPRINT does not match is passed to userspace as it is
/// (`PassBadFingerprint`), which then treats it exactly as it treats any such message.
// A separate BPF function: its stack frame is not added to the other paths'.
#[inline(never)]
pub fn send_indication(ctx: &XdpContext, packet: &Packet) -> Result<Relayed, Outcome> {
    // No client flow on this port: the lookup would miss (PassStun, as below).
    if !is_listening(packet) {
        return Err(Outcome::PassStun);
    }
    let mut send = core::mem::MaybeUninit::<SendIndication>::uninit();
    // SAFETY: integers and byte arrays: all-zero is valid.
    let send = unsafe { zeroed(&mut send) };
    if !parse_send_indication(ctx, packet, send) {
        return Err(Outcome::PassStun);
    }
    // Before the hash lookups (see `channel_cache`).
    let mut cache = SendLookup::new(packet, send.peer_port, send.peer_family);
    let (allocation, permission) = allocation_and_permission(packet, send)?;
    let job = job()?;
    job.route = Route {
        // SAFETY: a 4-aligned field of the value.
        src_ip: unsafe { address_words(allocation.relay_ip()) },
        dst_ip: send.peer_ip,
        src_port: u16::from_ne_bytes(allocation.relay_port()),
        dst_port: send.peer_port,
        family: send.peer_family,
    };
    job.slot = allocation.slot();
    let expires_ns = allocation.expires_ns().min(permission.expires_ns());
    cache.fill(packet, &send.peer_ip, job, &permission.next_hop, expires_ns);
    relay_send(ctx, packet, send, job, &mut permission.next_hop)
}

/// Relays a Send indication to the peer of `job`'s route (and allocation slot), once
/// its FINGERPRINT, if any, is checked; `next_hop`: the entry's next-hop cache, or the
/// cache slot's copy of it.
#[inline(always)]
fn relay_send(
    ctx: &XdpContext,
    packet: &Packet,
    send: &SendIndication,
    job: &mut Job,
    next_hop: &mut NextHop,
) -> Result<Relayed, Outcome> {
    if !fingerprint_holds(ctx, packet, send) {
        return Err(Outcome::PassBadFingerprint);
    }
    job.reframe = Reframe {
        strip_front: send.data_offset,
        data_len: send.data_len,
        pad: 0,
        attributes_after: true,
    };
    job.prefix_words = 0;
    job.relayed = Outcome::RelayedSendToPeer;
    let slot = job.slot;
    let relayed = forward(ctx, packet, job, next_hop)?;
    add_traffic(slot, send.data_len, true);
    Ok(relayed)
}

/// Whether the Send indication's FINGERPRINT, if it has one, matches (RFC 8489 §7.3,
/// §14.7).
#[inline(always)]
fn fingerprint_holds(ctx: &XdpContext, packet: &Packet, send: &SendIndication) -> bool {
    send.fingerprint_offset == 0
        || fingerprint::matches(ctx, packet.payload, send.fingerprint_offset, send.fingerprint)
}

/// The client's allocation and its permission for the peer of a Send indication (RFC
/// 8656 §11.2), both live, the permission covering the peer's port; else why not.
#[inline(always)]
fn allocation_and_permission(
    packet: &Packet,
    send: &SendIndication,
) -> Result<(&'static AllocationValue, &'static mut PermissionValue), Outcome> {
    let flow = FlowKey::new(
        packet.family,
        address_bytes(packet.src_ip),
        packet.src_port.to_ne_bytes(),
        address_bytes(packet.dst_ip),
        packet.dst_port.to_ne_bytes(),
        send.peer_family,
    );
    // SAFETY: the value is only read while this program runs (RCU-protected).
    let Some(allocation) = (unsafe { CLIENT_ALLOCATIONS.get(flow) }) else {
        return Err(Outcome::PassStun);
    };
    let now = now_ns();
    if allocation.expires_ns() <= now {
        return Err(Outcome::PassExpired);
    }
    let key = PermissionKey::new(
        send.peer_family,
        *allocation.relay_ip(),
        allocation.relay_port(),
        address_bytes(send.peer_ip),
    );
    let Some(permission) = PERMISSIONS.get_ptr_mut(key) else {
        return Err(Outcome::PassNoPermission);
    };
    // SAFETY: a map value, valid while this program runs; the program writes only its
    // next-hop cache.
    let permission = unsafe { &mut *permission };
    if permission.expires_ns() <= now {
        return Err(Outcome::PassExpired);
    }
    if !permission.covers_port(send.peer_port.to_ne_bytes()) {
        return Err(Outcome::PassPeerPortNotPermitted);
    }
    Ok((allocation, permission))
}

/// Walks at most [`MAX_ATTRIBUTES`] attributes; accepts exactly one XOR-PEER-ADDRESS,
/// one DATA and optionally FINGERPRINT as the last attribute (RFC 8489 §14.7; not
/// verified here), nothing else. DONT-FRAGMENT in particular goes to userspace, which
/// discards the indication (RFC 8656 §11.2: this server does not support it). Fills
/// `out` and returns true when the message is one the fast path takes.
// A separate BPF function to keep the caller's stack frame small; results go through
// an out parameter since a BPF function cannot return a pointer to stack memory.
#[inline(never)]
fn parse_send_indication(ctx: &XdpContext, packet: &Packet, out: &mut SendIndication) -> bool {
    // Type and length, magic cookie (the type was checked while parsing).
    let Some([first, cookie]) = load::<[u32; 2]>(ctx, packet.payload) else {
        return false;
    };
    let message_len = (u32::from_be(first) & 0xFFFF) as usize;
    if cookie != u32::from_ne_bytes(MAGIC_COOKIE)
        || message_len + HEADER_LEN != packet.payload_len
        || message_len & 3 != 0
    {
        return false;
    }
    let mut peer_found = false;
    let mut data_found = false;
    out.fingerprint_offset = 0;
    let mut offset = HEADER_LEN;
    for _ in 0..MAX_ATTRIBUTES {
        if offset >= packet.payload_len {
            break;
        }
        if offset > MAX_OFFSET {
            return false;
        }
        let Some(attribute) = load::<u32>(ctx, packet.payload + offset) else {
            return false;
        };
        let attribute = u32::from_be(attribute);
        let (kind, len) = ((attribute >> 16) as u16, (attribute & 0xFFFF) as usize);
        let value = packet.payload + offset + 4;
        let next = offset + 4 + ((len + 3) & !3);
        if next > packet.payload_len {
            return false;
        }
        match kind {
            ATTR_XOR_PEER_ADDRESS if !peer_found => {
                if !xor_peer_address(ctx, packet.payload, value, len, out) {
                    return false;
                }
                peer_found = true;
            }
            ATTR_DATA if !data_found => {
                out.data_offset = offset + 4;
                out.data_len = len;
                data_found = true;
            }
            ATTR_FINGERPRINT if len == 4 && next == packet.payload_len => {
                let Some(value) = load::<u32>(ctx, value) else {
                    return false;
                };
                out.fingerprint = u32::from_be(value);
                out.fingerprint_offset = offset;
            }
            _ => return false,
        }
        offset = next;
    }
    offset == packet.payload_len && peer_found && data_found
}

/// Decodes XOR-PEER-ADDRESS (RFC 8489 §14.2) at frame offset `value` into `out`; the
/// message starts at frame offset `message` (the IPv6 XOR key is its magic cookie and
/// transaction id).
#[inline(always)]
fn xor_peer_address(
    ctx: &XdpContext,
    message: usize,
    value: usize,
    len: usize,
    out: &mut SendIndication,
) -> bool {
    let Some(head) = load::<u32>(ctx, value) else {
        return false;
    };
    let head = u32::from_be(head);
    let cookie = u32::from_ne_bytes(MAGIC_COOKIE);
    out.peer_port = ((head as u16) ^ (u32::from_be(cookie) >> 16) as u16).to_be();
    match ((head >> 16) as u8, len) {
        (ADDRESS_FAMILY_V4, 8) => {
            let Some(address) = load::<u32>(ctx, value + 4) else {
                return false;
            };
            out.peer_ip = [address ^ cookie, 0, 0, 0];
            out.peer_family = FAMILY_V4;
            true
        }
        (ADDRESS_FAMILY_V6, 20) => {
            let (Some(address), Some(key)) = (
                load::<Address>(ctx, value + 4),
                load::<Address>(ctx, message + 4),
            ) else {
                return false;
            };
            out.peer_ip = [
                address[0] ^ key[0],
                address[1] ^ key[1],
                address[2] ^ key[2],
                address[3] ^ key[3],
            ];
            out.peer_family = FAMILY_V6;
            true
        }
        _ => false,
    }
}
