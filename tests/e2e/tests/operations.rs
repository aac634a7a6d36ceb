//! Operating one relay as an operator would: unprivileged with only its capabilities,
//! `turn-relay ctl` against the admin endpoint, drain and readiness, exit once drained,
//! reload by SIGHUP (and a broken file that changes nothing), configuration through the
//! environment, and the importers' output passing `--check-config`.

use std::fs;
use std::process::Command;
use std::time::Duration;

use std::net::SocketAddr;

use turn_testkit::addresses::{PEER_PORT, PEER_V4, RELAY_LISTEN_V4, TURN_PORT};
use turn_testkit::config::{RelayConfig, User, Xdp};
use turn_testkit::coturn::{start_peer, Credentials, Uclient};
use turn_testkit::daemon::{daemon_binary, workspace_root, Daemon, Launch};
use turn_testkit::process::run;
use turn_testkit::stun_client::{
    allocate_request, channel_data, client_socket, transact, Delivered, Response, TurnClient,
};
use turn_testkit::topology::Topology;
use turn_testkit::{privileged, OrFail};

const USER: &str = "alice";
const PASSWORD: &str = "alice-password";
/// What an exit, a log line or a counter may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);
/// The capabilities of config/turn-relay.service, as setpriv names them.
const UNIT_CAPABILITIES: [&str; 4] = ["bpf", "perfmon", "net_admin", "net_bind_service"];
const CHANNEL: u16 = 0x4001;

fn user() -> User {
    User::new(USER, PASSWORD)
}

fn listener() -> SocketAddr {
    SocketAddr::new(RELAY_LISTEN_V4.into(), TURN_PORT)
}

/// `turn-relay ctl <args>` inside the relay namespace: exit code and output.
fn ctl(topology: &Topology, args: &[&str]) -> (i32, String) {
    let binary = daemon_binary().or_fail("the turn-relay binary");
    let output = topology
        .relay
        .command(&binary.to_string_lossy())
        .arg("ctl")
        .args(["--admin", "127.0.0.1:9641"])
        .args(args)
        .output()
        .or_fail("running turn-relay ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// The standard topology (with an echoing peer when `peer`) and alice's relay with `xdp`,
/// started as `launch` says; None when `test` may not run here (not root, outside CI).
fn relay(test: &str, xdp: Xdp, launch: &Launch, peer: bool) -> Option<Relay> {
    if !privileged(test) {
        return None;
    }
    let topology = Topology::new().or_fail("building the namespaces");
    let peer =
        peer.then(|| start_peer(&topology.peer, PEER_V4.into()).or_fail("starting the peer"));
    let daemon = Daemon::start_with(
        &topology.relay,
        &RelayConfig::new(xdp).with_user(USER, PASSWORD),
        launch,
    )
    .or_fail("starting turn-relay");
    Some(Relay {
        daemon,
        _peer: peer,
        topology,
    })
}

/// What [`relay`] starts; the daemon stops before its namespaces go.
struct Relay {
    daemon: Daemon,
    _peer: Option<turn_testkit::process::Background>,
    topology: Topology,
}

/// Waits for the daemon to exit by itself, with status 0 and `reason` in its log.
fn exits_cleanly(daemon: &mut Daemon, reason: &str) {
    let exit = daemon
        .wait_for_exit(PATIENCE)
        .or_fail("waiting for the exit")
        .or_fail(&format!("the daemon exits ({reason})"));
    assert!(exit.success(), "exit status {exit}:\n{}", daemon.log());
    assert!(daemon.log().contains(reason), "{}", daemon.log());
}

#[test]
fn turn_relay_runs_unprivileged_with_the_units_capabilities() {
    let launch = Launch {
        capabilities: Some(UNIT_CAPABILITIES.to_vec()),
        ..Launch::default()
    };
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "turn_relay_runs_unprivileged_with_the_units_capabilities",
        Xdp::Native,
        &launch,
        true,
    )
    else {
        return;
    };
    let log = daemon
        .log_when(PATIENCE, |log| log.contains("XDP attached in native mode"))
        .or_fail("XDP attached without root");
    let pid = daemon.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).or_fail("process status");
    assert!(
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.contains("65534")),
        "not running as nobody:\n{status}"
    );
    Uclient::new(Credentials::from(&user()))
        .run(&topology.client)
        .or_fail("turnutils_uclient")
        .ensure_lossless(20)
        .or_fail("relaying as nobody");
    let metrics = daemon
        .metrics_when(PATIENCE, |metrics| {
            metrics.xdp_packets("relayed_channel_data_to_peer") > 0
        })
        .or_fail("metrics");
    assert!(
        metrics.xdp_packets("relayed_channel_data_to_peer") > 0,
        "{log}"
    );
    daemon.ensure_running().or_fail("turn-relay after relaying");
}

