//! Issue 8, tried as an attacker with valid credentials would try it, once with the XDP
//! fast path (native mode) and once with `xdp.mode = "off"`.
//!
//! The attacker holds an IPv4 and an IPv6 allocation and aims them, over
//! CreatePermission, ChannelBind, Send indications and ChannelData, at every address a
//! relay must not reach: the private, shared, loopback, link-local and multicast ranges,
//! unique local IPv6, its IPv4 peer written as IPv4-mapped and IPv4-compatible IPv6, the
//! NAT64, 6to4 and Teredo forms of a private address, the relay's own listener and its
//! metrics endpoint, and the relay's own relayed address on the listener, metrics and ssh
//! ports. Every request must be refused (403, or 443 for an address of the other family),
//! and a request mixing an allowed and a denied peer must install neither. Then it floods
//! the relay with CreatePermission requests and unauthenticated Allocates.
//!
//! Meanwhile a bystander relays ChannelData to an echoing peer and must keep getting its
//! echoes. tcpdump records every UDP datagram arriving at the client and the peer from
//! the relay (where frames redirected by XDP show up too) and the relay's loopback. The
//! relay namespace routes everything, private ranges included, towards the peer (routes
//! only: every packet stays on this test's veth pairs), so a datagram to a denied address
//! would be captured there. Afterwards no captured datagram may have left the relay
//! towards anything but the client and the echoing peer, or from anything but the
//! relay's own listener and relayed addresses; nothing may have gone over loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use turn_testkit::addresses::{
    listener, CLIENT_V4, CLIENT_V6, NEAR_PEER_V4, OUTER_INTERFACE, PEER_PORT, PEER_V4, PEER_V6,
    PREFIX_V4, RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_PEER_SIDE_INTERFACE, RELAY_RELAYED_V4,
    RELAY_RELAYED_V6, TURN_PORT,
};
use turn_testkit::capture::{datagrams, Capture, Datagram, Direction};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::coturn::start_peer;
use turn_testkit::daemon::Daemon;
use turn_testkit::stun_client::{
    allocate_request, channel_data, send_indication, Delivered, Response, TurnClient,
};
use turn_testkit::topology::Topology;
use turn_testkit::xdp::pass_on_outer_ends;
use turn_testkit::{privileged, OrFail};

/// The metrics endpoint's port (the testkit's daemon listens on 127.0.0.1:9641).
const METRICS_PORT: u16 = 9641;
/// The channel the bystander (and the attacker's one legitimate binding) use.
const CHANNEL: u16 = 0x4000;
/// Channels the attacker tries to bind to denied peers: one per trick.
const TRICK_CHANNELS: u16 = 0x4100;
/// Copies of one peer in a flooding CreatePermission (the default
/// `limits.max_peers_per_request`); one more is refused with 400.
const PEERS_PER_REQUEST: usize = 16;
const FLOOD_REQUESTS: usize = 100;
const UNAUTHENTICATED_ALLOCATES: usize = 300;
/// A second client address, which sends the unauthenticated flood.
const FLOOD_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
/// The default answer budget of one source: a burst of 50, then 20 per second.
const ANSWER_BURST: u64 = 50;
const ANSWERS_PER_SECOND: u64 = 20;
/// The bystander's bounds: one round trip at a time, at most this many, each waiting
/// this long for its echo.
const BYSTANDER_MAX_ROUNDS: u64 = 20_000;
const ECHO_WAIT: Duration = Duration::from_millis(1000);
/// How long a phase may wait for the bystander to make progress.
const PROGRESS_LIMIT: Duration = Duration::from_secs(10);

fn attacker() -> User {
    User::new("mallory", "mallory-password")
}

fn bystander() -> User {
    User::new("bob", "bob-password")
}

