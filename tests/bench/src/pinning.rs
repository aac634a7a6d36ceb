//! Where the per-core comparison's threads run ([`crate::per_core`]): the load on
//! [`LOAD_CPU`], the relay (server process and its NAPI kthreads) on [`RELAY_CPU`], every
//! other thread that may move off the relay's core, and the scheduler's run time of
//! kthreads.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use turn_testkit::netns::Namespace;

use crate::cpu;
use crate::per_core::{LOAD_CPU, RELAY_CPU};

/// How long enabling threaded NAPI may take to start its kthreads.
const KTHREAD_LIMIT: Duration = Duration::from_secs(2);

/// A CPU set holding `cpus`.
pub(crate) fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `set` is a valid cpu_set_t; CPU_SET bounds-checks `cpu`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// Runs thread `tid` (0: the calling thread) on `set` only.
pub(crate) fn set_affinity(tid: u32, set: &libc::cpu_set_t) -> Result<()> {
    // SAFETY: `set` points to a valid cpu_set_t of the size passed.
    let done =
        unsafe { libc::sched_setaffinity(tid as libc::pid_t, std::mem::size_of_val(set), set) };
    ensure!(
        done == 0,
        "sched_setaffinity({tid}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Runs thread `tid` under SCHED_FIFO at `priority`.
pub(crate) fn real_time(tid: u32, priority: i32) -> Result<()> {
    let parameter = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: a valid policy and parameter.
    let done =
        unsafe { libc::sched_setscheduler(tid as libc::pid_t, libc::SCHED_FIFO, &parameter) };
    ensure!(
        done == 0,
        "sched_setscheduler({tid}, SCHED_FIFO): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Every thread of process `pid` on `cpu` (threads it starts later inherit it).
pub(crate) fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    let set = cpu_set(&[cpu]);
    for tid in cpu::threads(pid)? {
        set_affinity(tid, &set).with_context(|| format!("pinning thread {tid} of {pid}"))?;
    }
    Ok(())
}

/// The calling thread (and the threads it starts: generator, sink) pinned to
/// [`LOAD_CPU`] until dropped, when it may run anywhere again.
pub(crate) struct LoadPinned {
    previous: libc::cpu_set_t,
}

impl LoadPinned {
    pub(crate) fn new() -> Result<LoadPinned> {
        let mut previous = cpu_set(&[]);
        // SAFETY: `previous` is a valid cpu_set_t of the size passed.
        let done =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&previous), &mut previous) };
        ensure!(
            done == 0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        set_affinity(0, &cpu_set(&[LOAD_CPU]))?;
        Ok(LoadPinned { previous })
    }
}

impl Drop for LoadPinned {
    fn drop(&mut self) {
        if let Err(error) = set_affinity(0, &self.previous) {
            eprintln!("turn-bench: restoring the CPU affinity: {error:#}");
        }
    }
}

/// The machine's other threads kept off [`RELAY_CPU`] until dropped, as `isolcpus` would
/// keep them: the same for every server. On this VM the guest agent (pid 1) and DAMON's
/// `kdamond` took 20–50 ms of the relay's core per 2-second step, long enough for its
/// 256-frame veth ring to overflow above some 50 k pps whatever the server. Threads
/// pinned to their CPU (per-CPU kthreads) cannot move and stay; threads started later
/// (the servers, their NAPI kthreads) are pinned where they belong by their callers.
pub(crate) struct RelayCoreCleared {
    /// Each moved thread and the affinity it had.
    pub(crate) moved: Vec<(u32, libc::cpu_set_t)>,
}

impl RelayCoreCleared {
    pub(crate) fn new() -> RelayCoreCleared {
        let mut moved = Vec::new();
        for tid in all_threads() {
            let Some(previous) = affinity(tid) else {
                continue;
            };
            // SAFETY: `previous` is a valid cpu_set_t; CPU_ISSET bounds-checks the CPU.
            if !unsafe { libc::CPU_ISSET(RELAY_CPU, &previous) } {
                continue;
            }
            let mut elsewhere = previous;
            // SAFETY: as above; CPU_CLR bounds-checks the CPU.
            unsafe { libc::CPU_CLR(RELAY_CPU, &mut elsewhere) };
            // SAFETY: as above.
            if unsafe { libc::CPU_COUNT(&elsewhere) } == 0 {
                continue;
            }
            // Per-CPU kthreads refuse (EINVAL), threads that ended meanwhile too (ESRCH).
            if set_affinity(tid, &elsewhere).is_ok() {
                moved.push((tid, previous));
            }
        }
        RelayCoreCleared { moved }
    }
}

impl Drop for RelayCoreCleared {
    fn drop(&mut self) {
        for (tid, previous) in &self.moved {
            // A thread that ended meanwhile has nothing to restore.
            let _ = set_affinity(*tid, previous);
        }
    }
}

/// The affinity of thread `tid`, None if it cannot be read (the thread ended).
pub(crate) fn affinity(tid: u32) -> Option<libc::cpu_set_t> {
    let mut set = cpu_set(&[]);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let done = unsafe {
        libc::sched_getaffinity(tid as libc::pid_t, std::mem::size_of_val(&set), &mut set)
    };
    (done == 0).then_some(set)
}

/// Every thread of every process (/proc/<pid>/task/<tid>).
pub(crate) fn all_threads() -> Vec<u32> {
    let numbered = |dir: &str| -> Vec<u32> {
        std::fs::read_dir(dir).map_or_else(
            |_| Vec::new(),
            |entries| {
                entries
                    .flatten()
                    .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                    .collect()
            },
        )
    };
    numbered("/proc")
        .into_iter()
        .flat_map(|pid| numbered(&format!("/proc/{pid}/task")))
        .collect()
}

/// The kthreads whose name starts with `prefix` (`comm` is cut to 15 bytes).
pub(crate) fn kthreads(prefix: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end().starts_with(prefix))
        })
        .collect()
}

