//! Timing of the XDP program per relay path with BPF_PROG_TEST_RUN, next to a
//! pass-only program as baseline (needs root).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use turn_relay::bpf::Outcome;
use turn_relay::protocol::datapath::ClientFlow;
use turn_testkit::addresses::{
    CLIENT_V4, CLIENT_V6, PEER_V4, PEER_V6, RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_RELAYED_V4,
    RELAY_RELAYED_V6,
};
use turn_testkit::fast_path::FastPath;
use turn_testkit::frames::{Ip, UdpChecksum, UdpFrame};
use turn_testkit::stun_client::{channel_data, send_indication};
use turn_testkit::testbed::{
    Ingress, Testbed, Timed, CLIENT_MAC, CLIENT_SIDE_MAC, PEER_MAC, PEER_SIDE_MAC,
};

const CHANNEL: u16 = 0x4000;
/// The transaction id of the timed Send indications.
const TRANSACTION: [u8; 12] = [7; 12];
const LISTENER_PORT: u16 = 3478;
const RELAY_PORT: u16 = 50_000;
const CLIENT_PORT: u16 = 40_000;
const CHANNEL_PEER_PORT: u16 = 7000;
/// A port of the peer without a channel: its datagrams become Data indications.
const OTHER_PEER_PORT: u16 = 7001;
/// The most single runs per path (over all loads).
pub const MAX_RUNS: u32 = 50_000;
/// Loads of the program each figure of [`time_paths`] is the median over. A path's
/// single-run median stays within ±20 ns over the rounds of one load, but differs by up
/// to 100 ns between loads of the same build, in two clusters (for IPv4 ChannelData →
/// peer about 250 and 330 ns on this machine); one load gives either.
pub const LOADS: usize = 5;
/// Repetitions of the frames timed with [`Testbed::time_repeated`].
pub const REPEAT: u32 = 100_000;
/// Application payload of every timed frame (a typical audio frame).
const DATA_LEN: usize = 160;
/// A bandwidth limit no timed frame reaches (the largest the configuration takes), so
/// the `_limited` rows time the buckets' bookkeeping on relayed frames.
const UNREACHED_LIMIT: u64 = 100_000_000_000;
/// A limit every timed frame is over (a datagram with more than one second's worth of
/// data is never relayed): the `_over_limit` rows time the drop.
const EXCEEDED_LIMIT: u64 = 1;

/// ns per packet of `turn_xdp` for each path next to the pass-only program `xdp_pass`,
/// as BPF_PROG_TEST_RUN times them. Names: `baseline_pass`, `<path>_v4` / `<path>_v6`
/// for the relay paths (`send_fingerprint_to_peer_*`: a Send indication with
/// FINGERPRINT, whose CRC-32 the program verifies; `channel_data_to_peer_no_df_v4`:
/// ChannelData in a datagram without DF, which gets a random identification),
/// `pass_unknown_flow` and
/// `drop_no_permission`: the median of up to [`MAX_RUNS`] single runs each
/// ([`Testbed::time`]), which includes the kernel's per-run timer overhead, so subtract
/// `baseline_pass` for the program's own cost. `baseline_pass_repeated`,
/// `pass_unknown_flow_repeated`, `drop_no_permission_repeated` and, per family,
/// `send_bad_fingerprint_*_repeated` / `send_fingerprint_no_permission_*_repeated`: the
/// mean over one run repeated [`REPEAT`] times ([`Testbed::time_repeated`]; timer
/// overhead amortised), possible only for frames the program does not rewrite; it
/// cross-checks the subtraction, and the last two differ only by the FINGERPRINT check
/// (CRC-32 over the 196/208-byte message), so their difference is its cost.
/// `channel_data_to_peer_limited_v4` / `channel_data_to_client_limited_v4`: the same
/// ChannelData on an IPv4 allocation with a bandwidth limit and under a relay-wide one,
/// neither reached (timed last, with the relay's limit set), next to the unlimited rows
/// above: the buckets' cost. `channel_data_to_peer_over_limit_v4_repeated`: ChannelData
/// over its allocation's limit, dropped (repeatable). `channel_data_to_peer_traced_v4`:
/// the same ChannelData as `channel_data_to_peer_v4` through the program loaded with its
/// decision trace on (`xdp.trace`), in a testbed of its own: what the trace costs; the
/// other rows have it off, as by default. `channel_data_to_peer_other_writes_v4` /
/// `channel_data_to_peer_own_writes_v4`: the same ChannelData with a table write before
/// each run, for another allocation or for its own ([`channel_data_under_writes`]). Err
/// if a repeated frame was not counted under its expected outcome every time.
///
/// Each figure is the median over [`LOADS`] loads of the program (a testbed each),
/// `repeat` single runs split between them.
pub fn time_paths(repeat: u32) -> Result<Vec<(String, f64)>> {
    let runs_per_load = (repeat.min(MAX_RUNS) / LOADS as u32).max(1);
    let loads = (0..LOADS)
        .map(|_| time_paths_on_one_load(runs_per_load))
        .collect::<Result<Vec<_>>>()?;
    median_over_loads(&loads)
}

