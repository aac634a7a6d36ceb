//! Parsing one file: defaults, every key round-tripped, bounds, and errors naming file, line and key.

use super::*;

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
