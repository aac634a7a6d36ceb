//! Writes STUN messages into a reusable buffer (RFC 8489 §5, §14).

use std::net::SocketAddr;

use super::attributes::{self as attr, PasswordAlgorithm};
use super::{
    integrity, message_type, padded_len, Class, Method, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

/// Builds one STUN message in a caller-owned `Vec<u8>`: the buffer is cleared, never
/// shrunk, so its capacity is reused across messages. The header's length field is kept
/// up to date after every attribute, so the integrity and fingerprint attributes can be
/// appended at any point (RFC 8489 §14.5–14.7).
#[derive(Debug)]
pub struct MessageBuilder<'b> {
    buf: &'b mut Vec<u8>,
}

impl<'b> MessageBuilder<'b> {
    pub fn new(
        buf: &'b mut Vec<u8>,
        method: Method,
        class: Class,
        transaction_id: &TransactionId,
    ) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id.0);
        MessageBuilder { buf }
    }

    fn update_length(&mut self) {
        let body = self.buf.len().saturating_sub(HEADER_LEN);
        let length = u16::try_from(body).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(field) = self.buf.get_mut(2..4) {
            field.copy_from_slice(&length);
        }
    }

    /// Appends one attribute with zero padding to a multiple of 4 bytes. A value longer
    /// than 65535 bytes is cut to fit the 16-bit length field.
    pub fn attribute(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = value.len().min(usize::from(u16::MAX) & !3);
        self.attribute_with(kind, len, |buf| {
            buf.extend_from_slice(value.get(..len).unwrap_or_default())
        })
    }

    /// Appends one attribute whose `len`-byte value is written by `write`.
    fn attribute_with(
        &mut self,
        kind: u16,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> &mut Self {
        self.buf.extend_from_slice(&kind.to_be_bytes());
        self.buf
            .extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        let start = self.buf.len();
        write(self.buf);
        self.buf.resize(start + padded_len(len), 0);
        self.update_length();
        self
    }

    /// An XOR-encoded address attribute (XOR-MAPPED/-PEER/-RELAYED-ADDRESS, RFC 8489 §14.2).
    pub fn xor_address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let transaction_id = self.transaction_id();
        let xored = attr::xor_socket_addr(addr, &transaction_id);
        let len = if addr.is_ipv4() { 8 } else { 20 };
        self.attribute_with(kind, len, |buf| attr::encode_address(xored, buf))
    }

    /// MAPPED-ADDRESS (RFC 8489 §14.1).
    pub fn mapped_address(&mut self, addr: SocketAddr) -> &mut Self {
        self.address(attr::MAPPED_ADDRESS, addr)
    }

    /// A plain address attribute (MAPPED-ADDRESS, ALTERNATE-SERVER: RFC 8489 §14.1,
    /// §14.15).
    pub fn address(&mut self, kind: u16, addr: SocketAddr) -> &mut Self {
        let len = if addr.is_ipv4() { 8 } else { 20 };
        self.attribute_with(kind, len, |buf| attr::encode_address(addr, buf))
    }

    /// ERROR-CODE (RFC 8489 §14.8); `code` is 300..=699.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        let reason = reason.as_bytes();
        let reason = reason.get(..reason.len().min(763)).unwrap_or_default();
        let class = u8::try_from(code / 100).unwrap_or(0) & 0x07;
        let number = u8::try_from(code % 100).unwrap_or(0);
        self.attribute_with(attr::ERROR_CODE, 4 + reason.len(), |buf| {
            buf.extend_from_slice(&[0, 0, class, number]);
            buf.extend_from_slice(reason);
        })
    }

    /// A 32-bit attribute such as LIFETIME (RFC 8656 §18.4).
    pub fn u32_attribute(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attribute(kind, &value.to_be_bytes())
    }

    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
    pub fn unknown_attributes(&mut self, kinds: &[u16]) -> &mut Self {
        self.attribute_with(attr::UNKNOWN_ATTRIBUTES, kinds.len() * 2, |buf| {
            for kind in kinds {
                buf.extend_from_slice(&kind.to_be_bytes());
            }
        })
    }

    /// PASSWORD-ALGORITHMS without parameters (RFC 8489 §14.11).
    pub fn password_algorithms(&mut self, algorithms: &[PasswordAlgorithm]) -> &mut Self {
        self.attribute_with(attr::PASSWORD_ALGORITHMS, algorithms.len() * 4, |buf| {
            for algorithm in algorithms {
                buf.extend_from_slice(&algorithm.code().to_be_bytes());
                buf.extend_from_slice(&[0, 0]);
            }
        })
    }

    /// PASSWORD-ALGORITHM without parameters (RFC 8489 §14.12).
    pub fn password_algorithm(&mut self, algorithm: PasswordAlgorithm) -> &mut Self {
        let mut value = [0u8; 4];
        value[..2].copy_from_slice(&algorithm.code().to_be_bytes());
        self.attribute(attr::PASSWORD_ALGORITHM, &value)
    }

    /// MESSAGE-INTEGRITY: HMAC-SHA1 with `key` over everything so far (RFC 8489 §14.5).
    pub fn message_integrity(&mut self, key: &[u8]) -> &mut Self {
        let mac = integrity::hmac_sha1(key, self.buf, 20);
        self.attribute(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// MESSAGE-INTEGRITY-SHA256, full 32 bytes (RFC 8489 §14.6).
    pub fn message_integrity_sha256(&mut self, key: &[u8]) -> &mut Self {
        let mac = integrity::hmac_sha256(key, self.buf, 32);
        self.attribute(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// FINGERPRINT; must be the last attribute (RFC 8489 §14.7).
    pub fn fingerprint(&mut self) -> &mut Self {
        let crc = integrity::fingerprint(self.buf);
        self.attribute(attr::FINGERPRINT, &crc.to_be_bytes())
    }

    fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        if let Some(bytes) = self.buf.get(8..HEADER_LEN) {
            id.copy_from_slice(bytes);
        }
        TransactionId(id)
    }

    /// The message written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }
}
