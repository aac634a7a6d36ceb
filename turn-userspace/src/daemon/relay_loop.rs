//! One worker's relay path: a received batch through the shared [`Server`] and out again.
//! Everything it touches per datagram is allocated once per worker and reused.
//!
//! After every `handle_*` call the worker executes the server's commands (binding or
//! closing relay sockets) before taking its queued responses, as the core requires. The
//! fast-path commands of the section are applied as [`Hub::end_section`] says, then the
//! responses and the relay data leave: a [`Forward`] points into the receive buffer or
//! into the per-datagram output buffer, and datagrams to one destination leave in one
//! UDP GSO message.
//!
//! [`Server`]: crate::protocol::turn::Server

use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::protocol::datapath::{ClientFlow, FastPathCommand};
use crate::protocol::turn::{Command, Forward, Now, Payload, Transmit};

use super::hub::{Hub, Shared};
use super::metrics::IoCounters;
use super::relay_sockets::{RelaySockets, SOCKETS_PER_TURN};
use super::sockets::{self, Outgoing, RecvBatch, SocketRole, BATCH};

/// Batches read from one ready socket before the other sockets get a turn (fairness).
const BATCHES_PER_SOCKET: usize = 4;

/// The current time for the core.
pub(super) fn now() -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    Now {
        instant: Instant::now(),
        unix_secs,
    }
}

/// One worker's sockets, buffers and timer: everything the relay path touches.
pub(super) struct RelayLoop {
    pub(super) index: usize,
    pub(super) hub: Arc<Hub>,
    /// This worker's listeners (a handful) and their addresses.
    pub(super) listeners: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// The relay sockets this worker opened (and reads and closes).
    pub(super) relays: RelaySockets,
    received: RecvBatch,
    /// One reusable output buffer per datagram of a section (ChannelData/Data indication
    /// framing).
    outputs: Vec<Vec<u8>>,
    /// Relay data produced by the current section: (datagram of the batch, its output
    /// buffer, forward).
    forwards: Vec<(usize, usize, Forward)>,
    /// STUN responses taken from the server, sent after the section.
    responses: Vec<Transmit>,
    /// The socket each forward / response leaves from (None: no such socket).
    forward_fds: Vec<Option<RawFd>>,
    response_fds: Vec<Option<RawFd>>,
    /// Other workers' relay sockets sent from in this section, kept open until it is sent.
    borrowed: Vec<Arc<UdpSocket>>,
    /// The fast-path commands of the current section.
    fast_path_commands: Vec<FastPathCommand>,
    /// The server deadline the timer task sleeps until, and how to tell it about an
    /// earlier one.
    pub(super) timer: Option<Instant>,
    pub(super) timer_changed: Rc<Notify>,
    pub(super) io: IoCounters,
}

impl RelayLoop {
    /// Worker `index`'s loop; inside its tokio runtime (the relay sockets' set registers
    /// with the runtime's reactor).
    pub(super) fn new(index: usize, hub: Arc<Hub>) -> std::io::Result<Self> {
        Ok(RelayLoop {
            index,
            hub,
            listeners: Vec::new(),
            relays: RelaySockets::new()?,
            received: RecvBatch::new(),
            outputs: (0..BATCH).map(|_| Vec::with_capacity(2048)).collect(),
            forwards: Vec::with_capacity(BATCH),
            responses: Vec::with_capacity(BATCH),
            forward_fds: Vec::with_capacity(BATCH),
            response_fds: Vec::with_capacity(BATCH),
            borrowed: Vec::with_capacity(BATCH),
            fast_path_commands: Vec::new(),
            timer: None,
            timer_changed: Rc::new(Notify::new()),
            io: IoCounters::default(),
        })
    }

    /// Publishes this worker's IO counters for the metrics endpoint.
    pub(super) fn publish_io(&self) {
        self.hub.publish_io(self.index, self.io);
    }

    /// Reads what is queued on `socket` (bound at `local`) in batches and relays it.
    /// True when the socket's queue was found empty; false when it may hold more (the
    /// caller lets the other sockets have a turn, then comes back).
    pub(super) fn receive(
        &mut self,
        socket: &UdpSocket,
        local: SocketAddr,
        role: SocketRole,
    ) -> bool {
        for _ in 0..BATCHES_PER_SOCKET {
            let messages = match self.received.receive(socket) {
                Ok(messages) => messages,
                Err(error) => {
                    // ICMP errors (e.g. port unreachable from a peer) surface here; what
                    // is queued behind them is read on the next turn.
                    tracing::trace!(%error, %local, "receive error");
                    return false;
                }
            };
            if messages == 0 {
                return true;
            }
            let now = now();
            let datagrams = self.received.len();
            self.io.received += datagrams as u64;
            for start in (0..datagrams).step_by(BATCH) {
                self.handle_section(now, local, role, start..datagrams.min(start + BATCH));
            }
            // recvmmsg returns fewer messages than asked for only once the queue is empty.
            if messages < BATCH {
                return true;
            }
        }
        false
    }

