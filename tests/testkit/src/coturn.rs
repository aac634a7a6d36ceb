//! coturn's tools as real clients and reference server: `turnutils_stunclient`,
//! `turnutils_uclient`, `turnutils_peer` and `turnserver`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::addresses::{
    PEER_PORT, PEER_V4, RELAY_LISTEN_V4, RELAY_RELAYED_V4, TLS_PORT, TURN_PORT,
};
use crate::config::User;
use crate::netns::Namespace;
use crate::privilege::unique_name;
use crate::process::{run_bounded, Background, Finished};

/// How long coturn's server and peer may take to bind their sockets.
const START_LIMIT: Duration = Duration::from_secs(10);

/// `turnutils_stunclient <server>` from `netns`; returns the reflexive address it learnt.
pub fn stun_binding(netns: &Namespace, server: IpAddr) -> Result<SocketAddr> {
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

/// coturn's `turnutils_peer`: a UDP echo server on `address` in the peer namespace.
pub fn start_peer(netns: &Namespace, address: IpAddr) -> Result<Background> {
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
    netns.wait_for_udp_socket(SocketAddr::new(address, PEER_PORT), START_LIMIT, || {
        peer.ensure_running()
    })?;
    Ok(peer)
}

/// How `turnutils_uclient` authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// `-u name -w password` (static user, or precomputed REST/zrest credentials).
    Password { username: String, password: String },
    /// `-u name -W secret`: uclient computes `expiry:name` / HMAC-SHA1 itself.
    AuthSecret { username: String, secret: String },
}

impl From<&User> for Credentials {
    fn from(user: &User) -> Credentials {
        Credentials::Password {
            username: user.name.clone(),
            password: user.password.clone(),
        }
    }
}

/// How `turnutils_uclient` reaches the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UclientTransport {
    Udp,
    /// `-t`: TURN over TCP on port 3478.
    Tcp,
    /// `-t -S`: TURN over TLS on port 5349 (uclient does not verify the certificate).
    Tls,
}

/// One `turnutils_uclient` run.
#[derive(Clone, Debug)]
pub struct Uclient {
    pub transport: UclientTransport,
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
    /// No RTCP allocation per session (`-c`): no EVEN-PORT reservation redeemed by a
    /// second socket.
    pub no_rtcp: bool,
    /// Per-session send interval in ms (`-z`); uclient's default when None.
    pub send_interval_ms: Option<u32>,
    pub time_limit: Duration,
}

impl Uclient {
    /// IPv4 client → relay → peer, one client, 20 messages of 100 bytes over channels.
    pub fn new(credentials: Credentials) -> Uclient {
        Uclient {
            transport: UclientTransport::Udp,
            server: RELAY_LISTEN_V4.into(),
            credentials,
            peer: PEER_V4.into(),
            clients: 1,
            messages: 20,
            message_length: 100,
            send_indications: false,
            client_to_client: false,
            ipv6_relay: false,
            no_rtcp: false,
            send_interval_ms: None,
            time_limit: Duration::from_secs(60),
        }
    }

    pub fn arguments(&self) -> Vec<String> {
        let mut arguments: Vec<String> = Vec::new();
        let port = match self.transport {
            UclientTransport::Udp => TURN_PORT,
            UclientTransport::Tcp => {
                arguments.push("-t".into());
                TURN_PORT
            }
            UclientTransport::Tls => {
                arguments.extend(["-t".into(), "-S".into()]);
                TLS_PORT
            }
        };
        if let Some(interval) = self.send_interval_ms {
            arguments.extend(["-z".into(), interval.to_string()]);
        }
        if self.send_indications {
            arguments.push("-s".into());
        }
        if self.client_to_client {
            arguments.push("-y".into());
        }
        if self.ipv6_relay {
            arguments.push("-x".into());
        }
        if self.no_rtcp {
            arguments.push("-c".into());
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
            port.to_string(),
            self.server.to_string(),
        ]);
        arguments
    }

    /// Runs uclient in `netns` within the time limit and parses its statistics.
    pub fn run(&self, netns: &Namespace) -> Result<UclientReport> {
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

/// coturn's `turnserver` in the relay namespace, stopped (and its pid file removed) on
/// drop.
pub struct Coturn {
    process: Background,
    pid_file: PathBuf,
}

impl Coturn {
    /// The reference server with one static user on the topology's IPv4 addresses: it
    /// shows the harness itself (topology, peer, uclient parsing) works.
    pub fn reference(relay: &Namespace, user: &User, realm: &str) -> Result<Coturn> {
        let pid_file = std::env::temp_dir().join(format!("{}.pid", unique_name("coturn")));
        let arguments: Vec<String> = [
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
        ]
        .map(str::to_owned)
        .to_vec();
        Coturn::start(relay, &arguments, &pid_file, Stdio::null())
    }

    /// `turnserver <arguments> --pidfile <pid_file>`, output to `log`; waits until it
    /// listens on the topology's IPv4 TURN address.
    pub fn start(
        relay: &Namespace,
        arguments: &[String],
        pid_file: &Path,
        log: Stdio,
    ) -> Result<Coturn> {
        let errors = Stdio::null();
        let mut process = Background::spawn(
            relay
                .command("turnserver")
                .args(arguments)
                .arg("--pidfile")
                .arg(pid_file),
            log,
            errors,
        )?;
        relay.wait_for_udp_socket(
            SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT),
            START_LIMIT,
            || process.ensure_running(),
        )?;
        Ok(Coturn {
            process,
            pid_file: pid_file.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `turnserver --version`.
    pub fn version() -> Option<String> {
        std::process::Command::new("turnserver")
            .arg("--version")
            .output()
            .ok()
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        self.process.stop();
        let _ = std::fs::remove_file(&self.pid_file);
    }
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
    fn uclient_arguments_follow_the_options() {
        let uclient = Uclient {
            send_indications: true,
            send_interval_ms: Some(5),
            ..Uclient::new(Credentials::AuthSecret {
                username: "carol".into(),
                secret: "s".into(),
            })
        };
        let arguments = uclient.arguments().join(" ");
        assert!(
            arguments.starts_with("-z 5 -s -u carol -W s -m 1 -n 20"),
            "{arguments}"
        );
        assert!(
            arguments.ends_with("-e 198.19.1.2 -r 3480 -p 3478 198.18.1.1"),
            "{arguments}"
        );
        let tls = Uclient {
            transport: UclientTransport::Tls,
            ..uclient
        }
        .arguments()
        .join(" ");
        assert!(tls.starts_with("-t -S -z 5 -s"), "{tls}");
        assert!(tls.ends_with("-p 5349 198.18.1.1"), "{tls}");
    }
}
