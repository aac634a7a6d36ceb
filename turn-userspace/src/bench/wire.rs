//! The client side of the few STUN/TURN exchanges the benchmark needs, on top of the
//! crate's codec ([`crate::protocol::stun`]): requests with long-term credentials, Send indications,
//! ChannelData, and the response fields a client reads.

use std::net::SocketAddr;

use md5::{Digest, Md5};

use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::channel_data::ChannelData;
use crate::protocol::stun::{Class, Message, MessageBuilder, Method, TransactionId};

/// RFC 8656 §12: the first channel number a client may bind.
pub const FIRST_CHANNEL: u16 = 0x4000;

enum Attribute {
    Raw(u16, Vec<u8>),
    XorAddress(u16, SocketAddr),
}

/// A message to send: collects attributes, then encodes them with [`MessageBuilder`].
pub struct MessageWriter {
    method: Method,
    class: Class,
    transaction_id: TransactionId,
    attributes: Vec<Attribute>,
}

impl MessageWriter {
    pub fn request(method: Method, transaction_id: [u8; 12]) -> Self {
        MessageWriter {
            method,
            class: Class::Request,
            transaction_id: TransactionId(transaction_id),
            attributes: Vec::new(),
        }
    }

    pub fn indication(method: Method, transaction_id: [u8; 12]) -> Self {
        MessageWriter {
            class: Class::Indication,
            ..Self::request(method, transaction_id)
        }
    }

    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.attributes.push(Attribute::Raw(kind, value.to_vec()));
        self
    }

    /// An XOR-*-ADDRESS attribute (RFC 8489 §14.2).
    pub fn xor_address(&mut self, kind: u16, address: impl Into<SocketAddr>) -> &mut Self {
        self.attributes
            .push(Attribute::XorAddress(kind, address.into()));
        self
    }

    /// The long-term credential attributes of RFC 8489 §9.2.4 (MESSAGE-INTEGRITY is added by
    /// [`MessageWriter::finish_with_integrity`]).
    pub fn credentials(&mut self, username: &str, realm: &str, nonce: &str) -> &mut Self {
        self.attribute(attr::USERNAME, username.as_bytes())
            .attribute(attr::REALM, realm.as_bytes())
            .attribute(attr::NONCE, nonce.as_bytes())
    }

    pub fn finish(self) -> Vec<u8> {
        self.encode(None)
    }

    /// Appends MESSAGE-INTEGRITY (RFC 8489 §14.5) keyed with the long-term key.
    pub fn finish_with_integrity(self, key: &[u8]) -> Vec<u8> {
        self.encode(Some(key))
    }

    fn encode(self, integrity_key: Option<&[u8]>) -> Vec<u8> {
        let mut buf = Vec::with_capacity(256);
        let mut builder =
            MessageBuilder::new(&mut buf, self.method, self.class, &self.transaction_id);
        for attribute in &self.attributes {
            match attribute {
                Attribute::Raw(kind, value) => builder.attribute(*kind, value),
                Attribute::XorAddress(kind, address) => builder.xor_address(*kind, *address),
            };
        }
        if let Some(key) = integrity_key {
            builder.message_integrity(key);
        }
        buf
    }
}

/// RFC 8489 §9.2.2: the long-term credential key MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    let mut hasher = Md5::new();
    hasher.update(format!("{username}:{realm}:{password}").as_bytes());
    hasher.finalize().to_vec()
}

/// REQUESTED-TRANSPORT for UDP (RFC 8656 §18.7).
pub fn requested_transport_udp() -> [u8; 4] {
    [attr::TRANSPORT_UDP, 0, 0, 0]
}

/// CHANNEL-NUMBER (RFC 8656 §18.1).
pub fn channel_number(channel: u16) -> [u8; 4] {
    let bytes = channel.to_be_bytes();
    [bytes[0], bytes[1], 0, 0]
}

/// What a client reads from a response.
pub struct Response {
    pub transaction_id: [u8; 12],
    pub success: bool,
    /// ERROR-CODE as class*100 + number (RFC 8489 §14.8).
    pub error_code: Option<u16>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub relayed: Option<SocketAddr>,
}

