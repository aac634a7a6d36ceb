//! Bandwidth limits in the fast path (coturn's `max-bps` per allocation and
//! `bps-capacity` for the relay): the rule of [`turn_common::bandwidth`], which userspace
//! applies too, on buckets shared by all CPUs.
//!
//! Safe across CPUs: a direction's whole bucket is one aligned `u64` (`due_ns`), updated
//! with a 64-bit compare-and-swap (BPF_ATOMIC | BPF_CMPXCHG, which the JIT turns into a
//! `lock cmpxchg`). A CPU that loses a race re-decides on the value the winner left, so no
//! update is lost and no datagram is admitted on stale state; after [`CAS_TRIES`] lost
//! races the datagram counts as not fitting. Giving tokens back is a
//! compare-and-swap too.
//! The cost with a limit set: two array lookups (inlined by the verifier), one division
//! and one locked instruction per bucket, on a cache line the CPUs relaying that
//! allocation share. Limits set, but not this allocation's: the two lookups and two
//! compares, inline (no call; not even the clock is read). No limit ever set (the
//! default): one word of `CONTROL`, which the frame reads anyway.

use core::intrinsics::{atomic_cxchg, AtomicOrdering::Relaxed};

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, PerCpuArray};
use turn_common::bandwidth::{admit, cost_ns, Bandwidth, TO_CLIENT, TO_PEER};
use turn_common::counters::{Counter, Outcome};

use crate::{control, now_ns};
use turn_common::maps::CONTROL_LIMITS;

/// Compare-and-swap attempts per bucket before a datagram counts as not fitting.
const CAS_TRIES: usize = 4;

/// Per allocation slot: its limit and buckets (userspace writes the limit at install).
#[map]
static BANDWIDTH: Array<Bandwidth> = Array::with_max_entries(1, 0);
/// One entry: the relay's total limit and buckets.
#[map]
static RELAY_BANDWIDTH: Array<Bandwidth> = Array::with_max_entries(1, 0);
/// Per-CPU datagrams and application bytes dropped by a limit, per direction
/// ([`TO_PEER`], [`TO_CLIENT`]).
#[map]
static RATE_LIMITED: PerCpuArray<Counter> = PerCpuArray::with_max_entries(2, 0);

/// The direction a relayed outcome goes.
#[inline(always)]
fn direction(relayed: Outcome) -> usize {
    match relayed {
        Outcome::RelayedChannelDataToPeer | Outcome::RelayedSendToPeer => TO_PEER,
        _ => TO_CLIENT,
    }
}

/// Takes `bytes` of application data relayed as `relayed` from the bucket of the
/// allocation in `slot` and then the relay's, in its direction; `Err(DropRateLimited)`
/// (counted) when either refuses, and then neither keeps anything.
///
/// Unlimited (the common case) is decided inline: by one word of `CONTROL` while no
/// limit was ever set, else by two array lookups the verifier inlines; no call, not
/// even the clock is read.
#[inline(always)]
pub fn charge(slot: u32, relayed: Outcome, bytes: u64) -> Result<(), Outcome> {
    // No limit was ever set: not even the limits' cache lines are read.
    if control(CONTROL_LIMITS) == 0 {
        return Ok(());
    }
    if rate(BANDWIDTH.get_ptr_mut(slot)) == 0 && rate(RELAY_BANDWIDTH.get_ptr_mut(0)) == 0 {
        return Ok(());
    }
    charge_limited(slot, relayed, bytes)
}

/// [`charge`] when a limit is set.
// A separate BPF function: its stack frame is not added to its callers'.
#[inline(never)]
fn charge_limited(slot: u32, relayed: Outcome, bytes: u64) -> Result<(), Outcome> {
    let direction = direction(relayed);
    let allocation = BANDWIDTH.get_ptr_mut(slot);
    let relay = RELAY_BANDWIDTH.get_ptr_mut(0);
    let now = now_ns();
    if take(allocation, direction, now, bytes) {
        if take(relay, direction, now, bytes) {
            return Ok(());
        }
        give_back(allocation, direction, bytes);
    }
    count_drop(direction, bytes);
    Err(Outcome::DropRateLimited)
}

