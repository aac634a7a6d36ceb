//! Tests of the TURN server, driven through an in-memory harness: no sockets, a fake
//! clock, a seeded RNG, and the fast-path commands applied to an [`InMemoryDatapath`]
//! after every step.

mod accounting;
mod allocate;
mod authentication;
mod bandwidth;
mod expiry;
mod fast_path;
mod operations;
mod peers;
mod relay;
mod streams;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::Sha256;

use crate::protocol::auth::{AuthConfig, Authenticator, StaticSecret, StaticUser};
use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, Datapath, DatapathError, FastPath, InMemoryDatapath,
    PermissionEntry, RelayedTraffic, Transport,
};
use crate::protocol::policy::PeerPolicy;
use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::{
    Class, Message, MessageBuilder, Method, PasswordAlgorithm, TransactionId,
};

use super::{
    Command, Forward, Now, RelayAddress, RelayedCounts, Server, ServerConfig, ServerLimits,
    Transmit,
};

pub(super) const REALM: &str = "example.test";
pub(super) const LISTENER: &str = "198.18.0.1:3478";
pub(super) const RELAY_V4_BIND: &str = "198.18.0.1";
pub(super) const RELAY_V4_PUBLIC: &str = "198.19.0.1";
pub(super) const RELAY_V6_BIND: &str = "2001:db8::1";
pub(super) const RELAY_V6_PUBLIC: &str = "2001:db8::100";
pub(super) const DENIED_NET: &str = "198.18.99.0/24";
/// The test address ranges (benchmarking, documentation) are denied by default; the
/// tests' policy allows them, as a deployment's `peers.allow` would.
pub(super) const ALLOWED_NETS: [&str; 2] = ["198.18.0.0/15", "2001:db8::/32"];

pub(super) fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

pub(super) fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

pub(super) fn flow(client: &str) -> ClientFlow {
    ClientFlow::udp(addr(client), addr(LISTENER))
}

/// The flow of a client connected over `transport` (TCP or TLS) from `client`.
pub(super) fn stream_flow(client: &str, transport: Transport) -> ClientFlow {
    ClientFlow {
        transport,
        ..flow(client)
    }
}

pub(super) fn config() -> ServerConfig {
    ServerConfig {
        realm: REALM.to_owned(),
        software: Some("turn-relay test".to_owned()),
        relay_v4: Some(RelayAddress {
            bind: ip(RELAY_V4_BIND),
            advertised: ip(RELAY_V4_PUBLIC),
        }),
        relay_v6: Some(RelayAddress {
            bind: ip(RELAY_V6_BIND),
            advertised: ip(RELAY_V6_PUBLIC),
        }),
        ..ServerConfig::default()
    }
}

fn authenticator() -> Authenticator {
    Authenticator::new(AuthConfig {
        static_users: vec![
            StaticUser {
                name: "alice".to_owned(),
                secret: StaticSecret::Password("alice-password".to_owned()),
            },
            StaticUser {
                name: "bob".to_owned(),
                secret: StaticSecret::Password("bob-password".to_owned()),
            },
        ],
        auth_secrets: vec![REST_SECRET.to_owned()],
        zrest_secrets: vec![ZREST_SECRET.to_owned()],
        nonce_lifetime: Duration::from_secs(600),
        nonce_secret: b"test nonce secret".to_vec(),
        advertise_password_algorithms: true,
    })
}

/// The coturn REST API (`use-auth-secret`) secret of the tests.
pub(super) const REST_SECRET: &str = "rest secret";
/// The Wire zrest secret of the tests.
pub(super) const ZREST_SECRET: &str = "zrest secret";

/// The password of `username`: `<name>-password` for the static users, else the
/// password a credential service derives for a time-limited username (coturn REST
/// `expiry:user`, zrest `d=expiry.v=1…`).
pub(super) fn password(username: &str) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let base64 = |mac: &[u8]| base64::engine::general_purpose::STANDARD.encode(mac);
    if username.starts_with("d=") {
        let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(ZREST_SECRET.as_bytes())
            .expect("any key length");
        mac.update(username.as_bytes());
        return base64(&mac.finalize().into_bytes());
    }
    if username.contains(':') {
        let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(REST_SECRET.as_bytes())
            .expect("any key length");
        mac.update(username.as_bytes());
        return base64(&mac.finalize().into_bytes());
    }
    format!("{username}-password")
}

