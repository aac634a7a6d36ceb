//! What applies when a key is absent: the one set of defaults.
//!
//! The TURN core's knobs (realm, port range, lifetimes, allocation limits) default to
//! [`ServerConfig::default`] and the `[limits]` to [`ServerLimits::default`], so the core
//! and the daemon cannot disagree. The knobs only
//! the daemon has are listed here. `config/turn-relay.toml` documents each of them and a
//! test compares that file with these values.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::bpf::XdpMode;
use crate::protocol::turn::{ServerConfig, ServerLimits};

use super::LogFormat;

/// The port TURN listens on unless told otherwise (RFC 8656 §4).
pub const DEFAULT_TURN_PORT: u16 = 3478;

/// The defaults of the TURN core's knobs.
pub(super) fn core() -> ServerConfig {
    ServerConfig::default()
}

/// The defaults of the `[limits]` section.
pub(super) fn limits() -> ServerLimits {
    ServerLimits::default()
}

/// Relay worker threads: 0 = one per CPU.
pub(super) const THREADS: usize = 0;
/// Microseconds a relay worker waits after a wake-up before it reads its sockets: none.
pub(super) const COALESCE_US: u64 = 0;
/// How long a nonce stays fresh before requests get 438 Stale Nonce.
pub(super) const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// RFC 8489 §9.2.1: announce PASSWORD-ALGORITHMS so RFC 8489 clients may use SHA-256.
pub(super) const ADVERTISE_PASSWORD_ALGORITHMS: bool = true;
pub(super) const XDP_MODE: XdpMode = XdpMode::Auto;
pub(super) const XDP_TRACE: bool = false;
/// The Prometheus endpoint: loopback only, so metrics are not exposed by accident.
pub(super) const METRICS_LISTEN: Option<SocketAddr> =
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9641));
/// Draining does not end the process unless asked (`server.drain_exit`, `--exit-when-drained`).
pub(super) const DRAIN_EXIT: bool = false;
/// With `drain_exit`, the longest wait for the last allocation before exiting anyway.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(3600);
pub(super) const LOG_LEVEL: &str = "info";
pub(super) const LOG_FORMAT: LogFormat = LogFormat::Text;
