//! The relay's Prometheus metrics (the `prometheus` crate's registry and text format).
//!
//! About once a second the daemon gathers a [`MetricsSnapshot`] (the core's state and
//! totals, the workers' IO counters, the XDP program's counters) and [`Metrics::publish`]es
//! it; `GET /metrics` only encodes what was published, so scraping never touches the relay
//! path.

use std::sync::PoisonError;

use prometheus::{
    Encoder as _, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use turn_common::bandwidth::{TO_CLIENT, TO_PEER};

use crate::bpf::{Counter, Outcome, XdpRelay};
use crate::protocol::datapath::{FastPathStats, Transport};
use crate::protocol::turn::{PacketCount, ServerStats};

use super::stream::{CloseReason, StreamCounts};
use super::Hub;

/// Counters kept by the IO layer itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IoCounters {
    /// Datagrams received on listeners and relay sockets.
    pub(crate) received: u64,
    /// Datagrams larger than the receive buffer (dropped).
    pub(crate) truncated: u64,
    /// Datagrams (relay data and responses) the kernel would not take.
    pub(crate) send_dropped: u64,
    /// OpenRelay commands whose socket could not be bound (answered with 508).
    pub(crate) relay_bind_failures: u64,
}

impl IoCounters {
    /// Adds another worker's counters.
    pub(crate) fn add(&mut self, other: &IoCounters) {
        self.received += other.received;
        self.truncated += other.truncated;
        self.send_dropped += other.send_dropped;
        self.relay_bind_failures += other.relay_bind_failures;
    }
}

/// What `/metrics` reports, gathered at one moment.
#[derive(Debug, Clone)]
pub(crate) struct MetricsSnapshot {
    pub(crate) stats: ServerStats,
    /// What applying the core's commands to the fast path did.
    pub(crate) fast_path: FastPathStats,
    pub(crate) relay_sockets: usize,
    pub(crate) io: IoCounters,
    /// The TCP and TLS connections' counters.
    pub(crate) streams: [(Transport, StreamCounts); 2],
    /// The XDP program's counter of every outcome, while it is attached.
    pub(crate) xdp: Option<Vec<(Outcome, Counter)>>,
    /// What the XDP program's bandwidth limits dropped, client → peer then peer →
    /// client (application data bytes), while it is attached.
    pub(crate) xdp_rate_limited: Option<[Counter; 2]>,
}

impl Default for MetricsSnapshot {
    fn default() -> Self {
        MetricsSnapshot {
            stats: ServerStats::default(),
            fast_path: FastPathStats::default(),
            relay_sockets: 0,
            io: IoCounters::default(),
            streams: [Transport::Tcp, Transport::Tls].map(|t| (t, StreamCounts::default())),
            xdp: None,
            xdp_rate_limited: None,
        }
    }
}

impl MetricsSnapshot {
    /// The server's state, the workers' IO counters (summed) and the XDP counters now.
    pub(crate) fn gather(hub: &Hub, xdp: Option<&XdpRelay>) -> MetricsSnapshot {
        let mut io = IoCounters::default();
        for worker in &hub.io {
            io.add(&worker.lock().unwrap_or_else(PoisonError::into_inner));
        }
        let (stats, relay_sockets) = {
            let shared = hub.lock();
            (shared.server.stats(), shared.relays.len())
        };
        let fast_path = hub.lock_fast_path().stats();
        let xdp = xdp.and_then(|relay| match relay.counters() {
            Ok(counters) => Some(counters),
            Err(error) => {
                tracing::debug!("reading XDP counters: {error:#}");
                None
            }
        });
        MetricsSnapshot {
            stats,
            fast_path,
            relay_sockets: relay_sockets + hub.streams.relay_sockets(),
            io,
            streams: hub.streams.counts(),
            xdp_rate_limited: xdp
                .as_ref()
                .map(|counters| [TO_PEER, TO_CLIENT].map(|d| counters.rate_limited(d))),
            xdp: xdp.map(|counters| counters.iter().collect()),
        }
    }
}

