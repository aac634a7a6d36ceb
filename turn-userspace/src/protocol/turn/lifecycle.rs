//! Ending state: expiry timers (RFC 8656 §7, §9, §12; RFC 8489 §6.3.1), deletion of
//! allocations, and allocations whose relay socket could not be bound.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::datapath::{AllocationUsage, ClientFlow, EndReason, FastPathCommand};
use crate::protocol::stun::{Class, Message, Method};

use super::allocation::{Allocation, CoolingChannel, Due, Reservation};
use super::response::{RequestInfo, ResponseIntegrity};
use super::table::AllocationId;
use super::{Command, Now, Server, TurnError, CHANNEL_REBIND_COOL_OFF};

impl<R: rand::RngCore> Server<R> {
    /// Removes an allocation with everything hanging off it, asks the IO layer to close
    /// its relay socket, and asks the fast path to remove it and log its usage line (who,
    /// where, how long and how much was relayed in userspace plus in the fast path).
    pub(super) fn delete_allocation(&mut self, now: Instant, flow: ClientFlow, reason: EndReason) {
        if let Some(id) = self.allocations.id(&flow) {
            self.delete_allocation_by_id(now, id, reason);
        }
    }

    fn delete_allocation_by_id(&mut self, now: Instant, id: AllocationId, reason: EndReason) {
        let Some(allocation) = self.allocations.by_id(id) else {
            return;
        };
        let usage = AllocationUsage {
            username: allocation.username.to_string(),
            lifetime: now.saturating_duration_since(allocation.created_at),
            userspace: allocation.userspace_traffic.into(),
            reason,
        };
        if let Some(allocation) = self.remove_allocation_state(id, Some(usage)) {
            self.commands.push_back(Command::CloseRelay {
                relay: allocation.relay,
            });
        }
    }

    fn remove_allocation_state(
        &mut self,
        id: AllocationId,
        usage: Option<AllocationUsage>,
    ) -> Option<Box<Allocation>> {
        let allocation = self.allocations.remove(id)?;
        if let Some(armed) = allocation.armed {
            self.allocation_timers.cancel(armed, id);
        }
        self.uncount_for_user(&allocation.quota_user);
        let flow = allocation.flow;
        self.fast_path.push(
            flow,
            FastPathCommand::RemoveAllocation {
                flow,
                relay: allocation.relay,
                usage: usage.map(Box::new),
            },
        );
        Some(allocation)
    }

    /// Arms the allocation's timer for its earliest deadline, replacing the one armed
    /// before. Called after every change of its lifetime, permissions or channels.
    pub(super) fn rearm(&mut self, id: AllocationId) {
        let Some(allocation) = self.allocations.by_id_mut(id) else {
            return;
        };
        let next = allocation.next_deadline();
        self.allocation_timers.schedule(allocation.armed, next, id);
        allocation.armed = Some(next);
    }

