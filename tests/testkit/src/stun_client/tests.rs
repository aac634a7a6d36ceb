use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use super::*;

#[test]
fn send_indication_carries_peer_and_data() {
    let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(198, 19, 1, 2), 40000));
    let message = send_indication([9; 12], peer, &[1, 2, 3, 4, 5], false);
    assert_eq!(message.len(), 20 + 12 + 4 + 8);
    let parsed = Message::parse(&message).expect("well formed");
    assert_eq!(
        (parsed.method(), parsed.class()),
        (Method::SEND, Class::Indication)
    );
    assert_eq!(parsed.xor_peer_address().ok().flatten(), Some(peer));
    assert_eq!(parsed.data(), Some(&[1u8, 2, 3, 4, 5][..]));
    let with_fingerprint = send_indication([9; 12], peer, &[1, 2, 3, 4, 5], true);
    assert_eq!(with_fingerprint.len(), message.len() + 8);
    assert_eq!(
        &with_fingerprint[message.len()..message.len() + 2],
        &[0x80, 0x28]
    );
}

#[test]
fn ipv6_peer_addresses_are_xored_with_the_transaction_id() {
    let peer = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2),
        40000,
        0,
        0,
    ));
    let message = data_indication([0x5a; 12], peer, &[7; 8]);
    let parsed = Message::parse(&message).expect("well formed");
    assert_eq!(
        (parsed.method(), parsed.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(parsed.xor_peer_address().ok().flatten(), Some(peer));
}

#[test]
fn relayed_payload_unwraps_channel_data_and_data_indications() {
    let mut channel_data = channel_data(0x4001, &[7, 7, 7]);
    assert_eq!(relayed_payload(&channel_data), Some(&[7u8, 7, 7][..]));
    channel_data.truncate(5);
    assert_eq!(relayed_payload(&channel_data), None);
    let peer = SocketAddr::from(([198, 19, 1, 2], 5));
    assert_eq!(
        relayed_payload(&data_indication([2; 12], peer, &[5, 6])),
        Some(&[5u8, 6][..])
    );
    assert_eq!(
        relayed_payload(&send_indication([2; 12], peer, &[5, 6], false)),
        None
    );
}

#[test]
fn responses_yield_error_code_realm_and_nonce() {
    let response = message(
        Method::ALLOCATE,
        Class::ErrorResponse,
        &TransactionId([3; 12]),
        None,
        |builder| {
            builder
                .error_code(401, "Unauthorized")
                .attribute(attr::REALM, b"bench.invalid")
                .attribute(attr::NONCE, b"abc");
        },
    );
    let response = Response::parse(&response).expect("a response");
    assert!(!response.success);
    assert_eq!(response.error_code, Some(401));
    assert_eq!(
        (response.realm.as_deref(), response.nonce.as_deref()),
        (Some("bench.invalid"), Some(&b"abc"[..]))
    );
    assert_eq!(response.transaction_id, [3; 12]);
    assert!(Response::parse(&binding_request()).is_none());
    let session =
        Session::from_challenge(&User::new("alice", "pw"), &response).expect("a challenge");
    assert_eq!(
        session.key,
        md5_long_term_key("alice", "bench.invalid", "pw")
    );
}

#[test]
fn signed_requests_carry_credentials_integrity_and_fingerprint() {
    let session = Session {
        username: "alice".into(),
        realm: "example.test".into(),
        nonce: b"n0nce".to_vec(),
        key: md5_long_term_key("alice", "example.test", "pw"),
    };
    let request = refresh_request(0, &session);
    let parsed = Message::parse(&request).expect("well formed");
    assert_eq!(parsed.method(), Method::REFRESH);
    assert_eq!(parsed.realm().ok().flatten(), Some("example.test"));
    assert!(parsed.verify_message_integrity(&session.key));
    let allocate = allocate_request(true, None);
    let allocate = Message::parse(&allocate).expect("well formed");
    assert_eq!(allocate.method(), Method::ALLOCATE);
}
