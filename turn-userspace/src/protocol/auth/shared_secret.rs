//! Time-limited usernames signed with a shared secret: the TURN REST API of coturn
//! (`use-auth-secret`, used by Nextcloud Talk) and Wire's restund `zrest` module.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha512;

/// A parsed coturn REST API username: `<expiry>`, `<expiry>:<user>`, or, as coturn also
/// accepts, `<user>:<expiry>` (the numeric side of the first `:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoturnUsername<'a> {
    /// Unix seconds.
    pub(crate) expiry: u64,
    /// The user part; the whole username when there is none.
    pub(crate) user: &'a str,
}

pub(crate) fn parse_coturn(username: &str) -> Option<CoturnUsername<'_>> {
    let (expiry, user) = match username.split_once(':') {
        None => (parse_decimal(username)?, username),
        Some((head, tail)) => match parse_decimal(head) {
            Some(expiry) => (expiry, tail),
            None => (parse_decimal(tail)?, head),
        },
    };
    Some(CoturnUsername { expiry, user })
}

/// coturn's REST API password: `base64(HMAC-SHA1(secret, username))`.
pub(crate) fn coturn_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// A parsed Wire zrest username.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZrestUsername<'a> {
    pub(crate) expiry: u64,
    /// Index into the configured zrest secrets (0 for the legacy format).
    pub(crate) key_index: usize,
    /// The username without its expiry (what names the user across renewals).
    pub(crate) user: &'a str,
}

/// Parses `d=<expiry>.v=1.k=<key index>.t=s.r=<random>` (version 1) or the legacy
/// `<expiry>.s.<random>` (version 0), as restund's zrest module does.
pub(crate) fn parse_zrest(username: &str) -> Option<ZrestUsername<'_>> {
    if let Some(rest) = username.strip_prefix("d=") {
        let (expiry, user) = rest.split_once('.')?;
        let rest = user.strip_prefix("v=1.k=")?;
        let (key_index, random) = rest.split_once(".t=s.r=")?;
        if !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        return Some(ZrestUsername {
            expiry: parse_decimal(expiry)?,
            key_index: usize::try_from(parse_decimal(key_index)?).ok()?,
            user,
        });
    }
    let (expiry, random) = username.split_once(".s.")?;
    if !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(ZrestUsername {
        expiry: parse_decimal(expiry)?,
        key_index: 0,
        user: username.get(expiry.len() + 1..).unwrap_or(username),
    })
}

/// zrest's password: `base64(HMAC-SHA512(secret, username))`.
pub(crate) fn zrest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// Plain ASCII decimal digits only (no sign, no spaces), at most what fits a u64.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coturn_usernames_carry_the_expiry_on_either_side() {
        let parsed = |expiry, user| Some(CoturnUsername { expiry, user });
        assert_eq!(
            parse_coturn("1700000000"),
            parsed(1_700_000_000, "1700000000")
        );
        assert_eq!(
            parse_coturn("1700000000:alice"),
            parsed(1_700_000_000, "alice")
        );
        assert_eq!(
            parse_coturn("alice:1700000000"),
            parsed(1_700_000_000, "alice")
        );
        assert_eq!(
            parse_coturn("1700000000:alice:x"),
            parsed(1_700_000_000, "alice:x")
        );
        assert_eq!(parse_coturn("alice"), None);
        assert_eq!(parse_coturn("alice:bob"), None);
        assert_eq!(parse_coturn("+17:alice"), None);
        assert_eq!(parse_coturn("99999999999999999999999"), None);
    }

    #[test]
    fn coturn_password_matches_openssl() {
        // printf '%s' '1700000000:alice' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(
            coturn_password(b"north", "1700000000:alice"),
            "Cd/49soE35ICqcJF/bCTn8Z4OyE="
        );
    }

    #[test]
    fn zrest_usernames_of_both_versions_parse() {
        assert_eq!(
            parse_zrest("d=1700000000.v=1.k=3.t=s.r=abc123"),
            Some(ZrestUsername {
                expiry: 1_700_000_000,
                key_index: 3,
                user: "v=1.k=3.t=s.r=abc123",
            })
        );
        assert_eq!(
            parse_zrest("1700000000.s.42"),
            Some(ZrestUsername {
                expiry: 1_700_000_000,
                key_index: 0,
                user: "s.42",
            })
        );
        assert_eq!(parse_zrest("d=1700000000.v=2.k=0.t=s.r=abc"), None);
        assert_eq!(parse_zrest("d=x.v=1.k=0.t=s.r=abc"), None);
        assert_eq!(parse_zrest("d=1700000000.v=1.k=.t=s.r=abc"), None);
        assert_eq!(parse_zrest("d=1700000000.v=1.k=0.t=s.r=a:b"), None);
        assert_eq!(parse_zrest("1700000000:alice"), None);
    }

    #[test]
    fn zrest_password_matches_openssl() {
        // printf '%s' 'd=1700000000.v=1.k=1.t=s.r=abc123' \
        //   | openssl dgst -sha512 -hmac second -binary | base64 -w0
        assert_eq!(
            zrest_password(b"second", "d=1700000000.v=1.k=1.t=s.r=abc123"),
            "xRqn2OdxRvFoYR3Kqa9d1Eh6EHRCli//VaoVQ9U4G/GZO2xlvG5sRo3EbRpnx7lZ4Hv/fUcB8UERGoZKkkAf8w=="
        );
    }
}
