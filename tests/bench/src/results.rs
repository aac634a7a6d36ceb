//! What a run measured, as results.json holds it and results.md shows it ([`crate::report`]).

use serde::Serialize;

use crate::control;
use crate::live_cost;
use crate::load::{RelayMode, StepResult};
use crate::per_core;
use crate::stream_load::ClientTransport;

/// One load shape.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Scenario {
    /// How the clients reach the relay.
    pub client: ClientTransport,
    pub mode: RelayMode,
    /// IP family of client, relayed address and peer: 4 or 6.
    pub family: u8,
    pub flows: usize,
    pub payload_len: usize,
}

impl Scenario {
    pub fn label(&self) -> String {
        let client = match self.client {
            ClientTransport::Udp => String::new(),
            stream => format!(" over {}", stream.label()),
        };
        format!(
            "{}{client} IPv{} {} flows {} B",
            self.mode.label(),
            self.family,
            self.flows,
            self.payload_len
        )
    }

    pub fn slug(&self) -> String {
        let mode = match self.mode {
            RelayMode::ChannelData => "channeldata",
            RelayMode::SendIndication => "send",
            RelayMode::Direct => "direct",
        };
        // IPv4 keeps the slug it had before IPv6 scenarios existed.
        let family = if self.family == 6 { "-ipv6" } else { "" };
        let client = match self.client {
            ClientTransport::Udp => "",
            ClientTransport::Tcp => "tcp-",
            ClientTransport::Tls => "tls-",
        };
        format!(
            "{client}{mode}{family}-{}flows-{}B",
            self.flows, self.payload_len
        )
    }
}

/// The highest offered rate relayed with ≤ 0.1 % loss.
#[derive(Clone, Debug, Serialize)]
pub struct MaxRate {
    pub pps: f64,
    /// True when no tested rate lost more than 0.1 %: the generator, not the server, set
    /// the limit, so `pps` is a lower bound.
    pub generator_bound: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub max_rate: MaxRate,
    /// The as-fast-as-possible step (CPU cost is taken from it).
    pub saturated: StepResult,
    /// The step run at `max_rate` (None when that was the saturated step).
    pub at_max_rate: Option<StepResult>,
    /// All steps, including the saturated one, in the order run.
    pub steps: Vec<StepResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    pub scenario: Scenario,
    pub rate_pps: f64,
    pub step: StepResult,
    /// RTT through the relay and back (sink echoes), at a low rate.
    pub round_trip: Option<StepResult>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerResults {
    pub server: String,
    /// coturn's version or our daemon's XDP status line.
    pub status: Option<String>,
    /// Our daemon's XDP counters at shutdown (shows whether XDP relayed the load).
    pub xdp_totals: Option<String>,
    /// Non-zero XDP samples of our daemon's /metrics at the end of its run.
    pub xdp_metrics: Vec<String>,
    pub error: Option<String>,
    pub binding_requests: Option<control::RequestRate>,
    pub allocations: Option<control::RequestRate>,
    pub scenarios: Vec<ScenarioResult>,
    /// Clients over TCP and TLS (coturn and ours in userspace).
    pub stream_scenarios: Vec<ScenarioResult>,
    pub latency: Option<LatencyResult>,
    /// ours-xdp: the XDP program's cost per packet under live traffic during the latency
    /// step ([`live_cost`]).
    pub xdp_live_cost: Option<live_cost::LiveCost>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub started_unix: u64,
    pub kernel: String,
    pub cpus: usize,
    pub quick: bool,
    pub step_seconds: f64,
    pub generator_threads: usize,
    /// `--fixed-rate`: every scenario ran at this offered rate only (no sweep).
    pub fixed_rate_pps: Option<f64>,
    /// `--relay-gro`: GRO was on at the relay's veth ends.
    pub relay_gro: bool,
    /// `--coalesce-us`: ours ran with `server.coalesce_us` at this value.
    pub coalesce_us: u32,
    pub loss_threshold: f64,
    pub latency_rate_pps: Option<f64>,
    pub baseline_latency: Option<StepResult>,
    pub servers: Vec<ServerResults>,
    /// Mean ns per packet of the XDP program for each relay path, from BPF_PROG_TEST_RUN
    /// ([`crate::xdp_timing::time_paths`]), next to a pass-only program (`baseline_pass`).
    pub xdp_program_ns_per_packet: Vec<(String, f64)>,
    pub xdp_program_timing_error: Option<String>,
    /// Relay CPU per relayed packet on one pinned core ([`per_core`]).
    pub per_core: Option<per_core::PerCoreReport>,
}
