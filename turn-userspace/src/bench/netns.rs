//! The benchmark topology: client, relay and peer network namespaces joined by veth pairs.
//!
//! ```text
//!  [client ns] c0 198.18.1.1/24 ──veth── r0 198.18.1.2/24 [relay ns] r1 198.18.2.2/24 ──veth── p0 198.18.2.1/24 [peer ns]
//!              2001:2:0:1::2/64        2001:2:0:1::1/64      2001:2:0:2::1/64        2001:2:0:2::2/64
//! ```
//! The relay namespace has IP forwarding on: the XDP program's bpf_fib_lookup (flags 0)
//! answers "forwarding disabled" otherwise, and the no-relay baseline latency uses it. It
//! does not change any server's path, since all TURN traffic is addressed to the relay's
//! own addresses (delivered locally, never forwarded). Everything is torn down when the
//! [`Topology`] is dropped, which also happens on error, panic unwinding and after Ctrl-C
//! (the load loops observe [`super::interrupted`] and return).

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const RELAY_CLIENT_SIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const RELAY_PEER_SIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// IPv6 addresses on the same veths, from the benchmarking range 2001:2::/48 (RFC 5180).
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
pub const RELAY_CLIENT_SIDE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
pub const RELAY_PEER_SIDE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
pub const PEER_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2);
const NETNS_PREFIX: &str = "turnbench-";

/// Datagrams a namespace's UDP layer dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpDrops {
    /// A receiving socket's buffer was full (RcvbufErrors), e.g. the sink falling behind.
    pub receive_buffer: u64,
    /// Bad UDP checksum (InCsumErrors): a relay wrote a wrong checksum.
    pub checksum: u64,
}

impl UdpDrops {
    pub fn since(&self, before: &UdpDrops) -> UdpDrops {
        UdpDrops {
            receive_buffer: self.receive_buffer.saturating_sub(before.receive_buffer),
            checksum: self.checksum.saturating_sub(before.checksum),
        }
    }
}

/// The three namespaces and four veth ends of one benchmark run.
pub struct Topology {
    pub client_ns: String,
    pub relay_ns: String,
    pub peer_ns: String,
    pub client_if: String,
    pub relay_client_if: String,
    pub relay_peer_if: String,
    pub peer_if: String,
    created_namespaces: Vec<String>,
    /// bpf_link of the client-side veth end's XDP pass program (closing it detaches it).
    client_link: Option<OwnedFd>,
    /// bpf_link of the peer-side veth end's XDP program (pass, or drop in kernel-speed mode).
    peer_link: Option<OwnedFd>,
}

