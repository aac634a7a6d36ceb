//! Long-term authentication (RFC 8489 §9.2, RFC 8656 §5).

use std::time::Duration;

use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::{Class, MessageBuilder, Method, PasswordAlgorithm};

use super::*;

const CLIENT: &str = "198.18.1.30:40000";

#[test]
fn unauthenticated_allocate_gets_401_with_realm_nonce_and_password_algorithms() {
    let mut harness = Harness::new();
    let (response, commands) = harness.allocate_as(flow(CLIENT), Credentials::None, &[]);
    assert!(commands.is_empty());
    assert_eq!(error_code(&response), 401);
    let message = parse(&response);
    assert_eq!(message.realm().unwrap(), Some(REALM));
    assert!(message
        .nonce()
        .unwrap()
        .is_some_and(|nonce| nonce.starts_with(b"obMatJos2")));
    let offered: Vec<u16> = message.password_algorithms().unwrap().unwrap().collect();
    assert_eq!(
        offered,
        vec![
            PasswordAlgorithm::Sha256.code(),
            PasswordAlgorithm::Md5.code()
        ]
    );
    assert!(
        message.message_integrity().is_none(),
        "401 is not integrity-protected"
    );
}

#[test]
fn wrong_password_unknown_user_and_foreign_nonce_get_401() {
    let mut harness = Harness::new();
    let allocate_error = |harness: &mut Harness, credentials| {
        let (response, _) = harness.allocate_as(flow(CLIENT), credentials, &[]);
        error_code(&response)
    };
    assert_eq!(
        allocate_error(&mut harness, Credentials::WrongPassword("alice")),
        401
    );
    assert_eq!(
        allocate_error(&mut harness, Credentials::Md5("mallory")),
        401
    );
    let client_ip = flow(CLIENT).client.ip();
    harness.nonces.insert(
        client_ip,
        "obMatJos2AAAB0000000000000000000000000000000000000000000000".to_owned(),
    );
    assert_eq!(allocate_error(&mut harness, Credentials::Md5("alice")), 401);
    // A nonce issued to another client IP is not valid here either.
    let foreign = harness.fetch_nonce(flow("198.18.1.99:1"));
    harness.nonces.insert(client_ip, foreign);
    assert_eq!(allocate_error(&mut harness, Credentials::Md5("alice")), 401);
    assert_eq!(harness.server.stats().allocations, 0);
}

#[test]
fn stale_nonce_gets_438_with_a_fresh_nonce() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, _) =
        harness.allocate_with(client, &[raw(attr::LIFETIME, &3600u32.to_be_bytes())]);
    assert_success(&response);
    // The test nonces live 600 s.
    harness.advance(Duration::from_secs(601));
    let (response, _) = harness.refresh(client, Some(600));
    assert_eq!(error_code(&response), 438);
    let message = parse(&response);
    assert_eq!(message.realm().unwrap(), Some(REALM));
    let fresh = String::from_utf8(message.nonce().unwrap().unwrap().to_vec()).unwrap();
    assert_ne!(Some(&fresh), harness.nonces.get(&client.client.ip()));
    harness.nonces.insert(client.client.ip(), fresh);
    let (response, _) = harness.refresh(client, Some(600));
    assert_success(&response);
}

#[test]
fn missing_identity_attributes_get_400() {
    let mut harness = Harness::new();
    let packet = harness.message(Method::ALLOCATE, Class::Request, |builder| {
        builder
            .attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attribute(attr::USERNAME, b"alice")
            .message_integrity(&key("alice", PasswordAlgorithm::Md5));
    });
    let (_, _, transmits) = harness.send(flow(CLIENT), &packet);
    assert_eq!(error_code(&transmits[0].payload), 400);
}

#[test]
fn another_username_on_an_allocation_gets_441() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    harness.allocate(client);
    let (response, _) = harness.request(client, Method::REFRESH, &[], Credentials::Md5("bob"));
    assert_eq!(error_code(&response), 441);
    assert!(parse(&response).verify_message_integrity(&key("bob", PasswordAlgorithm::Md5)));
}

#[test]
fn sha256_password_algorithm_and_message_integrity_sha256() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, commands) = harness.allocate_as(client, Credentials::Sha256("alice"), &[]);
    assert_success(&response);
    assert_eq!(commands.len(), 1);
    let message = parse(&response);
    assert!(message.message_integrity().is_none());
    assert!(message.verify_message_integrity_sha256(&key("alice", PasswordAlgorithm::Sha256)));
    assert!(!message.verify_message_integrity_sha256(&key("alice", PasswordAlgorithm::Md5)));

    // Later requests of the allocation use the same algorithm and get the same protection.
    let (response, _) = harness.request(client, Method::REFRESH, &[], Credentials::Sha256("alice"));
    assert_success(&response);
    assert!(
        parse(&response).verify_message_integrity_sha256(&key("alice", PasswordAlgorithm::Sha256))
    );
}

