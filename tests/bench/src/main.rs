//! `turn-bench`: a re-runnable benchmark of this relay against coturn on one machine, in one
//! run, on the same topology and load (issue #4). `turn-bench run --quick --out DIR`
//! writes results.md, results.json and plot-*.svg to DIR; `cargo xtask bench` runs it.
//! Needs root.
//!
//! One run builds client/relay/peer network namespaces (the testkit's topology with its
//! benchmark wiring), times the XDP program per path under BPF_PROG_TEST_RUN
//! ([`xdp_timing`]), then for each server
//! ([`servers`]: coturn, ours with XDP off, ours with XDP) measures STUN Binding requests/s
//! and authenticated allocations/s ([`control`]), sweeps the offered rate per scenario to
//! find the highest rate relayed with ≤ 0.1 % loss ([`load`]), measures one-way latency at
//! half of coturn's maximum rate. Clients over TCP and TLS relay ChannelData to the same
//! sink ([`stream_load`]; coturn and ours in userspace, as XDP relays UDP clients only).
//! Last, the per-core comparison ([`per_core`]): each server with one relay thread,
//! pinned with its NAPI kthreads to one core, its CPU per relayed packet at fixed rates
//! with frames from sockets (skbs) and from the live-frames generator (XDP frames,
//! [`kernel_mode`]), and its highest rate of live frames relayed with ≤ 0.1 % loss (the
//! kernel-speed table); `--per-core-only` runs just that. Results go to Markdown, JSON and SVG files
//! ([`report`]), the per-core table first. `turn-bench scale` ([`scale`]) measures memory
//! per allocation instead.

mod control;
mod cpu;
mod kernel_mode;
mod live_cost;
mod load;
mod per_core;
mod report;
mod scale;
mod servers;
mod stream_load;
mod xdp_timing;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use turn_testkit::addresses::{
    listener, OUTER_INTERFACE, PEER_V4, PEER_V6, RELAY_CLIENT_SIDE_INTERFACE,
    RELAY_PEER_SIDE_INTERFACE,
};
use turn_testkit::config::User;
use turn_testkit::netns::remove_stale_namespaces;
use turn_testkit::privilege::is_root;
use turn_testkit::topology::{Topology, Wiring};
use turn_testkit::xdp::{StubAction, StubXdp};

use control::Flow;
use load::{udp_drops, GeneratorOutcome, RelayMode, StepResult};
use servers::{RunningServer, ServerKind};
use stream_load::ClientTransport;
use turn_testkit::addresses::RELAY_LISTEN_V4;
use turn_testkit::stun_client::TurnClient;
use turn_testkit::tls::TestCertificate;

/// Loss at or below this counts as "relayed" in the rate sweep (0.1 %).
pub const LOSS_THRESHOLD: f64 = 0.001;
const SINK_PORT: u16 = 40000;
/// RFC 8656 §12: the first channel number a client may bind.
const FIRST_CHANNEL: u16 = 0x4000;
const DRAIN: Duration = Duration::from_millis(150);

/// Set by SIGINT/SIGTERM (signal-hook); every load loop checks it and returns, so the
/// namespaces are torn down and partial results written.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// True once SIGINT/SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

fn install_signal_handlers() -> Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&INTERRUPTED))
            .context("installing the signal handlers")?;
    }
    Ok(())
}

