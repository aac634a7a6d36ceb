//! Kernel-speed mode: prebuilt ChannelData and Send-indication frames injected into the
//! client's veth end at kernel speed by the live-frames generator
//! ([`turn_testkit::xdp::FrameInjector`]: BPF_PROG_TEST_RUN with
//! `BPF_F_TEST_XDP_LIVE_FRAMES` and an XDP_TX program, as xdp-trafficgen does). The frames
//! reach the relay's veth end as XDP frames (no skb, no socket, no UDP stack on the client
//! side), so neither the client namespace nor the generator's system calls limit the relay.
//!
//! Relayed packets are counted where they arrive: the peer's veth end, whose XDP program
//! drops them ([`turn_testkit::xdp::StubAction::Drop`]) after the veth counted them in rx_packets, so the
//! peer's UDP stack is not the limit either. Loss = 1 − arrived at the peer / injected.
//!
//! Each step also reads the veth driver's XDP counters (`ethtool -S`) at the four ends of
//! the path ([`PathCounters`], logged per step) and tells where frames were lost: the
//! injector's XDP_TX is an ndo_xdp_xmit into the relay end's 256-frame ring, so the
//! client end's `tx_xdp_xmit` + `tx_xdp_xmit_errors` = frames injected, the errors being
//! frames the relay's NAPI kthread had not made room for (`relay_ring_full`); the relay
//! end's `rx_xdp_packets` vs `rx_xdp_redirect` shows what the relay's XDP program did
//! with them; the relay's peer-side end's `tx_xdp_xmit_errors` are frames the sink had no
//! room for ("sink full"), its `tx_xdp_xmit` = the peer end's rx_packets.
//!
//! The per-core comparison ([`crate::per_core`]) runs its XDP-frame rows and the
//! kernel-speed table (highest rate relayed with ≤ 0.1 % loss on one pinned core) with it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use turn_testkit::addresses::{
    listener, OUTER_INTERFACE, RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE,
};
use turn_testkit::frames::{Ip, UdpChecksum, UdpFrame};
use turn_testkit::netns::Namespace;
use turn_testkit::testbed::ifindex;
use turn_testkit::topology::Topology;
use turn_testkit::xdp::FrameInjector;

use crate::bench::Bench;
use crate::control::Flow;
use crate::load::{monotonic_ns, udp_drops, GeneratorOutcome, RelayMode, SinkReport, UdpDrops};
use crate::load::{StepResult, PROBE_LEN};

/// Ethernet/IP/UDP frames from the client to the relay's listener, one per flow, carrying
/// what the flow's client would send in `mode` (RFC 8656 §12.4 ChannelData or §11.2 Send
/// indication) with the probe header of `step`.
pub fn build_frames(
    topology: &Topology,
    flows: &[Flow],
    mode: RelayMode,
    payload_len: usize,
    step: u32,
) -> Result<Vec<Vec<u8>>> {
    ensure!(
        flows.iter().all(|flow| flow.local.is_ipv4()),
        "kernel-speed mode is IPv4 only"
    );
    let destination = topology.relay.mac_address(RELAY_CLIENT_SIDE_INTERFACE)?;
    let source = topology.client.mac_address(OUTER_INTERFACE)?;
    let server = listener(4);
    Ok(flows
        .iter()
        .enumerate()
        .map(|(index, flow)| {
            let (mut payload, offset) = crate::load::flow_template(flow, mode, payload_len);
            let probe = &mut payload[offset..offset + PROBE_LEN];
            probe[0..4].copy_from_slice(&step.to_le_bytes());
            probe[4..8].copy_from_slice(&(index as u32).to_le_bytes());
            probe[16..24].copy_from_slice(&monotonic_ns().to_le_bytes());
            UdpFrame {
                src_mac: source,
                dst_mac: destination,
                ip: Ip::new(flow.local.ip(), server.ip()),
                src_port: flow.local.port(),
                dst_port: server.port(),
                payload: &payload,
                checksum: UdpChecksum::Compute,
            }
            .build()
        })
        .collect())
}

/// Injects `frames` (one per flow) out of the client's veth end at `rate` pps in total
/// (None: as fast as possible) for `duration`, or until [`crate::interrupted`].
pub fn generate(
    injector: &mut FrameInjector,
    client: &Namespace,
    frames: &[Vec<u8>],
    rate: Option<f64>,
    duration: Duration,
) -> Result<GeneratorOutcome> {
    client.run_inside(|| {
        let ifindex = ifindex(OUTER_INTERFACE)?;
        let injected = injector.inject(ifindex, frames, rate, duration, crate::interrupted)?;
        Ok(GeneratorOutcome {
            sent: injected.sent,
            seconds: injected.seconds,
        })
    })
}

