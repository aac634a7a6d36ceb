//! The TOML configuration (documented key by key in `config/turn-relay.toml`).
//!
//! - [`schema`]: the file as written, every checked value with its position.
//! - [`defaults`]: what applies when a key is absent: the core's knobs come from
//!   [`ServerConfig::default`], the daemon's own knobs are listed there.
//! - `validate`: the checks and bounds; errors name the file, line and key:
//!   `config error: /etc/turn-relay.toml line 12: server.port_range: "70000-1" is not a port range`.
//! - `print`: `--print-config`, secrets redacted.
//!
//! This is the edge of the program: it reads files and draws random secrets (the demo
//! password, a nonce secret when none is configured); the core modules get plain values.

mod defaults;
mod error;
pub mod import;
mod keys;
mod print;
mod reload;
mod schema;
mod sources;
mod streams;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use rand::distributions::{Alphanumeric, DistString as _};
use rand::RngCore as _;

use crate::bpf::{XdpMode, XdpSettings};
use crate::protocol::auth::{AuthConfig, Authenticator, StaticSecret, StaticUser};
use crate::protocol::policy::PeerPolicy;
use crate::protocol::turn::{RelayAddress, ServerConfig, ServerLimits};

pub use defaults::DEFAULT_TURN_PORT;
pub use error::ConfigError;
pub use keys::ENV_PREFIX;
pub use reload::Reloaded;
pub use sources::{CommandLineValue, Origin, Origins, Sources};
pub use streams::{ConnectionLimits, StreamConfig, DEFAULT_TLS_PORT};
pub use validate::{MAX_ALLOCATIONS, MAX_ENTRIES_PER_ALLOCATION, MAX_LIFETIME_SECS, MAX_THREADS};

/// The configuration used without `--config`: a loopback relay that may relay to loopback
/// peers (denied to peers by default), which is what a trial on one host needs.
const EMBEDDED_DEFAULT: &str = r#"
[server]
relay_address = "127.0.0.1"

[peers]
allow = ["127.0.0.0/8"]
"#;
const EMBEDDED_DEFAULT_SOURCE: &str = "embedded default";
/// The name of a configuration made of environment variables alone.
const ENVIRONMENT_SOURCE: &str = "environment";
const DEMO_USER: &str = "demo";

/// A relay address: what relay sockets bind to and what XOR-RELAYED-ADDRESS advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayAddressConfig {
    pub bind: IpAddr,
    pub advertised: IpAddr,
}