#[derive(Parser)]
#[command(
    version,
    about = "Benchmark turn-relay against coturn on the same machine and load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmark and write results.md, results.json and plots.
    Run(Box<RunOptions>),
    /// Only the XDP program's per-path cost (BPF_PROG_TEST_RUN, the table `run` puts in
    /// results.md), printed as a Markdown table: seconds instead of minutes.
    XdpTiming {
        /// Single runs per path, the median reported (at most and by default 50000, as
        /// `run` does).
        #[arg(long, default_value_t = xdp_timing::MAX_RUNS)]
        runs: u32,
    },
    /// Scale and memory: ours with XDP and N allocations with a channel each, the
    /// daemon's RSS per allocation and the XDP maps' kernel memory (minutes, not part of
    /// `run`).
    Scale(Box<scale::ScaleOptions>),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(options) => run(&options),
        Command::Scale(options) => scale::run(&options),
        Command::XdpTiming { runs } => {
            if !is_root() {
                bail!("turn-bench xdp-timing needs root (BPF_PROG_TEST_RUN, a network namespace)");
            }
            println!("| path | ns/packet |\n|---|---|");
            for (path, ns) in xdp_timing::time_paths(runs)? {
                println!("| {path} | {ns:.1} |");
            }
            Ok(())
        }
    }
}

/// `given`, or else the turn-relay daemon next to this binary (target/release/turn-relay).
fn relay_binary(given: Option<&std::path::Path>) -> Result<PathBuf> {
    match given {
        Some(path) => Ok(path.to_owned()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .join("turn-relay")),
    }
}

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
    /// Offered rates (pps, comma separated) of the per-core comparison: relay CPU per
    /// relayed packet with the relay and its NAPI kthreads pinned to one core (default
    /// 20000,40000).
    #[arg(long, value_delimiter = ',')]
    pub per_core_rates: Vec<f64>,
    /// Skip the per-core comparison.
    #[arg(long, conflicts_with = "per_core_only")]
    pub no_per_core: bool,
    /// Only the per-core comparison with its kernel-speed table (about a minute with
    /// `--quick`, a few without).
    #[arg(long)]
    pub per_core_only: bool,
}

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
    pub loss_threshold: f64,
    pub latency_rate_pps: Option<f64>,
    pub baseline_latency: Option<StepResult>,
    pub servers: Vec<ServerResults>,
    /// Mean ns per packet of the XDP program for each relay path, from BPF_PROG_TEST_RUN
    /// ([`xdp_timing::time_paths`]), next to a pass-only program (`baseline_pass`).
    pub xdp_program_ns_per_packet: Vec<(String, f64)>,
    pub xdp_program_timing_error: Option<String>,
    /// Relay CPU per relayed packet on one pinned core ([`per_core`]).
    pub per_core: Option<per_core::PerCoreReport>,
}

struct Plan {
    scenarios: Vec<Scenario>,
    /// ChannelData from clients over TCP and TLS, IPv4.
    stream_scenarios: Vec<Scenario>,
    step: Duration,
    /// Rate-search steps after the saturated step.
    search_steps: usize,
    request_test: Duration,
    generator_threads: usize,
    fixed_rate: Option<f64>,
}

impl Plan {
    fn from_options(options: &RunOptions) -> Result<Plan> {
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
        })
    }
}

/// The namespaces with the trivial XDP programs on the client's and peer's veth ends: a
/// veth accepts frames the relay's XDP program redirects into it only with an XDP
/// program of its own. Attached for every server, so all of them see the same topology.
pub struct Lab {
    pub topology: Topology,
    _client_side: StubXdp,
    peer_side: Option<StubXdp>,
}

impl Lab {
    fn new(relay_gro: bool) -> Result<Lab> {
        let topology = Topology::wired(Wiring::benchmark()).context("building the namespaces")?;
        if relay_gro {
            for interface in [RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE] {
                topology
                    .relay
                    .run("ethtool", &["-K", interface, "gro", "on"])?;
            }
        }
        let client_side = StubXdp::attach(&topology.client, OUTER_INTERFACE, StubAction::Pass)?;
        let mut lab = Lab {
            topology,
            _client_side: client_side,
            peer_side: None,
        };
        lab.set_peer_side(StubAction::Pass)?;
        Ok(lab)
    }

    /// Replaces the peer-side veth end's XDP program. Kernel-speed mode drops there, so
    /// that the peer's own UDP stack does not limit the relay; the veth end still counts
    /// every frame it received in rx_packets.
    pub fn set_peer_side(&mut self, action: StubAction) -> Result<()> {
        self.peer_side = None;
        self.peer_side = Some(StubXdp::attach(
            &self.topology.peer,
            OUTER_INTERFACE,
            action,
        )?);
        Ok(())
    }
}

