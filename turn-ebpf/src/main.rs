//! The XDP fast path of turn-relay: relays ChannelData and Send/Data indications
//! (RFC 8656 §11, §12) between clients and peers for the allocations, permissions and
//! channels userspace installs in the maps below; passes everything else to the stack.
//!
//! One file per forwarding direction ([`to_peer`], [`to_client`]); [`egress`] finds the
//! next hop, rewrites and sends; [`packet`] parses. `turn_xdp` only maps outcomes to
//! actions and counts.
//!
//! Cost: the hot paths (ChannelData both ways) make one hash lookup; every value carries
//! what its path needs, including a cached next hop ([`turn_common::maps::NextHop`]), so
//! `bpf_fib_lookup` runs only for an entry's first frame and after a routing change.
//! A per-CPU cache ([`channel_cache`]) spares most frames of a flow even those lookups:
//! channels, Send indications' client–peer pairs and peers' datagrams without a channel
//! (Data indications) are found in an array slot.
//! Same-family ChannelData without padding, with its next hop cached, takes a lean path
//! (`channel_data_lean` of each direction, [`egress::lean`]): one BPF function
//! instead of the general path's chain of them, which leaves every other frame to the
//! general path at the same step. What this CPU's cache holds (ChannelData both ways, a
//! client's Send indications, peers' datagrams as Data indications) takes the
//! [`express`] path before the general path: the same decision in one function called
//! first, the only one that looks frames up in the cache, whose parse the general path
//! takes over for the frames it leaves; the general path fills the cache. A frame tries
//! the client-side tables only when sent to a listener port, the peer-side ones only
//! when sent to a relayed port ([`PortFilter`], an array lookup): so a peer's datagram
//! that looks like ChannelData makes no lookup in the client's channels.
#![no_std]
// BPF_CMPXCHG for the bandwidth buckets (see `bandwidth`).
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![no_main]

mod bandwidth;
mod channel_cache;
mod egress;
mod express;
mod fingerprint;
mod packet;
mod to_client;
mod to_peer;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_F_MMAPABLE},
    helpers::{
        bpf_get_prandom_u32, bpf_jiffies64, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        bpf_xdp_store_bytes,
    },
    macros::{map, xdp},
    maps::{Array, DevMap, DevMapHash, HashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::info;
use turn_common::counters::{Counter, Outcome};
use turn_common::inject::Inject;
use turn_common::maps::{
    AllocationTraffic, AllocationValue, ClientChannelKey, ClientChannelValue, FlowKey,
    PeerChannelKey, PeerChannelValue, PermissionKey, PermissionValue, PortFilter, RelayKey,
    RelayValue, CONTROL_ROUTING_GENERATION, CONTROL_WORDS,
};

use egress::Lean;
use express::Left;
use packet::{address_bytes, Packet, Shape};

// Map sizes here are placeholders: userspace sizes every map from max_allocations
// before loading (turn-userspace/src/bpf/maps.rs).

/// Per-CPU packets/bytes per [`Outcome`].
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Outcome::COUNT, 0);
/// Relayed address → allocation (client side), for peer → client Data indications.
#[map]
static RELAYS: HashMap<RelayKey, RelayValue> = HashMap::with_max_entries(1, 0);
/// Client 5-tuple + relay family → relayed address, for Send indications.
#[map]
static CLIENT_ALLOCATIONS: HashMap<FlowKey, AllocationValue> = HashMap::with_max_entries(1, 0);
/// Relayed address + peer IP → permission.
#[map]
static PERMISSIONS: HashMap<PermissionKey, PermissionValue> = HashMap::with_max_entries(1, 0);
/// Client 5-tuple + channel number → peer, for client → peer ChannelData.
#[map]
static CLIENT_CHANNELS: HashMap<ClientChannelKey, ClientChannelValue> =
    HashMap::with_max_entries(1, 0);
