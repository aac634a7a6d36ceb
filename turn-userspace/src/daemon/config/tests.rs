use std::net::Ipv4Addr;

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

[xdp]
mode = "skb"
interfaces = ["eth0"]

[metrics]
listen = ""

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
    assert_eq!(checked, 42, "every key of the schema is checked");
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

    let printed = config.to_toml();
    for secret in ["\"pw\"", "s1", "s2", "z0", "shared", "d2f83184"] {
        assert!(!printed.contains(secret), "{secret} leaked:\n{printed}");
    }
    for shown in [
        "port_range = \"50000-50999\"",
        "public_address_v6 = \"2001:db8::7\"",
        "name = \"bob\"",
        "deny = [\n    \"198.18.5.0/24\",\n    \"192.0.2.1/32\",\n]",
        "mode = \"skb\"",
        "format = \"json\"",
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
            "line 3: server.max_allocations: 0 is not between 1 and 262144",
        ),
        (
            in_server("max_allocations = 4294967296"),
            "line 3: server.max_allocations: 4294967296 is not between 1 and 262144",
        ),
        (
            in_server("max_allocations_per_user = 1000000"),
            "line 3: server.max_allocations_per_user: 1000000 is not between 0 and 262144",
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
            "{base}default_lifetime = 86400\nmax_lifetime = 86400\nmax_allocations = 262144\n\
             max_allocations_per_user = 262144\nthreads = 1024\npermission_lifetime = 86400\n\
             channel_lifetime = 86400\nport_range = \"1-65535\"\n[auth]\nnonce_lifetime = 86400\n"
        ),
        "test.toml",
    )
    .expect("the bounds themselves are valid");
    assert_eq!(config.max_allocations, 262_144);
    assert_eq!(config.threads, 1024);
    assert_eq!(config.xdp_settings(Vec::new()).max_allocations, 262_144);
    assert_eq!(config.default_lifetime, Duration::from_secs(86_400));
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

#[test]
fn command_line_overrides_are_validated() {
    let mut config = Config::embedded_default();
    let refused = |result: Result<(), ConfigError>| match result {
        Err(error) => error.to_string(),
        Ok(()) => panic!("accepted"),
    };
    assert!(
        refused(config.set_listen(vec!["0.0.0.0:3478".parse().expect("addr")]))
            .starts_with("config error: --listen: server.listen: 0.0.0.0:3478 is a wildcard")
    );
    assert!(refused(config.set_listen(vec![])).contains("at least one address"));
    let twice: SocketAddr = "127.0.0.1:3479".parse().expect("addr");
    assert!(refused(config.set_listen(vec![twice, twice])).contains("listed twice"));
    config
        .set_listen(vec!["127.0.0.1:3479".parse().expect("addr")])
        .expect("valid");
    assert_eq!(config.listen[0].port(), 3479);
    assert!(refused(config.set_realm(String::new())).contains("--realm: server.realm"));
    config.set_realm("example.org".into()).expect("valid");
    assert!(refused(config.set_log_level("[".into())).contains("--log-level: log.level"));
    config
        .set_log_level("turn_relay=debug".into())
        .expect("valid");
    assert!(refused(config.set_log_format("xml"))
        .contains("--log-format: log.format: \"xml\" is not one of"));
    config.set_log_format("json").expect("valid");
    assert_eq!(config.log_format, LogFormat::Json);
}
