//! The XDP program's port filter (`PORT_FILTER`, written by the datapath the daemon and
//! this [`Testbed`] share): frames that look like ChannelData to a port no entry has skip
//! the lookups there and still go to userspace untouched, with the outcome the lookups'
//! misses gave; the same frames to the entries' ports are relayed as before.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn_relay::bpf::Outcome;
use turn_testkit::fast_path::Ipv4Flow;
use turn_testkit::frames::UdpFrame;
use turn_testkit::stun_client::channel_data;
use turn_testkit::testbed::{
    Ingress, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, PEER_MAC, PEER_SIDE_MAC, XDP_PASS, XDP_REDIRECT,
};
use turn_testkit::{privileged, OrFail};

const CHANNEL: u16 = 0x4000;

/// An Ethernet/IPv4/UDP frame with complete checksums.
fn frame(macs: ([u8; 6], [u8; 6]), from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    UdpFrame::between(macs, from, to, payload).build()
}

#[test]
fn frames_to_ports_without_entries_still_pass_to_userspace() {
    if !privileged("frames_to_ports_without_entries_still_pass_to_userspace") {
        return;
    }
    let testbed = Testbed::new(16).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    let Ipv4Flow { flow, relay, peer } = Ipv4Flow::new();
    fast_path
        .allocation_with_channel(
            flow,
            relay,
            peer,
            CHANNEL,
            Instant::now() + Duration::from_secs(60),
        )
        .expect("allocation with a channel");
    let client_channel_data = channel_data(CHANNEL, b"client data");
    // A peer's datagram whose payload looks like ChannelData (first bits 01).
    let peer_payload = channel_data(CHANNEL, b"peer data");
    let from_client = |to: SocketAddr| {
        frame(
            (CLIENT_MAC, CLIENT_SIDE_MAC),
            flow.client,
            to,
            &client_channel_data,
        )
    };
    let from_peer = |to: SocketAddr| frame((PEER_MAC, PEER_SIDE_MAC), peer, to, &peer_payload);
    let count = |outcome: Outcome| testbed.count(outcome).or_fail("counters");

    // To ports no entry has: the client's ChannelData to a non-listening port of the
    // listener's IP, the peer's to a non-relayed port of the relayed IP and to the
    // listener port on the relayed IP (a client-side port, no peer-side one).
    let passed = [
        (
            from_client(SocketAddr::new(flow.listener.ip(), 53)),
            Ingress::ClientSide,
        ),
        (
            from_peer(SocketAddr::new(relay.ip(), Ipv4Flow::RELAY_PORT + 1)),
            Ingress::PeerSide,
        ),
        (
            from_peer(SocketAddr::new(relay.ip(), Ipv4Flow::LISTENER_PORT)),
            Ingress::PeerSide,
        ),
    ];
    for (sent, ingress) in &passed {
        let result = testbed.run(sent, *ingress).or_fail("run");
        assert_eq!(result.action, XDP_PASS, "{ingress:?}");
        assert_eq!(&result.frame, sent, "passed frames are untouched");
    }
    assert_eq!(count(Outcome::PassUnknownFlow), 3);

    // To the entries' ports: relayed both ways, as without the filter.
    let to_peer = testbed
        .run(&from_client(flow.listener), Ingress::ClientSide)
        .or_fail("run");
    let to_client = testbed
        .run(&from_peer(relay), Ingress::PeerSide)
        .or_fail("run");
    assert_eq!(
        (to_peer.action, to_client.action),
        (XDP_REDIRECT, XDP_REDIRECT)
    );
    assert_eq!(count(Outcome::RelayedChannelDataToPeer), 1);
    assert_eq!(count(Outcome::RelayedChannelDataToClient), 1);
    assert_eq!(count(Outcome::PassUnknownFlow), 3);
}