    /// Expires allocations, permissions, channels (and their rebind cool-off), port
    /// reservations and cached responses whose time has come (RFC 8656 §7, §9, §12;
    /// RFC 8489 §6.3.1). An allocation's due deadlines are handled in their order.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(id) = self.allocation_timers.pop_due(now.instant) {
            if let Some(allocation) = self.allocations.by_id_mut(id) {
                allocation.armed = None;
            }
            self.expire_due(now.instant, id);
        }
        while let Some(token) = self.reservation_timers.pop_due(now.instant) {
            if self
                .reservations
                .get(&token)
                .is_some_and(|reservation| reservation.expires_at <= now.instant)
            {
                self.release_reservation(token);
            }
        }
        self.responses.expire(now.instant);
    }

    /// Handles every deadline of allocation `id` at or before `now`, earliest first,
    /// then re-arms its timer for the next one.
    fn expire_due(&mut self, now: Instant, id: AllocationId) {
        while let Some(due) = self
            .allocations
            .by_id(id)
            .and_then(|allocation| allocation.next_due(now))
        {
            match due {
                Due::Allocation => {
                    self.delete_allocation_by_id(now, id, EndReason::Expired);
                    return;
                }
                Due::Permission(peer) => self.expire_permission(id, peer),
                Due::Channel(number) => self.expire_channel(id, number),
                Due::CoolOff(number) => {
                    if let Some(allocation) = self.allocations.by_id_mut(id) {
                        allocation.cooling_channels.end(number);
                    }
                }
            }
        }
        self.rearm(id);
    }

    /// Frees the port held by RESERVATION-TOKEN `token` (RFC 8656 §7.2), returning it.
    pub(super) fn release_reservation(&mut self, token: u64) -> Option<Reservation> {
        let reservation = self.reservations.remove(&token)?;
        self.reserved_relays.remove(&reservation.relay);
        self.reservation_timers
            .cancel(reservation.expires_at, token);
        self.uncount_for_user(&reservation.quota_user);
        Some(reservation)
    }

    /// One more allocation or reservation for `quota_user`'s quota; returns the name as
    /// the quota table holds it, to be shared by the allocation or reservation.
    pub(super) fn count_for_user(&mut self, quota_user: &str) -> Arc<str> {
        if let Some((name, count)) = self.allocations_per_user.get_key_value(quota_user) {
            let name = Arc::clone(name);
            let count = count + 1;
            self.allocations_per_user.insert(Arc::clone(&name), count);
            return name;
        }
        let name: Arc<str> = Arc::from(quota_user);
        self.allocations_per_user.insert(Arc::clone(&name), 1);
        name
    }

    /// One allocation or reservation fewer for `quota_user`'s quota.
    pub(super) fn uncount_for_user(&mut self, quota_user: &str) {
        if let Some(count) = self.allocations_per_user.get_mut(quota_user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.allocations_per_user.remove(quota_user);
            }
        }
    }

    /// Removes the permission for `peer` (its time is up).
    fn expire_permission(&mut self, id: AllocationId, peer: IpAddr) {
        let Some(allocation) = self.allocations.by_id_mut(id) else {
            return;
        };
        allocation
            .permissions
            .retain(|permission| permission.peer != peer);
        self.fast_path.push(
            allocation.flow,
            FastPathCommand::RemovePermission {
                relay: allocation.relay,
                peer_ip: peer,
            },
        );
    }

    /// Removes channel `number` (its time is up) and starts its cool-off.
    fn expire_channel(&mut self, id: AllocationId, number: u16) {
        let Some(allocation) = self.allocations.by_id_mut(id) else {
            return;
        };
        let Some(position) = allocation
            .channels
            .iter()
            .position(|channel| channel.number == number)
        else {
            return;
        };
        let channel = allocation.channels.remove(position);
        allocation.cooling_channels.start(CoolingChannel {
            number,
            peer: channel.peer,
            until: channel.expires_at + CHANNEL_REBIND_COOL_OFF,
        });
        self.fast_path.push(
            allocation.flow,
            FastPathCommand::RemoveChannel {
                relay: allocation.relay,
                number,
            },
        );
    }

    /// The TCP or TLS connection of `flow` closed (or was closed by the server): its
    /// allocation, if any, is deleted (RFC 8656 §3.1: the 5-tuple is the connection).
    pub fn handle_connection_closed(&mut self, now: Instant, flow: ClientFlow) {
        if self.allocations.contains(&flow) {
            self.delete_allocation(now, flow, EndReason::ConnectionClosed);
        }
    }

    /// The IO layer could not bind the relay socket of an OpenRelay command: the allocation
    /// is dropped and its queued success response replaced by 508 (RFC 8656 §7.2: the
    /// server could not allocate a relayed address).
    pub fn handle_relay_bind_failed(&mut self, now: Now, relay: SocketAddr) {
        let Some(id) = self.allocations.id_by_relay(&relay) else {
            return;
        };
        let Some(allocation) = self.remove_allocation_state(id, None) else {
            return;
        };
        let flow = allocation.flow;
        tracing::warn!(%relay, client = %flow.client, "relay socket could not be bound; allocation dropped");
        if let Some(token) = allocation.reservation_token {
            self.release_reservation(token);
        }
        let transaction_id = allocation.allocate_transaction;
        let Some(position) = self.transmits.iter().position(|transmit| {
            transmit.flow() == flow
                && Message::parse(&transmit.payload).is_ok_and(|message| {
                    message.transaction_id() == &transaction_id
                        && message.method() == Method::ALLOCATE
                        && message.class() == Class::SuccessResponse
                })
        }) else {
            return;
        };
        let fingerprint = self
            .transmits
            .get(position)
            .and_then(|transmit| Message::parse(&transmit.payload).ok())
            .is_some_and(|message| message.fingerprint().is_some());
        let info = RequestInfo {
            method: Method::ALLOCATE,
            transaction_id,
            fingerprint,
        };
        let integrity = ResponseIntegrity {
            key: allocation.key.as_slice(),
            kind: allocation.integrity,
            user: &allocation.quota_user,
        };
        self.forget_response(flow, transaction_id);
        self.queue_error(
            now,
            flow,
            &info,
            Some(integrity),
            TurnError::InsufficientCapacity,
            &[],
        );
        // queue_error appended the 508 at the back; move it into the success's place.
        if let Some(error_response) = self.transmits.pop_back() {
            if let Some(slot) = self.transmits.get_mut(position) {
                *slot = error_response;
            }
        }
    }
}