/// Relayed address + peer transport address → channel and client, for peer → client.
#[map]
static PEER_CHANNELS: HashMap<PeerChannelKey, PeerChannelValue> = HashMap::with_max_entries(1, 0);
/// Per-CPU application bytes relayed, indexed by allocation slot.
#[map]
static TRAFFIC: PerCpuArray<AllocationTraffic> = PerCpuArray::with_max_entries(1, 0);
/// The interfaces the daemon attached the program to (ifindex → ifindex): the only ones
/// it redirects to. A device without XDP may drop redirected frames (veth without NAPI,
/// NICs that set up XDP transmit queues only with a program attached).
#[map]
static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);
/// The frame being relayed, parsed ([`Packet`]), per CPU: in the program's stack it
/// would not leave room for the deepest path's frames (512 bytes for the whole chain).
#[map]
pub static PACKET: PerCpuArray<Packet> = PerCpuArray::with_max_entries(1, 0);
/// The relayed frame being built ([`egress::Job`]), per CPU, for the same reason.
#[map]
static JOB: PerCpuArray<egress::Job> = PerCpuArray::with_max_entries(1, 0);
/// This CPU's random numbers ([`egress::Random`]), read through [`random_u64`].
#[map]
static RANDOM: PerCpuArray<egress::Random> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU `bpf_fib_lookup` parameters for a next-hop cache miss.
#[map]
static FIB_PARAMS: PerCpuArray<bpf_fib_lookup> = PerCpuArray::with_max_entries(1, 0);

/// The words userspace writes that relayed frames read (`turn_common::maps::CONTROL_*`:
/// the routing generation, whether any bandwidth limit is set), read through
/// [`control`]. Memory-mappable only so that the kernel puts its
/// values at a page boundary, all in one cache line (a plain array's values start
/// mid-line): every relayed frame reads one or both of them, and at a few tens of
/// thousands of frames a second a CPU finds each line cold.
#[map]
static CONTROL: Array<u32> = Array::with_max_entries(CONTROL_WORDS, BPF_F_MMAPABLE);

/// The destination ports the tables can hit (one entry, [`PortFilter`]): each client-side
/// function looks up only frames to a listener port ([`is_listening`]), each peer-side
/// one only frames to a relayed port ([`is_relayed`]). Userspace adds a port before the
/// first entry keyed by it and never removes one, so a skipped lookup is one that would
/// have missed, and every frame gets the verdict it gets without the filter. Unwritten
/// (no port), it skips every lookup: none could hit while no entry exists.
#[map]
static PORT_FILTER: Array<PortFilter> = Array::with_max_entries(1, 0);

/// A frame the program relayed itself.
#[derive(Clone, Copy)]
pub struct Relayed {
    pub action: u32,
    pub outcome: Outcome,
}

#[xdp]
pub fn turn_xdp(ctx: XdpContext) -> u32 {
    // The express path first (cached ChannelData both ways, cached Send indications).
    // Not with the trace on, which traces the general path's decisions.
    let side = if traced() { None } else { express::may_take(&ctx) };
    let left = match side.map(|side| express::relay(&ctx, side)) {
        Some(Ok(action)) => return action,
        Some(Err(left)) => left,
        None => Left::Unparsed,
    };
    let frame_len = ctx.data_end() - ctx.data();
    let (outcome, action) = verdict_action(relay(&ctx, left));
    count(outcome, frame_len);
    if traced() {
        trace_decision(&ctx, outcome, action);
    }
    action
}

/// Whether the decision trace is on: the same test aya-log's macros make, so that with
/// the trace off (level 0 in read-only data) the verifier removes the call of
/// [`trace_decision`] itself, not just its body.
#[inline(always)]
fn traced() -> bool {
    aya_log_ebpf::macro_support::level_enabled(aya_log_ebpf::macro_support::Level::Info)
}

/// The outcome a verdict counts as and the XDP action it takes.
#[inline(always)]
pub fn verdict_action(verdict: Result<Relayed, Outcome>) -> (Outcome, u32) {
    match verdict {
        Ok(relayed) => (relayed.outcome, relayed.action),
        Err(outcome) if outcome.is_drop() => (outcome, xdp_action::XDP_DROP),
        Err(outcome) => (outcome, xdp_action::XDP_PASS),
    }
}