/// A live-cost measurement under way: statistics on, the programs' first snapshots.
struct LiveCostRun {
    _stats: live_cost::StatsEnabled,
    relay: (u32, live_cost::Snapshot),
    pass: (u32, live_cost::Snapshot),
}

impl LiveCostRun {
    fn finish(self) -> Result<live_cost::LiveCost> {
        let relay = (self.relay.1, live_cost::snapshot(self.relay.0)?);
        let pass = (self.pass.1, live_cost::snapshot(self.pass.0)?);
        live_cost::cost(relay, pass)
    }
}

/// Measurement context shared by all servers of a run.
struct Bench {
    lab: Lab,
    sink_socket: UdpSocket,
    sink_socket6: UdpSocket,
    user: User,
    /// The TLS certificate of both servers' TLS listeners.
    certificate: TestCertificate,
    next_step: u32,
    plan: Plan,
}

impl Bench {
    fn sink_address(family: u8) -> SocketAddr {
        if family == 6 {
            SocketAddr::new(PEER_V6.into(), SINK_PORT)
        } else {
            SocketAddr::new(PEER_V4.into(), SINK_PORT)
        }
    }

    /// One bounded load step of UDP clients: generator for `plan.step`, then a short drain.
    fn measure(
        &mut self,
        relay_pid: Option<u32>,
        flows: &[Flow],
        scenario: &Scenario,
        rate: Option<f64>,
        echo: bool,
    ) -> Result<StepResult> {
        let (duration, threads) = (self.plan.step, self.plan.generator_threads);
        self.measure_load(
            relay_pid,
            flows.len(),
            scenario,
            rate,
            echo.then_some(flows),
            |step| {
                load::generate(
                    flows,
                    scenario.mode,
                    scenario.payload_len,
                    rate,
                    duration,
                    step,
                    threads,
                )
            },
        )
    }

    /// One bounded load step of clients over TCP or TLS.
    fn measure_stream(
        &mut self,
        relay_pid: u32,
        clients: &mut [TurnClient],
        scenario: &Scenario,
        rate: Option<f64>,
    ) -> Result<StepResult> {
        let duration = self.plan.step;
        let flows = clients.len();
        self.measure_load(Some(relay_pid), flows, scenario, rate, None, |step| {
            stream_load::generate(
                clients,
                FIRST_CHANNEL,
                scenario.payload_len,
                rate,
                duration,
                step,
            )
        })
    }

    /// One bounded load step: `generate` (given the step number) runs for `plan.step`,
    /// then a short drain; the sink counts `flow_count` flows, `echo_flows` get the
    /// sink's echoes.
    fn measure_load(
        &mut self,
        relay_pid: Option<u32>,
        flow_count: usize,
        scenario: &Scenario,
        rate: Option<f64>,
        echo_flows: Option<&[Flow]>,
        generate: impl FnOnce(u32) -> GeneratorOutcome,
    ) -> Result<StepResult> {
        self.next_step += 1;
        let step = self.next_step;
        let sink_socket = if scenario.family == 6 {
            &self.sink_socket6
        } else {
            &self.sink_socket
        };
        let sink = load::Receiver::start_sink(sink_socket, step, flow_count, echo_flows.is_some())?;
        let echo_receiver = match echo_flows {
            Some(flows) => Some(load::Receiver::start_echo_receiver(flows, step)?),
            None => None,
        };
        let topology = &self.lab.topology;
        let sink_drops_before = udp_drops(&topology.peer)?;
        let relay_drops_before = udp_drops(&topology.relay)?;
        let cpu_before = relay_pid.map(cpu::CpuSnapshot::take).transpose()?;
        let outcome = generate(step);
        std::thread::sleep(DRAIN);
        let sink_report = sink.finish();
        let echo_report = echo_receiver.map(load::Receiver::finish);
        let cpu = match (relay_pid, cpu_before) {
            (Some(pid), Some(before)) => {
                Some(cpu::CpuSnapshot::take(pid)?.cost_since(&before, sink_report.received))
            }
            _ => None,
        };
        let sink_drops = udp_drops(&topology.peer)?.since(&sink_drops_before);
        let relay_drops = udp_drops(&topology.relay)?.since(&relay_drops_before);
        if interrupted() {
            bail!("interrupted");
        }
        Ok(StepResult::from_parts(
            rate,
            &outcome,
            sink_report,
            sink_drops,
            relay_drops,
            echo_report,
            cpu,
        ))
    }

