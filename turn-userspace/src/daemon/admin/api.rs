//! The admin endpoint's JSON documents (`/status`, `/sessions`, the answers of the POSTs)
//! and what the endpoint asks of the relay ([`Operations`]). `turn-relay ctl` reads the
//! same types, so the two cannot drift apart. Operators script against these field names:
//! add fields, never rename them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the admin endpoint can ask of the running relay.
pub(crate) trait Operations: Send + Sync {
    /// True while new allocations are turned away (draining).
    fn draining(&self) -> bool;
    /// Starts or stops draining; `by` names who asked (for the log). Returns what changed.
    fn set_draining(&self, draining: bool, by: &str) -> Answer;
    /// Reads the configuration again and applies what can change while running.
    fn reload(&self, by: &str) -> Result<Answer, String>;
    fn status(&self) -> Status;
    /// Every allocation (no secrets).
    fn sessions(&self) -> Vec<Session>;
    /// The bearer token that allows POSTs from other hosts than loopback.
    fn token(&self) -> Option<String>;
}

/// The answer to a POST: what happened, in a sentence, and the details a script needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub message: String,
    /// Live keys whose value changed (reload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Keys whose new value needs a restart and kept the old one (reload).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

/// `GET /status`: the relay at a glance (restund's status module, for machines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_seconds: u64,
    pub draining: bool,
    /// Seconds since draining started, while draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draining_seconds: Option<u64>,
    /// Whether the process exits once drained (`server.drain_exit`).
    pub drain_exit: bool,
    pub allocations: AllocationCounts,
    pub permissions: usize,
    pub channels: usize,
    pub listeners: Vec<Listener>,
    /// The admin endpoint itself.
    pub admin_listen: Option<String>,
    /// Where a draining relay sends new allocations (itself excluded).
    pub alternate_servers: Vec<String>,
    pub xdp: XdpStatus,
    /// The configuration in use: a file path, "environment" or "embedded default".
    pub config: String,
}

/// Allocations in place, in total and split.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationCounts {
    pub total: usize,
    /// By the client's transport ("udp").
    pub by_transport: BTreeMap<String, usize>,
    /// By the relayed address family ("ipv4", "ipv6").
    pub by_family: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub transport: String,
    pub address: String,
}

/// The kernel fast path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpStatus {
    /// The configured `xdp.mode`.
    pub mode: String,
    /// Where the program is attached (empty when it is not).
    pub interfaces: Vec<String>,
    pub attached: bool,
    /// Packets and bytes per outcome of the program, while attached.
    pub counters: BTreeMap<String, Traffic>,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// `GET /sessions`: one allocation. Never carries a secret (no password, key or nonce).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The USERNAME that created it.
    pub user: String,
    /// The client's address (as the relay sees it) and the listener it talks to.
    pub client: String,
    pub listener: String,
    pub transport: String,
    /// The relayed transport address announced to the client.
    pub relayed: String,
    pub age_seconds: u64,
    pub permissions: usize,
    pub channels: usize,
    /// Relayed in userspace, client → peer and peer → client.
    pub userspace_to_peer: Traffic,
    pub userspace_to_client: Traffic,
    /// Relayed by the XDP program (zero without XDP).
    pub xdp_to_peer: Traffic,
    pub xdp_to_client: Traffic,
}

impl Session {
    /// The share of packets (both ways) the XDP program relayed, 0.0-1.0; None before any.
    pub fn xdp_share(&self) -> Option<f64> {
        let xdp = self.xdp_to_peer.packets + self.xdp_to_client.packets;
        let all = xdp + self.userspace_to_peer.packets + self.userspace_to_client.packets;
        // Packet counts stay far below 2^52, where f64 is exact.
        (all > 0).then(|| xdp as f64 / all as f64)
    }
}
