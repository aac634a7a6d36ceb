//! Peer → client ChannelData (RFC 8656 §12.5): data from a peer transport address with a
//! bound channel goes to the client as ChannelData, from the listener.

use turn_relay::bpf::Outcome::RelayedChannelDataToClient;

use crate::rows::*;

const RELAYED: Row = Row {
    outcome: RelayedChannelDataToClient,
    action: Action::Redirect,
    from: Origin::Peer(Peer::Bound),
    ..BASE
};

pub const ROWS: &[Row] = &[
    // DF clear stays clear, with the relay's own random identification.
    Row {
        name: "peer_to_client_channel_data_without_df_v4",
        on: On::V4,
        ip: IpVariant::MayFragment,
        payload: Payload::Raw(DATA),
        output: Output::ChannelDataToClient {
            channel: CHANNEL_PEER,
            data: DATA,
        },
        ..RELAYED
    },
    Row {
        name: "peer_to_client_channel_data",
        payload: Payload::Raw(ODD),
        output: Output::ChannelDataToClient {
            channel: CHANNEL_PEER,
            data: ODD,
        },
        ..RELAYED
    },
    Row {
        name: "peer_to_client_channel_data_even",
        payload: Payload::Raw(DATA),
        output: Output::ChannelDataToClient {
            channel: CHANNEL_PEER,
            data: DATA,
        },
        ..RELAYED
    },
    Row {
        name: "peer_to_client_channel_data_highest_number",
        from: Origin::Peer(Peer::HighestChannel),
        payload: Payload::Raw(ODD),
        output: Output::ChannelDataToClient {
            channel: CHANNEL_HIGHEST,
            data: ODD,
        },
        ..RELAYED
    },
    Row {
        name: "cross_family_peer_to_client_channel_data_even",
        on: On::CrossFamilies,
        payload: Payload::Raw(DATA),
        output: Output::ChannelDataToClient {
            channel: CHANNEL_CROSS,
            data: DATA,
        },
        ..RELAYED
    },
    Row {
        name: "cross_family_peer_to_client_channel_data_odd",
        on: On::CrossFamilies,
        payload: Payload::Raw(ODD),
        output: Output::ChannelDataToClient {
            channel: CHANNEL_CROSS,
            data: ODD,
        },
        ..RELAYED
    },
];
