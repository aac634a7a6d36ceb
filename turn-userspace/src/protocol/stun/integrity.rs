//! MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5), MESSAGE-INTEGRITY-SHA256 (§14.6) and
//! FINGERPRINT (§14.7). Each is computed over the message up to (excluding) its own
//! attribute, with the header's length field rewritten to end just after that attribute.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::attributes::FINGERPRINT_XOR;
use super::HEADER_LEN;

/// Feeds `prefix` to `update`, with the length field adjusted as if an attribute with a
/// `value_len`-byte value followed `prefix`.
fn feed_adjusted(prefix: &[u8], value_len: usize, mut update: impl FnMut(&[u8])) {
    let Some((header, body)) = prefix.split_first_chunk::<HEADER_LEN>() else {
        update(prefix);
        return;
    };
    let adjusted = prefix.len() - HEADER_LEN + 4 + value_len;
    let adjusted = u16::try_from(adjusted).unwrap_or(u16::MAX).to_be_bytes();
    update(&header[..2]);
    update(&adjusted);
    update(&header[4..]);
    update(body);
}

/// HMAC-SHA1 over `prefix` for a MESSAGE-INTEGRITY attribute that follows it.
pub(crate) fn hmac_sha1(key: &[u8], prefix: &[u8], value_len: usize) -> [u8; 20] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
        return [0; 20];
    };
    feed_adjusted(prefix, value_len, |chunk| mac.update(chunk));
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `prefix` for a MESSAGE-INTEGRITY-SHA256 attribute of `value_len`
/// bytes that follows it (the caller truncates, RFC 8489 §14.6).
pub(crate) fn hmac_sha256(key: &[u8], prefix: &[u8], value_len: usize) -> [u8; 32] {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    feed_adjusted(prefix, value_len, |chunk| mac.update(chunk));
    mac.finalize().into_bytes().into()
}

/// CRC-32 of `prefix` (length adjusted for the FINGERPRINT attribute) XOR 0x5354554e.
pub(crate) fn fingerprint(prefix: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    feed_adjusted(prefix, 4, |chunk| hasher.update(chunk));
    hasher.finalize() ^ FINGERPRINT_XOR
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
