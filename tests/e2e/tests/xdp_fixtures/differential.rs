//! Issue 8 item 12, the XDP side: a differential test of the program against a model.
//!
//! Frames built from the fixtures' world (ChannelData, Send indications and peer data on
//! every allocation, in every IP variant), then mutated with a seeded RNG (bits, bytes,
//! lengths, truncation, junk), run through the program under BPF_PROG_TEST_RUN with the
//! world installed. The model is a small account of what the userspace relay would do
//! with the same frame and the same entries: which frames the stack delivers (valid
//! headers and checksums, no fragments, hop limit), which of those the relay relays
//! (the relay's own codec parses the TURN framing; a live allocation, permission and
//! channel), and the datagram it would send.
//!
//! The program may pass anything up (userspace then decides), but:
//! - it relays (XDP_TX / XDP_REDIRECT) only a frame the model relays, to the same
//!   destination, from the same source, with the same application data and the TTL /
//!   hop limit decremented;
//! - every frame it relays carries valid IPv4 header and UDP checksums, except that a
//!   frame that arrived with a wrong UDP checksum (which the stack would have dropped)
//!   must leave with a wrong one, never a repaired one;
//! - it drops (XDP_DROP) only peer data to a relayed address that the model does not
//!   relay.
//!
//! One known difference is counted rather than failed (see [`Judge`]): the program
//! relays a datagram whose IPv4 header checksum or UDP checksum is wrong, which the
//! relay's own stack would have dropped (a wrong UDP checksum stays wrong, so the
//! receiver drops it). A Send indication carrying DONT-FRAGMENT is no longer one: the
//! program passes it up to userspace, which discards it (RFC 8656 §11.2), so both paths
//! are judged alike there.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use turn_common::checksum::Delta;
use turn_relay::protocol::datapath::{ClientFlow, PeerPortRange};
use turn_relay::protocol::stun::channel_data::{self, ChannelData};
use turn_relay::protocol::stun::{Class, Message, Method};
use turn_testkit::testbed::{Ingress, Testbed, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
use turn_testkit::{privileged, OrFail};

use crate::rows::{
    IpVariant, Origin, Peer, CHANNEL_UNATTACHED, CHANNEL_UNBOUND, DATA, LONG, NOT_A_CHANNEL, ODD,
};
use crate::runner;
use crate::world::{self, Allocation, Entry, V4, V4_CLIENT_V6_RELAY, V6, V6_CLIENT_V4_RELAY};

/// Frames run through the program (bounded: a few seconds).
const FRAMES: usize = 20_000;
const SEED: u64 = 0xD1FF;
/// Share of frames whose lengths and checksums are fixed after mutating, so that most
/// mutations reach the TURN logic instead of the header checks.
const FIXED_SHARE: f64 = 0.85;

/// A UDP datagram as the stack would deliver it.
struct Wire<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    hop_limit: u8,
    payload: &'a [u8],
    checksum: UdpChecksum,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UdpChecksum {
    Valid,
    /// IPv4 without a checksum (RFC 768).
    Zero,
    Invalid,
}

/// What the userspace relay sends for a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Relayed {
    ToPeer {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    ChannelDataToClient {
        from: SocketAddr,
        to: SocketAddr,
        number: u16,
        data: Vec<u8>,
    },
    DataIndicationToClient {
        from: SocketAddr,
        to: SocketAddr,
        peer: SocketAddr,
        data: Vec<u8>,
    },
}

/// How the model judges: as the userspace relay does, or with the known difference of
/// the program allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judge {
    /// The userspace relay: the stack drops a datagram with a wrong IPv4 header or UDP
    /// checksum.
    Userspace,
    /// The program: it verifies neither the IPv4 header checksum nor the UDP checksum
    /// (it updates the UDP checksum incrementally, so a wrong one stays wrong and the
    /// receiver drops the datagram).
    Program,
}

