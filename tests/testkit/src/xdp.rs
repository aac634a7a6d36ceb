//! Trivial XDP programs on veth ends, loaded with aya from the daemon's own object.
//!
//! A frame the relay's XDP program sends with XDP_TX or XDP_REDIRECT into a veth is
//! dropped (`xdp_tx_errors`) unless the receiving end runs an XDP program itself, so the
//! client's and peer's ends get the pass-only program; the benchmark's kernel-speed mode
//! puts the drop-everything program on the peer's end so that the peer's own stack does
//! not limit what is measured. The redirect-only program ([`StubAction::RedirectTo`]) is
//! the per-core benchmark's floor of a relaying program: a redirect with no lookup.
//!
//! [`FrameInjector`] is the benchmark's live-frames generator: a transmitting program run
//! with BPF_PROG_TEST_RUN in live-frames mode, so prebuilt frames cross a veth pair as XDP
//! frames at up to millions per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{Array, DevMap, MapData};
use aya::programs::{ProgramError, TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::sys::SyscallError;
use aya::{Ebpf, EbpfLoader};

use anyhow::{anyhow, ensure, Context, Result};

use turn_relay::bpf::testing::{
    object, Inject, DROP_PROGRAM, INJECT_FLOWS, INJECT_FRAMES_MAP, INJECT_FRAME_MAX, INJECT_MAP,
    PASS_PROGRAM, REDIRECT_FLOOR_MAP, REDIRECT_FLOOR_PROGRAM, TRANSMIT_PROGRAM,
};

use crate::addresses::OUTER_INTERFACE;
use crate::netns::Namespace;
use crate::testbed::ifindex;
use crate::topology::Topology;

/// Which trivial program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StubAction {
    Pass,
    /// Drops UDP, passes ARP and the rest (the relay keeps resolving the sink).
    Drop,
    /// Redirects UDP unchanged (`bpf_redirect_map`, a one-entry DEVMAP) to the named
    /// interface of the same namespace and passes the rest: the benchmark's
    /// redirect-only floor. The target's veth peer must have an XDP program (or GRO on)
    /// to accept the frames.
    RedirectTo(&'static str),
}

/// A trivial program attached in native mode to one interface through a bpf_link;
/// detached when dropped (or when its namespace goes away).
pub struct StubXdp {
    /// Owns the program and its link.
    _ebpf: Ebpf,
}

impl StubXdp {
    pub fn attach(netns: &Namespace, interface: &str, action: StubAction) -> Result<StubXdp> {
        let name = match action {
            StubAction::Pass => PASS_PROGRAM,
            StubAction::Drop => DROP_PROGRAM,
            StubAction::RedirectTo(_) => REDIRECT_FLOOR_PROGRAM,
        };
        let ebpf = netns
            .run_inside(|| {
                let mut ebpf = load_program(name)?;
                if let StubAction::RedirectTo(target) = action {
                    redirect_to(&mut ebpf, target)?;
                }
                let program: &mut Xdp = program_mut(&mut ebpf, name)?;
                program
                    .attach(interface, XdpMode::Driver)
                    .with_context(|| format!("attaching {name} to {interface}"))?;
                Ok(ebpf)
            })
            .with_context(|| format!("in {}", netns.name()))?;
        let shown = netns.ip(&["link", "show", "dev", interface])?;
        anyhow::ensure!(
            shown.contains("xdp"),
            "{name} not shown on {interface}: {shown}"
        );
        Ok(StubXdp { _ebpf: ebpf })
    }
}

/// Points [`REDIRECT_FLOOR_PROGRAM`] at interface `target` of the calling thread's
/// namespace (entry 0 of [`REDIRECT_FLOOR_MAP`]).
fn redirect_to(ebpf: &mut Ebpf, target: &str) -> Result<()> {
    let map = ebpf
        .map_mut(REDIRECT_FLOOR_MAP)
        .ok_or_else(|| anyhow!("the XDP object has no map {REDIRECT_FLOOR_MAP}"))?;
    let mut devices = DevMap::try_from(map)?;
    devices
        .set(0, ifindex(target)?, None, 0)
        .with_context(|| format!("writing {target} into {REDIRECT_FLOOR_MAP}"))
}

/// The XDP object with program `name` loaded (verified), attached nowhere.
fn load_program(name: &str) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(object())
        .context("loading the XDP object")?;
    program_mut(&mut ebpf, name)?
        .load()
        .with_context(|| format!("loading {name}"))?;
    Ok(ebpf)
}

/// Program `name` of `ebpf`.
fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
        .try_into()?)
}

/// The pass-only program on the client's and the peer's `eth0`, so they accept what the
/// relay's XDP program redirects or transmits to them (detached when dropped).
pub fn pass_on_outer_ends(topology: &Topology) -> Result<[StubXdp; 2]> {
    Ok([
        StubXdp::attach(&topology.client, OUTER_INTERFACE, StubAction::Pass)
            .context("client eth0")?,
        StubXdp::attach(&topology.peer, OUTER_INTERFACE, StubAction::Pass).context("peer eth0")?,
    ])
}

