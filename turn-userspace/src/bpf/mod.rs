//! The XDP fast path: loads the program built from `turn-ebpf`, attaches it through
//! bpf_link, owns its maps (in `maps`) and reads its per-CPU counters.
//!
//! The program relays ChannelData and Send/Data indications (RFC 8656 §11, §12) for
//! the flows userspace installs through [`BpfDatapath`]; everything else goes to the
//! network stack, where the userspace relay behaves identically.
//!
//! # Host requirements
//!
//! - IP forwarding on the interfaces the program is attached to
//!   (`net.ipv4.conf.<if>.forwarding=1`, `net.ipv6.conf.<if>.forwarding=1`, or the
//!   `all` switches): `bpf_fib_lookup` answers "forwarding disabled" otherwise, and the
//!   program passes every frame to userspace (correct, but no acceleration). With IPv6
//!   forwarding on, the kernel ignores router advertisements unless `accept_ra=2`; and a
//!   forwarding host should drop unwanted transit traffic in its firewall.
//!   [`XdpRelay::attach`] checks these switches, warns and names them in its status line
//!   (see `host`); it never changes them.
//! - Listening and relayed addresses bound to specific IPs (not 0.0.0.0 / ::): the
//!   program matches the addresses frames carry; wildcard entries are refused and stay
//!   in userspace.
//! - Senders on the same host through a veth offload their UDP checksum (the frame
//!   carries only the pseudo-header sum); the program's incremental update then yields
//!   a wrong checksum. Frames from real NICs are complete; for veth test setups turn the
//!   sender's offload off (`ethtool -K <if> tx off`).
//! - Frames XDP_TX'd or redirected into a veth are dropped (`xdp_tx_errors`) unless the
//!   veth's peer has NAPI: it runs an XDP program (this one with empty maps, or any
//!   pass-only program) or, on newer kernels, has GRO on (`ethtool -K <if> gro on`).
//! - Next hops out of an interface the program is not attached to are left to the stack
//!   (`pass_egress_not_attached`): the program redirects only to the interfaces in its
//!   EGRESS device map, which [`XdpRelay::attach`] fills with the ones it attached to.
//! - Next hops are cached in the map entries and looked up again after every routing
//!   change the kernel announces, and at least once a second (see `next_hop`).
//! - No bpffs: nothing is pinned.
//! - Map memory is preallocated: about 2.4 KiB per allocation on a 2-CPU host
//!   (`XdpRelay::map_memory_bytes` gives the exact figure).

mod clock;
mod datapath;
mod host;
mod maps;
mod next_hop;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;

use std::fmt;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context as _};
use aya::programs::{Xdp, XdpMode as AyaXdpMode};
use aya::{Ebpf, EbpfLoader};

pub use datapath::BpfDatapath;
pub use host::{ForwardingDisabled, IpFamily};
pub use maps::MAX_FAST_PATH_ALLOCATIONS;
pub use turn_common::counters::{Counter, Outcome};

use maps::{MapSizes, Maps};
pub use next_hop::{RoutingWatch, REFRESH as ROUTING_REFRESH};
pub use trace::DecisionTrace;

/// The XDP object built by `build.rs` (aya-build) from `turn-ebpf`.
pub(crate) static XDP_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/turn-ebpf"));

/// The name of the XDP entry point in [`XDP_OBJECT`].
pub(crate) const PROGRAM_NAME: &str = "turn_xdp";

/// How to attach the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode per interface.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only: works on every device, slower.
    Skb,
    /// No XDP: userspace relays everything.
    Off,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
            XdpMode::Off => "off",
        })
    }
}

/// What the daemon's `[xdp]` section asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpSettings {
    pub mode: XdpMode,
    /// Interfaces to attach to (by name).
    pub interfaces: Vec<String>,
    /// Sizes the maps: this many allocations fit in the fast path, each with this many
    /// permissions and channels (the core's per-allocation caps, so no map fills up
    /// before the core answers 508).
    pub max_allocations: u32,
    pub max_permissions_per_allocation: u32,
    pub max_channels_per_allocation: u32,
    /// Log every frame's decision (`xdp.trace`; see [`DecisionTrace`]).
    pub trace: bool,
}

