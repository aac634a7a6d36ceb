//! `turn-bench run`'s options and the plan they make: the scenarios, step length and
//! search depth of one run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::load::{self, RelayMode};
use crate::per_core;
use crate::results::Scenario;
use crate::stream_load::ClientTransport;

/// Options of `turn-bench run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunOptions {
    /// A small subset (ChannelData and Send, 16 flows, 120 B; short steps, the per-core
    /// comparison with 1 s steps): about 2.5 minutes.
    #[arg(long)]
    pub quick: bool,
    /// Where the Markdown, JSON and SVG results go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Servers to run, comma separated: coturn, ours-userspace, ours-xdp (default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The turn-relay daemon (default: next to this binary, i.e. target/release/turn-relay).
    #[arg(long)]
    pub relay_binary: Option<PathBuf>,
    /// Seconds per load step (default 2, quick 1).
    #[arg(long)]
    pub step_seconds: Option<f64>,
    /// Flow counts to test, comma separated (default 1,16,256; quick 16).
    #[arg(long, value_delimiter = ',')]
    pub flows: Vec<usize>,
    /// Payload sizes in bytes, comma separated (default 120,1200; quick 120).
    #[arg(long, value_delimiter = ',')]
    pub payload: Vec<usize>,
    /// Skip the kernel-speed table (the highest rate of live frames each server relays
    /// on one core; part of the per-core comparison).
    #[arg(long)]
    pub no_kernel_mode: bool,
    /// Load generator threads (flows are split between them). More threads offer more load
    /// but take CPU from the server on small machines.
    #[arg(long, default_value_t = 1)]
    pub generator_threads: usize,
    /// IP families of the relay scenarios, comma separated: 4, 6 (default 4,6; quick 4).
    /// Client, relayed address and peer are all of that family. Binding requests/s,
    /// allocations/s and the kernel-speed mode are measured over IPv4 only.
    #[arg(long, value_delimiter = ',')]
    pub families: Vec<u8>,
    /// Measure every scenario at this one offered rate (pps) instead of sweeping for the
    /// maximum: CPU per relayed packet at a fixed load. The "saturated" columns then hold
    /// that step.
    #[arg(long)]
    pub fixed_rate: Option<f64>,
    /// Turn GRO on at the relay namespace's veth ends, as it is on a real host's NIC (veth
    /// has it off): a server that asks for UDP_GRO then reads bursts of one flow as one
    /// message. Off by default, so runs compare with earlier ones.
    #[arg(long)]
    pub relay_gro: bool,
    /// Run ours with `server.coalesce_us` at this many microseconds: each relay worker
    /// waits that long after a wake-up before it reads its sockets. 0 (the daemon's
    /// default): read at once.
    #[arg(long, default_value_t = 0)]
    pub coalesce_us: u32,
    /// Offered rates (pps, comma separated) of the per-core comparison: relay CPU per
    /// relayed packet with the relay and its NAPI kthreads pinned to one core (default
    /// 20000,40000).
    #[arg(long, value_delimiter = ',')]
    pub per_core_rates: Vec<f64>,
    /// Skip the per-core comparison.
    #[arg(long, conflicts_with = "per_core_only")]
    pub no_per_core: bool,
    /// Only the per-core comparison with its kernel-speed table and, for ours-xdp, its
    /// XDP program's cost under live traffic by rate (about a minute with `--quick`, a few
    /// without).
    #[arg(long)]
    pub per_core_only: bool,
}

pub struct Plan {
    pub scenarios: Vec<Scenario>,
    /// ChannelData from clients over TCP and TLS, IPv4.
    pub stream_scenarios: Vec<Scenario>,
    pub step: Duration,
    /// Rate-search steps after the saturated step.
    pub search_steps: usize,
    pub request_test: Duration,
    pub generator_threads: usize,
    pub fixed_rate: Option<f64>,
    /// `--coalesce-us`: ours' `server.coalesce_us`.
    pub coalesce_us: u32,
}

impl Plan {
    pub fn from_options(options: &RunOptions) -> Result<Plan> {
        let families = if !options.families.is_empty() {
            options.families.clone()
        } else if options.quick {
            vec![4]
        } else {
            vec![4, 6]
        };
        if let Some(bad) = families.iter().find(|f| !matches!(f, 4 | 6)) {
            bail!("unknown IP family {bad} (4 or 6)");
        }
        let flows = if !options.flows.is_empty() {
            options.flows.clone()
        } else if options.quick {
            vec![16]
        } else {
            vec![1, 16, 256]
        };
        let payloads = if !options.payload.is_empty() {
            options.payload.clone()
        } else if options.quick {
            vec![120]
        } else {
            vec![120, 1200]
        };
        let mut scenarios = Vec::new();
        for &family in &families {
            for mode in [RelayMode::ChannelData, RelayMode::SendIndication] {
                for &flows in &flows {
                    for &payload_len in &payloads {
                        scenarios.push(Scenario {
                            client: ClientTransport::Udp,
                            mode,
                            family,
                            flows: flows.max(1),
                            payload_len: payload_len.max(load::PROBE_LEN),
                        });
                    }
                }
            }
        }
        let mut stream_scenarios = Vec::new();
        for client in [ClientTransport::Tcp, ClientTransport::Tls] {
            for &flows in flows.iter().filter(|&&flows| flows >= 16) {
                for &payload_len in &payloads {
                    stream_scenarios.push(Scenario {
                        client,
                        mode: RelayMode::ChannelData,
                        family: 4,
                        flows,
                        payload_len: payload_len.max(load::PROBE_LEN),
                    });
                }
            }
        }
        let step_seconds = options
            .step_seconds
            .unwrap_or(if options.quick { 1.0 } else { 2.0 });
        Ok(Plan {
            scenarios,
            stream_scenarios,
            step: Duration::from_secs_f64(step_seconds.clamp(0.2, 30.0)),
            search_steps: if options.quick { 3 } else { 6 },
            request_test: Duration::from_secs_f64(if options.quick { 1.0 } else { 3.0 }),
            generator_threads: options.generator_threads,
            fixed_rate: options.fixed_rate,
            coalesce_us: options.coalesce_us,
        })
    }
}

/// `--per-core-rates`, or the defaults.
pub fn per_core_rates(options: &RunOptions) -> Vec<f64> {
    if options.per_core_rates.is_empty() {
        per_core::DEFAULT_RATES.to_vec()
    } else {
        options.per_core_rates.clone()
    }
}

/// The modes of the kernel-speed table: ChannelData (quick), both (full), none
/// (`--no-kernel-mode`).
pub fn kernel_speed_modes(options: &RunOptions) -> &'static [RelayMode] {
    if options.no_kernel_mode {
        &[]
    } else if options.quick {
        &[RelayMode::ChannelData]
    } else {
        &[RelayMode::ChannelData, RelayMode::SendIndication]
    }
}