/// Each row's median over `loads` (the rows of every load, in the same order).
fn median_over_loads(loads: &[Vec<(String, f64)>]) -> Result<Vec<(String, f64)>> {
    let first = loads.first().ok_or_else(|| anyhow!("no load timed"))?;
    first
        .iter()
        .enumerate()
        .map(|(row, (name, _))| {
            let mut figures = loads
                .iter()
                .map(|load| match load.get(row) {
                    Some((other, ns)) if other == name => Ok(*ns),
                    _ => Err(anyhow!("row {name} differs between loads")),
                })
                .collect::<Result<Vec<f64>>>()?;
            Ok((name.clone(), median(&mut figures)))
        })
        .collect()
}

/// The median of `figures` (the upper one of an even count), which it sorts; 0 for none.
pub fn median(figures: &mut [f64]) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(0.0)
}

/// The rows of [`time_paths`] on one load of the program.
fn time_paths_on_one_load(repeat: u32) -> Result<Vec<(String, f64)>> {
    let testbed = Testbed::new(16)?;
    let mut fast_path = testbed.fast_path()?;
    let expires_at = Instant::now() + Duration::from_secs(3600);
    let frames = relay_frames(&mut fast_path, expires_at)?;
    let limited_frames = limited_frames(&mut fast_path, expires_at)?;
    let mut timings = Vec::with_capacity(frames.len() + limited_frames.len() + 4);
    let (_, first_frame, _) = frames.first().ok_or_else(|| anyhow!("no frames"))?;
    timings.push((
        "baseline_pass".to_string(),
        testbed.time(first_frame, Ingress::ClientSide, repeat, Timed::Baseline)?,
    ));
    for (name, frame, ingress) in &frames {
        timings.push((
            name.clone(),
            testbed.time(frame, *ingress, repeat, Timed::Relay)?,
        ));
    }
    let (_, channel_data_v4, _) = frames
        .iter()
        .find(|(name, _, _)| name == "channel_data_to_peer_v4")
        .ok_or_else(|| anyhow!("no frame channel_data_to_peer_v4"))?;
    timings.extend(channel_data_under_writes(
        &testbed,
        &mut fast_path,
        channel_data_v4,
        repeat,
        expires_at,
    )?);
    timings.push((
        "baseline_pass_repeated".to_string(),
        testbed
            .time_repeated(first_frame, Ingress::ClientSide, REPEAT, Timed::Baseline)?
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
            .ok_or_else(|| anyhow!("no frame {name}"))?;
        let timing = testbed.time_repeated(frame, *ingress, REPEAT, Timed::Relay)?;
        if timing.counted != [(outcome, u64::from(REPEAT))] {
            bail!(
                "{name} repeated {REPEAT} times was counted as {:?}",
                timing.counted
            );
        }
        timings.push((format!("{name}_repeated"), timing.ns_per_packet));
    }
    fast_path.limit_relay_bandwidth(UNREACHED_LIMIT)?;
    for (name, frame, ingress) in &limited_frames {
        if name.ends_with("_over_limit_v4") {
            let timing = testbed.time_repeated(frame, *ingress, REPEAT, Timed::Relay)?;
            if timing.counted != [(Outcome::DropRateLimited, u64::from(REPEAT))] {
                bail!(
                    "{name} repeated {REPEAT} times was counted as {:?}",
                    timing.counted
                );
            }
            timings.push((format!("{name}_repeated"), timing.ns_per_packet));
        } else {
            timings.push((
                name.clone(),
                testbed.time(frame, *ingress, repeat, Timed::Relay)?,
            ));
        }
    }
    timings.push((
        "channel_data_to_peer_traced_v4".into(),
        traced_channel_data(channel_data_v4, repeat, expires_at)?,
    ));
    Ok(timings)
}

/// The frames of the single-run rows, each with its ingress side, named as the rows
/// are, for an IPv4 and an IPv6 allocation with a channel that `fast_path` installs.
fn relay_frames(
    fast_path: &mut FastPath,
    expires_at: Instant,
) -> Result<Vec<(String, Vec<u8>, Ingress)>> {
    let mut frames: Vec<(String, Vec<u8>, Ingress)> = Vec::new();
    for suffix in ["v4", "v6"] {
        let TimedAllocation { flow, relay, peer } = TimedAllocation::of(suffix);
        let (listener_ip, peer_ip) = (flow.listener.ip(), peer.ip());
        let other_peer = SocketAddr::new(peer_ip, OTHER_PEER_PORT);
        fast_path.allocation_with_channel(flow, relay, peer, CHANNEL, expires_at)?;
        let data = [0x5Au8; DATA_LEN];
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
            to_listener(&channel_data(CHANNEL, &data)),
            Ingress::ClientSide,
        ));
        frames.push((
            format!("send_to_peer_{suffix}"),
            to_listener(&send_indication(TRANSACTION, peer, &data, false)),
            Ingress::ClientSide,
        ));
        frames.push((
            format!("send_fingerprint_to_peer_{suffix}"),
            to_listener(&send_indication(TRANSACTION, peer, &data, true)),
            Ingress::ClientSide,
        ));
        // Frames the program leaves unchanged, repeatable: the difference between them
        // is the FINGERPRINT check (both have FINGERPRINT; only the first reaches it).
        let mut bad_fingerprint = send_indication(TRANSACTION, peer, &data, true);
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
            to_listener(&send_indication(TRANSACTION, unpermitted_peer, &data, true)),
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
            // As Windows and macOS clients send: the relayed datagram gets a random
            // IPv4 identification (RFC 8656 §14, RFC 6864).
            let mut may_fragment = Ip::new(flow.client.ip(), flow.listener.ip());
            may_fragment.dont_fragment = false;
            frames.push((
                "channel_data_to_peer_no_df_v4".into(),
                UdpFrame {
                    src_mac: CLIENT_MAC,
                    dst_mac: CLIENT_SIDE_MAC,
                    ip: may_fragment,
                    src_port: flow.client.port(),
                    dst_port: flow.listener.port(),
                    payload: &channel_data(CHANNEL, &data),
                    checksum: UdpChecksum::Compute,
                }
                .build(),
                Ingress::ClientSide,
            ));
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
    Ok(frames)
}

