//! Client → peer: ChannelData (RFC 8656 §12.4, §12.6) and Send indications (§11.2,
//! §11.3) arriving on a listening address are unwrapped and sent from the relayed
//! address to the peer as a plain UDP datagram.

use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::maps::{ClientChannelValue, FlowKey, PermissionKey, FAMILY_V4, FAMILY_V6};
use turn_common::stun::{
    ADDRESS_FAMILY_V4, ADDRESS_FAMILY_V6, ATTR_DATA, ATTR_FINGERPRINT, ATTR_XOR_PEER_ADDRESS,
    CHANNEL_DATA_HEADER_LEN, HEADER_LEN, MAGIC_COOKIE,
};

use crate::egress::{forward, Egress, Reframe, Route};
use crate::fingerprint;
use crate::packet::{be16, load, load_into, Packet, MAX_OFFSET};
use crate::{add_traffic, now_ns, Relayed, Scratch, CLIENT_ALLOCATIONS, MAX_STRIPPED, PERMISSIONS};

/// The most attributes a Send indication may have for the fast path to take it
/// (XOR-PEER-ADDRESS, DATA, FINGERPRINT).
const MAX_ATTRIBUTES: usize = 3;

/// Relays a ChannelData message of a bound channel. The UDP payload must be exactly the
/// header and data plus at most the padding to a multiple of 4 (RFC 8656 §12.5).
// A separate BPF function: its stack frame is not added to the other paths'.
#[inline(never)]
pub fn channel_data(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    channel: &ClientChannelValue,
) -> Result<Relayed, Outcome> {
    let packet = &scratch.packet;
    let header = packet.payload_head;
    let data_len = be16([header[2], header[3]]) as usize;
    let framed = CHANNEL_DATA_HEADER_LEN + data_len;
    if packet.payload_len < framed || packet.payload_len > (framed + 3) & !3 {
        return Err(Outcome::PassMalformed);
    }
    if channel.expires_ns() <= now_ns() {
        return Err(Outcome::PassExpired);
    }
    let route = Route {
        family: channel.peer_family(),
        src_ip: channel.relay_ip(),
        src_port: channel.relay_port(),
        dst_ip: channel.peer_ip(),
        dst_port: channel.peer_port(),
    };
    let reframe = Reframe {
        data_offset: packet.payload + CHANNEL_DATA_HEADER_LEN,
        data_len,
        padding: 0,
    };
    let relayed = forward::<0>(
        ctx,
        scratch,
        &Egress { route, reframe },
        Outcome::RelayedChannelDataToPeer,
    )?;
    add_traffic(channel.slot(), data_len, true);
    Ok(relayed)
}

/// What a bounded walk over a Send indication's attributes found.
#[derive(Default)]
struct SendIndication {
    peer_family: u8,
    peer_ip: [u8; 16],
    peer_port: [u8; 2],
    data_offset: usize,
    data_len: usize,
    /// Offset of a trailing FINGERPRINT attribute from the start of the message (0: none)
    /// and its value.
    fingerprint_offset: usize,
    fingerprint: u32,
}

