//! Lifetimes and timers (RFC 8656 §7–§9, §12).

use std::time::Duration;

use crate::protocol::turn::Command;

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
    assert!(harness.datapath().permissions.is_empty());
    let mut out = Vec::new();
    assert!(harness.peer_datagram(relay, peer, b"x", &mut out).is_none());
    assert_eq!(harness.server.stats().channels, 1);

    // Keep the allocation alive, then let the channel run out at 600 s.
    harness.nonces.clear(); // the first nonce went stale after 600 s
    let (response, _) = harness.refresh(client, Some(3600));
    assert_success(&response);
    harness.advance(Duration::from_secs(300));
    assert!(harness.datapath().channels.is_empty());
    assert_eq!(harness.server.stats().channels, 0);
    assert_eq!(harness.server.stats().allocations, 1);

    // The allocation expires at its (refreshed) lifetime and asks IO to close the socket.
    harness.advance(Duration::from_secs(3300));
    assert!(harness.datapath().allocations.is_empty());
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
        harness.datapath().permissions[&(relay, peer.ip())].expires_at,
        expected
    );
    assert_eq!(
        harness.datapath().channels[&(relay, 0x4000)].expires_at,
        expected
    );
    // The superseded 300 s deadline passes without removing anything.
    harness.advance(Duration::from_secs(150));
    assert_eq!(harness.server.stats().permissions, 1);
    let mut out = Vec::new();
    assert!(harness.peer_datagram(relay, peer, b"x", &mut out).is_some());
}

#[test]
fn thousands_of_allocations_expire_together() {
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations_per_user: 0,
        ..config()
    });
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
    assert!(harness.datapath().allocations.is_empty());
    let closed = std::iter::from_fn(|| harness.server.poll_command()).count();
    assert_eq!(closed, 2000);
}

#[test]
fn configured_short_lifetimes_expire_permissions_and_channels_early() {
    let mut harness = Harness::with_config(ServerConfig {
        permission_lifetime: Duration::from_secs(5),
        channel_lifetime: Duration::from_secs(8),
        ..config()
    });
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    assert_eq!(
        harness.datapath().permissions[&(relay, peer.ip())].expires_at,
        harness.now.instant + Duration::from_secs(5)
    );
    assert_eq!(
        harness.datapath().channels[&(relay, 0x4000)].expires_at,
        harness.now.instant + Duration::from_secs(5),
        "the fast path's channel entry ends with its permission"
    );

    harness.advance(Duration::from_secs(4));
    assert_eq!(harness.datapath().permissions.len(), 1);
    harness.advance(Duration::from_secs(2));
    assert!(harness.datapath().permissions.is_empty());
    assert_eq!(harness.server.stats().permissions, 0);
    let mut out = Vec::new();
    assert!(harness.peer_datagram(relay, peer, b"x", &mut out).is_none());

    harness.advance(Duration::from_secs(3));
    assert!(harness.datapath().channels.is_empty());
    assert_eq!(harness.server.stats().channels, 0);
    assert_eq!(harness.server.stats().allocations, 1);
}

#[test]
fn expired_channels_cool_off_for_five_minutes_before_rebinding() {
    let mut harness = Harness::with_config(ServerConfig {
        channel_lifetime: Duration::from_secs(10),
        ..config()
    });
    let client = flow(CLIENT);
    harness.allocate(client);
    let peer = addr(PEER);
    let other_peer = addr("198.18.2.21:5000");
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    harness.advance(Duration::from_secs(11));
    assert_eq!(harness.server.stats().channels, 0, "the binding expired");

    // Cooling off: neither the number nor the peer may be bound to something else…
    assert_eq!(
        error_code(&harness.channel_bind(client, 0x4000, other_peer)),
        400
    );
    assert_eq!(error_code(&harness.channel_bind(client, 0x4001, peer)), 400);
    // …but the same pair may be bound again, which ends its cool-off.
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    assert_eq!(harness.server.stats().channels, 1);

    // The rebound channel expires at 21 s; 5 minutes later (321 s) both are free.
    harness.advance(Duration::from_secs(11));
    assert_eq!(error_code(&harness.channel_bind(client, 0x4001, peer)), 400);
    harness.advance(Duration::from_secs(298));
    assert_eq!(error_code(&harness.channel_bind(client, 0x4001, peer)), 400);
    harness.advance(Duration::from_secs(2));
    assert_success(&harness.channel_bind(client, 0x4001, peer));
    assert_success(&harness.channel_bind(client, 0x4002, other_peer));
}
