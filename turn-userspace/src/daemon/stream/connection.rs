//! One TCP or TLS client connection, served by one task until it closes.
//!
//! - Client → server: bytes are cut into frames ([`StreamCodec`]); every batch of frames
//!   from one read is handled in one section under the server lock, with the commands
//!   executed after every frame and the section ended as the UDP workers end theirs
//!   ([`Hub::end_section`]). Client → peer data leaves the allocation's relay socket in one
//!   sendmmsg after the section.
//! - Peer → client: the allocation's relay socket belongs to this task; its datagrams are
//!   read in batches (recvmmsg), framed by the core and queued for the connection.
//! - Over TLS every message goes in a TLS record of its own, as coturn sends them: some
//!   clients (coturn's own `turnutils_uclient`) take each record they read for one
//!   message. Over TCP the queue is written in as few system calls as possible.
//! - The write queue is bounded by `connections.write_buffer`. When it is full, relayed
//!   data is dropped, as a full UDP socket buffer drops datagrams: media tolerates loss,
//!   and queueing more would only add latency behind TCP's head-of-line blocking. A STUN
//!   response that does not fit closes the connection: a client that does not read its
//!   responses cannot be served, and dropping one would leave its transaction hanging
//!   (clients do not retransmit over TCP).
//! - A connection without an allocation that completes no message for
//!   `connections.idle_timeout` is closed; one with an allocation lives as long as the
//!   allocation (the core expires it when the client stops refreshing it).
//! - When the connection ends, for whatever reason, the core deletes its allocation
//!   (RFC 8656 §3.1).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Instant;

use bytes::{Buf as _, BytesMut};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, Interest};
use tokio::sync::Notify;
use tokio_util::codec::{Decoder as _, Encoder as _};

use crate::daemon::hub::Shared as HubShared;
use crate::daemon::relay_loop::now;
use crate::daemon::sockets::{self, Outgoing, RecvBatch, SocketRole};
use crate::protocol::datapath::{ClientFlow, FastPathCommand, Transport};
use crate::protocol::stun::framing::stream_frame_length;
use crate::protocol::turn::{Command, Now, Payload};

use super::codec::{FrameError, StreamCodec};
use super::listener::Shared;
use super::proxy::looks_like_proxy_header;
use super::{CloseReason, Hub};

/// Room made in the read buffer before every read.
const READ_CHUNK: usize = 8 * 1024;
/// An empty write queue whose buffer grew beyond this is given back to the allocator, so
/// idle connections hold little memory.
const SPARE_WRITE_CAPACITY: usize = 64 * 1024;

thread_local! {
    /// Receive buffers for relay sockets (recvmmsg): one set per runtime thread, as
    /// nothing awaits between receiving and handling.
    static RECEIVED: RefCell<RecvBatch> = RefCell::new(RecvBatch::new());
    /// The core frames peer data for the client in here before it is queued.
    static FRAMED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(2048));
}

/// The relay socket of this connection's allocation.
struct OwnRelay {
    address: SocketAddr,
    socket: AsyncFd<std::net::UdpSocket>,
    /// Notified when the allocation ends elsewhere (a UDP worker expired it).
    closed: Arc<Notify>,
}

impl OwnRelay {
    fn bind(address: SocketAddr) -> std::io::Result<OwnRelay> {
        let socket = sockets::bind_udp(address, SocketRole::Relay, false)?;
        // SAFETY: the AsyncFd owns the socket, so its fd stays open and the same until the
        // AsyncFd is dropped.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(OwnRelay {
            address,
            socket,
            closed: Arc::new(Notify::new()),
        })
    }
}

/// Client → peer data of one section: the frame it is in, its range there, where to.
struct ToPeer {
    frame: usize,
    range: Range<usize>,
    from: SocketAddr,
    to: SocketAddr,
}