/// The unlimited allocation of a family (`suffix` "v4" or "v6") the single-run rows are
/// timed on: its client flow, relayed address, and the peer of its channel.
struct TimedAllocation {
    flow: ClientFlow,
    relay: SocketAddr,
    peer: SocketAddr,
}

impl TimedAllocation {
    fn of(suffix: &str) -> TimedAllocation {
        let (listener_ip, relay_ip, client_ip, peer_ip) = if suffix == "v4" {
            (
                IpAddr::V4(RELAY_LISTEN_V4),
                IpAddr::V4(RELAY_RELAYED_V4),
                IpAddr::V4(CLIENT_V4),
                IpAddr::V4(PEER_V4),
            )
        } else {
            (
                IpAddr::V6(RELAY_LISTEN_V6),
                IpAddr::V6(RELAY_RELAYED_V6),
                IpAddr::V6(CLIENT_V6),
                IpAddr::V6(PEER_V6),
            )
        };
        TimedAllocation {
            flow: ClientFlow::udp(
                SocketAddr::new(client_ip, CLIENT_PORT),
                SocketAddr::new(listener_ip, LISTENER_PORT),
            ),
            relay: SocketAddr::new(relay_ip, RELAY_PORT),
            peer: SocketAddr::new(peer_ip, CHANNEL_PEER_PORT),
        }
    }

