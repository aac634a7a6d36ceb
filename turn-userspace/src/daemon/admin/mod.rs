//! The admin HTTP endpoint (`metrics.listen`): HTTP/1.1 on hyper, routes in [`routes`],
//! its JSON documents in [`api`], and `turn-relay ctl`, its client, in [`ctl`].
//!
//! It is small on purpose and guarded like any listener facing a network: at most
//! [`Limits::max_connections`] connections at once (more are closed on accept), a request
//! head must arrive within [`Limits::header_read_timeout`] (hyper applies it to idle
//! keep-alive connections too), request heads are capped at [`MAX_REQUEST_HEAD`], and no
//! connection lives longer than [`Limits::connection_lifetime`].

pub mod api;
pub mod ctl;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::metrics::Metrics;
use api::Operations;

/// The largest request head (request line and headers) read; hyper answers 431 beyond.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// What the endpoint's handlers read and ask.
pub(crate) struct AdminState {
    pub(crate) metrics: Metrics,
    pub(crate) operations: std::sync::Arc<dyn Operations>,
}

/// How much any client may take of the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub(crate) max_connections: usize,
    /// Time to send a request head, counted from the connection's start or the end of the
    /// previous response (the idle timeout of keep-alive connections).
    pub(crate) header_read_timeout: Duration,
    /// Time after which a connection is closed whatever it is doing.
    pub(crate) connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
        }
    }
}

/// Binds `address` early in the start-up (connections wait in the backlog until
/// [`start`] serves them), so the endpoint answers as soon as the relay does.
pub(crate) async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the admin endpoint {address} (metrics.listen)"))
}

/// Serves the endpoint on `listener` until the returned task is aborted.
pub(crate) fn start(listener: TcpListener, state: Arc<AdminState>) -> JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(
            "admin endpoint: http://{address}/ (metrics, healthz, readyz, status, sessions; \
             POST drain, undrain, reload from loopback or with admin.token)"
        );
    }
    tokio::spawn(serve(listener, state, Limits::default()))
}

