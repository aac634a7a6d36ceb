//! Peer → client: a datagram arriving on a relayed address is framed as ChannelData
//! when a channel is bound to the peer (RFC 8656 §12.5), else as a Data indication when
//! a permission exists (§11.4, §11.5), and sent from the listening address to the
//! client. Without a valid permission it is dropped (§9, §11.4).

use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::maps::{
    ClientSide, NextHop, PeerChannelKey, PeerChannelValue, PermissionKey, RelayKey, FAMILY_V4,
};
use turn_common::stun::{
    ADDRESS_FAMILY_V4, ADDRESS_FAMILY_V6, ATTR_DATA, ATTR_XOR_PEER_ADDRESS, DATA_INDICATION,
    HEADER_LEN, MAGIC_COOKIE,
};

use crate::channel_cache::{self, Direction, Lookup, Tag};
use crate::egress::{
    self, forward, wire_word, Channel, LeanFraming, Job, Lean, Reframe, Route,
    MAX_PREFIX_WORDS,
};
use crate::packet::{address_bytes, address_words, Packet, Shape};
use crate::{
    add_traffic, is_client_flow, is_listening, is_relayed, job, now_ns, random_u64, Relayed,
    PEER_CHANNELS, PERMISSIONS, RELAYS,
};

/// Data indication framing in front of the data, in words: STUN header (20 bytes),
/// XOR-PEER-ADDRESS (4 + 8 or 4 + 20) and the DATA attribute header (4).
const DATA_INDICATION_V4_WORDS: usize = 9;
const DATA_INDICATION_V6_WORDS: usize = 12;

/// RFC 8656 §12.5: a peer's datagram as ChannelData on the channel bound to its
/// transport address (over UDP without padding), while the channel and its permission
/// live; `Err(Outcome::PassChannelNotBound)` otherwise.
// A separate BPF function: the stack frames of the paths are not added up.
#[inline(never)]
pub fn channel_data(ctx: &XdpContext, packet: &Packet) -> Result<Relayed, Outcome> {
    let channel = PEER_CHANNELS
        .get_ptr_mut(channel_key(packet))
        .ok_or(Outcome::PassChannelNotBound)?;
    // SAFETY: a map value, valid while this program runs (RCU); the program writes only
    // its next-hop cache.
    let channel = unsafe { &mut *channel };
    // Past the channel's (or its permission's) expiry: a Data indication while the
    // permission lives (RFC 8656 §12).
    if channel.expires_ns() <= now_ns() {
        return Err(Outcome::PassChannelNotBound);
    }
    relay_channel_data(ctx, packet, channel)
}

/// [`channel_data`] on the lean path ([`egress::lean`]): a live channel of a client of
/// the peer's family, which this CPU's [`crate::channel_cache`] then keeps for the
/// express path (`crate::express`). The cache is not read here: the express path looked
/// the frame up before (with the decision trace on, the general path decides from the
/// hash entries). Anything else is left to [`channel_data`] (`Lean::General`),
/// including an expired channel (a Data indication, maybe); `verdict` is written for
/// `Lean::Done`.
// A separate BPF function: its stack frame is not added to the general paths'.
#[inline(never)]
pub fn channel_data_lean(
    ctx: &XdpContext,
    packet: &mut Packet,
    verdict: &mut Result<Relayed, Outcome>,
) -> Lean {
    // No relayed address on this port: this lookup would miss, and so would
    // `data_indication`'s, which fills no slot then.
    if !is_relayed(packet) {
        return Lean::NotFound;
    }
    // Before the client-side lookups, this one and `data_indication`'s.
    let cache = cache_lookup(ctx, packet);
    let Some(entry) = PEER_CHANNELS.get_ptr_mut(channel_key(packet)) else {
        return Lean::NotFound;
    };
    // SAFETY: a map value, valid while this program runs (RCU); only read here.
    let entry = unsafe { &*entry };
    let channel = Channel::new(
        packet,
        &entry.next_hop,
        to_client(entry.client()),
        entry.number(),
        entry.slot(),
    );
    if !cache.admit(packet, &channel, entry.expires_ns()) {
        return Lean::General;
    }
    let (data_len, framing) = lean_framing(packet, &channel);
    let decided = egress::lean(ctx, packet, cache.arrival, &channel, data_len, framing);
    Lean::from(decided, verdict)
}

/// A peer's datagram's place in this CPU's [`crate::channel_cache`] on the path to the
/// client, under the relayed address's tag, which it also keeps in
/// [`Packet::cache_tag`]: read before the client-side lookups, a Data indication's slot
/// is filled under it ([`data_indication`]). The express path finds the channel or the
/// Data indication there, [`channel_data_lean`] fills it.
#[inline(always)]
pub fn cache_lookup(ctx: &XdpContext, packet: &mut Packet) -> Lookup {
    packet.cache_tag = Tag::of_relayed(packet);
    Lookup::new(ctx, packet, Direction::ToClient, 0, packet.cache_tag)
}

