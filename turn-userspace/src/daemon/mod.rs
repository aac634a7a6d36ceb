//! The daemon: drives the sans-IO [`Server`] with real UDP sockets on tokio.
//!
//! The relay runs N workers (one per CPU by default), like coturn's relay threads. Each
//! worker is a thread with its own current-thread tokio runtime, its own epoll instance
//! and its own listener socket per listen address (all bound with SO_REUSEPORT: the
//! kernel spreads clients over them by a hash of the 4-tuple). The workers share ONE
//! [`Server`] behind a mutex, so quotas, reservation tokens and nonces behave exactly as
//! with one thread; the lock is held only while the core handles a received batch (a few
//! microseconds), while the system calls — where nearly all the time goes — run in
//! parallel outside it. That includes the fast-path map updates the core asks for: they
//! are applied behind a second lock, in order (see `RelayLoop::end_section`). A relay socket is watched by the worker that opened it; any
//! worker may send from it, and one that closes another worker's relay socket hands the
//! close to that worker's inbox and wakes it through its eventfd.
//!
//! Sockets are read and written in batches (recvmmsg/sendmmsg) into buffers allocated
//! once. After every `handle_*` call the worker executes the server's commands (binding or
//! closing relay sockets) before taking its queued responses, as the core requires;
//! responses and relay data (a [`Forward`] that points into the receive buffer or the
//! per-slot output buffer) leave in sendmmsg batches, with UDP GSO grouping datagrams to
//! the same destination.
//!
//! With XDP attached, the kernel relays ChannelData and Send/Data for the flows the
//! core installs; what reaches these sockets are misses, which are relayed identically.

pub mod config;
mod interfaces;
mod metrics;
mod sockets;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};

use crate::bpf::{BpfDatapath, XdpMode, XdpRelay};
use crate::daemon::config::Config;
use crate::protocol::datapath::{
    ClientFlow, Datapath, FastPath, FastPathCommand, InMemoryDatapath,
};
use crate::protocol::turn::{Command, Forward, Now, Payload, Server, Transmit};

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
/// Epoll token of a worker's wake-up eventfd (socket tokens are small slot indices).
const WAKE_TOKEN: u64 = u64::MAX;

/// The number of relay workers when none is asked for: one per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// What every worker shares.
struct Hub {
    shared: Mutex<Shared>,
    /// The fast path the server's commands are applied to: the XDP maps, or the in-memory
    /// stand-in when XDP is off or could not be attached. Its own lock, so map system
    /// calls run off the server's; see [`RelayLoop::end_section`] for the ordering.
    fast_path: Mutex<FastPath<Box<dyn Datapath>>>,
    /// Per worker: relay sockets another worker wants closed, and the eventfd that wakes
    /// the worker to close them.
    closing: Vec<Mutex<Vec<SocketAddr>>>,
    wakers: Vec<OwnedFd>,
    /// Per worker: its IO counters, published about once a second.
    io: Vec<Mutex<IoCounters>>,
}

