//! Bandwidth limits, differentially: the same datagrams through the XDP program (under
//! BPF_PROG_TEST_RUN, its maps written by the core's own commands) and through the
//! userspace core built from the same configuration, step by step from full buckets. Both
//! must relay or drop each one alike, as the table [`STEPS`] says, and the program counts
//! its drops as `drop_rate_limited`.
//!
//! The limits are 1000 bytes per second per allocation and 1500 for the relay, per
//! direction; the IPv4 and the IPv6 allocation share the relay's buckets. The core's
//! clock stands still while the program's runs on: every step that must be dropped is
//! at least 100 bytes (100 ms of refill) over its limit, so the test holds on a slow
//! machine.

use std::net::SocketAddr;

use turn_relay::bpf::Outcome;
use turn_relay::protocol::datapath::ClientFlow;
use turn_testkit::addresses::{
    CLIENT_V4, CLIENT_V6, PEER_V4, PEER_V6, RELAY_LISTEN_V4, RELAY_LISTEN_V6,
};
use turn_testkit::in_memory::{InMemoryClient, InMemoryRelay};
use turn_testkit::stun_client::{channel_data, send_indication};
use turn_testkit::testbed::{XDP_DROP, XDP_REDIRECT, XDP_TX};
use turn_testkit::{privileged, OrFail};

use crate::core_commands::program_and_core;
use crate::rows::{IpVariant, Origin, Peer, CHANNEL_PEER};
use crate::runner;
use crate::world::{Allocation, CLIENT_PORT, LISTENER_PORT, PEER_PORT};

const PER_ALLOCATION: u64 = 1000;
const TOTAL: u64 = 1500;

/// Which allocation a step is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum On {
    /// The IPv4 client's IPv4 allocation.
    A,
    /// The IPv6 client's IPv6 allocation.
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Client → peer ChannelData.
    ChannelData,
    /// Client → peer Send indication.
    Send,
    /// Peer → client (framed as ChannelData).
    FromPeer,
}

/// One datagram: on which allocation, which way, how many bytes of data, and whether it
/// is relayed.
struct Step {
    on: On,
    kind: Kind,
    data: usize,
    relayed: bool,
}

const fn step(on: On, kind: Kind, data: usize, relayed: bool) -> Step {
    Step {
        on,
        kind,
        data,
        relayed,
    }
}

/// The fixture rows, in order (the buckets carry over from one to the next).
const STEPS: &[Step] = &[
    // Client → peer. A: 600 of 1000; relay: 600 of 1500.
    step(On::A, Kind::ChannelData, 600, true),
    // Send indications share the direction's bucket. A: 900; relay: 900.
    step(On::A, Kind::Send, 300, true),
    // A would be at 1200: over the allocation's limit.
    step(On::A, Kind::ChannelData, 300, false),
    // B: 500; relay: 1400.
    step(On::B, Kind::ChannelData, 500, true),
    // B would be at 800, the relay at 1700: over the relay's limit; B keeps its tokens.
    step(On::B, Kind::Send, 300, false),
    // More than one second's worth: never.
    step(On::A, Kind::ChannelData, 1101, false),
    // Peer → client has buckets of its own. A: 1000 of 1000 (exactly full).
    step(On::A, Kind::FromPeer, 1000, true),
    step(On::A, Kind::FromPeer, 100, false),
    // B: 400; relay: 1400; then the relay's limit.
    step(On::B, Kind::FromPeer, 400, true),
    step(On::B, Kind::FromPeer, 200, false),
    // Client → peer again: B at 600, the relay at exactly 1500 (what step 5 was refused
    // cost nothing).
    step(On::B, Kind::ChannelData, 100, true),
];

/// An allocation of the core, as the fixtures' frame builder describes it.
fn allocation(client: &InMemoryClient, tag: &'static str) -> Allocation {
    let v4 = client.relayed.is_ipv4();
    Allocation {
        tag,
        client: client.flow.client.ip(),
        listener: client.flow.listener.ip(),
        relay: client.relayed,
        peer_ip: if v4 { PEER_V4.into() } else { PEER_V6.into() },
        cross_family: false,
    }
}