    /// One turn of the relay sockets: takes the ones that became readable, then gives a
    /// share ([`Self::receive`]) to each waiting socket, at most [`SOCKETS_PER_TURN`], in
    /// the order they became readable; one that may hold more waits behind the others.
    /// True when sockets are left for another turn (the caller lets the worker's other
    /// tasks run first).
    pub(super) fn receive_relays(&mut self) -> std::io::Result<bool> {
        let more_ready = self.relays.collect_ready()?;
        for _ in 0..SOCKETS_PER_TURN {
            let Some((key, socket, local)) = self.relays.next_queued() else {
                break;
            };
            if !self.receive(&socket, local, SocketRole::Relay) {
                self.relays.requeue(key, &socket);
            }
        }
        Ok(more_ready || self.relays.has_queued())
    }

    /// Handles the server's due timers (expiries: relay sockets close, fast-path entries
    /// go) and re-arms the timer.
    pub(super) fn handle_timeout(&mut self) {
        let now = now();
        let hub = Arc::clone(&self.hub);
        let mut shared = hub.lock();
        shared.server.handle_timeout(now);
        self.drain_control(&mut shared, now);
        self.resolve_sockets(&shared);
        self.timer = shared.server.poll_timeout();
        hub.end_section(
            shared,
            &mut self.fast_path_commands,
            !self.responses.is_empty(),
        );
        self.send_responses();
        self.borrowed.clear();
    }

    /// Feeds the datagrams `batch` of the received batch (at most BATCH) to the server
    /// under the hub's lock, then sends the responses and relay data they produced
    /// outside it.
    fn handle_section(
        &mut self,
        now: Now,
        local: SocketAddr,
        role: SocketRole,
        batch: Range<usize>,
    ) {
        self.forwards.clear();
        let hub = Arc::clone(&self.hub);
        let mut shared = hub.lock();
        for (slot, index) in batch.enumerate() {
            let Some(datagram) = self.received.datagram(index) else {
                self.io.truncated += 1;
                continue;
            };
            let Some(out) = self.outputs.get_mut(slot) else {
                continue;
            };
            out.clear();
            let forward = match role {
                SocketRole::Listener => {
                    let flow = ClientFlow::udp(datagram.source, local);
                    shared.server.handle_client_datagram(
                        now,
                        flow,
                        datagram.bytes,
                        datagram.hop_limit,
                    )
                }
                SocketRole::Relay => shared.server.handle_peer_datagram(
                    now.instant,
                    local,
                    datagram.source,
                    datagram.bytes,
                    out,
                    datagram.hop_limit,
                ),
            };
            if let Some(forward) = forward {
                self.forwards.push((index, slot, forward));
            }
            self.drain_control(&mut shared, now);
        }
        self.resolve_sockets(&shared);
        self.note_deadline(&shared);
        hub.end_section(
            shared,
            &mut self.fast_path_commands,
            !self.responses.is_empty(),
        );
        self.send_responses();
        self.send_forwards();
        self.borrowed.clear();
    }

    /// Wakes the timer task when the section armed a server deadline before the one it
    /// sleeps until.
    fn note_deadline(&mut self, shared: &Shared) {
        let next = shared.server.poll_timeout();
        if next.is_some_and(|next| self.timer.is_none_or(|armed| next < armed)) {
            self.timer = next;
            self.timer_changed.notify_one();
        }
    }

    /// Executes the server's commands, then takes its queued responses (in that order:
    /// a relay socket must exist before the Allocate success response leaves).
    fn drain_control(&mut self, shared: &mut Shared, now: Now) {
        while let Some(command) = shared.server.poll_command() {
            match command {
                Command::OpenRelay { relay } => match self.open_relay(relay) {
                    Ok(socket) => {
                        shared.relays.insert(relay, socket);
                    }
                    Err(error) => {
                        tracing::warn!(%relay, %error, "cannot bind relay socket; answering 508");
                        self.io.relay_bind_failures += 1;
                        shared.server.handle_relay_bind_failed(now, relay);
                    }
                },
                Command::CloseRelay { relay } => match shared.relays.remove(&relay) {
                    Some(socket) if !socket.is_owned_by(self.index) => {
                        self.hub.close_elsewhere(relay, socket);
                    }
                    Some(socket) => self.close(relay, &socket),
                    // Not a UDP relay socket: a TCP/TLS connection's.
                    None => {
                        self.hub.streams.close_relay(relay);
                    }
                },
            }
        }
        while let Some(transmit) = shared.server.poll_transmit() {
            self.responses.push(transmit);
        }
    }

