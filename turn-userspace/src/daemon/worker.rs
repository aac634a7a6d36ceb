//! A relay worker: one thread with its own current-thread tokio runtime, whose reactor
//! watches the worker's sockets. Each listener has a task that sleeps until the socket is
//! readable, then reads it in batches through the worker's [`RelayLoop`]. The relay
//! sockets the worker opened (one per allocation) share one task: the reactor watches the
//! epoll set they sit in ([`super::relay_sockets`]), and the task reads the ready ones
//! in turns. A timer task runs the server's deadlines, and an inbox task closes the
//! worker's relay sockets that other workers' sections closed.
//!
//! The tasks run on a `LocalSet`, one at a time, and share the worker's buffers through a
//! `RefCell` that no task holds across an `await`. Sockets are registered for
//! readability only (`AsyncFd` with `Interest::READABLE`): a registration for
//! writability would wake the worker each time the kernel frees a sent datagram, and a
//! UDP relay never waits to send (a full send buffer drops, as the network would).

use std::cell::RefCell;
use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::task::LocalSet;

use super::hub::{CloseInbox, Hub, RelaySocket};
use super::relay_loop::RelayLoop;
use super::relay_sockets::ReadySet;
use super::sockets::{self, SocketRole};

/// How often a worker publishes its IO counters and re-reads the server's next deadline
/// (which a section outside the workers may have moved).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Where a reader reports the failure that stops its worker.
type Failures = mpsc::UnboundedSender<anyhow::Error>;

