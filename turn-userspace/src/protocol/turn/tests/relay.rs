//! Permissions, channels and data relaying (RFC 8656 §9–§12).

use std::time::Duration;

use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::channel_data::ChannelData;
use crate::protocol::stun::{Class, Method};
use crate::protocol::turn::{Forward, Payload};

use super::*;

const CLIENT: &str = "198.18.1.40:40000";
const PEER: &str = "198.18.2.20:5000";
const OTHER_PEER: &str = "198.18.2.21:6000";

/// Asserts that `forward` sends `data`, a range of the input `packet`, along `route`
/// (relay, peer).
fn assert_forwarded_to_peer(
    forward: Option<Forward>,
    packet: &[u8],
    route: (SocketAddr, SocketAddr),
    data: &[u8],
) {
    let Some(Forward {
        from,
        to,
        transport: Transport::Udp,
        payload: Payload::Input(range),
        hop_limit,
    }) = forward
    else {
        panic!("{forward:?}")
    };
    assert_eq!((from, to), route);
    assert_eq!(&packet[range], data);
    assert_eq!(
        hop_limit,
        Some(63),
        "RFC 8656 §14: one less than it arrived with"
    );
}

/// The forward of peer data to `client`, framed in the output buffer.
fn forward_to_client(client: ClientFlow) -> Forward {
    Forward {
        from: client.listener,
        to: client.client,
        transport: client.transport,
        payload: Payload::Output,
        hop_limit: Some(63),
    }
}

#[test]
fn full_flow_in_both_directions() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    let other_peer = addr(OTHER_PEER);

    // Before any permission: Send is dropped silently, peer data is discarded.
    let packet = send_indication(&mut harness, peer, b"early");
    let (forward, _, transmits) = harness.send(client, &packet);
    assert!(forward.is_none() && transmits.is_empty());
    let mut out = Vec::new();
    assert!(harness
        .peer_datagram(relay, peer, b"early", &mut out)
        .is_none());

    // CreatePermission for both peers at once.
    assert_success(&harness.create_permission(client, &[peer, other_peer]));
    let permission = harness.datapath().permissions[&(relay, peer.ip())];
    assert_eq!(
        permission.expires_at,
        harness.now.instant + Duration::from_secs(300)
    );

    // Send indication → forwarded from the relay, payload = DATA inside the input packet.
    let packet = send_indication(&mut harness, peer, b"hello peer");
    let (forward, _, transmits) = harness.send(client, &packet);
    assert!(transmits.is_empty(), "indications are never answered");
    assert_forwarded_to_peer(forward, &packet, (relay, peer), b"hello peer");

    // Peer → client without a channel: a Data indication in `out`.
    let forward = harness.peer_datagram(relay, other_peer, b"hi client", &mut out);
    assert_eq!(forward, Some(forward_to_client(client)));
    let data_indication = parse(&out);
    assert_eq!(
        (data_indication.method(), data_indication.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(
        data_indication.xor_peer_address().unwrap(),
        Some(other_peer)
    );
    assert_eq!(data_indication.data(), Some(&b"hi client"[..]));

    // ChannelBind, then ChannelData both ways.
    assert_success(&harness.channel_bind(client, 0x4001, peer));
    let channel = harness.datapath().channels[&(relay, 0x4001)];
    assert_eq!(channel.peer, peer);
    assert_eq!(
        channel.expires_at,
        harness.now.instant + Duration::from_secs(300),
        "min(channel, permission)"
    );

    let packet = channel_data(0x4001, b"via channel");
    let (forward, _, _) = harness.send(client, &packet);
    assert_forwarded_to_peer(forward, &packet, (relay, peer), b"via channel");

    let forward = harness.peer_datagram(relay, peer, b"back on channel", &mut out);
    assert_eq!(forward, Some(forward_to_client(client)));
    let framed = ChannelData::parse(&out).unwrap();
    assert_eq!(
        (framed.number, framed.data),
        (0x4001, &b"back on channel"[..])
    );

    // A Send indication with an unknown comprehension-required attribute is discarded.
    let packet = send_indication_with(&mut harness, peer, |builder| {
        builder.attribute(0x7FF1, &[]).attribute(attr::DATA, b"x");
    });
    let (forward, _, transmits) = harness.send(client, &packet);
    assert!(forward.is_none() && transmits.is_empty());

    // Unbound channel numbers and peers without permission are dropped.
    let (forward, _, _) = harness.send(client, &channel_data(0x4002, b"x"));
    assert!(forward.is_none());
    let stranger = addr("198.18.2.99:1");
    assert!(harness
        .peer_datagram(relay, stranger, b"x", &mut out)
        .is_none());
    // Unknown relay addresses too.
    assert!(harness
        .peer_datagram(addr("198.18.0.1:1"), peer, b"x", &mut out)
        .is_none());

    let stats = harness.server.stats();
    assert_eq!(
        (stats.allocations, stats.permissions, stats.channels),
        (1, 2, 1)
    );
    assert_eq!(
        (stats.to_peer_send.packets, stats.to_peer_send.bytes),
        (1, 10)
    );
    assert_eq!(
        (
            stats.to_peer_channel_data.packets,
            stats.to_peer_channel_data.bytes
        ),
        (1, 11)
    );
    assert_eq!(
        (
            stats.to_client_data_indication.packets,
            stats.to_client_data_indication.bytes
        ),
        (1, 9)
    );
    assert_eq!(
        (
            stats.to_client_channel_data.packets,
            stats.to_client_channel_data.bytes
        ),
        (1, 15)
    );
    assert_eq!(stats.dropped_packets, 6);
}

#[test]
fn padded_channel_data_is_accepted() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    harness.allocate(client);
    assert_success(&harness.channel_bind(client, 0x7FFF, addr(PEER)));
    let mut packet = channel_data(0x7FFF, b"abcde");
    packet.extend_from_slice(&[0, 0, 0]);
    let (forward, _, _) = harness.send(client, &packet);
    assert_eq!(forward.map(|f| f.payload), Some(Payload::Input(4..9)));
}

