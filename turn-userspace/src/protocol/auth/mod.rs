//! Long-term credentials (RFC 8489 §9.2) for TURN (RFC 8656 §5): static users, coturn's
//! shared-secret REST API (`use-auth-secret`, Nextcloud Talk), Wire restund's `zrest`
//! usernames, and stateless nonces.
//!
//! Sans-IO: the wall-clock time is passed in, secrets come from [`AuthConfig`]. Nothing here
//! logs or formats a secret, password or key.

mod credential;
mod nonce;
mod shared_secret;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

pub use credential::{md5_long_term_key, CandidateKeys, Credential};
pub use nonce::{NonceStatus, NONCE_COOKIE_PASSWORD_ALGORITHMS};

use credential::LongTermKeys;
use nonce::NonceKey;

/// A statically configured user.
#[derive(Clone)]
pub struct StaticUser {
    pub name: String,
    pub secret: StaticSecret,
}

/// How a static user's key is configured.
#[derive(Clone)]
pub enum StaticSecret {
    /// The plain password: both MD5 and SHA-256 keys are derived from it.
    Password(String),
    /// A pre-hashed `MD5(user:realm:password)` (turnadmin -k style): MD5 only, and only
    /// valid for the realm it was hashed with.
    Md5Key([u8; 16]),
}

/// Everything the [`Authenticator`] needs. Built by [`crate::daemon::config`].
#[derive(Clone)]
pub struct AuthConfig {
    pub static_users: Vec<StaticUser>,
    /// coturn `use-auth-secret` / `static-auth-secret` values; any of them may have signed
    /// a username (secret rotation).
    pub auth_secrets: Vec<String>,
    /// Wire zrest secrets; a version-1 username's `k=` selects one by position, legacy
    /// usernames use the first.
    pub zrest_secrets: Vec<String>,
    /// How long a nonce stays fresh before it is answered with 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// The MAC key of stateless nonces. Relays behind one load balancer must share it.
    pub nonce_secret: Vec<u8>,
    /// Start nonces with the RFC 8489 §9.2.1 nonce cookie announcing the "Password
    /// algorithms" feature, so RFC 8489 clients may pick SHA-256 (the 401/438 must then
    /// carry PASSWORD-ALGORITHMS).
    pub advertise_password_algorithms: bool,
}

/// Secrets never appear in logs: only counts are shown.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "static_users",
                &self
                    .static_users
                    .iter()
                    .map(|u| &u.name)
                    .collect::<Vec<_>>(),
            )
            .field("auth_secrets", &self.auth_secrets.len())
            .field("zrest_secrets", &self.zrest_secrets.len())
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field(
                "advertise_password_algorithms",
                &self.advertise_password_algorithms,
            )
            .finish_non_exhaustive()
    }
}

/// Why no credential exists for a USERNAME. Every variant is answered with 401
/// (Unauthenticated, RFC 8489 §9.2.4) and a fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unknown username")]
    UnknownUser,
    #[error("time-limited username expired at unix time {expired_at}")]
    Expired { expired_at: u64 },
    #[error("zrest username names key index {key_index}, which is not configured")]
    UnknownKeyIndex { key_index: usize },
}

impl AuthError {
    /// The STUN error code to answer with (RFC 8489 §14.8).
    pub fn stun_error_code(&self) -> u16 {
        401
    }
}

/// Looks up credentials and issues/verifies nonces.
pub struct Authenticator {
    static_users: HashMap<String, StaticSecret>,
    /// USERHASH → static username, for [`Self::userhash_realm`] (see
    /// [`Authenticator::index_userhashes`]).
    userhashes: HashMap<[u8; 32], String>,
    userhash_realm: String,
    auth_secrets: Vec<String>,
    zrest_secrets: Vec<String>,
    nonce_lifetime: Duration,
    nonce_key: NonceKey,
    advertise_password_algorithms: bool,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_users", &self.static_users.len())
            .field("auth_secrets", &self.auth_secrets.len())
            .field("zrest_secrets", &self.zrest_secrets.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        Authenticator {
            static_users: config
                .static_users
                .into_iter()
                .map(|user| (user.name, user.secret))
                .collect(),
            userhashes: HashMap::new(),
            userhash_realm: String::new(),
            auth_secrets: config.auth_secrets,
            zrest_secrets: config.zrest_secrets,
            nonce_lifetime: config.nonce_lifetime,
            nonce_key: NonceKey::new(config.nonce_secret, config.advertise_password_algorithms),
            advertise_password_algorithms: config.advertise_password_algorithms,
        }
    }

