//! Attribute types (RFC 8489 §18.3, RFC 8656 §18) and value codecs shared by the parser
//! and the builder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{TransactionId, MAGIC_COOKIE};

// Comprehension-required range 0x0000–0x7FFF (RFC 8489 §14).
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const PASSWORD_ALGORITHM: u16 = 0x001D;
pub const USERHASH: u16 = 0x001E;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;

// Comprehension-optional range 0x8000–0xFFFF.
pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
pub const ALTERNATE_DOMAIN: u16 = 0x8003;
pub const ICMP: u16 = 0x8004;
pub const SOFTWARE: u16 = 0x8022;
pub const ALTERNATE_SERVER: u16 = 0x8023;
pub const FINGERPRINT: u16 = 0x8028;

/// The value FINGERPRINT's CRC-32 is XORed with (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// REQUESTED-TRANSPORT protocol number for UDP (RFC 8656 §18.11).
pub const TRANSPORT_UDP: u8 = 17;

/// True for the comprehension-required attributes this codec understands; anything else
/// in 0x0000–0x7FFF must be reported in UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1).
pub fn is_known_required(kind: u16) -> bool {
    matches!(
        kind,
        MAPPED_ADDRESS
            | USERNAME
            | MESSAGE_INTEGRITY
            | ERROR_CODE
            | UNKNOWN_ATTRIBUTES
            | CHANNEL_NUMBER
            | LIFETIME
            | XOR_PEER_ADDRESS
            | DATA
            | REALM
            | NONCE
            | XOR_RELAYED_ADDRESS
            | REQUESTED_ADDRESS_FAMILY
            | EVEN_PORT
            | REQUESTED_TRANSPORT
            | DONT_FRAGMENT
            | MESSAGE_INTEGRITY_SHA256
            | PASSWORD_ALGORITHM
            | USERHASH
            | XOR_MAPPED_ADDRESS
            | RESERVATION_TOKEN
    )
}

/// True for attribute types in the comprehension-required range (RFC 8489 §14).
pub fn is_comprehension_required(kind: u16) -> bool {
    kind < 0x8000
}

/// The password algorithm used to derive the long-term key (RFC 8489 §18.5, §9.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// 0x0001: key = MD5(username ":" realm ":" password).
    Md5,
    /// 0x0002: key = SHA-256(username ":" realm ":" password).
    Sha256,
}

impl PasswordAlgorithm {
    /// The IANA code (RFC 8489 §18.5).
    pub fn code(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
        }
    }

    pub fn from_code(code: u16) -> Option<PasswordAlgorithm> {
        match code {
            0x0001 => Some(PasswordAlgorithm::Md5),
            0x0002 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// An address family as carried by REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY
/// (RFC 8656 §18.8, §18.13) and by the address attributes (RFC 8489 §14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl AddressFamily {
    pub fn code(self) -> u8 {
        match self {
            AddressFamily::Ipv4 => 0x01,
            AddressFamily::Ipv6 => 0x02,
        }
    }

    pub fn from_code(code: u8) -> Option<AddressFamily> {
        match code {
            0x01 => Some(AddressFamily::Ipv4),
            0x02 => Some(AddressFamily::Ipv6),
            _ => None,
        }
    }

    pub fn of(ip: IpAddr) -> AddressFamily {
        match ip {
            IpAddr::V4(_) => AddressFamily::Ipv4,
            IpAddr::V6(_) => AddressFamily::Ipv6,
        }
    }
}

/// ERROR-CODE value (RFC 8489 §14.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// 300..=699.
    pub code: u16,
    pub reason: &'a str,
}

/// Decodes MAPPED-ADDRESS (RFC 8489 §14.1); `None` when malformed.
pub fn decode_address(value: &[u8]) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    match (family, value.len()) {
        (0x01, 8) => {
            let octets: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        (0x02, 20) => {
            let octets: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// Decodes an XOR-*-ADDRESS value (RFC 8489 §14.2); `None` when malformed.
pub fn decode_xor_address(value: &[u8], transaction_id: &TransactionId) -> Option<SocketAddr> {
    let plain = decode_address(value)?;
    Some(xor_socket_addr(plain, transaction_id))
}

/// XORs port and address with the magic cookie (and transaction ID for IPv6) — the
/// operation is its own inverse (RFC 8489 §14.2).
pub fn xor_socket_addr(addr: SocketAddr, transaction_id: &TransactionId) -> SocketAddr {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match addr.ip() {
        IpAddr::V4(v4) => {
            let mut octets = v4.octets();
            for (byte, mask) in octets.iter_mut().zip(cookie.iter()) {
                *byte ^= mask;
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            let mask = cookie.iter().chain(transaction_id.0.iter());
            for (byte, mask) in octets.iter_mut().zip(mask) {
                *byte ^= mask;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    SocketAddr::new(ip, port)
}

/// Appends the MAPPED-ADDRESS encoding of `addr` (RFC 8489 §14.1) to `out`.
pub fn encode_address(addr: SocketAddr, out: &mut Vec<u8>) {
    out.push(0);
    out.push(AddressFamily::of(addr.ip()).code());
    out.extend_from_slice(&addr.port().to_be_bytes());
    match addr.ip() {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}
