//! Turning a parsed frame into the relayed one and sending it on: next hop via
//! bpf_fib_lookup, checksums updated incrementally (RFC 1624), headers rebuilt in front
//! of the application data (which never moves), XDP_TX or bpf_redirect.
//!
//! Nothing in the frame changes until the next hop is known and every length checks
//! out, so every `Err` leaves the frame as it arrived for the stack (`XDP_PASS`).

use aya_ebpf::bindings::{xdp_action, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS};
use aya_ebpf::helpers::{
    bpf_fib_lookup as fib_lookup_helper, bpf_get_prandom_u32, bpf_xdp_adjust_head,
    bpf_xdp_adjust_tail, bpf_xdp_store_bytes,
};
use aya_ebpf::programs::XdpContext;
use aya_ebpf::EbpfContext as _;
use turn_common::checksum::Delta;
use turn_common::counters::Outcome;
use turn_common::maps::FAMILY_V4;

use crate::packet::{be16, load_into, write, Packet, ETH_LEN, UDP_LEN};
use crate::{Relayed, Scratch, EGRESS, MAX_STRIPPED};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// The most zero padding bytes appended after the data (STUN attribute padding).
const MAX_PADDING: usize = 3;

/// Source and destination of the relayed datagram. `family` may differ from the
/// incoming frame's (cross-family relaying, RFC 8656 §7.2 REQUESTED-ADDRESS-FAMILY): the
/// IP header is then rebuilt in the other family.
pub struct Route<'a> {
    pub family: u8,
    pub src_ip: &'a [u8; 16],
    pub src_port: [u8; 2],
    pub dst_ip: &'a [u8; 16],
    pub dst_port: [u8; 2],
}

/// Where the application data is in the frame, and what goes around it on the way out.
pub struct Reframe {
    /// Offset of the application data from the start of the frame.
    pub data_offset: usize,
    pub data_len: usize,
    /// Zero bytes appended after the data (attribute padding of a Data indication).
    pub padding: usize,
}

/// A relayed frame to build.
pub struct Egress<'a> {
    pub route: Route<'a>,
    pub reframe: Reframe,
}