impl Topology {
    /// Builds the namespaces, veth pairs, addresses and routes. Names embed our pid, so
    /// concurrent runs do not collide; leftovers of dead earlier runs are removed first.
    pub fn create() -> Result<Topology> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let mut topology = Topology {
            client_ns: format!("{NETNS_PREFIX}{pid}-client"),
            relay_ns: format!("{NETNS_PREFIX}{pid}-relay"),
            peer_ns: format!("{NETNS_PREFIX}{pid}-peer"),
            client_if: format!("tb{pid}c0"),
            relay_client_if: format!("tb{pid}r0"),
            relay_peer_if: format!("tb{pid}r1"),
            peer_if: format!("tb{pid}p0"),
            created_namespaces: Vec::new(),
            client_link: None,
            peer_link: None,
        };
        for ns in [&topology.client_ns, &topology.relay_ns, &topology.peer_ns].map(String::clone) {
            ip(&["netns", "add", &ns])?;
            topology.created_namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let t = &topology;
        // One queue per CPU, so receive processing (and XDP) can run on every CPU.
        let queues = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string();
        let q = queues.as_str();
        ip(&[
            "link",
            "add",
            &t.client_if,
            "numtxqueues",
            q,
            "numrxqueues",
            q,
            "netns",
            &t.client_ns,
            "type",
            "veth",
            "peer",
            "name",
            &t.relay_client_if,
            "numtxqueues",
            q,
            "numrxqueues",
            q,
            "netns",
            &t.relay_ns,
        ])?;
        ip(&[
            "link",
            "add",
            &t.relay_peer_if,
            "numtxqueues",
            q,
            "numrxqueues",
            q,
            "netns",
            &t.relay_ns,
            "type",
            "veth",
            "peer",
            "name",
            &t.peer_if,
            "numtxqueues",
            q,
            "numrxqueues",
            q,
            "netns",
            &t.peer_ns,
        ])?;
        for (ns, ifname, address) in [
            (&t.client_ns, &t.client_if, CLIENT_IP),
            (&t.relay_ns, &t.relay_client_if, RELAY_CLIENT_SIDE_IP),
            (&t.relay_ns, &t.relay_peer_if, RELAY_PEER_SIDE_IP),
            (&t.peer_ns, &t.peer_if, PEER_IP),
        ] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                ifname,
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        // IPv6 on the same veths; nodad so the addresses are usable at once.
        for (ns, ifname, address) in [
            (&t.client_ns, &t.client_if, CLIENT_IP6),
            (&t.relay_ns, &t.relay_client_if, RELAY_CLIENT_SIDE_IP6),
            (&t.relay_ns, &t.relay_peer_if, RELAY_PEER_SIDE_IP6),
            (&t.peer_ns, &t.peer_if, PEER_IP6),
        ] {
            ip(&[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{address}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
        }
        ip(&[
            "-n",
            &t.client_ns,
            "-6",
            "route",
            "add",
            "2001:2:0:2::/64",
            "via",
            &RELAY_CLIENT_SIDE_IP6.to_string(),
        ])?;
        ip(&[
            "-n",
            &t.peer_ns,
            "-6",
            "route",
            "add",
            "2001:2:0:1::/64",
            "via",
            &RELAY_PEER_SIDE_IP6.to_string(),
        ])?;
        ip(&[
            "-n",
            &t.client_ns,
            "route",
            "add",
            "198.18.2.0/24",
            "via",
            &RELAY_CLIENT_SIDE_IP.to_string(),
        ])?;
        ip(&[
            "-n",
            &t.peer_ns,
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            &RELAY_PEER_SIDE_IP.to_string(),
        ])?;
        topology.enable_relay_forwarding()?;
        // Full UDP checksums on the wire, as a real NIC delivers them: with tx checksum
        // offload a veth hands the relay a frame whose checksum field holds only the
        // pseudo-header sum (CHECKSUM_PARTIAL), which an XDP program rewriting headers cannot
        // update incrementally (the peer would then drop the relayed datagram as corrupt).
        for (ns, ifname) in [(&t.client_ns, &t.client_if), (&t.peer_ns, &t.peer_if)] {
            let status = Command::new("ip")
                .args(["netns", "exec", ns, "ethtool", "-K", ifname, "tx", "off"])
                .stdout(std::process::Stdio::null())
                .status()
                .context("running ethtool")?;
            if !status.success() {
                bail!("ethtool -K {ifname} tx off failed");
            }
        }
        Ok(topology)
    }

    /// Attaches an XDP program that returns XDP_PASS to the client- and peer-side veth ends.
    ///
    /// A frame that an XDP program on the relay's veth ends sends with XDP_TX or
    /// XDP_REDIRECT is dropped by the receiving veth end unless that end has an XDP program
    /// (native mode) itself, so the ends facing the load generator and the sink need one.
    /// Attached for every server, so all of them see the same topology.
    pub fn attach_pass_programs(&mut self) -> Result<()> {
        let program = load_xdp_program(XdpAction::Pass)?;
        let (ns, ifname, fd) = (
            self.client_ns.clone(),
            self.client_if.clone(),
            program.as_raw_fd(),
        );
        self.client_link = Some(
            in_netns(&ns, move || attach_xdp_link(fd, &ifname))
                .with_context(|| format!("attaching the XDP pass program in {ns}"))?,
        );
        self.set_peer_side_program(XdpAction::Pass)
    }

    /// Replaces the peer-side veth end's XDP program. Kernel-speed mode uses `Drop` so that
    /// the peer's own UDP stack does not limit the relay; the veth end still counts every
    /// frame it received in rx_packets.
    pub fn set_peer_side_program(&mut self, action: XdpAction) -> Result<()> {
        let program = load_xdp_program(action)?;
        self.peer_link = None;
        let (ns, ifname, fd) = (
            self.peer_ns.clone(),
            self.peer_if.clone(),
            program.as_raw_fd(),
        );
        self.peer_link = Some(
            in_netns(&ns, move || attach_xdp_link(fd, &ifname))
                .with_context(|| format!("attaching an XDP program in {ns}"))?,
        );
        Ok(())
    }

    /// Turns IP forwarding on in the relay namespace (see the module documentation).
    fn enable_relay_forwarding(&self) -> Result<()> {
        for setting in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let status = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.relay_ns,
                    "sysctl",
                    "-q",
                    "-w",
                    setting,
                ])
                .status()
                .context("running sysctl in the relay namespace")?;
            if !status.success() {
                bail!("sysctl {setting} failed in {}", self.relay_ns);
            }
        }
        Ok(())
    }

    /// rx_packets of an interface (from `ip -s -j link`), used by the kernel-speed mode.
    pub fn rx_packets(&self, ns: &str, ifname: &str) -> Result<u64> {
        let output = Command::new("ip")
            .args(["-n", ns, "-s", "-j", "link", "show", "dev", ifname])
            .output()
            .context("running ip -s -j link show")?;
        let value: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parsing ip -j output")?;
        value
            .pointer("/0/stats64/rx/packets")
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no rx packet counter for {ifname}"))
    }

    /// UDP drop counters of a namespace (/proc/net/snmp as seen from inside it).
    pub fn udp_drops(&self, ns: &str) -> Result<UdpDrops> {
        in_netns(ns, || {
            // thread-self: /proc/self/net would show the main thread's namespace.
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")
                .context("reading /proc/thread-self/net/snmp")?;
            let mut udp_lines = snmp.lines().filter(|line| line.starts_with("Udp: "));
            let (Some(names), Some(values)) = (udp_lines.next(), udp_lines.next()) else {
                bail!("no Udp lines in /proc/net/snmp")
            };
            let counter = |wanted: &str| {
                names
                    .split_whitespace()
                    .zip(values.split_whitespace())
                    .find(|(name, _)| *name == wanted)
                    .and_then(|(_, value)| value.parse().ok())
                    .with_context(|| format!("no Udp {wanted} counter"))
            };
            Ok(UdpDrops {
                receive_buffer: counter("RcvbufErrors")?,
                checksum: counter("InCsumErrors")?,
            })
        })
    }

    /// The MAC address of an interface.
    pub fn mac_address(&self, ns: &str, ifname: &str) -> Result<[u8; 6]> {
        let output = Command::new("ip")
            .args(["-n", ns, "-j", "link", "show", "dev", ifname])
            .output()
            .context("running ip -j link show")?;
        let value: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("parsing ip -j output")?;
        let text = value
            .pointer("/0/address")
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("no MAC address for {ifname}"))?;
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() != 6 {
            bail!("unexpected MAC address {text}");
        }
        for (byte, part) in mac.iter_mut().zip(parts) {
            *byte =
                u8::from_str_radix(part, 16).with_context(|| format!("bad MAC address {text}"))?;
        }
        Ok(mac)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.client_link = None;
        self.peer_link = None;
        for ns in self.created_namespaces.drain(..) {
            if let Err(error) = ip(&["netns", "del", &ns]) {
                eprintln!("turn-bench: could not delete namespace {ns}: {error:#}");
            }
        }
    }
}

