//! The zero-copy STUN message parser (RFC 8489 §5, §14).

use std::net::SocketAddr;

use super::attributes::{self as attr, AddressFamily, ErrorCode, PasswordAlgorithm};
use super::{
    integrity, padded_len, split_message_type, Class, Method, TransactionId, HEADER_LEN,
    MAGIC_COOKIE,
};

/// At most this many distinct unknown comprehension-required attributes are remembered
/// for the UNKNOWN-ATTRIBUTES answer; a message listing more is answered with these.
pub const MAX_UNKNOWN_ATTRIBUTES: usize = 16;

/// Why bytes are not a well-formed STUN message (RFC 8489 §6.3: such a message is
/// answered with 400 when it is a request whose header parsed, else discarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than the 20-byte STUN header")]
    TooShort,
    #[error("the two most significant bits are not zero")]
    NotStun,
    #[error("wrong magic cookie")]
    BadMagicCookie,
    #[error("message length is not a multiple of 4")]
    UnalignedLength,
    #[error("message length field disagrees with the datagram size")]
    LengthMismatch,
    #[error("attribute 0x{0:04x} runs past the end of the message")]
    AttributeOverrun(u16),
    #[error("attribute header truncated")]
    TruncatedAttribute,
    #[error("integrity or fingerprint attribute 0x{0:04x} has an invalid length")]
    BadIntegrityLength(u16),
}

/// Why a present attribute's value cannot be used (→ 400, or 440 for an unknown family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("malformed attribute 0x{0:04x}")]
    Malformed(u16),
    #[error("unknown address family 0x{0:02x}")]
    UnknownAddressFamily(u8),
    #[error("unknown password algorithm 0x{0:04x}")]
    UnknownPasswordAlgorithm(u16),
}

/// The fixed header of a STUN message: enough to answer 400 to a request whose
/// attributes are malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub method: Method,
    pub class: Class,
    pub length: u16,
    pub transaction_id: TransactionId,
}

/// Parses and validates only the 20-byte header (RFC 8489 §5, §6.3).
pub fn parse_header(bytes: &[u8]) -> Result<Header, ParseError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(ParseError::TooShort)?;
    let message_type = u16::from_be_bytes([header[0], header[1]]);
    if message_type & 0xC000 != 0 {
        return Err(ParseError::NotStun);
    }
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if cookie != MAGIC_COOKIE {
        return Err(ParseError::BadMagicCookie);
    }
    let length = u16::from_be_bytes([header[2], header[3]]);
    let mut transaction_id = [0u8; 12];
    transaction_id.copy_from_slice(&header[8..20]);
    let (method, class) = split_message_type(message_type);
    Ok(Header {
        method,
        class,
        length,
        transaction_id: TransactionId(transaction_id),
    })
}

/// One attribute as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
}

/// Iterates over well-formed TLVs of an already validated attribute region.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        let (kind, value, rest) = split_attribute(self.rest).ok()?;
        self.rest = rest;
        Some(RawAttribute { kind, value })
    }
}

/// Splits one TLV (and its padding) off the front of `bytes`.
fn split_attribute(bytes: &[u8]) -> Result<(u16, &[u8], &[u8]), ParseError> {
    let head = bytes.get(..4).ok_or(ParseError::TruncatedAttribute)?;
    let kind = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let value = bytes
        .get(4..4 + len)
        .ok_or(ParseError::AttributeOverrun(kind))?;
    // The padding may be absent only at the very end of an (unaligned) buffer, which the
    // header check already excludes; treat a missing pad as an overrun.
    let rest = bytes
        .get(4 + padded_len(len)..)
        .ok_or(ParseError::AttributeOverrun(kind))?;
    Ok((kind, value, rest))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Regular,
    AfterMessageIntegrity,
    AfterMessageIntegritySha256,
    AfterFingerprint,
}

/// A parsed STUN message borrowing the datagram (RFC 8489 §5).
///
/// Parsing walks the attributes once to validate their framing, to locate the integrity
/// and fingerprint attributes and to collect unknown comprehension-required types; the
/// typed accessors then look values up lazily. The first of duplicate attributes wins, and
/// attributes after MESSAGE-INTEGRITY(-SHA256) are ignored except MESSAGE-INTEGRITY-SHA256
/// after MESSAGE-INTEGRITY and FINGERPRINT (RFC 8489 §14.5–14.7).
#[derive(Debug, Clone)]
pub struct Message<'a> {
    bytes: &'a [u8],
    header: Header,
    /// End of the attributes that count (start of the first integrity/fingerprint).
    regular_end: usize,
    message_integrity: Option<usize>,
    message_integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
    unknown_required: [u16; MAX_UNKNOWN_ATTRIBUTES],
    unknown_count: usize,
}

