//! `turn-relay ctl`: the admin endpoint from a shell, like `eturnalctl`.
//!
//! It finds the endpoint in the same configuration the relay reads (`--config`, else
//! `/etc/turn-relay/turn-relay.toml` when it exists, with the `TURN_RELAY_*` environment),
//! or at `--admin`. On loopback no token is needed; towards another host the token comes
//! from `--token-file`, `TURN_RELAY_ADMIN_TOKEN` or the configuration's `admin.token(_file)`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;

use super::api::{Answer, Session, Status, Traffic};
use crate::daemon::config::{Config, Sources};

/// Where a package installs the configuration.
const INSTALLED_CONFIG: &str = "/etc/turn-relay/turn-relay.toml";
/// The longest wait for an answer (a reload reads files, the rest only memory).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `ctl` command line.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    #[command(subcommand)]
    action: Action,
    /// The relay's configuration, to find its admin endpoint (metrics.listen) and token.
    /// Default: /etc/turn-relay/turn-relay.toml if it exists.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// The admin endpoint's ip:port (instead of the configuration's metrics.listen).
    #[arg(long, value_name = "IP:PORT", global = true)]
    admin: Option<SocketAddr>,
    /// A file whose first line is the admin token (instead of the configuration's).
    #[arg(long, value_name = "PATH", global = true)]
    token_file: Option<PathBuf>,
    /// Print the endpoint's JSON as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
enum Action {
    /// Version, uptime, draining, allocations, listeners, XDP (GET /status).
    Status,
    /// Send new allocations to the alternate servers (POST /drain).
    Drain,
    /// Accept new allocations again (POST /undrain).
    Undrain,
    /// Re-read the configuration, like SIGHUP (POST /reload).
    Reload,
    /// List the allocations: user, client, relayed address, age, traffic (GET /sessions).
    Sessions,
}

impl Action {
    fn request(self) -> (Method, &'static str) {
        match self {
            Action::Status => (Method::GET, "/status"),
            Action::Sessions => (Method::GET, "/sessions"),
            Action::Drain => (Method::POST, "/drain"),
            Action::Undrain => (Method::POST, "/undrain"),
            Action::Reload => (Method::POST, "/reload"),
        }
    }
}

/// Runs `ctl`: 0 when the relay did it, 1 when it answered with an error, 2 when it
/// could not be asked.
pub fn main(args: &CtlArgs) -> ExitCode {
    let (address, token) = match endpoint(args) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            eprintln!("turn-relay ctl: {error:#}");
            return ExitCode::from(2);
        }
    };
    let (method, path) = args.action.request();
    let reply = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(request(address, method, path, token.as_deref())));
    let (status, body) = match reply {
        Ok(reply) => reply,
        Err(error) => {
            eprintln!("turn-relay ctl: {error:#}");
            return ExitCode::from(2);
        }
    };
    if args.json || !status.is_success() {
        print!("{body}");
    } else {
        match render(args.action, &body) {
            Ok(text) => print!("{text}"),
            Err(error) => {
                eprintln!("turn-relay ctl: {error:#}\n{body}");
                return ExitCode::from(2);
            }
        }
    }
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("turn-relay ctl: {path}: {status}");
        ExitCode::FAILURE
    }
}

/// The admin endpoint's address and the token to offer.
fn endpoint(args: &CtlArgs) -> anyhow::Result<(SocketAddr, Option<String>)> {
    let file = args.config.clone().or_else(|| {
        Path::new(INSTALLED_CONFIG)
            .exists()
            .then(|| PathBuf::from(INSTALLED_CONFIG))
    });
    let config = Config::from_sources(&Sources::from_process(file));
    let token = match &args.token_file {
        Some(path) => Some(read_token(path)?),
        None => match &config {
            Ok(config) => config.admin_token.clone(),
            Err(_) => None,
        },
    };
    let address = match (args.admin, config) {
        (Some(address), _) => address,
        (None, Ok(config)) => config.metrics_listen.context(
            "the configuration turns the admin endpoint off (metrics.listen = \"\"); give --admin",
        )?,
        (None, Err(error)) => {
            bail!("{error}\n(give --admin IP:PORT to skip reading the configuration)")
        }
    };
    Ok((reachable(address), token))
}

/// A wildcard listen address is reached on loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port())
        }
        _ => address,
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        bail!("{} holds no token on its first line", path.display());
    }
    Ok(token.to_owned())
}

