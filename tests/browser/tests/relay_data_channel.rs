//! Headless Chromium makes a relay-only WebRTC data-channel connection through
//! `turn-relay`, as a browser behind a firewall that lets only the TURN server through
//! would: both peers of the page use only relay candidates of our relay, and their
//! relayed addresses reach each other through it.

use anyhow::{ensure, Result};
use turn_browser_tests::relay::LoopbackRelay;
use turn_browser_tests::{
    chromium_installed, relay_data_channel, Browser, BrowserOptions, DataChannelRun, IceServer,
    TurnTransport,
};

const USERNAME: &str = "browser";
const PASSWORD: &str = "relay-only-data-channel";

#[test]
fn chromium_data_channel_relays_through_turn_over_udp() {
    if !chromium_installed("chromium_data_channel_relays_through_turn_over_udp") {
        return;
    }
    // The guards live in the test function, so their drops run during the panic below and
    // print the relay's and Chromium's logs.
    let mut relay = LoopbackRelay::start(USERNAME, PASSWORD).expect("starting turn-relay");
    let browser = Browser::launch(&BrowserOptions::default()).expect("starting Chromium");
    let server = IceServer::new(TurnTransport::Udp, relay.listen(), USERNAME, PASSWORD);
    if let Err(error) = data_channel_through(&browser, &server, &relay) {
        panic!("{error:#}");
    }
    relay.ensure_running().expect("turn-relay still running");
}

fn data_channel_through(
    browser: &Browser,
    server: &IceServer,
    relay: &LoopbackRelay,
) -> Result<()> {
    let run = DataChannelRun::default();
    let report = relay_data_channel(browser, server, &run)?;
    report.check(server, run.messages)?;
    for address in report.relayed_addresses() {
        ensure!(
            relay.relays_from(address),
            "relayed address {address} is not one of turn-relay's\n{report}"
        );
    }
    eprintln!(
        "{} messages each way over {} in {} ms (page time)",
        run.messages, server.urls, report.elapsed_ms
    );
    Ok(())
}
