//! RFC 8489 §6 Binding: `turnutils_stunclient` learns its reflexive address from the relay.

use turn_testkit::addresses::{CLIENT_V4, RELAY_LISTEN_V4};
use turn_testkit::config::{RelayConfig, Xdp};
use turn_testkit::coturn::stun_binding;
use turn_testkit::daemon::Daemon;
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

#[test]
fn binding_request_returns_the_client_address() {
    if !privileged("binding_request_returns_the_client_address") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let mut daemon =
        Daemon::start(&topology.relay, &RelayConfig::new(Xdp::Auto)).or_fail("starting turn-relay");
    let reflexive =
        stun_binding(&topology.client, RELAY_LISTEN_V4.into()).or_fail("turnutils_stunclient");
    assert_eq!(reflexive.ip(), CLIENT_V4, "XOR-MAPPED-ADDRESS");
    assert_ne!(reflexive.port(), 0, "XOR-MAPPED-ADDRESS port");
    daemon
        .ensure_running()
        .or_fail("turn-relay after the binding");
}
