//! Katran-style fixtures for the XDP program: tables of rows (input frame → action,
//! counter, output frame), one file per path, kept as data ([`rows`]); the flows they
//! run against ([`world`]); and the runner ([`runner`]) that builds the frames with the
//! testkit's etherparse-based builder, never with the program's incremental helpers, so
//! a wrong incremental checksum update shows up as a byte difference.
//!
//! Frames run through BPF_PROG_TEST_RUN inside a [`Testbed`] namespace whose routes and
//! static neighbours make bpf_fib_lookup succeed; the rows for unresolved / unroutable
//! peers and the forwarding-disabled test cover lookups that fail, which must PASS the
//! frame unchanged.

mod bandwidth;
mod channel_data_to_client;
mod channel_data_to_peer;
mod core_commands;
mod data_indication_to_client;
mod differential;
mod drops;
mod hostile;
mod passes;
mod rows;
mod runner;
mod send_to_peer;
mod unchecked_addresses;
mod world;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use turn_relay::bpf::Outcome;
use turn_relay::protocol::datapath::{ClientFlow, DatapathError, PeerPortRange};
use turn_testkit::fast_path::FastPath;
use turn_testkit::testbed::{
    Ingress, Testbed, PEER_MAC, PEER_SIDE_INTERFACE, XDP_DROP, XDP_PASS, XDP_REDIRECT,
};
use turn_testkit::{privileged, OrFail};

use rows::{IpVariant, Origin, Peer, CHANNEL_CROSS, CHANNEL_PEER};
use world::{Allocation, V4, V4_CLIENT_V6_RELAY, V6, V6_CLIENT_V4_RELAY};

/// Every table.
const TABLES: [&[rows::Row]; 8] = [
    channel_data_to_peer::ROWS,
    send_to_peer::ROWS,
    channel_data_to_client::ROWS,
    data_indication_to_client::ROWS,
    drops::ROWS,
    passes::ROWS,
    hostile::ROWS,
    unchecked_addresses::ROWS,
];
/// How many fixtures the tables held when they were converted from code to data; the
/// tables may grow, never shrink.
const FIXTURES_AT_CONVERSION: usize = 107;

/// A ChannelData frame from `allocation`'s client on the bound channel.
fn channel_data_frame(allocation: &Allocation, data: &[u8], padding: &[u8]) -> Vec<u8> {
    let payload = [
        turn_testkit::stun_client::channel_data(CHANNEL_PEER, data),
        padding.to_vec(),
    ]
    .concat();
    runner::frame(allocation, Origin::Client, &payload, IpVariant::Usual).0
}

/// `data` from `allocation`'s peer `peer`.
fn peer_frame(allocation: &Allocation, peer: Peer, data: &[u8]) -> Vec<u8> {
    runner::frame(allocation, Origin::Peer(peer), data, IpVariant::Usual).0
}

#[test]
fn fixture_names_are_unique_and_none_was_lost() {
    let fixtures = runner::fixtures(&TABLES);
    let names: BTreeSet<&str> = fixtures
        .iter()
        .map(|fixture| fixture.name.as_str())
        .collect();
    assert_eq!(names.len(), fixtures.len(), "duplicate fixture names");
    assert!(
        fixtures.len() >= FIXTURES_AT_CONVERSION,
        "{} fixtures, fewer than {FIXTURES_AT_CONVERSION}",
        fixtures.len()
    );
}