impl Response {
    /// None when the datagram is not a STUN response.
    pub fn parse(packet: &[u8]) -> Option<Response> {
        let message = Message::parse(packet).ok()?;
        let class = message.class();
        if class != Class::SuccessResponse && class != Class::ErrorResponse {
            return None;
        }
        Some(Response {
            transaction_id: message.transaction_id().0,
            success: class == Class::SuccessResponse,
            error_code: message.error_code().ok().flatten().map(|error| error.code),
            realm: message.realm().ok().flatten().map(str::to_string),
            nonce: message
                .nonce()
                .ok()
                .flatten()
                .map(|nonce| String::from_utf8_lossy(nonce).into_owned()),
            relayed: message.xor_relayed_address().ok().flatten(),
        })
    }
}

/// A ChannelData message with `payload_len` bytes of `fill` (RFC 8656 §12.4).
pub fn channel_data(channel: u16, payload_len: usize, fill: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload_len);
    crate::protocol::stun::channel_data::encode(&mut out, channel, &vec![fill; payload_len]);
    out
}

/// The application payload of a relayed datagram arriving at a client: the body of a
/// ChannelData message or the DATA attribute of a Data indication (RFC 8656 §11.6, §12.6).
pub fn relayed_payload(packet: &[u8]) -> Option<&[u8]> {
    if let Some(channel_data) = ChannelData::parse(packet) {
        return Some(channel_data.data);
    }
    let message = Message::parse(packet).ok()?;
    if message.method() != Method::DATA || message.class() != Class::Indication {
        return None;
    }
    message.data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn send_indication_carries_peer_and_data() {
        let peer = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 1), 40000);
        let mut writer = MessageWriter::indication(Method::SEND, [9; 12]);
        writer.xor_address(attr::XOR_PEER_ADDRESS, peer);
        writer.attribute(attr::DATA, &[1, 2, 3, 4, 5]);
        let message = writer.finish();
        assert_eq!(message.len(), 20 + 12 + 4 + 8);
        let parsed = Message::parse(&message).expect("well formed");
        assert_eq!(
            (parsed.method(), parsed.class()),
            (Method::SEND, Class::Indication)
        );
        assert_eq!(
            parsed.xor_peer_address().ok().flatten(),
            Some(SocketAddr::V4(peer))
        );
        assert_eq!(parsed.data(), Some(&[1u8, 2, 3, 4, 5][..]));
    }

    #[test]
    fn relayed_payload_unwraps_channel_data_and_data_indications() {
        let mut channel_data = channel_data(0x4001, 3, 7);
        assert_eq!(relayed_payload(&channel_data), Some(&[7u8, 7, 7][..]));
        channel_data.truncate(5);
        assert_eq!(relayed_payload(&channel_data), None);
        let mut writer = MessageWriter::indication(Method::DATA, [2; 12]);
        writer.attribute(attr::DATA, &[5, 6]);
        assert_eq!(relayed_payload(&writer.finish()), Some(&[5u8, 6][..]));
    }

    #[test]
    fn responses_yield_error_code_realm_and_nonce() {
        let mut buf = Vec::new();
        let mut builder = MessageBuilder::new(
            &mut buf,
            Method::ALLOCATE,
            Class::ErrorResponse,
            &TransactionId([3; 12]),
        );
        builder
            .error_code(401, "Unauthorized")
            .attribute(attr::REALM, b"bench.invalid")
            .attribute(attr::NONCE, b"abc");
        let response = Response::parse(&buf).expect("a response");
        assert!(!response.success);
        assert_eq!(response.error_code, Some(401));
        assert_eq!(
            (response.realm.as_deref(), response.nonce.as_deref()),
            (Some("bench.invalid"), Some("abc"))
        );
        assert_eq!(response.transaction_id, [3; 12]);
        assert!(
            Response::parse(&MessageWriter::request(Method::BINDING, [1; 12]).finish()).is_none()
        );
    }
}
