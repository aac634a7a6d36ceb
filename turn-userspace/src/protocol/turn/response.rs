//! Building, caching and queuing responses (RFC 8489 §6.3, §9.2.4).

use std::time::Instant;

use crate::protocol::datapath::ClientFlow;
use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::{Class, Message, MessageBuilder, Method, TransactionId};

use super::authenticate::{AuthContext, IntegrityKind, SERVER_PASSWORD_ALGORITHMS};
use super::{Now, Server, Transmit, TurnError};

/// What a response needs to know about its request.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestInfo {
    pub(super) method: Method,
    pub(super) transaction_id: TransactionId,
    /// RFC 8489 §7.3: a response carries FINGERPRINT when the request did.
    pub(super) fingerprint: bool,
}

impl RequestInfo {
    pub(super) fn of(request: &Message) -> RequestInfo {
        RequestInfo {
            method: request.method(),
            transaction_id: *request.transaction_id(),
            fingerprint: request.fingerprint().is_some(),
        }
    }
}

/// The key and algorithm a response is integrity-protected with, and the user it answers
/// (its cached copy counts against that user's share of the transaction cache).
#[derive(Debug, Clone, Copy)]
pub(super) struct ResponseIntegrity<'k> {
    pub(super) key: &'k [u8],
    pub(super) kind: IntegrityKind,
    pub(super) user: &'k str,
}

impl<'k> From<&'k AuthContext> for ResponseIntegrity<'k> {
    fn from(auth: &'k AuthContext) -> Self {
        ResponseIntegrity {
            key: auth.key.as_slice(),
            kind: auth.integrity,
            user: &auth.quota_user,
        }
    }
}

impl<R: rand::RngCore> Server<R> {
    /// Writes the response (attributes, SOFTWARE when authenticated, integrity,
    /// FINGERPRINT) and queues it.
    /// Authenticated responses to UDP clients are also cached for retransmissions (RFC 8489
    /// §6.3.1, RFC 8656 §7.2); unauthenticated ones are cheap to recompute and caching them
    /// would let unauthenticated traffic fill memory. Over TCP and TLS clients do not
    /// retransmit (RFC 8489 §6.2.2), so nothing is cached for them.
    pub(super) fn queue_response(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        request: &RequestInfo,
        class: Class,
        integrity: Option<ResponseIntegrity<'_>>,
        attributes: impl FnOnce(&mut MessageBuilder<'_>),
    ) {
        let mut payload = Vec::with_capacity(160);
        let mut builder =
            MessageBuilder::new(&mut payload, request.method, class, &request.transaction_id);
        attributes(&mut builder);
        // Unauthenticated answers stay small (they are what a spoofed request reflects).
        if let (Some(software), Some(_)) = (&self.config.software, integrity) {
            builder.attribute(attr::SOFTWARE, software.as_bytes());
        }
        match integrity {
            Some(ResponseIntegrity {
                key,
                kind: IntegrityKind::Sha1,
                ..
            }) => {
                builder.message_integrity(key);
            }
            Some(ResponseIntegrity {
                key,
                kind: IntegrityKind::Sha256,
                ..
            }) => {
                builder.message_integrity_sha256(key);
            }
            None => {}
        }
        if request.fingerprint {
            builder.fingerprint();
        }
        if let (Some(ResponseIntegrity { user, .. }), false) =
            (integrity, flow.transport.is_stream())
        {
            self.cache_response(now, flow, request.transaction_id, user, &payload);
        }
        self.transmit(flow, payload);
    }

    /// Keeps an authenticated response for retransmissions (see [`super::cache::ResponseCache::insert`]).
    fn cache_response(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        transaction_id: TransactionId,
        user: &str,
        payload: &[u8],
    ) {
        let per_user = self.limits.max_cached_responses_per_user;
        self.responses
            .insert(now, flow, transaction_id, user, per_user, payload);
    }

    /// Drops a cached response (replaced, or its allocation failed).
    pub(super) fn forget_response(&mut self, flow: ClientFlow, transaction_id: TransactionId) {
        self.responses.forget(flow, transaction_id);
    }

    /// Queues the integrity-protected success response of an authenticated request.
    pub(super) fn queue_success(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        request: &RequestInfo,
        auth: &AuthContext,
        attributes: impl FnOnce(&mut MessageBuilder<'_>),
    ) {
        self.queue_response(
            now,
            flow,
            request,
            Class::SuccessResponse,
            Some(auth.into()),
            attributes,
        );
    }

    /// Queues an error response. 401 and 438 carry REALM and a fresh NONCE (plus
    /// PASSWORD-ALGORITHMS when the nonce announces that feature, RFC 8489 §9.2.3) and no
    /// integrity; 420 lists the unknown attributes (RFC 8489 §6.3.1). Answers to
    /// unauthenticated requests (all but 438 of those without integrity) are limited per
    /// source and dropped beyond the limit, over UDP: a stream's source is not spoofed.
    pub(super) fn queue_error(
        &mut self,
        now: Now,
        flow: ClientFlow,
        request: &RequestInfo,
        integrity: Option<ResponseIntegrity<'_>>,
        error: TurnError,
        unknown_attributes: &[u16],
    ) {
        if integrity.is_none()
            && error != TurnError::StaleNonce
            && !flow.transport.is_stream()
            && !self.answer_limiter.allow(flow.client.ip(), now.instant)
        {
            tracing::trace!(client = %flow.client, code = error.code(), "unauthenticated answer over the source's rate; dropped");
            self.stats.unauthenticated_answers_dropped += 1;
            return;
        }
        tracing::debug!(client = %flow.client, method = request.method.0, code = error.code(), %error, "request rejected");
        let challenge =
            matches!(error, TurnError::Unauthenticated | TurnError::StaleNonce).then(|| {
                (
                    self.config.realm.clone(),
                    self.auth.make_nonce(now.unix_secs, flow.client.ip()),
                    self.auth.advertises_password_algorithms(),
                )
            });
        let integrity = if challenge.is_some() { None } else { integrity };
        self.queue_response(
            now.instant,
            flow,
            request,
            Class::ErrorResponse,
            integrity,
            |builder| {
                // A challenge has no reason phrase (RFC 8489 §14.8 allows an empty one):
                // it is the largest unauthenticated answer.
                let reason = if error == TurnError::Unauthenticated {
                    String::new()
                } else {
                    error.to_string()
                };
                builder.error_code(error.code(), &reason);
                if let Some((realm, nonce, advertise_algorithms)) = &challenge {
                    builder.attribute(attr::REALM, realm.as_bytes());
                    builder.attribute(attr::NONCE, nonce.as_bytes());
                    if *advertise_algorithms {
                        builder.password_algorithms(&SERVER_PASSWORD_ALGORITHMS);
                    }
                }
                if error == TurnError::UnknownAttribute {
                    builder.unknown_attributes(unknown_attributes);
                }
                if let TurnError::TryAlternate(alternate) = error {
                    builder.address(attr::ALTERNATE_SERVER, alternate);
                }
            },
        );
    }

    /// Answers a retransmitted request from the cache; false when it is not one.
    pub(super) fn answer_retransmission(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        transaction_id: TransactionId,
    ) -> bool {
        let Some(payload) = self.responses.get(now, flow, transaction_id) else {
            return false;
        };
        let payload = payload.to_vec();
        self.transmit(flow, payload);
        true
    }

    /// Queues `payload` for the client of `flow`.
    fn transmit(&mut self, flow: ClientFlow, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            from: flow.listener,
            to: flow.client,
            transport: flow.transport,
            payload,
        });
    }
}
