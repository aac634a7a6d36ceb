//! Writing the relayed frame's headers (Ethernet, IPv4 or IPv6, UDP) and its TURN framing
//! at constant offsets from the frame's (moved) start.

use aya_ebpf::programs::XdpContext;
use turn_common::checksum::Delta;
use turn_common::counters::Outcome;
use turn_common::maps::{NextHop, FAMILY_V4};

use super::checksum::address_word;
use super::{Route, IPPROTO_UDP, MAX_PREFIX_WORDS};
use crate::packet::{bounds, region, Packet, ETH_LEN, IPV4_LEN, IPV6_LEN, MAX_OFFSET, UDP_LEN};

/// Writes `values` (integers) one after the other from constant `offset`, bounds checked
/// once ([`write`]).
#[inline(always)]
pub(super) fn put<E: Copy, const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    values: [E; N],
) -> Result<(), Outcome> {
    let start = region(ctx, 0, offset + core::mem::size_of::<[E; N]>())
        .ok_or(Outcome::PassMalformed)?;
    // SAFETY: inside the frame (checked just above).
    unsafe { write(start, offset, values) };
    Ok(())
}

/// Writes `values` (integers) one after the other from `offset` past the frame's
/// `start`, each with a store of its width (see [`crate::packet::load`] on alignment):
/// one volatile store of a whole array would go through a copy of it on the stack.
///
/// # Safety
/// `start` is from [`region`] for a length of at least `offset` plus the values' size.
#[inline(always)]
unsafe fn write<E: Copy, const N: usize>(start: usize, offset: usize, values: [E; N]) {
    let first = (start + offset) as *mut E;
    for (i, value) in values.into_iter().enumerate() {
        // SAFETY: element `i` lies inside the frame, as the caller vouches.
        unsafe { core::ptr::write_volatile(first.add(i), value) };
    }
}

/// Writes the relayed frame's Ethernet header (`next_hop`'s MAC addresses), IP header
/// (of `route`'s family, [`ipv4_header`] or [`ipv6_header`]) and UDP header at the
/// frame's (moved) start, with one bounds check; returns where the UDP payload starts.
/// `identification`: the IPv4 header's when the frame may be fragmented ([`ipv4_header`]),
/// random.
#[inline(always)]
pub(super) fn write_headers(
    ctx: &XdpContext,
    next_hop: &NextHop,
    packet: &Packet,
    route: &Route,
    udp_len: u16,
    udp_checksum: u16,
    identification: u16,
) -> Result<usize, Outcome> {
    // Read as words: a copy of the bytes from the map value into the frame would become
    // a `memmove` call.
    // SAFETY: the 12 bytes of the entry's MAC addresses, 4-aligned in every value (the
    // layout tests of turn-common pin the offsets).
    let macs =
        unsafe { core::ptr::read_volatile(&next_hop.macs as *const [u8; 12] as *const [u32; 3]) };
    let udp = [
        route.src_port,
        route.dst_port,
        udp_len.to_be(),
        udp_checksum.to_be(),
    ];
    let v4 = route.family == FAMILY_V4;
    let ip_header_len = if v4 { IPV4_LEN } else { IPV6_LEN };
    let start =
        region(ctx, 0, ETH_LEN + ip_header_len + UDP_LEN).ok_or(Outcome::PassMalformed)?;
    // SAFETY (every `write`): within the three headers, whose end the frame reaches.
    unsafe {
        write(start, 0, macs);
        if v4 {
            write(start, 12, [0x0800u16.to_be()]);
            write(
                start,
                ETH_LEN,
                ipv4_header(packet, route, udp_len, identification),
            );
        } else {
            write(start, 12, [0x86DDu16.to_be()]);
            write(start, ETH_LEN, ipv6_header(packet, route, udp_len));
        }
        write(start, ETH_LEN + ip_header_len, udp);
    }
    Ok(ETH_LEN + ip_header_len + UDP_LEN)
}