    fn open_flows(&self, count: usize, family: u8) -> Result<Vec<Flow>> {
        (0..count)
            .map(|index| {
                let channel = FIRST_CHANNEL + index as u16;
                control::open_flow(
                    &self.lab.topology.client,
                    listener(family),
                    &self.user,
                    Self::sink_address(family),
                    channel,
                )
                .with_context(|| format!("setting up flow {index}"))
            })
            .collect()
    }

    fn close_flows(&self, flows: Vec<Flow>) {
        for flow in flows {
            control::close_flow(flow);
        }
    }

    /// Saturated step, then a bisection on the offered rate for ≤ 0.1 % loss, for UDP
    /// clients.
    fn sweep(&mut self, pid: u32, flows: &[Flow], scenario: &Scenario) -> Result<ScenarioResult> {
        self.sweep_with(scenario, self.plan.search_steps, &mut |bench, rate| {
            bench.measure(Some(pid), flows, scenario, rate, false)
        })
    }

    /// Saturated step, then a bisection on the offered rate for ≤ 0.1 % loss in up to
    /// `search_steps` steps, each measured by `measure` (given the rate; None: as fast as
    /// possible).
    fn sweep_with(
        &mut self,
        scenario: &Scenario,
        search_steps: usize,
        measure: &mut dyn FnMut(&mut Bench, Option<f64>) -> Result<StepResult>,
    ) -> Result<ScenarioResult> {
        let fixed_rate = self.plan.fixed_rate;
        let saturated = measure(self, fixed_rate)?;
        let mut steps = vec![saturated.clone()];
        if saturated.loss_ratio <= LOSS_THRESHOLD || fixed_rate.is_some() {
            let max_rate = MaxRate {
                pps: saturated.relayed_pps,
                generator_bound: fixed_rate.is_none(),
            };
            return Ok(ScenarioResult {
                scenario: *scenario,
                max_rate,
                saturated,
                at_max_rate: None,
                steps,
            });
        }
        let (mut good, mut bad) = (0.0f64, saturated.offered_pps);
        let mut at_max_rate = None;
        let mut rate = (saturated.relayed_pps * 0.95).max(100.0);
        for _ in 0..search_steps {
            let result = measure(self, Some(rate))?;
            if result.loss_ratio <= LOSS_THRESHOLD && !result.generator_bound {
                good = rate;
                at_max_rate = Some(result.clone());
            } else {
                bad = rate;
            }
            steps.push(result);
            rate = if good == 0.0 {
                rate * 0.5
            } else {
                (good + bad) / 2.0
            };
            if bad - good < 0.03 * bad {
                break;
            }
        }
        Ok(ScenarioResult {
            scenario: *scenario,
            max_rate: MaxRate {
                pps: good,
                generator_bound: false,
            },
            saturated,
            at_max_rate,
            steps,
        })
    }

    /// Measures one server; partial results survive a failure (the error is recorded).
    fn run_server(
        &mut self,
        kind: ServerKind,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
        latency_rate: Option<f64>,
    ) -> ServerResults {
        let mut results = ServerResults {
            server: kind.name().to_string(),
            ..ServerResults::default()
        };
        if let Err(error) =
            self.measure_server(kind, relay_binary, work_dir, latency_rate, &mut results)
        {
            eprintln!("turn-bench: {}: {error:#}", kind.name());
            results.error = Some(format!("{error:#}"));
        }
        results
    }