#[test]
fn fixtures_relay_pass_and_drop_exactly() {
    if !privileged("fixtures_relay_pass_and_drop_exactly") {
        return;
    }
    // On one CPU, so that a fixture's second run finds the per-CPU cache as its first
    // left it.
    pin_to_first_allowed_cpu();
    let testbed = Testbed::new(64).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    world::install(&mut fast_path);
    let fixtures = runner::fixtures(&TABLES);
    // Twice each: the first run of a frame the fast path relays fills this CPU's cache
    // slot for it, and the second is relayed from the slot (ChannelData to a peer by the
    // express path): both must give the row's verdict and frame.
    let failures: Vec<String> = fixtures
        .iter()
        .filter_map(|fixture| {
            let run = |which: &str| {
                fixture
                    .check(&testbed)
                    .map_err(|error| format!("{} ({which} run): {error}", fixture.name))
            };
            run("first").and_then(|()| run("second")).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn data_indications_get_fresh_transaction_ids() {
    if !privileged("data_indications_get_fresh_transaction_ids") {
        return;
    }
    let (testbed, _fast_path) = installed_testbed();
    let input = peer_frame(&V4, Peer::OtherPort, b"payload");
    let first = testbed.run(&input, Ingress::PeerSide).or_fail("run");
    let second = testbed.run(&input, Ingress::PeerSide).or_fail("run");
    assert_eq!((first.action, second.action), (XDP_REDIRECT, XDP_REDIRECT));
    assert_ne!(
        runner::transaction_id(&first.frame),
        runner::transaction_id(&second.frame)
    );
}

/// RFC 8656 §14: the relay sets the IPv4 identification as for a datagram it originates
/// (RFC 6864): each relayed datagram that may be fragmented gets a fresh one, never the
/// client's (which would let fragments of two clients' datagrams collide and leak the
/// client's counter to the peer).
#[test]
fn relayed_ipv4_datagrams_without_df_get_fresh_identifications() {
    if !privileged("relayed_ipv4_datagrams_without_df_get_fresh_identifications") {
        return;
    }
    let (testbed, _fast_path) = installed_testbed();
    let payload = turn_testkit::stun_client::channel_data(CHANNEL_PEER, b"data");
    let (input, _) = runner::frame(&V4, Origin::Client, &payload, IpVariant::MayFragment);
    let ids: BTreeSet<u16> = (0..16)
        .map(|_| {
            let out = testbed.run(&input, Ingress::ClientSide).or_fail("run");
            assert_eq!(out.action, XDP_REDIRECT);
            runner::ipv4_identification(&out.frame)
        })
        .collect();
    assert!(
        ids.len() > 1,
        "one identification for 16 datagrams: {ids:?}"
    );
}

/// The program caches each entry's next hop; a neighbour or route change reaches the
/// relayed frames as soon as the routing watcher sees the kernel's notification (bounded
/// here by half its once-a-second refresh, which alone would often miss it).
#[test]
fn cached_next_hops_follow_neighbour_and_route_changes() {
    if !privileged("cached_next_hops_follow_neighbour_and_route_changes") {
        return;
    }
    let (testbed, _fast_path) = installed_testbed();
    let input = channel_data_frame(&V4, b"data", &[]);
    let destination_mac = |testbed: &Testbed| {
        let out = testbed.run(&input, Ingress::ClientSide).or_fail("run");
        (out.action == XDP_REDIRECT).then(|| out.frame[..6].to_vec())
    };
    assert_eq!(destination_mac(&testbed), Some(PEER_MAC.to_vec()), "cached");
    let moved = [0x02, 0, 0, 0, 0x02, 0x99];
    let peer = world::V4.peer(Peer::Bound).ip().to_string();
    testbed
        .ip(&[
            "neigh",
            "replace",
            &peer,
            "lladdr",
            &turn_testkit::netns::format_mac(moved),
            "dev",
            PEER_SIDE_INTERFACE,
            "nud",
            "permanent",
        ])
        .or_fail("ip neigh");
    let within = |expected: Option<Vec<u8>>| {
        let deadline = Instant::now() + turn_relay::bpf::ROUTING_REFRESH / 2;
        while destination_mac(&testbed) != expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(destination_mac(&testbed), expected);
    };
    within(Some(moved.to_vec()));
    testbed
        .ip(&["route", "add", "unreachable", &format!("{peer}/32")])
        .or_fail("ip route");
    within(None);
    assert!(testbed.count(Outcome::PassNoRoute).or_fail("counters") > 0);
}

/// A testbed with [`world::install`]'s entries, and the datapath that installed them.
fn installed_testbed() -> (Testbed, FastPath) {
    let testbed = Testbed::new(8).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    world::install(&mut fast_path);
    (testbed, fast_path)
}

/// Whether a frame the program relayed is IPv6.
fn is_ipv6(frame: &[u8]) -> bool {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).or_fail("relayed frame");
    matches!(sliced.net, Some(etherparse::NetSlice::Ipv6(_)))
}

/// The UDP destination port and the first payload byte of a frame the program relayed.
fn udp_destination_and_first_byte(frame: &[u8]) -> (u16, u8) {
    let (port, payload) = udp_destination_and_payload(frame);
    (port, payload.first().copied().or_fail("empty payload"))
}

/// The UDP destination port and the payload of a frame the program relayed.
fn udp_destination_and_payload(frame: &[u8]) -> (u16, Vec<u8>) {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).or_fail("relayed frame");
    match sliced.transport {
        Some(etherparse::TransportSlice::Udp(udp)) => {
            (udp.destination_port(), udp.payload().to_vec())
        }
        other => panic!("relayed frame is not UDP: {other:?}"),
    }
}

/// The per-CPU channel cache (turn-ebpf's `channel_cache`) copies a channel entry on
/// the first frames and relays later ones from the copy: a channel entry rewritten or
/// removed must never be relayed from the old copy, in either family. Six frames each
/// way so that, on two CPUs, at least three run on the same one (the copy is made on the
/// second, with the next hop the first left, and used from the third on).
#[test]
fn cached_channels_follow_rewrites_and_removals() {
    if !privileged("cached_channels_follow_rewrites_and_removals") {
        return;
    }
    let (testbed, mut fast_path) = installed_testbed();
    let relayed = |frame: &[u8], ingress: Ingress| {
        let out = testbed.run(frame, ingress).or_fail("run");
        assert_eq!(out.action, XDP_REDIRECT);
        udp_destination_and_first_byte(&out.frame)
    };
    // Each family has its own table.
    for allocation in [V4, V6] {
        let to_peer = channel_data_frame(&allocation, b"data", &[]);
        let from_peer = peer_frame(&allocation, Peer::Bound, b"data");
        let bound = allocation.peer(Peer::Bound);
        for _ in 0..6 {
            assert_eq!(relayed(&to_peer, Ingress::ClientSide).0, bound.port());
            // ChannelData (first two bits 01) to the client.
            assert_eq!(relayed(&from_peer, Ingress::PeerSide).1 >> 6, 1);
        }
        // The client channel rewritten to another peer port: frames follow at once.
        let other = allocation.peer(Peer::OtherPort);
        let live = Instant::now() + Duration::from_secs(600);
        fast_path
            .channel(
                allocation.flow(),
                allocation.relay,
                other,
                CHANNEL_PEER,
                live,
            )
            .or_fail("rewrite");
        for _ in 0..6 {
            assert_eq!(relayed(&to_peer, Ingress::ClientSide).0, other.port());
        }
        // Removed: the client's frames go to userspace, the peer's become Data
        // indications (its permission lives on).
        fast_path.remove_channel(allocation.relay, CHANNEL_PEER);
        for _ in 0..6 {
            let out = testbed.run(&to_peer, Ingress::ClientSide).or_fail("run");
            assert_eq!(out.action, XDP_PASS, "{}: channel removed", allocation.tag);
            assert_eq!(
                relayed(&from_peer, Ingress::PeerSide).1,
                0,
                "{}: a Data indication",
                allocation.tag
            );
        }
    }
    // Cross-family channels: an IPv4 frame in, an IPv6 one out, every time (a table
    // holds routes within its family only, so these never come from it). Best effort, as most media:
    // an IPv4 frame's TOS must match the one its next hop was looked up with.
    for (allocation, origin, payload) in [
        (
            V4_CLIENT_V6_RELAY,
            Origin::Client,
            turn_testkit::stun_client::channel_data(CHANNEL_CROSS, b"data"),
        ),
        (
            V6_CLIENT_V4_RELAY,
            Origin::Peer(Peer::Bound),
            b"data".to_vec(),
        ),
    ] {
        let (frame, ingress) = runner::frame(&allocation, origin, &payload, IpVariant::BestEffort);
        for _ in 0..6 {
            let out = testbed.run(&frame, ingress).or_fail("run");
            assert_eq!(out.action, XDP_REDIRECT);
            assert!(is_ipv6(&out.frame), "relayed as IPv6");
        }
    }
}

/// The per-CPU cache's copies are versioned by the client's and the relayed address
/// (turn-ebpf's `channel_cache`), so a write for one allocation leaves every other
/// allocation's copies in use: at scale a refresh somewhere must not empty the whole
/// cache. Made visible by rewriting the IPv4 allocation's channel entries behind the
/// daemon's back (a raw map write moves no version): its frames keep following the
/// copies through writes for the IPv6 allocation, then follow the rewritten entries
/// after a write for their own. Pinned to one CPU, whose copies are the ones used.
#[test]
fn cached_copies_survive_writes_to_other_allocations() {
    if !privileged("cached_copies_survive_writes_to_other_allocations") {
        return;
    }
    pin_to_first_allowed_cpu();
    let (testbed, mut fast_path) = installed_testbed();
    let (allocation, other) = (V4, V6);
    let bound = allocation.peer(Peer::Bound);
    let to_peer = channel_data_frame(&allocation, b"data", &[]);
    let from_peer = peer_frame(&allocation, Peer::Bound, b"data");
    // (peer port of the frame to the peer, channel number of the frame to the client)
    let relayed = || -> (u16, u16) {
        let outs = testbed
            .run_all(&[
                (&to_peer, Ingress::ClientSide),
                (&from_peer, Ingress::PeerSide),
            ])
            .or_fail("run");
        assert!(outs.iter().all(|out| out.action == XDP_REDIRECT), "relayed");
        let (_, to_client) = udp_destination_and_payload(&outs[1].frame);
        (
            udp_destination_and_first_byte(&outs[0].frame).0,
            u16::from_be_bytes([to_client[0], to_client[1]]),
        )
    };
    // The first frames' next-hop lookups move the routing generation on (neighbour
    // events): let that happen before the copies are made.
    relayed();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        assert_eq!(relayed(), (bound.port(), CHANNEL_PEER));
    }
    let (moved_port, moved_number) = (bound.port() + 1, CHANNEL_PEER + 1);
    rewrite_channel_behind_the_cache(&testbed, &allocation, moved_port, moved_number);
    assert_eq!(
        relayed(),
        (bound.port(), CHANNEL_PEER),
        "relayed from the copies"
    );
    let live = Instant::now() + Duration::from_secs(600);
    let other_peer = other.peer(Peer::Bound);
    fast_path
        .permission(other.flow(), other.relay, other_peer.ip(), live)
        .or_fail("permission");
    fast_path
        .channel(other.flow(), other.relay, other_peer, CHANNEL_PEER, live)
        .or_fail("channel");
    fast_path
        .allocation(other.flow(), other.relay, live)
        .or_fail("allocation");
    assert_eq!(
        relayed(),
        (bound.port(), CHANNEL_PEER),
        "copies kept through the other allocation's writes"
    );
    fast_path
        .permission(allocation.flow(), allocation.relay, bound.ip(), live)
        .or_fail("permission");
    assert_eq!(
        relayed(),
        (moved_port, moved_number),
        "entries read again after a write for their allocation"
    );
}

