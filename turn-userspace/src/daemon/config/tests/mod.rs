//! Tests of the configuration, one file per concern; the fixtures they share here.

use std::net::Ipv4Addr;

use super::keys::{Key, Reload, KEYS};
use super::*;

const REFERENCE: &str = include_str!("../../../../../config/turn-relay.toml");
const MINIMAL: &str = "[server]\nrelay_address = \"198.18.0.1\"\n";

/// Every key of the schema, in use (optional keys set).
const FULL: &str = r#"
[server]
realm = "example.org"
software = "turn-relay"
listen = ["198.18.0.1:3478", "[2001:db8::1]:3478"]
relay_address = "198.18.0.1"
public_address = "203.0.113.7"
relay_address_v6 = "2001:db8::1"
public_address_v6 = "2001:db8::7"
port_range = "50000-50999"
default_lifetime = 300
max_lifetime = 1200
max_allocations = 1000
max_allocations_per_user = 10
threads = 3
permission_lifetime = 200
channel_lifetime = 400
alternate_servers = ["198.18.0.2:3478", "198.18.0.3"]
drain_exit = true
drain_timeout = 120

[auth]
users = [{ name = "alice", password = "pw" }, { name = "bob", key = "0xd2f83184ee1f747bd65e579c334b9b55" }]
auth_secrets = ["s1", "s2"]
zrest_secrets = ["z0"]
nonce_lifetime = 60
nonce_secret = "shared"
advertise_password_algorithms = false

[peers]
allow = ["10.0.0.0/8"]
deny = ["198.18.5.0/24", "192.0.2.1"]

[limits]
max_permissions_per_allocation = 20
max_channels_per_allocation = 30
max_peers_per_request = 8
credential_expiry_grace = 0
unauthenticated_answers_per_second = 0
unauthenticated_answers_burst = 7
max_cached_responses_per_user = 100
max_bytes_per_second_per_allocation = 250000
max_bytes_per_second_total = 125000000

[xdp]
mode = "skb"
interfaces = ["eth0"]

[metrics]
listen = ""

[admin]
token = "admin-secret"

[log]
level = "debug"
format = "json"

[tcp]
enabled = true
listen = ["198.18.0.1:80"]
proxy_protocol = true

[tls]
listen = ["198.18.0.1:443"]
cert = "/etc/turn-relay/fullchain.pem"
key = "/etc/turn-relay/privkey.pem"
proxy_protocol = false

[connections]
handshake_timeout = 5
idle_timeout = 30
max = 1000
max_per_ip = 10
max_message_size = 4096
write_buffer = 65536

[proxy_protocol]
allow_from = ["198.18.9.0/24"]
"#;

fn error_of(text: &str) -> String {
    match Config::parse(text, "test.toml") {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// Asserts that each text fails with an error containing its expected part.
fn assert_errors(table: &[(&str, &str)]) {
    for (text, expected) in table {
        let error = error_of(text);
        assert!(
            error.contains(expected),
            "for {text:?}\n  got  {error}\n  want {expected}"
        );
    }
}

/// The printed configuration as TOML tables.
fn printed(config: &Config) -> toml::Table {
    let text = config.to_toml();
    text.parse()
        .unwrap_or_else(|error| panic!("printed config parses: {error}\n{text}"))
}

/// A configuration file with `text` in a fresh temporary directory.
fn file_with(text: &str) -> (std::path::PathBuf, Sources) {
    let directory = std::env::temp_dir().join(format!(
        "turn-relay-config-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&directory).expect("temporary directory");
    let path = directory.join("turn-relay.toml");
    std::fs::write(&path, text).expect("write config");
    let sources = Sources {
        file: Some(path.clone()),
        ..Sources::default()
    };
    (path, sources)
}

fn error_of_sources(sources: &Sources) -> String {
    match Config::from_sources(sources) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

mod parse;
mod reference;
mod reload;
mod sources;

/// A valid value, written the same in a file and in the environment, for a
/// `connections.*` key (the tests that set every key share these).
fn connections_test_value(key: &str) -> Option<&'static str> {
    Some(match key {
        "connections.handshake_timeout" => "5",
        "connections.idle_timeout" => "30",
        "connections.max" => "100",
        "connections.max_per_ip" => "10",
        "connections.max_message_size" => "2000",
        "connections.write_buffer" => "8192",
        _ => return None,
    })
}
