//! Binding, Allocate and Refresh (RFC 8489 §3, RFC 8656 §7–§8).

use std::time::Duration;

use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath, DatapathError, PermissionEntry,
    RelayedTraffic,
};
use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::{AddressFamily, Class, MessageBuilder, Method, PasswordAlgorithm};
use crate::protocol::turn::{Command, ServerConfig, ServerLimits};

use super::*;

const CLIENT: &str = "198.18.1.10:40000";
const OTHER_CLIENT: &str = "198.18.1.11:40000";

#[test]
fn binding_answers_with_xor_mapped_address_and_echoes_fingerprint() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let buf = harness.message(Method::BINDING, Class::Request, |builder| {
        builder.fingerprint();
    });
    let (forward, commands, transmits) = harness.send(client, &buf);
    assert!(forward.is_none() && commands.is_empty());
    let response = parse(&transmits[0].payload);
    assert_eq!(response.class(), Class::SuccessResponse);
    assert_eq!(response.xor_mapped_address().unwrap(), Some(client.client));
    // SOFTWARE only in authenticated responses: unauthenticated ones stay small.
    assert_eq!(response.software().unwrap(), None);
    assert!(response.verify_fingerprint());
    assert!(response.message_integrity().is_none());
}

#[test]
fn binding_with_unknown_required_attribute_gets_420() {
    let mut harness = Harness::new();
    let (response, _) = harness.request(
        flow(CLIENT),
        Method::BINDING,
        &[raw(0x0024, &[0; 4])],
        Credentials::None,
    );
    assert_eq!(error_code(&response), 420);
    let unknown: Vec<u16> = parse(&response)
        .unknown_attributes()
        .unwrap()
        .unwrap()
        .collect();
    assert_eq!(unknown, vec![0x0024]);
}

#[test]
fn allocate_success_installs_the_fast_path_first_and_advertises_the_public_address() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, commands) = harness.allocate_with(client, &[]);
    assert_success(&response);
    let message = parse(&response);
    assert!(message.verify_message_integrity(&key("alice", PasswordAlgorithm::Md5)));
    assert_eq!(message.lifetime().unwrap(), Some(600));
    assert_eq!(message.xor_mapped_address().unwrap(), Some(client.client));
    let relayed = message.xor_relayed_address().unwrap().unwrap();
    assert_eq!(relayed.ip(), ip(RELAY_V4_PUBLIC));
    assert!(config().port_range.contains(&relayed.port()));

    let [Command::OpenRelay { relay }] = commands.as_slice() else {
        panic!("{commands:?}")
    };
    assert_eq!(relay.ip(), ip(RELAY_V4_BIND));
    assert_eq!(relay.port(), relayed.port());
    let entry = harness.datapath().allocations[relay];
    assert_eq!(entry.flow, client);
    assert_eq!(
        entry.expires_at,
        harness.now.instant + Duration::from_secs(600)
    );
    assert_eq!(harness.server.stats().allocations, 1);
}

#[test]
fn lifetime_is_clamped_between_default_and_maximum() {
    let mut harness = Harness::new();
    let (response, _) = harness.allocate_with(
        flow(CLIENT),
        &[raw(attr::LIFETIME, &100_000u32.to_be_bytes())],
    );
    assert_eq!(parse(&response).lifetime().unwrap(), Some(3600));
    let (response, _) = harness.allocate_with(
        flow(OTHER_CLIENT),
        &[raw(attr::LIFETIME, &30u32.to_be_bytes())],
    );
    assert_eq!(parse(&response).lifetime().unwrap(), Some(600));
    let (response, _) = harness.refresh(flow(CLIENT), Some(1200));
    assert_eq!(parse(&response).lifetime().unwrap(), Some(1200));
    let (response, _) = harness.refresh(flow(CLIENT), None);
    assert_eq!(parse(&response).lifetime().unwrap(), Some(600));
}