impl<'a> Message<'a> {
    /// Parses a whole datagram as one STUN message (RFC 8489 §6.3). Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let header = parse_header(bytes)?;
        let length = usize::from(header.length);
        if length % 4 != 0 {
            return Err(ParseError::UnalignedLength);
        }
        if bytes.len() != HEADER_LEN + length {
            return Err(ParseError::LengthMismatch);
        }
        let mut message = Message {
            bytes,
            header,
            regular_end: bytes.len(),
            message_integrity: None,
            message_integrity_sha256: None,
            fingerprint: None,
            unknown_required: [0; MAX_UNKNOWN_ATTRIBUTES],
            unknown_count: 0,
        };
        let mut phase = Phase::Regular;
        let mut offset = HEADER_LEN;
        while let Some(remaining) = bytes.get(offset..).filter(|r| !r.is_empty()) {
            let (kind, value, rest) = split_attribute(remaining)?;
            let next = bytes.len() - rest.len();
            match (phase, kind) {
                (Phase::Regular, attr::MESSAGE_INTEGRITY) => {
                    check_integrity_length(kind, value.len())?;
                    message.regular_end = offset;
                    message.message_integrity = Some(offset);
                    phase = Phase::AfterMessageIntegrity;
                }
                (Phase::Regular | Phase::AfterMessageIntegrity, attr::MESSAGE_INTEGRITY_SHA256) => {
                    check_integrity_length(kind, value.len())?;
                    message.regular_end = message.regular_end.min(offset);
                    message.message_integrity_sha256 = Some(offset);
                    phase = Phase::AfterMessageIntegritySha256;
                }
                (Phase::AfterFingerprint, _) => {}
                (_, attr::FINGERPRINT) => {
                    check_integrity_length(kind, value.len())?;
                    message.regular_end = message.regular_end.min(offset);
                    message.fingerprint = Some(offset);
                    phase = Phase::AfterFingerprint;
                }
                (Phase::Regular, _)
                    if attr::is_comprehension_required(kind) && !attr::is_known_required(kind) =>
                {
                    message.note_unknown(kind);
                }
                _ => {}
            }
            offset = next;
        }
        Ok(message)
    }

    fn note_unknown(&mut self, kind: u16) {
        let seen = &self.unknown_required[..self.unknown_count];
        if !seen.contains(&kind) && self.unknown_count < MAX_UNKNOWN_ATTRIBUTES {
            self.unknown_required[self.unknown_count] = kind;
            self.unknown_count += 1;
        }
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn method(&self) -> Method {
        self.header.method
    }

    pub fn class(&self) -> Class {
        self.header.class
    }

    pub fn transaction_id(&self) -> &TransactionId {
        &self.header.transaction_id
    }

    /// Unknown comprehension-required attribute types, deduplicated, in order of
    /// appearance (RFC 8489 §6.3.1: a request carrying any is answered with 420).
    pub fn unknown_comprehension_required(&self) -> &[u16] {
        &self.unknown_required[..self.unknown_count]
    }

    /// The attributes that count: everything before the first integrity/fingerprint attribute.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            rest: self
                .bytes
                .get(HEADER_LEN..self.regular_end)
                .unwrap_or_default(),
        }
    }

    /// The value of the first attribute of `kind` among the counted attributes.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes().find(|a| a.kind == kind).map(|a| a.value)
    }

    /// The value of the attribute starting at `offset` (one of the recorded positions).
    fn value_at(&self, offset: usize) -> Option<&'a [u8]> {
        let (_, value, _) = split_attribute(self.bytes.get(offset..)?).ok()?;
        Some(value)
    }

    fn xor_address(&self, kind: u16) -> Result<Option<SocketAddr>, AttributeError> {
        self.attribute(kind)
            .map(|value| decode_xor(value, kind, self.transaction_id()))
            .transpose()
    }

    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2).
    pub fn xor_mapped_address(&self) -> Result<Option<SocketAddr>, AttributeError> {
        self.xor_address(attr::XOR_MAPPED_ADDRESS)
    }

    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5).
    pub fn xor_relayed_address(&self) -> Result<Option<SocketAddr>, AttributeError> {
        self.xor_address(attr::XOR_RELAYED_ADDRESS)
    }

    /// Every XOR-PEER-ADDRESS, in order (RFC 8656 §18.3; CreatePermission may carry several).
    pub fn xor_peer_addresses(&self) -> XorPeerAddresses<'a> {
        XorPeerAddresses {
            attributes: self.attributes(),
            transaction_id: self.header.transaction_id,
        }
    }

    /// The first XOR-PEER-ADDRESS (RFC 8656 §18.3).
    pub fn xor_peer_address(&self) -> Result<Option<SocketAddr>, AttributeError> {
        self.xor_address(attr::XOR_PEER_ADDRESS)
    }

    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub fn mapped_address(&self) -> Result<Option<SocketAddr>, AttributeError> {
        self.attribute(attr::MAPPED_ADDRESS)
            .map(|value| {
                attr::decode_address(value).ok_or(AttributeError::Malformed(attr::MAPPED_ADDRESS))
            })
            .transpose()
    }

    fn text(&self, kind: u16, max_len: usize) -> Result<Option<&'a str>, AttributeError> {
        self.attribute(kind)
            .map(|value| {
                if value.len() > max_len {
                    return Err(AttributeError::Malformed(kind));
                }
                std::str::from_utf8(value).map_err(|_| AttributeError::Malformed(kind))
            })
            .transpose()
    }

    /// USERNAME (RFC 8489 §14.3: < 509 bytes of UTF-8).
    pub fn username(&self) -> Result<Option<&'a str>, AttributeError> {
        self.text(attr::USERNAME, 508)
    }

    /// REALM (RFC 8489 §14.9: < 763 bytes).
    pub fn realm(&self) -> Result<Option<&'a str>, AttributeError> {
        self.text(attr::REALM, 762)
    }

    /// NONCE (RFC 8489 §14.10: < 763 bytes), as raw bytes.
    pub fn nonce(&self) -> Result<Option<&'a [u8]>, AttributeError> {
        self.attribute(attr::NONCE)
            .map(|value| {
                if value.len() > 762 {
                    Err(AttributeError::Malformed(attr::NONCE))
                } else {
                    Ok(value)
                }
            })
            .transpose()
    }

    /// SOFTWARE (RFC 8489 §14.14: < 763 bytes).
    pub fn software(&self) -> Result<Option<&'a str>, AttributeError> {
        self.text(attr::SOFTWARE, 762)
    }

    /// ERROR-CODE (RFC 8489 §14.8).
    pub fn error_code(&self) -> Result<Option<ErrorCode<'a>>, AttributeError> {
        self.attribute(attr::ERROR_CODE)
            .map(|value| {
                let malformed = AttributeError::Malformed(attr::ERROR_CODE);
                let class = u16::from(value.get(2).ok_or(malformed)? & 0x07);
                let number = u16::from(*value.get(3).ok_or(malformed)?);
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(malformed);
                }
                let reason = std::str::from_utf8(value.get(4..).unwrap_or_default())
                    .map_err(|_| malformed)?;
                Ok(ErrorCode {
                    code: class * 100 + number,
                    reason,
                })
            })
            .transpose()
    }

    fn fixed<const N: usize>(&self, kind: u16) -> Result<Option<[u8; N]>, AttributeError> {
        self.attribute(kind)
            .map(|value| <[u8; N]>::try_from(value).map_err(|_| AttributeError::Malformed(kind)))
            .transpose()
    }

    /// LIFETIME in seconds (RFC 8656 §18.4).
    pub fn lifetime(&self) -> Result<Option<u32>, AttributeError> {
        Ok(self.fixed::<4>(attr::LIFETIME)?.map(u32::from_be_bytes))
    }

    /// The protocol number of REQUESTED-TRANSPORT (RFC 8656 §18.7).
    pub fn requested_transport(&self) -> Result<Option<u8>, AttributeError> {
        Ok(self.fixed::<4>(attr::REQUESTED_TRANSPORT)?.map(|v| v[0]))
    }

    /// Whether DONT-FRAGMENT is present (RFC 8656 §18.9; it has no value).
    pub fn dont_fragment(&self) -> bool {
        self.attribute(attr::DONT_FRAGMENT).is_some()
    }

    /// EVEN-PORT: `Some(reserve_next_port)` when present (RFC 8656 §18.6, the R bit).
    pub fn even_port(&self) -> Result<Option<bool>, AttributeError> {
        Ok(self.fixed::<1>(attr::EVEN_PORT)?.map(|v| v[0] & 0x80 != 0))
    }

    /// RESERVATION-TOKEN (RFC 8656 §18.10).
    pub fn reservation_token(&self) -> Result<Option<u64>, AttributeError> {
        Ok(self
            .fixed::<8>(attr::RESERVATION_TOKEN)?
            .map(u64::from_be_bytes))
    }

    fn family(&self, kind: u16) -> Result<Option<AddressFamily>, AttributeError> {
        self.fixed::<4>(kind)?
            .map(|v| {
                AddressFamily::from_code(v[0]).ok_or(AttributeError::UnknownAddressFamily(v[0]))
            })
            .transpose()
    }

    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.8); an unknown family is reported as
    /// [`AttributeError::UnknownAddressFamily`] (→ 440).
    pub fn requested_address_family(&self) -> Result<Option<AddressFamily>, AttributeError> {
        self.family(attr::REQUESTED_ADDRESS_FAMILY)
    }

    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.13).
    pub fn additional_address_family(&self) -> Result<Option<AddressFamily>, AttributeError> {
        self.family(attr::ADDITIONAL_ADDRESS_FAMILY)
    }

    /// CHANNEL-NUMBER (RFC 8656 §18.1), unvalidated range.
    pub fn channel_number(&self) -> Result<Option<u16>, AttributeError> {
        Ok(self
            .fixed::<4>(attr::CHANNEL_NUMBER)?
            .map(|v| u16::from_be_bytes([v[0], v[1]])))
    }

    /// DATA (RFC 8656 §18.2).
    pub fn data(&self) -> Option<&'a [u8]> {
        self.attribute(attr::DATA)
    }

    /// Where the DATA value sits inside [`Self::as_bytes`] (for zero-copy forwarding).
    pub fn data_range(&self) -> Option<std::ops::Range<usize>> {
        let value = self.data()?;
        let start = (value.as_ptr() as usize).checked_sub(self.bytes.as_ptr() as usize)?;
        Some(start..start + value.len())
    }

    /// PASSWORD-ALGORITHM (RFC 8489 §14.12); unknown algorithms are reported as
    /// [`AttributeError::UnknownPasswordAlgorithm`].
    pub fn password_algorithm(&self) -> Result<Option<PasswordAlgorithm>, AttributeError> {
        self.attribute(attr::PASSWORD_ALGORITHM)
            .map(|value| {
                let mut list = PasswordAlgorithms::parse(value)
                    .ok_or(AttributeError::Malformed(attr::PASSWORD_ALGORITHM))?;
                let code = list
                    .next()
                    .ok_or(AttributeError::Malformed(attr::PASSWORD_ALGORITHM))?;
                if list.next().is_some() {
                    return Err(AttributeError::Malformed(attr::PASSWORD_ALGORITHM));
                }
                PasswordAlgorithm::from_code(code)
                    .ok_or(AttributeError::UnknownPasswordAlgorithm(code))
            })
            .transpose()
    }

    /// PASSWORD-ALGORITHMS as raw algorithm codes (RFC 8489 §14.11).
    pub fn password_algorithms(&self) -> Result<Option<PasswordAlgorithms<'a>>, AttributeError> {
        self.attribute(attr::PASSWORD_ALGORITHMS)
            .map(|value| {
                PasswordAlgorithms::parse(value)
                    .ok_or(AttributeError::Malformed(attr::PASSWORD_ALGORITHMS))
            })
            .transpose()
    }

    /// USERHASH (RFC 8489 §14.4).
    pub fn userhash(&self) -> Result<Option<[u8; 32]>, AttributeError> {
        self.fixed::<32>(attr::USERHASH)
    }

    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
    pub fn unknown_attributes(&self) -> Result<Option<UnknownAttributes<'a>>, AttributeError> {
        self.attribute(attr::UNKNOWN_ATTRIBUTES)
            .map(|value| {
                if value.len() % 2 != 0 {
                    return Err(AttributeError::Malformed(attr::UNKNOWN_ATTRIBUTES));
                }
                Ok(UnknownAttributes { rest: value })
            })
            .transpose()
    }

    /// The MESSAGE-INTEGRITY value (RFC 8489 §14.5).
    pub fn message_integrity(&self) -> Option<&'a [u8]> {
        self.value_at(self.message_integrity?)
    }

    /// The MESSAGE-INTEGRITY-SHA256 value, 16–32 bytes (RFC 8489 §14.6).
    pub fn message_integrity_sha256(&self) -> Option<&'a [u8]> {
        self.value_at(self.message_integrity_sha256?)
    }

    /// The FINGERPRINT value (RFC 8489 §14.7).
    pub fn fingerprint(&self) -> Option<u32> {
        let value: [u8; 4] = self.value_at(self.fingerprint?)?.try_into().ok()?;
        Some(u32::from_be_bytes(value))
    }

    /// Verifies MESSAGE-INTEGRITY with `key` in constant time (RFC 8489 §14.5);
    /// false when absent.
    pub fn verify_message_integrity(&self, key: &[u8]) -> bool {
        let (Some(offset), Some(value)) = (self.message_integrity, self.message_integrity()) else {
            return false;
        };
        let Some(prefix) = self.bytes.get(..offset) else {
            return false;
        };
        let expected = integrity::hmac_sha1(key, prefix, value.len());
        integrity::constant_time_eq(&expected, value)
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 with `key` in constant time, honouring the
    /// truncation to the value's length (RFC 8489 §14.6); false when absent.
    pub fn verify_message_integrity_sha256(&self, key: &[u8]) -> bool {
        let (Some(offset), Some(value)) = (
            self.message_integrity_sha256,
            self.message_integrity_sha256(),
        ) else {
            return false;
        };
        let Some(prefix) = self.bytes.get(..offset) else {
            return false;
        };
        let expected = integrity::hmac_sha256(key, prefix, value.len());
        expected
            .get(..value.len())
            .is_some_and(|truncated| integrity::constant_time_eq(truncated, value))
    }

    /// Verifies FINGERPRINT (RFC 8489 §14.7); false when absent.
    pub fn verify_fingerprint(&self) -> bool {
        let (Some(offset), Some(value)) = (self.fingerprint, self.fingerprint()) else {
            return false;
        };
        let Some(prefix) = self.bytes.get(..offset) else {
            return false;
        };
        integrity::fingerprint(prefix) == value
    }
}

