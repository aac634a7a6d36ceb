//! The per-core comparison (issue 11): relay CPU per relayed packet with the relay
//! isolated on one core.
//!
//! On veth, a frame's receive processing (GRO, the UDP stack or the XDP program) runs in
//! the softirq of the CPU that sent it, i.e. the generator's, so a whole-machine CPU
//! figure cannot tell the relay's work from the load's. Here:
//! - threaded NAPI is on at the relay's client-side veth end (GRO on there, so it exists
//!   for the userspace servers too) and at the peer's end; the relay's `napi/to-client-*`
//!   kthreads and every thread of the server process run on [`RELAY_CPU`]; the generator,
//!   the sink and the peer's NAPI kthreads on [`LOAD_CPU`], the latter SCHED_FIFO so that
//!   the sink keeps up ([`Bench::peer_end`]);
//! - a live-frames step during which the hypervisor or other tasks took one of the two
//!   cores is tried again ([`crate::disturbance::Disturbance`], [`LIVE_TRIES`]);
//! - each server runs with one relay thread (coturn `--relay-threads=1`, ours
//!   `--threads 1`) at the same fixed offered rates;
//! - relay CPU = the server process's CPU time + its NAPI kthreads' CPU time (scheduler
//!   run time, [`crate::cpu::task_run_time`]) over the step, divided by the packets the sink
//!   received.
//!
//! Every row is measured twice, once per [`Generator`]:
//! - from sockets (sendmmsg in the client namespace): frames reach the relay's veth as
//!   skbs, as in containers; an XDP program on veth then pays for turning each skb into an
//!   XDP frame;
//! - with live frames ([`crate::kernel_mode`]): frames reach it as XDP frames, as from a
//!   NIC driver. They are counted where they arrive at the peer's veth end, which drops
//!   them.
//!
//! The *floor* rows measure what veth itself costs: a trivial XDP program on the same
//! veth end, no server, the same pinning and rate, its kthreads' CPU per frame sent, for
//! each generator ([`FloorProgram`]):
//! - drop-only: the difference between the two generators is the skb → XDP frame
//!   conversion;
//! - redirect-only: every frame redirected unchanged into the relay's peer-side veth, as
//!   the relay's program redirects (`bpf_redirect_map`), and dropped at the peer's end
//!   (which counts what arrived). Over the drop-only floor, it is what the redirect costs
//!   the relay's core, including waking the peer end's NAPI kthread on [`LOAD_CPU`]; ours-xdp
//!   over it is the relay program's own work.
//!
//! Last, per server, the kernel-speed table: the highest rate of live frames relayed with
//! ≤ 0.1 % loss on the one pinned core (saturated step, then bisection). For ours-xdp,
//! its XDP program's own cost under live traffic at [`crate::live_cost::RATES`], against
//! the pass-only program's in its place after the floors ([`crate::live_cost`]).

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use turn_testkit::addresses::{
    listener, OUTER_INTERFACE, RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE,
};
use turn_testkit::xdp::{FrameInjector, StubAction, StubXdp};

use crate::bench::{Bench, LOSS_THRESHOLD};
use crate::control::{self, Flow};
use crate::cpu;
use crate::disturbance::{probe_wake_latency, CpuClocks, WakeLatency};
use crate::kernel_mode::PathCounters;
use crate::live_cost::{self, LiveCostByRate};
use crate::load::{self, RelayMode, StepResult};
use crate::pinning::{
    pin_process, real_time, threaded_napi, threads_run_time, LoadPinned, RelayCoreCleared,
};
use crate::results::{MaxRate, Scenario, ScenarioResult};
use crate::servers::{ServerKind, Threads, Tuning};
use crate::stream_load::ClientTransport;

