//! The language of the fixture rows: a row describes an input frame, the action and
//! outcome counter the program must produce, and the output frame it must leave. Rows
//! are plain data (`const` tables, one file per path); [`crate::runner`] turns them into
//! bytes with the testkit's frame builder and runs them.

use turn_relay::bpf::Outcome;

/// Application data of the rows.
pub const DATA: &[u8] = b"hello, peer!"; // 12 bytes
pub const ODD: &[u8] = b"odd-5"; // 5 bytes
pub const LONG: &[u8] = &[0x3C; 1200];
/// 1472 bytes of UDP payload fill a 1500-byte MTU; a Data indication adds 36.
pub const MTU_FILLING: &[u8] = &[7; 1472];

/// Channels bound on the same-family allocations (see [`crate::world::install`]).
pub const CHANNEL_PEER: u16 = 0x4000;
pub const CHANNEL_NEAR_PEER: u16 = 0x4001;
pub const CHANNEL_UNRESOLVED: u16 = 0x4002;
pub const CHANNEL_EXPIRED: u16 = 0x4003;
pub const CHANNEL_UNROUTABLE: u16 = 0x4004;
pub const CHANNEL_UNBOUND: u16 = 0x4005;
/// Bound to a peer behind an interface the program is not attached to (IPv4 allocation).
pub const CHANNEL_UNATTACHED: u16 = 0x4006;
/// The highest channel number (RFC 5766 range, accepted for interop), bound to
/// [`Peer::HighestChannel`].
pub const CHANNEL_HIGHEST: u16 = 0x7FFF;
/// Just past the channel range: the first bits 0b10 make it neither ChannelData nor STUN
/// (RFC 7983 §7).
pub const NOT_A_CHANNEL: u16 = 0x8000;
/// The channel bound on each cross-family allocation.
pub const CHANNEL_CROSS: u16 = 0x4010;
/// The channel bound on the IPv6 allocation to [`Peer::Ipv4Mapped`].
pub const CHANNEL_MAPPED: u16 = 0x4011;

/// Which allocations a row runs on; the runner appends the suffix to the row's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On {
    /// The IPv4 and the IPv6 allocation (`_v4`, `_v6`).
    BothFamilies,
    /// The IPv4 allocation only (no suffix: the name says it).
    V4,
    /// The IPv6 allocation only (no suffix).
    V6,
    /// Both cross-family allocations (`_v4_client_v6_relay`, `_v6_client_v4_relay`).
    CrossFamilies,
    /// The IPv4-client, IPv6-relay allocation only (no suffix).
    V4ClientV6Relay,
}

/// A peer transport address, resolved in the family of the allocation's relayed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The permitted peer at the port channel [`CHANNEL_PEER`] (or [`CHANNEL_CROSS`]) is
    /// bound to.
    Bound,
    /// The permitted peer at another port: no channel, so Data indications.
    OtherPort,
    /// The permitted peer at the port channel [`CHANNEL_HIGHEST`] is bound to.
    HighestChannel,
    /// A permitted peer on the client side's link (relaying to it is XDP_TX).
    Near,
    /// A peer without any permission.
    Stranger,
    /// A peer whose permission has expired.
    Expired,
    /// The relay's own public address on a relay port: its permission covers the relay
    /// port range only (hairpinning to another allocation).
    RelayPublicOnRelayPort,
    /// The relay's own public address on a port outside the relay port range (its
    /// listener).
    RelayPublicOffRelayPorts,
    /// The IPv4 peer written as an IPv4-mapped IPv6 address (`::ffff:198.19.1.2`), with a
    /// permission and channel [`CHANNEL_MAPPED`] on the IPv6 allocation only. The core
    /// never installs such entries (it answers 443); they stand for state no policy
    /// check saw, and the program must treat them as the IPv6 addresses they are.
    Ipv4Mapped,
}

/// Where the input frame comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client, to the TURN listener.
    Client,
    /// The client, to another port of the relay (no TURN there).
    ClientToPort(u16),
    /// A peer, to the relayed address.
    Peer(Peer),
}

/// The UDP payload of the input frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Application data as it is (what a peer sends).
    Raw(&'static [u8]),
    /// ChannelData (RFC 8656 §12.4) followed by `padding` bytes.
    ChannelData {
        channel: u16,
        data: &'static [u8],
        padding: &'static [u8],
    },
    /// ChannelData whose length field claims `declared` bytes.
    ChannelDataClaiming {
        channel: u16,
        data: &'static [u8],
        declared: u16,
    },
    /// A Send indication (RFC 8656 §11.2), FINGERPRINT last when asked.
    Send {
        peer: Peer,
        data: &'static [u8],
        fingerprint: bool,
    },
    /// A Send indication of an unusual shape.
    SendShaped {
        peer: Peer,
        data: &'static [u8],
        shape: SendShape,
    },
    /// A Binding request (RFC 8489 §3).
    BindingRequest,
}

