//! Starting and stopping the servers under test inside the relay namespace: coturn and
//! turn-relay, through the testkit's launchers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use turn_testkit::addresses::{
    listener, RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_RELAYED_V4, RELAY_RELAYED_V6, TLS_PORT,
    TURN_PORT,
};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::coturn::Coturn;
use turn_testkit::daemon::{Daemon, Files, Launch};
use turn_testkit::tls::TestCertificate;
use turn_testkit::topology::Topology;

use crate::control::answers_binding;

pub const REALM: &str = "bench.invalid";
/// How long a server may take to answer its first Binding request.
const READY_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ServerKind {
    /// Debian's coturn `turnserver`.
    Coturn,
    /// turn-relay with `[xdp] mode = "off"`.
    OursUserspace,
    /// turn-relay with XDP attached to the relay's veth ends.
    OursXdp,
}

impl ServerKind {
    pub const ALL: [ServerKind; 3] = [
        ServerKind::Coturn,
        ServerKind::OursUserspace,
        ServerKind::OursXdp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Coturn => "coturn",
            ServerKind::OursUserspace => "ours-userspace",
            ServerKind::OursXdp => "ours-xdp",
        }
    }

    pub fn from_name(name: &str) -> Option<ServerKind> {
        ServerKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// How many relay threads a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The server's default: coturn one relay thread per CPU, ours one worker per CPU.
    PerCpu,
    /// One relay thread (coturn `--relay-threads=1`, ours `--threads 1`), for the
    /// per-core comparison ([`crate::per_core`]).
    One,
}

/// How a server is run beyond its kind: its relay threads, and ours' `server.coalesce_us`
/// (`--coalesce-us`; 0: the daemon's default).
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    pub threads: Threads,
    pub coalesce_us: u32,
}

/// A server process; stopped when dropped.
pub enum RunningServer {
    Coturn { coturn: Coturn, log_path: PathBuf },
    Ours(Daemon),
}

impl RunningServer {
    pub fn start(
        kind: ServerKind,
        topology: &Topology,
        user: &User,
        certificate: &TestCertificate,
        relay_binary: &Path,
        work_dir: &Path,
        tuning: Tuning,
    ) -> Result<RunningServer> {
        let Tuning {
            threads,
            coalesce_us,
        } = tuning;
        let mut stem = match threads {
            Threads::PerCpu => kind.name().to_owned(),
            Threads::One => format!("{}-one-thread", kind.name()),
        };
        if coalesce_us > 0 && kind != ServerKind::Coturn {
            stem.push_str(&format!("-coalesce-{coalesce_us}"));
        }
        let log_path = work_dir.join(format!("{stem}.log"));
        let server = match kind {
            ServerKind::Coturn => {
                let log = std::fs::File::create(&log_path)
                    .with_context(|| format!("creating {}", log_path.display()))?;
                let coturn = Coturn::start(
                    &topology.relay,
                    &coturn_arguments(user, certificate, work_dir, &stem, threads),
                    &work_dir.join(format!("{stem}.pid")),
                    Stdio::from(log),
                )
                .context("starting coturn")?;
                RunningServer::Coturn { coturn, log_path }
            }
            ServerKind::OursUserspace | ServerKind::OursXdp => {
                let files = Files {
                    directory: work_dir.to_owned(),
                    stem,
                    keep: true,
                };
                let launch = Launch {
                    args: match threads {
                        Threads::PerCpu => Vec::new(),
                        Threads::One => vec!["--threads".to_owned(), "1".to_owned()],
                    },
                    ..Launch::default()
                };
                let mut config = our_config(kind, user).with_tls(certificate);
                config.coalesce_us = (coalesce_us > 0).then_some(coalesce_us);
                let daemon =
                    Daemon::launch_with(&topology.relay, &config, relay_binary, files, &launch)
                        .with_context(|| format!("starting {}", kind.name()))?;
                RunningServer::Ours(daemon)
            }
        };
        server.wait_ready(kind, topology)?;
        Ok(server)
    }

