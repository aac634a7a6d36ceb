//! Timing of the XDP program per relay path with BPF_PROG_TEST_RUN, next to a
//! pass-only program as baseline: for the bench harness (needs root).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::testbed::{
    Ingress, Testbed, CLIENT_MAC, CLIENT_SIDE_MAC, CLIENT_V4, CLIENT_V6, LISTENER_V4, LISTENER_V6,
    PEER_MAC, PEER_SIDE_MAC, PEER_V4, PEER_V6, RELAYED_V4, RELAYED_V6,
};
use super::Outcome;
use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath as _, PermissionEntry,
};

const CHANNEL: u16 = 0x4000;
const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const CLIENT_PORT: u16 = 40_000;
const CHANNEL_PEER_PORT: u16 = 7000;
/// A port of the peer without a channel: its datagrams become Data indications.
const OTHER_PEER_PORT: u16 = 7001;
/// The most single runs per path.
pub const MAX_RUNS: u32 = 50_000;
/// Repetitions of the frames timed with [`Testbed::time_repeated`].
pub const REPEAT: u32 = 100_000;
/// Application payload of every timed frame (a typical audio frame).
const DATA_LEN: usize = 160;

/// ns per packet of `turn_xdp` for each path next to the pass-only program `xdp_pass`,
/// as BPF_PROG_TEST_RUN times them. Names: `baseline_pass`, `<path>_v4` / `<path>_v6`
/// for the relay paths (`send_fingerprint_to_peer_*`: a Send indication with
/// FINGERPRINT, whose CRC-32 the program verifies), `pass_unknown_flow` and
/// `drop_no_permission`: the median of up to [`MAX_RUNS`] single runs each
/// ([`Testbed::time`]), which includes the kernel's per-run timer overhead, so subtract
/// `baseline_pass` for the program's own cost. `baseline_pass_repeated`,
/// `pass_unknown_flow_repeated`, `drop_no_permission_repeated` and, per family,
/// `send_bad_fingerprint_*_repeated` / `send_fingerprint_no_permission_*_repeated`: the
/// mean over one run repeated [`REPEAT`] times ([`Testbed::time_repeated`]; timer
/// overhead amortised), possible only for frames the program does not rewrite; it
/// cross-checks the subtraction, and the last two differ only by the FINGERPRINT check
/// (CRC-32 over the 196/208-byte message), so their difference is its cost. Err if a
/// repeated frame was not counted under its expected outcome every time.
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
            format!("send_fingerprint_to_peer_{suffix}"),
            to_listener(&with_fingerprint(send_indication(peer, &data))),
            Ingress::ClientSide,
        ));
        // Frames the program leaves unchanged, repeatable: the difference between them
        // is the FINGERPRINT check (both have FINGERPRINT; only the first reaches it).
        let mut bad_fingerprint = with_fingerprint(send_indication(peer, &data));
        if let Some(last) = bad_fingerprint.last_mut() {
            *last ^= 1;
        }
        frames.push((
            format!("send_bad_fingerprint_{suffix}"),
            to_listener(&bad_fingerprint),
            Ingress::ClientSide,
        ));
        let unpermitted_peer = SocketAddr::new(other_peer_ip(peer_ip), CHANNEL_PEER_PORT);
        frames.push((
            format!("send_fingerprint_no_permission_{suffix}"),
            to_listener(&with_fingerprint(send_indication(unpermitted_peer, &data))),
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
            // RTP-like (first bits 0b10): neither ChannelData nor STUN.
            frames.push((
                "pass_unknown_flow".into(),
                udp_frame(
                    CLIENT_MAC,
                    CLIENT_SIDE_MAC,
                    flow.client,
                    SocketAddr::new(listener_ip, 53),
                    &[0x80; DATA_LEN],
                ),
                Ingress::ClientSide,
            ));
        }
    }
    let mut timings = Vec::with_capacity(frames.len() + 4);
    let (_, first_frame, _) = frames.first().ok_or_else(|| anyhow::anyhow!("no frames"))?;
    timings.push((
        "baseline_pass".to_string(),
        testbed.time(first_frame, Ingress::ClientSide, repeat, true)?,
    ));
    for (name, frame, ingress) in &frames {
        timings.push((name.clone(), testbed.time(frame, *ingress, repeat, false)?));
    }
    timings.push((
        "baseline_pass_repeated".to_string(),
        testbed
            .time_repeated(first_frame, Ingress::ClientSide, REPEAT, true)?
            .ns_per_packet,
    ));
    for (name, outcome) in [
        ("pass_unknown_flow", Outcome::PassUnknownFlow),
        ("drop_no_permission", Outcome::DropNoPermission),
        ("send_bad_fingerprint_v4", Outcome::PassBadFingerprint),
        (
            "send_fingerprint_no_permission_v4",
            Outcome::PassNoPermission,
        ),
        ("send_bad_fingerprint_v6", Outcome::PassBadFingerprint),
        (
            "send_fingerprint_no_permission_v6",
            Outcome::PassNoPermission,
        ),
    ] {
        let (_, frame, ingress) = frames
            .iter()
            .find(|(frame_name, _, _)| frame_name == name)
            .ok_or_else(|| anyhow::anyhow!("no frame {name}"))?;
        let timing = testbed.time_repeated(frame, *ingress, REPEAT, false)?;
        if timing.counted != [(outcome, u64::from(REPEAT))] {
            anyhow::bail!(
                "{name} repeated {REPEAT} times was counted as {:?}",
                timing.counted
            );
        }
        timings.push((format!("{name}_repeated"), timing.ns_per_packet));
    }
    Ok(timings)
}

/// Another address in `ip`'s subnet, without a permission.
fn other_peer_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddr::V4([a, b, c, d.wrapping_add(1)].into())
        }
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) + 1).into()),
    }
}

/// `message` with FINGERPRINT appended (RFC 8489 §14.7).
fn with_fingerprint(mut message: Vec<u8>) -> Vec<u8> {
    const FINGERPRINT_XOR: u32 = 0x5354_554E;
    let length = message.len() - 20 + 8;
    message[2..4].copy_from_slice(&(length as u16).to_be_bytes());
    let crc = crc32fast::hash(&message) ^ FINGERPRINT_XOR;
    message.extend_from_slice(&0x8028u16.to_be_bytes());
    message.extend_from_slice(&4u16.to_be_bytes());
    message.extend_from_slice(&crc.to_be_bytes());
    message
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
