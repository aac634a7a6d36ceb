//! Test hooks (cargo feature `testing`, enabled only by the crates under `tests/`): the
//! program loaded and verified but attached nowhere, for BPF_PROG_TEST_RUN, and the
//! compiled object, from which tests attach the trivial `xdp_pass` / `xdp_drop`
//! programs to veth ends.

use anyhow::{anyhow, Context as _};
use aya::programs::Xdp;

use super::maps::MapSizes;
use super::{BpfDatapath, DecisionTrace, Loaded, RoutingWatch, XdpCounters, XDP_OBJECT};

/// The name of the pass-only program in [`object`]: the timing baseline, and what a veth
/// end needs to accept frames the relay redirects or XDP_TXes into it.
pub const PASS_PROGRAM: &str = "xdp_pass";
/// The name of the program in [`object`] that drops UDP and passes ARP and the rest (the
/// benchmark's sink side).
pub const DROP_PROGRAM: &str = "xdp_drop";
/// The name of the program in [`object`] that redirects UDP unchanged to the interface in
/// entry 0 of its DEVMAP [`REDIRECT_FLOOR_MAP`] and passes the rest (the benchmark's
/// redirect-only floor).
pub const REDIRECT_FLOOR_PROGRAM: &str = "xdp_redirect_floor";
pub const REDIRECT_FLOOR_MAP: &str = "REDIRECT_FLOOR";

/// The name of the program in [`object`] that transmits frames back out of their
/// ingress interface (XDP_TX) at the pace [`INJECT_MAP`] sets: the benchmark's
/// live-frames generator.
pub const TRANSMIT_PROGRAM: &str = "xdp_transmit";
/// [`TRANSMIT_PROGRAM`]'s array of `u64`, indexed by [`Inject`].
pub const INJECT_MAP: &str = "INJECT";
pub use turn_common::inject::Inject;
/// [`TRANSMIT_PROGRAM`]'s frames, one per flow (array of [`INJECT_FRAME_MAX`] bytes,
/// zero-padded, at most [`INJECT_FLOWS`]); it rewrites every frame it sends with the
/// one at the index in the frame's 4-byte metadata.
pub const INJECT_FRAMES_MAP: &str = "INJECT_FRAMES";
pub const INJECT_FRAME_MAX: usize = 256;
pub const INJECT_FLOWS: usize = 64;

/// The XDP object the daemon embeds (`turn_xdp`, [`PASS_PROGRAM`], [`DROP_PROGRAM`],
/// [`REDIRECT_FLOOR_PROGRAM`], [`TRANSMIT_PROGRAM`]).
pub fn object() -> &'static [u8] {
    XDP_OBJECT
}

/// `turn_xdp` and [`PASS_PROGRAM`] loaded (verified) with maps sized for a number of
/// allocations, attached nowhere: run them with BPF_PROG_TEST_RUN.
pub struct DetachedProgram {
    loaded: Loaded,
}

impl DetachedProgram {
    /// Maps for `max_allocations` at the core's default per-allocation caps.
    pub fn load(max_allocations: u32) -> anyhow::Result<DetachedProgram> {
        Self::load_with_trace(max_allocations, false)
    }

    /// As [`Self::load`], with the decision trace (`xdp.trace`) on or off; the records
    /// are read with [`Self::trace_to`].
    pub fn load_with_trace(max_allocations: u32, trace: bool) -> anyhow::Result<DetachedProgram> {
        let mut loaded = Loaded::new(MapSizes::for_allocations(max_allocations), trace)?;
        let baseline: &mut Xdp = loaded
            .ebpf
            .program_mut(PASS_PROGRAM)
            .ok_or_else(|| anyhow!("the XDP object has no program {PASS_PROGRAM}"))?
            .try_into()?;
        baseline
            .load()
            .with_context(|| format!("loading {PASS_PROGRAM}"))?;
        Ok(DetachedProgram { loaded })
    }

    /// Forwards the decision trace's records to `logger` until the returned guard drops
    /// (the program must be loaded with the trace on).
    pub fn trace_to<L: log::Log + Send + 'static>(
        &mut self,
        logger: L,
    ) -> anyhow::Result<DecisionTrace> {
        DecisionTrace::start(&mut self.loaded.ebpf, logger)
    }

    /// `turn_xdp`.
    pub fn program(&self) -> anyhow::Result<&Xdp> {
        self.loaded.program()
    }

    /// [`PASS_PROGRAM`], the baseline `turn_xdp` is timed against.
    pub fn baseline(&self) -> anyhow::Result<&Xdp> {
        Ok(self
            .loaded
            .ebpf
            .program(PASS_PROGRAM)
            .ok_or_else(|| anyhow!("the XDP object has no program {PASS_PROGRAM}"))?
            .try_into()?)
    }

    /// The datapath writing this program's maps (handed out once).
    pub fn datapath(&self) -> anyhow::Result<BpfDatapath> {
        self.loaded.datapath()
    }

    /// The per-CPU counters, summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<XdpCounters> {
        self.loaded.counters()
    }

    /// Starts the watcher that keeps the program's cached next hops fresh, for the
    /// routing of the calling thread's network namespace, as [`super::XdpRelay::attach`]
    /// does (once per program); the cache is off until then.
    pub fn watch_routing(&self) -> anyhow::Result<RoutingWatch> {
        self.loaded.watch_routing()
    }

    /// Lets the program redirect out of interface `ifindex` (of the calling thread's
    /// network namespace), as [`super::XdpRelay::attach`] does for each interface it
    /// attaches to; the program passes frames for any other egress interface up.
    pub fn add_egress(&self, ifindex: u32) -> anyhow::Result<()> {
        self.loaded
            .maps
            .lock()
            .map_err(|_| anyhow!("XDP maps lock poisoned"))?
            .add_egress(ifindex)
    }
}
