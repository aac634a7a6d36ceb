//! Several relays behind one load balancer, as operators run them: clients know one
//! virtual address, an nftables DNAT spreads flows over the relays by a hash of the
//! 5-tuple (IPVS is not in this kernel), and each relay has its own address, which it
//! announces as its relayed address and which clients and peers reach directly.
//!
//! ```text
//! client 198.18.60.2 ⇄ 198.18.60.1 (+ virtual 198.18.60.100)  balancer  198.18.62.1 ⇄ peer 198.18.62.2
//!                                    198.18.61.1 (bridge)
//!                                     ├── relay 0  198.18.61.11
//!                                     ├── relay 1  198.18.61.12
//!                                     └── relay 2  198.18.61.13
//! ```
//!
//! The balancer routes between the three networks (replies from the relays pass through
//! it, so conntrack turns their source back into the virtual address). UDP and TCP port
//! 3478 of the virtual address are DNATed with `jhash` over source and destination
//! address and port, modulo the number of relays.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};

use crate::addresses::{
    balanced_relay_v4, BALANCED_CLIENT_V4, BALANCED_PEER_V4, BALANCER_CLIENT_SIDE_V4,
    BALANCER_PEER_SIDE_V4, BALANCER_RELAY_SIDE_V4, BALANCER_VIRTUAL_V4, OUTER_INTERFACE, TURN_PORT,
};
use crate::config::Placement;
use crate::netns::Netns;

/// The bridge in the balancer namespace that joins the relays.
const BRIDGE: &str = "relays";

/// The namespaces. Field order is drop order.
pub struct Balanced {
    pub client: Netns,
    pub peer: Netns,
    pub relays: Vec<Netns>,
    pub balancer: Netns,
}

impl Balanced {
    /// `relays` relays (2 or 3) behind the balancer.
    pub fn new(relays: usize) -> Result<Balanced> {
        let topology = Balanced {
            client: Netns::create("lb-client")?,
            peer: Netns::create("lb-peer")?,
            relays: (0..relays)
                .map(|index| Netns::create(&format!("lb-relay{index}")))
                .collect::<Result<_>>()?,
            balancer: Netns::create("balancer")?,
        };
        topology.wire().context("wiring the balanced topology")?;
        topology
            .balance()
            .context("installing the nftables balancer")?;
        Ok(topology)
    }

    /// The address clients are given.
    pub fn virtual_server() -> SocketAddr {
        SocketAddr::new(BALANCER_VIRTUAL_V4.into(), TURN_PORT)
    }

    /// Relay `index`'s own TURN address (what ALTERNATE-SERVER names).
    pub fn relay_server(index: usize) -> SocketAddr {
        SocketAddr::new(balanced_relay_v4(index).into(), TURN_PORT)
    }

    /// Where relay `index` listens and relays (XDP, when on, on its one interface).
    pub fn placement(index: usize) -> Placement {
        Placement {
            listen: Balanced::relay_server(index),
            relay: balanced_relay_v4(index).into(),
            interfaces: vec![OUTER_INTERFACE],
        }
    }

    /// The peer's address.
    pub fn peer_address() -> IpAddr {
        BALANCED_PEER_V4.into()
    }

    fn wire(&self) -> Result<()> {
        let balancer = &self.balancer;
        for (outer, balancer_side, outer_address, balancer_address) in [
            (
                &self.client,
                "to-client",
                BALANCED_CLIENT_V4,
                BALANCER_CLIENT_SIDE_V4,
            ),
            (
                &self.peer,
                "to-peer",
                BALANCED_PEER_V4,
                BALANCER_PEER_SIDE_V4,
            ),
        ] {
            link(outer, balancer, balancer_side)?;
            outer.ip(&[
                "addr",
                "add",
                &format!("{outer_address}/24"),
                "dev",
                OUTER_INTERFACE,
            ])?;
            balancer.ip(&[
                "addr",
                "add",
                &format!("{balancer_address}/24"),
                "dev",
                balancer_side,
            ])?;
            outer.ip(&["link", "set", OUTER_INTERFACE, "up"])?;
            balancer.ip(&["link", "set", balancer_side, "up"])?;
            outer.default_route_via(balancer_address.into())?;
        }
        balancer.ip(&[
            "addr",
            "add",
            &format!("{BALANCER_VIRTUAL_V4}/32"),
            "dev",
            "to-client",
        ])?;
        balancer.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        balancer.ip(&[
            "addr",
            "add",
            &format!("{BALANCER_RELAY_SIDE_V4}/24"),
            "dev",
            BRIDGE,
        ])?;
        balancer.ip(&["link", "set", BRIDGE, "up"])?;
        for (index, relay) in self.relays.iter().enumerate() {
            let port = format!("relay{index}");
            link(relay, balancer, &port)?;
            balancer.ip(&["link", "set", &port, "master", BRIDGE])?;
            balancer.ip(&["link", "set", &port, "up"])?;
            let address: Ipv4Addr = balanced_relay_v4(index);
            relay.ip(&[
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                OUTER_INTERFACE,
            ])?;
            relay.ip(&["link", "set", OUTER_INTERFACE, "up"])?;
            relay.default_route_via(BALANCER_RELAY_SIDE_V4.into())?;
            // Same-host veth senders leave partial UDP checksums otherwise.
            relay.run("ethtool", &["-K", OUTER_INTERFACE, "tx", "off"])?;
        }
        for outer in [&self.client, &self.peer] {
            outer.run("ethtool", &["-K", OUTER_INTERFACE, "tx", "off"])?;
        }
        balancer.sysctl(&["net.ipv4.conf.all.forwarding=1"])
    }

    /// DNAT of the virtual address's port 3478 (UDP and TCP) over the relays.
    fn balance(&self) -> Result<()> {
        let relays: Vec<String> = (0..self.relays.len())
            .map(|index| format!("{index} : {}", balanced_relay_v4(index)))
            .collect();
        let map = relays.join(", ");
        let count = self.relays.len();
        let rules = format!(
            "table ip turn_balancer {{\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tip daddr {BALANCER_VIRTUAL_V4} udp dport {TURN_PORT} dnat to jhash ip saddr . udp sport . ip daddr . udp dport mod {count} map {{ {map} }}\n\
             \t\tip daddr {BALANCER_VIRTUAL_V4} tcp dport {TURN_PORT} dnat to jhash ip saddr . tcp sport . ip daddr . tcp dport mod {count} map {{ {map} }}\n\
             \t}}\n\
             }}\n"
        );
        let file = std::env::temp_dir().join(format!("{}.nft", self.balancer.name()));
        std::fs::write(&file, rules).context("writing the nftables rules")?;
        let loaded = self.balancer.run("nft", &["-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        loaded.map(drop)
    }
}

/// A veth pair: `eth0` in `outer`, `balancer_side` in the balancer namespace.
fn link(outer: &Netns, balancer: &Netns, balancer_side: &str) -> Result<()> {
    outer.ip(&[
        "link",
        "add",
        OUTER_INTERFACE,
        "type",
        "veth",
        "peer",
        "name",
        balancer_side,
        "netns",
        balancer.name(),
    ])?;
    Ok(())
}