    /// Writes the permission for its channel's peer again, as a refresh does.
    fn refresh_permission(&self, fast_path: &mut FastPath, expires_at: Instant) -> Result<()> {
        fast_path.permission(self.flow, self.relay, self.peer.ip(), expires_at)?;
        Ok(())
    }
}

/// `channel_data_to_peer_v4`'s `frame` timed with a table write before each run: the
/// IPv6 allocation's permission written again (`…_other_writes_v4`: the per-CPU cache
/// keeps the IPv4 channel's copy, versioned by its own addresses), or the IPv4
/// allocation's own (`…_own_writes_v4`: every frame misses the cache, is relayed
/// through the hash lookup, and fills the slot again: what a miss costs).
fn channel_data_under_writes(
    testbed: &Testbed,
    fast_path: &mut FastPath,
    frame: &[u8],
    runs: u32,
    expires_at: Instant,
) -> Result<Vec<(String, f64)>> {
    let mut timings = Vec::new();
    for (name, written) in [
        ("channel_data_to_peer_other_writes_v4", "v6"),
        ("channel_data_to_peer_own_writes_v4", "v4"),
    ] {
        let written = TimedAllocation::of(written);
        let ns = testbed.time_between(frame, Ingress::ClientSide, runs, Timed::Relay, || {
            written.refresh_permission(fast_path, expires_at)
        })?;
        timings.push((name.to_string(), ns));
    }
    Ok(timings)
}

/// The most rounds [`time_path`] times.
pub const MAX_ROUNDS: u32 = 1000;

/// `baseline_pass`, then the single-run row `name` (a relay path, `drop_no_permission`
/// or `pass_unknown_flow`) timed `rounds` times over, one figure per round: enough runs
/// of one path for a profiler (`perf record`) to see where its time goes.
pub fn time_path(name: &str, runs: u32, rounds: u32) -> Result<Vec<(String, f64)>> {
    let runs = runs.min(MAX_RUNS);
    let testbed = Testbed::new(16)?;
    let mut fast_path = testbed.fast_path()?;
    let frames = relay_frames(&mut fast_path, Instant::now() + Duration::from_secs(3600))?;
    let (_, frame, ingress) = frames
        .iter()
        .find(|(frame_name, _, _)| frame_name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = frames.iter().map(|(name, _, _)| name.as_str()).collect();
            anyhow!("no single-run row {name}; there are {}", names.join(", "))
        })?;
    let mut timings = vec![(
        "baseline_pass".to_string(),
        testbed.time(frame, *ingress, runs, Timed::Baseline)?,
    )];
    for _ in 0..rounds.min(MAX_ROUNDS) {
        timings.push((
            name.to_string(),
            testbed.time(frame, *ingress, runs, Timed::Relay)?,
        ));
    }
    Ok(timings)
}

/// `channel_data_to_peer_v4`'s `frame` through the program with its decision trace on,
/// on the same IPv4 allocation and channel.
fn traced_channel_data(frame: &[u8], repeat: u32, expires_at: Instant) -> Result<f64> {
    let testbed = Testbed::traced(16)?;
    let TimedAllocation { flow, relay, peer } = TimedAllocation::of("v4");
    // Kept until the timing is done, as in `time_paths`.
    let mut fast_path = testbed.fast_path()?;
    fast_path.allocation_with_channel(flow, relay, peer, CHANNEL, expires_at)?;
    testbed.time(frame, Ingress::ClientSide, repeat, Timed::Relay)
}

