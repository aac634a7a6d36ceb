//! The STUN/TURN client of the tests and the benchmark, built on the relay's own codec
//! (`turn_relay::protocol::stun`): Allocate with long-term credentials (RFC 8656 §7.1,
//! RFC 8489 §9.2), Refresh (§8), CreatePermission (§9.1), ChannelBind (§12.1), Send
//! indications (§11.2), ChannelData (§12.4), and what a client reads from responses and
//! relayed data (Data indications, §11.4; ChannelData, §12.5). Over UDP, TCP or TLS
//! ([`Link`]); on a stream, messages are framed as RFC 8656 §3.1 and §12.5 say, with the
//! relay's own framing functions. It follows 300 Try Alternate to the ALTERNATE-SERVER
//! (RFC 8489 §10) once the 300's MESSAGE-INTEGRITY checks out.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use turn_relay::protocol::auth::md5_long_term_key;
use turn_relay::protocol::stun::attributes as attr;
use turn_relay::protocol::stun::channel_data::{self, ChannelData};
use turn_relay::protocol::stun::{Class, Message, MessageBuilder, Method, TransactionId};

use crate::addresses::client_for;
use crate::config::User;
use crate::netns::Namespace;

mod link;
pub use link::{routed_socket, Link, Stream};

/// Transmissions of one request (RFC 8489 §6.2.1 Rc, shortened for a local link).
const TRANSMISSIONS: u32 = 5;
/// First retransmission timeout, doubled after every transmission up to
/// [`MAX_RTO`]: about 6 s in all, so a server draining an overload backlog gets time.
const INITIAL_RTO: Duration = Duration::from_millis(200);
const MAX_RTO: Duration = Duration::from_millis(3200);
/// Largest datagram read.
const RECEIVE_BUFFER: usize = 2048;
/// A fresh nonce is taken at most this often per request (438 Stale Nonce, RFC 8489 §9.2.4).
const STALE_NONCE_RETRIES: u32 = 2;
/// How many 300 Try Alternate redirections one allocation follows.
const MAX_REDIRECTS: usize = 3;
/// REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §18.11).
const FAMILY_IPV6: [u8; 4] = [0x02, 0, 0, 0];
/// REQUESTED-TRANSPORT UDP (RFC 8656 §18.7).
const TRANSPORT_UDP: [u8; 4] = [attr::TRANSPORT_UDP, 0, 0, 0];

/// A random 96-bit transaction id (RFC 8489 §5).
pub fn transaction_id() -> TransactionId {
    TransactionId(rand::random())
}

/// The long-term credentials of an allocation: what signs its requests (RFC 8489 §9.2.3).
#[derive(Clone, Debug)]
pub struct Session {
    pub username: String,
    pub realm: String,
    pub nonce: Vec<u8>,
    pub key: [u8; 16],
}

impl Session {
    /// The session a 401 (REALM, NONCE) opens for `user`.
    pub fn from_challenge(user: &User, challenge: &Response) -> Result<Session> {
        ensure!(
            challenge.error_code == Some(401),
            "expected 401 to an unauthenticated request, got {:?}",
            challenge.error_code
        );
        let realm = challenge.realm.clone().context("401 without REALM")?;
        Ok(Session {
            key: md5_long_term_key(&user.name, &realm, &user.password),
            nonce: challenge.nonce.clone().context("401 without NONCE")?,
            username: user.name.clone(),
            realm,
        })
    }
}

/// One STUN message: `attributes`, then, for a `session`, USERNAME, REALM, NONCE,
/// MESSAGE-INTEGRITY and FINGERPRINT.
pub fn message(
    method: Method,
    class: Class,
    transaction_id: &TransactionId,
    session: Option<&Session>,
    attributes: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(256);
    let mut builder = MessageBuilder::new(&mut buffer, method, class, transaction_id);
    attributes(&mut builder);
    if let Some(session) = session {
        builder
            .attribute(attr::USERNAME, session.username.as_bytes())
            .attribute(attr::REALM, session.realm.as_bytes())
            .attribute(attr::NONCE, &session.nonce)
            .message_integrity(&session.key)
            .fingerprint();
    }
    buffer
}

