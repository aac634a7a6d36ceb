//! Issue 8 item 1, from the core to the kernel: the client of an IPv6 allocation writes
//! its IPv4 peer in every IPv6 form (IPv4-mapped, IPv4-compatible) and as the IPv4 address
//! itself. The core answers 443 and emits no fast-path command for any of them; its
//! commands, applied to the program's maps by the core's own applier (what the daemon
//! runs), leave nothing the program relays for them, nor for the IPv6 address whose first
//! four bytes are the IPv4 peer (what a canonicalising datapath used to alias). The
//! permitted IPv6 peer is relayed, as an IPv6 datagram from the IPv6 relayed address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket};
use turn_relay::bpf::Outcome;
use turn_relay::protocol::datapath::{ClientFlow, FastPathCommand};
use turn_testkit::addresses::{CLIENT_V6, PEER_V4, PEER_V6, RELAY_LISTEN_V6, RELAY_RELAYED_V6};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::fast_path::Applier;
use turn_testkit::in_memory::InMemoryRelay;
use turn_testkit::stun_client::{channel_data, send_indication};
use turn_testkit::testbed::{Ingress, Testbed, XDP_PASS, XDP_REDIRECT};
use turn_testkit::{privileged, OrFail};

use crate::rows::{IpVariant, Origin, CHANNEL_MAPPED, CHANNEL_PEER, DATA};
use crate::runner;
use crate::world::{Allocation, CLIENT_PORT, LISTENER_PORT, PEER_PORT};

/// The peer IPs of the fast path's commands.
fn peers_of(commands: &[FastPathCommand]) -> Vec<IpAddr> {
    commands
        .iter()
        .filter_map(|command| match command {
            FastPathCommand::InstallPermission(entry) => Some(entry.peer_ip),
            FastPathCommand::InstallChannel(entry) => Some(entry.peer.ip()),
            FastPathCommand::RemovePermission { peer_ip, .. } => Some(*peer_ip),
            _ => None,
        })
        .collect()
}

/// The IP source and destination of a frame the program left.
fn addresses(frame: &[u8]) -> (IpAddr, IpAddr) {
    match SlicedPacket::from_ethernet(frame).map(|sliced| sliced.net) {
        Ok(Some(NetSlice::Ipv4(ip))) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Ok(Some(NetSlice::Ipv6(ip))) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        other => panic!("relayed frame is not IP: {other:?}"),
    }
}

/// A testbed with the program, the core's applier on its tables, and the core built
/// from the tests' configuration (IPv6 too, user alice) as `configure` changes it.
pub fn program_and_core(
    configure: impl FnOnce(RelayConfig) -> RelayConfig,
) -> (Testbed, Applier, InMemoryRelay, User) {
    let testbed = Testbed::new(8).or_fail("testbed");
    let applier = testbed.fast_path().or_fail("datapath").into_applier();
    let user = User::new("alice", "alice-password");
    let config = RelayConfig::new(Xdp::Native)
        .with_ipv6()
        .with_user(&user.name, &user.password);
    let relay = InMemoryRelay::new(&configure(config)).or_fail("the core");
    (testbed, applier, relay, user)
}

