//! The harness itself, checked against coturn's `turnserver` as a known-good reference:
//! when this passes and a relay test fails, the daemon is at fault, not the topology,
//! the peer or the uclient parsing.

use turn_testkit::addresses::PEER_V4;
use turn_testkit::config::User;
use turn_testkit::coturn::{start_peer, Coturn, Credentials, Uclient};
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

#[test]
fn coturn_relays_channel_data_through_the_test_topology_without_loss() {
    if !privileged("coturn_relays_channel_data_through_the_test_topology_without_loss") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let _peer = start_peer(&topology.peer, PEER_V4.into()).or_fail("starting turnutils_peer");
    let user = User::new("alice", "alice-password");
    let _coturn =
        Coturn::reference(&topology.relay, &user, "reference.test").or_fail("starting turnserver");
    let report = Uclient::new(Credentials::from(&user))
        .run(&topology.client)
        .or_fail("running turnutils_uclient");
    report.ensure_lossless(20).or_fail("uclient through coturn");
}
