//! Packet captures: `tcpdump` writing one interface's UDP datagrams of one namespace to a
//! file, and `tshark` reading them back with their addresses and checksum verdicts.
//!
//! Frames an XDP program redirects or transmits never pass the sending host's packet
//! taps, so what a relay emitted is captured where it arrives: on the receiving
//! namespace's interface, inbound.

use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::Namespace;
use crate::process::{run_bounded, Background};

/// How long tcpdump may take to start listening, and tshark to read a file.
const START_LIMIT: Duration = Duration::from_secs(10);
const READ_LIMIT: Duration = Duration::from_secs(60);

/// Which packets of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the interface.
    In,
    /// Both directions.
    Both,
}

/// A running `tcpdump` of UDP on one interface; stopped (SIGINT, which flushes the file)
/// by [`Capture::stop`] or on drop.
pub struct Capture {
    process: Background,
    file: PathBuf,
    /// tcpdump's standard error: "listening on", then its counts once stopped.
    log: PathBuf,
}

impl Capture {
    /// Starts capturing UDP on `interface` of `netns` into `<directory>/<name>.pcap` and
    /// waits until tcpdump listens.
    pub fn start(
        netns: &Namespace,
        interface: &str,
        direction: Direction,
        directory: &Path,
        name: &str,
    ) -> Result<Capture> {
        let file = directory.join(format!("{name}.pcap"));
        let log = directory.join(format!("{name}.log"));
        let mut command = netns.command("tcpdump");
        // A 16 MiB capture buffer (the file is read only once tcpdump has stopped):
        // bursts of relayed frames must not outrun the capture, or frames that were
        // relayed look lost. Immediate mode: each frame is handed to tcpdump as it
        // arrives, not in blocks the kernel hands over only when full or after a
        // timeout, so that none is still in the kernel's ring when tcpdump stops.
        command.args([
            "-i",
            interface,
            "-n",
            "-B",
            "16384",
            "-s",
            "256",
            "--immediate-mode",
        ]);
        if direction == Direction::In {
            command.args(["-Q", "in"]);
        }
        command.arg("-w").arg(&file).arg("udp");
        let mut process = Background::spawn(
            &mut command,
            Stdio::null(),
            Stdio::from(File::create(&log)?),
        )
        .context("starting tcpdump")?
        .stopped_by_sigint();
        let deadline = Instant::now() + START_LIMIT;
        while !fs::read_to_string(&log)?.contains("listening on") {
            if let Err(error) = process.ensure_running() {
                bail!("{error:#}: {}", fs::read_to_string(&log)?);
            }
            ensure!(Instant::now() < deadline, "tcpdump did not start listening");
            thread::sleep(Duration::from_millis(50));
        }
        Ok(Capture { process, file, log })
    }

    /// Stops tcpdump and returns the capture file; fails if tcpdump reports frames the
    /// kernel dropped before it could read them (the file then lacks frames that went
    /// by, and a count of them proves nothing).
    pub fn stop(mut self) -> Result<PathBuf> {
        self.process.stop();
        let log = fs::read_to_string(&self.log)
            .with_context(|| format!("reading {}", self.log.display()))?;
        let dropped = kernel_drops(&log).with_context(|| {
            format!("tcpdump printed no counts in {}: {log}", self.log.display())
        })?;
        ensure!(
            dropped == 0,
            "tcpdump lost {dropped} frames (dropped by the kernel) writing {}: {log}",
            self.file.display()
        );
        Ok(self.file.clone())
    }
}

/// The "N packets dropped by kernel" tcpdump prints when it stops.
fn kernel_drops(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|line| line.trim().strip_suffix(" packets dropped by kernel"))
        .and_then(|count| count.trim().parse().ok())
}

/// One captured UDP datagram (not one quoted inside an ICMP error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// tshark found the IPv4 header or the UDP checksum wrong.
    pub bad_checksum: bool,
}