/// Rebuilds the frame as `eth | ip | udp | prefix | data | padding` and sends it,
/// counting it as `relayed`; the prefix (TURN framing in front of the data: nothing, a
/// ChannelData header, or a Data indication's header and attributes) is the first `P`
/// bytes of `scratch.prefix`.
// A separate BPF function: its stack frame is not added to the other paths'. It returns
// `Relayed` (packed in one register) rather than a bare action: a `Result<u32, _>` would
// be returned through memory, and the verifier refuses stack pointers as return values.
#[inline(never)]
pub fn forward<const P: usize>(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    egress: &Egress,
    relayed: Outcome,
) -> Result<Relayed, Outcome> {
    let Egress { route, reframe } = egress;
    let packet = &scratch.packet;
    let ttl = packet.ttl();
    // RFC 8656 §14 (preferred): outgoing TTL = incoming - 1; leave 0/1 to userspace.
    if ttl <= 1 {
        return Err(Outcome::PassTtl);
    }
    if reframe.padding > MAX_PADDING
        || reframe.data_offset < packet.payload
        || P > scratch.prefix.len()
    {
        return Err(Outcome::PassMalformed);
    }
    let payload_end = packet.payload + packet.payload_len;
    let data_end = reframe.data_offset + reframe.data_len;
    if data_end > payload_end {
        return Err(Outcome::PassMalformed);
    }
    let old_prefix_len = reframe.data_offset - packet.payload;
    let old_tail_len = payload_end - data_end;
    if old_prefix_len > MAX_STRIPPED || old_tail_len > MAX_STRIPPED {
        return Err(Outcome::PassStun);
    }

    let cross_family = route.family != packet.family;
    // RFC 768: an IPv4 sender may omit the UDP checksum, which IPv6 requires (RFC 8200
    // §8.1); the fast path only updates checksums incrementally, so userspace relays it.
    if cross_family && packet.udp_checksum == 0 {
        return Err(Outcome::PassCrossFamily);
    }
    let iphl = if route.family == FAMILY_V4 { 20 } else { 40 };
    let udp_len = UDP_LEN + P + reframe.data_len + reframe.padding;
    if udp_len > 0xFFFF - 40 {
        return Err(Outcome::PassTooBig);
    }
    let ip_total_len = iphl + udp_len;
    next_hop(ctx, scratch, route, ip_total_len as u16)?;
    // Out of the interface it came in on (where the program runs), or redirected to one
    // the daemon attached the program to; anything else goes up to the stack as it is.
    let egress_ifindex = scratch.fib.ifindex;
    let action = if egress_ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        // Only records the target: nothing is sent unless the program returns
        // XDP_REDIRECT, so a later Err still passes the frame up.
        EGRESS
            .redirect(egress_ifindex, 0)
            .map_err(|_| Outcome::PassEgressNotAttached)?
    };
    let packet = &scratch.packet;

    let udp_checksum = if packet.family == FAMILY_V4 && packet.udp_checksum == 0 {
        // RFC 768: no checksum stays no checksum over IPv4.
        0
    } else {
        // Pseudo-header addresses, in each header's own family (RFC 768, RFC 8200 §8.1).
        // Its protocol and length sum to the same words in both families (a 32-bit IPv6
        // length under 2^16 adds a zero word), so only the addresses differ.
        let mut delta = replace_address(
            Delta::new(),
            packet.family,
            &packet.src_ip,
            route.family,
            route.src_ip,
        );
        delta = replace_address(
            delta,
            packet.family,
            &packet.dst_ip,
            route.family,
            route.dst_ip,
        );
        // The length is in the pseudo-header and in the UDP header.
        let old_len = packet.udp_len as u16;
        let new_len = udp_len as u16;
        delta = delta
            .remove_word(old_len)
            .remove_word(old_len)
            .add_word(new_len)
            .add_word(new_len);
        delta = delta
            .remove_word(be16(packet.src_port))
            .remove_word(be16(packet.dst_port))
            .add_word(be16(route.src_port))
            .add_word(be16(route.dst_port));
        // Stripped bytes: in front of the data at UDP offset 8 (even), behind it at an
        // offset with the parity of old_prefix_len + data_len. The data keeps its word
        // alignment (every prefix is a multiple of 4 long); padding added is zeros.
        let payload = packet.payload;
        let tail_parity = old_prefix_len + reframe.data_len;
        let udp_checksum = packet.udp_checksum;
        let head = packet.payload_head;
        delta = if old_prefix_len == 4 {
            // A ChannelData header: already read while parsing, no copy needed.
            delta
                .remove_word(be16([head[0], head[1]]))
                .remove_word(be16([head[2], head[3]]))
        } else {
            remove_frame_bytes(
                ctx,
                &mut scratch.stripped,
                delta,
                payload,
                old_prefix_len,
                0,
            )?
        };
        delta = remove_frame_bytes(
            ctx,
            &mut scratch.stripped,
            delta,
            data_end,
            old_tail_len,
            tail_parity,
        )?;
        for i in 0..P / 2 {
            delta = delta.add_word(be16([scratch.prefix[2 * i], scratch.prefix[2 * i + 1]]));
        }
        delta.apply_udp(udp_checksum)
    };

    let header_len = ETH_LEN + iphl + UDP_LEN + P;
    let head_delta = reframe.data_offset as i32 - header_len as i32;
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, head_delta) } != 0 {
        return Err(Outcome::PassAdjustFailed);
    }
    let frame_len = header_len + reframe.data_len + reframe.padding;
    let tail_delta = frame_len as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: as above.
    if tail_delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, tail_delta) } != 0 {
        // Undo the head move so the stack gets the frame as it arrived.
        // SAFETY: as above; moves the head back where it was.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, -head_delta) };
        return Err(Outcome::PassAdjustFailed);
    }

    // Headers are assembled in scratch memory, then copied into the frame at constant
    // offsets per family (direct, verifier-checked access).
    build_headers(scratch, route, udp_len as u16, udp_checksum);
    let headers = &scratch.headers;
    let prefix: &[u8; P] = scratch.prefix.first_chunk().ok_or(Outcome::PassMalformed)?;
    if route.family == FAMILY_V4 {
        write::<{ ETH_LEN + 20 + UDP_LEN }>(
            ctx,
            0,
            headers.first_chunk().ok_or(Outcome::PassMalformed)?,
        )?;
        if P > 0 {
            write(ctx, ETH_LEN + 20 + UDP_LEN, prefix)?;
        }
    } else {
        write::<{ ETH_LEN + 40 + UDP_LEN }>(ctx, 0, headers)?;
        if P > 0 {
            write(ctx, ETH_LEN + 40 + UDP_LEN, prefix)?;
        }
    }
    if reframe.padding > 0 {
        let mut zeros = [0u8; 4];
        // SAFETY: helper call; `zeros` holds at least `padding` (≤ 3) bytes; the helper
        // checks the frame bounds.
        let rc = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                (header_len + reframe.data_len) as u32,
                zeros.as_mut_ptr().cast(),
                reframe.padding as u32,
            )
        };
        if rc != 0 {
            return Err(Outcome::PassMalformed);
        }
    }
    Ok(Relayed {
        action,
        outcome: relayed,
    })
}