#[test]
fn create_permission_is_all_or_nothing_with_403_and_443() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let denied = addr("198.18.99.5:1000");
    let response = harness.create_permission(client, &[addr(PEER), denied]);
    assert_eq!(error_code(&response), 403);
    let response = harness.create_permission(client, &[addr(PEER), addr("127.0.0.1:1")]);
    assert_eq!(error_code(&response), 403, "loopback is denied by default");
    let response = harness.create_permission(client, &[addr(PEER), addr("[2001:db8::20]:5000")]);
    assert_eq!(error_code(&response), 443);
    assert!(harness.datapath().permissions.is_empty());
    let (response, _) = harness.request(
        client,
        Method::CREATE_PERMISSION,
        &[],
        Credentials::Md5("alice"),
    );
    assert_eq!(error_code(&response), 400);
    // The relay's own address is allowed (hairpinning).
    let hairpin = SocketAddr::new(ip(RELAY_V4_BIND), 50000);
    assert_success(&harness.create_permission(client, &[hairpin]));
    assert!(harness
        .datapath()
        .permissions
        .contains_key(&(relay, hairpin.ip())));
}

#[test]
fn channel_bind_rules() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    harness.allocate(client);
    let peer = addr(PEER);
    for number in [0x3FFF, 0x8000, 0xFFFF] {
        assert_eq!(error_code(&harness.channel_bind(client, number, peer)), 400);
    }
    let (response, _) = harness.request(
        client,
        Method::CHANNEL_BIND,
        &[raw(attr::CHANNEL_NUMBER, &channel_number(0x4000))],
        Credentials::Md5("alice"),
    );
    assert_eq!(error_code(&response), 400, "XOR-PEER-ADDRESS is required");

    assert_success(&harness.channel_bind(client, 0x4000, peer));
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    assert_eq!(
        error_code(&harness.channel_bind(client, 0x4000, addr(OTHER_PEER))),
        400
    );
    assert_eq!(error_code(&harness.channel_bind(client, 0x4001, peer)), 400);
    assert_eq!(
        error_code(&harness.channel_bind(client, 0x4002, addr("198.18.99.1:1"))),
        403
    );
    assert_eq!(
        error_code(&harness.channel_bind(client, 0x4002, addr("[2001:db8::20]:1"))),
        443
    );
    // The same IP with another port is another peer transport address: a new channel is fine.
    assert_success(&harness.channel_bind(client, 0x4001, addr("198.18.2.20:5001")));
    assert_eq!(harness.server.stats().channels, 2);
}

