//! The harness itself, checked against coturn's `turnserver` as a known-good reference:
//! when this passes and a relay test fails, the daemon is at fault, not the topology,
//! the peer or the uclient parsing.

use turn_integration_tests::{
    privileged, start_peer, Coturn, Credentials, OrFail, Topology, Uclient, User, PEER_V4,
};

#[test]
fn coturn_relays_channel_data_through_the_test_topology_without_loss() {
    if !privileged("coturn_relays_channel_data_through_the_test_topology_without_loss") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let _peer = start_peer(&topology.peer, PEER_V4.into()).or_fail("starting turnutils_peer");
    let user = User {
        name: "alice".into(),
        password: "alice-password".into(),
    };
    let _coturn =
        Coturn::start(&topology.relay, &user, "reference.test").or_fail("starting turnserver");
    let report = Uclient::new(Credentials::Password {
        username: user.name,
        password: user.password,
    })
    .run(&topology.client)
    .or_fail("running turnutils_uclient");
    report.ensure_lossless(20).or_fail("uclient through coturn");
}