/// A Binding request (RFC 8489 §3).
pub fn binding_request() -> Vec<u8> {
    message(
        Method::BINDING,
        Class::Request,
        &transaction_id(),
        None,
        |_| {},
    )
}

/// An Allocate request for a UDP relayed address of the IPv6 family when `ipv6` (RFC
/// 8656 §7.1), signed by `session` when given.
pub fn allocate_request(ipv6: bool, session: Option<&Session>) -> Vec<u8> {
    message(
        Method::ALLOCATE,
        Class::Request,
        &transaction_id(),
        session,
        |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &TRANSPORT_UDP);
            if ipv6 {
                builder.attribute(attr::REQUESTED_ADDRESS_FAMILY, &FAMILY_IPV6);
            }
        },
    )
}

/// A Refresh request with `lifetime` seconds (0 deletes the allocation, RFC 8656 §8).
pub fn refresh_request(lifetime: u32, session: &Session) -> Vec<u8> {
    message(
        Method::REFRESH,
        Class::Request,
        &transaction_id(),
        Some(session),
        |builder| {
            builder.attribute(attr::LIFETIME, &lifetime.to_be_bytes());
        },
    )
}

/// A Send indication (RFC 8656 §11.2): XOR-PEER-ADDRESS, DATA and, when asked,
/// FINGERPRINT.
pub fn send_indication(
    transaction_id: [u8; 12],
    peer: SocketAddr,
    data: &[u8],
    fingerprint: bool,
) -> Vec<u8> {
    indication(Method::SEND, transaction_id, peer, data, fingerprint)
}

/// A Data indication (RFC 8656 §11.4), as the relay sends it.
pub fn data_indication(transaction_id: [u8; 12], peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    indication(Method::DATA, transaction_id, peer, data, false)
}

fn indication(
    method: Method,
    transaction_id: [u8; 12],
    peer: SocketAddr,
    data: &[u8],
    fingerprint: bool,
) -> Vec<u8> {
    message(
        method,
        Class::Indication,
        &TransactionId(transaction_id),
        None,
        |builder| {
            builder
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
                .attribute(attr::DATA, data);
            if fingerprint {
                builder.fingerprint();
            }
        },
    )
}

/// A ChannelData message (RFC 8656 §12.4), unpadded.
pub fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len());
    channel_data::encode(&mut out, channel, data);
    out
}

/// The application payload of a relayed datagram arriving at a client: the body of a
/// ChannelData message or the DATA attribute of a Data indication (RFC 8656 §11.6, §12.6).
pub fn relayed_payload(packet: &[u8]) -> Option<&[u8]> {
    if let Some(channel_data) = ChannelData::parse(packet) {
        return Some(channel_data.data);
    }
    let message = Message::parse(packet).ok()?;
    if message.method() != Method::DATA || message.class() != Class::Indication {
        return None;
    }
    message.data()
}

/// What a client reads from a response.
#[derive(Clone, Debug)]
pub struct Response {
    pub transaction_id: [u8; 12],
    pub success: bool,
    /// ERROR-CODE as class*100 + number (RFC 8489 §14.8), with its reason phrase.
    pub error_code: Option<u16>,
    pub reason: String,
    pub realm: Option<String>,
    pub nonce: Option<Vec<u8>>,
    pub relayed: Option<SocketAddr>,
    /// XOR-MAPPED-ADDRESS: the client's address as the server saw it.
    pub mapped: Option<SocketAddr>,
    /// ALTERNATE-SERVER (RFC 8489 §14.15), with 300 Try Alternate.
    pub alternate_server: Option<SocketAddr>,
}

/// An authenticated 300 Try Alternate: the server asks the client to go to `alternate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryAlternate {
    pub alternate: SocketAddr,
}

impl std::fmt::Display for TryAlternate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "300 Try Alternate: {}", self.alternate)
    }
}

impl std::error::Error for TryAlternate {}