    /// Waits until the server answers a Binding request over IPv4 (so a v4-only run does
    /// not depend on IPv6; IPv6 flows' requests are retransmitted if the v6 socket should
    /// come up a moment later).
    pub fn wait_ready(&self, kind: ServerKind, topology: &Topology) -> Result<()> {
        let deadline = Instant::now() + READY_LIMIT;
        while Instant::now() < deadline && !crate::interrupted() {
            if answers_binding(&topology.client, listener(4)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let why = xdp_status_line(self.log_path()).unwrap_or_default();
        bail!(
            "{} did not answer a Binding request within {READY_LIMIT:?} {why}; see {}",
            kind.name(),
            self.log_path().display()
        )
    }

    pub fn pid(&self) -> u32 {
        match self {
            RunningServer::Coturn { coturn, .. } => coturn.pid(),
            RunningServer::Ours(daemon) => daemon.pid(),
        }
    }

    pub fn log_path(&self) -> &Path {
        match self {
            RunningServer::Coturn { log_path, .. } => log_path,
            RunningServer::Ours(daemon) => daemon.log_path(),
        }
    }

    /// What the server said about itself: coturn's version, or our daemon's XDP status line.
    pub fn status(&self) -> Option<String> {
        match self {
            RunningServer::Coturn { .. } => {
                Coturn::version().map(|version| format!("coturn {version}"))
            }
            RunningServer::Ours(daemon) => xdp_status_line(daemon.log_path()),
        }
    }

    /// The non-zero XDP samples of our daemon's /metrics (per-outcome XDP counters).
    pub fn xdp_metrics(&self) -> Result<Vec<String>> {
        match self {
            RunningServer::Coturn { .. } => Ok(Vec::new()),
            RunningServer::Ours(daemon) => Ok(daemon.metrics()?.nonzero_xdp_samples()),
        }
    }
}

/// The daemon's XDP counters logged at shutdown ("XDP totals …"), once it has exited.
pub fn xdp_totals_line(log_path: &Path) -> Option<String> {
    log_line(log_path, "XDP totals")
}

/// The daemon's XDP start-up line ("XDP: …" or "XDP attached …").
fn xdp_status_line(log_path: &Path) -> Option<String> {
    log_line(log_path, "XDP:").or_else(|| log_line(log_path, "XDP attached"))
}

/// The first log line containing `marker`, from the marker on (ANSI colours removed, at
/// most 300 characters).
fn log_line(log_path: &Path, marker: &str) -> Option<String> {
    let log = std::fs::read_to_string(log_path).ok()?;
    let line = log.lines().find(|line| line.contains(marker))?;
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an escape sequence up to its final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let start = plain.find(marker).unwrap_or(0);
    Some(plain[start..].chars().take(300).collect())
}

/// coturn tuned for this load: UDP, TCP and TLS (port 5349, `certificate`) clients, no
/// CLI/DTLS, one relay thread per CPU (coturn's default) or one, static long-term user,
/// relay addresses on the peer side; its own log is `<stem>-internal.log`.
fn coturn_arguments(
    user: &User,
    certificate: &TestCertificate,
    work_dir: &Path,
    stem: &str,
    threads: Threads,
) -> Vec<String> {
    let mut arguments: Vec<String> = [
        "-n",
        "--no-dtls",
        "--no-tcp-relay",
        "--no-cli",
        "--no-rfc5780",
        "--no-software-attribute",
        "--simple-log",
        "--no-stdout-log",
        "--lt-cred-mech",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let relay_threads = match threads {
        Threads::PerCpu => std::thread::available_parallelism().map_or(1, |n| n.get()),
        Threads::One => 1,
    };
    arguments.extend([
        format!("--listening-ip={RELAY_LISTEN_V4}"),
        format!("--listening-port={TURN_PORT}"),
        format!("--tls-listening-port={TLS_PORT}"),
        format!("--cert={}", certificate.cert.display()),
        format!("--pkey={}", certificate.key.display()),
        format!("--listening-ip={RELAY_LISTEN_V6}"),
        format!("--relay-ip={RELAY_RELAYED_V4}"),
        format!("--relay-ip={RELAY_RELAYED_V6}"),
        "--min-port=49152".to_string(),
        "--max-port=65535".to_string(),
        format!("--relay-threads={relay_threads}"),
        format!("--user={}:{}", user.name, user.password),
        format!("--realm={REALM}"),
        "--allowed-peer-ip=198.18.0.0-198.19.255.255".to_string(),
        "--allowed-peer-ip=2001:2::-2001:2:0:ffff:ffff:ffff:ffff:ffff".to_string(),
        format!(
            "--log-file={}",
            work_dir.join(format!("{stem}-internal.log")).display()
        ),
    ]);
    arguments
}

/// turn-relay's configuration: both families, the benchmark's peers allowed, XDP in
/// native mode or off.
pub fn our_config(kind: ServerKind, user: &User) -> RelayConfig {
    let xdp = match kind {
        ServerKind::OursXdp => Xdp::Native,
        _ => Xdp::Off,
    };
    let mut config = RelayConfig::new(xdp)
        .with_ipv6()
        .with_user(&user.name, &user.password);
    config.realm = REALM.to_owned();
    config.max_allocations = Some(16_384);
    // Every flow is an allocation of the one bench user; coturn has no per-user quota
    // by default either.
    config.max_allocations_per_user = Some(0);
    // Every TCP/TLS flow is a connection from the one client address (256 in the full
    // matrix, over the default 128 per address, which closed the rest); coturn has no
    // per-address limit by default either.
    config.connections.max_per_ip = Some(65_536);
    config
}