/// Replaces an address (4 or 16 bytes per family) in a checksum; `old` and `new` may be
/// of different families.
#[inline(always)]
fn replace_address(
    delta: Delta,
    old_family: u8,
    old: &[u8; 16],
    new_family: u8,
    new: &[u8; 16],
) -> Delta {
    let old_words = if old_family == FAMILY_V4 { 2 } else { 8 };
    let new_words = if new_family == FAMILY_V4 { 2 } else { 8 };
    let mut delta = delta;
    for i in 0..8 {
        if i < old_words {
            delta = delta.remove_word(be16([old[2 * i], old[2 * i + 1]]));
        }
        if i < new_words {
            delta = delta.add_word(be16([new[2 * i], new[2 * i + 1]]));
        }
    }
    delta
}

/// Removes `len` frame bytes at `offset` (copied into `buffer` first), the first of them
/// at `region_offset` within the checksummed region (only its parity matters).
#[inline(always)]
fn remove_frame_bytes(
    ctx: &XdpContext,
    buffer: &mut [u8; MAX_STRIPPED],
    mut delta: Delta,
    offset: usize,
    len: usize,
    region_offset: usize,
) -> Result<Delta, Outcome> {
    if len == 0 {
        return Ok(delta);
    }
    load_into(ctx, offset, buffer, len)?;
    for (i, byte) in buffer.iter().enumerate() {
        if i >= len {
            break;
        }
        delta = delta.remove_byte(*byte, region_offset + i);
    }
    Ok(delta)
}

/// Assembles `eth | ip | udp` of the relayed frame in `scratch.headers` (the first 42
/// bytes for IPv4, all 62 for IPv6), from the next hop in `scratch.fib`.
#[inline(always)]
fn build_headers(scratch: &mut Scratch, route: &Route, udp_len: u16, udp_checksum: u16) {
    let Scratch {
        packet,
        fib,
        headers,
        ..
    } = scratch;
    headers[..6].copy_from_slice(&fib.dmac);
    headers[6..12].copy_from_slice(&fib.smac);
    let len = udp_len.to_be_bytes();
    let checksum = udp_checksum.to_be_bytes();
    let udp = [
        route.src_port[0],
        route.src_port[1],
        route.dst_port[0],
        route.dst_port[1],
        len[0],
        len[1],
        checksum[0],
        checksum[1],
    ];
    match (packet.family == FAMILY_V4, route.family == FAMILY_V4) {
        (true, true) => {
            headers[12..14].copy_from_slice(&[0x08, 0x00]);
            ipv4_header(&mut headers[14..34], packet, route, 20 + udp_len);
            headers[34..42].copy_from_slice(&udp);
        }
        (false, true) => {
            headers[12..14].copy_from_slice(&[0x08, 0x00]);
            ipv4_header_from_v6(&mut headers[14..34], packet, route, 20 + udp_len);
            headers[34..42].copy_from_slice(&udp);
        }
        (true, false) => {
            headers[12..14].copy_from_slice(&[0x86, 0xDD]);
            ipv6_header_from_v4(&mut headers[14..54], packet, route, udp_len);
            headers[54..62].copy_from_slice(&udp);
        }
        (false, false) => {
            headers[12..14].copy_from_slice(&[0x86, 0xDD]);
            ipv6_header(&mut headers[14..54], packet, route, udp_len);
            headers[54..62].copy_from_slice(&udp);
        }
    }
}

