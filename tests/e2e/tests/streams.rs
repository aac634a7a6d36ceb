//! TURN over TCP and TLS end to end (RFC 8656 §3.1): clients in the client namespace
//! reach the daemon over TCP (port 3478) and TLS (port 5349, a certificate made for the
//! run), the relayed transport is UDP to peers in the peer namespace.
//!
//! - coturn's `turnutils_uclient` relays without loss over TCP (`-t`) and TLS (`-t -S`),
//!   with channels and with Send indications, several clients at once; with XDP
//!   attached, which passes the stream allocations' peer traffic up (no drop).
//! - The testkit's client: ALPN `stun.turn` or none, both directions, and a closed
//!   connection ending its allocation.
//! - Hostile streams are closed without harming anyone else.
//! - Behind a PROXY-v2-speaking proxy the relay sees the client's own address; a PROXY
//!   header from elsewhere is refused.
//! - A missing certificate stops the daemon with an error naming the file; SIGHUP loads
//!   a new certificate while live connections go on.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use turn_testkit::addresses::{
    listener, tls_listener, CLIENT_V4, OUTER_INTERFACE, PEER_V4, PEER_V6, PREFIX_V4,
    RELAY_LISTEN_V4, SECOND_CLIENT_V4,
};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient, UclientTransport};
use turn_testkit::daemon::{Daemon, Metrics};
use turn_testkit::netns::Namespace;
use turn_testkit::proxy_protocol::{v2_header, ProxyV2};
use turn_testkit::stun_client::{channel_data, send_indication, Delivered, Link, Peer, TurnClient};
use turn_testkit::tls::{TestCertificate, ALPN_TURN};
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

const USER: &str = "alice";
const PASSWORD: &str = "alice-password";
const CHANNEL: u16 = 0x4001;
/// How long the daemon's periodically published counters may take to catch up.
const METRICS_SETTLE: Duration = Duration::from_secs(5);
/// How long a relayed message may take to arrive.
const RECEIVE_LIMIT: Duration = Duration::from_secs(2);

fn user() -> User {
    User::new(USER, PASSWORD)
}

/// A certificate for the relay's IPv4 listener address (what the clients verify).
fn certificate() -> TestCertificate {
    TestCertificate::generate(&[&RELAY_LISTEN_V4.to_string(), "turn.test"])
        .or_fail("generating the test certificate")
}

/// A TLS link to the relay's IPv4 TLS listener, trusting `certificate`, offering `alpn`.
fn tls_link(netns: &Namespace, certificate: &TestCertificate, alpn: &[&[u8]]) -> Result<Link> {
    Link::tls(
        netns,
        tls_listener(4),
        certificate.client_config(alpn)?,
        &RELAY_LISTEN_V4.to_string(),
    )
}

/// Gives the client namespace [`SECOND_CLIENT_V4`] as well: a second client host.
fn add_second_client_address(topology: &Topology) {
    topology
        .client
        .ip(&[
            "addr",
            "add",
            &format!("{SECOND_CLIENT_V4}/{PREFIX_V4}"),
            "dev",
            OUTER_INTERFACE,
        ])
        .or_fail("adding a second client address");
}

fn counter(metrics: &Metrics, name: &str, label: &str) -> u64 {
    metrics.sum_with_label(name, label).unwrap_or(0.0) as u64
}

fn closed(metrics: &Metrics, reason: &str) -> u64 {
    counter(
        metrics,
        "turn_client_connections_closed_total",
        &format!("reason=\"{reason}\""),
    )
}

/// Allocates over `link`, binds [`CHANNEL`] to a fresh peer socket and relays a
/// ChannelData message and a Send indication each way.
fn relays_both_ways(topology: &Topology, link: Link) -> Result<TurnClient> {
    let peer = Peer::bind(&topology.peer, SocketAddr::new(PEER_V4.into(), 0))?;
    let peer_address = peer.address()?;
    let mut client = TurnClient::allocate_over(link, &user(), false)?;
    client.channel_bind(CHANNEL, peer_address)?;
    client.link().send(&channel_data(CHANNEL, b"odd length"))?;
    let (data, from) = peer
        .receive(RECEIVE_LIMIT)?
        .context("the peer got nothing")?;
    ensure!(
        data == b"odd length" && from == client.relayed_address(),
        "the peer got {data:?} from {from}"
    );
    peer.send_to(b"back", client.relayed_address())?;
    let delivered = client.receive(RECEIVE_LIMIT)?;
    ensure!(
        delivered
            == Some(Delivered::ChannelData {
                number: CHANNEL,
                data: b"back".to_vec()
            }),
        "the client got {delivered:?}"
    );
    let other = Peer::bind(&topology.peer, SocketAddr::new(PEER_V4.into(), 0))?;
    client.create_permission(other.address()?)?;
    client.link().send(&send_indication(
        rand::random(),
        other.address()?,
        b"sent",
        true,
    ))?;
    let (data, _) = other
        .receive(RECEIVE_LIMIT)?
        .context("no Send indication relayed")?;
    ensure!(data == b"sent", "the peer got {data:?}");
    other.send_to(b"data indication", client.relayed_address())?;
    let delivered = client.receive(RECEIVE_LIMIT)?;
    ensure!(
        delivered
            == Some(Delivered::DataIndication {
                peer: other.address()?,
                data: b"data indication".to_vec()
            }),
        "the client got {delivered:?}"
    );
    Ok(client)
}

