//! The daemon: drives the sans-IO [`Server`] with real UDP sockets on tokio.
//!
//! One task owns the server and every socket. Listeners and relay sockets are watched
//! by one epoll instance (itself registered with tokio) and read/written in batches
//! (recvmmsg/sendmmsg) into buffers allocated once. After every `handle_*` call the
//! loop executes the server's commands (binding/closing relay sockets) before sending its
//! queued responses, as the core requires; relay data comes back as a [`Forward`] that
//! points into the receive buffer or the per-slot output buffer and is sent in a batch.
//!
//! With XDP attached, the kernel relays ChannelData and Send/Data for the flows the
//! core installs; what reaches these sockets are misses, which are relayed identically.

mod interfaces;
mod metrics;
mod sockets;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::bpf::{BpfDatapath, XdpMode, XdpRelay};
use crate::config::Config;
use crate::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath, DatapathError, InMemoryDatapath,
    PermissionEntry, RelayedTraffic,
};
use crate::turn::{Command, Forward, Now, Payload, Server};

use metrics::{IoCounters, MetricsSnapshot, SharedMetrics};
use sockets::{Epoll, Outgoing, ReadyTokens, RecvBatch, SocketRole, SocketTable, BATCH};

/// Batches read from one ready socket before moving on to the next (fairness).
const BATCHES_PER_SOCKET: usize = 4;
/// Epoll rounds handled before timers, signals and metrics get a look-in.
const ROUNDS_PER_WAKE: usize = 16;
/// How often the metrics snapshot is refreshed.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// Sleep target when the server has no timer pending.
const IDLE_SLEEP: Duration = Duration::from_secs(3600);

/// The fast path the server programs: the XDP maps, or an in-memory stand-in when XDP
/// is off or could not be attached.
pub enum AnyDatapath {
    Xdp(BpfDatapath),
    Userspace(InMemoryDatapath),
}

impl AnyDatapath {
    /// The datapath in use (control-path calls only, so dynamic dispatch is fine).
    fn active(&self) -> &dyn Datapath {
        match self {
            AnyDatapath::Xdp(datapath) => datapath,
            AnyDatapath::Userspace(datapath) => datapath,
        }
    }

    fn active_mut(&mut self) -> &mut dyn Datapath {
        match self {
            AnyDatapath::Xdp(datapath) => datapath,
            AnyDatapath::Userspace(datapath) => datapath,
        }
    }
}

impl Datapath for AnyDatapath {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError> {
        self.active_mut().install_allocation(entry)
    }

    fn remove_allocation(&mut self, flow: ClientFlow, relay: SocketAddr) {
        self.active_mut().remove_allocation(flow, relay);
    }

    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        self.active_mut().install_permission(entry)
    }

    fn remove_permission(&mut self, relay: SocketAddr, peer_ip: IpAddr) {
        self.active_mut().remove_permission(relay, peer_ip);
    }

    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError> {
        self.active_mut().install_channel(entry)
    }

    fn remove_channel(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        number: u16,
        peer: SocketAddr,
    ) {
        self.active_mut().remove_channel(flow, relay, number, peer);
    }

    fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic {
        self.active().relayed_traffic(relay)
    }
}

