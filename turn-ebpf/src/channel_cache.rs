//! A per-CPU cache of the IPv4 channels the lean ChannelData paths relayed
//! (`to_peer::channel_data_lean`, `to_client::channel_data_lean`). A hit relays from one
//! array slot, which the verifier inlines: no hash-map helper call, no hashing of a
//! 40-byte key, no bucket walk, and two cache lines of memory instead of the hash map's
//! four or five (its header, the bucket, the element's key and value). At the rates a
//! relay sees per CPU, those lines are cold for most frames, and each costs more than the
//! instructions around it.
//!
//! **What a slot holds.** A copy of what the lean path takes from the `CLIENT_CHANNELS`
//! or `PEER_CHANNELS` value it found for a frame (route, channel number, allocation
//! slot, expiry, next hop), under the frame's key, tagged with the cache generation read
//! *before* that hash lookup. A hit makes the same checks on the copy as the hash path
//! makes on the value (expiry, next hop of the current routing generation, ingress),
//! then the same [`crate::egress::channel_data`].
//!
//! **Expiry.** A hit checks the copy's expiry against [`now_ns`], the coarse clock as
//! this CPU read it during the current jiffy, as the hash path checks the entry's.
//!
//! **Why a copy is never stale.** Userspace moves the cache generation on after every
//! write or removal of a channel entry (`Tables` in turn-userspace's `bpf/maps.rs`), so a
//! slot filled from an entry that has since changed no longer matches. A run that read
//! the generation before the move may still use the old entry, as a run may use a hash
//! entry that is being deleted (RCU). The generation is Gray-coded: consecutive values
//! differ in one bit, so a reader that catches userspace's byte copy halfway sees the old
//! or the new value, never an older one. 0 turns the cache off (nothing is used or
//! filled).
//!
//! **Why per CPU.** Only this CPU's runs of the program fill or read its slots, and they
//! never overlap, so a slot is never read half-written. Direct-mapped by a multiplicative
//! hash of the key: a collision or a flood of new flows only costs hash lookups, never a
//! wrong verdict, since the whole key is compared.

use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use aya_ebpf::programs::XdpContext;
use turn_common::maps::{NextHop, CONTROL_CHANNEL_CACHE_GENERATION, FAMILY_V4};

use crate::egress::{Arrival, Channel, Route};
use crate::packet::Packet;
use crate::{control, now_ns};

/// Slots per CPU (a power of two); `SLOT_BITS` index bits.
const SLOT_BITS: u32 = 10;
const SLOTS: u32 = 1 << SLOT_BITS;

/// The slots, per CPU.
#[map]
static CHANNEL_CACHE: PerCpuArray<CachedChannel> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Which lean path a key is for (part of the key: both share the slots).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Direction {
    ToPeer = 1,
    ToClient = 2,
}

/// A frame's key: its addresses and ports as the hash key has them (IPv4 words in memory
/// order), and the channel number with the direction in the last word.
pub type Key = [u32; 4];

/// One slot (see the module documentation).
#[repr(C)]
pub struct CachedChannel {
    /// The cache generation the slot was filled under; 0: empty.
    generation: u32,
    key: Key,
    /// The route's IPv4 addresses, words in memory order.
    src_ip: u32,
    dst_ip: u32,
    src_port: u16,
    dst_port: u16,
    /// The channel number (to the client), in memory order.
    number: [u8; 2],
    pad: [u8; 2],
    slot: u32,
    expires_ns: u64,
    next_hop: NextHop,
    pad_end: u32,
}

impl CachedChannel {
    /// What the slot holds, as the lean path relays with it (IPv4 to IPv4).
    #[inline(always)]
    fn channel(&self) -> Channel<'_> {
        Channel {
            next_hop: &self.next_hop,
            route: Route {
                src_ip: [self.src_ip, 0, 0, 0],
                dst_ip: [self.dst_ip, 0, 0, 0],
                src_port: self.src_port,
                dst_port: self.dst_port,
                family: FAMILY_V4,
            },
            number: self.number,
            slot: self.slot,
        }
    }
}

/// A frame's place in this CPU's cache: its key, if it has one, and the generation read
/// before the hash lookup a slot may be filled from.
pub struct Lookup {
    key: Option<Key>,
    generation: u32,
    /// What a next hop must match for the frame, as the slot was checked against.
    pub arrival: Arrival,
}

impl Lookup {
    /// The frame's slot on `direction`'s path (`number`: the channel number from the
    /// ChannelData header to the peer, 0 to the client), and what it holds for the
    /// frame if it is a hit (see [`find`]): a live channel.
    #[inline(always)]
    pub fn new(
        ctx: &XdpContext,
        packet: &Packet,
        direction: Direction,
        number: u16,
    ) -> (Lookup, Option<Channel<'static>>) {
        let generation = generation();
        let arrival = Arrival::of(ctx);
        let key = key(packet, direction, number, generation);
        let cached = key.and_then(|key| find(&key, generation, now_ns(), arrival));
        (
            Lookup {
                key,
                generation,
                arrival,
            },
            cached.map(CachedChannel::channel),
        )
    }

