//! Starting and stopping the servers under test inside the relay namespace.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::control::{answers_binding, Credentials};
use super::netns::{
    in_netns, Topology, RELAY_CLIENT_SIDE_IP, RELAY_CLIENT_SIDE_IP6, RELAY_PEER_SIDE_IP,
    RELAY_PEER_SIDE_IP6,
};

pub const LISTEN_PORT: u16 = 3478;
pub const REALM: &str = "bench.invalid";

/// Our daemon's Prometheus endpoint, on loopback inside the relay namespace.
const METRICS_ADDRESS: &str = "127.0.0.1:9641";

/// The XDP-related samples of our daemon's /metrics (per-outcome XDP counters), fetched
/// from inside the relay namespace.
pub fn xdp_metrics(topology: &Topology) -> Result<Vec<String>> {
    use std::io::{Read, Write};
    in_netns(&topology.relay_ns, || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&METRICS_ADDRESS.parse()?, Duration::from_secs(2))
                .context("connecting to the metrics endpoint")?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut body = String::new();
        stream.take(4 << 20).read_to_string(&mut body)?;
        Ok(body
            .lines()
            .filter(|line| {
                !line.starts_with('#')
                    && line.to_ascii_lowercase().contains("xdp")
                    && !line.ends_with(" 0")
            })
            .map(str::to_string)
            .collect())
    })
}

/// The server's address for the given IP family (4 or 6).
pub fn listen_address(family: u8) -> SocketAddr {
    if family == 6 {
        SocketAddr::V6(SocketAddrV6::new(RELAY_CLIENT_SIDE_IP6, LISTEN_PORT, 0, 0))
    } else {
        SocketAddr::V4(SocketAddrV4::new(RELAY_CLIENT_SIDE_IP, LISTEN_PORT))
    }
}

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

/// A server process; killed (SIGTERM, then SIGKILL after 3 s) when dropped.
pub struct RunningServer {
    pub kind: ServerKind,
    child: Child,
    pub log_path: PathBuf,
}

impl RunningServer {
    /// What the server said about itself: coturn's version, or our daemon's XDP status line.
    pub fn status(&self) -> Option<String> {
        match self.kind {
            ServerKind::Coturn => Command::new("turnserver")
                .arg("--version")
                .output()
                .ok()
                .map(|o| format!("coturn {}", String::from_utf8_lossy(&o.stdout).trim())),
            ServerKind::OursUserspace | ServerKind::OursXdp => xdp_status_line(&self.log_path),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn start(
        kind: ServerKind,
        topology: &Topology,
        credentials: &Credentials,
        relay_binary: &Path,
        work_dir: &Path,
    ) -> Result<RunningServer> {
        let log_path = work_dir.join(format!("{}.log", kind.name()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &topology.relay_ns]);
        match kind {
            ServerKind::Coturn => {
                command
                    .arg("turnserver")
                    .args(coturn_arguments(credentials, work_dir));
            }
            ServerKind::OursUserspace | ServerKind::OursXdp => {
                if !relay_binary.exists() {
                    bail!(
                        "{} does not exist (build it with cargo build --release)",
                        relay_binary.display()
                    );
                }
                let config_path = work_dir.join(format!("{}.toml", kind.name()));
                std::fs::write(&config_path, our_config(kind, topology, credentials))
                    .context("writing the relay config")?;
                command.arg(relay_binary).arg("--config").arg(&config_path);
            }
        }
        let child = command
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        // `ip netns exec` execs the server, so the child's pid is the server's pid.
        let mut server = RunningServer {
            kind,
            child,
            log_path,
        };
        server.wait_ready(topology)?;
        Ok(server)
    }

    fn wait_ready(&mut self, topology: &Topology) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !super::interrupted() {
            if let Some(status) = self.child.try_wait()? {
                let why = xdp_status_line(&self.log_path).unwrap_or_default();
                bail!(
                    "{} exited during startup ({status}) {why}; see {}",
                    self.kind.name(),
                    self.log_path.display()
                );
            }
            // IPv4 only, so a v4-only run does not depend on IPv6 (IPv6 flows' requests are
            // retransmitted if the v6 socket should come up a moment later).
            if answers_binding(&topology.client_ns, listen_address(4)) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "{} did not answer a Binding request within 10 s; see {}",
            self.kind.name(),
            self.log_path.display()
        )
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

impl Drop for RunningServer {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// coturn tuned for this load: UDP only, no CLI/TCP/TLS/DTLS, one relay thread per CPU
/// (coturn's default), static long-term user, relay addresses on the peer side.
fn coturn_arguments(credentials: &Credentials, work_dir: &Path) -> Vec<String> {
    let mut arguments: Vec<String> = [
        "-n",
        "--no-tcp",
        "--no-tls",
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
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    arguments.extend([
        format!("--listening-ip={RELAY_CLIENT_SIDE_IP}"),
        format!("--listening-port={LISTEN_PORT}"),
        format!("--listening-ip={RELAY_CLIENT_SIDE_IP6}"),
        format!("--relay-ip={RELAY_PEER_SIDE_IP}"),
        format!("--relay-ip={RELAY_PEER_SIDE_IP6}"),
        "--min-port=49152".to_string(),
        "--max-port=65535".to_string(),
        format!("--relay-threads={cpus}"),
        format!("--user={}:{}", credentials.username, credentials.password),
        format!("--realm={REALM}"),
        "--allowed-peer-ip=198.18.0.0-198.19.255.255".to_string(),
        "--allowed-peer-ip=2001:2::-2001:2:0:ffff:ffff:ffff:ffff:ffff".to_string(),
        format!(
            "--log-file={}",
            work_dir.join("coturn-internal.log").display()
        ),
        format!("--pidfile={}", work_dir.join("coturn.pid").display()),
    ]);
    arguments
}

/// turn-relay's TOML (keys from config/turn-relay.toml).
fn our_config(kind: ServerKind, topology: &Topology, credentials: &Credentials) -> String {
    let xdp = match kind {
        ServerKind::OursXdp => format!(
            "mode = \"native\"\ninterfaces = [\"{}\", \"{}\"]",
            topology.relay_client_if, topology.relay_peer_if
        ),
        _ => "mode = \"off\"".to_string(),
    };
    format!(
        "[server]\nrealm = \"{REALM}\"\nlisten = [\"{listen}\", \"{listen6}\"]\nrelay_address = \"{RELAY_PEER_SIDE_IP}\"\nrelay_address_v6 = \"{RELAY_PEER_SIDE_IP6}\"\nport_range = \"49152-65535\"\nmax_allocations = 16384\nmax_allocations_per_user = 0\n\n\
         [auth]\nusers = [{{ name = \"{user}\", password = \"{password}\" }}]\n\n\
         [peers]\nallow = [\"198.18.0.0/15\", \"2001:2::/48\"]\n\n\
         [xdp]\n{xdp}\n\n\
         [metrics]\nlisten = \"{metrics}\"\n\n\
         [log]\nlevel = \"info\"\n",
        listen = listen_address(4),
        listen6 = listen_address(6),
        metrics = METRICS_ADDRESS,
        user = credentials.username,
        password = credentials.password,
    )
}
