//! The TURN client control plane the benchmark drives through the real protocol: allocations
//! with long-term credentials (RFC 8656 §7), permissions (§9), channels (§12), and the two
//! request-rate measurements (STUN Binding requests/s, authenticated allocations/s).

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::netns::{in_netns, CLIENT_IP, CLIENT_IP6};
use super::wire::{self, MessageWriter, Response};
use crate::protocol::stun::attributes as attr;
use crate::protocol::stun::Method;

/// A static long-term credential configured identically on every server under test.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// One client's allocation, ready to relay to `peer`.
pub struct Flow {
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub relayed: SocketAddr,
    pub channel: u16,
    pub peer: SocketAddr,
    /// None for a direct (relay-less) baseline flow.
    session: Option<Session>,
}

struct Session {
    realm: String,
    nonce: String,
    key: Vec<u8>,
}

fn transaction_id() -> [u8; 12] {
    rand::random()
}

/// A UDP socket in the client namespace with large buffers, connected to the server.
pub fn client_socket(client_ns: &str, server: SocketAddr) -> Result<UdpSocket> {
    in_netns(client_ns, move || {
        let local = match server {
            SocketAddr::V4(_) => SocketAddr::V4(SocketAddrV4::new(CLIENT_IP, 0)),
            SocketAddr::V6(_) => SocketAddr::V6(SocketAddrV6::new(CLIENT_IP6, 0, 0, 0)),
        };
        let socket = UdpSocket::bind(local).context("binding a client socket")?;
        socket
            .connect(server)
            .context("connecting a client socket")?;
        enlarge_buffers(&socket);
        Ok(socket)
    })
}

