//! Operating the running relay: draining, reloading, and telling the service manager and
//! the admin endpoint how it is doing.
//!
//! - Drain (restund's drain module): `POST /drain`, SIGUSR1 or `turn-relay ctl drain`.
//!   New allocations are sent to `server.alternate_servers` (300 Try Alternate) or refused
//!   with 508; everything else of the existing allocations goes on. With
//!   `server.drain_exit` the process ends once the last allocation is gone, or after
//!   `server.drain_timeout`.
//! - Reload: SIGHUP, `POST /reload` or `turn-relay ctl reload` read the configuration
//!   sources again (see [`Config::reload`]); live allocations are not touched.
//! - systemd (`Type=notify`): READY once the listeners are bound, STATUS lines, WATCHDOG
//!   pings while the main loop turns, STOPPING at shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::bpf::{Counter, Outcome};
use crate::daemon::config::{Config, Sources};
use crate::daemon::logging::LevelHandle;
use crate::protocol::datapath::Transport;

use super::admin::api::{
    AllocationCounts, Answer, Listener, Operations, Session, Status, Traffic, XdpStatus,
};
use super::Hub;

/// How often a draining relay with `drain_exit` looks whether it may exit.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The fast path as it was set up at start.
pub(super) struct XdpSetup {
    pub(super) attached_to: Vec<String>,
}

/// The relay's operational state, shared by the admin endpoint, the signal handlers and
/// the main loop.
pub(super) struct Control {
    started: Instant,
    sources: Sources,
    hub: Arc<Hub>,
    log_filter: Option<LevelHandle>,
    xdp: XdpSetup,
    state: Mutex<State>,
}

struct State {
    /// The configuration in force (reloads replace its live values).
    config: Config,
    /// Since when new allocations are turned away.
    draining_since: Option<Instant>,
    /// The XDP counters of the last metrics round, while attached.
    xdp_counters: Option<Vec<(Outcome, Counter)>>,
}