/// The IPv4 header of the relayed frame (RFC 8656 §14, preferred behaviour), as wire
/// words: TOS and DF kept (DF set from IPv6, RFC 7915 §5.1), TTL − 1, and the relay's
/// own identification, never the client's: 0 with DF set (an atomic datagram, never
/// reassembled: RFC 6864 §4.2 lets the source use any value), else `identification`, a
/// random one.
#[inline(always)]
fn ipv4_header(packet: &Packet, route: &Route, udp_len: u16, identification: u16) -> [u32; 5] {
    let total_len = IPV4_LEN as u32 + udp_len as u32;
    let (identification, flags) = if packet.dont_fragment {
        (0, 0x4000)
    } else {
        (identification as u32, 0)
    };
    let words = [
        0x4500_0000 | (packet.tos as u32) << 16 | total_len,
        identification << 16 | flags,
        ((packet.ttl - 1) as u32) << 24 | (IPPROTO_UDP as u32) << 16,
        address_word(&route.src_ip, 0),
        address_word(&route.dst_ip, 0),
    ];
    let mut delta = Delta::new();
    for word in words {
        delta = delta.add_u32(word);
    }
    let checksum = delta.checksum() as u32;
    [
        words[0].to_be(),
        words[1].to_be(),
        (words[2] | checksum).to_be(),
        route.src_ip[0],
        route.dst_ip[0],
    ]
}

/// The IPv6 header of the relayed frame, as wire words: traffic class and flow label
/// kept (from IPv4: the TOS, flow label 0, RFC 7915 §4.1), hop limit − 1.
#[inline(always)]
fn ipv6_header(packet: &Packet, route: &Route, udp_len: u16) -> [u32; 10] {
    let first = if packet.family == FAMILY_V4 {
        0x6000_0000 | (packet.tos as u32) << 20
    } else {
        packet.ipv6_first_word
    };
    let second = (udp_len as u32) << 16 | (IPPROTO_UDP as u32) << 8 | (packet.ttl - 1) as u32;
    let (src, dst) = (route.src_ip, route.dst_ip);
    [
        first.to_be(),
        second.to_be(),
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ]
}

/// Writes the first `words` words of `prefix` (wire words) from `offset` on. With
/// [`MAX_PREFIX_WORDS`] words of frame there (a Data indication's 9 or 12 words and some
/// data behind them), one bounds check covers them all; else each word is checked.
#[inline(always)]
pub(super) fn write_prefix(
    ctx: &XdpContext,
    offset: usize,
    prefix: &[u32; MAX_PREFIX_WORDS],
    words: usize,
) -> Result<(), Outcome> {
    if let Some(start) = region(ctx, offset, 4 * MAX_PREFIX_WORDS) {
        for (i, word) in prefix.iter().enumerate() {
            if i >= words {
                break;
            }
            // SAFETY: within the region's MAX_PREFIX_WORDS words.
            unsafe { write(start, 4 * i, [*word]) };
        }
        return Ok(());
    }
    for (i, word) in prefix.iter().enumerate() {
        if i >= words {
            break;
        }
        put(ctx, offset + 4 * i, [*word])?;
    }
    Ok(())
}

/// Writes `len` (1..=3) zero bytes at variable `offset`, which the frame ends `len`
/// bytes after: the end of the word that ends there is rewritten (a check of one byte
/// past a pointer is folded by LLVM into a comparison the verifier cannot follow).
#[inline(always)]
pub(super) fn write_zeros(ctx: &XdpContext, offset: usize, len: usize) -> Result<(), Outcome> {
    let (data, end) = bounds(ctx);
    let start = data + ((offset + len - 4) & MAX_OFFSET);
    if start + 4 > end {
        return Err(Outcome::PassMalformed);
    }
    // The first `4 - len` bytes in memory order are the low ones (little-endian).
    let keep = (1u32 << (8 * (4 - (len & 3)))) - 1;
    // SAFETY: four bytes inside the frame (checked just above); see `load` on alignment.
    unsafe {
        let word = start as *mut u32;
        word.write_volatile(word.read_volatile() & keep);
    }
    Ok(())
}
