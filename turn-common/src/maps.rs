//! Keys and values of the XDP program's maps. Userspace writes the entries; the program
//! only fills in the next-hop cache of an entry ([`NextHop`]).
//!
//! Layout rules (pinned by the tests below): `#[repr(C)]`; wire quantities (addresses,
//! ports, channel numbers, MAC addresses) are big-endian byte arrays the program copies
//! straight into headers; host quantities (expiry in CLOCK_MONOTONIC ns, allocation slot,
//! interface indexes) are native integers at aligned offsets of the values. Keys are
//! 4-byte aligned with sizes a multiple of 4 (the program builds them on its stack with
//! word stores) and explicit, zeroed padding, so that equal keys are equal bytes. IPv4
//! addresses sit in the first 4 bytes of a 16-byte field, the rest zero. The padding of
//! keys, which the program builds, is made of integers, never byte arrays: zeroing a
//! byte array becomes a call to a byte-by-byte `memset` in BPF.
//!
//! Each value holds everything its relay path needs, so the hot paths make one hash
//! lookup per packet: client → peer ChannelData reads [`ClientChannelValue`], peer →
//! client ChannelData [`PeerChannelValue`]; both carry the earliest expiry of the
//! channel, its permission and its allocation.

/// Read accessors that copy (`field: Type`) or borrow (`ref { field: Type }`) a field,
/// inlined for the verifier like the rest of this module.
macro_rules! accessors {
    ($type:ident { $($field:ident: $ty:ty),* $(,)? } $(ref { $($ref_field:ident: $ref_ty:ty),* $(,)? })?) => {
        impl $type {
            $(
                #[inline(always)]
                pub const fn $field(&self) -> $ty {
                    self.$field
                }
            )*
            $($(
                #[inline(always)]
                pub const fn $ref_field(&self) -> &$ref_ty {
                    &self.$ref_field
                }
            )*)?
        }
    };
}

/// `family` of an IPv4 entry.
pub const FAMILY_V4: u8 = 4;
/// `family` of an IPv6 entry.
pub const FAMILY_V6: u8 = 6;

/// `CONTROL` (an array of `u32` words in one cache line, which every relayed frame
/// reads): the routing generation of the next hops the program caches in entries
/// ([`NextHop`]; 0: no caching).
pub const CONTROL_ROUTING_GENERATION: u32 = 0;
/// `CONTROL`: nonzero once userspace has set a bandwidth limit (an allocation's or the
/// relay's); while 0, the program does not look at the limits.
pub const CONTROL_LIMITS: u32 = 1;
/// Entries of `CONTROL`.
pub const CONTROL_WORDS: u32 = 2;

/// Buckets of `CACHE_VERSIONS`, the versions of the program's per-CPU channel cache by
/// address ([`cache_version_bucket`]): `1 << CACHE_VERSION_BITS`, 256 KiB of words
/// whatever the number of allocations. More addresses than buckets share them, which
/// only costs a few more cache misses.
pub const CACHE_VERSION_BITS: u32 = 16;
pub const CACHE_VERSION_BUCKETS: u32 = 1 << CACHE_VERSION_BITS;
/// A bucket's version is the Gray code ([`gray_code`]) of how many times it moved,
/// modulo this: the codes of 0 .. 2^31 wrap in one bit too, and bit 31 is never set,
/// which leaves it to the program to mark a frame's tag (so that no tag matches an
/// empty slot).
pub const CACHE_VERSION_CYCLE: u32 = 1 << 31;

