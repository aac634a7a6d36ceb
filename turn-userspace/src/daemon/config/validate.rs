//! From the file as written to a [`Config`]: defaults for absent keys, and a check with
//! bounds for every value. A bad value is a [`ConfigError`] naming its line and key, never
//! a panic, an overflow or a silently clamped number.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use crate::bpf::XdpMode;
use crate::protocol::auth::{StaticSecret, StaticUser};
use crate::protocol::turn::ServerLimits;

use super::schema::{RawAdmin, RawConfig, RawLimits, RawUser};
use super::sources::{Origin, Origins};
use super::streams::RawStreams;
use super::{defaults, random_nonce_secret, Config, ConfigError, RelayAddressConfig};

/// The longest lifetime of anything with one (allocations, permissions, channels, nonces):
/// one day. Clients refresh long before; the bound keeps deadlines far from overflow.
pub const MAX_LIFETIME_SECS: u64 = 86_400;
/// The most allocations one relay may be configured for (`server.max_allocations`): far
/// above what its relayed ports allow today (one port each, see the start-up warning), so
/// that only a typo is refused. The XDP maps are bounded on their own
/// (`bpf::maps::MapSizes`); allocations beyond them are relayed in userspace.
pub const MAX_ALLOCATIONS: u64 = 1 << 22;
/// The most relay worker threads (`server.threads`, `--threads`).
pub const MAX_THREADS: u64 = 1024;
/// The longest wait of a relay worker before it reads its sockets (`server.coalesce_us`):
/// 10 ms, far above what is useful (the wait adds up to it to a relayed datagram's delay).
pub const MAX_COALESCE_US: u64 = 10_000;
/// The most permissions or channels one allocation may hold (`limits.max_*_per_allocation`):
/// the XDP maps hold this many per allocation.
pub const MAX_ENTRIES_PER_ALLOCATION: u64 = 256;
/// The most XOR-PEER-ADDRESS attributes one CreatePermission may carry.
const MAX_PEERS_PER_REQUEST: u64 = 256;
/// The longest grace after a time-limited username's expiry (`limits.credential_expiry_grace`).
const MAX_CREDENTIAL_EXPIRY_GRACE_SECS: u64 = 3600;
/// The highest per-source rate of unauthenticated answers, and the largest burst.
const MAX_UNAUTHENTICATED_ANSWERS_PER_SECOND: u64 = 1_000_000;
/// Bandwidth limits: 100 GB/s, beyond any NIC (and far from overflowing the buckets'
/// nanosecond arithmetic).
const MAX_BYTES_PER_SECOND: u64 = 100_000_000_000;
const MAX_UNAUTHENTICATED_ANSWERS_BURST: u64 = 100_000;
/// The most cached responses per user (the whole cache holds 65536).
const MAX_CACHED_RESPONSES_PER_USER: u64 = 65_536;
/// RFC 8489 §14.9 and §14.14: REALM and SOFTWARE are fewer than 128 characters.
const MAX_TEXT_ATTRIBUTE_CHARS: usize = 127;