#[test]
fn password_algorithm_negotiation_errors_get_400() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let nonce = harness.fetch_nonce(client);
    let sha256_key = key("alice", PasswordAlgorithm::Sha256);
    let cases: [&dyn Fn(&mut MessageBuilder<'_>); 3] = [
        // PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS.
        &|builder| {
            builder.password_algorithm(PasswordAlgorithm::Sha256);
        },
        // A PASSWORD-ALGORITHMS list that is not the one the server sent (downgrade).
        &|builder| {
            builder
                .password_algorithms(&[PasswordAlgorithm::Md5])
                .password_algorithm(PasswordAlgorithm::Md5);
        },
        // An algorithm the server does not know.
        &|builder| {
            builder
                .password_algorithms(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5])
                .attribute(attr::PASSWORD_ALGORITHM, &[0, 9, 0, 0]);
        },
    ];
    for add_algorithms in cases {
        let packet = harness.message(Method::ALLOCATE, Class::Request, |builder| {
            builder
                .attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .attribute(attr::USERNAME, b"alice")
                .attribute(attr::REALM, REALM.as_bytes())
                .attribute(attr::NONCE, nonce.as_bytes());
            add_algorithms(builder);
            builder.message_integrity_sha256(&sha256_key);
        });
        let (_, _, transmits) = harness.send(client, &packet);
        assert_eq!(error_code(&transmits[0].payload), 400);
    }
}

#[test]
fn unknown_required_attribute_on_an_authenticated_request_gets_420_with_integrity() {
    let mut harness = Harness::new();
    let (response, commands) = harness.allocate_with(
        flow(CLIENT),
        &[raw(0x7FF0, &[1, 2, 3, 4]), raw(0xC0FF, &[])],
    );
    assert!(commands.is_empty());
    assert_eq!(error_code(&response), 420);
    let message = parse(&response);
    let unknown: Vec<u16> = message.unknown_attributes().unwrap().unwrap().collect();
    assert_eq!(unknown, vec![0x7FF0]);
    assert!(message.verify_message_integrity(&key("alice", PasswordAlgorithm::Md5)));
}

#[test]
fn userhash_instead_of_username_finds_static_users_only() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let (response, _) = harness.allocate_as(client, Credentials::Userhash("mallory"), &[]);
    assert_eq!(error_code(&response), 401);

    let (response, commands) = harness.allocate_as(client, Credentials::Userhash("alice"), &[]);
    assert_success(&response);
    assert!(
        parse(&response).verify_message_integrity_sha256(&key("alice", PasswordAlgorithm::Sha256))
    );
    assert_eq!(commands.len(), 1, "the relay socket is opened");
    // The allocation belongs to alice: her USERNAME requests work on it, bob's get 441.
    let (response, _) = harness.request(client, Method::REFRESH, &[], Credentials::Sha256("alice"));
    assert_success(&response);
    let (response, _) = harness.request(client, Method::REFRESH, &[], Credentials::Userhash("bob"));
    assert_eq!(error_code(&response), 441);
}

#[test]
fn an_expired_time_limited_username_is_revoked_after_the_grace() {
    let mut harness = Harness::new();
    let expiry = harness.now.unix_secs + 100;
    for (client, username) in [
        (flow("198.18.1.90:40000"), format!("{expiry}:carol")),
        (
            flow("198.18.1.91:40000"),
            format!("d={expiry}.v=1.k=0.t=s.r=carol"),
        ),
    ] {
        let credentials = Credentials::Md5(&username);
        let (response, _) = harness.allocate_as(client, credentials, &[]);
        assert_success(&response);
        let peer = Attr::XorPeer(addr("198.18.2.20:5000"));
        // Expired, but within the grace (60 s): still usable.
        harness.now.unix_secs = expiry + 60;
        let (response, _) = harness.request(
            client,
            Method::CREATE_PERMISSION,
            std::slice::from_ref(&peer),
            credentials,
        );
        assert_success(&response);
        // Beyond the grace: every request on the allocation is refused.
        harness.now.unix_secs = expiry + 61;
        let lifetime = raw(attr::LIFETIME, &600u32.to_be_bytes());
        let channel = raw(attr::CHANNEL_NUMBER, &channel_number(0x4000));
        for (method, attributes) in [
            (Method::REFRESH, vec![lifetime]),
            (Method::CREATE_PERMISSION, vec![peer.clone()]),
            (Method::CHANNEL_BIND, vec![channel, peer]),
        ] {
            let (response, _) = harness.request(client, method, &attributes, credentials);
            assert_eq!(error_code(&response), 401, "{username} {method:?}");
        }
        harness.now.unix_secs = expiry - 100;
    }
    assert_eq!(harness.server.stats().channels, 0);
}