/// The fast path's entries as the userspace relay holds them.
struct Model {
    now: Instant,
    /// Relayed address → (flow, expiry).
    allocations: HashMap<SocketAddr, (ClientFlow, Instant)>,
    /// (relayed address, peer IP) → (the peer ports it covers, expiry).
    permissions: HashMap<(SocketAddr, IpAddr), (PeerPortRange, Instant)>,
    /// (relayed address, number) → (peer, expiry).
    channels: HashMap<(SocketAddr, u16), (SocketAddr, Instant)>,
}

impl Model {
    fn new(entries: &[Entry], now: Instant) -> Model {
        let mut model = Model {
            now,
            allocations: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
        };
        for entry in entries {
            match *entry {
                Entry::Allocation {
                    flow,
                    relay,
                    expires_at,
                } => {
                    model.allocations.insert(relay, (flow, expires_at));
                }
                Entry::Permission {
                    relay,
                    peer_ip,
                    ports,
                    expires_at,
                    ..
                } => {
                    model
                        .permissions
                        .insert((relay, peer_ip), (ports, expires_at));
                }
                Entry::Channel {
                    relay,
                    peer,
                    number,
                    expires_at,
                    ..
                } => {
                    model.channels.insert((relay, number), (peer, expires_at));
                }
            }
        }
        model
    }

    fn live(&self, expires_at: Instant) -> bool {
        expires_at > self.now
    }

    fn allocation_live(&self, relay: SocketAddr) -> Option<ClientFlow> {
        self.allocations
            .get(&relay)
            .filter(|(_, expires_at)| self.live(*expires_at))
            .map(|(flow, _)| *flow)
    }

    /// Peer → client: a live permission for the peer's IP (RFC 8656 §9), whatever its
    /// port.
    fn permitted(&self, relay: SocketAddr, peer: IpAddr) -> bool {
        self.permissions
            .get(&(relay, peer))
            .is_some_and(|(_, expires_at)| self.live(*expires_at))
    }

    /// Client → peer: a live permission for the peer's IP that covers its port (the
    /// relay's own addresses: the relay ports only).
    fn permitted_to(&self, relay: SocketAddr, peer: SocketAddr) -> bool {
        self.permissions
            .get(&(relay, peer.ip()))
            .is_some_and(|(ports, expires_at)| {
                self.live(*expires_at) && ports.contains(peer.port())
            })
    }

    fn is_relayed_address(&self, address: SocketAddr) -> bool {
        self.allocations.contains_key(&address)
    }

    /// The live allocations of a client flow.
    fn relays_of(&self, flow: ClientFlow) -> impl Iterator<Item = SocketAddr> + '_ {
        self.allocations
            .iter()
            .filter(move |(relay, (owner, _))| {
                *owner == flow && self.allocation_live(**relay).is_some()
            })
            .map(|(relay, _)| *relay)
    }

    /// What the relay does with `frame`, judged as `judge` says.
    fn relay(&self, frame: &[u8], judge: Judge) -> Option<Relayed> {
        let wire = parse_wire(frame, judge == Judge::Userspace)?;
        let bad_checksum = wire.checksum == UdpChecksum::Invalid && judge == Judge::Userspace;
        if bad_checksum || wire.hop_limit <= 1 {
            return None;
        }
        let flow = ClientFlow::udp(wire.src, wire.dst);
        if self.relays_of(flow).next().is_some() {
            return self.client_to_peer(flow, wire.payload);
        }
        self.peer_to_client(wire.dst, wire.src, wire.payload)
    }

    /// RFC 8656 §11.2, §12.6: client → peer.
    fn client_to_peer(&self, flow: ClientFlow, payload: &[u8]) -> Option<Relayed> {
        if channel_data::is_channel_data(payload) {
            let message = ChannelData::parse(payload)?;
            return self.relays_of(flow).find_map(|relay| {
                let (peer, expires_at) = self.channels.get(&(relay, message.number))?;
                (self.live(*expires_at) && self.permitted_to(relay, *peer)).then(|| {
                    Relayed::ToPeer {
                        from: relay,
                        to: *peer,
                        data: message.data.to_vec(),
                    }
                })
            });
        }
        let message = Message::parse(payload).ok()?;
        if (message.method(), message.class()) != (Method::SEND, Class::Indication)
            || !message.unknown_comprehension_required().is_empty()
            || (message.fingerprint().is_some() && !message.verify_fingerprint())
            || message.dont_fragment()
        {
            return None;
        }
        let peer = message.xor_peer_address().ok()??;
        let data = message.data()?;
        let relay = self
            .relays_of(flow)
            .find(|relay| relay.is_ipv4() == peer.is_ipv4())?;
        self.permitted_to(relay, peer).then(|| Relayed::ToPeer {
            from: relay,
            to: peer,
            data: data.to_vec(),
        })
    }

    /// RFC 8656 §11.3, §12.6: peer → client.
    fn peer_to_client(&self, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Option<Relayed> {
        let flow = self.allocation_live(relay)?;
        if !self.permitted(relay, peer.ip()) {
            return None;
        }
        let channel = self.channels.iter().find(|((on, _), (bound, expires_at))| {
            *on == relay && *bound == peer && self.live(*expires_at)
        });
        Some(match channel {
            Some(((_, number), _)) => Relayed::ChannelDataToClient {
                from: flow.listener,
                to: flow.client,
                number: *number,
                data: data.to_vec(),
            },
            None => Relayed::DataIndicationToClient {
                from: flow.listener,
                to: flow.client,
                peer,
                data: data.to_vec(),
            },
        })
    }
}