#[test]
fn requested_transport_must_be_udp() {
    let mut harness = Harness::new();
    let (response, _) = harness.request(
        flow(CLIENT),
        Method::ALLOCATE,
        &[raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0])],
        Credentials::Md5("alice"),
    );
    assert_eq!(error_code(&response), 442);
    // Authenticated errors carry integrity too.
    assert!(parse(&response).verify_message_integrity(&key("alice", PasswordAlgorithm::Md5)));
    let (response, _) = harness.request(
        flow(CLIENT),
        Method::ALLOCATE,
        &[],
        Credentials::Md5("alice"),
    );
    assert_eq!(error_code(&response), 400);
}

#[test]
fn second_allocate_is_437_but_a_retransmission_gets_the_identical_response() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let transaction_id = harness.transaction_id();
    let attributes = [raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])];
    let packet = harness.encode_request(
        client,
        Method::ALLOCATE,
        &transaction_id,
        &attributes,
        Credentials::Md5("alice"),
    );
    let (_, commands, first) = harness.send(client, &packet);
    assert_eq!(commands.len(), 1);
    assert_success(&first[0].payload);

    harness.advance(Duration::from_secs(5));
    let (_, commands, again) = harness.send(client, &packet);
    assert!(commands.is_empty(), "a retransmission opens nothing");
    assert_eq!(again, first);

    let (response, _) = harness.allocate_with(client, &[]);
    assert_eq!(error_code(&response), 437);

    // After 40 s the cache entry is gone and the same request is processed anew.
    harness.advance(Duration::from_secs(40));
    let (_, _, late) = harness.send(client, &packet);
    assert_eq!(error_code(&late[0].payload), 437);
}

#[test]
fn requests_without_allocation_get_437() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, _) = harness.refresh(client, Some(600));
    assert_eq!(error_code(&response), 437);
    let response = harness.create_permission(client, &[addr("198.18.2.20:5000")]);
    assert_eq!(error_code(&response), 437);
    let response = harness.channel_bind(client, 0x4000, addr("198.18.2.20:5000"));
    assert_eq!(error_code(&response), 437);
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    harness.create_permission(client, &[addr("198.18.2.20:5000")]);
    let (response, commands) = harness.refresh(client, Some(0));
    assert_success(&response);
    assert_eq!(parse(&response).lifetime().unwrap(), Some(0));
    assert_eq!(commands, vec![Command::CloseRelay { relay }]);
    let datapath = harness.datapath();
    assert!(datapath.allocations.is_empty() && datapath.permissions.is_empty());
    assert_eq!(harness.server.stats().allocations, 0);
    let (response, _) = harness.refresh(client, Some(600));
    assert_eq!(error_code(&response), 437);
}

#[test]
fn ipv6_relay_on_request() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, commands) = harness.allocate_with(client, &[requested_family(2)]);
    assert_success(&response);
    let relayed = parse(&response).xor_relayed_address().unwrap().unwrap();
    assert_eq!(relayed.ip(), ip(RELAY_V6_PUBLIC));
    assert_eq!(
        commands,
        vec![Command::OpenRelay {
            relay: SocketAddr::new(ip(RELAY_V6_BIND), relayed.port())
        }]
    );
    // Refresh asking for the other family: 443.
    let (response, _) = harness.request(
        client,
        Method::REFRESH,
        &[requested_family(1)],
        Credentials::Md5("alice"),
    );
    assert_eq!(error_code(&response), 443);
}

#[test]
fn unsupported_address_families_get_440() {
    let mut harness = Harness::with_config(ServerConfig {
        relay_v6: None,
        ..config()
    });
    let (response, _) = harness.allocate_with(flow(CLIENT), &[requested_family(2)]);
    assert_eq!(error_code(&response), 440);
    let (response, _) = harness.allocate_with(flow(CLIENT), &[requested_family(7)]);
    assert_eq!(error_code(&response), 440);

    let mut harness = Harness::with_config(ServerConfig {
        relay_v4: None,
        ..config()
    });
    let (response, _) = harness.allocate_with(flow(CLIENT), &[]);
    assert_eq!(error_code(&response), 440, "IPv4 is the default family");
}

