//! The data-plane load: a paced generator (sendmmsg), a sink in the peer namespace that
//! checks sequence numbers and one-way latency, and an optional echo path for RTT.
//!
//! Every relayed payload starts with a 24-byte probe header (little endian):
//! `step: u32, flow: u32, sequence: u64, sent_at_ns: u64` (CLOCK_MONOTONIC, which all
//! namespaces share, so receive time minus `sent_at_ns` is a valid one-way latency).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use turn_testkit::mmsg::{send_buffers, ReceiveBatch, BATCH};
use turn_testkit::netns::Namespace;
use turn_testkit::stun_client::{channel_data, relayed_payload, send_indication};

use crate::control::Flow;

pub const PROBE_LEN: usize = 24;
/// Latency samples kept per step (about 16 MB at most).
const MAX_LATENCY_SAMPLES: usize = 4_000_000;

/// Datagrams a namespace's UDP layer dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpDrops {
    /// A receiving socket's buffer was full (RcvbufErrors), e.g. the sink falling behind.
    pub receive_buffer: u64,
    /// Bad UDP checksum (InCsumErrors): a relay wrote a wrong checksum.
    pub checksum: u64,
}

impl UdpDrops {
    pub fn since(&self, before: &UdpDrops) -> UdpDrops {
        UdpDrops {
            receive_buffer: self.receive_buffer.saturating_sub(before.receive_buffer),
            checksum: self.checksum.saturating_sub(before.checksum),
        }
    }
}

/// UDP drop counters of a namespace (/proc/net/snmp as seen from inside it).
pub fn udp_drops(namespace: &Namespace) -> Result<UdpDrops> {
    namespace.run_inside(|| {
        // thread-self: /proc/self/net would show the main thread's namespace.
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")
            .context("reading /proc/thread-self/net/snmp")?;
        let mut udp_lines = snmp.lines().filter(|line| line.starts_with("Udp: "));
        let (Some(names), Some(values)) = (udp_lines.next(), udp_lines.next()) else {
            bail!("no Udp lines in /proc/net/snmp")
        };
        let counter = |wanted: &str| {
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .find(|(name, _)| *name == wanted)
                .and_then(|(_, value)| value.parse().ok())
                .with_context(|| format!("no Udp {wanted} counter"))
        };
        Ok(UdpDrops {
            receive_buffer: counter("RcvbufErrors")?,
            checksum: counter("InCsumErrors")?,
        })
    })
}

/// How the client hands data to the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RelayMode {
    /// ChannelData messages on a bound channel (RFC 8656 §12).
    ChannelData,
    /// Send indications; the peer's data returns as Data indications (RFC 8656 §11).
    SendIndication,
    /// Plain UDP straight to the peer through a forwarding relay namespace (baseline only).
    Direct,
}

impl RelayMode {
    pub fn label(self) -> &'static str {
        match self {
            RelayMode::ChannelData => "ChannelData",
            RelayMode::SendIndication => "Send/Data",
            RelayMode::Direct => "direct (no relay)",
        }
    }
}

pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    pub(crate) fn from_ns(mut samples: Vec<u32>) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |quantile: f64| {
            let index = ((samples.len() as f64 * quantile) as usize).min(samples.len() - 1);
            f64::from(samples[index]) / 1000.0
        };
        Some(Percentiles {
            samples: samples.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        })
    }
}

/// What the generator managed to send.
pub struct GeneratorOutcome {
    pub sent: u64,
    pub seconds: f64,
}

/// The datagram a flow sends, up to the probe header; payload bytes follow.
pub fn flow_template(flow: &Flow, mode: RelayMode, payload_len: usize) -> (Vec<u8>, usize) {
    let zeros = vec![0u8; payload_len];
    let mut template = match mode {
        RelayMode::ChannelData => {
            let mut message = channel_data(flow.channel, &zeros);
            message.truncate(message.len() - payload_len);
            message
        }
        RelayMode::SendIndication => {
            let mut message = send_indication([0; 12], flow.peer, &zeros, false);
            message.truncate(message.len() - payload_len.next_multiple_of(4));
            message
        }
        RelayMode::Direct => Vec::new(),
    };
    let offset = template.len();
    template.resize(offset + payload_len.next_multiple_of(4), 0xA5);
    if mode != RelayMode::SendIndication {
        template.truncate(offset + payload_len);
    }
    (template, offset)
}

