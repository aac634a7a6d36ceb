//! Turning a parsed frame into the relayed one and sending it on: the next hop (cached
//! in the entry, `bpf_fib_lookup` on a miss), the UDP checksum updated incrementally
//! (RFC 1624) with word-sized steps, headers written in front of the application data
//! (which never moves), XDP_TX or a redirect to an attached interface.
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
use turn_common::stun::CHANNEL_DATA_HEADER_LEN;

use crate::packet::{
    bounds, load, Address, Packet, ETH_LEN, IPV4_LEN, IPV6_LEN, MAX_OFFSET, UDP_LEN,
};
use crate::{add_traffic, bandwidth, routing_generation, zeroed, Relayed, EGRESS, FIB_PARAMS};

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
    /// No channel, as the cache knows: its slot for the peer's datagram holds how to
    /// relay it as a Data indication (`to_client::data_indication_cached`). Otherwise
    /// as `NotFound`.
    DataIndication,
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
            Lean::NotFound | Lean::DataIndication => Err(Outcome::PassChannelNotBound),
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

/// The TURN framing a lean relay ([`lean`]) changes.
#[derive(Clone, Copy)]
pub enum LeanFraming<'a> {
    /// Client → peer ChannelData: the header (the payload's first word) goes.
    StripChannelData,
    /// Peer → client ChannelData: this header (a wire word) goes in front of the data.
    PrependChannelData(u32),
    /// Client → peer Send indication: the `data_offset` payload bytes in front of the
    /// DATA value (STUN header, attributes, DATA's header) go, and the `tail_len` bytes
    /// behind it (its padding, attributes after it).
    StripSendIndication { data_offset: usize, tail_len: usize },
    /// Peer → client Data indication: the first `words` words of `prefix` (STUN header,
    /// XOR-PEER-ADDRESS, DATA's header; wire words) go in front of the data, `pad` zero
    /// bytes behind it.
    PrependDataIndication {
        prefix: &'a [u32; MAX_PREFIX_WORDS],
        words: usize,
        pad: usize,
    },
}

impl LeanFraming<'_> {
    /// The outcome of a frame relayed so.
    #[inline(always)]
    fn relayed(self) -> Outcome {
        match self {
            LeanFraming::StripChannelData => Outcome::RelayedChannelDataToPeer,
            LeanFraming::PrependChannelData(_) => Outcome::RelayedChannelDataToClient,
            LeanFraming::StripSendIndication { .. } => Outcome::RelayedSendToPeer,
            LeanFraming::PrependDataIndication { .. } => Outcome::RelayedDataIndicationToClient,
        }
    }

    /// The payload bytes in front of the data that go, those behind it that go, the
    /// bytes written in front of it and the zero bytes appended behind it.
    #[inline(always)]
    fn lengths(self) -> (usize, usize, usize, usize) {
        match self {
            LeanFraming::StripChannelData => (CHANNEL_DATA_HEADER_LEN, 0, 0, 0),
            LeanFraming::PrependChannelData(_) => (0, 0, CHANNEL_DATA_HEADER_LEN, 0),
            LeanFraming::StripSendIndication {
                data_offset,
                tail_len,
            } => (data_offset, tail_len, 0, 0),
            LeanFraming::PrependDataIndication { words, pad, .. } => (0, 0, 4 * words, pad),
        }
    }

    /// Whether the data goes to the peer (else to the client).
    #[inline(always)]
    fn to_peer(self) -> bool {
        matches!(
            self,
            LeanFraming::StripChannelData | LeanFraming::StripSendIndication { .. }
        )
    }
}

