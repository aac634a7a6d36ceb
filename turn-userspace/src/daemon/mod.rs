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

mod admin;
pub mod config;
mod control;
mod interfaces;
pub mod logging;
mod metrics;
mod report;
mod sockets;
mod xdp;

/// The admin endpoint's JSON documents and its command-line client (`turn-relay ctl`).
pub use admin::{api, ctl};

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch};

use crate::bpf::XdpRelay;
use crate::daemon::config::{Config, Sources};
use crate::daemon::logging::LevelHandle;
use crate::protocol::datapath::{ClientFlow, Datapath, FastPath, FastPathCommand};
use crate::protocol::turn::{Command, Forward, Now, Payload, Server, Transmit};

use admin::AdminState;
use control::{Control, XdpSetup};
use metrics::{IoCounters, Metrics, MetricsSnapshot};
use report::{join, log_startup, log_totals};
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

/// What the daemon needs besides its configuration to be operated while it runs.
#[derive(Default)]
pub struct Options {
    /// Where the configuration came from: a reload reads them again.
    pub sources: Sources,
    /// The logger's level, changed by a reload (None: leave logging alone).
    pub log_filter: Option<LevelHandle>,
}

/// Runs the relay with `workers` relay threads (at least 1) until `shutdown` completes
/// (it yields the reason, e.g. "SIGTERM"), it has drained (`server.drain_exit`) or a
/// worker fails. SIGHUP reloads the configuration, SIGUSR1 starts draining.
pub async fn run(
    config: Config,
    workers: usize,
    options: Options,
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

    // Bound before XDP is attached (which may take a while): the endpoint answers from
    // the moment the listeners do.
    let admin_listener = match config.metrics_listen {
        Some(address) => Some(admin::bind(address).await?),
        None => None,
    };
    let (datapath, xdp) = xdp::select_datapath(&config);
    let server = Server::new(
        config.server_config(),
        config.authenticator(),
        config.peer_policy(),
        StdRng::from_entropy(),
    )
    .with_limits(config.server_limits());
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
    let xdp_setup = XdpSetup {
        attached_to: xdp.as_ref().map(XdpRelay::interfaces).unwrap_or_default(),
    };
    let control = Arc::new(Control::new(
        config.clone(),
        options.sources,
        Arc::clone(&hub),
        options.log_filter,
        xdp_setup,
    ));
    let admin = Arc::new(AdminState {
        metrics: Metrics::new().context("registering the metrics")?,
        operations: Arc::clone(&control) as Arc<dyn admin::api::Operations>,
    });
    let admin_task = match admin_listener {
        Some(listener) => Some(admin::start(listener, Arc::clone(&admin))),
        None => {
            tracing::info!("admin endpoint: off");
            None
        }
    };
    let signals = control::handle_signals(Arc::clone(&control))?;
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

    control::notify_ready(&control.summary());
    let watchdog = control::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(IDLE_SLEEP));
    let mut metrics_tick = tokio::time::interval(METRICS_INTERVAL);
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drained = control.drained();
    tokio::pin!(shutdown, drained);
    let reason = loop {
        tokio::select! {
            biased;
            reason = &mut shutdown => break reason,
            reason = &mut drained => break reason,
            _ = worker_ended_signal.recv() => break "a relay worker stopped",
            _ = metrics_tick.tick() => {
                let snapshot = MetricsSnapshot::gather(&hub, xdp.as_ref());
                admin.metrics.publish(&snapshot);
                control.record_xdp_counters(snapshot.xdp);
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => control::notify_watchdog(),
        }
    };
    control::notify_stopping(reason);
    signals.abort();
    let _ = stop.send(true);
    if let Some(task) = admin_task {
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
    log_totals(reason, &hub, xdp.as_ref());
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
mod tests;
