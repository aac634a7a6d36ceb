//! TURN over TCP and TLS (RFC 8656 §3.1): clients that only get through a firewall on
//! TCP or TLS reach the same TURN server as UDP clients; their relayed transport is UDP.
//!
//! - [`codec`]: STUN and ChannelData framing on a byte stream (`tokio-util` codec).
//! - [`listener`]: the TCP and TLS listeners, the connection limits, the PROXY protocol
//!   and the TLS handshake, all before a connection is served.
//! - [`connection`]: one connection's task: frames in, the shared [`Server`] (same lock
//!   and fast-path ordering as the UDP workers), responses and relayed data out through a
//!   bounded write queue.
//! - [`proxy`], [`tls`]: the PROXY protocol header, rustls and its certificate files.
//!
//! The connections run on a multi-threaded tokio runtime of their own ("turn-stream"
//! threads), apart from the UDP workers. A stream allocation's relay socket belongs to its
//! connection's task, which reads the peers' datagrams from it and relays them onto the
//! connection: XDP passes those datagrams up (a stream allocation never has fast-path
//! entries, see [`crate::protocol::datapath::ClientFlow`]). The [`StreamRegistry`] is the
//! UDP side's way in: when a UDP worker expires such an allocation, its CloseRelay reaches
//! the connection through it.
//!
//! [`Server`]: crate::protocol::turn::Server

mod codec;
mod connection;
mod listener;
mod proxy;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::sync::Notify;

use crate::daemon::config::ConnectionLimits;
use crate::protocol::datapath::Transport;

use super::Hub;

pub(crate) use codec::{MAX_FRAME, MIN_FRAME_LIMIT};
pub(crate) use tls::TlsFiles;

/// The stream listeners and connections as configured (the `[tcp]`, `[tls]`,
/// `[connections]` and `[proxy_protocol]` tables).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StreamSettings {
    /// TURN over TCP listeners (empty: off).
    pub(crate) tcp: Vec<SocketAddr>,
    pub(crate) tcp_proxy_protocol: bool,
    /// TURN over TLS listeners (empty: off; then `tls_files` is None).
    pub(crate) tls: Vec<SocketAddr>,
    pub(crate) tls_files: Option<TlsFiles>,
    pub(crate) tls_proxy_protocol: bool,
    /// Sources whose PROXY header is taken.
    pub(crate) proxy_allow_from: Vec<IpNet>,
    pub(crate) limits: ConnectionLimits,
}

impl StreamSettings {
    /// Whether any stream listener is configured.
    pub(crate) fn any(&self) -> bool {
        !self.tcp.is_empty() || !self.tls.is_empty()
    }
}

/// Why a connection ended (or was never served): the `reason` label of
/// `turn_client_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client closed it (or reset it).
    ClientClosed,
    /// No complete message for `connections.idle_timeout` while it held no allocation.
    IdleTimeout,
    /// Bytes that are neither STUN nor ChannelData, or an impossible length.
    BadFraming,
    /// A response did not fit in the write queue: the client does not read.
    WriteQueueFull,
    /// The PROXY header and TLS handshake took longer than `connections.handshake_timeout`.
    HandshakeTimeout,
    /// The TLS handshake failed.
    TlsHandshakeFailed,
    /// A PROXY header from a source not in `proxy_protocol.allow_from`, on a listener
    /// without the PROXY protocol, or an invalid one.
    ProxyRefused,
    /// `connections.max` connections were open.
    OverMax,
    /// `connections.max_per_ip` connections from the client's address were open.
    OverMaxPerIp,
    /// Reading or writing failed.
    IoError,
}

impl CloseReason {
    pub(crate) const ALL: [CloseReason; 10] = [
        CloseReason::ClientClosed,
        CloseReason::IdleTimeout,
        CloseReason::BadFraming,
        CloseReason::WriteQueueFull,
        CloseReason::HandshakeTimeout,
        CloseReason::TlsHandshakeFailed,
        CloseReason::ProxyRefused,
        CloseReason::OverMax,
        CloseReason::OverMaxPerIp,
        CloseReason::IoError,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::BadFraming => "bad_framing",
            CloseReason::WriteQueueFull => "write_queue_full",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::TlsHandshakeFailed => "tls_handshake_failed",
            CloseReason::ProxyRefused => "proxy_refused",
            CloseReason::OverMax => "over_max",
            CloseReason::OverMaxPerIp => "over_max_per_ip",
            CloseReason::IoError => "io_error",
        }
    }

    fn index(self) -> usize {
        CloseReason::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or(0)
    }
}

/// The stream transports, in the order of the counters' tables.
const STREAM_TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::Tls];

fn stream_index(transport: Transport) -> usize {
    usize::from(transport == Transport::Tls)
}

/// One stream transport's counters.
#[derive(Debug, Default)]
struct TransportCounters {
    open: AtomicU64,
    accepted: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Relayed messages dropped because the connection's write queue was full.
    dropped: AtomicU64,
    relay_bind_failures: AtomicU64,
}

/// What the metrics endpoint reports about one stream transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamCounts {
    pub(crate) open: u64,
    pub(crate) accepted: u64,
    pub(crate) closed: [u64; CloseReason::ALL.len()],
    pub(crate) dropped: u64,
    pub(crate) relay_bind_failures: u64,
}

