//! The XDP fast path end to end (issue #3): coturn's `turnutils_uclient` in the client
//! namespace relays through the `turn-relay` daemon to `turnutils_peer` echoing in the
//! peer namespace, once with XDP attached in native mode on the relay's two veths and
//! once with `xdp.mode = "off"`. Both runs must look the same to the client (0 % loss,
//! same packet counts); with XDP the program's counters must account for ≥ 99 % of the
//! data packets (RFC 8656 §11 Send/Data indications, §12 ChannelData) and the userspace
//! relay for the rest.
//!
//! The host settings the fast path needs come from `Topology` (IP forwarding in the
//! relay namespace, TX checksum offload off on every veth end, GRO on the client's and
//! peer's ends). On top of that, as the bpf module documents for veth receivers, the
//! lab attaches a pass-only XDP program to the client's and peer's `eth0`: a veth drops
//! frames XDP_TX'd or redirected into it (`xdp_tx_errors`) unless its receiving end has
//! NAPI, which an XDP program enables on any kernel (GRO only on newer ones).
//! `turn-relay` attaches only to its own interfaces, so the test attaches the object's
//! pass-only program `xdp_pass` through a bpf_link (the testkit's `StubXdp`); the link
//! detaches when the test drops it or the namespace goes away. One test turns
//! forwarding off again to check
//! the daemon reports it and still relays everything in userspace.
//!
//! Permission expiry (RFC 8656 §9) is covered end to end in `expiry.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use turn_testkit::addresses::{
    CLIENT_V4, OUTER_INTERFACE, PEER_V4, PEER_V6, RELAY_CLIENT_SIDE_INTERFACE, RELAY_LISTEN_V6,
    RELAY_PEER_SIDE_INTERFACE, RELAY_RELAYED_V4, RELAY_RELAYED_V6, TURN_PORT,
};
use turn_testkit::capture::{count_frames, Capture, Direction};
use turn_testkit::config::{RelayConfig, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient};
use turn_testkit::daemon::{Daemon, Metrics};
use turn_testkit::netns::Namespace;
use turn_testkit::process::Background;
use turn_testkit::topology::Topology;
use turn_testkit::xdp::{StubAction, StubXdp};
use turn_testkit::{privileged, OrFail};

const USER: &str = "alice";
const PASSWORD: &str = "alice-password";
/// Messages per uclient session (uclient runs two sessions per client, RTP and RTCP).
const MESSAGES: u32 = 200;
/// uclient's per-session send interval (`-z`, ms): 200 messages in about a second.
const SEND_INTERVAL_MS: u32 = 5;
/// The share of data packets the XDP program must relay itself. The rest may take the
/// userspace path legitimately: a frame whose next hop is not resolved yet
/// (`bpf_fib_lookup` NO_NEIGH) is passed, and the stack resolves it.
const MINIMUM_XDP_SHARE: f64 = 0.99;

const CHANNEL_OUTCOMES: [&str; 2] = [
    "relayed_channel_data_to_peer",
    "relayed_channel_data_to_client",
];
const INDICATION_OUTCOMES: [&str; 2] =
    ["relayed_send_to_peer", "relayed_data_indication_to_client"];
const ALL_RELAYED_OUTCOMES: [&str; 4] = [
    "relayed_channel_data_to_peer",
    "relayed_send_to_peer",
    "relayed_channel_data_to_client",
    "relayed_data_indication_to_client",
];

// ---------------------------------------------------------------------------------------
// The lab: H4's topology plus the host settings the fast path needs.

struct Lab {
    // Field order is drop order: programs detach before the namespaces go.
    _pass_only: [StubXdp; 2],
    topology: Topology,
}

impl Lab {
    /// `forwarding`: keep `Topology`'s IP forwarding (both families) in the relay
    /// namespace, or turn it off.
    fn new(forwarding: bool) -> Result<Lab> {
        let topology = Topology::new()?;
        topology.set_forwarding(forwarding)?;
        let pass_only = [
            StubXdp::attach(&topology.client, OUTER_INTERFACE, StubAction::Pass)
                .context("client eth0")?,
            StubXdp::attach(&topology.peer, OUTER_INTERFACE, StubAction::Pass)
                .context("peer eth0")?,
        ];
        Ok(Lab {
            _pass_only: pass_only,
            topology,
        })
    }

