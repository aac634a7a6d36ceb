//! A private network namespace in which the XDP program runs under BPF_PROG_TEST_RUN
//! with real next hops: used by the integration tests (`tests/xdp_fixtures.rs`) and the
//! bench harness ([`super::bench`]). Needs root; sends nothing anywhere.
//!
//! `bpf_fib_lookup` resolves next hops in the namespace of the frame's ingress device,
//! so the testbed builds one: a client-side veth (`tbc0`, listening addresses) and a
//! peer-side veth (`tbp0`, relayed addresses), static neighbours for the clients and
//! peers below, and IP forwarding on — `bpf_fib_lookup` answers
//! `BPF_FIB_LKUP_RET_FWD_DISABLED` on an ingress device without forwarding, and the
//! program then passes the frame (see [`Testbed::set_forwarding`]).
//!
//! Addresses: 198.18.0.0/24 (client side) and 198.19.0.0/24 (peer side) from the
//! benchmarking range 198.18.0.0/15, and 2001:db8::/32 documentation prefixes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};

use super::{BpfDatapath, Loaded, XdpCounters};

/// The relay's listening address (client side, on `tbc0`).
pub const LISTENER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const LISTENER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The relay's relayed address (peer side, on `tbp0`).
pub const RELAYED_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const RELAYED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// A client, a neighbour on the client side.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10);
/// A peer, a neighbour on the peer side (relaying to it is an XDP_REDIRECT).
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 20);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x20);
/// A peer on the client side (relaying to it from a client is an XDP_TX).
pub const NEAR_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 30);
pub const NEAR_PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x30);
/// A peer with a route but no neighbour entry (bpf_fib_lookup: NO_NEIGH).
pub const UNRESOLVED_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 99);
/// A peer without a route (the namespace has no default route).
pub const UNROUTABLE_PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 5);

/// MAC addresses of the relay's two interfaces and of the neighbours.
pub const CLIENT_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const PEER_SIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x10];
pub const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x20];
pub const NEAR_PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x30];

/// The interface a test frame arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    ClientSide,
    PeerSide,
}

/// What one BPF_PROG_TEST_RUN gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The XDP action (`XDP_PASS` = 2, `XDP_DROP` = 1, `XDP_TX` = 3, `XDP_REDIRECT` = 4).
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
    pub counted: Vec<(super::Outcome, u64)>,
}

/// The name of the pass-only baseline program in the XDP object.
const BASELINE_PROGRAM: &str = "xdp_pass";

/// A namespace with the program loaded (not attached) and its datapath.
pub struct Testbed {
    loaded: Loaded,
    namespace: Namespace,
    client_side_ifindex: u32,
    peer_side_ifindex: u32,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("namespace", &self.namespace.name)
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// Creates the namespace and loads the program with maps for `max_allocations`.
    pub fn new(max_allocations: u32) -> anyhow::Result<Testbed> {
        let namespace = Namespace::create()?;
        namespace.configure()?;
        let mut loaded = Loaded::new(max_allocations)?;
        let baseline: &mut Xdp = loaded
            .ebpf
            .program_mut(BASELINE_PROGRAM)
            .ok_or_else(|| anyhow!("the XDP object has no program {BASELINE_PROGRAM}"))?
            .try_into()?;
        baseline.load().context("loading the baseline program")?;
        let (client_side_ifindex, peer_side_ifindex) =
            namespace.enter(|| Ok::<_, anyhow::Error>((ifindex("tbc0")?, ifindex("tbp0")?)))??;
        Ok(Testbed {
            loaded,
            namespace,
            client_side_ifindex,
            peer_side_ifindex,
        })
    }

    /// The datapath writing this program's maps (once).
    pub fn datapath(&self) -> anyhow::Result<BpfDatapath> {
        self.loaded.datapath()
    }

    pub fn counters(&self) -> anyhow::Result<XdpCounters> {
        self.loaded.counters()
    }

    /// Turns IP forwarding on the testbed's interfaces on or off.
    pub fn set_forwarding(&self, enabled: bool) -> anyhow::Result<()> {
        self.namespace.set_forwarding(enabled)
    }

    /// Runs `turn_xdp` once on `frame` as received on `ingress`.
    pub fn run(&self, frame: &[u8], ingress: Ingress) -> anyhow::Result<RunResult> {
        let program = self.loaded.program()?;
        let ifindex = self.ifindex(ingress);
        self.namespace.enter(|| {
            let mut out = vec![0u8; frame.len() + 256];
            let result = run_once(program, frame, ifindex, Some(&mut out))?;
            out.truncate(result.0 as usize);
            Ok(RunResult {
                action: result.1,
                frame: out,
            })
        })?
    }