#[test]
fn ipv6_relay_relays_ipv6_peers() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, commands) = harness.allocate_with(client, &[requested_family(2)]);
    assert_success(&response);
    let [crate::protocol::turn::Command::OpenRelay { relay }] = commands.as_slice() else {
        panic!()
    };
    let relay = *relay;
    let peer = addr("[2001:db8::20]:5000");
    assert_eq!(
        error_code(&harness.create_permission(client, &[addr(PEER)])),
        443
    );
    assert_success(&harness.create_permission(client, &[peer]));

    let packet = send_indication(&mut harness, peer, b"v6 data");
    let (forward, _, _) = harness.send(client, &packet);
    assert_forwarded_to_peer(forward, &packet, (relay, peer), b"v6 data");

    let mut out = Vec::new();
    harness
        .peer_datagram(relay, peer, b"v6 back", &mut out)
        .unwrap();
    let indication = parse(&out);
    assert_eq!(indication.xor_peer_address().unwrap(), Some(peer));
    assert_eq!(indication.data(), Some(&b"v6 back"[..]));
}

#[test]
fn peer_to_client_reuses_the_output_buffer() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    harness.channel_bind(client, 0x4000, peer);
    let mut out = Vec::with_capacity(4096);
    let capacity = out.capacity();
    let payload = [7u8; 1200];
    for _ in 0..100 {
        harness
            .peer_datagram(relay, peer, &payload, &mut out)
            .unwrap();
        assert_eq!(out.len(), 1204);
    }
    assert_eq!(out.capacity(), capacity);
}

#[test]
fn peer_datagrams_too_large_to_frame_are_dropped() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    harness.create_permission(client, &[peer]);
    let mut out = Vec::new();
    let huge = vec![0u8; 65_520];
    assert!(harness
        .peer_datagram(relay, peer, &huge, &mut out)
        .is_none());
    let largest = vec![0u8; 65_535 - 51];
    harness
        .peer_datagram(relay, peer, &largest, &mut out)
        .unwrap();
    assert_eq!(parse(&out).data().map(<[u8]>::len), Some(largest.len()));
}

/// RFC 8489 §7.3: a Send indication with a valid FINGERPRINT is relayed like any other;
/// one whose FINGERPRINT does not match is not STUN and is dropped (the XDP program
/// passes exactly these up to userspace).
#[test]
fn send_indication_fingerprint_is_checked() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    assert_success(&harness.create_permission(client, &[peer]));

    let mut packet = send_indication_with(&mut harness, peer, |builder| {
        builder
            .attribute(attr::DATA, b"fingerprinted")
            .fingerprint();
    });
    let (forward, _, _) = harness.send(client, &packet);
    assert_forwarded_to_peer(forward, &packet, (relay, peer), b"fingerprinted");

    let last = packet.len() - 1;
    packet[last] ^= 0xFF;
    let dropped_before = harness.server.stats().dropped_packets;
    let (forward, _, transmits) = harness.send(client, &packet);
    assert!(forward.is_none() && transmits.is_empty());
    assert_eq!(harness.server.stats().dropped_packets, dropped_before + 1);
}

/// A request with a wrong FINGERPRINT is not STUN: no answer at all (RFC 8489 §7.3).
#[test]
fn request_with_wrong_fingerprint_gets_no_answer() {
    let mut harness = Harness::new();
    let mut packet = harness.message(Method::BINDING, Class::Request, |builder| {
        builder.fingerprint();
    });
    let last = packet.len() - 1;
    packet[last] ^= 0x01;
    let (forward, commands, transmits) = harness.send(flow(CLIENT), &packet);
    assert!(forward.is_none() && commands.is_empty() && transmits.is_empty());
}

#[test]
fn permissions_and_channels_per_allocation_are_capped_with_508() {
    let mut harness = Harness::new().with_limits(ServerLimits {
        max_permissions_per_allocation: 3,
        max_channels_per_allocation: 2,
        ..ServerLimits::default()
    });
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peers: Vec<SocketAddr> = (1..=4)
        .map(|host| addr(&format!("198.18.2.{host}:5000")))
        .collect();
    // Two new peers and a duplicate: within the cap.
    assert_success(&harness.create_permission(client, &[peers[0], peers[1], peers[0]]));
    // One more fits; two more do not, and nothing of that request is installed.
    assert_eq!(
        error_code(&harness.create_permission(client, &[peers[2], peers[3]])),
        508
    );
    assert_eq!(harness.server.stats().permissions, 2);
    assert_success(&harness.create_permission(client, &[peers[2]]));
    // At the cap, refreshing what exists still works.
    assert_success(&harness.create_permission(client, &[peers[0], peers[1], peers[2]]));
    assert_eq!(
        error_code(&harness.create_permission(client, &[peers[3]])),
        508
    );
    // Channels: to permitted peers up to the channel cap; a channel to a new peer
    // would also exceed the permission cap.
    assert_success(&harness.channel_bind(client, 0x4000, peers[0]));
    assert_success(&harness.channel_bind(client, 0x4001, peers[1]));
    assert_success(&harness.channel_bind(client, 0x4001, peers[1]));
    assert_eq!(
        error_code(&harness.channel_bind(client, 0x4002, peers[2])),
        508
    );
    assert_eq!(harness.server.stats().channels, 2);
    assert_eq!(harness.datapath().permissions.len(), 3);
    assert_eq!(harness.datapath().channels.len(), 2);
    assert!(harness
        .datapath()
        .permissions
        .keys()
        .all(|(r, _)| *r == relay));
}

