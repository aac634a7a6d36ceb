//! The few STUN/TURN wire constants the fast path needs (RFC 8489, RFC 8656).

/// RFC 8489 §5.
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// STUN header length (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;
/// Send indication (RFC 8656 §18: method 0x006, class indication).
pub const SEND_INDICATION: u16 = 0x0016;
/// Data indication (RFC 8656 §18: method 0x007, class indication).
pub const DATA_INDICATION: u16 = 0x0017;
/// XOR-PEER-ADDRESS (RFC 8656 §18).
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA (RFC 8656 §18).
pub const ATTR_DATA: u16 = 0x0013;
/// DONT-FRAGMENT (RFC 8656 §18).
pub const ATTR_DONT_FRAGMENT: u16 = 0x001A;
/// FINGERPRINT (RFC 8489 §18.3).
pub const ATTR_FINGERPRINT: u16 = 0x8028;
/// XOR-*-ADDRESS family codes (RFC 8489 §14.2).
pub const ADDRESS_FAMILY_V4: u8 = 0x01;
pub const ADDRESS_FAMILY_V6: u8 = 0x02;
/// ChannelData header length (RFC 8656 §12.4).
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;
/// Accepted channel numbers. RFC 8656 §12 assigns 0x4000–0x4FFF, but RFC 5766 allowed
/// up to 0x7FFF and clients written to it are still deployed (coturn's turnutils_uclient
/// picks from the whole range), so like coturn we accept 0x4000–0x7FFF.
pub const CHANNEL_MIN: u16 = 0x4000;
pub const CHANNEL_MAX: u16 = 0x7FFF;
