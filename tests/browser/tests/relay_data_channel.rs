//! Headless Chromium makes relay-only WebRTC data-channel connections through
//! `turn-relay`, as a browser behind a firewall that lets only the TURN server through
//! would: both peers of the page use only relay candidates of our relay, and their
//! relayed addresses reach each other through it.
//!
//! - On loopback, over each transport a browser offers: `turn:…?transport=udp`,
//!   `turn:…?transport=tcp` and `turns:` (TLS with a certificate made for the run,
//!   trusted by its SPKI hash; Chromium sends no ALPN and, for an IP, no SNI).
//! - In the testkit's client namespace behind a firewall that drops every UDP datagram
//!   leaving it: the browser still gets a relay candidate over TCP and over TLS and
//!   relays through the daemon in the relay namespace.

use anyhow::{ensure, Result};
use turn_browser_tests::relay::LoopbackRelay;
use turn_browser_tests::{
    chromium_installed, relay_data_channel, Browser, BrowserOptions, DataChannelRun, IceServer,
    TurnTransport,
};
use turn_testkit::addresses::{listener, tls_listener, RELAY_LISTEN_V4, RELAY_RELAYED_V4};
use turn_testkit::config::{RelayConfig, Xdp};
use turn_testkit::daemon::Daemon;
use turn_testkit::stun_client::{binding_request, client_socket, transact};
use turn_testkit::tls::TestCertificate;
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

const USERNAME: &str = "browser";
const PASSWORD: &str = "relay-only-data-channel";

#[test]
fn chromium_data_channel_relays_through_turn_over_udp_tcp_and_tls() {
    if !chromium_installed("chromium_data_channel_relays_through_turn_over_udp_tcp_and_tls") {
        return;
    }
    let certificate = TestCertificate::generate(&["127.0.0.1"]).expect("generating a certificate");
    // The guards live in the test function, so their drops run during the panic below and
    // print the relay's and Chromium's logs.
    let mut relay =
        LoopbackRelay::start(USERNAME, PASSWORD, &certificate).expect("starting turn-relay");
    let browser =
        Browser::launch(&BrowserOptions::default().trusting_spki(certificate.spki_sha256_base64()))
            .expect("starting Chromium");
    for (transport, address) in [
        (TurnTransport::Udp, relay.listen()),
        (TurnTransport::Tcp, relay.listen()),
        (TurnTransport::Tls, relay.tls_listen()),
    ] {
        let server = IceServer::new(transport, address, USERNAME, PASSWORD);
        if let Err(error) =
            data_channel_through(&browser, &server, |address| relay.relays_from(address))
        {
            panic!("{error:#}");
        }
    }
    relay.ensure_running().expect("turn-relay still running");
}

#[test]
fn chromium_behind_a_udp_blocking_firewall_relays_over_tcp_and_tls() {
    if !privileged("chromium_behind_a_udp_blocking_firewall_relays_over_tcp_and_tls")
        || !chromium_installed("chromium_behind_a_udp_blocking_firewall_relays_over_tcp_and_tls")
    {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let certificate = TestCertificate::generate(&[&RELAY_LISTEN_V4.to_string()])
        .or_fail("generating a certificate");
    let mut daemon = Daemon::start(
        &topology.relay,
        &RelayConfig::new(Xdp::Off)
            .with_tls(&certificate)
            .with_user(USERNAME, PASSWORD),
    )
    .or_fail("starting turn-relay");
    topology
        .client
        .drop_outgoing_udp()
        .or_fail("the client's firewall");
    // The firewall holds: a STUN Binding over UDP gets no answer.
    let udp = client_socket(&topology.client, listener(4)).or_fail("a UDP socket");
    assert!(
        transact(&udp, &binding_request()).is_err(),
        "UDP reached the relay through the firewall"
    );
    let options = BrowserOptions::default().trusting_spki(certificate.spki_sha256_base64());
    // Chromium runs inside the client namespace: the WebDriver session is driven from
    // a thread in it, and the browser it starts stays there.
    topology
        .client
        .run_inside(|| {
            let browser = Browser::launch(&options)?;
            for (transport, address) in [
                (TurnTransport::Tcp, listener(4)),
                (TurnTransport::Tls, tls_listener(4)),
            ] {
                let server = IceServer::new(transport, address, USERNAME, PASSWORD);
                data_channel_through(&browser, &server, |relayed| {
                    relayed.ip() == RELAY_RELAYED_V4
                })?;
            }
            Ok(())
        })
        .or_fail("Chromium behind the firewall");
    daemon.ensure_running().or_fail("turn-relay still running");
}

/// Runs the page against `server` and checks its report: in order, over the server's
/// transport, between relayed addresses for which `ours` holds.
fn data_channel_through(
    browser: &Browser,
    server: &IceServer,
    ours: impl Fn(std::net::SocketAddr) -> bool,
) -> Result<()> {
    let run = DataChannelRun::default();
    let report = relay_data_channel(browser, server, &run)?;
    report.check(server, run.messages)?;
    for address in report.relayed_addresses() {
        ensure!(
            ours(address),
            "relayed address {address} is not one of turn-relay's\n{report}"
        );
    }
    eprintln!(
        "{} messages each way over {} in {} ms (page time)",
        run.messages, server.urls, report.elapsed_ms
    );
    Ok(())
}
