//! Parsing of Ethernet / IPv4 / IPv6 / UDP by direct packet access at constant offsets:
//! one bounds check for the IP and UDP headers ([`region`]), one per other load
//! ([`load`]), word-sized loads. Anything the fast path does not handle is an
//! `Err(Outcome::Pass…)`.

use aya_ebpf::programs::XdpContext;
use turn_common::checksum::Delta;
use turn_common::counters::Outcome;
use turn_common::maps::{FAMILY_V4, FAMILY_V6};
use turn_common::stun::{CHANNEL_MAX, CHANNEL_MIN, HEADER_LEN, SEND_INDICATION};

use crate::channel_cache::Tag;

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const IPPROTO_UDP: u8 = 17;
/// Offsets beyond this are never valid (keeps variable offsets bounded for the verifier).
pub const MAX_OFFSET: usize = 0x3FFF;

/// An IP address as the maps hold it (16 bytes; IPv4 in the first 4, the rest zero), as
/// four words each holding four bytes in memory order: copied and compared by words.
pub type Address = [u32; 4];

/// The frame's first byte and the end of it, read afresh (volatile loads): LLVM would
/// otherwise pass the 32-bit context fields into a separate BPF function as arguments,
/// and the zero extension it then adds makes the verifier lose the packet pointers.
#[inline(always)]
pub fn bounds(ctx: &XdpContext) -> (usize, usize) {
    let md = ctx.ctx;
    // SAFETY: the program's context, valid while it runs.
    unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*md).data)) as usize,
            core::ptr::read_volatile(core::ptr::addr_of!((*md).data_end)) as usize,
        )
    }
}

/// A `T` (an integer or an array of them) at `offset` from the start of the frame, or
/// None past its end; a variable `offset` is masked to [`MAX_OFFSET`] so the verifier
/// can bound the access.
///
/// One load of `T`'s width, as C programs do through header structs: frames guarantee
/// no alignment (IP headers sit at 2 mod 4), and the BPF JITs of architectures with
/// efficient unaligned access (x86-64, arm64) allow misaligned packet loads, while LLVM
/// would split a load it must treat as unaligned into single bytes. (The build does not
/// turn on LLVM's misaligned-access feature instead: it would also make misaligned
/// stack accesses, which the verifier refuses.)
#[inline(always)]
pub fn load<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    let (data, end) = bounds(ctx);
    let start = data + (offset & MAX_OFFSET);
    if start + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: inside the frame (checked just above); see above for the alignment.
    Some(unsafe { core::ptr::read_volatile(start as *const T) })
}

/// Where the `len` bytes at `offset` from the start of the frame begin, if the frame
/// holds them (a variable `offset` masked as in [`load`]): those bytes are then read
/// with [`read`] (or written, `egress::headers`) with no bounds check each. `len` is a
/// constant: the verifier bounds only accesses within a constant length checked.
#[inline(always)]
pub fn region(ctx: &XdpContext, offset: usize, len: usize) -> Option<usize> {
    let (data, end) = bounds(ctx);
    let start = data + (offset & MAX_OFFSET);
    if start + len > end {
        return None;
    }
    Some(start)
}

/// A `T` at `offset` from the `start` of a [`region`] (one load of `T`'s width, as
/// [`load`]).
///
/// # Safety
/// `start` is from [`region`] for a length of at least `offset` plus `T`'s size.
#[inline(always)]
pub unsafe fn read<T: Copy>(start: usize, offset: usize) -> T {
    // SAFETY: inside the frame, as the caller vouches.
    unsafe { core::ptr::read_volatile((start + offset) as *const T) }
}

/// A big-endian 16-bit value at `offset` (see [`load`]).
#[inline(always)]
pub fn load_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    load::<u16>(ctx, offset).map(u16::from_be)
}

/// The bytes of an [`Address`] as the map keys hold them.
#[inline(always)]
pub fn address_bytes(address: Address) -> [u8; 16] {
    // SAFETY: plain integers to plain bytes of the same size.
    unsafe { core::mem::transmute::<Address, [u8; 16]>(address) }
}

/// An [`Address`] from the bytes of a map value, read as four words.
///
/// # Safety
/// `bytes` must be 4-aligned, as every address of the map values is (turn-common's
/// layout tests pin the offsets).
#[inline(always)]
pub unsafe fn address_words(bytes: &[u8; 16]) -> Address {
    // SAFETY: the caller vouches for the alignment; same size, plain integers.
    unsafe { core::ptr::read(bytes as *const [u8; 16] as *const Address) }
}

/// What a UDP payload looks like, by its first bytes (RFC 7983 §7 demultiplexing).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    ChannelData,
    SendIndication,
    Stun,
    Other,
}