#[test]
fn additional_address_family_gets_ipv4_and_an_address_error_code() {
    let mut harness = Harness::new();
    let (response, _) = harness.allocate_with(
        flow(CLIENT),
        &[raw(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0])],
    );
    assert_success(&response);
    let message = parse(&response);
    assert_eq!(
        message.xor_relayed_address().unwrap().unwrap().ip(),
        ip(RELAY_V4_PUBLIC)
    );
    let address_error = message.attribute(attr::ADDRESS_ERROR_CODE).unwrap();
    assert_eq!(&address_error[..4], &[AddressFamily::Ipv6.code(), 0, 4, 40]);

    let (response, _) = harness.allocate_with(
        flow(OTHER_CLIENT),
        &[raw(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x01, 0, 0, 0])],
    );
    assert_eq!(error_code(&response), 400);
    let (response, _) = harness.allocate_with(
        flow(OTHER_CLIENT),
        &[
            raw(attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0]),
            requested_family(1),
        ],
    );
    assert_eq!(error_code(&response), 400);
}

#[test]
fn quotas_give_486() {
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations_per_user: 1,
        ..config()
    });
    harness.allocate(flow(CLIENT));
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &[]);
    assert_eq!(error_code(&response), 486);
    // Deleting the first frees the user's quota.
    harness.refresh(flow(CLIENT), Some(0));
    harness.allocate(flow(OTHER_CLIENT));

    // The server being full is not the user's quota: 508 (RFC 8656 §7.2).
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations: 1,
        ..config()
    });
    harness.allocate(flow(CLIENT));
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &[]);
    assert_eq!(error_code(&response), 508);
}

#[test]
fn the_default_quota_is_ten_allocations_per_user() {
    assert_eq!(ServerConfig::default().max_allocations_per_user, 10);
    let mut harness = Harness::new();
    for port in 0..10 {
        harness.allocate(flow(&format!("198.18.1.30:{}", 41000 + port)));
    }
    let (response, _) = harness.allocate_with(flow("198.18.1.30:42000"), &[]);
    assert_eq!(error_code(&response), 486);
    // Another user has a quota of their own.
    let (response, _) =
        harness.allocate_as(flow("198.18.1.30:42001"), Credentials::Md5("bob"), &[]);
    assert_success(&response);
}

#[test]
fn renewed_time_limited_usernames_share_their_users_quota() {
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations_per_user: 2,
        ..config()
    });
    let expiry = harness.now.unix_secs + 3600;
    // Three distinct REST usernames of one user: the third exceeds the user's quota.
    for (index, username) in [
        format!("{expiry}:carol"),
        format!("{}:carol", expiry + 1),
        format!("{}:carol", expiry + 2),
    ]
    .iter()
    .enumerate()
    {
        let (response, _) = harness.allocate_as(
            flow(&format!("198.18.1.31:{}", 41000 + index)),
            Credentials::Md5(username),
            &[],
        );
        if index < 2 {
            assert_success(&response);
        } else {
            assert_eq!(error_code(&response), 486, "{username}");
        }
    }
    let (response, _) = harness.allocate_as(
        flow("198.18.1.31:41010"),
        Credentials::Md5(&format!("{expiry}:dave")),
        &[],
    );
    assert_success(&response);
    // zrest: the username without its expiry names the user.
    for (index, expected) in [(0, None), (1, None), (2, Some(486))] {
        let username = format!("d={}.v=1.k=0.t=s.r=erin", expiry + index);
        let (response, _) = harness.allocate_as(
            flow(&format!("198.18.1.32:{}", 41000 + index)),
            Credentials::Md5(&username),
            &[],
        );
        match expected {
            None => assert_success(&response),
            Some(code) => assert_eq!(error_code(&response), code),
        }
    }
}

