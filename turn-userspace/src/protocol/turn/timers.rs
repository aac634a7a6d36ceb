//! Expiry deadlines, keyed by what they are for: one deadline per key, so re-arming (a
//! refresh) replaces the old deadline instead of adding one, and deleting state cancels
//! its deadlines. However often a client refreshes, the timers hold at most one entry
//! per allocation, permission, channel, reservation and cached response. O(log n) per
//! operation, which keeps thousands of allocations cheap.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

use crate::protocol::datapath::ClientFlow;
use crate::protocol::stun::TransactionId;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TimerKind {
    Allocation(ClientFlow),
    Permission(ClientFlow, IpAddr),
    Channel(ClientFlow, u16),
    ChannelCoolOff(ClientFlow, u16),
    Reservation(u64),
    Transaction(ClientFlow, TransactionId),
}

/// A deadline's place in the order: its instant, then the order of scheduling (so the
/// order is total and deterministic).
type Slot = (Instant, u64);

#[derive(Debug, Default)]
pub(super) struct Timers {
    by_deadline: BTreeMap<Slot, TimerKind>,
    by_kind: HashMap<TimerKind, Slot>,
    sequence: u64,
}

impl Timers {
    /// Arms `kind` for `at`, replacing its earlier deadline if any.
    pub(super) fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.sequence += 1;
        let slot = (at, self.sequence);
        if let Some(previous) = self.by_kind.insert(kind, slot) {
            self.by_deadline.remove(&previous);
        }
        self.by_deadline.insert(slot, kind);
    }

    /// Disarms `kind` (its state is gone).
    pub(super) fn cancel(&mut self, kind: TimerKind) {
        if let Some(slot) = self.by_kind.remove(&kind) {
            self.by_deadline.remove(&slot);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|((at, _), _)| *at)
    }

    /// The next deadline at or before `now`, disarmed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        let (&(at, _), _) = self.by_deadline.first_key_value()?;
        if at > now {
            return None;
        }
        let (_, kind) = self.by_deadline.pop_first()?;
        self.by_kind.remove(&kind);
        Some(kind)
    }

    /// How many deadlines are armed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_kind.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rearming_replaces_and_cancel_disarms() {
        let start = Instant::now();
        let mut timers = Timers::default();
        for second in 1..=100 {
            timers.schedule(
                start + Duration::from_secs(second),
                TimerKind::Reservation(7),
            );
        }
        timers.schedule(start + Duration::from_secs(5), TimerKind::Reservation(8));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(5)));
        assert_eq!(
            timers.pop_due(start + Duration::from_secs(99)),
            Some(TimerKind::Reservation(8))
        );
        assert_eq!(timers.pop_due(start + Duration::from_secs(99)), None);
        assert_eq!(
            timers.pop_due(start + Duration::from_secs(100)),
            Some(TimerKind::Reservation(7))
        );
        timers.schedule(start, TimerKind::Reservation(9));
        timers.cancel(TimerKind::Reservation(9));
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_deadline(), None);
    }
}
