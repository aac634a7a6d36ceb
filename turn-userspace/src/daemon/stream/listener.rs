//! The TCP and TLS listeners: accepting within the connection limits, the PROXY header and
//! the TLS handshake (both within `connections.handshake_timeout`), then the connection's
//! own task ([`super::connection::serve`]).
//!
//! Limits, checked as early as the information is there:
//! - `connections.max` at accept, before anything is read;
//! - a PROXY listener serves only `proxy_protocol.allow_from`, checked at accept;
//! - `connections.max_per_ip` on the client's address (the one a PROXY header announces),
//!   before the TLS handshake spends any CPU on it. IPv6 clients count per /64, as the
//!   core's answer limiter does, so a host cannot dodge the cap by changing addresses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use ipnet::IpNet;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::daemon::config::ConnectionLimits;
use crate::protocol::datapath::{ClientFlow, Transport};
use crate::protocol::turn::source_key;

use super::proxy::{self, Rewind};
use super::tls::Tls;
use super::{connection, CloseReason, Hub, StreamSettings};

/// Connections the kernel queues for accept per listener.
const BACKLOG: i32 = 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One listening address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Listener {
    pub(super) local: SocketAddr,
    pub(super) transport: Transport,
    /// Connections start with a PROXY header (and only `allow_from` may connect).
    pub(super) proxy_protocol: bool,
}

