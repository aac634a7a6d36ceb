//! Real-browser tests of turn-relay: Debian's headless Chromium, driven through
//! ChromeDriver's W3C WebDriver API, makes a relay-only WebRTC data-channel connection
//! (`iceTransportPolicy: "relay"`) through a TURN server and reports what ICE selected.
//!
//! - [`chromium`]: the Chromium + ChromeDriver processes ([`Browser`]) and their flags.
//! - [`webdriver`]: the handful of WebDriver commands used.
//! - this file: the TURN server as the page sees it ([`IceServer`], [`TurnTransport`]),
//!   the in-page test `page/relay-datachannel.html` ([`relay_data_channel`]) and its
//!   report with the checks ([`DataChannelReport::check`]).
//! - [`relay`]: the `turn-relay` daemon on loopback, kept apart from the browser code.
//!
//! What Chromium 156 (Debian 12) does with TURN, as found while building this:
//! - A TURN server and relayed addresses on 127.0.0.1 work without any extra flag: with
//!   `iceTransportPolicy: "relay"` only relay candidates are gathered, so mDNS host-name
//!   obfuscation and the IP-permission check do not come into play. Chromium sends from a
//!   socket bound to the unspecified address (`raddr 0.0.0.0` in the candidate).
//! - `turn:…?transport=tcp` works the same way (`relayProtocol` "tcp").
//! - `turns:` certificates go through the network service's certificate verifier. An
//!   untrusted one fails the allocation with `icecandidateerror` 701 "Failed to establish
//!   connection". [`BrowserOptions::trusting_spki`], that is
//!   `--ignore-certificate-errors-spki-list=<base64 SHA-256 of the SPKI>`, accepts that
//!   key and then ignores every error of its chain, a name or IP mismatch included;
//!   `--ignore-certificate-errors` and the WebDriver capability `acceptInsecureCerts`
//!   accept any certificate. The ClientHello offers TLS 1.3 and 1.2, no
//!   ALPN, and SNI only when the URI names a host (none for an IP literal).
//!   (Checked against coturn, `relayProtocol` "tls".)

pub mod chromium;
pub mod relay;
pub mod webdriver;

use std::fmt::Display;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use chromium::{Browser, BrowserOptions};

/// Standard output and error of a child process, both appended to a new file at `path`.
fn output_to_file(path: &Path) -> Result<(Stdio, Stdio)> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let for_stderr = file
        .try_clone()
        .with_context(|| format!("duplicating {}", path.display()))?;
    Ok((Stdio::from(file), Stdio::from(for_stderr)))
}

/// The page with `window.relayDataChannelTest`.
const DATA_CHANNEL_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/page/relay-datachannel.html");

/// Calls the page's test and hands its report back as JSON text.
const DATA_CHANNEL_SCRIPT: &str = "\
const [parameters, done] = arguments;
window.relayDataChannelTest(parameters).then(
  (report) => done(JSON.stringify(report)),
  (error) => done(JSON.stringify({ error: `relayDataChannelTest threw: ${error}` })));";

/// Whether Debian's chromium and chromium-driver are installed (`cargo xtask setup`
/// installs both). Without them the test is skipped, with a message, except under
/// `CI=true`, where a skip would hide a failure: there it panics.
pub fn chromium_installed(test: &str) -> bool {
    let missing: Vec<&str> = [chromium::CHROMIUM, chromium::CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{test} needs {} (Debian packages chromium and chromium-driver: cargo xtask setup)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}; CI=true forbids skipping it");
    }
    eprintln!("skipping: {message}");
    false
}

/// How the browser reaches the TURN server (RFC 7065 URIs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnTransport {
    /// `turn:host:port?transport=udp`
    Udp,
    /// `turn:host:port?transport=tcp`
    Tcp,
    /// `turns:host:port?transport=tcp` (TLS over TCP)
    Tls,
}

