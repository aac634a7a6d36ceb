//! One namespace in which the XDP program runs under BPF_PROG_TEST_RUN with real next
//! hops: for the fixture tables and unit tests of the program (`tests/e2e`) and for
//! timing it per path (`tests/bench`). Needs root; sends nothing anywhere.
//!
//! `bpf_fib_lookup` resolves next hops in the namespace of the frame's ingress device,
//! so the testbed builds one with the relay's two sides of [`crate::addresses`]: a
//! client-side veth ([`CLIENT_SIDE_INTERFACE`], listener addresses) and a peer-side veth
//! ([`PEER_SIDE_INTERFACE`], relayed addresses), static neighbours for the client and the
//! peers, and IP forwarding on: `bpf_fib_lookup` answers `BPF_FIB_LKUP_RET_FWD_DISABLED`
//! on an ingress device without forwarding, and the program then passes the frame (see
//! [`Testbed::set_forwarding`]). [`UNRESOLVED_PEER_V4`] has a route but no neighbour,
//! [`UNROUTABLE_PEER_V4`] no route. The program may redirect out of the two sides, as if
//! the daemon had attached it there; [`UNATTACHED_PEER_V4`] sits behind a third
//! interface ([`UNATTACHED_INTERFACE`]) it may not redirect to. [`RELAY_PUBLIC_V4`] /
//! [`RELAY_PUBLIC_V6`] are neighbours on the peer side's link. The IPv4-mapped IPv6 form
//! of the peer (`::ffff:198.19.1.2`) is routed and resolved on the peer side like any
//! IPv6 peer, so a fixture can show which family the program writes for an entry stored
//! in that form.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use aya::maps::{MapData, MapInfo};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use turn_relay::bpf::testing::DetachedProgram;
use turn_relay::bpf::{DecisionTrace, Outcome, RoutingWatch, XdpCounters};

use crate::addresses::{
    CLIENT_V4, CLIENT_V6, NEAR_PEER_V4, NEAR_PEER_V6, PEER_V4, PEER_V6, PREFIX_V4, PREFIX_V6,
    RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_RELAYED_V4, RELAY_RELAYED_V6, RELAY_UNATTACHED_LINK_V4,
};
pub use crate::addresses::{
    RELAY_PUBLIC_V4, RELAY_PUBLIC_V6, UNATTACHED_PEER_V4, UNRESOLVED_PEER_V4, UNROUTABLE_PEER_V4,
};
use crate::fast_path::FastPath;
use crate::netns::{format_mac, Netns};

/// The relay's client-side interface (listening addresses) and peer-side interface
/// (relayed addresses).
pub const CLIENT_SIDE_INTERFACE: &str = "tbc0";
pub const PEER_SIDE_INTERFACE: &str = "tbp0";
/// An interface of the relay the program is not attached to (no redirects there).
pub const UNATTACHED_INTERFACE: &str = "tbx0";

/// MAC addresses of the relay's two interfaces and of the neighbours.
pub const CLIENT_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const PEER_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x10];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x20];
pub const NEAR_PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x30];
pub const RELAY_PUBLIC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x40];
pub const UNATTACHED_PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x03, 0x20];

/// XDP actions as BPF_PROG_TEST_RUN returns them.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The interface a test frame arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    ClientSide,
    PeerSide,
}

/// What one BPF_PROG_TEST_RUN gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The XDP action ([`XDP_PASS`], [`XDP_DROP`], [`XDP_TX`], [`XDP_REDIRECT`]).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// What [`Testbed::time_repeated`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedTiming {
    /// Mean ns per repetition, as the kernel timed it.
    pub ns_per_packet: f64,
    /// The counters `turn_xdp` bumped, with how many packets (empty for the baseline).
    pub counted: Vec<(Outcome, u64)>,
}

/// Which program to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timed {
    /// `turn_xdp`.
    Relay,
    /// The pass-only baseline (the kernel's per-run overhead).
    Baseline,
}

/// A namespace with the program loaded (not attached) and its maps.
pub struct Testbed {
    // Field order is drop order: the watcher and the program go before the namespace.
    _routing: RoutingWatch,
    /// With [`Testbed::traced`]: the program's decision trace and what it logged.
    trace: Option<(DecisionTrace, TraceRecords)>,
    program: DetachedProgram,
    namespace: Netns,
    client_side_ifindex: u32,
    peer_side_ifindex: u32,
}