#[test]
fn without_cap_perfmon_the_verifier_refuses_the_xdp_program() {
    let launch = Launch {
        capabilities: Some(vec!["bpf", "net_admin", "net_bind_service"]),
        ..Launch::default()
    };
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "without_cap_perfmon_the_verifier_refuses_the_xdp_program",
        Xdp::Native,
        &launch,
        true,
    )
    else {
        return;
    };
    let log = daemon
        .log_when(PATIENCE, |log| log.contains("could not be attached"))
        .or_fail("the XDP failure is logged");
    assert!(
        log.contains("pointer"),
        "the verifier's reason is shown:\n{log}"
    );
    // It still relays, in userspace.
    Uclient::new(Credentials::from(&user()))
        .run(&topology.client)
        .or_fail("turnutils_uclient")
        .ensure_lossless(20)
        .or_fail("relaying in userspace");
    daemon.ensure_running().or_fail("turn-relay after relaying");
}

#[test]
fn ctl_shows_status_and_drains_and_readiness_follows() {
    let launch = Launch::default();
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "ctl_shows_status_and_drains_and_readiness_follows",
        Xdp::Off,
        &launch,
        false,
    )
    else {
        return;
    };
    let mut client =
        TurnClient::allocate_from(&topology.client, listener(), &user()).or_fail("Allocate");

    let (code, status) = ctl(&topology, &["status"]);
    assert_eq!(code, 0, "{status}");
    for part in [
        "state: ready: accepting new allocations",
        "allocations: 1 (udp 1",
        "listeners: udp 198.18.1.1:3478",
        "XDP: off mode, not attached",
    ] {
        assert!(status.contains(part), "{part:?} missing:\n{status}");
    }
    assert_eq!(daemon.admin("GET", "/readyz").or_fail("readyz").0, 200);

    let (code, sessions) = ctl(&topology, &["sessions"]);
    assert_eq!(code, 0, "{sessions}");
    let row = sessions
        .lines()
        .find(|line| line.starts_with(USER))
        .or_fail("a row for alice");
    assert!(
        row.contains("198.18.1.2:") && row.contains("198.19.1.1:") && row.contains("udp"),
        "{row}"
    );
    assert!(sessions.ends_with("1 allocation(s)\n"), "{sessions}");
    let (_, json) = ctl(&topology, &["sessions", "--json"]);
    assert!(!json.contains(PASSWORD), "a secret in /sessions:\n{json}");

    let (code, drained) = ctl(&topology, &["drain"]);
    assert_eq!(code, 0, "{drained}");
    assert!(
        drained.contains("draining: new allocations are refused with 508"),
        "{drained}"
    );
    let (ready, body) = daemon.admin("GET", "/readyz").or_fail("readyz");
    assert_eq!((ready, body.as_str()), (503, "draining\n"));
    assert_eq!(daemon.admin("GET", "/healthz").or_fail("healthz").0, 200);
    let (_, json) = ctl(&topology, &["status", "--json"]);
    assert!(json.contains("\"draining\": true"), "{json}");
    // No alternate configured: a new Allocate gets 508; the established one carries on.
    let refused = TurnClient::allocate_from(&topology.client, listener(), &user())
        .err()
        .or_fail("a new Allocate while draining");
    assert!(format!("{refused:#}").contains("508"), "{refused:#}");
    client.refresh(600).or_fail("Refresh while draining");

    let (code, undrained) = ctl(&topology, &["undrain"]);
    assert_eq!(code, 0, "{undrained}");
    assert_eq!(daemon.admin("GET", "/readyz").or_fail("readyz").0, 200);
    daemon.ensure_running().or_fail("turn-relay after ctl");
}