#[test]
fn the_fast_path_holds_only_what_the_core_checked() {
    if !privileged("the_fast_path_holds_only_what_the_core_checked") {
        return;
    }
    let (testbed, mut applier, mut relay, user) = program_and_core(|config| config);
    let flow = ClientFlow::udp(
        SocketAddr::new(CLIENT_V6.into(), CLIENT_PORT),
        SocketAddr::new(RELAY_LISTEN_V6.into(), LISTENER_PORT),
    );
    let client = relay.allocate(flow, &user, true).or_fail("Allocate");
    assert_eq!(client.relayed.ip(), IpAddr::V6(RELAY_RELAYED_V6));

    let written_as_ipv6 = [
        IpAddr::V6(PEER_V4.to_ipv6_mapped()),
        IpAddr::V6(PEER_V4.to_ipv6_compatible()),
    ];
    for peer_ip in written_as_ipv6.into_iter().chain([IpAddr::V4(PEER_V4)]) {
        let peer = SocketAddr::new(peer_ip, PEER_PORT);
        let permission = relay
            .create_permission(&client, &[peer])
            .or_fail("CreatePermission");
        let channel = relay
            .channel_bind(&client, CHANNEL_MAPPED, peer)
            .or_fail("ChannelBind");
        for (request, response) in [("CreatePermission", permission), ("ChannelBind", channel)] {
            assert_eq!(
                response.error_code,
                Some(443),
                "{request} for {peer} on an IPv6 allocation: {response:?}"
            );
        }
    }
    let mut commands = relay.take_fast_path();
    assert!(
        matches!(commands.as_slice(), [FastPathCommand::InstallAllocation(_)]),
        "only the allocation is installed: {commands:?}"
    );

    let permitted = SocketAddr::new(PEER_V6.into(), PEER_PORT);
    let bound = relay
        .channel_bind(&client, CHANNEL_PEER, permitted)
        .or_fail("ChannelBind");
    assert!(bound.success, "ChannelBind for {permitted}: {bound:?}");
    commands.extend(relay.take_fast_path());
    assert_eq!(
        peers_of(&commands),
        [IpAddr::V6(PEER_V6), IpAddr::V6(PEER_V6)],
        "the permission and channel of the checked peer, nothing else: {commands:?}"
    );
    for command in commands {
        applier.apply(command);
    }
    assert!(!applier.is_userspace_only(client.relayed));

    let allocation = Allocation {
        tag: "core",
        client: CLIENT_V6.into(),
        listener: RELAY_LISTEN_V6.into(),
        relay: client.relayed,
        peer_ip: PEER_V6.into(),
        cross_family: false,
    };
    let first_four_bytes = {
        let [a, b, c, d] = PEER_V4.octets();
        Ipv6Addr::from([a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    };
    let mut unchecked: Vec<(String, Vec<u8>, Outcome)> = written_as_ipv6
        .into_iter()
        .chain([IpAddr::V6(first_four_bytes)])
        .map(|peer_ip| {
            let peer = SocketAddr::new(peer_ip, PEER_PORT);
            (
                format!("Send to {peer}"),
                send_indication([7; 12], peer, DATA, false),
                Outcome::PassNoPermission,
            )
        })
        .collect();
    unchecked.push((
        format!("Send to {PEER_V4} (no IPv4 allocation)"),
        send_indication(
            [7; 12],
            SocketAddr::new(PEER_V4.into(), PEER_PORT),
            DATA,
            false,
        ),
        Outcome::PassStun,
    ));
    unchecked.push((
        format!("ChannelData on the refused channel {CHANNEL_MAPPED:#x}"),
        channel_data(CHANNEL_MAPPED, DATA),
        Outcome::PassChannelNotBound,
    ));
    for (what, payload, outcome) in unchecked {
        let (input, ingress) =
            runner::frame(&allocation, Origin::Client, &payload, IpVariant::Usual);
        let before = testbed.count(outcome).or_fail("counters");
        let out = testbed.run(&input, ingress).or_fail("run");
        assert_eq!(
            (out.action, out.frame == input),
            (XDP_PASS, true),
            "{what}: must reach userspace untouched"
        );
        assert_eq!(
            testbed.count(outcome).or_fail("counters"),
            before + 1,
            "{what}: counted as {outcome:?}"
        );
    }

    for (what, payload) in [
        ("ChannelData", channel_data(CHANNEL_PEER, DATA)),
        ("Send", send_indication([7; 12], permitted, DATA, false)),
    ] {
        let (input, _) = runner::frame(&allocation, Origin::Client, &payload, IpVariant::Usual);
        let out = testbed.run(&input, Ingress::ClientSide).or_fail("run");
        assert_eq!(out.action, XDP_REDIRECT, "{what} to the checked peer");
        assert_eq!(
            addresses(&out.frame),
            (IpAddr::V6(RELAY_RELAYED_V6), IpAddr::V6(PEER_V6)),
            "{what}: from the IPv6 relayed address to the checked peer"
        );
    }
}