/// The bucket of `CACHE_VERSIONS` that versions the program's cached copies of entries
/// keyed by the transport address `ip`, `port`: a client's address for the copies of
/// its channels to peers and of its allocation and permissions for Send indications; a
/// relayed address for the copies of its channels to the client and of its allocation
/// and permissions for Data indications. Userspace moves a bucket's version after every
/// write or removal of an entry one of its copies comes from; the program uses a copy
/// only while its bucket keeps the version it was filled under. So a write invalidates
/// the copies of its allocation's addresses, not every CPU's whole cache.
///
/// `ip`: the address's 16 bytes as the maps hold them (an IPv4 address in the first
/// four, the rest zero), as four words in memory order; `port`: a word holding the
/// port's two bytes in memory order. Multiplicative (Fibonacci) hashing of the words
/// xored (few instructions on every relayed frame), top bits.
#[inline(always)]
pub const fn cache_version_bucket(ip: &[u32; 4], port: u16) -> u32 {
    let ports = ((port as u32) << 16) | port as u32;
    let mixed = ip[0] ^ ip[1] ^ ip[2] ^ ip[3] ^ ports;
    mixed.wrapping_mul(0x9E37_79B1) >> (32 - CACHE_VERSION_BITS)
}

/// The `n`th Gray code: `gray_code(n)` and `gray_code(n + 1)` differ in one bit, so a
/// reader that catches the word mid-copy (the map update syscall copies bytes) sees one
/// or the other, never an earlier value. The versions of `CACHE_VERSIONS` are written
/// so.
pub const fn gray_code(n: u32) -> u32 {
    n ^ (n >> 1)
}

/// An IP address as stored in the maps.
#[inline(always)]
pub const fn v4_bytes(octets: [u8; 4]) -> [u8; 16] {
    [
        octets[0], octets[1], octets[2], octets[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]
}

/// The next hop towards an entry's destination, cached in the entry by the program: the
/// result of `bpf_fib_lookup` for the first frame, reused while `generation` equals the
/// program's routing generation, which the daemon bumps on every route, neighbour, link,
/// address, rule or forwarding change (and once a second), and while the frame comes in
/// on the same interface with the same routing TOS. Userspace writes it empty (all
/// zero); only the program fills it in.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The routing generation of the lookup; 0: empty.
    pub generation: u32,
    /// Egress interface.
    pub ifindex: u32,
    /// The interface the looked-up frame came in on (policy routing may depend on it).
    pub ingress_ifindex: u32,
    /// The path MTU the lookup reported: longer IP datagrams go to the stack.
    pub mtu: u16,
    /// The IPv4 TOS the lookup was made with (0 for IPv6).
    pub tos: u8,
    pub pad: u8,
    /// Destination then source MAC address, as the Ethernet header carries them.
    pub macs: [u8; 12],
}

impl NextHop {
    /// What userspace installs: nothing cached.
    pub const EMPTY: NextHop = NextHop {
        generation: 0,
        ifindex: 0,
        ingress_ifindex: 0,
        mtu: 0,
        tos: 0,
        pad: 0,
        macs: [0; 12],
    };
}

/// `RELAYS` key: a relayed transport address (RFC 8656 §2).
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayKey {
    ip: [u8; 16],
    port: [u8; 2],
    family: u8,
    pad: u8,
}

impl RelayKey {
    #[inline(always)]
    pub const fn new(family: u8, ip: [u8; 16], port: [u8; 2]) -> Self {
        RelayKey {
            ip,
            port,
            family,
            pad: 0,
        }
    }
}

/// The client side of an allocation as the peer → client values hold it: where relayed
/// data goes and from which listening address.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientSide {
    client_ip: [u8; 16],
    listener_ip: [u8; 16],
    client_port: [u8; 2],
    listener_port: [u8; 2],
    client_family: u8,
    pad: [u8; 3],
}

impl ClientSide {
    #[inline(always)]
    pub const fn new(
        client_family: u8,
        client_ip: [u8; 16],
        client_port: [u8; 2],
        listener_ip: [u8; 16],
        listener_port: [u8; 2],
    ) -> Self {
        ClientSide {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            client_family,
            pad: [0; 3],
        }
    }
}

accessors!(ClientSide {
    client_family: u8,
    client_port: [u8; 2],
    listener_port: [u8; 2],
} ref {
    client_ip: [u8; 16],
    listener_ip: [u8; 16],
});

/// `RELAYS` value: the allocation behind a relayed address and its client side, for
/// peer → client Data indications; `next_hop` is towards the client.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayValue {
    expires_ns: u64,
    slot: u32,
    pub next_hop: NextHop,
    client: ClientSide,
}

