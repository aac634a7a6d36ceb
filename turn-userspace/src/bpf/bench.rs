//! Timing of the XDP program per relay path with BPF_PROG_TEST_RUN, next to a
//! pass-only program as baseline: for the bench harness (needs root).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::testbed::{
    Ingress, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, CLIENT_V4, CLIENT_V6, LISTENER_V4, LISTENER_V6,
    PEER_MAC, PEER_SIDE_MAC, PEER_V4, PEER_V6, RELAYED_V4, RELAYED_V6,
};
use crate::datapath::{AllocationEntry, ChannelEntry, ClientFlow, Datapath as _, PermissionEntry};

const CHANNEL: u16 = 0x4000;
const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const CLIENT_PORT: u16 = 40_000;
const CHANNEL_PEER_PORT: u16 = 7000;
/// A port of the peer without a channel: its datagrams become Data indications.
const OTHER_PEER_PORT: u16 = 7001;
/// The most single runs per path.
pub const MAX_RUNS: u32 = 50_000;
/// Application payload of every timed frame (a typical audio frame).
const DATA_LEN: usize = 160;

/// Median ns per packet for each path (and the pass-only baseline), over `repeat` runs
/// each (see [`Testbed::time`]: the baseline is mostly the kernel's timing overhead, so
/// subtract it for the program's own cost). Names: `baseline_pass`, `pass_unknown_flow`, `drop_no_permission`, and
/// `<path>_v4` / `<path>_v6` for the four relay paths.
///
/// Each run is one BPF_PROG_TEST_RUN syscall (see [`Testbed::time`]), so `repeat` is
/// capped at [`MAX_RUNS`]: the median is stable long before that.
pub fn time_paths(repeat: u32) -> anyhow::Result<Vec<(String, f64)>> {
    let repeat = repeat.min(MAX_RUNS);
    let testbed = Testbed::new(16)?;
    let mut datapath = testbed.datapath()?;
    let expires_at = Instant::now() + Duration::from_secs(3600);
    let mut frames: Vec<(String, Vec<u8>, Ingress)> = Vec::new();
    for (suffix, listener_ip, relay_ip, client_ip, peer_ip) in [
        (
            "v4",
            IpAddr::V4(LISTENER_V4),
            IpAddr::V4(RELAYED_V4),
            IpAddr::V4(CLIENT_V4),
            IpAddr::V4(PEER_V4),
        ),
        (
            "v6",
            IpAddr::V6(LISTENER_V6),
            IpAddr::V6(RELAYED_V6),
            IpAddr::V6(CLIENT_V6),
            IpAddr::V6(PEER_V6),
        ),
    ] {
        let flow = ClientFlow {
            client: SocketAddr::new(client_ip, CLIENT_PORT),
            listener: SocketAddr::new(listener_ip, LISTENER_PORT),
        };
        let relay = SocketAddr::new(relay_ip, RELAY_PORT);
        let peer = SocketAddr::new(peer_ip, CHANNEL_PEER_PORT);
        let other_peer = SocketAddr::new(peer_ip, OTHER_PEER_PORT);
        datapath.install_allocation(AllocationEntry {
            flow,
            relay,
            expires_at,
        })?;
        datapath.install_permission(PermissionEntry {
            flow,
            relay,
            peer_ip,
            expires_at,
        })?;
        datapath.install_channel(ChannelEntry {
            flow,
            relay,
            peer,
            number: CHANNEL,
            expires_at,
        })?;
        let data = [0x5Au8; DATA_LEN];
        let mut channel_data = Vec::with_capacity(4 + DATA_LEN);
        channel_data.extend_from_slice(&CHANNEL.to_be_bytes());
        channel_data.extend_from_slice(&(DATA_LEN as u16).to_be_bytes());
        channel_data.extend_from_slice(&data);
        let to_listener = |payload: &[u8]| {
            udp_frame(
                CLIENT_MAC,
                CLIENT_SIDE_MAC,
                flow.client,
                flow.listener,
                payload,
            )
        };
        frames.push((
            format!("channel_data_to_peer_{suffix}"),
            to_listener(&channel_data),
            Ingress::ClientSide,
        ));
        frames.push((
            format!("send_to_peer_{suffix}"),
            to_listener(&send_indication(peer, &data)),
            Ingress::ClientSide,
        ));
        frames.push((
            format!("channel_data_to_client_{suffix}"),
            udp_frame(PEER_MAC, PEER_SIDE_MAC, peer, relay, &data),
            Ingress::PeerSide,
        ));
        frames.push((
            format!("data_indication_to_client_{suffix}"),
            udp_frame(PEER_MAC, PEER_SIDE_MAC, other_peer, relay, &data),
            Ingress::PeerSide,
        ));
        if suffix == "v4" {
            let stranger = SocketAddr::new(IpAddr::V4(CLIENT_V4), 9);
            frames.push((
                "drop_no_permission".into(),
                udp_frame(PEER_MAC, PEER_SIDE_MAC, stranger, relay, &data),
                Ingress::PeerSide,
            ));
            frames.push((
                "pass_unknown_flow".into(),
                udp_frame(
                    CLIENT_MAC,
                    CLIENT_SIDE_MAC,
                    flow.client,
                    SocketAddr::new(listener_ip, 53),
                    &data,
                ),
                Ingress::ClientSide,
            ));
        }
    }
    let mut timings = Vec::with_capacity(frames.len() + 1);
    let (_, first_frame, _) = frames.first().ok_or_else(|| anyhow::anyhow!("no frames"))?;
    timings.push((
        "baseline_pass".to_string(),
        testbed.time(first_frame, Ingress::ClientSide, repeat, true)?,
    ));
    for (name, frame, ingress) in &frames {
        timings.push((name.clone(), testbed.time(frame, *ingress, repeat, false)?));
    }
    Ok(timings)
}

