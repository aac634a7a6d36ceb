//! Draining (300 Try Alternate / 508, RFC 8489 §10, RFC 8656 §7.2), reloading credentials
//! and the peer policy, and the read-only view of the allocations.

use crate::protocol::auth::{AuthConfig, Authenticator, StaticSecret, StaticUser};
use crate::protocol::policy::PeerPolicy;
use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::PasswordAlgorithm;
use crate::protocol::turn::{Command, FamilyCounts};

use super::*;

const CLIENT: &str = "198.18.1.10:40000";
const CLIENT_V6: &str = "[2001:db8::10]:40000";
const PEER: &str = "198.18.2.20:5000";

fn alternates() -> Vec<SocketAddr> {
    ["198.18.0.2:3478", "198.18.0.3:3478", "[2001:db8::2]:3478"]
        .iter()
        .map(|text| addr(text))
        .collect()
}

/// The ALTERNATE-SERVER of a 300 response, after checking its MESSAGE-INTEGRITY.
fn alternate_of(response: &[u8]) -> SocketAddr {
    assert_eq!(error_code(response), 300);
    let message = parse(response);
    assert!(
        message.verify_message_integrity(&key("alice", PasswordAlgorithm::Md5)),
        "a 300 must be authenticated (RFC 8489 §10)"
    );
    message
        .attribute(attr::ALTERNATE_SERVER)
        .and_then(attr::decode_address)
        .expect("ALTERNATE-SERVER")
}

#[test]
fn a_draining_server_sends_new_allocations_to_the_alternates_in_turn() {
    let mut harness = Harness::new();
    harness.server.set_alternate_servers(alternates());
    harness.server.set_draining(true);
    assert!(harness.server.draining());
    let mut given = Vec::new();
    for port in 0..3 {
        let client = flow(&format!("198.18.1.10:{}", 41000 + port));
        let (response, commands) = harness.allocate_with(client, &[]);
        assert!(
            commands.is_empty(),
            "no relay socket for a turned-away Allocate"
        );
        given.push(alternate_of(&response));
    }
    // Round robin over the alternates of the client's family only (RFC 8489 §14.15).
    assert_eq!(
        given,
        vec![
            addr("198.18.0.2:3478"),
            addr("198.18.0.3:3478"),
            addr("198.18.0.2:3478")
        ]
    );
    let (response, _) = harness.allocate_with(flow(CLIENT_V6), &[]);
    assert_eq!(alternate_of(&response), addr("[2001:db8::2]:3478"));
    assert_eq!(harness.server.stats().allocations, 0);
}

#[test]
fn a_draining_server_without_an_alternate_of_the_family_answers_508() {
    let mut harness = Harness::new();
    harness.server.set_draining(true);
    let (response, _) = harness.allocate_with(flow(CLIENT), &[]);
    assert_eq!(error_code(&response), 508);
    harness
        .server
        .set_alternate_servers(vec![addr("[2001:db8::2]:3478")]);
    let (response, _) = harness.allocate_with(flow(CLIENT), &[]);
    assert_eq!(error_code(&response), 508, "no IPv4 alternate");
}

#[test]
fn the_drain_answers_only_authenticated_allocates() {
    let mut harness = Harness::new();
    harness.server.set_alternate_servers(alternates());
    harness.server.set_draining(true);
    let (challenge, _) = harness.allocate_as(flow(CLIENT), Credentials::None, &[]);
    assert_eq!(error_code(&challenge), 401, "the challenge comes first");
    assert!(parse(&challenge)
        .attribute(attr::ALTERNATE_SERVER)
        .is_none());
    let (wrong, _) = harness.allocate_as(flow(CLIENT), Credentials::WrongPassword("alice"), &[]);
    assert_eq!(
        error_code(&wrong),
        401,
        "no redirection without valid credentials"
    );
}