/// Turns threaded NAPI on at `interface` in `namespace` and pins the kthreads it starts
/// (`napi/<interface>-<id>`, one per receive queue) to `cpu`; returns their ids.
///
/// The kthreads are told apart from other namespaces' same-named interfaces by appearing
/// when the flag goes from 0 to 1.
pub(crate) fn threaded_napi(
    namespace: &Namespace,
    interface: &str,
    cpu: usize,
) -> Result<Vec<u32>> {
    let flag = |value: u8| {
        // `ip netns exec` mounts the namespace's own /sys/class/net.
        namespace
            .run(
                "sh",
                &[
                    "-c",
                    &format!("echo {value} > /sys/class/net/{interface}/threaded"),
                ],
            )
            .with_context(|| format!("setting {interface}/threaded to {value}"))
    };
    let prefix: String = format!("napi/{interface}-").chars().take(15).collect();
    flag(0)?;
    let before = kthreads(&prefix);
    flag(1)?;
    let deadline = Instant::now() + KTHREAD_LIMIT;
    let started = loop {
        let started: Vec<u32> = kthreads(&prefix)
            .into_iter()
            .filter(|pid| !before.contains(pid))
            .collect();
        if !started.is_empty() || Instant::now() >= deadline {
            break started;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if started.is_empty() {
        bail!("no {prefix}* kthread started after enabling threaded NAPI on {interface}");
    }
    let set = cpu_set(&[cpu]);
    for &pid in &started {
        set_affinity(pid, &set).with_context(|| format!("pinning {prefix}* kthread {pid}"))?;
    }
    Ok(started)
}

/// Run time of `threads` so far (a kthread that ended counts 0 from then on).
pub(crate) fn threads_run_time(threads: &[u32]) -> cpu::RunTime {
    threads
        .iter()
        .filter_map(|&tid| cpu::task_run_time(tid).ok())
        .sum()
}

/// Whether thread `tid`'s affinity includes `cpu`.
pub(crate) fn may_run_on(tid: u32, cpu: usize) -> bool {
    // SAFETY: a valid cpu_set_t; CPU_ISSET bounds-checks `cpu`.
    affinity(tid).is_some_and(|set| unsafe { libc::CPU_ISSET(cpu, &set) })
}