/// One HTTP/1.1 request to the endpoint: its status and body.
async fn request(
    address: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(StatusCode, String)> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to the admin endpoint {address}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let driver = tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, address.to_string());
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("asking {address}{path}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?
            .to_bytes();
        driver.abort();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer from {address} within {} s", TIMEOUT.as_secs()))?
}

/// The endpoint's JSON for a person.
fn render(action: Action, body: &str) -> anyhow::Result<String> {
    match action {
        Action::Status => Ok(render_status(&serde_json::from_str(body)?)),
        Action::Sessions => Ok(render_sessions(&serde_json::from_str::<Vec<Session>>(
            body,
        )?)),
        Action::Drain | Action::Undrain | Action::Reload => {
            Ok(render_answer(&serde_json::from_str(body)?))
        }
    }
}

fn render_answer(answer: &Answer) -> String {
    let mut out = format!("{}\n", answer.message);
    if !answer.restart_needed.is_empty() {
        let _ = writeln!(
            out,
            "needs a restart (old value kept): {}",
            answer.restart_needed.join(", ")
        );
    }
    out
}

fn render_status(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "turn-relay {}, up {}, config {}",
        status.version,
        duration(status.uptime_seconds),
        status.config
    );
    let state = if status.draining {
        format!(
            "draining for {}{}",
            duration(status.draining_seconds.unwrap_or_default()),
            if status.drain_exit {
                " (exits when drained)"
            } else {
                ""
            }
        )
    } else {
        "ready: accepting new allocations".to_owned()
    };
    let _ = writeln!(out, "state: {state}");
    let split = |counts: &std::collections::BTreeMap<String, usize>| {
        counts
            .iter()
            .map(|(name, count)| format!("{name} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The transports that carry allocations (a relay without TCP/TLS clients shows none).
    let in_use: std::collections::BTreeMap<String, usize> = status
        .allocations
        .by_transport
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(name, count)| (name.clone(), *count))
        .collect();
    let families = split(&status.allocations.by_family);
    let detail = if in_use.is_empty() {
        families
    } else {
        format!("{}; {families}", split(&in_use))
    };
    let _ = writeln!(
        out,
        "allocations: {} ({detail}), permissions {}, channels {}",
        status.allocations.total, status.permissions, status.channels
    );
    let listeners: Vec<String> = status
        .listeners
        .iter()
        .map(|listener| format!("{} {}", listener.transport, listener.address))
        .collect();
    let _ = writeln!(out, "listeners: {}", listeners.join(", "));
    if let Some(admin) = &status.admin_listen {
        let _ = writeln!(out, "admin endpoint: {admin}");
    }
    if !status.alternate_servers.is_empty() {
        let _ = writeln!(
            out,
            "alternate servers: {}",
            status.alternate_servers.join(", ")
        );
    }
    let xdp = &status.xdp;
    if xdp.attached {
        let relayed: u64 = xdp
            .counters
            .iter()
            .filter(|(outcome, _)| outcome.starts_with("relayed_"))
            .map(|(_, traffic)| traffic.packets)
            .sum();
        let _ = writeln!(
            out,
            "XDP: {} mode, attached to {}, {relayed} packets relayed",
            xdp.mode,
            xdp.interfaces.join(", ")
        );
    } else {
        let _ = writeln!(
            out,
            "XDP: {} mode, not attached (userspace relays everything)",
            xdp.mode
        );
    }
    out
}

fn render_sessions(sessions: &[Session]) -> String {
    let mut out = format!(
        "{:<24} {:<24} {:<24} {:<5} {:>8} {:>18} {:>18} {:>5}\n",
        "USER", "CLIENT", "RELAYED", "PROTO", "AGE", "TO PEER", "TO CLIENT", "XDP"
    );
    for session in sessions {
        let both = |userspace: Traffic, xdp: Traffic| {
            let packets = userspace.packets + xdp.packets;
            let bytes = userspace.bytes + xdp.bytes;
            format!("{packets} p/{bytes} B")
        };
        let share = session
            .xdp_share()
            .map_or_else(|| "-".to_owned(), |share| format!("{:.0}%", share * 100.0));
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<24} {:<5} {:>8} {:>18} {:>18} {:>5}",
            session.user,
            session.client,
            session.relayed,
            session.transport,
            duration(session.age_seconds),
            both(session.userspace_to_peer, session.xdp_to_peer),
            both(session.userspace_to_client, session.xdp_to_client),
            share
        );
    }
    let _ = writeln!(out, "{} allocation(s)", sessions.len());
    out
}