    /// Starts `kind` on the lab's topology with the bench's user and certificate.
    fn start_server(
        &self,
        kind: ServerKind,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
        threads: servers::Threads,
    ) -> Result<RunningServer> {
        RunningServer::start(
            kind,
            &self.lab.topology,
            &self.user,
            &self.certificate,
            relay_binary,
            work_dir,
            threads,
        )
    }

    fn measure_server(
        &mut self,
        kind: ServerKind,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
        latency_rate: Option<f64>,
        results: &mut ServerResults,
    ) -> Result<()> {
        let server = self.start_server(kind, relay_binary, work_dir, servers::Threads::PerCpu)?;
        let pid = server.pid();
        results.status = server.status();
        eprintln!("turn-bench: {}: Binding requests/s", kind.name());
        results.binding_requests = Some(control::binding_rate(
            &self.lab.topology.client,
            listener(4),
            self.plan.request_test,
        )?);
        eprintln!("turn-bench: {}: allocations/s", kind.name());
        results.allocations = Some(control::allocation_rate(
            &self.lab.topology.client,
            listener(4),
            &self.user,
            self.plan.request_test,
            32,
        )?);
        for scenario in self.plan.scenarios.clone() {
            eprintln!("turn-bench: {}: {}", kind.name(), scenario.label());
            let flows = self.open_flows(scenario.flows, scenario.family)?;
            let result = self.sweep(pid, &flows, &scenario);
            self.close_flows(flows);
            let result = result?;
            eprintln!(
                "turn-bench: {}: {}: max {:.0} pps at ≤0.1% loss{}; saturated offered {:.0} relayed {:.0}",
                kind.name(),
                scenario.label(),
                result.max_rate.pps,
                if result.max_rate.generator_bound { " (generator-bound)" } else { "" },
                result.saturated.offered_pps,
                result.saturated.relayed_pps
            );
            results.scenarios.push(result);
        }
        // XDP relays UDP clients only: ours-xdp relays TCP and TLS clients exactly as
        // ours-userspace does, so they are measured once.
        if kind != ServerKind::OursXdp {
            for scenario in self.plan.stream_scenarios.clone() {
                eprintln!("turn-bench: {}: {}", kind.name(), scenario.label());
                let mut clients = stream_load::open(
                    &self.lab.topology.client,
                    scenario.client,
                    scenario.flows,
                    &self.user,
                    Self::sink_address(4),
                    FIRST_CHANNEL,
                    &self.certificate,
                )?;
                let result =
                    self.sweep_with(&scenario, self.plan.search_steps, &mut |bench, rate| {
                        bench.measure_stream(pid, &mut clients, &scenario, rate)
                    });
                stream_load::close(clients);
                let result = result?;
                eprintln!(
                    "turn-bench: {}: {}: max {:.0} pps at ≤0.1% loss{}",
                    kind.name(),
                    scenario.label(),
                    result.max_rate.pps,
                    if result.max_rate.generator_bound {
                        " (generator-bound)"
                    } else {
                        ""
                    },
                );
                results.stream_scenarios.push(result);
            }
        }
        let Some(scenario) = self.plan.scenarios.first().copied() else {
            return Ok(());
        };
        let own_max = results.scenarios.first().map_or(0.0, |s| s.max_rate.pps);
        let rate = latency_rate.unwrap_or(own_max * 0.5).max(100.0);
        let flows = self.open_flows(scenario.flows, scenario.family)?;
        eprintln!("turn-bench: {}: latency at {rate:.0} pps", kind.name());
        let live = (kind == ServerKind::OursXdp && scenario.mode == RelayMode::ChannelData)
            .then(|| self.live_cost_start())
            .transpose();
        let step = self.measure(Some(pid), &flows, &scenario, Some(rate), false);
        match live.and_then(|live| live.map(|start| start.finish()).transpose()) {
            Ok(cost) => results.xdp_live_cost = cost,
            Err(error) => eprintln!("turn-bench: live XDP cost not measured: {error:#}"),
        }
        let round_trip = self.measure(Some(pid), &flows, &scenario, Some(rate.min(1000.0)), true);
        self.close_flows(flows);
        results.latency = Some(LatencyResult {
            scenario,
            rate_pps: rate,
            step: step?,
            round_trip: round_trip.ok(),
        });
        if kind != ServerKind::Coturn {
            match server.xdp_metrics() {
                Ok(lines) => results.xdp_metrics = lines,
                Err(error) => eprintln!("turn-bench: {}: no metrics: {error:#}", kind.name()),
            }
        }
        let log_path = server.log_path().to_owned();
        drop(server);
        if kind != ServerKind::Coturn {
            results.xdp_totals = servers::xdp_totals_line(&log_path);
        }
        Ok(())
    }