impl RelayValue {
    #[inline(always)]
    pub const fn new(client: ClientSide, slot: u32, expires_ns: u64) -> Self {
        RelayValue {
            expires_ns,
            slot,
            next_hop: NextHop::EMPTY,
            client,
        }
    }
}

accessors!(RelayValue {
    expires_ns: u64,
    slot: u32,
} ref {
    client: ClientSide,
});

/// `CLIENT_ALLOCATIONS` key: a client's 5-tuple (UDP implied) and the family of the
/// relayed address wanted (an allocation may have one of each, RFC 8656 §7.2).
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    client_ip: [u8; 16],
    listener_ip: [u8; 16],
    client_port: [u8; 2],
    listener_port: [u8; 2],
    family: u8,
    relay_family: u8,
    pad: u16,
}

impl FlowKey {
    #[inline(always)]
    pub const fn new(
        family: u8,
        client_ip: [u8; 16],
        client_port: [u8; 2],
        listener_ip: [u8; 16],
        listener_port: [u8; 2],
        relay_family: u8,
    ) -> Self {
        FlowKey {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            family,
            relay_family,
            pad: 0,
        }
    }
}

/// `CLIENT_ALLOCATIONS` value: the relayed address of the client's allocation, used for
/// Send indications.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllocationValue {
    expires_ns: u64,
    slot: u32,
    relay_port: [u8; 2],
    pad: [u8; 2],
    relay_ip: [u8; 16],
}

impl AllocationValue {
    #[inline(always)]
    pub const fn new(relay_ip: [u8; 16], relay_port: [u8; 2], slot: u32, expires_ns: u64) -> Self {
        AllocationValue {
            expires_ns,
            slot,
            relay_port,
            pad: [0; 2],
            relay_ip,
        }
    }
}

accessors!(AllocationValue {
    expires_ns: u64,
    slot: u32,
    relay_port: [u8; 2],
} ref {
    relay_ip: [u8; 16],
});

/// `PERMISSIONS` key: relayed address + peer IP (RFC 8656 §9: ports are ignored).
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionKey {
    relay_ip: [u8; 16],
    peer_ip: [u8; 16],
    relay_port: [u8; 2],
    family: u8,
    pad: u8,
}

impl PermissionKey {
    #[inline(always)]
    pub const fn new(
        family: u8,
        relay_ip: [u8; 16],
        relay_port: [u8; 2],
        peer_ip: [u8; 16],
    ) -> Self {
        PermissionKey {
            relay_ip,
            peer_ip,
            relay_port,
            family,
            pad: 0,
        }
    }
}

/// `PERMISSIONS` value: the expiry, the peer ports the permission covers, and the next
/// hop towards the peer (Send indications). The relay's own addresses are peers on the
/// relay port range only (hairpinning between allocations, never its listeners or other
/// local services); every other permission covers all ports (`first_port` 0,
/// `last_port` 65535).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionValue {
    expires_ns: u64,
    first_port: [u8; 2],
    last_port: [u8; 2],
    pub next_hop: NextHop,
}

impl PermissionValue {
    #[inline(always)]
    pub const fn new(expires_ns: u64, first_port: u16, last_port: u16) -> Self {
        PermissionValue {
            expires_ns,
            first_port: first_port.to_be_bytes(),
            last_port: last_port.to_be_bytes(),
            next_hop: NextHop::EMPTY,
        }
    }

    /// Whether the permission covers peer port `port` (big-endian, as on the wire).
    #[inline(always)]
    pub const fn covers_port(&self, port: [u8; 2]) -> bool {
        let port = u16::from_be_bytes(port);
        u16::from_be_bytes(self.first_port) <= port && port <= u16::from_be_bytes(self.last_port)
    }
}

accessors!(PermissionValue { expires_ns: u64 });