/// `3725` → `1h2m5s`.
fn duration(seconds: u64) -> String {
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::admin::api::{AllocationCounts, Listener, XdpStatus};

    #[test]
    fn status_reads_like_a_summary() {
        let status = Status {
            version: "1.2.3".into(),
            uptime_seconds: 3725,
            draining: true,
            draining_seconds: Some(12),
            drain_exit: true,
            allocations: AllocationCounts {
                total: 3,
                by_transport: [("udp".to_owned(), 3)].into_iter().collect(),
                by_family: [("ipv4".to_owned(), 2), ("ipv6".to_owned(), 1)]
                    .into_iter()
                    .collect(),
            },
            permissions: 4,
            channels: 2,
            listeners: vec![Listener {
                transport: "udp".into(),
                address: "198.18.0.1:3478".into(),
            }],
            admin_listen: Some("127.0.0.1:9641".into()),
            alternate_servers: vec!["198.18.0.2:3478".into()],
            xdp: XdpStatus {
                mode: "auto".into(),
                interfaces: vec!["eth0".into()],
                attached: true,
                counters: [
                    (
                        "relayed_channel_data_to_peer".to_owned(),
                        Traffic {
                            packets: 5,
                            bytes: 500,
                        },
                    ),
                    (
                        "pass_unknown_flow".to_owned(),
                        Traffic {
                            packets: 9,
                            bytes: 900,
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            },
            config: "/etc/turn-relay/turn-relay.toml".into(),
        };
        let body = serde_json::to_string(&status).expect("json");
        let text = render(Action::Status, &body).expect("renders");
        assert_eq!(
            text,
            "turn-relay 1.2.3, up 1h2m5s, config /etc/turn-relay/turn-relay.toml\n\
             state: draining for 12s (exits when drained)\n\
             allocations: 3 (udp 3; ipv4 2, ipv6 1), permissions 4, channels 2\n\
             listeners: udp 198.18.0.1:3478\n\
             admin endpoint: 127.0.0.1:9641\n\
             alternate servers: 198.18.0.2:3478\n\
             XDP: auto mode, attached to eth0, 5 packets relayed\n"
        );
    }

    #[test]
    fn sessions_show_traffic_both_ways_and_the_xdp_share() {
        let session = Session {
            user: "1700000000:alice".into(),
            client: "198.18.1.2:40000".into(),
            listener: "198.18.0.1:3478".into(),
            transport: "udp".into(),
            relayed: "198.18.0.1:50000".into(),
            age_seconds: 65,
            permissions: 1,
            channels: 1,
            userspace_to_peer: Traffic {
                packets: 1,
                bytes: 100,
            },
            userspace_to_client: Traffic {
                packets: 1,
                bytes: 100,
            },
            xdp_to_peer: Traffic {
                packets: 3,
                bytes: 300,
            },
            xdp_to_client: Traffic {
                packets: 3,
                bytes: 300,
            },
        };
        let body = serde_json::to_string(&vec![session]).expect("json");
        let text = render(Action::Sessions, &body).expect("renders");
        let row = text.lines().nth(1).expect("a row");
        for part in [
            "1700000000:alice",
            "198.18.1.2:40000",
            "198.18.0.1:50000",
            "1m5s",
            "4 p/400 B",
            "75%",
        ] {
            assert!(row.contains(part), "{part} missing in {row:?}");
        }
        assert!(text.ends_with("1 allocation(s)\n"), "{text}");
    }

    #[test]
    fn reload_answers_name_the_keys_that_need_a_restart() {
        let answer = Answer {
            message: "reloaded: auth.users applied".into(),
            changed: vec!["auth.users".into()],
            restart_needed: vec!["server.port_range".into()],
        };
        let body = serde_json::to_string(&answer).expect("json");
        assert_eq!(
            render(Action::Reload, &body).expect("renders"),
            "reloaded: auth.users applied\nneeds a restart (old value kept): server.port_range\n"
        );
    }

    #[test]
    fn wildcard_endpoints_are_reached_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:9641".parse().expect("addr")),
            "127.0.0.1:9641".parse::<SocketAddr>().expect("addr")
        );
        assert_eq!(
            reachable("[::]:9641".parse().expect("addr")),
            "[::1]:9641".parse::<SocketAddr>().expect("addr")
        );
    }
}