#[test]
fn a_draining_relay_with_drain_exit_exits_when_its_last_allocation_ends() {
    let launch = Launch {
        args: vec!["--exit-when-drained".into()],
        ..Launch::default()
    };
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "a_draining_relay_with_drain_exit_exits_when_its_last_allocation_ends",
        Xdp::Native,
        &launch,
        true,
    )
    else {
        return;
    };
    let mut client =
        TurnClient::allocate_from(&topology.client, listener(), &user()).or_fail("Allocate");
    daemon.signal(libc::SIGUSR1).or_fail("SIGUSR1");
    daemon
        .log_when(PATIENCE, |log| {
            log.contains("draining: new allocations") && log.contains("(SIGUSR1)")
        })
        .or_fail("SIGUSR1 starts the drain");
    // The allocation goes on while draining: ChannelBind, then media through XDP.
    let peer = SocketAddr::new(PEER_V4.into(), PEER_PORT);
    client
        .channel_bind(CHANNEL, peer)
        .or_fail("ChannelBind while draining");
    for sequence in 0..20u8 {
        client
            .link()
            .send(&channel_data(CHANNEL, &[sequence; 100]))
            .or_fail("ChannelData");
        let echoed = client.receive(Duration::from_secs(2)).or_fail("receiving");
        assert_eq!(
            echoed,
            Some(Delivered::ChannelData {
                number: CHANNEL,
                data: vec![sequence; 100]
            }),
            "packet {sequence} while draining"
        );
    }
    // XDP relays them (the first may go through userspace while the neighbour resolves).
    let relayed = |metrics: &turn_testkit::daemon::Metrics| {
        metrics.xdp_packets("relayed_channel_data_to_peer") + metrics.userspace_relayed("to_peer")
            >= 20
            && metrics.xdp_packets("relayed_channel_data_to_peer") > 0
            && metrics.xdp_packets("relayed_channel_data_to_client") > 0
    };
    let metrics = daemon.metrics_when(PATIENCE, relayed).or_fail("metrics");
    assert!(
        relayed(&metrics),
        "XDP relays for a draining relay:\n{}",
        metrics.0
    );
    // One allocation is left: it keeps the process alive.
    assert!(
        daemon
            .wait_for_exit(Duration::from_secs(2))
            .or_fail("waiting")
            .is_none(),
        "exited with an allocation left"
    );
    client.refresh(0).or_fail("deleting the allocation");
    exits_cleanly(&mut daemon, "drained: the last allocation is gone");
}

#[test]
fn sighup_reloads_and_a_broken_file_changes_nothing() {
    let launch = Launch::default();
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "sighup_reloads_and_a_broken_file_changes_nothing",
        Xdp::Off,
        &launch,
        false,
    )
    else {
        return;
    };
    let original = fs::read_to_string(daemon.config_path()).or_fail("reading the config");

    let bob = User::new("bob", "bob-password");
    assert!(TurnClient::allocate_from(&topology.client, listener(), &bob).is_err());
    let mut alice =
        TurnClient::allocate_from(&topology.client, listener(), &user()).or_fail("Allocate");

    // A user replaced, the log level and a restart-only key changed: two apply, one is
    // named; alice's allocation is not touched.
    let changed = original
        .replace("name = \"alice\"", "name = \"bob\"")
        .replace(
            &format!("password = \"{PASSWORD}\""),
            "password = \"bob-password\"",
        )
        .replace("level = \"info\"", "level = \"debug\"")
        .replace("realm = \"e2e.turn-relay.test\"", "realm = \"other.test\"");
    assert_ne!(
        changed, original,
        "the test's edits apply to the written file"
    );
    fs::write(daemon.config_path(), &changed).or_fail("rewriting the config");
    daemon.signal(libc::SIGHUP).or_fail("SIGHUP");
    let log = daemon
        .log_when(PATIENCE, |log| {
            log.contains("reloaded: auth.users, log.level applied (SIGHUP)")
        })
        .or_fail("the reload is logged");
    TurnClient::allocate_from(&topology.client, listener(), &bob).or_fail("bob after the reload");
    assert!(TurnClient::allocate_from(&topology.client, listener(), &user()).is_err());
    alice
        .refresh(600)
        .or_fail("alice's allocation after the reload");
    assert!(
        log.contains("reload: server.realm changed but needs a restart"),
        "{log}"
    );
    // The realm stays until a restart.
    let socket = client_socket(&topology.client, listener()).or_fail("client socket");
    let challenge = transact(&socket, &allocate_request(false, None)).or_fail("Allocate");
    let challenge = Response::parse(&challenge).or_fail("a response");
    assert_eq!(challenge.realm.as_deref(), Some("e2e.turn-relay.test"));

    // A file with an error: logged with file, line and key; the relay goes on unchanged.
    let broken = changed.replace("level = \"debug\"", "level = \"debug\"\nformat = 7");
    fs::write(daemon.config_path(), &broken).or_fail("breaking the config");
    let (code, answer) = ctl(&topology, &["reload"]);
    assert_eq!(code, 1, "{answer}");
    let path = daemon.config_path().display().to_string();
    assert!(
        answer.contains(&format!("config error: {path} line")) && answer.contains("log.format"),
        "{answer}"
    );
    daemon
        .log_when(PATIENCE, |log| {
            log.contains("refused; the running configuration stays")
        })
        .or_fail("the refused reload is logged");
    TurnClient::allocate_from(&topology.client, listener(), &bob)
        .or_fail("Allocate after the refused reload");
    daemon
        .ensure_running()
        .or_fail("turn-relay after the reloads");
}