impl Testbed {
    /// Creates the namespace and loads the program with maps for `max_allocations`.
    pub fn new(max_allocations: u32) -> Result<Testbed> {
        Self::with_trace(max_allocations, false)
    }

    /// As [`Testbed::new`], with the program's decision trace (`xdp.trace`) on: what it
    /// logs is read with [`Testbed::trace_records`].
    pub fn traced(max_allocations: u32) -> Result<Testbed> {
        Self::with_trace(max_allocations, true)
    }

    fn with_trace(max_allocations: u32, trace: bool) -> Result<Testbed> {
        let namespace = Netns::create("testbed")?;
        configure(&namespace)?;
        let mut program = DetachedProgram::load_with_trace(max_allocations, trace)?;
        let trace = if trace {
            let records = TraceRecords::default();
            Some((program.trace_to(records.clone())?, records))
        } else {
            None
        };
        let (client_side_ifindex, peer_side_ifindex, routing) = namespace.run_inside(|| {
            let sides = (
                ifindex(CLIENT_SIDE_INTERFACE)?,
                ifindex(PEER_SIDE_INTERFACE)?,
            );
            // As the daemon does for the interfaces it attaches to (in the namespace the
            // interfaces are in).
            program.add_egress(sides.0)?;
            program.add_egress(sides.1)?;
            // Next hops are cached and refreshed as in the daemon, from this namespace's
            // routing.
            let routing = program.watch_routing()?;
            Ok((sides.0, sides.1, routing))
        })?;
        Ok(Testbed {
            _routing: routing,
            trace,
            program,
            namespace,
            client_side_ifindex,
            peer_side_ifindex,
        })
    }

    /// The decision trace's records so far, oldest first (empty unless [`Testbed::traced`];
    /// records reach here within the trace thread's poll interval).
    pub fn trace_records(&self) -> Vec<String> {
        self.trace
            .as_ref()
            .map(|(_, records)| records.lines())
            .unwrap_or_default()
    }

    /// The loaded program's map `name` (at most 15 bytes: the kernel keeps no more),
    /// for tests that write entries behind the daemon's back: such a write moves no
    /// version of the program's channel cache, so it shows what the cache still uses.
    pub fn program_map(&self, name: &str) -> Result<MapData> {
        let info = self.program.program()?.info().context("program info")?;
        let ids = info
            .map_ids()
            .context("the program's map ids")?
            .ok_or_else(|| anyhow!("the kernel lists no map ids"))?;
        for id in ids {
            let map = MapInfo::from_id(id).with_context(|| format!("map {id}"))?;
            if map.name_as_str() == Some(name) {
                return MapData::from_id(id).with_context(|| format!("map {name}"));
            }
        }
        Err(anyhow!("the program has no map {name}"))
    }

    /// The flow tables of this program (handed out once).
    pub fn fast_path(&self) -> Result<FastPath> {
        self.program.datapath().map(FastPath::new)
    }

    pub fn counters(&self) -> Result<XdpCounters> {
        self.program.counters()
    }

    /// Packets counted under `outcome` so far.
    pub fn count(&self, outcome: Outcome) -> Result<u64> {
        Ok(self.counters()?.get(outcome).packets)
    }

