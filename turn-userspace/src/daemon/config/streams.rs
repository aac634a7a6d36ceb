//! The keys of TURN over TCP and TLS: `[tcp]`, `[tls]`, `[connections]` (the limits every
//! TCP and TLS connection lives within) and `[proxy_protocol]`. Their schema, defaults,
//! checks and printing, kept together; `config/turn-relay.toml` documents each key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::daemon::stream::{StreamSettings, TlsFiles};

use super::validate::{check_listen, parse_network, within, Validator};
use super::ConfigError;

/// The port of TURN over TLS unless told otherwise (RFC 8656 §4: "turns" on 5349).
pub const DEFAULT_TLS_PORT: u16 = 5349;
/// TURN over TCP listens next to UDP unless turned off.
const TCP_ENABLED: bool = true;
/// Time for a connection's PROXY header and TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection without an allocation is closed after this long without a complete
/// message (coturn's max-allocate-timeout is 60 s too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Open connections in all: as many as allocations (`server.max_allocations`'s default),
/// since every TCP/TLS client holds its allocation on a connection of its own.
const MAX_CONNECTIONS: usize = 16_384;
/// Open connections per client address (IPv6: per /64). An office NAT puts many
/// clients behind one address, each with one or two connections per call.
const MAX_CONNECTIONS_PER_IP: usize = 128;
/// The largest STUN message or ChannelData taken: every length the framing allows.
const MAX_MESSAGE_SIZE: usize = crate::daemon::stream::MAX_FRAME;
/// Bytes queued for a client that does not read fast enough.
const WRITE_BUFFER: usize = 256 * 1024;

/// Bounds of the `[connections]` keys.
const HANDSHAKE_TIMEOUT_BOUNDS: std::ops::RangeInclusive<u64> = 1..=300;
const IDLE_TIMEOUT_BOUNDS: std::ops::RangeInclusive<u64> = 1..=86_400;
const CONNECTION_BOUNDS: std::ops::RangeInclusive<u64> = 1..=1_000_000;
const WRITE_BUFFER_BOUNDS: std::ops::RangeInclusive<u64> = 4096..=(16 << 20);

/// The limits of every TCP and TLS connection (`[connections]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_size: usize,
    pub write_buffer: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            max_message_size: MAX_MESSAGE_SIZE,
            write_buffer: WRITE_BUFFER,
        }
    }
}

/// TURN over TCP and TLS as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub tcp_enabled: bool,
    /// None: the UDP listen addresses (`server.listen`).
    pub tcp_listen: Option<Vec<SocketAddr>>,
    pub tcp_proxy_protocol: bool,
    /// None: port 5349 on the IPs of `server.listen`.
    pub tls_listen: Option<Vec<SocketAddr>>,
    /// TLS is on when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_proxy_protocol: bool,
    pub proxy_protocol_allow_from: Vec<IpNet>,
    pub limits: ConnectionLimits,
}

impl StreamConfig {
    /// The TCP listeners: `tcp.listen`, else the UDP listen addresses; none when off.
    pub fn tcp_listeners(&self, udp_listen: &[SocketAddr]) -> Vec<SocketAddr> {
        if !self.tcp_enabled {
            return Vec::new();
        }
        self.tcp_listen
            .clone()
            .unwrap_or_else(|| udp_listen.to_vec())
    }

    /// The TLS listeners: `tls.listen`, else port 5349 on the UDP listen IPs; none
    /// without a certificate.
    pub fn tls_listeners(&self, udp_listen: &[SocketAddr]) -> Vec<SocketAddr> {
        if self.tls_files().is_none() {
            return Vec::new();
        }
        self.tls_listen
            .clone()
            .unwrap_or_else(|| default_tls_listen(udp_listen))
    }

    fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }

    /// What the stream side starts with, next to the UDP listeners `udp_listen`.
    pub(crate) fn settings(&self, udp_listen: &[SocketAddr]) -> StreamSettings {
        StreamSettings {
            tcp: self.tcp_listeners(udp_listen),
            tcp_proxy_protocol: self.tcp_proxy_protocol,
            tls: self.tls_listeners(udp_listen),
            tls_files: self.tls_files(),
            tls_proxy_protocol: self.tls_proxy_protocol,
            proxy_allow_from: self.proxy_protocol_allow_from.clone(),
            limits: self.limits.clone(),
        }
    }

    /// The four tables as `--print-config` shows them, listen lists resolved (that of
    /// TLS only while TLS is on).
    pub(super) fn printed(&self, udp_listen: &[SocketAddr]) -> RawStreams {
        fn text(value: impl ToString) -> Spanned<String> {
            Spanned::new(0..0, value.to_string())
        }
        let addresses = |list: Vec<SocketAddr>| list.into_iter().map(text).collect::<Vec<_>>();
        let number = |value: u64| Spanned::new(0..0, value);
        let count = |value: usize| number(u64::try_from(value).unwrap_or(u64::MAX));
        RawStreams {
            tcp: RawTcp {
                enabled: Some(self.tcp_enabled),
                listen: Some(addresses(
                    self.tcp_listen
                        .clone()
                        .unwrap_or_else(|| udp_listen.to_vec()),
                )),
                proxy_protocol: Some(Spanned::new(0..0, self.tcp_proxy_protocol)),
            },
            tls: RawTls {
                listen: (self.tls_files().is_some() || self.tls_listen.is_some()).then(|| {
                    addresses(
                        self.tls_listen
                            .clone()
                            .unwrap_or_else(|| default_tls_listen(udp_listen)),
                    )
                }),
                cert: self.tls_cert.as_ref().map(|path| text(path.display())),
                key: self.tls_key.as_ref().map(|path| text(path.display())),
                proxy_protocol: Some(Spanned::new(0..0, self.tls_proxy_protocol)),
            },
            connections: RawConnections {
                handshake_timeout: Some(number(self.limits.handshake_timeout.as_secs())),
                idle_timeout: Some(number(self.limits.idle_timeout.as_secs())),
                max: Some(count(self.limits.max_connections)),
                max_per_ip: Some(count(self.limits.max_connections_per_ip)),
                max_message_size: Some(count(self.limits.max_message_size)),
                write_buffer: Some(count(self.limits.write_buffer)),
            },
            proxy_protocol: RawProxyProtocol {
                allow_from: Some(self.proxy_protocol_allow_from.iter().map(text).collect()),
            },
        }
    }
}

/// Port 5349 on each IP of the UDP listeners.
fn default_tls_listen(udp_listen: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for address in udp_listen {
        let tls = SocketAddr::new(address.ip(), DEFAULT_TLS_PORT);
        if !addresses.contains(&tls) {
            addresses.push(tls);
        }
    }
    addresses
}

