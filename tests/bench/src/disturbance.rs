//! Whether the machine disturbed a step of the per-core comparison ([`crate::per_core`]):
//! CPU time the hypervisor (steal) or other tasks took from its pinned cores; and how long
//! the relay's core takes to wake ([`WakeLatency`]).

use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use serde::Serialize;

use crate::cpu;
use crate::load::Percentiles;
use crate::per_core::{LOAD_CPU, RELAY_CPU};
use crate::pinning::{all_threads, cpu_set, may_run_on, set_affinity};

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

/// The frames a veth end's receive ring holds (the kernel's `VETH_RING_SIZE`).
pub const VETH_RING_FRAMES: u64 = 256;
/// How often [`probe_wake_latency`] wakes the relay's core: seldom enough that it sleeps
/// (halts) in between, as a NAPI kthread that emptied its ring does.
pub const WAKE_INTERVAL_US: u64 = 100;
/// How long [`VETH_RING_FRAMES`] take to arrive at 1 M pps: the wake-ups longer than
/// that are counted in [`WakeLatency::ring_fills_at_1m_pps`].
pub const RING_FILL_AT_1M_PPS_US: u64 = VETH_RING_FRAMES * 1_000_000 / RING_FILL_RATE_PPS;
const RING_FILL_RATE_PPS: u64 = 1_000_000;

/// How long the relay's core takes to run a thread that another core wakes while it
/// sleeps ([`probe_wake_latency`]): what the relay's NAPI kthread waits for the frame
/// that wakes it after it emptied its ring and slept. Meanwhile the generator goes on
/// filling the ring, so a wake-up that takes longer than [`VETH_RING_FRAMES`] frames'
/// time at the offered rate overflows it, whatever the server. In a VM this is the
/// hypervisor's time to run a halted vCPU again, which steal time does not count.
#[derive(Clone, Debug, Serialize)]
pub struct WakeLatency {
    /// The core woken, and the one that woke it.
    pub cpu: usize,
    pub from_cpu: usize,
    pub latency: Percentiles,
    /// The wake-ups that took longer than [`VETH_RING_FRAMES`] take to arrive at 1 M pps
    /// (256 µs).
    pub ring_fills_at_1m_pps: usize,
}

impl WakeLatency {
    fn of(cpu: usize, from_cpu: usize, latencies_ns: Vec<u32>) -> Option<WakeLatency> {
        let ring_fills_at_1m_pps = latencies_ns
            .iter()
            .filter(|&&ns| u64::from(ns) > RING_FILL_AT_1M_PPS_US * 1000)
            .count();
        Some(WakeLatency {
            cpu,
            from_cpu,
            latency: Percentiles::from_ns(latencies_ns)?,
            ring_fills_at_1m_pps,
        })
    }
}

/// [`WakeLatency`] of `cpu` woken from `from_cpu` every [`WAKE_INTERVAL_US`] for
/// `duration`: a thread pinned to `cpu` waits on a channel, one pinned to `from_cpu` sends
/// it the time, and the first notes how long ago that was once it runs. The sender spins
/// between sends: run it when nothing is measured.
pub(crate) fn probe_wake_latency(
    cpu: usize,
    from_cpu: usize,
    duration: Duration,
) -> Result<WakeLatency> {
    let (wake, woken) = std::sync::mpsc::channel::<Instant>();
    let waiter = std::thread::spawn(move || -> Result<Vec<u32>> {
        set_affinity(0, &cpu_set(&[cpu]))?;
        let mut latencies_ns = Vec::new();
        while let Ok(sent) = woken.recv() {
            latencies_ns.push(u32::try_from(sent.elapsed().as_nanos()).unwrap_or(u32::MAX));
        }
        Ok(latencies_ns)
    });
    let waker = std::thread::spawn(move || -> Result<()> {
        set_affinity(0, &cpu_set(&[from_cpu]))?;
        // Let the waiter pin itself and sleep before the first wake-up.
        std::thread::sleep(Duration::from_millis(10));
        let start = Instant::now();
        while start.elapsed() < duration {
            let sent = Instant::now();
            if wake.send(sent).is_err() {
                break;
            }
            while sent.elapsed() < Duration::from_micros(WAKE_INTERVAL_US) {
                std::hint::spin_loop();
            }
        }
        Ok(())
    });
    waker
        .join()
        .map_err(|_| anyhow!("the wake-up probe's waker panicked"))??;
    let latencies_ns = waiter
        .join()
        .map_err(|_| anyhow!("the wake-up probe's waiter panicked"))??;
    WakeLatency::of(cpu, from_cpu, latencies_ns).context("the wake-up probe took no sample")
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
    fn wake_ups_that_fill_the_ring_at_one_million_pps_are_counted_apart() {
        let latency = WakeLatency::of(1, 0, vec![40_000, 256_000, 300_000]).expect("samples");
        assert_eq!(latency.ring_fills_at_1m_pps, 1);
        assert_eq!(latency.latency.samples, 3);
        assert!((latency.latency.max_us - 300.0).abs() < 1e-9);
        assert!(WakeLatency::of(1, 0, Vec::new()).is_none());
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