/// Accepts connections on `listener` until dropped; dropping it closes them all.
pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, limits: Limits) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = listener.accept().await;
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // E.g. out of file descriptors: wait instead of spinning.
                tracing::warn!(%error, "admin endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if connections.len() >= limits.max_connections {
            tracing::debug!(
                %peer,
                "admin endpoint: {} connections open; closing a new one",
                limits.max_connections
            );
            continue;
        }
        connections.spawn(serve_connection(stream, peer, Arc::clone(&state), limits));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
    limits: Limits,
) {
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let reply = routes::respond(
            &state,
            &routes::Request {
                method: request.method(),
                path: request.uri().path(),
                headers: request.headers(),
                peer,
            },
        );
        async move { Ok::<_, Infallible>(reply) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.connection_lifetime, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(%peer, %error, "admin endpoint: connection failed"),
        Err(_) => tracing::debug!(%peer, "admin endpoint: connection lifetime over; closed"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// Long enough for a loaded machine, short enough for a quick test.
    const SHORT: Duration = Duration::from_millis(300);
    /// How long a test waits for something that should happen after `SHORT`.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// The relay as the routes see it: a drain flag, a token, a reload outcome.
    #[derive(Default)]
    struct FakeRelay {
        draining: std::sync::atomic::AtomicBool,
        token: Option<String>,
        reload_error: Option<String>,
    }

    impl Operations for FakeRelay {
        fn draining(&self) -> bool {
            self.draining.load(std::sync::atomic::Ordering::SeqCst)
        }

        fn set_draining(&self, draining: bool, by: &str) -> api::Answer {
            self.draining
                .store(draining, std::sync::atomic::Ordering::SeqCst);
            api::Answer {
                message: format!("draining={draining} by {by}"),
                ..api::Answer::default()
            }
        }

        fn reload(&self, _by: &str) -> Result<api::Answer, String> {
            match &self.reload_error {
                Some(error) => Err(error.clone()),
                None => Ok(api::Answer {
                    message: "reloaded".into(),
                    changed: vec!["auth.users".into()],
                    restart_needed: vec!["server.port_range".into()],
                }),
            }
        }

        fn status(&self) -> api::Status {
            api::Status {
                version: "test".into(),
                draining: self.draining(),
                ..api::Status::default()
            }
        }

        fn sessions(&self) -> Vec<api::Session> {
            Vec::new()
        }

        fn token(&self) -> Option<String> {
            self.token.clone()
        }
    }

    fn state(relay: FakeRelay) -> Arc<AdminState> {
        Arc::new(AdminState {
            metrics: Metrics::new().expect("metrics register"),
            operations: Arc::new(relay),
        })
    }

    async fn endpoint(limits: Limits) -> (SocketAddr, JoinHandle<()>) {
        endpoint_with(FakeRelay::default(), limits).await
    }

    async fn endpoint_with(relay: FakeRelay, limits: Limits) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("addr");
        (address, tokio::spawn(serve(listener, state(relay), limits)))
    }

    /// The status line and body of `routes::respond` for a request from `peer`.
    async fn answer(
        state: &AdminState,
        method: hyper::Method,
        path: &str,
        peer: &str,
        authorization: Option<&str>,
    ) -> (u16, String) {
        use http_body_util::BodyExt as _;
        let mut headers = hyper::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                hyper::header::AUTHORIZATION,
                value.parse().expect("header value"),
            );
        }
        let reply = routes::respond(
            state,
            &routes::Request {
                method: &method,
                path,
                headers: &headers,
                peer: peer.parse().expect("peer address"),
            },
        );
        let status = reply.status().as_u16();
        let body = reply
            .into_body()
            .collect()
            .await
            .expect("in-memory body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_and_readiness_follow_the_drain() {
        let (address, server) = endpoint(Limits::default()).await;
        let get = |path: &'static str| async move {
            exchange(address, &format!("GET {path} HTTP/1.0\r\n\r\n")).await
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200 OK"));
        let ready = get("/readyz").await;
        assert!(
            ready.starts_with("HTTP/1.0 200 OK") && ready.ends_with("ready\n"),
            "{ready}"
        );
        let drained = exchange(address, "POST /drain HTTP/1.0\r\nContent-Length: 0\r\n\r\n").await;
        assert!(drained.starts_with("HTTP/1.0 200 OK"), "{drained}");
        assert!(
            drained.contains("application/json")
                && drained.contains("\"draining=true by POST /drain from 127.0.0.1:"),
            "{drained}"
        );
        let ready = get("/readyz").await;
        assert!(
            ready.starts_with("HTTP/1.0 503 Service Unavailable") && ready.ends_with("draining\n"),
            "{ready}"
        );
        let status = get("/status").await;
        let body = status.split_once("\r\n\r\n").expect("body").1;
        let parsed: api::Status = serde_json::from_str(body).expect("status JSON");
        assert!(parsed.draining);
        assert!(
            get("/healthz").await.starts_with("HTTP/1.0 200 OK"),
            "alive while draining"
        );
        exchange(
            address,
            "POST /undrain HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200 OK"));
        // Reading never changes state.
        let wrong = get("/drain").await;
        assert!(wrong.starts_with("HTTP/1.0 405"), "{wrong}");
        server.abort();
    }

    #[tokio::test]
    async fn posts_need_loopback_or_the_token() {
        let relay = FakeRelay {
            token: Some("s3cret-token".into()),
            ..FakeRelay::default()
        };
        let state = state(relay);
        let remote = "198.18.7.7:40000";
        for path in ["/drain", "/undrain", "/reload"] {
            let (status, body) = answer(&state, hyper::Method::POST, path, remote, None).await;
            assert_eq!(status, 403, "{path}: {body}");
            let (status, _) = answer(
                &state,
                hyper::Method::POST,
                path,
                remote,
                Some("Bearer wrong"),
            )
            .await;
            assert_eq!(status, 403, "{path} with a wrong token");
            let (status, _) = answer(
                &state,
                hyper::Method::POST,
                path,
                remote,
                Some("s3cret-token"),
            )
            .await;
            assert_eq!(status, 403, "{path} without the Bearer scheme");
        }
        assert!(
            !state.operations.draining(),
            "a refused POST changed nothing"
        );
        let (status, body) = answer(
            &state,
            hyper::Method::POST,
            "/drain",
            remote,
            Some("Bearer s3cret-token"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(state.operations.draining());
        // Loopback, IPv4 and IPv6 (also IPv4-mapped), needs no token.
        for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            let (status, _) = answer(&state, hyper::Method::POST, "/undrain", peer, None).await;
            assert_eq!(status, 200, "{peer}");
        }
        // Reading is open to anyone who reaches the listener.
        for path in ["/metrics", "/status", "/sessions", "/healthz", "/readyz"] {
            let (status, _) = answer(&state, hyper::Method::GET, path, remote, None).await;
            assert_eq!(status, 200, "{path}");
        }
        // Without a configured token, only loopback may POST.
        let tokenless = self::state(FakeRelay::default());
        let (status, _) = answer(
            &tokenless,
            hyper::Method::POST,
            "/drain",
            remote,
            Some("Bearer "),
        )
        .await;
        assert_eq!(status, 403);
    }

    #[tokio::test]
    async fn reload_reports_what_changed_and_refusals() {
        let state = state(FakeRelay::default());
        let (status, body) =
            answer(&state, hyper::Method::POST, "/reload", "127.0.0.1:1", None).await;
        assert_eq!(status, 200);
        let answer_json: api::Answer = serde_json::from_str(&body).expect("JSON");
        assert_eq!(answer_json.restart_needed, ["server.port_range"]);
        let failing = self::state(FakeRelay {
            reload_error: Some("config error: x.toml line 3: server.realm: bad".into()),
            ..FakeRelay::default()
        });
        let (status, body) = answer(
            &failing,
            hyper::Method::POST,
            "/reload",
            "127.0.0.1:1",
            None,
        )
        .await;
        assert_eq!(status, 422);
        assert!(body.contains("line 3: server.realm"), "{body}");
    }

    /// Sends `request` on a new connection and reads until the server closes it.
    async fn exchange(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        // A refused connection may be closed before the request is written.
        if stream.write_all(request.as_bytes()).await.is_err() {
            return String::new();
        }
        read_until_closed(&mut stream).await
    }

    /// Everything the server sends until it closes the connection (or resets it).
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut reply = Vec::new();
        let read = tokio::time::timeout(PATIENCE, async {
            let mut buffer = [0u8; 4096];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => reply.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&reply).into_owned()
    }

    /// Fetches /metrics on new connections until a reply satisfies `wanted` (true) or
    /// [`PATIENCE`] runs out (false).
    async fn retry_until(address: SocketAddr, wanted: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if wanted(&exchange(address, "GET /metrics HTTP/1.0\r\n\r\n").await) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn answers_get_metrics_and_refuses_the_rest() {
        let (address, server) = endpoint(Limits::default()).await;
        // HTTP/1.0 without keep-alive, as the end-to-end tests fetch it.
        let ok = exchange(address, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("\r\n\r\n# HELP "), "{ok}");
        assert!(ok.lines().any(|line| line == "turn_allocations 0"), "{ok}");

        let missing = exchange(address, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        assert!(missing.contains("try /metrics, /healthz"), "{missing}");

        let wrong_method = exchange(
            address,
            "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            wrong_method.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{wrong_method}"
        );
        assert!(wrong_method.contains("allow: GET\r\n"), "{wrong_method}");

        let garbage = exchange(address, "\x16\x03\x01 not http at all\r\n\r\n").await;
        assert!(
            garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
            "{garbage}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn keep_alive_serves_several_requests_on_one_connection() {
        let (address, server) = endpoint(Limits::default()).await;
        let mut stream = TcpStream::connect(address).await.expect("connect");
        for _ in 0..3 {
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
            let mut head = vec![0u8; 17];
            stream.read_exact(&mut head).await.expect("response");
            assert_eq!(head, b"HTTP/1.1 200 OK\r\n");
            // Read the rest of this response: its length is in the header.
            let mut rest = Vec::new();
            let mut byte = [0u8; 1];
            while !rest.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.expect("headers");
                rest.push(byte[0]);
            }
            let headers = String::from_utf8_lossy(&rest).to_lowercase();
            let length: usize = headers
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.trim().parse().ok())
                .expect("content-length");
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).await.expect("body");
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_silent_or_idle_connection_is_closed_after_the_header_timeout() {
        let limits = Limits {
            header_read_timeout: SHORT,
            ..Limits::default()
        };
        let (address, server) = endpoint(limits).await;

        // Connected, never says anything.
        let started = Instant::now();
        let mut silent = TcpStream::connect(address).await.expect("connect");
        let said = read_until_closed(&mut silent).await;
        assert!(started.elapsed() >= SHORT, "closed before the timeout");
        assert!(!said.contains("200 OK"), "{said}");

        // Half a request head, then nothing (slowloris).
        let mut slow = TcpStream::connect(address).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
            .await
            .expect("write");
        let said = read_until_closed(&mut slow).await;
        assert!(!said.contains("200 OK"), "{said}");

        // Keep-alive after one answer, then idle.
        let mut idle = TcpStream::connect(address).await.expect("connect");
        idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let said = read_until_closed(&mut idle).await;
        assert!(said.starts_with("HTTP/1.1 200 OK"), "{said}");
        server.abort();
    }

    #[tokio::test]
    async fn an_oversized_request_head_is_refused() {
        let (address, server) = endpoint(Limits::default()).await;
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
            "a".repeat(4 * MAX_REQUEST_HEAD)
        );
        let said = exchange(address, &huge).await;
        assert!(!said.contains("200 OK"), "{said}");
        server.abort();
    }

    #[tokio::test]
    async fn a_connection_ends_after_its_lifetime_even_when_busy() {
        let limits = Limits {
            connection_lifetime: SHORT,
            ..Limits::default()
        };
        let (address, server) = endpoint(limits).await;
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let started = Instant::now();
        // Requests keep coming, so the header timeout never fires; the lifetime does.
        let closed = tokio::time::timeout(PATIENCE, async {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                if stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .is_err()
                {
                    break;
                }
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection outlived its lifetime");
        assert!(started.elapsed() >= SHORT);
        server.abort();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_until_one_ends() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (address, server) = endpoint(limits).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(TcpStream::connect(address).await.expect("connect"));
        }
        // Once the server has accepted both, a third connection is closed unanswered.
        let refused = retry_until(address, str::is_empty).await;
        assert!(refused, "a third connection was served");

        // One held connection goes away: new connections are served again.
        drop(held.pop());
        let served = retry_until(address, |reply| reply.starts_with("HTTP/1.0 200 OK")).await;
        assert!(served, "no connection served after one closed");
        server.abort();
    }
}