/// Frames per batch of a live-frames run: the kernel's default (NAPI_POLL_WEIGHT). After
/// each batch the kernel flushes the redirected frames to the device, as a driver does at
/// the end of a NAPI poll.
const INJECT_BATCH: u32 = 64;

/// Test-run iterations per second of offered time at most, to bound a run whose stop
/// signal went missing: an iteration takes well over 10 ns, so a run lasts at most a few
/// times its intended duration.
const MAX_ITERATIONS_PER_SECOND: f64 = 1e8;

/// At a fixed rate, frames go out in bursts of this much worth of them (at least one, at
/// most a batch), back to back, as the socket generator sends them.
const BURST_TIME: Duration = Duration::from_micros(50);

/// How long [`FrameInjector::inject`] keeps signalling its threads to stop.
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// What one [`FrameInjector::inject`] transmitted.
#[derive(Clone, Copy, Debug)]
pub struct Injected {
    pub sent: u64,
    /// From the first frame transmitted to the last.
    pub seconds: f64,
}

/// The live-frames generator: [`TRANSMIT_PROGRAM`] loaded and attached nowhere, run by
/// BPF_PROG_TEST_RUN with `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux ≥ 5.18;
/// Documentation/bpf/bpf_prog_run.rst, "Running XDP programs in live frame mode"): the
/// kernel builds each frame in a page of its own page pool and runs the program on it as
/// if it had arrived on the interface given as `ingress_ifindex` in `ctx_in`, honouring
/// the verdict. XDP_TX becomes a redirect out of that interface, so on a veth the frames
/// appear at the other end as XDP frames (no skb), as xdp-trafficgen sends them. That end
/// takes them only when it has NAPI (an XDP program, or GRO on); otherwise veth drops
/// them.
///
/// A test run with more than one repetition swaps the kernel's XDP dispatcher twice
/// (milliseconds), so the generator makes one long run and paces inside the
/// program ([`INJECT_MAP`]: a burst of frames is due every burst × interval; a frame
/// that is not due is dropped before it leaves), and a signal ends the runs. The kernel
/// recycles the run's pages without restoring their data, which the receiver may have
/// rewritten, so the program writes the frame again from [`INJECT_FRAMES_MAP`].
pub struct FrameInjector {
    /// Owns the program and its map.
    ebpf: Ebpf,
}