#[test]
fn even_port_reservations_count_against_the_quotas() {
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations_per_user: 2,
        ..config()
    });
    let (response, _) = harness.allocate_with(flow(CLIENT), &[raw(attr::EVEN_PORT, &[0x80])]);
    assert_success(&response);
    let token = parse(&response)
        .reservation_token()
        .expect("valid")
        .expect("token");
    // The allocation and its reservation fill alice's quota of two.
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &[]);
    assert_eq!(error_code(&response), 486);
    // Claiming the reservation turns it into an allocation: still two.
    let (response, _) = harness.allocate_with(
        flow(OTHER_CLIENT),
        &[raw(attr::RESERVATION_TOKEN, &token.to_be_bytes())],
    );
    assert_success(&response);
    assert_eq!(harness.server.stats().allocations, 2);
    // An expired reservation gives its place back.
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations_per_user: 2,
        ..config()
    });
    let (response, _) = harness.allocate_with(flow(CLIENT), &[raw(attr::EVEN_PORT, &[0x80])]);
    assert_success(&response);
    harness.advance(Duration::from_secs(31));
    harness.allocate(flow(OTHER_CLIENT));

    // The server's capacity counts reservations too: a pair does not fit into one place.
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations: 2,
        ..config()
    });
    harness.allocate(flow(CLIENT));
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &[raw(attr::EVEN_PORT, &[0x80])]);
    assert_eq!(error_code(&response), 508);
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &[raw(attr::EVEN_PORT, &[0])]);
    assert_success(&response);
}

#[test]
fn exhausted_port_range_gives_508() {
    let mut harness = Harness::with_config(ServerConfig {
        port_range: 50000..=50000,
        ..config()
    });
    let relay = harness.allocate(flow(CLIENT));
    assert_eq!(relay.port(), 50000);
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &[]);
    assert_eq!(error_code(&response), 508);
}

#[test]
fn even_port_with_reservation_and_reservation_token() {
    let mut harness = Harness::new();
    let (response, commands) =
        harness.allocate_with(flow(CLIENT), &[raw(attr::EVEN_PORT, &[0x80])]);
    assert_success(&response);
    let [Command::OpenRelay { relay }] = commands.as_slice() else {
        panic!("{commands:?}")
    };
    assert_eq!(relay.port() % 2, 0);
    let token = parse(&response)
        .reservation_token()
        .unwrap()
        .expect("RESERVATION-TOKEN");

    // The token is refused together with EVEN-PORT or REQUESTED-ADDRESS-FAMILY…
    let with_even = [
        raw(attr::RESERVATION_TOKEN, &token.to_be_bytes()),
        raw(attr::EVEN_PORT, &[0]),
    ];
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &with_even);
    assert_eq!(error_code(&response), 400);
    let with_family = [
        raw(attr::RESERVATION_TOKEN, &token.to_be_bytes()),
        requested_family(1),
    ];
    let (response, _) = harness.allocate_with(flow(OTHER_CLIENT), &with_family);
    assert_eq!(error_code(&response), 400);

    // …alone it yields the reserved odd port, once.
    let (response, commands) = harness.allocate_with(
        flow(OTHER_CLIENT),
        &[raw(attr::RESERVATION_TOKEN, &token.to_be_bytes())],
    );
    assert_success(&response);
    assert_eq!(
        commands,
        vec![Command::OpenRelay {
            relay: SocketAddr::new(relay.ip(), relay.port() + 1)
        }]
    );
    let (response, _) = harness.allocate_with(
        flow("198.18.1.12:1"),
        &[raw(attr::RESERVATION_TOKEN, &token.to_be_bytes())],
    );
    assert_eq!(error_code(&response), 508);
}

#[test]
fn reservations_expire_after_30_seconds() {
    let mut harness = Harness::new();
    let (response, _) = harness.allocate_with(flow(CLIENT), &[raw(attr::EVEN_PORT, &[0x80])]);
    let token = parse(&response).reservation_token().unwrap().unwrap();
    harness.advance(Duration::from_secs(31));
    let (response, _) = harness.allocate_with(
        flow(OTHER_CLIENT),
        &[raw(attr::RESERVATION_TOKEN, &token.to_be_bytes())],
    );
    assert_eq!(error_code(&response), 508);
}

