//! Clients over TCP and TLS (RFC 8656 §3.1): the flow is the connection, the relayed
//! transport is UDP, nothing enters the fast path, and closing the connection ends the
//! allocation.

use crate::protocol::datapath::FastPathCommand;
use crate::protocol::stun::channel_data::ChannelData;
use crate::protocol::turn::{Payload, TurnError};

use super::*;

const CLIENT: &str = "198.18.1.80:41000";
const PEER: &str = "198.18.2.20:5000";

/// Every fast-path command the server queued since the last drain.
fn queued(harness: &mut Harness) -> Vec<FastPathCommand> {
    std::iter::from_fn(|| harness.server.poll_fast_path()).collect()
}

#[test]
fn allocate_over_a_stream_gets_a_udp_relayed_address() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut harness = Harness::new();
        let client = stream_flow(CLIENT, transport);
        let (response, commands) = harness.allocate_with(client, &[]);
        assert_success(&response);
        let message = parse(&response);
        assert_eq!(
            message.xor_mapped_address().expect("valid"),
            Some(addr(CLIENT))
        );
        let relayed = message
            .xor_relayed_address()
            .expect("valid")
            .expect("XOR-RELAYED-ADDRESS");
        assert_eq!(relayed.ip(), ip(RELAY_V4_PUBLIC));
        assert!(matches!(commands.as_slice(), [Command::OpenRelay { .. }]));
        let stats = harness.server.stats();
        assert_eq!(stats.transport(transport).allocations, 1);
        assert_eq!(stats.transport(Transport::Udp).allocations, 0);
    }
}

#[test]
fn only_udp_may_be_relayed_whatever_the_client_transport() {
    let mut harness = Harness::new();
    let client = stream_flow(CLIENT, Transport::Tcp);
    // REQUESTED-TRANSPORT TCP (6): RFC 6062 TCP allocations are not offered.
    let (response, commands) = harness.request(
        client,
        Method::ALLOCATE,
        &[raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])],
        Credentials::Md5("alice"),
    );
    assert_eq!(
        error_code(&response),
        TurnError::UnsupportedTransportProtocol.code()
    );
    assert!(commands.is_empty());
}

#[test]
fn responses_answer_on_the_connection_and_are_not_cached() {
    let mut harness = Harness::new();
    let client = stream_flow(CLIENT, Transport::Tls);
    let request = harness.signed_allocate(client, "alice");
    let (_, _, transmits) = harness.send(client, &request);
    let [transmit] = transmits.as_slice() else {
        panic!("{transmits:?}")
    };
    assert_eq!(transmit.flow(), client);
    assert_eq!(transmit.transport, Transport::Tls);
    // Over a reliable transport a client never retransmits (RFC 8489 §6.2.2): a second
    // Allocate with the same transaction is a new request, refused as a mismatch.
    assert_eq!(harness.server.cached_responses(), 0);
    let (_, _, transmits) = harness.send(client, &request);
    let [again] = transmits.as_slice() else {
        panic!("{transmits:?}")
    };
    assert_eq!(
        error_code(&again.payload),
        TurnError::AllocationMismatch.code()
    );
}

#[test]
fn stream_allocations_never_enter_the_fast_path() {
    let mut harness = Harness::new();
    let client = stream_flow(CLIENT, Transport::Tcp);
    let peer = addr(PEER);
    let allocate = harness.signed_allocate(client, "alice");
    harness
        .server
        .handle_client_datagram(harness.now, client, &allocate, None);
    let relay = match harness.server.poll_command() {
        Some(Command::OpenRelay { relay }) => relay,
        other => panic!("{other:?}"),
    };
    while harness.server.poll_transmit().is_some() {}
    assert_eq!(queued(&mut harness), []);
    assert_success(&harness.create_permission(client, &[peer]));
    assert_success(&harness.channel_bind(client, 0x4001, peer));
    assert_success(&harness.refresh(client, Some(600)).0);
    let datapath = harness.datapath();
    assert!(
        datapath.allocations.is_empty()
            && datapath.permissions.is_empty()
            && datapath.channels.is_empty(),
        "{datapath:?}"
    );
    // Expiries queue nothing for it either.
    harness.now.instant += Duration::from_secs(301);
    harness.server.handle_timeout(harness.now);
    assert_eq!(queued(&mut harness), []);
    // Its end queues only the (empty) removal that carries its usage line.
    harness
        .server
        .handle_connection_closed(harness.now.instant, client);
    let commands = queued(&mut harness);
    assert!(
        matches!(
            commands.as_slice(),
            [FastPathCommand::RemoveAllocation { flow, relay: removed, usage: Some(_) }]
                if *flow == client && *removed == relay
        ),
        "{commands:?}"
    );
}