impl Control {
    pub(super) fn new(
        config: Config,
        sources: Sources,
        hub: Arc<Hub>,
        log_filter: Option<LevelHandle>,
        xdp: XdpSetup,
    ) -> Control {
        hub.lock().server.set_alternate_servers(config.alternates());
        Control {
            started: Instant::now(),
            sources,
            hub,
            log_filter,
            xdp,
            state: Mutex::new(State {
                config,
                draining_since: None,
                xdp_counters: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps the XDP counters of the latest metrics round for `/status`.
    pub(super) fn record_xdp_counters(&self, counters: Option<Vec<(Outcome, Counter)>>) {
        self.state().xdp_counters = counters;
    }

    /// Resolves with the reason once the relay, draining with `drain_exit`, has no
    /// allocation left or has drained for `drain_timeout`. Pending forever otherwise.
    pub(super) async fn drained(&self) -> &'static str {
        let mut tick = tokio::time::interval(DRAIN_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let (since, exit, timeout) = {
                let state = self.state();
                (
                    state.draining_since,
                    state.config.drain_exit,
                    state.config.drain_timeout,
                )
            };
            let Some(since) = since.filter(|_| exit) else {
                continue;
            };
            if self.hub.lock().server.stats().allocations == 0 {
                return "drained: the last allocation is gone";
            }
            if since.elapsed() >= timeout {
                return "drained: server.drain_timeout is over";
            }
        }
    }

    /// A one-line state for systemd's STATUS and the log.
    pub(super) fn summary(&self) -> String {
        let allocations = self.hub.lock().server.stats().allocations;
        let draining = self.state().draining_since.is_some();
        format!(
            "{} allocation(s){}",
            allocations,
            if draining { "; draining" } else { "" }
        )
    }
}

impl Operations for Control {
    fn draining(&self) -> bool {
        self.state().draining_since.is_some()
    }

    fn set_draining(&self, draining: bool, by: &str) -> Answer {
        let mut state = self.state();
        let message = match (state.draining_since.is_some(), draining) {
            (true, true) => "already draining".to_owned(),
            (false, false) => "not draining".to_owned(),
            (false, true) => {
                state.draining_since = Some(Instant::now());
                let alternates = state.config.alternates();
                let whereto = if alternates.is_empty() {
                    "refused with 508 (no server.alternate_servers)".to_owned()
                } else {
                    format!("sent to {}", super::report::join(&alternates))
                };
                let exit = if state.config.drain_exit {
                    format!(
                        "; exits when the last allocation is gone or after {} s",
                        state.config.drain_timeout.as_secs()
                    )
                } else {
                    String::new()
                };
                drop(state);
                self.hub.lock().server.set_draining(true);
                let message = format!("draining: new allocations are {whereto}{exit}");
                tracing::warn!("{message} ({by})");
                return self.announce(message);
            }
            (true, false) => {
                state.draining_since = None;
                drop(state);
                self.hub.lock().server.set_draining(false);
                let message = "no longer draining: new allocations are accepted".to_owned();
                tracing::warn!("{message} ({by})");
                return self.announce(message);
            }
        };
        Answer {
            message,
            ..Answer::default()
        }
    }

    fn reload(&self, by: &str) -> Result<Answer, String> {
        let mut state = self.state();
        let reloaded = match state.config.reload(&self.sources) {
            Ok(reloaded) => reloaded,
            Err(error) => {
                tracing::error!("reload ({by}) refused; the running configuration stays: {error}");
                return Err(format!("{error}; the running configuration stays"));
            }
        };
        for key in &reloaded.restart_needed {
            tracing::warn!(
                "reload: {key} changed but needs a restart; it keeps its old value until then"
            );
        }
        let config = reloaded.config;
        {
            let mut shared = self.hub.lock();
            shared.server.set_authenticator(config.authenticator());
            shared.server.set_peer_policy(config.peer_policy());
            shared.server.set_alternate_servers(config.alternates());
        }
        // The TLS certificate files are read again (renewed certificates).
        if let Err(error) = self.hub.streams.reload_tls() {
            tracing::error!("reload ({by}): the TLS certificate stays as it was: {error:#}");
        }
        if let Some(filter) = &self.log_filter {
            if let Err(error) = filter.set(&config.log_level) {
                tracing::warn!("reload: {error:#}");
            }
        }
        state.config = config;
        drop(state);
        let message = if reloaded.changed.is_empty() {
            "reloaded: nothing that applies while running changed".to_owned()
        } else {
            format!("reloaded: {} applied", reloaded.changed.join(", "))
        };
        tracing::info!("{message} ({by})");
        Ok(Answer {
            message,
            changed: reloaded.changed,
            restart_needed: reloaded.restart_needed,
        })
    }

    fn status(&self) -> Status {
        let (stats, by_family) = {
            let shared = self.hub.lock();
            (shared.server.stats(), shared.server.allocations_by_family())
        };
        let state = self.state();
        let config = &state.config;
        let by_transport: BTreeMap<String, usize> = Transport::ALL
            .iter()
            .map(|&transport| {
                (
                    transport.name().to_owned(),
                    stats.transport(transport).allocations,
                )
            })
            .collect();
        let streams = config.stream_settings();
        let listeners = config
            .listen
            .iter()
            .map(|address| ("udp", address))
            .chain(streams.tcp.iter().map(|address| ("tcp", address)))
            .chain(streams.tls.iter().map(|address| ("tls", address)))
            .map(|(transport, address)| Listener {
                transport: transport.to_owned(),
                address: address.to_string(),
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            draining: state.draining_since.is_some(),
            draining_seconds: state.draining_since.map(|since| since.elapsed().as_secs()),
            drain_exit: config.drain_exit,
            allocations: AllocationCounts {
                total: stats.allocations,
                by_transport,
                by_family: [("ipv4", by_family.ipv4), ("ipv6", by_family.ipv6)]
                    .into_iter()
                    .map(|(family, count)| (family.to_owned(), count))
                    .collect(),
            },
            permissions: stats.permissions,
            channels: stats.channels,
            listeners,
            admin_listen: config.metrics_listen.map(|address| address.to_string()),
            alternate_servers: config
                .alternates()
                .iter()
                .map(ToString::to_string)
                .collect(),
            xdp: XdpStatus {
                mode: config.xdp_mode.to_string(),
                interfaces: self.xdp.attached_to.clone(),
                attached: state.xdp_counters.is_some(),
                counters: state
                    .xdp_counters
                    .iter()
                    .flatten()
                    .map(|(outcome, counter)| {
                        (
                            outcome.name().to_owned(),
                            Traffic {
                                packets: counter.packets,
                                bytes: counter.bytes,
                            },
                        )
                    })
                    .collect(),
            },
            config: config.source.clone(),
        }
    }

    fn sessions(&self) -> Vec<Session> {
        let now = Instant::now();
        let mut sessions: Vec<(SocketAddr, Session)> = {
            let shared = self.hub.lock();
            shared
                .server
                .allocations()
                .map(|allocation| {
                    let session = Session {
                        user: allocation.username.to_owned(),
                        client: allocation.flow.client.to_string(),
                        listener: allocation.flow.listener.to_string(),
                        transport: allocation.flow.transport.name().to_owned(),
                        relayed: allocation.relayed.to_string(),
                        age_seconds: now
                            .saturating_duration_since(allocation.created_at)
                            .as_secs(),
                        permissions: allocation.permissions,
                        channels: allocation.channels,
                        userspace_to_peer: traffic(allocation.userspace_to_peer),
                        userspace_to_client: traffic(allocation.userspace_to_client),
                        xdp_to_peer: Traffic::default(),
                        xdp_to_client: Traffic::default(),
                    };
                    (allocation.relay, session)
                })
                .collect()
        };
        // The fast path's own counts, under its lock (never taken before the server's).
        let fast_path = self.hub.lock_fast_path();
        for (relay, session) in &mut sessions {
            let relayed = fast_path.datapath().relayed_traffic(*relay);
            session.xdp_to_peer = Traffic {
                packets: relayed.to_peer_packets,
                bytes: relayed.to_peer_bytes,
            };
            session.xdp_to_client = Traffic {
                packets: relayed.to_client_packets,
                bytes: relayed.to_client_bytes,
            };
        }
        drop(fast_path);
        sessions.sort_by_key(|(_, session)| std::cmp::Reverse(session.age_seconds));
        sessions.into_iter().map(|(_, session)| session).collect()
    }

    fn token(&self) -> Option<String> {
        self.state().config.admin_token.clone()
    }
}

fn traffic(count: crate::protocol::turn::PacketCount) -> Traffic {
    Traffic {
        packets: count.packets,
        bytes: count.bytes,
    }
}

impl Control {
    /// Tells systemd the new state (a no-op outside systemd) and answers with `message`.
    fn announce(&self, message: String) -> Answer {
        notify_status(&self.summary());
        Answer {
            message,
            ..Answer::default()
        }
    }
}

/// Handles SIGHUP (reload) and SIGUSR1 (drain) until the returned task is aborted.
pub(super) fn handle_signals(control: Arc<Control>) -> anyhow::Result<JoinHandle<()>> {
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = hangup.recv() => {
                    // The outcome is logged by `reload`.
                    let _ = control.reload("SIGHUP");
                }
                Some(()) = user1.recv() => {
                    control.set_draining(true, "SIGUSR1");
                }
                else => break,
            }
        }
    }))
}

/// systemd's notification socket, if the service runs under `Type=notify`.
pub(super) fn notify_ready(summary: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(summary),
    ]);
}

pub(super) fn notify_stopping(reason: &str) {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status(reason),
    ]);
}

fn notify_status(summary: &str) {
    notify(&[sd_notify::NotifyState::Status(summary)]);
}

/// The watchdog interval systemd asks for (`WatchdogSec=`), if any: pings go out at half
/// of it. As libsystemd's `sd_watchdog_enabled`: `WATCHDOG_USEC`, and `WATCHDOG_PID`
/// naming this process when it is set (systemd sets both).
pub(super) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    let for_us =
        std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
    (for_us && usec > 0).then(|| Duration::from_micros(usec / 2))
}

pub(super) fn notify_watchdog() {
    notify(&[sd_notify::NotifyState::Watchdog]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Outside systemd (no NOTIFY_SOCKET) this does nothing.
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(%error, "systemd notification failed");
    }
}