/// 4 MiB socket buffers (SO_*BUFFORCE as root) so bursts are not lost in our own sockets.
pub fn enlarge_buffers(socket: &impl AsRawFd) {
    let size: libc::c_int = 4 << 20;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: valid fd and a pointer to a live c_int of the stated size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Sends a request and waits for the response with the same transaction id, retransmitting
/// with a doubling timeout (RFC 8489 §6.2.1, 200 ms initial RTO for a local benchmark; about
/// 6 s in all, so a server still draining an overload backlog gets time to answer).
fn transact(socket: &UdpSocket, request: &[u8]) -> Result<Vec<u8>> {
    const TRANSMISSIONS: u32 = 5;
    let transaction = request.get(8..20).context("request too short")?;
    let mut buf = vec![0u8; 2048];
    let mut timeout = Duration::from_millis(200);
    for _attempt in 0..TRANSMISSIONS {
        socket.send(request).context("sending a request")?;
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
        {
            socket.set_read_timeout(Some(left))?;
            let Ok(len) = socket.recv(&mut buf) else {
                break;
            };
            if buf.get(8..20) == Some(transaction) {
                buf.truncate(len);
                return Ok(buf);
            }
        }
        timeout = (timeout * 2).min(Duration::from_millis(3200));
    }
    bail!("no response after {TRANSMISSIONS} transmissions")
}

/// Allocate → 401 (REALM, NONCE) → Allocate with MESSAGE-INTEGRITY (RFC 8656 §7.1, RFC 8489 §9.2).
fn allocate(socket: &UdpSocket, credentials: &Credentials) -> Result<(Session, SocketAddr)> {
    let ipv6 = socket.peer_addr()?.is_ipv6();
    let mut request = MessageWriter::request(Method::ALLOCATE, transaction_id());
    add_allocate_attributes(&mut request, ipv6);
    let response = transact(socket, &request.finish())?;
    let challenge = Response::parse(&response).context("unparseable Allocate response")?;
    if challenge.error_code != Some(401) {
        bail!(
            "expected 401 to an unauthenticated Allocate, got {:?}",
            challenge.error_code
        );
    }
    let realm = challenge.realm.clone().context("401 without REALM")?;
    let mut session = Session {
        key: wire::long_term_key(&credentials.username, &realm, &credentials.password),
        nonce: challenge.nonce.clone().context("401 without NONCE")?,
        realm,
    };
    for _stale_retry in 0..2 {
        let mut request = MessageWriter::request(Method::ALLOCATE, transaction_id());
        add_allocate_attributes(&mut request, ipv6);
        add_credentials(&mut request, credentials, &session);
        let response = transact(socket, &request.finish_with_integrity(&session.key))?;
        let message = Response::parse(&response).context("unparseable Allocate response")?;
        if message.success {
            let relayed = message.relayed.context("no XOR-RELAYED-ADDRESS")?;
            return Ok((session, relayed));
        }
        match message.error_code {
            Some(438) => session.nonce = message.nonce.clone().context("438 without NONCE")?,
            code => bail!("authenticated Allocate failed: {code:?}"),
        }
    }
    bail!("Allocate kept failing with 438 Stale Nonce")
}

/// REQUESTED-TRANSPORT UDP and, for an IPv6 client, REQUESTED-ADDRESS-FAMILY IPv6 (0x02,
/// RFC 8656 §7.2): the benchmark's IPv6 flows use an IPv6 relayed address and IPv6 peer.
fn add_allocate_attributes(request: &mut MessageWriter, ipv6: bool) {
    request.attribute(attr::REQUESTED_TRANSPORT, &wire::requested_transport_udp());
    if ipv6 {
        request.attribute(attr::REQUESTED_ADDRESS_FAMILY, &[0x02, 0, 0, 0]);
    }
}

fn add_credentials(request: &mut MessageWriter, credentials: &Credentials, session: &Session) {
    request.credentials(&credentials.username, &session.realm, &session.nonce);
}

/// An authenticated request on an existing allocation; retries once on 438 Stale Nonce.
fn authenticated(
    socket: &UdpSocket,
    credentials: &Credentials,
    session: &mut Session,
    method: Method,
    add_attributes: impl Fn(&mut MessageWriter),
) -> Result<()> {
    for _stale_retry in 0..2 {
        let mut request = MessageWriter::request(method, transaction_id());
        add_attributes(&mut request);
        add_credentials(&mut request, credentials, session);
        let response = transact(socket, &request.finish_with_integrity(&session.key))?;
        let message = Response::parse(&response).context("unparseable response")?;
        if message.success {
            return Ok(());
        }
        match message.error_code {
            Some(438) => session.nonce = message.nonce.clone().context("438 without NONCE")?,
            code => bail!("request {method:?} failed: {code:?}"),
        }
    }
    bail!("request {method:?} kept failing with 438 Stale Nonce")
}

/// Sets up one flow: allocation, CreatePermission and ChannelBind for `peer`.
pub fn open_flow(
    client_ns: &str,
    server: SocketAddr,
    credentials: &Credentials,
    peer: SocketAddr,
    channel: u16,
) -> Result<Flow> {
    // A 5-tuple may still hold an allocation from an earlier test (437 Allocation Mismatch,
    // RFC 8656 §7.2); keep such sockets open while retrying so the next one gets a new port.
    let mut mismatched = Vec::new();
    let (socket, mut session, relayed) = loop {
        let socket = client_socket(client_ns, server)?;
        match allocate(&socket, credentials) {
            Ok((session, relayed)) => break (socket, session, relayed),
            Err(error) if error.to_string().contains("437") && mismatched.len() < 8 => {
                mismatched.push(socket)
            }
            Err(error) => return Err(error.context("Allocate")),
        }
    };
    drop(mismatched);
    let local = socket.local_addr()?;
    authenticated(
        &socket,
        credentials,
        &mut session,
        Method::CREATE_PERMISSION,
        |r| {
            r.xor_address(attr::XOR_PEER_ADDRESS, peer);
        },
    )
    .context("CreatePermission")?;
    authenticated(
        &socket,
        credentials,
        &mut session,
        Method::CHANNEL_BIND,
        |r| {
            r.attribute(attr::CHANNEL_NUMBER, &wire::channel_number(channel));
            r.xor_address(attr::XOR_PEER_ADDRESS, peer);
        },
    )
    .context("ChannelBind")?;
    socket.set_nonblocking(true)?;
    Ok(Flow {
        socket,
        local,
        relayed,
        channel,
        peer,
        session: Some(session),
    })
}

/// Deletes the allocation (Refresh with LIFETIME 0, RFC 8656 §8) so runs do not pile up.
pub fn close_flow(flow: Flow, credentials: &Credentials) {
    let Some(mut session) = flow.session else {
        return;
    };
    if flow.socket.set_nonblocking(false).is_err() {
        return;
    }
    let _ = authenticated(
        &flow.socket,
        credentials,
        &mut session,
        Method::REFRESH,
        |r| {
            r.attribute(attr::LIFETIME, &0u32.to_be_bytes());
        },
    );
}

/// A client socket sending straight to `peer` (no relay): the baseline for added latency.
pub fn direct_flow(client_ns: &str, peer: SocketAddr) -> Result<Flow> {
    let socket = client_socket(client_ns, peer)?;
    let local = socket.local_addr()?;
    socket.set_nonblocking(true)?;
    Ok(Flow {
        socket,
        local,
        relayed: peer,
        channel: 0,
        peer,
        session: None,
    })
}

/// True when the server answers a Binding request from the client namespace.
pub fn answers_binding(client_ns: &str, server: SocketAddr) -> bool {
    let Ok(socket) = client_socket(client_ns, server) else {
        return false;
    };
    let request = MessageWriter::request(Method::BINDING, transaction_id()).finish();
    let mut buf = [0u8; 1024];
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
        || socket.send(&request).is_err()
    {
        return false;
    }
    matches!(socket.recv(&mut buf), Ok(len) if Response::parse(buf.get(..len).unwrap_or_default()).is_some_and(|m| m.success))
}

#[derive(Clone, Debug, Serialize)]
pub struct RequestRate {
    pub requests_sent: u64,
    pub responses: u64,
    pub seconds: f64,
    pub per_second: f64,
}

/// STUN Binding requests/s (RFC 8489 §7.2): a window of outstanding requests spread over 16
/// sockets, sent with sendmmsg-style batching per socket; counts success responses.
pub fn binding_rate(
    client_ns: &str,
    server: SocketAddr,
    duration: Duration,
) -> Result<RequestRate> {
    const SOCKETS: usize = 16;
    const WINDOW_PER_SOCKET: u64 = 16;
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| client_socket(client_ns, server))
        .collect::<Result<_>>()?;
    for socket in &sockets {
        socket.set_nonblocking(true)?;
    }
    let mut outstanding = [0u64; SOCKETS];
    let mut last_progress = [Instant::now(); SOCKETS];
    let (mut sent, mut responses) = (0u64, 0u64);
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    while start.elapsed() < duration && !super::interrupted() {
        for (index, socket) in sockets.iter().enumerate() {
            // A response lost for 100 ms frees its window slot.
            if last_progress[index].elapsed() > Duration::from_millis(100) {
                outstanding[index] = 0;
                last_progress[index] = Instant::now();
            }
            while outstanding[index] < WINDOW_PER_SOCKET {
                let request = MessageWriter::request(Method::BINDING, transaction_id()).finish();
                if socket.send(&request).is_err() {
                    break;
                }
                outstanding[index] += 1;
                sent += 1;
            }
            while let Ok(len) = socket.recv(&mut buf) {
                if Response::parse(buf.get(..len).unwrap_or_default()).is_some_and(|m| m.success) {
                    responses += 1;
                    outstanding[index] = outstanding[index].saturating_sub(1);
                    last_progress[index] = Instant::now();
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(RequestRate {
        requests_sent: sent,
        responses,
        seconds,
        per_second: responses as f64 / seconds,
    })
}

/// Authenticated allocations/s: each iteration opens a fresh client socket (a new 5-tuple),
/// does Allocate → 401 → Allocate with MESSAGE-INTEGRITY, then deletes the allocation with
/// Refresh(LIFETIME=0). `concurrency` clients run interleaved on one thread.
pub fn allocation_rate(
    client_ns: &str,
    server: SocketAddr,
    credentials: &Credentials,
    duration: Duration,
    concurrency: usize,
) -> Result<RequestRate> {
    enum Stage {
        Challenge,
        /// The authenticated Allocate is out; these credentials also sign the Refresh.
        Authenticated {
            realm: String,
            nonce: String,
            key: Vec<u8>,
        },
        Deleting,
    }
    struct Client {
        socket: UdpSocket,
        stage: Stage,
        transaction: [u8; 12],
        request: Vec<u8>,
        sent_at: Instant,
    }
    let new_client = || -> Result<Client> {
        let socket = client_socket(client_ns, server)?;
        socket.set_nonblocking(true)?;
        let transaction = transaction_id();
        let mut request = MessageWriter::request(Method::ALLOCATE, transaction);
        request.attribute(attr::REQUESTED_TRANSPORT, &wire::requested_transport_udp());
        let request = request.finish();
        let _ = socket.send(&request);
        Ok(Client {
            socket,
            stage: Stage::Challenge,
            transaction,
            request,
            sent_at: Instant::now(),
        })
    };
    // Creating sockets needs a namespace hop per socket; create a pool up front and reuse
    // sockets only after their allocation was deleted.
    let mut clients: Vec<Client> = (0..concurrency)
        .map(|_| new_client())
        .collect::<Result<_>>()?;
    let mut spare: Vec<UdpSocket> = Vec::new();
    let mut restarting: Vec<usize> = Vec::new();
    let (mut sent, mut allocations) = (concurrency as u64, 0u64);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < duration && !super::interrupted() {
        restarting.clear();
        for (index, client) in clients.iter_mut().enumerate() {
            let Ok(len) = client.socket.recv(&mut buf) else {
                if client.sent_at.elapsed() > Duration::from_millis(200) {
                    let _ = client.socket.send(&client.request);
                    client.sent_at = Instant::now();
                }
                continue;
            };
            let Some(message) = Response::parse(buf.get(..len).unwrap_or_default()) else {
                continue;
            };
            if message.transaction_id != client.transaction {
                continue;
            }
            let next = match &client.stage {
                Stage::Challenge => {
                    let (Some(realm), Some(nonce)) = (message.realm.clone(), message.nonce.clone())
                    else {
                        restarting.push(index);
                        continue;
                    };
                    let key =
                        wire::long_term_key(&credentials.username, &realm, &credentials.password);
                    let mut request = MessageWriter::request(Method::ALLOCATE, transaction_id());
                    request.attribute(attr::REQUESTED_TRANSPORT, &wire::requested_transport_udp());
                    request.credentials(&credentials.username, &realm, &nonce);
                    let request = request.finish_with_integrity(&key);
                    Some((Stage::Authenticated { realm, nonce, key }, request))
                }
                Stage::Authenticated { realm, nonce, key } => {
                    if !message.success {
                        // Start over on a fresh socket (e.g. 438 or quota).
                        restarting.push(index);
                        continue;
                    }
                    allocations += 1;
                    let mut request = MessageWriter::request(Method::REFRESH, transaction_id());
                    request.attribute(attr::LIFETIME, &0u32.to_be_bytes());
                    request.credentials(&credentials.username, realm, nonce);
                    Some((Stage::Deleting, request.finish_with_integrity(key)))
                }
                Stage::Deleting => {
                    spare.push(client.socket.try_clone()?);
                    restarting.push(index);
                    None
                }
            };
            if let Some((stage, request)) = next {
                client.transaction = request
                    .get(8..20)
                    .and_then(|t| t.try_into().ok())
                    .unwrap_or_default();
                let _ = client.socket.send(&request);
                client.request = request;
                client.stage = stage;
                client.sent_at = Instant::now();
                sent += 1;
            }
        }
        for &index in &restarting {
            // A deleted allocation's 5-tuple may be reused at once (RFC 8656 §7.2 only forbids
            // a second allocation on a live 5-tuple); sockets whose allocation failed are replaced.
            let socket = match spare.pop() {
                Some(socket) => socket,
                None => {
                    let socket = client_socket(client_ns, server)?;
                    socket.set_nonblocking(true)?;
                    socket
                }
            };
            let transaction = transaction_id();
            let mut request = MessageWriter::request(Method::ALLOCATE, transaction);
            request.attribute(attr::REQUESTED_TRANSPORT, &wire::requested_transport_udp());
            let request = request.finish();
            let _ = socket.send(&request);
            sent += 1;
            clients[index] = Client {
                socket,
                stage: Stage::Challenge,
                transaction,
                request,
                sent_at: Instant::now(),
            };
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(RequestRate {
        requests_sent: sent,
        responses: allocations,
        seconds,
        per_second: allocations as f64 / seconds,
    })
}
