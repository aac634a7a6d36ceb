//! One worker's relay sockets (one per UDP allocation it opened) and their readiness. The
//! sockets sit in a slab and in one edge-triggered epoll set that reports the slab keys
//! of those that received datagrams. The worker's tokio reactor watches only the set's
//! descriptor (see [`super::worker`]), so a relay socket costs a slab entry (and the
//! kernel's epoll item), not a task and a reactor registration of its own.
//!
//! Reading is fair: [`RelaySockets::next_queued`] hands out the ready sockets in the order
//! they became ready, each for one bounded share ([`super::relay_loop`]); one that still
//! holds datagrams after its share queues again behind the others (an edge-triggered set
//! reports a socket again only once new datagrams arrive).
//!
//! Why not a set of futures (`FuturesUnordered`, tokio-stream's `StreamMap`): the first
//! keeps a task node and a reactor registration per socket (the memory this removes),
//! the second polls every socket on each wake-up. The pieces here are nix's epoll and a
//! slab; what is hand-written is the queue of sockets waiting for a share.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Ready sockets taken from the set at a time, and shares given per turn.
pub(super) const SOCKETS_PER_TURN: usize = 64;

/// The epoll set of a worker's relay sockets, as its reactor sees it: readable while one
/// of them is.
pub(super) struct ReadySet(Epoll);

impl AsRawFd for ReadySet {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// An open relay socket.
struct OpenRelay {
    socket: Arc<UdpSocket>,
    /// The relayed address it is bound at.
    local: SocketAddr,
    /// Whether it waits in the queue for a share.
    queued: bool,
}

/// A worker's relay sockets, and which of them wait for a share of reading.
pub(super) struct RelaySockets {
    set: Rc<AsyncFd<ReadySet>>,
    open: Slab<OpenRelay>,
    /// The keys of the sockets waiting for a share, oldest first: exactly those marked
    /// `queued`.
    queue: VecDeque<usize>,
}

impl RelaySockets {
    /// An empty set, registered with the current tokio reactor.
    pub(super) fn new() -> io::Result<RelaySockets> {
        let set = ReadySet(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?);
        // SAFETY: the AsyncFd owns the set, so its fd stays open and the same for the
        // AsyncFd's whole life.
        let set = unsafe { AsyncFd::register_with_interest(set, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(RelaySockets {
            set: Rc::new(set),
            open: Slab::new(),
            queue: VecDeque::new(),
        })
    }

    /// The set's readiness, for the task that reads the sockets.
    pub(super) fn readiness(&self) -> Rc<AsyncFd<ReadySet>> {
        Rc::clone(&self.set)
    }

    /// Adds `socket`, bound at `local`, to the set; returns its key.
    pub(super) fn open(&mut self, socket: Arc<UdpSocket>, local: SocketAddr) -> io::Result<usize> {
        let entry = self.open.vacant_entry();
        let key = entry.key();
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, key as u64);
        self.set.get_ref().0.add(&*socket, event)?;
        entry.insert(OpenRelay {
            socket,
            local,
            queued: false,
        });
        Ok(key)
    }

    /// Removes the socket at `key` if it is the one bound at `local`, and says whether it
    /// was. Its descriptor closes with the last handle to it (other workers may hold one
    /// until their section is sent); it is not read any more.
    pub(super) fn close(&mut self, key: usize, local: SocketAddr) -> bool {
        if self.open.get(key).is_none_or(|open| open.local != local) {
            return false;
        }
        let open = self.open.remove(key);
        if let Err(error) = self.set.get_ref().0.delete(&*open.socket) {
            tracing::warn!(%local, %error, "removing a relay socket from the worker's set");
        }
        if open.queued {
            self.queue.retain(|&queued| queued != key);
        }
        true
    }

    /// Queues the sockets that received datagrams since the last call. True when the set
    /// may hold more of them than it reported (it filled the event buffer).
    pub(super) fn collect_ready(&mut self) -> io::Result<bool> {
        let mut events = [EpollEvent::empty(); SOCKETS_PER_TURN];
        let reported = match self.set.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
            Ok(reported) => reported,
            Err(Errno::EINTR) => return Ok(true),
            Err(error) => return Err(error.into()),
        };
        for event in events.iter().take(reported) {
            if let Ok(key) = usize::try_from(event.data()) {
                self.queue(key);
            }
        }
        Ok(reported == SOCKETS_PER_TURN)
    }

