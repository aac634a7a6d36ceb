//! The configuration parser (`daemon::config`): any text is either a configuration or a
//! `config error:` naming the file, never a panic; a valid configuration prints
//! (`--print-config`) to TOML that parses back to the same printed values (the comments
//! saying where each value came from differ: the reparsed file is their source).

use turn_relay::daemon::config::Config;

/// The name errors give the fuzzed file.
const SOURCE: &str = "fuzz.toml";

pub fn run(data: &[u8]) {
    // Configuration files are read as UTF-8 text; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, SOURCE) {
        Ok(config) => config,
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("config error: {SOURCE}")),
                "an error that does not name the file: {message}"
            );
            return;
        }
    };
    let printed = config.to_toml();
    // A pre-hashed key prints as a placeholder that is not a key, on purpose.
    if printed.contains("key = \"<redacted>\"") {
        return;
    }
    let reparsed = Config::parse(&printed, SOURCE).unwrap_or_else(|error| {
        panic!("the printed configuration does not parse: {error}\n{printed}")
    });
    assert_eq!(
        values(&reparsed.to_toml()),
        values(&printed),
        "printing is not stable:\n{printed}"
    );
}

/// The keys and values of a printed configuration, without its comments.
fn values(printed: &str) -> toml::Table {
    toml::from_str(printed)
        .unwrap_or_else(|error| panic!("the printed configuration is not TOML: {error}\n{printed}"))
}

pub fn seeds() -> Vec<Vec<u8>> {
    let reference = include_str!("../../../config/turn-relay.toml");
    let full = r#"
[server]
realm = "example.org"
listen = ["198.18.0.1:3478", "[2001:db8::1]:3478"]
relay_address = "198.18.0.1"
public_address = "203.0.113.7"
relay_address_v6 = "2001:db8::1"
port_range = "50000-50999"
max_allocations = 1000
threads = 2

[auth]
users = [{ name = "alice", password = "pw" }]
auth_secrets = ["s1"]
nonce_secret = "shared"

[peers]
allow = ["10.0.0.0/8"]
deny = ["192.0.2.1"]

[limits]
max_permissions_per_allocation = 20
unauthenticated_answers_per_second = 0

[xdp]
mode = "off"

[metrics]
listen = ""

[log]
level = "debug"
format = "json"
"#;
    [reference, full, "[server]\nrelay_address = \"127.0.0.1\"\n"]
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .collect()
}
