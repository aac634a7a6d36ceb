use std::net::Ipv4Addr;

use super::keys::{Key, Reload, KEYS};
use super::*;

const REFERENCE: &str = include_str!("../../../../config/turn-relay.toml");
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

#[test]
fn reference_config_in_the_repository_parses() {
    let config = Config::parse(REFERENCE, "config/turn-relay.toml").expect("reference is valid");
    assert_eq!(config.realm, "turn-relay.local");
    assert_eq!(config.xdp_mode, XdpMode::Auto);
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn reference_config_documents_every_key() {
    let full = printed(&Config::parse(FULL, "full").expect("full config is valid"));
    let mut checked = 0;
    for (section, keys) in &full {
        let keys = keys.as_table().expect("every top-level key is a table");
        let start = REFERENCE
            .find(&format!("\n[{section}]\n"))
            .unwrap_or_else(|| panic!("[{section}] missing from config/turn-relay.toml"));
        let end = REFERENCE[start + 1..]
            .find("\n[")
            .map_or(REFERENCE.len(), |next| start + 1 + next);
        let body = &REFERENCE[start..end];
        for key in keys.keys() {
            let documented = body.lines().any(|line| {
                line.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))
            });
            assert!(
                documented,
                "{section}.{key} is not documented in config/turn-relay.toml"
            );
            checked += 1;
        }
    }
    // token_file is the other way to give the token (both at once are refused).
    assert!(
        REFERENCE.contains("# token_file = "),
        "admin.token_file is not documented"
    );
    assert_eq!(
        checked + 1,
        KEYS.len(),
        "every key of the schema is checked"
    );
}

/// Each `# key = value` line of the reference file shows the default, except for the keys
/// whose default is "unset" or "none" (their line is an example).
#[test]
fn reference_config_shows_the_real_defaults() {
    const EXAMPLES: &[&str] = &[
        "server.relay_address_v6",
        "server.public_address",
        "server.public_address_v6",
        "auth.users",
        "auth.auth_secrets",
        "auth.zrest_secrets",
        "auth.nonce_secret",
        "server.alternate_servers",
        "admin.token",
        "admin.token_file",
        "peers.allow",
        "peers.deny",
        "tls.cert",
        "tls.key",
        "tls.listen",
        "proxy_protocol.allow_from",
    ];
    let effective = printed(&Config::parse(REFERENCE, "reference").expect("valid"));
    let mut section = String::new();
    let mut compared = Vec::new();
    for line in REFERENCE.lines() {
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').to_owned();
            continue;
        }
        let Some(commented) = line.strip_prefix("# ") else {
            continue;
        };
        // Only lines that are TOML assignments on their own (not prose, not the start of
        // a multi-line example).
        let Ok(assignment) = commented.parse::<toml::Table>() else {
            continue;
        };
        for (key, documented) in assignment {
            let name = format!("{section}.{key}");
            if EXAMPLES.contains(&name.as_str()) {
                continue;
            }
            let actual = effective
                .get(&section)
                .and_then(|table| table.get(&key))
                .unwrap_or_else(|| panic!("{name} is documented but not printed"));
            assert_eq!(
                actual, &documented,
                "config/turn-relay.toml documents {name} = {documented} but the default is {actual}"
            );
            compared.push(name);
        }
    }
    for key in [
        "server.realm",
        "server.port_range",
        "server.max_allocations",
        "server.default_lifetime",
        "server.threads",
        "auth.nonce_lifetime",
        "metrics.listen",
        "log.format",
        "limits.max_permissions_per_allocation",
        "limits.max_channels_per_allocation",
        "limits.max_peers_per_request",
        "limits.credential_expiry_grace",
        "limits.unauthenticated_answers_per_second",
        "limits.unauthenticated_answers_burst",
        "limits.max_cached_responses_per_user",
        "limits.max_bytes_per_second_per_allocation",
        "limits.max_bytes_per_second_total",
    ] {
        assert!(
            compared.iter().any(|name| name == key),
            "{key} not compared"
        );
    }
}

#[test]
fn core_knobs_default_to_the_core_defaults() {
    let config = Config::parse(MINIMAL, "test.toml").expect("valid");
    let server = config.server_config();
    let core = ServerConfig::default();
    assert_eq!(server.realm, core.realm);
    assert_eq!(server.software, core.software);
    assert_eq!(server.port_range, core.port_range);
    assert_eq!(server.default_lifetime, core.default_lifetime);
    assert_eq!(server.max_lifetime, core.max_lifetime);
    assert_eq!(server.max_allocations, core.max_allocations);
    assert_eq!(
        server.max_allocations_per_user,
        core.max_allocations_per_user
    );
    assert_eq!(server.permission_lifetime, core.permission_lifetime);
    assert_eq!(server.channel_lifetime, core.channel_lifetime);
    // The values the README and the reference file document.
    assert_eq!(core.realm, "turn-relay.local");
    assert_eq!(core.max_allocations, 16_384);
    // One set of defaults for the [limits] too.
    assert_eq!(config.server_limits(), ServerLimits::default());
    let xdp = config.xdp_settings(Vec::new());
    assert_eq!(
        (
            xdp.max_permissions_per_allocation as usize,
            xdp.max_channels_per_allocation as usize
        ),
        (
            ServerLimits::default().max_permissions_per_allocation,
            ServerLimits::default().max_channels_per_allocation
        )
    );
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = Config::parse(MINIMAL, "test.toml").expect("valid");
    let relay: IpAddr = "198.18.0.1".parse().expect("ip");
    assert_eq!(config.listen, vec![SocketAddr::new(relay, 3478)]);
    assert_eq!(
        config.relay_v4,
        Some(RelayAddressConfig {
            bind: relay,
            advertised: relay
        })
    );
    assert_eq!(config.relay_v6, None);
    assert_eq!(config.threads, 0);
    assert_eq!(config.nonce_lifetime, Duration::from_secs(3600));
    assert_eq!(config.nonce_secret.len(), 32);
    assert!(!config.nonce_secret_configured);
    assert!(config.advertise_password_algorithms);
    assert_eq!(config.log_level, "info");
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!(config.metrics_listen, "127.0.0.1:9641".parse().ok());
    assert!(config.software.is_none());
    assert!(config.demo_credentials().is_none());
}

