//! Attaches the XDP program in native mode to a veth inside a test namespace, sends UDP
//! through it and checks the per-CPU counters saw every datagram; then checks dropping
//! the relay detaches the program.

mod xdp_support;

use std::net::UdpSocket;
use std::time::Duration;

use turn_relay::bpf::{XdpMode, XdpRelay, XdpSettings};
use xdp_support::{in_netns, ip_in, privileged, VethPair, A_V4, B_V4};

const DATAGRAMS: u64 = 5;

#[test]
fn native_attach_counts_udp_and_detaches_on_drop() {
    if !privileged("native_attach_counts_udp_and_detaches_on_drop") {
        return;
    }
    let veth = VethPair::new();
    let settings = XdpSettings {
        mode: XdpMode::Native,
        interfaces: vec![veth.b_if.clone()],
        max_allocations: 16,
    };
    let relay =
        in_netns(&veth.b.name, move || XdpRelay::attach(&settings)).expect("attach in native mode");
    assert!(relay.status().contains("native mode"), "{}", relay.status());
    assert!(ip_in(&veth.b.name, &["link", "show", &veth.b_if]).contains("xdp"));
    let before = relay.counters().expect("counters").seen();

    // A receiver in b so the datagrams are wanted, a sender in a.
    let receiver = in_netns(&veth.b.name, || {
        UdpSocket::bind((B_V4, 0)).expect("bind receiver")
    });
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let target = receiver.local_addr().expect("receiver address");
    let sender = in_netns(&veth.a.name, || {
        UdpSocket::bind((A_V4, 0)).expect("bind sender")
    });
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
    assert!(
        !ip_in(&veth.b.name, &["link", "show", &veth.b_if]).contains("xdp"),
        "still attached after drop"
    );
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
        let veth = VethPair::new();
        let settings = XdpSettings {
            mode,
            interfaces: vec![veth.b_if.clone()],
            max_allocations: 1024,
        };
        let relay = in_netns(&veth.b.name, move || XdpRelay::attach(&settings))
            .unwrap_or_else(|error| panic!("attach in {mode}: {error:#}"));
        let status = relay.status();
        assert!(
            status.contains(label) && status.contains(&veth.b_if),
            "{mode}: {status}"
        );
        assert!(relay.map_memory_bytes().expect("memory") > 0);
        let _datapath = relay.datapath().expect("datapath");
        assert!(relay.datapath().is_err(), "the datapath is handed out once");
    }
}
