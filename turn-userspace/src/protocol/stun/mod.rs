//! Zero-copy STUN codec (RFC 8489) with the TURN attributes of RFC 8656 and the
//! ChannelData framing of RFC 8656 §12.4.
//!
//! - [`Message`] parses a datagram in place (no allocation) and exposes typed accessors.
//! - [`MessageBuilder`] writes a message into a caller-owned `Vec<u8>` (capacity reused).
//! - [`channel_data`] frames and unframes ChannelData messages.
//! - [`framing`] cuts messages out of a TCP or TLS byte stream.

pub mod attributes;
mod builder;
pub mod channel_data;
pub mod framing;
mod integrity;
mod message;
#[cfg(test)]
mod tests;

pub use attributes::{AddressFamily, ErrorCode, PasswordAlgorithm};
pub use builder::MessageBuilder;
pub use message::{
    parse_header, AttributeError, Attributes, Header, Message, ParseError, PasswordAlgorithms,
    RawAttribute, UnknownAttributes, XorPeerAddresses,
};

/// The fixed magic cookie of every RFC 5389/8489 message (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Size of the STUN message header (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;

/// The 96-bit transaction ID of a STUN message (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId(pub [u8; 12]);

/// A STUN method (12 bits, RFC 8489 §5); the constants are the ones this relay speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// RFC 8489 §18.2.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 §17.
    pub const ALLOCATE: Method = Method(0x003);
    pub const REFRESH: Method = Method(0x004);
    pub const SEND: Method = Method(0x006);
    pub const DATA: Method = Method(0x007);
    pub const CREATE_PERMISSION: Method = Method(0x008);
    pub const CHANNEL_BIND: Method = Method(0x009);
}

/// The class of a STUN message (RFC 8489 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// Interleaves method and class bits into the 14-bit message type (RFC 8489 §5, Figure 3).
pub fn message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// Splits a 14-bit message type into method and class (RFC 8489 §5, Figure 3).
pub fn split_message_type(message_type: u16) -> (Method, Class) {
    let t = message_type & 0x3FFF;
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = ((t & 0x0010) >> 4) | ((t & 0x0100) >> 7);
    (Method(method), Class::from_bits(class))
}

/// Rounds an attribute value length up to the 4-byte boundary (RFC 8489 §14).
pub(crate) const fn padded_len(len: usize) -> usize {
    (len + 3) & !3
}