    /// Runs `ip ARGS` in the testbed's namespace (to change routes and neighbours while
    /// the program caches next hops).
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        self.namespace.ip(args).map(drop)
    }

    /// Turns IP forwarding on the testbed's interfaces on or off.
    pub fn set_forwarding(&self, enabled: bool) -> Result<()> {
        self.namespace.set_forwarding(enabled)
    }

    /// Runs `turn_xdp` once on `frame` as received on `ingress`.
    pub fn run(&self, frame: &[u8], ingress: Ingress) -> Result<RunResult> {
        let mut results = self.run_all(&[(frame, ingress)])?;
        results.pop().context("no result")
    }

    /// Runs `turn_xdp` once on each frame, in order, entering the namespace once.
    pub fn run_all(&self, frames: &[(&[u8], Ingress)]) -> Result<Vec<RunResult>> {
        let program = self.program.program()?;
        self.namespace.run_inside(|| {
            frames
                .iter()
                .map(|(frame, ingress)| {
                    let mut out = vec![0u8; frame.len() + 256];
                    let options = TestRunOptions {
                        data_in: Some(frame),
                        data_out: Some(&mut out),
                        ctx_in: Some(&context(frame.len(), self.ifindex(*ingress))),
                        ..TestRunOptions::default()
                    };
                    let result = program.test_run(options).context("BPF_PROG_TEST_RUN")?;
                    out.truncate(result.data_size_out as usize);
                    Ok(RunResult {
                        action: result.return_value,
                        frame: out,
                    })
                })
                .collect()
        })
    }

    /// Median ns per run of a program over `runs` single runs of `frame`, after one
    /// warm-up run. Single runs, since a repeated BPF_PROG_TEST_RUN feeds the rewritten
    /// frame back in (see [`Testbed::time_repeated`]); the kernel times each run itself,
    /// so the syscall is excluded but its timer overhead is not: subtract the baseline's
    /// median for the program's own cost.
    pub fn time(&self, frame: &[u8], ingress: Ingress, runs: u32, timed: Timed) -> Result<f64> {
        self.time_between(frame, ingress, runs, timed, || Ok(()))
    }

    /// [`Testbed::time`] with `between` called before each run (untimed): a table write,
    /// say, whose effect on the next run is what is timed.
    pub fn time_between(
        &self,
        frame: &[u8],
        ingress: Ingress,
        runs: u32,
        timed: Timed,
        mut between: impl FnMut() -> Result<()> + Send,
    ) -> Result<f64> {
        let program = self.timed_program(timed)?;
        let ifindex = self.ifindex(ingress);
        let runs = runs.max(1);
        self.namespace.run_inside(|| {
            let mut out = vec![0u8; frame.len() + 256];
            let mut durations: Vec<Duration> = Vec::with_capacity(runs as usize);
            for run in 0..=runs {
                between()?;
                let options = TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&context(frame.len(), ifindex)),
                    ..TestRunOptions::default()
                };
                let duration = program
                    .test_run(options)
                    .context("BPF_PROG_TEST_RUN")?
                    .duration;
                if run > 0 {
                    durations.push(duration);
                }
            }
            durations.sort_unstable();
            let median = durations
                .get(durations.len() / 2)
                .copied()
                .unwrap_or_default();
            Ok(median.as_nanos() as f64)
        })
    }

    /// Mean ns per run of a program over one BPF_PROG_TEST_RUN repeating `frame` `repeat`
    /// times (timer overhead amortised), with the outcome every repetition was counted
    /// under. Only meaningful for frames the program does not rewrite (passed or
    /// dropped): the repetitions share one buffer, so a relayed frame's repetitions would
    /// see the relayed frame. (Live-frames mode, BPF_F_TEST_XDP_LIVE_FRAMES, does not
    /// help: it resets only the data pointers of a recycled page, not its contents, so
    /// after the first batch a relaying program sees its own output; measured: 64
    /// relayed, the rest `pass_not_ip`.)
    pub fn time_repeated(
        &self,
        frame: &[u8],
        ingress: Ingress,
        repeat: u32,
        timed: Timed,
    ) -> Result<RepeatedTiming> {
        let program = self.timed_program(timed)?;
        let ifindex = self.ifindex(ingress);
        let before = self.counters()?;
        let duration = self.namespace.run_inside(|| {
            let options = TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&context(frame.len(), ifindex)),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            };
            program
                .test_run(options)
                .context("BPF_PROG_TEST_RUN")
                .map(|result| result.duration)
        })?;
        let after = self.counters()?;
        let counted = after
            .iter()
            .filter_map(|(outcome, counter)| {
                let packets = counter.packets - before.get(outcome).packets;
                (packets > 0).then_some((outcome, packets))
            })
            .collect();
        Ok(RepeatedTiming {
            ns_per_packet: duration.as_nanos() as f64,
            counted,
        })
    }

    fn timed_program(&self, timed: Timed) -> Result<&Xdp> {
        match timed {
            Timed::Relay => self.program.program(),
            Timed::Baseline => self.program.baseline(),
        }
    }

    fn ifindex(&self, ingress: Ingress) -> u32 {
        match ingress {
            Ingress::ClientSide => self.client_side_ifindex,
            Ingress::PeerSide => self.peer_side_ifindex,
        }
    }
}

