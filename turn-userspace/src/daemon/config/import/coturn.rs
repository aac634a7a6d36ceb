//! coturn's `turnserver.conf`: one option per line, `name=value`, `name value` or a bare
//! `name` for flags; lines starting with `#` are comments (see coturn's own
//! `examples/etc/turnserver.conf`).

use std::net::{IpAddr, SocketAddr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

use super::{why, HostAddresses, Imported};

/// coturn's default listening port (`listening-port`).
const COTURN_PORT: u16 = 3478;
/// coturn's default `stale-nonce` when the flag is given without a value.
const COTURN_STALE_NONCE_SECS: i64 = 600;

/// The options of one file, in order.
fn options(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let line = line.trim_start_matches("--");
        let split = line.find(['=', ' ', '\t']);
        let (name, value) = match split {
            Some(at) => (&line[..at], line[at + 1..].trim()),
            None => (line, ""),
        };
        let value = value.trim_matches('"');
        Some((name.trim().to_owned(), value.to_owned()))
    })
}

pub(super) fn import(text: &str, host: &HostAddresses) -> Imported {
    let mut imported = Imported::default();
    let mut port = COTURN_PORT;
    let mut listening_ips: Vec<IpAddr> = Vec::new();
    let mut relay_ips: Vec<IpAddr> = Vec::new();
    let mut external: Option<(IpAddr, Option<IpAddr>)> = None;
    let mut min_port: Option<u16> = None;
    let mut max_port: Option<u16> = None;
    let mut use_auth_secret = false;
    let mut static_secrets: Vec<String> = Vec::new();
    for (name, value) in options(text) {
        let number = || value.parse::<i64>().ok();
        match name.as_str() {
            "listening-port" => match value.parse() {
                Ok(parsed) => port = parsed,
                Err(_) => imported.skip(&name, &value, "not a port number"),
            },
            "listening-ip" => match value.parse() {
                Ok(ip) => listening_ips.push(ip),
                Err(_) => imported.skip(&name, &value, "not an IP address"),
            },
            "relay-ip" => match value.parse() {
                Ok(ip) => relay_ips.push(ip),
                Err(_) => imported.skip(&name, &value, "not an IP address"),
            },
            "external-ip" => {
                // "public" or "public/private".
                let (public, private) = value.split_once('/').unwrap_or((&value, ""));
                match (public.parse::<IpAddr>(), private) {
                    (Ok(public), "") if external.is_none() => external = Some((public, None)),
                    (Ok(public), private) if external.is_none() => match private.parse() {
                        Ok(private) => external = Some((public, Some(private))),
                        Err(_) => imported.skip(&name, &value, "not public/private IP addresses"),
                    },
                    (Ok(_), _) => imported.skip(
                        &name,
                        &value,
                        "one public address per family (public_address, public_address_v6)",
                    ),
                    (Err(_), _) => imported.skip(&name, &value, "not an IP address"),
                }
            }
            "min-port" => min_port = value.parse().ok(),
            "max-port" => max_port = value.parse().ok(),
            "realm" => imported.set("server", "realm", value.clone()),
            "no-software-attribute" => imported.set("server", "software", ""),
            "total-quota" => match number() {
                // coturn: 0 = unlimited; turn-relay needs a bound.
                Some(0) | None => imported.skip(&name, &value, "turn-relay always bounds allocations (server.max_allocations)"),
                Some(quota) => imported.set("server", "max_allocations", quota),
            },
            "user-quota" => match number() {
                Some(quota) => imported.set("server", "max_allocations_per_user", quota),
                None => imported.skip(&name, &value, "not a number"),
            },
            "max-allocate-lifetime" => set_number(&mut imported, "server", "max_lifetime", &name, &value),
            "channel-lifetime" => set_number(&mut imported, "server", "channel_lifetime", &name, &value),
            "permission-lifetime" => set_number(&mut imported, "server", "permission_lifetime", &name, &value),
            "relay-threads" => set_number(&mut imported, "server", "threads", &name, &value),
            "alternate-server" => match parse_server(&value) {
                Some(server) => imported.push("server", "alternate_servers", server.to_string()),
                None => imported.skip(&name, &value, "not an ip:port address"),
            },
            "lt-cred-mech" => imported.note("lt-cred-mech: long-term credentials are what turn-relay always uses"),
            "user" => match value.split_once(':') {
                Some((user, secret)) => {
                    let mut entry = toml::Table::new();
                    entry.insert("name".into(), user.into());
                    let field = if secret.starts_with("0x") { "key" } else { "password" };
                    entry.insert(field.into(), secret.into());
                    imported.push("auth", "users", entry);
                }
                None => imported.skip(&name, &value, "not name:password"),
            },
            "use-auth-secret" => use_auth_secret = true,
            "static-auth-secret" => static_secrets.push(value.clone()),
            "stale-nonce" => {
                let seconds = if value.is_empty() { Some(COTURN_STALE_NONCE_SECS) } else { number() };
                match seconds {
                    Some(seconds) => imported.set("auth", "nonce_lifetime", seconds),
                    None => imported.skip(&name, &value, "not a number of seconds"),
                }
            }
            "denied-peer-ip" | "allowed-peer-ip" => {
                let key = if name == "denied-peer-ip" { "deny" } else { "allow" };
                match networks(&value) {
                    Some(networks) => {
                        for network in networks {
                            imported.push("peers", key, network.to_string());
                        }
                    }
                    None => imported.skip(&name, &value, "not an address, CIDR or address range"),
                }
            }
            "allow-loopback-peers" => {
                imported.push("peers", "allow", "127.0.0.0/8");
                imported.push("peers", "allow", "::1/128");
            }
            "no-multicast-peers" | "no-loopback-peers" => imported.note(format!(
                "{name}: turn-relay refuses those peers by default"
            )),
            "prometheus" => imported.note(
                "prometheus: turn-relay serves /metrics on its admin endpoint (metrics.listen, default 127.0.0.1:9641)",
            ),
            "verbose" | "v" => imported.set("log", "level", "debug"),
            "Verbose" | "V" => imported.set("log", "level", "trace"),
            "fingerprint" => imported.skip(&name, &value, "FINGERPRINT is always answered to clients that send it"),
            "no-udp" | "no-udp-relay" => imported.skip(&name, &value, "turn-relay relays over UDP; this cannot be turned off"),
            "no-tcp" | "no-tls" | "no-dtls" | "no-tcp-relay" => {
                imported.note(format!("{name}: turn-relay has no TCP, TLS or DTLS listeners anyway"))
            }
            "tls-listening-port" | "alt-tls-listening-port" | "cert" | "pkey" | "pkey-pwd"
            | "cipher-list" | "dh-file" | "dh566" | "dh1066" | "ec-curve-name" | "ca-file"
            | "no-tlsv1" | "no-tlsv1_1" | "no-tlsv1_2" | "tls-alternate-server" | "acme-redirect" => {
                imported.skip(&name, &value, why::TCP_TLS)
            }
            "alt-listening-port" | "rfc5780" | "no-rfc5780" | "response-origin-only-with-rfc5780" => {
                imported.skip(&name, &value, "RFC 5780 NAT behaviour discovery is not offered")
            }
            "no-stun-backward-compatibility" => imported.skip(&name, &value, "turn-relay answers RFC 5389/8489 STUN only (no RFC 3489 classic STUN)"),
            "no-stun" | "stun-only" | "secure-stun" => imported.skip(&name, &value, "STUN Binding is always answered without credentials, TURN always needs them"),
            "no-auth" => imported.skip(&name, &value, "turn-relay always authenticates allocations"),
            "userdb" | "psql-userdb" | "mysql-userdb" | "mongo-userdb" | "redis-userdb" | "redis-statsdb" | "secret-key-file" | "oauth" | "server-name" => {
                imported.skip(&name, &value, "no database or OAuth backends: list users in auth.users or secrets in auth.auth_secrets")
            }
            "log-file" | "syslog" | "simple-log" | "new-log-timestamp" | "new-log-timestamp-format" | "syslog-facility" | "no-stdout-log" | "log-binding" => {
                imported.skip(&name, &value, why::LOGGING)
            }
            "pidfile" | "proc-user" | "proc-group" => imported.skip(&name, &value, why::PROCESS),
            "no-cli" | "cli-ip" | "cli-port" | "cli-password" | "cli-max-output-sessions" | "web-admin" | "web-admin-ip" | "web-admin-port" | "web-admin-listen-on-workers" => {
                imported.skip(&name, &value, "use the admin endpoint and `turn-relay ctl` (status, sessions, drain, reload)")
            }
            "listening-device" | "relay-device" => imported.skip(&name, &value, "turn-relay binds to addresses, not devices (xdp.interfaces picks the XDP devices)"),
            // Both in bytes per second, input and output separately, as ours.
            "max-bps" => set_number(&mut imported, "limits", "max_bytes_per_second_per_allocation", &name, &value),
            "bps-capacity" => set_number(&mut imported, "limits", "max_bytes_per_second_total", &name, &value),
            "mobility" => imported.skip(&name, &value, "no ICE mobility (RFC 8016)"),
            "aux-server" | "udp-self-balance" | "server-relay" | "tcp-proxy-port" | "check-origin-consistency" | "keep-address-family" | "allocation-default-address-family" | "dual-allocation" | "max-allocate-timeout" => {
                imported.skip(&name, &value, "no equivalent in turn-relay")
            }
            _ => imported.skip(&name, &value, "unknown coturn option"),
        }
    }
    if use_auth_secret {
        if static_secrets.is_empty() {
            imported.skip("use-auth-secret", "", "without static-auth-secret coturn reads the secrets from its database; list them in auth.auth_secrets");
        }
        for secret in static_secrets {
            imported.push("auth", "auth_secrets", secret);
        }
    } else if !static_secrets.is_empty() {
        imported.skip(
            "static-auth-secret",
            "x",
            "coturn ignores it without use-auth-secret",
        );
    }

    let listen: Vec<String> = listening_ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, port).to_string())
        .collect();
    if !listen.is_empty() {
        imported.set("server", "listen", listen);
    }
    relay_addresses(&mut imported, &relay_ips, external);
    imported.default_addresses(host, "coturn");
    if listening_ips.is_empty() && port != COTURN_PORT {
        let relays: Vec<String> = ["relay_address", "relay_address_v6"]
            .iter()
            .filter_map(|key| imported.get("server", key)?.as_str().map(str::to_owned))
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, port).to_string())
            .collect();
        imported.set("server", "listen", relays);
    }
    if let (Some(low), Some(high)) = (min_port, max_port) {
        imported.set("server", "port_range", format!("{low}-{high}"));
    } else if min_port.is_some() || max_port.is_some() {
        let (low, high) = (min_port.unwrap_or(49152), max_port.unwrap_or(65535));
        imported.set("server", "port_range", format!("{low}-{high}"));
    }
    imported
}

