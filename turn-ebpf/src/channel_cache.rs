//! A per-CPU cache of what the fast path relayed a flow with: the channels of the lean
//! ChannelData paths (`to_peer::channel_data_lean`, `to_client::channel_data_lean`),
//! the client–peer pairs of Send indications (`to_peer::send_indication`) and the
//! peers' datagrams without a channel, which go out as Data indications
//! (`to_client::data_indication`). Those general paths fill it; the express path
//! (`crate::express`) reads it, before them. One table per IP family and key size: an
//! IPv4 slot keeps its key compare and its copy to a few words. A hit relays from one
//! array slot, which the verifier inlines: no hash-map helper call, no hashing of a
//! 40-byte key, no bucket walk, and two cache lines of memory instead of the hash map's
//! four or five (its header, the bucket, the element's key and value), per lookup saved.
//!
//! **What a slot holds.** A copy of what the path takes from the hash entries it found
//! for a frame, under the frame's key, tagged with the frame's [`Tag`] read *before*
//! those hash lookups; and the UDP checksum delta of the route's addresses and ports in
//! place of the key's, which depends on nothing else.
//! - A channel: from its `CLIENT_CHANNELS` or `PEER_CHANNELS` value (route, channel
//!   number, allocation slot, expiry, next hop). A hit goes on to the same
//!   [`crate::egress::lean`] as the hash path.
//! - A Send indication: from the `CLIENT_ALLOCATIONS` and `PERMISSIONS` values (the
//!   relayed address, the allocation slot, the earlier of the two expiries, the
//!   permission's next hop), under the client's flow and the peer's address and port.
//! - A peer's datagram without a channel: from the `RELAYS` and `PERMISSIONS` values
//!   (the route to the client, the allocation slot, the earlier expiry, the allocation's
//!   next hop), in the slot of the channel key to the client, marked as a Data
//!   indication. So one lookup tells the express path that there is no channel, and no
//!   `PEER_CHANNELS` lookup is made.
//! - A hit goes out on the lean egress with the slot's route and next hop; one the lean
//!   egress leaves goes through the general path, a Data indication from the slot
//!   ([`cached_data_indication`]), the others from the hash entries.
//!
//! A hit makes the same checks on the copy as the hash path makes on the values (expiry,
//! next hop of the current routing generation, ingress).
//!
//! **Expiry.** A hit checks the copy's expiry against [`now_ns`], the coarse clock as
//! this CPU read it during the current jiffy, as the hash path checks the entry's.
//!
//! **Why a copy is never stale.** A slot's key starts with the address its copy's
//! entries are keyed by: the client's (source) on the paths to the peer, the relayed
//! address (destination) on the paths to the client. Its tag holds the version of that
//! address's bucket ([`CACHE_VERSIONS`], `turn_common::maps::cache_version_bucket`).
//! Userspace moves the versions of an entry's client and relayed addresses' buckets on
//! after every write or removal of a channel, allocation or permission entry (`Tables`
//! in turn-userspace's `bpf/maps.rs`), so a slot filled from an entry that has since
//! changed, or that says "no channel" when one has since been bound, no longer matches.
//! Only the copies of the addresses in those two buckets go: at 100 000 allocations a
//! refresh does not empty every CPU's whole cache, as one global generation moved on
//! every write would (a few hundred times a second). A run that read the tag before
//! the move may still use the old entry, as a run may use a hash entry that is being
//! deleted (RCU). Versions are Gray-coded: consecutive values differ in one bit, so a
//! reader that catches userspace's byte copy halfway sees the old or the new value,
//! never an older one.
//!
//! **Why per CPU.** Only this CPU's runs of the program fill or read its slots, and they
//! never overlap, so a slot is never read half-written. Direct-mapped by a multiplicative
//! hash of the key: a collision or a flood of new flows only costs hash lookups, never a
//! wrong verdict, since the whole key is compared.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use turn_common::checksum::Delta;
use turn_common::maps::{
    cache_version_bucket, NextHop, CACHE_VERSION_BUCKETS, CACHE_VERSION_CYCLE, FAMILY_V4,
    FAMILY_V6,
};

use crate::egress::{route_delta, Arrival, Channel, Job, Route};
use crate::packet::{Address, Packet};
use crate::now_ns;

/// Slots per CPU and family (a power of two); `SLOT_BITS` index bits.
const SLOT_BITS: u32 = 10;
const SLOTS: u32 = 1 << SLOT_BITS;