/// IPv4 allocations with bandwidth limits (other client and relay ports than the
/// unlimited one, the same peer and channel), and the frames timed on them.
fn limited_frames(
    fast_path: &mut FastPath,
    expires_at: Instant,
) -> Result<Vec<(String, Vec<u8>, Ingress)>> {
    let peer = SocketAddr::new(IpAddr::V4(PEER_V4), CHANNEL_PEER_PORT);
    let data = [0x5Au8; DATA_LEN];
    let mut frames = Vec::new();
    for (offset, name, limit) in [
        (1, "limited", UNREACHED_LIMIT),
        (2, "over_limit", EXCEEDED_LIMIT),
    ] {
        let flow = ClientFlow::udp(
            SocketAddr::new(IpAddr::V4(CLIENT_V4), CLIENT_PORT + offset),
            SocketAddr::new(IpAddr::V4(RELAY_LISTEN_V4), LISTENER_PORT),
        );
        let relay = SocketAddr::new(IpAddr::V4(RELAY_RELAYED_V4), RELAY_PORT + offset);
        fast_path.limited_allocation(flow, relay, expires_at, limit)?;
        fast_path.permission(flow, relay, peer.ip(), expires_at)?;
        fast_path.channel(flow, relay, peer, CHANNEL, expires_at)?;
        frames.push((
            format!("channel_data_to_peer_{name}_v4"),
            udp_frame(
                CLIENT_MAC,
                CLIENT_SIDE_MAC,
                flow.client,
                flow.listener,
                &channel_data(CHANNEL, &data),
            ),
            Ingress::ClientSide,
        ));
        if limit == UNREACHED_LIMIT {
            frames.push((
                format!("channel_data_to_client_{name}_v4"),
                udp_frame(PEER_MAC, PEER_SIDE_MAC, peer, relay, &data),
                Ingress::PeerSide,
            ));
        }
    }
    Ok(frames)
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

/// An Ethernet frame carrying a UDP datagram with a correct checksum.
fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    UdpFrame {
        src_mac,
        dst_mac,
        ip: Ip::new(src.ip(), dst.ip()),
        src_port: src.port(),
        dst_port: dst.port(),
        payload,
        checksum: UdpChecksum::Compute,
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_is_its_median_over_the_loads() {
        let load = |a: f64, b: f64| vec![("a".to_string(), a), ("b".to_string(), b)];
        let loads = [load(250.0, 9.0), load(330.0, 1.0), load(260.0, 5.0)];
        assert_eq!(
            median_over_loads(&loads).expect("median"),
            [("a".to_string(), 260.0), ("b".to_string(), 5.0)]
        );
        let mismatched = [load(1.0, 2.0), vec![("b".to_string(), 1.0)]];
        assert!(median_over_loads(&mismatched).is_err());
        assert!(median_over_loads(&[]).is_err());
    }

    #[test]
    fn bench_times_every_path_next_to_the_baseline() {
        if !turn_testkit::privileged("bench_times_every_path_next_to_the_baseline") {
            return;
        }
        let timings = time_paths(2000).expect("timings");
        for (name, ns) in &timings {
            println!("{name:<32} {ns:>8.1} ns/packet");
        }
        let names: Vec<&str> = timings.iter().map(|(name, _)| name.as_str()).collect();
        for expected in [
            "baseline_pass",
            "channel_data_to_peer_v4",
            "send_to_peer_v6",
            "data_indication_to_client_v6",
            "send_fingerprint_to_peer_v4",
            "drop_no_permission",
            "baseline_pass_repeated",
            "drop_no_permission_repeated",
            "send_bad_fingerprint_v6_repeated",
            "channel_data_to_peer_limited_v4",
            "channel_data_to_client_limited_v4",
            "channel_data_to_peer_over_limit_v4_repeated",
            "channel_data_to_peer_traced_v4",
            "channel_data_to_peer_other_writes_v4",
            "channel_data_to_peer_own_writes_v4",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(
            timings.iter().all(|(_, ns)| ns.is_finite() && *ns > 0.0),
            "{timings:?}"
        );
        let one_path = time_path("send_to_peer_v6", 2000, 2).expect("one path");
        let names: Vec<&str> = one_path.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["baseline_pass", "send_to_peer_v6", "send_to_peer_v6"]
        );
        assert!(time_path("no_such_path", 10, 1).is_err());
    }
}
