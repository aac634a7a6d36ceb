//! The daemon: drives the sans-IO [`Server`](crate::protocol::turn::Server) with real UDP
//! sockets on tokio.
//!
//! The relay runs N workers (one per CPU by default), like coturn's relay threads. Each
//! worker is a thread with its own current-thread tokio runtime and its own listener
//! socket per listen address (all bound with SO_REUSEPORT: the kernel spreads clients
//! over them by a hash of the 4-tuple). The workers share ONE server behind a mutex, so
//! quotas, reservation tokens and nonces behave exactly as with one thread; the lock is
//! held only while the core handles a received batch (a few microseconds), while the
//! system calls — where nearly all the time goes — run in parallel outside it. That
//! includes the fast-path map updates the core asks for: they are applied behind a second
//! lock, in order.
//! TCP and TLS clients ([`stream`]) each have a task on the workers' shared server: their
//! sections follow the same lock order, and their allocations stay out of the fast path.
//!
//! With XDP attached, the kernel relays ChannelData and Send/Data for the flows the
//! core installs; what reaches these sockets are misses, which are relayed identically.
//!
//! Where things are:
//! - [`startup`]: binding the listeners, starting the workers and the admin endpoint,
//!   shutdown; [`control`]: drain, reload, signals and service-manager notifications.
//! - [`hub`]: what the workers share (the server, the fast path, the relay sockets) and
//!   the order in which fast-path commands and responses take effect.
//! - [`worker`]: one worker's thread, runtime and tasks (a reader per listener, one for
//!   all its relay sockets, timers, cross-worker closes).
//! - [`relay_loop`]: a received batch through the server and out again.
//! - [`relay_sockets`]: a worker's relay sockets, their readiness and their turns.
//! - [`sockets`]: binding, socket options, recvmmsg + GRO, sendmmsg + GSO, TTL.

mod admin;
pub mod config;
mod control;
mod hub;
mod interfaces;
pub mod logging;
mod metrics;
mod relay_loop;
mod relay_sockets;
mod report;
mod sockets;
mod startup;
mod stream;
mod worker;
mod xdp;

/// The admin endpoint's JSON documents and its command-line client (`turn-relay ctl`).
pub use admin::{api, ctl};
pub use startup::{run, Options};

use hub::Hub;

/// The number of relay workers when none is asked for: one per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests;
