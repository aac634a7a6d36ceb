//! A tiny HTTP/1.1 endpoint: `GET /metrics` answers the Prometheus text format (0.0.4).
//!
//! The relay loop publishes a [`MetricsSnapshot`] about once a second; requests only read
//! the latest snapshot, so scraping never touches the relay path.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::bpf::XdpCounters;
use crate::protocol::turn::{PacketCount, ServerStats};

/// Longest request head read; longer requests are refused.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// A client that has not sent its request by then is disconnected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What `/metrics` reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct MetricsSnapshot {
    pub(crate) stats: ServerStats,
    pub(crate) relay_sockets: usize,
    pub(crate) io: IoCounters,
    /// Present while the XDP program is attached.
    pub(crate) xdp: Option<XdpCounters>,
}

pub(crate) type SharedMetrics = Arc<Mutex<MetricsSnapshot>>;

/// Serves `/metrics` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: SharedMetrics) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &metrics).await {
                tracing::debug!(%error, %peer, "metrics request failed");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &SharedMetrics) -> std::io::Result<()> {
    let mut head = [0u8; MAX_REQUEST_HEAD];
    let mut filled = 0;
    let complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while filled < head.len() {
            let read = stream.read(&mut head[filled..]).await?;
            if read == 0 {
                return Ok::<bool, std::io::Error>(false);
            }
            filled += read;
            if head[..filled]
                .windows(4)
                .any(|window| window == b"\r\n\r\n")
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
    .unwrap_or(Ok(false))?;
    let request_line = head[..filled]
        .split(|&b| b == b'\r')
        .next()
        .unwrap_or_default();
    let response = if !complete {
        response(400, "Bad Request", "text/plain", "bad request\n")
    } else {
        match request_line
            .split(|&b| b == b' ')
            .collect::<Vec<_>>()
            .as_slice()
        {
            [b"GET", b"/metrics", _version] => {
                let body = match metrics.lock() {
                    Ok(snapshot) => render(&snapshot),
                    Err(poisoned) => render(&poisoned.into_inner()),
                };
                response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", &body)
            }
            [b"GET", _, _] => response(404, "Not Found", "text/plain", "try /metrics\n"),
            _ => response(
                405,
                "Method Not Allowed",
                "text/plain",
                "only GET /metrics\n",
            ),
        }
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn response(code: u16, reason: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The Prometheus text exposition of a snapshot.
pub(crate) fn render(snapshot: &MetricsSnapshot) -> String {
    let mut text = String::with_capacity(4096);
    let stats = &snapshot.stats;
    gauge(
        &mut text,
        "turn_allocations",
        "Allocations in place.",
        stats.allocations as u64,
    );
    gauge(
        &mut text,
        "turn_permissions",
        "Permissions in place (all allocations).",
        stats.permissions as u64,
    );
    gauge(
        &mut text,
        "turn_channels",
        "Channel bindings in place (all allocations).",
        stats.channels as u64,
    );
    gauge(
        &mut text,
        "turn_relay_sockets",
        "Open relay sockets.",
        snapshot.relay_sockets as u64,
    );

    let relayed: [(&str, &str, PacketCount); 4] = [
        ("to_peer", "channel_data", stats.to_peer_channel_data),
        ("to_peer", "send_indication", stats.to_peer_send),
        ("to_client", "channel_data", stats.to_client_channel_data),
        (
            "to_client",
            "data_indication",
            stats.to_client_data_indication,
        ),
    ];
    /// Which number of a [`PacketCount`] a metric shows.
    type Measure = fn(&PacketCount) -> u64;
    let measures: [(&str, &str, Measure); 2] = [
        (
            "turn_userspace_relayed_packets_total",
            "Application datagrams relayed by userspace.",
            |count| count.packets,
        ),
        (
            "turn_userspace_relayed_bytes_total",
            "Application bytes relayed by userspace.",
            |count| count.bytes,
        ),
    ];
    for (name, help, measure) in measures {
        header(&mut text, name, help, "counter");
        for (direction, kind, count) in &relayed {
            let _ = writeln!(
                text,
                "{name}{{direction=\"{direction}\",kind=\"{kind}\"}} {}",
                measure(count)
            );
        }
    }
    counter(
        &mut text,
        "turn_userspace_dropped_packets_total",
        "Relay data dropped by userspace (no allocation, permission or channel; malformed).",
        stats.dropped_packets,
    );

    counter(
        &mut text,
        "turn_received_datagrams_total",
        "Datagrams read from listeners and relay sockets.",
        snapshot.io.received,
    );
    counter(
        &mut text,
        "turn_truncated_datagrams_total",
        "Datagrams dropped for exceeding the receive buffer.",
        snapshot.io.truncated,
    );
    counter(
        &mut text,
        "turn_send_dropped_datagrams_total",
        "Datagrams the kernel refused to send.",
        snapshot.io.send_dropped,
    );
    counter(
        &mut text,
        "turn_relay_bind_failures_total",
        "Relay sockets that could not be bound (508 to the client).",
        snapshot.io.relay_bind_failures,
    );

    gauge(
        &mut text,
        "turn_xdp_attached",
        "1 while the XDP fast path is attached.",
        u64::from(snapshot.xdp.is_some()),
    );
    if let Some(xdp) = &snapshot.xdp {
        header(
            &mut text,
            "turn_xdp_packets_total",
            "Frames the XDP program handled, by outcome.",
            "counter",
        );
        for (outcome, count) in xdp.iter() {
            let _ = writeln!(
                text,
                "turn_xdp_packets_total{{outcome=\"{}\"}} {}",
                outcome.name(),
                count.packets
            );
        }
        header(
            &mut text,
            "turn_xdp_bytes_total",
            "Frame bytes the XDP program handled, by outcome.",
            "counter",
        );
        for (outcome, count) in xdp.iter() {
            let _ = writeln!(
                text,
                "turn_xdp_bytes_total{{outcome=\"{}\"}} {}",
                outcome.name(),
                count.bytes
            );
        }
    }
    text
}

fn header(text: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn gauge(text: &mut String, name: &str, help: &str, value: u64) {
    header(text, name, help, "gauge");
    let _ = writeln!(text, "{name} {value}");
}

fn counter(text: &mut String, name: &str, help: &str, value: u64) {
    header(text, name, help, "counter");
    let _ = writeln!(text, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_reports_state_and_userspace_traffic() {
        let snapshot = MetricsSnapshot {
            stats: ServerStats {
                allocations: 2,
                permissions: 3,
                channels: 1,
                to_peer_channel_data: PacketCount {
                    packets: 5,
                    bytes: 500,
                },
                to_client_data_indication: PacketCount {
                    packets: 7,
                    bytes: 70,
                },
                ..ServerStats::default()
            },
            relay_sockets: 2,
            io: IoCounters {
                received: 12,
                ..IoCounters::default()
            },
            xdp: None,
        };
        let text = render(&snapshot);
        for line in [
            "turn_allocations 2",
            "turn_permissions 3",
            "turn_channels 1",
            "turn_relay_sockets 2",
            "turn_userspace_relayed_packets_total{direction=\"to_peer\",kind=\"channel_data\"} 5",
            "turn_userspace_relayed_bytes_total{direction=\"to_peer\",kind=\"channel_data\"} 500",
            "turn_userspace_relayed_packets_total{direction=\"to_client\",kind=\"data_indication\"} 7",
            "turn_received_datagrams_total 12",
            "turn_xdp_attached 0",
            "# TYPE turn_userspace_relayed_packets_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("turn_xdp_packets_total"));
    }

    #[tokio::test]
    async fn http_endpoint_answers_get_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("addr");
        let metrics: SharedMetrics = Arc::default();
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics)));

        let fetch = |request: &'static str| async move {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await.expect("read");
            reply
        };
        let ok = fetch("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("turn_allocations 0"));
        assert!(fetch("GET / HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(fetch("POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        server.abort();
    }
}