fn check_integrity_length(kind: u16, len: usize) -> Result<(), ParseError> {
    let ok = match kind {
        attr::MESSAGE_INTEGRITY => len == 20,
        attr::MESSAGE_INTEGRITY_SHA256 => (16..=32).contains(&len) && len.is_multiple_of(4),
        _ => len == 4,
    };
    if ok {
        Ok(())
    } else {
        Err(ParseError::BadIntegrityLength(kind))
    }
}

fn decode_xor(
    value: &[u8],
    kind: u16,
    transaction_id: &TransactionId,
) -> Result<SocketAddr, AttributeError> {
    if let Some(&family) = value.get(1) {
        if AddressFamily::from_code(family).is_none() {
            return Err(AttributeError::UnknownAddressFamily(family));
        }
    }
    attr::decode_xor_address(value, transaction_id).ok_or(AttributeError::Malformed(kind))
}

/// Every XOR-PEER-ADDRESS of a message, decoded (RFC 8656 §18.3).
#[derive(Debug, Clone)]
pub struct XorPeerAddresses<'a> {
    attributes: Attributes<'a>,
    transaction_id: TransactionId,
}

impl Iterator for XorPeerAddresses<'_> {
    type Item = Result<SocketAddr, AttributeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let found = self.attributes.find(|a| a.kind == attr::XOR_PEER_ADDRESS)?;
        Some(decode_xor(
            found.value,
            attr::XOR_PEER_ADDRESS,
            &self.transaction_id,
        ))
    }
}

