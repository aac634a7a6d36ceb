//! Peer → client: a datagram arriving on a relayed address is framed as ChannelData
//! when a channel is bound to the peer (RFC 8656 §12.5), else as a Data indication when
//! a permission exists (§11.4, §11.5), and sent from the listening address to the
//! client. Without a valid permission it is dropped (§9, §11.4).

use aya_ebpf::helpers::bpf_get_prandom_u32;
use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::maps::{PeerChannelKey, PermissionKey, RelayValue, FAMILY_V4};
use turn_common::stun::{
    ADDRESS_FAMILY_V4, ADDRESS_FAMILY_V6, ATTR_DATA, ATTR_XOR_PEER_ADDRESS, DATA_INDICATION,
    MAGIC_COOKIE,
};

use crate::egress::{forward, Egress, Reframe, Route};
use crate::packet::Packet;
use crate::{add_traffic, now_ns, Relayed, Scratch, PEER_CHANNELS, PERMISSIONS};

/// Data indication framing in front of the data: STUN header (20), XOR-PEER-ADDRESS
/// (4 + 8 or 4 + 20) and the DATA attribute header (4).
const DATA_INDICATION_V4_LEN: usize = 36;
const DATA_INDICATION_V6_LEN: usize = 48;

// A separate BPF function: its stack frame is not added to the other paths'.
#[inline(never)]
pub fn relay(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    allocation: &RelayValue,
) -> Result<Relayed, Outcome> {
    let packet = &scratch.packet;
    let now = now_ns();
    if allocation.expires_ns() <= now {
        return Err(Outcome::PassExpired);
    }
    let route = Route {
        family: allocation.client_family(),
        src_ip: allocation.listener_ip(),
        src_port: allocation.listener_port(),
        dst_ip: allocation.client_ip(),
        dst_port: allocation.client_port(),
    };
    let data_len = packet.payload_len;
    scratch.peer_channel_key = PeerChannelKey::new(
        packet.family,
        packet.dst_ip,
        packet.dst_port,
        packet.src_ip,
        packet.src_port,
    );
    // SAFETY: the value is only read while this program runs (RCU-protected).
    if let Some(channel) = unsafe { PEER_CHANNELS.get(&scratch.peer_channel_key) } {
        if channel.expires_ns() > now {
            let number = channel.number();
            let len = (data_len as u16).to_be_bytes();
            let reframe = Reframe {
                data_offset: packet.payload,
                data_len,
                padding: 0,
            };
            scratch.prefix[..4].copy_from_slice(&[number[0], number[1], len[0], len[1]]);
            let relayed = forward::<4>(
                ctx,
                scratch,
                &Egress { route, reframe },
                Outcome::RelayedChannelDataToClient,
            )?;
            add_traffic(allocation.slot(), data_len, false);
            return Ok(relayed);
        }
    }
    let packet = &scratch.packet;
    scratch.permission_key =
        PermissionKey::new(packet.family, packet.dst_ip, packet.dst_port, packet.src_ip);
    // SAFETY: as above.
    match unsafe { PERMISSIONS.get(&scratch.permission_key) } {
        Some(permission) if permission.expires_ns() > now => {}
        _ => return Err(Outcome::DropNoPermission),
    }
    let padding = (4 - data_len % 4) % 4;
    let reframe = Reframe {
        data_offset: packet.payload,
        data_len,
        padding,
    };
    let transaction_id = transaction_id();
    let egress = Egress { route, reframe };
    let outcome = Outcome::RelayedDataIndicationToClient;
    let relayed = if packet.family == FAMILY_V4 {
        data_indication::<DATA_INDICATION_V4_LEN>(scratch, &transaction_id, data_len + padding);
        forward::<DATA_INDICATION_V4_LEN>(ctx, scratch, &egress, outcome)?
    } else {
        data_indication::<DATA_INDICATION_V6_LEN>(scratch, &transaction_id, data_len + padding);
        forward::<DATA_INDICATION_V6_LEN>(ctx, scratch, &egress, outcome)?
    };
    add_traffic(allocation.slot(), data_len, false);
    Ok(relayed)
}

/// A fresh random transaction id (RFC 8489 §5: uniformly random for each request;
/// indications from the server get new ones too).
#[inline(always)]
fn transaction_id() -> [u8; 12] {
    let mut id = [0u8; 12];
    for chunk in id.chunks_exact_mut(4) {
        // SAFETY: helper without arguments.
        chunk.copy_from_slice(&unsafe { bpf_get_prandom_u32() }.to_ne_bytes());
    }
    id
}

/// Writes into `scratch.prefix` the Data indication header and attributes in front of
/// `padded_data_len` bytes of DATA value: XOR-PEER-ADDRESS of the sending peer, then the
/// DATA attribute header.
#[inline(always)]
fn data_indication<const N: usize>(
    scratch: &mut Scratch,
    transaction_id: &[u8; 12],
    padded_data_len: usize,
) {
    let packet: &Packet = &scratch.packet;
    let Some(out) = scratch.prefix.first_chunk_mut::<N>() else {
        return;
    };
    out.fill(0);
    // N = 20 (header) + 4 + 4 + address (XOR-PEER-ADDRESS) + 4 (DATA header).
    let address_len = N - 32;
    let message_len = ((N - 20) + padded_data_len) as u16;
    out[0..2].copy_from_slice(&DATA_INDICATION.to_be_bytes());
    out[2..4].copy_from_slice(&message_len.to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC_COOKIE);
    out[8..20].copy_from_slice(transaction_id);
    out[20..22].copy_from_slice(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
    out[22..24].copy_from_slice(&((4 + address_len) as u16).to_be_bytes());
    out[25] = if address_len == 4 {
        ADDRESS_FAMILY_V4
    } else {
        ADDRESS_FAMILY_V6
    };
    out[26] = packet.src_port[0] ^ MAGIC_COOKIE[0];
    out[27] = packet.src_port[1] ^ MAGIC_COOKIE[1];
    // XOR key: magic cookie, then (IPv6) the transaction id, which sit at out[4..20].
    for i in 0..16 {
        if i < address_len {
            out[28 + i] = packet.src_ip[i] ^ out[4 + i];
        }
    }
    let data_attribute = 28 + address_len;
    out[data_attribute..data_attribute + 2].copy_from_slice(&ATTR_DATA.to_be_bytes());
    let data_len = packet.payload_len as u16;
    out[data_attribute + 2..data_attribute + 4].copy_from_slice(&data_len.to_be_bytes());
}
