//! Turning a parsed frame into the relayed one and sending it on: the next hop (cached
//! in the entry, `bpf_fib_lookup` on a miss), the UDP checksum updated incrementally
//! (RFC 1624) with word-sized steps, headers written in front of the application data
//! (which never moves), XDP_TX or a redirect to an attached interface.
//!
//! The general relay ([`forward`]) and the next hop are here; the checksum update in
//! `checksum`, the header writes in `headers`, the one-function relay of the commonest
//! frames in [`lean`].
//!
//! Nothing in the frame changes until the next hop is known and every length checks
//! out, so every `Err` leaves the frame as it arrived for the stack (`XDP_PASS`), except
//! `DropRateLimited` (over a bandwidth limit, see [`crate::bandwidth`]: dropped).

use aya_ebpf::bindings::{
    bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_SUCCESS,
};
use aya_ebpf::helpers::{
    bpf_fib_lookup as fib_lookup_helper, bpf_get_prandom_u32, bpf_xdp_adjust_head,
    bpf_xdp_adjust_tail,
};
use aya_ebpf::programs::XdpContext;
use aya_ebpf::EbpfContext as _;
use turn_common::checksum::Delta;
use turn_common::counters::Outcome;
use turn_common::maps::{NextHop, FAMILY_V4};

mod checksum;
mod headers;
mod lean;

pub use checksum::route_delta;
pub use lean::{lean, LeanFraming};

use checksum::udp_checksum;
use headers::{write_headers, write_prefix, write_zeros};

use crate::packet::{Address, Packet, ETH_LEN, IPV4_LEN, IPV6_LEN, UDP_LEN};
use crate::{bandwidth, random_u64, routing_generation, zeroed, Relayed, EGRESS, FIB_PARAMS};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_UDP: u8 = 17;
/// The most bytes stripped in front of or behind the application data (STUN header and
/// attributes of a Send indication, ChannelData padding).
pub const MAX_STRIPPED: usize = 64;
/// The most zero padding bytes appended after the data (STUN attribute padding).
const MAX_PADDING: usize = 3;

/// Source and destination of the relayed datagram (copied out of the entry, whose
/// next-hop cache is written meanwhile). `family` may differ from the incoming frame's
/// (cross-family relaying, RFC 8656 §7.2 REQUESTED-ADDRESS-FAMILY): the IP header is
/// then built in the other family.
pub struct Route {
    pub src_ip: Address,
    pub dst_ip: Address,
    /// Ports as words holding the bytes in memory order.
    pub src_port: u16,
    pub dst_port: u16,
    pub family: u8,
}

/// Where the application data is in the UDP payload, and what goes around it.
pub struct Reframe {
    /// Payload bytes in front of the data that go (TURN framing; a multiple of 4).
    pub strip_front: usize,
    pub data_len: usize,
    /// Zero bytes appended after the data (attribute padding of a Data indication).
    pub pad: usize,
    /// Whether whole STUN attributes may follow the data (a Send indication's), rather
    /// than at most the padding to a multiple of 4 (ChannelData).
    pub attributes_after: bool,
}

/// The most words of TURN framing written in front of the data (a Data indication for
/// an IPv6 peer: 48 bytes).
pub const MAX_PREFIX_WORDS: usize = 12;

/// The word holding `bytes` in memory order.
#[inline(always)]
pub const fn wire_word(bytes: [u8; 4]) -> u32 {
    u32::from_ne_bytes(bytes)
}

/// A relayed frame to build: where it goes, the TURN framing around the data, and the
/// outcome it counts as. Filled in by a path, in per-CPU memory ([`crate::JOB`]): the
/// paths' and [`forward`]'s stack frames add up along the call chain.
pub struct Job {
    pub route: Route,
    pub reframe: Reframe,
    /// TURN framing written in front of the data (nothing, a ChannelData header, or a
    /// Data indication's header and attributes): `prefix_words` words, each holding four
    /// wire bytes in memory order (see [`wire_word`]), summed and copied by words.
    pub prefix: [u32; MAX_PREFIX_WORDS],
    pub prefix_words: usize,
    pub relayed: Outcome,
    /// The allocation's slot: its traffic counters and bandwidth limit.
    pub slot: u32,
}

/// The random numbers of the frames this CPU builds ([`crate::RANDOM`]): Data
/// indications' transaction ids (RFC 8489 §5) and the IPv4 identification of relayed
/// datagrams that may be fragmented (RFC 6864 §4.2). SplitMix64, seeded from
/// `bpf_get_prandom_u32` on first use: a few multiplications where a helper call (with
/// its return through the SRSO thunk on this project's AMD hosts) costs some 25 ns.
/// Uniformly distributed and not cryptographic, as the kernel's prandom, which both
/// came from before, is not either.
pub struct Random {
    /// 0: not seeded yet.
    state: u64,
}

