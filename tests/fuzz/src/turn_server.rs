//! The TURN server core (`protocol::turn::Server`), as the daemon builds it from its
//! configuration, fed scripts of datagrams from four clients (two users, IPv4 and IPv6,
//! one from a private address) and from peers, with time passing in between. The
//! requests are well-formed enough to get past authentication (the harness answers 401
//! and 438 like a client), while their attributes, peers, channels and lifetimes come
//! from the input; raw datagrams cover everything else.
//!
//! After every step, besides "never a panic":
//! - every fast-path command installs only what the peer policy approved: a permission
//!   for an address it allows (with the ports it allows), of the relayed address's
//!   family and never an IPv4 address written as IPv6 on an IPv6 allocation; a channel
//!   only to an allowed address and port, after its permission;
//! - relayed data leaves only from a relayed address towards a peer the policy allows,
//!   and only to the client owning the allocation from its listener;
//! - answers go back only to the client that asked, from the address it asked.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use turn_relay::daemon::config::Config;
use turn_relay::protocol::datapath::{
    ClientFlow, FastPath, FastPathCommand, InMemoryDatapath, PeerPortRange,
};
use turn_relay::protocol::policy::{is_ipv4_written_as_ipv6, PeerPolicy};
use turn_relay::protocol::stun::attributes as attr;
use turn_relay::protocol::stun::{Class, MessageBuilder, Method, TransactionId};
use turn_relay::protocol::turn::{Forward, Payload};
use turn_testkit::addresses::{
    CLIENT_V4, CLIENT_V6, RELAY_LISTEN_V4, RELAY_LISTEN_V6, RELAY_RELAYED_V4, RELAY_RELAYED_V6,
    TURN_PORT,
};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::in_memory::{self, InMemoryRelay};
use turn_testkit::stun_client::{channel_data, message, Response, Session};

/// The most steps of one script: enough for an allocation with permissions, channels,
/// data both ways and expiry; short enough to run thousands of scripts a second.
const MAX_STEPS: usize = 32;
/// The longest wait of one step (past every lifetime: allocations, nonces, reservations).
const MAX_WAIT_SECS: u64 = 7200;

/// Peer addresses worth trying: allowed ones (the test networks, the public internet),
/// every built-in deny range, IPv4 in every IPv6 form, the relay's own services.
const PEERS: [IpAddr; 32] = [
    IpAddr::V4(Ipv4Addr::new(198, 19, 1, 2)),
    IpAddr::V4(Ipv4Addr::new(198, 18, 1, 30)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 2, 0, 0, 0, 2)),
    IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
    IpAddr::V6(Ipv6Addr::new(0x2606, 0x4700, 0, 0, 0, 0, 0, 0x1111)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(172, 16, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    IpAddr::V4(Ipv4Addr::BROADCAST),
    IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    // ::ffff:10.0.0.1, ::ffff:198.19.1.2, ::198.19.1.2, ::10.0.0.1
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 1)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0xc613, 0x0102)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xc613, 0x0102)),
    IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0x0a00, 1)),
    // NAT64 of 10.0.0.1 and of 198.19.1.2, 6to4 of 10.0.0.1, Teredo with client 10.0.0.1.
    IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0x0a00, 1)),
    IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0xc613, 0x0102)),
    IpAddr::V6(Ipv6Addr::new(0x2002, 0x0a00, 1, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(
        0x2001, 0, 0x4136, 0xe378, 0x8000, 0x63bf, 0xf5ff, 0xfffe,
    )),
    // The relay's relayed, listener and metrics addresses.
    IpAddr::V4(RELAY_RELAYED_V4),
    IpAddr::V6(RELAY_RELAYED_V6),
    IpAddr::V4(RELAY_LISTEN_V4),
    IpAddr::V6(RELAY_LISTEN_V6),
    // The first four bytes of the IPv6 relayed address as an IPv4 address.
    IpAddr::V4(Ipv4Addr::new(0x20, 0x01, 0, 2)),
    IpAddr::V6(Ipv6Addr::new(0xc613, 0x0102, 0, 0, 0, 0, 0, 0)),
];
/// Ports worth trying: the TURN listener, the metrics endpoint, the relay port range's
/// ends, ssh.
const PORTS: [u16; 6] = [TURN_PORT, 9641, 49152, 65535, 22, 7000];