/// Puts the calling thread (the injector's) under SCHED_IDLE: it loops in the kernel for
/// a whole step, and must not keep the receiving ends' NAPI kthreads sharing its CPU (the
/// sink's) from running, or their 256-frame veth rings overflow and the sink, not the
/// relay under test, loses frames. The same for every server measured.
fn yield_to_every_other_thread() -> Result<()> {
    let parameter = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; a valid policy and parameter.
    let status = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &parameter) };
    ensure!(
        status == 0,
        "sched_setscheduler(SCHED_IDLE): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

impl FrameInjector {
    pub fn load() -> Result<FrameInjector> {
        let ebpf = load_program(TRANSMIT_PROGRAM)?;
        stop_signal_handler()?;
        Ok(FrameInjector { ebpf })
    }

    /// Transmits `frames` (of one length; one per flow, in turn) out of interface
    /// `ifindex` at `rate` frames/s (None: as fast as possible) for `duration` or until
    /// `stop()`, from one thread in one live-frames test run. The kernel looks `ifindex`
    /// up in the calling thread's network namespace: call it from inside the interface's
    /// namespace ([`crate::netns::Namespace::run_inside`]). A frame the receiving end has
    /// no room for is dropped there, not reported here.
    pub fn inject(
        &mut self,
        ifindex: u32,
        frames: &[Vec<u8>],
        rate: Option<f64>,
        duration: Duration,
        stop: impl Fn() -> bool,
    ) -> Result<Injected> {
        ensure!(
            (1..=INJECT_FLOWS).contains(&frames.len()),
            "{} frames to inject (1 to {INJECT_FLOWS})",
            frames.len()
        );
        let mut templates: Array<&mut MapData, [u8; INJECT_FRAME_MAX]> = Array::try_from(
            self.ebpf
                .map_mut(INJECT_FRAMES_MAP)
                .ok_or_else(|| anyhow!("the XDP object has no map {INJECT_FRAMES_MAP}"))?,
        )?;
        let frame_len = frames[0].len();
        for (index, frame) in frames.iter().enumerate() {
            ensure!(
                frame.len() == frame_len && frame.len() <= INJECT_FRAME_MAX,
                "frames of {} and {frame_len} bytes (one length, at most {INJECT_FRAME_MAX})",
                frame.len()
            );
            let mut template = [0u8; INJECT_FRAME_MAX];
            template[..frame.len()].copy_from_slice(frame);
            templates
                .set(index as u32, template, 0)
                .with_context(|| format!("writing {INJECT_FRAMES_MAP}"))?;
        }
        let interval = rate.map_or(0, |rate| (1e9 / rate.max(1.0)) as u64);
        let burst = rate.map_or(1, |rate| {
            ((rate * BURST_TIME.as_secs_f64()).ceil() as u64).clamp(1, u64::from(INJECT_BATCH))
        });
        self.write_pace(&[
            (Inject::Interval, interval),
            (Inject::Due, 0),
            (Inject::Sent, 0),
            (Inject::First, 0),
            (Inject::Last, 0),
            (Inject::Burst, burst),
            (Inject::BurstLeft, 0),
            (Inject::Flows, frames.len() as u64),
        ])?;
        let repeat =
            (duration.as_secs_f64() * MAX_ITERATIONS_PER_SECOND).min(f64::from(u32::MAX)) as u32;
        let program: &Xdp = self
            .ebpf
            .program(TRANSMIT_PROGRAM)
            .ok_or_else(|| anyhow!("the XDP object has no program {TRANSMIT_PROGRAM}"))?
            .try_into()?;
        // The thread's pthread_t (0 until it started), for the stop signal.
        let id = AtomicU64::new(0);
        let run = std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                // SAFETY: no preconditions.
                id.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
                yield_to_every_other_thread()?;
                transmit(program, ifindex, &frames[0], repeat)
            });
            let deadline = Instant::now() + duration;
            while Instant::now() < deadline && !stop() && !thread.is_finished() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let stop_by = Instant::now() + STOP_LIMIT;
            while !thread.is_finished() && Instant::now() < stop_by {
                let id = id.load(Ordering::Acquire);
                if id != 0 {
                    // SAFETY: the thread is alive (not finished, joined only below); if
                    // it is just finishing, it ignores the signal.
                    unsafe { libc::pthread_kill(id as libc::pthread_t, STOP_SIGNAL) };
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            thread
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the injector thread panicked")))
        });
        run?;
        let (sent, first, last) = (
            self.read_pace(Inject::Sent)?,
            self.read_pace(Inject::First)?,
            self.read_pace(Inject::Last)?,
        );
        Ok(Injected {
            sent,
            seconds: if sent > 1 {
                last.saturating_sub(first) as f64 / 1e9
            } else {
                duration.as_secs_f64()
            },
        })
    }

    fn pace(&mut self) -> Result<Array<&mut MapData, u64>> {
        let map = self
            .ebpf
            .map_mut(INJECT_MAP)
            .ok_or_else(|| anyhow!("the XDP object has no map {INJECT_MAP}"))?;
        Ok(Array::try_from(map)?)
    }

    fn write_pace(&mut self, entries: &[(Inject, u64)]) -> Result<()> {
        let mut pace = self.pace()?;
        for &(index, value) in entries {
            pace.set(index as u32, value, 0)
                .with_context(|| format!("writing {INJECT_MAP}"))?;
        }
        Ok(())
    }

    fn read_pace(&mut self, index: Inject) -> Result<u64> {
        self.pace()?
            .get(&(index as u32), 0)
            .with_context(|| format!("reading {INJECT_MAP}"))
    }
}

/// The signal that ends an injector thread's test run (the kernel checks for pending
/// signals between batches and returns EINTR).
const STOP_SIGNAL: libc::c_int = libc::SIGUSR2;

/// A handler for [`STOP_SIGNAL`] that does nothing but interrupt the system call (a
/// signal with no handler would end the process), installed once.
fn stop_signal_handler() -> Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            signal_hook::flag::register(STOP_SIGNAL, Arc::new(AtomicBool::new(false)))
                .map(drop)
                .map_err(|error| format!("installing the SIGUSR2 handler: {error}"))
        })
        .clone()
        .map_err(|error| anyhow!(error))
}

/// One live-frames test run of `program` on frames of `frame`'s length, arriving on
/// `ifindex`, for up to `repeat` iterations; ended early (EINTR) by [`STOP_SIGNAL`].
fn transmit(program: &Xdp, ifindex: u32, frame: &[u8], repeat: u32) -> Result<()> {
    let context = xdp_md(frame.len(), ifindex);
    let run = program.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&context),
        repeat,
        attrs: TestRunAttrs::new().xdp_live_frames(INJECT_BATCH),
        ..TestRunOptions::default()
    });
    match run {
        Ok(_) => Ok(()),
        Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
            if io_error.raw_os_error() == Some(libc::EINTR) =>
        {
            Ok(())
        }
        Err(error) => Err(error).with_context(|| {
            format!("BPF_PROG_TEST_RUN in live-frames mode out of ifindex {ifindex}")
        }),
    }
}

/// `struct xdp_md` (include/uapi/linux/bpf.h: six `__u32`, native endian: `data`,
/// `data_end`, `data_meta`, `ingress_ifindex`, `rx_queue_index`, `egress_ifindex`) as
/// BPF_PROG_TEST_RUN takes it in `ctx_in`: the frame from offset 0 to its length, no
/// metadata, arriving on `ifindex`, receive queue 0.
fn xdp_md(frame_len: usize, ifindex: u32) -> [u8; 24] {
    let fields = [0, frame_len as u32, 0, ifindex, 0, 0];
    let mut context = [0u8; 24];
    for (bytes, field) in context.chunks_exact_mut(4).zip(fields) {
        bytes.copy_from_slice(&field.to_ne_bytes());
    }
    context
}