/// The core the relay (process and NAPI kthreads) runs on.
pub const RELAY_CPU: usize = 1;
/// The core of the generator, the sink and the peer's NAPI kthreads.
pub const LOAD_CPU: usize = 0;
/// Flows (allocations, each with a channel) of every step.
pub const FLOWS: usize = 8;
/// UDP payload bytes of every relayed datagram (probe header included).
pub const PAYLOAD_LEN: usize = 120;
/// The offered rates of the full run (pps).
pub const DEFAULT_RATES: [f64; 2] = [20_000.0, 40_000.0];
/// Bisection steps of the kernel-speed search at least: its saturated step relays in
/// large batches, far above the rate sustained without loss, so the search starts high.
const KERNEL_SPEED_SEARCH_STEPS: usize = 7;
/// Real-time priority (SCHED_FIFO) of the peer's NAPI kthreads, the sink: see
/// [`Bench::peer_end`]. The relay's own NAPI kthreads stay SCHED_OTHER, as ksoftirqd is
/// when a host's NAPI is overloaded: run SCHED_FIFO (tried on 2026-12-01), they starved
/// coturn's and ours-userspace's process on the shared core in every step above their
/// capacity (coturn relayed 3.5 k of 3.7 M pps offered, then the rate search settled at
/// 2–3 k pps against 30–59 k with SCHED_OTHER).
const SINK_PRIORITY: i32 = 50;
/// Tries of a live-frames step at most: one, and more while the machine disturbed it.
pub const LIVE_TRIES: usize = 3;

/// How the load reaches the relay's veth end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Generator {
    /// sendmmsg on UDP sockets in the client namespace: skbs.
    Sockets,
    /// The live-frames generator ([`crate::kernel_mode`]): XDP frames.
    LiveFrames,
}

impl Generator {
    pub const ALL: [Generator; 2] = [Generator::Sockets, Generator::LiveFrames];

    pub fn label(self) -> &'static str {
        match self {
            Generator::Sockets => "sockets (skbs)",
            Generator::LiveFrames => "live frames (XDP)",
        }
    }
}

/// One server at one rate, mode and generator.
#[derive(Clone, Debug, Serialize)]
pub struct PerCoreRow {
    pub server: String,
    pub mode: RelayMode,
    pub generator: Generator,
    pub target_pps: f64,
    pub offered_pps: f64,
    pub relayed_pps: f64,
    pub loss_ratio: f64,
    /// The server process's CPU per relayed packet, ns.
    pub process_ns: f64,
    /// Its NAPI kthreads' CPU per relayed packet, ns.
    pub napi_ns: f64,
    /// Relayed packets per time a server thread was put on the CPU.
    pub packets_per_process_run: f64,
    /// Relayed packets per NAPI kthread run (poll batch after a wake-up).
    pub packets_per_napi_run: f64,
}

impl PerCoreRow {
    /// Relay CPU per relayed packet, ns.
    pub fn total_ns(&self) -> f64 {
        self.process_ns + self.napi_ns
    }
}

/// The trivial XDP program of a floor row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FloorProgram {
    /// Drops UDP ([`StubAction::Drop`]).
    Drop,
    /// Redirects UDP unchanged into the relay's peer-side veth
    /// ([`StubAction::RedirectTo`]).
    Redirect,
}

impl FloorProgram {
    pub const ALL: [FloorProgram; 2] = [FloorProgram::Drop, FloorProgram::Redirect];

    pub fn label(self) -> &'static str {
        match self {
            FloorProgram::Drop => "drop-only",
            FloorProgram::Redirect => "redirect-only",
        }
    }
}

/// A trivial XDP program's CPU per frame on the relay's veth end (see the module
/// documentation).
#[derive(Clone, Debug, Serialize)]
pub struct FloorRow {
    pub program: FloorProgram,
    pub generator: Generator,
    pub target_pps: f64,
    pub offered_pps: f64,
    pub napi_ns: f64,
    /// Frames per NAPI kthread run.
    pub packets_per_napi_run: f64,
    /// The share of the frames sent that reached the peer's veth end (redirect-only).
    pub delivered_ratio: Option<f64>,
}

/// The whole comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerCoreReport {
    pub rates: Vec<f64>,
    pub step_seconds: f64,
    pub rows: Vec<PerCoreRow>,
    pub floor: Vec<FloorRow>,
    /// The highest rate of live frames each server relayed with ≤ 0.1 % loss.
    pub kernel_speed: Vec<KernelSpeedRow>,
    /// ours-xdp's `turn_xdp` under live traffic by rate, against the pass-only program.
    pub live_cost: LiveCostByRate,
    /// How long the relay's core took to wake, before the servers ran.
    pub wake_latency: Option<WakeLatency>,
    /// Servers or parts that could not be measured.
    pub errors: Vec<String>,
}