/// Checks one parsed configuration; `text` and `source` place the errors of values from
/// the file, `origins` names the variable or option of the others.
pub(super) struct Validator<'a> {
    text: &'a str,
    source: &'a str,
    origins: &'a Origins,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str, source: &'a str, origins: &'a Origins) -> Self {
        Validator {
            text,
            source,
            origins,
        }
    }

    /// `message` about the value of `key` at `span`: its file line, or the environment
    /// variable or option it came from.
    fn at(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        match self.origins.get(key) {
            Some(origin @ (Origin::Environment { .. } | Origin::CommandLine { .. })) => {
                origin.error(key, message)
            }
            _ => ConfigError::at(self.source, self.text, span, key, message),
        }
    }

    pub(super) fn missing(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::key(self.source, key, message)
    }

    /// Applies `check` to a positioned value; a failure is reported at its line.
    pub(super) fn check<T, U>(
        &self,
        value: &Spanned<T>,
        key: &str,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        check(value.get_ref()).map_err(|message| self.at(value.span(), key, message))
    }

    /// An optional value, checked, or `default` when absent.
    pub(super) fn optional<T, U>(
        &self,
        value: &Option<Spanned<T>>,
        key: &str,
        default: U,
        check: impl FnOnce(&T) -> Result<U, String>,
    ) -> Result<U, ConfigError> {
        match value {
            Some(value) => self.check(value, key, check),
            None => Ok(default),
        }
    }

    /// A number within `bounds`, or `default` when absent.
    fn number(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        bounds: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        self.optional(value, key, default, |n| within(*n, &bounds, ""))
    }

    /// A count (of allocations, threads) within `bounds`, or `default` when absent.
    pub(super) fn count(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        bounds: RangeInclusive<u64>,
        default: usize,
    ) -> Result<usize, ConfigError> {
        let default = u64::try_from(default).unwrap_or(u64::MAX);
        let n = self.number(value, key, bounds, default)?;
        // Bounds are far below usize::MAX on every target we build for.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// A lifetime of 1 s to [`MAX_LIFETIME_SECS`], or `default` when absent.
    fn seconds(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.optional(value, key, default, |secs| {
            within(*secs, &(1..=MAX_LIFETIME_SECS), " seconds").map(Duration::from_secs)
        })
    }

    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let core = defaults::core();
        let server = raw.server;
        let realm = self.optional(&server.realm, "server.realm", core.realm, |r| {
            check_realm(r).map(|()| r.clone())
        })?;
        let software = self.optional(&server.software, "server.software", core.software, |s| {
            check_software(s).map(|()| Some(s.clone()).filter(|s| !s.is_empty()))
        })?;
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
            Some(list) => self.listen(list)?,
            None => [relay_v4, relay_v6]
                .into_iter()
                .flatten()
                .map(|r| SocketAddr::new(r.bind, defaults::DEFAULT_TURN_PORT))
                .collect(),
        };
        let port_range = self.optional(
            &server.port_range,
            "server.port_range",
            core.port_range,
            |text| parse_port_range(text),
        )?;
        let default_lifetime = self.seconds(
            &server.default_lifetime,
            "server.default_lifetime",
            core.default_lifetime,
        )?;
        let max_lifetime = self.seconds(
            &server.max_lifetime,
            "server.max_lifetime",
            core.max_lifetime,
        )?;
        if default_lifetime > max_lifetime {
            let message = format!(
                "default_lifetime ({} s) is longer than max_lifetime ({} s)",
                default_lifetime.as_secs(),
                max_lifetime.as_secs()
            );
            let (value, key) = match (&server.default_lifetime, &server.max_lifetime) {
                (Some(value), _) => (value, "server.default_lifetime"),
                (None, Some(value)) => (value, "server.max_lifetime"),
                (None, None) => return Err(self.missing("server.default_lifetime", message)),
            };
            return Err(self.at(value.span(), key, message));
        }
        let max_allocations = self.count(
            &server.max_allocations,
            "server.max_allocations",
            1..=MAX_ALLOCATIONS,
            core.max_allocations,
        )?;
        let max_allocations_per_user = self.count(
            &server.max_allocations_per_user,
            "server.max_allocations_per_user",
            0..=MAX_ALLOCATIONS,
            core.max_allocations_per_user,
        )?;
        let threads = self.count(
            &server.threads,
            "server.threads",
            0..=MAX_THREADS,
            defaults::THREADS,
        )?;
        let coalesce = Duration::from_micros(self.number(
            &server.coalesce_us,
            "server.coalesce_us",
            0..=MAX_COALESCE_US,
            defaults::COALESCE_US,
        )?);
        // Independent of each other: a channel shorter than its permission simply stops
        // relaying earlier (ChannelData needs both alive).
        let permission_lifetime = self.seconds(
            &server.permission_lifetime,
            "server.permission_lifetime",
            core.permission_lifetime,
        )?;
        let channel_lifetime = self.seconds(
            &server.channel_lifetime,
            "server.channel_lifetime",
            core.channel_lifetime,
        )?;

        let alternate_servers =
            self.alternate_servers(server.alternate_servers.as_deref().unwrap_or_default())?;
        let drain_exit = server.drain_exit.unwrap_or(defaults::DRAIN_EXIT);
        let drain_timeout = self.seconds(
            &server.drain_timeout,
            "server.drain_timeout",
            defaults::DRAIN_TIMEOUT,
        )?;

        let auth = raw.auth;
        let listed_users = auth.users.as_deref().unwrap_or_default();
        let mut users: Vec<StaticUser> = Vec::with_capacity(listed_users.len());
        for user in listed_users {
            let parsed = self.check(user, "auth.users", parse_user)?;
            if users.iter().any(|existing| existing.name == parsed.name) {
                return Err(self.at(
                    user.span(),
                    "auth.users",
                    format!("user {:?} is listed twice", parsed.name),
                ));
            }
            users.push(parsed);
        }
        let auth_secrets = self.secrets(
            auth.auth_secrets.as_deref().unwrap_or_default(),
            "auth.auth_secrets",
        )?;
        let zrest_secrets = self.secrets(
            auth.zrest_secrets.as_deref().unwrap_or_default(),
            "auth.zrest_secrets",
        )?;
        let nonce_lifetime = self.seconds(
            &auth.nonce_lifetime,
            "auth.nonce_lifetime",
            defaults::NONCE_LIFETIME,
        )?;
        let (nonce_secret, nonce_secret_configured) = match &auth.nonce_secret {
            Some(secret) => (
                self.check(secret, "auth.nonce_secret", |s| non_empty_secret(s))?
                    .into_bytes(),
                true,
            ),
            None => (random_nonce_secret(), false),
        };

        let peers_allow = self.networks(
            raw.peers.allow.as_deref().unwrap_or_default(),
            "peers.allow",
        )?;
        let peers_deny =
            self.networks(raw.peers.deny.as_deref().unwrap_or_default(), "peers.deny")?;
        let limits = self.limits(&raw.limits)?;

        let xdp_mode = self.optional(&raw.xdp.mode, "xdp.mode", defaults::XDP_MODE, |m| {
            parse_xdp_mode(m)
        })?;
        let xdp_interfaces = raw
            .xdp
            .interfaces
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|name| self.check(name, "xdp.interfaces", |n| check_interface_name(n)))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics_listen = self.optional(
            &raw.metrics.listen,
            "metrics.listen",
            defaults::METRICS_LISTEN,
            |text| parse_metrics_listen(text),
        )?;
        let relay_ips = super::relay_ips(relay_v4, relay_v6);
        for (index, address) in listen.iter().enumerate() {
            let written = server.listen.as_ref().and_then(|list| list.get(index));
            self.service_outside_relay_ports(
                *address,
                (written, "server.listen"),
                &relay_ips,
                (&port_range, &server.port_range),
            )?;
        }
        if let Some(address) = metrics_listen {
            self.service_outside_relay_ports(
                address,
                (raw.metrics.listen.as_ref(), "metrics.listen"),
                &relay_ips,
                (&port_range, &server.port_range),
            )?;
        }
        let (admin_token, admin_token_file) = self.admin_token(&raw.admin)?;
        let log_level = self.optional(
            &raw.log.level,
            "log.level",
            defaults::LOG_LEVEL.to_owned(),
            |l| check_log_level(l).map(|()| l.clone()),
        )?;
        let log_format =
            self.optional(&raw.log.format, "log.format", defaults::LOG_FORMAT, |f| {
                f.parse()
            })?;
        let streams = self.streams(
            RawStreams {
                tcp: raw.tcp,
                tls: raw.tls,
                connections: raw.connections,
                proxy_protocol: raw.proxy_protocol,
            },
            &listen,
        )?;

        Ok(Config {
            source: self.source.to_owned(),
            realm,
            software,
            listen,
            relay_v4,
            relay_v6,
            port_range,
            default_lifetime,
            max_lifetime,
            max_allocations,
            max_allocations_per_user,
            threads,
            coalesce,
            permission_lifetime,
            channel_lifetime,
            alternate_servers,
            drain_exit,
            drain_timeout,
            users,
            auth_secrets,
            zrest_secrets,
            nonce_lifetime,
            nonce_secret,
            nonce_secret_configured,
            advertise_password_algorithms: auth
                .advertise_password_algorithms
                .unwrap_or(defaults::ADVERTISE_PASSWORD_ALGORITHMS),
            peers_allow,
            peers_deny,
            limits,
            xdp_mode,
            xdp_interfaces,
            xdp_trace: raw.xdp.trace.unwrap_or(defaults::XDP_TRACE),
            metrics_listen,
            admin_token,
            admin_token_file,
            log_level,
            log_format,
            streams,
            demo_credentials: None,
            origins: self.origins.clone(),
            ignored_variables: Vec::new(),
        })
    }

    /// [`check_service_port`] for one of the relay's services at `address`, written as
    /// `written` (absent: a default) under `key`; the error names the service's line, or
    /// else the port range's.
    fn service_outside_relay_ports(
        &self,
        address: SocketAddr,
        (written, key): (Option<&Spanned<String>>, &str),
        relay_ips: &[IpAddr],
        (ports, written_ports): (&RangeInclusive<u16>, &Option<Spanned<String>>),
    ) -> Result<(), ConfigError> {
        let Err(message) = check_service_port(address, relay_ips, ports) else {
            return Ok(());
        };
        let (value, key) = match (written, written_ports) {
            (Some(value), _) => (value, key),
            (None, Some(value)) => (value, "server.port_range"),
            (None, None) => return Err(self.missing(key, message)),
        };
        Err(self.at(value.span(), key, message))
    }

    /// The `[limits]` section, each value within its bounds.
    fn limits(&self, raw: &RawLimits) -> Result<ServerLimits, ConfigError> {
        let defaults = defaults::limits();
        let rate = |value: &Option<Spanned<u64>>, key: &str, bounds, default: u32| {
            self.number(value, key, bounds, u64::from(default))
                // Bounds are far below u32::MAX.
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        Ok(ServerLimits {
            max_permissions_per_allocation: self.count(
                &raw.max_permissions_per_allocation,
                "limits.max_permissions_per_allocation",
                1..=MAX_ENTRIES_PER_ALLOCATION,
                defaults.max_permissions_per_allocation,
            )?,
            max_channels_per_allocation: self.count(
                &raw.max_channels_per_allocation,
                "limits.max_channels_per_allocation",
                1..=MAX_ENTRIES_PER_ALLOCATION,
                defaults.max_channels_per_allocation,
            )?,
            max_peers_per_request: self.count(
                &raw.max_peers_per_request,
                "limits.max_peers_per_request",
                1..=MAX_PEERS_PER_REQUEST,
                defaults.max_peers_per_request,
            )?,
            credential_expiry_grace: self.optional(
                &raw.credential_expiry_grace,
                "limits.credential_expiry_grace",
                defaults.credential_expiry_grace,
                |secs| {
                    within(*secs, &(0..=MAX_CREDENTIAL_EXPIRY_GRACE_SECS), " seconds")
                        .map(Duration::from_secs)
                },
            )?,
            unauthenticated_answers_per_second: rate(
                &raw.unauthenticated_answers_per_second,
                "limits.unauthenticated_answers_per_second",
                0..=MAX_UNAUTHENTICATED_ANSWERS_PER_SECOND,
                defaults.unauthenticated_answers_per_second,
            )?,
            unauthenticated_answers_burst: rate(
                &raw.unauthenticated_answers_burst,
                "limits.unauthenticated_answers_burst",
                1..=MAX_UNAUTHENTICATED_ANSWERS_BURST,
                defaults.unauthenticated_answers_burst,
            )?,
            max_cached_responses_per_user: self.count(
                &raw.max_cached_responses_per_user,
                "limits.max_cached_responses_per_user",
                1..=MAX_CACHED_RESPONSES_PER_USER,
                defaults.max_cached_responses_per_user,
            )?,
            max_bytes_per_second_per_allocation: self.number(
                &raw.max_bytes_per_second_per_allocation,
                "limits.max_bytes_per_second_per_allocation",
                0..=MAX_BYTES_PER_SECOND,
                defaults.max_bytes_per_second_per_allocation,
            )?,
            max_bytes_per_second_total: self.number(
                &raw.max_bytes_per_second_total,
                "limits.max_bytes_per_second_total",
                0..=MAX_BYTES_PER_SECOND,
                defaults.max_bytes_per_second_total,
            )?,
        })
    }

    /// `server.alternate_servers`: distinct `ip:port` addresses (a bare ip means port 3478).
    fn alternate_servers(&self, list: &[Spanned<String>]) -> Result<Vec<SocketAddr>, ConfigError> {
        let key = "server.alternate_servers";
        let mut servers: Vec<SocketAddr> = Vec::with_capacity(list.len());
        for item in list {
            let server = self.check(item, key, |text| parse_alternate_server(text))?;
            if servers.contains(&server) {
                return Err(self.at(item.span(), key, format!("{server} is listed twice")));
            }
            servers.push(server);
        }
        Ok(servers)
    }

    /// The bearer token of the admin endpoint: `admin.token`, or the first line of the
    /// file `admin.token_file` (read now, and again on every reload).
    fn admin_token(
        &self,
        admin: &RawAdmin,
    ) -> Result<(Option<String>, Option<std::path::PathBuf>), ConfigError> {
        match (&admin.token, &admin.token_file) {
            (Some(_), Some(file)) => Err(self.at(
                file.span(),
                "admin.token_file",
                "set admin.token or admin.token_file, not both",
            )),
            (Some(token), None) => Ok((
                Some(self.check(token, "admin.token", |t| non_empty_secret(t))?),
                None,
            )),
            (None, Some(file)) => self.check(file, "admin.token_file", |path| {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read {path:?}: {error}"))?;
                let token = text.lines().next().unwrap_or_default().trim();
                if token.is_empty() {
                    return Err(format!("{path:?} holds no token on its first line"));
                }
                Ok((Some(token.to_owned()), Some(std::path::PathBuf::from(path))))
            }),
            (None, None) => Ok((None, None)),
        }
    }

    fn listen(&self, list: &[Spanned<String>]) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut addresses: Vec<SocketAddr> = Vec::with_capacity(list.len());
        for item in list {
            let address = self.check(item, "server.listen", |text| {
                let address: SocketAddr = text.parse().map_err(|_| {
                    format!("{text:?} is not an ip:port address (IPv6: [addr]:port)")
                })?;
                check_listen(address).map(|()| address)
            })?;
            if addresses.contains(&address) {
                return Err(self.at(
                    item.span(),
                    "server.listen",
                    format!("{address} is listed twice"),
                ));
            }
            addresses.push(address);
        }
        if addresses.is_empty() {
            return Err(self.missing("server.listen", "at least one address is needed"));
        }
        Ok(addresses)
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
            match text.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv4() == ipv4 => Ok(ip),
                _ => Err(format!("{text:?} is not an {family} address")),
            }
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
        let advertised = self.optional(public, &public_key, bind_ip, |text| {
            let ip = parse(text)?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(format!("{text:?} cannot be advertised to clients"));
            }
            Ok(ip)
        })?;
        Ok(Some(RelayAddressConfig {
            bind: bind_ip,
            advertised,
        }))
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