fn at(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The echoing peers (turnutils_peer).
fn echo_v4() -> SocketAddr {
    at(PEER_V4, PEER_PORT)
}

fn echo_v6() -> SocketAddr {
    at(PEER_V6, PEER_PORT)
}

/// Peers an IPv4 allocation must refuse, with the error code.
fn denied_from_ipv4() -> Vec<(SocketAddr, u16)> {
    let mut tricks: Vec<(SocketAddr, u16)> = [
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 64, 0, 1),
        Ipv4Addr::new(100, 100, 100, 200),
        Ipv4Addr::new(172, 16, 0, 1),
        Ipv4Addr::new(192, 168, 1, 1),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
    ]
    .into_iter()
    .map(|ip| (at(ip, PEER_PORT), 403))
    .collect();
    tricks.extend([
        // The relay's own TURN listener and metrics endpoint.
        (at(RELAY_LISTEN_V4, TURN_PORT), 403),
        (at(Ipv4Addr::LOCALHOST, METRICS_PORT), 403),
        // An IPv6 peer on an IPv4 allocation.
        (at(PEER_V6, PEER_PORT), 443),
    ]);
    tricks
}

/// Peers an IPv6 allocation must refuse, with the error code.
fn denied_from_ipv6() -> Vec<(SocketAddr, u16)> {
    let private_v4 = Ipv4Addr::new(10, 0, 0, 1);
    vec![
        (
            at("fc00::1".parse::<Ipv6Addr>().expect("v6"), PEER_PORT),
            403,
        ),
        (
            at("fd00:ec2::254".parse::<Ipv6Addr>().expect("v6"), 80),
            403,
        ),
        (
            at("fe80::1".parse::<Ipv6Addr>().expect("v6"), PEER_PORT),
            403,
        ),
        (at(Ipv6Addr::LOCALHOST, METRICS_PORT), 403),
        (at(Ipv6Addr::UNSPECIFIED, PEER_PORT), 403),
        // IPv4 written as IPv6: an IPv4 peer, so the other family.
        (at(private_v4.to_ipv6_mapped(), PEER_PORT), 443),
        (at(PEER_V4.to_ipv6_mapped(), PEER_PORT), 443),
        (at(private_v4.to_ipv6_compatible(), PEER_PORT), 443),
        // NAT64, 6to4 and Teredo forms of a private IPv4 address.
        (
            at("64:ff9b::a00:1".parse::<Ipv6Addr>().expect("v6"), PEER_PORT),
            403,
        ),
        (
            at("2002:a00:1::1".parse::<Ipv6Addr>().expect("v6"), PEER_PORT),
            403,
        ),
        (
            at(
                "2001:0:4136:e378:8000:63bf:f5ff:fffe"
                    .parse::<Ipv6Addr>()
                    .expect("v6"),
                PEER_PORT,
            ),
            403,
        ),
        (at(RELAY_LISTEN_V6, TURN_PORT), 403),
        (at(private_v4, PEER_PORT), 443),
    ]
}

/// A concurrent normal client: ChannelData to the echoing peer, one round trip at a time,
/// until told to stop.
struct Bystander {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    thread: thread::JoinHandle<Result<(u64, u64)>>,
}

impl Bystander {
    fn start(topology: &Topology) -> Result<Bystander> {
        let mut client = TurnClient::allocate_from(&topology.client, listener(4), &bystander())?;
        client.channel_bind(CHANNEL, echo_v4())?;
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, echoed) = (Arc::clone(&stop), Arc::clone(&echoed));
            thread::spawn(move || -> Result<(u64, u64)> {
                let mut lost = 0;
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) && round < BYSTANDER_MAX_ROUNDS {
                    round += 1;
                    let data = format!("bystander-{round}").into_bytes();
                    client.link().send(&channel_data(CHANNEL, &data))?;
                    let deadline = Instant::now() + ECHO_WAIT;
                    let mut answered = false;
                    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                        match client.receive(left)? {
                            Some(Delivered::ChannelData { data: echo, .. }) if echo == data => {
                                answered = true;
                                break;
                            }
                            Some(_) => {}
                            None => break,
                        }
                    }
                    if answered {
                        echoed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        lost += 1;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Ok((echoed.load(Ordering::Relaxed), lost))
            })
        };
        Ok(Bystander {
            stop,
            echoed,
            thread,
        })
    }

    /// Waits until the bystander got at least one more echo: the relay still serves it.
    fn still_served(&self, phase: &str) {
        let before = self.echoed.load(Ordering::Relaxed);
        let deadline = Instant::now() + PROGRESS_LIMIT;
        while self.echoed.load(Ordering::Relaxed) == before {
            assert!(
                Instant::now() < deadline,
                "{phase}: the bystander got no echo for {PROGRESS_LIMIT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it; (echoed, lost).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the bystander panicked"))
            .or_fail("the bystander")
    }
}

