//! The fast-path commands the core emits, and the [`FastPath`] applying them: in order,
//! and never leaving the fast path half-programmed when it refuses an entry.

use crate::protocol::datapath::FastPathCommand;

use super::*;

const CLIENT: &str = "198.18.1.70:40000";
const PEER: &str = "198.18.2.20:5000";
const OTHER_PEER: &str = "198.18.2.21:5000";

/// The commands queued by the last step, without applying them.
fn queued(harness: &mut Harness) -> Vec<FastPathCommand> {
    std::iter::from_fn(|| harness.server.poll_fast_path()).collect()
}

/// Feeds a request to the server without applying its fast-path commands.
fn feed(harness: &mut Harness, client: ClientFlow, method: Method, attributes: &[Attr]) {
    let transaction_id = harness.transaction_id();
    let packet = harness.encode_request(
        client,
        method,
        &transaction_id,
        attributes,
        Credentials::Md5("alice"),
    );
    harness
        .server
        .handle_client_datagram(harness.now, client, &packet, None);
    while harness.server.poll_transmit().is_some() {}
    while harness.server.poll_command().is_some() {}
}

#[test]
fn commands_follow_the_order_of_decisions() {
    let mut harness = Harness::new();
    let client = flow(CLIENT);
    let peer = addr(PEER);
    feed(
        &mut harness,
        client,
        Method::ALLOCATE,
        &[raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])],
    );
    feed(
        &mut harness,
        client,
        Method::CHANNEL_BIND,
        &[
            raw(attr::CHANNEL_NUMBER, &channel_number(0x4000)),
            Attr::XorPeer(peer),
        ],
    );
    feed(
        &mut harness,
        client,
        Method::REFRESH,
        &[raw(attr::LIFETIME, &0u32.to_be_bytes())],
    );
    let mut relay = None;
    let kinds: Vec<&str> = queued(&mut harness)
        .iter()
        .map(|command| match command {
            FastPathCommand::InstallAllocation(entry) => {
                assert_eq!(entry.flow, client);
                relay = Some(entry.relay);
                "install allocation"
            }
            FastPathCommand::InstallPermission(entry) => {
                assert_eq!((Some(entry.relay), entry.peer_ip), (relay, peer.ip()));
                "install permission"
            }
            FastPathCommand::InstallChannel(entry) => {
                assert_eq!((Some(entry.relay), entry.peer), (relay, peer));
                "install channel"
            }
            FastPathCommand::RemoveAllocation {
                relay: removed,
                usage,
                ..
            } => {
                assert_eq!(Some(*removed), relay);
                assert!(usage.is_some(), "an ended allocation logs its usage");
                "remove allocation"
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // The permission before the channel that needs it; the removal last.
    assert_eq!(
        kinds,
        [
            "install allocation",
            "install permission",
            "install channel",
            "remove allocation"
        ]
    );
}

#[test]
fn a_refused_permission_hands_the_whole_allocation_to_userspace() {
    let mut harness = Harness::with(
        config(),
        ScriptedDatapath {
            entries: InMemoryDatapath::default(),
            traffic: Default::default(),
            refused_peer: Some(ip("198.18.2.21")),
        },
    );
    let client = flow(CLIENT);
    let relay = harness.allocate(client);
    let (peer, refused) = (addr(PEER), addr(OTHER_PEER));
    assert_success(&harness.channel_bind(client, 0x4000, peer));
    assert_eq!(harness.datapath().entries.channels.len(), 1);
    assert!(!harness.fast_path.is_userspace_only(relay));

    // The refused permission must not leave the allocation in the fast path: XDP would
    // then drop the refused peer's datagrams, which userspace relays.
    assert_success(&harness.create_permission(client, &[refused]));
    let entries = &harness.datapath().entries;
    assert!(
        entries.allocations.is_empty() && entries.permissions.is_empty(),
        "nothing of the allocation is left in the fast path"
    );
    assert!(entries.channels.is_empty());
    assert!(harness.fast_path.is_userspace_only(relay));
    let mut out = Vec::new();
    assert!(harness
        .peer_datagram(relay, refused, b"relayed by userspace", &mut out)
        .is_some());

    // Later commands for it are skipped; the mark ends with the allocation.
    assert_success(&harness.create_permission(client, &[peer]));
    assert!(harness.datapath().entries.permissions.is_empty());
    let (response, _) = harness.refresh(client, Some(0));
    assert_success(&response);
    assert!(!harness.fast_path.is_userspace_only(relay));
    assert_eq!(harness.fast_path.stats().userspace_only_allocations, 1);

    // A new allocation goes to the fast path again.
    let relay = harness.allocate(client);
    assert!(harness.datapath().entries.allocations.contains_key(&relay));
}