    fn queue(&mut self, key: usize) {
        if let Some(open) = self.open.get_mut(key) {
            if !open.queued {
                open.queued = true;
                self.queue.push_back(key);
            }
        }
    }

    /// The socket whose share is next, taken off the queue: its key, a handle to it and
    /// the address it is bound at.
    pub(super) fn next_queued(&mut self) -> Option<(usize, Arc<UdpSocket>, SocketAddr)> {
        let key = self.queue.pop_front()?;
        let open = self.open.get_mut(key)?;
        open.queued = false;
        Some((key, Arc::clone(&open.socket), open.local))
    }

    /// Queues `socket` (at `key`) again behind the others: it still holds datagrams after
    /// its share. A socket closed in the meantime is not.
    pub(super) fn requeue(&mut self, key: usize, socket: &Arc<UdpSocket>) {
        if self
            .open
            .get(key)
            .is_some_and(|open| Arc::ptr_eq(&open.socket, socket))
        {
            self.queue(key);
        }
    }

    /// Whether sockets wait for a share.
    pub(super) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime")
    }

    fn relay_socket() -> (Arc<UdpSocket>, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        socket.set_nonblocking(true).expect("nonblocking");
        let local = socket.local_addr().expect("addr");
        (Arc::new(socket), local)
    }

    /// Sends one datagram to each of `to` and lets the set report them.
    fn send_to_all(relays: &mut RelaySockets, to: &[SocketAddr]) {
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        for address in to {
            sender.send_to(b"x", address).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        relays.collect_ready().expect("epoll_wait");
    }

    #[test]
    fn ready_sockets_take_turns_and_a_busy_one_queues_behind_the_others() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let mut relays = RelaySockets::new().expect("a set");
        let sockets: Vec<_> = (0..3).map(|_| relay_socket()).collect();
        let keys: Vec<usize> = sockets
            .iter()
            .map(|(socket, local)| relays.open(Arc::clone(socket), *local).expect("open"))
            .collect();
        let addresses: Vec<SocketAddr> = sockets.iter().map(|(_, local)| *local).collect();
        send_to_all(&mut relays, &addresses);
        assert_eq!(relays.queue, keys, "in the order they became ready");

        let (first, socket, local) = relays.next_queued().expect("a ready socket");
        assert_eq!(local, addresses[0]);
        // Its share did not drain it: it goes behind the two others.
        relays.requeue(first, &socket);
        // Reported again (new datagrams) while queued: it keeps its place, once.
        send_to_all(&mut relays, &addresses[..1]);
        let order: Vec<usize> = std::iter::from_fn(|| relays.next_queued())
            .map(|(key, _, _)| key)
            .collect();
        assert_eq!(order, [keys[1], keys[2], keys[0]]);
        assert!(!relays.has_queued());
        assert!(!relays.collect_ready().expect("epoll_wait"));
        assert!(!relays.has_queued(), "nothing new arrived");
    }

    #[test]
    fn a_closed_socket_leaves_the_queue_and_is_not_requeued() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let mut relays = RelaySockets::new().expect("a set");
        let (socket, local) = relay_socket();
        let (other, other_local) = relay_socket();
        let key = relays.open(Arc::clone(&socket), local).expect("open");
        let other_key = relays.open(Arc::clone(&other), other_local).expect("open");
        send_to_all(&mut relays, &[local, other_local]);

        assert!(!relays.close(key, other_local), "another socket's address");
        assert!(relays.close(key, local));
        assert!(!relays.close(key, local), "closed already");
        let (next, _, _) = relays.next_queued().expect("the other socket");
        assert_eq!(next, other_key);
        assert!(relays.next_queued().is_none());
        relays.requeue(key, &socket);
        assert!(!relays.has_queued());

        // A socket opened in the freed slot is not the closed one.
        let (reused, reused_local) = relay_socket();
        assert_eq!(
            relays
                .open(Arc::clone(&reused), reused_local)
                .expect("open"),
            key
        );
        relays.requeue(key, &socket);
        assert!(!relays.has_queued());
        // Closed (though this handle keeps it open): its datagrams are not reported.
        send_to_all(&mut relays, &[local]);
        assert!(!relays.has_queued());
    }
}