/// Sends probes on all flows at `rate_pps` in total (None: as fast as possible) for
/// `duration`, from `threads` generator threads that split the flows between them.
pub fn generate(
    flows: &[Flow],
    mode: RelayMode,
    payload_len: usize,
    rate_pps: Option<f64>,
    duration: Duration,
    step: u32,
    threads: usize,
) -> GeneratorOutcome {
    let threads = threads.clamp(1, flows.len().max(1));
    if threads == 1 {
        return generate_on_thread(flows, 0, mode, payload_len, rate_pps, duration, step);
    }
    let per_thread = flows.len().div_ceil(threads);
    let outcomes: Vec<GeneratorOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = flows
            .chunks(per_thread)
            .enumerate()
            .map(|(index, chunk)| {
                let share = rate_pps.map(|rate| rate * chunk.len() as f64 / flows.len() as f64);
                scope.spawn(move || {
                    generate_on_thread(
                        chunk,
                        index * per_thread,
                        mode,
                        payload_len,
                        share,
                        duration,
                        step,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|handle| handle.join().ok())
            .collect()
    });
    GeneratorOutcome {
        sent: outcomes.iter().map(|o| o.sent).sum(),
        seconds: outcomes.iter().map(|o| o.seconds).fold(0.0, f64::max),
    }
}

/// One generator thread: flows round-robin, sendmmsg batches of up to 64 per flow, bounded
/// by `duration` and by [`crate::interrupted`]. `first_flow` is the global id of `flows[0]`.
fn generate_on_thread(
    flows: &[Flow],
    first_flow: usize,
    mode: RelayMode,
    payload_len: usize,
    rate_pps: Option<f64>,
    duration: Duration,
    step: u32,
) -> GeneratorOutcome {
    let templates: Vec<(Vec<u8>, usize)> = flows
        .iter()
        .map(|flow| flow_template(flow, mode, payload_len))
        .collect();
    let datagram_len = templates.first().map_or(0, |(t, _)| t.len());
    let ipv6_peer: Vec<bool> = flows.iter().map(|flow| flow.peer.is_ipv6()).collect();
    let mut buffers = vec![vec![0u8; datagram_len]; BATCH];
    let mut sequences = vec![0u64; flows.len()];
    let mut sent = 0u64;
    let mut next_flow = 0usize;
    // 1 µs timer slack so short sleeps in the pacing loop are not stretched to 50 µs.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only affects the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let start = Instant::now();
    while !crate::interrupted() {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let wanted = match rate_pps {
            None => BATCH as u64,
            Some(rate) => {
                // Sleep (never spin) until a burst of at least 50 µs worth of packets is due,
                // so the generator leaves the CPU to the relay and the sink between bursts.
                let burst = ((rate * 50e-6).ceil() as u64).clamp(1, BATCH as u64);
                let due = (rate * elapsed.as_secs_f64()) as u64;
                if due < sent + burst {
                    let wait = (sent + burst) as f64 / rate - elapsed.as_secs_f64();
                    std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.01)));
                    continue;
                }
                (due - sent).min(BATCH as u64)
            }
        };
        let flow_index = next_flow;
        next_flow = (next_flow + 1) % flows.len();
        let (template, offset) = &templates[flow_index];
        let now = monotonic_ns();
        let count = wanted as usize;
        for (i, buffer) in buffers.iter_mut().take(count).enumerate() {
            buffer.copy_from_slice(template);
            let sequence = sequences[flow_index] + i as u64;
            let probe = &mut buffer[*offset..*offset + PROBE_LEN];
            probe[0..4].copy_from_slice(&step.to_le_bytes());
            probe[4..8].copy_from_slice(&((first_flow + flow_index) as u32).to_le_bytes());
            probe[8..16].copy_from_slice(&sequence.to_le_bytes());
            probe[16..24].copy_from_slice(&now.to_le_bytes());
            if mode == RelayMode::SendIndication {
                buffer[8..16].copy_from_slice(&sequence.to_le_bytes());
                buffer[16..20].copy_from_slice(&((first_flow + flow_index) as u32).to_le_bytes());
                if ipv6_peer[flow_index] {
                    xor_ipv6_peer_with_transaction_id(buffer);
                }
            }
        }
        let accepted = send_buffers(&flows[flow_index].socket, &mut buffers[..count]);
        sequences[flow_index] += accepted as u64;
        sent += accepted as u64;
    }
    GeneratorOutcome {
        sent,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// An IPv6 XOR-PEER-ADDRESS (the template's first attribute, address at bytes 28..44) is
/// XORed with the transaction ID too (RFC 8489 §14.2), not only the magic cookie. The
/// template was encoded with an all-zero ID; after the generator wrote a new ID (bytes
/// 8..20), XOR it into the address's last 12 bytes.
fn xor_ipv6_peer_with_transaction_id(message: &mut [u8]) {
    for j in 0..12 {
        message[32 + j] ^= message[8 + j];
    }
}

/// Per-step counters of the sink.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SinkReport {
    pub received: u64,
    pub reordered: u64,
    pub echoed: u64,
    #[serde(skip)]
    pub latencies_ns: Vec<u32>,
}