/// One server's highest relayed rate of live frames on the pinned core.
#[derive(Clone, Debug, Serialize)]
pub struct KernelSpeedRow {
    pub server: String,
    pub result: ScenarioResult,
}

impl PerCoreReport {
    /// The row of `server` at `mode`, `generator` and `rate`.
    pub fn row(
        &self,
        server: &str,
        mode: RelayMode,
        generator: Generator,
        rate: f64,
    ) -> Option<&PerCoreRow> {
        self.rows.iter().find(|row| {
            row.server == server
                && row.mode == mode
                && row.generator == generator
                && row.target_pps == rate
        })
    }

    /// The floor row of `program` fed by `generator` at `rate`.
    pub fn floor(
        &self,
        program: FloorProgram,
        generator: Generator,
        rate: f64,
    ) -> Option<&FloorRow> {
        self.floor.iter().find(|floor| {
            floor.program == program && floor.generator == generator && floor.target_pps == rate
        })
    }

    /// The kernel-speed result of `server` in `mode`.
    pub fn kernel_speed(&self, server: &str, mode: RelayMode) -> Option<&ScenarioResult> {
        self.kernel_speed
            .iter()
            .find(|row| row.server == server && row.result.scenario.mode == mode)
            .map(|row| &row.result)
    }
}

/// What the per-core comparison measures besides the fixed-rate rows.
#[derive(Clone, Copy, Debug)]
pub struct PerCorePlan<'a> {
    pub rates: &'a [f64],
    /// Modes of the kernel-speed table (empty: no table).
    pub kernel_speed_modes: &'a [RelayMode],
}

/// ours-userspace's `server.coalesce_us` in its second run, [`coalesced_name`]: the
/// value the README's measurements of the option settled on.
pub const COALESCED_US: u32 = 400;

/// The rows' name of ours-userspace run with [`COALESCED_US`].
pub fn coalesced_name() -> String {
    format!("ours-userspace, coalesce_us {COALESCED_US}")
}

/// A server as the comparison runs it: its kind, its name in the rows, ours'
/// `server.coalesce_us`, and whether its kernel-speed search runs.
struct Variant {
    kind: ServerKind,
    name: String,
    coalesce_us: u32,
    kernel_speed: bool,
}

/// `packets` per run (0 runs: all of them in one).
fn per_run(packets: u64, runs: u64) -> f64 {
    packets as f64 / runs.max(1) as f64
}

fn scenario(mode: RelayMode) -> Scenario {
    Scenario {
        client: ClientTransport::Udp,
        mode,
        family: 4,
        flows: FLOWS,
        payload_len: PAYLOAD_LEN,
    }
}

impl Bench {
    /// The per-core comparison for `kinds` (see the module documentation). Failures of
    /// one server are recorded and the others still run.
    pub fn per_core(
        &mut self,
        kinds: &[ServerKind],
        plan: PerCorePlan<'_>,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
    ) -> PerCoreReport {
        let mut report = PerCoreReport {
            rates: plan.rates.to_vec(),
            step_seconds: self.plan.step.as_secs_f64(),
            live_cost: LiveCostByRate {
                rates: live_cost::RATES.to_vec(),
                ..LiveCostByRate::default()
            },
            ..PerCoreReport::default()
        };
        if let Err(error) = self.per_core_runs(kinds, plan, relay_binary, work_dir, &mut report) {
            eprintln!("turn-bench: per-core comparison: {error:#}");
            report.errors.push(format!("{error:#}"));
        }
        report
    }

