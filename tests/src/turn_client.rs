//! A small programmable TURN client and peer for the end-to-end tests: unlike
//! `turnutils_uclient` it can stop between steps (e.g. to let a permission expire) and
//! report exactly what the relay delivered. It speaks through `turn_relay`'s STUN codec:
//! Allocate with long-term credentials (RFC 8656 §7.1, RFC 8489 §9.2), CreatePermission
//! (RFC 8656 §9.1), ChannelBind (RFC 8656 §12.1) and the relayed data the client receives
//! (Data indications, RFC 8656 §11.4; ChannelData, §12.5).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use md5::{Digest as _, Md5};
use turn_relay::protocol::stun::attributes as attr;
use turn_relay::protocol::stun::channel_data::{self, ChannelData};
use turn_relay::protocol::stun::{Class, Message, MessageBuilder, Method, TransactionId};

use crate::{Netns, User, CLIENT_V4, CLIENT_V6};

/// Retransmissions of one request (RFC 8489 §6.2.1 Rc, shortened for a local link).
const TRANSMISSIONS: u32 = 5;
/// First retransmission timeout; doubled after every transmission.
const INITIAL_RTO: Duration = Duration::from_millis(250);
/// Largest datagram read.
const RECEIVE_BUFFER: usize = 2048;
/// A fresh nonce is taken at most this often per request (438 Stale Nonce, RFC 8489 §9.2.4).
const STALE_NONCE_RETRIES: u32 = 2;

/// A 96-bit transaction id unique within the test process (RFC 8489 §5).
fn transaction_id() -> TransactionId {
    let mut id = [0u8; 12];
    // RandomState is seeded randomly per instance: two independent 64-bit draws.
    let first = RandomState::new().build_hasher().finish().to_ne_bytes();
    let second = RandomState::new().build_hasher().finish().to_ne_bytes();
    id[..8].copy_from_slice(&first);
    id[8..].copy_from_slice(&second[..4]);
    TransactionId(id)
}

/// The long-term credential key MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
fn long_term_key(user: &User, realm: &str) -> Vec<u8> {
    Md5::digest(format!("{}:{realm}:{}", user.name, user.password)).to_vec()
}

/// Application data the relay delivered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A Data indication (RFC 8656 §11.4) from `peer`.
    DataIndication { peer: SocketAddr, data: Vec<u8> },
    /// ChannelData (RFC 8656 §12.5) on channel `number`.
    ChannelData { number: u16, data: Vec<u8> },
}

impl Delivered {
    pub fn data(&self) -> &[u8] {
        match self {
            Delivered::DataIndication { data, .. } | Delivered::ChannelData { data, .. } => data,
        }
    }
}

/// An authenticated allocation held by a UDP socket in the client namespace.
pub struct TurnClient {
    socket: UdpSocket,
    user: User,
    realm: String,
    nonce: Vec<u8>,
    key: Vec<u8>,
    relayed: SocketAddr,
}

impl TurnClient {
    /// Opens a socket on [`CLIENT_V4`] (or [`CLIENT_V6`]) in the client namespace `netns`
    /// and allocates a UDP relayed address on `server` as `user`: Allocate → 401 (REALM,
    /// NONCE) → Allocate with MESSAGE-INTEGRITY.
    pub fn allocate(netns: &Netns, server: SocketAddr, user: &User) -> Result<TurnClient> {
        let local = SocketAddr::new(
            if server.is_ipv4() {
                IpAddr::V4(CLIENT_V4)
            } else {
                IpAddr::V6(CLIENT_V6)
            },
            0,
        );
        let socket = netns.run_inside(move || {
            let socket = UdpSocket::bind(local).context("binding the client socket")?;
            socket
                .connect(server)
                .with_context(|| format!("connecting the client socket to {server}"))?;
            Ok(socket)
        })?;
        let mut request = Vec::new();
        MessageBuilder::new(
            &mut request,
            Method::ALLOCATE,
            Class::Request,
            &transaction_id(),
        )
        .attribute(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        let challenge = transact(&socket, &request)?;
        let challenge = Message::parse(&challenge).context("unparseable Allocate response")?;
        let code = challenge
            .error_code()
            .ok()
            .flatten()
            .map(|error| error.code);
        ensure!(
            challenge.class() == Class::ErrorResponse && code == Some(401),
            "expected 401 to an unauthenticated Allocate, got {:?} {code:?}",
            challenge.class()
        );
        let realm = challenge
            .realm()
            .ok()
            .flatten()
            .context("401 without REALM")?
            .to_owned();
        let nonce = challenge
            .nonce()
            .ok()
            .flatten()
            .context("401 without NONCE")?
            .to_vec();
        let mut client = TurnClient {
            key: long_term_key(user, &realm),
            socket,
            user: user.clone(),
            realm,
            nonce,
            relayed: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let response = client.authenticated(Method::ALLOCATE, |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &[attr::TRANSPORT_UDP, 0, 0, 0]);
        })?;
        let response = Message::parse(&response).context("unparseable Allocate response")?;
        client.relayed = response
            .xor_relayed_address()
            .ok()
            .flatten()
            .context("Allocate success without XOR-RELAYED-ADDRESS")?;
        Ok(client)
    }

    /// The relayed transport address the server allocated.
    pub fn relayed_address(&self) -> SocketAddr {
        self.relayed
    }

