//! Start-up and shutdown: binds every worker's listeners, builds the shared [`Hub`],
//! starts the worker threads, the TCP/TLS listeners and the admin endpoint, publishes metrics, and stops it all
//! on the shutdown signal or when a worker fails.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::SeedableRng as _;
use tokio::sync::{mpsc, watch};

use crate::bpf::XdpRelay;
use crate::daemon::config::{Config, Sources};
use crate::daemon::logging::LevelHandle;
use crate::protocol::turn::Server;

use super::admin::{self, AdminState};
use super::control::{self, Control, XdpSetup};
use super::hub::Hub;
use super::metrics::{Metrics, MetricsSnapshot};
use super::report::{join, log_startup, log_totals};
use super::sockets::{self, SocketRole};
use super::stream;
use super::worker::run_worker;
use super::xdp;

/// How often the metrics snapshot is refreshed.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
/// The watchdog tick when the service manager asks for none (it never fires then).
const NO_WATCHDOG: Duration = Duration::from_secs(3600);

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
    let (hub, inboxes) = Hub::new(server, datapath, workers);
    let hub = Arc::new(hub);
    let streams = stream::Streams::start(config.stream_settings(), Arc::clone(&hub), workers)?;
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
    for (index, (sockets, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let hub = Arc::clone(&hub);
        let mut stop = stop_signal.clone();
        let ended = worker_ended.clone();
        let coalesce = config.coalesce;
        let thread = std::thread::Builder::new()
            .name(format!("turn-worker-{index}"))
            .spawn(move || {
                let result = run_worker(index, hub, sockets, inbox, coalesce, async move {
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
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(NO_WATCHDOG));
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
    drop(streams);

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
