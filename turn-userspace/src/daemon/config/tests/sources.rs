//! Where values come from: environment variables, the command line and the file, their precedence and their errors.

use super::*;

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
                "server.coalesce_us" => "150",
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
                "proxy_protocol.allow_from" => "198.18.9.0/24",
                other => connections_test_value(other)
                    .unwrap_or_else(|| panic!("no test value for {other}")),
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
