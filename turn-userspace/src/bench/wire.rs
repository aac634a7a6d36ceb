//! The few STUN/TURN messages a benchmark client sends, and the fields it reads back.
//!
//! The benchmark only needs the client side of RFC 8489/8656 (requests with long-term
//! credentials, Send indications, ChannelData), so it carries this small encoder rather than
//! depending on the server codec's API surface.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// RFC 8489 §5: the fixed magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;

pub const BINDING_REQUEST: u16 = 0x0001;
pub const ALLOCATE_REQUEST: u16 = 0x0003;
pub const REFRESH_REQUEST: u16 = 0x0004;
pub const CREATE_PERMISSION_REQUEST: u16 = 0x0008;
pub const CHANNEL_BIND_REQUEST: u16 = 0x0009;
pub const SEND_INDICATION: u16 = 0x0016;
pub const DATA_INDICATION: u16 = 0x0017;
/// RFC 8489 §5: class bits of a success response (0b10) and an error response (0b11).
const CLASS_MASK: u16 = 0x0110;
const CLASS_SUCCESS: u16 = 0x0100;
const CLASS_ERROR: u16 = 0x0110;

pub const ATTR_USERNAME: u16 = 0x0006;
pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ATTR_ERROR_CODE: u16 = 0x0009;
pub const ATTR_CHANNEL_NUMBER: u16 = 0x000C;
pub const ATTR_LIFETIME: u16 = 0x000D;
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
pub const ATTR_DATA: u16 = 0x0013;
pub const ATTR_REALM: u16 = 0x0014;
pub const ATTR_NONCE: u16 = 0x0015;
pub const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const ATTR_REQUESTED_TRANSPORT: u16 = 0x0019;
pub const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// RFC 8656 §14.7: REQUESTED-TRANSPORT value for UDP.
const PROTOCOL_UDP: u8 = 17;
/// RFC 8656 §12: the first channel number a client may bind.
pub const FIRST_CHANNEL: u16 = 0x4000;

/// A STUN message being encoded, attribute by attribute (RFC 8489 §5, §14).
pub struct MessageWriter {
    buf: Vec<u8>,
}

impl MessageWriter {
    pub fn new(message_type: u16, transaction_id: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&message_type.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        MessageWriter { buf }
    }

    pub fn attribute(&mut self, attribute_type: u16, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&attribute_type.to_be_bytes());
        // Attribute values the benchmark writes are far below 64 KiB.
        self.buf
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(value);
        let padding = (4 - value.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0u8, padding));
        self.set_length();
        self
    }

    /// RFC 8489 §14.5, §14.4 (XOR-*-ADDRESS encoding shared by all address attributes).
    pub fn xor_address(&mut self, attribute_type: u16, address: SocketAddrV4) -> &mut Self {
        let value = encode_xor_address(address);
        self.attribute(attribute_type, &value)
    }

    /// Appends MESSAGE-INTEGRITY (RFC 8489 §14.5) keyed with the long-term key, and returns the
    /// finished message.
    pub fn finish_with_integrity(mut self, key: &[u8]) -> Vec<u8> {
        let integrity_len = 4 + 20;
        let length = (self.buf.len() - HEADER_LEN + integrity_len) as u16;
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
        let mut mac = match Hmac::<Sha1>::new_from_slice(key) {
            Ok(mac) => mac,
            // HMAC accepts keys of every length; this branch cannot be taken.
            Err(_) => return self.buf,
        };
        mac.update(&self.buf);
        let digest = mac.finalize().into_bytes();
        self.attribute(ATTR_MESSAGE_INTEGRITY, &digest);
        self.buf
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }

    fn set_length(&mut self) {
        let length = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
    }
}

/// RFC 8489 §9.2.2: the long-term credential key MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    let mut hasher = Md5::new();
    hasher.update(format!("{username}:{realm}:{password}").as_bytes());
    hasher.finalize().to_vec()
}

pub fn encode_xor_address(address: SocketAddrV4) -> [u8; 8] {
    let mut value = [0u8; 8];
    value[1] = 0x01;
    let port = address.port() ^ (MAGIC_COOKIE >> 16) as u16;
    value[2..4].copy_from_slice(&port.to_be_bytes());
    let ip = u32::from(*address.ip()) ^ MAGIC_COOKIE;
    value[4..8].copy_from_slice(&ip.to_be_bytes());
    value
}

fn decode_xor_address(value: &[u8]) -> Option<SocketAddr> {
    if value.get(1) != Some(&0x01) {
        return None;
    }
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let raw = value.get(4..8)?;
    let ip = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) ^ MAGIC_COOKIE;
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
}

/// REQUESTED-TRANSPORT for UDP (RFC 8656 §18.7).
pub fn requested_transport_udp() -> [u8; 4] {
    [PROTOCOL_UDP, 0, 0, 0]
}

/// CHANNEL-NUMBER (RFC 8656 §18.1).
pub fn channel_number(channel: u16) -> [u8; 4] {
    let bytes = channel.to_be_bytes();
    [bytes[0], bytes[1], 0, 0]
}

/// A decoded STUN message: its type, transaction id and attributes in order.
pub struct ParsedMessage<'a> {
    pub message_type: u16,
    pub transaction_id: [u8; 12],
    attributes: Vec<(u16, &'a [u8])>,
}

