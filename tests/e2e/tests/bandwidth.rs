//! Bandwidth limits end to end (coturn's max-bps, `limits.max_bytes_per_second_per_
//! allocation`): a client and a peer each offer three times the limit through the daemon,
//! once with XDP attached in native mode (the program enforces it) and once with XDP off
//! (userspace does). In each direction, what gets through once the one-second burst is
//! used up must be within 10 % of the limit, and the drops are counted under the path
//! that made them.
//!
//! The rate is measured by the sender's clock: each datagram carries the time it was
//! sent, and the receiver adds up the data of those sent inside the window, so neither
//! the receiver's scheduling nor queueing on a busy machine moves bytes in or out of it.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use turn_testkit::addresses::{OUTER_INTERFACE, PEER_V4, RELAY_LISTEN_V4, TURN_PORT};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::daemon::{Daemon, Metrics};
use turn_testkit::stun_client::{channel_data, Delivered, Peer, TurnClient};
use turn_testkit::topology::Topology;
use turn_testkit::xdp::{StubAction, StubXdp};
use turn_testkit::{privileged, OrFail};

/// The per-allocation limit, bytes of data per second and direction.
const LIMIT: u64 = 100_000;
/// Data per datagram.
const DATA: usize = 1000;
/// Datagrams offered per second: three times the limit.
const OFFERED_PER_SECOND: u64 = 3 * LIMIT / DATA as u64;
/// How long each side sends.
const SENDING: Duration = Duration::from_millis(2500);
/// The measuring window, by send time: the burst (one second's worth) is used up after
/// half a second at three times the rate.
const WINDOW: (Duration, Duration) = (Duration::from_millis(1000), Duration::from_millis(2500));
const TOLERANCE: f64 = 0.10;
const CHANNEL: u16 = 0x4000;

/// Sends timestamped datagrams of [`DATA`] bytes with `send` at [`OFFERED_PER_SECOND`]
/// for [`SENDING`] (catching up after oversleeping, so the offered rate holds).
fn offer(mut send: impl FnMut(&[u8])) {
    let start = Instant::now();
    let interval = Duration::from_secs(1) / OFFERED_PER_SECOND as u32;
    let mut data = vec![0x42u8; DATA];
    for index in 0u32.. {
        let due = start + interval * index;
        let now = Instant::now();
        if due >= start + SENDING {
            break;
        }
        if due > now {
            thread::sleep(due - now);
        }
        let sent_at = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        data[..8].copy_from_slice(&sent_at.to_be_bytes());
        send(&data);
    }
}

/// Data bytes received with `receive` (None: nothing within the timeout) that were sent
/// inside [`WINDOW`], until nothing comes for a while after the sender stopped.
fn measure(mut receive: impl FnMut() -> Option<Vec<u8>>) -> u64 {
    let deadline = Instant::now() + SENDING + Duration::from_secs(3);
    let mut in_window = 0u64;
    while Instant::now() < deadline {
        let Some(data) = receive() else {
            break;
        };
        let Some(stamp) = data.get(..8) else {
            continue;
        };
        let sent_at =
            Duration::from_nanos(u64::from_be_bytes(stamp.try_into().expect("eight bytes")));
        if (WINDOW.0..WINDOW.1).contains(&sent_at) {
            in_window += data.len() as u64;
        }
    }
    in_window
}

/// Fails unless `bytes` received over the window are within [`TOLERANCE`] of the limit.
fn assert_near_limit(direction: &str, bytes: u64, daemon: &Daemon) {
    let seconds = (WINDOW.1 - WINDOW.0).as_secs_f64();
    let rate = bytes as f64 / seconds;
    eprintln!(
        "{direction}: {rate:.0} bytes/s over {seconds} s with a limit of {LIMIT} ({:+.1} %)",
        (rate / LIMIT as f64 - 1.0) * 100.0
    );
    assert!(
        (rate - LIMIT as f64).abs() <= TOLERANCE * LIMIT as f64,
        "{direction}: {rate:.0} bytes/s, not within {:.0} % of {LIMIT}\n--- log ---\n{}",
        TOLERANCE * 100.0,
        daemon.log()
    );
}

