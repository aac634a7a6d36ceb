//! Shared helpers for the end-to-end tests: network namespaces, the `turn-relay` daemon
//! as a child process, coturn's client tools (`turnutils_*`) as real TURN clients, and a
//! programmable TURN client and peer ([`turn_client`]) for tests that pause between steps.
//!
//! Every test builds its own namespaces (unique names, removed by a Drop guard even when
//! the test panics) and only uses addresses from the benchmarking ranges 198.18.0.0/15 and
//! 2001:2::/48. Every child process is bounded in time.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha512;

pub mod turn_client;

/// Client side of the client ↔ relay link.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// Relay side of the client ↔ relay link: the TURN listener address.
pub const RELAY_LISTEN_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// Relay side of the relay ↔ peer link: the relayed transport address.
pub const RELAY_RELAYED_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 1);
/// Peer side of the relay ↔ peer link.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 2);
/// IPv6 counterparts (2001:2::/48, RFC 5180 benchmarking range).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 2);
pub const RELAY_LISTEN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 1);
pub const RELAY_RELAYED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 1);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2);

/// The TURN port the daemon listens on in the tests.
pub const TURN_PORT: u16 = 3478;
/// The UDP port `turnutils_peer` echoes on.
pub const PEER_PORT: u16 = 3480;
/// Interface names inside the relay namespace (where XDP attaches).
pub const RELAY_CLIENT_SIDE_INTERFACE: &str = "to-client";
pub const RELAY_PEER_SIDE_INTERFACE: &str = "to-peer";

/// The daemon's Prometheus endpoint, on the relay namespace's loopback.
pub const METRICS_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9641);

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (in this or a concurrently running test process) uses.
fn unique_name(role: &str) -> String {
    format!(
        "tr-{}-{}-{role}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a privileged test may run. Without root it is skipped (returns false) — unless
/// `CI=true`, where a skip would hide a failure, so it panics instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{test} needs root (network namespaces, XDP); CI=true forbids skipping it");
    }
    eprintln!("skipping {test}: needs root (network namespaces, XDP)");
    false
}