/// `CLIENT_CHANNELS` key: client 5-tuple + channel number (RFC 8656 §12).
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientChannelKey {
    client_ip: [u8; 16],
    listener_ip: [u8; 16],
    client_port: [u8; 2],
    listener_port: [u8; 2],
    number: [u8; 2],
    family: u8,
    pad: u8,
}

impl ClientChannelKey {
    #[inline(always)]
    pub const fn new(
        family: u8,
        client_ip: [u8; 16],
        client_port: [u8; 2],
        listener_ip: [u8; 16],
        listener_port: [u8; 2],
        number: [u8; 2],
    ) -> Self {
        ClientChannelKey {
            client_ip,
            listener_ip,
            client_port,
            listener_port,
            number,
            family,
            pad: 0,
        }
    }
}

/// `CLIENT_CHANNELS` value: everything client → peer ChannelData needs. `expires_ns` is
/// the earliest of the channel's, the permission's and the allocation's expiry;
/// `next_hop` is towards the peer.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientChannelValue {
    expires_ns: u64,
    slot: u32,
    pub next_hop: NextHop,
    peer_port: [u8; 2],
    relay_port: [u8; 2],
    peer_ip: [u8; 16],
    relay_ip: [u8; 16],
    peer_family: u8,
    pad: [u8; 11],
}

impl ClientChannelValue {
    #[inline(always)]
    pub const fn new(
        peer_family: u8,
        peer_ip: [u8; 16],
        peer_port: [u8; 2],
        relay_ip: [u8; 16],
        relay_port: [u8; 2],
        slot: u32,
        expires_ns: u64,
    ) -> Self {
        ClientChannelValue {
            expires_ns,
            slot,
            next_hop: NextHop::EMPTY,
            peer_port,
            relay_port,
            peer_ip,
            relay_ip,
            peer_family,
            pad: [0; 11],
        }
    }
}

accessors!(ClientChannelValue {
    expires_ns: u64,
    slot: u32,
    peer_family: u8,
    peer_port: [u8; 2],
    relay_port: [u8; 2],
} ref {
    peer_ip: [u8; 16],
    relay_ip: [u8; 16],
});

/// `PEER_CHANNELS` key: relayed address + peer transport address.
#[repr(C, align(4))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerChannelKey {
    relay_ip: [u8; 16],
    peer_ip: [u8; 16],
    relay_port: [u8; 2],
    peer_port: [u8; 2],
    family: u8,
    pad: u8,
    pad_word: u16,
}

impl PeerChannelKey {
    #[inline(always)]
    pub const fn new(
        family: u8,
        relay_ip: [u8; 16],
        relay_port: [u8; 2],
        peer_ip: [u8; 16],
        peer_port: [u8; 2],
    ) -> Self {
        PeerChannelKey {
            relay_ip,
            peer_ip,
            relay_port,
            peer_port,
            family,
            pad: 0,
            pad_word: 0,
        }
    }
}

/// `PEER_CHANNELS` value: everything peer → client ChannelData needs: the channel number,
/// the client side and the next hop towards the client. `expires_ns` is the earliest of
/// the channel's, the permission's and the allocation's expiry.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerChannelValue {
    expires_ns: u64,
    slot: u32,
    pub next_hop: NextHop,
    number: [u8; 2],
    pad: [u8; 6],
    client: ClientSide,
}

impl PeerChannelValue {
    #[inline(always)]
    pub const fn new(number: [u8; 2], client: ClientSide, slot: u32, expires_ns: u64) -> Self {
        PeerChannelValue {
            expires_ns,
            slot,
            next_hop: NextHop::EMPTY,
            number,
            pad: [0; 6],
            client,
        }
    }
}

accessors!(PeerChannelValue {
    expires_ns: u64,
    slot: u32,
    number: [u8; 2],
} ref {
    client: ClientSide,
});

/// `TRAFFIC` per-CPU array value, indexed by allocation slot: application data relayed
/// by the fast path (DATA / ChannelData payload bytes, headers excluded).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AllocationTraffic {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// Words of a bitmap with one bit per UDP port.
pub const PORT_WORDS: usize = 65536 / 64;

