//! The file as written: one struct per `[table]`, unknown keys refused. Every value that
//! is checked after parsing keeps its position ([`Spanned`]) so errors can name its line.
//! The same structs print the effective configuration (`print`), so the two cannot list
//! different keys.

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::streams::{RawConnections, RawProxyProtocol, RawTcp, RawTls};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) peers: RawPeers,
    #[serde(default)]
    pub(super) xdp: RawXdp,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) tcp: RawTcp,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) connections: RawConnections,
    #[serde(default)]
    pub(super) proxy_protocol: RawProxyProtocol,
}

impl RawConfig {
    /// Parses `text`; a type error knows the path of the key it happened at.
    pub(super) fn from_toml(
        text: &str,
    ) -> Result<RawConfig, serde_path_to_error::Error<toml::de::Error>> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text))
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) realm: Option<Spanned<String>>,
    pub(super) software: Option<Spanned<String>>,
    pub(super) listen: Option<Vec<Spanned<String>>>,
    pub(super) relay_address: Option<Spanned<String>>,
    pub(super) relay_address_v6: Option<Spanned<String>>,
    pub(super) public_address: Option<Spanned<String>>,
    pub(super) public_address_v6: Option<Spanned<String>>,
    pub(super) port_range: Option<Spanned<String>>,
    pub(super) default_lifetime: Option<Spanned<u64>>,
    pub(super) max_lifetime: Option<Spanned<u64>>,
    pub(super) max_allocations: Option<Spanned<u64>>,
    pub(super) max_allocations_per_user: Option<Spanned<u64>>,
    pub(super) threads: Option<Spanned<u64>>,
    pub(super) permission_lifetime: Option<Spanned<u64>>,
    pub(super) channel_lifetime: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    pub(super) users: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub(super) auth_secrets: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) zrest_secrets: Vec<Spanned<String>>,
    pub(super) nonce_lifetime: Option<Spanned<u64>>,
    pub(super) nonce_secret: Option<Spanned<String>>,
    pub(super) advertise_password_algorithms: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub(super) name: String,
    pub(super) password: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeers {
    #[serde(default)]
    pub(super) allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) deny: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXdp {
    pub(super) mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) interfaces: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<Spanned<String>>,
    pub(super) format: Option<Spanned<String>>,
}
