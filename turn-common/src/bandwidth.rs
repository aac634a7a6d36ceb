//! Bandwidth limits: coturn's `max-bps` (per allocation) and `bps-capacity` (the whole
//! relay), with ONE rule both relay paths apply: the XDP program through atomics on the
//! map values below, userspace on its own copy of the same state.
//!
//! # Semantics
//!
//! - What counts: application data, the bytes of ChannelData data or of a Send/Data
//!   indication's DATA attribute (headers excluded), the same bytes the traffic counters
//!   and usage lines count.
//! - Each direction (client → peer, peer → client) has its own bucket at the full rate,
//!   as coturn treats input and output streams separately.
//! - A token bucket of one second's worth ([`BURST_NS`]): a direction idle for a second
//!   may send `bytes_per_second` at once, then `bytes_per_second` per second. A datagram
//!   carrying more data than one second's worth is never relayed.
//! - A datagram that does not fit is dropped (and counted); it takes no tokens. The
//!   allocation's bucket is charged first, then the relay's; a datagram the relay's
//!   bucket refuses gives its allocation's tokens back.
//!
//! The bucket is kept in the generic cell rate algorithm's form: one word per direction,
//! the time at which the bucket will be full again (`due_ns`, CLOCK_MONOTONIC ns). A
//! datagram of `n` bytes costs `n / rate` seconds and fits when, after it, the bucket is
//! at most one second from full. One word is what makes it safe across CPUs with a single
//! compare-and-swap (see [`Bandwidth`]).

/// The bucket size, in time at the rate: one second's worth of data.
pub const BURST_NS: u64 = 1_000_000_000;

/// Directions, the index of [`Bandwidth::due_ns`] and of the `RATE_LIMITED` counters.
pub const TO_PEER: usize = 0;
pub const TO_CLIENT: usize = 1;

/// The time `bytes` of data take at `bytes_per_second` (not 0), in ns.
#[inline(always)]
pub const fn cost_ns(bytes: u64, bytes_per_second: u64) -> u64 {
    // At most 65535 bytes * 10^9: no overflow.
    bytes * 1_000_000_000 / bytes_per_second
}

/// THE rule: whether `bytes` of data fit the bucket that is full again at `due_ns`, at
/// `now_ns`, at `bytes_per_second` (not 0); if so, the bucket's new `due_ns`.
#[inline(always)]
pub const fn admit(due_ns: u64, now_ns: u64, bytes: u64, bytes_per_second: u64) -> Option<u64> {
    // A bucket full since before `now` is full now.
    let base = if due_ns > now_ns { due_ns } else { now_ns };
    let due = base.saturating_add(cost_ns(bytes, bytes_per_second));
    if due - now_ns <= BURST_NS {
        Some(due)
    } else {
        None
    }
}

/// `BANDWIDTH` array value (indexed by allocation slot) and the one `RELAY_BANDWIDTH`
/// entry: a limit and its bucket per direction.
///
/// `bytes_per_second` is written by userspace when it installs the allocation (0:
/// unlimited, and then the program reads nothing else). `due_ns` is the bucket state; only
/// the program changes it once installed, with a 64-bit compare-and-swap (BPF_CMPXCHG,
/// or plain stores in userspace's copy). That is why these are native-endian integers
/// at 8-byte aligned offsets, unlike the wire quantities of [`crate::maps`]: BPF atomics
/// work on aligned native words only.
///
/// Why a compare-and-swap loop rather than a `bpf_spin_lock` in the value: the whole
/// state of a direction is one word, so a CAS updates it atomically across CPUs without
/// a lock (and without the BTF-described map a spin lock needs); a CPU that loses the race
/// re-reads and re-decides with the fresh value (bounded retries, then the datagram is
/// treated as not fitting). Its cost: one locked instruction on a cache line shared by
/// the CPUs relaying that allocation, paid only when a limit is set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Bandwidth {
    pub bytes_per_second: u64,
    /// Per direction ([`TO_PEER`], [`TO_CLIENT`]): CLOCK_MONOTONIC ns at which the bucket
    /// is full again; 0: full.
    pub due_ns: [u64; 2],
}

impl Bandwidth {
    /// Unlimited.
    pub const UNLIMITED: Bandwidth = Bandwidth::new(0);

