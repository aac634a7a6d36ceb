//! Client → peer Send indications (RFC 8656 §11.2, §11.3): the program checks the
//! permission (and a FINGERPRINT, RFC 8489 §14.7, as pion's TURN client sends it;
//! libwebrtc's sends none) and sends the DATA from the relayed address to the peer.

use turn_relay::bpf::Outcome::RelayedSendToPeer;

use crate::rows::*;

const RELAYED: Row = Row {
    outcome: RelayedSendToPeer,
    action: Action::Redirect,
    ..BASE
};

const fn with_fingerprint(data: &'static [u8]) -> Payload {
    Payload::Send {
        peer: Peer::Bound,
        data,
        fingerprint: true,
    }
}

pub const ROWS: &[Row] = &[
    Row {
        name: "send_indication_to_peer",
        payload: send(Peer::Bound, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    Row {
        name: "send_indication_odd_length_to_peer",
        payload: send(Peer::Bound, ODD),
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
    Row {
        name: "send_indication_data_before_peer_address",
        payload: Payload::SendShaped {
            peer: Peer::Bound,
            data: ODD,
            shape: SendShape::DataFirst,
        },
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
    Row {
        name: "send_indication_with_fingerprint_even",
        payload: with_fingerprint(DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    Row {
        name: "send_indication_with_fingerprint_odd",
        payload: with_fingerprint(ODD),
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
    Row {
        name: "send_indication_with_fingerprint_long",
        payload: with_fingerprint(LONG),
        output: to_peer(Peer::Bound, LONG),
        ..RELAYED
    },
    // The relay's own IPv4 identification (RFC 8656 §14), random for a datagram that
    // may be fragmented (the runner checks DF stays clear; 0 with DF set in every other
    // row).
    Row {
        name: "send_indication_without_df_keeps_df_clear_v4",
        on: On::V4,
        ip: IpVariant::MayFragment,
        payload: send(Peer::Bound, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    // The relay's own addresses are peers on relay ports (hairpinning to another
    // allocation, e.g. through a NAT in front of the relay).
    Row {
        name: "send_indication_to_relay_address_on_relay_port",
        payload: send(Peer::RelayPublicOnRelayPort, DATA),
        output: to_peer(Peer::RelayPublicOnRelayPort, DATA),
        ..RELAYED
    },
    Row {
        name: "cross_family_send_indication_to_peer_even",
        on: On::CrossFamilies,
        payload: send(Peer::Bound, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    Row {
        name: "cross_family_send_indication_to_peer_odd",
        on: On::CrossFamilies,
        payload: send(Peer::Bound, ODD),
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
    Row {
        name: "cross_family_send_indication_with_fingerprint",
        on: On::CrossFamilies,
        payload: with_fingerprint(ODD),
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
];
