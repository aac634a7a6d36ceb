//! restund's `restund.conf` (Wire's fork included): one `key value` per line, `#` starts
//! a comment. Modules (`module drain.so`, `status.so`, `zrest.so`…) are features built
//! into turn-relay.

use std::net::SocketAddr;

use super::{why, HostAddresses, Imported};

pub(super) fn import(text: &str, host: &HostAddresses) -> Imported {
    let mut imported = Imported::default();
    let mut status_http: (Option<String>, Option<String>) = (None, None);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(key, value)| (key, value.trim()));
        if value.contains("{{") {
            imported.skip(
                key,
                value,
                "a template variable ({{ … }}) that was never filled in: replace it and import again",
            );
            continue;
        }
        let number = || value.parse::<i64>().ok();
        match key {
            "realm" => imported.set("server", "realm", value),
            "udp_listen" => match value.parse::<SocketAddr>() {
                Ok(address) => imported.push("server", "listen", address.to_string()),
                Err(_) => imported.skip(key, value, "not an ip:port address"),
            },
            "turn_relay_addr" => imported.set("server", "relay_address", value),
            "turn_relay_addr6" => imported.set("server", "relay_address_v6", value),
            "turn_public_addr" => {
                imported.set("server", "public_address", value);
                imported.note(
                    "turn_public_addr became server.public_address: the address announced to \
                     clients in XOR-RELAYED-ADDRESS",
                );
            }
            "turn_max_allocations" => match number() {
                Some(count) => imported.set("server", "max_allocations", count),
                None => imported.skip(key, value, "not a number"),
            },
            "turn_max_lifetime" => match number() {
                Some(seconds) => imported.set("server", "max_lifetime", seconds),
                None => imported.skip(key, value, "not a number"),
            },
            "auth_nonce_expiry" => match number() {
                Some(seconds) => imported.set("auth", "nonce_lifetime", seconds),
                None => imported.skip(key, value, "not a number"),
            },
            "zrest_secret" => imported.push("auth", "zrest_secrets", value),
            "status_http_addr" => status_http.0 = Some(value.to_owned()),
            "status_http_port" => status_http.1 = Some(value.to_owned()),
            "status_udp_addr" | "status_udp_port" => imported.skip(
                key,
                value,
                "the admin endpoint's GET /status (JSON) and `turn-relay ctl status` replace the UDP status port",
            ),
            "debug" => {
                if value == "yes" {
                    imported.set("log", "level", "debug");
                }
            }
            "module" => module(&mut imported, value),
            "tcp_listen" | "tls_listen" => imported.skip(key, value, why::TCP_TLS),
            "daemon" | "module_path" => imported.skip(key, value, why::PROCESS),
            "syslog_facility" => imported.skip(key, value, why::LOGGING),
            "udp_sockbuf_size" => imported.skip(key, value, "socket buffers follow the kernel's settings (net.core.rmem_max)"),
            "syncinterval" => imported.skip(key, value, "no periodic sync: a reload (SIGHUP) applies new secrets and users"),
            _ => imported.skip(key, value, "unknown restund option"),
        }
    }
    match status_http {
        (Some(address), Some(port)) => match format!("{address}:{port}").parse::<SocketAddr>() {
            Ok(listen) => {
                imported.set("metrics", "listen", listen.to_string());
                imported.note(
                    "status_http_addr/port became metrics.listen: the admin endpoint serves \
                     /status, /readyz and /metrics there",
                );
            }
            Err(_) => imported.skip("status_http_addr", &address, "not an ip and port"),
        },
        (None, None) => {}
        (address, port) => imported.skip(
            "status_http_addr/status_http_port",
            address.or(port).as_deref().unwrap_or_default(),
            "both are needed for an address",
        ),
    }
    imported.default_addresses(host, "restund");
    imported
}

/// restund's modules are turn-relay features.
fn module(imported: &mut Imported, module: &str) {
    let feature = match module.trim_end_matches(".so") {
        "binding" | "turn" | "auth" | "stat" => why::BUILT_IN,
        "zrest" => "built in: zrest usernames are checked against auth.zrest_secrets",
        "drain" => "built in: POST /drain, SIGUSR1 or `turn-relay ctl drain` (see server.alternate_servers)",
        "status" => "built in: the admin endpoint (metrics.listen) serves /status and /readyz",
        "restauth" => "built in: coturn-style REST secrets go in auth.auth_secrets",
        _ => "no such feature in turn-relay",
    };
    imported.skip("module", module, feature);
}
