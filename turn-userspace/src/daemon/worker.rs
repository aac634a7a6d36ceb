//! A relay worker: one thread with its own current-thread tokio runtime, whose reactor
//! watches the worker's sockets. Each socket (the worker's listeners, and the relay
//! sockets it opened) has a task that sleeps until the socket is readable, then reads it
//! in batches through the worker's [`RelayLoop`]; a timer task runs the server's
//! deadlines, and an inbox task closes the worker's relay sockets that other workers'
//! sections closed.
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

use super::hub::{CloseInbox, Hub};
use super::relay_loop::{OpenSocket, RelayLoop};
use super::sockets::{self, SocketRole};

/// How often a worker publishes its IO counters and re-reads the server's next deadline
/// (which a section outside the workers may have moved).
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Runs relay worker `index` on `listeners` until `stop` completes or one of its sockets
/// fails.
pub(super) fn run_worker(
    index: usize,
    hub: Arc<Hub>,
    listeners: Vec<(UdpSocket, SocketAddr)>,
    inbox: CloseInbox,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a worker's tokio runtime")?;
    LocalSet::new().block_on(&runtime, async move {
        let worker = Rc::new_cyclic(|this| RefCell::new(RelayLoop::new(index, hub, this.clone())));
        let (failed, mut failure) = mpsc::unbounded_channel();
        for (socket, local) in listeners {
            let reader = watch(
                &worker,
                Arc::new(socket),
                local,
                SocketRole::Listener,
                Some(failed.clone()),
            )
            .with_context(|| format!("watching the TURN listener {local}"))?;
            worker.borrow_mut().sockets.insert(local, reader);
        }
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
    /// Binds a relay socket at `relay` and starts reading it.
    pub(super) fn open_relay(&mut self, relay: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
        let socket = Arc::new(sockets::bind_udp(relay, SocketRole::Relay, false)?);
        let worker = self.this.upgrade().ok_or(std::io::ErrorKind::BrokenPipe)?;
        let open = watch(&worker, Arc::clone(&socket), relay, SocketRole::Relay, None)?;
        self.sockets.insert(relay, open);
        Ok(socket)
    }

    /// Stops reading and closes this worker's socket at `local` (its reader task owns
    /// the last handle but the ones other workers borrow for a section).
    pub(super) fn close(&mut self, local: SocketAddr) {
        if let Some(open) = self.sockets.remove(&local) {
            open.reader.abort();
        }
    }
}

/// Registers `socket` (bound at `local`) with this worker's reactor and spawns its
/// reader. A listener's reader reports a failure on `failed` (which stops the worker); a
/// relay socket's reader just ends.
fn watch(
    worker: &Rc<RefCell<RelayLoop>>,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    role: SocketRole,
    failed: Option<mpsc::UnboundedSender<anyhow::Error>>,
) -> std::io::Result<OpenSocket> {
    // SAFETY: the AsyncFd owns a handle to the socket, so its fd stays open and the same
    // for the AsyncFd's whole life.
    let readiness =
        unsafe { AsyncFd::register_with_interest(Arc::clone(&socket), Interest::READABLE) }
            .map_err(std::io::Error::from)?;
    let reader = tokio::task::spawn_local({
        let worker = Rc::clone(worker);
        async move {
            if let Err(error) = read_socket(worker, readiness, local, role).await {
                tracing::error!(%local, %error, "socket readiness failed");
                if let Some(failed) = failed {
                    let _ =
                        failed.send(anyhow::Error::new(error).context(format!("reading {local}")));
                }
            }
        }
    });
    Ok(OpenSocket {
        socket,
        reader: reader.abort_handle(),
    })
}

/// A socket's reader: waits for readability, relays what is queued, and sleeps again
/// once the queue is empty (edge-triggered: a datagram arriving after the last read wakes
/// it again). A socket that still has data after its share yields to the others first.
async fn read_socket(
    worker: Rc<RefCell<RelayLoop>>,
    readiness: AsyncFd<Arc<UdpSocket>>,
    local: SocketAddr,
    role: SocketRole,
) -> std::io::Result<()> {
    loop {
        let mut ready = readiness.readable().await?;
        let drained = worker.borrow_mut().receive(ready.get_inner(), local, role);
        if drained {
            ready.clear_ready();
        } else {
            drop(ready);
            tokio::task::yield_now().await;
        }
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
    while let Some(relay) = inbox.recv().await {
        worker.borrow_mut().close(relay);
    }
}
