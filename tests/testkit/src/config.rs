//! The daemon's configuration as a test or the benchmark wants it, written with serde and
//! the `toml` crate in the documented keys of `config/turn-relay.toml`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

use crate::addresses::{
    listener, METRICS_ADDRESS, RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE,
    RELAY_RELAYED_V4, RELAY_RELAYED_V6, TEST_NETWORKS, TLS_PORT,
};
use crate::tls::TestCertificate;

/// A static long-term credential user.
#[derive(Clone, Debug, Serialize)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl User {
    pub fn new(name: &str, password: &str) -> User {
        User {
            name: name.into(),
            password: password.into(),
        }
    }
}

/// How the daemon runs XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Xdp {
    /// Native, else generic mode, on both relay-side interfaces.
    Auto,
    /// Driver mode or not at all (the daemon then relays in userspace and reports
    /// `turn_xdp_attached 0`).
    Native,
    /// Everything relays in userspace.
    Off,
}

/// The daemon configuration a test runs with.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    pub realm: String,
    pub users: Vec<User>,
    pub auth_secrets: Vec<String>,
    pub zrest_secrets: Vec<String>,
    pub xdp: Xdp,
    /// Also listen and relay on IPv6.
    pub ipv6: bool,
    /// `[server] permission_lifetime` in seconds (daemon default when None).
    pub permission_lifetime: Option<u32>,
    /// `[server] channel_lifetime` in seconds (daemon default when None).
    pub channel_lifetime: Option<u32>,
    /// `[server] max_allocations` (daemon default when None).
    pub max_allocations: Option<u32>,
    /// `[server] max_allocations_per_user`, 0 = unlimited (daemon default when None).
    pub max_allocations_per_user: Option<u32>,
    /// `[server] coalesce_us` (daemon default, 0, when None).
    pub coalesce_us: Option<u32>,
    /// `[peers] allow`: CIDRs the default deny does not apply to.
    pub allowed_peers: Vec<String>,
    /// `[limits]` keys and values (daemon defaults for the others).
    pub limits: BTreeMap<String, u64>,
    /// Where it listens and relays, when not in the client ⇄ relay ⇄ peer topology.
    pub placement: Option<Placement>,
    /// `[server] alternate_servers`: where a draining relay sends new allocations.
    pub alternate_servers: Vec<SocketAddr>,
    /// `[server] drain_exit`: exit once drained.
    pub drain_exit: bool,
    /// `[auth] nonce_secret`, shared by relays behind one balancer.
    pub nonce_secret: Option<String>,
    /// `[tcp] enabled` (the daemon's default, on, when None).
    pub tcp: Option<bool>,
    /// `[tls] cert` and `key`: TURN over TLS on the listeners' IPs, port 5349.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `[tcp] proxy_protocol` and `[tls] proxy_protocol`.
    pub tcp_proxy_protocol: bool,
    pub tls_proxy_protocol: bool,
    /// `[proxy_protocol] allow_from`.
    pub proxy_allow_from: Vec<String>,
    /// `[connections]` (daemon defaults where None).
    pub connections: Connections,
    /// `[log] level`.
    pub log_level: &'static str,
    /// `xdp.trace` (see [`RelayConfig::with_xdp_trace`]).
    pub xdp_trace: bool,
}

/// The `[connections]` limits of TCP and TLS clients.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Connections {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_ip: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_buffer: Option<u32>,
}

/// A relay's own addresses in another topology than [`crate::topology`]'s.
#[derive(Clone, Debug)]
pub struct Placement {
    pub listen: SocketAddr,
    pub relay: IpAddr,
    /// Where XDP attaches (with [`Xdp::Auto`] or [`Xdp::Native`]).
    pub interfaces: Vec<&'static str>,
}

#[derive(Serialize)]
struct File<'a> {
    server: Server<'a>,
    auth: Auth<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Peers<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    limits: &'a BTreeMap<String, u64>,
    xdp: XdpSection,
    metrics: Metrics,
    log: Log,
    tcp: Tcp,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
    connections: &'a Connections,
    proxy_protocol: ProxyProtocol<'a>,
}

#[derive(Serialize)]
struct Tcp {
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    proxy_protocol: bool,
}

#[derive(Serialize)]
struct Tls {
    cert: String,
    key: String,
    proxy_protocol: bool,
}

#[derive(Serialize)]
struct ProxyProtocol<'a> {
    allow_from: &'a [String],
}

#[derive(Serialize)]
struct Server<'a> {
    realm: &'a str,
    listen: Vec<SocketAddr>,
    relay_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    relay_address_v6: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission_lifetime: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel_lifetime: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_allocations: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_allocations_per_user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coalesce_us: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    alternate_servers: &'a [SocketAddr],
    drain_exit: bool,
}

