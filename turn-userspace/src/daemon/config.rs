//! The TOML configuration (documented key by key in `config/turn-relay.toml`) and its
//! validation. Errors name the file, line and key:
//! `config error: /etc/turn-relay.toml line 12: server.port_range: "70000-1" is not a port range`.
//!
//! This is the edge of the program: it reads files and draws random secrets (the demo
//! password, a nonce secret when none is configured); the core modules get plain values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use rand::distributions::{Alphanumeric, DistString as _};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::bpf::{XdpMode, XdpSettings};
use crate::protocol::auth::{AuthConfig, Authenticator, StaticSecret, StaticUser};
use crate::protocol::policy::PeerPolicy;
use crate::protocol::turn::{RelayAddress, ServerConfig};

/// The port TURN listens on unless told otherwise (RFC 8656 §4).
pub const DEFAULT_TURN_PORT: u16 = 3478;
const DEFAULT_REALM: &str = "turn-relay.local";
const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 49152..=65535;
const DEFAULT_LIFETIME_SECS: u64 = 600;
const DEFAULT_MAX_LIFETIME_SECS: u64 = 3600;
/// RFC 8656 §9: permissions live 300 s.
const DEFAULT_PERMISSION_LIFETIME_SECS: u64 = 300;
/// RFC 8656 §12: channel bindings live 600 s.
const DEFAULT_CHANNEL_LIFETIME_SECS: u64 = 600;
const DEFAULT_MAX_ALLOCATIONS: usize = 16384;
const DEFAULT_NONCE_LIFETIME_SECS: u64 = 3600;
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9641";
const DEFAULT_LOG_LEVEL: &str = "info";
const DEMO_USER: &str = "demo";

/// A configuration that failed to load: says where and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config error: {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config error: {file} line {line}: {key}: {message}")]
    AtLine {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("config error: {file}: {key}: {message}")]
    Key {
        file: String,
        key: String,
        message: String,
    },
}

/// A relay address: what relay sockets bind to and what XOR-RELAYED-ADDRESS advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddressConfig {
    pub bind: IpAddr,
    pub advertised: IpAddr,
}

/// A user from `[auth] users`.
#[derive(Clone)]
pub struct UserConfig {
    pub name: String,
    pub secret: StaticSecret,
}

/// A validated configuration.
#[derive(Clone)]
pub struct Config {
    /// Where it came from (a path, or "embedded default").
    pub source: String,
    pub realm: String,
    pub software: Option<String>,
    pub listen: Vec<SocketAddr>,
    pub relay_v4: Option<RelayAddressConfig>,
    pub relay_v6: Option<RelayAddressConfig>,
    pub port_range: RangeInclusive<u16>,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    /// Relay worker threads; 0 = one per CPU.
    pub threads: usize,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub users: Vec<UserConfig>,
    pub auth_secrets: Vec<String>,
    pub zrest_secrets: Vec<String>,
    pub nonce_lifetime: Duration,
    /// The configured nonce secret, or a random one drawn at load time.
    pub nonce_secret: Vec<u8>,
    /// Whether the nonce secret came from the file (shared by relays behind a balancer).
    pub nonce_secret_configured: bool,
    pub advertise_password_algorithms: bool,
    pub peers_allow: Vec<IpNet>,
    pub peers_deny: Vec<IpNet>,
    pub xdp_mode: XdpMode,
    /// Empty: the interfaces that carry the listen and relay addresses.
    pub xdp_interfaces: Vec<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub log_level: String,
    /// The generated demo user (embedded default only): shown at start-up so a person can try it.
    demo_credentials: Option<(String, String)>,
}

