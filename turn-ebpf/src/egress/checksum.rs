//! The relayed frame's UDP checksum, updated incrementally (RFC 1624) from the incoming
//! one: addresses, ports, lengths and the TURN framing that goes or comes.

use aya_ebpf::programs::XdpContext;
use turn_common::checksum::Delta;
use turn_common::counters::Outcome;
use turn_common::maps::FAMILY_V4;

use super::{lengths, strip_tail, Job, Reframe, Route, MAX_PREFIX_WORDS, MAX_STRIPPED};
use crate::packet::{load, read, region, Address, Packet};

/// The relayed UDP checksum: the incoming one with the pseudo-header addresses (each in
/// its header's family), the length (in the pseudo-header and the UDP header), the ports
/// and the TURN framing replaced. Its protocol word is the same in both families (a
/// 32-bit IPv6 length under 2^16 adds a zero word). No checksum stays no checksum over
/// IPv4 (RFC 768).
#[inline(never)]
pub(super) fn udp_checksum(ctx: &XdpContext, packet: &Packet, job: &Job) -> Result<u16, Outcome> {
    if packet.family == FAMILY_V4 && packet.udp_checksum == 0 {
        return Ok(0);
    }
    let (udp_len, _) = lengths(job);
    let delta = headers_delta(packet, &job.route, udp_len as u16);
    let delta = framing_delta(ctx, delta, packet, &job.reframe)?;
    let delta = add_prefix(delta, &job.prefix, job.prefix_words);
    Ok(delta.apply_udp(packet.udp_checksum))
}

/// `delta` with the TURN framing that goes removed (`reframe`): what is in front of the
/// data and behind it.
#[inline(always)]
pub(super) fn framing_delta(
    ctx: &XdpContext,
    mut delta: Delta,
    packet: &Packet,
    reframe: &Reframe,
) -> Result<Delta, Outcome> {
    // Framing in front of the data: word-aligned at UDP payload offset 0.
    if reframe.strip_front == 4 {
        // A ChannelData header, read while parsing.
        delta = delta.remove_u32(packet.head_be());
    } else {
        delta = remove_frame_words(ctx, delta, packet.payload, reframe.strip_front)?;
    }
    // Behind the data: the data's own padding (up to 3 bytes; the data keeps its word
    // alignment, as every prefix is a multiple of 4 long), then whole attributes
    // (word-aligned). The padding is the end of the four bytes that end where it ends.
    // A ChannelData datagram may carry less than the whole padding (RFC 8656 §12.5 does
    // not require it over UDP): those four bytes then start at an odd offset, where
    // they fill the checksum's 16-bit words rotated by a byte.
    let strip_tail = strip_tail(packet, reframe);
    let data_end = packet.payload + reframe.strip_front + reframe.data_len;
    let padding = ((4 - reframe.data_len % 4) % 4).min(strip_tail);
    if padding > 0 {
        let word = load::<u32>(ctx, data_end + padding - 4).ok_or(Outcome::PassMalformed)?;
        let bytes = u32::from_be(word) & ((1 << (8 * padding)) - 1);
        let bytes = if (reframe.data_len + padding) % 2 == 1 {
            bytes.rotate_left(8)
        } else {
            bytes
        };
        delta = delta.remove_u32(bytes);
    }
    if reframe.attributes_after {
        delta = remove_frame_words(ctx, delta, data_end + padding, strip_tail - padding)?;
    } else if strip_tail != padding {
        return Err(Outcome::PassMalformed);
    }
    Ok(delta)
}

/// The UDP checksum delta of the headers: the pseudo-header addresses (each in its
/// header's family), the length (in the pseudo-header and the UDP header) and the ports
/// of the incoming frame replaced by the relayed datagram's (`route`, `udp_len`).
#[inline(always)]
fn headers_delta(packet: &Packet, route: &Route, udp_len: u16) -> Delta {
    length_delta(route_delta(packet, route), packet, udp_len)
}