    fn per_core_runs(
        &mut self,
        kinds: &[ServerKind],
        plan: PerCorePlan<'_>,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
        report: &mut PerCoreReport,
    ) -> Result<()> {
        ensure!(
            std::thread::available_parallelism().map_or(1, |n| n.get()) > RELAY_CPU,
            "the per-core comparison needs CPUs {LOAD_CPU} and {RELAY_CPU}"
        );
        let relay = self.lab.topology.relay.handle();
        // NAPI (hence threaded NAPI) exists on a veth end once GRO or XDP is on; GRO keeps
        // it across the XDP server's attach and detach, and lets that end take the live
        // frames with no XDP program of its own (the userspace servers).
        relay
            .run("ethtool", &["-K", RELAY_CLIENT_SIDE_INTERFACE, "gro", "on"])
            .context("turning GRO on at the relay's client-side veth")?;
        self.peer_end(StubAction::Pass)?;
        let mut injector = FrameInjector::load().context("the live-frames generator")?;
        let _pinned = LoadPinned::new()?;
        let cleared = RelayCoreCleared::new();
        eprintln!(
            "turn-bench: per-core: {} other threads moved off CPU {RELAY_CPU} for the comparison",
            cleared.moved.len()
        );
        if !plan.kernel_speed_modes.is_empty() {
            match probe_wake_latency(RELAY_CPU, LOAD_CPU, self.plan.step) {
                Ok(latency) => report.wake_latency = Some(latency),
                Err(error) => report.errors.push(format!("wake-up probe: {error:#}")),
            }
        }
        let mut variants: Vec<Variant> = kinds
            .iter()
            .map(|&kind| Variant {
                kind,
                name: kind.name().to_owned(),
                coalesce_us: self.plan.coalesce_us,
                kernel_speed: true,
            })
            .collect();
        // The userspace relay once more with its wake-ups coalesced (off by default), unless
        // the run already sets that for ours: what the option buys, in every run. Its
        // socket and live-frame rows only: the kernel-speed search is the default's.
        if kinds.contains(&ServerKind::OursUserspace) && self.plan.coalesce_us == 0 {
            variants.push(Variant {
                kind: ServerKind::OursUserspace,
                name: coalesced_name(),
                coalesce_us: COALESCED_US,
                kernel_speed: false,
            });
        }
        for variant in &variants {
            if crate::interrupted() {
                bail!("interrupted");
            }
            eprintln!("turn-bench: per-core: {} (one relay thread)", variant.name);
            let plan = PerCorePlan {
                kernel_speed_modes: if variant.kernel_speed {
                    plan.kernel_speed_modes
                } else {
                    &[]
                },
                ..plan
            };
            if let Err(error) =
                self.per_core_server(variant, plan, &mut injector, relay_binary, work_dir, report)
            {
                eprintln!("turn-bench: per-core: {}: {error:#}", variant.name);
                report.errors.push(format!("{}: {error:#}", variant.name));
            }
        }
        if kinds.contains(&ServerKind::OursXdp) {
            for program in FloorProgram::ALL {
                for generator in Generator::ALL {
                    let label = format!("{} floor, {}", program.label(), generator.label());
                    eprintln!("turn-bench: per-core: {label}");
                    match self.per_core_floor(plan.rates, program, generator, &mut injector) {
                        Ok(floor) => report.floor.extend(floor),
                        Err(error) => report.errors.push(format!("{label}: {error:#}")),
                    }
                }
            }
            eprintln!("turn-bench: per-core: live cost, pass-only program in turn_xdp's place");
            if let Err(error) = self.live_cost_pass(&mut injector, &mut report.live_cost) {
                report
                    .live_cost
                    .not_measured
                    .push(format!("pass-only program: {error:#}"));
            }
        }
        self.peer_end(StubAction::Pass)?;
        Ok(())
    }