/// The algorithm codes of a PASSWORD-ALGORITHMS (or PASSWORD-ALGORITHM) value
/// (RFC 8489 §14.11); parameters are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordAlgorithms<'a> {
    rest: &'a [u8],
}

impl<'a> PasswordAlgorithms<'a> {
    /// Validates the whole list up front so iteration cannot fail.
    fn parse(value: &'a [u8]) -> Option<PasswordAlgorithms<'a>> {
        let mut rest = value;
        while !rest.is_empty() {
            let params = usize::from(u16::from_be_bytes([*rest.get(2)?, *rest.get(3)?]));
            rest = rest.get(4 + padded_len(params)..)?;
        }
        Some(PasswordAlgorithms { rest: value })
    }
}

impl Iterator for PasswordAlgorithms<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let code = u16::from_be_bytes([*self.rest.first()?, *self.rest.get(1)?]);
        let params = usize::from(u16::from_be_bytes([*self.rest.get(2)?, *self.rest.get(3)?]));
        self.rest = self.rest.get(4 + padded_len(params)..).unwrap_or_default();
        Some(code)
    }
}

/// The attribute types listed in UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
#[derive(Debug, Clone)]
pub struct UnknownAttributes<'a> {
    rest: &'a [u8],
}

impl Iterator for UnknownAttributes<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        let kind = u16::from_be_bytes([*self.rest.first()?, *self.rest.get(1)?]);
        self.rest = self.rest.get(2..).unwrap_or_default();
        Some(kind)
    }
}
