//! Stateless nonces (RFC 8489 §9.2): the server keeps no per-client state; a nonce is its
//! own expiry plus a MAC binding that expiry to the client's IP address.
//!
//! Layout (all ASCII, valid `qdtext`): optional nonce cookie `obMatJos2AAAB` (RFC 8489
//! §9.2.1, security feature "Password algorithms"), then 16 characters of unpadded
//! base64url of 12 bytes: the expiry in unix seconds (32 bits, big-endian, good until
//! 2106) and `HMAC-SHA256(secret, label || expiry || client IP)` truncated to 64 bits.
//! Short on purpose: the nonce travels in every unauthenticated 401, whose size bounds
//! the relay's amplification factor. A forger must guess 64 bits online, one request
//! per guess.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// RFC 8489 §9.2.1 nonce cookie followed by the base64 of the 24-bit security feature set
/// with only bit 0 ("Password algorithms", the rightmost bit per §18.1) set.
pub const NONCE_COOKIE_PASSWORD_ALGORITHMS: &str = "obMatJos2AAAB";

const EXPIRY_LEN: usize = 4;
const TAG_LEN: usize = 8;
const BODY_LEN: usize = EXPIRY_LEN + TAG_LEN;
/// Unpadded base64 of [`BODY_LEN`] bytes.
const BODY_TEXT_LEN: usize = BODY_LEN / 3 * 4;
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
        let expiry = u32::try_from(expiry).unwrap_or(u32::MAX);
        let mut body = [0u8; BODY_LEN];
        body[..EXPIRY_LEN].copy_from_slice(&expiry.to_be_bytes());
        body[EXPIRY_LEN..].copy_from_slice(&self.tag(u64::from(expiry), client));
        let cookie = if self.with_cookie {
            NONCE_COOKIE_PASSWORD_ALGORITHMS
        } else {
            ""
        };
        format!("{cookie}{}", BASE64URL.encode(body))
    }

    pub(crate) fn check(&self, nonce: &[u8], unix_secs: u64, client: IpAddr) -> NonceStatus {
        let text = if self.with_cookie {
            match nonce.strip_prefix(NONCE_COOKIE_PASSWORD_ALGORITHMS.as_bytes()) {
                Some(text) => text,
                None => return NonceStatus::Invalid,
            }
        } else {
            nonce
        };
        let mut body = [0u8; BODY_LEN];
        if text.len() != BODY_TEXT_LEN || BASE64URL.decode_slice(text, &mut body) != Ok(BODY_LEN) {
            return NonceStatus::Invalid;
        }
        let (expiry, tag) = body.split_at(EXPIRY_LEN);
        let mut expiry_bytes = [0u8; EXPIRY_LEN];
        expiry_bytes.copy_from_slice(expiry);
        let expiry = u64::from(u32::from_be_bytes(expiry_bytes));
        if !bool::from(self.tag(expiry, client).ct_eq(tag)) {
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
