//! Entry expiry as time passes (RFC 8656 §9: a permission lasts 300 s unless refreshed):
//! entries installed with a short lifetime relay while valid and stop relaying once the
//! XDP program's clock (`bpf_ktime_get_ns`) passes the expiry the datapath converted from
//! an `Instant`. The end-to-end tests cannot wait out the 300 s a daemon gives a
//! permission; this runs the real program under BPF_PROG_TEST_RUN in a [`Testbed`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn_relay::bpf::Outcome;
use turn_testkit::fast_path::Ipv4Flow;
use turn_testkit::frames::UdpFrame;
use turn_testkit::stun_client::send_indication;
use turn_testkit::testbed::{
    Ingress, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, PEER_MAC, PEER_SIDE_MAC, XDP_DROP, XDP_PASS,
    XDP_REDIRECT,
};
use turn_testkit::{privileged, OrFail};

/// An Ethernet/IPv4/UDP frame with complete checksums.
fn frame(macs: ([u8; 6], [u8; 6]), from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    UdpFrame::between(macs, from, to, payload).build()
}

#[test]
fn permissions_stop_relaying_once_they_expire() {
    if !privileged("permissions_stop_relaying_once_they_expire") {
        return;
    }
    let testbed = Testbed::new(16).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    let Ipv4Flow { flow, relay, peer } = Ipv4Flow::new();
    let installed_at = Instant::now();
    let permission_expires_at = installed_at + Duration::from_millis(1500);
    fast_path
        .allocation(flow, relay, installed_at + Duration::from_secs(60))
        .expect("allocation");
    fast_path
        .permission(flow, relay, peer.ip(), permission_expires_at)
        .expect("permission");

    let from_peer = frame((PEER_MAC, PEER_SIDE_MAC), peer, relay, b"peer data");
    let from_client = frame(
        (CLIENT_MAC, CLIENT_SIDE_MAC),
        flow.client,
        flow.listener,
        &send_indication([7; 12], peer, b"client data", false),
    );
    let count = |outcome: Outcome| testbed.count(outcome).or_fail("counters");

    // Valid: peer data becomes a Data indication to the client, the Send indication's
    // data goes to the peer (both on the other interface: XDP_REDIRECT).
    let to_client = testbed.run(&from_peer, Ingress::PeerSide).or_fail("run");
    let to_peer = testbed
        .run(&from_client, Ingress::ClientSide)
        .or_fail("run");
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
    let from_peer_late = testbed.run(&from_peer, Ingress::PeerSide).or_fail("run");
    let from_client_late = testbed
        .run(&from_client, Ingress::ClientSide)
        .or_fail("run");
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
