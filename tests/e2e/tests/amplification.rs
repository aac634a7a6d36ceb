//! Issue 8 item 8: how much larger the relay's answer to an unauthenticated request is
//! than the request, measured on the wire (UDP payloads) against the daemon with its
//! default realm and settings. A spoofed source receives these answers, so the ratio is
//! what the relay adds to a reflection attack before the per-source rate limit cuts in.
//! The target: at most 3.5× for a minimal Allocate (coturn 4.13 answers 3.57×).

use std::net::UdpSocket;
use std::time::Duration;

use anyhow::{ensure, Context as _};

use turn_relay::protocol::turn::ServerConfig;
use turn_testkit::addresses::listener;
use turn_testkit::config::{RelayConfig, Xdp};
use turn_testkit::daemon::Daemon;
use turn_testkit::stun_client::{allocate_request, binding_request, client_socket, Response};
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

/// The target ratio for the answer to a minimal unauthenticated Allocate.
const TARGET: f64 = 3.5;

/// Sends `request` and returns the size of its answer.
fn answer_size(socket: &UdpSocket, request: &[u8]) -> anyhow::Result<usize> {
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.send(request).context("sending")?;
    let mut buffer = [0u8; 2048];
    let len = socket.recv(&mut buffer).context("no answer")?;
    let response = Response::parse(&buffer[..len]).context("not a STUN response")?;
    ensure!(
        response.transaction_id == request[8..20],
        "an answer to another request"
    );
    Ok(len)
}

#[test]
fn unauthenticated_answers_stay_small() {
    if !privileged("unauthenticated_answers_stay_small") {
        return;
    }
    let topology = Topology::new().or_fail("namespaces");
    let mut config = RelayConfig::new(Xdp::Off)
        .with_ipv6()
        .with_user("alice", "alice-password");
    config.realm = ServerConfig::default().realm;
    let _daemon = Daemon::start(&topology.relay, &config).or_fail("daemon");
    let mut rows = Vec::new();
    for (what, family, request) in [
        ("Binding", 4, binding_request()),
        ("Allocate (minimal)", 4, allocate_request(false, None)),
        ("Allocate for IPv6", 6, allocate_request(true, None)),
    ] {
        let socket = client_socket(&topology.client, listener(family)).or_fail("socket");
        let answer = answer_size(&socket, &request).or_fail(what);
        let ratio = answer as f64 / request.len() as f64;
        eprintln!(
            "{what} over IPv{family}: {} byte request, {answer} byte answer: {ratio:.2}×",
            request.len()
        );
        rows.push((what, request.len(), answer, ratio));
    }
    let (_, request, answer, ratio) = rows[1];
    assert_eq!(
        request, 28,
        "a minimal Allocate: header and REQUESTED-TRANSPORT"
    );
    assert!(
        ratio <= TARGET,
        "the 401 to a minimal Allocate is {answer} bytes, {ratio:.2}× (target ≤ {TARGET}×)"
    );
    for (what, _, _, ratio) in rows {
        assert!(ratio <= TARGET, "{what}: {ratio:.2}×");
    }
}