    /// The credential for USERNAME in `realm` at wall-clock `unix_secs`, or why not (→ 401).
    ///
    /// Static users are looked up first; then a zrest-shaped username is checked against the
    /// zrest secrets, then a coturn REST username against the `use-auth-secret` secrets.
    /// Time-limited usernames are accepted up to and including their expiry second.
    pub fn credential(
        &self,
        username: &str,
        realm: &str,
        unix_secs: u64,
    ) -> Result<Credential, AuthError> {
        if let Some(secret) = self.static_users.get(username) {
            let keys = match secret {
                StaticSecret::Password(password) => {
                    LongTermKeys::from_password(username, realm, password)
                }
                StaticSecret::Md5Key(key) => LongTermKeys::from_md5_key(*key),
            };
            return Ok(Credential::new(username, vec![keys]));
        }
        if !self.zrest_secrets.is_empty() {
            if let Some(zrest) = shared_secret::parse_zrest(username) {
                check_expiry(zrest.expiry, unix_secs)?;
                let secret =
                    self.zrest_secrets
                        .get(zrest.key_index)
                        .ok_or(AuthError::UnknownKeyIndex {
                            key_index: zrest.key_index,
                        })?;
                let password = shared_secret::zrest_password(secret.as_bytes(), username);
                let keys = LongTermKeys::from_password(username, realm, &password);
                return Ok(Credential::time_limited(
                    username,
                    zrest.user,
                    zrest.expiry,
                    vec![keys],
                ));
            }
        }
        if !self.auth_secrets.is_empty() {
            if let Some(coturn) = shared_secret::parse_coturn(username) {
                check_expiry(coturn.expiry, unix_secs)?;
                let candidates = self
                    .auth_secrets
                    .iter()
                    .map(|secret| {
                        let password = shared_secret::coturn_password(secret.as_bytes(), username);
                        LongTermKeys::from_password(username, realm, &password)
                    })
                    .collect();
                return Ok(Credential::time_limited(
                    username,
                    coturn.user,
                    coturn.expiry,
                    candidates,
                ));
            }
        }
        Err(AuthError::UnknownUser)
    }

    /// Precomputes the USERHASH of every static user in `realm` (RFC 8489 §14.4:
    /// SHA-256(username ":" realm), without OpaqueString preparation, like the keys), so
    /// [`Self::static_user_by_userhash`] is one hash lookup. The server does this for its
    /// realm when it starts.
    pub fn index_userhashes(&mut self, realm: &str) {
        self.userhashes = self
            .static_users
            .keys()
            .map(|name| (userhash(name, realm), name.clone()))
            .collect();
        self.userhash_realm = realm.to_owned();
    }

    /// The static user whose USERHASH this is in `realm` (the realm indexed by
    /// [`Self::index_userhashes`]; any other realm finds nobody). Only static users can
    /// be found: time-limited usernames cannot be enumerated, so their hashes are unknown
    /// (→ 401).
    pub fn static_user_by_userhash(&self, userhash: &[u8; 32], realm: &str) -> Option<&str> {
        if realm != self.userhash_realm {
            return None;
        }
        self.userhashes.get(userhash).map(String::as_str)
    }

    /// A fresh stateless nonce (HMAC over expiry + client IP) — RFC 8489 §9.2.
    pub fn make_nonce(&self, unix_secs: u64, client: IpAddr) -> String {
        let expiry = unix_secs.saturating_add(self.nonce_lifetime.as_secs().max(1));
        self.nonce_key.make(expiry, client)
    }

    /// Whether `nonce` is one of ours, for this client, and still fresh (RFC 8489 §9.2.5).
    pub fn check_nonce(&self, nonce: &[u8], unix_secs: u64, client: IpAddr) -> NonceStatus {
        self.nonce_key.check(nonce, unix_secs, client)
    }

    /// Whether nonces carry the "Password algorithms" security feature (RFC 8489 §9.2.1):
    /// if so, 401/438 responses must include PASSWORD-ALGORITHMS (MD5 and SHA-256).
    pub fn advertises_password_algorithms(&self) -> bool {
        self.advertise_password_algorithms
    }
}

fn userhash(username: &str, realm: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(username.as_bytes())
        .chain_update(":")
        .chain_update(realm)
        .finalize()
        .into()
}