/// The relayed IPv4 header for an IPv6 datagram (RFC 8656 §14, IPv6-to-IPv4, preferred
/// behaviour per RFC 7915 §5.1): TOS from the traffic class, TTL = hop limit - 1, DF set
/// (IPv6 is never fragmented on the path, and a relayed IPv4 datagram with DF is atomic,
/// so its identification is 0 per RFC 6864 §4.1), checksum computed from scratch.
#[inline(always)]
fn ipv4_header_from_v6(header: &mut [u8], packet: &Packet, route: &Route, total_len: u16) {
    let Some(header) = header.first_chunk_mut::<20>() else {
        return;
    };
    let source = &packet.ip_header;
    let len = total_len.to_be_bytes();
    *header = [
        0x45,
        traffic_class(source),
        len[0],
        len[1],
        0,
        0,
        0x40,
        0,
        source[7] - 1,
        17,
        0,
        0,
        route.src_ip[0],
        route.src_ip[1],
        route.src_ip[2],
        route.src_ip[3],
        route.dst_ip[0],
        route.dst_ip[1],
        route.dst_ip[2],
        route.dst_ip[3],
    ];
    let mut delta = Delta::new();
    for i in 0..10 {
        delta = delta.add_word(be16([header[2 * i], header[2 * i + 1]]));
    }
    let checksum = delta.checksum().to_be_bytes();
    header[10] = checksum[0];
    header[11] = checksum[1];
}

/// The relayed IPv6 header for an IPv4 datagram (RFC 8656 §14, IPv4-to-IPv6, preferred
/// behaviour per RFC 7915 §4.1): traffic class from the TOS, flow label 0, hop limit =
/// TTL - 1. DF has no IPv6 counterpart (IPv6 is never fragmented on the path).
#[inline(always)]
fn ipv6_header_from_v4(header: &mut [u8], packet: &Packet, route: &Route, payload_len: u16) {
    let Some(header) = header.first_chunk_mut::<40>() else {
        return;
    };
    let tos = packet.ip_header[1];
    let len = payload_len.to_be_bytes();
    header[..8].copy_from_slice(&[
        0x60 | (tos >> 4),
        tos << 4,
        0,
        0,
        len[0],
        len[1],
        17,
        packet.ip_header[8] - 1,
    ]);
    header[8..24].copy_from_slice(route.src_ip);
    header[24..40].copy_from_slice(route.dst_ip);
}

/// The traffic class of an IPv6 header (between the version and the flow label).
#[inline(always)]
fn traffic_class(ip_header: &[u8; 40]) -> u8 {
    (ip_header[0] << 4) | (ip_header[1] >> 4)
}

