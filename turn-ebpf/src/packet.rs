//! Bounds-checked access to the frame and parsing of Ethernet / IPv4 / IPv6 / UDP.
//! Anything the fast path does not handle is an `Err(Outcome::Pass…)`.

use aya_ebpf::helpers::{bpf_xdp_load_bytes, bpf_xdp_store_bytes};
use aya_ebpf::programs::XdpContext;
use turn_common::counters::Outcome;
use turn_common::maps::{v4_bytes, FAMILY_V4, FAMILY_V6};

pub const ETH_LEN: usize = 14;
pub const UDP_LEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const IPPROTO_UDP: u8 = 17;
/// Offsets beyond this are never valid (keeps variable offsets bounded for the verifier).
pub const MAX_OFFSET: usize = 0x3FFF;

/// `N` bytes at a variable `offset`, copied by the bpf_xdp_load_bytes helper (the
/// verifier cannot follow direct packet access at arbitrary offsets).
#[inline(always)]
pub fn load<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<[u8; N], Outcome> {
    if offset > MAX_OFFSET {
        return Err(Outcome::PassMalformed);
    }
    let mut bytes = [0u8; N];
    // SAFETY: helper call; `bytes` holds N bytes; the helper checks the frame bounds.
    let rc =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, bytes.as_mut_ptr().cast(), N as u32) };
    if rc != 0 {
        return Err(Outcome::PassMalformed);
    }
    Ok(bytes)
}

/// Copies `len` (1..=64) frame bytes at a variable `offset` into `buffer`.
#[inline(always)]
pub fn load_into(
    ctx: &XdpContext,
    offset: usize,
    buffer: &mut [u8; 64],
    len: usize,
) -> Result<(), Outcome> {
    if offset > MAX_OFFSET || len == 0 || len > 64 {
        return Err(Outcome::PassMalformed);
    }
    // A no-op for 1..=64 that lets the verifier see the length is never zero (black_box
    // keeps LLVM from folding it away).
    let len = (core::hint::black_box(len - 1) & 63) + 1;
    // SAFETY: helper call; `buffer` holds 64 ≥ `len` bytes; the helper checks the frame
    // bounds.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            offset as u32,
            buffer.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if rc != 0 {
        return Err(Outcome::PassMalformed);
    }
    Ok(())
}

/// `N` bytes at a constant `offset` from the start of the frame (direct access).
#[inline(always)]
pub fn read<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<[u8; N], Outcome> {
    if offset > MAX_OFFSET {
        return Err(Outcome::PassMalformed);
    }
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return Err(Outcome::PassMalformed);
    }
    // SAFETY: bounds checked against data_end just above.
    Ok(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
}

/// Copies `N` bytes at a constant `offset` into `out` (direct access, no stack copy).
#[inline(always)]
pub fn read_into<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    out: &mut [u8; N],
) -> Result<(), Outcome> {
    let start = ctx.data() + offset;
    if start + N > ctx.data_end() {
        return Err(Outcome::PassMalformed);
    }
    // SAFETY: bounds checked against data_end just above; `out` is not in the frame.
    unsafe { core::ptr::copy_nonoverlapping(start as *const u8, out.as_mut_ptr(), N) };
    Ok(())
}

/// Writes `N` bytes at `offset` from the start of the frame with the
/// bpf_xdp_store_bytes helper: one memcpy, where a direct copy of a byte array compiles
/// to a load and a store per byte in BPF.
#[inline(always)]
pub fn write<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    bytes: &[u8; N],
) -> Result<(), Outcome> {
    if offset > MAX_OFFSET {
        return Err(Outcome::PassMalformed);
    }
    // SAFETY: helper call; `bytes` holds N bytes and is only read; the helper checks the
    // frame bounds.
    let rc = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            offset as u32,
            bytes.as_ptr().cast_mut().cast(),
            N as u32,
        )
    };
    if rc != 0 {
        return Err(Outcome::PassMalformed);
    }
    Ok(())
}

#[inline(always)]
pub const fn be16(bytes: [u8; 2]) -> u16 {
    u16::from_be_bytes(bytes)
}

/// The parts of a UDP/IP frame the fast path needs. Lives in the per-CPU scratch map
/// (the BPF stack is 512 bytes for the whole call chain).
pub struct Packet {
    pub family: u8,
    /// The original IP header: 20 bytes used for IPv4 (options are passed to the stack),
    /// all 40 for IPv6 (extension headers are too).
    pub ip_header: [u8; 40],
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub udp_checksum: u16,
    /// UDP length field (header included).
    pub udp_len: usize,
    /// Offset of the UDP payload from the start of the frame.
    pub payload: usize,
    pub payload_len: usize,
    /// The first 4 payload bytes (zero when shorter): ChannelData header / STUN type.
    pub payload_head: [u8; 4],
}