/// Relays a Send indication (RFC 8656 §11.2) from a client with a fast-path allocation
/// to a peer it has a permission for. `Err(Outcome::PassStun)`: not a Send indication
/// the fast path takes (malformed, attributes other than the ones it relays by, or no
/// such flow): the caller goes on with the peer-side lookup, and passes it to userspace
/// if that finds nothing either. (Not an `Option`: a BPF function's return value must be
/// fully initialised.)
///
/// A trailing FINGERPRINT is verified (RFC 8489 §7.3, §14.7) just before relaying; a
/// message whose FINGERPRINT does not match is passed to userspace as it is
/// (`PassBadFingerprint`), which then treats it exactly as it treats any such message.
// A separate BPF function: its stack frame is not added to the other paths'.
#[inline(never)]
pub fn send_indication(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Relayed, Outcome> {
    let mut send = SendIndication::default();
    if !parse_send_indication(ctx, &scratch.packet, &mut scratch.stripped, &mut send) {
        return Err(Outcome::PassStun);
    }
    let packet = &scratch.packet;
    scratch.flow_key = FlowKey::new(
        packet.family,
        packet.src_ip,
        packet.src_port,
        packet.dst_ip,
        packet.dst_port,
        send.peer_family,
    );
    // SAFETY: the value is only read while this program runs (RCU-protected).
    let Some(allocation) = (unsafe { CLIENT_ALLOCATIONS.get(&scratch.flow_key) }) else {
        return Err(Outcome::PassStun);
    };
    let now = now_ns();
    if allocation.expires_ns() <= now {
        return Err(Outcome::PassExpired);
    }
    scratch.permission_key = PermissionKey::new(
        send.peer_family,
        *allocation.relay_ip(),
        allocation.relay_port(),
        send.peer_ip,
    );
    // SAFETY: as above.
    let Some(permission) = (unsafe { PERMISSIONS.get(&scratch.permission_key) }) else {
        return Err(Outcome::PassNoPermission);
    };
    if permission.expires_ns() <= now {
        return Err(Outcome::PassExpired);
    }
    if !permission.covers_port(send.peer_port) {
        return Err(Outcome::PassPeerPortNotPermitted);
    }
    if send.fingerprint_offset != 0
        && !fingerprint::matches(
            ctx,
            scratch.packet.payload,
            send.fingerprint_offset,
            send.fingerprint,
        )
    {
        return Err(Outcome::PassBadFingerprint);
    }
    let route = Route {
        family: send.peer_family,
        src_ip: allocation.relay_ip(),
        src_port: allocation.relay_port(),
        dst_ip: &send.peer_ip,
        dst_port: send.peer_port,
    };
    let reframe = Reframe {
        data_offset: send.data_offset,
        data_len: send.data_len,
        padding: 0,
    };
    let relayed = forward::<0>(
        ctx,
        scratch,
        &Egress { route, reframe },
        Outcome::RelayedSendToPeer,
    )?;
    add_traffic(allocation.slot(), send.data_len, true);
    Ok(relayed)
}

/// Walks at most [`MAX_ATTRIBUTES`] attributes; accepts exactly one XOR-PEER-ADDRESS,
/// one DATA and optionally FINGERPRINT as the last attribute (RFC 8489 §14.7; not
/// verified here), nothing else. DONT-FRAGMENT in particular goes to userspace, which
/// discards the indication (RFC 8656 §11.2: this server does not support it). Fills `out`
/// and returns true when the message is one the fast path takes. `header` is scratch
/// memory for the STUN header.
// A separate BPF function to keep the caller's stack frame small; results go through
// an out parameter since a BPF function cannot return a pointer to stack memory.
#[inline(never)]
fn parse_send_indication(
    ctx: &XdpContext,
    packet: &Packet,
    header: &mut [u8; MAX_STRIPPED],
    out: &mut SendIndication,
) -> bool {
    if load_into(ctx, packet.payload, header, HEADER_LEN).is_err() {
        return false;
    }
    let message_len = be16([header[2], header[3]]) as usize;
    if header[4..8] != MAGIC_COOKIE
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
        let Ok(attribute) = load::<4>(ctx, packet.payload + offset) else {
            return false;
        };
        let kind = be16([attribute[0], attribute[1]]);
        let len = be16([attribute[2], attribute[3]]) as usize;
        let value = packet.payload + offset + 4;
        let next = offset + 4 + ((len + 3) & !3);
        if next > packet.payload_len {
            return false;
        }
        match kind {
            ATTR_XOR_PEER_ADDRESS if !peer_found => {
                if !xor_peer_address(ctx, value, len, header, out) {
                    return false;
                }
                peer_found = true;
            }
            ATTR_DATA if !data_found => {
                out.data_offset = value;
                out.data_len = len;
                data_found = true;
            }
            ATTR_FINGERPRINT if len == 4 && next == packet.payload_len => {
                let Ok(value) = load::<4>(ctx, value) else {
                    return false;
                };
                out.fingerprint = u32::from_be_bytes(value);
                out.fingerprint_offset = offset;
            }
            _ => return false,
        }
        offset = next;
    }
    offset == packet.payload_len && peer_found && data_found
}

/// Decodes XOR-PEER-ADDRESS (RFC 8489 §14.2) at frame offset `value` into `out`.
#[inline(always)]
fn xor_peer_address(
    ctx: &XdpContext,
    value: usize,
    len: usize,
    header: &[u8; MAX_STRIPPED],
    out: &mut SendIndication,
) -> bool {
    let Ok(head) = load::<4>(ctx, value) else {
        return false;
    };
    out.peer_port = [head[2] ^ MAGIC_COOKIE[0], head[3] ^ MAGIC_COOKIE[1]];
    match (head[1], len) {
        (ADDRESS_FAMILY_V4, 8) => {
            let Ok(address) = load::<4>(ctx, value + 4) else {
                return false;
            };
            out.peer_ip = [0; 16];
            for i in 0..4 {
                out.peer_ip[i] = address[i] ^ MAGIC_COOKIE[i];
            }
            out.peer_family = FAMILY_V4;
            true
        }
        (ADDRESS_FAMILY_V6, 20) => {
            let Ok(address) = load::<16>(ctx, value + 4) else {
                return false;
            };
            // XORed with the magic cookie followed by the transaction id.
            for i in 0..16 {
                out.peer_ip[i] = address[i] ^ header[4 + i];
            }
            out.peer_family = FAMILY_V6;
            true
        }
        _ => false,
    }
}