/// The UDP datagram of an Ethernet frame as the stack would deliver it to a socket, or
/// None where the stack drops the frame (a wrong IPv4 header checksum only when
/// `verify_ip_checksum`).
fn parse_wire(frame: &[u8], verify_ip_checksum: bool) -> Option<Wire<'_>> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let (src, dst, hop_limit, udp, mut pseudo) = match ethertype {
        0x0800 => {
            let ip = frame.get(14..34)?;
            let header_len = usize::from(ip[0] & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let header = frame.get(14..14 + header_len)?;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0;
            if ip[0] >> 4 != 4
                || header_len < 20
                || total < header_len + 8
                || fragment
                || ip[9] != 17
                || (verify_ip_checksum && Delta::new().add_bytes(header).checksum() != 0)
            {
                return None;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if src.is_multicast() || src.is_broadcast() || src.is_unspecified() || src.is_loopback()
            {
                return None;
            }
            let udp = frame.get(14 + header_len..14 + total)?;
            let mut pseudo = Vec::from(&ip[12..20]);
            pseudo.extend_from_slice(&[0, 17]);
            (IpAddr::V4(src), IpAddr::V4(dst), ip[8], udp, pseudo)
        }
        0x86DD => {
            let ip = frame.get(14..54)?;
            let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let octets = |range: std::ops::Range<usize>| -> [u8; 16] {
                ip[range].try_into().unwrap_or([0; 16])
            };
            let (src, dst) = (
                Ipv6Addr::from(octets(8..24)),
                Ipv6Addr::from(octets(24..40)),
            );
            if ip[0] >> 4 != 6
                || ip[6] != 17
                || src.is_multicast()
                || src.is_unspecified()
                || src.is_loopback()
                || src.to_ipv4_mapped().is_some()
            {
                return None;
            }
            let udp = frame.get(54..54 + payload_len)?;
            let mut pseudo = Vec::from(&ip[8..40]);
            pseudo.extend_from_slice(&[0, 17]);
            (IpAddr::V6(src), IpAddr::V6(dst), ip[7], udp, pseudo)
        }
        _ => return None,
    };
    let udp_len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    let udp = udp.get(..udp_len).filter(|_| udp_len >= 8)?;
    let field = u16::from_be_bytes([udp[6], udp[7]]);
    let checksum = if field == 0 {
        if src.is_ipv4() {
            UdpChecksum::Zero
        } else {
            UdpChecksum::Invalid
        }
    } else {
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        if Delta::new().add_bytes(&pseudo).add_bytes(udp).checksum() == 0 {
            UdpChecksum::Valid
        } else {
            UdpChecksum::Invalid
        }
    };
    Some(Wire {
        src: SocketAddr::new(src, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([udp[2], udp[3]])),
        hop_limit,
        payload: &udp[8..],
        checksum,
    })
}

