//! Katran-style fixtures for the XDP program: each fixture is an input frame, the
//! action the program must return, the counter it must bump and, for relayed frames,
//! the exact frame it must produce. Expected frames are built here from scratch with
//! full checksum computation (never with the program's incremental code), so a wrong
//! incremental update shows up as a byte difference.
//!
//! Frames run through BPF_PROG_TEST_RUN inside a [`Testbed`] namespace whose routes and
//! static neighbours make bpf_fib_lookup succeed (see `turn_relay::bpf::testbed`); the
//! fixtures for unresolved / unroutable peers and the forwarding-disabled test cover
//! lookups that fail, which must PASS the frame unchanged.

mod xdp_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use turn_relay::bpf::testbed::{
    Ingress, RunResult, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, CLIENT_V4, CLIENT_V6, LISTENER_V4,
    LISTENER_V6, NEAR_PEER_MAC, NEAR_PEER_V4, NEAR_PEER_V6, PEER_MAC, PEER_SIDE_MAC, PEER_V4,
    PEER_V6, RELAYED_V4, RELAYED_V6, UNRESOLVED_PEER_V4, UNROUTABLE_PEER_V4,
};
use turn_relay::bpf::{BpfDatapath, Outcome};
use turn_relay::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath as _, PermissionEntry,
};
use xdp_support::privileged;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const CLIENT_PORT: u16 = 40_000;
const PEER_PORT: u16 = 7000;
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

const CHANNEL_PEER: u16 = 0x4000;
const CHANNEL_NEAR_PEER: u16 = 0x4001;
const CHANNEL_UNRESOLVED: u16 = 0x4002;
const CHANNEL_EXPIRED: u16 = 0x4003;
const CHANNEL_UNROUTABLE: u16 = 0x4004;
const CHANNEL_UNBOUND: u16 = 0x4005;
/// The highest channel number (RFC 5766 range, accepted for interop), bound to the peer's
/// [`HIGHEST_CHANNEL_PEER_PORT`].
const CHANNEL_HIGHEST: u16 = 0x7FFF;
const HIGHEST_CHANNEL_PEER_PORT: u16 = PEER_PORT + 2;
/// Just past the channel range: the first bits 0b10 make it neither ChannelData nor STUN
/// (RFC 7983 §7).
const NOT_A_CHANNEL: u16 = 0x8000;
/// A peer whose permission has expired.
const EXPIRED_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 21);
/// A peer without any permission.
const STRANGER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 50);

// ---------------------------------------------------------------------------------
// An independent frame builder (full RFC 1071 checksums).

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// IP header fields a fixture sets.
#[derive(Clone, Copy)]
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    /// IPv4 TOS / IPv6 traffic class.
    tos: u8,
    /// IPv4 identification / IPv6 flow label.
    id: u16,
    dont_fragment: bool,
}

impl Ip {
    fn new(src: IpAddr, dst: IpAddr) -> Ip {
        Ip {
            src,
            dst,
            ttl: 64,
            tos: 0xB8,
            id: 0x1234,
            dont_fragment: true,
        }
    }

    /// The header a relay following RFC 8656 §14 (preferred) sends for this one.
    fn relayed(self, src: IpAddr, dst: IpAddr) -> Ip {
        Ip {
            src,
            dst,
            ttl: self.ttl - 1,
            ..self
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum UdpChecksum {
    Compute,
    Zero,
}

fn frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ip: Ip,
    sport: u16,
    dport: u16,
    payload: &[u8],
    checksum: UdpChecksum,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut out = Vec::new();
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    let mut pseudo = Vec::new();
    match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x08, 0x00]);
            let mut header = vec![0x45, ip.tos];
            header.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            header.extend_from_slice(&ip.id.to_be_bytes());
            header.extend_from_slice(&[
                if ip.dont_fragment { 0x40 } else { 0 },
                0,
                ip.ttl,
                17,
                0,
                0,
            ]);
            header.extend_from_slice(&s.octets());
            header.extend_from_slice(&d.octets());
            let checksum = internet_checksum(&header);
            header[10..12].copy_from_slice(&checksum.to_be_bytes());
            out.extend_from_slice(&header);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&[0x86, 0xDD]);
            let first = 0x6000_0000u32 | (u32::from(ip.tos) << 20) | u32::from(ip.id);
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&(udp_len as u16).to_be_bytes());
            out.extend_from_slice(&[17, ip.ttl]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => panic!("mixed families in one header"),
    }
    if checksum == UdpChecksum::Compute {
        pseudo.extend_from_slice(&udp);
        let sum = match internet_checksum(&pseudo) {
            0 => 0xFFFF,
            other => other,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
    }
    out.extend_from_slice(&udp);
    out
}

fn channel_data(number: u16, data: &[u8], padding: &[u8]) -> Vec<u8> {
    let mut out = number.to_be_bytes().to_vec();
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(padding);
    out
}

