//! Peer → client Data indications (RFC 8656 §11.4): data from a permitted peer without a
//! channel for its port goes to the client as a Data indication with a fresh transaction
//! id.

use turn_relay::bpf::Outcome::RelayedDataIndicationToClient;

use crate::rows::*;

const RELAYED: Row = Row {
    outcome: RelayedDataIndicationToClient,
    action: Action::Redirect,
    from: Origin::Peer(Peer::OtherPort),
    ..BASE
};

pub const ROWS: &[Row] = &[
    Row {
        name: "peer_to_client_data_indication_odd",
        payload: Payload::Raw(ODD),
        output: Output::DataIndicationToClient {
            peer: Peer::OtherPort,
            data: ODD,
        },
        ..RELAYED
    },
    Row {
        name: "peer_to_client_data_indication_even",
        payload: Payload::Raw(DATA),
        output: Output::DataIndicationToClient {
            peer: Peer::OtherPort,
            data: DATA,
        },
        ..RELAYED
    },
    Row {
        name: "cross_family_peer_to_client_data_indication_even",
        on: On::CrossFamilies,
        payload: Payload::Raw(DATA),
        output: Output::DataIndicationToClient {
            peer: Peer::OtherPort,
            data: DATA,
        },
        ..RELAYED
    },
    Row {
        name: "cross_family_peer_to_client_data_indication_odd",
        on: On::CrossFamilies,
        payload: Payload::Raw(ODD),
        output: Output::DataIndicationToClient {
            peer: Peer::OtherPort,
            data: ODD,
        },
        ..RELAYED
    },
];