/// Runs relay worker `index` on `listeners` until `stop` completes or reading one of its
/// listeners or its relay sockets' set fails.
///
/// `coalesce` (`server.coalesce_us`): after each wake-up the worker's thread first sleeps
/// that long, then reads its sockets. Datagrams that arrive meanwhile are read with the
/// one that woke it instead of waking it again, and the kernel's receive path wakes
/// nobody for them. At some tens of thousands of datagrams a second, a wake-up and its
/// system calls cost more than the relaying itself, so the CPU per relayed datagram
/// drops, at the price of up to `coalesce` more delay for each (and the sleep's overrun:
/// the timer's slack, the wake-up). A busy worker does not sleep in between: it wakes up
/// only when it has gone idle.
pub(super) fn run_worker(
    index: usize,
    hub: Arc<Hub>,
    listeners: Vec<(UdpSocket, SocketAddr)>,
    inbox: CloseInbox,
    coalesce: Duration,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if !coalesce.is_zero() {
        builder.on_thread_unpark(move || std::thread::sleep(coalesce));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting a worker's tokio runtime")?;
    LocalSet::new().block_on(&runtime, async move {
        let worker = Rc::new(RefCell::new(
            RelayLoop::new(index, hub).context("creating a worker's relay socket set")?,
        ));
        let (failed, mut failure) = mpsc::unbounded_channel();
        for (socket, local) in listeners {
            let socket = Arc::new(socket);
            watch_listener(&worker, Arc::clone(&socket), local, failed.clone())
                .with_context(|| format!("watching the TURN listener {local}"))?;
            worker.borrow_mut().listeners.push((local, socket));
        }
        let readiness = worker.borrow().relays.readiness();
        tokio::task::spawn_local(read_relays(Rc::clone(&worker), readiness, failed));
        tokio::task::spawn_local(close_requested(Rc::clone(&worker), inbox));
        tokio::task::spawn_local(run_timers(Rc::clone(&worker)));
        tokio::task::spawn_local(housekeeping(Rc::clone(&worker)));
        let result = tokio::select! {
            () = stop => Ok(()),
            Some(error) = failure.recv() => Err(error),
        };
        worker.borrow().publish_io();
        result
    })
}

impl RelayLoop {
    /// Binds a relay socket at `relay` and adds it to this worker's relay sockets.
    pub(super) fn open_relay(&mut self, relay: SocketAddr) -> std::io::Result<RelaySocket> {
        let socket = Arc::new(sockets::bind_udp(relay, SocketRole::Relay, false)?);
        let key = self.relays.open(Arc::clone(&socket), relay)?;
        RelaySocket::new(socket, self.index, key).ok_or_else(|| {
            self.relays.close(key, relay);
            std::io::Error::other("too many relay sockets")
        })
    }

    /// Stops reading and closes this worker's relay socket at `relay` (the handle other
    /// workers borrow for a section may keep its descriptor open until that is sent).
    pub(super) fn close(&mut self, relay: SocketAddr, socket: &RelaySocket) {
        let closed = usize::try_from(socket.key).is_ok_and(|key| self.relays.close(key, relay));
        if !closed {
            tracing::warn!(%relay, "closing a relay socket this worker does not read");
        }
    }
}

/// Registers the listener `socket` (bound at `local`) with this worker's reactor and
/// spawns its reader, which reports a failure on `failed` (that stops the worker).
fn watch_listener(
    worker: &Rc<RefCell<RelayLoop>>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    failed: Failures,
) -> std::io::Result<()> {
    // SAFETY: the AsyncFd owns a handle to the socket, so its fd stays open and the same
    // for the AsyncFd's whole life.
    let readiness = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let worker = Rc::clone(worker);
    tokio::task::spawn_local(async move {
        if let Err(error) = read_listener(worker, readiness, local).await {
            tracing::error!(%local, %error, "socket readiness failed");
            let _ = failed.send(anyhow::Error::new(error).context(format!("reading {local}")));
        }
    });
    Ok(())
}

/// A listener's reader: waits for readability, relays what is queued, and sleeps again
/// once the queue is empty (edge-triggered: a datagram arriving after the last read wakes
/// it again). A listener that still has data after its share yields to the others first.
async fn read_listener(
    worker: Rc<RefCell<RelayLoop>>,
    readiness: AsyncFd<Arc<UdpSocket>>,
    local: SocketAddr,
) -> std::io::Result<()> {
    loop {
        let mut ready = readiness.readable().await?;
        let drained = worker
            .borrow_mut()
            .receive(ready.get_inner(), local, SocketRole::Listener);
        if drained {
            ready.clear_ready();
        } else {
            drop(ready);
            tokio::task::yield_now().await;
        }
    }
}

/// The relay sockets' reader: waits until the set reports one readable, gives the ready
/// ones a turn ([`RelayLoop::receive_relays`]), and sleeps again once none is left with
/// datagrams. While some are, the worker's other tasks run between turns. A datagram
/// arriving after the set was last asked makes it readable again, so clearing the
/// readiness loses nothing. A failure of the set is reported on `failed` (that stops the
/// worker).
async fn read_relays(
    worker: Rc<RefCell<RelayLoop>>,
    readiness: Rc<AsyncFd<ReadySet>>,
    failed: Failures,
) {
    let result: std::io::Result<()> = async {
        loop {
            let mut ready = readiness.readable().await?;
            if worker.borrow_mut().receive_relays()? {
                drop(ready);
                tokio::task::yield_now().await;
            } else {
                ready.clear_ready();
            }
        }
    }
    .await;
    if let Err(error) = result {
        tracing::error!(%error, "reading the relay sockets failed");
        let _ = failed.send(anyhow::Error::new(error).context("reading the relay sockets"));
    }
}

/// Runs the server's deadlines: sleeps until the next one this worker knows of (or until
/// a section of this worker, or of a TCP/TLS connection, tells of an earlier one), then
/// handles what is due.
async fn run_timers(worker: Rc<RefCell<RelayLoop>>) {
    let timer_changed = Rc::clone(&worker.borrow().timer_changed);
    let hub = Arc::clone(&worker.borrow().hub);
    loop {
        let deadline = worker.borrow().timer;
        let due = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = due => worker.borrow_mut().handle_timeout(),
            () = timer_changed.notified() => {}
            () = hub.deadline_moved.notified() => {
                let next = hub.lock().server.poll_timeout();
                worker.borrow_mut().timer = next;
            }
        }
    }
}

/// About once a second: publishes the worker's IO counters and re-reads the server's next
/// deadline.
async fn housekeeping(worker: Rc<RefCell<RelayLoop>>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut worker = worker.borrow_mut();
        worker.publish_io();
        let next = worker.hub.lock().server.poll_timeout();
        if next != worker.timer {
            worker.timer = next;
            worker.timer_changed.notify_one();
        }
    }
}

/// Closes the relay sockets of this worker that other workers' sections closed.
async fn close_requested(worker: Rc<RefCell<RelayLoop>>, mut inbox: CloseInbox) {
    while let Some((relay, socket)) = inbox.recv().await {
        worker.borrow_mut().close(relay, &socket);
    }
}