    /// The one place that decides which socket a datagram the core sends from `from`
    /// (a listener address towards a client, a relay address towards a peer) leaves
    /// through: this worker's own socket, or another worker's relay socket (kept open in
    /// `borrowed` until the section is sent: its owner may close it once the server lock
    /// is released). None: no such socket.
    ///
    /// This worker's own relay sockets stay open until the section is sent without that:
    /// only this worker closes them, in the commands of its sections (all executed
    /// before this is asked) or from its inbox between sections.
    fn route(&mut self, shared: &Shared, from: SocketAddr) -> Option<RawFd> {
        if let Some((_, socket)) = self.listeners.iter().find(|(local, _)| *local == from) {
            return Some(socket.as_raw_fd());
        }
        let relay = shared.relays.get(&from)?;
        if !relay.is_owned_by(self.index) {
            self.borrowed.push(Arc::clone(&relay.socket));
        }
        Some(relay.socket.as_raw_fd())
    }

    /// Finds the socket every response and forward of this section leaves from.
    fn resolve_sockets(&mut self, shared: &Shared) {
        self.forward_fds.clear();
        for index in 0..self.forwards.len() {
            let from = self.forwards.get(index).map(|(_, _, forward)| forward.from);
            let fd = from.and_then(|from| self.route(shared, from));
            self.forward_fds.push(fd);
        }
        self.response_fds.clear();
        for index in 0..self.responses.len() {
            let from = self.responses.get(index).map(|transmit| transmit.from);
            let fd = from.and_then(|from| self.route(shared, from));
            self.response_fds.push(fd);
        }
    }

    /// Sends the taken responses with sendmmsg (one call per run of the same socket).
    fn send_responses(&mut self) {
        for (transmits, fds) in self
            .responses
            .chunks(BATCH)
            .zip(self.response_fds.chunks(BATCH))
        {
            let mut outgoing: [Outgoing<'_>; BATCH] = [Outgoing::NONE; BATCH];
            let mut count = 0;
            let mut unsendable = 0u64;
            for (transmit, fd) in transmits.iter().zip(fds) {
                match (fd, outgoing.get_mut(count)) {
                    (Some(fd), Some(slot)) => {
                        *slot = Outgoing {
                            fd: *fd,
                            to: transmit.to,
                            payload: &transmit.payload,
                            hop_limit: None,
                        };
                        count += 1;
                    }
                    _ => {
                        tracing::debug!(from = %transmit.from, "no socket to send a response from");
                        unsendable += 1;
                    }
                }
            }
            let dropped = sockets::send_batch(outgoing.get(..count).unwrap_or_default());
            self.io.send_dropped += unsendable + dropped as u64;
        }
        self.responses.clear();
        self.response_fds.clear();
    }

    /// Sends this section's relay data with sendmmsg (one call per run of the same
    /// socket, one GSO message per run of equal datagrams to one destination).
    fn send_forwards(&mut self) {
        if self.forwards.is_empty() {
            return;
        }
        let mut outgoing: [Outgoing<'_>; BATCH] = [Outgoing::NONE; BATCH];
        let mut count = 0;
        let mut unsendable = 0u64;
        for ((index, slot, forward), fd) in self.forwards.iter().zip(&self.forward_fds) {
            let payload = match &forward.payload {
                Payload::Input(range) => self
                    .received
                    .datagram(*index)
                    .and_then(|datagram| datagram.bytes.get(range.clone())),
                Payload::Output => self.outputs.get(*slot).map(Vec::as_slice),
            };
            match (payload, fd, outgoing.get_mut(count)) {
                (Some(payload), Some(fd), Some(entry)) => {
                    *entry = Outgoing {
                        fd: *fd,
                        to: forward.to,
                        payload,
                        hop_limit: forward.hop_limit,
                    };
                    count += 1;
                }
                _ => unsendable += 1,
            }
        }
        let outgoing = outgoing.get_mut(..count).unwrap_or_default();
        // Grouped by socket and destination (a stable sort keeps each flow's order) so
        // they leave in as few sendmmsg calls and GSO messages as possible.
        outgoing.sort_by_key(|datagram| (datagram.fd, datagram.to));
        let dropped = sockets::send_batch(outgoing);
        self.io.send_dropped += unsendable + dropped as u64;
    }
}
