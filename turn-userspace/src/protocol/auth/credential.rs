//! Long-term credentials and the keys derived from them (RFC 8489 §9.2.2).

use std::fmt;

use md5::digest::Output;
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::protocol::stun::PasswordAlgorithm;

/// The keys one password yields for MESSAGE-INTEGRITY (MD5) and MESSAGE-INTEGRITY-SHA256.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LongTermKeys {
    md5: [u8; 16],
    /// Absent when only a pre-hashed MD5 key was configured.
    sha256: Option<[u8; 32]>,
}

impl LongTermKeys {
    /// RFC 8489 §9.2.2: `key = H(username ":" OpaqueString(realm) ":" OpaqueString(password))`.
    ///
    /// OpaqueString (RFC 8265) preparation is not applied: realm and password are used as
    /// raw UTF-8, which is what coturn, restund and browsers do for ASCII credentials.
    pub(crate) fn from_password(username: &str, realm: &str, password: &str) -> Self {
        LongTermKeys {
            md5: md5_long_term_key(username, realm, password),
            sha256: Some(long_term_key::<Sha256>(username, realm, password).into()),
        }
    }

    /// A pre-hashed MD5 key (coturn's `user=name:0x<hex>` form); no SHA-256 key can be derived.
    pub(crate) fn from_md5_key(md5: [u8; 16]) -> Self {
        LongTermKeys { md5, sha256: None }
    }

    fn key(&self, algorithm: PasswordAlgorithm) -> Option<&[u8]> {
        match algorithm {
            PasswordAlgorithm::Md5 => Some(&self.md5),
            PasswordAlgorithm::Sha256 => self.sha256.as_ref().map(|key| key.as_slice()),
        }
    }
}

/// The MD5 long-term key `MD5(username ":" realm ":" password)` (RFC 8489 §9.2.2) that a
/// client keys MESSAGE-INTEGRITY with.
pub fn md5_long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    long_term_key::<Md5>(username, realm, password).into()
}

/// `H(username ":" realm ":" password)` with the hash of the password algorithm.
fn long_term_key<H: Digest>(username: &str, realm: &str, password: &str) -> Output<H> {
    H::new()
        .chain_update(username)
        .chain_update(":")
        .chain_update(realm)
        .chain_update(":")
        .chain_update(password)
        .finalize()
}

/// What the server needs to check a request's MESSAGE-INTEGRITY(-SHA256) for one USERNAME.
///
/// Usually one key per algorithm. With several `use-auth-secret` secrets configured (secret
/// rotation), every secret yields a candidate: [`Credential::key`] returns the one derived
/// from the first secret, [`Credential::candidate_keys`] all of them in configuration order.
#[derive(Clone)]
pub struct Credential {
    username: String,
    quota_user: String,
    expires_at: Option<u64>,
    candidates: Vec<LongTermKeys>,
}

impl Credential {
    /// The credential of a static user: its own quota user, never expiring.
    pub(crate) fn new(username: &str, candidates: Vec<LongTermKeys>) -> Self {
        Credential {
            username: username.to_owned(),
            quota_user: username.to_owned(),
            expires_at: None,
            candidates,
        }
    }

    /// The credential of a time-limited username that expires at unix second
    /// `expires_at` and names `quota_user` across renewals.
    pub(crate) fn time_limited(
        username: &str,
        quota_user: &str,
        expires_at: u64,
        candidates: Vec<LongTermKeys>,
    ) -> Self {
        Credential {
            quota_user: quota_user.to_owned(),
            expires_at: Some(expires_at),
            ..Credential::new(username, candidates)
        }
    }

    /// Whom allocation quotas count this credential for: the username of a static user;
    /// the user part of a time-limited username (coturn REST `expiry:user`, zrest without
    /// its expiry), so renewing a credential does not renew the quota.
    pub fn quota_user(&self) -> &str {
        &self.quota_user
    }

    /// The unix second a time-limited username expires at; None for static users.
    pub fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }

    /// The long-term key for the given algorithm (RFC 8489 §9.2.2): MD5(user:realm:pass) or
    /// SHA-256(user:realm:pass). None when not derivable (a pre-hashed MD5 key only has no
    /// SHA-256 key).
    pub fn key(&self, algorithm: PasswordAlgorithm) -> Option<&[u8]> {
        self.candidates.first().and_then(|keys| keys.key(algorithm))
    }

    /// Every key the client may have used, first the one [`Credential::key`] returns. A
    /// request is authentic when its integrity checks with any of them.
    pub fn candidate_keys(&self, algorithm: PasswordAlgorithm) -> CandidateKeys<'_> {
        CandidateKeys {
            candidates: self.candidates.iter(),
            algorithm,
        }
    }

    /// The USERNAME this credential belongs to.
    pub fn username(&self) -> &str {
        &self.username
    }
}

/// The keys of [`Credential::candidate_keys`]. A named type (no drop glue), so the
/// iterator may end a block that owns the credential.
#[derive(Clone)]
pub struct CandidateKeys<'a> {
    candidates: std::slice::Iter<'a, LongTermKeys>,
    algorithm: PasswordAlgorithm,
}

impl<'a> Iterator for CandidateKeys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let algorithm = self.algorithm;
        self.candidates
            .by_ref()
            .find_map(|keys| keys.key(algorithm))
    }
}

/// Keys never appear in logs.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("quota_user", &self.quota_user)
            .field("expires_at", &self.expires_at)
            .field("candidates", &self.candidates.len())
            .finish_non_exhaustive()
    }
}
