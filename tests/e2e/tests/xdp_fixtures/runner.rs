//! Turns fixture rows into frames with the testkit's builder and runs them through the
//! program under BPF_PROG_TEST_RUN: the action, the single counter bumped and the exact
//! output frame must match the row.

use std::net::SocketAddr;

use turn_relay::protocol::stun::attributes as attr;
use turn_relay::protocol::stun::{Class, Method, TransactionId};
use turn_testkit::frames::{udp_offset, Ip, UdpChecksum, UdpFrame};
use turn_testkit::stun_client::{channel_data, data_indication, message, send_indication};
use turn_testkit::testbed::{
    Ingress, RunResult, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, NEAR_PEER_MAC, PEER_MAC,
    PEER_SIDE_MAC, RELAY_PUBLIC_MAC, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};

use crate::rows::{Action, IpVariant, Mangle, On, Origin, Output, Payload, Peer, Row, SendShape};
use crate::world::{
    Allocation, CLIENT_PORT, LISTENER_PORT, V4, V4_CLIENT_V6_RELAY, V6, V6_CLIENT_V4_RELAY,
};

/// The transaction id of the Send indications the rows build.
const SEND_TRANSACTION: [u8; 12] = [0xA5; 12];

/// One row on one allocation.
pub struct Fixture {
    pub name: String,
    pub row: Row,
    pub allocation: Allocation,
}

/// Every row on every allocation it names.
pub fn fixtures(tables: &[&[Row]]) -> Vec<Fixture> {
    let mut fixtures = Vec::new();
    for row in tables.iter().flat_map(|rows| rows.iter()) {
        let (allocations, suffixed): (&[Allocation], bool) = match row.on {
            On::BothFamilies => (&[V4, V6], true),
            On::V4 => (&[V4], false),
            On::V6 => (&[V6], false),
            On::CrossFamilies => (&[V4_CLIENT_V6_RELAY, V6_CLIENT_V4_RELAY], true),
            On::V4ClientV6Relay => (&[V4_CLIENT_V6_RELAY], false),
        };
        for allocation in allocations {
            fixtures.push(Fixture {
                name: if suffixed {
                    format!("{}_{}", row.name, allocation.tag)
                } else {
                    row.name.to_owned()
                },
                row: *row,
                allocation: *allocation,
            });
        }
    }
    fixtures
}

/// A frame from `origin` on `allocation` carrying `payload`, with the IP header the rows
/// start from (TOS 0xB8 and an identification, so their mapping is checked).
pub fn frame(
    allocation: &Allocation,
    origin: Origin,
    payload: &[u8],
    variant: IpVariant,
) -> (Vec<u8>, Ingress) {
    let (ip, checksum) = incoming_ip(allocation, origin, variant);
    let (macs, ports, ingress) = match origin {
        Origin::Client => (
            (CLIENT_MAC, CLIENT_SIDE_MAC),
            (CLIENT_PORT, LISTENER_PORT),
            Ingress::ClientSide,
        ),
        Origin::ClientToPort(port) => (
            (CLIENT_MAC, CLIENT_SIDE_MAC),
            (CLIENT_PORT, port),
            Ingress::ClientSide,
        ),
        Origin::Peer(peer) => (
            (PEER_MAC, PEER_SIDE_MAC),
            (allocation.peer(peer).port(), allocation.relay.port()),
            Ingress::PeerSide,
        ),
    };
    let frame = UdpFrame {
        src_mac: macs.0,
        dst_mac: macs.1,
        ip,
        src_port: ports.0,
        dst_port: ports.1,
        payload,
        checksum,
    };
    (frame.build(), ingress)
}

fn incoming_ip(allocation: &Allocation, origin: Origin, variant: IpVariant) -> (Ip, UdpChecksum) {
    let (src, dst) = match origin {
        Origin::Client | Origin::ClientToPort(_) => (allocation.client, allocation.listener),
        Origin::Peer(peer) => (allocation.peer(peer).ip(), allocation.relay.ip()),
    };
    let mut ip = Ip {
        tos: 0xB8,
        id: 0x1234,
        ..Ip::new(src, dst)
    };
    let mut checksum = UdpChecksum::Compute;
    match variant {
        IpVariant::Usual => {}
        IpVariant::TtlOne => ip.ttl = 1,
        IpVariant::MayFragment => ip.dont_fragment = false,
        IpVariant::NoUdpChecksum => checksum = UdpChecksum::Zero,
        IpVariant::BestEffort => ip.tos = 0,
    }
    (ip, checksum)
}