/// The IPv4 channels, per CPU.
#[map]
static CHANNEL_CACHE: PerCpuArray<CachedChannel<1, 0>> = PerCpuArray::with_max_entries(SLOTS, 0);
/// The IPv6 channels, per CPU.
#[map]
static CHANNEL_CACHE_V6: PerCpuArray<CachedChannel<4, 0>> =
    PerCpuArray::with_max_entries(SLOTS, 0);
/// The IPv4 client–peer pairs of Send indications, per CPU.
#[map]
static SEND_CACHE: PerCpuArray<CachedChannel<1, 1>> = PerCpuArray::with_max_entries(SLOTS, 0);
/// The IPv6 client–peer pairs of Send indications, per CPU.
#[map]
static SEND_CACHE_V6: PerCpuArray<CachedChannel<4, 4>> = PerCpuArray::with_max_entries(SLOTS, 0);

/// The version of each bucket of addresses (`turn_common::maps::cache_version_bucket`),
/// Gray-coded, which userspace moves after every write or removal of an entry that
/// copies keyed by an address of the bucket come from ([`Tag`]).
#[map]
static CACHE_VERSIONS: Array<u32> = Array::with_max_entries(CACHE_VERSION_BUCKETS, 0);

/// What a copy is valid under: the version of its address's bucket
/// ([`CACHE_VERSIONS`]), read before the hash lookups the copy may be filled from, with
/// [`Tag::VALID`] set. A slot holds the tag it was filled under and is used only while
/// the frame's tag is the same.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(u32);

impl Tag {
    /// The tag of a frame from a client: its source's bucket (the client's address),
    /// which the copies of its channels and of its Send indications' entries are under.
    #[inline(always)]
    pub fn of_client(packet: &Packet) -> Tag {
        Tag::of(&packet.src_ip, packet.src_port)
    }

    /// The tag of a frame to a relayed address: its destination's bucket, which the
    /// copies of its channels to the client and of its Data indications' entries are
    /// under.
    #[inline(always)]
    pub fn of_relayed(packet: &Packet) -> Tag {
        Tag::of(&packet.dst_ip, packet.dst_port)
    }

    #[inline(always)]
    fn of(ip: &Address, port: u16) -> Tag {
        match CACHE_VERSIONS.get_ptr(cache_version_bucket(ip, port)) {
            // SAFETY: the map's own entry, an aligned word (a word caught mid-write is
            // harmless: see the module documentation).
            Some(version) => Tag(Tag::VALID | unsafe { core::ptr::read_volatile(version) }),
            None => Tag::OFF,
        }
    }

    /// Set in every tag a frame gets (never in a version: `CACHE_VERSION_CYCLE`), so
    /// that no tag matches an empty slot.
    const VALID: u32 = CACHE_VERSION_CYCLE;

    /// No tag: nothing is used or filled (and the tag of an empty slot).
    pub const OFF: Tag = Tag(0);
}

/// Which path a key is for (part of the key: the channel paths share their tables).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Direction {
    ToPeer = 1,
    ToClient = 2,
    /// A Send indication (client → peer): the peer's port in the channel number's place.
    Send = 3,
}

/// A slot's key in a table of its family (`W` address words: 1 for IPv4, 4 for IPv6):
/// the frame's addresses and ports as the hash key has them (words in memory order), the
/// channel number (or a Send indication's peer port) with the direction in the fourth
/// word, and a Send indication's peer address (`P` words: none for channels, `W` for
/// Send).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Key<const W: usize, const P: usize> {
    src_ip: [u32; W],
    dst_ip: [u32; W],
    ports: u32,
    number_direction: u32,
    peer_ip: [u32; P],
}

/// A frame's key, read from where its parts are ([`Key`] of the table it is looked up
/// in): never built on the stack, whose 512 bytes the paths' frames share.
#[derive(Clone, Copy)]
struct FrameKey<'a> {
    packet: &'a Packet,
    number_direction: u32,
    peer_ip: &'a Address,
}

impl<'a> FrameKey<'a> {
    #[inline(always)]
    fn new(packet: &'a Packet, direction: Direction, number: u16, peer_ip: &'a Address) -> Self {
        FrameKey {
            packet,
            number_direction: (u32::from(number) << 16) | direction as u32,
            peer_ip,
        }
    }

    #[inline(always)]
    fn ports(&self) -> u32 {
        (u32::from(self.packet.src_port) << 16) | u32::from(self.packet.dst_port)
    }