/// The IP destination and UDP destination port a frame's headers name, whether or not
/// the stack would accept the frame.
fn destination(frame: &[u8]) -> Option<SocketAddr> {
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let udp = 14 + usize::from(frame.get(14)? & 0x0F) * 4;
            let ip: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            let port = u16::from_be_bytes(frame.get(udp + 2..udp + 4)?.try_into().ok()?);
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        }
        [0x86, 0xDD] => {
            let ip: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            let port = u16::from_be_bytes(frame.get(56..58)?.try_into().ok()?);
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    }
}

/// Recomputes the IP and UDP lengths and checksums of a frame that still has an
/// Ethernet, option-less IP and UDP header (a zero IPv4 UDP checksum stays zero).
fn fix(frame: &mut [u8]) {
    let ipv4 = frame.get(12..15) == Some(&[0x08, 0x00, 0x45]);
    let ipv6 = frame.get(12..14) == Some(&[0x86, 0xDD]) && frame.get(20) == Some(&17);
    let (udp_start, pseudo_addresses) = match (ipv4, ipv6) {
        (true, _) if frame.len() >= 42 && frame.len() - 14 <= 0xFFFF => (34, 26..34),
        (_, true) if frame.len() >= 62 && frame.len() - 54 <= 0xFFFF => (54, 22..54),
        _ => return,
    };
    let udp_len = (frame.len() - udp_start) as u16;
    if ipv4 {
        let total_len = (frame.len() - 14) as u16;
        frame[16..18].copy_from_slice(&total_len.to_be_bytes());
        frame[24..26].copy_from_slice(&[0, 0]);
        let checksum = Delta::new().add_bytes(&frame[14..34]).checksum();
        frame[24..26].copy_from_slice(&checksum.to_be_bytes());
    } else {
        frame[18..20].copy_from_slice(&udp_len.to_be_bytes());
    }
    frame[udp_start + 4..udp_start + 6].copy_from_slice(&udp_len.to_be_bytes());
    if ipv4 && frame[udp_start + 6..udp_start + 8] == [0, 0] {
        return;
    }
    frame[udp_start + 6..udp_start + 8].copy_from_slice(&[0, 0]);
    let checksum = Delta::new()
        .add_bytes(&frame[pseudo_addresses])
        .add_bytes(&[0, 17])
        .add_bytes(&udp_len.to_be_bytes())
        .add_bytes(&frame[udp_start..])
        .checksum();
    let checksum = if checksum == 0 { 0xFFFF } else { checksum };
    frame[udp_start + 6..udp_start + 8].copy_from_slice(&checksum.to_be_bytes());
}

