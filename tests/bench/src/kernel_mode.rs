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
//! The per-core comparison ([`crate::per_core`]) runs its XDP-frame rows and the
//! kernel-speed table (highest rate relayed with ≤ 0.1 % loss on one pinned core) with it.

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
        let outcome = generate(injector, &topology.client, &frames, rate, self.plan.step)?;
        std::thread::sleep(crate::bench::DRAIN);
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
        Ok(StepResult::from_parts(
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
        ))
    }
}