impl Random {
    /// SplitMix64's increment (the golden ratio in 64 bits).
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// The next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        if self.state == 0 {
            // SAFETY: helper without arguments.
            let seed = || unsafe { bpf_get_prandom_u32() } as u64;
            self.state = seed() << 32 | seed() | 1;
        }
        self.state = self.state.wrapping_add(Self::GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The IPv4 identification of the relayed datagram when it may be fragmented (DF clear,
/// [`headers::write_headers`]): a random one ([`random_u64`]); 0 when unused.
#[inline(always)]
pub fn fragmentable_identification(packet: &Packet) -> u16 {
    if packet.dont_fragment {
        0
    } else {
        random_u64() as u16
    }
}

/// Rebuilds the frame as `eth | ip | udp | prefix | data | padding` per `job` and sends
/// it; `next_hop` is the entry's next-hop cache.
// Separate BPF functions for the phases, so their stack frames are not added up.
#[inline(never)]
pub fn forward(
    ctx: &XdpContext,
    packet: &Packet,
    job: &Job,
    next_hop: &mut NextHop,
) -> Result<Relayed, Outcome> {
    let action = prepare(ctx, packet, job, next_hop)?;
    // Charged once the frame is known to be relayable, as userspace charges what it
    // relays: what goes to the stack below is charged there instead.
    let (slot, bytes) = (job.slot, job.reframe.data_len as u64);
    bandwidth::charge(slot, job.relayed, bytes)?;
    let udp_checksum = match udp_checksum(ctx, packet, job) {
        Ok(udp_checksum) => udp_checksum,
        Err(outcome) => return Err(bandwidth::refund(slot, job.relayed, bytes, outcome)),
    };
    if let Err(outcome) = rewrite(ctx, packet, job, next_hop, udp_checksum) {
        return Err(bandwidth::refund(slot, job.relayed, bytes, outcome));
    }
    Ok(Relayed {
        action,
        outcome: job.relayed,
    })
}

/// What a lean path ([`lean`]) made of a frame. Without payload: the verdict
/// goes through an out parameter, as a BPF function's return register must not carry
/// the leftover pointer bits LLVM may leave in an enum's unused payload (the verifier
/// refuses arithmetic on a pointer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lean {
    /// Decided, as the general path would have: relayed, or an outcome of the relaying
    /// itself (over a bandwidth limit, a failed head move); the verdict is written.
    Done,
    /// No entry for the frame: the general path goes on with its next lookup.
    NotFound,
    /// An entry the lean path does not handle (or an expired one): the general path
    /// decides the frame from the same lookup on; nothing has changed meanwhile.
    General,
}

impl Lean {
    /// The verdict: `verdict` when the lean path decided, the general path's "no
    /// channel" when it found none, else what `general` (the general path of the same
    /// lookup) decides.
    #[inline(always)]
    pub fn or_general(
        self,
        verdict: Result<Relayed, Outcome>,
        general: impl FnOnce() -> Result<Relayed, Outcome>,
    ) -> Result<Relayed, Outcome> {
        match self {
            Lean::Done => verdict,
            Lean::NotFound => Err(Outcome::PassChannelNotBound),
            Lean::General => general(),
        }
    }

    /// `Done` with `decided` written to `verdict`, or `General` for none.
    #[inline(always)]
    pub fn from(
        decided: Option<Result<Relayed, Outcome>>,
        verdict: &mut Result<Relayed, Outcome>,
    ) -> Lean {
        match decided {
            Some(decided) => {
                *verdict = decided;
                Lean::Done
            }
            None => Lean::General,
        }
    }
}

/// What a lean path relays a channel's frame with, from a slot of
/// [`crate::channel_cache`] or from the hash entry.
pub struct Channel<'a> {
    pub next_hop: &'a NextHop,
    pub route: Route,
    /// The UDP checksum delta of the route's addresses and ports in place of the frame's
    /// ([`route_delta`]): the same for every frame of the channel, so a cache slot keeps
    /// it.
    pub route_delta: Delta,
    /// The channel number (to the client), in memory order.
    pub number: [u8; 2],
    /// The allocation's slot.
    pub slot: u32,
}

impl<'a> Channel<'a> {
    /// The channel of a hash entry (its next hop, `route`, `number`, allocation `slot`)
    /// for `packet`.
    #[inline(always)]
    pub fn new(
        packet: &Packet,
        next_hop: &'a NextHop,
        route: Route,
        number: [u8; 2],
        slot: u32,
    ) -> Channel<'a> {
        Channel {
            next_hop,
            route_delta: route_delta(packet, &route),
            route,
            number,
            slot,
        }
    }
}