/// Every trick on one allocation: each request refused with the expected code, each
/// datagram sent anyway.
fn try_every_trick(client: &mut TurnClient, tricks: &[(SocketAddr, u16)]) -> Result<()> {
    for (index, (peer, code)) in tricks.iter().enumerate() {
        let channel = TRICK_CHANNELS + index as u16;
        let permission = client.try_create_permission(&[*peer])?;
        let binding = client.try_channel_bind(channel, *peer)?;
        for (request, response) in [("CreatePermission", permission), ("ChannelBind", binding)] {
            ensure!(
                response.error_code == Some(*code),
                "{request} for {peer} from {}: expected {code}, got {:?} {}",
                client.relayed_address(),
                response.error_code,
                response.reason
            );
        }
        for fingerprint in [false, true] {
            client.link().send(&send_indication(
                rand_id(index),
                *peer,
                b"attack",
                fingerprint,
            ))?;
        }
        client
            .link()
            .send(&channel_data(channel, b"attack over a refused channel"))?;
    }
    Ok(())
}

fn rand_id(index: usize) -> [u8; 12] {
    let mut id = [0xA7; 12];
    id[..8].copy_from_slice(&(index as u64).to_be_bytes());
    id
}

/// The relay's own relayed address is a peer on relay ports only: a permission for it is
/// granted, a binding or datagram to its listener, metrics or ssh port is not.
fn own_address_on_service_ports(client: &mut TurnClient, own: IpAddr) -> Result<()> {
    let granted = client.try_create_permission(&[at(own, TURN_PORT)])?;
    ensure!(
        granted.success,
        "permission for the relay's own {own}: {granted:?}"
    );
    for (index, port) in [TURN_PORT, METRICS_PORT, 22].into_iter().enumerate() {
        let peer = at(own, port);
        let binding = client.try_channel_bind(0x4200 + index as u16, peer)?;
        ensure!(
            binding.error_code == Some(403),
            "ChannelBind to the relay's own {peer}: {binding:?}"
        );
        client
            .link()
            .send(&send_indication(rand_id(100 + index), peer, b"loop", false))?;
    }
    Ok(())
}

/// A request mixing an allowed and a denied peer installs neither: the allowed one then
/// gets no datagram.
fn mixed_request_installs_nothing(client: &mut TurnClient) -> Result<()> {
    let allowed = at(NEAR_PEER_V4, PEER_PORT);
    let mixed = client.try_create_permission(&[allowed, at(Ipv4Addr::new(10, 0, 0, 1), 1)])?;
    ensure!(
        mixed.error_code == Some(403),
        "mixed CreatePermission: {mixed:?}"
    );
    client.link().send(&send_indication(
        rand_id(200),
        allowed,
        b"after a refusal",
        false,
    ))?;
    Ok(())
}

/// CreatePermission floods (duplicates up to the per-request bound, then one more) and
/// a burst of unauthenticated Allocates; returns how many 401s came back.
fn flood(client: &mut TurnClient, topology: &Topology) -> Result<u64> {
    let many = vec![echo_v4(); PEERS_PER_REQUEST];
    for _ in 0..FLOOD_REQUESTS {
        let response = client.try_create_permission(&many)?;
        ensure!(
            response.success,
            "{PEERS_PER_REQUEST} duplicates: {response:?}"
        );
    }
    let too_many = vec![echo_v4(); PEERS_PER_REQUEST + 1];
    let refused = client.try_create_permission(&too_many)?;
    ensure!(
        refused.error_code == Some(400),
        "{} peers: {refused:?}",
        too_many.len()
    );

    // From an address that never returned a nonce: one that did is not limited.
    topology.client.ip(&[
        "addr",
        "add",
        &format!("{FLOOD_SOURCE}/{PREFIX_V4}"),
        "dev",
        OUTER_INTERFACE,
    ])?;
    let socket = topology.client.run_inside(|| {
        let socket = UdpSocket::bind(at(FLOOD_SOURCE, 0)).context("binding the flood socket")?;
        socket
            .connect(listener(4))
            .context("connecting the flood socket")?;
        Ok(socket)
    })?;
    let started = Instant::now();
    for _ in 0..UNAUTHENTICATED_ALLOCATES {
        socket.send(&allocate_request(false, None))?;
    }
    let answers = count_answers(&socket, Duration::from_secs(1))?;
    let allowed = ANSWER_BURST + ANSWERS_PER_SECOND * (started.elapsed().as_secs() + 1);
    ensure!(
        answers > 0 && answers <= allowed,
        "{answers} answers to {UNAUTHENTICATED_ALLOCATES} unauthenticated Allocates (at most {allowed})"
    );
    Ok(answers)
}

