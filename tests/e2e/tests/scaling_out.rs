//! Several relays behind an nftables balancer (`turn_testkit::balancer`): clients know one
//! virtual address, the relays share `auth.nonce_secret` and the credentials, and each
//! announces its own relayed address.
//!
//! - Clients allocate through the virtual address, land on different relays and relay
//!   media to a peer.
//! - Draining one relay: its /readyz turns 503; new Allocates reaching it get 300 Try
//!   Alternate and succeed on the ALTERNATE-SERVER (the testkit's client through the
//!   virtual address; `turnutils_uclient`, which follows a 300 only for its first
//!   allocation, pointed at the draining relay); its established allocation keeps relaying
//!   without loss; once that allocation ends the relay exits.
//! - A retransmitted Allocate that reaches another relay (the balancer's table changed)
//!   is answered there as a new allocation, authenticated with the shared nonce secret;
//!   a Refresh for an allocation the relay does not hold gets 437.
//!
//! The relays run with XDP off here: the balancer's DNAT and routing are the subject.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use turn_relay::protocol::stun::attributes as attr;
use turn_relay::protocol::stun::{Class, Message, Method};
use turn_testkit::addresses::PEER_PORT;
use turn_testkit::balancer::Balanced;
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient};
use turn_testkit::daemon::{Daemon, Launch};
use turn_testkit::stun_client::{
    allocate_request, channel_data, message, routed_socket, transact, transaction_id, Delivered,
    Response, Session, TurnClient,
};
use turn_testkit::{privileged, OrFail};

const USER: &str = "alice";
const PASSWORD: &str = "alice-password";
const NONCE_SECRET: &str = "shared by every relay of the group";
const CHANNEL: u16 = 0x4001;
/// Bounds of every loop that looks for a client landing on a given relay: with three
/// relays and a hash of the 5-tuple, one in three new source ports lands on each.
const ATTEMPTS: usize = 60;
const PATIENCE: Duration = Duration::from_secs(20);

fn user() -> User {
    User::new(USER, PASSWORD)
}

/// The relays' configuration: the same credentials and nonce secret, every relay listed
/// as an alternate (each skips itself).
fn relay_config(index: usize, relays: usize) -> RelayConfig {
    let mut config = RelayConfig::new(Xdp::Off)
        .with_user(USER, PASSWORD)
        .placed(Balanced::placement(index));
    config.nonce_secret = Some(NONCE_SECRET.into());
    config.alternate_servers = (0..relays).map(Balanced::relay_server).collect();
    config.drain_exit = true;
    config
}

/// The balanced topology with its relays and an echoing peer running.
struct Group {
    topology: Balanced,
    relays: Vec<Daemon>,
    _peer: turn_testkit::process::Background,
}

impl Group {
    fn start(relays: usize) -> Group {
        let topology = Balanced::new(relays).or_fail("building the balanced topology");
        let peer =
            start_peer(&topology.peer, Balanced::peer_address()).or_fail("starting the peer");
        let relays = (0..relays)
            .map(|index| {
                Daemon::start_with(
                    &topology.relays[index],
                    &relay_config(index, relays),
                    &Launch::default(),
                )
                .or_fail(&format!("starting relay {index}"))
            })
            .collect();
        Group {
            topology,
            relays,
            _peer: peer,
        }
    }

    /// The relay (index) whose address `client` was given.
    fn relay_of(&self, client: &TurnClient) -> usize {
        let ip = client.relayed_address().ip();
        (0..self.relays.len())
            .find(|index| Balanced::relay_server(*index).ip() == ip)
            .or_fail("the relayed address is one of the relays'")
    }

    /// A client allocated through the virtual address that landed on relay `index`.
    fn client_on(&self, index: usize) -> TurnClient {
        for _ in 0..ATTEMPTS {
            let mut client = TurnClient::allocate(
                routed_socket(&self.topology.client, Balanced::virtual_server()).or_fail("socket"),
                &user(),
            )
            .or_fail("Allocate through the virtual address");
            if self.relay_of(&client) == index {
                return client;
            }
            // Not kept: freed, so the misses never fill a relay's per-user quota.
            client
                .refresh(0)
                .or_fail("freeing an allocation on another relay");
        }
        panic!("no allocation landed on relay {index} in {ATTEMPTS} attempts");
    }
}