impl Response {
    /// None when the datagram is not a STUN response.
    pub fn parse(packet: &[u8]) -> Option<Response> {
        let message = Message::parse(packet).ok()?;
        let class = message.class();
        if class != Class::SuccessResponse && class != Class::ErrorResponse {
            return None;
        }
        let error = message.error_code().ok().flatten();
        Some(Response {
            transaction_id: message.transaction_id().0,
            success: class == Class::SuccessResponse,
            error_code: error.as_ref().map(|error| error.code),
            reason: error
                .map(|error| error.reason.to_owned())
                .unwrap_or_default(),
            realm: message.realm().ok().flatten().map(str::to_owned),
            nonce: message.nonce().ok().flatten().map(<[u8]>::to_vec),
            relayed: message.xor_relayed_address().ok().flatten(),
            mapped: message.xor_mapped_address().ok().flatten(),
            alternate_server: message
                .attribute(attr::ALTERNATE_SERVER)
                .and_then(attr::decode_address),
        })
    }
}

/// Sends `request` on a connected socket and returns the response with its transaction
/// id, retransmitting with a doubling timeout (RFC 8489 §6.2.1). Other datagrams
/// meanwhile (relayed data) are skipped.
pub fn transact(socket: &UdpSocket, request: &[u8]) -> Result<Vec<u8>> {
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
        timeout = (timeout * 2).min(MAX_RTO);
    }
    bail!("no response after {TRANSMISSIONS} transmissions")
}

/// Whether a read with a timeout ended because the time was up.
fn timed_out(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One datagram within `limit` (None on timeout). A receive interrupted by a signal
/// (EINTR: Linux also returns it for sockets with a receive timeout after the process was
/// stopped and continued, with no handler installed) is retried until `limit`.
fn receive_within(socket: &UdpSocket, buffer: &mut [u8], limit: Duration) -> Result<Option<usize>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(buffer) {
            Ok(len) => return Ok(Some(len)),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) if timed_out(&error) => return Ok(None),
            Err(error) => return Err(error).context("receiving"),
        }
    }
}

/// A UDP socket in the client namespace on the client's address of `server`'s family,
/// connected to `server`.
pub fn client_socket(netns: &Namespace, server: SocketAddr) -> Result<UdpSocket> {
    let local = SocketAddr::new(client_for(server), 0);
    netns.run_inside(move || {
        let socket = UdpSocket::bind(local).context("binding a client socket")?;
        socket
            .connect(server)
            .with_context(|| format!("connecting a client socket to {server}"))?;
        Ok(socket)
    })
}

/// Application data the relay delivered to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A Data indication (RFC 8656 §11.4) from `peer`.
    DataIndication { peer: SocketAddr, data: Vec<u8> },
    /// ChannelData (RFC 8656 §12.5) on channel `number`.
    ChannelData { number: u16, data: Vec<u8> },
}

/// An authenticated allocation held by a [`Link`] (a connected UDP socket, or a TCP or
/// TLS connection).
pub struct TurnClient {
    link: Link,
    session: Session,
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
}

impl TurnClient {
    /// Opens a [`client_socket`] in `netns` and allocates on `server` as `user`.
    pub fn allocate_from(netns: &Namespace, server: SocketAddr, user: &User) -> Result<TurnClient> {
        TurnClient::allocate(client_socket(netns, server)?, user)
    }

    /// Allocates on `server` from a [`routed_socket`], following 300 Try Alternate to the
    /// ALTERNATE-SERVER with a new socket (RFC 8489 §10): the allocation and the servers
    /// that redirected it, in order.
    pub fn allocate_following_alternates(
        netns: &Namespace,
        server: SocketAddr,
        user: &User,
    ) -> Result<(TurnClient, Vec<SocketAddr>)> {
        let mut redirected_by = Vec::new();
        let mut target = server;
        loop {
            match TurnClient::allocate(routed_socket(netns, target)?, user) {
                Ok(client) => return Ok((client, redirected_by)),
                Err(error) => {
                    let Some(redirect) = error.downcast_ref::<TryAlternate>().copied() else {
                        return Err(error);
                    };
                    ensure!(
                        redirected_by.len() < MAX_REDIRECTS,
                        "more than {MAX_REDIRECTS} redirections: {redirected_by:?}"
                    );
                    redirected_by.push(target);
                    target = redirect.alternate;
                }
            }
        }
    }