    /// Whether `key` is this frame's: every word compared, without branches.
    #[inline(always)]
    fn matches<const W: usize, const P: usize>(&self, key: &Key<W, P>) -> bool {
        let mut differ =
            (key.ports ^ self.ports()) | (key.number_direction ^ self.number_direction);
        for i in 0..W {
            differ |= (key.src_ip[i] ^ self.packet.src_ip[i]) | (key.dst_ip[i] ^ self.packet.dst_ip[i]);
        }
        for i in 0..P {
            differ |= key.peer_ip[i] ^ self.peer_ip[i];
        }
        differ == 0
    }

    /// The frame's slot in a table of `W` address words and `P` peer words: a
    /// multiplicative hash of its key's words (Fibonacci hashing), top bits.
    #[inline(always)]
    fn index<const W: usize, const P: usize>(&self) -> u32 {
        let mut mixed = self.ports().rotate_left(22) ^ self.number_direction;
        for i in 0..W {
            mixed ^= self.packet.src_ip[i] ^ self.packet.dst_ip[i].rotate_left(11);
        }
        for i in 0..P {
            mixed ^= self.peer_ip[i].rotate_left(5);
        }
        mixed.wrapping_mul(0x9E37_79B1) >> (32 - SLOT_BITS)
    }

    /// Writes the frame's key into `key`.
    #[inline(always)]
    fn write<const W: usize, const P: usize>(&self, key: &mut Key<W, P>) {
        key.src_ip = narrow(&self.packet.src_ip);
        key.dst_ip = narrow(&self.packet.dst_ip);
        key.ports = self.ports();
        key.number_direction = self.number_direction;
        key.peer_ip = narrow(self.peer_ip);
    }
}

/// The peer address of a channel's key (which has none).
const NO_PEER: Address = [0; 4];

/// The first `W` words of an address (all of an IPv4 address's in one).
#[inline(always)]
fn narrow<const W: usize>(address: &Address) -> [u32; W] {
    let mut words = [0; W];
    for i in 0..W {
        words[i] = address[i];
    }
    words
}

/// An address of `W` words as an [`Address`] (an IPv4 one in the first word).
#[inline(always)]
fn widen<const W: usize>(words: &[u32; W]) -> Address {
    let mut address = [0; 4];
    for i in 0..W {
        address[i] = words[i];
    }
    address
}

/// One slot of a table of a family (see the module documentation).
#[repr(C)]
pub struct CachedChannel<const W: usize, const P: usize> {
    /// The tag the slot was filled under; [`Tag::OFF`]: empty.
    tag: Tag,
    key: Key<W, P>,
    /// The route's addresses, words in memory order.
    src_ip: [u32; W],
    dst_ip: [u32; W],
    src_port: u16,
    dst_port: u16,
    /// The channel number (to the client), in memory order.
    number: [u8; 2],
    /// 1: a peer's datagrams go to the client as Data indications (no channel).
    data_indication: u8,
    pad: u8,
    slot: u32,
    expires_ns: u64,
    /// [`Channel::route_delta`].
    route_delta: Delta,
    next_hop: NextHop,
}

impl<const W: usize, const P: usize> CachedChannel<W, P> {
    /// The family of the table's frames and routes.
    const FAMILY: u8 = if W == 1 { FAMILY_V4 } else { FAMILY_V6 };

    /// What the slot holds, as the lean path relays with it (within the family).
    #[inline(always)]
    fn channel(&self) -> Channel<'_> {
        Channel {
            next_hop: &self.next_hop,
            route: self.route(),
            route_delta: self.route_delta,
            number: self.number,
            slot: self.slot,
        }
    }

    /// What a channel path's slot holds for its frame.
    #[inline(always)]
    fn cached(&'static self) -> Cached {
        if self.data_indication != 0 {
            Cached::DataIndication(self.channel())
        } else {
            Cached::Channel(self.channel())
        }
    }

    /// What a Send or Data indication's slot holds, as its path relays with it: the
    /// route and the allocation slot written to `job`, and the next hop.
    #[inline(always)]
    fn indication_hit(&'static mut self, job: &mut Job) -> &'static mut NextHop {
        job.route = self.route();
        job.slot = self.slot;
        &mut self.next_hop
    }

    /// The route the slot holds (within the family).
    #[inline(always)]
    fn route(&self) -> Route {
        Route {
            src_ip: widen(&self.src_ip),
            dst_ip: widen(&self.dst_ip),
            src_port: self.src_port,
            dst_port: self.dst_port,
            family: Self::FAMILY,
        }
    }
}