/// The registry and its metrics. The names are part of the operator interface (README,
/// "Metrics"): keep them.
pub(crate) struct Metrics {
    registry: Registry,
    allocations: IntGauge,
    allocations_by_transport: IntGaugeVec,
    permissions: IntGauge,
    channels: IntGauge,
    relay_sockets: IntGauge,
    userspace_packets: IntCounterVec,
    userspace_bytes: IntCounterVec,
    userspace_dropped: IntCounter,
    unauthenticated_answers_dropped: IntCounter,
    userspace_only_allocations: IntCounter,
    received: IntCounter,
    truncated: IntCounter,
    send_dropped: IntCounter,
    relay_bind_failures: IntCounter,
    xdp_attached: IntGauge,
    xdp_packets: IntCounterVec,
    xdp_bytes: IntCounterVec,
    bandwidth_limited_packets: IntCounterVec,
    bandwidth_limited_bytes: IntCounterVec,
    connections: IntGaugeVec,
    connections_accepted: IntCounterVec,
    connections_closed: IntCounterVec,
    connection_dropped: IntCounterVec,
}

impl Metrics {
    pub(crate) fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let counters = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(counters.clone()))?;
            Ok::<_, prometheus::Error>(counters)
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let gauges = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(gauges.clone()))?;
            Ok::<_, prometheus::Error>(gauges)
        };
        let metrics = Metrics {
            allocations: gauge("turn_allocations", "Allocations in place.")?,
            allocations_by_transport: gauges(
                "turn_allocations_by_transport",
                "Allocations in place, by the client's transport (udp, tcp, tls).",
                &["transport"],
            )?,
            permissions: gauge(
                "turn_permissions",
                "Permissions in place (all allocations).",
            )?,
            channels: gauge(
                "turn_channels",
                "Channel bindings in place (all allocations).",
            )?,
            relay_sockets: gauge("turn_relay_sockets", "Open relay sockets.")?,
            userspace_packets: counters(
                "turn_userspace_relayed_packets_total",
                "Application datagrams relayed by userspace, by the client's transport.",
                &["direction", "kind", "transport"],
            )?,
            userspace_bytes: counters(
                "turn_userspace_relayed_bytes_total",
                "Application bytes relayed by userspace, by the client's transport.",
                &["direction", "kind", "transport"],
            )?,
            userspace_dropped: counter(
                "turn_userspace_dropped_packets_total",
                "Relay data dropped by userspace (no allocation, permission or channel; malformed).",
            )?,
            unauthenticated_answers_dropped: counter(
                "turn_unauthenticated_answers_dropped_total",
                "Answers to unauthenticated requests (401, 400, ...) not sent: their source was over limits.unauthenticated_answers_per_second.",
            )?,
            userspace_only_allocations: counter(
                "turn_fast_path_userspace_only_allocations_total",
                "Allocations handed to the userspace relay because the fast path refused one of their entries (e.g. a full map).",
            )?,
            received: counter(
                "turn_received_datagrams_total",
                "Datagrams read from listeners and relay sockets.",
            )?,
            truncated: counter(
                "turn_truncated_datagrams_total",
                "Datagrams dropped for exceeding the receive buffer.",
            )?,
            send_dropped: counter(
                "turn_send_dropped_datagrams_total",
                "Datagrams the kernel refused to send.",
            )?,
            relay_bind_failures: counter(
                "turn_relay_bind_failures_total",
                "Relay sockets that could not be bound (508 to the client).",
            )?,
            xdp_attached: gauge(
                "turn_xdp_attached",
                "1 while the XDP fast path is attached.",
            )?,
            xdp_packets: counters(
                "turn_xdp_packets_total",
                "Frames the XDP program handled, by outcome.",
                &["outcome"],
            )?,
            xdp_bytes: counters(
                "turn_xdp_bytes_total",
                "Frame bytes the XDP program handled, by outcome.",
                &["outcome"],
            )?,
            bandwidth_limited_packets: counters(
                "turn_bandwidth_limited_packets_total",
                "Relay datagrams dropped for exceeding the allocation's or the relay's bandwidth limit, by path (xdp, userspace) and direction.",
                &["path", "direction"],
            )?,
            bandwidth_limited_bytes: counters(
                "turn_bandwidth_limited_bytes_total",
                "Application data bytes dropped for exceeding a bandwidth limit, by path and direction.",
                &["path", "direction"],
            )?,
            connections: gauges(
                "turn_client_connections",
                "Open TCP and TLS client connections.",
                &["transport"],
            )?,
            connections_accepted: counters(
                "turn_client_connections_accepted_total",
                "TCP and TLS client connections accepted.",
                &["transport"],
            )?,
            connections_closed: counters(
                "turn_client_connections_closed_total",
                "TCP and TLS client connections closed or refused, by reason.",
                &["transport", "reason"],
            )?,
            connection_dropped: counters(
                "turn_client_connection_dropped_messages_total",
                "Relayed messages dropped because a connection's write queue was full.",
                &["transport"],
            )?,
            registry,
        };
        // Every userspace series exists from the start, at 0.
        metrics.publish(&MetricsSnapshot::default());
        Ok(metrics)
    }

    /// Sets every metric to the values of `snapshot`.
    pub(crate) fn publish(&self, snapshot: &MetricsSnapshot) {
        let stats = &snapshot.stats;
        set_gauge(&self.allocations, stats.allocations);
        for transport in Transport::ALL {
            set_gauge(
                &self
                    .allocations_by_transport
                    .with_label_values(&[transport.name()]),
                stats.transport(transport).allocations,
            );
        }
        set_gauge(&self.permissions, stats.permissions);
        set_gauge(&self.channels, stats.channels);
        set_gauge(&self.relay_sockets, snapshot.relay_sockets);
        for transport in Transport::ALL {
            let counts = stats.transport(transport).relayed;
            let relayed: [(&str, &str, PacketCount); 4] = [
                ("to_peer", "channel_data", counts.to_peer_channel_data),
                ("to_peer", "send_indication", counts.to_peer_send),
                ("to_client", "channel_data", counts.to_client_channel_data),
                (
                    "to_client",
                    "data_indication",
                    counts.to_client_data_indication,
                ),
            ];
            for (direction, kind, count) in relayed {
                let labels = [direction, kind, transport.name()];
                set_total(
                    &self.userspace_packets.with_label_values(&labels),
                    count.packets,
                );
                set_total(
                    &self.userspace_bytes.with_label_values(&labels),
                    count.bytes,
                );
            }
        }
        set_total(&self.userspace_dropped, stats.dropped_packets);
        set_total(
            &self.unauthenticated_answers_dropped,
            stats.unauthenticated_answers_dropped,
        );
        set_total(
            &self.userspace_only_allocations,
            snapshot.fast_path.userspace_only_allocations,
        );
        set_total(&self.received, snapshot.io.received);
        set_total(&self.truncated, snapshot.io.truncated);
        set_total(&self.send_dropped, snapshot.io.send_dropped);
        let stream_bind_failures: u64 = snapshot
            .streams
            .iter()
            .map(|(_, counts)| counts.relay_bind_failures)
            .sum();
        set_total(
            &self.relay_bind_failures,
            snapshot.io.relay_bind_failures + stream_bind_failures,
        );
        for (transport, counts) in &snapshot.streams {
            let label = [transport.name()];
            self.connections
                .with_label_values(&label)
                .set(i64::try_from(counts.open).unwrap_or(i64::MAX));
            set_total(
                &self.connections_accepted.with_label_values(&label),
                counts.accepted,
            );
            set_total(
                &self.connection_dropped.with_label_values(&label),
                counts.dropped,
            );
            for (reason, closed) in CloseReason::ALL.iter().zip(counts.closed) {
                set_total(
                    &self
                        .connections_closed
                        .with_label_values(&[transport.name(), reason.name()]),
                    closed,
                );
            }
        }
        let mut limited = vec![
            ("userspace", "to_peer", stats.rate_limited_to_peer),
            ("userspace", "to_client", stats.rate_limited_to_client),
        ];
        if let Some([to_peer, to_client]) = snapshot.xdp_rate_limited {
            let count = |counter: Counter| PacketCount {
                packets: counter.packets,
                bytes: counter.bytes,
            };
            limited.push(("xdp", "to_peer", count(to_peer)));
            limited.push(("xdp", "to_client", count(to_client)));
        }
        for (path, direction, count) in limited {
            let labels = [path, direction];
            set_total(
                &self.bandwidth_limited_packets.with_label_values(&labels),
                count.packets,
            );
            set_total(
                &self.bandwidth_limited_bytes.with_label_values(&labels),
                count.bytes,
            );
        }
        self.xdp_attached.set(i64::from(snapshot.xdp.is_some()));
        if let Some(xdp) = &snapshot.xdp {
            for (outcome, count) in xdp {
                let labels = [outcome.name()];
                set_total(&self.xdp_packets.with_label_values(&labels), count.packets);
                set_total(&self.xdp_bytes.with_label_values(&labels), count.bytes);
            }
        }
    }

    /// The Prometheus text exposition of what was last published, and its content type.
    pub(crate) fn encode(&self) -> (String, &'static str) {
        let encoder = TextEncoder::new();
        let mut text = Vec::with_capacity(4096);
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut text) {
            tracing::warn!("encoding the metrics: {error}");
        }
        (
            String::from_utf8_lossy(&text).into_owned(),
            prometheus::TEXT_FORMAT,
        )
    }
}