/// What a cached next hop must match for the frame being relayed, read once per frame:
/// the routing generation (0: no caching) and the interface the frame came in on.
#[derive(Clone, Copy)]
pub struct Arrival {
    pub routing_generation: u32,
    pub ingress: u32,
}

impl Arrival {
    #[inline(always)]
    pub fn of(ctx: &XdpContext) -> Arrival {
        Arrival {
            routing_generation: routing_generation(),
            ingress: ctx.ingress_ifindex() as u32,
        }
    }
}

/// The lengths of the relayed datagram: UDP and IP header lengths.
#[inline(always)]
fn lengths(job: &Job) -> (usize, usize) {
    let ip_header_len = if job.route.family == FAMILY_V4 {
        IPV4_LEN
    } else {
        IPV6_LEN
    };
    let udp_len = UDP_LEN + 4 * job.prefix_words + job.reframe.data_len + job.reframe.pad;
    (udp_len, ip_header_len)
}

/// The payload bytes behind the data that go.
#[inline(always)]
fn strip_tail(packet: &Packet, reframe: &Reframe) -> usize {
    packet.payload_len - reframe.strip_front - reframe.data_len
}

/// Checks that the frame can be relayed as `job` says and finds the next hop: the XDP
/// action that sends it, or why the stack should have it. Changes nothing in the frame.
#[inline(never)]
fn prepare(
    ctx: &XdpContext,
    packet: &Packet,
    job: &Job,
    next_hop: &mut NextHop,
) -> Result<u32, Outcome> {
    let (route, reframe) = (&job.route, &job.reframe);
    // RFC 8656 §14 (preferred): outgoing TTL = incoming - 1; 0/1 go to userspace, which
    // drops them.
    if packet.ttl <= 1 {
        return Err(Outcome::PassTtl);
    }
    if reframe.pad > MAX_PADDING
        || job.prefix_words > MAX_PREFIX_WORDS
        || reframe.strip_front + reframe.data_len > packet.payload_len
    {
        return Err(Outcome::PassMalformed);
    }
    if reframe.strip_front > MAX_STRIPPED || strip_tail(packet, reframe) > MAX_STRIPPED {
        return Err(Outcome::PassStun);
    }
    // RFC 768: an IPv4 sender may omit the UDP checksum, which IPv6 requires (RFC 8200
    // §8.1); the fast path only updates checksums incrementally, so userspace relays it.
    if route.family != packet.family && packet.udp_checksum == 0 {
        return Err(Outcome::PassCrossFamily);
    }
    let (udp_len, ip_header_len) = lengths(job);
    if udp_len > 0xFFFF - IPV6_LEN {
        return Err(Outcome::PassTooBig);
    }
    // The TOS the relayed IPv4 header carries (RFC 8656 §14), which routing may use.
    let tos = if route.family == FAMILY_V4 {
        packet.tos
    } else {
        0
    };
    resolve(ctx, next_hop, route, tos, (ip_header_len + udp_len) as u16)?;
    let ifindex = next_hop.ifindex;
    // Out of the interface it came in on (where the program runs), or redirected to one
    // the daemon attached the program to; anything else goes up to the stack as it is.
    if ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(xdp_action::XDP_TX);
    }
    // Only records the target: nothing is sent unless the program returns XDP_REDIRECT,
    // so a later Err still passes the frame up.
    EGRESS
        .redirect(ifindex, 0)
        .map_err(|_| Outcome::PassEgressNotAttached)
}

/// Moves the frame's head and tail around the data and writes the new headers and
/// framing.
#[inline(never)]
fn rewrite(
    ctx: &XdpContext,
    packet: &Packet,
    job: &Job,
    next_hop: &NextHop,
    udp_checksum: u16,
) -> Result<(), Outcome> {
    let reframe = &job.reframe;
    let (udp_len, ip_header_len) = lengths(job);
    let data_offset = packet.payload + reframe.strip_front;
    let header_len = ETH_LEN + ip_header_len + UDP_LEN + 4 * job.prefix_words;
    let head_delta = data_offset as i32 - header_len as i32;
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, head_delta) } != 0 {
        return Err(Outcome::PassAdjustFailed);
    }
    let tail_delta = reframe.pad as i32 - strip_tail(packet, reframe) as i32;
    // SAFETY: as above.
    if tail_delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, tail_delta) } != 0 {
        // Undo the head move so the stack gets the frame as it arrived.
        // SAFETY: as above; moves the head back where it was.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, -head_delta) };
        return Err(Outcome::PassAdjustFailed);
    }
    let payload = write_headers(
        ctx,
        next_hop,
        packet,
        &job.route,
        udp_len as u16,
        udp_checksum,
        fragmentable_identification(packet),
    )?;
    write_prefix(ctx, payload, &job.prefix, job.prefix_words)?;
    if reframe.pad > 0 {
        write_zeros(ctx, header_len + reframe.data_len, reframe.pad)?;
    }
    Ok(())
}

