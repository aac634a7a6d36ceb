//! Entry expiry as time passes (RFC 8656 §9: a permission lasts 300 s unless refreshed):
//! entries installed with a short lifetime relay while valid and stop relaying once the
//! XDP program's clock (`bpf_ktime_get_ns`) passes the expiry the datapath converted from
//! an `Instant`. The end-to-end tests cannot wait out the 300 s a daemon gives a
//! permission; this runs the real program under BPF_PROG_TEST_RUN in a [`Testbed`].

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::testbed::{
    Ingress, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, CLIENT_V4, LISTENER_V4, PEER_MAC, PEER_SIDE_MAC,
    PEER_V4, RELAYED_V4,
};
use super::Outcome;
use crate::protocol::datapath::{AllocationEntry, ClientFlow, Datapath as _, PermissionEntry};

const CLIENT_PORT: u16 = 40_000;
const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const PEER_PORT: u16 = 60_000;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Root is needed (namespace, BPF_PROG_TEST_RUN); without it the test is skipped, unless
/// CI=true, where a skip is a failure.
fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test} needs root; CI=true forbids skipping it"
    );
    eprintln!("skipping {test}: needs root");
    false
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame with complete checksums.
fn ipv4_frame(
    macs: ([u8; 6], [u8; 6]),
    from: SocketAddr,
    to: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let (IpAddr::V4(source), IpAddr::V4(destination)) = (from.ip(), to.ip()) else {
        panic!("IPv4 addresses only");
    };
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&to.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let udp_checksum = match internet_checksum(&pseudo) {
        0 => 0xFFFF,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&udp_checksum.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&source.octets());
    ip.extend_from_slice(&destination.octets());
    let ip_checksum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
    let (source_mac, destination_mac) = macs;
    let mut frame = Vec::new();
    frame.extend_from_slice(&destination_mac);
    frame.extend_from_slice(&source_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    frame
}

/// A Send indication (RFC 8656 §11.1): XOR-PEER-ADDRESS and DATA only.
fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let IpAddr::V4(peer_ip) = peer.ip() else {
        panic!("IPv4 peers only");
    };
    let mut attributes = Vec::new();
    attributes.extend_from_slice(&[0x00, 0x12, 0, 8, 0, 0x01]);
    attributes.extend_from_slice(&(peer.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    attributes.extend_from_slice(&(u32::from(peer_ip) ^ MAGIC_COOKIE).to_be_bytes());
    attributes.extend_from_slice(&[0x00, 0x13]);
    attributes.extend_from_slice(&(data.len() as u16).to_be_bytes());
    attributes.extend_from_slice(data);
    attributes.resize(attributes.len().next_multiple_of(4), 0);
    let mut message = vec![0x00, 0x16];
    message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    message.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    message.extend_from_slice(&[7; 12]);
    message.extend_from_slice(&attributes);
    message
}

#[test]
fn permissions_stop_relaying_once_they_expire() {
    if !privileged("permissions_stop_relaying_once_they_expire") {
        return;
    }
    let testbed = Testbed::new(16).expect("testbed");
    let mut datapath = testbed.datapath().expect("datapath");
    let flow = ClientFlow {
        client: SocketAddr::new(CLIENT_V4.into(), CLIENT_PORT),
        listener: SocketAddr::new(LISTENER_V4.into(), LISTENER_PORT),
    };
    let relay = SocketAddr::new(RELAYED_V4.into(), RELAY_PORT);
    let peer = SocketAddr::new(PEER_V4.into(), PEER_PORT);
    let installed_at = Instant::now();
    let permission_expires_at = installed_at + Duration::from_millis(1500);
    datapath
        .install_allocation(AllocationEntry {
            flow,
            relay,
            expires_at: installed_at + Duration::from_secs(60),
        })
        .expect("allocation");
    datapath
        .install_permission(PermissionEntry {
            flow,
            relay,
            peer_ip: peer.ip(),
            expires_at: permission_expires_at,
        })
        .expect("permission");

    let from_peer = ipv4_frame((PEER_MAC, PEER_SIDE_MAC), peer, relay, b"peer data");
    let from_client = ipv4_frame(
        (CLIENT_MAC, CLIENT_SIDE_MAC),
        flow.client,
        flow.listener,
        &send_indication(peer, b"client data"),
    );
    let count = |outcome: Outcome| testbed.counters().expect("counters").get(outcome).packets;

    // Valid: peer data becomes a Data indication to the client, the Send indication's
    // data goes to the peer (both on the other interface: XDP_REDIRECT).
    let to_client = testbed.run(&from_peer, Ingress::PeerSide).expect("run");
    let to_peer = testbed.run(&from_client, Ingress::ClientSide).expect("run");
    assert!(
        Instant::now() < permission_expires_at,
        "the host was too slow to check the valid permission in time"
    );
    assert_eq!(
        (to_client.action, to_peer.action),
        (XDP_REDIRECT, XDP_REDIRECT)
    );
    assert_eq!(count(Outcome::RelayedDataIndicationToClient), 1);
    assert_eq!(count(Outcome::RelayedSendToPeer), 1);

    std::thread::sleep(
        permission_expires_at.saturating_duration_since(Instant::now())
            + Duration::from_millis(200),
    );

    // Expired: peer data is discarded (RFC 8656 §9); the Send indication goes to
    // userspace, whose own timer has removed the permission too.
    let from_peer_late = testbed.run(&from_peer, Ingress::PeerSide).expect("run");
    let from_client_late = testbed.run(&from_client, Ingress::ClientSide).expect("run");
    assert_eq!(
        (from_peer_late.action, from_client_late.action),
        (XDP_DROP, XDP_PASS)
    );
    assert_eq!(
        from_client_late.frame, from_client,
        "passed frames are untouched"
    );
    assert_eq!(count(Outcome::DropNoPermission), 1);
    assert_eq!(count(Outcome::PassExpired), 1);
    assert_eq!(count(Outcome::RelayedDataIndicationToClient), 1);
    assert_eq!(count(Outcome::RelayedSendToPeer), 1);
}
