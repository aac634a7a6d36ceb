//! The fast path end to end on real interfaces, IPv4 and IPv6: a client namespace, a
//! relay namespace with the XDP program attached in native mode to both of its veths,
//! and a peer namespace. ChannelData, Data indications and peer replies must cross the
//! relay namespace, which has no socket on the listening or relayed address: only the
//! XDP program can deliver them, and the receivers' kernels check every checksum.
//!
//! Frames XDP_TX'd or redirected into a veth are dropped unless the receiving end runs
//! an XDP program too, so the client and peer ends get the pass-only one.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use turn_relay::bpf::{Outcome, XdpMode, XdpRelay, XdpSettings};
use turn_relay::protocol::datapath::ClientFlow;
use turn_testkit::addresses::{
    CLIENT_V4, CLIENT_V6, OUTER_INTERFACE, PEER_V4, PEER_V6, RELAY_CLIENT_SIDE_INTERFACE,
    RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_PEER_SIDE_INTERFACE, RELAY_RELAYED_V4,
    RELAY_RELAYED_V6,
};
use turn_testkit::fast_path::FastPath;
use turn_testkit::netns::{format_mac, Namespace};
use turn_testkit::topology::Topology;
use turn_testkit::xdp::{StubAction, StubXdp};
use turn_testkit::{privileged, OrFail};

const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const CHANNEL: u16 = 0x4000;
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Addresses of one family: client side (client, listener) and peer side (relayed, peer).
struct Plan {
    client: IpAddr,
    listener: IpAddr,
    relayed: IpAddr,
    peer: IpAddr,
}

const V4: Plan = Plan {
    client: IpAddr::V4(CLIENT_V4),
    listener: IpAddr::V4(RELAY_LISTEN_V4),
    relayed: IpAddr::V4(RELAY_RELAYED_V4),
    peer: IpAddr::V4(PEER_V4),
};
const V6: Plan = Plan {
    client: IpAddr::V6(CLIENT_V6),
    listener: IpAddr::V6(RELAY_LISTEN_V6),
    relayed: IpAddr::V6(RELAY_RELAYED_V6),
    peer: IpAddr::V6(PEER_V6),
};