#[test]
fn uclient_relays_over_tcp_and_tls_without_loss() {
    if !privileged("uclient_relays_over_tcp_and_tls_without_loss") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let _peer_v4 = start_peer(&topology.peer, PEER_V4.into()).or_fail("starting the peer");
    let _peer_v6 = start_peer(&topology.peer, PEER_V6.into()).or_fail("starting the peer");
    let certificate = certificate();
    let mut daemon = Daemon::start(
        &topology.relay,
        &RelayConfig::new(Xdp::Auto)
            .with_tls(&certificate)
            .with_user(USER, PASSWORD),
    )
    .or_fail("starting turn-relay");
    let credentials = Credentials::Password {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    for transport in [UclientTransport::Tcp, UclientTransport::Tls] {
        for send_indications in [false, true] {
            let uclient = Uclient {
                transport,
                send_indications,
                clients: 3,
                ..Uclient::new(credentials.clone())
            };
            let report = uclient
                .run(&topology.client)
                .or_fail("running turnutils_uclient");
            report
                .ensure_lossless(u64::from(uclient.messages))
                .or_fail(&format!(
                    "{transport:?}{}",
                    if send_indications {
                        " with Send indications"
                    } else {
                        ""
                    }
                ));
        }
    }
    daemon.ensure_running().or_fail("turn-relay after the runs");
    let metrics = daemon
        .metrics_when(METRICS_SETTLE, |metrics| {
            ["tcp", "tls"].iter().all(|transport| {
                counter(
                    metrics,
                    "turn_userspace_relayed_packets_total",
                    &format!("transport=\"{transport}\""),
                ) > 0
            })
        })
        .or_fail("reading /metrics");
    for transport in ["tcp", "tls"] {
        let label = format!("transport=\"{transport}\"");
        assert!(
            counter(&metrics, "turn_userspace_relayed_packets_total", &label) > 0
                && counter(&metrics, "turn_client_connections_accepted_total", &label) > 0,
            "nothing relayed over {transport}:\n{}",
            metrics.0
        );
    }
    // XDP saw the peers' datagrams to the stream allocations' relayed addresses and
    // passed every one up: it relayed none (no fast-path entries) and dropped none.
    let samples = metrics.nonzero_xdp_samples();
    assert!(
        samples
            .iter()
            .any(|sample| sample.contains("outcome=\"pass_")),
        "XDP saw nothing: {samples:?}"
    );
    assert!(
        !samples
            .iter()
            .any(|sample| sample.contains("outcome=\"relayed_")
                || sample.contains("outcome=\"drop_")),
        "XDP relayed or dropped stream traffic: {samples:?}"
    );
}

#[test]
fn tcp_and_tls_clients_relay_both_ways_and_a_closed_connection_ends_its_allocation() {
    if !privileged(
        "tcp_and_tls_clients_relay_both_ways_and_a_closed_connection_ends_its_allocation",
    ) {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let certificate = certificate();
    let daemon = Daemon::start(
        &topology.relay,
        &RelayConfig::new(Xdp::Off)
            .with_tls(&certificate)
            .with_user(USER, PASSWORD),
    )
    .or_fail("starting turn-relay");
    let tcp = Link::tcp(&topology.client, listener(4)).or_fail("connecting over TCP");
    let client_address = tcp.local_address().or_fail("address");
    let client = relays_both_ways(&topology, tcp).or_fail("over TCP");
    assert_eq!(client.mapped_address(), Some(client_address));
    for alpn in [&[ALPN_TURN][..], &[]] {
        let tls = tls_link(&topology.client, &certificate, alpn).or_fail("connecting over TLS");
        assert_eq!(
            tls.alpn().as_deref(),
            alpn.first().copied(),
            "ALPN stun.turn is chosen when offered; without ALPN the client is served too"
        );
        relays_both_ways(&topology, tls).or_fail("over TLS");
    }
    let by_transport = |metrics: &Metrics, transport: &str| {
        counter(
            metrics,
            "turn_allocations_by_transport",
            &format!("transport=\"{transport}\""),
        )
    };
    let metrics = daemon
        .metrics_when(METRICS_SETTLE, |metrics| by_transport(metrics, "tcp") == 1)
        .or_fail("reading /metrics");
    assert_eq!(by_transport(&metrics, "tcp"), 1, "{}", metrics.0);
    // Closing the connection deletes its allocation (RFC 8656 §3.1).
    drop(client);
    let metrics = daemon
        .metrics_when(METRICS_SETTLE, |metrics| by_transport(metrics, "tcp") == 0)
        .or_fail("reading /metrics");
    assert_eq!(by_transport(&metrics, "tcp"), 0, "{}", metrics.0);
    let log = daemon.stop();
    assert!(
        log.contains("allocation closed: connection closed") && log.contains("transport=tcp"),
        "{log}"
    );
}

#[test]
fn hostile_streams_are_closed_and_other_clients_still_relay() {
    if !privileged("hostile_streams_are_closed_and_other_clients_still_relay") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    add_second_client_address(&topology);
    let certificate = certificate();
    let mut config = RelayConfig::new(Xdp::Off)
        .with_tls(&certificate)
        .with_user(USER, PASSWORD);
    config.connections.idle_timeout = Some(2);
    config.connections.handshake_timeout = Some(2);
    config.connections.max_per_ip = Some(20);
    config.connections.max_message_size = Some(4096);
    let mut daemon = Daemon::start(&topology.relay, &config).or_fail("starting turn-relay");
    let still_relays = |what: &str| {
        relays_both_ways(
            &topology,
            Link::tcp_from(&topology.client, SECOND_CLIENT_V4.into(), listener(4))
                .or_fail("connecting"),
        )
        .or_fail(&format!("a normal client after {what}"));
    };

    let hostile = |bytes: &[u8], limit: Duration, what: &str| {
        let mut link = Link::tcp(&topology.client, listener(4)).or_fail("connecting");
        link.send_raw(bytes).or_fail("sending");
        assert!(
            link.closed_within(limit).or_fail("reading"),
            "{what}: the connection was not closed"
        );
        still_relays(what);
    };
    // A huge length prefix: a STUN header announcing 65532 bytes, over the 4096 allowed.
    hostile(
        &[0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42],
        Duration::from_secs(2),
        "a huge length",
    );
    // Garbage: neither STUN nor ChannelData.
    hostile(
        b"\xc3\xff garbage \x00\x01",
        Duration::from_secs(2),
        "garbage",
    );
    // Half a frame, then silence: the idle timeout (2 s) closes it.
    hostile(
        &[0x00, 0x01, 0x00, 0x08, 0x21, 0x12],
        Duration::from_secs(8),
        "half a frame",
    );
    // A TLS handshake that never finishes: the handshake timeout (2 s) closes it.
    let mut silent = Link::tcp(&topology.client, tls_listener(4)).or_fail("connecting");
    assert!(
        silent
            .closed_within(Duration::from_secs(8))
            .or_fail("reading"),
        "a silent TLS connection was not closed"
    );
    still_relays("a TLS handshake that never finished");

    // 1000 idle connections from one address: 20 are kept (connections.max_per_ip), the
    // rest closed at once; a client from another address is served meanwhile.
    let flood: Vec<Link> = (0..1000)
        .map(|_| Link::tcp(&topology.client, listener(4)).or_fail("connecting"))
        .collect();
    let metrics = daemon
        .metrics_when(METRICS_SETTLE, |metrics| {
            closed(metrics, "over_max_per_ip") >= 980
        })
        .or_fail("reading /metrics");
    assert!(
        closed(&metrics, "over_max_per_ip") >= 980
            && counter(&metrics, "turn_client_connections", "transport=\"tcp\"") <= 20,
        "{}",
        metrics.0
    );
    still_relays("1000 connections from one address");
    drop(flood);
    daemon
        .ensure_running()
        .or_fail("turn-relay after the hostile clients");
    const REASONS: [&str; 3] = ["bad_framing", "idle_timeout", "handshake_timeout"];
    let metrics = daemon
        .metrics_when(METRICS_SETTLE, |metrics| {
            REASONS.iter().all(|reason| closed(metrics, reason) > 0)
        })
        .or_fail("reading /metrics");
    for reason in REASONS {
        assert!(closed(&metrics, reason) > 0, "no {reason}:\n{}", metrics.0);
    }
}

#[test]
fn behind_a_proxy_v2_balancer_the_relay_sees_the_client_and_refuses_others() {
    if !privileged("behind_a_proxy_v2_balancer_the_relay_sees_the_client_and_refuses_others") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    add_second_client_address(&topology);
    let mut config = RelayConfig::new(Xdp::Off).with_user(USER, PASSWORD);
    config.tcp_proxy_protocol = true;
    // The balancer connects from the client namespace's first address.
    config.proxy_allow_from = vec![format!("{CLIENT_V4}/32")];
    let daemon = Daemon::start(&topology.relay, &config).or_fail("starting turn-relay");
    let proxy = ProxyV2::start(
        &topology.client,
        SocketAddr::new(CLIENT_V4.into(), 0),
        listener(4),
    )
    .or_fail("starting the proxy");
    // The client connects to the balancer from the second address.
    let link = Link::tcp_from(&topology.client, SECOND_CLIENT_V4.into(), proxy.address())
        .or_fail("connecting to the proxy");
    let client_address = link.local_address().or_fail("address");
    let client = relays_both_ways(&topology, link).or_fail("through the proxy");
    assert_eq!(
        client.mapped_address(),
        Some(client_address),
        "XOR-MAPPED-ADDRESS is the client's own address, not the balancer's"
    );

    // A PROXY header from an address not in allow_from is refused.
    let mut spoofer = Link::tcp_from(&topology.client, SECOND_CLIENT_V4.into(), listener(4))
        .or_fail("connecting");
    let claimed = SocketAddr::new(IpAddr::from([198, 18, 77, 77]), 4444);
    let mut header = v2_header(claimed, listener(4)).or_fail("header");
    header.extend_from_slice(&turn_testkit::stun_client::binding_request());
    // Refused at once: the write may already find the connection gone.
    let refused = spoofer.send_raw(&header).is_err()
        || spoofer
            .closed_within(Duration::from_secs(3))
            .or_fail("reading");
    assert!(
        refused,
        "a PROXY header from a source not allowed was taken"
    );
    let metrics = daemon
        .metrics_when(METRICS_SETTLE, |metrics| {
            closed(metrics, "proxy_refused") >= 1
        })
        .or_fail("reading /metrics");
    assert!(closed(&metrics, "proxy_refused") >= 1, "{}", metrics.0);
    assert!(
        !daemon.log().contains("198.18.77.77"),
        "the refused header's address reached the relay"
    );
}

#[test]
fn certificates_load_at_start_and_reload_on_sighup_keeping_live_connections() {
    if !privileged("certificates_load_at_start_and_reload_on_sighup_keeping_live_connections") {
        return;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    // A missing certificate is a start-up error that names the file.
    let mut missing = RelayConfig::new(Xdp::Off).with_user(USER, PASSWORD);
    let nowhere = std::env::temp_dir().join("turn-relay-no-such-certificate.pem");
    missing.tls = Some((nowhere.clone(), nowhere.clone()));
    let error = match Daemon::start(&topology.relay, &missing) {
        Ok(_) => panic!("turn-relay started without its certificate"),
        Err(error) => format!("{error:#}"),
    };
    assert!(
        error.contains("TLS certificate chain") && error.contains(&nowhere.display().to_string()),
        "{error}"
    );

    let first = certificate();
    let daemon = Daemon::start(
        &topology.relay,
        &RelayConfig::new(Xdp::Off)
            .with_tls(&first)
            .with_user(USER, PASSWORD),
    )
    .or_fail("starting turn-relay");
    let live = tls_link(&topology.client, &first, &[ALPN_TURN]).or_fail("connecting");
    let mut live = relays_both_ways(&topology, live).or_fail("before the reload");

    // The renewed pair replaces the files; SIGHUP loads it.
    let renewed = certificate();
    for (from, to) in [(&renewed.cert, &first.cert), (&renewed.key, &first.key)] {
        std::fs::copy(from, to)
            .map_err(anyhow::Error::from)
            .or_fail("replacing the certificate files");
    }
    daemon.signal(libc::SIGHUP).or_fail("SIGHUP");
    daemon
        .log_when(Duration::from_secs(5), |log| {
            log.contains("TLS certificate reloaded")
        })
        .or_fail("the reload");
    // New connections get the new certificate.
    let renewed_link =
        tls_link(&topology.client, &renewed, &[ALPN_TURN]).or_fail("trusting the new certificate");
    relays_both_ways(&topology, renewed_link).or_fail("after the reload");
    assert!(
        tls_link(&topology.client, &first, &[ALPN_TURN]).is_err(),
        "the old certificate is still served"
    );
    // The live connection and its allocation went on.
    live.refresh(600)
        .or_fail("refreshing on the live connection");
    let peer = Peer::bind(&topology.peer, SocketAddr::new(PEER_V4.into(), 0)).or_fail("peer");
    live.channel_bind(CHANNEL + 1, peer.address().or_fail("address"))
        .or_fail("ChannelBind on the live connection");
    peer.send_to(b"still here", live.relayed_address())
        .or_fail("sending");
    assert_eq!(
        live.receive(RECEIVE_LIMIT).or_fail("receiving"),
        Some(Delivered::ChannelData {
            number: CHANNEL + 1,
            data: b"still here".to_vec()
        })
    );
}
