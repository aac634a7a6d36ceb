//! Which peers a client may reach (RFC 8656 §9.1, §12.1, §21): the address family, the
//! peer policy, and that the fast path is only ever given the address the core checked.

use crate::protocol::datapath::{InMemoryDatapath, PeerPortRange};

use super::*;

const CLIENT: &str = "198.18.1.80:40000";

/// Allocates an IPv6 relay for `client`; returns its bind address.
fn allocate_v6(harness: &mut Harness, client: ClientFlow) -> SocketAddr {
    let (response, commands) = harness.allocate_with(client, &[requested_family(2)]);
    assert_success(&response);
    match commands.as_slice() {
        [Command::OpenRelay { relay }] => *relay,
        other => panic!("expected one OpenRelay, got {other:?}"),
    }
}

#[test]
fn ipv4_written_as_ipv6_is_a_family_mismatch_on_ipv6_allocations() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = allocate_v6(&mut harness, client);
    for disguised in ["[::ffff:198.18.2.20]:5000", "[::198.18.2.20]:5000"] {
        let peer = addr(disguised);
        assert_eq!(
            error_code(&harness.create_permission(client, &[peer])),
            443,
            "{disguised}"
        );
        assert_eq!(
            error_code(&harness.channel_bind(client, 0x4000, peer)),
            443,
            "{disguised}"
        );
        // Nothing relays there, and a refused datagram is not counted as relayed.
        let before = harness.server.stats();
        let packet = send_indication(&mut harness, peer, b"forged");
        let (forward, _, _) = harness.send(client, &packet);
        assert!(forward.is_none());
        let after = harness.server.stats();
        assert_eq!(after.to_peer_send, before.to_peer_send);
        assert_eq!(after.dropped_packets, before.dropped_packets + 1);
    }
    assert!(harness.datapath().permissions.is_empty());
    assert!(harness.datapath().channels.is_empty());
    assert_eq!(harness.datapath().allocations[&relay].relay, relay);
}

#[test]
fn a_nat64_peer_stays_ipv6_and_is_judged_by_its_embedded_ipv4() {
    let mut harness = Harness::with_allowed(
        config(),
        InMemoryDatapath::default(),
        &["64:ff9b::/96", "198.18.0.0/15"],
    );
    let client = flow(CLIENT);
    let relay = allocate_v6(&mut harness, client);
    let peer = addr("[64:ff9b::198.18.2.20]:5000");
    assert_success(&harness.create_permission(client, &[peer]));
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    // Stored as written, an IPv6 address, never as the IPv4 address it embeds.
    let permission = harness.datapath().permissions[&(relay, peer.ip())];
    assert_eq!(permission.peer_ip, peer.ip());
    assert_eq!(harness.datapath().channels[&(relay, 0x4000)].peer, peer);
    assert_eq!(harness.datapath().permissions.len(), 1);
    // The embedded address must be allowed too; denied ranges stay denied through NAT64.
    for hidden in [
        "[64:ff9b::10.0.0.1]:5000",
        "[64:ff9b::127.0.0.1]:5000",
        "[64:ff9b::169.254.169.254]:80",
        "[64:ff9b::198.18.99.1]:5000", // the configured deny range
    ] {
        assert_eq!(
            error_code(&harness.create_permission(client, &[addr(hidden)])),
            403,
            "{hidden}"
        );
    }
    // Without allowing NAT64, the prefix itself is denied by default.
    let mut strict = Harness::new();
    allocate_v6(&mut strict, client);
    assert_eq!(error_code(&strict.create_permission(client, &[peer])), 403);
}

#[test]
fn private_and_special_ranges_are_denied_unless_allowed() {
    let mut harness = Harness::with_allowed(
        config(),
        InMemoryDatapath::default(),
        &["198.18.0.0/15", "10.20.0.0/16"],
    );
    let client = flow(CLIENT);
    harness.allocate(client);
    for denied in [
        "10.0.0.1:5000",
        "172.16.0.1:5000",
        "192.168.1.1:5000",
        "100.64.0.1:5000",
        "169.254.169.254:80",
        "127.0.0.1:5000",
        "192.0.2.1:5000",
        "203.0.113.1:5000",
        "240.0.0.1:5000",
    ] {
        assert_eq!(
            error_code(&harness.create_permission(client, &[addr(denied)])),
            403,
            "{denied}"
        );
    }
    assert_success(&harness.create_permission(client, &[addr("10.20.1.1:5000")]));
    assert_success(&harness.create_permission(client, &[addr("8.8.8.8:53")]));
}

#[test]
fn the_relays_own_addresses_are_peers_on_relay_ports_only() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let own = ip(RELAY_V4_BIND);
    // Hairpinning to another allocation is fine …
    assert_success(&harness.channel_bind(client, 0x4000, SocketAddr::new(own, 50000)));
    // … but not to the listener or another local service, also though the tests' policy
    // allows the whole range the relay's address is in.
    for port in [3478, 22, 49151] {
        assert_eq!(
            error_code(&harness.channel_bind(client, 0x4001, SocketAddr::new(own, port))),
            403,
            "port {port}"
        );
    }
    // The permission is per IP (RFC 8656 §9); Send indications to the relay's other
    // ports are still dropped.
    let packet = send_indication(&mut harness, SocketAddr::new(own, 22), b"ssh?");
    let (forward, _, _) = harness.send(client, &packet);
    assert!(forward.is_none());
    let packet = send_indication(&mut harness, SocketAddr::new(own, 50001), b"hairpin");
    let (forward, _, _) = harness.send(client, &packet);
    assert!(forward.is_some());
    // The fast path gets the permissions for the relay's own addresses with the relay
    // port range, which the XDP program checks too, and keeps the allocation: the bind
    // address (the kernel never forwards to a local address) and a public address behind
    // NAT alike, which may be forwarded to through the NAT's hairpin.
    let relay_ports = PeerPortRange::from(config().port_range);
    let public = SocketAddr::new(ip(RELAY_V4_PUBLIC), 50002);
    assert_success(&harness.create_permission(client, &[public]));
    for own in [own, public.ip()] {
        let installed = harness.datapath().permissions.get(&(relay, own)).copied();
        assert_eq!(
            installed.map(|entry| entry.ports),
            Some(relay_ports),
            "{own}"
        );
    }
    assert!(!harness.fast_path.is_userspace_only(relay));
    let packet = send_indication(&mut harness, SocketAddr::new(public.ip(), 3478), b"x");
    let (forward, _, _) = harness.send(client, &packet);
    assert!(forward.is_none());
    // Every other permission covers every port.
    assert_success(&harness.create_permission(client, &[addr("198.18.2.20:5000")]));
    let other = harness
        .datapath()
        .permissions
        .get(&(relay, ip("198.18.2.20")));
    assert_eq!(other.map(|entry| entry.ports), Some(PeerPortRange::ALL));
}