#[test]
fn the_environment_overrides_the_file() {
    let launch = Launch {
        env: vec![
            (
                "TURN_RELAY_SERVER_REALM".into(),
                "from-the-environment.test".into(),
            ),
            ("TURN_RELAY_AUTH_USERS".into(), "bob:bob-password".into()),
        ],
        ..Launch::default()
    };
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "the_environment_overrides_the_file",
        Xdp::Off,
        &launch,
        false,
    )
    else {
        return;
    };
    let socket = client_socket(&topology.client, listener()).or_fail("client socket");
    let challenge = transact(&socket, &allocate_request(false, None)).or_fail("Allocate");
    let challenge = Response::parse(&challenge).or_fail("a response");
    assert_eq!(
        challenge.realm.as_deref(),
        Some("from-the-environment.test")
    );
    // The environment's users replace the file's.
    TurnClient::allocate_from(
        &topology.client,
        listener(),
        &User::new("bob", "bob-password"),
    )
    .or_fail("Allocate as the environment's user");
    assert!(TurnClient::allocate_from(&topology.client, listener(), &user()).is_err());
    daemon.ensure_running().or_fail("turn-relay");
}

/// A relay configured for a million allocations (issue 11) starts, prints the memory it
/// needs at that cap, serves, and stays within it; it warns that its relayed ports hold
/// far fewer.
#[test]
fn a_million_allocations_start_within_the_memory_printed_at_start_up() {
    let launch = Launch {
        env: vec![("TURN_RELAY_SERVER_MAX_ALLOCATIONS".into(), "1000000".into())],
        ..Launch::default()
    };
    let test = "a_million_allocations_start_within_the_memory_printed_at_start_up";
    let Some(mut started) = relay(test, Xdp::Off, &launch, false) else {
        return;
    };
    let log = started
        .daemon
        .log_when(PATIENCE, |log| {
            log.contains("memory at 1000000 allocations")
        })
        .or_fail("the start-up memory line");
    let printed_mib: u64 = log
        .split("memory at 1000000 allocations: about ")
        .nth(1)
        .and_then(|rest| rest.split(" MiB").next())
        .and_then(|number| number.parse().ok())
        .or_fail(&format!("a MiB figure in the memory line:\n{log}"));
    assert!(
        log.contains("relayed ports") && log.contains("allocations can exist"),
        "no warning that the ports hold fewer allocations:\n{log}"
    );
    let client = TurnClient::allocate_from(&started.topology.client, listener(), &user())
        .or_fail("Allocate from the relay with a million-allocation cap");
    drop(client);
    let status = fs::read_to_string(format!("/proc/{}/status", started.daemon.pid()))
        .or_fail("the daemon's /proc status");
    let resident_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .or_fail("VmRSS");
    assert!(
        resident_kib <= printed_mib * 1024,
        "resident {resident_kib} KiB above the {printed_mib} MiB printed at start-up"
    );
    started.daemon.ensure_running().or_fail("turn-relay");
}