/// The opt-in trace of decisions (`xdp.trace`): one info record per frame, its outcome,
/// action and UDP flow, through aya-log's ring buffer. Off (the default), the loader sets
/// `AYA_LOG_LEVEL` to 0 in read-only data, so the verifier knows the call in `turn_xdp` is
/// dead and removes it: no cost per frame. A function of its own (a BPF subprogram), so
/// that its stack does not add to the relaying paths' (512 bytes for the whole chain).
#[inline(never)]
fn trace_decision(ctx: &XdpContext, outcome: Outcome, action: u32) {
    let parsed = !matches!(
        outcome,
        Outcome::PassNotIp
            | Outcome::PassIpOptions
            | Outcome::PassFragment
            | Outcome::PassNotUdp
            | Outcome::PassMalformed
            | Outcome::PassInternal
    );
    let packet = match PACKET.get_ptr(0) {
        // SAFETY: this CPU's slot, written by this run's parse when `parsed`.
        Some(packet) if parsed => unsafe { &*packet },
        _ => {
            info!(ctx, "{} action {}", outcome.name(), action);
            return;
        }
    };
    let (src_port, dst_port) = (u16::from_be(packet.src_port), u16::from_be(packet.dst_port));
    if packet.family == turn_common::maps::FAMILY_V4 {
        info!(
            ctx,
            "{} action {} {:i}:{} -> {:i}:{}",
            outcome.name(),
            action,
            u32::from_be(packet.src_ip[0]),
            src_port,
            u32::from_be(packet.dst_ip[0]),
            dst_port
        );
    } else {
        info!(
            ctx,
            "{} action {} [{:i}]:{} -> [{:i}]:{}",
            outcome.name(),
            action,
            address_bytes(packet.src_ip),
            src_port,
            address_bytes(packet.dst_ip),
            dst_port
        );
    }
}