/// Runs the relay until `shutdown` completes (it yields the reason, e.g. "SIGTERM").
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    log_startup(&config);

    let epoll = Epoll::new().context("creating the epoll instance")?;
    let epoll_handle = epoll.duplicate_fd().context("duplicating the epoll fd")?;
    // SAFETY: `epoll_handle` is our own duplicate of the epoll fd: the AsyncFd owns it and
    // nothing else closes it.
    let readiness = unsafe { AsyncFd::register_with_interest(epoll_handle, Interest::READABLE) }
        .map_err(std::io::Error::from)
        .context("registering the epoll instance with tokio")?;
    let mut sockets = SocketTable::new(epoll);
    for listen in &config.listen {
        sockets
            .bind(*listen, SocketRole::Listener)
            .with_context(|| format!("binding the TURN listener {listen}"))?;
    }
    tracing::info!("listening for STUN/TURN on UDP {}", join(&config.listen));

    let shared_metrics: SharedMetrics = Arc::default();
    let metrics_task = match config.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the metrics endpoint {address}"))?;
            tracing::info!("metrics: http://{address}/metrics");
            Some(tokio::spawn(metrics::serve(
                listener,
                Arc::clone(&shared_metrics),
            )))
        }
        None => {
            tracing::info!("metrics: off");
            None
        }
    };

    let (datapath, xdp) = select_datapath(&config);
    let server = Server::new(
        config.server_config(),
        config.authenticator(),
        config.peer_policy(),
        datapath,
        StdRng::from_entropy(),
    );
    let mut relay = RelayLoop::new(server, sockets);
    let reason = relay
        .run(&readiness, &xdp, &shared_metrics, shutdown)
        .await?;

    let stats = relay.server.stats();
    tracing::info!(
        reason,
        allocations = stats.allocations,
        permissions = stats.permissions,
        channels = stats.channels,
        userspace_to_peer_packets = stats.to_peer_channel_data.packets + stats.to_peer_send.packets,
        userspace_to_client_packets =
            stats.to_client_channel_data.packets + stats.to_client_data_indication.packets,
        received_datagrams = relay.io.received,
        "shutting down"
    );
    if let Some(xdp) = &xdp {
        match xdp.counters() {
            Ok(counters) => {
                let relayed: u64 = counters
                    .iter()
                    .filter(|(outcome, _)| outcome.name().starts_with("relayed_"))
                    .map(|(_, counter)| counter.packets)
                    .sum();
                tracing::info!(
                    xdp_relayed_packets = relayed,
                    xdp_seen_packets = counters.seen().packets,
                    "XDP totals"
                );
            }
            Err(error) => tracing::warn!("reading XDP counters: {error:#}"),
        }
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    // Sockets close with the loop; dropping the XdpRelay detaches the program.
    drop(readiness);
    drop(relay);
    if xdp.is_some() {
        drop(xdp);
        tracing::info!("XDP detached");
    }
    Ok(())
}

/// Attaches XDP when the configuration asks for it. `auto` falls back to userspace-only
/// relaying with a log line saying why; so do `native`/`skb`, loudly.
fn select_datapath(config: &Config) -> (AnyDatapath, Option<XdpRelay>) {
    let userspace = || AnyDatapath::Userspace(InMemoryDatapath::default());
    if config.xdp_mode == XdpMode::Off {
        tracing::info!("XDP: off (xdp.mode = \"off\"); userspace relays everything");
        return (userspace(), None);
    }
    match attach_xdp(config) {
        Ok((relay, datapath, memory)) => {
            match memory {
                Some(bytes) => tracing::info!(
                    "{}; maps take {} KiB of kernel memory",
                    relay.status(),
                    bytes / 1024
                ),
                None => tracing::info!("{}", relay.status()),
            }
            (AnyDatapath::Xdp(datapath), Some(relay))
        }
        Err(error) if config.xdp_mode == XdpMode::Auto => {
            tracing::warn!(
                "XDP: not attached ({error:#}); falling back to userspace-only relaying"
            );
            (userspace(), None)
        }
        Err(error) => {
            tracing::error!(
                "XDP: mode \"{}\" could not be attached ({error:#}); relaying in userspace only",
                config.xdp_mode
            );
            (userspace(), None)
        }
    }
}

fn attach_xdp(config: &Config) -> anyhow::Result<(XdpRelay, BpfDatapath, Option<u64>)> {
    let interfaces = if config.xdp_interfaces.is_empty() {
        let mut addresses: Vec<IpAddr> = config.listen.iter().map(SocketAddr::ip).collect();
        addresses.extend(
            [config.relay_v4, config.relay_v6]
                .into_iter()
                .flatten()
                .map(|relay| relay.bind),
        );
        interfaces::interfaces_holding(&addresses)
            .context("finding the interfaces of the listen/relay addresses")?
    } else {
        config.xdp_interfaces.clone()
    };
    let relay = XdpRelay::attach(&config.xdp_settings(interfaces))?;
    let datapath = relay.datapath().context("opening the XDP maps")?;
    let memory = relay.map_memory_bytes().ok();
    Ok((relay, datapath, memory))
}