/// Every UDP datagram in a capture file, in order, with tshark checking the IPv4 header
/// and UDP checksums.
pub fn datagrams(file: &Path) -> Result<Vec<Datagram>> {
    let finished = run_bounded(
        tshark_checking_checksums(file).args([
            "-Y",
            "udp && !icmp && !icmpv6",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "ip.checksum.status",
            "-e",
            "udp.checksum.status",
        ]),
        READ_LIMIT,
    )?;
    ensure!(
        finished.succeeded(),
        "tshark -r {} failed: {}",
        file.display(),
        finished.output()
    );
    finished
        .stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| parse_fields(line).with_context(|| format!("tshark line {line:?}")))
        .collect()
}

/// How many frames of `file` match the display `filter` (checksums checked, so
/// `udp.checksum.status == "Bad"` finds the wrong ones).
pub fn count_frames(file: &Path, filter: &str) -> Result<u64> {
    let finished = run_bounded(
        tshark_checking_checksums(file).args(["-Y", filter, "-T", "fields", "-e", "frame.number"]),
        READ_LIMIT,
    )?;
    ensure!(
        finished.succeeded(),
        "tshark -Y {filter:?} failed: {}",
        finished.output()
    );
    Ok(finished
        .stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .count() as u64)
}

/// tshark reading `file` with the IPv4 header and UDP checksums checked (both are off by
/// default).
fn tshark_checking_checksums(file: &Path) -> Command {
    let mut command = Command::new("tshark");
    command
        .args([
            "-n",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-r",
        ])
        .arg(file);
    command
}

/// `ip.src|ipv6.src|ip.dst|ipv6.dst|sport|dport|ip checksum status|udp checksum status`.
fn parse_fields(line: &str) -> Result<Datagram> {
    let fields: Vec<&str> = line.split('|').collect();
    ensure!(fields.len() == 8, "expected 8 fields");
    let address = |v4: &str, v6: &str| -> Result<IpAddr> {
        let text = if v4.is_empty() { v6 } else { v4 };
        // A tunnelled datagram lists every header's address; the outer one comes first.
        let first = text.split(',').next().unwrap_or_default();
        first
            .parse()
            .with_context(|| format!("not an address: {text:?}"))
    };
    let port = |text: &str| -> Result<u16> {
        text.split(',')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("not a port: {text:?}"))
    };
    // tshark's checksum status: 0 bad, 1 good, 2 unverified (e.g. a zero UDP checksum).
    let bad = |status: &str| status.split(',').any(|value| value == "0");
    Ok(Datagram {
        source: SocketAddr::new(address(fields[0], fields[1])?, port(fields[4])?),
        destination: SocketAddr::new(address(fields[2], fields[3])?, port(fields[5])?),
        bad_checksum: bad(fields[6]) || bad(fields[7]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tshark_fields_become_datagrams() {
        let v4 = parse_fields("198.19.1.1||198.19.1.2||50000|3480|1|1").expect("parses");
        assert_eq!(
            (v4.source, v4.destination, v4.bad_checksum),
            (
                "198.19.1.1:50000".parse().expect("addr"),
                "198.19.1.2:3480".parse().expect("addr"),
                false
            )
        );
        let v6 = parse_fields("|2001:2:0:2::1||2001:2:0:2::2|50000|3480||0").expect("parses");
        assert_eq!(
            v6.destination,
            "[2001:2:0:2::2]:3480".parse().expect("addr")
        );
        assert!(v6.bad_checksum);
        assert!(parse_fields("198.19.1.1|x").is_err());
    }

    #[test]
    fn tcpdump_counts_give_the_kernel_drops() {
        let log = "tcpdump: listening on eth0, link-type EN10MB (Ethernet), snapshot length 256 bytes\n\
                   1204 packets captured\n1210 packets received by filter\n6 packets dropped by kernel\n";
        assert_eq!(kernel_drops(log), Some(6));
        assert_eq!(kernel_drops("tcpdump: listening on eth0\n"), None);
    }
}