/// Passes every frame: the baseline the bench harness times `turn_xdp` against.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Drops every UDP datagram and passes the rest: the benchmark's sink in kernel-speed
/// mode, so the receiving stack does not limit what the relay can deliver. ARP and IPv6
/// neighbour discovery go through: dropped, the relay's neighbour entry for the sink
/// expires (15–45 s after the last reply) and the relay's kernel then holds back every
/// datagram to it but one a second, whatever the server.
#[xdp]
pub fn xdp_drop(ctx: XdpContext) -> u32 {
    if is_udp(&ctx) {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The one interface [`xdp_redirect_floor`] redirects to (entry 0), written by the
/// benchmark.
#[map]
static REDIRECT_FLOOR: DevMap = DevMap::with_max_entries(1, 0);

/// Redirects every UDP datagram unchanged into the interface in [`REDIRECT_FLOOR`] and
/// passes the rest (ARP, neighbour discovery): the benchmark's redirect-only floor, what
/// veth costs a program that relays with no lookup and no rewrite. The same helper call
/// as the relay's redirect (`bpf_redirect_map`); with no entry, the frame is aborted
/// (XDP_ABORTED: dropped, and traced as an exception).
#[xdp]
pub fn xdp_redirect_floor(ctx: XdpContext) -> u32 {
    if is_udp(&ctx) {
        REDIRECT_FLOOR
            .redirect(0, 0)
            .unwrap_or(xdp_action::XDP_ABORTED)
    } else {
        xdp_action::XDP_PASS
    }
}

/// Whether the frame is an IPv4 or IPv6 UDP datagram (no extension headers).
#[inline(always)]
fn is_udp(ctx: &XdpContext) -> bool {
    let protocol = match packet::load_be16(ctx, 12) {
        Some(packet::ETHERTYPE_IPV4) => packet::load::<u8>(ctx, packet::ETH_LEN + 9),
        Some(packet::ETHERTYPE_IPV6) => packet::load::<u8>(ctx, packet::ETH_LEN + 6),
        _ => None,
    };
    protocol == Some(packet::IPPROTO_UDP)
}

/// The live-frames generator's pacing and counts ([`xdp_transmit`]), indexed by
/// [`Inject`]; written by the benchmark between runs.
#[map]
static INJECT: Array<u64> = Array::with_max_entries(Inject::COUNT, 0);

/// How many frames late the generator may run before it gives up catching up: a pause
/// (the generator preempted) turns into a burst of at most this many frames on top of
/// the paced ones. Counted in frames, not time, so that the burst fits the receiving
/// veth's 256-frame ring at any rate (a NIC's rings are larger): a burst the generator
/// makes up after its own pause would otherwise be counted as the relay's loss.
const INJECT_CATCH_UP_FRAMES: u64 = 64;

/// The longest frame the live-frames generator sends, and how many flows it has.
const INJECT_FRAME_MAX: usize = 256;
const INJECT_FLOWS: u32 = 64;

/// The live-frames generator's frames, one per flow, zero-padded: [`xdp_transmit`]
/// writes the flow's frame into every frame it transmits.
#[map]
static INJECT_FRAMES: Array<[u8; INJECT_FRAME_MAX]> = Array::with_max_entries(INJECT_FLOWS, 0);

/// The benchmark's live-frames generator, run by BPF_PROG_TEST_RUN in live-frames mode
/// with the client's veth end as ingress: transmits the frame back out of it (XDP_TX, so
/// it crosses the veth pair as an XDP frame) when one is due, in bursts of [`INJECT`]'s
/// burst size every burst × interval, and drops it (no frame leaves) otherwise. Each
/// frame sent is written from [`INJECT_FRAMES`], the flows in turn: the kernel recycles
/// the run's pages without restoring their data, which a receiver (the relay rewriting
/// headers) may have changed.
#[xdp]
pub fn xdp_transmit(ctx: XdpContext) -> u32 {
    let entry = |index: Inject| INJECT.get_ptr_mut(index as u32);
    let (Some(interval), Some(due), Some(sent), Some(first), Some(last)) = (
        entry(Inject::Interval),
        entry(Inject::Due),
        entry(Inject::Sent),
        entry(Inject::First),
        entry(Inject::Last),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    let (Some(burst), Some(burst_left), Some(flows)) = (
        entry(Inject::Burst),
        entry(Inject::BurstLeft),
        entry(Inject::Flows),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the map's own entries; the benchmark's generator runs on one CPU with bottom
    // halves disabled, so nothing else writes them meanwhile.
    unsafe {
        if *burst_left > 0 {
            *burst_left -= 1;
        } else if *due <= now {
            let size = (*burst).max(1);
            *burst_left = size - 1;
            let catch_up = *interval * INJECT_CATCH_UP_FRAMES;
            *due = (*due).max(now.saturating_sub(catch_up)) + *interval * size;
        } else {
            return xdp_action::XDP_DROP;
        }
        if !rewrite_injected(&ctx, (*sent % (*flows).max(1)) as u32) {
            return xdp_action::XDP_ABORTED;
        }
        if *sent == 0 {
            *first = now;
        }
        *sent += 1;
        *last = now;
    }
    xdp_action::XDP_TX
}

/// Writes the live-frames generator's frame of `flow` over the frame; false if there is
/// none.
#[inline(always)]
fn rewrite_injected(ctx: &XdpContext, flow: u32) -> bool {
    let Some(frame) = INJECT_FRAMES.get_ptr_mut(flow) else {
        return false;
    };
    let len = ctx.data_end() - ctx.data();
    // An Ethernet header at least (a bound the verifier keeps, unlike len != 0).
    if !(14..=INJECT_FRAME_MAX).contains(&len) {
        return false;
    }
    // SAFETY: `frame` points to INJECT_FRAME_MAX bytes of the map value, `len` is at most
    // that; the helper checks the packet's bounds.
    unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, frame.cast(), len as u32) == 0 }
}

/// The general path's verdict on a frame the express path `left` to it.
#[inline(always)]
fn relay(ctx: &XdpContext, left: Left) -> Result<Relayed, Outcome> {
    let packet = PACKET.get_ptr_mut(0).ok_or(Outcome::PassInternal)?;
    // SAFETY: this CPU's slot, used by nothing else while the program runs.
    let packet = unsafe { &mut *packet };
    if left == Left::Unparsed {
        packet.parse(ctx)?;
    }
    let shape = packet.shape();
    let mut verdict = Err(Outcome::PassChannelNotBound);
    // A peer's datagram (to a relayed port, no listening one) whose Data indication the
    // express path found cached: the client-side functions take no frame to such a
    // port, and no channel was bound as of the slot's tag.
    if left == Left::DataIndication {
        if to_client::data_indication_cached(ctx, packet, &mut verdict) == Lean::Done {
            return verdict;
        }
        return to_client::data_indication(ctx, packet, shape);
    }
    // ChannelData tries the lean path first (`egress::lean`), which leaves
    // whatever it does not handle to the general one at the same step.
    match shape {
        Shape::ChannelData => {
            let lean = to_peer::channel_data_lean(ctx, packet, &mut verdict);
            match lean.or_general(verdict, || to_peer::channel_data(ctx, packet)) {
                // Not a channel of this client: maybe a peer's datagram to a relayed
                // address.
                Err(Outcome::PassChannelNotBound) => {}
                verdict => return verdict,
            }
        }
        // (One whose client–peer pair this CPU's cache holds took the express path.)
        Shape::SendIndication => {
            match to_peer::send_indication(ctx, packet) {
                // Not one for the fast path: maybe a peer's datagram to a relayed address.
                Err(Outcome::PassStun) => {}
                verdict => return verdict,
            }
        }
        Shape::Stun | Shape::Other => {}
    }
    let lean = to_client::channel_data_lean(ctx, packet, &mut verdict);
    match lean.or_general(verdict, || to_client::channel_data(ctx, packet)) {
        // No live channel for this peer: a Data indication, if any.
        Err(Outcome::PassChannelNotBound) => to_client::data_indication(ctx, packet, shape),
        verdict => verdict,
    }
}

/// Whether the frame's destination port may be a listener's ([`PORT_FILTER`]): else no
/// client-side entry can match it. Checked at the top of the client-side functions, not
/// in [`relay`], whose stack frame is under every relaying path's (512 bytes for the
/// whole chain).
#[inline(always)]
pub fn is_listening(packet: &Packet) -> bool {
    port_filter_holds(u16::from_be(packet.dst_port), PortFilter::is_listening)
}

/// Whether the frame's destination port may be a relayed address's ([`PORT_FILTER`]):
/// else no peer-side entry can match it. Checked as [`is_listening`].
#[inline(always)]
pub fn is_relayed(packet: &Packet) -> bool {
    port_filter_holds(u16::from_be(packet.dst_port), PortFilter::is_relayed)
}

/// Whether `side` of [`PORT_FILTER`] holds `port`.
#[inline(always)]
fn port_filter_holds(port: u16, side: fn(&PortFilter, u16) -> bool) -> bool {
    port_filter().is_some_and(|filter| side(filter, port))
}

/// [`PORT_FILTER`]'s entry (none while userspace has not written it: no port).
#[inline(always)]
pub fn port_filter() -> Option<&'static PortFilter> {
    PORT_FILTER.get(0)
}

/// This CPU's [`JOB`].
#[inline(always)]
pub fn job() -> Result<&'static mut egress::Job, Outcome> {
    let job = JOB.get_ptr_mut(0).ok_or(Outcome::PassInternal)?;
    // SAFETY: this CPU's slot, used by nothing else while the program runs.
    Ok(unsafe { &mut *job })
}