impl TurnTransport {
    /// What `getStats()` reports as `relayProtocol` of a local relay candidate obtained
    /// over this transport (W3C webrtc-stats, RTCIceCandidateStats).
    pub fn relay_protocol(self) -> &'static str {
        match self {
            TurnTransport::Udp => "udp",
            TurnTransport::Tcp => "tcp",
            TurnTransport::Tls => "tls",
        }
    }

    fn uri(self, authority: &dyn Display) -> String {
        match self {
            TurnTransport::Udp => format!("turn:{authority}?transport=udp"),
            TurnTransport::Tcp => format!("turn:{authority}?transport=tcp"),
            TurnTransport::Tls => format!("turns:{authority}?transport=tcp"),
        }
    }
}

/// One entry of RTCConfiguration.iceServers.
#[derive(Clone, Debug, Serialize)]
pub struct IceServer {
    #[serde(skip)]
    pub transport: TurnTransport,
    pub urls: String,
    pub username: String,
    pub credential: String,
}

impl IceServer {
    /// The TURN server at `authority` ("host:port"; a [`SocketAddr`] prints as one, IPv6
    /// in brackets). For `turns:` the host is what Chromium verifies the certificate
    /// against and sends as SNI (none for an IP literal).
    pub fn new(
        transport: TurnTransport,
        authority: impl Display,
        username: &str,
        credential: &str,
    ) -> IceServer {
        IceServer {
            transport,
            urls: transport.uri(&authority),
            username: username.to_owned(),
            credential: credential.to_owned(),
        }
    }
}

/// What the page does: `messages` numbered messages of about `payload_bytes` each, over
/// an ordered data channel, each echoed back; all within `limit`.
#[derive(Clone, Debug)]
pub struct DataChannelRun {
    pub messages: u32,
    pub payload_bytes: u32,
    pub limit: Duration,
}

impl Default for DataChannelRun {
    fn default() -> DataChannelRun {
        DataChannelRun {
            messages: 200,
            payload_bytes: 256,
            limit: Duration::from_secs(12),
        }
    }
}

/// Loads the data-channel page in `browser` and runs it against `server`.
pub fn relay_data_channel(
    browser: &Browser,
    server: &IceServer,
    run: &DataChannelRun,
) -> Result<DataChannelReport> {
    browser.open_file(Path::new(DATA_CHANNEL_PAGE))?;
    let parameters = json!([{
        "iceServer": server,
        "messages": run.messages,
        "payloadBytes": run.payload_bytes,
        "timeoutMs": webdriver::millis(run.limit),
    }]);
    let reply = browser
        .execute_async(DATA_CHANNEL_SCRIPT, parameters, run.limit)
        .with_context(|| format!("running the data-channel page against {}", server.urls))?;
    let text = reply
        .as_str()
        .with_context(|| format!("the page answered {reply}, not a JSON text"))?;
    serde_json::from_str(text).with_context(|| format!("the page's report: {text}"))
}

/// What the page saw (its `report` object).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataChannelReport {
    /// Why the page gave up, if it did.
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// Sequence numbers in the order the answerer received them.
    pub received_by_answerer: Vec<u32>,
    /// Sequence numbers in the order the echoes came back to the offerer.
    pub echoed_to_offerer: Vec<u32>,
    pub offerer: PeerReport,
    pub answerer: PeerReport,
}

/// One RTCPeerConnection's side of the run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    /// Its ICE candidates (SDP `candidate:` lines).
    pub candidates: Vec<String>,
    /// `icecandidateerror` events and failed `addIceCandidate` calls.
    pub candidate_errors: Vec<Value>,
    /// ICE and connection state changes, with the time since the start.
    pub states: Vec<String>,
    /// From `getStats()`, once the messages went through.
    pub selected_pair: Option<CandidatePair>,
}

/// RTCIceCandidatePairStats of the selected pair, with its two candidates.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidatePair {
    pub state: Option<String>,
    pub nominated: Option<bool>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    pub local: Option<Candidate>,
    pub remote: Option<Candidate>,
}

/// RTCIceCandidateStats, the fields the checks use.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub candidate_type: Option<String>,
    /// Browser ↔ TURN server transport of a local relay candidate.
    pub relay_protocol: Option<String>,
    pub protocol: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    /// The ICE server a local relay candidate came from.
    pub url: Option<String>,
}