#[test]
fn even_port_without_reservation() {
    let mut harness = Harness::with_config(ServerConfig {
        max_allocations_per_user: 0,
        ..config()
    });
    for index in 0..20 {
        let (response, commands) = harness.allocate_with(
            flow(&format!("198.18.1.20:{}", 1000 + index)),
            &[raw(attr::EVEN_PORT, &[0])],
        );
        assert!(parse(&response).reservation_token().unwrap().is_none());
        let [Command::OpenRelay { relay }] = commands.as_slice() else {
            panic!("{commands:?}")
        };
        assert_eq!(relay.port() % 2, 0);
    }
}

#[test]
fn relay_bind_failure_replaces_the_queued_success_with_508() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let packet = harness.signed_allocate(client, "alice");
    harness
        .server
        .handle_client_datagram(harness.now, client, &packet, None);
    let Some(Command::OpenRelay { relay }) = harness.server.poll_command() else {
        panic!("no OpenRelay")
    };
    harness.server.handle_relay_bind_failed(harness.now, relay);
    let transmit = harness.server.poll_transmit().expect("a response");
    assert!(harness.server.poll_transmit().is_none());
    assert_eq!(error_code(&transmit.payload), 508);
    assert!(
        parse(&transmit.payload).verify_message_integrity(&key("alice", PasswordAlgorithm::Md5))
    );
    harness.apply_fast_path();
    assert!(harness.datapath().allocations.is_empty());
    assert_eq!(harness.server.stats().allocations, 0);
    // The retransmission is not answered with the stale success, and a new attempt works.
    let (_, _, again) = harness.send(client, &packet);
    assert_eq!(error_code(&again[0].payload), 508);
    harness.allocate(client);
}

/// A datapath whose maps are always full.
#[derive(Debug, Default)]
struct FullDatapath;

impl Datapath for FullDatapath {
    fn install_allocation(&mut self, _entry: AllocationEntry) -> Result<(), DatapathError> {
        Err(DatapathError::MapFull)
    }
    fn remove_allocation(&mut self, _flow: ClientFlow, _relay: SocketAddr) {}
    fn install_permission(&mut self, _entry: PermissionEntry) -> Result<(), DatapathError> {
        Err(DatapathError::MapFull)
    }
    fn remove_permission(&mut self, _relay: SocketAddr, _peer_ip: IpAddr) {}
    fn install_channel(&mut self, _entry: ChannelEntry) -> Result<(), DatapathError> {
        Err(DatapathError::MapFull)
    }
    fn remove_channel(&mut self, _relay: SocketAddr, _number: u16) {}
    fn relayed_traffic(&self, _relay: SocketAddr) -> RelayedTraffic {
        RelayedTraffic::default()
    }
    fn limit_relay_bandwidth(&mut self, _bytes_per_second: u64) -> Result<(), DatapathError> {
        Err(DatapathError::MapFull)
    }
}

#[test]
fn datapath_errors_do_not_fail_requests() {
    let mut harness = Harness::with(config(), FullDatapath);
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let peer = addr("198.18.2.20:5000");
    assert_success(&harness.create_permission(client, &[peer]));
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    // Userspace relays instead; the fast path holds nothing of the allocation, so XDP
    // passes all of its traffic up.
    assert!(harness.fast_path.is_userspace_only(relay));
    assert_eq!(harness.fast_path.stats().userspace_only_allocations, 1);
    let mut out = Vec::new();
    let forward = harness.peer_datagram(relay, peer, b"x", &mut out);
    assert!(forward.is_some());
}