/// One interface the program is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attachment {
    interface: String,
    mode: XdpMode,
}

/// The verified program and its maps, not attached anywhere.
pub(crate) struct Loaded {
    /// Owns the program (and, once attached, its bpf_links).
    pub(crate) ebpf: Ebpf,
    pub(crate) maps: Mutex<Maps>,
    pub(crate) map_memory_bytes: u64,
}

impl Loaded {
    /// Loads (verifies) the program with maps of `sizes`, its decision trace on or off
    /// (see [`trace`]).
    pub(crate) fn new(sizes: MapSizes, trace: bool) -> anyhow::Result<Loaded> {
        let mut loader = EbpfLoader::new();
        maps::size_maps(&mut loader, sizes);
        trace::set_level(&mut loader, trace);
        let mut ebpf = loader.load(XDP_OBJECT).context("loading the XDP object")?;
        xdp_program(&mut ebpf)?
            .load()
            .context("the kernel verifier rejected the XDP program")?;
        let maps = Maps::take(&mut ebpf, sizes)?;
        let map_memory_bytes = maps.memory_bytes()?;
        Ok(Loaded {
            ebpf,
            maps: Mutex::new(maps),
            map_memory_bytes,
        })
    }

    pub(crate) fn program(&self) -> anyhow::Result<&Xdp> {
        self.ebpf
            .program(PROGRAM_NAME)
            .ok_or_else(|| anyhow!("the XDP object has no program {PROGRAM_NAME}"))?
            .try_into()
            .context("program is not XDP")
    }

    pub(crate) fn counters(&self) -> anyhow::Result<XdpCounters> {
        self.maps
            .lock()
            .map_err(|_| anyhow!("XDP maps lock poisoned"))?
            .counters()
    }

    /// Starts the watcher that keeps the program's cached next hops fresh, for the
    /// routing of the calling thread's network namespace; there is only one.
    pub(crate) fn watch_routing(&self) -> anyhow::Result<RoutingWatch> {
        let generation = self
            .maps
            .lock()
            .map_err(|_| anyhow!("XDP maps lock poisoned"))?
            .take_routing_generation()
            .ok_or_else(|| anyhow!("the routing watcher was already started"))?;
        RoutingWatch::start(generation)
    }

    /// The flow tables as a [`BpfDatapath`]; there is only one.
    pub(crate) fn datapath(&self) -> anyhow::Result<BpfDatapath> {
        let tables = self
            .maps
            .lock()
            .map_err(|_| anyhow!("XDP maps lock poisoned"))?
            .take_tables()
            .ok_or_else(|| anyhow!("the XDP datapath was already handed out"))?;
        Ok(BpfDatapath::new(tables))
    }
}

/// The loaded and attached XDP program. Dropping it detaches the program from every
/// interface (the bpf_links are closed); the maps live on while the [`BpfDatapath`]
/// still refers to them.
pub struct XdpRelay {
    /// Stops before the program goes.
    routing: Option<RoutingWatch>,
    /// The decision trace's forwarding thread, when `xdp.trace` is on.
    _trace: Option<DecisionTrace>,
    loaded: Loaded,
    attachments: Vec<Attachment>,
    /// Host settings found wrong at attach time (see [`host`]).
    forwarding_disabled: Vec<ForwardingDisabled>,
}

impl fmt::Debug for XdpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpRelay")
            .field("attachments", &self.attachments)
            .field("forwarding_disabled", &self.forwarding_disabled)
            .finish_non_exhaustive()
    }
}