/// Deletes namespaces left by earlier turn-bench runs whose process no longer exists.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `work` on a helper thread that has joined network namespace `ns`; sockets it creates
/// stay in that namespace for their whole life, whichever thread later uses them.
pub fn in_netns<T: Send>(ns: &str, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/var/run/netns/{ns}");
    let ns_file = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: setns on a valid namespace fd only changes this helper thread.
                if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns into {path}: {}", std::io::Error::last_os_error());
                }
                work()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("namespace helper thread panicked"))?
    })
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    padding: [u8; 64],
}

#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    padding: [u8; 64],
}

/// What the benchmark's own one-instruction XDP programs return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAction {
    Drop = 1,
    Pass = 2,
}

/// Loads `r0 = <action>; exit` — the smallest XDP program — straight through bpf(2).
pub fn load_xdp_program(action: XdpAction) -> Result<OwnedFd> {
    // BPF_MOV64_IMM(BPF_REG_0, action); BPF_EXIT_INSN()
    let instructions: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, action as u8, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    let label: &[u8] = if action == XdpAction::Pass {
        b"bench_pass"
    } else {
        b"bench_drop"
    };
    name[..label.len()].copy_from_slice(label);
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: 2,
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: 0,
        padding: [0; 64],
    };
    // SAFETY: attr points at live, correctly laid out memory for the duration of the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        bail!(
            "BPF_PROG_LOAD of the XDP {action:?} program: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches an XDP program to `ifname` (in the calling thread's namespace) with a bpf_link
/// in the driver's native mode; the program stays attached while the returned fd is open.
pub fn attach_xdp_link(program_fd: i32, ifname: &str) -> Result<OwnedFd> {
    let c_name = std::ffi::CString::new(ifname)?;
    // SAFETY: c_name is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}");
    }
    let attr = LinkCreateAttr {
        prog_fd: program_fd as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: 0,
        padding: [0; 64],
    };
    // SAFETY: attr is live and laid out as the kernel's link_create struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            &attr as *const LinkCreateAttr,
            std::mem::size_of::<LinkCreateAttr>(),
        )
    };
    if fd < 0 {
        bail!(
            "BPF_LINK_CREATE (XDP) on {ifname}: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