    /// Puts `action`'s program on the peer's veth end (pass: the sink socket counts;
    /// drop: its rx_packets does) and pins the NAPI kthreads the new program starts to
    /// [`LOAD_CPU`].
    ///
    /// The sink is test rig, not relay: its kthreads run SCHED_FIFO ([`SINK_PRIORITY`]),
    /// so that on the shared [`LOAD_CPU`] neither the generator nor turn-bench delays
    /// them. Otherwise the peer end's 256-frame ring overflows behind a relay that kept
    /// up (measured: 3 % of ours-xdp's frames at 100 k pps, 16 % at 400 k, none of them
    /// lost by the relay), and the ≤ 0.1 % criterion measures the sink. The same for
    /// every server; what still overflows there is counted as loss ("sink full").
    fn peer_end(&mut self, action: StubAction) -> Result<()> {
        self.lab.set_peer_side(action)?;
        let napi = threaded_napi(&self.lab.topology.peer, OUTER_INTERFACE, LOAD_CPU)
            .context("the peer's veth end")?;
        for pid in napi {
            real_time(pid, SINK_PRIORITY)
                .with_context(|| format!("the peer's NAPI kthread {pid}"))?;
        }
        Ok(())
    }

    fn per_core_server(
        &mut self,
        variant: &Variant,
        plan: PerCorePlan<'_>,
        injector: &mut FrameInjector,
        relay_binary: &std::path::Path,
        work_dir: &std::path::Path,
        report: &mut PerCoreReport,
    ) -> Result<()> {
        // Stopped when dropped, at the end.
        let kind = variant.kind;
        let tuning = Tuning {
            threads: Threads::One,
            coalesce_us: variant.coalesce_us,
        };
        let running = self.start_server(kind, relay_binary, work_dir, tuning)?;
        // After the server attached its XDP program (if any), so the kthreads are current.
        let napi = threaded_napi(
            &self.lab.topology.relay,
            RELAY_CLIENT_SIDE_INTERFACE,
            RELAY_CPU,
        )
        .context("the relay's client-side veth end")?;
        let pid = running.pid();
        pin_process(pid, RELAY_CPU)?;
        let server = Measured {
            kind,
            name: variant.name.clone(),
            pid,
            napi,
        };
        for mode in [RelayMode::ChannelData, RelayMode::SendIndication] {
            let flows = self.open_flows(FLOWS, 4)?;
            let measured = self.per_core_mode(&server, &flows, mode, plan, injector, report);
            self.close_flows(flows);
            measured?;
        }
        // The XDP program's outcomes over all of this server's steps (our daemon only).
        match running.xdp_metrics() {
            Ok(lines) if !lines.is_empty() => {
                eprintln!(
                    "turn-bench: per-core: {} XDP: {}",
                    kind.name(),
                    lines.join(", ")
                )
            }
            Ok(_) => {}
            Err(error) => eprintln!(
                "turn-bench: per-core: {}: no metrics: {error:#}",
                kind.name()
            ),
        }
        Ok(())
    }

    /// `server`'s rows in `mode`: socket generator at each rate, then (the peer's end
    /// dropping) live frames at each rate and the kernel-speed search.
    fn per_core_mode(
        &mut self,
        server: &Measured,
        flows: &[Flow],
        mode: RelayMode,
        plan: PerCorePlan<'_>,
        injector: &mut FrameInjector,
        report: &mut PerCoreReport,
    ) -> Result<()> {
        let rates = plan.rates;
        let rows = self.per_core_rates(server, flows, mode, rates, Generator::Sockets, injector);
        report.rows.extend(rows?);
        self.peer_end(StubAction::Drop)?;
        let mut live = || -> Result<()> {
            let rows =
                self.per_core_rates(server, flows, mode, rates, Generator::LiveFrames, injector);
            report.rows.extend(rows?);
            if server.kind == ServerKind::OursXdp {
                self.live_cost_relay(server, flows, mode, injector, &mut report.live_cost);
            }
            if plan.kernel_speed_modes.contains(&mode) {
                let result = self.kernel_speed(server, flows, mode, injector)?;
                report.kernel_speed.push(KernelSpeedRow {
                    server: server.name.clone(),
                    result,
                });
            }
            Ok(())
        };
        let live = live();
        self.peer_end(StubAction::Pass)?;
        live
    }

    /// `server`'s rows in `mode` with `generator` at each of `rates`.
    fn per_core_rates(
        &mut self,
        server: &Measured,
        flows: &[Flow],
        mode: RelayMode,
        rates: &[f64],
        generator: Generator,
        injector: &mut FrameInjector,
    ) -> Result<Vec<PerCoreRow>> {
        rates
            .iter()
            .map(|&rate| self.per_core_step(server, flows, mode, rate, generator, injector))
            .collect()
    }

