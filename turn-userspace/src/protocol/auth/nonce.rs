//! Stateless nonces (RFC 8489 §9.2): the server keeps no per-client state; a nonce is its
//! own expiry plus a MAC binding that expiry to the client's IP address.
//!
//! Layout (all ASCII, valid `qdtext`): optional nonce cookie `obMatJos2AAAB` (RFC 8489
//! §9.2.1, security feature "Password algorithms"), then 16 hex digits of the expiry in unix
//! seconds, then 24 hex digits of `HMAC-SHA256(secret, label || expiry || client IP)`
//! truncated to 96 bits.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// RFC 8489 §9.2.1 nonce cookie followed by the base64 of the 24-bit security feature set
/// with only bit 0 ("Password algorithms", the rightmost bit per §18.1) set.
pub const NONCE_COOKIE_PASSWORD_ALGORITHMS: &str = "obMatJos2AAAB";

const EXPIRY_HEX_LEN: usize = 16;
const TAG_LEN: usize = 12;
const TAG_HEX_LEN: usize = TAG_LEN * 2;
/// Separates nonce MACs from any other use of the same secret.
const MAC_LABEL: &[u8] = b"turn-relay nonce v1";

/// What a NONCE attribute is worth (RFC 8489 §9.2.4/§9.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Issued by this server (or one sharing its nonce secret) to this client, still fresh.
    Valid,
    /// Authentic but expired: answer 438 (Stale Nonce) with a fresh nonce.
    Stale,
    /// Not ours, altered, or issued to another client IP: answer 401 with a fresh nonce.
    Invalid,
}

pub(crate) struct NonceKey {
    secret: Vec<u8>,
    with_cookie: bool,
}

impl NonceKey {
    pub(crate) fn new(secret: Vec<u8>, with_cookie: bool) -> Self {
        NonceKey {
            secret,
            with_cookie,
        }
    }

    pub(crate) fn make(&self, expiry: u64, client: IpAddr) -> String {
        let tag = self.tag(expiry, client);
        let cookie = if self.with_cookie {
            NONCE_COOKIE_PASSWORD_ALGORITHMS
        } else {
            ""
        };
        format!("{cookie}{expiry:016x}{}", hex::encode(tag))
    }

    pub(crate) fn check(&self, nonce: &[u8], unix_secs: u64, client: IpAddr) -> NonceStatus {
        let body = if self.with_cookie {
            match nonce.strip_prefix(NONCE_COOKIE_PASSWORD_ALGORITHMS.as_bytes()) {
                Some(body) => body,
                None => return NonceStatus::Invalid,
            }
        } else {
            nonce
        };
        if body.len() != EXPIRY_HEX_LEN + TAG_HEX_LEN {
            return NonceStatus::Invalid;
        }
        let (expiry_hex, tag_hex) = body.split_at(EXPIRY_HEX_LEN);
        let mut expiry_bytes = [0u8; 8];
        let mut tag = [0u8; TAG_LEN];
        if hex::decode_to_slice(expiry_hex, &mut expiry_bytes).is_err()
            || hex::decode_to_slice(tag_hex, &mut tag).is_err()
        {
            return NonceStatus::Invalid;
        }
        let expiry = u64::from_be_bytes(expiry_bytes);
        if !bool::from(self.tag(expiry, client).ct_eq(&tag)) {
            return NonceStatus::Invalid;
        }
        if unix_secs >= expiry {
            NonceStatus::Stale
        } else {
            NonceStatus::Valid
        }
    }

    fn tag(&self, expiry: u64, client: IpAddr) -> [u8; TAG_LEN] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(MAC_LABEL);
        mac.update(&expiry.to_be_bytes());
        // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d; bind to the real address.
        match client.to_canonical() {
            IpAddr::V4(v4) => {
                mac.update(&[4]);
                mac.update(&v4.octets());
            }
            IpAddr::V6(v6) => {
                mac.update(&[6]);
                mac.update(&v6.octets());
            }
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}