/// How log lines are written (`log.format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The accepted spellings, for messages and `--help`.
    pub const NAMES: [&'static str; 2] = ["text", "json"];
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not one of \"text\", \"json\"")),
        }
    }
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
    /// How long a relay worker waits after its sockets woke it before it reads them, so
    /// that datagrams arriving meanwhile share the wake-up (interrupt coalescing, as a
    /// NIC's `rx-usecs`); zero: none.
    pub coalesce: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    /// Other relays a draining relay sends new allocations to (300 Try Alternate).
    pub alternate_servers: Vec<SocketAddr>,
    /// Exit once draining and the last allocation is gone (or `drain_timeout` passed).
    pub drain_exit: bool,
    pub drain_timeout: Duration,
    pub users: Vec<StaticUser>,
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
    /// The `[limits]` section.
    pub limits: ServerLimits,
    pub xdp_mode: XdpMode,
    /// Empty: the interfaces that carry the listen and relay addresses.
    pub xdp_interfaces: Vec<String>,
    /// Log every frame's XDP decision (`xdp.trace`).
    pub xdp_trace: bool,
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token that allows the admin endpoint's POSTs from other hosts than
    /// loopback (`admin.token`, or read from `admin.token_file`).
    pub admin_token: Option<String>,
    pub admin_token_file: Option<std::path::PathBuf>,
    pub log_level: String,
    pub log_format: LogFormat,
    /// TURN over TCP and TLS (`[tcp]`, `[tls]`, `[connections]`, `[proxy_protocol]`).
    pub streams: StreamConfig,
    /// The generated demo user (embedded default only): shown at start-up so a person can try it.
    demo_credentials: Option<(String, String)>,
    /// Where each value that is not a default came from.
    pub origins: Origins,
    /// `TURN_RELAY_*` variables that name no key, said as a warning each.
    pub ignored_variables: Vec<String>,
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
            .field("xdp_trace", &self.xdp_trace)
            .field("alternate_servers", &self.alternate_servers)
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("log_format", &self.log_format)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads and validates the file at `path` (no environment, no command line).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_sources(&Sources {
            file: Some(path.to_owned()),
            ..Sources::default()
        })
    }

    /// Parses and validates TOML `text`; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
        Config::layered(text, source, Vec::new())
    }

    /// The configuration of `sources`: the file (or, without one, the loopback demo when
    /// no `TURN_RELAY_*` variable is set, else the defaults), then the environment, then
    /// the command line, each value checked.
    pub fn from_sources(sources: &Sources) -> Result<Config, ConfigError> {
        let (overrides, ignored) = sources.overrides()?;
        let mut config = match &sources.file {
            Some(path) => {
                let source = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: source.clone(),
                    source: error,
                })?;
                Config::layered(&text, &source, overrides)?
            }
            None if sources.environment.len() == ignored.len() => {
                let mut config =
                    Config::layered(EMBEDDED_DEFAULT, EMBEDDED_DEFAULT_SOURCE, overrides)?;
                config.add_demo_user();
                config
            }
            None => Config::layered("", ENVIRONMENT_SOURCE, overrides)?,
        };
        config.ignored_variables = ignored
            .iter()
            .map(|variable| sources::ignored_variable_note(variable))
            .collect();
        Ok(config)
    }

    /// `text` with `overrides` laid over it, validated.
    fn layered(
        text: &str,
        source: &str,
        overrides: Vec<sources::Override>,
    ) -> Result<Config, ConfigError> {
        let mut raw = schema::RawConfig::from_toml(text)
            .map_err(|error| ConfigError::from_toml(source, text, &error))?;
        let mut origins = sources::file_origins(text, source);
        for layer in overrides {
            raw.overlay(layer.layer);
            origins.insert(layer.key.dotted(), layer.origin);
        }
        validate::Validator::new(text, source, &origins).validate(raw)
    }

    /// The configuration used without `--config`: a loopback-only relay with a `demo` user
    /// whose password is drawn at random on every start. Every other value is a default.
    pub fn embedded_default() -> Config {
        let mut config = Config::parse(EMBEDDED_DEFAULT, EMBEDDED_DEFAULT_SOURCE)
            .unwrap_or_else(|error| unreachable!("the embedded default is valid: {error}"));
        config.add_demo_user();
        config
    }

    fn add_demo_user(&mut self) {
        let demo_password = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
        self.users.push(StaticUser {
            name: DEMO_USER.to_owned(),
            secret: StaticSecret::Password(demo_password.clone()),
        });
        self.demo_credentials = Some((DEMO_USER.to_owned(), demo_password));
    }

    /// The generated demo user name and password of the embedded default, if this is it.
    pub fn demo_credentials(&self) -> Option<(&str, &str)> {
        self.demo_credentials
            .as_ref()
            .map(|(name, password)| (name.as_str(), password.as_str()))
    }

    /// `server.alternate_servers` less this relay itself (a listen address, or a public
    /// address on a listen port): one file may list every relay of a group.
    pub fn alternates(&self) -> Vec<SocketAddr> {
        let own_ports: Vec<u16> = self.listen.iter().map(SocketAddr::port).collect();
        let advertised: Vec<IpAddr> = [self.relay_v4, self.relay_v6]
            .into_iter()
            .flatten()
            .map(|relay| relay.advertised)
            .collect();
        self.alternate_servers
            .iter()
            .filter(|server| {
                let this_relay = self.listen.contains(server)
                    || (advertised.contains(&server.ip()) && own_ports.contains(&server.port()));
                !this_relay
            })
            .copied()
            .collect()
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

    /// The core's bounds on what one allocation, request or source may cost.
    pub fn server_limits(&self) -> ServerLimits {
        self.limits.clone()
    }

    /// The credential store and nonce issuer.
    pub fn authenticator(&self) -> Authenticator {
        Authenticator::new(self.auth_config())
    }

    /// The configuration of the [`Authenticator`].
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            static_users: self.users.clone(),
            auth_secrets: self.auth_secrets.clone(),
            zrest_secrets: self.zrest_secrets.clone(),
            nonce_lifetime: self.nonce_lifetime,
            nonce_secret: self.nonce_secret.clone(),
            advertise_password_algorithms: self.advertise_password_algorithms,
        }
    }

    /// The peer address policy. The relay's own addresses are allowed on relay ports
    /// (hairpinning between allocations); the addresses of its other services (TURN
    /// listeners, the metrics endpoint) that are not relay addresses are denied, whatever
    /// `peers.allow` says: no client reaches them through the relay.
    pub fn peer_policy(&self) -> PeerPolicy {
        let own = relay_ips(self.relay_v4, self.relay_v6);
        let services = self
            .listen
            .iter()
            .chain(&self.metrics_listen)
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified() && !own.contains(ip));
        let mut deny = self.peers_deny.clone();
        for service in services {
            if !deny.iter().any(|net| net.contains(&service)) {
                deny.push(IpNet::from(service));
            }
        }
        PeerPolicy::new(self.peers_allow.clone(), deny, own)
    }

    /// The TCP and TLS listeners and connection limits, next to the UDP listeners.
    pub(crate) fn stream_settings(&self) -> crate::daemon::stream::StreamSettings {
        self.streams.settings(&self.listen)
    }

    /// What to ask of the XDP loader; `interfaces` are the resolved interface names.
    pub fn xdp_settings(&self, interfaces: Vec<String>) -> XdpSettings {
        XdpSettings {
            mode: self.xdp_mode,
            interfaces,
            // Bounded by MAX_ALLOCATIONS and MAX_ENTRIES_PER_ALLOCATION at validation.
            max_allocations: u32::try_from(self.max_allocations).unwrap_or(u32::MAX),
            max_permissions_per_allocation: u32::try_from(
                self.limits.max_permissions_per_allocation,
            )
            .unwrap_or(u32::MAX),
            max_channels_per_allocation: u32::try_from(self.limits.max_channels_per_allocation)
                .unwrap_or(u32::MAX),
            trace: self.xdp_trace,
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
}

/// The relay's own addresses: bind and advertised address of each family.
fn relay_ips(
    relay_v4: Option<RelayAddressConfig>,
    relay_v6: Option<RelayAddressConfig>,
) -> Vec<IpAddr> {
    [relay_v4, relay_v6]
        .into_iter()
        .flatten()
        .flat_map(|relay| [relay.bind, relay.advertised])
        .collect()
}

/// A nonce secret for a relay whose file sets none: valid for this run only.
fn random_nonce_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    secret
}