    /// The highest rate of live frames `server` relays in `mode` with ≤ 0.1 % loss.
    fn kernel_speed(
        &mut self,
        server: &Measured,
        flows: &[Flow],
        mode: RelayMode,
        injector: &mut FrameInjector,
    ) -> Result<ScenarioResult> {
        let name = server.name.as_str();
        eprintln!(
            "turn-bench: per-core: {name} {}: kernel speed",
            mode.label()
        );
        let search_steps = self.plan.search_steps.max(KERNEL_SPEED_SEARCH_STEPS);
        let result = self.sweep_with(&scenario(mode), search_steps, &mut |bench, rate| {
            let (step, _, _) = bench.live_step(server, flows, mode, rate, injector)?;
            eprintln!(
                "turn-bench: per-core: {name} live frames offered {:.0} pps: relayed {:.0} pps, loss {:.3} % (relay's ring full {}, sink full {})",
                step.offered_pps,
                step.relayed_pps,
                step.loss_ratio * 100.0,
                step.relay_ring_full,
                step.sink_drops,
            );
            Ok(step)
        })?;
        let result = ScenarioResult {
            max_rate: highest_lossless_rate(&result),
            ..result
        };
        eprintln!(
            "turn-bench: per-core: {name} {}: max {:.0} pps at ≤0.1% loss{}",
            mode.label(),
            result.max_rate.pps,
            if result.max_rate.generator_bound {
                " (generator-bound)"
            } else {
                ""
            }
        );
        Ok(result)
    }

    /// One live-frames step on `server` with its run times, tried again while the
    /// machine disturbed it ([`Bench::least_disturbed`]).
    fn live_step(
        &mut self,
        server: &Measured,
        flows: &[Flow],
        mode: RelayMode,
        rate: Option<f64>,
        injector: &mut FrameInjector,
    ) -> Result<(StepResult, cpu::RunTime, cpu::RunTime)> {
        let (pid, napi) = (server.pid, &server.napi);
        let (step, (process, napi_time)) =
            self.least_disturbed(&server.name, &|| server.threads(), &mut |bench| {
                let (process_before, napi_before) =
                    (cpu::process_run_time(pid)?, threads_run_time(napi));
                let step = bench.measure_live(injector, flows, mode, PAYLOAD_LEN, rate)?;
                let process = cpu::process_run_time(pid)?.since(&process_before);
                Ok((step, (process, threads_run_time(napi).since(&napi_before))))
            })?;
        Ok((step, process, napi_time))
    }

    /// A live-frames step (`try_step`: the step and what else it measured), tried again
    /// (up to [`LIVE_TRIES`] in all) while the machine disturbed it: this 2-vCPU VM's
    /// hypervisor or other tasks took the relay's or the load's core for milliseconds,
    /// which overflows the 256-frame veth rings at any rate above a few tens of thousands
    /// of frames per second whatever the server (the relay's NAPI kthread cannot run).
    /// `own`: the threads measured (the relay's), which are not "other tasks". The first
    /// undisturbed try counts, else the least disturbed one, marked. The same for every
    /// server; a loss the relay causes on a core it has to itself is never retried away.
    pub(crate) fn least_disturbed<T>(
        &mut self,
        label: &str,
        own: &dyn Fn() -> Result<Vec<u32>>,
        try_step: &mut dyn FnMut(&mut Bench) -> Result<(StepResult, T)>,
    ) -> Result<(StepResult, T)> {
        let mut best: Option<(StepResult, T)> = None;
        for attempt in 1..=LIVE_TRIES {
            let own = own()?;
            let clocks_before = CpuClocks::take(&own)?;
            let (mut step, measured) = try_step(self)?;
            let disturbance = CpuClocks::take(&own)?.disturbance_since(&clocks_before);
            step.disturbance = Some(disturbance);
            let disturbed = disturbance.disturbed();
            if disturbed {
                eprintln!(
                    "turn-bench: per-core: {label} try {attempt} disturbed ({}), loss {:.3} %",
                    disturbance.describe(),
                    step.loss_ratio * 100.0
                );
            }
            let better = best.as_ref().is_none_or(|(kept, _)| {
                kept.disturbance.map_or(0, |d| d.weight()) > disturbance.weight()
            });
            if better {
                best = Some((step, measured));
            }
            if !disturbed || crate::interrupted() {
                break;
            }
        }
        best.context("no live-frames step")
    }