    /// A limit of `bytes_per_second` (0: unlimited) with full buckets.
    #[inline(always)]
    pub const fn new(bytes_per_second: u64) -> Self {
        Bandwidth {
            bytes_per_second,
            due_ns: [0; 2],
        }
    }

    pub const fn is_unlimited(&self) -> bool {
        self.bytes_per_second == 0
    }

    /// Takes `bytes` from `direction`'s bucket if they fit (always when unlimited): the
    /// single-owner form of the rule, for userspace.
    pub fn take(&mut self, direction: usize, now_ns: u64, bytes: u64) -> bool {
        if self.is_unlimited() {
            return true;
        }
        let Some(due) = self.due_ns.get_mut(direction) else {
            return false;
        };
        match admit(*due, now_ns, bytes, self.bytes_per_second) {
            Some(next) => {
                *due = next;
                true
            }
            None => false,
        }
    }

    /// Gives back what [`Bandwidth::take`] took for `bytes`.
    pub fn give_back(&mut self, direction: usize, bytes: u64) {
        if self.is_unlimited() {
            return;
        }
        if let Some(due) = self.due_ns.get_mut(direction) {
            *due = due.saturating_sub(cost_ns(bytes, self.bytes_per_second));
        }
    }
}

/// The order of the rule (see the module docs) for a single owner of both buckets:
/// `bytes` go in `direction` when `allocation`'s bucket and then `relay`'s take them; when
/// either refuses, neither keeps anything. The program does the same on shared buckets.
pub fn take_within(
    allocation: &mut Bandwidth,
    relay: &mut Bandwidth,
    direction: usize,
    now_ns: u64,
    bytes: u64,
) -> bool {
    if !allocation.take(direction, now_ns, bytes) {
        return false;
    }
    if relay.take(direction, now_ns, bytes) {
        return true;
    }
    allocation.give_back(direction, bytes);
    false
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)` of `u64`s, no padding, every bit pattern valid.
unsafe impl aya::Pod for Bandwidth {}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layout_is_native_words() {
        assert_eq!((size_of::<Bandwidth>(), align_of::<Bandwidth>()), (24, 8));
        assert_eq!(offset_of!(Bandwidth, bytes_per_second), 0);
        assert_eq!(offset_of!(Bandwidth, due_ns), 8);
    }

    #[test]
    fn one_second_burst_then_the_rate() {
        let mut limit = Bandwidth::new(1000);
        let start = 5 * BURST_NS;
        // A full bucket: one second's worth at once, not a byte more.
        assert!(limit.take(TO_PEER, start, 600));
        assert!(limit.take(TO_PEER, start, 400));
        assert!(!limit.take(TO_PEER, start, 1));
        // The other direction has its own bucket.
        assert!(limit.take(TO_CLIENT, start, 1000));
        // 1000 B/s: 100 bytes after 100 ms.
        assert!(!limit.take(TO_PEER, start + 99_000_000, 100));
        assert!(limit.take(TO_PEER, start + 100_000_000, 100));
        // Refills to one second's worth, not beyond.
        let later = start + 60 * BURST_NS;
        assert!(!limit.take(TO_PEER, later, 1001));
        assert!(limit.take(TO_PEER, later, 1000));
        // Given back: as if never taken.
        limit.give_back(TO_PEER, 1000);
        assert!(limit.take(TO_PEER, later, 1000));
        // Larger than one second's worth: never.
        assert!(!Bandwidth::new(1000).take(TO_PEER, later, 1001));
        // Unlimited.
        let mut unlimited = Bandwidth::UNLIMITED;
        assert!((0..1000).all(|_| unlimited.take(TO_PEER, start, 65535)));
    }

    #[test]
    fn the_long_run_rate_is_the_limit() {
        // 1200-byte datagrams offered at twice the rate for 10 s: about 10 s of the rate
        // plus the burst get through.
        let rate = 125_000;
        let mut limit = Bandwidth::new(rate);
        let mut passed = 0u64;
        let step = cost_ns(1200, rate) / 2;
        let mut now = BURST_NS;
        while now < 11 * BURST_NS {
            if limit.take(TO_PEER, now, 1200) {
                passed += 1200;
            }
            now += step;
        }
        let expected = 11 * rate;
        assert!(passed.abs_diff(expected) <= 1200, "{passed} vs {expected}");
    }
}