fn peer() -> SocketAddr {
    SocketAddr::new(Balanced::peer_address(), PEER_PORT)
}

/// Sends `count` ChannelData to the echoing peer and waits for each to come back: the
/// number that did.
fn echo_through(client: &mut TurnClient, count: usize) -> usize {
    let mut echoed = 0;
    for sequence in 0..count {
        let payload = format!("media {sequence:04}");
        client
            .link()
            .send(&channel_data(CHANNEL, payload.as_bytes()))
            .or_fail("sending ChannelData");
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match client.receive(left).or_fail("receiving") {
                Some(Delivered::ChannelData { number, data })
                    if number == CHANNEL && data == payload.as_bytes() =>
                {
                    echoed += 1;
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
    }
    echoed
}

#[test]
fn clients_of_the_virtual_address_spread_over_the_relays_and_relay_media() {
    if !privileged("clients_of_the_virtual_address_spread_over_the_relays_and_relay_media") {
        return;
    }
    let group = Group::start(3);
    let mut used = BTreeSet::new();
    for _ in 0..9 {
        let mut client = TurnClient::allocate(
            routed_socket(&group.topology.client, Balanced::virtual_server()).or_fail("socket"),
            &user(),
        )
        .or_fail("Allocate through the virtual address");
        used.insert(group.relay_of(&client));
        client.channel_bind(CHANNEL, peer()).or_fail("ChannelBind");
        assert_eq!(
            echo_through(&mut client, 5),
            5,
            "media through relay {}",
            group.relay_of(&client)
        );
    }
    assert!(used.len() > 1, "every client landed on one relay: {used:?}");
    // coturn's client through the virtual address: each session lands where the hash
    // says. Without RTCP allocations (-c): uclient reserves the RTCP port with EVEN-PORT
    // on one relay and redeems the RESERVATION-TOKEN from another socket, which the
    // balancer may send to another relay (508), as it would for any client doing so.
    let mut uclient = Uclient::new(Credentials::from(&user()));
    uclient.server = Balanced::virtual_server().ip();
    uclient.peer = Balanced::peer_address();
    uclient.clients = 4;
    uclient.no_rtcp = true;
    uclient
        .run(&group.topology.client)
        .or_fail("turnutils_uclient")
        .ensure_lossless(80)
        .or_fail("turnutils_uclient through the balancer");
}

#[test]
fn draining_one_relay_sends_new_allocations_elsewhere_and_keeps_its_calls() {
    if !privileged("draining_one_relay_sends_new_allocations_elsewhere_and_keeps_its_calls") {
        return;
    }
    let mut group = Group::start(3);
    let mut call = group.client_on(0);
    call.channel_bind(CHANNEL, peer()).or_fail("ChannelBind");
    assert_eq!(echo_through(&mut call, 10), 10, "before the drain");

    let draining = &group.relays[0];
    let (status, answer) = draining.admin("POST", "/drain").or_fail("POST /drain");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(draining.admin("GET", "/readyz").or_fail("readyz").0, 503);
    assert_eq!(
        group.relays[1].admin("GET", "/readyz").or_fail("readyz").0,
        200
    );

    // New allocations that reach relay 0 are sent on and succeed elsewhere.
    let mut redirected = None;
    for _ in 0..ATTEMPTS {
        let (mut client, redirected_by) = TurnClient::allocate_following_alternates(
            &group.topology.client,
            Balanced::virtual_server(),
            &user(),
        )
        .or_fail("Allocate following ALTERNATE-SERVER");
        assert_ne!(group.relay_of(&client), 0, "a draining relay allocated");
        if !redirected_by.is_empty() {
            redirected = Some(client);
            break;
        }
        // Not kept: freed, so the misses never fill a relay's per-user quota (486).
        client
            .refresh(0)
            .or_fail("freeing an allocation made without a redirect");
    }
    let mut moved = redirected.or_fail("no Allocate reached the draining relay");
    moved
        .channel_bind(CHANNEL, peer())
        .or_fail("ChannelBind on the alternate");
    assert_eq!(echo_through(&mut moved, 5), 5, "media on the alternate");

    // turnutils_uclient pointed at the draining relay follows its 300 (probe allocation).
    let mut uclient = Uclient::new(Credentials::from(&user()));
    uclient.server = Balanced::relay_server(0).ip();
    uclient.peer = Balanced::peer_address();
    uclient.no_rtcp = true;
    uclient
        .run(&group.topology.client)
        .or_fail("turnutils_uclient")
        .ensure_lossless(20)
        .or_fail("turnutils_uclient following 300 Try Alternate");

    // The established call: Refresh, ChannelBind and media go on, without loss.
    call.refresh(600).or_fail("Refresh while draining");
    call.channel_bind(CHANNEL, peer())
        .or_fail("ChannelBind refresh while draining");
    assert_eq!(
        echo_through(&mut call, 50),
        50,
        "media of the established call while draining"
    );

    // Its end ends the relay.
    call.refresh(0).or_fail("the call ends");
    let exit = group.relays[0]
        .wait_for_exit(PATIENCE)
        .or_fail("waiting for relay 0")
        .or_fail("the drained relay exits");
    assert!(
        exit.success(),
        "relay 0 exited with {exit}:\n{}",
        group.relays[0].log()
    );
    for other in &mut group.relays[1..] {
        other
            .ensure_running()
            .or_fail("the other relays keep running");
    }
}

/// An authenticated Allocate (fixed transaction id) for `session`.
fn allocate_with(session: &Session, transaction: &[u8; 12]) -> Vec<u8> {
    message(
        Method::ALLOCATE,
        Class::Request,
        &turn_relay::protocol::stun::TransactionId(*transaction),
        Some(session),
        |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        },
    )
}

#[test]
fn a_retransmission_reaching_another_relay_is_answered_there() {
    if !privileged("a_retransmission_reaching_another_relay_is_answered_there") {
        return;
    }
    let group = Group::start(2);
    // The same client address and port talks to relay 0, then (the balancer's table
    // changed) to relay 1: one socket, two destinations.
    let socket =
        routed_socket(&group.topology.client, Balanced::relay_server(0)).or_fail("client socket");
    let to = |index: usize| {
        socket
            .connect(Balanced::relay_server(index))
            .or_fail("connect");
        &socket
    };
    let first = to(0);
    let challenge =
        Response::parse(&transact(first, &allocate_request(false, None)).or_fail("Allocate"))
            .or_fail("401");
    let session = Session::from_challenge(&user(), &challenge).or_fail("session");
    let transaction = transaction_id().0;
    let request = allocate_with(&session, &transaction);
    let answer = |socket: &std::net::UdpSocket| {
        let datagram = transact(socket, &request).or_fail("Allocate");
        let verified = Message::parse(&datagram)
            .is_ok_and(|message| message.verify_message_integrity(&session.key));
        (Response::parse(&datagram).or_fail("a response"), verified)
    };
    let (on_first, verified) = answer(first);
    assert!(on_first.success && verified, "{on_first:?}");
    assert_eq!(
        on_first.relayed.map(|a| a.ip()),
        Some(Balanced::relay_server(0).ip())
    );

    // The retransmission on relay 1: the nonce from relay 0 is good there (shared
    // secret), and it gets its own allocation with a valid MESSAGE-INTEGRITY.
    let (on_second, verified) = answer(to(1));
    assert!(on_second.success && verified, "{on_second:?}");
    assert_eq!(
        on_second.relayed.map(|a| a.ip()),
        Some(Balanced::relay_server(1).ip())
    );
    assert_eq!(on_second.transaction_id, transaction);

    // Relay 0 answers its own retransmission from its cache: the same relayed address.
    let (again, _) = answer(to(0));
    assert_eq!(again.relayed, on_first.relayed);

    // A Refresh sent to a relay that holds no allocation for this 5-tuple: 437.
    let other =
        routed_socket(&group.topology.client, Balanced::relay_server(1)).or_fail("client socket");
    let refresh = message(
        Method::REFRESH,
        Class::Request,
        &transaction_id(),
        Some(&session),
        |builder| {
            builder.attribute(attr::LIFETIME, &600u32.to_be_bytes());
        },
    );
    let refused =
        Response::parse(&transact(&other, &refresh).or_fail("Refresh")).or_fail("response");
    assert_eq!(refused.error_code, Some(437), "{refused:?}");
}
