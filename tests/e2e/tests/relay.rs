//! Relaying (RFC 8656 §11 Send/Data indications, §12 channels) between coturn's
//! `turnutils_uclient` in the client namespace and `turnutils_peer` echoing in the peer
//! namespace, through the daemon with XDP attached (and once with XDP off). Every run
//! must come back with 0 % loss, and the daemon's metrics must show which path relayed it.

use std::time::Duration;

use turn_testkit::addresses::{PEER_V4, PEER_V6, RELAY_LISTEN_V6};
use turn_testkit::config::{RelayConfig, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient};
use turn_testkit::daemon::{Daemon, Metrics};
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

const USER: &str = "alice";
const PASSWORD: &str = "alice-password";

fn password_credentials() -> Credentials {
    Credentials::Password {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

/// Which data path must have relayed (read from the daemon's Prometheus metrics).
enum RelayedBy {
    /// The XDP program: each listed `turn_xdp_packets_total` outcome counted packets.
    Xdp(&'static [&'static str]),
    /// Userspace only: no XDP series, userspace relayed packets in both directions.
    Userspace,
    /// Either path (e.g. hairpin between two allocations on this relay).
    Either,
}

const XDP_CHANNEL_DATA: &[&str] = &[
    "relayed_channel_data_to_peer",
    "relayed_channel_data_to_client",
];
/// How long the daemon's periodically published counters may take to catch up.
const METRICS_SETTLE: Duration = Duration::from_secs(5);

const XDP_INDICATIONS: &[&str] = &["relayed_send_to_peer", "relayed_data_indication_to_client"];

/// Starts the topology, an IPv4 and an IPv6 peer and the daemon (static user alice),
/// runs `uclient`, requires every message sent to come back and checks the data path.
fn relay_without_loss(test: &str, config: RelayConfig, uclient: Uclient, relayed_by: RelayedBy) {
    if !privileged(test) {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let _peer_v4 = start_peer(&topology.peer, PEER_V4.into()).or_fail("starting the IPv4 peer");
    let _peer_v6 = start_peer(&topology.peer, PEER_V6.into()).or_fail("starting the IPv6 peer");
    let mut daemon = Daemon::start(&topology.relay, &config.with_user(USER, PASSWORD))
        .or_fail("starting turn-relay");
    let report = uclient
        .run(&topology.client)
        .or_fail("running turnutils_uclient");
    report
        .ensure_lossless(u64::from(uclient.messages))
        .or_fail(test);
    daemon.ensure_running().or_fail("turn-relay after the run");
    let xdp_relayed = |metrics: &Metrics, outcome: &str| metrics.xdp_packets(outcome) > 0;
    let userspace_relayed =
        |metrics: &Metrics, direction: &str| metrics.userspace_relayed(direction) > 0;
    const DIRECTIONS: [&str; 2] = ["to_peer", "to_client"];
    match relayed_by {
        RelayedBy::Xdp(outcomes) => {
            let metrics = daemon
                .metrics_when(METRICS_SETTLE, |metrics| {
                    outcomes.iter().all(|outcome| xdp_relayed(metrics, outcome))
                })
                .or_fail("reading /metrics");
            for outcome in outcomes {
                assert!(
                    xdp_relayed(&metrics, outcome),
                    "XDP relayed nothing as {outcome}:\n{}",
                    metrics.0
                );
            }
        }
        RelayedBy::Userspace => {
            let metrics = daemon
                .metrics_when(METRICS_SETTLE, |metrics| {
                    DIRECTIONS
                        .iter()
                        .all(|direction| userspace_relayed(metrics, direction))
                })
                .or_fail("reading /metrics");
            assert_eq!(
                metrics.sum("turn_xdp_packets_total"),
                None,
                "XDP counters with mode = off:\n{}",
                metrics.0
            );
            for direction in DIRECTIONS {
                assert!(
                    userspace_relayed(&metrics, direction),
                    "userspace relayed nothing {direction}:\n{}",
                    metrics.0
                );
            }
        }
        RelayedBy::Either => {}
    }
}

#[test]
fn channel_data_relays_without_loss() {
    relay_without_loss(
        "channel_data_relays_without_loss",
        RelayConfig::new(Xdp::Auto),
        Uclient::new(password_credentials()),
        RelayedBy::Xdp(XDP_CHANNEL_DATA),
    );
}

#[test]
fn send_and_data_indications_relay_without_loss() {
    relay_without_loss(
        "send_and_data_indications_relay_without_loss",
        RelayConfig::new(Xdp::Auto),
        Uclient {
            send_indications: true,
            ..Uclient::new(password_credentials())
        },
        RelayedBy::Xdp(XDP_INDICATIONS),
    );
}

#[test]
fn client_to_client_through_two_allocations_relays_without_loss() {
    relay_without_loss(
        "client_to_client_through_two_allocations_relays_without_loss",
        RelayConfig::new(Xdp::Auto),
        Uclient {
            client_to_client: true,
            ..Uclient::new(password_credentials())
        },
        RelayedBy::Either,
    );
}

#[test]
fn four_concurrent_clients_relay_without_loss() {
    relay_without_loss(
        "four_concurrent_clients_relay_without_loss",
        RelayConfig::new(Xdp::Auto),
        Uclient {
            clients: 4,
            ..Uclient::new(password_credentials())
        },
        RelayedBy::Xdp(XDP_CHANNEL_DATA),
    );
}

#[test]
fn userspace_relay_with_xdp_off_is_lossless() {
    relay_without_loss(
        "userspace_relay_with_xdp_off_is_lossless",
        RelayConfig::new(Xdp::Off),
        Uclient::new(password_credentials()),
        RelayedBy::Userspace,
    );
}

/// `server.coalesce_us`: each worker sleeps a millisecond after a wake-up before it reads
/// its sockets; four clients' datagrams still all come back.
#[test]
fn userspace_relay_with_coalescing_is_lossless() {
    let mut config = RelayConfig::new(Xdp::Off);
    config.coalesce_us = Some(1_000);
    relay_without_loss(
        "userspace_relay_with_coalescing_is_lossless",
        config,
        Uclient {
            clients: 4,
            ..Uclient::new(password_credentials())
        },
        RelayedBy::Userspace,
    );
}

#[test]
fn ipv6_allocation_relays_without_loss() {
    relay_without_loss(
        "ipv6_allocation_relays_without_loss",
        RelayConfig::new(Xdp::Auto).with_ipv6(),
        Uclient {
            server: RELAY_LISTEN_V6.into(),
            peer: PEER_V6.into(),
            ipv6_relay: true,
            ..Uclient::new(password_credentials())
        },
        RelayedBy::Xdp(XDP_CHANNEL_DATA),
    );
}