/// The four tables as written.
pub(super) struct RawStreams {
    pub(super) tcp: RawTcp,
    pub(super) tls: RawTls,
    pub(super) connections: RawConnections,
    pub(super) proxy_protocol: RawProxyProtocol,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTcp {
    pub(super) enabled: Option<bool>,
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnections {
    pub(super) handshake_timeout: Option<Spanned<u64>>,
    pub(super) idle_timeout: Option<Spanned<u64>>,
    pub(super) max: Option<Spanned<u64>>,
    pub(super) max_per_ip: Option<Spanned<u64>>,
    pub(super) max_message_size: Option<Spanned<u64>>,
    pub(super) write_buffer: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyProtocol {
    pub(super) allow_from: Option<Vec<Spanned<String>>>,
}

impl Validator<'_> {
    /// Checks the four tables; `udp_listen` are the UDP listeners (the TCP default).
    pub(super) fn streams(
        &self,
        raw: RawStreams,
        udp_listen: &[SocketAddr],
    ) -> Result<StreamConfig, ConfigError> {
        let RawStreams {
            tcp,
            tls,
            connections,
            proxy_protocol,
        } = raw;
        let tcp_listen = tcp
            .listen
            .as_deref()
            .map(|list| self.listen_list(list, "tcp.listen"))
            .transpose()?;
        let tls_listen = tls
            .listen
            .as_deref()
            .map(|list| self.listen_list(list, "tls.listen"))
            .transpose()?;
        let path = |value: &Option<Spanned<String>>, key: &str| {
            value
                .as_ref()
                .map(|value| {
                    self.check(value, key, |text| {
                        if text.is_empty() {
                            Err("an empty path: give the PEM file's path".to_owned())
                        } else {
                            Ok(PathBuf::from(text))
                        }
                    })
                })
                .transpose()
        };
        let tls_cert = path(&tls.cert, "tls.cert")?;
        let tls_key = path(&tls.key, "tls.key")?;
        match (&tls_cert, &tls_key) {
            (Some(_), None) => {
                return Err(self.missing("tls.key", "tls.cert is set but tls.key is not"))
            }
            (None, Some(_)) => {
                return Err(self.missing("tls.cert", "tls.key is set but tls.cert is not"))
            }
            (None, None) if tls_listen.is_some() => {
                return Err(self.missing(
                    "tls.cert",
                    "tls.listen is set but TLS needs tls.cert and tls.key (PEM files)",
                ))
            }
            _ => {}
        }
        let proxy_protocol_allow_from = proxy_protocol
            .allow_from
            .iter()
            .flatten()
            .map(|network| {
                self.check(network, "proxy_protocol.allow_from", |text| {
                    parse_network(text)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let proxy_flag = |flag: &Option<Spanned<bool>>, key: &str| {
            match flag {
            None => Ok(false),
            Some(flag) => self.check(flag, key, |&on| {
                if on && proxy_protocol_allow_from.is_empty() {
                    Err("the PROXY protocol needs proxy_protocol.allow_from: the networks of the load balancers that send it".to_owned())
                } else {
                    Ok(on)
                }
            }),
        }
        };
        let tcp_proxy_protocol = proxy_flag(&tcp.proxy_protocol, "tcp.proxy_protocol")?;
        let tls_proxy_protocol = proxy_flag(&tls.proxy_protocol, "tls.proxy_protocol")?;
        let limits = ConnectionLimits {
            handshake_timeout: self.seconds_within(
                &connections.handshake_timeout,
                "connections.handshake_timeout",
                HANDSHAKE_TIMEOUT_BOUNDS,
                HANDSHAKE_TIMEOUT,
            )?,
            idle_timeout: self.seconds_within(
                &connections.idle_timeout,
                "connections.idle_timeout",
                IDLE_TIMEOUT_BOUNDS,
                IDLE_TIMEOUT,
            )?,
            max_connections: self.count(
                &connections.max,
                "connections.max",
                CONNECTION_BOUNDS,
                MAX_CONNECTIONS,
            )?,
            max_connections_per_ip: self.count(
                &connections.max_per_ip,
                "connections.max_per_ip",
                CONNECTION_BOUNDS,
                MAX_CONNECTIONS_PER_IP,
            )?,
            max_message_size: self.count(
                &connections.max_message_size,
                "connections.max_message_size",
                crate::daemon::stream::MIN_FRAME_LIMIT as u64..=MAX_MESSAGE_SIZE as u64,
                MAX_MESSAGE_SIZE,
            )?,
            write_buffer: self.count(
                &connections.write_buffer,
                "connections.write_buffer",
                WRITE_BUFFER_BOUNDS,
                WRITE_BUFFER,
            )?,
        };
        let config = StreamConfig {
            tcp_enabled: tcp.enabled.unwrap_or(TCP_ENABLED),
            tcp_listen,
            tcp_proxy_protocol,
            tls_listen,
            tls_cert,
            tls_key,
            tls_proxy_protocol,
            proxy_protocol_allow_from,
            limits,
        };
        let tcp = config.tcp_listeners(udp_listen);
        if let Some(both) = config
            .tls_listeners(udp_listen)
            .into_iter()
            .find(|address| tcp.contains(address))
        {
            return Err(self.missing(
                "tls.listen",
                format!("{both} is a TCP listener too: TLS needs an address:port of its own"),
            ));
        }
        Ok(config)
    }

    /// A list of distinct concrete `ip:port` listen addresses (possibly empty).
    fn listen_list(
        &self,
        list: &[Spanned<String>],
        key: &str,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut addresses: Vec<SocketAddr> = Vec::with_capacity(list.len());
        for item in list {
            let address = self.check(item, key, |text| {
                let address: SocketAddr = text.parse().map_err(|_| {
                    format!("{text:?} is not an ip:port address (IPv6: [addr]:port)")
                })?;
                check_listen(address)?;
                if addresses.contains(&address) {
                    return Err(format!("{address} is listed twice"));
                }
                Ok(address)
            })?;
            addresses.push(address);
        }
        Ok(addresses)
    }

    /// Whole seconds within `bounds`, or `default` when absent.
    fn seconds_within(
        &self,
        value: &Option<Spanned<u64>>,
        key: &str,
        bounds: std::ops::RangeInclusive<u64>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.optional(value, key, default, |secs| {
            within(*secs, &bounds, " seconds").map(Duration::from_secs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const RELAY: &str = "[server]\nrelay_address = \"198.18.0.1\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{RELAY}{extra}"), "test.toml")
    }

    fn error(extra: &str) -> String {
        match parse(extra) {
            Ok(config) => panic!("expected an error for {extra:?}, got {:?}", config.streams),
            Err(error) => error.to_string(),
        }
    }

    fn addresses(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("address")).collect()
    }

    #[test]
    fn tcp_follows_the_udp_listeners_and_tls_waits_for_a_certificate() {
        let config = parse("").expect("valid");
        let settings = config.stream_settings();
        assert_eq!(settings.tcp, addresses(&["198.18.0.1:3478"]));
        assert!(settings.tls.is_empty() && settings.tls_files.is_none());
        assert!(!settings.tcp_proxy_protocol && !settings.tls_proxy_protocol);
        assert_eq!(settings.limits, ConnectionLimits::default());
        assert_eq!(settings.limits.max_message_size, 65_552);

        let config = parse("[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n").expect("valid");
        let settings = config.stream_settings();
        assert_eq!(settings.tls, addresses(&["198.18.0.1:5349"]));
        assert_eq!(
            settings.tls_files,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        // The UDP listeners (--listen too) move the defaults along.
        let mut config = config;
        config.listen = addresses(&["198.18.0.2:3478", "[2001:2::2]:3478"]);
        let settings = config.stream_settings();
        assert_eq!(
            settings.tcp,
            addresses(&["198.18.0.2:3478", "[2001:2::2]:3478"])
        );
        assert_eq!(
            settings.tls,
            addresses(&["198.18.0.2:5349", "[2001:2::2]:5349"])
        );

        let off = parse("[tcp]\nenabled = false\n").expect("valid");
        assert!(!off.stream_settings().any());
    }

    #[test]
    fn every_key_is_taken() {
        let config = parse(
            "[tcp]\nlisten = [\"198.18.0.1:80\"]\nproxy_protocol = true\n\
             [tls]\nlisten = [\"198.18.0.1:443\", \"[2001:2::1]:443\"]\ncert = \"c\"\nkey = \"k\"\nproxy_protocol = true\n\
             [connections]\nhandshake_timeout = 3\nidle_timeout = 20\nmax = 50\nmax_per_ip = 5\nmax_message_size = 2000\nwrite_buffer = 8192\n\
             [proxy_protocol]\nallow_from = [\"198.18.9.0/24\", \"2001:2::9\"]\n",
        )
        .expect("valid");
        let settings = config.stream_settings();
        assert_eq!(settings.tcp, addresses(&["198.18.0.1:80"]));
        assert_eq!(
            settings.tls,
            addresses(&["198.18.0.1:443", "[2001:2::1]:443"])
        );
        assert!(settings.tcp_proxy_protocol && settings.tls_proxy_protocol);
        assert_eq!(settings.proxy_allow_from.len(), 2);
        assert_eq!(
            settings.limits,
            ConnectionLimits {
                handshake_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(20),
                max_connections: 50,
                max_connections_per_ip: 5,
                max_message_size: 2000,
                write_buffer: 8192,
            }
        );
        // What --print-config shows loads back to the same.
        let printed = Config::parse(&config.to_toml(), "printed").expect("printed config loads");
        assert_eq!(
            printed.streams,
            StreamConfig {
                tcp_listen: Some(addresses(&["198.18.0.1:80"])),
                ..config.streams.clone()
            }
        );
    }

    #[test]
    fn bad_values_are_errors_naming_line_and_key() {
        for (extra, expected) in [
            (
                "[tls]\ncert = \"c.pem\"\n",
                "tls.key: tls.cert is set but tls.key is not",
            ),
            (
                "[tls]\nkey = \"k.pem\"\n",
                "tls.cert: tls.key is set but tls.cert is not",
            ),
            (
                "[tls]\nlisten = [\"198.18.0.1:443\"]\n",
                "tls.cert: tls.listen is set but TLS needs",
            ),
            (
                "[tls]\ncert = \"\"\nkey = \"k\"\n",
                "line 4: tls.cert: an empty path",
            ),
            (
                "[tcp]\nproxy_protocol = true\n",
                "line 4: tcp.proxy_protocol: the PROXY protocol needs proxy_protocol.allow_from",
            ),
            (
                "[tls]\ncert = \"c\"\nkey = \"k\"\nproxy_protocol = true\n",
                "line 6: tls.proxy_protocol:",
            ),
            (
                "[tcp]\nlisten = [\"0.0.0.0:3478\"]\n",
                "line 4: tcp.listen: 0.0.0.0:3478 is a wildcard address",
            ),
            (
                "[tcp]\nlisten = [\"198.18.0.1:1\", \"198.18.0.1:1\"]\n",
                "line 4: tcp.listen: 198.18.0.1:1 is listed twice",
            ),
            (
                "[tls]\nlisten = [\"x\"]\ncert = \"c\"\nkey = \"k\"\n",
                "line 4: tls.listen: \"x\" is not an ip:port address",
            ),
            (
                "[tls]\nlisten = [\"198.18.0.1:3478\"]\ncert = \"c\"\nkey = \"k\"\n",
                "tls.listen: 198.18.0.1:3478 is a TCP listener too",
            ),
            (
                "[connections]\nhandshake_timeout = 0\n",
                "line 4: connections.handshake_timeout: 0 is not between 1 and 300 seconds",
            ),
            (
                "[connections]\nidle_timeout = 100000\n",
                "line 4: connections.idle_timeout: 100000 is not between 1 and 86400 seconds",
            ),
            (
                "[connections]\nmax = 0\n",
                "line 4: connections.max: 0 is not between 1 and 1000000",
            ),
            (
                "[connections]\nmax_per_ip = 2000000\n",
                "line 4: connections.max_per_ip:",
            ),
            (
                "[connections]\nmax_message_size = 100\n",
                "line 4: connections.max_message_size: 100 is not between 1500 and 65552",
            ),
            (
                "[connections]\nwrite_buffer = 10\n",
                "line 4: connections.write_buffer: 10 is not between 4096 and 16777216",
            ),
            (
                "[proxy_protocol]\nallow_from = [\"10.0.0.0/40\"]\n",
                "line 4: proxy_protocol.allow_from: \"10.0.0.0/40\" is not a CIDR network",
            ),
            (
                "[tcp]\nport = 1\n",
                "line 4: tcp.port: unknown field `port`",
            ),
        ] {
            let message = error(extra);
            assert!(
                message.contains(expected),
                "for {extra:?}\n  got  {message}\n  want {expected}"
            );
        }
    }
}