impl Packet {
    /// Parses the frame into `self`.
    #[inline(always)]
    pub fn parse(&mut self, ctx: &XdpContext) -> Result<(), Outcome> {
        let ethertype: [u8; 2] = read(ctx, 12)?;
        match be16(ethertype) {
            ETHERTYPE_IPV4 => self.parse_v4(ctx),
            ETHERTYPE_IPV6 => self.parse_v6(ctx),
            _ => Err(Outcome::PassNotIp),
        }
    }

    #[inline(always)]
    fn parse_v4(&mut self, ctx: &XdpContext) -> Result<(), Outcome> {
        let ip: [u8; 20] = read(ctx, ETH_LEN)?;
        if ip[0] >> 4 != 4 {
            return Err(Outcome::PassMalformed);
        }
        match ip[0] & 0x0F {
            5 => {}
            0..=4 => return Err(Outcome::PassMalformed),
            _ => return Err(Outcome::PassIpOptions),
        }
        // More-fragments flag or a fragment offset.
        if be16([ip[6], ip[7]]) & 0x3FFF != 0 {
            return Err(Outcome::PassFragment);
        }
        if ip[9] != IPPROTO_UDP {
            return Err(Outcome::PassNotUdp);
        }
        let total_len = be16([ip[2], ip[3]]) as usize;
        let frame_len = ctx.data_end() - ctx.data();
        if total_len < 20 + UDP_LEN || ETH_LEN + total_len > frame_len {
            return Err(Outcome::PassMalformed);
        }
        let udp: [u8; 8] = read(ctx, ETH_LEN + 20)?;
        let udp_len = be16([udp[4], udp[5]]) as usize;
        if udp_len != total_len - 20 {
            return Err(Outcome::PassMalformed);
        }
        self.family = FAMILY_V4;
        self.ip_header[..20].copy_from_slice(&ip);
        self.src_ip = v4_bytes([ip[12], ip[13], ip[14], ip[15]]);
        self.dst_ip = v4_bytes([ip[16], ip[17], ip[18], ip[19]]);
        self.src_port = [udp[0], udp[1]];
        self.dst_port = [udp[2], udp[3]];
        self.udp_checksum = be16([udp[6], udp[7]]);
        self.udp_len = udp_len;
        self.payload = ETH_LEN + 20 + UDP_LEN;
        self.payload_len = udp_len - UDP_LEN;
        self.payload_head = read(ctx, ETH_LEN + 20 + UDP_LEN).unwrap_or([0; 4]);
        Ok(())
    }

    #[inline(always)]
    fn parse_v6(&mut self, ctx: &XdpContext) -> Result<(), Outcome> {
        read_into(ctx, ETH_LEN, &mut self.ip_header)?;
        let ip = &self.ip_header;
        if ip[0] >> 4 != 6 {
            return Err(Outcome::PassMalformed);
        }
        match ip[6] {
            IPPROTO_UDP => {}
            // Fragment header.
            44 => return Err(Outcome::PassFragment),
            // Hop-by-hop, routing, destination options, AH, ESP, mobility, HIP, shim6,
            // experimental.
            0 | 43 | 60 | 51 | 50 | 135 | 139 | 140 | 253 | 254 => {
                return Err(Outcome::PassIpOptions)
            }
            _ => return Err(Outcome::PassNotUdp),
        }
        let payload_len = be16([ip[4], ip[5]]) as usize;
        let frame_len = ctx.data_end() - ctx.data();
        if payload_len < UDP_LEN || ETH_LEN + 40 + payload_len > frame_len {
            return Err(Outcome::PassMalformed);
        }
        let udp: [u8; 8] = read(ctx, ETH_LEN + 40)?;
        let udp_len = be16([udp[4], udp[5]]) as usize;
        let udp_checksum = be16([udp[6], udp[7]]);
        // RFC 8200 §8.1: a zero UDP checksum is invalid over IPv6.
        if udp_len != payload_len || udp_checksum == 0 {
            return Err(Outcome::PassMalformed);
        }
        let (source, destination) = self.ip_header.split_at(24);
        self.src_ip.copy_from_slice(&source[8..24]);
        self.dst_ip.copy_from_slice(&destination[..16]);
        self.family = FAMILY_V6;
        self.src_port = [udp[0], udp[1]];
        self.dst_port = [udp[2], udp[3]];
        self.udp_checksum = udp_checksum;
        self.udp_len = udp_len;
        self.payload = ETH_LEN + 40 + UDP_LEN;
        self.payload_len = udp_len - UDP_LEN;
        self.payload_head = read(ctx, ETH_LEN + 40 + UDP_LEN).unwrap_or([0; 4]);
        Ok(())
    }

    /// IPv4 TTL or IPv6 hop limit.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        if self.family == FAMILY_V4 {
            self.ip_header[8]
        } else {
            self.ip_header[7]
        }
    }
}