/// STUN responses arriving on `socket` until it is quiet for `quiet`.
fn count_answers(socket: &UdpSocket, quiet: Duration) -> Result<u64> {
    socket.set_read_timeout(Some(quiet))?;
    let mut buffer = [0u8; 2048];
    let mut answers = 0;
    while let Ok(len) = socket.recv(&mut buffer) {
        if Response::parse(&buffer[..len]).is_some() {
            answers += 1;
        }
    }
    Ok(answers)
}

/// Checks every datagram of one capture; `allowed_destinations` / `sources` are the only
/// addresses (any port when the port is 0) a datagram may go to / come from.
fn check_capture(
    side: &str,
    captured: &[Datagram],
    sources: &[SocketAddr],
    destinations: &[SocketAddr],
) -> Result<()> {
    let matches = |list: &[SocketAddr], address: SocketAddr| {
        list.iter().any(|allowed| {
            allowed.ip() == address.ip()
                && (allowed.port() == 0 || allowed.port() == address.port())
        })
    };
    for datagram in captured {
        ensure!(
            matches(sources, datagram.source),
            "{side}: a datagram from {} (not the relay's own address): {datagram:?}",
            datagram.source
        );
        ensure!(
            matches(destinations, datagram.destination),
            "{side}: a datagram to {} (neither the client nor the checked peer): {datagram:?}",
            datagram.destination
        );
        ensure!(
            !datagram.bad_checksum,
            "{side}: a bad checksum: {datagram:?}"
        );
    }
    Ok(())
}

