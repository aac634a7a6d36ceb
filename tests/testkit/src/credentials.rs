//! Credentials the tests compute themselves: Wire/restund zrest usernames and passwords.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha512;

/// Unix time now (for REST-style credential expiry).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Wire/restund zrest username `d=<expiry>.v=1.k=<key index>.t=s.r=<random>`.
pub fn zrest_username(expiry_unix_secs: u64, key_index: usize, random: &str) -> String {
    format!("d={expiry_unix_secs}.v=1.k={key_index}.t=s.r={random}")
}

/// Wire/restund zrest password: base64(HMAC-SHA512(secret, username)).
pub fn zrest_password(secret: &str, username: &str) -> Result<String> {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).context("HMAC-SHA512 key")?;
    mac.update(username.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zrest_password_is_base64_hmac_sha512_of_the_username() {
        let username = zrest_username(1_700_000_000, 0, "abc");
        assert_eq!(username, "d=1700000000.v=1.k=0.t=s.r=abc");
        // python3: base64.b64encode(hmac.new(b"zrest-secret", username, sha512).digest())
        assert_eq!(
            zrest_password("zrest-secret", &username).expect("password"),
            "GJbap/h7Je2BZQ7ySvtZPW5ZeJ0m4U33ThoD2MzpRfXa5FAzXUvDnYmBnxkOSbBjg+dECSfPI5twVvC2Ss99tQ=="
        );
    }
}
