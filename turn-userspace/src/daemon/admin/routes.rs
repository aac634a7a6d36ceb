//! What the admin endpoint answers: a table of routes. A new endpoint is one row in
//! [`ROUTES`] and one handler; unknown paths get 404, known paths with another method
//! get 405 with an `Allow` header.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::AdminState;

/// A response with its whole body in memory.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Answers a request from the shared state, without waiting on anything.
type Handler = fn(&AdminState, &Request<hyper::body::Incoming>) -> Reply;

struct Route {
    method: Method,
    path: &'static str,
    handler: Handler,
}

/// Every route of the endpoint.
const ROUTES: &[Route] = &[Route {
    method: Method::GET,
    path: "/metrics",
    handler: metrics,
}];

/// The reply to `request`.
pub(crate) fn respond(state: &AdminState, request: &Request<hyper::body::Incoming>) -> Reply {
    let path = request.uri().path();
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
        if route.method == request.method() {
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

/// `GET /metrics`: the Prometheus text exposition.
fn metrics(state: &AdminState, _request: &Request<hyper::body::Incoming>) -> Reply {
    let (body, content_type) = state.metrics.encode();
    with_type(StatusCode::OK, body, content_type)
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