/// An alternate server's address: `ip:port`, `[v6]:port`, or a bare ip for port 3478.
fn parse_alternate_server(text: &str) -> Result<SocketAddr, String> {
    let address = text
        .parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, defaults::DEFAULT_TURN_PORT))
        })
        .map_err(|_| format!("{text:?} is not an ip:port address (IPv6: [addr]:port)"))?;
    if address.ip().is_unspecified() || address.ip().is_multicast() || address.port() == 0 {
        return Err(format!("{text:?} cannot be a TURN server's address"));
    }
    Ok(address)
}

/// `n` if it lies within `bounds`, else a message naming them (`unit` follows the bounds).
pub(super) fn within(n: u64, bounds: &RangeInclusive<u64>, unit: &str) -> Result<u64, String> {
    if bounds.contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not between {} and {}{unit}",
            bounds.start(),
            bounds.end()
        ))
    }
}

fn parse_user(user: &RawUser) -> Result<StaticUser, String> {
    if user.name.is_empty() {
        return Err("a user needs a non-empty name".to_owned());
    }
    let secret = match (&user.password, &user.key) {
        (Some(password), None) => StaticSecret::Password(non_empty_secret(password)?),
        (None, Some(key)) => StaticSecret::Md5Key(parse_md5_key(key)?),
        (Some(_), Some(_)) => {
            return Err(format!(
                "user {:?} has both password and key: set one",
                user.name
            ))
        }
        (None, None) => return Err(format!("user {:?} needs a password or a key", user.name)),
    };
    Ok(StaticUser {
        name: user.name.clone(),
        secret,
    })
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
pub(super) fn parse_network(text: &str) -> Result<IpNet, String> {
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

fn check_interface_name(name: &str) -> Result<String, String> {
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains(['/', ' ']) {
        return Err(format!("{name:?} is not an interface name"));
    }
    Ok(name.to_owned())
}

/// An `ip:port` with a port, or None for the empty string (metrics off).
fn parse_metrics_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an ip:port address (empty turns metrics off)"))?;
    if address.port() == 0 {
        return Err(format!("{address} has no port"));
    }
    Ok(Some(address))
}

fn check_realm(realm: &str) -> Result<(), String> {
    // RFC 8489 §14.9: REALM is fewer than 128 characters, a quoted-string body.
    if realm.is_empty()
        || realm.chars().count() > MAX_TEXT_ATTRIBUTE_CHARS
        || realm.contains(['"', '\\'])
        || realm.chars().any(char::is_control)
    {
        return Err(format!("{realm:?} is not a realm (1-127 characters, no quotes, backslashes or control characters)"));
    }
    Ok(())
}

fn check_software(software: &str) -> Result<(), String> {
    // RFC 8489 §14.14: SOFTWARE is fewer than 128 characters.
    if software.chars().count() > MAX_TEXT_ATTRIBUTE_CHARS || software.chars().any(char::is_control)
    {
        return Err(format!(
            "{software:?} is not a software name (at most 127 characters, no control characters)"
        ));
    }
    Ok(())
}

pub(crate) fn check_log_level(level: &str) -> Result<(), String> {
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|error| format!("{level:?} is not a log level or filter ({error})"))
}

/// Replies and the XDP program need the exact address clients send to, so wildcard
/// listeners are refused.
pub(super) fn check_listen(address: SocketAddr) -> Result<(), String> {
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

/// A service of the relay (a TURN listener, the metrics endpoint) must not listen on a
/// relay address (or on all addresses) inside the relay port range: the peer policy lets
/// clients reach the relay's own addresses on relay ports (hairpinning between
/// allocations), so the service would be reachable as a peer through the relay.
fn check_service_port(
    address: SocketAddr,
    relay_ips: &[IpAddr],
    relay_ports: &RangeInclusive<u16>,
) -> Result<(), String> {
    let on_relay_address = address.ip().is_unspecified() || relay_ips.contains(&address.ip());
    if on_relay_address && relay_ports.contains(&address.port()) {
        return Err(format!(
            "{address} is on a relay address inside the relay port range {}-{}: clients could \
             reach it as a peer; move it out of server.port_range",
            relay_ports.start(),
            relay_ports.end()
        ));
    }
    Ok(())
}
