//! The XDP program's cost under live traffic. With `kernel.bpf_stats_enabled=1` the
//! kernel times every run of every BPF program (`run_time_ns`, `run_cnt` of `bpftool prog
//! show`), its own overhead included, so a program's cost is its time less a pass-only
//! program's timed the same way. Measured twice:
//! - in the full matrix's latency step ([`cost`]): the relay's `turn_xdp` (on its
//!   client-side interface, where ChannelData arrives) next to the pass-only program on
//!   the peer's veth end, which runs once for every frame relayed in the same step;
//! - by rate, in the per-core comparison ([`LiveCostByRate`]): `turn_xdp` on the pinned
//!   relay core fed live frames at each of [`RATES`], then the pass-only program in its
//!   place on the same veth end, same pinning, at the same rates.

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use turn_testkit::addresses::RELAY_CLIENT_SIDE_INTERFACE;
use turn_testkit::netns::Netns;
use turn_testkit::xdp::{FrameInjector, StubAction};

use crate::bench::Bench;
use crate::control::Flow;
use crate::load::{RelayMode, StepResult};
use crate::per_core::{Measured, LIVE_TRIES, PAYLOAD_LEN};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Mean ns per run of the relay program and of the pass-only program over one step.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LiveCost {
    pub relay_ns_per_run: f64,
    pub pass_ns_per_run: f64,
    pub relay_runs: u64,
}

impl LiveCost {
    /// The relay program's own cost: its time less the pass-only program's.
    pub fn program_ns(&self) -> f64 {
        self.relay_ns_per_run - self.pass_ns_per_run
    }
}

/// Run statistics switched on; the previous setting comes back when dropped.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn new() -> Result<StatsEnabled> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?;
        std::fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing {STATS_SYSCTL}"))?;
        Ok(StatsEnabled { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(error) = std::fs::write(STATS_SYSCTL, self.previous.trim()) {
            eprintln!("turn-bench: restoring {STATS_SYSCTL}: {error}");
        }
    }
}

/// One program's statistics at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    run_time_ns: u64,
    run_count: u64,
}

/// The id of the XDP program attached to `interface` in `namespace`.
pub fn attached_program(namespace: &Netns, interface: &str) -> Result<u32> {
    let shown = namespace.ip(&["link", "show", "dev", interface])?;
    let id = shown
        .split_whitespace()
        .skip_while(|word| !word.starts_with("prog/xdp"))
        .nth(2)
        .ok_or_else(|| anyhow!("no XDP program on {interface}: {shown}"))?;
    id.parse()
        .with_context(|| format!("program id {id:?} on {interface}"))
}

/// `run_time_ns` and `run_cnt` of program `id` (`bpftool prog show id ID --json`).
pub fn snapshot(id: u32) -> Result<Snapshot> {
    let output = std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "--json"])
        .output()
        .context("running bpftool")?;
    if !output.status.success() {
        bail!(
            "bpftool prog show id {id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let shown: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing bpftool's JSON")?;
    let field = |name: &str| {
        shown
            .get(name)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    Ok(Snapshot {
        run_time_ns: field("run_time_ns"),
        run_count: field("run_cnt"),
    })
}

impl Snapshot {
    /// The runs since `before`: an error if there were none.
    pub fn runs_since(&self, before: &Snapshot) -> Result<Runs> {
        let count = self.run_count.saturating_sub(before.run_count);
        if count == 0 {
            bail!("the program did not run during the step");
        }
        let time = self.run_time_ns.saturating_sub(before.run_time_ns);
        Ok(Runs {
            ns_per_run: time as f64 / count as f64,
            count,
        })
    }
}

/// A program's runs over a step.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Runs {
    /// Mean `run_time_ns` per run.
    pub ns_per_run: f64,
    pub count: u64,
}

/// The cost between two snapshots of each program.
pub fn cost(relay: (Snapshot, Snapshot), pass: (Snapshot, Snapshot)) -> Result<LiveCost> {
    let relay = relay.1.runs_since(&relay.0)?;
    let pass = pass.1.runs_since(&pass.0)?;
    Ok(LiveCost {
        relay_ns_per_run: relay.ns_per_run,
        pass_ns_per_run: pass.ns_per_run,
        relay_runs: relay.count,
    })
}

