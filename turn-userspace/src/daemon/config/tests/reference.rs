//! The reference file `config/turn-relay.toml` and the embedded default: every key documented, with its real default.

use super::*;

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
        "server.coalesce_us",
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