/// The frames mutations start from: every kind of TURN traffic on every allocation.
fn base_frames() -> Vec<Vec<u8>> {
    use turn_relay::protocol::stun::attributes as attr;
    use turn_relay::protocol::stun::TransactionId;
    use turn_testkit::stun_client::{channel_data, message, send_indication};
    let mut frames = Vec::new();
    for allocation in [V4, V6, V4_CLIENT_V6_RELAY, V6_CLIENT_V4_RELAY] {
        let mut peers = vec![Peer::Bound, Peer::OtherPort, Peer::Stranger, Peer::Near];
        if !allocation.cross_family {
            peers.extend([Peer::RelayPublicOnRelayPort, Peer::RelayPublicOffRelayPorts]);
        }
        if allocation.tag == "v4" {
            peers.push(Peer::Expired);
        }
        if allocation.tag == "v6" {
            peers.push(Peer::Ipv4Mapped);
        }
        let mut payloads: Vec<(Origin, Vec<u8>)> = Vec::new();
        for number in [
            0x4000,
            0x4001,
            0x4003,
            CHANNEL_UNATTACHED,
            0x4010,
            0x4011,
            CHANNEL_UNBOUND,
            0x7FFF,
            NOT_A_CHANNEL,
        ] {
            payloads.push((Origin::Client, channel_data(number, DATA)));
            payloads.push((Origin::Client, channel_data(number, ODD)));
        }
        for peer in &peers {
            let address = allocation.peer(*peer);
            for fingerprint in [false, true] {
                payloads.push((
                    Origin::Client,
                    send_indication([0x3C; 12], address, DATA, fingerprint),
                ));
            }
            payloads.push((
                Origin::Client,
                message(
                    Method::SEND,
                    Class::Indication,
                    &TransactionId([0x3D; 12]),
                    None,
                    |builder| {
                        builder
                            .xor_address(attr::XOR_PEER_ADDRESS, address)
                            .attribute(attr::DONT_FRAGMENT, &[])
                            .attribute(attr::DATA, DATA);
                    },
                ),
            ));
            payloads.push((Origin::Peer(*peer), DATA.to_vec()));
            payloads.push((Origin::Peer(*peer), LONG[..300].to_vec()));
        }
        payloads.push((Origin::ClientToPort(3479), channel_data(0x4000, DATA)));
        for (origin, payload) in payloads {
            for variant in [
                IpVariant::Usual,
                IpVariant::TtlOne,
                IpVariant::MayFragment,
                IpVariant::NoUdpChecksum,
                IpVariant::BestEffort,
            ] {
                if variant == IpVariant::NoUdpChecksum && allocation.client.is_ipv6() {
                    continue;
                }
                frames.push(runner::frame(&allocation, origin, &payload, variant).0);
            }
        }
    }
    frames
}

/// One random change to a frame (never to its MAC addresses: the stack drops frames for
/// other hosts before IP, which a NIC filters anyway).
fn mutate(frame: &mut Vec<u8>, rng: &mut StdRng) {
    let len = frame.len();
    match rng.gen_range(0..9) {
        // A bit of the IP/UDP headers or the start of the TURN framing.
        0 | 1 if len > 12 => {
            let at = rng.gen_range(12..len.min(54 + 8 + 48));
            frame[at] ^= 1 << rng.gen_range(0..8);
        }
        2 if len > 12 => {
            let at = rng.gen_range(12..len);
            frame[at] = rng.gen();
        }
        3 if len > 14 => frame.truncate(rng.gen_range(14..len)),
        4 => {
            let junk: Vec<u8> = (0..rng.gen_range(1..12)).map(|_| rng.gen()).collect();
            frame.extend_from_slice(&junk);
        }
        // A 16-bit length or channel field of the TURN framing.
        5 if len > 66 => {
            let udp = runner_udp_payload(frame);
            let at = udp + 2 * rng.gen_range(0..8);
            if at + 2 <= len {
                let value: u16 = rng.gen();
                frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
            }
        }
        // The TTL / hop limit.
        6 if len > 22 => {
            let at = if frame[12] == 0x08 { 22 } else { 21 };
            frame[at] = rng.gen_range(0..3);
        }
        // Another address of the plan as source or destination.
        7 if len > 54 => {
            let v4 = frame[12] == 0x08;
            let (start, width) = match (v4, rng.gen_bool(0.5)) {
                (true, true) => (26, 4),
                (true, false) => (30, 4),
                (false, true) => (22, 16),
                (false, false) => (38, 16),
            };
            let donor = random_address(rng, v4);
            frame[start..start + width].copy_from_slice(&donor[..width]);
        }
        _ => {
            let at = rng.gen_range(0..=len.saturating_sub(1));
            frame.insert(at.max(12).min(frame.len()), rng.gen());
        }
    }
}

/// Where the UDP payload starts in a frame built by the runner.
fn runner_udp_payload(frame: &[u8]) -> usize {
    turn_testkit::frames::udp_offset(frame) + 8
}

