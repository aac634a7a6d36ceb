//! Builder → parser round trips, including integrity over IPv4/IPv6 addresses.

use std::net::SocketAddr;

use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::{
    Class, Message, MessageBuilder, Method, PasswordAlgorithm, TransactionId,
};

const TID: TransactionId = TransactionId([0xA5; 12]);

#[test]
fn every_typed_attribute_round_trips() {
    let peer_v4: SocketAddr = "198.18.0.7:5000".parse().unwrap();
    let peer_v6: SocketAddr = "[2001:db8::7]:6000".parse().unwrap();
    let mut buf = Vec::with_capacity(512);
    MessageBuilder::new(&mut buf, Method::CREATE_PERMISSION, Class::Request, &TID)
        .xor_address(attr::XOR_PEER_ADDRESS, peer_v4)
        .xor_address(attr::XOR_PEER_ADDRESS, peer_v6)
        .xor_address(attr::XOR_RELAYED_ADDRESS, peer_v6)
        .mapped_address(peer_v4)
        .attribute(attr::USERNAME, b"alice")
        .u32_attribute(attr::LIFETIME, 600)
        .attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attribute(attr::DONT_FRAGMENT, &[])
        .attribute(attr::EVEN_PORT, &[0x80])
        .attribute(
            attr::RESERVATION_TOKEN,
            &0x0102_0304_0506_0708u64.to_be_bytes(),
        )
        .attribute(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0])
        .attribute(attr::CHANNEL_NUMBER, &[0x40, 0x10, 0, 0])
        .attribute(attr::DATA, b"payload")
        .password_algorithms(&[PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256])
        .password_algorithm(PasswordAlgorithm::Sha256)
        .unknown_attributes(&[0x0031, 0x0032])
        .error_code(438, "Stale Nonce");
    let message = Message::parse(&buf).unwrap();
    assert_eq!(message.method(), Method::CREATE_PERMISSION);
    let peers: Vec<_> = message
        .xor_peer_addresses()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(peers, vec![peer_v4, peer_v6]);
    assert_eq!(message.xor_peer_address().unwrap(), Some(peer_v4));
    assert_eq!(message.xor_relayed_address().unwrap(), Some(peer_v6));
    assert_eq!(message.mapped_address().unwrap(), Some(peer_v4));
    assert_eq!(message.username().unwrap(), Some("alice"));
    assert_eq!(message.lifetime().unwrap(), Some(600));
    assert_eq!(message.requested_transport().unwrap(), Some(17));
    assert!(message.dont_fragment());
    assert_eq!(message.even_port().unwrap(), Some(true));
    assert_eq!(
        message.reservation_token().unwrap(),
        Some(0x0102_0304_0506_0708)
    );
    assert_eq!(
        message.requested_address_family().unwrap(),
        Some(crate::protocol::stun::AddressFamily::Ipv6)
    );
    assert_eq!(message.channel_number().unwrap(), Some(0x4010));
    assert_eq!(message.data(), Some(&b"payload"[..]));
    let range = message.data_range().unwrap();
    assert_eq!(&buf[range], b"payload");
    let algorithms: Vec<u16> = message.password_algorithms().unwrap().unwrap().collect();
    assert_eq!(algorithms, vec![1, 2]);
    assert_eq!(
        message.password_algorithm().unwrap(),
        Some(PasswordAlgorithm::Sha256)
    );
    let unknown: Vec<u16> = message.unknown_attributes().unwrap().unwrap().collect();
    assert_eq!(unknown, vec![0x0031, 0x0032]);
    let error = message.error_code().unwrap().unwrap();
    assert_eq!((error.code, error.reason), (438, "Stale Nonce"));
    assert!(message.unknown_comprehension_required().is_empty());
}

#[test]
fn integrity_and_fingerprint_round_trip_and_detect_tampering() {
    let key = b"long-term key";
    let mut buf = Vec::new();
    MessageBuilder::new(&mut buf, Method::ALLOCATE, Class::SuccessResponse, &TID)
        .xor_address(
            attr::XOR_RELAYED_ADDRESS,
            "[2001:db8::1]:49152".parse().unwrap(),
        )
        .u32_attribute(attr::LIFETIME, 600)
        .message_integrity(key)
        .message_integrity_sha256(key)
        .fingerprint();
    let message = Message::parse(&buf).unwrap();
    assert!(message.verify_message_integrity(key));
    assert!(message.verify_message_integrity_sha256(key));
    assert!(message.verify_fingerprint());
    assert!(!message.verify_message_integrity(b"other key"));
    assert!(!message.verify_message_integrity_sha256(b"other key"));

    let mut tampered = buf.clone();
    tampered[30] ^= 0x01;
    let message = Message::parse(&tampered).unwrap();
    assert!(!message.verify_message_integrity(key));
    assert!(!message.verify_message_integrity_sha256(key));
    assert!(!message.verify_fingerprint());
}

#[test]
fn truncated_sha256_integrity_verifies() {
    // RFC 8489 §14.6: the value may be truncated to 16..=32 bytes in steps of 4.
    let key = b"k";
    let mut buf = Vec::new();
    MessageBuilder::new(&mut buf, Method::BINDING, Class::Request, &TID)
        .attribute(attr::SOFTWARE, b"x");
    let mac = crate::protocol::stun::integrity::hmac_sha256(key, &buf, 16);
    let mut truncated = Vec::new();
    MessageBuilder::new(&mut truncated, Method::BINDING, Class::Request, &TID)
        .attribute(attr::SOFTWARE, b"x")
        .attribute(attr::MESSAGE_INTEGRITY_SHA256, &mac[..16]);
    let message = Message::parse(&truncated).unwrap();
    assert!(message.verify_message_integrity_sha256(key));
    assert!(!message.verify_message_integrity_sha256(b"other"));
}

#[test]
fn builder_reuses_the_buffer() {
    let mut buf = Vec::with_capacity(1024);
    let capacity = buf.capacity();
    for _ in 0..3 {
        MessageBuilder::new(&mut buf, Method::BINDING, Class::Indication, &TID)
            .attribute(attr::SOFTWARE, b"abc");
        assert_eq!(buf.len(), 28);
        assert_eq!(buf.capacity(), capacity);
    }
    assert_eq!(&buf[2..4], &[0, 8]);
}
