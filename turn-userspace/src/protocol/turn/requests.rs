//! STUN request handling: Binding (RFC 8489 §3), Allocate (RFC 8656 §7), Refresh (§8),
//! CreatePermission (§9) and ChannelBind (§12), plus expiry and relay-bind failures.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use smallvec::SmallVec;
use turn_common::bandwidth::Bandwidth;

use crate::protocol::datapath::{
    AllocationEntry, ChannelEntry, ClientFlow, EndReason, FastPathCommand, PermissionEntry,
};
use crate::protocol::policy::{is_ipv4_written_as_ipv6, PeerPorts};
use crate::protocol::stun::attributes::{self as attr, AddressFamily};
use crate::protocol::stun::channel_data::{self, CHANNEL_RANGE};
use crate::protocol::stun::{parse_header, Class, Message, Method, ParseError};

use super::allocation::{
    granted_lifetime, Allocation, Channel, CoolingChannels, Permission, Reservation,
    UserspaceTraffic,
};
use super::authenticate::AuthContext;
use super::response::{RequestInfo, ResponseIntegrity};
use super::{Command, Forward, Now, RelayAddress, Server, TurnError, RESERVATION_LIFETIME};

/// Random probes for a free relay port before falling back to a full scan.
const RANDOM_PORT_PROBES: usize = 32;

/// A relay port choice: the port, and for EVEN-PORT with the R bit the odd port after it.
struct PortChoice {
    port: u16,
    reserve_next: bool,
}

impl<R: rand::RngCore> Server<R> {
    /// A datagram on a listening socket (STUN or ChannelData). Relay data (Send indication,
    /// ChannelData) is returned as a [`Forward`] into `packet` without allocating (RFC 8656
    /// §11.2, §12.6); STUN answers are queued (RFC 8656 §7–§12, RFC 8489 §6.3).
    /// `hop_limit`: the TTL / hop limit the datagram arrived with, if the IO layer knows
    /// it (see [`super::relayed_hop_limit`]).
    pub fn handle_client_datagram(
        &mut self,
        now: Now,
        flow: ClientFlow,
        packet: &[u8],
        hop_limit: Option<u8>,
    ) -> Option<Forward> {
        if channel_data::is_channel_data(packet) {
            return self.relay_channel_data_from_client(now.instant, flow, packet, hop_limit);
        }
        let message = match Message::parse(packet) {
            Ok(message) => message,
            Err(error) => {
                self.reject_malformed(now, flow, packet, error);
                return None;
            }
        };
        // RFC 8489 §7.3: a message whose FINGERPRINT does not match is not STUN; it gets
        // no answer and is not relayed (the XDP program passes such Send indications up).
        if message.fingerprint().is_some() && !message.verify_fingerprint() {
            tracing::debug!(client = %flow.client, "dropped STUN message with a wrong FINGERPRINT");
            self.stats.dropped_packets += 1;
            return None;
        }
        match message.class() {
            Class::Request => {
                self.handle_request(now, flow, &message);
                None
            }
            Class::Indication if message.method() == Method::SEND => {
                self.relay_send_indication(now.instant, flow, &message, hop_limit)
            }
            _ => {
                tracing::trace!(client = %flow.client, "ignored STUN message that is neither a request nor a Send indication");
                None
            }
        }
    }

    /// RFC 8489 §6.3: a request whose header is intact but whose body is not is answered
    /// with 400; anything else (not STUN, indications, responses) is silently dropped.
    fn reject_malformed(&mut self, now: Now, flow: ClientFlow, packet: &[u8], error: ParseError) {
        tracing::debug!(client = %flow.client, %error, "malformed STUN message");
        let Ok(header) = parse_header(packet) else {
            return;
        };
        if header.class != Class::Request {
            return;
        }
        let request = RequestInfo {
            method: header.method,
            transaction_id: header.transaction_id,
            fingerprint: false,
        };
        self.queue_error(now, flow, &request, None, TurnError::BadRequest, &[]);
    }