/// What the UDP side and the stream side share (kept in the [`Hub`]): the relay sockets
/// stream connections own, so that a CloseRelay executed elsewhere (a UDP worker handling
/// an expiry) reaches the connection, the TLS certificate a reload replaces, and the
/// counters of the metrics.
#[derive(Default)]
pub(crate) struct StreamRegistry {
    /// Relayed address → what wakes its connection to close it. Locked after the server
    /// lock, never before it.
    relays: Mutex<HashMap<SocketAddr, Arc<Notify>>>,
    /// Set once the TLS listeners start.
    tls: OnceLock<Arc<tls::Tls>>,
    counters: [TransportCounters; 2],
}

impl StreamRegistry {
    /// Reads the TLS certificate and key files again (a reload: SIGHUP, `POST /reload`):
    /// new connections get the new pair, live ones keep theirs; on an error the old pair
    /// stays. Without TLS: nothing.
    pub(crate) fn reload_tls(&self) -> anyhow::Result<()> {
        let Some(tls) = self.tls.get() else {
            return Ok(());
        };
        tls.reload()?;
        tracing::info!(
            "TLS certificate reloaded from {}",
            tls.files().cert.display()
        );
        Ok(())
    }

    /// Asks the stream connection owning `relay`, if any, to close it; whether one did.
    pub(crate) fn close_relay(&self, relay: SocketAddr) -> bool {
        let owner = self
            .relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&relay);
        match owner {
            Some(notify) => {
                notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// Relay sockets owned by stream connections.
    pub(crate) fn relay_sockets(&self) -> usize {
        self.relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The counters of each stream transport.
    pub(crate) fn counts(&self) -> [(Transport, StreamCounts); 2] {
        STREAM_TRANSPORTS.map(|transport| {
            let counters = &self.counters[stream_index(transport)];
            let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
            (
                transport,
                StreamCounts {
                    open: load(&counters.open),
                    accepted: load(&counters.accepted),
                    closed: counters.closed.each_ref().map(load),
                    dropped: load(&counters.dropped),
                    relay_bind_failures: load(&counters.relay_bind_failures),
                },
            )
        })
    }

    fn own_relay(&self, relay: SocketAddr, notify: Arc<Notify>) {
        self.relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(relay, notify);
    }

    fn release_relay(&self, relay: SocketAddr) {
        self.relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&relay);
    }

    fn counters(&self, transport: Transport) -> &TransportCounters {
        &self.counters[stream_index(transport)]
    }

    fn count_closed(&self, transport: Transport, reason: CloseReason) {
        if let Some(counter) = self.counters(transport).closed.get(reason.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The running stream side: its runtime (listeners and connections).
pub(crate) struct Streams {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Streams {
    /// Binds every listener of `settings` (an error names the address or the certificate
    /// file) and starts serving them on `threads` threads.
    pub(crate) fn start(
        settings: StreamSettings,
        hub: Arc<Hub>,
        threads: usize,
    ) -> anyhow::Result<Streams> {
        if !settings.any() {
            return Ok(Streams { runtime: None });
        }
        let tls = settings
            .tls_files
            .clone()
            .map(tls::Tls::load)
            .transpose()?
            .map(Arc::new);
        let mut bound = Vec::new();
        for (addresses, transport, proxy_protocol) in [
            (&settings.tcp, Transport::Tcp, settings.tcp_proxy_protocol),
            (&settings.tls, Transport::Tls, settings.tls_proxy_protocol),
        ] {
            for &address in addresses {
                let socket = listener::bind(address).with_context(|| {
                    format!("binding the TURN over {transport} listener {address}")
                })?;
                bound.push((
                    socket,
                    listener::Listener {
                        local: address,
                        transport,
                        proxy_protocol,
                    },
                ));
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("turn-stream")
            .enable_all()
            .build()
            .context("starting the TCP/TLS runtime")?;
        let shared = Arc::new(listener::Shared::new(hub, tls.clone(), &settings));
        for (socket, spec) in bound {
            let accepting = {
                let _entered = runtime.enter();
                tokio::net::TcpListener::from_std(socket)
                    .with_context(|| format!("watching the listener {}", spec.local))?
            };
            runtime.spawn(listener::accept(accepting, spec, Arc::clone(&shared)));
        }
        for (transport, addresses) in [
            (Transport::Tcp, &settings.tcp),
            (Transport::Tls, &settings.tls),
        ] {
            if !addresses.is_empty() {
                tracing::info!(
                    "listening for STUN/TURN over {} on {}{}",
                    transport.name().to_uppercase(),
                    super::report::join(addresses),
                    match (&tls, transport) {
                        (Some(tls), Transport::Tls) =>
                            format!(" (certificate {})", tls.files().cert.display()),
                        _ => String::new(),
                    }
                );
            }
        }
        if let Some(tls) = tls {
            let _ = shared.hub.streams.tls.set(tls);
        }
        Ok(Streams {
            runtime: Some(runtime),
        })
    }
}

/// Stops accepting and ends the connections (the daemon is stopping): their tasks are
/// dropped on the runtime's threads, without blocking the caller's async context.
impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