/// How long a configuration command (ip, sysctl, ethtool, ss) may take.
const CONFIGURATION_COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Runs a short configuration command; fails with its output unless it succeeds in time.
fn run(command: &mut Command) -> Result<String> {
    let line = describe(command);
    let finished = run_bounded(command, CONFIGURATION_COMMAND_LIMIT)?;
    ensure!(
        finished.succeeded(),
        "`{line}` failed ({}): {}",
        finished.status.map_or_else(
            || "killed at its time limit".to_owned(),
            |status| status.to_string()
        ),
        finished.output()
    );
    Ok(finished.stdout)
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// The result of a child process run with a time limit.
#[derive(Debug)]
pub struct Finished {
    /// None when the time limit was hit and the process was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// stdout followed by stderr, for parsing and failure messages.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command`, killing it after `limit`; collects its output either way.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Result<Finished> {
    let line = describe(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for `{line}`"))?
        {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Already exited between the checks is fine; wait() reaps it either way.
            let _ = child.kill();
            child
                .wait()
                .with_context(|| format!("reaping `{line}` after its time limit"))?;
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn read_in_background<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error only truncates what the failure message shows.
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILLs. Returns the exit status.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: `pid` is our own child, not yet reaped (try_wait returned None).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// Turns a helper's error into a test failure showing the whole error chain (and, through
/// the guards' Drop, the daemon log).
pub trait OrFail<T> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T;
}

impl<T> OrFail<T> for Result<T> {
    #[track_caller]
    fn or_fail(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(error) => panic!("{what}: {error:#}"),
        }
    }
}

/// A network namespace deleted (with its interfaces and processes) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(role: &str) -> Result<Netns> {
        let name = unique_name(role);
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` prepared to run inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `program args` in the namespace to completion (short configuration commands).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        run(self.command(program).args(args))
    }

    /// Runs `work` on a thread that has joined this namespace (setns affects only the
    /// calling thread), e.g. to open sockets inside it.
    pub fn run_inside<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = Path::new("/run/netns").join(&self.name);
        let handle = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd; it changes only this new thread.
            let joined = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            ensure!(joined == 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread inside {} panicked", self.name))?
    }

    /// The body of `GET <path>` (HTTP/1.0) from `address` inside this namespace.
    pub fn http_get(&self, address: SocketAddr, path: &str) -> Result<String> {
        let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        let response = self.run_inside(move || {
            let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
                .with_context(|| format!("connecting to {address}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .with_context(|| format!("reading the response from {address}"))?;
            Ok(response)
        })?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .with_context(|| format!("malformed HTTP response: {response}"))?;
        ensure!(
            head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200"),
            "GET {path} from {address}: {head}"
        );
        Ok(body.to_owned())
    }

    /// Waits until a UDP socket is bound to `address` in this namespace while `alive`
    /// (the process expected to bind it) keeps succeeding.
    pub fn wait_for_udp_socket(
        &self,
        address: SocketAddr,
        limit: Duration,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        let wanted = address.to_string();
        let deadline = Instant::now() + limit;
        loop {
            alive()?;
            let sockets = self.run("ss", &["-H", "-u", "-l", "-n"])?;
            if sockets
                .lines()
                .any(|line| line.split_whitespace().any(|field| field == wanted))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nothing listens on udp {wanted} in {} after {limit:?}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
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

/// client ⇄ relay ⇄ peer, each in its own namespace, joined by two veth pairs:
///
/// ```text
/// client eth0 198.18.1.2 / 2001:2:0:1::2  ⇄  to-client 198.18.1.1 / 2001:2:0:1::1   (relay)
/// peer   eth0 198.19.1.2 / 2001:2:0:2::2  ⇄  to-peer   198.19.1.1 / 2001:2:0:2::1   (relay)
/// ```
///
/// What the XDP fast path needs is set up here:
/// - IP forwarding on in the relay namespace: `bpf_fib_lookup` answers "forwarding
///   disabled" otherwise and the program passes every frame to userspace. Client and
///   peer only ever send to the relay's own addresses, so nothing transits.
/// - GRO on the client's and peer's ends: a veth accepts frames redirected or XDP_TX'd
///   into it only with NAPI enabled on its receiving side.
/// - TX checksum offload off on every end: a same-host veth sender otherwise leaves only
///   the pseudo-header sum in UDP checksums, which XDP's incremental update would carry
///   into relayed frames.
pub struct Topology {
    // Field order is drop order: no namespace outlives a test.
    pub client: Netns,
    pub relay: Netns,
    pub peer: Netns,
}

impl Topology {
    pub fn new() -> Result<Topology> {
        let topology = Topology {
            client: Netns::create("client")?,
            relay: Netns::create("relay")?,
            peer: Netns::create("peer")?,
        };
        topology
            .connect(
                &topology.client,
                RELAY_CLIENT_SIDE_INTERFACE,
                (CLIENT_V4, RELAY_LISTEN_V4),
                (CLIENT_V6, RELAY_LISTEN_V6),
            )
            .context("wiring client ⇄ relay")?;
        topology
            .connect(
                &topology.peer,
                RELAY_PEER_SIDE_INTERFACE,
                (PEER_V4, RELAY_RELAYED_V4),
                (PEER_V6, RELAY_RELAYED_V6),
            )
            .context("wiring peer ⇄ relay")?;
        topology.relay.run(
            "sysctl",
            &[
                "-q",
                "-w",
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
        )?;
        Ok(topology)
    }

    /// A veth pair `eth0` (in `outer`) ⇄ `relay_interface` (in the relay namespace), with
    /// /24 and /64 addresses and default routes from `outer` via the relay.
    fn connect(
        &self,
        outer: &Netns,
        relay_interface: &str,
        (outer_v4, relay_v4): (Ipv4Addr, Ipv4Addr),
        (outer_v6, relay_v6): (Ipv6Addr, Ipv6Addr),
    ) -> Result<()> {
        outer.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            relay_interface,
            "netns",
            self.relay.name(),
        ])?;
        for (netns, interface, v4, v6) in [
            (outer, "eth0", outer_v4, outer_v6),
            (&self.relay, relay_interface, relay_v4, relay_v6),
        ] {
            netns.ip(&["addr", "add", &format!("{v4}/24"), "dev", interface])?;
            netns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                interface,
                "nodad",
            ])?;
            netns.ip(&["link", "set", interface, "up"])?;
            netns.run("ethtool", &["-K", interface, "tx", "off"])?;
        }
        outer.run("ethtool", &["-K", "eth0", "gro", "on"])?;
        outer.ip(&["route", "add", "default", "via", &relay_v4.to_string()])?;
        outer.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &relay_v6.to_string(),
        ])?;
        Ok(())
    }
}