/// The four clients: (address, listener, user index).
fn clients() -> [(SocketAddr, SocketAddr, usize); 4] {
    let listener_v4 = SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT);
    [
        (SocketAddr::new(CLIENT_V4.into(), 40_000), listener_v4, 0),
        (SocketAddr::new(CLIENT_V4.into(), 40_001), listener_v4, 1),
        (
            SocketAddr::new(CLIENT_V6.into(), 40_000),
            SocketAddr::new(RELAY_LISTEN_V6.into(), TURN_PORT),
            0,
        ),
        (
            SocketAddr::new(Ipv4Addr::new(10, 9, 9, 9).into(), 5000),
            listener_v4,
            1,
        ),
    ]
}

fn users() -> [User; 2] {
    [
        User::new("alice", "alice-password"),
        User::new("bob", "bob-password"),
    ]
}

/// A fuzzed script.
#[derive(Arbitrary, Debug)]
pub struct Script {
    pub steps: Vec<Step>,
}

/// One thing that happens to the relay.
#[derive(Arbitrary, Debug)]
pub enum Step {
    /// A request from a client, with credentials once it has some (when `signed`).
    Request {
        client: u8,
        request: Request,
        signed: bool,
    },
    /// A Send indication (RFC 8656 §11.2).
    Send {
        client: u8,
        peer: Peer,
        data: Vec<u8>,
        dont_fragment: bool,
    },
    /// ChannelData (RFC 8656 §12.4).
    ChannelData {
        client: u8,
        channel: u16,
        data: Vec<u8>,
    },
    /// A datagram from a peer to a relayed address.
    FromPeer {
        allocation: u8,
        peer: Peer,
        data: Vec<u8>,
    },
    /// Any bytes from a client.
    Raw { client: u8, bytes: Vec<u8> },
    /// Time passes.
    Wait { seconds: u16 },
}

/// The request of a [`Step::Request`].
#[derive(Arbitrary, Debug)]
pub enum Request {
    Binding,
    Allocate {
        ipv6: bool,
        additional_ipv6: bool,
        lifetime: Option<u32>,
        even_port: Option<bool>,
        /// Use the last RESERVATION-TOKEN an answer carried.
        reservation: bool,
        dont_fragment: bool,
    },
    Refresh {
        lifetime: Option<u32>,
    },
    CreatePermission {
        peers: Vec<Peer>,
    },
    ChannelBind {
        channel: u16,
        peer: Peer,
    },
    /// Any method with any attributes, signed like the others.
    Other {
        method: u16,
        attributes: Vec<(u16, Vec<u8>)>,
    },
}

impl Request {
    fn method(&self) -> Method {
        match self {
            Request::Binding => Method::BINDING,
            Request::Allocate { .. } => Method::ALLOCATE,
            Request::Refresh { .. } => Method::REFRESH,
            Request::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
            Request::Other { method, .. } => Method(*method & 0x0FFF),
        }
    }

    /// The request's attributes (before the credentials); `peers` are its resolved
    /// XOR-PEER-ADDRESSes, `reservation` the last RESERVATION-TOKEN seen.
    fn write(
        &self,
        peers: &[SocketAddr],
        reservation: Option<[u8; 8]>,
        builder: &mut MessageBuilder<'_>,
    ) {
        match self {
            Request::Binding => {}
            Request::Allocate {
                ipv6,
                additional_ipv6,
                lifetime,
                even_port,
                reservation: use_reservation,
                dont_fragment,
            } => {
                builder.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
                if *ipv6 {
                    builder.attribute(attr::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]);
                }
                if *additional_ipv6 {
                    builder.attribute(attr::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0]);
                }
                if let Some(lifetime) = lifetime {
                    builder.attribute(attr::LIFETIME, &lifetime.to_be_bytes());
                }
                if let Some(reserve) = even_port {
                    builder.attribute(attr::EVEN_PORT, &[if *reserve { 0x80 } else { 0 }, 0, 0, 0]);
                }
                if let (true, Some(token)) = (*use_reservation, reservation) {
                    builder.attribute(attr::RESERVATION_TOKEN, &token);
                }
                if *dont_fragment {
                    builder.attribute(attr::DONT_FRAGMENT, &[]);
                }
            }
            Request::Refresh { lifetime } => {
                if let Some(lifetime) = lifetime {
                    builder.attribute(attr::LIFETIME, &lifetime.to_be_bytes());
                }
            }
            Request::CreatePermission { .. } => {
                for peer in peers {
                    builder.xor_address(attr::XOR_PEER_ADDRESS, *peer);
                }
            }
            Request::ChannelBind { channel, .. } => {
                let mut value = [0u8; 4];
                value[..2].copy_from_slice(&channel.to_be_bytes());
                builder.attribute(attr::CHANNEL_NUMBER, &value);
                for peer in peers {
                    builder.xor_address(attr::XOR_PEER_ADDRESS, *peer);
                }
            }
            Request::Other { attributes, .. } => {
                for (kind, value) in attributes {
                    builder.attribute(*kind, value);
                }
            }
        }
    }
}

