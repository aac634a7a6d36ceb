//! The fast path end to end on real interfaces, IPv4 and IPv6: a client namespace, a
//! relay namespace with the XDP program attached in native mode to both of its veths,
//! and a peer namespace. ChannelData, Data indications and peer replies must cross the
//! relay namespace, which has no socket on the listening or relayed address: only the
//! XDP program can deliver them, and the receivers' kernels check every checksum.
//!
//! Frames XDP_TX'd or redirected into a veth are dropped unless the receiving end runs
//! an XDP program too, so the client and peer ends get one (the same program; with empty
//! maps it passes everything).

mod xdp_support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use turn_relay::bpf::{Outcome, XdpMode, XdpRelay, XdpSettings};
use turn_relay::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath as _, PermissionEntry,
};
use xdp_support::{in_netns, ip_in, privileged, run, unique_name, NetNs};

const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const CHANNEL: u16 = 0x4000;
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Addresses of one family: client side (client, listener) and peer side (relayed, peer).
struct Plan {
    client: &'static str,
    listener: &'static str,
    relayed: &'static str,
    peer: &'static str,
    prefix_len: u8,
}

const V4: Plan = Plan {
    client: "198.18.1.2",
    listener: "198.18.1.1",
    relayed: "198.18.2.1",
    peer: "198.18.2.2",
    prefix_len: 24,
};
const V6: Plan = Plan {
    client: "2001:db8:11::2",
    listener: "2001:db8:11::1",
    relayed: "2001:db8:12::1",
    peer: "2001:db8:12::2",
    prefix_len: 64,
};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn attach(ns: &NetNs, interfaces: Vec<String>) -> XdpRelay {
    let settings = XdpSettings {
        mode: XdpMode::Native,
        interfaces,
        max_allocations: 16,
    };
    in_netns(&ns.name, move || XdpRelay::attach(&settings)).expect("attach XDP")
}

fn mac_of(ns: &NetNs, interface: &str) -> String {
    let link = ip_in(&ns.name, &["-o", "link", "show", interface]);
    link.split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .expect("interface has a MAC")
        .to_string()
}

fn bind(ns: &NetNs, address: SocketAddr) -> UdpSocket {
    let socket = in_netns(&ns.name, move || UdpSocket::bind(address).expect("bind"));
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
    let client_ns = NetNs::new("xlc");
    let relay_ns = NetNs::new("xlr");
    let peer_ns = NetNs::new("xlp");
    let (c0, rc, rp, p0) = (
        unique_name("lc"),
        unique_name("lrc"),
        unique_name("lrp"),
        unique_name("lp"),
    );
    ip_in(
        &client_ns.name,
        &[
            "link",
            "add",
            &c0,
            "type",
            "veth",
            "peer",
            "name",
            &rc,
            "netns",
            &relay_ns.name,
        ],
    );
    ip_in(
        &peer_ns.name,
        &[
            "link",
            "add",
            &p0,
            "type",
            "veth",
            "peer",
            "name",
            &rp,
            "netns",
            &relay_ns.name,
        ],
    );
    for (ns, interface, address) in [
        (&client_ns, &c0, plan.client),
        (&relay_ns, &rc, plan.listener),
        (&relay_ns, &rp, plan.relayed),
        (&peer_ns, &p0, plan.peer),
    ] {
        let cidr = format!("{address}/{}", plan.prefix_len);
        ip_in(&ns.name, &["addr", "add", &cidr, "dev", interface, "nodad"]);
        ip_in(&ns.name, &["link", "set", interface, "up"]);
    }
    // veth offloads UDP checksums: a sender's frame would reach XDP with only the
    // pseudo-header sum in it. Real NICs deliver complete checksums; so do these then.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &client_ns.name,
            "ethtool",
            "-K",
            &c0,
            "tx",
            "off",
        ],
    );
    run(
        "ip",
        &[
            "netns",
            "exec",
            &peer_ns.name,
            "ethtool",
            "-K",
            &p0,
            "tx",
            "off",
        ],
    );
    // bpf_fib_lookup needs forwarding on the ingress interfaces and resolved neighbours.
    for key in [
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
    ] {
        run(
            "ip",
            &["netns", "exec", &relay_ns.name, "sysctl", "-qw", key],
        );
    }
    let client_mac = mac_of(&client_ns, &c0);
    let peer_mac = mac_of(&peer_ns, &p0);
    ip_in(
        &relay_ns.name,
        &[
            "neigh",
            "replace",
            plan.client,
            "lladdr",
            &client_mac,
            "dev",
            &rc,
            "nud",
            "permanent",
        ],
    );
    ip_in(
        &relay_ns.name,
        &[
            "neigh",
            "replace",
            plan.peer,
            "lladdr",
            &peer_mac,
            "dev",
            &rp,
            "nud",
            "permanent",
        ],
    );

    let relay = attach(&relay_ns, vec![rc.clone(), rp.clone()]);
    let _client_side = attach(&client_ns, vec![c0.clone()]);
    let _peer_side = attach(&peer_ns, vec![p0.clone()]);

    let client = bind(&client_ns, SocketAddr::new(ip(plan.client), 0));
    let peer = bind(&peer_ns, SocketAddr::new(ip(plan.peer), 0));
    let other_peer = bind(&peer_ns, SocketAddr::new(ip(plan.peer), 0));
    let listener = SocketAddr::new(ip(plan.listener), LISTENER_PORT);
    let relayed = SocketAddr::new(ip(plan.relayed), RELAY_PORT);
    let flow = ClientFlow {
        client: client.local_addr().expect("addr"),
        listener,
    };
    let expires_at = Instant::now() + Duration::from_secs(60);
    let mut datapath = relay.datapath().expect("datapath");
    datapath
        .install_allocation(AllocationEntry {
            flow,
            relay: relayed,
            expires_at,
        })
        .expect("allocation");
    let peer_ip = ip(plan.peer);
    datapath
        .install_permission(PermissionEntry {
            flow,
            relay: relayed,
            peer_ip,
            expires_at,
        })
        .expect("permission");
    let peer_address = peer.local_addr().expect("addr");
    datapath
        .install_channel(ChannelEntry {
            flow,
            relay: relayed,
            peer: peer_address,
            number: CHANNEL,
            expires_at,
        })
        .expect("channel");

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
    let traffic = datapath.relayed_traffic(relayed);
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
