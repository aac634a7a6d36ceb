use std::net::IpAddr;

use super::*;
use crate::protocol::auth::StaticSecret;

const RESTUND: &str = include_str!("fixtures/restund.conf");
const COTURN: &str = include_str!("fixtures/coturn.conf");
/// The file Debian's coturn package installs (coturn is installed by `cargo xtask setup`).
const DEBIAN_TURNSERVER_CONF: &str = "/etc/turnserver.conf";

/// A host with one address of each family, so results do not depend on this machine.
fn host() -> HostAddresses {
    HostAddresses {
        addresses: ["127.0.0.1", "198.18.0.99", "2001:2::99"]
            .iter()
            .map(|ip| ip.parse::<IpAddr>().expect("ip"))
            .collect(),
    }
}

/// The imported text, which must load as a configuration.
fn imported(format: Format, text: &str) -> (String, Config) {
    let toml = import(format, text, "fixture.conf", &host());
    let config = Config::parse(&toml, "imported")
        .unwrap_or_else(|error| panic!("{error}\n--- imported ---\n{toml}"));
    (toml, config)
}

/// Each (option, reason) is listed as not imported, with a reason containing `why`.
fn assert_skipped(toml: &str, expected: &[(&str, &str)]) {
    for (option, why) in expected {
        let line = skipped_line(toml, option);
        assert!(line.contains(why), "{line}");
    }
}

/// The comment line about `option` in the "Not imported" list.
fn skipped_line<'a>(toml: &'a str, option: &str) -> &'a str {
    toml.lines()
        .find(|line| line.starts_with(&format!("#   {option}")))
        .unwrap_or_else(|| panic!("{option} is not listed as not imported:\n{toml}"))
}

#[test]
fn restund_example_of_the_wire_readme_imports() {
    let (toml, config) = imported(Format::Restund, RESTUND);
    assert_eq!(config.realm, "dummy.io");
    assert_eq!(
        config.listen,
        vec!["198.18.0.10:3478".parse().expect("addr")]
    );
    assert_eq!(
        config
            .relay_v4
            .map(|relay| relay.bind.to_string())
            .as_deref(),
        Some("198.18.0.10")
    );
    assert_eq!(config.max_allocations, 64_000);
    assert_eq!(config.max_lifetime.as_secs(), 3600);
    assert_eq!(config.nonce_lifetime.as_secs(), 3600);
    assert_eq!(
        config.zrest_secrets,
        vec!["brig-and-restund-share-this".to_owned()]
    );
    assert_eq!(config.metrics_listen, "127.0.0.1:8080".parse().ok());
    assert_skipped(
        &toml,
        &[
            ("tcp_listen 198.18.0.10:3478", "UDP only"),
            ("daemon no", "systemd unit"),
            ("syncinterval 600", "SIGHUP"),
            ("status_udp_addr 127.0.0.1", "GET /status"),
            ("module drain.so", "POST /drain"),
            ("module status.so", "/status"),
            ("module zrest.so", "zrest_secrets"),
            ("syslog_facility 24", "stderr"),
        ],
    );
    // The commented-out lines of the example stay comments.
    assert!(!toml.contains("5349"), "{toml}");
}

#[test]
fn restund_template_variables_left_unfilled_are_named() {
    let text = "realm dummy.io\nudp_listen {{ ansible_default_ipv4.address }}:3478\n\
                turn_relay_addr {{ ansible_default_ipv4.address }}\n";
    let (toml, config) = imported(Format::Restund, text);
    assert!(
        skipped_line(&toml, "udp_listen {{ ansible_default_ipv4.address }}:3478")
            .contains("never filled in")
    );
    // Without an address, this host's are used, and the note says so.
    assert_eq!(
        config
            .relay_v4
            .map(|relay| relay.bind.to_string())
            .as_deref(),
        Some("198.18.0.99")
    );
    assert!(toml.contains("# Note: restund relays on"), "{toml}");
}