    /// Allocates a UDP relayed address (of the server's family) as `user` on the server
    /// `socket` is connected to: Allocate → 401 (REALM, NONCE) → Allocate with
    /// MESSAGE-INTEGRITY.
    pub fn allocate(socket: UdpSocket, user: &User) -> Result<TurnClient> {
        let ipv6 = socket.peer_addr().context("unconnected socket")?.is_ipv6();
        TurnClient::allocate_over(Link::Udp(socket), user, ipv6)
    }

    /// Allocates a UDP relayed address of the IPv6 family when `ipv6`, else IPv4, as
    /// `user` over `link` (RFC 8656 §7: the relayed transport is UDP whatever the link).
    pub fn allocate_over(mut link: Link, user: &User, ipv6: bool) -> Result<TurnClient> {
        let challenge = link.transact(&allocate_request(ipv6, None))?;
        let challenge = Response::parse(&challenge).context("unparseable Allocate response")?;
        let mut client = TurnClient {
            session: Session::from_challenge(user, &challenge)?,
            link,
            relayed: SocketAddr::from(([0, 0, 0, 0], 0)),
            mapped: None,
        };
        let response = client.authenticated(Method::ALLOCATE, |builder| {
            builder.attribute(attr::REQUESTED_TRANSPORT, &TRANSPORT_UDP);
            if ipv6 {
                builder.attribute(attr::REQUESTED_ADDRESS_FAMILY, &FAMILY_IPV6);
            }
        })?;
        client.relayed = response
            .relayed
            .context("Allocate success without XOR-RELAYED-ADDRESS")?;
        client.mapped = response.mapped;
        Ok(client)
    }

    /// The relayed transport address the server allocated.
    pub fn relayed_address(&self) -> SocketAddr {
        self.relayed
    }