/// A receive loop over one socket that parses probe headers of the current step.
/// Stops its thread when finished or dropped; the thread also ends by itself after
/// [`RECEIVER_TIME_LIMIT`].
pub struct Receiver {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<SinkReport>>,
}

/// Upper bound on one receiver thread's life, whatever happens to its owner.
const RECEIVER_TIME_LIMIT: Duration = Duration::from_secs(300);

impl Receiver {
    /// The peer-side sink: counts probes of `step`, tracks per-flow sequence order and
    /// one-way latency, and echoes every datagram to its source when `echo` is set.
    pub fn start_sink(
        socket: &UdpSocket,
        step: u32,
        flows: usize,
        echo: bool,
    ) -> std::io::Result<Receiver> {
        let socket = socket.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || sink_loop(&socket, step, flows, echo, &stop_flag));
        Ok(Receiver {
            stop,
            handle: Some(handle),
        })
    }

    /// The client-side echo receiver: RTT of echoed probes arriving as ChannelData or Data
    /// indications on the flows' sockets.
    pub fn start_echo_receiver(flows: &[Flow], step: u32) -> std::io::Result<Receiver> {
        let sockets: Vec<UdpSocket> = flows
            .iter()
            .map(|f| f.socket.try_clone())
            .collect::<Result<_, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || echo_receiver_loop(&sockets, step, &stop_flag));
        Ok(Receiver {
            stop,
            handle: Some(handle),
        })
    }

    pub fn finish(mut self) -> SinkReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct ProbeHeader {
    step: u32,
    flow: u32,
    sequence: u64,
    sent_at_ns: u64,
}

