//! client ⇄ relay ⇄ peer, each in its own namespace, joined by two veth pairs, with the
//! addresses of [`crate::addresses`]:
//!
//! ```text
//! client eth0 198.18.1.2 / 2001:2:0:1::2  ⇄  to-client 198.18.1.1 / 2001:2:0:1::1   (relay)
//! peer   eth0 198.19.1.2 / 2001:2:0:2::2  ⇄  to-peer   198.19.1.1 / 2001:2:0:2::1   (relay)
//! ```
//!
//! What the XDP fast path needs is set up here:
//! - IP forwarding on in the relay namespace: `bpf_fib_lookup` answers "forwarding
//!   disabled" otherwise and the program passes every frame to userspace. Client and
//!   peer send to the relay's own addresses, so nothing transits (except the benchmark's
//!   no-relay baseline, which is routed through the relay on purpose).
//! - TX checksum offload off on the client's and peer's ends: a same-host veth sender
//!   otherwise leaves only the pseudo-header sum in UDP checksums, which XDP's
//!   incremental update would carry into relayed frames.
//! - For the tests also off on the relay's ends (so captures show complete checksums)
//!   and GRO on at the client's and peer's ends (a veth accepts frames redirected or
//!   XDP_TX'd into it only with NAPI on its receiving side; [`crate::xdp::StubXdp`]
//!   does that on any kernel). The benchmark keeps the relay's offload, as a real
//!   relay host has it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::addresses::{
    CLIENT_V4, CLIENT_V6, OUTER_INTERFACE, PEER_V4, PEER_V6, PREFIX_V4, PREFIX_V6,
    RELAY_CLIENT_SIDE_INTERFACE, RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_PEER_SIDE_INTERFACE,
    RELAY_RELAYED_V4, RELAY_RELAYED_V6,
};
use crate::netns::Netns;

/// How the veth pairs are set up (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct Wiring {
    /// Transmit and receive queues per veth end (one per CPU lets XDP run on every CPU).
    pub queues: usize,
    /// Turn TX checksum offload off on the relay's ends too.
    pub relay_checksums_in_software: bool,
    /// Turn GRO on at the client's and peer's ends.
    pub outer_gro: bool,
}

impl Wiring {
    /// The end-to-end tests' wiring.
    pub fn tests() -> Wiring {
        Wiring {
            queues: 1,
            relay_checksums_in_software: true,
            outer_gro: true,
        }
    }

    /// The benchmark's wiring: one queue per CPU, the relay's offloads as on a real host.
    pub fn benchmark() -> Wiring {
        Wiring {
            queues: std::thread::available_parallelism().map_or(1, |cpus| cpus.get()),
            relay_checksums_in_software: false,
            outer_gro: false,
        }
    }
}

/// The three namespaces. Field order is drop order: none outlives the topology.
pub struct Topology {
    pub client: Netns,
    pub relay: Netns,
    pub peer: Netns,
}

impl Topology {
    /// The tests' topology ([`Wiring::tests`]).
    pub fn new() -> Result<Topology> {
        Topology::wired(Wiring::tests())
    }

    pub fn wired(wiring: Wiring) -> Result<Topology> {
        let topology = Topology {
            client: Netns::create("client")?,
            relay: Netns::create("relay")?,
            peer: Netns::create("peer")?,
        };
        topology
            .connect(
                &topology.client,
                RELAY_CLIENT_SIDE_INTERFACE,
                (CLIENT_V4, RELAY_LISTEN_V4),
                (CLIENT_V6, RELAY_LISTEN_V6),
                wiring,
            )
            .context("wiring client ⇄ relay")?;
        topology
            .connect(
                &topology.peer,
                RELAY_PEER_SIDE_INTERFACE,
                (PEER_V4, RELAY_RELAYED_V4),
                (PEER_V6, RELAY_RELAYED_V6),
                wiring,
            )
            .context("wiring peer ⇄ relay")?;
        topology.set_forwarding(true)?;
        Ok(topology)
    }

    /// Turns IP forwarding (both families) in the relay namespace on or off.
    pub fn set_forwarding(&self, enabled: bool) -> Result<()> {
        self.relay.set_forwarding(enabled)
    }

    /// A veth pair `eth0` (in `outer`) ⇄ `relay_interface` (in the relay namespace), with
    /// addresses and default routes from `outer` via the relay.
    fn connect(
        &self,
        outer: &Netns,
        relay_interface: &str,
        (outer_v4, relay_v4): (Ipv4Addr, Ipv4Addr),
        (outer_v6, relay_v6): (Ipv6Addr, Ipv6Addr),
        wiring: Wiring,
    ) -> Result<()> {
        let queues = wiring.queues.max(1).to_string();
        outer.ip(&[
            "link",
            "add",
            OUTER_INTERFACE,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            relay_interface,
            "numtxqueues",
            &queues,
            "numrxqueues",
            &queues,
            "netns",
            self.relay.name(),
        ])?;
        for (netns, interface, v4, v6, software_checksums) in [
            (outer, OUTER_INTERFACE, outer_v4, outer_v6, true),
            (
                &self.relay,
                relay_interface,
                relay_v4,
                relay_v6,
                wiring.relay_checksums_in_software,
            ),
        ] {
            netns.ip(&[
                "addr",
                "add",
                &format!("{v4}/{PREFIX_V4}"),
                "dev",
                interface,
            ])?;
            netns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/{PREFIX_V6}"),
                "dev",
                interface,
                "nodad",
            ])?;
            netns.ip(&["link", "set", interface, "up"])?;
            if software_checksums {
                netns.run("ethtool", &["-K", interface, "tx", "off"])?;
            }
        }
        if wiring.outer_gro {
            outer.run("ethtool", &["-K", OUTER_INTERFACE, "gro", "on"])?;
        }
        outer.default_route_via(IpAddr::V4(relay_v4))?;
        outer.default_route_via(IpAddr::V6(relay_v6))?;
        Ok(())
    }
}