/// A peer transport address: one of [`PEERS`], the relayed address of an allocation, or
/// any address; one of [`PORTS`] or any port.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Peer {
    pick: u8,
    raw: [u8; 16],
    port: u16,
}

/// What the harness knows of one client.
#[derive(Default)]
struct ClientState {
    session: Option<Session>,
}

struct Harness {
    relay: InMemoryRelay,
    policy: PeerPolicy,
    /// The fast path as the core's commands leave it (the daemon's applier on the model).
    model: FastPath<InMemoryDatapath>,
    /// Relayed (bind) address → the client flow owning it, from the commands.
    owners: HashMap<SocketAddr, ClientFlow>,
    clients: Vec<ClientState>,
    reservation: Option<[u8; 8]>,
}

/// Reads a script from raw bytes, as cargo-fuzz's `Arbitrary` support does, and runs it.
pub fn run_bytes(data: &[u8]) {
    if let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) {
        run(&script);
    }
}

/// The relay's configuration, parsed once.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let [alice, bob] = users();
        let config = RelayConfig::new(Xdp::Off)
            .with_ipv6()
            .with_user(&alice.name, &alice.password)
            .with_user(&bob.name, &bob.password)
            // Small caps, so scripts reach them.
            .with_limit("max_permissions_per_allocation", 3)
            .with_limit("max_channels_per_allocation", 3)
            .with_limit("max_peers_per_request", 4)
            .with_limit("unauthenticated_answers_burst", 8);
        in_memory::parse(&config).expect("the test configuration is valid")
    })
}

pub fn run(script: &Script) {
    let relay = InMemoryRelay::from_parsed(config().clone(), 0x5eed);
    let mut harness = Harness {
        policy: relay.config().peer_policy(),
        relay,
        model: FastPath::new(InMemoryDatapath::default()),
        owners: HashMap::new(),
        clients: (0..clients().len())
            .map(|_| ClientState::default())
            .collect(),
        reservation: None,
    };
    for step in script.steps.iter().take(MAX_STEPS) {
        harness.step(step);
        harness.check_fast_path();
    }
}

impl Harness {
    fn flow(&self, client: u8) -> (usize, ClientFlow, User) {
        let table = clients();
        let index = usize::from(client) % table.len();
        let (client, listener, user) = table[index];
        (
            index,
            ClientFlow::udp(client, listener),
            users()[user].clone(),
        )
    }