#[test]
fn both_paths_limit_bandwidth_alike() {
    if !privileged("both_paths_limit_bandwidth_alike") {
        return;
    }
    let (testbed, mut applier, mut relay, user) = program_and_core(|config| {
        config
            .with_limit("max_bytes_per_second_per_allocation", PER_ALLOCATION)
            .with_limit("max_bytes_per_second_total", TOTAL)
    });
    let flow = |client, listener| {
        ClientFlow::udp(
            SocketAddr::new(client, CLIENT_PORT),
            SocketAddr::new(listener, LISTENER_PORT),
        )
    };
    let a = relay
        .allocate(flow(CLIENT_V4.into(), RELAY_LISTEN_V4.into()), &user, false)
        .or_fail("Allocate A");
    let b = relay
        .allocate(flow(CLIENT_V6.into(), RELAY_LISTEN_V6.into()), &user, true)
        .or_fail("Allocate B");
    let allocations = [allocation(&a, "a"), allocation(&b, "b")];
    for (client, allocation) in [(&a, &allocations[0]), (&b, &allocations[1])] {
        let peer = SocketAddr::new(allocation.peer_ip, PEER_PORT);
        let bound = relay
            .channel_bind(client, CHANNEL_PEER, peer)
            .or_fail("ChannelBind");
        assert!(bound.success, "ChannelBind to {peer}: {bound:?}");
    }
    for command in relay.take_fast_path() {
        applier.apply(command);
    }
    assert!(!applier.is_userspace_only(a.relayed) && !applier.is_userspace_only(b.relayed));

    let dropped_before = testbed.count(Outcome::DropRateLimited).or_fail("counters");
    let mut failures = Vec::new();
    for (index, step) in STEPS.iter().enumerate() {
        let (client, allocation) = match step.on {
            On::A => (&a, &allocations[0]),
            On::B => (&b, &allocations[1]),
        };
        let peer = SocketAddr::new(allocation.peer_ip, PEER_PORT);
        let data = vec![0x5A; step.data];
        let (origin, payload) = match step.kind {
            Kind::ChannelData => (Origin::Client, channel_data(CHANNEL_PEER, &data)),
            Kind::Send => (Origin::Client, send_indication([9; 12], peer, &data, false)),
            Kind::FromPeer => (Origin::Peer(Peer::Bound), data.clone()),
        };
        let userspace = match origin {
            Origin::Client => relay.client_datagram(client.flow, &payload).1.is_some(),
            _ => relay
                .peer_datagram(client.relayed, peer, &payload)
                .is_some(),
        };
        let (frame, ingress) = runner::frame(allocation, origin, &payload, IpVariant::Usual);
        let run = testbed.run(&frame, ingress).or_fail("run");
        let xdp = match run.action {
            XDP_TX | XDP_REDIRECT => Some(true),
            XDP_DROP => Some(false),
            _ => None,
        };
        if xdp != Some(userspace) || userspace != step.relayed {
            failures.push(format!(
                "step {index} ({:?} {:?} {} bytes): expected relayed={}, userspace relayed={userspace}, XDP action {}",
                step.on, step.kind, step.data, step.relayed, run.action
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let drops = STEPS.iter().filter(|step| !step.relayed).count() as u64;
    assert_eq!(
        testbed.count(Outcome::DropRateLimited).or_fail("counters") - dropped_before,
        drops,
        "every drop counted as drop_rate_limited"
    );
    assert_eq!(
        relay_stats(&relay),
        (3, 300 + 300 + 1101, 2, 100 + 200),
        "userspace counts the same drops"
    );
}

/// Userspace's rate-limited drops: (to peer packets, bytes, to client packets, bytes).
fn relay_stats(relay: &InMemoryRelay) -> (u64, u64, u64, u64) {
    let stats = relay.stats();
    (
        stats.rate_limited_to_peer.packets,
        stats.rate_limited_to_peer.bytes,
        stats.rate_limited_to_client.packets,
        stats.rate_limited_to_client.bytes,
    )
}