    /// Starts timing the relay's XDP program and the pass-only program on the peer's
    /// veth end (see [`live_cost`]).
    fn live_cost_start(&self) -> Result<LiveCostRun> {
        let topology = &self.lab.topology;
        let relay = live_cost::attached_program(&topology.relay, RELAY_CLIENT_SIDE_INTERFACE)?;
        let pass = live_cost::attached_program(&topology.peer, OUTER_INTERFACE)?;
        let stats = live_cost::StatsEnabled::new()?;
        Ok(LiveCostRun {
            _stats: stats,
            relay: (relay, live_cost::snapshot(relay)?),
            pass: (pass, live_cost::snapshot(pass)?),
        })
    }

    /// One-way latency with no relay: the client sends straight to the sink at the same
    /// rate and the relay namespace's kernel forwards it. "Added latency" = relay p99 − this p99.
    fn baseline(&mut self, scenario: &Scenario, rate: f64) -> Result<StepResult> {
        let flows: Vec<Flow> = (0..scenario.flows)
            .map(|_| {
                control::direct_flow(
                    &self.lab.topology.client,
                    Self::sink_address(scenario.family),
                )
            })
            .collect::<Result<_>>()?;
        let direct = Scenario {
            mode: RelayMode::Direct,
            ..*scenario
        };
        self.measure(None, &flows, &direct, Some(rate), false)
    }
}

/// `--per-core-rates`, or the defaults.
fn per_core_rates(options: &RunOptions) -> Vec<f64> {
    if options.per_core_rates.is_empty() {
        per_core::DEFAULT_RATES.to_vec()
    } else {
        options.per_core_rates.clone()
    }
}

