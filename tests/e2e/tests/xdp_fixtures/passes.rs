//! Well-formed frames the fast path leaves to userspace, untouched: STUN requests, flows
//! it has no live entry for, next hops it cannot resolve, frames too big for the egress
//! MTU, IP options, fragments and other protocols (see the README's "What stays in
//! userspace").

use turn_relay::bpf::Outcome;

use crate::rows::*;

const PASSED: Row = Row {
    action: Action::Pass,
    output: Output::Unchanged,
    ..BASE
};

/// ChannelData on the bound channel with `mangle` applied to its frame.
const fn mangled(name: &'static str, on: On, mangle: Mangle, outcome: Outcome) -> Row {
    Row {
        name,
        on,
        payload: channel_data(CHANNEL_PEER, DATA),
        mangle: Some(mangle),
        outcome,
        ..PASSED
    }
}

pub const ROWS: &[Row] = &[
    Row {
        name: "binding_request",
        payload: Payload::BindingRequest,
        outcome: Outcome::PassStun,
        ..PASSED
    },
    Row {
        name: "channel_number_past_the_range",
        payload: channel_data(NOT_A_CHANNEL, DATA),
        outcome: Outcome::PassUnknownFlow,
        ..PASSED
    },
    Row {
        name: "unknown_udp_flow",
        from: Origin::ClientToPort(53),
        payload: Payload::Raw(DATA),
        outcome: Outcome::PassUnknownFlow,
        ..PASSED
    },
    Row {
        name: "channel_data_unbound_number",
        payload: channel_data(CHANNEL_UNBOUND, DATA),
        outcome: Outcome::PassChannelNotBound,
        ..PASSED
    },
    Row {
        name: "send_indication_without_permission",
        payload: send(Peer::Stranger, DATA),
        outcome: Outcome::PassNoPermission,
        ..PASSED
    },
    Row {
        name: "ttl_one",
        ip: IpVariant::TtlOne,
        payload: channel_data(CHANNEL_PEER, DATA),
        outcome: Outcome::PassTtl,
        ..PASSED
    },
    Row {
        name: "channel_data_expired_v4",
        on: On::V4,
        payload: channel_data(CHANNEL_EXPIRED, DATA),
        outcome: Outcome::PassExpired,
        ..PASSED
    },
    Row {
        name: "peer_unresolved_neighbour_v4",
        on: On::V4,
        payload: channel_data(CHANNEL_UNRESOLVED, DATA),
        outcome: Outcome::PassNoRoute,
        ..PASSED
    },
    Row {
        name: "peer_without_route_v4",
        on: On::V4,
        payload: channel_data(CHANNEL_UNROUTABLE, DATA),
        outcome: Outcome::PassNoRoute,
        ..PASSED
    },
    // Redirects only to interfaces the daemon attached the program to.
    Row {
        name: "peer_behind_unattached_interface_v4",
        on: On::V4,
        payload: channel_data(CHANNEL_UNATTACHED, DATA),
        outcome: Outcome::PassEgressNotAttached,
        ..PASSED
    },
    Row {
        name: "data_indication_over_mtu_v4",
        on: On::V4,
        from: Origin::Peer(Peer::OtherPort),
        payload: Payload::Raw(MTU_FILLING),
        outcome: Outcome::PassTooBig,
        ..PASSED
    },
    mangled(
        "ipv4_options_v4",
        On::V4,
        Mangle::Ipv4Options,
        Outcome::PassIpOptions,
    ),
    mangled(
        "ipv4_fragment_v4",
        On::V4,
        Mangle::Ipv4MoreFragments,
        Outcome::PassFragment,
    ),
    mangled("tcp_v4", On::V4, Mangle::Ipv4Tcp, Outcome::PassNotUdp),
    // Shorter than UDP's headers: still told apart by the IP header.
    mangled(
        "tcp_ip_header_only_v4",
        On::V4,
        Mangle::Ipv4TcpIpHeaderOnly,
        Outcome::PassNotUdp,
    ),
    mangled("vlan_tagged", On::V4, Mangle::VlanTag, Outcome::PassNotIp),
    mangled("arp", On::V4, Mangle::Arp, Outcome::PassNotIp),
    mangled(
        "ipv6_extension_header_v6",
        On::V6,
        Mangle::Ipv6HopByHop,
        Outcome::PassIpOptions,
    ),
    mangled(
        "ipv6_extension_header_ip_header_only_v6",
        On::V6,
        Mangle::Ipv6HopByHopIpHeaderOnly,
        Outcome::PassIpOptions,
    ),
    // IPv4 without a UDP checksum (RFC 768) cannot go out over IPv6 as it is (RFC 8200
    // §8.1): userspace relays it.
    Row {
        name: "cross_family_udp_checksum_zero_passes_v4_client_v6_relay",
        on: On::V4ClientV6Relay,
        ip: IpVariant::NoUdpChecksum,
        payload: channel_data(CHANNEL_CROSS, DATA),
        outcome: Outcome::PassCrossFamily,
        ..PASSED
    },
    Row {
        name: "cross_family_send_indication_without_permission_v4_client_v6_relay",
        on: On::V4ClientV6Relay,
        payload: send(Peer::Near, DATA),
        outcome: Outcome::PassNoPermission,
        ..PASSED
    },
];