/// Makes `next_hop` hold the next hop for `route`: the cached one when it is of the
/// current routing generation and was looked up for a frame from the same interface
/// with the same routing TOS, else a fresh `bpf_fib_lookup`, or why the stack should
/// handle the frame instead (no route / neighbour not resolved / forwarding disabled →
/// PASS; over the path MTU → PASS, the stack fragments or sends ICMP).
#[inline(always)]
fn resolve(
    ctx: &XdpContext,
    next_hop: &mut NextHop,
    route: &Route,
    tos: u8,
    ip_total_len: u16,
) -> Result<(), Outcome> {
    let Arrival {
        routing_generation: generation,
        ingress,
    } = Arrival::of(ctx);
    if generation != 0
        && next_hop.generation == generation
        && next_hop.ingress_ifindex == ingress
        && next_hop.tos == tos
    {
        if ip_total_len > next_hop.mtu {
            return Err(Outcome::PassTooBig);
        }
        return Ok(());
    }
    look_up(ctx, next_hop, route, tos, ip_total_len)
}

/// `bpf_fib_lookup` for `route`, filling in `next_hop` (its generation last: a frame
/// that finds it of the current generation finds the rest written). A second lookup
/// with the largest length learns the path MTU (the helper reports it only when a
/// datagram would not fit). The lookup parameters live in per-CPU memory: this runs
/// only on a cache miss, and 64 more bytes of stack would not fit the deepest path.
// A separate BPF function: verified once per path, out of the hot code.
#[inline(never)]
fn look_up(
    ctx: &XdpContext,
    next_hop: &mut NextHop,
    route: &Route,
    tos: u8,
    ip_total_len: u16,
) -> Result<(), Outcome> {
    let Arrival {
        routing_generation: generation,
        ingress,
    } = Arrival::of(ctx);
    let params = FIB_PARAMS.get_ptr_mut(0).ok_or(Outcome::PassInternal)?;
    // SAFETY: this CPU's slot, used by nothing else while the program runs; all-zero is
    // a valid bpf_fib_lookup (integers and unions of them).
    let params = unsafe { zeroed(&mut *(params as *mut core::mem::MaybeUninit<bpf_fib_lookup>)) };
    params.l4_protocol = IPPROTO_UDP;
    params.sport = route.src_port;
    params.dport = route.dst_port;
    params.__bindgen_anon_1.tot_len = ip_total_len;
    params.ifindex = ingress;
    if route.family == FAMILY_V4 {
        params.family = AF_INET;
        params.__bindgen_anon_2.tos = tos;
        params.__bindgen_anon_3.ipv6_src = [route.src_ip[0], 0, 0, 0];
        params.__bindgen_anon_4.ipv6_dst = [route.dst_ip[0], 0, 0, 0];
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = route.src_ip;
        params.__bindgen_anon_4.ipv6_dst = route.dst_ip;
    }
    match fib_lookup(ctx, params) {
        rc if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 => {}
        rc if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 => return Err(Outcome::PassTooBig),
        _ => return Err(Outcome::PassNoRoute),
    }
    let ifindex = params.ifindex;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&params.dmac);
    macs[6..].copy_from_slice(&params.smac);
    params.ifindex = ingress;
    params.__bindgen_anon_1.tot_len = u16::MAX;
    let mtu = match fib_lookup(ctx, params) {
        // SAFETY: the helper wrote the MTU into the union on FRAG_NEEDED.
        rc if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 => unsafe {
            params.__bindgen_anon_1.mtu_result
        },
        rc if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 => u16::MAX,
        // The route changed in between: good for this datagram only.
        _ => ip_total_len,
    };
    next_hop.generation = 0;
    next_hop.ifindex = ifindex;
    next_hop.ingress_ifindex = ingress;
    next_hop.mtu = mtu;
    next_hop.tos = tos;
    next_hop.macs = macs;
    next_hop.generation = generation;
    Ok(())
}

#[inline(always)]
fn fib_lookup(ctx: &XdpContext, params: &mut bpf_fib_lookup) -> i64 {
    // SAFETY: helper call with a stack struct of the size passed.
    unsafe {
        fib_lookup_helper(
            ctx.as_ptr(),
            params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    }
}

