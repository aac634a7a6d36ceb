//! SIGHUP reloads: live keys applied, restart keys kept.

use super::*;

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
                "server.coalesce_us" => "200",
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
                "proxy_protocol.allow_from" => "[\"198.18.9.0/24\"]",
                other => connections_test_value(other)
                    .unwrap_or_else(|| panic!("no test value for {other}")),
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