/// A background process killed (SIGTERM, then SIGKILL) on drop.
pub struct Background {
    child: Child,
    description: String,
}

impl Background {
    fn spawn(command: &mut Command, output: Stdio, errors: Stdio) -> Result<Background> {
        let description = describe(command);
        let child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .with_context(|| format!("could not start `{description}`"))?;
        Ok(Background { child, description })
    }

    /// Fails if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self
            .child
            .try_wait()
            .with_context(|| format!("checking `{}`", self.description))?
        {
            None => Ok(()),
            Some(status) => bail!("`{}` exited ({status})", self.description),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

/// coturn's `turnutils_peer`: a UDP echo server in the peer namespace.
pub fn start_peer(netns: &Netns, address: IpAddr) -> Result<Background> {
    let mut peer = Background::spawn(
        netns.command("turnutils_peer").args([
            "-L",
            &address.to_string(),
            "-p",
            &PEER_PORT.to_string(),
        ]),
        Stdio::null(),
        Stdio::null(),
    )?;
    netns.wait_for_udp_socket(
        SocketAddr::new(address, PEER_PORT),
        Duration::from_secs(10),
        || peer.ensure_running(),
    )?;
    Ok(peer)
}

/// Workspace root (this crate lives in `<root>/tests`).
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The debug `turn-relay` binary, built (or brought up to date) once per test process:
/// `cargo test` builds binaries only for the package under test, not for this crate's
/// tests, and cargo releases its build lock before running tests, so building here works.
/// `TURN_RELAY_BIN` overrides the path (and skips the build).
pub fn daemon_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_or_build_daemon().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_or_build_daemon() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TURN_RELAY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = run_bounded(
        Command::new(cargo).current_dir(&root).args([
            "build",
            "-p",
            "turn-userspace",
            "--bin",
            "turn-relay",
        ]),
        Duration::from_secs(1800),
    )?;
    ensure!(
        build.succeeded(),
        "building turn-relay failed ({:?}):\n{}",
        build.status,
        build.stderr
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    let binary = target.join("debug").join("turn-relay");
    ensure!(
        binary.exists(),
        "{} missing after the build",
        binary.display()
    );
    Ok(binary)
}

/// A static long-term credential user.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
}

/// How the daemon runs XDP in a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xdp {
    /// `mode = "auto"` on both relay-side interfaces (native, else generic).
    Auto,
    /// `mode = "native"` on both relay-side interfaces: driver mode or not at all (the
    /// daemon then relays in userspace and reports `turn_xdp_attached 0`).
    Native,
    /// `mode = "off"`: everything relays in userspace.
    Off,
}

/// The daemon configuration a test runs with, rendered to the documented TOML keys.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub realm: String,
    pub users: Vec<User>,
    pub auth_secrets: Vec<String>,
    pub zrest_secrets: Vec<String>,
    pub xdp: Xdp,
    pub ipv6: bool,
    /// `[server] permission_lifetime` in seconds (daemon default 300 when None).
    pub permission_lifetime: Option<u32>,
    /// `[server] channel_lifetime` in seconds (daemon default 600 when None).
    pub channel_lifetime: Option<u32>,
}