#[test]
fn coturn_production_options_import() {
    let (toml, config) = imported(Format::Coturn, COTURN);
    assert_eq!(config.realm, "turn.example.org");
    assert_eq!(
        config.listen,
        vec![
            "198.18.0.20:3478".parse().expect("addr"),
            "[2001:2::20]:3478".parse().expect("addr")
        ]
    );
    let v4 = config.relay_v4.expect("v4 relay");
    assert_eq!(v4.bind.to_string(), "198.18.0.20");
    assert_eq!(v4.advertised.to_string(), "203.0.113.20");
    assert_eq!(
        config
            .relay_v6
            .map(|relay| relay.bind.to_string())
            .as_deref(),
        Some("2001:2::20")
    );
    assert_eq!(config.port_range, 49160..=49200);
    assert_eq!(
        config.auth_secrets,
        vec!["nextcloud-shares-this".to_owned()]
    );
    assert_eq!(config.users.len(), 2);
    assert!(matches!(&config.users[0].secret, StaticSecret::Password(p) if p == "wonderland"));
    assert!(matches!(config.users[1].secret, StaticSecret::Md5Key(key) if key[0] == 0xd2));
    assert_eq!(
        (config.max_allocations, config.max_allocations_per_user),
        (1000, 12)
    );
    assert_eq!(
        (
            config.limits.max_bytes_per_second_per_allocation,
            config.limits.max_bytes_per_second_total
        ),
        (250_000, 12_500_000)
    );
    assert_eq!(config.nonce_lifetime.as_secs(), 600);
    assert_eq!(config.channel_lifetime.as_secs(), 600);
    let deny: Vec<String> = config.peers_deny.iter().map(ToString::to_string).collect();
    assert_eq!(deny, ["10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12"]);
    assert_eq!(config.peers_allow[0].to_string(), "10.0.0.5/32");
    assert_eq!(
        config.alternate_servers,
        vec!["198.18.0.21:3478".parse().expect("addr")]
    );
    assert_eq!(config.log_level, "debug");
    assert_skipped(
        &toml,
        &[
            ("tls-listening-port 5349", "UDP only"),
            ("cert /etc/ssl/turn.pem", "UDP only"),
            ("pkey (value not shown)", "UDP only"),
            ("cli-password (value not shown)", "turn-relay ctl"),
            ("server-name turn.example.org", "no database or OAuth"),
            ("log-file /var/log/turnserver.log", "stderr"),
            ("pidfile /run/turnserver/turnserver.pid", "systemd unit"),
            ("fingerprint", "FINGERPRINT"),
        ],
    );
    assert!(!toml.contains("do-not-print-me"), "{toml}");
}

#[test]
fn coturn_shipped_debian_configuration_imports() {
    let text = match std::fs::read_to_string(DEBIAN_TURNSERVER_CONF) {
        Ok(text) => text,
        Err(error) => {
            panic!("{DEBIAN_TURNSERVER_CONF} (coturn, installed by `cargo xtask setup`): {error}")
        }
    };
    let (toml, config) = imported(Format::Coturn, &text);
    // It names no address: coturn would use every address of the host.
    assert_eq!(
        config
            .relay_v4
            .map(|relay| relay.bind.to_string())
            .as_deref(),
        Some("198.18.0.99")
    );
    assert_eq!(
        config
            .relay_v6
            .map(|relay| relay.bind.to_string())
            .as_deref(),
        Some("2001:2::99")
    );
    // Every active option of the shipped file is either imported or explained.
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let option = line.split(['=', ' ']).next().unwrap_or_default();
        assert!(
            toml.lines()
                .any(|out| out.starts_with(&format!("#   {option}"))
                    || out.starts_with(&format!("# Note: {option}"))),
            "{option} is neither imported nor explained:\n{toml}"
        );
    }
}

#[test]
fn coturn_address_ranges_become_exact_networks() {
    let (_, config) = imported(
        Format::Coturn,
        "relay-ip=198.18.0.1\ndenied-peer-ip=198.18.0.0-198.18.0.5\nallowed-peer-ip=2001:2::/64\n",
    );
    let deny: Vec<String> = config.peers_deny.iter().map(ToString::to_string).collect();
    assert_eq!(deny, ["198.18.0.0/30", "198.18.0.4/31"]);
    assert_eq!(config.peers_allow[0].to_string(), "2001:2::/64");
}