/// What every listener and connection of the stream side shares.
pub(super) struct Shared {
    pub(super) hub: Arc<Hub>,
    tls: Option<Arc<Tls>>,
    pub(super) limits: ConnectionLimits,
    proxy_allow_from: Vec<IpNet>,
    /// Open connections per client address (IPv6: per /64), and in all.
    open: Mutex<OpenConnections>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl Shared {
    pub(super) fn new(hub: Arc<Hub>, tls: Option<Arc<Tls>>, settings: &StreamSettings) -> Shared {
        Shared {
            hub,
            tls,
            limits: settings.limits.clone(),
            proxy_allow_from: settings.proxy_allow_from.clone(),
            open: Mutex::default(),
        }
    }

    fn open_connections(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection's place within the limits, given back when it is dropped.
struct Slot {
    shared: Arc<Shared>,
    transport: Transport,
    source: Option<IpAddr>,
}

impl Slot {
    /// A place among `connections.max`, if one is free.
    fn claim(shared: &Arc<Shared>, transport: Transport) -> Option<Slot> {
        {
            let mut open = shared.open_connections();
            if open.total >= shared.limits.max_connections {
                return None;
            }
            open.total += 1;
        }
        shared
            .hub
            .streams
            .counters(transport)
            .open
            .fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            shared: Arc::clone(shared),
            transport,
            source: None,
        })
    }

    /// Counts the connection for `client`'s address; false when that is over
    /// `connections.max_per_ip`.
    fn claim_source(&mut self, client: IpAddr) -> bool {
        let key = source_key(client);
        let mut open = self.shared.open_connections();
        let count = open.per_source.entry(key).or_default();
        if *count >= self.shared.limits.max_connections_per_ip {
            if *count == 0 {
                open.per_source.remove(&key);
            }
            return false;
        }
        *count += 1;
        self.source = Some(key);
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut open = self.shared.open_connections();
            open.total = open.total.saturating_sub(1);
            if let Some(key) = self.source {
                if let Some(count) = open.per_source.get_mut(&key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        open.per_source.remove(&key);
                    }
                }
            }
        }
        self.shared
            .hub
            .streams
            .counters(self.transport)
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A listening TCP socket on `address` (non-blocking; IPv6 sockets take IPv6 only, so an
/// IPv4 client never arrives as `::ffff:a.b.c.d`; SO_REUSEADDR so a restart rebinds while
/// old connections linger in TIME_WAIT).
pub(super) fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(address))?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts connections on `listener` until the runtime stops, each served by a task of
/// its own.
pub(super) async fn accept(listener: TcpListener, spec: Listener, shared: Arc<Shared>) {
    let counters = shared.hub.streams.counters(spec.transport);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(listener = %spec.local, %error, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = Slot::claim(&shared, spec.transport) else {
            refuse(&shared, spec, peer, CloseReason::OverMax);
            continue;
        };
        if spec.proxy_protocol
            && !shared
                .proxy_allow_from
                .iter()
                .any(|network| network.contains(&peer.ip()))
        {
            refuse(&shared, spec, peer, CloseReason::ProxyRefused);
            continue;
        }
        // TURN messages are small and latency-bound: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(run(Arc::clone(&shared), spec, tcp, peer, slot));
    }
}

/// Counts and logs a connection closed at accept.
fn refuse(shared: &Shared, spec: Listener, peer: SocketAddr, reason: CloseReason) {
    shared.hub.streams.count_closed(spec.transport, reason);
    tracing::debug!(client = %peer, listener = %spec.local, transport = %spec.transport, reason = reason.name(), "connection refused");
}

/// One connection from accept to close.
async fn run(shared: Arc<Shared>, spec: Listener, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
    let (client, reason) = establish_and_serve(&shared, spec, tcp, peer, slot).await;
    shared.hub.streams.count_closed(spec.transport, reason);
    tracing::debug!(%client, listener = %spec.local, transport = %spec.transport, reason = reason.name(), "connection closed");
}

/// A connection after its PROXY header and TLS handshake.
enum Established {
    Tcp(TcpStream, BytesMut),
    Tls(Box<TlsStream<Rewind<TcpStream>>>),
}

/// Reads the PROXY header, claims the client's place among the connections of its
/// address and runs the TLS handshake, all within the handshake timeout; then serves the
/// connection. Returns the client's address and why the connection ended.
async fn establish_and_serve(
    shared: &Arc<Shared>,
    spec: Listener,
    mut tcp: TcpStream,
    peer: SocketAddr,
    mut slot: Slot,
) -> (SocketAddr, CloseReason) {
    let handshake = async {
        let (client, prefix) = if spec.proxy_protocol {
            match proxy::read_header(&mut tcp).await {
                Ok((announced, rest)) => (announced.unwrap_or(peer), rest),
                Err(error) => {
                    tracing::debug!(proxy = %peer, %error, "PROXY header refused");
                    return Err((peer, CloseReason::ProxyRefused));
                }
            }
        } else {
            (peer, BytesMut::new())
        };
        if !slot.claim_source(client.ip()) {
            return Err((client, CloseReason::OverMaxPerIp));
        }
        let established = match (spec.transport, &shared.tls) {
            (Transport::Tls, Some(tls)) => {
                match tls.acceptor().accept(Rewind::new(prefix, tcp)).await {
                    Ok(stream) => Established::Tls(Box::new(stream)),
                    Err(error) => {
                        tracing::debug!(%client, %error, "TLS handshake failed");
                        return Err((client, CloseReason::TlsHandshakeFailed));
                    }
                }
            }
            _ => Established::Tcp(tcp, prefix),
        };
        Ok((client, established))
    };
    let (client, established) =
        match tokio::time::timeout(shared.limits.handshake_timeout, handshake).await {
            Ok(Ok(established)) => established,
            Ok(Err(refused)) => return refused,
            Err(_) => return (peer, CloseReason::HandshakeTimeout),
        };
    let flow = ClientFlow {
        client,
        listener: spec.local,
        transport: spec.transport,
    };
    tracing::debug!(%client, listener = %spec.local, transport = %spec.transport, "connection established");
    let reason = match established {
        Established::Tcp(tcp, prefix) => connection::serve(shared, flow, tcp, prefix).await,
        Established::Tls(tls) => connection::serve(shared, flow, tls, BytesMut::new()).await,
    };
    drop(slot);
    (client, reason)
}