#[test]
fn full_config_round_trips_every_key() {
    let config = Config::parse(FULL, "test.toml").expect("valid");
    assert_eq!(config.realm, "example.org");
    assert_eq!(config.software.as_deref(), Some("turn-relay"));
    assert_eq!(config.listen.len(), 2);
    assert_eq!(
        config.relay_v4.map(|r| r.advertised.to_string()),
        Some("203.0.113.7".into())
    );
    assert_eq!(
        config.relay_v6.map(|r| r.bind.to_string()),
        Some("2001:db8::1".into())
    );
    assert_eq!(config.port_range, 50000..=50999);
    assert_eq!(config.default_lifetime, Duration::from_secs(300));
    assert_eq!(config.max_lifetime, Duration::from_secs(1200));
    assert_eq!(
        (config.max_allocations, config.max_allocations_per_user),
        (1000, 10)
    );
    assert_eq!(config.threads, 3);
    assert_eq!(config.permission_lifetime, Duration::from_secs(200));
    assert_eq!(config.channel_lifetime, Duration::from_secs(400));
    assert_eq!(config.users.len(), 2);
    assert!(matches!(config.users[1].secret, StaticSecret::Md5Key(k) if k[0] == 0xd2));
    assert_eq!(config.auth_secrets.len(), 2);
    assert_eq!(config.zrest_secrets.len(), 1);
    assert_eq!(config.nonce_lifetime, Duration::from_secs(60));
    assert_eq!(config.nonce_secret, b"shared");
    assert!(!config.advertise_password_algorithms);
    assert_eq!(config.peers_deny[1].to_string(), "192.0.2.1/32");
    assert_eq!(config.xdp_mode, XdpMode::Skb);
    assert_eq!(config.xdp_interfaces, vec!["eth0".to_owned()]);
    assert_eq!(config.metrics_listen, None);
    assert_eq!(config.log_level, "debug");
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(
        config.alternate_servers,
        vec![
            "198.18.0.2:3478".parse().expect("addr"),
            "198.18.0.3:3478".parse().expect("addr")
        ]
    );
    assert!(config.drain_exit);
    assert_eq!(config.drain_timeout, Duration::from_secs(120));
    assert_eq!(config.admin_token.as_deref(), Some("admin-secret"));
    assert_eq!(
        config.server_limits(),
        ServerLimits {
            max_permissions_per_allocation: 20,
            max_channels_per_allocation: 30,
            max_peers_per_request: 8,
            credential_expiry_grace: Duration::ZERO,
            unauthenticated_answers_per_second: 0,
            unauthenticated_answers_burst: 7,
            max_cached_responses_per_user: 100,
            max_bytes_per_second_per_allocation: 250_000,
            max_bytes_per_second_total: 125_000_000,
        }
    );
    let xdp = config.xdp_settings(vec!["eth0".into()]);
    assert_eq!(
        (
            xdp.max_allocations,
            xdp.max_permissions_per_allocation,
            xdp.max_channels_per_allocation
        ),
        (1000, 20, 30)
    );

    let printed = config.to_toml();
    for secret in [
        "\"pw\"",
        "s1",
        "s2",
        "z0",
        "shared",
        "d2f83184",
        "admin-secret",
    ] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    for shown in [
        "port_range = \"50000-50999\"",
        "public_address_v6 = \"2001:db8::7\"",
        "name = \"bob\"",
        "deny = [\n    \"198.18.5.0/24\",\n    \"192.0.2.1/32\",\n]",
        "mode = \"skb\"",
        "format = \"json\"",
        "max_channels_per_allocation = 30",
        "credential_expiry_grace = 0",
    ] {
        assert!(printed.contains(shown), "{shown} missing:\n{printed}");
    }
}

