//! CPU accounting for a measurement window.
//!
//! Cost = the relay process's utime+stime (`/proc/<pid>/stat`, all threads) plus the
//! softirq time of all CPUs (/proc/stat, per-CPU `softirq` column), because XDP programs
//! and the kernel's UDP receive path run in softirq. Caveats, stated in the report too:
//! softirq is machine-wide (it includes the generator's and sink's packet processing, the
//! same for every server); without CONFIG_IRQ_TIME_ACCOUNTING softirq time is sampled per
//! tick and the tick is also charged to the interrupted task, so the two terms can overlap.

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Clone, Copy)]
pub struct CpuSnapshot {
    process_ticks: u64,
    softirq_ticks: u64,
    busy_ticks: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct CpuCost {
    pub process_seconds: f64,
    pub softirq_seconds: f64,
    /// All CPUs' non-idle time in the window (context for the two terms above).
    pub machine_busy_seconds: f64,
    /// (process + softirq) seconds per million relayed packets; None when fewer than
    /// 1000 packets were relayed (the ratio would be meaningless).
    pub seconds_per_million_packets: Option<f64>,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

impl CpuSnapshot {
    pub fn take(pid: u32) -> Result<CpuSnapshot> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("malformed /proc/<pid>/stat")?;
        let fields: Vec<u64> = after_name
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let process_ticks =
            fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
        let system = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let (mut softirq_ticks, mut busy_ticks) = (0, 0);
        for line in system
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        {
            // user nice system idle iowait irq softirq steal ...
            let values: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            softirq_ticks += values.get(6).copied().unwrap_or(0);
            let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
            busy_ticks += values.iter().take(8).sum::<u64>() - idle;
        }
        Ok(CpuSnapshot {
            process_ticks,
            softirq_ticks,
            busy_ticks,
        })
    }

    pub fn cost_since(&self, before: &CpuSnapshot, relayed_packets: u64) -> CpuCost {
        let hz = ticks_per_second();
        let process_seconds = self.process_ticks.saturating_sub(before.process_ticks) as f64 / hz;
        let softirq_seconds = self.softirq_ticks.saturating_sub(before.softirq_ticks) as f64 / hz;
        let machine_busy_seconds = self.busy_ticks.saturating_sub(before.busy_ticks) as f64 / hz;
        let seconds_per_million_packets = (relayed_packets >= 1000)
            .then(|| (process_seconds + softirq_seconds) / (relayed_packets as f64 / 1e6));
        CpuCost {
            process_seconds,
            softirq_seconds,
            machine_busy_seconds,
            seconds_per_million_packets,
        }
    }
}

/// How long and how often threads ran on a CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunTime {
    /// Run time, ns.
    pub ns: u64,
    /// Times the threads were put on a CPU (wake-ups and preemptions).
    pub runs: u64,
}

impl RunTime {
    pub fn since(&self, before: &RunTime) -> RunTime {
        RunTime {
            ns: self.ns.saturating_sub(before.ns),
            runs: self.runs.saturating_sub(before.runs),
        }
    }
}

impl std::iter::Sum for RunTime {
    fn sum<I: Iterator<Item = RunTime>>(iter: I) -> RunTime {
        iter.fold(RunTime::default(), |total, one| RunTime {
            ns: total.ns + one.ns,
            runs: total.runs + one.runs,
        })
    }
}

/// A thread's (task's) run time so far, from `/proc/<tid>/schedstat`: the scheduler's
/// sum_exec_runtime (what `/proc/<pid>/stat` reports as utime+stime, in ticks) and pcount.
/// Softirq work the thread did with bottom halves disabled (a threaded NAPI poll) counts;
/// on this kernel (no CONFIG_IRQ_TIME_ACCOUNTING) so do interrupts that hit it.
pub fn task_run_time(tid: u32) -> Result<RunTime> {
    let path = format!("/proc/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    match fields[..] {
        [ns, _waiting, runs] => Ok(RunTime { ns, runs }),
        _ => anyhow::bail!("malformed {path}: {text:?}"),
    }
}

/// The thread ids of process `pid` (`/proc/<pid>/task`).
pub fn threads(pid: u32) -> Result<Vec<u32>> {
    let path = format!("/proc/{pid}/task");
    let mut tids = Vec::new();
    for entry in std::fs::read_dir(&path).with_context(|| format!("listing {path}"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// The run time of all current threads of process `pid` ([`task_run_time`] summed). A
/// thread that exits between two readings takes its time with it; the servers' thread
/// sets do not change while load runs.
pub fn process_run_time(pid: u32) -> Result<RunTime> {
    threads(pid)?.into_iter().map(task_run_time).sum()
}