/// `import-config` output for `--from format file`, checked by `--check-config`.
fn import_and_check(format: &str, file: &std::path::Path) -> String {
    let binary = daemon_binary().or_fail("the turn-relay binary");
    let imported = run(Command::new(&binary)
        .args(["import-config", "--from", format])
        .arg(file))
    .or_fail(&format!("import-config --from {format} {}", file.display()));
    let written = std::env::temp_dir().join(format!(
        "turn-relay-import-{format}-{}.toml",
        std::process::id()
    ));
    fs::write(&written, &imported).or_fail("writing the imported configuration");
    let checked = run(Command::new(&binary)
        .arg("--config")
        .arg(&written)
        .arg("--check-config"));
    let _ = fs::remove_file(&written);
    let checked = checked.or_fail(&format!("--check-config of:\n{imported}"));
    assert!(checked.starts_with("config OK:"), "{checked}");
    imported
}

#[test]
fn imported_coturn_and_restund_configurations_pass_check_config() {
    let coturn = import_and_check("coturn", std::path::Path::new("/etc/turnserver.conf"));
    assert!(coturn.contains("#   no-rfc5780: RFC 5780"), "{coturn}");
    let restund =
        workspace_root().join("turn-userspace/src/daemon/config/import/fixtures/restund.conf");
    let imported = import_and_check("restund", &restund);
    assert!(
        imported.contains("zrest_secrets = [\"brig-and-restund-share-this\"]"),
        "{imported}"
    );
}

#[test]
fn drain_timeout_ends_a_drain_that_calls_outlast() {
    let launch = Launch {
        env: vec![
            ("TURN_RELAY_SERVER_DRAIN_EXIT".into(), "true".into()),
            ("TURN_RELAY_SERVER_DRAIN_TIMEOUT".into(), "2".into()),
        ],
        ..Launch::default()
    };
    let Some(Relay {
        topology,
        mut daemon,
        _peer,
    }) = relay(
        "drain_timeout_ends_a_drain_that_calls_outlast",
        Xdp::Off,
        &launch,
        false,
    )
    else {
        return;
    };
    let _call =
        TurnClient::allocate_from(&topology.client, listener(), &user()).or_fail("Allocate");
    let (status, _) = daemon.admin("POST", "/drain").or_fail("POST /drain");
    assert_eq!(status, 200);
    exits_cleanly(&mut daemon, "drained: server.drain_timeout is over");
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    let socket_path =
        std::env::temp_dir().join(format!("turn-relay-notify-{}", std::process::id()));
    let _ = fs::remove_file(&socket_path);
    let notifications =
        std::os::unix::net::UnixDatagram::bind(&socket_path).or_fail("binding NOTIFY_SOCKET");
    notifications
        .set_read_timeout(Some(PATIENCE))
        .or_fail("read timeout");
    let launch = Launch {
        env: vec![
            ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
            // WatchdogSec=2: pings every second.
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ],
        ..Launch::default()
    };
    let Some(Relay {
        mut daemon,
        _peer,
        topology: _topology,
    }) = relay(
        "systemd_hears_ready_status_watchdog_and_stopping",
        Xdp::Off,
        &launch,
        false,
    )
    else {
        let _ = fs::remove_file(&socket_path);
        return;
    };
    let mut heard: Vec<String> = Vec::new();
    let receive = |heard: &mut Vec<String>, until: &str| {
        let mut buffer = [0u8; 512];
        while !heard.iter().any(|message| message.contains(until)) {
            let length = notifications
                .recv(&mut buffer)
                .or_fail(&format!("waiting for {until} (heard {heard:?})"));
            heard.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
    };
    receive(&mut heard, "READY=1");
    receive(&mut heard, "WATCHDOG=1");
    let ready = heard
        .iter()
        .find(|message| message.contains("READY=1"))
        .or_fail("READY");
    assert!(ready.contains("STATUS=0 allocation(s)"), "{ready}");
    daemon.signal(libc::SIGUSR1).or_fail("SIGUSR1");
    receive(&mut heard, "draining");
    daemon.signal(libc::SIGTERM).or_fail("SIGTERM");
    receive(&mut heard, "STOPPING=1");
    daemon
        .wait_for_exit(PATIENCE)
        .or_fail("waiting for the exit")
        .or_fail("SIGTERM ends it");
    let _ = fs::remove_file(&socket_path);
}