/// The state of one served connection.
struct Connection<'a> {
    shared: &'a Shared,
    hub: &'a Hub,
    flow: ClientFlow,
    codec: StreamCodec,
    /// Shared with the select loop, which watches it while the handlers may replace it.
    relay: Option<Arc<OwnRelay>>,
    /// Bytes waiting to be written, at most `connections.write_buffer`.
    out: BytesMut,
    /// When the last complete message arrived, or the allocation ended.
    last_activity: Instant,
    frames: Vec<BytesMut>,
    to_peer: Vec<ToPeer>,
    fast_path_commands: Vec<FastPathCommand>,
    /// Whether the connection's first bytes were looked at.
    first_bytes_seen: bool,
}

/// Serves the connection of `flow` over `stream`, starting with the bytes in `input`
/// (read after a PROXY header). Returns why it ended; the allocation is gone by then.
pub(super) async fn serve<S>(
    shared: &Shared,
    flow: ClientFlow,
    stream: S,
    input: BytesMut,
) -> CloseReason
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut connection = Connection {
        shared,
        hub: &shared.hub,
        flow,
        codec: StreamCodec::new(shared.limits.max_message_size),
        relay: None,
        out: BytesMut::new(),
        last_activity: Instant::now(),
        frames: Vec::new(),
        to_peer: Vec::new(),
        fast_path_commands: Vec::new(),
        first_bytes_seen: false,
    };
    let reason = connection.run(stream, input).await;
    connection.close();
    reason
}