fn bind(ns: &Namespace, address: SocketAddr) -> UdpSocket {
    let socket = ns
        .run_inside(move || Ok(UdpSocket::bind(address)?))
        .or_fail("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    socket
}

fn relay_saw(relay: &XdpRelay) -> Vec<String> {
    let counters = relay.counters().expect("counters");
    counters
        .iter()
        .filter(|(_, counter)| counter.packets > 0)
        .map(|(outcome, counter)| format!("{}={}", outcome.name(), counter.packets))
        .collect()
}

fn relays_both_directions(plan: &Plan) {
    let topology = Topology::new().or_fail("building the namespaces");
    // bpf_fib_lookup needs resolved neighbours (forwarding is on in the topology).
    for (neighbour, ns, interface) in [
        (plan.client, &topology.client, RELAY_CLIENT_SIDE_INTERFACE),
        (plan.peer, &topology.peer, RELAY_PEER_SIDE_INTERFACE),
    ] {
        let mac = ns.mac_address(OUTER_INTERFACE).or_fail("MAC address");
        topology
            .relay
            .ip(&[
                "neigh",
                "replace",
                &neighbour.to_string(),
                "lladdr",
                &format_mac(mac),
                "dev",
                interface,
                "nud",
                "permanent",
            ])
            .or_fail("static neighbour");
    }
    let settings = XdpSettings {
        mode: XdpMode::Native,
        interfaces: vec![
            RELAY_CLIENT_SIDE_INTERFACE.to_owned(),
            RELAY_PEER_SIDE_INTERFACE.to_owned(),
        ],
        max_allocations: 16,
        max_permissions_per_allocation: 10,
        max_channels_per_allocation: 10,
        trace: false,
    };
    let relay = topology
        .relay
        .run_inside(|| XdpRelay::attach(&settings))
        .or_fail("attach XDP");
    let _client_side =
        StubXdp::attach(&topology.client, OUTER_INTERFACE, StubAction::Pass).or_fail("client side");
    let _peer_side =
        StubXdp::attach(&topology.peer, OUTER_INTERFACE, StubAction::Pass).or_fail("peer side");

    let client = bind(&topology.client, SocketAddr::new(plan.client, 0));
    let peer = bind(&topology.peer, SocketAddr::new(plan.peer, 0));
    let other_peer = bind(&topology.peer, SocketAddr::new(plan.peer, 0));
    let listener = SocketAddr::new(plan.listener, LISTENER_PORT);
    let relayed = SocketAddr::new(plan.relayed, RELAY_PORT);
    let flow = ClientFlow::udp(client.local_addr().expect("addr"), listener);
    let expires_at = Instant::now() + Duration::from_secs(60);
    let mut fast_path = FastPath::of_relay(&relay).or_fail("datapath");
    let peer_ip = plan.peer;
    let peer_address = peer.local_addr().expect("addr");
    fast_path
        .allocation_with_channel(flow, relayed, peer_address, CHANNEL, expires_at)
        .expect("allocation, permission and channel");

    let mut buffer = [0u8; 2048];
    // Client → peer: ChannelData (odd length, padded).
    let mut message = CHANNEL.to_be_bytes().to_vec();
    message.extend_from_slice(&5u16.to_be_bytes());
    message.extend_from_slice(b"hello\0\0\0");
    client.send_to(&message, listener).expect("send");
    let received = peer.recv_from(&mut buffer);
    let (len, from) = received.unwrap_or_else(|error| {
        panic!(
            "the peer receives the relayed data: {error}; relay saw {:?}",
            relay_saw(&relay)
        )
    });
    assert_eq!((&buffer[..len], from), (&b"hello"[..], relayed));

    // Peer → client on the channel.
    peer.send_to(b"reply!", relayed).expect("send");
    let (len, from) = client.recv_from(&mut buffer).unwrap_or_else(|error| {
        panic!(
            "the client receives ChannelData: {error}; relay saw {:?}",
            relay_saw(&relay)
        )
    });
    assert_eq!(from, listener);
    assert_eq!(
        &buffer[..len],
        &[0x40, 0x00, 0x00, 0x06, b'r', b'e', b'p', b'l', b'y', b'!']
    );

    // Another port of the permitted peer: a Data indication.
    other_peer
        .send_to(b"via indication", relayed)
        .expect("send");
    let (len, from) = client.recv_from(&mut buffer).unwrap_or_else(|error| {
        panic!(
            "the client receives a Data indication: {error}; relay saw {:?}",
            relay_saw(&relay)
        )
    });
    assert_eq!(from, listener);
    let message = &buffer[..len];
    assert_eq!(&message[..2], &[0x00, 0x17], "Data indication");
    assert_eq!(&message[4..8], &COOKIE);
    let address_len = if peer_ip.is_ipv4() { 4 } else { 16 };
    assert_eq!(
        &message[20..24],
        &[0x00, 0x12, 0x00, 4 + address_len as u8],
        "XOR-PEER-ADDRESS"
    );
    let other_port = other_peer.local_addr().expect("addr").port();
    assert_eq!(
        u16::from_be_bytes([message[26], message[27]]) ^ 0x2112,
        other_port
    );
    // The XOR key: magic cookie, then the transaction id (IPv6).
    let key = &message[4..20];
    let address: Vec<u8> = message[28..28 + address_len]
        .iter()
        .zip(key)
        .map(|(a, k)| a ^ k)
        .collect();
    let expected: Vec<u8> = match peer_ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    assert_eq!(address, expected);
    let data = 28 + address_len;
    assert_eq!(&message[data..data + 4], &[0x00, 0x13, 0x00, 14], "DATA");
    assert_eq!(&message[data + 4..data + 18], b"via indication");
    assert_eq!(message.len(), data + 20, "DATA padded to a multiple of 4");

    let counters = relay.counters().expect("counters");
    assert_eq!(counters.get(Outcome::RelayedChannelDataToPeer).packets, 1);
    assert_eq!(counters.get(Outcome::RelayedChannelDataToClient).packets, 1);
    assert_eq!(
        counters.get(Outcome::RelayedDataIndicationToClient).packets,
        1
    );
    let traffic = fast_path.relayed_traffic(relayed);
    assert_eq!(
        (traffic.to_peer_bytes, traffic.to_client_bytes),
        (5, 6 + 14)
    );
}

#[test]
fn relays_ipv4_both_directions_through_native_xdp() {
    if privileged("relays_ipv4_both_directions_through_native_xdp") {
        relays_both_directions(&V4);
    }
}

#[test]
fn relays_ipv6_both_directions_through_native_xdp() {
    if privileged("relays_ipv6_both_directions_through_native_xdp") {
        relays_both_directions(&V6);
    }
}
