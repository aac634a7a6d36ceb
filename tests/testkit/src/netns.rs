//! Network namespaces: the only place that creates them (`ip netns add`) and enters them
//! (`setns`). A [`Netns`] owns its namespace and deletes it, with every process still
//! inside, on drop; a [`Namespace`] is a cheap handle for running things inside it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::privilege::{unique_name, NAME_PREFIX};
use crate::process::run;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIRECTORY: &str = "/run/netns";

/// A handle on a namespace (owned by a [`Netns`]).
#[derive(Clone, Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` prepared to run inside this namespace (`ip netns exec` execs it).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `ip -n <ns> <args>`; returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Adds the default route of `gateway`'s family via `gateway`.
    pub fn default_route_via(&self, gateway: IpAddr) -> Result<()> {
        let family = if gateway.is_ipv4() { "-4" } else { "-6" };
        let gateway = gateway.to_string();
        self.ip(&[family, "route", "add", "default", "via", &gateway])
            .map(drop)
    }

    /// Runs `program args` in the namespace to completion (short configuration commands).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Sets sysctls (`key=value`) inside the namespace.
    pub fn sysctl(&self, settings: &[&str]) -> Result<()> {
        let mut args = vec!["-q", "-w"];
        args.extend_from_slice(settings);
        self.run("sysctl", &args).map(drop)
    }

    /// Turns IP forwarding (both families, every interface) on or off.
    pub fn set_forwarding(&self, enabled: bool) -> Result<()> {
        let value = u8::from(enabled);
        self.sysctl(&[
            &format!("net.ipv4.conf.all.forwarding={value}"),
            &format!("net.ipv6.conf.all.forwarding={value}"),
        ])
    }

    /// A firewall that lets no UDP out of this namespace except on loopback (TCP and TLS
    /// get through): what a client behind a corporate firewall sees. Removed with the
    /// namespace.
    pub fn drop_outgoing_udp(&self) -> Result<()> {
        let rules = "table inet udp_firewall {\n\
                     \tchain output {\n\
                     \t\ttype filter hook output priority 0; policy accept;\n\
                     \t\toifname \"lo\" accept\n\
                     \t\tmeta l4proto udp drop\n\
                     \t}\n\
                     }\n";
        let file = std::env::temp_dir().join(format!("{}-firewall.nft", self.name));
        std::fs::write(&file, rules).context("writing the firewall rules")?;
        let loaded = self.run("nft", &["-f", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        loaded
            .map(drop)
            .context("installing the UDP-dropping firewall")
    }

    /// Runs `work` on a thread that has joined this namespace (setns affects only the
    /// calling thread): sockets it opens stay in the namespace whichever thread uses them
    /// later, and interface names it resolves are the namespace's.
    pub fn run_inside<T: Send>(&self, work: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = Path::new(NETNS_DIRECTORY).join(&self.name);
        let handle = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on a valid namespace fd; it changes only this thread.
                    let joined = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    ensure!(
                        joined == 0,
                        "setns into {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    );
                    work()
                })
                .join()
                .map_err(|_| anyhow!("thread inside {} panicked", self.name))?
        })
    }

    /// The body of `GET <path>` (HTTP/1.0) from `address` inside this namespace; any
    /// status but 200 is an error.
    pub fn http_get(&self, address: SocketAddr, path: &str) -> Result<String> {
        let (status, head, body) = self.http(address, "GET", path)?;
        ensure!(status == 200, "GET {path} from {address}: {head}");
        Ok(body)
    }

    /// `<method> <path>` (HTTP/1.0, empty body) to `address` inside this namespace: the
    /// status code, the status line and the body.
    pub fn http(
        &self,
        address: SocketAddr,
        method: &str,
        path: &str,
    ) -> Result<(u16, String, String)> {
        let request =
            format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\n\r\n");
        let response = self.run_inside(move || {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
                .with_context(|| format!("connecting to {address}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream
                .take(16 << 20)
                .read_to_string(&mut response)
                .with_context(|| format!("reading the response from {address}"))?;
            Ok(response)
        })?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("malformed HTTP response: {response}"))?;
        let status_line = head.lines().next().unwrap_or_default().to_owned();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .filter(|_| head.starts_with("HTTP/1."))
            .with_context(|| format!("malformed HTTP status line: {status_line}"))?;
        Ok((status, status_line, body.to_owned()))
    }

    /// Waits until a UDP socket is bound to `address` in this namespace while `alive`
    /// (the process expected to bind it) keeps succeeding.
    pub fn wait_for_udp_socket(
        &self,
        address: SocketAddr,
        limit: Duration,
        alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        self.wait_for_listening("udp", address, limit, alive)
    }

    /// Waits until a TCP socket listens on `address` in this namespace while `alive`
    /// keeps succeeding.
    pub fn wait_for_tcp_listener(
        &self,
        address: SocketAddr,
        limit: Duration,
        alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        self.wait_for_listening("tcp", address, limit, alive)
    }

    /// Waits until `ss` shows a `protocol` ("udp", "tcp") socket listening on `address`.
    fn wait_for_listening(
        &self,
        protocol: &str,
        address: SocketAddr,
        limit: Duration,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let wanted = address.to_string();
        let flag = if protocol == "tcp" { "-t" } else { "-u" };
        let deadline = Instant::now() + limit;
        loop {
            alive()?;
            let sockets = self.run("ss", &["-H", flag, "-l", "-n"])?;
            if sockets
                .lines()
                .any(|line| line.split_whitespace().any(|field| field == wanted))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nothing listens on {protocol} {wanted} in {} after {limit:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// One interface's `ip -j link` record.
    fn link(&self, interface: &str, statistics: bool) -> Result<serde_json::Value> {
        let mut args = vec!["-j"];
        if statistics {
            args.push("-s");
        }
        args.extend(["link", "show", "dev", interface]);
        let output = self.ip(&args)?;
        let value: serde_json::Value =
            serde_json::from_str(&output).context("parsing `ip -j link` output")?;
        Ok(value)
    }

    /// The MAC address of an interface.
    pub fn mac_address(&self, interface: &str) -> Result<[u8; 6]> {
        let link = self.link(interface, false)?;
        let text = link
            .pointer("/0/address")
            .and_then(serde_json::Value::as_str)
            .with_context(|| format!("no MAC address for {interface}"))?;
        parse_mac(text)
    }

    /// Frames an interface received (its rx_packets counter).
    pub fn rx_packets(&self, interface: &str) -> Result<u64> {
        self.link_counter(interface, "rx/packets")
    }

    /// Frames an interface dropped on transmit (its tx_dropped counter; on veth also the
    /// XDP frames redirected into it that its peer had no room for).
    pub fn tx_dropped(&self, interface: &str) -> Result<u64> {
        self.link_counter(interface, "tx/dropped")
    }

    /// The driver's own counters of an interface (`ethtool -S`), by name: on veth the
    /// per-queue XDP counters (`rx_queue_0_xdp_packets`, `rx_queue_0_xdp_redirect`,
    /// `rx_queue_0_xdp_drops`, `tx_queue_0_xdp_xmit_errors`, …). Non-numeric lines are
    /// left out.
    pub fn driver_counters(&self, interface: &str) -> Result<BTreeMap<String, u64>> {
        let output = self.run("ethtool", &["-S", interface])?;
        Ok(parse_driver_counters(&output))
    }

    /// Counter `name` (`rx/packets`, …) of `ip -s link`'s stats64.
    fn link_counter(&self, interface: &str, name: &str) -> Result<u64> {
        self.link(interface, true)?
            .pointer(&format!("/0/stats64/{name}"))
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {name} counter for {interface}"))
    }
}

/// `ethtool -S` output (`NIC statistics:` then `     name: value` lines) as a map.
fn parse_driver_counters(output: &str) -> BTreeMap<String, u64> {
    output
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    ensure!(parts.len() == 6, "unexpected MAC address {text}");
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC address {text}"))?;
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff` for `ip`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A network namespace with a unique name, deleted (with its interfaces and every process
/// still inside) on drop.
pub struct Netns {
    namespace: Namespace,
}

impl Netns {
    /// Creates `tr-<pid>-<n>-<role>` with its loopback up.
    pub fn create(role: &str) -> Result<Netns> {
        let name = unique_name(role);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Netns {
            namespace: Namespace { name },
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// A handle that outlives borrows of this owner (e.g. kept by a daemon guard).
    pub fn handle(&self) -> Namespace {
        self.namespace.clone()
    }
}

impl Deref for Netns {
    type Target = Namespace;

    fn deref(&self) -> &Namespace {
        &self.namespace
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside (a peer or daemon whose guard has not run) are ours.
        if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", &self.name])) {
            for pid in pids
                .split_whitespace()
                .filter_map(|pid| pid.parse::<libc::pid_t>().ok())
            {
                // SAFETY: plain kill(2) of a process this test started in its namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Err(error) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!(
                "could not delete network namespace {}: {error:#}",
                self.name
            );
        }
    }
}

/// Deletes namespaces left behind by earlier runs whose process no longer exists (a
/// benchmark killed with SIGKILL cannot clean up after itself).
pub fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIRECTORY) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(Command::new("ip").args(["netns", "del", &name]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_round_trip() {
        let mac = [0x02, 0, 0, 0, 0x01, 0xab];
        assert_eq!(format_mac(mac), "02:00:00:00:01:ab");
        assert_eq!(parse_mac("02:00:00:00:01:ab").expect("valid"), mac);
        assert!(parse_mac("02:00:00").is_err());
    }

    #[test]
    fn driver_counters_are_parsed_by_name() {
        let output =
            "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_packets: 12\n     \
                      tx_queue_0_xdp_xmit_errors: 3\n";
        let counters = parse_driver_counters(output);
        assert_eq!(counters.get("rx_queue_0_xdp_packets"), Some(&12));
        assert_eq!(counters.get("tx_queue_0_xdp_xmit_errors"), Some(&3));
        assert_eq!(counters.get("NIC statistics"), None);
    }
}