/// The modes of the kernel-speed table: ChannelData (quick), both (full), none
/// (`--no-kernel-mode`).
fn kernel_speed_modes(options: &RunOptions) -> &'static [RelayMode] {
    if options.no_kernel_mode {
        &[]
    } else if options.quick {
        &[RelayMode::ChannelData]
    } else {
        &[RelayMode::ChannelData, RelayMode::SendIndication]
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `turn-bench run`: the whole benchmark.
pub fn run(options: &RunOptions) -> Result<()> {
    install_signal_handlers()?;
    if !is_root() {
        bail!("turn-bench needs root (network namespaces, AF_PACKET, XDP)");
    }
    let kinds: Vec<ServerKind> = if options.only.is_empty() {
        ServerKind::ALL.to_vec()
    } else {
        options
            .only
            .iter()
            .map(|name| {
                ServerKind::from_name(name).with_context(|| {
                    format!("unknown server {name} (coturn, ours-userspace, ours-xdp)")
                })
            })
            .collect::<Result<_>>()?
    };
    let relay_binary = relay_binary(options.relay_binary.as_deref())?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let work_dir = options.out.join("logs");
    std::fs::create_dir_all(&work_dir)?;
    let plan = Plan::from_options(options)?;
    let step_seconds = plan.step.as_secs_f64();

    remove_stale_namespaces();
    let lab = Lab::new(options.relay_gro)?;
    let bind_sink = |family: u8| {
        lab.topology.peer.run_inside(move || {
            let socket =
                UdpSocket::bind(Bench::sink_address(family)).context("binding the sink")?;
            control::enlarge_buffers(&socket);
            Ok(socket)
        })
    };
    let sink_socket = bind_sink(4)?;
    let sink_socket6 = bind_sink(6)?;
    let password = format!("bench-{:016x}", rand::random::<u64>());
    let certificate = TestCertificate::generate(&[&RELAY_LISTEN_V4.to_string()])
        .context("generating the TLS certificate")?;
    let mut bench = Bench {
        lab,
        sink_socket,
        sink_socket6,
        user: User::new("bench", &password),
        certificate,
        next_step: 0,
        plan,
    };

    let mut report = BenchReport {
        started_unix: unix_now(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        quick: options.quick,
        step_seconds,
        generator_threads: options.generator_threads,
        fixed_rate_pps: options.fixed_rate,
        relay_gro: options.relay_gro,
        loss_threshold: LOSS_THRESHOLD,
        latency_rate_pps: None,
        baseline_latency: None,
        servers: Vec::new(),
        xdp_program_ns_per_packet: Vec::new(),
        xdp_program_timing_error: None,
        per_core: None,
    };
    let per_core_rates = per_core_rates(options);
    let per_core_plan = per_core::PerCorePlan {
        rates: &per_core_rates,
        kernel_speed_modes: kernel_speed_modes(options),
    };
    if options.per_core_only {
        report.per_core = Some(bench.per_core(&kinds, per_core_plan, &relay_binary, &work_dir));
        let written = report::write_all(&report, &options.out)?;
        println!("{}", std::fs::read_to_string(&written).unwrap_or_default());
        if interrupted() {
            bail!("interrupted; partial results written");
        }
        return Ok(());
    }
    if kinds.contains(&ServerKind::OursXdp) {
        eprintln!("turn-bench: XDP program per-path timing (BPF_PROG_TEST_RUN)");
        match xdp_timing::time_paths(if options.quick { 100_000 } else { 1_000_000 }) {
            Ok(timings) => report.xdp_program_ns_per_packet = timings,
            Err(error) => report.xdp_program_timing_error = Some(format!("{error:#}")),
        }
    }
    for kind in kinds.iter().copied() {
        if interrupted() {
            break;
        }
        eprintln!("turn-bench: starting {}", kind.name());
        let results = bench.run_server(kind, &relay_binary, &work_dir, report.latency_rate_pps);
        if report.latency_rate_pps.is_none() {
            // Latency is compared at half of coturn's maximum rate (or the first server's).
            report.latency_rate_pps = results.latency.as_ref().map(|l| l.rate_pps);
        }
        report.servers.push(results);
    }
    if let (Some(rate), Some(scenario)) = (
        report.latency_rate_pps,
        bench.plan.scenarios.first().copied(),
    ) {
        if !interrupted() {
            eprintln!("turn-bench: baseline latency without a relay");
            report.baseline_latency = bench
                .baseline(&scenario, rate)
                .map_err(|e| eprintln!("turn-bench: baseline failed: {e:#}"))
                .ok();
        }
    }
    if !options.no_per_core && !interrupted() {
        // Last, as it turns GRO and threaded NAPI on in the namespaces.
        report.per_core = Some(bench.per_core(&kinds, per_core_plan, &relay_binary, &work_dir));
    }
    let written = report::write_all(&report, &options.out)?;
    println!("{}", std::fs::read_to_string(&written).unwrap_or_default());
    eprintln!("turn-bench: results in {}", options.out.display());
    if interrupted() {
        bail!("interrupted; partial results written");
    }
    Ok(())
}