/// The state behind the hub's lock.
struct Shared {
    server: Server<StdRng>,
    /// Every open relay socket and the worker watching it.
    relays: HashMap<SocketAddr, (Arc<UdpSocket>, usize)>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_fast_path(&self) -> MutexGuard<'_, FastPath<Box<dyn Datapath>>> {
        self.fast_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the relay with `workers` relay threads (at least 1) until `shutdown` completes
/// (it yields the reason, e.g. "SIGTERM") or a worker fails.
pub async fn run(
    config: Config,
    workers: usize,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    log_startup(&config);
    let workers = workers.max(1);
    let reuse_port = workers > 1;

    // Every listener socket of every worker is bound before any traffic is read, and all
    // stay open until the end: the SO_REUSEPORT group (and so the client → worker hash)
    // never changes while the daemon runs.
    let mut listeners: Vec<Vec<(UdpSocket, SocketAddr)>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        let mut sockets = Vec::with_capacity(config.listen.len());
        for listen in &config.listen {
            let socket = sockets::bind_udp(*listen, SocketRole::Listener, reuse_port)
                .with_context(|| format!("binding the TURN listener {listen}"))?;
            sockets.push((socket, *listen));
        }
        listeners.push(sockets);
    }
    tracing::info!(
        "listening for STUN/TURN on UDP {} with {workers} worker thread(s){}",
        join(&config.listen),
        if reuse_port { " (SO_REUSEPORT)" } else { "" }
    );

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
        StdRng::from_entropy(),
    );
    let hub = Arc::new(Hub {
        shared: Mutex::new(Shared {
            server,
            relays: HashMap::new(),
        }),
        fast_path: Mutex::new(FastPath::new(datapath)),
        closing: (0..workers).map(|_| Mutex::default()).collect(),
        wakers: (0..workers)
            .map(|_| sockets::event_fd())
            .collect::<std::io::Result<_>>()
            .context("creating the workers' eventfds")?,
        io: (0..workers).map(|_| Mutex::default()).collect(),
    });
    let (stop, stop_signal) = watch::channel(false);
    let (worker_ended, mut worker_ended_signal) = mpsc::unbounded_channel::<()>();
    let mut threads = Vec::with_capacity(workers);
    for (index, sockets) in listeners.into_iter().enumerate() {
        let hub = Arc::clone(&hub);
        let mut stop = stop_signal.clone();
        let ended = worker_ended.clone();
        let thread = std::thread::Builder::new()
            .name(format!("turn-worker-{index}"))
            .spawn(move || {
                let result = run_worker(index, hub, sockets, async move {
                    // A closed channel means the daemon is gone: stop as well.
                    let _ = stop.wait_for(|stop| *stop).await;
                });
                let _ = ended.send(());
                result
            })
            .context("starting a relay worker thread")?;
        threads.push(thread);
    }
    drop(worker_ended);

    let mut metrics_tick = tokio::time::interval(METRICS_INTERVAL);
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let reason = loop {
        tokio::select! {
            biased;
            reason = &mut shutdown => break reason,
            _ = worker_ended_signal.recv() => break "a relay worker stopped",
            _ = metrics_tick.tick() => publish_metrics(&hub, &xdp, &shared_metrics),
        }
    };
    let _ = stop.send(true);
    if let Some(task) = metrics_task {
        task.abort();
    }

    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!("relay worker failed: {error:#}");
                failure.get_or_insert(error);
            }
            Err(_) => {
                failure.get_or_insert_with(|| anyhow::anyhow!("a relay worker panicked"));
            }
        }
    }
    let received: u64 = hub
        .io
        .iter()
        .map(|io| io.lock().unwrap_or_else(PoisonError::into_inner).received)
        .sum();
    let stats = hub.lock().server.stats();
    tracing::info!(
        reason,
        allocations = stats.allocations,
        permissions = stats.permissions,
        channels = stats.channels,
        userspace_to_peer_packets = stats.to_peer_channel_data.packets + stats.to_peer_send.packets,
        userspace_to_client_packets =
            stats.to_client_channel_data.packets + stats.to_client_data_indication.packets,
        received_datagrams = received,
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
    // Relay sockets close with the hub; dropping the XdpRelay detaches the program.
    drop(hub);
    if xdp.is_some() {
        drop(xdp);
        tracing::info!("XDP detached");
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Publishes the server's state, the workers' IO counters (summed) and the XDP counters.
fn publish_metrics(hub: &Hub, xdp: &Option<XdpRelay>, shared_metrics: &SharedMetrics) {
    let mut io = IoCounters::default();
    for worker in &hub.io {
        io.add(&worker.lock().unwrap_or_else(PoisonError::into_inner));
    }
    let (stats, relay_sockets) = {
        let shared = hub.lock();
        (shared.server.stats(), shared.relays.len())
    };
    let snapshot = MetricsSnapshot {
        stats,
        relay_sockets,
        io,
        xdp: xdp.as_ref().and_then(|relay| match relay.counters() {
            Ok(counters) => Some(counters),
            Err(error) => {
                tracing::debug!("reading XDP counters: {error:#}");
                None
            }
        }),
    };
    *shared_metrics
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = snapshot;
}

/// One relay worker on a current-thread tokio runtime of its own, until `stop` completes.
fn run_worker(
    index: usize,
    hub: Arc<Hub>,
    listeners: Vec<(UdpSocket, SocketAddr)>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a worker's tokio runtime")?;
    runtime.block_on(async move {
        let epoll = Epoll::new().context("creating the epoll instance")?;
        let epoll_handle = epoll.duplicate_fd().context("duplicating the epoll fd")?;
        // SAFETY: `epoll_handle` is our own duplicate of the epoll fd: the AsyncFd owns it
        // and nothing else closes it.
        let readiness =
            unsafe { AsyncFd::register_with_interest(epoll_handle, Interest::READABLE) }
                .map_err(std::io::Error::from)
                .context("registering the epoll instance with tokio")?;
        let waker = hub.wakers.get(index).context("worker eventfd")?;
        epoll
            .add(waker.as_raw_fd(), WAKE_TOKEN)
            .context("watching the worker's eventfd")?;
        let mut sockets = SocketTable::new(epoll);
        for (socket, local) in listeners {
            sockets
                .adopt(Arc::new(socket), local, SocketRole::Listener)
                .with_context(|| format!("watching the TURN listener {local}"))?;
        }
        RelayLoop::new(index, hub, sockets)
            .run(&readiness, stop)
            .await
    })
}

/// Attaches XDP when the configuration asks for it. `auto` falls back to userspace-only
/// relaying with a log line saying why; so do `native`/`skb`, loudly.
fn select_datapath(config: &Config) -> (Box<dyn Datapath>, Option<XdpRelay>) {
    let userspace = || -> Box<dyn Datapath> { Box::new(InMemoryDatapath::default()) };
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
            (Box::new(datapath), Some(relay))
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
                "try it: turnutils_peer -L 127.0.0.2 -p 3480 & turnutils_uclient -u {user} -w {password} -p {} -e 127.0.0.2 -r 3480 -n 10 {}",
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

/// One worker's sockets and buffers: everything the relay path touches per datagram.
struct RelayLoop {
    index: usize,
    hub: Arc<Hub>,
    sockets: SocketTable,
    received: RecvBatch,
    /// One reusable output buffer per batch slot (ChannelData/Data indication framing).
    outputs: Vec<Vec<u8>>,
    /// Relay data produced by the current batch: (batch slot, forward).
    forwards: Vec<(usize, Forward)>,
    /// STUN responses taken from the server, sent after the batch.
    responses: Vec<Transmit>,
    /// The socket each forward / response leaves from (None: no such socket).
    forward_fds: Vec<Option<RawFd>>,
    response_fds: Vec<Option<RawFd>>,
    /// Other workers' relay sockets sent from in this batch, kept open until it is sent.
    borrowed: Vec<Arc<UdpSocket>>,
    /// The fast-path commands of the current server-lock section.
    fast_path_commands: Vec<FastPathCommand>,
    ready: ReadyTokens,
    io: IoCounters,
}

/// The fd of the local socket at `local`: this worker's own, or another worker's relay
/// socket (kept alive in `borrowed` until the batch is sent).
fn socket_fd(
    sockets: &SocketTable,
    shared: &Shared,
    borrowed: &mut Vec<Arc<UdpSocket>>,
    local: SocketAddr,
) -> Option<RawFd> {
    if let Some(open) = sockets.by_address(local) {
        return Some(open.socket.as_raw_fd());
    }
    let (socket, _) = shared.relays.get(&local)?;
    borrowed.push(Arc::clone(socket));
    Some(socket.as_raw_fd())
}

impl RelayLoop {
    fn new(index: usize, hub: Arc<Hub>, sockets: SocketTable) -> Self {
        RelayLoop {
            index,
            hub,
            sockets,
            received: RecvBatch::new(),
            outputs: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            forwards: Vec::with_capacity(BATCH),
            responses: Vec::with_capacity(BATCH),
            forward_fds: Vec::with_capacity(BATCH),
            response_fds: Vec::with_capacity(BATCH),
            borrowed: Vec::with_capacity(BATCH),
            fast_path_commands: Vec::new(),
            ready: ReadyTokens::new(),
            io: IoCounters::default(),
        }
    }

    /// Relays until `stop` completes.
    async fn run(
        &mut self,
        readiness: &AsyncFd<OwnedFd>,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(stop);
        let timer = tokio::time::sleep(IDLE_SLEEP);
        tokio::pin!(timer);
        let mut metrics_tick = tokio::time::interval(METRICS_INTERVAL);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .hub
                .lock()
                .server
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + IDLE_SLEEP);
            timer.as_mut().reset(deadline.into());
            tokio::select! {
                biased;
                () = &mut stop => {
                    self.publish_io();
                    return Ok(());
                }
                () = &mut timer => self.handle_timeout(),
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
                _ = metrics_tick.tick() => self.publish_io(),
            }
        }
    }

    /// Publishes this worker's IO counters for the metrics endpoint.
    fn publish_io(&self) {
        if let Some(slot) = self.hub.io.get(self.index) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = self.io;
        }
    }

    /// Closes the relay sockets of this worker that other workers' commands closed.
    fn close_requested_relays(&mut self) {
        let Some(inbox) = self.hub.closing.get(self.index) else {
            return;
        };
        let closing = std::mem::take(&mut *inbox.lock().unwrap_or_else(PoisonError::into_inner));
        for relay in closing {
            self.sockets.close(relay);
        }
    }

    fn handle_timeout(&mut self) {
        let now = now();
        let hub = Arc::clone(&self.hub);
        let mut shared = hub.lock();
        shared.server.handle_timeout(now);
        self.drain_control(&mut shared, now);
        self.resolve_sockets(&shared);
        self.end_section(&hub, shared);
        self.send_responses();
        self.borrowed.clear();
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
            if token == WAKE_TOKEN {
                if let Some(waker) = self.hub.wakers.get(self.index) {
                    sockets::clear_wake(waker);
                }
                self.close_requested_relays();
                continue;
            }
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

    /// Feeds one received batch to the server (under the hub's lock), then sends the
    /// responses and relay data it produced (outside it).
    fn handle_batch(&mut self, now: Now, local: SocketAddr, role: SocketRole, received: usize) {
        self.io.received += received as u64;
        self.forwards.clear();
        let hub = Arc::clone(&self.hub);
        let mut shared = hub.lock();
        for index in 0..received {
            let Some((source, packet)) = self.received.datagram(index) else {
                self.io.truncated += 1;
                continue;
            };
            let hop_limit = self.received.hop_limit(index);
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
                    shared
                        .server
                        .handle_client_datagram(now, flow, packet, hop_limit)
                }
                SocketRole::Relay => shared.server.handle_peer_datagram(
                    now.instant,
                    local,
                    source,
                    packet,
                    out,
                    hop_limit,
                ),
            };
            if let Some(forward) = forward {
                self.forwards.push((index, forward));
            }
            self.drain_control(&mut shared, now);
        }
        self.resolve_sockets(&shared);
        self.end_section(&hub, shared);
        self.send_responses();
        self.send_forwards();
        self.borrowed.clear();
    }

    /// Ends a section under the server lock: takes the fast-path commands the server
    /// emitted in it, releases the server lock and applies them, so map system calls never
    /// hold up the workers waiting for the server. Afterwards the responses may be sent.
    ///
    /// Two promises hold with any number of workers:
    /// 1. Commands are applied in the order the server emitted them. The server emits
    ///    them in the order of its lock sections. A section that emitted commands takes
    ///    the fast-path lock *before* it releases the server lock, and keeps it until
    ///    they are applied. A later section starts after that release, so its worker asks
    ///    for the fast-path lock only after the earlier worker holds it, and gets it only
    ///    once the earlier commands are applied. (A channel installed after its
    ///    allocation's removal would relay without an allocation.)
    /// 2. No response leaves before the state of every earlier section is in the fast
    ///    path (RFC 8656 §9, §12: a permission or channel exists once the client sees
    ///    success). This worker's own commands are applied before it returns. A section
    ///    without commands but with responses (e.g. a retransmission answered from the
    ///    cache) takes and drops the fast-path lock after releasing the server lock: by the
    ///    argument above, every earlier section's commands are applied by then.
    ///
    /// The locks are always taken server first, fast path second, so they cannot deadlock.
    fn end_section(&mut self, hub: &Hub, mut shared: MutexGuard<'_, Shared>) {
        self.fast_path_commands
            .extend(std::iter::from_fn(|| shared.server.poll_fast_path()));
        if self.fast_path_commands.is_empty() {
            drop(shared);
            if !self.responses.is_empty() {
                drop(hub.lock_fast_path());
            }
            return;
        }
        let mut fast_path = hub.lock_fast_path();
        drop(shared);
        for command in self.fast_path_commands.drain(..) {
            fast_path.apply(command);
        }
    }

    /// Executes the server's commands, then takes its queued responses (in that order:
    /// a relay socket must exist before the Allocate success response leaves).
    fn drain_control(&mut self, shared: &mut Shared, now: Now) {
        while let Some(command) = shared.server.poll_command() {
            match command {
                Command::OpenRelay { relay } => match self.sockets.bind(relay, SocketRole::Relay) {
                    Ok(socket) => {
                        shared.relays.insert(relay, (socket, self.index));
                    }
                    Err(error) => {
                        tracing::warn!(%relay, %error, "cannot bind relay socket; answering 508");
                        self.io.relay_bind_failures += 1;
                        shared.server.handle_relay_bind_failed(now, relay);
                    }
                },
                Command::CloseRelay { relay } => match shared.relays.remove(&relay) {
                    Some((_, owner)) if owner != self.index => {
                        if let (Some(inbox), Some(waker)) =
                            (self.hub.closing.get(owner), self.hub.wakers.get(owner))
                        {
                            inbox
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(relay);
                            sockets::wake(waker);
                        }
                    }
                    _ => self.sockets.close(relay),
                },
            }
        }
        while let Some(transmit) = shared.server.poll_transmit() {
            self.responses.push(transmit);
        }
    }

    /// Finds the socket every response and forward of this batch leaves from.
    fn resolve_sockets(&mut self, shared: &Shared) {
        self.forward_fds.clear();
        for (_, forward) in &self.forwards {
            let fd = socket_fd(&self.sockets, shared, &mut self.borrowed, forward.from);
            self.forward_fds.push(fd);
        }
        self.response_fds.clear();
        for transmit in &self.responses {
            let fd = socket_fd(&self.sockets, shared, &mut self.borrowed, transmit.from);
            self.response_fds.push(fd);
        }
    }

    /// Sends the taken responses with sendmmsg (one call per run of the same socket).
    fn send_responses(&mut self) {
        let placeholder = Outgoing {
            fd: -1,
            to: SocketAddr::from(([0, 0, 0, 0], 0)),
            payload: &[],
            hop_limit: None,
        };
        for (transmits, fds) in self
            .responses
            .chunks(BATCH)
            .zip(self.response_fds.chunks(BATCH))
        {
            let mut outgoing: [Outgoing<'_>; BATCH] = [placeholder; BATCH];
            let mut count = 0;
            let mut unsendable = 0u64;
            for (transmit, fd) in transmits.iter().zip(fds) {
                match (fd, outgoing.get_mut(count)) {
                    (Some(fd), Some(slot)) => {
                        *slot = Outgoing {
                            fd: *fd,
                            to: transmit.to,
                            payload: &transmit.payload,
                            hop_limit: None,
                        };
                        count += 1;
                    }
                    _ => {
                        tracing::debug!(from = %transmit.from, "no socket to send a response from");
                        unsendable += 1;
                    }
                }
            }
            let dropped = sockets::send_batch(outgoing.get(..count).unwrap_or_default());
            self.io.send_dropped += unsendable + dropped as u64;
        }
        self.responses.clear();
        self.response_fds.clear();
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
            hop_limit: None,
        };
        let mut outgoing: [Outgoing<'_>; BATCH] = [placeholder; BATCH];
        let mut count = 0;
        let mut unsendable = 0u64;
        for ((index, forward), fd) in self.forwards.iter().zip(&self.forward_fds) {
            let payload = match &forward.payload {
                Payload::Input(range) => self
                    .received
                    .datagram(*index)
                    .and_then(|(_, packet)| packet.get(range.clone())),
                Payload::Output => self.outputs.get(*index).map(Vec::as_slice),
            };
            match (payload, fd, outgoing.get_mut(count)) {
                (Some(payload), Some(fd), Some(slot)) => {
                    *slot = Outgoing {
                        fd: *fd,
                        to: forward.to,
                        payload,
                        hop_limit: forward.hop_limit,
                    };
                    count += 1;
                }
                _ => unsendable += 1,
            }
        }
        let outgoing = outgoing.get_mut(..count).unwrap_or_default();
        // Grouped by socket and destination (a stable sort keeps each flow's order) so
        // they leave in as few sendmmsg calls and GSO messages as possible.
        outgoing.sort_by_key(|datagram| (datagram.fd, datagram.to));
        let dropped = sockets::send_batch(outgoing);
        self.io.send_dropped += unsendable + dropped as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use super::*;
    use crate::protocol::stun::{
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

    fn socket(ip: &str) -> UdpSocket {
        let socket = UdpSocket::bind((ip, 0)).expect("bind loopback");
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
            runtime.block_on(run(config, 2, async move {
                let _ = stopped.await;
                "test finished"
            }))
        });

        let client = socket("127.0.0.1");
        // Not the relay's own address: its non-relay ports are never peers.
        let peer = socket("127.0.0.2");
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
