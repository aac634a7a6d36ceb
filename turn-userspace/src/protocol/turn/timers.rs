//! Expiry deadlines: one binary heap with lazy deletion. A refresh pushes a new deadline
//! and leaves the old one in place; when an old one fires, the handler sees that the
//! state's actual expiry lies in the future and ignores it. O(log n) per event, which
//! keeps thousands of allocations cheap.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::time::Instant;

use crate::protocol::datapath::ClientFlow;
use crate::protocol::stun::TransactionId;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    Allocation(ClientFlow),
    Permission(ClientFlow, IpAddr),
    Channel(ClientFlow, u16),
    ChannelCoolOff(ClientFlow, u16),
    Reservation(u64),
    Transaction(ClientFlow, TransactionId),
}

#[derive(Debug)]
struct Deadline {
    at: Instant,
    /// Insertion order, to keep the heap order total and deterministic.
    sequence: u64,
    kind: TimerKind,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Reversed, so the `BinaryHeap` (a max-heap) pops the earliest deadline first.
impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Deadline>,
    sequence: u64,
}

impl Timers {
    pub(super) fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.sequence += 1;
        self.heap.push(Deadline {
            at,
            sequence: self.sequence,
            kind,
        });
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|deadline| deadline.at)
    }

    /// The next deadline at or before `now`, removed from the heap.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        if self.heap.peek()?.at > now {
            return None;
        }
        self.heap.pop().map(|deadline| deadline.kind)
    }
}
