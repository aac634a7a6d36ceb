//! Expiry deadlines in deadline order, one per owner: an allocation (the earliest of its
//! own expiry and those of its permissions, channels and channel cool-offs), or a port
//! reservation. The owner remembers the deadline it armed, so re-arming (a refresh)
//! removes exactly its old entry instead of adding one, and deleting the owner cancels
//! it. However often a client refreshes, the timers hold at most one entry per
//! allocation and reservation, each a few bytes (an instant and a small key). O(log n)
//! per operation, which keeps thousands of allocations cheap.

use std::collections::BTreeSet;
use std::time::Instant;

#[derive(Debug)]
pub(super) struct Timers<K> {
    /// (deadline, owner): unique, because an owner arms one deadline at a time; ties are
    /// broken by the owner's key, so the order is total and deterministic.
    by_deadline: BTreeSet<(Instant, K)>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// Arms `key` for `at`, replacing the deadline it armed before (`armed`), if any.
    pub(super) fn schedule(&mut self, armed: Option<Instant>, at: Instant, key: K) {
        if armed == Some(at) {
            return;
        }
        if let Some(armed) = armed {
            self.cancel(armed, key);
        }
        self.by_deadline.insert((at, key));
    }

    /// Disarms `key`'s deadline `armed` (its owner is gone).
    pub(super) fn cancel(&mut self, armed: Instant, key: K) {
        self.by_deadline.remove(&(armed, key));
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// The owner of the next deadline at or before `now`, disarmed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let &(at, _) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.pop_first().map(|(_, key)| key)
    }

    /// How many deadlines are armed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_deadline.len()
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
        let mut armed = None;
        for second in 1..=100 {
            let at = start + Duration::from_secs(second);
            timers.schedule(armed, at, 7u64);
            armed = Some(at);
        }
        timers.schedule(None, start + Duration::from_secs(5), 8);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(5)));
        assert_eq!(timers.pop_due(start + Duration::from_secs(99)), Some(8));
        assert_eq!(timers.pop_due(start + Duration::from_secs(99)), None);
        assert_eq!(timers.pop_due(start + Duration::from_secs(100)), Some(7));
        timers.schedule(None, start, 9);
        timers.cancel(start, 9);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next_deadline(), None);
    }
}
