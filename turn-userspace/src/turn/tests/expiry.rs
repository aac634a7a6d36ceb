//! Lifetimes and timers (RFC 8656 §7–§9, §12).

use std::time::Duration;

use crate::turn::Command;

use super::*;

const CLIENT: &str = "198.18.1.50:40000";
const PEER: &str = "198.18.2.20:5000";

#[test]
fn permissions_channels_and_allocations_expire_and_leave_the_datapath() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    assert!(harness
        .server
        .poll_timeout()
        .is_some_and(|deadline| deadline > harness.now.instant));

    // At 301 s the permission is gone: no relaying either way, channel still bound.
    harness.advance(Duration::from_secs(301));
    assert!(harness.server.datapath().permissions.is_empty());
    let mut out = Vec::new();
    assert!(harness
        .server
        .handle_peer_datagram(harness.now.instant, relay, peer, b"x", &mut out)
        .is_none());
    assert_eq!(harness.server.stats().channels, 1);

    // Keep the allocation alive, then let the channel run out at 600 s.
    harness.nonces.clear(); // the first nonce went stale after 600 s
    let (response, _) = harness.refresh(client, Some(3600));
    assert_success(&response);
    harness.advance(Duration::from_secs(300));
    assert!(harness.server.datapath().channels.is_empty());
    assert_eq!(harness.server.stats().channels, 0);
    assert_eq!(harness.server.stats().allocations, 1);

    // The allocation expires at its (refreshed) lifetime and asks IO to close the socket.
    harness.advance(Duration::from_secs(3300));
    assert!(harness.server.datapath().allocations.is_empty());
    assert_eq!(
        harness.server.poll_command(),
        Some(Command::CloseRelay { relay })
    );
    assert_eq!(harness.server.stats().allocations, 0);
}

#[test]
fn refreshing_a_permission_extends_it_and_its_channels() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    harness.channel_bind(client, 0x4000, peer);
    harness.advance(Duration::from_secs(200));
    assert_success(&harness.create_permission(client, &[peer]));
    let expected = harness.now.instant + Duration::from_secs(300);
    assert_eq!(
        harness.server.datapath().permissions[&(relay, peer.ip())].expires_at,
        expected
    );
    assert_eq!(
        harness.server.datapath().channels[&(relay, 0x4000)].expires_at,
        expected
    );
    // The superseded 300 s deadline passes without removing anything.
    harness.advance(Duration::from_secs(150));
    assert_eq!(harness.server.stats().permissions, 1);
    let mut out = Vec::new();
    assert!(harness
        .server
        .handle_peer_datagram(harness.now.instant, relay, peer, b"x", &mut out)
        .is_some());
}

#[test]
fn thousands_of_allocations_expire_together() {
    let mut harness = Harness::new();
    for index in 0..2000u32 {
        let client = flow(&format!(
            "198.18.{}.{}:{}",
            10 + index / 250,
            index % 250 + 1,
            30000 + index
        ));
        harness.allocate(client);
    }
    assert_eq!(harness.server.stats().allocations, 2000);
    harness.advance(Duration::from_secs(599));
    assert_eq!(harness.server.stats().allocations, 2000);
    harness.advance(Duration::from_secs(2));
    assert_eq!(harness.server.stats().allocations, 0);
    assert!(harness.server.datapath().allocations.is_empty());
    let closed = std::iter::from_fn(|| harness.server.poll_command()).count();
    assert_eq!(closed, 2000);
}