fn set_gauge(gauge: &IntGauge, value: usize) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// Moves a counter up to `total`, a running total kept elsewhere (totals never go down).
fn set_total(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::turn::{RelayedCounts, TransportStats};

    use super::*;

    fn snapshot() -> MetricsSnapshot {
        let udp = TransportStats {
            allocations: 2,
            relayed: RelayedCounts {
                to_peer_channel_data: PacketCount {
                    packets: 5,
                    bytes: 500,
                },
                to_client_data_indication: PacketCount {
                    packets: 7,
                    bytes: 70,
                },
                ..RelayedCounts::default()
            },
        };
        let tls = TransportStats {
            allocations: 1,
            relayed: RelayedCounts {
                to_client_channel_data: PacketCount {
                    packets: 3,
                    bytes: 30,
                },
                ..RelayedCounts::default()
            },
        };
        let mut tls_counts = StreamCounts {
            open: 4,
            accepted: 9,
            dropped: 2,
            ..StreamCounts::default()
        };
        tls_counts.closed[1] = 5;
        MetricsSnapshot {
            stats: ServerStats {
                allocations: 3,
                permissions: 3,
                channels: 1,
                by_transport: [udp, TransportStats::default(), tls],
                unauthenticated_answers_dropped: 11,
                ..ServerStats::default()
            },
            fast_path: FastPathStats {
                userspace_only_allocations: 3,
            },
            relay_sockets: 2,
            io: IoCounters {
                received: 12,
                ..IoCounters::default()
            },
            streams: [
                (Transport::Tcp, StreamCounts::default()),
                (Transport::Tls, tls_counts),
            ],
            xdp: None,
            xdp_rate_limited: None,
        }
    }

    #[test]
    fn exposition_reports_state_and_userspace_traffic() {
        let metrics = Metrics::new().expect("metrics register");
        metrics.publish(&snapshot());
        let (text, content_type) = metrics.encode();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        for line in [
            "turn_allocations 3",
            "turn_allocations_by_transport{transport=\"udp\"} 2",
            "turn_allocations_by_transport{transport=\"tcp\"} 0",
            "turn_allocations_by_transport{transport=\"tls\"} 1",
            "turn_permissions 3",
            "turn_channels 1",
            "turn_relay_sockets 2",
            "turn_userspace_relayed_packets_total{direction=\"to_peer\",kind=\"channel_data\",transport=\"udp\"} 5",
            "turn_userspace_relayed_bytes_total{direction=\"to_peer\",kind=\"channel_data\",transport=\"udp\"} 500",
            "turn_userspace_relayed_packets_total{direction=\"to_client\",kind=\"data_indication\",transport=\"udp\"} 7",
            "turn_userspace_relayed_packets_total{direction=\"to_peer\",kind=\"send_indication\",transport=\"udp\"} 0",
            "turn_userspace_relayed_packets_total{direction=\"to_client\",kind=\"channel_data\",transport=\"tls\"} 3",
            "turn_client_connections{transport=\"tls\"} 4",
            "turn_client_connections{transport=\"tcp\"} 0",
            "turn_client_connections_accepted_total{transport=\"tls\"} 9",
            "turn_client_connections_closed_total{reason=\"idle_timeout\",transport=\"tls\"} 5",
            "turn_client_connections_closed_total{reason=\"bad_framing\",transport=\"tcp\"} 0",
            "turn_client_connection_dropped_messages_total{transport=\"tls\"} 2",
            "turn_userspace_dropped_packets_total 0",
            "turn_received_datagrams_total 12",
            "turn_truncated_datagrams_total 0",
            "turn_send_dropped_datagrams_total 0",
            "turn_relay_bind_failures_total 0",
            "turn_unauthenticated_answers_dropped_total 11",
            "turn_fast_path_userspace_only_allocations_total 3",
            "turn_xdp_attached 0",
            "# TYPE turn_userspace_relayed_packets_total counter",
            "# TYPE turn_allocations gauge",
            "# HELP turn_allocations Allocations in place.",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Without XDP its per-outcome series do not exist.
        assert!(!text.contains("turn_xdp_packets_total"), "{text}");
    }

    #[test]
    fn exposition_reports_every_xdp_outcome_while_attached() {
        let metrics = Metrics::new().expect("metrics register");
        let mut snapshot = snapshot();
        snapshot.xdp = Some(
            Outcome::ALL
                .iter()
                .map(|outcome| {
                    let count = if *outcome == Outcome::RelayedChannelDataToPeer {
                        9
                    } else {
                        0
                    };
                    (
                        *outcome,
                        Counter {
                            packets: count,
                            bytes: count * 100,
                        },
                    )
                })
                .collect(),
        );
        snapshot.xdp_rate_limited = Some([
            Counter {
                packets: 3,
                bytes: 3600,
            },
            Counter::default(),
        ]);
        snapshot.stats.rate_limited_to_client = PacketCount {
            packets: 2,
            bytes: 240,
        };
        metrics.publish(&snapshot);
        let (text, _) = metrics.encode();
        for line in [
            "turn_bandwidth_limited_packets_total{direction=\"to_peer\",path=\"xdp\"} 3",
            "turn_bandwidth_limited_bytes_total{direction=\"to_peer\",path=\"xdp\"} 3600",
            "turn_bandwidth_limited_packets_total{direction=\"to_client\",path=\"xdp\"} 0",
            "turn_bandwidth_limited_packets_total{direction=\"to_client\",path=\"userspace\"} 2",
            "turn_bandwidth_limited_bytes_total{direction=\"to_client\",path=\"userspace\"} 240",
            "turn_xdp_attached 1",
            "turn_xdp_packets_total{outcome=\"relayed_channel_data_to_peer\"} 9",
            "turn_xdp_bytes_total{outcome=\"relayed_channel_data_to_peer\"} 900",
            "turn_xdp_packets_total{outcome=\"pass_unknown_flow\"} 0",
            "# TYPE turn_xdp_packets_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let series = text
            .lines()
            .filter(|line| line.starts_with("turn_xdp_packets_total{"))
            .count();
        assert_eq!(series, Outcome::ALL.len());
    }

    #[test]
    fn publishing_again_moves_counters_to_the_new_totals() {
        let metrics = Metrics::new().expect("metrics register");
        let mut snapshot = snapshot();
        metrics.publish(&snapshot);
        snapshot.io.received = 40;
        snapshot.stats.allocations = 0;
        metrics.publish(&snapshot);
        // Publishing the same totals twice changes nothing.
        metrics.publish(&snapshot);
        let (text, _) = metrics.encode();
        assert!(
            text.lines()
                .any(|l| l == "turn_received_datagrams_total 40"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "turn_allocations 0"), "{text}");
    }
}