/// `relay-ip` (one per family) and `external-ip` as relay and public addresses.
fn relay_addresses(
    imported: &mut Imported,
    relay_ips: &[IpAddr],
    external: Option<(IpAddr, Option<IpAddr>)>,
) {
    for (ipv4, relay_key, public_key) in [
        (true, "relay_address", "public_address"),
        (false, "relay_address_v6", "public_address_v6"),
    ] {
        let mut family = relay_ips.iter().filter(|ip| ip.is_ipv4() == ipv4);
        let private = external
            .and_then(|(_, private)| private)
            .filter(|ip| ip.is_ipv4() == ipv4);
        match (family.next(), private) {
            (Some(relay), _) => imported.set("server", relay_key, relay.to_string()),
            (None, Some(private)) => imported.set("server", relay_key, private.to_string()),
            (None, None) => {}
        }
        for extra in family {
            imported.skip(
                "relay-ip",
                &extra.to_string(),
                "one relay address per family (server.relay_address / relay_address_v6)",
            );
        }
        if let Some((public, _)) = external.filter(|(public, _)| public.is_ipv4() == ipv4) {
            imported.set("server", public_key, public.to_string());
        }
    }
}

fn set_number(imported: &mut Imported, section: &str, key: &str, name: &str, value: &str) {
    match value.parse::<i64>() {
        Ok(number) => imported.set(section, key, number),
        Err(_) => imported.skip(name, value, "not a number"),
    }
}

/// `ip:port`, `[v6]:port` or a bare ip (port 3478).
fn parse_server(text: &str) -> Option<SocketAddr> {
    text.parse()
        .ok()
        .or_else(|| Some(SocketAddr::new(text.parse().ok()?, COTURN_PORT)))
}

/// A peer address as coturn writes it: an address, a CIDR, or a range `first-last`
/// (turned into the CIDRs that cover it exactly).
fn networks(text: &str) -> Option<Vec<IpNet>> {
    if let Some((first, last)) = text.split_once('-') {
        let first: IpAddr = first.trim().parse().ok()?;
        let last: IpAddr = last.trim().parse().ok()?;
        return match (first, last) {
            (IpAddr::V4(first), IpAddr::V4(last)) if first <= last => {
                Some(Ipv4Subnets::new(first, last, 0).map(IpNet::V4).collect())
            }
            (IpAddr::V6(first), IpAddr::V6(last)) if first <= last => {
                Some(Ipv6Subnets::new(first, last, 0).map(IpNet::V6).collect())
            }
            _ => None,
        };
    }
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|network| vec![network])
}
