//! Responses kept for retransmissions (RFC 8489 §6.3.1): a retransmitted request on the
//! same 5-tuple gets the very response again. Every response lives
//! [`TRANSACTION_CACHE_TIME`], so the order they were cached in is the order they expire
//! in: they are kept in that order (which is their timer), and a hash index that holds
//! only their sequence numbers finds them by (flow, transaction). A response dropped
//! early (replaced) leaves an empty entry behind until its time comes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use hashbrown::HashTable;

use crate::protocol::datapath::ClientFlow;
use crate::protocol::stun::TransactionId;

use super::{TRANSACTION_CACHE_LIMIT, TRANSACTION_CACHE_TIME};

/// One cached response, or the place of one dropped early.
#[derive(Debug)]
struct Entry {
    flow: ClientFlow,
    transaction_id: TransactionId,
    expires_at: Instant,
    /// The (quota) user it answered, whose share it counts against.
    user: Arc<str>,
    /// None once dropped.
    payload: Option<Box<[u8]>>,
}

#[derive(Debug, Default)]
pub(super) struct ResponseCache {
    /// In caching order, which is expiry order.
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`; each entry's is its position plus this.
    first: u64,
    /// The sequence numbers of the live entries, hashed by (flow, transaction).
    index: HashTable<u64>,
    /// Live entries per user; the keys are shared with the entries.
    per_user: HashMap<Arc<str>, usize>,
    /// Keyed SipHash, as the standard HashMap: clients choose flows and transactions.
    hasher: RandomState,
}

impl ResponseCache {
    /// How many responses are cached.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    fn entry(&self, sequence: u64) -> Option<&Entry> {
        let position = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        self.entries.get(position)
    }

    fn entry_mut(&mut self, sequence: u64) -> Option<&mut Entry> {
        let position = usize::try_from(sequence.checked_sub(self.first)?).ok()?;
        self.entries.get_mut(position)
    }

    fn sequence(&self, flow: ClientFlow, transaction_id: TransactionId) -> Option<u64> {
        let hash = self.hasher.hash_one((flow, transaction_id));
        self.index
            .find(hash, |&sequence| {
                self.entry(sequence).is_some_and(|entry| {
                    entry.flow == flow && entry.transaction_id == transaction_id
                })
            })
            .copied()
    }

    /// The response to retransmit for this request, while it lives.
    pub(super) fn get(
        &self,
        now: Instant,
        flow: ClientFlow,
        transaction_id: TransactionId,
    ) -> Option<&[u8]> {
        let entry = self.entry(self.sequence(flow, transaction_id)?)?;
        if entry.expires_at <= now {
            return None;
        }
        entry.payload.as_deref()
    }

    /// Keeps `payload` for retransmissions of this request, replacing an earlier one,
    /// while the cache has room and `user` has fewer than `per_user` responses in it: one
    /// user cannot crowd out everyone else's.
    pub(super) fn insert(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        transaction_id: TransactionId,
        user: &str,
        per_user: usize,
        payload: &[u8],
    ) {
        let cached = self.per_user.get(user).copied().unwrap_or(0);
        if self.len() >= TRANSACTION_CACHE_LIMIT || cached >= per_user {
            return;
        }
        self.forget(flow, transaction_id);
        let user = match self.per_user.get_key_value(user) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(user),
        };
        *self.per_user.entry(Arc::clone(&user)).or_default() += 1;
        let sequence = self.first + self.entries.len() as u64;
        self.entries.push_back(Entry {
            flow,
            transaction_id,
            expires_at: now + TRANSACTION_CACHE_TIME,
            user,
            payload: Some(payload.into()),
        });
        let hash = self.hasher.hash_one((flow, transaction_id));
        let (entries, first, hasher) = (&self.entries, self.first, &self.hasher);
        self.index.insert_unique(hash, sequence, |&other| {
            let entry = other
                .checked_sub(first)
                .and_then(|position| usize::try_from(position).ok())
                .and_then(|position| entries.get(position));
            entry.map_or(0, |entry| {
                hasher.hash_one((entry.flow, entry.transaction_id))
            })
        });
    }

    /// Drops the response to this request, if cached.
    pub(super) fn forget(&mut self, flow: ClientFlow, transaction_id: TransactionId) {
        let Some(sequence) = self.sequence(flow, transaction_id) else {
            return;
        };
        self.drop_entry(sequence);
    }

    /// Drops the live entry `sequence` (it stays in place, empty, until it comes due).
    fn drop_entry(&mut self, sequence: u64) {
        let Some(entry) = self.entry_mut(sequence) else {
            return;
        };
        if entry.payload.take().is_none() {
            return;
        }
        let (flow, transaction_id, user) =
            (entry.flow, entry.transaction_id, Arc::clone(&entry.user));
        let hash = self.hasher.hash_one((flow, transaction_id));
        if let Ok(found) = self.index.find_entry(hash, |&other| other == sequence) {
            found.remove();
        }
        if let Some(count) = self.per_user.get_mut(&user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(&user);
            }
        }
    }

    /// Drops the responses whose time has come (RFC 8489 §6.3.1: 40 s).
    pub(super) fn expire(&mut self, now: Instant) {
        while self
            .entries
            .front()
            .is_some_and(|entry| entry.expires_at <= now)
        {
            self.drop_entry(self.first);
            self.entries.pop_front();
            self.first += 1;
        }
    }

    /// When the oldest entry expires.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.entries.front().map(|entry| entry.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn flow(port: u16) -> ClientFlow {
        ClientFlow::udp(
            std::net::SocketAddr::from(([198, 18, 0, 1], port)),
            std::net::SocketAddr::from(([198, 18, 0, 2], 3478)),
        )
    }

    #[test]
    fn responses_expire_in_caching_order_and_replaced_ones_leave_nothing_live() {
        let start = Instant::now();
        let mut cache = ResponseCache::default();
        let transaction = TransactionId([7; 12]);
        cache.insert(start, flow(1), transaction, "alice", 2, b"first");
        let later = start + Duration::from_secs(10);
        cache.insert(later, flow(2), transaction, "alice", 2, b"second");
        // Alice's share is used up; Bob's is not.
        cache.insert(later, flow(3), transaction, "alice", 2, b"third");
        cache.insert(later, flow(3), transaction, "bob", 2, b"bob's");
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(later, flow(1), transaction), Some(&b"first"[..]));
        assert_eq!(cache.get(later, flow(3), transaction), Some(&b"bob's"[..]));
        // Replacing keeps one live response per request.
        cache.forget(flow(3), transaction);
        cache.insert(later, flow(3), transaction, "bob", 2, b"bob's again");
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.next_deadline(), Some(start + TRANSACTION_CACHE_TIME));
        cache.expire(start + TRANSACTION_CACHE_TIME);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(later, flow(1), transaction), None);
        assert_eq!(
            cache.get(later, flow(3), transaction),
            Some(&b"bob's again"[..])
        );
        // Alice got her share back.
        cache.insert(later, flow(4), transaction, "alice", 2, b"fourth");
        assert_eq!(cache.len(), 3);
        cache.expire(later + TRANSACTION_CACHE_TIME);
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.next_deadline(), None);
        assert!(cache.per_user.is_empty());
    }
}
