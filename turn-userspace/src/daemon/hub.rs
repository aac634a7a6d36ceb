//! What the workers share: the ONE [`Server`] behind its lock, the fast path behind a
//! second lock, the open relay sockets and the workers' inboxes and counters.
//!
//! The lock discipline lives here too ([`Hub::end_section`]): a worker holds the server
//! lock only while the core handles what it received, and applies the fast-path
//! commands of that section in the order the server emitted them, off the server lock.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::rngs::StdRng;
use tokio::sync::{mpsc, Notify};

use crate::protocol::datapath::{Datapath, FastPath, FastPathCommand};
use crate::protocol::turn::Server;

use super::metrics::IoCounters;
use super::stream::StreamRegistry;

/// What every worker shares.
pub(crate) struct Hub {
    shared: Mutex<Shared>,
    /// The fast path the server's commands are applied to: the XDP maps, or the in-memory
    /// stand-in when XDP is off or could not be attached. Its own lock, so map system
    /// calls run off the server's; see [`Hub::end_section`] for the ordering.
    fast_path: Mutex<FastPath<Box<dyn Datapath>>>,
    /// Per worker: where to send its relay sockets that another worker's section closed
    /// (the owner closes them; see [`super::worker`]).
    closing: Vec<mpsc::UnboundedSender<(SocketAddr, RelaySocket)>>,
    /// Per worker: its IO counters, published about once a second.
    pub(crate) io: Vec<Mutex<IoCounters>>,
    /// The relay sockets of TCP/TLS connections and their counters (see
    /// [`super::stream`]).
    pub(crate) streams: StreamRegistry,
    /// A section outside the workers (a stream connection's) moved the server's earliest
    /// deadline earlier: a worker's timer task re-reads it.
    pub(crate) deadline_moved: Notify,
}

/// The state behind the hub's lock.
pub(crate) struct Shared {
    pub(crate) server: Server<StdRng>,
    /// Every open relay socket and the worker that reads it. Any worker may send from
    /// it (through its fd, kept open by the `Arc` for the length of a batch).
    pub(crate) relays: HashMap<SocketAddr, RelaySocket>,
}

/// An open relay socket, the worker that owns (reads and closes) it and its key among
/// that worker's relay sockets. Small (one per allocation): the indexes are `u32`.
pub(crate) struct RelaySocket {
    pub(crate) socket: Arc<UdpSocket>,
    owner: u32,
    pub(crate) key: u32,
}

impl RelaySocket {
    /// Worker `owner`'s relay socket `key`; None if an index does not fit (never with
    /// as many sockets as a process can open).
    pub(crate) fn new(socket: Arc<UdpSocket>, owner: usize, key: usize) -> Option<RelaySocket> {
        Some(RelaySocket {
            socket,
            owner: u32::try_from(owner).ok()?,
            key: u32::try_from(key).ok()?,
        })
    }

    pub(crate) fn is_owned_by(&self, worker: usize) -> bool {
        usize::try_from(self.owner).is_ok_and(|owner| owner == worker)
    }

    fn owner(&self) -> Option<usize> {
        usize::try_from(self.owner).ok()
    }
}

/// The receiving ends of [`Hub`]'s per-worker close inboxes, one per worker.
pub(crate) type CloseInbox = mpsc::UnboundedReceiver<(SocketAddr, RelaySocket)>;

impl Hub {
    /// A hub for `workers` workers around `server`, and each worker's close inbox.
    pub(crate) fn new(
        server: Server<StdRng>,
        datapath: Box<dyn Datapath>,
        workers: usize,
    ) -> (Hub, Vec<CloseInbox>) {
        let (closing, inboxes) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let hub = Hub {
            shared: Mutex::new(Shared {
                server,
                relays: HashMap::new(),
            }),
            fast_path: Mutex::new(FastPath::new(datapath)),
            closing,
            io: (0..workers).map(|_| Mutex::default()).collect(),
            streams: StreamRegistry::default(),
            deadline_moved: Notify::new(),
        };
        (hub, inboxes)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fast path's lock. Whoever also holds the server's takes that one first (see
    /// [`Hub::end_section`]).
    pub(crate) fn lock_fast_path(&self) -> MutexGuard<'_, FastPath<Box<dyn Datapath>>> {
        self.fast_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the owner of `socket`, the relay socket at `relay`, to close it (a section of
    /// another worker closed the allocation). Best effort: a worker that has stopped has
    /// closed its sockets already.
    pub(crate) fn close_elsewhere(&self, relay: SocketAddr, socket: RelaySocket) {
        if let Some(inbox) = socket.owner().and_then(|owner| self.closing.get(owner)) {
            let _ = inbox.send((relay, socket));
        }
    }

    /// Tells a worker's timer task that a section outside the workers armed a server
    /// deadline earlier than the ones they sleep until.
    pub(crate) fn timers_changed(&self) {
        self.deadline_moved.notify_one();
    }

    /// Publishes worker `index`'s IO counters for the metrics endpoint.
    pub(crate) fn publish_io(&self, index: usize, io: IoCounters) {
        if let Some(slot) = self.io.get(index) {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = io;
        }
    }

    /// Ends a section under the server lock: takes the fast-path commands the server
    /// emitted in it (into `commands`, a reusable buffer), releases the server lock and
    /// applies them, so map system calls never hold up the workers waiting for the
    /// server. Afterwards the section's responses (`responses_pending`) may be sent.
    ///
    /// Two promises hold with any number of workers and stream connections:
    /// 1. Commands are applied in the order the server emitted them. The server emits
    ///    them in the order of its lock sections. A section that emitted commands takes
    ///    the fast-path lock *before* it releases the server lock, and keeps it until
    ///    they are applied. A later section starts after that release, so its worker asks
    ///    for the fast-path lock only after the earlier worker holds it, and gets it only
    ///    once the earlier commands are applied. (A channel installed after its
    ///    allocation's removal would relay without an allocation.)
    /// 2. No response leaves before the state of every earlier section is in the fast
    ///    path (RFC 8656 §9, §12: a permission or channel exists once the client sees
    ///    success). This worker's own commands are applied before it returns. A section
    ///    without commands but with responses (e.g. a retransmission answered from the
    ///    cache) takes and drops the fast-path lock after releasing the server lock: by the
    ///    argument above, every earlier section's commands are applied by then.
    ///
    /// The locks are always taken server first, fast path second, so they cannot deadlock.
    pub(crate) fn end_section(
        &self,
        mut shared: MutexGuard<'_, Shared>,
        commands: &mut Vec<FastPathCommand>,
        responses_pending: bool,
    ) {
        commands.extend(std::iter::from_fn(|| shared.server.poll_fast_path()));
        if commands.is_empty() {
            drop(shared);
            if responses_pending {
                drop(self.lock_fast_path());
            }
            return;
        }
        let mut fast_path = self.lock_fast_path();
        drop(shared);
        for command in commands.drain(..) {
            fast_path.apply(command);
        }
    }
}