fn check_expiry(expiry: u64, unix_secs: u64) -> Result<(), AuthError> {
    if unix_secs > expiry {
        Err(AuthError::Expired { expired_at: expiry })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::protocol::stun::PasswordAlgorithm;

    const REALM: &str = "turn-relay.local";
    const NOW: u64 = 1_699_999_000;

    fn config() -> AuthConfig {
        AuthConfig {
            static_users: vec![
                StaticUser {
                    name: "alice".into(),
                    secret: StaticSecret::Password("secretpw".into()),
                },
                StaticUser {
                    name: "hashed".into(),
                    // printf '%s' 'alice:turn-relay.local:secretpw' | openssl dgst -md5
                    secret: StaticSecret::Md5Key(hex_array("d2f83184ee1f747bd65e579c334b9b55")),
                },
            ],
            auth_secrets: vec!["north".into(), "south".into()],
            zrest_secrets: vec!["first".into(), "second".into()],
            nonce_lifetime: Duration::from_secs(3600),
            nonce_secret: b"nonce secret for tests".to_vec(),
            advertise_password_algorithms: true,
        }
    }

    fn hex_array<const N: usize>(text: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out).expect("test constant is hex");
        out
    }

    fn md5_key(credential: &Credential) -> String {
        hex::encode(
            credential
                .key(PasswordAlgorithm::Md5)
                .expect("MD5 key always exists"),
        )
    }

    #[test]
    fn static_password_user_yields_md5_and_sha256_keys() {
        let auth = Authenticator::new(config());
        let credential = auth
            .credential("alice", REALM, NOW)
            .expect("alice is configured");
        assert_eq!(credential.username(), "alice");
        // printf '%s' 'alice:turn-relay.local:secretpw' | openssl dgst -md5 / -sha256
        assert_eq!(md5_key(&credential), "d2f83184ee1f747bd65e579c334b9b55");
        assert_eq!(
            hex::encode(
                credential
                    .key(PasswordAlgorithm::Sha256)
                    .expect("derived from password")
            ),
            "36b2e24c8b74f4a53961927cf11014d6757be920f8bb1bbf4a1cc5af7eb73ca5"
        );
    }

    #[test]
    fn prehashed_static_user_has_md5_key_only() {
        let auth = Authenticator::new(config());
        let credential = auth.credential("hashed", REALM, NOW).expect("configured");
        assert_eq!(md5_key(&credential), "d2f83184ee1f747bd65e579c334b9b55");
        assert_eq!(credential.key(PasswordAlgorithm::Sha256), None);
    }

    #[test]
    fn unknown_and_empty_usernames_are_rejected() {
        let auth = Authenticator::new(config());
        assert_eq!(
            auth.credential("mallory", REALM, NOW).unwrap_err(),
            AuthError::UnknownUser
        );
        assert_eq!(
            auth.credential("", REALM, NOW).unwrap_err(),
            AuthError::UnknownUser
        );
    }

    #[test]
    fn coturn_rest_username_uses_every_configured_secret() {
        let auth = Authenticator::new(config());
        let credential = auth
            .credential("1700000000:alice", REALM, NOW)
            .expect("not expired");
        // p = base64(HMAC-SHA1("north", u)) = Cd/49soE35ICqcJF/bCTn8Z4OyE=;
        // printf '%s' "$u:turn-relay.local:$p" | openssl dgst -md5 / -sha256
        assert_eq!(md5_key(&credential), "b094a8b568befdc9b4f967e057cbcf9f");
        assert_eq!(
            hex::encode(credential.key(PasswordAlgorithm::Sha256).expect("derived")),
            "72d28f6df0e973bd9f67f4c9c6dc7bc65d12fccdba047a1d61d15f68f84b2f67"
        );
        assert_eq!(credential.candidate_keys(PasswordAlgorithm::Md5).count(), 2);
    }

    #[test]
    fn coturn_rest_username_without_user_part_verifies_with_the_second_secret() {
        let auth = Authenticator::new(config());
        let credential = auth
            .credential("1700000000", REALM, NOW)
            .expect("not expired");
        // p = base64(HMAC-SHA1("south", "1700000000")) = nRQGY+NJyUpTFd6/uAe7NUz1cjU=
        let expected = hex_array::<16>("d15d110b48d08e8cc08ace1a09558304");
        let candidates: Vec<&[u8]> = credential.candidate_keys(PasswordAlgorithm::Md5).collect();
        assert_eq!(candidates.len(), 2);
        assert_ne!(candidates[0], expected.as_slice());
        assert_eq!(candidates[1], expected.as_slice());
    }

    #[test]
    fn expired_rest_username_is_rejected() {
        let auth = Authenticator::new(config());
        assert!(auth
            .credential("1700000000:alice", REALM, 1_700_000_000)
            .is_ok());
        assert_eq!(
            auth.credential("1700000000:alice", REALM, 1_700_000_001)
                .unwrap_err(),
            AuthError::Expired {
                expired_at: 1_700_000_000
            }
        );
    }

    #[test]
    fn rest_usernames_are_unknown_without_secrets() {
        let auth = Authenticator::new(AuthConfig {
            auth_secrets: vec![],
            zrest_secrets: vec![],
            ..config()
        });
        assert_eq!(
            auth.credential("1700000000:alice", REALM, NOW).unwrap_err(),
            AuthError::UnknownUser
        );
        assert_eq!(
            auth.credential("1700000000.s.42", REALM, NOW).unwrap_err(),
            AuthError::UnknownUser
        );
    }

    #[test]
    fn zrest_v1_username_selects_secret_by_key_index() {
        let auth = Authenticator::new(config());
        let credential = auth
            .credential("d=1700000000.v=1.k=1.t=s.r=abc123", REALM, NOW)
            .expect("valid");
        // p = base64(HMAC-SHA512("second", u)) (openssl dgst -sha512 -hmac second);
        // printf '%s' "$u:turn-relay.local:$p" | openssl dgst -md5
        assert_eq!(md5_key(&credential), "a3094c705015f49a58df7b211e8d3253");
        assert_eq!(credential.candidate_keys(PasswordAlgorithm::Md5).count(), 1);
    }

    #[test]
    fn zrest_legacy_username_uses_the_first_secret() {
        let auth = Authenticator::new(config());
        let credential = auth
            .credential("1700000000.s.42", REALM, NOW)
            .expect("valid");
        // p = base64(HMAC-SHA512("first", "1700000000.s.42"))
        assert_eq!(md5_key(&credential), "efdbe2a1ef0dded958f7f212c4dad81a");
    }

    #[test]
    fn quotas_count_time_limited_usernames_by_their_user_part() {
        let auth = Authenticator::new(config());
        let quota = |username: &str| {
            let credential = auth.credential(username, REALM, NOW).expect("valid");
            (credential.quota_user().to_owned(), credential.expires_at())
        };
        assert_eq!(quota("alice"), ("alice".to_owned(), None));
        assert_eq!(
            quota("1700000000:alice"),
            ("alice".to_owned(), Some(1_700_000_000))
        );
        assert_eq!(
            quota("1700003600:alice"),
            ("alice".to_owned(), Some(1_700_003_600))
        );
        assert_eq!(
            quota("alice:1700000000"),
            ("alice".to_owned(), Some(1_700_000_000))
        );
        assert_eq!(
            quota("d=1700000000.v=1.k=1.t=s.r=abc123").0,
            "v=1.k=1.t=s.r=abc123"
        );
        assert_eq!(
            quota("d=1700003600.v=1.k=1.t=s.r=abc123").0,
            "v=1.k=1.t=s.r=abc123"
        );
        assert_eq!(quota("1700000000.s.42").0, "s.42");
    }

    #[test]
    fn zrest_unknown_key_index_and_expiry_are_rejected() {
        let auth = Authenticator::new(config());
        assert_eq!(
            auth.credential("d=1700000000.v=1.k=2.t=s.r=abc123", REALM, NOW)
                .unwrap_err(),
            AuthError::UnknownKeyIndex { key_index: 2 }
        );
        assert_eq!(
            auth.credential("d=1700000000.v=1.k=0.t=s.r=abc123", REALM, 1_700_000_001)
                .unwrap_err(),
            AuthError::Expired {
                expired_at: 1_700_000_000
            }
        );
        assert_eq!(
            auth.credential("d=1700000000.v=1.k=9.t=s.r=abc123", REALM, NOW)
                .unwrap_err()
                .stun_error_code(),
            401
        );
    }

    #[test]
    fn userhash_finds_static_users_in_the_realm() {
        let mut auth = Authenticator::new(config());
        auth.index_userhashes(REALM);
        let userhash = |name: &str, realm: &str| -> [u8; 32] {
            Sha256::digest(format!("{name}:{realm}")).into()
        };
        let name = config().static_users[0].name.clone();
        assert_eq!(
            auth.static_user_by_userhash(&userhash(&name, REALM), REALM),
            Some(name.as_str())
        );
        assert_eq!(
            auth.static_user_by_userhash(&userhash(&name, "other.realm"), REALM),
            None
        );
        assert_eq!(
            auth.static_user_by_userhash(&userhash("nobody", REALM), REALM),
            None
        );
        assert_eq!(
            auth.static_user_by_userhash(&userhash(&name, "other.realm"), "other.realm"),
            None,
            "only the indexed realm"
        );
    }

    #[test]
    fn static_user_wins_over_rest_parsing() {
        let mut cfg = config();
        cfg.static_users.push(StaticUser {
            name: "1700000000:alice".into(),
            secret: StaticSecret::Password("secretpw".into()),
        });
        let auth = Authenticator::new(cfg);
        let credential = auth
            .credential("1700000000:alice", REALM, u64::MAX)
            .expect("static never expires");
        assert_eq!(credential.candidate_keys(PasswordAlgorithm::Md5).count(), 1);
    }

    #[test]
    fn nonce_round_trips_for_the_same_client() {
        let auth = Authenticator::new(config());
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7));
        let nonce = auth.make_nonce(NOW, client);
        assert!(nonce.starts_with(NONCE_COOKIE_PASSWORD_ALGORITHMS));
        assert_eq!(nonce.len(), 29, "short: it is in every 401");
        assert_eq!(
            auth.check_nonce(nonce.as_bytes(), NOW, client),
            NonceStatus::Valid
        );
        assert_eq!(
            auth.check_nonce(nonce.as_bytes(), NOW + 3599, client),
            NonceStatus::Valid
        );
        // The IPv4-mapped form of the same client is the same client.
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 18, 0, 7).to_ipv6_mapped());
        assert_eq!(
            auth.check_nonce(nonce.as_bytes(), NOW, mapped),
            NonceStatus::Valid
        );
    }

    #[test]
    fn nonce_goes_stale_after_its_lifetime() {
        let auth = Authenticator::new(config());
        let client = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let nonce = auth.make_nonce(NOW, client);
        assert_eq!(
            auth.check_nonce(nonce.as_bytes(), NOW + 3600, client),
            NonceStatus::Stale
        );
    }

    #[test]
    fn nonce_for_another_client_ip_is_invalid() {
        let auth = Authenticator::new(config());
        let nonce = auth.make_nonce(NOW, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7)));
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 8));
        assert_eq!(
            auth.check_nonce(nonce.as_bytes(), NOW, other),
            NonceStatus::Invalid
        );
    }

    #[test]
    fn forged_or_malformed_nonces_are_invalid() {
        let auth = Authenticator::new(config());
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7));
        let nonce = auth.make_nonce(NOW, client);
        // Extending the expiry invalidates the MAC.
        let cookie_len = NONCE_COOKIE_PASSWORD_ALGORITHMS.len();
        let mut extended = nonce.clone().into_bytes();
        extended[cookie_len] = b'f';
        assert_eq!(
            auth.check_nonce(&extended, NOW, client),
            NonceStatus::Invalid
        );
        // A stale nonce with a forged MAC is invalid, not stale.
        let mut forged_stale = nonce.clone().into_bytes();
        let last = forged_stale.len() - 1;
        forged_stale[last] = if forged_stale[last] == b'0' {
            b'1'
        } else {
            b'0'
        };
        assert_eq!(
            auth.check_nonce(&forged_stale, NOW + 7200, client),
            NonceStatus::Invalid
        );
        // A nonce from a server with another secret.
        let other = Authenticator::new(AuthConfig {
            nonce_secret: b"other".to_vec(),
            ..config()
        });
        assert_eq!(
            auth.check_nonce(other.make_nonce(NOW, client).as_bytes(), NOW, client),
            NonceStatus::Invalid
        );
        for junk in [
            &b""[..],
            b"obMatJos2AAAB",
            b"obMatJos2AAABzz",
            &nonce.as_bytes()[cookie_len..],
            b"\xff\xfe",
        ] {
            assert_eq!(auth.check_nonce(junk, NOW, client), NonceStatus::Invalid);
        }
    }

    #[test]
    fn nonce_without_cookie_when_not_advertising() {
        let auth = Authenticator::new(AuthConfig {
            advertise_password_algorithms: false,
            ..config()
        });
        let client = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 7));
        let nonce = auth.make_nonce(NOW, client);
        assert!(!nonce.starts_with("obMatJos2"));
        assert_eq!(nonce.len(), 16);
        assert!(nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            auth.check_nonce(nonce.as_bytes(), NOW, client),
            NonceStatus::Valid
        );
        assert!(!auth.advertises_password_algorithms());
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let cfg = config();
        let auth = Authenticator::new(cfg.clone());
        let credential = auth.credential("alice", REALM, NOW).expect("configured");
        let printed = format!("{cfg:?} {auth:?} {credential:?}");
        for secret in ["secretpw", "north", "south", "first", "second", "d2f83184"] {
            assert!(!printed.contains(secret), "{secret} leaked in {printed}");
        }
    }
}