/// The lean egress's data length and framing of a peer's datagram on `channel`:
/// relayed to the client behind the channel's ChannelData header.
#[inline(always)]
pub fn lean_framing(packet: &Packet, channel: &Channel) -> (usize, LeanFraming<'static>) {
    let header = channel_header(channel.number, packet.payload_len);
    (packet.payload_len, LeanFraming::PrependChannelData(header))
}

/// The `PEER_CHANNELS` key of a peer's datagram to a relayed address.
#[inline(always)]
fn channel_key(packet: &Packet) -> PeerChannelKey {
    PeerChannelKey::new(
        packet.family,
        address_bytes(packet.dst_ip),
        packet.dst_port.to_ne_bytes(),
        address_bytes(packet.src_ip),
        packet.src_port.to_ne_bytes(),
    )
}

/// The ChannelData header (a wire word) in front of `data_len` bytes on the channel
/// `number` (in memory order).
#[inline(always)]
fn channel_header(number: [u8; 2], data_len: usize) -> u32 {
    let len = (data_len as u16).to_be_bytes();
    wire_word([number[0], number[1], len[0], len[1]])
}

/// The route from the listening address to the client.
#[inline(always)]
fn to_client(client: &ClientSide) -> Route {
    Route {
        // SAFETY: 4-aligned fields of every value holding a client side.
        src_ip: unsafe { address_words(client.listener_ip()) },
        // SAFETY: as above.
        dst_ip: unsafe { address_words(client.client_ip()) },
        src_port: u16::from_ne_bytes(client.listener_port()),
        dst_port: u16::from_ne_bytes(client.client_port()),
        family: client.client_family(),
    }
}

#[inline(always)]
fn relay_channel_data(
    ctx: &XdpContext,
    packet: &Packet,
    channel: &mut PeerChannelValue,
) -> Result<Relayed, Outcome> {
    let data_len = packet.payload_len;
    let job = job()?;
    job.route = to_client(channel.client());
    let slot = channel.slot();
    job.reframe = Reframe {
        strip_front: 0,
        data_len,
        pad: 0,
        attributes_after: false,
    };
    job.prefix[0] = channel_header(channel.number(), data_len);
    job.prefix_words = 1;
    job.relayed = Outcome::RelayedChannelDataToClient;
    job.slot = slot;
    let relayed = forward(ctx, packet, job, &mut channel.next_hop)?;
    add_traffic(slot, data_len, false);
    Ok(relayed)
}

/// RFC 8656 §11.4: the peer's datagram as a Data indication when the peer has a live
/// permission, dropped without one (§9); frames to no relayed address go to the stack.
// A separate BPF function: the stack frames of the paths are not added up.
#[inline(never)]
pub fn data_indication(
    ctx: &XdpContext,
    packet: &Packet,
    shape: Shape,
) -> Result<Relayed, Outcome> {
    let (relay_ip, relay_port) = (address_bytes(packet.dst_ip), packet.dst_port.to_ne_bytes());
    let key = RelayKey::new(packet.family, relay_ip, relay_port);
    // No relayed address on this port: the lookup would miss. Nor can a client flow be
    // found where no client flow's port is.
    let found = if is_relayed(packet) {
        RELAYS.get_ptr_mut(key)
    } else {
        None
    };
    let Some(allocation) = found else {
        return Err(match shape {
            Shape::ChannelData if is_listening(packet) && is_client_flow(packet) => {
                Outcome::PassChannelNotBound
            }
            Shape::SendIndication | Shape::Stun => Outcome::PassStun,
            _ => Outcome::PassUnknownFlow,
        });
    };
    // SAFETY: a map value, valid while this program runs (RCU); the program writes only
    // its next-hop cache.
    let allocation = unsafe { &mut *allocation };
    let now = now_ns();
    if allocation.expires_ns() <= now {
        return Err(Outcome::PassExpired);
    }
    let key = PermissionKey::new(
        packet.family,
        relay_ip,
        relay_port,
        address_bytes(packet.src_ip),
    );
    // SAFETY: only read while this program runs.
    let permission_expires_ns = match unsafe { PERMISSIONS.get(key) } {
        Some(permission) if permission.expires_ns() > now => permission.expires_ns(),
        _ => return Err(Outcome::DropNoPermission),
    };
    let expires_ns = allocation.expires_ns().min(permission_expires_ns);
    let job = job()?;
    job.route = to_client(allocation.client());
    job.slot = allocation.slot();
    channel_cache::fill_data_indication(packet, job, &allocation.next_hop, expires_ns);
    relay_data_indication(ctx, packet, job, &mut allocation.next_hop)
}

