//! Malformed input: every framing error is reported, never a panic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::channel_data::{self, ChannelData};
use crate::protocol::stun::{
    parse_header, AddressFamily, AttributeError, Class, Message, MessageBuilder, Method,
    ParseError, TransactionId,
};

const TID: TransactionId = TransactionId([7; 12]);

fn request_with(attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut builder = MessageBuilder::new(&mut buf, Method::ALLOCATE, Class::Request, &TID);
    for (kind, value) in attributes {
        builder.attribute(*kind, value);
    }
    buf
}

#[test]
fn header_errors() {
    let valid = request_with(&[(attr::LIFETIME, &[0, 0, 2, 88])]);
    assert!(Message::parse(&valid).is_ok());

    assert_eq!(
        Message::parse(&valid[..19]).unwrap_err(),
        ParseError::TooShort
    );
    assert_eq!(Message::parse(&[]).unwrap_err(), ParseError::TooShort);

    let mut top_bits = valid.clone();
    top_bits[0] |= 0x80;
    assert_eq!(Message::parse(&top_bits).unwrap_err(), ParseError::NotStun);

    let mut cookie = valid.clone();
    cookie[4] ^= 1;
    assert_eq!(
        Message::parse(&cookie).unwrap_err(),
        ParseError::BadMagicCookie
    );

    let mut unaligned = valid.clone();
    unaligned[3] = 6;
    assert_eq!(
        Message::parse(&unaligned).unwrap_err(),
        ParseError::UnalignedLength
    );

    let mut lying_long = valid.clone();
    lying_long[3] = 12;
    assert_eq!(
        Message::parse(&lying_long).unwrap_err(),
        ParseError::LengthMismatch
    );

    let truncated = &valid[..valid.len() - 4];
    assert_eq!(
        Message::parse(truncated).unwrap_err(),
        ParseError::LengthMismatch
    );

    let mut trailing = valid.clone();
    trailing.extend_from_slice(&[0; 4]);
    assert_eq!(
        Message::parse(&trailing).unwrap_err(),
        ParseError::LengthMismatch
    );

    // The header alone still parses, so a server can answer 400 to a request.
    let header = parse_header(&lying_long).unwrap();
    assert_eq!(header.method, Method::ALLOCATE);
    assert_eq!(header.class, Class::Request);
    assert_eq!(header.transaction_id, TID);
}

#[test]
fn attribute_overrun_is_rejected() {
    let mut bytes = request_with(&[(attr::LIFETIME, &[0, 0, 2, 88])]);
    // Claim an 8-byte value inside a message that only holds 4.
    bytes[23] = 8;
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        ParseError::AttributeOverrun(attr::LIFETIME)
    );
    // A 5-byte value whose padding is missing.
    bytes[23] = 5;
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        ParseError::AttributeOverrun(attr::LIFETIME)
    );
}

#[test]
fn integrity_attributes_with_wrong_length_are_rejected() {
    let bytes = request_with(&[(attr::MESSAGE_INTEGRITY, &[0; 16])]);
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        ParseError::BadIntegrityLength(attr::MESSAGE_INTEGRITY)
    );
    let bytes = request_with(&[(attr::MESSAGE_INTEGRITY_SHA256, &[0; 12])]);
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        ParseError::BadIntegrityLength(attr::MESSAGE_INTEGRITY_SHA256)
    );
    let bytes = request_with(&[(attr::FINGERPRINT, &[0; 8])]);
    assert_eq!(
        Message::parse(&bytes).unwrap_err(),
        ParseError::BadIntegrityLength(attr::FINGERPRINT)
    );
}

#[test]
fn first_duplicate_wins_and_attributes_after_integrity_are_ignored() {
    let bytes = request_with(&[
        (attr::LIFETIME, &[0, 0, 0, 1]),
        (attr::LIFETIME, &[0, 0, 0, 2]),
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
        (attr::USERNAME, b"late"),
        (0x0077, &[]),
        (attr::MESSAGE_INTEGRITY_SHA256, &[0; 32]),
        (attr::REALM, b"later"),
        (attr::FINGERPRINT, &[0; 4]),
        (attr::NONCE, b"after fingerprint"),
    ]);
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(message.lifetime().unwrap(), Some(1));
    assert_eq!(message.username().unwrap(), None);
    assert_eq!(message.realm().unwrap(), None);
    assert_eq!(message.nonce().unwrap(), None);
    assert!(message.unknown_comprehension_required().is_empty());
    assert!(message.message_integrity().is_some());
    assert!(message.message_integrity_sha256().is_some());
    assert!(message.fingerprint().is_some());
    assert_eq!(message.attributes().count(), 2);
}

#[test]
fn message_integrity_after_sha256_is_ignored() {
    let bytes = request_with(&[
        (attr::MESSAGE_INTEGRITY_SHA256, &[0; 16]),
        (attr::MESSAGE_INTEGRITY, &[0; 20]),
    ]);
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(
        message.message_integrity_sha256().map(<[u8]>::len),
        Some(16)
    );
    assert!(message.message_integrity().is_none());
}

#[test]
fn unknown_attributes_are_classified() {
    let bytes = request_with(&[
        (0x7FFF, &[1]),
        (0xC001, &[2]),
        (0x0030, &[]),
        (0x7FFF, &[3]),
    ]);
    let message = Message::parse(&bytes).unwrap();
    // 0xC001 is comprehension-optional and ignored; duplicates are reported once.
    assert_eq!(message.unknown_comprehension_required(), &[0x7FFF, 0x0030]);
}