    fn peers(&self) -> Result<(Background, Background)> {
        Ok((
            start_peer(&self.topology.peer, PEER_V4.into())?,
            start_peer(&self.topology.peer, PEER_V6.into())?,
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Runs and their accounting.

fn credentials() -> Credentials {
    Credentials::Password {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

fn ipv4_channels() -> Uclient {
    Uclient {
        messages: MESSAGES,
        send_interval_ms: Some(SEND_INTERVAL_MS),
        ..Uclient::new(credentials())
    }
}

fn ipv4_indications() -> Uclient {
    Uclient {
        send_indications: true,
        ..ipv4_channels()
    }
}

fn ipv6_channels() -> Uclient {
    Uclient {
        server: RELAY_LISTEN_V6.into(),
        peer: PEER_V6.into(),
        ipv6_relay: true,
        ..ipv4_channels()
    }
}

fn config(xdp: Xdp) -> RelayConfig {
    RelayConfig::new(xdp).with_ipv6().with_user(USER, PASSWORD)
}

/// What one lossless uclient run through the daemon gave.
struct Outcome {
    sent: u64,
    received: u64,
    /// Per relayed XDP outcome; empty without XDP.
    xdp: BTreeMap<&'static str, u64>,
    userspace: u64,
    /// Frames the program passed for want of a next hop (`bpf_fib_lookup` failed).
    xdp_no_route: u64,
    /// Frames the program passed because client and peer differ in address family.
    xdp_cross_family: u64,
    xdp_attached: bool,
}

impl Outcome {
    /// Data packets the relay relayed: every message to the peer and every echo back.
    fn data_packets(&self) -> u64 {
        self.sent + self.received
    }

    fn xdp_relayed(&self) -> u64 {
        self.xdp.values().sum()
    }

    fn xdp_share(&self) -> f64 {
        self.xdp_relayed() as f64 / self.data_packets().max(1) as f64
    }
}

/// The daemon publishes metrics about once a second: waits until the relayed counters
/// cover `data_packets` (or stop moving), then returns them.
fn settled_metrics(daemon: &Daemon, data_packets: u64) -> Result<Metrics> {
    let relayed = |metrics: &Metrics| {
        metrics.userspace_relayed("")
            + ALL_RELAYED_OUTCOMES
                .iter()
                .map(|outcome| metrics.xdp_packets(outcome))
                .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut previous = None;
    loop {
        let metrics = daemon.metrics()?;
        let now = relayed(&metrics);
        if now >= data_packets || Instant::now() >= deadline || previous == Some(now) {
            return Ok(metrics);
        }
        previous = Some(now);
        thread::sleep(Duration::from_millis(1200));
    }
}

/// Starts the daemon with `xdp`, runs `uclient` once, requires 0 % loss and reads the
/// relay's counters.
fn relay_once(lab: &Lab, xdp: Xdp, uclient: &Uclient) -> Result<(Outcome, String)> {
    let mut daemon = Daemon::start(&lab.topology.relay, &config(xdp))?;
    let report = uclient.run(&lab.topology.client)?;
    report
        .ensure_lossless(u64::from(uclient.messages))
        .with_context(|| format!("--- daemon log ---\n{}", daemon.log()))?;
    daemon.ensure_running()?;
    let sent = report.sent_messages.unwrap_or(0);
    let received = report.received_messages.unwrap_or(0);
    let metrics = settled_metrics(&daemon, sent + received)?;
    let xdp_counts = ALL_RELAYED_OUTCOMES
        .iter()
        .filter(|outcome| {
            metrics
                .sum_with_label("turn_xdp_packets_total", &format!("outcome=\"{outcome}\""))
                .is_some()
        })
        .map(|outcome| (*outcome, metrics.xdp_packets(outcome)))
        .collect();
    let outcome = Outcome {
        sent,
        received,
        xdp: xdp_counts,
        userspace: metrics.userspace_relayed(""),
        xdp_no_route: metrics.xdp_packets("pass_no_route"),
        xdp_cross_family: metrics.xdp_packets("pass_cross_family"),
        xdp_attached: metrics.sum("turn_xdp_attached") == Some(1.0),
    };
    Ok((
        outcome,
        format!("{}\n--- metrics ---\n{}", daemon.log(), metrics.0),
    ))
}

/// XDP (native) then userspace only, same uclient: same client-visible result; with XDP
/// the program relays ≥ 99 % of the data packets as `expected_outcomes`.
fn xdp_and_userspace_agree(test: &str, uclient: Uclient, expected_outcomes: [&str; 2]) {
    if !privileged(test) {
        return;
    }
    let lab = Lab::new(true).or_fail("building the lab");
    let _peers = lab.peers().or_fail("starting turnutils_peer");

    let (fast, fast_log) =
        relay_once(&lab, Xdp::Native, &uclient).or_fail("relaying with native XDP");
    let (slow, slow_log) = relay_once(&lab, Xdp::Off, &uclient).or_fail("relaying with XDP off");
    eprintln!(
        "{test}: XDP relayed {} of {} data packets ({:.2} %), userspace {}; by outcome {:?}",
        fast.xdp_relayed(),
        fast.data_packets(),
        fast.xdp_share() * 100.0,
        fast.userspace,
        fast.xdp
    );

    // Userspace only: relays everything, and the client sees what it saw with XDP.
    let context = format!("--- daemon log and metrics (XDP off) ---\n{slow_log}");
    assert!(
        !slow.xdp_attached && slow.xdp.is_empty(),
        "XDP counters with mode off\n{context}"
    );
    assert_eq!(
        slow.userspace,
        slow.data_packets(),
        "userspace must relay every data packet\n{context}"
    );
    assert_eq!(
        (slow.sent, slow.received),
        (fast.sent, fast.received),
        "the client must see the same with and without XDP\n{context}"
    );

    // With XDP: attached cleanly in the native mode asked for (the daemon relays in
    // userspace with `turn_xdp_attached 0` when it cannot), relaying (almost) everything.
    let context = format!("--- daemon log and metrics (XDP run) ---\n{fast_log}");
    assert!(
        fast.xdp_attached,
        "native XDP not attached (turn_xdp_attached is not 1)\n{context}"
    );
    assert!(
        !fast_log.contains("WARNING"),
        "expected a clean native attach\n{context}"
    );
    assert_eq!(
        fast.xdp_relayed() + fast.userspace,
        fast.data_packets(),
        "every data packet must be relayed exactly once, by one of the paths\n{context}"
    );
    for outcome in expected_outcomes {
        assert!(
            fast.xdp.get(outcome).copied().unwrap_or(0) > 0,
            "nothing relayed as {outcome}\n{context}"
        );
    }
    let expected: u64 = expected_outcomes
        .iter()
        .map(|outcome| fast.xdp.get(outcome).copied().unwrap_or(0))
        .sum();
    assert!(
        expected as f64 >= MINIMUM_XDP_SHARE * fast.data_packets() as f64,
        "XDP relayed {expected} of {} data packets as {expected_outcomes:?} (< {:.0} %)\n{context}",
        fast.data_packets(),
        MINIMUM_XDP_SHARE * 100.0
    );
}

#[test]
fn channel_data_relayed_by_xdp_matches_userspace() {
    xdp_and_userspace_agree(
        "channel_data_relayed_by_xdp_matches_userspace",
        ipv4_channels(),
        CHANNEL_OUTCOMES,
    );
}

#[test]
fn send_and_data_indications_relayed_by_xdp_match_userspace() {
    xdp_and_userspace_agree(
        "send_and_data_indications_relayed_by_xdp_match_userspace",
        ipv4_indications(),
        INDICATION_OUTCOMES,
    );
}

#[test]
fn ipv6_channel_data_relayed_by_xdp_matches_userspace() {
    xdp_and_userspace_agree(
        "ipv6_channel_data_relayed_by_xdp_matches_userspace",
        ipv6_channels(),
        CHANNEL_OUTCOMES,
    );
}

/// RFC 8656 §7.2 / RFC 6156: an IPv4 client with an IPv6 relayed address (uclient `-x`
/// to the IPv4 listener) and an IPv6 client with the default IPv4 one. The fast path
/// relays cross-family too (the IP header rebuilt in the other family, RFC 8656 §14), so
/// with XDP attached the program relays (almost) every data packet, none is passed as
/// `pass_cross_family`, and the client sees exactly what it sees with XDP off.
#[test]
fn cross_family_relaying_by_xdp_matches_userspace() {
    let test = "cross_family_relaying_by_xdp_matches_userspace";
    if !privileged(test) {
        return;
    }
    let lab = Lab::new(true).or_fail("building the lab");
    let _peers = lab.peers().or_fail("starting turnutils_peer");
    let ipv4_client_ipv6_relay = Uclient {
        peer: PEER_V6.into(),
        ipv6_relay: true,
        ..ipv4_channels()
    };
    let ipv6_client_ipv4_relay = Uclient {
        server: RELAY_LISTEN_V6.into(),
        ..ipv4_channels()
    };
    for uclient in [ipv4_client_ipv6_relay, ipv6_client_ipv4_relay] {
        let (fast, fast_log) = relay_once(&lab, Xdp::Auto, &uclient).or_fail("relaying with XDP");
        let (slow, slow_log) =
            relay_once(&lab, Xdp::Off, &uclient).or_fail("relaying with XDP off");
        eprintln!(
            "{test}: server {} peer {}: XDP relayed {} of {} data packets, userspace {}, \
             XDP passed {} as cross-family; by outcome {:?}",
            uclient.server,
            uclient.peer,
            fast.xdp_relayed(),
            fast.data_packets(),
            fast.userspace,
            fast.xdp_cross_family,
            fast.xdp
        );
        let context = format!("--- XDP run ---\n{fast_log}\n--- XDP off ---\n{slow_log}");
        assert!(fast.xdp_attached, "XDP must be attached\n{context}");
        assert_eq!(
            fast.xdp_cross_family, 0,
            "cross-family frames passed to userspace\n{context}"
        );
        assert_eq!(
            fast.xdp_relayed() + fast.userspace,
            fast.data_packets(),
            "every data packet must be relayed exactly once, by one of the paths\n{context}"
        );
        for outcome in CHANNEL_OUTCOMES {
            assert!(
                fast.xdp.get(outcome).copied().unwrap_or(0) > 0,
                "nothing relayed as {outcome}\n{context}"
            );
        }
        assert!(
            fast.xdp_relayed() as f64 >= MINIMUM_XDP_SHARE * fast.data_packets() as f64,
            "XDP relayed {} of {} data packets (< {:.0} %)\n{context}",
            fast.xdp_relayed(),
            fast.data_packets(),
            MINIMUM_XDP_SHARE * 100.0
        );
        assert_eq!(
            slow.userspace,
            slow.data_packets(),
            "userspace must relay every data packet with XDP off\n{context}"
        );
        assert_eq!(
            (fast.sent, fast.received),
            (slow.sent, slow.received),
            "the client must see the same with and without XDP\n{context}"
        );
    }
}

#[test]
fn forwarding_disabled_is_reported_and_everything_falls_back_to_userspace() {
    let test = "forwarding_disabled_is_reported_and_everything_falls_back_to_userspace";
    if !privileged(test) {
        return;
    }
    let lab = Lab::new(false).or_fail("building the lab");
    let _peers = lab.peers().or_fail("starting turnutils_peer");
    let (outcome, log) =
        relay_once(&lab, Xdp::Auto, &ipv4_channels()).or_fail("relaying with forwarding off");
    for sysctl in [
        format!("net.ipv4.conf.{RELAY_CLIENT_SIDE_INTERFACE}.forwarding=0"),
        format!("net.ipv4.conf.{RELAY_PEER_SIDE_INTERFACE}.forwarding=0"),
        format!("net.ipv6.conf.{RELAY_CLIENT_SIDE_INTERFACE}.forwarding=0"),
    ] {
        assert!(
            log.contains("WARNING: ") && log.contains(&sysctl),
            "the daemon must say {sysctl}\n{log}"
        );
    }
    assert!(outcome.xdp_attached, "XDP must still attach\n{log}");
    assert_eq!(
        outcome.xdp_relayed(),
        0,
        "XDP cannot relay without forwarding\n{log}"
    );
    assert!(
        outcome.xdp_no_route >= outcome.data_packets(),
        "every data packet must have been passed for want of a next hop\n{log}"
    );
    assert_eq!(
        outcome.userspace,
        outcome.data_packets(),
        "userspace must relay everything\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Captures: every relayed frame carries valid IP and UDP checksums, and the receiving
// stacks accepted every one.

/// The namespace's UDP/UDP6 counters (`nstat`), by name.
fn udp_counters(netns: &Namespace) -> Result<BTreeMap<String, u64>> {
    let text = netns.run("nstat", &["-a", "-z", "-s", "Udp*", "Udp6*"])?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            let value = fields.next()?.parse().ok()?;
            Some((name.to_owned(), value))
        })
        .collect())
}

#[test]
fn relayed_frames_carry_valid_checksums_and_are_all_accepted() {
    let test = "relayed_frames_carry_valid_checksums_and_are_all_accepted";
    if !privileged(test) {
        return;
    }
    let lab = Lab::new(true).or_fail("building the lab");
    let _peers = lab.peers().or_fail("starting turnutils_peer");
    let directory = std::env::temp_dir().join(format!("xdp-e2e-capture-{}", std::process::id()));
    fs::create_dir_all(&directory)
        .context("creating the capture directory")
        .or_fail("capture");
    let client_capture = Capture::start(
        &lab.topology.client,
        OUTER_INTERFACE,
        Direction::Both,
        &directory,
        "client",
    )
    .or_fail("client capture");
    let peer_capture = Capture::start(
        &lab.topology.peer,
        OUTER_INTERFACE,
        Direction::Both,
        &directory,
        "peer",
    )
    .or_fail("peer capture");

    let mut data_to_peer = 0;
    let mut data_to_client = 0;
    let mut logs = String::new();
    for uclient in [ipv4_channels(), ipv4_indications(), ipv6_channels()] {
        let (outcome, log) = relay_once(&lab, Xdp::Auto, &uclient).or_fail("relaying with XDP");
        // The share is the other tests' business; here XDP must have relayed something.
        assert!(outcome.xdp_relayed() > 0, "XDP relayed nothing\n{log}");
        eprintln!(
            "{test}: XDP relayed {} of {} data packets ({:.2} %)",
            outcome.xdp_relayed(),
            outcome.data_packets(),
            outcome.xdp_share() * 100.0
        );
        data_to_peer += outcome.sent;
        data_to_client += outcome.received;
        logs.push_str(&log);
    }
    let client_file = client_capture.stop().or_fail("client capture");
    let peer_file = peer_capture.stop().or_fail("peer capture");

    let from_turn_port = format!("udp.srcport == {TURN_PORT}");
    let from_relayed_addresses =
        format!("(ip.src == {RELAY_RELAYED_V4} || ipv6.src == {RELAY_RELAYED_V6})");
    for (side, file, relayed_to_here, from_relay) in [
        // Frames the relay sent to the client (relayed data and STUN answers).
        ("client", &client_file, data_to_client, &from_turn_port),
        // Frames the relay sent to the peers (uclient's RTP and RTCP sessions).
        ("peer", &peer_file, data_to_peer, &from_relayed_addresses),
    ] {
        let bad = count_frames(
            file,
            "ip.checksum.status == \"Bad\" || udp.checksum.status == \"Bad\"",
        )
        .or_fail("counting bad checksums");
        let good_relayed = count_frames(
            file,
            &format!("{from_relay} && udp.checksum.status == \"Good\""),
        )
        .or_fail("counting good relayed frames");
        eprintln!(
            "{test}: {side} side: {good_relayed} relayed frames with valid checksums \
             (expected ≥ {relayed_to_here}), {bad} bad"
        );
        assert_eq!(
            bad,
            0,
            "{side} side: frames with bad checksums in {}\n{logs}",
            file.display()
        );
        assert!(
            good_relayed >= relayed_to_here,
            "{side} side: only {good_relayed} valid relayed frames of {relayed_to_here} in {}",
            file.display()
        );
    }
    for (side, netns) in [
        ("client", &lab.topology.client),
        ("peer", &lab.topology.peer),
    ] {
        let counters = udp_counters(netns).or_fail("reading UDP counters");
        for name in [
            "UdpInCsumErrors",
            "UdpInErrors",
            "UdpRcvbufErrors",
            "Udp6InCsumErrors",
            "Udp6InErrors",
            "Udp6RcvbufErrors",
        ] {
            assert_eq!(
                counters.get(name).copied().unwrap_or(0),
                0,
                "{side} side: {name} in {counters:?}"
            );
        }
    }
    // Kept (and named in the failure) when an assertion above fails.
    let _ = fs::remove_dir_all(&directory);
}

/// `xdp.trace` (issue 11): with it on, the program's decisions for relayed frames reach
/// the daemon's log (aya-log's ring buffer, then `log` records as `tracing` events) with
/// their flow, and the relay still relays losslessly.
#[test]
fn the_xdp_trace_reaches_the_daemon_log() {
    let test = "the_xdp_trace_reaches_the_daemon_log";
    if !privileged(test) {
        return;
    }
    let lab = Lab::new(true).or_fail("building the lab");
    let _peers = lab.peers().or_fail("starting turnutils_peer");
    let daemon = Daemon::start(&lab.topology.relay, &config(Xdp::Native).with_xdp_trace())
        .or_fail("starting turn-relay with xdp.trace");
    let uclient = ipv4_channels();
    uclient
        .run(&lab.topology.client)
        .or_fail("uclient")
        .ensure_lossless(u64::from(uclient.messages))
        .or_fail("relaying with the trace on");
    let relayed_line = format!("relayed_channel_data_to_peer action 4 {CLIENT_V4}:");
    let log = daemon
        .log_when(Duration::from_secs(10), |log| log.contains(&relayed_line))
        .or_fail("trace records in the daemon log");
    assert!(log.contains("xdp.trace is on"), "{log}");
}