#[derive(Serialize)]
struct Auth<'a> {
    users: &'a [User],
    auth_secrets: &'a [String],
    zrest_secrets: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce_secret: Option<&'a str>,
}

#[derive(Serialize)]
struct Peers<'a> {
    allow: &'a [String],
}

#[derive(Serialize)]
struct XdpSection {
    mode: Xdp,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    trace: bool,
}

#[derive(Serialize)]
struct Metrics {
    listen: SocketAddr,
}

#[derive(Serialize)]
struct Log {
    level: &'static str,
}

impl RelayConfig {
    pub fn new(xdp: Xdp) -> RelayConfig {
        RelayConfig {
            realm: "e2e.turn-relay.test".into(),
            users: Vec::new(),
            auth_secrets: Vec::new(),
            zrest_secrets: Vec::new(),
            xdp,
            ipv6: false,
            permission_lifetime: None,
            channel_lifetime: None,
            max_allocations: None,
            max_allocations_per_user: None,
            coalesce_us: None,
            allowed_peers: TEST_NETWORKS.map(str::to_owned).to_vec(),
            limits: BTreeMap::new(),
            placement: None,
            alternate_servers: Vec::new(),
            drain_exit: false,
            nonce_secret: None,
            tcp: None,
            tls: None,
            tcp_proxy_protocol: false,
            tls_proxy_protocol: false,
            proxy_allow_from: Vec::new(),
            connections: Connections::default(),
            log_level: "info",
            xdp_trace: false,
        }
    }

    /// Turns on `xdp.trace`: the program logs every frame's decision.
    pub fn with_xdp_trace(mut self) -> RelayConfig {
        self.xdp_trace = true;
        self
    }

    /// Sets `[limits] <key> = value` (see `config/turn-relay.toml`).
    pub fn with_limit(mut self, key: &str, value: u64) -> RelayConfig {
        self.limits.insert(key.to_owned(), value);
        self
    }

    /// TURN over TLS with `certificate` on port 5349 of the listeners' IPs.
    pub fn with_tls(mut self, certificate: &TestCertificate) -> RelayConfig {
        self.tls = Some((certificate.cert.clone(), certificate.key.clone()));
        self
    }

    /// The TCP listeners this configuration opens (the UDP listeners' addresses).
    pub fn tcp_listeners(&self) -> Vec<SocketAddr> {
        if self.tcp == Some(false) {
            return Vec::new();
        }
        self.listeners()
    }

    /// The TLS listeners this configuration opens: port 5349 on the listeners' IPs.
    pub fn tls_listeners(&self) -> Vec<SocketAddr> {
        if self.tls.is_none() {
            return Vec::new();
        }
        self.listeners()
            .into_iter()
            .map(|listener| SocketAddr::new(listener.ip(), TLS_PORT))
            .collect()
    }

    /// Listens and relays at `placement` instead of the standard topology's addresses.
    pub fn placed(mut self, placement: Placement) -> RelayConfig {
        self.placement = Some(placement);
        self
    }

    /// Permissions expire `seconds` (≥ 1) after their last CreatePermission/ChannelBind.
    pub fn with_permission_lifetime(mut self, seconds: u32) -> RelayConfig {
        self.permission_lifetime = Some(seconds);
        self
    }

    /// Channel bindings expire `seconds` (≥ 1) after their last ChannelBind.
    pub fn with_channel_lifetime(mut self, seconds: u32) -> RelayConfig {
        self.channel_lifetime = Some(seconds);
        self
    }

    pub fn with_user(mut self, name: &str, password: &str) -> RelayConfig {
        self.users.push(User::new(name, password));
        self
    }

    pub fn with_auth_secret(mut self, secret: &str) -> RelayConfig {
        self.auth_secrets.push(secret.into());
        self
    }

    pub fn with_zrest_secret(mut self, secret: &str) -> RelayConfig {
        self.zrest_secrets.push(secret.into());
        self
    }

    /// Also listen and relay on IPv6.
    pub fn with_ipv6(mut self) -> RelayConfig {
        self.ipv6 = true;
        self
    }