/// Response bytes per request byte of an unauthenticated exchange.
fn amplification(harness: &mut Harness, client: ClientFlow, request: &[u8]) -> f64 {
    let (_, _, transmits) = harness.send(client, request);
    let [response] = transmits.as_slice() else {
        panic!("one answer expected, got {}", transmits.len());
    };
    response.payload.len() as f64 / request.len() as f64
}

#[test]
fn unauthenticated_answers_amplify_at_most_three_and_a_half_times() {
    // The daemon's default realm; SOFTWARE configured (it is left out of these answers).
    let mut harness = Harness::with_config(ServerConfig {
        realm: "turn-relay.local".to_owned(),
        ..config()
    });
    let v4 = flow(CLIENT);
    let v6 = flow("[2001:db8::30]:40000");
    // The smallest Allocate: the header and REQUESTED-TRANSPORT (28 bytes).
    let allocate = harness.message(Method::ALLOCATE, Class::Request, |builder| {
        builder.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    });
    assert_eq!(allocate.len(), 28);
    let allocate_ratio = amplification(&mut harness, v4, &allocate);
    // With FINGERPRINT in the request, the answer carries one too.
    let fingerprinted = harness.message(Method::ALLOCATE, Class::Request, |builder| {
        builder
            .attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .fingerprint();
    });
    let fingerprinted_ratio = amplification(&mut harness, v4, &fingerprinted);
    let binding = harness.message(Method::BINDING, Class::Request, |_| {});
    let binding_v4 = amplification(&mut harness, v4, &binding);
    let binding_v6 = amplification(&mut harness, v6, &binding);
    eprintln!(
        "amplification: Allocate 401 {allocate_ratio:.2}x (with FINGERPRINT \
         {fingerprinted_ratio:.2}x), Binding {binding_v4:.2}x (IPv4) {binding_v6:.2}x (IPv6)"
    );
    assert!(allocate_ratio <= 3.5, "{allocate_ratio}");
    assert!(fingerprinted_ratio <= 3.5, "{fingerprinted_ratio}");
    assert!(
        binding_v4 <= 1.6 && binding_v6 <= 2.2,
        "{binding_v4} {binding_v6}"
    );
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_source() {
    let mut harness = Harness::new().with_limits(ServerLimits {
        unauthenticated_answers_per_second: 10,
        unauthenticated_answers_burst: 20,
        ..ServerLimits::default()
    });
    let spoofed = flow("198.18.1.99:1");
    let mut answered = 0;
    for _ in 0..100 {
        let allocate = harness.message(Method::ALLOCATE, Class::Request, |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let (_, _, transmits) = harness.send(spoofed, &allocate);
        answered += transmits.len();
    }
    assert_eq!(answered, 20, "the burst");
    assert_eq!(harness.server.stats().unauthenticated_answers_dropped, 80);
    // Malformed requests (400) draw from the same bucket.
    let mut malformed = harness.message(Method::ALLOCATE, Class::Request, |builder| {
        builder.u32_attribute(attr::LIFETIME, 1);
    });
    malformed[23] = 200;
    let (_, _, transmits) = harness.send(spoofed, &malformed);
    assert!(transmits.is_empty());
    // Other sources are unaffected, and so are Binding and authenticated requests.
    assert_eq!(
        error_code(&harness.allocate_as(flow(CLIENT), Credentials::None, &[]).0),
        401
    );
    let binding = harness.message(Method::BINDING, Class::Request, |_| {});
    assert_eq!(harness.send(spoofed, &binding).2.len(), 1);
    // A source that sent back its nonce receives our answers: not limited.
    let verified = flow("198.18.1.98:1");
    for _ in 0..100 {
        let (response, _) = harness.allocate_as(verified, Credentials::WrongPassword("alice"), &[]);
        assert_eq!(error_code(&response), 401);
    }
    // The bucket refills at the configured rate.
    harness.advance(Duration::from_secs(1));
    let mut answered = 0;
    for _ in 0..100 {
        let allocate = harness.message(Method::ALLOCATE, Class::Request, |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        answered += harness.send(spoofed, &allocate).2.len();
    }
    assert_eq!(answered, 10);
}