/// The offered rates (pps) of the live cost by rate: from one where the relay's core
/// sleeps between frames to one where its NAPI kthread polls full batches.
pub const RATES: [f64; 3] = [40_000.0, 400_000.0, 1_000_000.0];

/// The program timed in a [`TimedStep`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TimedProgram {
    /// The relay's `turn_xdp`, attached by ours-xdp's daemon.
    Relay,
    /// `xdp_pass` in its place ([`StubAction::Pass`]), no server: the frames go up the
    /// relay namespace's stack, to no socket.
    PassOnly,
}

impl TimedProgram {
    pub fn label(self) -> &'static str {
        match self {
            TimedProgram::Relay => "turn_xdp",
            TimedProgram::PassOnly => "pass-only program",
        }
    }
}

/// One live-frames step at a fixed rate with the run times of the program on the
/// relay's client-side veth end.
#[derive(Clone, Debug, Serialize)]
pub struct TimedStep {
    pub program: TimedProgram,
    pub mode: RelayMode,
    pub target_pps: f64,
    pub offered_pps: f64,
    /// Frames injected.
    pub sent: u64,
    /// Frames that reached the peer's veth end (none with the pass-only program).
    pub relayed_pps: f64,
    pub loss_ratio: f64,
    /// The machine took one of the pinned cores during every try
    /// ([`crate::disturbance::Disturbance`]).
    pub disturbed: bool,
    pub runs: Runs,
}

impl TimedStep {
    /// The share of the frames injected that the program ran on: less than all when
    /// the relay's veth ring overflowed (the rest never reached it).
    pub fn share_run(&self) -> f64 {
        self.runs.count as f64 / self.sent.max(1) as f64
    }
}

/// `turn_xdp`'s cost per packet under live traffic at each of [`RATES`], against the
/// pass-only program's at the same rate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveCostByRate {
    pub rates: Vec<f64>,
    pub steps: Vec<TimedStep>,
    /// Rates the generator did not reach, and steps that failed.
    pub not_measured: Vec<String>,
}

impl LiveCostByRate {
    /// The step of `program` in `mode` at `rate`.
    pub fn step(&self, program: TimedProgram, mode: RelayMode, rate: f64) -> Option<&TimedStep> {
        self.steps
            .iter()
            .find(|step| step.program == program && step.mode == mode && step.target_pps == rate)
    }

    /// `turn_xdp`'s own ns per packet in `mode` at `rate`: its ns per run less the
    /// pass-only program's (None without both).
    pub fn program_ns(&self, mode: RelayMode, rate: f64) -> Option<f64> {
        let relay = self.step(TimedProgram::Relay, mode, rate)?;
        let pass = self.step(TimedProgram::PassOnly, mode, rate)?;
        Some(relay.runs.ns_per_run - pass.runs.ns_per_run)
    }

    /// Keeps `step` unless the generator fell short of its rate (then says so), or
    /// records why it was not measured.
    fn record(
        &mut self,
        program: TimedProgram,
        mode: RelayMode,
        rate: f64,
        measured: Result<(StepResult, Runs)>,
    ) {
        let what = format!("{}, {}, at {rate:.0} pps", program.label(), mode.label());
        match measured {
            Ok((step, _)) if step.generator_bound => {
                let note = format!(
                    "{what}: skipped, the generator offered only {:.0} pps",
                    step.offered_pps
                );
                eprintln!("turn-bench: per-core: live cost: {note}");
                self.not_measured.push(note);
            }
            Ok((step, runs)) => {
                eprintln!(
                    "turn-bench: per-core: live cost: {what}: offered {:.0} pps, relayed {:.0} pps, {:.1} ns per run over {} runs",
                    step.offered_pps, step.relayed_pps, runs.ns_per_run, runs.count
                );
                self.steps.push(TimedStep {
                    program,
                    mode,
                    target_pps: rate,
                    offered_pps: step.offered_pps,
                    sent: step.sent,
                    relayed_pps: step.relayed_pps,
                    loss_ratio: step.loss_ratio,
                    disturbed: step.disturbance.is_some_and(|d| d.disturbed()),
                    runs,
                });
            }
            Err(error) => {
                eprintln!("turn-bench: per-core: live cost: {what}: {error:#}");
                self.not_measured.push(format!("{what}: {error:#}"));
            }
        }
    }
}