/// The next 64 bits of this CPU's [`RANDOM`].
#[inline(always)]
pub fn random_u64() -> u64 {
    match RANDOM.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, used by nothing else while the program runs.
        Some(random) => unsafe { (*random).next_u64() },
        // (A one-entry array always has this CPU's slot.)
        None => {
            // SAFETY: helper without arguments.
            let random = || unsafe { bpf_get_prandom_u32() } as u64;
            random() << 32 | random()
        }
    }
}

/// Whether the frame comes from a client with a fast-path allocation (same-family relay).
#[inline(always)]
pub fn is_client_flow(packet: &Packet) -> bool {
    let key = FlowKey::new(
        packet.family,
        address_bytes(packet.src_ip),
        packet.src_port.to_ne_bytes(),
        address_bytes(packet.dst_ip),
        packet.dst_port.to_ne_bytes(),
        packet.family,
    );
    // SAFETY: only the presence is used.
    unsafe { CLIENT_ALLOCATIONS.get(key) }.is_some()
}

/// Zeroes `value` in place by volatile word stores of its alignment (LLVM would merge
/// plain ones, or a copy of zeros, into a `memset` call, which is a byte loop in BPF;
/// the verifier refuses misaligned stack stores), and returns it.
///
/// # Safety
/// All-zero must be a valid `T`.
#[inline(always)]
pub unsafe fn zeroed<T>(value: &mut core::mem::MaybeUninit<T>) -> &mut T {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(4) && core::mem::align_of::<T>() >= 4) };
    if core::mem::align_of::<T>() >= 8 && core::mem::size_of::<T>().is_multiple_of(8) {
        let words = value.as_mut_ptr() as *mut u64;
        for i in 0..core::mem::size_of::<T>() / 8 {
            // SAFETY: aligned word `i` of the value.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
    } else {
        let words = value.as_mut_ptr() as *mut u32;
        for i in 0..core::mem::size_of::<T>() / 4 {
            // SAFETY: aligned word `i` of the value.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
    }
    // SAFETY: every byte is written, and the caller vouches that zero is valid.
    unsafe { value.assume_init_mut() }
}

/// CLOCK_MONOTONIC in ns, as of the last timer tick (CLOCK_MONOTONIC_COARSE): the clock
/// userspace converts entry expiries to. An entry can be used up to two ticks (2–20 ms)
/// past its expiry: the coarse clock's own tick, and one more from [`CLOCK`].
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments; the verifier turns it into one load.
    let jiffies = unsafe { bpf_jiffies64() };
    let Some(memo) = CLOCK.get_ptr_mut(0) else {
        // SAFETY: helper without arguments.
        return unsafe { bpf_ktime_get_coarse_ns() };
    };
    // SAFETY: this CPU's slot, used by nothing else while the program runs.
    let memo = unsafe { &mut *memo };
    if memo.jiffies != jiffies {
        memo.jiffies = jiffies;
        // SAFETY: helper without arguments.
        memo.now_ns = unsafe { bpf_ktime_get_coarse_ns() };
    }
    memo.now_ns
}