    /// Whether `channel`, which the hash path found in an entry expiring at
    /// `expires_ns` (CLOCK_MONOTONIC), is live; if so, the frame's slot is filled with it
    /// ([`fill`]), if the frame has one.
    #[inline(always)]
    pub fn admit(&self, channel: &Channel, expires_ns: u64) -> bool {
        if expires_ns <= now_ns() {
            return false;
        }
        if let Some(key) = &self.key {
            fill(key, self.generation, expires_ns, channel);
        }
        true
    }
}

/// The cache generation; 0: off. (A word caught mid-write is harmless: see the module
/// documentation.)
#[inline(always)]
fn generation() -> u32 {
    control(CONTROL_CHANNEL_CACHE_GENERATION)
}

/// The key of an IPv4 frame on `direction`'s path, with `number` (the channel number
/// from the ChannelData header to the peer, 0 to the client); `None` for IPv6 or with
/// the cache off.
#[inline(always)]
fn key(packet: &Packet, direction: Direction, number: u16, generation: u32) -> Option<Key> {
    if packet.family != FAMILY_V4 || generation == 0 {
        return None;
    }
    let ports = (u32::from(packet.src_port) << 16) | u32::from(packet.dst_port);
    Some([
        packet.src_ip[0],
        packet.dst_ip[0],
        ports,
        (u32::from(number) << 16) | direction as u32,
    ])
}

/// This CPU's slot for `key` if it holds `key` under `generation`, unexpired at `now`
/// (ns), with a next hop that is still current for a frame of `arrival` (else the
/// hash path, which refreshes the next hop, and then the slot).
#[inline(always)]
fn find(
    key: &Key,
    generation: u32,
    now: u64,
    arrival: Arrival,
) -> Option<&'static CachedChannel> {
    let cached = CHANNEL_CACHE.get_ptr(index(key))?;
    // SAFETY: this CPU's slot, written only by this CPU's runs, which do not overlap.
    let cached = unsafe { &*cached };
    let hit = cached.generation == generation
        && cached.key == *key
        && now < cached.expires_ns
        && cached.next_hop.generation == arrival.routing_generation
        && cached.next_hop.ingress_ifindex == arrival.ingress;
    hit.then_some(cached)
}

/// Fills `key`'s slot on this CPU under `generation` (read before the hash lookup the
/// copy comes from), usable before `expires_ns`, with what the lean path takes from
/// the entry it found, if that relays IPv4 to IPv4: a slot holds IPv4 routes only, and a
/// cross-family channel (an IPv4 frame relayed as IPv6) is never cached.
#[inline(always)]
fn fill(key: &Key, generation: u32, expires_ns: u64, fill: &Channel) {
    if fill.route.family != FAMILY_V4 {
        return;
    }
    let Some(cached) = CHANNEL_CACHE.get_ptr_mut(index(key)) else {
        return;
    };
    // SAFETY: this CPU's slot, written only by this CPU's runs, which do not overlap.
    let cached = unsafe { &mut *cached };
    cached.key = *key;
    cached.src_ip = fill.route.src_ip[0];
    cached.dst_ip = fill.route.dst_ip[0];
    cached.src_port = fill.route.src_port;
    cached.dst_port = fill.route.dst_port;
    cached.number = fill.number;
    cached.slot = fill.slot;
    cached.expires_ns = expires_ns;
    // The next hop as `egress::look_up` leaves it, which another CPU may be rewriting
    // (generation 0 first, its own generation last): copied only if its generation is
    // the same before and after the copy.
    let next_hop = fill.next_hop as *const NextHop;
    // SAFETY: a map value the caller holds, read field by field in this order.
    unsafe {
        let before = core::ptr::read_volatile(&(*next_hop).generation);
        cached.next_hop.ifindex = core::ptr::read_volatile(&(*next_hop).ifindex);
        cached.next_hop.ingress_ifindex = core::ptr::read_volatile(&(*next_hop).ingress_ifindex);
        cached.next_hop.mtu = core::ptr::read_volatile(&(*next_hop).mtu);
        cached.next_hop.tos = core::ptr::read_volatile(&(*next_hop).tos);
        let macs =
            core::ptr::read_volatile(&(*next_hop).macs as *const [u8; 12] as *const [u32; 3]);
        core::ptr::write_volatile(
            &mut cached.next_hop.macs as *mut [u8; 12] as *mut [u32; 3],
            macs,
        );
        let after = core::ptr::read_volatile(&(*next_hop).generation);
        if before != after || before == 0 {
            cached.generation = 0;
            return;
        }
        cached.next_hop.generation = before;
    }
    cached.generation = generation;
}

/// `key`'s slot: a multiplicative hash of its words (Fibonacci hashing), top bits.
#[inline(always)]
fn index(key: &Key) -> u32 {
    let mixed = key[0] ^ key[1].rotate_left(11) ^ key[2].rotate_left(22) ^ key[3];
    mixed.wrapping_mul(0x9E37_79B1) >> (32 - SLOT_BITS)
}