/// The lean relay within one IP family of ChannelData without padding (RFC 8656 §12.4,
/// §12.5), the commonest frame by far, and of Send and Data indications (§11.2, §11.4)
/// from the express path: the same checks, checksum and headers as [`forward`] for such
/// a frame, hand-written in one BPF function without [`forward`]'s calls of its phases
/// (each call and return is dear on a kernel with SRSO "safe RET") and its generality
/// (other families, ChannelData padding, next-hop lookups). `data_len` is the
/// application data's length, `channel` the route (and next hop) [`forward`] would get.
///
/// `None` when the frame needs what only [`forward`] does (a family change, TTL 1, a
/// next hop not cached or of another generation, TOS or ingress, over the path MTU, an
/// egress not attached): nothing has changed then, and the caller runs the general path,
/// which decides the frame as if this had not run. `arrival`: [`Arrival::of`] the frame.
#[inline(always)]
pub fn lean(
    ctx: &XdpContext,
    packet: &Packet,
    arrival: Arrival,
    channel: &Channel,
    data_len: usize,
    framing: LeanFraming,
) -> Option<Result<Relayed, Outcome>> {
    let (next_hop, route, slot) = (channel.next_hop, &channel.route, channel.slot);
    let relayed = framing.relayed();
    let (strip_front, strip_tail, prefix_len, pad) = framing.lengths();
    // The checks of `prepare`, for this shape of frame.
    if route.family != packet.family || packet.ttl <= 1 {
        return None;
    }
    let v4 = packet.family == FAMILY_V4;
    let udp_len = UDP_LEN + prefix_len + data_len + pad;
    if udp_len > 0xFFFF - IPV6_LEN
        || prefix_len > 4 * MAX_PREFIX_WORDS
        || pad > MAX_PADDING
        || strip_front > MAX_STRIPPED
        || strip_tail > MAX_STRIPPED
        || strip_front + data_len + strip_tail != packet.payload_len
    {
        return None;
    }
    let ip_header_len = if v4 { IPV4_LEN } else { IPV6_LEN };
    let ip_total_len = (ip_header_len + udp_len) as u16;
    // The TOS the relayed IPv4 header carries (RFC 8656 §14), as `prepare` has it.
    let tos = if v4 { packet.tos } else { 0 };
    // Only a cached next hop (see `resolve`).
    let Arrival {
        routing_generation: generation,
        ingress,
    } = arrival;
    if generation == 0
        || next_hop.generation != generation
        || next_hop.ingress_ifindex != ingress
        || next_hop.tos != tos
        || ip_total_len > next_hop.mtu
    {
        return None;
    }
    let action = if next_hop.ifindex == ingress {
        xdp_action::XDP_TX
    } else {
        EGRESS.redirect(next_hop.ifindex, 0).ok()?
    };
    let bytes = data_len as u64;
    if let Err(outcome) = bandwidth::charge(slot, relayed, bytes) {
        return Some(Err(outcome));
    }
    // The delta of `udp_checksum` for this frame: addresses, lengths, ports, and the
    // TURN framing removed or added. No checksum stays none (IPv4, RFC 768).
    let udp_checksum = if packet.udp_checksum == 0 {
        0
    } else {
        let delta = length_delta(channel.route_delta, packet, udp_len as u16);
        let delta = match framing {
            LeanFraming::StripChannelData => delta.remove_u32(packet.head_be()),
            LeanFraming::PrependChannelData(header) => delta.add_u32(u32::from_be(header)),
            // (The zero padding adds nothing.)
            LeanFraming::PrependDataIndication { prefix, words, .. } => {
                add_prefix(delta, prefix, words)
            }
            LeanFraming::StripSendIndication { .. } => {
                let reframe = Reframe {
                    strip_front,
                    data_len,
                    pad: 0,
                    attributes_after: true,
                };
                match framing_delta(ctx, delta, packet, &reframe) {
                    Ok(delta) => delta,
                    Err(outcome) => {
                        return Some(Err(bandwidth::refund(slot, relayed, bytes, outcome)))
                    }
                }
            }
        };
        delta.apply_udp(packet.udp_checksum)
    };
    // The writes of `rewrite`: the data stays where it is, the headers move.
    let header_len = ETH_LEN + ip_header_len + UDP_LEN + prefix_len;
    let head_delta = (packet.payload + strip_front) as i32 - header_len as i32;
    // SAFETY: helper call on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, head_delta) } != 0 {
        return Some(Err(bandwidth::refund(
            slot,
            relayed,
            bytes,
            Outcome::PassAdjustFailed,
        )));
    }
    let tail_delta = pad as i32 - strip_tail as i32;
    // SAFETY: as above.
    if tail_delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, tail_delta) } != 0 {
        // Undo the head move so the stack gets the frame as it arrived.
        // SAFETY: as above; moves the head back where it was.
        unsafe { bpf_xdp_adjust_head(ctx.ctx, -head_delta) };
        return Some(Err(bandwidth::refund(
            slot,
            relayed,
            bytes,
            Outcome::PassAdjustFailed,
        )));
    }
    if let Err(outcome) =
        write_lean(ctx, packet, next_hop, route, udp_len, udp_checksum, framing)
    {
        return Some(Err(bandwidth::refund(slot, relayed, bytes, outcome)));
    }
    if pad > 0 {
        if let Err(outcome) = write_zeros(ctx, header_len + data_len, pad) {
            return Some(Err(bandwidth::refund(slot, relayed, bytes, outcome)));
        }
    }
    add_traffic(slot, data_len, framing.to_peer());
    Some(Ok(Relayed {
        action,
        outcome: relayed,
    }))
}