impl XdpRelay {
    /// Loads the program with maps sized from `settings` and attaches it to
    /// every interface per `settings.mode` (auto: native, then skb; Err if both fail).
    ///
    /// Also checks the forwarding sysctls of those interfaces (of the calling thread's
    /// network namespace): with forwarding off the program cannot resolve next hops and
    /// passes everything to userspace. Each problem is logged as a warning and named in
    /// [`XdpRelay::status`]; the sysctls are left alone.
    pub fn attach(settings: &XdpSettings) -> anyhow::Result<XdpRelay> {
        if settings.mode == XdpMode::Off {
            bail!("XDP is off in the configuration");
        }
        if settings.interfaces.is_empty() {
            bail!("no interfaces to attach XDP to (xdp.interfaces is empty)");
        }
        let mut loaded = Loaded::new(
            MapSizes::new(
                settings.max_allocations,
                settings.max_permissions_per_allocation,
                settings.max_channels_per_allocation,
            ),
            settings.trace,
        )?;
        let trace = if settings.trace {
            tracing::warn!(
                "XDP: xdp.trace is on: every frame's decision is logged (for diagnosis only, \
                 it costs per frame)"
            );
            Some(DecisionTrace::start(&mut loaded.ebpf, log::logger())?)
        } else {
            None
        };
        let program = xdp_program(&mut loaded.ebpf)?;
        let mut attachments = Vec::with_capacity(settings.interfaces.len());
        for interface in &settings.interfaces {
            let mode = attach_one(program, interface, settings.mode)?;
            attachments.push(Attachment {
                interface: interface.clone(),
                mode,
            });
        }
        // Redirects go only to these interfaces (see the EGRESS map of the program).
        {
            let mut maps = loaded
                .maps
                .lock()
                .map_err(|_| anyhow!("XDP maps lock poisoned"))?;
            for interface in &settings.interfaces {
                maps.add_egress(ifindex(interface)?)?;
            }
        }
        let routing = match loaded.watch_routing() {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(
                    "XDP: {error:#}: next hops are not cached, every relayed frame is looked \
                     up (correct, slower)"
                );
                None
            }
        };
        let forwarding_disabled =
            host::forwarding_disabled(&settings.interfaces, |path| std::fs::read_to_string(path));
        for disabled in &forwarding_disabled {
            tracing::warn!(
                "{disabled} on {}: bpf_fib_lookup answers \"forwarding disabled\" for {} frames \
                 arriving there, so the XDP fast path passes all of them to userspace \
                 (correct but not accelerated); the host must set {}=1{}",
                disabled.interface,
                match disabled.family {
                    IpFamily::V4 => "IPv4",
                    IpFamily::V6 => "IPv6",
                },
                disabled.sysctl(),
                match disabled.family {
                    IpFamily::V4 => "",
                    IpFamily::V6 => " (and accept_ra=2 where router advertisements are needed)",
                }
            );
        }
        Ok(XdpRelay {
            routing,
            _trace: trace,
            loaded,
            attachments,
            forwarding_disabled,
        })
    }

    /// The attached interfaces whose forwarding sysctl was off at attach time: frames of
    /// that family arriving there are all relayed by userspace.
    pub fn forwarding_disabled(&self) -> &[ForwardingDisabled] {
        &self.forwarding_disabled
    }

    /// The [`crate::protocol::datapath::Datapath`] writing the program's maps. Only one exists:
    /// a second call is an error.
    pub fn datapath(&self) -> anyhow::Result<BpfDatapath> {
        self.loaded.datapath()
    }

    /// The interfaces the program is attached to.
    pub fn interfaces(&self) -> Vec<String> {
        self.attachments
            .iter()
            .map(|attachment| attachment.interface.clone())
            .collect()
    }

    /// The per-CPU counters, summed over CPUs.
    pub fn counters(&self) -> anyhow::Result<XdpCounters> {
        self.loaded.counters()
    }

    /// A human status line for the start-up log, ending in a warning when the host's
    /// forwarding sysctls keep the fast path from relaying anything.
    pub fn status(&self) -> String {
        let mut attached = self.attached_status();
        if self.routing.is_none() {
            attached.push_str("; next hops not cached (every frame is looked up)");
        }
        match host::forwarding_warning(&self.forwarding_disabled) {
            Some(warning) => format!("{attached}; {warning}"),
            None => attached,
        }
    }

    fn attached_status(&self) -> String {
        let mut by_mode: Vec<(XdpMode, Vec<&str>)> = Vec::new();
        for attachment in &self.attachments {
            match by_mode
                .iter_mut()
                .find(|(mode, _)| *mode == attachment.mode)
            {
                Some((_, names)) => names.push(&attachment.interface),
                None => by_mode.push((attachment.mode, vec![&attachment.interface])),
            }
        }
        let places: Vec<String> = by_mode
            .iter()
            .map(|(mode, names)| format!("in {} mode on {}", mode_label(*mode), names.join(", ")))
            .collect();
        match self.program_id() {
            Ok(id) => format!("XDP attached {} (program id {id})", places.join("; ")),
            Err(_) => format!("XDP attached {}", places.join("; ")),
        }
    }

    /// The kernel id of the loaded program (as `bpftool prog show` lists it).
    pub fn program_id(&self) -> anyhow::Result<u32> {
        Ok(self
            .loaded
            .program()?
            .info()
            .context("reading the XDP program's info")?
            .id())
    }

    /// Bytes of kernel memory the maps take (their memlock accounting), for the
    /// start-up log.
    pub fn map_memory_bytes(&self) -> anyhow::Result<u64> {
        Ok(self.loaded.map_memory_bytes)
    }
}

