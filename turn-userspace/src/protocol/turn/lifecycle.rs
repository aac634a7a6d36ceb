//! Ending state: expiry timers (RFC 8656 §7, §9, §12; RFC 8489 §6.3.1), deletion of
//! allocations, and allocations whose relay socket could not be bound.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::protocol::datapath::{AllocationUsage, ClientFlow, EndReason, FastPathCommand};
use crate::protocol::stun::{Class, Message, Method};

use super::allocation::{Allocation, CoolingChannel, Reservation};
use super::response::{RequestInfo, ResponseIntegrity};
use super::timers::TimerKind;
use super::{Command, Now, Server, TurnError, CHANNEL_REBIND_COOL_OFF};

impl<R: rand::RngCore> Server<R> {
    /// Removes an allocation with everything hanging off it, asks the IO layer to close
    /// its relay socket, and asks the fast path to remove it and log its usage line (who,
    /// where, how long and how much was relayed in userspace plus in the fast path).
    pub(super) fn delete_allocation(&mut self, now: Instant, flow: ClientFlow, reason: EndReason) {
        let Some(allocation) = self.allocations.get(&flow) else {
            return;
        };
        let usage = AllocationUsage {
            username: allocation.username.clone(),
            lifetime: now.saturating_duration_since(allocation.created_at),
            userspace: allocation.userspace_traffic.into(),
            reason,
        };
        if let Some(allocation) = self.remove_allocation_state(flow, Some(usage)) {
            self.commands.push_back(Command::CloseRelay {
                relay: allocation.relay,
            });
        }
    }

    fn remove_allocation_state(
        &mut self,
        flow: ClientFlow,
        usage: Option<AllocationUsage>,
    ) -> Option<Box<Allocation>> {
        let allocation = self.allocations.remove(&flow)?;
        self.flows_by_relay.remove(&allocation.relay);
        self.timers.cancel(TimerKind::Allocation(flow));
        for &peer in allocation.permissions.keys() {
            self.timers.cancel(TimerKind::Permission(flow, peer));
        }
        for &number in allocation.channels.keys() {
            self.timers.cancel(TimerKind::Channel(flow, number));
        }
        for &number in allocation.cooling_channels.keys() {
            self.timers.cancel(TimerKind::ChannelCoolOff(flow, number));
        }
        self.uncount_for_user(&allocation.quota_user);
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

    /// Expires allocations, permissions, channels (and their rebind cool-off), port
    /// reservations and cached responses whose time has come (RFC 8656 §7, §9, §12;
    /// RFC 8489 §6.3.1).
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(kind) = self.timers.pop_due(now.instant) {
            match kind {
                TimerKind::Allocation(flow) => {
                    if self
                        .allocations
                        .get(&flow)
                        .is_some_and(|allocation| allocation.expires_at <= now.instant)
                    {
                        self.delete_allocation(now.instant, flow, EndReason::Expired);
                    }
                }
                TimerKind::Permission(flow, peer) => {
                    self.expire_permission(now.instant, flow, peer)
                }
                TimerKind::Channel(flow, number) => self.expire_channel(now.instant, flow, number),
                TimerKind::ChannelCoolOff(flow, number) => {
                    if let Some(allocation) = self.allocations.get_mut(&flow) {
                        if allocation
                            .cooling_channels
                            .get(&number)
                            .is_some_and(|cooling| cooling.until <= now.instant)
                        {
                            allocation.cooling_channels.remove(&number);
                        }
                    }
                }
                TimerKind::Reservation(token) => {
                    if self
                        .reservations
                        .get(&token)
                        .is_some_and(|reservation| reservation.expires_at <= now.instant)
                    {
                        self.release_reservation(token);
                    }
                }
                TimerKind::Transaction(flow, transaction_id) => {
                    if self
                        .responses
                        .get(&(flow, transaction_id))
                        .is_some_and(|cached| cached.expires_at <= now.instant)
                    {
                        self.forget_response(flow, transaction_id);
                    }
                }
            }
        }
    }

    /// Frees the port held by RESERVATION-TOKEN `token` (RFC 8656 §7.2), returning it.
    pub(super) fn release_reservation(&mut self, token: u64) -> Option<Reservation> {
        let reservation = self.reservations.remove(&token)?;
        self.reserved_relays.remove(&reservation.relay);
        self.timers.cancel(TimerKind::Reservation(token));
        self.uncount_for_user(&reservation.quota_user);
        Some(reservation)
    }

    /// One more allocation or reservation for `quota_user`'s quota.
    pub(super) fn count_for_user(&mut self, quota_user: &str) {
        match self.allocations_per_user.get_mut(quota_user) {
            Some(count) => *count += 1,
            None => {
                self.allocations_per_user.insert(quota_user.to_owned(), 1);
            }
        }
    }

    /// One allocation or reservation fewer for `quota_user`'s quota.
    fn uncount_for_user(&mut self, quota_user: &str) {
        if let Some(count) = self.allocations_per_user.get_mut(quota_user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.allocations_per_user.remove(quota_user);
            }
        }
    }

    fn expire_permission(&mut self, now: Instant, flow: ClientFlow, peer: IpAddr) {
        let Some(allocation) = self.allocations.get_mut(&flow) else {
            return;
        };
        if allocation
            .permissions
            .get(&peer)
            .is_some_and(|permission| permission.expires_at <= now)
        {
            allocation.permissions.remove(&peer);
            self.fast_path.push(
                flow,
                FastPathCommand::RemovePermission {
                    relay: allocation.relay,
                    peer_ip: peer,
                },
            );
        }
    }

    fn expire_channel(&mut self, now: Instant, flow: ClientFlow, number: u16) {
        let Some(allocation) = self.allocations.get_mut(&flow) else {
            return;
        };
        let Some(channel) = allocation
            .channels
            .get(&number)
            .copied()
            .filter(|channel| channel.expires_at <= now)
        else {
            return;
        };
        allocation.channels.remove(&number);
        allocation.channel_by_peer.remove(&channel.peer);
        let until = channel.expires_at + CHANNEL_REBIND_COOL_OFF;
        allocation.cooling_channels.insert(
            number,
            CoolingChannel {
                peer: channel.peer,
                until,
            },
        );
        self.fast_path.push(
            flow,
            FastPathCommand::RemoveChannel {
                relay: allocation.relay,
                number,
            },
        );
        self.timers
            .schedule(until, TimerKind::ChannelCoolOff(flow, number));
    }

    /// The TCP or TLS connection of `flow` closed (or was closed by the server): its
    /// allocation, if any, is deleted (RFC 8656 §3.1: the 5-tuple is the connection).
    pub fn handle_connection_closed(&mut self, now: Instant, flow: ClientFlow) {
        if self.allocations.contains_key(&flow) {
            self.delete_allocation(now, flow, EndReason::ConnectionClosed);
        }
    }

    /// The IO layer could not bind the relay socket of an OpenRelay command: the allocation
    /// is dropped and its queued success response replaced by 508 (RFC 8656 §7.2: the
    /// server could not allocate a relayed address).
    pub fn handle_relay_bind_failed(&mut self, now: Now, relay: SocketAddr) {
        let Some(&flow) = self.flows_by_relay.get(&relay) else {
            return;
        };
        let Some(allocation) = self.remove_allocation_state(flow, None) else {
            return;
        };
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
            key: &allocation.key,
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