#[test]
fn malformed_requests_get_400_and_garbage_is_dropped() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let transaction_id = harness.transaction_id();
    let mut packet = Vec::new();
    MessageBuilder::new(
        &mut packet,
        Method::ALLOCATE,
        Class::Request,
        &transaction_id,
    )
    .u32_attribute(attr::LIFETIME, 1);
    packet[23] = 200; // the attribute now overruns the message
    let (_, _, transmits) = harness.send(client, &packet);
    assert_eq!(error_code(&transmits[0].payload), 400);

    // An unknown method is a bad request too.
    let (response, _) = harness.request(client, Method(0x0FF), &[], Credentials::None);
    assert_eq!(error_code(&response), 400);

    // Indications, responses and non-STUN bytes are never answered.
    for garbage in [
        &b""[..],
        b"\xff\xff\xff\xff",
        b"hello world, not stun",
        &[0x40, 0x00, 0x00, 0x10],
    ] {
        let (forward, commands, transmits) = harness.send(client, garbage);
        assert!(forward.is_none() && commands.is_empty() && transmits.is_empty());
    }
    let mut indication = Vec::new();
    MessageBuilder::new(
        &mut indication,
        Method::BINDING,
        Class::Indication,
        &transaction_id,
    );
    let mut response = Vec::new();
    MessageBuilder::new(
        &mut response,
        Method::ALLOCATE,
        Class::SuccessResponse,
        &transaction_id,
    );
    for packet in [indication, response] {
        let (forward, _, transmits) = harness.send(client, &packet);
        assert!(forward.is_none() && transmits.is_empty());
    }
}

#[test]
fn seeded_garbage_never_panics_the_server() {
    use rand::{Rng, SeedableRng};
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    harness.create_permission(client, &[addr("198.18.2.20:5000")]);
    harness.channel_bind(client, 0x4000, addr("198.18.2.20:5000"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    for _ in 0..5_000 {
        let len = rng.gen_range(0..96);
        let mut packet: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if let Some(first) = packet.first_mut() {
            // Mostly STUN- or ChannelData-shaped first bytes.
            *first &= if rng.gen_bool(0.5) { 0x3F } else { 0x4F };
        }
        if packet.len() >= 8 && rng.gen_bool(0.5) {
            packet[4..8].copy_from_slice(&crate::protocol::stun::MAGIC_COOKIE.to_be_bytes());
        }
        harness
            .server
            .handle_client_datagram(harness.now, client, &packet, None);
        harness.peer_datagram(relay, addr("198.18.2.20:5000"), &packet, &mut out);
        while harness.server.poll_transmit().is_some() {}
    }
}

#[test]
fn one_user_cannot_take_the_transaction_cache_from_the_others() {
    let mut harness = Harness::new().with_limits(ServerLimits {
        max_cached_responses_per_user: 4,
        ..ServerLimits::default()
    });
    let alice = flow(CLIENT);
    harness.allocate(alice);
    let peer = Attr::XorPeer(addr("198.18.2.20:5000"));
    for _ in 0..20 {
        let (response, _) = harness.request(
            alice,
            Method::CREATE_PERMISSION,
            std::slice::from_ref(&peer),
            Credentials::Md5("alice"),
        );
        assert_success(&response);
    }
    assert_eq!(harness.server.cached_responses(), 4, "alice's share");
    // Bob's Allocate is still cached: its retransmission gets the identical success
    // (without the cache it would be a 437 Allocation Mismatch).
    let bob = flow(OTHER_CLIENT);
    let allocate = harness.signed_allocate(bob, "bob");
    let (_, _, first) = harness.send(bob, &allocate);
    assert_success(&first[0].payload);
    let (_, _, again) = harness.send(bob, &allocate);
    assert_eq!(again[0].payload, first[0].payload);
    // Expired responses give the share back.
    harness.advance(Duration::from_secs(41));
    assert_eq!(harness.server.cached_responses(), 0);
    let (response, _) = harness.request(
        alice,
        Method::CREATE_PERMISSION,
        &[peer],
        Credentials::Md5("alice"),
    );
    assert_success(&response);
    assert_eq!(harness.server.cached_responses(), 1);
}