/// What a frame's slot holds for it ([`Lookup::find`]).
pub enum Cached {
    Miss,
    /// A live channel.
    Channel(Channel<'static>),
    /// A live allocation and permission, and no channel, for a peer's datagram: a Data
    /// indication ([`cached_data_indication`]), relayed with the route to the client,
    /// the allocation's slot and the copy of its next hop (no channel number).
    DataIndication(Channel<'static>),
}

/// The table of a frame's family, if the cache is on.
#[derive(Clone, Copy)]
enum Table {
    Off,
    V4,
    V6,
}

/// A frame's place in this CPU's cache: its table and the last word of its key, and the
/// tag read before the hash lookup a slot may be filled from. The key's other
/// words are the frame's, read again from the parsed frame to fill the slot (kept here,
/// they would add to the lean paths' stack frames).
pub struct Lookup {
    table: Table,
    direction: Direction,
    number: u16,
    tag: Tag,
    /// What a next hop must match for the frame, as the slot was checked against.
    pub arrival: Arrival,
}

impl Lookup {
    /// The frame's slot on `direction`'s path (`number`: the channel number from the
    /// ChannelData header to the peer, 0 to the client) under `tag` (read before the
    /// hash lookups: [`Tag::of_client`] to the peer, [`Tag::of_relayed`] to the client):
    /// where [`Lookup::find`] looks and [`Lookup::admit`] fills.
    #[inline(always)]
    pub fn new(
        ctx: &XdpContext,
        packet: &Packet,
        direction: Direction,
        number: u16,
        tag: Tag,
    ) -> Lookup {
        let table = if tag == Tag::OFF {
            Table::Off
        } else if packet.family == FAMILY_V4 {
            Table::V4
        } else {
            Table::V6
        };
        Lookup {
            table,
            direction,
            number,
            tag,
            arrival: Arrival::of(ctx),
        }
    }

    /// What the slot holds for `packet` (the frame of [`Lookup::new`]) if it is a hit
    /// (see [`find`]).
    #[inline(always)]
    pub fn find(&self, packet: &Packet) -> Cached {
        let key = FrameKey::new(packet, self.direction, self.number, &NO_PEER);
        let cached = match self.table {
            Table::Off => None,
            Table::V4 => find(&CHANNEL_CACHE, &key, self.tag, self.arrival).map(|c| c.cached()),
            Table::V6 => find(&CHANNEL_CACHE_V6, &key, self.tag, self.arrival).map(|c| c.cached()),
        };
        cached.unwrap_or(Cached::Miss)
    }

    /// Whether `channel`, which the hash path found for `packet` (the frame of
    /// [`Lookup::new`]) in an entry expiring at `expires_ns` (CLOCK_MONOTONIC), is live;
    /// if so, the frame's slot is filled with it ([`fill`]), if the frame has one.
    #[inline(always)]
    pub fn admit(&self, packet: &Packet, channel: &Channel, expires_ns: u64) -> bool {
        if expires_ns <= now_ns() {
            return false;
        }
        let (direction, number) = (self.direction, self.number);
        match self.table {
            Table::Off => {}
            Table::V4 => {
                let key = FrameKey::new(packet, direction, number, &NO_PEER);
                fill(&CHANNEL_CACHE, &key, self.tag, expires_ns, &Copy::of(channel));
            }
            Table::V6 => {
                let key = FrameKey::new(packet, direction, number, &NO_PEER);
                fill(&CHANNEL_CACHE_V6, &key, self.tag, expires_ns, &Copy::of(channel));
            }
        }
        true
    }
}

/// A Send indication's place in this CPU's cache (as [`Lookup`]): the table of its
/// family, and the tag read before the hash lookups a slot may be filled from.
/// The express path looks the frame up ([`SendLookup::find`]); on a miss, the general
/// path makes its own and fills the slot ([`SendLookup::fill`]).
pub struct SendLookup {
    table: Table,
    tag: Tag,
    peer_port: u16,
    /// The expiry of the slot to fill ([`SendLookup::fill`]).
    expires_ns: u64,
}

impl SendLookup {
    /// The place of a Send indication (the frame `packet`) to a peer at port `peer_port`
    /// (a word holding its bytes in memory order) of `peer_family`: none for a peer of
    /// the other family (never cached, and the key would hold only part of its address).
    #[inline(always)]
    pub fn new(packet: &Packet, peer_port: u16, peer_family: u8) -> SendLookup {
        let tag = Tag::of_client(packet);
        let table = if tag == Tag::OFF || peer_family != packet.family {
            Table::Off
        } else if packet.family == FAMILY_V4 {
            Table::V4
        } else {
            Table::V6
        };
        SendLookup {
            table,
            tag,
            peer_port,
            expires_ns: 0,
        }
    }

    /// If the slot holds a live allocation and a permission covering the peer at
    /// `peer_ip` for the frame (see [`find`]): what the frame's next hop was checked
    /// against, and the route from the relayed address to the peer with the allocation
    /// slot and the copy of the permission's next hop, as a lean path relays with them.
    #[inline(always)]
    pub fn find(
        &self,
        ctx: &XdpContext,
        packet: &Packet,
        peer_ip: &Address,
    ) -> Option<(Arrival, Channel<'static>)> {
        let arrival = Arrival::of(ctx);
        let key = FrameKey::new(packet, Direction::Send, self.peer_port, peer_ip);
        let channel = match self.table {
            Table::Off => None,
            Table::V4 => find(&SEND_CACHE, &key, self.tag, arrival).map(|cached| cached.channel()),
            Table::V6 => {
                find(&SEND_CACHE_V6, &key, self.tag, arrival).map(|cached| cached.channel())
            }
        }?;
        Some((arrival, channel))
    }

    /// Fills the slot of the Send indication of [`SendLookup::new`] (made before the hash
    /// lookups) with what the hash path found for it (`job`: the route from the relayed
    /// address to the peer and the allocation's slot; the permission's `next_hop`): an
    /// allocation and a permission both live until `expires_ns`, the permission covering
    /// the peer's port.
    #[inline(always)]
    pub fn fill(
        &mut self,
        packet: &Packet,
        peer_ip: &Address,
        job: &Job,
        next_hop: &NextHop,
        expires_ns: u64,
    ) {
        self.expires_ns = expires_ns;
        self.fill_slot(packet, peer_ip, job, next_hop);
    }

    /// [`SendLookup::fill`], in a BPF function of its own: its stack frame is not
    /// added to the one of the path's, which calls the general path's chain of them.
    #[inline(never)]
    fn fill_slot(&self, packet: &Packet, peer_ip: &Address, job: &Job, next_hop: &NextHop) {
        let key = FrameKey::new(packet, Direction::Send, self.peer_port, peer_ip);
        let copy = Copy::of_indication(packet, job, next_hop, false);
        match self.table {
            Table::Off => {}
            Table::V4 => fill(&SEND_CACHE, &key, self.tag, self.expires_ns, &copy),
            Table::V6 => fill(&SEND_CACHE_V6, &key, self.tag, self.expires_ns, &copy),
        }
    }
}

/// The Data indication held by this CPU's slot for a peer's datagram (the frame
/// `packet`), which [`Lookup::new`] found live for it earlier in this run
/// ([`Cached::DataIndication`]): the route to the client and the allocation slot written
/// to `job`, and the slot's copy of the allocation's next hop (the general path may look
/// it up again for the frame, as it would the entry's). Its expiry and next hop are not
/// checked again: only this CPU's runs write the slot, and this run has not since. Its
/// key, mark and tag are, so that a wrong call can only miss. None if it holds
/// something else.
#[inline(always)]
pub fn cached_data_indication(packet: &Packet, job: &mut Job) -> Option<&'static mut NextHop> {
    let key = FrameKey::new(packet, Direction::ToClient, 0, &NO_PEER);
    if packet.family == FAMILY_V4 {
        data_indication_hit(&CHANNEL_CACHE, &key, packet.cache_tag, job)
    } else {
        data_indication_hit(&CHANNEL_CACHE_V6, &key, packet.cache_tag, job)
    }
}

/// [`cached_data_indication`] in `table`: `key`'s slot if it holds a Data indication
/// under `tag`.
#[inline(always)]
fn data_indication_hit<const W: usize>(
    table: &'static PerCpuArray<CachedChannel<W, 0>>,
    key: &FrameKey,
    tag: Tag,
    job: &mut Job,
) -> Option<&'static mut NextHop> {
    let cached = table.get_ptr_mut(key.index::<W, 0>())?;
    // SAFETY: this CPU's slot, used only by this CPU's runs, which do not overlap.
    let cached = unsafe { &mut *cached };
    let holds = cached.data_indication != 0 && cached.tag == tag && key.matches(&cached.key);
    holds.then(|| cached.indication_hit(job))
}