#[test]
fn create_permission_work_is_bounded_and_duplicates_cost_nothing() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    harness.allocate(client);
    let peer = addr(PEER);
    let armed = harness.server.armed_timers();
    // 16 copies of one peer: one permission, one deadline, one fast-path entry.
    assert_success(&harness.create_permission(client, &[peer; 16]));
    assert_eq!(harness.server.stats().permissions, 1);
    assert_eq!(harness.datapath().permissions.len(), 1);
    let with_permission = harness.server.armed_timers();
    assert_eq!(
        with_permission,
        armed + 2,
        "the permission and the cached response"
    );
    // Refreshing re-arms the same deadline instead of adding one.
    for _ in 0..50 {
        assert_success(&harness.create_permission(client, &[peer, peer]));
    }
    assert_eq!(
        harness.server.armed_timers(),
        with_permission + 50,
        "only the 50 cached responses add deadlines"
    );
    // More attributes than a request may carry: 400 before any of them is looked at.
    let too_many = vec![peer; 17];
    assert_eq!(
        error_code(&harness.create_permission(client, &too_many)),
        400
    );
    // Deleting the allocation disarms its deadlines.
    let before_delete = harness.server.armed_timers();
    let (response, _) = harness.refresh(client, Some(0));
    assert_success(&response);
    assert_eq!(harness.server.armed_timers(), before_delete + 1 - 2);
}

#[test]
fn dont_fragment_is_refused_as_rfc_8656_says_for_servers_without_df() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    // RFC 8656 §7.2: 420 with DONT-FRAGMENT in UNKNOWN-ATTRIBUTES; nothing allocated.
    let (response, commands) = harness.allocate_with(client, &[raw(attr::DONT_FRAGMENT, &[])]);
    assert_eq!(error_code(&response), 420);
    let unknown: Vec<u16> = parse(&response)
        .unknown_attributes()
        .expect("valid")
        .expect("UNKNOWN-ATTRIBUTES")
        .collect();
    assert_eq!(unknown, [attr::DONT_FRAGMENT]);
    assert!(commands.is_empty());
    // A Send indication with DONT-FRAGMENT is discarded (RFC 8656 §11.2).
    harness.allocate(client);
    let peer = addr(PEER);
    assert_success(&harness.create_permission(client, &[peer]));
    let packet = send_indication_with(&mut harness, peer, |builder| {
        builder
            .attribute(attr::DONT_FRAGMENT, &[])
            .attribute(attr::DATA, b"df");
    });
    let (forward, _, _) = harness.send(client, &packet);
    assert!(forward.is_none());
    let packet = send_indication(&mut harness, peer, b"no df");
    assert!(harness.send(client, &packet).0.is_some());
}

#[test]
fn relayed_datagrams_leave_with_one_hop_less_and_never_with_zero() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr(PEER);
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    let mut out = Vec::new();
    for (incoming, outgoing) in [
        (Some(255), Some(Some(254))),
        (Some(2), Some(Some(1))),
        (Some(1), None),
        (Some(0), None),
        (None, Some(None)),
    ] {
        harness.hop_limit = incoming;
        let dropped = harness.server.stats().dropped_packets;
        let to_peer = harness.send(client, &channel_data(0x4000, b"x")).0;
        let indication = send_indication(&mut harness, peer, b"x");
        let sent = harness.send(client, &indication).0;
        let to_client = harness.peer_datagram(relay, peer, b"x", &mut out);
        for forward in [&to_peer, &sent, &to_client] {
            assert_eq!(
                forward.as_ref().map(|f| f.hop_limit),
                outgoing,
                "{incoming:?}"
            );
        }
        let expected_drops = if outgoing.is_none() { 3 } else { 0 };
        assert_eq!(
            harness.server.stats().dropped_packets,
            dropped + expected_drops
        );
    }
}
