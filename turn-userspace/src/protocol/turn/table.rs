//! The allocation table. Allocations live in numbered slots (a spare slot is one
//! pointer) and are addressed by their [`AllocationId`] in the timers; the two ways to
//! find one, by client flow (RFC 8656 §2: the 5-tuple) and by relayed address (§11.3:
//! a peer's datagram), are hash indexes that hold ids only. The flow (68 bytes) and the
//! relayed address (32 bytes) are stored once, in the allocation itself, instead of as
//! the keys of two maps.
//!
//! Hand-written slots with a free list: ids must stay small (4 bytes in every index
//! entry and timer), and this is all of a slab that the table needs.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;

use hashbrown::HashTable;

use crate::protocol::datapath::ClientFlow;

use super::allocation::Allocation;

/// The slot of a live allocation. Reused once that allocation is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct AllocationId(u32);

impl AllocationId {
    fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Debug, Default)]
pub(super) struct Allocations {
    /// Boxed: a spare slot (after removals) is a pointer, not a whole allocation.
    slots: Vec<Option<Box<Allocation>>>,
    /// Empty slots, reused first.
    free: Vec<AllocationId>,
    len: usize,
    by_flow: HashTable<AllocationId>,
    by_relay: HashTable<AllocationId>,
    /// Keyed SipHash, as the standard HashMap: flows and relayed addresses are chosen by
    /// clients, who must not be able to aim at one bucket.
    hasher: RandomState,
}

/// The slot `id` of `slots`, if it holds an allocation.
fn slot(slots: &[Option<Box<Allocation>>], id: AllocationId) -> Option<&Allocation> {
    slots.get(id.index()).and_then(Option::as_deref)
}

impl Allocations {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn id(&self, flow: &ClientFlow) -> Option<AllocationId> {
        self.find(&self.by_flow, flow, |allocation| allocation.flow == *flow)
    }

    pub(super) fn id_by_relay(&self, relay: &SocketAddr) -> Option<AllocationId> {
        self.find(&self.by_relay, relay, |allocation| {
            allocation.relay == *relay
        })
    }

    /// The id in `index` (hashed by `key`) of the allocation that `matches`.
    fn find(
        &self,
        index: &HashTable<AllocationId>,
        key: impl std::hash::Hash,
        matches: impl Fn(&Allocation) -> bool,
    ) -> Option<AllocationId> {
        index
            .find(self.hasher.hash_one(key), |&id| {
                slot(&self.slots, id).is_some_and(&matches)
            })
            .copied()
    }

    pub(super) fn contains(&self, flow: &ClientFlow) -> bool {
        self.id(flow).is_some()
    }

    pub(super) fn contains_relay(&self, relay: &SocketAddr) -> bool {
        self.id_by_relay(relay).is_some()
    }

    pub(super) fn get(&self, flow: &ClientFlow) -> Option<&Allocation> {
        self.by_id(self.id(flow)?)
    }

    pub(super) fn get_mut(&mut self, flow: &ClientFlow) -> Option<&mut Allocation> {
        let id = self.id(flow)?;
        self.by_id_mut(id)
    }

    pub(super) fn by_id(&self, id: AllocationId) -> Option<&Allocation> {
        slot(&self.slots, id)
    }

    pub(super) fn by_id_mut(&mut self, id: AllocationId) -> Option<&mut Allocation> {
        self.slots
            .get_mut(id.index())
            .and_then(Option::as_deref_mut)
    }

    pub(super) fn by_relay_mut(&mut self, relay: &SocketAddr) -> Option<&mut Allocation> {
        let id = self.id_by_relay(relay)?;
        self.by_id_mut(id)
    }

    /// Adds an allocation whose flow and relayed address no other allocation has (the
    /// caller checked both); None when every id is taken.
    pub(super) fn insert(&mut self, allocation: Box<Allocation>) -> Option<AllocationId> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = AllocationId(u32::try_from(self.slots.len()).ok()?);
                self.slots.push(None);
                id
            }
        };
        let flow_hash = self.hasher.hash_one(allocation.flow);
        let relay_hash = self.hasher.hash_one(allocation.relay);
        if let Some(free) = self.slots.get_mut(id.index()) {
            *free = Some(allocation);
        }
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_flow.insert_unique(flow_hash, id, |&other| {
            slot(slots, other).map_or(0, |allocation| hasher.hash_one(allocation.flow))
        });
        self.by_relay.insert_unique(relay_hash, id, |&other| {
            slot(slots, other).map_or(0, |allocation| hasher.hash_one(allocation.relay))
        });
        self.len += 1;
        Some(id)
    }

    pub(super) fn remove(&mut self, id: AllocationId) -> Option<Box<Allocation>> {
        let allocation = self.slots.get_mut(id.index())?.take()?;
        let flow_hash = self.hasher.hash_one(allocation.flow);
        if let Ok(entry) = self.by_flow.find_entry(flow_hash, |&other| other == id) {
            entry.remove();
        }
        let relay_hash = self.hasher.hash_one(allocation.relay);
        if let Ok(entry) = self.by_relay.find_entry(relay_hash, |&other| other == id) {
            entry.remove();
        }
        self.free.push(id);
        self.len -= 1;
        Some(allocation)
    }

    /// Every allocation, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Allocation> + '_ {
        self.slots.iter().filter_map(Option::as_deref)
    }
}