    fn per_core_step(
        &mut self,
        server: &Measured,
        flows: &[Flow],
        mode: RelayMode,
        rate: f64,
        generator: Generator,
        injector: &mut FrameInjector,
    ) -> Result<PerCoreRow> {
        let (step, process, napi_time) = match generator {
            Generator::Sockets => {
                let (pid, napi) = (server.pid, &server.napi);
                let (process_before, napi_before) =
                    (cpu::process_run_time(pid)?, threads_run_time(napi));
                let step = self.measure(None, flows, &scenario(mode), Some(rate), false)?;
                let process = cpu::process_run_time(pid)?.since(&process_before);
                (step, process, threads_run_time(napi).since(&napi_before))
            }
            Generator::LiveFrames => self.live_step(server, flows, mode, Some(rate), injector)?,
        };
        let name = server.name.as_str();
        ensure!(
            step.received >= 1000,
            "{name} relayed only {} of {} {} packets at {rate} pps ({})",
            step.received,
            step.sent,
            mode.label(),
            generator.label()
        );
        let per_packet = |ns: u64| ns as f64 / step.received as f64;
        let row = PerCoreRow {
            server: name.to_owned(),
            mode,
            generator,
            target_pps: rate,
            offered_pps: step.offered_pps,
            relayed_pps: step.relayed_pps,
            loss_ratio: step.loss_ratio,
            process_ns: per_packet(process.ns),
            napi_ns: per_packet(napi_time.ns),
            packets_per_process_run: per_run(step.received, process.runs),
            packets_per_napi_run: per_run(step.received, napi_time.runs),
        };
        eprintln!(
            "turn-bench: per-core: {name} {} {} at {rate:.0} pps: relayed {:.0} pps, {:.2} µs per packet (process {:.2} + NAPI {:.2}), packets per run: process {:.1}, NAPI {:.1}",
            mode.label(),
            generator.label(),
            row.relayed_pps,
            row.total_ns() / 1000.0,
            row.process_ns / 1000.0,
            row.napi_ns / 1000.0,
            row.packets_per_process_run,
            row.packets_per_napi_run
        );
        Ok(row)
    }

    /// `action`'s trivial program on the relay's client-side veth end, where a server's
    /// XDP program would be (none may run), its NAPI kthreads (returned) pinned to
    /// [`RELAY_CPU`] as a server's are, and the peer's end dropping. Detached when the
    /// returned [`StubXdp`] is dropped: the next server attaches its own again.
    pub(crate) fn stub_in_relays_place(
        &mut self,
        action: StubAction,
    ) -> Result<(StubXdp, Vec<u32>)> {
        self.peer_end(StubAction::Drop)?;
        let relay = self.lab.topology.relay.handle();
        let stub = StubXdp::attach(&relay, RELAY_CLIENT_SIDE_INTERFACE, action)?;
        let napi = threaded_napi(&relay, RELAY_CLIENT_SIDE_INTERFACE, RELAY_CPU)?;
        Ok((stub, napi))
    }

    /// [`FLOWS`] client sockets sending straight to the relay's listener, no allocation:
    /// the sources of frames for a program that stands in for the relay's.
    pub(crate) fn direct_flows(&self) -> Result<Vec<Flow>> {
        (0..FLOWS)
            .map(|_| control::direct_flow(&self.lab.topology.client, listener(4)))
            .collect()
    }