    /// The listener addresses this configuration opens.
    pub fn listeners(&self) -> Vec<SocketAddr> {
        if let Some(placement) = &self.placement {
            return vec![placement.listen];
        }
        let mut listeners = vec![listener(4)];
        if self.ipv6 {
            listeners.push(listener(6));
        }
        listeners
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let file = File {
            server: Server {
                realm: &self.realm,
                listen: self.listeners(),
                relay_address: self
                    .placement
                    .as_ref()
                    .map_or(RELAY_RELAYED_V4.into(), |placement| placement.relay)
                    .to_string(),
                relay_address_v6: self.ipv6.then(|| RELAY_RELAYED_V6.to_string()),
                permission_lifetime: self.permission_lifetime,
                channel_lifetime: self.channel_lifetime,
                max_allocations: self.max_allocations,
                max_allocations_per_user: self.max_allocations_per_user,
                coalesce_us: self.coalesce_us,
                alternate_servers: &self.alternate_servers,
                drain_exit: self.drain_exit,
            },
            auth: Auth {
                users: &self.users,
                auth_secrets: &self.auth_secrets,
                zrest_secrets: &self.zrest_secrets,
                nonce_secret: self.nonce_secret.as_deref(),
            },
            peers: (!self.allowed_peers.is_empty()).then_some(Peers {
                allow: &self.allowed_peers,
            }),
            limits: &self.limits,
            xdp: XdpSection {
                mode: self.xdp,
                interfaces: match (&self.placement, self.xdp) {
                    (_, Xdp::Off) => Vec::new(),
                    (Some(placement), _) => placement.interfaces.clone(),
                    (None, _) => vec![RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE],
                },
                trace: self.xdp_trace,
            },
            metrics: Metrics {
                listen: METRICS_ADDRESS,
            },
            log: Log {
                level: self.log_level,
            },
            tcp: Tcp {
                enabled: self.tcp,
                proxy_protocol: self.tcp_proxy_protocol,
            },
            tls: self.tls.as_ref().map(|(cert, key)| Tls {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
                proxy_protocol: self.tls_proxy_protocol,
            }),
            connections: &self.connections,
            proxy_protocol: ProxyProtocol {
                allow_from: &self.proxy_allow_from,
            },
        };
        // Serializing plain strings, numbers and lists into TOML cannot fail.
        toml::to_string(&file).unwrap_or_else(|error| panic!("rendering the config: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn config_renders_the_documented_keys() {
        let text = RelayConfig::new(Xdp::Auto)
            .with_user("alice", "pa\"ss")
            .with_auth_secret("s1")
            .with_ipv6()
            .to_toml();
        let value: toml::Value = text.parse().expect("valid TOML");
        let get = |path: &str| {
            path.split('.')
                .try_fold(&value, |value, key| value.get(key))
                .unwrap_or_else(|| panic!("{path} missing in\n{text}"))
                .clone()
        };
        assert_eq!(
            get("server.listen"),
            toml::Value::from(vec!["198.18.1.1:3478", "[2001:2:0:1::1]:3478"])
        );
        assert_eq!(get("server.relay_address").as_str(), Some("198.19.1.1"));
        assert_eq!(
            get("server.relay_address_v6").as_str(),
            Some("2001:2:0:2::1")
        );
        let users = get("auth.users");
        let user = users.get(0).expect("one user");
        assert_eq!(
            user.get("name").and_then(toml::Value::as_str),
            Some("alice")
        );
        assert_eq!(
            user.get("password").and_then(toml::Value::as_str),
            Some("pa\"ss")
        );
        assert_eq!(get("auth.auth_secrets"), toml::Value::from(vec!["s1"]));
        assert_eq!(
            get("xdp.interfaces"),
            toml::Value::from(vec!["to-client", "to-peer"])
        );
        assert_eq!(
            value["peers"]["allow"],
            toml::Value::from(TEST_NETWORKS.to_vec()),
            "the test networks are peers"
        );
    }

    #[test]
    fn rendered_config_is_what_the_daemon_parses() {
        let mut config = RelayConfig::new(Xdp::Native)
            .with_user("alice", "secret")
            .with_permission_lifetime(2)
            .with_channel_lifetime(7)
            .with_limit("max_permissions_per_allocation", 3);
        config.max_allocations = Some(100);
        let text = config.to_toml();
        let parsed = turn_relay::daemon::config::Config::parse(&text, "test")
            .unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(parsed.permission_lifetime, Duration::from_secs(2));
        assert_eq!(parsed.channel_lifetime, Duration::from_secs(7));
        assert_eq!(parsed.limits.max_permissions_per_allocation, 3);
        assert_eq!(parsed.xdp_mode, turn_relay::bpf::XdpMode::Native);
        assert_eq!(
            parsed.xdp_interfaces,
            [RELAY_CLIENT_SIDE_INTERFACE, RELAY_PEER_SIDE_INTERFACE]
        );
        let defaults = turn_relay::daemon::config::Config::parse(
            &RelayConfig::new(Xdp::Off).to_toml(),
            "test",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(defaults.permission_lifetime, Duration::from_secs(300));
        assert_eq!(defaults.xdp_mode, turn_relay::bpf::XdpMode::Off);
    }
}