impl RelayConfig {
    pub fn new(xdp: Xdp) -> RelayConfig {
        RelayConfig {
            realm: "e2e.turn-relay.test".into(),
            users: Vec::new(),
            auth_secrets: Vec::new(),
            zrest_secrets: Vec::new(),
            xdp,
            ipv6: false,
            permission_lifetime: None,
            channel_lifetime: None,
        }
    }

    /// Permissions expire `seconds` (≥ 1) after their last CreatePermission/ChannelBind.
    pub fn with_permission_lifetime(mut self, seconds: u32) -> RelayConfig {
        self.permission_lifetime = Some(seconds);
        self
    }

    /// Channel bindings expire `seconds` (≥ 1) after their last ChannelBind.
    pub fn with_channel_lifetime(mut self, seconds: u32) -> RelayConfig {
        self.channel_lifetime = Some(seconds);
        self
    }

    pub fn with_user(mut self, name: &str, password: &str) -> RelayConfig {
        self.users.push(User {
            name: name.into(),
            password: password.into(),
        });
        self
    }

    pub fn with_auth_secret(mut self, secret: &str) -> RelayConfig {
        self.auth_secrets.push(secret.into());
        self
    }

    pub fn with_zrest_secret(mut self, secret: &str) -> RelayConfig {
        self.zrest_secrets.push(secret.into());
        self
    }

    /// Also listen and relay on IPv6.
    pub fn with_ipv6(mut self) -> RelayConfig {
        self.ipv6 = true;
        self
    }

    /// The listener addresses this configuration opens.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        let mut listeners = vec![SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT)];
        if self.ipv6 {
            listeners.push(SocketAddr::new(RELAY_LISTEN_V6.into(), TURN_PORT));
        }
        listeners
    }

    pub fn to_toml(&self) -> String {
        let mut text = String::new();
        let listen: Vec<String> = self
            .listeners()
            .iter()
            .map(|address| toml_string(&address.to_string()))
            .collect();
        let _ = writeln!(text, "[server]");
        let _ = writeln!(text, "realm = {}", toml_string(&self.realm));
        let _ = writeln!(text, "listen = [{}]", listen.join(", "));
        let _ = writeln!(text, "relay_address = \"{RELAY_RELAYED_V4}\"");
        if self.ipv6 {
            let _ = writeln!(text, "relay_address_v6 = \"{RELAY_RELAYED_V6}\"");
        }
        if let Some(seconds) = self.permission_lifetime {
            let _ = writeln!(text, "permission_lifetime = {seconds}");
        }
        if let Some(seconds) = self.channel_lifetime {
            let _ = writeln!(text, "channel_lifetime = {seconds}");
        }
        let _ = writeln!(text, "\n[auth]");
        let users: Vec<String> = self
            .users
            .iter()
            .map(|user| {
                format!(
                    "{{ name = {}, password = {} }}",
                    toml_string(&user.name),
                    toml_string(&user.password)
                )
            })
            .collect();
        let _ = writeln!(text, "users = [{}]", users.join(", "));
        let _ = writeln!(text, "auth_secrets = [{}]", toml_list(&self.auth_secrets));
        let _ = writeln!(text, "zrest_secrets = [{}]", toml_list(&self.zrest_secrets));
        // The test networks (RFC 2544 benchmarking ranges) are denied to peers by default.
        let _ = writeln!(
            text,
            "\n[peers]\nallow = [\"198.18.0.0/15\", \"2001:2::/48\"]"
        );
        let _ = writeln!(text, "\n[xdp]");
        let mode = match self.xdp {
            Xdp::Auto => "auto",
            Xdp::Native => "native",
            Xdp::Off => "off",
        };
        let _ = writeln!(text, "mode = \"{mode}\"");
        if self.xdp != Xdp::Off {
            let _ = writeln!(
                text,
                "interfaces = [\"{RELAY_CLIENT_SIDE_INTERFACE}\", \"{RELAY_PEER_SIDE_INTERFACE}\"]"
            );
        }
        let _ = writeln!(text, "\n[metrics]\nlisten = \"{METRICS_ADDRESS}\"");
        let _ = writeln!(text, "\n[log]\nlevel = \"info\"");
        text
    }
}