/// The parts of a UDP/IP frame the fast path needs, on the stack. Wire quantities are
/// kept as words holding the bytes in memory order.
#[derive(Clone, Copy)]
pub struct Packet {
    pub src_ip: Address,
    pub dst_ip: Address,
    /// Offset of the UDP payload from the start of the frame.
    pub payload: usize,
    pub payload_len: usize,
    /// The first 4 payload bytes (zero when shorter): ChannelData header / STUN type.
    pub head: u32,
    /// The first word of the IPv6 header (version, traffic class, flow label), big-endian
    /// value.
    pub ipv6_first_word: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// UDP checksum, big-endian value (0: none, IPv4 only).
    pub udp_checksum: u16,
    /// UDP length field (header included).
    pub udp_len: u16,
    pub family: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 DF (always set for IPv6: it is never fragmented on the path).
    pub dont_fragment: bool,
    /// The channel cache's tag of the frame's destination as read before the
    /// client-side lookups (not parsed: `to_client::cache_lookup` sets it, for the
    /// express path and for `to_client::channel_data_lean`, the first of those
    /// lookups), which a Data indication's slot is filled under (see `channel_cache`).
    pub cache_tag: Tag,
}

impl Packet {
    /// Parses the frame into `self`.
    #[inline(always)]
    pub fn parse(&mut self, ctx: &XdpContext) -> Result<(), Outcome> {
        let ethertype = load_be16(ctx, 12).ok_or(Outcome::PassMalformed)?;
        match ethertype {
            ETHERTYPE_IPV4 => self.parse_v4(ctx),
            ETHERTYPE_IPV6 => self.parse_v6(ctx),
            _ => Err(Outcome::PassNotIp),
        }
    }

    #[inline(always)]
    fn parse_v4(&mut self, ctx: &XdpContext) -> Result<(), Outcome> {
        // Every header at once: one bounds check (the short frame's outcome apart).
        let Some(start) = region(ctx, 0, ETH_LEN + IPV4_LEN + UDP_LEN) else {
            return Err(short_v4_outcome(ctx));
        };
        // SAFETY (every `read` below): within the IPv4 and UDP headers, whose end the
        // frame reaches.
        // version/IHL, TOS, total length | identification, flags/fragment offset |
        // TTL, protocol, checksum
        let [first, second, third] = unsafe { read::<[u32; 3]>(start, ETH_LEN) };
        let (first, second, third) = (
            u32::from_be(first),
            u32::from_be(second),
            u32::from_be(third),
        );
        v4_header_fits(first, second, third)?;
        let [src, dst] = unsafe { read::<[u32; 2]>(start, ETH_LEN + 12) };
        let udp = unsafe { read::<[u16; 4]>(start, ETH_LEN + IPV4_LEN) };
        // RFC 791: the stack drops a header whose checksum is wrong, and so would the
        // userspace relay never see it; the relayed header gets a fresh checksum, which
        // would repair it (checked on the five header words already loaded).
        let header_sum = Delta::new()
            .add_u32(first)
            .add_u32(second)
            .add_u32(third)
            .add_u32(u32::from_be(src))
            .add_u32(u32::from_be(dst));
        if header_sum.checksum() != 0 {
            return Err(Outcome::PassMalformed);
        }
        let total_len = (first & 0xFFFF) as usize;
        let (data, end) = bounds(ctx);
        let frame_len = end - data;
        if total_len < IPV4_LEN + UDP_LEN || ETH_LEN + total_len > frame_len {
            return Err(Outcome::PassMalformed);
        }
        let udp_len = u16::from_be(udp[2]);
        if udp_len as usize != total_len - IPV4_LEN {
            return Err(Outcome::PassMalformed);
        }
        let payload = ETH_LEN + IPV4_LEN + UDP_LEN;
        // Field by field: a whole `Packet` would be built on the stack first.
        self.src_ip = [src, 0, 0, 0];
        self.dst_ip = [dst, 0, 0, 0];
        self.payload = payload;
        self.payload_len = udp_len as usize - UDP_LEN;
        self.head = load::<u32>(ctx, payload).unwrap_or(0);
        self.ipv6_first_word = 0;
        self.src_port = udp[0];
        self.dst_port = udp[1];
        self.udp_checksum = u16::from_be(udp[3]);
        self.udp_len = udp_len;
        self.family = FAMILY_V4;
        self.tos = (first >> 16) as u8;
        self.ttl = (third >> 24) as u8;
        self.dont_fragment = second & 0x4000 != 0;
        Ok(())
    }

