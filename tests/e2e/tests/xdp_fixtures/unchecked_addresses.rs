//! Issue 8 item 1: the program relays to a peer exactly as its entry stores it, in the
//! family it is stored in. An entry of the IPv6 allocation for the IPv4-mapped
//! `::ffff:198.19.1.2` (which the core never installs: it answers 443, and the datapath
//! stores addresses without canonicalising them) leaves as an IPv6 datagram from the IPv6
//! relayed address: never as an IPv4 one, whose source would be the first four bytes of
//! the IPv6 relayed address and whose destination no policy check saw.

use turn_relay::bpf::Outcome;

use crate::rows::*;

pub const ROWS: &[Row] = &[
    Row {
        name: "channel_data_to_ipv4_mapped_peer_leaves_as_ipv6",
        on: On::V6,
        payload: channel_data(CHANNEL_MAPPED, DATA),
        action: Action::Redirect,
        outcome: Outcome::RelayedChannelDataToPeer,
        output: to_peer(Peer::Ipv4Mapped, DATA),
        ..BASE
    },
    Row {
        name: "send_to_ipv4_mapped_peer_leaves_as_ipv6",
        on: On::V6,
        payload: send(Peer::Ipv4Mapped, DATA),
        action: Action::Redirect,
        outcome: Outcome::RelayedSendToPeer,
        output: to_peer(Peer::Ipv4Mapped, DATA),
        ..BASE
    },
];