#[test]
fn errors_name_file_line_and_key() {
    assert_errors(&[
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"70000-1\"\n",
            "config error: test.toml line 3: server.port_range: \"70000-1\" is not a port range",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"60000-50000\"\n",
            "config error: test.toml line 3: server.port_range: \"60000-50000\" is not a port range",
        ),
        ("[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"0-100\"\n", "line 3: server.port_range: \"0-100\" is not a port range"),
        ("[server]\nrelay_address = \"198.18.0.1\"\nprot = 1\n", "config error: test.toml line 3: server.prot: unknown field `prot`"),
        ("[servr]\n", "config error: test.toml line 1: servr: unknown field `servr`"),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nmax_lifetime = \"long\"\n",
            "config error: test.toml line 3: server.max_lifetime: invalid type: string \"long\"",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\ndefault_lifetime = 4000\n",
            "line 3: server.default_lifetime: default_lifetime (4000 s) is longer than max_lifetime (3600 s)",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nmax_lifetime = 300\n",
            "line 3: server.max_lifetime: default_lifetime (600 s) is longer than max_lifetime (300 s)",
        ),
        ("[server]\nrelay_address = \"::1\"\n", "line 2: server.relay_address: \"::1\" is not an IPv4 address"),
        ("[server]\nrelay_address = \"0.0.0.0\"\n", "line 2: server.relay_address: \"0.0.0.0\" must be a concrete address"),
        ("[server]\nrelay_address_v6 = \"198.18.0.1\"\n", "line 2: server.relay_address_v6: \"198.18.0.1\" is not an IPv6 address"),
        ("[server]\nrelay_address = \"198.18.0.1\"\npublic_address = \"224.0.0.1\"\n", "line 3: server.public_address: \"224.0.0.1\" cannot be advertised"),
        ("[server]\nrealm = \"x\"\n", "config error: test.toml: server.relay_address: set relay_address"),
        ("[server]\npublic_address = \"203.0.113.1\"\n", "server.relay_address: server.public_address is set but server.relay_address is not"),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\n  \"198.18.0.1:3478\",\n  \"nonsense\",\n]\n",
            "line 5: server.listen: \"nonsense\" is not an ip:port address",
        ),
        ("[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\"0.0.0.0:3478\"]\n", "line 3: server.listen: 0.0.0.0:3478 is a wildcard address"),
        ("[server]\nrelay_address = \"198.18.0.1\"\nlisten = []\n", "server.listen: at least one address is needed"),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\"198.18.0.1:3478\",\n  \"198.18.0.1:3478\"]\n",
            "line 4: server.listen: 198.18.0.1:3478 is listed twice",
        ),
        ("[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\"198.18.0.1:3478\", 7]\n", "line 3: server.listen: invalid type: integer `7`"),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\n[peers]\nallow = [\"10.0.0.0/33\"]\n",
            "line 4: peers.allow: \"10.0.0.0/33\" is not a CIDR network",
        ),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[xdp]\nmode = \"fast\"\n", "line 4: xdp.mode: \"fast\" is not one of"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[xdp]\ninterfaces = [\"eth0\", \"\"]\n", "line 4: xdp.interfaces: \"\" is not an interface name"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[xdp]\ninterfaces = [\"a-very-long-interface-name\"]\n", "line 4: xdp.interfaces:"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[metrics]\nlisten = \"9641\"\n", "line 4: metrics.listen: \"9641\" is not an ip:port"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[log]\nlevel = \"loud=[\"\n", "line 4: log.level: \"loud=[\" is not a log level"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[log]\nformat = \"xml\"\n", "line 4: log.format: \"xml\" is not one of \"text\", \"json\""),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nusers = [{ name = \"a\" }]\n",
            "line 4: auth.users: user \"a\" needs a password or a key",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nusers = [{ name = \"a\", key = \"abc\" }]\n",
            "line 4: auth.users: key must be 32 hex digits",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nusers = [{ name = \"a\", password = \"x\" },\n  { name = \"a\", password = \"y\" }]\n",
            "line 5: auth.users: user \"a\" is listed twice",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nusers = [{ name = \"a\", passwd = \"x\" }]\n",
            "line 4: auth.users.passwd: unknown field `passwd`",
        ),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nauth_secrets = [\"\"]\n", "line 4: auth.auth_secrets: secrets and passwords must not be empty"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nnonce_secret = \"\"\n", "line 4: auth.nonce_secret: secrets and passwords must not be empty"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nnonce_lifetime = -5\n", "line 4: auth.nonce_lifetime: invalid value: integer `-5`"),
        ("[server]\nrelay_address = \"198.18.0.1\"\nrealm = \"a\\\"b\"\n", "line 3: server.realm:"),
        ("[server]\nrelay_address = \"198.18.0.1\"\nchannel_lifetime = \"1m\"\n", "line 3: server.channel_lifetime: invalid type: string"),
    ]);
}

/// Syntax errors: the document does not parse, and the key is still named.
#[test]
fn syntax_errors_name_their_line_and_key() {
    assert_errors(&[
        ("[server\n", "config error: test.toml line 1: (top level): invalid table header"),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nthreads = 1\nthreads = 2\n",
            "line 4: server.threads: duplicate key `threads` in table `server`",
        ),
        ("[server]\nrelay_address = \"198.18.0.1\"\nrealm = \"unterminated\n", "line 3: server.realm:"),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\n  \"198.18.0.1:3478\",\n  \"x\" \"y\",\n]\n",
            "line 5: server.listen:",
        ),
        ("[auth]\nusers = [{ name = \"a\", password = }]\n", "line 2: auth.users:"),
        ("top = =\n", "line 1: top:"),
    ]);
}

/// Issue 8 item 11: every number has bounds, and a value outside them (even one TOML
/// cannot hold) is an error naming the key, never a panic, an overflow or a clamp.
#[test]
fn numbers_out_of_bounds_are_errors_naming_the_key() {
    let base = "[server]\nrelay_address = \"198.18.0.1\"\n";
    let in_server = |line: &str| format!("{base}{line}\n");
    let in_section = |section: &str, line: &str| format!("{base}[{section}]\n{line}\n");
    let cases = [
        // Larger than TOML's i64: the toml parser refuses it, the key is still named.
        (
            in_server("default_lifetime = 18446744073709551615"),
            "line 3: server.default_lifetime: number too large",
        ),
        (
            in_server("max_allocations = 99999999999999999999999"),
            "line 3: server.max_allocations: number too large",
        ),
        (
            in_server("default_lifetime = 9223372036854775807"),
            "line 3: server.default_lifetime: 9223372036854775807 is not between 1 and 86400 seconds",
        ),
        (
            in_server("max_lifetime = 86401"),
            "line 3: server.max_lifetime: 86401 is not between 1 and 86400 seconds",
        ),
        (
            in_server("default_lifetime = 0"),
            "line 3: server.default_lifetime: 0 is not between 1 and 86400 seconds",
        ),
        (
            in_server("permission_lifetime = 0"),
            "line 3: server.permission_lifetime: 0 is not between 1 and 86400 seconds",
        ),
        (
            in_server("channel_lifetime = 4294967296"),
            "line 3: server.channel_lifetime: 4294967296 is not between 1 and 86400 seconds",
        ),
        (
            in_server("threads = 100000"),
            "line 3: server.threads: 100000 is not between 0 and 1024",
        ),
        (
            in_server("threads = -1"),
            "line 3: server.threads: invalid value: integer `-1`",
        ),
        (
            in_server("max_allocations = 0"),
            "line 3: server.max_allocations: 0 is not between 1 and 4194304",
        ),
        (
            in_server("max_allocations = 4294967296"),
            "line 3: server.max_allocations: 4294967296 is not between 1 and 4194304",
        ),
        (
            in_server("max_allocations_per_user = 5000000"),
            "line 3: server.max_allocations_per_user: 5000000 is not between 0 and 4194304",
        ),
        (
            in_server("port_range = \"1-65536\""),
            "line 3: server.port_range: \"1-65536\" is not a port range",
        ),
        (
            in_server("listen = [\"198.18.0.1:0\"]"),
            "line 3: server.listen: 198.18.0.1:0 has no port",
        ),
        (
            in_server("listen = [\"198.18.0.1:65536\"]"),
            "line 3: server.listen: \"198.18.0.1:65536\" is not an ip:port address",
        ),
        (
            in_section("auth", "nonce_lifetime = 0"),
            "line 4: auth.nonce_lifetime: 0 is not between 1 and 86400 seconds",
        ),
        (
            in_section("auth", "nonce_lifetime = 18446744073709551615"),
            "line 4: auth.nonce_lifetime: number too large",
        ),
        (
            in_section("limits", "max_permissions_per_allocation = 0"),
            "line 4: limits.max_permissions_per_allocation: 0 is not between 1 and 256",
        ),
        (
            in_section("limits", "max_channels_per_allocation = 257"),
            "line 4: limits.max_channels_per_allocation: 257 is not between 1 and 256",
        ),
        (
            in_section("limits", "max_peers_per_request = 1000"),
            "line 4: limits.max_peers_per_request: 1000 is not between 1 and 256",
        ),
        (
            in_section("limits", "credential_expiry_grace = 3601"),
            "line 4: limits.credential_expiry_grace: 3601 is not between 0 and 3600 seconds",
        ),
        (
            in_section("limits", "credential_expiry_grace = -1"),
            "line 4: limits.credential_expiry_grace: invalid value: integer `-1`",
        ),
        (
            in_section("limits", "unauthenticated_answers_per_second = 4294967296"),
            "line 4: limits.unauthenticated_answers_per_second: 4294967296 is not between 0 and 1000000",
        ),
        (
            in_section("limits", "unauthenticated_answers_burst = 0"),
            "line 4: limits.unauthenticated_answers_burst: 0 is not between 1 and 100000",
        ),
        (
            in_section("limits", "max_cached_responses_per_user = 65537"),
            "line 4: limits.max_cached_responses_per_user: 65537 is not between 1 and 65536",
        ),
        (
            in_section("limits", "max_bytes_per_second_per_allocation = 100000000001"),
            "line 4: limits.max_bytes_per_second_per_allocation: 100000000001 is not between 0 and 100000000000",
        ),
        (
            in_section("limits", "max_bytes_per_second_total = -1"),
            "line 4: limits.max_bytes_per_second_total: invalid value: integer `-1`",
        ),
        (
            in_section("limits", "max_permissions = 5"),
            "line 4: limits.max_permissions: unknown field `max_permissions`",
        ),
        (
            in_section("metrics", "listen = \"127.0.0.1:0\""),
            "line 4: metrics.listen: 127.0.0.1:0 has no port",
        ),
        (
            in_server(&format!("realm = \"{}\"", "r".repeat(128))),
            "line 3: server.realm:",
        ),
        (
            in_server(&format!("software = \"{}\"", "s".repeat(128))),
            "line 3: server.software:",
        ),
    ];
    for (text, expected) in &cases {
        let error = error_of(text);
        assert!(
            error.contains(expected),
            "for {text:?}\n  got  {error}\n  want {expected}"
        );
    }
    // The largest values within the bounds are accepted as they are.
    let config = Config::parse(
        &format!(
            "{base}default_lifetime = 86400\nmax_lifetime = 86400\nmax_allocations = 4194304\n\
             max_allocations_per_user = 4194304\nthreads = 1024\npermission_lifetime = 86400\n\
             channel_lifetime = 86400\nport_range = \"1-65535\"\nlisten = [\"198.18.0.2:3478\"]\n\
             [auth]\nnonce_lifetime = 86400\n[metrics]\nlisten = \"\"\n\
             [limits]\nmax_permissions_per_allocation = 256\nmax_channels_per_allocation = 256\n\
             max_peers_per_request = 256\ncredential_expiry_grace = 3600\n\
             unauthenticated_answers_per_second = 1000000\nunauthenticated_answers_burst = 100000\n\
             max_cached_responses_per_user = 65536\n"
        ),
        "test.toml",
    )
    .expect("the bounds themselves are valid");
    assert_eq!(config.max_allocations, 4_194_304);
    assert_eq!(config.threads, 1024);
    assert_eq!(config.xdp_settings(Vec::new()).max_allocations, 4_194_304);
    assert_eq!(config.default_lifetime, Duration::from_secs(86_400));
    assert_eq!(config.limits.max_cached_responses_per_user, 65_536);
    assert_eq!(config.limits.unauthenticated_answers_per_second, 1_000_000);
    assert_eq!(
        config.limits.credential_expiry_grace,
        Duration::from_secs(3600)
    );
    assert_eq!(
        config.xdp_settings(Vec::new()).max_channels_per_allocation,
        256
    );
}

#[test]
fn embedded_default_is_a_loopback_demo() {
    let config = Config::embedded_default();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(config.source, "embedded default");
    assert_eq!(config.listen, vec![SocketAddr::new(loopback, 3478)]);
    assert_eq!(config.relay_v4.map(|r| r.bind), Some(loopback));
    assert_eq!(config.realm, "turn-relay.local");
    assert_eq!(config.xdp_mode, XdpMode::Auto);
    assert_eq!(config.metrics_listen, "127.0.0.1:9641".parse().ok());
    let (name, password) = config.demo_credentials().expect("demo user");
    assert_eq!(name, "demo");
    assert_eq!(password.len(), 16);
    assert_ne!(
        password,
        Config::embedded_default()
            .demo_credentials()
            .expect("demo")
            .1
    );
    // A loopback client may relay to a loopback peer; the metadata address stays denied.
    let policy = config.peer_policy();
    assert!(policy.check("127.0.0.1".parse().expect("ip")).is_ok());
    assert!(policy
        .check("169.254.169.254".parse().expect("ip"))
        .is_err());
    // The embedded default survives a print/parse round trip.
    let printed = config.to_toml();
    assert!(!printed.contains(password));
    Config::parse(&printed, "printed").expect("printed default parses");
}

#[test]
fn server_config_carries_the_relay_settings() {
    let config = Config::parse(
        "[server]\nrelay_address = \"198.18.0.1\"\npublic_address = \"203.0.113.7\"\nport_range = \"50000-50100\"\nmax_allocations_per_user = 3\n",
        "test.toml",
    )
    .expect("valid");
    let server = config.server_config();
    let relay = server.relay_v4.expect("v4 relay");
    assert_eq!(relay.bind.to_string(), "198.18.0.1");
    assert_eq!(relay.advertised.to_string(), "203.0.113.7");
    assert!(server.relay_v6.is_none());
    assert_eq!(server.port_range, 50000..=50100);
    assert_eq!(server.default_lifetime, Duration::from_secs(600));
    assert_eq!(server.max_allocations_per_user, 3);
    assert_eq!(server.permission_lifetime, Duration::from_secs(300));
    assert_eq!(server.channel_lifetime, Duration::from_secs(600));
}

#[test]
fn short_permission_and_channel_lifetimes_reach_the_core() {
    // Shorter channels than permissions are allowed (coturn allows it too).
    let config = Config::parse(
        "[server]\nrelay_address = \"198.18.0.1\"\npermission_lifetime = 5\nchannel_lifetime = 3\n",
        "test.toml",
    )
    .expect("valid");
    let server = config.server_config();
    assert_eq!(server.permission_lifetime, Duration::from_secs(5));
    assert_eq!(server.channel_lifetime, Duration::from_secs(3));
    let printed = config.to_toml();
    assert!(printed.contains("permission_lifetime = 5"), "{printed}");
    assert!(printed.contains("channel_lifetime = 3"), "{printed}");
    let reparsed = Config::parse(&printed, "printed").expect("printed config parses");
    assert_eq!(reparsed.permission_lifetime, Duration::from_secs(5));
    assert_eq!(reparsed.channel_lifetime, Duration::from_secs(3));
}

#[test]
fn authenticator_knows_the_configured_users() {
    let config = Config::embedded_default();
    let auth = config.authenticator();
    let credential = auth
        .credential("demo", &config.realm, 0)
        .expect("demo user");
    assert_eq!(credential.username(), "demo");
    assert!(auth.credential("nobody", &config.realm, 0).is_err());
}

/// Sources with `environment` variables and no file.
fn environment(variables: &[(&str, &str)]) -> Sources {
    Sources {
        file: None,
        environment: variables
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        command_line: Vec::new(),
    }
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

#[test]
fn every_key_has_an_environment_variable_that_overrides_it() {
    let token_file = file_with("from-a-file\n").0;
    // One value per key, as an operator would write it in a container's environment.
    let values: Vec<(&Key, String)> = KEYS
        .iter()
        .map(|key| {
            let value = match key.dotted().as_str() {
                "server.realm" => "env.example",
                "server.software" => "relay-from-env",
                "server.listen" => "198.18.0.1:3478, 198.18.0.1:3479",
                "server.relay_address" => "198.18.0.1",
                "server.relay_address_v6" => "2001:2::1",
                "server.public_address" => "198.18.9.9",
                "server.public_address_v6" => "2001:2::9",
                "server.port_range" => "50000-50010",
                "server.default_lifetime" => "100",
                "server.max_lifetime" => "200",
                "server.max_allocations" => "77",
                "server.max_allocations_per_user" => "7",
                "server.threads" => "2",
                "server.permission_lifetime" => "30",
                "server.channel_lifetime" => "40",
                "server.alternate_servers" => "198.18.0.2:3478,198.18.0.3:3478",
                "server.drain_exit" => "true",
                "server.drain_timeout" => "60",
                "auth.users" => "alice:pw1,bob:0xd2f83184ee1f747bd65e579c334b9b55",
                "auth.auth_secrets" => "s1,s2",
                "auth.zrest_secrets" => "z1",
                "auth.nonce_lifetime" => "90",
                "auth.nonce_secret" => "shared-by-the-group",
                "auth.advertise_password_algorithms" => "false",
                "peers.allow" => "198.18.0.0/15",
                "peers.deny" => "198.18.5.0/24",
                "limits.max_permissions_per_allocation" => "20",
                "limits.max_channels_per_allocation" => "30",
                "limits.max_peers_per_request" => "8",
                "limits.credential_expiry_grace" => "0",
                "limits.unauthenticated_answers_per_second" => "0",
                "limits.unauthenticated_answers_burst" => "7",
                "limits.max_cached_responses_per_user" => "100",
                "limits.max_bytes_per_second_per_allocation" => "250000",
                "limits.max_bytes_per_second_total" => "0",
                "xdp.mode" => "off",
                "xdp.interfaces" => "eth1,eth2",
                "xdp.trace" => "true",
                "metrics.listen" => "127.0.0.1:9700",
                "admin.token" => "",
                "admin.token_file" => token_file.to_str().expect("utf-8 path"),
                "log.level" => "debug",
                "log.format" => "json",
                "tcp.enabled" => "true",
                "tcp.listen" => "198.18.0.1:80",
                "tcp.proxy_protocol" => "true",
                "tls.cert" => "/etc/turn-relay/cert.pem",
                "tls.key" => "/etc/turn-relay/key.pem",
                "tls.listen" => "198.18.0.1:443",
                "tls.proxy_protocol" => "false",
                "connections.handshake_timeout" => "5",
                "connections.idle_timeout" => "30",
                "connections.max" => "100",
                "connections.max_per_ip" => "10",
                "connections.max_message_size" => "2000",
                "connections.write_buffer" => "8192",
                "proxy_protocol.allow_from" => "198.18.9.0/24",
                other => panic!("no test value for {other}"),
            };
            (key, value.to_owned())
        })
        // admin.token and admin.token_file exclude each other: the file is tested here.
        .filter(|(key, _)| key.dotted() != "admin.token")
        .collect();
    let variables: Vec<(String, String)> = values
        .iter()
        .map(|(key, value)| (key.environment_variable(), value.clone()))
        .collect();
    let sources = Sources {
        environment: variables,
        ..Sources::default()
    };
    let config = Config::from_sources(&sources).expect("every variable is valid");
    assert_eq!(config.source, "environment");
    assert!(config.demo_credentials().is_none(), "no demo user from env");
    assert_eq!(config.realm, "env.example");
    assert_eq!(config.listen.len(), 2);
    assert_eq!(config.users.len(), 2);
    assert!(matches!(config.users[1].secret, StaticSecret::Md5Key(k) if k[0] == 0xd2));
    assert_eq!(config.auth_secrets, vec!["s1".to_owned(), "s2".to_owned()]);
    assert_eq!(
        config.xdp_interfaces,
        vec!["eth1".to_owned(), "eth2".to_owned()]
    );
    assert!(config.xdp_trace);
    assert_eq!(config.admin_token.as_deref(), Some("from-a-file"));
    assert!(config.drain_exit);
    assert_eq!(config.alternate_servers.len(), 2);
    assert!(!config.advertise_password_algorithms);
    assert_eq!(config.limits.max_channels_per_allocation, 30);
    assert_eq!(config.limits.unauthenticated_answers_burst, 7);
    assert_eq!(config.limits.max_bytes_per_second_per_allocation, 250_000);
    // Every key says it came from its variable.
    let printed = config.to_toml();
    for (key, _) in &values {
        let variable = key.environment_variable();
        assert_eq!(
            config.origins.get(&key.dotted()),
            Some(&Origin::Environment {
                variable: variable.clone()
            }),
            "{}",
            key.dotted()
        );
        assert!(
            printed.contains(&format!("environment {variable}\n")),
            "{variable} not shown:\n{printed}"
        );
    }
    Config::parse(
        &printed.replace("\"<redacted>\"", "\"x\"").replace(
            "key = \"x\"",
            "key = \"0xd2f83184ee1f747bd65e579c334b9b55\"",
        ),
        "printed",
    )
    .expect("the annotated print parses again");
}

#[test]
fn precedence_is_file_then_environment_then_command_line() {
    let (path, mut sources) =
        file_with("[server]\nrelay_address = \"198.18.0.1\"\nrealm = \"from.file\"\nmax_allocations = 10\n[log]\nlevel = \"warn\"\n");
    sources.environment = vec![
        ("TURN_RELAY_SERVER_REALM".to_owned(), "from.env".to_owned()),
        ("TURN_RELAY_LOG_LEVEL".to_owned(), "debug".to_owned()),
    ];
    sources.set("--realm", "server.realm", "from.command.line");
    let config = Config::from_sources(&sources).expect("valid");
    assert_eq!(config.realm, "from.command.line");
    assert_eq!(config.log_level, "debug");
    assert_eq!(config.max_allocations, 10);
    let printed = config.to_toml();
    let file = path.display().to_string();
    for line in [
        "realm = \"from.command.line\" # command line --realm".to_owned(),
        "level = \"debug\" # environment TURN_RELAY_LOG_LEVEL".to_owned(),
        format!("max_allocations = 10 # {file} line 4"),
        format!("relay_address = \"198.18.0.1\" # {file} line 2"),
        "port_range = \"49152-65535\" # default".to_owned(),
    ] {
        assert!(
            printed.lines().any(|printed| printed == line),
            "missing {line:?} in\n{printed}"
        );
    }
    assert!(printed.contains("file < environment (TURN_RELAY_<SECTION>_<KEY>) < command line"));
}

#[test]
fn environment_and_command_line_errors_name_their_source() {
    let (_, mut sources) = file_with(MINIMAL);
    sources.environment = vec![(
        "TURN_RELAY_SERVER_MAX_ALLOCATIONS".to_owned(),
        "lots".to_owned(),
    )];
    assert_eq!(
        error_of_sources(&sources),
        "config error: environment TURN_RELAY_SERVER_MAX_ALLOCATIONS: server.max_allocations: \"lots\" is not a whole number"
    );
    sources.environment = vec![(
        "TURN_RELAY_SERVER_MAX_ALLOCATIONS".to_owned(),
        "0".to_owned(),
    )];
    assert_eq!(
        error_of_sources(&sources),
        "config error: environment TURN_RELAY_SERVER_MAX_ALLOCATIONS: server.max_allocations: 0 is not between 1 and 4194304"
    );
    // Variables that name no key are ignored with a warning: orchestrators add their own
    // (Kubernetes, for a Service called turn-relay: TURN_RELAY_SERVICE_HOST…).
    sources.environment = vec![
        ("TURN_RELAY_SERVER_REALMM".to_owned(), "x".to_owned()),
        ("TURN_RELAY_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned()),
    ];
    let config = Config::from_sources(&sources).expect("ignored, not refused");
    assert_eq!(config.ignored_variables.len(), 2);
    assert!(config.ignored_variables[0]
        .starts_with("environment variable TURN_RELAY_SERVER_REALMM names no configuration key"));
    assert_eq!(config.realm, "turn-relay.local");
    sources.environment = vec![("TURN_RELAY_AUTH_USERS".to_owned(), "alice".to_owned())];
    assert!(error_of_sources(&sources)
        .contains("TURN_RELAY_AUTH_USERS: auth.users: \"alice\" is not name:password"));
    sources.environment = vec![(
        "TURN_RELAY_SERVER_DRAIN_EXIT".to_owned(),
        "maybe".to_owned(),
    )];
    assert!(error_of_sources(&sources).contains("\"maybe\" is not true or false"));
    sources.environment.clear();
    sources.set("--listen", "server.listen", "0.0.0.0:3478");
    assert!(error_of_sources(&sources)
        .starts_with("config error: --listen: server.listen: 0.0.0.0:3478 is a wildcard"));
    sources.command_line.clear();
    sources.set("--log-format", "log.format", "xml");
    assert!(error_of_sources(&sources).contains("--log-format: log.format: \"xml\" is not one of"));
    // A file value with an error still names its line when the environment sets others.
    let (_, mut sources) =
        file_with("[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"1-0\"\n");
    sources.environment = vec![("TURN_RELAY_SERVER_REALM".to_owned(), "ok".to_owned())];
    assert!(error_of_sources(&sources).contains("line 3: server.port_range"));
}

#[test]
fn without_a_file_the_demo_runs_only_without_environment_variables() {
    let mut sources = Sources::default();
    sources.set("--listen", "server.listen", "127.0.0.1:3479");
    let demo = Config::from_sources(&sources).expect("demo");
    assert!(demo.demo_credentials().is_some());
    // Variables that name no key do not turn the demo off.
    sources.environment = vec![("TURN_RELAY_BIN".to_owned(), "/x".to_owned())];
    assert!(Config::from_sources(&sources)
        .expect("demo")
        .demo_credentials()
        .is_some());
    sources.environment.clear();
    assert_eq!(demo.listen[0].port(), 3479);
    // With variables, nothing of the demo applies: relay_address must be given.
    let error = error_of_sources(&environment(&[("TURN_RELAY_SERVER_REALM", "x")]));
    assert!(
        error.contains("config error: environment: server.relay_address"),
        "{error}"
    );
    let config = Config::from_sources(&environment(&[
        ("TURN_RELAY_SERVER_RELAY_ADDRESS", "198.18.0.1"),
        ("TURN_RELAY_PEERS_ALLOW", ""),
    ]))
    .expect("valid");
    assert!(config.users.is_empty() && config.peers_allow.is_empty());
}

#[test]
fn alternate_servers_are_checked_and_exclude_this_relay() {
    assert_errors(&[
        ("[server]\nrelay_address = \"198.18.0.1\"\nalternate_servers = [\"nowhere\"]\n", "line 3: server.alternate_servers: \"nowhere\" is not an ip:port"),
        ("[server]\nrelay_address = \"198.18.0.1\"\nalternate_servers = [\"0.0.0.0:3478\"]\n", "cannot be a TURN server's address"),
        ("[server]\nrelay_address = \"198.18.0.1\"\nalternate_servers = [\"198.18.0.2\", \"198.18.0.2:3478\"]\n", "198.18.0.2:3478 is listed twice"),
        ("[server]\nrelay_address = \"198.18.0.1\"\ndrain_timeout = 0\n", "line 3: server.drain_timeout: 0 is not between 1 and 86400 seconds"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[admin]\ntoken = \"\"\n", "line 4: admin.token: secrets and passwords must not be empty"),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[admin]\ntoken_file = \"/nonexistent/token\"\n", "line 4: admin.token_file: cannot read \"/nonexistent/token\""),
        ("[server]\nrelay_address = \"198.18.0.1\"\n[admin]\ntoken = \"a\"\ntoken_file = \"/x\"\n", "line 5: admin.token_file: set admin.token or admin.token_file, not both"),
    ]);
    // One list for the whole group: this relay (by listen or public address) is skipped.
    let config = Config::parse(
        "[server]\nrelay_address = \"198.18.0.1\"\npublic_address = \"198.19.0.1\"\n\
         alternate_servers = [\"198.18.0.1:3478\", \"198.19.0.1\", \"198.18.0.2\", \"198.18.0.1:3479\"]\n",
        "test.toml",
    )
    .expect("valid");
    assert_eq!(
        config.alternates(),
        vec![
            "198.18.0.2:3478".parse::<SocketAddr>().expect("addr"),
            "198.18.0.1:3479".parse().expect("addr")
        ]
    );
    let defaults = Config::parse(MINIMAL, "test.toml").expect("valid");
    assert!(!defaults.drain_exit);
    assert_eq!(defaults.drain_timeout, Duration::from_secs(3600));
    assert!(defaults.admin_token.is_none());
}

#[test]
fn a_reload_applies_live_keys_and_keeps_restart_keys() {
    let before = "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"50000-50100\"\n\
                  [auth]\nusers = [{ name = \"alice\", password = \"old\" }]\n[log]\nlevel = \"info\"\n";
    let (path, sources) = file_with(before);
    let running = Config::from_sources(&sources).expect("valid");
    let unchanged = running.reload(&sources).expect("same file");
    assert!(unchanged.changed.is_empty() && unchanged.restart_needed.is_empty());
    assert_eq!(
        unchanged.config.nonce_secret, running.nonce_secret,
        "a random nonce secret survives a reload"
    );

    std::fs::write(
        &path,
        "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"50000-50200\"\n\
         alternate_servers = [\"198.18.0.2\"]\n[auth]\nusers = [{ name = \"alice\", password = \"new\" }]\n\
         auth_secrets = [\"rest\"]\n[peers]\ndeny = [\"198.18.7.0/24\"]\n[log]\nlevel = \"debug\"\n[xdp]\nmode = \"off\"\n",
    )
    .expect("rewrite");
    let reloaded = running.reload(&sources).expect("valid");
    assert_eq!(
        reloaded.changed,
        vec![
            "server.alternate_servers",
            "auth.users",
            "auth.auth_secrets",
            "peers.deny",
            "log.level"
        ]
    );
    assert_eq!(
        reloaded.restart_needed,
        vec!["server.port_range", "xdp.mode"]
    );
    let applied = reloaded.config;
    assert!(matches!(&applied.users[0].secret, StaticSecret::Password(p) if p == "new"));
    assert_eq!(applied.auth_secrets, vec!["rest".to_owned()]);
    assert_eq!(applied.peers_deny.len(), 1);
    assert_eq!(applied.log_level, "debug");
    assert_eq!(applied.alternate_servers.len(), 1);
    assert_eq!(
        applied.port_range,
        50000..=50100,
        "restart key keeps its value"
    );
    assert_eq!(
        applied.xdp_mode,
        XdpMode::Auto,
        "restart key keeps its value"
    );

    // A file with an error changes nothing: the error names file, line and key.
    std::fs::write(
        &path,
        "[server]\nrelay_address = \"198.18.0.1\"\nmax_lifetime = \"x\"\n",
    )
    .expect("rewrite");
    let error = running.reload(&sources).expect_err("invalid").to_string();
    assert!(
        error.starts_with(&format!(
            "config error: {} line 3: server.max_lifetime",
            path.display()
        )),
        "{error}"
    );
}

#[test]
fn every_live_key_is_applied_by_a_reload() {
    // Each live key changed alone reaches the merged configuration; each restart key
    // changed alone does not.
    let (path, sources) = file_with(MINIMAL);
    let running = Config::from_sources(&sources).expect("valid");
    let token_file = file_with("t0k3n\n").0;
    for key in KEYS {
        let value =
            match key.dotted().as_str() {
                "server.realm" => "\"other.realm\"",
                "server.software" => "\"x\"",
                "server.listen" => "[\"198.18.0.1:3479\"]",
                "server.relay_address" => "\"198.18.0.2\"",
                "server.relay_address_v6" => "\"2001:2::1\"",
                "server.public_address" => "\"198.18.0.9\"",
                "server.public_address_v6" => continue,
                "server.port_range" => "\"50000-50001\"",
                "server.default_lifetime" | "server.max_lifetime" => "700",
                "server.max_allocations" | "server.max_allocations_per_user" => "5",
                "server.threads" => "4",
                "server.permission_lifetime" | "server.channel_lifetime" => "9",
                "server.alternate_servers" => "[\"198.18.0.5\"]",
                "server.drain_exit" => "true",
                "server.drain_timeout" | "auth.nonce_lifetime" => "10",
                "auth.users" => "[{ name = \"u\", password = \"p\" }]",
                "auth.auth_secrets" | "auth.zrest_secrets" => "[\"s\"]",
                "auth.nonce_secret" => "\"n\"",
                "auth.advertise_password_algorithms" => "false",
                "peers.allow" | "peers.deny" => "[\"198.18.3.0/24\"]",
                "limits.max_permissions_per_allocation"
                | "limits.max_channels_per_allocation"
                | "limits.max_peers_per_request" => "5",
                "limits.credential_expiry_grace" => "10",
                "limits.unauthenticated_answers_per_second"
                | "limits.unauthenticated_answers_burst" => "3",
                "limits.max_cached_responses_per_user" => "9",
                "limits.max_bytes_per_second_per_allocation"
                | "limits.max_bytes_per_second_total" => "1000",
                "xdp.mode" => "\"off\"",
                "xdp.interfaces" => "[\"eth9\"]",
                "xdp.trace" => "true",
                "metrics.listen" => "\"127.0.0.1:9999\"",
                "admin.token" => "\"tok\"",
                "admin.token_file" => &format!("{:?}", token_file.display().to_string()),
                "log.level" => "\"trace\"",
                "log.format" => "\"json\"",
                "tcp.enabled" => "false",
                "tcp.listen" => "[\"198.18.0.1:80\"]",
                // These need another key set with them (allow_from, cert and key).
                "tcp.proxy_protocol" | "tls.proxy_protocol" | "tls.cert" | "tls.key"
                | "tls.listen" => continue,
                "connections.handshake_timeout" => "5",
                "connections.idle_timeout" => "30",
                "connections.max" => "100",
                "connections.max_per_ip" => "10",
                "connections.max_message_size" => "2000",
                "connections.write_buffer" => "8192",
                "proxy_protocol.allow_from" => "[\"198.18.9.0/24\"]",
                other => panic!("no test value for {other}"),
            };
        let text = if key.dotted() == "server.default_lifetime" {
            format!("{MINIMAL}default_lifetime = 10\n")
        } else if key.dotted() == "server.relay_address" {
            format!("[server]\nrelay_address = {value}\n")
        } else if key.section == "server" {
            format!("{MINIMAL}{} = {value}\n", key.name)
        } else {
            format!("{MINIMAL}[{}]\n{} = {value}\n", key.section, key.name)
        };
        std::fs::write(&path, &text).expect("rewrite");
        let reloaded = running.reload(&sources).expect("valid");
        let name = key.dotted();
        match key.reload {
            // A token file also changes the token.
            Reload::Live => {
                assert!(reloaded.changed.contains(&name), "{name} with\n{text}");
                assert!(reloaded.restart_needed.is_empty(), "{name}: {reloaded:?}");
            }
            // Some restart keys move defaults of others (relay_address → listen).
            Reload::Restart => assert!(
                reloaded.restart_needed.contains(&name) && reloaded.changed.is_empty(),
                "{name}: {reloaded:?}"
            ),
        }
        let shown = reloaded.config.printed_values();
        let wanted = Config::from_sources(&sources)
            .expect("valid")
            .printed_values();
        let original = running.printed_values();
        match key.reload {
            Reload::Live => assert_eq!(shown.get(&name), wanted.get(&name), "{name} applied"),
            Reload::Restart => assert_eq!(shown.get(&name), original.get(&name), "{name} kept"),
        }
    }
}

/// Issue 8 item 4: the relay's own addresses are peers on relay ports only, so no other
/// service of the relay may listen there, and the addresses of its services that are
/// not relay addresses are never peers.
#[test]
fn the_relays_services_are_never_reachable_as_peers() {
    assert_errors(&[
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\"198.18.0.1:50000\"]\n",
            "line 3: server.listen: 198.18.0.1:50000 is on a relay address inside the relay port range 49152-65535",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"3000-4000\"\n",
            "line 3: server.port_range: 198.18.0.1:3478 is on a relay address inside the relay port range 3000-4000",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\n[metrics]\nlisten = \"0.0.0.0:50001\"\n",
            "line 4: metrics.listen: 0.0.0.0:50001 is on a relay address inside the relay port range",
        ),
        (
            "[server]\nrelay_address = \"198.18.0.1\"\npublic_address = \"203.0.113.7\"\nlisten = [\"203.0.113.7:60000\"]\n",
            "line 4: server.listen: 203.0.113.7:60000 is on a relay address",
        ),
    ]);
    // Elsewhere the same ports are fine.
    Config::parse(
        "[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\"198.18.0.2:50000\"]\n[metrics]\nlisten = \"127.0.0.1:50001\"\n",
        "test.toml",
    )
    .expect("services outside the relay addresses may use any port");
    let (_, mut sources) = file_with(MINIMAL);
    sources.set("--listen", "server.listen", "198.18.0.1:60000");
    let refused = error_of_sources(&sources);
    assert!(
        refused.starts_with(
            "config error: --listen: server.listen: 198.18.0.1:60000 is on a relay address"
        ),
        "{refused}"
    );
    let (_, mut sources) = file_with(MINIMAL);
    sources.environment = vec![(
        "TURN_RELAY_LIMITS_MAX_CHANNELS_PER_ALLOCATION".to_owned(),
        "300".to_owned(),
    )];
    assert_eq!(
        error_of_sources(&sources),
        "config error: environment TURN_RELAY_LIMITS_MAX_CHANNELS_PER_ALLOCATION: \
         limits.max_channels_per_allocation: 300 is not between 1 and 256"
    );

    // Listeners and the metrics endpoint off the relay addresses are denied as peers even
    // where peers.allow opens their network; the relay address stays a hairpin peer.
    let config = Config::parse(
        "[server]\nrelay_address = \"198.19.1.1\"\nlisten = [\"198.18.1.1:3478\"]\n\
         [peers]\nallow = [\"198.18.0.0/15\"]\n[metrics]\nlisten = \"198.18.9.9:9641\"\n",
        "test.toml",
    )
    .expect("valid");
    let policy = config.peer_policy();
    let ip = |text: &str| -> IpAddr { text.parse().expect("ip") };
    assert!(policy.check(ip("198.18.1.1")).is_err(), "the listener");
    assert!(
        policy.check(ip("198.18.9.9")).is_err(),
        "the metrics endpoint"
    );
    assert!(policy.check(ip("198.18.1.2")).is_ok(), "an allowed peer");
    assert_eq!(
        policy.check(ip("198.19.1.1")),
        Ok(crate::protocol::policy::PeerPorts::RelayRange)
    );
}