impl Bench {
    /// `server`'s (ours-xdp's) `turn_xdp` timed in `mode` at each of [`RATES`]; the
    /// peer's end must be dropping, as in the other live-frames steps.
    pub(crate) fn live_cost_relay(
        &mut self,
        server: &Measured,
        flows: &[Flow],
        mode: RelayMode,
        injector: &mut FrameInjector,
        live_cost: &mut LiveCostByRate,
    ) {
        for rate in RATES {
            let measured = self.timed_live_step(
                server.kind.name(),
                &|| server.threads(),
                flows,
                mode,
                rate,
                injector,
            );
            live_cost.record(TimedProgram::Relay, mode, rate, measured);
        }
    }

    /// The pass-only program in `turn_xdp`'s place (no server may run), timed at each
    /// load and rate `turn_xdp` was timed at.
    pub(crate) fn live_cost_pass(
        &mut self,
        injector: &mut FrameInjector,
        live_cost: &mut LiveCostByRate,
    ) -> Result<()> {
        let measured: Vec<(RelayMode, f64)> = live_cost
            .steps
            .iter()
            .filter(|step| step.program == TimedProgram::Relay)
            .map(|step| (step.mode, step.target_pps))
            .collect();
        if measured.is_empty() {
            return Ok(());
        }
        let (_pass, napi) = self.stub_in_relays_place(StubAction::Pass)?;
        let flows = self.direct_flows()?;
        for (mode, rate) in measured {
            let measured = self.timed_live_step(
                TimedProgram::PassOnly.label(),
                &|| Ok(napi.clone()),
                &flows,
                mode,
                rate,
                injector,
            );
            live_cost.record(TimedProgram::PassOnly, mode, rate, measured);
        }
        Ok(())
    }

    /// One live-frames step of `flows` in `mode` at `rate` ([`Bench::least_disturbed`];
    /// `own`: the threads measured) with the runs of the program on the relay's
    /// client-side veth end over it, bpf_stats on for the step only. Tried again (up to
    /// [`LIVE_TRIES`] in all) while the generator fell short of `rate`, as it does now and
    /// then when its core is busy: a rate it never reaches is one it cannot.
    fn timed_live_step(
        &mut self,
        label: &str,
        own: &dyn Fn() -> Result<Vec<u32>>,
        flows: &[Flow],
        mode: RelayMode,
        rate: f64,
        injector: &mut FrameInjector,
    ) -> Result<(StepResult, Runs)> {
        let program = attached_program(&self.lab.topology.relay, RELAY_CLIENT_SIDE_INTERFACE)?;
        let _stats = StatsEnabled::new()?;
        let mut attempt = 1;
        loop {
            let measured = self.least_disturbed(label, own, &mut |bench| {
                let before = snapshot(program)?;
                let step = bench.measure_live(injector, flows, mode, PAYLOAD_LEN, Some(rate))?;
                let runs = snapshot(program)?.runs_since(&before)?;
                Ok((step, runs))
            })?;
            if !measured.0.generator_bound || attempt == LIVE_TRIES || crate::interrupted() {
                return Ok(measured);
            }
            eprintln!(
                "turn-bench: per-core: live cost: {label} try {attempt}: the generator offered {:.0} of {rate:.0} pps, trying again",
                measured.0.offered_pps
            );
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run_time_ns: u64, run_count: u64) -> Snapshot {
        Snapshot {
            run_time_ns,
            run_count,
        }
    }

    #[test]
    fn runs_are_the_mean_time_between_two_snapshots() {
        let runs = at(1_500_000, 12_000)
            .runs_since(&at(500_000, 2_000))
            .unwrap();
        assert_eq!(runs.count, 10_000);
        assert_eq!(runs.ns_per_run, 100.0);
        assert!(at(500_000, 2_000).runs_since(&at(500_000, 2_000)).is_err());
    }

    #[test]
    fn the_cost_is_the_relay_programs_time_less_the_pass_only_programs() {
        let cost = cost(
            (at(0, 0), at(300_000, 1_000)),
            (at(0, 0), at(40_000, 1_000)),
        )
        .unwrap();
        assert_eq!(cost.relay_runs, 1_000);
        assert_eq!(cost.program_ns(), 260.0);
    }
}