/// An address of the world (client, listener, relayed or peer address).
fn random_address(rng: &mut StdRng, v4: bool) -> [u8; 16] {
    let pick = |allocation: &Allocation| {
        [
            allocation.client,
            allocation.listener,
            allocation.relay.ip(),
            allocation.peer_ip,
        ]
    };
    let candidates: Vec<IpAddr> = [V4, V6]
        .iter()
        .flat_map(pick)
        .filter(|ip| ip.is_ipv4() == v4)
        .collect();
    let mut out = [0u8; 16];
    match candidates[rng.gen_range(0..candidates.len())] {
        IpAddr::V4(ip) => out[..4].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.copy_from_slice(&ip.octets()),
    }
    out
}

/// What the program left in `output` matches `expected`, given `input`.
fn check_relayed(input: &[u8], output: &[u8], expected: &Relayed) -> Result<(), String> {
    let incoming = parse_wire(input, false).ok_or("relayed a frame the stack drops")?;
    let outgoing = parse_wire_relayed(input, output)?;
    let (from, to) = match expected {
        Relayed::ToPeer { from, to, .. }
        | Relayed::ChannelDataToClient { from, to, .. }
        | Relayed::DataIndicationToClient { from, to, .. } => (*from, *to),
    };
    if (outgoing.src, outgoing.dst) != (from, to) {
        return Err(format!(
            "sent {} → {}, the model {from} → {to}",
            outgoing.src, outgoing.dst
        ));
    }
    if outgoing.hop_limit != incoming.hop_limit - 1 {
        return Err(format!(
            "hop limit {} after {}",
            outgoing.hop_limit, incoming.hop_limit
        ));
    }
    match (incoming.checksum, outgoing.checksum) {
        (UdpChecksum::Valid, UdpChecksum::Valid) | (UdpChecksum::Zero, UdpChecksum::Zero) => {}
        (UdpChecksum::Zero, UdpChecksum::Valid) if incoming.src.is_ipv4() != to.is_ipv4() => {}
        (UdpChecksum::Invalid, UdpChecksum::Invalid) => {}
        (before, after) => return Err(format!("UDP checksum {before:?} became {after:?}")),
    }
    let payload = outgoing.payload;
    let same = match expected {
        Relayed::ToPeer { data, .. } => payload == data.as_slice(),
        Relayed::ChannelDataToClient { number, data, .. } => ChannelData::parse(payload)
            .is_some_and(|message| message.number == *number && message.data == data.as_slice()),
        Relayed::DataIndicationToClient { peer, data, .. } => {
            Message::parse(payload).is_ok_and(|message| {
                (message.method(), message.class()) == (Method::DATA, Class::Indication)
                    && message.xor_peer_address().ok().flatten() == Some(*peer)
                    && message.data() == Some(data.as_slice())
            })
        }
    };
    if !same {
        return Err(format!(
            "payload {payload:02x?} differs from the model's {expected:?}"
        ));
    }
    Ok(())
}

/// Whether a frame's IPv4 header checksum is right (None: not IPv4).
fn ipv4_header_checksum_ok(frame: &[u8]) -> Option<bool> {
    if frame.get(12..14) != Some(&[0x08, 0x00]) {
        return None;
    }
    let header_len = usize::from(frame.get(14)? & 0x0F) * 4;
    let header = frame.get(14..14 + header_len)?;
    Some(Delta::new().add_bytes(header).checksum() == 0)
}

/// A relayed frame's datagram. Its IPv4 header checksum must be right, unless the frame
/// arrived as IPv4 with a wrong one: then it must stay wrong (never repaired), so the
/// receiver drops it as the relay's own stack would have.
fn parse_wire_relayed<'a>(input: &[u8], output: &'a [u8]) -> Result<Wire<'a>, String> {
    let arrived_wrong = ipv4_header_checksum_ok(input) == Some(false);
    match ipv4_header_checksum_ok(output) {
        Some(true) if arrived_wrong => return Err("repaired a wrong IPv4 header checksum".into()),
        Some(false) if !arrived_wrong => {
            return Err("relayed with a wrong IPv4 header checksum".into())
        }
        _ => {}
    }
    parse_wire(output, false).ok_or_else(|| "relayed a frame the receiver's stack drops".to_owned())
}