/// Undoes a [`charge`] of the same arguments that succeeded, for a datagram that goes
/// to the stack after all (for `outcome`, which it returns).
#[inline(never)]
pub fn refund(slot: u32, relayed: Outcome, bytes: u64, outcome: Outcome) -> Outcome {
    // As in `charge`: nothing was taken.
    if control(CONTROL_LIMITS) == 0 {
        return outcome;
    }
    let direction = direction(relayed);
    give_back(BANDWIDTH.get_ptr_mut(slot), direction, bytes);
    give_back(RELAY_BANDWIDTH.get_ptr_mut(0), direction, bytes);
    outcome
}

/// The limit's rate in bytes per second (0: unlimited, or no such entry).
#[inline(always)]
fn rate(limit: Option<*mut Bandwidth>) -> u64 {
    // SAFETY: a map value, valid while the program runs; `bytes_per_second` is only
    // written by userspace.
    limit.map_or(0, |limit| unsafe { (*limit).bytes_per_second })
}

/// The bucket word of `direction` in `limit`, and the rate, when a limit is set.
#[inline(always)]
fn bucket(limit: Option<*mut Bandwidth>, direction: usize) -> Option<(*mut u64, u64)> {
    let rate = rate(limit);
    if rate == 0 {
        return None;
    }
    let limit = limit?;
    let index = if direction == TO_PEER { 0 } else { 1 };
    // SAFETY: an aligned `u64` of the map value, which the CPUs change only through
    // [`compare_and_swap`].
    let due = unsafe { core::ptr::addr_of_mut!((*limit).due_ns[index]) };
    Some((due, rate))
}

/// The rule of [`admit`] on a shared bucket; true when unlimited.
#[inline(always)]
fn take(limit: Option<*mut Bandwidth>, direction: usize, now: u64, bytes: u64) -> bool {
    let Some((due, rate)) = bucket(limit, direction) else {
        return true;
    };
    let mut current = load(due);
    for _ in 0..CAS_TRIES {
        let Some(next) = admit(current, now, bytes, rate) else {
            return false;
        };
        match compare_and_swap(due, current, next) {
            Ok(()) => return true,
            Err(actual) => current = actual,
        }
    }
    false
}

#[inline(always)]
fn give_back(limit: Option<*mut Bandwidth>, direction: usize, bytes: u64) {
    let Some((due, rate)) = bucket(limit, direction) else {
        return;
    };
    let cost = cost_ns(bytes, rate);
    let mut current = load(due);
    // Saturating, like userspace's: never below 0 (full), even if userspace reset the
    // bucket meanwhile.
    for _ in 0..CAS_TRIES {
        match compare_and_swap(due, current, current.saturating_sub(cost)) {
            Ok(()) => return,
            Err(actual) => current = actual,
        }
    }
}

/// A 64-bit load (one BPF_LDX | BPF_DW: an aligned word, never torn by other CPUs'
/// stores). Volatile, because LLVM cannot select an atomic load below BPF v3; a stale
/// value only makes the compare-and-swap fail and retry.
#[inline(always)]
fn load(word: *mut u64) -> u64 {
    // SAFETY: an aligned word of a map value (see [`bucket`]).
    unsafe { core::ptr::read_volatile(word) }
}

/// BPF_CMPXCHG on `word`: `new` if it still holds `old`, else `Err` with what it holds.
/// (The BPF target has no `AtomicU64::compare_exchange`; the intrinsic is what it would
/// lower to.)
#[inline(always)]
fn compare_and_swap(word: *mut u64, old: u64, new: u64) -> Result<(), u64> {
    // SAFETY: an aligned word of a map value (see [`bucket`]).
    match unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(word, old, new) } {
        (_, true) => Ok(()),
        (actual, false) => Err(actual),
    }
}

#[inline(always)]
fn count_drop(direction: usize, bytes: u64) {
    if let Some(counter) = RATE_LIMITED.get_ptr_mut(direction as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
        }
    }
}