/// Restricts the calling thread, and the threads it starts (the testbed's), to the first
/// CPU it may run on.
fn pin_to_first_allowed_cpu() {
    // SAFETY: cpu_set_t is plain data; the calls write and read only `set`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| libc::CPU_ISSET(cpu, &set))
            .or_fail("an allowed CPU");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(first, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Rewrites `allocation`'s channel `CHANNEL_PEER` to its bound peer in the program's maps
/// directly, as no daemon would: to the peer's port `peer_port` on the client's side,
/// as channel `number` on the peer's. No cache version moves.
fn rewrite_channel_behind_the_cache(
    testbed: &Testbed,
    allocation: &Allocation,
    peer_port: u16,
    number: u16,
) {
    use turn_common::maps::{
        ClientChannelKey, ClientChannelValue, PeerChannelKey, PeerChannelValue,
    };
    let flow = allocation.flow();
    let bound = allocation.peer(Peer::Bound);
    let mut client_channels = program_hash_map(testbed, "CLIENT_CHANNELS");
    let key = ClientChannelKey::new(
        family(flow.client.ip()),
        map_bytes(flow.client.ip()),
        flow.client.port().to_be_bytes(),
        map_bytes(flow.listener.ip()),
        flow.listener.port().to_be_bytes(),
        CHANNEL_PEER.to_be_bytes(),
    );
    let value: ClientChannelValue = client_channels.get(&key, 0).or_fail("the channel's entry");
    let rewritten = ClientChannelValue::new(
        value.peer_family(),
        *value.peer_ip(),
        peer_port.to_be_bytes(),
        *value.relay_ip(),
        value.relay_port(),
        value.slot(),
        value.expires_ns(),
    );
    client_channels.insert(key, rewritten, 0).or_fail("rewrite");
    let mut peer_channels = program_hash_map(testbed, "PEER_CHANNELS");
    let key = PeerChannelKey::new(
        family(allocation.relay.ip()),
        map_bytes(allocation.relay.ip()),
        allocation.relay.port().to_be_bytes(),
        map_bytes(bound.ip()),
        bound.port().to_be_bytes(),
    );
    let value: PeerChannelValue = peer_channels.get(&key, 0).or_fail("the channel's entry");
    let rewritten = PeerChannelValue::new(
        number.to_be_bytes(),
        *value.client(),
        value.slot(),
        value.expires_ns(),
    );
    peer_channels.insert(key, rewritten, 0).or_fail("rewrite");
}

/// The testbed program's hash map `name`, with keys `K` and values `V`.
fn program_hash_map<K: aya::Pod, V: aya::Pod>(
    testbed: &Testbed,
    name: &str,
) -> aya::maps::HashMap<aya::maps::MapData, K, V> {
    let map = testbed.program_map(name).or_fail("map");
    aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map)).or_fail(name)
}

