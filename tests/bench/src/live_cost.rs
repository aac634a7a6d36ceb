//! The XDP program's cost under live traffic. With `kernel.bpf_stats_enabled=1` the
//! kernel times every run of every BPF program (`run_time_ns`, `run_cnt` of `bpftool prog
//! show`). The relay's `turn_xdp` (on its client-side interface, where ChannelData
//! arrives) is measured over one fixed-rate load step next to the pass-only program on the
//! peer's veth end, which runs once for every frame relayed in the same step: its time is
//! mostly the statistics' own overhead, so the program's cost is the difference.

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;
use turn_testkit::netns::Netns;

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

/// The cost between two snapshots of each program.
pub fn cost(relay: (Snapshot, Snapshot), pass: (Snapshot, Snapshot)) -> Result<LiveCost> {
    let per_run = |(before, after): (Snapshot, Snapshot)| -> Result<(f64, u64)> {
        let runs = after.run_count.saturating_sub(before.run_count);
        if runs == 0 {
            bail!("the program did not run during the step");
        }
        let time = after.run_time_ns.saturating_sub(before.run_time_ns);
        Ok((time as f64 / runs as f64, runs))
    };
    let (relay_ns_per_run, relay_runs) = per_run(relay)?;
    let (pass_ns_per_run, _) = per_run(pass)?;
    Ok(LiveCost {
        relay_ns_per_run,
        pass_ns_per_run,
        relay_runs,
    })
}