    /// `program` on the relay's client-side veth end, no server: its NAPI kthreads' CPU
    /// per ChannelData frame sent by `generator` at each rate. The redirect-only program
    /// sends the frames to the peer's end, which drops them (as in the live-frames rows)
    /// and counts them: frames the redirect lost would otherwise look cheap.
    fn per_core_floor(
        &mut self,
        rates: &[f64],
        program: FloorProgram,
        generator: Generator,
        injector: &mut FrameInjector,
    ) -> Result<Vec<FloorRow>> {
        let action = match program {
            FloorProgram::Drop => StubAction::Drop,
            FloorProgram::Redirect => StubAction::RedirectTo(RELAY_PEER_SIDE_INTERFACE),
        };
        let (_stub, napi) = self.stub_in_relays_place(action)?;
        let flows = self.direct_flows()?;
        let mut floor = Vec::new();
        for &rate in rates {
            self.next_step += 1;
            let topology = &self.lab.topology;
            let arrived_before = topology.peer.rx_packets(OUTER_INTERFACE)?;
            let path_before = PathCounters::take(topology)?;
            let before = threads_run_time(&napi);
            let outcome = match generator {
                Generator::Sockets => load::generate(
                    &flows,
                    RelayMode::ChannelData,
                    PAYLOAD_LEN,
                    Some(rate),
                    self.plan.step,
                    self.next_step,
                    1,
                ),
                Generator::LiveFrames => {
                    let frames = crate::kernel_mode::build_frames(
                        topology,
                        &flows,
                        RelayMode::ChannelData,
                        PAYLOAD_LEN,
                        self.next_step,
                    )?;
                    crate::kernel_mode::generate(
                        injector,
                        &topology.client,
                        &frames,
                        Some(rate),
                        self.plan.step,
                    )?
                }
            };
            std::thread::sleep(crate::bench::DRAIN);
            let spent = threads_run_time(&napi).since(&before);
            let topology = &self.lab.topology;
            let arrived = topology
                .peer
                .rx_packets(OUTER_INTERFACE)?
                .saturating_sub(arrived_before);
            let path = PathCounters::take(topology)?.since(&path_before);
            ensure!(
                outcome.sent >= 1000,
                "the generator sent only {} frames",
                outcome.sent
            );
            let row = FloorRow {
                program,
                generator,
                target_pps: rate,
                offered_pps: outcome.sent as f64 / outcome.seconds.max(1e-9),
                napi_ns: spent.ns as f64 / outcome.sent as f64,
                packets_per_napi_run: per_run(outcome.sent, spent.runs),
                delivered_ratio: (program == FloorProgram::Redirect)
                    .then(|| arrived as f64 / outcome.sent as f64),
            };
            eprintln!(
                "turn-bench: per-core: {} XDP, {}, at {rate:.0} pps: {:.2} µs per frame, {:.1} frames per NAPI run; sent {}, {arrived} reached the peer's end {}",
                program.label(),
                generator.label(),
                row.napi_ns / 1000.0,
                row.packets_per_napi_run,
                outcome.sent,
                path.describe()
            );
            floor.push(row);
        }
        Ok(floor)
    }
}

/// The highest rate a search's steps offered and relayed with ≤ 0.1 % loss: the
/// offered rate a step achieved, not the rate it aimed at, since the live-frames
/// generator falls short of its aim when it does not have its CPU to itself (a step
/// that fell short still measured what it offered). Generator-bound when the saturated
/// step itself lost no more than that.
fn highest_lossless_rate(search: &ScenarioResult) -> MaxRate {
    MaxRate {
        pps: search
            .steps
            .iter()
            .filter(|step| step.loss_ratio <= LOSS_THRESHOLD)
            .map(|step| step.offered_pps)
            .fold(0.0, f64::max),
        generator_bound: search.saturated.loss_ratio <= LOSS_THRESHOLD,
    }
}

/// The server being measured: its process and the NAPI kthreads of its client-side veth
/// end.
pub(crate) struct Measured {
    pub(crate) kind: ServerKind,
    /// Its name in the rows: the kind's, or [`coalesced_name`] for ours-userspace with
    /// [`COALESCED_US`].
    pub(crate) name: String,
    pid: u32,
    napi: Vec<u32>,
}

impl Measured {
    /// The server's threads and its NAPI kthreads.
    pub(crate) fn threads(&self) -> Result<Vec<u32>> {
        let mut own = cpu::threads(self.pid)?;
        own.extend(&self.napi);
        Ok(own)
    }
}