    #[inline(always)]
    fn parse_v6(&mut self, ctx: &XdpContext) -> Result<(), Outcome> {
        // Every header at once: one bounds check (the short frame's outcome apart).
        let Some(start) = region(ctx, 0, ETH_LEN + IPV6_LEN + UDP_LEN) else {
            return Err(short_v6_outcome(ctx));
        };
        // SAFETY (every `read` below): within the IPv6 and UDP headers, whose end the
        // frame reaches.
        // version, traffic class, flow label | payload length, next header, hop limit
        let [first, second] = unsafe { read::<[u32; 2]>(start, ETH_LEN) };
        let (first, second) = (u32::from_be(first), u32::from_be(second));
        v6_header_fits(first, second)?;
        let src_ip = unsafe { read::<Address>(start, ETH_LEN + 8) };
        let dst_ip = unsafe { read::<Address>(start, ETH_LEN + 24) };
        let udp = unsafe { read::<[u16; 4]>(start, ETH_LEN + IPV6_LEN) };
        let payload_len = (second >> 16) as usize;
        let (data, end) = bounds(ctx);
        let frame_len = end - data;
        if payload_len < UDP_LEN || ETH_LEN + IPV6_LEN + payload_len > frame_len {
            return Err(Outcome::PassMalformed);
        }
        let udp_len = u16::from_be(udp[2]);
        let udp_checksum = u16::from_be(udp[3]);
        // RFC 8200 §8.1: a zero UDP checksum is invalid over IPv6.
        if udp_len as usize != payload_len || udp_checksum == 0 {
            return Err(Outcome::PassMalformed);
        }
        let payload = ETH_LEN + IPV6_LEN + UDP_LEN;
        self.src_ip = src_ip;
        self.dst_ip = dst_ip;
        self.payload = payload;
        self.payload_len = udp_len as usize - UDP_LEN;
        self.head = load::<u32>(ctx, payload).unwrap_or(0);
        self.ipv6_first_word = first;
        self.src_port = udp[0];
        self.dst_port = udp[1];
        self.udp_checksum = udp_checksum;
        self.udp_len = udp_len;
        self.family = FAMILY_V6;
        self.tos = (first >> 20) as u8;
        self.ttl = second as u8;
        self.dont_fragment = true;
        Ok(())
    }

    /// The first payload bytes as a big-endian value.
    #[inline(always)]
    pub fn head_be(&self) -> u32 {
        u32::from_be(self.head)
    }

    /// The payload's shape (RFC 7983 §7).
    #[inline(always)]
    pub fn shape(&self) -> Shape {
        let head = self.head_be();
        let kind = (head >> 16) as u16;
        match head >> 30 {
            0b01 if self.payload_len >= 4 && (CHANNEL_MIN..=CHANNEL_MAX).contains(&kind) => {
                Shape::ChannelData
            }
            0b00 if self.payload_len >= HEADER_LEN && kind == SEND_INDICATION => {
                Shape::SendIndication
            }
            0b00 if self.payload_len >= HEADER_LEN => Shape::Stun,
            _ => Shape::Other,
        }
    }

    /// The IP header length of the frame's family.
    #[inline(always)]
    pub fn ip_header_len(&self) -> usize {
        if self.family == FAMILY_V4 {
            IPV4_LEN
        } else {
            IPV6_LEN
        }
    }
}

/// Whether an IPv4 header's first three words (big-endian values) describe a header the
/// fast path takes: version 4 without options, not a fragment, UDP; else the outcome.
#[inline(always)]
fn v4_header_fits(first: u32, second: u32, third: u32) -> Result<(), Outcome> {
    if first >> 28 != 4 {
        return Err(Outcome::PassMalformed);
    }
    match (first >> 24) & 0x0F {
        5 => {}
        0..=4 => return Err(Outcome::PassMalformed),
        _ => return Err(Outcome::PassIpOptions),
    }
    // More-fragments flag or a fragment offset.
    if second & 0x3FFF != 0 {
        return Err(Outcome::PassFragment);
    }
    if (third >> 16) as u8 != IPPROTO_UDP {
        return Err(Outcome::PassNotUdp);
    }
    Ok(())
}

/// The outcome of an IPv4 frame too short for a UDP header behind the IP header: what
/// its first header words say ([`v4_header_fits`]), else malformed.
#[inline(never)]
fn short_v4_outcome(ctx: &XdpContext) -> Outcome {
    match load::<[u32; 3]>(ctx, ETH_LEN) {
        Some([first, second, third]) => v4_header_fits(
            u32::from_be(first),
            u32::from_be(second),
            u32::from_be(third),
        )
        .err()
        .unwrap_or(Outcome::PassMalformed),
        None => Outcome::PassMalformed,
    }
}

/// Whether an IPv6 header's first two words (big-endian values) describe a header the
/// fast path takes: version 6, UDP next (no extension header); else the outcome.
#[inline(always)]
fn v6_header_fits(first: u32, second: u32) -> Result<(), Outcome> {
    if first >> 28 != 6 {
        return Err(Outcome::PassMalformed);
    }
    match (second >> 8) as u8 {
        IPPROTO_UDP => Ok(()),
        // Fragment header.
        44 => Err(Outcome::PassFragment),
        // Hop-by-hop, routing, destination options, AH, ESP, mobility, HIP, shim6,
        // experimental.
        0 | 43 | 60 | 51 | 50 | 135 | 139 | 140 | 253 | 254 => Err(Outcome::PassIpOptions),
        _ => Err(Outcome::PassNotUdp),
    }
}

/// The outcome of an IPv6 frame too short for a UDP header behind the IP header: what
/// its first header words say ([`v6_header_fits`]), else malformed.
#[inline(never)]
fn short_v6_outcome(ctx: &XdpContext) -> Outcome {
    match load::<[u32; 2]>(ctx, ETH_LEN) {
        Some([first, second]) => v6_header_fits(u32::from_be(first), u32::from_be(second))
            .err()
            .unwrap_or(Outcome::PassMalformed),
        None => Outcome::PassMalformed,
    }
}