/// The part of [`headers_delta`] that depends on addresses and ports only: the
/// pseudo-header addresses and the ports of the incoming frame replaced by `route`'s.
#[inline(always)]
pub fn route_delta(packet: &Packet, route: &Route) -> Delta {
    let mut delta = remove_address(Delta::new(), packet.family, &packet.src_ip);
    delta = remove_address(delta, packet.family, &packet.dst_ip);
    delta = add_address(delta, route.family, &route.src_ip);
    delta = add_address(delta, route.family, &route.dst_ip);
    delta
        .remove_u32(ports(packet.src_port, packet.dst_port))
        .add_u32(ports(route.src_port, route.dst_port))
}

/// `delta` ([`route_delta`]) with the rest of [`headers_delta`]: the UDP length, in the
/// pseudo-header and the UDP header, replaced by `udp_len`.
#[inline(always)]
pub(super) fn length_delta(delta: Delta, packet: &Packet, udp_len: u16) -> Delta {
    delta
        .remove_word(packet.udp_len)
        .remove_word(packet.udp_len)
        .add_word(udp_len)
        .add_word(udp_len)
}

/// Two ports (memory-order words) as the big-endian value of the 32 bits they fill.
#[inline(always)]
fn ports(high: u16, low: u16) -> u32 {
    (u16::from_be(high) as u32) << 16 | u16::from_be(low) as u32
}

/// Word `i` of an address as a big-endian value.
#[inline(always)]
pub(super) fn address_word(address: &Address, i: usize) -> u32 {
    u32::from_be(address[i])
}

#[inline(always)]
fn add_address(delta: Delta, family: u8, address: &Address) -> Delta {
    address_step(delta, family, address, Delta::add_u32)
}

#[inline(always)]
fn remove_address(delta: Delta, family: u8, address: &Address) -> Delta {
    address_step(delta, family, address, Delta::remove_u32)
}

/// Applies `step` to each word of an address of `family` (one for IPv4, four for IPv6);
/// generic, so each use is its own inlined copy (no function pointer in BPF).
#[inline(always)]
fn address_step(
    mut delta: Delta,
    family: u8,
    address: &Address,
    step: impl Fn(Delta, u32) -> Delta,
) -> Delta {
    delta = step(delta, address_word(address, 0));
    if family != FAMILY_V4 {
        for i in 1..4 {
            delta = step(delta, address_word(address, i));
        }
    }
    delta
}

/// Removes `len` frame bytes at `offset` (a multiple of 4 long, word-aligned in the
/// checksummed region, at most [`MAX_STRIPPED`]). With [`MAX_STRIPPED`] bytes of frame
/// there (the framing of a Send indication with some data behind it), one bounds check
/// covers them all; else each word is checked.
#[inline(always)]
fn remove_frame_words(
    ctx: &XdpContext,
    mut delta: Delta,
    offset: usize,
    len: usize,
) -> Result<Delta, Outcome> {
    if !len.is_multiple_of(4) {
        return Err(Outcome::PassMalformed);
    }
    if let Some(start) = region(ctx, offset, MAX_STRIPPED) {
        for i in 0..MAX_STRIPPED / 4 {
            if 4 * i >= len {
                break;
            }
            // SAFETY: within the region's MAX_STRIPPED bytes.
            let word = unsafe { read::<u32>(start, 4 * i) };
            delta = delta.remove_u32(u32::from_be(word));
        }
        return Ok(delta);
    }
    for i in 0..MAX_STRIPPED / 4 {
        if 4 * i >= len {
            break;
        }
        let word = load::<u32>(ctx, offset + 4 * i).ok_or(Outcome::PassMalformed)?;
        delta = delta.remove_u32(u32::from_be(word));
    }
    Ok(delta)
}

/// `delta` with the first `words` words of `prefix` (wire words) added.
#[inline(always)]
pub(super) fn add_prefix(mut delta: Delta, prefix: &[u32; MAX_PREFIX_WORDS], words: usize) -> Delta {
    for (i, word) in prefix.iter().enumerate() {
        if i >= words {
            break;
        }
        delta = delta.add_u32(u32::from_be(*word));
    }
    delta
}