    /// A STUN request (RFC 8489 §6.3.1): retransmissions get the cached response, Binding
    /// is answered without credentials, the TURN methods are authenticated (RFC 8656 §5)
    /// and dispatched; anything else is a 400.
    fn handle_request(&mut self, now: Now, flow: ClientFlow, request: &Message) {
        let info = RequestInfo::of(request);
        if self.answer_retransmission(now.instant, flow, info.transaction_id) {
            return;
        }
        if request.method() == Method::BINDING {
            self.handle_binding(now, flow, &info, request);
            return;
        }
        if ![
            Method::ALLOCATE,
            Method::REFRESH,
            Method::CREATE_PERMISSION,
            Method::CHANNEL_BIND,
        ]
        .contains(&request.method())
        {
            self.queue_error(now, flow, &info, None, TurnError::BadRequest, &[]);
            return;
        }
        let auth = match self.authenticate(now, flow, request) {
            Ok(auth) => auth,
            Err(error) => {
                self.queue_error(now, flow, &info, None, error, &[]);
                return;
            }
        };
        let unknown = match request.unknown_comprehension_required() {
            // RFC 8656 §7.2: a server that cannot set DF per datagram treats DONT-FRAGMENT
            // in an Allocate as an unknown comprehension-required attribute.
            [] if request.method() == Method::ALLOCATE && request.dont_fragment() => {
                &[attr::DONT_FRAGMENT][..]
            }
            unknown => unknown,
        };
        let result = if !unknown.is_empty() {
            Err(TurnError::UnknownAttribute)
        } else if request.method() != Method::ALLOCATE
            && self
                .allocations
                .get(&flow)
                .is_some_and(|allocation| *allocation.username != *auth.username)
        {
            // RFC 8656 §5: only the USERNAME that created an allocation may use it.
            Err(TurnError::WrongCredentials)
        } else {
            match request.method() {
                Method::ALLOCATE => self.handle_allocate(now, flow, &info, request, &auth),
                Method::REFRESH => self.handle_refresh(now, flow, &info, request, &auth),
                Method::CREATE_PERMISSION => {
                    self.handle_create_permission(now, flow, &info, request, &auth)
                }
                _ => self.handle_channel_bind(now, flow, &info, request, &auth),
            }
        };
        if let Err(error) = result {
            self.queue_error(
                now,
                flow,
                &info,
                Some(ResponseIntegrity::from(&auth)),
                error,
                unknown,
            );
        }
    }

    /// RFC 8489 §3: the reflexive address, no authentication.
    fn handle_binding(
        &mut self,
        now: Now,
        flow: ClientFlow,
        info: &RequestInfo,
        request: &Message,
    ) {
        let unknown = request.unknown_comprehension_required();
        if !unknown.is_empty() {
            self.queue_error(now, flow, info, None, TurnError::UnknownAttribute, unknown);
            return;
        }
        self.queue_response(
            now.instant,
            flow,
            info,
            Class::SuccessResponse,
            None,
            |builder| {
                builder.xor_address(attr::XOR_MAPPED_ADDRESS, flow.client);
            },
        );
    }

    fn relay_address(&self, family: AddressFamily) -> Option<RelayAddress> {
        match family {
            AddressFamily::Ipv4 => self.config.relay_v4,
            AddressFamily::Ipv6 => self.config.relay_v6,
        }
    }