#[test]
fn the_program_relays_only_what_the_model_relays() {
    if !privileged("the_program_relays_only_what_the_model_relays") {
        return;
    }
    let testbed = Testbed::new(64).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    let now = Instant::now();
    // What a core can install: not the IPv4-mapped entries (it answers 443), which the
    // unchecked_addresses rows cover.
    let mapped = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
    let entries: Vec<Entry> = world::entries(now)
        .into_iter()
        .filter(|entry| match *entry {
            Entry::Permission { peer_ip, .. } => !mapped(peer_ip),
            Entry::Channel { peer, .. } => !mapped(peer.ip()),
            Entry::Allocation { .. } => true,
        })
        .collect();
    world::install_entries(&mut fast_path, &entries);
    let model = Model::new(&entries, now);

    let bases = base_frames();
    let mut rng = StdRng::seed_from_u64(SEED);
    let frames: Vec<Vec<u8>> = (0..FRAMES)
        .map(|index| {
            let mut frame = bases[index % bases.len()].clone();
            if index >= bases.len() {
                for _ in 0..rng.gen_range(1..4) {
                    mutate(&mut frame, &mut rng);
                }
                if rng.gen_bool(FIXED_SHARE) {
                    fix(&mut frame);
                }
            }
            frame
        })
        .collect();
    let to_relayed_address: Vec<bool> = frames
        .iter()
        .map(|frame| destination(frame).is_some_and(|address| model.is_relayed_address(address)))
        .collect();
    let runs: Vec<(&[u8], Ingress)> = frames
        .iter()
        .zip(&to_relayed_address)
        .map(|(frame, to_relay)| {
            let ingress = if *to_relay {
                Ingress::PeerSide
            } else {
                Ingress::ClientSide
            };
            (frame.as_slice(), ingress)
        })
        .collect();
    let outputs = testbed.run_all(&runs).or_fail("BPF_PROG_TEST_RUN");

    let mut failures = Vec::new();
    let (mut relayed, mut passed, mut dropped, mut model_relays) = (0u64, 0u64, 0u64, 0u64);
    let mut wrong_checksum = 0u64;
    for (index, ((frame, out), to_relay)) in frames
        .iter()
        .zip(&outputs)
        .zip(&to_relayed_address)
        .enumerate()
    {
        let expected = model.relay(frame, Judge::Userspace);
        model_relays += u64::from(expected.is_some());
        let verdict = match (out.action, &expected) {
            (XDP_PASS, _) => {
                passed += 1;
                Ok(())
            }
            (XDP_TX | XDP_REDIRECT, Some(expected)) => {
                relayed += 1;
                check_relayed(frame, &out.frame, expected)
            }
            (XDP_TX | XDP_REDIRECT, None) => match model.relay(frame, Judge::Program) {
                Some(expected) => {
                    relayed += 1;
                    wrong_checksum += 1;
                    check_relayed(frame, &out.frame, &expected)
                }
                None => Err("relayed a frame the model does not relay".to_owned()),
            },
            (XDP_DROP, None) => {
                dropped += 1;
                if *to_relay {
                    Ok(())
                } else {
                    Err("dropped a frame that is not to a relayed address".into())
                }
            }
            (XDP_DROP, Some(_)) => Err("dropped a frame userspace relays".into()),
            (action, _) => Err(format!("unexpected action {action}")),
        };
        if let Err(error) = verdict {
            failures.push(format!(
                "frame {index}: {error}\n  in  {}\n  out {}",
                hex(frame),
                hex(&out.frame)
            ));
        }
    }
    eprintln!(
        "differential: {FRAMES} frames ({} unmutated), model relays {model_relays}; program \
         relayed {relayed} (of which {wrong_checksum} with a wrong IPv4 header or UDP checksum \
         kept wrong), passed {passed}, dropped {dropped}",
        bases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {FRAMES} frames differ:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        relayed > 1000,
        "the program relayed only {relayed} frames: the test would prove little"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