/// `PORT_FILTER` array value (one entry): the destination ports the program's lookups can
/// hit, so that a frame to any other port skips them without a hash lookup. `listening`
/// holds the listener port of every client flow userspace ever installed (the client
/// side: CLIENT_ALLOCATIONS, CLIENT_CHANNELS), `relayed` the port of every relayed
/// address (the peer side: RELAYS, PERMISSIONS, PEER_CHANNELS); bit `port % 64` of word
/// `port / 64`. Userspace only ever adds bits, each before the first entry that needs it,
/// so a key in a table always has its port's bit set: a clear bit only ever skips a
/// lookup that would have missed. Unwritten (all zero), it makes the program skip every
/// lookup, which misses anyway while no entry exists. No word besides the bitmaps: a
/// frame's check reads one cache line.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortFilter {
    listening: [u64; PORT_WORDS],
    relayed: [u64; PORT_WORDS],
}

impl PortFilter {
    /// No port yet: every lookup of a frame skipped until bits are added.
    pub const EMPTY: PortFilter = PortFilter {
        listening: [0; PORT_WORDS],
        relayed: [0; PORT_WORDS],
    };

    /// Whether a frame to `port` may match a client-side entry.
    #[inline(always)]
    pub fn is_listening(&self, port: u16) -> bool {
        bit(&self.listening, port)
    }

    /// Whether a frame to `port` may match a peer-side entry.
    #[inline(always)]
    pub fn is_relayed(&self, port: u16) -> bool {
        bit(&self.relayed, port)
    }

    /// Adds a listener port; false if it was there already.
    pub fn add_listening(&mut self, port: u16) -> bool {
        set_bit(&mut self.listening, port)
    }

    /// Adds a relayed port; false if it was there already.
    pub fn add_relayed(&mut self, port: u16) -> bool {
        set_bit(&mut self.relayed, port)
    }
}

#[inline(always)]
fn bit(words: &[u64; PORT_WORDS], port: u16) -> bool {
    // `port >> 6` < PORT_WORDS: no bounds check is left for the verifier.
    words[usize::from(port >> 6)] & (1 << (port & 63)) != 0
}