/// The headers of [`lean`]'s relayed frame, at the frame's (moved) start.
#[inline(always)]
fn write_lean(
    ctx: &XdpContext,
    packet: &Packet,
    next_hop: &NextHop,
    route: &Route,
    udp_len: usize,
    udp_checksum: u16,
    framing: LeanFraming,
) -> Result<(), Outcome> {
    // SAFETY: as in `rewrite`.
    let macs =
        unsafe { core::ptr::read_volatile(&next_hop.macs as *const [u8; 12] as *const [u32; 3]) };
    put(ctx, 0, macs)?;
    let udp_offset = if route.family == FAMILY_V4 {
        write_v4(ctx, packet, route, udp_len as u16)?;
        ETH_LEN + IPV4_LEN
    } else {
        write_v6(ctx, packet, route, udp_len as u16)?;
        ETH_LEN + IPV6_LEN
    };
    put(
        ctx,
        udp_offset,
        [
            route.src_port,
            route.dst_port,
            (udp_len as u16).to_be(),
            udp_checksum.to_be(),
        ],
    )?;
    match framing {
        LeanFraming::PrependChannelData(header) => put(ctx, udp_offset + UDP_LEN, [header]),
        LeanFraming::PrependDataIndication { prefix, words, .. } => {
            write_prefix(ctx, udp_offset + UDP_LEN, prefix, words)
        }
        LeanFraming::StripChannelData | LeanFraming::StripSendIndication { .. } => Ok(()),
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
    // Read as words: a copy of the bytes from the map value into the frame would become
    // a `memmove` call.
    // SAFETY: the 12 bytes of the entry's MAC addresses, 4-aligned in every value (the
    // layout tests of turn-common pin the offsets).
    let macs =
        unsafe { core::ptr::read_volatile(&next_hop.macs as *const [u8; 12] as *const [u32; 3]) };
    put(ctx, 0, macs)?;
    let udp_offset = if job.route.family == FAMILY_V4 {
        write_v4(ctx, packet, &job.route, udp_len as u16)?;
        ETH_LEN + IPV4_LEN
    } else {
        write_v6(ctx, packet, &job.route, udp_len as u16)?;
        ETH_LEN + IPV6_LEN
    };
    write_udp(ctx, udp_offset, job, udp_len as u16, udp_checksum)?;
    if reframe.pad > 0 {
        write_zeros(ctx, header_len + reframe.data_len, reframe.pad)?;
    }
    Ok(())
}

/// The relayed UDP checksum: the incoming one with the pseudo-header addresses (each in
/// its header's family), the length (in the pseudo-header and the UDP header), the ports
/// and the TURN framing replaced. Its protocol word is the same in both families (a
/// 32-bit IPv6 length under 2^16 adds a zero word). No checksum stays no checksum over
/// IPv4 (RFC 768).
#[inline(never)]
fn udp_checksum(ctx: &XdpContext, packet: &Packet, job: &Job) -> Result<u16, Outcome> {
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
fn framing_delta(
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
fn length_delta(delta: Delta, packet: &Packet, udp_len: u16) -> Delta {
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
fn address_word(address: &Address, i: usize) -> u32 {
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
/// checksummed region).
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
    for i in 0..MAX_STRIPPED / 4 {
        if 4 * i >= len {
            break;
        }
        let word = load::<u32>(ctx, offset + 4 * i).ok_or(Outcome::PassMalformed)?;
        delta = delta.remove_u32(u32::from_be(word));
    }
    Ok(delta)
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
    let generation = routing_generation();
    let ingress = ctx.ingress_ifindex() as u32;
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
    let generation = routing_generation();
    let ingress = ctx.ingress_ifindex() as u32;
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

/// Writes `values` (integers) one after the other from constant `offset`, bounds checked
/// once, each with a store of its width (see [`load`] on alignment): one volatile store
/// of a whole array would go through a copy of it on the stack.
#[inline(always)]
fn put<E: Copy, const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    values: [E; N],
) -> Result<(), Outcome> {
    let (data, end) = bounds(ctx);
    let start = data + offset;
    if start + core::mem::size_of::<[E; N]>() > end {
        return Err(Outcome::PassMalformed);
    }
    let start = start as *mut E;
    for (i, value) in values.into_iter().enumerate() {
        // SAFETY: element `i` lies inside the frame (checked just above).
        unsafe { core::ptr::write_volatile(start.add(i), value) };
    }
    Ok(())
}

/// The IPv4 header of the relayed frame (RFC 8656 §14, preferred behaviour): TOS and DF
/// kept (DF set from IPv6, RFC 7915 §5.1), TTL − 1, and the relay's own identification,
/// never the client's: 0 with DF set (an atomic datagram, never reassembled: RFC 6864
/// §4.2 lets the source use any value), else a random one.
#[inline(always)]
fn write_v4(ctx: &XdpContext, packet: &Packet, route: &Route, udp_len: u16) -> Result<(), Outcome> {
    let total_len = IPV4_LEN as u32 + udp_len as u32;
    let (identification, flags) = if packet.dont_fragment {
        (0, 0x4000)
    } else {
        // SAFETY: helper without arguments.
        (unsafe { bpf_get_prandom_u32() } & 0xFFFF, 0)
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
    put(ctx, 12, [0x0800u16.to_be()])?;
    put(
        ctx,
        ETH_LEN,
        [
            words[0].to_be(),
            words[1].to_be(),
            (words[2] | checksum).to_be(),
            route.src_ip[0],
            route.dst_ip[0],
        ],
    )
}

/// The IPv6 header of the relayed frame: traffic class and flow label kept (from IPv4:
/// the TOS, flow label 0, RFC 7915 §4.1), hop limit − 1.
#[inline(always)]
fn write_v6(ctx: &XdpContext, packet: &Packet, route: &Route, udp_len: u16) -> Result<(), Outcome> {
    let first = if packet.family == FAMILY_V4 {
        0x6000_0000 | (packet.tos as u32) << 20
    } else {
        packet.ipv6_first_word
    };
    let second = (udp_len as u32) << 16 | (IPPROTO_UDP as u32) << 8 | (packet.ttl - 1) as u32;
    put(ctx, 12, [0x86DDu16.to_be()])?;
    put(ctx, ETH_LEN, [first.to_be(), second.to_be()])?;
    put(ctx, ETH_LEN + 8, route.src_ip)?;
    put(ctx, ETH_LEN + 24, route.dst_ip)
}

/// The UDP header and the TURN framing behind it.
#[inline(always)]
fn write_udp(
    ctx: &XdpContext,
    offset: usize,
    job: &Job,
    udp_len: u16,
    udp_checksum: u16,
) -> Result<(), Outcome> {
    put(
        ctx,
        offset,
        [
            job.route.src_port,
            job.route.dst_port,
            udp_len.to_be(),
            udp_checksum.to_be(),
        ],
    )?;
    write_prefix(ctx, offset + UDP_LEN, &job.prefix, job.prefix_words)
}

/// `delta` with the first `words` words of `prefix` (wire words) added.
#[inline(always)]
fn add_prefix(mut delta: Delta, prefix: &[u32; MAX_PREFIX_WORDS], words: usize) -> Delta {
    for (i, word) in prefix.iter().enumerate() {
        if i >= words {
            break;
        }
        delta = delta.add_u32(u32::from_be(*word));
    }
    delta
}

/// Writes the first `words` words of `prefix` (wire words) from constant `offset` on.
#[inline(always)]
fn write_prefix(
    ctx: &XdpContext,
    offset: usize,
    prefix: &[u32; MAX_PREFIX_WORDS],
    words: usize,
) -> Result<(), Outcome> {
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
fn write_zeros(ctx: &XdpContext, offset: usize, len: usize) -> Result<(), Outcome> {
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
