//! Whether the machine disturbed a step of the per-core comparison ([`crate::per_core`]):
//! CPU time the hypervisor (steal) or other tasks took from its pinned cores.

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use crate::cpu;
use crate::per_core::{LOAD_CPU, RELAY_CPU};
use crate::pinning::{all_threads, may_run_on};

/// A step is disturbed when the hypervisor took at least this much from the relay's or
/// the load's core (steal time; /proc/stat counts it in 10 ms ticks)…
pub const STEAL_LIMIT_MS: u64 = 20;
/// …or other tasks that may run on the relay's core (every task not pinned elsewhere,
/// less the server and its NAPI kthreads) ran this much in all (an upper bound of what
/// they took from it).
pub const FOREIGN_LIMIT_MS: i64 = 20;

/// CPU time the machine took from the pinned cores during a step: the hypervisor's
/// (steal) on the load's and the relay's core, and other tasks' on the relay's core.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Disturbance {
    pub steal_ms_load_cpu: u64,
    pub steal_ms_relay_cpu: u64,
    /// Run time of the other tasks that may run on the relay's core (an upper bound of
    /// what they took from it).
    pub foreign_ms_relay_cpu: i64,
}

impl Disturbance {
    pub fn disturbed(&self) -> bool {
        self.steal_ms_load_cpu >= STEAL_LIMIT_MS
            || self.steal_ms_relay_cpu >= STEAL_LIMIT_MS
            || self.foreign_ms_relay_cpu >= FOREIGN_LIMIT_MS
    }

    /// How disturbed, to keep the least disturbed try (ms).
    pub(crate) fn weight(&self) -> u64 {
        self.steal_ms_load_cpu + self.steal_ms_relay_cpu + self.foreign_ms_relay_cpu.max(0) as u64
    }

    pub fn describe(&self) -> String {
        format!(
            "steal {} ms on CPU {LOAD_CPU}, {} ms on CPU {RELAY_CPU}; other tasks {} ms on CPU {RELAY_CPU}",
            self.steal_ms_load_cpu, self.steal_ms_relay_cpu, self.foreign_ms_relay_cpu
        )
    }
}

/// Steal time (ms, /proc/stat) of the pinned cores, and the run time of the tasks that
/// may run on the relay's core other than the relay's own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuClocks {
    steal_load: u64,
    steal_relay: u64,
    /// ns.
    foreign: u64,
}

impl CpuClocks {
    /// `own`: the server's threads and its NAPI kthreads.
    pub(crate) fn take(own: &[u32]) -> Result<CpuClocks> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Ok(CpuClocks {
            steal_load: steal_ms(&stat, LOAD_CPU)?,
            steal_relay: steal_ms(&stat, RELAY_CPU)?,
            foreign: foreign_run_time(own),
        })
    }

    pub(crate) fn disturbance_since(&self, before: &CpuClocks) -> Disturbance {
        Disturbance {
            steal_ms_load_cpu: self.steal_load.saturating_sub(before.steal_load),
            steal_ms_relay_cpu: self.steal_relay.saturating_sub(before.steal_relay),
            foreign_ms_relay_cpu: (self.foreign.saturating_sub(before.foreign) / 1_000_000) as i64,
        }
    }
}

/// The run time (ns) of every task allowed on [`RELAY_CPU`] except `own`; a task that
/// starts or ends between two readings is missed or counted whole (kthreads and
/// short-lived processes: the bound is rough, not exact).
fn foreign_run_time(own: &[u32]) -> u64 {
    all_threads()
        .into_iter()
        .filter(|tid| !own.contains(tid) && may_run_on(*tid, RELAY_CPU))
        .map(|tid| cpu::task_run_time(tid).map_or(0, |run| run.ns))
        .sum()
}

/// Steal time of `cpu` in ms from /proc/stat's `cpuN user nice system idle iowait irq
/// softirq steal …` line (USER_HZ ticks).
fn steal_ms(stat: &str, cpu: usize) -> Result<u64> {
    let label = format!("cpu{cpu}");
    let values: Vec<u64> = stat
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(label.as_str()))
                .then(|| fields.map(|f| f.parse().unwrap_or(0)).collect())
        })
        .with_context(|| format!("no {label} in /proc/stat"))?;
    ensure!(values.len() >= 8, "short {label} line in /proc/stat");
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        ticks if ticks > 0 => ticks as u64,
        _ => 100,
    };
    Ok(values[7] * 1000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_per_cpu() {
        let stat =
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 1 2 3 100 5 6 7 8 0 0\ncpu1 10 0 20 100 0 0 30 4 0 0\n";
        // SAFETY: sysconf has no memory-safety preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(steal_ms(stat, 0).unwrap(), 8 * 1000 / hz);
        assert_eq!(steal_ms(stat, 1).unwrap(), 4 * 1000 / hz);
        assert!(steal_ms(stat, 2).is_err());
    }

    #[test]
    fn a_step_is_disturbed_by_steal_or_other_tasks() {
        let quiet = Disturbance::default();
        assert!(!quiet.disturbed());
        let stolen = Disturbance {
            steal_ms_relay_cpu: STEAL_LIMIT_MS,
            ..quiet
        };
        assert!(stolen.disturbed());
        let busy = Disturbance {
            foreign_ms_relay_cpu: FOREIGN_LIMIT_MS,
            ..quiet
        };
        assert!(busy.disturbed());
    }
}