    /// Median ns per run of `turn_xdp` (or of the pass-only baseline) over `runs` single
    /// runs of `frame`, after one warm-up run. Single runs, since a repeated
    /// BPF_PROG_TEST_RUN feeds the rewritten frame back in (see [`Testbed::time_repeated`]);
    /// the kernel times each run itself, so the syscall is excluded but its timer
    /// overhead is not: subtract the baseline's median for the program's own cost.
    pub fn time(
        &self,
        frame: &[u8],
        ingress: Ingress,
        runs: u32,
        baseline: bool,
    ) -> anyhow::Result<f64> {
        let program = self.program(baseline)?;
        let ifindex = self.ifindex(ingress);
        let runs = runs.max(1);
        self.namespace.enter(|| {
            let mut out = vec![0u8; frame.len() + 256];
            let mut durations: Vec<Duration> = Vec::with_capacity(runs as usize);
            for run in 0..=runs {
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
        })?
    }

    /// Mean ns per run of `turn_xdp` (or of the pass-only baseline) over one
    /// BPF_PROG_TEST_RUN repeating `frame` `repeat` times (timer overhead amortised),
    /// with the outcome every repetition was counted under. Only meaningful for frames
    /// the program does not rewrite (passed or dropped): the repetitions share one buffer,
    /// so a relayed frame's repetitions would see the relayed frame. (Live-frames mode,
    /// BPF_F_TEST_XDP_LIVE_FRAMES, does not help: it resets only the data pointers of a
    /// recycled page, not its contents, so after the first batch a relaying program
    /// sees its own output; measured: 64 relayed, the rest `pass_not_ip`.)
    pub fn time_repeated(
        &self,
        frame: &[u8],
        ingress: Ingress,
        repeat: u32,
        baseline: bool,
    ) -> anyhow::Result<RepeatedTiming> {
        let program = self.program(baseline)?;
        let ifindex = self.ifindex(ingress);
        let before = self.counters()?;
        let duration = self.namespace.enter(|| {
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
        })??;
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

    fn program(&self, baseline: bool) -> anyhow::Result<&Xdp> {
        if baseline {
            Ok(self
                .loaded
                .ebpf
                .program(BASELINE_PROGRAM)
                .ok_or_else(|| anyhow!("the XDP object has no program {BASELINE_PROGRAM}"))?
                .try_into()?)
        } else {
            self.loaded.program()
        }
    }

    fn ifindex(&self, ingress: Ingress) -> u32 {
        match ingress {
            Ingress::ClientSide => self.client_side_ifindex,
            Ingress::PeerSide => self.peer_side_ifindex,
        }
    }
}

/// (data_size_out, action)
fn run_once(
    program: &Xdp,
    frame: &[u8],
    ifindex: u32,
    out: Option<&mut [u8]>,
) -> anyhow::Result<(u32, u32)> {
    let options = TestRunOptions {
        data_in: Some(frame),
        data_out: out,
        ctx_in: Some(&context(frame.len(), ifindex)),
        ..TestRunOptions::default()
    };
    let result = program.test_run(options).context("BPF_PROG_TEST_RUN")?;
    Ok((result.data_size_out, result.return_value))
}

/// A `struct xdp_md` for BPF_PROG_TEST_RUN: data 0, data_end = len, data_meta 0,
/// ingress_ifindex, rx_queue_index 0, egress_ifindex 0.
fn context(len: usize, ifindex: u32) -> [u8; 24] {
    let mut context = [0u8; 24];
    context[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    context[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    context
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(name)?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(anyhow!(
            "no interface {name:?}: {}",
            std::io::Error::last_os_error()
        )),
        index => Ok(index),
    }
}

/// A network namespace, deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> anyhow::Result<Namespace> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "turntb{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        Ok(Namespace { name })
    }

    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn configure(&self) -> anyhow::Result<()> {
        self.ip(&["link", "set", "lo", "up"])?;
        for (inner, outer, mac, v4, v6) in [
            ("tbc0", "tbc1", CLIENT_SIDE_MAC, LISTENER_V4, LISTENER_V6),
            ("tbp0", "tbp1", PEER_SIDE_MAC, RELAYED_V4, RELAYED_V6),
        ] {
            self.ip(&["link", "add", inner, "type", "veth", "peer", "name", outer])?;
            self.ip(&["link", "set", inner, "address", &mac_string(mac)])?;
            self.ip(&["addr", "add", &format!("{v4}/24"), "dev", inner])?;
            self.ip(&["addr", "add", &format!("{v6}/64"), "dev", inner, "nodad"])?;
            self.ip(&["link", "set", outer, "up"])?;
            self.ip(&["link", "set", inner, "up"])?;
        }
        for (address, mac, device) in [
            (IpAddr::V4(CLIENT_V4), CLIENT_MAC, "tbc0"),
            (IpAddr::V6(CLIENT_V6), CLIENT_MAC, "tbc0"),
            (IpAddr::V4(NEAR_PEER_V4), NEAR_PEER_MAC, "tbc0"),
            (IpAddr::V6(NEAR_PEER_V6), NEAR_PEER_MAC, "tbc0"),
            (IpAddr::V4(PEER_V4), PEER_MAC, "tbp0"),
            (IpAddr::V6(PEER_V6), PEER_MAC, "tbp0"),
        ] {
            self.ip(&[
                "neigh",
                "replace",
                &address.to_string(),
                "lladdr",
                &mac_string(mac),
                "dev",
                device,
                "nud",
                "permanent",
            ])?;
        }
        self.set_forwarding(true)
    }

    fn set_forwarding(&self, enabled: bool) -> anyhow::Result<()> {
        let value = if enabled { "1" } else { "0" };
        for key in [
            "net.ipv4.conf.all.forwarding",
            "net.ipv6.conf.all.forwarding",
        ] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.name,
                    "sysctl",
                    "-qw",
                    &format!("{key}={value}"),
                ],
            )?;
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the namespace.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file =
                        std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
                    // SAFETY: a valid namespace fd; setns affects only this thread.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        bail!("setns {path}: {}", std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow!("testbed thread panicked"))?
        })
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(error) = run("ip", &["netns", "del", &self.name]) {
            tracing::warn!(%error, namespace = %self.name, "deleting the testbed namespace failed");
        }
    }
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
