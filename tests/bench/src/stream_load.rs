//! TURN over TCP and TLS under load (issue 9): N client connections each send ChannelData
//! (padded for the stream, several messages per write as a busy client would), the relay
//! relays it over UDP to the sink in the peer namespace: the same probe headers and sink
//! as the UDP scenarios ([`crate::load`]).
//!
//! TCP pushes back: a relay that reads slowly slows the generator down instead of losing
//! data, so the saturated rate is what the relay can take; loss can only happen on the
//! relay's UDP side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use turn_testkit::addresses::{listener, tls_listener, RELAY_LISTEN_V4};
use turn_testkit::config::User;
use turn_testkit::netns::Namespace;
use turn_testkit::stun_client::{channel_data, Link, TurnClient};
use turn_testkit::tls::TestCertificate;

use crate::load::{monotonic_ns, GeneratorOutcome, PROBE_LEN};

/// Messages written in one write call on one connection.
const MESSAGES_PER_WRITE: usize = 8;
/// How long one write may block on a relay that stopped reading.
const WRITE_LIMIT: Duration = Duration::from_secs(2);

/// How the benchmark's clients reach the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ClientTransport {
    Udp,
    Tcp,
    Tls,
}

impl ClientTransport {
    pub fn label(self) -> &'static str {
        match self {
            ClientTransport::Udp => "UDP",
            ClientTransport::Tcp => "TCP",
            ClientTransport::Tls => "TLS",
        }
    }
}

/// `count` allocations over `transport` (IPv4), each with channel `first_channel + i`
/// bound to `sink`.
pub fn open(
    client: &Namespace,
    transport: ClientTransport,
    count: usize,
    user: &User,
    sink: SocketAddr,
    first_channel: u16,
    certificate: &TestCertificate,
) -> Result<Vec<TurnClient>> {
    let config = certificate.client_config(&[])?;
    (0..count)
        .map(|index| {
            let link = match transport {
                ClientTransport::Tls => Link::tls(
                    client,
                    tls_listener(4),
                    config.clone(),
                    &RELAY_LISTEN_V4.to_string(),
                )?,
                _ => Link::tcp(client, listener(4))?,
            };
            link.set_write_timeout(WRITE_LIMIT)?;
            let mut turn = TurnClient::allocate_over(link, user, false)?;
            let channel = first_channel + u16::try_from(index).unwrap_or(0);
            turn.channel_bind(channel, sink)?;
            Ok(turn)
        })
        .collect::<Result<_>>()
        .with_context(|| format!("opening {count} {} clients", transport.label()))
}

/// Deletes the allocations (Refresh 0); closing the connections would as well.
pub fn close(clients: Vec<TurnClient>) {
    for mut client in clients {
        let _ = client.refresh(0);
    }
}

/// Sends probes on every connection at `rate_pps` in total (None: as fast as the relay
/// takes them) for `duration`, round-robin, [`MESSAGES_PER_WRITE`] messages per write.
/// Flow `i`'s probes are ChannelData on channel `first_channel + i`.
pub fn generate(
    clients: &mut [TurnClient],
    first_channel: u16,
    payload_len: usize,
    rate_pps: Option<f64>,
    duration: Duration,
    step: u32,
) -> GeneratorOutcome {
    let templates: Vec<Vec<u8>> = (0..clients.len())
        .map(|index| {
            let channel = first_channel + u16::try_from(index).unwrap_or(0);
            let mut message = channel_data(channel, &vec![0xA5; payload_len]);
            message.resize(message.len().next_multiple_of(4), 0);
            message
        })
        .collect();
    let mut sequences = vec![0u64; clients.len()];
    let mut broken = vec![false; clients.len()];
    let mut buffer = Vec::new();
    let mut sent = 0u64;
    let mut next = 0usize;
    let start = Instant::now();
    while !crate::interrupted() && broken.iter().any(|broken| !broken) {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        if let Some(rate) = rate_pps {
            let due = (rate * elapsed.as_secs_f64()) as u64;
            if due < sent + MESSAGES_PER_WRITE as u64 {
                let wait = (sent + MESSAGES_PER_WRITE as u64) as f64 / rate - elapsed.as_secs_f64();
                std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.01)));
                continue;
            }
        }
        let index = next;
        next = (next + 1) % clients.len();
        if broken[index] {
            continue;
        }
        let (Some(template), Some(client)) = (templates.get(index), clients.get_mut(index)) else {
            continue;
        };
        buffer.clear();
        let now = monotonic_ns();
        for offset in 0..MESSAGES_PER_WRITE as u64 {
            let start_of_message = buffer.len();
            buffer.extend_from_slice(template);
            let probe = &mut buffer[start_of_message + 4..start_of_message + 4 + PROBE_LEN];
            probe[0..4].copy_from_slice(&step.to_le_bytes());
            probe[4..8].copy_from_slice(&(index as u32).to_le_bytes());
            probe[8..16].copy_from_slice(&(sequences[index] + offset).to_le_bytes());
            probe[16..24].copy_from_slice(&now.to_le_bytes());
        }
        match client.link().send_raw(&buffer) {
            Ok(()) => {
                sequences[index] += MESSAGES_PER_WRITE as u64;
                sent += MESSAGES_PER_WRITE as u64;
            }
            Err(error) => {
                eprintln!("turn-bench: connection {index} failed: {error:#}");
                broken[index] = true;
            }
        }
    }
    GeneratorOutcome {
        sent,
        seconds: start.elapsed().as_secs_f64(),
    }
}