fn toml_string(value: &str) -> String {
    let mut quoted = String::from("\"");
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            other => quoted.push(other),
        }
    }
    quoted.push('"');
    quoted
}

fn toml_list(values: &[String]) -> String {
    values
        .iter()
        .map(|value| toml_string(value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `turn-relay` daemon running in the relay namespace. Stopped (SIGTERM, then
/// SIGKILL) on drop; its log is printed when the test is failing.
pub struct Daemon<'topology> {
    relay: &'topology Netns,
    process: Background,
    directory: PathBuf,
    log_path: PathBuf,
}

impl<'topology> Daemon<'topology> {
    /// Writes `config` into a fresh directory, starts the daemon with it and waits until
    /// every listener is bound.
    pub fn start(relay: &'topology Netns, config: &RelayConfig) -> Result<Daemon<'topology>> {
        let binary = daemon_binary()?;
        let directory = std::env::temp_dir().join(unique_name("daemon"));
        fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let config_path = directory.join("turn-relay.toml");
        fs::write(&config_path, config.to_toml())
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = directory.join("turn-relay.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_for_stderr = log
            .try_clone()
            .with_context(|| format!("duplicating {}", log_path.display()))?;
        let process = Background::spawn(
            relay
                .command(&binary.to_string_lossy())
                .env("NO_COLOR", "1")
                .arg("--config")
                .arg(&config_path),
            Stdio::from(log),
            Stdio::from(log_for_stderr),
        )?;
        let mut daemon = Daemon {
            relay,
            process,
            directory,
            log_path,
        };
        for listener in config.listeners() {
            let ready = relay.wait_for_udp_socket(listener, Duration::from_secs(20), || {
                daemon.process.ensure_running()
            });
            if let Err(error) = ready {
                bail!(
                    "daemon did not come up: {error:#}\n--- daemon log ---\n{}",
                    daemon.log()
                );
            }
        }
        Ok(daemon)
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The Prometheus text of the daemon's `/metrics` endpoint.
    pub fn metrics(&self) -> Result<Metrics> {
        self.relay
            .http_get(METRICS_ADDRESS, "/metrics")
            .map(Metrics)
            .with_context(|| format!("--- daemon log ---\n{}", self.log()))
    }

    /// The daemon's metrics once `settled` holds for them, or the last reading after
    /// `limit`: the daemon publishes its counters periodically (every second), so a
    /// reading right after traffic may lag behind it.
    pub fn metrics_when(
        &self,
        limit: Duration,
        mut settled: impl FnMut(&Metrics) -> bool,
    ) -> Result<Metrics> {
        let deadline = Instant::now() + limit;
        loop {
            let metrics = self.metrics()?;
            if settled(&metrics) || Instant::now() >= deadline {
                return Ok(metrics);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Fails (with the log) if the daemon has exited, e.g. crashed during the test.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.process
            .ensure_running()
            .with_context(|| format!("--- daemon log ---\n{}", self.log()))
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            // Read while the daemon still runs: its counters show where packets went.
            match self.relay.http_get(METRICS_ADDRESS, "/metrics") {
                Ok(metrics) => eprintln!("--- turn-relay metrics ---\n{metrics}"),
                Err(error) => eprintln!("--- turn-relay metrics unavailable: {error:#}"),
            }
        }
        terminate(&mut self.process.child, Duration::from_secs(10));
        if thread::panicking() {
            eprintln!("--- turn-relay log ---\n{}--- end of log ---", self.log());
        }
        let _ = fs::remove_dir_all(&self.directory);
    }
}

/// coturn's `turnserver` in the relay namespace with one static user: the reference
/// server that shows the harness itself (topology, peer, uclient parsing) works.
/// Stopped, and its pid file removed, on drop.
pub struct Coturn {
    process: Background,
    pid_file: PathBuf,
}

impl Coturn {
    pub fn start(relay: &Netns, user: &User, realm: &str) -> Result<Coturn> {
        let pid_file = std::env::temp_dir().join(format!("{}.pid", unique_name("coturn")));
        let mut process = Background::spawn(
            relay.command("turnserver").args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--lt-cred-mech",
                "--listening-ip",
                &RELAY_LISTEN_V4.to_string(),
                "--relay-ip",
                &RELAY_RELAYED_V4.to_string(),
                "--realm",
                realm,
                "--user",
                &format!("{}:{}", user.name, user.password),
                "--log-file",
                "stdout",
                "--pidfile",
                &pid_file.to_string_lossy(),
            ]),
            Stdio::null(),
            Stdio::null(),
        )?;
        relay.wait_for_udp_socket(
            SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT),
            Duration::from_secs(10),
            || process.ensure_running(),
        )?;
        Ok(Coturn { process, pid_file })
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        terminate(&mut self.process.child, Duration::from_secs(5));
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// A Prometheus text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum over all series of `name` (any labels), or None when no series exists.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.sum_with_label(name, "")
    }

    /// The sum over the series of `name` whose labels include `label` (`key="value"`;
    /// empty matches every series), or None when no such series exists.
    pub fn sum_with_label(&self, name: &str, label: &str) -> Option<f64> {
        let mut total = None;
        for line in self.0.lines().filter(|line| !line.starts_with('#')) {
            let Some(rest) = line.strip_prefix(name) else {
                continue;
            };
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled
                    .rsplit_once('}')
                    .filter(|(labels, _)| {
                        labels.split(',').any(|pair| pair == label) || label.is_empty()
                    })
                    .map(|(_, value)| value)
            } else if rest.starts_with(' ') && label.is_empty() {
                Some(rest)
            } else {
                None
            };
            let Some(value) = value
                .and_then(|value| value.split_whitespace().next())
                .and_then(|value| value.parse::<f64>().ok())
            else {
                continue;
            };
            total = Some(total.unwrap_or(0.0) + value);
        }
        total
    }
}

/// `turnutils_stunclient <server>` from `netns`; returns the reflexive address it learnt.
pub fn stun_binding(netns: &Netns, server: IpAddr) -> Result<SocketAddr> {
    let finished = run_bounded(
        netns.command("turnutils_stunclient").args([
            "-p",
            &TURN_PORT.to_string(),
            &server.to_string(),
        ]),
        Duration::from_secs(20),
    )?;
    let output = finished.output();
    ensure!(
        finished.succeeded(),
        "turnutils_stunclient failed ({:?}):\n{output}",
        finished.status
    );
    output
        .lines()
        .find_map(|line| {
            line.split_once("reflexive addr:")
                .and_then(|(_, address)| address.trim().parse().ok())
        })
        .with_context(|| format!("no reflexive address in turnutils_stunclient output:\n{output}"))
}

/// How `turnutils_uclient` authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// `-u name -w password` (static user, or precomputed REST/zrest credentials).
    Password { username: String, password: String },
    /// `-u name -W secret`: uclient computes `expiry:name` / HMAC-SHA1 itself.
    AuthSecret { username: String, secret: String },
}

/// One `turnutils_uclient` run.
#[derive(Clone, Debug)]
pub struct Uclient {
    pub server: IpAddr,
    pub credentials: Credentials,
    /// Peer address (`-e`); ignored by uclient in client-to-client mode.
    pub peer: IpAddr,
    pub clients: u32,
    pub messages: u32,
    pub message_length: u32,
    pub send_indications: bool,
    pub client_to_client: bool,
    pub ipv6_relay: bool,
    pub time_limit: Duration,
}

impl Uclient {
    /// IPv4 client → relay → peer, one client, 20 messages of 100 bytes over channels.
    pub fn new(credentials: Credentials) -> Uclient {
        Uclient {
            server: RELAY_LISTEN_V4.into(),
            credentials,
            peer: PEER_V4.into(),
            clients: 1,
            messages: 20,
            message_length: 100,
            send_indications: false,
            client_to_client: false,
            ipv6_relay: false,
            time_limit: Duration::from_secs(60),
        }
    }

    pub fn arguments(&self) -> Vec<String> {
        let mut arguments: Vec<String> = Vec::new();
        if self.send_indications {
            arguments.push("-s".into());
        }
        if self.client_to_client {
            arguments.push("-y".into());
        }
        if self.ipv6_relay {
            arguments.push("-x".into());
        }
        match &self.credentials {
            Credentials::Password { username, password } => {
                arguments.extend(["-u".into(), username.clone(), "-w".into(), password.clone()]);
            }
            Credentials::AuthSecret { username, secret } => {
                arguments.extend(["-u".into(), username.clone(), "-W".into(), secret.clone()]);
            }
        }
        arguments.extend([
            "-m".into(),
            self.clients.to_string(),
            "-n".into(),
            self.messages.to_string(),
            "-l".into(),
            self.message_length.to_string(),
            "-e".into(),
            self.peer.to_string(),
            "-r".into(),
            PEER_PORT.to_string(),
            "-p".into(),
            TURN_PORT.to_string(),
            self.server.to_string(),
        ]);
        arguments
    }

    /// Runs uclient in `netns` within the time limit and parses its statistics.
    pub fn run(&self, netns: &Netns) -> Result<UclientReport> {
        let finished = run_bounded(
            netns.command("turnutils_uclient").args(self.arguments()),
            self.time_limit,
        )?;
        Ok(UclientReport::parse(finished))
    }
}

/// What `turnutils_uclient` reported. Counts are None when uclient did not print them
/// (it stops before the statistics when allocation fails).
#[derive(Debug)]
pub struct UclientReport {
    pub finished: Finished,
    pub sent_messages: Option<u64>,
    pub received_messages: Option<u64>,
    pub lost_packets: Option<u64>,
}

impl UclientReport {
    pub fn parse(finished: Finished) -> UclientReport {
        let output = finished.output();
        UclientReport {
            sent_messages: number_after(&output, "tot_send_msgs="),
            received_messages: number_after(&output, "tot_recv_msgs="),
            lost_packets: number_after(&output, "Total lost packets "),
            finished,
        }
    }

    /// Fails unless uclient exited successfully having sent at least `minimum_sent`
    /// messages and got every one of them back (0 % loss). uclient's totals count every
    /// session (RTP and RTCP, both ends with `-y`), so only a lower bound is fixed.
    pub fn ensure_lossless(&self, minimum_sent: u64) -> Result<()> {
        let output = self.finished.output();
        ensure!(
            self.finished.succeeded(),
            "turnutils_uclient failed ({}):\n{output}",
            match self.finished.status {
                Some(status) => status.to_string(),
                None => "killed at its time limit".into(),
            }
        );
        let sent = self.sent_messages.unwrap_or(0);
        ensure!(
            sent >= minimum_sent,
            "expected at least {minimum_sent} messages sent, uclient reported {:?}:\n{output}",
            self.sent_messages
        );
        ensure!(
            self.received_messages == Some(sent) && self.lost_packets == Some(0),
            "packet loss: received {:?} of {sent}, lost {:?}:\n{output}",
            self.received_messages,
            self.lost_packets
        );
        Ok(())
    }

    /// Whether any relayed data came back.
    pub fn relayed_anything(&self) -> bool {
        self.received_messages.is_some_and(|received| received > 0)
    }
}

/// The unsigned integer following the last occurrence of `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(marker)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Unix time now (for REST-style credential expiry).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Wire/restund zrest username `d=<expiry>.v=1.k=<key index>.t=s.r=<random>`.
pub fn zrest_username(expiry_unix_secs: u64, key_index: usize, random: &str) -> String {
    format!("d={expiry_unix_secs}.v=1.k={key_index}.t=s.r={random}")
}

/// Wire/restund zrest password: base64(HMAC-SHA512(secret, username)).
pub fn zrest_password(secret: &str, username: &str) -> Result<String> {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).context("HMAC-SHA512 key")?;
    mac.update(username.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uclient_statistics_are_parsed_from_its_log_lines() {
        let output = "0: Total connect time is 0\n\
            1: start_mclient: tot_send_msgs=40, tot_recv_msgs=39\n\
            1: start_mclient: tot_send_bytes ~ 4000, tot_recv_bytes ~ 3900\n\
            1: Total transmit time is 1\n\
            1: Total lost packets 1 (2.500000%), total send dropped 0 (0.000000%)\n";
        let report = UclientReport::parse(Finished {
            status: None,
            stdout: output.into(),
            stderr: String::new(),
        });
        assert_eq!(report.sent_messages, Some(40));
        assert_eq!(report.received_messages, Some(39));
        assert_eq!(report.lost_packets, Some(1));
        assert!(report.ensure_lossless(20).is_err());
    }

    #[test]
    fn metric_series_are_summed_across_labels() {
        let metrics = Metrics(
            "# HELP relayed_packets_total Relayed.\n\
             # TYPE relayed_packets_total counter\n\
             relayed_packets_total{direction=\"to_peer\"} 3\n\
             relayed_packets_total{direction=\"to_client\"} 4\n\
             relayed_packets_total_other 100\n\
             allocations 2\n"
                .into(),
        );
        assert_eq!(metrics.sum("relayed_packets_total"), Some(7.0));
        assert_eq!(metrics.sum("allocations"), Some(2.0));
        assert_eq!(metrics.sum("missing"), None);
        assert_eq!(
            metrics.sum_with_label("relayed_packets_total", "direction=\"to_client\""),
            Some(4.0)
        );
        assert_eq!(
            metrics.sum_with_label("relayed_packets_total", "direction=\"sideways\""),
            None
        );
    }

    #[test]
    fn config_renders_the_documented_keys() {
        let text = RelayConfig::new(Xdp::Auto)
            .with_user("alice", "pa\"ss")
            .with_auth_secret("s1")
            .with_ipv6()
            .to_toml();
        assert!(text.contains("listen = [\"198.18.1.1:3478\", \"[2001:2:0:1::1]:3478\"]"));
        assert!(text.contains("relay_address = \"198.19.1.1\""));
        assert!(text.contains("relay_address_v6 = \"2001:2:0:2::1\""));
        assert!(text.contains("users = [{ name = \"alice\", password = \"pa\\\"ss\" }]"));
        assert!(text.contains("auth_secrets = [\"s1\"]"));
        assert!(text.contains("interfaces = [\"to-client\", \"to-peer\"]"));
    }

    #[test]
    fn rendered_config_is_what_the_daemon_parses() {
        let text = RelayConfig::new(Xdp::Native)
            .with_user("alice", "secret")
            .with_permission_lifetime(2)
            .with_channel_lifetime(7)
            .to_toml();
        let config = turn_relay::daemon::config::Config::parse(&text, "test")
            .unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(config.permission_lifetime, Duration::from_secs(2));
        assert_eq!(config.channel_lifetime, Duration::from_secs(7));
        assert_eq!(config.xdp_mode, turn_relay::bpf::XdpMode::Native);
        assert_eq!(
            config.xdp_interfaces,
            [RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE]
        );
        let defaults = turn_relay::daemon::config::Config::parse(
            &RelayConfig::new(Xdp::Off).to_toml(),
            "test",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(defaults.permission_lifetime, Duration::from_secs(300));
        assert_eq!(defaults.xdp_mode, turn_relay::bpf::XdpMode::Off);
    }

    #[test]
    fn zrest_password_is_base64_hmac_sha512_of_the_username() {
        let username = zrest_username(1_700_000_000, 0, "abc");
        assert_eq!(username, "d=1700000000.v=1.k=0.t=s.r=abc");
        // python3: base64.b64encode(hmac.new(b"zrest-secret", username, sha512).digest())
        assert_eq!(
            zrest_password("zrest-secret", &username).expect("password"),
            "GJbap/h7Je2BZQ7ySvtZPW5ZeJ0m4U33ThoD2MzpRfXa5FAzXUvDnYmBnxkOSbBjg+dECSfPI5twVvC2Ss99tQ=="
        );
    }
}