/// The header a relay following RFC 8656 §14 (preferred behaviour) sends for `incoming`:
/// TTL − 1, TOS, DF and flow label kept, and over IPv4 the relay's own identification as
/// for any datagram it originates: 0 for an atomic datagram (DF set, RFC 6864 §4.1), else
/// a random one, which the runner takes from the `output` it checks. Across families
/// (RFC 7915 mapping) identification / flow label 0 and DF set.
fn relayed_ip(
    allocation: &Allocation,
    incoming: Ip,
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    output: &[u8],
) -> Ip {
    let relayed = Ip {
        src,
        dst,
        ttl: incoming.ttl - 1,
        ..incoming
    };
    if allocation.cross_family {
        Ip {
            id: 0,
            dont_fragment: true,
            ..relayed
        }
    } else if src.is_ipv4() {
        Ip {
            id: if incoming.dont_fragment {
                0
            } else {
                ipv4_identification(output)
            },
            ..relayed
        }
    } else {
        relayed
    }
}

/// The identification of an IPv4 frame (0 for anything else).
pub fn ipv4_identification(frame: &[u8]) -> u16 {
    match frame.get(12..20) {
        Some([0x08, 0x00, _, _, _, _, high, low]) => u16::from_be_bytes([*high, *low]),
        _ => 0,
    }
}

/// The UDP payload a row describes.
fn payload(allocation: &Allocation, payload: Payload) -> Vec<u8> {
    match payload {
        Payload::Raw(data) => data.to_vec(),
        Payload::ChannelData {
            channel,
            data,
            padding,
        } => [channel_data(channel, data), padding.to_vec()].concat(),
        Payload::ChannelDataClaiming {
            channel,
            data,
            declared,
        } => {
            let mut message = channel_data(channel, data);
            message[2..4].copy_from_slice(&declared.to_be_bytes());
            message
        }
        Payload::Send {
            peer,
            data,
            fingerprint,
        } => send_indication(SEND_TRANSACTION, allocation.peer(peer), data, fingerprint),
        Payload::SendShaped { peer, data, shape } => {
            shaped_send(allocation.peer(peer), data, shape)
        }
        Payload::BindingRequest => message(
            Method::BINDING,
            Class::Request,
            &TransactionId(SEND_TRANSACTION),
            None,
            |_| {},
        ),
    }
}

fn shaped_send(peer: SocketAddr, data: &[u8], shape: SendShape) -> Vec<u8> {
    let send = |attributes: &dyn Fn(&mut turn_relay::protocol::stun::MessageBuilder<'_>)| {
        message(
            Method::SEND,
            Class::Indication,
            &TransactionId(SEND_TRANSACTION),
            None,
            attributes,
        )
    };
    match shape {
        SendShape::DataFirst => send(&|builder| {
            builder
                .attribute(attr::DATA, data)
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        }),
        SendShape::DontFragment => send(&|builder| {
            builder
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attribute(attr::DONT_FRAGMENT, &[])
                .attribute(attr::DATA, data);
        }),
        SendShape::WithoutData => send(&|builder| {
            builder.xor_address(attr::XOR_PEER_ADDRESS, peer);
        }),
        SendShape::AttributeAfterFingerprint => send(&|builder| {
            builder
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attribute(attr::DATA, data)
                .fingerprint()
                .attribute(attr::DONT_FRAGMENT, &[]);
        }),
        SendShape::WrongCookie => {
            let mut message = send_indication(SEND_TRANSACTION, peer, data, false);
            message[4] ^= 0xFF;
            message
        }
        SendShape::WrongFingerprint => {
            let mut message = send_indication(SEND_TRANSACTION, peer, data, true);
            if let Some(last) = message.last_mut() {
                *last ^= 0x01;
            }
            message
        }
        SendShape::DataChangedUnderFingerprint => {
            let mut message = send_indication(SEND_TRANSACTION, peer, data, true);
            // Header, XOR-PEER-ADDRESS (4 + 8 or 4 + 20 bytes), DATA's header.
            let address_len = if peer.is_ipv4() { 8 } else { 20 };
            message[20 + 4 + address_len + 4] ^= 0x80;
            message
        }
        SendShape::AttributeOverruns => {
            let mut message = send_indication(SEND_TRANSACTION, peer, data, false);
            message[22..24].copy_from_slice(&200u16.to_be_bytes());
            message
        }
    }
}

fn mangle(mut frame: Vec<u8>, mangle: Mangle) -> Vec<u8> {
    let udp = udp_offset(&frame);
    let add = |frame: &mut [u8], at: usize, amount: u16| {
        let value = u16::from_be_bytes([frame[at], frame[at + 1]]) + amount;
        frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    };
    match mangle {
        Mangle::TruncateInUdpHeader => frame.truncate(udp + 4),
        Mangle::TruncateInIpHeader => frame.truncate(20),
        Mangle::EthernetHeaderOnly => frame.truncate(14),
        Mangle::UdpLengthPlusFour => add(&mut frame, udp + 4, 4),
        Mangle::IpLengthPlusEight => {
            let length_field = if udp == 34 { 16 } else { 18 };
            add(&mut frame, length_field, 8);
        }
        Mangle::Ipv4Options => frame[14] = 0x46,
        Mangle::Ipv4MoreFragments => frame[20] |= 0x20,
        Mangle::Ipv4Tcp => frame[23] = 6,
        Mangle::Ipv4TcpIpHeaderOnly => {
            frame[23] = 6;
            frame.truncate(udp);
        }
        Mangle::VlanTag => {
            frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        }
        Mangle::Arp => {
            frame.truncate(12);
            frame.extend_from_slice(&[0x08, 0x06]);
            frame.extend_from_slice(&[0u8; 28]);
        }
        Mangle::Ipv6HopByHop => frame[20] = 0,
        Mangle::Ipv6HopByHopIpHeaderOnly => {
            frame[20] = 0;
            frame.truncate(udp);
        }
        Mangle::ZeroUdpChecksum => frame[udp + 6..udp + 8].copy_from_slice(&[0, 0]),
        Mangle::WrongIpv4HeaderChecksum => frame[25] ^= 1,
    }
    frame
}