    /// RFC 8656 §7.2, in the RFC's order. Everything that can fail is checked before a
    /// port or reservation is consumed.
    fn handle_allocate(
        &mut self,
        now: Now,
        flow: ClientFlow,
        info: &RequestInfo,
        request: &Message,
        auth: &AuthContext,
    ) -> Result<(), TurnError> {
        if self.allocations.contains(&flow) {
            return Err(TurnError::AllocationMismatch);
        }
        // A draining relay turns new allocations away, after authentication so the 300
        // carries MESSAGE-INTEGRITY (RFC 8489 §10).
        if let Some(refusal) = self.turn_away(flow.client.ip()) {
            return Err(refusal);
        }
        match request.requested_transport()? {
            None => return Err(TurnError::BadRequest),
            Some(attr::TRANSPORT_UDP) => {}
            Some(_) => return Err(TurnError::UnsupportedTransportProtocol),
        }
        let even_port = request.even_port()?;
        let reservation_token = request.reservation_token()?;
        let requested_family = request.requested_address_family()?;
        let additional_family = request
            .additional_address_family()
            .map_err(|_| TurnError::BadRequest)?;
        if reservation_token.is_some()
            && (even_port.is_some() || requested_family.is_some() || additional_family.is_some())
        {
            return Err(TurnError::BadRequest);
        }
        if requested_family.is_some() && additional_family.is_some() {
            return Err(TurnError::BadRequest);
        }
        if additional_family == Some(AddressFamily::Ipv4) {
            return Err(TurnError::BadRequest);
        }
        let lifetime = granted_lifetime(
            request.lifetime()?,
            self.config.default_lifetime,
            self.config.max_lifetime,
        );
        let family = requested_family.unwrap_or(AddressFamily::Ipv4);
        // What this Allocate adds to the server's and the user's count of allocations and
        // reservations: claiming a reservation turns it into the allocation; EVEN-PORT
        // with the R bit also reserves the next port.
        let (relay_address, added, released_for_user) = match reservation_token {
            Some(token) => {
                let reservation = self
                    .reservations
                    .get(&token)
                    .filter(|reservation| reservation.expires_at > now.instant)
                    .ok_or(TurnError::InsufficientCapacity)?;
                let relay_address = self
                    .relay_address(AddressFamily::of(reservation.relay.ip()))
                    .ok_or(TurnError::InsufficientCapacity)?;
                (
                    relay_address,
                    0,
                    *reservation.quota_user == *auth.quota_user,
                )
            }
            None => {
                let relay_address = self
                    .relay_address(family)
                    .ok_or(TurnError::AddressFamilyNotSupported)?;
                let added = if even_port == Some(true) { 2 } else { 1 };
                (relay_address, added, false)
            }
        };
        // RFC 8656 §7.2: the server is out of capacity → 508; the user's quota → 486.
        if self.allocations.len() + self.reservations.len() + added > self.config.max_allocations {
            return Err(TurnError::InsufficientCapacity);
        }
        let per_user = self.config.max_allocations_per_user;
        let user_count = self
            .allocations_per_user
            .get(auth.quota_user.as_str())
            .copied()
            .unwrap_or(0);
        let user_adds = if reservation_token.is_some() {
            usize::from(!released_for_user)
        } else {
            added
        };
        if per_user != 0 && user_count + user_adds > per_user {
            return Err(TurnError::AllocationQuotaReached);
        }

        let (relay, reservation) = match reservation_token {
            Some(token) => {
                let reservation = self
                    .release_reservation(token)
                    .ok_or(TurnError::InsufficientCapacity)?;
                (reservation.relay, None)
            }
            None => {
                let choice = self
                    .pick_port(relay_address.bind, even_port)
                    .ok_or(TurnError::InsufficientCapacity)?;
                let relay = SocketAddr::new(relay_address.bind, choice.port);
                let reservation = choice.reserve_next.then(|| {
                    self.reserve(
                        now.instant,
                        SocketAddr::new(relay_address.bind, choice.port + 1),
                        &auth.quota_user,
                    )
                });
                (relay, reservation)
            }
        };
        let advertised = SocketAddr::new(relay_address.advertised, relay.port());
        let expires_at = now.instant + lifetime;
        let quota_user = self.count_for_user(&auth.quota_user);
        // A static user is its own quota user: one shared name for both.
        let username = if *quota_user == *auth.username {
            Arc::clone(&quota_user)
        } else {
            Arc::from(auth.username.as_str())
        };
        let inserted = self.allocations.insert(Box::new(Allocation {
            flow,
            relay,
            created_at: now.instant,
            expires_at,
            armed: None,
            username,
            quota_user,
            credential_expiry: auth.credential_expiry,
            key: auth.key,
            password_algorithm: auth.password_algorithm,
            integrity: auth.integrity,
            allocate_transaction: info.transaction_id,
            reservation_token: reservation,
            permissions: SmallVec::new(),
            channels: SmallVec::new(),
            cooling_channels: CoolingChannels::default(),
            userspace_traffic: UserspaceTraffic::default(),
            bandwidth: Bandwidth::new(self.limits.max_bytes_per_second_per_allocation),
        }));
        let Some(id) = inserted else {
            // Every id is taken (more than 2^32 allocations): the table is full.
            self.uncount_for_user(&auth.quota_user);
            if let Some(token) = reservation {
                self.release_reservation(token);
            }
            return Err(TurnError::InsufficientCapacity);
        };
        self.install_allocation_in_fast_path(flow, relay, expires_at);
        self.rearm(id);
        self.commands.push_back(Command::OpenRelay { relay });
        tracing::debug!(client = %flow.client, %relay, lifetime = lifetime.as_secs(), "allocation created");

        let lifetime_secs = u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX);
        self.queue_success(now.instant, flow, info, auth, |builder| {
            builder
                .xor_address(attr::XOR_RELAYED_ADDRESS, advertised)
                .u32_attribute(attr::LIFETIME, lifetime_secs)
                .xor_address(attr::XOR_MAPPED_ADDRESS, flow.client);
            if let Some(token) = reservation {
                builder.attribute(attr::RESERVATION_TOKEN, &token.to_be_bytes());
            }
            if additional_family == Some(AddressFamily::Ipv6) {
                // RFC 8656 §7.2: dual allocation is not offered; the IPv4 relay is granted
                // and the IPv6 part refused with ADDRESS-ERROR-CODE 440.
                let reason = TurnError::AddressFamilyNotSupported.to_string();
                let mut value = vec![AddressFamily::Ipv6.code(), 0, 4, 40];
                value.extend_from_slice(reason.as_bytes());
                builder.attribute(attr::ADDRESS_ERROR_CODE, &value);
            }
        });
        Ok(())
    }

    /// Installs (or, with a new expiry, refreshes) the allocation in the fast path.
    fn install_allocation_in_fast_path(
        &mut self,
        flow: ClientFlow,
        relay: SocketAddr,
        expires_at: Instant,
    ) {
        self.fast_path.push(
            flow,
            FastPathCommand::InstallAllocation(AllocationEntry {
                flow,
                relay,
                expires_at,
                bytes_per_second: self.limits.max_bytes_per_second_per_allocation,
            }),
        );
    }

    /// A free port in the configured range on `ip`: random probes via the injected RNG,
    /// then a scan from a random offset. EVEN-PORT asks for an even port, and with the R
    /// bit for a free odd port after it (RFC 8656 §7.2).
    fn pick_port(&mut self, ip: IpAddr, even_port: Option<bool>) -> Option<PortChoice> {
        let start = *self.config.port_range.start();
        let end = *self.config.port_range.end();
        if start > end {
            return None;
        }
        let span = u32::from(end) - u32::from(start) + 1;
        let in_use = &self.allocations;
        let reserved = &self.reserved_relays;
        let free = |port: u16| {
            let addr = SocketAddr::new(ip, port);
            !in_use.contains_relay(&addr) && !reserved.contains_key(&addr)
        };
        let fits = |port: u16| match even_port {
            None => free(port),
            Some(false) => port.is_multiple_of(2) && free(port),
            Some(true) => port.is_multiple_of(2) && port < end && free(port) && free(port + 1),
        };
        let port_at =
            |offset: u32| u16::try_from(u32::from(start) + offset % span).unwrap_or(start);
        let rng = &mut self.rng;
        let found = (0..RANDOM_PORT_PROBES)
            .map(|_| port_at(rng.gen_range(0..span)))
            .find(|&port| fits(port))
            .or_else(|| {
                let offset = rng.gen_range(0..span);
                (0..span)
                    .map(|step| port_at(offset + step))
                    .find(|&port| fits(port))
            })?;
        Some(PortChoice {
            port: found,
            reserve_next: even_port == Some(true),
        })
    }

    /// Holds `relay` back for ~30 s for `quota_user`'s quota and returns the
    /// RESERVATION-TOKEN naming it.
    fn reserve(&mut self, now: Instant, relay: SocketAddr, quota_user: &str) -> u64 {
        let mut token = self.rng.next_u64();
        while self.reservations.contains_key(&token) {
            token = self.rng.next_u64();
        }
        let expires_at = now + RESERVATION_LIFETIME;
        let quota_user = self.count_for_user(quota_user);
        self.reservations.insert(
            token,
            Reservation {
                relay,
                expires_at,
                quota_user,
            },
        );
        self.reserved_relays.insert(relay, token);
        self.reservation_timers.schedule(None, expires_at, token);
        token
    }

    /// RFC 8656 §8: extends the allocation, or deletes it for LIFETIME 0.
    fn handle_refresh(
        &mut self,
        now: Now,
        flow: ClientFlow,
        info: &RequestInfo,
        request: &Message,
        auth: &AuthContext,
    ) -> Result<(), TurnError> {
        let requested_family = request.requested_address_family()?;
        let requested_lifetime = request.lifetime()?;
        let id = self
            .allocations
            .id(&flow)
            .ok_or(TurnError::AllocationMismatch)?;
        let allocation = self
            .allocations
            .by_id_mut(id)
            .ok_or(TurnError::AllocationMismatch)?;
        if requested_family.is_some_and(|family| family != AddressFamily::of(allocation.relay.ip()))
        {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        let lifetime_secs = if requested_lifetime == Some(0) {
            self.delete_allocation(now.instant, flow, EndReason::DeletedByClient);
            0
        } else {
            let lifetime = granted_lifetime(
                requested_lifetime,
                self.config.default_lifetime,
                self.config.max_lifetime,
            );
            let expires_at = now.instant + lifetime;
            allocation.expires_at = expires_at;
            let relay = allocation.relay;
            self.install_allocation_in_fast_path(flow, relay, expires_at);
            self.rearm(id);
            u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX)
        };
        self.queue_success(now.instant, flow, info, auth, |builder| {
            builder.u32_attribute(attr::LIFETIME, lifetime_secs);
        });
        Ok(())
    }

    /// A peer IP may be used when it has the relay's family (else 443) and the peer policy
    /// allows it (else 403) — RFC 8656 §9.1, §12.1. An IPv4 address written in IPv6 form
    /// (`::ffff:a.b.c.d`, `::a.b.c.d`) is an IPv4 peer: on an IPv6 allocation it is a 443,
    /// never an alias the fast path would store as another address. Returns the ports
    /// the permission covers.
    fn check_peer_ip(&self, relay: SocketAddr, peer: IpAddr) -> Result<PeerPorts, TurnError> {
        if peer.is_ipv4() != relay.is_ipv4() || is_ipv4_written_as_ipv6(peer) {
            return Err(TurnError::PeerAddressFamilyMismatch);
        }
        self.policy.check(peer).map_err(|denied| {
            tracing::debug!(%denied, "peer refused by policy");
            TurnError::Forbidden
        })
    }

    /// RFC 8656 §9.1: installs or refreshes a permission for every XOR-PEER-ADDRESS —
    /// all of them or none; 508 when the allocation would exceed its permission cap, 400
    /// for more XOR-PEER-ADDRESS attributes than [`super::ServerLimits::max_peers_per_request`].
    fn handle_create_permission(
        &mut self,
        now: Now,
        flow: ClientFlow,
        info: &RequestInfo,
        request: &Message,
        auth: &AuthContext,
    ) -> Result<(), TurnError> {
        let allocation = self
            .allocations
            .get(&flow)
            .ok_or(TurnError::AllocationMismatch)?;
        let relay = allocation.relay;
        // Bounded work per request: the attributes are counted before anything is parsed
        // or checked, and duplicates are checked and installed once.
        if request
            .xor_peer_addresses()
            .nth(self.limits.max_peers_per_request)
            .is_some()
        {
            return Err(TurnError::BadRequest);
        }
        let mut peers = request
            .xor_peer_addresses()
            .map(|peer| peer.map(|peer| peer.ip()))
            .collect::<Result<Vec<IpAddr>, _>>()
            .map_err(|_| TurnError::BadRequest)?;
        if peers.is_empty() {
            return Err(TurnError::BadRequest);
        }
        peers.sort_unstable();
        peers.dedup();
        let mut checked = Vec::with_capacity(peers.len());
        for peer in peers {
            checked.push((peer, self.check_peer_ip(relay, peer)?));
        }
        let added = checked
            .iter()
            .filter(|(peer, _)| allocation.permission(*peer).is_none())
            .count();
        if allocation.permissions.len() + added > self.limits.max_permissions_per_allocation {
            return Err(TurnError::InsufficientCapacity);
        }
        for (peer, ports) in checked {
            self.install_permission(now.instant, flow, peer, ports);
        }
        self.queue_success(now.instant, flow, info, auth, |_| {});
        Ok(())
    }

    /// Creates or refreshes the permission for `peer` (RFC 8656 §9) and pushes it, and the
    /// new expiry of channels to that IP, to the fast path.
    fn install_permission(
        &mut self,
        now: Instant,
        flow: ClientFlow,
        peer: IpAddr,
        ports: PeerPorts,
    ) {
        let Some(id) = self.allocations.id(&flow) else {
            return;
        };
        let Some(allocation) = self.allocations.by_id_mut(id) else {
            return;
        };
        let expires_at = now + self.config.permission_lifetime;
        allocation.set_permission(Permission {
            peer,
            expires_at,
            ports,
        });
        let relay = allocation.relay;
        self.fast_path.push(
            flow,
            FastPathCommand::InstallPermission(PermissionEntry {
                flow,
                relay,
                peer_ip: peer,
                ports: self.policy.ports(ports).into(),
                expires_at,
            }),
        );
        for channel in allocation
            .channels
            .iter()
            .filter(|channel| channel.peer.ip() == peer)
        {
            self.fast_path.push(
                flow,
                FastPathCommand::InstallChannel(ChannelEntry {
                    flow,
                    relay,
                    peer: channel.peer,
                    number: channel.number,
                    expires_at: channel.expires_at.min(expires_at),
                }),
            );
        }
        self.rearm(id);
    }

    /// RFC 8656 §12.1: binds (or refreshes) a channel and installs/refreshes the
    /// permission for the peer's IP (508 beyond the allocation's channel or permission
    /// cap). Rebinding a number or peer to something else is a 400,
    /// also during the 5 minutes after its binding expired (RFC 8656 §12 asks clients to
    /// wait that long; enforcing it keeps late ChannelData from reaching another peer).
    fn handle_channel_bind(
        &mut self,
        now: Now,
        flow: ClientFlow,
        info: &RequestInfo,
        request: &Message,
        auth: &AuthContext,
    ) -> Result<(), TurnError> {
        let number = request.channel_number()?.ok_or(TurnError::BadRequest)?;
        if !CHANNEL_RANGE.contains(&number) {
            return Err(TurnError::BadRequest);
        }
        let peer = request
            .xor_peer_address()
            .map_err(|_| TurnError::BadRequest)?
            .ok_or(TurnError::BadRequest)?;
        let allocation = self
            .allocations
            .get(&flow)
            .ok_or(TurnError::AllocationMismatch)?;
        let relay = allocation.relay;
        if allocation.channel_bind_conflicts(number, peer, now.instant) {
            return Err(TurnError::BadRequest);
        }
        let new_channel = allocation.channel(number).is_none();
        let new_permission = allocation.permission(peer.ip()).is_none();
        if (new_channel && allocation.channels.len() >= self.limits.max_channels_per_allocation)
            || (new_permission
                && allocation.permissions.len() >= self.limits.max_permissions_per_allocation)
        {
            return Err(TurnError::InsufficientCapacity);
        }
        let ports = self.check_peer_ip(relay, peer.ip())?;
        if !self.policy.allows_port(ports, peer.port()) {
            tracing::debug!(%peer, "peer refused by policy: the relay's own address outside its relay ports");
            return Err(TurnError::Forbidden);
        }
        let channel_expires_at = now.instant + self.config.channel_lifetime;
        if let Some(allocation) = self.allocations.get_mut(&flow) {
            allocation.bind_channel(Channel {
                number,
                peer,
                expires_at: channel_expires_at,
            });
        }
        // Installs the permission and, through it, the channel entry with
        // expiry = min(channel, permission); re-arms the allocation's timer.
        self.install_permission(now.instant, flow, peer.ip(), ports);
        self.queue_success(now.instant, flow, info, auth, |_| {});
        Ok(())
    }
}
