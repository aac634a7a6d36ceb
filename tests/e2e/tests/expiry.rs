//! Permission expiry end to end (RFC 8656 §9: a permission lasts its lifetime unless
//! refreshed; a datagram from a peer without one is silently discarded; §12: ChannelData
//! needs the peer's permission as well as the binding). The daemon runs with
//! `permission_lifetime = 2`; a programmable client ([`TurnClient`]) allocates and gives a
//! peer socket a permission (by CreatePermission, or by ChannelBind with a channel that
//! outlives the permission). While the permission lives, the peer's datagrams reach the
//! client; once it has expired they must not — XDP counts them as `drop_no_permission`
//! (native mode), userspace as dropped (`xdp.mode = "off"`). Refreshing the permission
//! then relays again, which shows the allocation itself was fine all along.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use turn_testkit::addresses::{PEER_V4, RELAY_LISTEN_V4, TURN_PORT};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::daemon::{Daemon, Metrics};
use turn_testkit::stun_client::{Delivered, Peer, TurnClient};
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

/// Seconds a permission lives.
const PERMISSION_LIFETIME: u32 = 2;
/// Seconds a channel lives: longer than the permission, so the channel is still bound
/// when the permission has expired.
const CHANNEL_LIFETIME: u32 = 8;
/// How long after the permission's expiry the test checks it no longer relays.
const AFTER_EXPIRY: Duration = Duration::from_millis(1500);
/// Datagrams the peer sends in each phase.
const DATAGRAMS: usize = 5;
/// How long the client waits for each relayed datagram, and for nothing once expired.
const RECEIVE_LIMIT: Duration = Duration::from_secs(1);
/// How long the daemon's periodically published counters may take to catch up.
const METRICS_SETTLE: Duration = Duration::from_secs(5);
const CHANNEL: u16 = 0x4000;

/// How the client gives the peer its permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grant {
    /// CreatePermission: data arrives as Data indications.
    Permission,
    /// ChannelBind: data arrives as ChannelData on [`CHANNEL`].
    Channel,
}

fn user() -> User {
    User::new("alice", "alice-password")
}

fn counter(metrics: &Metrics, name: &str, label: &str) -> f64 {
    metrics.sum_with_label(name, label).unwrap_or(0.0)
}

fn xdp_dropped(metrics: &Metrics) -> f64 {
    counter(
        metrics,
        "turn_xdp_packets_total",
        "outcome=\"drop_no_permission\"",
    )
}

fn userspace_dropped(metrics: &Metrics) -> f64 {
    counter(metrics, "turn_userspace_dropped_packets_total", "")
}

/// Everything relayed to the client, by either path.
fn relayed_to_client(metrics: &Metrics) -> f64 {
    counter(
        metrics,
        "turn_userspace_relayed_packets_total",
        "direction=\"to_client\"",
    ) + counter(
        metrics,
        "turn_xdp_packets_total",
        "outcome=\"relayed_channel_data_to_client\"",
    ) + counter(
        metrics,
        "turn_xdp_packets_total",
        "outcome=\"relayed_data_indication_to_client\"",
    )
}

fn log(daemon: &Daemon) -> String {
    format!("--- daemon log ---\n{}", daemon.log())
}

fn grant(client: &mut TurnClient, how: Grant, peer: SocketAddr) -> anyhow::Result<()> {
    match how {
        Grant::Permission => client.create_permission(peer),
        Grant::Channel => client.channel_bind(CHANNEL, peer),
    }
}

/// The peer sends [`DATAGRAMS`] tagged `phase`; every one must reach the client framed
/// as `how` implies.
fn relayed_while_permitted(
    client: &mut TurnClient,
    peer: &Peer,
    how: Grant,
    phase: &str,
    daemon: &Daemon,
) {
    let peer_address = peer.address().or_fail("peer address");
    for index in 0..DATAGRAMS {
        let data = format!("{phase}-{index}").into_bytes();
        peer.send_to(&data, client.relayed_address())
            .or_fail("peer sending");
        let delivered = client
            .receive(RECEIVE_LIMIT)
            .or_fail("client receiving")
            .unwrap_or_else(|| {
                panic!(
                    "{phase}: datagram {index} from the peer was not relayed within \
                     {RECEIVE_LIMIT:?} although the permission is alive\n{}",
                    log(daemon)
                )
            });
        let expected = match how {
            Grant::Permission => Delivered::DataIndication {
                peer: peer_address,
                data,
            },
            Grant::Channel => Delivered::ChannelData {
                number: CHANNEL,
                data,
            },
        };
        assert_eq!(delivered, expected, "{phase}: datagram {index}");
    }
}