/// The three veth pairs, the relay's addresses, static neighbours and forwarding.
fn configure(namespace: &Netns) -> Result<()> {
    for (inner, outer, mac, v4, v6) in [
        (
            CLIENT_SIDE_INTERFACE,
            "tbc1",
            CLIENT_SIDE_MAC,
            RELAY_LISTEN_V4,
            Some(RELAY_LISTEN_V6),
        ),
        (
            PEER_SIDE_INTERFACE,
            "tbp1",
            PEER_SIDE_MAC,
            RELAY_RELAYED_V4,
            Some(RELAY_RELAYED_V6),
        ),
        (
            UNATTACHED_INTERFACE,
            "tbx1",
            [0x02, 0, 0, 0, 0x03, 0x01],
            RELAY_UNATTACHED_LINK_V4,
            None,
        ),
    ] {
        namespace.ip(&["link", "add", inner, "type", "veth", "peer", "name", outer])?;
        namespace.ip(&["link", "set", inner, "address", &format_mac(mac)])?;
        namespace.ip(&["addr", "add", &format!("{v4}/{PREFIX_V4}"), "dev", inner])?;
        if let Some(v6) = v6 {
            namespace.ip(&[
                "addr",
                "add",
                &format!("{v6}/{PREFIX_V6}"),
                "dev",
                inner,
                "nodad",
            ])?;
        }
        namespace.ip(&["link", "set", outer, "up"])?;
        namespace.ip(&["link", "set", inner, "up"])?;
    }
    for (address, mac, device) in [
        (IpAddr::V4(CLIENT_V4), CLIENT_MAC, CLIENT_SIDE_INTERFACE),
        (IpAddr::V6(CLIENT_V6), CLIENT_MAC, CLIENT_SIDE_INTERFACE),
        (
            IpAddr::V4(NEAR_PEER_V4),
            NEAR_PEER_MAC,
            CLIENT_SIDE_INTERFACE,
        ),
        (
            IpAddr::V6(NEAR_PEER_V6),
            NEAR_PEER_MAC,
            CLIENT_SIDE_INTERFACE,
        ),
        (IpAddr::V4(PEER_V4), PEER_MAC, PEER_SIDE_INTERFACE),
        (IpAddr::V6(PEER_V6), PEER_MAC, PEER_SIDE_INTERFACE),
        (
            IpAddr::V4(RELAY_PUBLIC_V4),
            RELAY_PUBLIC_MAC,
            PEER_SIDE_INTERFACE,
        ),
        (
            IpAddr::V6(RELAY_PUBLIC_V6),
            RELAY_PUBLIC_MAC,
            PEER_SIDE_INTERFACE,
        ),
        (
            IpAddr::V4(UNATTACHED_PEER_V4),
            UNATTACHED_PEER_MAC,
            UNATTACHED_INTERFACE,
        ),
        (
            IpAddr::V6(PEER_V4.to_ipv6_mapped()),
            PEER_MAC,
            PEER_SIDE_INTERFACE,
        ),
    ] {
        namespace.ip(&[
            "neigh",
            "replace",
            &address.to_string(),
            "lladdr",
            &format_mac(mac),
            "dev",
            device,
            "nud",
            "permanent",
        ])?;
    }
    namespace.ip(&[
        "-6",
        "route",
        "add",
        "::ffff:0.0.0.0/96",
        "dev",
        PEER_SIDE_INTERFACE,
    ])?;
    namespace.set_forwarding(true)
}

/// A `struct xdp_md` for BPF_PROG_TEST_RUN: data 0, data_end = len, data_meta 0,
/// ingress_ifindex, rx_queue_index 0, egress_ifindex 0.
fn context(len: usize, ifindex: u32) -> [u8; 24] {
    let mut context = [0u8; 24];
    context[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    context[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    context
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(anyhow!(
            "no interface {name}: {}",
            std::io::Error::last_os_error()
        )),
        index => Ok(index),
    }
}

/// The decision trace's records as text, collected by a `log::Log` the trace thread
/// writes to: the first [`TRACE_RECORDS_KEPT`] (a timing run traces every repetition).
#[derive(Clone, Default)]
struct TraceRecords(Arc<Mutex<Vec<String>>>);

/// How many trace records a [`Testbed`] keeps.
const TRACE_RECORDS_KEPT: usize = 10_000;

impl TraceRecords {
    fn lines(&self) -> Vec<String> {
        self.0.lock().map(|lines| lines.clone()).unwrap_or_default()
    }
}

impl log::Log for TraceRecords {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut lines) = self.0.lock().map_err(drop) {
            if lines.len() >= TRACE_RECORDS_KEPT {
                return;
            }
            lines.push(format!("{} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}