/// The relayed IPv4 header (RFC 8656 §14 preferred behaviour): the incoming one (TOS
/// and DF kept) with new addresses, length and TTL - 1, checksum per RFC 1624. The
/// Identification is the relay's own, as for any datagram it originates, never the
/// client's: 0 with DF set (an atomic datagram, never reassembled: RFC 6864 §4.2 lets
/// the source use any value), else a random one.
#[inline(always)]
fn ipv4_header(header: &mut [u8], packet: &Packet, route: &Route, total_len: u16) {
    let Some(header) = header.first_chunk_mut::<20>() else {
        return;
    };
    header.copy_from_slice(&packet.ip_header[..20]);
    let old_len = be16([header[2], header[3]]);
    let old_id = be16([header[4], header[5]]);
    let old_ttl_protocol = be16([header[8], header[9]]);
    let old_checksum = be16([header[10], header[11]]);
    let new_len = total_len.to_be_bytes();
    header[2] = new_len[0];
    header[3] = new_len[1];
    // Fragments never reach this point, so DF is the only flag that can be set.
    let id = if header[6] & 0x40 != 0 {
        0
    } else {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_prandom_u32() as u16 }
    };
    header[4..6].copy_from_slice(&id.to_be_bytes());
    header[8] -= 1;
    header[12..16].copy_from_slice(&route.src_ip[..4]);
    header[16..20].copy_from_slice(&route.dst_ip[..4]);
    let delta = Delta::new()
        .remove_word(old_len)
        .add_word(total_len)
        .remove_word(old_id)
        .add_word(id)
        .remove_word(old_ttl_protocol)
        .add_word(be16([header[8], header[9]]));
    let delta = replace_address(delta, FAMILY_V4, &packet.src_ip, FAMILY_V4, route.src_ip);
    let delta = replace_address(delta, FAMILY_V4, &packet.dst_ip, FAMILY_V4, route.dst_ip);
    let checksum = delta.apply(old_checksum).to_be_bytes();
    header[10] = checksum[0];
    header[11] = checksum[1];
}

/// The relayed IPv6 header: traffic class and flow label kept, new addresses, payload
/// length and hop limit - 1.
#[inline(always)]
fn ipv6_header(header: &mut [u8], packet: &Packet, route: &Route, payload_len: u16) {
    let Some(header) = header.first_chunk_mut::<40>() else {
        return;
    };
    header.copy_from_slice(&packet.ip_header);
    let len = payload_len.to_be_bytes();
    header[4] = len[0];
    header[5] = len[1];
    header[7] -= 1;
    header[8..24].copy_from_slice(route.src_ip);
    header[24..40].copy_from_slice(route.dst_ip);
}

/// Looks up the egress interface and MAC addresses for `route` into `scratch.fib`, or why the stack should handle
/// the frame instead (no route / neighbour not resolved / forwarding disabled → PASS;
/// over the egress MTU → PASS, the stack fragments or sends ICMP).
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    route: &Route,
    ip_total_len: u16,
) -> Result<(), Outcome> {
    let family = route.family;
    // The TOS the relayed IPv4 header carries (RFC 8656 §14).
    let tos = match (scratch.packet.family == FAMILY_V4, family == FAMILY_V4) {
        (true, true) => scratch.packet.ip_header[1],
        (false, true) => traffic_class(&scratch.packet.ip_header),
        _ => 0,
    };
    // Every input field is written (no 64-byte memset: a byte loop in BPF); the MAC
    // addresses are outputs.
    let params = &mut scratch.fib;
    params.l4_protocol = 17;
    params.sport = u16::from_ne_bytes(route.src_port);
    params.dport = u16::from_ne_bytes(route.dst_port);
    params.__bindgen_anon_1.tot_len = ip_total_len;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_2.flowinfo = 0;
    params.__bindgen_anon_5.tbid = 0;
    if family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_2.tos = tos;
        params.__bindgen_anon_3.ipv6_src = [v4_word(route.src_ip), 0, 0, 0];
        params.__bindgen_anon_4.ipv6_dst = [v4_word(route.dst_ip), 0, 0, 0];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = words(route.src_ip);
        params.__bindgen_anon_4.ipv6_dst = words(route.dst_ip);
    }
    // SAFETY: helper call with a map-value struct of the size passed.
    let rc = unsafe {
        fib_lookup_helper(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() as i32,
            0,
        )
    };
    match rc {
        rc if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 => Ok(()),
        rc if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 => Err(Outcome::PassTooBig),
        _ => Err(Outcome::PassNoRoute),
    }
}

/// An IPv4 address (first 4 bytes) as `bpf_fib_lookup` holds it (network order).
#[inline(always)]
fn v4_word(address: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([address[0], address[1], address[2], address[3]])
}

#[inline(always)]
fn words(address: &[u8; 16]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, word) in out.iter_mut().enumerate() {
        *word = u32::from_ne_bytes([
            address[4 * i],
            address[4 * i + 1],
            address[4 * i + 2],
            address[4 * i + 3],
        ]);
    }
    out
}
