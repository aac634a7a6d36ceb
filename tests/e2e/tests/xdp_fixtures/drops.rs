//! Frames the program drops: data from a peer without a (live) permission (RFC 8656 §9:
//! silently discarded), exactly as userspace would.

use turn_relay::bpf::Outcome::DropNoPermission;

use crate::rows::*;

const DROPPED: Row = Row {
    outcome: DropNoPermission,
    action: Action::Drop,
    payload: Payload::Raw(DATA),
    ..BASE
};

pub const ROWS: &[Row] = &[
    Row {
        name: "peer_without_permission",
        from: Origin::Peer(Peer::Stranger),
        ..DROPPED
    },
    Row {
        name: "peer_with_expired_permission_v4",
        on: On::V4,
        from: Origin::Peer(Peer::Expired),
        ..DROPPED
    },
];