impl Candidate {
    fn socket_address(&self) -> Option<SocketAddr> {
        let ip = self.address.as_deref()?.parse().ok()?;
        Some(SocketAddr::new(ip, self.port?))
    }
}

impl DataChannelReport {
    /// The run went through `server` as asked: all `messages` arrived in order both ways,
    /// and on both sides the selected pair joins two relay candidates, the local one
    /// obtained from `server` over its transport. The error shows the whole report.
    pub fn check(&self, server: &IceServer, messages: u32) -> Result<()> {
        self.check_quietly(server, messages)
            .map_err(|error| anyhow!("{error:#}\n--- page report ---\n{self}"))
    }

    fn check_quietly(&self, server: &IceServer, messages: u32) -> Result<()> {
        if let Some(error) = &self.error {
            bail!("the page failed: {error}");
        }
        let expected: Vec<u32> = (0..messages).collect();
        ensure!(
            self.received_by_answerer == expected,
            "the answerer did not receive messages 0..{messages} in order"
        );
        ensure!(
            self.echoed_to_offerer == expected,
            "the offerer did not get the echoes of 0..{messages} in order"
        );
        let (offerer_local, offerer_remote) =
            check_selected_pair("offerer", &self.offerer, server)?;
        let (answerer_local, answerer_remote) =
            check_selected_pair("answerer", &self.answerer, server)?;
        ensure!(
            offerer_local == answerer_remote && answerer_local == offerer_remote,
            "the selected pairs do not join the two sides' relayed addresses"
        );
        Ok(())
    }

    /// The relayed transport addresses of the two sides' selected local candidates.
    pub fn relayed_addresses(&self) -> Vec<SocketAddr> {
        [&self.offerer, &self.answerer]
            .into_iter()
            .filter_map(|side| {
                side.selected_pair
                    .as_ref()?
                    .local
                    .as_ref()?
                    .socket_address()
            })
            .collect()
    }
}

impl Display for DataChannelReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string_pretty(self) {
            Ok(text) => formatter.write_str(&text),
            Err(_) => write!(formatter, "{self:?}"),
        }
    }
}