    fn peer(&self, peer: Peer) -> SocketAddr {
        let port = PORTS
            .get(usize::from(peer.port))
            .copied()
            .unwrap_or(peer.port);
        let pick = usize::from(peer.pick);
        if let Some(ip) = PEERS.get(pick) {
            return SocketAddr::new(*ip, port);
        }
        if pick >= 0xF0 && !self.owners.is_empty() {
            // Another allocation's relayed address: hairpinning.
            let relays: Vec<&SocketAddr> = self.owners.keys().collect();
            return *relays[pick % relays.len()];
        }
        let ip = if pick % 2 == 0 {
            IpAddr::V4(Ipv4Addr::new(
                peer.raw[0],
                peer.raw[1],
                peer.raw[2],
                peer.raw[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(peer.raw))
        };
        SocketAddr::new(ip, port)
    }

    fn step(&mut self, step: &Step) {
        match step {
            Step::Request {
                client,
                request,
                signed,
            } => self.request(*client, request, *signed),
            Step::Send {
                client,
                peer,
                data,
                dont_fragment,
            } => {
                let (_, flow, _) = self.flow(*client);
                let peer = self.peer(*peer);
                let indication = message(
                    Method::SEND,
                    Class::Indication,
                    &TransactionId([9; 12]),
                    None,
                    |builder| {
                        builder.xor_address(attr::XOR_PEER_ADDRESS, peer);
                        if *dont_fragment {
                            builder.attribute(attr::DONT_FRAGMENT, &[]);
                        }
                        builder.attribute(attr::DATA, data);
                    },
                );
                self.client_datagram(flow, &indication);
            }
            Step::ChannelData {
                client,
                channel,
                data,
            } => {
                let (_, flow, _) = self.flow(*client);
                self.client_datagram(flow, &channel_data(*channel, data));
            }
            Step::FromPeer {
                allocation,
                peer,
                data,
            } => self.peer_datagram(*allocation, *peer, data),
            Step::Raw { client, bytes } => {
                let (_, flow, _) = self.flow(*client);
                self.client_datagram(flow, bytes);
            }
            Step::Wait { seconds } => self
                .relay
                .advance(Duration::from_secs(u64::from(*seconds) % MAX_WAIT_SECS)),
        }
    }

    fn request(&mut self, client: u8, request: &Request, signed: bool) {
        let (index, flow, user) = self.flow(client);
        let peers: Vec<SocketAddr> = match request {
            Request::CreatePermission { peers } => peers.iter().map(|p| self.peer(*p)).collect(),
            Request::ChannelBind { peer, .. } => vec![self.peer(*peer)],
            _ => Vec::new(),
        };
        let reservation = self.reservation;
        let build = |session: Option<&Session>| {
            message(
                request.method(),
                Class::Request,
                &TransactionId([index as u8; 12]),
                session,
                |builder| request.write(&peers, reservation, builder),
            )
        };
        if !signed {
            self.client_datagram(flow, &build(None));
            return;
        }
        // A client answers 401 with its credentials and 438 with the fresh nonce.
        for _ in 0..3 {
            let session = self.clients[index].session.clone();
            let answers = self.client_datagram(flow, &build(session.as_ref()));
            let Some(response) = answers.first().and_then(|answer| Response::parse(answer)) else {
                return;
            };
            match (response.error_code, &session) {
                (Some(401), None) => {
                    let Ok(session) = Session::from_challenge(&user, &response) else {
                        return;
                    };
                    self.clients[index].session = Some(session);
                }
                (Some(401 | 438), Some(_)) if response.nonce.is_some() => {
                    if let (Some(session), Some(nonce)) =
                        (self.clients[index].session.as_mut(), response.nonce)
                    {
                        session.nonce = nonce;
                    }
                }
                _ => return,
            }
        }
    }

    /// Hands a datagram of `flow` to the core and checks what comes out; returns the
    /// answers' bytes.
    fn client_datagram(&mut self, flow: ClientFlow, datagram: &[u8]) -> Vec<Vec<u8>> {
        let (transmits, forward) = self.relay.client_datagram(flow, datagram);
        for transmit in &transmits {
            assert_eq!(
                (transmit.from, transmit.to),
                (flow.listener, flow.client),
                "an answer to someone other than the sender"
            );
            if let Some(token) = turn_relay::protocol::stun::Message::parse(&transmit.payload)
                .ok()
                .and_then(|answer| answer.attribute(attr::RESERVATION_TOKEN))
                .and_then(|token| <[u8; 8]>::try_from(token).ok())
            {
                self.reservation = Some(token);
            }
        }
        if let Some(forward) = forward {
            self.check_to_peer(flow, &forward, datagram);
        }
        self.check_fast_path();
        transmits
            .into_iter()
            .map(|transmit| transmit.payload)
            .collect()
    }

    /// Relayed data from a client: from its relayed address, to a peer the policy allows
    /// on that port, of the relayed address's family.
    fn check_to_peer(&self, flow: ClientFlow, forward: &Forward, datagram: &[u8]) {
        assert_eq!(
            self.owners.get(&forward.from),
            Some(&flow),
            "relayed from {} which is not an allocation of {flow:?}",
            forward.from
        );
        assert_eq!(forward.from.is_ipv4(), forward.to.is_ipv4(), "{forward:?}");
        let ports = self
            .policy
            .check(forward.to.ip())
            .unwrap_or_else(|denied| panic!("relayed to a denied peer: {denied} ({forward:?})"));
        assert!(
            self.policy.allows_port(ports, forward.to.port()),
            "relayed to a port the policy refuses: {forward:?}"
        );
        match &forward.payload {
            Payload::Input(range) => assert!(
                range.end <= datagram.len() && range.start <= range.end,
                "{forward:?}"
            ),
            Payload::Output => panic!("client data is relayed from the input: {forward:?}"),
        }
    }

    fn peer_datagram(&mut self, allocation: u8, peer: Peer, data: &[u8]) {
        let relays: Vec<SocketAddr> = self.owners.keys().copied().collect();
        let relay = match relays.get(usize::from(allocation) % relays.len().max(1)) {
            Some(relay) => *relay,
            None => SocketAddr::new(RELAY_RELAYED_V4.into(), 49152),
        };
        let peer = self.peer(peer);
        if let Some((forward, _)) = self.relay.peer_datagram(relay, peer, data) {
            let owner = self
                .owners
                .get(&relay)
                .unwrap_or_else(|| panic!("relayed from {relay}, which no allocation owns"));
            assert_eq!(
                (forward.from, forward.to),
                (owner.listener, owner.client),
                "peer data to someone other than the allocation's client"
            );
        }
        self.check_fast_path();
    }

    /// Checks and applies the fast-path commands the core emitted.
    fn check_fast_path(&mut self) {
        for command in self.relay.take_fast_path() {
            match &command {
                FastPathCommand::InstallAllocation(entry) => {
                    assert!(
                        [IpAddr::V4(RELAY_RELAYED_V4), IpAddr::V6(RELAY_RELAYED_V6)]
                            .contains(&entry.relay.ip()),
                        "{entry:?}"
                    );
                    self.owners.insert(entry.relay, entry.flow);
                }
                FastPathCommand::RemoveAllocation { relay, .. } => {
                    self.owners.remove(relay);
                }
                FastPathCommand::InstallPermission(entry) => {
                    let peer = entry.peer_ip;
                    assert_eq!(
                        peer.is_ipv4(),
                        entry.relay.is_ipv4(),
                        "a permission of the other family: {entry:?}"
                    );
                    assert!(
                        !is_ipv4_written_as_ipv6(peer),
                        "an IPv4 peer written as IPv6: {entry:?}"
                    );
                    assert_eq!(
                        self.policy
                            .check(peer)
                            .map(|ports| PeerPortRange::from(self.policy.ports(ports))),
                        Ok(entry.ports),
                        "a permission the policy does not give: {entry:?}"
                    );
                    assert_eq!(self.owners.get(&entry.relay), Some(&entry.flow));
                }
                FastPathCommand::InstallChannel(entry) => {
                    let peer = entry.peer;
                    assert_eq!(peer.is_ipv4(), entry.relay.is_ipv4(), "{entry:?}");
                    let ports = self.policy.check(peer.ip()).unwrap_or_else(|denied| {
                        panic!("a channel to a denied peer: {denied} ({entry:?})")
                    });
                    assert!(self.policy.allows_port(ports, peer.port()), "{entry:?}");
                    assert_eq!(self.owners.get(&entry.relay), Some(&entry.flow));
                    if !self.model.is_userspace_only(entry.relay) {
                        assert!(
                            self.model
                                .datapath()
                                .permissions
                                .contains_key(&(entry.relay, peer.ip())),
                            "a channel before its permission: {entry:?}"
                        );
                    }
                }
                FastPathCommand::RemovePermission { .. }
                | FastPathCommand::RemoveChannel { .. }
                | FastPathCommand::LimitRelayBandwidth { .. } => {}
            }
            self.model.apply(command);
        }
    }
}

/// A few scripts that reach deep states: allocations with permissions and channels,
/// data both ways, expiry.
pub fn seeds() -> Vec<Vec<u8>> {
    // Scripts are read from bytes by `Arbitrary`; random bytes already make well-formed
    // scripts, so the seeds are plain byte patterns of several lengths.
    (0u8..8)
        .map(|seed| {
            (0..512u32)
                .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
                .collect()
        })
        .collect()
}
