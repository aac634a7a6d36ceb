//! The XDP fast path of turn-relay: relays ChannelData and Send/Data indications
//! (RFC 8656 §11, §12) between clients and peers for the allocations, permissions and
//! channels userspace installs in the maps below; passes everything else to the stack.
//!
//! One file per forwarding direction ([`to_peer`], [`to_client`]); [`egress`] rewrites
//! and sends; [`packet`] parses. `turn_xdp` only maps outcomes to actions and counts.
#![no_std]
#![no_main]
// Map keys live in the per-CPU scratch value and are passed by reference on purpose: by
// value they would be copied onto the 512-byte stack first.
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "keys are read from scratch memory, not copied to the stack"
)]

mod egress;
mod fingerprint;
mod packet;
mod to_client;
mod to_peer;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{DevMapHash, HashMap, PerCpuArray},
    programs::XdpContext,
};
use turn_common::counters::{Counter, Outcome};
use turn_common::maps::{
    AllocationTraffic, AllocationValue, ClientChannelKey, ClientChannelValue, FlowKey,
    PeerChannelKey, PeerChannelValue, PermissionKey, PermissionValue, RelayKey, RelayValue,
};
use turn_common::stun::{CHANNEL_MAX, CHANNEL_MIN, HEADER_LEN, SEND_INDICATION};

use packet::{be16, Packet};

/// The most bytes stripped in front of or behind the application data (STUN header and
/// attributes of a Send indication, ChannelData header and padding).
pub const MAX_STRIPPED: usize = 64;

/// Per-packet working memory, kept in a per-CPU map: the BPF stack is 512 bytes for the
/// whole call chain.
pub struct Scratch {
    pub packet: Packet,
    pub fib: bpf_fib_lookup,
    /// `eth | ip | udp` of the relayed frame being assembled.
    pub headers: [u8; 62],
    /// TURN framing to write in front of the data (up to a Data indication's 48 bytes).
    pub prefix: [u8; 48],
    /// Stripped bytes, copied out for the checksum update.
    pub stripped: [u8; MAX_STRIPPED],
    /// Lookup keys (map lookups read keys from map values as well as from the stack).
    pub client_channel_key: ClientChannelKey,
    pub flow_key: FlowKey,
    pub relay_key: RelayKey,
    pub permission_key: PermissionKey,
    pub peer_channel_key: PeerChannelKey,
}

// Map sizes here are placeholders: userspace sizes every map from max_allocations
// before loading (turn-userspace/src/bpf/maps.rs).

/// Per-CPU packets/bytes per [`Outcome`].
#[map]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(Outcome::COUNT, 0);
/// Relayed address → allocation (client side), for peer → client.
#[map]
static RELAYS: HashMap<RelayKey, RelayValue> = HashMap::with_max_entries(1, 0);
/// Client 5-tuple + relay family → relayed address, for Send indications.
#[map]
static CLIENT_ALLOCATIONS: HashMap<FlowKey, AllocationValue> = HashMap::with_max_entries(1, 0);
/// Relayed address + peer IP → permission expiry.
#[map]
static PERMISSIONS: HashMap<PermissionKey, PermissionValue> = HashMap::with_max_entries(1, 0);
/// Client 5-tuple + channel number → peer, for client → peer ChannelData.
#[map]
static CLIENT_CHANNELS: HashMap<ClientChannelKey, ClientChannelValue> =
    HashMap::with_max_entries(1, 0);
/// Relayed address + peer transport address → channel number, for peer → client.
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
/// Per-CPU [`Scratch`].
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A frame the program relayed itself.
pub struct Relayed {
    pub action: u32,
    pub outcome: Outcome,
}

#[xdp]
pub fn turn_xdp(ctx: XdpContext) -> u32 {
    let frame_len = ctx.data_end() - ctx.data();
    let (outcome, action) = match relay(&ctx) {
        Ok(relayed) => (relayed.outcome, relayed.action),
        Err(outcome) if outcome.is_drop() => (outcome, xdp_action::XDP_DROP),
        Err(outcome) => (outcome, xdp_action::XDP_PASS),
    };
    count(outcome, frame_len);
    action
}

/// Passes every frame: the baseline the bench harness times `turn_xdp` against.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Drops every frame: the benchmark's sink in kernel-speed mode, so the receiving stack
/// does not limit what the relay can deliver.
#[xdp]
pub fn xdp_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// What a UDP payload looks like, by its first bytes (RFC 7983 §7 demultiplexing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    ChannelData { number: [u8; 2] },
    SendIndication,
    Stun,
    Other,
}

#[inline(always)]
fn shape(packet: &Packet) -> Shape {
    let head = packet.payload_head;
    let kind = be16([head[0], head[1]]);
    match head[0] >> 6 {
        0b01 if packet.payload_len >= 4 && (CHANNEL_MIN..=CHANNEL_MAX).contains(&kind) => {
            Shape::ChannelData {
                number: [head[0], head[1]],
            }
        }
        0b00 if packet.payload_len >= HEADER_LEN && kind == SEND_INDICATION => {
            Shape::SendIndication
        }
        0b00 if packet.payload_len >= HEADER_LEN => Shape::Stun,
        _ => Shape::Other,
    }
}

#[inline(always)]
fn relay(ctx: &XdpContext) -> Result<Relayed, Outcome> {
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(Outcome::PassInternal)?;
    // SAFETY: this CPU's scratch slot; nothing else uses it while the program runs.
    let scratch = unsafe { &mut *scratch };
    scratch.packet.parse(ctx)?;
    let shape = shape(&scratch.packet);
    match shape {
        Shape::ChannelData { number } => {
            let packet = &scratch.packet;
            scratch.client_channel_key = ClientChannelKey::new(
                packet.family,
                packet.src_ip,
                packet.src_port,
                packet.dst_ip,
                packet.dst_port,
                number,
            );
            // SAFETY: the value is only read while this program runs (RCU-protected).
            if let Some(channel) = unsafe { CLIENT_CHANNELS.get(&scratch.client_channel_key) } {
                return to_peer::channel_data(ctx, scratch, channel);
            }
        }
        Shape::SendIndication => match to_peer::send_indication(ctx, scratch) {
            // Not one for the fast path: maybe a peer's datagram to a relayed address.
            Err(Outcome::PassStun) => {}
            verdict => return verdict,
        },
        Shape::Stun | Shape::Other => {}
    }
    let packet = &scratch.packet;
    scratch.relay_key = RelayKey::new(packet.family, packet.dst_ip, packet.dst_port);
    // SAFETY: as above.
    if let Some(allocation) = unsafe { RELAYS.get(&scratch.relay_key) } {
        return to_client::relay(ctx, scratch, allocation);
    }
    Err(match shape {
        Shape::ChannelData { .. } if is_client_flow(scratch) => Outcome::PassChannelNotBound,
        Shape::SendIndication | Shape::Stun => Outcome::PassStun,
        _ => Outcome::PassUnknownFlow,
    })
}

/// Whether the frame comes from a client with a fast-path allocation (same-family relay).
#[inline(always)]
fn is_client_flow(scratch: &mut Scratch) -> bool {
    let packet = &scratch.packet;
    scratch.flow_key = FlowKey::new(
        packet.family,
        packet.src_ip,
        packet.src_port,
        packet.dst_ip,
        packet.dst_port,
        packet.family,
    );
    // SAFETY: only the presence is used.
    unsafe { CLIENT_ALLOCATIONS.get(&scratch.flow_key) }.is_some()
}

/// CLOCK_MONOTONIC in ns: the clock userspace converts entry expiries to.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
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
fn count(outcome: Outcome, bytes: usize) {
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