fn log_startup(config: &Config) {
    tracing::info!(
        "turn-relay {} starting (config: {})",
        env!("CARGO_PKG_VERSION"),
        config.source
    );
    tracing::info!("realm: {}", config.realm);
    for (family, relay) in [("IPv4", config.relay_v4), ("IPv6", config.relay_v6)] {
        if let Some(relay) = relay {
            if relay.advertised == relay.bind {
                tracing::info!("relay address ({family}): {}", relay.bind);
            } else {
                tracing::info!(
                    "relay address ({family}): {} advertised as {}",
                    relay.bind,
                    relay.advertised
                );
            }
        }
    }
    tracing::info!(
        "relay ports: {}-{}; allocations: at most {} ({} per user); lifetime {} s (max {} s)",
        config.port_range.start(),
        config.port_range.end(),
        config.max_allocations,
        if config.max_allocations_per_user == 0 {
            "unlimited".to_owned()
        } else {
            config.max_allocations_per_user.to_string()
        },
        config.default_lifetime.as_secs(),
        config.max_lifetime.as_secs()
    );
    tracing::info!("auth: {}", config.auth_summary());
    if config.users.is_empty() && config.auth_secrets.is_empty() && config.zrest_secrets.is_empty()
    {
        tracing::warn!("no credentials configured: every allocation will be refused");
    }
    if !config.nonce_secret_configured {
        tracing::info!("nonce secret: random for this run (set auth.nonce_secret on relays sharing a load balancer)");
    }
    if let Some((user, password)) = config.demo_credentials() {
        tracing::info!("demo credentials (embedded default, new on every start): user {user:?} password {password:?}");
        if let Some(listen) = config.listen.first() {
            tracing::info!(
                "try it: turnutils_peer -L 127.0.0.1 -p 3480 & turnutils_uclient -u {user} -w {password} -p {} -e 127.0.0.1 -r 3480 -n 10 {}",
                listen.port(),
                listen.ip()
            );
        }
    }
    if !config.peers_allow.is_empty() {
        tracing::info!("peers explicitly allowed: {}", join(&config.peers_allow));
    }
    if !config.peers_deny.is_empty() {
        tracing::info!("peers denied: {}", join(&config.peers_deny));
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn now() -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    Now {
        instant: Instant::now(),
        unix_secs,
    }
}

/// The server and everything the relay path touches per datagram.
struct RelayLoop {
    server: Server<AnyDatapath, StdRng>,
    sockets: SocketTable,
    received: RecvBatch,
    /// One reusable output buffer per batch slot (ChannelData/Data indication framing).
    outputs: Vec<Vec<u8>>,
    /// Relay data produced by the current batch: (batch slot, forward).
    forwards: Vec<(usize, Forward)>,
    ready: ReadyTokens,
    io: IoCounters,
}

impl RelayLoop {
    fn new(server: Server<AnyDatapath, StdRng>, sockets: SocketTable) -> Self {
        RelayLoop {
            server,
            sockets,
            received: RecvBatch::new(),
            outputs: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            forwards: Vec::with_capacity(BATCH),
            ready: ReadyTokens::new(),
            io: IoCounters::default(),
        }
    }

    async fn run(
        &mut self,
        readiness: &AsyncFd<OwnedFd>,
        xdp: &Option<XdpRelay>,
        shared_metrics: &SharedMetrics,
        shutdown: impl Future<Output = &'static str>,
    ) -> anyhow::Result<&'static str> {
        tokio::pin!(shutdown);
        let timer = tokio::time::sleep(IDLE_SLEEP);
        tokio::pin!(timer);
        let mut metrics_tick = tokio::time::interval(METRICS_INTERVAL);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .server
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_SLEEP);
            timer.as_mut().reset(deadline.into());
            tokio::select! {
                biased;
                reason = &mut shutdown => return Ok(reason),
                () = &mut timer => {
                    let now = now();
                    self.server.handle_timeout(now);
                    self.drain_control(now);
                }
                guard = readiness.readable() => {
                    let mut guard = guard.context("waiting for socket readiness")?;
                    let mut drained = false;
                    for _ in 0..ROUNDS_PER_WAKE {
                        if !self.receive_ready().context("polling sockets")? {
                            drained = true;
                            break;
                        }
                    }
                    if drained {
                        guard.clear_ready();
                    }
                }
                _ = metrics_tick.tick() => self.publish_metrics(xdp, shared_metrics),
            }
        }
    }

    /// One epoll round: reads every ready socket. False when none was ready.
    fn receive_ready(&mut self) -> std::io::Result<bool> {
        let ready = self.ready.poll(self.sockets.epoll())?;
        if ready == 0 {
            return Ok(false);
        }
        let mut tokens = [0u64; 64];
        let mut count = 0;
        for (slot, token) in tokens.iter_mut().zip(self.ready.tokens()) {
            *slot = token;
            count += 1;
        }
        let now = now();
        for &token in tokens.iter().take(count) {
            for _ in 0..BATCHES_PER_SOCKET {
                let Some(open) = self.sockets.by_token(token) else {
                    break;
                };
                let (local, role) = (open.local, open.role);
                let received = match self.received.receive(&open.socket) {
                    Ok(received) => received,
                    Err(error) => {
                        // ICMP errors (e.g. port unreachable from a peer) surface here.
                        tracing::trace!(%error, %local, "receive error");
                        break;
                    }
                };
                if received == 0 {
                    break;
                }
                self.handle_batch(now, local, role, received);
                if received < BATCH {
                    break;
                }
            }
        }
        Ok(true)
    }

    /// Feeds one received batch to the server, then sends the relay data it produced.
    fn handle_batch(&mut self, now: Now, local: SocketAddr, role: SocketRole, received: usize) {
        self.io.received += received as u64;
        self.forwards.clear();
        for index in 0..received {
            let Some((source, packet)) = self.received.datagram(index) else {
                self.io.truncated += 1;
                continue;
            };
            let Some(out) = self.outputs.get_mut(index) else {
                continue;
            };
            out.clear();
            let forward = match role {
                SocketRole::Listener => {
                    let flow = ClientFlow {
                        client: source,
                        listener: local,
                    };
                    self.server.handle_client_datagram(now, flow, packet)
                }
                SocketRole::Relay => {
                    self.server
                        .handle_peer_datagram(now.instant, local, source, packet, out)
                }
            };
            if let Some(forward) = forward {
                self.forwards.push((index, forward));
            }
            self.drain_control(now);
        }
        self.send_forwards();
    }

    /// Executes the server's commands, then sends its queued responses (in that order:
    /// a relay socket must exist before the Allocate success response leaves).
    fn drain_control(&mut self, now: Now) {
        while let Some(command) = self.server.poll_command() {
            match command {
                Command::OpenRelay { relay } => {
                    if let Err(error) = self.sockets.bind(relay, SocketRole::Relay) {
                        tracing::warn!(%relay, %error, "cannot bind relay socket; answering 508");
                        self.io.relay_bind_failures += 1;
                        self.server.handle_relay_bind_failed(now, relay);
                    }
                }
                Command::CloseRelay { relay } => self.sockets.close(relay),
            }
        }
        while let Some(transmit) = self.server.poll_transmit() {
            let sent = match self.sockets.by_address(transmit.from) {
                Some(open) => sockets::send_one(&open.socket, transmit.to, &transmit.payload),
                None => {
                    tracing::debug!(from = %transmit.from, "no socket to send a response from");
                    false
                }
            };
            if !sent {
                self.io.send_dropped += 1;
            }
        }
    }

    /// Sends this batch's relay data with sendmmsg (one call per run of the same socket).
    fn send_forwards(&mut self) {
        if self.forwards.is_empty() {
            return;
        }
        let placeholder = Outgoing {
            fd: -1,
            to: SocketAddr::from(([0, 0, 0, 0], 0)),
            payload: &[],
        };
        let mut outgoing: [Outgoing<'_>; BATCH] = [placeholder; BATCH];
        let mut count = 0;
        let mut unsendable = 0u64;
        for (index, forward) in &self.forwards {
            let payload = match &forward.payload {
                Payload::Input(range) => self
                    .received
                    .datagram(*index)
                    .and_then(|(_, packet)| packet.get(range.clone())),
                Payload::Output => self.outputs.get(*index).map(Vec::as_slice),
            };
            let fd = self
                .sockets
                .by_address(forward.from)
                .map(|open| open.socket.as_raw_fd());
            match (payload, fd, outgoing.get_mut(count)) {
                (Some(payload), Some(fd), Some(slot)) => {
                    *slot = Outgoing {
                        fd,
                        to: forward.to,
                        payload,
                    };
                    count += 1;
                }
                _ => unsendable += 1,
            }
        }
        let dropped = sockets::send_batch(outgoing.get(..count).unwrap_or_default());
        self.io.send_dropped += unsendable + dropped as u64;
    }

    fn publish_metrics(&self, xdp: &Option<XdpRelay>, shared_metrics: &SharedMetrics) {
        let xdp_counters = xdp.as_ref().and_then(|relay| match relay.counters() {
            Ok(counters) => Some(counters),
            Err(error) => {
                tracing::debug!("reading XDP counters: {error:#}");
                None
            }
        });
        let snapshot = MetricsSnapshot {
            stats: self.server.stats(),
            relay_sockets: self.sockets.relay_count(),
            io: self.io,
            xdp: xdp_counters,
        };
        match shared_metrics.lock() {
            Ok(mut shared) => *shared = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;
    use crate::stun::{
        attributes, channel_data, Class, Message, MessageBuilder, Method, PasswordAlgorithm,
        TransactionId,
    };

    const REALM: &str = "daemon-test.local";
    const CHANNEL: u16 = 0x4001;

    /// A UDP port on 127.0.0.1 that was free a moment ago.
    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("ephemeral port")
    }

    fn socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        socket
    }

    fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buffer = vec![0u8; 2048];
        let (length, from) = socket.recv_from(&mut buffer).expect("a reply within 3 s");
        buffer.truncate(length);
        (buffer, from)
    }

    /// Sends a request built by `build` and returns the response.
    fn transact(
        client: &UdpSocket,
        server: SocketAddr,
        id: u8,
        method: Method,
        build: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let mut request = Vec::new();
        let mut builder = MessageBuilder::new(
            &mut request,
            method,
            Class::Request,
            &TransactionId([id; 12]),
        );
        build(&mut builder);
        client.send_to(&request, server).expect("send request");
        let (response, _) = receive(client);
        response
    }

    /// Client ↔ daemon ↔ peer over loopback: STUN Binding, the 401 challenge, an
    /// authenticated Allocate, ChannelBind, and ChannelData relayed both ways through the
    /// batched userspace path.
    #[test]
    fn relays_channel_data_between_client_and_peer_over_loopback() {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = format!(
            "[server]\nrealm = \"{REALM}\"\nlisten = [\"{listen}\"]\nrelay_address = \"127.0.0.1\"\nport_range = \"61000-61999\"\n\
             [auth]\nusers = [{{ name = \"tester\", password = \"pw\" }}]\n[peers]\nallow = [\"127.0.0.0/8\"]\n\
             [xdp]\nmode = \"off\"\n[metrics]\nlisten = \"\"\n"
        );
        let config = Config::parse(&text, "test").expect("test config");
        let key = config
            .authenticator()
            .credential("tester", REALM, 0)
            .ok()
            .and_then(|credential| credential.key(PasswordAlgorithm::Md5).map(<[u8]>::to_vec))
            .expect("static user key");

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(run(config, async move {
                let _ = stopped.await;
                "test finished"
            }))
        });

        let client = socket();
        let peer = socket();
        let peer_address = peer.local_addr().expect("peer address");

        // The daemon may still be binding its listener: retry the Binding request briefly.
        let mut binding = None;
        for attempt in 0..20u8 {
            let mut request = Vec::new();
            MessageBuilder::new(
                &mut request,
                Method::BINDING,
                Class::Request,
                &TransactionId([attempt; 12]),
            );
            client.send_to(&request, listen).expect("send binding");
            client
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut buffer = vec![0u8; 2048];
            if let Ok((length, _)) = client.recv_from(&mut buffer) {
                buffer.truncate(length);
                binding = Some(buffer);
                break;
            }
        }
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let binding = binding.expect("the daemon answers STUN Binding");
        let binding = Message::parse(&binding).expect("binding response parses");
        assert_eq!(binding.class(), Class::SuccessResponse);
        assert_eq!(
            binding.xor_mapped_address().expect("valid"),
            Some(client.local_addr().expect("addr"))
        );

        let requested_udp = |builder: &mut MessageBuilder<'_>| {
            builder.u32_attribute(attributes::REQUESTED_TRANSPORT, 17 << 24);
        };
        let challenge = transact(&client, listen, 100, Method::ALLOCATE, requested_udp);
        let challenge = Message::parse(&challenge).expect("401 parses");
        assert_eq!(
            challenge.error_code().expect("valid").map(|e| e.code),
            Some(401)
        );
        let nonce = challenge.nonce().expect("valid").expect("nonce").to_vec();
        assert_eq!(challenge.realm().expect("valid"), Some(REALM));

        let authenticated = |builder: &mut MessageBuilder<'_>| {
            builder
                .attribute(attributes::USERNAME, b"tester")
                .attribute(attributes::REALM, REALM.as_bytes())
                .attribute(attributes::NONCE, &nonce)
                .message_integrity(&key);
        };
        let allocated = transact(&client, listen, 101, Method::ALLOCATE, |builder| {
            requested_udp(builder);
            authenticated(builder);
        });
        let allocated = Message::parse(&allocated).expect("allocate response parses");
        assert_eq!(
            allocated.class(),
            Class::SuccessResponse,
            "{:?}",
            allocated.error_code()
        );
        let relayed = allocated
            .xor_relayed_address()
            .expect("valid")
            .expect("relayed address");
        assert!((61000..=61999).contains(&relayed.port()));

        let bound = transact(&client, listen, 102, Method::CHANNEL_BIND, |builder| {
            builder
                .attribute(
                    attributes::CHANNEL_NUMBER,
                    &[(CHANNEL >> 8) as u8, CHANNEL as u8, 0, 0],
                )
                .xor_address(attributes::XOR_PEER_ADDRESS, peer_address);
            authenticated(builder);
        });
        let bound = Message::parse(&bound).expect("channel bind response parses");
        assert_eq!(
            bound.class(),
            Class::SuccessResponse,
            "{:?}",
            bound.error_code()
        );

        // Client → peer: several datagrams in a row exercise batching.
        let mut framed = Vec::new();
        for index in 0..5u8 {
            channel_data::encode(&mut framed, CHANNEL, &[index; 40]);
            client.send_to(&framed, listen).expect("send channel data");
        }
        for index in 0..5u8 {
            let (payload, from) = receive(&peer);
            assert_eq!(from, relayed, "peer data comes from the relayed address");
            assert_eq!(payload, vec![index; 40]);
        }

        // Peer → client arrives framed as ChannelData.
        peer.send_to(b"pong", relayed).expect("peer reply");
        let (reply, from) = receive(&client);
        assert_eq!(from, listen);
        let mut expected = Vec::new();
        channel_data::encode(&mut expected, CHANNEL, b"pong");
        assert_eq!(reply.get(..8), expected.get(..8));

        let _ = stop.send(());
        let result = daemon.join().expect("daemon thread");
        assert!(result.is_ok(), "daemon ended with {result:?}");
    }
}
