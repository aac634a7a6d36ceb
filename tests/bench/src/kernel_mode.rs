//! Kernel-speed mode: pre-built ChannelData frames written straight onto the client's veth
//! with an AF_PACKET socket (PACKET_QDISC_BYPASS, sendmmsg), so the client's own UDP stack
//! is not the bottleneck and an XDP relay can be driven to its own limit. Relayed packets
//! are counted from the peer-side veth's rx_packets while an XDP program there drops them,
//! so the peer's UDP stack is not the limit either.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use turn_testkit::addresses::{listener, OUTER_INTERFACE, RELAY_CLIENT_SIDE_INTERFACE};
use turn_testkit::frames::{Ip, UdpChecksum, UdpFrame};
use turn_testkit::mmsg::{self, BATCH};
use turn_testkit::netns::Namespace;
use turn_testkit::stun_client::channel_data;
use turn_testkit::testbed::ifindex;
use turn_testkit::xdp::StubAction;

use crate::control::Flow;
use crate::cpu::{CpuCost, CpuSnapshot};
use crate::load::{monotonic_ns, PROBE_LEN};
use crate::Lab;

const PACKET_QDISC_BYPASS: libc::c_int = 20;

#[derive(Clone, Debug, Serialize)]
pub struct KernelModeResult {
    pub payload_len: usize,
    pub flows: usize,
    /// AF_PACKET sender threads (one per CPU).
    pub senders: usize,
    pub offered_pps: f64,
    /// From the peer-side veth's rx_packets (its XDP program drops them).
    pub relayed_pps: f64,
    pub cpu: Option<CpuCost>,
}

/// Builds Ethernet/UDP/ChannelData frames, one per flow (RFC 8656 §12.4 framing).
fn build_frames(
    flows: &[Flow],
    (source_mac, destination_mac): ([u8; 6], [u8; 6]),
    server: SocketAddr,
    payload_len: usize,
    step: u32,
) -> Vec<Vec<u8>> {
    flows
        .iter()
        .enumerate()
        .map(|(index, flow)| {
            let mut udp_payload = channel_data(flow.channel, &vec![0xA5; payload_len]);
            let probe = &mut udp_payload[4..4 + PROBE_LEN];
            probe[0..4].copy_from_slice(&step.to_le_bytes());
            probe[4..8].copy_from_slice(&(index as u32).to_le_bytes());
            probe[16..24].copy_from_slice(&monotonic_ns().to_le_bytes());
            UdpFrame {
                src_mac: source_mac,
                dst_mac: destination_mac,
                ip: Ip::new(flow.local.ip(), server.ip()),
                src_port: flow.local.port(),
                dst_port: server.port(),
                payload: &udp_payload,
                checksum: UdpChecksum::Compute,
            }
            .build()
        })
        .collect()
}

fn packet_socket(client: &Namespace) -> Result<OwnedFd> {
    client.run_inside(|| {
        // SAFETY: plain socket creation; protocol 0 = transmit only, no frames are received.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned here.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let ifindex = ifindex(OUTER_INTERFACE)?;
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        address.sll_ifindex = ifindex as i32;
        // SAFETY: address is a live sockaddr_ll of the stated size.
        if unsafe {
            libc::bind(
                fd,
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        } != 0
        {
            bail!(
                "binding the AF_PACKET socket to {OUTER_INTERFACE}: {}",
                std::io::Error::last_os_error()
            );
        }
        let one: libc::c_int = 1;
        // SAFETY: pointer to a live c_int.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
        crate::control::enlarge_buffers(&socket);
        Ok(socket)
    })
}

/// Offers pre-built ChannelData frames as fast as AF_PACKET allows for `duration`, with
/// the peer-side veth end dropping them in XDP (counted by its rx_packets), so neither the
/// client's nor the peer's UDP stack limits the relay.
pub fn run(
    lab: &mut Lab,
    flows: &[Flow],
    payload_len: usize,
    duration: Duration,
    step: u32,
    relay_pid: u32,
) -> Result<KernelModeResult> {
    lab.set_peer_side(StubAction::Drop)?;
    let result = offer(lab, flows, payload_len, duration, step, relay_pid);
    lab.set_peer_side(StubAction::Pass)?;
    result
}

fn offer(
    lab: &Lab,
    flows: &[Flow],
    payload_len: usize,
    duration: Duration,
    step: u32,
    relay_pid: u32,
) -> Result<KernelModeResult> {
    if flows.iter().any(|flow| !flow.local.is_ipv4()) {
        bail!("kernel-speed mode is IPv4 only");
    }
    let topology = &lab.topology;
    let destination = topology.relay.mac_address(RELAY_CLIENT_SIDE_INTERFACE)?;
    let source = topology.client.mac_address(OUTER_INTERFACE)?;
    let frames = build_frames(flows, (source, destination), listener(4), payload_len, step);
    // One sender per CPU, each with its own socket: a veth processes what it receives on the
    // sending CPU, so one sender would confine the relay to one CPU.
    let senders = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sockets: Vec<OwnedFd> = (0..senders)
        .map(|_| packet_socket(&topology.client))
        .collect::<Result<_>>()
        .context("kernel-speed mode")?;
    let rx_before = topology.peer.rx_packets(OUTER_INTERFACE)?;
    let cpu_before = CpuSnapshot::take(relay_pid)?;
    let start = Instant::now();
    let sent: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter()
            .map(|socket| {
                let frames = frames.clone();
                scope.spawn(move || send_frames(socket, frames, duration))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| handle.join().ok())
            .sum()
    });
    let seconds = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let rx_after = topology.peer.rx_packets(OUTER_INTERFACE)?;
    let relayed = rx_after.saturating_sub(rx_before);
    let cpu = CpuSnapshot::take(relay_pid)?.cost_since(&cpu_before, relayed);
    Ok(KernelModeResult {
        payload_len,
        flows: flows.len(),
        senders,
        offered_pps: sent as f64 / seconds,
        relayed_pps: relayed as f64 / seconds,
        cpu: Some(cpu),
    })
}

/// sendmmsg of the frames round-robin on one AF_PACKET socket for `duration`; returns the
/// number of frames the kernel accepted. The batch's headers are built once.
fn send_frames(socket: &OwnedFd, frames: Vec<Vec<u8>>, duration: Duration) -> u64 {
    if frames.is_empty() {
        return 0;
    }
    let mut batch: Vec<Vec<u8>> = frames.iter().cycle().take(BATCH).cloned().collect();
    let mut iovecs = mmsg::iovecs(&mut batch, &[]);
    let mut headers = mmsg::headers(&mut iovecs, None);
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration && !crate::interrupted() {
        // SAFETY: headers → iovecs → batch, all alive for the call.
        sent += unsafe { mmsg::send(socket.as_raw_fd(), &mut headers) } as u64;
    }
    sent
}