#[test]
fn data_over_a_stream_is_relayed_in_userspace_and_counted_per_transport() {
    let mut harness = Harness::new();
    let client = stream_flow(CLIENT, Transport::Tcp);
    let peer = addr(PEER);
    let relay = harness.allocate(client);
    assert_success(&harness.channel_bind(client, 0x4001, peer));

    // Client → peer: out of the relay socket over UDP. A stream carries no TTL.
    let packet = channel_data(0x4001, b"to the peer");
    let forward = harness
        .server
        .handle_client_datagram(harness.now, client, &packet, None);
    let Some(Forward {
        from,
        to,
        transport: Transport::Udp,
        payload: Payload::Input(range),
        hop_limit: None,
    }) = forward
    else {
        panic!("{forward:?}")
    };
    assert_eq!((from, to), (relay, peer));
    assert_eq!(&packet[range], b"to the peer");

    // Peer → client: framed for the connection.
    let mut out = Vec::new();
    let forward = harness.peer_datagram(relay, peer, b"to the client", &mut out);
    assert_eq!(
        forward,
        Some(Forward {
            from: client.listener,
            to: client.client,
            transport: Transport::Tcp,
            payload: Payload::Output,
            hop_limit: None,
        })
    );
    assert_eq!(
        ChannelData::parse(&out),
        Some(ChannelData {
            number: 0x4001,
            data: b"to the client"
        })
    );

    let stats = harness.server.stats();
    let tcp = stats.transport(Transport::Tcp).relayed;
    assert_eq!(
        (
            tcp.to_peer_channel_data.packets,
            tcp.to_client_channel_data.packets
        ),
        (1, 1)
    );
    assert_eq!(
        stats.transport(Transport::Udp).relayed,
        RelayedCounts::default()
    );
    assert_eq!(stats.to_peer_channel_data, tcp.to_peer_channel_data);
}

#[test]
fn a_closed_connection_ends_its_allocation_and_nothing_else() {
    let mut harness = Harness::new();
    let tcp = stream_flow(CLIENT, Transport::Tcp);
    // The same addresses over UDP are another 5-tuple, with an allocation of its own.
    let udp = flow(CLIENT);
    let tcp_relay = harness.allocate(tcp);
    let udp_relay = harness.allocate(udp);
    assert_ne!(tcp_relay, udp_relay);
    assert_eq!(harness.server.stats().allocations, 2);

    harness
        .server
        .handle_connection_closed(harness.now.instant, tcp);
    harness.apply_fast_path();
    assert_eq!(
        harness.server.poll_command(),
        Some(Command::CloseRelay { relay: tcp_relay })
    );
    assert_eq!(harness.server.poll_transmit(), None);
    let stats = harness.server.stats();
    assert_eq!(stats.allocations, 1);
    assert_eq!(stats.transport(Transport::Udp).allocations, 1);
    assert!(harness.datapath().allocations.contains_key(&udp_relay));
    // Peer data for the closed allocation is dropped; a connection without one closes
    // quietly.
    let mut out = Vec::new();
    assert!(harness
        .peer_datagram(tcp_relay, addr(PEER), b"late", &mut out)
        .is_none());
    harness.server.handle_connection_closed(
        harness.now.instant,
        stream_flow("198.18.1.81:1", Transport::Tls),
    );
    assert_eq!(harness.server.poll_command(), None);
}

#[test]
fn unauthenticated_answers_over_a_stream_are_not_rate_limited() {
    let mut harness = Harness::new().with_limits(ServerLimits {
        unauthenticated_answers_per_second: 1,
        unauthenticated_answers_burst: 1,
        ..ServerLimits::default()
    });
    let client = stream_flow(CLIENT, Transport::Tcp);
    let mut answered = 0;
    for _ in 0..10 {
        let allocate = harness.message(Method::ALLOCATE, Class::Request, |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let (_, _, transmits) = harness.send(client, &allocate);
        answered += transmits.len();
    }
    assert_eq!(answered, 10, "a connection's source is not spoofed");
    assert_eq!(harness.server.stats().unauthenticated_answers_dropped, 0);
}
