//! The `turn-relay` daemon on loopback for the browser tests: listener and relayed
//! addresses on 127.0.0.1 (UDP and TCP on one port, TLS on another), XDP off, metrics
//! off, one static user.
//!
//! This is deliberately apart from the browser-driving code: when the browser tests move
//! into the shared testkit's network namespaces (Chromium under `ip netns exec` in a
//! client namespace, the relay in its own), this module is what gets replaced.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use turn_testkit::tls::TestCertificate;

/// Until the daemon answers a STUN Binding request on its listener.
const START_LIMIT: Duration = Duration::from_secs(8);
/// From SIGTERM until SIGKILL on drop.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Relay ports per daemon: the browser tests need two allocations at a time.
const PORTS_PER_RELAY: u16 = 100;

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A `turn-relay` process listening on `127.0.0.1:<free port>` (UDP and TCP) and TLS on
/// another port, relaying from 127.0.0.1. Stopped (SIGTERM, then SIGKILL) on drop; its
/// log is printed when the test is failing.
pub struct LoopbackRelay {
    process: Child,
    listen: SocketAddr,
    tls_listen: SocketAddr,
    port_range: RangeInclusive<u16>,
    directory: PathBuf,
    log_path: PathBuf,
}

impl LoopbackRelay {
    /// Writes a configuration with the static user `username`/`password` and TLS with
    /// `certificate`, starts the debug daemon with it and waits until it answers STUN and
    /// accepts TCP and TLS connections.
    pub fn start(
        username: &str,
        password: &str,
        certificate: &TestCertificate,
    ) -> Result<LoopbackRelay> {
        let binary = turn_testkit::daemon::daemon_binary()?;
        let serial = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let directory = std::env::temp_dir().join(format!(
            "turn-browser-relay-{}-{serial}",
            std::process::id()
        ));
        fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_udp_port()?);
        let tls_listen = SocketAddr::new(
            Ipv4Addr::LOCALHOST.into(),
            crate::chromium::free_loopback_port()?,
        );
        let port_range = unique_port_range(serial);
        let config_path = directory.join("turn-relay.toml");
        fs::write(
            &config_path,
            config(
                listen,
                tls_listen,
                certificate,
                &port_range,
                username,
                password,
            ),
        )
        .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = directory.join("turn-relay.log");
        let (stdout, stderr) = crate::output_to_file(&log_path)?;
        let process = Command::new(&binary)
            .env("NO_COLOR", "1")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut relay = LoopbackRelay {
            process,
            listen,
            tls_listen,
            port_range,
            directory,
            log_path,
        };
        relay
            .wait_until_answering()
            .with_context(|| format!("--- turn-relay log ---\n{}", relay.log()))?;
        Ok(relay)
    }

    /// The TURN server address (UDP and TCP).
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The TURN over TLS address.
    pub fn tls_listen(&self) -> SocketAddr {
        self.tls_listen
    }

    /// Whether `address` is one of this daemon's relayed transport addresses.
    pub fn relays_from(&self, address: SocketAddr) -> bool {
        address.ip() == Ipv4Addr::LOCALHOST && self.port_range.contains(&address.port())
    }

    /// Everything the daemon printed so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Fails (with the log) if the daemon has exited, e.g. crashed during the test.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.process.try_wait()? {
            bail!(
                "turn-relay exited ({status})\n--- turn-relay log ---\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// Sends STUN Binding requests (RFC 8489 §6) until one is answered.
    fn wait_until_answering(&mut self) -> Result<()> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let deadline = Instant::now() + START_LIMIT;
        let transaction: [u8; 12] = *b"browser-test";
        let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(&transaction);
        let mut reply = [0u8; 1500];
        loop {
            self.ensure_running()?;
            socket.send_to(&request, self.listen)?;
            if let Ok((length, from)) = socket.recv_from(&mut reply) {
                // A Binding success response (0x0101) to our transaction, and the stream
                // listeners (bound just after the UDP ones) accept connections.
                if from == self.listen
                    && length >= 20
                    && reply[..2] == [0x01, 0x01]
                    && reply[8..20] == transaction
                    && [self.listen, self.tls_listen].iter().all(|address| {
                        TcpStream::connect_timeout(address, Duration::from_millis(200)).is_ok()
                    })
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "turn-relay did not answer STUN on {} within {START_LIMIT:?}",
                    self.listen
                );
            }
        }
    }
}

impl Drop for LoopbackRelay {
    fn drop(&mut self) {
        let pid = self.process.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        if thread::panicking() {
            eprintln!("--- turn-relay log ---\n{}--- end of log ---", self.log());
        }
        let _ = fs::remove_dir_all(&self.directory);
    }
}

/// The daemon's configuration, in the keys of `config/turn-relay.toml`.
fn config(
    listen: SocketAddr,
    tls_listen: SocketAddr,
    certificate: &TestCertificate,
    port_range: &RangeInclusive<u16>,
    username: &str,
    password: &str,
) -> String {
    format!(
        r#"[server]
realm = "browser.turn-relay.test"
listen = ["{listen}"]
relay_address = "127.0.0.1"
port_range = "{}-{}"

[auth]
users = [{{ name = {}, password = {} }}]

[peers]
# The two browser peers' relayed addresses (127.0.0.1) reach each other through the relay
# (hairpin); loopback is denied by default.
allow = ["127.0.0.0/8"]

[xdp]
# Never attach to the host's loopback interface, which other tests share.
mode = "off"

[metrics]
listen = ""

[log]
level = "info"

[tls]
listen = ["{tls_listen}"]
cert = {}
key = {}
"#,
        port_range.start(),
        port_range.end(),
        toml_string(username),
        toml_string(password),
        toml_string(&certificate.cert.to_string_lossy()),
        toml_string(&certificate.key.to_string_lossy()),
    )
}

/// A TOML basic string (the test's own credentials: no control characters).
fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A UDP port on 127.0.0.1 that was free a moment ago (the daemon binds it next).
fn free_udp_port() -> Result<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(socket.local_addr()?.port())
}

/// Relay ports below the kernel's ephemeral range (32768–60999), different for each
/// daemon of this process and unlikely to meet another test process's.
fn unique_port_range(serial: usize) -> RangeInclusive<u16> {
    const FIRST: u32 = 20_000;
    const SLOTS: u32 = 120; // 20000–31999
    let slot = (std::process::id() + serial as u32) % SLOTS;
    let start = FIRST + slot * u32::from(PORTS_PER_RELAY);
    let start = u16::try_from(start).unwrap_or(20_000);
    start..=start + (PORTS_PER_RELAY - 1)
}