/// `turn_bandwidth_limited_packets_total{direction, path}`, 0 when absent.
fn limited(path: &str, direction: &str, metrics: &Metrics) -> u64 {
    let (path, direction) = (
        format!("path=\"{path}\""),
        format!("direction=\"{direction}\""),
    );
    metrics
        .0
        .lines()
        .filter(|line| {
            line.starts_with("turn_bandwidth_limited_packets_total{")
                && line.contains(&path)
                && line.contains(&direction)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn the_rate_stays_at_the_limit(test: &str, xdp: Xdp, path: &str) {
    if !privileged(test) {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    // Frames the program relays into a veth need an XDP program on the receiving end.
    let _pass_only = [&topology.client, &topology.peer].map(|netns| {
        StubXdp::attach(netns, OUTER_INTERFACE, StubAction::Pass).or_fail("pass-only XDP")
    });
    let user = User::new("alice", "alice-password");
    let config = RelayConfig::new(xdp)
        .with_user(&user.name, &user.password)
        .with_limit("max_bytes_per_second_per_allocation", LIMIT);
    let mut daemon = Daemon::start(&topology.relay, &config).or_fail("starting turn-relay");
    let server = SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT);
    let mut client = TurnClient::allocate_from(&topology.client, server, &user).or_fail("Allocate");
    let peer = Peer::bind(&topology.peer, SocketAddr::new(PEER_V4.into(), 0)).or_fail("peer");
    let peer_address = peer.address().or_fail("peer address");
    client
        .channel_bind(CHANNEL, peer_address)
        .or_fail("ChannelBind");
    let relayed = client.relayed_address();
    let socket = client
        .socket()
        .or_fail("a UDP client")
        .try_clone()
        .or_fail("cloning the client socket");

    // Client → peer.
    let to_peer = thread::scope(|scope| {
        scope.spawn(|| {
            offer(|data| {
                // A full send buffer on a busy machine is a drop like any other.
                let _ = socket.send(&channel_data(CHANNEL, data));
            })
        });
        measure(|| {
            peer.receive(Duration::from_secs(1))
                .or_fail("peer receive")
                .map(|(data, _)| data)
        })
    });
    assert_near_limit("client → peer", to_peer, &daemon);

    // Peer → client: a bucket of its own.
    let to_client = thread::scope(|scope| {
        scope.spawn(|| {
            offer(|data| {
                let _ = peer.send_to(data, relayed);
            })
        });
        measure(|| {
            match client
                .receive(Duration::from_secs(1))
                .or_fail("client receive")
            {
                Some(Delivered::ChannelData { data, .. }) => Some(data),
                Some(other) => panic!("expected ChannelData, got {other:?}"),
                None => None,
            }
        })
    });
    assert_near_limit("peer → client", to_client, &daemon);

    daemon.ensure_running().or_fail("turn-relay after the run");
    let metrics = daemon
        .metrics_when(Duration::from_secs(5), |metrics| {
            limited(path, "to_peer", metrics) > 0 && limited(path, "to_client", metrics) > 0
        })
        .or_fail("reading /metrics");
    for direction in ["to_peer", "to_client"] {
        assert!(
            limited(path, direction, &metrics) > 0,
            "no {direction} drops counted for path {path}:\n{}",
            metrics.0
        );
    }
    if path == "xdp" {
        assert!(
            metrics.xdp_packets("relayed_channel_data_to_peer") > 0
                && metrics.xdp_packets("relayed_channel_data_to_client") > 0,
            "the program relayed nothing: the limit was not tested in XDP\n{}",
            metrics.0
        );
    }
}

#[test]
fn xdp_holds_a_client_to_its_bandwidth_limit() {
    the_rate_stays_at_the_limit(
        "xdp_holds_a_client_to_its_bandwidth_limit",
        Xdp::Native,
        "xdp",
    );
}

#[test]
fn userspace_holds_a_client_to_its_bandwidth_limit() {
    the_rate_stays_at_the_limit(
        "userspace_holds_a_client_to_its_bandwidth_limit",
        Xdp::Off,
        "userspace",
    );
}