pub(super) fn key(username: &str, algorithm: PasswordAlgorithm) -> Vec<u8> {
    let input = format!("{username}:{REALM}:{}", password(username));
    match algorithm {
        PasswordAlgorithm::Md5 => Md5::digest(input).to_vec(),
        PasswordAlgorithm::Sha256 => Sha256::digest(input).to_vec(),
    }
}

/// How a test request is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Credentials<'a> {
    None,
    /// MD5 key, MESSAGE-INTEGRITY (RFC 5389 style).
    Md5(&'a str),
    /// SHA-256 key via PASSWORD-ALGORITHM, MESSAGE-INTEGRITY-SHA256 (RFC 8489).
    Sha256(&'a str),
    /// MD5 key but a wrong password.
    WrongPassword(&'a str),
    /// Like `Sha256`, but USERHASH instead of USERNAME (RFC 8489 §14.4).
    Userhash(&'a str),
}

/// The in-memory model with two knobs for tests of the applier: the fast-path traffic it
/// reports for installed allocations (zeros once removed, as the maps' counters vanish
/// with their entries), and a peer IP whose permissions it refuses (a full map).
pub(super) struct ScriptedDatapath {
    pub(super) entries: InMemoryDatapath,
    pub(super) traffic: RelayedTraffic,
    pub(super) refused_peer: Option<IpAddr>,
}

impl Datapath for ScriptedDatapath {
    fn install_allocation(&mut self, entry: AllocationEntry) -> Result<(), DatapathError> {
        self.entries.install_allocation(entry)
    }
    fn remove_allocation(&mut self, flow: ClientFlow, relay: SocketAddr) {
        self.entries.remove_allocation(flow, relay);
    }
    fn install_permission(&mut self, entry: PermissionEntry) -> Result<(), DatapathError> {
        if Some(entry.peer_ip) == self.refused_peer {
            return Err(DatapathError::MapFull);
        }
        self.entries.install_permission(entry)
    }
    fn remove_permission(&mut self, relay: SocketAddr, peer_ip: IpAddr) {
        self.entries.remove_permission(relay, peer_ip);
    }
    fn install_channel(&mut self, entry: ChannelEntry) -> Result<(), DatapathError> {
        self.entries.install_channel(entry)
    }
    fn remove_channel(&mut self, relay: SocketAddr, number: u16) {
        self.entries.remove_channel(relay, number);
    }
    fn relayed_traffic(&self, relay: SocketAddr) -> RelayedTraffic {
        if self.entries.allocations.contains_key(&relay) {
            self.traffic
        } else {
            RelayedTraffic::default()
        }
    }
    fn limit_relay_bandwidth(&mut self, bytes_per_second: u64) -> Result<(), DatapathError> {
        self.entries.limit_relay_bandwidth(bytes_per_second)
    }
}

pub(super) struct Harness<D: Datapath = InMemoryDatapath> {
    pub(super) server: Server<StdRng>,
    pub(super) fast_path: FastPath<D>,
    pub(super) now: Now,
    /// The TTL / hop limit the harness's datagrams arrive with.
    pub(super) hop_limit: Option<u8>,
    next_transaction: u8,
    /// The nonce in use per client IP (nonces are bound to the client's IP).
    pub(super) nonces: HashMap<IpAddr, String>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Harness::with(config(), InMemoryDatapath::default())
    }

    pub(super) fn with_config(config: ServerConfig) -> Self {
        Harness::with(config, InMemoryDatapath::default())
    }
}

impl<D: Datapath> Harness<D> {
    pub(super) fn with(config: ServerConfig, datapath: D) -> Self {
        Harness::with_allowed(config, datapath, &ALLOWED_NETS)
    }

    /// A harness whose peer policy allows `allowed` (and denies [`DENIED_NET`]).
    pub(super) fn with_allowed(config: ServerConfig, datapath: D, allowed: &[&str]) -> Self {
        let relay_ips = [config.relay_v4, config.relay_v6]
            .into_iter()
            .flatten()
            .flat_map(|relay| [relay.bind, relay.advertised])
            .collect();
        let policy = PeerPolicy::new(
            allowed
                .iter()
                .map(|net| net.parse().expect("net"))
                .collect(),
            vec![DENIED_NET.parse().expect("net")],
            relay_ips,
        );
        let server = Server::new(config, authenticator(), policy, StdRng::seed_from_u64(42));
        Harness {
            server,
            fast_path: FastPath::new(datapath),
            now: Now {
                instant: Instant::now(),
                unix_secs: 1_700_000_000,
            },
            hop_limit: Some(64),
            next_transaction: 0,
            nonces: HashMap::new(),
        }
    }

    pub(super) fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.server = self.server.with_limits(limits);
        self
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now.instant += by;
        self.now.unix_secs += by.as_secs();
        self.server.handle_timeout(self.now);
        self.apply_fast_path();
    }

    /// Applies the fast-path commands the server queued, in order.
    pub(super) fn apply_fast_path(&mut self) {
        while let Some(command) = self.server.poll_fast_path() {
            self.fast_path.apply(command);
        }
    }

    /// The fast path's entries (the harness applies the commands after every step it
    /// drives; a test calling the server directly calls [`Self::apply_fast_path`]).
    pub(super) fn datapath(&self) -> &D {
        self.fast_path.datapath()
    }

    pub(super) fn transaction_id(&mut self) -> TransactionId {
        self.next_transaction = self.next_transaction.wrapping_add(1);
        TransactionId([self.next_transaction; 12])
    }

    /// Feeds a datagram from `flow` and returns what the server queued.
    pub(super) fn send(
        &mut self,
        flow: ClientFlow,
        packet: &[u8],
    ) -> (Option<Forward>, Vec<Command>, Vec<Transmit>) {
        let forward = self
            .server
            .handle_client_datagram(self.now, flow, packet, self.hop_limit);
        self.apply_fast_path();
        let commands = std::iter::from_fn(|| self.server.poll_command()).collect();
        let transmits = std::iter::from_fn(|| self.server.poll_transmit()).collect();
        (forward, commands, transmits)
    }

    /// Feeds a datagram from `peer` to `relay`, framing any output in `out`; returns the
    /// forward the server asks for.
    pub(super) fn peer_datagram(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Forward> {
        self.server
            .handle_peer_datagram(self.now.instant, relay, peer, packet, out, self.hop_limit)
    }

    /// A hand-built message of `method` and `class` with a fresh transaction ID; `body`
    /// appends the attributes.
    pub(super) fn message(
        &mut self,
        method: Method,
        class: Class,
        body: impl FnOnce(&mut MessageBuilder<'_>),
    ) -> Vec<u8> {
        let transaction_id = self.transaction_id();
        let mut buf = Vec::new();
        body(&mut MessageBuilder::new(
            &mut buf,
            method,
            class,
            &transaction_id,
        ));
        buf
    }

    /// A fresh nonce, obtained the way a client does: an unauthenticated request → 401.
    pub(super) fn fetch_nonce(&mut self, flow: ClientFlow) -> String {
        let buf = self.message(Method::ALLOCATE, Class::Request, |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        });
        let (_, _, transmits) = self.send(flow, &buf);
        let response = transmits.first().expect("401 answer");
        let message = Message::parse(&response.payload).expect("parse 401");
        let nonce = message.nonce().expect("nonce").expect("nonce present");
        String::from_utf8(nonce.to_vec()).expect("ascii nonce")
    }

    /// Encodes a request with `attributes` and the requested credentials.
    pub(super) fn encode_request(
        &mut self,
        flow: ClientFlow,
        method: Method,
        transaction_id: &TransactionId,
        attributes: &[Attr],
        credentials: Credentials<'_>,
    ) -> Vec<u8> {
        if credentials != Credentials::None && !self.nonces.contains_key(&flow.client.ip()) {
            let nonce = self.fetch_nonce(flow);
            self.nonces.insert(flow.client.ip(), nonce);
        }
        let mut buf = Vec::new();
        let mut builder = MessageBuilder::new(&mut buf, method, Class::Request, transaction_id);
        for attribute in attributes {
            match attribute {
                Attr::Raw(kind, value) => builder.attribute(*kind, value),
                Attr::XorPeer(peer) => builder.xor_address(attr::XOR_PEER_ADDRESS, *peer),
            };
        }
        let nonce = self
            .nonces
            .get(&flow.client.ip())
            .cloned()
            .unwrap_or_default();
        let add_realm_and_nonce = |builder: &mut MessageBuilder<'_>| {
            builder
                .attribute(attr::REALM, REALM.as_bytes())
                .attribute(attr::NONCE, nonce.as_bytes());
        };
        let add_identity = |builder: &mut MessageBuilder<'_>, username: &str| {
            builder.attribute(attr::USERNAME, username.as_bytes());
            add_realm_and_nonce(builder);
        };
        match credentials {
            Credentials::None => {}
            Credentials::Md5(username) => {
                add_identity(&mut builder, username);
                builder.message_integrity(&key(username, PasswordAlgorithm::Md5));
            }
            Credentials::WrongPassword(username) => {
                add_identity(&mut builder, username);
                builder.message_integrity(b"not the key");
            }
            Credentials::Sha256(username) | Credentials::Userhash(username) => {
                if matches!(credentials, Credentials::Userhash(_)) {
                    let userhash = Sha256::digest(format!("{username}:{REALM}"));
                    builder.attribute(attr::USERHASH, &userhash);
                    add_realm_and_nonce(&mut builder);
                } else {
                    add_identity(&mut builder, username);
                }
                builder
                    .password_algorithms(&[PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5])
                    .password_algorithm(PasswordAlgorithm::Sha256)
                    .message_integrity_sha256(&key(username, PasswordAlgorithm::Sha256));
            }
        }
        buf
    }

    /// Sends a request and returns the single response it produced, plus the commands.
    pub(super) fn request(
        &mut self,
        flow: ClientFlow,
        method: Method,
        attributes: &[Attr],
        credentials: Credentials<'_>,
    ) -> (Vec<u8>, Vec<Command>) {
        let transaction_id = self.transaction_id();
        let packet = self.encode_request(flow, method, &transaction_id, attributes, credentials);
        let (forward, commands, mut transmits) = self.send(flow, &packet);
        assert!(forward.is_none(), "requests are never forwarded");
        assert_eq!(transmits.len(), 1, "exactly one response");
        let transmit = transmits.remove(0);
        assert_eq!((transmit.from, transmit.to), (flow.listener, flow.client));
        let response = Message::parse(&transmit.payload).expect("response parses");
        assert_eq!(response.transaction_id(), &transaction_id);
        assert_eq!(response.method(), method);
        (transmit.payload, commands)
    }

    /// An Allocate (UDP) for `flow` signed as `user` (MD5), not sent: for tests that
    /// drive the server step by step.
    pub(super) fn signed_allocate(&mut self, flow: ClientFlow, user: &str) -> Vec<u8> {
        let transaction_id = self.transaction_id();
        self.encode_request(
            flow,
            Method::ALLOCATE,
            &transaction_id,
            &[raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])],
            Credentials::Md5(user),
        )
    }

    /// Allocates (UDP) for `flow` with `credentials` and extra attributes; returns the
    /// response.
    pub(super) fn allocate_as(
        &mut self,
        flow: ClientFlow,
        credentials: Credentials<'_>,
        extra: &[Attr],
    ) -> (Vec<u8>, Vec<Command>) {
        let mut attributes = vec![raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])];
        attributes.extend_from_slice(extra);
        self.request(flow, Method::ALLOCATE, &attributes, credentials)
    }

    /// Allocates for `flow` as alice (MD5) with extra attributes; returns the response.
    pub(super) fn allocate_with(
        &mut self,
        flow: ClientFlow,
        extra: &[Attr],
    ) -> (Vec<u8>, Vec<Command>) {
        self.allocate_as(flow, Credentials::Md5("alice"), extra)
    }

    /// A successful allocation for `flow`; returns the relay *bind* address.
    pub(super) fn allocate(&mut self, flow: ClientFlow) -> SocketAddr {
        let (response, commands) = self.allocate_with(flow, &[]);
        assert_success(&response);
        match commands.as_slice() {
            [Command::OpenRelay { relay }] => *relay,
            other => panic!("expected one OpenRelay, got {other:?}"),
        }
    }

    pub(super) fn create_permission(&mut self, flow: ClientFlow, peers: &[SocketAddr]) -> Vec<u8> {
        let attributes: Vec<_> = peers.iter().map(|peer| Attr::XorPeer(*peer)).collect();
        let (response, _) = self.request(
            flow,
            Method::CREATE_PERMISSION,
            &attributes,
            Credentials::Md5("alice"),
        );
        response
    }

    pub(super) fn channel_bind(
        &mut self,
        flow: ClientFlow,
        number: u16,
        peer: SocketAddr,
    ) -> Vec<u8> {
        let attributes = vec![
            raw(attr::CHANNEL_NUMBER, &channel_number(number)),
            Attr::XorPeer(peer),
        ];
        let (response, _) = self.request(
            flow,
            Method::CHANNEL_BIND,
            &attributes,
            Credentials::Md5("alice"),
        );
        response
    }

    pub(super) fn refresh(
        &mut self,
        flow: ClientFlow,
        lifetime: Option<u32>,
    ) -> (Vec<u8>, Vec<Command>) {
        let attributes: Vec<_> = lifetime
            .map(|secs| raw(attr::LIFETIME, &secs.to_be_bytes()))
            .into_iter()
            .collect();
        self.request(
            flow,
            Method::REFRESH,
            &attributes,
            Credentials::Md5("alice"),
        )
    }
}