/// An address's family as the maps hold it.
fn family(ip: std::net::IpAddr) -> u8 {
    if ip.is_ipv4() {
        turn_common::maps::FAMILY_V4
    } else {
        turn_common::maps::FAMILY_V6
    }
}

/// An address's 16 bytes as the maps hold them.
fn map_bytes(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => turn_common::maps::v4_bytes(v4.octets()),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// A channel cache copy is never used past its entry's expiry (a hit checks the copy's
/// expiry against the program's clock, as the hash path checks the entry's). A channel
/// expiring in 0.8 s is relayed from the copy, then, once
/// expired (plus the two ticks the program's clock may lag), the client's frames go to
/// userspace and the peer's become Data indications (its permission lives on). The
/// frames relayed first and the pause after them let the neighbour events of the first
/// next-hop lookups move the routing generation on before the copy is made: a later
/// move would send the expired frames down the hash path, past the copy.
#[test]
fn cached_channels_expire_with_their_entries() {
    if !privileged("cached_channels_expire_with_their_entries") {
        return;
    }
    let (testbed, mut fast_path) = installed_testbed();
    for allocation in [V4, V6] {
        let to_peer = channel_data_frame(&allocation, b"data", &[]);
        let from_peer = peer_frame(&allocation, Peer::Bound, b"data");
        let run_both = || {
            let out_to_peer = testbed.run(&to_peer, Ingress::ClientSide).or_fail("run");
            let out_from_peer = testbed.run(&from_peer, Ingress::PeerSide).or_fail("run");
            (out_to_peer, out_from_peer)
        };
        for _ in 0..6 {
            run_both();
        }
        std::thread::sleep(Duration::from_millis(300));
        let expires_at = Instant::now() + Duration::from_millis(800);
        let bound = allocation.peer(Peer::Bound);
        fast_path
            .channel(
                allocation.flow(),
                allocation.relay,
                bound,
                CHANNEL_PEER,
                expires_at,
            )
            .or_fail("channel");
        let tag = allocation.tag;
        for _ in 0..6 {
            let (to_peer, from_peer) = run_both();
            assert_eq!(to_peer.action, XDP_REDIRECT, "{tag}: live channel");
            assert_eq!(from_peer.action, XDP_REDIRECT, "{tag}: live channel");
            assert_eq!(
                udp_destination_and_first_byte(&from_peer.frame).1 >> 6,
                1,
                "{tag}: ChannelData"
            );
        }
        std::thread::sleep(
            expires_at.saturating_duration_since(Instant::now()) + Duration::from_millis(100),
        );
        for _ in 0..6 {
            let (to_peer, from_peer) = run_both();
            assert_eq!(to_peer.action, XDP_PASS, "{tag}: expired channel");
            assert_eq!(from_peer.action, XDP_REDIRECT);
            assert_eq!(
                udp_destination_and_first_byte(&from_peer.frame).1,
                0,
                "{tag}: a Data indication"
            );
        }
    }
}

/// The per-CPU cache also copies, for Send indications, the allocation and the
/// permission a client–peer pair was relayed with (turn-ebpf's `channel_cache`): a
/// permission rewritten to other ports, one expiring, or the allocation removed must
/// never leave the pair relaying from the old copy, in either family. Six frames each
/// time, as in `cached_channels_follow_rewrites_and_removals`.
#[test]
fn cached_send_pairs_follow_permissions_and_allocations() {
    if !privileged("cached_send_pairs_follow_permissions_and_allocations") {
        return;
    }
    let (testbed, mut fast_path) = installed_testbed();
    for allocation in [V4, V6] {
        let tag = allocation.tag;
        let peer = allocation.peer(Peer::Bound);
        let payload = turn_testkit::stun_client::send_indication([5; 12], peer, b"data", true);
        let (send, _) = runner::frame(&allocation, Origin::Client, &payload, IpVariant::Usual);
        let actions = |what: &str| -> Vec<u32> {
            (0..6)
                .map(|_| testbed.run(&send, Ingress::ClientSide).or_fail(what).action)
                .collect()
        };
        assert_eq!(actions("run"), [XDP_REDIRECT; 6], "{tag}: permitted");
        // The permission rewritten to cover other ports only.
        let live = Instant::now() + Duration::from_secs(600);
        let others = PeerPortRange {
            first: peer.port() + 1,
            last: peer.port() + 1,
        };
        fast_path
            .permission_on_ports(allocation.flow(), allocation.relay, peer.ip(), others, live)
            .or_fail("rewrite");
        assert_eq!(
            actions("run"),
            [XDP_PASS; 6],
            "{tag}: port no longer permitted"
        );
        // Back on every port, expiring in 0.8 s: relayed, then not once expired (plus
        // the two ticks the program's clock may lag).
        fast_path
            .permission(allocation.flow(), allocation.relay, peer.ip(), live)
            .or_fail("permission");
        assert_eq!(actions("run"), [XDP_REDIRECT; 6], "{tag}: permitted again");
        let expires_at = Instant::now() + Duration::from_millis(800);
        fast_path
            .permission(allocation.flow(), allocation.relay, peer.ip(), expires_at)
            .or_fail("permission");
        assert_eq!(actions("run"), [XDP_REDIRECT; 6], "{tag}: live permission");
        std::thread::sleep(
            expires_at.saturating_duration_since(Instant::now()) + Duration::from_millis(100),
        );
        assert_eq!(actions("run"), [XDP_PASS; 6], "{tag}: expired permission");
        // Permitted again, then the allocation removed.
        fast_path
            .permission(allocation.flow(), allocation.relay, peer.ip(), live)
            .or_fail("permission");
        assert_eq!(actions("run"), [XDP_REDIRECT; 6], "{tag}: permitted again");
        fast_path.remove_allocation(allocation.flow(), allocation.relay);
        assert_eq!(actions("run"), [XDP_PASS; 6], "{tag}: allocation removed");
    }
}

/// The per-CPU cache also copies, for a peer's datagrams without a channel, the
/// allocation and the permission they were relayed as Data indications with
/// (turn-ebpf's `channel_cache`): a channel bound for the peer, its permission expiring,
/// or the allocation removed must never leave its datagrams going out from the old copy,
/// in either family. Six frames each time, as in
/// `cached_channels_follow_rewrites_and_removals`.
#[test]
fn cached_data_indications_follow_channels_permissions_and_allocations() {
    if !privileged("cached_data_indications_follow_channels_permissions_and_allocations") {
        return;
    }
    // A number no row binds.
    const CHANNEL_LATER: u16 = 0x4020;
    let (testbed, mut fast_path) = installed_testbed();
    for allocation in [V4, V6] {
        let tag = allocation.tag;
        let peer = allocation.peer(Peer::OtherPort);
        let from_peer = peer_frame(&allocation, Peer::OtherPort, b"data");
        // (action, first payload byte of what was relayed) of six runs.
        let outcomes = |what: &str| -> Vec<(u32, Option<u8>)> {
            (0..6)
                .map(|_| {
                    let out = testbed.run(&from_peer, Ingress::PeerSide).or_fail(what);
                    let first = (out.action == XDP_REDIRECT)
                        .then(|| udp_destination_and_first_byte(&out.frame).1);
                    (out.action, first)
                })
                .collect()
        };
        let data_indication = (XDP_REDIRECT, Some(0));
        assert_eq!(
            outcomes("run"),
            [data_indication; 6],
            "{tag}: Data indications"
        );
        // A channel bound to the peer: ChannelData (first two bits 01) at once.
        let live = Instant::now() + Duration::from_secs(600);
        fast_path
            .channel(
                allocation.flow(),
                allocation.relay,
                peer,
                CHANNEL_LATER,
                live,
            )
            .or_fail("channel");
        let channel_data = (XDP_REDIRECT, Some(0x40 | (CHANNEL_LATER >> 8) as u8));
        assert_eq!(outcomes("run"), [channel_data; 6], "{tag}: ChannelData");
        fast_path.remove_channel(allocation.relay, CHANNEL_LATER);
        assert_eq!(
            outcomes("run"),
            [data_indication; 6],
            "{tag}: channel removed"
        );
        // The permission expiring in 0.8 s: relayed, then dropped once expired (plus the
        // two ticks the program's clock may lag).
        let expires_at = Instant::now() + Duration::from_millis(800);
        fast_path
            .permission(allocation.flow(), allocation.relay, peer.ip(), expires_at)
            .or_fail("permission");
        assert_eq!(
            outcomes("run"),
            [data_indication; 6],
            "{tag}: live permission"
        );
        std::thread::sleep(
            expires_at.saturating_duration_since(Instant::now()) + Duration::from_millis(100),
        );
        assert_eq!(
            outcomes("run"),
            [(XDP_DROP, None); 6],
            "{tag}: expired permission"
        );
        // Permitted again, then the allocation removed: not ours any more.
        fast_path
            .permission(allocation.flow(), allocation.relay, peer.ip(), live)
            .or_fail("permission");
        assert_eq!(
            outcomes("run"),
            [data_indication; 6],
            "{tag}: permitted again"
        );
        fast_path.remove_allocation(allocation.flow(), allocation.relay);
        assert_eq!(
            outcomes("run"),
            [(XDP_PASS, None); 6],
            "{tag}: allocation removed"
        );
    }
}

#[test]
fn relayed_traffic_is_accounted_per_allocation() {
    if !privileged("relayed_traffic_is_accounted_per_allocation") {
        return;
    }
    let (testbed, mut fast_path) = installed_testbed();
    let to_peer = channel_data_frame(&V4, b"12345", &[0, 0, 0]);
    let from_peer = peer_frame(&V4, Peer::Bound, b"1234567");
    for _ in 0..3 {
        let out = testbed.run(&to_peer, Ingress::ClientSide).or_fail("run");
        assert_eq!(out.action, XDP_REDIRECT);
    }
    let out = testbed.run(&from_peer, Ingress::PeerSide).or_fail("run");
    assert_eq!(out.action, XDP_REDIRECT);
    let traffic = fast_path.relayed_traffic(V4.relay);
    assert_eq!((traffic.to_peer_packets, traffic.to_peer_bytes), (3, 15));
    assert_eq!((traffic.to_client_packets, traffic.to_client_bytes), (1, 7));
    assert_eq!(fast_path.relayed_traffic(V6.relay).to_peer_packets, 0);

    // Removing the allocation stops the fast path for it: the frames go to userspace.
    fast_path.remove_allocation(V4.flow(), V4.relay);
    let out = testbed.run(&to_peer, Ingress::ClientSide).or_fail("run");
    assert_eq!(out.action, XDP_PASS);
    let out = testbed.run(&from_peer, Ingress::PeerSide).or_fail("run");
    assert_eq!(
        out.action, XDP_PASS,
        "no relayed address any more: not ours"
    );
}

#[test]
fn forwarding_disabled_passes_instead_of_relaying() {
    if !privileged("forwarding_disabled_passes_instead_of_relaying") {
        return;
    }
    let (testbed, _fast_path) = installed_testbed();
    testbed.set_forwarding(false).or_fail("sysctl");
    for allocation in [V4, V6] {
        let payload = turn_testkit::stun_client::channel_data(CHANNEL_PEER, b"data");
        let (input, _) = runner::frame(&allocation, Origin::Client, &payload, IpVariant::Usual);
        let before = testbed.count(Outcome::PassNoRoute).or_fail("counters");
        let out = testbed.run(&input, Ingress::ClientSide).or_fail("run");
        assert_eq!(
            (out.action, &out.frame),
            (XDP_PASS, &input),
            "{}",
            allocation.tag
        );
        assert_eq!(
            testbed.count(Outcome::PassNoRoute).or_fail("counters"),
            before + 1
        );
    }
}

#[test]
fn full_maps_refuse_entries_with_map_full() {
    if !privileged("full_maps_refuse_entries_with_map_full") {
        return;
    }
    let testbed = Testbed::new(1).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    let expires_at = Instant::now() + Duration::from_secs(60);
    fast_path
        .allocation(V4.flow(), V4.relay, expires_at)
        .expect("first");
    assert!(matches!(
        fast_path.allocation(V6.flow(), V6.relay, expires_at),
        Err(DatapathError::MapFull)
    ));
    let wildcard = ClientFlow {
        listener: "0.0.0.0:3478".parse().expect("addr"),
        ..V4.flow()
    };
    fast_path.remove_allocation(V4.flow(), V4.relay);
    assert!(
        fast_path
            .allocation(
                wildcard,
                "198.19.1.1:50001".parse().expect("addr"),
                expires_at
            )
            .is_err(),
        "wildcard listeners are refused"
    );
    fast_path
        .allocation(V4.flow(), V4.relay, expires_at)
        .expect("slot reused");
}

#[test]
fn channels_stop_with_their_allocation_and_resume_on_refresh() {
    if !privileged("channels_stop_with_their_allocation_and_resume_on_refresh") {
        return;
    }
    let testbed = Testbed::new(8).or_fail("testbed");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    let (flow, relay) = (V4.flow(), V4.relay);
    let peer = V4.peer(Peer::Bound);
    let live = Instant::now() + Duration::from_secs(600);
    let expired = Instant::now() - Duration::from_secs(1);
    fast_path
        .allocation(flow, relay, expired)
        .expect("allocation");
    fast_path
        .permission(flow, relay, peer.ip(), live)
        .expect("permission");
    fast_path
        .channel(flow, relay, peer, CHANNEL_PEER, live)
        .expect("channel");
    let input = channel_data_frame(&V4, b"data", &[]);
    let action = |testbed: &Testbed| {
        testbed
            .run(&input, Ingress::ClientSide)
            .or_fail("run")
            .action
    };
    assert_eq!(action(&testbed), XDP_PASS, "allocation expired");
    fast_path.allocation(flow, relay, live).expect("refresh");
    assert_eq!(action(&testbed), XDP_REDIRECT, "refreshed");
    fast_path.remove_channel(relay, CHANNEL_PEER);
    assert_eq!(action(&testbed), XDP_PASS, "channel removed");
}

/// `xdp.trace` (issue 11): with the trace on, each frame's decision reaches the log with
/// its outcome, action and UDP flow; a frame that is not IP is logged without a flow.
#[test]
fn the_decision_trace_logs_outcome_action_and_flow() {
    if !privileged("the_decision_trace_logs_outcome_action_and_flow") {
        return;
    }
    let testbed = Testbed::traced(8).or_fail("testbed with the trace on");
    let mut fast_path = testbed.fast_path().or_fail("datapath");
    world::install(&mut fast_path);
    let relayed = testbed
        .run(
            &channel_data_frame(&V4, b"traced", &[]),
            Ingress::ClientSide,
        )
        .or_fail("run");
    assert_eq!(relayed.action, XDP_REDIRECT);
    let mut not_ip = channel_data_frame(&V4, b"x", &[]);
    not_ip[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let passed = testbed.run(&not_ip, Ingress::ClientSide).or_fail("run");
    assert_eq!(passed.action, XDP_PASS);
    let flow = V4.flow();
    let expected = [
        format!(
            "INFO relayed_channel_data_to_peer action {XDP_REDIRECT} {} -> {}",
            flow.client, flow.listener
        ),
        format!("INFO pass_not_ip action {XDP_PASS}"),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut records = testbed.trace_records();
    while records.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        records = testbed.trace_records();
    }
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records, expected);
}
