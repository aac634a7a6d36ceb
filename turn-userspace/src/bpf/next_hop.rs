//! Keeps the XDP program's cached next hops honest.
//!
//! The program caches the result of `bpf_fib_lookup` (egress interface, MAC addresses,
//! path MTU) in each map entry, stamped with the routing generation of the moment
//! ([`turn_common::maps::NextHop`]); an entry whose stamp differs from the current
//! generation is looked up again. [`RoutingWatch`] moves the generation on:
//!
//! - on every rtnetlink notification that can change a lookup's result: links, addresses,
//!   neighbours, routes, nexthop objects, policy rules and the forwarding switches
//!   (netconf), of IPv4 and IPv6, in the network namespace it was started in;
//! - when notifications were lost (the socket overran: ENOBUFS);
//! - once a second regardless, for what the kernel does not announce (a path MTU learnt
//!   from ICMP, a neighbour entry's address changing without a notification).
//!
//! So no frame goes to a next hop older than the last change plus the time the watcher
//! takes to see it, and never older than a second. Until the watcher runs (or when it
//! cannot), the generation stays 0 and the program looks up every frame.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::maps::RoutingGeneration;

/// The rtnetlink multicast groups whose notifications can change a next hop.
const GROUPS: [u32; 12] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_NEIGH,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_IPV4_RULE,
    libc::RTNLGRP_IPV4_NETCONF,
    libc::RTNLGRP_IPV6_IFADDR,
    libc::RTNLGRP_IPV6_ROUTE,
    libc::RTNLGRP_IPV6_RULE,
    libc::RTNLGRP_IPV6_NETCONF,
    libc::RTNLGRP_IPV6_PREFIX,
    libc::RTNLGRP_NEXTHOP,
];
/// Invalidation for changes the kernel does not announce.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How long the watcher waits for a notification before it looks at the clock and its
/// stop flag.
const WAKE_UP: Duration = Duration::from_millis(100);

/// The thread that moves the routing generation on; stops when dropped.
pub struct RoutingWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RoutingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingWatch").finish_non_exhaustive()
    }
}

impl RoutingWatch {
    /// Subscribes to the routing changes of the calling thread's network namespace (the
    /// one the program's interfaces are in), turns the next-hop cache on and watches.
    pub(crate) fn start(mut generation: RoutingGeneration) -> anyhow::Result<RoutingWatch> {
        let socket = subscribe().context("subscribing to rtnetlink notifications")?;
        // Anything the program cached before (with generation 0) is not reused.
        let first = next_generation(generation.get().unwrap_or(0));
        generation
            .set(first)
            .context("setting the routing generation")?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("xdp-routing".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || watch(&socket, generation, first, &stop)
            })
            .context("starting the routing watcher")?;
        Ok(RoutingWatch {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RoutingWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("the XDP routing watcher panicked");
            }
        }
    }
}

/// A netlink socket in the groups of [`GROUPS`], with a receive timeout of
/// [`WAKE_UP`].
fn subscribe() -> anyhow::Result<OwnedFd> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .context("opening a NETLINK_ROUTE socket")?;
    // The legacy group bitmask covers groups 1..=32, which is all of them here.
    let groups = GROUPS
        .iter()
        .fold(0u32, |mask, group| mask | 1 << (group - 1));
    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, groups)).context("binding to the groups")?;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::new(0, WAKE_UP.as_micros() as i64),
    )
    .context("setting the receive timeout")?;
    Ok(socket)
}

/// The generation after `current`, skipping 0 (cache off).
fn next_generation(current: u32) -> u32 {
    match current.wrapping_add(1) {
        0 => 1,
        next => next,
    }
}

fn watch(socket: &OwnedFd, mut generation: RoutingGeneration, first: u32, stop: &AtomicBool) {
    let mut current = first;
    let mut bumped_at = Instant::now();
    let mut buffer = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let changed = match recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
            // Drain whatever else is queued: one new generation for a burst.
            Ok(_) => {
                while recv(socket.as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT).is_ok() {}
                true
            }
            Err(Errno::EAGAIN | Errno::EINTR) => false,
            // Notifications were dropped: something changed, we cannot tell what.
            Err(Errno::ENOBUFS) => true,
            Err(error) => {
                tracing::warn!(%error, "reading rtnetlink notifications failed; XDP looks up next hops every second only");
                std::thread::sleep(WAKE_UP);
                false
            }
        };
        if changed || bumped_at.elapsed() >= REFRESH {
            current = next_generation(current);
            if let Err(error) = generation.set(current) {
                tracing::warn!(%error, "updating the XDP routing generation failed");
            }
            bumped_at = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_skip_zero() {
        assert_eq!(next_generation(0), 1);
        assert_eq!(next_generation(41), 42);
        assert_eq!(next_generation(u32::MAX), 1);
    }

    #[test]
    fn every_group_fits_the_legacy_bitmask() {
        assert!(GROUPS.iter().all(|group| (1..=32).contains(group)));
    }
}