/// The coarse clock as this CPU read it first during a jiffy ([`now_ns`]).
struct ClockMemo {
    /// The jiffy of the reading (never 0 once read: jiffies start at a large value, so an
    /// unwritten memo never matches).
    jiffies: u64,
    now_ns: u64,
}

/// Per CPU, the coarse clock as read during the current jiffy, so that a frame reads it
/// with one load of `jiffies` and one of this map instead of a call of the clock helper
/// (a chain of kernel functions, each return dear with SRSO's "safe RET"): the coarse
/// clock moves only at the timer tick, which also moves `jiffies`. The tick moves
/// `jiffies` just before the clock, so a reading taken in between is one tick behind for
/// the rest of that jiffy.
#[map]
static CLOCK: PerCpuArray<ClockMemo> = PerCpuArray::with_max_entries(1, 0);

/// The routing generation cached next hops must carry (0: cache off): cached next hops
/// of another generation are looked up again. The daemon bumps it on every routing
/// change.
#[inline(always)]
pub fn routing_generation() -> u32 {
    control(CONTROL_ROUTING_GENERATION)
}

/// Word `index` of [`CONTROL`] (`turn_common::maps::CONTROL_*`), read once; 0 if absent.
#[inline(always)]
pub fn control(index: u32) -> u32 {
    match CONTROL.get_ptr(index) {
        // SAFETY: the map's own entry, an aligned word.
        Some(word) => unsafe { core::ptr::read_volatile(word) },
        None => 0,
    }
}

/// Adds relayed application bytes to an allocation's per-CPU traffic slot.
#[inline(always)]
pub fn add_traffic(slot: u32, bytes: usize, to_peer: bool) {
    if let Some(traffic) = TRAFFIC.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            if to_peer {
                (*traffic).to_peer_packets += 1;
                (*traffic).to_peer_bytes += bytes as u64;
            } else {
                (*traffic).to_client_packets += 1;
                (*traffic).to_client_bytes += bytes as u64;
            }
        }
    }
}

#[inline(always)]
pub fn count(outcome: Outcome, bytes: usize) {
    if let Some(counter) = COUNTERS.get_ptr_mut(outcome as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes as u64;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
