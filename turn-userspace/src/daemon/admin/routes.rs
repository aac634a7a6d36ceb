//! What the admin endpoint answers: a table of routes. A new endpoint is one row in
//! [`ROUTES`] and one handler; unknown paths get 404, known paths with another method
//! get 405 with an `Allow` header.
//!
//! Reading (`GET`) is open to whoever reaches the listener: operators often expose
//! `/metrics` beyond loopback. Every state-changing request (`POST`) is answered only
//! from a loopback address or with `Authorization: Bearer <admin.token>`; anything else
//! gets 403, so reading metrics never gives control.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use serde::Serialize;
use subtle::ConstantTimeEq as _;

use super::api::Answer;
use super::AdminState;

/// A response with its whole body in memory.
pub(crate) type Reply = Response<Full<Bytes>>;

/// What a handler needs to know of a request.
pub(crate) struct Request<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
    /// The TCP peer.
    pub(crate) peer: SocketAddr,
}

/// Answers a request from the shared state, without waiting on anything.
type Handler = fn(&AdminState, &Request<'_>) -> Reply;

struct Route {
    method: Method,
    path: &'static str,
    handler: Handler,
}

/// Every route of the endpoint.
const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/metrics",
        handler: metrics,
    },
    Route {
        method: Method::GET,
        path: "/healthz",
        handler: healthz,
    },
    Route {
        method: Method::GET,
        path: "/readyz",
        handler: readyz,
    },
    Route {
        method: Method::GET,
        path: "/status",
        handler: status,
    },
    Route {
        method: Method::GET,
        path: "/sessions",
        handler: sessions,
    },
    Route {
        method: Method::POST,
        path: "/drain",
        handler: drain,
    },
    Route {
        method: Method::POST,
        path: "/undrain",
        handler: undrain,
    },
    Route {
        method: Method::POST,
        path: "/reload",
        handler: reload,
    },
];

/// The reply to `request`.
pub(crate) fn respond(state: &AdminState, request: &Request<'_>) -> Reply {
    let path = request.path;
    let mut allowed = ROUTES.iter().filter(|route| route.path == path).peekable();
    if allowed.peek().is_none() {
        let paths: Vec<&str> = ROUTES.iter().map(|route| route.path).collect();
        return text(
            StatusCode::NOT_FOUND,
            format!("not found; try {}\n", paths.join(", ")),
        );
    }
    let mut methods = Vec::new();
    for route in allowed {
        if route.method == request.method {
            if route.method != Method::GET && !may_change_state(state, request) {
                return text(
                    StatusCode::FORBIDDEN,
                    "state-changing requests are answered from loopback, or with \
                     \"Authorization: Bearer <admin.token>\"\n"
                        .to_owned(),
                );
            }
            return (route.handler)(state, request);
        }
        methods.push(route.method.as_str());
    }
    let mut reply = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{path} answers {}\n", methods.join(", ")),
    );
    if let Ok(allow) = HeaderValue::from_str(&methods.join(", ")) {
        reply.headers_mut().insert(ALLOW, allow);
    }
    reply
}

/// A POST from loopback, or one that carries the configured bearer token.
fn may_change_state(state: &AdminState, request: &Request<'_>) -> bool {
    let loopback = match request.peer.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    if loopback {
        return true;
    }
    let Some(token) = state.operations.token() else {
        return false;
    };
    request
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|offered| bool::from(offered.trim().as_bytes().ct_eq(token.as_bytes())))
}

/// `GET /metrics`: the Prometheus text exposition.
fn metrics(state: &AdminState, _request: &Request<'_>) -> Reply {
    let (body, content_type) = state.metrics.encode();
    with_type(StatusCode::OK, body, content_type)
}

/// `GET /healthz`: 200 while the process serves.
fn healthz(_state: &AdminState, _request: &Request<'_>) -> Reply {
    text(StatusCode::OK, "ok\n".to_owned())
}

/// `GET /readyz`: 200 while new allocations are accepted, 503 while draining.
fn readyz(state: &AdminState, _request: &Request<'_>) -> Reply {
    if state.operations.draining() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
    } else {
        text(StatusCode::OK, "ready\n".to_owned())
    }
}

/// `GET /status`: the relay's state as JSON.
fn status(state: &AdminState, _request: &Request<'_>) -> Reply {
    json(StatusCode::OK, &state.operations.status())
}

/// `GET /sessions`: every allocation as JSON (no secrets).
fn sessions(state: &AdminState, _request: &Request<'_>) -> Reply {
    json(StatusCode::OK, &state.operations.sessions())
}

/// `POST /drain`: new allocations go to the alternate servers (or get 508).
fn drain(state: &AdminState, request: &Request<'_>) -> Reply {
    let by = format!("POST /drain from {}", request.peer);
    json(StatusCode::OK, &state.operations.set_draining(true, &by))
}

/// `POST /undrain`: new allocations are accepted again.
fn undrain(state: &AdminState, request: &Request<'_>) -> Reply {
    let by = format!("POST /undrain from {}", request.peer);
    json(StatusCode::OK, &state.operations.set_draining(false, &by))
}

/// `POST /reload`: the configuration is read again (as on SIGHUP).
fn reload(state: &AdminState, request: &Request<'_>) -> Reply {
    let by = format!("POST /reload from {}", request.peer);
    match state.operations.reload(&by) {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(message) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &Answer {
                message,
                ..Answer::default()
            },
        ),
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            with_type(status, body, "application/json")
        }
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {error}\n"),
        ),
    }
}

/// A plain-text reply.
pub(crate) fn text(status: StatusCode, body: String) -> Reply {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}
