//! The usage line logged when an allocation ends (what coturn logs on session close).

use std::io;
use std::sync::{Arc, Mutex};

use crate::protocol::datapath::RelayedTraffic;

use super::*;

const CLIENT: &str = "198.18.1.60:40000";
const PEER: &str = "198.18.2.20:5000";

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if let Ok(mut log) = self.0.lock() {
            log.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log lock")).into_owned()
    }
}

/// Runs `scenario` with INFO logs captured and returns them.
fn captured(scenario: impl FnOnce()) -> String {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, scenario);
    log.text()
}

fn harness_with_fast_path_traffic() -> Harness<ScriptedDatapath> {
    Harness::with(
        config(),
        ScriptedDatapath {
            entries: InMemoryDatapath::default(),
            refused_peer: None,
            traffic: RelayedTraffic {
                to_peer_packets: 1000,
                to_peer_bytes: 100_000,
                to_client_packets: 2000,
                to_client_bytes: 200_000,
            },
        },
    )
}

/// Allocates, relays 7 bytes peer → client in userspace, and returns the relay address.
fn allocate_and_relay(harness: &mut Harness<ScriptedDatapath>, client: ClientFlow) -> SocketAddr {
    let relay = harness.allocate(client);
    assert_success(&harness.create_permission(client, &[addr(PEER)]));
    let mut out = Vec::new();
    assert!(harness
        .peer_datagram(relay, addr(PEER), b"7 bytes", &mut out)
        .is_some());
    relay
}

#[test]
fn refresh_to_zero_logs_usage_with_fast_path_and_userspace_traffic() {
    let mut harness = harness_with_fast_path_traffic();
    let client = flow(CLIENT);
    let relay = allocate_and_relay(&mut harness, client);
    harness.now.instant += Duration::from_secs(42);
    let log = captured(|| {
        let (response, _) = harness.refresh(client, Some(0));
        assert_success(&response);
    });
    let line = log
        .lines()
        .find(|line| line.contains("allocation closed: deleted by client"))
        .unwrap_or_else(|| panic!("no usage line in:\n{log}"));
    for expected in [
        "username=alice".to_owned(),
        format!("client={CLIENT}"),
        format!("relay={relay}"),
        "lifetime_secs=42".to_owned(),
        "to_peer_packets=1000 ".to_owned(),
        "to_peer_bytes=100000 ".to_owned(),
        "to_client_packets=2001 ".to_owned(),
        "to_client_bytes=200007 ".to_owned(),
        "fast_path_packets=3000".to_owned(),
    ] {
        assert!(line.contains(&expected), "{expected} missing in {line}");
    }
    assert!(!log.contains(&password("alice")), "password leaked: {log}");
}

#[test]
fn expiry_logs_usage() {
    let mut harness = harness_with_fast_path_traffic();
    let client = flow(CLIENT);
    allocate_and_relay(&mut harness, client);
    let log = captured(|| harness.advance(Duration::from_secs(601)));
    let line = log
        .lines()
        .find(|line| line.contains("allocation closed: expired"))
        .unwrap_or_else(|| panic!("no usage line in:\n{log}"));
    assert!(line.contains("lifetime_secs=601"), "{line}");
    assert!(line.contains("to_client_bytes=200007 "), "{line}");
}

#[test]
fn a_closed_connection_logs_usage_with_its_transport() {
    let mut harness = harness_with_fast_path_traffic();
    let client = stream_flow(CLIENT, Transport::Tls);
    let relay = allocate_and_relay(&mut harness, client);
    harness.now.instant += Duration::from_secs(9);
    let log = captured(|| {
        harness
            .server
            .handle_connection_closed(harness.now.instant, client);
        harness.apply_fast_path();
    });
    let line = log
        .lines()
        .find(|line| line.contains("allocation closed: connection closed"))
        .unwrap_or_else(|| panic!("no usage line in:\n{log}"));
    for expected in [
        format!("client={CLIENT}"),
        "transport=tls".to_owned(),
        format!("relay={relay}"),
        "lifetime_secs=9".to_owned(),
        // Only what userspace relayed: the allocation never was in the fast path.
        "to_client_packets=1 ".to_owned(),
        "to_client_bytes=7 ".to_owned(),
        "fast_path_packets=0".to_owned(),
    ] {
        assert!(line.contains(&expected), "{expected} missing in {line}");
    }
}