impl Fixture {
    /// The input frame and where it arrives.
    pub fn input(&self) -> (Vec<u8>, Ingress) {
        let row = &self.row;
        let payload = payload(&self.allocation, row.payload);
        let (frame, ingress) = frame(&self.allocation, row.from, &payload, row.ip);
        match row.mangle {
            Some(how) => (mangle(frame, how), ingress),
            None => (frame, ingress),
        }
    }

    /// The frame the program must leave; a Data indication takes the transaction id
    /// the program chose from `output`.
    fn expected(&self, input: &[u8], output: &[u8]) -> Result<Vec<u8>, String> {
        let allocation = &self.allocation;
        let (incoming, checksum) = incoming_ip(allocation, self.row.from, self.row.ip);
        let to_client = |payload: &[u8]| {
            let ip = relayed_ip(
                allocation,
                incoming,
                allocation.listener,
                allocation.client,
                output,
            );
            UdpFrame {
                src_mac: CLIENT_SIDE_MAC,
                dst_mac: CLIENT_MAC,
                ip,
                src_port: LISTENER_PORT,
                dst_port: CLIENT_PORT,
                payload,
                checksum,
            }
            .build()
        };
        Ok(match self.row.output {
            Output::Unchanged => input.to_vec(),
            Output::ToPeer { peer, data } => {
                let to = allocation.peer(peer);
                let ip = relayed_ip(allocation, incoming, allocation.relay.ip(), to.ip(), output);
                let macs = match peer {
                    Peer::Near => (CLIENT_SIDE_MAC, NEAR_PEER_MAC),
                    Peer::RelayPublicOnRelayPort => (PEER_SIDE_MAC, RELAY_PUBLIC_MAC),
                    _ => (PEER_SIDE_MAC, PEER_MAC),
                };
                UdpFrame {
                    src_mac: macs.0,
                    dst_mac: macs.1,
                    ip,
                    src_port: allocation.relay.port(),
                    dst_port: to.port(),
                    payload: data,
                    checksum,
                }
                .build()
            }
            Output::ChannelDataToClient { channel, data } => {
                to_client(&channel_data(channel, data))
            }
            Output::DataIndicationToClient { peer, data } => {
                let id = transaction_id(output);
                if id == [0; 12] {
                    return Err("Data indication without a random transaction id".into());
                }
                to_client(&data_indication(id, allocation.peer(peer), data))
            }
        })
    }

    /// Runs the fixture once; Err says what differed.
    pub fn check(&self, testbed: &Testbed) -> Result<(), String> {
        let (input, ingress) = self.input();
        let before = testbed.counters().map_err(|error| format!("{error:#}"))?;
        let RunResult { action, frame } = testbed
            .run(&input, ingress)
            .map_err(|error| format!("{error:#}"))?;
        let after = testbed.counters().map_err(|error| format!("{error:#}"))?;
        let bumped: Vec<_> = after
            .iter()
            .filter(|(outcome, counter)| counter.packets > before.get(*outcome).packets)
            .map(|(outcome, _)| outcome)
            .collect();
        if bumped != [self.row.outcome] {
            return Err(format!(
                "counted {bumped:?}, expected [{:?}]",
                self.row.outcome
            ));
        }
        let expected_action = match self.row.action {
            Action::Drop => XDP_DROP,
            Action::Pass => XDP_PASS,
            Action::Tx => XDP_TX,
            Action::Redirect => XDP_REDIRECT,
        };
        if action != expected_action {
            return Err(format!("action {action}, expected {expected_action}"));
        }
        let expected = self.expected(&input, &frame)?;
        if frame != expected {
            return Err(format!(
                "frame differs:\n   got {}\n  want {}",
                hex(&frame),
                hex(&expected)
            ));
        }
        Ok(())
    }
}

/// The transaction id of the STUN message in a relayed UDP frame.
pub fn transaction_id(frame: &[u8]) -> [u8; 12] {
    let payload = udp_offset(frame) + 8;
    frame
        .get(payload + 8..payload + 20)
        .and_then(|id| id.try_into().ok())
        .unwrap_or([0; 12])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
