//! Long-term credential checks of TURN requests (RFC 8489 §9.2.4, RFC 8656 §5).

use crate::protocol::auth::{NonceStatus, NONCE_COOKIE_PASSWORD_ALGORITHMS};
use crate::protocol::datapath::ClientFlow;
use crate::protocol::stun::{Message, PasswordAlgorithm};

use super::allocation::Key;
use super::{Now, Server, TurnError};

/// The PASSWORD-ALGORITHMS this server offers, in order of preference (RFC 8489 §9.2.3).
pub(super) const SERVER_PASSWORD_ALGORITHMS: [PasswordAlgorithm; 2] =
    [PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];

/// Which integrity attribute a request used; the response uses the same (RFC 8489 §9.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IntegrityKind {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

/// An authenticated request: who sent it and the key its response is protected with.
#[derive(Debug)]
pub(super) struct AuthContext {
    pub(super) username: String,
    /// Whom the allocation quota counts this request for (see
    /// [`crate::protocol::auth::Credential::quota_user`]).
    pub(super) quota_user: String,
    /// When a time-limited username expires (unix seconds).
    pub(super) credential_expiry: Option<u64>,
    pub(super) key: Key,
    pub(super) integrity: IntegrityKind,
    pub(super) password_algorithm: PasswordAlgorithm,
}

/// Who a request claims to be.
enum Identity<'a> {
    Username(&'a str),
    /// USERHASH (RFC 8489 §14.4) sent instead of USERNAME.
    Userhash([u8; 32]),
}

fn verify(request: &Message, integrity: IntegrityKind, key: &[u8]) -> bool {
    match integrity {
        IntegrityKind::Sha1 => request.verify_message_integrity(key),
        IntegrityKind::Sha256 => request.verify_message_integrity_sha256(key),
    }
}

impl<R: rand::RngCore> Server<R> {
    /// RFC 8489 §9.2.4, in order: no integrity → 401; USERNAME (or USERHASH)/REALM/NONCE
    /// missing → 400; password algorithm negotiation broken → 400; nonce not ours → 401;
    /// unknown user or wrong realm → 401; integrity mismatch → 401; nonce expired → 438.
    /// USERHASH without USERNAME (RFC 8489 §14.4) finds static users only (else 401).
    /// MESSAGE-INTEGRITY-SHA256
    /// is preferred when both are present. A request on an existing allocation with the
    /// same USERNAME is checked with the key the allocation was created with; when that
    /// username is time-limited (REST, zrest), it is refused with 401 once it expired more
    /// than [`super::ServerLimits::credential_expiry_grace`] ago, so expiry revokes:
    /// Refresh, CreatePermission and ChannelBind stop working and the allocation ends
    /// with its lifetime.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        flow: ClientFlow,
        request: &Message,
    ) -> Result<AuthContext, TurnError> {
        let integrity = if request.message_integrity_sha256().is_some() {
            IntegrityKind::Sha256
        } else if request.message_integrity().is_some() {
            IntegrityKind::Sha1
        } else {
            return Err(TurnError::Unauthenticated);
        };
        let identity = match request.username()? {
            Some(username) => Identity::Username(username),
            None => request
                .userhash()?
                .map(Identity::Userhash)
                .ok_or(TurnError::BadRequest)?,
        };
        let (Some(realm), Some(nonce)) = (request.realm()?, request.nonce()?) else {
            return Err(TurnError::BadRequest);
        };
        let password_algorithm = self.negotiated_password_algorithm(request, nonce)?;
        let nonce_status = self
            .auth
            .check_nonce(nonce, now.unix_secs, flow.client.ip());
        if nonce_status == NonceStatus::Invalid {
            tracing::debug!(client = %flow.client, "nonce not issued by this server");
            return Err(TurnError::Unauthenticated);
        }
        // A nonce issued to this address came back: the source receives our answers.
        self.answer_limiter.verify(flow.client.ip(), now.instant);
        if realm != self.config.realm {
            tracing::debug!(client = %flow.client, "request for another realm");
            return Err(TurnError::Unauthenticated);
        }
        let username = match identity {
            Identity::Username(username) => username,
            Identity::Userhash(userhash) => self
                .auth
                .static_user_by_userhash(&userhash, realm)
                .ok_or_else(|| {
                    tracing::debug!(client = %flow.client, "USERHASH of no static user");
                    TurnError::Unauthenticated
                })?,
        };
        let allocation = self.allocations.get(&flow).filter(|allocation| {
            *allocation.username == *username && allocation.password_algorithm == password_algorithm
        });
        if let Some(expiry) = allocation.and_then(|allocation| allocation.credential_expiry) {
            let grace = self.limits.credential_expiry_grace.as_secs();
            if now.unix_secs > expiry.saturating_add(grace) {
                tracing::debug!(client = %flow.client, expiry, "time-limited username expired");
                return Err(TurnError::Unauthenticated);
            }
        }
        let (key, quota_user, credential_expiry) = match allocation {
            Some(allocation) => (
                verify(request, integrity, allocation.key.as_slice()).then_some(allocation.key),
                allocation.quota_user.to_string(),
                allocation.credential_expiry,
            ),
            None => {
                let credential = self
                    .auth
                    .credential(username, realm, now.unix_secs)
                    .map_err(|error| {
                        tracing::debug!(client = %flow.client, %error, "no credential");
                        TurnError::Unauthenticated
                    })?;
                let key = credential
                    .candidate_keys(password_algorithm)
                    .find(|key| verify(request, integrity, key))
                    .and_then(Key::new);
                (
                    key,
                    credential.quota_user().to_owned(),
                    credential.expires_at(),
                )
            }
        };
        let Some(key) = key else {
            tracing::debug!(client = %flow.client, "message integrity mismatch");
            return Err(TurnError::Unauthenticated);
        };
        if nonce_status == NonceStatus::Stale {
            return Err(TurnError::StaleNonce);
        }
        Ok(AuthContext {
            username: username.to_owned(),
            quota_user,
            credential_expiry,
            key,
            integrity,
            password_algorithm,
        })
    }

    /// RFC 8489 §9.2.4 password algorithm rules: only when our nonces announce the
    /// "Password algorithms" feature. Then a request carrying neither PASSWORD-ALGORITHMS nor
    /// PASSWORD-ALGORITHM uses MD5; one carrying both must echo our list unchanged and pick
    /// an algorithm from it; anything in between is a bad request. Without the feature,
    /// MD5 is used (RFC 5389 behaviour).
    fn negotiated_password_algorithm(
        &self,
        request: &Message,
        nonce: &[u8],
    ) -> Result<PasswordAlgorithm, TurnError> {
        if !self.auth.advertises_password_algorithms()
            || !nonce.starts_with(NONCE_COOKIE_PASSWORD_ALGORITHMS.as_bytes())
        {
            return Ok(PasswordAlgorithm::Md5);
        }
        let offered = request
            .password_algorithms()
            .map_err(|_| TurnError::BadRequest)?;
        let chosen = request
            .password_algorithm()
            .map_err(|_| TurnError::BadRequest)?;
        match (offered, chosen) {
            (None, None) => Ok(PasswordAlgorithm::Md5),
            (Some(offered), Some(chosen)) => {
                let ours = SERVER_PASSWORD_ALGORITHMS
                    .iter()
                    .map(|algorithm| algorithm.code());
                if offered.eq(ours) {
                    Ok(chosen)
                } else {
                    Err(TurnError::BadRequest)
                }
            }
            _ => Err(TurnError::BadRequest),
        }
    }
}