/// A Send indication (RFC 8656 §11.2) to `peer` carrying `data`.
fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    let transaction_id = [7u8; 12];
    let mut attributes = Vec::new();
    let port = peer.port() ^ 0x2112;
    let (family, address): (u8, Vec<u8>) = match peer.ip() {
        IpAddr::V4(v4) => (
            1,
            v4.octets().iter().zip(COOKIE).map(|(a, k)| a ^ k).collect(),
        ),
        IpAddr::V6(v6) => {
            let key: Vec<u8> = COOKIE
                .iter()
                .chain(transaction_id.iter())
                .copied()
                .collect();
            (2, v6.octets().iter().zip(key).map(|(a, k)| a ^ k).collect())
        }
    };
    attributes.extend_from_slice(&0x0012u16.to_be_bytes());
    attributes.extend_from_slice(&((4 + address.len()) as u16).to_be_bytes());
    attributes.extend_from_slice(&[0, family]);
    attributes.extend_from_slice(&port.to_be_bytes());
    attributes.extend_from_slice(&address);
    attributes.extend_from_slice(&0x0013u16.to_be_bytes());
    attributes.extend_from_slice(&(data.len() as u16).to_be_bytes());
    attributes.extend_from_slice(data);
    attributes.resize(attributes.len().next_multiple_of(4), 0);
    let mut message = Vec::with_capacity(20 + attributes.len());
    message.extend_from_slice(&0x0016u16.to_be_bytes());
    message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    message.extend_from_slice(&COOKIE);
    message.extend_from_slice(&transaction_id);
    message.extend_from_slice(&attributes);
    message
}

/// An Ethernet frame carrying a UDP datagram with a correct checksum.
fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut frame = Vec::with_capacity(14 + 40 + udp_len);
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    let mut pseudo = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let checksum = internet_checksum(&ip);
            ip[10..12].copy_from_slice(&checksum.to_be_bytes());
            frame.extend_from_slice(&ip);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        }
        (s, d) => {
            let (s, d) = (to_v6(s), to_v6(d));
            frame.extend_from_slice(&[0x86, 0xDD]);
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
            frame.extend_from_slice(&[17, 64]);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
    }
    pseudo.extend_from_slice(&udp);
    let checksum = match internet_checksum(&pseudo) {
        0 => 0xFFFF,
        other => other,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&udp);
    frame
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// RFC 1071 over `bytes` (odd length zero-padded).
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|chunk| {
            u64::from(u16::from_be_bytes([
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}