/// Secrets are never shown: only names and counts.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("realm", &self.realm)
            .field("listen", &self.listen)
            .field("relay_v4", &self.relay_v4)
            .field("relay_v6", &self.relay_v6)
            .field("port_range", &self.port_range)
            .field(
                "users",
                &self.users.iter().map(|u| &u.name).collect::<Vec<_>>(),
            )
            .field("auth_secrets", &self.auth_secrets.len())
            .field("zrest_secrets", &self.zrest_secrets.len())
            .field("xdp_mode", &self.xdp_mode)
            .field("xdp_interfaces", &self.xdp_interfaces)
            .field("metrics_listen", &self.metrics_listen)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: source.clone(),
            source: error,
        })?;
        Config::parse(&text, &source)
    }

    /// Parses and validates TOML `text`; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|error| syntax_error(text, source, &error))?;
        Validator { text, source }.validate(raw)
    }

    /// The configuration used without `--config`: a loopback-only relay with a `demo` user
    /// whose password is drawn at random on every start.
    pub fn embedded_default() -> Config {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let demo_password = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
        Config {
            source: "embedded default".to_owned(),
            realm: DEFAULT_REALM.to_owned(),
            software: None,
            listen: vec![SocketAddr::new(loopback, DEFAULT_TURN_PORT)],
            relay_v4: Some(RelayAddressConfig {
                bind: loopback,
                advertised: loopback,
            }),
            relay_v6: None,
            port_range: DEFAULT_PORT_RANGE,
            default_lifetime: Duration::from_secs(DEFAULT_LIFETIME_SECS),
            max_lifetime: Duration::from_secs(DEFAULT_MAX_LIFETIME_SECS),
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
            max_allocations_per_user: 0,
            threads: 0,
            permission_lifetime: Duration::from_secs(DEFAULT_PERMISSION_LIFETIME_SECS),
            channel_lifetime: Duration::from_secs(DEFAULT_CHANNEL_LIFETIME_SECS),
            users: vec![UserConfig {
                name: DEMO_USER.to_owned(),
                secret: StaticSecret::Password(demo_password.clone()),
            }],
            auth_secrets: Vec::new(),
            zrest_secrets: Vec::new(),
            nonce_lifetime: Duration::from_secs(DEFAULT_NONCE_LIFETIME_SECS),
            nonce_secret: random_nonce_secret(),
            nonce_secret_configured: false,
            advertise_password_algorithms: true,
            // Loopback is denied to peers by default; allowing it here lets a client on
            // this host relay to a peer on this host, which is what a local trial needs.
            peers_allow: vec![IpNet::V4(ipnet::Ipv4Net::new_assert(
                Ipv4Addr::new(127, 0, 0, 0),
                8,
            ))],
            peers_deny: Vec::new(),
            xdp_mode: XdpMode::Auto,
            xdp_interfaces: vec!["lo".to_owned()],
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().ok(),
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            demo_credentials: Some((DEMO_USER.to_owned(), demo_password)),
        }
    }

    /// The generated demo user name and password of the embedded default, if this is it.
    pub fn demo_credentials(&self) -> Option<(&str, &str)> {
        self.demo_credentials
            .as_ref()
            .map(|(name, password)| (name.as_str(), password.as_str()))
    }

    /// Replaces the listen addresses (the `--listen` option).
    pub fn set_listen(&mut self, listen: Vec<SocketAddr>) -> Result<(), ConfigError> {
        for address in &listen {
            check_concrete_listen(*address).map_err(|message| ConfigError::Key {
                file: "--listen".to_owned(),
                key: "server.listen".to_owned(),
                message,
            })?;
        }
        if listen.is_empty() {
            return Err(ConfigError::Key {
                file: "--listen".to_owned(),
                key: "server.listen".to_owned(),
                message: "at least one address is needed".to_owned(),
            });
        }
        self.listen = listen;
        Ok(())
    }

    /// Replaces the realm (the `--realm` option).
    pub fn set_realm(&mut self, realm: String) -> Result<(), ConfigError> {
        check_realm(&realm).map_err(|message| ConfigError::Key {
            file: "--realm".to_owned(),
            key: "server.realm".to_owned(),
            message,
        })?;
        self.realm = realm;
        Ok(())
    }

    /// Replaces the log level (the `--log-level` option).
    pub fn set_log_level(&mut self, level: String) -> Result<(), ConfigError> {
        check_log_level(&level).map_err(|message| ConfigError::Key {
            file: "--log-level".to_owned(),
            key: "log.level".to_owned(),
            message,
        })?;
        self.log_level = level;
        Ok(())
    }

    /// The protocol core's settings.
    pub fn server_config(&self) -> ServerConfig {
        let relay = |address: Option<RelayAddressConfig>| {
            address.map(|a| RelayAddress {
                bind: a.bind,
                advertised: a.advertised,
            })
        };
        ServerConfig {
            realm: self.realm.clone(),
            software: self.software.clone(),
            relay_v4: relay(self.relay_v4),
            relay_v6: relay(self.relay_v6),
            port_range: self.port_range.clone(),
            default_lifetime: self.default_lifetime,
            max_lifetime: self.max_lifetime,
            max_allocations: self.max_allocations,
            max_allocations_per_user: self.max_allocations_per_user,
            permission_lifetime: self.permission_lifetime,
            channel_lifetime: self.channel_lifetime,
        }
    }

    /// The credential store and nonce issuer.
    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.auth_config())
    }

    /// The configuration of the [`Authenticator`].
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            static_users: self
                .users
                .iter()
                .map(|user| StaticUser {
                    name: user.name.clone(),
                    secret: user.secret.clone(),
                })
                .collect(),
            auth_secrets: self.auth_secrets.clone(),
            zrest_secrets: self.zrest_secrets.clone(),
            nonce_lifetime: self.nonce_lifetime,
            nonce_secret: self.nonce_secret.clone(),
            advertise_password_algorithms: self.advertise_password_algorithms,
        }
    }

    /// The peer address policy; the relay's own addresses are allowed (hairpinning).
    pub fn peer_policy(&self) -> PeerPolicy {
        let own = [self.relay_v4, self.relay_v6]
            .into_iter()
            .flatten()
            .flat_map(|relay| [relay.bind, relay.advertised])
            .collect();
        PeerPolicy::new(self.peers_allow.clone(), self.peers_deny.clone(), own)
    }

    /// What to ask of the XDP loader; `interfaces` are the resolved interface names.
    pub fn xdp_settings(&self, interfaces: Vec<String>) -> XdpSettings {
        XdpSettings {
            mode: self.xdp_mode,
            interfaces,
            max_allocations: u32::try_from(self.max_allocations).unwrap_or(u32::MAX),
        }
    }

    /// Authentication modes, for the start-up log (names and counts, never secrets).
    pub fn auth_summary(&self) -> String {
        let mut modes = Vec::new();
        if !self.users.is_empty() {
            let names: Vec<&str> = self.users.iter().map(|user| user.name.as_str()).collect();
            modes.push(format!(
                "{} static user(s) [{}]",
                names.len(),
                names.join(", ")
            ));
        }
        if !self.auth_secrets.is_empty() {
            modes.push(format!(
                "use-auth-secret ({} secret(s))",
                self.auth_secrets.len()
            ));
        }
        if !self.zrest_secrets.is_empty() {
            modes.push(format!("zrest ({} key(s))", self.zrest_secrets.len()));
        }
        if modes.is_empty() {
            "none: every allocation will be refused (STUN Binding still answers)".to_owned()
        } else {
            modes.join(", ")
        }
    }

    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`.
    pub fn to_toml(&self) -> String {
        const REDACTED: &str = "<redacted>";
        let redacted =
            |list: &[String]| list.iter().map(|_| REDACTED.to_owned()).collect::<Vec<_>>();
        let printed = RawConfig {
            server: RawServer {
                realm: Some(spanless(self.realm.clone())),
                software: Some(self.software.clone().unwrap_or_default()),
                listen: Some(
                    self.listen
                        .iter()
                        .map(|a| spanless(a.to_string()))
                        .collect(),
                ),
                relay_address: self.relay_v4.map(|r| spanless(r.bind.to_string())),
                public_address: self.relay_v4.map(|r| spanless(r.advertised.to_string())),
                relay_address_v6: self.relay_v6.map(|r| spanless(r.bind.to_string())),
                public_address_v6: self.relay_v6.map(|r| spanless(r.advertised.to_string())),
                port_range: Some(spanless(format!(
                    "{}-{}",
                    self.port_range.start(),
                    self.port_range.end()
                ))),
                default_lifetime: Some(spanless(self.default_lifetime.as_secs())),
                max_lifetime: Some(spanless(self.max_lifetime.as_secs())),
                max_allocations: Some(spanless(self.max_allocations as u64)),
                max_allocations_per_user: Some(self.max_allocations_per_user as u64),
                threads: Some(self.threads as u64),
                permission_lifetime: Some(spanless(self.permission_lifetime.as_secs())),
                channel_lifetime: Some(spanless(self.channel_lifetime.as_secs())),
            },
            auth: RawAuth {
                users: self
                    .users
                    .iter()
                    .map(|user| {
                        let (password, key) = match user.secret {
                            StaticSecret::Password(_) => (Some(REDACTED.to_owned()), None),
                            StaticSecret::Md5Key(_) => (None, Some(spanless(REDACTED.to_owned()))),
                        };
                        spanless(RawUser {
                            name: user.name.clone(),
                            password,
                            key,
                        })
                    })
                    .collect(),
                auth_secrets: redacted(&self.auth_secrets)
                    .into_iter()
                    .map(spanless)
                    .collect(),
                zrest_secrets: redacted(&self.zrest_secrets)
                    .into_iter()
                    .map(spanless)
                    .collect(),
                nonce_lifetime: Some(spanless(self.nonce_lifetime.as_secs())),
                nonce_secret: self
                    .nonce_secret_configured
                    .then(|| spanless(REDACTED.to_owned())),
                advertise_password_algorithms: Some(self.advertise_password_algorithms),
            },
            peers: RawPeers {
                allow: self
                    .peers_allow
                    .iter()
                    .map(|n| spanless(n.to_string()))
                    .collect(),
                deny: self
                    .peers_deny
                    .iter()
                    .map(|n| spanless(n.to_string()))
                    .collect(),
            },
            xdp: RawXdp {
                mode: Some(spanless(self.xdp_mode.to_string())),
                interfaces: self.xdp_interfaces.clone(),
            },
            metrics: RawMetrics {
                listen: Some(spanless(
                    self.metrics_listen
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                )),
            },
            log: RawLog {
                level: Some(spanless(self.log_level.clone())),
            },
        };
        let body = toml::to_string_pretty(&printed)
            .unwrap_or_else(|error| format!("# cannot print: {error}\n"));
        format!(
            "# Effective configuration (from {}); secrets are redacted.\n{body}",
            self.source
        )
    }
}

/// A [`Spanned`] value for printing (the span is irrelevant there).
fn spanless<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn random_nonce_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}

// ---- The file as written (every value that needs checking keeps its position) ----

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    peers: RawPeers,
    #[serde(default)]
    xdp: RawXdp,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    realm: Option<Spanned<String>>,
    software: Option<String>,
    listen: Option<Vec<Spanned<String>>>,
    relay_address: Option<Spanned<String>>,
    relay_address_v6: Option<Spanned<String>>,
    public_address: Option<Spanned<String>>,
    public_address_v6: Option<Spanned<String>>,
    port_range: Option<Spanned<String>>,
    default_lifetime: Option<Spanned<u64>>,
    max_lifetime: Option<Spanned<u64>>,
    max_allocations: Option<Spanned<u64>>,
    max_allocations_per_user: Option<u64>,
    threads: Option<u64>,
    permission_lifetime: Option<Spanned<u64>>,
    channel_lifetime: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    users: Vec<Spanned<RawUser>>,
    #[serde(default)]
    auth_secrets: Vec<Spanned<String>>,
    #[serde(default)]
    zrest_secrets: Vec<Spanned<String>>,
    nonce_lifetime: Option<Spanned<u64>>,
    nonce_secret: Option<Spanned<String>>,
    advertise_password_algorithms: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: Option<String>,
    key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawPeers {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawXdp {
    mode: Option<Spanned<String>>,
    #[serde(default)]
    interfaces: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
}

// ---- Validation ----

struct Validator<'a> {
    text: &'a str,
    source: &'a str,
}

impl Validator<'_> {
    fn at(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::AtLine {
            file: self.source.to_owned(),
            line: line_of(self.text, span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn missing(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.source.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Applies `check` to a positioned value; a failure is reported at its line.
    fn check<T, U>(
        &self,
        value: &Spanned<T>,
        key: &str,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|message| self.at(value.span(), key, message))
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let server = raw.server;
        let realm = match &server.realm {
            Some(realm) => self.check(realm, "server.realm", |r| {
                check_realm(r).map(|()| r.clone())
            })?,
            None => DEFAULT_REALM.to_owned(),
        };
        let relay_v4 =
            self.relay_address(&server.relay_address, &server.public_address, "", true)?;
        let relay_v6 = self.relay_address(
            &server.relay_address_v6,
            &server.public_address_v6,
            "_v6",
            false,
        )?;
        if relay_v4.is_none() && relay_v6.is_none() {
            return Err(self.missing(
                "server.relay_address",
                "set relay_address (IPv4) and/or relay_address_v6: the local address relay sockets bind to",
            ));
        }
        let listen = match &server.listen {
            Some(list) => {
                let mut addresses = Vec::with_capacity(list.len());
                for item in list {
                    addresses.push(self.check(item, "server.listen", |text| {
                        let address: SocketAddr = text.parse().map_err(|_| {
                            format!("{text:?} is not an ip:port address (IPv6: [addr]:port)")
                        })?;
                        check_concrete_listen(address).map(|()| address)
                    })?);
                }
                if addresses.is_empty() {
                    return Err(self.missing("server.listen", "at least one address is needed"));
                }
                addresses
            }
            None => [relay_v4, relay_v6]
                .into_iter()
                .flatten()
                .map(|r| SocketAddr::new(r.bind, DEFAULT_TURN_PORT))
                .collect(),
        };
        let port_range = match &server.port_range {
            Some(range) => self.check(range, "server.port_range", |text| parse_port_range(text))?,
            None => DEFAULT_PORT_RANGE,
        };
        let default_lifetime = self.seconds(
            &server.default_lifetime,
            "server.default_lifetime",
            DEFAULT_LIFETIME_SECS,
        )?;
        let max_lifetime = self.seconds(
            &server.max_lifetime,
            "server.max_lifetime",
            DEFAULT_MAX_LIFETIME_SECS,
        )?;
        if default_lifetime > max_lifetime {
            let span = server
                .default_lifetime
                .as_ref()
                .or(server.max_lifetime.as_ref())
                .map(Spanned::span);
            let message = format!(
                "default_lifetime ({} s) is longer than max_lifetime ({} s)",
                default_lifetime.as_secs(),
                max_lifetime.as_secs()
            );
            return Err(match span {
                Some(span) => self.at(span, "server.default_lifetime", message),
                None => self.missing("server.default_lifetime", message),
            });
        }
        let max_allocations =
            match &server.max_allocations {
                Some(value) => self.check(value, "server.max_allocations", |n| {
                    match usize::try_from(*n) {
                        Ok(limit) if limit > 0 && *n <= u64::from(u32::MAX) => Ok(limit),
                        _ => Err(format!("{n} is not between 1 and {}", u32::MAX)),
                    }
                })?,
                None => DEFAULT_MAX_ALLOCATIONS,
            };
        let max_allocations_per_user = server
            .max_allocations_per_user
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let threads = server
            .threads
            .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
        // Independent of each other: a channel shorter than its permission simply stops
        // relaying earlier (ChannelData needs both alive).
        let permission_lifetime = self.seconds(
            &server.permission_lifetime,
            "server.permission_lifetime",
            DEFAULT_PERMISSION_LIFETIME_SECS,
        )?;
        let channel_lifetime = self.seconds(
            &server.channel_lifetime,
            "server.channel_lifetime",
            DEFAULT_CHANNEL_LIFETIME_SECS,
        )?;

        let auth = raw.auth;
        let mut users: Vec<UserConfig> = Vec::with_capacity(auth.users.len());
        for user in &auth.users {
            let parsed = self.check(user, "auth.users", |u| self.user(u))?;
            if users.iter().any(|existing| existing.name == parsed.name) {
                return Err(self.at(
                    user.span(),
                    "auth.users",
                    format!("user {:?} is listed twice", parsed.name),
                ));
            }
            users.push(parsed);
        }
        let auth_secrets = self.secrets(&auth.auth_secrets, "auth.auth_secrets")?;
        let zrest_secrets = self.secrets(&auth.zrest_secrets, "auth.zrest_secrets")?;
        let nonce_lifetime = self.seconds(
            &auth.nonce_lifetime,
            "auth.nonce_lifetime",
            DEFAULT_NONCE_LIFETIME_SECS,
        )?;
        let (nonce_secret, nonce_secret_configured) = match &auth.nonce_secret {
            Some(secret) => (
                self.check(secret, "auth.nonce_secret", |s| non_empty_secret(s))?
                    .into_bytes(),
                true,
            ),
            None => (random_nonce_secret(), false),
        };

        let peers_allow = self.networks(&raw.peers.allow, "peers.allow")?;
        let peers_deny = self.networks(&raw.peers.deny, "peers.deny")?;

        let xdp_mode = match &raw.xdp.mode {
            Some(mode) => self.check(mode, "xdp.mode", |m| parse_xdp_mode(m))?,
            None => XdpMode::Auto,
        };
        if let Some(empty) = raw
            .xdp
            .interfaces
            .iter()
            .find(|name| name.is_empty() || name.len() >= libc::IF_NAMESIZE)
        {
            return Err(self.missing(
                "xdp.interfaces",
                format!("{empty:?} is not an interface name"),
            ));
        }
        let metrics_listen = match &raw.metrics.listen {
            Some(listen) => self.check(listen, "metrics.listen", |text| {
                if text.is_empty() {
                    return Ok(None);
                }
                text.parse::<SocketAddr>().map(Some).map_err(|_| {
                    format!("{text:?} is not an ip:port address (empty turns metrics off)")
                })
            })?,
            None => DEFAULT_METRICS_LISTEN.parse().ok(),
        };
        let log_level = match &raw.log.level {
            Some(level) => self.check(level, "log.level", |l| {
                check_log_level(l).map(|()| l.clone())
            })?,
            None => DEFAULT_LOG_LEVEL.to_owned(),
        };

        Ok(Config {
            source: self.source.to_owned(),
            realm,
            software: server.software.filter(|s| !s.is_empty()),
            listen,
            relay_v4,
            relay_v6,
            port_range,
            default_lifetime,
            max_lifetime,
            max_allocations,
            max_allocations_per_user,
            threads,
            permission_lifetime,
            channel_lifetime,
            users,
            auth_secrets,
            zrest_secrets,
            nonce_lifetime,
            nonce_secret,
            nonce_secret_configured,
            advertise_password_algorithms: auth.advertise_password_algorithms.unwrap_or(true),
            peers_allow,
            peers_deny,
            xdp_mode,
            xdp_interfaces: raw.xdp.interfaces,
            metrics_listen,
            log_level,
            demo_credentials: None,
        })
    }

    /// `relay_address{suffix}` and `public_address{suffix}` of one family.
    fn relay_address(
        &self,
        bind: &Option<Spanned<String>>,
        public: &Option<Spanned<String>>,
        suffix: &str,
        ipv4: bool,
    ) -> Result<Option<RelayAddressConfig>, ConfigError> {
        let family = if ipv4 { "IPv4" } else { "IPv6" };
        let parse = |text: &String| -> Result<IpAddr, String> {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| format!("{text:?} is not an {family} address"))?;
            if ip.is_ipv4() != ipv4 {
                return Err(format!("{text:?} is not an {family} address"));
            }
            Ok(ip)
        };
        let bind_key = format!("server.relay_address{suffix}");
        let public_key = format!("server.public_address{suffix}");
        let Some(bind) = bind else {
            if public.is_some() {
                return Err(self.missing(
                    &bind_key,
                    format!("{public_key} is set but {bind_key} is not"),
                ));
            }
            return Ok(None);
        };
        let bind_ip = self.check(bind, &bind_key, |text| {
            let ip = parse(text)?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(format!(
                    "{text:?} must be a concrete address of this host (relay sockets bind to it)"
                ));
            }
            Ok(ip)
        })?;
        let advertised = match public {
            Some(public) => self.check(public, &public_key, |text| {
                let ip = parse(text)?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(format!("{text:?} cannot be advertised to clients"));
                }
                Ok(ip)
            })?,
            None => bind_ip,
        };
        Ok(Some(RelayAddressConfig {
            bind: bind_ip,
            advertised,
        }))
    }

    fn seconds(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(value) => self.check(value, key, |secs| {
                if *secs == 0 {
                    Err("must be at least 1 second".to_owned())
                } else {
                    Ok(Duration::from_secs(*secs))
                }
            }),
            None => Ok(Duration::from_secs(default)),
        }
    }

    fn user(&self, user: &RawUser) -> Result<UserConfig, String> {
        if user.name.is_empty() {
            return Err("a user needs a non-empty name".to_owned());
        }
        let secret = match (&user.password, &user.key) {
            (Some(password), None) => StaticSecret::Password(non_empty_secret(password)?),
            (None, Some(key)) => StaticSecret::Md5Key(parse_md5_key(key.get_ref())?),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "user {:?} has both password and key: set one",
                    user.name
                ))
            }
            (None, None) => return Err(format!("user {:?} needs a password or a key", user.name)),
        };
        Ok(UserConfig {
            name: user.name.clone(),
            secret,
        })
    }

    fn secrets(&self, list: &[Spanned<String>], key: &str) -> Result<Vec<String>, ConfigError> {
        list.iter()
            .map(|secret| self.check(secret, key, |s| non_empty_secret(s)))
            .collect()
    }

    fn networks(&self, list: &[Spanned<String>], key: &str) -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .map(|net| self.check(net, key, |text| parse_network(text)))
            .collect()
    }
}

fn non_empty_secret(secret: &str) -> Result<String, String> {
    if secret.is_empty() {
        Err("secrets and passwords must not be empty".to_owned())
    } else {
        Ok(secret.to_owned())
    }
}

/// 32 hex digits of MD5(user:realm:password), optionally prefixed `0x` as coturn writes it.
fn parse_md5_key(text: &str) -> Result<[u8; 16], String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    let mut key = [0u8; 16];
    hex::decode_to_slice(digits, &mut key)
        .map_err(|_| "key must be 32 hex digits of MD5(name:realm:password)".to_owned())?;
    Ok(key)
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let not_a_range = || format!("{text:?} is not a port range (e.g. \"49152-65535\")");
    let (low, high) = text.split_once('-').ok_or_else(not_a_range)?;
    let low: u16 = low.trim().parse().map_err(|_| not_a_range())?;
    let high: u16 = high.trim().parse().map_err(|_| not_a_range())?;
    if low == 0 || low > high {
        return Err(not_a_range());
    }
    Ok(low..=high)
}

/// A CIDR network; a bare address means just that address.
fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not a CIDR network (e.g. \"10.0.0.0/8\")"))
}

fn parse_xdp_mode(text: &str) -> Result<XdpMode, String> {
    match text {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "skb" => Ok(XdpMode::Skb),
        "off" => Ok(XdpMode::Off),
        other => Err(format!(
            "{other:?} is not one of \"auto\", \"native\", \"skb\", \"off\""
        )),
    }
}

fn check_realm(realm: &str) -> Result<(), String> {
    // RFC 8489 §14.9: REALM is fewer than 128 characters, a quoted-string body.
    if realm.is_empty()
        || realm.chars().count() >= 128
        || realm.contains(['"', '\\'])
        || realm.chars().any(char::is_control)
    {
        return Err(format!("{realm:?} is not a realm (1-127 characters, no quotes, backslashes or control characters)"));
    }
    Ok(())
}

fn check_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|error| format!("{level:?} is not a log level or filter ({error})"))
}

/// Replies and the XDP program need the exact address clients send to, so wildcard
/// listeners are refused.
fn check_concrete_listen(address: SocketAddr) -> Result<(), String> {
    if address.ip().is_unspecified() {
        return Err(format!(
            "{address} is a wildcard address: listen on this host's concrete address(es) instead, \
             so replies leave from the address clients sent to"
        ));
    }
    if address.port() == 0 {
        return Err(format!("{address} has no port"));
    }
    Ok(())
}

/// A toml syntax or type error, placed and attributed to its key.
fn syntax_error(text: &str, source: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().to_owned();
    let Some(span) = error.span() else {
        return ConfigError::Key {
            file: source.to_owned(),
            key: "(file)".to_owned(),
            message,
        };
    };
    let key = unknown_field(&message)
        .map(|field| qualified(&table_at(text, span.start), field))
        .unwrap_or_else(|| key_at(text, span.start));
    ConfigError::AtLine {
        file: source.to_owned(),
        line: line_of(text, span.start),
        key,
        message,
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

fn qualified(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |before| before.iter().filter(|&&b| b == b'\n').count())
        + 1
}

/// The `[table]` (or `[[table]]`) header in force at `offset`.
fn table_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    before
        .lines()
        .rev()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .find(|line| line.starts_with('[') && line.ends_with(']') && !line.contains('='))
        .map(|header| {
            header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The dotted key whose value contains `offset`: the table in force plus the last `key =`
/// before `offset` (outside strings and comments).
fn key_at(text: &str, offset: usize) -> String {
    let table = table_at(text, offset);
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let mut last_key = None;
    let mut in_string: Option<char> = None;
    let mut in_comment = false;
    let mut escaped = false;
    let mut key_start = 0;
    for (index, c) in before.char_indices() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
                key_start = index + 1;
            }
            continue;
        }
        if let Some(quote) = in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                in_string = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => in_string = Some(c),
            '#' => in_comment = true,
            '\n' | '{' | ',' | '[' => key_start = index + 1,
            '=' => {
                let key = before.get(key_start..index).unwrap_or("").trim();
                if !key.is_empty() {
                    last_key = Some(key.to_owned());
                }
            }
            _ => {}
        }
    }
    match last_key {
        Some(key) => qualified(&table, &key),
        None if table.is_empty() => "(top level)".to_owned(),
        None => table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match Config::parse(text, "test.toml") {
            Ok(config) => panic!("expected an error, parsed {config:?}"),
            Err(error) => error.to_string(),
        }
    }

    const MINIMAL: &str = "[server]\nrelay_address = \"198.18.0.1\"\n";

    #[test]
    fn reference_config_in_the_repository_parses() {
        let text = include_str!("../../../config/turn-relay.toml");
        let config =
            Config::parse(text, "config/turn-relay.toml").expect("reference config is valid");
        assert_eq!(config.realm, DEFAULT_REALM);
        assert_eq!(config.port_range, DEFAULT_PORT_RANGE);
        assert_eq!(config.default_lifetime, Duration::from_secs(600));
        assert_eq!(config.max_lifetime, Duration::from_secs(3600));
        assert_eq!(config.permission_lifetime, Duration::from_secs(300));
        assert_eq!(config.channel_lifetime, Duration::from_secs(600));
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert_eq!(config.metrics_listen, DEFAULT_METRICS_LISTEN.parse().ok());
    }

    #[test]
    fn reference_config_documents_every_key() {
        let text = include_str!("../../../config/turn-relay.toml");
        let sections: &[(&str, &[&str])] = &[
            (
                "server",
                &[
                    "realm",
                    "software",
                    "listen",
                    "relay_address",
                    "relay_address_v6",
                    "public_address",
                    "public_address_v6",
                    "port_range",
                    "default_lifetime",
                    "max_lifetime",
                    "max_allocations",
                    "max_allocations_per_user",
                    "threads",
                    "permission_lifetime",
                    "channel_lifetime",
                ],
            ),
            (
                "auth",
                &[
                    "users",
                    "auth_secrets",
                    "zrest_secrets",
                    "nonce_lifetime",
                    "nonce_secret",
                    "advertise_password_algorithms",
                ],
            ),
            ("peers", &["allow", "deny"]),
            ("xdp", &["mode", "interfaces"]),
            ("metrics", &["listen"]),
            ("log", &["level"]),
        ];
        for (section, keys) in sections {
            let start = text
                .find(&format!("\n[{section}]\n"))
                .unwrap_or_else(|| panic!("[{section}] missing"));
            let end = text[start + 1..]
                .find("\n[")
                .map_or(text.len(), |next| start + 1 + next);
            let body = &text[start..end];
            for key in *keys {
                let documented = body.lines().any(|line| {
                    line.trim_start_matches(['#', ' '])
                        .starts_with(&format!("{key} ="))
                });
                assert!(
                    documented,
                    "{section}.{key} is not documented in config/turn-relay.toml"
                );
            }
        }
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
        assert_eq!(config.max_allocations, DEFAULT_MAX_ALLOCATIONS);
        assert_eq!(config.max_allocations_per_user, 0);
        assert_eq!(config.nonce_lifetime, Duration::from_secs(3600));
        assert_eq!(config.nonce_secret.len(), 32);
        assert!(!config.nonce_secret_configured);
        assert_eq!(config.log_level, "info");
        assert!(config.software.is_none());
        assert!(config.demo_credentials().is_none());
    }

    #[test]
    fn full_config_round_trips_every_key() {
        let text = r#"
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
"#;
        let config = Config::parse(text, "test.toml").expect("valid");
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
        ] {
            assert!(printed.contains(shown), "{shown} missing:\n{printed}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let table: &[(&str, &str)] = &[
            (
                "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"70000-1\"\n",
                "config error: test.toml line 3: server.port_range: \"70000-1\" is not a port range",
            ),
            (
                "[server]\nrelay_address = \"198.18.0.1\"\nport_range = \"60000-50000\"\n",
                "config error: test.toml line 3: server.port_range: \"60000-50000\" is not a port range",
            ),
            ("[server]\nrelay_address = \"198.18.0.1\"\nprot = 1\n", "config error: test.toml line 3: server.prot: unknown field `prot`"),
            ("[servr]\n", "config error: test.toml line 1: servr: unknown field `servr`"),
            (
                "[server]\nrelay_address = \"198.18.0.1\"\nmax_lifetime = \"long\"\n",
                "config error: test.toml line 3: server.max_lifetime: invalid type: string \"long\"",
            ),
            ("[server]\nrelay_address = \"198.18.0.1\"\ndefault_lifetime = 0\n", "line 3: server.default_lifetime: must be at least 1 second"),
            (
                "[server]\nrelay_address = \"198.18.0.1\"\ndefault_lifetime = 4000\n",
                "line 3: server.default_lifetime: default_lifetime (4000 s) is longer than max_lifetime (3600 s)",
            ),
            ("[server]\nrelay_address = \"::1\"\n", "line 2: server.relay_address: \"::1\" is not an IPv4 address"),
            ("[server]\nrelay_address = \"0.0.0.0\"\n", "line 2: server.relay_address: \"0.0.0.0\" must be a concrete address"),
            ("[server]\nrelay_address_v6 = \"198.18.0.1\"\n", "line 2: server.relay_address_v6: \"198.18.0.1\" is not an IPv6 address"),
            ("[server]\nrealm = \"x\"\n", "config error: test.toml: server.relay_address: set relay_address"),
            ("[server]\npublic_address = \"203.0.113.1\"\n", "server.relay_address: server.public_address is set but server.relay_address is not"),
            (
                "[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\n  \"198.18.0.1:3478\",\n  \"nonsense\",\n]\n",
                "line 5: server.listen: \"nonsense\" is not an ip:port address",
            ),
            ("[server]\nrelay_address = \"198.18.0.1\"\nlisten = [\"0.0.0.0:3478\"]\n", "line 3: server.listen: 0.0.0.0:3478 is a wildcard address"),
            ("[server]\nrelay_address = \"198.18.0.1\"\nlisten = []\n", "server.listen: at least one address is needed"),
            (
                "[server]\nrelay_address = \"198.18.0.1\"\n[peers]\nallow = [\"10.0.0.0/33\"]\n",
                "line 4: peers.allow: \"10.0.0.0/33\" is not a CIDR network",
            ),
            ("[server]\nrelay_address = \"198.18.0.1\"\n[xdp]\nmode = \"fast\"\n", "line 4: xdp.mode: \"fast\" is not one of"),
            ("[server]\nrelay_address = \"198.18.0.1\"\n[metrics]\nlisten = \"9641\"\n", "line 4: metrics.listen: \"9641\" is not an ip:port"),
            ("[server]\nrelay_address = \"198.18.0.1\"\n[log]\nlevel = \"loud=[\"\n", "line 4: log.level: \"loud=[\" is not a log level"),
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
            ("[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nauth_secrets = [\"\"]\n", "line 4: auth.auth_secrets: secrets and passwords must not be empty"),
            ("[server]\nrelay_address = \"198.18.0.1\"\n[auth]\nnonce_lifetime = -5\n", "line 4: auth.nonce_lifetime: invalid value: integer `-5`"),
            ("[server]\nrelay_address = \"198.18.0.1\"\nrealm = \"a\\\"b\"\n", "line 3: server.realm:"),
            ("[server]\nrelay_address = \"198.18.0.1\"\nmax_allocations = 0\n", "line 3: server.max_allocations: 0 is not between 1"),
            ("[server]\nrelay_address = \"198.18.0.1\"\npermission_lifetime = 0\n", "line 3: server.permission_lifetime: must be at least 1 second"),
            ("[server]\nrelay_address = \"198.18.0.1\"\nchannel_lifetime = 0\n", "line 3: server.channel_lifetime: must be at least 1 second"),
            ("[server]\nrelay_address = \"198.18.0.1\"\nchannel_lifetime = \"1m\"\n", "line 3: server.channel_lifetime: invalid type: string"),
            ("[server\n", "config error: test.toml line 1: "),
        ];
        for (text, expected) in table {
            let error = error_of(text);
            assert!(
                error.contains(expected),
                "for {text:?}\n  got {error}\n  want {expected}"
            );
        }
    }

    #[test]
    fn embedded_default_is_a_loopback_demo() {
        let config = Config::embedded_default();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(config.listen, vec![SocketAddr::new(loopback, 3478)]);
        assert_eq!(config.relay_v4.map(|r| r.bind), Some(loopback));
        assert_eq!(config.realm, "turn-relay.local");
        assert_eq!(config.xdp_mode, XdpMode::Auto);
        assert_eq!(config.xdp_interfaces, vec!["lo".to_owned()]);
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
        assert_eq!(server.max_allocations, DEFAULT_MAX_ALLOCATIONS);
        assert_eq!(server.max_allocations_per_user, 3);
        assert_eq!(server.realm, DEFAULT_REALM);
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
        assert!(config
            .set_listen(vec!["0.0.0.0:3478".parse().expect("addr")])
            .is_err());
        assert!(config.set_listen(vec![]).is_err());
        config
            .set_listen(vec!["127.0.0.1:3479".parse().expect("addr")])
            .expect("valid");
        assert_eq!(config.listen[0].port(), 3479);
        assert!(config.set_realm(String::new()).is_err());
        config.set_realm("example.org".into()).expect("valid");
        assert!(config.set_log_level("[".into()).is_err());
        config
            .set_log_level("turn_relay=debug".into())
            .expect("valid");
    }

    #[test]
    fn line_numbers_and_keys_from_offsets() {
        let text =
            "a = 1\n[server]\n# comment = x\nport = \"v\" # k = 2\nlisten = [\n \"x\",\n \"y\"]\n";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, text.find("\"v\"").expect("found")), 4);
        assert_eq!(
            key_at(text, text.find("\"v\"").expect("found")),
            "server.port"
        );
        assert_eq!(
            key_at(text, text.find("\"y\"").expect("found")),
            "server.listen"
        );
        assert_eq!(key_at(text, 4), "a");
    }
}
