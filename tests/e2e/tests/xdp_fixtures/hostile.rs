//! Malformed and hostile frames: each must reach userspace untouched (which answers or
//! drops it as RFC 8489/8656 say), never be relayed.

use turn_relay::bpf::Outcome;

use crate::rows::*;

const PASSED: Row = Row {
    action: Action::Pass,
    output: Output::Unchanged,
    ..BASE
};

/// A Send indication to the bound peer of the given shape.
const fn shaped(name: &'static str, shape: SendShape, outcome: Outcome) -> Row {
    Row {
        name,
        payload: Payload::SendShaped {
            peer: Peer::Bound,
            data: DATA,
            shape,
        },
        outcome,
        ..PASSED
    }
}

/// ChannelData on the bound channel with its frame mangled.
const fn mangled(name: &'static str, on: On, mangle: Mangle) -> Row {
    Row {
        name,
        on,
        payload: channel_data(CHANNEL_PEER, DATA),
        mangle: Some(mangle),
        outcome: Outcome::PassMalformed,
        ..PASSED
    }
}

pub const ROWS: &[Row] = &[
    Row {
        name: "channel_data_length_too_long",
        payload: Payload::ChannelDataClaiming {
            channel: CHANNEL_PEER,
            data: DATA,
            declared: 100,
        },
        outcome: Outcome::PassMalformed,
        ..PASSED
    },
    Row {
        name: "channel_data_length_too_short",
        payload: Payload::ChannelData {
            channel: CHANNEL_PEER,
            data: b"hell",
            padding: b"o, peer!",
        },
        outcome: Outcome::PassMalformed,
        ..PASSED
    },
    shaped(
        "send_indication_wrong_cookie",
        SendShape::WrongCookie,
        Outcome::PassStun,
    ),
    shaped(
        "send_indication_wrong_fingerprint",
        SendShape::WrongFingerprint,
        Outcome::PassBadFingerprint,
    ),
    shaped(
        "send_indication_data_changed_under_fingerprint",
        SendShape::DataChangedUnderFingerprint,
        Outcome::PassBadFingerprint,
    ),
    shaped(
        "send_indication_attributes_after_fingerprint",
        SendShape::AttributeAfterFingerprint,
        Outcome::PassStun,
    ),
    // RFC 8656 §11.2: this server does not support DONT-FRAGMENT (it answers an Allocate
    // with it 420), so userspace discards such a Send indication.
    shaped(
        "send_indication_dont_fragment_goes_to_userspace",
        SendShape::DontFragment,
        Outcome::PassStun,
    ),
    // The permission for the relay's own address covers relay ports only: never its
    // listener or another local service.
    Row {
        name: "send_indication_to_relay_address_off_relay_ports",
        payload: send(Peer::RelayPublicOffRelayPorts, DATA),
        outcome: Outcome::PassPeerPortNotPermitted,
        ..PASSED
    },
    shaped(
        "send_indication_without_data",
        SendShape::WithoutData,
        Outcome::PassStun,
    ),
    shaped(
        "send_indication_attribute_overruns",
        SendShape::AttributeOverruns,
        Outcome::PassStun,
    ),
    mangled(
        "truncated_udp_header",
        On::BothFamilies,
        Mangle::TruncateInUdpHeader,
    ),
    mangled(
        "truncated_ip_header",
        On::BothFamilies,
        Mangle::TruncateInIpHeader,
    ),
    mangled(
        "udp_length_lies",
        On::BothFamilies,
        Mangle::UdpLengthPlusFour,
    ),
    mangled(
        "ip_length_beyond_frame",
        On::BothFamilies,
        Mangle::IpLengthPlusEight,
    ),
    mangled(
        "ethernet_header_only",
        On::BothFamilies,
        Mangle::EthernetHeaderOnly,
    ),
    mangled("ipv6_zero_udp_checksum_v6", On::V6, Mangle::ZeroUdpChecksum),
    mangled(
        "wrong_ipv4_header_checksum_v4",
        On::V4,
        Mangle::WrongIpv4HeaderChecksum,
    ),
];
