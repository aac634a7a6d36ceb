//! One `turn-bench run`: the lab (namespaces and their stub XDP programs), the
//! measurement context shared by all servers ([`Bench`]: load steps, rate sweeps, one
//! server's whole measurement) and the run itself ([`run`]).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use turn_testkit::addresses::{
    listener, OUTER_INTERFACE, PEER_V4, PEER_V6, RELAY_CLIENT_SIDE_INTERFACE, RELAY_LISTEN_V4,
    RELAY_PEER_SIDE_INTERFACE,
};
use turn_testkit::config::User;
use turn_testkit::netns::remove_stale_namespaces;
use turn_testkit::privilege::is_root;
use turn_testkit::stun_client::TurnClient;
use turn_testkit::tls::TestCertificate;
use turn_testkit::topology::{Topology, Wiring};
use turn_testkit::xdp::{StubAction, StubXdp};

use crate::control::{self, Flow};
use crate::load::{self, udp_drops, GeneratorOutcome, RelayMode, StepResult};
use crate::options::{kernel_speed_modes, per_core_rates, Plan, RunOptions};
use crate::results::{
    BenchReport, LatencyResult, MaxRate, Scenario, ScenarioResult, ServerResults,
};
use crate::servers::{self, RunningServer, ServerKind};
use crate::stream_load;
use crate::xdp_timing;
use crate::{cpu, install_signal_handlers, interrupted, live_cost, per_core, relay_binary, report};

/// Loss at or below this counts as "relayed" in the rate sweep (0.1 %).
pub const LOSS_THRESHOLD: f64 = 0.001;
pub const SINK_PORT: u16 = 40000;
/// RFC 8656 §12: the first channel number a client may bind.
pub const FIRST_CHANNEL: u16 = 0x4000;
pub const DRAIN: Duration = Duration::from_millis(150);

/// The namespaces with the trivial XDP programs on the client's and peer's veth ends: a
/// veth accepts frames the relay's XDP program redirects into it only with an XDP
/// program of its own. Attached for every server, so all of them see the same topology.
pub struct Lab {
    pub topology: Topology,
    _client_side: StubXdp,
    peer_side: Option<StubXdp>,
}

impl Lab {
    pub fn new(relay_gro: bool) -> Result<Lab> {
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
pub struct LiveCostRun {
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
pub struct Bench {
    pub lab: Lab,
    pub sink_socket: UdpSocket,
    pub sink_socket6: UdpSocket,
    pub user: User,
    /// The TLS certificate of both servers' TLS listeners.
    pub certificate: TestCertificate,
    pub next_step: u32,
    pub plan: Plan,
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
    pub fn measure(
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

    pub fn open_flows(&self, count: usize, family: u8) -> Result<Vec<Flow>> {
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

    pub fn close_flows(&self, flows: Vec<Flow>) {
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
    pub fn sweep_with(
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

    /// Starts `kind` on the lab's topology with the bench's user and certificate, run as
    /// `tuning` says.
    pub fn start_server(
        &self,
        kind: ServerKind,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
        tuning: servers::Tuning,
    ) -> Result<RunningServer> {
        RunningServer::start(
            kind,
            &self.lab.topology,
            &self.user,
            &self.certificate,
            relay_binary,
            work_dir,
            tuning,
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
        let tuning = servers::Tuning {
            threads: servers::Threads::PerCpu,
            coalesce_us: self.plan.coalesce_us,
        };
        let server = self.start_server(kind, relay_binary, work_dir, tuning)?;
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
        coalesce_us: options.coalesce_us,
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