impl Connection<'_> {
    async fn run<S>(&mut self, stream: S, mut input: BytesMut) -> CloseReason
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let idle_timeout = self.shared.limits.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let mut unflushed = false;
        let record_per_message = self.flow.transport == Transport::Tls;
        if let Err(reason) = self.handle_input(&mut input) {
            return reason;
        }
        loop {
            let watched = self.relay.clone();
            tokio::select! {
                biased;
                pushed = push(&mut writer, &self.out, record_per_message), if !self.out.is_empty() || unflushed => match pushed {
                    Ok(Some(0)) | Err(_) => return CloseReason::IoError,
                    Ok(Some(length)) => {
                        self.out.advance(length);
                        unflushed = true;
                        if self.out.is_empty() && self.out.capacity() > SPARE_WRITE_CAPACITY {
                            self.out = BytesMut::new();
                        }
                    }
                    Ok(None) => unflushed = false,
                },
                () = closed_elsewhere(watched.as_deref()) => self.allocation_ended(),
                ready = readable(watched.as_deref()) => match ready {
                    Ok(mut guard) => {
                        if self.relay_to_client(guard.get_inner()) {
                            guard.clear_ready();
                        }
                    }
                    Err(error) => {
                        tracing::warn!(client = %self.flow.client, %error, "relay socket failed");
                        return CloseReason::IoError;
                    }
                },
                read = { input.reserve(READ_CHUNK); reader.read_buf(&mut input) } => match read {
                    Ok(0) => return CloseReason::ClientClosed,
                    Ok(_) => {
                        if let Err(reason) = self.handle_input(&mut input) {
                            return reason;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(client = %self.flow.client, %error, "reading the connection failed");
                        return CloseReason::ClientClosed;
                    }
                },
                () = &mut idle => {
                    let now = Instant::now();
                    let deadline = self.last_activity + idle_timeout;
                    if self.relay.is_none() && deadline <= now {
                        return CloseReason::IdleTimeout;
                    }
                    idle.as_mut().reset(deadline.max(now + idle_timeout / 2).into());
                },
            }
        }
    }

    /// Cuts the complete frames out of `input` and hands them to the server.
    fn handle_input(&mut self, input: &mut BytesMut) -> Result<(), CloseReason> {
        if let (false, Some(&first)) = (self.first_bytes_seen, input.first()) {
            self.first_bytes_seen = true;
            // Never a TURN message: a client trying to choose its address.
            if looks_like_proxy_header(input) {
                tracing::debug!(client = %self.flow.client, "PROXY header where none is taken");
                return Err(CloseReason::ProxyRefused);
            }
            // A connection starts with a STUN request: ChannelData needs a channel bound on
            // it first. So HTTP, TLS on the TCP port or any other protocol stops here, not
            // after a length read from its bytes.
            if first & 0xC0 != 0 {
                tracing::debug!(client = %self.flow.client, first, "a connection that does not start with STUN");
                return Err(CloseReason::BadFraming);
            }
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        loop {
            match self.codec.decode(input) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    if let FrameError::Io(_) = error {
                        return Err(CloseReason::IoError);
                    }
                    tracing::debug!(client = %self.flow.client, transport = %self.flow.transport, %error, "closing a connection that cannot be framed");
                    // What was framed before the error is still handled.
                    let result = self.handle_frames(&frames);
                    self.frames = frames;
                    result?;
                    return Err(CloseReason::BadFraming);
                }
            }
        }
        let result = self.handle_frames(&frames);
        self.frames = frames;
        result
    }

    /// One section under the server lock for `frames`, then their data to the peers.
    fn handle_frames(&mut self, frames: &[BytesMut]) -> Result<(), CloseReason> {
        if frames.is_empty() {
            return Ok(());
        }
        self.last_activity = Instant::now();
        let now = now();
        let hub = self.hub;
        let mut shared = hub.lock();
        let deadline_before = shared.server.poll_timeout();
        let mut responded = false;
        let mut overflow = false;
        self.to_peer.clear();
        for (index, frame) in frames.iter().enumerate() {
            if let Some(forward) = shared
                .server
                .handle_client_datagram(now, self.flow, frame, None)
            {
                if let Payload::Input(range) = forward.payload {
                    self.to_peer.push(ToPeer {
                        frame: index,
                        range,
                        from: forward.from,
                        to: forward.to,
                    });
                }
            }
            self.execute_commands(&mut shared, now);
            while let Some(transmit) = shared.server.poll_transmit() {
                responded = true;
                if transmit.flow() != self.flow {
                    tracing::warn!(to = %transmit.to, "a response for another client in a connection's section; dropped");
                    continue;
                }
                overflow |= !self.queue(&transmit.payload);
            }
        }
        let deadline_after = shared.server.poll_timeout();
        hub.end_section(shared, &mut self.fast_path_commands, responded);
        if deadline_after.is_some_and(|after| deadline_before.is_none_or(|before| after < before)) {
            hub.timers_changed();
        }
        self.send_to_peers(frames);
        if overflow {
            tracing::debug!(client = %self.flow.client, "a response does not fit in the write queue; closing");
            return Err(CloseReason::WriteQueueFull);
        }
        Ok(())
    }

    /// Executes the server's commands for this connection's allocation: its relay socket
    /// is opened here and watched by this task, and closed here.
    fn execute_commands(&mut self, shared: &mut MutexGuard<'_, HubShared>, now: Now) {
        while let Some(command) = shared.server.poll_command() {
            match command {
                Command::OpenRelay { relay } => match OwnRelay::bind(relay) {
                    Ok(own) => {
                        self.hub.streams.own_relay(relay, Arc::clone(&own.closed));
                        self.relay = Some(Arc::new(own));
                    }
                    Err(error) => {
                        tracing::warn!(%relay, %error, "cannot bind relay socket; answering 508");
                        self.hub
                            .streams
                            .counters(self.flow.transport)
                            .relay_bind_failures
                            .fetch_add(1, Ordering::Relaxed);
                        shared.server.handle_relay_bind_failed(now, relay);
                    }
                },
                Command::CloseRelay { relay } => {
                    if self.relay.as_ref().is_some_and(|own| own.address == relay) {
                        self.hub.streams.release_relay(relay);
                        self.allocation_ended();
                    } else if !self.hub.streams.close_relay(relay) {
                        tracing::warn!(%relay, "a connection's section closed a relay it does not know");
                    }
                }
            }
        }
    }

    /// The allocation is gone (deleted, expired or closed by its relay's owner): its
    /// socket closes and the idle timeout counts from now.
    fn allocation_ended(&mut self) {
        self.relay = None;
        self.last_activity = Instant::now();
    }

    /// Queues one message for the client (padded as the stream needs); false when the
    /// write queue has no room for it.
    fn queue(&mut self, message: &[u8]) -> bool {
        if self.out.len() + message.len() + 3 > self.shared.limits.write_buffer {
            return false;
        }
        // Encoding into a BytesMut cannot fail.
        self.codec.encode(message, &mut self.out).is_ok()
    }

    /// Sends this section's client → peer data from the relay socket (one sendmmsg).
    fn send_to_peers(&mut self, frames: &[BytesMut]) {
        let Some(own) = &self.relay else {
            return;
        };
        let fd = own.socket.get_ref().as_raw_fd();
        let datagrams: Vec<Outgoing<'_>> = self
            .to_peer
            .iter()
            .filter(|to_peer| to_peer.from == own.address)
            .filter_map(|to_peer| {
                Some(Outgoing {
                    fd,
                    to: to_peer.to,
                    payload: frames.get(to_peer.frame)?.get(to_peer.range.clone())?,
                    hop_limit: None,
                })
            })
            .collect();
        for chunk in datagrams.chunks(sockets::BATCH) {
            sockets::send_batch(chunk);
        }
    }

    /// Reads the peers' datagrams waiting on the relay socket and queues what the core
    /// makes of them for the client. True when the socket is drained.
    fn relay_to_client(&mut self, socket: &std::net::UdpSocket) -> bool {
        let Some(relay) = self.relay.as_ref().map(|own| own.address) else {
            return true;
        };
        RECEIVED.with_borrow_mut(|received| {
            let count = match received.receive(socket) {
                Ok(count) => count,
                Err(error) => {
                    // ICMP errors (a peer's port unreachable) surface here.
                    tracing::trace!(%error, %relay, "relay socket receive error");
                    return false;
                }
            };
            if count == 0 {
                return true;
            }
            let now = Instant::now();
            let hub = self.hub;
            let mut shared = hub.lock();
            let mut dropped = 0;
            FRAMED.with_borrow_mut(|framed| {
                // GRO messages hold several datagrams: every one of them.
                for index in 0..received.len() {
                    let Some(datagram) = received.datagram(index) else {
                        continue;
                    };
                    framed.clear();
                    if shared
                        .server
                        .handle_peer_datagram(
                            now,
                            relay,
                            datagram.source,
                            datagram.bytes,
                            framed,
                            datagram.hop_limit,
                        )
                        .is_some()
                        && !self.queue(framed)
                    {
                        dropped += 1;
                    }
                }
            });
            drop(shared);
            if dropped > 0 {
                self.hub
                    .streams
                    .counters(self.flow.transport)
                    .dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            count < sockets::BATCH
        })
    }

    /// The connection ended: the core deletes its allocation (RFC 8656 §3.1), which also
    /// logs its usage line.
    fn close(&mut self) {
        let now = now();
        let hub = self.hub;
        let mut shared = hub.lock();
        shared
            .server
            .handle_connection_closed(now.instant, self.flow);
        self.execute_commands(&mut shared, now);
        while shared.server.poll_transmit().is_some() {}
        hub.end_section(shared, &mut self.fast_path_commands, false);
        if let Some(own) = self.relay.take() {
            self.hub.streams.release_relay(own.address);
        }
    }
}

/// Writes what is queued, or only its first message when `per_message` (Some(bytes
/// written)); with nothing queued, flushes what the stream buffered (None; TLS keeps
/// records until flushed). Cancel-safe, as the write and the flush are.
async fn push<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queued: &[u8],
    per_message: bool,
) -> std::io::Result<Option<usize>> {
    if queued.is_empty() {
        return writer.flush().await.map(|()| None);
    }
    let length = match stream_frame_length(queued) {
        Ok(Some(first)) if per_message => first.min(queued.len()),
        _ => queued.len(),
    };
    writer
        .write(queued.get(..length).unwrap_or(queued))
        .await
        .map(Some)
}

/// Resolves when the allocation's relay was closed by someone else; never without one.
async fn closed_elsewhere(relay: Option<&OwnRelay>) {
    match relay {
        Some(own) => own.closed.notified().await,
        None => std::future::pending().await,
    }
}

/// Resolves when the allocation's relay socket is readable; never without one.
async fn readable(
    relay: Option<&OwnRelay>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, std::net::UdpSocket>> {
    match relay {
        Some(own) => own.socket.readable().await,
        None => std::future::pending().await,
    }
}