fn xor_address(address: SocketAddr, transaction_id: &[u8; 12]) -> Vec<u8> {
    let mut value = vec![0];
    let port = (address.port() ^ 0x2112).to_be_bytes();
    match address.ip() {
        IpAddr::V4(v4) => {
            value.push(1);
            value.extend_from_slice(&port);
            value.extend(v4.octets().iter().zip(COOKIE).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(v6) => {
            value.push(2);
            value.extend_from_slice(&port);
            let key: Vec<u8> = COOKIE.iter().chain(transaction_id).copied().collect();
            value.extend(v6.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    value
}

fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn stun(kind: u16, cookie: [u8; 4], transaction_id: &[u8; 12], attributes: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attributes.concat();
    let mut out = kind.to_be_bytes().to_vec();
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&cookie);
    out.extend_from_slice(transaction_id);
    out.extend_from_slice(&body);
    out
}

const SEND_TRANSACTION: [u8; 12] = [0xA5; 12];

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    stun(
        0x0016,
        COOKIE,
        &SEND_TRANSACTION,
        &[
            attribute(0x0012, &xor_address(peer, &SEND_TRANSACTION)),
            attribute(0x0013, data),
        ],
    )
}

/// `message` with a FINGERPRINT attribute appended (RFC 8489 §14.7: CRC-32 of the
/// message up to the attribute, length field already counting it, XOR 0x5354554E).
fn with_fingerprint(mut message: Vec<u8>) -> Vec<u8> {
    let length = u16::from_be_bytes([message[2], message[3]]) + 8;
    message[2..4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32fast::hash(&message) ^ 0x5354_554E;
    message.extend_from_slice(&attribute(0x8028, &crc.to_be_bytes()));
    message
}

fn data_indication(peer: SocketAddr, data: &[u8], transaction_id: &[u8; 12]) -> Vec<u8> {
    stun(
        0x0017,
        COOKIE,
        transaction_id,
        &[
            attribute(0x0012, &xor_address(peer, transaction_id)),
            attribute(0x0013, data),
        ],
    )
}

// ---------------------------------------------------------------------------------
// The fixture table.

/// Builds the expected Data indication frame for a transaction id.
type DataIndicationFrame = Box<dyn Fn(&[u8; 12]) -> Vec<u8>>;

/// What a fixture expects back.
enum Expect {
    /// The frame unchanged, with this action (PASS or DROP).
    Unchanged(u32),
    /// Exactly this frame, with this action.
    Frame(u32, Vec<u8>),
    /// A Data indication: the expected frame for the transaction id found in the output.
    DataIndication(u32, DataIndicationFrame),
}

struct Fixture {
    name: String,
    ingress: Ingress,
    input: Vec<u8>,
    outcome: Outcome,
    expect: Expect,
}

struct Family {
    tag: &'static str,
    listener: IpAddr,
    relay: IpAddr,
    client: IpAddr,
    peer: IpAddr,
}

const FAMILIES: [Family; 2] = [
    Family {
        tag: "v4",
        listener: IpAddr::V4(LISTENER_V4),
        relay: IpAddr::V4(RELAYED_V4),
        client: IpAddr::V4(CLIENT_V4),
        peer: IpAddr::V4(PEER_V4),
    },
    Family {
        tag: "v6",
        listener: IpAddr::V6(LISTENER_V6),
        relay: IpAddr::V6(RELAYED_V6),
        client: IpAddr::V6(CLIENT_V6),
        peer: IpAddr::V6(PEER_V6),
    },
];

impl Family {
    fn flow(&self) -> ClientFlow {
        ClientFlow {
            client: SocketAddr::new(self.client, CLIENT_PORT),
            listener: SocketAddr::new(self.listener, LISTENER_PORT),
        }
    }

    fn relay_address(&self) -> SocketAddr {
        SocketAddr::new(self.relay, RELAY_PORT)
    }

    /// A frame from the client to the listener.
    fn client_frame(&self, payload: &[u8]) -> Vec<u8> {
        frame(
            CLIENT_MAC,
            CLIENT_SIDE_MAC,
            Ip::new(self.client, self.listener),
            CLIENT_PORT,
            LISTENER_PORT,
            payload,
            UdpChecksum::Compute,
        )
    }

    /// A frame from a peer to the relayed address.
    fn peer_frame(&self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        frame(
            PEER_MAC,
            PEER_SIDE_MAC,
            Ip::new(peer.ip(), self.relay),
            peer.port(),
            RELAY_PORT,
            payload,
            UdpChecksum::Compute,
        )
    }

    /// The relayed frame to a peer on the peer side.
    fn to_peer(&self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let ip = Ip::new(self.client, self.listener).relayed(self.relay, peer.ip());
        frame(
            PEER_SIDE_MAC,
            PEER_MAC,
            ip,
            RELAY_PORT,
            peer.port(),
            data,
            UdpChecksum::Compute,
        )
    }

    /// The relayed frame to the client.
    fn to_client(&self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let ip = Ip::new(peer.ip(), self.relay).relayed(self.listener, self.client);
        frame(
            CLIENT_SIDE_MAC,
            CLIENT_MAC,
            ip,
            LISTENER_PORT,
            CLIENT_PORT,
            payload,
            UdpChecksum::Compute,
        )
    }
}

/// A channel bound on a cross-family allocation (the client flow's same-family
/// allocation uses the others; channel numbers are per client 5-tuple).
const CHANNEL_CROSS: u16 = 0x4010;

/// A cross-family allocation (RFC 8656 §7.2 REQUESTED-ADDRESS-FAMILY, or the second one of
/// ADDITIONAL-ADDRESS-FAMILY): the client on `client`'s family, relayed address and peer
/// on `relayed`'s.
struct CrossFamily {
    client: &'static Family,
    relayed: &'static Family,
}

const CROSS_FAMILIES: [CrossFamily; 2] = [
    CrossFamily {
        client: &FAMILIES[0],
        relayed: &FAMILIES[1],
    },
    CrossFamily {
        client: &FAMILIES[1],
        relayed: &FAMILIES[0],
    },
];

impl CrossFamily {
    fn tag(&self) -> String {
        format!("{}_client_{}_relay", self.client.tag, self.relayed.tag)
    }

    fn relay_address(&self) -> SocketAddr {
        SocketAddr::new(self.relayed.relay, RELAY_PORT + 1)
    }

    /// The relayed IP header: RFC 8656 §14 preferred behaviour with RFC 7915 mapping
    /// (TOS ↔ traffic class, TTL ↔ hop limit − 1, IPv4 DF set with identification 0,
    /// IPv6 flow label 0).
    fn relayed_ip(incoming: Ip, src: IpAddr, dst: IpAddr) -> Ip {
        Ip {
            src,
            dst,
            ttl: incoming.ttl - 1,
            tos: incoming.tos,
            id: 0,
            dont_fragment: true,
        }
    }

    /// A frame from a peer (of the relayed family) to the cross-family relayed address.
    fn peer_frame(&self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        frame(
            PEER_MAC,
            PEER_SIDE_MAC,
            Ip::new(peer.ip(), self.relay_address().ip()),
            peer.port(),
            self.relay_address().port(),
            payload,
            UdpChecksum::Compute,
        )
    }

    /// The relayed frame to a peer, in the relayed family.
    fn to_peer(&self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let incoming = Ip::new(self.client.client, self.client.listener);
        frame(
            PEER_SIDE_MAC,
            PEER_MAC,
            Self::relayed_ip(incoming, self.relay_address().ip(), peer.ip()),
            self.relay_address().port(),
            peer.port(),
            data,
            UdpChecksum::Compute,
        )
    }

    /// The relayed frame to the client, in the client's family.
    fn to_client(&self, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let incoming = Ip::new(peer.ip(), self.relay_address().ip());
        frame(
            CLIENT_SIDE_MAC,
            CLIENT_MAC,
            Self::relayed_ip(incoming, self.client.listener, self.client.client),
            LISTENER_PORT,
            CLIENT_PORT,
            payload,
            UdpChecksum::Compute,
        )
    }
}

fn install_cross_family(datapath: &mut BpfDatapath, live: Instant) {
    for cross in &CROSS_FAMILIES {
        let (flow, relay) = (cross.client.flow(), cross.relay_address());
        datapath
            .install_allocation(AllocationEntry {
                flow,
                relay,
                expires_at: live,
            })
            .expect("cross-family allocation");
        let peer_ip = cross.relayed.peer;
        datapath
            .install_permission(PermissionEntry {
                flow,
                relay,
                peer_ip,
                expires_at: live,
            })
            .expect("cross-family permission");
        datapath
            .install_channel(ChannelEntry {
                flow,
                relay,
                peer: SocketAddr::new(peer_ip, PEER_PORT),
                number: CHANNEL_CROSS,
                expires_at: live,
            })
            .expect("cross-family channel");
    }
}

/// Cross-family relaying in every direction and framing: the IP header is rebuilt in
/// the other family, the UDP checksum follows the new pseudo-header.
fn cross_family_fixtures(fixtures: &mut Vec<Fixture>) {
    let data = b"hello, peer!".to_vec(); // 12 bytes
    let odd = b"odd-5".to_vec(); // 5 bytes
    for cross in &CROSS_FAMILIES {
        let tag = cross.tag();
        let peer = SocketAddr::new(cross.relayed.peer, PEER_PORT);
        let other_port_peer = SocketAddr::new(cross.relayed.peer, PEER_PORT + 1);
        let client_frame = |payload: &[u8]| cross.client.client_frame(payload);
        for (label, payload) in [("even", &data), ("odd", &odd)] {
            fixtures.push(Fixture {
                name: format!("cross_family_channel_data_to_peer_{label}_{tag}"),
                ingress: Ingress::ClientSide,
                input: client_frame(&channel_data(CHANNEL_CROSS, payload, &[])),
                outcome: Outcome::RelayedChannelDataToPeer,
                expect: Expect::Frame(XDP_REDIRECT, cross.to_peer(peer, payload)),
            });
            fixtures.push(Fixture {
                name: format!("cross_family_send_indication_to_peer_{label}_{tag}"),
                ingress: Ingress::ClientSide,
                input: client_frame(&send_indication(peer, payload)),
                outcome: Outcome::RelayedSendToPeer,
                expect: Expect::Frame(XDP_REDIRECT, cross.to_peer(peer, payload)),
            });
            fixtures.push(Fixture {
                name: format!("cross_family_peer_to_client_channel_data_{label}_{tag}"),
                ingress: Ingress::PeerSide,
                input: cross.peer_frame(peer, payload),
                outcome: Outcome::RelayedChannelDataToClient,
                expect: Expect::Frame(
                    XDP_REDIRECT,
                    cross.to_client(peer, &channel_data(CHANNEL_CROSS, payload, &[])),
                ),
            });
            let expected_payload = payload.clone();
            let relay = cross.relay_address();
            let (client, listener) = (cross.client.client, cross.client.listener);
            fixtures.push(Fixture {
                name: format!("cross_family_peer_to_client_data_indication_{label}_{tag}"),
                ingress: Ingress::PeerSide,
                input: cross.peer_frame(other_port_peer, payload),
                outcome: Outcome::RelayedDataIndicationToClient,
                expect: Expect::DataIndication(
                    XDP_REDIRECT,
                    Box::new(move |transaction_id| {
                        let incoming = Ip::new(other_port_peer.ip(), relay.ip());
                        frame(
                            CLIENT_SIDE_MAC,
                            CLIENT_MAC,
                            CrossFamily::relayed_ip(incoming, listener, client),
                            LISTENER_PORT,
                            CLIENT_PORT,
                            &data_indication(other_port_peer, &expected_payload, transaction_id),
                            UdpChecksum::Compute,
                        )
                    }),
                ),
            });
        }
        fixtures.push(Fixture {
            name: format!("cross_family_send_indication_with_fingerprint_{tag}"),
            ingress: Ingress::ClientSide,
            input: client_frame(&with_fingerprint(send_indication(peer, &odd))),
            outcome: Outcome::RelayedSendToPeer,
            expect: Expect::Frame(XDP_REDIRECT, cross.to_peer(peer, &odd)),
        });
    }
    // IPv4 without a UDP checksum (RFC 768) cannot go out over IPv6 as it is (RFC 8200
    // §8.1): userspace relays it.
    let v4_to_v6 = &CROSS_FAMILIES[0];
    fixtures.push(Fixture {
        name: "cross_family_udp_checksum_zero_passes_v4_client_v6_relay".into(),
        ingress: Ingress::ClientSide,
        input: frame(
            CLIENT_MAC,
            CLIENT_SIDE_MAC,
            Ip::new(v4_to_v6.client.client, v4_to_v6.client.listener),
            CLIENT_PORT,
            LISTENER_PORT,
            &channel_data(CHANNEL_CROSS, &data, &[]),
            UdpChecksum::Zero,
        ),
        outcome: Outcome::PassCrossFamily,
        expect: Expect::Unchanged(XDP_PASS),
    });
    fixtures.push(Fixture {
        name: "cross_family_send_indication_without_permission_v4_client_v6_relay".into(),
        ingress: Ingress::ClientSide,
        input: v4_to_v6.client.client_frame(&send_indication(
            SocketAddr::new(IpAddr::V6(NEAR_PEER_V6), PEER_PORT),
            &data,
        )),
        outcome: Outcome::PassNoPermission,
        expect: Expect::Unchanged(XDP_PASS),
    });
}

fn install(datapath: &mut BpfDatapath) {
    let live = Instant::now() + Duration::from_secs(600);
    let expired = Instant::now() - Duration::from_secs(1);
    install_cross_family(datapath, live);
    for family in &FAMILIES {
        let flow = family.flow();
        let relay = family.relay_address();
        datapath
            .install_allocation(AllocationEntry {
                flow,
                relay,
                expires_at: live,
            })
            .expect("allocation");
        let mut peers = vec![(family.peer, live, Some(CHANNEL_PEER))];
        if family.tag == "v4" {
            peers.extend([
                (IpAddr::V4(NEAR_PEER_V4), live, Some(CHANNEL_NEAR_PEER)),
                (
                    IpAddr::V4(UNRESOLVED_PEER_V4),
                    live,
                    Some(CHANNEL_UNRESOLVED),
                ),
                (
                    IpAddr::V4(UNROUTABLE_PEER_V4),
                    live,
                    Some(CHANNEL_UNROUTABLE),
                ),
                (IpAddr::V4(EXPIRED_PEER_V4), expired, Some(CHANNEL_EXPIRED)),
            ]);
        }
        datapath
            .install_channel(ChannelEntry {
                flow,
                relay,
                peer: SocketAddr::new(family.peer, HIGHEST_CHANNEL_PEER_PORT),
                number: CHANNEL_HIGHEST,
                expires_at: live,
            })
            .expect("channel 0x7FFF");
        for (peer_ip, expires_at, channel) in peers {
            datapath
                .install_permission(PermissionEntry {
                    flow,
                    relay,
                    peer_ip,
                    expires_at,
                })
                .expect("permission");
            if let Some(number) = channel {
                let peer = SocketAddr::new(peer_ip, PEER_PORT);
                datapath
                    .install_channel(ChannelEntry {
                        flow,
                        relay,
                        peer,
                        number,
                        expires_at,
                    })
                    .expect("channel");
            }
        }
    }
}

fn fixtures() -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    let data = b"hello, peer!".to_vec(); // 12 bytes
    let odd = b"odd-5".to_vec(); // 5 bytes
    for family in &FAMILIES {
        let t = family.tag;
        let peer = SocketAddr::new(family.peer, PEER_PORT);
        let other_port_peer = SocketAddr::new(family.peer, PEER_PORT + 1);
        let mut add = |name: &str, ingress, input, outcome, expect| {
            fixtures.push(Fixture {
                name: format!("{name}_{t}"),
                ingress,
                input,
                outcome,
                expect,
            });
        };

        // 1) Client → peer ChannelData.
        add(
            "channel_data_to_peer",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_PEER, &data, &[])),
            Outcome::RelayedChannelDataToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &data)),
        );
        add(
            "channel_data_odd_length_with_junk_padding_to_peer",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_PEER, &odd, &[0xEE, 0x77, 0x13])),
            Outcome::RelayedChannelDataToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &odd)),
        );
        add(
            "channel_data_odd_length_unpadded_to_peer",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_PEER, &odd, &[])),
            Outcome::RelayedChannelDataToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &odd)),
        );
        add(
            "channel_data_empty_to_peer",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_PEER, &[], &[])),
            Outcome::RelayedChannelDataToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &[])),
        );

        // Channel numbers 0x4000–0x7FFF are ChannelData (RFC 5766 range); 0x8000 is not.
        let highest_peer = SocketAddr::new(family.peer, HIGHEST_CHANNEL_PEER_PORT);
        add(
            "channel_data_highest_number_to_peer",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_HIGHEST, &data, &[])),
            Outcome::RelayedChannelDataToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(highest_peer, &data)),
        );
        add(
            "peer_to_client_channel_data_highest_number",
            Ingress::PeerSide,
            family.peer_frame(highest_peer, &odd),
            Outcome::RelayedChannelDataToClient,
            Expect::Frame(
                XDP_REDIRECT,
                family.to_client(highest_peer, &channel_data(CHANNEL_HIGHEST, &odd, &[])),
            ),
        );
        add(
            "channel_number_past_the_range",
            Ingress::ClientSide,
            family.client_frame(&channel_data(NOT_A_CHANNEL, &data, &[])),
            Outcome::PassUnknownFlow,
            Expect::Unchanged(XDP_PASS),
        );

        // 2) Client → peer Send indication.
        add(
            "send_indication_to_peer",
            Ingress::ClientSide,
            family.client_frame(&send_indication(peer, &data)),
            Outcome::RelayedSendToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &data)),
        );
        add(
            "send_indication_odd_length_to_peer",
            Ingress::ClientSide,
            family.client_frame(&send_indication(peer, &odd)),
            Outcome::RelayedSendToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &odd)),
        );
        let data_first = stun(
            0x0016,
            COOKIE,
            &SEND_TRANSACTION,
            &[
                attribute(0x0013, &odd),
                attribute(0x0012, &xor_address(peer, &SEND_TRANSACTION)),
            ],
        );
        add(
            "send_indication_data_before_peer_address",
            Ingress::ClientSide,
            family.client_frame(&data_first),
            Outcome::RelayedSendToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &odd)),
        );

        // 3) Peer → client ChannelData (channel bound to this peer transport address).
        let mut expected_channel_data = channel_data(CHANNEL_PEER, &odd, &[]);
        add(
            "peer_to_client_channel_data",
            Ingress::PeerSide,
            family.peer_frame(peer, &odd),
            Outcome::RelayedChannelDataToClient,
            Expect::Frame(XDP_REDIRECT, family.to_client(peer, &expected_channel_data)),
        );
        expected_channel_data = channel_data(CHANNEL_PEER, &data, &[]);
        add(
            "peer_to_client_channel_data_even",
            Ingress::PeerSide,
            family.peer_frame(peer, &data),
            Outcome::RelayedChannelDataToClient,
            Expect::Frame(XDP_REDIRECT, family.to_client(peer, &expected_channel_data)),
        );

        // 4) Peer → client Data indication (permission, no channel for this port).
        for (label, payload) in [("odd", odd.clone()), ("even", data.clone())] {
            let family_client = (family.client, family.listener, family.relay);
            let payload_for_expect = payload.clone();
            add(
                &format!("peer_to_client_data_indication_{label}"),
                Ingress::PeerSide,
                family.peer_frame(other_port_peer, &payload),
                Outcome::RelayedDataIndicationToClient,
                Expect::DataIndication(
                    XDP_REDIRECT,
                    Box::new(move |transaction_id| {
                        let (client, listener, relay) = family_client;
                        let ip = Ip::new(other_port_peer.ip(), relay).relayed(listener, client);
                        let message =
                            data_indication(other_port_peer, &payload_for_expect, transaction_id);
                        frame(
                            CLIENT_SIDE_MAC,
                            CLIENT_MAC,
                            ip,
                            LISTENER_PORT,
                            CLIENT_PORT,
                            &message,
                            UdpChecksum::Compute,
                        )
                    }),
                ),
            );
        }

        // 5) Hostile or unknown: must PASS or DROP, never be relayed.
        add(
            "channel_data_unbound_number",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_UNBOUND, &data, &[])),
            Outcome::PassChannelNotBound,
            Expect::Unchanged(XDP_PASS),
        );
        let mut lying = channel_data(CHANNEL_PEER, &data, &[]);
        lying[2..4].copy_from_slice(&100u16.to_be_bytes());
        add(
            "channel_data_length_too_long",
            Ingress::ClientSide,
            family.client_frame(&lying),
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
        add(
            "channel_data_length_too_short",
            Ingress::ClientSide,
            family.client_frame(&channel_data(CHANNEL_PEER, &data[..4], &data[4..])),
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
        let mut wrong_cookie = send_indication(peer, &data);
        wrong_cookie[4] ^= 0xFF;
        add(
            "send_indication_wrong_cookie",
            Ingress::ClientSide,
            family.client_frame(&wrong_cookie),
            Outcome::PassStun,
            Expect::Unchanged(XDP_PASS),
        );
        // FINGERPRINT (RFC 8489 §14.7), as coturn and libwebrtc send it: verified, then
        // relayed; a wrong one goes to userspace untouched; one that is not last is not
        // a message the fast path takes.
        for (label, payload) in [("even", &data), ("odd", &odd)] {
            add(
                &format!("send_indication_with_fingerprint_{label}"),
                Ingress::ClientSide,
                family.client_frame(&with_fingerprint(send_indication(peer, payload))),
                Outcome::RelayedSendToPeer,
                Expect::Frame(XDP_REDIRECT, family.to_peer(peer, payload)),
            );
        }
        let long = vec![0x3C; 1200];
        add(
            "send_indication_with_fingerprint_long",
            Ingress::ClientSide,
            family.client_frame(&with_fingerprint(send_indication(peer, &long))),
            Outcome::RelayedSendToPeer,
            Expect::Frame(XDP_REDIRECT, family.to_peer(peer, &long)),
        );
        let mut wrong_fingerprint = with_fingerprint(send_indication(peer, &data));
        let last = wrong_fingerprint.len() - 1;
        wrong_fingerprint[last] ^= 0x01;
        add(
            "send_indication_wrong_fingerprint",
            Ingress::ClientSide,
            family.client_frame(&wrong_fingerprint),
            Outcome::PassBadFingerprint,
            Expect::Unchanged(XDP_PASS),
        );
        let mut corrupted_data = with_fingerprint(send_indication(peer, &data));
        corrupted_data[20 + 4 + 8 + 4 + if t == "v4" { 0 } else { 12 }] ^= 0x80;
        add(
            "send_indication_data_changed_under_fingerprint",
            Ingress::ClientSide,
            family.client_frame(&corrupted_data),
            Outcome::PassBadFingerprint,
            Expect::Unchanged(XDP_PASS),
        );
        let mut fingerprint_not_last = with_fingerprint(send_indication(peer, &data));
        let length = u16::from_be_bytes([fingerprint_not_last[2], fingerprint_not_last[3]]) + 4;
        fingerprint_not_last[2..4].copy_from_slice(&length.to_be_bytes());
        fingerprint_not_last.extend_from_slice(&attribute(0x001A, &[]));
        add(
            "send_indication_attributes_after_fingerprint",
            Ingress::ClientSide,
            family.client_frame(&fingerprint_not_last),
            Outcome::PassStun,
            Expect::Unchanged(XDP_PASS),
        );
        let no_data = stun(
            0x0016,
            COOKIE,
            &SEND_TRANSACTION,
            &[attribute(0x0012, &xor_address(peer, &SEND_TRANSACTION))],
        );
        add(
            "send_indication_without_data",
            Ingress::ClientSide,
            family.client_frame(&no_data),
            Outcome::PassStun,
            Expect::Unchanged(XDP_PASS),
        );
        let mut lying_attribute = send_indication(peer, &data);
        lying_attribute[20 + 2..20 + 4].copy_from_slice(&200u16.to_be_bytes());
        add(
            "send_indication_attribute_overruns",
            Ingress::ClientSide,
            family.client_frame(&lying_attribute),
            Outcome::PassStun,
            Expect::Unchanged(XDP_PASS),
        );
        let stranger = SocketAddr::new(
            if t == "v4" {
                IpAddr::V4(STRANGER_V4)
            } else {
                "2001:db8:2::50".parse().expect("ip")
            },
            PEER_PORT,
        );
        add(
            "send_indication_without_permission",
            Ingress::ClientSide,
            family.client_frame(&send_indication(stranger, &data)),
            Outcome::PassNoPermission,
            Expect::Unchanged(XDP_PASS),
        );
        let binding_request = stun(0x0001, COOKIE, &SEND_TRANSACTION, &[]);
        add(
            "binding_request",
            Ingress::ClientSide,
            family.client_frame(&binding_request),
            Outcome::PassStun,
            Expect::Unchanged(XDP_PASS),
        );
        add(
            "peer_without_permission",
            Ingress::PeerSide,
            family.peer_frame(stranger, &data),
            Outcome::DropNoPermission,
            Expect::Unchanged(XDP_DROP),
        );
        let unknown = frame(
            CLIENT_MAC,
            CLIENT_SIDE_MAC,
            Ip::new(family.client, family.listener),
            CLIENT_PORT,
            53,
            &data,
            UdpChecksum::Compute,
        );
        add(
            "unknown_udp_flow",
            Ingress::ClientSide,
            unknown,
            Outcome::PassUnknownFlow,
            Expect::Unchanged(XDP_PASS),
        );
        let mut ttl_one = frame(
            CLIENT_MAC,
            CLIENT_SIDE_MAC,
            Ip {
                ttl: 1,
                ..Ip::new(family.client, family.listener)
            },
            CLIENT_PORT,
            LISTENER_PORT,
            &channel_data(CHANNEL_PEER, &data, &[]),
            UdpChecksum::Compute,
        );
        add(
            "ttl_one",
            Ingress::ClientSide,
            ttl_one.clone(),
            Outcome::PassTtl,
            Expect::Unchanged(XDP_PASS),
        );
        // Truncated: cut inside the UDP header, and a UDP length beyond the IP payload.
        let full = family.client_frame(&channel_data(CHANNEL_PEER, &data, &[]));
        let l4 = if t == "v4" { 34 } else { 54 };
        add(
            "truncated_udp_header",
            Ingress::ClientSide,
            full[..l4 + 4].to_vec(),
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
        add(
            "truncated_ip_header",
            Ingress::ClientSide,
            full[..20].to_vec(),
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
        let mut udp_too_long = full.clone();
        let udp_len = u16::from_be_bytes([full[l4 + 4], full[l4 + 5]]);
        udp_too_long[l4 + 4..l4 + 6].copy_from_slice(&(udp_len + 4).to_be_bytes());
        add(
            "udp_length_lies",
            Ingress::ClientSide,
            udp_too_long,
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
        let mut ip_too_long = full.clone();
        if t == "v4" {
            let total = u16::from_be_bytes([full[16], full[17]]);
            ip_too_long[16..18].copy_from_slice(&(total + 8).to_be_bytes());
        } else {
            let payload = u16::from_be_bytes([full[18], full[19]]);
            ip_too_long[18..20].copy_from_slice(&(payload + 8).to_be_bytes());
        }
        add(
            "ip_length_beyond_frame",
            Ingress::ClientSide,
            ip_too_long,
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
        // (The kernel never hands XDP less than an Ethernet header.)
        ttl_one.truncate(14);
        add(
            "ethernet_header_only",
            Ingress::ClientSide,
            ttl_one,
            Outcome::PassMalformed,
            Expect::Unchanged(XDP_PASS),
        );
    }

    // IPv4-only fixtures.
    let v4 = &FAMILIES[0];
    let data = b"hello, peer!".to_vec();
    let near_peer = SocketAddr::new(IpAddr::V4(NEAR_PEER_V4), PEER_PORT);
    let near = Ip::new(v4.client, v4.listener).relayed(v4.relay, near_peer.ip());
    fixtures.push(Fixture {
        name: "channel_data_to_peer_on_ingress_link_is_tx_v4".into(),
        ingress: Ingress::ClientSide,
        input: v4.client_frame(&channel_data(CHANNEL_NEAR_PEER, &data, &[])),
        outcome: Outcome::RelayedChannelDataToPeer,
        expect: Expect::Frame(
            XDP_TX,
            frame(
                CLIENT_SIDE_MAC,
                NEAR_PEER_MAC,
                near,
                RELAY_PORT,
                PEER_PORT,
                &data,
                UdpChecksum::Compute,
            ),
        ),
    });
    let zero_checksum = frame(
        CLIENT_MAC,
        CLIENT_SIDE_MAC,
        Ip::new(v4.client, v4.listener),
        CLIENT_PORT,
        LISTENER_PORT,
        &channel_data(CHANNEL_PEER, &data, &[]),
        UdpChecksum::Zero,
    );
    let peer = SocketAddr::new(v4.peer, PEER_PORT);
    let zero_out = frame(
        PEER_SIDE_MAC,
        PEER_MAC,
        Ip::new(v4.client, v4.listener).relayed(v4.relay, peer.ip()),
        RELAY_PORT,
        PEER_PORT,
        &data,
        UdpChecksum::Zero,
    );
    fixtures.push(Fixture {
        name: "udp_checksum_zero_stays_zero_v4".into(),
        ingress: Ingress::ClientSide,
        input: zero_checksum,
        outcome: Outcome::RelayedChannelDataToPeer,
        expect: Expect::Frame(XDP_REDIRECT, zero_out),
    });
    cross_family_fixtures(&mut fixtures);
    let without_df = Ip {
        dont_fragment: false,
        ..Ip::new(v4.client, v4.listener)
    };
    let dont_fragment = stun(
        0x0016,
        COOKIE,
        &SEND_TRANSACTION,
        &[
            attribute(0x0012, &xor_address(peer, &SEND_TRANSACTION)),
            attribute(0x001A, &[]),
            attribute(0x0013, &data),
        ],
    );
    fixtures.push(Fixture {
        name: "send_indication_dont_fragment_sets_df_v4".into(),
        ingress: Ingress::ClientSide,
        input: frame(
            CLIENT_MAC,
            CLIENT_SIDE_MAC,
            without_df,
            CLIENT_PORT,
            LISTENER_PORT,
            &dont_fragment,
            UdpChecksum::Compute,
        ),
        outcome: Outcome::RelayedSendToPeer,
        expect: Expect::Frame(
            XDP_REDIRECT,
            frame(
                PEER_SIDE_MAC,
                PEER_MAC,
                Ip {
                    dont_fragment: true,
                    ..without_df.relayed(v4.relay, peer.ip())
                },
                RELAY_PORT,
                PEER_PORT,
                &data,
                UdpChecksum::Compute,
            ),
        ),
    });
    let mut more = vec![
        (
            "channel_data_expired_v4",
            v4.client_frame(&channel_data(CHANNEL_EXPIRED, &data, &[])),
            Ingress::ClientSide,
            Outcome::PassExpired,
            XDP_PASS,
        ),
        (
            "peer_with_expired_permission_v4",
            v4.peer_frame(
                SocketAddr::new(IpAddr::V4(EXPIRED_PEER_V4), PEER_PORT + 1),
                &data,
            ),
            Ingress::PeerSide,
            Outcome::DropNoPermission,
            XDP_DROP,
        ),
        (
            "peer_unresolved_neighbour_v4",
            v4.client_frame(&channel_data(CHANNEL_UNRESOLVED, &data, &[])),
            Ingress::ClientSide,
            Outcome::PassNoRoute,
            XDP_PASS,
        ),
        (
            "peer_without_route_v4",
            v4.client_frame(&channel_data(CHANNEL_UNROUTABLE, &data, &[])),
            Ingress::ClientSide,
            Outcome::PassNoRoute,
            XDP_PASS,
        ),
        // 1472 bytes of UDP payload fill a 1500-byte MTU; a Data indication adds 36.
        (
            "data_indication_over_mtu_v4",
            v4.peer_frame(SocketAddr::new(v4.peer, PEER_PORT + 1), &[7u8; 1472]),
            Ingress::PeerSide,
            Outcome::PassTooBig,
            XDP_PASS,
        ),
    ];
    let full = v4.client_frame(&channel_data(CHANNEL_PEER, &data, &[]));
    let mut options = full.clone();
    options[14] = 0x46;
    more.push((
        "ipv4_options_v4",
        options,
        Ingress::ClientSide,
        Outcome::PassIpOptions,
        XDP_PASS,
    ));
    let mut fragment = full.clone();
    fragment[20] |= 0x20; // more fragments
    more.push((
        "ipv4_fragment_v4",
        fragment,
        Ingress::ClientSide,
        Outcome::PassFragment,
        XDP_PASS,
    ));
    let mut tcp = full.clone();
    tcp[23] = 6;
    more.push((
        "tcp_v4",
        tcp,
        Ingress::ClientSide,
        Outcome::PassNotUdp,
        XDP_PASS,
    ));
    let mut vlan = full[..12].to_vec();
    vlan.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    vlan.extend_from_slice(&full[12..]);
    more.push((
        "vlan_tagged",
        vlan,
        Ingress::ClientSide,
        Outcome::PassNotIp,
        XDP_PASS,
    ));
    let mut arp = full[..12].to_vec();
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    more.push((
        "arp",
        arp,
        Ingress::ClientSide,
        Outcome::PassNotIp,
        XDP_PASS,
    ));
    let v6 = &FAMILIES[1];
    let full6 = v6.client_frame(&channel_data(CHANNEL_PEER, &data, &[]));
    let mut hop_by_hop = full6.clone();
    hop_by_hop[20] = 0;
    more.push((
        "ipv6_extension_header_v6",
        hop_by_hop,
        Ingress::ClientSide,
        Outcome::PassIpOptions,
        XDP_PASS,
    ));
    let mut zero6 = full6.clone();
    zero6[60..62].copy_from_slice(&[0, 0]);
    more.push((
        "ipv6_zero_udp_checksum_v6",
        zero6,
        Ingress::ClientSide,
        Outcome::PassMalformed,
        XDP_PASS,
    ));
    for (name, input, ingress, outcome, action) in more {
        fixtures.push(Fixture {
            name: name.into(),
            ingress,
            input,
            outcome,
            expect: Expect::Unchanged(action),
        });
    }
    fixtures
}

fn transaction_id(output: &[u8]) -> [u8; 12] {
    let payload = if output.get(12..14) == Some(&[0x08, 0x00]) {
        14 + 20 + 8
    } else {
        14 + 40 + 8
    };
    output
        .get(payload + 8..payload + 20)
        .and_then(|id| id.try_into().ok())
        .unwrap_or([0; 12])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn check(testbed: &Testbed, fixture: &Fixture) -> Result<(), String> {
    let before = testbed.counters().map_err(|error| format!("{error:#}"))?;
    let RunResult { action, frame } = testbed
        .run(&fixture.input, fixture.ingress)
        .map_err(|error| format!("{error:#}"))?;
    let after = testbed.counters().map_err(|error| format!("{error:#}"))?;
    let bumped: Vec<Outcome> = after
        .iter()
        .filter(|(outcome, counter)| counter.packets > before.get(*outcome).packets)
        .map(|(outcome, _)| outcome)
        .collect();
    if bumped != [fixture.outcome] {
        return Err(format!(
            "counted {bumped:?}, expected [{:?}]",
            fixture.outcome
        ));
    }
    let (expected_action, expected_frame) = match &fixture.expect {
        Expect::Unchanged(action) => (*action, fixture.input.clone()),
        Expect::Frame(action, frame) => (*action, frame.clone()),
        Expect::DataIndication(action, build) => {
            let id = transaction_id(&frame);
            if id == [0; 12] {
                return Err("Data indication without a random transaction id".into());
            }
            (*action, build(&id))
        }
    };
    if action != expected_action {
        return Err(format!("action {action}, expected {expected_action}"));
    }
    if frame != expected_frame {
        return Err(format!(
            "frame differs:\n   got {}\n  want {}",
            hex(&frame),
            hex(&expected_frame)
        ));
    }
    Ok(())
}

#[test]
fn fixtures_relay_pass_and_drop_exactly() {
    if !privileged("fixtures_relay_pass_and_drop_exactly") {
        return;
    }
    let testbed = Testbed::new(64).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    install(&mut datapath);
    let fixtures = fixtures();
    let failures: Vec<String> = fixtures
        .iter()
        .filter_map(|fixture| {
            check(&testbed, fixture)
                .err()
                .map(|error| format!("{}: {error}", fixture.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn data_indications_get_fresh_transaction_ids() {
    if !privileged("data_indications_get_fresh_transaction_ids") {
        return;
    }
    let testbed = Testbed::new(8).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    install(&mut datapath);
    let v4 = &FAMILIES[0];
    let input = v4.peer_frame(SocketAddr::new(v4.peer, PEER_PORT + 1), b"payload");
    let first = testbed.run(&input, Ingress::PeerSide).expect("run");
    let second = testbed.run(&input, Ingress::PeerSide).expect("run");
    assert_eq!((first.action, second.action), (XDP_REDIRECT, XDP_REDIRECT));
    assert_ne!(transaction_id(&first.frame), transaction_id(&second.frame));
}

#[test]
fn relayed_traffic_is_accounted_per_allocation() {
    if !privileged("relayed_traffic_is_accounted_per_allocation") {
        return;
    }
    let testbed = Testbed::new(8).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    install(&mut datapath);
    let v4 = &FAMILIES[0];
    let peer = SocketAddr::new(v4.peer, PEER_PORT);
    for _ in 0..3 {
        let out = testbed
            .run(
                &v4.client_frame(&channel_data(CHANNEL_PEER, b"12345", &[0, 0, 0])),
                Ingress::ClientSide,
            )
            .expect("run");
        assert_eq!(out.action, XDP_REDIRECT);
    }
    let out = testbed
        .run(&v4.peer_frame(peer, b"1234567"), Ingress::PeerSide)
        .expect("run");
    assert_eq!(out.action, XDP_REDIRECT);
    let traffic = datapath.relayed_traffic(v4.relay_address());
    assert_eq!((traffic.to_peer_packets, traffic.to_peer_bytes), (3, 15));
    assert_eq!((traffic.to_client_packets, traffic.to_client_bytes), (1, 7));
    assert_eq!(
        datapath
            .relayed_traffic(FAMILIES[1].relay_address())
            .to_peer_packets,
        0
    );

    // Removing the allocation stops the fast path for it: the frames go to userspace.
    datapath.remove_allocation(v4.flow(), v4.relay_address());
    let out = testbed
        .run(
            &v4.client_frame(&channel_data(CHANNEL_PEER, b"12345", &[0, 0, 0])),
            Ingress::ClientSide,
        )
        .expect("run");
    assert_eq!(out.action, XDP_PASS);
    let out = testbed
        .run(&v4.peer_frame(peer, b"1234567"), Ingress::PeerSide)
        .expect("run");
    assert_eq!(
        out.action, XDP_PASS,
        "no relayed address any more: not ours"
    );
}

#[test]
fn forwarding_disabled_passes_instead_of_relaying() {
    if !privileged("forwarding_disabled_passes_instead_of_relaying") {
        return;
    }
    let testbed = Testbed::new(8).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    install(&mut datapath);
    testbed.set_forwarding(false).expect("sysctl");
    for family in &FAMILIES {
        let input = family.client_frame(&channel_data(CHANNEL_PEER, b"data", &[]));
        let before = testbed
            .counters()
            .expect("counters")
            .get(Outcome::PassNoRoute)
            .packets;
        let out = testbed.run(&input, Ingress::ClientSide).expect("run");
        assert_eq!(
            (out.action, &out.frame),
            (XDP_PASS, &input),
            "{}",
            family.tag
        );
        assert_eq!(
            testbed
                .counters()
                .expect("counters")
                .get(Outcome::PassNoRoute)
                .packets,
            before + 1
        );
    }
}

#[test]
fn full_maps_refuse_entries_with_map_full() {
    if !privileged("full_maps_refuse_entries_with_map_full") {
        return;
    }
    let testbed = Testbed::new(1).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    let expires_at = Instant::now() + Duration::from_secs(60);
    let v4 = &FAMILIES[0];
    datapath
        .install_allocation(AllocationEntry {
            flow: v4.flow(),
            relay: v4.relay_address(),
            expires_at,
        })
        .expect("first");
    let second = AllocationEntry {
        flow: FAMILIES[1].flow(),
        relay: FAMILIES[1].relay_address(),
        expires_at,
    };
    assert!(matches!(
        datapath.install_allocation(second),
        Err(turn_relay::protocol::datapath::DatapathError::MapFull)
    ));
    let wildcard = AllocationEntry {
        flow: ClientFlow {
            listener: "0.0.0.0:3478".parse().expect("addr"),
            ..v4.flow()
        },
        relay: "198.19.0.1:50001".parse().expect("addr"),
        expires_at,
    };
    datapath.remove_allocation(v4.flow(), v4.relay_address());
    assert!(
        datapath.install_allocation(wildcard).is_err(),
        "wildcard listeners are refused"
    );
    datapath
        .install_allocation(AllocationEntry {
            flow: v4.flow(),
            relay: v4.relay_address(),
            expires_at,
        })
        .expect("slot reused");
}

#[test]
fn bench_times_every_path_next_to_the_baseline() {
    if !privileged("bench_times_every_path_next_to_the_baseline") {
        return;
    }
    let timings = turn_relay::bpf::bench::time_paths(2000).expect("timings");
    for (name, ns) in &timings {
        println!("{name:<32} {ns:>8.1} ns/packet");
    }
    let names: Vec<&str> = timings.iter().map(|(name, _)| name.as_str()).collect();
    for expected in [
        "baseline_pass",
        "channel_data_to_peer_v4",
        "send_to_peer_v6",
        "data_indication_to_client_v6",
        "send_fingerprint_to_peer_v4",
        "drop_no_permission",
        "baseline_pass_repeated",
        "drop_no_permission_repeated",
        "send_bad_fingerprint_v6_repeated",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        timings.iter().all(|(_, ns)| ns.is_finite() && *ns > 0.0),
        "{timings:?}"
    );
}

#[test]
fn channels_stop_with_their_allocation_and_resume_on_refresh() {
    if !privileged("channels_stop_with_their_allocation_and_resume_on_refresh") {
        return;
    }
    let testbed = Testbed::new(8).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    let v4 = &FAMILIES[0];
    let (flow, relay) = (v4.flow(), v4.relay_address());
    let peer = SocketAddr::new(v4.peer, PEER_PORT);
    let live = Instant::now() + Duration::from_secs(600);
    let expired = Instant::now() - Duration::from_secs(1);
    datapath
        .install_allocation(AllocationEntry {
            flow,
            relay,
            expires_at: expired,
        })
        .expect("allocation");
    datapath
        .install_permission(PermissionEntry {
            flow,
            relay,
            peer_ip: peer.ip(),
            expires_at: live,
        })
        .expect("permission");
    datapath
        .install_channel(ChannelEntry {
            flow,
            relay,
            peer,
            number: CHANNEL_PEER,
            expires_at: live,
        })
        .expect("channel");
    let input = v4.client_frame(&channel_data(CHANNEL_PEER, b"data", &[]));
    assert_eq!(
        testbed
            .run(&input, Ingress::ClientSide)
            .expect("run")
            .action,
        XDP_PASS,
        "allocation expired"
    );
    datapath
        .install_allocation(AllocationEntry {
            flow,
            relay,
            expires_at: live,
        })
        .expect("refresh");
    assert_eq!(
        testbed
            .run(&input, Ingress::ClientSide)
            .expect("run")
            .action,
        XDP_REDIRECT,
        "refreshed"
    );
    datapath.remove_channel(relay, CHANNEL_PEER);
    assert_eq!(
        testbed
            .run(&input, Ingress::ClientSide)
            .expect("run")
            .action,
        XDP_PASS,
        "channel removed"
    );
}