fn parse_probe(payload: &[u8]) -> Option<ProbeHeader> {
    let probe = payload.get(..PROBE_LEN)?;
    let u32_at =
        |at: usize| u32::from_le_bytes([probe[at], probe[at + 1], probe[at + 2], probe[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
    Some(ProbeHeader {
        step: u32_at(0),
        flow: u32_at(4),
        sequence: u64_at(8),
        sent_at_ns: u64_at(16),
    })
}

fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: fds is a valid slice of pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
}

fn sink_loop(
    socket: &UdpSocket,
    step: u32,
    flows: usize,
    echo: bool,
    stop: &AtomicBool,
) -> SinkReport {
    let mut report = SinkReport::default();
    let mut next_sequence = vec![0u64; flows];
    let mut batch = ReceiveBatch::default();
    let mut poll_fd = [libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < RECEIVER_TIME_LIMIT {
        let count = batch.receive(socket);
        if count == 0 {
            wait_readable(&mut poll_fd, 2);
            continue;
        }
        let now = monotonic_ns();
        for datagram in batch.datagrams(count) {
            let Some(probe) = parse_probe(datagram) else {
                continue;
            };
            if probe.step != step {
                continue;
            }
            report.received += 1;
            if let Some(expected) = next_sequence.get_mut(probe.flow as usize) {
                if probe.sequence < *expected {
                    report.reordered += 1;
                } else {
                    *expected = probe.sequence + 1;
                }
            }
            if report.latencies_ns.len() < MAX_LATENCY_SAMPLES {
                report
                    .latencies_ns
                    .push(u32::try_from(now.saturating_sub(probe.sent_at_ns)).unwrap_or(u32::MAX));
            }
        }
        if echo {
            report.echoed += batch.echo(socket, count) as u64;
        }
    }
    report
}

fn echo_receiver_loop(sockets: &[UdpSocket], step: u32, stop: &AtomicBool) -> SinkReport {
    let mut report = SinkReport::default();
    let mut batch = ReceiveBatch::default();
    let mut poll_fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < RECEIVER_TIME_LIMIT {
        wait_readable(&mut poll_fds, 2);
        for (socket, poll_fd) in sockets.iter().zip(&poll_fds) {
            if poll_fd.revents & libc::POLLIN == 0 {
                continue;
            }
            let count = batch.receive(socket);
            let now = monotonic_ns();
            for datagram in batch.datagrams(count) {
                let Some(probe) = relayed_payload(datagram).and_then(parse_probe) else {
                    continue;
                };
                if probe.step != step {
                    continue;
                }
                report.received += 1;
                if report.latencies_ns.len() < MAX_LATENCY_SAMPLES {
                    report.latencies_ns.push(
                        u32::try_from(now.saturating_sub(probe.sent_at_ns)).unwrap_or(u32::MAX),
                    );
                }
            }
        }
    }
    report
}

/// The measured outcome of one load step.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// None: as fast as the generator can.
    pub target_pps: Option<f64>,
    pub offered_pps: f64,
    pub relayed_pps: f64,
    pub sent: u64,
    pub received: u64,
    pub loss_ratio: f64,
    pub reordered: u64,
    /// The generator could not offer 97 % of the target rate (the result says more about
    /// the load generator than about the server).
    pub generator_bound: bool,
    /// Datagrams dropped at full socket buffers in the peer namespace (the sink's own
    /// losses; when this is most of the loss, the sink, not the server, was the limit).
    /// In live-frames steps: relayed frames the peer's veth end had no room for.
    pub sink_drops: u64,
    /// Datagrams the peer namespace dropped for a bad UDP checksum (a relay bug if not 0).
    pub sink_checksum_errors: u64,
    /// The same counter in the relay namespace: datagrams the server's sockets had no
    /// room for (a userspace server falling behind shows up here).
    pub relay_socket_drops: u64,
    /// Live-frames steps: injected frames the relay's receive ring (its client-side veth
    /// end, 256 frames) had no room for because the relay's NAPI kthread had not emptied
    /// it in time. The relay's loss (counted in `loss_ratio`), shown apart.
    pub relay_ring_full: u64,
    /// Live-frames steps on the pinned cores: CPU time the machine took from the relay's
    /// or the load's core during the step (see [`crate::disturbance::Disturbance`]).
    pub disturbance: Option<crate::disturbance::Disturbance>,
    pub one_way_latency: Option<Percentiles>,
    pub round_trip: Option<Percentiles>,
    pub cpu: Option<crate::cpu::CpuCost>,
}

impl StepResult {
    pub fn from_parts(
        target_pps: Option<f64>,
        outcome: &GeneratorOutcome,
        sink: SinkReport,
        sink_drops: UdpDrops,
        relay_drops: UdpDrops,
        echo: Option<SinkReport>,
        cpu: Option<crate::cpu::CpuCost>,
    ) -> StepResult {
        let seconds = outcome.seconds.max(1e-9);
        let offered_pps = outcome.sent as f64 / seconds;
        let loss_ratio = if outcome.sent == 0 {
            1.0
        } else {
            1.0 - (sink.received.min(outcome.sent) as f64 / outcome.sent as f64)
        };
        StepResult {
            target_pps,
            offered_pps,
            relayed_pps: sink.received as f64 / seconds,
            sent: outcome.sent,
            received: sink.received,
            loss_ratio,
            reordered: sink.reordered,
            generator_bound: target_pps.is_some_and(|target| offered_pps < 0.97 * target),
            sink_drops: sink_drops.receive_buffer,
            sink_checksum_errors: sink_drops.checksum,
            relay_socket_drops: relay_drops.receive_buffer,
            relay_ring_full: 0,
            disturbance: None,
            one_way_latency: Percentiles::from_ns(sink.latencies_ns),
            round_trip: echo.and_then(|e| Percentiles::from_ns(e.latencies_ns)),
            cpu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peer_address_follows_a_new_transaction_id() {
        use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
        let peer = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2),
            40000,
            0,
            0,
        ));
        let mut message = send_indication([0; 12], peer, &[7; 8], false);
        message[8..20].copy_from_slice(&[0x5a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xff]);
        xor_ipv6_peer_with_transaction_id(&mut message);
        let parsed = turn_relay::protocol::stun::Message::parse(&message).expect("well formed");
        assert_eq!(parsed.xor_peer_address().ok().flatten(), Some(peer));
    }

    #[test]
    fn percentiles_pick_the_right_ranks() {
        let samples: Vec<u32> = (1..=1000).rev().map(|us| us * 1000).collect();
        let p = Percentiles::from_ns(samples).expect("non-empty");
        assert_eq!(
            (p.p50_us, p.p99_us, p.p999_us, p.max_us),
            (501.0, 991.0, 1000.0, 1000.0)
        );
        assert!(Percentiles::from_ns(Vec::new()).is_none());
    }

    #[test]
    fn probe_header_round_trips() {
        let mut payload = vec![0u8; 40];
        payload[0..4].copy_from_slice(&7u32.to_le_bytes());
        payload[4..8].copy_from_slice(&3u32.to_le_bytes());
        payload[8..16].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        payload[16..24].copy_from_slice(&99u64.to_le_bytes());
        let probe = parse_probe(&payload).expect("long enough");
        assert_eq!(
            (probe.step, probe.flow, probe.sequence, probe.sent_at_ns),
            (7, 3, 0x0102_0304_0506_0708, 99)
        );
        assert!(parse_probe(&payload[..PROBE_LEN - 1]).is_none());
    }
}