/// [`data_indication`] for a peer's datagram whose slot in this CPU's
/// [`crate::channel_cache`] holds its Data indication; called only when the express path
/// found that (`Cached::DataIndication`) for the frame in this run, which checked the
/// slot, and its lean egress did not take the frame. Relayed without the hash lookups of
/// the relayed address and the permission. Anything else is left to [`data_indication`]
/// (`Lean::General`); `verdict` is written for `Lean::Done`.
// A separate BPF function: its stack frame is not added to the general path's.
#[inline(never)]
pub fn data_indication_cached(
    ctx: &XdpContext,
    packet: &Packet,
    verdict: &mut Result<Relayed, Outcome>,
) -> Lean {
    let Ok(job) = job() else {
        return Lean::General;
    };
    // Live: the express path's lookup checked the copy's expiry, the earlier of the two
    // entries'.
    let Some(next_hop) = channel_cache::cached_data_indication(packet, job) else {
        return Lean::General;
    };
    Lean::from(
        Some(relay_data_indication(ctx, packet, job, next_hop)),
        verdict,
    )
}

/// Relays a peer's datagram as a Data indication (RFC 8656 §11.4, §11.5) to the client
/// of `job`'s route (and allocation slot); `next_hop`: the entry's next-hop cache, or the
/// cache slot's copy of it.
#[inline(always)]
fn relay_data_indication(
    ctx: &XdpContext,
    packet: &Packet,
    job: &mut Job,
    next_hop: &mut NextHop,
) -> Result<Relayed, Outcome> {
    let data_len = packet.payload_len;
    let pad = (4 - data_len % 4) % 4;
    let slot = job.slot;
    job.reframe = Reframe {
        strip_front: 0,
        data_len,
        pad,
        attributes_after: false,
    };
    job.prefix_words = data_indication_prefix(packet, pad, &mut job.prefix);
    job.relayed = Outcome::RelayedDataIndicationToClient;
    let relayed = forward(ctx, packet, job, next_hop)?;
    add_traffic(slot, data_len, false);
    Ok(relayed)
}

/// A peer's datagram as a Data indication on the lean path ([`egress::lean`]), from this
/// CPU's slot (the express path found `Cached::DataIndication` with `channel` for it):
/// what [`data_indication_cached`] decides for it, without the general path's chain of
/// BPF functions. None: left to the general path, the frame unchanged.
#[inline(always)]
pub fn data_indication_lean(
    ctx: &XdpContext,
    packet: &Packet,
    cache: &Lookup,
    channel: &Channel,
) -> Option<Result<Relayed, Outcome>> {
    let data_len = packet.payload_len;
    let pad = (4 - data_len % 4) % 4;
    // The framing in per-CPU memory: 48 more bytes of stack would not fit the chain.
    let job = job().ok()?;
    let words = data_indication_prefix(packet, pad, &mut job.prefix);
    let framing = LeanFraming::PrependDataIndication {
        prefix: &job.prefix,
        words,
        pad,
    };
    egress::lean(ctx, packet, cache.arrival, channel, data_len, framing)
}

/// Writes into `words` the Data indication's header and attributes in front of the data
/// and returns how many words they take (9 for an IPv4 peer, 12 for IPv6): a fresh
/// random transaction id ([`random_u64`]; RFC 8489 §5: indications from the server get
/// new ones too), XOR-PEER-ADDRESS of the sending peer, then the DATA attribute header;
/// `pad` bytes of padding follow the data.
#[inline(always)]
fn data_indication_prefix(
    packet: &Packet,
    pad: usize,
    words: &mut [u32; MAX_PREFIX_WORDS],
) -> usize {
    let v4 = packet.family == FAMILY_V4;
    let len = if v4 {
        DATA_INDICATION_V4_WORDS
    } else {
        DATA_INDICATION_V6_WORDS
    };
    let (first, second) = (random_u64(), random_u64());
    let transaction = [first as u32, (first >> 32) as u32, second as u32];
    let message_len = ((4 * len - HEADER_LEN) + packet.payload_len + pad) as u16;
    let cookie = wire_word(MAGIC_COOKIE);
    let two = |high: u16, low: u16| ((high as u32) << 16 | low as u32).to_be();
    let port =
        u16::from_be(packet.src_port) ^ u16::from_be_bytes([MAGIC_COOKIE[0], MAGIC_COOKIE[1]]);
    // XOR key of the address: the magic cookie, then (IPv6) the transaction id.
    let key = [cookie, transaction[0], transaction[1], transaction[2]];
    words[0] = two(DATA_INDICATION, message_len);
    words[1] = cookie;
    words[2] = transaction[0];
    words[3] = transaction[1];
    words[4] = transaction[2];
    let data_header = two(ATTR_DATA, packet.payload_len as u16);
    if v4 {
        words[5] = two(ATTR_XOR_PEER_ADDRESS, 8);
        words[6] = two(ADDRESS_FAMILY_V4 as u16, port);
        words[7] = packet.src_ip[0] ^ key[0];
        words[8] = data_header;
    } else {
        words[5] = two(ATTR_XOR_PEER_ADDRESS, 20);
        words[6] = two(ADDRESS_FAMILY_V6 as u16, port);
        for i in 0..4 {
            words[7 + i] = packet.src_ip[i] ^ key[i];
        }
        words[11] = data_header;
    }
    len
}