/// `side`'s selected pair joins two relay candidates, the local one obtained from
/// `server` over its transport. Returns the pair's (local, remote) addresses.
fn check_selected_pair(
    name: &str,
    side: &PeerReport,
    server: &IceServer,
) -> Result<(SocketAddr, SocketAddr)> {
    let pair = side
        .selected_pair
        .as_ref()
        .with_context(|| format!("{name}: no selected candidate pair"))?;
    let local = pair
        .local
        .as_ref()
        .with_context(|| format!("{name}: selected pair without local candidate"))?;
    let remote = pair
        .remote
        .as_ref()
        .with_context(|| format!("{name}: selected pair without remote candidate"))?;
    ensure!(
        local.candidate_type.as_deref() == Some("relay"),
        "{name}: local candidate type is {:?}, not relay",
        local.candidate_type
    );
    ensure!(
        remote.candidate_type.as_deref() == Some("relay"),
        "{name}: remote candidate type is {:?}, not relay",
        remote.candidate_type
    );
    ensure!(
        local.relay_protocol.as_deref() == Some(server.transport.relay_protocol()),
        "{name}: local relay candidate obtained over {:?}, not {}",
        local.relay_protocol,
        server.transport.relay_protocol()
    );
    ensure!(
        local.url.as_deref() == Some(server.urls.as_str()),
        "{name}: local relay candidate from {:?}, not {}",
        local.url,
        server.urls
    );
    let local = local
        .socket_address()
        .with_context(|| format!("{name}: local candidate without address"))?;
    let remote = remote
        .socket_address()
        .with_context(|| format!("{name}: remote candidate without address"))?;
    Ok((local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "turn:127.0.0.1:3478?transport=udp";

    fn candidate(kind: &str, port: u16, local: bool) -> Value {
        json!({
            "candidateType": kind,
            "relayProtocol": if local { Some("udp") } else { None },
            "protocol": "udp",
            "address": "127.0.0.1",
            "port": port,
            "url": if local { Some(SERVER) } else { None },
        })
    }

    /// A report as the page returns it for a good run of three messages.
    fn good_report() -> Value {
        let side = |local: u16, remote: u16| {
            json!({
                "candidates": [],
                "candidateErrors": [],
                "states": [],
                "selectedPair": {
                    "state": "succeeded",
                    "nominated": true,
                    "bytesSent": 1000,
                    "bytesReceived": 1000,
                    "local": candidate("relay", local, true),
                    "remote": candidate("relay", remote, false),
                },
            })
        };
        json!({
            "error": null,
            "elapsedMs": 300,
            "receivedByAnswerer": [0, 1, 2],
            "echoedToOfferer": [0, 1, 2],
            "offerer": side(50000, 50002),
            "answerer": side(50002, 50000),
        })
    }

    fn check(report: Value) -> Result<()> {
        let server = IceServer::new(TurnTransport::Udp, "127.0.0.1:3478", "user", "secret");
        serde_json::from_value::<DataChannelReport>(report)?.check(&server, 3)
    }

    fn failure(report: Value) -> String {
        format!("{:#}", check(report).expect_err("the check should fail"))
    }

    #[test]
    fn a_relayed_run_in_order_passes() {
        check(good_report()).unwrap();
        let report: DataChannelReport = serde_json::from_value(good_report()).unwrap();
        assert_eq!(
            report.relayed_addresses(),
            [
                "127.0.0.1:50000".parse().unwrap(),
                "127.0.0.1:50002".parse().unwrap()
            ]
        );
    }

    #[test]
    fn turn_uris_follow_rfc_7065() {
        let uri = |transport| IceServer::new(transport, "[::1]:5349", "u", "p").urls;
        assert_eq!(uri(TurnTransport::Udp), "turn:[::1]:5349?transport=udp");
        assert_eq!(uri(TurnTransport::Tcp), "turn:[::1]:5349?transport=tcp");
        assert_eq!(uri(TurnTransport::Tls), "turns:[::1]:5349?transport=tcp");
    }

    #[test]
    fn reordered_or_missing_messages_fail() {
        let mut report = good_report();
        report["receivedByAnswerer"] = json!([0, 2, 1]);
        assert!(failure(report).contains("in order"));
        let mut report = good_report();
        report["echoedToOfferer"] = json!([0, 1]);
        assert!(failure(report).contains("echoes"));
    }

    #[test]
    fn a_page_error_fails_and_shows_the_report() {
        let mut report = good_report();
        report["error"] = json!("timed out after 12000 ms");
        let message = failure(report);
        assert!(message.contains("timed out"));
        assert!(message.contains("--- page report ---"));
    }

    #[test]
    fn a_pair_that_is_not_relay_to_relay_fails() {
        let mut report = good_report();
        report["offerer"]["selectedPair"]["local"]["candidateType"] = json!("host");
        assert!(failure(report).contains("local candidate type"));
        let mut report = good_report();
        report["answerer"]["selectedPair"]["remote"]["candidateType"] = json!("srflx");
        assert!(failure(report).contains("remote candidate type"));
        let mut report = good_report();
        report["answerer"]["selectedPair"] = Value::Null;
        assert!(failure(report).contains("no selected candidate pair"));
    }

    #[test]
    fn a_relay_candidate_over_another_transport_or_server_fails() {
        let mut report = good_report();
        report["offerer"]["selectedPair"]["local"]["relayProtocol"] = json!("tcp");
        assert!(failure(report).contains("obtained over"));
        let mut report = good_report();
        report["offerer"]["selectedPair"]["local"]["url"] = json!("turn:198.18.0.1:3478");
        assert!(failure(report).contains("not turn:127.0.0.1:3478"));
    }

    #[test]
    fn pairs_that_do_not_meet_fail() {
        let mut report = good_report();
        report["answerer"]["selectedPair"]["remote"]["port"] = json!(50004);
        assert!(failure(report).contains("do not join"));
    }
}