    /// The client's address as the server saw it (XOR-MAPPED-ADDRESS of the Allocate
    /// success).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        self.mapped
    }

    /// The UDP socket (to send data on; it must be blocking again for requests); None
    /// over TCP or TLS.
    pub fn socket(&self) -> Option<&UdpSocket> {
        match &self.link {
            Link::Udp(socket) => Some(socket),
            Link::Stream { .. } => None,
        }
    }

    /// The link to the relay (to send data or raw bytes on).
    pub fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    /// CreatePermission for `peer`'s IP address (RFC 8656 §9.1; the port is ignored).
    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<()> {
        succeeded(
            Method::CREATE_PERMISSION,
            &self.try_create_permission(&[peer])?,
        )
    }

    /// ChannelBind `number` to `peer` (RFC 8656 §12.1); also installs or refreshes the
    /// permission for the peer's IP. Binding the same pair again refreshes both.
    pub fn channel_bind(&mut self, number: u16, peer: SocketAddr) -> Result<()> {
        succeeded(Method::CHANNEL_BIND, &self.try_channel_bind(number, peer)?)
    }

    /// Refresh with `lifetime` seconds; 0 deletes the allocation (RFC 8656 §8).
    pub fn refresh(&mut self, lifetime: u32) -> Result<()> {
        self.authenticated(Method::REFRESH, |builder| {
            builder.attribute(attr::LIFETIME, &lifetime.to_be_bytes());
        })
        .map(drop)
    }

    /// The next relayed datagram within `limit`, or None when nothing arrives. Anything
    /// else the server sends (there should be nothing) is an error.
    pub fn receive(&mut self, limit: Duration) -> Result<Option<Delivered>> {
        let Some(message) = self.link.receive(limit)? else {
            return Ok(None);
        };
        let datagram = message.as_slice();
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

    /// Sends a request signed with the session (RFC 8489 §9.2.3) and returns the success
    /// response; takes a fresh nonce on 438.
    fn authenticated(
        &mut self,
        method: Method,
        attributes: impl Fn(&mut MessageBuilder<'_>),
    ) -> Result<Response> {
        let response = self.request(method, attributes)?;
        succeeded(method, &response).map(|()| response)
    }

    /// Sends a request signed with the session and returns its final response, success or
    /// error (a success must pass MESSAGE-INTEGRITY); takes a fresh nonce on 438, and turns
    /// an authenticated 300 into a [`TryAlternate`] error.
    pub fn request(
        &mut self,
        method: Method,
        attributes: impl Fn(&mut MessageBuilder<'_>),
    ) -> Result<Response> {
        for _ in 0..STALE_NONCE_RETRIES {
            let request = message(
                method,
                Class::Request,
                &transaction_id(),
                Some(&self.session),
                &attributes,
            );
            let datagram = self.link.transact(&request)?;
            let response = Response::parse(&datagram)
                .with_context(|| format!("unparseable {method:?} response"))?;
            if response.success {
                let verified = Message::parse(&datagram)
                    .is_ok_and(|message| message.verify_message_integrity(&self.session.key));
                ensure!(
                    verified,
                    "{method:?} success response fails MESSAGE-INTEGRITY"
                );
                return Ok(response);
            }
            match response.error_code {
                Some(438) => {
                    self.session.nonce = response.nonce.context("438 without NONCE")?;
                }
                // RFC 8489 §10: follow only an authenticated 300.
                Some(300) => {
                    let verified = Message::parse(&datagram)
                        .is_ok_and(|message| message.verify_message_integrity(&self.session.key));
                    ensure!(verified, "300 Try Alternate fails MESSAGE-INTEGRITY");
                    let alternate = response
                        .alternate_server
                        .context("300 Try Alternate without ALTERNATE-SERVER")?;
                    return Err(TryAlternate { alternate }.into());
                }
                _ => return Ok(response),
            }
        }
        bail!("{method:?} kept failing with 438 Stale Nonce")
    }

    /// CreatePermission for several peers at once; the response, success or error.
    pub fn try_create_permission(&mut self, peers: &[SocketAddr]) -> Result<Response> {
        self.request(Method::CREATE_PERMISSION, |builder| {
            for peer in peers {
                builder.xor_address(attr::XOR_PEER_ADDRESS, *peer);
            }
        })
    }

    /// ChannelBind `number` to `peer`; the response, success or error.
    pub fn try_channel_bind(&mut self, number: u16, peer: SocketAddr) -> Result<Response> {
        let mut value = [0u8; 4];
        value[..2].copy_from_slice(&number.to_be_bytes());
        self.request(Method::CHANNEL_BIND, |builder| {
            builder
                .attribute(attr::CHANNEL_NUMBER, &value)
                .xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
    }
}

/// Ok when `response` (to `method`) is a success, else the error it carries.
fn succeeded(method: Method, response: &Response) -> Result<()> {
    match response.error_code {
        _ if response.success => Ok(()),
        Some(code) => bail!("{method:?} failed: {code} {}", response.reason),
        None => bail!("{method:?} failed without ERROR-CODE"),
    }
}

/// A UDP socket in the peer namespace standing in for a TURN peer.
pub struct Peer {
    socket: UdpSocket,
}

impl Peer {
    /// Binds `address` (an address of `netns`, port 0 for any) inside `netns`.
    pub fn bind(netns: &Namespace, address: SocketAddr) -> Result<Peer> {
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

    /// The next datagram and its source within `limit`, or None.
    pub fn receive(&self, limit: Duration) -> Result<Option<(Vec<u8>, SocketAddr)>> {
        if limit.is_zero() {
            return Ok(None);
        }
        self.socket.set_read_timeout(Some(limit))?;
        let mut buffer = [0u8; RECEIVE_BUFFER];
        match self.socket.recv_from(&mut buffer) {
            Ok((length, from)) => Ok(Some((
                buffer.get(..length).unwrap_or_default().to_vec(),
                from,
            ))),
            Err(error) if timed_out(&error) => Ok(None),
            Err(error) => Err(error).context("the peer receiving"),
        }
    }
}

#[cfg(test)]
mod tests;