fn mode_label(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Native => "native",
        XdpMode::Skb => "skb",
        XdpMode::Auto | XdpMode::Off => "unknown",
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c_name = std::ffi::CString::new(name).with_context(|| format!("interface name {name}"))?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).with_context(|| format!("no interface {name}")),
        index => Ok(index),
    }
}

pub(crate) fn xdp_program(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or_else(|| anyhow!("the XDP object has no program {PROGRAM_NAME}"))?
        .try_into()
        .context("program is not XDP")
}

/// Attaches to one interface; returns the mode that worked.
fn attach_one(program: &mut Xdp, interface: &str, mode: XdpMode) -> anyhow::Result<XdpMode> {
    let attempt = |program: &mut Xdp, mode: XdpMode| {
        let aya_mode = match mode {
            XdpMode::Skb => AyaXdpMode::Skb,
            _ => AyaXdpMode::Driver,
        };
        program
            .attach(interface, aya_mode)
            .map(|_link| mode)
            .with_context(|| format!("attaching XDP to {interface} in {} mode", mode_label(mode)))
    };
    match mode {
        XdpMode::Native | XdpMode::Skb => attempt(program, mode),
        XdpMode::Auto => attempt(program, XdpMode::Native).or_else(|native_error| {
            attempt(program, XdpMode::Skb)
                .map_err(|skb_error| anyhow!("{native_error:#}; {skb_error:#}"))
        }),
        XdpMode::Off => bail!("XDP is off in the configuration"),
    }
}

/// The program's counters summed over CPUs, one per [`Outcome`], and what its bandwidth
/// limits dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpCounters {
    counters: Vec<Counter>,
    /// Datagrams and application data bytes over a bandwidth limit, client → peer then
    /// peer → client.
    rate_limited: [Counter; 2],
}

impl XdpCounters {
    /// The counter of one outcome.
    pub fn get(&self, outcome: Outcome) -> Counter {
        self.counters
            .get(outcome as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every outcome with its counter, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Outcome, Counter)> + '_ {
        Outcome::ALL
            .iter()
            .map(|outcome| (*outcome, self.get(*outcome)))
    }

    /// Dropped by a bandwidth limit (datagrams, application data bytes) in `direction`
    /// (`turn_common::bandwidth::TO_PEER` or `TO_CLIENT`).
    pub fn rate_limited(&self, direction: usize) -> Counter {
        self.rate_limited
            .get(direction)
            .copied()
            .unwrap_or_default()
    }

    /// All frames the program has seen (every frame lands in exactly one outcome).
    pub fn seen(&self) -> Counter {
        self.counters
            .iter()
            .fold(Counter::default(), |sum, counter| Counter {
                packets: sum.packets + counter.packets,
                bytes: sum.bytes + counter.bytes,
            })
    }
}