fn attack(test: &str, xdp: Xdp) {
    if !privileged(test) {
        return;
    }
    let topology = Topology::new().or_fail("namespaces");
    let _receivers = pass_on_outer_ends(&topology).or_fail("pass-only XDP");
    // Everything the relay might send goes towards the peer, where it is captured.
    for gateway in [IpAddr::V4(PEER_V4), IpAddr::V6(PEER_V6)] {
        topology
            .relay
            .default_route_via(gateway)
            .or_fail("default route towards the peer");
    }
    let route = topology
        .relay
        .ip(&["route", "get", "10.0.0.1"])
        .or_fail("route lookup");
    assert!(
        route.contains(RELAY_PEER_SIDE_INTERFACE),
        "denied destinations must be routable, else the capture proves nothing: {route}"
    );
    let _echo = [
        start_peer(&topology.peer, PEER_V4.into()).or_fail("IPv4 echo peer"),
        start_peer(&topology.peer, PEER_V6.into()).or_fail("IPv6 echo peer"),
    ];
    let directory = std::env::temp_dir().join(format!("attacker-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&directory)
        .context("creating the capture directory")
        .or_fail("capture");
    let captures = [
        Capture::start(
            &topology.client,
            OUTER_INTERFACE,
            Direction::In,
            &directory,
            "client",
        ),
        Capture::start(
            &topology.peer,
            OUTER_INTERFACE,
            Direction::In,
            &directory,
            "peer",
        ),
        Capture::start(
            &topology.relay,
            "lo",
            Direction::Both,
            &directory,
            "relay-lo",
        ),
    ]
    .map(|capture| capture.or_fail("tcpdump"));

    let (mallory, bob) = (attacker(), bystander());
    let config = RelayConfig::new(xdp)
        .with_ipv6()
        .with_user(&mallory.name, &mallory.password)
        .with_user(&bob.name, &bob.password);
    let mut daemon = Daemon::start(&topology.relay, &config).or_fail("daemon");
    let bystander = Bystander::start(&topology).or_fail("bystander");
    bystander.still_served("before the attack");

    let mut v4 = TurnClient::allocate_from(&topology.client, listener(4), &mallory)
        .or_fail("attacker's IPv4 allocation");
    let mut v6 = TurnClient::allocate_from(&topology.client, listener(6), &mallory)
        .or_fail("attacker's IPv6 allocation");
    try_every_trick(&mut v4, &denied_from_ipv4()).or_fail("IPv4 tricks");
    bystander.still_served("IPv4 tricks");
    try_every_trick(&mut v6, &denied_from_ipv6()).or_fail("IPv6 tricks");
    bystander.still_served("IPv6 tricks");
    own_address_on_service_ports(&mut v4, RELAY_RELAYED_V4.into()).or_fail("own IPv4 address");
    own_address_on_service_ports(&mut v6, RELAY_RELAYED_V6.into()).or_fail("own IPv6 address");
    mixed_request_installs_nothing(&mut v4).or_fail("mixed request");
    bystander.still_served("own addresses");
    // The attacker's allocation does relay to a checked peer (and so sits in the fast path).
    v4.channel_bind(CHANNEL, echo_v4())
        .or_fail("attacker's legitimate binding");
    v4.link()
        .send(&channel_data(CHANNEL, b"legitimate"))
        .or_fail("legitimate data");
    let answers = flood(&mut v4, &topology).or_fail("flood");
    bystander.still_served("flood");
    daemon.ensure_running().or_fail("the daemon survived");
    let (echoed, lost) = bystander.finish();
    let metrics = daemon
        .metrics_when(Duration::from_secs(5), |metrics| {
            metrics
                .sum("turn_unauthenticated_answers_dropped_total")
                .unwrap_or(0.0)
                > 0.0
        })
        .or_fail("metrics");
    let dropped_answers = metrics
        .sum("turn_unauthenticated_answers_dropped_total")
        .unwrap_or(0.0);
    eprintln!(
        "{test}: bystander {echoed} echoes, {lost} lost; {answers} answers to \
         {UNAUTHENTICATED_ALLOCATES} unauthenticated Allocates, {dropped_answers} dropped"
    );
    assert!(
        dropped_answers > 0.0,
        "the rate limit dropped no unauthenticated answer\n{}",
        metrics.0
    );
    assert!(
        lost * 20 <= echoed,
        "the bystander lost {lost} of {} round trips",
        echoed + lost
    );
    if xdp == Xdp::Native {
        assert_eq!(
            metrics.sum("turn_xdp_attached"),
            Some(1.0),
            "XDP must be attached in native mode\n{}",
            metrics.0
        );
    }
    drop(daemon);

    let [client_side, peer_side, loopback] =
        captures.map(|capture| capture.stop().or_fail("stopping a capture"));
    let read = |file: &Path| datagrams(file).or_fail("reading a capture");
    let (client_side, peer_side, loopback) =
        (read(&client_side), read(&peer_side), read(&loopback));
    check_capture(
        "client side",
        &client_side,
        &[
            at(RELAY_LISTEN_V4, TURN_PORT),
            at(RELAY_LISTEN_V6, TURN_PORT),
        ],
        &[at(CLIENT_V4, 0), at(CLIENT_V6, 0), at(FLOOD_SOURCE, 0)],
    )
    .or_fail("what reached the client");
    check_capture(
        "peer side",
        &peer_side,
        &[at(RELAY_RELAYED_V4, 0), at(RELAY_RELAYED_V6, 0)],
        &[echo_v4(), echo_v6()],
    )
    .or_fail("what reached the peer");
    assert!(
        loopback.is_empty(),
        "datagrams over the relay's loopback: {loopback:?}"
    );
    eprintln!(
        "{test}: captured {} datagrams to the client, {} to the peer, {} over loopback",
        client_side.len(),
        peer_side.len(),
        loopback.len()
    );
    let attacker_data = peer_side
        .iter()
        .filter(|datagram| datagram.source == v4.relayed_address())
        .count();
    assert!(
        attacker_data > 0 && !client_side.is_empty(),
        "the captures saw no relayed data at all: they prove nothing"
    );
    let _ = std::fs::remove_dir_all(&directory);
}

#[test]
fn an_attacker_reaches_nothing_but_checked_peers_with_xdp() {
    attack(
        "an_attacker_reaches_nothing_but_checked_peers_with_xdp",
        Xdp::Native,
    );
}

#[test]
fn an_attacker_reaches_nothing_but_checked_peers_in_userspace() {
    attack(
        "an_attacker_reaches_nothing_but_checked_peers_in_userspace",
        Xdp::Off,
    );
}