#[test]
fn existing_allocations_carry_on_while_draining_and_new_ones_return_after() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    harness.server.set_alternate_servers(alternates());
    harness.server.set_draining(true);
    assert_success(&harness.refresh(client, Some(600)).0);
    assert_success(&harness.create_permission(client, &[addr(PEER)]));
    assert_success(&harness.channel_bind(client, 0x4001, addr(PEER)));
    let (forward, _, _) = harness.send(client, &[0x40, 0x01, 0x00, 0x02, 0xab, 0xcd]);
    let forward = forward.expect("ChannelData relayed while draining");
    assert_eq!((forward.from, forward.to), (relay, addr(PEER)));
    // The client's retransmitted Allocate still finds its allocation (437, not 300).
    let (again, _) = harness.allocate_with(client, &[]);
    assert_eq!(error_code(&again), 437);

    harness.server.set_draining(false);
    let (response, commands) = harness.allocate_with(flow("198.18.1.10:42000"), &[]);
    assert_success(&response);
    assert!(matches!(commands.as_slice(), [Command::OpenRelay { .. }]));
}

fn authenticator_of(users: &[&str]) -> Authenticator {
    Authenticator::new(AuthConfig {
        static_users: users
            .iter()
            .map(|name| StaticUser {
                name: (*name).to_owned(),
                secret: StaticSecret::Password(password(name)),
            })
            .collect(),
        auth_secrets: Vec::new(),
        zrest_secrets: Vec::new(),
        nonce_lifetime: std::time::Duration::from_secs(600),
        nonce_secret: b"test nonce secret".to_vec(),
        advertise_password_algorithms: true,
    })
}

#[test]
fn reloaded_credentials_apply_to_the_next_request_and_allocations_keep_theirs() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    harness.allocate(client);
    // alice leaves, carol arrives (the nonce secret is the same, so nonces stay good).
    harness
        .server
        .set_authenticator(authenticator_of(&["carol"]));
    let (carol, _) = harness.allocate_as(flow("198.18.1.11:40000"), Credentials::Md5("carol"), &[]);
    assert_success(&carol);
    let (bob, _) = harness.allocate_as(flow("198.18.1.12:40000"), Credentials::Md5("bob"), &[]);
    assert_eq!(error_code(&bob), 401, "a user no longer configured");
    assert_eq!(
        harness.server.stats().allocations,
        2,
        "alice's allocation is untouched"
    );
}

#[test]
fn a_reloaded_peer_policy_applies_to_the_next_permission() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    harness.allocate(client);
    assert_success(&harness.create_permission(client, &[addr(PEER)]));
    let relay_ips = [ip(RELAY_V4_BIND), ip(RELAY_V4_PUBLIC)].to_vec();
    harness.server.set_peer_policy(PeerPolicy::new(
        vec!["198.18.0.0/15".parse().expect("net")],
        vec!["198.18.2.0/24".parse().expect("net")],
        relay_ips,
    ));
    assert_eq!(
        error_code(&harness.create_permission(client, &[addr(PEER)])),
        403
    );
    assert_success(&harness.create_permission(client, &[addr("198.18.3.20:5000")]));
}

#[test]
fn the_allocation_view_shows_user_addresses_and_counts_without_secrets() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    assert_success(&harness.channel_bind(client, 0x4001, addr(PEER)));
    harness.send(client, &[0x40, 0x01, 0x00, 0x02, 0xab, 0xcd]);
    let (response, _) = harness.allocate_with(flow(CLIENT_V6), &[requested_family(0x02)]);
    assert_success(&response);
    let views: Vec<_> = harness.server.allocations().collect();
    assert_eq!(views.len(), 2);
    let view = views
        .iter()
        .find(|view| view.flow == client)
        .expect("the IPv4 allocation");
    assert_eq!(view.username, "alice");
    assert_eq!(view.relay, relay);
    assert_eq!(
        view.relayed,
        SocketAddr::new(ip(RELAY_V4_PUBLIC), relay.port())
    );
    assert_eq!((view.permissions, view.channels), (1, 1));
    assert_eq!(view.userspace_to_peer.packets, 1);
    assert_eq!(view.created_at, harness.now.instant);
    assert_eq!(
        harness.server.allocations_by_family(),
        FamilyCounts { ipv4: 1, ipv6: 1 }
    );
}
