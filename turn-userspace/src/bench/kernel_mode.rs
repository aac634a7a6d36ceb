//! Kernel-speed mode: pre-built ChannelData frames written straight onto the client's veth
//! with an AF_PACKET socket (PACKET_QDISC_BYPASS, sendmmsg), so the client's own UDP stack
//! is not the bottleneck and an XDP relay can be driven to its own limit. Relayed packets
//! are counted from the peer-side veth's rx_packets while an XDP program there drops them,
//! so the peer's UDP stack is not the limit either.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::control::Flow;
use super::load::{mmsg_headers, monotonic_ns, PROBE_LEN};
use super::netns::{in_netns, Topology, XdpAction};
use super::wire;

const BATCH: usize = 64;
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
    pub cpu: Option<super::cpu::CpuCost>,
}

/// Builds Ethernet/IPv4/UDP/ChannelData frames, one per flow (RFC 8656 §12.4 framing).
fn build_frames(
    flows: &[Flow],
    destination_mac: [u8; 6],
    source_mac: [u8; 6],
    server: std::net::SocketAddrV4,
    payload_len: usize,
    step: u32,
) -> Vec<Vec<u8>> {
    flows
        .iter()
        .enumerate()
        .map(|(index, flow)| {
            let mut udp_payload = wire::channel_data(flow.channel, payload_len, 0xA5);
            let probe = &mut udp_payload[4..4 + PROBE_LEN];
            probe[0..4].copy_from_slice(&step.to_le_bytes());
            probe[4..8].copy_from_slice(&(index as u32).to_le_bytes());
            probe[16..24].copy_from_slice(&monotonic_ns().to_le_bytes());
            let udp_len = 8 + udp_payload.len();
            let ip_len = 20 + udp_len;
            let mut frame = Vec::with_capacity(14 + ip_len);
            frame.extend_from_slice(&destination_mac);
            frame.extend_from_slice(&source_mac);
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip_header = [0u8; 20];
            ip_header[0] = 0x45;
            ip_header[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            ip_header[6] = 0x40; // don't fragment
            ip_header[8] = 64;
            ip_header[9] = 17;
            let local_ip = match flow.local.ip() {
                std::net::IpAddr::V4(v4) => v4,
                std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
            };
            ip_header[12..16].copy_from_slice(&local_ip.octets());
            ip_header[16..20].copy_from_slice(&server.ip().octets());
            let checksum = internet_checksum(&ip_header);
            ip_header[10..12].copy_from_slice(&checksum.to_be_bytes());
            frame.extend_from_slice(&ip_header);
            let mut udp = Vec::with_capacity(udp_len);
            udp.extend_from_slice(&flow.local.port().to_be_bytes());
            udp.extend_from_slice(&server.port().to_be_bytes());
            udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
            udp.extend_from_slice(&[0, 0]);
            udp.extend_from_slice(&udp_payload);
            // RFC 768: checksum over the pseudo-header (addresses, protocol, length) and datagram.
            let mut summed = Vec::with_capacity(12 + udp.len());
            summed.extend_from_slice(&ip_header[12..20]);
            summed.extend_from_slice(&[0, 17]);
            summed.extend_from_slice(&(udp_len as u16).to_be_bytes());
            summed.extend_from_slice(&udp);
            let checksum = match internet_checksum(&summed) {
                0 => 0xFFFF,
                sum => sum,
            };
            udp[6..8].copy_from_slice(&checksum.to_be_bytes());
            frame.extend_from_slice(&udp);
            frame
        })
        .collect()
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn packet_socket(topology: &Topology) -> Result<OwnedFd> {
    let ifname = topology.client_if.clone();
    in_netns(&topology.client_ns, move || {
        // SAFETY: plain socket creation; protocol 0 = transmit only, no frames are received.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned here.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let c_name = std::ffi::CString::new(ifname.as_str())?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
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
                "binding the AF_PACKET socket to {ifname}: {}",
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
        super::control::enlarge_buffers(&socket);
        Ok(socket)
    })
}

/// Offers pre-built ChannelData frames as fast as AF_PACKET allows for `duration`, with
/// the peer-side veth end dropping them in XDP (counted by its rx_packets), so neither the
/// client's nor the peer's UDP stack limits the relay.
pub fn run(
    topology: &mut Topology,
    flows: &[Flow],
    payload_len: usize,
    duration: Duration,
    step: u32,
    relay_pid: u32,
) -> Result<KernelModeResult> {
    topology.set_peer_side_program(XdpAction::Drop)?;
    let result = offer(topology, flows, payload_len, duration, step, relay_pid);
    topology.set_peer_side_program(XdpAction::Pass)?;
    result
}

fn offer(
    topology: &Topology,
    flows: &[Flow],
    payload_len: usize,
    duration: Duration,
    step: u32,
    relay_pid: u32,
) -> Result<KernelModeResult> {
    if flows.iter().any(|flow| !flow.local.is_ipv4()) {
        bail!("kernel-speed mode is IPv4 only");
    }
    let destination = topology.mac_address(&topology.relay_ns, &topology.relay_client_if)?;
    let source = topology.mac_address(&topology.client_ns, &topology.client_if)?;
    let frames = build_frames(
        flows,
        destination,
        source,
        std::net::SocketAddrV4::new(
            super::netns::RELAY_CLIENT_SIDE_IP,
            super::servers::LISTEN_PORT,
        ),
        payload_len,
        step,
    );
    // One sender per CPU, each with its own socket: a veth processes what it receives on the
    // sending CPU, so one sender would confine the relay to one CPU.
    let senders = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sockets: Vec<OwnedFd> = (0..senders)
        .map(|_| packet_socket(topology))
        .collect::<Result<_>>()
        .context("kernel-speed mode")?;
    let rx_before = topology.rx_packets(&topology.peer_ns, &topology.peer_if)?;
    let cpu_before = super::cpu::CpuSnapshot::take(relay_pid)?;
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
    let rx_after = topology.rx_packets(&topology.peer_ns, &topology.peer_if)?;
    let relayed = rx_after.saturating_sub(rx_before);
    let cpu = super::cpu::CpuSnapshot::take(relay_pid)?.cost_since(&cpu_before, relayed);
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
/// number of frames the kernel accepted.
fn send_frames(socket: &OwnedFd, mut frames: Vec<Vec<u8>>, duration: Duration) -> u64 {
    let count = frames.len().max(1);
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        let Some(frame) = frames.get_mut(i % count) else {
            return 0;
        };
        iovecs.push(libc::iovec {
            iov_base: frame.as_mut_ptr().cast(),
            iov_len: frame.len(),
        });
    }
    let mut headers = mmsg_headers(&mut iovecs);
    let mut sent = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration && !super::interrupted() {
        // SAFETY: headers → iovecs → frames, all alive for the call.
        let result = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
            )
        };
        sent += u64::try_from(result).unwrap_or(0);
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::internet_checksum;

    #[test]
    fn ipv4_header_checksum_matches_a_known_header() {
        // 45 00 00 73 00 00 40 00 40 11 [b8 61] c0 a8 00 01 c0 a8 00 c7
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&header), 0xb861);
    }
}