impl Bench {
    /// One bounded step of the live-frames generator on `flows` in `mode` at `rate` (None:
    /// as fast as possible): relayed = frames the peer's veth end received. The peer's end
    /// must be dropping ([`crate::bench::Lab::set_peer_side`]).
    pub fn measure_live(
        &mut self,
        injector: &mut FrameInjector,
        flows: &[Flow],
        mode: RelayMode,
        payload_len: usize,
        rate: Option<f64>,
    ) -> Result<StepResult> {
        self.next_step += 1;
        let topology = &self.lab.topology;
        let frames = build_frames(topology, flows, mode, payload_len, self.next_step)?;
        let relay_drops_before = udp_drops(&topology.relay)?;
        let arrived_before = topology.peer.rx_packets(OUTER_INTERFACE)?;
        let sink_full_before = topology.relay.tx_dropped(RELAY_PEER_SIDE_INTERFACE)?;
        let path_before = PathCounters::take(topology)?;
        let outcome = generate(injector, &topology.client, &frames, rate, self.plan.step)?;
        std::thread::sleep(crate::bench::DRAIN);
        let path = PathCounters::take(topology)?.since(&path_before);
        eprintln!(
            "turn-bench: live frames: injected {} {}",
            outcome.sent,
            path.describe()
        );
        let arrived = topology
            .peer
            .rx_packets(OUTER_INTERFACE)?
            .saturating_sub(arrived_before);
        let relay_drops = udp_drops(&topology.relay)?.since(&relay_drops_before);
        // Relayed frames the peer's veth end had no room for: its NAPI kthread shares
        // the load CPU with the generator. Loss all the same, shown apart.
        let sink_full = topology
            .relay
            .tx_dropped(RELAY_PEER_SIDE_INTERFACE)?
            .saturating_sub(sink_full_before);
        if crate::interrupted() {
            anyhow::bail!("interrupted");
        }
        let arrived = SinkReport {
            received: arrived,
            ..SinkReport::default()
        };
        let mut step = StepResult::from_parts(
            rate,
            &outcome,
            arrived,
            UdpDrops {
                receive_buffer: sink_full,
                checksum: 0,
            },
            relay_drops,
            None,
            None,
        );
        // The injector's frames that the relay's client-side end had no room for (XDP_TX
        // out of the client's end is an ndo_xdp_xmit into the relay end's ring).
        step.relay_ring_full = path.get(CLIENT_END, "tx_xdp_xmit_errors");
        Ok(step)
    }
}

/// The client's veth end in [`PathCounters`].
const CLIENT_END: &str = "client";

/// The veth driver's XDP counters (`ethtool -S`, queues summed) along the live frames'
/// path: client end → relay's client-side end → relay's peer-side end → peer end.
#[derive(Clone, Debug, Default)]
pub struct PathCounters {
    ends: [(&'static str, BTreeMap<String, u64>); 4],
}

impl PathCounters {
    pub fn take(topology: &Topology) -> Result<PathCounters> {
        let read = |namespace: &Namespace, interface: &str| -> Result<BTreeMap<String, u64>> {
            let mut summed = BTreeMap::new();
            for (name, value) in namespace.driver_counters(interface)? {
                if name == "peer_ifindex" {
                    continue;
                }
                *summed.entry(queue_summed(&name)).or_insert(0) += value;
            }
            Ok(summed)
        };
        Ok(PathCounters {
            ends: [
                (CLIENT_END, read(&topology.client, OUTER_INTERFACE)?),
                (
                    "relay/to-client",
                    read(&topology.relay, RELAY_CLIENT_SIDE_INTERFACE)?,
                ),
                (
                    "relay/to-peer",
                    read(&topology.relay, RELAY_PEER_SIDE_INTERFACE)?,
                ),
                ("peer", read(&topology.peer, OUTER_INTERFACE)?),
            ],
        })
    }

    /// The counts since `before`.
    pub fn since(&self, before: &PathCounters) -> PathCounters {
        let mut delta = self.clone();
        for ((_, now), (_, then)) in delta.ends.iter_mut().zip(&before.ends) {
            for (name, value) in now.iter_mut() {
                *value = value.saturating_sub(then.get(name).copied().unwrap_or(0));
            }
        }
        delta
    }

    /// Counter `name` (queues summed, e.g. `rx_xdp_packets`) of end `end`.
    pub fn get(&self, end: &str, name: &str) -> u64 {
        self.ends
            .iter()
            .find(|(label, _)| *label == end)
            .and_then(|(_, counters)| counters.get(name).copied())
            .unwrap_or(0)
    }

    /// The non-zero counters, end by end.
    pub fn describe(&self) -> String {
        self.ends
            .iter()
            .map(|(label, counters)| {
                let nonzero: Vec<String> = counters
                    .iter()
                    .filter(|(_, &value)| value != 0)
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                format!("[{label}: {}]", nonzero.join(" "))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `rx_queue_3_xdp_packets` → `rx_xdp_packets` (any other name unchanged).
fn queue_summed(name: &str) -> String {
    for direction in ["rx", "tx"] {
        if let Some(rest) = name.strip_prefix(&format!("{direction}_queue_")) {
            if let Some((_, counter)) = rest.split_once('_') {
                return format!("{direction}_{counter}");
            }
        }
    }
    name.to_owned()
}