impl<'a> ParsedMessage<'a> {
    /// Parses the header and attribute list (RFC 8489 §5, §14); None when malformed.
    pub fn parse(packet: &'a [u8]) -> Option<Self> {
        let header = packet.get(..HEADER_LEN)?;
        let message_type = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE {
            return None;
        }
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&header[8..20]);
        let mut body = packet.get(HEADER_LEN..HEADER_LEN + length)?;
        let mut attributes = Vec::new();
        while body.len() >= 4 {
            let attribute_type = u16::from_be_bytes([body[0], body[1]]);
            let value_len = usize::from(u16::from_be_bytes([body[2], body[3]]));
            let value = body.get(4..4 + value_len)?;
            attributes.push((attribute_type, value));
            let padded = (value_len + 3) & !3;
            body = body.get((4 + padded).min(body.len())..)?;
        }
        Some(ParsedMessage {
            message_type,
            transaction_id,
            attributes,
        })
    }

    pub fn attribute(&self, attribute_type: u16) -> Option<&'a [u8]> {
        self.attributes
            .iter()
            .find(|(t, _)| *t == attribute_type)
            .map(|(_, v)| *v)
    }

    pub fn is_success(&self) -> bool {
        self.message_type & CLASS_MASK == CLASS_SUCCESS
    }

    pub fn is_error(&self) -> bool {
        self.message_type & CLASS_MASK == CLASS_ERROR
    }

    /// ERROR-CODE (RFC 8489 §14.8) as class*100 + number.
    pub fn error_code(&self) -> Option<u16> {
        let value = self.attribute(ATTR_ERROR_CODE)?;
        let class = u16::from(*value.get(2)? & 0x07);
        let number = u16::from(*value.get(3)?);
        Some(class * 100 + number)
    }

    pub fn text(&self, attribute_type: u16) -> Option<String> {
        self.attribute(attribute_type)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn xor_address(&self, attribute_type: u16) -> Option<SocketAddr> {
        decode_xor_address(self.attribute(attribute_type)?)
    }
}

/// RFC 8656 §12.4: the ChannelData header (channel number, length).
pub fn channel_data_header(channel: u16, payload_len: usize) -> [u8; 4] {
    let c = channel.to_be_bytes();
    let l = (payload_len as u16).to_be_bytes();
    [c[0], c[1], l[0], l[1]]
}

/// The application payload of a relayed datagram arriving at a client: the body of a
/// ChannelData message or the DATA attribute of a Data indication (RFC 8656 §11.6, §12.6).
pub fn relayed_payload(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    if (0x40..=0x4F).contains(&first) {
        let length = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]));
        return packet.get(4..4 + length);
    }
    let message = ParsedMessage::parse(packet)?;
    if message.message_type != DATA_INDICATION {
        return None;
    }
    message.attribute(ATTR_DATA)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_indication_carries_peer_and_data() {
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 1), 40000);
        let mut writer = MessageWriter::new(SEND_INDICATION, [9; 12]);
        writer.xor_address(ATTR_XOR_PEER_ADDRESS, peer);
        writer.attribute(ATTR_DATA, &[1, 2, 3, 4, 5]);
        let message = writer.finish();
        assert_eq!(message.len(), HEADER_LEN + 12 + 4 + 8);
        let parsed = ParsedMessage::parse(&message).expect("well formed");
        assert_eq!(parsed.message_type, SEND_INDICATION);
        assert_eq!(
            parsed.xor_address(ATTR_XOR_PEER_ADDRESS),
            Some(SocketAddr::V4(peer))
        );
        assert_eq!(parsed.attribute(ATTR_DATA), Some(&[1u8, 2, 3, 4, 5][..]));
    }

    #[test]
    fn integrity_covers_the_message_with_its_own_length() {
        let key = long_term_key("user", "realm", "pass");
        let mut writer = MessageWriter::new(BINDING_REQUEST, [1; 12]);
        writer.attribute(ATTR_USERNAME, b"user");
        let message = writer.finish_with_integrity(&key);
        // RFC 8489 §14.5: the length field counts up to and including MESSAGE-INTEGRITY.
        assert_eq!(
            usize::from(u16::from_be_bytes([message[2], message[3]])),
            message.len() - HEADER_LEN
        );
        let mut mac = Hmac::<Sha1>::new_from_slice(&key).expect("any key length");
        mac.update(&message[..message.len() - 24]);
        assert_eq!(
            &message[message.len() - 20..],
            &mac.finalize().into_bytes()[..]
        );
    }

    #[test]
    fn relayed_payload_unwraps_channel_data_and_data_indications() {
        let mut channel_data = channel_data_header(0x4001, 3).to_vec();
        channel_data.extend_from_slice(&[7, 8, 9]);
        assert_eq!(relayed_payload(&channel_data), Some(&[7u8, 8, 9][..]));
        let mut writer = MessageWriter::new(DATA_INDICATION, [2; 12]);
        writer.attribute(ATTR_DATA, &[5, 6]);
        assert_eq!(relayed_payload(&writer.finish()), Some(&[5u8, 6][..]));
        assert_eq!(relayed_payload(&[0x40, 0x01, 0x00, 0x09]), None);
    }

    #[test]
    fn error_code_is_class_times_hundred_plus_number() {
        let mut writer = MessageWriter::new(ALLOCATE_REQUEST | 0x0110, [3; 12]);
        writer.attribute(ATTR_ERROR_CODE, &[0, 0, 4, 1]);
        let message = writer.finish();
        let parsed = ParsedMessage::parse(&message).expect("well formed");
        assert!(parsed.is_error());
        assert_eq!(parsed.error_code(), Some(401));
    }
}
