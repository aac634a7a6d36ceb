//! The TURN client control plane the benchmark drives through the real protocol (the
//! testkit's client): allocations with long-term credentials (RFC 8656 §7), permissions
//! (§9), channels (§12), and the two request-rate measurements (STUN Binding
//! requests/s, authenticated allocations/s).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use turn_testkit::config::User;
use turn_testkit::netns::Namespace;
use turn_testkit::stun_client::{
    allocate_request, binding_request, refresh_request, Response, Session, TurnClient,
};

/// One client's allocation, ready to relay to `peer`.
pub struct Flow {
    /// The allocation's socket (non-blocking while load runs).
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub channel: u16,
    pub peer: SocketAddr,
    /// None for a direct (relay-less) baseline flow.
    client: Option<TurnClient>,
}

/// A UDP socket in the client namespace with large buffers, connected to the server.
pub fn client_socket(client: &Namespace, server: SocketAddr) -> Result<UdpSocket> {
    let socket = turn_testkit::stun_client::client_socket(client, server)?;
    enlarge_buffers(&socket);
    Ok(socket)
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

/// Sets up one flow: allocation, CreatePermission and ChannelBind for `peer`.
pub fn open_flow(
    client_namespace: &Namespace,
    server: SocketAddr,
    user: &User,
    peer: SocketAddr,
    channel: u16,
) -> Result<Flow> {
    // A 5-tuple may still hold an allocation from an earlier test (437 Allocation Mismatch,
    // RFC 8656 §7.2); keep such sockets open while retrying so the next one gets a new port.
    let mut mismatched = Vec::new();
    let mut client = loop {
        let socket = client_socket(client_namespace, server)?;
        let kept = socket
            .try_clone()
            .context("duplicating the client socket")?;
        match TurnClient::allocate(socket, user) {
            Ok(client) => break client,
            Err(error) if error.to_string().contains("437") && mismatched.len() < 8 => {
                mismatched.push(kept)
            }
            Err(error) => return Err(error.context("Allocate")),
        }
    };
    drop(mismatched);
    client.create_permission(peer).context("CreatePermission")?;
    client.channel_bind(channel, peer).context("ChannelBind")?;
    let socket = client
        .socket()
        .context("a UDP client")?
        .try_clone()
        .context("duplicating the client socket")?;
    socket.set_nonblocking(true)?;
    Ok(Flow {
        local: socket.local_addr()?,
        socket,
        channel,
        peer,
        client: Some(client),
    })
}

impl Flow {
    /// The flow's socket alone, its client (and that descriptor) dropped: the allocation
    /// lives on until it expires, as its 5-tuple stays bound.
    pub fn into_socket(self) -> UdpSocket {
        self.socket
    }
}

/// Deletes the allocation (Refresh with LIFETIME 0, RFC 8656 §8) so runs do not pile up.
pub fn close_flow(flow: Flow) {
    let Some(mut client) = flow.client else {
        return;
    };
    if flow.socket.set_nonblocking(false).is_err() {
        return;
    }
    let _ = client.refresh(0);
}

/// A client socket sending straight to `peer` (no relay): the baseline for added latency.
pub fn direct_flow(client: &Namespace, peer: SocketAddr) -> Result<Flow> {
    let socket = client_socket(client, peer)?;
    let local = socket.local_addr()?;
    socket.set_nonblocking(true)?;
    Ok(Flow {
        socket,
        local,
        channel: 0,
        peer,
        client: None,
    })
}

/// True when the server answers a Binding request from the client namespace.
pub fn answers_binding(client: &Namespace, server: SocketAddr) -> bool {
    let Ok(socket) = client_socket(client, server) else {
        return false;
    };
    let mut buf = [0u8; 1024];
    if socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .is_err()
        || socket.send(&binding_request()).is_err()
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
    client: &Namespace,
    server: SocketAddr,
    duration: Duration,
) -> Result<RequestRate> {
    const SOCKETS: usize = 16;
    const WINDOW_PER_SOCKET: u64 = 16;
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| client_socket(client, server))
        .collect::<Result<_>>()?;
    for socket in &sockets {
        socket.set_nonblocking(true)?;
    }
    let mut outstanding = [0u64; SOCKETS];
    let mut last_progress = [Instant::now(); SOCKETS];
    let (mut sent, mut responses) = (0u64, 0u64);
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    while start.elapsed() < duration && !crate::interrupted() {
        for (index, socket) in sockets.iter().enumerate() {
            // A response lost for 100 ms frees its window slot.
            if last_progress[index].elapsed() > Duration::from_millis(100) {
                outstanding[index] = 0;
                last_progress[index] = Instant::now();
            }
            while outstanding[index] < WINDOW_PER_SOCKET {
                if socket.send(&binding_request()).is_err() {
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
    client: &Namespace,
    server: SocketAddr,
    user: &User,
    duration: Duration,
    concurrency: usize,
) -> Result<RequestRate> {
    enum Stage {
        Challenge,
        /// The authenticated Allocate is out; the session also signs the Refresh.
        Authenticated(Session),
        Deleting,
    }
    struct Client {
        socket: UdpSocket,
        stage: Stage,
        request: Vec<u8>,
        sent_at: Instant,
    }
    impl Client {
        /// Sends `request` as the client's next step.
        fn next(&mut self, stage: Stage, request: Vec<u8>) {
            let _ = self.socket.send(&request);
            self.request = request;
            self.stage = stage;
            self.sent_at = Instant::now();
        }

        fn transaction(&self) -> Option<&[u8]> {
            self.request.get(8..20)
        }
    }
    let unauthenticated = |socket: UdpSocket| {
        let mut client = Client {
            socket,
            stage: Stage::Challenge,
            request: Vec::new(),
            sent_at: Instant::now(),
        };
        client.next(Stage::Challenge, allocate_request(false, None));
        client
    };
    let new_socket = || -> Result<UdpSocket> {
        let socket = client_socket(client, server)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    };
    // Creating sockets needs a namespace hop per socket; create a pool up front and reuse
    // sockets only after their allocation was deleted.
    let mut clients: Vec<Client> = (0..concurrency)
        .map(|_| new_socket().map(unauthenticated))
        .collect::<Result<_>>()?;
    let mut spare: Vec<UdpSocket> = Vec::new();
    let mut restarting: Vec<usize> = Vec::new();
    let (mut sent, mut allocations) = (concurrency as u64, 0u64);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < duration && !crate::interrupted() {
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
            if Some(&message.transaction_id[..]) != client.transaction() {
                continue;
            }
            let next = match &client.stage {
                Stage::Challenge => {
                    let Ok(session) = Session::from_challenge(user, &message) else {
                        restarting.push(index);
                        continue;
                    };
                    let request = allocate_request(false, Some(&session));
                    Some((Stage::Authenticated(session), request))
                }
                Stage::Authenticated(session) => {
                    if !message.success {
                        // Start over on a fresh socket (e.g. 438 or quota).
                        restarting.push(index);
                        continue;
                    }
                    allocations += 1;
                    Some((Stage::Deleting, refresh_request(0, session)))
                }
                Stage::Deleting => {
                    spare.push(client.socket.try_clone()?);
                    restarting.push(index);
                    None
                }
            };
            if let Some((stage, request)) = next {
                client.next(stage, request);
                sent += 1;
            }
        }
        for &index in &restarting {
            // A deleted allocation's 5-tuple may be reused at once (RFC 8656 §7.2 only forbids
            // a second allocation on a live 5-tuple); sockets whose allocation failed are replaced.
            let socket = match spare.pop() {
                Some(socket) => socket,
                None => new_socket()?,
            };
            sent += 1;
            clients[index] = unauthenticated(socket);
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
