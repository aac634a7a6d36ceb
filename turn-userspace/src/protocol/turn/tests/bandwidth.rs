//! Bandwidth limits (coturn's max-bps and bps-capacity): the rule of
//! `turn_common::bandwidth` applied to what userspace relays, and the limits the core
//! hands to the fast path.

use std::time::Duration;

use crate::protocol::datapath::FastPathCommand;
use crate::protocol::turn::{PacketCount, ServerLimits};

use super::*;

const CLIENT: &str = "198.18.1.40:40000";
const OTHER_CLIENT: &str = "198.18.1.41:40000";
const PEER: &str = "198.18.2.20:5000";
const CHANNEL: u16 = 0x4000;

fn limited(per_allocation: u64, total: u64) -> Harness {
    let mut harness = Harness::new().with_limits(ServerLimits {
        max_bytes_per_second_per_allocation: per_allocation,
        max_bytes_per_second_total: total,
        ..ServerLimits::default()
    });
    harness.apply_fast_path();
    harness
}

/// An allocation of `client` with a channel to [`PEER`]; its relayed address.
fn with_channel(harness: &mut Harness, client: ClientFlow) -> SocketAddr {
    let relay = harness.allocate(client);
    assert_success(&harness.channel_bind(client, CHANNEL, addr(PEER)));
    relay
}

#[test]
fn each_direction_gets_one_second_at_once_then_the_rate() {
    let mut harness = limited(1000, 0);
    let client = flow(CLIENT);
    let relay = with_channel(&mut harness, client);
    assert_eq!(
        harness.datapath().allocations[&relay].bytes_per_second,
        1000,
        "the fast path gets the limit the core applies"
    );
    let data = [7u8; 400];
    let to_peer = |harness: &mut Harness| harness.send(client, &channel_data(CHANNEL, &data)).0;
    assert!(to_peer(&mut harness).is_some());
    assert!(to_peer(&mut harness).is_some());
    assert!(
        to_peer(&mut harness).is_none(),
        "1200 bytes > one second's worth"
    );
    // Send indications share the client → peer bucket.
    let send = send_indication(&mut harness, addr(PEER), &data);
    assert!(harness.send(client, &send).0.is_none());
    // Peer → client has a bucket of its own.
    let mut out = Vec::new();
    assert!(harness
        .peer_datagram(relay, addr(PEER), &[1; 1000], &mut out)
        .is_some());
    assert!(harness
        .peer_datagram(relay, addr(PEER), &[1; 1], &mut out)
        .is_none());
    let stats = harness.server.stats();
    assert_eq!(
        (stats.rate_limited_to_peer, stats.rate_limited_to_client),
        (
            PacketCount {
                packets: 2,
                bytes: 800
            },
            PacketCount {
                packets: 1,
                bytes: 1
            }
        )
    );
    // 1000 bytes per second: 200 bytes are left, 400 fit 200 ms later, not before.
    harness.advance(Duration::from_millis(199));
    assert!(to_peer(&mut harness).is_none());
    harness.advance(Duration::from_millis(1));
    assert!(to_peer(&mut harness).is_some());
    // Traffic of an unlimited relay is not touched.
    let mut unlimited = limited(0, 0);
    let relay = with_channel(&mut unlimited, client);
    assert!((0..100).all(|_| unlimited
        .send(client, &channel_data(CHANNEL, &[0; 1200]))
        .0
        .is_some()));
    assert_eq!(unlimited.datapath().allocations[&relay].bytes_per_second, 0);
    assert_eq!(unlimited.datapath().relay_bytes_per_second, 0);
}

#[test]
fn the_total_limit_is_shared_and_refusals_cost_nothing() {
    let mut harness = limited(1000, 1500);
    assert_eq!(
        harness.datapath().relay_bytes_per_second,
        1500,
        "the total limit reaches the fast path before any allocation"
    );
    let first = flow(CLIENT);
    let second = flow(OTHER_CLIENT);
    with_channel(&mut harness, first);
    with_channel(&mut harness, second);
    let send = |harness: &mut Harness, client, len: usize| {
        harness
            .send(client, &channel_data(CHANNEL, &vec![0; len]))
            .0
            .is_some()
    };
    assert!(send(&mut harness, first, 1000));
    // Within its own limit, but over the relay's: dropped, and its own bucket keeps
    // what the relay's refused.
    assert!(!send(&mut harness, second, 1000));
    assert!(send(&mut harness, second, 500));
    assert!(!send(&mut harness, second, 1));
    harness.advance(Duration::from_secs(1));
    assert!(send(&mut harness, second, 1000), "refilled");
}

#[test]
fn the_total_limit_command_comes_first_and_once() {
    let mut server = Harness::new()
        .with_limits(ServerLimits {
            max_bytes_per_second_total: 5000,
            ..ServerLimits::default()
        })
        .server;
    assert_eq!(
        server.poll_fast_path(),
        Some(FastPathCommand::LimitRelayBandwidth {
            bytes_per_second: 5000
        })
    );
    assert_eq!(server.poll_fast_path(), None);
    // Unlimited (the default) needs no command.
    assert_eq!(limited(1000, 0).server.poll_fast_path(), None);
}