fn expired_permission_stops_relaying(test: &str, xdp: Xdp, how: Grant) {
    if !privileged(test) {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let mut config = RelayConfig::new(xdp)
        .with_user(&user().name, &user().password)
        .with_permission_lifetime(PERMISSION_LIFETIME);
    if how == Grant::Channel {
        config = config.with_channel_lifetime(CHANNEL_LIFETIME);
    }
    let mut daemon = Daemon::start(&topology.relay, &config).or_fail("starting turn-relay");
    // The listeners are bound before XDP attaches: wait for the attach to show.
    let expected_attached = if xdp == Xdp::Off { 0.0 } else { 1.0 };
    let attached = daemon
        .metrics_when(METRICS_SETTLE, |metrics| {
            metrics.sum("turn_xdp_attached") == Some(expected_attached)
        })
        .or_fail("reading /metrics")
        .sum("turn_xdp_attached");
    assert_eq!(
        attached,
        Some(expected_attached),
        "turn_xdp_attached with {xdp:?}\n{}",
        log(&daemon)
    );

    let peer =
        Peer::bind(&topology.peer, SocketAddr::new(PEER_V4.into(), 0)).or_fail("binding the peer");
    let peer_address = peer.address().or_fail("peer address");
    let mut client = TurnClient::allocate_from(
        &topology.client,
        SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT),
        &user(),
    )
    .or_fail("allocating");
    grant(&mut client, how, peer_address).or_fail("granting the permission");
    // The server set the expiries before answering.
    let granted = Instant::now();
    let expires_by = granted + Duration::from_secs(PERMISSION_LIFETIME.into());
    let channel_expires_by = granted + Duration::from_secs(CHANNEL_LIFETIME.into());

    relayed_while_permitted(&mut client, &peer, how, "alive", &daemon);
    assert!(
        Instant::now() < expires_by,
        "relaying while alive took longer than the permission lifetime; the test \
         proves nothing on a machine this slow\n{}",
        log(&daemon)
    );

    thread::sleep(expires_by.saturating_duration_since(Instant::now()) + AFTER_EXPIRY);
    let before = daemon.metrics().or_fail("reading /metrics");
    for index in 0..DATAGRAMS {
        peer.send_to(
            format!("expired-{index}").as_bytes(),
            client.relayed_address(),
        )
        .or_fail("peer sending");
    }
    if how == Grant::Channel {
        assert!(
            Instant::now() + Duration::from_millis(500) < channel_expires_by,
            "the channel must still be bound while its expired permission is checked"
        );
    }
    let leaked = client.receive(RECEIVE_LIMIT).or_fail("client receiving");
    assert_eq!(
        leaked,
        None,
        "relayed after the permission expired\n{}",
        log(&daemon)
    );
    daemon.ensure_running().or_fail("turn-relay after expiry");
    let dropped = |metrics: &Metrics| match xdp {
        Xdp::Off => userspace_dropped(metrics) - userspace_dropped(&before),
        Xdp::Auto | Xdp::Native => xdp_dropped(metrics) - xdp_dropped(&before),
    };
    let after = daemon
        .metrics_when(METRICS_SETTLE, |metrics| {
            dropped(metrics) >= DATAGRAMS as f64
        })
        .or_fail("reading /metrics");
    eprintln!(
        "{test}: after expiry {} datagrams dropped ({}), {} relayed to the client",
        dropped(&after),
        if xdp == Xdp::Off {
            "userspace"
        } else {
            "XDP drop_no_permission"
        },
        relayed_to_client(&after) - relayed_to_client(&before)
    );
    assert!(
        dropped(&after) >= DATAGRAMS as f64,
        "expected {DATAGRAMS} drops counted after expiry\n--- metrics ---\n{}\n{}",
        after.0,
        log(&daemon)
    );
    assert_eq!(
        relayed_to_client(&after),
        relayed_to_client(&before),
        "the relay counted datagrams relayed to the client after expiry\n--- metrics ---\n{}",
        after.0
    );

    // The allocation is intact: a refreshed permission relays again.
    grant(&mut client, how, peer_address).or_fail("refreshing the permission");
    relayed_while_permitted(&mut client, &peer, how, "refreshed", &daemon);
}

#[test]
fn expired_permission_stops_relaying_with_xdp() {
    expired_permission_stops_relaying(
        "expired_permission_stops_relaying_with_xdp",
        Xdp::Native,
        Grant::Permission,
    );
}

#[test]
fn expired_permission_stops_relaying_in_userspace() {
    expired_permission_stops_relaying(
        "expired_permission_stops_relaying_in_userspace",
        Xdp::Off,
        Grant::Permission,
    );
}

#[test]
fn expired_permission_stops_channel_relaying_with_xdp() {
    expired_permission_stops_relaying(
        "expired_permission_stops_channel_relaying_with_xdp",
        Xdp::Native,
        Grant::Channel,
    );
}

#[test]
fn expired_permission_stops_channel_relaying_in_userspace() {
    expired_permission_stops_relaying(
        "expired_permission_stops_channel_relaying_in_userspace",
        Xdp::Off,
        Grant::Channel,
    );
}