/// Fills this CPU's slot for a peer's datagram (the frame `packet`) with what the hash
/// path found for its Data indication (`job`: the route from the listening address to
/// the client and the allocation's slot; the allocation's `next_hop`): an allocation and
/// a permission both live until `expires_ns`, and no channel, as of the tag read
/// before the client-side lookups ([`Packet::cache_tag`]). A BPF function of its
/// own: its stack frame is not added to the general path's.
#[inline(never)]
pub fn fill_data_indication(packet: &Packet, job: &Job, next_hop: &NextHop, expires_ns: u64) {
    let tag = packet.cache_tag;
    if tag == Tag::OFF {
        return;
    }
    let key = FrameKey::new(packet, Direction::ToClient, 0, &NO_PEER);
    let copy = Copy::of_indication(packet, job, next_hop, true);
    if packet.family == FAMILY_V4 {
        fill(&CHANNEL_CACHE, &key, tag, expires_ns, &copy);
    } else {
        fill(&CHANNEL_CACHE_V6, &key, tag, expires_ns, &copy);
    }
}

/// What a slot is filled with ([`fill`]): a [`Channel`]'s parts, by reference where
/// they are (a Send indication's route is in the per-CPU job, not on the stack).
struct Copy<'a> {
    route: &'a Route,
    route_delta: Delta,
    number: [u8; 2],
    data_indication: bool,
    slot: u32,
    next_hop: &'a NextHop,
}