/// A ChannelData message on channel `number` carrying `data`.
pub(super) fn channel_data(number: u16, data: &[u8]) -> Vec<u8> {
    let mut packet = Vec::new();
    crate::protocol::stun::channel_data::encode(&mut packet, number, data);
    packet
}

/// A Send indication carrying `data` to `peer`.
pub(super) fn send_indication(harness: &mut Harness, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    send_indication_with(harness, peer, |builder| {
        builder.attribute(attr::DATA, data);
    })
}

/// A Send indication to `peer` whose XOR-PEER-ADDRESS is followed by what `rest` adds.
pub(super) fn send_indication_with(
    harness: &mut Harness,
    peer: SocketAddr,
    rest: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    harness.message(Method::SEND, Class::Indication, |builder| {
        builder.xor_address(attr::XOR_PEER_ADDRESS, peer);
        rest(builder);
    })
}

/// An attribute of a test request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attr {
    Raw(u16, Vec<u8>),
    /// XOR-PEER-ADDRESS, encoded against the request's transaction ID.
    XorPeer(SocketAddr),
}

pub(super) fn raw(kind: u16, value: &[u8]) -> Attr {
    Attr::Raw(kind, value.to_vec())
}

/// REQUESTED-ADDRESS-FAMILY with family code `family` (1 = IPv4, 2 = IPv6; RFC 8656 §18.8).
pub(super) fn requested_family(family: u8) -> Attr {
    raw(attr::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0])
}

pub(super) fn channel_number(number: u16) -> Vec<u8> {
    let mut value = number.to_be_bytes().to_vec();
    value.extend_from_slice(&[0, 0]);
    value
}

pub(super) fn parse(response: &[u8]) -> Message<'_> {
    Message::parse(response).expect("response parses")
}

pub(super) fn assert_success(response: &[u8]) {
    let message = parse(response);
    if let Ok(Some(error)) = message.error_code() {
        panic!("expected success, got {} {}", error.code, error.reason);
    }
    assert_eq!(message.class(), Class::SuccessResponse);
}

pub(super) fn error_code(response: &[u8]) -> u16 {
    let message = parse(response);
    assert_eq!(message.class(), Class::ErrorResponse);
    message
        .error_code()
        .expect("valid ERROR-CODE")
        .expect("ERROR-CODE present")
        .code
}
