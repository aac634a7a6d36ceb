//! The STUN codec (RFC 8489 §5, §14): parsing never panics, every accessor copes with
//! whatever the attributes hold, and a parsed message re-encoded by the builder parses to
//! the same header and attributes; FINGERPRINT and MESSAGE-INTEGRITY verify as the
//! builder wrote them.

use turn_relay::protocol::stun::{
    attributes as attr, parse_header, Class, Message, MessageBuilder, Method, TransactionId,
};

/// The key the seeds and the re-encoding sign with.
const KEY: &[u8] = b"0123456789abcdef";
/// The longest STUN message: the header and a body the 16-bit length field can describe.
const MAX_MESSAGE_LEN: usize = turn_relay::protocol::stun::HEADER_LEN + 0xFFFC;
/// What the re-encoding adds: MESSAGE-INTEGRITY (24 bytes) and FINGERPRINT (8).
const ENCODING_OVERHEAD: usize = 32;

pub fn run(data: &[u8]) {
    let header = parse_header(data);
    let Ok(message) = Message::parse(data) else {
        return;
    };
    assert_eq!(
        header.as_ref().ok(),
        Some(message.header()),
        "parse_header and parse disagree"
    );
    assert_eq!(message.as_bytes(), data);
    touch_every_accessor(&message);
    if data.len() + ENCODING_OVERHEAD > MAX_MESSAGE_LEN {
        // The re-encoding below adds MESSAGE-INTEGRITY and FINGERPRINT, which would not
        // fit the 16-bit length field.
        return;
    }

    // Re-encoded by the builder: the same header and the same counted attributes.
    let attributes: Vec<_> = message.attributes().collect();
    let mut encoded = Vec::new();
    let mut builder = MessageBuilder::new(
        &mut encoded,
        message.method(),
        message.class(),
        message.transaction_id(),
    );
    for attribute in &attributes {
        builder.attribute(attribute.kind, attribute.value);
    }
    builder.message_integrity(KEY).fingerprint();
    let reparsed = Message::parse(&encoded).expect("the builder writes valid messages");
    assert_eq!(
        (
            reparsed.method(),
            reparsed.class(),
            reparsed.transaction_id()
        ),
        (message.method(), message.class(), message.transaction_id())
    );
    assert!(
        reparsed.attributes().eq(attributes.iter().copied()),
        "attributes differ after re-encoding"
    );
    assert!(reparsed.verify_message_integrity(KEY));
    assert!(reparsed.verify_fingerprint());
    assert_eq!(
        reparsed.unknown_comprehension_required(),
        message.unknown_comprehension_required()
    );
}

/// Calls every typed accessor; only panics matter, so the results are dropped.
fn touch_every_accessor(message: &Message<'_>) {
    let _ = message.xor_mapped_address();
    let _ = message.xor_relayed_address();
    let _ = message.xor_peer_addresses().count();
    let _ = message.xor_peer_address();
    let _ = message.mapped_address();
    let _ = message.username();
    let _ = message.realm();
    let _ = message.nonce();
    let _ = message.software();
    let _ = message.error_code();
    let _ = message.lifetime();
    let _ = message.requested_transport();
    let _ = message.dont_fragment();
    let _ = message.even_port();
    let _ = message.reservation_token();
    let _ = message.requested_address_family();
    let _ = message.additional_address_family();
    let _ = message.channel_number();
    let _ = message.data();
    let _ = message.data_range();
    let _ = message.password_algorithm();
    let _ = message
        .password_algorithms()
        .map(|algorithms| algorithms.map(Iterator::count));
    let _ = message.userhash();
    let _ = message
        .unknown_attributes()
        .map(|unknown| unknown.map(Iterator::count));
    let _ = message.message_integrity();
    let _ = message.message_integrity_sha256();
    let _ = message.fingerprint();
    let _ = message.verify_message_integrity(KEY);
    let _ = message.verify_message_integrity_sha256(KEY);
    let _ = message.verify_fingerprint();
}

pub fn seeds() -> Vec<Vec<u8>> {
    let id = TransactionId(*b"fuzz-seed-id");
    let peer = "198.19.1.2:7000".parse().expect("address");
    let peer_v6 = "[2001:2:0:2::2]:7000".parse().expect("address");
    let mut seeds = Vec::new();
    let mut add = |method, class, attributes: &dyn Fn(&mut MessageBuilder<'_>)| {
        let mut buffer = Vec::new();
        let mut builder = MessageBuilder::new(&mut buffer, method, class, &id);
        attributes(&mut builder);
        seeds.push(buffer);
    };
    add(Method::BINDING, Class::Request, &|_| {});
    add(Method::ALLOCATE, Class::Request, &|builder| {
        builder
            .attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attribute(attr::USERNAME, b"alice")
            .attribute(attr::REALM, b"turn-relay.local")
            .attribute(attr::NONCE, b"nonce")
            .message_integrity(KEY)
            .fingerprint();
    });
    add(Method::CREATE_PERMISSION, Class::Request, &|builder| {
        builder
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .xor_address(attr::XOR_PEER_ADDRESS, peer_v6)
            .message_integrity_sha256(KEY);
    });
    add(Method::SEND, Class::Indication, &|builder| {
        builder
            .xor_address(attr::XOR_PEER_ADDRESS, peer)
            .attribute(attr::DONT_FRAGMENT, &[])
            .attribute(attr::DATA, b"data")
            .fingerprint();
    });
    add(Method::ALLOCATE, Class::ErrorResponse, &|builder| {
        builder
            .error_code(401, "Unauthorized")
            .attribute(attr::REALM, b"turn-relay.local")
            .attribute(attr::NONCE, b"nonce")
            .password_algorithms(&[turn_relay::protocol::stun::PasswordAlgorithm::Sha256])
            .unknown_attributes(&[0x0031, 0x7777]);
    });
    seeds
}
