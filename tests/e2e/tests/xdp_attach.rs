//! Attaches the XDP program in native mode to a veth inside a test namespace, sends UDP
//! through it and checks the per-CPU counters saw every datagram; then checks dropping
//! the relay detaches the program.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use turn_relay::bpf::{XdpMode, XdpRelay, XdpSettings};
use turn_testkit::addresses::{CLIENT_V4, RELAY_CLIENT_SIDE_INTERFACE, RELAY_LISTEN_V4};
use turn_testkit::fast_path::FastPath;
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

const DATAGRAMS: u64 = 5;

#[test]
fn native_attach_counts_udp_and_detaches_on_drop() {
    if !privileged("native_attach_counts_udp_and_detaches_on_drop") {
        return;
    }
    // The client ⇄ relay link of the topology: XDP on the relay's end.
    let topology = Topology::new().or_fail("building the namespaces");
    let settings = XdpSettings {
        mode: XdpMode::Native,
        interfaces: vec![RELAY_CLIENT_SIDE_INTERFACE.to_owned()],
        max_allocations: 16,
        max_permissions_per_allocation: 10,
        max_channels_per_allocation: 10,
        trace: false,
    };
    let relay = topology
        .relay
        .run_inside(|| XdpRelay::attach(&settings))
        .or_fail("attach in native mode");
    assert!(relay.status().contains("native mode"), "{}", relay.status());
    let shown = || {
        topology
            .relay
            .ip(&["link", "show", RELAY_CLIENT_SIDE_INTERFACE])
            .or_fail("ip link show")
    };
    assert!(shown().contains("xdp"));
    let before = relay.counters().expect("counters").seen();

    // A receiver in the relay namespace so the datagrams are wanted, a sender in the
    // client's.
    let bind = |address: IpAddr| -> anyhow::Result<UdpSocket> {
        Ok(UdpSocket::bind(SocketAddr::new(address, 0))?)
    };
    let receiver = topology
        .relay
        .run_inside(|| bind(RELAY_LISTEN_V4.into()))
        .or_fail("bind receiver");
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let target = receiver.local_addr().expect("receiver address");
    let sender = topology
        .client
        .run_inside(|| bind(CLIENT_V4.into()))
        .or_fail("bind sender");
    let mut buffer = [0u8; 64];
    for i in 0..DATAGRAMS {
        sender.send_to(&[i as u8; 32], target).expect("send");
        let (len, _) = receiver
            .recv_from(&mut buffer)
            .expect("datagram passed by XDP");
        assert_eq!(len, 32);
    }

    let after = relay.counters().expect("counters").seen();
    // ≥: the kernel may also send neighbour discovery / ARP through the interface.
    assert!(
        after.packets - before.packets >= DATAGRAMS,
        "before {before:?} after {after:?}"
    );
    assert!(after.bytes - before.bytes >= DATAGRAMS * (14 + 20 + 8 + 32));

    drop(relay);
    assert!(!shown().contains("xdp"), "still attached after drop");
}

#[test]
fn verifier_accepts_the_program_in_native_and_skb_mode() {
    if !privileged("verifier_accepts_the_program_in_native_and_skb_mode") {
        return;
    }
    for (mode, label) in [
        (XdpMode::Native, "native mode"),
        (XdpMode::Skb, "skb mode"),
        (XdpMode::Auto, "native mode"),
    ] {
        let topology = Topology::new().or_fail("building the namespaces");
        let settings = XdpSettings {
            mode,
            interfaces: vec![RELAY_CLIENT_SIDE_INTERFACE.to_owned()],
            max_allocations: 1024,
            max_permissions_per_allocation: 10,
            max_channels_per_allocation: 10,
            trace: false,
        };
        let relay = topology
            .relay
            .run_inside(|| XdpRelay::attach(&settings))
            .unwrap_or_else(|error| panic!("attach in {mode}: {error:#}"));
        let status = relay.status();
        assert!(
            status.contains(label) && status.contains(RELAY_CLIENT_SIDE_INTERFACE),
            "{mode}: {status}"
        );
        assert!(relay.map_memory_bytes().expect("memory") > 0);
        let _fast_path = FastPath::of_relay(&relay).or_fail("datapath");
        assert!(
            FastPath::of_relay(&relay).is_err(),
            "the datapath is handed out once"
        );
    }
}