/// Send indications the fast path must handle with care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendShape {
    /// DATA before XOR-PEER-ADDRESS.
    DataFirst,
    /// XOR-PEER-ADDRESS, DONT-FRAGMENT (RFC 8656 §11.2), DATA.
    DontFragment,
    /// XOR-PEER-ADDRESS only.
    WithoutData,
    /// The magic cookie's first byte inverted.
    WrongCookie,
    /// FINGERPRINT with its last bit flipped.
    WrongFingerprint,
    /// FINGERPRINT, then the first data byte changed.
    DataChangedUnderFingerprint,
    /// FINGERPRINT followed by DONT-FRAGMENT.
    AttributeAfterFingerprint,
    /// XOR-PEER-ADDRESS claiming 200 bytes.
    AttributeOverruns,
}

/// How the input frame's IP header differs from the usual one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVariant {
    Usual,
    /// TTL / hop limit 1.
    TtlOne,
    /// IPv4 without DF.
    MayFragment,
    /// No UDP checksum (0).
    NoUdpChecksum,
    /// TOS / traffic class 0 (best effort; the other variants carry DSCP EF).
    BestEffort,
}

/// A change to the built input frame's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mangle {
    /// Cut inside the UDP header.
    TruncateInUdpHeader,
    /// Cut after 20 bytes (inside the IP header).
    TruncateInIpHeader,
    /// Only the Ethernet header (the kernel never hands XDP less).
    EthernetHeaderOnly,
    /// The UDP length 4 bytes beyond the IP payload.
    UdpLengthPlusFour,
    /// The IP length 8 bytes beyond the frame.
    IpLengthPlusEight,
    /// IPv4 IHL 6 (options).
    Ipv4Options,
    /// IPv4 more-fragments set.
    Ipv4MoreFragments,
    /// IPv4 protocol TCP.
    Ipv4Tcp,
    /// IPv4 protocol TCP, the frame cut after the IP header: shorter than the headers
    /// of a UDP datagram, whose length the parse checks at once.
    Ipv4TcpIpHeaderOnly,
    /// An 802.1Q tag (VLAN 5) before the EtherType.
    VlanTag,
    /// EtherType ARP with a zeroed ARP body.
    Arp,
    /// IPv6 next header hop-by-hop options.
    Ipv6HopByHop,
    /// IPv6 next header hop-by-hop options, the frame cut after the IP header (as
    /// [`Mangle::Ipv4TcpIpHeaderOnly`]).
    Ipv6HopByHopIpHeaderOnly,
    /// The UDP checksum zeroed (forbidden over IPv6, RFC 8200 §8.1).
    ZeroUdpChecksum,
    /// The IPv4 header checksum off by one (the stack drops the frame; relaying it with
    /// the fresh checksum of the relayed header would repair it).
    WrongIpv4HeaderChecksum,
}

/// The frame the program must leave behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The input frame, untouched.
    Unchanged,
    /// `data` from the relayed address to `peer` (RFC 8656 §14 IP header rules: TTL − 1,
    /// TOS and DF kept, the relay's own IPv4 identification).
    ToPeer { peer: Peer, data: &'static [u8] },
    /// ChannelData on `channel` carrying `data`, from the listener to the client.
    ChannelDataToClient { channel: u16, data: &'static [u8] },
    /// A Data indication from `peer` carrying `data`, from the listener to the client;
    /// its transaction id is random, so the runner takes it from the output.
    DataIndicationToClient { peer: Peer, data: &'static [u8] },
}

/// XDP actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    Pass,
    Tx,
    Redirect,
}

/// One fixture: input → action, counter, output.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub name: &'static str,
    pub on: On,
    pub from: Origin,
    pub payload: Payload,
    pub ip: IpVariant,
    pub mangle: Option<Mangle>,
    pub action: Action,
    pub outcome: Outcome,
    pub output: Output,
}

/// A row with the usual IP header, unmangled, that leaves the frame unchanged (fill in
/// the rest with struct update syntax).
pub const BASE: Row = Row {
    name: "",
    on: On::BothFamilies,
    from: Origin::Client,
    payload: Payload::BindingRequest,
    ip: IpVariant::Usual,
    mangle: None,
    action: Action::Pass,
    outcome: Outcome::PassStun,
    output: Output::Unchanged,
};

/// ChannelData without padding.
pub const fn channel_data(channel: u16, data: &'static [u8]) -> Payload {
    Payload::ChannelData {
        channel,
        data,
        padding: &[],
    }
}

/// A Send indication to `peer` without FINGERPRINT.
pub const fn send(peer: Peer, data: &'static [u8]) -> Payload {
    Payload::Send {
        peer,
        data,
        fingerprint: false,
    }
}

/// A relayed frame to `peer` as the program must send it.
pub const fn to_peer(peer: Peer, data: &'static [u8]) -> Output {
    Output::ToPeer { peer, data }
}