#[test]
fn malformed_values_are_reported_by_accessors() {
    let bytes = request_with(&[
        (attr::LIFETIME, &[0, 0, 1]),
        (attr::REQUESTED_ADDRESS_FAMILY, &[0x03, 0, 0, 0]),
        (attr::XOR_PEER_ADDRESS, &[0, 0x01, 0, 0]),
        (attr::USERNAME, &[0xff, 0xfe]),
        (attr::ERROR_CODE, &[0, 0, 2, 0]),
        (attr::PASSWORD_ALGORITHM, &[0, 9, 0, 0]),
        (attr::EVEN_PORT, &[0x80, 0]),
        (attr::ADDITIONAL_ADDRESS_FAMILY, &[0x02, 0, 0, 0]),
    ]);
    let message = Message::parse(&bytes).unwrap();
    assert_eq!(
        message.lifetime(),
        Err(AttributeError::Malformed(attr::LIFETIME))
    );
    assert_eq!(
        message.requested_address_family(),
        Err(AttributeError::UnknownAddressFamily(3))
    );
    assert_eq!(
        message.xor_peer_address(),
        Err(AttributeError::Malformed(attr::XOR_PEER_ADDRESS))
    );
    assert_eq!(
        message.username(),
        Err(AttributeError::Malformed(attr::USERNAME))
    );
    assert_eq!(
        message.error_code(),
        Err(AttributeError::Malformed(attr::ERROR_CODE))
    );
    assert_eq!(
        message.password_algorithm(),
        Err(AttributeError::UnknownPasswordAlgorithm(9))
    );
    assert_eq!(
        message.even_port(),
        Err(AttributeError::Malformed(attr::EVEN_PORT))
    );
    assert_eq!(
        message.additional_address_family(),
        Ok(Some(AddressFamily::Ipv6))
    );
}

#[test]
fn channel_data_framing() {
    let mut out = Vec::new();
    channel_data::encode(&mut out, 0x4001, b"hello");
    assert_eq!(out, [0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    assert!(channel_data::is_channel_data(&out));
    let parsed = ChannelData::parse(&out).unwrap();
    assert_eq!((parsed.number, parsed.data), (0x4001, &b"hello"[..]));

    // Padded to 4 bytes is also accepted (RFC 8656 §12.5).
    let mut padded = out.clone();
    padded.extend_from_slice(&[0, 0, 0]);
    assert_eq!(ChannelData::parse(&padded).unwrap().data, b"hello");
    assert_eq!(ChannelData::data_range(&padded), Some(4..9));

    // More than the padding, shorter than the length, and numbers outside 0x4000–0x7FFF.
    padded.push(0);
    assert!(ChannelData::parse(&padded).is_none());
    assert!(ChannelData::parse(&out[..8]).is_none());
    assert!(ChannelData::parse(&[0x80, 0x00, 0, 0]).is_none());
    assert!(ChannelData::parse(&[0x7F, 0xFF, 0, 0]).is_some());
    assert!(ChannelData::parse(&[0x40, 0x00, 0]).is_none());
    assert!(ChannelData::parse(&[0x40, 0x00, 0, 0]).is_some());
    assert!(!channel_data::is_channel_data(&[0x00, 0x01]));
    assert!(!channel_data::is_channel_data(&[]));
}

/// Drives every accessor so a panic anywhere in the lookups would surface.
fn exercise(bytes: &[u8]) {
    let _ = parse_header(bytes);
    let _ = ChannelData::parse(bytes);
    let Ok(message) = Message::parse(bytes) else {
        return;
    };
    let _ = message.xor_mapped_address();
    let _ = message.xor_relayed_address();
    let _ = message.xor_peer_addresses().count();
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
    let _ = message.data_range();
    let _ = message.password_algorithm();
    let _ = message
        .password_algorithms()
        .map(|list| list.map(|list| list.count()));
    let _ = message.userhash();
    let _ = message
        .unknown_attributes()
        .map(|list| list.map(|list| list.count()));
    let _ = message.verify_message_integrity(b"key");
    let _ = message.verify_message_integrity_sha256(b"key");
    let _ = message.verify_fingerprint();
}

#[test]
fn seeded_fuzz_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5354_554E);
    let seed_message = request_with(&[
        (attr::XOR_PEER_ADDRESS, &[0, 1, 0x21, 0x12, 1, 2, 3, 4]),
        (attr::PASSWORD_ALGORITHMS, &[0, 1, 0, 0, 0, 2, 0, 0]),
        (attr::ERROR_CODE, &[0, 0, 4, 1, b'x']),
        (attr::UNKNOWN_ATTRIBUTES, &[0, 1, 0, 2]),
    ]);
    let mut parsed_ok = 0;
    for round in 0..20_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            let len = rng.gen_range(0..120);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            // Often give the noise a valid-looking header so the attribute walk is reached.
            if bytes.len() >= 20 && rng.gen_bool(0.7) {
                bytes[0] &= 0x3F;
                bytes[2] = 0;
                bytes[3] = ((len - 20) & !3) as u8;
                bytes[4..8].copy_from_slice(&crate::protocol::stun::MAGIC_COOKIE.to_be_bytes());
                bytes.truncate(20 + usize::from(bytes[3]));
            }
            bytes
        } else {
            let mut bytes = seed_message.clone();
            for _ in 0..rng.gen_range(1..4) {
                let index = rng.gen_range(20..bytes.len());
                bytes[index] = rng.gen();
            }
            bytes
        };
        if Message::parse(&bytes).is_ok() {
            parsed_ok += 1;
        }
        exercise(&bytes);
    }
    // The loop must actually reach the attribute accessors, not only header rejections.
    assert!(parsed_ok > 1_000, "only {parsed_ok} inputs parsed");
}