    /// CreatePermission for `peer`'s IP address (RFC 8656 §9.1; the port is ignored).
    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<()> {
        self.authenticated(Method::CREATE_PERMISSION, |builder| {
            builder.xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .map(drop)
    }

    /// ChannelBind `number` to `peer` (RFC 8656 §12.1); also installs or refreshes the
    /// permission for the peer's IP. Binding the same pair again refreshes both.
    pub fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Result<()> {
        let mut value = [0u8; 4];
        value[..2].copy_from_slice(&number.to_be_bytes());
        self.authenticated(Method::CHANNEL_BIND, |builder| {
            builder
                .attribute(attr::CHANNEL_NUMBER, &value)
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .map(drop)
    }

    /// The next relayed datagram within `limit`, or None when nothing arrives. Anything
    /// else the server sends (there should be nothing) is an error.
    pub fn receive(&self, limit: Duration) -> Result<Option<Delivered>> {
        let mut buffer = [0u8; RECEIVE_BUFFER];
        let Some(len) = receive_within(&self.socket, &mut buffer, limit)? else {
            return Ok(None);
        };
        let datagram = buffer.get(..len).unwrap_or_default();
        if channel_data::is_channel_data(datagram) {
            let message = ChannelData::parse(datagram)
                .with_context(|| format!("malformed ChannelData {datagram:02x?}"))?;
            return Ok(Some(Delivered::ChannelData {
                number: message.number,
                data: message.data.to_vec(),
            }));
        }
        let message = Message::parse(datagram)
            .map_err(|error| anyhow::anyhow!("unparseable datagram from the relay: {error:?}"))?;
        ensure!(
            message.method() == Method::DATA && message.class() == Class::Indication,
            "expected relayed data, got {:?} {:?}",
            message.method(),
            message.class()
        );
        Ok(Some(Delivered::DataIndication {
            peer: message
                .xor_peer_address()
                .ok()
                .flatten()
                .context("Data indication without XOR-PEER-ADDRESS")?,
            data: message
                .data()
                .context("Data indication without DATA")?
                .to_vec(),
        }))
    }

    /// Sends a request with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY (RFC 8489
    /// §9.2.3) and returns the success response; takes a fresh nonce on 438.
    fn authenticated(
        &mut self,
        method: Method,
        attributes: impl Fn(&mut MessageBuilder<'_>),
    ) -> Result<Vec<u8>> {
        let mut request = Vec::new();
        for _ in 0..STALE_NONCE_RETRIES {
            let mut builder =
                MessageBuilder::new(&mut request, method, Class::Request, &transaction_id());
            attributes(&mut builder);
            builder
                .attribute(attr::USERNAME, self.user.name.as_bytes())
                .attribute(attr::REALM, self.realm.as_bytes())
                .attribute(attr::NONCE, &self.nonce)
                .message_integrity(&self.key)
                .fingerprint();
            let response = transact(&self.socket, &request)?;
            let message = Message::parse(&response)
                .map_err(|error| anyhow::anyhow!("unparseable {method:?} response: {error:?}"))?;
            match message.class() {
                Class::SuccessResponse => {
                    ensure!(
                        message.verify_message_integrity(&self.key),
                        "{method:?} success response fails MESSAGE-INTEGRITY"
                    );
                    return Ok(response);
                }
                Class::ErrorResponse => {
                    let error = message.error_code().ok().flatten();
                    match error {
                        Some(error) if error.code == 438 => {
                            self.nonce = message
                                .nonce()
                                .ok()
                                .flatten()
                                .context("438 without NONCE")?
                                .to_vec();
                        }
                        Some(error) => {
                            bail!("{method:?} failed: {} {}", error.code, error.reason)
                        }
                        None => bail!("{method:?} failed without ERROR-CODE"),
                    }
                }
                class => bail!("{method:?} answered with a {class:?}"),
            }
        }
        bail!("{method:?} kept failing with 438 Stale Nonce")
    }
}

/// Sends `request` and returns the response with its transaction id, retransmitting with
/// a doubling timeout (RFC 8489 §6.2.1). Other datagrams meanwhile are skipped.
fn transact(socket: &UdpSocket, request: &[u8]) -> Result<Vec<u8>> {
    let transaction = request
        .get(8..20)
        .context("request shorter than a header")?;
    let mut buffer = [0u8; RECEIVE_BUFFER];
    let mut timeout = INITIAL_RTO;
    for _ in 0..TRANSMISSIONS {
        socket.send(request).context("sending a request")?;
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(len) = receive_within(socket, &mut buffer, left)? else {
                break;
            };
            let datagram = buffer.get(..len).unwrap_or_default();
            if !channel_data::is_channel_data(datagram) && datagram.get(8..20) == Some(transaction)
            {
                return Ok(datagram.to_vec());
            }
        }
        timeout *= 2;
    }
    bail!("no response after {TRANSMISSIONS} transmissions")
}

/// One datagram within `limit` (None on timeout).
fn receive_within(socket: &UdpSocket, buffer: &mut [u8], limit: Duration) -> Result<Option<usize>> {
    if limit.is_zero() {
        return Ok(None);
    }
    socket.set_read_timeout(Some(limit))?;
    match socket.recv(buffer) {
        Ok(len) => Ok(Some(len)),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error).context("receiving"),
    }
}

/// A UDP socket in the peer namespace standing in for a TURN peer.
pub struct Peer {
    socket: UdpSocket,
}

impl Peer {
    /// Binds `address` (an address of `netns`, port 0 for any) inside `netns`.
    pub fn bind(netns: &Netns, address: SocketAddr) -> Result<Peer> {
        let socket = netns.run_inside(move || {
            UdpSocket::bind(address).with_context(|| format!("binding the peer socket {address}"))
        })?;
        Ok(Peer { socket })
    }

    pub fn address(&self) -> Result<SocketAddr> {
        self.socket.local_addr().context("peer socket address")
    }

    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> Result<()> {
        self.socket
            .send_to(data, to)
            .with_context(|| format!("sending from the peer to {to}"))
            .map(drop)
    }
}
