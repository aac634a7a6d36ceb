//! Client → peer ChannelData (RFC 8656 §12.4, §12.5): the program strips the
//! ChannelData header and sends the data from the relayed address to the bound peer.

use turn_relay::bpf::Outcome::RelayedChannelDataToPeer;

use crate::rows::*;

const RELAYED: Row = Row {
    outcome: RelayedChannelDataToPeer,
    action: Action::Redirect,
    ..BASE
};

pub const ROWS: &[Row] = &[
    Row {
        name: "channel_data_to_peer",
        payload: channel_data(CHANNEL_PEER, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    Row {
        name: "channel_data_without_df_to_peer_v4",
        on: On::V4,
        ip: IpVariant::MayFragment,
        payload: channel_data(CHANNEL_PEER, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    Row {
        name: "channel_data_odd_length_with_junk_padding_to_peer",
        payload: Payload::ChannelData {
            channel: CHANNEL_PEER,
            data: ODD,
            padding: &[0xEE, 0x77, 0x13],
        },
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
    Row {
        name: "channel_data_odd_length_unpadded_to_peer",
        payload: channel_data(CHANNEL_PEER, ODD),
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
    Row {
        name: "channel_data_empty_to_peer",
        payload: channel_data(CHANNEL_PEER, &[]),
        output: to_peer(Peer::Bound, &[]),
        ..RELAYED
    },
    // Channel numbers 0x4000–0x7FFF are ChannelData (RFC 5766 range).
    Row {
        name: "channel_data_highest_number_to_peer",
        payload: channel_data(CHANNEL_HIGHEST, DATA),
        output: to_peer(Peer::HighestChannel, DATA),
        ..RELAYED
    },
    // A peer on the link the frame arrived on: back out of the same interface.
    Row {
        name: "channel_data_to_peer_on_ingress_link_is_tx_v4",
        on: On::V4,
        payload: channel_data(CHANNEL_NEAR_PEER, DATA),
        action: Action::Tx,
        output: to_peer(Peer::Near, DATA),
        ..RELAYED
    },
    // RFC 768: no checksum stays no checksum.
    Row {
        name: "udp_checksum_zero_stays_zero_v4",
        on: On::V4,
        ip: IpVariant::NoUdpChecksum,
        payload: channel_data(CHANNEL_PEER, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    // Cross-family allocations: the IP header is rebuilt in the other family (RFC 8656
    // §14, RFC 7915 mapping), the UDP checksum follows the new pseudo-header.
    Row {
        name: "cross_family_channel_data_to_peer_even",
        on: On::CrossFamilies,
        payload: channel_data(CHANNEL_CROSS, DATA),
        output: to_peer(Peer::Bound, DATA),
        ..RELAYED
    },
    Row {
        name: "cross_family_channel_data_to_peer_odd",
        on: On::CrossFamilies,
        payload: channel_data(CHANNEL_CROSS, ODD),
        output: to_peer(Peer::Bound, ODD),
        ..RELAYED
    },
];