impl<'a> Copy<'a> {
    /// A Send (`data_indication` false) or Data indication's: the route and allocation
    /// slot `job` holds for `packet`, and `next_hop`.
    #[inline(always)]
    fn of_indication(
        packet: &Packet,
        job: &'a Job,
        next_hop: &'a NextHop,
        data_indication: bool,
    ) -> Copy<'a> {
        Copy {
            route: &job.route,
            route_delta: route_delta(packet, &job.route),
            number: [0; 2],
            data_indication,
            slot: job.slot,
            next_hop,
        }
    }

    #[inline(always)]
    fn of(channel: &'a Channel) -> Copy<'a> {
        Copy {
            route: &channel.route,
            route_delta: channel.route_delta,
            number: channel.number,
            data_indication: false,
            slot: channel.slot,
            next_hop: channel.next_hop,
        }
    }
}

/// This CPU's slot of `table` for `key` if it holds `key` under `tag`, unexpired
/// ([`now_ns`]), with a next hop that is still current for a frame of `arrival` (else
/// the hash path, which refreshes the next hop, and then the slot).
#[inline(always)]
fn find<const W: usize, const P: usize>(
    table: &'static PerCpuArray<CachedChannel<W, P>>,
    key: &FrameKey,
    tag: Tag,
    arrival: Arrival,
) -> Option<&'static mut CachedChannel<W, P>> {
    let cached = table.get_ptr_mut(key.index::<W, P>())?;
    // SAFETY: this CPU's slot, used only by this CPU's runs, which do not overlap.
    let cached = unsafe { &mut *cached };
    let hit = cached.tag == tag
        && key.matches(&cached.key)
        && now_ns() < cached.expires_ns
        && cached.next_hop.generation == arrival.routing_generation
        && cached.next_hop.ingress_ifindex == arrival.ingress;
    hit.then_some(cached)
}

/// Fills `key`'s slot of `table` on this CPU under `tag` (read before the hash
/// lookup the copy comes from), usable before `expires_ns`, with what the lean path
/// takes from the entry it found, if that relays within the table's family: a
/// cross-family channel (an IPv4 frame relayed as IPv6, say) is never cached.
#[inline(always)]
fn fill<const W: usize, const P: usize>(
    table: &'static PerCpuArray<CachedChannel<W, P>>,
    key: &FrameKey,
    tag: Tag,
    expires_ns: u64,
    fill: &Copy,
) {
    if fill.route.family != CachedChannel::<W, P>::FAMILY {
        return;
    }
    let Some(cached) = table.get_ptr_mut(key.index::<W, P>()) else {
        return;
    };
    // SAFETY: this CPU's slot, written only by this CPU's runs, which do not overlap.
    let cached = unsafe { &mut *cached };
    key.write(&mut cached.key);
    cached.src_ip = narrow(&fill.route.src_ip);
    cached.dst_ip = narrow(&fill.route.dst_ip);
    cached.src_port = fill.route.src_port;
    cached.dst_port = fill.route.dst_port;
    cached.route_delta = fill.route_delta;
    cached.number = fill.number;
    cached.data_indication = u8::from(fill.data_indication);
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
            cached.tag = Tag::OFF;
            return;
        }
        cached.next_hop.generation = before;
    }
    cached.tag = tag;
}