fn set_bit(words: &mut [u64; PORT_WORDS], port: u16) -> bool {
    let word = &mut words[usize::from(port >> 6)];
    let mask = 1 << (port & 63);
    let added = *word & mask == 0;
    *word |= mask;
    added
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are `repr(C)` of integers and byte arrays with explicit padding fields,
    // so every byte is initialised and every bit pattern is valid.
    unsafe impl aya::Pod for RelayKey {}
    unsafe impl aya::Pod for RelayValue {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for AllocationValue {}
    unsafe impl aya::Pod for PermissionKey {}
    unsafe impl aya::Pod for PermissionValue {}
    unsafe impl aya::Pod for ClientChannelKey {}
    unsafe impl aya::Pod for ClientChannelValue {}
    unsafe impl aya::Pod for PeerChannelKey {}
    unsafe impl aya::Pod for PeerChannelValue {}
    unsafe impl aya::Pod for AllocationTraffic {}
    unsafe impl aya::Pod for PortFilter {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn consecutive_gray_codes_differ_in_one_bit() {
        for n in [0, 1, 2, 3, 254, 255, 256, 65_535, 0x00FF_FFFF, u32::MAX - 1] {
            assert_eq!((gray_code(n) ^ gray_code(n + 1)).count_ones(), 1, "{n}");
        }
        assert_eq!(gray_code(0), 0);
        assert_ne!(gray_code(1), 0);
    }

    #[test]
    fn keys_are_word_aligned_without_implicit_padding() {
        assert_eq!((size_of::<RelayKey>(), align_of::<RelayKey>()), (20, 4));
        assert_eq!(offset_of!(RelayKey, port), 16);
        assert_eq!(offset_of!(RelayKey, family), 18);
        assert_eq!((size_of::<FlowKey>(), align_of::<FlowKey>()), (40, 4));
        assert_eq!(offset_of!(FlowKey, listener_ip), 16);
        assert_eq!(offset_of!(FlowKey, client_port), 32);
        assert_eq!(offset_of!(FlowKey, listener_port), 34);
        assert_eq!(offset_of!(FlowKey, family), 36);
        assert_eq!(offset_of!(FlowKey, relay_family), 37);
        assert_eq!(
            (size_of::<PermissionKey>(), align_of::<PermissionKey>()),
            (36, 4)
        );
        assert_eq!(offset_of!(PermissionKey, relay_port), 32);
        assert_eq!(
            (
                size_of::<ClientChannelKey>(),
                align_of::<ClientChannelKey>()
            ),
            (40, 4)
        );
        assert_eq!(offset_of!(ClientChannelKey, number), 36);
        assert_eq!(offset_of!(ClientChannelKey, family), 38);
        assert_eq!(
            (size_of::<PeerChannelKey>(), align_of::<PeerChannelKey>()),
            (40, 4)
        );
        assert_eq!(offset_of!(PeerChannelKey, peer_port), 34);
        assert_eq!(offset_of!(PeerChannelKey, family), 36);
    }

    #[test]
    fn values_keep_integers_aligned() {
        assert_eq!((size_of::<NextHop>(), align_of::<NextHop>()), (28, 4));
        assert_eq!(offset_of!(NextHop, ifindex), 4);
        assert_eq!(offset_of!(NextHop, ingress_ifindex), 8);
        assert_eq!(offset_of!(NextHop, mtu), 12);
        assert_eq!(offset_of!(NextHop, tos), 14);
        assert_eq!(offset_of!(NextHop, macs), 16);
        assert_eq!((size_of::<ClientSide>(), align_of::<ClientSide>()), (40, 1));
        assert_eq!(offset_of!(ClientSide, listener_ip), 16);
        assert_eq!(offset_of!(ClientSide, client_port), 32);
        assert_eq!(offset_of!(ClientSide, client_family), 36);
        assert_eq!((size_of::<RelayValue>(), align_of::<RelayValue>()), (80, 8));
        assert_eq!(offset_of!(RelayValue, slot), 8);
        assert_eq!(offset_of!(RelayValue, next_hop), 12);
        assert_eq!(offset_of!(RelayValue, client), 40);
        assert_eq!(
            (size_of::<AllocationValue>(), align_of::<AllocationValue>()),
            (32, 8)
        );
        assert_eq!(offset_of!(AllocationValue, relay_ip), 16);
        assert_eq!(
            (size_of::<PermissionValue>(), align_of::<PermissionValue>()),
            (40, 8)
        );
        assert_eq!(offset_of!(PermissionValue, first_port), 8);
        assert_eq!(offset_of!(PermissionValue, last_port), 10);
        assert_eq!(offset_of!(PermissionValue, next_hop), 12);
        assert_eq!(
            (
                size_of::<ClientChannelValue>(),
                align_of::<ClientChannelValue>()
            ),
            (88, 8)
        );
        assert_eq!(offset_of!(ClientChannelValue, next_hop), 12);
        assert_eq!(offset_of!(ClientChannelValue, peer_port), 40);
        assert_eq!(offset_of!(ClientChannelValue, peer_ip), 44);
        assert_eq!(offset_of!(ClientChannelValue, relay_ip), 60);
        assert_eq!(offset_of!(ClientChannelValue, peer_family), 76);
        assert_eq!(
            (
                size_of::<PeerChannelValue>(),
                align_of::<PeerChannelValue>()
            ),
            (88, 8)
        );
        assert_eq!(offset_of!(PeerChannelValue, next_hop), 12);
        assert_eq!(offset_of!(PeerChannelValue, number), 40);
        assert_eq!(offset_of!(PeerChannelValue, client), 48);
        assert_eq!(
            (
                size_of::<AllocationTraffic>(),
                align_of::<AllocationTraffic>()
            ),
            (32, 8)
        );
    }

    #[test]
    fn the_port_filter_is_a_flag_word_then_two_bitmaps() {
        assert_eq!(
            (size_of::<PortFilter>(), align_of::<PortFilter>()),
            (2 * 8192, 8)
        );
        assert_eq!(offset_of!(PortFilter, listening), 0);
        assert_eq!(offset_of!(PortFilter, relayed), 8192);
    }

    #[test]
    fn the_port_filter_has_exactly_the_ports_added() {
        let mut filter = PortFilter::EMPTY;
        assert!(filter.add_listening(3478));
        assert!(!filter.add_listening(3478));
        assert!(filter.add_relayed(65535));
        assert!(filter.add_relayed(0));
        assert!(filter.is_listening(3478));
        assert!(!filter.is_listening(3479) && !filter.is_listening(3414));
        assert!(!filter.is_relayed(3478));
        assert!(filter.is_relayed(65535) && filter.is_relayed(0));
        assert!(!filter.is_relayed(65534) && !filter.is_relayed(1));
    }

    #[test]
    fn equal_inputs_give_equal_key_bytes() {
        let a = PermissionKey::new(
            FAMILY_V4,
            v4_bytes([198, 18, 0, 1]),
            [0xC0, 0x00],
            v4_bytes([198, 19, 0, 9]),
        );
        let b = PermissionKey::new(
            FAMILY_V4,
            v4_bytes([198, 18, 0, 1]),
            [0xC0, 0x00],
            v4_bytes([198, 19, 0, 9]),
        );
        assert_eq!(a, b);
        assert_eq!(v4_bytes([1, 2, 3, 4])[4..], [0u8; 12]);
    }

    #[test]
    fn accessors_return_what_was_stored() {
        let value = ClientChannelValue::new(
            FAMILY_V6,
            [7; 16],
            [0x12, 0x34],
            [9; 16],
            [0xC0, 0x01],
            42,
            1_000,
        );
        assert_eq!(value.peer_family(), FAMILY_V6);
        assert_eq!(value.peer_ip(), &[7; 16]);
        assert_eq!(value.peer_port(), [0x12, 0x34]);
        assert_eq!(value.relay_ip(), &[9; 16]);
        assert_eq!(value.relay_port(), [0xC0, 0x01]);
        assert_eq!((value.slot(), value.expires_ns()), (42, 1_000));
        assert_eq!(value.next_hop, NextHop::EMPTY);
        let client = ClientSide::new(FAMILY_V4, [1; 16], [0, 1], [2; 16], [0x0D, 0x96]);
        let relay = RelayValue::new(client, 3, 5);
        assert_eq!(
            (
                relay.client().client_family(),
                relay.client().client_port(),
                relay.client().listener_port()
            ),
            (FAMILY_V4, [0, 1], [0x0D, 0x96])
        );
        assert_eq!(
            (
                relay.client().client_ip(),
                relay.client().listener_ip(),
                relay.slot(),
                relay.expires_ns()
            ),
            (&[1; 16], &[2; 16], 3, 5)
        );
        let allocation = AllocationValue::new([3; 16], [0xC0, 0x02], 4, 6);
        assert_eq!(
            (
                allocation.relay_ip(),
                allocation.relay_port(),
                allocation.slot(),
                allocation.expires_ns()
            ),
            (&[3; 16], [0xC0, 0x02], 4, 6)
        );
        let channel = PeerChannelValue::new([0x40, 0x00], client, 7, 9);
        assert_eq!(
            (channel.number(), channel.slot(), channel.expires_ns()),
            ([0x40, 0x00], 7, 9)
        );
        assert_eq!(channel.client(), &client);
        let permission = PermissionValue::new(11, 49152, 65535);
        assert_eq!(permission.expires_ns(), 11);
        assert_eq!(permission.first_port, [0xC0, 0x00]);
        assert!(!permission.covers_port(49151u16.to_be_bytes()));
        assert!(permission.covers_port(49152u16.to_be_bytes()));
        assert!(permission.covers_port(65535u16.to_be_bytes()));
        assert!(PermissionValue::new(11, 0, 65535).covers_port([0, 22]));
    }
}
